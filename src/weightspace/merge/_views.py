"""The lazy inputs and output of a merge: views of checkpoints read one tensor at a time.

:class:`InputView` reads some tensors of a checkpoint (checking that they are finite and
caching the last one, so that every task vector's read of the base hits the file once),
:class:`SubsetView` shows some of its names, and :class:`OutputView` is the merged checkpoint:
``name -> base + merged delta`` (or the base tensor), computed when it is looked up.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence

import torch

from weightspace._errors import WeightspaceValueError
from weightspace._task_vector import TaskVector
from weightspace.io import LazyStateDict

__all__ = ["InputView", "OutputView", "SubsetView"]


class _NamedView(Mapping[str, torch.Tensor]):
    """A mapping over a fixed list of names; subclasses say how a tensor is read."""

    _names: list[str]
    _set: set[str]

    def _set_names(self, names: Sequence[str]) -> None:
        self._names = list(names)
        self._set = set(self._names)

    def __iter__(self) -> Iterator[str]:
        return iter(self._names)

    def __len__(self) -> int:
        return len(self._names)

    def __contains__(self, name: object) -> bool:
        return name in self._set


class InputView(_NamedView):
    """A view of some tensors of a checkpoint: checks finiteness, caches the last tensor."""

    def __init__(
        self,
        sd: LazyStateDict,
        names: Sequence[str],
        label: str,
        *,
        check_finite: bool,
        cache_last: bool,
    ) -> None:
        self.sd = sd
        self._set_names(names)
        self.label = label
        self._check = check_finite
        self._cache = cache_last
        self._last: tuple[str, torch.Tensor] | None = None

    def __getitem__(self, name: str) -> torch.Tensor:
        if name not in self._set:
            raise KeyError(name)
        if self._last is not None and self._last[0] == name:
            return self._last[1]
        self._last = None
        tensor = self.sd[name]
        if self._check and (tensor.is_floating_point() or tensor.is_complex()):
            finite = torch.isfinite(tensor)
            if not bool(finite.all()):
                n_nan = int(torch.isnan(tensor).sum())
                n_inf = int((~finite).sum()) - n_nan
                raise WeightspaceValueError(
                    f"tensor {name!r} of {self.label} ({str(self.sd.source_file(name))!r}) has "
                    f"{n_nan} NaN and {n_inf} infinite values; fix the checkpoint, or leave the "
                    "tensor out of the merge with `exclude:` (set `check_finite: false` to copy "
                    "non-finite base tensors anyway); nothing was written"
                )
        if self._cache:
            self._last = (name, tensor)
        return tensor

    def shape(self, name: str) -> torch.Size:
        return self.sd.shape(name)

    def dtype(self, name: str) -> torch.dtype:
        return self.sd.dtype(name)


class SubsetView(_NamedView):
    """Some names of an :class:`InputView`, read through it (and its cache)."""

    def __init__(self, parent: InputView, names: Sequence[str]) -> None:
        self._parent = parent
        self._set_names(names)

    def __getitem__(self, name: str) -> torch.Tensor:
        if name not in self._set:
            raise KeyError(name)
        return self._parent[name]

    def shape(self, name: str) -> torch.Size:
        return self._parent.shape(name)

    def dtype(self, name: str) -> torch.dtype:
        return self._parent.dtype(name)


class OutputView(Mapping[str, torch.Tensor]):
    """``name -> base + merged delta`` (or the base tensor), computed on lookup.

    A whole-tensor method (:mod:`weightspace.merge._whole`) gives its output tensors through
    ``direct`` (in float32, or float64), which are rounded once to the output dtype.
    """

    def __init__(
        self,
        base: InputView,
        merged: TaskVector | None,
        out_dtype: torch.dtype | None,
        direct: Callable[[str], torch.Tensor] | None = None,
        direct_names: Sequence[str] = (),
    ) -> None:
        self._base = base
        self._merged = merged
        self._out = out_dtype
        self._direct = direct
        self._direct_names = set(direct_names)

    def __getitem__(self, name: str) -> torch.Tensor:
        dtype = self.dtype(name)
        if self._direct is not None and name in self._direct_names:
            return self._direct(name).to(dtype)
        b = self._base[name]
        if self._merged is not None and name in self._merged:
            acc = torch.float64 if b.dtype == torch.float64 else torch.float32
            delta = self._merged[name].to(acc)
            return (b.to(acc) + delta).to(dtype)
        return b.to(dtype)

    def __iter__(self) -> Iterator[str]:
        return iter(self._base)

    def __len__(self) -> int:
        return len(self._base)

    def shape(self, name: str) -> torch.Size:
        return self._base.shape(name)

    def dtype(self, name: str) -> torch.dtype:
        dtype = self._base.dtype(name)
        return self._out if self._out is not None and dtype.is_floating_point else dtype
