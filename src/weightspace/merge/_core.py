r"""Kernels shared by :mod:`weightspace.merge.functional` and the task-vector merges.

They work on *lists* of same-shaped tensors (one per task), not on stacked tensors, so that a
merge over N task vectors never holds a second stacked copy of the N inputs: per-coordinate
work runs over blocks of columns whose size is bounded by :data:`BLOCK_ELEMENTS`, in buffers
that are allocated once per call and reused from block to block.

Order invariance
----------------
Floating-point addition is not associative, so a plain ``sum`` over tasks depends on the order
of the tasks in its last bits. Sums over tasks here are computed so that the order does not
matter:

* **One or two tasks** (any dtype): ``a + b == b + a`` exactly, so the sum is invariant.
* **Three tasks or more, float32 / bfloat16 / float16 terms**: the terms (each task's value
  after its mask, divisor and weight, computed in the input dtype) are added in float64 and
  the total is rounded once to the input dtype. A float64 sum of such terms is *exact*, hence
  the same in every order, bit for bit, whenever at every coordinate

  .. math::

      e_{\max} - e_{\min} \le 29 - \lceil \log_2 n \rceil \quad
      (45 - \lceil \log_2 n \rceil \text{ for bfloat16}, 42 - \ldots \text{ for float16})

  where :math:`e_{\max}` and :math:`e_{\min}` are the binary exponents of the largest and the
  smallest non-zero term and ``n`` the number of tasks (27 binades, a ratio of about
  :math:`10^8`, for three or four float32 tasks). Task vectors of fine-tuned models are far
  inside this range: the deltas of one weight differ by a few binades. The result is then
  the exact sum correctly rounded, more accurate than any float32 summation order. Beyond the
  range, the float64 sum can round, and two orders can differ in the float64 rounding of the
  total, by at most about :math:`n \cdot 2^{-53}` times the largest term: after the final
  rounding to float32 the results differ by at most one float32 unit in the last place
  (of the result, or of the largest term under cancellation). In TIES, the sign elected from
  such a sum can then differ where the terms cancel to within that rounding.
* **Three tasks or more, float64 terms**: the ``n`` values of each coordinate are sorted and
  added from the smallest to the largest, which is bitwise invariant (and slower).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import torch

__all__ = [
    "BLOCK_ELEMENTS",
    "dare_keep_mask",
    "dare_one",
    "fused_sum",
    "fused_ties",
    "kth_largest_with_count",
    "magnitude_keep_mask",
    "ordered_sum",
    "pack_bits",
    "tall_masks_list",
    "ties_merge",
    "unpack_bits",
]

#: Upper bound on ``n_tasks * columns`` for the temporary blocks of per-coordinate work.
BLOCK_ELEMENTS = 1 << 22

#: Dtypes whose terms are summed exactly in float64 (see the module notes).
_EXACT_IN_FLOAT64 = (torch.float32, torch.bfloat16, torch.float16)


def _block_columns(numel: int, n_tasks: int) -> int:
    return max(1, min(numel, max(1 << 16, BLOCK_ELEMENTS // max(1, n_tasks))))


def sorted_column_sum(block: torch.Tensor) -> torch.Tensor:
    """Sum ``block`` ``[n, c]`` over its first dimension, independently of the row order.

    The ``n`` values of each column are sorted, then added from the smallest to the largest.
    Three or four rows are sorted with a min/max network (faster than ``torch.sort`` there);
    both give the same sorted values, so the sum does not depend on the method. Used for
    float64 terms (see the module notes).
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


