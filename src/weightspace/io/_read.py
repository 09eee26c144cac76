"""Lazy reading of checkpoints: single safetensors files, HF sharded folders, legacy pickles."""

from __future__ import annotations

import difflib
import json
import logging
import os
import pickle
import sys
import threading
from collections.abc import Iterator, Mapping
from pathlib import Path
from types import MappingProxyType
from typing import Any

import torch
from safetensors import safe_open

from weightspace._errors import WeightspaceError, WeightspaceValueError
from weightspace.io._format import dtype_from_name, dtype_name, read_header

__all__ = ["LazyStateDict", "PathLike", "open_state_dict"]

logger = logging.getLogger(__name__)

PathLike = str | os.PathLike[str]
"""A path given as a string or a :class:`os.PathLike`."""

_PICKLE_SUFFIXES = (".bin", ".pt", ".pth")
_FOLDER_CANDIDATES = (
    "model.safetensors",
    "model.safetensors.index.json",
    "pytorch_model.bin",
    "pytorch_model.bin.index.json",
)


class _MissingKeyError(WeightspaceError, KeyError):
    """A name that a :class:`LazyStateDict` does not hold (also a :class:`KeyError`)."""

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else ""


class _Entry:
    """Where one tensor lives and, when known without reading it, its dtype and shape."""

    __slots__ = ("dtype_name", "file", "nbytes", "offset", "shape")

    def __init__(
        self,
        file: Path,
        dtype_name: str | None = None,
        shape: tuple[int, ...] | None = None,
        nbytes: int | None = None,
        offset: int | None = None,
    ) -> None:
        self.file = file
        self.dtype_name = dtype_name
        self.shape = shape
        self.nbytes = nbytes
        self.offset = offset


def _is_pickle(path: Path) -> bool:
    return path.suffix.lower() in _PICKLE_SUFFIXES


def _bad_source(
    source: object, why: str, fix: str, argument: str = "source"
) -> WeightspaceValueError:
    return WeightspaceValueError(f"`{argument}` {str(source)!r} {why}; {fix}")


def _resolve(source: PathLike, argument: str = "source") -> Path:
    """Turn ``source`` into the path of one weights file or of one index JSON."""
    path = Path(source).expanduser()
    if not path.exists():
        raise _bad_source(
            source,
            "does not exist",
            "pass the path of a `.safetensors` file, of a checkpoint folder or of a "
            "`model.safetensors.index.json`",
            argument,
        )
    if path.is_dir():
        for name in _FOLDER_CANDIDATES:
            if (path / name).is_file():
                return path / name
        singles = sorted(path.glob("*.safetensors"))
        indexes = sorted(path.glob("*.safetensors.index.json"))
        if len(indexes) == 1:
            return indexes[0]
        if len(singles) == 1 and not indexes:
            return singles[0]
        listing = sorted(p.name for p in path.iterdir())
        shown = listing[:10] + (["..."] if len(listing) > 10 else [])
        raise _bad_source(
            source,
            f"is a folder without a unique checkpoint (it holds {shown})",
            "it must hold `model.safetensors`, `model.safetensors.index.json` or exactly one "
            "`.safetensors` file; pass the file you mean directly",
            argument,
        )
    suffix = path.suffix.lower()
    if suffix in (".safetensors", ".json") or suffix in _PICKLE_SUFFIXES:
        return path
    raise _bad_source(
        source,
        f"has the unknown suffix {path.suffix!r}",
        "pass a `.safetensors` file, an index `.json`, a legacy `.bin`/`.pt`/`.pth` file or a "
        "checkpoint folder",
        argument,
    )


