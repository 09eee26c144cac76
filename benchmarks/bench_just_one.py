"""Games per second of each Just One configuration, and SmolLM2's tokens per second.

Run: .venv/bin/python benchmarks/bench_just_one.py [--threads 1] [--games 4]
     [--out benchmarks/results/just_one.md]

Measures, on this machine, with ``--threads`` torch threads:

* games per second of each bot configuration of project 14, from cold caches (every
  configuration works out its clue candidates and guesses from scratch; the MiniLM word
  vectors and the models are loaded before timing, and their loading time is reported
  apart);
* SmolLM2-135M-Instruct's prompt tokens per second, one prompt at a time and in batches of
  16 left-padded prompts (the bots read one next-token distribution per prompt, so prompt
  tokens are all the model runs).

The load average is printed before and after and written with the table: the numbers are
only comparable between runs under similar load.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time
from pathlib import Path

import torch

import weightspace as ws
from weightspace import games
from weightspace.games._just_one_agents import GUESS_PROMPT

CONFIGS = [
    ("embedding", "embedding", "aware", "embedding"),
    ("embedding, naive", "embedding", "naive", "embedding"),
    ("hybrid", "hybrid", "aware", "hybrid"),
    ("LLM", "llm", "aware", "llm"),
]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--games", type=int, default=4)
    parser.add_argument("--prompts", type=int, default=32)
    parser.add_argument("--out", type=Path, default=None, help="also write the table here")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    load_before = os.getloadavg()[0]
    print(f"load average before: {load_before:.2f}", flush=True)

    start = time.perf_counter()
    brain = games.load_just_one_brain()
    load_seconds = time.perf_counter() - start
    cards = games.mystery_words()
    decks = [games.deal_cards(cards, 500 + k) for k in range(args.games)]
    seeds = [500 + k for k in range(args.games)]
    rows = []
    for name, giver, policy, guesser in CONFIGS:
        fresh = games.JustOneBrain(
            brain.lexicon,
            brain.clue_words,
            brain.guess_words,
            vectors=brain.vectors,
            lm=games.LMScorer(brain.lm.chat) if brain.lm else None,
            candidates=brain.candidates,
        )
        table = games.JustOneTable(name, giver, policy, guesser)  # type: ignore[arg-type]
        t0 = time.perf_counter()
        games.play_just_one_games(fresh, table, decks, seeds)
        seconds = time.perf_counter() - t0
        tokens = fresh.lm.tokens if fresh.lm else 0
        rows.append((name, args.games / seconds, seconds, tokens))
        print(f"{name}: {args.games / seconds:.3f} games/s ({tokens} LLM tokens)", flush=True)

    assert brain.lm is not None
    prompts = [GUESS_PROMPT.format(clues=f"clue{k}, word{k}") for k in range(args.prompts)]
    single = games.LMScorer(brain.lm.chat)
    t0 = time.perf_counter()
    for p in prompts:
        single.logprobs(p)
    single_rate = single.tokens / (time.perf_counter() - t0)
    batched = games.LMScorer(brain.lm.chat)
    t0 = time.perf_counter()
    batched.prefetch(prompts, batch_size=16)
    batched_rate = batched.tokens / (time.perf_counter() - t0)
    load_after = os.getloadavg()[0]
    print(f"LLM tokens/s: {single_rate:.0f} one prompt at a time, {batched_rate:.0f} in batches")
    print(f"load average after: {load_after:.2f}", flush=True)

    lines = [
        "# Just One: games per second and LLM tokens per second",
        "",
        f"Command: `{' '.join(['python', *sys.argv])}`  ",
        f"Load average {load_before:.2f} before, {load_after:.2f} after (two shared cores); "
        f"torch {torch.__version__}, weightspace {ws.__version__}, Python "
        f"{platform.python_version()}, {args.threads} thread(s).  ",
        f"Loading the lexicon, word lists, MiniLM vectors (disk cache) and SmolLM2: "
        f"{load_seconds:.1f} s.",
        "",
        f"| configuration | games/s | seconds for {args.games} games | LLM prompt tokens |",
        "|---|---|---|---|",
        *(f"| {n} | {r:.3f} | {s:.1f} | {t} |" for n, r, s, t in rows),
        "",
        f"SmolLM2-135M-Instruct, {args.prompts} guess prompts: {single_rate:.0f} tokens/s one "
        f"prompt at a time, {batched_rate:.0f} tokens/s in batches of 16.",
        "",
    ]
    text = "\n".join(lines)
    print(text)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text, encoding="utf-8")


if __name__ == "__main__":
    main()
