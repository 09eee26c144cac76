"""
Task vectors on molecular graphs
================================

The three uses of task vectors of Ilharco et al. ("Editing Models with Task Arithmetic",
ICLR 2023, arXiv 2212.04089) -- forgetting by negation, learning by addition and task
analogies -- carried over from CLIP to a graph neural network on real molecules.

A GIN with bond features (GINE) is pretrained on NCI molecules to recover masked atoms and
three rdkit descriptors. Each property task gets a linear head fitted once on the pretrained
model's embeddings (the stand-in for CLIP's zero-shot head) and kept frozen; fine-tuning
moves the shared trunk only, so every task vector lives on the trunk and any edited trunk
can be scored on every task with that task's own head. Tasks are regressions scored by
R^2 on held-out molecules: computed descriptors on NCI (TPSA, logP, H-bond donors, ring
count) and measured pIC50 on a ChEMBL assay. The fine-tuning learning rate of every
objective is chosen from the same small grid on the validation split of a separate tuning
seed. Then, through :mod:`weightspace.arithmetic`:

* negation of each task's vector, with the pretraining objectives as control tasks and a
  random vector of the same norms as baseline;
* addition of the five vectors (and of the four NCI ones) with weight averaging, task
  arithmetic, TIES and Consensus (TALL masks, which need the task's identity, as an oracle),
  every method with the same budget of validation configurations; the five once more with
  each task's predictions re-centred on the merged model's own validation predictions (no
  label, no test molecule); and every pair of vectors, to see which properties interfere;
* analogies across the two molecule collections: "A on NCI is to A on ChEMBL as B on NCI is
  to B on ChEMBL", with A the label-free masked-atom objective or another property.

Run ``python graph_task_vectors.py`` for the full study (all molecules, five seeds and a
tuning seed; writes ``results/``) or ``python graph_task_vectors.py --quick`` for
a smoke run of a few hundred molecules and one seed (it writes ``results/quick/``).
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import itertools
import json
import math
import os
import time
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

import weightspace as ws
from weightspace import TaskVector, arithmetic, merge, report, select, train

with warnings.catch_warnings():  # torch_geometric's import warns about torch.jit.script
    warnings.simplefilter("ignore")
    from torch_geometric.nn import GINEConv, global_add_pool, global_mean_pool

HERE = Path(__file__).resolve().parent

#: Property -> the column that holds it in each molecule collection. TPSA is computed by
#: Ertl's reference program on NCI and by rdkit (the same method) on ChEMBL; logP, H-bond
#: donors and rings are computed by rdkit; only pIC50 is measured.
COLUMNS: dict[str, dict[str, str]] = {
    "tpsa": {"nci": "tpsa", "chembl": "tpsa_rdkit"},
    "logp": {"nci": "logp", "chembl": "logp"},
    "hbd": {"nci": "hbd", "chembl": "hbd"},
    "rings": {"nci": "rings", "chembl": "rings"},
    "pic50": {"chembl": "pic50"},
}
#: Where each property's head is fitted (its "home" collection).
HOME = {"tpsa": "nci", "logp": "nci", "hbd": "nci", "rings": "nci", "pic50": "chembl"}
#: Graph-level descriptors regressed during pretraining (never fine-tuning tasks).
PRETRAIN_DESCRIPTORS = ("mol_weight", "rotatable_bonds", "fraction_csp3")
#: The five fine-tuning tasks of the negation and addition studies.
TASKS = ("tpsa@nci", "logp@nci", "hbd@nci", "rings@nci", "pic50@chembl")
NCI_TASKS = TASKS[:4]
#: Analogies "A@nci : A@chembl :: C@nci : C@chembl" (target D = C@chembl).
ANALOGIES = (
    ("mask", "tpsa"),
    ("logp", "tpsa"),
    ("mask", "logp"),
    ("tpsa", "logp"),
)
LABELS = {
    "tpsa@nci": "TPSA (NCI)",
    "logp@nci": "logP (NCI)",
    "hbd@nci": "H-donors (NCI)",
    "rings@nci": "rings (NCI)",
    "pic50@chembl": "pIC50 (ChEMBL)",
    "tpsa@chembl": "TPSA (ChEMBL)",
    "logp@chembl": "logP (ChEMBL)",
    "hbd@chembl": "H-donors (ChEMBL)",
    "rings@chembl": "rings (ChEMBL)",
    "mask@nci": "masked atoms (NCI)",
    "mask@chembl": "masked atoms (ChEMBL)",
    "descriptors@nci": "descriptors (NCI)",
}
#: The trunk shared by all tasks; task vectors live here, heads are per task and frozen.
TRUNK = ["encoder", "convs", "readout"]
N_ELEMENTS = 15  # the element one-hot block of weightspace.data.molecules' atom features
MASK_RATE = 0.15

# Tuning protocol of the merges: every method with a hyperparameter gets the same budget of
# 10 configurations, each scored on validation data only (mean normalised validation score);
# weight averaging has none (1 configuration). TALL masks keep one model per task and need
# the task's identity at test time: an oracle, reported apart.
TA_SCALES = tuple(round(0.1 * i, 1) for i in range(1, 11))
TIES_DENSITIES = (0.2, 0.5)  # x 5 scales (TIES merges a mean, not a sum)
TIES_SCALES = (0.5, 1.0, 1.5, 2.0, 3.0)
MASK_LAMBDAS = (0.2, 0.5)  # TALL / Consensus mask thresholds, x 5 scales
MASK_SCALES = (0.2, 0.4, 0.6, 0.8, 1.0)
SINGLE_METHODS = ("average", "task_arithmetic", "ties", "consensus")
ORACLE_METHODS = ("tall_masks",)


@dataclass
class Config:
    """Sizes of one run: the full study or the quick smoke run."""

    seeds: tuple[int, ...]
    nci: int | None  # molecules taken from NCI (None: all 4,991)
    chembl: int | None  # molecules taken from ChEMBL (None: all 1,017)
    pretrain_epochs: int
    finetune_steps: int  # optimiser steps of every fine-tuning, whatever the data set's size
    grid: tuple[float, ...]  # scales tried on validation (addition, analogies)
    negation_grid: tuple[float, ...]  # magnitudes tried for negation
    lr_grid: tuple[float, ...]  # fine-tuning learning rates, chosen on the tuning seed
    tuning_seed: int = 100  # never one of the evaluation seeds
    budget_stride: int = 1  # every k-th configuration of the merges' budget (quick: 2)
    hidden: int = 64
    layers: int = 3
    batch_size: int = 64
    pretrain_lr: float = 1e-3
    pretrain_on: str = "nci"  # "nci" or "both" (NCI and ChEMBL training molecules, no labels)
    out: Path = field(default_factory=lambda: HERE / "results")


FULL = Config(
    seeds=(0, 1, 2, 3, 4),
    nci=None,
    chembl=None,
    pretrain_epochs=30,
    finetune_steps=600,
    grid=arithmetic.DEFAULT_GRID,
    negation_grid=tuple(round(0.1 * i, 1) for i in range(21)),
    lr_grid=(1e-4, 3e-4),
)
QUICK = Config(
    seeds=(0,),
    nci=600,
    chembl=200,
    pretrain_epochs=10,
    finetune_steps=80,
    grid=(0.0, 0.25, 0.5, 0.75, 1.0),
    negation_grid=(0.0, 0.5, 1.0, 1.5, 2.0),
    lr_grid=(1e-4, 3e-4),
    budget_stride=2,
    out=HERE / "results" / "quick",  # never over the committed full-mode results
)


# %%
# Molecular graphs as one table per split, batched without per-graph Python objects
# ---------------------------------------------------------------------------------


@dataclass
class Graphs:
    """A batch of molecules: atoms, bonds, graph membership, targets and masked atoms."""

    x: Tensor
    edge_index: Tensor
    edge_attr: Tensor
    batch: Tensor
    num_graphs: int
    y: dict[str, Tensor]
    element: Tensor  # element class of every atom (the masked-atom target)
    masked: Tensor  # bool, atoms whose element is hidden


class GraphTable:
    """The molecules of one split, concatenated, from a :class:`ws.data.MoleculeDataset`."""

    def __init__(self, ds: ws.data.MoleculeDataset, columns: Mapping[str, str]) -> None:
        graphs = list(ds)
        self.x = torch.cat([g.x for g in graphs])
        self.edge_index = torch.cat([g.edge_index for g in graphs], dim=1)  # local numbering
        self.edge_attr = torch.cat([g.edge_attr for g in graphs])
        nodes = torch.tensor([g.num_nodes for g in graphs])
        edges = torch.tensor([g.edge_index.shape[1] for g in graphs])
        self.node_ptr = torch.cat([torch.zeros(1, dtype=torch.long), nodes.cumsum(0)])
        self.edge_ptr = torch.cat([torch.zeros(1, dtype=torch.long), edges.cumsum(0)])
        y = torch.cat([g.y for g in graphs])
        names = list(ds.target_names)
        self.y = {key: y[:, names.index(col)] for key, col in columns.items()}
        self.element = self.x[:, :N_ELEMENTS].argmax(1)
        self.n = len(graphs)

    def __len__(self) -> int:
        return self.n

    @classmethod
    def concat(cls, tables: Sequence[GraphTable]) -> GraphTable:
        """The molecules of several tables, with the targets they all hold."""
        out = cls.__new__(cls)
        out.x = torch.cat([t.x for t in tables])
        out.edge_index = torch.cat([t.edge_index for t in tables], dim=1)
        out.edge_attr = torch.cat([t.edge_attr for t in tables])
        nodes = torch.cat([t.node_ptr.diff() for t in tables])
        edges = torch.cat([t.edge_ptr.diff() for t in tables])
        out.node_ptr = torch.cat([torch.zeros(1, dtype=torch.long), nodes.cumsum(0)])
        out.edge_ptr = torch.cat([torch.zeros(1, dtype=torch.long), edges.cumsum(0)])
        common = [k for k in tables[0].y if all(k in t.y for t in tables)]
        out.y = {k: torch.cat([t.y[k] for t in tables]) for k in common}
        out.element = torch.cat([t.element for t in tables])
        out.n = sum(t.n for t in tables)
        return out

    @staticmethod
    def _ranges(ptr: Tensor, idx: Tensor) -> tuple[Tensor, Tensor]:
        start, count = ptr[idx], ptr[idx + 1] - ptr[idx]
        offsets = torch.cumsum(count, 0) - count
        return torch.arange(int(count.sum())) + torch.repeat_interleave(
            start - offsets, count
        ), count

    def batch(
        self,
        idx: Tensor | None = None,
        *,
        mask_rate: float = 0.0,
        generator: torch.Generator | None = None,
    ) -> Graphs:
        """Molecules ``idx`` (all by default) as one disjoint-union graph."""
        idx = torch.arange(self.n) if idx is None else idx
        nodes, n_count = self._ranges(self.node_ptr, idx)
        edges, e_count = self._ranges(self.edge_ptr, idx)
        new_start = torch.cumsum(n_count, 0) - n_count
        shift = torch.repeat_interleave(new_start, e_count)
        x = self.x[nodes]
        masked = torch.zeros(len(nodes), dtype=torch.bool)
        if mask_rate > 0:
            masked = torch.rand(len(nodes), generator=generator) < mask_rate
            if not masked.any():
                masked[0] = True
            x = x.clone()
            x[masked, :N_ELEMENTS] = 0.0
        return Graphs(
            x=x,
            edge_index=self.edge_index[:, edges] + shift,
            edge_attr=self.edge_attr[edges],
            batch=torch.repeat_interleave(torch.arange(len(idx)), n_count),
            num_graphs=len(idx),
            y={k: v[idx] for k, v in self.y.items()},
            element=self.element[nodes],
            masked=masked,
        )


@dataclass
class Splits:
    """Train / validation / test tables of one molecule collection."""

    train: GraphTable
    val: GraphTable
    test: GraphTable
    smiles: tuple[tuple[str, ...], tuple[str, ...], tuple[str, ...]]


def load_data(cfg: Config, seed: int) -> dict[str, Splits]:
    """Both collections, with every target any task needs, split 80/10/10 by ``seed``."""
    out: dict[str, Splits] = {}
    for source, limit in (("nci", cfg.nci), ("chembl", cfg.chembl)):
        columns = {p: c[source] for p, c in COLUMNS.items() if source in c}
        columns |= {d: d for d in PRETRAIN_DESCRIPTORS}
        ds = ws.data.molecules(
            source, targets=tuple(dict.fromkeys(columns.values())), progress=False
        )
        if limit is not None:
            ds = ds.subset(
                torch.randperm(len(ds), generator=torch.Generator().manual_seed(99))[:limit]
            )
        parts = ds.split((0.8, 0.1, 0.1), seed=seed)
        tables = [GraphTable(p, columns) for p in parts]
        out[source] = Splits(*tables, smiles=(parts[0].smiles, parts[1].smiles, parts[2].smiles))
    return out


def fingerprint_ridge(splits: Splits, prop: str) -> float:
    """Test R² of a ridge regression on Morgan fingerprints (radius 2, 2048 bits).

    A reference outside the GNN for how much of a property these molecules explain; the
    penalty is chosen on the validation split.
    """
    from rdkit import Chem
    from rdkit.Chem import rdFingerprintGenerator

    gen = rdFingerprintGenerator.GetMorganGenerator(radius=2, fpSize=2048)
    x = [
        torch.tensor([list(gen.GetFingerprint(Chem.MolFromSmiles(s))) for s in part]).double()
        for part in splits.smiles
    ]
    y = [t.y[prop].double() for t in (splits.train, splits.val, splits.test)]
    mean = y[0].mean()
    best = (-math.inf, -math.inf)
    for alpha in (0.1, 1.0, 10.0, 100.0):
        w = torch.linalg.solve(
            x[0].T @ x[0] + alpha * torch.eye(x[0].shape[1]), x[0].T @ (y[0] - mean)
        )
        val = r2(x[1] @ w + mean, y[1])
        if val > best[0]:
            best = (val, r2(x[2] @ w + mean, y[2]))
    return best[1]


# %%
# The model: a GINE trunk (atom encoder, message passing, readout) and one head per task
# --------------------------------------------------------------------------------------


class MolGNN(nn.Module):
    """GINE message passing with residual connections, mean+sum pooling, an MLP readout."""

    def __init__(
        self, atom_dim: int, bond_dim: int, hidden: int, layers: int, heads: Mapping[str, int]
    ) -> None:
        super().__init__()
        self.encoder = nn.Linear(atom_dim, hidden)
        self.convs = nn.ModuleList(
            GINEConv(
                nn.Sequential(nn.Linear(hidden, hidden), nn.ReLU(), nn.Linear(hidden, hidden)),
                edge_dim=bond_dim,
            )
            for _ in range(layers)
        )
        self.readout = nn.Sequential(
            nn.Linear(2 * hidden, hidden), nn.ReLU(), nn.Linear(hidden, hidden)
        )
        self.heads = nn.ModuleDict({k: nn.Linear(hidden, d) for k, d in heads.items()})

    def atoms(self, g: Graphs) -> Tensor:
        h = self.encoder(g.x)
        for conv in self.convs:
            h = h + F.relu(conv(h, g.edge_index, g.edge_attr))
        return h

    def encode(self, g: Graphs) -> tuple[Tensor, Tensor]:
        """Atom embeddings and molecule embeddings."""
        h = self.atoms(g)
        pooled = torch.cat(
            [
                global_mean_pool(h, g.batch, g.num_graphs),
                global_add_pool(h, g.batch, g.num_graphs) / 16.0,
            ],
            dim=1,
        )
        return h, self.readout(pooled)

    def forward(self, g: Graphs, head: str) -> Tensor:
        return self.heads[head](self.encode(g)[1])


def make_model(cfg: Config, seed: int) -> MolGNN:
    torch.manual_seed(seed)
    heads = {"mask": N_ELEMENTS, "descriptors": len(PRETRAIN_DESCRIPTORS)}
    heads |= {p: 1 for p in COLUMNS}
    return MolGNN(38, 7, cfg.hidden, cfg.layers, heads)


# %%
# Objectives: masked atoms, standardised regression; scores with higher = better
# ---------------------------------------------------------------------------------


class Standardiser:
    """Mean and standard deviation of each target on the training split of its home."""

    def __init__(self, data: Mapping[str, Splits]) -> None:
        self.stats: dict[str, tuple[float, float]] = {}
        for p, home in HOME.items():
            y = data[home].train.y[p]
            self.stats[p] = (float(y.mean()), float(y.std()))
        for d in PRETRAIN_DESCRIPTORS:
            y = data["nci"].train.y[d]
            self.stats[d] = (float(y.mean()), float(y.std()))

    def __call__(self, name: str, y: Tensor) -> Tensor:
        m, s = self.stats[name]
        return (y - m) / s

    def inverse(self, name: str, z: Tensor) -> Tensor:
        m, s = self.stats[name]
        return z * s + m


def mask_loss(model: MolGNN, g: Graphs, h: Tensor | None = None) -> Tensor:
    h = model.atoms(g) if h is None else h
    return F.cross_entropy(model.heads["mask"](h[g.masked]), g.element[g.masked])


def pretrain_loss(std: Standardiser) -> Callable[[nn.Module, Graphs], Tensor]:
    def loss(model: nn.Module, g: Graphs) -> Tensor:
        assert isinstance(model, MolGNN)
        h, emb = model.encode(g)
        target = torch.stack([std(d, g.y[d]) for d in PRETRAIN_DESCRIPTORS], dim=1)
        return mask_loss(model, g, h) + F.mse_loss(model.heads["descriptors"](emb), target)

    return loss


def property_loss(prop: str, std: Standardiser) -> Callable[[nn.Module, Graphs], Tensor]:
    def loss(model: nn.Module, g: Graphs) -> Tensor:
        return F.mse_loss(model(g, prop).squeeze(1), std(prop, g.y[prop]))

    return loss


def r2(pred: Tensor, y: Tensor) -> float:
    return 1.0 - float(((pred - y) ** 2).sum() / ((y - y.mean()) ** 2).sum())


class Collate:
    """Turns a list of molecule indices into a batch (with a seeded atom mask)."""

    def __init__(self, table: GraphTable, mask_rate: float, seed: int) -> None:
        self.table, self.mask_rate = table, mask_rate
        self.generator = torch.Generator().manual_seed(seed)

    def __call__(self, idx: list[int]) -> Graphs:
        return self.table.batch(
            torch.tensor(idx), mask_rate=self.mask_rate, generator=self.generator
        )


def fit(
    model: MolGNN,
    table: GraphTable,
    loss: Callable[[nn.Module, Graphs], Tensor],
    *,
    epochs: int,
    lr: float,
    batch_size: int,
    seed: int,
    trainable: list[str] | None,
    mask_rate: float = 0.0,
) -> None:
    train.fit_(
        model,
        range(len(table)),
        epochs=epochs,
        batch_size=batch_size,
        lr=lr,
        loss=loss,
        collate_fn=Collate(table, mask_rate, seed),
        trainable=trainable,
        seed=seed,
    )


class Evaluator:
    """Scores full state dicts on fixed evaluation batches (one reusable module)."""

    def __init__(self, cfg: Config, std: Standardiser) -> None:
        self.model = make_model(cfg, 0).eval()
        self.std = std

    @torch.no_grad()
    def predict(self, sd: Mapping[str, Tensor], prop: str, g: Graphs) -> Tensor:
        self.model.load_state_dict(sd)
        return self.std.inverse(prop, self.model(g, prop).squeeze(1))

    def regression(
        self, sd: Mapping[str, Tensor], prop: str, g: Graphs, shift_on: Graphs | None = None
    ) -> float:
        """R² of the head of ``prop``; with ``shift_on``, the predictions are first shifted by
        one number: the training-label mean minus the model's mean prediction on the
        molecules ``shift_on`` (the validation split: no label, no test molecule)."""
        pred = self.predict(sd, prop, g)
        if shift_on is not None:
            own = pred if shift_on is g else self.predict(sd, prop, shift_on)
            pred = pred - own.mean() + self.std.stats[prop][0]
        return r2(pred, g.y[prop])

    @torch.no_grad()
    def masked_atoms(self, sd: Mapping[str, Tensor], g: Graphs) -> float:
        self.model.load_state_dict(sd)
        logits = self.model.heads["mask"](self.model.atoms(g)[g.masked])
        return float((logits.argmax(1) == g.element[g.masked]).float().mean())

    @torch.no_grad()
    def descriptors(self, sd: Mapping[str, Tensor], g: Graphs) -> float:
        self.model.load_state_dict(sd)
        pred = self.model.heads["descriptors"](self.model.encode(g)[1])
        scores = [
            r2(self.std.inverse(d, pred[:, j]), g.y[d]) for j, d in enumerate(PRETRAIN_DESCRIPTORS)
        ]
        return sum(scores) / len(scores)


def fixed_batches(data: Mapping[str, Splits], seed: int) -> dict[tuple[str, str], Graphs]:
    """Validation and test sets as single batches, with a fixed mask for the masked atoms."""
    return {
        (src, part): getattr(data[src], part).batch(
            mask_rate=MASK_RATE, generator=torch.Generator().manual_seed(10_000 + seed)
        )
        for src in data
        for part in ("val", "test")
    }


def make_tasks(
    fixed: Mapping[tuple[str, str], Graphs], ev: Evaluator
) -> dict[str, arithmetic.Task]:
    """Every task of the study, keyed ``objective@collection``."""
    tasks: dict[str, arithmetic.Task] = {}

    def reg(prop: str, src: str) -> arithmetic.Task:
        val, test = fixed[(src, "val")], fixed[(src, "test")]
        return arithmetic.Task(
            f"{prop}@{src}",
            validate=lambda sd: ev.regression(sd, prop, val),
            test=lambda sd: ev.regression(sd, prop, test),
        )

    for prop, cols in COLUMNS.items():
        for src in cols:
            tasks[f"{prop}@{src}"] = reg(prop, src)
    for src in ("nci", "chembl"):
        val, test = fixed[(src, "val")], fixed[(src, "test")]
        tasks[f"mask@{src}"] = arithmetic.Task(
            f"mask@{src}",
            validate=lambda sd, v=val: ev.masked_atoms(sd, v),
            test=lambda sd, t=test: ev.masked_atoms(sd, t),
        )
    val, test = fixed[("nci", "val")], fixed[("nci", "test")]
    tasks["descriptors@nci"] = arithmetic.Task(
        "descriptors@nci",
        validate=lambda sd: ev.descriptors(sd, val),
        test=lambda sd: ev.descriptors(sd, test),
    )
    return tasks


def recentred_tasks(
    fixed: Mapping[tuple[str, str], Graphs], ev: Evaluator, names: Sequence[str]
) -> dict[str, arithmetic.Task]:
    """The property tasks scored after label-free, test-free re-centring of the predictions.

    Each edited model's predictions are shifted by one number per task: the mean training
    label (known when the head was fitted) minus the edited model's own mean prediction on
    the validation molecules. It removes a common offset of the outputs (the
    "representation bias" of merged models, Yang et al., ICML 2024, arXiv 2402.02705)
    without a validation label, a test molecule or a fine-tuned model.
    """
    tasks: dict[str, arithmetic.Task] = {}
    for name in names:
        prop, src = name.split("@")
        val, test = fixed[(src, "val")], fixed[(src, "test")]
        tasks[name] = arithmetic.Task(
            name,
            validate=lambda s, p=prop, v=val: ev.regression(s, p, v, shift_on=v),
            test=lambda s, p=prop, g=test, v=val: ev.regression(s, p, g, shift_on=v),
        )
    return tasks


# %%
# Pretraining, linear-probe heads, fine-tuning of the trunk
# ---------------------------------------------------------


@torch.no_grad()
def fit_probe_heads(
    model: MolGNN, data: Mapping[str, Splits], std: Standardiser
) -> dict[str, float]:
    """Ridge regression of each property on the pretrained embeddings (the frozen heads).

    The ridge penalty is chosen on the home collection's validation split; returns the
    chosen penalties.
    """
    chosen: dict[str, float] = {}
    model.eval()
    emb = {
        (s, p): model.encode(getattr(data[s], p).batch())[1].double()
        for s in data
        for p in ("train", "val")
    }
    for prop, home in HOME.items():
        z = torch.cat(
            [emb[(home, "train")], torch.ones(len(data[home].train), 1, dtype=torch.float64)], 1
        )
        zv = torch.cat(
            [emb[(home, "val")], torch.ones(len(data[home].val), 1, dtype=torch.float64)], 1
        )
        y = std(prop, data[home].train.y[prop]).double()
        yv = std(prop, data[home].val.y[prop]).double()
        best: tuple[float, float, Tensor] = (-math.inf, 0.0, torch.zeros(0))
        for alpha in (1e-3, 1e-2, 1e-1, 1.0, 10.0, 100.0):
            reg = alpha * torch.eye(z.shape[1], dtype=torch.float64)
            reg[-1, -1] = 0.0  # no penalty on the bias
            w = torch.linalg.solve(z.T @ z + reg, z.T @ y)
            score = r2(zv @ w, yv)
            if score > best[0]:
                best = (score, alpha, w)
        head = model.heads[prop]
        assert isinstance(head, nn.Linear)
        head.weight.copy_(best[2][:-1].float().unsqueeze(0))
        head.bias.copy_(best[2][-1:].float())
        chosen[prop] = best[1]
    return chosen


def steps_to_epochs(n: int, batch_size: int, steps: int) -> int:
    return max(1, round(steps / math.ceil(n / batch_size)))


def finetune(
    base: MolGNN,
    objective: str,
    data: Mapping[str, Splits],
    std: Standardiser,
    cfg: Config,
    seed: int,
    lr: float,
) -> dict[str, Tensor]:
    """Fine-tune the trunk on ``objective@collection`` (heads frozen); returns the state dict."""
    name, src = objective.split("@")
    model = copy.deepcopy(base)
    table = data[src].train
    if name == "mask":
        loss: Callable[[nn.Module, Graphs], Tensor] = lambda m, g: mask_loss(m, g)  # type: ignore[arg-type]  # noqa: E731
    else:
        loss = property_loss(name, std)
    fit(
        model,
        table,
        loss,
        epochs=steps_to_epochs(len(table), cfg.batch_size, cfg.finetune_steps),
        lr=lr,
        batch_size=cfg.batch_size,
        seed=seed,
        trainable=TRUNK,
        mask_rate=MASK_RATE if name == "mask" else 0.0,
    )
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def tall(vectors: Sequence[TaskVector], *, lambdas: float) -> list[TaskVector]:
    """Per task, the sum of the vectors under that task's TALL mask (one model per task)."""
    merged = merge.task_arithmetic(vectors).materialize()
    return [merged.masked(m) for m in merge.tall_masks(vectors, lambdas=lambdas, merged=merged)]


