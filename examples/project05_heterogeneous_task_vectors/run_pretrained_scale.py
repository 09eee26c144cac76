"""
Task vectors at pretrained scale: EfficientNet-Lite0 and MiniLM fine-tuned end to end
=====================================================================================

The task vectors of the main project-5 study live on a 16,576-parameter block trained from
scratch. Ilharco et al. (ICLR 2023) found that adding task vectors works on large pretrained
CLIP encoders, and better as they grow. This script asks whether their ordering (task
arithmetic above weight averaging, near the fine-tuned models; negation that forgets the
target and keeps the controls, where a random vector of the same norms does nothing) appears
once the vectors are those of a real pretrained backbone fine-tuned end to end:

* **images**: EfficientNet-Lite0 (ImageNet-1k, 4.65M parameters,
  :func:`weightspace.models.efficientnet_lite0`) on MNIST, Fashion-MNIST, the 8x8 digits and
  the Tux Paint stamps' category (16 folders), all at 32x32 pixels;
* **text**: all-MiniLM-L6-v2 (22.7M parameters, :func:`weightspace.models.minilm`) on the
  stamps' category from the English caption, the language of a caption (eight Romance and
  Germanic languages) and, when the ITDI 2022 folder is given (``--itdi``; research use only,
  read in place and never copied), the language or dialect of Italy of a sentence.

Each task first gets a linear head fitted on the pretrained backbone's features (a linear
probe); the head is then frozen and the whole backbone is fine-tuned through it, as Ilharco et
al. freeze CLIP's zero-shot heads, so that every vector lives in one space and the pretrained
model with the task's head is the natural "before". Merges act on the backbone only; each task
reads the merged backbone through its own head. Every merge method gets the same tuning budget
on validation data; TALL masks (one model per task) are kept apart as an oracle.

Run ``python run_pretrained_scale.py`` for the full run (3 seeds, writes
``results/pretrained_scale/``) or ``--quick`` for a smoke run (writes
``results/pretrained_scale/quick/``).
"""

from __future__ import annotations

import argparse
import copy
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

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.func import functional_call

import weightspace as ws
from weightspace import TaskVector, arithmetic, merge, report, train
from weightspace.report import markdown_to_rst

HERE = Path(__file__).resolve().parent
LANGUAGES = ("fr", "es", "it", "pt", "ca", "gl", "de", "nl")
IMAGE_TASKS = ("mnist", "fashion", "digits8x8", "stamps")
TEXT_TASKS = ("category", "language", "itdi")

# Tuning protocol: 10 validation configurations for every merge method with a hyperparameter,
# 1 for weight averaging (none); the random control gets task arithmetic's budget.
TA_GRID = tuple(round(0.1 * i, 1) for i in range(1, 11))
TIES_DENSITIES = (0.2, 0.5)  # x 5 scales
TIES_SCALES = (0.5, 1.0, 1.5, 2.0, 3.0)
TALL_LAMBDAS = (0.2, 0.5)  # x 5 scales (oracle)
TALL_SCALES = (0.2, 0.4, 0.6, 0.8, 1.0)
NEG_GRID = (0.0, 0.5, 1.0, 1.5, 2.0)
SINGLE = ("average", "task_arithmetic", "ties")
ORACLE = ("tall_masks",)
CONTROL = ("random",)


@dataclass
class Config:
    """Sizes of one run."""

    seeds: tuple[int, ...]
    size: int = 48  # image side, pixels (at 32 the pooled features are nearly all zero)
    n_train: int = 400  # training examples per task (fewer where the set is smaller)
    n_head: int = 100  # examples of the linear head (the "zero-shot" head's stand-in)
    n_val: int = 100  # validation examples per task (every choice of the study)
    n_test: int = 300
    image_epochs: int = 3
    image_batch: int = 32
    image_lr: float = 3e-5
    text_train: int = 240
    text_val: int = 32
    text_test: int = 100
    text_epochs: int = 2
    text_batch: int = 16
    text_lr: float = 5e-5
    max_len: int = 32  # tokens
    stride: int = 1  # every k-th value of the tuning grids (quick mode only)
    itdi: Path | None = None
    out: Path = field(default_factory=lambda: HERE / "results" / "pretrained_scale")


