"""Mesh functional maps: weightspace.spectral against pyFM (``pip install pyfmaps``), Pareto table.

Each configuration runs the whole pipeline (Laplacian, 100 eigenpairs, WKS descriptors, a map
fitted at k = 50, ZoomOut to k = 100, the final point map) in its own subprocess, so that its
wall time and peak resident memory (``ru_maxrss``) are its own. Every configuration sees the
same pairs of near-isometric meshes:

* ``sphere``: a bumpy geodesic sphere (frequency 22 or 70: 4,842 or 49,002 vertices),
  stretched (2 : 1 : 0.8) and bent along its long axis (0.09 radian per quarter length: edge
  lengths change by up to 7 %), then rigidly moved, its vertices permuted;
* ``sphere-bent``: the same with a stronger bend (0.25: up to 19 %);
* ``shipped``: meshes shipped in Debian's ``libcgal-demo`` package (CGAL's ``data/meshes/``:
  ``homer.off``, 4,930 vertices, ``bull.off``, 6,200, and ``dino.off``, 3,916, at ~5k;
  ``refined_elephant.off``, 44,460, at ~50k), bent along their longest axis like ``sphere``,
  rigidly moved and permuted. Extract them with::

      apt-get download libcgal-demo && dpkg-deb -x libcgal-demo_*_all.deb cgal
      tar xzf cgal/usr/share/doc/libcgal-dev/data.tar.gz data/meshes/homer.off \\
          data/meshes/bull.off data/meshes/dino.off data/meshes/refined_elephant.off

  and pass ``--mesh-dir data/meshes`` (the pairs are skipped without it).

Error: mean and median Euclidean distance between the predicted and true match on the source
mesh, over sqrt(area) (as functional-map papers and pyFM report).

Configurations (``--configs``): pyFM as its README quick start runs it (``pyfm-readme``: WKS,
``fit(K=50, w_descr=1, w_lap=1e-1, w_dcomm=1, w_orient=1)``, ``zoomout_refine(nit=10,
step=5)`` on all vertices), faster (``pyfm-fast``: ``nit=5, step=10``), on 3,000
farthest-point samples (``pyfm-subsample``: ``nit=10, step=5, subsample=3000``, pyFM's own
fast option, which was slower than its README setting at both sizes here) and more accurate
(``pyfm-accurate``: ``nit=25, step=2`` on all vertices); ours at defaults (``ours``:
``FunctionalMapEstimator()`` with the faces, so with the orientation term, and ``zoomout``
defaults: steps 2 and 10, the best-covering map kept), faster (``ours-fast``: step 10 only,
no final passes) and with more passes (``ours-8-passes``: ``final_passes=8``; at ~50k the
default runs none, so this adds eight passes on all points there). Both libraries
get 100 eigenpairs (pyFM's ``k_process``; its default 200 would only slow it down) and the
same descriptors: every second of 100 WKS energies from the 100 eigenpairs (pyFM's
``subsample_step=2``).

Threads: ``--threads 1`` limits BLAS/OpenMP (threadpoolctl) and our k-d tree searches to one
thread; ``--threads 0`` leaves every library its default. ``--large-pairs``,
``--large-configs`` and ``--large-threads`` replace ``--pairs``, ``--configs`` and
``--threads`` at 50k vertices; ``--seeds`` gives the spheres' seeds at ~5k (one pair each;
seed 0 at 50k). The idle run (about 40 minutes on two idle cores, most of it pyFM at 50k)::

    nice -n 5 .venv/bin/python benchmarks/bench_spectral_vs_pyfm.py --mesh-dir data/meshes \\
        --seeds 0 1 2 --large-pairs sphere shipped --large-threads 1 \\
        --out benchmarks/results/spectral_vs_pyfm.md
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import resource
import shlex
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

K_INIT, K_FINAL, N_ENERGIES = 50, 100, 100
PYFM_CONFIGS = ("pyfm-readme", "pyfm-fast", "pyfm-subsample", "pyfm-accurate")
OURS_CONFIGS = ("ours", "ours-fast", "ours-8-passes")
KINDS = ("sphere", "sphere-bent", "shipped")
SPHERE_FREQUENCY = {5000: 22, 50000: 70}
SHIPPED = {5000: ("homer.off", "bull.off", "dino.off"), 50000: ("refined_elephant.off",)}


# ---- pairs --------------------------------------------------------------------------------------


def icosphere(frequency: int) -> tuple[np.ndarray, np.ndarray]:
    """Geodesic sphere: each icosahedron face split into frequency^2 triangles (outward)."""
    g = (1 + math.sqrt(5)) / 2
    top = [[-1, g, 0], [1, g, 0], [-1, -g, 0], [1, -g, 0], [0, -1, g], [0, 1, g]]
    bottom = [[0, -1, -g], [0, 1, -g], [g, 0, -1], [g, 0, 1], [-g, 0, -1], [-g, 0, 1]]
    ico = np.array([*top, *bottom], dtype=float)
    tris = np.array(
        [
            *[[0, 11, 5], [0, 5, 1], [0, 1, 7], [0, 7, 10], [0, 10, 11], [1, 5, 9], [5, 11, 4]],
            *[[11, 10, 2], [10, 7, 6], [7, 1, 8], [3, 9, 4], [3, 4, 2], [3, 2, 6], [3, 6, 8]],
            *[[3, 8, 9], [4, 9, 5], [2, 4, 11], [6, 2, 10], [8, 6, 7], [9, 8, 1]],
        ]
    )
    f = frequency
    ij = [(i, j) for i in range(f + 1) for j in range(f + 1 - i)]
    index = {p: n for n, p in enumerate(ij)}
    local = []
    for i, j in ij:
        if i + j < f:
            local.append((index[i, j], index[i + 1, j], index[i, j + 1]))
        if i + j < f - 1:
            local.append((index[i + 1, j], index[i + 1, j + 1], index[i, j + 1]))
    loc = np.array(local)
    w = np.array(ij, dtype=float) / f
    points, faces = [], []
    for n, (a, b, c) in enumerate(tris):
        pa, pb, pc = ico[a], ico[b], ico[c]
        if np.dot(np.cross(pb - pa, pc - pa), pa + pb + pc) < 0:
            pb, pc = pc, pb
        points.append(pa + w[:, :1] * (pb - pa) + w[:, 1:] * (pc - pa))
        faces.append(loc + n * len(ij))
    p = np.concatenate(points)
    p /= np.linalg.norm(p, axis=1, keepdims=True)
    _, first, inverse = np.unique(np.round(p, 9), axis=0, return_index=True, return_inverse=True)
    return p[first], inverse.ravel()[np.concatenate(faces)]


def bumpy_stretched_sphere(frequency: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    v, f = icosphere(frequency)
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(9, 3))
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)
    heights, widths = rng.uniform(0.08, 0.25, 9), rng.uniform(0.25, 0.5, 9)
    d2 = ((v[:, None, :] - centres[None]) ** 2).sum(-1)
    r = 1 + (heights * np.exp(-d2 / (2 * widths**2))).sum(1)
    return v * r[:, None] * np.array([2.0, 1.0, 0.8]), f


def bend(v: np.ndarray, curvature: float) -> np.ndarray:
    """Bend along the longest principal axis (arc length kept on the mid-surface)."""
    centred = v - v.mean(0)
    axes = np.linalg.svd(centred, full_matrices=False)[2]  # longest axis first
    local = centred @ axes.T
    length = np.ptp(local[:, 0])
    kappa = curvature / (length / 4)  # dimensionless: the bend depends on the shape only
    x, z = local[:, 0], local[:, 2]
    radius = 1 / kappa
    bent = np.c_[
        (radius - z) * np.sin(kappa * x), local[:, 1], radius - (radius - z) * np.cos(kappa * x)
    ]
    return bent @ axes


def read_off(path: Path) -> tuple[np.ndarray, np.ndarray]:
    tokens = [ln.split("#")[0].split() for ln in path.read_text().splitlines()]
    tokens = [t for t in tokens if t]
    if tokens[0][0].endswith("OFF"):
        tokens[0] = tokens[0][1:]
        if not tokens[0]:
            tokens = tokens[1:]
    nv, nf = int(tokens[0][0]), int(tokens[0][1])
    v = np.array([[float(x) for x in t[:3]] for t in tokens[1 : 1 + nv]])
    f = np.array([[int(x) for x in t[1:4]] for t in tokens[1 + nv : 1 + nv + nf]])
    used = np.unique(f)
    remap = np.full(nv, -1)
    remap[used] = np.arange(len(used))
    return v[used], remap[f]


def make_pair(
    kind: str, size: int, mesh_dir: Path | None, seed: int = 0, mesh: str = ""
) -> dict[str, Any] | None:
    """A pair of ``kind`` at ``size``; ``mesh`` names the shipped mesh, ``seed`` the sphere."""
    if kind == "shipped":
        if mesh_dir is None or not (mesh_dir / mesh).exists():
            return None
        vx, fx = read_off(mesh_dir / mesh)
        name, curvature = mesh.removesuffix(".off"), 0.09
    else:
        vx, fx = bumpy_stretched_sphere(SPHERE_FREQUENCY[size], seed)
        name, curvature = (
            kind + (f"-seed{seed}" if seed else ""),
            (0.09 if kind == "sphere" else 0.25),
        )
    rng = np.random.default_rng(seed + 1)
    rotation = np.linalg.qr(rng.normal(size=(3, 3)))[0]
    rotation *= np.sign(np.linalg.det(rotation))
    vy = bend(vx, curvature) @ rotation.T + rng.normal(size=3)
    perm = rng.permutation(len(vx))
    return {
        "name": f"{name}-{len(vx)}",
        "x": vx,
        "fx": fx,
        "y": vy[perm],
        "fy": np.argsort(perm)[fx],
        "gt": perm,  # target vertex j is source vertex perm[j]
    }


def edge_change(pair: dict[str, Any]) -> float:
    """Largest relative change of an edge length between the source and target."""
    f = pair["fx"]
    e = np.r_[f[:, [0, 1]], f[:, [1, 2]], f[:, [2, 0]]]
    inv = np.argsort(pair["gt"])
    lx = np.linalg.norm(pair["x"][e[:, 0]] - pair["x"][e[:, 1]], axis=1)
    ly = np.linalg.norm(pair["y"][inv[e[:, 0]]] - pair["y"][inv[e[:, 1]]], axis=1)
    return float(np.abs(ly / lx - 1).max())


# ---- one configuration (in a subprocess) ------------------------------------------------------


def run_ours(pair: dict[str, Any], config: str, threads: int) -> np.ndarray:
    from weightspace import spectral

    workers = 1 if threads == 1 else None
    bx = spectral.eigenbasis(spectral.cotangent_laplacian(pair["x"], pair["fx"]), K_FINAL)
    by = spectral.eigenbasis(spectral.cotangent_laplacian(pair["y"], pair["fy"]), K_FINAL)
    sx, sy = bx.truncate(K_INIT), by.truncate(K_INIT)
    # pyFM's README descriptors: 100 WKS energies from all eigenpairs, every second one kept
    dx = spectral.wave_kernel_signature(bx, num_energies=N_ENERGIES // 2)
    dy = spectral.wave_kernel_signature(by, num_energies=N_ENERGIES // 2)
    est = spectral.FunctionalMapEstimator().fit(
        sx, sy, dx, dy, source_faces=pair["fx"], target_faces=pair["fy"]
    )
    kw: dict[str, Any] = {"workers": workers}
    if config == "ours-fast":
        kw |= {"step": 10, "final_passes": 0}
    elif config == "ours-8-passes":
        kw |= {"final_passes": 8}
    zo = spectral.zoomout(est.map_, bx, by, **kw)
    return zo.to_pointwise()


def run_pyfm(pair: dict[str, Any], config: str) -> np.ndarray:
    from pyFM.functional import FunctionalMapping
    from pyFM.mesh import TriMesh

    model = FunctionalMapping(TriMesh(pair["x"], pair["fx"]), TriMesh(pair["y"], pair["fy"]))
    model.preprocess(
        n_descr=N_ENERGIES, descr_type="WKS", subsample_step=2, k_process=K_FINAL, k_descr=K_FINAL
    )
    model.fit(K=K_INIT, w_descr=1e0, w_lap=1e-1, w_dcomm=1e0, w_orient=1e0)
    if config == "pyfm-readme":
        fm = model.zoomout_refine(nit=10, step=5)
    elif config == "pyfm-fast":
        fm = model.zoomout_refine(nit=5, step=10)
    elif config == "pyfm-subsample":
        fm = model.zoomout_refine(nit=10, step=5, subsample=3000)
    else:
        fm = model.zoomout_refine(nit=25, step=2)
    return np.asarray(model.get_p2p(FM=fm))


def worker(args: argparse.Namespace) -> None:
    if args.threads == 1:
        from threadpoolctl import threadpool_limits

        if args.config.startswith("pyfm"):
            import pyFM.mesh  # noqa: F401  (loads scikit-learn's OpenMP before the limit)
        threadpool_limits(1)
    data = np.load(args.pair)
    pair = {k: data[k] for k in data.files}
    t0 = time.perf_counter()
    if args.config.startswith("pyfm"):
        p2p = run_pyfm(pair, args.config)
    else:
        p2p = run_ours(pair, args.config, args.threads)
    wall = time.perf_counter() - t0
    from weightspace import spectral

    area = spectral.cotangent_laplacian(pair["x"], pair["fx"]).area
    dist = np.linalg.norm(pair["x"][p2p] - pair["x"][pair["gt"]], axis=1) / math.sqrt(area)
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(
        json.dumps({"wall_s": wall, "rss_mib": rss, "mean": dist.mean(), "median": np.median(dist)})
    )


# ---- driver -----------------------------------------------------------------------------------


def versions() -> str:
    import numpy
    import scipy

    out = [f"python {platform.python_version()}", f"numpy {numpy.__version__}"]
    out.append(f"scipy {scipy.__version__}")
    try:
        from importlib.metadata import version

        out.append(f"pyfmaps {version('pyfmaps')}")
        out.append(f"weightspace {version('weightspace')}")
    except Exception:  # pyfmaps or weightspace not installed as a distribution
        pass
    return ", ".join(out)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--sizes", type=int, nargs="+", default=[5000, 50000], choices=[5000, 50000]
    )
    parser.add_argument("--pairs", nargs="+", default=list(KINDS), choices=KINDS)
    parser.add_argument("--configs", nargs="+", default=[*PYFM_CONFIGS, *OURS_CONFIGS])
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 0], help="1 or 0 (default)")
    parser.add_argument(
        "--seeds", type=int, nargs="+", default=[0], help="sphere seeds at ~5k (one pair each)"
    )
    parser.add_argument("--large-pairs", nargs="+", default=None, choices=KINDS)
    parser.add_argument("--large-configs", nargs="+", default=None)
    parser.add_argument("--large-threads", type=int, nargs="+", default=None)
    parser.add_argument("--mesh-dir", type=Path, default=None, help="CGAL's data/meshes")
    parser.add_argument("--out", type=Path, default=None, help="markdown table")
    parser.add_argument("--note", default="", help="a line written under the table's title")
    parser.add_argument("--timeout", type=int, default=1800, help="seconds per configuration")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--pair", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--config", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        args.threads = args.threads[0]
        worker(args)
        return
    load_before = os.getloadavg()
    print(f"load average before: {load_before}", flush=True)
    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory() as tmp:
        for size in args.sizes:
            large = size >= 50000
            pairs = args.large_pairs if large and args.large_pairs else args.pairs
            configs = args.large_configs if large and args.large_configs else args.configs
            thread_counts = args.large_threads if large and args.large_threads else args.threads
            seeds = [0] if large else args.seeds
            jobs = [
                (kind, seed, mesh)
                for kind in pairs
                for seed in (seeds if kind != "shipped" else [0])
                for mesh in (SHIPPED[size] if kind == "shipped" else [""])
            ]
            for kind, seed, mesh in jobs:
                pair = make_pair(kind, size, args.mesh_dir, seed=seed, mesh=mesh)
                if pair is None:
                    print(f"skipping {mesh} at {size}: not in --mesh-dir")
                    continue
                path = Path(tmp) / f"{pair['name']}.npz"
                np.savez(path, **{k: v for k, v in pair.items() if k != "name"})
                change = edge_change(pair)
                for threads in thread_counts:
                    for config in configs:
                        row = run_one(path, pair["name"], config, threads, args.timeout)
                        row["edge_change"] = change
                        rows.append(row)
                        print(format_row(row), flush=True)
    load_after = os.getloadavg()
    print(f"load average after: {load_after}")
    if args.out:
        write_table(args, rows, load_before, load_after)


def run_one(path: Path, name: str, config: str, threads: int, timeout: int) -> dict[str, Any]:
    env = dict(os.environ)
    if threads == 1:
        env |= {"OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    cmd = [sys.executable, __file__, "--worker", "--pair", str(path), "--config", config]
    cmd += ["--threads", str(threads)]
    row: dict[str, Any] = {"pair": name, "config": config, "threads": threads}
    try:
        out = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=timeout)
    except subprocess.TimeoutExpired:
        return row | {"failed": f"over {timeout} s"}
    if out.returncode != 0:
        return row | {"failed": out.stderr.strip().splitlines()[-1][:120]}
    return row | json.loads(out.stdout.strip().splitlines()[-1])


def format_row(row: dict[str, Any]) -> str:
    head = f"{row['pair']:<24}{row['config']:<15}{'1' if row['threads'] == 1 else 'default':>8}"
    if "failed" in row:
        return f"{head}  failed: {row['failed']}"
    return (
        f"{head}{row['wall_s']:>9.2f} s{row['rss_mib']:>8.0f} MiB"
        f"{row['mean']:>10.3g}{row['median']:>10.3g}"
    )


def write_table(
    args: argparse.Namespace,
    rows: list[dict[str, Any]],
    before: tuple[float, float, float],
    after: tuple[float, float, float],
) -> None:
    lines = ["# Mesh functional maps: weightspace.spectral against pyFM", ""]
    if args.note:
        lines += [args.note, ""]
    cmd = shlex.join(["python", "benchmarks/bench_spectral_vs_pyfm.py", *sys.argv[1:]])
    lines += [
        f"Command: `{cmd}`",
        "",
        f"Versions: {versions()}; {os.cpu_count()} CPUs.",
        "",
        f"Load average before: {', '.join(f'{x:.2f}' for x in before)}; after: "
        f"{', '.join(f'{x:.2f}' for x in after)}.",
        "",
        "Error: Euclidean distance to the true match on the source mesh over sqrt(area). Peak RSS "
        "of the configuration's own process. Pareto: not beaten in both time and mean error by "
        "another configuration of the same pair and threads.",
        "",
        "| pair (max edge change) | threads | configuration | time (s) | peak RSS (MiB) "
        "| mean error | median error | Pareto |",
        "| --- | --- | --- | ---: | ---: | ---: | ---: | --- |",
    ]
    for row in rows:
        peers = [
            r
            for r in rows
            if r["pair"] == row["pair"] and r["threads"] == row["threads"] and "failed" not in r
        ]
        threads = "1" if row["threads"] == 1 else "default"
        label = f"{row['pair']} ({row['edge_change']:.0%})"
        if "failed" in row:
            lines.append(f"| {label} | {threads} | {row['config']} | failed: {row['failed']} |||||")
            continue
        beaten = any(
            r["wall_s"] <= row["wall_s"]
            and r["mean"] <= row["mean"]
            and (r["wall_s"] < row["wall_s"] or r["mean"] < row["mean"])
            for r in peers
        )
        lines.append(
            f"| {label} | {threads} | {row['config']} | {row['wall_s']:.2f} | "
            f"{row['rss_mib']:.0f} | {row['mean']:.3g} | {row['median']:.3g} | "
            f"{'' if beaten else 'yes'} |"
        )
    lines += [
        "",
        "Targets (same pairs, same run): ours at defaults against every pyFM setting:",
        "",
    ]
    lines += targets(rows)
    args.out.write_text("\n".join(lines) + "\n")


def targets(rows: list[dict[str, Any]]) -> list[str]:
    """One line per (pair, threads, pyFM setting): is ours at defaults at least as good?"""
    out, met = [], 0
    for row in rows:
        if row["config"] != "ours" or "failed" in row:
            continue
        for other in rows:
            same = other["pair"] == row["pair"] and other["threads"] == row["threads"]
            if not same or not other["config"].startswith("pyfm") or "failed" in other:
                continue
            big = int(row["pair"].rsplit("-", 1)[1]) > 20000
            time_ok = row["wall_s"] <= (0.5 if big else 1.0) * other["wall_s"]
            ok = time_ok and row["mean"] <= other["mean"]
            ok = ok and row["rss_mib"] <= other["rss_mib"] + 100
            met += ok
            threads = "1" if row["threads"] == 1 else "default"
            out.append(
                f"- {row['pair']}, threads {threads}, vs {other['config']}: time "
                f"{row['wall_s']:.2f} / {other['wall_s']:.2f} s, mean error {row['mean']:.3g} / "
                f"{other['mean']:.3g}, RSS {row['rss_mib']:.0f} / {other['rss_mib']:.0f} MiB: "
                f"{'met' if ok else 'NOT met'}"
            )
    return [f"Met: {met} of {len(out)}.", "", *out]


if __name__ == "__main__":
    main()
