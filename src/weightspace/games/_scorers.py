"""Image-text scorers behind one protocol: ``score(images, texts) -> similarity matrix``.

Three scorers ship here:

* :class:`CLIPScorer`: a CLIP model from a local folder, through transformers;
* :class:`ConSEScorer`: ConSE zero-shot embeddings (Norouzi et al., ICLR 2014): an image is
  the probability-weighted mean of the sentence embeddings of its top ImageNet classes;
* :class:`LiTScorer`: locked-tower alignment (LiT, Zhai et al., CVPR 2022): projection heads
  trained contrastively on top of frozen EfficientNet-Lite0 and MiniLM features.

All three embed images and texts into one space of unit vectors, so a score is a cosine
similarity in ``[-1, 1]``. Text embeddings are cached by text (games ask about the same few
concepts thousands of times).
"""

from __future__ import annotations

import abc
import hashlib
import json
import logging
from collections import OrderedDict
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from weightspace._errors import WeightspaceValueError

__all__ = [
    "CLIPScorer",
    "ConSEScorer",
    "EmbeddingScorer",
    "ImageTextScorer",
    "ImageTower",
    "as_float_images",
]

logger = logging.getLogger(__name__)

_CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
_CLIP_STD = (0.26862954, 0.26130258, 0.27577711)


@runtime_checkable
class ImageTextScorer(Protocol):
    """Anything that rates how well each image matches each text.

    Games use only this: an Imagine player maximises ``score(image, [concept])``, a guesser
    picks the candidate concept with the highest score, a Dixit storyteller picks the clue
    that fits its own card best.
    """

    name: str

    def score(self, images: Tensor, texts: Sequence[str]) -> Tensor:
        """Rate every image against every text.

        Args:
            images: RGB images, ``uint8`` in ``[0, 255]`` or float in ``[0, 1]``.
            texts: The texts.

        Returns:
            ``[N, T]`` similarities; higher means a better match.
        """
        ...


def as_float_images(images: Tensor, *, argument: str = "images") -> Tensor:
    """Check RGB images and return them as a ``float32`` batch in ``[0, 1]``.

    Args:
        images: ``[3, H, W]`` or ``[N, 3, H, W]``, ``uint8`` in ``[0, 255]`` or float in
            ``[0, 1]``.
        argument: The argument's name, for error messages.

    Returns:
        A ``[N, 3, H, W]`` ``float32`` tensor.

    Raises:
        WeightspaceValueError: if the shape is not that of RGB images.
    """
    if not isinstance(images, Tensor) or images.ndim not in (3, 4) or images.shape[-3] != 3:
        shape = list(images.shape) if isinstance(images, Tensor) else type(images).__name__
        raise WeightspaceValueError(
            f"`{argument}` must be RGB images of shape [3, H, W] or [N, 3, H, W], got {shape}; "
            "grey images can be repeated with `.expand(-1, 3, -1, -1)`"
        )
    x = images.unsqueeze(0) if images.ndim == 3 else images
    if x.dtype == torch.uint8:
        return x.to(torch.float32) / 255.0
    return x.to(torch.float32)


def _check_texts(texts: Sequence[str]) -> list[str]:
    if isinstance(texts, str):
        raise WeightspaceValueError(
            f"`texts` must be a sequence of strings, got the string {texts!r}; wrap it in a "
            "list: `score(images, [text])`"
        )
    out = list(texts)
    bad = [t for t in out if not isinstance(t, str)]
    if bad:
        raise WeightspaceValueError(f"`texts` must hold strings only, got {bad[0]!r}")
    return out


