"""Laplacians of graphs, point clouds and triangle meshes, as a stiffness and a lumped mass."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Literal

import numpy as np
import scipy.sparse as sp
from scipy.spatial import cKDTree

from weightspace._errors import WeightspaceValueError
from weightspace.spectral._common import (
    ArrayLike,
    FloatArray,
    as_float_array,
    describe,
    frozen,
    tensor_to_numpy,
)

__all__ = ["Laplacian", "cotangent_laplacian", "graph_laplacian", "knn_laplacian"]

logger = logging.getLogger(__name__)

Normalization = Literal["combinatorial", "symmetric", "random_walk"]


@dataclass(frozen=True, eq=False)
class Laplacian:
    r"""A discrete Laplacian as a pair (stiffness ``W``, lumped mass ``M``).

    The operator is :math:`\Delta = M^{-1} W`, and its eigenfunctions solve the generalised
    problem

    .. math::

        W \phi_i = \lambda_i M \phi_i, \qquad \Phi^\top M \Phi = I,

    with ``W`` symmetric positive semi-definite and ``M`` diagonal positive (vertex areas for a
    mesh, degrees for the random-walk graph Laplacian, ones otherwise). This is the convention of
    pyFM (``mesh.W``, ``mesh.A``) and of Ovsjanikov et al., "Functional maps", SIGGRAPH 2012.

    Attributes:
        stiffness: Symmetric positive semi-definite ``W`` as a CSR matrix.
        mass: Diagonal of ``M`` (positive), read-only.

    Shapes:
        - stiffness: ``[n, n]``.
        - mass: ``[n]``.

    Example:
        >>> lap = graph_laplacian([[0, 1], [1, 2]], num_nodes=3)
        >>> lap.stiffness.toarray().tolist()
        [[1.0, -1.0, 0.0], [-1.0, 2.0, -1.0], [0.0, -1.0, 1.0]]
    """

    stiffness: sp.csr_matrix
    mass: FloatArray

    def __post_init__(self) -> None:
        stiffness = sp.csr_matrix(self.stiffness, dtype=np.float64)
        mass = as_float_array(self.mass, "mass", ndim=1)
        n = mass.shape[0]
        if stiffness.shape != (n, n):
            raise WeightspaceValueError(
                f"`stiffness` must be [n, n] with n = len(mass) = {n}, got {list(stiffness.shape)}"
            )
        if (mass <= 0).any():
            raise WeightspaceValueError(
                f"`mass` must be positive, got {int((mass <= 0).sum())} non-positive entries; "
                "remove isolated or degenerate vertices"
            )
        asym = abs(stiffness - stiffness.T).max() if n else 0.0
        scale = abs(stiffness).max() if stiffness.nnz else 1.0
        if asym > 1e-10 * max(scale, 1e-300):
            raise WeightspaceValueError(
                f"`stiffness` must be symmetric, got max |W - W^T| = {asym:.3g}"
            )
        object.__setattr__(self, "stiffness", stiffness)
        object.__setattr__(self, "mass", frozen(mass))

    @property
    def num_nodes(self) -> int:
        """Number of vertices / nodes / points ``n``."""
        return int(self.mass.shape[0])

    @property
    def area(self) -> float:
        """Total mass ``sum(M)`` (the surface area for a mesh)."""
        return float(self.mass.sum())

    def permute(self, perm: ArrayLike) -> Laplacian:
        """Return the Laplacian of the same domain with its points relabelled.

        Args:
            perm: ``perm[i]`` is the old index of new point ``i``.

        Returns:
            A new :class:`Laplacian` with ``W' = W[perm][:, perm]`` and ``M' = M[perm]``.

        Example:
            >>> lap = graph_laplacian([[0, 1]], num_nodes=3)
            >>> lap.permute([2, 0, 1]).stiffness.toarray()[1:, 1:].tolist()
            [[1.0, -1.0], [-1.0, 1.0]]
        """
        p = np.asarray(perm, dtype=np.int64)
        if sorted(p.tolist()) != list(range(self.num_nodes)):
            raise WeightspaceValueError(
                f"`perm` must be a permutation of 0..{self.num_nodes - 1}, got {describe(perm)}"
            )
        return Laplacian(self.stiffness[p][:, p], self.mass[p])


def _edges_from(
    edge_index: ArrayLike | None,
    adjacency: ArrayLike | sp.sparray | sp.spmatrix | None,
    num_nodes: int | None,
) -> tuple[sp.coo_matrix, int]:
    if (edge_index is None) == (adjacency is None):
        raise WeightspaceValueError(
            "pass exactly one of `edge_index` ([2, E] or [E, 2] node pairs) and `adjacency` "
            "([n, n] matrix)"
        )
    if adjacency is not None:
        dense_or_sparse = (
            adjacency
            if isinstance(adjacency, (sp.sparray, sp.spmatrix))
            else as_float_array(adjacency, "adjacency", ndim=2)
        )
        adj = sp.coo_matrix(dense_or_sparse, dtype=np.float64)
        if adj.shape[0] != adj.shape[1]:
            raise WeightspaceValueError(f"`adjacency` must be square, got {list(adj.shape)}")
        return adj, int(adj.shape[0])
    ei = np.asarray(tensor_to_numpy(edge_index))
    if ei.ndim != 2 or 2 not in ei.shape:
        raise WeightspaceValueError(
            f"`edge_index` must have shape [2, E] (PyG) or [E, 2], got {describe(edge_index)}"
        )
    if ei.shape[0] != 2:
        ei = ei.T
    ei = ei.astype(np.int64)
    n = int(ei.max()) + 1 if ei.size else 0
    if num_nodes is not None:
        if ei.size and ei.max() >= num_nodes:
            raise WeightspaceValueError(
                f"`edge_index` refers to node {int(ei.max())} but `num_nodes` is {num_nodes}"
            )
        n = num_nodes
    if ei.size and ei.min() < 0:
        raise WeightspaceValueError("`edge_index` must hold non-negative node indices")
    weights = np.ones(ei.shape[1])
    return sp.coo_matrix((weights, (ei[0], ei[1])), shape=(n, n)), n


def graph_laplacian(
    edge_index: ArrayLike | None = None,
    *,
    adjacency: ArrayLike | sp.sparray | sp.spmatrix | None = None,
    num_nodes: int | None = None,
    edge_weight: ArrayLike | None = None,
    normalization: Normalization = "combinatorial",
) -> Laplacian:
    r"""Return the Laplacian of an undirected graph.

    The graph is symmetrised (``A <- max(A, A^T)`` for 0/1 edges, ``(A + A^T) / 2`` for weights)
    and self-loops are dropped. With degrees :math:`D = \mathrm{diag}(A \mathbf{1})`:

    .. math::

        \text{combinatorial: } W = D - A,\ M = I; \quad
        \text{symmetric: } W = I - D^{-1/2} A D^{-1/2},\ M = I; \quad
        \text{random\_walk: } W = D - A,\ M = D.

    The random-walk form is the generalised problem whose eigenvectors are those of
    :math:`D^{-1}(D - A)`, orthonormal for the ``D``-inner product.

    Args:
        edge_index: Node pairs, ``[2, E]`` (PyTorch Geometric) or ``[E, 2]``.
        adjacency: A dense or scipy sparse ``[n, n]`` adjacency, instead of ``edge_index``.
        num_nodes: Number of nodes (defaults to ``max(edge_index) + 1``).
        edge_weight: Non-negative weight per edge (with ``edge_index`` only).
        normalization: ``"combinatorial"``, ``"symmetric"`` or ``"random_walk"``.

    Returns:
        The :class:`Laplacian`.

    Raises:
        WeightspaceValueError: on malformed edges, negative weights, an unknown normalisation,
            or isolated nodes with a normalised Laplacian.

    Shapes:
        - edge_index: ``[2, E]`` or ``[E, 2]``; edge_weight: ``[E]``.
        - output: ``stiffness [n, n]``, ``mass [n]``.

    Example:
        >>> lap = graph_laplacian([[0, 1, 2], [1, 2, 0]], normalization="symmetric")
        >>> lap.stiffness.diagonal().round(3).tolist()
        [1.0, 1.0, 1.0]
    """
    if normalization not in ("combinatorial", "symmetric", "random_walk"):
        raise WeightspaceValueError(
            f"`normalization` must be 'combinatorial', 'symmetric' or 'random_walk', got "
            f"{normalization!r}"
        )
    adj, n = _edges_from(edge_index, adjacency, num_nodes)
    if edge_weight is not None:
        if adjacency is not None:
            raise WeightspaceValueError("`edge_weight` goes with `edge_index`, not `adjacency`")
        w = as_float_array(edge_weight, "edge_weight", ndim=1)
        if w.shape[0] != adj.nnz:
            raise WeightspaceValueError(
                f"`edge_weight` must hold one weight per edge ({adj.nnz}), got {w.shape[0]}"
            )
        adj = sp.coo_matrix((w, (adj.row, adj.col)), shape=adj.shape)
    if adj.nnz and adj.data.min() < 0:
        raise WeightspaceValueError("edge weights must be non-negative")
    a = sp.csr_matrix(adj)
    a.setdiag(0)
    a.eliminate_zeros()
    a = (a + a.T) * 0.5 if edge_weight is not None or adjacency is not None else a.maximum(a.T)
    deg = np.asarray(a.sum(axis=1)).ravel()
    if normalization == "combinatorial":
        return Laplacian(sp.diags(deg) - a, np.ones(n))
    if (deg <= 0).any():
        raise WeightspaceValueError(
            f"{int((deg <= 0).sum())} nodes are isolated; a {normalization!r} Laplacian needs "
            "positive degrees (drop them or use normalization='combinatorial')"
        )
    if normalization == "symmetric":
        s = sp.diags(1.0 / np.sqrt(deg))
        return Laplacian(sp.identity(n, format="csr") - s @ a @ s, np.ones(n))
    return Laplacian(sp.diags(deg) - a, deg)


def knn_laplacian(points: ArrayLike, k: int = 10, *, bandwidth: float | None = None) -> Laplacian:
    r"""Return a point-cloud Laplacian from a symmetrised k-nearest-neighbour graph.

    Edges join each point to its ``k`` nearest neighbours, weighted by a Gaussian kernel
    :math:`w_{ij} = \exp(-\|x_i - x_j\|^2 / h^2)`, with ``h`` the mean distance to the
    ``k``-th neighbour unless given. The result is the random-walk form
    (``W = D - A``, ``M = D``), whose spectrum approximates the Laplace–Beltrami operator of the
    sampled manifold up to scale (Belkin & Niyogi, "Laplacian eigenmaps", Neural Computation
    2003).

    Args:
        points: Point coordinates.
        k: Number of neighbours (``1 <= k < n``).
        bandwidth: Kernel width ``h`` (positive), or ``None`` for the automatic choice.

    Returns:
        The :class:`Laplacian`.

    Raises:
        WeightspaceValueError: if ``points`` is not ``[n, d]`` with ``n > k`` or ``bandwidth``
            is not positive.

    Shapes:
        - points: ``[n, d]``.
        - output: ``stiffness [n, n]``, ``mass [n]``.

    Example:
        >>> import numpy as np
        >>> lap = knn_laplacian(np.random.default_rng(0).normal(size=(50, 3)), k=5)
        >>> lap.num_nodes
        50
    """
    x = as_float_array(points, "points", ndim=2)
    n = x.shape[0]
    if not 1 <= k < n:
        raise WeightspaceValueError(f"`k` must be in [1, {n - 1}] for {n} points, got {k}")
    dist, idx = cKDTree(x).query(x, k=k + 1)
    dist, idx = dist[:, 1:], idx[:, 1:]
    h = float(dist[:, -1].mean()) if bandwidth is None else float(bandwidth)
    if not h > 0:
        raise WeightspaceValueError(f"`bandwidth` must be positive, got {bandwidth!r}")
    w = np.exp(-(dist**2) / h**2).ravel()
    rows = np.repeat(np.arange(n), k)
    a = sp.csr_matrix((w, (rows, idx.ravel())), shape=(n, n))
    a = a.maximum(a.T)
    deg = np.asarray(a.sum(axis=1)).ravel()
    return Laplacian(sp.diags(deg) - a, deg)


def cotangent_laplacian(vertices: ArrayLike, faces: ArrayLike) -> Laplacian:
    r"""Return the cotangent Laplace–Beltrami operator of a triangle mesh with lumped mass.

    .. math::

        W_{ij} = -\tfrac12 (\cot\alpha_{ij} + \cot\beta_{ij}),\quad
        W_{ii} = -\sum_{j \ne i} W_{ij},\quad
        M_{ii} = \tfrac13 \sum_{f \ni i} \mathrm{area}(f),

    where :math:`\alpha_{ij}, \beta_{ij}` are the angles opposite edge ``ij`` (Pinkall &
    Polthier 1993; Meyer et al. 2003). Boundary edges get one cotangent (Neumann boundary).
    Same operator as pyFM's ``TriMesh.W`` / ``TriMesh.A`` (lumped areas).

    Args:
        vertices: Vertex positions.
        faces: Triangles as vertex indices.

    Returns:
        The :class:`Laplacian` (``mass.sum()`` is the surface area).

    Raises:
        WeightspaceValueError: on malformed arrays, indices out of range, or vertices that no
            triangle uses.

    Shapes:
        - vertices: ``[n, 3]`` (or ``[n, 2]``); faces: ``[f, 3]``.
        - output: ``stiffness [n, n]``, ``mass [n]``.

    Example:
        >>> lap = cotangent_laplacian([[0, 0, 0], [1, 0, 0], [0, 1, 0]], [[0, 1, 2]])
        >>> round(lap.area, 6)
        0.5
    """
    v = as_float_array(vertices, "vertices", ndim=2)
    if v.shape[1] == 2:
        v = np.concatenate([v, np.zeros((v.shape[0], 1))], axis=1)
    if v.shape[1] != 3:
        raise WeightspaceValueError(f"`vertices` must be [n, 3], got {list(v.shape)}")
    f = np.asarray(tensor_to_numpy(faces))
    if f.ndim != 2 or f.shape[1] != 3 or not np.issubdtype(f.dtype, np.integer):
        raise WeightspaceValueError(
            f"`faces` must be an integer array [f, 3], got {describe(faces)}"
        )
    f = f.astype(np.int64)
    n = v.shape[0]
    if f.size and (f.min() < 0 or f.max() >= n):
        raise WeightspaceValueError(f"`faces` must index vertices in [0, {n}), got {f.max()}")
    p0, p1, p2 = v[f[:, 0]], v[f[:, 1]], v[f[:, 2]]
    cross = np.cross(p1 - p0, p2 - p0)
    dbl_area = np.linalg.norm(cross, axis=1)
    if (dbl_area <= 0).any():
        raise WeightspaceValueError(
            f"{int((dbl_area <= 0).sum())} faces have zero area; remove degenerate triangles"
        )
    rows, cols, vals = [], [], []
    for a, b, c in ((0, 1, 2), (1, 2, 0), (2, 0, 1)):
        # angle at vertex c, opposite edge (a, b)
        e1 = v[f[:, a]] - v[f[:, c]]
        e2 = v[f[:, b]] - v[f[:, c]]
        cot = np.einsum("ij,ij->i", e1, e2) / dbl_area
        rows += [f[:, a], f[:, b]]
        cols += [f[:, b], f[:, a]]
        vals += [-0.5 * cot, -0.5 * cot]
    off = sp.csr_matrix(
        (np.concatenate(vals), (np.concatenate(rows), np.concatenate(cols))), shape=(n, n)
    )
    diag = -np.asarray(off.sum(axis=1)).ravel()
    stiffness = off + sp.diags(diag)
    mass = np.bincount(f.ravel(), weights=np.repeat(dbl_area / 6.0, 3), minlength=n)
    if (mass <= 0).any():
        raise WeightspaceValueError(
            f"{int((mass <= 0).sum())} vertices belong to no triangle; remove unreferenced "
            "vertices first"
        )
    return Laplacian(stiffness, mass.astype(np.float64))
