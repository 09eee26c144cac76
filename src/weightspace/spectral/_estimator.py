"""Estimating a functional map from descriptors, with commutativity regularisation."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Literal

import numpy as np
import scipy.linalg

from weightspace._errors import WeightspaceValueError
from weightspace.spectral._basis import Eigenbasis
from weightspace.spectral._common import (
    ArrayLike,
    FloatArray,
    as_float_array,
    blas_threads,
    describe,
)
from weightspace.spectral._descriptors import _multiplication_operators
from weightspace.spectral._fmap import FunctionalMap
from weightspace.spectral._orientation import check_faces, orientation_operators

__all__ = ["FunctionalMapEstimator", "Orientation", "Regularization"]

logger = logging.getLogger(__name__)


Regularization = Literal["resolvent", "laplacian"]
Orientation = Literal["preserving", "reversing"]

#: The orientation weight used when meshes are given and ``orientation_weight`` is ``None``.
DEFAULT_ORIENTATION_WEIGHT = 1.0


class FunctionalMapEstimator:
    r"""Estimate a functional map from corresponding descriptors.

    Minimises, over :math:`C \in \mathbb{R}^{k_Y \times k_X}`,

    .. math::

        \|C A - B\|_F^2 + \mu \sum_{ij} m_{ij}\, C_{ij}^2
        + \beta \rho \sum_{d} \|C P_d - Q_d C\|_F^2
        + \gamma \rho_o \sum_{d} \|C G_d - s H_d C\|_F^2,
        \qquad A = \Phi_X^\top M_X D_X,\ B = \Phi_Y^\top M_Y D_Y,

    where the descriptors ``D`` (heat / wave kernel signatures or any functions that should
    correspond) are normalised column by column with the source's norms, and :math:`m_{ij}`
    penalises non-commutativity with the Laplacians: :math:`(\lambda^Y_i - \lambda^X_j)^2`
    (``"laplacian"``, Ovsjanikov et al. 2012) or its resolvent form with
    :math:`\gamma = 1/2` (``"resolvent"``, Ren et al., "Structured regularization of functional
    map computations", SGP 2019), eigenvalues divided by the largest.

    The last term asks ``C`` to commute with the operators of multiplication by each
    descriptor, :math:`P_d = \Phi_X^\top M_X \operatorname{diag}(D_X[:, d])\, \Phi_X` and
    :math:`Q_d = \Phi_Y^\top M_Y \operatorname{diag}(D_Y[:, d])\, \Phi_Y`: a point map that
    preserves a descriptor transports products with it, :math:`T(f\,d_X) = (Tf)\,d_Y`
    (Nogneng & Ovsjanikov, "Informative Descriptor Preservation via Commutativity for Shape
    Matching", Eurographics 2017). It uses how each descriptor varies over the surface, not only
    its projection, and pins down the map better than the first term alone. The factor

    .. math::

        \rho = \|A\|_F^2 \Big/ \sum_d \big\|P_d - \tfrac{\operatorname{tr} P_d}{k_X} I\big\|_F^2

    makes :math:`\beta` independent of the descriptors' scale and number (a constant added to
    a descriptor does not change the commutator, so it is removed from the normaliser).

    The last term, used when the triangles of both meshes are passed to :meth:`fit`, is the
    orientation-preserving term of Ren et al. ("Continuous and orientation-preserving
    correspondences via functional maps", SIGGRAPH Asia 2018): :math:`G_d` and :math:`H_d` are
    the operators :math:`g \mapsto \langle n \times \nabla d, \nabla g\rangle` of each
    descriptor on ``X`` and ``Y`` in the bases (``s = 1``; ``s = -1`` with
    ``orientation="reversing"`` for maps that flip the orientation, such as onto a mirror
    image). The intrinsic terms above cannot tell a shape from its mirror image; this one can.
    The operator is :math:`d\,\mathrm{descriptor} \wedge dg`, which depends on the winding of
    the triangles and not on the vertex positions, so only the faces are needed, wound
    consistently on each mesh and alike on both (for example, normals pointing outwards).
    :math:`\rho_o = \|A\|_F^2 / \sum_d \|G_d\|_F^2` makes :math:`\gamma` scale-free like
    :math:`\beta`. For the map of an isometry with full bases, all terms vanish: the true map
    is a minimiser.

    With :math:`\beta = \gamma = 0` the penalty is diagonal in :math:`\mathrm{vec}(C)` and each
    row has the closed form
    :math:`c_i = b_i A^\top (A A^\top + \mu\,\mathrm{diag}(m_{i\cdot}))^{-1}`.
    Otherwise the rows are coupled: the normal equations are solved by conjugate
    gradients, preconditioned by those per-row systems, to a relative residual of ``1e-10``
    (``n_iter_`` records the iterations). Before that, the descriptors are reduced to their
    numerical rank ``r`` by an orthogonal mixing of the columns, applied alike on both shapes,
    which leaves the sum over ``d`` unchanged up to parts below ``1e-7`` of the largest
    singular value (WKS with 100 energies from 50 eigenpairs have ``r`` of about 20). Cost:
    :math:`O(n k^2 r)` for the operators and :math:`O(r k^3)` per iteration (about 110
    iterations). At ``k = 50`` with 100 WKS energies, one core, the fit takes about 0.2 s
    instead of 0.04 s at 4.5k vertices per shape and 1.5 s instead of 0.3 s at 45k.

    Settings live in ``__init__``; :meth:`fit` returns ``self`` with ``map_`` set.

    Args:
        laplacian_weight: ``mu`` (non-negative).
        regularization: ``"resolvent"`` or ``"laplacian"``.
        normalize_descriptors: Scale each descriptor to unit ``M``-norm on the source.
        descriptor_commutativity_weight: ``beta`` (non-negative; ``0`` turns the term off and
            gives the closed form per row). On the 4.5k-vertex benchmark sheets, the
            error of the k = 50 map's point map is 0.00132 at ``0`` and 0.00103-0.00105 for
            any ``beta`` in ``0.01 .. 0.3`` (0.00108 at 1, 0.00244 at 100); the default,
            ``0.1``, sits inside that flat range.
        orientation_weight: ``gamma`` (non-negative), or ``None``: 1 when :meth:`fit` gets
            both meshes' faces, 0 otherwise. A positive value without the faces is an error.
            On near-isometric validation pairs (bumpy stretched spheres, bent; 50 WKS
            energies from 100 eigenpairs, k = 50), the k = 50 map's error fell from
            0.006-0.31 without the term to 0.003-0.048 at 1; 0.1 helped less and 10 was
            similar to 1.
        orientation: ``"preserving"`` (``s = 1``) or ``"reversing"`` (``s = -1``).

    Attributes:
        map_: The fitted :class:`FunctionalMap`.
        descriptor_residual_: :math:`\|CA - B\|_F / \|B\|_F` at the solution.
        descriptor_commutativity_residual_: :math:`\big(\sum_d \|C P_d - Q_d C\|_F^2 \big/
            \sum_d \|P_d - \tfrac{\operatorname{tr} P_d}{k_X} I\|_F^2\big)^{1/2}` at the
            solution (``nan`` when ``beta`` is 0).
        orientation_residual_: :math:`\big(\sum_d \|C G_d - s H_d C\|_F^2 \big/ \sum_d
            \|G_d\|_F^2\big)^{1/2}` at the solution (``nan`` when the term is off).
        orientation_weight_: The ``gamma`` used (``0.0`` when the term is off).
        n_iter_: Conjugate-gradient iterations (``0`` for the closed form).

    Example:
        >>> import numpy as np
        >>> from weightspace.spectral import eigenbasis, graph_laplacian, wave_kernel_signature
        >>> lap = graph_laplacian([[i, i + 1] for i in range(29)] + [[3, 10]])
        >>> b = eigenbasis(lap, 10)
        >>> d = wave_kernel_signature(b, num_energies=20)
        >>> est = FunctionalMapEstimator().fit(b, b, d, d)
        >>> est.map_.matrix.shape
        (10, 10)
        >>> bool(np.abs(est.map_.matrix - np.eye(10)).max() < 1e-6)
        True
    """

    def __init__(
        self,
        *,
        laplacian_weight: float = 1e-2,
        regularization: Regularization = "resolvent",
        normalize_descriptors: bool = True,
        descriptor_commutativity_weight: float = 0.1,
        orientation_weight: float | None = None,
        orientation: Orientation = "preserving",
    ) -> None:
        self.laplacian_weight = laplacian_weight
        self.regularization = regularization
        self.normalize_descriptors = normalize_descriptors
        self.descriptor_commutativity_weight = descriptor_commutativity_weight
        self.orientation_weight = orientation_weight
        self.orientation = orientation

    def fit(
        self,
        source: Eigenbasis,
        target: Eigenbasis,
        source_descriptors: ArrayLike,
        target_descriptors: ArrayLike,
        *,
        source_faces: ArrayLike | None = None,
        target_faces: ArrayLike | None = None,
    ) -> FunctionalMapEstimator:
        """Fit ``C`` from descriptors that correspond between the two domains.

        Args:
            source: Basis on ``X`` (its ``k`` sets ``k_X``).
            target: Basis on ``Y``.
            source_descriptors: Descriptors on ``X``.
            target_descriptors: The same descriptors on ``Y``, column for column.
            source_faces: Triangles of ``X`` (vertex indices into the basis' points), for the
                orientation term; pass both meshes' faces or neither.
            target_faces: Triangles of ``Y``.

        Returns:
            ``self``, with ``map_``, ``descriptor_residual_``,
            ``descriptor_commutativity_residual_``, ``orientation_residual_``,
            ``orientation_weight_`` and ``n_iter_`` set.

        Raises:
            WeightspaceValueError: on a bad setting, descriptor shape or faces, one mesh's
                faces without the other's, or a positive ``orientation_weight`` without faces.

        Shapes:
            - source_descriptors: ``[n_X, d]``; target_descriptors: ``[n_Y, d]``.
            - source_faces: ``[t_X, 3]``; target_faces: ``[t_Y, 3]``.
        """
        if not self.laplacian_weight >= 0:
            raise WeightspaceValueError(
                f"`laplacian_weight` must be non-negative, got {self.laplacian_weight!r}"
            )
        beta = self.descriptor_commutativity_weight
        if not (beta >= 0 and np.isfinite(beta)):
            raise WeightspaceValueError(
                f"`descriptor_commutativity_weight` must be finite and non-negative, got "
                f"{beta!r}; pass 0 to turn the term off"
            )
        if self.regularization not in ("resolvent", "laplacian"):
            raise WeightspaceValueError(
                f"`regularization` must be 'resolvent' or 'laplacian', got {self.regularization!r}"
            )
        gamma = self._orientation_gamma(source_faces, target_faces)
        with blas_threads(1):  # k x k products: threads cost more than they save
            return self._fit(
                source,
                target,
                source_descriptors,
                target_descriptors,
                beta,
                gamma,
                source_faces,
                target_faces,
            )

    def _fit(
        self,
        source: Eigenbasis,
        target: Eigenbasis,
        source_descriptors: ArrayLike,
        target_descriptors: ArrayLike,
        beta: float,
        gamma: float,
        source_faces: ArrayLike | None,
        target_faces: ArrayLike | None,
    ) -> FunctionalMapEstimator:
        dx = as_float_array(source_descriptors, "source_descriptors", ndim=2)
        dy = as_float_array(target_descriptors, "target_descriptors", ndim=2)
        if dx.shape[0] != source.n or dy.shape[0] != target.n or dx.shape[1] != dy.shape[1]:
            raise WeightspaceValueError(
                f"descriptors must be [n_X, d] = [{source.n}, d] and [n_Y, d] = [{target.n}, d], "
                f"got {describe(dx)} and {describe(dy)}"
            )
        if self.normalize_descriptors:
            norms = np.sqrt((source.mass[:, None] * dx**2).sum(axis=0))
            norms[norms == 0] = 1.0
            dx, dy = dx / norms, dy / norms
        a = source.project(dx)  # [kx, d]
        b = target.project(dy)  # [ky, d]
        mask = _commutativity_mask(source.values, target.values, self.regularization)
        system = _NormalEquations(a, b, self.laplacian_weight * mask)
        self.n_iter_ = 0
        self.descriptor_commutativity_residual_ = float("nan")
        self.orientation_residual_ = float("nan")
        self.orientation_weight_ = gamma
        scale = float((a**2).sum())
        # (operators on X, operators on Y, weight, normaliser, residual attribute)
        terms: list[tuple[FloatArray, FloatArray, float, float, str]] = []
        if beta > 0 or gamma > 0:
            mixed_x, mixed_y = _reduce_descriptors(source, target, dx, dy)
        if beta > 0:
            p = _multiplication_operators(source, mixed_x)  # [r, kx, kx]
            q = _multiplication_operators(target, mixed_y)  # [r, ky, ky]
            spread = _centered_energy(p)
            if spread > 0:
                terms.append((p, q, beta * scale / spread, spread, "descriptor_commutativity"))
            else:  # constant descriptors: every C commutes with multiples of the identity
                self.descriptor_commutativity_residual_ = 0.0
        if gamma > 0:
            fx = check_faces(source_faces, source.n, "source_faces")  # type: ignore[arg-type]
            fy = check_faces(target_faces, target.n, "target_faces")  # type: ignore[arg-type]
            g = orientation_operators(source, fx, mixed_x)
            h = orientation_operators(target, fy, mixed_y)
            if self.orientation == "reversing":
                h = -h
            energy = float((g**2).sum())
            if energy > 0:
                terms.append((g, h, gamma * scale / energy, energy, "orientation"))
            else:
                self.orientation_residual_ = 0.0
        if terms:
            symmetric = all(t[4] == "descriptor_commutativity" for t in terms)
            if len(terms) == 1:
                system.add_commutativity(*terms[0][:3], symmetric=symmetric)
            else:  # sum_d w ||C P_d - Q_d C||^2 of both terms = one stack of scaled operators
                system.add_commutativity(
                    np.concatenate([np.sqrt(t[2]) * t[0] for t in terms]),
                    np.concatenate([np.sqrt(t[2]) * t[1] for t in terms]),
                    1.0,
                    symmetric=symmetric,
                )
            c, self.n_iter_ = system.solve_cg()
            for ops_x, ops_y, _, normaliser, name in terms:
                commutator = np.matmul(c, ops_x) - np.matmul(ops_y, c)
                residual = float(np.sqrt((commutator**2).sum() / normaliser))
                setattr(self, f"{name}_residual_", residual)
        else:
            c = system.solve_rows()
        self.map_ = FunctionalMap(c, source, target)
        denom = float(np.linalg.norm(b)) or 1.0
        self.descriptor_residual_ = float(np.linalg.norm(c @ a - b)) / denom
        return self

    def _orientation_gamma(
        self, source_faces: ArrayLike | None, target_faces: ArrayLike | None
    ) -> float:
        """The orientation weight to use, after checking it against the faces given."""
        if self.orientation not in ("preserving", "reversing"):
            raise WeightspaceValueError(
                f"`orientation` must be 'preserving' or 'reversing', got {self.orientation!r}"
            )
        if (source_faces is None) != (target_faces is None):
            given = "source_faces" if target_faces is None else "target_faces"
            raise WeightspaceValueError(
                f"`{given}` was given alone; the orientation term needs both meshes' faces "
                "(pass `source_faces` and `target_faces`, or neither)"
            )
        has_faces = source_faces is not None
        gamma = self.orientation_weight
        if gamma is None:
            return DEFAULT_ORIENTATION_WEIGHT if has_faces else 0.0
        if not (gamma >= 0 and np.isfinite(gamma)):
            raise WeightspaceValueError(
                f"`orientation_weight` must be finite and non-negative, got {gamma!r}; pass 0 "
                "to turn the term off"
            )
        if gamma > 0 and not has_faces:
            raise WeightspaceValueError(
                f"`orientation_weight={gamma}` needs the meshes: pass `source_faces` and "
                "`target_faces` to `fit`, or set `orientation_weight=0`"
            )
        return float(gamma)


#: Relative residual at which the conjugate-gradient solve of the estimator stops.
_CG_RTOL = 1e-10


def _reduce_descriptors(
    source: Eigenbasis, target: Eigenbasis, dx: FloatArray, dy: FloatArray
) -> tuple[FloatArray, FloatArray]:
    """Mix the descriptor columns orthogonally (alike on both shapes) down to numerical rank."""
    gram = dx.T @ (source.mass[:, None] * dx) + dy.T @ (target.mass[:, None] * dy)
    values, vectors = np.linalg.eigh((gram + gram.T) * 0.5)
    keep = values > 1e-14 * max(float(values.max()), 1e-300)
    mix = vectors[:, keep]
    return dx @ mix, dy @ mix


def _centered_energy(ops: FloatArray) -> float:
    r""":math:`\sum_d \|P_d - (\mathrm{tr} P_d / k) I\|_F^2`."""
    k = ops.shape[-1]
    trace = np.trace(ops, axis1=1, axis2=2)
    return float((ops**2).sum() - (trace**2).sum() / k)


@dataclass(frozen=True)
class _Commutativity:
    """The descriptor-commutativity term: operators, their summed squares and its weight."""

    p: FloatArray  # [r, kx, kx]
    q: FloatArray  # [r, ky, ky]
    p_sq: FloatArray  # sum_d P_d P_d^T
    q_sq: FloatArray  # sum_d Q_d^T Q_d
    w: float
    symmetric: bool  # every P_d and Q_d is symmetric (multiplication operators)


class _NormalEquations:
    r"""Normal equations of the estimator's energy, as an operator on ``C`` (private).

    ``H(C) = C A A^T + W * C + w (C S_P + S_Q C - sum_d (Q_d^T C P_d + Q_d C P_d^T))`` with
    ``W = mu m``, ``S_P = sum_d P_d P_d^T`` and ``S_Q = sum_d Q_d^T Q_d`` (the last sum is
    ``2 sum_d Q_d C P_d`` for symmetric operators); the right-hand side is ``B A^T``. ``H`` is
    half the gradient of the energy plus ``B A^T``.
    """

    def __init__(self, a: FloatArray, b: FloatArray, weights: FloatArray) -> None:
        self.gram = a @ a.T  # [kx, kx]
        self.rhs = b @ a.T  # [ky, kx]
        self.weights = weights  # [ky, kx]
        self.commutativity: _Commutativity | None = None

    def add_commutativity(
        self, p: FloatArray, q: FloatArray, w: float, *, symmetric: bool = True
    ) -> None:
        if symmetric:
            p_sq = np.einsum("dij,djk->ik", p, p)
            q_sq = np.einsum("dij,djk->ik", q, q)
        else:
            p_sq = np.einsum("dij,dkj->ik", p, p)
            q_sq = np.einsum("dji,djk->ik", q, q)
        self.commutativity = _Commutativity(p, q, p_sq, q_sq, w, symmetric)

    def energy(self, c: FloatArray, b: FloatArray, a: FloatArray) -> float:
        """The energy at ``c``, from the projected descriptors ``a`` and ``b`` of the system."""
        out = float(((c @ a - b) ** 2).sum() + (self.weights * c**2).sum())
        t = self.commutativity
        if t is not None:
            out += t.w * float(((np.matmul(c, t.p) - np.matmul(t.q, c)) ** 2).sum())
        return out

    def blocks(self) -> FloatArray:
        """The diagonal blocks of ``H``, one ``[kx, kx]`` block per row of ``C``."""
        ky, kx = self.weights.shape
        out = np.broadcast_to(self.gram, (ky, kx, kx)).copy()
        idx = np.arange(kx)
        out[:, idx, idx] += self.weights
        t = self.commutativity
        if t is not None:
            q_diag = np.einsum("dii->di", t.q)  # [r, ky]
            out += t.w * t.p_sq
            out[:, idx, idx] += t.w * np.diag(t.q_sq)[:, None]
            if t.symmetric:
                out -= 2 * t.w * np.einsum("di,djk->ijk", q_diag, t.p)
            else:
                both = t.p + t.p.transpose(0, 2, 1)
                out -= t.w * np.einsum("di,djk->ijk", q_diag, both)
        return out

    def solve_rows(self) -> FloatArray:
        """Row-by-row closed form (exact when the commutativity term is off)."""
        blocks = self.blocks()
        c = np.empty_like(self.rhs)
        for i in range(c.shape[0]):
            c[i] = scipy.linalg.solve(blocks[i], self.rhs[i], assume_a="pos")
        return c

    def apply(self, c: FloatArray) -> FloatArray:
        out: FloatArray = c @ self.gram + self.weights * c
        t = self.commutativity
        if t is not None:
            if t.symmetric:
                mixed = 2 * np.matmul(np.matmul(t.q, c), t.p).sum(axis=0)
            else:
                qt = t.q.transpose(0, 2, 1)
                mixed = np.matmul(np.matmul(qt, c), t.p).sum(axis=0)
                mixed += np.matmul(np.matmul(t.q, c), t.p.transpose(0, 2, 1)).sum(axis=0)
            out += t.w * (c @ t.p_sq + t.q_sq @ c - mixed)
        return out

    def solve_cg(self) -> tuple[FloatArray, int]:
        """Block-Jacobi preconditioned conjugate gradients on ``H(C) = B A^T``."""
        blocks = self.blocks()
        scale = np.trace(blocks, axis1=1, axis2=2) / blocks.shape[1]
        idx = np.arange(blocks.shape[1])
        blocks[:, idx, idx] += 1e-12 * np.maximum(scale, 1e-300)[:, None]
        inverse = np.linalg.inv(blocks)

        def precondition(r: FloatArray) -> FloatArray:
            out: FloatArray = np.einsum("ijk,ik->ij", inverse, r)
            return out

        rhs = self.rhs
        target = _CG_RTOL * (float(np.linalg.norm(rhs)) or 1.0)
        c = precondition(rhs)
        r = rhs - self.apply(c)
        z = precondition(r)
        d = z.copy()
        rz = float((r * z).sum())
        max_iter = 10 * rhs.size
        for it in range(max_iter):
            if float(np.linalg.norm(r)) <= target:
                return c, it
            hd = self.apply(d)
            alpha = rz / float((d * hd).sum())
            c = c + alpha * d
            r = r - alpha * hd
            z = precondition(r)
            rz_next = float((r * z).sum())
            d = z + (rz_next / rz) * d
            rz = rz_next
        logger.warning(
            "the functional-map solve stopped after %d iterations at relative residual %.1e",
            max_iter,
            float(np.linalg.norm(r)) / (float(np.linalg.norm(rhs)) or 1.0),
        )
        return c, max_iter


def _commutativity_mask(lx: FloatArray, ly: FloatArray, kind: Regularization) -> FloatArray:
    scale = max(float(np.abs(lx).max()), float(np.abs(ly).max()), 1e-300)
    x, y = np.abs(lx) / scale, np.abs(ly) / scale
    if kind == "laplacian":
        out: FloatArray = (y[:, None] - x[None, :]) ** 2
        return out
    gamma = 0.5
    xg, yg = x**gamma, y**gamma
    re = yg[:, None] / (yg[:, None] ** 2 + 1) - xg[None, :] / (xg[None, :] ** 2 + 1)
    im = 1 / (yg[:, None] ** 2 + 1) - 1 / (xg[None, :] ** 2 + 1)
    out = re**2 + im**2
    return out
