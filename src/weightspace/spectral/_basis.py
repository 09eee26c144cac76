"""Eigenbases: generalised sparse eigensolves, a sign convention, degenerate eigenspaces."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Literal

import numpy as np
import scipy.linalg
import scipy.sparse as sp
import scipy.sparse.linalg as spla

from weightspace._errors import WeightspaceValueError
from weightspace.spectral._common import (
    ArrayLike,
    FloatArray,
    as_float_array,
    blas_threads,
    describe,
    frozen,
)
from weightspace.spectral._laplacian import Laplacian

__all__ = ["Eigenbasis", "covariance_eigenbasis", "eigenbasis"]

logger = logging.getLogger(__name__)

Order = Literal["ascending", "descending"]

#: Below this size the eigenproblem is solved densely (LAPACK) instead of with ARPACK.
DENSE_LIMIT = 1500


@dataclass(frozen=True, eq=False)
class Eigenbasis:
    r"""An ``M``-orthonormal eigenbasis: ``k`` eigenvectors of an operator on ``n`` points.

    .. math::

        \Phi^\top M \Phi = I_k, \qquad \text{coefficients of } f:\ a = \Phi^\top M f.

    ``values`` are ascending for Laplacians (low frequency first) and descending for
    covariances (high variance first); ``order`` records which. Arrays are read-only.

    Attributes:
        vectors: Eigenvectors as columns.
        values: Eigenvalues, one per column.
        mass: Diagonal of the mass matrix ``M`` (ones for Euclidean bases).
        order: ``"ascending"`` or ``"descending"``.

    Shapes:
        - vectors: ``[n, k]``; values: ``[k]``; mass: ``[n]``.

    Example:
        >>> import numpy as np
        >>> basis = Eigenbasis(np.eye(3)[:, :2], np.array([0.0, 1.0]), np.ones(3))
        >>> basis.project(np.array([1.0, 2.0, 3.0])).tolist()
        [1.0, 2.0]
    """

    vectors: FloatArray
    values: FloatArray
    mass: FloatArray
    order: Order = "ascending"

    def __post_init__(self) -> None:
        vectors = as_float_array(self.vectors, "vectors", ndim=2)
        values = as_float_array(self.values, "values", ndim=1)
        mass = as_float_array(self.mass, "mass", ndim=1)
        n, k = vectors.shape
        if values.shape[0] != k or mass.shape[0] != n:
            raise WeightspaceValueError(
                f"`vectors` [n, k] = {[n, k]} needs `values` of length {k} and `mass` of length "
                f"{n}, got {values.shape[0]} and {mass.shape[0]}"
            )
        if (mass <= 0).any():
            raise WeightspaceValueError("`mass` must be positive")
        if self.order not in ("ascending", "descending"):
            raise WeightspaceValueError(
                f"`order` must be 'ascending' or 'descending', got {self.order!r}"
            )
        object.__setattr__(self, "vectors", frozen(vectors))
        object.__setattr__(self, "values", frozen(values))
        object.__setattr__(self, "mass", frozen(mass))

    @property
    def n(self) -> int:
        """Number of points ``n``."""
        return int(self.vectors.shape[0])

    @property
    def k(self) -> int:
        """Number of basis functions ``k``."""
        return int(self.vectors.shape[1])

    def project(self, functions: ArrayLike) -> FloatArray:
        r"""Return the coefficients :math:`\Phi^\top M f` of functions on the points.

        Args:
            functions: One function (``[n]``) or several as columns (``[n, d]``).

        Returns:
            Coefficients, ``[k]`` or ``[k, d]``.

        Raises:
            WeightspaceValueError: if the first axis is not ``n``.

        Shapes:
            - functions: ``[n]`` or ``[n, d]``; output: ``[k]`` or ``[k, d]``.

        Example:
            >>> import numpy as np
            >>> b = Eigenbasis(np.eye(2), np.zeros(2), np.ones(2))
            >>> b.project(np.ones(2)).tolist()
            [1.0, 1.0]
        """
        f = as_float_array(functions, "functions", ndim=(1, 2))
        if f.shape[0] != self.n:
            raise WeightspaceValueError(
                f"`functions` must have {self.n} rows (one per point), got {f.shape[0]}"
            )
        weighted = f * self.mass if f.ndim == 1 else f * self.mass[:, None]
        out: FloatArray = self.vectors.T @ weighted
        return out

    def reconstruct(self, coefficients: ArrayLike) -> FloatArray:
        r"""Return the functions :math:`\Phi a` with the given coefficients.

        Args:
            coefficients: ``[k]`` or ``[k, d]``.

        Returns:
            Functions on the points, ``[n]`` or ``[n, d]``.

        Raises:
            WeightspaceValueError: if the first axis is not ``k``.

        Shapes:
            - coefficients: ``[k]`` or ``[k, d]``; output: ``[n]`` or ``[n, d]``.

        Example:
            >>> import numpy as np
            >>> b = Eigenbasis(np.eye(2), np.zeros(2), np.ones(2))
            >>> b.reconstruct(np.array([3.0, 4.0])).tolist()
            [3.0, 4.0]
        """
        a = as_float_array(coefficients, "coefficients", ndim=(1, 2))
        if a.shape[0] != self.k:
            raise WeightspaceValueError(f"`coefficients` must have {self.k} rows, got {a.shape[0]}")
        out: FloatArray = self.vectors @ a
        return out

    def gram(self) -> FloatArray:
        r"""Return :math:`\Phi^\top M \Phi` (the identity up to round-off).

        Returns:
            The ``[k, k]`` Gram matrix.

        Example:
            >>> import numpy as np
            >>> Eigenbasis(np.eye(2), np.zeros(2), np.ones(2)).gram().tolist()
            [[1.0, 0.0], [0.0, 1.0]]
        """
        out: FloatArray = self.vectors.T @ (self.vectors * self.mass[:, None])
        return out

    def truncate(self, k: int) -> Eigenbasis:
        """Return the first ``k`` basis functions.

        Args:
            k: Number to keep, ``1 <= k <= self.k``.

        Returns:
            A new :class:`Eigenbasis`. A cut inside a (near-)degenerate eigenspace is logged
            (the kept vectors are then an arbitrary part of that eigenspace).

        Raises:
            WeightspaceValueError: if ``k`` is out of range.

        Example:
            >>> import numpy as np
            >>> Eigenbasis(np.eye(3), np.arange(3.0), np.ones(3)).truncate(2).k
            2
        """
        if not 1 <= k <= self.k:
            raise WeightspaceValueError(f"`k` must be in [1, {self.k}], got {k}")
        if k < self.k and _same_space(self.values[k - 1], self.values[k], self.values, 1e-6):
            logger.info("truncating at k=%d cuts through a degenerate eigenspace", k)
        return Eigenbasis(self.vectors[:, :k], self.values[:k], self.mass, self.order)

    def permute(self, perm: ArrayLike) -> Eigenbasis:
        """Return the same basis on relabelled points (``new[i] = old[perm[i]]``).

        Args:
            perm: A permutation of ``0 .. n-1``.

        Returns:
            A new :class:`Eigenbasis` with rows permuted.

        Raises:
            WeightspaceValueError: if ``perm`` is not a permutation.

        Example:
            >>> import numpy as np
            >>> b = Eigenbasis(np.eye(2), np.zeros(2), np.ones(2)).permute([1, 0])
            >>> b.vectors.tolist()
            [[0.0, 1.0], [1.0, 0.0]]
        """
        p = np.asarray(perm, dtype=np.int64)
        if sorted(p.tolist()) != list(range(self.n)):
            raise WeightspaceValueError(
                f"`perm` must be a permutation of 0..{self.n - 1}, got {describe(perm)}"
            )
        return Eigenbasis(self.vectors[p], self.values, self.mass[p], self.order)

    def eigenspaces(self, rtol: float = 1e-6) -> list[list[int]]:
        r"""Group the basis functions into (near-)degenerate eigenspaces.

        Consecutive eigenvalues belong to one eigenspace when
        :math:`|\lambda_{i+1} - \lambda_i| \le \mathrm{rtol}\cdot\max_j |\lambda_j|`. Inside
        an eigenspace the eigenvectors are defined only up to a rotation, so any comparison of
        individual vectors is meaningless there; :class:`FunctionalMap` diagnostics use these
        blocks.

        Args:
            rtol: Relative tolerance (non-negative).

        Returns:
            Lists of column indices, in order, covering ``0 .. k-1``.

        Example:
            >>> import numpy as np
            >>> Eigenbasis(np.eye(3), np.array([0.0, 1.0, 1.0]), np.ones(3)).eigenspaces()
            [[0], [1, 2]]
        """
        return _eigenspaces(self.values, rtol)

    def canonicalize_signs(self) -> Eigenbasis:
        """Return the basis with the sign convention of :func:`eigenbasis` applied.

        Returns:
            A new :class:`Eigenbasis` whose columns satisfy the convention.

        Example:
            >>> import numpy as np
            >>> b = Eigenbasis(-np.eye(2), np.zeros(2), np.ones(2)).canonicalize_signs()
            >>> b.vectors.tolist()
            [[1.0, 0.0], [0.0, 1.0]]
        """
        return Eigenbasis(_fix_signs(self.vectors, self.mass), self.values, self.mass, self.order)


def _same_space(a: float, b: float, values: FloatArray, rtol: float) -> bool:
    scale = float(np.abs(values).max()) if values.size else 0.0
    return abs(float(b) - float(a)) <= rtol * max(scale, 1e-300)


def _eigenspaces(values: FloatArray, rtol: float) -> list[list[int]]:
    if rtol < 0:
        raise WeightspaceValueError(f"`rtol` must be non-negative, got {rtol}")
    groups: list[list[int]] = []
    for i in range(values.shape[0]):
        if groups and _same_space(values[i - 1], values[i], values, rtol):
            groups[-1].append(i)
        else:
            groups.append([i])
    return groups


def _fix_signs(vectors: FloatArray, mass: FloatArray) -> FloatArray:
    """Make each column's mass-weighted third moment positive (largest entry as fallback)."""
    skew = (mass[:, None] * vectors**3).sum(axis=0)
    scale = (mass[:, None] * np.abs(vectors) ** 3).sum(axis=0)
    peak = vectors[np.abs(vectors).argmax(axis=0), np.arange(vectors.shape[1])]
    use_skew = np.abs(skew) > 1e-6 * np.maximum(scale, 1e-300)
    signs = np.where(use_skew, np.sign(skew), np.sign(peak))
    signs[signs == 0] = 1.0
    out: FloatArray = vectors * signs
    return out


