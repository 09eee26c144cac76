"""Which axes of which state-dict tensors a hidden-unit permutation moves."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

import torch
from torch import Tensor

from weightspace._errors import ShapeMismatchError, WeightspaceValueError

__all__ = ["Axis", "AxisRef", "PermutationSpec"]


@dataclass(frozen=True)
class Axis:
    """One tensor axis moved by a permutation group.

    The axis holds ``size * repeat`` entries for a group of ``size`` units: unit ``u`` owns the
    ``repeat`` consecutive entries ``u * repeat ... u * repeat + repeat - 1``. ``repeat`` is 1
    except where a channel axis was flattened together with the spatial axes behind it: the
    first linear layer after ``flatten`` of a ``[N, C, H, W]`` feature map has an input axis of
    ``C * H * W`` entries, moved in blocks of ``repeat = H * W``.

    Args:
        group: Name of the permutation group.
        repeat: Consecutive entries per unit (positive).

    Example:
        >>> Axis("conv2", repeat=49)
        Axis(group='conv2', repeat=49)
    """

    group: str
    repeat: int = 1

    def __post_init__(self) -> None:
        if not isinstance(self.group, str) or not self.group:
            raise WeightspaceValueError(
                f"`group` must be a non-empty string, got {self.group!r}; name the group"
            )
        if isinstance(self.repeat, bool) or not isinstance(self.repeat, int) or self.repeat < 1:
            raise WeightspaceValueError(
                f"`repeat` must be a positive integer, got {self.repeat!r}; use 1 for an axis "
                "with one entry per unit"
            )


@dataclass(frozen=True)
class AxisRef:
    """A reference to one permuted axis of one tensor: ``state_dict[key]``, axis ``axis``.

    Example:
        >>> AxisRef("fc1.weight", 0, 1)
        AxisRef(key='fc1.weight', axis=0, repeat=1)
    """

    key: str
    axis: int
    repeat: int = 1


def _as_axis(value: object, key: str, dim: int) -> Axis | None:
    if value is None or isinstance(value, Axis):
        return value
    if isinstance(value, str):
        return Axis(value)
    if isinstance(value, tuple) and len(value) == 2 and isinstance(value[0], str):
        return Axis(value[0], value[1])
    raise WeightspaceValueError(
        f"`axes[{key!r}][{dim}]` must be a group name, an `Axis` or None, got {value!r}; "
        "write e.g. ('hidden', None) for a weight whose rows the group 'hidden' permutes"
    )


def _as_producer(value: object, group: str) -> tuple[str, int]:
    if isinstance(value, str):
        return (value, -1)
    if (
        isinstance(value, Sequence)
        and len(value) == 2
        and isinstance(value[0], str)
        and isinstance(value[1], int)
    ):
        return (value[0], int(value[1]))
    raise WeightspaceValueError(
        f"`producers[{group!r}]` must hold module names or (module name, feature dim) pairs, "
        f"got {value!r}; write e.g. [('conv1', 1)] for a convolution's channel axis"
    )


@dataclass(frozen=True, eq=False)
class PermutationSpec:
    """Which axes of which state-dict tensors each permutation group moves.

    Hidden units of a network can be reordered without changing the function it computes, as
    long as every tensor that reads or writes those units is reordered the same way. A *group*
    is one such set of units (a hidden layer, a channel axis, a residual stream); the spec lists,
    for every tensor that a group touches, which of its axes the group moves. Tensors not listed
    are never changed.

    Build one from a model with :func:`permutation_spec`, or by hand for models that do not
    trace. A hand-written spec gives, for each tensor, one entry per axis: a group name, an
    :class:`Axis` (group and block size), or ``None`` for an axis that is not permuted.

    Args:
        axes: Tensor name -> one entry per axis of that tensor.
        sizes: Group -> number of units, where known (optional; checked against state dicts).
        producers: Group -> modules whose output carries the group, as ``(module name, feature
            dim)`` pairs (a bare name means dim ``-1``). Only :func:`activation_matching` needs
            them; :func:`permutation_spec` fills them in.

    Raises:
        WeightspaceValueError: if an entry is not a group name, :class:`Axis` or ``None``.

    Example:
        >>> spec = PermutationSpec({
        ...     "0.weight": ("h", None), "0.bias": ("h",), "2.weight": (None, "h"),
        ... }, producers={"h": ["0"]})
        >>> spec
        PermutationSpec(groups={'h': ?}, tensors=3)
        >>> spec.groups
        ('h',)
        >>> [(r.key, r.axis) for r in spec.group_axes["h"]]
        [('0.weight', 0), ('0.bias', 0), ('2.weight', 1)]
    """

    axes: Mapping[str, tuple[Axis | None, ...]]
    sizes: Mapping[str, int] = field(default_factory=dict)
    producers: Mapping[str, tuple[tuple[str, int], ...]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not isinstance(self.axes, Mapping):
            raise WeightspaceValueError(
                f"`axes` must be a mapping from tensor names to per-axis entries, got "
                f"{type(self.axes).__name__}; write e.g. {{'fc1.weight': ('h', None)}}"
            )
        axes: dict[str, tuple[Axis | None, ...]] = {}
        for key, entries in self.axes.items():
            if not isinstance(key, str):
                raise WeightspaceValueError(f"`axes` keys must be tensor names, got {key!r}")
            if isinstance(entries, str) or not isinstance(entries, Sequence):
                raise WeightspaceValueError(
                    f"`axes[{key!r}]` must be a sequence with one entry per axis, got "
                    f"{entries!r}; write e.g. ('h', None) for a 2-D weight"
                )
            axes[key] = tuple(_as_axis(e, key, d) for d, e in enumerate(entries))
        groups = {a.group for entries in axes.values() for a in entries if a is not None}
        sizes: dict[str, int] = {}
        for group, size in dict(self.sizes).items():
            if group not in groups:
                raise WeightspaceValueError(
                    f"`sizes` names the group {group!r} that no axis uses; groups: {sorted(groups)}"
                )
            if isinstance(size, bool) or not isinstance(size, int) or size < 1:
                raise WeightspaceValueError(
                    f"`sizes[{group!r}]` must be a positive integer, got {size!r}"
                )
            sizes[group] = size
        producers: dict[str, tuple[tuple[str, int], ...]] = {}
        for group, sites in dict(self.producers).items():
            if group not in groups:
                raise WeightspaceValueError(
                    f"`producers` names the group {group!r} that no axis uses; groups: "
                    f"{sorted(groups)}"
                )
            if isinstance(sites, str):
                sites = [sites]
            producers[group] = tuple(_as_producer(s, group) for s in sites)
        object.__setattr__(self, "axes", MappingProxyType(axes))
        object.__setattr__(self, "sizes", MappingProxyType(sizes))
        object.__setattr__(self, "producers", MappingProxyType(producers))
        refs: dict[str, list[AxisRef]] = {}
        for key, entries in axes.items():
            for dim, a in enumerate(entries):
                if a is not None:
                    refs.setdefault(a.group, []).append(AxisRef(key, dim, a.repeat))
        object.__setattr__(self, "_refs", MappingProxyType({g: tuple(r) for g, r in refs.items()}))

    @property
    def groups(self) -> tuple[str, ...]:
        """The group names, in the order they first appear in :attr:`axes`."""
        return tuple(self._group_refs)

    @property
    def group_axes(self) -> Mapping[str, tuple[AxisRef, ...]]:
        """Group -> every tensor axis it moves, as :class:`AxisRef` ``(key, axis, repeat)``."""
        return self._group_refs

    @property
    def _group_refs(self) -> Mapping[str, tuple[AxisRef, ...]]:
        refs: Mapping[str, tuple[AxisRef, ...]] = self.__dict__["_refs"]
        return refs

    def __repr__(self) -> str:
        sizes = ", ".join(f"{g!r}: {self.sizes.get(g, '?')}" for g in self.groups)
        return f"PermutationSpec(groups={{{sizes}}}, tensors={len(self.axes)})"

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, PermutationSpec):
            return NotImplemented
        return (
            dict(self.axes) == dict(other.axes)
            and dict(self.sizes) == dict(other.sizes)
            and dict(self.producers) == dict(other.producers)
        )

    __hash__ = None  # type: ignore[assignment]

    def describe(self) -> str:
        """Return a readable table: one line per group with its size and the axes it moves.

        Example:
            >>> spec = PermutationSpec({"a.weight": ("h", None), "b.weight": (None, "h")})
            >>> print(spec.describe())
            h (? units): a.weight[0], b.weight[1]
        """
        lines = []
        for group, refs in self._group_refs.items():
            where = ", ".join(
                f"{r.key}[{r.axis}]" + (f" x{r.repeat}" if r.repeat > 1 else "") for r in refs
            )
            lines.append(f"{group} ({self.sizes.get(group, '?')} units): {where}")
        return "\n".join(lines)

    def check(self, state_dict: Mapping[str, Any], *, name: str = "state_dict") -> dict[str, int]:
        """Check that ``state_dict`` fits this spec and return the size of every group.

        Every listed tensor must be present with one entry per axis, and all axes of a group
        must hold the same number of units.

        Args:
            state_dict: The tensors to check (a state dict).
            name: How the state dict is called in error messages.

        Returns:
            Group -> number of units.

        Raises:
            ShapeMismatchError: if a tensor is missing or an axis does not fit; the message
                names the tensor.

        Example:
            >>> import torch
            >>> spec = PermutationSpec({"w": ("h", None)})
            >>> spec.check({"w": torch.zeros(3, 2)})
            {'h': 3}
        """
        sizes: dict[str, int] = {}
        first: dict[str, str] = {}
        missing = [k for k in self.axes if k not in state_dict]
        if missing:
            raise ShapeMismatchError(
                f"{len(missing)} tensors of the spec are missing from `{name}`: "
                f"{missing[:5]}{' ...' if len(missing) > 5 else ''}; derive the spec from the "
                "same architecture as the state dict"
            )
        for key, entries in self.axes.items():
            tensor = state_dict[key]
            shape = tuple(getattr(tensor, "shape", ()))
            if len(shape) != len(entries):
                raise ShapeMismatchError(
                    f"`{name}[{key!r}]` has shape {list(shape)} ({len(shape)} axes) but the "
                    f"spec lists {len(entries)} axes for it; fix the spec entry for {key!r}"
                )
            for dim, a in enumerate(entries):
                if a is None:
                    continue
                length = int(shape[dim])
                if length % a.repeat:
                    raise ShapeMismatchError(
                        f"axis {dim} of `{name}[{key!r}]` has {length} entries, not a multiple "
                        f"of repeat={a.repeat} of group {a.group!r}; fix the spec entry"
                    )
                units = length // a.repeat
                if a.group in sizes and sizes[a.group] != units:
                    raise ShapeMismatchError(
                        f"group {a.group!r} has {sizes[a.group]} units on "
                        f"`{name}[{first[a.group]!r}]` but {units} on axis {dim} of "
                        f"`{name}[{key!r}]`; the spec does not match this state dict"
                    )
                sizes.setdefault(a.group, units)
                first.setdefault(a.group, f"{key}")
        for group, size in self.sizes.items():
            if sizes.get(group, size) != size:
                raise ShapeMismatchError(
                    f"group {group!r} has {sizes[group]} units in `{name}` (first seen on "
                    f"{first[group]!r}) but the spec says {size}; use a state dict of the "
                    "architecture the spec was derived from"
                )
        return sizes


def expand_index(perm: Tensor, repeat: int) -> Tensor:
    """Expand a permutation of units into a permutation of entries (blocks of ``repeat``)."""
    if repeat == 1:
        return perm
    offsets = torch.arange(repeat, dtype=perm.dtype, device=perm.device)
    return (perm.unsqueeze(1) * repeat + offsets).reshape(-1)
