from __future__ import annotations

import json
import pickle
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from weightspace import WeightspaceError, WeightspaceValueError
from weightspace.io import LazyStateDict, open_state_dict, save_state_dict


class Arbitrary:
    """Something a general pickle may hold."""


@pytest.fixture
def tensors() -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    return {
        "enc.weight": torch.randn(32, 16, generator=g),
        "enc.bias": torch.randn(32, generator=g).half(),
        "head.weight": torch.randn(4, 32, generator=g).bfloat16(),
        "steps": torch.tensor(7),
    }


@pytest.fixture
def single(tmp_path: Path, tensors: dict[str, torch.Tensor]) -> Path:
    path = tmp_path / "model.safetensors"
    save_file(tensors, path, metadata={"format": "pt"})
    return path


def nbytes(t: torch.Tensor) -> int:
    return t.numel() * t.element_size()


def test_lazy_reads_only_requested(single: Path, tensors: dict[str, torch.Tensor]) -> None:
    sd = open_state_dict(single)
    assert isinstance(sd, LazyStateDict)
    assert list(sd) == sorted(tensors)
    assert len(sd) == 4
    # metadata without reading data
    for name, t in tensors.items():
        assert sd.shape(name) == t.shape
        assert sd.dtype(name) == t.dtype
        assert sd.nbytes(name) == nbytes(t)
        assert sd.source_file(name) == single
    assert "enc.weight" in sd
    assert "nope" not in sd
    assert sd.bytes_read == 0
    assert torch.equal(sd["head.weight"], tensors["head.weight"])
    assert sd.bytes_read == nbytes(tensors["head.weight"])
    assert torch.equal(sd["steps"], tensors["steps"])
    assert sd.bytes_read == nbytes(tensors["head.weight"]) + 8
    assert dict(sd.metadata) == {"format": "pt"}
    assert sd.files == (single,)


def test_immutable_and_fresh_tensors(single: Path) -> None:
    sd = open_state_dict(single)
    with pytest.raises(TypeError):
        sd["enc.bias"] = torch.zeros(32)  # type: ignore[index]
    with pytest.raises(TypeError):
        sd.metadata["x"] = "y"  # type: ignore[index]
    first = sd["enc.weight"]
    first.zero_()  # an owned copy: later lookups and the file are unaffected
    assert not torch.equal(sd["enc.weight"], first)
    assert not torch.equal(open_state_dict(single)["enc.weight"], first)


def test_missing_key_suggests(single: Path) -> None:
    sd = open_state_dict(single)
    with pytest.raises(
        KeyError, match=r"'enc.weigth' is not a tensor.*did you mean \['enc.weight'"
    ):
        sd["enc.weigth"]
    with pytest.raises(WeightspaceError):
        sd.shape("missing")
    assert sd.get("missing") is None


def test_pickle_and_repr(single: Path) -> None:
    sd = open_state_dict(single)
    _ = sd["steps"]
    clone = pickle.loads(pickle.dumps(sd))
    assert torch.equal(clone["enc.weight"], sd["enc.weight"])
    assert "tensors=4" in repr(sd)
    assert sd == sd
    assert sd != clone
    with sd:
        _ = sd["steps"]
    assert torch.equal(sd["steps"], torch.tensor(7))  # reopened after close


def test_folder_with_model_safetensors(single: Path, tensors: dict[str, torch.Tensor]) -> None:
    sd = open_state_dict(single.parent)
    assert set(sd) == set(tensors)


def test_folder_with_one_other_safetensors(tmp_path: Path) -> None:
    save_file({"a": torch.ones(1)}, tmp_path / "adapter.safetensors")
    assert list(open_state_dict(tmp_path)) == ["a"]


def test_sharded_via_folder_and_index(tmp_path: Path, tensors: dict[str, torch.Tensor]) -> None:
    out = save_state_dict(tensors, tmp_path / "ckpt", max_shard_size=300)
    for source in (out, out / "model.safetensors.index.json"):
        sd = open_state_dict(source)
        assert set(sd) == set(tensors)
        assert len(sd.files) == 3
        assert sd.bytes_read == 0
        assert torch.equal(sd["enc.bias"], tensors["enc.bias"])
        assert sd.bytes_read == nbytes(tensors["enc.bias"])


def test_missing_path(tmp_path: Path) -> None:
    with pytest.raises(
        WeightspaceValueError, match=r"`source` '.*nope.safetensors' does not exist"
    ):
        open_state_dict(tmp_path / "nope.safetensors")


def test_folder_without_checkpoint(tmp_path: Path) -> None:
    (tmp_path / "README.md").write_text("hi")
    with pytest.raises(WeightspaceValueError, match=r"without a unique checkpoint.*README.md"):
        open_state_dict(tmp_path)


def test_unknown_suffix(tmp_path: Path) -> None:
    (tmp_path / "w.npz").write_bytes(b"")
    with pytest.raises(WeightspaceValueError, match=r"unknown suffix '\.npz'"):
        open_state_dict(tmp_path / "w.npz")


