"""
Imagine: compose transparent cards to show a concept, and let other players guess it
====================================================================================

Project 10 of the catalogue, after es-clip (Tian & Ha, "Modern Evolution Strategies for
Creativity", arXiv 2109.08857): a composer places four of our 53 transparent cards
(:func:`weightspace.games.default_deck`) so that an image-text scorer finds the picture close
to a secret concept; other players guess the concept among the eight of a challenge card.

No CLIP-like model ships offline, so the scorers are built from real pretrained parts
(:mod:`weightspace.games`): ConSE zero-shot from EfficientNet-Lite0 and MiniLM, and a
locked-tower alignment (LiT) trained on Tux Paint's captioned stamps. The script

1. measures the scorers: caption retrieval among 100 on held-out stamps (three splits), and
   Fashion-MNIST zero-shot classification from the class names;
2. compares PGPE, CMA-ES, a genetic algorithm and random search at the same number of
   evaluations (five seeds, three test concepts), guided by LiT, each method with the setting
   that ``tune.py`` chose for it on other (validation) concepts with the same tuning budget;
3. plays 16 games per composer (LiT, then ConSE), each guessed by the *other* scorers, with
   random compositions as the baseline, and writes the LiT games for people to play with
   ``weightspace play imagine results/games/games.json``.

``python imagine.py`` runs the full study (about 25 minutes of one core; it writes
``results/``), ``python imagine.py --quick`` a smoke run of well under a minute, and
``python imagine.py --part search`` reruns only the comparison of search methods, keeping
the scorers' measures and the games of the committed ``results/results.json``.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from scipy import stats

import weightspace as ws
from weightspace import games

HERE = Path(__file__).resolve().parent
TUNING = HERE / "results" / "tuning.json"
METHODS = ("pgpe", "cmaes", "ga", "random")


@dataclass
class Config:
    """Sizes of one run: the full study or the quick smoke run."""

    seeds: tuple[int, ...]  # scorer splits and search seeds
    categories: tuple[str, ...] | None  # stamp folders (None: all)
    test_share: float  # held-out share of stamps
    pool: int  # caption retrieval: candidates per image
    lit_views: int
    lit_epochs: int
    fashion_per_class: int
    compare: tuple[str, ...]  # concepts of the search comparison
    search_seeds: tuple[int, ...]  # seeds of every search in the comparison
    budget: int  # evaluations per search
    popsize: int
    concepts: tuple[str, ...]  # one game per concept and composer
    random_per_game: int  # random compositions guessed per concept (the baseline)
    out: Path = field(default_factory=lambda: HERE / "results")


FULL = Config(
    seeds=(0, 1, 2),
    categories=None,
    test_share=0.2,
    pool=100,
    lit_views=4,
    lit_epochs=200,
    fashion_per_class=30,
    compare=("snowman", "boat", "rocket"),
    search_seeds=(0, 1, 2, 3, 4),
    budget=1024,
    popsize=32,
    concepts=games.CONCEPTS,
    random_per_game=8,
)
QUICK = Config(
    seeds=(0, 1),
    categories=("food", "plants"),
    test_share=0.25,
    pool=20,
    lit_views=1,
    lit_epochs=40,
    fashion_per_class=5,
    compare=("snowman",),
    search_seeds=(0, 1),
    budget=64,
    popsize=16,
    concepts=games.CONCEPTS[:3],
    random_per_game=2,
)


def interval(values: list[float]) -> dict[str, Any]:
    """Mean with a 95 % Student-t interval over seeds, and the per-seed values."""
    x = np.asarray(values, dtype=float)
    n = len(x)
    half = float(stats.t.ppf(0.975, n - 1) * x.std(ddof=1) / math.sqrt(n)) if n > 1 else 0.0
    return {"mean": float(x.mean()), "ci95": half, "values": [float(v) for v in x]}


def wilson(k: int, n: int) -> tuple[float, float]:
    """95 % Wilson interval of a proportion k / n."""
    if n == 0:
        return (0.0, 1.0)
    z = 1.959964
    p = k / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return (max(0.0, centre - half), min(1.0, centre + half))


# %%
# 1. Scorers
# ----------


def split_lit(
    cfg: Config, tower: Any, encoder: Any, stamps: Any, features: torch.Tensor, seed: int
) -> tuple[Any, Any, Any]:
    """LiT trained on the training stamps of split ``seed``: ``(lit, train, test)``."""
    position = {name: i for i, name in enumerate(stamps.names)}
    train, test = stamps.split(cfg.test_share, seed=seed)
    idx = [position[n] for n in train.names]
    lit = games.train_lit(
        train,
        tower=tower,
        encoder=encoder,
        views=cfg.lit_views,
        epochs=cfg.lit_epochs,
        seed=seed,
        name=f"lit{seed}",
        features=features[:, idx],
    )
    return lit, train, test


def guide_lit(cfg: Config, tower: Any, encoder: Any) -> Any:
    """The search's guide alone: LiT of the first split, as :func:`measure_scorers` trains it."""
    stamps = games.stamp_images(categories=cfg.categories)
    features = games.stamp_features(stamps, tower, views=cfg.lit_views, seed=0)
    return split_lit(cfg, tower, encoder, stamps, features, cfg.seeds[0])[0]


