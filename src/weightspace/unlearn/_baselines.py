"""The reference and the baselines of the literature, on :class:`Unlearner`'s interface."""

from __future__ import annotations

import copy
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import ClassVar, Literal  # noqa: F401 (Literal: the inherited fields' annotations, for the docs)

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from weightspace._errors import WeightspaceValueError
from weightspace._task_vector import TaskVector
from weightspace.unlearn._base import (
    ScoreName,
    Unlearner,
    _ce,
    _check_fraction,
    _progress_bar,
    _saliency_mask,
    _Task,
    kd_loss,
    masked_softmax_targets,
)

__all__ = [
    "SCRUB",
    "FineTune",
    "GradientAscent",
    "NegGradPlus",
    "RandomLabels",
    "Retrain",
    "SalUn",
    "TaskVectorNegation",
]

# --------------------------------------------------------------------------------------------
# Reference and simple baselines
# --------------------------------------------------------------------------------------------


def _train_on_learn_set(
    method: Unlearner,
    student: nn.Module,
    task: _Task,
    generator: torch.Generator,
    progress: bool,
) -> nn.Module:
    """Train ``student`` with cross-entropy on the task's retain (and new) data."""
    learn = task.learn
    assert learn is not None
    stream = method._stream(learn, generator)
    trainer = method._trainer(student)
    method._loop(
        method._steps(stream.steps_per_epoch),
        lambda: _ce(student, stream.next()),
        trainer,
        progress,
    )
    return student


@dataclass(eq=False)
class Retrain(Unlearner):
    r"""Retrain from scratch on the retain (and new) data: the gold standard of unlearning.

    The model is re-initialised (``reset_parameters()`` of every submodule that has it, seeded,
    or a fresh model from ``init``) and trained with cross-entropy on :math:`D_r \cup D_n` for
    ``epochs`` passes. Its cost is the reference that the other methods' times are divided by.

    Args:
        epochs: Passes over :math:`D_r \cup D_n`.
        lr: Learning rate.
        batch_size: Examples per batch.
        optimizer: ``"adam"`` or ``"sgd"``.
        max_steps: Upper bound on steps.
        init: A function returning a freshly initialised model of the same architecture;
            ``None`` resets the copy's parameters in place.

    Example:
        >>> import torch
        >>> from weightspace.unlearn import Retrain
        >>> net = torch.nn.Linear(4, 3)
        >>> forget = (torch.randn(8, 4), torch.zeros(8, dtype=torch.long))
        >>> retain = (torch.randn(8, 4), torch.ones(8, dtype=torch.long))
        >>> fresh = Retrain(epochs=1).unlearn(net, forget, retain, seed=0)
    """

    epochs: int = 4
    init: Callable[[], nn.Module] | None = None

    def _run(
        self,
        original: nn.Module,
        student: nn.Module,
        task: _Task,
        generator: torch.Generator,
        progress: bool,
    ) -> nn.Module:
        if self.init is not None:
            student = self.init()
            if not isinstance(student, nn.Module):
                raise WeightspaceValueError(
                    f"`init` must return an nn.Module, got {type(student).__name__}"
                )
            student.train()
        else:
            for module in student.modules():
                reset = getattr(module, "reset_parameters", None)
                if callable(reset):
                    reset()
        return _train_on_learn_set(self, student, task, generator, progress)


@dataclass(eq=False)
class FineTune(Unlearner):
    r"""Fine-tune on the retain (and new) data only, relying on catastrophic forgetting.

    The "FT" baseline of the unlearning literature (e.g. Warnecke et al., 2023; Jia et al.,
    NeurIPS 2023, `arXiv:2304.04934 <https://arxiv.org/abs/2304.04934>`_):

    .. math::

        \min_\theta \; \mathbb{E}_{(x,y)\in D_r \cup D_n}\, \ell(f_\theta(x), y) .

    Args:
        epochs: Passes over :math:`D_r \cup D_n`.
        lr: Learning rate.
        batch_size: Examples per batch.
        optimizer: ``"adam"`` or ``"sgd"``.
        max_steps: Upper bound on steps.

    Example:
        >>> from weightspace.unlearn import FineTune
        >>> method = FineTune(epochs=1, lr=1e-3)
    """

    def _run(
        self,
        original: nn.Module,
        student: nn.Module,
        task: _Task,
        generator: torch.Generator,
        progress: bool,
    ) -> nn.Module:
        return _train_on_learn_set(self, student, task, generator, progress)


