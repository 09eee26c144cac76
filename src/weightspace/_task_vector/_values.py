"""The lazy values of a task vector and the checks its operations share.

Every lazy value is a small frozen dataclass (a zero-argument callable, or a function of a name
and a tensor) defined at module level, so that no closure captures a loop variable and a
vector's structure can be read in a debugger.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol

import torch
from torch import Tensor

from weightspace._errors import ShapeMismatchError, WeightspaceValueError

Value = Tensor | Callable[[], Tensor]
"""A value of a task vector: a tensor, or a zero-argument callable that computes it."""


class Source(Protocol):
    """A lazy value that also gives the fine-tuned and base tensors it is the difference of."""

    def sources(self) -> tuple[Tensor, Tensor]:
        """Return ``(finetuned, base)``."""
        ...

    def __call__(self) -> Tensor:
        """Return ``finetuned - base`` in the vector's dtype."""
        ...


# --------------------------------------------------------------------------------------------
# Checks
# --------------------------------------------------------------------------------------------


def _fmt_names(names: Sequence[str], limit: int = 8) -> str:
    shown = list(names[:limit])
    more = f" and {len(names) - limit} more" if len(names) > limit else ""
    return f"{shown}{more}"


def _check_finite(tensor: Tensor, what: str) -> None:
    if not tensor.is_floating_point():
        return
    # Fast path (a vectorised reduction, about 20x faster than `isfinite(t).all()`): NaN and
    # infinities propagate through a sum, so a finite sum proves every entry finite. Only a
    # sum that is not finite (a bad entry, or an overflow of finite entries) takes the exact
    # test below.
    if bool(torch.isfinite(tensor.sum())):
        return
    if not bool(torch.isfinite(tensor).all()):
        bad = int((~torch.isfinite(tensor)).sum())
        raise WeightspaceValueError(
            f"{what} contains {bad} non-finite value(s) (nan or inf) out of {tensor.numel()}; "
            "task vectors need finite weights: fix or drop that tensor first"
        )


def _check_scalar(value: object, what: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        if isinstance(value, Tensor) and value.numel() == 1:
            value = float(value.item())
        else:
            raise WeightspaceValueError(f"{what} must be a real number, got {value!r}")
    result = float(value)
    if not math.isfinite(result):
        raise WeightspaceValueError(f"{what} must be finite, got {result}")
    return result


def _accumulation_dtype(*dtypes: torch.dtype) -> torch.dtype:
    return torch.float64 if torch.float64 in dtypes else torch.float32


# --------------------------------------------------------------------------------------------
# Lazy values (module-level classes, so that no closure captures a loop variable)
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Diff:
    """``finetuned[name] - base[name]``, read on call; keeps its sources for exact apply."""

    finetuned: Mapping[str, Tensor]
    base: Mapping[str, Tensor]
    name: str
    dtype: torch.dtype

    def sources(self) -> tuple[Tensor, Tensor]:
        f = self.finetuned[self.name]
        b = self.base[self.name]
        _check_finite(f, f"`finetuned[{self.name!r}]`")
        _check_finite(b, f"`base[{self.name!r}]`")
        if f.shape != b.shape:
            raise ShapeMismatchError(
                f"`finetuned[{self.name!r}]` has shape {tuple(f.shape)} but `base[{self.name!r}]` "
                f"has shape {tuple(b.shape)}; they must match"
            )
        return f, b.to(f.device)

    def __call__(self) -> Tensor:
        f, b = self.sources()
        return f.to(self.dtype) - b.to(self.dtype)


@dataclass(frozen=True)
class _Get:
    mapping: Mapping[str, Tensor]
    name: str

    def __call__(self) -> Tensor:
        return self.mapping[self.name]


@dataclass(frozen=True)
class _Checked:
    """A user-supplied callable, validated (tensor, floating, finite) on every call."""

    fn: Callable[[], Tensor]
    name: str

    def __call__(self) -> Tensor:
        value = self.fn()
        if not isinstance(value, Tensor):
            raise WeightspaceValueError(
                f"the callable for `deltas[{self.name!r}]` must return a Tensor, "
                f"got {type(value).__name__}"
            )
        if not value.is_floating_point():
            raise WeightspaceValueError(
                f"`deltas[{self.name!r}]` must be a floating-point tensor, got {value.dtype}"
            )
        _check_finite(value, f"`deltas[{self.name!r}]`")
        return value


@dataclass(frozen=True)
class _Unary:
    """``fn(name, vector[name])``, read on call."""

    fn: Callable[[str, Tensor], Tensor]
    vector: Mapping[str, Tensor]
    name: str

    def __call__(self) -> Tensor:
        return self.fn(self.name, self.vector[self.name])


@dataclass(frozen=True)
class _Many:
    """``fn(name, [v[name] for v in vectors if name in v])``, read on call."""

    fn: Callable[[str, list[Tensor]], Tensor]
    vectors: tuple[Mapping[str, Tensor], ...]
    name: str

    def __call__(self) -> Tensor:
        return self.fn(self.name, [v[self.name] for v in self.vectors if self.name in v])


@dataclass(frozen=True)
class _Zeros:
    shape: torch.Size
    dtype: torch.dtype

    def __call__(self) -> Tensor:
        return torch.zeros(self.shape, dtype=self.dtype)


def _neg(_: str, t: Tensor) -> Tensor:
    return -t


@dataclass(frozen=True)
class _Scale:
    k: float

    def __call__(self, _: str, t: Tensor) -> Tensor:
        return t * self.k


@dataclass(frozen=True)
class _Div:
    k: float

    def __call__(self, _: str, t: Tensor) -> Tensor:
        return t / self.k


@dataclass(frozen=True)
class _Mask:
    mask: Mapping[str, Tensor]

    def __call__(self, name: str, t: Tensor) -> Tensor:
        m = self.mask[name]
        if m.dtype != torch.bool:
            raise WeightspaceValueError(
                f"`mask[{name!r}]` must be a bool tensor, got {m.dtype}; for an elementwise "
                "product with real values use `tv.map(lambda name, t: t * other[name])`"
            )
        if m.shape != t.shape:
            raise ShapeMismatchError(
                f"`mask[{name!r}]` has shape {tuple(m.shape)} but the vector's tensor has shape "
                f"{tuple(t.shape)}"
            )
        return torch.where(m.to(t.device), t, torch.zeros((), dtype=t.dtype, device=t.device))


def _add(_: str, ts: list[Tensor]) -> Tensor:
    if len(ts) == 1:
        return ts[0]
    return ts[0] + ts[1]


def _sub_union(
    a: Mapping[str, Tensor], b: Mapping[str, Tensor]
) -> Callable[[str, list[Tensor]], Tensor]:
    def fn(name: str, ts: list[Tensor]) -> Tensor:
        if name in a and name in b:
            return ts[0] - ts[1]
        return ts[0] if name in a else -ts[0]

    return fn


def _identity(_: str, t: Tensor) -> Tensor:
    return t


def _zero_like(_: str, t: Tensor) -> Tensor:
    return torch.zeros_like(t)
