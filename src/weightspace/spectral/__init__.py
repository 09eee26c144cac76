"""Spectral maps: functional maps between shapes and neural encodings of CNN weights, as one object.

Both representations are matrices of inner products between two eigenbases through a
correspondence, ``C = pinv(Phi_Y) Pi Phi_X`` (a :class:`FunctionalMap`):

* **Bases.** :func:`graph_laplacian`, :func:`knn_laplacian` and :func:`cotangent_laplacian`
  build a :class:`Laplacian` (stiffness and lumped mass); :func:`eigenbasis` solves the
  generalised eigenproblem (signs fixed, degenerate eigenspaces reported);
  :func:`covariance_eigenbasis` diagonalises a (shrunk) covariance.
* **Functional maps** (Ovsjanikov et al., SIGGRAPH 2012): :class:`FunctionalMap` from and to
  point maps, composition, adjoint, inverse and diagnostics; descriptors
  (:func:`heat_kernel_signature`, :func:`wave_kernel_signature`); estimation with
  Laplacian- and descriptor-commutativity regularisation (:class:`FunctionalMapEstimator`);
  :func:`zoomout` refinement (with polishing passes after subsampling);
  :func:`correspondence_error`.
* **Neural encodings** (Guth & Ménard, ICLR 2024 Re-Align workshop): :func:`weight_covariances`
  of a layer, :func:`procrustes_rotation` of two networks' activations,
  :func:`neural_encoding_map` (the same :class:`FunctionalMap` with a rotation as
  correspondence), :func:`weight_spectra` (every layer's spectra, split across ``torchrun``
  ranks when launched so), :func:`bures_wasserstein_similarity`, and the :func:`linear_cka`
  baseline.

Arrays are returned as ``float64`` numpy arrays; inputs are :data:`ArrayLike` (numpy arrays,
tensors or nested sequences). The test meshes ``sheet_mesh`` and ``bend_sheet`` moved to
:mod:`weightspace.data` (:func:`weightspace.data.sheet_mesh`); the names here are deprecated
aliases, removed in 0.2.

Example:
    >>> import numpy as np
    >>> from weightspace import data, spectral
    >>> v, f = data.sheet_mesh(12, 8)
    >>> basis = spectral.eigenbasis(spectral.cotangent_laplacian(v, f), 10)
    >>> perm = np.random.default_rng(0).permutation(basis.n)
    >>> fmap = spectral.FunctionalMap.from_pointwise(perm, basis, basis.permute(perm))
    >>> bool(abs(abs(fmap.matrix) - np.eye(10)).max() < 1e-8)
    True
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any, TypeAlias

from weightspace.spectral._basis import Eigenbasis as Eigenbasis
from weightspace.spectral._basis import covariance_eigenbasis as covariance_eigenbasis
from weightspace.spectral._basis import eigenbasis as eigenbasis
from weightspace.spectral._common import ArrayLike as _ArrayLike
from weightspace.spectral._descriptors import heat_kernel_signature as heat_kernel_signature
from weightspace.spectral._descriptors import wave_kernel_signature as wave_kernel_signature
from weightspace.spectral._estimator import FunctionalMapEstimator as FunctionalMapEstimator
from weightspace.spectral._fmap import FunctionalMap as FunctionalMap
from weightspace.spectral._fmap import correspondence_error as correspondence_error
from weightspace.spectral._fmap import nearest_neighbors as nearest_neighbors
from weightspace.spectral._fmap import zoomout as zoomout
from weightspace.spectral._laplacian import Laplacian as Laplacian
from weightspace.spectral._laplacian import cotangent_laplacian as cotangent_laplacian
from weightspace.spectral._laplacian import graph_laplacian as graph_laplacian
from weightspace.spectral._laplacian import knn_laplacian as knn_laplacian
from weightspace.spectral._shapes import bend_sheet as bend_sheet
from weightspace.spectral._shapes import sheet_mesh as sheet_mesh

if TYPE_CHECKING:
    from weightspace.spectral._neural import WeightCovariances as WeightCovariances
    from weightspace.spectral._neural import (
        bures_wasserstein_similarity as bures_wasserstein_similarity,
    )
    from weightspace.spectral._neural import channel_samples as channel_samples
    from weightspace.spectral._neural import collect_activations as collect_activations
    from weightspace.spectral._neural import linear_cka as linear_cka
    from weightspace.spectral._neural import neural_encoding_map as neural_encoding_map
    from weightspace.spectral._neural import procrustes_rotation as procrustes_rotation
    from weightspace.spectral._neural import weight_covariances as weight_covariances
    from weightspace.spectral._spectra import LayerSpectra as LayerSpectra
    from weightspace.spectral._spectra import weight_spectra as weight_spectra

# The neural-encoding functions need torch; they are imported on first use, so that the mesh
# path (Laplacians, bases, functional maps, ZoomOut) runs with numpy and scipy only.
_LAZY = {
    "WeightCovariances": "_neural",
    "bures_wasserstein_similarity": "_neural",
    "channel_samples": "_neural",
    "collect_activations": "_neural",
    "linear_cka": "_neural",
    "neural_encoding_map": "_neural",
    "procrustes_rotation": "_neural",
    "weight_covariances": "_neural",
    "LayerSpectra": "_spectra",
    "weight_spectra": "_spectra",
}

ArrayLike: TypeAlias = _ArrayLike
"""An array argument: a numpy array, a torch tensor (detached and copied to the CPU) or a
(nested) sequence of numbers. Float inputs are read as ``float64`` and index inputs as
``int64``; the functions that also take a :mod:`scipy.sparse` matrix say so."""

__all__ = [
    "ArrayLike",
    "Eigenbasis",
    "FunctionalMap",
    "FunctionalMapEstimator",
    "Laplacian",
    "LayerSpectra",
    "WeightCovariances",
    "bend_sheet",
    "bures_wasserstein_similarity",
    "channel_samples",
    "collect_activations",
    "correspondence_error",
    "cotangent_laplacian",
    "covariance_eigenbasis",
    "eigenbasis",
    "graph_laplacian",
    "heat_kernel_signature",
    "knn_laplacian",
    "linear_cka",
    "nearest_neighbors",
    "neural_encoding_map",
    "procrustes_rotation",
    "sheet_mesh",
    "wave_kernel_signature",
    "weight_covariances",
    "weight_spectra",
    "zoomout",
]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        value = getattr(importlib.import_module(f"{__name__}.{_LAZY[name]}"), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))