@dataclass(eq=False)
class NegGradPlus(Unlearner):
    r"""NegGrad+: descend on the retain (and new) data while ascending on the forget data.

    Kurmanji et al., "Towards Unbounded Machine Unlearning", NeurIPS 2023
    (`arXiv:2302.09880 <https://arxiv.org/abs/2302.09880>`_), with :math:`\beta` weighting
    the two terms; one step draws one batch of each set:

    .. math::

        \min_\theta \; \beta\, \mathbb{E}_{D_r \cup D_n}\, \ell(f_\theta(x), y)
        - (1 - \beta)\, \mathbb{E}_{D_f}\, \ell(f_\theta(x), y) .

    Args:
        beta: Weight of the retain term, in (0, 1].
        epochs: Passes over :math:`D_f`.
        lr: Learning rate.
        batch_size: Examples per batch and per set.
        optimizer: ``"adam"`` or ``"sgd"``.
        max_steps: Upper bound on steps.

    Example:
        >>> from weightspace.unlearn import NegGradPlus
        >>> method = NegGradPlus(beta=0.9)
    """

    beta: float = 0.9

    def __post_init__(self) -> None:
        super().__post_init__()
        _check_fraction(self.beta, "beta")

    def _run(
        self,
        original: nn.Module,
        student: nn.Module,
        task: _Task,
        generator: torch.Generator,
        progress: bool,
    ) -> nn.Module:
        forget = self._stream(task.forget, generator)
        learn_data = task.learn
        learn = self._stream(learn_data, generator) if learn_data is not None else None
        beta = float(self.beta)

        def loss() -> Tensor:
            value = -(1.0 - beta) * _ce(student, forget.next())
            if learn is not None:
                value = value + beta * _ce(student, learn.next())
            return value

        self._loop(self._steps(forget.steps_per_epoch), loss, self._trainer(student), progress)
        return student


@dataclass(eq=False)
class GradientAscent(Unlearner):
    r"""Gradient ascent on the forget loss (and, if given, descent on the new class).

    The simplest unlearning baseline (e.g. Thudi et al., 2022; "GA" in SalUn's tables):

    .. math::

        \min_\theta \; -\mathbb{E}_{D_f}\, \ell(f_\theta(x), y)
        \; [+\, \mathbb{E}_{D_n}\, \ell(f_\theta(x), y)] .

    Nothing holds the other classes in place, so a few epochs too many destroy the model; the
    loss is unbounded and training stops early if it becomes non-finite.

    Args:
        epochs: Passes over :math:`D_f`.
        lr: Learning rate.
        batch_size: Examples per batch.
        optimizer: ``"adam"`` or ``"sgd"``.
        max_steps: Upper bound on steps.

    Example:
        >>> from weightspace.unlearn import GradientAscent
        >>> method = GradientAscent(epochs=1, lr=1e-4)
    """

    needs_retain: ClassVar[bool] = False

    def _run(
        self,
        original: nn.Module,
        student: nn.Module,
        task: _Task,
        generator: torch.Generator,
        progress: bool,
    ) -> nn.Module:
        forget = self._stream(task.forget, generator)
        new = self._stream(task.new, generator) if task.new is not None else None

        def loss() -> Tensor:
            value = -_ce(student, forget.next())
            if new is not None:
                value = value + _ce(student, new.next())
            return value

        self._loop(self._steps(forget.steps_per_epoch), loss, self._trainer(student), progress)
        return student


