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
pretraining task and ``digits`` are controls, against a random vector of the same norms
applied at scale 1 and at the chosen scale; addition merges five vectors with weight
averaging, task arithmetic, TIES and Consensus (TALL masks as an oracle), every method with
the same budget of validation configurations, and once more with vectors fine-tuned with the
embedding layer frozen; and four analogies with their mirrors, such as
``digits : digits_accented :: commands : commands_accented``, build a vector for a task from
three others, without training on it. Accuracies get hierarchical bootstrap intervals over
seeds and test clips.

Run ``python audio_task_vectors.py`` for the full study (five seeds, one thread; each
finished seed is stored in ``results/seeds/`` and a stopped run resumes there; it writes
``results/``), ``--only-seed N`` for one seed, ``--combine`` for the tables of the seeds
stored so far, or ``python audio_task_vectors.py --quick`` for a smoke run (it writes
``results/quick/``, never the full results).
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import os
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
#: Two families of accents, each a task pair of its own (for more than one analogy).
FAMILIES = {"romance": ("fr-fr", "es", "it"), "non_romance": ("de", "pl", "nl")}
SAME_HEAD = {
    f"{words}_{accent}": words
    for words in ("digits", "commands")
    for accent in ("accented", *FAMILIES)
}
#: Analogies ``(A, B, C, D)``: the vector ``C + (B - A)`` is scored on D, never trained on.
#: Each comes with its mirror (the roles of the two vocabularies swapped).
ANALOGIES = (
    ("digits", "digits_accented", "commands", "commands_accented"),
    ("commands", "commands_accented", "digits", "digits_accented"),
    ("digits", "digits_romance", "commands", "commands_romance"),
    ("commands", "commands_romance", "digits", "digits_romance"),
    ("digits", "digits_non_romance", "commands", "commands_non_romance"),
    ("commands", "commands_non_romance", "digits", "digits_non_romance"),
    ("digits_romance", "digits_non_romance", "commands_romance", "commands_non_romance"),
    ("commands_romance", "commands_non_romance", "digits_romance", "digits_non_romance"),
)
#: The ablation: fine-tuning of the added tasks with the shared embedding layer (``trunk.6``)
#: frozen, the four convolution blocks only.
ABLATION_TRAINABLE = ["trunk.0", "trunk.1", "trunk.2", "trunk.3"]

# Tuning protocol of the merges: every method with a hyperparameter gets the same budget of
# 10 configurations, each scored on validation data only (mean normalised validation
# accuracy); weight averaging has none (1 configuration). TALL masks keep one model per task
# and need the task's identity at test time: an oracle, reported apart.
TA_SCALES = tuple(round(0.1 * i, 1) for i in range(1, 11))
TIES_DENSITIES = (0.2, 0.5)  # x 5 scales (TIES merges a mean, not a sum)
TIES_SCALES = (0.5, 1.0, 1.5, 2.0, 3.0)
MASK_LAMBDAS = (0.2, 0.5)  # TALL / Consensus mask thresholds, x 5 scales
MASK_SCALES = (0.2, 0.4, 0.6, 0.8, 1.0)
SINGLE_METHODS = ("average", "task_arithmetic", "ties", "consensus")
ORACLE_METHODS = ("tall_masks",)
BOOTSTRAP = 2000  # resamples of the hierarchical bootstrap (seeds, then clips)


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
    budget_stride: int = 1  # every k-th configuration of the merges' budget (quick: 2)
    recordings_split: tuple[float, float, float] = (0.5, 0.2, 0.3)  # instrument, effects
    clips_per_file: int = 6  # windows per file of the instrument and effects tasks
    out: Path = field(default_factory=lambda: HERE / "results")