FULL = Config(seeds=(0, 1, 2))
QUICK = Config(
    seeds=(0,),
    n_train=96,
    n_val=32,
    n_test=48,
    image_epochs=1,
    text_train=48,
    text_val=16,
    text_test=24,
    text_epochs=1,
    max_len=16,
    stride=4,
    out=HERE / "results" / "pretrained_scale" / "quick",
)

Pair = tuple[Tensor, Tensor]


@dataclass
class TaskData:
    """One task: its modality, class names and train / validation / test pairs."""

    name: str
    modality: str  # "image" or "text"
    classes: tuple[str, ...]
    train: Pair
    val: Pair
    test: Pair
    head: Pair  # a few labelled examples, disjoint from the others, for the linear head


# %%
# Data: four image tasks and up to three text tasks, all offline
# --------------------------------------------------------------


def to_rgb(images: Tensor, size: int) -> Tensor:
    """uint8 ``[N, C, H, W]`` -> float RGB at ``size`` px, in [-1, 1] (the Lite weights' range)."""
    x = images.float() / 255.0
    if x.shape[1] == 1:
        x = x.expand(-1, 3, -1, -1)
    if x.shape[-1] != size:
        x = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False)
    return (x - 0.5) / 0.5


def take(x: Any, y: Tensor, index: Tensor) -> Pair:
    return x[index], y[index]


def stamp_split(names: Sequence[str]) -> dict[str, str]:
    """Stamp -> "train" / "val" / "test" (60 / 15 / 25 %), fixed, by stamp."""
    perm = torch.randperm(len(names), generator=torch.Generator().manual_seed(12345)).tolist()
    n_val, n_test = round(0.15 * len(names)), round(0.25 * len(names))
    out = {}
    for rank, i in enumerate(perm):
        out[names[i]] = "test" if rank < n_test else "val" if rank < n_test + n_val else "train"
    return out


def image_tasks(cfg: Config) -> dict[str, TaskData]:
    out: dict[str, TaskData] = {}
    for name, loader in (("mnist", ws.data.mnist), ("fashion", ws.data.fashion_mnist)):
        tr, te = loader("train"), loader("test")
        # training images from the start of the set, validation from its end
        x, y = tr.images, tr.targets
        n = len(y)
        out[name] = TaskData(
            name,
            "image",
            tuple(str(c) for c in range(10)),
            (to_rgb(x[: cfg.n_train], cfg.size), y[: cfg.n_train]),
            (to_rgb(x[n - cfg.n_val :], cfg.size), y[n - cfg.n_val :]),
            (to_rgb(te.images[: cfg.n_test], cfg.size), te.targets[: cfg.n_test]),
            (
                to_rgb(x[cfg.n_train : cfg.n_train + cfg.n_head], cfg.size),
                y[cfg.n_train : cfg.n_train + cfg.n_head],
            ),
        )
    tr, te = ws.data.digits("train"), ws.data.digits("test")
    n_val = min(cfg.n_val, 300)
    out["digits8x8"] = TaskData(
        "digits8x8",
        "image",
        tuple(str(c) for c in range(10)),
        (to_rgb(tr.images[: cfg.n_train], cfg.size), tr.targets[: cfg.n_train]),
        (to_rgb(tr.images[-n_val:], cfg.size), tr.targets[-n_val:]),
        (to_rgb(te.images[: cfg.n_test], cfg.size), te.targets[: cfg.n_test]),
        (
            to_rgb(tr.images[cfg.n_train : cfg.n_train + cfg.n_head], cfg.size),
            tr.targets[cfg.n_train : cfg.n_train + cfg.n_head],
        ),
    )
    stamps = ws.games.stamp_images(size=cfg.size)
    cats = tuple(sorted({n.split("/")[0] for n in stamps.names}))
    where = stamp_split(stamps.names)
    y = torch.tensor([cats.index(n.split("/")[0]) for n in stamps.names])
    parts = {
        s: torch.tensor([i for i, n in enumerate(stamps.names) if where[n] == s])
        for s in ("train", "val", "test")
    }
    gen = torch.Generator().manual_seed(12345)  # shuffled: the listing is sorted by folder
    parts = {k: v[torch.randperm(len(v), generator=gen)] for k, v in parts.items()}
    parts["head"], parts["train"] = parts["train"][: cfg.n_head], parts["train"][cfg.n_head :]
    limits = {"train": cfg.n_train, "val": cfg.n_val, "test": cfg.n_test, "head": cfg.n_head}
    x = to_rgb(stamps.images, cfg.size)
    out["stamps"] = TaskData(
        "stamps", "image", cats, *(take(x, y, parts[s][: limits[s]]) for s in parts)
    )
    return out


