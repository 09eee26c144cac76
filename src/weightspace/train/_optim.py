"""The one optimiser factory of the library."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Literal

import torch
from torch import Tensor

from weightspace._errors import WeightspaceValueError
from weightspace.train._checks import non_negative

__all__ = ["OptimizerName", "make_optimizer"]

OptimizerName = Literal["adam", "adamw", "sgd"]
"""The optimisers :func:`make_optimizer` builds."""


def make_optimizer(
    params: Iterable[Tensor],
    name: OptimizerName = "adam",
    *,
    lr: float = 1e-3,
    weight_decay: float = 0.0,
    momentum: float = 0.9,
) -> torch.optim.Optimizer:
    """Build the optimiser that :class:`Trainer` and the unlearning methods use.

    Args:
        params: The tensors to optimise.
        name: ``"adam"`` (:class:`torch.optim.Adam`), ``"adamw"`` (:class:`torch.optim.AdamW`)
            or ``"sgd"`` (:class:`torch.optim.SGD` with ``momentum``).
        lr: Learning rate, > 0.
        weight_decay: Weight decay, >= 0 (decoupled for ``"adamw"``).
        momentum: SGD momentum, >= 0 (ignored by Adam and AdamW).

    Returns:
        The optimiser, with no state yet.

    Raises:
        WeightspaceValueError: on an unknown ``name``, a bad number or no parameter.

    Example:
        >>> import torch
        >>> from weightspace import train
        >>> opt = train.make_optimizer(torch.nn.Linear(2, 2).parameters(), "sgd", lr=0.1)
        >>> type(opt).__name__, opt.defaults["momentum"]
        ('SGD', 0.9)
    """
    lr = non_negative(lr, "lr", strict=True)
    weight_decay = non_negative(weight_decay, "weight_decay")
    momentum = non_negative(momentum, "momentum")
    tensors = list(params)
    if not tensors:
        raise WeightspaceValueError("`params` is empty: there is no parameter to optimise")
    if name == "adam":
        return torch.optim.Adam(tensors, lr=lr, weight_decay=weight_decay)
    if name == "adamw":
        return torch.optim.AdamW(tensors, lr=lr, weight_decay=weight_decay)
    if name == "sgd":
        return torch.optim.SGD(tensors, lr=lr, momentum=momentum, weight_decay=weight_decay)
    raise WeightspaceValueError(f"`optimizer` must be 'adam', 'adamw' or 'sgd', got {name!r}")