def _random_other_labels(y: Tensor, num_classes: int, generator: torch.Generator) -> Tensor:
    """A label drawn uniformly among the classes other than ``y``, for each entry."""
    r = torch.randint(0, num_classes - 1, y.shape, generator=generator)
    return r + (r >= y).to(r.dtype)


@dataclass(eq=False)
class RandomLabels(Unlearner):
    r"""Random labels: train the forget examples towards random wrong classes, keep the rest.

    The "RL" baseline (Golatkar et al., CVPR 2020; Hayase et al., 2020) that SalUn builds on:
    each forget example gets a label drawn uniformly among the other classes, afresh at every
    step, and a batch of retain (and new) data is trained alongside:

    .. math::

        \min_\theta \; \mathbb{E}_{D_f}\, \ell(f_\theta(x), y') +
        \mathbb{E}_{D_r \cup D_n}\, \ell(f_\theta(x), y), \qquad y' \sim U(\{1..C\}
        \setminus \{y\}) .

    Args:
        epochs: Passes over :math:`D_f`.
        lr: Learning rate.
        batch_size: Examples per batch and per set.
        optimizer: ``"adam"`` or ``"sgd"``.
        max_steps: Upper bound on steps.

    Example:
        >>> from weightspace.unlearn import RandomLabels
        >>> method = RandomLabels(epochs=1)
    """

    def _mask(self, original: nn.Module, task: _Task) -> dict[str, Tensor] | None:
        return None

    def _run(
        self,
        original: nn.Module,
        student: nn.Module,
        task: _Task,
        generator: torch.Generator,
        progress: bool,
    ) -> nn.Module:
        mask = self._mask(original, task)
        forget = self._stream(task.forget, generator)
        learn_data = task.learn
        learn = self._stream(learn_data, generator) if learn_data is not None else None
        c = task.num_classes

        def loss() -> Tensor:
            x, y = forget.next()
            value = F.cross_entropy(student(x), _random_other_labels(y, c, generator))
            if learn is not None:
                value = value + _ce(student, learn.next())
            return value

        self._loop(
            self._steps(forget.steps_per_epoch), loss, self._trainer(student, mask), progress
        )
        return student


@dataclass(eq=False)
class SalUn(RandomLabels):
    r"""SalUn: random-label unlearning restricted to the weights salient for the forget set.

    Fan et al., "SalUn: Empowering Machine Unlearning via Gradient-based Weight Saliency in
    Both Image Classification and Generation", ICLR 2024
    (`arXiv:2310.12508 <https://arxiv.org/abs/2310.12508>`_). The mask keeps the ``fraction``
    of weights with the largest forget-loss gradient magnitude (the paper's default is half),

    .. math::

        m = \mathbb{1}\bigl(|\nabla_\theta \ell(\theta; D_f)| \ge \gamma\bigr), \qquad
        \theta \leftarrow \theta - \eta\, m \odot \nabla_\theta L_{\mathrm{RL}}(\theta),

    and only those weights are updated by the :class:`RandomLabels` objective. The mask of the
    last call is kept in ``mask_``.

    Args:
        fraction: Fraction of all weights that may change, in (0, 1].
        scores: Saliency used for the mask (``"gradient"`` as in the paper, or ``"snip"``,
            ``"fisher"``, ``"wanda"``).
        epochs: Passes over :math:`D_f`.
        lr: Learning rate.
        batch_size: Examples per batch and per set.
        optimizer: ``"adam"`` or ``"sgd"``.
        max_steps: Upper bound on steps.

    Example:
        >>> from weightspace.unlearn import SalUn
        >>> method = SalUn(fraction=0.5, epochs=1)
    """

    fraction: float = 0.5
    scores: ScoreName = "gradient"
    mask_: dict[str, Tensor] = field(default_factory=dict, init=False, repr=False)

    def __post_init__(self) -> None:
        super().__post_init__()
        _check_fraction(self.fraction, "fraction")
        if self.scores not in ("gradient", "snip", "fisher", "wanda"):
            raise WeightspaceValueError(
                f"`scores` must be 'gradient', 'snip', 'fisher' or 'wanda', got {self.scores!r}"
            )

    def _mask(self, original: nn.Module, task: _Task) -> dict[str, Tensor] | None:
        self.mask_ = _saliency_mask(
            original, task.forget, self.scores, float(self.fraction), self.batch_size
        )
        return self.mask_


