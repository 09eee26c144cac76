"""The one loss convention of the library: ``loss(model, batch) -> scalar tensor``."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeAlias

import torch.nn.functional as F
from torch import Tensor, nn

from weightspace._errors import WeightspaceValueError

__all__ = ["LossFn", "cross_entropy_loss", "logits_loss"]

LossFn: TypeAlias = Callable[[nn.Module, Any], Tensor]
"""``loss(model, batch) -> scalar tensor``: runs the model on a batch and returns the batch
mean of the loss (what :class:`~weightspace.train.Trainer` minimises and
:mod:`weightspace.saliency` differentiates)."""


def cross_entropy_loss(model: nn.Module, batch: Any) -> Tensor:
    """The default loss: cross-entropy of ``model(x)`` against ``y`` for a batch ``(x, y)``.

    Args:
        model: A classifier returning logits ``[N, classes]``.
        batch: ``(x, y)`` with integer targets ``y`` of shape ``[N]``.

    Returns:
        The batch mean of the cross-entropy.

    Raises:
        WeightspaceValueError: if ``batch`` is not a pair.

    Example:
        >>> import torch
        >>> from weightspace import train
        >>> net = torch.nn.Linear(2, 3, bias=False)
        >>> _ = torch.nn.init.zeros_(net.weight)
        >>> loss = train.cross_entropy_loss(net, (torch.ones(4, 2), torch.zeros(4).long()))
        >>> round(loss.item(), 4)  # log(3): every class equally likely
        1.0986
    """
    if not (isinstance(batch, (tuple, list)) and len(batch) == 2):
        raise WeightspaceValueError(
            "the default loss needs batches (x, y); pass `loss=lambda model, batch: ...` for "
            f"other batches, got a batch of type {type(batch).__name__}"
        )
    x, y = batch
    return F.cross_entropy(model(x), y)


def logits_loss(fn: Callable[[Tensor, Tensor], Tensor]) -> LossFn:
    """Adapt a loss of ``(logits, targets)`` to the library's ``loss(model, batch)``.

    The returned loss runs ``model(x)`` on a batch ``(x, y)`` and returns ``fn(logits, y)``;
    ``fn`` must return the batch mean (as :func:`torch.nn.functional.cross_entropy` does).

    Args:
        fn: ``fn(logits, targets) -> scalar tensor``.

    Returns:
        ``loss(model, batch) -> scalar tensor``.

    Raises:
        WeightspaceValueError: if ``fn`` is not callable (at once) or a batch is not a pair
            (when the loss runs).

    Example:
        >>> import torch
        >>> import torch.nn.functional as F
        >>> from weightspace import train
        >>> net = torch.nn.Linear(2, 3, bias=False)
        >>> batch = (torch.ones(4, 2), torch.zeros(4).long())
        >>> loss = train.logits_loss(F.cross_entropy)
        >>> bool(loss(net, batch) == train.cross_entropy_loss(net, batch))
        True
    """
    if not callable(fn):
        raise WeightspaceValueError(
            f"`fn` must be a callable (logits, targets) -> tensor, got {type(fn).__name__}"
        )

    def loss(model: nn.Module, batch: Any) -> Tensor:
        if not (isinstance(batch, (tuple, list)) and len(batch) == 2):
            raise WeightspaceValueError(
                "a loss of (logits, targets) needs batches (x, y), got a batch of type "
                f"{type(batch).__name__}"
            )
        x, y = batch
        return fn(model(x), y)

    return loss
