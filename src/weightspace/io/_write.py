"""A streaming, atomic safetensors writer, sharded on request."""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import re
import shutil
import sys
import tempfile
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import IO, Any, Protocol, runtime_checkable

import torch
from tqdm.auto import tqdm

from weightspace._errors import ShapeMismatchError, WeightspaceError, WeightspaceValueError
from weightspace.io._format import TensorSpec, encode_header, plan_layout
from weightspace.io._read import LazyStateDict, PathLike
from weightspace.io._temporaries import Temporary, remove_stale_temporaries

__all__ = ["SpecMapping", "parse_size", "save_state_dict"]

logger = logging.getLogger(__name__)

# Files are created through mkstemp/mkdtemp (mode 0600/0700); give the result the mode an
# ordinary `open` would have. The umask can only be read by setting it, so read it once here.
_UMASK = os.umask(0o022)
os.umask(_UMASK)

_INDEX_NAME = "model.safetensors.index.json"
_SINGLE_NAME = "model.safetensors"

_UNITS = {
    "": 1,
    "B": 1,
    "KB": 10**3,
    "MB": 10**6,
    "GB": 10**9,
    "TB": 10**12,
    "KIB": 2**10,
    "MIB": 2**20,
    "GIB": 2**30,
    "TIB": 2**40,
}
_SIZE_RE = re.compile(r"\s*(\d+(?:\.\d*)?|\.\d+)\s*([A-Za-z]*)\s*")


@runtime_checkable
class SpecMapping(Protocol):
    """A mapping that can tell a tensor's shape and dtype without computing it.

    :class:`~weightspace.io.LazyStateDict` is one; lazy task vectors and merges are others.
    :func:`save_state_dict` streams such a mapping (one tensor in memory at a time).
    """

    def shape(self, name: str) -> Sequence[int]:
        """Shape of tensor ``name``."""

    def dtype(self, name: str) -> torch.dtype:
        """Dtype of tensor ``name``."""


def _parse_size(size: object, arg: str) -> int:
    if isinstance(size, bool) or not isinstance(size, (int, str)):
        raise WeightspaceValueError(
            f"`{arg}` must be an int number of bytes or a string such as '5GB' or '500MiB', "
            f"got {size!r} ({type(size).__name__})"
        )
    if isinstance(size, int):
        value = size
    else:
        match = _SIZE_RE.fullmatch(size)
        unit = match.group(2).upper() if match else None
        if match is None or unit not in _UNITS:
            raise WeightspaceValueError(
                f"`{arg}` must look like '5GB', '500MB', '2GiB' or '1024' (units B, KB, MB, GB, "
                f"TB, KiB, MiB, GiB, TiB), got {size!r}"
            )
        value = math.floor(float(match.group(1)) * _UNITS[unit])
    if value <= 0:
        raise WeightspaceValueError(f"`{arg}` must be positive, got {size!r}")
    return value


def parse_size(size: int | str) -> int:
    """Parse a size such as ``"5GB"`` into a number of bytes.

    Decimal units (``KB``, ``MB``, ``GB``, ``TB``) are powers of 1000 and binary units
    (``KiB``, ``MiB``, ``GiB``, ``TiB``) powers of 1024, as in Hugging Face's
    ``max_shard_size``. Units are case-insensitive; a bare number or an int is bytes.

    Args:
        size: An int number of bytes, or a string: a number (decimals allowed) and a unit.

    Returns:
        The size in bytes (rounded down), at least 1.

    Raises:
        WeightspaceValueError: if ``size`` is not a positive size.

    Example:
        >>> parse_size("5GB"), parse_size("2KiB"), parse_size(123)
        (5000000000, 2048, 123)
    """
    return _parse_size(size, "size")


# -- planning --------------------------------------------------------------------------------


def _check_spec(
    name: str, shape: object, dtype: object, where: str
) -> tuple[tuple[int, ...], torch.dtype]:
    try:
        dims = tuple(int(d) for d in shape)  # type: ignore[attr-defined]
        ok = all(d >= 0 for d in dims) and isinstance(dtype, torch.dtype)
    except (TypeError, ValueError):
        ok = False
    if not ok:
        raise WeightspaceValueError(
            f"{where} gives tensor {name!r} the spec ({shape!r}, {dtype!r}); it must be a "
            "(shape, torch.dtype) pair with non-negative integer dimensions"
        )
    assert isinstance(dtype, torch.dtype)
    return dims, dtype


