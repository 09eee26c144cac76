"""The one trainer of the library: seeded steps, masks and hooks, DDP-equivalent averaging."""

from __future__ import annotations

import contextlib
import logging
import math
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import Tensor, nn

from weightspace._errors import WeightspaceValueError
from weightspace._world import world_of
from weightspace.train._batches import (
    Batch,
    Collate,
    Data,
    Source,
    batch_len,
    epoch_order,
    to_device,
)
from weightspace.train._checks import check_model, non_negative, positive_int, seed_int
from weightspace.train._loss import LossFn, cross_entropy_loss
from weightspace.train._optim import OptimizerName, make_optimizer

__all__ = ["GradHook", "History", "NonFiniteLossError", "Trainer"]

logger = logging.getLogger(__name__)

GradHook = Callable[[dict[str, Tensor]], None]
"""``hook(grads)``: edits the averaged gradients (``name -> grad``) in place before a step."""


class NonFiniteLossError(WeightspaceValueError):
    """The loss of a step is NaN or infinite; the step was not taken."""


@dataclass(frozen=True)
class History:
    """What :meth:`Trainer.fit` (or :func:`fit_`) did.

    Attributes:
        losses: Mean training loss of each epoch (over every rank's batches when distributed),
            including the epochs of a checkpoint that the run resumed from.
        steps: Optimiser steps taken in all (the same on every rank).
        seconds: Wall time of this call.
        world_size: Number of data-parallel processes (1 when serial).

    Example:
        >>> from weightspace.train import History
        >>> History(losses=(0.9, 0.4), steps=20, seconds=0.1).final_loss
        0.4
    """

    losses: tuple[float, ...] = field(metadata={"help": "mean loss of each epoch"})
    steps: int = field(metadata={"help": "optimiser steps"})
    seconds: float = field(metadata={"help": "wall time"})
    world_size: int = field(default=1, metadata={"help": "data-parallel processes"})

    @property
    def final_loss(self) -> float:
        """The mean loss of the last epoch."""
        return self.losses[-1]


def _trainable_names(model: nn.Module, trainable: object) -> set[str]:
    from weightspace import select

    return set(select.parameters(model, trainable).names_a)  # type: ignore[arg-type]


