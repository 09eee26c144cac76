"""The mesh path of ``weightspace.spectral`` runs on numpy and scipy alone: torch stays unloaded."""

from __future__ import annotations

import json
import subprocess
import sys

_SCRIPT = """
import json, sys
import numpy as np
import weightspace
from weightspace import spectral

# a bumpy grid surface, its copy with permuted vertices, and the whole mesh pipeline
nu, nv = 24, 12
x, y = np.meshgrid(np.linspace(0, 2, nu), np.linspace(0, 1, nv))
v = np.c_[x.ravel(), y.ravel(), 0.1 * np.sin(3 * x.ravel()) * np.cos(2 * y.ravel())]
i = np.arange(nu * nv).reshape(nv, nu)
a, b, c, d = i[:-1, :-1].ravel(), i[:-1, 1:].ravel(), i[1:, 1:].ravel(), i[1:, :-1].ravel()
f = np.r_[np.c_[a, b, c], np.c_[a, c, d]]
perm = np.random.default_rng(0).permutation(len(v))
ly = spectral.cotangent_laplacian(v[perm], np.argsort(perm)[f])
bx = spectral.eigenbasis(spectral.cotangent_laplacian(v, f), 30)
by = spectral.eigenbasis(ly, 30)
dx = spectral.wave_kernel_signature(bx.truncate(12), num_energies=20)
dy = spectral.wave_kernel_signature(by.truncate(12), num_energies=20)
est = spectral.FunctionalMapEstimator().fit(
    bx.truncate(12), by.truncate(12), dx, dy, source_faces=f, target_faces=np.argsort(perm)[f]
)
p2p = spectral.zoomout(est.map_, bx, by, subsample=100).to_pointwise()
spectral.knn_laplacian(v, 6)
spectral.graph_laplacian([[0, 1], [1, 2]])
err = spectral.correspondence_error(p2p, perm, v, area=ly.area)
print(json.dumps({"torch": "torch" in sys.modules, "error": err}))
"""


def test_mesh_path_never_imports_torch() -> None:
    out = subprocess.run(
        [sys.executable, "-c", _SCRIPT], capture_output=True, text=True, check=True, timeout=120
    )
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result["torch"] is False
    assert result["error"] < 0.02  # the pipeline did real work


def test_neural_encoding_names_still_resolve() -> None:
    from weightspace import spectral

    assert spectral.linear_cka.__module__ == "weightspace.spectral._neural"
    assert spectral.weight_spectra.__module__ == "weightspace.spectral._spectra"
    assert {"linear_cka", "weight_spectra", "WeightCovariances"} <= set(dir(spectral))


def test_blas_threads_limits_and_restores() -> None:
    from threadpoolctl import threadpool_info

    from weightspace.spectral._common import blas_threads

    def blas() -> set[int]:
        return {p["num_threads"] for p in threadpool_info() if p["user_api"] == "blas"}

    before = blas()
    with blas_threads(1):
        assert blas() <= {1}
    assert blas() == before
    with blas_threads(None):
        assert blas() == before
