"""The orientation-preserving term of the functional-map estimator (Ren et al. 2018)."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from weightspace import WeightspaceValueError, spectral
from weightspace.spectral._descriptors import _multiplication_operators
from weightspace.spectral._estimator import _NormalEquations
from weightspace.spectral._orientation import orientation_operators


def _bumpy_grid(nu: int = 9, nv: int = 7, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """A non-planar, asymmetric grid surface with consistently wound triangles."""
    rng = np.random.default_rng(seed)
    x, y = np.meshgrid(np.linspace(0, 1.6, nu), np.linspace(0, 1, nv))
    x = x + rng.uniform(-0.02, 0.02, x.shape)
    z = 0.15 * np.sin(3 * x + 0.4) * np.cos(2 * y + 0.7) + 0.1 * x * y**2
    v = np.c_[x.ravel(), y.ravel(), z.ravel()]
    i = np.arange(nu * nv).reshape(nv, nu)
    a, b, c, d = i[:-1, :-1].ravel(), i[:-1, 1:].ravel(), i[1:, 1:].ravel(), i[1:, :-1].ravel()
    return v, np.r_[np.c_[a, b, c], np.c_[a, c, d]]


def _per_face_operator(v: np.ndarray, f: np.ndarray, basis: Any, fn: np.ndarray) -> np.ndarray:
    """G = Phi^T M O Phi with O g = vertex average of <n x grad fn, grad g>, face by face."""
    n = v.shape[0]
    out_vertex = np.zeros((n, basis.k))
    for tri in f:
        p = v[tri]
        cross = np.cross(p[1] - p[0], p[2] - p[0])
        area = np.linalg.norm(cross) / 2
        normal = cross / (2 * area)
        # gradient of the hat function of corner i: n x (opposite edge) / (2 area)
        grads = [np.cross(normal, p[(i + 2) % 3] - p[(i + 1) % 3]) / (2 * area) for i in range(3)]
        grad_f = sum(fn[tri[i]] * grads[i] for i in range(3))
        rotated = np.cross(normal, grad_f)
        h = sum(np.outer([rotated @ grads[i]], basis.vectors[tri[i]]) for i in range(3))[0]
        for vertex in tri:
            out_vertex[vertex] += area / 3 * h
    lumped = out_vertex / basis.mass[:, None]  # O Phi
    result: np.ndarray = basis.vectors.T @ (basis.mass[:, None] * lumped)
    return result


def test_orientation_operator_matches_the_per_face_definition() -> None:
    v, f = _bumpy_grid()
    basis = spectral.eigenbasis(spectral.cotangent_laplacian(v, f), 12)
    fns = np.c_[v[:, 0] * v[:, 2], np.sin(4 * v[:, 1]), v[:, 0] ** 2]
    fast = orientation_operators(basis, f, fns)
    for d in range(fns.shape[1]):
        np.testing.assert_allclose(
            fast[d], _per_face_operator(v, f, basis, fns[:, d]), atol=1e-12, rtol=1e-10
        )
    # df ^ dg is antisymmetric: with a full basis, G_f is skew up to the boundary terms, and
    # G of a constant function is zero
    np.testing.assert_allclose(orientation_operators(basis, f, np.ones((len(v), 1))), 0, atol=1e-13)
    # flipping every triangle's winding flips the operator
    np.testing.assert_allclose(orientation_operators(basis, f[:, ::-1], fns), -fast, atol=1e-13)


@settings(max_examples=15, deadline=None)
@given(seed=st.integers(0, 10_000), ky=st.integers(2, 7), kx=st.integers(2, 7))
def test_energy_gradient_matches_finite_differences(seed: int, ky: int, kx: int) -> None:
    rng = np.random.default_rng(seed)
    a, b = rng.normal(size=(kx, 5)), rng.normal(size=(ky, 5))
    weights = rng.uniform(0, 1, size=(ky, kx))
    sym_p = rng.normal(size=(3, kx, kx))
    sym_q = rng.normal(size=(3, ky, ky))
    sym_p, sym_q = sym_p + sym_p.transpose(0, 2, 1), sym_q + sym_q.transpose(0, 2, 1)
    orient_p, orient_q = rng.normal(size=(2, kx, kx)), rng.normal(size=(2, ky, ky))
    for p, q, symmetric in (
        (sym_p, sym_q, True),
        (orient_p, orient_q, False),
        (np.r_[sym_p, 0.7 * orient_p], np.r_[sym_q, 0.7 * orient_q], False),
    ):
        system = _NormalEquations(a, b, weights)
        system.add_commutativity(p, q, 0.3, symmetric=symmetric)
        c = rng.normal(size=(ky, kx))
        grad = 2 * (system.apply(c) - system.rhs)
        eps = 1e-6
        for _ in range(3):
            d = rng.normal(size=c.shape)
            fd = (system.energy(c + eps * d, b, a) - system.energy(c - eps * d, b, a)) / (2 * eps)
            assert fd == pytest.approx(float((grad * d).sum()), rel=1e-6, abs=1e-6)
        # the preconditioner's blocks are the diagonal blocks of the Hessian
        blocks = system.blocks()
        for i in range(ky):
            for j in range(kx):
                unit = np.zeros((ky, kx))
                unit[i, j] = 1.0
                np.testing.assert_allclose(system.apply(unit)[i], blocks[i, j], atol=1e-10)


def _isometric_pair(
    mirror: bool = False,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    v, f = _bumpy_grid()
    perm = np.random.default_rng(3).permutation(len(v))
    rotation = np.linalg.qr(np.random.default_rng(4).normal(size=(3, 3)))[0]
    rotation *= np.sign(np.linalg.det(rotation))  # a proper rotation
    vy = (v @ rotation.T)[perm]
    fy = np.argsort(perm)[f]
    if mirror:
        # a mirror image, its triangles rewound so that their normals point to the same side
        # of the surface as before (as a scanner would wind them): the map reverses orientation
        vy = vy * np.array([-1.0, 1.0, 1.0])
        fy = fy[:, ::-1]
    return v, f, vy, fy, perm


@pytest.mark.parametrize("weight", [None, 0.1, 1.0, 10.0])
def test_exact_isometry_with_a_full_basis_keeps_the_map_orthogonal(weight: float | None) -> None:
    v, f, vy, fy, perm = _isometric_pair()
    bx = spectral.eigenbasis(spectral.cotangent_laplacian(v, f), len(v))
    by = spectral.eigenbasis(spectral.cotangent_laplacian(vy, fy), len(v))
    dx = spectral.wave_kernel_signature(bx, num_energies=40)
    dy = spectral.wave_kernel_signature(by, num_energies=40)
    est = spectral.FunctionalMapEstimator(orientation_weight=weight).fit(
        bx, by, dx, dy, source_faces=f, target_faces=fy
    )
    c = est.map_.matrix
    np.testing.assert_allclose(c.T @ c, np.eye(len(v)), atol=1e-6)
    truth = spectral.FunctionalMap.from_pointwise(perm, bx, by).matrix
    np.testing.assert_allclose(c, truth, atol=1e-6)
    assert est.orientation_weight_ == (1.0 if weight is None else weight)
    assert est.orientation_residual_ < 1e-6
    np.testing.assert_array_equal(est.map_.to_pointwise(), perm)


def test_orientation_tells_a_mirror_image_apart() -> None:
    v, f, vy, fy, perm = _isometric_pair(mirror=True)
    bx = spectral.eigenbasis(spectral.cotangent_laplacian(v, f), 20)
    by = spectral.eigenbasis(spectral.cotangent_laplacian(vy, fy), 20)
    dx = spectral.wave_kernel_signature(bx, num_energies=30)
    dy = spectral.wave_kernel_signature(by, num_energies=30)
    truth = spectral.FunctionalMap.from_pointwise(perm, bx, by).matrix
    fits = {
        o: spectral.FunctionalMapEstimator(orientation_weight=1.0, orientation=o).fit(
            bx, by, dx, dy, source_faces=f, target_faces=fy
        )
        for o in ("preserving", "reversing")
    }
    # the true (reversing) map commutes with the reversed operators, not the preserved ones
    assert fits["reversing"].orientation_residual_ < 0.2 * fits["preserving"].orientation_residual_
    err = {o: np.abs(e.map_.matrix - truth).max() for o, e in fits.items()}
    assert err["reversing"] < err["preserving"]


def test_faces_and_weights_are_checked() -> None:
    v, f, vy, fy, _ = _isometric_pair()
    bx = spectral.eigenbasis(spectral.cotangent_laplacian(v, f), 10)
    by = spectral.eigenbasis(spectral.cotangent_laplacian(vy, fy), 10)
    dx = spectral.wave_kernel_signature(bx, num_energies=10)
    dy = spectral.wave_kernel_signature(by, num_energies=10)
    est = spectral.FunctionalMapEstimator
    with pytest.raises(WeightspaceValueError, match=r"`orientation_weight=1.0` needs the meshes"):
        est(orientation_weight=1.0).fit(bx, by, dx, dy)
    with pytest.raises(WeightspaceValueError, match="`source_faces` was given alone"):
        est().fit(bx, by, dx, dy, source_faces=f)
    with pytest.raises(WeightspaceValueError, match="`target_faces` was given alone"):
        est().fit(bx, by, dx, dy, target_faces=fy)
    with pytest.raises(WeightspaceValueError, match="`orientation_weight` must be finite"):
        est(orientation_weight=-1.0).fit(bx, by, dx, dy, source_faces=f, target_faces=fy)
    with pytest.raises(WeightspaceValueError, match="`orientation` must be 'preserving'"):
        est(orientation="flip").fit(bx, by, dx, dy)  # type: ignore[arg-type]
    with pytest.raises(WeightspaceValueError, match=r"`target_faces` must be a non-empty integer"):
        est().fit(bx, by, dx, dy, source_faces=f, target_faces=fy[:, :2])
    with pytest.raises(WeightspaceValueError, match=r"`source_faces` must index the basis' 63"):
        est().fit(bx, by, dx, dy, source_faces=f + 1, target_faces=fy)
    # without faces the default is the former estimator exactly; weight 0 ignores no argument
    plain = est().fit(bx, by, dx, dy)
    off = est(orientation_weight=0.0).fit(bx, by, dx, dy, source_faces=f, target_faces=fy)
    np.testing.assert_array_equal(plain.map_.matrix, off.map_.matrix)
    assert plain.orientation_weight_ == 0.0
    assert np.isnan(plain.orientation_residual_)
    ops = _multiplication_operators(bx, dx[:, :2])
    assert ops.shape == (2, 10, 10)
