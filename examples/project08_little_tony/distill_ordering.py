"""
Distillation on MNIST and Fashion-MNIST: does the known ordering show?
======================================================================

The check of :mod:`weightspace.distill` on a known result (Hinton et al. 2015; Zhao et al.,
CVPR 2022): a small student distilled from a larger teacher beats the same student trained
alone. One teacher per data set (a 784-512-512-10 MLP trained on 50,000 images) teaches a
784-32-10 MLP on a *transfer set* of a few thousand training images, four ways:

* ``alone``: cross-entropy on the labels only;
* ``kd``: Hinton's loss, ``0.1 CE + 0.9 T^2 KL`` (:class:`weightspace.distill.KD`);
* ``dkd``: ``CE + DKD`` with alpha 1 and temperature 4 (:class:`weightspace.distill.DKD`);
* ``hints``: ``CE + w * MSE`` between the teacher's second hidden layer and the student's
  hidden layer through a learnt linear connector (FitNets; :class:`weightspace.distill.Hint`).

Every method gets the same tuning budget, three settings chosen on the validation split
(the last 10,000 training images, never trained on) for each seed: the learning rate for
``alone``, the temperature for ``kd``, ``beta`` for ``dkd`` and the hint weight for
``hints``. Test accuracy of the chosen setting, over three seeds (transfer set, student
initialisation and order all change with the seed), with 95 % t intervals and per-seed values.

Run ``python distill_ordering.py`` for the full study (writes ``results/ordering/``) or
``python distill_ordering.py --quick`` for a smoke run of a few seconds.
"""

from __future__ import annotations

import argparse
import copy
import itertools
import json
import sys
import time
from collections import OrderedDict
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

import weightspace as ws
from weightspace import distill, report, train

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from _common import markdown_to_rst

METHODS = ("alone", "kd", "dkd", "hints")
TITLES = {"mnist": "MNIST", "fashion_mnist": "Fashion-MNIST"}


@dataclass
class Config:
    """Sizes of one run: the full study or the quick smoke run."""

    datasets: tuple[str, ...]
    seeds: tuple[int, ...]
    teacher_train: int  # images the teacher is trained on (of the first 50,000)
    teacher_epochs: int
    transfer: int  # images of the student's transfer set, redrawn per seed
    val: int  # validation images (of the last 10,000 training images), fixed
    test: int  # test images (the first `test` of the official test split)
    epochs: int  # student epochs
    batch_size: int
    lr: float  # the learning rate of every distilled student
    grid: dict[str, tuple[float, ...]]  # method -> its three settings
    student_hidden: int
    teacher_hidden: int
    out: Path


GRID: dict[str, tuple[float, ...]] = {
    "alone": (1e-3, 3e-3, 1e-2),  # learning rate
    "kd": (2.0, 4.0, 8.0),  # temperature
    "dkd": (1.0, 2.0, 8.0),  # beta
    "hints": (1.0, 10.0, 100.0),  # hint weight
}
FULL = Config(
    datasets=("mnist", "fashion_mnist"),
    seeds=(0, 1, 2),
    teacher_train=50_000,
    teacher_epochs=6,
    transfer=3000,
    val=5000,
    test=10_000,
    epochs=30,
    batch_size=64,
    lr=3e-3,
    grid=GRID,
    student_hidden=32,
    teacher_hidden=512,
    out=HERE / "results" / "ordering",
)
QUICK = Config(
    datasets=("mnist",),
    seeds=(0,),
    teacher_train=4000,
    teacher_epochs=1,
    transfer=500,
    val=500,
    test=1000,
    epochs=2,
    batch_size=64,
    lr=3e-3,
    grid={"alone": (3e-3,), "kd": (4.0,), "dkd": (8.0,), "hints": (10.0,)},
    student_hidden=32,
    teacher_hidden=128,
    out=HERE / "results" / "ordering",
)


def mlp(widths: list[int]) -> nn.Sequential:
    """``Linear -> ReLU`` blocks named ``fc1, act1, ...`` and a linear ``out`` layer."""
    layers: OrderedDict[str, nn.Module] = OrderedDict()
    for i, (a, b) in enumerate(itertools.pairwise(widths[:-1]), start=1):
        layers[f"fc{i}"] = nn.Linear(a, b)
        layers[f"act{i}"] = nn.ReLU()
    layers["out"] = nn.Linear(widths[-2], widths[-1])
    return nn.Sequential(layers)


