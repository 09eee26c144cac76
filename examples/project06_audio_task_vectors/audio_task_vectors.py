"""
Task arithmetic on audio: forget, add and analogise
===================================================

The three edits of Ilharco et al. ("Editing Models with Task Arithmetic", ICLR 2023,
arXiv:2212.04089) on a small log-mel CNN for audio. The CNN is pretrained to recognise 30
English words spoken by the 32 synthetic speakers of :func:`weightspace.data.spoken_words`;
copies of it are fine-tuned on seven tasks, three of them on real recordings:

* ``language``: which language a recorded caption of a Tux Paint stamp is spoken in (six
  languages, :func:`weightspace.data.stamp_captions`, split by stamp);
* ``instrument``: the category of a Sonic Pi sample (tabla, bass drum, ambient...,
  :func:`weightspace.data.sonic_pi_samples`, split by file);
* ``effects``: whether a Tux Paint sound effect is a bird, a mammal or something else
  (:func:`weightspace.data.sound_effects`, split by stamp);
* ``digits`` / ``commands``: the ten digit words / ten command words spoken by English voices
  (held-out speakers in validation and test);
* ``digits_accented`` / ``commands_accented``: the same words read by espeak-ng voices of six
  other languages (German, French, Spanish, Italian, Polish, Dutch), a strong accent.

Every task has its own head, fixed before fine-tuning: class prototypes, the mean pretrained
embedding of three training clips per class (the accented tasks reuse the English heads).
Fine-tuning trains the shared trunk only, and a task vector covers exactly that trunk (the
convolutions, their GroupNorms and the embedding layer; :mod:`weightspace.select`). Then, with
:mod:`weightspace.arithmetic`: negation forgets ``language`` (and ``instrument``) while the
pretraining task and ``digits`` are controls; addition merges five vectors with task
arithmetic, TIES, TALL masks and Consensus against weight averaging; and the analogy
``digits : digits_accented :: commands : commands_accented`` builds a vector for accented
commands from three others, without training on them.

Run ``python audio_task_vectors.py`` for the full study (three seeds, one thread: 13 minutes on
a busy two-core machine; it writes ``results/``) or ``python audio_task_vectors.py --quick``
for a smoke run (it writes ``results/quick/``, never the full results).
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import random
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

import weightspace as ws
from weightspace import TaskVector, arithmetic, report, select, train

HERE = Path(__file__).resolve().parent
PRETRAIN_WORDS = (
    "cat", "dog", "bird", "fish", "horse", "house", "tree", "water", "fire", "stone",
    "red", "green", "blue", "yellow", "black", "white", "apple", "bread", "milk", "river",
    "mountain", "window", "table", "chair", "paper", "music", "happy", "little", "morning",
    "winter",
)  # fmt: skip
LANGUAGES = ("bg", "ca", "el", "es", "fr", "ru")
INSTRUMENTS = ("ambi", "bass", "bd", "drum", "elec", "loop", "tabla")
EFFECT_CLASSES = ("bird", "mammal", "other")
ACCENTS = ("de", "fr-fr", "es", "it", "pl", "nl")
ACCENT_VARIANTS = (("m1", 1.0, 1.0), ("m3", 0.9, 1.05), ("f1", 1.0, 0.95), ("f3", 1.1, 1.0))
ADDED = ("language", "instrument", "effects", "digits", "commands")
SAME_HEAD = {"digits_accented": "digits", "commands_accented": "commands"}


@dataclass
class Config:
    """Sizes of one run: the full study or the quick smoke run."""

    seeds: tuple[int, ...]
    pretrain_speakers: int  # of the 32 default speakers (English voices)
    pretrain_words: int  # of PRETRAIN_WORDS
    pretrain_clips: int  # clips per (speaker, word)
    pretrain_epochs: int
    word_clips: int  # clips per (speaker, word) of the digit and command tasks
    english_speakers: int
    accents: int  # accented languages, four voices each
    languages: tuple[str, ...]
    stamp_categories: tuple[str, ...] | None  # None: every stamp
    instruments: tuple[str, ...]
    per_class: tuple[int, int, int]  # caps of clips per class: train, validation, test
    shots: int  # clips per class that make a task's prototype head
    finetune_steps: int  # optimisation steps of each fine-tuning (batches of 32)
    grid: tuple[float, ...]
    out: Path = field(default_factory=lambda: HERE / "results")


FULL = Config(
    seeds=(0, 1, 2),
    pretrain_speakers=32,
    pretrain_words=30,
    pretrain_clips=3,
    pretrain_epochs=12,
    word_clips=3,
    english_speakers=32,
    accents=6,
    languages=LANGUAGES,
    stamp_categories=None,
    instruments=INSTRUMENTS,
    per_class=(300, 50, 120),
    shots=3,
    finetune_steps=240,
    grid=arithmetic.DEFAULT_GRID,
)
QUICK = Config(
    seeds=(0,),
    pretrain_speakers=8,
    pretrain_words=10,
    pretrain_clips=1,
    pretrain_epochs=6,
    word_clips=1,
    english_speakers=8,
    accents=2,
    languages=("es", "fr", "ru"),
    stamp_categories=("animals/birds", "animals/mammals/dogs", "food"),
    instruments=("bd", "elec", "tabla"),
    per_class=(40, 12, 20),
    shots=3,
    finetune_steps=40,
    grid=(0.0, 0.25, 0.5, 0.75, 1.0),
    out=HERE / "results" / "quick",  # never over the committed full-mode results
)

Pair = tuple[Tensor, Tensor]


# %%
# Features and model
# ------------------
# 32 log-mel bands every 20 ms (25 ms windows would do as well), each clip standardised to
# zero mean and unit variance so that recording levels do not matter.


class LogMel:
    """Waveforms ``[N, T]`` at 16 kHz -> standardised log-mel images ``[N, 1, 32, frames]``."""

    def __init__(self) -> None:
        self.mel = ws.audio.LogMel(
            sample_rate=16000, n_fft=512, hop_length=320, n_mels=32, f_min=40.0, standardize=True
        )

    @torch.no_grad()
    def __call__(self, waves: Tensor) -> Tensor:
        return torch.cat([self.mel(chunk).unsqueeze(1) for chunk in waves.split(256)])


def block(c_in: int, c_out: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(c_in, c_out, 3, padding=1), nn.GroupNorm(4, c_out), nn.ReLU(), nn.MaxPool2d(2)
    )


class AudioNet(nn.Module):
    """A log-mel CNN: a shared trunk (4 conv blocks + a 128-d embedding) and one head per task."""

    def __init__(self, embed: int = 128) -> None:
        super().__init__()
        self.trunk = nn.Sequential(
            block(1, 16),
            block(16, 32),
            block(32, 64),
            block(64, 96),
            nn.AdaptiveAvgPool2d(1),
            nn.Flatten(),
            nn.Linear(96, embed),
            nn.ReLU(),
        )
        self.heads = nn.ModuleDict()
        self.embed = embed

    def forward(self, x: Tensor, task: str) -> Tensor:
        return self.heads[task](self.trunk(x))


class TaskView(nn.Module):
    """``AudioNet`` seen as a one-task classifier ``x -> logits`` (for :func:`train.fit_`)."""

    def __init__(self, net: AudioNet, task: str) -> None:
        super().__init__()
        self.net, self.task = net, task

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x, self.task)


@torch.no_grad()
def embed(net: AudioNet, x: Tensor) -> Tensor:
    net.eval()
    return torch.cat([net.trunk(chunk) for chunk in x.split(256)])


# %%
# Data
# ----


@dataclass
class Split:
    """One task's features and labels: train, validation and test."""

    classes: tuple[str, ...]
    train: Pair
    val: Pair
    test: Pair

    def sizes(self) -> dict[str, int]:
        return {"train": len(self.train[1]), "val": len(self.val[1]), "test": len(self.test[1])}


