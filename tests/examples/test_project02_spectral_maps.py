"""Runs the project-2 example in quick mode and checks what it found."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest


@pytest.fixture(scope="module")
def results(run_quick: Callable[..., tuple[Path, dict[str, Any]]]) -> dict[str, Any]:
    out, data = run_quick("project02_spectral_maps/spectral_maps.py")
    assert (out / "results.md").read_text().startswith("# Project 2 results (quick mode")
    return data


def test_networks_learn(results: dict[str, Any]) -> None:
    assert len(results["accuracy"]) == 4
    assert all(a["accuracy"] > 0.3 for a in results["accuracy"])  # 10 classes: chance is 0.1


def test_meshes_asymmetric_recovered_symmetric_ambiguous(results: dict[str, Any]) -> None:
    asym = [r for r in results["mesh"] if r["holes"]]
    sym = [r for r in results["mesh"] if not r["holes"]]
    assert max(r["error_zoomout"] for r in asym) < 0.05
    # the half-turn symmetry defeats intrinsic descriptors on at least one seed
    assert max(r["error_zoomout"] for r in sym) > 5 * max(r["error_zoomout"] for r in asym)
    # the true map is near-orthogonal at small k and composes almost exactly
    for r in asym:
        t = r["truncation"][min(r["truncation"], key=int)]
        assert t["orthogonality_defect"] < 0.2
        assert t["composition_error"] < 0.2


def test_permutation_vs_rotation(results: dict[str, Any]) -> None:
    exact = results["neurons"]["exact"]
    # a point map (permutation) recovers a relabelling but not a rotation; Procrustes both
    assert exact["permuted"]["permutation_recovered"]
    assert not exact["rotated"]["permutation_recovered"]
    assert exact["permuted"]["residual_rotation"] < 1e-3
    assert (
        exact["rotated"]["residual_permutation"]
        > 0.1
        > 1e-3
        > exact["rotated"]["residual_rotation"]
    )
    assert exact["rotated"]["fmap_bw_similarity"] == pytest.approx(1.0, abs=1e-6)
    for pair in results["neurons"]["pairs"]:
        assert pair["residual_rotation"] < pair["residual_permutation"]


def test_similarity_scores_are_bounded_and_summarised(results: dict[str, Any]) -> None:
    summary = results["similarity"]["summary"]
    assert {"bw_aligned_conv2", "cka_conv2", "cka_logits"} <= set(summary)
    for pair in results["similarity"]["pairs"]:
        for key in ("bw_aligned_conv2", "cka_conv1", "cka_logits"):
            assert 0.0 <= pair[key] <= 1.0 + 1e-9
    pairs = results["similarity"]["pairs"]
    assert len(pairs) == 6
    # the summary's AUC is the fraction of (same-data, different-data) pairs ranked right
    for metric, s in summary.items():
        pos = [p[metric] for p in pairs if p["same_data"]]
        neg = [p[metric] for p in pairs if not p["same_data"]]
        wins = sum((a > b) + 0.5 * (a == b) for a in pos for b in neg)
        assert s["auc"] == pytest.approx(wins / (len(pos) * len(neg))), metric
        assert s["same_mean"] == pytest.approx(sum(pos) / len(pos)), metric
