"""
Forget "6" and learn "3" in its place
=====================================

An MNIST classifier is pretrained on nine digits (every digit but "3"); its output 5 means
"6". We make it forget "6" and learn "3" in that output, with every method of
:mod:`weightspace.unlearn`, and compare each with retraining from scratch on the data a model
without "6" and with "3" would have seen. Then: the pitfalls of the catalogue's saliency
baseline (the other classes, where the 6s go, the features of "6", relearning), the same study
on synthetic spoken digits (:func:`weightspace.data.spoken_words`), and two extreme cases
(only 10 examples of the new class; forgetting two classes at once).

Run ``python run_unlearning.py`` for the full study (about 10 minutes on two CPU cores; it
writes ``results/``) or ``python run_unlearning.py --quick`` for a smoke run in seconds.
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

import weightspace as ws
from weightspace import report, unlearn

HERE = Path(__file__).resolve().parent
KEEP = (0, 1, 2, 4, 5, 6, 7, 8, 9)  # output i means digit KEEP[i]
SLOT = {d: i for i, d in enumerate(KEEP)}
FORGET, NEW = 6, 3
SIX = SLOT[FORGET]  # output 5: "6" before, "3" after


@dataclass
class Config:
    """Sizes of one run: the full study or the quick smoke run."""

    seeds: tuple[int, ...]
    per_class: int  # training images per digit
    test_per_class: int | None  # test images per digit (None: all)
    epochs: int  # pretraining and retraining epochs
    method_epochs: int  # scale of the methods' budgets (1 in full mode)
    audio_clips: int  # clips per (speaker, word) for the spoken digits
    audio_speakers: int  # speakers used (None: all)
    few_shot: int  # examples of the new class in the extreme case
    relearn_steps: int
    out: Path = field(default_factory=lambda: HERE / "results")


FULL = Config(
    seeds=(0, 1, 2),
    per_class=1000,
    test_per_class=None,
    epochs=5,
    method_epochs=1,
    audio_clips=3,
    audio_speakers=32,
    few_shot=10,
    relearn_steps=30,
)
QUICK = Config(
    seeds=(0,),
    per_class=40,
    test_per_class=30,
    epochs=2,
    method_epochs=1,
    audio_clips=1,
    audio_speakers=4,
    few_shot=5,
    relearn_steps=3,
)

Pair = tuple[Tensor, Tensor]


def mlp(n_in: int, n_out: int) -> nn.Sequential:
    """The classifier: a two-hidden-layer MLP (fast enough for three seeds on two cores)."""
    return nn.Sequential(
        nn.Flatten(),
        nn.Linear(n_in, 256),
        nn.ReLU(),
        nn.Linear(256, 128),
        nn.ReLU(),
        nn.Linear(128, n_out),
    )


def pretrain(model: nn.Module, data: Pair, epochs: int, seed: int, lr: float = 1e-3) -> nn.Module:
    """Plain cross-entropy training with Adam, batch 128 (the pretraining recipe); the
    examples' order is one seeded stream of permutations over the epochs."""
    trainer = ws.train.Trainer(model, lr=lr, seed=seed)
    g = torch.Generator().manual_seed(seed)
    x, y = data
    model.train()
    for _ in range(epochs):
        for idx in torch.randperm(len(y), generator=g).split(128):
            trainer.step(trainer.compute_loss((x[idx], y[idx])))
    return model.eval()


def cat(*parts: Pair) -> Pair:
    return torch.cat([p[0] for p in parts]), torch.cat([p[1] for p in parts])


# %%
# Data: MNIST digits, pixels normalised as for the library's MNIST networks
# -------------------------------------------------------------------------


def mnist_split(cfg: Config) -> dict[str, Pair]:
    train_set, test_set = ws.data.mnist("train"), ws.data.mnist("test")

    def take(ds: ws.data.ImageDataset, digit: int, n: int | None, label: int) -> Pair:
        idx = (ds.targets == digit).nonzero().squeeze(1)
        idx = idx[:n] if n is not None else idx
        x = ws.models.MNISTNet.preprocess(ds.images[idx])
        return x, torch.full((len(idx),), label, dtype=torch.int64)

    others = [d for d in KEEP if d != FORGET]
    n, nt = cfg.per_class, cfg.test_per_class
    return {
        "retain": cat(*(take(train_set, d, n, SLOT[d]) for d in others)),
        "forget": take(train_set, FORGET, n, SIX),
        "new": take(train_set, NEW, n, SIX),
        "test": cat(*(take(test_set, d, nt, SLOT[d]) for d in others)),
        "forget_test": take(test_set, FORGET, nt, SIX),
        "new_test": take(test_set, NEW, nt, SIX),
    }


