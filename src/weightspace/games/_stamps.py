"""Tux Paint's clip-art stamps as captioned images: the one offline source of image-text pairs."""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from torch import Tensor

from weightspace._cache import cache_dir, cached_file
from weightspace._errors import MissingSourceError, WeightspaceValueError
from weightspace._optional import require_module

__all__ = ["StampImages", "stamp_images"]

logger = logging.getLogger(__name__)

_STAMPS_DIR = Path("/usr/share/tuxpaint/stamps")
_STAMPS_APT = "tuxpaint-stamps-default"
_FORMAT = 1


@dataclass(frozen=True)
class StampImages:
    """Clip-art images with their English captions, one per stamp.

    Attributes:
        images: ``uint8`` RGB images, each stamp drawn over a white background, scaled to fit
            the square and centred.
        captions: The English caption of each stamp (the first line of its ``.txt`` file,
            such as ``"A frog."``).
        names: The stamp of each image, as its path under the stamps folder without the
            extension (``"animals/amphibians/frog"``).

    Shapes:
        - images: ``[N, 3, size, size]``.
    """

    images: Tensor
    captions: tuple[str, ...]
    names: tuple[str, ...]

    def __post_init__(self) -> None:
        n = self.images.shape[0]
        if len(self.captions) != n or len(self.names) != n:
            raise WeightspaceValueError(
                f"`images` holds {n} images but there are {len(self.captions)} captions and "
                f"{len(self.names)} names; give one caption and one name per image"
            )

    def __len__(self) -> int:
        return int(self.images.shape[0])

    @property
    def categories(self) -> tuple[str, ...]:
        """The top-level folder of each stamp (``"animals"``, ``"food"``, ...)."""
        return tuple(n.split("/", 1)[0] for n in self.names)

    def subset(self, index: Sequence[int] | Tensor) -> StampImages:
        """Return the stamps at ``index``, in that order.

        Args:
            index: Positions into this set.

        Returns:
            A new :class:`StampImages` sharing no state with this one.
        """
        idx = torch.as_tensor(index, dtype=torch.long)
        keep = idx.tolist()
        return StampImages(
            self.images[idx].clone(),
            tuple(self.captions[i] for i in keep),
            tuple(self.names[i] for i in keep),
        )

    def split(self, test: float | int, *, seed: int = 0) -> tuple[StampImages, StampImages]:
        """Split by stamp into a training and a test set (every stamp is on one side only).

        Args:
            test: The share of stamps in the test set (a float in ``(0, 1)``) or their number
                (an int).
            seed: Seeds the random permutation of the stamps.

        Returns:
            ``(train, test)``.

        Raises:
            WeightspaceValueError: if ``test`` leaves either side empty.
        """
        n = len(self)
        n_test = round(test * n) if isinstance(test, float) else int(test)
        if not 0 < n_test < n:
            raise WeightspaceValueError(
                f"`test` must leave at least one stamp on each side of {n}, got {test!r}; pass "
                "a share in (0, 1) or a count in [1, N - 1]"
            )
        perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
        return self.subset(perm[n_test:].sort().values), self.subset(perm[:n_test].sort().values)


def _caption(txt: Path) -> str | None:
    try:
        first = txt.read_text(encoding="utf-8", errors="replace").splitlines()
    except OSError:
        return None
    if not first or not first[0].strip() or "=" in first[0].split(" ", 1)[0]:
        return None
    return first[0].strip()


def _listing(root: Path) -> list[tuple[str, Path, str]]:
    """``(name, png, caption)`` for every PNG stamp with an English caption, sorted."""
    found = []
    for folder, dirs, files in os.walk(root):
        dirs.sort()
        for fname in sorted(files):
            if not fname.endswith(".png") or fname.endswith("_mirror.png"):
                continue
            png = Path(folder) / fname
            caption = _caption(png.with_suffix(".txt"))
            if caption is None:
                continue
            name = png.relative_to(root).with_suffix("").as_posix()
            found.append((name, png, caption))
    return found