class EmbeddingScorer(abc.ABC):
    """A scorer that embeds images and texts into one space of unit vectors.

    Subclasses implement :meth:`_encode_images` and :meth:`_encode_texts`; this class batches,
    normalises and caches. ``score`` is the matrix of cosine similarities.

    Args:
        name: A short label for tables (``"lit"``, ``"conse"``, ``"clip"``).
        batch_size: Images per forward pass.
        cache_size: How many text embeddings are kept (least recently used are dropped).
    """

    def __init__(self, name: str, *, batch_size: int = 64, cache_size: int = 4096) -> None:
        if batch_size < 1:
            raise WeightspaceValueError(f"`batch_size` must be at least 1, got {batch_size}")
        self.name = name
        self.batch_size = batch_size
        self.cache_size = cache_size
        self._text_cache: OrderedDict[str, Tensor] = OrderedDict()

    @abc.abstractmethod
    def _encode_images(self, images: Tensor) -> Tensor:
        """Embed a ``[B, 3, H, W]`` float batch in ``[0, 1]`` (need not be normalised)."""

    @abc.abstractmethod
    def _encode_texts(self, texts: list[str]) -> Tensor:
        """Embed texts (need not be normalised)."""

    def embed_images(self, images: Tensor) -> Tensor:
        """Embed images as unit vectors, in batches of :attr:`batch_size`.

        Args:
            images: ``[3, H, W]`` or ``[N, 3, H, W]``, ``uint8`` or float in ``[0, 1]``.

        Returns:
            ``[N, dim]`` unit vectors.

        Raises:
            WeightspaceValueError: if ``images`` are not RGB images.
        """
        x = as_float_images(images)
        out = []
        with torch.inference_mode():
            for i in range(0, x.shape[0], self.batch_size):
                out.append(self._encode_images(x[i : i + self.batch_size]).float())
        if not out:
            raise WeightspaceValueError("`images` is empty; pass at least one image")
        return F.normalize(torch.cat(out), dim=-1)

    def embed_texts(self, texts: Sequence[str]) -> Tensor:
        """Embed texts as unit vectors; texts seen before come from the cache.

        Args:
            texts: The texts.

        Returns:
            ``[T, dim]`` unit vectors.

        Raises:
            WeightspaceValueError: if ``texts`` is a string or holds a non-string.
        """
        items = _check_texts(texts)
        missing = list(dict.fromkeys(t for t in items if t not in self._text_cache))
        if missing:
            with torch.inference_mode():
                new = F.normalize(self._encode_texts(missing).float(), dim=-1)
            for t, e in zip(missing, new, strict=True):
                self._text_cache[t] = e.clone()
        out = []
        for t in items:
            self._text_cache.move_to_end(t)
            out.append(self._text_cache[t])
        while len(self._text_cache) > self.cache_size:
            self._text_cache.popitem(last=False)
        if not out:
            raise WeightspaceValueError("`texts` is empty; pass at least one text")
        return torch.stack(out)

    def score(self, images: Tensor, texts: Sequence[str]) -> Tensor:
        """Cosine similarity of every image with every text.

        Args:
            images: ``[3, H, W]`` or ``[N, 3, H, W]``, ``uint8`` or float in ``[0, 1]``.
            texts: The texts.

        Returns:
            ``[N, T]`` similarities in ``[-1, 1]``.
        """
        return self.embed_images(images) @ self.embed_texts(texts).T

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.name!r})"


class ImageTower(nn.Module):
    """Frozen EfficientNet-Lite0 features: pooled 1280-dim features and ImageNet logits.

    Images are resized (bicubic, antialiased) to ``size`` x ``size`` without cropping, so
    that nothing drawn near a border is lost, and normalised as the Lite0 weights expect.

    Args:
        model: timm's ``efficientnet_lite0`` with ImageNet weights; ``None`` loads it with
            :func:`weightspace.models.efficientnet_lite0`.
        size: The side of the network's input. 128 is about five times faster than 224 on a
            CPU, at some cost in ImageNet accuracy.
    """

    def __init__(self, model: nn.Module | None = None, *, size: int = 128) -> None:
        super().__init__()
        if model is None:
            from weightspace.models import efficientnet_lite0

            model = efficientnet_lite0()
        self.model = model.eval()
        for p in self.model.parameters():
            p.requires_grad_(False)
        self.size = size

    def prepare(self, images: Tensor) -> Tensor:
        """Resize ``[N, 3, H, W]`` floats in ``[0, 1]`` and normalise them to ``[-1, 1]``."""
        x = images
        if x.shape[-2:] != (self.size, self.size):
            x = F.interpolate(
                x, size=(self.size, self.size), mode="bicubic", align_corners=False, antialias=True
            ).clamp(0.0, 1.0)
        return (x - 0.5) / 0.5

    def forward(self, images: Tensor) -> tuple[Tensor, Tensor]:
        """Return ``(pooled features [N, 1280], ImageNet logits [N, 1000])``.

        Args:
            images: ``[N, 3, H, W]`` floats in ``[0, 1]``.

        Returns:
            The pooled features before the classifier, and the classifier's logits.
        """
        model: Any = self.model
        fmap = model.forward_features(self.prepare(images))
        pooled = model.global_pool(fmap)
        logits = model.classifier(pooled)
        return pooled, logits


