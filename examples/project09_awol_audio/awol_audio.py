"""
AWOL for audio: text in, synthesizer parameters out, with a conditional normalizing flow
=========================================================================================

Project 9 carries AWOL (Aldasoro et al., arXiv:2404.03042: a Real-NVP flow maps a text
embedding to the parameters of a procedural generator, trained in minutes from few examples)
over to sound. A description such as *"a low note on a cello"* is embedded by MiniLM
(:func:`weightspace.models.minilm`), a conditional Real-NVP flow
(:class:`weightspace.audio.ConditionalRealNVP`) maps the embedding to the 16 parameters of
:class:`weightspace.audio.Synth`, and the synthesizer renders the sound.

Training pairs: the 128 General-MIDI instruments of the FluidR3 soundfont, rendered by
FluidSynth at three pitches (:func:`weightspace.data.fluidsynth_render`), each fitted to synth
parameters with project 4's matcher (:func:`weightspace.audio.match`, CMA-ES); the description
is the instrument's General-MIDI name and the register of the note. Few-shot regimes of 1, 5,
20 and 100 training pairs; tests on held-out instruments of the training families (unseen
descriptions) and on three whole held-out families (out of distribution).

Baselines: the mean of the training parameters, nearest-description retrieval (MiniLM cosine)
and an MLP regressor from the embedding to the parameters. Metrics: the multi-resolution STFT
distance of the rendered sound to the reference recording, the parameter error against the
matcher's fit, the pitch error against the note played, and the accuracy of a family
classifier trained on synthesizer renders (standing in for a text-audio model such as CLAP,
which is not available offline).

Run ``python awol_audio.py`` for the full study (five seeds; it writes ``results/``) or
``python awol_audio.py --quick`` for a smoke run.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import platform
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from weightspace import data, report, train
from weightspace.audio import (
    ConditionalRealNVP,
    Synth,
    flow_nll_loss,
    log_mel,
    match,
    spectral_distance,
)
from weightspace.models import minilm
from weightspace.report import markdown_to_rst

HERE = Path(__file__).resolve().parent
SR = 16000
NOTE_GAP = 1.5  # seconds between the notes of one rendered MIDI file
REGISTERS = {48: "low", 60: "middle", 72: "high"}
OOD_FAMILIES = ("Chromatic Percussion", "Brass", "Synth Pad")  # fixed before any result
TEST_SLOTS = (2, 6)  # positions, within each family's eight programs, of the test instruments
VAL_SLOTS = (4,)
METHODS = ("mean", "retrieval", "mlp", "flow", "flow sample")
PROMPTS = (
    "a deep warm bass note",
    "a bright high bell",
    "a soft breathy flute, middle register",
)


@dataclass
class Config:
    """Sizes of one run: the full study or the quick smoke run."""

    seeds: tuple[int, ...]
    families: tuple[str, ...]  # General-MIDI families used (all 16 in full mode)
    programs_per_family: int  # first programs of each family (8 = all)
    pitches: tuple[int, ...]  # MIDI notes rendered per instrument
    duration: float  # seconds per sound
    fft_sizes: tuple[int, ...]  # of the STFT distance (matcher and metric)
    match_budget: int  # CMA-ES renders per training sound
    match_sigma: float
    regimes: tuple[int, ...]  # training pairs
    grids: dict[str, list[float]]  # at most three settings per method
    flow_layers: int
    hidden: int
    classifier_jitter: int  # jittered renders per sound for the family classifier
    classifier_epochs: int
    out: Path = field(default_factory=lambda: HERE / "results")


ALL_FAMILIES = (
    "Piano",
    "Chromatic Percussion",
    "Organ",
    "Guitar",
    "Bass",
    "Strings",
    "Ensemble",
    "Brass",
    "Reed",
    "Pipe",
    "Synth Lead",
    "Synth Pad",
    "Synth Effects",
    "Ethnic",
    "Percussive",
    "Sound Effects",
)

FULL = Config(
    seeds=(0, 1, 2, 3, 4),
    families=ALL_FAMILIES,
    programs_per_family=8,
    pitches=(48, 60, 72),
    duration=0.5,
    fft_sizes=(2048, 512, 128),
    match_budget=192,
    match_sigma=0.15,
    regimes=(1, 5, 20, 100),
    grids={
        "mean": [0],  # nothing to tune
        "retrieval": [1, 3, 5],  # neighbours averaged
        "mlp": [100, 400, 1600],  # Adam steps (early stopping is the regulariser)
        "flow": [100, 400, 1600],  # Adam steps
    },
    flow_layers=6,
    hidden=64,
    classifier_jitter=8,
    classifier_epochs=40,
)
QUICK = Config(
    seeds=(0,),
    families=("Piano", "Bass", "Strings", "Brass"),
    programs_per_family=8,
    pitches=(60,),
    duration=0.25,
    fft_sizes=(512, 128),
    match_budget=24,
    match_sigma=0.15,
    regimes=(1, 5),
    grids={"mean": [0], "retrieval": [1], "mlp": [30], "flow": [30]},
    flow_layers=4,
    hidden=32,
    classifier_jitter=2,
    classifier_epochs=5,
)

logger = logging.getLogger("awol_audio")


# ---------------------------------------------------------------------------------------------
# Data: General-MIDI renders fitted to synth parameters
# ---------------------------------------------------------------------------------------------


@dataclass
class Sound:
    """One text-labelled sound: a General-MIDI instrument at one pitch."""

    program: int
    name: str
    family: str
    pitch: int
    description: str


def gm_sounds(cfg: Config) -> list[Sound]:
    """The instruments of the configured families at the configured pitches."""
    import pretty_midi

    sounds = []
    for program in range(128):
        family = pretty_midi.program_to_instrument_class(program)
        if family not in cfg.families or program % 8 >= cfg.programs_per_family:
            continue
        name = pretty_midi.program_to_instrument_name(program)
        for pitch in cfg.pitches:
            text = f"a {REGISTERS[pitch]} note on the {name.lower()}"
            sounds.append(Sound(program, name, family, pitch, text))
    return sounds


def _onset_cut(wave: Tensor, length: int) -> Tensor:
    """Cut ``length`` samples from the onset (first sample above 5 % of the peak); peak 0.5."""
    peak = float(wave.abs().max())
    if peak <= 0:
        return torch.zeros(length)
    start = int((wave.abs() > 0.05 * peak).nonzero()[0, 0])
    out = torch.zeros(length)
    piece = wave[start : start + length]
    out[: len(piece)] = piece
    return out * (0.5 / max(float(out.abs().max()), 1e-8))


def render_references(cfg: Config, sounds: list[Sound]) -> tuple[list[Sound], Tensor]:
    """FluidSynth renders (FluidR3 GM), onset-aligned: the audible sounds and ``[N, T]``.

    A note outside an instrument's sampled range renders as silence (FluidR3's contrabass
    above its low register); such sounds are dropped.
    """
    import pretty_midi

    font = data.soundfont("fluidr3")
    length = round(cfg.duration * SR)
    programs = sorted({s.program for s in sounds})
    waves: dict[tuple[int, int], Tensor] = {}
    for first in range(0, len(programs), 15):  # 15 melodic channels per MIDI file
        chunk = programs[first : first + 15]
        midi = pretty_midi.PrettyMIDI()
        slots: list[tuple[int, int, float]] = []
        t = 0.0
        for program in chunk:
            inst = pretty_midi.Instrument(program=program)
            for pitch in cfg.pitches:
                inst.notes.append(pretty_midi.Note(100, pitch, t, t + 0.4))
                slots.append((program, pitch, t))
                t += NOTE_GAP
            midi.instruments.append(inst)
        audio = torch.from_numpy(data.fluidsynth_render(midi, sample_rate=SR, font=font))
        for program, pitch, start in slots:
            a = round(start * SR)
            waves[program, pitch] = _onset_cut(audio[a : a + round(NOTE_GAP * SR)], length)
    kept = [s for s in sounds if float(waves[s.program, s.pitch].abs().max()) > 0]
    return kept, torch.stack([waves[s.program, s.pitch] for s in kept])


def distance_fn(cfg: Config) -> Any:
    def dist(x: Tensor, y: Tensor) -> Tensor:
        return spectral_distance(x, y, fft_sizes=cfg.fft_sizes)

    return dist


@dataclass(frozen=True)
class PinnedPitch(Synth):
    """The synthesizer with its pitch parameter held at ``pinned`` (normalised): a known note."""

    pinned: float = 0.5

    def render(self, params: Tensor) -> Tensor:
        """Render with the first (pitch) column replaced by ``pinned``."""
        fixed = torch.full_like(params[..., :1], self.pinned)
        return super().render(torch.cat([fixed, params[..., 1:]], -1))


def fit_pairs(cfg: Config, synth: Synth, sounds: list[Sound], refs: Tensor) -> dict[str, Any]:
    """Fit every reference with CMA-ES started at the played pitch, twice.

    ``"pinned"`` holds the pitch at the note played (the training pairs); ``"free"`` lets
    CMA-ES move it too (project 4's matcher as it is), for comparison.
    """
    dist = distance_fn(cfg)
    pitch_param = synth.params[0]
    out: dict[str, Any] = {"sounds": [asdict(s) for s in sounds]}
    for mode in ("pinned", "free"):
        params, fits, seconds = [], [], 0.0
        for i, (s, ref) in enumerate(zip(sounds, refs, strict=True)):
            note = float(pitch_param.to_normalized(torch.tensor(float(s.pitch))))
            init = torch.full((synth.num_params,), 0.5)
            init[0] = note
            voice = synth
            if mode == "pinned":
                voice = PinnedPitch(
                    sample_rate=synth.sample_rate, duration=synth.duration, pinned=note
                )
            r = match(
                ref,
                voice,
                method="cma",
                budget=cfg.match_budget,
                seed=i,
                distance=dist,
                init=init,
                sigma=cfg.match_sigma,
            )
            fitted = r.params.clone()
            if mode == "pinned":
                fitted[0] = note
            params.append([round(float(v), 6) for v in fitted])
            fits.append(r.distance)
            seconds += r.seconds
            if i % 48 == 0:
                logger.info("%s: matched %d/%d (%.1f s)", mode, i + 1, len(sounds), seconds)
        out[mode] = {"params": params, "fit_distance": fits, "match_seconds": seconds}
    return out


def _pairs_key(cfg: Config) -> dict[str, Any]:
    keys = ("families", "programs_per_family", "pitches", "duration", "fft_sizes")
    key = {
        k: list(getattr(cfg, k)) if isinstance(getattr(cfg, k), tuple) else getattr(cfg, k)
        for k in keys
    }
    key.update(match_budget=cfg.match_budget, match_sigma=cfg.match_sigma, pitch="pinned+free")
    return key


def load_or_fit_pairs(cfg: Config, synth: Synth, sounds: list[Sound], refs: Tensor) -> dict:
    """The fitted pairs from ``pairs.json`` in the output folder, or fitted now and saved."""
    path = cfg.out / "pairs.json"
    key = _pairs_key(cfg)
    if path.exists():
        saved = json.loads(path.read_text())
        if saved.get("key") == key and saved["sounds"] == [asdict(s) for s in sounds]:
            return dict(saved)
        logger.info("pairs.json was made with other settings; fitting again")
    pairs = fit_pairs(cfg, synth, sounds, refs)
    pairs["key"] = key
    cfg.out.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(pairs, indent=1) + "\n")
    return pairs


# ---------------------------------------------------------------------------------------------
# Splits
# ---------------------------------------------------------------------------------------------


def splits(sounds: list[Sound]) -> dict[str, list[int]]:
    """Indices of the training pool, validation and the two test sets (fixed for all seeds).

    In each family kept for training, the programs at :data:`TEST_SLOTS` are test
    instruments (their descriptions are never seen), the one at :data:`VAL_SLOTS` is for
    tuning, the other five form the pool that the few-shot pairs are drawn from. Every
    instrument of :data:`OOD_FAMILIES` is a test instrument of the out-of-distribution set.
    """
    out: dict[str, list[int]] = {"pool": [], "val": [], "test_id": [], "test_ood": []}
    for i, s in enumerate(sounds):
        slot = s.program % 8
        if s.family in OOD_FAMILIES:
            out["test_ood"].append(i)
        elif slot in TEST_SLOTS:
            out["test_id"].append(i)
        elif slot in VAL_SLOTS:
            out["val"].append(i)
        else:
            out["pool"].append(i)
    return out


# ---------------------------------------------------------------------------------------------
# Metrics: distances, parameter and pitch errors, and the family classifier
# ---------------------------------------------------------------------------------------------


def render(synth: Synth, params: Tensor) -> Tensor:
    with torch.no_grad():
        return torch.cat([synth.render(chunk) for chunk in params.split(128)])


def audio_features(waves: Tensor) -> Tensor:
    """Log-mel statistics of each sound: mean and standard deviation of each band over time."""
    out = []
    for chunk in waves.split(256):
        mel = log_mel(chunk, sample_rate=SR)  # [B, bands, frames]
        out.append(torch.cat([mel.mean(-1), mel.std(-1)], -1))
    return torch.cat(out)


class FamilyClassifier(nn.Module):
    """Log-mel statistics of a sound -> its General-MIDI family (a stand-in for CLAP)."""

    def __init__(self, n_in: int, n_out: int, mean: Tensor, std: Tensor) -> None:
        super().__init__()
        self.register_buffer("mu", mean)
        self.register_buffer("sd", std)
        self.net = nn.Sequential(nn.Linear(n_in, 128), nn.SiLU(), nn.Linear(128, n_out))

    def forward(self, feats: Tensor) -> Tensor:
        out: Tensor = self.net((feats - self.mu) / self.sd)
        return out


def train_classifier(
    cfg: Config, synth: Synth, params: Tensor, labels: Tensor, n_classes: int
) -> tuple[FamilyClassifier, float]:
    """Train the family classifier on synth renders of the fitted parameters, jittered."""
    gen = torch.Generator().manual_seed(1234)
    copies = [params]
    for _ in range(cfg.classifier_jitter):
        copies.append((params + 0.03 * torch.randn(params.shape, generator=gen)).clamp(0, 1))
    x = audio_features(render(synth, torch.cat(copies)))
    y = labels.repeat(len(copies))
    torch.manual_seed(0)
    model = FamilyClassifier(x.shape[1], n_classes, x.mean(0), x.std(0) + 1e-6)
    train.fit_(model, (x, y), epochs=cfg.classifier_epochs, batch_size=128, lr=2e-3, seed=0)
    return model, train.accuracy(model, (x, y))


@dataclass
class Scorer:
    """Scores predicted parameters of a set of sounds against their references."""

    cfg: Config
    synth: Synth
    refs: Tensor
    params: Tensor
    pitches: Tensor
    labels: Tensor
    classifier: FamilyClassifier

    def items(self, pred: Tensor, idx: list[int]) -> dict[str, list[float]]:
        waves = render(self.synth, pred)
        ids = torch.tensor(idx)
        dist = spectral_distance(waves, self.refs[ids], fft_sizes=self.cfg.fft_sizes)
        pitch = self.synth.to_physical(pred)["pitch"]
        with torch.no_grad():
            family = self.classifier(audio_features(waves)).argmax(-1)
        return {
            "stft": dist.tolist(),
            "param_error": (pred - self.params[ids]).abs().mean(1).tolist(),
            "pitch_error": (pitch - self.pitches[ids]).abs().tolist(),
            "family_acc": (family == self.labels[ids]).float().tolist(),
        }

    def score(self, pred: Tensor, idx: list[int]) -> dict[str, float]:
        return {k: float(np.mean(v)) for k, v in self.items(pred, idx).items()}


# ---------------------------------------------------------------------------------------------
# Methods: mean, retrieval, MLP regressor, conditional flow
# ---------------------------------------------------------------------------------------------

EPS = 0.01  # parameters are clipped to [EPS, 1 - EPS] before the flow's logit


def _epochs(steps: int, n: int) -> tuple[int, int]:
    """Epochs (at least ``steps`` optimiser steps in all) and batch size for ``n`` pairs."""
    batch = min(32, n)
    return max(1, math.ceil(steps / math.ceil(n / batch))), batch


def _mse(model: nn.Module, batch: Any) -> Tensor:
    x, y = batch
    return nn.functional.mse_loss(torch.sigmoid(model(x)), y)


def fit_mlp(cfg: Config, emb: Tensor, params: Tensor, steps: int, seed: int) -> nn.Module:
    """The MLP regressor: embedding -> sigmoid parameters, squared error, Adam."""
    torch.manual_seed(seed)
    model = nn.Sequential(
        nn.Linear(emb.shape[1], 2 * cfg.hidden),
        nn.SiLU(),
        nn.Linear(2 * cfg.hidden, params.shape[1]),
    )
    epochs, batch = _epochs(steps, len(emb))
    train.fit_(
        model,
        (emb, params),
        loss=_mse,
        epochs=epochs,
        batch_size=batch,
        lr=1e-3,
        seed=seed,
    )
    return model


def fit_flow(cfg: Config, emb: Tensor, params: Tensor, steps: int, seed: int) -> ConditionalRealNVP:
    """The flow on the logits of the parameters, maximum likelihood, Adam."""
    torch.manual_seed(seed)
    flow = ConditionalRealNVP(
        params.shape[1], emb.shape[1], layers=cfg.flow_layers, hidden=cfg.hidden
    )
    x = torch.logit(params.clamp(EPS, 1 - EPS))
    epochs, batch = _epochs(steps, len(emb))
    train.fit_(
        flow,
        (emb, x),
        loss=flow_nll_loss,
        epochs=epochs,
        batch_size=batch,
        lr=1e-3,
        seed=seed,
    )
    return flow


def predict(
    method: str,
    setting: int,
    cfg: Config,
    emb: Tensor,
    params: Tensor,
    train_idx: list[int],
    query: dict[str, list[int]],
    seed: int,
) -> tuple[dict[str, Tensor], float]:
    """Predictions for every query set, and the training time in seconds."""
    tr = torch.tensor(train_idx)
    e, p = emb[tr], params[tr]
    start = time.perf_counter()
    out: dict[str, Tensor] = {}
    if method == "mean":
        for name, idx in query.items():
            out[name] = p.mean(0).expand(len(idx), -1).clone()
    elif method == "retrieval":
        k = min(int(setting), len(tr))
        for name, idx in query.items():
            nearest = (emb[torch.tensor(idx)] @ e.T).topk(k, dim=1).indices  # cosine: unit vectors
            out[name] = p[nearest].mean(1)
    elif method == "mlp":
        model = fit_mlp(cfg, e, p, setting, seed)
        with torch.no_grad():
            for name, idx in query.items():
                out[name] = torch.sigmoid(model(emb[torch.tensor(idx)]))
    else:  # "flow" and "flow sample" share one trained flow
        flow = fit_flow(cfg, e, p, setting, seed)
        for name, idx in query.items():
            c = emb[torch.tensor(idx)]
            out[name] = torch.sigmoid(flow.mode(c))
            out[name + " sample"] = torch.sigmoid(flow.sample(c, seed=seed))
    return out, time.perf_counter() - start


# ---------------------------------------------------------------------------------------------
# The study
# ---------------------------------------------------------------------------------------------


@dataclass
class Study:
    cfg: Config
    synth: Synth
    sounds: list[Sound]
    emb: Tensor
    params: Tensor
    split: dict[str, list[int]]
    scorer: Scorer

    def subset(self, seed: int, n: int) -> list[int]:
        """The first ``n`` pool sounds of the seed's permutation (nested across regimes)."""
        order = np.random.default_rng(seed).permutation(len(self.split["pool"]))
        return [self.split["pool"][int(i)] for i in order[: min(n, len(order))]]


TRAINED = ("retrieval", "mlp", "flow")


def tune(study: Study) -> dict[str, Any]:
    """Each method's setting per regime: the best mean STFT distance on validation, seed 0."""
    cfg, val = study.cfg, study.split["val"]
    out: dict[str, Any] = {}
    for method in ("mean", *TRAINED):
        grid = cfg.grids[method]
        scores: dict[str, dict[str, float]] = {}
        for setting in grid:
            scores[repr(setting)] = {}
            for n in cfg.regimes:
                pred, _ = predict(
                    method,
                    setting,
                    cfg,
                    study.emb,
                    study.params,
                    study.subset(0, n),
                    {"val": val},
                    seed=0,
                )
                scores[repr(setting)][str(n)] = study.scorer.score(pred["val"], val)["stft"]
        chosen = {
            str(n): min(grid, key=lambda s, n=n: scores[repr(s)][str(n)]) for n in cfg.regimes
        }
        out[method] = {"grid": grid, "validation": scores, "chosen": chosen}
        logger.info("tuned %s: %s", method, chosen)
    return out


def run_seed(study: Study, seed: int, tuning: dict[str, Any]) -> dict[str, Any]:
    cfg = study.cfg
    query = {"test_id": study.split["test_id"], "test_ood": study.split["test_ood"]}
    results: dict[str, Any] = {}
    seconds: dict[str, Any] = {}
    for n in cfg.regimes:
        train_idx = study.subset(seed, n)
        results[str(n)], seconds[str(n)] = {}, {}
        for method in ("mean", *TRAINED):
            setting = tuning[method]["chosen"][str(n)]
            pred, secs = predict(
                method, setting, cfg, study.emb, study.params, train_idx, query, seed
            )
            names = ("flow", "flow sample") if method == "flow" else (method,)
            for name in names:
                suffix = " sample" if name == "flow sample" else ""
                results[str(n)][name] = {
                    split: study.scorer.score(pred[split + suffix], idx)
                    for split, idx in query.items()
                }
            seconds[str(n)][method] = secs
        logger.info("seed %d, %d pairs: flow %s", seed, n, results[str(n)]["flow"])
    return {"seed": seed, "results": results, "train_seconds": seconds}


# ---------------------------------------------------------------------------------------------
# Tables, figures, sounds
# ---------------------------------------------------------------------------------------------

METRICS = (
    ("stft", "STFT distance"),
    ("param_error", "parameter error"),
    ("pitch_error", "pitch error (semitones)"),
    ("family_acc", "family accuracy"),
)
SPLITS = (
    ("test_id", "Held-out instruments of the training families (unseen descriptions)"),
    ("test_ood", "Held-out families (out of distribution)"),
)


def _ci(s: report.Cell) -> str:
    if isinstance(s, str):
        return s
    assert isinstance(s, report.Summary)
    if math.isnan(s.mean):
        return "n/a"
    if s.n < 2:
        return f"{s.mean:.3f}"
    return f"{s.mean:.3f} ± {s.half_width:.3f}"


def per_seed(runs: list[dict], n: int, method: str, split: str, key: str) -> list[float]:
    return [r["results"][str(n)][method][split][key] for r in runs]


def tables(result: dict[str, Any]) -> str:
    """The Markdown tables of the report, from ``results.json`` alone."""
    runs, cfg, oracle = result["runs"], result["config"], result["oracle"]
    n_seeds = len(runs)
    parts = [
        f"Mean over {n_seeds} seed(s) ± half-width of the 95 % Student-t interval over seeds "
        "(each seed's value is the mean over the test sounds). The matcher's fit is an oracle: "
        "the parameters that the training pairs are made of, fitted to the test sound itself.\n"
    ]
    for split, title in SPLITS:
        n_items = len(result["split"][split])
        header = ["training pairs", "method"] + [name for _, name in METRICS]
        rows: list[list[report.Cell]] = []
        for n in cfg["regimes"]:
            for method in METHODS:
                row: list[report.Cell] = [str(n), method]
                for key, _ in METRICS:
                    row.append(report.summarize(per_seed(runs, n, method, split, key)))
                rows.append(row)
        fit = oracle[split]
        rows.append(["all", "matcher fit (oracle)"] + [f"{fit[k]:.3f}" for k, _ in METRICS])
        fit = result["oracle_free"][split]
        rows.append(
            ["all", "matcher fit, pitch free (oracle)"] + [f"{fit[k]:.3f}" for k, _ in METRICS]
        )
        chance = 1 / len(cfg["families"])
        rows.append(["-", "chance"] + ["n/a"] * 3 + [f"{chance:.3f}"])
        formats: list[Any] = [None, None] + [_ci] * len(METRICS)
        text = report.markdown_table(header, rows, formats=formats)
        parts.append(f"### {title}, {n_items} sounds\n\n{text}")
    # Paired differences: the same seed's pairs for both methods.
    header = ["training pairs", "method"] + [title.split(" (")[0] for _, title in SPLITS]
    rows = []
    for n in cfg["regimes"]:
        for method in ("retrieval", "mlp", "flow"):
            row = [str(n), f"{method} - mean"]
            for split, _ in SPLITS:
                a = per_seed(runs, n, method, split, "stft")
                b = per_seed(runs, n, "mean", split, "stft")
                row.append(report.summarize([x - y for x, y in zip(a, b, strict=True)]))
            rows.append(row)
        row = [str(n), "flow - mlp"]
        for split, _ in SPLITS:
            a = per_seed(runs, n, "flow", split, "stft")
            b = per_seed(runs, n, "mlp", split, "stft")
            row.append(report.summarize([x - y for x, y in zip(a, b, strict=True)]))
        rows.append(row)
    parts.append(
        "### Paired differences in STFT distance (per seed; negative: the first is closer)\n\n"
        + report.markdown_table(header, rows, formats=[None, None, _ci, _ci])
    )
    # Tuning.
    header = ["method", "setting"] + [f"{n} pairs" for n in cfg["regimes"]]
    rows = []
    for method, t in result["tuning"].items():
        for setting in t["grid"]:
            row = [method, repr(setting)]
            for n in cfg["regimes"]:
                v = t["validation"][repr(setting)][str(n)]
                mark = " (chosen)" if t["chosen"][str(n)] == setting else ""
                row.append(f"{v:.3f}{mark}")
            rows.append(row)
    parts.append(
        "### Tuning on the validation instruments, seed 0 (mean STFT distance)\n\n"
        + report.markdown_table(header, rows)
    )
    # Training time.
    header = ["training pairs", "MLP steps", "MLP (s)", "flow steps", "flow (s)"]
    rows = []
    for n in cfg["regimes"]:
        row = [str(n)]
        for method in ("mlp", "flow"):
            epochs, batch = _epochs(result["tuning"][method]["chosen"][str(n)], n)
            row.append(epochs * math.ceil(n / batch))
            row.append(report.summarize([r["train_seconds"][str(n)][method] for r in runs]))
        rows.append(row)
    parts.append(
        "### Training time on one CPU thread, seconds per model\n\n"
        f"Load average {result['load'][0]:.2f} at the start of the run, "
        f"{result['load'][1]:.2f} at the end (two cores shared with other jobs).\n\n"
        + report.markdown_table(header, rows, formats=[None, "d", _ci, "d", _ci])
    )
    # Data and classifier.
    d = result["data"]
    rows = [
        ["sounds (instruments x pitches, silent renders dropped)", str(d["sounds"])],
        [
            "training pool / validation / held-out instruments / held-out families",
            " / ".join(
                str(len(result["split"][k])) for k in ("pool", "val", "test_id", "test_ood")
            ),
        ],
        ["matcher: CMA-ES renders per sound", str(cfg["match_budget"])],
        ["matcher: mean STFT distance of the fits (pitch pinned)", f"{d['fit_distance']:.3f}"],
        ["matcher: mean STFT distance of the fits (pitch free)", f"{d['fit_distance_free']:.3f}"],
        ["matcher: CPU seconds for all sounds, both fits", f"{d['match_seconds']:.0f}"],
        ["MiniLM: seconds to embed all descriptions", f"{d['embed_seconds']:.1f}"],
        ["family classifier: accuracy on its training renders", f"{d['classifier_train_acc']:.3f}"],
        [
            "family classifier: accuracy on the FluidSynth recordings",
            f"{d['classifier_reference_acc']:.3f}",
        ],
    ]
    parts.append(
        "### Data, matcher and classifier\n\n" + report.markdown_table(["", "value"], rows)
    )
    # Prompts.
    rows = [[p["prompt"], f"{p['pitch']:.1f}", p["family"], p["file"]] for p in result["prompts"]]
    parts.append(
        "### Free-text prompts through the flow (seed 0, largest regime)\n\n"
        + report.markdown_table(["prompt", "pitch (MIDI)", "classifier's family", "sound"], rows)
    )
    return "\n".join(parts)


def regime_figure(result: dict[str, Any], out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    runs, cfg = result["runs"], result["config"]
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.6), sharey=True)
    for ax, (split, title) in zip(axes, SPLITS, strict=True):
        for method in METHODS:
            means, halves = [], []
            for n in cfg["regimes"]:
                s = report.summarize(per_seed(runs, n, method, split, "stft"))
                means.append(s.mean)
                halves.append(0.0 if math.isnan(s.half_width) else s.half_width)
            ax.errorbar(cfg["regimes"], means, yerr=halves, marker="o", capsize=3, label=method)
        ax.axhline(result["oracle"][split]["stft"], color="k", ls=":", label="matcher fit (oracle)")
        ax.set_xscale("log")
        ax.set_xlabel("training pairs")
        ax.set_title(title.split(" (")[0], fontsize=9)
    axes[0].set_ylabel("STFT distance to the recording")
    axes[1].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(out / "regimes.png", dpi=110)
    plt.close(fig)


