"""Descriptor commutativity (Nogneng & Ovsjanikov 2017) in the functional-map estimator."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.stats import ortho_group

from weightspace import WeightspaceValueError, data, spectral
from weightspace.spectral._descriptors import _multiplication_operators
from weightspace.spectral._estimator import _commutativity_mask

SIZES = st.integers(4, 12)
SEEDS = st.integers(0, 10_000)


def _pair(
    graphs: SimpleNamespace, n: int, seed: int, normalization: str = "combinatorial"
) -> tuple[spectral.Eigenbasis, spectral.Eigenbasis, np.ndarray]:
    """Full bases on a random graph X and on Y = X relabelled; ``perm`` maps Y -> X."""
    a = graphs.random_graph(n, seed)
    perm = np.random.default_rng(seed + 7).permutation(n)
    bx = graphs.full_basis(a, normalization)
    by = graphs.full_basis(a[perm][:, perm], normalization)
    return bx, by, perm


def _direct_operator(basis: spectral.Eigenbasis, f: np.ndarray) -> np.ndarray:
    out: np.ndarray = basis.vectors.T @ ((basis.mass * f)[:, None] * basis.vectors)
    return out


@settings(max_examples=20)
@given(n=SIZES, seed=SEEDS, k=st.integers(1, 12))
def test_multiplication_operators_are_symmetric_and_compose_in_a_full_basis(
    graphs: SimpleNamespace, n: int, seed: int, k: int
) -> None:
    bx, _, _ = _pair(graphs, n, seed, "random_walk")  # non-uniform mass
    rng = np.random.default_rng(seed)
    f, g = rng.normal(size=n), rng.normal(size=n)
    ops = _multiplication_operators(bx, np.c_[f, g, f * g, np.full(n, 2.5)])
    np.testing.assert_allclose(ops, ops.transpose(0, 2, 1), atol=1e-12)
    np.testing.assert_allclose(ops[0], _direct_operator(bx, f), atol=1e-10)
    # P_f is similar to diag(f) (Phi^-1 = Phi^T M), P_f P_g = P_fg, a constant acts as c I
    np.testing.assert_allclose(np.linalg.eigvalsh(ops[0]), np.sort(f), atol=1e-9)
    np.testing.assert_allclose(ops[0] @ ops[1], ops[2], atol=1e-9)
    np.testing.assert_allclose(ops[3], 2.5 * np.eye(n), atol=1e-9)
    # truncated bases keep the leading block
    small = _multiplication_operators(bx.truncate(min(k, n)), np.c_[f])
    np.testing.assert_allclose(small[0], ops[0][: min(k, n), : min(k, n)], atol=1e-12)


@settings(max_examples=20)
@given(n=SIZES, seed=SEEDS)
def test_true_map_of_a_relabelled_graph_commutes_with_descriptor_operators(
    graphs: SimpleNamespace, n: int, seed: int
) -> None:
    bx, by, perm = _pair(graphs, n, seed)
    d = np.random.default_rng(seed).normal(size=(n, 3))
    p = _multiplication_operators(bx, d)
    q = _multiplication_operators(by, d[perm])
    c = spectral.FunctionalMap.from_pointwise(perm, bx, by).matrix
    np.testing.assert_allclose(np.matmul(c, p), np.matmul(q, c), atol=1e-9)


@settings(max_examples=20, deadline=None)
@given(n=SIZES, seed=SEEDS, beta=st.sampled_from([0.01, 0.1, 1.0, 10.0]))
def test_estimator_recovers_the_true_map_of_an_isometry_with_full_bases(
    graphs: SimpleNamespace, n: int, seed: int, beta: float
) -> None:
    # every term of the energy vanishes on the true map, so it is a minimiser (and the only
    # one: random descriptors determine the permutation)
    bx, by, perm = _pair(graphs, n, seed)
    d = np.random.default_rng(seed).normal(size=(n, 3))
    est = spectral.FunctionalMapEstimator(descriptor_commutativity_weight=beta)
    est.fit(bx, by, d, d[perm])
    truth = spectral.FunctionalMap.from_pointwise(perm, bx, by).matrix
    np.testing.assert_allclose(est.map_.matrix, truth, atol=1e-6)
    assert est.descriptor_residual_ < 1e-6
    assert est.descriptor_commutativity_residual_ < 1e-6
    assert est.n_iter_ > 0
    np.testing.assert_array_equal(est.map_.to_pointwise(), perm)


def _energy(
    c: torch.Tensor,
    bx: spectral.Eigenbasis,
    by: spectral.Eigenbasis,
    dx: np.ndarray,
    dy: np.ndarray,
    mu: float,
    beta: float,
) -> torch.Tensor:
    """The docstring's energy, term by term, with one operator per descriptor column."""
    norms = np.sqrt((bx.mass[:, None] * dx**2).sum(axis=0))
    dx, dy = dx / norms, dy / norms
    a, b = (torch.tensor(x) for x in (bx.project(dx), by.project(dy)))
    mask = torch.tensor(_commutativity_mask(bx.values, by.values, "resolvent"))
    p = torch.tensor(np.stack([_direct_operator(bx, col) for col in dx.T]))
    q = torch.tensor(np.stack([_direct_operator(by, col) for col in dy.T]))
    eye = torch.eye(bx.k, dtype=torch.float64)
    centered = p - torch.einsum("dii->d", p)[:, None, None] / bx.k * eye
    rho = (a**2).sum() / (centered**2).sum()
    return (
        ((c @ a - b) ** 2).sum()
        + mu * (mask * c**2).sum()
        + beta * rho * ((c @ p - q @ c) ** 2).sum()
    )


