"""The state-dict layer: `as_state_dict`, `shape_of`, `dtype_of`."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from weightspace import TaskVector, WeightspaceError, WeightspaceValueError
from weightspace.io import LazyStateDict, as_state_dict, dtype_of, open_state_dict, shape_of


@pytest.fixture
def tensors() -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    return {
        "enc.weight": torch.randn(32, 16, generator=g),
        "enc.bias": torch.randn(32, generator=g).half(),
        "steps": torch.tensor(7),
    }


@pytest.fixture
def single(tmp_path: Path, tensors: dict[str, torch.Tensor]) -> Path:
    path = tmp_path / "model.safetensors"
    save_file(tensors, path)
    return path


def test_module_is_a_detached_read_only_view() -> None:
    model = torch.nn.Sequential(torch.nn.Linear(2, 2), torch.nn.BatchNorm1d(2))
    sd = as_state_dict(model)
    assert list(sd) == list(model.state_dict())
    assert not any(t.requires_grad for t in sd.values())
    # shares memory with the module: no copy
    assert sd["0.weight"].data_ptr() == model[0].weight.data_ptr()
    with pytest.raises(TypeError):
        sd["x"] = torch.zeros(1)  # type: ignore[index]


def test_mappings_are_returned_as_they_are(single: Path, tensors: dict[str, torch.Tensor]) -> None:
    assert as_state_dict(tensors) is tensors
    lazy = open_state_dict(single)
    assert as_state_dict(lazy) is lazy
    tv = TaskVector({"w": torch.ones(2)})
    assert as_state_dict(tv) is tv


def test_paths_open_lazily(single: Path, tensors: dict[str, torch.Tensor]) -> None:
    for source in (single, str(single), single.parent):
        sd = as_state_dict(source)
        assert isinstance(sd, LazyStateDict)
        assert list(sd) == sorted(tensors)
        assert sd.bytes_read == 0
    assert torch.equal(as_state_dict(single)["enc.weight"], tensors["enc.weight"])


def test_sharded_folder(tmp_path: Path) -> None:
    save_file({"a": torch.ones(2)}, tmp_path / "model-00001-of-00002.safetensors")
    save_file({"b": torch.zeros(3)}, tmp_path / "model-00002-of-00002.safetensors")
    index = {
        "metadata": {},
        "weight_map": {
            "a": "model-00001-of-00002.safetensors",
            "b": "model-00002-of-00002.safetensors",
        },
    }
    (tmp_path / "model.safetensors.index.json").write_text(json.dumps(index))
    sd = as_state_dict(tmp_path)
    assert sorted(sd) == ["a", "b"]
    assert shape_of(sd, "b") == torch.Size([3])
    assert torch.equal(sd["a"], torch.ones(2))


def test_errors_name_the_argument(tmp_path: Path) -> None:
    with pytest.raises(WeightspaceValueError, match=r"^`state_dict` must be an nn\.Module, a Map"):
        as_state_dict(3)  # type: ignore[arg-type]
    with pytest.raises(WeightspaceValueError, match=r"^`base` must be an nn\.Module.*got int"):
        as_state_dict(3, argument="base")  # type: ignore[arg-type]
    with pytest.raises(
        WeightspaceValueError, match=r"^`finetuned` must map names \(str\) to tensors, but 1 "
    ):
        as_state_dict({"n": 1.0}, argument="finetuned")  # type: ignore[dict-item]
    missing = tmp_path / "nope.safetensors"
    with pytest.raises(
        WeightspaceValueError, match=r"^`base` '.*nope\.safetensors' does not exist"
    ):
        as_state_dict(missing, argument="base")
    with pytest.raises(WeightspaceValueError, match=r"^`base` '.*' has the unknown suffix '\.txt'"):
        (tmp_path / "w.txt").write_text("x")
        as_state_dict(tmp_path / "w.txt", argument="base")
    bad_index = tmp_path / "model.safetensors.index.json"
    bad_index.write_text("{}")
    with pytest.raises(WeightspaceValueError, match=r"^`other` '.*' has no non-empty `weight_map`"):
        as_state_dict(bad_index, argument="other")
    # open_state_dict keeps its own name for the argument
    with pytest.raises(WeightspaceValueError, match=r"^`source` '.*nope\.safetensors' does not"):
        open_state_dict(missing)


def test_pickle_errors_name_the_argument(tmp_path: Path) -> None:
    path = tmp_path / "model.pt"
    torch.save([torch.ones(1)], path)
    with pytest.raises(WeightspaceError, match=r"^`base` '.*model\.pt' holds a list"):
        as_state_dict(path, argument="base")


def test_shape_and_dtype_without_reading(single: Path, tensors: dict[str, torch.Tensor]) -> None:
    lazy = open_state_dict(single)
    for name, t in tensors.items():
        assert shape_of(lazy, name) == t.shape
        assert dtype_of(lazy, name) == t.dtype
    assert lazy.bytes_read == 0
    assert shape_of(tensors, "enc.weight") == torch.Size([32, 16])
    assert dtype_of(tensors, "enc.bias") == torch.float16
    assert dtype_of(tensors, "steps") == torch.int64


def test_shape_of_a_lazy_task_vector_computes_nothing() -> None:
    calls: list[int] = []

    def value() -> torch.Tensor:
        calls.append(1)
        return torch.ones(4, 5)

    tv = TaskVector({"w": value}, shapes={"w": (4, 5)})
    assert shape_of(tv, "w") == torch.Size([4, 5])
    assert calls == []
    # a TaskVector's `dtype` is a property, not a per-name method: the value is read
    assert dtype_of(tv, "w") == torch.float32
    assert calls == [1]


def test_missing_names_raise_key_error(single: Path) -> None:
    with pytest.raises(KeyError):
        shape_of({"a": torch.ones(1)}, "b")
    with pytest.raises(KeyError, match="not a tensor of"):
        dtype_of(open_state_dict(single), "nope")