def merge_methods(stride: int = 1) -> dict[str, arithmetic.Method]:
    """Every configuration of the tuning budget, named ``family`` or ``family@value``."""
    method = arithmetic.Method
    out: dict[str, arithmetic.Method] = {
        "average": method(merge.mean, grid=(1.0,)),
        "task_arithmetic": method(merge.task_arithmetic, grid=TA_SCALES[::stride]),
    }
    for d in TIES_DENSITIES:
        out[f"ties@{d}"] = method(partial(merge.ties, density=d), grid=TIES_SCALES[::stride])
    for lam in MASK_LAMBDAS:
        out[f"consensus@{lam}"] = method(
            partial(merge.consensus, k=2, lambdas=lam), grid=MASK_SCALES[::stride]
        )
    for lam in MASK_LAMBDAS:
        out[f"tall_masks@{lam}"] = method(partial(tall, lambdas=lam), grid=MASK_SCALES[::stride])
    return out


# %%
# One seed: pretrain, fine-tune, then negation, addition and analogies
# --------------------------------------------------------------------


@dataclass
class Prepared:
    """One seed's data, pretrained model (with its probe heads) and tasks."""

    data: dict[str, Splits]
    std: Standardiser
    model: MolGNN
    base: dict[str, Tensor]
    alphas: dict[str, float]
    ev: Evaluator
    fixed: dict[tuple[str, str], Graphs]
    tasks: dict[str, arithmetic.Task]
    n_trunk: int
    seconds: float


