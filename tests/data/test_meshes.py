"""Procedural meshes: a flat sheet with exact geometry, and bends that preserve its lengths."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from weightspace import WeightspaceValueError, data, spectral


def _signed_areas(v: np.ndarray, f: np.ndarray) -> np.ndarray:
    a, b, c = v[f[:, 0], :2], v[f[:, 1], :2], v[f[:, 2], :2]
    return 0.5 * ((b - a)[:, 0] * (c - a)[:, 1] - (b - a)[:, 1] * (c - a)[:, 0])


def _edge_counts(f: np.ndarray) -> Counter[tuple[int, int]]:
    edges = np.concatenate([f[:, [0, 1]], f[:, [1, 2]], f[:, [2, 0]]])
    return Counter(map(tuple, np.sort(edges, axis=1).tolist()))


def test_a_small_sheet_is_an_exact_grid() -> None:
    v, f = data.sheet_mesh(4, 3, holes=False)
    xs, ys = np.meshgrid([0.0, 2 / 3, 4 / 3, 2.0], [0.0, 0.5, 1.0], indexing="ij")
    np.testing.assert_array_equal(v[:, 0], xs.ravel())
    np.testing.assert_array_equal(v[:, 1], ys.ravel())
    assert (v[:, 2] == 0).all()
    assert v.dtype == np.float64 and f.dtype == np.int64
    assert f.tolist() == [
        [0, 3, 4], [1, 4, 2], [3, 6, 4], [4, 7, 8], [6, 9, 10], [7, 10, 8],
        [0, 4, 1], [4, 5, 2], [6, 7, 4], [4, 8, 5], [6, 10, 7], [10, 11, 8],
    ]  # fmt: skip


@settings(max_examples=20, deadline=None)
@given(nu=st.integers(3, 12), nv=st.integers(3, 12), jitter=st.floats(0.0, 0.25))
def test_a_sheet_without_holes_tiles_the_rectangle(nu: int, nv: int, jitter: float) -> None:
    v, f = data.sheet_mesh(nu, nv, width=3.0, height=1.5, holes=False, jitter=jitter, seed=7)
    areas = _signed_areas(v, f)
    assert (areas > 0).all()  # consistently oriented, none folded over
    assert areas.sum() == pytest.approx(4.5, rel=1e-12)
    counts = _edge_counts(f)
    assert set(counts.values()) == {1, 2}  # a manifold with boundary
    assert sum(c == 1 for c in counts.values()) == 2 * (nu - 1) + 2 * (nv - 1)
    assert len(v) == nu * nv and len(f) == 2 * (nu - 1) * (nv - 1)


def test_a_large_jitter_can_fold_a_triangle_over() -> None:
    # why the docstring recommends jitter <= 0.25: one of these seeds folds a triangle
    folded = [
        (_signed_areas(*data.sheet_mesh(6, 10, holes=False, jitter=0.45, seed=s)) <= 0).any()
        for s in range(10)
    ]
    assert any(folded)


def test_holes_cut_the_disc_and_the_notch_and_drop_unused_vertices() -> None:
    v, f = data.sheet_mesh(12, 8)
    assert (len(v), len(f)) == (88, 128)
    assert np.unique(f).tolist() == list(range(len(v)))
    centroid = v[f].mean(axis=1)
    cx, cy = centroid[:, 0] / 2.0, centroid[:, 1] / 1.0
    assert not ((cx - 0.68) ** 2 + ((cy - 0.4) * 0.5) ** 2 < 0.13**2).any()
    assert not ((cx < 0.22) & (cy > 0.7)).any()
    assert _signed_areas(v, f).sum() < 2.0


def test_jitter_moves_interior_vertices_only_and_follows_the_seed() -> None:
    flat, faces = data.sheet_mesh(6, 5, holes=False)
    a, fa = data.sheet_mesh(6, 5, holes=False, jitter=0.3, seed=1)
    b, _ = data.sheet_mesh(6, 5, holes=False, jitter=0.3, seed=1)
    c, _ = data.sheet_mesh(6, 5, holes=False, jitter=0.3, seed=2)
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)
    np.testing.assert_array_equal(fa, faces)
    border = (flat[:, 0] == 0) | (flat[:, 0] == 2) | (flat[:, 1] == 0) | (flat[:, 1] == 1)
    np.testing.assert_array_equal(a[border], flat[border])
    moved = np.abs(a - flat)[~border]
    assert (moved[:, 0] <= 0.3 * 0.4 + 1e-15).all() and (moved[:, 1] <= 0.3 * 0.25 + 1e-15).all()
    assert (moved[:, :2] > 0).any()


@settings(max_examples=25, deadline=None)
@given(k=st.floats(-3.0, 3.0).filter(lambda k: abs(k) > 1e-3), seed=st.integers(0, 100))
def test_bending_keeps_lengths_along_the_surface(k: float, seed: int) -> None:
    v, f = data.sheet_mesh(7, 4, holes=False, jitter=0.2, seed=seed)
    bent = data.bend_sheet(v, k)
    # lines along y stay straight; a line along x becomes an arc of radius 1/k
    np.testing.assert_allclose(bent[:, 1], v[:, 1], rtol=0, atol=0)
    x = v[:, 0]
    np.testing.assert_allclose(bent[:, 0], np.sin(k * x) / k, atol=1e-12)
    np.testing.assert_allclose(bent[:, 2], (1 - np.cos(k * x)) / k, atol=1e-12)
    i, j = f[:, 0], f[:, 1]
    dx, dy = x[i] - x[j], v[i, 1] - v[j, 1]
    chord = np.hypot(2 * np.sin(k * dx / 2) / k, dy)  # the chord of the bent segment
    np.testing.assert_allclose(np.linalg.norm(bent[i] - bent[j], axis=1), chord, atol=1e-12)


def test_bend_sheet_inputs_and_errors() -> None:
    v = np.array([[np.pi, 0.5, 0.0]])
    assert data.bend_sheet(v, 1.0).round(12).tolist() == [[0.0, 0.5, 2.0]]
    np.testing.assert_array_equal(data.bend_sheet(torch.tensor(v), 1.0), data.bend_sheet(v, 1.0))
    assert data.bend_sheet([[1.0, 2.0, 0.0]], 0.0).tolist() == [[1.0, 2.0, 0.0]]
    same = data.bend_sheet(v, 0)
    assert np.array_equal(same, v) and same is not v and not np.shares_memory(same, v)
    with pytest.raises(WeightspaceValueError, match=r"^`vertices` must be \[n, 3\], got \[2, 2\]$"):
        data.bend_sheet(np.zeros((2, 2)), 1.0)
    with pytest.raises(WeightspaceValueError, match=r"must have 2 dimensions, got shape \[3\]"):
        data.bend_sheet(np.zeros(3), 1.0)
    with pytest.raises(WeightspaceValueError, match="must be finite"):
        data.bend_sheet(np.full((1, 3), np.nan), 1.0)
    with pytest.raises(WeightspaceValueError, match="must be a numeric array or tensor, got str"):
        data.bend_sheet("abc", 1.0)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"nu": 2, "nv": 5}, r"^`nu` and `nv` must be at least 3, got 2 and 5$"),
        ({"nu": 4, "nv": 5, "jitter": 0.5}, r"^`jitter` must be in \[0, 0\.5\), got 0\.5$"),
        ({"nu": 4, "nv": 5, "jitter": -0.1}, r"^`jitter` must be in \[0, 0\.5\), got -0\.1$"),
    ],
)
def test_sheet_mesh_errors(kwargs: dict, match: str) -> None:
    with pytest.raises(WeightspaceValueError, match=match):
        data.sheet_mesh(**kwargs)


def test_the_old_spectral_names_warn_and_give_the_same_meshes() -> None:
    with pytest.warns(FutureWarning, match=r"`spectral\.sheet_mesh` is deprecated .* removed in "
                      r"0\.2; use `weightspace\.data\.sheet_mesh` instead"):  # fmt: skip
        old_v, old_f = spectral.sheet_mesh(10, 6, jitter=0.2, seed=3)
    new_v, new_f = data.sheet_mesh(10, 6, jitter=0.2, seed=3)
    np.testing.assert_array_equal(old_v, new_v)
    np.testing.assert_array_equal(old_f, new_f)
    with pytest.warns(FutureWarning, match=r"use `weightspace\.data\.bend_sheet` instead"):
        old = spectral.bend_sheet(new_v, 1.5)
    np.testing.assert_array_equal(old, data.bend_sheet(new_v, 1.5))