def _collect_specs(
    tensors: Mapping[str, torch.Tensor],
    specs: Mapping[str, tuple[Sequence[int], torch.dtype]] | None,
) -> tuple[
    list[str], dict[str, tuple[tuple[int, ...], torch.dtype]], dict[str, torch.Tensor] | None
]:
    """Return names (mapping order), ``name -> (shape, dtype)`` and, if needed, the values."""
    names = list(tensors)
    bad = [n for n in names if not isinstance(n, str)]
    if bad:
        raise WeightspaceValueError(
            f"`tensors` must have str keys, got {bad[:3]!r}; convert the names to strings"
        )
    if specs is not None:
        extra = sorted(set(specs) - set(names))
        missing = sorted(set(names) - set(specs))
        if extra or missing:
            raise WeightspaceValueError(
                f"`specs` must describe exactly the tensors of `tensors`: {len(missing)} are "
                f"missing ({missing[:3]!r}) and {len(extra)} are extra ({extra[:3]!r})"
            )
        return names, {n: _check_spec(n, *specs[n], where="`specs`") for n in names}, None
    if callable(getattr(tensors, "shape", None)) and callable(getattr(tensors, "dtype", None)):
        lazy: Any = tensors
        return (
            names,
            {
                n: _check_spec(n, lazy.shape(n), lazy.dtype(n), "`tensors.shape/dtype`")
                for n in names
            },
            None,
        )
    if not isinstance(tensors, dict):
        logger.info(
            "%s has no shape()/dtype() and no `specs` were given: computing all %d tensors "
            "before writing (pass `specs=` to stream one tensor at a time)",
            type(tensors).__name__,
            len(names),
        )
    values = {n: tensors[n] for n in names}
    out = {}
    for n, v in values.items():
        if not isinstance(v, torch.Tensor):
            raise WeightspaceValueError(
                f"`tensors[{n!r}]` must be a torch.Tensor, got {type(v).__name__}"
            )
        out[n] = (tuple(v.shape), v.dtype)
    return names, out, values


def _shards(
    names: Sequence[str], nbytes: Mapping[str, int], max_size: int | None
) -> list[list[str]]:
    """Group names (in order) into shards of at most ``max_size`` bytes of tensor data.

    A tensor larger than ``max_size`` gets a shard of its own, as in Hugging Face.
    """
    if max_size is None:
        return [list(names)]
    groups: list[list[str]] = [[]]
    size = 0
    for name in names:
        n = nbytes[name]
        if groups[-1] and size + n > max_size:
            groups.append([])
            size = 0
        groups[-1].append(name)
        size += n
    return groups


# -- safety checks ---------------------------------------------------------------------------


def _input_files(inp: PathLike) -> list[Path]:
    path = Path(inp).expanduser()
    out = [path]
    if path.is_dir():
        out.extend(path.iterdir())
    elif path.suffix == ".json" and path.is_file():
        with contextlib.suppress(WeightspaceError, OSError, ValueError):
            out.extend(LazyStateDict(path).files)
    return out


def _check_not_input(final: Path, tensors: object, inputs: Sequence[PathLike]) -> None:
    if isinstance(inputs, (str, os.PathLike)):
        raise WeightspaceValueError(
            f"`inputs` must be a sequence of paths, got the single path {str(inputs)!r}; "
            "wrap it in a list"
        )
    candidates: list[Path] = []
    for inp in inputs:
        candidates.extend(_input_files(inp))
    if isinstance(tensors, LazyStateDict):
        candidates.extend(tensors.files)
        candidates.append(tensors.source)
    real_final = Path(os.path.realpath(final))
    for cand in candidates:
        real = Path(os.path.realpath(cand))
        if real == real_final or real.is_relative_to(real_final):
            raise WeightspaceValueError(
                f"`path` {str(final)!r} would overwrite the input {str(cand)!r}; write to "
                "another path (weightspace never overwrites its inputs)"
            )


# -- writing ---------------------------------------------------------------------------------


