"""Mesh functional-map pipeline: weightspace.spectral against pyFM (``pip install pyfmaps``).

Same pair of meshes for both libraries, at about 5k and 50k vertices: a flat sheet with an
asymmetric hole and notch, sampled twice with different in-plane jitter (so the two
triangulations differ), bent isometrically by two different amounts, and with the second
mesh's vertices shuffled. Ground truth: each vertex of mesh 2 matches the vertex of mesh 1
nearest in the flat domain. Stages (timed separately, each library with its own code):

1. Laplacian (cotangent stiffness + lumped mass);
2. 100 eigenpairs per mesh (ZoomOut needs them; the initial map uses the first 50);
3. WKS descriptors (100 energies from 50 eigenpairs);
4. map estimation at k = 50 with descriptor, Laplacian-commutativity and
   descriptor-commutativity terms (ours: conjugate gradients on the normal equations,
   ``FunctionalMapEstimator()`` defaults; pyFM: L-BFGS, its documented defaults);
5. ZoomOut from 50 to 100 (step 1) on 3000 sampled vertices per mesh (ours: random samples,
   then its default ``polish=3`` passes at k = 100 on 6000, 12000, 24000 samples or all
   vertices; pyFM: geodesic farthest-point samples, drawn from a random first point);
6. the final point-to-point map on all vertices.

Accuracy: mean correspondence error in the flat domain (geodesic for this developable
surface, up to the hole) divided by sqrt(area). With ``--stage-errors`` (not timed) it also
reports the error of the k = 50 map's point map and the floor of the k = 100 basis (the
point map of the true map's k = 100 functional map). BLAS, OpenMP and torch run on
``--threads`` threads (default 1, for both libraries). Run::

    nice -n 5 .venv/bin/python benchmarks/bench_spectral_vs_pyfm.py --stage-errors  # 5k and 50k
    .venv/bin/python benchmarks/bench_spectral_vs_pyfm.py --sizes 5000 --json out.json
"""

from __future__ import annotations

import argparse
import json
import math
import os
import time
from collections.abc import Callable
from typing import Any

import numpy as np

from weightspace import data, spectral

K_INIT, K_FINAL, N_ENERGIES, SUBSAMPLE = 50, 100, 100, 3000


def make_pair(n_target: int, seed: int = 0) -> dict[str, Any]:
    nv = max(3, round(math.sqrt(n_target / 2 / 0.93)))
    nu = 2 * nv
    v1, f1 = data.sheet_mesh(nu, nv, jitter=0.25, seed=seed)
    v2, f2 = data.sheet_mesh(nu, nv, jitter=0.25, seed=seed + 1)
    perm = np.random.default_rng(seed + 2).permutation(len(v2))
    flat2 = v2[perm]
    f2 = np.argsort(perm)[f2]
    gt = spectral.nearest_neighbors(v1[:, :2], flat2[:, :2])
    return {
        "x": data.bend_sheet(v1, 1.2),
        "fx": f1,
        "y": data.bend_sheet(flat2, 2.6),
        "fy": f2,
        "flat_x": v1,
        "gt": gt,
    }


def timed(stages: dict[str, float], name: str, fn: Callable[[], Any]) -> Any:
    t = time.perf_counter()
    out = fn()
    stages[name] = time.perf_counter() - t
    return out


def run_ours(
    pair: dict[str, Any], errors: dict[str, float] | None
) -> tuple[dict[str, float], np.ndarray, float]:
    st: dict[str, float] = {}
    lx, ly = timed(
        st,
        "laplacian",
        lambda: (
            spectral.cotangent_laplacian(pair["x"], pair["fx"]),
            spectral.cotangent_laplacian(pair["y"], pair["fy"]),
        ),
    )
    bx, by = timed(
        st,
        "eigenpairs",
        lambda: (spectral.eigenbasis(lx, K_FINAL), spectral.eigenbasis(ly, K_FINAL)),
    )
    sx, sy = bx.truncate(K_INIT), by.truncate(K_INIT)
    dx, dy = timed(
        st,
        "descriptors",
        lambda: (
            spectral.wave_kernel_signature(sx, num_energies=N_ENERGIES),
            spectral.wave_kernel_signature(sy, num_energies=N_ENERGIES),
        ),
    )
    fmap = timed(st, "fit", lambda: spectral.FunctionalMapEstimator().fit(sx, sy, dx, dy).map_)
    zo = timed(st, "zoomout", lambda: spectral.zoomout(fmap, bx, by, subsample=SUBSAMPLE, seed=0))
    p2p = timed(st, "p2p", zo.to_pointwise)
    if errors is not None:
        errors["init"] = _error(pair, fmap.to_pointwise(), lx.area)
        truth = spectral.FunctionalMap.from_pointwise(pair["gt"], bx, by)
        errors["floor"] = _error(pair, truth.to_pointwise(), lx.area)
    return st, p2p, lx.area


def _error(pair: dict[str, Any], p2p: Any, area: float) -> float:
    return spectral.correspondence_error(p2p, pair["gt"], pair["flat_x"], area=area)