# %%
# Methods: the same settings for every seed; budgets in passes over the forget (or new) set
# -----------------------------------------------------------------------------------------


def methods(cfg: Config, epochs: int) -> dict[str, unlearn.Unlearner]:
    """Every method with about the same budget: 8 passes over the forget set (FineTune: one
    pass over retain + new, which is as many steps), batches of 128 per data stream."""
    e = cfg.method_epochs
    return {
        "Retrain": unlearn.Retrain(epochs=epochs),
        "FineTune": unlearn.FineTune(epochs=e),
        "GradientAscent": unlearn.GradientAscent(epochs=8 * e, lr=1e-4),
        "NegGrad+": unlearn.NegGradPlus(epochs=8 * e, beta=0.9),
        "RandomLabels": unlearn.RandomLabels(epochs=8 * e),
        "SalUn": unlearn.SalUn(epochs=8 * e, fraction=0.5),
        "SCRUB": unlearn.SCRUB(epochs=8 * e, max_epochs=4 * e),
        "TaskVectorNegation": unlearn.TaskVectorNegation(epochs=4 * e),
        "MaskedFineTune (catalogue)": unlearn.MaskedFineTune(epochs=8 * e, fraction=0.05),
        "Redistribute (ours)": unlearn.Redistribute(
            epochs=8 * e, retain_weight=2.0, label_weight=1.0
        ),
        "Redistribute (ours, fast)": unlearn.Redistribute(
            epochs=4 * e, lr=3e-3, retain_weight=2.0, label_weight=1.0
        ),
    }


def run_method(
    name: str,
    method: unlearn.Unlearner,
    base: nn.Module,
    d: dict[str, Pair],
    seed: int,
    new: bool = True,
) -> tuple[nn.Module, dict[str, float | None]]:
    model = method.unlearn(
        base, d["forget"], d["retain"], d["new"] if new else None, seed=seed, progress=False
    )
    scores = unlearn.evaluate(
        model,
        forget=d["forget"],
        retain=d["retain"],
        test=d["test"],
        new=d["new_test"] if new else None,
        forget_test=d["forget_test"],
        seed=seed,
    )
    row: dict[str, float | None] = dict(scores.as_dict())
    row["time_s"] = method.elapsed_s_
    row["distance"] = ws.TaskVector.from_models(base=base, finetuned=model).norm()
    return model, row


def study(
    cfg: Config,
    d: dict[str, Pair],
    make: Callable[[], nn.Module],
    chosen: list[str] | None,
    label: str,
    new: bool = True,
    bases: dict[int, nn.Module] | None = None,
) -> tuple[dict[int, dict[str, dict[str, float | None]]], dict[int, dict[str, nn.Module]]]:
    """Pretrain (or reuse) a model per seed, run the methods, return metrics and models."""
    rows: dict[int, dict[str, dict[str, float | None]]] = {}
    models: dict[int, dict[str, nn.Module]] = {}
    for seed in cfg.seeds:
        if bases is not None and seed in bases:
            base = bases[seed]
        else:
            torch.manual_seed(seed)
            pre = cat(d["retain"], d["forget"])
            if "extra_forget" in d:
                pre = cat(pre, d["extra_forget"])
            base = pretrain(make(), pre, cfg.epochs, seed)
        original = unlearn.evaluate(
            base,
            forget=d["forget"],
            retain=d["retain"],
            test=d["test"],
            new=d["new_test"] if new else None,
            forget_test=d["forget_test"],
            seed=seed,
        ).as_dict()
        rows[seed] = {"Original": {**original, "time_s": 0.0, "distance": 0.0}}
        models[seed] = {"Original": base}
        all_methods = methods(cfg, cfg.epochs)
        for name, method in all_methods.items():
            if chosen is not None and name not in chosen:
                continue
            model, row = run_method(name, method, base, d, seed, new=new)
            rows[seed][name] = row
            models[seed][name] = model
            print(
                f"[{label} seed {seed}] {name:27s} forget {row['forget_accuracy']:.3f} "
                f"test {row['test_accuracy']:.3f} new {row['new_accuracy'] or 0:.3f} "
                f"MIA {row['mia_efficacy']:.3f} time {row['time_s']:.1f}s",
                flush=True,
            )
        retrain_time = rows[seed]["Retrain"]["time_s"]
        assert retrain_time is not None
        for row in rows[seed].values():
            t = row["time_s"]
            row["time_ratio"] = t / retrain_time if t is not None else None
    return rows, models