FULL = Config(
    seeds=(0, 1, 2, 3, 4),
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
    budget_stride=2,
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
    for k, (family, voices) in enumerate(FAMILIES.items()):
        members = [s for s in accented if s.voice in voices]
        n_held = max(1, len(members) // 4)
        parts = speaker_parts(members, n_held, n_held, seed + 300 + k)
        tasks[f"digits_{family}"] = word_task(ds, DIGIT_WORDS, parts, feats)
        tasks[f"commands_{family}"] = word_task(ds, COMMAND_WORDS, parts, feats)

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
        list(cfg.instruments), hop=0.5, max_clips_per_file=cfg.clips_per_file, progress=False
    )
    tasks["instrument"] = recordings_task(
        samples.split(cfg.recordings_split, seed=seed),
        lambda p: p.labels,
        samples.classes,
        cfg.per_class,
        seed,
        feats,
    )

    effects = ws.data.sound_effects(
        depth=2, hop=0.5, max_clips_per_file=cfg.clips_per_file, progress=False
    )

    def effect_labels(part: Any) -> Tensor:
        def one(category: str) -> int:
            if category.startswith("animals/birds"):
                return 0
            if category.startswith("animals/mammals"):
                return 1
            return -1 if category.startswith("animals") else 2  # other animals are left out

        return torch.tensor([one(c) for c in part.category], dtype=torch.int64)

    tasks["effects"] = recordings_task(
        effects.split(cfg.recordings_split, seed=seed),
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


def finetune(
    cfg: Config,
    pre: AudioNet,
    name: str,
    task: Split,
    seed: int,
    trainable: Sequence[str] = ("trunk",),
) -> AudioNet:
    """Fine-tune ``trainable`` (the trunk; head fixed) for about ``cfg.finetune_steps`` steps."""
    net = copy.deepcopy(pre)
    epochs = max(1, round(cfg.finetune_steps * 32 / len(task.train[1])))
    train.fit_(
        TaskView(net, name),
        task.train,
        epochs=epochs,
        batch_size=32,
        lr=3e-4,
        seed=seed,
        trainable=list(trainable),
    )
    return net.eval()


@torch.no_grad()
def correct(net: AudioNet, state: Mapping[str, Tensor], task: str, data: Pair) -> Tensor:
    """Per clip, whether the model with weights ``state`` classifies it right (bool)."""
    x, y = data
    out = []
    for xb, yb in zip(x.split(256), y.split(256), strict=True):
        logits = torch.func.functional_call(net, dict(state), (xb, task))
        out.append(logits.argmax(1) == yb)
    return torch.cat(out)


def accuracy(net: AudioNet, state: Mapping[str, Tensor], task: str, data: Pair) -> float:
    return float(correct(net, state, task, data).float().mean())


def make_task(net: AudioNet, name: str, data: Split) -> arithmetic.Task:
    return arithmetic.Task(
        name,
        validate=lambda sd: accuracy(net, sd, name, data.val),
        test=lambda sd: accuracy(net, sd, name, data.test),
    )


def bits(flags: Tensor) -> str:
    """Per-clip correctness as a string of 0s and 1s (kept in ``results.json``)."""
    return "".join("1" if f else "0" for f in flags.tolist())


# %%
# Controls and the merges' tuning budget
# --------------------------------------
# The random control of negation is a Gaussian vector with the norm of the task vector in
# every tensor, applied at scale 1 (as far from the pretrained weights as the task vector
# itself) and at the scale chosen for the task vector (as far as the edit moved): both are
# fixed in advance, so the control is never left at scale 0.


def random_like(vector: TaskVector, seed: int) -> TaskVector:
    """A Gaussian vector with, in every tensor, the norm of ``vector``'s tensor."""
    gen = torch.Generator().manual_seed(seed)
    out = {}
    for name in vector:
        t = vector[name].float()
        r = torch.randn(t.shape, generator=gen)
        out[name] = r * (t.norm() / r.norm().clamp_min(1e-12))
    return TaskVector(out)


def tall(vectors: Sequence[TaskVector], *, lambdas: float) -> list[TaskVector]:
    """Per task, the sum of the vectors under that task's TALL mask (one model per task)."""
    merged = ws.merge.task_arithmetic(vectors).materialize()
    return [merged.masked(m) for m in ws.merge.tall_masks(vectors, lambdas=lambdas, merged=merged)]


def merge_methods(stride: int = 1) -> dict[str, arithmetic.Method]:
    """Every configuration of the tuning budget, named ``family`` or ``family@value``."""
    from functools import partial

    method, merge = arithmetic.Method, ws.merge
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


def addition_study(
    net: AudioNet,
    base: Mapping[str, Tensor],
    vectors: Mapping[str, TaskVector],
    tasks: Mapping[str, arithmetic.Task],
    data: Mapping[str, Split],
    stride: int,
) -> dict[str, Any]:
    """Every configuration of the budget on validation; the tuned one per family, with the
    per-clip test correctness of its model on every task (for the bootstrap)."""
    methods = merge_methods(stride)
    result = arithmetic.add(base, dict(vectors), {n: tasks[n] for n in vectors}, methods=methods)
    chosen = result.best_by_family()
    names = list(vectors)
    clips: dict[str, dict[str, str]] = {
        "pretrained": {n: bits(correct(net, base, n, data[n].test)) for n in names},
        "finetuned": {
            n: bits(correct(net, vectors[n].apply_to(base), n, data[n].test)) for n in names
        },
    }
    for family, config in chosen.items():
        merged = methods[config].fn([vectors[n] for n in names])
        scale = result.rows[config].scale
        per_task = merged if isinstance(merged, Sequence) else [merged] * len(names)
        clips[family] = {
            n: bits(correct(net, v.apply_to(base, scale=scale), n, data[n].test))
            for n, v in zip(names, per_task, strict=True)
        }
    return {"result": result.to_dict(), "chosen": chosen, "clips": clips}


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
    # The ablation: the added tasks fine-tuned again with the embedding layer frozen.
    frozen: dict[str, TaskVector] = {}
    for k, name in enumerate(ADDED):
        ft = finetune(cfg, pre, name, data[name], seed * 100 + k, ABLATION_TRAINABLE)
        full = TaskVector.from_models(base=pre, finetuned=ft)
        frozen[name] = trunk.restrict(full).materialize()
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
    per_task_frozen = {name: tasks[name].test(frozen[name].apply_to(base)) for name in ADDED}

    # Negation, with the random control at two scales fixed in advance (never 0).
    t0 = time.perf_counter()
    forget: dict[str, Any] = {}
    for i, target in enumerate(("language", "instrument")):
        result = arithmetic.forget(
            base,
            vectors[target],
            target=tasks[target],
            control=[tasks["words"], tasks["digits"]],
            grid=cfg.grid,
            random_baseline=False,
        )
        noise = random_like(vectors[target], 7919 * seed + i).materialize()
        models = {
            "pretrained": base,
            "finetuned": vectors[target].apply_to(base),
            "negated": vectors[target].apply_to(base, scale=-result.scale),
            "random_unit": noise.apply_to(base, scale=-1.0),
            "random_chosen": noise.apply_to(base, scale=-result.scale),
        }
        scored = (target, "words", "digits")
        forget[target] = {
            **result.to_dict(),
            "scores": {m: {t: tasks[t].test(sd) for t in scored} for m, sd in models.items()},
            "clips": {
                m: {t: bits(correct(pre, sd, t, data[t].test)) for t in scored}
                for m, sd in models.items()
            },
            "norm": float(vectors[target].norm()),
            "random_norm": float(noise.norm()),
        }
    times["forget"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    added = {n: vectors[n] for n in ADDED}
    addition = addition_study(pre, base, added, tasks, data, cfg.budget_stride)
    times["add"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    ablation = addition_study(pre, base, frozen, tasks, data, cfg.budget_stride)
    times["add_ablation"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    analogies: dict[str, Any] = {}
    for a, b, c, d in ANALOGIES:
        result = arithmetic.analogy(
            base,
            a=vectors[a],
            b=vectors[b],
            c=vectors[c],
            task=tasks[d],
            reference=vectors[d],
            grid=cfg.grid,
        )
        target = (vectors[c] + (vectors[b] - vectors[a])).materialize()
        models = {
            "pretrained": base,
            "c_only": vectors[c].apply_to(base, scale=result.scales["c_only"]),
            "analogy": target.apply_to(base, scale=result.scales["analogy"]),
            "reference": vectors[d].apply_to(base),
        }
        b_minus_a = vectors[b] - vectors[a]
        d_minus_c = vectors[d] - vectors[c]
        analogies[f"{c}->{d}"] = {
            **result.to_dict(),
            "abcd": [a, b, c, d],
            "clips": {m: bits(correct(pre, sd, d, data[d].test)) for m, sd in models.items()},
            # Does the shift B - A point where the true shift D - C does?
            "shift_cosine": float(b_minus_a.cosine(d_minus_c)),
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
    frozen_cosine = float(
        np.mean(
            [
                float(frozen[a].cosine(frozen[b]))
                for i, a in enumerate(ADDED)
                for b in ADDED[i + 1 :]
            ]
        )
    )
    norms = {n: float(vectors[n].norm()) for n in names}
    return {
        "seed": seed,
        "sizes": {n: d.sizes() for n, d in data.items()},
        "classes": {n: list(d.classes) for n, d in data.items()},
        "shared": shared,
        "per_task": per_task,
        "per_task_frozen": per_task_frozen,
        "forget": forget,
        "addition": addition,
        "ablation": ablation,
        "frozen_pairwise_cosine": frozen_cosine,
        "analogy": analogies,
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
# Accuracies come with a 95 % interval from a hierarchical bootstrap: resample the seeds,
# then the test clips within each resampled seed (so that both the spread between seeds and
# the size of the test sets count). Derived numbers (normalised accuracies, cosines) get a
# 95 % Student-t interval over the seeds.


def flags(s: str) -> np.ndarray:
    return np.frombuffer(s.encode(), dtype=np.uint8) == ord("1")


def boot(per_seed: Sequence[str], minus: Sequence[str] | None = None) -> tuple[float, float]:
    """95 % interval of the mean accuracy (or of a paired difference with ``minus``).

    Hierarchical bootstrap: each resample draws the seeds with replacement, and for each
    drawn seed an independent resample of its test clips (the same clips for both models of
    a paired difference); ``BOOTSTRAP`` resamples, a fixed random generator.
    """
    rng = np.random.default_rng(0)
    n = len(per_seed)
    means = np.empty((n, BOOTSTRAP))
    for i, s in enumerate(per_seed):
        a = flags(s).astype(float)
        d = a - flags(minus[i]).astype(float) if minus is not None else a
        idx = rng.integers(0, len(d), (BOOTSTRAP, len(d)))
        means[i] = d[idx].mean(1)
    seeds = rng.integers(0, n, (BOOTSTRAP, n))
    draws = rng.integers(0, BOOTSTRAP, (BOOTSTRAP, n))
    stats = means[seeds, draws].mean(1)
    lo, hi = np.percentile(stats, [2.5, 97.5])
    return float(lo), float(hi)


def acc(per_seed: Sequence[str], minus: Sequence[str] | None = None) -> str:
    """``mean [lo, hi]`` of per-seed per-clip correctness (or a paired difference)."""
    means = [flags(s).mean() for s in per_seed]
    if minus is not None:
        means = [m - flags(s).mean() for m, s in zip(means, minus, strict=True)]
    lo, hi = boot(per_seed, minus)
    sign = "+" if minus is not None else ""
    return f"{np.mean(means):{sign}.3f} [{lo:{sign}.3f}, {hi:{sign}.3f}]"


def tint(values: Sequence[float], spec: str = ".3f") -> str:
    """``mean ± half-width of the 95 % t interval`` over seeds (the mean alone for one)."""
    s = report.summarize(list(values))
    if math.isnan(s.half_width):
        return f"{s.mean:{spec}}"
    return f"{s.mean:{spec}} ± {s.half_width:{spec}}"


def seeds_of(values: Sequence[float], spec: str = ".3f") -> str:
    return ", ".join(f"{v:{spec}}" for v in values)


def tuned_row(add: Mapping[str, Any], family: str) -> Mapping[str, Any]:
    rows: Mapping[str, Any] = add["result"]["rows"]
    return rows[add["chosen"].get(family, family)]


def family_label(family: str) -> str:
    return f"{family} (oracle)" if family in ORACLE_METHODS else family


def summarise(runs: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """Means and 95 % t half-widths over seeds of the headline numbers."""

    def spread(values: Sequence[float]) -> list[float]:
        s = report.summarize(list(values))
        return [s.mean, s.std, s.half_width]

    out: dict[str, Any] = {"forget": {}, "addition": {}, "ablation": {}, "analogy": {}}
    for target in runs[0]["forget"]:
        out["forget"][target] = {
            m: spread([r["forget"][target]["scores"][m][target] for r in runs])
            for m in runs[0]["forget"][target]["scores"]
        }
    for key in ("addition", "ablation"):
        for family in (*SINGLE_METHODS, *ORACLE_METHODS):
            out[key][family] = spread([tuned_row(r[key], family)["normalized_mean"] for r in runs])
    for name in runs[0]["analogy"]:
        out["analogy"][name] = {
            k: spread([r["analogy"][name]["scores"][k] for r in runs])
            for k in runs[0]["analogy"][name]["scores"]
        }
    return out


def tables(runs: Sequence[Mapping[str, Any]]) -> str:
    """``tables.md`` from the per-seed results as stored in ``results.json``."""
    seeds = ", ".join(str(r["seed"]) for r in runs)
    first = runs[0]
    out = [
        f"{len(runs)} seed(s) ({seeds}). Accuracies: mean over seeds [95 % hierarchical "
        "bootstrap interval over seeds and test clips]; other numbers: mean ± half-width of "
        "the 95 % Student-t interval over seeds.\n",
        "### Run\n",
    ]
    rows: list[list[report.Cell]] = [
        [
            r["seed"],
            f"{sum(r['seconds'].values()):.0f}",
            " / ".join(f"{x:.1f}" for x in r.get("load_average", [])),
        ]
        for r in runs
    ]
    head = ["seed", "seconds (one thread)", "load average at its end (1, 5, 15 min)"]
    out.append(report.markdown_table(head, rows))
    out.append("### Tasks\n")
    rows = []
    for name, sizes in first["sizes"].items():
        ft = "finetuned" in first["per_task"][name]
        size = [round(float(np.mean([r["sizes"][name][p] for r in runs]))) for p in sizes]
        rows.append(
            [
                name,
                len(first["classes"][name]),
                *size,
                tint([r["per_task"][name]["pretrained"] for r in runs]),
                tint([r["per_task"][name]["finetuned"] for r in runs])
                if ft
                else "(pretraining task)",
            ]
        )
    header = ["task", "classes", "train", "val", "test", "pretrained", "fine-tuned"]
    out.append(report.markdown_table(header, rows))

    labels = {
        "pretrained": "pretrained",
        "finetuned": "fine-tuned",
        "negated": "negated task vector, chosen λ",
        "random_unit": "negated random vector, λ = 1",
        "random_chosen": "negated random vector, chosen λ",
    }
    for target in first["forget"]:
        out.append(f"### Forgetting by negation: {target}\n")
        scored = (target, "words", "digits")
        rows = []
        for m, label in labels.items():
            scale = ""
            if m in ("negated", "random_chosen"):
                scale = tint([r["forget"][target]["scale"] for r in runs], ".2f")
            elif m == "random_unit":
                scale = "1"
            rows.append(
                [
                    label,
                    scale,
                    *(acc([r["forget"][target]["clips"][m][t] for r in runs]) for t in scored),
                ]
            )
        head = ["model", "λ", f"target: {target}", "control: words", "control: digits"]
        out.append(report.markdown_table(head, rows))
        out.append(f"### Negation, paired differences: {target}\n")
        rows = []
        for m, label in (("random_chosen", "random, chosen λ"), ("random_unit", "random, λ = 1")):
            rows.append(
                [
                    f"task vector − {label}",
                    *(
                        acc(
                            [r["forget"][target]["clips"]["negated"][t] for r in runs],
                            [r["forget"][target]["clips"][m][t] for r in runs],
                        )
                        for t in scored
                    ),
                ]
            )
        out.append(report.markdown_table(["difference", target, "words", "digits"], rows))

    titles = {
        "addition": "Addition of five task vectors",
        "ablation": "Ablation: the five vectors fine-tuned with the embedding layer frozen",
    }
    for key, title in titles.items():
        tasks = first[key]["result"]["tasks"]
        out.append(f"### {title}: test accuracy\n")
        rows = []
        for family in ("pretrained", "finetuned", *SINGLE_METHODS, *ORACLE_METHODS):
            chosen = [
                f"{c} ×{tuned_row(r[key], family)['scale']:g}"
                for r in runs
                if (c := r[key]["chosen"].get(family))
            ]
            rows.append(
                [
                    family_label(family),
                    "; ".join(chosen),
                    *(acc([r[key]["clips"][family][t] for r in runs]) for t in tasks),
                ]
            )
        head = ["method", "configurations chosen", *tasks]
        out.append(report.markdown_table(head, rows))
        out.append(f"### {title}: normalised accuracy (merged / fine-tuned)\n")
        rows = []
        for family in ("pretrained", *SINGLE_METHODS, *ORACLE_METHODS):
            got = [tuned_row(r[key], family) for r in runs]
            rows.append(
                [
                    family_label(family),
                    *(tint([g["normalized"][t] for g in got]) for t in tasks),
                    tint([g["normalized_mean"] for g in got]),
                ]
            )
        out.append(report.markdown_table(["method", *tasks, "mean"], rows))
    out.append("### Ablation: fine-tuned accuracy with the embedding layer frozen\n")
    rows = [
        [
            t,
            tint([r["per_task"][t]["finetuned"] for r in runs]),
            tint([r["per_task_frozen"][t] for r in runs]),
        ]
        for t in ADDED
    ]
    rows.append(
        [
            "mean pairwise cosine of the five vectors",
            tint(
                [
                    np.mean(
                        [
                            r["cosine"]["matrix"][r["cosine"]["names"].index(a)][
                                r["cosine"]["names"].index(b)
                            ]
                            for i, a in enumerate(ADDED)
                            for b in ADDED[i + 1 :]
                        ]
                    )
                    for r in runs
                ]
            ),
            tint([r["frozen_pairwise_cosine"] for r in runs]),
        ]
    )
    out.append(report.markdown_table(["task", "whole trunk", "embedding layer frozen"], rows))

    out.append("### Analogies: test accuracy on D\n")
    rows = []
    for name in first["analogy"]:
        a, b, c, d = first["analogy"][name]["abcd"]
        clips = {
            m: [r["analogy"][name]["clips"][m] for r in runs]
            for m in first["analogy"][name]["clips"]
        }
        rows.append(
            [
                f"{a} : {b} :: {c} : {d}",
                acc(clips["pretrained"]),
                acc(clips["c_only"]),
                acc(clips["analogy"]),
                acc(clips["analogy"], clips["c_only"]),
                acc(clips["reference"]),
                tint([r["analogy"][name]["shift_cosine"] for r in runs], ".2f"),
            ]
        )
    head = [
        "analogy A : B :: C : D",
        "pretrained",
        "C alone",
        "C + (B − A)",
        "analogy − C alone",
        "fine-tuned on D (reference)",
        "cos(B − A, D − C)",
    ]
    out.append(report.markdown_table(head, rows))

    out.append("### Pairs: task (row) under its vector plus another (column), scale 1\n")
    out.append("Test accuracy normalised by the row task's fine-tuned accuracy.\n")
    rows = [
        [a, *("1" if a == b else tint([r["pairs"][a][b] for r in runs]) for b in ADDED)]
        for a in ADDED
    ]
    out.append(report.markdown_table(["task", *(f"+ {b}" for b in ADDED)], rows))
    out.append("### Where the five added vectors agree: per tensor\n")
    out.append("Mean cosine over the 10 pairs, and mean share of a vector's squared norm.\n")
    rows = [
        [
            key,
            size,
            tint([r["layer_cosine"][key] for r in runs]),
            tint([r["layer_share"][key] for r in runs]),
        ]
        for key, size in first["layer_sizes"].items()
    ]
    header = ["tensor", "parameters", "pairwise cosine", "share of squared norm"]
    out.append(report.markdown_table(header, rows))
    out.append("### Cosine similarity of the task vectors (seed mean)\n")
    names = first["cosine"]["names"]
    mat = np.mean([r["cosine"]["matrix"] for r in runs], axis=0)
    rows = [[a, *(f"{mat[i, j]:.2f}" for j in range(len(names)))] for i, a in enumerate(names)]
    out.append(report.markdown_table(["", *names], rows))

    # Appendix: the per-seed values behind the headline numbers.
    seed_head = [f"seed {r['seed']}" for r in runs]
    out.append("### Per seed: negation\n")
    rows = []
    for target in first["forget"]:
        f = [r["forget"][target] for r in runs]
        rows.append([f"{target}: chosen λ", *(f"{x['scale']:.2f}" for x in f)])
        for m in ("negated", "random_unit", "random_chosen"):
            rows.append([f"{target}: {labels[m]}", *(f"{x['scores'][m][target]:.3f}" for x in f)])
    out.append(report.markdown_table(["", *seed_head], rows))
    out.append("### Per seed: addition, normalised mean accuracy\n")
    rows = []
    for key in ("addition", "ablation"):
        for family in (*SINGLE_METHODS, *ORACLE_METHODS):
            rows.append(
                [
                    f"{key}: {family_label(family)}",
                    *(
                        f"{tuned_row(r[key], family)['normalized_mean']:.3f} "
                        f"({r[key]['chosen'][family]})"
                        for r in runs
                    ),
                ]
            )
    out.append(report.markdown_table(["", *seed_head], rows))
    out.append("### Per seed: analogies (test accuracy on D: C alone -> analogy)\n")
    rows = []
    for name in first["analogy"]:
        rows.append(
            [
                name,
                *(
                    f"{r['analogy'][name]['scores']['c_only']:.3f} -> "
                    f"{r['analogy'][name]['scores']['analogy']:.3f}"
                    for r in runs
                ),
            ]
        )
    out.append(report.markdown_table(["C -> D", *seed_head], rows))
    return "\n".join(out)


def sd(values: np.ndarray, axis: int | None = None) -> Any:
    """Sample standard deviation over seeds (0 for a single seed)."""
    n = values.shape[0] if axis == 0 else values.size
    return values.std(axis=axis, ddof=1) if n > 1 else values.std(axis=axis)


def figures(runs: Sequence[Mapping[str, Any]], out: Path) -> None:
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

    # 2. Addition: normalised accuracy per task and method, with and without the ablation.
    fig, axes = plt.subplots(1, 2, figsize=(14, 3.8), sharey=True)
    families = [*SINGLE_METHODS, *ORACLE_METHODS]
    for ax, key in zip(axes, ("addition", "ablation"), strict=True):
        tasks = runs[0][key]["result"]["tasks"]
        width = 0.8 / len(families)
        for k, m in enumerate(families):
            vals = np.array([[tuned_row(r[key], m)["normalized"][t] for t in tasks] for r in runs])
            xs = np.arange(len(tasks) + 1) + (k - len(families) / 2 + 0.5) * width
            means = [*vals.mean(0), vals.mean()]
            stds = [*sd(vals, 0), sd(vals.mean(1))]
            ax.bar(xs, means, width, yerr=stds, label=family_label(m), capsize=2)
        ax.axhline(1.0, color="k", lw=0.8)
        ax.set_xticks(np.arange(len(tasks) + 1), [*tasks, "mean"])
        ax.set_title(
            "whole trunk fine-tuned" if key == "addition" else "embedding layer frozen (ablation)"
        )
    axes[0].set_ylabel("accuracy / fine-tuned accuracy")
    axes[0].legend(fontsize=8, ncol=3)
    fig.suptitle("one model for five tasks (mean ± std over seeds)")
    fig.tight_layout()
    fig.savefig(out / "addition.png", dpi=120)
    plt.close(fig)

    # 3. Addition: task arithmetic's validation curve, with and without the ablation.
    fig, ax = plt.subplots(figsize=(5.5, 3.8))
    for k, key in enumerate(("addition", "ablation")):
        for r in runs:
            curve = r[key]["result"]["rows"]["task_arithmetic"]["curve"]
            ax.plot(
                [c[0] for c in curve],
                [c[1] for c in curve],
                f"C{k}-",
                alpha=0.9 if r is runs[0] else 0.35,
                label=("whole trunk" if key == "addition" else "embedding frozen")
                if r is runs[0]
                else None,
            )
    ax.set_xlabel("scale of the sum (task arithmetic)")
    ax.set_ylabel("mean normalised validation accuracy")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out / "addition_scale.png", dpi=120)
    plt.close(fig)

    # 4. Analogies.
    names = list(runs[0]["analogy"])
    keys = ["pretrained", "c_only", "analogy", "reference"]
    fig, ax = plt.subplots(figsize=(12, 3.8))
    width = 0.8 / len(keys)
    for k, key in enumerate(keys):
        vals = np.array([[r["analogy"][n]["scores"][key] for n in names] for r in runs])
        xs = np.arange(len(names)) + (k - len(keys) / 2 + 0.5) * width
        ax.bar(xs, vals.mean(0), width, yerr=sd(vals, 0), capsize=2, label=key)
    ax.set_xticks(np.arange(len(names)), [n.replace("->", "\n-> ") for n in names], fontsize=7)
    ax.set_ylabel("test accuracy on D")
    ax.set_ylim(0, 1)
    ax.set_title("analogies: C + (B - A), never trained on D")
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
    fig, ax = plt.subplots(figsize=(7.5, 6.5))
    im = ax.imshow(mat, vmin=0, vmax=1, cmap="viridis")
    ax.set_xticks(range(len(labels)), labels, rotation=45, ha="right")
    ax.set_yticks(range(len(labels)), labels)
    for i in range(len(labels)):
        for j in range(len(labels)):
            ax.text(j, i, f"{mat[i, j]:.2f}", ha="center", va="center", fontsize=6, color="w")
    fig.colorbar(im, ax=ax, shrink=0.8)
    ax.set_title("cosine similarity of trunk task vectors")
    fig.tight_layout()
    fig.savefig(out / "cosine.png", dpi=120)
    plt.close(fig)


def write_tables(runs: Sequence[Mapping[str, Any]], out: Path) -> str:
    """``tables.md`` and its reStructuredText form ``tables.rst`` (included by the report)."""
    text = tables(runs)
    (out / "tables.md").write_text(text, encoding="utf-8")
    (out / "tables.rst").write_text(report.markdown_to_rst(text), encoding="utf-8")
    return text


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[1])
    parser.add_argument("--quick", action="store_true", help="a smoke run in about a minute")
    parser.add_argument("--seeds", type=int, default=None, help="number of seeds (0, 1, ...)")
    parser.add_argument("--out", type=Path, default=None, help="output folder")
    parser.add_argument(
        "--replot",
        action="store_true",
        help="only rewrite the tables and figures from the results.json in the output folder",
    )
    parser.add_argument(
        "--only-seed", type=int, default=None, help="run and store this one seed, then stop"
    )
    parser.add_argument(
        "--combine",
        action="store_true",
        help="write the results from the seeds stored so far (a partial run), computing none",
    )
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    cfg = copy.copy(QUICK if args.quick else FULL)
    if args.seeds is not None:
        cfg.seeds = tuple(range(args.seeds))
    if args.out is not None:
        cfg.out = args.out
    cfg.out.mkdir(parents=True, exist_ok=True)
    if args.replot:
        saved = json.loads((cfg.out / "results.json").read_text())
        write_tables(saved["runs"], cfg.out)
        figures(saved["runs"], cfg.out)
        print(f"rewrote the tables and figures in {cfg.out}")
        return

    config = {k: (str(v) if isinstance(v, Path) else v) for k, v in asdict(cfg).items()}
    config.pop("out")
    config = json.loads(json.dumps(config))  # tuples as lists, as stored
    stored = cfg.out / "seeds"  # one file per finished seed: a stopped run resumes there
    stored.mkdir(exist_ok=True)

    def load(seed: int) -> dict[str, Any] | None:
        path = stored / f"seed{seed}.json"
        if not path.exists():
            return None
        saved: dict[str, Any] = json.loads(path.read_text())
        if saved["config"] != {k: v for k, v in config.items() if k != "seeds"}:
            raise ws.WeightspaceValueError(
                f"{path} was run with another configuration; remove it or pass another `--out`"
            )
        run: dict[str, Any] = saved["run"]
        return run

    start = time.perf_counter()
    load_start = os.getloadavg()
    feats = LogMel()
    runs = []
    todo = cfg.seeds if args.only_seed is None else (args.only_seed,)
    for seed in todo:
        done = load(seed)
        if done is None and not args.combine:
            t0 = time.perf_counter()
            done = run_seed(cfg, seed, feats)
            done["load_average"] = list(os.getloadavg())
            print(f"seed {seed}: {time.perf_counter() - t0:.0f} s {done['seconds']}", flush=True)
            body = {"config": {k: v for k, v in config.items() if k != "seeds"}, "run": done}
            (stored / f"seed{seed}.json").write_text(json.dumps(body, allow_nan=True))
        if done is not None:
            runs.append(done)
    if args.only_seed is not None:
        return
    if not runs:
        raise ws.WeightspaceValueError(f"no finished seed in {stored}; run without `--combine`")
    config["seeds"] = [r["seed"] for r in runs]
    result = {
        "mode": "quick" if args.quick else "full",
        "config": config,
        "seconds": time.perf_counter() - start,
        "load_average": {"start": list(load_start), "end": list(os.getloadavg())},
        "torch_threads": torch.get_num_threads(),
        "summary": summarise(runs),
        "runs": runs,
    }
    (cfg.out / "results.json").write_text(json.dumps(result, indent=1, allow_nan=True))
    text = write_tables(runs, cfg.out)
    figures(runs, cfg.out)
    print(text)
    print(f"total {result['seconds']:.0f} s; wrote {cfg.out}")


if __name__ == "__main__":
    main()
