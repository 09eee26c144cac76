"""Runs the project-9 example (text to synthesizer parameters) in quick mode and checks it."""

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

pytest.importorskip("cma")
pytest.importorskip("pretty_midi")

FOLDER = Path(__file__).resolve().parents[2] / "examples" / "project09_awol_audio"
METHODS = ["mean", "retrieval", "mlp", "flow", "flow sample"]


def _module() -> ModuleType:
    name = "_example_awol_audio"
    spec = importlib.util.spec_from_file_location(name, FOLDER / "awol_audio.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def run(run_quick: Callable[..., tuple[Path, dict[str, Any]]]) -> tuple[Path, dict[str, Any]]:
    return run_quick("project09_awol_audio/awol_audio.py", timeout=600)


def test_writes_tables_figures_and_sounds(run: tuple[Path, dict[str, Any]]) -> None:
    out, data = run
    assert data["mode"] == "quick" and len(data["runs"]) == 1
    text = (out / "tables.md").read_text()
    for heading in (
        "### Held-out instruments of the training families (unseen descriptions), 6 sounds",
        "### Held-out families (out of distribution), 8 sounds",
        "### Tuning on the validation instruments, seed 0 (mean STFT distance)",
        "### Data, matcher and classifier",
        "### Free-text prompts through the flow (seed 0, largest regime)",
    ):
        assert heading in text, heading
    for method in METHODS:
        assert f"| 5 | {method} |" in text
    assert "| all | matcher fit (oracle) |" in text
    assert (out / "spectrograms.jpg").stat().st_size > 10_000
    assert (out / "regimes.png").stat().st_size > 10_000
    flacs = sorted(p.name for p in out.glob("*.flac"))
    # Harpsichord, cello (middle C in quick mode) and trumpet: recording, fit and three
    # methods each, and three prompts.
    assert flacs == sorted(data["sounds"]) and len(flacs) == 3 * 5 + 3
    import soundfile as sf

    info = sf.info(str(out / "cello_60_flow.flac"))
    assert info.samplerate == 16000 and info.frames == 4000 and info.subtype == "PCM_16"


def test_splits_keep_families_and_descriptions_apart(run: tuple[Path, dict[str, Any]]) -> None:
    split = run[1]["split"]
    # Quick mode: piano, bass, strings (the last two lose the silent contrabass at middle C)
    # and the held-out brass family, at middle C only.
    assert [len(split[k]) for k in ("pool", "val", "test_id", "test_ood")] == [14, 3, 6, 8]
    seen = set(split["pool"]) | set(split["val"])
    assert not seen & set(split["test_id"]) and not seen & set(split["test_ood"])
    assert "a middle note on the cello" in split["test_id"]
    assert "a middle note on the trumpet" in split["test_ood"]
    assert all("trumpet" not in d and "tuba" not in d for d in split["pool"])


def test_every_method_is_scored_on_every_regime(run: tuple[Path, dict[str, Any]]) -> None:
    data = run[1]
    r = data["runs"][0]
    assert set(r["results"]) == {"1", "5"}
    for n, methods in r["results"].items():
        assert list(methods) == METHODS
        for scores in methods.values():
            for split in ("test_id", "test_ood"):
                s = scores[split]
                assert math.isfinite(s["stft"]) and s["stft"] > 0
                assert 0 <= s["param_error"] <= 1 and s["pitch_error"] >= 0
                assert 0 <= s["family_acc"] <= 1
        # With one pair, retrieval and the mean both return that pair's parameters.
        if n == "1":
            assert methods["retrieval"] == methods["mean"]
    # The oracle is the matcher's own fit: no parameter error.
    assert data["oracle"]["test_id"]["param_error"] == 0.0


def test_tuning_picks_from_its_grid(run: tuple[Path, dict[str, Any]]) -> None:
    for t in run[1]["tuning"].values():
        assert 1 <= len(t["grid"]) <= 3
        for n, value in t["chosen"].items():
            scores = {s: t["validation"][repr(s)][n] for s in t["grid"]}
            assert scores[value] == min(scores.values())


def test_tables_rebuild_from_results(run: tuple[Path, dict[str, Any]]) -> None:
    out, data = run
    module = _module()
    assert module.tables(data) == (out / "tables.md").read_text()
    assert module.markdown_to_rst(module.tables(data)) == (out / "tables.rst").read_text()


def test_committed_tables_rebuild_from_committed_results() -> None:
    results = FOLDER / "results" / "results.json"
    if not results.exists():
        pytest.fail("the committed full-mode results are missing")
    data = json.loads(results.read_text())
    assert data["mode"] == "full" and len(data["runs"]) >= 3
    module = _module()
    text = module.tables(data)
    assert text == (FOLDER / "results" / "tables.md").read_text()
    assert module.markdown_to_rst(text) == (FOLDER / "results" / "tables.rst").read_text()