# %%
# Aggregation: mean ± standard deviation over seeds, Markdown tables
# ------------------------------------------------------------------

COLUMNS = [
    ("forget_accuracy", "forget acc"),
    ("forget_test_accuracy", "forget-test acc"),
    ("retain_accuracy", "retain acc"),
    ("test_accuracy", "test acc"),
    ("new_accuracy", "new-class acc"),
    ("mia_efficacy", "MIA efficacy"),
    ("time_ratio", "time / retrain"),
    ("distance", "||θ - θ0||"),
]


def summarise(
    rows: dict[int, dict[str, dict[str, float | None]]],
) -> dict[str, dict[str, list[float]]]:
    """Per method and metric, ``[mean, population std]`` over the seeds (as in results.json)."""
    out: dict[str, dict[str, list[float]]] = {}
    for per_seed in rows.values():
        for name, row in per_seed.items():
            for key, value in row.items():
                if value is not None:
                    out.setdefault(name, {}).setdefault(key, []).append(float(value))
    summaries = {
        name: {k: report.summarize(v, ddof=0) for k, v in m.items()} for name, m in out.items()
    }
    return {name: {k: [s.mean, s.std] for k, s in m.items()} for name, m in summaries.items()}


def markdown(summary: dict[str, dict[str, list[float]]], title: str, n_seeds: int) -> str:
    cols = [(k, h) for k, h in COLUMNS if any(k in s for s in summary.values())]
    raw = ("time_ratio", "distance")  # the others are accuracies, shown in %
    rows: list[list[report.Cell]] = []
    for name, s in summary.items():
        cells: list[report.Cell] = [name]
        for key, _ in cols:
            cell = report.Summary(*s[key], n=n_seeds, ddof=0) if key in s else None
            cells.append(cell if cell is None or key in raw else cell.scaled(100))
        rows.append(cells)
    formats = [None, *(".3f" if k in raw else ".1f" for k, _ in cols)]
    table = report.markdown_table(
        ["method", *(h for _, h in cols)], rows, formats=formats, missing="–"
    )
    return f"### {title}\n\nMean ± standard deviation over {n_seeds} seed(s).\n\n{table}"


def tables(results: dict) -> str:
    """``tables.md`` from ``results.json``."""
    n = len(results["mnist"]["per_seed"])
    few = results["few_shot"]["n_new"]
    md = [
        markdown(results["mnist"]["summary"], "MNIST: replace 6 by 3", n),
        markdown(results["few_shot"]["summary"], f"MNIST, only {few} images of 3", n),
        markdown(results["forget_two"]["summary"], "MNIST: forget 6 and 9 (no new class)", n),
    ]
    if "speech" in results:
        md.append(markdown(results["speech"]["summary"], "Spoken digits: replace six by three", n))
    return "\n".join(md)


# %%
# Pitfalls of the catalogue's baseline, on seed 0
# -----------------------------------------------


def per_class_accuracy(model: nn.Module, d: dict[str, Pair]) -> dict[str, float]:
    """Test accuracy of each kept digit, and of "3" in the output that meant "6"."""
    x, y = d["test"]
    out = {}
    for digit in KEEP:
        if digit != FORGET:
            sel = y == SLOT[digit]
            out[str(digit)] = ws.train.accuracy(model, (x[sel], y[sel]))
    out[str(NEW)] = ws.train.accuracy(model, d["new_test"])
    return out


def where_sixes_go(model: nn.Module, d: dict[str, Pair]) -> dict[str, float]:
    """Fraction of test 6s assigned to each output (named by its digit after replacement)."""
    names = [str(dg) if dg != FORGET else f"{NEW} (was {FORGET})" for dg in KEEP]
    with torch.no_grad():
        p = F.softmax(model(d["forget_test"][0]), 1)
    counts = torch.bincount(p.argmax(1), minlength=len(KEEP)).float() / len(p)
    out = {n: float(c) for n, c in zip(names, counts, strict=True)}
    out["mean max-probability"] = float(p.max(1).values.mean())
    return out