@dataclass(eq=False)
class SCRUB(Unlearner):
    r"""SCRUB: move away from the teacher on the forget set, stay close on the retain set.

    Kurmanji et al., "Towards Unbounded Machine Unlearning", NeurIPS 2023
    (`arXiv:2302.09880 <https://arxiv.org/abs/2302.09880>`_). The teacher :math:`f_0` is the
    original model; the student starts from it. Each epoch first (for the first
    ``max_epochs`` epochs) takes *max-steps* over the forget set, then *min-steps*:

    .. math::

        \text{max: } \min_\theta -\mathbb{E}_{D_f}\, T^2\,\mathrm{KL}\bigl(p_0^T(x) \,\|\,
        p_\theta^T(x)\bigr), \qquad
        \text{min: } \min_\theta \mathbb{E}_{D_r}\bigl[\alpha\, T^2\,\mathrm{KL}(p_0^T \,\|\,
        p_\theta^T) + \gamma\,\ell(f_\theta(x), y)\bigr] + \mathbb{E}_{D_n}\,\ell ,

    with :math:`p^T` the softmax at temperature :math:`T`. Departure from the paper, for
    cost: an epoch's min-steps are ``min_steps`` batches (default: as many as the
    max-steps), not a full pass over the retain set.

    Args:
        max_epochs: Epochs that include max-steps (the paper's ``msteps``).
        alpha: Weight of the retain distillation term.
        gamma: Weight of the retain cross-entropy term.
        temperature: Distillation temperature :math:`T`.
        min_steps: Min-steps per epoch (``None``: one per forget batch).
        epochs: Epochs in total.
        lr: Learning rate.
        batch_size: Examples per batch and per set.
        optimizer: ``"adam"`` or ``"sgd"``.
        max_steps: Upper bound on steps (max- and min-steps together).

    Example:
        >>> from weightspace.unlearn import SCRUB
        >>> method = SCRUB(epochs=3, max_epochs=2)
    """

    epochs: int = 3
    max_epochs: int = 2
    alpha: float = 1.0
    gamma: float = 1.0
    temperature: float = 4.0
    min_steps: int | None = None

    def __post_init__(self) -> None:
        super().__post_init__()
        if isinstance(self.max_epochs, bool) or not isinstance(self.max_epochs, int):
            raise WeightspaceValueError(f"`max_epochs` must be an int, got {self.max_epochs!r}")
        if not 0 <= self.max_epochs <= self.epochs:
            raise WeightspaceValueError(
                f"`max_epochs` must lie in [0, epochs={self.epochs}], got {self.max_epochs}"
            )
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
        teacher = original
        was_training = teacher.training
        teacher.eval()
        t = float(self.temperature)
        forget = self._stream(task.forget, generator)
        retain = self._stream(task.retain, generator) if task.retain is not None else None
        new = self._stream(task.new, generator) if task.new is not None else None
        trainer = self._trainer(student)
        n_min = self.min_steps if self.min_steps is not None else forget.steps_per_epoch
        budget = self.max_steps if self.max_steps is not None else math.inf
        done = 0
        no_drop = torch.zeros(0, dtype=torch.int64)

        def soft(x: Tensor) -> Tensor:
            with torch.no_grad():
                return masked_softmax_targets(teacher(x), no_drop, t)

        def max_loss() -> Tensor:
            x, _ = forget.next()
            return -kd_loss(student(x), soft(x), t)

        def min_loss() -> Tensor:
            value = torch.zeros(())
            if retain is not None:
                x, y = retain.next()
                logits = student(x)
                value = self.alpha * kd_loss(logits, soft(x), t) + self.gamma * F.cross_entropy(
                    logits, y
                )
            if new is not None:
                value = value + _ce(student, new.next())
            return value

        bar = _progress_bar(
            self.max_epochs * forget.steps_per_epoch + self.epochs * n_min, progress, "SCRUB"
        )
        try:
            for epoch in range(self.epochs):
                phases = [(max_loss, forget.steps_per_epoch)] if epoch < self.max_epochs else []
                phases.append((min_loss, n_min))
                for fn, count in phases:
                    for _ in range(count):
                        if done >= budget or not self._step(trainer, fn()):
                            return student
                        done += 1
                        bar.update(1)
        finally:
            bar.close()
            teacher.train(was_training)
        return student


