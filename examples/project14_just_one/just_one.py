"""
Just One: bots on MiniLM word vectors and SmolLM2-135M-Instruct play a cooperative word game
============================================================================================

Project 14 of the catalogue.

Five-player tables (four clue givers, one guesser) play seeded 13-card games on mystery
words from wordfreq and WordNet (:func:`weightspace.games.mystery_words`); the rules are
:mod:`weightspace.games`' (identical clues cancel, invalid clues go, a wrong guess loses two
cards). Six configurations:

* ``hybrid``: MiniLM + SmolLM2 clue givers that plan around cancellation, hybrid guesser;
* ``hybrid, naive``: the same givers without cancellation-awareness;
* ``embedding`` and ``embedding, naive``: MiniLM only;
* ``embedding, greedy``: every giver writes its best clue (the copies always collide);
* ``LLM``: SmolLM2 only (aware givers).

Each configuration gets the same tuning budget on validation words only (the givers'
temperature from three values, the guesser's pass threshold from its confidences), then
plays the same test decks (game ``k`` deals with seed ``k`` from the test words).

``python just_one.py`` writes ``results/`` (full mode: 100 test games per configuration);
``--quick`` is a smoke run of the MiniLM configurations on three games into ``--out``.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import random
import sys
import time
from pathlib import Path
from typing import Any

import torch

import weightspace
from weightspace.games import (
    RULEBOOK_SCALE,
    CardOutcome,
    JustOneBrain,
    JustOneRecord,
    JustOneTable,
    clue_words,
    deal_cards,
    guess_words,
    just_one_rating,
    load_just_one_brain,
    mystery_words,
    play_just_one_games,
    read_just_one_games,
    score_just_one,
    split_words,
    word_vectors,
    wordnet_lexicon,
)

HERE = Path(__file__).resolve().parent
CONFIGS = [  # the cheap ones first; "hybrid" is the main configuration
    ("embedding", "embedding", "aware", "embedding"),
    ("embedding, naive", "embedding", "naive", "embedding"),
    ("embedding, greedy", "embedding", "greedy", "embedding"),
    ("hybrid", "hybrid", "aware", "hybrid"),
    ("hybrid, naive", "hybrid", "naive", "hybrid"),
    ("LLM", "llm", "aware", "llm"),
]
TEMPERATURES = (0.5, 1.0)
BOOTSTRAP = 10_000


def save(data: dict[str, Any], out: Path) -> None:
    """Write ``results.json`` and ``tables.rst`` into ``out``."""
    (out / "results.json").write_text(json.dumps(data, indent=1), encoding="utf-8")
    (out / "tables.rst").write_text(tables(data), encoding="utf-8")


def _load() -> float:
    return os.getloadavg()[0]


def bootstrap(values: list[float], seed: int = 0) -> tuple[float, float]:
    """95 % percentile bootstrap interval of the mean."""
    rng = random.Random(seed)
    n = len(values)
    means = sorted(sum(rng.choice(values) for _ in range(n)) / n for _ in range(BOOTSTRAP))
    return means[int(0.025 * BOOTSTRAP)], means[int(0.975 * BOOTSTRAP) - 1]


def tune(
    brain: JustOneBrain, table: JustOneTable, words: tuple[str, ...], games: int
) -> dict[str, Any]:
    """The temperature and pass threshold with the best mean validation score."""
    temps = (1.0,) if table.policy == "greedy" else TEMPERATURES
    seeds = [10_000 + k for k in range(games)]
    decks = [deal_cards(words, s) for s in seeds]
    trials = []
    for t in temps:
        cfg = JustOneTable(table.name, table.giver, table.policy, table.guesser, temperature=t)
        records = play_just_one_games(brain, cfg, decks, seeds)
        conf = sorted(c.confidence for r in records for c in r.cards if math.isfinite(c.confidence))
        grid = [-math.inf]
        if conf:
            grid += [conf[int(q * (len(conf) - 1))] for q in (0.1, 0.2, 0.3, 0.4, 0.5)]
        for theta in dict.fromkeys(grid):
            mean = sum(score_just_one(r, theta).score for r in records) / len(records)
            trials.append({"temperature": t, "pass_below": theta, "mean": mean})
    best = max(trials, key=lambda x: x["mean"])  # first best on ties
    for trial in trials:  # JSON has no infinity: "never passes" is null
        trial["pass_below"] = None if trial["pass_below"] == -math.inf else trial["pass_below"]
    return {"best": best, "trials": trials}


def summarise(records: list[JustOneRecord], theta: float) -> dict[str, Any]:
    sheets = [score_just_one(r, theta) for r in records]
    scores = [float(s.score) for s in sheets]
    lo, hi = bootstrap(scores)
    outcomes = {o.value: 0 for o in CardOutcome}
    for s in sheets:
        for _, o in s.log:
            outcomes[o.value] += 1
    played = sum(outcomes.values())
    written = sum(len(c.written) for r in records for c in r.cards)
    identical = sum(
        v.startswith("identical") for r in records for c in r.cards for v in c.removed.values()
    )
    invalid = sum(
        v.startswith("invalid") for r in records for c in r.cards for v in c.removed.values()
    )
    with_clues = [c for r in records for c in r.cards if c.kept]
    bands = {words: 0 for _, _, words in RULEBOOK_SCALE}
    for s in scores:
        bands[just_one_rating(int(s))] += 1
    guessed = outcomes["right"] + outcomes["wrong"]
    return {
        "scores": scores,
        "mean": sum(scores) / len(scores),
        "ci95": [lo, hi],
        "median": sorted(scores)[len(scores) // 2],
        "bands": bands,
        "outcomes": {k: v / played for k, v in outcomes.items()},
        "cards_played": played,
        "clues_identical": identical / written,
        "clues_invalid": invalid / written,
        "right_when_guessing": outcomes["right"] / guessed if guessed else None,
        "right_if_always_guessing": sum(c.right for c in with_clues) / max(1, len(with_clues)),
    }


def paired(a: list[float], b: list[float]) -> dict[str, Any]:
    diff = [x - y for x, y in zip(a, b, strict=True)]
    lo, hi = bootstrap(diff, seed=1)
    return {"mean": sum(diff) / len(diff), "ci95": [lo, hi]}


def example_rounds(record: JustOneRecord, cards: int = 6) -> list[dict[str, Any]]:
    return [
        {
            "mystery": c.mystery,
            "written": list(c.written),
            "kept": list(c.kept),
            "guess": c.guess,
            "right": c.right,
        }
        for c in record.cards[:cards]
    ]


def _brain(quick: bool) -> JustOneBrain:
    if not quick:
        return load_just_one_brain()
    clues = clue_words(min_zipf=4.6)
    guesses = guess_words(min_zipf=4.3)
    cards = mystery_words()
    vectors = word_vectors([*clues, *guesses, *cards])
    return JustOneBrain(wordnet_lexicon(), clues, guesses, vectors=vectors, candidates=20)


def run(args: argparse.Namespace) -> dict[str, Any]:
    torch.manual_seed(0)
    cards = mystery_words()
    val_words, test_words = split_words(cards, validation=0.2, seed=0)
    start, load0 = time.time(), _load()
    brain = _brain(args.quick)
    configs = [c for c in CONFIGS if not args.quick or c[1] == c[3] == "embedding"]
    results: dict[str, Any] = {}
    records_of: dict[str, list[JustOneRecord]] = {}
    for name, giver, policy, guesser in configs:
        t0, tokens0 = time.time(), brain.lm.tokens if brain.lm else 0
        table = JustOneTable(name, giver, policy, guesser)  # type: ignore[arg-type]
        tuning = tune(brain, table, val_words, args.val_games)
        best = tuning["best"]
        theta = -math.inf if best["pass_below"] is None else best["pass_below"]
        table = JustOneTable(
            name,
            giver,
            policy,
            guesser,
            temperature=best["temperature"],  # type: ignore[arg-type]
        )
        seeds = list(range(args.games))
        records = play_just_one_games(
            brain, table, [deal_cards(test_words, s) for s in seeds], seeds
        )
        records_of[name] = records
        summary = summarise(records, theta)
        summary.update(
            tuning=tuning,
            temperature=best["temperature"],
            pass_below=best["pass_below"],
            seconds=time.time() - t0,
            llm_tokens=(brain.lm.tokens if brain.lm else 0) - tokens0,
            examples=example_rounds(records[0]),
        )
        results[name] = summary
        print(f"{name}: mean {summary['mean']:.2f} {summary['ci95']} in {summary['seconds']:.0f} s"
              f" (load {_load():.1f})", flush=True)  # fmt: skip
        save(finish(args, results, brain, cards, val_words, test_words, start, load0), args.out_dir)
    return finish(args, results, brain, cards, val_words, test_words, start, load0)


def finish(
    args: argparse.Namespace,
    results: dict[str, Any],
    brain: JustOneBrain,
    cards: tuple[str, ...],
    val_words: tuple[str, ...],
    test_words: tuple[str, ...],
    start: float,
    load0: float,
) -> dict[str, Any]:
    """``results.json``'s content from the configurations played so far."""
    main = "hybrid" if "hybrid" in results else next(iter(results))
    comparisons = {
        name: paired(results[main]["scores"], results[name]["scores"])
        for name in results
        if name != main
    }
    humans_file = Path(args.humans) if args.humans else HERE / "results" / "human_games.json"
    humans = read_just_one_games(humans_file) if humans_file.exists() else []
    return {
        "mode": "quick" if args.quick else "full",
        "config": {
            "games": args.games,
            "validation_games": args.val_games,
            "temperatures": list(TEMPERATURES),
            "players": 5,
            "cards": len(cards),
            "validation_words": len(val_words),
            "test_words": len(test_words),
            "clue_words": len(brain.clue_words),
            "guess_words": len(brain.guess_words),
            "threads": torch.get_num_threads(),
        },
        "main": main,
        "results": results,
        "paired_vs_main": comparisons,
        "humans": [{"player": h["player"], "role": h["role"], "score": h["score"]} for h in humans],
        "run": {
            "seconds": time.time() - start,
            "load_before": load0,
            "load_after": _load(),
            "llm_tokens": brain.lm.tokens if brain.lm else 0,
            "llm_seconds": brain.lm.seconds if brain.lm else 0.0,
            "versions": {
                "weightspace": weightspace.__version__,
                "torch": torch.__version__,
                "python": platform.python_version(),
            },
            "command": " ".join(["python", "just_one.py", *sys.argv[1:]]),
        },
    }