def needed_objectives() -> list[str]:
    """Every objective that gets a task vector: the five tasks and the analogies' parts."""
    needed = list(TASKS)
    for a, c in ANALOGIES:
        needed += [f"{a}@nci", f"{a}@chembl", f"{c}@nci", f"{c}@chembl"]
    return list(dict.fromkeys(needed))


def prepare(cfg: Config, seed: int, log: Callable[[str], None]) -> Prepared:
    """Split the molecules, pretrain the trunk and fit the probe heads for ``seed``."""
    t0 = time.perf_counter()
    data = load_data(cfg, seed)
    std = Standardiser(data)
    model = make_model(cfg, seed)
    n_trunk = sum(p.numel() for n, p in model.named_parameters() if n.split(".")[0] in TRUNK)
    pretrain_table = (
        GraphTable.concat([data["nci"].train, data["chembl"].train])
        if cfg.pretrain_on == "both"
        else data["nci"].train
    )
    fit(
        model,
        pretrain_table,
        pretrain_loss(std),
        epochs=cfg.pretrain_epochs,
        lr=cfg.pretrain_lr,
        batch_size=cfg.batch_size,
        seed=seed,
        trainable=None,
        mask_rate=MASK_RATE,
    )
    alphas = fit_probe_heads(model, data, std)
    base = {k: v.detach().clone() for k, v in model.state_dict().items()}
    t_pre = time.perf_counter() - t0
    log(f"seed {seed}: pretrained in {t_pre:.0f} s")
    ev = Evaluator(cfg, std)
    fixed = fixed_batches(data, seed)
    tasks = make_tasks(fixed, ev)
    return Prepared(data, std, model, base, alphas, ev, fixed, tasks, n_trunk, t_pre)


