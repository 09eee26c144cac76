"""Runs the project-12 example (Dixit) in quick mode and checks what it wrote."""

from __future__ import annotations

import importlib.util
import sys
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from weightspace.games import BOT_KINDS, score_round

FOLDER = Path(__file__).resolve().parents[2] / "examples" / "project12_dixit"


@pytest.fixture(scope="module")
def run(run_quick: Callable[..., tuple[Path, dict[str, Any]]]) -> tuple[Path, dict[str, Any]]:
    return run_quick("project12_dixit/dixit.py", timeout=900)


def _module() -> ModuleType:
    spec = importlib.util.spec_from_file_location("dixit_example", FOLDER / "dixit.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    try:
        spec.loader.exec_module(module)
    finally:
        del sys.modules[spec.name]
    return module


def test_every_recorded_round_follows_the_rules(run: tuple[Path, dict[str, Any]]) -> None:
    _, data = run
    cfg = data["config"]
    assert data["mode"] == "quick" and [d["seed"] for d in data["decks"]] == cfg["deck_seeds"]
    assert data["decks_done"] == cfg["deck_seeds"]
    deck = data["decks"][0]
    assert len(deck["deck"]["hints"]) == cfg["cards"] == 36
    assert [p["kinds"] for p in deck["pairings"]] == [list(k) for k in cfg["pairings"]]
    for pairing in deck["pairings"]:
        assert len(pairing["games"]) == cfg["games"]
        for g in pairing["games"]:
            assert sorted(set(g["seats"])) == sorted(pairing["kinds"])
            # 36 cards, four hands of six: three rounds, then the deck cannot refill.
            assert (len(g["rounds"]), g["end"]) == (3, "deck")
            totals = [0] * 4
            for i, r in enumerate(g["rounds"]):
                assert r["storyteller"] == i % 4
                played = {int(k): v for k, v in r["played"].items()}
                votes = {int(k): v for k, v in r["votes"].items()}
                assert all(played[p] != v for p, v in votes.items())  # never one's own card
                points = score_round(r["storyteller"], played, votes)
                assert {str(k): v for k, v in points.items()} == r["points"]
                for p, v in points.items():
                    totals[p] += v
            assert totals == g["scores"]
            for seat, told in g["told"].items():
                turns = [r for r in g["rounds"] if r["storyteller"] == int(seat)]
                assert [t["hint"] for t in told] == [r["hint"] for r in turns]
                for t in told:
                    if g["seats"][int(seat)] == "strategist":
                        assert 0.0 <= t["expected"] <= 3.0 and t["candidates"] >= 6
                    if g["seats"][int(seat)] == "literal":
                        assert t["hint"] == deck["deck"]["hints"][t["card"]]


def test_tables_come_from_the_results(run: tuple[Path, dict[str, Any]]) -> None:
    out, data = run
    text = (out / "tables.rst").read_text(encoding="utf-8")
    for name in ("eyes", "pairings", "roles", "decks", "llm", "hints", "rounds", "run", "humans"):
        assert f".. section: {name}\n" in text and f".. end: {name}\n" in text, name
    assert _module().tables(data) == text
    eyes = data["decks"][0]["eyes"]
    assert eyes["chance"] == {"top1_all": 1 / 36, "top1_of_4": 0.25}
    assert all(0.0 <= eyes[s][m] <= 1.0 for s in ("lit", "conse") for m in eyes["chance"])
    summary = _module().summarize(data)
    assert set(summary["kinds"]) == set(BOT_KINDS)
    for p in summary["pairings"]:
        wins = sum(p[k]["win"]["mean"] for k in p["kinds"])
        assert abs(wins - 1.0) < 1e-9  # the win shares of a two-kind table add up to one
    llm = data["decks"][0]["llm"]
    assert llm["cards_asked"] == len(llm["replies"]) >= 6
    assert data["humans"] is None
    assert "No game played by a person has been recorded yet." in text


def test_committed_tables_come_from_the_committed_results() -> None:
    import json

    results = FOLDER / "results"
    data = json.loads((results / "results.json").read_text(encoding="utf-8"))
    assert data["mode"] == "full" and data["config"]["games"] >= 11
    done = [d["seed"] for d in data["decks"]]
    assert done == data["decks_done"] == data["config"]["deck_seeds"][: len(done)]
    assert all(len(d["deck"]["hints"]) >= 84 for d in data["decks"])
    tables = _module().tables(data)
    assert tables == (results / "tables.rst").read_text(encoding="utf-8")
