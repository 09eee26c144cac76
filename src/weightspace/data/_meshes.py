"""Procedural triangle meshes with known isometric correspondences.

A flat sheet (:func:`sheet_mesh`) and its developable bends (:func:`bend_sheet`) are two
surfaces with the same intrinsic geometry and a known point-to-point map (the identity on the
vertices), which makes them ground truth for shape-correspondence methods such as the
functional maps of :mod:`weightspace.spectral`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, TypeAlias

import numpy as np
import torch
from numpy.typing import NDArray

from weightspace._errors import WeightspaceValueError

__all__ = ["bend_sheet", "sheet_mesh"]

FloatArray: TypeAlias = NDArray[np.float64]
IntArray: TypeAlias = NDArray[np.int64]


def sheet_mesh(
    nu: int,
    nv: int,
    *,
    width: float = 2.0,
    height: float = 1.0,
    holes: bool = True,
    jitter: float = 0.0,
    seed: int = 0,
) -> tuple[FloatArray, IntArray]:
    """Return a flat triangulated sheet in the plane ``z = 0``, optionally with asymmetric holes.

    The grid of ``nu x nv`` vertices over ``[0, width] x [0, height]`` is split into triangles
    along alternating diagonals. With ``holes``, the triangles inside an off-centre disc and a
    notch in one corner are removed (and unused vertices dropped), so the sheet has no
    symmetry; without, a rectangle has two mirror symmetries (a case that spectral methods
    cannot resolve from intrinsic information). ``jitter`` moves interior vertices randomly in
    the plane by up to that fraction of a grid cell; up to ``0.25`` every triangle keeps its
    orientation, above about ``0.3`` some triangles can fold over.

    Args:
        nu: Vertices along the width (at least 3).
        nv: Vertices along the height (at least 3).
        width: Extent along ``x``.
        height: Extent along ``y``.
        holes: Cut the asymmetric hole and notch.
        jitter: In-plane jitter, as a fraction of a cell (``0 <= jitter < 0.5``).
        seed: Seeds the jitter.

    Returns:
        ``(vertices, faces)``.

    Raises:
        WeightspaceValueError: on a bad size or jitter.

    Shapes:
        - output: ``vertices [n, 3]`` (``z = 0``), ``faces [f, 3]``.

    Example:
        >>> from weightspace.data import sheet_mesh
        >>> v, f = sheet_mesh(4, 3, holes=False)
        >>> v.shape, f.shape
        ((12, 3), (12, 3))
    """
    if nu < 3 or nv < 3:
        raise WeightspaceValueError(f"`nu` and `nv` must be at least 3, got {nu} and {nv}")
    if not 0 <= jitter < 0.5:
        raise WeightspaceValueError(f"`jitter` must be in [0, 0.5), got {jitter}")
    xs, ys = np.linspace(0, width, nu), np.linspace(0, height, nv)
    gx, gy = np.meshgrid(xs, ys, indexing="ij")
    pts = np.stack([gx.ravel(), gy.ravel()], axis=1)
    if jitter > 0:
        rng = np.random.default_rng(seed)
        cell = np.array([width / (nu - 1), height / (nv - 1)])
        interior = (gx > 0) & (gx < width) & (gy > 0) & (gy < height)
        move = rng.uniform(-jitter, jitter, size=pts.shape) * cell
        pts = pts + move * interior.ravel()[:, None]
    idx = np.arange(nu * nv).reshape(nu, nv)
    a, b = idx[:-1, :-1].ravel(), idx[1:, :-1].ravel()
    c, d = idx[1:, 1:].ravel(), idx[:-1, 1:].ravel()
    flip = ((np.arange(nu - 1)[:, None] + np.arange(nv - 1)[None, :]) % 2 == 1).ravel()
    t1 = np.where(flip[:, None], np.stack([a, b, d], 1), np.stack([a, b, c], 1))
    t2 = np.where(flip[:, None], np.stack([b, c, d], 1), np.stack([a, c, d], 1))
    faces = np.concatenate([t1, t2])
    if holes:
        centroid = pts[faces].mean(axis=1)
        cx, cy = centroid[:, 0] / width, centroid[:, 1] / height
        in_hole = (cx - 0.68) ** 2 + ((cy - 0.4) * height / width) ** 2 < 0.13**2
        in_notch = (cx < 0.22) & (cy > 0.7)
        faces = faces[~(in_hole | in_notch)]
    used = np.unique(faces)
    remap = np.full(nu * nv, -1, dtype=np.int64)
    remap[used] = np.arange(used.size)
    vertices = np.concatenate([pts[used], np.zeros((used.size, 1))], axis=1)
    return vertices, remap[faces].astype(np.int64)


def bend_sheet(
    vertices: NDArray[Any] | torch.Tensor | Sequence[Any], curvature: float
) -> FloatArray:
    r"""Roll a flat sheet around an axis parallel to ``y``: an isometry of the surface.

    .. math::

        (x, y, 0) \mapsto \big(\sin(\kappa x)/\kappa,\ y,\ (1 - \cos(\kappa x))/\kappa\big),

    which preserves lengths along the surface (a developable bend), so the cotangent
    Laplacians of the flat and bent sheets agree up to discretisation. ``curvature = 0``
    returns a copy.

    Args:
        vertices: Vertices of a flat sheet in ``z = 0`` (from :func:`sheet_mesh`).
        curvature: :math:`\kappa` (``|kappa| * width < 2 pi`` avoids self-intersection).

    Returns:
        The bent vertices.

    Raises:
        WeightspaceValueError: if ``vertices`` is not ``[n, 3]``.

    Shapes:
        - vertices: ``[n, 3]``; output: ``[n, 3]``.

    Example:
        >>> import numpy as np
        >>> from weightspace.data import bend_sheet
        >>> bend_sheet(np.array([[np.pi, 0.0, 0.0]]), 1.0).round(6).tolist()
        [[0.0, 0.0, 2.0]]
    """
    v = _vertices(vertices)
    if v.shape[1] != 3:
        raise WeightspaceValueError(f"`vertices` must be [n, 3], got {list(v.shape)}")
    if curvature == 0:
        return v.copy()
    k = float(curvature)
    x = v[:, 0]
    out = np.stack([np.sin(k * x) / k, v[:, 1], (1 - np.cos(k * x)) / k], axis=1)
    return out


def _vertices(value: object) -> FloatArray:
    """``value`` as a finite ``float64`` array of rank 2, or a clear error."""
    if isinstance(value, torch.Tensor):
        value = value.detach().to("cpu", torch.float64).numpy()
    try:
        array = np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError):
        raise WeightspaceValueError(
            f"`vertices` must be a numeric array or tensor, got {type(value).__name__}"
        ) from None
    if array.ndim != 2:
        raise WeightspaceValueError(
            f"`vertices` must have 2 dimensions, got shape {list(array.shape)}"
        )
    if not np.isfinite(array).all():
        raise WeightspaceValueError("`vertices` must be finite, got nan or inf values")
    return array