def _tensor_bytes(name: str, tensor: torch.Tensor) -> Any:
    """The tensor's data as a little-endian byte buffer (numpy uint8 array)."""
    if tensor.layout != torch.strided or tensor.is_quantized:
        raise WeightspaceValueError(
            f"tensor {name!r} has layout {tensor.layout}; safetensors stores dense tensors "
            "only: convert it with `.to_dense()` (or dequantize it)"
        )
    if tensor.device.type == "meta":
        raise WeightspaceValueError(
            f"tensor {name!r} is on the meta device and has no data; materialise it first"
        )
    t = tensor.detach().to("cpu").resolve_conj().resolve_neg().contiguous()
    return t.reshape(-1).view(torch.uint8).numpy()


class TensorChunks:
    """A tensor handed to the writer in pieces, for producers that stream one tensor.

    A mapping given to :func:`save_state_dict` may return one of these instead of a tensor:
    the writer then writes ``chunks`` one after the other, in flat (row-major) order, as the
    bytes of one tensor of ``shape`` and ``dtype``. Each chunk is a contiguous 1-D CPU tensor
    of ``dtype``; it is written before the next one is requested, so a producer may hand out
    views of one reused buffer. ``checked_finite`` says the producer has already made sure
    every value is finite (the writer then skips its own ``check_finite`` pass). Private to
    the library (:func:`weightspace.merge.run_merge` uses it).
    """

    __slots__ = ("checked_finite", "chunks", "dtype", "shape")

    def __init__(
        self,
        shape: Sequence[int],
        dtype: torch.dtype,
        chunks: Iterable[torch.Tensor],
        *,
        checked_finite: bool = False,
    ) -> None:
        self.shape = tuple(int(d) for d in shape)
        self.dtype = dtype
        self.chunks = chunks
        self.checked_finite = checked_finite


def raise_if_not_finite(name: str, tensor: torch.Tensor) -> None:
    """Raise the writer's ``check_finite`` error if ``tensor`` holds NaN or infinity."""
    finite = torch.isfinite(tensor)
    if not bool(finite.all()):
        n_nan = int(torch.isnan(tensor).sum())
        n_inf = int((~finite).sum()) - n_nan
        raise WeightspaceValueError(
            f"tensor {name!r} has {n_nan} NaN and {n_inf} infinite values "
            "(`check_finite=True`); nothing was written"
        )


#: Bytes written between two requests to the kernel to start writing the file back to disk.
WRITE_BEHIND_BYTES = 64 << 20


class _WriteBehind:
    """Asks the kernel to start writing back each written stretch of a file, early.

    The writer ends each file with ``fsync`` (the rename that installs the output must not
    come before its data are on disk). Left alone, the kernel writes most of the data back
    only then, and the merge waits for the whole output at the end (about a second per 3 GB
    on the disks measured). Every :data:`WRITE_BEHIND_BYTES` the written range is handed to
    ``posix_fadvise(POSIX_FADV_DONTNEED)``, which on Linux starts its writeback without
    waiting (and later lets the kernel drop those pages from its cache), so the disk works
    while the next tensors are computed and the final ``fsync`` waits for the last stretch
    only. Without ``posix_fadvise`` (not on Linux), it does nothing.
    """

    __slots__ = ("f", "pending", "start")

    def __init__(self, f: IO[bytes]) -> None:
        self.f = f
        self.start = f.tell()
        self.pending = 0

    def wrote(self, nbytes: int) -> None:
        """Count ``nbytes`` more bytes written, and kick the writeback every so often."""
        self.pending += nbytes
        if self.pending >= WRITE_BEHIND_BYTES:
            self.kick()

    def kick(self) -> None:
        """Start the writeback of what was written since the last kick."""
        if self.pending == 0 or not hasattr(os, "posix_fadvise"):
            return
        self.f.flush()
        with contextlib.suppress(OSError):
            os.posix_fadvise(self.f.fileno(), self.start, self.pending, os.POSIX_FADV_DONTNEED)
        self.start += self.pending
        self.pending = 0


