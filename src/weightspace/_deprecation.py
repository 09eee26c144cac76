"""Deprecated aliases: one release of warning before a public name or argument disappears.

Every rename of the public API keeps its old spelling for one release through the helpers
here, each raising :class:`FutureWarning` (shown to users by default, unlike
``DeprecationWarning``) with the version it will be removed in and the name to use instead.
Each rename is also listed in ``CHANGELOG.md`` under *Deprecated*.
"""

from __future__ import annotations

import functools
import inspect
import warnings
from collections.abc import Callable, Mapping
from typing import Any, ParamSpec, TypeVar

__all__ = ["deprecated", "renamed_kwargs", "warn_deprecated"]

P = ParamSpec("P")
R = TypeVar("R")

#: The release in which the aliases deprecated in this one are removed.
REMOVED_IN = "0.2"


def warn_deprecated(
    old: str, new: str, *, since: str, removed_in: str = REMOVED_IN, stacklevel: int = 3
) -> None:
    """Warn that ``old`` is deprecated in favour of ``new``.

    Args:
        old: The deprecated spelling, as a user wrote it (e.g. ``"merge.average"``).
        new: The spelling to use instead.
        since: The release that deprecated it.
        removed_in: The release that removes it.
        stacklevel: Passed to :func:`warnings.warn`; the default points at the caller of the
            function that calls this one.
    """
    warnings.warn(
        f"`{old}` is deprecated since weightspace {since} and will be removed in {removed_in}; "
        f"use `{new}` instead",
        FutureWarning,
        stacklevel=stacklevel,
    )


def deprecated(
    *, since: str, alternative: str, removed_in: str = REMOVED_IN, name: str | None = None
) -> Callable[[Callable[P, R]], Callable[P, R]]:
    """Turn a function into a deprecated alias that warns and then calls it.

    Args:
        since: The release that deprecated the alias.
        alternative: The public name to use instead (shown in the warning and the docstring).
        removed_in: The release that removes the alias.
        name: The alias's public name; the wrapped function's ``__qualname__`` by default.

    Returns:
        A decorator. The wrapped function keeps its signature; its docstring starts with a
        ``.. deprecated::`` note.

    Example:
        >>> import warnings
        >>> def mean(xs):
        ...     return sum(xs) / len(xs)
        >>> average = deprecated(since="0.1", alternative="mean", name="average")(mean)
        >>> with warnings.catch_warnings(record=True) as caught:
        ...     warnings.simplefilter("always")
        ...     average([1.0, 3.0])
        2.0
        >>> print(caught[0].message)
        `average` is deprecated since weightspace 0.1 and will be removed in 0.2; use `mean` instead
    """

    def decorate(fn: Callable[P, R]) -> Callable[P, R]:
        old = name or fn.__qualname__

        @functools.wraps(fn)
        def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
            warn_deprecated(old, alternative, since=since, removed_in=removed_in)
            return fn(*args, **kwargs)

        wrapper.__name__ = old.rsplit(".", 1)[-1]
        wrapper.__qualname__ = old
        wrapper.__doc__ = (
            f".. deprecated:: {since}\n    Use :obj:`{alternative}` instead; removed in "
            f"{removed_in}.\n\n" + inspect.cleandoc(fn.__doc__ or "")
        )
        return wrapper

    return decorate


def renamed_kwargs(
    kwargs: dict[str, Any], renames: Mapping[str, str], *, func: str, since: str
) -> dict[str, Any]:
    """Move deprecated keyword arguments to their new names, warning once per rename.

    Args:
        kwargs: The keyword arguments as passed (left unchanged).
        renames: Old name -> new name.
        func: The public function, for the message (e.g. ``"TaskVector.apply_to"``).
        since: The release that renamed the arguments.

    Returns:
        A new dict with every old name replaced by its new one.

    Raises:
        TypeError: if both the old and the new name were passed.

    Example:
        >>> import warnings
        >>> with warnings.catch_warnings(record=True):
        ...     warnings.simplefilter("always")
        ...     renamed_kwargs({"lam": 0.5}, {"lam": "scale"}, func="f", since="0.1")
        {'scale': 0.5}
    """
    out = dict(kwargs)
    for old, new in renames.items():
        if old not in out:
            continue
        if new in out:
            raise TypeError(
                f"{func}() got both `{old}` (deprecated) and `{new}`; pass only `{new}`"
            )
        warn_deprecated(f"{func}({old}=...)", f"{func}({new}=...)", since=since, stacklevel=4)
        out[new] = out.pop(old)
    return out
