"""Property tests for the functional-map identities of PROJECTS.md, plus the mesh pipeline."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.stats import ortho_group

from weightspace import ShapeMismatchError, WeightspaceValueError, data, spectral

SIZES = st.integers(4, 14)
SEEDS = st.integers(0, 10_000)


def _pair(graphs: SimpleNamespace, n: int, seed: int) -> tuple[object, object, np.ndarray]:
    """Basis on X, basis on Y = X relabelled by a random permutation, and the point map Y->X."""
    a = graphs.random_graph(n, seed)
    perm = np.random.default_rng(seed + 7).permutation(n)  # y_j = x_{perm[j]}
    bx = graphs.full_basis(a)
    by = graphs.full_basis(a[perm][:, perm])
    return bx, by, perm


@settings(max_examples=20)
@given(n=SIZES, seed=SEEDS)
def test_isometry_map_is_orthogonal_and_commutes_with_eigenvalues(
    graphs: SimpleNamespace, n: int, seed: int
) -> None:
    bx, by, perm = _pair(graphs, n, seed)
    fmap = spectral.FunctionalMap.from_pointwise(perm, bx, by)
    c = fmap.matrix
    np.testing.assert_allclose(c.T @ c, np.eye(n), atol=1e-9)
    lam = bx.values
    np.testing.assert_allclose(c * lam[None, :], by.values[:, None] * c, atol=1e-8 * lam.max())
    assert fmap.orthogonality_defect() < 1e-9
    assert fmap.commutativity_defect() < 1e-8
    np.testing.assert_allclose(fmap.singular_values(), 1.0, atol=1e-9)
    # with a simple spectrum C is diagonal +-1 and converts back to the exact point map
    if all(len(g) == 1 for g in bx.eigenspaces(1e-6)):
        np.testing.assert_array_equal(fmap.to_pointwise(), perm)
        assert fmap.off_diagonal_energy() < 1e-12


@settings(max_examples=20)
@given(n=SIZES, seed=SEEDS)
def test_sign_flips_act_as_column_and_row_scaling(
    graphs: SimpleNamespace, n: int, seed: int
) -> None:
    bx, by, perm = _pair(graphs, n, seed)
    rng = np.random.default_rng(seed)
    sx, sy = rng.choice([-1.0, 1.0], size=n), rng.choice([-1.0, 1.0], size=n)
    fx = spectral.Eigenbasis(bx.vectors * sx, bx.values, bx.mass)
    fy = spectral.Eigenbasis(by.vectors * sy, by.values, by.mass)
    c = spectral.FunctionalMap.from_pointwise(perm, bx, by).matrix
    c_flipped = spectral.FunctionalMap.from_pointwise(perm, fx, fy).matrix
    np.testing.assert_allclose(c_flipped, sy[:, None] * c * sx[None, :], atol=1e-12)
    # the sign convention undoes the flips
    again = spectral.FunctionalMap.from_pointwise(
        perm, fx.canonicalize_signs(), fy.canonicalize_signs()
    ).matrix
    np.testing.assert_allclose(again, c, atol=1e-10)


def _block_rotation(groups: list[list[int]], k: int, seed: int) -> np.ndarray:
    r = np.eye(k)
    rng = np.random.default_rng(seed)
    for g in groups:
        if len(g) > 1:
            r[np.ix_(g, g)] = ortho_group.rvs(len(g), random_state=rng)
    return r


@settings(max_examples=20)
@given(m=st.integers(3, 8), seed=SEEDS)
def test_rotation_inside_eigenspaces_acts_as_ry_t_c_rx(m: int, seed: int) -> None:
    # a cycle graph has 2-dimensional eigenspaces; random relabelling gives the second domain
    n = 2 * m
    cycle = spectral.graph_laplacian([[i, (i + 1) % n] for i in range(n)])
    perm = np.random.default_rng(seed).permutation(n)
    bx = spectral.eigenbasis(cycle, n)
    by = spectral.eigenbasis(cycle.permute(perm), n)
    c = spectral.FunctionalMap.from_pointwise(perm, bx, by)
    rx = _block_rotation(bx.eigenspaces(), n, seed + 1)
    ry = _block_rotation(by.eigenspaces(), n, seed + 2)
    rot_x = spectral.Eigenbasis(bx.vectors @ rx, bx.values, bx.mass)
    rot_y = spectral.Eigenbasis(by.vectors @ ry, by.values, by.mass)
    c_rot = spectral.FunctionalMap.from_pointwise(perm, rot_x, rot_y)
    np.testing.assert_allclose(c_rot.matrix, ry.T @ c.matrix @ rx, atol=1e-10)
    np.testing.assert_allclose(c_rot.singular_values(), c.singular_values(), atol=1e-10)
    # block energy is rotation-invariant, plain diagonal energy is not
    assert c_rot.off_diagonal_energy(blocks=True) < 1e-12
    # truncated at a complete eigenspace, singular values are still invariant
    k = 3
    small = spectral.FunctionalMap.from_pointwise(perm, rot_x.truncate(k), rot_y.truncate(k))
    ref = spectral.FunctionalMap.from_pointwise(perm, bx.truncate(k), by.truncate(k))
    np.testing.assert_allclose(small.singular_values(), ref.singular_values(), atol=1e-10)


@settings(max_examples=20)
@given(n=SIZES, seed=SEEDS, k=st.integers(2, 6))
def test_relabelling_points_leaves_c_unchanged(
    graphs: SimpleNamespace, n: int, seed: int, k: int
) -> None:
    bx, by, perm = _pair(graphs, n, seed)
    k = min(k, n)
    bx, by = bx.truncate(k), by.truncate(k)
    c = spectral.FunctionalMap.from_pointwise(perm, bx, by).matrix
    rng = np.random.default_rng(seed + 3)
    sigma, tau = rng.permutation(n), rng.permutation(n)  # new labels of Y, of X
    inv_tau = np.argsort(tau)
    p2p = inv_tau[perm[sigma]]
    c2 = spectral.FunctionalMap.from_pointwise(p2p, bx.permute(tau), by.permute(sigma)).matrix
    np.testing.assert_allclose(c2, c, atol=1e-12)


@settings(max_examples=20)
@given(n=SIZES, seed=SEEDS, k=st.integers(1, 13))
def test_composition_exact_with_full_bases_and_bounded_otherwise(
    graphs: SimpleNamespace, n: int, seed: int, k: int
) -> None:
    a = graphs.random_graph(n, seed)
    rng = np.random.default_rng(seed)
    p1, p2 = rng.permutation(n), rng.permutation(n)  # Y->X, Z->Y
    bx = graphs.full_basis(a)
    by = graphs.full_basis(a[p1][:, p1])
    bz = graphs.full_basis(a[p1[p2]][:, p1[p2]])
    xy = spectral.FunctionalMap.from_pointwise(p1, bx, by)
    yz = spectral.FunctionalMap.from_pointwise(p2, by, bz)
    xz = spectral.FunctionalMap.from_pointwise(p1[p2], bx, bz)
    np.testing.assert_allclose(xy.then(yz).matrix, xz.matrix, atol=1e-9)
    np.testing.assert_allclose((yz @ xy).matrix, xz.matrix, atol=1e-9)
    # truncated intermediate basis: error <= sqrt(1 - sigma_min(C_XY)^2) (unit mass, Pi orthogonal)
    k = min(k, n)
    r_y = _random_basis(n, k, seed)
    xy_t = spectral.FunctionalMap.from_pointwise(p1, bx, r_y)
    yz_t = spectral.FunctionalMap.from_pointwise(p2, r_y, bz)
    err = np.linalg.norm(yz_t.matrix @ xy_t.matrix - xz.matrix, 2)
    smin = xy_t.singular_values().min() if k >= n else 0.0
    assert err <= np.sqrt(max(0.0, 1 - smin**2)) + 1e-9


def _random_basis(n: int, k: int, seed: int) -> spectral.Eigenbasis:
    q = ortho_group.rvs(n, random_state=np.random.default_rng(seed + 11))[:, :k]
    return spectral.Eigenbasis(q, np.arange(k, dtype=float), np.ones(n))


@settings(max_examples=20)
@given(n=SIZES, seed=SEEDS)
def test_adjoint_is_inverse_for_isometries_and_transfer_moves_functions(
    graphs: SimpleNamespace, n: int, seed: int
) -> None:
    bx, by, perm = _pair(graphs, n, seed)
    fmap = spectral.FunctionalMap.from_pointwise(perm, bx, by)
    np.testing.assert_allclose(fmap.adjoint().matrix, fmap.inverse().matrix, atol=1e-9)
    f = np.random.default_rng(seed).normal(size=n)
    np.testing.assert_allclose(fmap.transfer(f), f[perm], atol=1e-9)


def test_mesh_pipeline_recovers_a_permuted_isometric_sheet() -> None:
    v, f = data.sheet_mesh(30, 15, jitter=0.2, seed=0)
    perm = np.random.default_rng(1).permutation(len(v))
    vy = data.bend_sheet(v, 2.0)[perm]
    fy = np.argsort(perm)[f]
    lx, ly = spectral.cotangent_laplacian(v, f), spectral.cotangent_laplacian(vy, fy)
    assert ly.area == pytest.approx(lx.area, rel=2e-3)
    bx, by = spectral.eigenbasis(lx, 30), spectral.eigenbasis(ly, 30)
    sx, sy = bx.truncate(15), by.truncate(15)
    dx = spectral.wave_kernel_signature(sx, num_energies=40)
    dy = spectral.wave_kernel_signature(sy, num_energies=40)
    est = spectral.FunctionalMapEstimator().fit(sx, sy, dx, dy)
    assert est.descriptor_residual_ < 0.05
    refined = spectral.zoomout(est.map_, bx, by, step=3)
    assert refined.matrix.shape == (30, 30)
    err = spectral.correspondence_error(refined.to_pointwise(), perm, v, area=lx.area)
    assert err < 0.02
    sub = spectral.zoomout(est.map_, bx, by, step=5, subsample=300, seed=0)
    assert spectral.correspondence_error(sub.to_pointwise(), perm, v, area=lx.area) < 0.05


def test_symmetric_sheet_is_ambiguous_for_intrinsic_descriptors() -> None:
    v, f = data.sheet_mesh(20, 10, holes=False)
    lap = spectral.cotangent_laplacian(v, f)
    basis = spectral.eigenbasis(lap, 10)
    mirror = spectral.nearest_neighbors(v[:, :2], np.c_[2.0 - v[:, 0], 1.0 - v[:, 1]])
    hks = spectral.heat_kernel_signature(basis, num_times=8)
    np.testing.assert_allclose(hks[mirror], hks, atol=1e-8)  # a half-turn of the sheet


def test_fmap_validation_and_immutability() -> None:
    b = spectral.covariance_eigenbasis(covariance=np.diag([3.0, 2.0, 1.0]))
    with pytest.raises(ShapeMismatchError, match="`matrix` must be"):
        spectral.FunctionalMap(np.eye(2), b, b)
    with pytest.raises(WeightspaceValueError, match="`p2p` must hold indices"):
        spectral.FunctionalMap.from_pointwise([0, 1, 5], b, b)
    with pytest.raises(ShapeMismatchError, match="`correspondence` must be"):
        spectral.FunctionalMap.from_correspondence(np.eye(2), b, b)
    fmap = spectral.FunctionalMap(np.eye(3), b, b)
    with pytest.raises(ValueError, match="read-only"):
        fmap.matrix[0, 0] = 2.0
    with pytest.raises(WeightspaceValueError, match="`step` must be a positive integer"):
        spectral.zoomout(fmap, b, b, step=0)
    with pytest.raises(WeightspaceValueError, match="`laplacian_weight`"):
        spectral.FunctionalMapEstimator(laplacian_weight=-1).fit(b, b, np.eye(3), np.eye(3))


def test_nearest_neighbors_matches_brute_force() -> None:
    rng = np.random.default_rng(0)
    for d in (3, 40):
        ref, qry = rng.normal(size=(200, d)), rng.normal(size=(50, d))
        brute = ((qry[:, None] - ref[None]) ** 2).sum(-1).argmin(1)
        np.testing.assert_array_equal(spectral.nearest_neighbors(ref, qry), brute)


def _bent_pair() -> tuple[Any, ...]:
    v, f = data.sheet_mesh(30, 15, jitter=0.2, seed=0)
    perm = np.random.default_rng(1).permutation(len(v))
    vy = data.bend_sheet(v, 2.0)[perm]
    lx = spectral.cotangent_laplacian(v, f)
    ly = spectral.cotangent_laplacian(vy, np.argsort(perm)[f])
    bx, by = spectral.eigenbasis(lx, 30), spectral.eigenbasis(ly, 30)
    init = spectral.FunctionalMap.from_pointwise(perm, bx.truncate(10), by.truncate(10))
    return v, perm, lx, bx, by, init


@pytest.mark.parametrize("sample_source", [False, True])
@pytest.mark.parametrize("sampling", ["area", "uniform"])
def test_zoomout_polish_ends_with_an_exact_pass_on_all_points(
    sampling: str, sample_source: bool
) -> None:
    v, perm, lx, bx, by, init = _bent_pair()
    n = bx.n  # 450 points: 2 * 120 < n <= 4 * 120
    kw: dict[str, Any] = {"step": 4, "subsample": 120, "seed": 3, "sampling": sampling}
    kw |= {"sample_source": sample_source, "select": "last"}
    plain = spectral.zoomout(init, bx, by, polish=0, final_passes=0, **kw)
    once = spectral.zoomout(init, bx, by, polish=1, final_passes=0, **kw)
    full = spectral.zoomout(init, bx, by, polish=5, final_passes=0, **kw)
    assert 2 * 120 < n <= 4 * 120
    # polish=1 adds one pass at k=30 on 240 fresh samples, then polish=2 ends on all points
    # with the exact projection of the previous map's point map; more passes change nothing
    twice = spectral.zoomout(init, bx, by, polish=2, final_passes=0, **kw)
    exact = spectral.FunctionalMap.from_pointwise(once.to_pointwise(), bx, by)
    np.testing.assert_allclose(twice.matrix, exact.matrix, atol=1e-12)
    np.testing.assert_array_equal(full.matrix, twice.matrix)
    # that pass on all points counts as one final pass
    np.testing.assert_array_equal(
        spectral.zoomout(init, bx, by, polish=2, final_passes=1, **kw).matrix, twice.matrix
    )
    np.testing.assert_array_equal(
        spectral.zoomout(init, bx, by, polish=1, final_passes=1, **kw).matrix, twice.matrix
    )
    errors = [
        spectral.correspondence_error(m.to_pointwise(), perm, v, area=lx.area)
        for m in (plain, twice)
    ]
    assert errors[1] <= errors[0] + 1e-3
    assert errors[1] < 0.01


def test_sampling_only_the_target_is_less_biased() -> None:
    v, perm, lx, bx, by, init = _bent_pair()
    errors = {}
    for sample_source in (False, True):
        refined = spectral.zoomout(
            init,
            bx,
            by,
            step=4,
            subsample=100,
            polish=0,
            final_passes=0,
            select="last",
            sample_source=sample_source,
        )
        errors[sample_source] = spectral.correspondence_error(
            refined.to_pointwise(), perm, v, area=lx.area
        )
    assert errors[False] < errors[True]


def test_zoomout_arguments_are_never_silently_ignored() -> None:
    _, _, _, bx, by, init = _bent_pair()
    with pytest.raises(WeightspaceValueError, match=r"`polish=3` refines a subsampled run"):
        spectral.zoomout(init, bx, by, step=4, subsample=None, polish=3)
    with pytest.raises(WeightspaceValueError, match="`polish` must be non-negative, got -1"):
        spectral.zoomout(init, bx, by, polish=-1)
    with pytest.raises(WeightspaceValueError, match="`final_passes` must be non-negative"):
        spectral.zoomout(init, bx, by, final_passes=-2)
    with pytest.raises(WeightspaceValueError, match="`subsample` must be a positive number"):
        spectral.zoomout(init, bx, by, subsample=0)
    with pytest.raises(WeightspaceValueError, match="`sampling` must be 'area' or 'uniform'"):
        spectral.zoomout(init, bx, by, sampling="fps")  # type: ignore[arg-type]
    # polish=0 without subsample is allowed (it asks for nothing)
    np.testing.assert_array_equal(
        spectral.zoomout(init, bx, by, step=4, subsample=None, polish=0).matrix,
        spectral.zoomout(init, bx, by, step=4, subsample=None).matrix,
    )


def test_zoomout_defaults_and_the_former_schedule() -> None:
    _, _, _, bx, by, init = _bent_pair()
    plain: dict[str, Any] = {"step": 4, "final_passes": 0, "select": "last"}
    # a subsample at least as large as the shapes means all points
    np.testing.assert_array_equal(
        spectral.zoomout(init, bx, by, **plain).matrix,
        spectral.zoomout(init, bx, by, subsample=None, **plain).matrix,
    )
    # on all points, a final pass is one more iteration at the final size
    once = spectral.zoomout(init, bx, by, subsample=None, **plain)
    again = spectral.zoomout(once, bx, by, subsample=None, **plain | {"final_passes": 1})
    np.testing.assert_array_equal(
        spectral.zoomout(init, bx, by, subsample=None, **plain | {"final_passes": 1}).matrix,
        again.matrix,
    )
    # the default number of final passes depends on the number of point pairs only
    from weightspace.spectral._fmap import FINAL_PASSES, default_final_passes

    assert default_final_passes(450, 450) == FINAL_PASSES == 4
    assert default_final_passes(31_000, 32_000) == 4
    assert default_final_passes(49_000, 49_000) == 0


def _iterates(init: Any, bx: Any, by: Any, step: int, passes: int) -> list[Any]:
    """Each final-size map of one plain schedule, by running it with 0, 1, ... final passes."""
    kw: dict[str, Any] = {"step": step, "subsample": 100, "select": "last"}  # 2 x 100 < n
    return [spectral.zoomout(init, bx, by, final_passes=i, **kw) for i in range(passes + 1)]


@pytest.mark.parametrize("steps", [(4,), (2, 7)])
def test_zoomout_keeps_the_best_covering_iterate(steps: tuple[int, ...]) -> None:
    # two samplings of a sheet (no bijection exists) and a poor start: the iterates differ
    vx, fx = data.sheet_mesh(30, 15, jitter=0.3, seed=0)
    vy, fy = data.sheet_mesh(30, 15, jitter=0.3, seed=7)
    bx = spectral.eigenbasis(spectral.cotangent_laplacian(vx, fx), 30)
    by = spectral.eigenbasis(spectral.cotangent_laplacian(data.bend_sheet(vy, 2.0), fy), 30)
    rng = np.random.default_rng(0)
    start = spectral.nearest_neighbors(vx[:, :2], vy[:, :2])
    wrong = rng.random(start.size) < 0.33
    start[wrong] = rng.integers(0, bx.n, wrong.sum())
    init = spectral.FunctionalMap.from_pointwise(start, bx.truncate(6), by.truncate(6))
    candidates = [m for s in steps for m in _iterates(init, bx, by, s, 3)]
    coverage = [np.unique(m.to_pointwise()).size for m in candidates]
    assert len(set(coverage)) > 1  # the choice matters here
    chosen = spectral.zoomout(init, bx, by, step=steps, subsample=100, final_passes=3)
    # the first of the best-covering maps, in schedule order, is returned
    np.testing.assert_array_equal(chosen.matrix, candidates[int(np.argmax(coverage))].matrix)
    assert np.unique(chosen.to_pointwise()).size == max(coverage)


def test_zoomout_final_passes_stop_at_a_fixed_point() -> None:
    _, _, _, bx, by, init = _bent_pair()
    kw: dict[str, Any] = {"step": 4, "subsample": None, "select": "last"}
    maps = [spectral.zoomout(init, bx, by, final_passes=i, **kw) for i in (2, 3, 40)]
    # on this pair the point map settles within two passes: the next pass is the exact
    # projection of that point map, and any number of further passes returns the same map
    settled = spectral.FunctionalMap.from_pointwise(maps[0].to_pointwise(), bx, by)
    np.testing.assert_allclose(maps[1].matrix, settled.matrix, atol=1e-12)
    np.testing.assert_array_equal(maps[2].matrix, maps[1].matrix)


def test_zoomout_point_map_is_the_maps_own() -> None:
    v, perm, lx, bx, by, init = _bent_pair()
    refined = spectral.zoomout(init, bx, by)
    fresh = spectral.FunctionalMap(refined.matrix, bx, by)
    np.testing.assert_array_equal(refined.to_pointwise(), fresh.to_pointwise())
    kept = refined.to_pointwise()
    kept[:] = 0  # a copy: the map's own point map is not changed
    np.testing.assert_array_equal(refined.to_pointwise(), fresh.to_pointwise())
    assert spectral.correspondence_error(refined.to_pointwise(), perm, v, area=lx.area) < 0.01


def test_zoomout_rejects_bad_steps_and_selections() -> None:
    _, _, _, bx, by, init = _bent_pair()
    for bad in ((), (4, 0), 2.5):
        with pytest.raises(WeightspaceValueError, match="`step` must be a positive integer"):
            spectral.zoomout(init, bx, by, step=bad)  # type: ignore[arg-type]
    with pytest.raises(WeightspaceValueError, match="`select` must be 'coverage' or 'last'"):
        spectral.zoomout(init, bx, by, select="best")  # type: ignore[arg-type]
    with pytest.raises(WeightspaceValueError, match="`select='last'` needs a single schedule"):
        spectral.zoomout(init, bx, by, step=(2, 10), select="last")


def test_area_sampling_follows_the_mass() -> None:
    from weightspace.spectral._fmap import _sample

    mass = np.r_[np.full(50, 10.0), np.full(950, 0.1)]
    rng = np.random.default_rng(0)
    picks = np.concatenate([_sample(rng, mass, 100, "area") for _ in range(20)])
    # the first 50 points hold 84 % of the mass: nearly all of them are drawn every time
    assert (picks < 50).mean() > 0.45
    uniform = np.concatenate([_sample(rng, mass, 100, "uniform") for _ in range(20)])
    assert (uniform < 50).mean() < 0.1
    for draw in (picks[:100], uniform[:100]):
        assert len(np.unique(draw)) == 100 and np.all(np.diff(draw) > 0)


def test_nearest_neighbor_methods_and_workers_agree() -> None:
    rng = np.random.default_rng(0)
    ref, qry = rng.normal(size=(3000, 20)), rng.normal(size=(500, 20))
    brute = ((qry[:, None] - ref[None]) ** 2).sum(-1).argmin(1)
    for kw in ({}, {"method": "kdtree"}, {"method": "brute"}, {"workers": 2}, {"workers": -1}):
        np.testing.assert_array_equal(spectral.nearest_neighbors(ref, qry, **kw), brute)
    with pytest.raises(WeightspaceValueError, match="`method` must be 'auto', 'kdtree'"):
        spectral.nearest_neighbors(ref, qry, method="ball")  # type: ignore[arg-type]
    with pytest.raises(WeightspaceValueError, match="`workers` must be a positive thread count"):
        spectral.nearest_neighbors(ref, qry, workers=0)
    from weightspace.spectral._fmap import default_workers

    assert default_workers(19999) == 1
    assert default_workers(20000) >= 1
