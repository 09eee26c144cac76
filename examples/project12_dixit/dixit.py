"""
Dixit: storytellers that aim for a hint some, but not all, will find
====================================================================

Project 12 of the catalogue, after Kunda & Rabkina ("Creative Captioning: An AI Grand
Challenge Based on the Dixit Board Game", arXiv 2010.00048). Four players hold six cards each;
the storyteller gives a hint for one of theirs; the others put in the card of their hand that
fits best; everyone votes for the storyteller's card. The storyteller scores only when some,
but not all, find it (:func:`weightspace.games.score_round`).

A deck is 96 Tux Paint stamps (:func:`weightspace.games.dixit_deck`). Players see them
only through an image-text scorer: ConSE (EfficientNet-Lite0 and MiniLM, nothing trained) or a
locked-tower alignment (LiT) trained on the *other* stamps, whose captions no card shares.
Four bots (:data:`weightspace.games.BOT_KINDS`):

* ``random``: a random card told with another card's caption; random choice and vote;
* ``literal``: a random card told by its own caption;
* ``abstract``: a random card told by the first hint SmolLM2-135M-Instruct writes for it;
* ``strategist``: every card of its hand with its caption and SmolLM2's hints; it simulates
  the other players with both scorers and tells what it expects to score most with.

For each of five deck draws (each with its own LiT), the script plays every pairing of two
kinds (two seats each, seats swapped every other game) and a table of all four, records every
round, and writes per-role statistics with 95 % intervals over games, and per deck.
``python dixit.py`` runs the full study (it writes ``results/``); ``--quick`` a smoke run of
about a minute (to ``--out``). Games that people played with ``weightspace play dixit
--record FILE`` are summarised when ``--human FILE`` is given.
"""

from __future__ import annotations

import argparse
import itertools
import json
import logging
import math
import os
import platform
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from scipy import stats

import weightspace as ws
from weightspace import games

HERE = Path(__file__).resolve().parent
KINDS = games.BOT_KINDS


@dataclass
class Config:
    """Sizes of one run: the full study or the quick smoke run."""

    cards: int  # deck size
    categories: tuple[str, ...] | None  # stamp folders (None: all)
    games: int  # games per pairing
    pairings: tuple[tuple[str, ...], ...]  # kinds at the table (two: two seats each)
    lit_epochs: int
    lit_views: int
    simulations: int  # tables a strategist simulates per decision
    deck_seeds: tuple[int, ...] = (0,)  # one deck draw and LiT training per seed
    out: Path = field(default_factory=lambda: HERE / "results")


FULL = Config(
    cards=96,
    categories=None,
    games=20,
    pairings=(*itertools.combinations(KINDS, 2), KINDS),
    lit_epochs=200,
    lit_views=4,
    simulations=128,
    deck_seeds=(0, 1, 2, 3, 4),
)
QUICK = Config(
    cards=36,
    categories=("animals", "food"),
    games=2,
    pairings=(("random", "strategist"), ("literal", "abstract")),
    lit_epochs=20,
    lit_views=1,
    simulations=32,
)


def interval(values: Sequence[float]) -> dict[str, Any]:
    """Mean and half-width of the 95 % Student-t interval, with the values."""
    x = np.asarray(values, dtype=float)
    n = len(x)
    half = float(stats.t.ppf(0.975, n - 1) * x.std(ddof=1) / math.sqrt(n)) if n > 1 else 0.0
    return {"mean": float(x.mean()) if n else float("nan"), "ci95": half, "n": n}


class Recording:
    """A hint writer that remembers which things it was asked about."""

    def __init__(self, writer: Any) -> None:
        self.writer = writer
        self.asked: dict[str, list[str]] = {}

    def hints(self, thing: str) -> list[str]:
        if thing not in self.asked:
            self.asked[thing] = list(self.writer.hints(thing))
        return list(self.asked[thing])


