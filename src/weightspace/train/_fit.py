"""The one-call form of :class:`Trainer`: :func:`fit_` (and its deprecated name ``fit``)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

from torch import Tensor, nn

from weightspace._deprecation import deprecated
from weightspace.train._batches import Collate, Data
from weightspace.train._loss import LossFn
from weightspace.train._optim import OptimizerName
from weightspace.train._trainer import GradHook, History, Trainer

__all__ = ["fit", "fit_"]


def fit_(
    model: nn.Module,
    data: Data,
    *,
    epochs: int = 1,
    batch_size: int = 128,
    lr: float = 1e-3,
    optimizer: OptimizerName = "adam",
    weight_decay: float = 0.0,
    momentum: float = 0.9,
    loss: LossFn | None = None,
    collate_fn: Collate | None = None,
    trainable: object = None,
    masks: Mapping[str, Tensor] | None = None,
    grad_hooks: Sequence[GradHook] = (),
    max_grad_norm: float | None = None,
    drop_last: bool = False,
    seed: int = 0,
    distributed: bool | None = None,
    progress: bool = False,
    checkpoint: str | Path | None = None,
    resume: bool = False,
) -> History:
    r"""Train ``model`` in place for ``epochs`` passes over ``data`` (hence the underscore).

    ``Trainer(model, ...).fit(data, ...)`` in one call; see :class:`Trainer` for the settings
    and :meth:`Trainer.fit` for the order of the examples, the data-parallel run under
    ``torchrun`` and checkpoints. The model is put in training mode for the loop (BatchNorm
    statistics update, dropout is active) and returned to its previous mode afterwards;
    parameters outside ``trainable`` are frozen during the loop (``requires_grad`` is
    restored at the end). The global RNG state is left untouched, and two calls with the same
    arguments on the same model give the same weights.

    Args:
        model: The network, trained in place on the device of its parameters.
        data: Data in the contract of :func:`batches`: an ``(inputs, targets)`` pair of
            tensors, a ``Dataset`` of samples batched by ``collate_fn``, a ``DataLoader`` or
            an iterable of batches.
        epochs: Passes over the data.
        batch_size: Examples per step and rank.
        lr: Learning rate.
        optimizer: ``"adam"``, ``"adamw"`` or ``"sgd"`` (with ``momentum``).
        weight_decay: The optimiser's weight decay.
        momentum: SGD momentum (ignored by Adam).
        loss: ``loss(model, batch) -> scalar tensor``; default :func:`cross_entropy_loss`.
        collate_fn: Turns a list of samples into a batch (default:
            :func:`torch.utils.data.default_collate`); unused for a pair of tensors.
        trainable: Which parameters to train, in :func:`weightspace.select.parameters`'
            grammar; ``None`` trains all of them.
        masks: ``name -> bool tensor``: only the ``True`` entries change (see
            :class:`Trainer`).
        grad_hooks: Functions ``hook(grads)`` that edit the gradients before each step.
        max_grad_norm: Clip the global gradient norm to this value.
        drop_last: Skip the last, smaller batch of each epoch.
        seed: Seed of the order of the examples and of the model's own randomness.
        distributed: ``None`` (default) is data-parallel exactly when a process group of more
            than one rank is initialised; ``True`` requires one; ``False`` never is.
        progress: Show a progress bar (``tqdm``; rank 0 only).
        checkpoint: A ``.safetensors`` file written after every epoch.
        resume: Continue from ``checkpoint`` if it exists.

    Returns:
        The per-epoch mean losses, the number of steps and the wall time.

    Raises:
        WeightspaceValueError: on a bad argument (the message names it and shows its value),
            empty data, or ``distributed=True`` without a process group.
        NonFiniteLossError: on a non-finite loss (a :class:`WeightspaceValueError`).

    Example:
        >>> import torch
        >>> from torch import nn
        >>> from weightspace import train
        >>> x, y = torch.randn(64, 3), torch.randint(0, 2, (64,))
        >>> model = nn.Sequential(nn.Linear(3, 8), nn.ReLU(), nn.Linear(8, 2))
        >>> h = train.fit_(model, (x, y), epochs=2, batch_size=16, trainable=["2"])
        >>> len(h.losses), h.steps
        (2, 8)
    """
    trainer = Trainer(
        model,
        optimizer=optimizer,
        lr=lr,
        weight_decay=weight_decay,
        momentum=momentum,
        trainable=trainable,
        masks=masks,
        grad_hooks=grad_hooks,
        max_grad_norm=max_grad_norm,
        seed=seed,
        distributed=distributed,
        loss=loss,
    )
    return trainer.fit(
        data,
        epochs=epochs,
        batch_size=batch_size,
        collate_fn=collate_fn,
        drop_last=drop_last,
        progress=progress,
        checkpoint=checkpoint,
        resume=resume,
    )


fit = deprecated(since="0.1", alternative="weightspace.train.fit_", name="weightspace.train.fit")(
    fit_
)
