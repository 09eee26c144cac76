"""Speed of the distilled separators of project 8, and the cost of a Distiller step.

Run: .venv/bin/python benchmarks/bench_distill.py [--threads 2] [--repeats 3]
     [--out benchmarks/results/distill.md]

Measures, on this machine, with ``--threads`` torch threads:

* wall time per second of audio of separating the test clips of project 8 (batches of 16
  clips of 4,096 samples at 8 kHz) with the teacher's 32-step sampler, with the progressively
  distilled samplers of 16, 8, 4 and 2 steps (the same network) and with the small student
  (32 steps). The networks have the full configuration of ``examples/project08_little_tony``;
  the time does not depend on the weights, so fresh ones are used. The SI-SDR improvement
  each keeps is read from the committed full run
  (``examples/project08_little_tony/results/separation/results.json``), and the target of
  issue 13 is checked: at least 10x faster separation at no more than 1 dB SI-SDR loss
  against the teacher;
* steps per second of the shared trainer against the Distiller with KD and with a FitNets
  hint, on the MNIST MLPs of the ordering study (batches of 64).

Times are the minimum over ``--repeats`` (the usual way to discount a shared machine's load).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import platform
import sys
import time
from collections.abc import Callable
from pathlib import Path
from types import ModuleType

import torch

from weightspace import distill, report, train

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "examples" / "project08_little_tony"


def load(name: str) -> ModuleType:
    sys.path.insert(0, str(EXAMPLE))
    spec = importlib.util.spec_from_file_location(f"_bench_{name}", EXAMPLE / f"{name}.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def best_time(fn: Callable[[], object], repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def separation_table(repeats: int) -> str:
    common = load("_common")
    tony = load("little_tony")
    cfg = tony.FULL
    saved_path = cfg.out / "results.json"
    saved = json.loads(saved_path.read_text()) if saved_path.exists() else None
    clips = 16
    torch.manual_seed(0)
    mixture = torch.randn(clips, 1, cfg.clip) * 0.5
    audio_seconds = clips * cfg.clip / cfg.sample_rate
    teacher = common.Denoiser(cfg.teacher).eval()
    small = common.Denoiser(cfg.small).eval()
    full = common.karras_sigmas(cfg.steps)
    runs = [("teacher", teacher, cfg.steps)]
    runs += [(f"pd{n}", teacher, n) for n in (16, 8, 4, 2)]
    runs += [("small", small, cfg.steps)]
    rows = []
    base = None
    t_sdr = None if saved is None else saved["models"]["teacher"]["eval"]["si_sdri_mean"]
    for name, model, steps in runs:
        sigmas = tony.sub_grid(full, steps)
        seconds = best_time(lambda m=model, s=sigmas: common.separate(m, mixture, s), repeats)
        per = seconds / audio_seconds
        base = per if base is None else base
        sdr = None
        if saved is not None and name in saved["models"]:
            sdr = saved["models"][name]["eval"]["si_sdri_mean"]
        loss = None if sdr is None or t_sdr is None else t_sdr - sdr
        target = "" if name == "teacher" or loss is None else (
            "yes" if base / per >= 10 and loss <= 1.0 else "no")  # fmt: skip
        rows.append([tony.label(name), steps, sum(p.numel() for p in model.parameters()),
                     per, base / per, sdr, loss, target])  # fmt: skip
    return report.markdown_table(
        ["model", "network evaluations", "parameters", "s per s of audio", "speed-up",
         "SI-SDRi (dB, full run)", "SI-SDR lost (dB)", ">= 10x at <= 1 dB"],
        rows,
        formats=[None, "d", ",d", ".4f", ".1f", ".2f", "+.2f", None],
    )  # fmt: skip


def trainer_table(repeats: int) -> str:
    ordering = load("distill_ordering")
    g = torch.Generator().manual_seed(0)
    x = torch.rand(64 * 20, 784, generator=g)
    y = torch.randint(0, 10, (64 * 20,), generator=g)
    torch.manual_seed(0)
    teacher = ordering.mlp([784, 512, 512, 10]).eval()

    def student() -> torch.nn.Module:
        torch.manual_seed(1)
        return ordering.mlp([784, 32, 10])

    def plain() -> None:
        train.fit_(student(), (x, y), epochs=1, batch_size=64)

    def with_terms(kind: str) -> Callable[[], None]:
        def go() -> None:
            s = student()
            if kind == "kd":
                terms = [distill.Task(weight=0.1), distill.KD(4.0, weight=0.9)]
            else:
                terms = [distill.Task(), distill.Hint.for_models(s, teacher, "act1", "act2",
                                                                 x[:2], weight=10.0)]  # fmt: skip
            distill.Distiller(s, teacher, terms).fit((x, y), epochs=1, batch_size=64)

        return go

    rows = []
    base = None
    for name, fn in (("train.Trainer (student alone)", plain), ("Distiller, KD", with_terms("kd")),
                     ("Distiller, FitNets hint", with_terms("hint"))):  # fmt: skip
        rate = 20 / best_time(fn, repeats)
        base = rate if base is None else base
        rows.append([name, rate, base / rate])
    return report.markdown_table(["loop", "steps per second", "cost relative to plain"], rows,
                                 formats=[None, ".1f", ".2f"])  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", type=Path, default=None, help="also write the tables here")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    cpu = platform.processor() or platform.machine()
    head = f"torch {torch.__version__}, {args.threads} thread(s), {cpu}, min of {args.repeats} "
    head += "repeats\n\n"
    text = head + "### Separation speed (project 8)\n\n" + separation_table(args.repeats)
    text += "\n### Cost of a distillation step (MNIST MLPs, batches of 64)\n\n"
    text += trainer_table(args.repeats)
    print(text)
    if args.out is not None:
        args.out.write_text(text)


if __name__ == "__main__":
    main()
