"""The one state-dict layer: weights given as a module, a mapping or a path, seen as a mapping.

Every part of the library that takes weights accepts a :data:`StateDictLike` and turns it into a
``Mapping[str, Tensor]`` with :func:`as_state_dict`; :func:`shape_of` and :func:`dtype_of` read
a tensor's shape and dtype without reading its data when the mapping can say them (a
:class:`~weightspace.io.LazyStateDict` or a :class:`~weightspace.TaskVector`).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from types import MappingProxyType

import torch
from torch import Tensor, nn

from weightspace._errors import WeightspaceValueError
from weightspace.io._read import LazyStateDict

__all__ = ["StateDictLike", "as_state_dict", "dtype_of", "shape_of"]

StateDictLike = nn.Module | Mapping[str, Tensor] | str | os.PathLike[str]
"""What every entry point accepts as weights: a module, a mapping ``name -> tensor`` or a path
to a ``.safetensors`` file, a sharded checkpoint folder or a legacy ``torch.save`` file."""


def as_state_dict(x: StateDictLike, *, argument: str = "state_dict") -> Mapping[str, Tensor]:
    """Turn any "state dict like" into a mapping of names to tensors.

    The one entry point the library uses for weights given as a module, a mapping or a path.
    Nothing is copied and no tensor data is read.

    Args:
        x: An :class:`torch.nn.Module` (its ``state_dict()``, detached, sharing memory with
            the module), a ``Mapping[str, Tensor]`` (returned as is, without reading lazy
            values), or a path to a ``.safetensors`` file, a checkpoint folder (sharded or
            not) or a legacy ``.bin``/``.pt``/``.pth`` state dict (opened lazily with
            :func:`~weightspace.io.open_state_dict`).
        argument: The caller's name for ``x``, used in error messages (``"base"``,
            ``"finetuned"``, ...).

    Returns:
        A read-only mapping from names to tensors.

    Raises:
        WeightspaceValueError: if ``x`` is none of these, a ``dict`` holds non-tensors, or a
            path does not exist or is not a checkpoint (the message names ``argument``).
        WeightspaceError: if a file is not a valid checkpoint, or a legacy file is a general
            pickle.

    Example:
        >>> import torch
        >>> from weightspace import io
        >>> sd = io.as_state_dict(torch.nn.Linear(2, 3))
        >>> sorted(sd), sd["weight"].shape
        (['bias', 'weight'], torch.Size([3, 2]))
    """
    if isinstance(x, nn.Module):
        return MappingProxyType({k: v.detach() for k, v in x.state_dict().items()})
    if isinstance(x, (str, os.PathLike)):
        return LazyStateDict._named(x, argument=argument)
    if isinstance(x, Mapping):
        if isinstance(x, dict):  # values already in memory: cheap to check
            bad = [k for k, v in x.items() if not (isinstance(k, str) and isinstance(v, Tensor))]
            if bad:
                raise WeightspaceValueError(
                    f"`{argument}` must map names (str) to tensors, but {len(bad)} entries do "
                    f"not (e.g. {bad[:3]!r}); drop or convert them"
                )
        return x
    raise WeightspaceValueError(
        f"`{argument}` must be an nn.Module, a Mapping[str, Tensor] or a path, got "
        f"{type(x).__name__}; pass `model`, `model.state_dict()` or a checkpoint path"
    )


def shape_of(sd: Mapping[str, Tensor], name: str) -> torch.Size:
    """Return the shape of ``sd[name]``, without reading its data when ``sd`` can say it.

    A mapping with a ``shape(name)`` method (a :class:`~weightspace.io.LazyStateDict`, a
    :class:`~weightspace.TaskVector`) answers from its metadata; any other mapping is indexed.

    Args:
        sd: A mapping of names to tensors.
        name: A key of ``sd``.

    Returns:
        The tensor's shape.

    Raises:
        KeyError: if ``name`` is not a key of ``sd``.

    Example:
        >>> import torch
        >>> from weightspace import io
        >>> io.shape_of({"w": torch.zeros(2, 3)}, "w")
        torch.Size([2, 3])
    """
    method = getattr(sd, "shape", None)
    if callable(method):
        return torch.Size(method(name))
    return sd[name].shape


def dtype_of(sd: Mapping[str, Tensor], name: str) -> torch.dtype:
    """Return the dtype of ``sd[name]``, without reading its data when ``sd`` can say it.

    A mapping with a ``dtype(name)`` method (a :class:`~weightspace.io.LazyStateDict`) answers
    from its metadata; any other mapping is indexed.

    Args:
        sd: A mapping of names to tensors.
        name: A key of ``sd``.

    Returns:
        The tensor's dtype.

    Raises:
        KeyError: if ``name`` is not a key of ``sd``.

    Example:
        >>> import torch
        >>> from weightspace import io
        >>> io.dtype_of({"steps": torch.tensor(7)}, "steps")
        torch.int64
    """
    method = getattr(sd, "dtype", None)
    if callable(method):
        dtype = method(name)
        if isinstance(dtype, torch.dtype):
            return dtype
    return sd[name].dtype
