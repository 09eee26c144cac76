"""The model index that selections are built on: names, shapes and modules of a model."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import nn

from weightspace import WeightspaceValueError
from weightspace.io import open_state_dict, save_state_dict
from weightspace.select._index import ModelIndex, build_index


class Net(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.enc = nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4))
        self.encoder = nn.Linear(4, 4, bias=False)
        self.head = nn.Linear(4, 2)


def test_module_index_lists_parameters_in_registration_order() -> None:
    net = Net()
    index = build_index(net, argument="model")
    assert index.params == (
        "enc.0.weight",
        "enc.0.bias",
        "enc.1.weight",
        "enc.1.bias",
        "encoder.weight",
        "head.weight",
        "head.bias",
    )
    assert index.shapes["enc.0.weight"] == torch.Size([4, 3])
    assert index.modules == ("enc", "enc.0", "enc.1", "encoder", "head")
    assert index.types["enc.1"] is net.enc[1]
    assert index.model is net


def test_module_index_with_buffers_adds_float_buffers_only() -> None:
    index = build_index(Net(), argument="model", buffers=True)
    assert index.params[-2:] == ("enc.1.running_mean", "enc.1.running_var")
    assert "enc.1.num_batches_tracked" not in index.params
    assert index.shapes["enc.1.running_var"] == torch.Size([4])


def test_state_dict_index_keeps_float_tensors_and_derives_modules() -> None:
    sd = Net().state_dict()
    index = build_index(sd, argument="model")
    assert index.params == tuple(k for k in sd if k != "enc.1.num_batches_tracked")
    assert index.modules == ("enc", "enc.0", "enc.1", "encoder", "head")
    assert index.types == {}
    assert index.model is None
    assert all(index.shapes[n] == sd[n].shape for n in index.params)


def test_checkpoint_index_reads_no_tensor_data(tmp_path: Path) -> None:
    path = tmp_path / "net.safetensors"
    save_state_dict(Net().state_dict(), path)
    lazy = open_state_dict(path)
    index = build_index(lazy, argument="model")
    assert lazy.bytes_read == 0
    assert set(index.params) == {k for k in lazy if k != "enc.1.num_batches_tracked"}
    assert build_index(path, argument="model").params == index.params


def test_owner_ancestors_and_under_respect_dot_boundaries() -> None:
    index = build_index(Net(), argument="model")
    assert index.owner("enc.0.weight") == "enc.0"
    assert index.owner("weight") == ""
    assert index.ancestors("enc.0.weight") == ["enc", "enc.0"]
    assert index.ancestors("weight") == []
    # "enc" is a prefix of "encoder" as a string, not as a module
    assert index.under("enc") == ["enc.0.weight", "enc.0.bias", "enc.1.weight", "enc.1.bias"]
    assert index.under("enc.1") == ["enc.1.weight", "enc.1.bias"]
    assert index.under("") == list(index.params)
    assert index.under("missing") == []


def test_bad_input_names_the_argument() -> None:
    with pytest.raises(WeightspaceValueError, match=r"^`b` must be an nn\.Module"):
        build_index(3, argument="b")  # type: ignore[arg-type]
    with pytest.raises(WeightspaceValueError, match=r"^`a` '.*nope' does not exist"):
        build_index("nope", argument="a")


def test_index_is_frozen() -> None:
    index = build_index({"w": torch.ones(1)}, argument="model")
    assert isinstance(index, ModelIndex)
    with pytest.raises(AttributeError):
        index.params = ()  # type: ignore[misc]
