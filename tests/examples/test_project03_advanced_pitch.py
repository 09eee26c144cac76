"""Runs the project-3 example (Basic Pitch on rendered music) in quick mode and checks it."""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

for module in ("music21", "pretty_midi", "mir_eval", "onnx", "basic_pitch", "peft", "matplotlib"):
    pytest.importorskip(module)
if shutil.which("fluidsynth") is None:
    pytest.skip("needs the fluidsynth program", allow_module_level=True)

KINDS = ("ensemble", "piano", "melodies")
METRICS = ("F", "F_no", "Acc")


@pytest.fixture(scope="module")
def run(run_quick: Callable[..., tuple[Path, dict[str, Any]]]) -> tuple[Path, dict[str, Any]]:
    return run_quick("project03_advanced_pitch/advanced_pitch.py", timeout=600)


def test_writes_tables_and_figures(run: tuple[Path, dict[str, Any]]) -> None:
    out, data = run
    assert data["mode"] == "quick" and len(data["runs"]) == 1
    text = (out / "results.md").read_text()
    for heading in (
        "### Data sets",
        "### Released model",
        "### Paper, for comparison in kind",
        "### Trained from scratch here",
        "### Fine-tuned on melodies: task vectors",
    ):
        assert heading in text, heading
    assert "| Basic Pitch (NMP) | 70.9 | 81.0 | 68.2 | 64.3 |" in text
    rst = (out / "tables.rst").read_text()
    for name in ("data", "released", "paper", "scratch", "finetune"):
        assert f".. p3-table: {name}" in rst
    for name in ("pianoroll_ensemble", "pianoroll_piano", "pianoroll_melodies", "losses"):
        assert (out / f"{name}.png").stat().st_size > 10_000, name
    assert (out / "finetune_scale.png").stat().st_size > 10_000


def test_data_sets_are_split_by_piece(run: tuple[Path, dict[str, Any]]) -> None:
    d = run[1]["data"]
    for kind in KINDS:
        train, test = d[f"{kind}/train"], d[f"{kind}/test"]
        assert train["pieces"] == test["pieces"] == 1
        assert set(train["names"]).isdisjoint(test["names"])
        assert train["notes"] > 0 and test["seconds"] > 3.0
    assert d["piano/test"]["programs"] == [0]
    assert set(d["melodies/test"]["programs"]) <= {52, 53, 54, 78, 79}
    assert d["melodies/test"]["polyphony"] <= 1.0 + 1e-6  # one line at a time
    assert d["ensemble/test"]["polyphony"] > 2.0  # four parts


def test_released_model_transcribes_the_rendered_chorale(run: tuple[Path, dict[str, Any]]) -> None:
    released = run[1]["released"]
    for kind in KINDS:
        for m in METRICS:
            assert 0.0 <= released[kind][m] <= 1.0
            assert released[kind]["per_piece"][m] == [released[kind][m]]
    assert released["ensemble"]["F_no"] > 0.5
    assert released["ensemble"]["F"] <= released["ensemble"]["F_no"]


def test_trained_and_fine_tuned_models_are_scored(run: tuple[Path, dict[str, Any]]) -> None:
    r = run[1]["runs"][0]
    assert set(r["scores"]) == {"scratch", "full x-1", "full x1", "lora x1"}
    for variant in r["scores"].values():
        assert set(variant) == set(KINDS)
        for kind_scores in variant.values():
            assert all(0.0 <= kind_scores[m] <= 1.0 for m in METRICS)
    assert r["steps"] == {"scratch": 3, "full": 2, "lora": 2}
    assert all(len(v) == 1 for v in r["losses"].values())
    # LoRA rank 2 on the (39, 3), (7, 7) and (5, 5) convolutions: r * (fan_in + fan_out).
    assert r["lora_parameters"] == 2 * ((8 * 39 * 3 + 8) + (1 * 7 * 7 + 32) + (8 * 5 * 5 + 32))
    assert r["vector_norms"]["full"] > 0.0 and r["vector_norms"]["lora"] > 0.0


def test_committed_tables_come_from_the_committed_results(tmp_path: Path) -> None:
    import subprocess
    import sys

    folder = Path(__file__).resolve().parents[2] / "examples" / "project03_advanced_pitch"
    committed = folder / "results" / "results.json"
    if not committed.exists():
        pytest.fail("the committed full-mode results are missing")
    shutil.copy(committed, tmp_path / "results.json")
    subprocess.run(
        [
            sys.executable,
            str(folder / "advanced_pitch.py"),
            "--tables",
            str(tmp_path / "results.json"),
        ],
        check=True,
        capture_output=True,
        timeout=300,
    )
    for name in ("results.md", "tables.rst"):
        assert (tmp_path / name).read_text() == (committed.parent / name).read_text(), name