def caption_lines(root: Path) -> list[tuple[str, dict[str, str]]]:
    """(stamp, {language: caption}) for every captioned PNG stamp; English under "en"."""
    found = []
    for png in sorted(root.rglob("*.png")):
        txt = png.with_suffix(".txt")
        if png.name.endswith("_mirror.png") or not txt.exists():
            continue
        lines = txt.read_text(encoding="utf-8", errors="replace").splitlines()
        if not lines or "=" in lines[0].split(" ", 1)[0]:
            continue
        caps = {"en": lines[0].strip()}
        for line in lines[1:]:
            key, sep, text = line.partition("=")
            if sep and key.endswith(".utf8") and text.strip():
                caps[key[: -len(".utf8")]] = text.strip()
        found.append((png.relative_to(root).with_suffix("").as_posix(), caps))
    return found


def text_tasks(cfg: Config, tokenizer: Any) -> dict[str, TaskData]:
    def encode(texts: Sequence[str]) -> Tensor:
        ids: Tensor = tokenizer(
            list(texts),
            padding=True,
            truncation=True,
            max_length=cfg.max_len,
            return_tensors="pt",
        )["input_ids"]
        return ids

    limits = {"train": cfg.text_train, "val": cfg.text_val, "test": cfg.text_test}
    n_head = cfg.n_head // 2
    captions = caption_lines(Path("/usr/share/tuxpaint/stamps"))
    where = stamp_split([n for n, _ in captions])
    cats = tuple(sorted({n.split("/")[0] for n, _ in captions}))
    out: dict[str, TaskData] = {}

    def build(
        name: str, classes: tuple[str, ...], rows: Mapping[str, list[tuple[str, int]]]
    ) -> None:
        pairs = []
        for s in ("train", "val", "test", "head"):
            items = rows["train" if s == "head" else s]
            order = torch.randperm(len(items), generator=torch.Generator().manual_seed(7))
            if s == "train":
                chosen = [items[i] for i in order[n_head : n_head + limits[s]].tolist()]
            elif s == "head":
                chosen = [items[i] for i in order[:n_head].tolist()]
            else:
                chosen = [items[i] for i in order[: limits[s]].tolist()]
            pairs.append((encode([t for t, _ in chosen]), torch.tensor([c for _, c in chosen])))
        out[name] = TaskData(name, "text", classes, *pairs)

    rows: dict[str, list[tuple[str, int]]] = {"train": [], "val": [], "test": []}
    for n, caps in captions:
        rows[where[n]].append((caps["en"], cats.index(n.split("/")[0])))
    build("category", cats, rows)
    rows = {"train": [], "val": [], "test": []}
    for n, caps in captions:
        for k, lang in enumerate(LANGUAGES):
            if lang in caps:
                rows[where[n]].append((caps[lang], k))
    build("language", LANGUAGES, rows)
    if cfg.itdi is not None and (cfg.itdi / "dev.tsv").exists():
        lines = (cfg.itdi / "dev.tsv").read_text(encoding="utf-8").splitlines()
        pairs = [line.split("\t", 1) for line in lines if "\t" in line]
        labels = tuple(sorted({lab for lab, _ in pairs}))
        perm = torch.randperm(len(pairs), generator=torch.Generator().manual_seed(12345)).tolist()
        n_val, n_test = len(pairs) // 8, len(pairs) // 4
        rows = {"train": [], "val": [], "test": []}
        for rank, i in enumerate(perm):
            s = "test" if rank < n_test else "val" if rank < n_test + n_val else "train"
            rows[s].append((pairs[i][1], labels.index(pairs[i][0])))
        build("itdi", labels, rows)
    return out