def _draw(png: Path, size: int) -> Tensor:
    pil = require_module("PIL.Image", pip="pillow", extra="vision")
    with pil.open(png) as im:
        rgba = im.convert("RGBA")
        w, h = rgba.size
        scale = (size - 2) / max(w, h)
        new = (max(1, round(w * scale)), max(1, round(h * scale)))
        rgba = rgba.resize(new, pil.Resampling.LANCZOS)
        canvas = pil.new("RGBA", (size, size), (255, 255, 255, 255))
        canvas.alpha_composite(rgba, ((size - new[0]) // 2, (size - new[1]) // 2))
        data = torch.frombuffer(bytearray(canvas.convert("RGB").tobytes()), dtype=torch.uint8)
    return data.view(size, size, 3).permute(2, 0, 1).contiguous()


def stamp_images(
    *,
    size: int = 128,
    categories: Sequence[str] | None = None,
    path: str | os.PathLike[str] | None = None,
) -> StampImages:
    """Load Tux Paint's PNG stamps as RGB images with their English captions.

    The Debian package ``tuxpaint-stamps-default`` installs about 800 PNG stamps with a
    caption file each (the first line is English: ``"A frog."``). Each stamp is drawn over
    white, scaled to fit a ``size`` square (aspect kept) and centred; stamps without an
    English caption, the SVG stamps and the mirrored variants are left out. The set is built
    once into the weightspace cache.

    Args:
        size: Side of the square images, in pixels.
        categories: Keep only stamps under these folders (``"animals"``,
            ``"food/fruit"``, ...); ``None`` keeps all.
        path: A folder laid out like ``/usr/share/tuxpaint/stamps``; ``None`` uses the Debian
            package's folder.

    Returns:
        A :class:`StampImages`, sorted by stamp path.

    Raises:
        MissingSourceError: if ``path`` is ``None`` and the Debian package is not installed;
            the message says ``apt-get install -y tuxpaint-stamps-default``.
        WeightspaceValueError: if ``size`` is below 8, if ``path`` is not a folder, or if no
            stamp matches ``categories``.
    """
    if isinstance(size, bool) or not isinstance(size, int) or size < 8:
        raise WeightspaceValueError(f"`size` must be an int of at least 8 pixels, got {size!r}")
    if path is None:
        if not _STAMPS_DIR.is_dir():
            raise MissingSourceError(
                f"Tux Paint's stamps are not installed: {_STAMPS_DIR} does not exist; install "
                f"them with `apt-get install -y {_STAMPS_APT}` (as root), or pass `path=`"
            )
        root = _STAMPS_DIR
    else:
        root = Path(path).expanduser()
        if not root.is_dir():
            raise WeightspaceValueError(
                f"`path` must be a folder laid out like {_STAMPS_DIR}, got {str(path)!r}"
            )
        root = root.resolve()
    listing = _listing(root)
    if categories is not None:
        cats = [c.strip("/") for c in categories]
        listing = [x for x in listing if any(x[0].startswith(c + "/") for c in cats)]
    if not listing:
        raise WeightspaceValueError(
            f"no captioned PNG stamp under {str(root)!r} matches `categories` {categories!r}; "
            "pass top-level folders such as ['animals', 'food'] or None"
        )
    digest = hashlib.sha256(
        json.dumps([(n, c, p.stat().st_size) for n, p, c in listing]).encode()
    ).hexdigest()[:16]
    target = cache_dir("games") / f"stamps-{size}-{digest}.safetensors"

    def build(tmp: Path) -> None:
        logger.info("drawing %d stamps at %d px into %s", len(listing), size, target)
        images = torch.stack([_draw(p, size) for _, p, _ in listing])
        save_file({"images": images}, str(tmp))

    cached_file(target, build, meta={"format": _FORMAT, "size": size, "listing": digest})
    images = load_file(str(target))["images"]
    return StampImages(images, tuple(c for _, _, c in listing), tuple(n for n, _, _ in listing))
