r"""Unlearning methods with one interface: settings in ``__init__``, :meth:`Unlearner.unlearn`.

Every method takes a trained classifier, the *forget* data (examples with their original
labels), the *retain* data and, for class replacement, the *new* data (examples of a new class
with the output index it should take, which may be the forgotten class's index), and returns
a new model. The input model is never changed: methods work on a deep copy.

Notation: :math:`f_\theta` is the model being edited, :math:`f_0` the original (frozen),
:math:`D_f, D_r, D_n` the forget, retain and new sets, :math:`\ell` the cross-entropy.
"""

from __future__ import annotations

import abc
import copy
import itertools
import logging
import math
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields
from typing import ClassVar, Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from weightspace._errors import WeightspaceValueError
from weightspace._task_vector import TaskVector
from weightspace._world import world_of
from weightspace.saliency import _masks, _scores
from weightspace.saliency._batches import as_pair
from weightspace.unlearn._train import Stream, Trainer, kd_loss, masked_softmax_targets

__all__ = [
    "SCRUB",
    "FineTune",
    "GradientAscent",
    "MaskedFineTune",
    "NegGradPlus",
    "RandomLabels",
    "Redistribute",
    "Retrain",
    "SalUn",
    "TaskVectorNegation",
    "Unlearner",
]

logger = logging.getLogger(__name__)

Pair = tuple[Tensor, Tensor]
ScoreName = Literal["gradient", "snip", "fisher", "wanda"]


def _progress_bar(total: int, progress: bool, desc: str):  # type: ignore[no-untyped-def]
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, disable=not progress, leave=False)


@dataclass(frozen=True)
class _Task:
    forget: Pair
    retain: Pair | None
    new: Pair | None
    num_classes: int
    forget_classes: Tensor

    @property
    def learn(self) -> Pair | None:
        """Retain and new data together (what a retrained model is trained on)."""
        parts = [p for p in (self.retain, self.new) if p is not None]
        if not parts:
            return None
        return torch.cat([p[0] for p in parts]), torch.cat([p[1] for p in parts])


def _num_outputs(model: nn.Module, x: Tensor) -> int:
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            out = model(x[:1])
    finally:
        model.train(was_training)
    if not isinstance(out, Tensor) or out.ndim != 2:
        raise WeightspaceValueError(
            "`model` must map a batch of inputs to logits of shape [N, classes], got "
            f"{type(out).__name__} {list(out.shape) if isinstance(out, Tensor) else ''}"
        )
    return int(out.shape[1])


def _check_labels(y: Tensor, num_classes: int, argument: str) -> None:
    if y.dtype != torch.int64 or y.ndim != 1:
        raise WeightspaceValueError(
            f"the targets of `{argument}` must be an int64 tensor of shape [N], got {y.dtype} "
            f"of shape {list(y.shape)}"
        )
    bad = y[(y < 0) | (y >= num_classes)]
    if bad.numel():
        raise WeightspaceValueError(
            f"`{argument}` has the classes {sorted(set(bad.tolist()))[:10]}, which are not among "
            f"the model's {num_classes} outputs; the model must have an output for every class "
            "(a new class may reuse the forgotten class's output)"
        )


