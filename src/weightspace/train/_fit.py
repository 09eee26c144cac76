"""The training loop behind :func:`weightspace.train.fit` (serial or DDP)."""

from __future__ import annotations

import contextlib
import math
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.data import default_collate

from weightspace._errors import WeightspaceValueError
from weightspace._world import world_of

__all__ = ["History", "accuracy", "fit", "predict"]

Optimizer = Literal["adam", "adamw", "sgd"]
LossFn = Callable[[nn.Module, Any], Tensor]


@dataclass(frozen=True)
class History:
    """What :func:`fit` did.

    Attributes:
        losses: Mean training loss of each epoch (over every rank's batches when distributed).
        steps: Optimiser steps taken (the same on every rank).
        seconds: Wall time of the loop.
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


def _positive_int(value: object, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise WeightspaceValueError(f"`{name}` must be an int >= 1, got {value!r}")
    return value


def _non_negative(value: object, name: str, *, strict: bool = False) -> float:
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    if not ok or (value <= 0 if strict else value < 0):  # type: ignore[operator]
        bound = "> 0" if strict else ">= 0"
        raise WeightspaceValueError(f"`{name}` must be a finite number {bound}, got {value!r}")
    return float(value)  # type: ignore[arg-type]


class _Samples:
    """Uniform indexed access to a ``(x, y)`` pair or a dataset of samples."""

    def __init__(self, data: object, collate_fn: Callable[[list[Any]], Any] | None) -> None:
        self.pair: tuple[Tensor, Tensor] | None = None
        if (
            isinstance(data, (tuple, list))
            and len(data) == 2
            and all(isinstance(t, Tensor) for t in data)
        ):
            x, y = data
            if x.ndim == 0 or y.ndim == 0 or x.shape[0] != y.shape[0]:
                raise WeightspaceValueError(
                    "`data` as a pair (x, y) needs tensors with the same first dimension, got "
                    f"shapes {tuple(x.shape)} and {tuple(y.shape)}"
                )
            self.pair = (x, y)
            self.n = int(x.shape[0])
        elif hasattr(data, "__len__") and hasattr(data, "__getitem__"):
            self.dataset: Any = data
            self.n = len(data)
        else:
            raise WeightspaceValueError(
                "`data` must be a pair of tensors (x, y) or a dataset with __len__ and "
                f"__getitem__ (a torch Dataset, a list of samples), got {type(data).__name__}"
            )
        if self.n == 0:
            raise WeightspaceValueError("`data` is empty: there is nothing to train or evaluate on")
        self.collate = collate_fn or default_collate

    def batch(self, idx: Tensor) -> Any:
        if self.pair is not None:
            return self.pair[0][idx], self.pair[1][idx]
        return self.collate([self.dataset[int(i)] for i in idx])


def _to(batch: Any, device: torch.device) -> Any:
    if isinstance(batch, Tensor):
        return batch.to(device)
    if isinstance(batch, (tuple, list)):
        return type(batch)(_to(b, device) for b in batch)
    if hasattr(batch, "to") and callable(batch.to):
        return batch.to(device)
    return batch


def _default_loss(model: nn.Module, batch: Any) -> Tensor:
    if not (isinstance(batch, (tuple, list)) and len(batch) == 2):
        raise WeightspaceValueError(
            "the default loss needs batches (x, y); pass `loss=lambda model, batch: ...` for "
            f"other batches, got a batch of type {type(batch).__name__}"
        )
    x, y = batch
    return F.cross_entropy(model(x), y)


def epoch_order(n: int, seed: int, epoch: int, rank: int, world: int) -> Tensor:
    """The indices one rank reads in one epoch (``DistributedSampler``'s order and padding)."""
    g = torch.Generator().manual_seed(seed + epoch)
    perm = torch.randperm(n, generator=g)
    total = math.ceil(n / world) * world
    if total > n:
        repeats = math.ceil((total - n) / n)
        perm = torch.cat([perm, perm.repeat(repeats)[: total - n]])
    return perm[rank:total:world]


def _optimizer(
    name: object, params: Sequence[Tensor], lr: float, weight_decay: float, momentum: float
) -> torch.optim.Optimizer:
    if name == "adam":
        return torch.optim.Adam(params, lr=lr, weight_decay=weight_decay)
    if name == "adamw":
        return torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay)
    if name == "sgd":
        return torch.optim.SGD(params, lr=lr, momentum=momentum, weight_decay=weight_decay)
    raise WeightspaceValueError(f"`optimizer` must be 'adam', 'adamw' or 'sgd', got {name!r}")


