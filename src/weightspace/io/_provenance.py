"""Provenance metadata: what produced a checkpoint, recorded in its safetensors header."""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from typing import Any

from weightspace._errors import WeightspaceValueError
from weightspace._version import __version__

__all__ = ["provenance"]


def _jsonable(value: Any) -> Any:
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    item = getattr(value, "item", None)  # 0-d tensors and numpy scalars
    if callable(item) and getattr(value, "ndim", None) == 0:
        return item()
    if isinstance(value, (set, frozenset)):
        return sorted(value, key=repr)
    raise TypeError(f"{type(value).__name__} is not JSON-serialisable")


def provenance(
    method: str,
    inputs: Sequence[str | os.PathLike[str]],
    parameters: Mapping[str, object],
) -> dict[str, str]:
    """Build header metadata that records how a checkpoint was produced.

    Pass the result as ``metadata=`` to :func:`save_state_dict`; read it back from
    :attr:`LazyStateDict.metadata`. Values are strings, as safetensors requires: ``inputs``
    and ``parameters`` are JSON-encoded (keys sorted, so equal parameters give equal text).

    Args:
        method: What was done, such as ``"task_arithmetic"`` or ``"ties"``.
        inputs: The checkpoints it was computed from (paths or names), in order.
        parameters: Its settings (coefficients, seeds, ...): JSON values, paths, or 0-d
            tensors and numpy scalars (stored as numbers).

    Returns:
        ``{"format": "pt", "weightspace.version": ..., "weightspace.method": method,
        "weightspace.inputs": <JSON list>, "weightspace.parameters": <JSON object>}``.

    Raises:
        WeightspaceValueError: if ``method`` is empty, ``inputs`` is a single string, or a
            parameter cannot be JSON-encoded (or is NaN or infinite).

    Example:
        >>> meta = provenance("task_arithmetic", ["base.safetensors", "ft.safetensors"],
        ...                   {"scale": 0.5})
        >>> meta["weightspace.parameters"], meta["format"]
        ('{"scale": 0.5}', 'pt')
    """
    if not isinstance(method, str) or not method:
        raise WeightspaceValueError(f"`method` must be a non-empty string, got {method!r}")
    if isinstance(inputs, (str, os.PathLike)):
        raise WeightspaceValueError(
            f"`inputs` must be a sequence of paths or names, got the single value {inputs!r}; "
            "wrap it in a list"
        )
    if not isinstance(parameters, Mapping) or not all(isinstance(k, str) for k in parameters):
        raise WeightspaceValueError(
            f"`parameters` must be a mapping with str keys, got {parameters!r}"
        )
    try:
        params = json.dumps(dict(parameters), sort_keys=True, allow_nan=False, default=_jsonable)
    except (TypeError, ValueError) as exc:
        raise WeightspaceValueError(
            f"`parameters` must be JSON-encodable (numbers, strings, lists, dicts, paths), "
            f"got {parameters!r} ({exc}); convert the offending values to numbers or strings"
        ) from None
    return {
        "format": "pt",
        "weightspace.version": __version__,
        "weightspace.method": method,
        "weightspace.inputs": json.dumps([os.fspath(p) for p in inputs]),
        "weightspace.parameters": params,
    }