class Logged:
    """A bot that records what it told (and a strategist's expected points for it)."""

    def __init__(self, bot: Any) -> None:
        self.bot = bot
        self.name = bot.name
        self.told: list[dict[str, Any]] = []

    def tell(self, hand: Sequence[int], players: int, gen: torch.Generator) -> tuple[int, str]:
        card, hint = self.bot.tell(hand, players, gen)
        entry: dict[str, Any] = {"card": card, "hint": hint}
        plan = getattr(self.bot, "last_plan", None)
        if plan:
            entry["expected"] = next(e for c, h, e in plan if (c, h) == (card, hint))
            entry["candidates"] = len(plan)
        self.told.append(entry)
        return card, hint

    def choose(self, hand: Sequence[int], hint: str, gen: torch.Generator) -> int:
        return int(self.bot.choose(hand, hint, gen))

    def vote(self, table: Sequence[int], own: int, hint: str, gen: torch.Generator) -> int:
        return int(self.bot.vote(table, own, hint, gen))


# %%
# 1. Deck, scorers and the hint writer
# ------------------------------------


def setup(cfg: Config) -> dict[str, Any]:
    """What every deck shares: the stamps, their tower features, ConSE and the hint writer."""
    stamps = games.stamp_images(categories=cfg.categories)
    tower = games.ImageTower()
    conse = games.ConSEScorer(tower)
    start = time.perf_counter()
    features = games.stamp_features(stamps, tower, views=cfg.lit_views, seed=0)
    return {
        "stamps": stamps,
        "tower": tower,
        "conse": conse,
        "features": features,
        "feature_seconds": time.perf_counter() - start,
        "writer": games.LLMHintWriter(),
    }


def deck_setup(cfg: Config, shared: dict[str, Any], seed: int) -> dict[str, Any]:
    """One deck draw, and LiT trained on the stamps whose captions no card shares."""
    stamps = shared["stamps"]
    deck, rest = games.dixit_deck(stamps, cfg.cards, seed=seed)
    position = {name: i for i, name in enumerate(stamps.names)}
    start = time.perf_counter()
    lit = games.train_lit(
        rest,
        tower=shared["tower"],
        encoder=shared["conse"].encoder,
        views=cfg.lit_views,
        epochs=cfg.lit_epochs,
        seed=seed,
        features=shared["features"][:, [position[n] for n in rest.names]],
    )
    lit_seconds = time.perf_counter() - start
    eyes = {
        "lit": games.Eyes(lit, deck.images),
        "conse": games.Eyes(shared["conse"], deck.images),
    }
    return {
        "deck": deck,
        "rest": len(rest),
        "eyes": eyes,
        "hints": [games.literal_hint(c) for c in deck.captions],
        "writer": Recording(shared["writer"]),
        "lit_seconds": lit_seconds,
    }


def measure_eyes(eyes: dict[str, games.Eyes], hints: list[str], seed: int) -> dict[str, Any]:
    """How often each scorer finds a card from its literal hint: among all, and among four."""
    out: dict[str, Any] = {}
    n = len(hints)
    gen = torch.Generator().manual_seed(seed)
    # 50 tables of four per card: the card and three others at random.
    tables = torch.stack(
        [
            torch.cat([torch.tensor([i]), torch.randperm(n - 1, generator=gen)[:3]])
            for i in range(n)
            for _ in range(50)
        ]
    )
    tables[:, 1:] += (tables[:, 1:] >= tables[:, :1]).long()  # skip the card itself
    for name, e in eyes.items():
        sim = e.similarity(hints)  # [cards, hints]
        top1 = float((sim.argmax(dim=0) == torch.arange(n)).float().mean())
        own = torch.arange(n).repeat_interleave(50)
        table_scores = sim[tables, own[:, None]]
        among4 = float((table_scores.argmax(dim=1) == 0).float().mean())
        out[name] = {"top1_all": top1, "top1_of_4": among4}
    out["chance"] = {"top1_all": 1 / n, "top1_of_4": 0.25}
    return out


# %%
# 2. Games
# --------


def seating(kinds: Sequence[str], game: int) -> tuple[list[str], list[str]]:
    """Kinds and scorers of the four seats of one game of a pairing."""
    if len(kinds) == 2:
        a, b = kinds if game % 2 == 0 else kinds[::-1]
        return [a, b, a, b], ["lit", "lit", "conse", "conse"]
    rot = [kinds[(k + game) % len(kinds)] for k in range(len(kinds))]
    scorers = ["lit", "conse"] if game % 2 == 0 else ["conse", "lit"]
    return rot, [scorers[k % 2] for k in range(len(kinds))]


