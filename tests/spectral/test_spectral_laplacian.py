from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
import scipy.sparse as sp
from hypothesis import given, settings
from hypothesis import strategies as st

from weightspace import WeightspaceValueError, data, spectral


@settings(max_examples=20)
@given(n=st.integers(3, 14), seed=st.integers(0, 10_000))
def test_graph_laplacians_are_psd_with_constant_kernel(
    graphs: SimpleNamespace, n: int, seed: int
) -> None:
    a = graphs.random_graph(n, seed)
    comb = spectral.graph_laplacian(adjacency=a)
    np.testing.assert_allclose(comb.stiffness @ np.ones(n), 0.0, atol=1e-12)
    for norm in ("combinatorial", "symmetric", "random_walk"):
        lap = spectral.graph_laplacian(adjacency=a, normalization=norm)  # type: ignore[arg-type]
        vals = np.linalg.eigvalsh(lap.stiffness.toarray())
        assert vals.min() > -1e-10


def test_edge_index_forms_agree_and_are_symmetrised() -> None:
    pyg = spectral.graph_laplacian(np.array([[0, 1, 2], [1, 2, 3]]))
    rows = spectral.graph_laplacian(np.array([[0, 1], [1, 2], [2, 3]]))
    both = spectral.graph_laplacian(np.array([[0, 1, 2, 1], [1, 2, 3, 0]]))
    for lap in (rows, both):
        np.testing.assert_array_equal(lap.stiffness.toarray(), pyg.stiffness.toarray())
    assert pyg.stiffness.toarray()[1].tolist() == [-1.0, 2.0, -1.0, 0.0]


def test_random_walk_mass_is_degree() -> None:
    lap = spectral.graph_laplacian([[0, 1], [1, 2]], normalization="random_walk")
    assert lap.mass.tolist() == [1.0, 2.0, 1.0]


def test_cotangent_laplacian_of_flat_sheet_reproduces_linear_functions() -> None:
    v, f = data.sheet_mesh(9, 6, holes=False, jitter=0.2, seed=3)
    lap = spectral.cotangent_laplacian(v, f)
    assert lap.area == pytest.approx(2.0, rel=1e-12)
    boundary = (v[:, 0] < 1e-9) | (v[:, 0] > 2 - 1e-9) | (v[:, 1] < 1e-9) | (v[:, 1] > 1 - 1e-9)
    # the cotangent Laplacian of a linear function vanishes at interior vertices
    lin = 0.3 * v[:, 0] - 0.7 * v[:, 1]
    np.testing.assert_allclose((lap.stiffness @ lin)[~boundary], 0.0, atol=1e-12)


def test_knn_laplacian_is_symmetric_and_sized() -> None:
    pts = np.random.default_rng(0).normal(size=(40, 3))
    lap = spectral.knn_laplacian(pts, k=6)
    assert abs(lap.stiffness - lap.stiffness.T).max() == 0
    assert lap.num_nodes == 40


def test_laplacian_errors_name_the_argument() -> None:
    with pytest.raises(WeightspaceValueError, match="exactly one of `edge_index`"):
        spectral.graph_laplacian()
    with pytest.raises(WeightspaceValueError, match="`normalization` must be"):
        spectral.graph_laplacian([[0, 1]], normalization="bad")  # type: ignore[arg-type]
    with pytest.raises(WeightspaceValueError, match="isolated"):
        spectral.graph_laplacian([[0, 1]], num_nodes=3, normalization="symmetric")
    with pytest.raises(WeightspaceValueError, match="zero area"):
        spectral.cotangent_laplacian([[0, 0, 0], [1, 0, 0], [2, 0, 0]], [[0, 1, 2]])
    with pytest.raises(WeightspaceValueError, match="`stiffness` must be symmetric"):
        spectral.Laplacian(sp.csr_matrix(np.array([[1.0, 2.0], [0.0, 1.0]])), np.ones(2))
    with pytest.raises(WeightspaceValueError, match="`k` must be in"):
        spectral.knn_laplacian(np.zeros((3, 2)), k=5)
