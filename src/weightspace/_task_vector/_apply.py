"""Adding a task vector to a model: :meth:`~weightspace.TaskVector.apply_to` and its in-place form.

See the package notes on exactness: at scale 1, a vector built from two models reproduces the
fine-tuned tensors bit for bit.
"""

from __future__ import annotations

import copy
import functools
import os
from collections.abc import Callable, Mapping
from typing import ParamSpec, TypeVar, overload

import torch
from torch import Tensor, nn

from weightspace._deprecation import renamed_kwargs
from weightspace._errors import ShapeMismatchError, WeightspaceValueError
from weightspace._task_vector._base import VectorBase
from weightspace._task_vector._values import (
    _accumulation_dtype,
    _check_finite,
    _check_scalar,
    _fmt_names,
)
from weightspace.io import as_state_dict, dtype_of, shape_of

__all__ = ["Application"]

_ModuleT = TypeVar("_ModuleT", bound=nn.Module)
_P = ParamSpec("_P")
_R = TypeVar("_R")


def _renamed_keywords(
    renames: Mapping[str, str], *, func: str
) -> Callable[[Callable[_P, _R]], Callable[_P, _R]]:
    """Accept the deprecated keyword names in ``renames`` (old -> new), with a FutureWarning."""

    def decorate(fn: Callable[_P, _R]) -> Callable[_P, _R]:
        @functools.wraps(fn)
        def wrapper(*args: _P.args, **kwargs: _P.kwargs) -> _R:
            if any(old in kwargs for old in renames):
                kwargs = renamed_kwargs(kwargs, renames, func=func, since="0.1")  # type: ignore[assignment]
            return fn(*args, **kwargs)

        return wrapper

    return decorate


