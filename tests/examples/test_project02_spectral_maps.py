"""Runs the project-2 example in quick mode and checks what it found."""

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

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from weightspace import report

FOLDER = Path(__file__).resolve().parents[2] / "examples" / "project02_spectral_maps"


def _module() -> ModuleType:
    name = "_example_spectral_maps"
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, FOLDER / "spectral_maps.py")
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
    return sys.modules[name]


@pytest.fixture(scope="module")
def quick(run_quick: Callable[..., tuple[Path, dict[str, Any]]]) -> tuple[Path, dict[str, Any]]:
    return run_quick("project02_spectral_maps/spectral_maps.py")


@pytest.fixture(scope="module")
def results(quick: tuple[Path, dict[str, Any]]) -> dict[str, Any]:
    out, data = quick
    assert (out / "results.md").read_text().startswith("# Project 2 results (quick mode")
    return data


def test_networks_learn(results: dict[str, Any]) -> None:
    # three data sets at width 16, two of them also at width 8, two seeds each
    assert len(results["accuracy"]) == 10
    assert {(a["data"], a["width"]) for a in results["accuracy"]} == {
        ("mnist", 16),
        ("fashion", 16),
        ("digits", 16),
        ("mnist", 8),
        ("fashion", 8),
    }
    for a in results["accuracy"]:
        assert len(a["val_curve"]) == a["epochs"]
        assert a["val_accuracy"] == a["val_curve"][-1]
        if a["width"] == 16:
            assert a["test_accuracy"] > 0.3  # 10 classes: chance is 0.1


def test_stationary_covariances_share_the_fourier_basis(results: dict[str, Any]) -> None:
    m = results["mathematics"]
    cyc = m["cycle_stationary"]
    # a symmetric circulant: diagonal in the DFT basis and in any eigenbasis of the cycle's L
    assert cyc["stationarity_defect"] < 1e-10
    assert cyc["commutator"] < 1e-10 and cyc["shift_commutator"] < 1e-10
    assert cyc["off_diagonal_dft"] < 1e-10
    assert cyc["off_diagonal_laplacian_eigh"] < 1e-10
    # commuting with L is weaker: one cosine mode added, no longer stationary nor DFT-diagonal
    cos = m["cycle_commuting_not_stationary"]
    assert cos["commutator"] < 1e-10 and cos["eigenspace_defect"] < 1e-10
    assert cos["stationarity_defect"] > 1e-2 and cos["off_diagonal_dft"] > 1e-3
    # torus: stationary, diagonal in the 2-D DFT, only block-diagonal in an eigensolver basis
    tor = m["torus_stationary"]
    assert tor["commutator"] < 1e-10 and tor["off_diagonal_dft"] < 1e-10
    assert tor["eigenspace_defect"] < 1e-10 < 1e-2 < tor["off_diagonal_laplacian_eigh"]
    assert m["grid_gmrf"]["eigenspace_defect"] < 1e-10
    assert m["grid_nonstationary"]["commutator"] > 1e-2
    assert m["grid_nonstationary"]["eigenspace_defect"] > 1e-2


def test_davis_kahan_and_truncation_bounds_hold(results: dict[str, Any]) -> None:
    m = results["mathematics"]
    previous = -1.0
    for row in m["davis_kahan"]:
        assert row["sin_within_bound"], row["epsilon"]
        assert row["defect"] <= row["defect_bound"] + 1e-9
        assert row["e_fro"] <= row["e_fro_bound"] + 1e-12
        assert row["sin_top4"] <= row["sin_top4_bound"] + 1e-6
        assert row["defect"] >= previous - 1e-9  # more non-commuting, further from L's basis
        previous = row["defect"]
    t = m["truncation"]
    for case in t["cases"].values():
        assert case["difference"] <= case["bound"] + 1e-9
        # Π is an interpolation between unequal sizes, not orthogonal: C is not orthogonal
        assert case["c_fm_sigma_max"] < 0.95
    low, band = t["cases"]["low-pass (Matérn-like)"], t["cases"]["band-pass"]
    assert low["difference"] < 1e-10 and low["overlap_x"] == pytest.approx(1.0)
    # band-pass: the top-k variance modes are not the lowest-k Laplacian modes
    assert band["overlap_x"] < 1e-6 and band["overlap_y"] < 1e-6
    assert band["abs_difference_unaligned"] > 0.5
    # ... although with full bases the covariance basis is still a permuted Laplacian basis
    assert max(t["band_pass_full_eigenspace_defect"]) < 1e-10