def eigenbasis(
    laplacian: Laplacian,
    k: int,
    *,
    seed: int = 0,
    complete_eigenspaces: bool = False,
    rtol: float = 1e-6,
    method: Literal["auto", "dense", "arpack"] = "auto",
) -> Eigenbasis:
    r"""Return the ``k`` smallest eigenpairs of a Laplacian, ``M``-orthonormal, signs fixed.

    Solves :math:`W\phi = \lambda M\phi` through the symmetric standard form
    :math:`M^{-1/2} W M^{-1/2} y = \lambda y`, :math:`\phi = M^{-1/2} y` (``M`` is diagonal).
    Small problems use LAPACK; large ones ARPACK in shift-invert mode around a small negative
    shift, with a sparse LU factorisation in a symmetric fill-reducing ordering
    (``MMD_AT_PLUS_A``), which is what makes it faster than the default COLAMD ordering of
    ``scipy.sparse.linalg.eigsh(W, M=A, sigma=...)`` used by pyFM.

    **Sign convention.** Each eigenvector is multiplied by :math:`\pm 1` so that its
    mass-weighted third moment :math:`\sum_i m_i \phi_i^3` is positive. This is intrinsic:
    relabelling the points or applying an isometry does not change which sign is chosen
    (for a simple eigenvalue). When the moment vanishes (to ``1e-6`` relative), the
    largest-magnitude entry is made positive instead, which is not relabelling-invariant.

    **Degenerate eigenspaces.** Inside an eigenspace any rotation of the vectors is as valid as
    the one returned; see :meth:`Eigenbasis.eigenspaces`. With ``complete_eigenspaces=True``
    the cut is moved past ``k`` so that no eigenspace is split (up to 16 extra vectors).

    Args:
        laplacian: The operator (see :func:`cotangent_laplacian`, :func:`graph_laplacian`).
        k: Number of eigenpairs, ``1 <= k <= n``.
        seed: Seeds ARPACK's start vector (results are reproducible bit for bit).
        complete_eigenspaces: Extend ``k`` so that the last eigenspace is complete.
        rtol: Relative eigenvalue tolerance that defines degeneracy.
        method: ``"dense"``, ``"arpack"`` or ``"auto"`` (dense below 1500 points).

    Returns:
        An ascending :class:`Eigenbasis` with ``mass = laplacian.mass``.

    Raises:
        WeightspaceValueError: if ``k`` is out of range or ``method`` unknown.

    Shapes:
        - output: ``vectors [n, k]``, ``values [k]``.

    Example:
        >>> from weightspace.spectral import graph_laplacian
        >>> lap = graph_laplacian([[0, 1], [1, 2], [2, 3]], num_nodes=4)
        >>> basis = eigenbasis(lap, 2)
        >>> abs(basis.values.round(4)).tolist()
        [0.0, 0.5858]
    """
    if not isinstance(laplacian, Laplacian):
        raise WeightspaceValueError(
            f"`laplacian` must be a Laplacian, got {describe(laplacian)}; build one with "
            "cotangent_laplacian, graph_laplacian or knn_laplacian"
        )
    n = laplacian.num_nodes
    if not 1 <= k <= n:
        raise WeightspaceValueError(f"`k` must be in [1, {n}] for {n} points, got {k}")
    if method not in ("auto", "dense", "arpack"):
        raise WeightspaceValueError(f"`method` must be 'auto', 'dense' or 'arpack', got {method!r}")
    k_solve = min(n, k + 16) if complete_eigenspaces else k
    inv_sqrt_m = 1.0 / np.sqrt(laplacian.mass)
    scaling = sp.diags(inv_sqrt_m)
    a = (scaling @ laplacian.stiffness @ scaling).tocsc()
    a = (a + a.T) * 0.5
    dense = method == "dense" or (method == "auto" and (n <= DENSE_LIMIT or k_solve >= n - 1))
    with blas_threads(1):
        values, y = _solve(a, n, k_solve, dense, seed)
    order = np.argsort(values, kind="stable")
    values, y = values[order], y[:, order]
    keep = k
    if complete_eigenspaces:
        while keep < k_solve and _same_space(values[keep - 1], values[keep], values, rtol):
            keep += 1
        if keep == k_solve and k_solve < n:
            logger.warning(
                "the eigenspace at k=%d extends past %d computed eigenpairs; it stays cut", k, keep
            )
    vectors = _fix_signs(y[:, :keep] * inv_sqrt_m[:, None], laplacian.mass)
    return Eigenbasis(vectors, values[:keep], laplacian.mass, "ascending")


