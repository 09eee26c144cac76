"""The catalogue's baseline (:class:`MaskedFineTune`) and our procedure (:class:`Redistribute`)."""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from typing import ClassVar, Literal  # noqa: F401 (Literal: the inherited fields' annotations, for the docs)

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from weightspace._errors import WeightspaceValueError
from weightspace.unlearn._base import (
    ScoreName,
    Unlearner,
    _ce,
    _check_fraction,
    _saliency_mask,
    _Task,
    kd_loss,
    masked_softmax_targets,
)

__all__ = ["MaskedFineTune", "Redistribute"]

# --------------------------------------------------------------------------------------------
# The catalogue's baseline and our procedure
# --------------------------------------------------------------------------------------------


@dataclass(eq=False)
class MaskedFineTune(Unlearner):
    r"""The catalogue's baseline: train only the weights most involved in the forget class.

    The weights with the top ``fraction`` of saliency on the forget set (``scores``) are the
    only ones that change; the loss favours the new class and penalises the old one:

    .. math::

        \min_\theta \; \mathbb{E}_{D_n}\, \ell(f_\theta(x), y)
        - \beta\, \mathbb{E}_{D_f}\, \ell(f_\theta(x), y), \qquad
        \theta \leftarrow \theta - \eta\, m \odot \nabla_\theta L .

    Without a retain term and with an unbounded penalty, it is the method whose pitfalls the
    project studies (other classes drift, confidence on look-alike inputs). The mask of the
    last call is kept in ``mask_``.

    Args:
        fraction: Fraction of all weights that may change, in (0, 1].
        beta: Weight :math:`\beta` of the penalty on the forget class.
        scores: Saliency used for the mask: ``"gradient"``, ``"snip"``, ``"fisher"`` or
            ``"wanda"``.
        epochs: Passes over the larger of :math:`D_f` and :math:`D_n`.
        lr: Learning rate.
        batch_size: Examples per batch and per set.
        optimizer: ``"adam"`` or ``"sgd"``.
        max_steps: Upper bound on steps.

    Example:
        >>> from weightspace.unlearn import MaskedFineTune
        >>> method = MaskedFineTune(fraction=0.05, beta=0.5)
    """

    needs_retain: ClassVar[bool] = False
    fraction: float = 0.05
    beta: float = 1.0
    scores: ScoreName = "gradient"
    mask_: dict[str, Tensor] = field(default_factory=dict, init=False, repr=False)

    def __post_init__(self) -> None:
        super().__post_init__()
        _check_fraction(self.fraction, "fraction")
        if isinstance(self.beta, bool) or not isinstance(self.beta, (int, float)) or self.beta < 0:
            raise WeightspaceValueError(f"`beta` must be a number >= 0, got {self.beta!r}")
        if self.scores not in ("gradient", "snip", "fisher", "wanda"):
            raise WeightspaceValueError(
                f"`scores` must be 'gradient', 'snip', 'fisher' or 'wanda', got {self.scores!r}"
            )

    def _run(
        self,
        original: nn.Module,
        student: nn.Module,
        task: _Task,
        generator: torch.Generator,
        progress: bool,
    ) -> nn.Module:
        self.mask_ = _saliency_mask(
            original, task.forget, self.scores, float(self.fraction), self.batch_size
        )
        forget = self._stream(task.forget, generator)
        new = self._stream(task.new, generator) if task.new is not None else None
        per_epoch = max(forget.steps_per_epoch, new.steps_per_epoch if new else 0)
        beta = float(self.beta)

        def loss() -> Tensor:
            value = -beta * _ce(student, forget.next())
            if new is not None:
                value = value + _ce(student, new.next())
            return value

        self._loop(self._steps(per_epoch), loss, self._trainer(student, self.mask_), progress)
        return student