def measure_scorers(cfg: Config, tower: Any, encoder: Any) -> tuple[dict[str, Any], list[Any]]:
    stamps = games.stamp_images(categories=cfg.categories)
    start = time.perf_counter()
    features = games.stamp_features(stamps, tower, views=cfg.lit_views, seed=0)
    feature_seconds = time.perf_counter() - start
    conse = games.ConSEScorer(tower, encoder)
    fashion = ws.data.fashion_mnist("test")
    keep = torch.cat(
        [
            (fashion.targets == c).nonzero().flatten()[: cfg.fashion_per_class]
            for c in range(len(fashion.classes))
        ]
    )
    f_images = fashion.images[keep].expand(-1, 3, -1, -1)
    f_labels = fashion.targets[keep]
    out: dict[str, Any] = {
        "stamps": len(stamps),
        "feature_seconds": feature_seconds,
        "chance": {
            "top1": 1 / cfg.pool,
            "top5": min(1.0, 5 / cfg.pool),
            "fashion": 1 / len(fashion.classes),
        },
        "splits": [],
    }
    lits = []
    for seed in cfg.seeds:
        start = time.perf_counter()
        lit, train, test = split_lit(cfg, tower, encoder, stamps, features, seed)
        train_seconds = time.perf_counter() - start
        lits.append(lit)
        row: dict[str, Any] = {"seed": seed, "train": len(train), "test": len(test)}
        row["lit_train_seconds"] = train_seconds
        for name, scorer in (("lit", lit), ("conse", conse)):
            r = games.caption_retrieval(scorer, test.images, test.captions, pool=cfg.pool)
            row[name] = {"top1": r.top1, "top5": r.top5}
            for kind, images in (("raw", f_images), ("inverted", 255 - f_images)):
                if name == "conse" and seed != cfg.seeds[0]:  # ConSE is not trained: same
                    acc = out["splits"][0]["conse"][f"fashion_{kind}"]
                else:
                    acc = games.zero_shot_accuracy(scorer, images, f_labels, fashion.classes)
                row[name][f"fashion_{kind}"] = acc
        out["splits"].append(row)
        logging.info("scorers, split %d: %s", seed, row)
    out["summary"] = {
        name: {
            metric: interval([r[name][metric] for r in out["splits"]])
            for metric in ("top1", "top5", "fashion_raw", "fashion_inverted")
        }
        for name in ("lit", "conse")
    }
    return out, [conse, *lits]


# %%
# 2. Search methods at equal budgets
# ----------------------------------


def tuned_settings(path: Path = TUNING) -> dict[str, dict[str, Any]]:
    """Each method's setting chosen by ``tune.py`` on the validation concepts."""
    tuning = json.loads(path.read_text(encoding="utf-8"))
    return {m: dict(tuning["methods"][m]["setting"]) for m in METHODS}


def bootstrap_ratio(
    num: dict[str, list[float]], den: dict[str, list[float]], *, resamples: int = 4000
) -> tuple[float, float]:
    """95 % percentile interval of mean(num) / mean(den), resampling runs within each concept."""
    rng = np.random.default_rng(0)
    ratios = []
    for _ in range(resamples):
        a = [rng.choice(v, len(v)).mean() for v in num.values()]
        b = [rng.choice(v, len(v)).mean() for v in den.values()]
        ratios.append(float(np.mean(a) / np.mean(b)))
    lo, hi = np.percentile(ratios, [2.5, 97.5])
    return float(lo), float(hi)