@dataclass(eq=False)
class TaskVectorNegation(Unlearner):
    r"""Forget by subtracting a "forget" task vector (and add a "new class" one).

    Ilharco et al., "Editing Models with Task Arithmetic", ICLR 2023
    (`arXiv:2212.04089 <https://arxiv.org/abs/2212.04089>`_). The model is fine-tuned on the
    forget set (cross-entropy, original labels) to get :math:`\tau_f = \theta_f - \theta_0`;
    with new data, it is also fine-tuned on the new class (batches of retain data alongside,
    so that the vector does not just raise the new class everywhere) to get :math:`\tau_n`:

    .. math::

        \theta = \theta_0 - \lambda_f\,\tau_f + \lambda_n\,\tau_n .

    The vectors are :class:`~weightspace.TaskVector` objects; the two fine-tunings are the
    method's cost.

    Args:
        scale: :math:`\lambda_f`.
        new_scale: :math:`\lambda_n`.
        epochs: Passes over :math:`D_f` (and over :math:`D_n`) per fine-tuning.
        lr: Learning rate.
        batch_size: Examples per batch.
        optimizer: ``"adam"`` or ``"sgd"``.
        max_steps: Upper bound on steps of each fine-tuning.

    Example:
        >>> from weightspace.unlearn import TaskVectorNegation
        >>> method = TaskVectorNegation(scale=1.0, epochs=1)
    """

    needs_retain: ClassVar[bool] = False
    scale: float = 1.0
    new_scale: float = 1.0

    def __post_init__(self) -> None:
        super().__post_init__()
        for name in ("scale", "new_scale"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise WeightspaceValueError(f"`{name}` must be a number, got {value!r}")
            if not math.isfinite(value):
                raise WeightspaceValueError(f"`{name}` must be finite, got {value!r}")

    def _run(
        self,
        original: nn.Module,
        student: nn.Module,
        task: _Task,
        generator: torch.Generator,
        progress: bool,
    ) -> nn.Module:
        forget = self._stream(task.forget, generator)
        self._loop(
            self._steps(forget.steps_per_epoch),
            lambda: _ce(student, forget.next()),
            self._trainer(student),
            progress,
        )
        tv = TaskVector.from_models(base=original, finetuned=student).materialize()
        tv = tv * -float(self.scale)
        if task.new is not None:
            tuned = copy.deepcopy(original)
            tuned.train()
            new = self._stream(task.new, generator)
            retain = self._stream(task.retain, generator) if task.retain is not None else None

            def loss() -> Tensor:
                value = _ce(tuned, new.next())
                if retain is not None:
                    value = value + _ce(tuned, retain.next())
                return value

            self._loop(self._steps(new.steps_per_epoch), loss, self._trainer(tuned), progress)
            tv_new = TaskVector.from_models(base=original, finetuned=tuned).materialize()
            tv = tv + tv_new * float(self.new_scale)
        return tv.apply_to(original)
