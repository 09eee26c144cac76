"""Array conversion and validation shared by the spectral modules (private)."""

from __future__ import annotations

import contextlib
import sys
import warnings
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, ForwardRef, TypeAlias, Union

import numpy as np
from numpy.typing import NDArray

from weightspace._errors import WeightspaceValueError

if TYPE_CHECKING:
    import torch

__all__ = [
    "ArrayLike",
    "FloatArray",
    "IntArray",
    "as_float_array",
    "as_index_array",
    "blas_threads",
    "describe",
    "tensor_to_numpy",
]

FloatArray = NDArray[np.float64]
IntArray = NDArray[np.int64]

if TYPE_CHECKING:
    ArrayLike: TypeAlias = NDArray[Any] | torch.Tensor | Sequence[Any]
else:
    # ``torch.Tensor`` as a forward reference into the torch module: typing.get_type_hints
    # resolves it once torch is loaded, and this module never imports torch itself.
    ArrayLike = Union[NDArray[Any], ForwardRef("Tensor", module="torch"), Sequence[Any]]  # noqa: UP007
"""An array given as a numpy array, a torch tensor (detached and copied to the CPU) or a
(nested) sequence of numbers. Float inputs are read as ``float64``, index inputs as ``int64``;
the functions that take a sparse matrix say so and also accept :mod:`scipy.sparse` ones."""


def blas_threads(threads: int | None) -> contextlib.AbstractContextManager[object]:
    """Limit the BLAS libraries to ``threads`` threads inside a ``with`` block.

    ``None`` leaves them as they are, and so does a missing ``threadpoolctl``. Many small BLAS
    calls (ARPACK's iterations, the estimator's conjugate gradients, ZoomOut on samples) gain
    nothing from threads and lose much when the cores are shared: on a loaded two-core
    machine, two OpenBLAS threads made the 100 eigenpairs of two 4.8k-vertex meshes 6-13x
    slower than one thread.
    """
    if threads is None:
        return contextlib.nullcontext()
    try:
        from threadpoolctl import threadpool_limits  # type: ignore[import-untyped]
    except ImportError:  # pragma: no cover - threadpoolctl is a dependency
        return contextlib.nullcontext()
    with warnings.catch_warnings():
        # threadpoolctl reports unusual OpenMP set-ups as warnings; they do not concern BLAS
        warnings.filterwarnings("ignore", category=RuntimeWarning, module="threadpoolctl")
        limiter: contextlib.AbstractContextManager[object] = threadpool_limits(
            limits=threads, user_api="blas"
        )
    return limiter


def tensor_to_numpy(value: object, dtype: str | None = None) -> Any:
    """Return ``value`` as a CPU numpy array when it is a torch tensor, else unchanged.

    torch is never imported here: a tensor can only exist once its caller imported torch, so
    ``sys.modules`` tells whether ``value`` may be one (the mesh path stays free of torch).
    """
    torch_module = sys.modules.get("torch")
    if torch_module is None or not isinstance(value, torch_module.Tensor):
        return value
    tensor = value.detach().cpu()
    if dtype == "float64":
        tensor = tensor.to(torch_module.float64)
    return tensor.numpy()


def _is_tensor(value: object) -> bool:
    torch_module = sys.modules.get("torch")
    return torch_module is not None and isinstance(value, torch_module.Tensor)


def describe(value: object) -> str:
    """Return a short description of ``value`` for error messages."""
    if isinstance(value, np.ndarray) or _is_tensor(value):
        return f"{type(value).__name__} of shape {list(getattr(value, 'shape', ()))}"
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def as_float_array(
    value: ArrayLike, name: str, *, ndim: int | tuple[int, ...] | None = None
) -> FloatArray:
    """Return ``value`` (array, tensor or nested sequence) as a finite ``float64`` array."""
    value = tensor_to_numpy(value, "float64")
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
    array = np.asarray(tensor_to_numpy(value))
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