def load(name: str, cfg: Config) -> dict[str, tuple[Tensor, Tensor]]:
    """Train (first 50,000), validation (last 10,000) and test images, flattened in [0, 1]."""
    source = ws.data.mnist if name == "mnist" else ws.data.fashion_mnist
    x, y = source("train").tensors(flatten=True)
    xt, yt = source("test").tensors(flatten=True)
    return {
        "train": (x[:50_000], y[:50_000]),
        "val": (x[50_000 : 50_000 + cfg.val], y[50_000 : 50_000 + cfg.val]),
        "test": (xt[: cfg.test], yt[: cfg.test]),
    }


def make_teacher(split: dict[str, tuple[Tensor, Tensor]], cfg: Config) -> tuple[nn.Module, dict]:
    x, y = split["train"]
    torch.manual_seed(0)
    teacher = mlp([784, cfg.teacher_hidden, cfg.teacher_hidden, 10])
    t0 = time.perf_counter()
    train.fit_(teacher, (x[: cfg.teacher_train], y[: cfg.teacher_train]),
               epochs=cfg.teacher_epochs, batch_size=128, lr=1e-3, seed=0)  # fmt: skip
    info = {
        "parameters": sum(p.numel() for p in teacher.parameters()),
        "val": train.accuracy(teacher, split["val"]),
        "test": train.accuracy(teacher, split["test"]),
        "seconds": time.perf_counter() - t0,
    }
    return teacher.eval(), info


def terms_for(method: str, value: float, student: nn.Module, teacher: nn.Module) -> list:
    """The objective of one method at one setting of its tuned hyperparameter."""
    if method == "alone":
        return [distill.Task()]
    if method == "kd":
        return [distill.Task(weight=0.1), distill.KD(value, weight=0.9)]
    if method == "dkd":
        return [distill.Task(), distill.DKD(alpha=1.0, beta=value, temperature=4.0, warmup=50)]
    if method == "hints":
        hint = distill.Hint.for_models(
            student, teacher, "act1", "act2", torch.zeros(2, 784), weight=value
        )
        return [distill.Task(), hint]
    raise ValueError(method)


def run_student(
    method: str,
    value: float,
    seed: int,
    transfer: tuple[Tensor, Tensor],
    teacher: nn.Module,
    split: dict[str, tuple[Tensor, Tensor]],
    cfg: Config,
) -> dict[str, float]:
    torch.manual_seed(1000 + seed)  # the same initial student for every method and setting
    student = mlp([784, cfg.student_hidden, 10])
    torch.manual_seed(2000 + seed)  # connectors
    lr = value if method == "alone" else cfg.lr
    d = distill.Distiller(student, teacher, terms_for(method, value, student, teacher),
                          lr=lr, seed=seed)  # fmt: skip
    h = d.fit(transfer, epochs=cfg.epochs, batch_size=cfg.batch_size)
    return {
        "val": train.accuracy(student, split["val"]),
        "test": train.accuracy(student, split["test"]),
        "seconds": h.seconds,
        "final_loss": h.final_loss,
    }


def run_dataset(name: str, cfg: Config) -> dict[str, Any]:
    split = load(name, cfg)
    teacher, tinfo = make_teacher(split, cfg)
    print(f"{name}: teacher val {tinfo['val']:.4f} test {tinfo['test']:.4f} "
          f"({tinfo['seconds']:.0f} s)", flush=True)  # fmt: skip
    x, y = split["train"]
    per_seed: dict[str, list[dict[str, Any]]] = {m: [] for m in METHODS}
    for seed in cfg.seeds:
        g = torch.Generator().manual_seed(seed)
        idx = torch.randperm(x.shape[0], generator=g)[: cfg.transfer]
        transfer = (x[idx], y[idx])
        for method in METHODS:
            trials = {}
            for value in cfg.grid[method]:
                trials[str(value)] = run_student(method, value, seed, transfer, teacher, split, cfg)
            best = max(cfg.grid[method], key=lambda v: (trials[str(v)]["val"], -abs(v)))
            chosen = trials[str(best)]
            per_seed[method].append({"seed": seed, "chosen": best, "val": chosen["val"],
                                     "test": chosen["test"], "trials": trials})  # fmt: skip
            print(f"  seed {seed} {method:6s} {best:g}: val {chosen['val']:.4f} "
                  f"test {chosen['test']:.4f}", flush=True)  # fmt: skip
    return {
        "teacher": tinfo,
        "student_parameters": sum(
            p.numel() for p in mlp([784, cfg.student_hidden, 10]).parameters()
        ),
        "methods": per_seed,
    }


def _ci(s: report.Summary) -> str:
    return "n/a" if s.n < 2 else f"[{s.mean - s.half_width:.2f}, {s.mean + s.half_width:.2f}]"