def compare_searches(
    cfg: Config, guide: Any, deck: games.Deck, settings: dict[str, dict[str, Any]]
) -> dict[str, Any]:
    runs: dict[str, dict[str, list[dict[str, Any]]]] = {}
    for concept in cfg.compare:
        runs[concept] = {}
        for method in METHODS:
            runs[concept][method] = []
            setting = settings[method]
            for seed in cfg.search_seeds:
                r = games.search(
                    guide,
                    f"A {concept}.",
                    deck,
                    method=method,  # type: ignore[arg-type]
                    budget=cfg.budget,
                    popsize=int(setting["popsize"]),
                    seed=seed,
                    options={k: v for k, v in setting.items() if k != "popsize"},
                )
                runs[concept][method].append(r.to_dict())
    summary: dict[str, Any] = {}
    for concept, by_method in runs.items():
        # The level to reach: what random search ends at, averaged over seeds.
        threshold = float(np.mean([r["best_score"] for r in by_method["random"]]))
        summary[concept] = {"threshold": threshold}
        for method, rs in by_method.items():
            reach = []
            for r in rs:
                hit = next((n for n, s in r["curve"] if s >= threshold), None)
                reach.append(hit)
            done = [n for n in reach if n is not None]
            summary[concept][method] = {
                "best": interval([r["best_score"] for r in rs]),
                "evaluations_to_threshold": reach,
                "reached": len(done),
                "mean_evaluations_reached": float(np.mean(done)) if done else None,
                "evaluations_per_second": float(
                    np.mean([r["evaluations"] / r["seconds"] for r in rs])
                ),
            }
    # Over all concepts and seeds: evaluations to the threshold, unreached runs counted as
    # the whole budget (a lower bound on what they would need).
    pooled = {
        m: [
            n if n is not None else cfg.budget
            for c in summary
            for n in summary[c][m]["evaluations_to_threshold"]
        ]
        for m in METHODS
    }
    ratios = {
        f"{other}/{es}": float(np.mean(pooled[other]) / np.mean(pooled[es]))
        for es in ("pgpe", "cmaes")
        for other in ("ga", "random")
    }
    by_concept = {
        m: {
            c: [
                float(cfg.budget if n is None else n)
                for n in summary[c][m]["evaluations_to_threshold"]
            ]
            for c in summary
        }
        for m in METHODS
    }
    ratio_ci95 = {
        f"{other}/{es}": bootstrap_ratio(by_concept[other], by_concept[es])
        for es in ("pgpe", "cmaes")
        for other in ("ga", "random")
    }
    return {
        "settings": settings,
        "runs": runs,
        "summary": summary,
        "pooled_evaluations": pooled,
        "ratios": ratios,
        "ratio_ci95": ratio_ci95,
    }


# %%
# 3. Games
# --------


def play_games(
    cfg: Config, scorers: dict[str, Any], deck: games.Deck, composer: str
) -> dict[str, Any]:
    played = []
    random_hits = {name: 0 for name in scorers}
    random_total = 0
    for k, concept in enumerate(cfg.concepts):
        candidates = games.challenge(concept, seed=k)
        r = games.search(
            scorers[composer],
            f"A {concept}.",
            deck,
            method="pgpe",
            budget=cfg.budget,
            popsize=cfg.popsize,
            seed=100 + k,
        )
        image = r.best.render(deck)
        answers = {
            name: candidates[int(games.guess(s, image, candidates)[0])]
            for name, s in scorers.items()
        }
        game = games.ImagineGame(
            f"{composer}-{k:02d}", concept, candidates, r.best, composer, answers
        )
        played.append({**game.to_dict(), "score": r.best_score})
        gen = torch.Generator().manual_seed(1000 + k)
        cards, params = games.random_compositions(cfg.random_per_game, 4, len(deck), generator=gen)
        images = games.render(deck, cards, params)
        for name, s in scorers.items():
            picks = games.guess(s, images, candidates)
            random_hits[name] += int((picks == candidates.index(concept)).sum())
        random_total += cfg.random_per_game
    accuracy: dict[str, Any] = {}
    for name in scorers:
        hits = sum(g["guesses"][name] == g["answer"] for g in played)
        accuracy[name] = {
            "role": "composer (guesses its own)" if name == composer else "guesser",
            "correct": hits,
            "games": len(played),
            "accuracy": hits / len(played),
            "wilson95": wilson(hits, len(played)),
            "random_compositions": random_hits[name] / random_total,
            "random_wilson95": wilson(random_hits[name], random_total),
        }
    return {
        "composer": composer,
        "games": played,
        "accuracy": accuracy,
        "chance": 1 / len(games.challenge(cfg.concepts[0])),
        "random_per_concept": cfg.random_per_game,
    }


