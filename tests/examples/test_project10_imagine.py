"""Runs the project-10 example (Imagine) in quick mode and checks what it wrote."""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from weightspace.games import CONCEPTS, read_games, serve_imagine

METHODS = ["pgpe", "cmaes", "ga", "random"]


@pytest.fixture(scope="module")
def run(run_quick: Callable[..., tuple[Path, dict[str, Any]]]) -> tuple[Path, dict[str, Any]]:
    return run_quick("project10_imagine/imagine.py", timeout=600)


def test_writes_tables_and_figures(run: tuple[Path, dict[str, Any]]) -> None:
    out, data = run
    assert data["mode"] == "quick"
    text = (out / "results.md").read_text()
    names = ("scorers", "search", "reach", "progress", "ratios", "tuning", "games", "played")
    for name in names:
        assert f"### {name}" in text, name
    for name in names:
        assert (out / f"table_{name}.rst").read_text().startswith(".. list-table::"), name
    for name in ("deck", "curves", "gallery"):
        assert (out / f"{name}.png").stat().st_size > 10_000, name
    assert len(data["deck"]) == 53


def test_scorers_are_measured_on_held_out_stamps_with_chance(
    run: tuple[Path, dict[str, Any]],
) -> None:
    sc = run[1]["scorers"]
    pool = run[1]["config"]["pool"]
    assert sc["chance"] == {"top1": 1 / pool, "top5": 5 / pool, "fashion": 0.1}
    assert len(sc["splits"]) == len(run[1]["config"]["seeds"])
    for split in sc["splits"]:
        assert split["train"] + split["test"] == sc["stamps"]
        assert split["test"] >= pool
        for name in ("lit", "conse"):
            for value in split[name].values():
                assert 0.0 <= value <= 1.0
            assert split[name]["top5"] >= split[name]["top1"]
    for name in ("lit", "conse"):
        top1 = sc["summary"][name]["top1"]
        assert len(top1["values"]) == len(sc["splits"])
        assert math.isclose(top1["mean"], sum(top1["values"]) / len(top1["values"]))


def test_every_method_gets_the_same_budget(run: tuple[Path, dict[str, Any]]) -> None:
    cfg = run[1]["config"]
    search = run[1]["search"]
    tuned = {m: run[1]["tuning"]["methods"][m]["setting"] for m in METHODS}
    assert search["settings"] == tuned
    for concept, by_method in search["runs"].items():
        assert list(by_method) == METHODS
        for method, runs in by_method.items():
            assert [r["seed"] for r in runs] == cfg["search_seeds"]
            for r in runs:
                assert r["evaluations"] == cfg["budget"] and r["method"] == method
                for name, value in tuned[method].items():  # the tuned setting, recorded
                    assert r["options"][name] == value
                scores = [s for _, s in r["curve"]]
                assert scores == sorted(scores)  # best so far never falls
                assert r["curve"][-1] == [cfg["budget"], r["best_score"]]
                assert len(r["best"]["cards"]) == 4
        summary = search["summary"][concept]
        finals = [r["best_score"] for r in by_method["random"]]
        assert math.isclose(summary["threshold"], sum(finals) / len(finals))
        assert summary["random"]["reached"] >= 1  # some seed reaches the mean of the seeds
    assert set(search["ratios"]) == {"ga/pgpe", "random/pgpe", "ga/cmaes", "random/cmaes"}
    for name, value in search["ratios"].items():
        other, es = name.split("/")
        pooled = search["pooled_evaluations"]
        assert math.isclose(
            value, (sum(pooled[other]) / len(pooled[other])) / (sum(pooled[es]) / len(pooled[es]))
        )
        lo, hi = search["ratio_ci95"][name]
        assert lo <= value <= hi


def test_games_are_guessed_by_other_scorers(run: tuple[Path, dict[str, Any]]) -> None:
    out, data = run
    cfg = data["config"]
    assert [g["composer"] for g in data["games"]] == ["lit0", "conse"]
    for g in data["games"]:
        assert [p["answer"] for p in g["games"]] == list(CONCEPTS[: len(cfg["concepts"])])
        for p in g["games"]:
            assert len(p["candidates"]) == 8 and p["answer"] in p["candidates"]
            assert set(p["guesses"]) == {"lit0", "lit1", "conse"}
            assert all(v in p["candidates"] for v in p["guesses"].values())
        roles = {name: a["role"] for name, a in g["accuracy"].items()}
        assert roles[g["composer"]].startswith("composer")
        assert sum(r == "guesser" for r in roles.values()) == 2
        for a in g["accuracy"].values():
            assert a["games"] == len(cfg["concepts"])
            lo, hi = a["wilson95"]
            assert lo <= a["accuracy"] <= hi
        assert g["chance"] == 1 / 8
    # The LiT games are written for people to play on the local page.
    kit = read_games(out / "games" / "games.json")
    assert [k.name for k in kit] == [p["name"] for p in data["games"][0]["games"]]
    assert all(k.guesses == {} for k in kit)
    server = serve_imagine(out / "games" / "games.json", out / "guesses.json", port=0)
    server.server_close()
    assert data["humans"] is None