@settings(max_examples=15, deadline=None)
@given(n=SIZES, seed=SEEDS, k=st.integers(2, 8), m=st.integers(1, 30))
def test_fitted_map_is_a_stationary_point_of_the_documented_energy(
    graphs: SimpleNamespace, n: int, seed: int, k: int, m: int
) -> None:
    # unrelated graphs, truncated bases, descriptors that do not correspond: no exact map
    # exists, but the fit must still minimise the energy written in the docstring
    k = min(k, n)
    bx = graphs.full_basis(graphs.random_graph(n, seed)).truncate(k)
    by = graphs.full_basis(graphs.random_graph(n + 2, seed + 1)).truncate(k)
    rng = np.random.default_rng(seed)
    dx, dy = rng.uniform(0.5, 2.0, size=(n, m)), rng.uniform(0.5, 2.0, size=(n + 2, m))
    mu, beta = 1e-2, 0.5
    est = spectral.FunctionalMapEstimator(laplacian_weight=mu, descriptor_commutativity_weight=beta)
    c = torch.tensor(est.fit(bx, by, dx, dy).map_.matrix, requires_grad=True)
    (grad,) = torch.autograd.grad(_energy(c, bx, by, dx, dy, mu, beta), c)
    zero = torch.zeros_like(c, requires_grad=True)
    (grad0,) = torch.autograd.grad(_energy(zero, bx, by, dx, dy, mu, beta), zero)
    assert float(grad.norm()) <= 1e-7 * float(grad0.norm())
    # and a minimum: any perturbation raises it
    base = float(_energy(c.detach(), bx, by, dx, dy, mu, beta))
    for _ in range(3):
        z = torch.tensor(rng.normal(size=(k, k))) * 1e-3
        assert float(_energy(c.detach() + z, bx, by, dx, dy, mu, beta)) >= base


@settings(max_examples=15, deadline=None)
@given(n=SIZES, seed=SEEDS, scale=st.floats(0.01, 100.0))
def test_weight_is_free_of_descriptor_scale_count_and_mixing(
    graphs: SimpleNamespace, n: int, seed: int, scale: float
) -> None:
    # with mu = 0 and unnormalised descriptors, the energy is homogeneous in the descriptors:
    # scaling them, repeating each column, or mixing columns by an orthogonal matrix (alike on
    # both shapes) leaves the minimiser unchanged
    bx = graphs.full_basis(graphs.random_graph(n, seed))
    by = graphs.full_basis(graphs.random_graph(n, seed + 1))  # not an isometry
    rng = np.random.default_rng(seed)
    dx, dy = rng.uniform(0.5, 2.0, size=(n, 4)), rng.uniform(0.5, 2.0, size=(n, 4))
    est = spectral.FunctionalMapEstimator(
        laplacian_weight=0.0, normalize_descriptors=False, descriptor_commutativity_weight=0.3
    )
    ref = est.fit(bx, by, dx, dy).map_.matrix
    scaled = est.fit(bx, by, scale * dx, scale * dy).map_.matrix
    repeated = est.fit(bx, by, np.c_[dx, dx], np.c_[dy, dy]).map_.matrix
    rot = ortho_group.rvs(4, random_state=rng)
    mixed = est.fit(bx, by, dx @ rot, dy @ rot).map_.matrix
    tol = 1e-6 * np.abs(ref).max()
    for other in (scaled, repeated, mixed):
        np.testing.assert_allclose(other, ref, atol=tol)


@settings(max_examples=10, deadline=None)
@given(n=SIZES, seed=SEEDS)
def test_conjugate_gradients_match_a_dense_solve(
    graphs: SimpleNamespace, n: int, seed: int
) -> None:
    k = min(6, n)
    bx = graphs.full_basis(graphs.random_graph(n, seed)).truncate(k)
    by = graphs.full_basis(graphs.random_graph(n, seed + 1)).truncate(k)
    rng = np.random.default_rng(seed)
    dx, dy = rng.uniform(0.5, 2.0, size=(n, 5)), rng.uniform(0.5, 2.0, size=(n, 5))
    mu, beta = 1e-2, 0.2
    est = spectral.FunctionalMapEstimator(laplacian_weight=mu, descriptor_commutativity_weight=beta)
    c = est.fit(bx, by, dx, dy).map_.matrix
    # the energy is quadratic: read its Hessian and gradient at 0 off torch, solve densely
    flat = torch.zeros(k * k, dtype=torch.float64)

    def energy(v: torch.Tensor) -> torch.Tensor:
        return _energy(v.reshape(k, k), bx, by, dx, dy, mu, beta)

    hess = torch.autograd.functional.hessian(energy, flat).numpy()
    grad0 = torch.autograd.functional.jacobian(energy, flat).numpy()
    dense = np.linalg.solve(hess, -grad0).reshape(k, k)
    np.testing.assert_allclose(c, dense, atol=1e-7 * np.abs(dense).max())


