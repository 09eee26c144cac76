from __future__ import annotations

import pytest

from weightspace import MissingSourceError, WeightspaceError
from weightspace._optional import require_executable, require_module


def test_require_module_returns_the_module() -> None:
    assert require_module("json", pip="json").__name__ == "json"


def test_require_module_names_the_install_command() -> None:
    with pytest.raises(MissingSourceError) as info:
        require_module("no_such_module_xyz", pip="no-such-dist", extra="graph")
    msg = str(info.value)
    assert "`no_such_module_xyz`" in msg
    assert "`pip install no-such-dist`" in msg
    assert "weightspace[graph]" in msg
    assert isinstance(info.value, ImportError)
    assert isinstance(info.value, WeightspaceError)


def test_require_executable() -> None:
    assert require_executable("sh", apt="dash").endswith("sh")
    with pytest.raises(MissingSourceError, match=r"apt-get install -y no-such-pkg"):
        require_executable("no-such-program-xyz", apt="no-such-pkg")
