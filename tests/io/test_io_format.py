"""The safetensors format layer: dtype names, the reference layout, header bytes and parsing."""

from __future__ import annotations

import json
import struct
from pathlib import Path

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from safetensors.torch import save, save_file

from weightspace import WeightspaceError, WeightspaceValueError
from weightspace.io._format import (
    MAX_HEADER_BYTES,
    TensorSpec,
    dtype_from_name,
    dtype_name,
    element_size,
    encode_header,
    plan_layout,
    read_header,
)

DTYPES = {
    "F64": torch.float64,
    "F32": torch.float32,
    "F16": torch.float16,
    "BF16": torch.bfloat16,
    "I64": torch.int64,
    "I32": torch.int32,
    "I16": torch.int16,
    "I8": torch.int8,
    "U8": torch.uint8,
    "BOOL": torch.bool,
}


def header_of(blob: bytes) -> bytes:
    (n,) = struct.unpack("<Q", blob[:8])
    return blob[: 8 + n]


# ------------------------------------------------------------------------ dtype names


@pytest.mark.parametrize(("name", "dtype"), DTYPES.items())
def test_dtype_names_round_trip(name: str, dtype: torch.dtype) -> None:
    assert dtype_name(dtype) == name
    assert dtype_from_name(name) is dtype


def test_unstorable_dtype_names_the_argument_and_lists_alternatives() -> None:
    with pytest.raises(WeightspaceValueError, match=r"^`w` is torch\.complex128, which safe"):
        dtype_name(torch.complex128, arg="w")
    with pytest.raises(WeightspaceValueError, match="convert it to one of .*float32"):
        dtype_name(torch.complex128)


def test_format_dtype_without_torch_equivalent() -> None:
    with pytest.raises(WeightspaceError, match=r"safetensors dtype 'F4' of tensor 'x' has no"):
        dtype_from_name("F4", where=" of tensor 'x'")


def test_element_sizes() -> None:
    assert [element_size(d) for d in (torch.float64, torch.bfloat16, torch.bool)] == [8, 2, 1]


# ------------------------------------------------------------------------ layout and header


def test_layout_orders_by_descending_dtype_rank_then_name() -> None:
    specs = {
        "b": ((2,), torch.float16),
        "a": ((3,), torch.float32),
        "c": ((1,), torch.int64),
        "d": ((2, 2), torch.bool),
        "aa": ((0,), torch.float32),
    }
    layout = plan_layout(specs)
    assert [s.name for s in layout] == ["c", "a", "aa", "b", "d"]
    assert [(s.begin, s.end) for s in layout] == [(0, 8), (8, 20), (20, 20), (20, 24), (24, 28)]
    assert layout[1] == TensorSpec("a", torch.float32, (3,), 8, 20)
    assert layout[1].nbytes == 12


def test_header_is_byte_identical_to_the_reference_writer() -> None:
    tensors = {
        "w": torch.ones(3, 2),
        "h": torch.zeros(5, dtype=torch.bfloat16),
        "n": torch.tensor(7),
        "m": torch.tensor([True, False]),
    }
    specs = {k: (tuple(v.shape), v.dtype) for k, v in tensors.items()}
    ours = encode_header(plan_layout(specs), {"format": "pt"})
    assert ours == header_of(save(tensors, metadata={"format": "pt"}))
    assert len(ours) % 8 == 0
    assert encode_header(plan_layout(specs), None) == header_of(save(tensors))


def test_header_puts_metadata_first_with_sorted_keys() -> None:
    raw = encode_header(plan_layout({"x": ((1,), torch.float32)}), {"b": "2", "a": "1"})
    text = raw[8:].decode().rstrip(" ")
    assert text.startswith('{"__metadata__":{"a":"1","b":"2"},"x":')
    assert json.loads(text)["x"] == {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]}