class Application(VectorBase):
    """Adding a vector to a model, for :class:`~weightspace.TaskVector` (a mixin; see there)."""

    __slots__ = ()

    @overload
    def apply_to(
        self, base: _ModuleT, *, scale: float = 1.0, dtype: torch.dtype | None = None
    ) -> _ModuleT: ...

    @overload
    def apply_to(
        self,
        base: Mapping[str, Tensor] | str | os.PathLike[str],
        *,
        scale: float = 1.0,
        dtype: torch.dtype | None = None,
    ) -> dict[str, Tensor]: ...

    def apply_to(
        self,
        base: nn.Module | Mapping[str, Tensor] | str | os.PathLike[str],
        *,
        scale: float = 1.0,
        dtype: torch.dtype | None = None,
    ) -> nn.Module | dict[str, Tensor]:
        r"""Return :math:`\theta_{\mathrm{base}} + \lambda\,\tau` as a new model; never mutates.

        Each floating-point tensor is computed in float32 (float64 if the vector or the base
        tensor is float64) and rounded once to the output dtype. Keys of ``base`` that the
        vector lacks are copied unchanged; integer tensors come from ``base`` (or from the
        fine-tuned model, see ``integer`` in :meth:`from_models`). At ``scale=1`` a vector
        built by :meth:`from_models` reproduces the fine-tuned tensors bit for bit on every
        element where ``base`` equals the original base (see the module notes on exactness).

        Args:
            base: An ``nn.Module`` (a deep copy is returned, with the new weights loaded), a
                mapping ``name -> tensor`` or a checkpoint path (a new ``dict`` is returned).
            scale: The coefficient :math:`\lambda`.
            dtype: Output dtype of the floating-point tensors (default: each base tensor's).

        Returns:
            A new module, or a new ``dict`` of new tensors holding every key of ``base``.

        Raises:
            ShapeMismatchError: if keys of the vector are missing from ``base`` or a shape
                differs.
            WeightspaceValueError: if ``scale`` is not finite or a base tensor is not finite.

        Example:
            >>> import torch
            >>> from weightspace import TaskVector
            >>> tv = TaskVector({"w": torch.ones(2)})
            >>> base = {"w": torch.zeros(2), "steps": torch.tensor(7)}
            >>> out = tv.apply_to(base, scale=-1.0)
            >>> out["w"], out["steps"], base["w"]
            (tensor([-1., -1.]), tensor(7), tensor([0., 0.]))
        """
        scale = _check_scalar(scale, "`scale`")
        if dtype is not None and not dtype.is_floating_point:
            raise WeightspaceValueError(f"`dtype` must be a floating-point dtype, got {dtype}")
        if isinstance(base, nn.Module):
            new = copy.deepcopy(base)
            self.apply_to_(new, scale=scale)
            if dtype is not None:
                new.to(dtype)
            return new
        sd = as_state_dict(base, argument="base")
        self._check_target(sd, "base")
        out: dict[str, Tensor] = {}
        for name in sd:
            if name in self._entries:
                out[name] = self._new_value(name, sd[name], scale, dtype)
            elif name in self._extras:
                out[name] = self._extras[name]().detach().clone()
            else:
                t = sd[name].detach()
                out[name] = (
                    t.to(dtype) if dtype is not None and t.is_floating_point() else t.clone()
                )
        return out

    @_renamed_keywords({"module": "model"}, func="TaskVector.apply_to_")
    def apply_to_(self, model: _ModuleT, *, scale: float = 1.0) -> _ModuleT:
        r"""Add :math:`\lambda\,\tau` to ``model``'s weights in place (trailing underscore).

        Same arithmetic as :meth:`apply_to`; every key is validated before anything is written.

        Args:
            model: The model to modify.
            scale: The coefficient :math:`\lambda`.

        Returns:
            ``model`` itself.

        Raises:
            ShapeMismatchError: if keys of the vector are missing from the model or a shape
                differs.
            WeightspaceValueError: if ``scale`` is not finite or a weight is not finite.

        Example:
            >>> import torch
            >>> from weightspace import TaskVector
            >>> lin = torch.nn.Linear(2, 1, bias=False)
            >>> tv = TaskVector({"weight": -lin.weight.detach().clone()})
            >>> tv.apply_to_(lin).weight.abs().sum().item()
            0.0
        """
        if not isinstance(model, nn.Module):
            raise WeightspaceValueError(
                f"`model` must be an nn.Module, got {type(model).__name__}; use `apply_to` for "
                "state dicts"
            )
        scale = _check_scalar(scale, "`scale`")
        sd = model.state_dict(keep_vars=True)
        self._check_target(sd, "model")
        with torch.no_grad():
            for name in self:
                target = sd[name]
                target.copy_(self._new_value(name, target.detach(), scale, None))
            for name, getter in self._extras.items():
                if name in sd:
                    sd[name].copy_(getter())
        return model

    def _check_target(self, sd: Mapping[str, Tensor], argument: str) -> None:
        missing = [n for n in self if n not in sd]
        if missing:
            raise ShapeMismatchError(
                f"{len(missing)} keys of the task vector are missing from `{argument}`: "
                f"{_fmt_names(missing)}; restrict the vector first, e.g. "
                f"`tv.intersection({argument}_state_dict)` or `tv.restrict(selection)`"
            )
        for name in self:
            shape = shape_of(sd, name)
            if shape != self.shape(name):
                raise ShapeMismatchError(
                    f"`{argument}[{name!r}]` has shape {tuple(shape)} but the task vector's "
                    f"tensor has shape {tuple(self.shape(name))}"
                )
            if not dtype_of(sd, name).is_floating_point:
                raise ShapeMismatchError(
                    f"`{argument}[{name!r}]` is {dtype_of(sd, name)}, not floating point; task "
                    "vectors never change integer tensors"
                )

    def _new_value(
        self, name: str, target: Tensor, scale: float, dtype: torch.dtype | None
    ) -> Tensor:
        _check_finite(target, f"the target tensor {name!r}")
        out_dtype = dtype if dtype is not None else target.dtype
        acc = _accumulation_dtype(self._dtype, target.dtype, out_dtype)
        source = self._sources.get(name)
        if source is not None and scale == 1.0:
            f, b = source.sources()
            delta = f.to(acc) - b.to(acc)
            general = (target.to(acc) + delta.to(target.device)).to(out_dtype)
            same = target == b.to(target.device)
            return torch.where(same, f.to(device=target.device, dtype=out_dtype), general)
        delta = self[name].to(device=target.device, dtype=acc)
        if scale != 1.0:
            delta = delta * scale
        return (target.to(acc) + delta).to(out_dtype)