def play_pairing(
    cfg: Config, ctx: dict[str, Any], kinds: Sequence[str], deck_seed: int
) -> dict[str, Any]:
    eyes, hints, writer = ctx["eyes"], ctx["hints"], ctx["writer"]
    models = [eyes["lit"], eyes["conse"]]
    played = []
    start = time.perf_counter()
    for g in range(cfg.games):
        seats, scorers = seating(kinds, g)
        bots = [
            Logged(
                games.make_bot(
                    k, eyes[s], hints, writer=writer, models=models, simulations=cfg.simulations
                )
            )
            for k, s in zip(seats, scorers, strict=True)
        ]
        seed = 10_000 * deck_seed + 1000 + g
        scores, rounds, end = games.play_game(bots, cfg.cards, seed=seed)
        told = [t for b in bots for t in b.told]
        played.append(
            {
                "seed": seed,
                "seats": seats,
                "scorers": scorers,
                "scores": scores,
                "end": end,
                "rounds": [r.to_json() for r in rounds],
                "told": {str(p): b.told for p, b in enumerate(bots)},
            }
        )
        logging.info(
            "%s game %d: %s %s (%d rounds, %d told)",
            kinds,
            g,
            seats,
            scores,
            len(rounds),
            len(told),
        )
    return {"kinds": list(kinds), "games": played, "seconds": time.perf_counter() - start}


# %%
# 3. Statistics per role
# ----------------------


def seat_stats(game: dict[str, Any], seat: int) -> dict[str, Any]:
    """One seat's numbers in one game."""
    st: dict[str, Any] = {"told": 0, "points_told": 0, "some": 0, "all": 0, "none": 0}
    st.update({"votes": 0, "found": 0, "decoy_votes": 0, "rounds_other": 0})
    players = len(game["seats"])
    for r in game["rounds"]:
        played = {int(k): v for k, v in r["played"].items()}
        votes = {int(k): v for k, v in r["votes"].items()}
        points = {int(k): v for k, v in r["points"].items()}
        secret = played[r["storyteller"]]
        if r["storyteller"] == seat:
            k = sum(v == secret for v in votes.values())
            st["told"] += 1
            st["points_told"] += points[seat]
            st["all" if k == players - 1 else "none" if k == 0 else "some"] += 1
        else:
            st["rounds_other"] += 1
            st["votes"] += 1
            st["found"] += votes[seat] == secret
            st["decoy_votes"] += sum(v == played[seat] for v in votes.values())
    best = max(game["scores"])
    winners = [p for p, s in enumerate(game["scores"]) if s == best]
    st["win"] = 1 / len(winners) if seat in winners else 0.0
    st["score"] = game["scores"][seat]
    return st


def kind_game_values(game: dict[str, Any], kind: str) -> dict[str, float] | None:
    """A kind's per-role values in one game (its seats pooled), or None if it did not play."""
    seats = [p for p, k in enumerate(game["seats"]) if k == kind]
    if not seats:
        return None
    rows = [seat_stats(game, p) for p in seats]

    def tot(key: str) -> float:
        return float(sum(r[key] for r in rows))

    told = tot("told")
    out = {
        "score": tot("score") / len(seats),
        "win": tot("win"),  # the share of the game's win this kind took
        "find": tot("found") / tot("votes"),
        "decoys": tot("decoy_votes") / tot("rounds_other"),
    }
    if told:
        out.update(
            told_points=tot("points_told") / told,
            some=tot("some") / told,
            all=tot("all") / told,
            none=tot("none") / told,
        )
    return out


