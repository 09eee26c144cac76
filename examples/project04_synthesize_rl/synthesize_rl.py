"""
Sound matching with reinforcement learning, against search and regression
==========================================================================

Project 4 ("SynthesizeRL"): find the parameters of a synthesizer that reproduce a target sound.
The synthesizer is :class:`weightspace.audio.Synth` (16 parameters: pitch, four oscillator
levels, FM ratio and index, ADSR, note length, resonant low-pass with envelope, gain). The
targets are held-out random patches of that synthesizer (parameters known) and real recordings
(Sonic Pi samples and Tux Paint's stamp sounds, parameters unknown).

Methods, all scored by the same multi-resolution STFT distance and charged one render per
sound they synthesise:

* reinforcement learning in :class:`weightspace.audio.SoundMatchEnv` (observation: target and
  current log-mel features plus the current parameters; action: a change of every parameter;
  reward: the drop in distance; 15 steps): PPO and SAC from stable-baselines3, and a one-step
  contextual bandit (PPO on one-step episodes whose action sets the parameters);
* a supervised regressor from the target's features to its parameters (an MLP);
* per-target search with :func:`weightspace.audio.match`: random search, CMA-ES, gradient
  descent through the differentiable synthesizer, and CMA-ES started at the regressor's guess.

The amortised methods (RL agents, regressor) share one training budget of renders of random
patches; every method gets the same number of renders per test target (16, the RL episode,
and 128), and the same tuning budget: at most three settings, chosen on validation targets of
seed 0. A side study measures how often the gradient of each loss points towards the target
pitch (DiffMoog's diagnostic, arXiv:2401.12570).

Run ``python synthesize_rl.py`` for the full study (three seeds on one thread; it writes
``results/``) or ``python synthesize_rl.py --quick`` for a smoke run.
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from weightspace import data, report, train
from weightspace.audio import (
    SoundMatchEnv,
    Synth,
    cents,
    estimate_pitch,
    log_mel,
    match,
    mel_distance,
    spectral_distance,
)
from weightspace.report import markdown_to_rst

HERE = Path(__file__).resolve().parent
SR = 16000

# Real targets, chosen by name so that the listening examples mean something.
REAL_VAL = ("bass_thick_c", "elec_beep", "drum_tom_lo_hard", "animals/birds/duck")
REAL_TEST = (
    "bass_hard_c",
    "bass_woodsy_c",
    "elec_blip",
    "elec_ping",
    "elec_bell",
    "drum_snare_hard",
    "drum_tom_mid_hard",
    "ambi_glass_hum",
    "animals/birds/cuckoo",
    "animals/birds/owl",
    "animals/mammals/bovines/cow",
    "hobbies/music/string/cello",
)
SEARCH = ("random", "cma", "gradient", "regressor+cma")
AMORTISED = ("regressor", "bandit", "ppo", "sac")
METHODS = ("random", "cma", "gradient", "regressor", "regressor+cma", "bandit", "ppo", "sac")


@dataclass
class Config:
    """Sizes of one run: the full study or the quick smoke run."""

    seeds: tuple[int, ...]
    duration: float  # seconds per sound
    fft_sizes: tuple[int, ...]  # of the distance every method minimises
    n_val_synth: int
    n_test_synth: int
    real_val: tuple[str, ...]
    real_test: tuple[str, ...]
    short_budget: int  # renders per target: the RL episode (1 + steps)
    long_budget: int  # renders per target for the curves
    train_renders: int  # training budget of every amortised method
    episode_steps: int
    grids: dict[str, list[float]]  # at most three settings per method
    n_steps: int  # PPO rollout length
    regressor_epochs: int
    direction_pitches: int  # side study: pitches per shift and seed
    out: Path = field(default_factory=lambda: HERE / "results")


FULL = Config(
    seeds=(0, 1, 2),
    duration=0.5,
    fft_sizes=(2048, 512, 128),
    n_val_synth=6,
    n_test_synth=12,
    real_val=REAL_VAL,
    real_test=REAL_TEST,
    short_budget=16,
    long_budget=128,
    train_renders=4000,
    episode_steps=15,
    grids={
        "random": [0.0],  # nothing to tune
        "cma": [0.1, 0.2, 0.35],  # initial step size
        "gradient": [0.01, 0.03, 0.1],  # Adam learning rate (4 parallel starts)
        "regressor": [3e-4, 1e-3, 3e-3],  # Adam learning rate
        "regressor+cma": [0.05, 0.1, 0.2],  # CMA step size around the regressor's guess
        "bandit": [1e-4, 3e-4, 1e-3],  # learning rates of the RL agents
        "ppo": [1e-4, 3e-4, 1e-3],
        "sac": [1e-4, 3e-4, 1e-3],
    },
    n_steps=256,
    regressor_epochs=60,
    direction_pitches=48,
)
QUICK = Config(
    seeds=(0,),
    duration=0.25,
    fft_sizes=(512, 128),
    n_val_synth=1,
    n_test_synth=2,
    real_val=REAL_VAL[:1],
    real_test=(REAL_TEST[0], REAL_TEST[8]),
    short_budget=6,
    long_budget=12,
    train_renders=64,
    episode_steps=5,
    grids={
        "random": [0.0],
        "cma": [0.2],
        "gradient": [0.03],
        "regressor": [1e-3],
        "regressor+cma": [0.1],
        "bandit": [3e-4],
        "ppo": [3e-4],
        "sac": [3e-4],
    },
    n_steps=32,
    regressor_epochs=5,
    direction_pitches=4,
)


# ---------------------------------------------------------------------------------------------
# Targets
# ---------------------------------------------------------------------------------------------


def _onset_aligned(wave: Tensor) -> Tensor:
    """Move the sound's onset (first sample above 5 % of the peak) to t = 0; peak 0.5."""
    peak = float(wave.abs().max())
    start = int((wave.abs() > 0.05 * peak).nonzero()[0, 0])
    out = torch.zeros_like(wave)
    out[: len(wave) - start] = wave[start:]
    return out * (0.5 / float(out.abs().max()))


