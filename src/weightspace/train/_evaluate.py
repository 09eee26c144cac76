"""The one evaluation of the library: outputs, metrics and accuracy over the batching contract."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Mapping
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from weightspace._deprecation import warn_deprecated
from weightspace._errors import WeightspaceValueError
from weightspace.train._batches import (
    Batch,
    Collate,
    Data,
    Source,
    inputs_of,
    targets_of,
    to_device,
)
from weightspace.train._checks import check_model, positive_int

__all__ = ["Metric", "accuracy", "eval_mode", "evaluate", "predict"]

Metric = Callable[[Tensor, Tensor], Tensor | float]
"""``metric(outputs, targets) -> number`` over all the examples at once."""

Forward = Callable[[nn.Module, Batch], Tensor]


@contextlib.contextmanager
def eval_mode(*models: nn.Module) -> Iterator[None]:
    """Run the body with every model in eval mode and without gradients; restore the modes."""
    modes = [m.training for m in models]
    for m in models:
        m.eval()
    try:
        with torch.no_grad():
            yield
    finally:
        for m, was in zip(models, modes, strict=True):
            m.train(was)


def _device_of(model: nn.Module) -> torch.device:
    for p in model.parameters():
        return p.device
    return torch.device("cpu")


def _default_forward(model: nn.Module, batch: Batch) -> Tensor:
    out = model(inputs_of(batch))
    if not isinstance(out, Tensor):
        raise WeightspaceValueError(
            f"`model` must return a tensor of outputs, got {type(out).__name__}; pass "
            "`forward=lambda model, batch: ...` to say how to get it"
        )
    return out


def _outputs(
    model: nn.Module,
    data: Data,
    batch_size: int,
    collate_fn: Collate | None,
    forward: Forward | None,
    with_targets: bool,
    argument: str,
) -> tuple[Tensor, Tensor | None]:
    check_model(model)
    batch_size = positive_int(batch_size, "batch_size")
    if forward is not None and not callable(forward):
        raise WeightspaceValueError(
            f"`forward` must be a callable (model, batch) -> outputs, got {type(forward).__name__}"
        )
    run = forward or _default_forward
    src = Source(data, collate_fn, argument)
    device = _device_of(model)
    outs: list[Tensor] = []
    ys: list[Tensor] = []
    with eval_mode(model):
        for batch in src.iterate(batch_size):
            if with_targets:
                ys.append(targets_of(batch, argument).cpu())
            outs.append(run(model, to_device(batch, device)))
    if not outs:
        raise WeightspaceValueError(f"`{argument}` holds no batch; pass at least one example")
    return torch.cat(outs), (torch.cat(ys) if with_targets else None)


def predict(
    model: nn.Module,
    data: Data = None,
    *,
    batch_size: int = 1024,
    collate_fn: Collate | None = None,
    forward: Forward | None = None,
    x: Data = None,
) -> Tensor:
    """Outputs of ``model`` on ``data`` in evaluation mode, without gradients, in batches.

    Args:
        model: The network (its training mode is restored afterwards).
        data: Data in the contract of :func:`batches`: a tensor of inputs, an ``(inputs,
            targets)`` pair, a ``Dataset``, a ``DataLoader`` or an iterable of batches.
        batch_size: Examples per forward pass (for the indexed forms).
        collate_fn: For a ``Dataset`` of samples (default: ``default_collate``).
        forward: ``forward(model, batch) -> outputs``; default: ``model(batch[0])`` for a
            tuple or list batch, ``model(batch)`` otherwise.
        x: Deprecated name of ``data`` (removed in 0.2).

    Returns:
        The outputs, concatenated along the first dimension, on the model's device.

    Raises:
        WeightspaceValueError: if ``data`` is empty or in none of the forms.

    Example:
        >>> import torch
        >>> from weightspace import train
        >>> train.predict(torch.nn.Linear(3, 2), torch.zeros(5, 3)).shape
        torch.Size([5, 2])
    """
    if x is not None:
        if data is not None:
            raise TypeError("predict() got both `x` (deprecated) and `data`; pass only `data`")
        warn_deprecated("train.predict(x=...)", "train.predict(data=...)", since="0.1")
        data = x
    if data is None:
        raise WeightspaceValueError("`data` is missing: pass the inputs to predict on")
    out, _ = _outputs(model, data, batch_size, collate_fn, forward, False, "data")
    return out


def _top1(outputs: Tensor, targets: Tensor) -> float:
    return float((outputs.argmax(dim=-1).cpu() == targets).double().mean())


def _mean_cross_entropy(outputs: Tensor, targets: Tensor) -> float:
    return float(F.cross_entropy(outputs.double().cpu(), targets))


DEFAULT_METRICS: Mapping[str, Metric] = {"accuracy": _top1, "loss": _mean_cross_entropy}


def evaluate(
    model: nn.Module,
    data: Data,
    metrics: Mapping[str, Metric] | None = None,
    *,
    batch_size: int = 1024,
    collate_fn: Collate | None = None,
    forward: Forward | None = None,
) -> dict[str, float]:
    """Measure ``model`` on labelled ``data``: every metric over all the examples.

    The outputs of every batch are collected (eval mode, no gradients), then each metric is
    computed once on all outputs and targets, so a metric need not be a mean.

    Args:
        model: The network (its training mode is restored afterwards).
        data: ``(inputs, targets)`` batches in the contract of :func:`batches`.
        metrics: ``name -> metric(outputs, targets)``; default: ``"accuracy"`` (top-1) and
            ``"loss"`` (mean cross-entropy, computed in float64).
        batch_size: Examples per forward pass.
        collate_fn: For a ``Dataset`` of samples.
        forward: ``forward(model, batch) -> outputs`` (see :func:`predict`).

    Returns:
        ``name -> value``.

    Raises:
        WeightspaceValueError: if ``data`` is empty or its batches have no targets.

    Example:
        >>> import torch
        >>> from weightspace import train
        >>> net = torch.nn.Linear(2, 2, bias=False)
        >>> _ = net.weight.data.copy_(torch.eye(2))
        >>> x, y = torch.tensor([[1.0, 0.0], [0.0, 1.0]]), torch.tensor([0, 0])
        >>> train.evaluate(net, (x, y), {"accuracy": lambda out, t: (out.argmax(1) == t).sum()})
        {'accuracy': 1.0}
    """
    chosen = DEFAULT_METRICS if metrics is None else metrics
    if not isinstance(chosen, Mapping) or not chosen:
        raise WeightspaceValueError(
            f"`metrics` must be a non-empty mapping name -> metric(outputs, targets), got "
            f"{metrics!r}"
        )
    out, y = _outputs(model, data, batch_size, collate_fn, forward, True, "data")
    assert y is not None
    result: dict[str, float] = {}
    for name, metric in chosen.items():
        if not callable(metric):
            raise WeightspaceValueError(
                f"`metrics[{name!r}]` must be a callable (outputs, targets), got {metric!r}"
            )
        value: Any = metric(out, y.to(out.device))
        result[name] = float(value)
    return result


def accuracy(
    model: nn.Module,
    data: Data,
    *,
    batch_size: int = 1024,
    collate_fn: Collate | None = None,
    forward: Forward | None = None,
) -> float:
    """Top-1 accuracy: the fraction of examples whose arg-max output is their target.

    The one ``accuracy`` of the library (unlearning, task arithmetic, alignment and the
    examples all measure with it).

    Args:
        model: A classifier returning logits ``[N, classes]`` (run in eval mode, then its mode
            is restored).
        data: ``(inputs, targets)`` batches in the contract of :func:`batches`.
        batch_size: Examples per forward pass.
        collate_fn: For a ``Dataset`` of samples.
        forward: ``forward(model, batch) -> logits`` (see :func:`predict`).

    Returns:
        The accuracy in ``[0, 1]``.

    Raises:
        WeightspaceValueError: if ``data`` is empty, malformed or its batches have no targets.

    Shapes:
        - inputs: ``[N, *]``; targets: ``[N]`` int64.

    Example:
        >>> import torch
        >>> from weightspace import train
        >>> model = torch.nn.Linear(2, 2, bias=False)
        >>> with torch.no_grad():
        ...     _ = model.weight.copy_(torch.eye(2))
        >>> train.accuracy(model, (torch.tensor([[1.0, 0.0], [0.0, 1.0]]), torch.tensor([0, 0])))
        0.5
    """
    out, y = _outputs(model, data, batch_size, collate_fn, forward, True, "data")
    assert y is not None
    return _top1(out, y)
