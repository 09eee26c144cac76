"""Argument checks shared by the training layer (private)."""

from __future__ import annotations

import math

from torch import nn

from weightspace._errors import WeightspaceValueError

__all__ = ["check_model", "non_negative", "positive_int", "seed_int"]


def positive_int(value: object, name: str) -> int:
    """Return ``value`` if it is an int >= 1, else raise naming ``name``."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise WeightspaceValueError(f"`{name}` must be an int >= 1, got {value!r}")
    return value


def non_negative(value: object, name: str, *, strict: bool = False) -> float:
    """Return ``value`` as a float if it is finite and >= 0 (> 0 with ``strict``)."""
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    if not ok or (value <= 0 if strict else value < 0):  # type: ignore[operator]
        bound = "> 0" if strict else ">= 0"
        raise WeightspaceValueError(f"`{name}` must be a finite number {bound}, got {value!r}")
    return float(value)  # type: ignore[arg-type]


def seed_int(value: object, name: str = "seed") -> int:
    """Return ``value`` if it is an int (not a bool)."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise WeightspaceValueError(f"`{name}` must be an int, got {value!r}")
    return value


def check_model(model: object, name: str = "model") -> nn.Module:
    """Return ``model`` if it is an ``nn.Module``."""
    if not isinstance(model, nn.Module):
        raise WeightspaceValueError(f"`{name}` must be an nn.Module, got {type(model).__name__}")
    return model
