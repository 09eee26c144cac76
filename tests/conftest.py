"""Settings shared by the whole test suite."""

from __future__ import annotations

import os

import torch
from hypothesis import HealthCheck, settings

# Nothing in the tests may reach a model hub: fail fast instead of hanging on the network.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

# Under pytest-xdist every worker would otherwise start one torch thread per core, and the
# workers would fight over the cores; one thread per worker keeps the machine busy but calm.
if os.environ.get("PYTEST_XDIST_WORKER"):
    torch.set_num_threads(1)

# "ci": deterministic, bounded and without deadlines (two shared cores are noisy).
settings.register_profile(
    "ci",
    max_examples=60,
    deadline=None,
    derandomize=True,
    print_blob=True,
    suppress_health_check=[HealthCheck.too_slow],
)
# "dev": more examples, random, for local exploration (`pytest --hypothesis-profile=dev`).
settings.register_profile("dev", max_examples=300, deadline=None)
