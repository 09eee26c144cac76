from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from weightspace import WeightspaceValueError, data, spectral


@settings(max_examples=20)
@given(
    n=st.integers(3, 14),
    seed=st.integers(0, 10_000),
    norm=st.sampled_from(["combinatorial", "symmetric", "random_walk"]),
)
def test_eigenbasis_is_mass_orthonormal_and_solves_the_problem(
    graphs: SimpleNamespace, n: int, seed: int, norm: str
) -> None:
    lap = spectral.graph_laplacian(adjacency=graphs.random_graph(n, seed), normalization=norm)  # type: ignore[arg-type]
    basis = spectral.eigenbasis(lap, n)
    np.testing.assert_allclose(basis.gram(), np.eye(n), atol=1e-10)
    w = lap.stiffness.toarray()
    resid = w @ basis.vectors - lap.mass[:, None] * basis.vectors * basis.values[None, :]
    assert abs(resid).max() < 1e-9 * max(1.0, abs(basis.values).max())
    assert (np.diff(basis.values) >= -1e-12).all()


def test_arpack_and_dense_agree_on_a_mesh() -> None:
    v, f = data.sheet_mesh(24, 14, jitter=0.2, seed=1)
    lap = spectral.cotangent_laplacian(v, f)
    dense = spectral.eigenbasis(lap, 12, method="dense")
    sparse = spectral.eigenbasis(lap, 12, method="arpack", seed=3)
    np.testing.assert_allclose(sparse.values, dense.values, rtol=1e-8, atol=1e-10)
    np.testing.assert_allclose(sparse.gram(), np.eye(12), atol=1e-10)
    # same sign convention, simple spectrum -> same vectors
    np.testing.assert_allclose(sparse.vectors, dense.vectors, atol=1e-6)


@settings(max_examples=20)
@given(n=st.integers(4, 14), seed=st.integers(0, 10_000))
def test_sign_convention_is_relabelling_invariant(
    graphs: SimpleNamespace, n: int, seed: int
) -> None:
    a = graphs.random_graph(n, seed)
    perm = np.random.default_rng(seed + 1).permutation(n)
    b1 = spectral.eigenbasis(spectral.graph_laplacian(adjacency=a), n)
    b2 = spectral.eigenbasis(spectral.graph_laplacian(adjacency=a[perm][:, perm]), n)
    simple = [g[0] for g in b1.eigenspaces(1e-6) if len(g) == 1]
    np.testing.assert_allclose(b2.vectors[:, simple], b1.vectors[perm][:, simple], atol=1e-7)


def test_degenerate_eigenspaces_are_reported_and_completed() -> None:
    cycle = spectral.graph_laplacian([[i, (i + 1) % 8] for i in range(8)])
    basis = spectral.eigenbasis(cycle, 8)
    assert basis.eigenspaces() == [[0], [1, 2], [3, 4], [5, 6], [7]]
    assert spectral.eigenbasis(cycle, 2, complete_eigenspaces=True).k == 3
    assert spectral.eigenbasis(cycle, 3, complete_eigenspaces=True).k == 3


def test_covariance_eigenbasis_descending_and_shrinkage() -> None:
    x = np.random.default_rng(0).normal(size=(30, 5)) * np.array([3.0, 2.0, 1.0, 0.5, 0.1])
    plain = spectral.covariance_eigenbasis(x)
    assert plain.order == "descending"
    assert (np.diff(plain.values) <= 1e-12).all()
    shrunk = spectral.covariance_eigenbasis(x, shrinkage="ledoit-wolf")
    assert shrunk.values[0] < plain.values[0]
    assert shrunk.values[-1] > plain.values[-1]
    assert shrunk.values.sum() == pytest.approx(plain.values.sum())
    np.testing.assert_allclose(abs(shrunk.vectors.T @ plain.vectors), np.eye(5), atol=1e-8)


def test_basis_is_immutable_and_validated() -> None:
    basis = spectral.covariance_eigenbasis(covariance=np.diag([2.0, 1.0]))
    with pytest.raises(ValueError, match="read-only"):
        basis.vectors[0, 0] = 5.0
    with pytest.raises(AttributeError):
        basis.values = np.zeros(2)  # type: ignore[misc]
    with pytest.raises(WeightspaceValueError, match="`k` must be in"):
        spectral.eigenbasis(spectral.graph_laplacian([[0, 1]]), 3)
    with pytest.raises(WeightspaceValueError, match="`shrinkage` must be"):
        spectral.covariance_eigenbasis(covariance=np.eye(2), shrinkage=2.0)
