"""The functional map: a matrix between two eigenbases, with conversions and refinement."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import numpy as np
import scipy.linalg
import scipy.sparse as sp
import torch
from scipy.spatial import cKDTree
from torch import Tensor

from weightspace._errors import ShapeMismatchError, WeightspaceValueError
from weightspace.spectral._basis import Eigenbasis
from weightspace.spectral._common import (
    ArrayLike,
    FloatArray,
    IntArray,
    as_float_array,
    as_index_array,
    frozen,
)

__all__ = [
    "FunctionalMap",
    "correspondence_error",
    "nearest_neighbors",
    "zoomout",
]

logger = logging.getLogger(__name__)


def nearest_neighbors(reference: ArrayLike, queries: ArrayLike) -> IntArray:
    """Return, for each query row, the index of its nearest reference row (Euclidean).

    Low dimensions (``d <= 12``) use a k-d tree on all cores; higher dimensions use exact
    brute force in chunks of ``float32`` matrix products (k-d trees degrade to brute force
    there anyway), so near-ties closer than float32 round-off may resolve either way.

    Args:
        reference: Points searched.
        queries: Points whose nearest reference point is wanted.

    Returns:
        ``int64`` indices into ``reference``.

    Raises:
        WeightspaceValueError: if the dimensions differ or ``reference`` is empty.

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
    if ref.shape[1] <= 12:
        _, idx = cKDTree(ref).query(qry, k=1, workers=-1)
        return np.asarray(idx, dtype=np.int64)
    return _nearest_float32(
        torch.tensor(ref, dtype=torch.float32), torch.tensor(qry, dtype=torch.float32)
    )


