"""Dixit: games per second for each table of bots, and SmolLM2's tokens per second.

Run: .venv/bin/python benchmarks/bench_dixit.py [--threads 2] [--games 10] [--llm-cards 8]
     [--out benchmarks/results/dixit.md]

Measures, on this machine, with ``--threads`` torch threads:

* the set-up: drawing the 96-card deck, embedding its cards with ConSE and LiT (LiT heads
  trained here on the other stamps, 50 epochs, one view; not timed);
* SmolLM2-135M-Instruct writing hints: tokens per second and seconds per card, for
  ``--llm-cards`` cards with the reply cache off (greedy decoding, at most 24 new tokens);
* games per second for every table of the study (each pairing of two kinds, two seats each,
  and the table of all four kinds), ``--games`` games each, with the written hints already
  cached (a study asks the model once per card; the first game of a fresh run pays for it);
* a strategist's decision alone: milliseconds per ``tell`` (36 candidates, 128 simulated
  tables).

The load average is printed before and after: on the shared machine every rate is a lower
bound.
"""

from __future__ import annotations

import argparse
import itertools
import os
import platform
import sys
import time
from pathlib import Path

import torch

import weightspace as ws
from weightspace import games


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--games", type=int, default=10)
    parser.add_argument("--llm-cards", type=int, default=8)
    parser.add_argument("--out", type=Path, default=None, help="also write the tables here")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    load_start = os.getloadavg()
    print(f"load average at the start: {load_start[0]:.1f} on {os.cpu_count()} cores")
    lines = [
        f"`benchmarks/bench_dixit.py --threads {args.threads} --games {args.games} "
        f"--llm-cards {args.llm_cards}`",
        "",
        f"torch {torch.__version__}, {args.threads} threads, Python "
        f"{platform.python_version()}, weightspace {ws.__version__}, load average at the "
        f"start {load_start[0]:.1f} on {os.cpu_count()} cores",
        "",
    ]
    stamps = games.stamp_images()
    deck, rest = games.dixit_deck(stamps, 96, seed=0)
    tower = games.ImageTower()
    conse = games.ConSEScorer(tower)
    lit = games.train_lit(rest, tower=tower, encoder=conse.encoder, views=1, epochs=50)
    start = time.perf_counter()
    eyes = {"lit": games.Eyes(lit, deck.images), "conse": games.Eyes(conse, deck.images)}
    embed_seconds = time.perf_counter() - start
    hints = [games.literal_hint(c) for c in deck.captions]
    lines += [f"Embedding the 96 cards with both scorers: {embed_seconds:.1f} s.", ""]

    fresh = games.LLMHintWriter(cache=False)
    for thing in hints[: args.llm_cards]:
        fresh.hints(thing)
    lines += [
        "| LLM | cards | tokens | seconds | tokens/s | seconds/card |",
        "|---|---|---|---|---|---|",
        f"| SmolLM2-135M-Instruct (greedy, <= 24 new tokens) | {args.llm_cards} | "
        f"{fresh.tokens} | {fresh.seconds:.1f} | {fresh.tokens_per_second:.1f} | "
        f"{fresh.seconds / args.llm_cards:.2f} |",
        "",
    ]
    writer = games.LLMHintWriter(chat=fresh.chat)
    start = time.perf_counter()
    for thing in hints:
        writer.hints(thing)
    lines += [
        f"Filling the reply cache for the whole deck (cached replies are read back): "
        f"{time.perf_counter() - start:.1f} s, {writer.tokens} new tokens.",
        "",
        "| table | games | rounds | games/s | rounds/s |",
        "|---|---|---|---|---|",
    ]
    models = [eyes["lit"], eyes["conse"]]
    kinds_all = games.BOT_KINDS
    for kinds in (*itertools.combinations(kinds_all, 2), kinds_all):
        seats = list(kinds) * (4 // len(kinds))
        scorers = ["lit", "lit", "conse", "conse"] if len(kinds) == 2 else ["lit", "conse"] * 2
        bots = [
            games.make_bot(k, eyes[s], hints, writer=writer, models=models)
            for k, s in zip(seats, scorers, strict=True)
        ]
        games.play_game(bots, 96, seed=999)  # warm the hint columns
        start = time.perf_counter()
        rounds = 0
        for g in range(args.games):
            rounds += len(games.play_game(bots, 96, seed=g)[1])
        t = time.perf_counter() - start
        label = " vs ".join(kinds) if len(kinds) == 2 else "all four"
        lines.append(
            f"| {label} | {args.games} | {rounds} | {args.games / t:.2f} | {rounds / t:.1f} |"
        )
    strategist = games.StrategistBot(eyes["lit"], hints, writer, models, 128)
    gen = torch.Generator().manual_seed(0)
    hands = [torch.randperm(96, generator=gen)[:6].tolist() for _ in range(20)]
    for hand in hands[:2]:
        strategist.tell(hand, 4, gen)
    start = time.perf_counter()
    for hand in hands:
        strategist.tell(hand, 4, gen)
    per_tell = (time.perf_counter() - start) / len(hands) * 1000
    load_end = os.getloadavg()
    lines += [
        "",
        f"A strategist's decision (all candidates of a hand of six, 128 simulated tables): "
        f"{per_tell:.1f} ms per tell.",
        "",
        f"Load average at the end: {load_end[0]:.1f}.",
    ]
    print(f"load average at the end: {load_end[0]:.1f}")
    text = "\n".join(lines) + "\n"
    sys.stdout.write(text)
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text("# Dixit: games per second and LLM tokens per second\n\n" + text)


if __name__ == "__main__":
    main()
