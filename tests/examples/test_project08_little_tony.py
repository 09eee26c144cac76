"""Runs the project-8 examples (distillation) in quick mode and checks what they report."""

from __future__ import annotations

import importlib.util
import json
import sys
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
FOLDER = "project08_little_tony"
QuickRun = Callable[..., tuple[Path, dict[str, Any]]]


def _load(script: str) -> ModuleType:
    path = EXAMPLES / FOLDER / script
    name = f"_example_{path.stem}"
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def ordering(run_quick: QuickRun) -> tuple[Path, dict[str, Any]]:
    return run_quick(f"{FOLDER}/distill_ordering.py", timeout=300)


def test_ordering_quick_mode_reports_every_method(ordering: tuple[Path, dict[str, Any]]) -> None:
    out, data = ordering
    assert data["mode"] == "quick"
    res = data["datasets"]["mnist"]
    assert 0.5 < res["teacher"]["test"] <= 1.0
    assert res["teacher"]["parameters"] == 784 * 128 + 128 + 128 * 128 + 128 + 128 * 10 + 10
    assert res["student_parameters"] == 784 * 32 + 32 + 32 * 10 + 10
    for method in ("alone", "kd", "dkd", "hints"):
        (run,) = res["methods"][method]
        assert run["seed"] == 0 and 0.0 <= run["test"] <= 1.0
        assert run["chosen"] == data["config"]["grid"][method][0]
        assert run["val"] == run["trials"][str(run["chosen"])]["val"]
    text = (out / "results.md").read_text()
    assert "### MNIST" in text and "| hints | weight = 10 |" in text
    assert (out / "ordering.png").stat().st_size > 5_000


def test_ordering_tables_rebuild_from_committed_results() -> None:
    folder = EXAMPLES / FOLDER / "results" / "ordering"
    if not (folder / "results.json").exists():
        pytest.skip("the full run of the ordering study is not committed yet")
    module = _load("distill_ordering.py")
    saved = json.loads((folder / "results.json").read_text())
    assert saved["mode"] == "full"
    assert module.tables(saved) == (folder / "results.md").read_text(encoding="utf-8")
