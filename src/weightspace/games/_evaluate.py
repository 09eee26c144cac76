"""Measures of image-text scorers: caption retrieval and zero-shot classification."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from weightspace._errors import WeightspaceValueError
from weightspace.games._scorers import ImageTextScorer

__all__ = ["RetrievalScore", "caption_retrieval", "zero_shot_accuracy"]


@dataclass(frozen=True)
class RetrievalScore:
    """Caption retrieval accuracy among ``pool`` candidates, with its chance levels.

    Attributes:
        top1: Share of images whose own caption scores highest among the candidates.
        top5: Share of images whose own caption is among the five best.
        pool: Candidates per image (its caption and ``pool - 1`` others).
        images: Number of images measured.
        chance_top1: ``1 / pool``.
        chance_top5: ``5 / pool``.
    """

    top1: float
    top5: float
    pool: int
    images: int
    chance_top1: float
    chance_top5: float


def caption_retrieval(
    scorer: ImageTextScorer,
    images: Tensor,
    captions: Sequence[str],
    *,
    pool: int = 100,
    seed: int = 0,
) -> RetrievalScore:
    """For each image, rank its caption among ``pool - 1`` captions of other images.

    The distractors are drawn (seeded) from the other images' captions, skipping any caption
    identical to the image's own, so that the answer is never ambiguous. Ties count against
    the scorer.

    Args:
        scorer: The scorer to measure.
        images: ``[N, 3, H, W]`` images, such as held-out stamps.
        captions: One caption per image.
        pool: Candidates per image, its own caption included.
        seed: Seeds the choice of distractors.

    Returns:
        Top-1 and top-5 accuracy with the chance levels ``1/pool`` and ``5/pool``.

    Raises:
        WeightspaceValueError: if ``captions`` do not match ``images`` or there are not
            ``pool`` distinct captions.
    """
    caps = list(captions)
    n = int(images.shape[0]) if images.ndim == 4 else 1
    if len(caps) != n:
        raise WeightspaceValueError(
            f"`captions` has {len(caps)} entries for {n} images; pass one caption per image"
        )
    distinct = list(dict.fromkeys(caps))
    if pool < 2 or len(distinct) < pool:
        raise WeightspaceValueError(
            f"`pool` must be in [2, {len(distinct)}] (the number of distinct captions), got "
            f"{pool}; lower it or pass more images"
        )
    sims = scorer.score(images, distinct)
    own = torch.tensor([distinct.index(c) for c in caps])
    gen = torch.Generator().manual_seed(seed)
    hit1 = hit5 = 0
    for i in range(n):
        others = torch.tensor([j for j in range(len(distinct)) if j != int(own[i])])
        pick = others[torch.randperm(len(others), generator=gen)[: pool - 1]]
        true = sims[i, own[i]]
        better = int((sims[i, pick] >= true).sum())
        hit1 += better == 0
        hit5 += better < 5
    return RetrievalScore(hit1 / n, hit5 / n, pool, n, 1 / pool, min(1.0, 5 / pool))


def zero_shot_accuracy(
    scorer: ImageTextScorer,
    images: Tensor,
    labels: Tensor,
    class_names: Sequence[str],
    *,
    template: str = "A {}.",
) -> float:
    """Classify images by the class name whose prompt scores highest (chance ``1/classes``).

    Args:
        scorer: The scorer to measure.
        images: ``[N, 3, H, W]`` images.
        labels: ``[N]`` class indices into ``class_names``.
        class_names: The classes, in label order.
        template: Turns a class name into a prompt; ``{}`` is the name.

    Returns:
        The share of images classified correctly.

    Raises:
        WeightspaceValueError: if ``template`` has no ``{}`` or ``labels`` does not match.
    """
    if "{}" not in template:
        raise WeightspaceValueError(
            f"`template` must contain '{{}}' where the class name goes, got {template!r}"
        )
    if labels.shape[0] != images.shape[0]:
        raise WeightspaceValueError(
            f"`labels` has {labels.shape[0]} entries for {images.shape[0]} images"
        )
    sims = scorer.score(images, [template.format(c) for c in class_names])
    return int((sims.argmax(dim=1) == labels).sum()) / int(labels.shape[0])