# %%
# Backbones, frozen heads and end-to-end fine-tuning
# --------------------------------------------------


class ImageBackbone(nn.Module):
    """EfficientNet-Lite0 up to its pooled 1280 features; batch-norm statistics stay frozen
    (fine-tuning updates every weight, not the running statistics)."""

    def __init__(self) -> None:
        super().__init__()
        self.net = ws.models.efficientnet_lite0()

    def forward(self, x: Tensor) -> Tensor:
        out: Tensor = self.net.forward_head(self.net.forward_features(x), pre_logits=True)
        return out

    def train(self, mode: bool = True) -> ImageBackbone:
        super().train(mode)
        for m in self.modules():
            if isinstance(m, nn.modules.batchnorm._BatchNorm):
                m.eval()
        return self


class TextBackbone(nn.Module):
    """MiniLM with mean pooling and L2 normalisation (the sentence embedding)."""

    def __init__(self) -> None:
        super().__init__()
        self.encoder = ws.models.minilm()

    def forward(self, ids: Tensor) -> Tensor:
        out: Tensor = self.encoder(ids, (ids != 0).long())
        return out


class Classifier(nn.Module):
    def __init__(self, backbone: nn.Module, head: nn.Linear) -> None:
        super().__init__()
        self.backbone = backbone
        self.head = head

    def forward(self, x: Tensor) -> Tensor:
        out: Tensor = self.head(self.backbone(x))
        return out


def params_of(backbone: nn.Module) -> dict[str, Tensor]:
    """The backbone's parameters that fine-tuning moves (not the unused ImageNet classifier)."""
    return {
        k: v.detach().clone()
        for k, v in backbone.named_parameters()
        if not k.startswith("net.classifier.")
    }


@torch.no_grad()
def embed(backbone: nn.Module, state: Mapping[str, Tensor] | None, x: Tensor, bs: int) -> Tensor:
    outs = []
    for xb in x.split(bs):
        if state is None:
            outs.append(backbone(xb))
        else:
            outs.append(functional_call(backbone, dict(state), (xb,)))
    return torch.cat(outs)


def linear_probe(feats: Tensor, y: Tensor, n_classes: int, seed: int) -> nn.Linear:
    torch.manual_seed(seed)
    head = nn.Linear(feats.shape[1], n_classes)
    train.fit_(head, (feats, y), epochs=100, batch_size=32, lr=1e-2, seed=seed)
    for p in head.parameters():
        p.requires_grad_(False)
    return head.eval()


def finetune(
    backbone: nn.Module, head: nn.Linear, data: Pair, epochs: int, batch: int, lr: float, seed: int
) -> dict[str, Tensor]:
    model = Classifier(copy.deepcopy(backbone), head)
    torch.manual_seed(seed)
    train.fit_(model, data, epochs=epochs, batch_size=batch, lr=lr, seed=seed)
    model.eval()
    return params_of(model.backbone)


def make_task(backbone: nn.Module, head: nn.Linear, data: TaskData, bs: int) -> arithmetic.Task:
    def score(pair: Pair) -> Callable[[Mapping[str, Tensor]], float]:
        def fn(state: Mapping[str, Tensor]) -> float:
            feats = embed(backbone, state, pair[0], bs)
            return float((head(feats).argmax(1) == pair[1]).float().mean())

        return fn

    return arithmetic.Task(data.name, validate=score(data.val), test=score(data.test))


