"""The library's exceptions.

Every error that weightspace raises on purpose derives from :class:`WeightspaceError`, so that
``except weightspace.WeightspaceError`` catches all of them. Errors about a value the caller
passed also derive from :class:`ValueError`, errors about how a function was called from
:class:`TypeError`, and a missing optional package or data source from :class:`ImportError`,
so that code written against the standard exceptions keeps working.

Messages follow one pattern: they name the argument in backticks, show the bad value and say
how to fix it.
"""

from __future__ import annotations

__all__ = [
    "CacheError",
    "MissingSourceError",
    "ShapeMismatchError",
    "WeightspaceError",
    "WeightspaceTypeError",
    "WeightspaceValueError",
]


class WeightspaceError(Exception):
    """Base class of every error raised on purpose by weightspace."""


class WeightspaceValueError(WeightspaceError, ValueError):
    """An argument has a bad value (wrong type, out of range, unknown name)."""


class WeightspaceTypeError(WeightspaceError, TypeError):
    """A function was called the wrong way (e.g. positionally where it takes keywords only)."""


class ShapeMismatchError(WeightspaceValueError):
    """Two tensors or state dicts that must line up do not (names or shapes differ)."""


class MissingSourceError(WeightspaceError, ImportError):
    """A package, Debian package or file that a data set or model is built from is missing.

    The message names the exact ``pip install`` or ``apt-get install`` command that provides it.
    """


class CacheError(WeightspaceError):
    """A cached artefact is unusable (corrupted, truncated or from an incompatible version)."""
