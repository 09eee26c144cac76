"""Runs the project-1 example (unlearning) in quick mode and checks what it found."""

from __future__ import annotations

import importlib.util
import sys
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

OURS = "Redistribute (ours)"
SCRIPT = Path(__file__).resolve().parents[2] / "examples/project01_unlearning/run_unlearning.py"


@pytest.fixture(scope="module")
def run(run_quick: Callable[..., tuple[Path, dict[str, Any]]]) -> tuple[Path, dict[str, Any]]:
    return run_quick("project01_unlearning/run_unlearning.py", timeout=600)


@pytest.fixture(scope="module")
def module() -> ModuleType:
    spec = importlib.util.spec_from_file_location("_example_project01", SCRIPT)
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    sys.modules["_example_project01"] = mod  # dataclasses look their module up
    spec.loader.exec_module(mod)
    return mod


def _seed0(data: dict[str, Any], setting: str) -> dict[str, dict[str, Any]]:
    per_seed: dict[str, dict[str, Any]] = data["settings"][setting]["per_seed"]
    return per_seed["0"]


def test_quick_mode_never_writes_the_full_results(module: ModuleType) -> None:
    assert module.QUICK.out == module.FULL.out / "quick"
    assert module.FULL.out == SCRIPT.parent / "results"


def test_writes_tables_and_figures(run: tuple[Path, dict[str, Any]], module: ModuleType) -> None:
    out, data = run
    assert data["mode"] == "quick"
    tables = (out / "tables.md").read_text()
    assert "### MNIST: replace 6 by 3" in tables and "| Retrain |" in tables
    assert tables == module.tables(data)
    rst = (out / "tables.rst").read_text()
    for title in ("MNIST: replace 6 by 3", "Relearning", "Tuning on validation data"):
        assert f".. section: {title}" in rst and f".. end: {title}" in rst
    for name in ("tradeoff", "new_class_and_time", "per_class", "relearn"):
        assert (out / f"{name}.png").stat().st_size > 10_000, name


def test_every_method_gets_the_same_budget_and_grid(
    run: tuple[Path, dict[str, Any]], module: ModuleType
) -> None:
    data = run[1]
    assert data["lr_grid"] == list(module.QUICK.lr_grid)
    for key in ("mnist", "fashion_dissimilar", "fashion_similar", "speech"):
        entry = data["settings"][key]
        tuned = {m for m in entry["tuning"] if m != "reference"}
        assert tuned == set(entry["lrs"])
        for m in tuned:
            assert [float(lr) for lr in entry["tuning"][m]["grid"]] == data["lr_grid"], (key, m)
            assert entry["lrs"][m] in data["lr_grid"]
    # Random-subset forgetting has no class to remove: the class-level methods sit it out.
    random_methods = set(_seed0(data, "mnist_random"))
    assert random_methods == {"Original", "Retrain"} | (set(module.EDITORS) - module.CLASS_LEVEL)
    # The extreme cases reuse MNIST's chosen rates.
    assert data["settings"]["few_shot"]["lrs"] == data["settings"]["mnist"]["lrs"]


def test_the_original_knows_six_and_not_three(run: tuple[Path, dict[str, Any]]) -> None:
    s = _seed0(run[1], "mnist")["Original"]
    assert s["forget_accuracy"] > 0.5
    assert s["new_accuracy"] < 0.1


def test_our_method_forgets_six_and_learns_three(run: tuple[Path, dict[str, Any]]) -> None:
    s = _seed0(run[1], "mnist")
    assert s["Retrain"]["forget_test_accuracy"] < 0.2
    assert s["Retrain"]["time_ratio"] == 1.0
    ours, original = s[OURS], s["Original"]
    assert ours["forget_accuracy"] < 0.2 < original["forget_accuracy"]
    assert ours["new_accuracy"] > 0.3
    assert ours["distance"] > 0.0
    for name, row in s.items():  # both attacks report their own accuracy
        assert 0.0 <= row["holdout_mia_accuracy"] <= 1.0, name
        assert 0.0 <= row["mia_attack_accuracy"] <= 1.0, name


def test_relearning_curves_for_every_seed(
    run: tuple[Path, dict[str, Any]], module: ModuleType
) -> None:
    rel = run[1]["relearn"]
    assert set(rel) == {p.key for p in module.PAIRINGS}
    for key, per_model in rel.items():
        assert set(per_model) == set(module.RELEARN), key
        for curves in per_model.values():
            assert set(curves) == {"0"}
            assert all(len(c) == module.QUICK.relearn_steps + 1 for c in curves.values())


def test_extreme_cases_speech_and_pitfalls_ran(run: tuple[Path, dict[str, Any]]) -> None:
    data = run[1]
    two = _seed0(data, "forget_two")
    assert two[OURS]["forget_accuracy"] < 0.2 < two["Original"]["forget_accuracy"]
    assert set(_seed0(data, "few_shot")) >= {"Original", "Retrain", OURS}
    speech = _seed0(data, "speech")
    assert speech["Original"]["new_accuracy"] < 0.2
    assert speech[OURS]["forget_accuracy"] <= speech["Original"]["forget_accuracy"]
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
