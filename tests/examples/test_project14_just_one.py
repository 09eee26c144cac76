"""Runs the project-14 example (Just One) in quick mode; its committed tables match its results."""

from __future__ import annotations

import importlib.util
import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

FOLDER = Path(__file__).resolve().parents[2] / "examples" / "project14_just_one"


@pytest.fixture(scope="module")
def run(run_quick: Callable[..., tuple[Path, dict[str, Any]]]) -> tuple[Path, dict[str, Any]]:
    pytest.importorskip("wordfreq")
    if not Path("/usr/share/wordnet/index.noun").is_file():
        pytest.skip("needs Debian's wordnet-base (scripts/setup.sh installs it)")
    return run_quick("project14_just_one/just_one.py", timeout=600)


def _module() -> Any:
    spec = importlib.util.spec_from_file_location("just_one_example", FOLDER / "just_one.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    try:
        spec.loader.exec_module(module)
    finally:
        del sys.modules[spec.name]
    return module


def test_quick_mode_plays_the_minilm_tables(run: tuple[Path, dict[str, Any]]) -> None:
    out, data = run
    assert data["mode"] == "quick"
    assert list(data["results"]) == ["embedding", "embedding, naive", "embedding, greedy"]
    for name, r in data["results"].items():
        assert len(r["scores"]) == data["config"]["games"] == 3, name
        assert all(0 <= s <= 13 for s in r["scores"])
        assert r["ci95"][0] <= r["mean"] <= r["ci95"][1]
        assert sum(r["bands"].values()) == 3
        assert abs(sum(r["outcomes"].values()) - 1) < 1e-9
        assert len(r["tuning"]["trials"]) >= 1
    greedy = data["results"]["embedding, greedy"]
    assert greedy["clues_identical"] == 1.0 and greedy["scores"] == [0.0, 0.0, 0.0]
    assert data["results"]["embedding"]["clues_identical"] < 1.0
    text = (out / "tables.rst").read_text(encoding="utf-8")
    for section in ("scores", "outcomes", "bands", "paired", "examples", "humans"):
        assert f".. section: {section}\n" in text and f".. end: {section}\n" in text
    assert _module().tables(data) == text
    assert not (FOLDER / "results" / "quick").exists() or out != FOLDER / "results"


def test_committed_tables_come_from_the_committed_results() -> None:
    results = FOLDER / "results"
    data = json.loads((results / "results.json").read_text(encoding="utf-8"))
    assert data["mode"] == "full" and data["config"]["games"] >= 100
    for r in data["results"].values():
        assert len(r["scores"]) == data["config"]["games"]
    assert (results / "tables.rst").read_text(encoding="utf-8") == _module().tables(data)
