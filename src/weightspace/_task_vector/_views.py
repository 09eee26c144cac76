"""Tensor views: how a part of a tensor of model A lines up with a part of a tensor of model B.

Two architectures may store the same weights differently: GPT-2 keeps the query, key and value
projections in one transposed ``Conv1D`` weight ``c_attn`` of shape ``[d, 3d]``, Llama in three
``nn.Linear`` weights of shape ``[d, d]``. A :class:`TensorView` records one such
correspondence: a slice of A's tensor along one axis (or all of it), an optional transpose, and
a slice of B's tensor (or all of it). :meth:`TaskVector.transfer
<weightspace.TaskVector.transfer>` applies the views that a selection carries (its optional
``views`` attribute, one entry per pair), so that the core never imports
:mod:`weightspace.select`.

Views only move elements (slicing and transposing), so a split followed by the inverse fuse
gives the tensor back bit for bit, and the delta of a view is the view of the delta.
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, TypeVar

import torch
from torch import Tensor

from weightspace._errors import ShapeMismatchError, WeightspaceValueError
from weightspace._task_vector._values import Source, Value

if TYPE_CHECKING:
    from weightspace._task_vector._base import VectorBase

_V = TypeVar("_V", bound="VectorBase")

__all__ = ["TensorView", "assemble", "check_pieces", "transfer_views"]

Slice = tuple[int, int, int]
"""``(axis, start, stop)``: the elements ``start:stop`` along ``axis``."""


@dataclass(frozen=True)
class TensorView:
    """A correspondence ``b[slice_b] = t(a[slice_a])`` between a tensor of A and one of B.

    ``t`` is the transpose of the two dimensions of a 2-D piece when ``transpose`` is true,
    the identity otherwise. A missing slice means the whole tensor. A view with ``slice_a``
    *splits* A's tensor (several views read parts of it); a view with ``slice_b`` *fuses*
    (several tensors of A fill parts of one tensor of B). :meth:`inverse` turns one into the
    other.

    Attributes:
        shape_a: The full shape of A's tensor.
        shape_b: The full shape of B's tensor.
        slice_a: ``(axis, start, stop)`` of A's tensor, or ``None`` for all of it.
        slice_b: ``(axis, start, stop)`` of B's tensor, or ``None`` for all of it.
        transpose: Whether the (2-D) piece is transposed on its way from A to B.

    Raises:
        ShapeMismatchError: if a slice falls outside its shape, or the piece of A (after the
            transpose) does not have the shape of the piece of B.
        WeightspaceValueError: if ``transpose`` is asked for a piece that is not 2-D.

    Example:
        >>> import torch
        >>> from weightspace.select import TensorView
        >>> c_attn = torch.arange(24.0).reshape(2, 12)  # GPT-2 layout: [d, 3 * d] with d = 4
        >>> k = TensorView((2, 12), (4, 2), slice_a=(1, 4, 8), transpose=True)
        >>> str(k)
        'a[:, 4:8].T -> b'
        >>> k.take(c_attn).shape
        torch.Size([4, 2])
        >>> torch.equal(k.inverse().take(k.take(c_attn)), c_attn[:, 4:8])
        True
    """

    shape_a: tuple[int, ...]
    shape_b: tuple[int, ...]
    slice_a: Slice | None = None
    slice_b: Slice | None = None
    transpose: bool = False

    def __post_init__(self) -> None:
        object.__setattr__(self, "shape_a", tuple(int(s) for s in self.shape_a))
        object.__setattr__(self, "shape_b", tuple(int(s) for s in self.shape_b))
        piece_a = list(_piece_shape(self.shape_a, self.slice_a, "slice_a"))
        piece_b = _piece_shape(self.shape_b, self.slice_b, "slice_b")
        if self.transpose:
            if len(piece_a) != 2:
                raise WeightspaceValueError(
                    f"`transpose` needs a 2-D piece, got a piece of shape {tuple(piece_a)} of a "
                    f"tensor of shape {self.shape_a}"
                )
            piece_a.reverse()
        if tuple(piece_a) != piece_b:
            raise ShapeMismatchError(
                f"the view gives a piece of shape {tuple(piece_a)} from `a` {self.shape_a}"
                + (" (after the transpose)" if self.transpose else "")
                + f" but writes a piece of shape {piece_b} into `b` {self.shape_b}"
            )

    @property
    def piece_shape(self) -> tuple[int, ...]:
        """The shape of the piece of B that the view fills."""
        return _piece_shape(self.shape_b, self.slice_b, "slice_b")

    @property
    def is_identity(self) -> bool:
        """Whether the view moves nothing (whole tensors, same shape, no transpose)."""
        return self.slice_a is None and self.slice_b is None and not self.transpose

    def take(self, a: Tensor) -> Tensor:
        """Return the piece of ``a`` that goes to B, transposed if asked (a view, not a copy).

        Args:
            a: A's tensor, of shape :attr:`shape_a`.

        Returns:
            A tensor of shape :attr:`piece_shape`.

        Raises:
            ShapeMismatchError: if ``a`` does not have shape :attr:`shape_a`.
        """
        if tuple(a.shape) != self.shape_a:
            raise ShapeMismatchError(
                f"the view expects a tensor of shape {self.shape_a} from `a`, got {tuple(a.shape)}"
            )
        piece = a if self.slice_a is None else a.narrow(*_narrow(self.slice_a))
        return piece.t() if self.transpose else piece

    def put(self, b: Tensor, piece: Tensor) -> None:
        """Write ``piece`` (a result of :meth:`take`) into its place in ``b``, in place.

        Args:
            b: B's tensor, of shape :attr:`shape_b` (modified).
            piece: A tensor of shape :attr:`piece_shape`.
        """
        target = b if self.slice_b is None else b.narrow(*_narrow(self.slice_b))
        target.copy_(piece)

    def inverse(self) -> TensorView:
        """Return the view from B back to A (a split becomes a fuse and vice versa).

        Returns:
            ``TensorView(shape_b, shape_a, slice_b, slice_a, transpose)``.
        """
        return TensorView(self.shape_b, self.shape_a, self.slice_b, self.slice_a, self.transpose)

    def __str__(self) -> str:
        a = "a" + _fmt_slice(self.shape_a, self.slice_a) + (".T" if self.transpose else "")
        return f"{a} -> b{_fmt_slice(self.shape_b, self.slice_b)}"


def _piece_shape(shape: tuple[int, ...], part: Slice | None, what: str) -> tuple[int, ...]:
    if part is None:
        return shape
    if len(part) != 3 or not all(isinstance(v, int) for v in part):
        raise WeightspaceValueError(f"`{what}` must be (axis, start, stop), got {part!r}")
    axis, start, stop = part
    if not (0 <= axis < len(shape) and 0 <= start < stop <= shape[axis]):
        raise ShapeMismatchError(
            f"`{what}`={part!r} does not fit a tensor of shape {shape}: it needs "
            "0 <= axis < ndim and 0 <= start < stop <= shape[axis]"
        )
    out = list(shape)
    out[axis] = stop - start
    return tuple(out)


def _narrow(part: Slice) -> tuple[int, int, int]:
    axis, start, stop = part
    return axis, start, stop - start


def _fmt_slice(shape: tuple[int, ...], part: Slice | None) -> str:
    if part is None:
        return ""
    axis, start, stop = part
    dims = [":"] * len(shape)
    dims[axis] = f"{start}:{stop}"
    return "[" + ", ".join(dims) + "]"


def check_pieces(name_b: str, views: Sequence[TensorView]) -> bool:
    """Check the views that fill one tensor of B; return whether they cover all of it.

    Args:
        name_b: B's tensor name, for messages.
        views: The views of every pair that writes into ``name_b``.

    Returns:
        ``True`` if the pieces cover the whole tensor, ``False`` if parts are left out.

    Raises:
        ShapeMismatchError: if the views disagree on B's shape, or pieces overlap.
    """
    shapes = {v.shape_b for v in views}
    if len(shapes) > 1:
        raise ShapeMismatchError(
            f"the views into {name_b!r} disagree on its shape: {sorted(shapes)}"
        )
    if len(views) == 1:
        return views[0].slice_b is None
    parts = [v.slice_b for v in views]
    if any(p is None for p in parts) or len({p[0] for p in parts if p is not None}) > 1:
        raise ShapeMismatchError(
            f"{len(views)} pieces are written into {name_b!r} but they are not disjoint slices "
            f"along one axis: {[str(v) for v in views]}"
        )
    spans = sorted((p[1], p[2]) for p in parts if p is not None)
    for (_, stop), (start, _) in itertools.pairwise(spans):
        if start < stop:
            raise ShapeMismatchError(
                f"pieces written into {name_b!r} overlap: {spans}; each element of `b` may "
                "come from one tensor of `a` only"
            )
    axis = next(p[0] for p in parts if p is not None)
    size = views[0].shape_b[axis]
    return spans[0][0] == 0 and spans[-1][1] == size and sum(b - a for a, b in spans) == size


def assemble(
    shape_b: Sequence[int], pieces: Sequence[tuple[TensorView, Tensor]], dtype: torch.dtype
) -> Tensor:
    """Build B's tensor from pieces of A's tensors; elements no piece covers are zero.

    Args:
        shape_b: B's tensor shape.
        pieces: ``(view, a_tensor)`` for every pair that writes into this tensor.
        dtype: The dtype of the result.

    Returns:
        A new contiguous tensor of shape ``shape_b``.
    """
    if len(pieces) == 1 and pieces[0][0].slice_b is None:
        view, a = pieces[0]
        return view.take(a).to(dtype).contiguous()
    device = pieces[0][1].device if pieces else None
    out = torch.zeros(tuple(shape_b), dtype=dtype, device=device)
    for view, a in pieces:
        view.put(out, view.take(a).to(dtype))
    return out


@dataclass(frozen=True)
class Placed:
    """A lazy value of a transferred vector: B's tensor assembled from A's deltas."""

    vector: Mapping[str, Tensor]
    shape_b: tuple[int, ...]
    pieces: tuple[tuple[str, TensorView], ...]
    dtype: torch.dtype

    def __call__(self) -> Tensor:
        return assemble(self.shape_b, [(v, self.vector[a]) for a, v in self.pieces], self.dtype)


@dataclass(frozen=True)
class PlacedSources:
    """The fine-tuned and base tensors behind a :class:`Placed` value (exact ``apply_to``).

    Only built when the pieces cover B's tensor and each comes from a vector built by
    :meth:`TaskVector.from_models <weightspace.TaskVector.from_models>`.
    """

    shape_b: tuple[int, ...]
    pieces: tuple[tuple[Source, TensorView], ...]
    dtype: torch.dtype

    def sources(self) -> tuple[Tensor, Tensor]:
        """Return B-shaped fine-tuned and base tensors, assembled from the sources of A."""
        pairs = [(src.sources(), view) for src, view in self.pieces]
        f_dtype, b_dtype = pairs[0][0][0].dtype, pairs[0][0][1].dtype
        f = assemble(self.shape_b, [(v, fb[0]) for fb, v in pairs], f_dtype)
        b = assemble(self.shape_b, [(v, fb[1]) for fb, v in pairs], b_dtype)
        return f, b

    def __call__(self) -> Tensor:
        f, b = self.sources()
        return f.to(self.dtype) - b.to(self.dtype)


def transfer_views(vector: _V, pairs: Sequence[tuple[str, str, TensorView | None]]) -> _V:
    """Transfer ``vector`` through pairs with views (for :meth:`TaskVector.transfer`).

    Args:
        vector: The task vector of A (read lazily).
        pairs: ``(name_a, name_b, view or None)`` for every pair.

    Returns:
        A new vector keyed by B's names, in the order of their first appearance; a pair
        without a view keeps its value (and exact-apply sources) as it is.

    Raises:
        ShapeMismatchError: if a view expects another shape than the vector's tensor, pieces
            into one tensor of B overlap, or a plain pair shares its target with another pair.
    """
    values, sources, known, dtype = vector._entries, vector._sources, vector._shapes, vector.dtype
    by_b: dict[str, list[tuple[str, TensorView | None]]] = {}
    for a, b, view in pairs:
        by_b.setdefault(b, []).append((a, view))
    entries: dict[str, Value] = {}
    shapes: dict[str, torch.Size] = {}
    new_sources: dict[str, Source] = {}
    for b, group in by_b.items():
        if len(group) == 1 and group[0][1] is None:
            a = group[0][0]
            entries[b] = values[a]
            if a in known:
                shapes[b] = known[a]
            if a in sources:
                new_sources[b] = sources[a]
            continue
        if any(view is None for _, view in group):
            raise ShapeMismatchError(
                f"{[a for a, _ in group]} are all transferred into {b!r}; several tensors of "
                "`a` can only fill one of `b` through views that slice it"
            )
        views = [(a, view) for a, view in group if view is not None]
        for a, view in views:
            if a in known and tuple(known[a]) != view.shape_a:
                raise ShapeMismatchError(
                    f"the view of {a!r} -> {b!r} ({view}) expects shape {view.shape_a} but the "
                    f"task vector's tensor has shape {tuple(known[a])}"
                )
        complete = check_pieces(b, [v for _, v in views])
        shape_b = views[0][1].shape_b
        entries[b] = Placed(vector, shape_b, tuple(views), dtype)
        shapes[b] = torch.Size(shape_b)
        if complete and all(a in sources for a, _ in views):
            new_sources[b] = PlacedSources(shape_b, tuple((sources[a], v) for a, v in views), dtype)
    return vector._make(entries, shapes, dtype, metadata=vector.metadata, sources=new_sources)
