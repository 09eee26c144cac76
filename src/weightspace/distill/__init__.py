"""Knowledge distillation for any pair of teacher and student ``nn.Module`` objects.

* Losses as small pure functions: :func:`kd_loss` (Hinton et al. 2015, with the :math:`T^2`
  factor), :func:`dkd_loss` (decoupled KD, Zhao et al. 2022), :func:`hint_loss` (FitNets,
  Romero et al. 2015), :func:`attention_map` / :func:`attention_loss` (attention transfer,
  Zagoruyko and Komodakis 2017) and :func:`output_loss` (output matching for regression and
  generative teachers).
* The same as :class:`Term` modules that make up an objective: :class:`Task` (the labels),
  :class:`KD`, :class:`DKD`, :class:`Hint` (with a learnable :func:`connector`),
  :class:`AttentionTransfer` and :class:`OutputMatch`.
* :class:`FeatureCapture` records the outputs of submodules chosen with
  :mod:`weightspace.select`'s grammar through forward hooks, without changing the model.
* :class:`Distiller` is :class:`weightspace.train.Trainer` with a frozen teacher: seeded,
  with a progress bar, safetensors checkpoints and resume, and data-parallel under
  ``torchrun`` with the same code.

Example:
    >>> import torch
    >>> from torch import nn
    >>> from weightspace import distill
    >>> teacher = nn.Sequential(nn.Linear(8, 32), nn.ReLU(), nn.Linear(32, 3))
    >>> student = nn.Sequential(nn.Linear(8, 4), nn.ReLU(), nn.Linear(4, 3))
    >>> x = torch.randn(2, 8)
    >>> hint = distill.Hint.for_models(student, teacher, "1", "1", x)  # 4 -> 32 channels
    >>> hint.connector
    Linear(in_features=4, out_features=32, bias=False)
    >>> d = distill.Distiller(student, teacher, [distill.Task(), distill.KD(4.0), hint])
    >>> len(d.params), d.params[-1][0]  # the student's four tensors and the connector
    (5, 'terms.2.connector.weight')
"""

from __future__ import annotations

from weightspace.distill._capture import FeatureCapture as FeatureCapture
from weightspace.distill._distiller import Distiller as Distiller
from weightspace.distill._distiller import Forward as Forward
from weightspace.distill._losses import Reduction as Reduction
from weightspace.distill._losses import attention_loss as attention_loss
from weightspace.distill._losses import attention_map as attention_map
from weightspace.distill._losses import dkd_loss as dkd_loss
from weightspace.distill._losses import hint_loss as hint_loss
from weightspace.distill._losses import kd_loss as kd_loss
from weightspace.distill._losses import output_loss as output_loss
from weightspace.distill._terms import DKD as DKD
from weightspace.distill._terms import KD as KD
from weightspace.distill._terms import AttentionTransfer as AttentionTransfer
from weightspace.distill._terms import Hint as Hint
from weightspace.distill._terms import OutputMatch as OutputMatch
from weightspace.distill._terms import Outputs as Outputs
from weightspace.distill._terms import Task as Task
from weightspace.distill._terms import Term as Term
from weightspace.distill._terms import connector as connector

__all__ = [
    "DKD",
    "KD",
    "AttentionTransfer",
    "Distiller",
    "FeatureCapture",
    "Forward",
    "Hint",
    "OutputMatch",
    "Outputs",
    "Reduction",
    "Task",
    "Term",
    "attention_loss",
    "attention_map",
    "connector",
    "dkd_loss",
    "hint_loss",
    "kd_loss",
    "output_loss",
]
