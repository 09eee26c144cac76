"""The :class:`Selection` object: an immutable, injective map from names of model A to model B."""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping, Sequence
from types import MappingProxyType
from typing import Any, overload

import torch
from torch import Tensor

from weightspace._errors import ShapeMismatchError, WeightspaceValueError
from weightspace._task_vector import TaskVector
from weightspace._task_vector._views import TensorView, assemble, check_pieces
from weightspace.select._describe import describe

__all__ = ["Selection"]


class Selection:
    """An immutable selection of tensor names, mapping names of model A to names of model B.

    For a single model the map is the identity (``names_a == names_b``); for two different
    architectures (see :func:`weightspace.select.common`) it pairs each selected tensor of A
    with the tensor of B that plays the same role. A selection behaves as a set of pairs
    ``(name_a, name_b)``: ``|``, ``&`` and ``-`` are the set operations on those pairs (for
    identity selections, exactly the set operations on names), ``len`` counts the pairs,
    iteration and ``in`` use the names of A.

    A pair may carry a :class:`TensorView` when the two models store the weights differently
    (a slice of a fused tensor, a transposed layout): one tensor of A may then be split over
    several tensors of B, or several tensors of A fused into one of B, and
    :meth:`transfer` moves the pieces. Without views, a selection is one-to-one.
    ``str(selection)`` (:meth:`describe`) prints what was matched, block by block.

    Args:
        names: A mapping ``name_a -> name_b``, an iterable of pairs ``(name_a, name_b)``, or
            an iterable of names (identity selection).
        shapes: Optional shapes of the selected tensors, keyed by ``name_a``; used to check
            task vectors in :meth:`TaskVector.transfer <weightspace.TaskVector.transfer>`.
        views: Optional views, keyed by the pair ``(name_a, name_b)``.
        roles: Optional role names, keyed by the pair (shown by :meth:`describe`).
        blocks: Optional pairs of block (module) names of A and B that were matched, such as
            ``("encoder.layer.1", "encoder.layer.3")`` (shown by :meth:`describe`).
        origin: How the selection was made, for :meth:`describe`.

    Raises:
        WeightspaceValueError: if a name is not a string, two names of A map to the same name
            of B (or one name of A to two of B) without views that slice them, or ``views`` /
            ``roles`` name a pair that is not selected.
        ShapeMismatchError: if a view disagrees with a recorded shape, or the pieces written
            into one tensor of B overlap.

    Example:
        >>> from weightspace import select
        >>> s = select.Selection(["a.weight", "a.bias"]) | select.Selection(["b.weight"])
        >>> len(s), "a.bias" in s
        (3, True)
        >>> (s - select.Selection(["a.bias"])).names_a
        ('a.weight', 'b.weight')
    """

    __slots__ = ("_blocks", "_by_a", "_origin", "_pairs", "_roles", "_shapes", "_views")

    _pairs: tuple[tuple[str, str], ...]
    _views: tuple[TensorView | None, ...]
    _roles: tuple[str | None, ...]
    _blocks: tuple[tuple[str, str], ...]
    _origin: str
    _shapes: Mapping[str, torch.Size]
    _by_a: Mapping[str, tuple[str, ...]]

    def __init__(
        self,
        names: Mapping[str, str] | Iterable[str] | Iterable[tuple[str, str]],
        *,
        shapes: Mapping[str, Sequence[int]] | None = None,
        views: Mapping[tuple[str, str], TensorView] | None = None,
        roles: Mapping[tuple[str, str], str] | None = None,
        blocks: Iterable[tuple[str, str]] = (),
        origin: str = "",
    ) -> None:
        if isinstance(names, str):
            raise WeightspaceValueError(
                f"`names` must be a mapping or an iterable of names, got the string {names!r}; "
                f"wrap it in a list: [{names!r}]"
            )
        items: Iterable[object] = names.items() if isinstance(names, Mapping) else names
        views = dict(views or {})
        roles = dict(roles or {})
        pairs: dict[tuple[str, str], None] = {}
        by_a: dict[str, list[str]] = {}
        by_b: dict[str, list[str]] = {}
        for item in items:
            a, b = item if isinstance(item, tuple) and len(item) == 2 else (item, item)
            if not isinstance(a, str) or not isinstance(b, str):
                raise WeightspaceValueError(
                    f"names in a Selection must be strings, got {a!r} -> {b!r}"
                )
            if (a, b) in pairs:
                continue
            pairs[(a, b)] = None
            by_a.setdefault(a, []).append(b)
            by_b.setdefault(b, []).append(a)
        for what, extra in (("views", views), ("roles", roles)):
            unknown = [k for k in extra if k not in pairs]
            if unknown:
                raise WeightspaceValueError(
                    f"`{what}` names pairs that are not selected: {unknown[:4]}"
                )
        for a, targets in by_a.items():
            if len(targets) > 1 and not all(_slices(views.get((a, b)), "a") for b in targets):
                raise WeightspaceValueError(
                    f"{a!r} is mapped twice: to {targets[0]!r} and {targets[1]!r}; one tensor "
                    "of `a` may feed several of `b` only through views that slice it"
                )
        for b, sources in by_b.items():
            if len(sources) > 1:
                if not all(_slices(views.get((a, b)), "b") for a in sources):
                    raise WeightspaceValueError(
                        f"{sources[0]!r} and {sources[1]!r} are both mapped to {b!r}; a "
                        "selection must be one-to-one unless views slice the tensor of `b`"
                    )
                check_pieces(b, [views[(a, b)] for a in sources])
        known: dict[str, torch.Size] = {}
        for name, shape in (shapes or {}).items():
            if name in by_a:
                known[name] = torch.Size(shape)
        for (a, b), view in views.items():
            if a in known and tuple(known[a]) != view.shape_a:
                raise ShapeMismatchError(
                    f"the view of {a!r} -> {b!r} ({view}) expects shape {view.shape_a} but "
                    f"`shapes` records {tuple(known[a])}"
                )
            known.setdefault(a, torch.Size(view.shape_a))
        order = tuple(pairs)
        object.__setattr__(self, "_pairs", order)
        object.__setattr__(self, "_views", tuple(views.get(p) for p in order))
        object.__setattr__(self, "_roles", tuple(roles.get(p) for p in order))
        object.__setattr__(self, "_blocks", tuple((str(x), str(y)) for x, y in blocks))
        object.__setattr__(self, "_origin", str(origin))
        object.__setattr__(self, "_shapes", MappingProxyType(known))
        object.__setattr__(self, "_by_a", MappingProxyType({a: tuple(t) for a, t in by_a.items()}))

    def __setattr__(self, name: str, value: object) -> None:
        raise AttributeError(f"Selection is immutable; cannot set {name!r}")

    def __delattr__(self, name: str) -> None:
        raise AttributeError(f"Selection is immutable; cannot delete {name!r}")

    def __reduce__(self) -> Any:
        return (
            _rebuild,
            (
                list(self._pairs),
                {k: tuple(v) for k, v in self._shapes.items()},
                self._view_map(),
                self._role_map(),
                list(self._blocks),
                self._origin,
            ),
        )

    def _view_map(self) -> dict[tuple[str, str], TensorView]:
        return {p: v for p, v in zip(self._pairs, self._views, strict=True) if v is not None}

    def _role_map(self) -> dict[tuple[str, str], str]:
        return {p: r for p, r in zip(self._pairs, self._roles, strict=True) if r is not None}

    def _triples(self) -> list[tuple[str, str, TensorView | None]]:
        return [(a, b, v) for (a, b), v in zip(self._pairs, self._views, strict=True)]

    # ---------------------------------------------------------------- views

    @property
    def names_a(self) -> tuple[str, ...]:
        """The names in model A, one per pair, in order (repeated where views split a tensor)."""
        return tuple(a for a, _ in self._pairs)

    @property
    def names_b(self) -> tuple[str, ...]:
        """The corresponding names in model B, paired with :attr:`names_a`."""
        return tuple(b for _, b in self._pairs)

    @property
    def pairs(self) -> tuple[tuple[str, str], ...]:
        """The pairs ``(name_a, name_b)``, in order."""
        return self._pairs

    @property
    def views(self) -> tuple[TensorView | None, ...]:
        """One :class:`TensorView` (or ``None`` for a plain rename) per pair."""
        return self._views

    @property
    def roles(self) -> tuple[str | None, ...]:
        """One role name (or ``None``) per pair, as :func:`common` with ``by="role"`` sets."""
        return self._roles

    @property
    def blocks(self) -> tuple[tuple[str, str], ...]:
        """The matched blocks: pairs of module names of A and B (empty if none were)."""
        return self._blocks

    @property
    def mapping(self) -> Mapping[str, str]:
        """Read-only mapping ``name_a -> name_b``.

        Raises:
            WeightspaceValueError: if views split a tensor of A over several of B (use
                :attr:`pairs`).
        """
        split = [a for a, targets in self._by_a.items() if len(targets) > 1]
        if split:
            raise WeightspaceValueError(
                f"the selection splits {split[:3]} over several tensors of `b`, so it is not a "
                "mapping of names; use `selection.pairs` (and `selection.views`)"
            )
        return MappingProxyType({a: targets[0] for a, targets in self._by_a.items()})

    @property
    def is_identity(self) -> bool:
        """Whether every name maps to itself (a selection within one model)."""
        return all(a == b for a, b in self._pairs) and not any(self._views)

    def shape(self, name_a: str) -> torch.Size | None:
        """Return the recorded shape of ``name_a``, or ``None`` if none was recorded.

        Args:
            name_a: A selected name of model A.

        Returns:
            The shape, or ``None``.

        Raises:
            KeyError: if ``name_a`` is not selected.

        Example:
            >>> from weightspace import select
            >>> select.Selection(["w"], shapes={"w": (2, 3)}).shape("w")
            torch.Size([2, 3])
        """
        if name_a not in self:
            raise KeyError(name_a)
        return self._shapes.get(name_a)

    def inverse(self) -> Selection:
        """Return the selection from B's names to A's names.

        Views are inverted (a split becomes a fuse), roles kept and blocks swapped.

        Returns:
            The inverse selection (shapes are carried over).

        Example:
            >>> from weightspace import select
            >>> select.Selection({"a.w": "b.w"}).inverse().mapping["b.w"]
            'a.w'
        """
        shapes: dict[str, torch.Size] = {}
        for (a, b), view in zip(self._pairs, self._views, strict=True):
            if view is not None:
                shapes[b] = torch.Size(view.shape_b)
            elif a in self._shapes:
                shapes[b] = self._shapes[a]
        return Selection(
            [(b, a) for a, b in self._pairs],
            shapes=shapes,
            views={(b, a): v.inverse() for (a, b), v in self._view_map().items()},
            roles={(b, a): r for (a, b), r in self._role_map().items()},
            blocks=[(y, x) for x, y in self._blocks],
            origin=f"inverse of {self._origin}" if self._origin else "",
        )

    def subset(self, names_a: Iterable[str]) -> Selection:
        """Return the pairs whose name of A is in ``names_a`` (in this selection's order).

        Unlike ``&``, which compares whole pairs, this filters by A's names alone, so it
        restricts a cross-architecture selection to the keys of a task vector of model A.

        Args:
            names_a: Names of model A to keep (any iterable of strings: a list, a task vector).

        Returns:
            A new selection (shapes, views and roles are carried over).

        Example:
            >>> from weightspace import select
            >>> s = select.Selection({"cnn.w": "vit.w", "cnn.b": "vit.b"})
            >>> s.subset(["cnn.b", "other"]).mapping["cnn.b"]
            'vit.b'
        """
        keep = set(names_a)
        return self._with([t for t in self._triples() if t[0] in keep])

    def _with(
        self, triples: Sequence[tuple[str, str, TensorView | None]], other: Selection | None = None
    ) -> Selection:
        roles = {} if other is None else other._role_map()
        roles.update(self._role_map())
        shapes = {} if other is None else dict(other._shapes)
        shapes.update(self._shapes)
        blocks = list(self._blocks)
        if other is not None:
            blocks += [b for b in other._blocks if b not in blocks]
        wanted = {(a, b) for a, b, _ in triples}
        names_a = {a for a, _, _ in triples}
        return Selection(
            [(a, b) for a, b, _ in triples],
            shapes={a: s for a, s in shapes.items() if a in names_a},
            views={(a, b): v for a, b, v in triples if v is not None},
            roles={p: r for p, r in roles.items() if p in wanted},
            blocks=blocks,
            origin=self._origin,
        )

    def __iter__(self) -> Iterator[str]:
        return iter(self._by_a)

    def __len__(self) -> int:
        return len(self._pairs)

    def __contains__(self, name: object) -> bool:
        return name in self._by_a

    def __bool__(self) -> bool:
        return bool(self._pairs)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Selection):
            return NotImplemented
        return frozenset(self._triples()) == frozenset(other._triples())

    def __hash__(self) -> int:
        return hash(frozenset(self._triples()))

    def __repr__(self) -> str:
        shown = self._triples()[:3]
        if self.is_identity:
            body = ", ".join(repr(a) for a, _, _ in shown)
        else:
            body = ", ".join(
                f"{a!r} -> {b!r}" + (f" [{v}]" if v is not None else "") for a, b, v in shown
            )
        more = f", ... ({len(self)} in all)" if len(self) > 3 else ""
        return f"Selection([{body}{more}])"

    def __str__(self) -> str:
        return self.describe()

    def describe(self) -> str:
        """Return a table of what the selection matches: blocks, then pairs with roles and views.

        Returns:
            Lines of text: a header, the block-to-block table (when blocks were matched), and
            the pairs (relative to their blocks, once per distinct row), with their roles and
            views.

        Example:
            >>> from weightspace import select
            >>> print(select.Selection({"enc.0.w": "dec.3.w"}, blocks=[("enc.0", "dec.3")]))
            Selection: 1 pair of `a` onto `b`
              block of a  block of b  pairs
              enc.0       dec.3           1
            pairs within blocks (names relative to the block):
              a  b
              w  w
        """
        return describe(self)

    # ---------------------------------------------------------------- set algebra on pairs

    def __or__(self, other: object) -> Selection:
        if not isinstance(other, Selection):
            return NotImplemented
        triples = list(dict.fromkeys(self._triples() + other._triples()))
        try:
            # the constructor rejects a name of A mapped to two names of B, and vice versa
            return self._with(triples, other)
        except WeightspaceValueError as exc:
            raise WeightspaceValueError(
                f"cannot take the union of two selections that disagree: {exc}"
            ) from None

    def __and__(self, other: object) -> Selection:
        if not isinstance(other, Selection):
            return NotImplemented
        theirs = set(other._triples())
        return self._with([t for t in self._triples() if t in theirs], other)

    def __sub__(self, other: object) -> Selection:
        if not isinstance(other, Selection):
            return NotImplemented
        theirs = set(other._triples())
        return self._with([t for t in self._triples() if t not in theirs])

    # ---------------------------------------------------------------- application

    @overload
    def restrict(self, x: TaskVector) -> TaskVector: ...  # type: ignore[overload-overlap]

    @overload
    def restrict(self, x: Mapping[str, Tensor]) -> dict[str, Tensor]: ...

    def restrict(self, x: TaskVector | Mapping[str, Tensor]) -> TaskVector | dict[str, Tensor]:
        """Keep the selected names (of model A) of a task vector or state dict.

        Args:
            x: A :class:`~weightspace.TaskVector` or a mapping ``name -> tensor`` of model A.

        Returns:
            A task vector (see :meth:`TaskVector.restrict <weightspace.TaskVector.restrict>`)
            or a new ``dict`` holding the selected entries (values are not copied).

        Raises:
            ShapeMismatchError: if selected names are missing from ``x``.

        Example:
            >>> import torch
            >>> from weightspace import select
            >>> sd = {"a": torch.ones(1), "b": torch.zeros(1)}
            >>> list(select.Selection(["b"]).restrict(sd))
            ['b']
        """
        if isinstance(x, TaskVector):
            return x.restrict(self)
        names = list(self)
        self._check_has(x, names, "x")
        return {a: x[a] for a in names}

    @overload
    def transfer(self, x: TaskVector) -> TaskVector: ...  # type: ignore[overload-overlap]

    @overload
    def transfer(self, x: Mapping[str, Tensor]) -> dict[str, Tensor]: ...

    def transfer(self, x: TaskVector | Mapping[str, Tensor]) -> TaskVector | dict[str, Tensor]:
        """Keep the selected names of ``x`` (model A) and rename them to model B's names.

        Args:
            x: A :class:`~weightspace.TaskVector` or a mapping ``name -> tensor`` of model A.

        Returns:
            A task vector or a new ``dict`` keyed by :attr:`names_b` (each name once; a plain
            pair keeps the tensor itself, a viewed pair gets a new tensor assembled from the
            pieces, with zeros where no piece lands).

        Raises:
            ShapeMismatchError: if selected names are missing from ``x``, or shapes differ from
                the recorded ones.

        Example:
            >>> import torch
            >>> from weightspace import select
            >>> sel = select.Selection({"cnn.head.weight": "vit.head.weight"})
            >>> list(sel.transfer({"cnn.head.weight": torch.ones(2)}))
            ['vit.head.weight']
        """
        if isinstance(x, TaskVector):
            return x.transfer(self)
        self._check_has(x, list(self), "x")
        for a in self:
            recorded = self._shapes.get(a)
            if recorded is not None and x[a].shape != recorded:
                raise ShapeMismatchError(
                    f"`x[{a!r}]` has shape {tuple(x[a].shape)} but the selection records "
                    f"{tuple(recorded)}"
                )
        groups: dict[str, list[tuple[str, TensorView | None]]] = {}
        for a, b, view in self._triples():
            groups.setdefault(b, []).append((a, view))
        out: dict[str, Tensor] = {}
        for b, group in groups.items():
            a, view = group[0]
            if view is None:
                out[b] = x[a]
            else:
                pieces = [(v, x[n]) for n, v in group if v is not None]
                out[b] = assemble(view.shape_b, pieces, x[a].dtype)
        return out

    @staticmethod
    def _check_has(x: Mapping[str, Tensor], names: Sequence[str], argument: str) -> None:
        missing = [n for n in names if n not in x]
        if missing:
            shown = missing[:8]
            raise ShapeMismatchError(
                f"{len(missing)} selected names are missing from `{argument}`: {shown}"
            )


def _slices(view: TensorView | None, side: str) -> bool:
    if view is None:
        return False
    return (view.slice_a if side == "a" else view.slice_b) is not None


def _rebuild(
    pairs: list[tuple[str, str]],
    shapes: dict[str, tuple[int, ...]],
    views: dict[tuple[str, str], TensorView],
    roles: dict[tuple[str, str], str],
    blocks: list[tuple[str, str]],
    origin: str,
) -> Selection:
    return Selection(pairs, shapes=shapes, views=views, roles=roles, blocks=blocks, origin=origin)