def tune_learning_rates(
    cfg: Config, log: Callable[[str], None]
) -> tuple[dict[str, float], dict[str, dict[str, float]]]:
    """Per objective, the learning rate of ``cfg.lr_grid`` with the best validation score.

    Run once, on ``cfg.tuning_seed`` (its own split, pretraining and heads), before any
    evaluation seed; every objective gets the same grid. Returns the chosen rates and every
    validation score.
    """
    p = prepare(cfg, cfg.tuning_seed, log)
    chosen: dict[str, float] = {}
    scores: dict[str, dict[str, float]] = {}
    for i, name in enumerate(needed_objectives()):
        scores[name] = {}
        for lr in cfg.lr_grid:
            ft = finetune(p.model, name, p.data, p.std, cfg, 1000 * cfg.tuning_seed + i, lr)
            scores[name][f"{lr:g}"] = p.tasks[name].validate(ft)
        chosen[name] = max(cfg.lr_grid, key=lambda lr, n=name: scores[n][f"{lr:g}"])
        log(f"tuning: {name} lr {chosen[name]:g} {scores[name]}")
    return chosen, scores


def run_seed(
    cfg: Config, seed: int, lrs: Mapping[str, float], log: Callable[[str], None]
) -> dict[str, Any]:
    t0 = time.perf_counter()
    p = prepare(cfg, seed, log)
    data, std, model, base, alphas = p.data, p.std, p.model, p.base, p.alphas
    ev, fixed, tasks, n_trunk, t_pre = p.ev, p.fixed, p.tasks, p.n_trunk, p.seconds
    trunk = select.parameters(model, TRUNK)
    vectors: dict[str, TaskVector] = {}
    for i, name in enumerate(needed_objectives()):
        ft = finetune(model, name, data, std, cfg, 1000 * seed + i, lrs[name])
        tv = TaskVector.from_models(base=base, finetuned=ft)
        vectors[name] = tv.restrict(trunk).materialize()
    t_ft = time.perf_counter() - t0 - t_pre
    log(f"seed {seed}: {len(vectors)} fine-tunings in {t_ft:.0f} s")

    # --- the scores of the pretrained and fine-tuned models on every task ------------------
    scores = {
        name: {
            "pretrained": tasks[name].test(base),
            "finetuned": tasks[name].test(vectors[name].apply_to(base))
            if name in vectors
            else None,
        }
        for name in tasks
    }
    names = list(vectors)
    # references: a fingerprint ridge for pIC50, and how the NCI labels correlate
    fp_ridge = fingerprint_ridge(data["chembl"], "pic50")
    labels = torch.stack([data["nci"].train.y[t.split("@")[0]] for t in NCI_TASKS])
    label_corr = torch.corrcoef(labels).tolist()
    masked = fixed[("nci", "test")].element[fixed[("nci", "test")].masked]
    majority = float(torch.bincount(masked).max()) / len(masked)  # always guess the commonest
    cosine = [[vectors[a].cosine(vectors[b]) for b in names] for a in names]
    norms = {n: vectors[n].norm() for n in names}

    # --- (b) forgetting by negation: every task, pretraining objectives as controls --------
    controls = [tasks["mask@nci"], tasks["descriptors@nci"]]
    forget = {
        name: arithmetic.forget(
            base,
            vectors[name],
            target=tasks[name],
            control=controls,
            grid=cfg.negation_grid,
            seed=seed,
        )
        for name in TASKS
    }
    # the negated vector of each task scored on every other task (what else is forgotten)
    cross = {
        name: {
            other: tasks[other].test(vectors[name].apply_to(base, scale=-forget[name].scale))
            for other in TASKS
        }
        for name in TASKS
    }
    log(f"seed {seed}: negation done")

    # --- (c) learning by addition: the five vectors, then every pair ------------------------
    # Every method gets the same budget of configurations on validation data; the best one
    # per method family is reported.
    methods = merge_methods(cfg.budget_stride)
    five = {n: vectors[n] for n in TASKS}
    addition = arithmetic.add(base, five, {n: tasks[n] for n in TASKS}, methods=methods)
    # the same without the ChEMBL task: four properties of the same molecules
    addition_nci = arithmetic.add(
        base,
        {n: vectors[n] for n in NCI_TASKS},
        {n: tasks[n] for n in NCI_TASKS},
        methods=methods,
    )
    # the five tasks, each edited model's predictions re-centred on its own validation
    # predictions (no label, no test molecule, no fine-tuned model)
    recentred = recentred_tasks(fixed, ev, TASKS)
    addition_recentred = arithmetic.add(
        base, five, {n: recentred[n] for n in TASKS}, methods=methods
    )
    chosen = {
        "addition": addition.best_by_family(),
        "addition_nci": addition_nci.best_by_family(),
        "addition_recentred": addition_recentred.best_by_family(),
    }
    only_sum = {
        "task_arithmetic": arithmetic.Method(
            merge.task_arithmetic, grid=TA_SCALES[:: cfg.budget_stride]
        )
    }
    pairs = {
        f"{a}+{b}": arithmetic.add(
            base,
            {a: vectors[a], b: vectors[b]},
            {a: tasks[a], b: tasks[b]},
            methods=only_sum,
        )
        for a, b in itertools.combinations(TASKS, 2)
    }
    log(f"seed {seed}: addition done")

    # --- (d) analogies across collections ------------------------------------------------
    analogies = {}
    for a, c in ANALOGIES:
        target = f"{c}@chembl"
        analogies[f"{a}->{c}"] = arithmetic.analogy(
            base,
            a=vectors[f"{a}@nci"],
            b=vectors[f"{a}@chembl"],
            c=vectors[f"{c}@nci"],
            task=tasks[target],
            reference=vectors[target],
            grid=cfg.grid,
        )
    t_all = time.perf_counter() - t0
    log(f"seed {seed}: done in {t_all:.0f} s")
    return {
        "seed": seed,
        "sizes": {
            s: {p: len(getattr(d, p)) for p in ("train", "val", "test")} for s, d in data.items()
        },
        "trunk_parameters": n_trunk,
        "ridge_alpha": alphas,
        "seconds": {"pretrain": t_pre, "finetune": t_ft, "total": t_all},
        "scores": scores,
        "mask_majority": majority,
        "pic50_fingerprint_ridge": fp_ridge,
        "label_correlation": label_corr,
        "vector_names": names,
        "vector_keys": list(vectors[names[0]]),
        "cosine": cosine,
        "norms": norms,
        "forget": forget,
        "forget_cross": cross,
        "addition": addition,
        "addition_nci": addition_nci,
        "addition_recentred": addition_recentred,
        "chosen": chosen,
        "learning_rates": dict(lrs),
        "pairs": pairs,
        "analogies": analogies,
    }


