"""
Project 2: spectral maps rediscovered
=====================================

Functional maps (Ovsjanikov et al., SIGGRAPH 2012) against the neural-encoding representation
of trained CNN weights (Guth & Ménard, ICLR 2024 Re-Align workshop). The report,
:doc:`/reports/project02_spectral_maps`, is built from this script's full-mode results: every
table on it is included from ``results/tables.rst``.

Run ``python examples/project02_spectral_maps/spectral_maps.py`` (full mode, about half an
hour on one thread of a loaded two-core machine, mostly training; writes ``results/``), with
``--cache DIR`` to keep the trained networks for a re-run, or with ``--quick`` (under a
minute; writes ``results/quick/``).

Five experiments, all through ``weightspace.spectral``:

0. The mathematics, checked numerically: stationary (circulant) covariances are diagonal in
   the Fourier basis and commute with the Laplacian; when the neural-encoding matrix equals
   the functional map; truncated bases, unequal sizes and near-stationary covariances
   (Davis-Kahan).
1. Meshes with known correspondence (asymmetric and symmetric sheets, isometric bends,
   permuted vertices, different samplings): descriptor maps + ZoomOut, and what truncation
   does to orthogonality and composition.
2. Permuted vs rotated neurons on trained CNNs: what a point map (permutation) and a
   Procrustes rotation each recover, on exact relabellings and between independent seeds.
3. Spatial eigenbases of 3x3 filters (our CNNs, the pretrained MNIST CNN, EfficientNet-Lite0,
   random init) against the Laplacian eigenbasis of the 3x3 pixel grid.
4. The cross-network matrix of Guth & Ménard between CNNs trained to a flat validation curve
   on MNIST, Fashion-MNIST and the 8x8 digits, at two widths (five seeds each), and the
   application: spectral scores vs linear CKA for telling same-data from different-data
   pairs, with intervals from a bootstrap over networks (the pairs share networks).
"""

from __future__ import annotations

import argparse
import itertools
import json
import math
import os
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

BASE_WIDTH = 16
DATASETS = ("mnist", "fashion", "digits")


