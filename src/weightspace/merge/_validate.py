"""Argument checks shared by the merge functions.

Every check raises :class:`~weightspace.WeightspaceValueError` with a message that names the
argument in backticks, shows the bad value and says how to fix it.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Literal

import torch

from weightspace._errors import ShapeMismatchError, WeightspaceValueError

__all__ = [
    "check_density",
    "check_drop_rate",
    "check_finite",
    "check_k",
    "check_lambdas",
    "check_majority",
    "check_seed",
    "check_stacked",
    "check_weights",
]

Majority = Literal["total", "count"]


def _is_real(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def check_finite(name: str, value: object) -> float:
    """Return ``value`` as a float, or raise if it is not a finite real number."""
    if not _is_real(value):
        raise WeightspaceValueError(
            f"`{name}` must be a finite real number, got {value!r} of type "
            f"{type(value).__name__}; pass a float such as 1.0"
        )
    number = float(value)  # type: ignore[arg-type]
    if not math.isfinite(number):
        raise WeightspaceValueError(f"`{name}` must be finite, got {number}; pass a finite float")
    return number


def check_density(value: object, name: str = "density") -> float:
    """Return the density as a float in (0, 1], or raise."""
    number = check_finite(name, value)
    if not 0.0 < number <= 1.0:
        raise WeightspaceValueError(
            f"`{name}` must lie in (0, 1] (the fraction of entries to keep), got {number}; "
            "pass for example 0.2 to keep the largest 20 % of each tensor"
        )
    return number


def check_drop_rate(value: object, name: str = "drop_rate") -> float:
    """Return the drop rate as a float in [0, 1), or raise."""
    number = check_finite(name, value)
    if not 0.0 <= number < 1.0:
        raise WeightspaceValueError(
            f"`{name}` must lie in [0, 1) (the probability of dropping an entry), got {number}; "
            "pass for example 0.9 to drop 90 % of the entries"
        )
    return number


def check_majority(value: object) -> Majority:
    """Return the sign-election rule, or raise."""
    if value == "total":
        return "total"
    if value == "count":
        return "count"
    raise WeightspaceValueError(
        f"`majority` must be 'total' (sign of the summed values, as in the TIES paper) or "
        f"'count' (sign held by most tasks), got {value!r}"
    )


def check_k(value: object, n_tasks: int) -> int:
    """Return the consensus threshold as an int in [1, n_tasks], or raise."""
    if not isinstance(value, int) or isinstance(value, bool):
        raise WeightspaceValueError(
            f"`k` must be an int (the number of task masks a weight must be in), got {value!r}"
        )
    if not 1 <= value <= n_tasks:
        raise WeightspaceValueError(
            f"`k` must lie in [1, {n_tasks}] for {n_tasks} tasks, got {value}; "
            "k=1 keeps the union of the masks, k=n_tasks their intersection"
        )
    return value


def check_weights(weights: object, n_tasks: int, name: str = "weights") -> tuple[float, ...]:
    """Return one finite float per task, or raise.

    ``weights`` may be a sequence of numbers or a 1-D tensor.
    """
    if isinstance(weights, torch.Tensor):
        if weights.ndim != 1:
            raise WeightspaceValueError(
                f"`{name}` must be 1-D with one entry per task, got shape {tuple(weights.shape)}"
            )
        values: list[object] = [float(w) for w in weights.tolist()]
    elif isinstance(weights, Sequence) and not isinstance(weights, (str, bytes)):
        values = list(weights)
    else:
        raise WeightspaceValueError(
            f"`{name}` must be a sequence of {n_tasks} floats (one per task), got {weights!r}"
        )
    if len(values) != n_tasks:
        raise WeightspaceValueError(
            f"`{name}` must have one entry per task ({n_tasks}), got {len(values)}: {values!r}"
        )
    return tuple(check_finite(f"{name}[{i}]", w) for i, w in enumerate(values))


def check_lambdas(lambdas: object, n_tasks: int) -> tuple[float, ...]:
    """Return one non-negative TALL-mask threshold per task, or raise.

    ``lambdas`` is one number for every task, or one per task (a sequence or a 1-D tensor).
    """
    if isinstance(lambdas, bool):
        values = None
    elif isinstance(lambdas, (int, float)):
        values = (check_finite("lambdas", lambdas),) * n_tasks
    else:
        values = check_weights(lambdas, n_tasks, "lambdas")
    if values is None or any(v < 0 for v in values):
        raise WeightspaceValueError(
            f"`lambdas` must be non-negative (one per task or one for all), got {lambdas!r}; "
            "the TALL-mask paper uses values in [0.2, 0.6]"
        )
    return values


def check_seed(seed: object, n_tasks: int) -> int | tuple[int, ...]:
    """Return one int seed, or one int per task, or raise."""
    if isinstance(seed, int) and not isinstance(seed, bool):
        return seed
    if isinstance(seed, Sequence) and not isinstance(seed, (str, bytes)):
        seeds = tuple(seed)
        if len(seeds) == n_tasks and all(
            isinstance(s, int) and not isinstance(s, bool) for s in seeds
        ):
            return seeds
    raise WeightspaceValueError(
        f"`seed` must be an int or a sequence of {n_tasks} ints (one per task vector), got {seed!r}"
    )


def check_stacked(deltas: object, name: str = "deltas", *, floating: bool = True) -> torch.Tensor:
    """Check a stacked tensor ``[n_tasks, *shape]`` and return it."""
    if not isinstance(deltas, torch.Tensor):
        raise WeightspaceValueError(
            f"`{name}` must be a tensor of shape [n_tasks, *shape], got {type(deltas).__name__}; "
            "stack the task deltas with torch.stack"
        )
    if deltas.ndim < 1 or deltas.shape[0] == 0:
        raise WeightspaceValueError(
            f"`{name}` must have shape [n_tasks, *shape] with n_tasks >= 1, got shape "
            f"{tuple(deltas.shape)}"
        )
    if floating and not deltas.is_floating_point():
        raise WeightspaceValueError(
            f"`{name}` must be a floating-point tensor, got dtype {deltas.dtype}; "
            "convert it with .float()"
        )
    return deltas


def check_same_shape(name: str, tensors: Sequence[torch.Tensor], key: str | None = None) -> None:
    """Raise :class:`ShapeMismatchError` unless all tensors share one shape."""
    shapes = [tuple(t.shape) for t in tensors]
    if any(s != shapes[0] for s in shapes):
        where = f" for key {key!r}" if key is not None else ""
        raise ShapeMismatchError(
            f"the tensors of `{name}`{where} must all have the same shape, got {shapes}"
        )