# %%
# Tables and figures
# ------------------


class CI(report.Summary):
    """A :class:`~weightspace.report.Summary` shown as ``mean ± half-width of the 95 % t
    interval`` over seeds (the mean alone for one seed)."""

    def __format__(self, spec: str) -> str:
        spec = spec or ".3f"
        if math.isnan(self.mean):
            return "n/a"
        hw, plain = self.half_width, spec.lstrip("+")
        return f"{self.mean:{spec}}" if math.isnan(hw) else f"{self.mean:{spec}} ± {hw:{plain}}"


def over(values: Sequence[float]) -> report.Summary:
    s = report.summarize(list(values))
    return CI(s.mean, s.std, s.n, s.values, s.ddof)


def family_row(run: Mapping[str, Any], key: str, family: str) -> arithmetic.MethodRow:
    """The tuned configuration of a method family (or a reference row) of one seed."""
    result: arithmetic.AdditionResult = run[key]
    return result.rows[run["chosen"][key].get(family, family)]


def family_label(family: str) -> str:
    return f"{family} (oracle)" if family in ORACLE_METHODS else family


FAMILIES = ("pretrained", "finetuned", *SINGLE_METHODS, *ORACLE_METHODS)


def tables(runs: Sequence[dict[str, Any]]) -> str:
    n = len(runs)
    seeds = ", ".join(str(r["seed"]) for r in runs)
    parts: list[str] = [
        f"{n} seed(s) ({seeds}); every cell: mean ± half-width of the 95 % Student-t "
        "interval over the seeds.\n"
    ]
    table = report.markdown_table
    parts.append("\n### Run\n")
    rows: list[list[report.Cell]] = [
        [
            r["seed"],
            f"{r['seconds']['total']:.0f}",
            " / ".join(f"{x:.1f}" for x in r.get("load_average", [])),
        ]
        for r in runs
    ]
    head = ["seed", "seconds (one thread)", "load average at its end (1, 5, 15 min)"]
    parts.append(table(head, rows))
    # learning rates chosen on the tuning seed
    lrs = runs[0]["learning_rates"]
    parts.append("\n### Fine-tuning learning rate chosen on the tuning seed's validation split\n")
    tuning = runs[0].get("lr_validation", {})
    grid = list(next(iter(tuning.values()))) if tuning else []
    rows = [
        [LABELS.get(name, name), f"{lr:g}", *(f"{tuning[name][g]:.3f}" for g in grid)]
        for name, lr in lrs.items()
    ]
    parts.append(table(["objective", "chosen", *(f"validation at {g}" for g in grid)], rows))
    # scores of the pretrained (probe heads) and fine-tuned models
    rows = []
    for name in runs[0]["scores"]:
        pre = [r["scores"][name]["pretrained"] for r in runs]
        ft = [r["scores"][name]["finetuned"] for r in runs]
        rows.append([LABELS.get(name, name), over(pre), "" if ft[0] is None else over(ft)])
    parts.append("\n### Test scores of the pretrained and fine-tuned models\n")
    parts.append(table(["task", "pretrained + probe head", "fine-tuned trunk"], rows))
    if all("pic50_fingerprint_ridge" in r for r in runs):
        parts.append(
            "\nReference for pIC50 (ChEMBL): ridge regression on Morgan fingerprints, test R² "
            f"{over([r['pic50_fingerprint_ridge'] for r in runs])}.\n"
        )
    if all("label_correlation" in r for r in runs):
        rows = [
            [LABELS[a]]
            + [over([r["label_correlation"][i][j] for r in runs]) for j in range(len(NCI_TASKS))]
            for i, a in enumerate(NCI_TASKS)
        ]
        parts.append("\n### Pearson correlation of the NCI labels (training split)\n")
        parts.append(table(["", *(LABELS[t] for t in NCI_TASKS)], rows, formats=".2f"))

    # negation: one row per target task
    rows = []
    for name in TASKS:
        rs = [r["forget"][name] for r in runs]
        rows.append(
            [
                LABELS[name],
                over([x.target.pretrained for x in rs]),
                over([x.target.finetuned for x in rs]),
                over([x.target.edited for x in rs]),
                over([x.scale for x in rs]),
                over([x.random[name].edited for x in rs]),  # type: ignore[index]
                *(
                    over([x.control[c].edited / x.control[c].pretrained for x in rs])
                    for c in ("mask@nci", "descriptors@nci")
                ),
            ]
        )
    parts.append("\n### Forgetting by negation: target R² and control retention\n")
    header = [
        "negated task",
        "pretrained",
        "fine-tuned",
        "negated vector",
        "scale",
        "negated random vector",
        "masked atoms kept",
        "descriptors kept",
    ]
    parts.append(table(header, rows, formats=[None, None, None, None, ".2f", None, None, None]))
    rows = [
        [LABELS[name]]
        + [
            over([r["forget_cross"][name][o] - r["scores"][o]["pretrained"] for r in runs])
            for o in TASKS
        ]
        for name in TASKS
    ]
    parts.append("\n### Negation: change of every task's test R² (row: negated vector)\n")
    parts.append(table(["negated \\ scored", *(LABELS[t] for t in TASKS)], rows, formats="+.3f"))

    # addition
    settings = (
        ("addition", TASKS, "five task vectors"),
        ("addition_nci", NCI_TASKS, "the four NCI task vectors"),
        (
            "addition_recentred",
            TASKS,
            "five task vectors, predictions re-centred on the validation inputs",
        ),
    )
    for key, names_t, title in settings:
        rows = []
        for family in FAMILIES:
            got = [family_row(r, key, family) for r in runs]
            chosen = [
                f"{c} ×{g.scale:g}"
                for r, g in zip(runs, got, strict=True)
                if (c := r["chosen"][key].get(family))
            ]
            rows.append(
                [
                    family_label(family),
                    "; ".join(chosen),
                    *(over([g.scores[t] for g in got]) for t in names_t),
                ]
            )
        parts.append(f"\n### Learning by addition, {title}: test R²\n")
        parts.append(
            table(["method", "configurations chosen", *(LABELS[t] for t in names_t)], rows)
        )
        rows = []
        extra = len(names_t) > len(NCI_TASKS)
        for family in FAMILIES:
            got = [family_row(r, key, family) for r in runs]
            row: list[report.Cell] = [family_label(family)]
            row += [over([g.normalized[t] for g in got]) for t in names_t]
            row += [over([g.normalized_mean for g in got])]
            if extra:
                nci = [sum(g.normalized[t] for t in NCI_TASKS) / len(NCI_TASKS) for g in got]
                row.append(over(nci))
            rows.append(row)
        parts.append(
            f"\n### Learning by addition, {title}: normalised scores (merged / fine-tuned)\n"
        )
        header = ["method", *(LABELS[t] for t in names_t), "mean"]
        parts.append(table(header + (["mean of the NCI tasks"] if extra else []), rows))
    rows = []
    for pair in runs[0]["pairs"]:
        a, b = pair.split("+")
        ta = [r["pairs"][pair].rows["task_arithmetic"] for r in runs]
        rows.append(
            [
                f"{LABELS[a]} + {LABELS[b]}",
                over([x.scale for x in ta]),
                over([x.normalized[a] for x in ta]),
                over([x.normalized[b] for x in ta]),
                over([x.normalized_mean for x in ta]),
                over(
                    [
                        r["cosine"][r["vector_names"].index(a)][r["vector_names"].index(b)]
                        for r in runs
                    ]
                ),
            ]
        )
    parts.append("\n### Pairs of task vectors: task arithmetic, normalised scores\n")
    header = ["pair", "scale", "first", "second", "mean", "cosine of the vectors"]
    parts.append(table(header, rows, formats=[None, ".2f", None, None, None, None]))

    # analogies: one row each, with the paired difference to C alone
    rows = []
    for key in runs[0]["analogies"]:
        a, c = key.split("->")
        res = [r["analogies"][key] for r in runs]
        diff = [x.scores["analogy"] - x.scores["c_only"] for x in res]
        rows.append(
            [
                f"{LABELS[f'{a}@nci']} : {LABELS[f'{a}@chembl']} :: {LABELS[f'{c}@nci']} : "
                f"{LABELS[f'{c}@chembl']}",
                over([x.scores["pretrained"] for x in res]),
                over([x.scores["c_only"] for x in res]),
                over([x.scores["analogy"] for x in res]),
                format(over(diff), "+.3f"),
                f"{sum(d > 0 for d in diff)} of {len(diff)}",
                over([x.scores["reference"] for x in res]),
            ]
        )
    parts.append("\n### Analogies: test R² on the ChEMBL molecules\n")
    header = [
        "A(NCI) : A(ChEMBL) :: C(NCI) : D = C(ChEMBL)",
        "pretrained",
        "C alone",
        "C + (B − A)",
        "analogy − C alone",
        "seeds where the analogy beats C alone",
        "fine-tuned on D (reference)",
    ]
    parts.append(table(header, rows))

    # cosine similarities
    names = runs[0]["vector_names"]
    rows = [
        [LABELS[a]] + [over([r["cosine"][i][j] for r in runs]) for j in range(len(names))]
        for i, a in enumerate(names)
    ]
    parts.append("\n### Cosine similarity of the task vectors (trunk only)\n")
    parts.append(table(["", *(LABELS[b] for b in names)], rows, formats=".2f"))

    # appendix: per-seed values behind the headline numbers
    seed_head = [f"seed {r['seed']}" for r in runs]
    rows = []
    for name in TASKS:
        rows.append(
            [f"negation, {LABELS[name]}", *(f"{r['forget'][name].target.edited:.3f}" for r in runs)]
        )
    for key, _, title in settings:
        for family in (*SINGLE_METHODS, *ORACLE_METHODS):
            rows.append(
                [
                    f"{title}: {family_label(family)}, normalised mean",
                    *(f"{family_row(r, key, family).normalized_mean:.3f}" for r in runs),
                ]
            )
    for key in ("addition", "addition_recentred"):
        for family in ("task_arithmetic", "ties"):
            rows.append(
                [
                    f"{key}: {family}, pIC50 R²",
                    *(f"{family_row(r, key, family).scores['pic50@chembl']:.3f}" for r in runs),
                ]
            )
    parts.append("\n### Per seed: negation (target R²) and addition\n")
    parts.append(table(["", *seed_head], rows))
    rows = []
    for key in runs[0]["analogies"]:
        rows.append(
            [
                key,
                *(
                    f"{r['analogies'][key].scores['c_only']:.3f} -> "
                    f"{r['analogies'][key].scores['analogy']:.3f}"
                    for r in runs
                ),
            ]
        )
    parts.append("\n### Per seed: analogies (test R²: C alone -> C + (B − A))\n")
    parts.append(table(["A -> C", *seed_head], rows))
    return "".join(parts)


