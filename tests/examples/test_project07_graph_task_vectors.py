"""Runs the project-7 example (task vectors on molecular graphs) in quick mode and checks it."""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("rdkit")
pytest.importorskip("torch_geometric")

TASKS = ("tpsa@nci", "logp@nci", "hbd@nci", "rings@nci", "pic50@chembl")
METHODS = {
    "pretrained",
    "finetuned",
    "average",
    "task_arithmetic",
    "ties",
    "tall_masks",
    "consensus",
}


@pytest.fixture(scope="module")
def run(run_quick: Callable[..., tuple[Path, dict[str, Any]]]) -> tuple[Path, dict[str, Any]]:
    return run_quick("project07_graph_task_vectors/graph_task_vectors.py", timeout=600)


def test_writes_tables_and_figures(run: tuple[Path, dict[str, Any]]) -> None:
    out, data = run
    assert data["mode"] == "quick" and len(data["runs"]) == 1
    tables = (out / "tables.md").read_text()
    for heading in (
        "### Forgetting by negation",
        "### Learning by addition, five task vectors: test R²",
        "### Learning by addition, the four NCI task vectors",
        "### Pairs of task vectors",
        "### Analogy: logP (NCI) : logP (ChEMBL) :: TPSA (NCI) : TPSA (ChEMBL)",
        "### Cosine similarity of the task vectors",
    ):
        assert heading in tables, heading
    assert "| task_arithmetic |" in tables and "negated random vector" in tables
    for name in ("negation", "addition", "analogy", "cosine"):
        assert (out / f"{name}.png").stat().st_size > 10_000, name


def test_pretrained_model_and_probe_heads_learnt_something(
    run: tuple[Path, dict[str, Any]],
) -> None:
    r = run[1]["runs"][0]
    # masked atoms: better than always guessing the commonest element of the test atoms
    assert r["scores"]["mask@nci"]["pretrained"] > r["mask_majority"] + 0.05
    # linear probes on the pretrained embeddings explain much of TPSA and ring counts
    assert r["scores"]["tpsa@nci"]["pretrained"] > 0.4
    assert r["scores"]["rings@nci"]["pretrained"] > 0.6
    assert r["scores"]["descriptors@nci"]["pretrained"] > 0.5


def test_task_vectors_cover_the_trunk_only(run: tuple[Path, dict[str, Any]]) -> None:
    r = run[1]["runs"][0]
    keys = r["vector_keys"]
    assert keys and not any(k.startswith("heads.") for k in keys)
    assert {k.split(".")[0] for k in keys} == {"encoder", "convs", "readout"}
    n = len(r["vector_names"])
    assert set(TASKS) <= set(r["vector_names"]) and n == 9
    for i in range(n):
        assert r["cosine"][i][i] == pytest.approx(1.0, abs=1e-4)
        for j in range(n):
            assert i == j or abs(r["cosine"][i][j]) < 0.99
    assert all(v > 0 for v in r["norms"].values())


def test_negation_respects_the_controls(run: tuple[Path, dict[str, Any]]) -> None:
    r = run[1]["runs"][0]
    grid = run[1]["config"]["negation_grid"]
    for task in TASKS:
        f = r["forget"][task]
        assert f["scale"] in grid and f["random"] is not None
        curve = {c[0]: c for c in f["curve"]}
        pre_controls, chosen = curve[0.0][2], curve[f["scale"]]
        for name, value in chosen[2].items():
            assert value >= 0.95 * pre_controls[name] - 1e-9, (task, name)
        assert chosen[1] <= curve[0.0][1]  # the target's validation score did not go up
        assert set(f["control"]) == {"mask@nci", "descriptors@nci"}


def test_addition_rows_and_normalisation(run: tuple[Path, dict[str, Any]]) -> None:
    r = run[1]["runs"][0]
    for key, tasks in (
        ("addition", TASKS),
        ("addition_nci", TASKS[:4]),
        ("addition_recentred", TASKS),
    ):
        rows = r[key]["rows"]
        assert set(rows) == METHODS
        assert rows["finetuned"]["normalized"] == {t: 1.0 for t in tasks}
        for name, row in rows.items():
            for t in tasks:
                assert math.isfinite(row["scores"][t])
                ft = rows["finetuned"]["scores"][t]
                assert row["normalized"][t] == pytest.approx(row["scores"][t] / ft), (key, name)
    assert len(r["pairs"]) == 10


def test_analogies(run: tuple[Path, dict[str, Any]]) -> None:
    data = run[1]
    r = data["runs"][0]
    assert set(r["analogies"]) == {"mask->tpsa", "logp->tpsa", "mask->logp", "tpsa->logp"}
    for a in r["analogies"].values():
        assert set(a["scores"]) == {"pretrained", "c_only", "analogy", "reference"}
        assert a["scales"]["analogy"] in data["config"]["grid"]
        assert a["task"] in ("tpsa@chembl", "logp@chembl")
        assert all(math.isfinite(v) for v in a["scores"].values())
