"""Array conversion and validation shared by the spectral modules (private)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, TypeAlias

import numpy as np
import torch
from numpy.typing import NDArray

from weightspace._errors import WeightspaceValueError

__all__ = [
    "ArrayLike",
    "FloatArray",
    "IntArray",
    "as_float_array",
    "as_index_array",
    "describe",
]

FloatArray = NDArray[np.float64]
IntArray = NDArray[np.int64]

ArrayLike: TypeAlias = NDArray[Any] | torch.Tensor | Sequence[Any]
"""An array given as a numpy array, a torch tensor (detached and copied to the CPU) or a
(nested) sequence of numbers. Float inputs are read as ``float64``, index inputs as ``int64``;
the functions that take a sparse matrix say so and also accept :mod:`scipy.sparse` ones."""


def describe(value: object) -> str:
    """Return a short description of ``value`` for error messages."""
    if isinstance(value, (np.ndarray, torch.Tensor)):
        return f"{type(value).__name__} of shape {list(value.shape)}"
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def as_float_array(
    value: ArrayLike, name: str, *, ndim: int | tuple[int, ...] | None = None
) -> FloatArray:
    """Return ``value`` (array, tensor or nested sequence) as a finite ``float64`` array."""
    if isinstance(value, torch.Tensor):
        value = value.detach().to("cpu", torch.float64).numpy()
    try:
        array = np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError):
        raise WeightspaceValueError(
            f"`{name}` must be a numeric array or tensor, got {describe(value)}"
        ) from None
    if ndim is not None:
        allowed = (ndim,) if isinstance(ndim, int) else ndim
        if array.ndim not in allowed:
            raise WeightspaceValueError(
                f"`{name}` must have {' or '.join(map(str, allowed))} dimensions, got shape "
                f"{list(array.shape)}"
            )
    if not np.isfinite(array).all():
        raise WeightspaceValueError(f"`{name}` must be finite, got nan or inf values")
    return array


def as_index_array(value: ArrayLike, name: str, *, size: int | None = None, upper: int) -> IntArray:
    """Return ``value`` as a 1-D ``int64`` array of indices in ``[0, upper)``."""
    if isinstance(value, torch.Tensor):
        value = value.detach().cpu().numpy()
    array = np.asarray(value)
    if array.ndim != 1 or not (np.issubdtype(array.dtype, np.integer) or array.size == 0):
        raise WeightspaceValueError(
            f"`{name}` must be a 1-D array of integer indices, got {describe(value)}"
        )
    array = array.astype(np.int64)
    if size is not None and array.shape[0] != size:
        raise WeightspaceValueError(
            f"`{name}` must hold one index per point ({size}), got {array.shape[0]}"
        )
    if array.size and (array.min() < 0 or array.max() >= upper):
        raise WeightspaceValueError(
            f"`{name}` must hold indices in [0, {upper}), got values in "
            f"[{array.min()}, {array.max()}]"
        )
    return array


def frozen(array: NDArray[Any]) -> NDArray[Any]:
    """Return a read-only copy of ``array``."""
    out = np.array(array, copy=True)
    out.setflags(write=False)
    return out