def figures(runs: Sequence[dict[str, Any]], out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    # 1. negation: validation curves along the scale, and target against the worst control
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
    floor = -2.0
    for name in TASKS:
        curves = [r["forget"][name].curve for r in runs]
        scale = [c[0] for c in curves[0]]
        target = torch.tensor([[c[1] for c in cv] for cv in curves]).mean(0)
        kept = torch.tensor(
            [[min(c[2][k] / cv[0][2][k] for k in c[2]) for c in cv] for cv in curves]
        ).mean(0)
        line = axes[0].plot(scale, target.clamp(min=floor), marker="o", ms=3, label=LABELS[name])
        axes[1].plot(kept, (target - target[0]).clamp(min=floor), marker="o", ms=3)
        chosen = [r["forget"][name].scale for r in runs]
        axes[0].plot(
            chosen,
            [float(target[scale.index(c)].clamp(min=floor)) for c in chosen],
            "*",
            ms=11,
            color=line[0].get_color(),
        )
    axes[0].set_xlabel("negation scale λ  (θ₀ − λτ);  ★ = chosen scale of each seed")
    axes[0].set_ylabel(f"target R² (validation, mean of seeds, floor {floor:g})")
    axes[0].set_title("Forgetting by negation")
    axes[0].legend(fontsize=8)
    axes[1].axvline(0.95, color="grey", ls="--", lw=1)
    axes[1].text(0.95, floor, " keep = 0.95", fontsize=8, va="bottom")
    axes[1].invert_xaxis()
    axes[1].set_xlabel("worst control (masked atoms, descriptors) as a fraction of pretrained")
    axes[1].set_ylabel("change of target R² from pretrained")
    axes[1].set_title("Target against control along λ")
    fig.tight_layout()
    fig.savefig(out / "negation.png", dpi=120)
    plt.close(fig)

    # 2. addition: the NCI tasks' normalised mean, pIC50's R², and the choice of λ
    settings = {
        "addition_nci": "4 NCI vectors",
        "addition": "5 vectors (with pIC50)",
        "addition_recentred": "5 vectors, re-centred (validation)",
    }
    methods = list(FAMILIES)

    def nci_mean(row: arithmetic.MethodRow) -> float:
        return sum(row.normalized[t] for t in NCI_TASKS) / len(NCI_TASKS)

    fig, axes = plt.subplots(1, 3, figsize=(15, 4.4), gridspec_kw={"width_ratios": [1.5, 1.2, 1]})
    ax = axes[0]
    for j, (key, label) in enumerate(settings.items()):
        stats = [report.summarize([nci_mean(family_row(r, key, m)) for r in runs]) for m in methods]
        ax.bar(
            [i + (j - 1) * 0.27 for i in range(len(methods))],
            [st.mean for st in stats],
            0.27,
            yerr=[st.std for st in stats],
            label=label,
            capsize=2,
        )
    ax.axhline(1.0, color="grey", lw=1, ls="--")
    ax.set_ylim(0.5, 1.08)
    ax.set_xticks(range(len(methods)), methods, fontsize=8, rotation=20)
    ax.set_ylabel("mean over the 4 NCI tasks of R² / fine-tuned R²")
    ax.set_title("Learning by addition: the NCI tasks")
    ax.legend(fontsize=8, loc="lower left")
    ax = axes[1]
    low = -3.0
    for j, key in enumerate(("addition", "addition_recentred")):
        stats = [
            report.summarize([family_row(r, key, m).scores["pic50@chembl"] for r in runs])
            for m in methods
        ]
        xs = [i + (j - 0.5) * 0.36 for i in range(len(methods))]
        ax.bar(
            xs,
            [max(st.mean, low) for st in stats],
            0.36,
            yerr=[st.std if st.mean > low else 0.0 for st in stats],
            label=settings[key],
            color=f"C{j + 1}",
            capsize=2,
        )
        for x, st in zip(xs, stats, strict=True):
            if st.mean < low:
                ax.text(
                    x,
                    low + 0.1,
                    f"{st.mean:.1f}",
                    rotation=90,
                    ha="center",
                    fontsize=7,
                    bbox={"facecolor": "white", "edgecolor": "none", "pad": 1},
                )
    ax.axhline(0.0, color="black", lw=0.8)
    ax.set_ylim(low, 1.8)
    ax.set_xticks(range(len(methods)), methods, fontsize=8, rotation=20)
    ax.set_ylabel("pIC50 (ChEMBL) test R²")
    ax.set_title("The ChEMBL task under the same merges")
    ax.legend(fontsize=8, loc="upper right", ncol=2)
    ax = axes[2]
    floor = -0.6
    for j, (key, label) in enumerate(settings.items()):
        curves = torch.tensor([[c[1] for c in r[key].rows["task_arithmetic"].curve] for r in runs])
        scale = [c[0] for c in runs[0][key].rows["task_arithmetic"].curve]
        ax.plot(
            scale, curves.mean(0).clamp(min=floor), marker="o", ms=3, label=label, color=f"C{j}"
        )
    ax.axhline(1.0, color="grey", lw=1, ls="--")
    ax.set_ylim(floor, 1.1)
    ax.set_xlabel("scale λ of the sum of task vectors")
    ax.set_ylabel(f"mean normalised validation R² (floor {floor:g})")
    ax.set_title("Task arithmetic: the criterion for λ")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out / "addition.png", dpi=120)
    plt.close(fig)

    # 3. analogies: bars per analogy
    keys = list(runs[0]["analogies"])
    kinds = ["pretrained", "c_only", "analogy", "reference"]
    names = {
        "pretrained": "pretrained",
        "c_only": "C alone",
        "analogy": "C + (B − A)",
        "reference": "fine-tuned on D",
    }
    fig, ax = plt.subplots(figsize=(11, 4.2))
    for j, kind in enumerate(kinds):
        vals = [report.summarize([r["analogies"][k].scores[kind] for r in runs]) for k in keys]
        ax.bar(
            [i + (j - 1.5) * 0.2 for i in range(len(keys))],
            [v.mean for v in vals],
            0.2,
            yerr=[v.std for v in vals],
            label=names[kind],
            capsize=2,
        )
    labels = []
    for k in keys:
        a, c = k.split("->")
        labels.append(f"D = {c} on ChEMBL\nA = {'masked atoms' if a == 'mask' else a}")
    ax.set_xticks(range(len(keys)), labels, fontsize=8)
    ax.axhline(0.0, color="black", lw=0.8)
    ax.set_ylabel("test R² on the ChEMBL molecules")
    ax.set_title("Analogies: A(NCI) : A(ChEMBL) :: C(NCI) : D = C(ChEMBL)")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out / "analogy.png", dpi=120)
    plt.close(fig)

    # 4. cosine similarity of the task vectors
    names_v = runs[0]["vector_names"]
    cos = torch.tensor([r["cosine"] for r in runs]).mean(0)
    fig, ax = plt.subplots(figsize=(6.5, 5.5))
    im = ax.imshow(cos, vmin=-1, vmax=1, cmap="RdBu_r")
    ax.set_xticks(
        range(len(names_v)), [LABELS[n] for n in names_v], rotation=60, ha="right", fontsize=8
    )
    ax.set_yticks(range(len(names_v)), [LABELS[n] for n in names_v], fontsize=8)
    for i in range(len(names_v)):
        for j in range(len(names_v)):
            ax.text(j, i, f"{cos[i, j]:.2f}", ha="center", va="center", fontsize=6)
    fig.colorbar(im, ax=ax, shrink=0.8)
    ax.set_title("Cosine similarity of task vectors (trunk)")
    fig.tight_layout()
    fig.savefig(out / "cosine.png", dpi=120)
    plt.close(fig)