def tables(results: dict[str, Any]) -> str:
    """The Markdown tables of the report, from ``results.json``'s content."""
    out = []
    hyper = {"alone": "lr", "kd": "T", "dkd": "beta", "hints": "weight"}
    for name, res in results["datasets"].items():
        t = res["teacher"]
        out.append(f"### {TITLES[name]}\n\n")
        out.append(
            f"Teacher: {t['parameters']:,} parameters, test accuracy {100 * t['test']:.2f} %; "
            f"student: {res['student_parameters']:,} parameters.\n\n"
        )
        rows = []
        alone = [r["test"] for r in res["methods"]["alone"]]
        for m in METHODS:
            runs = res["methods"][m]
            test = report.summarize([100 * r["test"] for r in runs])
            gain = report.summarize(
                [100 * (r["test"] - a) for r, a in zip(runs, alone, strict=True)]
            )
            chosen = ", ".join(f"{r['chosen']:g}" for r in runs)
            rows.append([
                m,
                f"{hyper[m]} = {chosen}",
                report.summarize([100 * r["val"] for r in runs]),
                test,
                _ci(test),
                "" if m == "alone" else f"{gain.mean:+.2f} {_ci(gain)}",
                " ".join(f"{100 * r['test']:.2f}" for r in runs),
            ])  # fmt: skip
        out.append(
            report.markdown_table(
                [
                    "method",
                    "chosen per seed",
                    "val acc (%)",
                    "test acc (%)",
                    "95 % CI",
                    "gain over alone (paired, 95 % CI)",
                    "test per seed",
                ],
                rows,
                formats=[None, None, ".2f", ".2f", None, None, None],
            )
        )
        out.append("\n")
    return "".join(out)


def figure(results: dict[str, Any], out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(results["datasets"])
    fig, axes = plt.subplots(1, len(names), figsize=(4.5 * len(names), 3.4), squeeze=False)
    for ax, name in zip(axes[0], names, strict=True):
        res = results["datasets"][name]
        for i, m in enumerate(METHODS):
            vals = [100 * r["test"] for r in res["methods"][m]]
            ax.scatter([i] * len(vals), vals, s=14, alpha=0.7)
            s = report.summarize(vals)
            ax.errorbar([i + 0.18], [s.mean], yerr=[0 if s.n < 2 else s.half_width], fmt="ks",
                        ms=4, capsize=3)  # fmt: skip
        ax.set_xticks(range(len(METHODS)), METHODS)
        ax.set_title(f"{TITLES[name]} (teacher {100 * res['teacher']['test']:.1f} %)")
        ax.set_ylabel("student test accuracy (%)")
    fig.tight_layout()
    fig.savefig(out / "ordering.png", dpi=120)
    plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[1])
    parser.add_argument("--quick", action="store_true", help="a smoke run of a few seconds")
    parser.add_argument("--out", type=Path, default=None, help="output folder")
    parser.add_argument("--datasets", nargs="*", default=None, help="mnist and/or fashion_mnist")
    parser.add_argument("--seeds", type=int, default=None, help="number of seeds (0, 1, ...)")
    parser.add_argument(
        "--rebuild", action="store_true", help="rewrite the tables and figure from results.json"
    )
    args = parser.parse_args()
    torch.set_num_threads(1)
    cfg = copy.copy(QUICK if args.quick else FULL)
    if args.out is not None:
        cfg.out = args.out
    if args.datasets:
        cfg.datasets = tuple(args.datasets)
    if args.seeds is not None:
        cfg.seeds = tuple(range(args.seeds))
    cfg.out.mkdir(parents=True, exist_ok=True)
    if args.rebuild:
        write_tables(json.loads((cfg.out / "results.json").read_text()), cfg.out)
        return
    start = time.perf_counter()
    datasets = {name: run_dataset(name, cfg) for name in cfg.datasets}
    config = {k: (str(v) if isinstance(v, Path) else v) for k, v in asdict(cfg).items()}
    config.pop("out")
    results = {
        "mode": "quick" if args.quick else "full",
        "config": config,
        "seconds": time.perf_counter() - start,
        "torch_threads": torch.get_num_threads(),
        "datasets": datasets,
    }
    (cfg.out / "results.json").write_text(json.dumps(results, indent=1))
    write_tables(results, cfg.out)
    print(f"total {results['seconds']:.0f} s; wrote {cfg.out}")


def write_tables(results: dict[str, Any], out: Path) -> None:
    """``results.md`` (Markdown), ``results.rst`` (for the report) and ``ordering.png``."""
    text = tables(results)
    (out / "results.md").write_text(text)
    (out / "results.rst").write_text(markdown_to_rst(text))
    figure(results, out)
    print(text)


if __name__ == "__main__":
    main()