def test_zero_weight_gives_the_row_wise_closed_form() -> None:
    lap = spectral.graph_laplacian([[i, i + 1] for i in range(24)] + [[2, 9], [5, 17]])
    b = spectral.eigenbasis(lap, 8)
    rng = np.random.default_rng(0)
    dx, dy = rng.uniform(size=(25, 20)), rng.uniform(size=(25, 20))
    off = spectral.FunctionalMapEstimator(descriptor_commutativity_weight=0.0).fit(b, b, dx, dy)
    assert off.n_iter_ == 0
    assert np.isnan(off.descriptor_commutativity_residual_)
    norms = np.sqrt((b.mass[:, None] * dx**2).sum(axis=0))
    a, bb = b.project(dx / norms), b.project(dy / norms)
    mask = _commutativity_mask(b.values, b.values, "resolvent")
    rows = [np.linalg.solve(a @ a.T + 1e-2 * np.diag(mask[i]), (bb @ a.T)[i]) for i in range(b.k)]
    np.testing.assert_allclose(off.map_.matrix, np.array(rows), atol=1e-10)
    # a tiny weight is a small perturbation of it
    tiny = spectral.FunctionalMapEstimator(descriptor_commutativity_weight=1e-9).fit(b, b, dx, dy)
    np.testing.assert_allclose(tiny.map_.matrix, off.map_.matrix, atol=1e-6)


def test_constant_descriptors_leave_the_term_inactive() -> None:
    # multiplication by a constant is c I, which every C commutes with
    bx = spectral.eigenbasis(spectral.graph_laplacian([[i, i + 1] for i in range(14)]), 5)
    by = spectral.eigenbasis(
        spectral.graph_laplacian([[i, i + 1] for i in range(14)] + [[0, 7]]), 5
    )
    d = np.ones((15, 2))
    est = spectral.FunctionalMapEstimator().fit(bx, by, d, 3 * d)
    ref = spectral.FunctionalMapEstimator(descriptor_commutativity_weight=0).fit(bx, by, d, 3 * d)
    np.testing.assert_allclose(est.map_.matrix, ref.map_.matrix, atol=1e-12)
    assert est.descriptor_commutativity_residual_ == 0.0
    assert est.n_iter_ == 0


def test_descriptor_commutativity_improves_the_initial_mesh_map() -> None:
    # bent sheet against a re-sampled, shuffled copy: the term brings the k=20 map closer to
    # the true one than the descriptor and Laplacian terms alone
    v1, f1 = data.sheet_mesh(36, 18, jitter=0.25, seed=0)
    v2, f2 = data.sheet_mesh(36, 18, jitter=0.25, seed=1)
    perm = np.random.default_rng(2).permutation(len(v2))
    v2, f2 = v2[perm], np.argsort(perm)[f2]
    gt = spectral.nearest_neighbors(v1[:, :2], v2[:, :2])
    lx = spectral.cotangent_laplacian(data.bend_sheet(v1, 1.2), f1)
    ly = spectral.cotangent_laplacian(data.bend_sheet(v2, 2.6), f2)
    bx, by = spectral.eigenbasis(lx, 20), spectral.eigenbasis(ly, 20)
    dx = spectral.wave_kernel_signature(bx, num_energies=60)
    dy = spectral.wave_kernel_signature(by, num_energies=60)
    truth = spectral.FunctionalMap.from_pointwise(gt, bx, by).matrix
    dist = {}
    for beta in (0.0, 0.1):
        est = spectral.FunctionalMapEstimator(descriptor_commutativity_weight=beta)
        c = est.fit(bx, by, dx, dy).map_.matrix
        dist[beta] = np.linalg.norm(c - truth) / np.linalg.norm(truth)
    assert dist[0.1] < 0.8 * dist[0.0]


@pytest.mark.parametrize("bad", [-0.1, float("nan"), float("inf")])
def test_bad_weight_is_rejected(bad: float) -> None:
    b = spectral.covariance_eigenbasis(covariance=np.diag([3.0, 2.0, 1.0]))
    with pytest.raises(WeightspaceValueError, match="`descriptor_commutativity_weight`"):
        spectral.FunctionalMapEstimator(descriptor_commutativity_weight=bad).fit(
            b, b, np.eye(3), np.eye(3)
        )