class ConSEScorer(EmbeddingScorer):
    """ConSE zero-shot scorer from EfficientNet-Lite0 and MiniLM.

    ConSE (Norouzi et al., "Zero-Shot Learning by Convex Combination of Semantic Embeddings",
    ICLR 2014): an image's embedding is the convex combination of the MiniLM embeddings of
    its ``top_k`` most probable ImageNet classes, weighted by their probabilities; a text's
    embedding is its MiniLM embedding. Nothing is trained: whatever the two pretrained models
    know is all it knows.

    Args:
        tower: The frozen image network; ``None`` builds an :class:`ImageTower`.
        encoder: A :class:`weightspace.models.SentenceEncoder`; ``None`` loads MiniLM.
        top_k: How many classes enter the combination (10 in the paper).
        name: The scorer's label.
        batch_size: Images per forward pass.

    Example:
        >>> import weightspace
        >>> scorer = ConSEScorer()
        >>> china = weightspace.data.sample_images()["china"]
        >>> s = scorer.score(china, ["a temple", "a fish"])
        >>> bool(s[0, 0] > s[0, 1])
        True
    """

    def __init__(
        self,
        tower: ImageTower | None = None,
        encoder: Any = None,
        *,
        top_k: int = 10,
        name: str = "conse",
        batch_size: int = 64,
    ) -> None:
        super().__init__(name, batch_size=batch_size)
        if top_k < 1 or top_k > 1000:
            raise WeightspaceValueError(f"`top_k` must be in [1, 1000], got {top_k}")
        from weightspace.models import imagenet_classes, minilm

        self.tower = tower if tower is not None else ImageTower()
        self.encoder = encoder if encoder is not None else minilm()
        self.top_k = top_k
        self.class_embeddings = _cached_text_embeddings(self.encoder, imagenet_classes())

    def _encode_images(self, images: Tensor) -> Tensor:
        _, logits = self.tower(images)
        return self.combine(logits)

    def combine(self, logits: Tensor) -> Tensor:
        """Turn ImageNet logits ``[N, 1000]`` into ConSE embeddings ``[N, dim]``."""
        probs = logits.softmax(dim=-1)
        top = probs.topk(self.top_k, dim=-1)
        weights = top.values / top.values.sum(dim=-1, keepdim=True)
        out: Tensor = torch.einsum("nk,nkd->nd", weights, self.class_embeddings[top.indices])
        return out

    def _encode_texts(self, texts: list[str]) -> Tensor:
        out: Tensor = self.encoder.encode(texts)
        return out


def _cached_text_embeddings(encoder: Any, texts: Sequence[str]) -> Tensor:
    """``encoder.encode(texts)``, computed once per (encoder weights, texts) into the cache."""
    from safetensors.torch import load_file, save_file

    from weightspace._cache import cache_dir, cached_file

    h = hashlib.sha256(json.dumps(list(texts)).encode())
    for p in list(encoder.parameters())[:2]:
        h.update(p.detach().contiguous().numpy().tobytes())
    key = h.hexdigest()[:20]
    target = cache_dir("games") / f"text-embeddings-{key}.safetensors"

    def build(tmp: Path) -> None:
        save_file({"embeddings": encoder.encode(list(texts)).contiguous()}, str(tmp))

    cached_file(target, build, meta={"key": key})
    return load_file(str(target))["embeddings"]