class _Summer:
    """Order-invariant sums over tasks of blocks of ``columns`` values, in reusable buffers.

    :meth:`sum` returns the total of a list of same-length 1-D blocks (one per task), in the
    "sum dtype": float64 for three terms or more of a dtype in :data:`_EXACT_IN_FLOAT64`, the
    terms' dtype otherwise. :meth:`round_into` writes ``total`` (optionally divided by a
    count) into the output in the terms' dtype, rounding once.
    """

    def __init__(self, n: int, columns: int, dtype: torch.dtype, device: torch.device) -> None:
        self.n = n
        self.dtype = dtype
        self.wide = n >= 3 and dtype in _EXACT_IN_FLOAT64
        self.sum_dtype = torch.float64 if self.wide else dtype
        if self.wide:
            self._acc = torch.empty(columns, dtype=torch.float64, device=device)
            self._tmp = torch.empty(columns, dtype=torch.float64, device=device)

    def sum(self, terms: Sequence[torch.Tensor]) -> torch.Tensor:
        n = len(terms)
        if self.wide:
            m = terms[0].numel()
            acc, tmp = self._acc[:m], self._tmp[:m]
            acc.copy_(terms[0])
            for term in terms[1:]:
                tmp.copy_(term)  # a same-dtype add is much faster than a mixed-dtype one
                acc.add_(tmp)
            return acc
        if n == 1:
            return terms[0]
        if n == 2:
            return terms[0] + terms[1]
        return sorted_column_sum(torch.stack(list(terms)))

    def round_into(
        self, out: torch.Tensor, total: torch.Tensor, count: torch.Tensor | float | None
    ) -> None:
        if count is None:
            out.copy_(total)
        elif self.wide:
            out.copy_(total.div_(count))  # total is the float64 buffer: divide in place
        else:
            out.copy_(total / count)


def _term(
    flat: torch.Tensor,
    mask: torch.Tensor | None,
    weight: float | None,
    divisor: float | None,
) -> torch.Tensor:
    """``weight * where(mask, flat / divisor, 0)`` in ``flat``'s dtype."""
    value = flat
    if divisor is not None:
        value = value / divisor
    if mask is not None:
        value = torch.where(mask, value, torch.zeros((), dtype=value.dtype, device=value.device))
    if weight is not None and weight != 1.0:
        value = value * weight
    return value


def _flat(tensors: Sequence[torch.Tensor] | None) -> list[torch.Tensor] | None:
    return None if tensors is None else [t.reshape(-1) for t in tensors]


def ordered_sum(
    tensors: Sequence[torch.Tensor],
    weights: Sequence[float] | None = None,
    *,
    masks: Sequence[torch.Tensor] | None = None,
    divisor: float | None = None,
    divide_by_count: bool = False,
) -> torch.Tensor:
    """Return ``sum_t weights[t] * where(masks[t], tensors[t] / divisor, 0)``, order invariant.

    See the module notes for when the result is bitwise invariant to the order of the tasks.

    Args:
        tensors: One tensor per task, all of one shape, dtype and device.
        weights: One coefficient per task, or ``None`` for all ones.
        masks: Optional boolean keep mask per task (entries outside it count as 0).
        divisor: Optional divisor of every entry (DARE's ``1 - p``).
        divide_by_count: Divide by ``len(tensors)`` before the final rounding (the operation
            that :func:`ties_merge` performs where every task agrees, so that the two agree
            bit for bit).

    Returns:
        A new tensor of the common shape.
    """
    first = tensors[0]
    n = len(tensors)
    numel = first.numel()
    flats = _flat(tensors)
    mflats = _flat(masks)
    assert flats is not None
    out = torch.empty(numel, dtype=first.dtype, device=first.device)
    columns = _block_columns(numel, n)
    summer = _Summer(n, columns, first.dtype, first.device)
    count = float(n) if divide_by_count else None
    for start in range(0, numel, columns):
        stop = min(numel, start + columns)
        terms = [
            _term(
                flat[start:stop],
                None if mflats is None else mflats[t][start:stop],
                None if weights is None else weights[t],
                divisor,
            )
            for t, flat in enumerate(flats)
        ]
        summer.round_into(out[start:stop], summer.sum(terms), count)
    return out.reshape(first.shape)


