"""Shared helpers for the spectral tests: small random graphs with known structure."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest

from weightspace import spectral


def random_graph(n: int, seed: int) -> np.ndarray:
    """A connected weighted graph on n nodes (a path plus random extra edges), dense adjacency."""
    rng = np.random.default_rng(seed)
    a = np.zeros((n, n))
    for i in range(n - 1):
        a[i, i + 1] = rng.uniform(0.2, 1.0)
    extra = rng.uniform(size=(n, n)) < 0.3
    a[extra] = rng.uniform(0.2, 1.0, size=int(extra.sum()))
    a = np.triu(a, 1)
    return a + a.T


def full_basis(adjacency: np.ndarray, normalization: str = "combinatorial") -> spectral.Eigenbasis:
    lap = spectral.graph_laplacian(adjacency=adjacency, normalization=normalization)
    return spectral.eigenbasis(lap, adjacency.shape[0])


@pytest.fixture(scope="session")
def graphs() -> SimpleNamespace:
    """The helpers above (test modules cannot import conftest under importlib mode)."""
    return SimpleNamespace(random_graph=random_graph, full_basis=full_basis)
