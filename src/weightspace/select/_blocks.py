"""Repeated blocks (the layers of a transformer) and how the blocks of two depths line up."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal, TypeAlias

from weightspace._errors import WeightspaceValueError
from weightspace.select._index import ModelIndex

__all__ = ["BlockList", "Layers", "align_depths", "find_blocks", "shared_blocks"]

Layers: TypeAlias = Literal["prefix", "suffix", "spread"] | Sequence[tuple[int, int]]
"""How blocks of two depths are paired: a mode name or explicit ``(i, j)`` index pairs."""

_Signature = tuple[tuple[str, tuple[int, ...]], ...]


@dataclass(frozen=True)
class BlockList:
    """A run of sibling modules ``<prefix>.<i>`` whose tensors have the same names and shapes.

    Attributes:
        prefix: The parent module (``"encoder.layer"``; ``""`` for the root).
        names: The blocks' module names, by increasing index.
        signature: Relative tensor names and shapes, the same in every block.
    """

    prefix: str
    names: tuple[str, ...]
    signature: _Signature

    def describe(self) -> str:
        """Return ``'<prefix>.{0..n-1}: n blocks of k tensors'``."""
        where = self.prefix or "<root>"
        return f"{where!r}: {len(self.names)} blocks of {len(self.signature)} tensors"


def _signature(index: ModelIndex, module: str) -> _Signature:
    cut = len(module) + 1
    return tuple((n[cut:], tuple(index.shapes[n])) for n in index.under(module))


def find_blocks(index: ModelIndex) -> list[BlockList]:
    """Find every run of integer-named sibling modules with identical tensors.

    Args:
        index: The model's index.

    Returns:
        The runs, larger blocks (more tensors each) first.
    """
    children: dict[str, list[tuple[int, str]]] = {}
    for module in index.modules:
        parent, _, last = module.rpartition(".")
        if last.isdigit():
            children.setdefault(parent, []).append((int(last), module))
    found: list[BlockList] = []
    for parent, kids in children.items():
        names = tuple(m for _, m in sorted(kids))
        sigs = {_signature(index, m) for m in names}
        if len(sigs) == 1:
            sig = sigs.pop()
            if sig:
                found.append(BlockList(parent, names, sig))
    found.sort(key=lambda b: (-len(b.signature), -len(b.names)))
    return found


def shared_blocks(ia: ModelIndex, ib: ModelIndex) -> tuple[BlockList, BlockList]:
    """Pick the repeated blocks of ``a`` and ``b`` with the same tensors, largest first.

    Raises:
        WeightspaceValueError: if the two models hold no such runs with the same tensors.
    """
    runs_a, runs_b = find_blocks(ia), find_blocks(ib)
    for ra in runs_a:
        for rb in runs_b:
            if ra.signature == rb.signature:
                return ra, rb
    raise WeightspaceValueError(
        "`layers` pairs repeated blocks, but `a` and `b` hold no runs of blocks with the same "
        f"tensor names and shapes: `a` has {[r.describe() for r in runs_a[:4]]}, `b` has "
        f"{[r.describe() for r in runs_b[:4]]}; pair tensors with `mapping=` instead"
    )


def _spread(i: int, n: int, m: int) -> int:
    """Index of ``i`` of ``n`` evenly spread over ``m >= n`` (ends on ends, half rounded up)."""
    if n == 1:
        return 0
    return (2 * i * (m - 1) + (n - 1)) // (2 * (n - 1))


def align_depths(n_a: int, n_b: int, layers: Layers) -> list[tuple[int, int]]:
    """Pair block indices of a model with ``n_a`` blocks with those of one with ``n_b``.

    * ``"prefix"``: block ``i`` with block ``i``, for the first ``min(n_a, n_b)`` blocks.
    * ``"suffix"``: the last ``min(n_a, n_b)`` blocks of each, in order.
    * ``"spread"``: every block of the shallower model, spread evenly over the deeper one
      (first on first, last on last, half rounded up; a single block goes to block 0).
    * explicit pairs ``[(i, j), ...]``: one-to-one, in range.

    Args:
        n_a: Number of blocks of ``a``.
        n_b: Number of blocks of ``b``.
        layers: The mode.

    Returns:
        Index pairs, increasing in ``a``'s index for the modes, in the given order otherwise.

    Raises:
        WeightspaceValueError: if ``layers`` is none of these, or explicit pairs are out of
            range or not one-to-one.

    Example:
        >>> from weightspace.select._blocks import align_depths
        >>> align_depths(2, 4, "spread"), align_depths(2, 4, "suffix")
        ([(0, 0), (1, 3)], [(0, 2), (1, 3)])
    """
    m = min(n_a, n_b)
    if isinstance(layers, str):
        if layers == "prefix":
            return [(i, i) for i in range(m)]
        if layers == "suffix":
            return [(n_a - m + k, n_b - m + k) for k in range(m)]
        if layers == "spread":
            if n_a <= n_b:
                return [(i, _spread(i, n_a, n_b)) for i in range(n_a)]
            return [(_spread(j, n_b, n_a), j) for j in range(n_b)]
        raise WeightspaceValueError(
            f"`layers` must be 'prefix', 'suffix', 'spread' or a list of (i, j) block index "
            f"pairs, got {layers!r}"
        )
    items: list[object] = list(layers) if isinstance(layers, Sequence) else []
    if not items or not all(_is_index_pair(p) for p in items):
        raise WeightspaceValueError(
            f"`layers` must be 'prefix', 'suffix', 'spread' or a non-empty list of (i, j) block "
            f"index pairs, got {layers!r}"
        )
    pairs = [(p[0], p[1]) for p in items if isinstance(p, (tuple, list))]
    bad = [(i, j) for i, j in pairs if not (0 <= i < n_a and 0 <= j < n_b)]
    if bad:
        raise WeightspaceValueError(
            f"`layers` pairs {bad} are out of range: `a` has {n_a} blocks (0..{n_a - 1}) and "
            f"`b` has {n_b} (0..{n_b - 1})"
        )
    for side, k in (("a", 0), ("b", 1)):
        seen = [p[k] for p in pairs]
        twice = sorted({x for x in seen if seen.count(x) > 1})
        if twice:
            raise WeightspaceValueError(
                f"`layers` uses blocks {twice} of `{side}` more than once; the pairs must be "
                "one-to-one"
            )
    return pairs


def _is_index_pair(p: object) -> bool:
    return (
        isinstance(p, (tuple, list))
        and len(p) == 2
        and all(isinstance(x, int) and not isinstance(x, bool) for x in p)
    )
