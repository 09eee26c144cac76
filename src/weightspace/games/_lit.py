"""Locked-tower image-text alignment (LiT) on frozen EfficientNet-Lite0 and MiniLM features."""

from __future__ import annotations

import hashlib
import json
import logging
import math
from pathlib import Path
from typing import Any, cast

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from weightspace._cache import atomic_path, cache_dir, cached_file
from weightspace._errors import WeightspaceValueError
from weightspace.games._scorers import EmbeddingScorer, ImageTower, as_float_images
from weightspace.games._stamps import StampImages

__all__ = ["LiTHeads", "LiTScorer", "augmented_views", "stamp_features", "train_lit"]

logger = logging.getLogger(__name__)

_FORMAT = 1


class LiTHeads(nn.Module):
    """The trainable part of a locked-tower alignment: one linear projection per tower.

    Both towers stay frozen (Zhai et al. lock the image tower and tune the text tower; with
    ~600 captioned images here, both are locked and only the heads learn). Inputs are centred
    by the training means before projection.

    Args:
        image_dim: Size of the image tower's features (1280 for EfficientNet-Lite0).
        text_dim: Size of the text tower's embeddings (384 for MiniLM).
        dim: Size of the shared space.
    """

    def __init__(self, image_dim: int = 1280, text_dim: int = 384, dim: int = 64) -> None:
        super().__init__()
        self.image = nn.Linear(image_dim, dim)
        self.text = nn.Linear(text_dim, dim)
        self.register_buffer("image_mean", torch.zeros(image_dim))
        self.register_buffer("text_mean", torch.zeros(text_dim))
        self.log_scale = nn.Parameter(torch.tensor(math.log(10.0)))

    def embed_image(self, features: Tensor) -> Tensor:
        """Project image features ``[N, image_dim]`` to unit vectors ``[N, dim]``."""
        mean = cast(Tensor, self.image_mean)
        return F.normalize(self.image(features - mean), dim=-1)

    def embed_text(self, features: Tensor) -> Tensor:
        """Project text embeddings ``[N, text_dim]`` to unit vectors ``[N, dim]``."""
        mean = cast(Tensor, self.text_mean)
        return F.normalize(self.text(features - mean), dim=-1)


class LiTScorer(EmbeddingScorer):
    """An image-text scorer made of frozen towers and trained :class:`LiTHeads`.

    Build one with :func:`train_lit`, or :meth:`load` heads saved with :meth:`save`.

    Args:
        heads: The trained projection heads.
        tower: The frozen image network; ``None`` builds an :class:`ImageTower`.
        encoder: A :class:`weightspace.models.SentenceEncoder`; ``None`` loads MiniLM.
        name: The scorer's label.
        batch_size: Images per forward pass.
    """

    def __init__(
        self,
        heads: LiTHeads,
        tower: ImageTower | None = None,
        encoder: Any = None,
        *,
        name: str = "lit",
        batch_size: int = 64,
    ) -> None:
        super().__init__(name, batch_size=batch_size)
        from weightspace.models import minilm

        self.heads = heads.eval()
        self.tower = tower if tower is not None else ImageTower()
        self.encoder = encoder if encoder is not None else minilm()

    def _encode_images(self, images: Tensor) -> Tensor:
        pooled, _ = self.tower(images)
        return self.heads.embed_image(pooled)

    def _encode_texts(self, texts: list[str]) -> Tensor:
        return self.heads.embed_text(self.encoder.encode(texts))

    def save(self, path: str | Path) -> Path:
        """Write the heads to a ``.safetensors`` file (atomically); the towers are not saved.

        Args:
            path: The file to write.

        Returns:
            The path written.
        """
        from safetensors.torch import save_file

        target = Path(path)
        state = {k: v.detach().contiguous() for k, v in self.heads.state_dict().items()}
        with atomic_path(target) as tmp:
            save_file(state, str(tmp), metadata={"kind": "weightspace.games.LiTHeads"})
        return target

    @classmethod
    def load(
        cls,
        path: str | Path,
        tower: ImageTower | None = None,
        encoder: Any = None,
        *,
        name: str = "lit",
    ) -> LiTScorer:
        """Load heads written by :meth:`save` onto fresh (or given) towers.

        Args:
            path: A ``.safetensors`` file written by :meth:`save`.
            tower: The frozen image network; ``None`` builds an :class:`ImageTower`.
            encoder: The sentence encoder; ``None`` loads MiniLM.
            name: The scorer's label.

        Returns:
            The scorer.

        Raises:
            WeightspaceValueError: if ``path`` does not exist or holds no LiT heads.
        """
        from safetensors.torch import load_file

        file = Path(path)
        if not file.is_file():
            raise WeightspaceValueError(f"`path` {str(path)!r} is not a file; pass a .safetensors")
        state = load_file(str(file))
        if "image.weight" not in state or "text.weight" not in state:
            raise WeightspaceValueError(
                f"`path` {str(path)!r} holds no LiT heads (keys {sorted(state)[:4]}); pass a "
                "file written by LiTScorer.save"
            )
        dim, image_dim = state["image.weight"].shape
        heads = LiTHeads(int(image_dim), int(state["text.weight"].shape[1]), int(dim))
        heads.load_state_dict(state)
        return cls(heads, tower, encoder, name=name)


