"""
Task vectors on the part that a CNN and a ViT share
===================================================

A small convolutional network and a small vision transformer, each with its own trunk, feed
the same module: a two-layer MLP block (64 -> 128 -> 64) followed by linear heads.
:func:`weightspace.select.common` finds that block in both architectures by its structure,
and every task vector of this study lives on it. We reproduce the four applications of task
arithmetic of Ilharco et al. (ICLR 2023) -- forgetting by negation, learning by addition,
multi-task addition, task analogies -- on MNIST, Fashion-MNIST and tasks derived from them
(parity, rotated and inverted images, digit subpopulations), within each architecture and
across architectures: a vector fine-tuned on the CNN's block applied to the ViT's block, and
back.

Whether a vector can cross depends on how the two blocks were made, so five regimes are
compared: pretrained independently; independently and then aligned (orthogonal Procrustes on
the block's input and output spaces, weight matching of its hidden units with
:mod:`weightspace.align`); pretrained jointly (one block and one head shared by both trunks);
the ViT's trunk distilled into the CNN's feature space, on upright images, or on upright,
rotated and inverted images. Finally one element of modular deep learning is added to the
multi-task application: the block's task modules as LoRA-style low-rank units (truncated SVD
of the dense vectors, and LoRA modules trained directly), merged or picked per input by a
learned router.

Run ``python run_heterogeneous_task_vectors.py`` for the full study (3 seeds; it writes
``results/``) or ``--quick`` for a smoke run in under a minute of CPU time.
"""

from __future__ import annotations

import argparse
import copy
import itertools
import json
import math
import os
import statistics
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.func import functional_call

import weightspace as ws
from weightspace import TaskVector, align, arithmetic, merge, report, select, spectral, train
from weightspace.report import markdown_to_rst

HERE = Path(__file__).resolve().parent
DIM, HIDDEN = 64, 128  # the common block: DIM -> HIDDEN -> DIM
ARCHS = ("cnn", "vit")
TRAINED = ("independent", "joint", "distilled", "distilled-all")  # regimes with own models
REGIMES = ("independent", "aligned", "joint", "distilled", "distilled-all")
DIRECTIONS = (("cnn", "cnn"), ("vit", "vit"), ("cnn", "vit"), ("vit", "cnn"))
DISTILL_WEIGHT = 5.0  # weight of the normalised feature-distillation MSE of "distilled"
LO, HI = (0, 1, 2, 3, 4), (5, 6, 7, 8, 9)


@dataclass(frozen=True)
class TaskSpec:
    """A task: images of one data set in one variant, read through some rows of a head."""

    source: str  # "mnist" or "fashion"
    variant: str  # "up", "rot" (rotated by 90 degrees) or "inv" (inverted grey levels)
    head: str  # key of HEADS
    classes: tuple[int, ...] | None = None  # keep only these classes (None: all)


TASKS: dict[str, TaskSpec] = {
    "mnist": TaskSpec("mnist", "up", "digit"),
    "fashion": TaskSpec("fashion", "up", "fashion"),
    "parity": TaskSpec("mnist", "up", "parity"),
    "rot_mnist": TaskSpec("mnist", "rot", "digit"),
    "inv_mnist": TaskSpec("mnist", "inv", "digit"),
    "rot_fashion": TaskSpec("fashion", "rot", "fashion"),
    "inv_fashion": TaskSpec("fashion", "inv", "fashion"),
    # subpopulations (digits 0-4 and 5-9), for the analogies
    "digits_lo": TaskSpec("mnist", "up", "digit_lo", LO),
    "digits_hi": TaskSpec("mnist", "up", "digit_hi", HI),
    "rot_digits_lo": TaskSpec("mnist", "rot", "digit_lo", LO),
    "rot_digits_hi": TaskSpec("mnist", "rot", "digit_hi", HI),
    "inv_digits_lo": TaskSpec("mnist", "inv", "digit_lo", LO),
    "inv_digits_hi": TaskSpec("mnist", "inv", "digit_hi", HI),
}
HEADS: dict[str, tuple[str, int, int]] = {  # head -> (module in `heads`, first row, end row)
    "digit": ("pretrain", 0, 10),
    "fashion": ("pretrain", 10, 20),
    "parity": ("parity", 0, 2),
    "digit_lo": ("pretrain", 0, 5),
    "digit_hi": ("pretrain", 5, 10),
}
MULTI = ("mnist", "fashion", "parity", "rot_mnist", "inv_mnist", "rot_fashion", "inv_fashion")
NEGATION = (("mnist", ("fashion",)), ("fashion", ("mnist",)))  # target, controls
PAIR_TASKS = ("parity", "rot_mnist", "inv_mnist", "rot_fashion", "inv_fashion")
ANALOGIES = (  # D = C + (B - A): (A, B, C, D)
    ("digits_lo", "rot_digits_lo", "digits_hi", "rot_digits_hi"),
    ("digits_hi", "rot_digits_hi", "digits_lo", "rot_digits_lo"),
    ("digits_lo", "inv_digits_lo", "digits_hi", "inv_digits_hi"),
    ("digits_hi", "inv_digits_hi", "digits_lo", "inv_digits_lo"),
    ("mnist", "rot_mnist", "fashion", "rot_fashion"),
    ("mnist", "inv_mnist", "fashion", "inv_fashion"),
)
VARIANTS = ("up", "rot", "inv")
NEG_GRID = tuple(round(0.2 * i, 2) for i in range(21))  # 0 .. 4: see the report

# Tuning protocol of the merges (learning by addition): every method with a hyperparameter
# gets the same budget of 20 configurations, each scored on validation data only; the one
# with the best mean normalised validation accuracy is kept. Weight averaging has no
# hyperparameter (1 configuration). The random control gets task arithmetic's budget.
TA_GRID = tuple(round(0.05 * i, 2) for i in range(1, 21))  # 20 scales
TIES_DENSITIES = (0.1, 0.2, 0.5, 1.0)  # x 5 scales (TIES merges a mean, not a sum)
TIES_SCALES = (0.5, 1.0, 1.5, 2.0, 3.0)
MASK_LAMBDAS = (0.2, 0.4, 0.6, 0.8)  # TALL / Consensus mask thresholds, x 5 scales
MASK_SCALES = (0.2, 0.4, 0.6, 0.8, 1.0)
SINGLE_METHODS = ("average", "task_arithmetic", "ties", "consensus")  # one merged model
ORACLE_METHODS = ("tall_masks",)  # one model per task: needs the task identity
CONTROL_METHODS = ("random",)  # random vectors of the task vectors' norms, summed


@dataclass
class Config:
    """Sizes of one run: the full study or the quick smoke run."""

    seeds: tuple[int, ...]
    n_pre: int  # pretraining images per data set (MNIST, Fashion-MNIST)
    pre_epochs: int
    n_ft: int  # fine-tuning images per (data set, variant)
    n_val: int  # validation images per (data set, variant): choice of scales
    n_test: int  # test images per (data set, variant)
    ft_epochs: int
    ranks: tuple[int, ...]  # ranks of the low-rank study
    lora_rank: int = 4
    pre_lr: float = 2e-3
    batch_size: int = 64
    ft_lr: float = 1e-3
    lora_lr: float = 3e-3
    grid_stride: int = 1  # every k-th scale of the grids (2 in quick mode)
    out: Path = field(default_factory=lambda: HERE / "results")


FULL = Config(
    seeds=(0, 1, 2, 3, 4),
    n_pre=6000,
    pre_epochs=3,
    n_ft=3000,
    n_val=600,
    n_test=2000,
    ft_epochs=5,
    ranks=(1, 4, 16),
)
QUICK = Config(
    seeds=(0,),
    n_pre=1500,
    pre_epochs=1,
    n_ft=500,
    n_val=200,
    n_test=300,
    ft_epochs=3,
    ranks=(4,),
    grid_stride=2,
    out=HERE / "results" / "quick",
)

Pair = tuple[Tensor, Tensor]
StateDict = dict[str, Tensor]


# %%
# The two architectures and their common part
# -------------------------------------------
#
# Each architecture is written like a torchvision model and names its parts its own way; the
# common block is ``block`` in the CNN and ``mlp_head`` in the ViT. Both end with the same
# ``heads``: a 20-way output layer (digits 0-9, then the ten clothes) and a parity layer.


def common_block() -> nn.Sequential:
    """The common part: Linear(64, 128) - ReLU - Linear(128, 64)."""
    return nn.Sequential(nn.Linear(DIM, HIDDEN), nn.ReLU(), nn.Linear(HIDDEN, DIM))


def task_heads() -> nn.ModuleDict:
    return nn.ModuleDict({"pretrain": nn.Linear(DIM, 20), "parity": nn.Linear(DIM, 2)})


class _Net(nn.Module):
    """Shared forward: trunk -> ``embed`` (DIM features) -> common block -> a head."""

    common: str = ""
    heads: nn.ModuleDict

    def embed(self, x: Tensor) -> Tensor:
        raise NotImplementedError

    def block_module(self) -> nn.Module:
        return self.get_submodule(self.common)

    def forward(self, x: Tensor, *, head: str = "pretrain", from_features: bool = False) -> Tensor:
        z = x if from_features else self.embed(x)
        return self.heads[head](self.block_module()(z))


class SmallCNN(_Net):
    """Three 3x3 convolutions (16, 32, 64 channels) with batch norm and max pooling, a
    linear neck on the flattened 3x3 map."""

    common = "block"

    def __init__(self) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        for c_in, c_out in ((1, 16), (16, 32), (32, 64)):
            layers += [
                nn.Conv2d(c_in, c_out, 3, padding=1),
                nn.BatchNorm2d(c_out),
                nn.ReLU(),
                nn.MaxPool2d(2),
            ]
        self.features = nn.Sequential(*layers)
        self.neck = nn.Linear(64 * 3 * 3, DIM)
        self.block = common_block()
        self.heads = task_heads()

    def embed(self, x: Tensor) -> Tensor:
        return self.neck(torch.flatten(self.features(x), 1))


