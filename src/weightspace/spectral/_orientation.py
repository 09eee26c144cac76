r"""Orientation operators of descriptors on triangle meshes (private).

For a function :math:`f` on an oriented surface, the operator

.. math::

    O_f(g) = \langle n \times \nabla f, \nabla g \rangle = \det(n, \nabla f, \nabla g)

measures how ``g`` turns around ``f``'s level sets; an orientation-preserving isometry ``T``
satisfies :math:`T O_{f_X} = O_{f_Y} T` for corresponding ``f``, an orientation-reversing one
the same with :math:`-O_{f_Y}` (Ren, Poulenard, Wonka & Ovsjanikov, "Continuous and
orientation-preserving correspondences via functional maps", SIGGRAPH Asia 2018).

Discretised with piecewise-linear functions and averaged to the vertices with lumped masses,
its matrix in an ``M``-orthonormal basis is

.. math::

    G_f = \Phi^\top M O_f \Phi = \tfrac16 \sum_{t} \Big(\sum_{v \in t} \Phi_v\Big)^{\!\top}
    \Big(\sum_{i \in t} (f_{i^{++}} - f_{i^{+}})\, \Phi_i\Big),

where :math:`i^{+}, i^{++}` are the next two corners of triangle ``t`` in its winding order:
:math:`\det(n, \nabla f, \nabla g)` is the 2-form :math:`df \wedge dg`, whose integral over a
triangle, :math:`\frac12 \sum_i g_i (f_{i^{++}} - f_{i^{+}})`, depends on the winding only, not
on the vertex positions. So the operator needs the faces (consistently wound on each shape)
and the basis, nothing else.
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp

from weightspace._errors import WeightspaceValueError
from weightspace.spectral._basis import Eigenbasis
from weightspace.spectral._common import ArrayLike, FloatArray, IntArray, tensor_to_numpy

__all__ = ["check_faces", "orientation_operators"]

#: Descriptors whose operators are built in one matrix product (bounds the memory used).
_CHUNK = 4


def check_faces(faces: ArrayLike, n: int, name: str) -> IntArray:
    """Return ``faces`` as an ``int64`` ``[f, 3]`` array of vertex indices in ``[0, n)``."""
    f = np.asarray(tensor_to_numpy(faces))
    if f.ndim != 2 or f.shape[1] != 3 or not np.issubdtype(f.dtype, np.integer) or not f.size:
        raise WeightspaceValueError(
            f"`{name}` must be a non-empty integer array of triangles [f, 3], got shape "
            f"{list(f.shape)} and dtype {f.dtype}"
        )
    if f.min() < 0 or f.max() >= n:
        raise WeightspaceValueError(
            f"`{name}` must index the basis' {n} points, got indices in [{f.min()}, {f.max()}]"
        )
    return f.astype(np.int64)


def orientation_operators(basis: Eigenbasis, faces: IntArray, functions: FloatArray) -> FloatArray:
    r"""Return :math:`G_f` for each column ``f`` of ``functions`` (see the module docstring).

    Cost: :math:`O(n k^2)` per function (one ``[k, n] x [n, k]`` product), like the
    multiplication operators.

    Shapes:
        - faces: ``[t, 3]``; functions: ``[n, d]``; output: ``[d, k, k]``.
    """
    phi = np.ascontiguousarray(basis.vectors)
    n, k = phi.shape
    t = faces.shape[0]
    # incidence: each triangle's value is added to its three vertices
    incidence = sp.csr_matrix(
        (np.ones(3 * t), (faces.T.ravel(), np.tile(np.arange(t), 3))), shape=(n, t)
    )
    corners = [phi[faces[:, i]] for i in range(3)]  # 3 x [t, k]
    d = functions.shape[1]
    out = np.empty((d, k, k))
    for start in range(0, d, _CHUNK):
        cols = range(start, min(start + _CHUNK, d))
        moved = np.empty((n, len(cols) * k))
        for j, col in enumerate(cols):
            f = functions[faces, col]  # [t, 3]
            per_face = sum(
                (f[:, (i + 2) % 3] - f[:, (i + 1) % 3])[:, None] * corners[i] for i in range(3)
            )
            moved[:, j * k : (j + 1) * k] = incidence @ np.asarray(per_face)
        block = phi.T @ moved / 6.0  # [k, len(cols) * k]
        out[start : start + len(cols)] = block.reshape(k, len(cols), k).transpose(1, 0, 2)
    return out
