"""A plain, seeded training loop that also runs data-parallel under ``torchrun``.

:func:`fit` trains any ``nn.Module`` on a pair of tensors ``(x, y)`` (cross-entropy by default)
or on any dataset with a ``collate_fn`` and a ``loss``; :func:`predict` and :func:`accuracy`
evaluate in batches. The examples' pretraining and fine-tuning runs use it, and so can research
code that only needs "train this for a few epochs, reproducibly".

Launched under ``torchrun`` with a process group initialised (``torch.distributed``), :func:`fit`
becomes data-parallel: the model is wrapped in ``DistributedDataParallel``, each rank reads its
share of every shuffled epoch, and the losses are averaged across ranks. The shuffling is the
same in both modes, so ``W`` ranks with ``batch_size=b`` see, at each step, exactly the examples
that one process with ``batch_size=W * b`` sees.

Example:
    >>> import torch
    >>> from torch import nn
    >>> from weightspace import train
    >>> g = torch.Generator().manual_seed(0)
    >>> x = torch.randn(256, 2, generator=g)
    >>> y = (x[:, 0] > 0).long()
    >>> model = nn.Linear(2, 2)
    >>> history = train.fit(model, (x, y), epochs=20, lr=0.05, seed=0)
    >>> history.losses[-1] < history.losses[0], train.accuracy(model, (x, y)) > 0.9
    (True, True)
"""

from __future__ import annotations

from weightspace.train._fit import History as History
from weightspace.train._fit import accuracy as accuracy
from weightspace.train._fit import fit as fit
from weightspace.train._fit import predict as predict

__all__ = ["History", "accuracy", "fit", "predict"]