def _kth_largest(magnitude: torch.Tensor, k: int) -> torch.Tensor:
    """The ``k``-th largest value of a flat, non-negative float32 tensor (``1 <= k < numel``).

    A radix select: non-negative float32 values order as their int32 bit patterns, so a
    histogram of the top 16 bits finds the bucket that holds the ``k``-th largest value, and
    :func:`torch.kthvalue` finishes the job inside that bucket. About ten times faster than
    :func:`torch.kthvalue` on the whole tensor, with the same result.
    """
    high = magnitude.view(torch.int32) >> 16
    hist = torch.bincount(high.reshape(-1), minlength=1 << 15)
    from_top = hist.flip(0).cumsum(0)
    position = int(torch.searchsorted(from_top, k))
    bucket = (1 << 15) - 1 - position
    above = int(from_top[position]) - int(hist[bucket])
    candidates = magnitude[high == bucket]
    del high
    rank = k - above  # rank of the answer among the candidates, from the top
    return torch.kthvalue(candidates, candidates.numel() - rank + 1).values


def kth_largest_with_count(
    magnitude: torch.Tensor, k: int, block: int = BLOCK_ELEMENTS
) -> tuple[torch.Tensor, int]:
    """:func:`_kth_largest` in blocks, and the number of entries above the value found.

    Returns what ``_kth_largest(magnitude, k)`` returns (the same value: the candidates are
    the same entries, in the same order) and ``int((magnitude > value).sum())``, with
    temporaries of ``block`` entries instead of the size of ``magnitude``.
    """
    flat = magnitude.reshape(-1)
    numel = flat.numel()
    hist = torch.zeros(1 << 15, dtype=torch.int64)
    high = torch.empty(min(block, numel), dtype=torch.int32)
    for start in range(0, numel, block):
        stop = min(numel, start + block)
        h = high[: stop - start]
        torch.bitwise_right_shift(flat[start:stop].view(torch.int32), 16, out=h)
        hist += torch.bincount(h, minlength=1 << 15)
    from_top = hist.flip(0).cumsum(0)
    position = int(torch.searchsorted(from_top, k))
    bucket = (1 << 15) - 1 - position
    above = int(from_top[position]) - int(hist[bucket])
    pieces = []
    for start in range(0, numel, block):
        stop = min(numel, start + block)
        h = high[: stop - start]
        torch.bitwise_right_shift(flat[start:stop].view(torch.int32), 16, out=h)
        pieces.append(flat[start:stop][h == bucket])
    candidates = torch.cat(pieces)
    rank = k - above
    value = torch.kthvalue(candidates, candidates.numel() - rank + 1).values
    return value, above + int((candidates > value).sum())


def fused_sum(
    tensors: Sequence[torch.Tensor],
    weights: Sequence[float] | None,
    wide: torch.Tensor | None = None,
    *,
    divide_by_count: bool = False,
) -> torch.Tensor:
    """:func:`ordered_sum` of float32 tensors, with fewer passes.

    ``fused_sum(tensors, weights, divide_by_count=c)`` is ``ordered_sum(tensors, weights,
    divide_by_count=c)``: the same operations entry by entry (each term rounded to float32,
    three terms or more added in float64 in task order, the division by the count in the
    sum's dtype, one rounding), so the same bits, but without the blocking, in place where it
    can: the result overwrites ``tensors[0]`` unless weights make new terms. ``wide`` is an
    optional float64 buffer of the tensors' size for the float64 sum.
    """
    n = len(tensors)
    terms = list(tensors)
    if weights is not None:
        terms = [t * w if w != 1.0 else t for t, w in zip(terms, weights, strict=True)]
    if n == 1:
        return terms[0]  # ordered_sum divides by 1.0: the same values
    if n == 2:
        total = terms[0] + terms[1]
        return total / 2.0 if divide_by_count else total
    first = terms[0]
    if first.dtype not in _EXACT_IN_FLOAT64:
        return ordered_sum(terms, divide_by_count=divide_by_count)
    acc = torch.empty(first.shape, dtype=torch.float64) if wide is None else wide
    acc.copy_(first)
    for term in terms[1:]:
        acc.add_(term)  # float32 -> float64 is exact: the same as adding a float64 copy
    if divide_by_count:
        acc.div_(float(n))
    first.copy_(acc)
    return first


