"""Per-tensor random generators derived from a seed with a stable hash.

A merge evaluates its tensors lazily and in any order, so one shared generator would make the
result depend on the order of access. Instead each (seed, task, tensor name) gets its own CPU
generator, seeded with a BLAKE2b hash of those values (stable across processes, machines and
Python versions, unlike the salted built-in ``hash``).
"""

from __future__ import annotations

import hashlib

import torch

from weightspace.merge import _core

__all__ = ["dare_keep_masks", "derived_generator"]

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


def dare_keep_masks(
    name: str,
    shape: torch.Size,
    n_tasks: int,
    drop_rate: float,
    seed: int | tuple[int, ...],
    device: torch.device,
) -> list[torch.Tensor]:
    """The DARE keep masks of tensor ``name``, one per task, as every merge path draws them.

    Task ``t``'s mask comes from :func:`derived_generator` ``(seed, name, t)`` for one int
    seed, or ``(seed[t], name, None)`` for one seed per task (which makes the masks follow
    their task when the tasks are reordered).

    Args:
        name: The tensor's name.
        shape: Its shape.
        n_tasks: Number of tasks.
        drop_rate: Probability of dropping an entry.
        seed: One int, or one int per task.
        device: Where the masks go (they are drawn on the CPU).

    Returns:
        ``n_tasks`` boolean masks of ``shape``.
    """
    masks = []
    for task in range(n_tasks):
        if isinstance(seed, int):
            generator = derived_generator(seed, name, task)
        else:
            generator = derived_generator(seed[task], name, None)
        masks.append(_core.dare_keep_mask(shape, drop_rate, generator, device))
    return masks