def cap(y: Tensor, per_class: int, seed: int) -> Tensor:
    """Indices of at most ``per_class`` examples of each label, drawn with ``seed``."""
    g = torch.Generator().manual_seed(seed)
    keep = []
    for c in y.unique().tolist():
        idx = (y == c).nonzero().squeeze(1)
        keep.append(idx[torch.randperm(len(idx), generator=g)[:per_class]])
    return torch.cat(keep).sort().values


def speaker_parts(speakers: Sequence[Any], n_val: int, n_test: int, seed: int) -> list[list[str]]:
    """Split speakers into train/val/test, drawing held-out speakers from as many voices as
    possible (each voice keeps at least one speaker for training)."""
    rng = random.Random(seed)
    by_voice: dict[str, list[str]] = {}
    for s in speakers:
        by_voice.setdefault(s.voice, []).append(s.name)
    for names in by_voice.values():
        rng.shuffle(names)
    voices = sorted(by_voice)
    rng.shuffle(voices)
    held: list[list[str]] = [[], []]
    k = 0
    for part, quota in ((0, n_val), (1, n_test)):
        tries = 0
        while len(held[part]) < quota and tries < 10 * len(voices):
            names = by_voice[voices[k % len(voices)]]
            k, tries = k + 1, tries + 1
            if len(names) > 1:
                held[part].append(names.pop())
    train_names = [n for v in sorted(by_voice) for n in by_voice[v]]
    return [train_names, held[0], held[1]]


