"""Spectral point descriptors: heat and wave kernel signatures."""

from __future__ import annotations

import numpy as np

from weightspace._errors import WeightspaceValueError
from weightspace.spectral._basis import Eigenbasis
from weightspace.spectral._common import ArrayLike, FloatArray, as_float_array

__all__ = ["heat_kernel_signature", "wave_kernel_signature"]


def _check_basis(basis: Eigenbasis) -> None:
    if not isinstance(basis, Eigenbasis) or basis.order != "ascending":
        raise WeightspaceValueError(
            "`basis` must be an ascending (Laplacian) Eigenbasis from `eigenbasis(...)`"
        )
    if basis.k < 3:
        raise WeightspaceValueError(f"`basis` needs at least 3 eigenpairs, got {basis.k}")


def heat_kernel_signature(
    basis: Eigenbasis, times: ArrayLike | None = None, *, num_times: int = 16, scaled: bool = True
) -> FloatArray:
    r"""Return the heat kernel signature of every point (Sun, Ovsjanikov & Guibas, SGP 2009).

    .. math::

        \mathrm{HKS}(x, t) = \sum_i e^{-t\lambda_i}\,\phi_i(x)^2,

    at ``num_times`` times log-spaced in :math:`[4\ln 10/\lambda_{k}, 4\ln 10/\lambda_1]` unless
    given. With ``scaled``, each column is divided by :math:`\sum_i e^{-t\lambda_i}`. It is
    invariant to eigenvector signs, to rotations inside eigenspaces and to isometries.

    Args:
        basis: An ascending Laplacian eigenbasis.
        times: Diffusion times (positive), or ``None`` for the automatic grid.
        num_times: Number of automatic times.
        scaled: Normalise each time by the heat trace.

    Returns:
        The descriptors.

    Raises:
        WeightspaceValueError: on a covariance basis, fewer than 3 eigenpairs or bad times.

    Shapes:
        - output: ``[n, T]``.

    Example:
        >>> from weightspace.spectral import eigenbasis, graph_laplacian
        >>> basis = eigenbasis(graph_laplacian([[0, 1], [1, 2], [2, 3]]), 4)
        >>> heat_kernel_signature(basis, num_times=5).shape
        (4, 5)
    """
    _check_basis(basis)
    lam = np.abs(basis.values)
    if times is None:
        positive = lam[lam > 1e-10 * max(lam.max(), 1e-300)]
        if positive.size == 0:
            raise WeightspaceValueError("`basis` has no positive eigenvalue")
        t = np.geomspace(4 * np.log(10) / lam.max(), 4 * np.log(10) / positive.min(), num_times)
    else:
        t = as_float_array(times, "times", ndim=1)
        if (t <= 0).any():
            raise WeightspaceValueError("`times` must be positive")
    weights = np.exp(-np.outer(lam, t))  # [k, T]
    out: FloatArray = (basis.vectors**2) @ weights
    if scaled:
        out = out / weights.sum(axis=0, keepdims=True)
    return out


def wave_kernel_signature(
    basis: Eigenbasis, *, num_energies: int = 100, scaled: bool = True
) -> FloatArray:
    r"""Return the wave kernel signature (Aubry, Schlickewei & Cremers, ICCV workshops 2011).

    .. math::

        \mathrm{WKS}(x, e) = \frac{\sum_i \phi_i(x)^2\, g_e(\lambda_i)}{\sum_i g_e(\lambda_i)},
        \quad g_e(\lambda) = \exp\Big(-\frac{(e - \ln\lambda)^2}{2\sigma^2}\Big),

    with ``num_energies`` energies on :math:`[\ln\lambda_2 + 2\sigma, \ln\lambda_k - 2\sigma]`
    and :math:`\sigma = 7(\ln\lambda_k - \ln\lambda_2)/E` (pyFM's ``auto_WKS``); zero
    eigenvalues are skipped. Invariant to signs, rotations in eigenspaces and isometries.

    Args:
        basis: An ascending Laplacian eigenbasis.
        num_energies: Number of energies ``E``.
        scaled: Divide by the normaliser :math:`\sum_i g_e(\lambda_i)` (as written above).

    Returns:
        The descriptors.

    Raises:
        WeightspaceValueError: on a covariance basis or fewer than 3 eigenpairs.

    Shapes:
        - output: ``[n, E]``.

    Example:
        >>> from weightspace.spectral import eigenbasis, graph_laplacian
        >>> basis = eigenbasis(graph_laplacian([[0, 1], [1, 2], [2, 3], [3, 4]]), 5)
        >>> wave_kernel_signature(basis, num_energies=3).shape
        (5, 3)
    """
    _check_basis(basis)
    if num_energies < 1:
        raise WeightspaceValueError(f"`num_energies` must be positive, got {num_energies}")
    lam = np.abs(basis.values)
    keep = lam > 1e-8 * max(lam.max(), 1e-300)
    if keep.sum() < 2:
        raise WeightspaceValueError("`basis` needs at least 2 positive eigenvalues for the WKS")
    log_lam = np.log(lam[keep])
    e_min, e_max = float(log_lam.min()), float(log_lam.max())
    sigma = 7 * (e_max - e_min) / num_energies
    energies = np.linspace(e_min + 2 * sigma, e_max - 2 * sigma, num_energies)
    g = np.exp(-((energies[None, :] - log_lam[:, None]) ** 2) / (2 * sigma**2))  # [k', E]
    out: FloatArray = (basis.vectors[:, keep] ** 2) @ g
    if scaled:
        out = out / g.sum(axis=0, keepdims=True)
    return out


def _multiplication_operators(basis: Eigenbasis, functions: FloatArray) -> FloatArray:
    r"""Return the operators of multiplication by each function, in the basis (private).

    :math:`P_d = \Phi^\top M\,\mathrm{diag}(f_d)\,\Phi` (Nogneng & Ovsjanikov, Eurographics
    2017): symmetric, and equal to :math:`c I` for a constant function :math:`f = c` when the
    basis is ``M``-orthonormal. One ``[k, n] x [n, k]`` matrix product per function, so the
    cost is :math:`O(n k^2 d)`.

    Shapes:
        - functions: ``[n, d]``; output: ``[d, k, k]``.
    """
    vectors = np.ascontiguousarray(basis.vectors)
    weighted = basis.mass[:, None] * functions
    out = np.empty((functions.shape[1], basis.k, basis.k))
    for d in range(functions.shape[1]):
        out[d] = (vectors * weighted[:, d : d + 1]).T @ vectors
        out[d] = (out[d] + out[d].T) * 0.5
    return out
