from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

import weightspace
from weightspace import WeightspaceValueError
from weightspace.io import open_state_dict, parse_size, provenance, save_state_dict


def test_provenance_fields() -> None:
    meta = provenance(
        "ties",
        ["base.safetensors", Path("ft.safetensors")],
        {"k": 0.2, "scales": (1.0, 0.5), "seed": torch.tensor(3), "out": Path("x")},
    )
    assert meta["format"] == "pt"
    assert meta["weightspace.method"] == "ties"
    assert meta["weightspace.version"] == weightspace.__version__
    assert json.loads(meta["weightspace.inputs"]) == ["base.safetensors", "ft.safetensors"]
    assert json.loads(meta["weightspace.parameters"]) == {
        "k": 0.2,
        "out": "x",
        "scales": [1.0, 0.5],
        "seed": 3,
    }
    assert all(isinstance(v, str) for v in meta.values())


def test_provenance_round_trips_through_header(tmp_path: Path) -> None:
    meta = provenance("task_arithmetic", ["a", "b"], {"scale": 0.3})
    save_state_dict({"w": torch.zeros(2)}, tmp_path / "m.safetensors", metadata=meta)
    assert dict(open_state_dict(tmp_path / "m.safetensors").metadata) == meta


def test_provenance_errors() -> None:
    with pytest.raises(WeightspaceValueError, match="`method` must be a non-empty string"):
        provenance("", [], {})
    with pytest.raises(WeightspaceValueError, match="wrap it in a list"):
        provenance("m", "base.safetensors", {})
    with pytest.raises(WeightspaceValueError, match="`parameters` must be JSON-encodable"):
        provenance("m", [], {"f": object()})
    with pytest.raises(WeightspaceValueError, match="`parameters` must be JSON-encodable"):
        provenance("m", [], {"x": float("nan")})
    with pytest.raises(WeightspaceValueError, match="str keys"):
        provenance("m", [], {1: 2})  # type: ignore[dict-item]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("5GB", 5 * 10**9),
        ("5gb", 5 * 10**9),
        ("500MB", 500 * 10**6),
        ("10KB", 10_000),
        ("2KiB", 2048),
        ("3MiB", 3 * 2**20),
        ("1GiB", 2**30),
        ("1.5GB", 1_500_000_000),
        (" 7 MB ", 7 * 10**6),
        ("1024", 1024),
        ("100B", 100),
        (4096, 4096),
    ],
)
def test_parse_size(text: str | int, expected: int) -> None:
    assert parse_size(text) == expected


@pytest.mark.parametrize(
    "junk", ["", "GB", "5 GBs", "five GB", "-1GB", "1e9", "0", 0, -5, 2.5, True, None]
)
def test_parse_size_junk(junk: object) -> None:
    with pytest.raises(WeightspaceValueError, match="`size` must"):
        parse_size(junk)  # type: ignore[arg-type]