def word_task(ds: Any, words: Sequence[str], parts: list[list[str]], feats: LogMel) -> Split:
    out = []
    for names in parts:
        sub = ds.subset(speakers=names, words=list(words))
        y = torch.tensor([list(words).index(ds.words[int(i)]) for i in sub.labels])
        out.append((feats(sub.waveforms), y))
    return Split(tuple(words), out[0], out[1], out[2])


def recordings_task(
    parts: Sequence[Any],
    labels: Callable[[Any], Tensor],
    classes: Sequence[str],
    caps: tuple[int, int, int],
    seed: int,
    feats: LogMel,
) -> Split:
    out = []
    for k, (part, per_class) in enumerate(zip(parts, caps, strict=True)):
        y = labels(part)
        keep = (y >= 0).nonzero().squeeze(1)
        keep = keep[cap(y[keep], per_class, seed * 10 + k)]
        out.append((feats(part.waveforms[keep]), y[keep]))
    return Split(tuple(classes), out[0], out[1], out[2])


def build_tasks(cfg: Config, seed: int, feats: LogMel) -> dict[str, Split]:
    """Every task of one seed: the pretraining task, the seven fine-tuning tasks."""
    from weightspace.data import COMMAND_WORDS, DIGIT_WORDS, SPEAKERS, Speaker

    tasks: dict[str, Split] = {}
    english = SPEAKERS[: cfg.pretrain_speakers]
    words = PRETRAIN_WORDS[: cfg.pretrain_words]
    ds = ws.data.spoken_words(
        words,
        speakers=[s.name for s in english],
        clips_per_speaker=cfg.pretrain_clips,
        progress=False,
    )
    n_held = max(1, len(english) // 8)
    tasks["words"] = word_task(ds, words, speaker_parts(english, n_held, n_held, seed), feats)

    english = SPEAKERS[: cfg.english_speakers]
    ds = ws.data.spoken_words(
        DIGIT_WORDS + COMMAND_WORDS,
        speakers=[s.name for s in english],
        clips_per_speaker=cfg.word_clips,
        progress=False,
    )
    n_held = max(1, len(english) * 3 // 16)
    parts = speaker_parts(english, n_held, n_held, seed + 100)
    tasks["digits"] = word_task(ds, DIGIT_WORDS, parts, feats)
    tasks["commands"] = word_task(ds, COMMAND_WORDS, parts, feats)

    accented = [
        Speaker("espeak-ng", voice, variant, pitch=p, speed=s)
        for voice in ACCENTS[: cfg.accents]
        for variant, p, s in ACCENT_VARIANTS
    ]
    ds = ws.data.spoken_words(
        DIGIT_WORDS + COMMAND_WORDS,
        speakers=accented,
        clips_per_speaker=cfg.word_clips,
        progress=False,
    )
    parts = speaker_parts(accented, cfg.accents, cfg.accents, seed + 200)
    tasks["digits_accented"] = word_task(ds, DIGIT_WORDS, parts, feats)
    tasks["commands_accented"] = word_task(ds, COMMAND_WORDS, parts, feats)

    captions = ws.data.stamp_captions(
        list(cfg.languages),
        categories=None if cfg.stamp_categories is None else list(cfg.stamp_categories),
        duration=1.5,
        progress=False,
    )
    tasks["language"] = recordings_task(
        captions.split((0.6, 0.2, 0.2), seed=seed),
        lambda p: p.labels,
        captions.classes,
        cfg.per_class,
        seed,
        feats,
    )

    samples = ws.data.sonic_pi_samples(
        list(cfg.instruments), hop=0.5, max_clips_per_file=4, progress=False
    )
    tasks["instrument"] = recordings_task(
        samples.split((0.6, 0.2, 0.2), seed=seed),
        lambda p: p.labels,
        samples.classes,
        cfg.per_class,
        seed,
        feats,
    )

    effects = ws.data.sound_effects(depth=2, hop=0.5, max_clips_per_file=4, progress=False)

    def effect_labels(part: Any) -> Tensor:
        def one(category: str) -> int:
            if category.startswith("animals/birds"):
                return 0
            if category.startswith("animals/mammals"):
                return 1
            return -1 if category.startswith("animals") else 2  # other animals are left out

        return torch.tensor([one(c) for c in part.category], dtype=torch.int64)

    tasks["effects"] = recordings_task(
        effects.split((0.6, 0.2, 0.2), seed=seed),
        effect_labels,
        EFFECT_CLASSES,
        cfg.per_class,
        seed,
        feats,
    )
    return tasks


# %%
# Pretraining, heads and fine-tuning
# ----------------------------------


def pretrain(cfg: Config, words: Split, seed: int) -> AudioNet:
    torch.manual_seed(seed)
    net = AudioNet()
    net.heads["words"] = nn.Linear(net.embed, len(words.classes))
    train.fit_(
        TaskView(net, "words"),
        words.train,
        epochs=cfg.pretrain_epochs,
        batch_size=64,
        lr=2e-3,
        seed=seed,
    )
    return net.eval()


class PrototypeHead(nn.Module):
    """Logits ``30 * cos(z, p_c)`` against fixed class prototypes ``p_c`` (no parameters).

    The scale plays the part of CLIP's logit scale (100): large enough that a correct
    prediction costs little loss, so fine-tuning is not pushed to sharpen every embedding.
    """

    def __init__(self, prototypes: Tensor, scale: float = 30.0) -> None:
        super().__init__()
        self.register_buffer("prototypes", F.normalize(prototypes, dim=1))
        self.scale = scale

    def forward(self, z: Tensor) -> Tensor:
        return self.scale * F.normalize(z, dim=1) @ self.prototypes.T


def fit_head(net: AudioNet, name: str, task: Split, shots: int, seed: int) -> None:
    """The task's head: mean pretrained embeddings of ``shots`` training clips per class.

    The analogue of CLIP's zero-shot head in Ilharco et al.: built from the pretrained model
    and a handful of class examples, then fixed for fine-tuning and for every edit.
    """
    x, y = task.train
    keep = cap(y, shots, seed)
    z = embed(net, x[keep])
    protos = torch.stack([z[y[keep] == c].mean(0) for c in range(len(task.classes))])
    net.heads[name] = PrototypeHead(protos)


def finetune(cfg: Config, pre: AudioNet, name: str, task: Split, seed: int) -> AudioNet:
    """Fine-tune the trunk (head fixed) for about ``cfg.finetune_steps`` steps."""
    net = copy.deepcopy(pre)
    epochs = max(1, round(cfg.finetune_steps * 32 / len(task.train[1])))
    train.fit_(
        TaskView(net, name),
        task.train,
        epochs=epochs,
        batch_size=32,
        lr=3e-4,
        seed=seed,
        trainable=["trunk"],
    )
    return net.eval()


@torch.no_grad()
def accuracy(net: AudioNet, state: Mapping[str, Tensor], task: str, data: Pair) -> float:
    x, y = data
    correct = 0
    for xb, yb in zip(x.split(256), y.split(256), strict=True):
        logits = torch.func.functional_call(net, dict(state), (xb, task))
        correct += int((logits.argmax(1) == yb).sum())
    return correct / len(y)


def make_task(net: AudioNet, name: str, data: Split) -> arithmetic.Task:
    return arithmetic.Task(
        name,
        validate=lambda sd: accuracy(net, sd, name, data.val),
        test=lambda sd: accuracy(net, sd, name, data.test),
    )


# %%
# One seed
# --------


def run_seed(cfg: Config, seed: int, feats: LogMel) -> dict[str, Any]:
    times: dict[str, float] = {}
    t0 = time.perf_counter()
    data = build_tasks(cfg, seed, feats)
    times["data"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    pre = pretrain(cfg, data["words"], seed)
    times["pretrain"] = time.perf_counter() - t0
    finetuned_names = [n for n in data if n != "words"]
    for k, name in enumerate(finetuned_names):
        if name in SAME_HEAD:  # accented words: the English words' head, no accented clip
            pre.heads[name] = copy.deepcopy(pre.heads[SAME_HEAD[name]])
        else:
            fit_head(pre, name, data[name], cfg.shots, seed * 100 + k)
    base = {k: v.clone() for k, v in pre.state_dict().items()}
    trunk = select.parameters(pre, ["trunk"])

    t0 = time.perf_counter()
    vectors: dict[str, TaskVector] = {}
    for k, name in enumerate(finetuned_names):
        ft = finetune(cfg, pre, name, data[name], seed * 100 + k)
        full = TaskVector.from_models(base=pre, finetuned=ft)
        vectors[name] = trunk.restrict(full).materialize()
    times["finetune"] = time.perf_counter() - t0
    shared = {
        "tensors": len(trunk),
        "parameters": sum(v.numel() for v in vectors["digits"].values()),
        "head_parameters": sum(p.numel() for p in pre.heads.parameters()),
        "total_parameters": sum(p.numel() for p in pre.parameters()),
    }

    tasks = {name: make_task(pre, name, data[name]) for name in data}
    per_task = {}
    for name in finetuned_names:
        per_task[name] = {
            "pretrained": tasks[name].test(base),
            "finetuned": tasks[name].test(vectors[name].apply_to(base)),
        }
    per_task["words"] = {"pretrained": tasks["words"].test(base)}

    t0 = time.perf_counter()
    forget = {
        target: arithmetic.forget(
            base,
            vectors[target],
            target=tasks[target],
            control=[tasks["words"], tasks["digits"]],
            grid=cfg.grid,
            seed=seed,
        )
        for target in ("language", "instrument")
    }
    times["forget"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    addition = arithmetic.add(
        base, {n: vectors[n] for n in ADDED}, {n: tasks[n] for n in ADDED}, grid=cfg.grid
    )
    times["add"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    analogies = {
        "commands_accented": arithmetic.analogy(
            base,
            a=vectors["digits"],
            b=vectors["digits_accented"],
            c=vectors["commands"],
            task=tasks["commands_accented"],
            reference=vectors["commands_accented"],
            grid=cfg.grid,
        ),
        "digits_accented": arithmetic.analogy(
            base,
            a=vectors["commands"],
            b=vectors["commands_accented"],
            c=vectors["digits"],
            task=tasks["digits_accented"],
            reference=vectors["digits_accented"],
            grid=cfg.grid,
        ),
    }
    times["analogy"] = time.perf_counter() - t0

    # Diagnostics of interference: each added task under its own vector plus one other, at
    # scale 1 (normalised by its fine-tuned accuracy), and where the vectors point alike.
    pairs = {
        a: {
            b: tasks[a].test((vectors[a] + vectors[b]).apply_to(base))
            / (per_task[a]["finetuned"] or math.nan)
            for b in ADDED
            if b != a
        }
        for a in ADDED
    }
    layer_cosine = {
        key: float(
            np.mean(
                [
                    float(
                        F.cosine_similarity(vectors[a][key].flatten(), vectors[b][key].flatten(), 0)
                    )
                    for i, a in enumerate(ADDED)
                    for b in ADDED[i + 1 :]
                ]
            )
        )
        for key in vectors[ADDED[0]]
    }
    layer_share = {
        key: float(
            np.mean([float(vectors[a][key].norm() ** 2 / vectors[a].norm() ** 2) for a in ADDED])
        )
        for key in vectors[ADDED[0]]
    }
    names = list(vectors)
    cosine = [[float(vectors[a].cosine(vectors[b])) for b in names] for a in names]
    norms = {n: float(vectors[n].norm()) for n in names}
    return {
        "seed": seed,
        "sizes": {n: d.sizes() for n, d in data.items()},
        "classes": {n: list(d.classes) for n, d in data.items()},
        "shared": shared,
        "per_task": per_task,
        "forget": {k: r.to_dict() for k, r in forget.items()},
        "addition": addition.to_dict(),
        "analogy": {k: r.to_dict() for k, r in analogies.items()},
        "cosine": {"names": names, "matrix": cosine},
        "norms": norms,
        "pairs": pairs,
        "layer_cosine": layer_cosine,
        "layer_share": layer_share,
        "layer_sizes": {k: int(vectors["digits"][k].numel()) for k in vectors["digits"]},
        "seconds": times,
    }


# %%
# Tables and figures
# ------------------


def stat(values: Sequence[float]) -> list[float]:
    s = report.summarize(list(values))
    return [s.mean, s.std]


def summarise(runs: list[dict[str, Any]]) -> dict[str, Any]:
    per_task = {
        name: {k: stat([r["per_task"][name][k] for r in runs]) for k in runs[0]["per_task"][name]}
        for name in runs[0]["per_task"]
    }
    forget = {
        target: {
            "scale": stat([r["forget"][target]["scale"] for r in runs]),
            "target": {
                k: stat([r["forget"][target]["target"][k] for r in runs])
                for k in ("pretrained", "finetuned", "edited")
            },
            "control": {
                c: {
                    k: stat([r["forget"][target]["control"][c][k] for r in runs])
                    for k in ("pretrained", "finetuned", "edited")
                }
                for c in runs[0]["forget"][target]["control"]
            },
            "random_target": stat([r["forget"][target]["random"][target]["edited"] for r in runs]),
        }
        for target in runs[0]["forget"]
    }
    rows = runs[0]["addition"]["rows"]
    addition = {
        m: {
            "normalized": {
                t: stat([r["addition"]["rows"][m]["normalized"][t] for r in runs])
                for t in runs[0]["addition"]["tasks"]
            },
            "normalized_mean": stat([r["addition"]["rows"][m]["normalized_mean"] for r in runs]),
            "mean": stat([r["addition"]["rows"][m]["mean"] for r in runs]),
        }
        for m in rows
    }
    analogy = {
        task: {
            k: stat([r["analogy"][task]["scores"][k] for r in runs])
            for k in runs[0]["analogy"][task]["scores"]
        }
        for task in runs[0]["analogy"]
    }
    return {"per_task": per_task, "forget": forget, "addition": addition, "analogy": analogy}


def tables(runs: Sequence[Mapping[str, Any]]) -> str:
    """``tables.md`` from the per-seed results as stored in ``results.json``."""

    def over(*path: str) -> report.Summary:
        """The summary over the seeds of ``run[path[0]][path[1]]...``."""
        values = []
        for r in runs:
            for key in path:
                r = r[key]
            values.append(r)
        return report.summarize(values)

    seeds = ", ".join(str(r["seed"]) for r in runs)
    out = [f"Mean ± std over {len(runs)} seed(s) ({seeds}).\n", "### Tasks\n"]
    first = runs[0]
    rows: list[list[report.Cell]] = []
    for name, sizes in first["sizes"].items():
        ft = "finetuned" in first["per_task"][name]
        rows.append(
            [
                name,
                len(first["classes"][name]),
                sizes["train"],
                sizes["val"],
                sizes["test"],
                over("per_task", name, "pretrained"),
                over("per_task", name, "finetuned") if ft else "(pretraining task)",
            ]
        )
    header = ["task", "classes", "train", "val", "test", "pretrained", "fine-tuned"]
    out.append(report.markdown_table(header, rows))
    for target in first["forget"]:
        out.append(f"### Forgetting by negation: {target}\n")
        results = [arithmetic.ForgetResult.from_dict(r["forget"][target]) for r in runs]
        out.append(arithmetic.table(results))
    out.append("### Addition of five task vectors (test accuracy)\n")
    out.append(arithmetic.table([arithmetic.AdditionResult.from_dict(r["addition"]) for r in runs]))
    out.append("### Addition: normalised accuracy (merged / fine-tuned)\n")
    tasks = first["addition"]["tasks"]
    rows = [
        [
            m,
            *(over("addition", "rows", m, "normalized", t) for t in tasks),
            over("addition", "rows", m, "normalized_mean"),
        ]
        for m in first["addition"]["rows"]
    ]
    out.append(report.markdown_table(["method", *tasks, "mean"], rows))
    for task in first["analogy"]:
        out.append(f"### Analogy: {task}\n")
        results = [arithmetic.AnalogyResult.from_dict(r["analogy"][task]) for r in runs]
        out.append(arithmetic.table(results))
    out.append("### Pairs: task (row) under its vector plus another (column), scale 1\n")
    out.append("Test accuracy normalised by the row task's fine-tuned accuracy.\n")
    rows = [[a, *("1" if a == b else over("pairs", a, b) for b in ADDED)] for a in ADDED]
    out.append(report.markdown_table(["task", *(f"+ {b}" for b in ADDED)], rows))
    out.append("### Where the five added vectors agree: per tensor\n")
    out.append("Mean cosine over the 10 pairs, and mean share of a vector's squared norm.\n")
    rows = [
        [
            key,
            size,
            over("layer_cosine", key),
            over("layer_share", key),
        ]
        for key, size in first["layer_sizes"].items()
    ]
    header = ["tensor", "parameters", "pairwise cosine", "share of squared norm"]
    out.append(report.markdown_table(header, rows))
    out.append("### Cosine similarity of the task vectors (seed mean)\n")
    names = first["cosine"]["names"]
    mat = np.mean([r["cosine"]["matrix"] for r in runs], axis=0)
    out.append("| | " + " | ".join(names) + " |")
    out.append("|---" * (len(names) + 1) + "|")
    for i, a in enumerate(names):
        out.append(f"| {a} | " + " | ".join(f"{mat[i, j]:.2f}" for j in range(len(names))) + " |")
    out.append("")
    return "\n".join(out)


def sd(values: np.ndarray, axis: int | None = None) -> Any:
    """Sample standard deviation over seeds (0 for a single seed), as in the tables."""
    n = values.shape[0] if axis == 0 else values.size
    return values.std(axis=axis, ddof=1) if n > 1 else values.std(axis=axis)


def figures(runs: list[dict[str, Any]], out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    # 1. Negation: validation accuracy of target and controls along lambda.
    targets = list(runs[0]["forget"])
    fig, axes = plt.subplots(1, len(targets), figsize=(5.2 * len(targets), 3.8), squeeze=False)
    for ax, target in zip(axes[0], targets, strict=True):
        for r in runs:
            curve = r["forget"][target]["curve"]
            lam = [c[0] for c in curve]
            alpha = 0.9 if r is runs[0] else 0.35
            lab = r is runs[0]
            ax.plot(lam, [c[1] for c in curve], "C3-", alpha=alpha, label=target if lab else None)
            for k, ctrl in enumerate(curve[0][2]):
                ax.plot(
                    lam,
                    [c[2][ctrl] for c in curve],
                    f"C{k}--",
                    alpha=alpha,
                    label=f"control: {ctrl}" if lab else None,
                )
            ax.axvline(r["forget"][target]["scale"], color="0.5", lw=0.8, alpha=alpha)
        ax.set_xlabel(r"$\lambda$ in $\theta_0 - \lambda\tau$")
        ax.set_ylabel("validation accuracy")
        ax.set_title(f"forgetting {target} (grey: chosen $\\lambda$)")
        ax.set_ylim(0, 1.02)
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out / "negation.png", dpi=120)
    plt.close(fig)

    # 2. Addition: normalised accuracy per task and method.
    tasks = runs[0]["addition"]["tasks"]
    methods = [m for m in runs[0]["addition"]["rows"] if m != "finetuned"]
    fig, ax = plt.subplots(figsize=(9, 3.8))
    width = 0.8 / len(methods)
    for k, m in enumerate(methods):
        vals = np.array([[r["addition"]["rows"][m]["normalized"][t] for t in tasks] for r in runs])
        xs = np.arange(len(tasks) + 1) + (k - len(methods) / 2 + 0.5) * width
        means = [*vals.mean(0), vals.mean()]
        stds = [*sd(vals, 0), sd(vals.mean(1))]
        ax.bar(xs, means, width, yerr=stds, label=m, capsize=2)
    ax.axhline(1.0, color="k", lw=0.8)
    ax.set_xticks(np.arange(len(tasks) + 1), [*tasks, "mean"])
    ax.set_ylabel("accuracy / fine-tuned accuracy")
    ax.set_title("one model for five tasks (mean ± std over seeds)")
    ax.legend(fontsize=8, ncol=3)
    fig.tight_layout()
    fig.savefig(out / "addition.png", dpi=120)
    plt.close(fig)

    # 3. Addition: the validation curves of the scaled methods.
    fig, ax = plt.subplots(figsize=(5.5, 3.8))
    for k, m in enumerate(["task_arithmetic", "ties", "tall_masks", "consensus"]):
        for r in runs:
            curve = r["addition"]["rows"][m]["curve"]
            ax.plot(
                [c[0] for c in curve],
                [c[1] for c in curve],
                f"C{k}-",
                alpha=0.9 if r is runs[0] else 0.35,
                label=m if r is runs[0] else None,
            )
    ax.set_xlabel("scale")
    ax.set_ylabel("mean normalised validation accuracy")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out / "addition_scale.png", dpi=120)
    plt.close(fig)

    # 4. Analogies.
    names = list(runs[0]["analogy"])
    keys = list(runs[0]["analogy"][names[0]]["scores"])
    fig, ax = plt.subplots(figsize=(7, 3.6))
    width = 0.8 / len(keys)
    for k, key in enumerate(keys):
        vals = np.array([[r["analogy"][n]["scores"][key] for n in names] for r in runs])
        xs = np.arange(len(names)) + (k - len(keys) / 2 + 0.5) * width
        ax.bar(xs, vals.mean(0), width, yerr=sd(vals, 0), capsize=2, label=key)
    ax.set_xticks(np.arange(len(names)), names)
    ax.set_ylabel("test accuracy")
    ax.set_ylim(0, 1)
    ax.set_title("analogy: C + (B - A), never trained on the task")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out / "analogy.png", dpi=120)
    plt.close(fig)

    # 5. Per-tensor agreement of the added vectors.
    keys = list(runs[0]["layer_cosine"])
    fig, ax = plt.subplots(figsize=(8, 3.6))
    cos = np.array([[r["layer_cosine"][k] for k in keys] for r in runs])
    share = np.array([[r["layer_share"][k] for k in keys] for r in runs])
    xs = np.arange(len(keys))
    ax.bar(xs - 0.2, cos.mean(0), 0.4, yerr=sd(cos, 0), capsize=2, label="mean pairwise cosine")
    ax.bar(xs + 0.2, share.mean(0), 0.4, yerr=sd(share, 0), capsize=2, label="share of norm²")
    ax.set_xticks(xs, [k.removeprefix("trunk.") for k in keys], rotation=60, ha="right")
    ax.set_title("where the five added task vectors point alike (per trunk tensor)")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out / "layers.png", dpi=120)
    plt.close(fig)

    # 6. Cosine similarities of the task vectors.
    labels = runs[0]["cosine"]["names"]
    mat = np.mean([r["cosine"]["matrix"] for r in runs], axis=0)
    fig, ax = plt.subplots(figsize=(5.8, 5))
    im = ax.imshow(mat, vmin=0, vmax=1, cmap="viridis")
    ax.set_xticks(range(len(labels)), labels, rotation=45, ha="right")
    ax.set_yticks(range(len(labels)), labels)
    for i in range(len(labels)):
        for j in range(len(labels)):
            ax.text(j, i, f"{mat[i, j]:.2f}", ha="center", va="center", fontsize=7, color="w")
    fig.colorbar(im, ax=ax, shrink=0.8)
    ax.set_title("cosine similarity of trunk task vectors")
    fig.tight_layout()
    fig.savefig(out / "cosine.png", dpi=120)
    plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[1])
    parser.add_argument("--quick", action="store_true", help="a smoke run in well under a minute")
    parser.add_argument("--seeds", type=int, default=None, help="number of seeds (0, 1, ...)")
    parser.add_argument("--out", type=Path, default=None, help="output folder")
    args = parser.parse_args()
    torch.set_num_threads(1)
    cfg = copy.copy(QUICK if args.quick else FULL)
    if args.seeds is not None:
        cfg.seeds = tuple(range(args.seeds))
    if args.out is not None:
        cfg.out = args.out
    cfg.out.mkdir(parents=True, exist_ok=True)

    start = time.perf_counter()
    feats = LogMel()
    runs = []
    for seed in cfg.seeds:
        t0 = time.perf_counter()
        runs.append(run_seed(cfg, seed, feats))
        print(f"seed {seed}: {time.perf_counter() - t0:.0f} s {runs[-1]['seconds']}", flush=True)
    text = tables(runs)
    figures(runs, cfg.out)
    config = {k: (str(v) if isinstance(v, Path) else v) for k, v in asdict(cfg).items()}
    result = {
        "mode": "quick" if args.quick else "full",
        "config": config,
        "seconds": time.perf_counter() - start,
        "torch_threads": torch.get_num_threads(),
        "summary": summarise(runs),
        "runs": runs,
    }
    (cfg.out / "results.json").write_text(json.dumps(result, indent=1, allow_nan=True))
    (cfg.out / "tables.md").write_text(text)
    print(text)
    print(f"total {result['seconds']:.0f} s; wrote {cfg.out}")


if __name__ == "__main__":
    main()