class _Encoder(nn.Module):
    def __init__(self, seq: int, width: int, depth: int, n_heads: int) -> None:
        super().__init__()
        self.pos_embedding = nn.Parameter(torch.empty(1, seq, width).normal_(std=0.02))
        self.layers = nn.Sequential(
            *(
                nn.TransformerEncoderLayer(
                    width,
                    n_heads,
                    2 * width,
                    dropout=0.0,
                    activation="gelu",
                    batch_first=True,
                    norm_first=True,
                )
                for _ in range(depth)
            )
        )
        self.ln = nn.LayerNorm(width)

    def forward(self, tokens: Tensor) -> Tensor:
        return self.ln(self.layers(tokens + self.pos_embedding))


class SmallViT(_Net):
    """7x7 patches (16 tokens + a class token), width 48, two pre-norm encoder layers."""

    common = "mlp_head"

    def __init__(self, width: int = 48, depth: int = 2, n_heads: int = 4) -> None:
        super().__init__()
        self.conv_proj = nn.Conv2d(1, width, kernel_size=7, stride=7)
        self.class_token = nn.Parameter(torch.zeros(1, 1, width))
        self.encoder = _Encoder(17, width, depth, n_heads)
        self.neck = nn.Linear(width, DIM)
        self.mlp_head = common_block()
        self.heads = task_heads()

    def embed(self, x: Tensor) -> Tensor:
        tokens = self.conv_proj(x).flatten(2).transpose(1, 2)
        tokens = torch.cat([self.class_token.expand(len(tokens), -1, -1), tokens], dim=1)
        return self.neck(self.encoder(tokens)[:, 0])


def build(arch: str, seed: int) -> _Net:
    torch.manual_seed(seed)
    return SmallCNN() if arch == "cnn" else SmallViT()


