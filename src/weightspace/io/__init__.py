"""Reading and writing weights: lazy sharded reading, a streaming atomic safetensors writer.

* :func:`open_state_dict` opens a ``.safetensors`` file, an HF sharded checkpoint folder or a
  legacy ``torch.save`` state dict (``weights_only=True`` only) as a :class:`LazyStateDict`:
  names, shapes and dtypes up front, tensor data one tensor at a time on lookup.
* :func:`as_state_dict` turns a module, a mapping or a path (a :data:`StateDictLike`) into a
  mapping of tensors; every part of the library accepts weights through it. :func:`shape_of`
  and :func:`dtype_of` read a tensor's shape and dtype without reading its data when they can.
* :func:`save_state_dict` writes safetensors (sharded on request), streaming lazily computed
  tensors one at a time, atomically, never onto an input.
* :func:`provenance` builds the header metadata that says how a checkpoint was made;
  :func:`parse_size` reads sizes such as ``"5GB"``.

Example:
    >>> import tempfile, torch
    >>> from pathlib import Path
    >>> from weightspace import io
    >>> out = Path(tempfile.mkdtemp()) / "lin.safetensors"
    >>> _ = io.save_state_dict(torch.nn.Linear(4, 2).state_dict(), out)
    >>> sd = io.open_state_dict(out)
    >>> sorted(sd), sd.bytes_read
    (['bias', 'weight'], 0)
"""

from __future__ import annotations

from weightspace.io._provenance import provenance as provenance
from weightspace.io._read import LazyStateDict as LazyStateDict
from weightspace.io._read import PathLike as PathLike
from weightspace.io._read import open_state_dict as open_state_dict
from weightspace.io._state_dict import StateDictLike as StateDictLike
from weightspace.io._state_dict import as_state_dict as as_state_dict
from weightspace.io._state_dict import dtype_of as dtype_of
from weightspace.io._state_dict import shape_of as shape_of
from weightspace.io._write import SpecMapping as SpecMapping
from weightspace.io._write import parse_size as parse_size
from weightspace.io._write import save_state_dict as save_state_dict

__all__ = [
    "LazyStateDict",
    "PathLike",
    "SpecMapping",
    "StateDictLike",
    "as_state_dict",
    "dtype_of",
    "open_state_dict",
    "parse_size",
    "provenance",
    "save_state_dict",
    "shape_of",
]