def human_results(path: Path, played: list[dict[str, Any]]) -> dict[str, Any] | None:
    guesses = games.read_guesses(path)
    if not guesses:
        return None
    known = {g["name"] for g in played}
    rows = [g for g in guesses if g["game"] in known]
    players = sorted({g["player"] for g in rows})
    return {
        "guesses": len(rows),
        "players": players,
        "accuracy": sum(g["correct"] for g in rows) / max(1, len(rows)),
        "wilson95": wilson(sum(g["correct"] for g in rows), len(rows)),
    }


# %%
# Tables and figures
# ------------------


def pm(d: dict[str, Any], digits: int = 3) -> str:
    return f"{d['mean']:.{digits}f} ± {d['ci95']:.{digits}f}"


def tables(result: dict[str, Any]) -> dict[str, list[list[str]]]:
    """The report's tables, as rows of cells (header first)."""
    sc = result["scorers"]
    ch = sc["chance"]
    t: dict[str, list[list[str]]] = {}
    t["scorers"] = [["scorer", "retrieval top-1", "top-5", "Fashion-MNIST", "(inverted)"]]
    t["scorers"].append(
        ["chance", f"{ch['top1']:.3f}", f"{ch['top5']:.3f}", f"{ch['fashion']:.3f}", ""]
    )
    for name, label in (("conse", "ConSE (no training)"), ("lit", "LiT (trained heads)")):
        s = sc["summary"][name]
        t["scorers"].append(
            [label, pm(s["top1"]), pm(s["top5"]), pm(s["fashion_raw"]), pm(s["fashion_inverted"])]
        )
    cmp_ = result["search"]
    t["search"] = [["concept", "level to reach", *METHODS]]
    for concept, s in cmp_["summary"].items():
        t["search"].append([concept, f"{s['threshold']:.3f}", *(pm(s[m]["best"]) for m in METHODS)])
    t["reach"] = [["concept", *METHODS]]
    n = len(result["config"]["search_seeds"])
    for concept, s in cmp_["summary"].items():
        cells = []
        for m in METHODS:
            mean = s[m]["mean_evaluations_reached"]
            cells.append(f"{s[m]['reached']}/{n}" + (f", {mean:.0f}" if mean is not None else ""))
        t["reach"].append([concept, *cells])
    pooled = cmp_["pooled_evaluations"]
    t["reach"].append(
        ["all (mean; unreached = budget)", *(f"{np.mean(pooled[m]):.0f}" for m in METHODS)]
    )
    budget = result["config"]["budget"]
    marks = [n for n in (32, 128, 256, 512) if n < budget] + [budget]
    t["progress"] = [["method", *(f"after {n}" for n in marks)]]
    for m in METHODS:
        cells = []
        for n in marks:
            values = [
                max((v for k, v in r["curve"] if k <= n), default=math.nan)
                for by_method in cmp_["runs"].values()
                for r in by_method[m]
            ]
            cells.append(pm(interval(values)))
        t["progress"].append([m, *cells])
    t["ratios"] = [["evaluations to the level", "ratio", "95 % interval"]]
    for name, value in cmp_["ratios"].items():
        lo, hi = cmp_["ratio_ci95"][name]
        other, es = name.split("/")
        t["ratios"].append([f"{other} / {es}", f"{value:.2f}", f"{lo:.2f}-{hi:.2f}"])
    tuning = result["tuning"]
    t["tuning"] = [
        ["method", "settings tried", "chosen", "evaluations to level (chosen)", "(default)"]
    ]
    for m in METHODS:
        tm = tuning["methods"][m]
        chosen, first = tm["tried"][tm["chosen"]], tm["tried"][0]
        text = ", ".join(f"{k} {v}" for k, v in tm["setting"].items())
        t["tuning"].append(
            [
                m,
                str(len(tm["tried"])),
                text,
                f"{chosen['mean_evaluations']:.0f} (final {chosen['mean_final']:.3f})",
                f"{first['mean_evaluations']:.0f} (final {first['mean_final']:.3f})",
            ]
        )
    t["games"] = [["composer", "player", "role", "correct", "accuracy (95 % CI)", "on random"]]
    for g in result["games"]:
        for name, a in g["accuracy"].items():
            lo, hi = a["wilson95"]
            rlo, rhi = a["random_wilson95"]
            t["games"].append(
                [
                    g["composer"],
                    name,
                    a["role"],
                    f"{a['correct']}/{a['games']}",
                    f"{a['accuracy']:.2f} ({lo:.2f}-{hi:.2f})",
                    f"{a['random_compositions']:.2f} ({rlo:.2f}-{rhi:.2f})",
                ]
            )
    t["played"] = [["composer", "concept", "cards", "score", "guesses"]]
    for g in result["games"]:
        for p in g["games"]:
            guesses = ", ".join(
                f"{k}: {v}" + (" ✓" if v == p["answer"] else "") for k, v in p["guesses"].items()
            )
            cards = ", ".join(p["composition"]["cards"])
            t["played"].append([g["composer"], p["answer"], cards, f"{p['score']:.3f}", guesses])
    return t


