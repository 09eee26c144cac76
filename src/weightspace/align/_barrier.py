"""Linear paths between two networks: interpolation, the loss barrier and batch-norm repair."""

from __future__ import annotations

import copy
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

import torch
from torch import Tensor, nn

from weightspace._errors import ShapeMismatchError, WeightspaceValueError
from weightspace.align._matching import batches
from weightspace.io import StateDictLike, as_state_dict

__all__ = ["BarrierResult", "interpolate", "loss_barrier", "reset_bn_stats"]

M = TypeVar("M", bound=nn.Module)


def interpolate(
    state_a: StateDictLike,
    state_b: StateDictLike,
    t: float,
) -> dict[str, Tensor]:
    r"""Return the point :math:`(1 - t)\,\theta_A + t\,\theta_B` between two networks.

    Floating-point tensors are interpolated with :func:`torch.lerp`, so ``t = 0`` gives
    ``state_a`` and ``t = 1`` gives ``state_b`` exactly. Integer tensors (such as batch norm's
    ``num_batches_tracked``) are taken from the nearer end. Batch-norm running statistics are
    interpolated like any tensor, which is *not* the statistics of the interpolated network:
    see :func:`reset_bn_stats`.

    Args:
        state_a: The network at ``t = 0`` (module, state dict or checkpoint path).
        state_b: The network at ``t = 1``, with the same keys and shapes.
        t: Position on the line (values outside ``[0, 1]`` extrapolate).

    Returns:
        A new state dict.

    Raises:
        ShapeMismatchError: if the keys or a tensor's shape differ; the message names it.
        WeightspaceValueError: if ``t`` is not a finite number.

    Example:
        >>> import torch
        >>> interpolate({"w": torch.zeros(2)}, {"w": torch.ones(2)}, 0.25)["w"].tolist()
        [0.25, 0.25]
    """
    if isinstance(t, bool) or not isinstance(t, (int, float)) or not math.isfinite(t):
        raise WeightspaceValueError(f"`t` must be a finite number, got {t!r}; pass e.g. 0.5")
    a = as_state_dict(state_a, argument="state_a")
    b = as_state_dict(state_b, argument="state_b")
    if a.keys() != b.keys():
        only_a = [k for k in a if k not in b]
        only_b = [k for k in b if k not in a]
        raise ShapeMismatchError(
            f"`state_a` and `state_b` hold different tensors: only in `state_a`: {only_a[:5]}, "
            f"only in `state_b`: {only_b[:5]}; interpolate two networks of one architecture"
        )
    out: dict[str, Tensor] = {}
    for key, x in a.items():
        y = b[key]
        if x.shape != y.shape:
            raise ShapeMismatchError(
                f"`state_a[{key!r}]` has shape {list(x.shape)} but `state_b[{key!r}]` has "
                f"{list(y.shape)}; interpolate two networks of one architecture"
            )
        if x.is_floating_point() and y.is_floating_point():
            out[key] = torch.lerp(x.detach(), y.detach().to(x.dtype), float(t))
        else:
            out[key] = (x if t < 0.5 else y).detach().clone()
    return out