def _solve(
    a: sp.csc_matrix, n: int, k_solve: int, dense: bool, seed: int
) -> tuple[FloatArray, FloatArray]:
    """The ``k_solve`` smallest eigenpairs of the symmetric ``a`` (LAPACK or ARPACK)."""
    if dense:
        values, y = scipy.linalg.eigh(a.toarray(), subset_by_index=[0, k_solve - 1])
        return values, y
    diag_scale = float(np.abs(a.diagonal()).max()) or 1.0
    sigma = -1e-5 * diag_scale
    shifted = (a - sigma * sp.identity(n, format="csc")).tocsc()
    lu = spla.splu(shifted, permc_spec="MMD_AT_PLUS_A", options={"SymmetricMode": True})
    op_inv = spla.LinearOperator((n, n), matvec=lu.solve, dtype=np.float64)
    v0 = np.random.default_rng(seed).standard_normal(n)
    values, y = spla.eigsh(a, k=k_solve, sigma=sigma, which="LM", OPinv=op_inv, v0=v0)
    return values, y


def covariance_eigenbasis(
    samples: ArrayLike | None = None,
    *,
    covariance: ArrayLike | None = None,
    k: int | None = None,
    shrinkage: float | Literal["ledoit-wolf"] = 0.0,
    center: bool = True,
) -> Eigenbasis:
    r"""Return the eigenbasis of a covariance matrix, largest variance first.

    From samples :math:`X` (rows), :math:`\hat\Sigma = \frac1N X_c^\top X_c` (``X_c`` centred
    when ``center``), shrunk towards a multiple of the identity:

    .. math::

        \Sigma_\alpha = (1-\alpha)\hat\Sigma + \alpha\,\frac{\mathrm{tr}\hat\Sigma}{d} I,

    with :math:`\alpha` given or estimated as in Ledoit & Wolf, "A well-conditioned estimator
    for large-dimensional covariance matrices", J. Multivariate Anal. 2004. Shrinkage keeps the
    eigenvectors and pulls the spectrum together, which matters for finite-sample estimates
    whose small eigenvalues are biased down. Signs follow the convention of :func:`eigenbasis`;
    ``mass`` is all ones (the Euclidean inner product).

    Args:
        samples: Observations as rows (or pass ``covariance``).
        covariance: A symmetric positive semi-definite matrix, instead of ``samples``.
        k: Number of leading eigenpairs (default: all ``d``).
        shrinkage: ``alpha`` in ``[0, 1]`` or ``"ledoit-wolf"`` (needs ``samples``).
        center: Subtract the sample mean (ignored with ``covariance``).

    Returns:
        A descending :class:`Eigenbasis` of ``d`` points (the coordinates).

    Raises:
        WeightspaceValueError: on a bad shape, both or neither input, or a bad ``shrinkage``.

    Shapes:
        - samples: ``[N, d]``; covariance: ``[d, d]``.
        - output: ``vectors [d, k]``, ``values [k]``.

    Example:
        >>> import numpy as np
        >>> basis = covariance_eigenbasis(covariance=np.diag([1.0, 3.0]))
        >>> basis.values.tolist(), abs(basis.vectors).tolist()
        ([3.0, 1.0], [[0.0, 1.0], [1.0, 0.0]])
    """
    if (samples is None) == (covariance is None):
        raise WeightspaceValueError("pass exactly one of `samples` and `covariance`")
    x: FloatArray | None = None
    if samples is not None:
        x = as_float_array(samples, "samples", ndim=2)
        if center:
            x = x - x.mean(axis=0, keepdims=True)
        cov = x.T @ x / max(x.shape[0], 1)
    else:
        assert covariance is not None
        cov = as_float_array(covariance, "covariance", ndim=2)
        if cov.shape[0] != cov.shape[1]:
            raise WeightspaceValueError(f"`covariance` must be square, got {list(cov.shape)}")
        cov = (cov + cov.T) * 0.5
    d = cov.shape[0]
    if shrinkage == "ledoit-wolf":
        if x is None:
            raise WeightspaceValueError("`shrinkage='ledoit-wolf'` needs `samples`")
        alpha = _ledoit_wolf(x, cov)
    elif isinstance(shrinkage, (int, float)) and 0.0 <= float(shrinkage) <= 1.0:
        alpha = float(shrinkage)
    else:
        raise WeightspaceValueError(
            f"`shrinkage` must be in [0, 1] or 'ledoit-wolf', got {shrinkage!r}"
        )
    mu = float(np.trace(cov)) / d
    cov = (1 - alpha) * cov + alpha * mu * np.eye(d)
    kk = d if k is None else k
    if not 1 <= kk <= d:
        raise WeightspaceValueError(f"`k` must be in [1, {d}], got {k}")
    values, vectors = scipy.linalg.eigh(cov, subset_by_index=[d - kk, d - 1])
    values, vectors = values[::-1], vectors[:, ::-1]
    values = np.clip(values, 0.0, None)
    ones = np.ones(d)
    return Eigenbasis(_fix_signs(vectors, ones), values, ones, "descending")


def _ledoit_wolf(x: FloatArray, cov: FloatArray) -> float:
    n, d = x.shape
    mu = float(np.trace(cov)) / d
    delta = float(((cov - mu * np.eye(d)) ** 2).sum()) / d
    x2 = x**2
    beta = float((x2.T @ x2).sum() / n - (cov**2).sum()) / (d * n)
    beta = min(beta, delta)
    return 0.0 if delta == 0 else beta / delta