def _nearest_float32(ref: Tensor, qry: Tensor) -> IntArray:
    """Exact nearest neighbours by float32 matrix products, in chunks of queries."""
    r_sq = (ref * ref).sum(dim=1)
    out = np.empty(qry.shape[0], dtype=np.int64)
    chunk = max(1, int(2e7 // max(ref.shape[0], 1)))
    for start in range(0, qry.shape[0], chunk):
        d2 = torch.addmm(r_sq[None, :], qry[start : start + chunk], ref.T, alpha=-2.0)
        out[start : start + chunk] = d2.argmin(dim=1).numpy()
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
    step: int = 1,
    subsample: int | None = None,
    seed: int = 0,
    polish: int = 3,
) -> FunctionalMap:
    r"""Refine a functional map by ZoomOut (Melzi et al., SIGGRAPH Asia 2019).

    Alternates a point map from the current ``C`` (:meth:`FunctionalMap.to_pointwise`) and the
    functional map of that point map in ``step`` more basis functions per side, from ``fmap``'s
    size up to the sizes of ``source`` and ``target``:

    .. math::

        T_k = \mathrm{NN}(\Phi_Y^{k},\ \Phi_X^{k} C_k^\top), \qquad
        C_{k+s} = \Phi_Y^{k+s\,+} \Pi_{T_k} \Phi_X^{k+s}.

    With ``subsample``, iterations run on that many points per shape drawn with ``seed``
    (ZoomOut's fast variant) and ``C`` is fitted by least squares on them; the final map is
    still defined on all points. A small sample biases the result: a sampled target point can
    only match one of the few sampled source points, and the least-squares fit on a random
    sample is noisy. So ``polish`` more iterations at the final size follow, on fresh samples
    twice as large each time (``2, 4, 8, ...`` times ``subsample``); a sample that would reach
    the size of the smaller shape is replaced by all points, with the exact projection
    :math:`\Phi_Y^\top M_Y \Pi \Phi_X`, and ends the polishing. Their cost is dominated by
    the last one, at most that of one point-map conversion on all points. On the 45k-vertex
    sheets of ``benchmarks/bench_spectral_vs_pyfm.py`` (3,000 samples, ``k`` from 50 to 100),
    the mean error of the final point map over :math:`\sqrt{\text{area}}` is 0.0019 without
    polishing, 0.00044 with the default three passes (about 10 s more on one core) and 0.00023
    with four, the last on all points (about 25 s more); the true map read through the same
    100 functions gives 0.00019.

    Args:
        fmap: The initial map; its bases must be the leading columns of ``source``/``target``.
        source: Larger basis on ``X``.
        target: Larger basis on ``Y``.
        step: Basis functions added per side and iteration.
        subsample: Points per shape used in the iterations (``None``: all).
        seed: Seeds the subsamples.
        polish: Iterations at the final size on growing samples after a subsampled run
            (``0``: none; ignored without ``subsample``).

    Returns:
        The refined map, of size ``[target.k, source.k]``.

    Raises:
        ShapeMismatchError: if the bases do not extend ``fmap``'s.
        WeightspaceValueError: if ``step`` is not positive or ``polish`` is negative.

    Example:
        >>> import numpy as np
        >>> from weightspace.spectral import eigenbasis, graph_laplacian
        >>> lap = graph_laplacian([[i, i + 1] for i in range(19)])
        >>> big = eigenbasis(lap, 12)
        >>> init = FunctionalMap.from_pointwise(np.arange(20), big.truncate(4), big.truncate(4))
        >>> zoomout(init, big, big, step=2).matrix.shape
        (12, 12)
    """
    if step < 1:
        raise WeightspaceValueError(f"`step` must be positive, got {step}")
    if polish < 0:
        raise WeightspaceValueError(f"`polish` must be non-negative, got {polish}")
    for name, small, big in (("source", fmap.source, source), ("target", fmap.target, target)):
        if big.n != small.n or big.k < small.k:
            raise ShapeMismatchError(
                f"`{name}` must be a basis on the same {small.n} points with at least {small.k} "
                f"functions, got {big.n} points and {big.k} functions"
            )
    smaller = min(source.n, target.n)
    c = fmap.matrix
    grow = c.shape != (target.k, source.k)
    if subsample is None or subsample >= smaller:
        if grow:
            c = _zoomout_steps(c, source, target, None, step)
    else:
        rng = np.random.default_rng(seed)
        if grow:
            c = _zoomout_steps(c, source, target, _draw(rng, source, target, subsample), step)
        size = subsample
        for _ in range(polish):
            size *= 2
            if size >= smaller:
                c = _zoomout_steps(c, source, target, None, step)
                break
            c = _zoomout_steps(c, source, target, _draw(rng, source, target, size), step)
    logger.debug("zoomout reached k=(%d, %d)", target.k, source.k)
    return FunctionalMap(c, source, target)


def _draw(
    rng: np.random.Generator, source: Eigenbasis, target: Eigenbasis, size: int
) -> tuple[IntArray, IntArray]:
    sub_x = np.sort(rng.choice(source.n, size=size, replace=False))
    sub_y = np.sort(rng.choice(target.n, size=size, replace=False))
    return sub_x, sub_y


def _zoomout_steps(
    c: FloatArray,
    source: Eigenbasis,
    target: Eigenbasis,
    sample: tuple[IntArray, IntArray] | None,
    step: int,
) -> FloatArray:
    """ZoomOut iterations from ``c``'s size up to the bases' sizes (one if already there)."""
    ky, kx = c.shape
    px, py = source.vectors, target.vectors
    if sample is not None:
        px, py = px[sample[0]], py[sample[1]]
    # iterations in float32 (nearest neighbours and least squares); the map stays float64
    tx = torch.tensor(px, dtype=torch.float32)
    ty = torch.tensor(py, dtype=torch.float32)
    while True:
        emb = tx[:, :kx] @ torch.tensor(c.T, dtype=torch.float32)
        p2p = _nearest_float32(emb, ty[:, :ky].contiguous())
        kx, ky = min(kx + step, source.k), min(ky + step, target.k)
        if sample is None:
            pulled = px[p2p, :kx]
            c = py[:, :ky].T @ (target.mass[:, None] * pulled)
        else:
            # least squares through the normal equations: the sampled basis has nearly
            # orthogonal columns, and this is far cheaper than an SVD-based solver
            a = ty[:, :ky]
            gram = (a.T @ a).double().numpy()
            rhs = (a.T @ tx[torch.from_numpy(p2p), :kx]).double().numpy()
            c = scipy.linalg.solve(gram, rhs, assume_a="pos")
        if kx == source.k and ky == target.k:
            return c


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
