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
    seeds=(0, 1, 2),
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
    objects: dict[str, Any] = {"multitask": {}}
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
            # (c) learning by addition: pairs of vectors, task arithmetic
            pairs = {}
            for a_, b_ in itertools.combinations(PAIR_TASKS, 2):
                res = arithmetic.add(
                    sd,
                    {a_: vecs[a_], b_: vecs[b_]},
                    {a_: tk[a_], b_: tk[b_]},
                    methods={"task_arithmetic": arithmetic.Method(merge.task_arithmetic)},
                    grid=grid,
                )
                row = res.rows["task_arithmetic"]
                pairs[f"{a_}+{b_}"] = {
                    "scale": row.scale,
                    "normalized": statistics.fmean(row.scores[k] / ref[k] for k in (a_, b_)),
                }
            out["pairs"].setdefault(r, {})[d] = pairs
            # (c') multi-task addition of the seven vectors, every method
            res = arithmetic.add(
                sd, {k: vecs[k] for k in MULTI}, {k: tk[k] for k in MULTI}, grid=grid
            )
            out["multitask"].setdefault(r, {})[d] = summarise_addition(res, ref)
            objects["multitask"].setdefault(r, {})[d] = res
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
            grid,
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
    out["_objects"] = objects
    return out


def summarise_addition(res: arithmetic.AdditionResult, ref: Mapping[str, float]) -> dict[str, Any]:
    """Test accuracy per method, normalised by the target architecture's own fine-tuned model
    (the library's ``normalized`` divides by the vectors' own models, which across
    architectures are the transferred vectors)."""
    rows = {}
    for name, row in res.rows.items():
        rows[name] = {
            "scale": row.scale,
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
    grid: Sequence[float],
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
    methods = {
        "task_arithmetic": arithmetic.Method(merge.task_arithmetic),
        "ties": arithmetic.default_methods()["ties"],
        "tall_masks": arithmetic.default_methods()["tall_masks"],
    }
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
            res = arithmetic.add(sd, vecs, {k: tk[k] for k in MULTI}, methods=methods, grid=grid)
            routed = routed_accuracy(models[dst], sd, vecs, routers[dst], feats[dst], sets)
            entry[d] = {
                "single_normalized": single,
                **{
                    m: statistics.fmean(res.rows[m].scores[k] / ref[k] for k in MULTI)
                    for m in methods
                },
                "routing": statistics.fmean(routed[k] / ref[k] for k in MULTI),
            }
        result[key] = entry
    return result


# %%
# Summaries over seeds, tables and figures
# ----------------------------------------


def tree_summary(runs: Sequence[Any]) -> Any:
    """Per leaf, ``[mean, std]`` over the seeds (the same nested structure for every seed)."""
    first = runs[0]
    if isinstance(first, Mapping):
        return {k: tree_summary([r[k] for r in runs]) for k in first if not str(k).startswith("_")}
    if isinstance(first, (int, float)) and not isinstance(first, bool):
        s = report.summarize([float(r) for r in runs])
        return [s.mean, s.std]
    return None


def pm(cell: Sequence[float] | None, pct: bool = True, digits: int = 1) -> str:
    """A ``[mean, std]`` leaf of the summary as ``mean ± std`` (accuracies in %)."""
    if cell is None:
        return "n/a"
    summary = report.Summary(cell[0], cell[1], n=0).scaled(100.0 if pct else 1.0)
    return format(summary, f".{digits}f")


md = report.markdown_table


def dir_label(d: str) -> str:
    src, dst = d.split("->")
    return f"{src.upper()} on {dst.upper()}" if src != dst else f"{src.upper()} (within)"


def tables(summary: Mapping[str, Any], runs: Sequence[Mapping[str, Any]]) -> str:
    s = summary
    parts = ["# Heterogeneous task vectors: tables (mean ± std over seeds, accuracies in %)\n"]

    parts.append("### Models and the common part\n")
    rows = [
        [r, pm(s["pretrain_accuracy"][r]["cnn"]), pm(s["pretrain_accuracy"][r]["vit"])]
        for r in TRAINED
    ]
    parts.append(md(["pretraining", "CNN 20-way test acc.", "ViT 20-way test acc."], rows))
    rows = []
    for r in REGIMES:
        c = s["compatibility"][r]
        rows.append(
            [
                r,
                pm(c["feature_gap"], False, 3),
                pm(c["feature_gap_all"], False, 3),
                pm(c["feature_cka"], False, 3),
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

    parts.append("### One vector at a time: test accuracy of base + tau (scale 1)\n")
    for r in REGIMES:
        rows = [
            [f"pretrained ({a.upper()})", *(pm(s["pretrained"][r][a][t]) for t in MULTI), ""]
            for a in ARCHS
        ]
        for d, single in s["single"][r].items():
            rows.append(
                [dir_label(d), *(pm(single[t]["scale1"]) for t in MULTI), pm(s["carried"][r][d])]
            )
        parts.append(f"#### regime: {r}\n")
        parts.append(md(["vector", *MULTI, "gain carried"], rows))

    parts.append("### Forgetting by negation (scale: largest drop with the control >= 95 %)\n")
    for target, controls in NEGATION:
        header = [
            "regime",
            "direction",
            "scale",
            f"{target}: pretrained",
            "negated",
            "negated random",
            f"{controls[0]} (control): pretrained",
            "negated",
            "random scale",
        ]
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
                        pm(e["control"][controls[0]]["pretrained"]),
                        pm(e["control"][controls[0]]["edited"]),
                        pm(e["random_scale"], False, 2),
                    ]
                )
        parts.append(md(header, rows))

    parts.append("### Learning by addition: pairs of vectors (task arithmetic), normalised acc.\n")
    pair_names = list(s["pairs"]["joint"]["cnn->cnn"])
    rows = []
    for r in REGIMES:
        for d, pairs in s["pairs"][r].items():
            means = [
                statistics.fmean(run["pairs"][r][d][p]["normalized"] for p in pair_names)
                for run in runs
            ]
            rows.append(
                [
                    r,
                    dir_label(d),
                    *(pm(pairs[p]["normalized"]) for p in pair_names),
                    pm(spread(means)),
                ]
            )
    parts.append(md(["regime", "direction", *pair_names, "mean"], rows))

    parts.append(
        "### Multi-task addition of the 7 vectors: normalised accuracy (mean over tasks)\n"
    )
    methods = list(s["multitask"]["joint"]["cnn->cnn"])
    rows = []
    for r in REGIMES:
        for d, res in s["multitask"][r].items():
            rows.append([r, dir_label(d), *(pm(res[m]["normalized_mean"]) for m in methods)])
    parts.append(
        md(
            [
                "regime",
                "direction",
                *("each vector alone" if m == "finetuned" else m for m in methods),
            ],
            rows,
        )
    )
    for r, d in (("joint", "cnn->cnn"), ("joint", "vit->vit"), ("distilled-all", "cnn->vit")):
        objs = [run["_objects"]["multitask"][r][d] for run in runs]
        parts.append(f"#### {r} regime, {dir_label(d)}: test accuracy per task (fraction)\n")
        parts.append(arithmetic.table(objs, spec=".3f"))

    parts.append("### Task analogies: test accuracy on D, never trained on\n")
    names = list(s["analogy"]["joint"]["cnn->cnn"])
    keys = ["pretrained", "c_only", "b_only", "analogy", "reference"]
    rows = []
    for r in REGIMES:
        for d, an in s["analogy"][r].items():
            for n in names:
                rows.append(
                    [
                        r,
                        dir_label(d),
                        n,
                        *(pm(an[n]["scores"][k]) for k in keys),
                        pm(an[n]["scales"]["analogy"], False, 2),
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

    parts.append("### Modular: task modules as low-rank units, merged or routed\n")
    for r in ("joint", "distilled-all"):
        m = s["modular"][r]
        rows = []
        for key, e in m.items():
            if key in ("relative_error", "router_accuracy"):
                continue
            for d in ("cnn->cnn", "vit->vit", "cnn->vit", "vit->cnn"):
                rows.append(
                    [
                        key,
                        dir_label(d),
                        f"{e['parameters'][0]:.0f}",
                        pm(e["cosine"], False, 3),
                        *(
                            pm(e[d][k])
                            for k in (
                                "single_normalized",
                                "task_arithmetic",
                                "ties",
                                "tall_masks",
                                "routing",
                            )
                        ),
                    ]
                )
        parts.append(f"#### regime: {r} (normalised accuracy over the 7 tasks)\n")
        parts.append(
            md(
                [
                    "module",
                    "direction",
                    "parameters / module",
                    "mean |cos|",
                    "each alone",
                    "task arithmetic",
                    "TIES",
                    "TALL masks",
                    "top-1 routing",
                ],
                rows,
            )
        )
        errs = ", ".join(f"{k}: {pm(v, False, 3)}" for k, v in m["relative_error"].items())
        routers = ", ".join(f"{a.upper()}: {pm(v)}" for a, v in m["router_accuracy"].items())
        parts.append(
            f"Relative Frobenius error of the truncated SVD per matrix: {errs}. "
            f"Router accuracy (variant of a test image): {routers}.\n"
        )
    return "\n".join(parts)


def spread(values: Sequence[float]) -> list[float]:
    s = report.summarize(list(values))
    return [s.mean, s.std]


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

    def analogy_ratio(run: Mapping[str, Any], r: str, d: str) -> float:
        """Gain of the analogies over the pretrained model, as a fraction of the gain of the
        models fine-tuned on D (sums over the six analogies)."""
        an = run["analogy"][r][d].values()
        gain = sum(e["scores"]["analogy"] - e["scores"]["pretrained"] for e in an)
        return gain / sum(e["scores"]["reference"] - e["scores"]["pretrained"] for e in an)

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
            lambda r, d: spread(
                [
                    statistics.fmean(v["normalized"] for v in run["pairs"][r][d].values())
                    for run in runs
                ]
            ),
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
                    ss.append(v[1])
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


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=(__doc__ or "").strip().split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="tiny run, under a minute")
    parser.add_argument("--seeds", type=int, default=None, help="number of seeds (0, 1, ...)")
    parser.add_argument("--out", type=Path, default=None, help="results folder")
    parser.add_argument("--replot", action="store_true", help="redraw figures from results.json")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    cfg = QUICK if args.quick else FULL
    if args.seeds is not None:
        cfg = replace(cfg, seeds=tuple(range(args.seeds)))
    out = args.out or cfg.out
    out.mkdir(parents=True, exist_ok=True)
    if args.replot:
        saved: dict[str, Any] = json.loads((out / "results.json").read_text())
        figures(saved["summary"], saved["runs"], out)
        return saved
    start = time.perf_counter()

    def log(msg: str) -> None:
        print(f"[{time.perf_counter() - start:6.1f}s] {msg}", flush=True)

    data = load_data(cfg)
    log("data loaded")
    runs = []
    for seed in cfg.seeds:
        log(f"seed {seed}")
        runs.append(run_seed(cfg, data, seed, log))
    summary = tree_summary(runs)
    results = {
        "mode": "quick" if args.quick else "full",
        "config": {k: (str(v) if isinstance(v, Path) else v) for k, v in asdict(cfg).items()},
        "common_part": runs[0]["common_part"],
        "summary": summary,
        "runs": [{k: v for k, v in run.items() if not k.startswith("_")} for run in runs],
        "seconds": time.perf_counter() - start,
    }
    (out / "results.json").write_text(json.dumps(rounded(results), separators=(",", ":")))
    (out / "tables.md").write_text(tables(summary, runs))
    figures(summary, runs, out)
    log(f"done, results in {out}")
    return results


if __name__ == "__main__":
    main()