@dataclass(frozen=True)
class BarrierResult:
    r"""A metric along the straight line between two networks, and its barrier.

    The barrier (Entezari, Sedghi, Saukh & Neyshabur, ICLR 2022,
    `arXiv:2110.06296 <https://arxiv.org/abs/2110.06296>`_) is the largest excess of the metric
    along the path over the straight line between its end values:

    .. math::

        B = \max_t \; \mathcal{L}((1-t)\theta_A + t\theta_B)
            - \big((1-t)\mathcal{L}(\theta_A) + t\mathcal{L}(\theta_B)\big)

    For a metric where higher is better (``maximize=True``, such as accuracy) the sign is
    flipped, so a barrier is always a loss of quality, and 0 means linear mode connectivity.

    Attributes:
        t: The positions on the line, from 0 to 1.
        values: The metric at each position.
        barrier: The barrier :math:`B` (never below 0, since the ends lie on the line).
        t_max: Where the barrier is reached.
        maximize: Whether higher values are better.

    Example:
        >>> r = BarrierResult.from_values([0.0, 0.5, 1.0], [1.0, 3.0, 1.0])
        >>> r.barrier, r.t_max
        (2.0, 0.5)
    """

    t: tuple[float, ...]
    values: tuple[float, ...]
    barrier: float
    t_max: float
    maximize: bool = False

    @classmethod
    def from_values(cls, t: Any, values: Any, *, maximize: bool = False) -> BarrierResult:
        """Compute the barrier of a curve given at positions ``t`` (the first and last: the ends).

        Example:
            >>> BarrierResult.from_values([0, 1], [0.9, 0.8], maximize=True).barrier
            0.0
        """
        ts = tuple(float(x) for x in t)
        vs = tuple(float(v) for v in values)
        if len(ts) != len(vs) or len(ts) < 2:
            raise WeightspaceValueError(
                f"`t` and `values` must have the same length (at least 2), got {len(ts)} and "
                f"{len(vs)}"
            )
        t0, t1 = ts[0], ts[-1]
        excess = []
        for x, v in zip(ts, vs, strict=True):
            s = (x - t0) / (t1 - t0)
            line = (1 - s) * vs[0] + s * vs[-1]
            excess.append(line - v if maximize else v - line)
        i = max(range(len(excess)), key=lambda k: excess[k])
        return cls(ts, vs, max(0.0, excess[i]), ts[i], maximize)

    @property
    def linear(self) -> tuple[float, ...]:
        """The straight line between the end values, at each position."""
        v0, v1 = self.values[0], self.values[-1]
        return tuple((1 - x) * v0 + x * v1 for x in self.t)

    def to_dict(self) -> dict[str, Any]:
        """The result as plain Python values (for JSON).

        Example:
            >>> BarrierResult.from_values([0, 1], [1, 1]).to_dict()["barrier"]
            0.0
        """
        return {
            "t": list(self.t),
            "values": list(self.values),
            "barrier": self.barrier,
            "t_max": self.t_max,
            "maximize": self.maximize,
        }


def loss_barrier(
    evaluate: Callable[[dict[str, Tensor]], float],
    state_a: StateDictLike,
    state_b: StateDictLike,
    *,
    steps: int = 11,
    maximize: bool = False,
) -> BarrierResult:
    """Evaluate a metric along the straight line between two networks and return its barrier.

    ``evaluate`` receives each interpolated state dict (from :func:`interpolate`) and returns a
    number: typically it loads the state dict into a module and computes the loss (or, with
    ``maximize=True``, the accuracy) on held-out data. Both ends are copied first, so
    ``evaluate`` may load the points into the module that ``state_a`` or ``state_b`` is.

    **Batch norm.** The running mean and variance of an interpolated network are not the
    interpolated statistics: the activations of the midpoint of two networks have a smaller
    variance than either end, so the stale statistics make it look much worse than it is. For
    networks with batch norm, recompute them inside ``evaluate`` with :func:`reset_bn_stats`
    (on training data) before measuring; otherwise the barrier mostly measures the stale
    statistics (Jordan et al., "REPAIR", ICLR 2023, `arXiv:2211.08403
    <https://arxiv.org/abs/2211.08403>`_).

    Args:
        evaluate: Function from a state dict to a number.
        state_a: The network at ``t = 0``.
        state_b: The network at ``t = 1``.
        steps: Number of evenly spaced positions, ends included (at least 2).
        maximize: Whether higher values are better (accuracy rather than loss).

    Returns:
        A :class:`BarrierResult` (curve, barrier and where it is reached).

    Raises:
        WeightspaceValueError: if ``steps < 2`` or ``evaluate`` does not return a finite number.
        ShapeMismatchError: if the two networks do not match.

    Example:
        >>> import torch
        >>> a, b = {"w": torch.tensor([-1.0])}, {"w": torch.tensor([1.0])}
        >>> r = loss_barrier(lambda sd: float(1 - sd["w"] ** 2), a, b, steps=5)
        >>> r.values, r.barrier
        ((0.0, 0.75, 1.0, 0.75, 0.0), 1.0)
    """
    if not callable(evaluate):
        raise WeightspaceValueError(
            f"`evaluate` must be a function from a state dict to a number, got "
            f"{type(evaluate).__name__}"
        )
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 2:
        raise WeightspaceValueError(f"`steps` must be an integer >= 2, got {steps!r}")
    # snapshots: `evaluate` may load each point into the very module that `state_a` came from
    a = {k: v.detach().clone() for k, v in as_state_dict(state_a, argument="state_a").items()}
    b = {k: v.detach().clone() for k, v in as_state_dict(state_b, argument="state_b").items()}
    ts = [i / (steps - 1) for i in range(steps)]
    values = []
    for t in ts:
        v = evaluate(interpolate(a, b, t))
        try:
            value = float(v)
        except (TypeError, ValueError):
            raise WeightspaceValueError(
                f"`evaluate` must return a number, got {type(v).__name__} at t={t:g}"
            ) from None
        if not math.isfinite(value):
            raise WeightspaceValueError(
                f"`evaluate` returned {value} at t={t:g}; it must return a finite number"
            )
        values.append(value)
    return BarrierResult.from_values(ts, values, maximize=maximize)