@settings(max_examples=25, deadline=None)
@given(n=st.integers(3, 24), seed=st.integers(0, 2**16))
def test_symmetric_circulants_are_diagonal_in_the_dft_basis(n: int, seed: int) -> None:
    mod = _module()
    rng = np.random.default_rng(seed)
    c = rng.normal(size=n)
    c = c + np.roll(c[::-1], 1)  # c_d = c_{-d}: a symmetric circulant
    cov = np.stack([np.roll(c, i) for i in range(n)])
    assert np.allclose(cov, cov.T)
    dft = np.exp(-2j * np.pi * np.outer(np.arange(n), np.arange(n)) / n) / math.sqrt(n)
    assert mod.off_diagonal_mass(cov, dft) < 1e-10
    lap = mod.cycle_laplacian(n)
    assert mod.rel_commutator(cov, lap) < 1e-10
    assert mod.stationarity_defect(cov) < 1e-10
    phi = np.linalg.eigh(lap)[1]
    # Σ is a polynomial in L, so even an eigensolver's basis of L diagonalises it
    assert mod.off_diagonal_mass(cov, phi) < 1e-10


def test_network_bootstrap_resamples_networks() -> None:
    mod = _module()
    keys = [(d, 16, s) for d in ("mnist", "fashion") for s in range(4)]
    perfect = {(a, b): float(a[0] == b[0]) for a, b in itertools.combinations(sorted(keys), 2)}
    flat = {(a, b): 0.5 for a, b in perfect}
    out = mod.network_bootstrap(keys, {"cka_conv2": flat, "perfect": perfect}, 100, 0)
    assert out["perfect"]["auc_ci"] == [1.0, 1.0]
    assert out["cka_conv2"]["auc_ci"] == [0.5, 0.5]
    assert out["perfect"]["auc_minus_cka_conv2_ci"] == [0.5, 0.5]
    assert out["perfect"]["draws"] == 100


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
    assert {p["data"] for p in results["neurons"]["pairs"]} == {"mnist", "fashion", "digits"}
    for pair in results["neurons"]["pairs"]:
        assert pair["residual_rotation"] < pair["residual_permutation"]


def test_cross_network_matrix(results: dict[str, Any]) -> None:
    mx = results["matrix"]
    n = len(mx["keys"])
    assert n == 12  # ten trained networks and two untrained controls
    assert len(mx["entries"]) == n * (n - 1)
    widths = {(e["a"][1], e["b"][1]) for e in mx["entries"]}
    assert (16, 8) in widths and (8, 16) in widths
    for e in mx["entries"]:
        assert 0.0 <= e["alignment_top"] <= 1.0 + 1e-9
        assert 0.0 <= e["bw_aligned_conv2"] <= 1.0 + 1e-9
        assert e["chance_alignment"] == 1 / max(e["a"][1], e["b"][1])


def test_similarity_scores_are_bounded_and_summarised(results: dict[str, Any]) -> None:
    sim = results["similarity"]
    summary = sim["summary"]
    assert {"bw_aligned_conv2", "alignment_top4_conv2", "cka_conv2", "cka_logits"} <= set(summary)
    pairs = sim["pairs"]
    assert len(pairs) == 15 == sim["same_pairs"] + sim["different_pairs"]
    for pair in pairs:
        for key in ("bw_aligned_conv2", "cka_conv1", "cka_logits"):
            assert 0.0 <= pair[key] <= 1.0 + 1e-9
    # the summary's AUC is the fraction of (same-data, different-data) pairs ranked right
    for metric, s in summary.items():
        pos = [p[metric] for p in pairs if p["same_data"]]
        neg = [p[metric] for p in pairs if not p["same_data"]]
        wins = sum((a > b) + 0.5 * (a == b) for a in pos for b in neg)
        assert s["auc"] == pytest.approx(wins / (len(pos) * len(neg))), metric
        assert s["same_mean"] == pytest.approx(sum(pos) / len(pos)), metric
        assert 0.0 <= s["auc_ci"][0] <= s["auc_ci"][1] <= 1.0


def test_tables_rst_is_built_from_the_results(quick: tuple[Path, dict[str, Any]]) -> None:
    out, data = quick
    mod = _module()
    assert (out / "tables.rst").read_text() == report.markdown_to_rst(mod.markdown(data))


def test_committed_tables_come_from_committed_results() -> None:
    mod = _module()
    saved = json.loads((FOLDER / "results" / "results.json").read_text(encoding="utf-8"))
    md = mod.markdown(saved)
    assert (FOLDER / "results" / "results.md").read_text(encoding="utf-8") == md
    assert (FOLDER / "results" / "tables.rst").read_text(encoding="utf-8") == (
        report.markdown_to_rst(md)
    )
