"""Runs the project-4 example (sound matching) in quick mode and checks what it found."""

from __future__ import annotations

import importlib.util
import itertools
import json
import math
import sys
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

pytest.importorskip("gymnasium")
pytest.importorskip("stable_baselines3")
pytest.importorskip("cma")

FOLDER = Path(__file__).resolve().parents[2] / "examples" / "project04_synthesize_rl"
METHODS = ["random", "cma", "gradient", "regressor", "regressor+cma", "bandit", "ppo", "sac"]


def _module() -> ModuleType:
    name = "_example_synthesize_rl"
    spec = importlib.util.spec_from_file_location(name, FOLDER / "synthesize_rl.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def run(run_quick: Callable[..., tuple[Path, dict[str, Any]]]) -> tuple[Path, dict[str, Any]]:
    return run_quick("project04_synthesize_rl/synthesize_rl.py", timeout=600)


def test_writes_tables_figures_and_sounds(run: tuple[Path, dict[str, Any]]) -> None:
    out, data = run
    assert data["mode"] == "quick" and len(data["runs"]) == 1
    short, long = data["config"]["short_budget"], data["config"]["long_budget"]
    text = (out / "tables.md").read_text()
    for heading in (
        f"### Test targets: held-out synthesizer presets, budget {short} renders",
        f"### Test targets: real sounds, budget {long} renders",
        f"### Renders to match random search's best of {long} renders (per target)",
        "### Tuning on the validation targets of seed 0 (mean STFT distance)",
        "### How often the gradient w.r.t. pitch points towards the target (square wave)",
    ):
        assert heading in text, heading
    for method in METHODS:
        assert f"| {method} |" in text
    assert (out / "curves.png").stat().st_size > 10_000
    assert (out / "spectrograms.png").stat().st_size > 10_000
    wavs = sorted(p.name for p in out.glob("*.wav"))
    assert wavs == sorted(data["listening"]) and len(wavs) == 8  # 2 targets x 4 sounds
    import soundfile as sf

    info = sf.info(str(out / wavs[0]))
    assert info.samplerate == 16000 and info.frames == 4000 and info.subtype == "PCM_16"


def test_every_method_gets_the_same_budget(run: tuple[Path, dict[str, Any]]) -> None:
    data = run[1]
    cfg, r = data["config"], data["runs"][0]
    n_targets = cfg["n_test_synth"] + len(cfg["real_test"])
    assert r["kinds"] == ["synth"] * cfg["n_test_synth"] + ["real"] * len(cfg["real_test"])
    for method in METHODS:
        for budget in (cfg["short_budget"], cfg["long_budget"]):
            rows = r["results"][method][str(budget)]
            assert len(rows) == n_targets
            for row in rows:
                assert 1 <= row["renders"] <= budget
                assert math.isfinite(row["distance"]) and row["distance"] > 0
                assert (row["param_error"] is None) == (row["kind"] == "real")
            used = {row["renders"] for row in rows}
            if method == "regressor":
                assert used == {1}
            elif method == "bandit":
                assert used == {2}  # the starting patch and its one action
            else:
                assert used == {budget}
        for kind in ("synth", "real"):
            curve = r["curves"][method][kind]
            assert len(curve) == cfg["long_budget"]
            assert all(b <= a + 1e-9 for a, b in itertools.pairwise(curve))


def test_longer_budgets_never_do_worse_and_prefixes_agree(
    run: tuple[Path, dict[str, Any]],
) -> None:
    data = run[1]
    cfg, r = data["config"], data["runs"][0]
    short, long = str(cfg["short_budget"]), str(cfg["long_budget"])
    for method in ("random", "cma", "gradient", "regressor+cma"):
        if data["tuning"][method]["chosen"][short] != data["tuning"][method]["chosen"][long]:
            continue
        for a, b in zip(r["results"][method][short], r["results"][method][long], strict=True):
            assert b["distance"] <= a["distance"] + 1e-9
    # Regressor + CMA starts from the regressor's guess, so it is never worse.
    for a, b in zip(
        r["results"]["regressor"][long], r["results"]["regressor+cma"][long], strict=True
    ):
        assert b["distance"] <= a["distance"] + 1e-6
    # Random search reaches its own best, by definition, at some render of its budget.
    assert all(h is not None and h <= cfg["long_budget"] for h in r["renders_to_match"]["random"])


def test_tuning_picks_from_its_grid(run: tuple[Path, dict[str, Any]]) -> None:
    data = run[1]
    for method in METHODS:
        t = data["tuning"][method]
        assert 1 <= len(t["grid"]) <= 3
        for budget, value in t["chosen"].items():
            assert value in t["grid"]
            scores = {s: t["validation"][repr(s)][budget] for s in t["grid"]}
            assert scores[value] == min(scores.values())


def test_gradient_direction_side_study(run: tuple[Path, dict[str, Any]]) -> None:
    direction = run[1]["runs"][0]["direction"]
    assert set(direction) == {"multi-resolution STFT", "log-mel L1", "linear STFT L1"}
    for values in direction.values():
        assert set(values) == {"10", "300", "600"}
        assert all(0.0 <= v <= 1.0 for v in values.values())
    # A 10-cent detune is inside every loss's basin.
    assert direction["multi-resolution STFT"]["10"] >= 0.75


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