# %%
# Merges with one tuning budget, the random control and the TALL-mask oracle
# --------------------------------------------------------------------------


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
    return merge.task_arithmetic([random_like(v, 1000 * seed + i) for i, v in enumerate(vectors)])


def tall(vectors: Sequence[TaskVector], *, lambdas: float) -> list[TaskVector]:
    merged = merge.task_arithmetic(vectors).materialize()
    return [merged.masked(m) for m in merge.tall_masks(vectors, lambdas=lambdas, merged=merged)]


def merge_methods(seed: int, stride: int = 1) -> dict[str, arithmetic.Method]:
    """Every configuration of the budget, named ``family`` or ``family@value``."""
    method = arithmetic.Method
    out = {
        "average": method(merge.mean, grid=(1.0,)),
        "task_arithmetic": method(merge.task_arithmetic, grid=TA_GRID[::stride]),
        "random": method(partial(random_sum, seed=seed), grid=TA_GRID[::stride]),
    }
    for d in TIES_DENSITIES:
        out[f"ties@{d}"] = method(partial(merge.ties, density=d), grid=TIES_SCALES[::stride])
    for lam in TALL_LAMBDAS:
        out[f"tall_masks@{lam}"] = method(partial(tall, lambdas=lam), grid=TALL_SCALES[::stride])
    return out


def tuned(res: arithmetic.AdditionResult) -> dict[str, dict[str, Any]]:
    """Per family, the configuration with the best validation score (first on ties)."""
    best: dict[str, tuple[float | None, arithmetic.MethodRow]] = {}
    for name, row in res.rows.items():
        family, _, value = name.partition("@")
        if family in best and not row.validation > best[family][1].validation:
            continue
        best[family] = (float(value) if value else None, row)
    return {
        k: {
            "hyper": v,
            "scale": row.scale,
            "scores": dict(row.scores),
            "normalized": dict(row.normalized),
            "normalized_mean": row.normalized_mean,
        }
        for k, (v, row) in best.items()
    }


# %%
# One seed: probes, fine-tuning, negation and addition per modality
# -----------------------------------------------------------------