def n_params(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


# %%
# Data: MNIST and Fashion-MNIST, upright, rotated by 90 degrees, inverted
# -----------------------------------------------------------------------


def load_data(cfg: Config) -> dict[str, Any]:
    """Disjoint pretraining / fine-tuning / validation images of the training sets, and test
    images of the test sets, for each (data set, variant)."""
    out: dict[str, Any] = {"pre": [], "sets": {}}
    for k, (source, loader) in enumerate(
        (("mnist", ws.data.mnist), ("fashion", ws.data.fashion_mnist))
    ):
        tr, te = loader("train"), loader("test")
        parts = {
            "pre": (tr.images[: cfg.n_pre], tr.targets[: cfg.n_pre]),
            "train": (
                tr.images[cfg.n_pre : cfg.n_pre + cfg.n_ft],
                tr.targets[cfg.n_pre : cfg.n_pre + cfg.n_ft],
            ),
            "val": (
                tr.images[50_000 : 50_000 + cfg.n_val],
                tr.targets[50_000 : 50_000 + cfg.n_val],
            ),
            "test": (te.images[: cfg.n_test], te.targets[: cfg.n_test]),
        }
        x, y = parts["pre"]
        out["pre"].append((x, y + 10 * k))
        for var in ("up", "rot", "inv"):
            out["sets"][(source, var)] = {
                split: (variant(parts[split][0], var), parts[split][1])
                for split in ("train", "val", "test")
            }
    xs, ys = zip(*out["pre"], strict=True)
    out["pre_raw"] = torch.cat(xs)  # uint8, for the distillation on all variants
    out["pre"] = (variant(out["pre_raw"], "up"), torch.cat(ys))
    return out


def variant(images: Tensor, kind: str) -> Tensor:
    """uint8 images -> normalised float images, upright, rotated by 90 degrees or inverted."""
    x = images.float() / 255.0
    if kind == "rot":
        x = torch.rot90(x, 1, dims=(2, 3))
    elif kind == "inv":
        x = 1.0 - x
    return (x - 0.5) / 0.5


def task_data(task: str, z: Tensor, y: Tensor) -> Pair:
    """The examples of a task (its classes only) and its labels (parity, or 0-4 for 5-9)."""
    spec = TASKS[task]
    if spec.classes is not None:
        keep = torch.isin(y, torch.tensor(spec.classes))
        z, y = z[keep], y[keep]
    if spec.head == "parity":
        return z, y % 2
    if spec.head == "digit_hi":
        return z, y - 5
    return z, y


# %%
# Pretraining: independent, joint (one shared block), or the ViT distilled into the CNN's space
# ---------------------------------------------------------------------------------------------


def pretrain_independent(cfg: Config, data: Pair, seed: int) -> dict[str, _Net]:
    models = {}
    for k, arch in enumerate(ARCHS):
        model = build(arch, 1000 * seed + 10 + k)  # each block starts from its own init
        train.fit_(
            model, data, epochs=cfg.pre_epochs, lr=cfg.pre_lr, batch_size=cfg.batch_size, seed=seed
        )
        models[arch] = model.eval()
    return models


def pretrain_joint(cfg: Config, data: Pair, seed: int) -> dict[str, _Net]:
    """Both trunks feed ONE block and ONE set of heads; the loss is the sum of both
    architectures' cross-entropies."""
    cnn, vit = build("cnn", 1000 * seed + 20), build("vit", 1000 * seed + 21)
    vit.mlp_head = cnn.block  # tie the common part (and the heads) during pretraining
    vit.heads = cnn.heads
    pair = nn.ModuleDict({"cnn": cnn, "vit": vit})

    def loss(m: nn.Module, batch: Pair) -> Tensor:
        x, y = batch
        block, head = m["cnn"].block, m["cnn"].heads["pretrain"]
        za, zb = m["cnn"].embed(x), m["vit"].embed(x)
        return F.cross_entropy(head(block(za)), y) + F.cross_entropy(head(block(zb)), y)

    train.fit_(
        pair,
        data,
        loss=loss,
        epochs=cfg.pre_epochs,
        lr=cfg.pre_lr,
        batch_size=cfg.batch_size,
        seed=seed,
    )
    # deep copies untie the two blocks: from here on each model owns its copy
    return {"cnn": copy.deepcopy(cnn).eval(), "vit": copy.deepcopy(vit).eval()}


def pretrain_distilled(
    cfg: Config, data: Mapping[str, Any], seed: int, teacher: _Net, variants: Sequence[str]
) -> dict[str, _Net]:
    """The ViT gets a copy of the (independently pretrained) CNN's block and heads, frozen,
    and its trunk learns to classify upright images through them while reproducing the CNN's
    features (normalised MSE) on the pretraining images in ``variants``: model stitching
    (Lenc & Vedaldi, CVPR 2015) by feature distillation. Rotated and inverted copies of the
    pretraining images enter the MSE only, without labels."""
    vit = build("vit", 1000 * seed + 30)
    vit.mlp_head = copy.deepcopy(teacher.block_module())
    vit.heads = copy.deepcopy(teacher.heads)
    for p in [*vit.mlp_head.parameters(), *vit.heads.parameters()]:
        p.requires_grad_(False)
    x = torch.cat([variant(data["pre_raw"], v) for v in variants])
    y = data["pre"][1]
    n = len(y)
    with torch.no_grad():
        target = torch.cat([teacher.embed(b) for b in x.split(1000)])
    scale = float(target.pow(2).mean())

    def loss(m: nn.Module, batch: Pair) -> Tensor:
        xb, idx = batch
        z = m.embed(xb)
        value = DISTILL_WEIGHT * F.mse_loss(z, target[idx]) / scale
        up = idx < n  # labelled: the upright pretraining images
        if up.any():
            value = value + F.cross_entropy(m.heads["pretrain"](m.mlp_head(z[up])), y[idx[up]])
        return value

    train.fit_(
        vit,
        (x, torch.arange(len(x))),
        loss=loss,
        epochs=cfg.pre_epochs,
        lr=cfg.pre_lr,
        batch_size=cfg.batch_size,
        seed=seed,
    )
    for p in vit.parameters():
        p.requires_grad_(True)
    return {"cnn": copy.deepcopy(teacher).eval(), "vit": vit.eval()}


@torch.no_grad()
def features(model: _Net, sets: Mapping[Any, Mapping[str, Pair]]) -> dict[Any, dict[str, Tensor]]:
    return {
        key: {
            split: torch.cat([model.embed(x) for x in xy[0].split(1000)]) for split, xy in s.items()
        }
        for key, s in sets.items()
    }


def fit_parity_head(
    models: Mapping[str, _Net], feats: Mapping[str, Any], y: Tensor, seed: int, shared: bool
) -> None:
    """The parity head: a linear probe on the pretrained block's output (upright MNIST); one
    probe on both architectures' outputs together when the block is shared."""

    def outputs(arch: str) -> Tensor:
        with torch.no_grad():
            return models[arch].block_module()(feats[arch][("mnist", "up")]["train"])

    groups = [list(ARCHS)] if shared else [[a] for a in ARCHS]
    for group in groups:
        u = torch.cat([outputs(a) for a in group])
        target = (y % 2).repeat(len(group))
        torch.manual_seed(seed)
        probe = nn.Linear(DIM, 2)
        train.fit_(probe, (u, target), epochs=10, lr=1e-2, seed=seed)
        for a in group:
            models[a].heads["parity"].load_state_dict(probe.state_dict())


# %%
# Alignment of two independently pretrained common parts
# ------------------------------------------------------
#
# Exact reparametrisations of the ViT (its function does not change): an orthogonal map of
# the block's input space (orthogonal Procrustes on features of the same images, folded into
# the ViT's neck), an orthogonal map of the block's output space (folded into the heads), and
# a permutation of the block's hidden units found by weight matching (Git Re-Basin, with
# :mod:`weightspace.align`). After them the ViT's block is written in the CNN's coordinates.


def procrustes(source: Tensor, target: Tensor) -> Tensor:
    """The orthogonal R minimising ||source @ R - target||_F (uncentred features)."""
    r = spectral.procrustes_rotation(source, target, center=False)  # target ~ source @ r.T
    return torch.from_numpy(r.T.copy()).float()


def block_state(sd: Mapping[str, Tensor], prefix: str) -> StateDict:
    return {k[len(prefix) + 1 :]: v for k, v in sd.items() if k.startswith(prefix + ".")}


def alignment(cnn: _Net, vit: _Net, za: Tensor, zb: Tensor) -> dict[str, Any]:
    with torch.no_grad():
        r_in = procrustes(zb, za)
        r_out = procrustes(vit.block_module()(zb), cnn.block_module()(za))
    spec = align.permutation_spec(common_block(), torch.zeros(2, DIM))
    rotated = block_state(rotate(vit.state_dict(), r_in, r_out, vit.common), vit.common)
    reference = block_state(cnn.state_dict(), cnn.common)
    perm = align.weight_matching(spec, reference, rotated)
    return {"r_in": r_in, "r_out": r_out, "spec": spec, "perm": perm}


def rotate(sd: Mapping[str, Tensor], r_in: Tensor, r_out: Tensor, prefix: str) -> StateDict:
    out = {k: v.clone() for k, v in sd.items()}
    out["neck.weight"] = r_in.T @ sd["neck.weight"]
    out["neck.bias"] = r_in.T @ sd["neck.bias"]
    out[f"{prefix}.0.weight"] = sd[f"{prefix}.0.weight"] @ r_in
    out[f"{prefix}.2.weight"] = r_out.T @ sd[f"{prefix}.2.weight"]
    out[f"{prefix}.2.bias"] = r_out.T @ sd[f"{prefix}.2.bias"]
    for head in ("pretrain", "parity"):
        out[f"heads.{head}.weight"] = sd[f"heads.{head}.weight"] @ r_out
    return out


def reparametrise(sd: Mapping[str, Tensor], maps: Mapping[str, Any], prefix: str) -> StateDict:
    """Rewrite a ViT state dict in the CNN's coordinates (exactly the same function)."""
    out = rotate(sd, maps["r_in"], maps["r_out"], prefix)
    permuted = maps["perm"].apply(maps["spec"], block_state(out, prefix))
    out.update({f"{prefix}.{k}": v for k, v in permuted.items()})
    return out


# %%
# Fine-tuning the common block (trunks and heads frozen) and LoRA modules
# -----------------------------------------------------------------------


class _OnFeatures(nn.Module):
    """The part of a model after its trunk, read through one task's head rows."""

    def __init__(self, model: _Net, task: str) -> None:
        super().__init__()
        self.model = model
        self.head, self.lo, self.hi = HEADS[TASKS[task].head]

    def forward(self, z: Tensor) -> Tensor:
        return self.model(z, head=self.head, from_features=True)[:, self.lo : self.hi]


def finetune(model: _Net, data: Pair, task: str, cfg: Config, seed: int) -> StateDict:
    m = copy.deepcopy(model)
    for p in m.parameters():
        p.requires_grad_(False)
    for p in m.block_module().parameters():
        p.requires_grad_(True)
    train.fit_(_OnFeatures(m, task), data, epochs=cfg.ft_epochs, lr=cfg.ft_lr, seed=seed)
    return {k: v.detach().clone() for k, v in m.state_dict().items()}


class LoraLinear(nn.Module):
    """``base(x) + (alpha / r) * x A^T B^T`` with a frozen ``base`` (Hu et al., ICLR 2022)."""

    def __init__(self, base: nn.Linear, rank: int, alpha: float) -> None:
        super().__init__()
        self.base = base
        self.lora_A = nn.Parameter(
            torch.randn(rank, base.in_features) / math.sqrt(base.in_features)
        )
        self.lora_B = nn.Parameter(torch.zeros(base.out_features, rank))
        self.scale = alpha / rank

    def forward(self, x: Tensor) -> Tensor:
        return self.base(x) + self.scale * F.linear(F.linear(x, self.lora_A), self.lora_B)


def finetune_lora(model: _Net, data: Pair, task: str, cfg: Config, seed: int) -> TaskVector:
    """Train rank-r LoRA factors on the block's two linear layers; return the dense task
    vector s*B@A of the adapter, read from PEFT's format by ``TaskVector.from_lora``."""
    m = copy.deepcopy(model)
    for p in m.parameters():
        p.requires_grad_(False)
    block = m.block_module()
    torch.manual_seed(seed)
    r = cfg.lora_rank
    for i in (0, 2):
        block[i] = LoraLinear(block[i], r, alpha=float(r))
    train.fit_(_OnFeatures(m, task), data, epochs=cfg.ft_epochs, lr=cfg.lora_lr, seed=seed)
    peft = {
        f"base_model.model.{m.common}.{i}.lora_{part}.weight": getattr(block[i], f"lora_{part}")
        .detach()
        .clone()
        for i in (0, 2)
        for part in ("A", "B")
    }
    config = {"r": r, "lora_alpha": r, "target_modules": ["0", "2"]}
    return TaskVector.from_lora(peft, config=config).materialize()


# %%
# Scores: a task's accuracy for a full state dict, on cached trunk features
# -------------------------------------------------------------------------


def logits_fn(model: _Net, task: str) -> Callable[[Mapping[str, Tensor], Tensor], Tensor]:
    head, lo, hi = HEADS[TASKS[task].head]

    def logits(sd: Mapping[str, Tensor], z: Tensor) -> Tensor:
        with torch.no_grad():
            out = functional_call(model, dict(sd), (z,), {"head": head, "from_features": True})
        return out[:, lo:hi]

    return logits


def accuracy_fn(
    model: _Net, task: str, z: Tensor, y: Tensor
) -> Callable[[Mapping[str, Tensor]], float]:
    logits = logits_fn(model, task)

    def score(sd: Mapping[str, Tensor]) -> float:
        return float((logits(sd, z).argmax(1) == y).float().mean())

    return score


def make_tasks(
    model: _Net, feats: Mapping[Any, Mapping[str, Tensor]], sets: Mapping[Any, Mapping[str, Pair]]
) -> dict[str, arithmetic.Task]:
    tasks = {}
    for name, spec in TASKS.items():
        f, s = feats[(spec.source, spec.variant)], sets[(spec.source, spec.variant)]
        val = task_data(name, f["val"], s["val"][1])
        test = task_data(name, f["test"], s["test"][1])
        tasks[name] = arithmetic.Task(
            name, validate=accuracy_fn(model, name, *val), test=accuracy_fn(model, name, *test)
        )
    return tasks


# %%
# Routing between task modules (modular deep learning)
# ----------------------------------------------------
#
# Instead of merging the seven modules into one vector, keep them apart and let a router pick
# one per input: a linear classifier on the trunk's features (the block's input) predicts the
# image variant (upright, rotated, inverted); the task's head says which data set. Top-1
# routing at the example level (Pfeiffer et al., "Modular Deep Learning", 2023, Section 4).


def fit_router(feats: Mapping[Any, Mapping[str, Tensor]], seed: int) -> nn.Linear:
    zs, ys = [], []
    for (_, var), f in feats.items():
        zs.append(f["train"])
        ys.append(torch.full((len(f["train"]),), VARIANTS.index(var)))
    torch.manual_seed(seed)
    router = nn.Linear(DIM, len(VARIANTS))
    train.fit_(router, (torch.cat(zs), torch.cat(ys)), epochs=20, lr=1e-2, seed=seed)
    return router.eval()


def routed_accuracy(
    model: _Net,
    base: Mapping[str, Tensor],
    modules: Mapping[str, TaskVector],
    router: nn.Linear,
    feats: Mapping[Any, Mapping[str, Tensor]],
    sets: Mapping[Any, Mapping[str, Pair]],
) -> dict[str, float]:
    """Test accuracy of each of the MULTI tasks when each input gets the module that the
    router picks among the modules of the task's head."""
    states = {k: v.apply_to(base) for k, v in modules.items()}
    out = {}
    for task in MULTI:
        spec = TASKS[task]
        z, y = task_data(
            task,
            feats[(spec.source, spec.variant)]["test"],
            sets[(spec.source, spec.variant)]["test"][1],
        )
        options = {TASKS[k].variant: k for k in MULTI if TASKS[k].head == spec.head}
        with torch.no_grad():
            scores = router(z)
        allowed = torch.tensor([v in options for v in VARIANTS])
        choice = scores.masked_fill(~allowed, -math.inf).argmax(1)
        logits = logits_fn(model, task)
        pred = torch.empty_like(y)
        for i, v in enumerate(VARIANTS):
            rows = choice == i
            if rows.any():
                pred[rows] = logits(states[options[v]], z[rows]).argmax(1)
        out[task] = float((pred == y).float().mean())
    return out


# %%
# One seed: models, vectors, and the four applications in every regime and direction
# ----------------------------------------------------------------------------------


def mean_abs_cosine(vectors: Sequence[TaskVector]) -> float:
    values = [abs(u.cosine(v)) for u, v in itertools.combinations(vectors, 2)]
    return statistics.fmean(values)


def vector_params(tv: TaskVector, rank: int | None) -> int:
    total = 0
    for name in tv:
        shape = tv.shape(name)
        if rank is not None and len(shape) == 2:
            total += min(rank, *shape) * (shape[0] + shape[1])
        else:
            total += math.prod(shape)
    return total


# %%
# Merges with the same tuning budget, and the random control of addition
# -----------------------------------------------------------------------
#
# :func:`weightspace.arithmetic.add` chooses each method's scale on validation data; a
# method with a second hyperparameter (TIES's density, the masks' threshold) enters once per
# value, and the value with the best validation score is kept. The random control adds, for
# each task, a Gaussian vector with the norms of the task's vector in every tensor: if
# addition helps because of the tasks' directions, the random sum must not.


def random_like(vector: TaskVector, seed: int) -> TaskVector:
    """A Gaussian vector with, in every tensor, the norm of ``vector``'s tensor."""
    gen = torch.Generator().manual_seed(seed)
    out = {}
    for name in vector:
        t = vector[name].float()
        r = torch.randn(t.shape, generator=gen)
        out[name] = r * (t.norm() / r.norm().clamp_min(1e-12))
    return TaskVector(out)


def random_sum(vectors: Sequence[TaskVector], *, seed: int) -> TaskVector:
    """The sum of one norm-matched random vector per task vector."""
    return merge.task_arithmetic([random_like(v, 1000 * seed + i) for i, v in enumerate(vectors)])


def tall(vectors: Sequence[TaskVector], *, lambdas: float) -> list[TaskVector]:
    """Per task, the sum of the vectors under that task's TALL mask (one model per task)."""
    merged = merge.task_arithmetic(vectors).materialize()
    return [merged.masked(m) for m in merge.tall_masks(vectors, lambdas=lambdas, merged=merged)]


def merge_methods(
    families: Sequence[str], seed: int, stride: int = 1
) -> dict[str, arithmetic.Method]:
    """Every configuration of the tuning budget, named ``family`` or ``family@value``."""
    method = arithmetic.Method
    out: dict[str, arithmetic.Method] = {}
    if "average" in families:
        out["average"] = method(merge.mean, grid=(1.0,))
    if "task_arithmetic" in families:
        out["task_arithmetic"] = method(merge.task_arithmetic, grid=TA_GRID[::stride])
    if "random" in families:
        out["random"] = method(partial(random_sum, seed=seed), grid=TA_GRID[::stride])
    if "ties" in families:
        for d in TIES_DENSITIES:
            out[f"ties@{d}"] = method(partial(merge.ties, density=d), grid=TIES_SCALES[::stride])
    if "consensus" in families:
        for lam in MASK_LAMBDAS:
            out[f"consensus@{lam}"] = method(
                partial(merge.consensus, k=2, lambdas=lam), grid=MASK_SCALES[::stride]
            )
    if "tall_masks" in families:
        for lam in MASK_LAMBDAS:
            out[f"tall_masks@{lam}"] = method(
                partial(tall, lambdas=lam), grid=MASK_SCALES[::stride]
            )
    return out


def tuned(res: arithmetic.AdditionResult) -> dict[str, tuple[float | None, arithmetic.MethodRow]]:
    """Per method family, the configuration with the best validation score (first on ties)."""
    best: dict[str, tuple[float | None, arithmetic.MethodRow]] = {}
    for name, row in res.rows.items():
        family, _, value = name.partition("@")
        if family in best and not row.validation > best[family][1].validation:
            continue
        best[family] = (float(value) if value else None, row)
    return best


def run_seed(
    cfg: Config, data: Mapping[str, Any], seed: int, log: Callable[[str], None]
) -> dict[str, Any]:
    t0 = time.perf_counter()
    sets = data["sets"]
    grid = arithmetic.DEFAULT_GRID[:: cfg.grid_stride]
    neg_grid = NEG_GRID[:: cfg.grid_stride]
    timing: dict[str, float] = {}

    # --- pretraining
    independent = pretrain_independent(cfg, data["pre"], seed)
    models: dict[str, dict[str, _Net]] = {
        "independent": independent,
        "joint": pretrain_joint(cfg, data["pre"], seed),
        "distilled": pretrain_distilled(cfg, data, seed, independent["cnn"], ("up",)),
        "distilled-all": pretrain_distilled(cfg, data, seed, independent["cnn"], VARIANTS),
    }
    timing["pretrain"] = time.perf_counter() - t0
    log(f"  pretrained in {timing['pretrain']:.0f}s")

    # --- the common part, found by structure
    everything = select.common(models["joint"]["cnn"], models["joint"]["vit"], by="structure")
    sel = select.common(
        models["joint"]["cnn"], models["joint"]["vit"], by="structure", targets=["block"]
    )
    route = {("cnn", "vit"): sel, ("vit", "cnn"): sel.inverse()}
    own = {"cnn": select.Selection(sel.names_a), "vit": select.Selection(sel.names_b)}

    # --- trunk features (cached: trunks are frozen from here on)
    t = time.perf_counter()
    feats: dict[str, dict[str, Any]] = {}
    for r in TRAINED:
        feats[r] = {}
        for a in ARCHS:
            if r.startswith("distilled") and a == "cnn":  # the independent CNN's trunk
                feats[r][a] = feats["independent"]["cnn"]
            else:
                feats[r][a] = features(models[r][a], sets)
        fit_parity_head(
            models[r], feats[r], sets[("mnist", "up")]["train"][1], seed, shared=r != "independent"
        )
    timing["features"] = time.perf_counter() - t

    # --- pretrained accuracy (20-way, upright test images)
    pre_acc: dict[str, dict[str, float]] = {}
    for r in TRAINED:
        pre_acc[r] = {}
        for a in ARCHS:
            correct, count = 0, 0
            for k, source in enumerate(("mnist", "fashion")):
                z, y = feats[r][a][(source, "up")]["test"], sets[(source, "up")]["test"][1]
                with torch.no_grad():
                    pred = models[r][a](z, from_features=True).argmax(1)
                correct += int((pred == y + 10 * k).sum())
                count += len(y)
            pre_acc[r][a] = correct / count

    # --- fine-tuning the block on every task
    t = time.perf_counter()
    base: dict[str, dict[str, StateDict]] = {
        r: {a: {k: v.detach().clone() for k, v in models[r][a].state_dict().items()} for a in ARCHS}
        for r in TRAINED
    }
    ft: dict[str, dict[str, dict[str, StateDict]]] = {}
    for r in TRAINED:
        ft[r] = {}
        for a in ARCHS:
            ft[r][a] = {}
            for i, (task, spec) in enumerate(TASKS.items()):
                key = (spec.source, spec.variant)
                train_data = task_data(task, feats[r][a][key]["train"], sets[key]["train"][1])
                ft[r][a][task] = finetune(models[r][a], train_data, task, cfg, seed * 100 + i)
    timing["finetune"] = time.perf_counter() - t

    # --- the aligned regime: the independent ViT rewritten in the independent CNN's coordinates
    ind = models["independent"]
    anchor_a = torch.cat(
        [feats["independent"]["cnn"][(s, "up")]["train"][:1000] for s in ("mnist", "fashion")]
    )
    anchor_b = torch.cat(
        [feats["independent"]["vit"][(s, "up")]["train"][:1000] for s in ("mnist", "fashion")]
    )
    maps = alignment(ind["cnn"], ind["vit"], anchor_a, anchor_b)
    prefix = ind["vit"].common
    models["aligned"] = {"cnn": ind["cnn"], "vit": copy.deepcopy(ind["vit"])}
    models["aligned"]["vit"].load_state_dict(
        reparametrise(base["independent"]["vit"], maps, prefix)
    )
    base["aligned"] = {
        "cnn": base["independent"]["cnn"],
        "vit": reparametrise(base["independent"]["vit"], maps, prefix),
    }
    ft["aligned"] = {
        "cnn": ft["independent"]["cnn"],
        "vit": {k: reparametrise(v, maps, prefix) for k, v in ft["independent"]["vit"].items()},
    }
    feats["aligned"] = {
        "cnn": feats["independent"]["cnn"],
        "vit": {
            key: {s: z @ maps["r_in"] for s, z in d.items()}
            for key, d in feats["independent"]["vit"].items()
        },
    }
    with torch.no_grad():  # the reparametrisation is exact: the ViT's outputs do not move
        z = feats["independent"]["vit"][("mnist", "up")]["test"]
        before = ind["vit"](z, from_features=True)
        after = models["aligned"]["vit"](z @ maps["r_in"], from_features=True)
        align_error = float((before - after).abs().max())

    # --- task vectors on the common part
    tv: dict[str, dict[str, dict[str, TaskVector]]] = {
        r: {
            a: {
                task: TaskVector.from_models(base=base[r][a], finetuned=ft[r][a][task])
                .restrict(own[a])
                .materialize()
                for task in TASKS
            }
            for a in ARCHS
        }
        for r in REGIMES
    }

    # --- how compatible are the two common parts?
    compat: dict[str, dict[str, float]] = {}
    for r in REGIMES:
        za = torch.cat([feats[r]["cnn"][(s, "up")]["test"] for s in ("mnist", "fashion")])
        zb = torch.cat([feats[r]["vit"][(s, "up")]["test"] for s in ("mnist", "fashion")])
        wa = torch.cat([base[r]["cnn"][n].flatten() for n in sel.names_a])
        wb = torch.cat([base[r]["vit"][n].flatten() for n in sel.names_b])
        cos = statistics.fmean(
            tv[r]["cnn"][task].cosine(tv[r]["vit"][task].transfer(route[("vit", "cnn")]))
            for task in MULTI
        )
        za_all = torch.cat([f["test"] for f in feats[r]["cnn"].values()])
        zb_all = torch.cat([f["test"] for f in feats[r]["vit"].values()])
        compat[r] = {
            "feature_gap": float((za - zb).norm() / za.norm()),
            "feature_gap_all": float((za_all - zb_all).norm() / za_all.norm()),
            "feature_cka": spectral.linear_cka(za, zb),
            "weight_gap": float((wa - wb).norm() / wa.norm()),
            "vector_cosine": cos,
        }

    tasks = {r: {a: make_tasks(models[r][a], feats[r][a], sets) for a in ARCHS} for r in REGIMES}

    def vectors(
        r: str, src: str, dst: str, pool: Mapping[str, TaskVector] | None = None
    ) -> dict[str, TaskVector]:
        """The vectors of ``src`` in regime ``r``, as ``dst`` names them."""
        pool = tv[r][src] if pool is None else pool
        if src == dst:
            return dict(pool)
        full = route[(src, dst)]
        out = {}
        for k, v in pool.items():
            # LoRA vectors hold the weights only: keep the pairs of the names they hold
            part = select.Selection(
                {a: full.mapping[a] for a in full if a in v},
                shapes={a: full.shape(a) or () for a in full if a in v},
            )
            out[k] = v.transfer(part)
        return out

    own_ft = {
        r: {
            a: {task: tasks[r][a][task].test(tv[r][a][task].apply_to(base[r][a])) for task in TASKS}
            for a in ARCHS
        }
        for r in REGIMES
    }
    pre_task = {
        r: {a: {task: tasks[r][a][task].test(base[r][a]) for task in TASKS} for a in ARCHS}
        for r in REGIMES
    }

    out: dict[str, Any] = {
        "seed": seed,
        "pretrain_accuracy": pre_acc,
        "compatibility": compat,
        "alignment_max_logit_change": align_error,
        "pretrained": pre_task,
        "finetuned": own_ft,
        "single": {},
        "carried": {},
        "negation": {},
        "pairs": {},
        "multitask": {},
        "analogy": {},
    }
    t = time.perf_counter()
    for r in REGIMES:
        for src, dst in DIRECTIONS:
            if r == "aligned" and src == dst:
                continue  # within one architecture, alignment changes nothing
            d = f"{src}->{dst}"
            vecs, tk, sd, ref = vectors(r, src, dst), tasks[r][dst], base[r][dst], own_ft[r][dst]
            pre = pre_task[r][dst]
            # does one vector carry its task? (scale 1, and scale chosen on validation)
            single = {}
            for task in TASKS:
                best = max(
                    grid, key=lambda c, k=task: tk[k].validate(vecs[k].apply_to(sd, scale=c))
                )
                single[task] = {
                    "scale1": tk[task].test(vecs[task].apply_to(sd)),
                    "best_scale": best,
                    "tuned": tk[task].test(vecs[task].apply_to(sd, scale=best)),
                }
            out["single"].setdefault(r, {})[d] = single
            # the fraction of the fine-tuning gain (over the seven tasks) that the vectors carry
            out["carried"].setdefault(r, {})[d] = sum(
                single[k]["scale1"] - pre[k] for k in MULTI
            ) / sum(ref[k] - pre[k] for k in MULTI)
            # (b) forgetting by negation
            for target, controls in NEGATION:
                res = arithmetic.forget(
                    sd,
                    vecs[target],
                    target=tk[target],
                    control=[tk[c] for c in controls],
                    grid=neg_grid,
                    seed=seed,
                )
                entry = res.to_dict()
                entry["curve"] = [[c, v, cs[controls[0]]] for c, v, cs in res.curve]
                entry["finetuned_own"] = ref[target]
                out["negation"].setdefault(r, {}).setdefault(d, {})[target] = entry
            # (c) learning by addition: pairs of vectors, task arithmetic and its random control
            pairs = {}
            own_vecs = tv[r][dst]
            for a_, b_ in itertools.combinations(PAIR_TASKS, 2):
                res = arithmetic.add(
                    sd,
                    {a_: vecs[a_], b_: vecs[b_]},
                    {a_: tk[a_], b_: tk[b_]},
                    methods=merge_methods(
                        ("task_arithmetic", "random"), 7919 * seed + 13, cfg.grid_stride
                    ),
                    finetuned={a_: own_vecs[a_], b_: own_vecs[b_]},
                )
                pairs[f"{a_}+{b_}"] = {
                    key: {
                        "scale": res.rows[m].scale,
                        "normalized": statistics.fmean(
                            res.rows[m].scores[k] / ref[k] for k in (a_, b_)
                        ),
                    }
                    for key, m in (("task_arithmetic", "task_arithmetic"), ("random", "random"))
                }
                pairs[f"{a_}+{b_}"]["pretrained"] = statistics.fmean(
                    pre[k] / ref[k] for k in (a_, b_)
                )
            out["pairs"].setdefault(r, {})[d] = pairs
            # (c') multi-task addition of the seven vectors, every method on the same budget
            res = arithmetic.add(
                sd,
                {k: vecs[k] for k in MULTI},
                {k: tk[k] for k in MULTI},
                methods=merge_methods(
                    (*SINGLE_METHODS, *ORACLE_METHODS, *CONTROL_METHODS), seed, cfg.grid_stride
                ),
                finetuned={k: own_vecs[k] for k in MULTI},
            )
            out["multitask"].setdefault(r, {})[d] = summarise_addition(res, ref)
            # (d) analogies
            an = {}
            for a_, b_, c_, d_ in ANALOGIES:
                res = arithmetic.analogy(
                    sd,
                    a=vecs[a_],
                    b=vecs[b_],
                    c=vecs[c_],
                    task=tk[d_],
                    reference=tv[r][dst][d_],
                    grid=grid,
                )
                entry = res.to_dict()
                entry.pop("curve")
                b_scale = max(
                    grid, key=lambda c, b=b_, t=d_: tk[t].validate(vecs[b].apply_to(sd, scale=c))
                )
                entry["scores"]["b_only"] = tk[d_].test(vecs[b_].apply_to(sd, scale=b_scale))
                entry["scales"]["b_only"] = b_scale
                an[f"{d_} = {c_} + ({b_} - {a_})"] = entry
            out["analogy"].setdefault(r, {})[d] = an
    timing["applications"] = time.perf_counter() - t
    log(f"  applications in {timing['applications']:.0f}s")

    # --- modular: low-rank units, trained LoRA modules, and routing instead of merging
    t = time.perf_counter()
    out["modular"] = {
        r: modular(
            cfg,
            r,
            models[r],
            feats[r],
            sets,
            base[r],
            tv[r],
            tasks[r],
            own_ft[r],
            partial(vectors, r),
            seed,
        )
        for r in ("joint", "distilled-all")
    }
    timing["modular"] = time.perf_counter() - t
    out["common_part"] = {
        "structure_all": dict(everything.mapping),
        "selection": dict(sel.mapping),
        "parameters": sum(math.prod(sel.shape(n) or ()) for n in sel.names_a),
    }
    out["parameters"] = {}
    for a in ARCHS:
        m = models["joint"][a]
        out["parameters"][a] = n_params(m)
        out["parameters"][f"{a}_trunk"] = (
            n_params(m) - n_params(m.block_module()) - n_params(m.heads)
        )
    timing["total"] = time.perf_counter() - t0
    out["timing"] = timing
    return out


def summarise_addition(res: arithmetic.AdditionResult, ref: Mapping[str, float]) -> dict[str, Any]:
    """Test accuracy per method (its configuration tuned on validation), normalised by the
    target architecture's own fine-tuned model."""
    rows = {}
    for name, (value, row) in tuned(res).items():
        rows[name] = {
            "scale": row.scale,
            "hyper": value,
            "validation": None if math.isnan(row.validation) else row.validation,
            "scores": dict(row.scores),
            "normalized": {k: row.scores[k] / ref[k] for k in res.tasks},
            "mean": row.mean,
            "normalized_mean": statistics.fmean(row.scores[k] / ref[k] for k in res.tasks),
        }
    return rows


def modular(
    cfg: Config,
    regime: str,
    models: Mapping[str, _Net],
    feats: Mapping[str, Any],
    sets: Mapping[Any, Any],
    base: Mapping[str, StateDict],
    tv: Mapping[str, Mapping[str, TaskVector]],
    tasks: Mapping[str, Mapping[str, arithmetic.Task]],
    own_ft: Mapping[str, Mapping[str, float]],
    vectors: Callable[..., dict[str, TaskVector]],
    seed: int,
) -> dict[str, Any]:
    """Dense task vectors against rank-r units (truncated SVD of the dense vector) and LoRA
    modules trained at rank ``cfg.lora_rank``: size, interference, one vector at a time,
    multi-task addition, top-1 routing, and transfer across the architectures."""
    pools: dict[str, dict[str, dict[str, TaskVector]]] = {
        "dense": {a: {k: tv[a][k] for k in MULTI} for a in ARCHS}
    }
    errors: dict[str, float] = {}
    for rank in cfg.ranks:
        key = f"svd_r{rank}"
        pools[key] = {}
        errs = []
        for a in ARCHS:
            pools[key][a] = {}
            for task in MULTI:
                lr = tv[a][task].low_rank(rank)
                errs += [e for n, e in lr.relative_error.items() if n in lr.factors]
                pools[key][a][task] = lr.to_task_vector().materialize()
        errors[key] = statistics.fmean(errs)
    key = f"lora_r{cfg.lora_rank}"
    pools[key] = {}
    for a in ARCHS:
        pools[key][a] = {}
        for i, task in enumerate(MULTI):
            spec = TASKS[task]
            k = (spec.source, spec.variant)
            pools[key][a][task] = finetune_lora(
                models[a],
                task_data(task, feats[a][k]["train"], sets[k]["train"][1]),
                task,
                cfg,
                seed * 100 + i,
            )
    routers = {a: fit_router(feats[a], seed) for a in ARCHS}
    router_acc = {}
    for a in ARCHS:
        zs = torch.cat([f["test"] for f in feats[a].values()])
        ys = torch.cat(
            [torch.full((len(f["test"]),), VARIANTS.index(key_[1])) for key_, f in feats[a].items()]
        )
        with torch.no_grad():
            router_acc[a] = float((routers[a](zs).argmax(1) == ys).float().mean())
    result: dict[str, Any] = {"relative_error": errors, "router_accuracy": router_acc}
    families = ("task_arithmetic", "ties", "tall_masks")
    methods = merge_methods(families, seed, cfg.grid_stride)
    for key, pool in pools.items():
        rank = None if key == "dense" else int(key.split("_r")[1])
        entry: dict[str, Any] = {
            "parameters": vector_params(pool["cnn"]["mnist"], rank),
            "cosine": statistics.fmean(mean_abs_cosine(list(pool[a].values())) for a in ARCHS),
        }
        for src, dst in DIRECTIONS:
            d = f"{src}->{dst}"
            vecs = vectors(src, dst, pool[src])
            sd, tk, ref = base[dst], tasks[dst], own_ft[dst]
            single = statistics.fmean(tk[k].test(vecs[k].apply_to(sd)) / ref[k] for k in MULTI)
            res = arithmetic.add(
                sd,
                vecs,
                {k: tk[k] for k in MULTI},
                methods=methods,
                finetuned={k: tv[dst][k] for k in MULTI},
            )
            best = tuned(res)
            routed = routed_accuracy(models[dst], sd, vecs, routers[dst], feats[dst], sets)
            entry[d] = {
                "single_normalized": single,
                **{
                    m: statistics.fmean(best[m][1].scores[k] / ref[k] for k in MULTI)
                    for m in families
                },
                "routing": statistics.fmean(routed[k] / ref[k] for k in MULTI),
            }
        result[key] = entry
    return result


# %%
# Summaries over seeds, tables and figures
# ----------------------------------------


def tree_summary(runs: Sequence[Any]) -> Any:
    """Per leaf, ``[mean, std, half-width of the 95 % t interval]`` over the seeds (the same
    nested structure for every seed; the half-width is NaN for one seed)."""
    first = runs[0]
    if isinstance(first, Mapping):
        return {k: tree_summary([r[k] for r in runs]) for k in first if not str(k).startswith("_")}
    if isinstance(first, (int, float)) and not isinstance(first, bool):
        return spread([float(r) for r in runs])
    return None


def spread(values: Sequence[float]) -> list[float]:
    """``[mean, std, half-width of the 95 % Student-t interval]`` of per-seed values."""
    s = report.summarize(list(values))
    return [s.mean, s.std, s.half_width]


def pm(cell: Sequence[float] | None, pct: bool = True, digits: int = 1) -> str:
    """A summary leaf as ``mean ± half-width`` (accuracies in %); the mean alone for one seed."""
    if cell is None:
        return "n/a"
    f = 100.0 if pct else 1.0
    if len(cell) < 3 or math.isnan(cell[2]):
        return f"{cell[0] * f:.{digits}f}"
    return f"{cell[0] * f:.{digits}f} ± {cell[2] * f:.{digits}f}"


def md(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """A Markdown pipe table (cells must not contain ``|``)."""
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines) + "\n"


def dir_label(d: str) -> str:
    src, dst = d.split("->")
    return f"{src.upper()} on {dst.upper()}" if src != dst else f"{src.upper()} (within)"


def seed_values(
    runs: Sequence[Mapping[str, Any]], get: Callable[[Mapping[str, Any]], float]
) -> str:
    return ", ".join(f"{get(run):.3g}" for run in runs)


def analogy_ratio(run: Mapping[str, Any], r: str, d: str) -> float:
    """Gain of the analogies over the pretrained model, as a fraction of the gain of the
    models fine-tuned on D (sums over the six analogies)."""
    an = run["analogy"][r][d].values()
    gain = sum(e["scores"]["analogy"] - e["scores"]["pretrained"] for e in an)
    return gain / sum(e["scores"]["reference"] - e["scores"]["pretrained"] for e in an)


def alone_normalized(run: Mapping[str, Any], r: str, d: str) -> float:
    """Each of the seven vectors applied alone at scale 1, normalised (mean over tasks)."""
    dst = d.split("->")[1]
    ref = run["finetuned"][r][dst]
    return statistics.fmean(run["single"][r][d][k]["scale1"] / ref[k] for k in MULTI)


def pairs_mean(run: Mapping[str, Any], r: str, d: str, key: str) -> float:
    return statistics.fmean(
        p[key] if key == "pretrained" else p[key]["normalized"] for p in run["pairs"][r][d].values()
    )


def pairs_worst(run: Mapping[str, Any], r: str, d: str) -> float:
    return min(p["task_arithmetic"]["normalized"] for p in run["pairs"][r][d].values())


GAP_MEASURES = (
    ("feature_gap_all", "feature gap (all variants)"),
    ("feature_gap", "feature gap (upright)"),
    ("weight_gap", "block weight gap"),
    ("feature_cka", "feature CKA"),
)


def gap_points(run: Mapping[str, Any], measure: str) -> tuple[list[float], list[float]]:
    """(compatibility measure, carried gain) over the five regimes and two directions."""
    xs, ys = [], []
    for r in REGIMES:
        for d in ("cnn->vit", "vit->cnn"):
            xs.append(float(run["compatibility"][r][measure]))
            ys.append(float(run["carried"][r][d]))
    return xs, ys


def spearman(xs: Sequence[float], ys: Sequence[float]) -> float:
    from scipy import stats

    return float(stats.spearmanr(xs, ys).statistic)


def tables(runs: Sequence[Mapping[str, Any]]) -> str:
    """The Markdown tables of the report, from the per-seed results (as saved in JSON)."""
    s = tree_summary(runs)
    n = len(runs)
    parts = [
        f"Mean ± half-width of the 95 % Student-t interval over {n} seed(s); accuracies in %.\n"
    ]

    parts.append("### Pretrained models\n")
    rows = [
        [r, pm(s["pretrain_accuracy"][r]["cnn"]), pm(s["pretrain_accuracy"][r]["vit"])]
        for r in TRAINED
    ]
    parts.append(md(["pretraining", "CNN 20-way test acc.", "ViT 20-way test acc."], rows))

    parts.append("### Compatibility of the common parts and the gain carried across\n")
    rows = []
    for r in REGIMES:
        c = s["compatibility"][r]
        rows.append(
            [
                r,
                *(pm(c[k], False, 3) for k in ("feature_gap", "feature_gap_all", "feature_cka")),
                pm(c["weight_gap"], False, 3),
                pm(c["vector_cosine"], False, 3),
                pm(s["carried"][r]["cnn->vit"]),
                pm(s["carried"][r]["vit->cnn"]),
            ]
        )
    parts.append(
        md(
            [
                "regime",
                "feature gap (upright)",
                "feature gap (all variants)",
                "feature CKA",
                "block weight gap",
                "cos(tau_CNN, tau_ViT)",
                "gain carried CNN on ViT",
                "gain carried ViT on CNN",
            ],
            rows,
        )
    )

    parts.append("### Does the carried gain follow the feature gap? Rank correlations\n")
    rows = []
    for key, label in GAP_MEASURES:
        per_seed = [spearman(*gap_points(run, key)) for run in runs]
        xs = [x for run in runs for x in gap_points(run, key)[0]]
        ys = [y for run in runs for y in gap_points(run, key)[1]]
        rows.append(
            [
                label,
                pm(spread(per_seed), False, 2),
                f"{spearman(xs, ys):.2f}",
                ", ".join(f"{v:.2f}" for v in per_seed),
            ]
        )
    parts.append(
        md(
            [
                "measure",
                "Spearman rho with the carried gain (per seed, 10 points)",
                "pooled over seeds",
                "per seed",
            ],
            rows,
        )
    )

    parts.append("### Does the carried gain follow the feature gap? Pairs of regimes\n")
    order = sorted(REGIMES, key=lambda r: s["compatibility"][r]["feature_gap_all"][0])
    rows = []
    for i, a in enumerate(order):
        for b in order[i + 1 :]:
            gap = spread(
                [
                    run["compatibility"][b]["feature_gap_all"]
                    - run["compatibility"][a]["feature_gap_all"]
                    for run in runs
                ]
            )
            cells = []
            for d in ("cnn->vit", "vit->cnn"):
                diff = spread([run["carried"][a][d] - run["carried"][b][d] for run in runs])
                if n < 2:
                    verdict = "n/a"
                elif diff[0] - diff[2] > 0:
                    verdict = "yes"
                elif diff[0] + diff[2] < 0:
                    verdict = "reversed"
                else:
                    verdict = "interval holds 0"
                cells += [pm(diff), verdict]
            rows.append([f"{a} vs {b}", pm(gap, False, 3), *cells])
    parts.append(
        md(
            [
                "smaller gap vs larger gap",
                "gap difference",
                "carried difference CNN on ViT",
                "smaller gap carries more?",
                "carried difference ViT on CNN",
                "smaller gap carries more?",
            ],
            rows,
        )
    )

    for r in REGIMES:
        parts.append(f"### One vector at a time (scale 1): {r}\n")
        rows = [
            [f"pretrained ({a.upper()})", *(pm(s["pretrained"][r][a][t]) for t in MULTI), "-"]
            for a in ARCHS
        ]
        for d, single in s["single"][r].items():
            rows.append(
                [dir_label(d), *(pm(single[t]["scale1"]) for t in MULTI), pm(s["carried"][r][d])]
            )
        parts.append(md(["vector", *MULTI, "gain carried"], rows))

    for target, controls in NEGATION:
        parts.append(f"### Forgetting by negation: {target}\n")
        rows = []
        for r in REGIMES:
            for d, e in s["negation"][r].items():
                e = e[target]
                rows.append(
                    [
                        r,
                        dir_label(d),
                        pm(e["scale"], False, 2),
                        pm(e["target"]["pretrained"]),
                        pm(e["target"]["edited"]),
                        pm(e["random"][target]["edited"]),
                        pm(e["random_scale"], False, 2),
                        pm(e["control"][controls[0]]["pretrained"]),
                        pm(e["control"][controls[0]]["edited"]),
                    ]
                )
        parts.append(
            md(
                [
                    "regime",
                    "direction",
                    "scale",
                    f"{target}: pretrained",
                    "negated vector",
                    "negated random vector",
                    "random scale",
                    f"{controls[0]} (control): pretrained",
                    "after the negated vector",
                ],
                rows,
            )
        )

    parts.append("### Learning by addition: pairs of vectors\n")
    rows = []
    for r in REGIMES:
        for d in s["pairs"][r]:
            rows.append(
                [
                    r,
                    dir_label(d),
                    pm(spread([pairs_mean(run, r, d, "pretrained") for run in runs])),
                    pm(spread([pairs_mean(run, r, d, "task_arithmetic") for run in runs])),
                    pm(spread([pairs_worst(run, r, d) for run in runs])),
                    pm(spread([pairs_mean(run, r, d, "random") for run in runs])),
                ]
            )
    parts.append(
        md(
            [
                "regime",
                "direction",
                "pretrained",
                "task arithmetic (mean of 10 pairs)",
                "worst pair",
                "random vectors, same norms (control)",
            ],
            rows,
        )
    )

    parts.append("### Multi-task addition: single merged models\n")
    rows = []
    for r in REGIMES:
        for d, res in s["multitask"][r].items():
            rows.append(
                [
                    r,
                    dir_label(d),
                    *(
                        pm(res[m]["normalized_mean"])
                        for m in ("pretrained", *SINGLE_METHODS, *CONTROL_METHODS)
                    ),
                ]
            )
    parts.append(
        md(
            [
                "regime",
                "direction",
                "pretrained",
                "weight averaging",
                "task arithmetic",
                "TIES",
                "Consensus",
                "random vectors (control)",
            ],
            rows,
        )
    )

    parts.append("### Multi-task addition: oracles that use the task identity\n")
    rows = []
    for r in REGIMES:
        for d, res in s["multitask"][r].items():
            rows.append(
                [
                    r,
                    dir_label(d),
                    pm(spread([alone_normalized(run, r, d) for run in runs])),
                    pm(res["tall_masks"]["normalized_mean"]),
                ]
            )
    parts.append(
        md(["regime", "direction", "each vector alone (oracle)", "TALL masks (oracle)"], rows)
    )

    parts.append("### Multi-task addition: configurations chosen on validation, per seed\n")
    rows = []
    for r in REGIMES:
        for d in s["multitask"][r]:

            def chosen(m: str, key: str, r: str = r, d: str = d) -> str:
                return ", ".join(
                    "-"
                    if run["multitask"][r][d][m][key] is None
                    else f"{run['multitask'][r][d][m][key]:g}"
                    for run in runs
                )

            rows.append(
                [
                    r,
                    dir_label(d),
                    chosen("task_arithmetic", "scale"),
                    chosen("ties", "hyper"),
                    chosen("ties", "scale"),
                    chosen("consensus", "hyper"),
                    chosen("tall_masks", "hyper"),
                    chosen("random", "scale"),
                ]
            )
    parts.append(
        md(
            [
                "regime",
                "direction",
                "task arithmetic: scale",
                "TIES: density",
                "TIES: scale",
                "Consensus: lambda",
                "TALL: lambda",
                "random: scale",
            ],
            rows,
        )
    )

    for r, d in (("joint", "cnn->cnn"), ("joint", "vit->vit"), ("distilled-all", "cnn->vit")):
        parts.append(f"### Multi-task addition per task: {r}, {dir_label(d)}\n")
        res = s["multitask"][r][d]
        labels = {
            "pretrained": "pretrained",
            "finetuned": "fine-tuned, own architecture (reference)",
            "average": "weight averaging",
            "task_arithmetic": "task arithmetic",
            "ties": "TIES",
            "consensus": "Consensus",
            "random": "random vectors (control)",
            "tall_masks": "TALL masks (oracle)",
        }
        rows = [[labels[m], *(pm(res[m]["scores"][t]) for t in MULTI)] for m in labels]
        parts.append(md(["model", *MULTI], rows))

    parts.append("### Task analogies: the gain on D reached, summed over the six analogies\n")
    rows = []
    for r in REGIMES:
        for d in s["analogy"][r]:
            rows.append([r, dir_label(d), pm(spread([analogy_ratio(run, r, d) for run in runs]))])
    parts.append(md(["regime", "direction", "fraction of the fine-tuning gain on D"], rows))

    parts.append("### Task analogies: test accuracy on D, never trained on\n")
    names = list(s["analogy"]["joint"]["cnn->cnn"])
    keys = ["pretrained", "c_only", "b_only", "analogy", "reference"]
    rows = []
    for r in REGIMES:
        for d, an in s["analogy"][r].items():
            for name in names:
                rows.append(
                    [
                        r,
                        dir_label(d),
                        name,
                        *(pm(an[name]["scores"][k]) for k in keys),
                        pm(an[name]["scales"]["analogy"], False, 2),
                    ]
                )
    parts.append(
        md(
            [
                "regime",
                "direction",
                "D = C + (B - A)",
                "pretrained",
                "C alone",
                "B alone",
                "analogy",
                "fine-tuned on D",
                "analogy scale",
            ],
            rows,
        )
    )

    for r in ("joint", "distilled-all"):
        m = s["modular"][r]
        keys_ = [k for k in m if k not in ("relative_error", "router_accuracy")]
        for title, cols, labels_ in (
            (
                "single merged models",
                ("task_arithmetic", "ties"),
                ["task arithmetic", "TIES"],
            ),
            (
                "oracles that use the task identity",
                ("single_normalized", "tall_masks", "routing"),
                ["each module alone (oracle)", "TALL masks (oracle)", "top-1 routing (oracle)"],
            ),
        ):
            parts.append(f"### Modular, {r}: {title}\n")
            rows = []
            for key in keys_:
                e = m[key]
                for d in ("cnn->cnn", "vit->vit", "cnn->vit", "vit->cnn"):
                    rows.append(
                        [
                            key,
                            dir_label(d),
                            f"{e['parameters'][0]:.0f}",
                            pm(e["cosine"], False, 3),
                            *(pm(e[d][k]) for k in cols),
                        ]
                    )
            parts.append(
                md(
                    [
                        "module",
                        "direction",
                        "parameters / module",
                        "mean abs. cosine",
                        *labels_,
                    ],
                    rows,
                )
            )
    parts.append("### Modular: truncation error and router accuracy\n")
    rows = []
    for r in ("joint", "distilled-all"):
        m = s["modular"][r]
        rows.append(
            [
                r,
                *(pm(m["relative_error"][k], False, 3) for k in m["relative_error"]),
                *(pm(m["router_accuracy"][a]) for a in ARCHS),
            ]
        )
    err_keys = list(s["modular"]["joint"]["relative_error"])
    parts.append(
        md(
            [
                "regime",
                *(f"relative error {k}" for k in err_keys),
                "router accuracy CNN",
                "router accuracy ViT",
            ],
            rows,
        )
    )

    parts.append("### Appendix: per-seed values\n")
    rows = []
    for r in REGIMES:
        for d in s["negation"][r]:
            rows.append(
                [
                    f"negation, {r}, {dir_label(d)}: MNIST after the negated vector",
                    seed_values(
                        runs,
                        lambda run, r=r, d=d: run["negation"][r][d]["mnist"]["target"]["edited"],
                    ),
                ]
            )
    for r in REGIMES:
        for d in ("cnn->vit", "vit->cnn"):
            rows.append(
                [
                    f"gain carried, {r}, {dir_label(d)}",
                    seed_values(runs, lambda run, r=r, d=d: run["carried"][r][d]),
                ]
            )
    for r in REGIMES:
        for d in s["pairs"][r]:
            rows.append(
                [
                    f"pairs, {r}, {dir_label(d)}: task arithmetic / random",
                    seed_values(
                        runs, lambda run, r=r, d=d: pairs_mean(run, r, d, "task_arithmetic")
                    )
                    + " / "
                    + seed_values(runs, lambda run, r=r, d=d: pairs_mean(run, r, d, "random")),
                ]
            )
    for r in REGIMES:
        for d in s["multitask"][r]:
            for meth in ("task_arithmetic", "ties", "random", "tall_masks"):
                rows.append(
                    [
                        f"multi-task, {r}, {dir_label(d)}: {meth}",
                        seed_values(
                            runs,
                            lambda run, r=r, d=d, meth=meth: run["multitask"][r][d][meth][
                                "normalized_mean"
                            ],
                        ),
                    ]
                )
    for r in REGIMES:
        for d in s["analogy"][r]:
            rows.append(
                [
                    f"analogies, {r}, {dir_label(d)}: fraction of the gain",
                    seed_values(runs, lambda run, r=r, d=d: analogy_ratio(run, r, d)),
                ]
            )
    parts.append(
        md(["quantity (fractions)", "seeds " + ", ".join(str(run["seed"]) for run in runs)], rows)
    )
    return "\n".join(parts)


def figures(summary: Mapping[str, Any], runs: Sequence[Mapping[str, Any]], out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    s = summary
    dirs = ["cnn->cnn", "vit->vit", "cnn->vit", "vit->cnn"]
    colours = {
        "cnn->cnn": "#4c72b0",
        "vit->vit": "#55a868",
        "cnn->vit": "#dd8452",
        "vit->cnn": "#c44e52",
    }

    # 1. the four applications, within vs across architectures, per regime
    fig, axes = plt.subplots(1, 4, figsize=(18, 4.4))
    panels: list[tuple[str, Callable[[str, str], Sequence[float]], tuple[float, float]]] = [
        (
            "negation: MNIST test acc. after forgetting\n(lower is better; Fashion kept >= 95 %)",
            lambda r, d: s["negation"][r][d]["mnist"]["target"]["edited"],
            (0, 1),
        ),
        (
            "addition: pairs of vectors\nnormalised acc. (task arithmetic)",
            lambda r, d: spread([pairs_mean(run, r, d, "task_arithmetic") for run in runs]),
            (0, 1.05),
        ),
        (
            "multi-task: 7 vectors added\nnormalised acc. (task arithmetic)",
            lambda r, d: s["multitask"][r][d]["task_arithmetic"]["normalized_mean"],
            (0, 1.05),
        ),
        (
            "analogies: fraction of the fine-tuning gain\non D reached by C + (B - A), 6 analogies",
            lambda r, d: spread([analogy_ratio(run, r, d) for run in runs]),
            (-0.1, 1.0),
        ),
    ]
    width = 0.2
    for ax, (title, get, ylim) in zip(axes, panels, strict=True):
        for j, d in enumerate(dirs):
            xs, ms, ss = [], [], []
            for i, r in enumerate(REGIMES):
                if d in s["negation"][r]:
                    v = get(r, d)
                    xs.append(i + (j - 1.5) * width)
                    ms.append(v[0])
                    ss.append(0.0 if math.isnan(v[2]) else v[2])
            ax.bar(xs, ms, width, yerr=ss, color=colours[d], label=dir_label(d), capsize=2)
        ax.set_xticks(range(len(REGIMES)), REGIMES, rotation=20, fontsize=8)
        ax.set_title(title, fontsize=9)
        ax.set_ylim(*ylim)
        ax.axhline(0, color="black", lw=0.5)
    axes[1].legend(fontsize=8, loc="upper right")
    fig.tight_layout()
    fig.savefig(out / "applications.png", dpi=110)
    plt.close(fig)

    # 2. negation curves (joint and distilled): target and control vs scale
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.2))
    for ax, r in zip(axes, ("joint", "distilled-all"), strict=True):
        for d in dirs:
            curves = np.array([run["negation"][r][d]["mnist"]["curve"] for run in runs])
            mean = curves.mean(0)
            ax.plot(mean[:, 0], mean[:, 1], "-", color=colours[d], label=f"{dir_label(d)}: MNIST")
            ax.plot(
                mean[:, 0],
                mean[:, 2],
                "--",
                color=colours[d],
                label=f"{dir_label(d)}: Fashion (control)",
            )
        ax.set_xlabel("scale of the negated vector")
        ax.set_ylabel("validation accuracy")
        ax.set_title(f"{r} regime: forget MNIST (solid), keep Fashion (dashed)", fontsize=9)
    axes[0].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(out / "negation_curves.png", dpi=110)
    plt.close(fig)

    # 3. why transfer works or not: feature gap vs the gain that a transferred vector carries
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.2))
    markers = {
        "independent": "o",
        "aligned": "s",
        "joint": "^",
        "distilled": "D",
        "distilled-all": "*",
    }
    for run in runs:
        for r in REGIMES:
            for d in ("cnn->vit", "vit->cnn"):
                c = run["compatibility"][r]
                axes[0].scatter(
                    c["feature_gap_all"],
                    run["carried"][r][d],
                    marker=markers[r],
                    color=colours[d],
                    s=60,
                )
                axes[1].scatter(
                    c["vector_cosine"],
                    run["multitask"][r][d]["task_arithmetic"]["normalized_mean"],
                    marker=markers[r],
                    color=colours[d],
                    s=60,
                )
    for r, mk in markers.items():
        axes[0].scatter([], [], marker=mk, color="grey", label=r)
    for d in ("cnn->vit", "vit->cnn"):
        axes[0].scatter([], [], marker="s", color=colours[d], label=dir_label(d))
    axes[0].legend(fontsize=8)
    axes[0].set_xlabel(
        "feature gap ||z_CNN - z_ViT|| / ||z_CNN|| at the block's input\n"
        "(test images of all six image sets)"
    )
    axes[0].set_ylabel("fraction of the fine-tuning gain\ncarried by transferred vectors")
    axes[1].set_xlabel("cosine between the CNN's and the ViT's vectors of a task")
    axes[1].set_ylabel("cross-architecture multi-task\nnormalised accuracy (TA)")
    fig.tight_layout()
    fig.savefig(out / "transfer_vs_compatibility.png", dpi=110)
    plt.close(fig)

    # 4. modular: normalised accuracy vs parameters per module, merged or routed
    fig, axes = plt.subplots(1, 3, figsize=(17, 4.2))
    for ax, r, metric, title in (
        (axes[0], "distilled-all", "single_normalized", "distilled-all: each module alone"),
        (axes[1], "distilled-all", "task_arithmetic", "distilled-all: 7 modules added (TA)"),
        (axes[2], "distilled-all", "routing", "distilled-all: 7 modules, top-1 routing"),
    ):
        m = s["modular"][r]
        keys = [k for k in m if k not in ("relative_error", "router_accuracy")]
        for d in dirs:
            pts = sorted(
                (m[k]["parameters"][0], m[k][d][metric][0])
                for k in keys
                if not k.startswith("lora")
            )
            ax.plot(
                [p[0] for p in pts], [p[1] for p in pts], "o-", color=colours[d], label=dir_label(d)
            )
            for k in keys:
                if k.startswith("lora"):
                    ax.scatter(
                        m[k]["parameters"][0],
                        m[k][d][metric][0],
                        marker="*",
                        s=150,
                        color=colours[d],
                        edgecolor="black",
                    )
        ax.set_xscale("log")
        ax.set_ylim(0.3, 1.05)
        ax.set_xlabel("parameters per task module (log; stars: trained LoRA)")
        ax.set_ylabel("normalised accuracy")
        ax.set_title(title, fontsize=9)
    axes[0].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out / "modular.png", dpi=110)
    plt.close(fig)


