"""Forget a class, or replace it by a new one, in a trained classifier; and measure it.

Methods share one interface (:class:`Unlearner`): settings go to the constructor,
``unlearn(model, forget, retain, new)`` returns a new model and never changes its input, and
``elapsed_s_`` holds the wall time of the last call, to compare with :class:`Retrain`, the
gold standard that every table includes.

* Reference and baselines: :class:`Retrain`, :class:`FineTune`, :class:`GradientAscent`,
  :class:`NegGradPlus`, :class:`RandomLabels`, :class:`TaskVectorNegation`.
* From the literature: :class:`SalUn` (saliency-masked random labels), :class:`SCRUB`
  (teacher-student max/min steps).
* The catalogue's baseline: :class:`MaskedFineTune` (train only the weights most involved in
  the forget class, with a loss for the new class and against the old one).
* Ours: :class:`Redistribute` (distil the original model with the forgotten class removed).
* Metrics: :func:`holdout_mia` (can the model tell the forget set from unseen examples of
  the same class? the membership test a retrained model passes), :func:`membership_inference`
  (the "MIA efficacy" of the literature, with the protocol, and what it measures, in its
  docstring) and :func:`evaluate` (accuracies by :func:`weightspace.train.accuracy` and both
  attacks with their own accuracies, as an :class:`UnlearnReport`). ``unlearn.accuracy`` is
  a deprecated alias of :func:`weightspace.train.accuracy`.

Methods train through :class:`weightspace.train.Trainer` (its ``step``) and read their data
through :func:`weightspace.train.batches`; the data may come in any of its forms.

Example:
    >>> import torch
    >>> from weightspace import unlearn
    >>> net = torch.nn.Linear(4, 3)
    >>> forget = (torch.randn(16, 4), torch.zeros(16, dtype=torch.long))
    >>> retain = (torch.randn(32, 4), torch.randint(1, 3, (32,)))
    >>> method = unlearn.Redistribute(max_steps=20)
    >>> edited = method.unlearn(net, forget, retain, seed=0)
    >>> report = unlearn.evaluate(edited, forget=forget, retain=retain, test=retain, mia=False)
    >>> report.forget_accuracy <= 1.0
    True
"""

from __future__ import annotations

from weightspace.unlearn._base import Unlearner as Unlearner
from weightspace.unlearn._baselines import SCRUB as SCRUB
from weightspace.unlearn._baselines import FineTune as FineTune
from weightspace.unlearn._baselines import GradientAscent as GradientAscent
from weightspace.unlearn._baselines import NegGradPlus as NegGradPlus
from weightspace.unlearn._baselines import RandomLabels as RandomLabels
from weightspace.unlearn._baselines import Retrain as Retrain
from weightspace.unlearn._baselines import SalUn as SalUn
from weightspace.unlearn._baselines import TaskVectorNegation as TaskVectorNegation
from weightspace.unlearn._metrics import HoldoutMIAResult as HoldoutMIAResult
from weightspace.unlearn._metrics import MIAResult as MIAResult
from weightspace.unlearn._metrics import UnlearnReport as UnlearnReport
from weightspace.unlearn._metrics import accuracy as accuracy
from weightspace.unlearn._metrics import evaluate as evaluate
from weightspace.unlearn._metrics import holdout_mia as holdout_mia
from weightspace.unlearn._metrics import membership_inference as membership_inference
from weightspace.unlearn._redistribute import MaskedFineTune as MaskedFineTune
from weightspace.unlearn._redistribute import Redistribute as Redistribute

__all__ = [
    "SCRUB",
    "FineTune",
    "GradientAscent",
    "HoldoutMIAResult",
    "MIAResult",
    "MaskedFineTune",
    "NegGradPlus",
    "RandomLabels",
    "Redistribute",
    "Retrain",
    "SalUn",
    "TaskVectorNegation",
    "UnlearnReport",
    "Unlearner",
    "accuracy",
    "evaluate",
    "holdout_mia",
    "membership_inference",
]
