"""Reading the values of a merge config: numbers, paths, key lists, selections, YAML text.

Shared by weightspace's own YAML format (:mod:`weightspace.merge._config`) and the mergekit
translation (:mod:`weightspace.merge._mergekit`); every error names the config key.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from weightspace._errors import WeightspaceValueError

__all__ = ["check_keys", "fmt", "read_source", "real", "resolve_path", "targets"]


def fmt(values: Sequence[str]) -> str:
    """``'a', 'b'`` (or ``(none)``): a list of names for a message."""
    return ", ".join(repr(v) for v in values) if values else "(none)"


def real(value: object, key: str) -> float:
    """``value`` as a finite float, or an error that names ``key``."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise WeightspaceValueError(
            f"`{key}` must be a number, got {value!r} ({type(value).__name__})"
        )
    number = float(value)
    if not math.isfinite(number):
        raise WeightspaceValueError(f"`{key}` must be finite, got {value!r}")
    return number


def targets(value: object, key: str) -> str | tuple[str, ...] | None:
    """A ``select``/``exclude`` value: ``None``, a regular expression, or a tuple of names."""
    if value is None or isinstance(value, str):
        return value
    if isinstance(value, (list, tuple)) and all(isinstance(v, str) and v for v in value):
        if not value:
            raise WeightspaceValueError(f"`{key}` must not be an empty list; leave it out")
        return tuple(value)
    raise WeightspaceValueError(
        f"`{key}` must be a list of tensor/module names or dotted suffixes, or a regular "
        f"expression string (matched with re.fullmatch), got {value!r}"
    )


def read_source(source: str | os.PathLike[str]) -> tuple[str, Path | None]:
    """The YAML text of ``source`` (a file or the text itself) and the folder it lies in."""
    if isinstance(source, os.PathLike) or (
        isinstance(source, str)
        and "\n" not in source
        and (source.endswith((".yaml", ".yml")) or Path(source).expanduser().is_file())
    ):
        path = Path(source).expanduser()
        if not path.is_file():
            raise WeightspaceValueError(
                f"the merge config {str(source)!r} does not exist; pass the path of a YAML file"
            )
        try:
            return path.read_text(encoding="utf-8"), path.resolve().parent
        except (OSError, UnicodeDecodeError) as exc:
            raise WeightspaceValueError(
                f"the merge config {str(source)!r} cannot be read: {exc}"
            ) from None
    if not isinstance(source, str):
        raise WeightspaceValueError(
            f"`source` must be a path or YAML text, got {type(source).__name__}"
        )
    return source, None


def resolve_path(value: object, key: str, folder: Path | None) -> Path:
    """A path of the config, relative to ``folder`` (the config file's) unless absolute."""
    if not isinstance(value, str) or not value:
        raise WeightspaceValueError(f"`{key}` must be a path (a string), got {value!r}")
    path = Path(value).expanduser()
    if folder is not None and not path.is_absolute():
        path = folder / path
    return path


def check_keys(data: Mapping[str, Any], valid: Sequence[str], where: str) -> None:
    """Refuse keys of ``data`` that are not in ``valid``, naming them and the valid ones."""
    unknown = [str(k) for k in data if k not in valid]
    if unknown:
        raise WeightspaceValueError(
            f"unknown key(s) {fmt(unknown)} in {where}; valid keys are {fmt(valid)}"
        )