def augmented_views(images: Tensor, views: int, *, seed: int = 0) -> Tensor:
    """Return each image plus ``views - 1`` copies shrunk, moved and maybe mirrored on white.

    Stamps fill their square; a composition in a game is several small cards anywhere on
    the canvas. Training on shrunk, shifted copies brings the two closer.

    Args:
        images: ``[N, 3, H, W]`` images (``uint8`` or float in ``[0, 1]``).
        views: Views per image, the first being the image itself.
        seed: Seeds the random placements.

    Returns:
        ``[views, N, 3, H, W]`` floats in ``[0, 1]``.

    Raises:
        WeightspaceValueError: if ``views`` is below 1.
    """
    if views < 1:
        raise WeightspaceValueError(f"`views` must be at least 1, got {views}")
    x = as_float_images(images)
    n = x.shape[0]
    out = [x]
    gen = torch.Generator().manual_seed(seed)
    for _ in range(views - 1):
        scale = 0.45 + 0.5 * torch.rand(n, generator=gen)
        shift = (torch.rand(n, 2, generator=gen) * 2 - 1) * (1 - scale).unsqueeze(1)
        flip = torch.where(torch.rand(n, generator=gen) < 0.5, -1.0, 1.0)
        theta = torch.zeros(n, 2, 3)
        theta[:, 0, 0] = flip / scale
        theta[:, 1, 1] = 1 / scale
        theta[:, :, 2] = -shift / scale.unsqueeze(1)
        grid = F.affine_grid(theta, list(x.shape), align_corners=False)
        # Pad with white: sample 1 - x with zero padding, then flip back.
        warped = 1.0 - F.grid_sample(1.0 - x, grid, mode="bilinear", align_corners=False)
        out.append(warped)
    return torch.stack(out)


def _fingerprint(tower: ImageTower) -> str:
    h = hashlib.sha256()
    for p in list(tower.model.parameters())[:3]:
        h.update(p.detach().contiguous().numpy().tobytes())
    h.update(str(tower.size).encode())
    return h.hexdigest()[:16]


def stamp_features(
    stamps: StampImages, tower: ImageTower, *, views: int = 1, seed: int = 0
) -> Tensor:
    """The frozen image tower's pooled features of stamps (and augmented views), cached.

    Computed once per (images, tower, views, seed) into the weightspace cache, since the
    tower never changes.

    Args:
        stamps: The stamps.
        tower: The frozen image network.
        views: Views per stamp (see :func:`augmented_views`).
        seed: Seeds the augmented views.

    Returns:
        ``[views, N, 1280]`` features.
    """
    from safetensors.torch import load_file, save_file

    h = hashlib.sha256(stamps.images.contiguous().numpy().tobytes())
    h.update(json.dumps([views, seed, _fingerprint(tower), _FORMAT]).encode())
    key = h.hexdigest()[:20]
    target = cache_dir("games") / f"stamp-features-{key}.safetensors"

    def build(tmp: Path) -> None:
        logger.info("computing tower features of %d stamps x %d views", len(stamps), views)
        xs = augmented_views(stamps.images, views, seed=seed)
        feats = []
        with torch.inference_mode():
            for v in range(views):
                for i in range(0, xs.shape[1], 64):
                    feats.append(tower(xs[v, i : i + 64])[0])
        out = torch.cat(feats).view(views, len(stamps), -1).contiguous()
        save_file({"features": out}, str(tmp))

    cached_file(target, build, meta={"format": _FORMAT, "key": key})
    return load_file(str(target))["features"]