class Trainer:
    r"""One model, its optimiser and the rules of a training step.

    The low-level :meth:`step` takes a loss already computed and does everything else:
    ``zero_grad``, ``backward``, averaging the gradients across ranks, gradient hooks, masks,
    clipping and the optimiser step. :meth:`fit` is the whole seeded loop over data, with
    checkpoints; :meth:`compute_loss` is the one hook a subclass overrides (a distillation
    trainer adds its frozen teacher there).

    Under ``torchrun`` with an initialised process group of ``W > 1`` ranks, every rank starts
    from rank 0's parameters and buffers, and :meth:`step` averages the gradients (and the
    loss) across ranks before using them, in float64, as ``DistributedDataParallel`` does in
    float32: ``W`` ranks with batches of ``b`` take the step one process takes with batches of
    ``W * b`` (for a mean-reduced loss and equal batch sizes). The model is not wrapped, so a
    loss may run it several times per step.

    Args:
        model: The network, trained in place on the device of its parameters.
        optimizer: ``"adam"``, ``"adamw"`` or ``"sgd"`` (see :func:`make_optimizer`).
        lr: Learning rate.
        weight_decay: The optimiser's weight decay.
        momentum: SGD momentum (ignored by Adam).
        trainable: Which parameters to train, in :func:`weightspace.select.parameters`'
            grammar (names, dotted suffixes, a regex, a preset); ``None`` trains every
            parameter with ``requires_grad``. :meth:`fit` sets ``requires_grad=False`` on the
            others for its loop and restores it afterwards.
        masks: ``name -> bool tensor`` of the parameter's shape: only the ``True`` entries
            change; the ``False`` entries, and every trainable parameter not named, keep the
            values they had when the trainer was built.
        grad_hooks: Functions ``hook(grads)`` called in turn after the cross-rank average with
            ``{name: gradient}`` of the trainable parameters, to edit them in place.
        max_grad_norm: Clip the global gradient norm (after masks) to this value.
        seed: Seed of the order of the examples and of the model's own randomness in
            :meth:`fit`.
        distributed: ``None`` (default) is data-parallel exactly when a process group of more
            than one rank is initialised; ``True`` requires one; ``False`` never is.
        loss: ``loss(model, batch) -> scalar`` used by :meth:`compute_loss`; default
            :func:`cross_entropy_loss`.

    Attributes:
        model: The network.
        optimizer: The :class:`torch.optim.Optimizer` over the trainable parameters.
        params: ``(name, parameter)`` of the trainable parameters.
        rank: This process's rank (0 when serial).
        world_size: Number of data-parallel processes.
        steps_: Optimiser steps taken so far.

    Raises:
        WeightspaceValueError: on a bad argument (the message names it), no trainable
            parameter, a mask naming an unknown parameter, or ``distributed=True`` without a
            process group.

    Example:
        >>> import torch
        >>> from weightspace import train
        >>> net = torch.nn.Linear(3, 2)
        >>> trainer = train.Trainer(net, optimizer="sgd", lr=0.1)
        >>> x, y = torch.randn(8, 3), torch.randint(0, 2, (8,))
        >>> before = trainer.compute_loss((x, y)).item()
        >>> _ = trainer.step(trainer.compute_loss((x, y)))
        >>> trainer.compute_loss((x, y)).item() < before, trainer.steps_
        (True, 1)
    """

    def __init__(
        self,
        model: nn.Module,
        *,
        optimizer: OptimizerName = "adam",
        lr: float = 1e-3,
        weight_decay: float = 0.0,
        momentum: float = 0.9,
        trainable: object = None,
        masks: Mapping[str, Tensor] | None = None,
        grad_hooks: Sequence[GradHook] = (),
        max_grad_norm: float | None = None,
        seed: int = 0,
        distributed: bool | None = None,
        loss: LossFn | None = None,
    ) -> None:
        self.model = check_model(model)
        self.lr = non_negative(lr, "lr", strict=True)
        weight_decay = non_negative(weight_decay, "weight_decay")
        momentum = non_negative(momentum, "momentum")
        self.max_grad_norm = (
            None
            if max_grad_norm is None
            else non_negative(max_grad_norm, "max_grad_norm", strict=True)
        )
        self.seed = seed_int(seed)
        if loss is not None and not callable(loss):
            raise WeightspaceValueError(
                f"`loss` must be a callable (model, batch) -> tensor, got {type(loss).__name__}"
            )
        self.loss: LossFn = loss or cross_entropy_loss
        hooks = list(grad_hooks)
        for hook in hooks:
            if not callable(hook):
                raise WeightspaceValueError(
                    f"`grad_hooks` must hold callables hook(grads), got {type(hook).__name__}"
                )
        self.grad_hooks = hooks
        self.rank, self.world_size = world_of(distributed)
        named = dict(model.named_parameters())
        chosen = set(named) if trainable is None else _trainable_names(model, trainable)
        self.params: list[tuple[str, nn.Parameter]] = [
            (n, p) for n, p in named.items() if n in chosen and p.requires_grad
        ]
        if not self.params:
            raise WeightspaceValueError(
                f"no parameter of `model` is trainable (trainable={trainable!r}; parameters with "
                "requires_grad=False are never trained)"
            )
        self._chosen = {n for n, _ in self.params}
        if self.world_size > 1:
            self._broadcast_state()
        self.optimizer = make_optimizer(
            [p for _, p in self.params],
            optimizer,
            lr=self.lr,
            weight_decay=weight_decay,
            momentum=momentum,
        )
        self.masks: dict[str, Tensor] | None = None
        self._frozen: dict[str, Tensor] = {}
        if masks is not None:
            if not isinstance(masks, Mapping):
                raise WeightspaceValueError(
                    f"`masks` must map parameter names to bool tensors, got {type(masks).__name__}"
                )
            unknown = [n for n in masks if n not in self._chosen]
            if unknown:
                raise WeightspaceValueError(
                    f"`masks` names {unknown[:5]}, which are not trainable parameters of the "
                    "model; build it from scores of this model"
                )
            for n, p in self.params:
                m = masks.get(n)
                if m is not None and (m.dtype != torch.bool or m.shape != p.shape):
                    raise WeightspaceValueError(
                        f"`masks[{n!r}]` must be a bool tensor of shape {list(p.shape)}, got "
                        f"{m.dtype} of shape {list(m.shape)}"
                    )
            self.masks = dict(masks)
            self._frozen = {n: p.detach().clone() for n, p in self.params}
        self.steps_ = 0

    # ---- one step ------------------------------------------------------------------------

    def compute_loss(self, batch: Batch) -> Tensor:
        """The loss of one batch: ``loss(model, batch)``; override to change what is minimised.

        Args:
            batch: One batch, on the model's device.

        Returns:
            A scalar tensor attached to the graph.
        """
        return self.loss(self.model, batch)

    def step(self, loss: Tensor) -> float:
        """Take one optimiser step on ``loss``.

        ``zero_grad``, ``loss.backward()``, the cross-rank average of the gradients and the
        loss, the gradient hooks, the masks, clipping, ``optimizer.step()``; masked entries
        are then put back to their frozen values.

        Args:
            loss: A scalar tensor attached to the model's graph.

        Returns:
            The loss (averaged across ranks when distributed).

        Raises:
            NonFiniteLossError: if the (averaged) loss is NaN or infinite; the weights are left
                as they were.
        """
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()  # type: ignore[no-untyped-call]
        value = loss.detach().double()
        if self.world_size > 1:
            value = self._average_across_ranks(value)
        number = float(value)
        if not math.isfinite(number):
            raise NonFiniteLossError(
                f"the loss is not finite ({number}) at step {self.steps_}: lower `lr` (now "
                f"{self.lr}) or set `max_grad_norm`"
            )
        if self.grad_hooks:
            grads = {n: p.grad for n, p in self.params if p.grad is not None}
            for hook in self.grad_hooks:
                hook(grads)
        if self.masks is not None:
            for n, p in self.params:
                if p.grad is not None:
                    m = self.masks.get(n)
                    if m is None:
                        p.grad.zero_()
                    else:
                        p.grad.mul_(m.to(p.grad.dtype))
        if self.max_grad_norm is not None:
            nn.utils.clip_grad_norm_([p for _, p in self.params], self.max_grad_norm)
        self.optimizer.step()
        if self.masks is not None:
            with torch.no_grad():
                for n, p in self.params:
                    m = self.masks.get(n)
                    keep = self._frozen[n] if m is None else torch.where(m, p, self._frozen[n])
                    p.copy_(keep)
        self.steps_ += 1
        return number

    def _broadcast_state(self) -> None:
        import torch.distributed as dist

        with torch.no_grad():  # every rank starts from rank 0's weights
            for t in self.model.state_dict().values():
                dist.broadcast(t, src=0)

    def _broadcast_buffers(self) -> None:
        """Rank 0's buffers (BatchNorm statistics) to every rank, as DDP does before a forward."""
        import torch.distributed as dist

        with torch.no_grad():
            for b in self.model.buffers():
                dist.broadcast(b, src=0)

    def _average_across_ranks(self, value: Tensor) -> Tensor:
        """All-reduce the gradients (mean) and the loss, in one flat float64 buffer."""
        import torch.distributed as dist

        grads = [p.grad if p.grad is not None else torch.zeros_like(p) for _, p in self.params]
        flat = torch.cat(
            [g.reshape(-1).double() for g in grads] + [value.reshape(1).to(grads[0].device)]
        )
        dist.all_reduce(flat)
        flat /= self.world_size
        offset = 0
        for (_, p), g in zip(self.params, grads, strict=True):
            k = g.numel()
            p.grad = flat[offset : offset + k].view_as(p).to(p.dtype)
            offset += k
        return flat[-1]

    # ---- the loop ------------------------------------------------------------------------

    @contextlib.contextmanager
    def _training(self) -> Iterator[None]:
        """Freeze the non-trainable parameters and set train mode; restore both afterwards."""
        named = dict(self.model.named_parameters())
        saved = {n: p.requires_grad for n, p in named.items()}
        was_training = self.model.training
        try:
            for n, p in named.items():
                p.requires_grad_(n in self._chosen and saved[n])
            self.model.train()
            yield
        finally:
            for n, p in named.items():
                p.requires_grad_(saved[n])
            self.model.train(was_training)

    def fit(
        self,
        data: Data,
        *,
        epochs: int = 1,
        batch_size: int = 128,
        loss: LossFn | None = None,
        collate_fn: Collate | None = None,
        drop_last: bool = False,
        progress: bool = False,
        checkpoint: str | Path | None = None,
        resume: bool = False,
    ) -> History:
        r"""Train for ``epochs`` passes over ``data``.

        Each epoch reads the examples in the order ``torch.randperm(n)`` drawn from a generator
        seeded with ``seed + epoch`` (the order of ``DistributedSampler(shuffle=True,
        seed=seed)``), cut into batches of ``batch_size``. Randomness inside the model
        (dropout) is seeded with ``seed + rank`` in a forked RNG, so the global RNG state is
        left untouched and two runs with the same arguments give the same weights. A
        ``DataLoader`` or an iterable of batches is read in its own order instead (see
        :func:`batches`).

        Distributed, rank ``r`` of ``W`` reads every ``W``-th index of the epoch's order
        starting at ``r`` (the order padded by repeating its first indices until ``W``
        divides it), so one step of ``W`` ranks sees the examples of one serial step with
        batches of ``W * batch_size``; before each batch, rank 0's buffers (BatchNorm running
        statistics) are broadcast to the others, as ``DistributedDataParallel`` does, and
        again at the end of each epoch, so that every rank holds the same model.

        With ``checkpoint``, the model, the optimiser state, the RNG state and the history are
        written after every epoch to that safetensors file (atomically, through
        :func:`weightspace.io.save_state_dict`; rank 0 writes). With ``resume=True`` and an
        existing checkpoint, they are loaded and the run continues after the last saved epoch:
        training 2 epochs gives the same weights, bit for bit, as training 1, stopping and
        resuming for the second.

        Args:
            data: The data, in the contract of :func:`batches`.
            epochs: Total passes over the data (counting those of a resumed checkpoint).
            batch_size: Examples per step and rank.
            loss: Overrides the trainer's ``loss`` for this call.
            collate_fn: Turns a list of samples into a batch, for a ``Dataset``.
            drop_last: Skip the last, smaller batch of each epoch.
            progress: Show a progress bar (``tqdm``; rank 0 only).
            checkpoint: A ``.safetensors`` path to write after every epoch.
            resume: Continue from ``checkpoint`` if it exists.

        Returns:
            The per-epoch mean losses, the number of steps and the wall time.

        Raises:
            WeightspaceValueError: on a bad argument (the message names it and shows its
                value), empty data, or a checkpoint of another run.
            NonFiniteLossError: on a non-finite loss.
        """
        epochs = positive_int(epochs, "epochs")
        batch_size = positive_int(batch_size, "batch_size")
        if loss is not None and not callable(loss):
            raise WeightspaceValueError(
                f"`loss` must be a callable (model, batch) -> tensor, got {type(loss).__name__}"
            )
        if resume and checkpoint is None:
            raise WeightspaceValueError("`resume=True` needs `checkpoint`, the file to resume from")
        src = Source(data, collate_fn)
        steps_per_epoch = src.steps(batch_size, drop_last, self.world_size)
        if steps_per_epoch == 0:
            raise WeightspaceValueError(
                f"`batch_size`={batch_size} with drop_last=True leaves no batch: each rank holds "
                f"{math.ceil((src.n or 0) / self.world_size)} examples; lower batch_size or set "
                "drop_last=False"
            )
        if src.n is None and self.world_size > 1:
            raise WeightspaceValueError(
                "`data` as a DataLoader or an iterable of batches cannot be split across ranks "
                "by the trainer; pass a Dataset or an (inputs, targets) pair (or give each rank "
                "its own loader and call `step`)"
            )
        device = self.params[0][1].device
        start_epoch, losses = 0, []
        path = Path(checkpoint) if checkpoint is not None else None
        state = None
        if path is not None and resume and path.exists():
            from weightspace.train._checkpoint import load_checkpoint

            state = load_checkpoint(self, path, batch_size=batch_size, epochs=epochs)
            start_epoch, losses = state.epoch, list(state.losses)
        bar = None
        if progress and self.rank == 0:
            from tqdm.auto import tqdm

            total = None if steps_per_epoch is None else (epochs - start_epoch) * steps_per_epoch
            bar = tqdm(total=total, desc=type(self).__name__, unit="step")
        loss_fn = loss
        start = time.perf_counter()
        try:
            with self._training(), torch.random.fork_rng(devices=[]):
                torch.manual_seed(self.seed + self.rank)
                if state is not None:
                    state.restore_rng(device)
                for epoch in range(start_epoch, epochs):
                    total_loss, count = 0.0, 0
                    for batch in self._epoch(src, epoch, batch_size, drop_last):
                        batch = to_device(batch, device)
                        if self.world_size > 1:
                            self._broadcast_buffers()
                        if loss_fn is None:
                            value = self.compute_loss(batch)
                        else:
                            value = loss_fn(self.model, batch)
                        k = batch_len(batch)
                        local = float(value.detach())
                        try:
                            self.step(value)
                        except NonFiniteLossError as err:
                            raise NonFiniteLossError(f"{err} (epoch {epoch})") from None
                        total_loss += local * k
                        count += k
                        if bar is not None:
                            bar.update(1)
                    losses.append(_mean_across_ranks(total_loss, count, self.world_size))
                    if self.world_size > 1:  # every rank ends each epoch with rank 0's buffers
                        self._broadcast_buffers()
                    if path is not None:
                        from weightspace.train._checkpoint import save_checkpoint

                        save_checkpoint(
                            self, path, epoch=epoch + 1, losses=losses, batch_size=batch_size
                        )
        finally:
            if bar is not None:
                bar.close()
        return History(
            losses=tuple(losses),
            steps=self.steps_,
            seconds=time.perf_counter() - start,
            world_size=self.world_size,
        )

    def _epoch(self, src: Source, epoch: int, batch_size: int, drop_last: bool) -> Iterator[Batch]:
        if src.n is None:
            yield from src.iterate(batch_size)
            return
        order = epoch_order(src.n, self.seed, epoch, self.rank, self.world_size)
        yield from src.iterate(batch_size, order=order, drop_last=drop_last)


def _mean_across_ranks(total: float, count: int, world: int) -> float:
    if world > 1:
        import torch.distributed as dist

        t = torch.tensor([total, float(count)], dtype=torch.float64)
        dist.all_reduce(t)
        total, count = float(t[0]), int(t[1])
    return total / max(count, 1)
