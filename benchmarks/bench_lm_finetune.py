"""Training and evaluation throughput of SmolLM2-135M: LoRA against full fine-tuning (CPU).

Run: .venv/bin/python benchmarks/bench_lm_finetune.py [--threads 1] [--steps 4] [--batch 4]
     [--block 64] [--sentences 32] [--out benchmarks/results/lm_finetune.md] [--quick]

In one process, on the Venetian ITDI sentences of project 11 (``--data``, default
``../shared/data/itdi2022``; ``--quick`` uses a tiny random Llama and a character tokenizer
instead, to check the script), with ``--threads`` torch threads:

* **train** (tokens/s): :func:`weightspace.text.finetune_lm` for ``--steps`` steps of
  ``--batch`` packed blocks of ``--block`` tokens, with LoRA rank 16 on ``q_proj, v_proj``,
  LoRA rank 16 on every linear layer, and full fine-tuning (AdamW), after one warm-up step
  each (not timed);
* **evaluate** (tokens/s): :func:`weightspace.text.evaluate_lm` over ``--sentences``
  sentences, batches of 8;
* **generate** (new tokens/s): :func:`weightspace.text.generate`, greedy, 8 prompts at once,
  24 new tokens.

The load average is printed and recorded before and after: on the shared two-core machine the
numbers depend on what else runs, so compare rows of one run, not runs.
"""

from __future__ import annotations

import argparse
import os
import platform
import time
from pathlib import Path
from typing import Any

import torch

from weightspace import models, report, text

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data" / "itdi2022"


def sentences(folder: Path, label: str) -> list[str]:
    lines = (folder / "dev.tsv").read_text(encoding="utf-8").splitlines()
    return [" ".join(s.split("\t", 1)[1].split()) for s in lines if s.startswith(label + "\t")]


def base_model(quick: bool) -> tuple[Any, Any, str]:
    if not quick:
        chat = models.smollm2()
        return chat.model, chat.tokenizer, "SmolLM2-135M-Instruct (Q4_1 GGUF -> float32)"
    import transformers

    tok = text.char_tokenizer("abcdefghijklmnopqrstuvwxyzàèéìòù '.,")
    config = transformers.LlamaConfig(
        vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
        num_attention_heads=2, num_key_value_heads=2, bos_token_id=1, eos_token_id=2,
        pad_token_id=0,
    )  # fmt: skip
    torch.manual_seed(0)
    return transformers.LlamaForCausalLM(config).eval(), tok, "tiny random Llama (--quick)"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    # one thread: on the oversubscribed shared machine two were about ten times slower
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--block", type=int, default=64)
    parser.add_argument("--sentences", type=int, default=32)
    parser.add_argument("--data", type=Path, default=DATA)
    parser.add_argument("--out", type=Path, default=None)
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    load_before = os.getloadavg()
    print(f"load average before: {load_before[0]:.2f} {load_before[1]:.2f} {load_before[2]:.2f}")
    model, tok, name = base_model(args.quick)
    vec = sentences(args.data, "VEC")
    blocks = text.pack_texts(vec, tok, block_size=args.block)
    rows: list[list[Any]] = []
    settings = [
        ("LoRA r16 q_proj, v_proj", {"method": "lora", "rank": 16}),
        ("LoRA r16 all-linear", {"method": "lora", "rank": 16, "target_modules": "all-linear"}),
        ("full fine-tuning", {"method": "full"}),
    ]
    for label, kwargs in settings:
        text.finetune_lm(model, blocks, batch_size=args.batch, max_steps=1, **kwargs)  # warm-up
        run = text.finetune_lm(model, blocks, batch_size=args.batch, max_steps=args.steps, **kwargs)
        rows.append(
            [f"train: {label}", f"{run.trainable_parameters:,}", run.tokens, run.seconds,
             run.tokens_per_second]
        )  # fmt: skip
        print(rows[-1], flush=True)
    texts = vec[: args.sentences]
    text.evaluate_lm(model, tok, texts[:4])  # warm-up
    start = time.perf_counter()
    ev = text.evaluate_lm(model, tok, texts, batch_size=8)
    seconds = time.perf_counter() - start
    rows.append(["evaluate (bits per character)", "0", ev.tokens, seconds, ev.tokens / seconds])
    prompts = [f"Scrivi una frase sul numero {i}." for i in range(8)]
    start = time.perf_counter()
    replies = text.generate(model, tok, prompts, max_new_tokens=24, batch_size=8)
    seconds = time.perf_counter() - start
    new = sum(len(tok(r, add_special_tokens=False)["input_ids"]) for r in replies)
    rows.append(["generate (greedy, 8 prompts)", "0", new, seconds, new / seconds])
    load_after = os.getloadavg()
    print(f"load average after: {load_after[0]:.2f} {load_after[1]:.2f} {load_after[2]:.2f}")
    table = report.markdown_table(
        ["what", "trained parameters", "tokens", "seconds", "tokens/s"],
        rows,
        formats=[None, None, None, ".1f", ".1f"],
    )
    command = "python benchmarks/bench_lm_finetune.py " + " ".join(
        f"--{k} {v}" for k, v in (("threads", args.threads), ("steps", args.steps),
                                  ("batch", args.batch), ("block", args.block),
                                  ("sentences", args.sentences))
    )  # fmt: skip
    if args.quick:
        command += " --quick"
    md = "\n".join(
        [
            "# LM fine-tuning throughput (project 11)",
            "",
            f"Command: `{command}`",
            "",
            f"Model: {name}; {torch.get_num_threads()} torch threads; torch {torch.__version__}, "
            f"Python {platform.python_version()}, {platform.machine()}, {os.cpu_count()} cores.",
            f"Load average (1/5/15 min) before: {load_before[0]:.2f} / {load_before[1]:.2f} / "
            f"{load_before[2]:.2f}; after: {load_after[0]:.2f} / {load_after[1]:.2f} / "
            f"{load_after[2]:.2f} (a shared machine: other jobs ran at the same time).",
            "",
            table.rstrip("\n"),
            "",
        ]
    )
    print(md)
    out = args.out or (None if args.quick else ROOT / "benchmarks" / "results" / "lm_finetune.md")
    if out is not None:
        out.write_text(md, encoding="utf-8")
        print(f"wrote {out}")


if __name__ == "__main__":
    main()