def _write_chunks(
    f: IO[bytes],
    spec: TensorSpec,
    value: TensorChunks,
    cast: torch.dtype | None,
    check_finite: bool,
    bar: Any,
    behind: _WriteBehind,
) -> None:
    dtype = value.dtype
    if cast is not None and dtype.is_floating_point:
        dtype = cast
    if value.shape != spec.shape or dtype != spec.dtype:
        raise ShapeMismatchError(
            f"tensor {spec.name!r} was planned as shape {list(spec.shape)} and dtype "
            f"{spec.dtype}, but computing it gave shape {list(value.shape)} and dtype "
            f"{dtype}; fix the `specs` (or the mapping's shape()/dtype()) so they describe "
            "the tensors; nothing was written"
        )
    check = check_finite and not value.checked_finite and dtype.is_floating_point
    done = 0
    for chunk in value.chunks:
        if chunk.dtype != dtype:
            chunk = chunk.to(dtype)
        if check:
            raise_if_not_finite(spec.name, chunk)
        data = _tensor_bytes(spec.name, chunk)
        done += data.nbytes
        if done > spec.nbytes:
            raise WeightspaceError(f"tensor {spec.name!r} has an unexpected byte size")
        f.write(data)
        bar.update(data.nbytes)
        behind.wrote(data.nbytes)
    if done != spec.nbytes:
        raise WeightspaceError(f"tensor {spec.name!r} has an unexpected byte size")


def _write_file(
    dest: Path,
    layout: Sequence[TensorSpec],
    metadata: Mapping[str, str] | None,
    get: Callable[[str], torch.Tensor | TensorChunks],
    cast: torch.dtype | None,
    check_finite: bool,
    bar: Any,
) -> None:
    header = encode_header(layout, metadata)
    f: IO[bytes]
    with open(dest, "wb") as f:
        f.write(header)
        f.flush()  # the header is on disk before the first tensor is computed
        behind = _WriteBehind(f)
        for spec in layout:
            tensor = get(spec.name)
            if isinstance(tensor, TensorChunks):
                _write_chunks(f, spec, tensor, cast, check_finite, bar, behind)
                del tensor
                continue
            if not isinstance(tensor, torch.Tensor):
                raise WeightspaceValueError(
                    f"`tensors[{spec.name!r}]` must be a torch.Tensor, got "
                    f"{type(tensor).__name__}; nothing was written"
                )
            if cast is not None and tensor.is_floating_point():
                tensor = tensor.to(cast)
            if tuple(tensor.shape) != spec.shape or tensor.dtype != spec.dtype:
                raise ShapeMismatchError(
                    f"tensor {spec.name!r} was planned as shape {list(spec.shape)} and dtype "
                    f"{spec.dtype}, but computing it gave shape {list(tensor.shape)} and dtype "
                    f"{tensor.dtype}; fix the `specs` (or the mapping's shape()/dtype()) so "
                    "they describe the tensors; nothing was written"
                )
            if check_finite and (tensor.is_floating_point() or tensor.is_complex()):
                raise_if_not_finite(spec.name, tensor)
            data = _tensor_bytes(spec.name, tensor)
            del tensor
            if data.nbytes != spec.nbytes:  # pragma: no cover - guarded by the checks above
                raise WeightspaceError(f"tensor {spec.name!r} has an unexpected byte size")
            f.write(data)
            del data
            bar.update(spec.nbytes)
            behind.wrote(spec.nbytes)
        f.flush()
        os.fsync(f.fileno())
    os.chmod(dest, 0o666 & ~_UMASK)


def _index_json(groups: Sequence[Sequence[str]], files: Sequence[str], total: int) -> str:
    weight_map = {name: file for group, file in zip(groups, files, strict=True) for name in group}
    index = {"metadata": {"total_size": total}, "weight_map": dict(sorted(weight_map.items()))}
    return json.dumps(index, indent=2, sort_keys=True) + "\n"


def _install_folder(tmp: Path, final: Path) -> None:
    """Move the finished folder ``tmp`` onto ``final``, replacing what is there."""
    if not final.exists() and not final.is_symlink():
        os.rename(tmp, final)
        return
    backup = Path(tempfile.mkdtemp(prefix=f".{final.name}.", suffix=".old", dir=final.parent))
    backup.rmdir()
    os.rename(final, backup)
    try:
        os.rename(tmp, final)
    except BaseException:
        os.rename(backup, final)
        raise
    if backup.is_dir() and not backup.is_symlink():
        shutil.rmtree(backup)
    else:
        backup.unlink()


# -- shards written one by one (the distributed merge) ---------------------------------------


def group_shards(
    names: Sequence[str], nbytes: Mapping[str, int], max_size: int | str | None
) -> list[list[str]]:
    """Group names, in order, into shards as :func:`save_state_dict` does (package-internal).

    Args:
        names: Tensor names, in output order.
        nbytes: Each tensor's size in bytes.
        max_size: The largest shard (bytes or a size such as ``"5GB"``); ``None``: one shard.

    Returns:
        The names of each shard; a tensor larger than ``max_size`` gets a shard of its own.
    """
    limit = None if max_size is None else parse_size(max_size)
    return _shards(names, nbytes, limit)


