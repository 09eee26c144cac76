"""The safetensors file format: dtype names, header parsing and header serialisation.

A safetensors file is ``<u64 little-endian header length N><N bytes of JSON header><data>``.
The header maps each tensor name to ``{"dtype", "shape", "data_offsets"}`` (offsets relative
to the start of the data section) and may hold a ``"__metadata__"`` object of string to
string. The reference writer pads the JSON with spaces so that ``8 + N`` is a multiple of 8
and lays tensors out by descending dtype rank, then by name; :func:`plan_layout` reproduces
that order so that our streaming writer produces the same bytes.
"""

from __future__ import annotations

import json
import math
import struct
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from weightspace._errors import WeightspaceError, WeightspaceValueError

__all__ = [
    "MAX_HEADER_BYTES",
    "TensorSpec",
    "dtype_from_name",
    "dtype_name",
    "encode_header",
    "plan_layout",
    "read_header",
]

MAX_HEADER_BYTES = 100_000_000
"""The largest header the reference reader accepts (100 MB)."""

# Dtype names of the format, in the order of the reference implementation's ``Dtype`` enum
# (ascending). Tensors are laid out by descending rank, then by name. F4/F6 have no torch dtype.
_RANK_ORDER = (
    "BOOL",
    "F4",
    "F6_E2M3",
    "F6_E3M2",
    "U8",
    "I8",
    "F8_E5M2",
    "F8_E4M3",
    "F8_E8M0",
    "F8_E4M3FNUZ",
    "F8_E5M2FNUZ",
    "I16",
    "U16",
    "F16",
    "BF16",
    "I32",
    "U32",
    "F32",
    "C64",
    "F64",
    "I64",
    "U64",
)
_RANK = {name: i for i, name in enumerate(_RANK_ORDER)}

_TORCH_NAMES: dict[str, str] = {
    "F64": "float64",
    "F32": "float32",
    "F16": "float16",
    "BF16": "bfloat16",
    "I64": "int64",
    "I32": "int32",
    "I16": "int16",
    "I8": "int8",
    "U8": "uint8",
    "U16": "uint16",
    "U32": "uint32",
    "U64": "uint64",
    "BOOL": "bool",
    "C64": "complex64",
    "F8_E4M3": "float8_e4m3fn",
    "F8_E5M2": "float8_e5m2",
    "F8_E4M3FNUZ": "float8_e4m3fnuz",
    "F8_E5M2FNUZ": "float8_e5m2fnuz",
    "F8_E8M0": "float8_e8m0fnu",
}
_FROM_NAME: dict[str, torch.dtype] = {}
for _name, _attr in _TORCH_NAMES.items():
    _dt = getattr(torch, _attr, None)
    if isinstance(_dt, torch.dtype):
        _FROM_NAME[_name] = _dt
_TO_NAME: dict[torch.dtype, str] = {dt: name for name, dt in _FROM_NAME.items()}


def dtype_name(dtype: torch.dtype, *, arg: str = "dtype") -> str:
    """Return the safetensors name of a torch dtype (``torch.float32`` -> ``"F32"``).

    Raises:
        WeightspaceValueError: if safetensors cannot store the dtype.
    """
    try:
        return _TO_NAME[dtype]
    except KeyError:
        supported = ", ".join(str(d).removeprefix("torch.") for d in _TO_NAME)
        raise WeightspaceValueError(
            f"`{arg}` is {dtype}, which safetensors cannot store; convert it to one of {supported}"
        ) from None


def dtype_from_name(name: str, *, where: str = "") -> torch.dtype:
    """Return the torch dtype of a safetensors dtype name (``"BF16"`` -> ``torch.bfloat16``).

    Raises:
        WeightspaceError: if this torch has no dtype for the name.
    """
    try:
        return _FROM_NAME[name]
    except KeyError:
        raise WeightspaceError(
            f"safetensors dtype {name!r}{where} has no torch equivalent in torch "
            f"{torch.__version__}; upgrade torch or convert the tensor"
        ) from None


def element_size(dtype: torch.dtype) -> int:
    """Bytes per element of ``dtype``."""
    return torch.empty((), dtype=dtype).element_size()


@dataclass(frozen=True)
class TensorSpec:
    """Name, dtype and shape of one tensor, and where its bytes lie in the data section."""

    name: str
    dtype: torch.dtype
    shape: tuple[int, ...]
    begin: int
    end: int

    @property
    def nbytes(self) -> int:
        """Size of the tensor's data in bytes."""
        return self.end - self.begin


