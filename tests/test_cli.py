from __future__ import annotations

import subprocess
import sys

import pytest

import weightspace
from weightspace._cli import main


def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        main(["--version"])
    assert info.value.code == 0
    assert capsys.readouterr().out.strip() == f"weightspace {weightspace.__version__}"


def test_info_lists_groups(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["info"]) == 0
    out = capsys.readouterr().out
    assert out.startswith(f"weightspace {weightspace.__version__}\n")
    for group in ("[hf]", "[vision]", "[graph]", "[audio]"):
        assert group in out


def test_unknown_data_set_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["data", "build", "cifar10"]) == 2
    err = capsys.readouterr().err
    assert "unknown data set(s) ['cifar10']" in err
    assert "'mnist'" in err


def test_missing_subcommand_is_rejected() -> None:
    with pytest.raises(SystemExit) as info:
        main([])
    assert info.value.code == 2


def test_python_dash_m_entry_point() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "weightspace", "--version"], capture_output=True, text=True
    )
    assert out.returncode == 0
    assert out.stdout.strip() == f"weightspace {weightspace.__version__}"