def reset_bn_stats(model: M, data: Any, *, max_batches: int | None = None) -> M:
    """Return a copy of ``model`` whose batch-norm running statistics are recomputed on data.

    After interpolating (or otherwise editing) weights, the running mean and variance that
    batch norm uses in eval mode no longer describe the network's activations. This resets
    them and re-estimates them as the exact average over ``data`` (momentum ``None``), in
    training mode for the batch-norm layers only (dropout stays off), without gradients. It is
    the simple part of REPAIR (Jordan et al., ICLR 2023, arXiv:2211.08403), which also rescales
    networks without batch norm. The input model is not changed; a model without batch norm
    comes back as an unchanged copy.

    Args:
        model: The network.
        data: Training inputs in the contract of :func:`weightspace.train.batches` (as for
            :func:`activation_matching`: a tensor or a pair is one batch, a ``DataLoader`` is
            read batch by batch); a few thousand samples are plenty.
        max_batches: Use at most this many batches.

    Returns:
        A deep copy of ``model`` with fresh statistics, in ``model``'s training mode.

    Raises:
        WeightspaceValueError: if ``model`` is not a module or ``data`` holds no batch.

    Example:
        >>> import torch
        >>> from torch import nn
        >>> net = nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4)).eval()
        >>> fresh = reset_bn_stats(net, torch.randn(256, 3) + 5)
        >>> bool(fresh[1].running_mean.abs().sum() > 0), float(net[1].running_mean.abs().sum())
        (True, 0.0)
    """
    if not isinstance(model, nn.Module):
        raise WeightspaceValueError(
            f"`model` must be a torch.nn.Module, got {type(model).__name__}"
        )
    if max_batches is not None and (
        isinstance(max_batches, bool) or not isinstance(max_batches, int) or max_batches < 1
    ):
        raise WeightspaceValueError(
            f"`max_batches` must be a positive integer or None, got {max_batches!r}"
        )
    clone = copy.deepcopy(model)
    norms = [m for m in clone.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    if not norms:
        return clone
    flags = [(m, m.training) for m in clone.modules()]
    momenta = [(m, m.momentum) for m in norms]
    try:
        clone.eval()
        for m in norms:
            m.reset_running_stats()
            m.momentum = None
            m.train()
        with torch.no_grad():
            for i, (args, kwargs) in enumerate(batches(data)):
                if max_batches is not None and i >= max_batches:
                    break
                clone(*args, **kwargs)
    finally:
        for m, momentum in momenta:
            m.momentum = momentum
        for module, flag in flags:
            module.training = flag
    return clone