def summarize(data: dict[str, Any]) -> dict[str, Any]:
    """Per-table and per-kind statistics with 95 % intervals over games (all decks pooled),
    and each kind's per-deck means with intervals over the deck seeds."""
    by_table: dict[tuple[str, ...], list[dict[str, Any]]] = {}
    per_kind: dict[str, dict[str, list[float]]] = {k: {} for k in KINDS}
    per_deck: dict[str, dict[str, list[float]]] = {k: {} for k in KINDS}
    expected, actual = [], []
    written = 0
    for deck in data["decks"]:
        in_deck: dict[str, dict[str, list[float]]] = {k: {} for k in KINDS}
        for pairing in deck["pairings"]:
            by_table.setdefault(tuple(pairing["kinds"]), []).extend(pairing["games"])
            for g in pairing["games"]:
                for kind in pairing["kinds"]:
                    v = kind_game_values(g, kind)
                    assert v is not None
                    for m, x in v.items():
                        per_kind[kind].setdefault(m, []).append(x)
                        in_deck[kind].setdefault(m, []).append(x)
                # A strategist's expectation against what it scored, per told round.
                for seat, told in g["told"].items():
                    turns = [r for r in g["rounds"] if r["storyteller"] == int(seat)]
                    for t, r in zip(told, turns, strict=True):
                        if "expected" in t:
                            expected.append(t["expected"])
                            actual.append(r["points"][seat])
                            written += t["hint"] != deck["deck"]["hints"][t["card"]]
        for kind, ms in in_deck.items():
            for m, xs in ms.items():
                per_deck[kind].setdefault(m, []).append(float(np.mean(xs)))
    tables_ = []
    for kinds, played in by_table.items():
        row: dict[str, Any] = {"kinds": list(kinds), "games": len(played)}
        row["rounds"] = interval([len(g["rounds"]) for g in played])
        row["ended_by_score"] = sum(g["end"] == "score" for g in played)
        for kind in kinds:
            values = [v for v in (kind_game_values(g, kind) for g in played) if v is not None]
            row[kind] = {m: interval([v[m] for v in values if m in v]) for m in values[0]}
        tables_.append(row)
    kinds_ = {k: {m: interval(v) for m, v in ms.items()} for k, ms in per_kind.items() if ms}
    decks = {
        k: {m: {**interval(v), "values": v} for m, v in ms.items()}
        for k, ms in per_deck.items()
        if ms
    }
    calibration = {
        "turns": len(expected),
        "expected": interval(expected),
        "actual": interval(actual),
        "written_share": written / len(expected) if expected else float("nan"),
    }
    return {"pairings": tables_, "kinds": kinds_, "decks": decks, "strategist": calibration}


# %%
# 4. Tables
# ---------


def grid(header: list[str], rows: list[list[str]]) -> list[str]:
    """A reStructuredText grid table."""
    widths = [max(len(r[k]) for r in [header, *rows]) for k in range(len(header))]

    def rule(ch: str) -> str:
        return "+" + "+".join(ch * (w + 2) for w in widths) + "+"

    def line(r: list[str]) -> str:
        return "| " + " | ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)) + " |"

    out = [rule("-"), line(header), rule("=")]
    for r in rows:
        out += [line(r), rule("-")]
    return out


def fmt(s: dict[str, Any] | None, digits: int = 2) -> str:
    if s is None or s["n"] == 0:
        return "-"
    if s["n"] < 2:
        return f"{s['mean']:.{digits}f}"
    return f"{s['mean']:.{digits}f} ± {s['ci95']:.{digits}f}"


def section(title: str, lines: list[str]) -> list[str]:
    return [f".. section: {title}", "", *lines, "", f".. end: {title}", "", ""]