def real_targets(cfg: Config) -> dict[str, Tensor]:
    """The named real recordings, cut at their onset to the synthesizer's length."""
    names = (*cfg.real_val, *cfg.real_test)
    kw: dict[str, Any] = {
        "sample_rate": SR,
        "duration": cfg.duration,
        "hop": cfg.duration / 2,
        "max_clips_per_file": 1,
        "progress": False,
    }
    found: dict[str, Tensor] = {}
    prefixes = sorted({n.split("_", 1)[0] for n in names if "/" not in n})
    if prefixes:
        sonic = data.sonic_pi_samples(prefixes, **kw)
        for wave, item in zip(sonic.waveforms, sonic.item_name, strict=True):
            found[item] = wave
    if any("/" in n for n in names):
        stamps = data.sound_effects(None, **kw)
        for wave, item in zip(stamps.waveforms, stamps.item_name, strict=True):
            found[item] = wave
    return {n: _onset_aligned(found[n]) for n in names}


@dataclass
class Targets:
    """One split of targets: waveforms, names, and parameters where known."""

    waves: Tensor  # [N, T]
    names: list[str]
    kinds: list[str]  # "synth" or "real"
    params: Tensor | None  # [n_synth, P] for the first n_synth targets


def make_targets(synth: Synth, n_synth: int, real: dict[str, Tensor], seed: int) -> Targets:
    params = synth.sample(n_synth, seed=seed)
    with torch.no_grad():
        waves = synth.render(params)
    names = [f"preset {i}" for i in range(n_synth)] + list(real)
    kinds = ["synth"] * n_synth + ["real"] * len(real)
    all_waves = torch.cat([waves, torch.stack(list(real.values()))]) if real else waves
    return Targets(all_waves, names, kinds, params)


# ---------------------------------------------------------------------------------------------
# Methods
# ---------------------------------------------------------------------------------------------


@dataclass
class Outcome:
    """One method on one target: best-so-far curve and the best parameters."""

    curve: list[float]  # best distance after each render, len = renders used
    params: Tensor
    seconds: float


def features(env_like: SoundMatchEnv, waves: Tensor) -> Tensor:
    out = []
    for chunk in waves.split(256):
        with torch.no_grad():
            out.append(env_like.features(chunk))
    return torch.cat(out)


class Regressor(nn.Module):
    """Target features -> normalised parameters (sigmoid outputs)."""

    def __init__(self, n_in: int, n_out: int) -> None:
        super().__init__()
        self.net = nn.Sequential(
            nn.Linear(n_in, 256), nn.ReLU(), nn.Linear(256, 256), nn.ReLU(), nn.Linear(256, n_out)
        )

    def forward(self, x: Tensor) -> Tensor:
        return torch.sigmoid(self.net(x))


