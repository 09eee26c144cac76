"""
Project 2: spectral maps rediscovered
=====================================

Functional maps (Ovsjanikov et al., SIGGRAPH 2012) against the neural-encoding representation
of trained CNN weights (Guth & Ménard, ICLR 2024 Re-Align workshop). The report,
:doc:`/reports/project02_spectral_maps`, is built from this script's full-mode results.

Run ``python examples/project02_spectral_maps/spectral_maps.py`` (full mode, several minutes
on two CPU cores; writes ``results/``) or with ``--quick`` (seconds; writes ``results/quick/``).

Four experiments, all through ``weightspace.spectral``:

1. Meshes with known correspondence (asymmetric and symmetric sheets, isometric bends,
   permuted vertices, different samplings): descriptor maps + ZoomOut, and what truncation
   does to orthogonality and composition.
2. Permuted vs rotated neurons on trained CNNs: what a point map (permutation) and a
   Procrustes rotation each recover, on exact relabellings and between independent seeds.
3. Spatial eigenbases of 3x3 filters (our CNNs, the pretrained MNIST CNN, EfficientNet-Lite0,
   random init) against the Laplacian eigenbasis of the 3x3 pixel grid.
4. The application: a Bures–Wasserstein score on aligned weight covariances vs linear CKA on
   the same model pairs, for separating same-data from different-data pairs.
"""

from __future__ import annotations

import argparse
import itertools
import json
import math
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from scipy.optimize import linear_sum_assignment
from torch import nn

import weightspace as ws
from weightspace import report, spectral

HERE = Path(__file__).resolve().parent


# ---- small CNNs trained here ------------------------------------------------------------------