def tables(data: dict[str, Any]) -> str:
    """The report's tables, from ``results.json`` alone."""
    summary = summarize(data)
    cfg = data["config"]
    decks = data["decks"]
    out: list[str] = [
        f"Mode {data['mode']}: {cfg['cards']} cards, 4 players, {len(decks)} deck draw(s) "
        f"(seeds {', '.join(str(d['seed']) for d in decks)}), {cfg['games']} games per table "
        "and deck; ± is the half-width of the 95 % Student-t interval over games (over deck "
        "draws in the per-deck table).",
        "",
        "",
    ]
    rows = []
    for name in ("lit", "conse", "chance"):
        row = [name]
        for metric in ("top1_all", "top1_of_4"):
            values = [d["eyes"][name][metric] for d in decks]
            row.append(fmt(interval(values), 3))
        rows.append(row)
    out += section("eyes", grid(["scorer", "top-1 among all cards", "top-1 among 4"], rows))
    rows = []
    for p in summary["pairings"]:
        a = p["kinds"][0]
        label = " vs ".join(p["kinds"]) if len(p["kinds"]) == 2 else "all four"
        for kind in p["kinds"]:
            rows.append(
                [
                    label if kind == a else "",
                    kind,
                    fmt(p[kind]["score"], 1),
                    fmt(p[kind]["win"]),
                    fmt(p["rounds"], 1) if kind == a else "",
                    f"{p['ended_by_score']} of {p['games']}" if kind == a else "",
                ]
            )
    out += section(
        "pairings",
        grid(["table", "bot", "final score", "win share", "rounds", "ended at 30 points"], rows),
    )
    rows = []
    for kind, m in summary["kinds"].items():
        rows.append(
            [
                kind,
                fmt(m.get("told_points")),
                fmt(m.get("some")),
                fmt(m.get("all")),
                fmt(m.get("none")),
                fmt(m["find"]),
                fmt(m["decoys"]),
                fmt(m["score"], 1),
            ]
        )
    header = [
        "bot",
        "storyteller points / turn",
        "some found",
        "all found",
        "none found",
        "guesser finds",
        "decoy votes / round",
        "final score",
    ]
    out += section("roles", grid(header, rows))
    rows = []
    for kind, m in summary["decks"].items():
        told = m["told_points"]
        rows.append(
            [
                kind,
                ", ".join(f"{v:.2f}" for v in told["values"]),
                fmt(told),
                fmt(m["some"]),
                fmt(m["score"], 1),
            ]
        )
    header = ["bot", "storyteller points / turn, by deck", "mean", "some found", "final score"]
    out += section("decks", grid(header, rows))
    cal = summary["strategist"]
    llms = [d["llm"] for d in decks]
    asked = sum(x["cards_asked"] for x in llms)
    with_hints = sum(x["cards_with_hints"] for x in llms)
    per_card = sum(x["hints_per_card"] * x["cards_asked"] for x in llms) / max(1, asked)
    rows = [
        ["cards with a usable written hint (all decks)", f"{with_hints} of {asked}"],
        ["written hints per card asked", f"{per_card:.2f}"],
        ["strategist turns", str(cal["turns"])],
        ["strategist turns told with a written hint", f"{cal['written_share']:.2f}"],
        ["strategist expected points / turn", fmt(cal["expected"])],
        ["strategist points scored / turn", fmt(cal["actual"])],
    ]
    out += section("llm", grid(["quantity", "value"], rows))
    rows = [
        [thing, ", ".join(h) if h else "(none usable)"]
        for thing, h in list(decks[0]["llm"]["examples"].items())[:10]
    ]
    out += section("hints", grid(["card (its caption)", "SmolLM2's usable hints"], rows))
    rows = []
    for r in decks[0]["example_rounds"]:
        rows.append(
            [
                r["storyteller"],
                r["card"],
                r["hint"],
                f"{r['found']} of 3",
                ", ".join(str(p) for p in r["points"]),
            ]
        )
    out += section(
        "rounds", grid(["storyteller", "its card", "hint", "found", "points by seat"], rows)
    )
    tokens = sum(x["tokens"] for x in llms)
    seconds = sum(x["seconds"] for x in llms)
    llm_rate = tokens / seconds if seconds else float("nan")
    rows = [
        ["wall time of the run (s)", f"{data['seconds']:.0f}"],
        [
            "load average (1 min) before / after",
            "{:.1f} / {:.1f}".format(data["load"]["before"][0], data["load"]["after"][0]),
        ],
        ["tower features of every stamp (s)", f"{data['feature_seconds']:.0f}"],
        ["LiT training, all decks (s)", f"{sum(d['lit_seconds'] for d in decks):.0f}"],
        [
            "stamps LiT was trained on, by deck",
            ", ".join(str(d["deck"]["training_stamps"]) for d in decks),
        ],
        ["LLM tokens generated (replies not in the cache)", str(tokens)],
        ["LLM tokens per second", f"{llm_rate:.1f}"],
    ]
    out += section("run", grid(["quantity", "value"], rows))
    humans = data.get("humans")
    if humans:
        rows = [[h["person"], str(h["games"]), f"{h['mean_score']:.1f}"] for h in humans]
        lines = grid(["person", "games", "mean final score"], rows)
    else:
        lines = ["No game played by a person has been recorded yet."]
    out += section("humans", lines)
    return "\n".join(out).rstrip() + "\n"