def fused_ties(
    values: Sequence[torch.Tensor],
    wide: torch.Tensor,
    wide2: torch.Tensor,
    elected: torch.Tensor,
    count: torch.Tensor,
    scratch: torch.Tensor,
) -> torch.Tensor:
    """:func:`ties_merge` with ``majority="total"`` of three or more float32 tensors.

    ``values`` are the already masked and weighted terms of :func:`ties_merge` (its
    ``weights[t] * where(keep_masks[t], tensors[t], 0)``), except that dropped entries may be
    ``-0.0`` as well as ``+0.0``: the sign of a zero term changes neither the election (a
    zero never agrees) nor the result (the sum of the agreeing terms starts from ``+0.0``).
    The same float64 sums in task order, the same election and the same division as
    :func:`ties_merge`, so the same bits, with float 0/1 masks instead of boolean ones (much
    faster on CPUs) and without temporaries: ``wide``/``wide2`` are float64 buffers and
    ``elected``/``count``/``scratch`` float32 buffers of the values' size; the terms are
    overwritten and the result is written into ``values[0]``.
    """
    acc = wide
    acc.copy_(values[0])
    for value in values[1:]:
        acc.add_(value)
    elected.copy_(acc)  # rounding keeps the sign (see ties_merge)
    elected.sign_()
    count.zero_()
    total = wide2
    total.zero_()
    for value in values:
        torch.mul(value, elected, out=scratch)
        torch.gt(scratch, 0.0, out=scratch)  # agrees: 1.0, else 0.0
        count.add_(scratch)
        value.mul_(scratch)  # the agreeing value, or a zero
        total.add_(value)  # +0.0 + ... in task order: the sums of ties_merge
    count.clamp_(min=1.0)
    total.div_(count)  # small integer counts are exact in float32: a float64 division
    out = values[0]
    out.copy_(total)
    return out


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
    if magnitude.dtype != torch.float64:
        if magnitude.dtype != torch.float32:
            magnitude = magnitude.float()  # exact; kthvalue lacks half kernels on some devices
        threshold = _kth_largest(magnitude, k)
    else:
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
    where the elected sign is 0). Sums over tasks are those of :func:`ordered_sum`.
    """
    first = tensors[0]
    n = len(tensors)
    numel = first.numel()
    dtype, device = first.dtype, first.device
    flats = _flat(tensors)
    mflats = _flat(keep_masks)
    assert flats is not None
    out = torch.empty(numel, dtype=dtype, device=device)
    columns = _block_columns(numel, n)
    summer = _Summer(n, columns, dtype, device)
    elected_buf = torch.empty(columns, dtype=dtype, device=device)
    count_buf = torch.empty(columns, dtype=summer.sum_dtype, device=device)
    zero = torch.zeros((), dtype=dtype, device=device)
    for start in range(0, numel, columns):
        stop = min(numel, start + columns)
        values = [
            _term(
                flat[start:stop],
                None if mflats is None else mflats[t][start:stop],
                None if weights is None else weights[t],
                divisor,
            )
            for t, flat in enumerate(flats)
        ]
        elected = elected_buf[: stop - start]
        if majority == "total":
            # Rounding the sum to `dtype` keeps its sign: a non-zero exact sum of `dtype`
            # values is at least the smallest subnormal of `dtype`.
            elected.copy_(summer.sum(values))
        else:
            elected.copy_(torch.sign(values[0]))
            for value in values[1:]:
                elected.add_(torch.sign(value))
        elected.sign_()
        agree = [torch.mul(value, elected) > 0 for value in values]
        selected = [torch.where(a, v, zero) for a, v in zip(agree, values, strict=True)]
        count = count_buf[: stop - start]
        count.copy_(agree[0])
        for a in agree[1:]:
            count.add_(a.to(count.dtype))
        count.clamp_(min=1.0)
        summer.round_into(out[start:stop], summer.sum(selected), count)
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