def markdown(t: dict[str, list[list[str]]]) -> str:
    out = []
    for name, rows in t.items():
        out.append(f"### {name}\n")
        out.append("| " + " | ".join(rows[0]) + " |")
        out.append("|" + "---|" * len(rows[0]))
        out.extend("| " + " | ".join(r) + " |" for r in rows[1:])
        out.append("")
    return "\n".join(out)


def rst(rows: list[list[str]]) -> str:
    """One table as an RST list-table, for the report's ``.. include::``."""
    out = [".. list-table::", "   :header-rows: 1", ""]
    for r in rows:
        out.append("   * - " + r[0])
        out.extend(f"     - {c}" if c else "     -" for c in r[1:])
    return "\n".join(out) + "\n"


def figures(result: dict[str, Any], deck: games.Deck, out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    sheet = deck.contact_sheet(columns=10)
    fig, ax = plt.subplots(figsize=(10, 6.2))
    ax.imshow(sheet.permute(1, 2, 0).numpy())
    s = deck.images.shape[-1]
    for k, name in enumerate(deck.names):
        r, c = divmod(k, 10)
        ax.text(c * s + s / 2, (r + 1) * s - 1, name, ha="center", va="bottom", fontsize=6)
    ax.set_axis_off()
    ax.set_title(f"The deck: {len(deck)} transparent cards")
    fig.tight_layout()
    fig.savefig(out / "deck.png", dpi=130)
    plt.close(fig)

    runs = result["search"]["runs"]
    fig, axes = plt.subplots(1, len(runs), figsize=(4.6 * len(runs), 3.6), squeeze=False)
    for ax, (concept, by_method) in zip(axes[0], runs.items(), strict=True):
        for k, method in enumerate(METHODS):
            curves = np.array([[s for _, s in r["curve"]] for r in by_method[method]])
            x = [n for n, _ in by_method[method][0]["curve"]]
            mean = curves.mean(axis=0)
            ax.plot(x, mean, color=f"C{k}", label=method)
            if len(curves) > 1:
                ax.fill_between(
                    x, curves.min(axis=0), curves.max(axis=0), color=f"C{k}", alpha=0.15
                )
        ax.axhline(result["search"]["summary"][concept]["threshold"], color="0.5", lw=0.8, ls=":")
        ax.set_title(f'"A {concept}." (guide: LiT)')
        ax.set_xlabel("evaluations")
        ax.set_ylabel("best similarity so far")
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out / "curves.png", dpi=120)
    plt.close(fig)

    rows = [g for g in result["games"]]
    cols = max(len(g["games"]) for g in rows)
    cols_per_row = min(cols, 8)
    lines = sum(math.ceil(len(g["games"]) / cols_per_row) for g in rows)
    fig, axes = plt.subplots(lines, cols_per_row, figsize=(2.1 * cols_per_row, 2.5 * lines))
    axes = np.atleast_2d(axes)
    line = 0
    for g in rows:
        for k, p in enumerate(g["games"]):
            ax = axes[line + k // cols_per_row, k % cols_per_row]
            comp = games.Composition.from_dict(p["composition"])
            ax.imshow(comp.render(deck, size=128).permute(1, 2, 0).numpy())
            right = sum(v == p["answer"] for n, v in p["guesses"].items() if n != g["composer"])
            others = len(p["guesses"]) - 1
            ax.set_title(f"{p['answer']} ({g['composer']})\n{right}/{others} guessers", fontsize=7)
            ax.set_xticks([])
            ax.set_yticks([])
        used = math.ceil(len(g["games"]) / cols_per_row)
        for k in range(len(g["games"]), used * cols_per_row):
            axes[line + k // cols_per_row, k % cols_per_row].set_axis_off()
        line += used
    fig.tight_layout()
    fig.savefig(out / "gallery.png", dpi=110)
    plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[1])
    parser.add_argument("--quick", action="store_true", help="a smoke run in well under a minute")
    parser.add_argument("--out", type=Path, default=None, help="output folder")
    parser.add_argument(
        "--part",
        choices=("all", "search"),
        default="all",
        help="'search': rerun only the search comparison, keeping the rest of the output "
        "folder's results.json",
    )
    parser.add_argument("--tuning", type=Path, default=TUNING, help="tune.py's choice")
    args = parser.parse_args()
    cfg = QUICK if args.quick else FULL
    if args.out is not None:
        cfg.out = args.out
    cfg.out.mkdir(parents=True, exist_ok=True)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    torch.set_num_threads(1)
    torch.manual_seed(0)
    t0 = time.perf_counter()
    tower = games.ImageTower()
    encoder = ws.models.minilm()
    deck = games.default_deck()
    settings = tuned_settings(args.tuning)
    tuning = json.loads(args.tuning.read_text(encoding="utf-8"))
    if args.part == "search":
        result = json.loads((cfg.out / "results.json").read_text(encoding="utf-8"))
        if result["mode"] != ("quick" if args.quick else "full"):
            raise SystemExit(f"--part search: {cfg.out}/results.json is a {result['mode']} run")
        t1 = time.perf_counter()
        result["search"] = compare_searches(cfg, guide_lit(cfg, tower, encoder), deck, settings)
        result["config"] = {k: v for k, v in asdict(cfg).items() if k != "out"}
        result["tuning"] = tuning
        result["seconds"]["search"] = time.perf_counter() - t1
        result["seconds"]["search_cpu"] = time.process_time()
        write(result, deck, cfg.out)
        return
    scorer_result, (conse, *lits) = measure_scorers(cfg, tower, encoder)
    t1 = time.perf_counter()
    search_result = compare_searches(cfg, lits[0], deck, settings)
    t2 = time.perf_counter()
    players = {"lit0": lits[0], "lit1": lits[1], "conse": conse}
    played = [play_games(cfg, players, deck, composer) for composer in ("lit0", "conse")]
    t3 = time.perf_counter()
    kit = [games.ImagineGame.from_dict(p) for p in played[0]["games"]]
    kit = [
        games.ImagineGame(g.name, g.answer, g.candidates, g.composition, g.composer) for g in kit
    ]
    games.write_games(kit, cfg.out / "games", deck)
    humans = human_results(cfg.out / "human_guesses.json", played[0]["games"])
    result: dict[str, Any] = {
        "mode": "quick" if args.quick else "full",
        "config": {k: v for k, v in asdict(cfg).items() if k != "out"},
        "deck": list(deck.names),
        "scorers": scorer_result,
        "search": search_result,
        "tuning": tuning,
        "games": played,
        "humans": humans,
        "seconds": {
            "scorers": t1 - t0,
            "search": t2 - t1,
            "games": t3 - t2,
            "total": time.perf_counter() - t0,
            "cpu": time.process_time(),
        },
        "torch_threads": torch.get_num_threads(),
    }
    write(result, deck, cfg.out)


def write(result: dict[str, Any], deck: games.Deck, out: Path) -> None:
    """Write ``results.json``, the tables (Markdown and one RST file each) and the figures."""
    t = tables(result)
    (out / "results.json").write_text(json.dumps(result, indent=1))
    (out / "results.md").write_text(markdown(t))
    for name, rows in t.items():
        (out / f"table_{name}.rst").write_text(rst(rows))
    figures(result, deck, out)


if __name__ == "__main__":
    main()
