"""Deprecated aliases of the mesh generators that moved to :mod:`weightspace.data`."""

from __future__ import annotations

import numpy as np
from numpy.typing import NDArray

from weightspace._deprecation import deprecated
from weightspace.spectral._common import ArrayLike

__all__ = ["bend_sheet", "sheet_mesh"]


@deprecated(since="0.1", alternative="weightspace.data.sheet_mesh", name="spectral.sheet_mesh")
def sheet_mesh(
    nu: int,
    nv: int,
    *,
    width: float = 2.0,
    height: float = 1.0,
    holes: bool = True,
    jitter: float = 0.0,
    seed: int = 0,
) -> tuple[NDArray[np.float64], NDArray[np.int64]]:
    """Return a flat triangulated sheet; see :func:`weightspace.data.sheet_mesh`.

    Args:
        nu: Vertices along the width.
        nv: Vertices along the height.
        width: Extent along ``x``.
        height: Extent along ``y``.
        holes: Cut the asymmetric hole and notch.
        jitter: In-plane jitter, as a fraction of a cell.
        seed: Seeds the jitter.

    Returns:
        ``(vertices, faces)``.
    """
    from weightspace.data import sheet_mesh as new

    return new(nu, nv, width=width, height=height, holes=holes, jitter=jitter, seed=seed)


@deprecated(since="0.1", alternative="weightspace.data.bend_sheet", name="spectral.bend_sheet")
def bend_sheet(vertices: ArrayLike, curvature: float) -> NDArray[np.float64]:
    """Roll a flat sheet around an axis parallel to ``y``; see :func:`weightspace.data.bend_sheet`.

    Args:
        vertices: Vertices of a flat sheet in ``z = 0``.
        curvature: The curvature of the bend.

    Returns:
        The bent vertices.
    """
    from weightspace.data import bend_sheet as new

    return new(vertices, curvature)
