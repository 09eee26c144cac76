"""Settings shared by the whole test suite."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
from collections.abc import Callable, Sequence

import pytest
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


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def _torchrun(args: Sequence[str], timeout: float = 180) -> subprocess.CompletedProcess[str]:
    """``torchrun --nproc-per-node 2 ARGS`` on a free local port, killed after ``timeout``."""
    cmd = [
        sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2",
        "--master-addr", "127.0.0.1", "--master-port", str(_free_port()), *args,
    ]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    for key in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        env.pop(key, None)
    proc = subprocess.Popen(
        cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
        start_new_session=True,
    )  # fmt: skip
    try:
        stdout, stderr = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate()
        pytest.fail(f"torchrun did not finish in {timeout} s")
    return subprocess.CompletedProcess(cmd, proc.returncode, stdout, stderr)


@pytest.fixture
def torchrun() -> Callable[..., subprocess.CompletedProcess[str]]:
    """Run ``torchrun`` with a world of two local CPU processes (gloo)."""
    return _torchrun
