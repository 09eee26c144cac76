"""Runs the project-6 example (task arithmetic on audio) in quick mode and checks what it found."""

from __future__ import annotations

import importlib.util
import json
import math
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from weightspace import report

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "project06_audio_task_vectors"
ADDED = ["language", "instrument", "effects", "digits", "commands"]
METHODS = ["average", "task_arithmetic", "ties", "consensus", "tall_masks"]


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
        "### Negation, paired differences: language",
        "### Addition of five task vectors: test accuracy",
        "### Addition of five task vectors: normalised accuracy (merged / fine-tuned)",
        "### Ablation: the five vectors fine-tuned with the embedding layer frozen: test accuracy",
        "### Ablation: fine-tuned accuracy with the embedding layer frozen",
        "### Analogies: test accuracy on D",
        "### Pairs: task (row) under its vector plus another (column), scale 1",
        "### Where the five added vectors agree: per tensor",
        "### Cosine similarity of the task vectors (seed mean)",
        "### Per seed: negation",
        "### Per seed: addition, normalised mean accuracy",
        "### Per seed: analogies (test accuracy on D: C alone -> analogy)",
    ):
        assert heading in tables, heading
    assert "| negated random vector, λ = 1 | 1 |" in tables
    assert "| tall_masks (oracle) |" in tables
    # tables.rst is tables.md with includable sections.
    rst = (out / "tables.rst").read_text()
    assert ".. section: Analogies: test accuracy on D" in rst
    assert ".. end: Analogies: test accuracy on D" in rst
    for name in ("negation", "addition", "addition_scale", "analogy", "layers", "cosine"):
        assert (out / f"{name}.png").stat().st_size > 10_000, name


def test_per_clip_correctness_gives_the_reported_accuracies(
    run: tuple[Path, dict[str, Any]],
) -> None:
    r = run[1]["runs"][0]

    def check(clips: str, value: float) -> None:
        assert set(clips) <= {"0", "1"} and clips
        assert clips.count("1") / len(clips) == pytest.approx(value, abs=1e-6)

    for f in r["forget"].values():
        for model, scores in f["scores"].items():
            for task, value in scores.items():
                check(f["clips"][model][task], value)
    for key in ("addition", "ablation"):
        add = r[key]
        for family, config in add["chosen"].items():
            for task, value in add["result"]["rows"][config]["scores"].items():
                check(add["clips"][family][task], value)
    for a in r["analogy"].values():
        for model, value in a["scores"].items():
            check(a["clips"][model], value)


def _module() -> Any:
    path = EXAMPLE / "audio_task_vectors.py"
    spec = importlib.util.spec_from_file_location("p06_audio_task_vectors", path)
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    sys.modules["p06_audio_task_vectors"] = mod  # dataclasses look their module up
    spec.loader.exec_module(mod)
    return mod


def test_bootstrap_interval_of_known_flags() -> None:
    mod = _module()
    # Every clip right in every seed: no uncertainty at all.
    assert mod.boot(["1111", "11"]) == (1.0, 1.0)
    # A paired difference of a model with itself is exactly 0.
    assert mod.boot(["1010", "0110"], ["1010", "0110"]) == (0.0, 0.0)
    lo, hi = mod.boot(["1" * 50 + "0" * 50] * 5)
    assert lo < 0.5 < hi and hi - lo < 0.25
    # Seeds that disagree widen the interval beyond what the clips alone give.
    lo2, hi2 = mod.boot(["1" * 80 + "0" * 20, "1" * 20 + "0" * 80] * 2 + ["1" * 50 + "0" * 50])
    assert hi2 - lo2 > hi - lo
    assert mod.acc(["1100", "1110"]).startswith("0.625 [")


def test_committed_tables_come_from_committed_results() -> None:
    """The report includes results/tables.rst: it must be what the committed runs give."""
    mod = _module()
    folder = EXAMPLE / "results"
    data = json.loads((folder / "results.json").read_text(encoding="utf-8"))
    text = mod.tables(data["runs"])
    assert text == (folder / "tables.md").read_text(encoding="utf-8")
    assert report.markdown_to_rst(text) == (folder / "tables.rst").read_text(encoding="utf-8")
    assert data["mode"] == "full"


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
        scores = f["scores"]
        assert set(scores) == {
            "pretrained",
            "finetuned",
            "negated",
            "random_unit",
            "random_chosen",
        }
        assert scores["negated"][target] == f["target"]["edited"]
        # The random control has the task vector's norm and is applied at scale 1 always.
        assert f["random_norm"] == pytest.approx(f["norm"], rel=1e-4)
        if f["scale"] == 0.0:  # nothing better qualified: the pretrained model itself
            assert scores["negated"] == scores["pretrained"] == scores["random_chosen"]


def test_addition_gives_every_method_the_same_budget(run: tuple[Path, dict[str, Any]]) -> None:
    r = run[1]["runs"][0]
    for key in ("addition", "ablation"):
        add = r[key]
        assert add["result"]["tasks"] == ADDED
        rows = add["result"]["rows"]
        assert all(math.isclose(v, 1.0) for v in rows["finetuned"]["normalized"].values())
        assert set(add["chosen"]) == set(METHODS)
        # Quick mode keeps every second configuration: 5 scales for task arithmetic, TIES
        # with 2 densities x 3 scales, consensus and TALL masks 2 thresholds x 3 scales.
        budget = {m: sum(1 for n in rows if n.partition("@")[0] == m) for m in METHODS}
        assert budget == {
            "average": 1,
            "task_arithmetic": 1,
            "ties": 2,
            "consensus": 2,
            "tall_masks": 2,
        }
        assert len(rows["task_arithmetic"]["curve"]) == 5
        for family, config in add["chosen"].items():
            best = max(rows[n]["validation"] for n in rows if n.partition("@")[0] == family)
            assert rows[config]["validation"] == best, (key, family)
    frozen = r["per_task_frozen"]
    assert set(frozen) == set(ADDED) and all(0.0 <= v <= 1.0 for v in frozen.values())


def test_analogies_and_their_mirrors(run: tuple[Path, dict[str, Any]]) -> None:
    r = run[1]["runs"][0]
    assert len(r["analogy"]) == 8
    for name, a in r["analogy"].items():
        a_, b, c, d = a["abcd"]
        assert name == f"{c}->{d}"
        assert set(a["scores"]) == {"pretrained", "c_only", "analogy", "reference"}
        assert all(0.0 <= v <= 1.0 for v in a["scores"].values())
        assert -1.0 <= a["shift_cosine"] <= 1.0
        # The scale is the first best on the validation curve (scale 0 is in the grid); at
        # scale 0 the analogy is the pretrained model itself.
        curve = a["curve"]
        assert [s for s, _ in curve] == run[1]["config"]["grid"]
        best = max(v for _, v in curve)
        chosen = a["scales"]["analogy"]
        assert chosen == next(s for s, v in curve if v == best), name
        if chosen == 0.0:
            assert a["scores"]["analogy"] == a["scores"]["pretrained"]
    # Every analogy comes with its mirror: the two vocabularies' roles swapped.
    quads = {tuple(a["abcd"]) for a in r["analogy"].values()}
    for a_, b, c, d in quads:
        assert (c, d, a_, b) in quads
    names = r["cosine"]["names"]
    mat = r["cosine"]["matrix"]
    assert len(names) == 11
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