def train_lit(
    stamps: StampImages,
    *,
    tower: ImageTower | None = None,
    encoder: Any = None,
    dim: int = 64,
    views: int = 4,
    epochs: int = 200,
    lr: float = 2e-3,
    weight_decay: float = 0.5,
    batch_size: int = 256,
    seed: int = 0,
    name: str = "lit",
    features: Tensor | None = None,
) -> LiTScorer:
    """Train a :class:`LiTScorer` contrastively on stamps and their captions.

    The symmetric InfoNCE loss of CLIP (with a learnt temperature) over the frozen towers'
    features; only the two linear heads learn. Image features are computed once (and cached
    on disk) for ``views`` placements of every stamp; each epoch draws one view per stamp.
    Stamps that share a caption count as positives of each other.

    Args:
        stamps: Training stamps; split by stamp beforehand (:meth:`StampImages.split`).
        tower: The frozen image network; ``None`` builds an :class:`ImageTower`.
        encoder: A :class:`weightspace.models.SentenceEncoder`; ``None`` loads MiniLM.
        dim: Size of the shared space.
        views: Placements per stamp (the stamp itself and ``views - 1`` shrunk and moved
            copies).
        epochs: Passes over the stamps.
        lr: AdamW's learning rate.
        weight_decay: AdamW's weight decay.
        batch_size: Pairs per step.
        seed: Seeds the heads' initialisation, the views and the batches.
        name: The scorer's label.
        features: The towers' image features of ``stamps``, ``[views, N, 1280]``, if already
            computed (for instance :func:`stamp_features` of a larger set, indexed); ``None``
            computes them (and caches them on disk).

    Returns:
        The trained scorer, in eval mode.

    Raises:
        WeightspaceValueError: if there are fewer than two stamps, an argument is out of
            range, or ``features`` does not match ``stamps``.
    """
    if len(stamps) < 2:
        raise WeightspaceValueError(f"`stamps` must hold at least 2 stamps, got {len(stamps)}")
    for arg, value in (("dim", dim), ("epochs", epochs), ("batch_size", batch_size)):
        if value < 1:
            raise WeightspaceValueError(f"`{arg}` must be at least 1, got {value}")
    from weightspace.models import minilm

    tower = tower if tower is not None else ImageTower()
    encoder = encoder if encoder is not None else minilm()
    if features is None:
        image_feats = stamp_features(stamps, tower, views=views, seed=seed)
    elif features.ndim != 3 or features.shape[1] != len(stamps):
        raise WeightspaceValueError(
            f"`features` must be [views, {len(stamps)}, dim] for {len(stamps)} stamps, got "
            f"{list(features.shape)}"
        )
    else:
        image_feats = features
    text_feats = encoder.encode(list(stamps.captions))
    caption_ids = {c: i for i, c in enumerate(dict.fromkeys(stamps.captions))}
    same = torch.tensor([caption_ids[c] for c in stamps.captions])
    torch.manual_seed(seed)
    heads = LiTHeads(image_feats.shape[-1], text_feats.shape[-1], dim)
    cast(Tensor, heads.image_mean).copy_(image_feats.mean(dim=(0, 1)))
    cast(Tensor, heads.text_mean).copy_(text_feats.mean(dim=0))
    opt = torch.optim.AdamW(heads.parameters(), lr=lr, weight_decay=weight_decay)
    gen = torch.Generator().manual_seed(seed)
    n = len(stamps)
    last = float("nan")
    with torch.enable_grad():
        for _ in range(epochs):
            order = torch.randperm(n, generator=gen)
            view = torch.randint(0, image_feats.shape[0], (n,), generator=gen)
            for i in range(0, n, batch_size):
                idx = order[i : i + batch_size]
                if idx.numel() < 2:
                    continue
                zi = heads.embed_image(image_feats[view[idx], idx])
                zt = heads.embed_text(text_feats[idx])
                logits = heads.log_scale.clamp(max=math.log(100.0)).exp() * zi @ zt.T
                positive = (same[idx].unsqueeze(0) == same[idx].unsqueeze(1)).float()
                target = positive / positive.sum(dim=1, keepdim=True)
                loss = 0.5 * (F.cross_entropy(logits, target) + F.cross_entropy(logits.T, target))
                opt.zero_grad()
                loss.backward()  # type: ignore[no-untyped-call]
                opt.step()
                last = loss.detach().item()
    logger.info("trained LiT heads on %d stamps: final loss %.3f", n, last)
    return LiTScorer(heads.eval(), tower, encoder, name=name)