class CLIPScorer(EmbeddingScorer):
    """A CLIP model loaded from a local folder with transformers.

    Use :meth:`from_folder`. Images are resized (bicubic) to the vision tower's input size
    and normalised with the folder's ``preprocessor_config.json`` statistics when it has one
    (OpenAI CLIP's otherwise).

    Args:
        model: A ``transformers.CLIPModel``.
        tokenizer: Its tokenizer.
        mean: Per-channel mean of the inputs.
        std: Per-channel standard deviation of the inputs.
        name: The scorer's label.
        batch_size: Images per forward pass.
    """

    def __init__(
        self,
        model: nn.Module,
        tokenizer: Any,
        *,
        mean: Sequence[float] = _CLIP_MEAN,
        std: Sequence[float] = _CLIP_STD,
        name: str = "clip",
        batch_size: int = 64,
    ) -> None:
        super().__init__(name, batch_size=batch_size)
        self.model = model.eval()
        self.tokenizer = tokenizer
        config: Any = getattr(model, "config", None)
        self.image_size = int(config.vision_config.image_size)
        self.max_length = int(config.text_config.max_position_embeddings)
        self.mean = torch.tensor(list(mean), dtype=torch.float32).view(1, 3, 1, 1)
        self.std = torch.tensor(list(std), dtype=torch.float32).view(1, 3, 1, 1)

    @classmethod
    def from_folder(cls, path: str | Path, *, name: str = "clip") -> CLIPScorer:
        """Load a CLIP model and its tokenizer from a Hugging Face folder (no hub access).

        Args:
            path: A folder written by ``CLIPModel.save_pretrained`` plus the tokenizer's
                ``save_pretrained`` (``config.json``, weights, ``vocab.json``, ...).
            name: The scorer's label.

        Returns:
            The scorer, on the CPU, in eval mode.

        Raises:
            MissingSourceError: if transformers is not installed.
            WeightspaceValueError: if ``path`` is not a folder with a ``config.json`` of a
                CLIP model.
        """
        from weightspace.models._hf import quiet_progress, require_transformers

        folder = Path(path).expanduser()
        config_file = folder / "config.json"
        if not config_file.is_file():
            raise WeightspaceValueError(
                f"`path` must be a CLIP model folder with a config.json, got {str(path)!r}; "
                "save one with `model.save_pretrained(path)` and "
                "`tokenizer.save_pretrained(path)`"
            )
        kind = json.loads(config_file.read_text()).get("model_type")
        if kind != "clip":
            raise WeightspaceValueError(
                f"`path` {str(path)!r} holds a {kind!r} model, not 'clip'; pass a CLIP folder"
            )
        transformers = require_transformers()
        with quiet_progress(False):
            model = transformers.CLIPModel.from_pretrained(folder, local_files_only=True)
            tokenizer = transformers.AutoTokenizer.from_pretrained(folder, local_files_only=True)
        mean, std = _CLIP_MEAN, _CLIP_STD
        pre = folder / "preprocessor_config.json"
        if pre.is_file():
            cfg = json.loads(pre.read_text())
            mean = tuple(cfg.get("image_mean", mean))
            std = tuple(cfg.get("image_std", std))
        return cls(model, tokenizer, mean=mean, std=std, name=name)

    def _encode_images(self, images: Tensor) -> Tensor:
        x = F.interpolate(
            images,
            size=(self.image_size, self.image_size),
            mode="bicubic",
            align_corners=False,
            antialias=True,
        ).clamp(0.0, 1.0)
        model: Any = self.model
        out = model.get_image_features(pixel_values=(x - self.mean) / self.std)
        return out if isinstance(out, Tensor) else out.pooler_output

    def _encode_texts(self, texts: list[str]) -> Tensor:
        batch = self.tokenizer(
            texts, padding=True, truncation=True, max_length=self.max_length, return_tensors="pt"
        )
        model: Any = self.model
        out = model.get_text_features(
            input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]
        )
        return out if isinstance(out, Tensor) else out.pooler_output
