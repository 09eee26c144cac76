"""Throughput of the image-text scorers and of the Imagine searches, and the ES's head start.

Run: .venv/bin/python benchmarks/bench_games.py [--threads 2] [--seeds 3] [--budget 1024]
     [--tuning PATH] [--clip PATH] [--out benchmarks/results/games.md]

Measures, on this machine, with ``--threads`` torch threads:

* each scorer's throughput: images per second (batches of 64 rendered 128 x 128
  compositions; text embeddings cached) and texts per second (batches of 64 new texts, the
  cache cleared) -- ConSE, LiT (heads trained here on the stamps, 100 epochs, one view) and,
  with ``--clip``, a CLIP folder of your own;
* rendering alone (compositions of four cards per second);
* each search method's evaluations per second (render + score), guided by LiT;
* how many evaluations each method needs to reach a similarity level, in the same run: the
  level is the mean over seeds of what random search ends at with the whole budget; runs
  that never reach it count as the whole budget. The ratios GA/PGPE and random/PGPE (and the
  same for CMA-ES) say how much sooner the evolution strategies get there (issue 16's
  target: above 1). Each method runs with the setting that
  ``examples/project10_imagine/tune.py`` chose for it on validation concepts
  (``--tuning``; ``--tuning none`` runs the library's defaults at ``--popsize``).

Times are the minimum over ``--repeats`` (the usual way to discount a shared machine's load).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

import weightspace as ws
from weightspace import games

METHODS = ("pgpe", "cmaes", "ga", "random")
TUNING = Path(__file__).resolve().parents[1] / "examples/project10_imagine/results/tuning.json"


def best_time(fn: Callable[[], object], repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--budget", type=int, default=1024)
    parser.add_argument("--popsize", type=int, default=32)
    parser.add_argument("--concept", default="snowman")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--clip", type=Path, default=None, help="a CLIP folder of your own")
    parser.add_argument("--tuning", default=str(TUNING), help="tune.py's choice, or 'none'")
    parser.add_argument("--out", type=Path, default=None, help="also write the tables here")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    settings: dict[str, dict[str, Any]] = {m: {"popsize": args.popsize} for m in METHODS}
    if args.tuning != "none":
        tuning = json.loads(Path(args.tuning).read_text(encoding="utf-8"))
        settings = {m: dict(tuning["methods"][m]["setting"]) for m in METHODS}
    load_start = os.getloadavg()[0]
    lines = [
        f"`{' '.join([Path(sys.argv[0]).as_posix(), *sys.argv[1:]])}`",
        "",
        f"torch {torch.__version__}, {args.threads} threads, {platform.processor() or 'cpu'}, "
        f"weightspace {ws.__version__}, load average at the start "
        f"{os.getloadavg()[0]:.1f} on {os.cpu_count()} cores",
        "",
    ]

    tower = games.ImageTower()
    encoder = ws.models.minilm()
    deck = games.default_deck()
    stamps = games.stamp_images()
    lit = games.train_lit(stamps, tower=tower, encoder=encoder, views=1, epochs=100)
    scorers: dict[str, games.EmbeddingScorer] = {
        "conse": games.ConSEScorer(tower, encoder),
        "lit": lit,
    }
    if args.clip is not None:
        scorers["clip"] = games.CLIPScorer.from_folder(args.clip)
    gen = torch.Generator().manual_seed(0)
    cards, params = games.random_compositions(64, 4, len(deck), generator=gen)
    images = games.render(deck, cards, params)
    texts = [f"A drawing number {i}." for i in range(64)]

    lines += ["| scorer | images/s (batch 64, 128 px) | texts/s (batch 64) |", "|---|---|---|"]
    for name, s in scorers.items():
        s.embed_texts(["A snowman."])
        t_img = best_time(lambda s=s: s.score(images, ["A snowman."]), args.repeats)

        def texts_once(s: games.EmbeddingScorer = s) -> None:
            s._text_cache.clear()
            s.embed_texts(texts)

        t_txt = best_time(texts_once, args.repeats)
        lines.append(f"| {name} | {64 / t_img:.1f} | {64 / t_txt:.1f} |")
    t_render = best_time(lambda: games.render(deck, cards, params), args.repeats)
    lines += [
        "",
        f"Rendering alone: {64 / t_render:.0f} compositions of four cards per second.",
        "",
    ]

    runs: dict[str, list[games.SearchResult]] = {m: [] for m in METHODS}
    for seed in range(args.seeds):
        for method in METHODS:
            runs[method].append(
                games.search(
                    lit,
                    f"A {args.concept}.",
                    deck,
                    method=method,  # type: ignore[arg-type]
                    budget=args.budget,
                    popsize=int(settings[method]["popsize"]),
                    seed=seed,
                    options={k: v for k, v in settings[method].items() if k != "popsize"},
                )
            )
    level = float(np.mean([r.best_score for r in runs["random"]]))
    need = {m: [r.evaluations_to_reach(level) or args.budget for r in rs] for m, rs in runs.items()}
    lines += [
        f'Searches for "A {args.concept}." guided by LiT, {args.seeds} seeds, '
        f"{args.budget} evaluations each; level = {level:.4f} "
        "(random search's mean final score). Settings: "
        + (
            "tuned on validation concepts by examples/project10_imagine/tune.py"
            if args.tuning != "none"
            else "the library's defaults"
        )
        + ".",
        "",
        "| method | setting | evaluations/s | final best (mean over seeds) | reached level | "
        "evaluations to level (mean; unreached = budget) | per seed |",
        "|---|---|---|---|---|---|---|",
    ]
    for m, rs in runs.items():
        rate = np.mean([r.evaluations / r.seconds for r in rs])
        reached = sum(r.evaluations_to_reach(level) is not None for r in rs)
        setting = ", ".join(f"{k} {v}" for k, v in settings[m].items())
        lines.append(
            f"| {m} | {setting} | {rate:.1f} | {np.mean([r.best_score for r in rs]):.4f} | "
            f"{reached}/{len(rs)} | {np.mean(need[m]):.0f} | {', '.join(map(str, need[m]))} |"
        )
    lines.append("")
    load_end = os.getloadavg()[0]
    lines.append(
        f"Load average at the end: {load_end:.1f}. Measured under load (load average "
        f"{load_start:.1f} at the start, {load_end:.1f} at the end, on {os.cpu_count()} cores): "
        "absolute rates are below an idle machine's; the ratios come from one run and share "
        "its load."
    )
    lines.append("")
    for es in ("pgpe", "cmaes"):
        for other in ("ga", "random"):
            ratio = np.mean(need[other]) / np.mean(need[es])
            lines.append(
                f"- evaluations to level, {other} / {es}: {ratio:.2f} "
                f"({'the ES is faster' if ratio > 1 else 'the ES is not faster'})"
            )
    text = "\n".join(lines) + "\n"
    print(text)
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text("# Games: scorer throughput and search speed\n\n" + text)


if __name__ == "__main__":
    main()
