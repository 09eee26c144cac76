"""Runs the project-5 example (task vectors on the common part of a CNN and a ViT) in quick
mode and checks what it found."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

REGIMES = ("independent", "aligned", "joint", "distilled", "distilled-all")
MULTI = ("mnist", "fashion", "parity", "rot_mnist", "inv_mnist", "rot_fashion", "inv_fashion")


@pytest.fixture(scope="module")
def run(run_quick: Callable[..., tuple[Path, dict[str, Any]]]) -> tuple[Path, dict[str, Any]]:
    return run_quick(
        "project05_heterogeneous_task_vectors/run_heterogeneous_task_vectors.py", timeout=900
    )


def test_writes_tables_and_figures(run: tuple[Path, dict[str, Any]]) -> None:
    out, data = run
    assert data["mode"] == "quick"
    assert len(data["runs"]) == 1
    tables = (out / "tables.md").read_text()
    for heading in (
        "### Forgetting by negation",
        "### Learning by addition",
        "### Multi-task addition",
        "### Task analogies",
        "### Modular",
        "| tall_masks |",
    ):
        assert heading in tables, heading
    for name in ("applications", "negation_curves", "transfer_vs_compatibility", "modular"):
        assert (out / f"{name}.png").stat().st_size > 20_000, name


def test_the_common_part_is_the_block_found_by_structure(run: tuple[Path, dict[str, Any]]) -> None:
    common = run[1]["common_part"]
    assert common["selection"] == {
        f"block.{i}.{p}": f"mlp_head.{i}.{p}" for i in (0, 2) for p in ("weight", "bias")
    }
    assert common["parameters"] == 64 * 128 + 128 + 128 * 64 + 64
    # without `targets`, the structural match also pairs the heads (same structure, both)
    assert common["structure_all"]["heads.pretrain.weight"] == "heads.pretrain.weight"
    assert set(common["selection"].items()) < set(common["structure_all"].items())


def test_regimes_differ_where_they_should(run: tuple[Path, dict[str, Any]]) -> None:
    seed = run[1]["runs"][0]
    compat = seed["compatibility"]
    assert set(compat) == set(REGIMES)
    # the alignment is an exact reparametrisation of the ViT
    assert seed["alignment_max_logit_change"] < 1e-3
    # shared pretraining: both blocks start from the same weights
    for r in ("joint", "distilled", "distilled-all"):
        assert compat[r]["weight_gap"] == pytest.approx(0.0, abs=1e-6), r
    assert compat["independent"]["weight_gap"] > 0.3
    assert compat["aligned"]["weight_gap"] < compat["independent"]["weight_gap"]
    # distillation brings the trunks' features closer (on all variants when it sees them)
    assert compat["distilled"]["feature_gap"] < compat["independent"]["feature_gap"]
    assert compat["distilled-all"]["feature_gap_all"] < compat["independent"]["feature_gap_all"]
    assert compat["distilled-all"]["feature_gap_all"] < compat["joint"]["feature_gap_all"]
    for c in compat.values():
        assert 0.0 <= c["feature_cka"] <= 1.0 + 1e-6


def test_within_architecture_vectors_work(run: tuple[Path, dict[str, Any]]) -> None:
    seed = run[1]["runs"][0]
    for arch in ("cnn", "vit"):
        pre, ft = seed["pretrained"]["joint"][arch], seed["finetuned"]["joint"][arch]
        gain = sum(ft[t] - pre[t] for t in MULTI)
        assert gain > 0.3, arch  # fine-tuning the block alone learns the shifted tasks
        assert seed["carried"]["joint"][f"{arch}->{arch}"] == pytest.approx(1.0)
    for d in ("cnn->cnn", "vit->vit"):
        mt = seed["multitask"]["joint"][d]
        assert mt["finetuned"]["normalized_mean"] == pytest.approx(1.0)
        # the scale is chosen on validation (0 is on the grid): no large loss on test
        assert mt["task_arithmetic"]["normalized_mean"] > mt["pretrained"]["normalized_mean"] - 0.05
        assert 0.4 < mt["tall_masks"]["normalized_mean"] <= 1.05
        assert 0.0 <= mt["task_arithmetic"]["scale"] <= 1.0


def test_negation_keeps_the_control(run: tuple[Path, dict[str, Any]]) -> None:
    seed = run[1]["runs"][0]
    for r in REGIMES:
        for d, entry in seed["negation"][r].items():
            neg = entry["mnist"]
            assert 0.0 <= neg["scale"] <= 4.0
            control = neg["control"]["fashion"]
            # the scale is chosen on validation; on test the control stays close to pretrained
            assert control["edited"] > 0.8 * control["pretrained"], (r, d)
            assert neg["target"]["edited"] <= neg["target"]["pretrained"] + 0.02, (r, d)
            assert len(neg["curve"]) == 11


def test_analogies_and_modules_report_real_numbers(run: tuple[Path, dict[str, Any]]) -> None:
    seed = run[1]["runs"][0]
    an = seed["analogy"]["joint"]["cnn->cnn"]
    assert len(an) == 6
    for entry in an.values():
        assert set(entry["scores"]) == {"pretrained", "c_only", "analogy", "reference", "b_only"}
        assert all(0.0 <= v <= 1.0 for v in entry["scores"].values())
    # the references are fine-tuned on D itself (single tiny tasks may overfit in quick mode)
    ref = sum(e["scores"]["reference"] for e in an.values())
    assert ref > sum(e["scores"]["pretrained"] for e in an.values()) + 0.3
    mod = seed["modular"]["joint"]
    assert mod["dense"]["parameters"] == 16576
    assert mod["lora_r4"]["parameters"] == 4 * (64 + 128) * 2
    assert mod["svd_r4"]["parameters"] == 4 * (64 + 128) * 2 + 128 + 64  # biases stay dense
    assert 0.0 < mod["svd_r4"]["cosine"] < 0.5
    assert all(0.5 < v <= 1.0 for v in mod["router_accuracy"].values())
    within = mod["dense"]["cnn->cnn"]
    assert within["single_normalized"] == pytest.approx(1.0)
    assert within["routing"] > within["task_arithmetic"] - 0.05
