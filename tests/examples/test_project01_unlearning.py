"""Runs the project-1 example (unlearning) in quick mode and checks what it found."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

OURS = "Redistribute (ours)"


@pytest.fixture(scope="module")
def run(run_quick: Callable[..., tuple[Path, dict[str, Any]]]) -> tuple[Path, dict[str, Any]]:
    return run_quick("project01_unlearning/run_unlearning.py", timeout=600)


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
    for name, where in pit["where_sixes_go"].items():
        shares = {k: v for k, v in where.items() if k != "mean max-probability"}
        assert len(shares) == 9 and "3 (was 6)" in shares, name
        assert sum(shares.values()) == pytest.approx(1.0, abs=1e-6), name  # every 6 goes somewhere
    # the original calls its test 6s "6" (slot of the 3 now); retraining without 6s does not
    assert pit["where_sixes_go"]["Original"]["3 (was 6)"] > 0.3
    assert pit["where_sixes_go"]["Retrain"]["3 (was 6)"] < 0.2
    # a linear probe still tells 6 from the other digits in every model's features
    assert all(acc > 0.6 for acc in pit["probe_six_vs_rest"].values())