def _list_table(header: list[str], rows: list[list[str]]) -> str:
    lines = [".. list-table::", "   :header-rows: 1", ""]
    for row in [header, *rows]:
        lines.append(f"   * - {row[0]}")
        lines.extend(f"     - {cell}" for cell in row[1:])
    return "\n".join(lines) + "\n"


def _pm(mean: float, ci: list[float], fmt: str = ".2f") -> str:
    return f"{mean:{fmt}} [{ci[0]:{fmt}}, {ci[1]:{fmt}}]"


def tables(data: dict[str, Any]) -> str:
    """``tables.rst``: one marked section per table, all from ``results.json``."""
    res = data["results"]
    sections: dict[str, str] = {}
    sections["scores"] = _list_table(
        ["bots", "mean score of 13 [95 % CI]", "median", "temperature", "pass below",
         "right when guessing", "clues cancelled as identical", "clues invalid"],
        [
            [name, _pm(r["mean"], r["ci95"]), f"{r['median']:.0f}", f"{r['temperature']:g}",
             "never" if r["pass_below"] is None else f"{r['pass_below']:.2f}",
             "n/a" if r["right_when_guessing"] is None else f"{r['right_when_guessing']:.2f}",
             f"{r['clues_identical']:.2f}", f"{r['clues_invalid']:.3f}"]
            for name, r in res.items()
        ],
    )  # fmt: skip
    sections["outcomes"] = _list_table(
        ["bots", "right", "wrong", "pass", "no clues left"],
        [
            [name, *(f"{r['outcomes'][k]:.2f}" for k in ("right", "wrong", "pass", "no clues"))]
            for name, r in res.items()
        ],
    )
    bands = [words for _, _, words in RULEBOOK_SCALE]
    sections["bands"] = _list_table(
        ["bots", *[f"{w} ({lo}-{hi})" if lo != hi else f"{w} ({lo})"
                   for lo, hi, w in RULEBOOK_SCALE]],
        [[name, *(str(r["bands"][w]) for w in bands)] for name, r in res.items()],
    )  # fmt: skip
    sections["paired"] = _list_table(
        [f"{data['main']} minus", "mean difference in score [95 % CI]"],
        [[name, _pm(p["mean"], p["ci95"], "+.2f")] for name, p in data["paired_vs_main"].items()],
    )
    ex = res[data["main"]]["examples"]
    sections["examples"] = _list_table(
        ["mystery word", "clues written", "clues left", "guess"],
        [
            [e["mystery"], ", ".join(e["written"]), ", ".join(e["kept"]) or "(none)",
             f"{e['guess']} ({'right' if e['right'] else 'wrong'})" if e["guess"] else "(none)"]
            for e in ex
        ],
    )  # fmt: skip
    humans = data["humans"]
    sections["humans"] = (
        _list_table(
            ["player", "role", "score"],
            [[h["player"], h["role"], str(h["score"])] for h in humans],
        )
        if humans
        else "No games by people have been recorded yet.\n"
    )
    run = data["run"]
    cfg = data["config"]
    header = (
        f"Mode {data['mode']}: {cfg['games']} test games per configuration "
        f"({cfg['validation_games']} validation games per tuning trial), "
        f"{run['seconds']:.0f} s wall on {cfg['threads']} thread(s), load average "
        f"{run['load_before']:.1f} before and {run['load_after']:.1f} after.\n"
    )
    out = [header]
    for name, body in sections.items():
        out.append(f"\n.. section: {name}\n\n{body}\n.. end: {name}\n")
    return "".join(out)


def main() -> None:
    parser = argparse.ArgumentParser(description="Project 14: Just One played by bots")
    parser.add_argument("--quick", action="store_true", help="smoke run (MiniLM bots only)")
    parser.add_argument("--out", default=None, help="output folder (default: results/)")
    parser.add_argument("--games", type=int, default=None, help="test games per configuration")
    parser.add_argument("--val-games", type=int, default=None, help="games per tuning trial")
    parser.add_argument("--threads", type=int, default=1, help="torch threads")
    parser.add_argument("--humans", default=None, help="games file written by the page")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    args.games = args.games or (3 if args.quick else 100)
    args.val_games = args.val_games or (2 if args.quick else 6)
    out = Path(args.out) if args.out else HERE / ("results/quick" if args.quick else "results")
    out.mkdir(parents=True, exist_ok=True)
    print(f"load average before: {_load():.2f}", flush=True)
    args.out_dir = out
    save(run(args), out)
    print(f"load average after: {_load():.2f}; wrote {out}", flush=True)


if __name__ == "__main__":
    main()