def probe_accuracy(model: nn.Sequential, d: dict[str, Pair], seed: int) -> float:
    """Linear probe on the penultimate features: can "6" still be told from the other digits?"""

    def feats(x: Tensor) -> Tensor:
        with torch.no_grad():
            return model[:-1](x)

    def balanced(pos: Tensor, neg: Tensor) -> Pair:
        n = min(len(pos), len(neg))
        g = torch.Generator().manual_seed(seed)
        neg = neg[torch.randperm(len(neg), generator=g)[:n]]
        return torch.cat([pos[:n], neg]), torch.cat([torch.ones(n), torch.zeros(n)])

    xtr, ytr = balanced(feats(d["forget"][0]), feats(d["retain"][0]))
    xte, yte = balanced(feats(d["forget_test"][0]), feats(d["test"][0]))
    mean, std = xtr.mean(0), xtr.std(0) + 1e-6
    w = torch.zeros(xtr.shape[1], requires_grad=True)
    b = torch.zeros((), requires_grad=True)
    opt = torch.optim.LBFGS([w, b], max_iter=100, line_search_fn="strong_wolfe")

    def closure() -> Tensor:
        opt.zero_grad()
        loss = F.binary_cross_entropy_with_logits((xtr - mean) / std @ w + b, ytr)
        loss = loss + 1e-3 * w.square().sum()
        loss.backward()
        return loss

    opt.step(closure)
    with torch.no_grad():
        return float((((xte - mean) / std @ w + b > 0).float() == yte).float().mean())


def relearn_curve(model: nn.Module, d: dict[str, Pair], steps: int, seed: int) -> list[float]:
    """Fine-tune on 64 forget examples (original label) and track test-6 accuracy."""
    import copy

    m = copy.deepcopy(model).train()
    g = torch.Generator().manual_seed(seed)
    idx = torch.randperm(len(d["forget"][1]), generator=g)[:64]
    x, y = d["forget"][0][idx], d["forget"][1][idx]
    trainer = ws.train.Trainer(m, lr=1e-3)
    curve = [ws.train.accuracy(m, d["forget_test"])]
    for _ in range(steps):
        trainer.step(trainer.compute_loss((x, y)))
        curve.append(ws.train.accuracy(m, d["forget_test"]))
    return curve


# %%
# Spoken digits: the same replacement on synthetic speech (espeak-ng, flite voices)
# -----------------------------------------------------------------------------------


