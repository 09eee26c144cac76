"""Per-tensor random generators derived from a seed with a stable hash.

A merge evaluates its tensors lazily and in any order, so one shared generator would make the
result depend on the order of access. Instead each (seed, task, tensor name) gets its own CPU
generator, seeded with a BLAKE2b hash of those values (stable across processes, machines and
Python versions, unlike the salted built-in ``hash``).
"""

from __future__ import annotations

import hashlib

import torch

__all__ = ["derived_generator"]

_DOMAIN = b"weightspace.merge/v1"


def derived_generator(seed: int, name: str, task: int | None) -> torch.Generator:
    """Return a fresh CPU generator for one task's tensor ``name``.

    Args:
        seed: The user's seed.
        name: The tensor's name in the task vector.
        task: The task's position, or ``None`` when the seed already identifies the task.

    Returns:
        A generator whose state depends only on the three arguments.
    """
    task_part = b"-" if task is None else str(task).encode()
    payload = b"\x00".join((_DOMAIN, str(seed).encode(), task_part, name.encode("utf-8")))
    digest = hashlib.blake2b(payload, digest_size=8).digest()
    generator = torch.Generator(device="cpu")
    generator.manual_seed(int.from_bytes(digest, "little") & ((1 << 63) - 1))
    return generator
