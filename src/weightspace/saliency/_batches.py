"""Labelled data as one ``(inputs, targets)`` pair of tensors or as an iterable of batches."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import TypeAlias

from torch import Tensor

from weightspace._errors import ShapeMismatchError, WeightspaceValueError

__all__ = ["Data", "as_pair", "iter_batches"]

Data: TypeAlias = tuple[Tensor, Tensor] | Iterable[tuple[Tensor, Tensor]]
"""Labelled data: a pair ``(inputs, targets)`` of tensors with the same first dimension (cut
into batches of ``batch_size``), or an iterable of such pairs (a ``DataLoader``)."""


def _is_pair(data: object) -> bool:
    return (
        isinstance(data, tuple)
        and len(data) == 2
        and isinstance(data[0], Tensor)
        and isinstance(data[1], Tensor)
    )


def as_pair(data: object, argument: str, *, allow_empty: bool = False) -> tuple[Tensor, Tensor]:
    """Check that ``data`` is an ``(inputs, targets)`` pair of tensors and return it."""
    if not _is_pair(data):
        raise WeightspaceValueError(
            f"`{argument}` must be a pair (inputs, targets) of tensors, got "
            f"{type(data).__name__}; pass e.g. `dataset.tensors()`"
        )
    assert isinstance(data, tuple)
    x, y = data
    if x.ndim == 0 or y.ndim == 0 or x.shape[0] != y.shape[0]:
        raise ShapeMismatchError(
            f"`{argument}` holds {x.shape[0] if x.ndim else 'no'} inputs (shape "
            f"{list(x.shape)}) but targets of shape {list(y.shape)}; pass one target per input"
        )
    if x.shape[0] == 0 and not allow_empty:
        raise WeightspaceValueError(f"`{argument}` is empty (0 examples); pass at least one")
    return x, y


def iter_batches(data: Data, argument: str, batch_size: int) -> Iterator[tuple[Tensor, Tensor]]:
    """Yield ``(inputs, targets)`` batches of ``data``; raise if it yields no example."""
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise WeightspaceValueError(f"`batch_size` must be a positive int, got {batch_size!r}")
    seen = 0
    if _is_pair(data):
        x, y = as_pair(data, argument)
        for start in range(0, x.shape[0], batch_size):
            seen += 1
            yield x[start : start + batch_size], y[start : start + batch_size]
    elif isinstance(data, Iterable) and not isinstance(data, (str, bytes, Tensor)):
        for item in data:
            x, y = as_pair(item, f"a batch of `{argument}`", allow_empty=True)
            if x.shape[0]:
                seen += 1
                yield x, y
    else:
        raise WeightspaceValueError(
            f"`{argument}` must be a pair (inputs, targets) of tensors or an iterable of such "
            f"batches, got {type(data).__name__}"
        )
    if seen == 0:
        raise WeightspaceValueError(f"`{argument}` is empty (0 examples); pass at least one")