def train_regressor(
    cfg: Config, synth: Synth, env: SoundMatchEnv, lr: float, seed: int
) -> Regressor:
    params = synth.sample(cfg.train_renders, seed=3000 + seed)
    waves = torch.cat([synth.render(p) for p in params.split(256)]).detach()
    x = features(env, waves)
    torch.manual_seed(seed)
    model = Regressor(x.shape[1], synth.num_params)

    def loss(m: nn.Module, batch: Sequence[Tensor]) -> Tensor:
        return torch.nn.functional.mse_loss(m(batch[0]), batch[1])

    train.fit_(
        model, (x, params), epochs=cfg.regressor_epochs, batch_size=64, lr=lr, loss=loss, seed=seed
    )
    model.eval()
    return model


def make_env(cfg: Config, synth: Synth, dist: Callable[[Tensor, Tensor], Tensor], **kw: Any):
    return SoundMatchEnv(synth, max_steps=cfg.episode_steps, distance=dist, **kw)


def train_agent(
    kind: str,
    cfg: Config,
    synth: Synth,
    dist: Callable[[Tensor, Tensor], Tensor],
    lr: float,
    seed: int,
) -> Any:
    from stable_baselines3 import PPO, SAC

    arch = {"net_arch": [128, 128]}
    if kind == "bandit":
        env = SoundMatchEnv(synth, max_steps=1, action_mode="absolute", distance=dist)
    else:
        env = make_env(cfg, synth, dist)
    env.reset(seed=seed)
    if kind == "sac":
        model = SAC(
            "MlpPolicy", env, learning_rate=lr, buffer_size=cfg.train_renders,
            learning_starts=min(200, cfg.train_renders // 4), batch_size=128, train_freq=4,
            gradient_steps=1, gamma=0.9, policy_kwargs=arch, seed=seed, device="cpu",
        )  # fmt: skip
    else:
        model = PPO(
            "MlpPolicy", env, learning_rate=lr, n_steps=cfg.n_steps,
            batch_size=min(64, cfg.n_steps), n_epochs=10, gamma=0.9 if kind == "ppo" else 0.0,
            policy_kwargs=arch, seed=seed, device="cpu",
        )  # fmt: skip
    # Training renders: one per step plus one per episode start.
    per_episode = (1 if kind == "bandit" else cfg.episode_steps) + 1
    steps = cfg.train_renders * (per_episode - 1) // per_episode
    model.learn(total_timesteps=max(steps, cfg.n_steps))
    return model


def run_agent(
    model: Any,
    kind: str,
    cfg: Config,
    synth: Synth,
    dist: Callable[[Tensor, Tensor], Tensor],
    targets: Targets,
    budget: int,
) -> list[Outcome]:
    """Deterministic policy; for budgets past one episode, new episodes start at the best."""
    env = (
        SoundMatchEnv(
            synth, targets=targets.waves, max_steps=1, action_mode="absolute", distance=dist
        )
        if kind == "bandit"
        else make_env(cfg, synth, dist, targets=targets.waves)
    )
    out = []
    for i in range(len(targets.waves)):
        start = time.perf_counter()
        curve: list[float] = []
        best, best_params = math.inf, torch.full((synth.num_params,), 0.5)
        while len(curve) < budget:
            obs, info = env.reset(seed=0, options={"target_index": i, "init": best_params})
            done = False
            for d, p in [(info["distance"], info["params"])]:
                if d < best:
                    best, best_params = d, torch.as_tensor(p).clone()
                curve.append(best)
            while not done and len(curve) < budget:
                action, _ = model.predict(obs, deterministic=True)
                obs, _, _, done, info = env.step(action)
                if info["distance"] < best:
                    best, best_params = info["distance"], torch.as_tensor(info["params"]).clone()
                curve.append(best)
            if kind == "bandit":  # deterministic one-shot: more episodes repeat it
                break
        out.append(Outcome(curve, best_params, time.perf_counter() - start))
    return out


def run_search(
    method: str,
    setting: float,
    synth: Synth,
    dist: Callable[[Tensor, Tensor], Tensor],
    targets: Targets,
    budget: int,
    seed: int,
    guesses: Tensor | None = None,
) -> list[Outcome]:
    out = []
    for i, wave in enumerate(targets.waves):
        start = time.perf_counter()
        if method == "random":
            r = match(wave, synth, method="random", budget=budget, seed=seed, distance=dist)
            curve = r.curve.tolist()
            params = r.params
        elif method == "cma":
            r = match(wave, synth, method="cma", budget=budget, seed=seed, distance=dist,
                      sigma=setting)  # fmt: skip
            curve, params = r.curve.tolist(), r.params
        elif method == "gradient":
            r = match(wave, synth, method="gradient", budget=budget, seed=seed, distance=dist,
                      lr=setting, restarts=4)  # fmt: skip
            curve, params = r.curve.tolist(), r.params
        else:  # regressor+cma: the guess is the first render
            assert guesses is not None
            guess = guesses[i]
            with torch.no_grad():
                first = float(dist(synth.render(guess).unsqueeze(0), wave.unsqueeze(0))[0])
            r = match(wave, synth, method="cma", budget=budget - 1, seed=seed, distance=dist,
                      sigma=setting, init=guess)  # fmt: skip
            curve = [first] + [min(first, v) for v in r.curve.tolist()]
            params = guess if first <= r.distance else r.params
        out.append(Outcome(curve, params, time.perf_counter() - start))
    return out


def run_regressor(
    model: Regressor,
    env: SoundMatchEnv,
    synth: Synth,
    dist: Callable[[Tensor, Tensor], Tensor],
    targets: Targets,
) -> tuple[list[Outcome], Tensor]:
    start = time.perf_counter()
    with torch.no_grad():
        guesses = model(features(env, targets.waves))
        d = dist(synth.render(guesses), targets.waves)
    each = (time.perf_counter() - start) / len(guesses)
    return [Outcome([float(v)], g, each) for v, g in zip(d, guesses, strict=True)], guesses


# ---------------------------------------------------------------------------------------------
# Metrics
# ---------------------------------------------------------------------------------------------


def at(curve: Sequence[float], budget: int) -> float:
    """Best distance within ``budget`` renders (a method that stopped early keeps its best)."""
    return float(curve[min(budget, len(curve)) - 1])


def score(
    outcomes: list[Outcome], targets: Targets, synth: Synth, budget: int
) -> list[dict[str, Any]]:
    """Per-target metrics of the best parameters found within ``budget`` renders."""
    with torch.no_grad():
        audio = synth.render(torch.stack([o.params for o in outcomes]))
        mel = mel_distance(audio, targets.waves, SR)
        f_match = estimate_pitch(audio, SR)
        f_target = estimate_pitch(targets.waves, SR)
    rows = []
    for i, o in enumerate(outcomes):
        pitch = float(cents(f_match[i], f_target[i]).abs())
        err = None
        if targets.kinds[i] == "synth" and targets.params is not None:
            err = float((o.params - targets.params[i]).abs().mean())
        rows.append(
            {
                "target": targets.names[i],
                "kind": targets.kinds[i],
                "distance": at(o.curve, budget),
                "mel": float(mel[i]),
                "param_error": err,
                "pitch_cents": None if math.isnan(pitch) else pitch,
                "renders": min(budget, len(o.curve)),
            }
        )
    return rows


# ---------------------------------------------------------------------------------------------
# One seed
# ---------------------------------------------------------------------------------------------


class Study:
    """Everything that one seed (and the tuning on seed 0) needs."""

    def __init__(self, cfg: Config, real: dict[str, Tensor]) -> None:
        self.cfg = cfg
        self.synth = Synth(sample_rate=SR, duration=cfg.duration)
        sizes = cfg.fft_sizes

        def dist(x: Tensor, y: Tensor) -> Tensor:
            return spectral_distance(x, y, fft_sizes=sizes)

        self.dist = dist
        self.env = SoundMatchEnv(self.synth, distance=dist)  # for its feature map
        self.real_val = {n: real[n] for n in cfg.real_val}
        self.real_test = {n: real[n] for n in cfg.real_test}

    def trajectories(
        self,
        method: str,
        setting: float,
        seed: int,
        targets: Targets,
        budget: int,
        cache: dict[str, Any],
    ) -> list[Outcome]:
        cfg, synth, dist = self.cfg, self.synth, self.dist
        if method in ("regressor", "regressor+cma"):
            lr = setting if method == "regressor" else cache["regressor_lr"]
            model_key = f"regressor:{lr}"
            if model_key not in cache:
                t0 = time.perf_counter()
                cache[model_key] = train_regressor(cfg, synth, self.env, lr, seed)
                cache[f"train_seconds:{model_key}"] = time.perf_counter() - t0
            outs, guesses = run_regressor(cache[model_key], self.env, synth, dist, targets)
            if method == "regressor":
                return outs
            return run_search(method, setting, synth, dist, targets, budget, seed, guesses)
        if method in ("bandit", "ppo", "sac"):
            model_key = f"{method}:{setting}"
            if model_key not in cache:
                t0 = time.perf_counter()
                cache[model_key] = train_agent(method, cfg, synth, dist, setting, seed)
                cache[f"train_seconds:{model_key}"] = time.perf_counter() - t0
            return run_agent(cache[model_key], method, cfg, synth, dist, targets, budget)
        return run_search(method, setting, synth, dist, targets, budget, seed)


def tune(study: Study, cache: dict[str, Any]) -> dict[str, Any]:
    """Choose each method's setting on seed 0's validation targets, for each budget."""
    cfg = study.cfg
    val = make_targets(study.synth, cfg.n_val_synth, study.real_val, seed=1000)
    chosen: dict[str, Any] = {}
    order = ["regressor", *[m for m in METHODS if m != "regressor"]]
    for method in order:
        scores: dict[str, dict[str, float]] = {}
        for setting in cfg.grids[method]:
            outs = study.trajectories(method, setting, 0, val, cfg.long_budget, cache)
            scores[repr(setting)] = {
                str(b): float(np.mean([at(o.curve, b) for o in outs]))
                for b in (cfg.short_budget, cfg.long_budget)
            }
        pick = {
            str(b): min(cfg.grids[method], key=lambda s, b=b: scores[repr(s)][str(b)])
            for b in (cfg.short_budget, cfg.long_budget)
        }
        chosen[method] = {"grid": cfg.grids[method], "validation": scores, "chosen": pick}
        if method == "regressor":
            cache["regressor_lr"] = pick[str(cfg.short_budget)]
        print(f"  tuned {method}: {pick}", flush=True)
    return chosen


def run_seed(study: Study, seed: int, tuning: dict[str, Any], cache: dict[str, Any]) -> dict:
    """Every method on seed ``seed``'s test targets, at both budgets (each its own run)."""
    cfg = study.cfg
    test = make_targets(study.synth, cfg.n_test_synth, study.real_test, seed=2000 + seed)
    budgets = (cfg.short_budget, cfg.long_budget)
    cache["regressor_lr"] = tuning["regressor"]["chosen"][str(cfg.short_budget)]
    results: dict[str, Any] = {}
    curves: dict[str, dict[str, list[float]]] = {}
    seconds: dict[str, Any] = {}
    long_curves: dict[str, list[list[float]]] = {}
    best: dict[str, list[Tensor]] = {}
    for method in METHODS:
        results[method] = {}
        for b in budgets:
            setting = tuning[method]["chosen"][str(b)]
            outs = study.trajectories(method, setting, seed, test, b, cache)
            rows = score(outs, test, study.synth, b)
            results[method][str(b)] = rows
            if b == cfg.long_budget:
                long_curves[method] = [o.curve for o in outs]
                best[method] = [o.params for o in outs]
                curves[method] = {
                    kind: _mean_curve(
                        [o.curve for o, k in zip(outs, test.kinds, strict=True) if k == kind], b
                    )
                    for kind in ("synth", "real")
                }
                trained = [
                    v
                    for k, v in cache.items()
                    if k == f"train_seconds:{_model_key(method, setting, cache)}"
                ]
                seconds[method] = {
                    "per_target": float(np.mean([o.seconds for o in outs])),
                    "training": float(trained[0]) if trained else 0.0,
                }
        print(f"  seed {seed} {method}: done", flush=True)
    # Renders to match: the first render at which a method's best distance reaches what
    # random search found with the whole long budget, per target.
    reach: dict[str, list[int | None]] = {}
    for method in METHODS:
        reach[method] = []
        for i, curve in enumerate(long_curves[method]):
            goal = long_curves["random"][i][-1]
            hit = next((k + 1 for k, v in enumerate(curve) if v <= goal + 1e-9), None)
            reach[method].append(hit)
    return {
        "seed": seed,
        "targets": test.names,
        "kinds": test.kinds,
        "results": results,
        "curves": curves,
        "renders_to_match": reach,
        "seconds": seconds,
        "_best": best,
        "_test": test,
    }


def _model_key(method: str, setting: float, cache: dict[str, Any]) -> str:
    if method == "regressor+cma":
        return f"regressor:{cache['regressor_lr']}"
    return f"{method}:{setting}"


def _mean_curve(curves: list[list[float]], budget: int) -> list[float]:
    if not curves:
        return []
    padded = [c + [c[-1]] * (budget - len(c)) for c in curves]
    return [float(v) for v in np.mean(np.array(padded), axis=0)]


# ---------------------------------------------------------------------------------------------
# Side study: does the loss gradient point towards the target pitch?
# ---------------------------------------------------------------------------------------------

SHIFTS = (10.0, 300.0, 600.0)  # cents; 10 stands for DiffMoog's "epsilon"


def gradient_direction(cfg: Config, seed: int) -> dict[str, dict[str, float]]:
    """Fraction of square-wave notes where d loss / d pitch points towards the target pitch.

    A target note (square wave, open filter, pitch uniform in MIDI 45-75) and a candidate at
    the same patch shifted by +-``shift`` cents; the candidate's gradient with respect to its
    pitch "points the right way" when a descent step moves it towards the target.
    """
    synth = Synth(sample_rate=SR, duration=cfg.duration)
    gen = torch.Generator().manual_seed(5000 + seed)
    n = cfg.direction_pitches
    pitch = 45.0 + 30.0 * torch.rand(n, generator=gen)
    base = {
        "sine": 0.0, "saw": 0.0, "square": 1.0, "noise": 0.0, "fm_index": 0.0,
        "attack": 0.005, "decay": 0.1, "sustain": 0.8, "release": 0.05,
        "gate": 0.8 * cfg.duration, "cutoff": 8000.0, "resonance": 0.7, "filter_env": 0.0,
        "gain": -6.0,
    }  # fmt: skip

    def patch(p: Tensor) -> Tensor:
        return synth.from_physical({**{k: torch.full((n,), v) for k, v in base.items()},
                                    "pitch": p})  # fmt: skip

    sizes = cfg.fft_sizes
    losses: dict[str, Callable[[Tensor, Tensor], Tensor]] = {
        "multi-resolution STFT": lambda x, y: spectral_distance(x, y, fft_sizes=sizes),
        "log-mel L1": lambda x, y: mel_distance(x, y, SR),
        "linear STFT L1": lambda x, y: spectral_distance(x, y, fft_sizes=sizes, log_weight=0.0),
    }
    with torch.no_grad():
        target = synth.render(patch(pitch))
    out: dict[str, dict[str, float]] = {}
    for name, loss in losses.items():
        out[name] = {}
        for shift in SHIFTS:
            right = 0
            for sign in (1.0, -1.0):
                x = patch(pitch + sign * shift / 100.0).requires_grad_(True)
                loss(synth.render(x), target).sum().backward()
                assert x.grad is not None
                # The pitch is above the target for sign +1: the gradient should be positive.
                right += int(((x.grad[:, 0] * sign) > 0).sum())
            out[name][f"{shift:g}"] = right / (2 * n)
    return out


# ---------------------------------------------------------------------------------------------
# Summaries, tables, figures, sounds
# ---------------------------------------------------------------------------------------------


def _ci(s: report.Summary) -> str:
    if math.isnan(s.mean):
        return "n/a"
    if s.n < 2:
        return f"{s.mean:.3f}"
    return f"{s.mean:.3f} ± {s.half_width:.3f}"


def _per_seed(runs: list[dict], method: str, budget: int, kind: str, key: str) -> list[float]:
    """One value per seed: the mean (median for pitch) over that seed's targets of ``kind``."""
    values = []
    for r in runs:
        rows = [x for x in r["results"][method][str(budget)] if x["kind"] == kind]
        if key == "pitch_within_50":  # fraction of the targets whose pitch both sides have
            voiced = [x["pitch_cents"] for x in rows if x["pitch_cents"] is not None]
            values.append(float(np.mean([c < 50 for c in voiced])) if voiced else math.nan)
            continue
        got = [x[key] for x in rows if x[key] is not None]
        if not got:
            values.append(math.nan)
        elif key == "pitch_cents":
            values.append(float(np.median(got)))
        else:
            values.append(float(np.mean(got)))
    return values


def summarise(runs: list[dict], cfg_dict: dict[str, Any]) -> dict[str, Any]:
    budgets = (cfg_dict["short_budget"], cfg_dict["long_budget"])
    out: dict[str, Any] = {}
    for method in METHODS:
        out[method] = {}
        for b in budgets:
            for kind in ("synth", "real"):
                entry = {}
                for key in ("distance", "mel", "param_error", "pitch_cents", "renders"):
                    if key == "param_error" and kind == "real":
                        continue
                    vals = _per_seed(runs, method, b, kind, key)
                    s = report.summarize(vals, missing="propagate")
                    entry[key] = {"mean": s.mean, "half_width_95": s.half_width, "values": vals}
                out[method][f"{kind}@{b}"] = entry
    return out


def tables(result: dict[str, Any]) -> str:
    """The Markdown tables of the report, from ``results.json`` alone."""
    runs, cfg = result["runs"], result["config"]
    short, long = cfg["short_budget"], cfg["long_budget"]
    n = len(runs)
    parts = [
        f"Mean over {n} seed(s) ± half-width of the 95 % Student-t interval over seeds "
        "(each seed's value is the mean over its targets; pitch error: the median over the "
        "targets whose pitch both sides have, and the fraction of those within 50 cents).\n"
    ]
    for b in (short, long):
        for kind, title in (("synth", "held-out synthesizer presets"), ("real", "real sounds")):
            header = ["method", "renders used", "STFT distance", "log-mel distance"]
            formats: list[Any] = [None, ".1f", _ci, _ci]
            if kind == "synth":
                header.append("parameter error")
                formats.append(_ci)
            header += ["pitch error (cents)", "pitch within 50 cents"]
            formats += [_ci, _ci]
            rows = []
            for method in METHODS:
                row: list[report.Cell] = [method]
                row.append(float(np.mean(_per_seed(runs, method, b, kind, "renders"))))
                keys = ["distance", "mel"] + (["param_error"] if kind == "synth" else [])
                keys += ["pitch_cents", "pitch_within_50"]
                for key in keys:
                    row.append(report.summarize(_per_seed(runs, method, b, kind, key),
                                                missing="propagate"))  # fmt: skip
                rows.append(row)
            parts.append(f"### Test targets: {title}, budget {b} renders\n")
            parts.append(report.markdown_table(header, rows, formats=formats))
    # Renders to match.
    rows = []
    for method in METHODS:
        for kind in ("synth", "real"):
            fractions, medians = [], []
            for r in runs:
                hits = [
                    h for h, k in zip(r["renders_to_match"][method], r["kinds"], strict=True)
                    if k == kind
                ]  # fmt: skip
                reached = [h for h in hits if h is not None]
                fractions.append(len(reached) / len(hits))
                medians.append(float(np.median(reached)) if reached else math.nan)
            rows.append([method, kind, report.summarize(fractions),
                         report.summarize(medians, missing="propagate")])  # fmt: skip
    parts.append(f"### Renders to match random search's best of {long} renders (per target)\n")
    parts.append(
        report.markdown_table(
            ["method", "targets", "fraction reached", "median renders when reached"],
            rows,
            formats=[None, None, _ci, _ci],
        )
    )
    # Tuning.
    rows = []
    for method in METHODS:
        t = result["tuning"][method]
        for setting in t["grid"]:
            v = t["validation"][repr(setting)]
            mark = [f"{b}" for b in (short, long) if t["chosen"][str(b)] == setting]
            rows.append([method, f"{setting:g}", v[str(short)], v[str(long)],
                         ", ".join(mark) or "-"])  # fmt: skip
    parts.append("### Tuning on the validation targets of seed 0 (mean STFT distance)\n")
    parts.append(
        report.markdown_table(
            ["method", "setting", f"at {short} renders", f"at {long} renders", "chosen for"],
            rows,
            formats=[None, None, ".3f", ".3f", None],
        )
    )
    # Cost.
    rows = []
    for method in METHODS:
        tr = [r["seconds"][method]["training"] for r in runs]
        pt = [r["seconds"][method]["per_target"] for r in runs]
        renders = cfg["train_renders"] if method in AMORTISED or method == "regressor+cma" else 0
        rows.append([method, renders, report.summarize(tr), report.summarize(pt)])
    parts.append(f"### Cost (one thread): training, and search per target at {long} renders\n")
    parts.append(
        report.markdown_table(
            ["method", "training renders", "training seconds", "seconds per target"],
            rows,
            formats=[None, "d", _ci_s, _ci_s],
        )
    )
    # Gradient direction.
    rows = []
    names = list(runs[0]["direction"])
    for name in names:
        row = [name]
        for shift in SHIFTS:
            row.append(report.summarize([r["direction"][name][f"{shift:g}"] for r in runs]))
        rows.append(row)
    parts.append(
        "### How often the gradient w.r.t. pitch points towards the target (square wave)\n"
    )
    parts.append(
        report.markdown_table(
            ["loss", *(f"±{s:g} cents" for s in SHIFTS)], rows, formats=[None, _ci, _ci, _ci]
        )
    )
    return "\n".join(parts)


def _ci_s(s: report.Cell) -> str:
    assert isinstance(s, report.Summary)
    if s.n < 2:
        return f"{s.mean:.2f}"
    return f"{s.mean:.2f} ± {s.half_width:.2f}"


def figures(result: dict[str, Any], out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    runs, long = result["runs"], result["config"]["long_budget"]
    fig, axes = plt.subplots(1, 2, figsize=(11, 4), sharey=False)
    for ax, kind in zip(axes, ("synth", "real"), strict=True):
        for method in METHODS:
            curves = np.array([r["curves"][method][kind] for r in runs])
            x = np.arange(1, long + 1)
            mean = curves.mean(0)
            style = "--" if method in AMORTISED else "-"
            (line,) = ax.plot(x, mean, style, label=method)
            if len(runs) > 1:
                ax.fill_between(x, curves.min(0), curves.max(0), color=line.get_color(), alpha=0.15)
        ax.set_xscale("log")
        ax.set_xlabel("renders per target")
        ax.set_ylabel("best STFT distance (mean over targets)")
        ax.set_title("held-out presets" if kind == "synth" else "real sounds")
        ax.axvline(result["config"]["short_budget"], color="0.6", lw=0.8)
    axes[1].legend(fontsize=8, ncol=2)
    fig.tight_layout()
    fig.savefig(out / "curves.png", dpi=110)
    plt.close(fig)


def listening(result: dict[str, Any], run: dict[str, Any], cfg: Config, out: Path) -> None:
    """Write a few targets and their matches as .wav files, and their spectrograms."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import soundfile as sf

    synth = Synth(sample_rate=SR, duration=cfg.duration)
    test: Targets = run["_test"]
    picks = [0] + [test.names.index(n) for n in cfg.real_test if n in LISTEN]
    shown = ("cma", "ppo", "regressor+cma")
    fig, axes = plt.subplots(len(picks), 1 + len(shown), figsize=(12, 2.4 * len(picks)),
                             squeeze=False)  # fmt: skip
    result["listening"] = []
    for row, i in enumerate(picks):
        slug = test.names[i].split("/")[-1].replace(" ", "")
        sounds = {"target": test.waves[i]}
        with torch.no_grad():
            for m in shown:
                sounds[m] = synth.render(run["_best"][m][i])
        for col, (name, wave) in enumerate(sounds.items()):
            w = wave.numpy()
            path = out / f"{slug}_{name.replace('+', '_')}.wav"
            sf.write(str(path), np.clip(w / max(1e-6, float(np.abs(w).max())) * 0.8, -1, 1),
                     SR, subtype="PCM_16")  # fmt: skip
            result["listening"].append(path.name)
            spec = log_mel(wave, sample_rate=SR, n_fft=512, hop_length=128, n_mels=64).numpy()
            ax = axes[row, col]
            ax.imshow(spec, origin="lower", aspect="auto", cmap="magma",
                      vmin=spec.max() - 12, vmax=spec.max())  # fmt: skip
            ax.set_xticks([])
            ax.set_yticks([])
            if col == 0:
                ax.set_ylabel(test.names[i].split("/")[-1], fontsize=8)
            ax.set_title(name, fontsize=9)
    fig.tight_layout()
    fig.savefig(out / "spectrograms.png", dpi=100)
    plt.close(fig)


LISTEN = ("elec_ping", "animals/birds/cuckoo")


def _versions() -> dict[str, str]:
    from importlib.metadata import version

    names = ("weightspace", "torch", "gymnasium", "stable_baselines3", "cma", "numpy")
    return {n: version(n) for n in names}


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
    real = real_targets(cfg)
    study = Study(cfg, real)
    cache: dict[str, Any] = {}
    tuning = tune(study, cache)
    print(f"tuning: {time.perf_counter() - start:.0f} s", flush=True)
    runs = []
    for seed in cfg.seeds:
        t0 = time.perf_counter()
        if seed != 0:  # seed 0's tuned models are reused; other seeds train their own
            cache = {"regressor_lr": cache["regressor_lr"]}
        run = run_seed(study, seed, tuning, cache)
        run["direction"] = gradient_direction(cfg, seed)
        runs.append(run)
        print(f"seed {seed}: {time.perf_counter() - t0:.0f} s", flush=True)
    config = {k: (str(v) if isinstance(v, Path) else v) for k, v in asdict(cfg).items()}
    result: dict[str, Any] = {
        "mode": "quick" if args.quick else "full",
        "config": config,
        "tuning": tuning,
        "runs": [{k: v for k, v in r.items() if not k.startswith("_")} for r in runs],
    }
    listening(result, runs[0], cfg, cfg.out)
    result["summary"] = summarise(result["runs"], config)
    result["seconds"] = time.perf_counter() - start
    result["torch_threads"] = torch.get_num_threads()
    result["versions"] = _versions()
    text = tables(result)
    figures(result, cfg.out)
    (cfg.out / "results.json").write_text(json.dumps(result, indent=1, allow_nan=True))
    (cfg.out / "tables.md").write_text(text)
    (cfg.out / "tables.rst").write_text(markdown_to_rst(text))
    print(text)
    print(f"total {result['seconds']:.0f} s; wrote {cfg.out}")


if __name__ == "__main__":
    main()
