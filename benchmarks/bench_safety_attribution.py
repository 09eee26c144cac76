"""Cost of the safety-weight attribution of project 15: SNIP and Wanda scoring, generation.

Run: .venv/bin/python benchmarks/bench_safety_attribution.py [--threads 1] [--examples 16]
     [--prompts 16] [--new-tokens 32] [--out benchmarks/results/safety_attribution.md] [--quick]

In one run on this machine, on SmolLM2-135M-Instruct (``--quick``: the example's tiny random
Llama) with ``--threads`` torch threads:

* **SNIP** (``weightspace.saliency.snip`` with the causal LM loss on the responses): seconds
  for ``--examples`` (prompt, refusal) pairs of the example's training prompts, batches of 8,
  gradients on the linear weights of the transformer blocks, and tokens per second;
* **Wanda** (``weightspace.saliency.wanda``): the same pairs, one unpadded sequence per
  forward pass;
* **the memory-lean path** (``weightspace.saliency.iter_snip`` / ``iter_wanda`` streamed into
  ``weightspace.saliency.top_ranking``, keeping the top 5 %): the same pairs;
* **ActSVD bases** (``weightspace.saliency.output_bases`` at rank 8): the same sequences;
* **generation** (``weightspace.text.generate``, greedy, batches of 16): ``--prompts``
  held-out benign prompts, ``--new-tokens`` new tokens at most, in generated tokens per
  second (the evaluation's inner loop).

Each is timed once (a full pass costs tens of seconds on two shared cores); the load average
before and after is printed and written with the table.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import platform
import resource
import sys
import time
from pathlib import Path
from types import ModuleType

import torch

from weightspace import saliency, text

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "examples" / "project15_safety_weights" / "safety_weights.py"


def load() -> ModuleType:
    spec = importlib.util.spec_from_file_location("_bench_safety_weights", EXAMPLE)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--examples", type=int, default=16)
    parser.add_argument("--prompts", type=int, default=16)
    parser.add_argument("--new-tokens", type=int, default=32)
    parser.add_argument("--out", type=Path, default=None)
    parser.add_argument("--quick", action="store_true", help="the example's tiny model")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    load_before = os.getloadavg()
    print(f"load average before: {load_before[0]:.2f} {load_before[1]:.2f} {load_before[2]:.2f}")
    ex = load()
    cfg = ex.QUICK if args.quick else ex.FULL
    sets = ex.prompt_sets(cfg)
    model, tok = ex.load_model(cfg)
    names = ex.target_names(model)
    pairs = [(p.text, ex.REFUSALS[i % 4]) for i, p in enumerate(sets["train_harmful"])]
    pairs = pairs[: args.examples]
    rows = text.sft_blocks(pairs, tok, max_length=256)
    tokens = int(rows.attention_mask.sum())
    ex.only_targets(model, names)
    results: list[tuple[str, float, str]] = []

    start = time.perf_counter()
    saliency.snip(model, rows, loss=text.causal_lm_loss, batch_size=8)
    snip_s = time.perf_counter() - start
    results.append(("SNIP", snip_s, f"{tokens / snip_s:.0f} tokens/s"))
    seqs = ex.sequences(tok, pairs)
    start = time.perf_counter()
    saliency.wanda(model, iter(seqs), batch_size=1)
    wanda_s = time.perf_counter() - start
    results.append(("Wanda", wanda_s, f"{tokens / wanda_s:.0f} tokens/s"))
    keep = round(0.05 * sum(dict(model.named_parameters())[n].numel() for n in names))
    start = time.perf_counter()
    saliency.top_ranking(
        saliency.iter_snip(model, rows, loss=text.causal_lm_loss, batch_size=8), k=keep
    )
    lean_s = time.perf_counter() - start
    results.append(
        ("SNIP streamed into top_ranking (top 5 %)", lean_s, f"{tokens / lean_s:.0f} tokens/s")
    )
    start = time.perf_counter()
    saliency.top_ranking(saliency.iter_wanda(model, iter(seqs), batch_size=1), k=keep)
    lean_s = time.perf_counter() - start
    results.append(
        ("Wanda streamed into top_ranking (top 5 %)", lean_s, f"{tokens / lean_s:.0f} tokens/s")
    )
    start = time.perf_counter()
    saliency.output_bases(model, iter(seqs), 8, names=names, batch_size=1)
    bases_s = time.perf_counter() - start
    results.append(("ActSVD bases (rank 8)", bases_s, f"{tokens / bases_s:.0f} tokens/s"))

    prompts = [p.text for p in sets["eval_benign"]][: args.prompts]
    start = time.perf_counter()
    replies = text.generate(model, tok, prompts, max_new_tokens=args.new_tokens, batch_size=16)
    gen_s = time.perf_counter() - start
    new = sum(len(tok(r, add_special_tokens=False)["input_ids"]) for r in replies)
    results.append(("generation (greedy)", gen_s, f"{new / gen_s:.1f} new tokens/s"))
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    load_after = os.getloadavg()
    print(f"load average after: {load_after[0]:.2f} {load_after[1]:.2f} {load_after[2]:.2f}")

    model_name = "tiny random Llama" if args.quick else "SmolLM2-135M-Instruct"
    lines = [
        "# Safety-weight attribution: scoring and generation cost",
        "",
        f"Command: `{' '.join([Path(sys.executable).name, *sys.argv])}`",
        "",
        f"Model: {model_name}; {len(names)} attributed weight matrices; {len(pairs)} "
        f"(prompt, refusal) pairs, {tokens} tokens; {len(prompts)} prompts generated with at "
        f"most {args.new_tokens} new tokens ({new} generated).",
        "",
        f"Machine: {platform.machine()}, {os.cpu_count()} CPUs, torch {torch.__version__}, "
        f"{torch.get_num_threads()} thread(s), Python {platform.python_version()}; load average "
        f"{load_before[0]:.2f} before, {load_after[0]:.2f} after (a shared machine: timings "
        f"taken under load); peak resident memory of the whole run {peak_mb:.0f} MB.",
        "",
        "| step | seconds | throughput |",
        "|---|---|---|",
        *[f"| {name} | {s:.2f} | {rate} |" for name, s, rate in results],
        "",
    ]
    table = "\n".join(lines)
    print(table)
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(table)


if __name__ == "__main__":
    main()
