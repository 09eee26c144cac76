r"""The global top of a set of scores, kept without holding the scores: :func:`top_ranking`.

:func:`~weightspace.saliency.top_k` concatenates every score into one float64 vector and sorts
it, which for the 106M linear weights of a 135M-parameter language model costs several
gigabytes (the vector, its sort and its indices) on top of the scores themselves.
:func:`top_ranking` reads the scores one tensor at a time (from a mapping, or lazily from
:func:`~weightspace.saliency.iter_snip` / :func:`~weightspace.saliency.iter_wanda`) and keeps
only the ``k`` best entries seen so far, so its memory is that of ``k`` candidates plus one
tensor. The :class:`Ranking` it returns gives the mask of any top count up to ``k``, equal
entry for entry to the mask :func:`~weightspace.saliency.top_k` builds from the same scores
(the same order of ties: parameter order, then row-major order).
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

import torch
from torch import Tensor

from weightspace._errors import WeightspaceValueError
from weightspace.saliency._masks import _count

__all__ = ["Ranking", "top_ranking"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Ranking:
    """The highest-scoring entries over many tensors, best first.

    Built by :func:`top_ranking`. Positions are flat indices into the concatenation of the
    tensors, in their order, each flattened row-major.

    Attributes:
        names: The tensors' names, in the order they were read.
        shapes: Their shapes.
        indices: ``int64`` flat positions of the kept entries, best first (ties: lower
            position first).
        values: Their scores (``float64``), in the same order.
        total: Number of entries of all tensors.

    Example:
        >>> import torch
        >>> r = top_ranking({"a": torch.tensor([3.0, 1.0]), "b": torch.tensor([2.0])}, k=2)
        >>> r.indices.tolist(), r.values.tolist(), r.total
        ([0, 2], [3.0, 2.0], 3)
    """

    names: tuple[str, ...]
    shapes: tuple[torch.Size, ...]
    indices: Tensor
    values: Tensor
    total: int

    @property
    def kept(self) -> int:
        """How many entries the ranking holds (the largest count :meth:`mask` can give)."""
        return int(self.indices.numel())

    def count(self, fraction: float) -> int:
        """Return the number of entries that ``fraction`` of all entries selects.

        The rounding of :func:`~weightspace.saliency.top_k`: ``floor(fraction * total + 0.5)``.

        Args:
            fraction: A number in ``[0, 1]``.

        Returns:
            The count.

        Raises:
            WeightspaceValueError: if ``fraction`` is not in ``[0, 1]``.
        """
        return _count(None, fraction, self.total)

    def mask(self, *, k: int | None = None, fraction: float | None = None) -> dict[str, Tensor]:
        """Return the mask of the top ``k`` (or a ``fraction`` of all) entries.

        Equal to ``top_k(scores, k=k)`` (or ``fraction=``) on the scores the ranking was
        built from.

        Args:
            k: Number of entries, at most :attr:`kept`.
            fraction: Or the fraction of all entries, rounded as in
                :func:`~weightspace.saliency.top_k`.

        Returns:
            ``name -> bool tensor`` of each tensor's shape.

        Raises:
            WeightspaceValueError: if not exactly one of ``k`` and ``fraction`` is given, it is
                out of range, or it asks for more entries than the ranking kept.

        Example:
            >>> import torch
            >>> r = top_ranking({"w": torch.tensor([0.5, 2.0, 1.0])}, k=2)
            >>> r.mask(k=1)["w"].tolist()
            [False, True, False]
        """
        count = _count(k, fraction, self.total)
        if count > self.kept:
            raise WeightspaceValueError(
                f"the mask needs the top {count} entries but the ranking kept {self.kept}; "
                f"build it with top_ranking(..., k={count}) or more"
            )
        flat = torch.zeros(self.total, dtype=torch.bool)
        flat[self.indices[:count]] = True
        out: dict[str, Tensor] = {}
        start = 0
        for name, shape in zip(self.names, self.shapes, strict=True):
            n = shape.numel()
            out[name] = flat[start : start + n].reshape(shape).clone()
            start += n
        return out


def _best_first(values: Tensor, indices: Tensor) -> tuple[Tensor, Tensor]:
    """Sort by value, largest first, ties by lower index."""
    by_index = torch.argsort(indices, stable=True)
    values, indices = values[by_index], indices[by_index]
    order = torch.sort(values, descending=True, stable=True).indices
    return values[order], indices[order]


def _items(scores: object) -> Iterable[tuple[str, Tensor]]:
    if isinstance(scores, Mapping):
        return scores.items()
    if isinstance(scores, (str, bytes)) or not isinstance(scores, Iterable):
        raise WeightspaceValueError(
            "`scores` must be a mapping of names to tensors or an iterable of (name, tensor) "
            f"pairs (e.g. saliency.iter_snip(...)), got {type(scores).__name__}"
        )
    return scores


def top_ranking(
    scores: Mapping[str, Tensor] | Iterable[tuple[str, Tensor]],
    *,
    k: int | None = None,
    fraction: float | None = None,
    total: int | None = None,
) -> Ranking:
    r"""Keep the ``k`` highest scores over all tensors, reading one tensor at a time.

    The memory-lean form of the global :func:`~weightspace.saliency.top_k`: only ``k``
    candidates (a float64 value and an int64 position each) and the tensor being read are held,
    never a copy of all scores, so scores yielded by
    :func:`~weightspace.saliency.iter_snip` or :func:`~weightspace.saliency.iter_wanda` are
    dropped as soon as they are read. Candidates from each tensor are merged in batches of
    about ``k`` entries; once ``k`` are held, only entries above the ``k``-th value are looked
    at. ``ranking.mask(k=c)`` is then exactly ``top_k(scores, k=c)`` for any ``c <= k``
    (e.g. the top-``q`` utility set and a top-utility baseline of a smaller count from one
    pass).

    Args:
        scores: ``name -> float tensor``, or an iterable of ``(name, tensor)`` pairs read once.
        k: How many entries to keep.
        fraction: Or the fraction of all entries (rounded as in
            :func:`~weightspace.saliency.top_k`); with an iterable, pass ``total`` too.
        total: Number of entries of all tensors, needed for ``fraction`` with an iterable
            (checked against what was read).

    Returns:
        A :class:`Ranking`.

    Raises:
        WeightspaceValueError: if ``scores`` is empty or not of the forms above, a score is
            not a float tensor or holds NaN, a name repeats, not exactly one of ``k`` and
            ``fraction`` is given, ``fraction`` comes with an iterable but no ``total``, or
            ``total`` or ``k`` does not fit the entries read.

    Shapes:
        - scores: one tensor per parameter, any shapes.

    Example:
        >>> import torch
        >>> from weightspace import saliency
        >>> s = {"a": torch.tensor([[0.1, 0.9], [0.4, 0.4]]), "b": torch.tensor([0.4, 0.7])}
        >>> r = saliency.top_ranking(s, k=4)
        >>> r.mask(k=3)["a"].tolist(), r.mask(k=3)["b"].tolist()
        ([[False, True], [True, False]], [False, True])
        >>> all(torch.equal(r.mask(k=3)[n], m) for n, m in saliency.top_k(s, k=3).items())
        True
    """
    items = _items(scores)
    if isinstance(scores, Mapping):
        known = sum(t.numel() for t in scores.values() if isinstance(t, Tensor))
        if total is not None and total != known:
            raise WeightspaceValueError(
                f"`total` is {total} but the scores hold {known} entries; omit `total`"
            )
        total = known
    if k is None and fraction is not None and total is None:
        raise WeightspaceValueError(
            "`fraction` needs the number of entries: pass `total=` with an iterable of scores "
            "(or pass `k`)"
        )
    keep = _count(k, fraction, total if total is not None else sys.maxsize)
    names: list[str] = []
    shapes: list[torch.Size] = []
    cand_v = torch.empty(0, dtype=torch.float64)
    cand_i = torch.empty(0, dtype=torch.int64)
    buf_v: list[Tensor] = []
    buf_i: list[Tensor] = []
    buffered = 0
    bar: float | None = None  # the k-th value once k candidates are held
    offset = 0

    def merge() -> None:
        nonlocal cand_v, cand_i, buf_v, buf_i, buffered, bar
        values, indices = _best_first(torch.cat([cand_v, *buf_v]), torch.cat([cand_i, *buf_i]))
        cand_v, cand_i = values[:keep].clone(), indices[:keep].clone()
        buf_v, buf_i, buffered = [], [], 0
        if keep and cand_v.numel() == keep:
            bar = float(cand_v[-1])

    for name, s in items:
        if not isinstance(s, Tensor) or not s.is_floating_point():
            got = s.dtype if isinstance(s, Tensor) else type(s).__name__
            raise WeightspaceValueError(
                f"`scores[{name!r}]` must be a floating-point tensor, got {got}"
            )
        if name in names:
            raise WeightspaceValueError(f"`scores` gives {name!r} twice; names must be unique")
        flat = s.detach().reshape(-1).to(torch.float64)
        if bool(torch.isnan(flat).any()):
            raise WeightspaceValueError(
                f"`scores[{name!r}]` holds NaN; compute the scores on finite weights and data"
            )
        names.append(name)
        shapes.append(s.shape)
        if keep:
            if bar is None:
                pos = torch.arange(flat.numel(), dtype=torch.int64)
                vals = flat
            else:
                pos = torch.nonzero(flat > bar).reshape(-1)
                vals = flat[pos]
            if vals.numel() > keep:  # at most `keep` of one tensor can make the top
                order = torch.sort(vals, descending=True, stable=True).indices[:keep]
                vals, pos = vals[order], pos[order]
            buf_v.append(vals.clone())
            buf_i.append(pos + offset)
            buffered += int(vals.numel())
            if buffered >= keep:
                merge()
        offset += flat.numel()
        del flat
    if not names:
        raise WeightspaceValueError("`scores` is empty; pass at least one tensor of scores")
    if total is not None and total != offset:
        raise WeightspaceValueError(
            f"`total` is {total} but the scores held {offset} entries; pass total={offset}"
        )
    if keep > offset:
        raise WeightspaceValueError(
            f"`k` is {keep} but there are only {offset} entries; pass k <= {offset}"
        )
    if buffered:
        merge()
    logger.debug("top_ranking kept %d of %d entries over %d tensors", keep, offset, len(names))
    return Ranking(
        names=tuple(names), shapes=tuple(shapes), indices=cand_i, values=cand_v, total=offset
    )