def spectrogram_figure(rows: list[tuple[str, list[tuple[str, Tensor]]]], out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n_cols = max(len(cols) for _, cols in rows)
    fig, axes = plt.subplots(
        len(rows), n_cols, figsize=(2.3 * n_cols, 1.9 * len(rows)), squeeze=False
    )
    for r, (label, cols) in enumerate(rows):
        for c in range(n_cols):
            ax = axes[r][c]
            ax.set_xticks([])
            ax.set_yticks([])
            if c >= len(cols):
                ax.axis("off")
                continue
            name, wave = cols[c]
            mel = log_mel(wave.unsqueeze(0), sample_rate=SR, n_mels=64, hop_length=80)[0]
            ax.imshow(mel.numpy(), origin="lower", aspect="auto", cmap="magma")
            ax.set_title(name, fontsize=7)
            if c == 0:
                ax.set_ylabel(label, fontsize=7)
    fig.tight_layout()
    fig.savefig(out / "spectrograms.jpg", dpi=80, pil_kwargs={"quality": 80})
    plt.close(fig)


GALLERY = (("Harpsichord", 60), ("Cello", 48), ("Trumpet", 60), ("Pad 2 (warm)", 48))


def _slug(text: str) -> str:
    keep = "".join(ch if ch.isalnum() else "_" for ch in text.lower())
    return "_".join(part for part in keep.split("_") if part)


def gallery(study: Study, tuning: dict[str, Any], refs: Tensor, encoder: Any, out: Path) -> tuple:
    """Sounds and spectrograms of a few test instruments, and the free-text prompts (seed 0)."""
    import soundfile as sf

    cfg, sounds = study.cfg, study.sounds
    n = max(cfg.regimes)
    tr = study.subset(0, n)
    picks = []
    for name, pitch in GALLERY:
        found = [i for i, s in enumerate(sounds) if s.name == name]
        exact = [i for i in found if sounds[i].pitch == pitch]
        if found:
            picks.append((exact or found)[0])
    methods = ("flow", "mlp", "retrieval")
    preds = {}
    for method in methods:
        p, _ = predict(
            method,
            tuning[method]["chosen"][str(n)],
            cfg,
            study.emb,
            study.params,
            tr,
            {"gallery": picks},
            seed=0,
        )
        preds[method] = render(study.synth, p["gallery"])
    fitted = render(study.synth, study.params[torch.tensor(picks)])
    files: dict[str, str] = {}
    rows = []
    for j, i in enumerate(picks):
        s = sounds[i]
        stem = f"{_slug(s.name)}_{s.pitch}"
        cols = [("recording", refs[i]), ("matcher fit", fitted[j])]
        cols += [(m, preds[m][j]) for m in methods]
        for label, wave in cols:
            fname = f"{stem}_{_slug(label)}.flac"
            sf.write(str(out / fname), wave.numpy(), SR, subtype="PCM_16")
            files[fname] = f"{s.description} ({label})"
        split = "held-out family" if s.family in OOD_FAMILIES else "held-out instrument"
        rows.append((f"{s.name} {s.pitch}\n({split})", cols))
    # Free-text prompts through the flow trained on the largest regime.
    flow = fit_flow(
        cfg,
        study.emb[torch.tensor(tr)],
        study.params[torch.tensor(tr)],
        tuning["flow"]["chosen"][str(n)],
        0,
    )
    pe = encoder.encode(list(PROMPTS))
    pp = torch.sigmoid(flow.mode(pe))
    waves = render(study.synth, pp)
    with torch.no_grad():
        fam = study.scorer.classifier(audio_features(waves)).argmax(-1).tolist()
    prompts = []
    cols = []
    for k, prompt in enumerate(PROMPTS):
        fname = f"prompt_{_slug(prompt)}.flac"
        sf.write(str(out / fname), waves[k].numpy(), SR, subtype="PCM_16")
        files[fname] = f"{prompt} (flow)"
        pitch = float(study.synth.to_physical(pp[k])["pitch"])
        prompts.append(
            {"prompt": prompt, "pitch": pitch, "family": cfg.families[fam[k]], "file": fname}
        )
        cols.append((prompt[:28], waves[k]))
    rows.append(("free-text prompts\n(flow)", cols))
    spectrogram_figure(rows, out)
    return files, prompts


def _versions() -> dict[str, str]:
    import subprocess

    fluid = subprocess.run(["fluidsynth", "--version"], capture_output=True, text=True)
    return {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "numpy": np.__version__,
        "fluidsynth": fluid.stdout.splitlines()[0] if fluid.stdout else "?",
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[1])
    parser.add_argument("--quick", action="store_true", help="smoke run (seconds)")
    parser.add_argument("--out", type=Path, help="output folder (default: results/)")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    cfg = QUICK if args.quick else FULL
    if args.out is not None:
        cfg.out = args.out
    elif args.quick:
        cfg.out = HERE / "results" / "quick"
    cfg.out.mkdir(parents=True, exist_ok=True)
    torch.set_num_threads(1)
    load_start = os.getloadavg()
    logger.info("load average at start: %.2f", load_start[0])
    started = time.perf_counter()

    synth = Synth(sample_rate=SR, duration=cfg.duration)
    sounds, refs = render_references(cfg, gm_sounds(cfg))
    pairs = load_or_fit_pairs(cfg, synth, sounds, refs)
    params = torch.tensor(pairs["pinned"]["params"], dtype=torch.float32)
    free = torch.tensor(pairs["free"]["params"], dtype=torch.float32)
    t = time.perf_counter()
    encoder = minilm()
    emb = encoder.encode([s.description for s in sounds])
    embed_seconds = time.perf_counter() - t
    split = splits(sounds)
    labels = torch.tensor([cfg.families.index(s.family) for s in sounds])
    classifier, train_acc = train_classifier(cfg, synth, params, labels, len(cfg.families))
    with torch.no_grad():
        ref_acc = float((classifier(audio_features(refs)).argmax(-1) == labels).float().mean())
    scorer = Scorer(
        cfg, synth, refs, params, torch.tensor([float(s.pitch) for s in sounds]), labels, classifier
    )
    study = Study(cfg, synth, sounds, emb, params, split, scorer)
    oracle = {
        k: scorer.score(params[torch.tensor(split[k])], split[k]) for k in ("test_id", "test_ood")
    }
    oracle_free = {
        k: scorer.score(free[torch.tensor(split[k])], split[k]) for k in ("test_id", "test_ood")
    }

    tuning = tune(study)
    runs = [run_seed(study, seed, tuning) for seed in cfg.seeds]
    files, prompts = gallery(study, tuning, refs, encoder, cfg.out)
    cfg_dict = {k: (str(v) if isinstance(v, Path) else v) for k, v in asdict(cfg).items()}
    cfg_dict.pop("out")
    result = {
        "mode": "quick" if args.quick else "full",
        "config": cfg_dict,
        "split": {k: [sounds[i].description for i in v] for k, v in split.items()},
        "data": {
            "sounds": len(sounds),
            "fit_distance": float(np.mean(pairs["pinned"]["fit_distance"])),
            "fit_distance_free": float(np.mean(pairs["free"]["fit_distance"])),
            "match_seconds": pairs["pinned"]["match_seconds"] + pairs["free"]["match_seconds"],
            "embed_seconds": embed_seconds,
            "classifier_train_acc": train_acc,
            "classifier_reference_acc": ref_acc,
        },
        "oracle": oracle,
        "oracle_free": oracle_free,
        "tuning": tuning,
        "runs": runs,
        "prompts": prompts,
        "sounds": files,
        "load": [load_start[0], os.getloadavg()[0]],
        "seconds": time.perf_counter() - started,
        "versions": _versions(),
    }
    (cfg.out / "results.json").write_text(json.dumps(result, indent=1) + "\n")
    md = tables(result)
    (cfg.out / "tables.md").write_text(md)
    (cfg.out / "tables.rst").write_text(markdown_to_rst(md))
    regime_figure(result, cfg.out)
    logger.info("done in %.0f s; load average %.2f", result["seconds"], result["load"][1])


if __name__ == "__main__":
    main()