def write_shard(
    dest: Path,
    specs: Mapping[str, tuple[tuple[int, ...], torch.dtype]],
    get: Callable[[str], torch.Tensor | TensorChunks],
    *,
    metadata: Mapping[str, str] | None,
    check_finite: bool,
    bar: Any,
) -> int:
    """Write one safetensors file of a sharded checkpoint (package-internal).

    The streaming writer of :func:`save_state_dict`, for callers that assemble the folder
    themselves (see :func:`install_sharded`): the header first, then each tensor, computed
    by ``get`` when its turn comes. Not atomic: write into a temporary folder.

    Args:
        dest: The file to write.
        specs: ``name -> (shape, dtype)`` of its tensors (laid out as the reference writer
            does).
        get: Computes a tensor (or its chunks) by name.
        metadata: The header's ``__metadata__``.
        check_finite: Refuse NaN and infinite values.
        bar: A ``tqdm`` bar advanced by the bytes written.

    Returns:
        The size of the file in bytes.
    """
    _write_file(dest, plan_layout(specs), metadata, get, None, check_finite, bar)
    return dest.stat().st_size


def install_sharded(
    tmp: Path, final: Path, groups: Sequence[Sequence[str]], files: Sequence[str], total: int
) -> None:
    """Finish a sharded checkpoint written into ``tmp`` and move it onto ``final``.

    Package-internal. Writes ``model.safetensors.index.json`` (``files[i]`` holds
    ``groups[i]``; ``total`` is the size of the tensor data), gives the folder and the index
    the modes an ordinary ``open``/``mkdir`` would, and renames the folder into place,
    replacing what is there.

    Args:
        tmp: The folder holding the shards.
        final: The checkpoint's path.
        groups: The tensor names of each shard.
        files: The shards' file names.
        total: Total bytes of tensor data.
    """
    index = tmp / _INDEX_NAME
    index.write_text(_index_json(groups, files, total), encoding="utf-8")
    os.chmod(index, 0o666 & ~_UMASK)
    os.chmod(tmp, 0o777 & ~_UMASK)
    _install_folder(tmp, final)


