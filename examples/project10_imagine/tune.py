"""
Imagine: tune every search method with one budget, on validation concepts only
==============================================================================

Each method gets the same number of settings (``len(GRID[method])``, four), each run on the
same validation searches: every concept of :data:`VALIDATION` (disjoint from the test
concepts of ``imagine.py``'s comparison and from its games) with every seed of :data:`SEEDS`
(disjoint from the test seeds), 1,024 evaluations each, guided by the same LiT (split 0) as
the test runs. The level of a validation concept is the final score of random search with
its first setting (the library's default spread) there, averaged over the seeds. A setting's
objective is its mean number of evaluations to reach the level (unreached runs counted as
the whole budget), the quantity the test compares; ties go to the higher mean final score.
The best setting of each method is written to ``results/tuning.json`` and used by
``imagine.py`` and ``benchmarks/bench_games.py`` on the test concepts. Two validation
concepts and one seed per setting (32 searches in all) is what the shared two-core machine
allowed; the tuning is correspondingly coarse.

``python tune.py`` runs every search not yet in ``--log`` (resumable; one JSON line per
search), then writes the choice; ``--quick`` is a smoke run on a tiny grid.
"""

from __future__ import annotations

import argparse
import json
import logging
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

import weightspace as ws
from weightspace import games

HERE = Path(__file__).resolve().parent
METHODS = ("pgpe", "cmaes", "ga", "random")
VALIDATION = ("castle", "kite")
SEEDS = (11,)
BUDGET = 1024

_ES = {"utility": "log", "card_rule": "natural"}
GRID: dict[str, list[dict[str, Any]]] = {
    "pgpe": [
        {"popsize": 32},
        {"popsize": 16, **_ES, "card_lr": 0.5},
        {"popsize": 16, **_ES, "card_lr": 0.3, "sigma": 1.5},
        {"popsize": 8, **_ES, "card_lr": 0.3, "sigma": 1.5, "max_speed": 0.5},
    ],
    "cmaes": [
        {"popsize": 32},
        {"popsize": 16, **_ES, "card_lr": 0.5},
        {"popsize": 16, **_ES, "card_lr": 0.3, "sigma": 1.5},
        {"popsize": 8, **_ES, "card_lr": 0.3, "sigma": 1.5},
    ],
    "ga": [
        {"popsize": 32},
        {"popsize": 16},
        {"popsize": 16, "mutation_std": 0.3, "gene_rate": 0.3},
        {"popsize": 8, "elites": 1, "spread": 2.0},
    ],
    "random": [
        {"popsize": 16, "spread": 1.5},
        {"popsize": 16, "spread": 1.0},
        {"popsize": 16, "spread": 2.0},
        {"popsize": 16, "spread": 3.0},
    ],
}
"""The settings tried, the same number per method; the first of random search is the level's."""


def guide(cache: Path) -> Any:
    """LiT of split 0, exactly as ``imagine.py`` trains it (heads cached in ``cache``)."""
    tower = games.ImageTower()
    encoder = ws.models.minilm()
    if cache.is_file():
        return games.LiTScorer.load(cache, tower, encoder, name="lit0")
    stamps = games.stamp_images()
    position = {name: i for i, name in enumerate(stamps.names)}
    features = games.stamp_features(stamps, tower, views=4, seed=0)
    train, _ = stamps.split(0.2, seed=0)
    idx = [position[n] for n in train.names]
    lit = games.train_lit(
        train, tower=tower, encoder=encoder, views=4, epochs=200, seed=0, name="lit0",
        features=features[:, idx],
    )  # fmt: skip
    lit.save(cache)
    return lit


def key(method: str, k: int, concept: str, seed: int) -> str:
    return f"{method}/{k}/{concept}/{seed}"