def _trainable_names(model: nn.Module, trainable: object) -> set[str]:
    from weightspace import select

    return set(select.parameters(model, trainable).names_a)  # type: ignore[arg-type]


def fit(
    model: nn.Module,
    data: tuple[Tensor, Tensor] | Sequence[Any] | torch.utils.data.Dataset[Any],
    *,
    epochs: int = 1,
    batch_size: int = 128,
    lr: float = 1e-3,
    optimizer: Optimizer = "adam",
    weight_decay: float = 0.0,
    momentum: float = 0.9,
    loss: LossFn | None = None,
    collate_fn: Callable[[list[Any]], Any] | None = None,
    trainable: object = None,
    max_grad_norm: float | None = None,
    drop_last: bool = False,
    seed: int = 0,
    distributed: bool | None = None,
    progress: bool = False,
) -> History:
    r"""Train ``model`` in place for ``epochs`` passes over ``data``.

    Each epoch reads the examples in the order ``torch.randperm(n)`` drawn from a generator
    seeded with ``seed + epoch`` (the order of ``DistributedSampler(shuffle=True, seed=seed)``),
    cut into batches of ``batch_size``. Randomness inside the model (dropout) is seeded with
    ``seed + rank`` in a forked RNG, so the global RNG state is left untouched and two calls
    with the same arguments on the same model give the same weights.

    Under ``torchrun`` with an initialised process group of ``W > 1`` ranks (or with
    ``distributed=True``), the model is wrapped in
    :class:`~torch.nn.parallel.DistributedDataParallel`: rank ``r`` reads every ``W``-th index
    of the epoch's order, starting at ``r`` (the order is padded by repeating its first indices
    until ``W`` divides it), and gradients are averaged across ranks. One step of ``W`` ranks
    with batches of ``b`` therefore sees the same examples as one serial step with batches of
    ``W * b``, and (for a mean-reduced loss and equal batch sizes) takes the same step.

    The model is put in training mode for the loop (BatchNorm statistics update, dropout is
    active) and returned to its previous mode afterwards. Parameters outside ``trainable`` are
    frozen during the loop (``requires_grad`` is restored at the end).

    Args:
        model: The network, trained in place on the device of its parameters.
        data: A pair of tensors ``(x, y)`` with the same first dimension, or a dataset of
            samples (``__len__`` and ``__getitem__``: a torch ``Dataset``, a list of PyG
            ``Data``...) batched by ``collate_fn``.
        epochs: Passes over the data.
        batch_size: Examples per step and rank.
        lr: Learning rate.
        optimizer: ``"adam"``, ``"adamw"`` or ``"sgd"`` (with ``momentum``).
        weight_decay: The optimiser's weight decay.
        momentum: SGD momentum (ignored by Adam).
        loss: ``loss(model, batch) -> scalar tensor``; default: cross-entropy of
            ``model(x)`` against ``y`` for batches ``(x, y)``.
        collate_fn: Turns a list of samples into a batch (default:
            :func:`torch.utils.data.default_collate`); unused for a pair of tensors.
        trainable: Which parameters to train, in :func:`weightspace.select.parameters`'
            grammar (names, dotted suffixes, a regex, a preset); ``None`` trains all of them.
        max_grad_norm: Clip the global gradient norm to this value.
        drop_last: Skip the last, smaller batch of each epoch.
        seed: Seed of the order of the examples and of the model's own randomness.
        distributed: ``None`` (default) is data-parallel exactly when a process group of more
            than one rank is initialised; ``True`` requires one; ``False`` never is.
        progress: Show a progress bar (``tqdm``; rank 0 only).

    Returns:
        The per-epoch mean losses, the number of steps and the wall time.

    Raises:
        WeightspaceValueError: on a bad argument (the message names it and shows its value),
            an empty data set, a non-finite loss, or ``distributed=True`` without a process
            group.

    Example:
        >>> import torch
        >>> from torch import nn
        >>> from weightspace import train
        >>> x, y = torch.randn(64, 3), torch.randint(0, 2, (64,))
        >>> model = nn.Sequential(nn.Linear(3, 8), nn.ReLU(), nn.Linear(8, 2))
        >>> h = train.fit(model, (x, y), epochs=2, batch_size=16, trainable=["2"])
        >>> len(h.losses), h.steps
        (2, 8)
    """
    epochs = _positive_int(epochs, "epochs")
    batch_size = _positive_int(batch_size, "batch_size")
    lr = _non_negative(lr, "lr", strict=True)
    weight_decay = _non_negative(weight_decay, "weight_decay")
    momentum = _non_negative(momentum, "momentum")
    if max_grad_norm is not None:
        max_grad_norm = _non_negative(max_grad_norm, "max_grad_norm", strict=True)
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise WeightspaceValueError(f"`seed` must be an int, got {seed!r}")
    if not isinstance(model, nn.Module):
        raise WeightspaceValueError(f"`model` must be an nn.Module, got {type(model).__name__}")
    if loss is not None and not callable(loss):
        raise WeightspaceValueError(
            f"`loss` must be a callable (model, batch) -> tensor, got {type(loss).__name__}"
        )
    samples = _Samples(data, collate_fn)
    rank, world = world_of(distributed)
    loss_fn = loss or _default_loss

    named = dict(model.named_parameters())
    chosen = set(named) if trainable is None else _trainable_names(model, trainable)
    params = [p for n, p in named.items() if n in chosen and p.requires_grad]
    if not params:
        raise WeightspaceValueError(
            f"no parameter of `model` is trainable (trainable={trainable!r}; parameters with "
            "requires_grad=False are never trained)"
        )
    saved_grad = {n: p.requires_grad for n, p in named.items()}
    device = params[0].device
    was_training = model.training

    per_rank = math.ceil(samples.n / world)
    steps_per_epoch = per_rank // batch_size if drop_last else math.ceil(per_rank / batch_size)
    if steps_per_epoch == 0:
        raise WeightspaceValueError(
            f"`batch_size`={batch_size} with drop_last=True leaves no batch: each rank holds "
            f"{per_rank} examples; lower batch_size or set drop_last=False"
        )

    bar = None
    if progress and rank == 0:
        from tqdm.auto import tqdm

        bar = tqdm(total=epochs * steps_per_epoch, desc="fit", unit="step")

    start = time.perf_counter()
    losses: list[float] = []
    steps = 0
    try:
        for n, p in named.items():
            p.requires_grad_(n in chosen and saved_grad[n])
        net: nn.Module = model
        if world > 1:
            net = nn.parallel.DistributedDataParallel(model)
        opt = _optimizer(optimizer, params, lr, weight_decay, momentum)
        model.train()
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed + rank)
            for epoch in range(epochs):
                order = epoch_order(samples.n, seed, epoch, rank, world)
                total, count = 0.0, 0
                for k in range(steps_per_epoch):
                    idx = order[k * batch_size : (k + 1) * batch_size]
                    batch = _to(samples.batch(idx), device)
                    value = loss_fn(net, batch)
                    if not torch.isfinite(value.detach()).all():
                        raise WeightspaceValueError(
                            f"the loss is not finite ({float(value.detach())}) at epoch "
                            f"{epoch}, step {k}: lower `lr` (now {lr}) or set `max_grad_norm`"
                        )
                    opt.zero_grad(set_to_none=True)
                    value.backward()  # type: ignore[no-untyped-call]
                    if max_grad_norm is not None:
                        torch.nn.utils.clip_grad_norm_(params, max_grad_norm)
                    opt.step()
                    total += float(value.detach()) * len(idx)
                    count += len(idx)
                    steps += 1
                    if bar is not None:
                        bar.update(1)
                losses.append(_mean_across_ranks(total, count, world))
    finally:
        if bar is not None:
            bar.close()
        for n, p in named.items():
            p.requires_grad_(saved_grad[n])
        model.train(was_training)
    return History(
        losses=tuple(losses),
        steps=steps,
        seconds=time.perf_counter() - start,
        world_size=world,
    )