@dataclass(eq=False)
class Unlearner(abc.ABC):
    r"""Base class of the unlearning methods: settings as fields, :meth:`unlearn` does the work.

    Subclasses are dataclasses; their fields are the settings (validated at construction) and
    the state learned by the last call ends in ``_`` (scikit-learn's convention):
    :attr:`elapsed_s_` (wall time of :meth:`unlearn`) and, for masked methods, ``mask_``.

    Args:
        epochs: Passes over the method's main data stream (see each method).
        lr: Learning rate.
        batch_size: Examples per batch and per data stream.
        optimizer: ``"adam"`` or ``"sgd"`` (momentum 0.9).
        max_steps: Upper bound on optimisation steps in total (``None``: no bound).

    Example:
        >>> import torch
        >>> from weightspace.unlearn import GradientAscent
        >>> net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(4, 3))
        >>> forget = (torch.randn(8, 4), torch.zeros(8, dtype=torch.long))
        >>> retain = (torch.randn(8, 4), torch.ones(8, dtype=torch.long))
        >>> new = GradientAscent(epochs=1).unlearn(net, forget, retain, seed=0)
        >>> new is net
        False
    """

    epochs: int = 1
    lr: float = 1e-3
    batch_size: int = 128
    optimizer: Literal["adam", "sgd"] = "adam"
    max_steps: int | None = None

    needs_retain: ClassVar[bool] = True
    elapsed_s_: float = field(default=float("nan"), init=False, repr=False)
    _world_: tuple[int, int] = field(default=(0, 1), init=False, repr=False)

    def __post_init__(self) -> None:
        for name in ("epochs", "batch_size"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise WeightspaceValueError(f"`{name}` must be a positive int, got {value!r}")
        if self.max_steps is not None and (
            isinstance(self.max_steps, bool)
            or not isinstance(self.max_steps, int)
            or self.max_steps < 1
        ):
            raise WeightspaceValueError(
                f"`max_steps` must be a positive int or None, got {self.max_steps!r}"
            )
        if not isinstance(self.lr, (int, float)) or not math.isfinite(self.lr) or self.lr <= 0:
            raise WeightspaceValueError(f"`lr` must be a positive number, got {self.lr!r}")
        if self.optimizer not in ("adam", "sgd"):
            raise WeightspaceValueError(
                f"`optimizer` must be 'adam' or 'sgd', got {self.optimizer!r}"
            )

    def settings(self) -> dict[str, object]:
        """Return the settings (the constructor's arguments) as a dict.

        Returns:
            ``name -> value`` for every field set in ``__init__``.
        """
        return {f.name: getattr(self, f.name) for f in fields(self) if f.init}

    def unlearn(
        self,
        model: nn.Module,
        forget: Pair,
        retain: Pair | None = None,
        new: Pair | None = None,
        *,
        seed: int = 0,
        progress: bool = False,
        distributed: bool | None = None,
    ) -> nn.Module:
        """Return a new model that has forgotten ``forget`` (and learnt ``new``, if given).

        All randomness (shuffling, random labels, re-initialisation, dropout) comes from
        ``seed``: the result is the same bit for bit on the same machine, and the global torch
        random state is left as it was.

        Under ``torchrun`` with an initialised process group of ``W > 1`` ranks, training is
        data-parallel: every rank draws the same shuffled order, reads every ``W``-th example of
        each global batch of ``W * batch_size`` and the gradients are averaged across ranks
        before each step (as ``DistributedDataParallel`` does), so a cross-entropy method takes
        the steps that one process with ``W * batch_size`` takes. Every rank must pass the same
        data, settings and ``seed``; every rank returns the same model.

        Args:
            model: A classifier mapping a batch of inputs to logits ``[N, classes]``; not
                modified.
            forget: ``(inputs, targets)`` of the examples to forget, with their original labels.
            retain: ``(inputs, targets)`` of examples whose behaviour must be kept (required by
                every method but :class:`GradientAscent` and :class:`MaskedFineTune`).
            new: ``(inputs, targets)`` of a class to learn; its targets may be the forgotten
                class's output (replacement "in its place").
            seed: Seed of every random choice.
            progress: Show a progress bar.
            distributed: ``None`` (default) is data-parallel exactly when a process group of
                more than one rank is initialised; ``True`` requires one; ``False`` never is.

        Returns:
            A new model, in eval mode.

        Raises:
            WeightspaceValueError: if ``model`` is not a module, ``forget`` is empty, a label
                is not among the model's outputs, data is malformed, or a mask selects nothing.
            ShapeMismatchError: if inputs and targets differ in length.

        Shapes:
            - inputs: ``[N, *]`` as the model takes them; targets: ``[N]`` int64.
        """
        if not isinstance(model, nn.Module):
            raise WeightspaceValueError(f"`model` must be an nn.Module, got {type(model).__name__}")
        if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
            raise WeightspaceValueError(f"`seed` must be a non-negative int, got {seed!r}")
        fx, fy = as_pair(forget, "forget")
        num_classes = _num_outputs(model, fx)
        _check_labels(fy, num_classes, "forget")
        r = None
        if retain is not None:
            r = as_pair(retain, "retain", allow_empty=not self.needs_retain)
            _check_labels(r[1], num_classes, "retain")
            if r[0].shape[0] == 0:
                r = None
        if r is None and self.needs_retain:
            raise WeightspaceValueError(
                f"{type(self).__name__} needs non-empty `retain` data, got "
                f"{'None' if retain is None else 'an empty set'}"
            )
        n = None
        if new is not None:
            n = as_pair(new, "new")
            _check_labels(n[1], num_classes, "new")
        task = _Task(
            forget=(fx, fy),
            retain=r,
            new=n,
            num_classes=num_classes,
            forget_classes=torch.unique(fy),
        )
        self._world_ = world_of(distributed)
        start = time.perf_counter()
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            generator = torch.Generator().manual_seed(seed)
            student = copy.deepcopy(model)
            student.train()
            out = self._run(model, student, task, generator, progress)
        out.eval()
        self.elapsed_s_ = time.perf_counter() - start
        logger.info("%s took %.2f s", type(self).__name__, self.elapsed_s_)
        return out

    @abc.abstractmethod
    def _run(
        self,
        original: nn.Module,
        student: nn.Module,
        task: _Task,
        generator: torch.Generator,
        progress: bool,
    ) -> nn.Module: ...

    # ---- helpers for subclasses ----------------------------------------------------------

    def _steps(self, per_epoch: int) -> int:
        total = self.epochs * per_epoch
        return total if self.max_steps is None else min(total, self.max_steps)

    def _stream(self, data: Pair, generator: torch.Generator) -> Stream:
        rank, world = self._world_
        return Stream(data[0], data[1], self.batch_size, generator, rank, world)

    def _trainer(self, model: nn.Module, mask: Mapping[str, Tensor] | None = None) -> Trainer:
        return Trainer(model, self.optimizer, float(self.lr), mask, world=self._world_[1])

    def _loop(
        self,
        steps: int,
        loss_fn: Callable[[], Tensor],
        trainer: Trainer,
        progress: bool,
    ) -> None:
        bar = _progress_bar(steps, progress, type(self).__name__)
        try:
            for _ in range(steps):
                value = trainer.step(loss_fn())
                if not math.isfinite(value):
                    logger.warning("%s: the loss is %s; stopping early", type(self).__name__, value)
                    break
                bar.update(1)
        finally:
            bar.close()


def _check_fraction(value: object, name: str, *, allow_none: bool = False) -> None:
    if value is None and allow_none:
        return
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value <= 1:
        raise WeightspaceValueError(f"`{name}` must be a number in (0, 1], got {value!r}")


def _saliency_mask(
    model: nn.Module,
    data: Pair,
    scores: ScoreName,
    fraction: float,
    batch_size: int,
) -> dict[str, Tensor]:
    if scores == "gradient":
        s = _scores.gradient(model, data, batch_size=batch_size)
    elif scores == "snip":
        s = _scores.snip(model, data, batch_size=batch_size)
    elif scores == "fisher":
        s = _scores.fisher(model, data, batch_size=min(batch_size, 64))
    else:
        s = _scores.wanda(model, data, batch_size=batch_size)
    mask = _masks.top_k(s, fraction=fraction)
    if _masks.mask_stats(mask).empty:
        raise WeightspaceValueError(
            f"the saliency mask selects nothing (fraction={fraction} of "
            f"{sum(t.numel() for t in s.values())} weights); pass a larger `fraction`"
        )
    return mask


def _ce(model: nn.Module, batch: Pair) -> Tensor:
    return F.cross_entropy(model(batch[0]), batch[1])


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
                        if done >= budget:
                            return student
                        trainer.step(fn())
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

    temperature: float = 2.0
    forget_weight: float = 1.0
    retain_weight: float = 1.0
    label_weight: float = 0.0
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
