"""The :class:`Selection` object: an immutable, injective map from names of model A to model B."""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping, Sequence
from types import MappingProxyType
from typing import Any, overload

import torch
from torch import Tensor

from weightspace._errors import ShapeMismatchError, WeightspaceValueError
from weightspace._task_vector import TaskVector

__all__ = ["Selection"]


class Selection:
    """An immutable selection of tensor names, mapping names of model A to names of model B.

    For a single model the map is the identity (``names_a == names_b``); for two different
    architectures (see :func:`weightspace.select.common`) it pairs each selected tensor of A
    with the tensor of B that plays the same role. A selection behaves as a set of pairs
    ``(name_a, name_b)``: ``|``, ``&`` and ``-`` are the set operations on those pairs (for
    identity selections, exactly the set operations on names), ``len`` counts the pairs,
    iteration and ``in`` use the names of A.

    Args:
        names: A mapping ``name_a -> name_b``, or an iterable of names (identity selection).
        shapes: Optional shapes of the selected tensors, keyed by ``name_a``; used to check
            task vectors in :meth:`TaskVector.transfer <weightspace.TaskVector.transfer>`.

    Raises:
        WeightspaceValueError: if a name is not a string, or two names of A map to the same
            name of B.

    Example:
        >>> from weightspace import select
        >>> s = select.Selection(["a.weight", "a.bias"]) | select.Selection(["b.weight"])
        >>> len(s), "a.bias" in s
        (3, True)
        >>> (s - select.Selection(["a.bias"])).names_a
        ('a.weight', 'b.weight')
    """

    __slots__ = ("_b_to_a", "_map", "_shapes")

    _map: Mapping[str, str]
    _b_to_a: Mapping[str, str]
    _shapes: Mapping[str, torch.Size]

    def __init__(
        self,
        names: Mapping[str, str] | Iterable[str],
        *,
        shapes: Mapping[str, Sequence[int]] | None = None,
    ) -> None:
        if isinstance(names, str):
            raise WeightspaceValueError(
                f"`names` must be a mapping or an iterable of names, got the string {names!r}; "
                f"wrap it in a list: [{names!r}]"
            )
        pairs: Iterable[tuple[object, object]] = (
            names.items() if isinstance(names, Mapping) else ((n, n) for n in names)
        )
        mapping: dict[str, str] = {}
        inverse: dict[str, str] = {}
        for a, b in pairs:
            if not isinstance(a, str) or not isinstance(b, str):
                raise WeightspaceValueError(
                    f"names in a Selection must be strings, got {a!r} -> {b!r}"
                )
            if a in mapping:
                if mapping[a] == b:
                    continue
                raise WeightspaceValueError(f"{a!r} is mapped twice: to {mapping[a]!r} and {b!r}")
            if b in inverse:
                raise WeightspaceValueError(
                    f"{inverse[b]!r} and {a!r} are both mapped to {b!r}; a selection must be "
                    "one-to-one"
                )
            mapping[a] = b
            inverse[b] = a
        known: dict[str, torch.Size] = {}
        for name, shape in (shapes or {}).items():
            if name in mapping:
                known[name] = torch.Size(shape)
        object.__setattr__(self, "_map", MappingProxyType(mapping))
        object.__setattr__(self, "_b_to_a", MappingProxyType(inverse))
        object.__setattr__(self, "_shapes", MappingProxyType(known))

    def __setattr__(self, name: str, value: object) -> None:
        raise AttributeError(f"Selection is immutable; cannot set {name!r}")

    def __delattr__(self, name: str) -> None:
        raise AttributeError(f"Selection is immutable; cannot delete {name!r}")

    def __reduce__(self) -> Any:
        return (_rebuild, (dict(self._map), {k: tuple(v) for k, v in self._shapes.items()}))

    # ---------------------------------------------------------------- views

    @property
    def names_a(self) -> tuple[str, ...]:
        """The selected names in model A, in order."""
        return tuple(self._map)

    @property
    def names_b(self) -> tuple[str, ...]:
        """The corresponding names in model B, in the same order."""
        return tuple(self._map.values())

    @property
    def mapping(self) -> Mapping[str, str]:
        """Read-only mapping ``name_a -> name_b``."""
        return self._map

    @property
    def is_identity(self) -> bool:
        """Whether every name maps to itself (a selection within one model)."""
        return all(a == b for a, b in self._map.items())

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
        if name_a not in self._map:
            raise KeyError(name_a)
        return self._shapes.get(name_a)

    def inverse(self) -> Selection:
        """Return the selection from B's names to A's names.

        Returns:
            The inverse selection (shapes are carried over).

        Example:
            >>> from weightspace import select
            >>> select.Selection({"a.w": "b.w"}).inverse().mapping["b.w"]
            'a.w'
        """
        shapes = {self._map[a]: s for a, s in self._shapes.items()}
        return Selection(dict(self._b_to_a), shapes=shapes)

    def subset(self, names_a: Iterable[str]) -> Selection:
        """Return the pairs whose name of A is in ``names_a`` (in this selection's order).

        Unlike ``&``, which compares whole pairs, this filters by A's names alone, so it
        restricts a cross-architecture selection to the keys of a task vector of model A.

        Args:
            names_a: Names of model A to keep (any iterable of strings: a list, a task vector).

        Returns:
            A new selection (shapes are carried over).

        Example:
            >>> from weightspace import select
            >>> s = select.Selection({"cnn.w": "vit.w", "cnn.b": "vit.b"})
            >>> s.subset(["cnn.b", "other"]).mapping["cnn.b"]
            'vit.b'
        """
        keep = set(names_a)
        pairs = {a: b for a, b in self._map.items() if a in keep}
        return Selection(pairs, shapes={a: s for a, s in self._shapes.items() if a in keep})

    def __iter__(self) -> Iterator[str]:
        return iter(self._map)

    def __len__(self) -> int:
        return len(self._map)

    def __contains__(self, name: object) -> bool:
        return name in self._map

    def __bool__(self) -> bool:
        return bool(self._map)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Selection):
            return NotImplemented
        return dict(self._map) == dict(other._map)

    def __hash__(self) -> int:
        return hash(frozenset(self._map.items()))

    def __repr__(self) -> str:
        shown = list(self._map.items())[:3]
        if self.is_identity:
            body = ", ".join(repr(a) for a, _ in shown)
        else:
            body = ", ".join(f"{a!r} -> {b!r}" for a, b in shown)
        more = f", ... ({len(self)} in all)" if len(self) > 3 else ""
        return f"Selection([{body}{more}])"

    # ---------------------------------------------------------------- set algebra on pairs

    def _shapes_with(self, other: Selection) -> dict[str, torch.Size]:
        shapes = dict(other._shapes)
        shapes.update(self._shapes)
        return shapes

    def __or__(self, other: object) -> Selection:
        if not isinstance(other, Selection):
            return NotImplemented
        pairs = _Pairs(list(self._map.items()) + list(other._map.items()))
        try:
            # the constructor rejects a name of A mapped to two names of B, and vice versa
            return Selection(pairs, shapes=self._shapes_with(other))
        except WeightspaceValueError as exc:
            raise WeightspaceValueError(
                f"cannot take the union of two selections that disagree: {exc}"
            ) from None

    def __and__(self, other: object) -> Selection:
        if not isinstance(other, Selection):
            return NotImplemented
        pairs = {a: b for a, b in self._map.items() if other._map.get(a) == b}
        return Selection(pairs, shapes=self._shapes_with(other))

    def __sub__(self, other: object) -> Selection:
        if not isinstance(other, Selection):
            return NotImplemented
        pairs = {a: b for a, b in self._map.items() if other._map.get(a) != b}
        return Selection(pairs, shapes=self._shapes)

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
        self._check_has(x, self.names_a, "x")
        return {a: x[a] for a in self._map}

    @overload
    def transfer(self, x: TaskVector) -> TaskVector: ...  # type: ignore[overload-overlap]

    @overload
    def transfer(self, x: Mapping[str, Tensor]) -> dict[str, Tensor]: ...

    def transfer(self, x: TaskVector | Mapping[str, Tensor]) -> TaskVector | dict[str, Tensor]:
        """Keep the selected names of ``x`` (model A) and rename them to model B's names.

        Args:
            x: A :class:`~weightspace.TaskVector` or a mapping ``name -> tensor`` of model A.

        Returns:
            A task vector or a new ``dict`` keyed by :attr:`names_b`.

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
        self._check_has(x, self.names_a, "x")
        out: dict[str, Tensor] = {}
        for a, b in self._map.items():
            recorded = self._shapes.get(a)
            value = x[a]
            if recorded is not None and value.shape != recorded:
                raise ShapeMismatchError(
                    f"`x[{a!r}]` has shape {tuple(value.shape)} but the selection records "
                    f"{tuple(recorded)}"
                )
            out[b] = value
        return out

    @staticmethod
    def _check_has(x: Mapping[str, Tensor], names: Sequence[str], argument: str) -> None:
        missing = [n for n in names if n not in x]
        if missing:
            shown = missing[:8]
            raise ShapeMismatchError(
                f"{len(missing)} selected names are missing from `{argument}`: {shown}"
            )


class _Pairs(Mapping[str, str]):
    """An ordered list of pairs seen as a mapping, so that duplicates reach the validation."""

    def __init__(self, pairs: list[tuple[str, str]]) -> None:
        self._pairs = pairs

    def items(self) -> Any:
        return iter(self._pairs)

    def __getitem__(self, key: str) -> str:
        for a, b in self._pairs:
            if a == key:
                return b
        raise KeyError(key)

    def __iter__(self) -> Iterator[str]:
        return (a for a, _ in self._pairs)

    def __len__(self) -> int:
        return len(self._pairs)


def _rebuild(mapping: dict[str, str], shapes: dict[str, tuple[int, ...]]) -> Selection:
    return Selection(mapping, shapes=shapes)