def save_state_dict(
    tensors: Mapping[str, torch.Tensor],
    path: PathLike,
    *,
    metadata: Mapping[str, str] | None = None,
    max_shard_size: int | str | None = None,
    dtype: torch.dtype | None = None,
    specs: Mapping[str, tuple[Sequence[int], torch.dtype]] | None = None,
    inputs: Sequence[PathLike] = (),
    overwrite: bool = False,
    check_finite: bool = False,
    progress: bool = False,
) -> Path:
    """Write tensors to a safetensors file (or HF-style shards), streaming and atomically.

    **Streaming.** The layout is planned from shapes and dtypes alone, taken from ``specs``
    if given, else from ``tensors.shape(name)`` / ``tensors.dtype(name)`` if the mapping has
    them (a :class:`LazyStateDict`, a lazy task vector or merge). The header is written first;
    then each tensor is computed (``tensors[name]``), checked against its plan, written and
    released, in file order, so peak memory is about one tensor. A mapping with neither is
    read in full before writing (fine for an ordinary ``dict``, whose values are already in
    memory; for a lazy mapping, pass ``specs`` to keep memory flat).

    **Format.** Tensors are ordered as ``safetensors.torch.save_file`` orders them (by
    descending dtype rank, then by name), so the output is byte-identical to ``save_file``
    whenever ``metadata`` has at most one key (``save_file`` writes two or more keys in hash
    order; we sort them). With ``max_shard_size``, ``path`` is a folder that receives
    ``model-00001-of-0000N.safetensors`` shards (tensors grouped in the mapping's order, a
    new shard whenever the next tensor would pass the limit) and
    ``model.safetensors.index.json`` (``metadata.total_size`` and ``weight_map``); if all
    tensors fit in one shard, the folder holds a single ``model.safetensors``, as in Hugging
    Face. Every shard carries ``metadata``. Either layout opens with :func:`open_state_dict`.

    **Atomic.** Output goes to a hidden temporary file (a temporary folder when sharded) in
    the destination folder and is renamed into place at the end. An exception, a
    ``KeyboardInterrupt`` or a full disk leaves nothing under ``path`` (or the old content,
    with ``overwrite=True``) and removes the temporary. The temporary has an owner record
    beside it (``.NAME.<random>.tmp.owner``, locked while the write runs): a process killed
    with ``SIGKILL`` cannot remove its temporary, so the next write to the same ``path``
    removes temporaries whose owner is gone, and logs a warning that names them.

    Args:
        tensors: Names to tensors; values may be computed on access.
        path: A ``.safetensors`` file, or a folder when ``max_shard_size`` is given.
        metadata: Strings stored in the header's ``__metadata__`` (see :func:`provenance`).
        max_shard_size: Split the output into shards of at most this many bytes of tensor
            data: an int or a string such as ``"5GB"`` (see :func:`parse_size`).
        dtype: Cast floating-point tensors to this floating dtype on the way out; integer
            and bool tensors are written unchanged.
        specs: ``name -> (shape, dtype)`` of every tensor (before the ``dtype`` cast).
        inputs: Paths that the tensors are computed from; writing onto one is refused. The
            files of a :class:`LazyStateDict` passed as ``tensors`` are checked as well.
        overwrite: Replace an existing output. Without it an existing ``path`` is an error.
        check_finite: Refuse (and write nothing) if a floating tensor holds NaN or infinity.
        progress: Show a ``tqdm`` progress bar over the bytes written.

    Returns:
        The path written: the ``.safetensors`` file, or the folder when sharded.

    Raises:
        WeightspaceValueError: on a bad argument, an existing output without ``overwrite``,
            an output that is an input, or a non-finite tensor with ``check_finite``.
        ShapeMismatchError: if a computed tensor differs from its planned shape or dtype.
        OSError: if the disk is full or not writable (nothing is left behind).

    Example:
        >>> import tempfile, torch
        >>> from pathlib import Path
        >>> from weightspace.io import open_state_dict, save_state_dict
        >>> out = Path(tempfile.mkdtemp()) / "tiny.safetensors"
        >>> save_state_dict({"w": torch.ones(2, 3)}, out, metadata={"format": "pt"}).name
        'tiny.safetensors'
        >>> open_state_dict(out).shape("w")
        torch.Size([2, 3])
    """
    return write_checkpoint(
        tensors,
        path,
        metadata=metadata,
        max_shard_size=max_shard_size,
        dtype=dtype,
        specs=specs,
        inputs=inputs,
        overwrite=overwrite,
        check_finite=check_finite,
        progress=progress,
    )