def run_pyfm(
    pair: dict[str, Any], errors: dict[str, float] | None, area: float
) -> tuple[dict[str, float], np.ndarray]:
    from pyFM.functional import FunctionalMapping
    from pyFM.mesh import TriMesh
    from pyFM.mesh.laplacian import laplacian_spectrum

    st: dict[str, float] = {}
    m1 = TriMesh(pair["x"], pair["fx"])
    m2 = TriMesh(pair["y"], pair["fy"])
    timed(st, "laplacian", lambda: (m1.compute_operators(), m2.compute_operators()))

    def spectrum(mesh: Any) -> None:
        # TriMesh.compute_spectrum would rebuild the operators timed above
        mesh.eigenvalues, mesh.eigenvectors = laplacian_spectrum(
            mesh.stiffness, mesh.mass, spectrum_size=K_FINAL
        )

    timed(st, "eigenpairs", lambda: (spectrum(m1), spectrum(m2)))
    model = FunctionalMapping(m1, m2)
    timed(
        st,
        "descriptors",
        lambda: model.compute_spectral_descriptors(
            n_descr=N_ENERGIES, descr_type="WKS", k_descr=K_INIT
        ),
    )
    timed(st, "fit", lambda: model.fit(K=(K_INIT, K_INIT), w_descr=1e-1, w_lap=1e-3, w_dcomm=1))
    fm = timed(
        st,
        "zoomout",
        lambda: model.zoomout_refine(nit=K_FINAL - K_INIT, step=1, subsample=SUBSAMPLE),
    )
    p2p = timed(st, "p2p", lambda: model.get_p2p(FM=fm))
    if errors is not None:
        errors["init"] = _error(pair, model.get_p2p(FM=model.FM_12), area)
    return st, np.asarray(p2p)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[5000, 50000])
    parser.add_argument("--json", type=str, default=None, help="write the results here")
    parser.add_argument("--threads", type=int, default=1, help="BLAS/OpenMP/torch threads")
    parser.add_argument(
        "--stage-errors",
        action="store_true",
        help="also report the error of the k=50 maps and of the true map (not timed)",
    )
    args = parser.parse_args()
    try:
        import pyFM.functional
        import pyFM.mesh  # noqa: F401  (loads scikit-learn and its OpenMP before the limits)

        have_pyfm = True
    except ImportError:
        have_pyfm = False
        print("pyFM is not installed (pip install pyfmaps): timing weightspace only")
    _limit_threads(args.threads)
    print(f"load average before: {os.getloadavg()}")
    results = []
    for size in args.sizes:
        pair = make_pair(size)
        n = len(pair["x"])
        ours_err: dict[str, float] | None = {} if args.stage_errors else None
        st, p2p, area = run_ours(pair, ours_err)
        row: dict[str, Any] = {
            "vertices": n,
            "threads": args.threads,
            "ours": st,
            "ours_total": sum(st.values()),
            "ours_error": _error(pair, p2p, area),
        }
        if ours_err is not None:
            row["ours_stage_errors"] = ours_err
        if have_pyfm:
            pyfm_err: dict[str, float] | None = {} if args.stage_errors else None
            pst, pp2p = run_pyfm(pair, pyfm_err, area)
            row["pyfm"] = pst
            row["pyfm_total"] = sum(pst.values())
            row["pyfm_error"] = _error(pair, pp2p, area)
            if pyfm_err is not None:
                row["pyfm_stage_errors"] = pyfm_err
            row["speedup"] = row["pyfm_total"] / row["ours_total"]
        row["load_average"] = os.getloadavg()
        results.append(row)
        print(f"\n== {n} vertices ==")
        print(f"{'stage':<12}{'ours (s)':>10}{'pyFM (s)':>10}{'ratio':>8}")
        for stage, t in st.items():
            pt = row.get("pyfm", {}).get(stage, float("nan"))
            print(f"{stage:<12}{t:>10.2f}{pt:>10.2f}{pt / t if t > 0 else float('nan'):>8.2f}")
        print(
            f"{'total':<12}{row['ours_total']:>10.2f}{row.get('pyfm_total', float('nan')):>10.2f}"
            f"{row.get('speedup', float('nan')):>8.2f}"
        )
        print(
            f"error/sqrt(area): ours {row['ours_error']:.5f}  "
            f"pyFM {row.get('pyfm_error', float('nan')):.5f}"
        )
        if ours_err is not None:
            print(
                f"k=50 map: ours {ours_err['init']:.5f}  "
                f"pyFM {row.get('pyfm_stage_errors', {}).get('init', float('nan')):.5f}; "
                f"floor of the k=100 basis (true map): {ours_err['floor']:.5f}"
            )
        print(f"load average: {row['load_average']}", flush=True)
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(results, fh, indent=2)


def _limit_threads(threads: int) -> None:
    import torch

    torch.set_num_threads(threads)
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:  # BLAS keeps its default; set OMP_NUM_THREADS before starting
        print("threadpoolctl is not installed: BLAS threads are not limited")
        return
    threadpool_limits(threads)
    from threadpoolctl import threadpool_info

    pools = sorted({f"{p['internal_api']}={p['num_threads']}" for p in threadpool_info()})
    print(f"threads: torch={torch.get_num_threads()} {' '.join(pools)}")


if __name__ == "__main__":
    main()
