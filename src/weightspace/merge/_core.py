"""Kernels shared by :mod:`weightspace.merge.functional` and the task-vector merges.

They work on *lists* of same-shaped tensors (one per task), not on stacked tensors, so that a
merge over N task vectors never holds a second stacked copy of the N inputs: per-coordinate
work runs over blocks of columns whose size is bounded by :data:`BLOCK_ELEMENTS`.

Order invariance. Floating-point addition is not associative, so a plain ``sum`` over tasks
depends on the order of the tasks in its last bits. Every sum over tasks here first sorts the
``n_tasks`` values of each coordinate (for three tasks or more; two-term addition is already
commutative), which makes every merge bitwise invariant to a permutation of its inputs.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Literal

import torch

__all__ = [
    "BLOCK_ELEMENTS",
    "dare_keep_mask",
    "dare_one",
    "magnitude_keep_mask",
    "ordered_sum",
    "pack_bits",
    "tall_masks_list",
    "ties_merge",
    "unpack_bits",
]

#: Upper bound on ``n_tasks * columns`` for the temporary blocks of per-coordinate work.
BLOCK_ELEMENTS = 1 << 22


def _column_blocks(numel: int, n_tasks: int) -> Iterator[slice]:
    columns = max(1, BLOCK_ELEMENTS // max(1, n_tasks))
    start = 0
    while start < numel:
        stop = min(numel, start + columns)
        yield slice(start, stop)
        start = stop
    if numel == 0:
        yield slice(0, 0)


def sorted_column_sum(block: torch.Tensor) -> torch.Tensor:
    """Sum ``block`` ``[n, c]`` over its first dimension, independently of the row order.

    The ``n`` values of each column are sorted, then added from the smallest to the largest.
    Three or four rows are sorted with a min/max network (faster than ``torch.sort`` there);
    both give the same sorted values, so the sum does not depend on the method.
    """
    n = block.shape[0]
    if n == 1:
        return block[0].clone()
    if n == 2:
        return block[0] + block[1]
    if n <= 4:
        rows = list(block.unbind(0))
        for sweep in range(n - 1):
            for j in range(n - 1 - sweep):
                low, high = rows[j], rows[j + 1]
                rows[j], rows[j + 1] = torch.minimum(low, high), torch.maximum(low, high)
    else:
        rows = list(torch.sort(block, dim=0).values.unbind(0))
    total = rows[0] + rows[1]
    for row in rows[2:]:
        total += row
    return total


def _stack_block(
    tensors: Sequence[torch.Tensor],
    columns: slice,
    masks: Sequence[torch.Tensor] | None,
    weights: Sequence[float] | None,
    divisor: float | None,
) -> torch.Tensor:
    """Stack one block of columns: ``weights * where(masks, tensors / divisor, 0)``."""
    block = torch.stack([t.reshape(-1)[columns] for t in tensors])
    if divisor is not None:
        block = block / divisor
    if masks is not None:
        keep = torch.stack([m.reshape(-1)[columns] for m in masks])
        block = torch.where(keep, block, torch.zeros((), dtype=block.dtype, device=block.device))
    if weights is not None:
        w = torch.tensor(weights, dtype=block.dtype, device=block.device)
        block = block * w.reshape(-1, 1)
    return block


def ordered_sum(
    tensors: Sequence[torch.Tensor],
    weights: Sequence[float] | None = None,
    *,
    masks: Sequence[torch.Tensor] | None = None,
    divisor: float | None = None,
    divide_by_count: bool = False,
) -> torch.Tensor:
    """Return ``sum_t weights[t] * where(masks[t], tensors[t] / divisor, 0)``, order invariant.

    Args:
        tensors: One tensor per task, all of one shape, dtype and device.
        weights: One coefficient per task, or ``None`` for all ones.
        masks: Optional boolean keep mask per task (entries outside it count as 0).
        divisor: Optional divisor of every entry (DARE's ``1 - p``).
        divide_by_count: Divide by ``len(tensors)`` (as a tensor division, the same operation
            that :func:`ties_merge` performs, so that the two agree bit for bit).

    Returns:
        A new tensor of the common shape.
    """
    first = tensors[0]
    n = len(tensors)
    out = torch.empty(first.numel(), dtype=first.dtype, device=first.device)
    for columns in _column_blocks(first.numel(), n):
        total = sorted_column_sum(_stack_block(tensors, columns, masks, weights, divisor))
        if divide_by_count:
            total = total / torch.full_like(total, float(n))
        out[columns] = total
    return out.reshape(first.shape)


def magnitude_keep_mask(tensor: torch.Tensor, density: float) -> torch.Tensor:
    """Boolean mask of the ``round(density * numel)`` entries of largest magnitude.

    Entries tied at the threshold magnitude are kept in row-major (flat index) order, so the
    mask is deterministic and keeps exactly ``round(density * numel)`` entries (Python's
    ``round``: halves go to the even integer).
    """
    numel = tensor.numel()
    k = round(density * numel)
    if k >= numel:
        return torch.ones(tensor.shape, dtype=torch.bool, device=tensor.device)
    if k <= 0:
        return torch.zeros(tensor.shape, dtype=torch.bool, device=tensor.device)
    magnitude = tensor.detach().reshape(-1).abs()
    if magnitude.dtype.itemsize < 4:
        magnitude = magnitude.float()  # exact; kthvalue lacks half kernels on some devices
    # The k-th largest value is the (numel - k + 1)-th smallest.
    threshold = torch.kthvalue(magnitude, numel - k + 1).values
    keep = magnitude > threshold
    missing = k - int(keep.sum())
    if missing > 0:
        # Entries tied at the threshold, in flat order: keep the first `missing` of them.
        tied = torch.nonzero(magnitude == threshold).squeeze(1)[:missing]
        keep[tied] = True
    return keep.reshape(tensor.shape)


def ties_merge(
    tensors: Sequence[torch.Tensor],
    *,
    keep_masks: Sequence[torch.Tensor] | None,
    weights: Sequence[float] | None,
    majority: Literal["total", "count"],
    divisor: float | None = None,
) -> torch.Tensor:
    """Elect a sign per coordinate and return the disjoint mean of the agreeing tasks.

    ``values_t = weights[t] * where(keep_masks[t], tensors[t] / divisor, 0)``; the elected sign is
    ``sign(sum_t values_t)`` (``"total"``) or ``sign(sum_t sign(values_t))`` (``"count"``);
    a task agrees where its value is non-zero and has the elected sign; the result is the sum
    of the agreeing values divided by their number (0 where no task agrees, in particular
    where the elected sign is 0).
    """
    first = tensors[0]
    n = len(tensors)
    out = torch.empty(first.numel(), dtype=first.dtype, device=first.device)
    for columns in _column_blocks(first.numel(), n):
        block = _stack_block(tensors, columns, keep_masks, weights, divisor)
        signs = torch.sign(block)
        if majority == "total":
            elected = torch.sign(sorted_column_sum(block))
        else:
            elected = torch.sign(signs.sum(dim=0))
        agree = (signs == elected) & (signs != 0)
        selected = torch.where(
            agree, block, torch.zeros((), dtype=block.dtype, device=block.device)
        )
        total = sorted_column_sum(selected)
        count = agree.sum(dim=0).to(block.dtype).clamp_(min=1.0)
        out[columns] = total / count
    return out.reshape(first.shape)


def dare_keep_mask(
    shape: torch.Size, drop_rate: float, generator: torch.Generator, device: torch.device
) -> torch.Tensor:
    """Bernoulli keep mask with ``P(keep) = 1 - drop_rate``, drawn on the generator's device."""
    draws = torch.rand(shape, generator=generator, device=generator.device, dtype=torch.float32)
    return (draws >= drop_rate).to(device)


def dare_one(
    tensor: torch.Tensor, drop_rate: float, generator: torch.Generator, *, rescale: bool
) -> torch.Tensor:
    """Drop each entry with probability ``drop_rate``; rescale survivors by ``1/(1-p)``."""
    if drop_rate == 0.0:
        return tensor.clone()
    keep = dare_keep_mask(tensor.shape, drop_rate, generator, tensor.device)
    kept = tensor / (1.0 - drop_rate) if rescale else tensor
    return torch.where(keep, kept, torch.zeros((), dtype=tensor.dtype, device=tensor.device))


def tall_masks_list(
    tensors: Sequence[torch.Tensor], merged: torch.Tensor, lambdas: Sequence[float]
) -> list[torch.Tensor]:
    """Per-task TALL masks ``|tau_t| >= lambda_t * |merged - tau_t|``."""
    return [t.abs() >= lam * (merged - t).abs() for t, lam in zip(tensors, lambdas, strict=True)]


_SHIFTS = (0, 1, 2, 3, 4, 5, 6, 7)


def pack_bits(mask: torch.Tensor) -> torch.Tensor:
    """Pack a boolean tensor, flattened row-major, into ``ceil(numel / 8)`` bytes.

    Bit ``i`` (value ``2**i``) of byte ``j`` holds flat element ``8 * j + i`` (little-endian
    bit order, as ``numpy.packbits(..., bitorder="little")``); padding bits are 0.
    """
    flat = mask.reshape(-1).to(torch.uint8)
    pad = (-flat.numel()) % 8
    if pad:
        flat = torch.cat([flat, torch.zeros(pad, dtype=torch.uint8, device=flat.device)])
    shifts = torch.tensor(_SHIFTS, dtype=torch.uint8, device=flat.device)
    return torch.bitwise_left_shift(flat.reshape(-1, 8), shifts).sum(dim=1, dtype=torch.uint8)


def unpack_bits(packed: torch.Tensor, shape: tuple[int, ...]) -> torch.Tensor:
    """Inverse of :func:`pack_bits`: a boolean tensor of ``shape``."""
    numel = 1
    for size in shape:
        numel *= size
    shifts = torch.tensor(_SHIFTS, dtype=torch.uint8, device=packed.device)
    bits = torch.bitwise_right_shift(packed.reshape(-1, 1), shifts) & 1
    return bits.reshape(-1)[:numel].to(torch.bool).reshape(shape)