class SmallCNN(nn.Module):
    """conv(1->16) relu pool, conv(16->32) relu pool, linear(32*7*7 -> 10)."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(1, 16, 3, padding=1)
        self.conv2 = nn.Conv2d(16, 32, 3, padding=1)
        self.pool = nn.MaxPool2d(2)
        self.head = nn.Linear(32 * 7 * 7, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.pool(torch.relu(self.conv1(x)))
        x = self.pool(torch.relu(self.conv2(x)))
        return self.head(x.flatten(1))


def load_data(name: str, n_train: int, n_test: int) -> dict[str, torch.Tensor]:
    loader = ws.data.mnist if name == "mnist" else ws.data.fashion_mnist
    xtr, ytr = loader("train").tensors()
    xte, yte = loader("test").tensors()
    return {"xtr": xtr[:n_train], "ytr": ytr[:n_train], "xte": xte[:n_test], "yte": yte[:n_test]}


def train(data: dict[str, torch.Tensor], seed: int, epochs: int) -> tuple[SmallCNN, float]:
    torch.manual_seed(seed)
    net = SmallCNN()
    trainer = ws.train.Trainer(net, lr=2e-3, seed=seed)
    gen = torch.Generator().manual_seed(seed)
    n = data["xtr"].shape[0]
    for _ in range(epochs):  # one seeded stream of permutations over the epochs
        for idx in torch.randperm(n, generator=gen).split(128):
            trainer.step(trainer.compute_loss((data["xtr"][idx], data["ytr"][idx])))
    net.eval()
    with torch.no_grad():
        acc = (net(data["xte"]).argmax(1) == data["yte"]).float().mean().item()
    return net, acc


# ---- 1. meshes ---------------------------------------------------------------------------------


def sheet_pair(nu: int, holes: bool, seed: int) -> dict[str, Any]:
    v1, f1 = ws.data.sheet_mesh(nu, nu // 2, holes=holes, jitter=0.25, seed=seed)
    v2, f2 = ws.data.sheet_mesh(nu, nu // 2, holes=holes, jitter=0.25, seed=seed + 100)
    perm = np.random.default_rng(seed).permutation(len(v2))
    v2, f2 = v2[perm], np.argsort(perm)[f2]
    gt = spectral.nearest_neighbors(v1[:, :2], v2[:, :2])
    lx = spectral.cotangent_laplacian(ws.data.bend_sheet(v1, 1.2), f1)
    ly = spectral.cotangent_laplacian(ws.data.bend_sheet(v2, 2.6), f2)
    return {"flat": v1, "gt": gt, "lx": lx, "ly": ly}


def mesh_experiment(nu: int, seeds: list[int], k0: int, k1: int) -> dict[str, Any]:
    rows = []
    fig_maps: dict[str, np.ndarray] = {}
    for holes, seed in itertools.product((True, False), seeds):
        p = sheet_pair(nu, holes, seed)
        bx, by = spectral.eigenbasis(p["lx"], k1), spectral.eigenbasis(p["ly"], k1)
        sx, sy = bx.truncate(k0), by.truncate(k0)
        dx = spectral.wave_kernel_signature(sx, num_energies=100)
        dy = spectral.wave_kernel_signature(sy, num_energies=100)
        init = spectral.FunctionalMapEstimator().fit(sx, sy, dx, dy).map_
        refined = spectral.zoomout(init, bx, by, step=2, subsample=min(2000, bx.n), seed=seed)
        truth = spectral.FunctionalMap.from_pointwise(p["gt"], bx, by)
        err = {
            name: spectral.correspondence_error(
                m.to_pointwise(), p["gt"], p["flat"], area=p["lx"].area
            )
            for name, m in (("init", init), ("zoomout", refined), ("truth", truth))
        }
        # truncation: orthogonality of the true map and composition X -> Y -> X
        trunc = {}
        for k in sorted({k for k in (10, 20, k1) if k <= k1}):
            t = spectral.FunctionalMap.from_pointwise(p["gt"], bx.truncate(k), by.truncate(k))
            back = spectral.FunctionalMap.from_pointwise(
                _inverse_map(p["gt"], bx.n), by.truncate(k), bx.truncate(k)
            )
            comp = np.linalg.norm(back.matrix @ t.matrix - np.eye(k)) / math.sqrt(k)
            trunc[k] = {
                "orthogonality_defect": t.orthogonality_defect(),
                "off_diagonal_energy_blocks": t.off_diagonal_energy(blocks=True, rtol=2e-2),
                "composition_error": float(comp),
            }
        rows.append(
            {
                "holes": holes,
                "seed": seed,
                "vertices": bx.n,
                "error_init": err["init"],
                "error_zoomout": err["zoomout"],
                "error_truth_roundtrip": err["truth"],
                "truncation": trunc,
            }
        )
        if seed == seeds[0]:
            fig_maps["asymmetric" if holes else "symmetric"] = np.abs(refined.matrix[:k0, :k0])
            fig_maps[("asymmetric" if holes else "symmetric") + "_truth"] = np.abs(
                truth.matrix[:k0, :k0]
            )
    return {"rows": rows, "maps": fig_maps}


def _inverse_map(p2p: np.ndarray, n_x: int) -> np.ndarray:
    """A point map X -> Y from Y -> X (each x takes some y that maps to it, or its neighbour's)."""
    inv = np.full(n_x, -1, dtype=np.int64)
    inv[p2p] = np.arange(len(p2p))
    missing = np.flatnonzero(inv < 0)
    if missing.size:
        inv[missing] = inv[np.flatnonzero(inv >= 0)[0]]
    return inv


# ---- 2. permuted vs rotated neurons ------------------------------------------------------------


def relative_residual(x: np.ndarray, y: np.ndarray, pi: np.ndarray) -> float:
    return float(np.linalg.norm(x @ pi.T - y) / np.linalg.norm(y))


def best_permutation(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """The permutation matrix P (y ~ P x) maximising correlation (Hungarian matching)."""
    rows, cols = linear_sum_assignment(-(y.T @ x))
    p = np.zeros((y.shape[1], x.shape[1]))
    p[rows, cols] = 1.0
    return p


def neuron_experiment(nets: dict[tuple[str, int], SmallCNN], probe: torch.Tensor) -> dict[str, Any]:
    feats = {
        key: spectral.channel_samples(
            spectral.collect_activations(net, probe, ["conv1"])["conv1"], max_samples=8000
        ).numpy()
        for key, net in nets.items()
    }
    feats = {k: v - v.mean(0) for k, v in feats.items()}
    out: dict[str, Any] = {"exact": {}, "pairs": []}
    # exact relabellings of one network: a permutation and a random rotation of its channels
    key0 = next(iter(nets))
    x = feats[key0]
    rng = np.random.default_rng(0)
    perm = np.eye(16)[rng.permutation(16)]
    q = np.linalg.qr(rng.normal(size=(16, 16)))[0]
    cov = spectral.weight_covariances(nets[key0].conv2.weight).channel
    for name, t in (("permuted", perm), ("rotated", q)):
        y = x @ t.T
        p_hat = best_permutation(x, y)
        r_hat = spectral.procrustes_rotation(x, y)
        # the point map read from the functional map of the covariance bases
        fmap = spectral.neural_encoding_map(cov, t @ cov @ t.T, t)
        out["exact"][name] = {
            "residual_permutation": relative_residual(x, y, p_hat),
            "residual_rotation": relative_residual(x, y, r_hat),
            "permutation_recovered": bool(np.allclose(p_hat, t)),
            "rotation_recovered": bool(np.allclose(r_hat, t, atol=1e-6)),
            "fmap_orthogonality_defect": fmap.orthogonality_defect(),
            "fmap_bw_similarity": fmap.bures_wasserstein_similarity(),
        }
    # independent seeds: how much of network B's conv1 code does each correspondence explain?
    for a, b in itertools.combinations(sorted(nets), 2):
        if a[0] != b[0]:
            continue
        xa, xb = feats[a], feats[b]
        out["pairs"].append(
            {
                "data": a[0],
                "seeds": [a[1], b[1]],
                "residual_identity": relative_residual(xa, xb, np.eye(16)),
                "residual_permutation": relative_residual(xa, xb, best_permutation(xa, xb)),
                "residual_rotation": relative_residual(
                    xa, xb, spectral.procrustes_rotation(xa, xb)
                ),
            }
        )
    return out


# ---- 3. spatial eigenbases of 3x3 filters -------------------------------------------------------


def grid_basis() -> spectral.Eigenbasis:
    edges = [[r * 3 + c, r * 3 + c + 1] for r in range(3) for c in range(2)]
    edges += [[r * 3 + c, (r + 1) * 3 + c] for r in range(2) for c in range(3)]
    return spectral.eigenbasis(spectral.graph_laplacian(edges, num_nodes=9), 9)


def spatial_experiment(filters: dict[str, torch.Tensor]) -> dict[str, Any]:
    lap = grid_basis()
    rows = {}
    vectors = {"grid Laplacian": lap.vectors[:, :4]}
    for name, w in filters.items():
        cov = spectral.weight_covariances(w).spatial
        fmap = spectral.neural_encoding_map(cov, cov)  # same pixels: Pi = I
        basis = fmap.source
        # C from the covariance basis (descending variance) to the grid Laplacian basis
        to_lap = spectral.FunctionalMap.from_correspondence(np.eye(9), basis, lap)
        lam = basis.values / basis.values.sum()
        captured = [
            float(np.trace(lap.vectors[:, :k].T @ cov @ lap.vectors[:, :k]) / np.trace(cov))
            for k in (1, 3)
        ]
        rows[name] = {
            "top1_variance": float(lam[0]),
            "top3_variance": float(lam[:3].sum()),
            "variance_in_lowest_laplacian_1": captured[0],
            "variance_in_lowest_laplacian_3": captured[1],
            "off_diagonal_energy_to_laplacian": to_lap.off_diagonal_energy(),
            "off_diagonal_energy_to_laplacian_blocks": to_lap.off_diagonal_energy(blocks=True),
            "eigenvalue_gaps_rel": [float(g) for g in np.diff(basis.values[:4]) / basis.values[0]],
        }
        vectors[name] = basis.vectors[:, :4]
    names = list(filters)
    cross = {}
    for a, b in itertools.combinations(names, 2):
        ca = spectral.weight_covariances(filters[a]).spatial
        cb = spectral.weight_covariances(filters[b]).spatial
        fmap = spectral.neural_encoding_map(ca, cb)
        cross[f"{a} | {b}"] = {
            "bw_similarity": fmap.bures_wasserstein_similarity(),
            "abs_c11": float(abs(fmap.matrix[0, 0])),
            "off_diagonal_energy_top4": float(
                1 - (np.diag(fmap.matrix[:4, :4]) ** 2).sum() / (fmap.matrix[:4, :4] ** 2).sum()
            ),
        }
    return {"layers": rows, "cross": cross, "vectors": vectors}


# ---- 4. application: similarity score vs linear CKA --------------------------------------------


def scores(net_a: SmallCNN, net_b: SmallCNN, probe: torch.Tensor, k: int) -> dict[str, float]:
    acts_a = spectral.collect_activations(net_a, probe, ["conv1", "conv2"])
    acts_b = spectral.collect_activations(net_b, probe, ["conv1", "conv2"])
    x1 = spectral.channel_samples(acts_a["conv1"], max_samples=8000).numpy()
    y1 = spectral.channel_samples(acts_b["conv1"], max_samples=8000).numpy()
    rot = spectral.procrustes_rotation(x1, y1)
    ca = spectral.weight_covariances(net_a.conv2.weight).channel
    cb = spectral.weight_covariances(net_b.conv2.weight).channel
    fmap = spectral.neural_encoding_map(ca, cb, rot)
    trunc = spectral.neural_encoding_map(ca, cb, rot, k=k)
    sp_a = spectral.weight_covariances(net_a.conv1.weight).spatial
    sp_b = spectral.weight_covariances(net_b.conv1.weight).spatial
    return {
        "bw_aligned_conv2": fmap.bures_wasserstein_similarity(),
        "bw_aligned_conv2_top_k": trunc.bures_wasserstein_similarity(),
        "bw_unaligned_conv2": spectral.bures_wasserstein_similarity(ca, cb),
        "bw_conv1_spatial_data_free": spectral.bures_wasserstein_similarity(sp_a, sp_b),
        "cka_conv1": spectral.linear_cka(acts_a["conv1"].flatten(1), acts_b["conv1"].flatten(1)),
        "cka_conv2": spectral.linear_cka(acts_a["conv2"].flatten(1), acts_b["conv2"].flatten(1)),
        "cka_logits": spectral.linear_cka(net_a(probe).detach(), net_b(probe).detach()),
    }


def auc(pos: list[float], neg: list[float]) -> float:
    wins = sum((p > n) + 0.5 * (p == n) for p in pos for n in neg)
    return float(wins / (len(pos) * len(neg)))


def dprime(pos: list[float], neg: list[float]) -> float:
    pooled = math.sqrt((np.var(pos, ddof=1) + np.var(neg, ddof=1)) / 2) if len(pos) > 1 else 0.0
    return float((np.mean(pos) - np.mean(neg)) / pooled) if pooled > 0 else float("inf")


def similarity_experiment(
    nets: dict[tuple[str, int], SmallCNN], probe: torch.Tensor, k: int
) -> dict[str, Any]:
    pairs = []
    with torch.no_grad():
        for a, b in itertools.combinations(sorted(nets), 2):
            s = scores(nets[a], nets[b], probe, k)
            pairs.append({"a": list(a), "b": list(b), "same_data": a[0] == b[0], **s})
    summary = {}
    for metric in [m for m in pairs[0] if m not in ("a", "b", "same_data")]:
        pos = [p[metric] for p in pairs if p["same_data"]]
        neg = [p[metric] for p in pairs if not p["same_data"]]
        summary[metric] = {
            "same_mean": float(np.mean(pos)),
            "same_std": float(np.std(pos, ddof=1)) if len(pos) > 1 else 0.0,
            "diff_mean": float(np.mean(neg)),
            "diff_std": float(np.std(neg, ddof=1)) if len(neg) > 1 else 0.0,
            "auc": auc(pos, neg),
            "dprime": dprime(pos, neg),
        }
    return {"pairs": pairs, "summary": summary}


# ---- report ------------------------------------------------------------------------------------


def pm(values: list[float], digits: int = 3) -> str:
    """``mean ± std`` over seeds (the value alone for one seed)."""
    s = report.summarize(values)
    return format(s, f".{digits}f") if s.n > 1 else f"{s.mean:.{digits}f}"


def markdown(res: dict[str, Any]) -> str:
    table = report.markdown_table
    lines = [f"# Project 2 results ({res['mode']} mode, seeds {res['seeds']})", ""]
    rows: list[list[report.Cell]] = [[a["data"], a["seed"], a["accuracy"]] for a in res["accuracy"]]
    lines += ["## Trained CNNs (test accuracy)", ""]
    lines += [table(["data", "seed", "accuracy"], rows, formats=[None, None, ".4f"])]
    lines += ["## Meshes: mean error / sqrt(area) (mean ± std over seeds)", ""]
    rows = []
    for holes in (True, False):
        ms = [r for r in res["mesh"] if r["holes"] == holes]
        rows.append(
            [
                "asymmetric" if holes else "symmetric (half-turn)",
                ms[0]["vertices"],
                pm([r["error_init"] for r in ms]),
                pm([r["error_zoomout"] for r in ms]),
                pm([r["error_truth_roundtrip"] for r in ms], 4),
            ]
        )
    header = [
        "sheet",
        "vertices",
        "descriptors + commutativity",
        "+ ZoomOut",
        "true map round trip",
    ]
    lines += [table(header, rows)]
    lines += ["Truncated bases, true map (asymmetric sheet):", ""]
    ms = [r for r in res["mesh"] if r["holes"]]
    rows = []
    for k in ms[0]["truncation"]:
        t = [r["truncation"][k] for r in ms]
        keys = ("orthogonality_defect", "off_diagonal_energy_blocks", "composition_error")
        rows.append([k, *(pm([x[key] for x in t]) for key in keys)])
    header = ["k", "orthogonality defect", "off-block energy", "composition error X->Y->X"]
    lines += [table(header, rows)]
    ne = res["neurons"]
    lines += ["## Permuted vs rotated neurons (conv1 activations)", ""]
    rows = [
        [f"exact {name}", f"{r['residual_permutation']:.3f}", f"{r['residual_rotation']:.2e}"]
        for name, r in ne["exact"].items()
    ]
    for data in ("mnist", "fashion"):
        prs = [p for p in ne["pairs"] if p["data"] == data]
        if prs:
            rows.append(
                [
                    f"independent seeds, {data} ({len(prs)} pairs)",
                    pm([p["residual_permutation"] for p in prs]),
                    pm([p["residual_rotation"] for p in prs]),
                ]
            )
    header = ["relabelling", "residual, best permutation", "residual, Procrustes rotation"]
    lines += [table(header, rows)]
    lines += ["## Spatial covariance of 3x3 filters vs the grid Laplacian", ""]
    rows = [
        [
            name,
            r["top1_variance"],
            r["top3_variance"],
            f"{r['variance_in_lowest_laplacian_1']:.3f} / "
            f"{r['variance_in_lowest_laplacian_3']:.3f}",
            f"{r['off_diagonal_energy_to_laplacian']:.3f} / "
            f"{r['off_diagonal_energy_to_laplacian_blocks']:.3f}",
        ]
        for name, r in res["spatial"]["layers"].items()
    ]
    header = [
        "layer",
        "top-1 var.",
        "top-3 var.",
        "var. in lowest-1 / 3 Laplacian modes",
        "off-diag. energy to Laplacian (plain / blocks)",
    ]
    lines += [table(header, rows)]
    lines += ["## Application: same-data vs different-data pairs", ""]
    rows = [
        [
            m,
            report.Summary(s["same_mean"], s["same_std"], n=0),
            report.Summary(s["diff_mean"], s["diff_std"], n=0),
            s["auc"],
            s["dprime"],
        ]
        for m, s in res["similarity"]["summary"].items()
    ]
    header = ["score", "same data", "different data", "AUC", "d'"]
    lines += [table(header, rows, formats=[None, ".3f", ".3f", ".3f", ".2f"])]
    lines += [f"Total time: {res['seconds']:.0f} s", ""]
    return "\n".join(lines)


def figures(
    res: dict[str, Any], maps: dict[str, np.ndarray], vectors: dict[str, np.ndarray], out: Path
) -> list[str]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    written = []
    fig, axes = plt.subplots(1, 4, figsize=(13, 3.4))
    keys = ["asymmetric_truth", "asymmetric", "symmetric_truth", "symmetric"]
    for ax, key in zip(axes, keys, strict=True):
        ax.imshow(maps[key], cmap="magma", vmin=0, vmax=1)
        ax.set_title(
            {
                "asymmetric_truth": "asymmetric, true map",
                "asymmetric": "asymmetric, estimated",
                "symmetric_truth": "symmetric, true map",
                "symmetric": "symmetric, estimated",
            }[key],
            fontsize=9,
        )
        ax.set_xticks([]), ax.set_yticks([])
    fig.suptitle(f"|C| between sheet Laplacian eigenbases (k = {maps['symmetric'].shape[0]})")
    fig.tight_layout()
    fig.savefig(out / "mesh_fmaps.png", dpi=110)
    plt.close(fig)
    written.append("mesh_fmaps.png")

    fig, axes = plt.subplots(len(vectors), 4, figsize=(5.5, 1.4 * len(vectors)))
    for i, (name, vec) in enumerate(vectors.items()):
        for j in range(4):
            ax = axes[i, j]
            ax.imshow(vec[:, j].reshape(3, 3), cmap="RdBu_r", vmin=-0.8, vmax=0.8)
            ax.set_xticks([]), ax.set_yticks([])
            if j == 0:
                ax.set_ylabel(name, rotation=0, ha="right", va="center", fontsize=8)
    fig.suptitle("leading eigenvectors of 3x3 spatial covariances", fontsize=9)
    fig.tight_layout()
    fig.savefig(out / "spatial_eigenvectors.png", dpi=110)
    plt.close(fig)
    written.append("spatial_eigenvectors.png")

    pairs = res["similarity"]["pairs"]
    metrics = [
        "bw_aligned_conv2",
        "bw_unaligned_conv2",
        "bw_conv1_spatial_data_free",
        "cka_conv1",
        "cka_conv2",
        "cka_logits",
    ]
    fig, ax = plt.subplots(figsize=(9, 3.6))
    for i, m in enumerate(metrics):
        same = [p[m] for p in pairs if p["same_data"]]
        diff = [p[m] for p in pairs if not p["same_data"]]
        ax.scatter(
            np.full(len(same), i - 0.1),
            same,
            color="tab:blue",
            s=14,
            label="same data" if i == 0 else None,
        )
        ax.scatter(
            np.full(len(diff), i + 0.1),
            diff,
            color="tab:red",
            s=14,
            label="different data" if i == 0 else None,
        )
    ax.set_xticks(range(len(metrics)), [m.replace("_", "\n", 2) for m in metrics], fontsize=7)
    ax.set_ylabel("similarity")
    ax.legend(fontsize=8)
    ax.set_title("model pairs: spectral scores vs linear CKA", fontsize=9)
    fig.tight_layout()
    fig.savefig(out / "similarity_scores.png", dpi=110)
    plt.close(fig)
    written.append("similarity_scores.png")
    return written


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="seconds-long run (tests)")
    parser.add_argument(
        "--out", type=Path, default=None, help="default: results/ (quick: results/quick/)"
    )
    args = parser.parse_args()
    torch.set_num_threads(min(2, torch.get_num_threads()))
    t0 = time.perf_counter()
    quick = args.quick
    seeds = [0, 1] if quick else [0, 1, 2]
    n_train, epochs = (600, 1) if quick else (6000, 2)
    out: Path = args.out or (HERE / "results" / "quick" if quick else HERE / "results")
    out.mkdir(parents=True, exist_ok=True)

    # 1. meshes
    mesh = mesh_experiment(
        16 if quick else 48, seeds, k0=8 if quick else 30, k1=16 if quick else 60
    )
    timings = {"mesh": time.perf_counter() - t0}

    # trained CNNs
    data = {name: load_data(name, n_train, 300 if quick else 2000) for name in ("mnist", "fashion")}
    nets, accuracy = {}, []
    for name, seed in itertools.product(data, seeds):
        net, acc = train(data[name], seed, epochs)
        nets[(name, seed)] = net
        accuracy.append({"data": name, "seed": seed, "accuracy": acc})
    timings["train"] = time.perf_counter() - t0
    n_probe = 40 if quick else 300
    probe = torch.cat([data["mnist"]["xte"][:n_probe], data["fashion"]["xte"][:n_probe]])

    # 2. neurons
    neurons = neuron_experiment(nets, probe)

    # 3. spatial eigenbases
    filters: dict[str, torch.Tensor] = {}
    for name in ("mnist", "fashion"):
        filters[f"ours {name} conv1 (seed 0)"] = nets[(name, 0)].conv1.weight.detach()
    try:
        pre = ws.models.mnist_cnn()
        filters["pretrained MNIST CNN conv1"] = pre.features[0].weight.detach()
        filters["pretrained MNIST CNN conv2"] = pre.features[3].weight.detach()
    except ws.MissingSourceError as exc:
        print(f"skipping the pretrained MNIST CNN: {exc}")
    if not quick:
        try:
            eff = ws.models.efficientnet_lite0()
            sd = eff.state_dict()
            dw = [k for k, v in sd.items() if v.ndim == 4 and v.shape[1] == 1 and v.shape[-1] == 3]
            filters["EfficientNet-Lite0 stem"] = sd["conv_stem.weight"]
            filters["EfficientNet-Lite0 depthwise 3x3 (all)"] = torch.cat(
                [sd[k].reshape(-1, 1, 3, 3) for k in dw]
            )
        except ws.MissingSourceError as exc:
            print(f"skipping EfficientNet-Lite0: {exc}")
    torch.manual_seed(0)
    filters["random init (Kaiming)"] = SmallCNN().conv2.weight.detach()
    spatial = spatial_experiment(filters)

    # 4. application
    similarity = similarity_experiment(nets, probe, k=8)

    res = {
        "mode": "quick" if quick else "full",
        "seeds": seeds,
        "n_train": n_train,
        "epochs": epochs,
        "accuracy": accuracy,
        "mesh": mesh["rows"],
        "neurons": neurons,
        "spatial": {"layers": spatial["layers"], "cross": spatial["cross"]},
        "similarity": similarity,
    }
    timings["total"] = time.perf_counter() - t0
    res["timings"] = timings
    res["seconds"] = timings["total"]
    written = figures(res, mesh["maps"], spatial["vectors"], out) if not quick else []
    res["figures"] = written
    (out / "results.json").write_text(json.dumps(res, indent=2, default=float))
    (out / "results.md").write_text(markdown(res))
    print(markdown(res))


if __name__ == "__main__":
    main()
