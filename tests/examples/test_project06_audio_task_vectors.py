"""Runs the project-6 example (task arithmetic on audio) in quick mode and checks what it found."""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

ADDED = ["language", "instrument", "effects", "digits", "commands"]
METHODS = ["average", "task_arithmetic", "ties", "tall_masks", "consensus"]


@pytest.fixture(scope="module")
def run(run_quick: Callable[..., tuple[Path, dict[str, Any]]]) -> tuple[Path, dict[str, Any]]:
    return run_quick("project06_audio_task_vectors/audio_task_vectors.py", timeout=600)


def test_writes_tables_and_figures(run: tuple[Path, dict[str, Any]]) -> None:
    out, data = run
    assert data["mode"] == "quick" and len(data["runs"]) == 1
    tables = (out / "tables.md").read_text()
    for heading in (
        "### Tasks",
        "### Forgetting by negation: language",
        "### Addition of five task vectors (test accuracy)",
        "### Addition: normalised accuracy (merged / fine-tuned)",
        "### Analogy: commands_accented",
        "### Pairs: task (row) under its vector plus another (column), scale 1",
        "### Where the five added vectors agree: per tensor",
        "### Cosine similarity of the task vectors",
    ):
        assert heading in tables, heading
    assert "| negated random vector |" in tables and "| ties |" in tables
    for name in ("negation", "addition", "addition_scale", "analogy", "layers", "cosine"):
        assert (out / f"{name}.png").stat().st_size > 10_000, name


def test_tasks_use_real_recordings_split_apart(run: tuple[Path, dict[str, Any]]) -> None:
    r = run[1]["runs"][0]
    assert r["classes"]["language"] == ["es", "fr", "ru"]
    assert r["classes"]["instrument"] == ["bd", "elec", "tabla"]
    assert r["classes"]["effects"] == ["bird", "mammal", "other"]
    for task in ("language", "instrument", "effects", "digits", "commands_accented"):
        sizes = r["sizes"][task]
        assert sizes["train"] >= 30 and sizes["val"] >= 8 and sizes["test"] >= 8, task
    # The vectors cover the trunk only: every head stays out of them.
    shared = r["shared"]
    assert 50_000 < shared["parameters"] < shared["total_parameters"] < 300_000
    assert shared["parameters"] + shared["head_parameters"] == shared["total_parameters"]


def test_accuracies_are_in_range_and_fine_tuning_helps_real_tasks(
    run: tuple[Path, dict[str, Any]],
) -> None:
    r = run[1]["runs"][0]
    for name, scores in r["per_task"].items():
        for value in scores.values():
            assert 0.0 <= value <= 1.0, name
    real = [r["per_task"][t] for t in ("language", "instrument", "effects")]
    assert sum(s["finetuned"] for s in real) > sum(s["pretrained"] for s in real)
    assert r["per_task"]["words"]["pretrained"] > 0.1  # 10 words: chance is 0.1


def test_negation_follows_the_selection_rule(run: tuple[Path, dict[str, Any]]) -> None:
    r = run[1]["runs"][0]
    grid = run[1]["config"]["grid"]
    for target in ("language", "instrument"):
        f = r["forget"][target]
        assert set(f["control"]) == {"words", "digits"}
        assert [c[0] for c in f["curve"]] == grid
        # Ilharco et al.'s rule, redone from the validation curve: among the scales that keep
        # every control at >= 95 % of its pretrained (scale 0) score, the lowest target score,
        # ties to the smaller scale.
        pre = f["curve"][0]
        kept = [c for c in f["curve"] if all(c[2][k] >= 0.95 * pre[2][k] for k in c[2])]
        assert f["scale"] == min(kept, key=lambda c: (c[1], c[0]))[0], target
        chosen = next(c for c in f["curve"] if c[0] == f["scale"])
        assert chosen[1] <= pre[1]
        if f["scale"] == 0.0:  # nothing better qualified: the pretrained model itself
            assert f["target"]["edited"] == f["target"]["pretrained"]
            assert {k: v["edited"] for k, v in f["control"].items()} == {
                k: v["pretrained"] for k, v in f["control"].items()
            }


def test_addition_reports_every_method(run: tuple[Path, dict[str, Any]]) -> None:
    add = run[1]["runs"][0]["addition"]
    assert add["tasks"] == ADDED
    assert list(add["rows"]) == ["pretrained", "finetuned", *METHODS]
    finetuned = add["rows"]["finetuned"]
    assert all(math.isclose(v, 1.0) for v in finetuned["normalized"].values())
    assert add["rows"]["average"]["scale"] == 1.0
    for m in METHODS:
        row = add["rows"][m]
        assert 0.0 <= row["mean"] <= 1.0
        assert row["normalized_mean"] > 0.2, m
    summary = run[1]["summary"]["addition"]
    assert set(summary) == {"pretrained", "finetuned", *METHODS}


def test_analogy_and_cosines(run: tuple[Path, dict[str, Any]]) -> None:
    r = run[1]["runs"][0]
    for task in ("commands_accented", "digits_accented"):
        scores = r["analogy"][task]["scores"]
        assert set(scores) == {"pretrained", "c_only", "analogy", "reference"}
        assert all(0.0 <= v <= 1.0 for v in scores.values())
        # The scale is the first best on the validation curve (scale 0 is in the grid); at
        # scale 0 the analogy is the pretrained model itself.
        curve = r["analogy"][task]["curve"]
        assert [s for s, _ in curve] == run[1]["config"]["grid"]
        best = max(v for _, v in curve)
        chosen = r["analogy"][task]["scales"]["analogy"]
        assert chosen == next(s for s, v in curve if v == best), task
        if chosen == 0.0:
            assert scores["analogy"] == scores["pretrained"]
    names = r["cosine"]["names"]
    mat = r["cosine"]["matrix"]
    assert len(names) == 7
    for i in range(len(names)):
        assert math.isclose(mat[i][i], 1.0, abs_tol=1e-5)
        for j in range(len(names)):
            assert math.isclose(mat[i][j], mat[j][i], abs_tol=1e-6)


def test_interference_diagnostics(run: tuple[Path, dict[str, Any]]) -> None:
    r = run[1]["runs"][0]
    assert set(r["pairs"]) == set(ADDED)
    for a, row in r["pairs"].items():
        assert set(row) == set(ADDED) - {a}
        assert all(math.isnan(v) or 0.0 <= v < 10.0 for v in row.values())
    # Shares of the squared norm over the trunk's tensors add up to one for every vector.
    assert math.isclose(sum(r["layer_share"].values()), 1.0, rel_tol=1e-4)
    assert set(r["layer_cosine"]) == set(r["layer_sizes"])
    assert sum(r["layer_sizes"].values()) == r["shared"]["parameters"]
    assert all(-1.0 <= v <= 1.0 for v in r["layer_cosine"].values())