def run_modality(
    cfg: Config,
    modality: str,
    backbone: nn.Module,
    data: Mapping[str, TaskData],
    seed: int,
    log: Callable[[str], None],
) -> dict[str, Any]:
    image = modality == "image"
    bs = 256 if image else 64
    epochs = cfg.image_epochs if image else cfg.text_epochs
    batch = cfg.image_batch if image else cfg.text_batch
    lr = cfg.image_lr if image else cfg.text_lr
    backbone.eval()
    base = {k: v.detach().clone() for k, v in backbone.state_dict().items()}
    heads, vectors, tasks, steps = {}, {}, {}, {}
    t0 = time.perf_counter()
    for i, (name, d) in enumerate(data.items()):
        feats = embed(backbone, None, d.head[0], bs)
        heads[name] = linear_probe(feats, d.head[1], len(d.classes), 100 * seed + i)
        ft = finetune(backbone, heads[name], d.train, epochs, batch, lr, 100 * seed + i)
        vectors[name] = TaskVector.from_models(
            base={k: base[k] for k in ft}, finetuned=ft
        ).materialize()
        steps[name] = epochs * math.ceil(len(d.train[1]) / batch)
        tasks[name] = make_task(backbone, heads[name], d, bs)
        log(f"    {name}: fine-tuned ({steps[name]} steps)")
    t_ft = time.perf_counter() - t0
    names = list(data)
    out: dict[str, Any] = {
        "tasks": {
            n: {
                "classes": len(data[n].classes),
                "head": len(data[n].head[1]),
                "train": len(data[n].train[1]),
                "val": len(data[n].val[1]),
                "test": len(data[n].test[1]),
                "steps": steps[n],
                "vector_norm": vectors[n].norm(),
            }
            for n in names
        },
        "cosines": {
            f"{a}|{b}": vectors[a].cosine(vectors[b])
            for i, a in enumerate(names)
            for b in names[i + 1 :]
        },
        "negation": {},
    }
    t0 = time.perf_counter()
    for k, name in enumerate(names):
        res = arithmetic.forget(
            base,
            vectors[name],
            target=tasks[name],
            control=[tasks[o] for o in names if o != name],
            grid=NEG_GRID[:: max(1, cfg.stride // 2)],
            seed=1000 * seed + k,
        )
        out["negation"][name] = res.to_dict()
    t_neg = time.perf_counter() - t0
    log("    negation done")
    t0 = time.perf_counter()
    res = arithmetic.add(base, vectors, tasks, methods=merge_methods(seed, cfg.stride))
    out["addition"] = tuned(res)
    out["seconds"] = {
        "finetune": t_ft,
        "negation": t_neg,
        "addition": time.perf_counter() - t0,
    }
    log("    addition done")
    return out


def run_seed(
    cfg: Config,
    seed: int,
    log: Callable[[str], None],
    modalities: Sequence[str] = ("image", "text"),
) -> dict[str, Any]:
    out: dict[str, Any] = {"seed": seed}
    if "image" in modalities:
        log(f"seed {seed}: images")
        torch.manual_seed(seed)
        out["image"] = run_modality(cfg, "image", ImageBackbone(), image_tasks(cfg), seed, log)
    if "text" in modalities:
        log(f"seed {seed}: text")
        torch.manual_seed(seed)
        text = TextBackbone()
        out["text"] = run_modality(
            cfg, "text", text, text_tasks(cfg, text.encoder.tokenizer), seed, log
        )
    return out


# %%
# Tables: mean ± 95 % interval over seeds, per-seed values in an appendix
# -----------------------------------------------------------------------


def cell(values: Sequence[float], pct: bool = True, digits: int = 1) -> str:
    s = report.summarize(list(values))
    f = 100.0 if pct else 1.0
    if s.n < 2:
        return f"{s.mean * f:.{digits}f}"
    return f"{s.mean * f:.{digits}f} ± {s.half_width * f:.{digits}f}"


def md(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines) + "\n"


LABELS = {
    "pretrained": "pretrained backbone + probe head",
    "finetuned": "fine-tuned, each task its own model",
    "average": "weight averaging",
    "task_arithmetic": "task arithmetic",
    "ties": "TIES",
    "random": "random vectors, same norms (control)",
    "tall_masks": "TALL masks (oracle)",
}


def tables(runs: Sequence[Mapping[str, Any]]) -> str:
    """The Markdown tables of the report section, from the saved per-seed results."""
    n = len(runs)
    parts = [
        f"Mean ± half-width of the 95 % Student-t interval over {n} seed(s); accuracies in %.\n"
    ]
    for mod, title in (("image", "EfficientNet-Lite0"), ("text", "MiniLM")):
        first = runs[0][mod]
        names = list(first["tasks"])
        parts.append(f"### Pretrained scale, {title}: tasks\n")
        rows = [
            [
                t,
                first["tasks"][t]["classes"],
                f"{first['tasks'][t]['head']} / {first['tasks'][t]['train']} / "
                f"{first['tasks'][t]['val']} / {first['tasks'][t]['test']}",
                first["tasks"][t]["steps"],
                cell([r[mod]["tasks"][t]["vector_norm"] for r in runs], False, 2),
            ]
            for t in names
        ]
        parts.append(
            md(
                [
                    "task",
                    "classes",
                    "head / fine-tuning / val / test examples",
                    "fine-tuning steps",
                    "vector norm",
                ],
                rows,
            )
        )
        parts.append(f"### Pretrained scale, {title}: forgetting by negation\n")
        rows = []
        for t in names:

            def neg(key: str, who: str, t: str = t, mod: str = mod) -> list[float]:
                return [r[mod]["negation"][t][key][who] for r in runs]

            def controls(
                r: Mapping[str, Any], which: str, edited: str, t: str = t, mod: str = mod
            ) -> float:
                e = r[mod]["negation"][t]
                src = e[which] if which == "random" else e["control"]
                keys = list(e["control"])
                return statistics.fmean(src[k][edited] for k in keys)

            rows.append(
                [
                    t,
                    cell(neg("target", "pretrained")),
                    cell(neg("target", "finetuned")),
                    cell(neg("target", "edited")),
                    cell([r[mod]["negation"][t]["scale"] for r in runs], False, 2),
                    cell([controls(r, "control", "pretrained") for r in runs]),
                    cell([controls(r, "control", "edited") for r in runs]),
                    cell([r[mod]["negation"][t]["random"][t]["edited"] for r in runs]),
                    cell([controls(r, "random", "edited") for r in runs]),
                ]
            )
        parts.append(
            md(
                [
                    "target",
                    "target: pretrained",
                    "fine-tuned",
                    "negated vector",
                    "scale",
                    "controls: pretrained",
                    "controls after negation",
                    "target after a negated random vector",
                    "controls after it",
                ],
                rows,
            )
        )
        parts.append(f"### Pretrained scale, {title}: adding the task vectors\n")
        rows = []
        for m in ("pretrained", "finetuned", *SINGLE, *CONTROL, *ORACLE):
            rows.append(
                [
                    LABELS[m],
                    *(cell([r[mod]["addition"][m]["scores"][t] for r in runs]) for t in names),
                    cell([r[mod]["addition"][m]["normalized_mean"] for r in runs]),
                ]
            )
        parts.append(md(["model", *names, "normalised accuracy (mean)"], rows))
        parts.append(f"### Pretrained scale, {title}: per-seed values\n")
        rows = []
        for m in (*SINGLE, *CONTROL, *ORACLE):
            a = runs[0][mod]["addition"][m]
            rows.append(
                [
                    f"{LABELS[m]}: normalised accuracy",
                    ", ".join(f"{r[mod]['addition'][m]['normalized_mean']:.3f}" for r in runs),
                ]
            )
            if a["scale"] is not None and m != "average":
                rows.append(
                    [
                        f"{LABELS[m]}: chosen scale"
                        + (", value" if a["hyper"] is not None else ""),
                        ", ".join(
                            f"{r[mod]['addition'][m]['scale']:g}"
                            + (
                                f" ({r[mod]['addition'][m]['hyper']:g})"
                                if r[mod]["addition"][m]["hyper"] is not None
                                else ""
                            )
                            for r in runs
                        ),
                    ]
                )
        for t in names:
            rows.append(
                [
                    f"negation of {t}: target after / scale",
                    ", ".join(
                        f"{r[mod]['negation'][t]['target']['edited']:.3f} / "
                        f"{r[mod]['negation'][t]['scale']:g}"
                        for r in runs
                    ),
                ]
            )
        cos = runs[0][mod]["cosines"]
        for pair in cos:
            rows.append(
                [
                    f"cosine {pair.replace('|', ' / ')}",
                    ", ".join(f"{r[mod]['cosines'][pair]:.3f}" for r in runs),
                ]
            )
        parts.append(md(["quantity", "seeds " + ", ".join(str(r["seed"]) for r in runs)], rows))
    return "\n".join(parts)


def rounded(obj: Any, digits: int = 5) -> Any:
    if isinstance(obj, float):
        return round(obj, digits)
    if isinstance(obj, Mapping):
        return {str(k): rounded(v, digits) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [rounded(v, digits) for v in obj]
    return obj


def write_tables(runs: Sequence[Mapping[str, Any]], out: Path) -> None:
    text = tables(runs)
    (out / "tables.md").write_text(text, encoding="utf-8")
    (out / "tables.rst").write_text(markdown_to_rst(text), encoding="utf-8")


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=(__doc__ or "").strip().split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="tiny smoke run")
    parser.add_argument("--seeds", type=int, default=None, help="number of seeds (0, 1, ...)")
    parser.add_argument("--out", type=Path, default=None, help="results folder")
    parser.add_argument(
        "--itdi",
        type=Path,
        default=None,
        help="folder of the ITDI 2022 data (dev.tsv), read in place; research use only",
    )
    parser.add_argument("--retable", action="store_true", help="rewrite tables from results")
    parser.add_argument(
        "--seed",
        type=int,
        default=None,
        help="run this seed only, into seed_N.json (see --combine)",
    )
    parser.add_argument(
        "--modality",
        choices=("image", "text", "both"),
        default="both",
        help="with --seed: run one modality only (seed_N_MODALITY.json)",
    )
    parser.add_argument(
        "--combine", action="store_true", help="combine the seed_N*.json files of --out"
    )
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    cfg = QUICK if args.quick else FULL
    if args.seeds is not None:
        cfg = replace(cfg, seeds=tuple(range(args.seeds)))
    if args.itdi is not None:
        cfg = replace(cfg, itdi=args.itdi)
    out = args.out or cfg.out
    out.mkdir(parents=True, exist_ok=True)
    if args.retable:
        saved: dict[str, Any] = json.loads((out / "results.json").read_text())
        write_tables(saved["runs"], out)
        return saved
    start = time.perf_counter()
    load = [round(v, 2) for v in os.getloadavg()]

    def log(msg: str) -> None:
        print(f"[{time.perf_counter() - start:7.1f}s] {msg}", flush=True)

    log(f"load average {load}")
    if args.seed is not None:  # one seed per process; --combine writes the results
        mods = ("image", "text") if args.modality == "both" else (args.modality,)
        one = run_seed(cfg, args.seed, log, mods)
        one["load_average"] = {"start": load, "end": [round(v, 2) for v in os.getloadavg()]}
        one["seconds"] = time.perf_counter() - start
        suffix = "" if args.modality == "both" else f"_{args.modality}"
        (out / f"seed_{args.seed}{suffix}.json").write_text(json.dumps(rounded(one)))
        return one
    if args.combine:
        by_seed: dict[int, dict[str, Any]] = {}
        for f in sorted(out.glob("seed_*.json")):
            part = json.loads(f.read_text())
            run = by_seed.setdefault(int(part["seed"]), {"seed": part["seed"], "seconds": 0.0})
            run.update({k: v for k, v in part.items() if k in ("image", "text")})
            run["seconds"] += part.get("seconds", 0.0)
        runs = [by_seed[k] for k in sorted(by_seed)]
    else:
        runs = [run_seed(cfg, seed, log) for seed in cfg.seeds]
    config = asdict(cfg)
    config["out"] = str(out.relative_to(HERE)) if out.is_relative_to(HERE) else str(out)
    config["itdi"] = None if cfg.itdi is None else "ITDI 2022 dev.tsv (read in place)"
    results = {
        "mode": "quick" if args.quick else "full",
        "config": config,
        "tuning": {
            "task_arithmetic": {"scale": TA_GRID},
            "ties": {"density": TIES_DENSITIES, "scale": TIES_SCALES},
            "tall_masks": {"lambda": TALL_LAMBDAS, "scale": TALL_SCALES},
            "average": {"scale": (1.0,)},
            "random": {"scale": TA_GRID},
            "negation": {"scale": NEG_GRID, "keep": 0.95},
            "stride": cfg.stride,
        },
        "runs": runs,
        "seconds": (
            sum(r.get("seconds", 0.0) for r in runs)
            if args.combine
            else time.perf_counter() - start
        ),
        "seconds_note": "sum over the seed processes" if args.combine else "one process",
        "load_average": {"start": load, "end": [round(v, 2) for v in os.getloadavg()]},
        "torch": torch.__version__,
    }
    (out / "results.json").write_text(json.dumps(rounded(results), separators=(",", ":")))
    saved = json.loads((out / "results.json").read_text())
    write_tables(saved["runs"], out)
    log(f"done in {results['seconds']:.0f}s, results in {out}")
    return results


if __name__ == "__main__":
    main()