@dataclass(eq=False)
class Redistribute(Unlearner):
    r"""Our procedure: hand the forgotten class's probability to the classes ranked next.

    The original model's predictions with the forgotten class removed become the targets on
    the forget set; everything else is kept by distillation, and the new class is learnt from
    its labels.

    A model retrained without the forget class sends its examples to the classes they
    resemble most; the original model :math:`f_0` already knows that ranking. With
    :math:`p_0^{T,\setminus F}` the teacher's softmax at temperature :math:`T` with the
    forgotten classes :math:`F` removed (renormalised), one step draws a batch of each set and
    minimises

    .. math::

        \lambda_f\,\mathbb{E}_{D_f}\,T^2\,\mathrm{KL}\bigl(p_0^{T,\setminus F} \,\|\,
        p_\theta^T\bigr)
        + \lambda_r\,\mathbb{E}_{D_r}\,T^2\,\mathrm{KL}\bigl(p_0^{T,\setminus F} \,\|\,
        p_\theta^T\bigr)
        + \mathbb{E}_{D_n}\,\ell(f_\theta(x), y) .

    The targets need no labels on the retain set, no ascent (the loss is bounded below by 0),
    and are those of a model that never had the forgotten class except for the one output
    that the new class takes over. Optionally only a ``fraction`` of the weights (top
    forget-set gradient saliency, as in SalUn) may change. Related ideas: distillation-based
    unlearning (SCRUB, Kurmanji et al., 2023; "bad teacher", Chundawat et al., AAAI 2023,
    `arXiv:2205.08096 <https://arxiv.org/abs/2205.08096>`_).

    The defaults are the settings of the project-1 study (``docs/reports``): 8 passes,
    :math:`T = 2`, :math:`\lambda_f = 1`, :math:`\lambda_r = 2` and a retain cross-entropy
    of weight 1 (before 0.1 the defaults were 1 pass, :math:`\lambda_r = 1` and no retain
    cross-entropy, which lost several points of retain accuracy).

    Args:
        temperature: Distillation temperature :math:`T`.
        forget_weight: :math:`\lambda_f`.
        retain_weight: :math:`\lambda_r`.
        label_weight: Weight of an extra cross-entropy on the retain labels (0: none).
        fraction: Fraction of weights that may change, or ``None`` for all.
        epochs: Passes over the larger of :math:`D_f` and :math:`D_n`.
        lr: Learning rate.
        batch_size: Examples per batch and per set.
        optimizer: ``"adam"`` or ``"sgd"``.
        max_steps: Upper bound on steps.

    Example:
        >>> from weightspace.unlearn import Redistribute
        >>> method = Redistribute(temperature=2.0, max_steps=200)
    """

    epochs: int = 8
    temperature: float = 2.0
    forget_weight: float = 1.0
    retain_weight: float = 2.0
    label_weight: float = 1.0
    fraction: float | None = None
    mask_: dict[str, Tensor] = field(default_factory=dict, init=False, repr=False)

    def __post_init__(self) -> None:
        super().__post_init__()
        _check_fraction(self.fraction, "fraction", allow_none=True)
        for name in ("temperature", "forget_weight", "retain_weight", "label_weight"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0:
                raise WeightspaceValueError(f"`{name}` must be a number >= 0, got {value!r}")
        if self.temperature <= 0:
            raise WeightspaceValueError(f"`temperature` must be > 0, got {self.temperature!r}")

    def _run(
        self,
        original: nn.Module,
        student: nn.Module,
        task: _Task,
        generator: torch.Generator,
        progress: bool,
    ) -> nn.Module:
        mask = None
        if self.fraction is not None:
            mask = _saliency_mask(
                original, task.forget, "gradient", float(self.fraction), self.batch_size
            )
            self.mask_ = mask
        teacher = original
        was_training = teacher.training
        teacher.eval()
        t = float(self.temperature)
        drop = task.forget_classes
        forget = self._stream(task.forget, generator)
        retain = self._stream(task.retain, generator) if task.retain is not None else None
        new = self._stream(task.new, generator) if task.new is not None else None
        per_epoch = max(forget.steps_per_epoch, new.steps_per_epoch if new else 0)

        def soft(x: Tensor) -> Tensor:
            with torch.no_grad():
                return masked_softmax_targets(teacher(x), drop, t)

        def loss() -> Tensor:
            # One forward pass of the student (and one of the teacher) over all three batches.
            xs = [forget.next()[0]]
            yr = None
            if retain is not None:
                xr, yr = retain.next()
                xs.append(xr)
            n_soft = [x.shape[0] for x in xs]
            yn = None
            if new is not None:
                xn, yn = new.next()
                xs.append(xn)
            logits = student(torch.cat(xs))
            targets = soft(torch.cat(xs[: len(n_soft)]))
            bounds = [0]
            for k in n_soft:
                bounds.append(bounds[-1] + k)
            parts = [logits[a:b] for a, b in itertools.pairwise(bounds)]
            soft_parts = [targets[a:b] for a, b in itertools.pairwise(bounds)]
            if yn is not None:
                parts.append(logits[bounds[-1] :])
            value = self.forget_weight * kd_loss(parts[0], soft_parts[0], t)
            if retain is not None:
                value = value + self.retain_weight * kd_loss(parts[1], soft_parts[1], t)
                if self.label_weight and yr is not None:
                    value = value + self.label_weight * F.cross_entropy(parts[1], yr)
            if yn is not None:
                value = value + F.cross_entropy(parts[-1], yn)
            return value

        try:
            self._loop(self._steps(per_epoch), loss, self._trainer(student, mask), progress)
        finally:
            teacher.train(was_training)
        return student