def _parse_index(index: Path, argument: str = "source") -> dict[str, Path]:
    """Read an HF index JSON and return ``tensor name -> shard path`` (shards checked)."""
    fix = (
        "an index must be a JSON object with a `weight_map` object mapping each tensor name to "
        "a shard file name in the same folder; regenerate it with "
        "`weightspace.io.save_state_dict(..., max_shard_size=...)`"
    )
    try:
        parsed = json.loads(index.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise _bad_source(index, f"is not a readable JSON file ({exc})", fix, argument) from None
    weight_map = parsed.get("weight_map") if isinstance(parsed, dict) else None
    if not isinstance(weight_map, dict) or not weight_map:
        got = sorted(parsed) if isinstance(parsed, dict) else type(parsed).__name__
        raise _bad_source(index, f"has no non-empty `weight_map` (got {got})", fix, argument)
    out: dict[str, Path] = {}
    missing: dict[str, int] = {}
    for name, shard in weight_map.items():
        if (
            not isinstance(shard, str)
            or not shard
            or Path(shard).is_absolute()
            or ".." in Path(shard).parts
        ):
            raise _bad_source(
                index,
                f"maps tensor {name!r} to {shard!r}, which is not a file name in its folder",
                fix,
                argument,
            )
        path = Path(os.path.abspath(index.parent / shard))
        if not path.is_file():
            missing[shard] = missing.get(shard, 0) + 1
        out[name] = path
    if missing:
        shown = ", ".join(f"{s!r} ({n} tensors)" for s, n in sorted(missing.items())[:5])
        raise _bad_source(
            index,
            f"names {len(missing)} shard file(s) that do not exist in {str(index.parent)!r}: "
            f"{shown}",
            "download the missing shards next to the index, or regenerate the checkpoint",
            argument,
        )
    return out


def _load_pickle(path: Path, argument: str = "source") -> dict[str, torch.Tensor]:
    """Read a legacy ``torch.save`` file with ``weights_only=True``; refuse anything else."""
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        detail = next(
            (ln.strip() for ln in str(exc).splitlines() if "WeightsUnpickler error" in ln),
            str(exc).splitlines()[0] if str(exc) else type(exc).__name__,
        )
        raise WeightspaceError(
            f"`{argument}` {str(path)!r} is a general pickle, not a plain state dict: "
            f"`torch.load(weights_only=True)` refused it ({detail}). weightspace never "
            "unpickles arbitrary objects, because unpickling can run arbitrary code. If you "
            "trust the file, convert it once in a separate session: "
            "`sd = torch.load(path, weights_only=False)`, keep only its tensors "
            "(`{k: v for k, v in sd.items() if isinstance(v, torch.Tensor)}`), and write them "
            "with `weightspace.io.save_state_dict(tensors, 'model.safetensors')`"
        ) from None
    except (RuntimeError, EOFError, OSError) as exc:
        raise WeightspaceError(
            f"`{argument}` {str(path)!r} could not be read as a `torch.save` file ({exc}); check "
            "that it is complete and was written by `torch.save`"
        ) from None
    if not isinstance(obj, Mapping):
        raise WeightspaceError(
            f"`{argument}` {str(path)!r} holds a {type(obj).__name__}, not a state dict (a mapping "
            "of names to tensors); save `model.state_dict()` instead"
        )
    bad = [k for k, v in obj.items() if not (isinstance(k, str) and isinstance(v, torch.Tensor))]
    if bad:
        nested = [k for k in bad if isinstance(obj[k], Mapping)]
        hint = (
            f"its tensors seem to be under {nested[0]!r}; extract `obj[{nested[0]!r}]` and "
            "save that with `weightspace.io.save_state_dict`"
            if nested
            else "keep only its tensors and save them with `weightspace.io.save_state_dict`"
        )
        raise WeightspaceError(
            f"`{argument}` {str(path)!r} is not a plain state dict: {len(bad)} entries are not "
            f"name -> tensor pairs (e.g. {bad[:3]!r}); {hint}"
        )
    return {k: v for k, v in obj.items()}


class LazyStateDict(Mapping[str, torch.Tensor]):
    """An immutable, lazily read mapping of tensor names to tensors of a checkpoint on disk.

    Names, shapes and dtypes are known as soon as the object exists (they come from the
    safetensors headers, which are a few kilobytes); a tensor's data is read only when it is
    looked up, one tensor at a time through :func:`safetensors.safe_open`. One handle per shard
    is opened on first use and kept. Each lookup returns a fresh tensor, so mutating it does
    not change the checkpoint or later lookups.

    Legacy ``torch.save`` files (``.bin``/``.pt``/``.pth``) cannot be read per tensor: they
    are read whole with ``torch.load(weights_only=True)`` and kept in memory, a single file
    when it is opened, a shard named by an index when one of its tensors, shapes or dtypes
    is first needed. :meth:`close` drops them.

    Args:
        source: A ``.safetensors`` file, a folder holding ``model.safetensors`` or an HF
            sharded checkpoint (``model.safetensors.index.json``), the path of an index JSON,
            or a legacy ``.bin``/``.pt``/``.pth`` state dict.
        device: Where returned tensors live (``"cpu"``, ``"cuda:0"``, ...).

    Raises:
        WeightspaceValueError: if ``source`` does not exist, is a malformed index or names a
            shard that does not exist.
        WeightspaceError: if a file is not a valid checkpoint, or a pickle is refused.

    Example:
        >>> sd = open_state_dict("model.safetensors")  # doctest: +SKIP
        >>> sd.shape("fc.weight"), sd.bytes_read  # doctest: +SKIP
        (torch.Size([10, 784]), 0)
        >>> w = sd["fc.weight"]  # reads this tensor only  # doctest: +SKIP
    """

    def __init__(self, source: PathLike, *, device: str | torch.device = "cpu") -> None:
        self._setup(source, device, "source")

    @classmethod
    def _named(
        cls, source: PathLike, *, argument: str, device: str | torch.device = "cpu"
    ) -> LazyStateDict:
        """Open ``source`` as :meth:`__init__` does; errors call it ``argument``."""
        self = cls.__new__(cls)
        self._setup(source, device, argument)
        return self

    def _setup(self, source: PathLike, device: str | torch.device, argument: str) -> None:
        self._argument = argument
        self._source = Path(source).expanduser()
        self._device = str(device)
        self._lock = threading.Lock()
        self._handles: dict[Path, Any] = {}
        self._loaded: dict[Path, dict[str, torch.Tensor]] = {}
        self._bytes_read = 0
        self._metadata: dict[str, str] = {}
        self._entries: dict[str, _Entry] = {}
        self._build(_resolve(source, argument))

    # -- construction ----------------------------------------------------------------------

    def _build(self, resolved: Path) -> None:
        if resolved.suffix.lower() == ".json":
            weight_map = _parse_index(resolved, self._argument)
        elif _is_pickle(resolved):
            file = Path(os.path.abspath(resolved))
            self._entries = {name: _Entry(file) for name in self._load(file)}
            self._fill_from_pickle(file)
            return
        else:
            weight_map = None
        files = (
            sorted(set(weight_map.values()))
            if weight_map is not None
            else [Path(os.path.abspath(resolved))]
        )
        headers = {}
        for file in files:
            if _is_pickle(file):
                continue
            header = read_header(file)
            headers[file] = header
        if files and files[0] in headers:
            self._metadata = dict(headers[files[0]].metadata)
        if weight_map is None:
            header = headers[files[0]]
            for name in sorted(header.tensors):
                dtype, shape, nbytes = header.tensors[name]
                offset = header.offsets.get(name)
                self._entries[name] = _Entry(files[0], dtype, shape, nbytes, offset)
            return
        for name, file in weight_map.items():
            if file not in headers:  # a pickled shard, described when first read
                self._entries[name] = _Entry(file)
                continue
            info = headers[file].tensors.get(name)
            if info is None:
                raise _bad_source(
                    resolved,
                    f"says tensor {name!r} is in {file.name!r}, but that shard does not hold it",
                    "regenerate the index, or re-download the checkpoint",
                    self._argument,
                )
            self._entries[name] = _Entry(file, *info, headers[file].offsets.get(name))

    def _load(self, file: Path) -> dict[str, torch.Tensor]:
        with self._lock:
            if file not in self._loaded:
                logger.debug("reading legacy checkpoint %s whole", file)
                self._loaded[file] = _load_pickle(file, self._argument)
            return self._loaded[file]

    def _fill_from_pickle(self, file: Path) -> None:
        tensors = self._load(file)
        for name, entry in self._entries.items():
            if entry.file == file and entry.shape is None:
                if name not in tensors:
                    raise WeightspaceError(
                        f"the index of {str(self._source)!r} says tensor {name!r} is in "
                        f"{file.name!r}, but that file does not hold it; regenerate the index"
                    )
                t = tensors[name]
                entry.dtype_name = dtype_name(t.dtype, arg=name)
                entry.shape = tuple(t.shape)
                entry.nbytes = t.numel() * t.element_size()

    def _entry(self, name: str) -> _Entry:
        try:
            entry = self._entries[name]
        except KeyError:
            raise self._missing(name) from None
        if entry.shape is None:
            self._fill_from_pickle(entry.file)
        return entry

    def _byte_range(self, name: str) -> tuple[Path, int, int] | None:
        """``(file, offset, nbytes)`` of tensor ``name``'s raw data, for positional reads.

        Package-internal (the chunked merge of :func:`weightspace.merge.run_merge` reads
        element ranges with it). ``None`` when the tensor cannot be read that way: a legacy
        pickle, a device other than the CPU, an empty tensor, or no offset in the header.
        The bytes are in the file's (little-endian) order; :meth:`dtype` and :meth:`shape`
        describe them.
        """
        entry = self._entry(name)
        if (
            entry.offset is None
            or not entry.nbytes
            or self._device != "cpu"
            or _is_pickle(entry.file)
        ):
            return None
        return entry.file, entry.offset, entry.nbytes

    def _missing(self, name: object) -> _MissingKeyError:
        close = difflib.get_close_matches(str(name), list(self._entries), n=3)
        hint = f"; did you mean {close}?" if close else ""
        return _MissingKeyError(
            f"{name!r} is not a tensor of {str(self._source)!r} ({len(self)} tensors){hint}"
        )

    # -- Mapping ---------------------------------------------------------------------------

    def __getitem__(self, name: str) -> torch.Tensor:
        entry = self._entry(name)
        if _is_pickle(entry.file):
            tensor = self._load(entry.file)[name].clone().to(self._device)
        elif entry.offset is not None and self._device == "cpu" and entry.nbytes:
            tensor = self._read_cpu(entry)
        else:
            tensor = self._handle(entry.file).get_tensor(name)
            if tensor.device.type == "cpu":
                # safe_open returns CPU tensors that view the handle's private memory map, so an
                # in-place change would show in later lookups; hand out an owned copy instead.
                tensor = tensor.clone()
        with self._lock:
            self._bytes_read += entry.nbytes or 0
        return tensor

    def _read_cpu(self, entry: _Entry) -> torch.Tensor:
        """Read one tensor's bytes with positional reads into a new CPU tensor.

        Faster than ``safe_open(...).get_tensor(name).clone()`` (one copy instead of a
        page-faulting memory map plus a copy), and the file's pages never enter this
        process's resident set: reading a checkpoint larger than memory keeps RSS at about
        one tensor.
        """
        assert entry.shape is not None
        assert entry.dtype_name is not None
        assert entry.offset is not None
        assert entry.nbytes is not None
        dtype = dtype_from_name(entry.dtype_name)
        tensor = torch.empty(entry.shape, dtype=dtype)
        view = tensor.reshape(-1).view(torch.uint8).numpy().data
        done = 0
        with open(entry.file, "rb", buffering=0) as f:
            f.seek(entry.offset)
            while done < entry.nbytes:
                n = f.readinto(view[done:])
                if not n:
                    raise WeightspaceError(
                        f"{str(entry.file)!r} ended {entry.nbytes - done} bytes before the end "
                        "of a tensor its header describes; the file is truncated, re-create it"
                    )
                done += n
        if sys.byteorder != "little" and tensor.element_size() > 1:  # pragma: no cover
            tensor = tensor.view(-1).view(torch.uint8).reshape(-1, tensor.element_size())
            tensor = tensor.flip(1).contiguous().view(dtype).reshape(entry.shape)
        return tensor

    def _handle(self, file: Path) -> Any:
        with self._lock:
            handle = self._handles.get(file)
            if handle is None:
                logger.debug("opening %s", file)
                handle = safe_open(str(file), framework="pt", device=self._device)
                self._handles[file] = handle
            return handle

    def __iter__(self) -> Iterator[str]:
        return iter(self._entries)

    def __len__(self) -> int:
        return len(self._entries)

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def __eq__(self, other: object) -> bool:
        # Comparing contents would read every tensor; equality is identity.
        return self is other

    def __hash__(self) -> int:
        return id(self)

    def __repr__(self) -> str:
        return (
            f"LazyStateDict({str(self._source)!r}, tensors={len(self)}, "
            f"files={len(self.files)}, bytes_read={self._bytes_read})"
        )

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state["_lock"] = None
        state["_handles"] = {}
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._lock = threading.Lock()

    def __enter__(self) -> LazyStateDict:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- metadata --------------------------------------------------------------------------

    def shape(self, name: str) -> torch.Size:
        """Return the shape of tensor ``name`` without reading its data.

        Args:
            name: A tensor name.

        Returns:
            The tensor's shape.

        Raises:
            KeyError: if there is no such tensor (a :class:`~weightspace.WeightspaceError`).

        Example:
            >>> open_state_dict("model.safetensors").shape("fc.weight")  # doctest: +SKIP
            torch.Size([10, 784])
        """
        shape = self._entry(name).shape
        assert shape is not None
        return torch.Size(shape)

    def dtype(self, name: str) -> torch.dtype:
        """Return the dtype of tensor ``name`` without reading its data.

        Args:
            name: A tensor name.

        Returns:
            The tensor's dtype.

        Raises:
            KeyError: if there is no such tensor (a :class:`~weightspace.WeightspaceError`).
            WeightspaceError: if the file's dtype has no torch equivalent.

        Example:
            >>> open_state_dict("model.safetensors").dtype("fc.weight")  # doctest: +SKIP
            torch.float32
        """
        entry = self._entry(name)
        assert entry.dtype_name is not None
        return dtype_from_name(entry.dtype_name, where=f" of tensor {name!r}")

    def nbytes(self, name: str) -> int:
        """Return the size in bytes of tensor ``name``'s data, without reading it.

        Args:
            name: A tensor name.

        Returns:
            The number of bytes that reading the tensor costs.

        Raises:
            KeyError: if there is no such tensor (a :class:`~weightspace.WeightspaceError`).

        Example:
            >>> open_state_dict("model.safetensors").nbytes("fc.weight")  # doctest: +SKIP
            31360
        """
        nbytes = self._entry(name).nbytes
        assert nbytes is not None
        return nbytes

    def source_file(self, name: str) -> Path:
        """Return the file (the shard, for a sharded checkpoint) that holds tensor ``name``.

        Args:
            name: A tensor name.

        Returns:
            The path of the file.

        Raises:
            KeyError: if there is no such tensor (a :class:`~weightspace.WeightspaceError`).

        Example:
            >>> open_state_dict("ckpt/").source_file("lm_head.weight").name  # doctest: +SKIP
            'model-00002-of-00002.safetensors'
        """
        try:
            return self._entries[name].file
        except KeyError:
            raise self._missing(name) from None

    @property
    def files(self) -> tuple[Path, ...]:
        """The files this checkpoint is read from (shards in name order; no index JSON)."""
        return tuple(sorted({e.file for e in self._entries.values()}))

    @property
    def source(self) -> Path:
        """The path this object was opened from, as given."""
        return self._source

    @property
    def metadata(self) -> Mapping[str, str]:
        """The header's ``__metadata__`` (read-only; empty when there is none).

        For a sharded checkpoint this is the ``__metadata__`` of the first shard (by name);
        weightspace and HF write the same metadata into every shard.
        """
        return MappingProxyType(self._metadata)

    @property
    def bytes_read(self) -> int:
        """Total bytes of tensor data returned by lookups so far (for benchmarks and tests)."""
        return self._bytes_read

    def close(self) -> None:
        """Drop the open file handles and cached legacy files; later lookups reopen them.

        Example:
            >>> with open_state_dict("model.safetensors") as sd:  # doctest: +SKIP
            ...     w = sd["fc.weight"]
        """
        with self._lock:
            self._handles.clear()
            self._loaded.clear()


def open_state_dict(source: PathLike, *, device: str | torch.device = "cpu") -> LazyStateDict:
    """Open a checkpoint lazily: names, shapes and dtypes now, tensor data on lookup.

    Args:
        source: A ``.safetensors`` file; a folder holding ``model.safetensors`` or an HF
            sharded checkpoint (``model.safetensors.index.json`` with a ``weight_map``; also
            ``pytorch_model.bin[.index.json]``, or a single ``*.safetensors``); the path of an
            index JSON; or a legacy ``.bin``/``.pt``/``.pth`` file, which is read with
            ``torch.load(map_location="cpu", weights_only=True)`` only.
        device: Where returned tensors live.

    Returns:
        A read-only mapping from tensor names to tensors; see :class:`LazyStateDict`.

    Raises:
        WeightspaceValueError: if ``source`` does not exist, is a malformed index or names
            shards that do not exist.
        WeightspaceError: if a file is not a valid checkpoint, or a legacy file is a general
            pickle (which is refused because unpickling can run arbitrary code).

    Example:
        >>> sd = open_state_dict("checkpoints/llama/")  # doctest: +SKIP
        >>> len(sd), sd.bytes_read  # doctest: +SKIP
        (291, 0)
    """
    return LazyStateDict(source, device=device)