def to_json(run: dict[str, Any]) -> dict[str, Any]:
    out = dict(run)
    out["forget"] = {k: v.to_dict() for k, v in run["forget"].items()}
    for key in ("addition", "addition_nci", "addition_recentred"):
        out[key] = run[key].to_dict()
    out["pairs"] = {k: v.to_dict() for k, v in run["pairs"].items()}
    out["analogies"] = {k: v.to_dict() for k, v in run["analogies"].items()}
    return out


def from_json(run: dict[str, Any]) -> dict[str, Any]:
    """The inverse of :func:`to_json`: result objects back from ``results.json``."""
    out = dict(run)
    out["forget"] = {k: arithmetic.ForgetResult.from_dict(v) for k, v in run["forget"].items()}
    for key in ("addition", "addition_nci", "addition_recentred"):
        out[key] = arithmetic.AdditionResult.from_dict(run[key])
    out["pairs"] = {k: arithmetic.AdditionResult.from_dict(v) for k, v in run["pairs"].items()}
    out["analogies"] = {
        k: arithmetic.AnalogyResult.from_dict(v) for k, v in run["analogies"].items()
    }
    return out


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[1] if __doc__ else None)
    parser.add_argument("--quick", action="store_true", help="a few hundred molecules, one seed")
    parser.add_argument("--seeds", type=int, default=None, help="number of seeds (0, 1, ...)")
    parser.add_argument("--out", type=Path, default=None, help="output folder")
    parser.add_argument(
        "--replot",
        action="store_true",
        help="only rewrite tables.md and the figures from the results.json in --out",
    )
    parser.add_argument(
        "--only-seed",
        type=int,
        default=None,
        help="tune (if not stored yet), run and store this one seed, then stop",
    )
    parser.add_argument(
        "--combine",
        action="store_true",
        help="write the results from the seeds stored so far (a partial run), computing none",
    )
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    cfg = dataclasses.replace(QUICK if args.quick else FULL)
    if args.seeds is not None:
        cfg.seeds = tuple(range(args.seeds))
    out = args.out or cfg.out
    out.mkdir(parents=True, exist_ok=True)
    if args.replot:
        saved: dict[str, Any] = json.loads((out / "results.json").read_text())
        runs = [from_json(r) for r in saved["runs"]]
        write_tables(runs, out)
        figures(runs, out)
        print(f"rewrote the tables and figures in {out}")
        return saved
    start = time.perf_counter()
    load_start = os.getloadavg()

    def log(message: str) -> None:
        print(message, flush=True)

    config = json.loads(json.dumps({k: v for k, v in vars(cfg).items() if k not in ("out",)}))
    fixed_config = {k: v for k, v in config.items() if k != "seeds"}
    stored = out / "seeds"  # the tuning and one file per finished seed: a stopped run resumes
    stored.mkdir(exist_ok=True)

    def load(name: str) -> Any:
        path = stored / f"{name}.json"
        if not path.exists():
            return None
        saved = json.loads(path.read_text())
        if saved["config"] != fixed_config:
            raise ws.WeightspaceValueError(
                f"{path} was run with another configuration; remove it or pass another `--out`"
            )
        return saved["data"]

    def store(name: str, data: Any) -> None:
        body = {"config": fixed_config, "data": data}
        (stored / f"{name}.json").write_text(json.dumps(body, default=float))

    tuning = load("tuning")
    if tuning is None:
        if args.combine:
            raise ws.WeightspaceValueError(f"no tuning in {stored}; run without `--combine`")
        lrs, lr_scores = tune_learning_rates(cfg, log)
        store("tuning", {"learning_rates": lrs, "validation": lr_scores})
    else:
        lrs, lr_scores = tuning["learning_rates"], tuning["validation"]
    runs = []
    todo = cfg.seeds if args.only_seed is None else (args.only_seed,)
    for s in todo:
        saved_run = load(f"seed{s}")
        if saved_run is None and not args.combine:
            run = run_seed(cfg, s, lrs, log)
            run["lr_validation"] = lr_scores
            run["load_average"] = list(os.getloadavg())
            store(f"seed{s}", to_json(run))
            runs.append(run)
        elif saved_run is not None:
            runs.append(from_json(saved_run))
    if args.only_seed is not None:
        return {}
    if not runs:
        raise ws.WeightspaceValueError(f"no finished seed in {stored}; run without `--combine`")
    config["seeds"] = [r["seed"] for r in runs]
    results = {
        "mode": "quick" if args.quick else "full",
        "config": config,
        "tasks": list(TASKS),
        "analogies": [list(a) for a in ANALOGIES],
        "learning_rates": lrs,
        "learning_rate_validation": lr_scores,
        "runs": [to_json(r) for r in runs],
        "wall_time_s": time.perf_counter() - start,
        "load_average": {"start": list(load_start), "end": list(os.getloadavg())},
        "torch_threads": torch.get_num_threads(),
    }
    (out / "results.json").write_text(json.dumps(results, indent=1, default=float))
    text = write_tables(runs, out)
    figures(runs, out)
    print(text)
    print(f"wrote {out} in {results['wall_time_s']:.0f} s")
    return results


def write_tables(runs: Sequence[dict[str, Any]], out: Path) -> str:
    """``tables.md`` and its reStructuredText form ``tables.rst`` (included by the report)."""
    text = tables(runs)
    (out / "tables.md").write_text(text, encoding="utf-8")
    (out / "tables.rst").write_text(report.markdown_to_rst(text), encoding="utf-8")
    return text


if __name__ == "__main__":
    main()
