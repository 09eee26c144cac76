"""The one training and evaluation layer: a seeded trainer, batches, losses, metrics.

* :class:`Trainer` holds a model and its optimiser (from :func:`make_optimizer`) with optional
  parameter masks and gradient hooks; :meth:`Trainer.step` takes one step on a loss,
  :meth:`Trainer.fit` runs the seeded loop, with checkpoint and resume to safetensors.
  :func:`fit_` is the one-call form (it trains in place, hence the underscore).
* :func:`batches` is the one batching contract: a ``Dataset``, a ``DataLoader``, an
  ``(inputs, targets)`` pair of tensors or an iterable of ready batches.
* :data:`LossFn` is the one loss convention, ``loss(model, batch) -> scalar``;
  :func:`cross_entropy_loss` is the default for ``(x, y)`` batches and :func:`logits_loss`
  adapts a loss of ``(logits, targets)``.
* :func:`predict`, :func:`evaluate` and :func:`accuracy` evaluate over the same contract, in
  eval mode and without gradients, restoring the model's mode.

The unlearning methods, saliency scores, alignment and task-arithmetic studies all train and
measure through this layer, and so can research code that only needs "train this for a few
epochs, reproducibly".

Launched under ``torchrun`` with a process group initialised (``torch.distributed``), training
becomes data-parallel: each rank reads its share of every shuffled epoch and the gradients and
losses are averaged across ranks. The shuffling is the same in both modes, so ``W`` ranks with
``batch_size=b`` see, at each step, exactly the examples that one process with
``batch_size=W * b`` sees.

Example:
    >>> import torch
    >>> from torch import nn
    >>> from weightspace import train
    >>> g = torch.Generator().manual_seed(0)
    >>> x = torch.randn(256, 2, generator=g)
    >>> y = (x[:, 0] > 0).long()
    >>> _ = torch.manual_seed(0)
    >>> model = nn.Linear(2, 2)
    >>> history = train.fit_(model, (x, y), epochs=20, lr=0.05, seed=0)
    >>> round(history.losses[0], 4), round(history.losses[-1], 4)
    (1.018, 0.2508)
    >>> train.accuracy(model, (x, y))
    0.98828125
"""

from __future__ import annotations

from weightspace.train._batches import Batch as Batch
from weightspace.train._batches import Data as Data
from weightspace.train._batches import batches as batches
from weightspace.train._batches import epoch_order as epoch_order
from weightspace.train._evaluate import Metric as Metric
from weightspace.train._evaluate import accuracy as accuracy
from weightspace.train._evaluate import evaluate as evaluate
from weightspace.train._evaluate import predict as predict
from weightspace.train._fit import fit as fit
from weightspace.train._fit import fit_ as fit_
from weightspace.train._loss import LossFn as LossFn
from weightspace.train._loss import cross_entropy_loss as cross_entropy_loss
from weightspace.train._loss import logits_loss as logits_loss
from weightspace.train._optim import OptimizerName as OptimizerName
from weightspace.train._optim import make_optimizer as make_optimizer
from weightspace.train._trainer import GradHook as GradHook
from weightspace.train._trainer import History as History
from weightspace.train._trainer import NonFiniteLossError as NonFiniteLossError
from weightspace.train._trainer import Trainer as Trainer

__all__ = [
    "Batch",
    "Data",
    "GradHook",
    "History",
    "LossFn",
    "Metric",
    "NonFiniteLossError",
    "OptimizerName",
    "Trainer",
    "accuracy",
    "batches",
    "cross_entropy_loss",
    "epoch_order",
    "evaluate",
    "fit",
    "fit_",
    "logits_loss",
    "make_optimizer",
    "predict",
]
