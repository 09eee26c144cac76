"""Runs the project-1 example (unlearning) in quick mode and checks what it found."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "examples" / "project01_unlearning" / "run_unlearning.py"
OURS = "Redistribute (ours)"


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, Any]]:
    out = tmp_path_factory.mktemp("project01")
    subprocess.run(
        [sys.executable, str(SCRIPT), "--quick", "--out", str(out)],
        check=True,
        capture_output=True,
        text=True,
        timeout=600,
    )
    data: dict[str, Any] = json.loads((out / "results.json").read_text())
    return out, data


def test_writes_tables_and_figures(run: tuple[Path, dict[str, Any]]) -> None:
    out, data = run
    assert data["mode"] == "quick"
    tables = (out / "tables.md").read_text()
    assert "### MNIST: replace 6 by 3" in tables and "| Retrain |" in tables
    for name in ("tradeoff", "new_class_and_time", "per_class", "relearn"):
        assert (out / f"{name}.png").stat().st_size > 10_000, name


def test_the_original_knows_six_and_not_three(run: tuple[Path, dict[str, Any]]) -> None:
    s = run[1]["mnist"]["summary"]["Original"]
    assert s["forget_accuracy"][0] > 0.5
    assert s["new_accuracy"][0] < 0.1


def test_our_method_forgets_six_and_learns_three(run: tuple[Path, dict[str, Any]]) -> None:
    s = run[1]["mnist"]["summary"]
    assert s["Retrain"]["forget_test_accuracy"][0] < 0.2
    assert s["Retrain"]["time_ratio"][0] == 1.0
    ours, original = s[OURS], s["Original"]
    assert ours["forget_accuracy"][0] < 0.2 < original["forget_accuracy"][0]
    assert ours["new_accuracy"][0] > 0.3
    assert ours["mia_efficacy"][0] > original["mia_efficacy"][0]
    assert ours["distance"][0] > 0.0


def test_extreme_cases_and_speech_ran(run: tuple[Path, dict[str, Any]]) -> None:
    data = run[1]
    two = data["forget_two"]["summary"]
    assert two[OURS]["forget_accuracy"][0] < 0.2 < two["Original"]["forget_accuracy"][0]
    assert set(data["few_shot"]["summary"]) >= {"Original", "Retrain", OURS}
    speech = data["speech"]["summary"]
    assert speech["Original"]["new_accuracy"][0] < 0.2
    assert speech[OURS]["forget_accuracy"][0] <= speech["Original"]["forget_accuracy"][0]
    pit = data["pitfalls"]
    assert set(pit["where_sixes_go"]["Original"]) >= {"3 (was 6)", "mean max-probability"}
    assert 0.0 <= pit["probe_six_vs_rest"]["Retrain"] <= 1.0
