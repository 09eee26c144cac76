"""The functional map: a matrix between two eigenbases, with conversions and refinement."""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import scipy.linalg
import scipy.sparse as sp
from scipy.spatial import cKDTree

from weightspace._errors import ShapeMismatchError, WeightspaceValueError
from weightspace.spectral._basis import Eigenbasis
from weightspace.spectral._common import (
    ArrayLike,
    FloatArray,
    IntArray,
    as_float_array,
    as_index_array,
    blas_threads,
    frozen,
)

__all__ = [
    "FunctionalMap",
    "correspondence_error",
    "nearest_neighbors",
    "zoomout",
]

logger = logging.getLogger(__name__)


#: Queries below which the k-d tree searches on one thread (threads cost more than they save).
PARALLEL_QUERIES = 20000

NeighborMethod = Literal["auto", "kdtree", "brute"]
Sampling = Literal["area", "uniform"]
Select = Literal["coverage", "last"]

#: Final passes on all points that :func:`zoomout` runs by default on small enough shapes.
FINAL_PASSES = 4
#: Point pairs (``n_X * n_Y``) up to which :func:`zoomout` runs the final passes by default.
FINAL_PASSES_MAX_PAIRS = 1_000_000_000


def default_workers(num_queries: int) -> int:
    """Threads for a k-d tree search of ``num_queries`` points: one below 20,000, else all.

    Splitting a small search across threads costs more than it saves (on a loaded machine it
    made ZoomOut's searches slower), so only large searches use every core.
    """
    if num_queries < PARALLEL_QUERIES:
        return 1
    return max(1, min(os.cpu_count() or 1, 8))


def nearest_neighbors(
    reference: ArrayLike,
    queries: ArrayLike,
    *,
    method: NeighborMethod = "auto",
    workers: int | None = None,
) -> IntArray:
    """Return, for each query row, the index of its nearest reference row (Euclidean).

    ``"kdtree"`` builds a :class:`scipy.spatial.cKDTree` and searches it exactly in
    ``float64``; it is fast in low dimensions. ``"brute"`` compares all pairs by ``float32``
    matrix products in chunks (near-ties closer than ``float32`` round-off may then resolve
    either way); its cost is predictable and it uses the BLAS threads. In 50 to 100
    dimensions (ZoomOut's spectral embeddings), the k-d tree was as slow or slower than brute
    force once the two point sets were not nearly aligned (at 49k points and ``k = 100``,
    loaded machine: 56-166 s against 80-104 s). ``"auto"`` uses the k-d tree for up to 12
    columns and brute force above.

    Args:
        reference: Points searched.
        queries: Points whose nearest reference point is wanted.
        method: ``"auto"``, ``"kdtree"`` or ``"brute"``.
        workers: Threads of the search (the k-d tree's, or the BLAS threads of the brute
            force; ``-1``: all cores); ``None`` uses one thread below 20,000 queries and all
            cores (at most 8) above.

    Returns:
        ``int64`` indices into ``reference``.

    Raises:
        WeightspaceValueError: if the dimensions differ, ``reference`` is empty, or
            ``method`` or ``workers`` is invalid.

    Shapes:
        - reference: ``[n, d]``; queries: ``[m, d]``; output: ``[m]``.

    Example:
        >>> import numpy as np
        >>> nearest_neighbors(np.array([[0.0], [1.0]]), np.array([[0.9], [0.2]])).tolist()
        [1, 0]
    """
    ref = as_float_array(reference, "reference", ndim=2)
    qry = as_float_array(queries, "queries", ndim=2)
    if ref.shape[1] != qry.shape[1] or ref.shape[0] == 0:
        raise WeightspaceValueError(
            f"`reference` [n, d] and `queries` [m, d] must share d and n > 0, got "
            f"{list(ref.shape)} and {list(qry.shape)}"
        )
    if method not in ("auto", "kdtree", "brute"):
        raise WeightspaceValueError(f"`method` must be 'auto', 'kdtree' or 'brute', got {method!r}")
    if workers is not None and (workers == 0 or workers < -1):
        raise WeightspaceValueError(
            f"`workers` must be a positive thread count, -1 (all cores) or None, got {workers}"
        )
    threads = default_workers(qry.shape[0]) if workers is None else workers
    if method == "brute" or (method == "auto" and ref.shape[1] > 12):
        with blas_threads(None if threads == -1 else threads):
            return _nearest_brute(ref, qry)
    return _nearest_kdtree(ref, qry, threads)


def _nearest_kdtree(ref: FloatArray, qry: FloatArray, workers: int) -> IntArray:
    _, idx = cKDTree(ref).query(qry, k=1, workers=workers)
    return np.asarray(idx, dtype=np.int64)