def _mean_across_ranks(total: float, count: int, world: int) -> float:
    if world > 1:
        import torch.distributed as dist

        t = torch.tensor([total, float(count)], dtype=torch.float64)
        dist.all_reduce(t)
        total, count = float(t[0]), int(t[1])
    return total / max(count, 1)


@contextlib.contextmanager
def _eval_mode(model: nn.Module) -> Iterator[None]:
    was = model.training
    model.eval()
    try:
        with torch.no_grad():
            yield
    finally:
        model.train(was)


def _batches(samples: _Samples, batch_size: int) -> Iterator[Any]:
    for start in range(0, samples.n, batch_size):
        yield samples.batch(torch.arange(start, min(start + batch_size, samples.n)))


def _device_of(model: nn.Module) -> torch.device:
    for p in model.parameters():
        return p.device
    return torch.device("cpu")


def predict(
    model: nn.Module,
    x: Tensor | Sequence[Any],
    *,
    batch_size: int = 1024,
    collate_fn: Callable[[list[Any]], Any] | None = None,
) -> Tensor:
    """Outputs of ``model`` on ``x`` in evaluation mode, without gradients, in batches.

    Args:
        model: The network (its training mode is restored afterwards).
        x: A tensor of inputs (first dimension = examples), or a sequence of samples batched by
            ``collate_fn``.
        batch_size: Examples per forward pass.
        collate_fn: For a sequence of samples (default: ``default_collate``).

    Returns:
        The outputs, concatenated along the first dimension, on the model's device.

    Example:
        >>> import torch
        >>> from weightspace import train
        >>> train.predict(torch.nn.Linear(3, 2), torch.zeros(5, 3)).shape
        torch.Size([5, 2])
    """
    batch_size = _positive_int(batch_size, "batch_size")
    if isinstance(x, Tensor):
        if x.ndim == 0 or x.shape[0] == 0:
            raise WeightspaceValueError(
                f"`x` must hold at least one example, got shape {tuple(x.shape)}"
            )
        chunks = [x[i : i + batch_size] for i in range(0, x.shape[0], batch_size)]
        batches: Iterator[Any] = iter(chunks)
    else:
        batches = _batches(_Samples(x, collate_fn), batch_size)
    device = _device_of(model)
    with _eval_mode(model):
        return torch.cat([model(_to(b, device)) for b in batches])


def accuracy(model: nn.Module, data: tuple[Tensor, Tensor], *, batch_size: int = 1024) -> float:
    """Top-1 accuracy of ``model`` on a pair ``(x, y)`` of inputs and integer labels.

    Args:
        model: A classifier returning logits of shape ``(n, classes)``.
        data: ``(x, y)`` with the same first dimension.
        batch_size: Examples per forward pass.

    Returns:
        The fraction of examples whose arg-max logit equals the label.

    Example:
        >>> import torch
        >>> from weightspace import train
        >>> model = torch.nn.Linear(2, 2, bias=False)
        >>> with torch.no_grad():
        ...     _ = model.weight.copy_(torch.eye(2))
        >>> train.accuracy(model, (torch.tensor([[1.0, 0.0], [0.0, 1.0]]), torch.tensor([0, 0])))
        0.5
    """
    samples = _Samples(data, None)
    if samples.pair is None:
        raise WeightspaceValueError(
            f"`data` must be a pair of tensors (x, y), got {type(data).__name__}"
        )
    x, y = samples.pair
    logits = predict(model, x, batch_size=batch_size)
    return float((logits.argmax(dim=-1).cpu() == y.cpu()).double().mean())