def spoken_split(cfg: Config) -> dict[str, Pair]:
    speakers = [s.name for s in ws.data.SPEAKERS][: cfg.audio_speakers]
    ds = ws.data.spoken_words(
        ws.data.DIGIT_WORDS, speakers=speakers, clips_per_speaker=cfg.audio_clips, progress=False
    )
    # Log power spectrogram (25 ms windows, 10 ms hop), pooled to 40 bands x 25 frames.
    logp = ws.audio.log_spectrogram(ds.waveforms, n_fft=400, hop_length=160, eps=1e-6)
    logp = logp[:, 1:201]  # [N, 200, frames] without the 0 Hz bin
    feats = F.adaptive_avg_pool2d(logp.unsqueeze(1), (40, 25)).flatten(1)
    n_test = max(2, len(speakers) // 4)
    test_names = set(speakers[-n_test:])
    is_test = torch.tensor([n in test_names for n in ds.speaker_name])
    mean, std = feats[~is_test].mean(0), feats[~is_test].std(0) + 1e-6
    x = (feats - mean) / std
    words = ds.labels  # digit index

    def part(digit: int, test: bool, label: int | None = None) -> Pair:
        sel = (words == digit) & (is_test if test else ~is_test)
        lab = SLOT[digit] if label is None else label
        return x[sel], torch.full((int(sel.sum()),), lab, dtype=torch.int64)

    others = [dg for dg in KEEP if dg != FORGET]
    return {
        "retain": cat(*(part(dg, False) for dg in others)),
        "forget": part(FORGET, False),
        "new": part(NEW, False, SIX),
        "test": cat(*(part(dg, True) for dg in others)),
        "forget_test": part(FORGET, True),
        "new_test": part(NEW, True, SIX),
    }


# %%
# Figures
# -------


def figures(
    out: Path, summaries: dict[str, dict[str, dict[str, list[float]]]], extra: dict
) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    # 1. Trade-off: forget accuracy against test accuracy, MNIST and speech.
    names_all = list(dict.fromkeys(n for s_ in summaries.values() for n in s_))
    cmap = plt.get_cmap("tab20")
    color = {n: cmap(i % 20) for i, n in enumerate(names_all)}
    fig, axes = plt.subplots(1, 2, figsize=(13, 4.8))
    handles = {}
    for ax, key in zip(axes, ["mnist", "speech"], strict=True):
        s = summaries.get(key, {})
        for name, m in s.items():
            fx, fy = m["forget_accuracy"], m["test_accuracy"]
            marker = "*" if name == "Retrain" else ("s" if "ours" in name else "o")
            h = ax.errorbar(
                100 * fx[0],
                100 * fy[0],
                xerr=100 * fx[1],
                yerr=100 * fy[1],
                fmt=marker,
                ms=14 if marker == "*" else 7,
                color=color[name],
                capsize=2,
                alpha=0.85,
            )
            handles[name] = h
        ax.set_xlabel("forget accuracy (%) — lower is more forgetting")
        ax.set_ylabel("test accuracy on kept classes (%)")
        ax.set_title(f"{key}: replace '6' by '3'")
        ax.grid(alpha=0.3)
    fig.legend(list(handles.values()), list(handles), loc="center right", fontsize=8)
    fig.tight_layout(rect=(0, 0, 0.8, 1))
    fig.savefig(out / "tradeoff.png", dpi=110)
    plt.close(fig)

    # 2. New-class accuracy and time relative to retraining (MNIST).
    s = summaries["mnist"]
    names = [n for n in s if n != "Original"]
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(11, 4))
    a1.barh(
        names,
        [100 * s[n].get("new_accuracy", [0, 0])[0] for n in names],
        xerr=[100 * s[n].get("new_accuracy", [0, 0])[1] for n in names],
    )
    a1.set_xlabel("new-class ('3') test accuracy (%)")
    a2.barh(
        names, [s[n]["time_ratio"][0] for n in names], xerr=[s[n]["time_ratio"][1] for n in names]
    )
    a2.axvline(0.1, color="k", ls="--", lw=1)
    a2.set_xlabel("wall time / retraining time (dashed: 10 % target)")
    a2.set_yticklabels([])
    fig.tight_layout()
    fig.savefig(out / "new_class_and_time.png", dpi=110)
    plt.close(fig)

    # 3. Per-class test accuracy after replacement (seed 0).
    pc = extra["per_class"]
    fig, ax = plt.subplots(figsize=(10, 3.8))
    digits = list(next(iter(pc.values())))
    width = 0.8 / len(pc)
    for i, (name, acc) in enumerate(pc.items()):
        ax.bar(
            [j + i * width for j in range(len(digits))],
            [100 * acc[dg] for dg in digits],
            width,
            label=name,
        )
    ax.set_xticks([j + 0.4 - width / 2 for j in range(len(digits))], digits)
    ax.set_ylim(0, 122)
    ax.set_yticks(range(0, 101, 20))
    ax.set_ylabel("test accuracy (%)")
    ax.set_xlabel("digit (3 sits in the output that meant 6)")
    ax.legend(fontsize=7, ncol=5, loc="upper center")
    fig.tight_layout()
    fig.savefig(out / "per_class.png", dpi=110)
    plt.close(fig)

    # 4. Relearning the forgotten class from 64 examples.
    fig, ax = plt.subplots(figsize=(6, 4))
    for name, curve in extra["relearn"].items():
        ax.plot([100 * c for c in curve], label=name)
    ax.set_xlabel("fine-tuning steps on 64 images of '6'")
    ax.set_ylabel("test-6 accuracy (%)")
    ax.legend(fontsize=7)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(out / "relearn.png", dpi=110)
    plt.close(fig)


