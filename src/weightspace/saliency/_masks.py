r"""Boolean masks over a model's parameters: built from scores, combined as sets, summarised.

A *mask* is a mapping ``name -> bool tensor`` of the parameters' shapes: a boolean state dict.
A :class:`~weightspace.TaskVector` with the same keys can be multiplied by it
(``tv * mask`` keeps the selected entries and zeroes the others). Every function returns a new
``dict`` of new tensors and never changes its inputs.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Literal

import torch
from torch import Tensor

from weightspace._errors import ShapeMismatchError, WeightspaceValueError
from weightspace.select import Selection

__all__ = [
    "MaskStats",
    "complement",
    "difference",
    "intersection",
    "mask_stats",
    "restrict",
    "threshold",
    "top_k",
    "union",
]


def _check_scores(scores: object) -> Mapping[str, Tensor]:
    if not isinstance(scores, Mapping) or not scores:
        raise WeightspaceValueError(
            "`scores` must be a non-empty mapping of parameter names to tensors, got "
            f"{type(scores).__name__ if not isinstance(scores, Mapping) else 'an empty mapping'}"
        )
    for name, s in scores.items():
        if not isinstance(s, Tensor) or not (s.is_floating_point() or s.dtype == torch.bool):
            got = s.dtype if isinstance(s, Tensor) else type(s).__name__
            raise WeightspaceValueError(
                f"`scores[{name!r}]` must be a floating-point tensor, got {got}"
            )
        if s.is_floating_point() and bool(torch.isnan(s).any()):
            raise WeightspaceValueError(
                f"`scores[{name!r}]` holds NaN; compute the scores on finite weights and data"
            )
    return scores


def _check_mask(mask: object, argument: str) -> Mapping[str, Tensor]:
    if not isinstance(mask, Mapping):
        raise WeightspaceValueError(
            f"`{argument}` must be a mapping of parameter names to bool tensors, got "
            f"{type(mask).__name__}"
        )
    for name, m in mask.items():
        if not isinstance(m, Tensor) or m.dtype != torch.bool:
            got = m.dtype if isinstance(m, Tensor) else type(m).__name__
            raise WeightspaceValueError(
                f"`{argument}[{name!r}]` must be a bool tensor, got {got}; build masks with "
                "`top_k` or `threshold`, or convert with `.bool()`"
            )
    return mask


def _check_same(a: Mapping[str, Tensor], b: Mapping[str, Tensor], what: str) -> None:
    if list(a) != list(b) and set(a) != set(b):
        only_a = [n for n in a if n not in b][:8]
        only_b = [n for n in b if n not in a][:8]
        raise ShapeMismatchError(
            f"the masks of `{what}` must have the same keys; only in the first: {only_a}, only "
            f"in the second: {only_b}"
        )
    for name in a:
        if a[name].shape != b[name].shape:
            raise ShapeMismatchError(
                f"the masks of `{what}` differ in shape at {name!r}: {tuple(a[name].shape)} vs "
                f"{tuple(b[name].shape)}"
            )


def _count(k: int | None, fraction: float | None, total: int) -> int:
    if (k is None) == (fraction is None):
        raise WeightspaceValueError(
            f"pass exactly one of `k` and `fraction`, got k={k!r}, fraction={fraction!r}"
        )
    if k is not None:
        if isinstance(k, bool) or not isinstance(k, int) or k < 0:
            raise WeightspaceValueError(f"`k` must be a non-negative int, got {k!r}")
        if k > total:
            raise WeightspaceValueError(
                f"`k` is {k} but there are only {total} entries; pass k <= {total}"
            )
        return k
    assert fraction is not None
    if (
        isinstance(fraction, bool)
        or not isinstance(fraction, (int, float))
        or not 0.0 <= fraction <= 1.0
    ):
        raise WeightspaceValueError(f"`fraction` must be a number in [0, 1], got {fraction!r}")
    return math.floor(fraction * total + 0.5)


def _top(flat: Tensor, k: int) -> Tensor:
    """Bool mask of the ``k`` largest entries; ties go to the lower flat index."""
    keep = torch.zeros(flat.numel(), dtype=torch.bool)
    if k:
        order = torch.sort(flat.to(torch.float64), descending=True, stable=True).indices
        keep[order[:k]] = True
    return keep


def top_k(
    scores: Mapping[str, Tensor],
    *,
    k: int | None = None,
    fraction: float | None = None,
    scope: Literal["global", "layer"] = "global",
) -> dict[str, Tensor]:
    r"""Select the highest-scoring entries: exactly ``k``, or a ``fraction`` of them.

    With ``scope="global"`` the entries of all tensors compete together (SalUn's mask,
    Fan et al., ICLR 2024, `arXiv:2310.12508 <https://arxiv.org/abs/2310.12508>`_, keeps the
    top half of all weights this way); with ``scope="layer"`` each tensor keeps its own top
    ``k`` (or ``fraction``, rounded half up per tensor). Ties are broken deterministically in
    favour of the entry that comes first (parameter order, then row-major order).

    Args:
        scores: ``name -> float tensor`` (e.g. from :func:`gradient`).
        k: Number of entries to keep (globally, or in each tensor).
        fraction: Fraction of entries to keep, in ``[0, 1]`` (``round(fraction * n)``).
        scope: ``"global"`` or ``"layer"``.

    Returns:
        A mask: ``name -> bool tensor`` with the keys and shapes of ``scores``.

    Raises:
        WeightspaceValueError: if not exactly one of ``k`` and ``fraction`` is given, either is
            out of range, ``scope`` is unknown, or a score is NaN or not a float tensor.

    Shapes:
        - scores: one tensor per parameter, any shapes.
        - output: the same shapes, bool.

    Example:
        >>> import torch
        >>> m = top_k({"a": torch.tensor([3.0, 1.0]), "b": torch.tensor([2.0, 0.0])}, k=2)
        >>> m["a"].tolist(), m["b"].tolist()
        ([True, False], [True, False])
    """
    scores = _check_scores(scores)
    if scope not in ("global", "layer"):
        raise WeightspaceValueError(f"`scope` must be 'global' or 'layer', got {scope!r}")
    if scope == "layer":
        out: dict[str, Tensor] = {}
        for name, s in scores.items():
            count = _count(k, fraction, s.numel())
            out[name] = _top(s.detach().reshape(-1), count).reshape(s.shape)
        return out
    total = sum(s.numel() for s in scores.values())
    count = _count(k, fraction, total)
    flat = torch.cat([s.detach().reshape(-1).to(torch.float64) for s in scores.values()])
    keep = _top(flat, count)
    out = {}
    start = 0
    for name, s in scores.items():
        out[name] = keep[start : start + s.numel()].reshape(s.shape)
        start += s.numel()
    return out


def threshold(
    scores: Mapping[str, Tensor], value: float, *, inclusive: bool = True
) -> dict[str, Tensor]:
    r"""Select the entries whose score is at least (or above) ``value``.

    SalUn's hard threshold :math:`m = \mathbb{1}(|\nabla_\theta \ell_f| \ge \gamma)`.

    Args:
        scores: ``name -> float tensor``.
        value: The threshold :math:`\gamma` (finite).
        inclusive: Select ``score >= value`` (default) or ``score > value``.

    Returns:
        A mask with the keys and shapes of ``scores``.

    Raises:
        WeightspaceValueError: if ``value`` is not finite or a score is NaN.

    Shapes:
        - output: the shapes of ``scores``, bool.

    Example:
        >>> import torch
        >>> threshold({"w": torch.tensor([0.1, 0.5, 0.9])}, 0.5)["w"].tolist()
        [False, True, True]
    """
    scores = _check_scores(scores)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise WeightspaceValueError(f"`value` must be a finite number, got {value!r}")
    if inclusive:
        return {n: s.detach() >= value for n, s in scores.items()}
    return {n: s.detach() > value for n, s in scores.items()}


def union(a: Mapping[str, Tensor], b: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """Return the entries selected by ``a`` or ``b`` (elementwise or).

    Args:
        a: A mask.
        b: A mask with the same keys and shapes.

    Returns:
        A new mask, keyed in the order of ``a``.

    Raises:
        WeightspaceValueError: if a value is not a bool tensor.
        ShapeMismatchError: if the keys or shapes differ.

    Example:
        >>> import torch
        >>> union({"w": torch.tensor([True, False])}, {"w": torch.tensor([False, False])})["w"]
        tensor([ True, False])
    """
    _check_same(_check_mask(a, "a"), _check_mask(b, "b"), "union")
    return {n: a[n] | b[n] for n in a}


def intersection(a: Mapping[str, Tensor], b: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """Return the entries selected by both ``a`` and ``b`` (elementwise and).

    Args:
        a: A mask.
        b: A mask with the same keys and shapes.

    Returns:
        A new mask, keyed in the order of ``a``.

    Raises:
        WeightspaceValueError: if a value is not a bool tensor.
        ShapeMismatchError: if the keys or shapes differ.

    Example:
        >>> import torch
        >>> m = intersection({"w": torch.tensor([True, True])}, {"w": torch.tensor([False, True])})
        >>> m["w"]
        tensor([False,  True])
    """
    _check_same(_check_mask(a, "a"), _check_mask(b, "b"), "intersection")
    return {n: a[n] & b[n] for n in a}


def difference(a: Mapping[str, Tensor], b: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """Return the entries selected by ``a`` but not by ``b`` (``a & ~b``).

    The set difference used to isolate weights that matter for one behaviour but not for
    another, e.g. forget-set saliency minus retain-set saliency, or safety importance minus
    utility importance (Wei et al., "Assessing the Brittleness of Safety Alignment via Pruning
    and Low-Rank Modifications", ICML 2024, `arXiv:2402.05162
    <https://arxiv.org/abs/2402.05162>`_).

    Args:
        a: A mask.
        b: A mask with the same keys and shapes.

    Returns:
        A new mask, keyed in the order of ``a``.

    Raises:
        WeightspaceValueError: if a value is not a bool tensor.
        ShapeMismatchError: if the keys or shapes differ.

    Example:
        >>> import torch
        >>> difference({"w": torch.tensor([True, True])}, {"w": torch.tensor([False, True])})["w"]
        tensor([ True, False])
    """
    _check_same(_check_mask(a, "a"), _check_mask(b, "b"), "difference")
    return {n: a[n] & ~b[n] for n in a}


def complement(mask: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """Return the entries that ``mask`` does not select (elementwise not).

    Args:
        mask: A mask.

    Returns:
        A new mask with the same keys and shapes.

    Raises:
        WeightspaceValueError: if a value is not a bool tensor.

    Example:
        >>> import torch
        >>> complement({"w": torch.tensor([True, False])})["w"]
        tensor([False,  True])
    """
    _check_mask(mask, "mask")
    return {n: ~m for n, m in mask.items()}


def restrict(mask: Mapping[str, Tensor], selection: Selection | Iterable[str]) -> dict[str, Tensor]:
    """Keep the mask on the selected parameters and clear it everywhere else.

    Args:
        mask: A mask.
        selection: A :class:`~weightspace.select.Selection` (e.g. from
            :func:`weightspace.select.parameters`; its ``names_a`` are used) or parameter names.

    Returns:
        A new mask with the same keys and shapes; tensors outside the selection are all
        ``False``.

    Raises:
        WeightspaceValueError: if a value is not a bool tensor, or a selected name is not in
            the mask (the message lists them).

    Example:
        >>> import torch
        >>> m = {"a": torch.tensor([True]), "b": torch.tensor([True])}
        >>> restrict(m, ["b"])["a"].tolist(), restrict(m, ["b"])["b"].tolist()
        ([False], [True])
    """
    _check_mask(mask, "mask")
    if isinstance(selection, str):
        raise WeightspaceValueError(
            f"`selection` must be a Selection or a collection of names, got the string "
            f"{selection!r}; wrap it in a list: [{selection!r}]"
        )
    names = list(selection.names_a) if isinstance(selection, Selection) else list(selection)
    unknown = [n for n in names if n not in mask]
    if unknown:
        raise WeightspaceValueError(
            f"{len(unknown)} selected names are not in the mask: {unknown[:8]}; select among "
            f"{list(mask)[:8]}{'...' if len(mask) > 8 else ''}"
        )
    keep = set(names)
    return {n: (m.clone() if n in keep else torch.zeros_like(m)) for n, m in mask.items()}


@dataclass(frozen=True)
class MaskStats:
    """How many entries a mask selects, in total and per tensor.

    Attributes:
        selected: Number of selected entries.
        total: Number of entries.
        per_tensor: ``name -> (selected, total)`` for each tensor, in the mask's order.

    Example:
        >>> import torch
        >>> s = mask_stats({"w": torch.tensor([True, False, False, False])})
        >>> s.selected, s.total, s.fraction
        (1, 4, 0.25)
    """

    selected: int
    total: int
    per_tensor: Mapping[str, tuple[int, int]] = field(default_factory=dict)

    @property
    def fraction(self) -> float:
        """Selected fraction of all entries (0.0 for an empty mask)."""
        return self.selected / self.total if self.total else 0.0

    @property
    def empty(self) -> bool:
        """``True`` when nothing is selected."""
        return self.selected == 0

    def fractions(self) -> dict[str, float]:
        """Return the selected fraction of each tensor.

        Returns:
            ``name -> fraction``, in the mask's order.
        """
        return {n: (s / t if t else 0.0) for n, (s, t) in self.per_tensor.items()}


def mask_stats(mask: Mapping[str, Tensor]) -> MaskStats:
    """Count the selected entries of a mask, in total and per tensor.

    Args:
        mask: A mask.

    Returns:
        A :class:`MaskStats`.

    Raises:
        WeightspaceValueError: if a value is not a bool tensor.

    Example:
        >>> import torch
        >>> mask_stats({"a": torch.ones(2, 2, dtype=torch.bool)}).per_tensor
        {'a': (4, 4)}
    """
    _check_mask(mask, "mask")
    per = {n: (int(m.sum()), m.numel()) for n, m in mask.items()}
    return MaskStats(
        selected=sum(s for s, _ in per.values()),
        total=sum(t for _, t in per.values()),
        per_tensor=per,
    )