def plan_layout(specs: Mapping[str, tuple[tuple[int, ...], torch.dtype]]) -> list[TensorSpec]:
    """Order tensors as the reference writer does and assign their data offsets.

    Args:
        specs: ``name -> (shape, dtype)``.

    Returns:
        One :class:`TensorSpec` per tensor, in file order (descending dtype rank, then name).
    """
    keyed = sorted(specs.items(), key=lambda kv: (-_RANK[dtype_name(kv[1][1])], kv[0]))
    out: list[TensorSpec] = []
    offset = 0
    for name, (shape, dtype) in keyed:
        nbytes = math.prod(shape) * element_size(dtype)
        out.append(TensorSpec(name, dtype, tuple(shape), offset, offset + nbytes))
        offset += nbytes
    return out


def encode_header(layout: Sequence[TensorSpec], metadata: Mapping[str, str] | None) -> bytes:
    """Serialise the header exactly as the reference writer does, length prefix included.

    The JSON is compact, ``__metadata__`` comes first (its keys sorted, for determinism; the
    reference writer uses hash order, which only matters when there are two or more keys), and
    the JSON is padded with spaces so that the data section starts at a multiple of 8.

    Returns:
        ``<u64 length><JSON>`` ready to be written at the start of the file.
    """
    header: dict[str, Any] = {}
    if metadata is not None:
        header["__metadata__"] = {k: metadata[k] for k in sorted(metadata)}
    for spec in layout:
        header[spec.name] = {
            "dtype": dtype_name(spec.dtype),
            "shape": list(spec.shape),
            "data_offsets": [spec.begin, spec.end],
        }
    raw = json.dumps(header, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
    raw += b" " * ((8 - len(raw) % 8) % 8)
    return struct.pack("<Q", len(raw)) + raw


@dataclass(frozen=True)
class Header:
    """What the header of one safetensors file says, read without touching tensor data."""

    path: Path
    header_bytes: int
    tensors: dict[str, tuple[str, tuple[int, ...], int]]  # name -> (dtype name, shape, nbytes)
    metadata: dict[str, str]
    offsets: dict[str, int] = field(default_factory=dict)  # name -> first byte in the file


def read_header(path: Path) -> Header:
    """Parse the header of a safetensors file (8-byte length, then JSON).

    Raises:
        WeightspaceError: if the file is not a well-formed safetensors file.
    """

    def bad(why: str) -> WeightspaceError:
        return WeightspaceError(
            f"{str(path)!r} is not a valid safetensors file ({why}); re-create it with "
            "`weightspace.io.save_state_dict` or `safetensors.torch.save_file`"
        )

    size = path.stat().st_size
    with open(path, "rb") as f:
        prefix = f.read(8)
        if len(prefix) < 8:
            raise bad(f"the file has {size} bytes, fewer than the 8-byte header length")
        (n,) = struct.unpack("<Q", prefix)
        if n > MAX_HEADER_BYTES or 8 + n > size:
            raise bad(f"header length {n} does not fit in a file of {size} bytes")
        raw = f.read(n)
    try:
        parsed = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise bad(f"the header is not UTF-8 JSON: {exc}") from None
    if not isinstance(parsed, dict):
        raise bad("the header is not a JSON object")
    meta_raw = parsed.pop("__metadata__", None) or {}
    if not isinstance(meta_raw, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in meta_raw.items()
    ):
        raise bad("`__metadata__` is not an object of strings")
    tensors: dict[str, tuple[str, tuple[int, ...], int]] = {}
    offsets: dict[str, int] = {}
    data_size = size - 8 - n
    for name, info in parsed.items():
        try:
            dtype = info["dtype"]
            shape = tuple(info["shape"])
            begin, end = info["data_offsets"]
            ok = (
                isinstance(dtype, str)
                and all(isinstance(d, int) and d >= 0 for d in shape)
                and isinstance(begin, int)
                and isinstance(end, int)
                and 0 <= begin <= end <= data_size
            )
        except (KeyError, TypeError, ValueError):
            ok = False
        if not ok:
            raise bad(f"the entry of tensor {name!r} is malformed: {info!r}")
        tensors[name] = (dtype, shape, end - begin)
        offsets[name] = 8 + n + begin
    return Header(path, 8 + n, tensors, dict(meta_raw), offsets)
