"""Fixtures shared by the tests of `weightspace.models`."""

from __future__ import annotations

import importlib.util
from collections.abc import Callable
from typing import Any

import pytest


@pytest.fixture
def hide_package(monkeypatch: pytest.MonkeyPatch) -> Callable[[str], None]:
    """Make `importlib.util.find_spec` report a package as not installed."""
    real = importlib.util.find_spec

    def hide(name: str) -> None:
        def fake(fullname: str, *args: Any, **kwargs: Any) -> Any:
            if fullname == name or fullname.startswith(name + "."):
                return None
            return real(fullname, *args, **kwargs)

        monkeypatch.setattr(importlib.util, "find_spec", fake)

    return hide