def test_not_a_safetensors_file(tmp_path: Path) -> None:
    (tmp_path / "bad.safetensors").write_bytes(b"\xff" * 20)
    with pytest.raises(WeightspaceError, match="is not a valid safetensors file"):
        open_state_dict(tmp_path / "bad.safetensors")
    (tmp_path / "short.safetensors").write_bytes(b"\x01")
    with pytest.raises(WeightspaceError, match="fewer than the 8-byte header"):
        open_state_dict(tmp_path / "short.safetensors")


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("{not json", "is not a readable JSON file"),
        ('{"metadata": {}}', r"has no non-empty `weight_map` \(got \['metadata'\]\)"),
        ("[1, 2]", "has no non-empty `weight_map`"),
        ('{"weight_map": {"a": "../outside.safetensors"}}', "not a file name in its folder"),
        ('{"weight_map": {"a": 3}}', "not a file name in its folder"),
    ],
)
def test_malformed_index(tmp_path: Path, content: str, message: str) -> None:
    index = tmp_path / "model.safetensors.index.json"
    index.write_text(content)
    with pytest.raises(WeightspaceValueError, match=message):
        open_state_dict(tmp_path)


def test_index_naming_missing_shard(tmp_path: Path, tensors: dict[str, torch.Tensor]) -> None:
    out = save_state_dict(tensors, tmp_path / "ckpt", max_shard_size=300)
    (out / "model-00002-of-00003.safetensors").unlink()
    with pytest.raises(
        WeightspaceValueError,
        match=r"names 1 shard file\(s\) that do not exist.*'model-00002-of-00003.safetensors'",
    ):
        open_state_dict(out)


def test_index_naming_tensor_absent_from_shard(tmp_path: Path) -> None:
    save_file({"a": torch.ones(1)}, tmp_path / "s1.safetensors")
    (tmp_path / "model.safetensors.index.json").write_text(
        json.dumps({"weight_map": {"a": "s1.safetensors", "b": "s1.safetensors"}})
    )
    with pytest.raises(WeightspaceValueError, match=r"says tensor 'b' is in 's1\.safetensors'"):
        open_state_dict(tmp_path)


# -- legacy pickles ----------------------------------------------------------------------------


def test_plain_state_dict_bin_loads(tmp_path: Path) -> None:
    model = torch.nn.Linear(3, 2)
    torch.save(model.state_dict(), tmp_path / "pytorch_model.bin")
    for source in (tmp_path / "pytorch_model.bin", tmp_path):
        sd = open_state_dict(source)
        assert sorted(sd) == ["bias", "weight"]
        assert sd.shape("weight") == (2, 3)
        assert sd.dtype("bias") == torch.float32
        assert torch.equal(sd["weight"], model.weight.detach())
        assert sd.bytes_read == 24
        assert dict(sd.metadata) == {}


def test_arbitrary_pickle_refused(tmp_path: Path) -> None:
    torch.save({"weight": torch.zeros(2), "trainer": Arbitrary()}, tmp_path / "evil.pt")
    with pytest.raises(WeightspaceError, match=r"is a general pickle.*arbitrary code") as info:
        open_state_dict(tmp_path / "evil.pt")
    assert "weights_only=True" in str(info.value)
    assert "save_state_dict" in str(info.value)


def test_nested_or_non_mapping_pickle_refused(tmp_path: Path) -> None:
    torch.save({"state_dict": {"w": torch.zeros(1)}, "epoch": 3}, tmp_path / "ckpt.pth")
    with pytest.raises(WeightspaceError, match=r"tensors seem to be under 'state_dict'"):
        open_state_dict(tmp_path / "ckpt.pth")
    torch.save([torch.zeros(1)], tmp_path / "list.bin")
    with pytest.raises(WeightspaceError, match="holds a list, not a state dict"):
        open_state_dict(tmp_path / "list.bin")
    (tmp_path / "trunc.bin").write_bytes(b"PK\x03\x04garbage")
    with pytest.raises(WeightspaceError, match="could not be read"):
        open_state_dict(tmp_path / "trunc.bin")


def test_sharded_bin_index(tmp_path: Path) -> None:
    torch.save({"a": torch.ones(2)}, tmp_path / "pytorch_model-00001-of-00002.bin")
    torch.save({"b": torch.zeros(3)}, tmp_path / "pytorch_model-00002-of-00002.bin")
    (tmp_path / "pytorch_model.bin.index.json").write_text(
        json.dumps(
            {
                "weight_map": {
                    "a": "pytorch_model-00001-of-00002.bin",
                    "b": "pytorch_model-00002-of-00002.bin",
                }
            }
        )
    )
    sd = open_state_dict(tmp_path)
    assert sd.shape("b") == (3,)
    assert torch.equal(sd["a"], torch.ones(2))