TENSORS = st.dictionaries(
    st.text(alphabet="abcxyz._0123456789", min_size=1, max_size=8),
    st.tuples(
        st.sampled_from(sorted(DTYPES)),
        st.lists(st.integers(0, 3), min_size=0, max_size=3),
    ),
    min_size=1,
    max_size=6,
)


@settings(max_examples=60, deadline=None)
@given(TENSORS, st.one_of(st.none(), st.text(max_size=12)))
def test_header_matches_the_reference_for_any_tensors(tensors: dict, note: str | None) -> None:
    made = {
        name: torch.zeros(shape, dtype=DTYPES[dtype]) for name, (dtype, shape) in tensors.items()
    }
    specs = {k: (tuple(v.shape), v.dtype) for k, v in made.items()}
    metadata = None if note is None else {"note": note}
    assert encode_header(plan_layout(specs), metadata) == header_of(save(made, metadata=metadata))


# ------------------------------------------------------------------------ reading headers


def test_read_header_reports_dtypes_shapes_sizes_and_offsets(tmp_path: Path) -> None:
    tensors = {"a": torch.arange(6.0).reshape(2, 3), "b": torch.tensor([1, 2], dtype=torch.int16)}
    path = tmp_path / "x.safetensors"
    save_file(tensors, path, metadata={"k": "v"})
    header = read_header(path)
    assert header.path == path
    assert header.metadata == {"k": "v"}
    assert header.tensors == {"a": ("F32", (2, 3), 24), "b": ("I16", (2,), 4)}
    data = path.read_bytes()
    assert header.header_bytes == 8 + struct.unpack("<Q", data[:8])[0]
    for name, t in tensors.items():
        start = header.offsets[name]
        raw = data[start : start + header.tensors[name][2]]
        assert raw == t.numpy().tobytes(), name


def write(path: Path, header: object, data: bytes = b"", *, length: int | None = None) -> Path:
    raw = json.dumps(header).encode() if not isinstance(header, bytes) else header
    n = len(raw) if length is None else length
    path.write_bytes(struct.pack("<Q", n) + raw + data)
    return path


@pytest.mark.parametrize(
    ("header", "data", "length", "why"),
    [
        (b"", b"", None, "the header is not UTF-8 JSON"),
        ({"a": 1}, b"", 10**6, r"header length 1000000 does not fit in a file of \d+ bytes"),
        (b"\xff\xfe", b"", None, "the header is not UTF-8 JSON"),
        ([1, 2], b"", None, "the header is not a JSON object"),
        ({"__metadata__": {"a": 1}}, b"", None, "`__metadata__` is not an object of strings"),
        (
            {"w": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]}},
            b"\0" * 4,
            None,
            r"the entry of tensor 'w' is malformed",
        ),
        (
            {"w": {"dtype": "F32", "shape": [-1], "data_offsets": [0, 0]}},
            b"",
            None,
            "the entry of tensor 'w' is malformed",
        ),
        ({"w": {"dtype": "F32", "shape": [1]}}, b"", None, "the entry of tensor 'w' is malformed"),
    ],
)
def test_malformed_files_are_refused(
    tmp_path: Path, header: object, data: bytes, length: int | None, why: str
) -> None:
    path = write(tmp_path / "bad.safetensors", header, data, length=length)
    with pytest.raises(WeightspaceError, match=rf"is not a valid safetensors file \(({why})"):
        read_header(path)


def test_too_short_file_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "short.safetensors"
    path.write_bytes(b"\x01\x02")
    with pytest.raises(WeightspaceError, match="the file has 2 bytes, fewer than the 8-byte"):
        read_header(path)


def test_header_longer_than_the_reference_limit_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "huge.safetensors"
    with open(path, "wb") as f:  # a sparse file: the length fits, only the limit is broken
        f.write(struct.pack("<Q", MAX_HEADER_BYTES + 1))
        f.truncate(MAX_HEADER_BYTES + 64)
    with pytest.raises(WeightspaceError, match=f"header length {MAX_HEADER_BYTES + 1} does not"):
        read_header(path)
