"""The storage of a task vector: immutable entries, shapes, dtype, metadata and sources.

:class:`VectorBase` holds what every task vector has and the read-only mapping protocol;
the operations live in the mixins :class:`~weightspace._task_vector._reduce.Reductions`
(inner products, norms, statistics) and :class:`~weightspace._task_vector._apply.Application`
(adding a vector to a model), and in :class:`~weightspace.TaskVector` itself.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from types import MappingProxyType
from typing import Any, Literal, Self

import torch
from torch import Tensor

from weightspace._errors import ShapeMismatchError, WeightspaceValueError
from weightspace._task_vector._values import Source, Value, _fmt_names

KeysMode = Literal["strict", "intersection", "union"]
"""How binary operations treat names that not every vector holds."""


class VectorBase(Mapping[str, Tensor]):
    """What every task vector holds, and the read-only mapping protocol over it.

    Not instantiated directly: :class:`~weightspace.TaskVector` is the one concrete subclass.
    """

    __slots__ = ("_dtype", "_entries", "_extras", "_metadata", "_shapes", "_sources")

    _entries: Mapping[str, Value]
    _shapes: Mapping[str, torch.Size]
    _dtype: torch.dtype
    _metadata: Mapping[str, str]
    _sources: Mapping[str, Source]
    _extras: Mapping[str, Callable[[], Tensor]]

    def _init(
        self,
        entries: Mapping[str, Value],
        shapes: Mapping[str, torch.Size],
        dtype: torch.dtype,
        metadata: Mapping[str, str],
        sources: Mapping[str, Source],
        extras: Mapping[str, Callable[[], Tensor]],
    ) -> None:
        object.__setattr__(self, "_entries", MappingProxyType(dict(entries)))
        object.__setattr__(self, "_shapes", MappingProxyType(dict(shapes)))
        object.__setattr__(self, "_dtype", dtype)
        object.__setattr__(self, "_metadata", MappingProxyType(dict(metadata)))
        object.__setattr__(self, "_sources", MappingProxyType(dict(sources)))
        object.__setattr__(self, "_extras", MappingProxyType(dict(extras)))

    @classmethod
    def _make(
        cls,
        entries: Mapping[str, Value],
        shapes: Mapping[str, torch.Size],
        dtype: torch.dtype,
        *,
        metadata: Mapping[str, str] | None = None,
        sources: Mapping[str, Source] | None = None,
        extras: Mapping[str, Callable[[], Tensor]] | None = None,
    ) -> Self:
        obj = cls.__new__(cls)
        obj._init(entries, shapes, dtype, metadata or {}, sources or {}, extras or {})
        return obj

    def __setattr__(self, name: str, value: object) -> None:
        raise AttributeError(f"TaskVector is immutable; cannot set {name!r}")

    def __delattr__(self, name: str) -> None:
        raise AttributeError(f"TaskVector is immutable; cannot delete {name!r}")

    def __copy__(self) -> Self:
        return self

    def __deepcopy__(self, memo: dict[int, Any]) -> Self:
        return self

    def __reduce__(self) -> Any:
        raise TypeError(
            "TaskVector cannot be pickled (it may hold lazy readers); use "
            "`dict(tv.materialize())` or write it with weightspace.io"
        )

    # ---------------------------------------------------------------- mapping protocol

    def __getitem__(self, name: str) -> Tensor:
        """Return the delta for ``name``, computing it if it is lazy (not cached)."""
        value = self._entries[name]
        tensor = value if isinstance(value, Tensor) else value()
        if tensor.dtype != self._dtype:
            tensor = tensor.to(self._dtype)
        expected = self._shapes.get(name)
        if expected is not None and tensor.shape != expected:
            raise ShapeMismatchError(
                f"the value of {name!r} has shape {tuple(tensor.shape)} but {tuple(expected)} was "
                "expected; functions given to `map` / `zip_map` must preserve shapes"
            )
        return tensor

    def __iter__(self) -> Iterator[str]:
        return iter(self._entries)

    def __len__(self) -> int:
        return len(self._entries)

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def __eq__(self, other: object) -> bool:
        """Identity comparison; use :meth:`equal` or :meth:`allclose` to compare values."""
        return self is other

    def __hash__(self) -> int:
        return id(self)

    # ---------------------------------------------------------------- properties

    @property
    def dtype(self) -> torch.dtype:
        """The dtype of the values and of the arithmetic."""
        return self._dtype

    @property
    def metadata(self) -> Mapping[str, str]:
        """Read-only string metadata (provenance) attached to the vector."""
        return self._metadata

    def with_metadata(self, metadata: Mapping[str, str]) -> Self:
        """Return the same vector with ``metadata`` merged into its metadata.

        Args:
            metadata: String keys and values to add (existing keys are overwritten).

        Returns:
            A new task vector sharing the values of this one.

        Example:
            >>> import torch
            >>> from weightspace import TaskVector
            >>> TaskVector({"w": torch.ones(1)}).with_metadata({"task": "mnist"}).metadata["task"]
            'mnist'
        """
        meta = dict(self._metadata)
        meta.update({str(k): str(v) for k, v in metadata.items()})
        return self._make(
            self._entries,
            self._shapes,
            self._dtype,
            metadata=meta,
            sources=self._sources,
            extras=self._extras,
        )

    def shape(self, name: str) -> torch.Size:
        """Return the shape of the delta for ``name``.

        Shapes are known without computing anything for vectors built from tensors, from
        models and by the operations of this class; for a lazy value whose shape was not
        declared, the value is computed once to find it.

        Args:
            name: A key of the vector.

        Returns:
            The shape.

        Raises:
            KeyError: if ``name`` is not a key of the vector.

        Example:
            >>> import torch
            >>> from weightspace import TaskVector
            >>> TaskVector({"w": torch.ones(2, 3)}).shape("w")
            torch.Size([2, 3])
        """
        if name not in self._entries:
            raise KeyError(name)
        known = self._shapes.get(name)
        return known if known is not None else self[name].shape

    def numel(self) -> int:
        """Return the total number of entries over all tensors.

        Returns:
            The number of scalar parameters the vector holds.

        Example:
            >>> import torch
            >>> from weightspace import TaskVector
            >>> TaskVector({"w": torch.ones(2, 3), "b": torch.ones(2)}).numel()
            8
        """
        return sum(self.shape(name).numel() for name in self)

    def _subset(self, names: Sequence[str], rename: Sequence[str] | None = None) -> Self:
        new_names = list(rename) if rename is not None else list(names)
        entries = {new: self._entries[old] for old, new in zip(names, new_names, strict=True)}
        shapes = {
            new: self._shapes[old]
            for old, new in zip(names, new_names, strict=True)
            if old in self._shapes
        }
        sources = {
            new: self._sources[old]
            for old, new in zip(names, new_names, strict=True)
            if old in self._sources
        }
        extras = dict(self._extras) if rename is None else {}
        return self._make(
            entries, shapes, self._dtype, metadata=self._metadata, sources=sources, extras=extras
        )


def _require_vector(other: object, argument: str) -> None:
    if not isinstance(other, VectorBase):
        raise WeightspaceValueError(
            f"`{argument}` must be a TaskVector, got {type(other).__name__}"
        )


def _aligned_names(vectors: Sequence[VectorBase], keys: KeysMode, *, what: str) -> list[str]:
    """Names over which to combine ``vectors`` under a key policy; checks known shapes."""
    if keys not in ("strict", "intersection", "union"):
        raise WeightspaceValueError(
            f"`keys` must be 'strict', 'intersection' or 'union', got {keys!r}"
        )
    first = vectors[0]
    if keys == "strict":
        first_set = set(first)
        for i, v in enumerate(vectors[1:], start=1):
            v_set = set(v)
            if v_set != first_set:
                only_first = [n for n in first if n not in v_set]
                only_other = [n for n in v if n not in first_set]
                label = "`other`" if len(vectors) == 2 else f"`{what}[{i}]`"
                self_label = "this vector" if len(vectors) == 2 else f"`{what}[0]`"
                parts = []
                if only_first:
                    parts.append(
                        f"{len(only_first)} keys of {self_label} are missing from {label}: "
                        f"{_fmt_names(only_first)}"
                    )
                if only_other:
                    parts.append(
                        f"{len(only_other)} keys of {label} are missing from {self_label}: "
                        f"{_fmt_names(only_other)}"
                    )
                raise ShapeMismatchError(
                    "; ".join(parts) + "; align the key sets with `a.union(b)` / "
                    '`a.intersection(b)`, or pass `keys="union"` or `keys="intersection"` '
                    '(e.g. `a.add(b, keys="union")`)'
                )
        names = list(first)
    elif keys == "intersection":
        common = set(first).intersection(*(set(v) for v in vectors[1:]))
        names = [n for n in first if n in common]
    else:
        seen: dict[str, None] = {}
        for v in vectors:
            for n in v:
                seen.setdefault(n, None)
        names = list(seen)
    for name in names:
        shapes = {tuple(v._shapes[name]) for v in vectors if name in v and name in v._shapes}
        if len(shapes) > 1:
            raise ShapeMismatchError(
                f"the {what} disagree on the shape of {name!r}: {sorted(shapes)}"
            )
    return names
