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
import logging
import math
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field, fields
from typing import Any, ClassVar, Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from weightspace import train
from weightspace._errors import WeightspaceValueError
from weightspace._world import world_of
from weightspace.saliency import _masks, _scores
from weightspace.train._batches import collect_pair

__all__ = ["Unlearner"]

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
        forget: train.Data,
        retain: train.Data | None = None,
        new: train.Data | None = None,
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
        before each step (by :meth:`weightspace.train.Trainer.step`, as
        ``DistributedDataParallel`` does), so a cross-entropy method takes the steps that one
        process with ``W * batch_size`` takes. Every rank must pass the same data, settings and
        ``seed``; every rank returns the same model.

        The data may come in any form of :func:`weightspace.train.batches` (an ``(inputs,
        targets)`` pair of tensors, a ``Dataset``, a ``DataLoader``...); a form other than a
        pair is read once into one pair, since the methods shuffle and mix the sets. If a
        loss becomes NaN or infinite, the method logs a warning and stops, returning the
        weights of the last finite step.

        Args:
            model: A classifier mapping a batch of inputs to logits ``[N, classes]``; not
                modified.
            forget: The examples to forget, with their original labels.
            retain: Examples whose behaviour must be kept (required by
                every method but :class:`GradientAscent` and :class:`MaskedFineTune`).
            new: Examples of a class to learn; its targets may be the forgotten
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
        fx, fy = collect_pair(forget, "forget")
        num_classes = _num_outputs(model, fx)
        _check_labels(fy, num_classes, "forget")
        r = None
        if retain is not None:
            r = collect_pair(retain, "retain", allow_empty=not self.needs_retain)
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
            n = collect_pair(new, "new")
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

    def _stream(self, data: Pair, generator: torch.Generator) -> _Stream:
        rank, world = self._world_
        return _Stream(data, self.batch_size, generator, rank, world)

    def _trainer(self, model: nn.Module, mask: Mapping[str, Tensor] | None = None) -> train.Trainer:
        return train.Trainer(
            model,
            optimizer=self.optimizer,
            lr=float(self.lr),
            masks=mask,
            distributed=self._world_[1] > 1,
        )

    def _step(self, trainer: train.Trainer, loss: Tensor) -> bool:
        """Take one step; on a non-finite loss, log it, leave the weights and return False."""
        try:
            trainer.step(loss)
        except train.NonFiniteLossError as err:
            logger.warning("%s: %s; stopping early", type(self).__name__, err)
            return False
        return True

    def _loop(
        self,
        steps: int,
        loss_fn: Callable[[], Tensor],
        trainer: train.Trainer,
        progress: bool,
    ) -> None:
        bar = _progress_bar(steps, progress, type(self).__name__)
        try:
            for _ in range(steps):
                if not self._step(trainer, loss_fn()):
                    break
                bar.update(1)
        finally:
            bar.close()


class _Stream:
    """Endless shuffled batches of a pair: one :func:`weightspace.train.batches` pass after another.

    Each pass draws its order from the shared ``generator`` (so the streams of one call and
    the random labels interleave their draws in a fixed order). With ``world`` ranks, a global
    batch of ``batch_size * world`` examples is dealt out round-robin, so the ranks' batches
    together are the batch one process with ``batch_size * world`` would read.
    """

    def __init__(
        self,
        data: Pair,
        batch_size: int,
        generator: torch.Generator,
        rank: int = 0,
        world: int = 1,
    ) -> None:
        self.data = data
        self.batch_size = batch_size
        self.generator = generator
        self.rank, self.world = rank, world
        self._it: Iterator[Any] | None = None

    def __len__(self) -> int:
        return int(self.data[0].shape[0])

    @property
    def steps_per_epoch(self) -> int:
        return max(1, math.ceil(len(self) / (self.batch_size * self.world)))

    def next(self) -> Pair:
        """The next batch (this rank's share of the next global batch)."""
        batch = next(self._it, None) if self._it is not None else None
        if batch is None:
            self._it = train.batches(
                self.data,
                batch_size=self.batch_size * self.world,
                shuffle=True,
                seed=self.generator,
            )
            batch = next(self._it)
        x, y = batch
        if self.world == 1:
            return x, y
        xs, ys = x[self.rank :: self.world], y[self.rank :: self.world]
        if xs.shape[0] == 0:  # a last global batch smaller than the world: reuse its head
            return x[:1], y[:1]
        return xs, ys


def masked_softmax_targets(logits: Tensor, drop: Tensor, temperature: float) -> Tensor:
    """Softmax of ``logits / temperature`` with the classes in ``drop`` removed (renormalised)."""
    z = logits / temperature
    if drop.numel():
        z = z.index_fill(1, drop, float("-inf"))
    return F.softmax(z, dim=1)


def kd_loss(student_logits: Tensor, target_probs: Tensor, temperature: float) -> Tensor:
    r"""Distillation loss :math:`T^2\,\mathrm{KL}(q \,\|\, \mathrm{softmax}(z / T))`, batch mean."""
    log_p = F.log_softmax(student_logits / temperature, dim=1)
    kl = (target_probs * (target_probs.clamp_min(1e-12).log() - log_p)).sum(1)
    return kl.mean() * temperature**2


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