def _nearest_brute(ref: FloatArray, qry: FloatArray) -> IntArray:
    """Exact nearest neighbours by float32 matrix products, in chunks of queries.

    ``argmin |q - r|^2 = argmax (q . r - |r|^2 / 2)``: one product of ``[q, 1]`` with
    ``[r, -|r|^2 / 2]`` per chunk, then an arg-max. A chunk's scores hold about 4 million
    entries (16 MB): on 5k-50k reference points (one thread) that was 18-30 % faster than
    20 million, whose scores are written to memory and read back by the arg-max.
    """
    r32 = np.ascontiguousarray(ref, dtype=np.float32)
    half_sq = -0.5 * (r32.astype(np.float64) ** 2).sum(axis=1)
    r_aug = np.ascontiguousarray(np.c_[r32, half_sq.astype(np.float32)].T)  # [d + 1, n]
    q_aug = np.ascontiguousarray(np.c_[qry, np.ones(qry.shape[0])], dtype=np.float32)
    out = np.empty(qry.shape[0], dtype=np.int64)
    chunk = max(16, int(4e6 // max(r32.shape[0], 1)))
    for start in range(0, q_aug.shape[0], chunk):
        out[start : start + chunk] = (q_aug[start : start + chunk] @ r_aug).argmax(axis=1)
    return out


@dataclass(frozen=True, eq=False)
class FunctionalMap:
    r"""A linear map between function spaces, in the coordinates of two eigenbases.

    A correspondence :math:`\Pi \in \mathbb{R}^{n_Y \times n_X}` transports functions from ``X``
    to ``Y`` (:math:`g = \Pi f`); in the bases :math:`\Phi_X`, :math:`\Phi_Y` it reads

    .. math::

        C = \Phi_Y^{+} \Pi \Phi_X = \Phi_Y^\top M_Y \Pi \Phi_X \in \mathbb{R}^{k_Y \times k_X},

    where :math:`\Phi_Y^{+} = \Phi_Y^\top M_Y` is the ``M``-pseudo-inverse of an
    ``M``-orthonormal basis (Ovsjanikov et al., "Functional maps: a flexible representation of
    maps between shapes", SIGGRAPH 2012). For a point map, ``Pi[j, p2p[j]] = 1``: vertex ``j``
    of ``Y`` corresponds to vertex ``p2p[j]`` of ``X`` (pyFM's ``p2p_21`` convention, and its
    ``FM_12`` is our ``matrix``). For neural encodings (Guth & Ménard 2024), ``X`` and ``Y``
    are the channels of two networks, the bases are weight-covariance eigenvectors and
    :math:`\Pi` is the rotation that aligns their activations (see
    :func:`neural_encoding_map`).

    The object is immutable; every operation returns a new one.

    Attributes:
        matrix: ``C``, read-only.
        source: Basis on ``X`` (``k_X`` functions).
        target: Basis on ``Y`` (``k_Y`` functions).

    Shapes:
        - matrix: ``[k_Y, k_X]``.

    Example:
        >>> import numpy as np
        >>> from weightspace.spectral import eigenbasis, graph_laplacian
        >>> basis = eigenbasis(graph_laplacian([[0, 1], [1, 2]]), 3)
        >>> fmap = FunctionalMap.from_pointwise([0, 1, 2], basis, basis)
        >>> bool(np.allclose(fmap.matrix, np.eye(3)))
        True
    """

    matrix: FloatArray
    source: Eigenbasis
    target: Eigenbasis

    def __post_init__(self) -> None:
        if not isinstance(self.source, Eigenbasis) or not isinstance(self.target, Eigenbasis):
            raise WeightspaceValueError("`source` and `target` must be Eigenbasis objects")
        c = as_float_array(self.matrix, "matrix", ndim=2)
        if c.shape != (self.target.k, self.source.k):
            raise ShapeMismatchError(
                f"`matrix` must be [target.k, source.k] = {[self.target.k, self.source.k]}, got "
                f"{list(c.shape)}"
            )
        object.__setattr__(self, "matrix", frozen(c))

    # ---- construction ------------------------------------------------------------------------

    @classmethod
    def from_pointwise(
        cls, p2p: ArrayLike, source: Eigenbasis, target: Eigenbasis
    ) -> FunctionalMap:
        r"""Return the functional map of a point-to-point map ``Y -> X``.

        :math:`C = \Phi_Y^\top M_Y \Phi_X[\mathrm{p2p}]` (pyFM's ``p2p_to_FM`` with ``A2``).

        Args:
            p2p: For each point ``j`` of ``Y``, its point ``p2p[j]`` on ``X``.
            source: Basis on ``X``.
            target: Basis on ``Y``.

        Returns:
            The :class:`FunctionalMap`.

        Raises:
            WeightspaceValueError: if ``p2p`` has the wrong length or indices out of range.

        Shapes:
            - p2p: ``[n_Y]``; output matrix: ``[k_Y, k_X]``.

        Example:
            >>> from weightspace.spectral import eigenbasis, graph_laplacian
            >>> b = eigenbasis(graph_laplacian([[0, 1], [1, 2]]), 3)
            >>> FunctionalMap.from_pointwise([2, 1, 0], b, b).matrix.round(6).diagonal().tolist()
            [1.0, -1.0, 1.0]
        """
        idx = as_index_array(p2p, "p2p", size=target.n, upper=source.n)
        pulled = source.vectors[idx]
        return cls(target.vectors.T @ (target.mass[:, None] * pulled), source, target)

    @classmethod
    def from_correspondence(
        cls,
        correspondence: ArrayLike | sp.sparray | sp.spmatrix,
        source: Eigenbasis,
        target: Eigenbasis,
    ) -> FunctionalMap:
        r"""Return :math:`C = \Phi_Y^\top M_Y \Pi \Phi_X` for any linear correspondence.

        ``Pi`` may be a (soft) point map, a permutation or a rotation of neurons.

        Args:
            correspondence: ``Pi`` (dense or scipy sparse), mapping functions on ``X`` to
                functions on ``Y``.
            source: Basis on ``X``.
            target: Basis on ``Y``.

        Returns:
            The :class:`FunctionalMap`.

        Raises:
            ShapeMismatchError: if ``Pi`` is not ``[n_Y, n_X]``.

        Shapes:
            - correspondence: ``[n_Y, n_X]``; output matrix: ``[k_Y, k_X]``.

        Example:
            >>> import numpy as np
            >>> from weightspace.spectral import covariance_eigenbasis
            >>> b = covariance_eigenbasis(covariance=np.diag([2.0, 1.0]))
            >>> FunctionalMap.from_correspondence(np.eye(2), b, b).matrix.tolist()
            [[1.0, 0.0], [0.0, 1.0]]
        """
        pi: FloatArray | sp.sparray | sp.spmatrix
        if isinstance(correspondence, (sp.sparray, sp.spmatrix)):
            pi = correspondence
        else:
            pi = as_float_array(correspondence, "correspondence", ndim=2)
        if tuple(pi.shape) != (target.n, source.n):
            raise ShapeMismatchError(
                f"`correspondence` must be [target.n, source.n] = {[target.n, source.n]}, got "
                f"{list(pi.shape)}"
            )
        moved = np.asarray(pi @ source.vectors)
        return cls(target.vectors.T @ (target.mass[:, None] * moved), source, target)

    # ---- conversion and use ------------------------------------------------------------------

    def to_pointwise(self, *, adjoint: bool = False) -> IntArray:
        r"""Return the point map ``Y -> X`` this functional map encodes (nearest neighbours).

        Each point ``y`` is matched to the ``x`` whose transported delta is closest: rows of
        :math:`\Phi_Y` against rows of :math:`\Phi_X C^\top` (pyFM's ``FM_to_p2p``); with
        ``adjoint``, rows of :math:`\Phi_Y C` against rows of :math:`\Phi_X`.

        Args:
            adjoint: Compare in the source's spectral space instead.

        Returns:
            ``p2p`` with one source index per target point.

        Shapes:
            - output: ``[n_Y]``.

        Example:
            >>> from weightspace.spectral import eigenbasis, graph_laplacian
            >>> b = eigenbasis(graph_laplacian([[0, 1], [1, 2], [2, 3]]), 4)
            >>> FunctionalMap.from_pointwise([3, 2, 1, 0], b, b).to_pointwise().tolist()
            [3, 2, 1, 0]
        """
        c = self.matrix
        if adjoint:
            return nearest_neighbors(self.source.vectors, self.target.vectors @ c)
        known: IntArray | None = self.__dict__.get("_pointwise")
        if known is not None:  # searched already by zoomout, which returned this map
            return known.copy()
        return nearest_neighbors(self.source.vectors @ c.T, self.target.vectors)

    def transfer(self, functions: ArrayLike) -> FloatArray:
        r"""Transport functions from ``X`` to ``Y``: :math:`\Phi_Y C \Phi_X^\top M_X f`.

        Args:
            functions: ``[n_X]`` or ``[n_X, d]``.

        Returns:
            The transported functions, ``[n_Y]`` or ``[n_Y, d]``.

        Shapes:
            - functions: ``[n_X]`` or ``[n_X, d]``; output: ``[n_Y]`` or ``[n_Y, d]``.

        Example:
            >>> from weightspace.spectral import eigenbasis, graph_laplacian
            >>> b = eigenbasis(graph_laplacian([[0, 1], [1, 2]]), 3)
            >>> f = FunctionalMap.from_pointwise([2, 1, 0], b, b)
            >>> f.transfer([1.0, 2.0, 3.0]).round(6).tolist()
            [3.0, 2.0, 1.0]
        """
        return self.target.reconstruct(self.matrix @ self.source.project(functions))

    def then(self, other: FunctionalMap) -> FunctionalMap:
        """Return the composition ``X -> Y -> Z`` (``other.matrix @ self.matrix``).

        Exact when ``self.target`` spans the functions that matter (a full basis); with
        truncated bases, the part of ``self``'s output outside the basis is lost.

        Args:
            other: A map ``Y -> Z`` whose source has the same size as ``self.target``.

        Returns:
            The map ``X -> Z``.

        Raises:
            ShapeMismatchError: if ``other.source`` does not match ``self.target``.

        Example:
            >>> from weightspace.spectral import eigenbasis, graph_laplacian
            >>> b = eigenbasis(graph_laplacian([[0, 1], [1, 2]]), 3)
            >>> f = FunctionalMap.from_pointwise([2, 1, 0], b, b)
            >>> f.then(f).matrix.round(6).diagonal().tolist()
            [1.0, 1.0, 1.0]
        """
        if other.source.k != self.target.k or other.source.n != self.target.n:
            raise ShapeMismatchError(
                f"`other.source` ({other.source.n} points, k={other.source.k}) must match "
                f"`self.target` ({self.target.n} points, k={self.target.k})"
            )
        return FunctionalMap(other.matrix @ self.matrix, self.source, other.target)

    def __matmul__(self, other: FunctionalMap) -> FunctionalMap:
        """``g @ f`` is ``f.then(g)`` (matrix order)."""
        if not isinstance(other, FunctionalMap):
            return NotImplemented
        return other.then(self)

    def adjoint(self) -> FunctionalMap:
        r"""Return the adjoint map ``Y -> X``, :math:`C^\top` (the inverse of an isometry's map).

        Returns:
            The transposed :class:`FunctionalMap`.

        Example:
            >>> from weightspace.spectral import eigenbasis, graph_laplacian
            >>> b = eigenbasis(graph_laplacian([[0, 1], [1, 2]]), 3)
            >>> f = FunctionalMap.from_pointwise([2, 0, 1], b, b)
            >>> float(abs(f.adjoint().matrix @ f.matrix - np.eye(3)).max()) < 1e-12
            True
        """
        return FunctionalMap(self.matrix.T, self.target, self.source)

    def inverse(self) -> FunctionalMap:
        """Return the map ``Y -> X`` with the pseudo-inverse matrix ``pinv(C)``.

        Returns:
            The inverse :class:`FunctionalMap` (a left inverse when ``k_Y > k_X``).

        Example:
            >>> import numpy as np
            >>> from weightspace.spectral import covariance_eigenbasis
            >>> b = covariance_eigenbasis(covariance=np.diag([2.0, 1.0]))
            >>> FunctionalMap(np.diag([2.0, 4.0]), b, b).inverse().matrix.tolist()
            [[0.5, 0.0], [0.0, 0.25]]
        """
        inv: FloatArray = np.asarray(np.linalg.pinv(self.matrix), dtype=np.float64)
        return FunctionalMap(inv, self.target, self.source)

    # ---- diagnostics -------------------------------------------------------------------------

    def singular_values(self) -> FloatArray:
        """Return the singular values of ``C``, descending.

        They are invariant to eigenvector signs and to rotations inside eigenspaces; all equal
        one for the map of an isometry (or of any orthogonal ``Pi``) with full bases.

        Returns:
            ``min(k_Y, k_X)`` values.

        Example:
            >>> import numpy as np
            >>> from weightspace.spectral import covariance_eigenbasis
            >>> b = covariance_eigenbasis(covariance=np.diag([2.0, 1.0]))
            >>> FunctionalMap(np.diag([1.0, 3.0]), b, b).singular_values().tolist()
            [3.0, 1.0]
        """
        out: FloatArray = scipy.linalg.svdvals(self.matrix)
        return out

    def orthogonality_defect(self) -> float:
        r"""Return :math:`\|C^\top C - I\|_F / \sqrt{k}`, ``k = min(k_Y, k_X)`` (0 if orthogonal).

        Uses :math:`C C^\top` when ``k_Y < k_X``. Area-preserving maps have orthogonal ``C``.

        Returns:
            The defect (non-negative).

        Example:
            >>> import numpy as np
            >>> from weightspace.spectral import covariance_eigenbasis
            >>> b = covariance_eigenbasis(covariance=np.diag([2.0, 1.0]))
            >>> FunctionalMap(np.eye(2), b, b).orthogonality_defect()
            0.0
        """
        c = self.matrix
        g = c.T @ c if c.shape[0] >= c.shape[1] else c @ c.T
        return float(np.linalg.norm(g - np.eye(g.shape[0])) / np.sqrt(g.shape[0]))

    def commutativity_defect(self) -> float:
        r"""Return :math:`\|C\Lambda_X - \Lambda_Y C\|_F / (\|C\|_F \max|\lambda|)`.

        Zero for the map of an isometry with full bases: ``C`` commutes with the eigenvalues.

        Returns:
            The relative defect (non-negative).

        Example:
            >>> import numpy as np
            >>> from weightspace.spectral import covariance_eigenbasis
            >>> b = covariance_eigenbasis(covariance=np.diag([2.0, 1.0]))
            >>> FunctionalMap(np.eye(2), b, b).commutativity_defect()
            0.0
        """
        c = self.matrix
        lx, ly = self.source.values, self.target.values
        scale = max(float(np.abs(lx).max()), float(np.abs(ly).max()), 1e-300)
        norm = float(np.linalg.norm(c)) or 1.0
        return float(np.linalg.norm(c * lx[None, :] - ly[:, None] * c) / (norm * scale))

    def off_diagonal_energy(self, *, blocks: bool = False, rtol: float = 1e-6) -> float:
        r"""Return the fraction of :math:`\|C\|_F^2` off the diagonal.

        With ``blocks``, entries ``(i, j)`` whose eigenspaces (see
        :meth:`Eigenbasis.eigenspaces`) overlap in index range count as diagonal: rotations
        inside degenerate eigenspaces then leave the value unchanged.

        Args:
            blocks: Count whole degenerate-eigenspace blocks as diagonal.
            rtol: Degeneracy tolerance for ``blocks``.

        Returns:
            A number in ``[0, 1]``.

        Example:
            >>> import numpy as np
            >>> from weightspace.spectral import covariance_eigenbasis
            >>> b = covariance_eigenbasis(covariance=np.diag([2.0, 1.0]))
            >>> FunctionalMap(np.array([[1.0, 1.0], [0.0, 0.0]]), b, b).off_diagonal_energy()
            0.5
        """
        c = self.matrix
        total = float((c**2).sum())
        if total == 0:
            return 0.0
        return 1.0 - float((c[self._block_mask(blocks, rtol)] ** 2).sum()) / total

    def _block_mask(self, blocks: bool, rtol: float) -> np.ndarray[Any, np.dtype[np.bool_]]:
        ky, kx = self.matrix.shape
        if not blocks:
            return np.eye(ky, kx, dtype=bool)
        span_x = np.empty((kx, 2), dtype=np.int64)
        for g in self.source.eigenspaces(rtol):
            span_x[g] = (g[0], g[-1])
        span_y = np.empty((ky, 2), dtype=np.int64)
        for g in self.target.eigenspaces(rtol):
            span_y[g] = (g[0], g[-1])
        return (span_y[:, None, 0] <= span_x[None, :, 1]) & (
            span_x[None, :, 0] <= span_y[:, None, 1]
        )

    def bures_wasserstein_similarity(self) -> float:
        r"""Return the Bures fidelity of the two spectra seen through ``C``.

        With covariance bases :math:`\Sigma_X = \Phi_X\Lambda_X\Phi_X^\top`,
        :math:`\Sigma_Y = \Phi_Y\Lambda_Y\Phi_Y^\top` and an orthogonal correspondence
        :math:`\Pi`, the Bures–Wasserstein fidelity between :math:`\Pi\Sigma_X\Pi^\top` and
        :math:`\Sigma_Y` is a function of ``C`` and the eigenvalues only:

        .. math::

            F = \frac{\mathrm{tr}\big(\Lambda_X^{1/2} C^\top \Lambda_Y C \Lambda_X^{1/2}
            \big)^{1/2}}{\sqrt{\mathrm{tr}\Lambda_X\,\mathrm{tr}\Lambda_Y}} \in [0, 1],
            \qquad d_{BW}^2 = \mathrm{tr}\Sigma_X + \mathrm{tr}\Sigma_Y
            - 2\,\mathrm{tr}\big(\Sigma_X^{1/2}\Sigma_Y\Sigma_X^{1/2}\big)^{1/2}.

        Exact with full bases (see :func:`bures_wasserstein_similarity` for the direct
        formula); with truncated bases it compares the rank-``k`` parts.

        Returns:
            ``F``; one when the aligned covariances are equal.

        Raises:
            WeightspaceValueError: if an eigenvalue is negative (not a covariance basis).

        Example:
            >>> import numpy as np
            >>> from weightspace.spectral import covariance_eigenbasis
            >>> b = covariance_eigenbasis(covariance=np.diag([2.0, 1.0]))
            >>> round(FunctionalMap(np.eye(2), b, b).bures_wasserstein_similarity(), 12)
            1.0
        """
        lx, ly = self.source.values, self.target.values
        if (lx < 0).any() or (ly < 0).any():
            raise WeightspaceValueError(
                "the Bures–Wasserstein similarity needs non-negative eigenvalues (covariance "
                "bases from `covariance_eigenbasis`)"
            )
        half = np.sqrt(lx)
        k = half[:, None] * (self.matrix.T @ (ly[:, None] * self.matrix)) * half[None, :]
        eig = np.clip(np.linalg.eigvalsh((k + k.T) * 0.5), 0.0, None)
        denom = float(np.sqrt(lx.sum() * ly.sum()))
        return float(np.sqrt(eig).sum() / denom) if denom > 0 else 0.0

    def __repr__(self) -> str:
        return (
            f"FunctionalMap(k_Y={self.target.k}, k_X={self.source.k}, n_Y={self.target.n}, "
            f"n_X={self.source.n})"
        )


def zoomout(
    fmap: FunctionalMap,
    source: Eigenbasis,
    target: Eigenbasis,
    *,
    step: int | Sequence[int] = (2, 10),
    subsample: int | None = 3000,
    seed: int = 0,
    polish: int | None = None,
    final_passes: int | None = None,
    select: Select = "coverage",
    sampling: Sampling = "area",
    sample_source: bool = False,
    workers: int | None = None,
) -> FunctionalMap:
    r"""Refine a functional map by ZoomOut (Melzi et al., SIGGRAPH Asia 2019).

    Alternates a point map from the current ``C`` (:meth:`FunctionalMap.to_pointwise`) and the
    functional map of that point map in ``step`` more basis functions per side, from ``fmap``'s
    size up to the sizes of ``source`` and ``target``:

    .. math::

        T_k = \mathrm{NN}(\Phi_Y^{k},\ \Phi_X^{k} C_k^\top), \qquad
        C_{k+s} = \Phi_Y^{k+s\,+} \Pi_{T_k} \Phi_X^{k+s}.

    **Schedule.** By default the growing iterations match ``subsample`` sampled points of
    ``Y`` against *all* points of ``X`` and fit ``C`` by least squares on those rows (the
    projection :math:`\Phi_Y^\top M_Y \Pi \Phi_X` is an integral over ``Y``, which the sample
    estimates); then ``polish`` iterations at the final size on fresh samples twice as large
    each time (``2, 4, 8, ...`` times ``subsample``); then ``final_passes`` iterations on all
    points with the exact projection. A polishing sample that would reach the size of ``Y``
    ends the polishing, and at least one final pass follows. Matching the samples against all
    of ``X`` keeps ZoomOut's accuracy: with ``X`` sampled as well (``sample_source=True``,
    ZoomOut's original fast variant), a sampled point can only match one of the few sampled
    points of ``X``, which biases ``C``. Each iteration costs ``subsample x n_X x k`` (a
    ``float32`` matrix product, see :func:`nearest_neighbors`).

    **Several steps, and which iterate is kept.** With several ``step`` values, one schedule
    runs per value from the same ``fmap``. Every map at the final size (the end of each
    schedule and each final pass) has its point map searched on all points once; with
    ``select="coverage"`` the map whose point map reaches the most points of ``X`` is
    returned. A correct map between two shapes sampled alike is nearly a bijection, and a
    drifting one piles many points of ``Y`` onto few of ``X``, so coverage needs no ground
    truth. ``select="last"`` returns the last map of a single schedule (plain ZoomOut). The
    returned map keeps its point map, so :meth:`FunctionalMap.to_pointwise` costs nothing.

    **Defaults** (changed in 0.1: were ``step=1``, all points, no selection). Measured on 20
    pairs of near-isometric meshes from the same start maps (bumpy spheres and 11 meshes of
    CGAL's demo data, bent and permuted; 2.9k to 49k vertices; one thread;
    ``benchmarks/bench_zoomout_schedules.py``), no single step was best everywhere: step 10
    drifted less on the spheres, step 2 on most shipped meshes. Keeping the best-covering map
    of both schedules was at least as accurate as the former default (``step=5``, no final
    passes) and as the better of the two schedules run alone on all 20 pairs; among the maps
    of its own run it picked the lowest-error one on 14 pairs and came within 8 % of it on the
    other six. ``final_passes`` is 4 up to 10^9 point pairs (about 31k points per shape) and 0
    above, where a pass on all points costs seconds and eight of them made the 49k sphere's
    map worse. ``step=1, subsample=None, final_passes=0, select="last"`` gives the behaviour
    before 0.1.

    Args:
        fmap: The initial map; its bases must be the leading columns of ``source``/``target``.
        source: Larger basis on ``X``.
        target: Larger basis on ``Y``.
        step: Basis functions added per side and iteration, or several such values (one
            schedule each).
        subsample: Points of ``Y`` (and of ``X`` with ``sample_source``) in the growing
            iterations (``None``: all points). A value at least the size of ``Y`` also means
            all points.
        seed: Seeds the samples (each schedule draws from the same seed).
        polish: Iterations at the final size on growing samples after a subsampled run;
            ``None`` means 1 with a subsample. Only meaningful with ``subsample``.
        final_passes: Iterations at the final size on all points at the end of each schedule
            (``None``: 4 up to 10^9 point pairs ``n_X * n_Y``, else 0).
        select: ``"coverage"`` (keep the best-covering map, see above) or ``"last"``.
        sampling: ``"area"`` draws points with probability proportional to their mass
            (uniform over the surface); ``"uniform"`` draws every point with equal
            probability.
        sample_source: Sample ``X`` too (ZoomOut's original fast variant; biased, see above).
        workers: Threads of the nearest-neighbour searches (see :func:`nearest_neighbors`;
            ``None``: one thread below 20,000 searched points, all cores above). The least
            squares and projections run on one BLAS thread.

    Returns:
        The refined map, of size ``[target.k, source.k]``.

    Raises:
        ShapeMismatchError: if the bases do not extend ``fmap``'s.
        WeightspaceValueError: if a ``step`` or ``subsample`` is not positive, ``step`` is
            empty, ``polish`` or ``final_passes`` is negative, ``sampling`` or ``select`` is
            unknown, ``select="last"`` is given several steps, or ``polish`` is given
            (non-zero) without ``subsample``.

    Example:
        >>> import numpy as np
        >>> from weightspace.spectral import eigenbasis, graph_laplacian
        >>> lap = graph_laplacian([[i, i + 1] for i in range(19)])
        >>> big = eigenbasis(lap, 12)
        >>> init = FunctionalMap.from_pointwise(np.arange(20), big.truncate(4), big.truncate(4))
        >>> zoomout(init, big, big, step=2).matrix.shape
        (12, 12)
    """
    steps: tuple[Any, ...] = ()
    if isinstance(step, (int, np.integer)):
        steps = (step,)
    elif isinstance(step, Sequence):
        steps = tuple(step)
    if not steps or any(not isinstance(s, (int, np.integer)) or s < 1 for s in steps):
        raise WeightspaceValueError(
            f"`step` must be a positive integer or a non-empty sequence of them, got {step!r}"
        )
    if subsample is not None and subsample < 1:
        raise WeightspaceValueError(
            f"`subsample` must be a positive number of points or None (all points), got {subsample}"
        )
    if polish is not None and polish < 0:
        raise WeightspaceValueError(f"`polish` must be non-negative, got {polish}")
    if polish and subsample is None:
        raise WeightspaceValueError(
            f"`polish={polish}` refines a subsampled run, but `subsample` is None (all points); "
            "pass `subsample=3000` (say) or drop `polish` (use `final_passes` for more "
            "iterations on all points)"
        )
    if final_passes is not None and final_passes < 0:
        raise WeightspaceValueError(f"`final_passes` must be non-negative, got {final_passes}")
    if sampling not in ("area", "uniform"):
        raise WeightspaceValueError(f"`sampling` must be 'area' or 'uniform', got {sampling!r}")
    if select not in ("coverage", "last"):
        raise WeightspaceValueError(f"`select` must be 'coverage' or 'last', got {select!r}")
    if select == "last" and len(steps) > 1:
        raise WeightspaceValueError(
            f"`select='last'` needs a single schedule, got `step={step!r}`; pass one step or "
            "select='coverage'"
        )
    for name, small, big in (("source", fmap.source, source), ("target", fmap.target, target)):
        if big.n != small.n or big.k < small.k:
            raise ShapeMismatchError(
                f"`{name}` must be a basis on the same {small.n} points with at least {small.k} "
                f"functions, got {big.n} points and {big.k} functions"
            )
    limit = min(source.n, target.n) if sample_source else target.n
    sampled = subsample is not None and subsample < limit
    plan = _Plan(
        subsample=subsample if sampled else None,
        seed=seed,
        polish=(1 if polish is None else polish) if sampled else 0,
        final=default_final_passes(source.n, target.n) if final_passes is None else final_passes,
        sampling=sampling,
        sample_source=sample_source,
        limit=limit,
    )
    run = _ZoomOutRun(source, target, workers)
    best: tuple[int, FloatArray, IntArray] | None = None
    with blas_threads(1):
        for s in steps:
            for c, p2p in _schedule(fmap.matrix, run, s, plan):
                covered = int(np.unique(p2p).size)
                if select == "last" or best is None or covered > best[0]:
                    best = (covered, c, p2p)
    assert best is not None
    logger.debug("zoomout reached k=(%d, %d), %d points covered", target.k, source.k, best[0])
    out = FunctionalMap(best[1], source, target)
    object.__setattr__(out, "_pointwise", frozen(best[2]))
    return out


def default_final_passes(n_source: int, n_target: int) -> int:
    """Final passes on all points that :func:`zoomout` runs by default for these sizes."""
    return FINAL_PASSES if n_source * n_target <= FINAL_PASSES_MAX_PAIRS else 0


@dataclass(frozen=True)
class _Plan:
    """The settings of one ZoomOut schedule that do not depend on its step (private)."""

    subsample: int | None  # None: all points
    seed: int
    polish: int
    final: int
    sampling: Sampling
    sample_source: bool
    limit: int


def _schedule(
    c: FloatArray, run: _ZoomOutRun, step: int, plan: _Plan
) -> Iterator[tuple[FloatArray, IntArray]]:
    """One schedule as :func:`zoomout` describes: yields each final-size map and its point map."""
    source, target = run.source, run.target
    grow = c.shape != (target.k, source.k)
    n_final = plan.final
    if plan.subsample is None:
        if grow:
            c = run.steps(c, None, step)
    else:
        rng = np.random.default_rng(plan.seed)

        def draw(size: int) -> tuple[IntArray | None, IntArray]:
            sub_x = _sample(rng, source.mass, size, plan.sampling) if plan.sample_source else None
            return sub_x, _sample(rng, target.mass, size, plan.sampling)

        if grow:
            c = run.steps(c, draw(plan.subsample), step)
        size = plan.subsample
        for _ in range(plan.polish):
            size *= 2
            if size >= plan.limit:  # the sample would be (nearly) everything: use all points
                n_final = max(n_final, 1)
                break
            c = run.steps(c, draw(size), step)
    previous = None
    for i in range(n_final + 1):
        p2p = run.pointwise(c)
        yield c, p2p
        if i == n_final or (previous is not None and np.array_equal(p2p, previous)):
            return  # done, or a fixed point that every further pass would repeat
        c, previous = run.project(p2p), p2p


def _sample(rng: np.random.Generator, mass: FloatArray, size: int, sampling: Sampling) -> IntArray:
    """``size`` distinct points, sorted: uniformly, or by mass (Efraimidis–Spirakis keys)."""
    if sampling == "uniform":
        return np.sort(rng.choice(mass.shape[0], size=size, replace=False))
    keys = np.log(rng.random(mass.shape[0])) / mass
    return np.sort(np.argpartition(keys, -size)[-size:]).astype(np.int64)


class _ZoomOutRun:
    """ZoomOut iterations on the two bases, all points or samples (private)."""

    def __init__(self, source: Eigenbasis, target: Eigenbasis, workers: int | None) -> None:
        self.source, self.target, self.workers = source, target, workers

    def steps(
        self, c: FloatArray, sample: tuple[IntArray | None, IntArray] | None, step: int
    ) -> FloatArray:
        """Iterations from ``c``'s size up to the bases' sizes (one if already there)."""
        ky, kx = c.shape
        px, py = self.source.vectors, self.target.vectors
        if sample is not None:
            if sample[0] is not None:
                px = px[sample[0]]
            py = py[sample[1]]
        while True:
            p2p = nearest_neighbors(px[:, :kx] @ c.T, py[:, :ky], workers=self.workers)
            kx, ky = min(kx + step, self.source.k), min(ky + step, self.target.k)
            if sample is None:
                c = py[:, :ky].T @ (self.target.mass[:, None] * px[p2p, :kx])
            else:
                # least squares through the normal equations: the sampled basis has nearly
                # orthogonal columns, and this is far cheaper than an SVD-based solver
                a = py[:, :ky]
                c = scipy.linalg.solve(a.T @ a, a.T @ px[p2p, :kx], assume_a="pos")
            if kx == self.source.k and ky == self.target.k:
                return c

    def pointwise(self, c: FloatArray) -> IntArray:
        """The point map ``Y -> X`` of a full-size ``c`` on all points."""
        return nearest_neighbors(
            self.source.vectors @ c.T, self.target.vectors, workers=self.workers
        )

    def project(self, p2p: IntArray) -> FloatArray:
        """The exact functional map of a point map, at the full size."""
        py = self.target.vectors
        return py.T @ (self.target.mass[:, None] * self.source.vectors[p2p])


def correspondence_error(
    predicted: ArrayLike, true: ArrayLike, coordinates: ArrayLike, *, area: float | None = None
) -> float:
    """Return the mean distance between predicted and true matches, over ``sqrt(area)``.

    The distance is Euclidean in ``coordinates`` (pass intrinsic coordinates, such as the flat
    domain of a developable surface, to measure geodesic error; 3-D positions give a lower
    bound of it). This is the error that functional-map papers and pyFM report.

    Args:
        predicted: For each target point, its predicted source point.
        true: For each target point, its true source point.
        coordinates: Positions of the source points.
        area: Source surface area; ``None`` divides by one.

    Returns:
        The mean normalised error.

    Raises:
        WeightspaceValueError: on mismatched lengths or a non-positive area.

    Shapes:
        - predicted, true: ``[n_Y]``; coordinates: ``[n_X, d]``.

    Example:
        >>> import numpy as np
        >>> correspondence_error([0, 0], [0, 1], np.array([[0.0], [2.0]]), area=4.0)
        0.5
    """
    x = as_float_array(coordinates, "coordinates", ndim=2)
    pred = as_index_array(predicted, "predicted", upper=x.shape[0])
    gt = as_index_array(true, "true", size=pred.shape[0], upper=x.shape[0])
    scale = 1.0 if area is None else float(area)
    if not scale > 0:
        raise WeightspaceValueError(f"`area` must be positive, got {area!r}")
    return float(np.linalg.norm(x[pred] - x[gt], axis=1).mean() / np.sqrt(scale))