def example_rounds(deck: dict[str, Any], count: int = 8) -> list[dict[str, Any]]:
    """The first rounds of a deck's first all-four game, in words."""
    table = next((p for p in deck["pairings"] if len(p["kinds"]) > 2), deck["pairings"][0])
    game = table["games"][0]
    hints = deck["deck"]["hints"]
    out = []
    for r in game["rounds"][:count]:
        s = r["storyteller"]
        secret = r["played"][str(s)]
        out.append(
            {
                "storyteller": f"{game['seats'][s]}/{game['scorers'][s]}",
                "card": hints[secret],
                "hint": r["hint"],
                "found": sum(v == secret for v in r["votes"].values()),
                "points": [r["points"][str(p)] for p in range(len(game["seats"]))],
            }
        )
    return out


def human_summary(path: Path | None) -> list[dict[str, Any]] | None:
    if path is None or not path.exists():
        return None
    by: dict[str, list[int]] = {}
    for g in games.read_dixit_games(path):
        by.setdefault(g["person"], []).append(g["scores"][g["seat"]])
    return [{"person": p, "games": len(s), "mean_score": float(np.mean(s))} for p, s in by.items()]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[1])
    parser.add_argument("--quick", action="store_true", help="a smoke run of about a minute")
    parser.add_argument("--out", type=Path, help="output folder (default: results/)")
    parser.add_argument("--human", type=Path, help="games people played (weightspace play dixit)")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    torch.set_num_threads(1)
    cfg = QUICK if args.quick else FULL
    if args.out is not None:
        cfg.out = args.out
    elif args.quick:
        cfg.out = HERE / "results" / "quick"
    cfg.out.mkdir(parents=True, exist_ok=True)
    load_before = os.getloadavg()
    start = time.perf_counter()
    shared = setup(cfg)
    data: dict[str, Any] = {
        "mode": "quick" if args.quick else "full",
        "config": {k: v for k, v in asdict(cfg).items() if k != "out"},
        "versions": {
            "weightspace": ws.__version__,
            "torch": torch.__version__,
            "python": platform.python_version(),
        },
        "feature_seconds": shared["feature_seconds"],
        "decks": [],
    }
    for seed in cfg.deck_seeds:
        ctx = deck_setup(cfg, shared, seed)
        deck = ctx["deck"]
        llm = ctx["writer"].writer
        tokens, seconds = llm.tokens, llm.seconds
        one: dict[str, Any] = {
            "seed": seed,
            "deck": {
                "names": list(deck.names),
                "hints": ctx["hints"],
                "folders": sorted(set(deck.categories)),
                "training_stamps": ctx["rest"],
            },
            "lit_seconds": ctx["lit_seconds"],
            "eyes": measure_eyes(ctx["eyes"], ctx["hints"], seed),
            "pairings": [play_pairing(cfg, ctx, kinds, seed) for kinds in cfg.pairings],
        }
        replies = dict(sorted(ctx["writer"].asked.items()))
        one["llm"] = {
            "cards_asked": len(replies),
            "cards_with_hints": sum(bool(h) for h in replies.values()),
            "hints_per_card": float(np.mean([len(h) for h in replies.values()]))
            if replies
            else 0.0,
            "replies": replies,
            "examples": dict(
                itertools.islice(replies.items(), 0, None, max(1, len(replies) // 10))
            ),
            "tokens": llm.tokens - tokens,
            "seconds": llm.seconds - seconds,
        }
        one["example_rounds"] = example_rounds(one)
        data["decks"].append(one)
        # Written after every deck, listing the decks done so far: a run cut short leaves
        # consistent results of fewer decks.
        data["decks_done"] = [d["seed"] for d in data["decks"]]
        data["humans"] = human_summary(args.human)
        data["seconds"] = time.perf_counter() - start
        data["load"] = {"before": load_before, "after": os.getloadavg()}
        # Compact: every round of every game is kept (the per-game values behind each interval).
        (cfg.out / "results.json").write_text(
            json.dumps(data, separators=(",", ":")), encoding="utf-8"
        )
        (cfg.out / "tables.rst").write_text(tables(data), encoding="utf-8")
        logging.info("deck %d done at %.0f s; wrote %s", seed, data["seconds"], cfg.out)


if __name__ == "__main__":
    main()