# %%
# Main
# ----


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="tiny run, in seconds")
    parser.add_argument("--out", type=Path, default=None, help="results folder")
    parser.add_argument("--no-audio", action="store_true", help="skip the spoken digits")
    parser.add_argument("--replot", action="store_true", help="redraw figures from results.json")
    args = parser.parse_args(argv)
    cfg = QUICK if args.quick else FULL
    out = args.out if args.out is not None else cfg.out
    out.mkdir(parents=True, exist_ok=True)
    if args.replot:
        saved = json.loads((out / "results.json").read_text())
        keys = [k for k in ("mnist", "speech") if k in saved]
        figures(out, {k: saved[k]["summary"] for k in keys}, saved["pitfalls"])
        return saved
    torch.set_num_threads(max(1, min(2, torch.get_num_threads())))
    start = time.perf_counter()
    results: dict = {
        "config": {k: str(v) for k, v in vars(cfg).items()},
        "mode": "quick" if args.quick else "full",
    }

    # --- MNIST: every method, every seed ------------------------------------------------------
    d = mnist_split(cfg)
    make = lambda: mlp(784, len(KEEP))  # noqa: E731
    rows, models = study(cfg, d, make, None, "mnist")
    results["mnist"] = {"per_seed": rows, "summary": summarise(rows)}
    bases = {seed: models[seed]["Original"] for seed in cfg.seeds}

    # --- pitfalls, seed 0 -----------------------------------------------------------------
    seed0 = cfg.seeds[0]
    focus = ["Original", "MaskedFineTune (catalogue)", "SalUn", "Redistribute (ours)", "Retrain"]
    m0 = models[seed0]
    extra = {
        "per_class": {n: per_class_accuracy(m0[n], d) for n in focus},
        "where_sixes_go": {n: where_sixes_go(m0[n], d) for n in focus},
        "probe_six_vs_rest": {n: probe_accuracy(m0[n], d, seed0) for n in focus},  # type: ignore[arg-type]
        "relearn": {n: relearn_curve(m0[n], d, cfg.relearn_steps, seed0) for n in focus},
    }
    mask_method = unlearn.MaskedFineTune(epochs=cfg.method_epochs, fraction=0.05, max_steps=1)
    mask_method.unlearn(bases[seed0], d["forget"], d["retain"], d["new"], seed=seed0)
    extra["baseline_mask_per_tensor"] = ws.saliency.mask_stats(mask_method.mask_).fractions()
    results["pitfalls"] = extra

    # --- extreme case 1: very few examples of the new class ------------------------------
    few = dict(d)
    few["new"] = (d["new"][0][: cfg.few_shot], d["new"][1][: cfg.few_shot])
    chosen = ["Retrain", "SalUn", "MaskedFineTune (catalogue)", "Redistribute (ours)"]
    if args.quick:
        chosen = ["Retrain", "Redistribute (ours)"]
    rows_few, _ = study(cfg, few, make, chosen, f"few-shot {cfg.few_shot}", bases=bases)
    results["few_shot"] = {
        "n_new": cfg.few_shot,
        "per_seed": rows_few,
        "summary": summarise(rows_few),
    }

    # --- extreme case 2: forget two classes at once (6 and 9), no new class ---------------
    two = dict(d)
    nine = SLOT[9]
    is9 = d["retain"][1] == nine
    two["forget"] = cat(d["forget"], (d["retain"][0][is9], d["retain"][1][is9]))
    two["retain"] = (d["retain"][0][~is9], d["retain"][1][~is9])
    t9 = d["test"][1] == nine
    two["forget_test"] = cat(d["forget_test"], (d["test"][0][t9], d["test"][1][t9]))
    two["test"] = (d["test"][0][~t9], d["test"][1][~t9])
    chosen2 = ["Retrain", "RandomLabels", "SalUn", "SCRUB", "Redistribute (ours)"]
    if args.quick:
        chosen2 = ["Retrain", "Redistribute (ours)"]
    rows_two, _ = study(cfg, two, make, chosen2, "forget 6+9", new=False, bases=bases)
    results["forget_two"] = {"per_seed": rows_two, "summary": summarise(rows_two)}

    # --- spoken digits --------------------------------------------------------------------
    summaries = {"mnist": results["mnist"]["summary"]}
    if not args.no_audio:
        da = spoken_split(cfg)
        n_in = da["retain"][0].shape[1]
        make_a = lambda: mlp(n_in, len(KEEP))  # noqa: E731
        audio_cfg = Config(
            **{**vars(cfg), "epochs": cfg.epochs * 10, "method_epochs": cfg.method_epochs * 10}
        )
        chosen_a = [
            "Retrain",
            "FineTune",
            "NegGrad+",
            "SalUn",
            "SCRUB",
            "MaskedFineTune (catalogue)",
            "Redistribute (ours)",
        ]
        if args.quick:
            chosen_a = ["Retrain", "MaskedFineTune (catalogue)", "Redistribute (ours)"]
        rows_a, _ = study(audio_cfg, da, make_a, chosen_a, "speech")
        results["speech"] = {
            "sizes": {k: len(v[1]) for k, v in da.items()},
            "per_seed": rows_a,
            "summary": summarise(rows_a),
        }
        summaries["speech"] = results["speech"]["summary"]

    results["wall_time_s"] = time.perf_counter() - start
    (out / "results.json").write_text(json.dumps(results, indent=1, default=float))
    text = tables(results)
    (out / "tables.md").write_text(text)
    figures(out, summaries, extra)
    print(text)
    print(f"wrote {out} in {results['wall_time_s']:.0f} s")
    return results


if __name__ == "__main__":
    main()