def rounded(obj: Any, digits: int = 5) -> Any:
    """The same nested data with floats rounded (results.json stays small)."""
    if isinstance(obj, float):
        return round(obj, digits)
    if isinstance(obj, Mapping):
        return {str(k): rounded(v, digits) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [rounded(v, digits) for v in obj]
    return obj


def write_tables(runs: Sequence[Mapping[str, Any]], out: Path) -> None:
    """``tables.md`` and its reStructuredText form ``tables.rst`` (included by the report)."""
    text = tables(runs)
    (out / "tables.md").write_text(text, encoding="utf-8")
    (out / "tables.rst").write_text(markdown_to_rst(text), encoding="utf-8")


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=(__doc__ or "").strip().split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="tiny run, under a minute")
    parser.add_argument("--seeds", type=int, default=None, help="number of seeds (0, 1, ...)")
    parser.add_argument("--out", type=Path, default=None, help="results folder")
    parser.add_argument("--replot", action="store_true", help="redraw figures from results.json")
    parser.add_argument(
        "--seed",
        type=int,
        default=None,
        help="run this seed only, into seed_N.json (see --combine)",
    )
    parser.add_argument(
        "--combine", action="store_true", help="combine the seed_N.json files of --out"
    )
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    cfg = QUICK if args.quick else FULL
    if args.seeds is not None:
        cfg = replace(cfg, seeds=tuple(range(args.seeds)))
    out = args.out or cfg.out
    out.mkdir(parents=True, exist_ok=True)
    if args.replot:
        saved: dict[str, Any] = json.loads((out / "results.json").read_text())
        write_tables(saved["runs"], out)
        figures(saved["summary"], saved["runs"], out)
        return saved
    start = time.perf_counter()

    def log(msg: str) -> None:
        print(f"[{time.perf_counter() - start:6.1f}s] {msg}", flush=True)

    if args.combine:  # seeds run in separate processes (--seed N), one file each
        files = sorted(out.glob("seed_*.json"), key=lambda p: int(p.stem.split("_")[1]))
        runs = [json.loads(f.read_text()) for f in files]
    else:
        data = load_data(cfg)
        log("data loaded")
        runs = []
        for seed in cfg.seeds if args.seed is None else (args.seed,):
            log(f"seed {seed}")
            runs.append(run_seed(cfg, data, seed, log))
    if args.seed is not None:
        runs[0]["seconds"] = time.perf_counter() - start
        runs[0]["load_average"] = [round(v, 2) for v in os.getloadavg()]
        (out / f"seed_{args.seed}.json").write_text(json.dumps(rounded(runs[0])))
        log(f"seed {args.seed} written to {out}")
        return runs[0]
    results = {
        "mode": "quick" if args.quick else "full",
        "config": {
            k: (
                str(v.relative_to(HERE))
                if isinstance(v, Path) and v.is_relative_to(HERE)
                else str(v)
                if isinstance(v, Path)
                else v
            )
            for k, v in asdict(cfg).items()
        },
        "tuning": {
            "task_arithmetic": {"scale": TA_GRID},
            "ties": {"density": TIES_DENSITIES, "scale": TIES_SCALES},
            "consensus": {"lambda": MASK_LAMBDAS, "scale": MASK_SCALES, "k": 2},
            "tall_masks": {"lambda": MASK_LAMBDAS, "scale": MASK_SCALES},
            "average": {"scale": (1.0,)},
            "random": {"scale": TA_GRID},
            "grid_stride": cfg.grid_stride,
        },
        "common_part": runs[0]["common_part"],
        "summary": tree_summary(runs),
        "runs": runs,
        "seconds": (
            sum(r.get("seconds", 0.0) for r in runs)
            if args.combine
            else time.perf_counter() - start
        ),
        "seconds_note": "sum over the seed processes" if args.combine else "one process",
        "load_average": [round(v, 2) for v in os.getloadavg()],
    }
    (out / "results.json").write_text(json.dumps(rounded(results), separators=(",", ":")))
    saved = json.loads((out / "results.json").read_text())  # tables from the saved numbers
    write_tables(saved["runs"], out)
    figures(saved["summary"], saved["runs"], out)
    log(f"done, results in {out}")
    return results


if __name__ == "__main__":
    main()
