"""Runs an example's quick mode once per test module (shared by the example tests)."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"

QuickRun = Callable[..., tuple[Path, dict[str, Any]]]


@pytest.fixture(scope="session")
def run_quick(tmp_path_factory: pytest.TempPathFactory) -> QuickRun:
    """``run_quick("folder/script.py", timeout=600)``: run it with ``--quick --out TMP``.

    Returns the output folder and the parsed ``results.json``; a failing script fails the test
    with the end of its standard error.
    """

    def run(script: str, timeout: float = 600) -> tuple[Path, dict[str, Any]]:
        out = tmp_path_factory.mktemp(Path(script).parent.name)
        done = subprocess.run(
            [sys.executable, str(EXAMPLES / script), "--quick", "--out", str(out)],
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
        if done.returncode != 0:
            pytest.fail(f"{script} --quick exited with {done.returncode}:\n{done.stderr[-4000:]}")
        data: dict[str, Any] = json.loads((out / "results.json").read_text(encoding="utf-8"))
        return out, data

    return run
