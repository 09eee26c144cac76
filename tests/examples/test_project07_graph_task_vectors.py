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
FAMILIES = {"average", "task_arithmetic", "ties", "consensus", "tall_masks"}


@pytest.fixture(scope="module")
def run(run_quick: Callable[..., tuple[Path, dict[str, Any]]]) -> tuple[Path, dict[str, Any]]:
    return run_quick("project07_graph_task_vectors/graph_task_vectors.py", timeout=600)


def test_writes_tables_and_figures(run: tuple[Path, dict[str, Any]]) -> None:
    out, data = run
    assert data["mode"] == "quick" and len(data["runs"]) == 1
    tables = (out / "tables.md").read_text()
    for heading in (
        "### Fine-tuning learning rate chosen on the tuning seed's validation split",
        "### Forgetting by negation",
        "### Learning by addition, five task vectors: test R²",
        "### Learning by addition, the four NCI task vectors",
        "### Learning by addition, five task vectors, predictions re-centred on the validation",
        "### Pairs of task vectors",
        "### Analogies: test R² on the ChEMBL molecules",
        "### Cosine similarity of the task vectors",
        "### Per seed: negation (target R²) and addition",
        "### Per seed: analogies",
    ):
        assert heading in tables, heading
    assert "| task_arithmetic |" in tables and "negated random vector" in tables
    assert "| tall_masks (oracle) |" in tables
    assert "| logP (NCI) : logP (ChEMBL) :: TPSA (NCI) : TPSA (ChEMBL) |" in tables
    rst = (out / "tables.rst").read_text()
    assert ".. section: Analogies: test R² on the ChEMBL molecules" in rst
    # Each finished seed is stored apart, so that a stopped run resumes.
    assert (out / "seeds" / "tuning.json").exists() and (out / "seeds" / "seed0.json").exists()
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
        assert {n.partition("@")[0] for n in rows} == FAMILIES | {"pretrained", "finetuned"}
        assert rows["finetuned"]["normalized"] == {t: 1.0 for t in tasks}
        for name, row in rows.items():
            for t in tasks:
                assert math.isfinite(row["scores"][t])
                ft = rows["finetuned"]["scores"][t]
                assert row["normalized"][t] == pytest.approx(row["scores"][t] / ft), (key, name)
        # Every family's reported configuration is its best on validation.
        chosen = r["chosen"][key]
        assert set(chosen) == FAMILIES
        for family, config in chosen.items():
            best = max(v["validation"] for n, v in rows.items() if n.partition("@")[0] == family)
            assert rows[config]["validation"] == best, (key, family)
        # TIES is tuned over its density too, with the same number of configurations.
        assert {n for n in rows if n.startswith("ties@")} == {"ties@0.2", "ties@0.5"}
    assert len(r["pairs"]) == 10


def test_recentring_uses_validation_inputs_only(run: tuple[Path, dict[str, Any]]) -> None:
    import importlib.util
    import sys

    import torch

    path = Path(__file__).resolve().parents[2] / "examples/project07_graph_task_vectors"
    spec = importlib.util.spec_from_file_location("p07_graph", path / "graph_task_vectors.py")
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    sys.modules["p07_graph"] = mod  # dataclasses look their module up
    spec.loader.exec_module(mod)

    class Fixed:
        def __init__(self) -> None:
            self.stats = {"tpsa": (10.0, 1.0)}  # the training labels' mean and spread

    class Ev(mod.Evaluator):  # type: ignore[misc,name-defined]
        def __init__(self) -> None:
            self.std = Fixed()

        def predict(self, sd: Any, prop: str, g: Any) -> torch.Tensor:
            return g.x + sd["offset"]

    class G:
        def __init__(self, x: list[float], label_offset: float) -> None:
            self.x = torch.tensor(x)
            self.y = {"tpsa": torch.tensor(x) + label_offset}

    val, test = G([0.0, 1.0, 2.0], 9.0), G([3.0, 5.0], 10.0)
    ev = Ev()
    # An offset of the outputs is removed using the validation predictions alone (their mean
    # becomes the training labels' mean, 10): the test labels (mean 14) are never looked at,
    # so the test set's own offset of 1 stays an error.
    got = ev.regression({"offset": 7.0}, "tpsa", test, shift_on=val)
    pred = test.x - 1.0 + 10.0  # shifted so that the validation mean prediction is 10
    expected = 1 - float(
        ((pred - test.y["tpsa"]) ** 2).sum() / ((test.y["tpsa"] - 14.0) ** 2).sum()
    )
    assert got == pytest.approx(expected)
    assert ev.regression({"offset": 7.0}, "tpsa", val, shift_on=val) == pytest.approx(1.0)
    assert run[1]["runs"][0]["learning_rates"] == run[1]["learning_rates"]


def test_analogies(run: tuple[Path, dict[str, Any]]) -> None:
    data = run[1]
    r = data["runs"][0]
    assert set(r["analogies"]) == {"mask->tpsa", "logp->tpsa", "mask->logp", "tpsa->logp"}
    for a in r["analogies"].values():
        assert set(a["scores"]) == {"pretrained", "c_only", "analogy", "reference"}
        assert a["scales"]["analogy"] in data["config"]["grid"]
        assert a["task"] in ("tpsa@chembl", "logp@chembl")
        assert all(math.isfinite(v) for v in a["scores"].values())


def test_learning_rates_come_from_the_grid_on_validation(run: tuple[Path, dict[str, Any]]) -> None:
    data = run[1]
    grid = data["config"]["lr_grid"]
    assert data["config"]["tuning_seed"] not in data["config"]["seeds"]
    for name, lr in data["learning_rates"].items():
        scores = data["learning_rate_validation"][name]
        assert set(scores) == {f"{g:g}" for g in grid}
        assert lr in grid and scores[f"{lr:g}"] == max(scores.values()), name


def test_committed_tables_come_from_committed_results() -> None:
    """The report includes results/tables.rst: it must be what the committed runs give."""
    import importlib.util
    import json
    import sys

    from weightspace import report

    folder = Path(__file__).resolve().parents[2] / "examples/project07_graph_task_vectors"
    spec = importlib.util.spec_from_file_location("p07_graph", folder / "graph_task_vectors.py")
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    sys.modules["p07_graph"] = mod  # dataclasses look their module up
    spec.loader.exec_module(mod)
    data = json.loads((folder / "results" / "results.json").read_text(encoding="utf-8"))
    text = mod.tables([mod.from_json(r) for r in data["runs"]])
    assert text == (folder / "results" / "tables.md").read_text(encoding="utf-8")
    rst = (folder / "results" / "tables.rst").read_text(encoding="utf-8")
    assert report.markdown_to_rst(text) == rst
    assert data["mode"] == "full"