def write_checkpoint(
    tensors: Mapping[str, Any],
    path: PathLike,
    *,
    metadata: Mapping[str, str] | None = None,
    max_shard_size: int | str | None = None,
    dtype: torch.dtype | None = None,
    specs: Mapping[str, tuple[Sequence[int], torch.dtype]] | None = None,
    inputs: Sequence[PathLike] = (),
    overwrite: bool = False,
    check_finite: bool = False,
    progress: bool = False,
    extra_files: Mapping[str, bytes | Path] | None = None,
) -> Path:
    """:func:`save_state_dict`, plus files added to a folder output (package-internal).

    Args:
        tensors: As for :func:`save_state_dict`.
        path: As for :func:`save_state_dict`.
        metadata: As for :func:`save_state_dict`.
        max_shard_size: As for :func:`save_state_dict`.
        dtype: As for :func:`save_state_dict`.
        specs: As for :func:`save_state_dict`.
        inputs: As for :func:`save_state_dict`.
        overwrite: As for :func:`save_state_dict`.
        check_finite: As for :func:`save_state_dict`.
        progress: As for :func:`save_state_dict`.
        extra_files: ``file name -> content`` (bytes, or a file to copy) written into the
            temporary folder beside the shards, before it is renamed into place (used for the
            ``config.json`` and tokenizer files of a merged model). Folder outputs only.

    Returns:
        The path written.
    """
    if not isinstance(tensors, Mapping):
        raise WeightspaceValueError(
            f"`tensors` must be a Mapping[str, Tensor], got {type(tensors).__name__}; pass "
            "`model.state_dict()` or a dict"
        )
    if metadata is not None and (
        not isinstance(metadata, Mapping)
        or not all(isinstance(k, str) and isinstance(v, str) for k, v in metadata.items())
    ):
        raise WeightspaceValueError(
            f"`metadata` must map str to str, got {metadata!r}; encode other values, e.g. "
            "with json.dumps, or use `weightspace.io.provenance`"
        )
    if dtype is not None and (not isinstance(dtype, torch.dtype) or not dtype.is_floating_point):
        raise WeightspaceValueError(
            f"`dtype` must be a floating torch.dtype (such as torch.bfloat16), got {dtype!r}"
        )
    max_size = None if max_shard_size is None else _parse_size(max_shard_size, "max_shard_size")
    if sys.byteorder != "little":  # pragma: no cover - no big-endian CI
        raise WeightspaceError("writing safetensors on a big-endian machine is not supported")

    final = Path(os.path.abspath(Path(path).expanduser()))
    if max_size is None and final.suffix != ".safetensors":
        raise WeightspaceValueError(
            f"`path` must end in '.safetensors', got {str(path)!r}; add the suffix, or pass "
            "`max_shard_size` to write a sharded checkpoint folder"
        )
    if max_size is not None and final.suffix in (".safetensors", ".json"):
        raise WeightspaceValueError(
            f"`path` must be a folder when `max_shard_size` is given, got {str(path)!r}; "
            "drop the suffix"
        )
    if final.exists() or final.is_symlink():
        if not overwrite:
            raise WeightspaceValueError(
                f"`path` {str(final)!r} already exists; pass `overwrite=True` to replace it"
            )
        if max_size is None and final.is_dir():
            raise WeightspaceValueError(
                f"`path` {str(final)!r} is an existing folder; a single-file output cannot "
                "replace it; remove it or choose another name"
            )
    _check_not_input(final, tensors, inputs)

    names, spec_map, values = _collect_specs(tensors, specs)
    planned = {
        n: (shape, dt if dtype is None or not dt.is_floating_point else dtype)
        for n, (shape, dt) in spec_map.items()
    }
    layouts_all = plan_layout(planned)
    nbytes = {s.name: s.nbytes for s in layouts_all}
    total = sum(nbytes.values())
    groups = _shards(names, nbytes, max_size)

    def get(name: str) -> torch.Tensor | TensorChunks:
        value: torch.Tensor | TensorChunks = values[name] if values is not None else tensors[name]
        return value

    meta = dict(metadata) if metadata is not None else None
    logger.info("writing %d tensors (%d bytes) to %s", len(names), total, final)
    with tqdm(total=total, unit="B", unit_scale=True, desc=final.name, disable=not progress) as bar:
        remove_stale_temporaries(final)
        if max_size is None:
            if extra_files:
                raise WeightspaceValueError(
                    "`extra_files` need a folder output; pass `max_shard_size`"
                )
            temp = Temporary.create(final, folder=False)
            try:
                _write_file(temp.path, layouts_all, meta, get, dtype, check_finite, bar)
                os.replace(temp.path, final)
            finally:
                with contextlib.suppress(FileNotFoundError):
                    temp.path.unlink()
                temp.release()
            return final
        temp = Temporary.create(final, folder=True)
        tmpdir = temp.path
        try:
            n = len(groups)
            files = (
                [_SINGLE_NAME]
                if n == 1
                else [f"model-{i + 1:05d}-of-{n:05d}.safetensors" for i in range(n)]
            )
            for group, file in zip(groups, files, strict=True):
                layout = plan_layout({name: planned[name] for name in group})
                _write_file(tmpdir / file, layout, meta, get, dtype, check_finite, bar)
            if n > 1:
                index = tmpdir / _INDEX_NAME
                index.write_text(_index_json(groups, files, total), encoding="utf-8")
                os.chmod(index, 0o666 & ~_UMASK)
            write_extra_files(tmpdir, extra_files or {})
            os.chmod(tmpdir, 0o777 & ~_UMASK)
            _install_folder(tmpdir, final)
        finally:
            if tmpdir.exists():
                shutil.rmtree(tmpdir, ignore_errors=True)
            temp.release()
    return final


def write_extra_files(folder: Path, files: Mapping[str, bytes | Path]) -> None:
    """Write ``name -> bytes`` or copy ``name -> file`` into ``folder`` (package-internal)."""
    for name, content in files.items():
        dest = folder / name
        if isinstance(content, bytes):
            dest.write_bytes(content)
        else:
            shutil.copyfile(content, dest)
        os.chmod(dest, 0o666 & ~_UMASK)
