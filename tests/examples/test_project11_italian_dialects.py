"""Runs the project-11 example (Italian dialects, LoRA adapters as task vectors) in quick mode."""

from __future__ import annotations

import importlib.util
import json
import math
import sys
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

pytest.importorskip("transformers")
pytest.importorskip("peft")
pytest.importorskip("tokenizers")

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "project11_italian_dialects"
DATA = Path(__file__).resolve().parents[3] / "shared" / "data" / "itdi2022"
if not (DATA / "dev.tsv").is_file():
    pytest.skip(
        f"needs the ITDI 2022 folder at {DATA} (research-only data, kept outside the repository)",
        allow_module_level=True,
    )
if not Path("/usr/share/games/fortunes/it/italia").is_file():
    pytest.skip("needs Debian fortunes-it", allow_module_level=True)
if not Path("/usr/share/games/fortunes/wisdom").is_file():
    pytest.skip("needs Debian fortunes", allow_module_level=True)

SETS = ("VEC", "FUR-ITDI", "FUR-wiki", "IT", "EN")


def _module() -> ModuleType:
    path = EXAMPLE / "italian_dialects.py"
    spec = importlib.util.spec_from_file_location("_example_italian_dialects", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def run(run_quick: Callable[..., tuple[Path, dict[str, Any]]]) -> tuple[Path, dict[str, Any]]:
    return run_quick("project11_italian_dialects/italian_dialects.py", timeout=600)


def test_data_card_splits_are_fixed(run: tuple[Path, dict[str, Any]]) -> None:
    data = run[1]
    assert data["mode"] == "quick"
    card = {row[0]: row[1:] for row in data["card"]}
    assert card["VEC (ITDI dev+test, by sentence)"] == [1899, 238, 238]  # 2,375 sentences
    assert card["FUR (ITDI, out of domain)"] == [0, 0, 1999]
    assert sum(card["FUR Wikipedia articles (by article)"]) == 60  # quick: first 60 articles
    # no evaluation text is a training text
    module = _module()
    corpora = module.load_corpora(DATA, module.QUICK)
    for name, train in (("VEC", "VEC"), ("FUR-wiki", "FUR"), ("IT", "IT")):
        assert not set(corpora["evals"][name]) & set(corpora["train"][train]), name


def test_scores_are_bits_over_characters(run: tuple[Path, dict[str, Any]]) -> None:
    data = run[1]
    for name in SETS:
        stats = data["eval_text_stats"][name]
        assert len(stats) == data["config"]["eval_texts"][name]
        scores = data["vanilla"][name]
        bits = sum(scores["text_bits"])
        assert scores["bpc"] == pytest.approx(bits / sum(s["chars"] for s in stats), rel=1e-9)
        assert scores["bpb"] == pytest.approx(bits / sum(s["bytes"] for s in stats), rel=1e-9)
        lo, hi = data["intervals"]["vanilla"][name]
        assert lo <= scores["bpc"] <= hi


def test_runs_train_what_they_say(run: tuple[Path, dict[str, Any]]) -> None:
    data = run[1]
    runs = data["runs"]
    cfg = data["config"]
    # the tiny stand-in: 2 layers, width 32; LoRA r on q_proj and v_proj: 2 * 2 * r * (32 + 32)
    assert runs["VEC r16 qv"][0]["trainable"] == 2 * 2 * 16 * 64
    assert runs["VEC r4 qv"][0]["trainable"] == 2 * 2 * 4 * 64
    assert runs["VEC full"][0]["trainable"] == data["base_params"]
    for per_seed in runs.values():
        r = per_seed[0]
        assert len(r["losses"]) == cfg["steps"]
        assert r["tokens"] == cfg["steps"] * cfg["batch_size"] * cfg["block_size"]
    for _, _, cosine in data["cosines"]:
        assert -1.0 <= cosine <= 1.0
    # the seed-to-seed baseline of the cosines: every further seed of both main adapters
    assert [c[:2] for c in data["cosines"][3:]] == [
        [f"{c} seed 0", f"{c} seed {s}"] for c in ("VEC", "FUR") for s in cfg["seeds"][1:]
    ]
    assert set(data["merges"]) == {
        "task arithmetic VEC + FUR",
        "TIES VEC, FUR (density 0.5)",
        "negated FUR (base - FUR)",
        "FUR - IT + VEC",
    }
    scratch = data["scratch"]
    assert scratch["flops"] == 6 * scratch["params"] * scratch["tokens"]
    assert math.isfinite(scratch["eval"]["VEC"]["bpc"])


def test_learning_rate_is_chosen_on_validation(run: tuple[Path, dict[str, Any]]) -> None:
    data = run[1]
    cfg = data["config"]
    module = _module()
    for method in ("lora", "full"):
        tried = [t for t in data["tuning"] if t["method"] == method]
        # the same grid, relative to each method's default rate, for every method
        assert [t["lr"] for t in tried] == [
            pytest.approx(f * module.DEFAULT_LR[method]) for f in cfg["lr_grid"]
        ]
        best = min(tried, key=lambda t: t["val_bpc"])
        assert data["chosen_lr"][method] == best["lr"]
    runs = data["runs"]
    for name, _, method, _, _ in module.MAIN:
        # every main run at its method's chosen rate, every seed, seed 0 on every set
        assert [r["seed"] for r in runs[name]] == list(cfg["seeds"])
        assert {r["lr"] for r in runs[name]} == {data["chosen_lr"][method]}
        assert set(runs[name][0]["eval"]) == set(SETS)
        corpus = name.split()[0]
        for r in runs[name][1:]:
            assert set(r["eval"]) == set(module.CORE_SETS[corpus])
    # the validation sentences are Venetian validation texts, never test texts
    corpora = module.load_corpora(DATA, module.QUICK)
    assert len(data["val_text_stats"]) == cfg["val_texts"]
    assert not set(corpora["val_eval"]) & set(corpora["evals"]["VEC"])
    assert not set(corpora["val_eval"]) & set(corpora["train"]["VEC"])
    assert data["skipped"] == []


def test_tables_and_generations(run: tuple[Path, dict[str, Any]]) -> None:
    out, data = run
    md = (out / "tables.md").read_text(encoding="utf-8")
    module = _module()
    assert md == module.tables(data)
    for title in (
        "Data card",
        "Training budget of every run",
        "Learning rate chosen on Venetian validation sentences (seed 0)",
        "Core comparison over seeds (bits per character)",
        "Bits per character (bootstrap 95 % interval over texts)",
        "Adapters as task vectors: merges (bits per character)",
        "From scratch vs fine-tuned (Venetian, equal training compute)",
        "Generations scored by the automatic rubric",
    ):
        assert f"### {title}" in md
        assert f".. table-start: {title}" in (out / "tables.rst").read_text(encoding="utf-8")
    assert len(data["generations"]["vanilla"]) == len(module.PROMPTS)


def test_rubric_and_cleaning_rules() -> None:
    module = _module()
    marks = {"VEC": {"xe", "ghe"}, "FUR": {"al", "je"}}
    scores = module.rubric("El mar xe bel, ghe xe la laguna", marks, {"la", "mar", "bel"})
    assert scores["words"] == 8
    assert scores["VEC markers %"] == pytest.approx(100 * 3 / 8)
    assert scores["FUR markers %"] == 0
    assert scores["Italian %"] == pytest.approx(100 * 3 / 8)
    assert scores["distinct bigrams %"] == 100
    raw = (
        "{{Stub}}\n'''Çarvignan''' ([[Lenghe taliane|talian]] ''Cervignano'') al è un comun "
        "inte provincie di [[Udin]]<ref>source</ref>, bagnât dal flum [[Ausa]] e al è grant.\n"
        "==Storie==\n[[File:X.jpg|thumb|a [[b]] c]]\n* a list item that is long enough to keep "
        "but starts with a list marker so it goes\n"
    )
    assert module.clean_wikitext(raw) == [
        "Çarvignan (talian Cervignano) al è un comun inte provincie di Udin, bagnât dal flum "
        "Ausa e al è grant."
    ]


def test_committed_tables_come_from_committed_results() -> None:
    """The report's tables are rebuilt, byte for byte, from the committed full-mode JSON."""
    results = EXAMPLE / "results"
    data = json.loads((results / "results.json").read_text(encoding="utf-8"))
    assert data["mode"] == "full"
    module = _module()
    md = module.tables(data)
    assert md == (results / "tables.md").read_text(encoding="utf-8")
    assert module.markdown_to_rst(md) == (results / "tables.rst").read_text(encoding="utf-8")
    # the intervals in the JSON are those of its per-text values
    assert data["intervals"] == module.intervals(data, module.FULL)