def test_committed_tables_come_from_the_committed_results() -> None:
    import importlib.util
    import json
    import sys

    folder = Path(__file__).resolve().parents[2] / "examples" / "project10_imagine"
    spec = importlib.util.spec_from_file_location("imagine_example", folder / "imagine.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    try:
        spec.loader.exec_module(module)
    finally:
        del sys.modules[spec.name]
    results = folder / "results"
    data = json.loads((results / "results.json").read_text(encoding="utf-8"))
    assert data["mode"] == "full" and data["config"]["seeds"] == [0, 1, 2]
    assert len(data["config"]["search_seeds"]) >= 3
    # The comparison ran the settings tune.py chose, and the tuning is the committed one.
    tuning = json.loads((results / "tuning.json").read_text(encoding="utf-8"))
    assert data["tuning"] == tuning
    assert data["search"]["settings"] == {m: tuning["methods"][m]["setting"] for m in METHODS}
    assert not set(tuning["validation"]) & set(data["config"]["compare"])
    assert not set(tuning["validation"]) & set(CONCEPTS)
    tables = module.tables(data)
    for name, rows in tables.items():
        assert (results / f"table_{name}.rst").read_text(encoding="utf-8") == module.rst(rows)
    assert (results / "results.md").read_text(encoding="utf-8") == module.markdown(tables)


def _tune_module() -> Any:
    import importlib.util
    import sys

    folder = Path(__file__).resolve().parents[2] / "examples" / "project10_imagine"
    spec = importlib.util.spec_from_file_location("imagine_tune", folder / "tune.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    try:
        spec.loader.exec_module(module)
    finally:
        del sys.modules[spec.name]
    return module


def test_tuning_picks_the_fewest_evaluations_to_the_level_then_the_best_final() -> None:
    tune = _tune_module()
    (a, b), seed = tune.VALIDATION[:2], tune.SEEDS[0]
    assert len(tune.SEEDS) == 1 and len(tune.VALIDATION) == 2
    grid = {"random": [{"spread": 1.5}, {"spread": 3.0}], "ga": [{}, {}, {}]}

    def row(curve: list[list[float]]) -> dict[str, Any]:
        return {"curve": curve, "best_score": curve[-1][1]}

    rows = {
        # Random search's first setting sets the levels: 0.5 for a, 0.4 for b.
        tune.key("random", 0, a, seed): row([[16, 0.3], [32, 0.5]]),
        tune.key("random", 0, b, seed): row([[16, 0.4], [32, 0.4]]),
        tune.key("random", 1, a, seed): row([[16, 0.2], [32, 0.3]]),  # never reaches 0.5
        tune.key("random", 1, b, seed): row([[16, 0.45], [32, 0.45]]),
        tune.key("ga", 0, a, seed): row([[16, 0.5], [32, 0.6]]),
        tune.key("ga", 0, b, seed): row([[16, 0.3], [32, 0.4]]),
        tune.key("ga", 1, a, seed): row([[16, 0.5], [32, 0.7]]),  # same reach, better final
        tune.key("ga", 1, b, seed): row([[16, 0.3], [32, 0.4]]),
        tune.key("ga", 2, a, seed): row([[16, 0.1], [32, 0.2]]),
        tune.key("ga", 2, b, seed): row([[16, 0.1], [32, 0.2]]),
    }
    out = tune.choose(rows, grid, budget=32)
    assert out["levels"] == {a: 0.5, b: 0.4}
    r = out["methods"]["random"]
    assert [t["evaluations_to_level"] for t in r["tried"]] == [[32, 16], [32, 16]]
    assert r["chosen"] == 0  # a tie on evaluations; 0.45 mean final beats 0.375
    g = out["methods"]["ga"]
    assert [t["mean_evaluations"] for t in g["tried"]] == [24.0, 24.0, 32.0]
    assert g["chosen"] == 1 and g["setting"] == {}