def choose(
    rows: dict[str, dict[str, Any]], grid: dict[str, list[dict[str, Any]]], budget: int
) -> dict[str, Any]:
    """Score every setting on the validation searches and pick each method's best."""
    levels = {
        c: float(np.mean([rows[key("random", 0, c, s)]["best_score"] for s in SEEDS]))
        for c in VALIDATION
    }
    out: dict[str, Any] = {"levels": levels, "methods": {}}
    for method, settings in grid.items():
        scored = []
        for k, setting in enumerate(settings):
            reach, final = [], []
            for c in VALIDATION:
                for s in SEEDS:
                    r = rows[key(method, k, c, s)]
                    hit = next((n for n, v in r["curve"] if v >= levels[c]), None)
                    reach.append(budget if hit is None else hit)
                    final.append(r["best_score"])
            scored.append(
                {
                    "setting": setting,
                    "evaluations_to_level": reach,
                    "mean_evaluations": float(np.mean(reach)),
                    "mean_final": float(np.mean(final)),
                }
            )
        best = min(range(len(scored)), key=lambda i: (scored[i]["mean_evaluations"],
                                                      -scored[i]["mean_final"]))  # fmt: skip
        out["methods"][method] = {"tried": scored, "chosen": best, "setting": settings[best]}
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.strip().splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a tiny grid and budget")
    parser.add_argument("--log", type=Path, default=HERE / "results" / "tuning_runs.jsonl")
    parser.add_argument("--out", type=Path, default=HERE / "results" / "tuning.json")
    parser.add_argument("--cache", type=Path, default=Path("/tmp/weightspace_imagine_lit0.st"))
    parser.add_argument("--only", default=None, help="run only this method's settings")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    torch.set_num_threads(1)
    grid = {m: s[:2] for m, s in GRID.items()} if args.quick else GRID
    budget = 64 if args.quick else BUDGET
    if args.quick:
        grid = {m: [{**s, "popsize": 16} for s in ss] for m, ss in grid.items()}
    lit = guide(args.cache)
    deck = games.default_deck()
    args.log.parent.mkdir(parents=True, exist_ok=True)
    rows: dict[str, dict[str, Any]] = {}
    if args.log.is_file():
        for line in args.log.read_text().splitlines():
            row = json.loads(line)
            rows[row["key"]] = row
    # Setting k of every method before setting k + 1 of any: a cut-short run stays fair.
    for k, method in ((k, m) for k in range(max(map(len, grid.values()))) for m in grid):
        if (args.only and method != args.only) or k >= len(grid[method]):
            continue
        setting = grid[method][k]
        for concept in VALIDATION:
            for seed in SEEDS:
                name = key(method, k, concept, seed)
                if name in rows:
                    continue
                opts = {n: v for n, v in setting.items() if n != "popsize"}
                start = time.perf_counter()
                r = games.search(
                    lit, f"A {concept}.", deck, method=method,  # type: ignore[arg-type]
                    budget=budget, popsize=int(setting["popsize"]), seed=seed, options=opts,
                )  # fmt: skip
                row = {
                    "key": name,
                    "best_score": r.best_score,
                    "curve": [[n, s] for n, s in r.curve],
                    "cards": list(r.best.cards),
                    "seconds": time.perf_counter() - start,
                }
                rows[name] = row
                with args.log.open("a") as f:
                    f.write(json.dumps(row) + "\n")
                logging.info("%s: %.4f in %.0f s", name, r.best_score, row["seconds"])
    if all(
        key(m, k, c, s) in rows
        for m, ss in grid.items()
        for k in range(len(ss))
        for c in VALIDATION
        for s in SEEDS
    ):
        result = choose(rows, grid, budget)
        result.update(validation=list(VALIDATION), seeds=list(SEEDS), budget=budget, grid=grid)
        args.out.write_text(json.dumps(result, indent=1) + "\n")
        for m, r in result["methods"].items():
            logging.info("%s: setting %d %s", m, r["chosen"], r["setting"])


if __name__ == "__main__":
    main()