class SmallCNN(nn.Module):
    """conv(1->w) relu pool, conv(w->2w) relu pool, linear(2w*7*7 -> 10); ``w = 16`` by default."""

    def __init__(self, width: int = BASE_WIDTH) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(1, width, 3, padding=1)
        self.conv2 = nn.Conv2d(width, 2 * width, 3, padding=1)
        self.pool = nn.MaxPool2d(2)
        self.head = nn.Linear(2 * width * 7 * 7, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.pool(torch.relu(self.conv1(x)))
        x = self.pool(torch.relu(self.conv2(x)))
        return self.head(x.flatten(1))


def load_data(name: str, n_train: int, n_val: int, n_test: int) -> dict[str, torch.Tensor]:
    """Train / validation / test tensors; validation images are held out of the training split.

    ``digits`` is scikit-learn's 8x8 set (1,438 train, 359 test) resized to 28x28 (bilinear).
    """
    if name == "digits":
        xtr, ytr = ws.data.digits("train").tensors()
        xte, yte = ws.data.digits("test").tensors()
        xtr, xte = (
            nn.functional.interpolate(x, size=(28, 28), mode="bilinear", align_corners=False)
            for x in (xtr, xte)
        )
    else:
        loader = ws.data.mnist if name == "mnist" else ws.data.fashion_mnist
        xtr, ytr = loader("train").tensors()
        xte, yte = loader("test").tensors()
    n_val = min(n_val, xtr.shape[0] // 5)  # the digits: 287 of their 1,438 training images
    n_train = min(n_train, xtr.shape[0] - n_val)
    return {
        "xtr": xtr[:n_train],
        "ytr": ytr[:n_train],
        "xva": xtr[n_train : n_train + n_val],
        "yva": ytr[n_train : n_train + n_val],
        "xte": xte[:n_test],
        "yte": yte[:n_test],
    }


def accuracy(net: nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    net.eval()
    with torch.no_grad():
        return float((net(x).argmax(1) == y).float().mean().item())


def train(
    data: dict[str, torch.Tensor], width: int, seed: int, epochs: int
) -> tuple[SmallCNN, dict[str, Any]]:
    """Adam (lr 2e-3, batch 128); validation accuracy after every epoch (the learning curve)."""
    torch.manual_seed(seed)
    net = SmallCNN(width)
    trainer = ws.train.Trainer(net, lr=2e-3, seed=seed)
    gen = torch.Generator().manual_seed(seed)
    n = data["xtr"].shape[0]
    curve = []
    for _ in range(epochs):  # one seeded stream of permutations over the epochs
        net.train()
        for idx in torch.randperm(n, generator=gen).split(128):
            trainer.step(trainer.compute_loss((data["xtr"][idx], data["ytr"][idx])))
        curve.append(accuracy(net, data["xva"], data["yva"]))
    info = {
        "train_accuracy": accuracy(net, data["xtr"][:2000], data["ytr"][:2000]),
        "val_accuracy": curve[-1],
        "test_accuracy": accuracy(net, data["xte"], data["yte"]),
        "val_curve": curve,
        "n_train": n,
        "epochs": epochs,
        "steps": trainer.steps_,
    }
    return net, info


def trained_networks(
    config: dict[str, Any], cache: Path | None
) -> tuple[dict[tuple[str, int, int], SmallCNN], list[dict[str, Any]], dict[str, dict[str, Any]]]:
    """Train (or load from ``cache``) every network of the run, plus untrained controls.

    Keys are ``(data, width, seed)``; the untrained controls are ``("init", 16, seed)`` drawn
    with seed ``1000 + seed`` (not the initialisations of the trained networks).
    """
    data = {
        name: load_data(name, config["n_train"], config["n_val"], config["n_test"])
        for name in DATASETS
    }
    nets: dict[tuple[str, int, int], SmallCNN] = {}
    rows = []
    for name, width, seed in itertools.product(DATASETS, config["widths"], config["seeds"]):
        if width != BASE_WIDTH and name not in config["width_data"]:
            continue
        epochs = config["epochs"][name]
        path = None
        if cache is not None:
            n_tr = data[name]["xtr"].shape[0]
            tag = f"{name}_w{width}_s{seed}_n{n_tr}_e{epochs}_t{config['n_test']}"
            path = cache / f"{tag}.pt"
        if path is not None and path.exists():
            saved = torch.load(path, weights_only=False)
            net = SmallCNN(width)
            net.load_state_dict(saved["state"])
            info = saved["info"]
        else:
            t = time.perf_counter()
            net, info = train(data[name], width, seed, epochs)
            info["seconds"] = time.perf_counter() - t
            if path is not None:
                path.parent.mkdir(parents=True, exist_ok=True)
                torch.save({"state": net.state_dict(), "info": info}, path)
        net.eval()
        nets[(name, width, seed)] = net
        rows.append({"data": name, "width": width, "seed": seed, **info})
    for seed in config["seeds"]:
        torch.manual_seed(1000 + seed)
        nets[("init", BASE_WIDTH, seed)] = SmallCNN(BASE_WIDTH).eval()
    return nets, rows, data


# ---- 0. the mathematics: stationary covariances and Laplacian eigenbases ---------------------


def cycle_laplacian(n: int) -> np.ndarray:
    shift = np.roll(np.eye(n), 1, axis=1)
    return np.asarray(2 * np.eye(n) - shift - shift.T)


def path_laplacian(n: int) -> np.ndarray:
    lap = cycle_laplacian(n)
    lap[0, -1] = lap[-1, 0] = 0.0
    lap[0, 0] = lap[-1, -1] = 1.0
    return lap


def torus_laplacian(n: int, m: int) -> np.ndarray:
    return np.kron(cycle_laplacian(n), np.eye(m)) + np.kron(np.eye(n), cycle_laplacian(m))


def rel_commutator(cov: np.ndarray, lap: np.ndarray) -> float:
    """``||Σ L - L Σ||_F / (||Σ||_F ||L||_2)``: zero exactly when the two commute."""
    return float(
        np.linalg.norm(cov @ lap - lap @ cov) / (np.linalg.norm(cov) * np.linalg.norm(lap, 2))
    )


def off_diagonal_mass(cov: np.ndarray, basis: np.ndarray) -> float:
    """Fraction of ``||B^* Σ B||_F^2`` off the diagonal (0: the basis diagonalises Σ)."""
    m = basis.conj().T @ cov @ basis
    return max(0.0, float(1 - np.sum(np.abs(np.diag(m)) ** 2) / np.sum(np.abs(m) ** 2)))


def eigenspace_blocks(values: np.ndarray, rtol: float = 1e-8) -> list[np.ndarray]:
    scale = max(float(np.abs(values).max()), 1e-300)
    cuts = np.flatnonzero(np.diff(values) > rtol * scale) + 1
    return [np.asarray(b) for b in np.split(np.arange(len(values)), cuts)]


def eigenspace_defect(phi: np.ndarray, lam: np.ndarray, psi: np.ndarray) -> float:
    """``1 - mean_j max_b ||P_b ψ_j||^2`` over the eigenspaces ``b`` of ``L = Φ diag(λ) Φ^T``.

    Zero exactly when every column of ``Ψ`` lies in one eigenspace of ``L``: then
    ``D = Φ^T Ψ`` is block-orthogonal (a signed permutation when the spectrum is simple).
    """
    d2 = (phi.T @ psi) ** 2
    mass = np.stack([d2[b].sum(0) for b in eigenspace_blocks(lam)])
    return max(0.0, float(1 - mass.max(0).mean()))


def stationarity_defect(cov: np.ndarray) -> float:
    """Distance to the nearest circulant (the average over cyclic shifts), relative."""
    n = cov.shape[0]
    avg = np.mean([np.roll(np.roll(cov, s, 0), s, 1) for s in range(n)], axis=0)
    return float(np.linalg.norm(cov - avg) / np.linalg.norm(cov))


def _eig_desc(cov: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    mu, psi = np.linalg.eigh(cov)
    return mu[::-1], psi[:, ::-1]


def davis_kahan(lap: np.ndarray, cov: np.ndarray) -> dict[str, float]:
    """Measured eigenvector angles of Σ against a simple-spectrum L, and their bound.

    ``Σ = Σ_b + E`` with ``Σ_b = Φ diag(Φ^T Σ Φ) Φ^T`` (the part that commutes with L).
    Yu, Wang & Samworth (Biometrika 2015): ``sin θ_j <= 2 ||E||_2 / gap_j(Σ_b)``; also
    ``||E||_F <= ||[Σ, L]||_F / g_L`` with ``g_L`` the smallest gap of L's spectrum.
    """
    lam, phi = np.linalg.eigh(lap)
    mu_b = np.diag(phi.T @ cov @ phi)
    order = np.argsort(-mu_b)
    mu_b, phi_b = mu_b[order], phi[:, order]
    e = cov - (phi_b * mu_b) @ phi_b.T
    _, psi = _eig_desc(cov)
    sin = np.sqrt(np.clip(1 - np.sum(phi_b * psi, axis=0) ** 2, 0.0, None))
    gaps = np.minimum(np.r_[np.inf, mu_b[:-1] - mu_b[1:]], np.r_[mu_b[:-1] - mu_b[1:], np.inf])
    bound = np.minimum(1.0, 2 * np.linalg.norm(e, 2) / np.maximum(gaps, 1e-300))
    g_l = float(np.diff(lam).min())
    return {
        "commutator": rel_commutator(cov, lap),
        "e_fro": float(np.linalg.norm(e)),
        "e_fro_bound": float(np.linalg.norm(cov @ lap - lap @ cov) / g_l),
        "defect": eigenspace_defect(phi, lam, psi),
        "defect_bound": float(np.mean(bound**2)),
        "max_sin": float(sin.max()),
        # up to the floating-point floor of the eigensolver (1e-6 on near-equal eigenvalues)
        "sin_within_bound": bool(np.all(sin <= bound + 1e-6)),
        "sin_top4": float(sin[:4].max()),
        "sin_top4_bound": float(bound[:4].max()),
    }


def interpolation(n_x: int, n_y: int) -> np.ndarray:
    """Linear interpolation from ``n_x`` cell centres to ``n_y`` cell centres of [0, 1]."""
    tx, ty = (np.arange(n_x) + 0.5) / n_x, (np.arange(n_y) + 0.5) / n_y
    pi = np.zeros((n_y, n_x))
    for j, t in enumerate(ty):
        pos = np.clip(t * n_x - 0.5, 0.0, n_x - 1.0)
        i = min(int(pos), n_x - 2)
        w = pos - i
        pi[j, i], pi[j, i + 1] = 1 - w, w
    assert np.allclose(pi @ tx, ty, atol=1 / n_x)
    return pi


def truncated_comparison(
    covs: tuple[np.ndarray, np.ndarray], laps: tuple[np.ndarray, np.ndarray], pi: np.ndarray, k: int
) -> dict[str, float]:
    """Truncated neural-encoding map against the truncated functional map, and the bound.

    ``C_ne = Ψ_Y,k^T Π Ψ_X,k`` (top-k variance), ``C_fm = Φ_Y,k^T Π Φ_X,k`` (lowest k
    Laplacian modes), ``R = Φ_k^T Ψ_k``: ``||C_ne - R_Y^T C_fm R_X||_2 <= ||Π||_2 (s_X + s_Y +
    s_X s_Y)`` with ``s = ||sin Θ(Φ_k, Ψ_k)||_2``.
    """
    mats, s, overlap = [], [], []
    for cov, lap in zip(covs, laps, strict=True):
        phi = np.linalg.eigh(lap)[1][:, :k]
        psi = _eig_desc(cov)[1][:, :k]
        r = phi.T @ psi
        sv = np.linalg.svd(r, compute_uv=False)
        s.append(float(np.sqrt(max(0.0, 1 - sv.min() ** 2))))
        overlap.append(float(np.sum(r**2) / k))
        mats.append((phi, psi, r))
    (phx, psx, rx), (phy, psy, ry) = mats
    c_ne = psy.T @ pi @ psx
    c_fm = phy.T @ pi @ phx
    diff = float(np.linalg.norm(c_ne - ry.T @ c_fm @ rx, 2))
    naive = float(np.linalg.norm(np.abs(c_ne) - np.abs(c_fm)) / np.linalg.norm(c_fm))
    norm_pi = float(np.linalg.norm(pi, 2))
    sv_fm = np.linalg.svd(c_fm, compute_uv=False)
    return {
        "difference": diff,
        "abs_difference_unaligned": naive,
        "bound": norm_pi * (s[0] + s[1] + s[0] * s[1]),
        "sin_theta_x": s[0],
        "sin_theta_y": s[1],
        "overlap_x": overlap[0],
        "overlap_y": overlap[1],
        "c_fm_sigma_min": float(sv_fm.min()),
        "c_fm_sigma_max": float(sv_fm.max()),
    }


def mathematics() -> dict[str, Any]:
    """Each claim of the report's mathematics section, checked on a computed example."""
    rng = np.random.default_rng(0)
    out: dict[str, Any] = {}
    # (a) cycle: a symmetric stationary covariance is circulant, diagonal in the DFT basis
    n = 64
    lap = cycle_laplacian(n)
    spec = rng.uniform(0.1, 1.0, n // 2 + 1)
    spec_full = np.r_[spec, spec[1 : n - n // 2][::-1]]  # ĉ_k = ĉ_{n-k}: real, symmetric
    dft = np.exp(-2j * np.pi * np.outer(np.arange(n), np.arange(n)) / n) / math.sqrt(n)
    cov = np.real(dft @ np.diag(spec_full) @ dft.conj().T)
    shift = np.roll(np.eye(n), 1, axis=1)
    lam, phi = np.linalg.eigh(lap)
    out["cycle_stationary"] = {
        "n": n,
        "stationarity_defect": stationarity_defect(cov),
        "shift_commutator": rel_commutator(cov, shift),
        "commutator": rel_commutator(cov, lap),
        "off_diagonal_dft": off_diagonal_mass(cov, dft),
        "off_diagonal_laplacian_eigh": off_diagonal_mass(cov, phi),
        "eigenspace_defect": eigenspace_defect(phi, lam, _eig_desc(cov)[1]),
    }
    # (b) commuting with L is weaker than stationarity: one cosine mode of the cycle
    u = np.cos(2 * np.pi * 3 * np.arange(n) / n)
    u /= np.linalg.norm(u)
    cov_b = cov + 0.5 * np.outer(u, u)
    out["cycle_commuting_not_stationary"] = {
        "n": n,
        "stationarity_defect": stationarity_defect(cov_b),
        "shift_commutator": rel_commutator(cov_b, shift),
        "commutator": rel_commutator(cov_b, lap),
        "off_diagonal_dft": off_diagonal_mass(cov_b, dft),
        "off_diagonal_laplacian_eigh": off_diagonal_mass(cov_b, phi),
        "eigenspace_defect": eigenspace_defect(phi, lam, _eig_desc(cov_b)[1]),
    }
    # (c) torus 8x8, anisotropic stationary covariance: block-circulant, diagonal in the 2-D
    # DFT; commutes with L; an eigensolver's basis of L is only block-diagonal for it
    side = 8
    grid = np.stack(np.meshgrid(np.arange(side), np.arange(side), indexing="ij"), -1).reshape(-1, 2)
    d = np.abs(grid[:, None, :] - grid[None, :, :])
    d = np.minimum(d, side - d)
    cov_t = np.exp(-((d[..., 0] / 2.0) ** 2) - (d[..., 1] / 1.0) ** 2) + 1e-3 * np.eye(side**2)
    lap_t = torus_laplacian(side, side)
    lam_t, phi_t = np.linalg.eigh(lap_t)
    f1 = np.exp(-2j * np.pi * np.outer(np.arange(side), np.arange(side)) / side) / math.sqrt(side)
    out["torus_stationary"] = {
        "n": side * side,
        "stationarity_defect": float("nan"),
        "shift_commutator": float("nan"),
        "commutator": rel_commutator(cov_t, lap_t),
        "off_diagonal_dft": off_diagonal_mass(cov_t, np.kron(f1, f1)),
        "off_diagonal_laplacian_eigh": off_diagonal_mass(cov_t, phi_t),
        "eigenspace_defect": eigenspace_defect(phi_t, lam_t, _eig_desc(cov_t)[1]),
    }
    # (d) a graph: the 3x3 pixel grid, a Gaussian Markov random field Σ = (L + 0.1 I)^{-1}
    # and a non-stationary one (variance growing towards one corner)
    lap_g = grid_basis_matrix()
    lam_g, phi_g = np.linalg.eigh(lap_g)
    gmrf = np.linalg.inv(lap_g + 0.1 * np.eye(9))
    scale = np.diag(np.linspace(0.5, 1.5, 9))
    for name, c in (("grid_gmrf", gmrf), ("grid_nonstationary", scale @ gmrf @ scale)):
        out[name] = {
            "n": 9,
            "stationarity_defect": float("nan"),
            "shift_commutator": float("nan"),
            "commutator": rel_commutator(c, lap_g),
            "off_diagonal_dft": float("nan"),
            "off_diagonal_laplacian_eigh": off_diagonal_mass(c, phi_g),
            "eigenspace_defect": eigenspace_defect(phi_g, lam_g, _eig_desc(c)[1]),
        }
    # (e) near-commuting covariances on a path (simple spectrum): Davis-Kahan
    n_p = 64
    lap_p = path_laplacian(n_p)
    low = np.linalg.inv(lap_p + 0.05 * np.eye(n_p))
    low /= np.linalg.norm(low, 2)
    noise = rng.normal(size=(n_p, n_p))
    noise = (noise + noise.T) / np.linalg.norm(noise + noise.T, 2)
    out["davis_kahan"] = [
        {"epsilon": eps, **davis_kahan(lap_p, low + eps * noise)}
        for eps in (0.0, 1e-4, 1e-3, 1e-2, 1e-1)
    ]
    # (f) truncated bases and unequal sizes: paths of 64 and 48 vertices, Π = linear
    # interpolation (not orthogonal); low-pass and band-pass spectra, and a perturbation
    n_x, n_y, k = 64, 48, 8
    pi = interpolation(n_x, n_y)
    lx, ly = path_laplacian(n_x), path_laplacian(n_y)

    def spectral_cov(lap_: np.ndarray, g: Any) -> np.ndarray:
        lam_, phi_ = np.linalg.eigh(lap_)
        size = lap_.shape[0]
        return np.asarray((phi_ * g(lam_ * (size / n_x) ** 2)) @ phi_.T)

    def low_pass(x: np.ndarray) -> np.ndarray:
        return np.asarray(1.0 / (x + 0.01))

    def band_pass(x: np.ndarray) -> np.ndarray:
        return np.asarray(np.exp(-(((x - 1.0) / 0.3) ** 2)) + 1e-3 / (1 + x))

    cases = {
        "low-pass (Matérn-like)": (spectral_cov(lx, low_pass), spectral_cov(ly, low_pass)),
        "band-pass": (spectral_cov(lx, band_pass), spectral_cov(ly, band_pass)),
    }
    cx, cy = cases["low-pass (Matérn-like)"]
    for eps in (1e-3, 1e-1):
        nx_ = rng.normal(size=(n_x, n_x))
        ny_ = rng.normal(size=(n_y, n_y))
        cases[f"low-pass + non-stationary {eps:g}"] = (
            cx + eps * np.linalg.norm(cx, 2) * (nx_ @ nx_.T) / n_x,
            cy + eps * np.linalg.norm(cy, 2) * (ny_ @ ny_.T) / n_y,
        )
    out["truncation"] = {
        "n_x": n_x,
        "n_y": n_y,
        "k": k,
        "pi_norm": float(np.linalg.norm(pi, 2)),
        "cases": {name: truncated_comparison(c, (lx, ly), pi, k) for name, c in cases.items()},
    }
    # with full bases the band-pass matrices still coincide up to a signed permutation
    defects = []
    for c, lap_ in zip(cases["band-pass"], (lx, ly), strict=True):
        lam_, phi_ = np.linalg.eigh(lap_)
        defects.append(eigenspace_defect(phi_, lam_, _eig_desc(c)[1]))
    out["truncation"]["band_pass_full_eigenspace_defect"] = defects
    return out


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


def neuron_experiment(
    nets: dict[tuple[str, int, int], SmallCNN], probe: torch.Tensor
) -> dict[str, Any]:
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
                "seeds": [a[2], b[2]],
                "residual_identity": relative_residual(xa, xb, np.eye(16)),
                "residual_permutation": relative_residual(xa, xb, best_permutation(xa, xb)),
                "residual_rotation": relative_residual(
                    xa, xb, spectral.procrustes_rotation(xa, xb)
                ),
            }
        )
    return out


# ---- 3. spatial eigenbases of 3x3 filters -------------------------------------------------------


GRID_EDGES = [[r * 3 + c, r * 3 + c + 1] for r in range(3) for c in range(2)] + [
    [r * 3 + c, (r + 1) * 3 + c] for r in range(2) for c in range(3)
]


def grid_basis() -> spectral.Eigenbasis:
    return spectral.eigenbasis(spectral.graph_laplacian(GRID_EDGES, num_nodes=9), 9)


def grid_basis_matrix() -> np.ndarray:
    """The combinatorial Laplacian ``D - W`` of the 3x3 pixel grid (4-neighbours)."""
    lap = np.zeros((9, 9))
    for i, j in GRID_EDGES:
        lap[i, j] = lap[j, i] = -1.0
    lap[np.diag_indices(9)] = -lap.sum(1)
    return lap


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
            "commutator_with_laplacian": rel_commutator(np.asarray(cov), grid_basis_matrix()),
            "eigenspace_defect": eigenspace_defect(
                *np.linalg.eigh(grid_basis_matrix())[::-1], _eig_desc(np.asarray(cov))[1]
            ),
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


# ---- 4. the cross-network matrix and the application ------------------------------------------


def _gram(a: torch.Tensor) -> np.ndarray:
    x = a.detach().flatten(1).double().numpy()
    x = x - x.mean(0, keepdims=True)
    return np.asarray(x @ x.T)


def cka_from_grams(ka: np.ndarray, kb: np.ndarray) -> float:
    """Linear CKA from centred Gram matrices (the sample-space form of ``spectral.linear_cka``)."""
    den = float(np.linalg.norm(ka) * np.linalg.norm(kb))
    return float((ka * kb).sum() / den) if den > 0 else 0.0


def network_features(net: SmallCNN, probe: torch.Tensor) -> dict[str, Any]:
    """What the scores need from one network, computed once: conv1 channel samples, weight
    covariances and the Gram matrices of conv1, conv2 and the logits on the probe images."""
    with torch.no_grad():
        acts = spectral.collect_activations(net, probe, ["conv1", "conv2"])
        logits = net(probe)
    return {
        "width": net.conv1.out_channels,
        "conv1": spectral.channel_samples(acts["conv1"], max_samples=8000).numpy(),
        "cov2": spectral.weight_covariances(net.conv2.weight).channel,
        "sp1": spectral.weight_covariances(net.conv1.weight).spatial,
        "gram_conv1": _gram(acts["conv1"]),
        "gram_conv2": _gram(acts["conv2"]),
        "gram_logits": _gram(logits),
    }


def alignment_top(fmap: spectral.FunctionalMap, k: int) -> float:
    """Mean of ``C_ii^2`` over the ``k`` leading eigenvectors: 1 when each of the source's top
    eigenvectors is carried onto the target's eigenvector of the same rank."""
    return float(np.mean(np.diag(fmap.matrix)[:k] ** 2))


def cross_network_matrix(
    feats: dict[tuple[str, int, int], dict[str, Any]], k: int
) -> dict[str, Any]:
    """Guth & Ménard's comparison between every ordered pair of networks.

    The correspondence is the Procrustes map of the conv1 activations (semi-orthogonal when
    the widths differ); ``C = Ψ_Y^T R Ψ_X`` between the conv2 input-channel covariance bases.
    """
    order = (*DATASETS, "init")
    keys = sorted(feats, key=lambda key: (key[1] != BASE_WIDTH, order.index(key[0]), key[2]))
    entries = []
    for a, b in itertools.permutations(keys, 2):
        fa, fb = feats[a], feats[b]
        rot = spectral.procrustes_rotation(fa["conv1"], fb["conv1"])
        fmap = spectral.neural_encoding_map(fa["cov2"], fb["cov2"], rot)
        entries.append(
            {
                "a": list(a),
                "b": list(b),
                "alignment_top": alignment_top(fmap, k),
                "bw_aligned_conv2": spectral.bures_wasserstein_similarity(
                    fa["cov2"], fb["cov2"], rot
                ),
                "cka_logits": cka_from_grams(fa["gram_logits"], fb["gram_logits"]),
                "chance_alignment": 1.0 / max(fa["width"], fb["width"]),
            }
        )
    shown = {}
    src = ("mnist", BASE_WIDTH, 0)
    for dst in (
        ("mnist", BASE_WIDTH, 1),
        ("fashion", BASE_WIDTH, 0),
        ("digits", BASE_WIDTH, 0),
        ("mnist", 8, 0),
        ("init", BASE_WIDTH, 0),
    ):
        if src in feats and dst in feats:
            rot = spectral.procrustes_rotation(feats[src]["conv1"], feats[dst]["conv1"])
            fmap = spectral.neural_encoding_map(feats[src]["cov2"], feats[dst]["cov2"], rot)
            shown[f"{group_name(*src[:2])} (seed 0) to {group_name(*dst[:2])} (seed {dst[2]})"] = (
                np.abs(fmap.matrix).tolist()
            )
    return {"keys": [list(key) for key in keys], "k": k, "entries": entries, "shown": shown}


SIMILARITY_METRICS = (
    "bw_aligned_conv2",
    "bw_aligned_conv2_top_k",
    "alignment_top4_conv2",
    "bw_unaligned_conv2",
    "bw_conv1_spatial_data_free",
    "cka_conv1",
    "cka_conv2",
    "cka_logits",
)


def scores(fa: dict[str, Any], fb: dict[str, Any], k: int) -> dict[str, float]:
    rot = spectral.procrustes_rotation(fa["conv1"], fb["conv1"])
    fmap = spectral.neural_encoding_map(fa["cov2"], fb["cov2"], rot)
    trunc = spectral.neural_encoding_map(fa["cov2"], fb["cov2"], rot, k=k)
    return {
        "bw_aligned_conv2": fmap.bures_wasserstein_similarity(),
        "bw_aligned_conv2_top_k": trunc.bures_wasserstein_similarity(),
        "alignment_top4_conv2": alignment_top(fmap, 4),
        "bw_unaligned_conv2": spectral.bures_wasserstein_similarity(fa["cov2"], fb["cov2"]),
        "bw_conv1_spatial_data_free": spectral.bures_wasserstein_similarity(fa["sp1"], fb["sp1"]),
        "cka_conv1": cka_from_grams(fa["gram_conv1"], fb["gram_conv1"]),
        "cka_conv2": cka_from_grams(fa["gram_conv2"], fb["gram_conv2"]),
        "cka_logits": cka_from_grams(fa["gram_logits"], fb["gram_logits"]),
    }


def auc(pos: list[float], neg: list[float]) -> float:
    wins = sum((p > n) + 0.5 * (p == n) for p in pos for n in neg)
    return float(wins / (len(pos) * len(neg)))


def _auc_array(pos: np.ndarray, neg: np.ndarray) -> float:
    diff = pos[:, None] - neg[None, :]
    return float(((diff > 0) + 0.5 * (diff == 0)).mean())


def dprime(pos: list[float], neg: list[float]) -> float:
    pooled = math.sqrt((np.var(pos, ddof=1) + np.var(neg, ddof=1)) / 2) if len(pos) > 1 else 0.0
    return float((np.mean(pos) - np.mean(neg)) / pooled) if pooled > 0 else float("inf")


def network_bootstrap(
    keys: list[tuple[str, int, int]],
    value: dict[str, dict[tuple[Any, Any], float]],
    n_boot: int,
    seed: int,
) -> dict[str, dict[str, Any]]:
    """95 % percentile intervals of each metric's AUC, resampling networks, not pairs.

    The pairs share networks (each network is in ``len(keys) - 1`` pairs), so they are not
    independent. Each draw resamples the seeds of every data set with replacement, forms all
    pairs of distinct drawn networks, and recomputes the AUC; the difference to
    ``cka_conv2`` is taken on the same draws.
    """
    rng = np.random.default_rng(seed)
    by_data: dict[str, list[tuple[str, int, int]]] = {}
    for key in keys:
        by_data.setdefault(key[0], []).append(key)
    draws: dict[str, list[float]] = {m: [] for m in value}
    for _ in range(n_boot):
        drawn = [g[i] for g in by_data.values() for i in rng.integers(0, len(g), len(g))]
        pairs = [(a, b) if a < b else (b, a) for a, b in itertools.combinations(drawn, 2) if a != b]
        same = np.array([a[0] == b[0] for a, b in pairs])
        if same.all() or not same.any():
            continue
        for metric, vals in value.items():
            v = np.array([vals[p] for p in pairs])
            draws[metric].append(_auc_array(v[same], v[~same]))
    out = {}
    ref = np.array(draws["cka_conv2"])
    for metric, d in draws.items():
        arr = np.array(d)
        out[metric] = {
            "auc_ci": [float(np.percentile(arr, 2.5)), float(np.percentile(arr, 97.5))],
            "auc_minus_cka_conv2_ci": [
                float(np.percentile(arr - ref, 2.5)),
                float(np.percentile(arr - ref, 97.5)),
            ],
            "draws": len(arr),
        }
    return out


def similarity_experiment(
    feats: dict[tuple[str, int, int], dict[str, Any]], k: int, n_boot: int, seed: int
) -> dict[str, Any]:
    pairs = []
    keys = sorted(feats)
    for a, b in itertools.combinations(keys, 2):
        pairs.append(
            {"a": list(a), "b": list(b), "same_data": a[0] == b[0], **scores(feats[a], feats[b], k)}
        )
    value = {m: {(tuple(p["a"]), tuple(p["b"])): p[m] for p in pairs} for m in SIMILARITY_METRICS}
    boot = network_bootstrap(keys, value, n_boot, seed)
    summary = {}
    for metric in SIMILARITY_METRICS:
        pos = [p[metric] for p in pairs if p["same_data"]]
        neg = [p[metric] for p in pairs if not p["same_data"]]
        summary[metric] = {
            "same_mean": float(np.mean(pos)),
            "same_std": float(np.std(pos, ddof=1)) if len(pos) > 1 else 0.0,
            "diff_mean": float(np.mean(neg)),
            "diff_std": float(np.std(neg, ddof=1)) if len(neg) > 1 else 0.0,
            "auc": auc(pos, neg),
            "dprime": dprime(pos, neg),
            **boot[metric],
        }
    return {
        "networks": len(keys),
        "same_pairs": sum(p["same_data"] for p in pairs),
        "different_pairs": sum(not p["same_data"] for p in pairs),
        "pairs": pairs,
        "summary": summary,
    }


# ---- report ------------------------------------------------------------------------------------


def pm(values: list[float], digits: int = 3) -> str:
    """``mean ± std`` over seeds (the value alone for one seed)."""
    s = report.summarize(values)
    return format(s, f".{digits}f") if s.n > 1 else f"{s.mean:.{digits}f}"


def ci(values: list[float], digits: int = 3) -> str:
    """``mean [low, high]``: the 95 % Student-t interval of the mean over seeds."""
    s = report.summarize(values)
    if s.n < 2:
        return f"{s.mean:.{digits}f}"
    h = s.half_width
    return f"{s.mean:.{digits}f} [{s.mean - h:.{digits}f}, {s.mean + h:.{digits}f}]"


def sci(x: float) -> str:
    """A small number in scientific notation, ``n/a`` for NaN."""
    return "n/a" if math.isnan(x) else f"{x:.1e}"


GROUP_NAMES = {
    "mnist": "MNIST",
    "fashion": "Fashion-MNIST",
    "digits": "8x8 digits",
    "init": "untrained",
}


def group_name(data: str, width: int) -> str:
    return f"{GROUP_NAMES[data]}, w={width}"


def plateau_epoch(curve: list[float], tol: float = 0.005) -> int:
    """First epoch (1-based) whose accuracy is within ``tol`` of the curve's best."""
    best = max(curve)
    return next(i + 1 for i, v in enumerate(curve) if v >= best - tol)


def math_tables(m: dict[str, Any]) -> list[str]:
    table = report.markdown_table
    lines = ["### Mathematics: exact cases", ""]
    labels = {
        "cycle_stationary": "cycle (64), stationary",
        "cycle_commuting_not_stationary": "cycle (64), commutes with L, not stationary",
        "torus_stationary": "torus (8x8), stationary, anisotropic",
        "grid_gmrf": "3x3 grid, (L + 0.1 I)^-1",
        "grid_nonstationary": "3x3 grid, non-stationary",
    }
    rows: list[list[report.Cell]] = [
        [
            label,
            sci(m[key]["commutator"]),
            sci(m[key]["stationarity_defect"]),
            sci(m[key]["off_diagonal_dft"]),
            sci(m[key]["off_diagonal_laplacian_eigh"]),
            sci(m[key]["eigenspace_defect"]),
        ]
        for key, label in labels.items()
    ]
    header = [
        "covariance",
        "[Σ, L]",
        "stationarity defect",
        "off-diag. mass, DFT basis",
        "off-diag. mass, eigensolver basis of L",
        "eigenspace defect of Σ's eigenvectors",
    ]
    lines += [table(header, rows)]
    lines += ["### Mathematics: near-commuting covariances (Davis-Kahan)", ""]
    rows = [
        [
            f"{r['epsilon']:g}",
            sci(r["commutator"]),
            f"{sci(r['e_fro'])} ≤ {sci(r['e_fro_bound'])}",
            f"{r['sin_top4']:.4f} ≤ {r['sin_top4_bound']:.4f}",
            f"{r['defect']:.4f} ≤ {r['defect_bound']:.4f}",
            "yes" if r["sin_within_bound"] else "no",
        ]
        for r in m["davis_kahan"]
    ]
    header = [
        "ε",
        "[Σ, L]",
        "‖E‖_F ≤ ‖[Σ,L]‖_F / g_L",
        "max sin θ, top 4 ≤ bound",
        "eigenspace defect ≤ bound",
        "every sin θ_j within its bound",
    ]
    lines += [table(header, rows)]
    t = m["truncation"]
    lines += [
        f"### Mathematics: truncated bases and unequal sizes (paths of {t['n_x']} and "
        f"{t['n_y']} vertices, k = {t['k']})",
        "",
    ]
    rows = [
        [
            name,
            f"{r['overlap_x']:.3f} / {r['overlap_y']:.3f}",
            f"{r['sin_theta_x']:.3f} / {r['sin_theta_y']:.3f}",
            sci(r["difference"]),
            f"{r['bound']:.3f}",
            f"{r['abs_difference_unaligned']:.3f}",
            f"{r['c_fm_sigma_min']:.3f} to {r['c_fm_sigma_max']:.3f}",
        ]
        for name, r in t["cases"].items()
    ]
    header = [
        "covariances",
        "overlap of top-k and lowest-k (X / Y)",
        "‖sin Θ‖_2 (X / Y)",
        "‖C_ne − R_Y^T C_fm R_X‖_2",
        "bound",
        "‖abs(C_ne) − abs(C_fm)‖_F / ‖C_fm‖_F",
        "singular values of C_fm",
    ]
    lines += [table(header, rows)]
    return lines


def network_tables(res: dict[str, Any]) -> list[str]:
    table = report.markdown_table
    acc = res["accuracy"]
    groups = sorted(
        {(a["data"], a["width"]) for a in acc},
        key=lambda g: (g[1] != BASE_WIDTH, DATASETS.index(g[0])),
    )
    lines = ["### Trained CNNs (accuracy, mean [95 % t interval] over seeds)", ""]
    rows: list[list[report.Cell]] = []
    for g in groups:
        rs = [a for a in acc if (a["data"], a["width"]) == g]
        rows.append(
            [
                group_name(*g),
                len(rs),
                rs[0]["n_train"],
                rs[0]["epochs"],
                rs[0]["steps"],
                ci([r["train_accuracy"] for r in rs]),
                ci([r["val_accuracy"] for r in rs]),
                ci([r["test_accuracy"] for r in rs]),
            ]
        )
    header = ["networks", "seeds", "train images", "epochs", "steps", "train", "validation", "test"]
    lines += [table(header, rows)]
    lines += ["### Learning curves (validation accuracy, mean over seeds)", ""]
    rows = []
    for g in groups:
        rs = [a for a in acc if (a["data"], a["width"]) == g]
        curve = np.mean([r["val_curve"] for r in rs], axis=0).tolist()
        e = len(curve)
        marks = sorted({1, max(1, e // 4), max(1, e // 2), max(1, 3 * e // 4), e})
        rows.append(
            [
                group_name(*g),
                ", ".join(f"{curve[i - 1]:.3f} (ep. {i})" for i in marks),
                plateau_epoch(curve),
                f"{curve[-1] - curve[max(0, e // 2 - 1)]:+.3f}",
            ]
        )
    header = [
        "networks",
        "validation accuracy (epoch)",
        "flat from epoch (within 0.5 points of best)",
        "gain over the second half",
    ]
    lines += [table(header, rows)]
    return lines


def matrix_tables(res: dict[str, Any]) -> list[str]:
    table = report.markdown_table
    mx = res["matrix"]
    groups: list[tuple[str, int]] = []
    for key in mx["keys"]:
        if (key[0], key[1]) not in groups:
            groups.append((key[0], key[1]))
    lines: list[str] = []
    for metric, title in (
        ("alignment_top", f"alignment of the top-{mx['k']} conv2 eigenvectors, mean C_ii^2"),
        ("bw_aligned_conv2", "Bures fidelity of the aligned conv2 covariances"),
        ("cka_logits", "linear CKA of the logits"),
    ):
        lines += [f"### Cross-network matrix: {title} (mean ± std over network pairs)", ""]
        rows: list[list[report.Cell]] = []
        for ga in groups:
            row: list[report.Cell] = [group_name(*ga)]
            for gb in groups:
                vals = [
                    e[metric]
                    for e in mx["entries"]
                    if (e["a"][0], e["a"][1]) == ga and (e["b"][0], e["b"][1]) == gb
                ]
                row.append(pm(vals) if vals else "")
            rows.append(row)
        header = ["from (row) / to (column)", *(group_name(*g) for g in groups)]
        lines += [table(header, rows)]
    chance = sorted({e["chance_alignment"] for e in mx["entries"]})
    lines += ["### Cross-network matrix: chance level of the alignment", ""]
    lines += [
        table(
            ["widths", "chance (1 / larger width)"],
            [[f"{round(1 / c)} or fewer", f"{c:.4f}"] for c in chance],
        )
    ]
    return lines


def markdown(res: dict[str, Any]) -> str:
    table = report.markdown_table
    lines = [f"# Project 2 results ({res['mode']} mode, seeds {res['seeds']})", ""]
    lines += ["### Run", ""]
    lines += [
        table(
            [
                "mode",
                "seeds",
                "seconds of training (sum over networks)",
                "seconds of this run (no training when cached)",
                "load average (1, 5, 15 min) at the end",
                "threads",
            ],
            [
                [
                    res["mode"],
                    ", ".join(map(str, res["seeds"])),
                    f"{sum(a['seconds'] for a in res['accuracy']):.0f}",
                    f"{res['seconds']:.0f}",
                    ", ".join(f"{x:.1f}" for x in res["load_average"]),
                    1,
                ]
            ],
        )
    ]
    lines += math_tables(res["mathematics"])
    lines += network_tables(res)
    lines += ["### Meshes: mean error / sqrt(area) (mean ± std over seeds)", ""]
    rows: list[list[report.Cell]] = []
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
    lines += ["### Truncated bases, true map (asymmetric sheet)", ""]
    ms = [r for r in res["mesh"] if r["holes"]]
    rows = []
    for k in ms[0]["truncation"]:
        t = [r["truncation"][k] for r in ms]
        keys = ("orthogonality_defect", "off_diagonal_energy_blocks", "composition_error")
        rows.append([k, *(pm([x[key] for x in t]) for key in keys)])
    header = ["k", "orthogonality defect", "off-block energy", "composition error X->Y->X"]
    lines += [table(header, rows)]
    ne = res["neurons"]
    lines += ["### Permuted vs rotated neurons (conv1 activations)", ""]
    rows = [
        [f"exact {name}", f"{r['residual_permutation']:.3f}", f"{r['residual_rotation']:.2e}"]
        for name, r in ne["exact"].items()
    ]
    for data in DATASETS:
        prs = [p for p in ne["pairs"] if p["data"] == data]
        if prs:
            rows.append(
                [
                    f"independent seeds, {GROUP_NAMES[data]} ({len(prs)} pairs)",
                    pm([p["residual_permutation"] for p in prs]),
                    pm([p["residual_rotation"] for p in prs]),
                ]
            )
    header = ["relabelling", "residual, best permutation", "residual, Procrustes rotation"]
    lines += [table(header, rows)]
    lines += ["### Spatial covariance of 3x3 filters vs the grid Laplacian", ""]
    rows = [
        [
            name,
            r["top1_variance"],
            r["top3_variance"],
            f"{r['variance_in_lowest_laplacian_1']:.3f} / "
            f"{r['variance_in_lowest_laplacian_3']:.3f}",
            f"{r['off_diagonal_energy_to_laplacian']:.3f} / "
            f"{r['off_diagonal_energy_to_laplacian_blocks']:.3f}",
            f"{r['commutator_with_laplacian']:.3f}",
            f"{r['eigenspace_defect']:.3f}",
        ]
        for name, r in res["spatial"]["layers"].items()
    ]
    header = [
        "layer",
        "top-1 var.",
        "top-3 var.",
        "var. in lowest-1 / 3 Laplacian modes",
        "off-diag. energy to Laplacian (plain / blocks)",
        "[Σ, L]",
        "eigenspace defect",
    ]
    lines += [table(header, rows)]
    lines += matrix_tables(res)
    sim = res["similarity"]
    lines += ["### Application: the pairs", ""]
    lines += [
        table(
            ["networks", "same-data pairs", "different-data pairs", "bootstrap draws"],
            [
                [
                    sim["networks"],
                    sim["same_pairs"],
                    sim["different_pairs"],
                    sim["summary"]["cka_conv2"]["draws"],
                ]
            ],
        )
    ]
    lines += ["### Application: same-data vs different-data pairs", ""]
    rows = [
        [
            m,
            report.Summary(s["same_mean"], s["same_std"], n=0),
            report.Summary(s["diff_mean"], s["diff_std"], n=0),
            f"{s['auc']:.3f} [{s['auc_ci'][0]:.3f}, {s['auc_ci'][1]:.3f}]",
            f"[{s['auc_minus_cka_conv2_ci'][0]:+.3f}, {s['auc_minus_cka_conv2_ci'][1]:+.3f}]",
            s["dprime"],
        ]
        for m, s in sim["summary"].items()
    ]
    header = [
        "score",
        "same data",
        "different data",
        "AUC [95 % network bootstrap]",
        "AUC − AUC of cka_conv2 [95 %]",
        "d'",
    ]
    lines += [table(header, rows, formats=[None, ".3f", ".3f", None, None, ".2f"])]
    lines += ["### Appendix: every network", ""]
    rows = [
        [
            group_name(a["data"], a["width"]),
            a["seed"],
            a["train_accuracy"],
            a["val_accuracy"],
            a["test_accuracy"],
            plateau_epoch(a["val_curve"]),
        ]
        for a in res["accuracy"]
    ]
    header = ["networks", "seed", "train", "validation", "test", "flat from epoch"]
    lines += [table(header, rows, formats=[None, None, ".4f", ".4f", ".4f", None])]
    lines += ["### Appendix: every mesh pair", ""]
    rows = [
        [
            "asymmetric" if r["holes"] else "symmetric",
            r["seed"],
            r["error_init"],
            r["error_zoomout"],
            r["error_truth_roundtrip"],
        ]
        for r in res["mesh"]
    ]
    header = ["sheet", "seed", "descriptors + commutativity", "+ ZoomOut", "true map round trip"]
    lines += [table(header, rows, formats=[None, None, ".4f", ".4f", ".4f"])]
    return "\n".join(lines)


def figures(
    res: dict[str, Any], maps: dict[str, np.ndarray], vectors: dict[str, np.ndarray], out: Path
) -> list[str]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    written: list[str] = []

    def save(fig: Any, name: str) -> None:
        fig.tight_layout()
        fig.savefig(out / name, dpi=110)
        plt.close(fig)
        written.append(name)

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
    save(fig, "mesh_fmaps.png")

    fig, axes = plt.subplots(len(vectors), 4, figsize=(5.5, 1.4 * len(vectors)))
    for i, (name, vec) in enumerate(vectors.items()):
        for j in range(4):
            ax = axes[i, j]
            ax.imshow(vec[:, j].reshape(3, 3), cmap="RdBu_r", vmin=-0.8, vmax=0.8)
            ax.set_xticks([]), ax.set_yticks([])
            if j == 0:
                ax.set_ylabel(name, rotation=0, ha="right", va="center", fontsize=8)
    fig.suptitle("leading eigenvectors of 3x3 spatial covariances", fontsize=9)
    save(fig, "spatial_eigenvectors.png")

    mx = res["matrix"]
    keys_ = [tuple(k) for k in mx["keys"]]
    index = {k: i for i, k in enumerate(keys_)}
    grid = np.full((len(keys_), len(keys_)), np.nan)
    for e in mx["entries"]:
        grid[index[tuple(e["a"])], index[tuple(e["b"])]] = e["alignment_top"]
    fig, ax = plt.subplots(figsize=(6.4, 5.6))
    image = ax.imshow(grid, cmap="viridis", vmin=0, vmax=1)
    edges = [i for i in range(1, len(keys_)) if keys_[i][:2] != keys_[i - 1][:2]]
    for x in edges:
        ax.axhline(x - 0.5, color="white", lw=0.8)
        ax.axvline(x - 0.5, color="white", lw=0.8)
    starts = [0, *edges]
    centres = [(a + b - 1) / 2 for a, b in zip(starts, [*edges, len(keys_)], strict=True)]
    labels = [group_name(*keys_[i][:2]) for i in starts]
    ax.set_xticks(centres, labels, rotation=60, ha="right", fontsize=7)
    ax.set_yticks(centres, labels, fontsize=7)
    fig.colorbar(image, ax=ax, shrink=0.8)
    ax.set_title(
        f"top-{mx['k']} eigenvector alignment of conv2 covariances (row: from, column: to)",
        fontsize=8,
    )
    save(fig, "cross_network_matrix.png")

    shown = res["matrix"]["shown"]
    fig, axes = plt.subplots(1, len(shown), figsize=(2.6 * len(shown), 3.0))
    for ax, (name, mat) in zip(np.atleast_1d(axes), shown.items(), strict=True):
        ax.imshow(np.asarray(mat), cmap="magma", vmin=0, vmax=1)
        ax.set_title(name.replace(" to ", "\nto "), fontsize=7)
        ax.set_xlabel("source eigenvector", fontsize=7)
        ax.set_ylabel("target eigenvector", fontsize=7)
        ax.tick_params(labelsize=6)
    fig.suptitle("|C| between conv2 channel-covariance eigenbases, Procrustes-aligned", fontsize=9)
    save(fig, "cross_network_c.png")

    pairs = res["similarity"]["pairs"]
    metrics = [
        "bw_aligned_conv2",
        "alignment_top4_conv2",
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
            s=10,
            label="same data" if i == 0 else None,
        )
        ax.scatter(
            np.full(len(diff), i + 0.1),
            diff,
            color="tab:red",
            s=10,
            label="different data" if i == 0 else None,
        )
    ax.set_xticks(range(len(metrics)), [m.replace("_", "\n", 2) for m in metrics], fontsize=7)
    ax.set_ylabel("similarity")
    ax.legend(fontsize=8)
    ax.set_title("model pairs: spectral scores vs linear CKA", fontsize=9)
    save(fig, "similarity_scores.png")
    return written


def run_config(quick: bool) -> dict[str, Any]:
    """The run's sizes: full mode trains every network until its validation curve is flat."""
    if quick:
        return {
            "seeds": [0, 1],
            "widths": [BASE_WIDTH, 8],
            "width_data": ["mnist", "fashion"],
            "n_train": 600,
            "n_val": 100,
            "n_test": 300,
            "epochs": {"mnist": 3, "fashion": 3, "digits": 5},
            "n_probe": 40,
            "bootstrap": 200,
        }
    return {
        "seeds": [0, 1, 2, 3, 4],
        "widths": [BASE_WIDTH, 8],
        "width_data": ["mnist", "fashion"],
        "n_train": 10000,
        "n_val": 2000,
        "n_test": 5000,
        "epochs": {"mnist": 10, "fashion": 20, "digits": 30},
        "n_probe": 300,
        "bootstrap": 2000,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[1])
    parser.add_argument("--quick", action="store_true", help="seconds-long run (tests)")
    parser.add_argument(
        "--out", type=Path, default=None, help="default: results/ (quick: results/quick/)"
    )
    parser.add_argument(
        "--cache",
        type=Path,
        default=None,
        help="folder of trained networks: loaded when present, saved after training",
    )
    parser.add_argument(
        "--train-only", action="store_true", help="train (and cache) the networks, then stop"
    )
    args = parser.parse_args()
    torch.set_num_threads(1)
    t0 = time.perf_counter()
    quick = args.quick
    config = run_config(quick)
    seeds = config["seeds"]
    out: Path = args.out or (HERE / "results" / "quick" if quick else HERE / "results")

    nets, accuracy_rows, data = trained_networks(config, args.cache)
    timings = {"train": time.perf_counter() - t0}
    if args.train_only:
        for row in accuracy_rows:
            print(row["data"], row["width"], row["seed"], f"{row['test_accuracy']:.4f}")
        return
    out.mkdir(parents=True, exist_ok=True)

    # 0. the mathematics, checked numerically
    maths = mathematics()
    timings["mathematics"] = time.perf_counter() - t0

    # 1. meshes
    mesh = mesh_experiment(
        16 if quick else 48, seeds, k0=8 if quick else 30, k1=16 if quick else 60
    )
    timings["mesh"] = time.perf_counter() - t0

    n_probe = config["n_probe"]
    probe = torch.cat([data[name]["xte"][:n_probe] for name in DATASETS])
    base = {k: v for k, v in nets.items() if k[1] == BASE_WIDTH and k[0] != "init"}

    # 2. neurons
    neurons = neuron_experiment(base, probe)

    # 3. spatial eigenbases
    filters: dict[str, torch.Tensor] = {}
    for name in DATASETS:
        filters[f"ours {name} conv1 (seed 0)"] = nets[(name, BASE_WIDTH, 0)].conv1.weight.detach()
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

    # 4. the cross-network matrix and the application
    feats = {key: network_features(net, probe) for key, net in nets.items()}
    matrix = cross_network_matrix(feats, k=4)
    similarity = similarity_experiment(
        {k: feats[k] for k in base}, k=8, n_boot=config["bootstrap"], seed=0
    )
    timings["networks"] = time.perf_counter() - t0

    res = {
        "mode": "quick" if quick else "full",
        "seeds": seeds,
        "config": config,
        "accuracy": accuracy_rows,
        "mathematics": maths,
        "mesh": mesh["rows"],
        "neurons": neurons,
        "spatial": {"layers": spatial["layers"], "cross": spatial["cross"]},
        "matrix": matrix,
        "similarity": similarity,
    }
    timings["total"] = time.perf_counter() - t0
    res["timings"] = timings
    res["seconds"] = timings["total"]
    res["load_average"] = list(os.getloadavg())
    written = figures(res, mesh["maps"], spatial["vectors"], out)
    res["figures"] = written
    (out / "results.json").write_text(json.dumps(res, indent=2, default=float))
    md = markdown(res)
    (out / "results.md").write_text(md)
    (out / "tables.rst").write_text(report.markdown_to_rst(md))
    print(md)


if __name__ == "__main__":
    main()
