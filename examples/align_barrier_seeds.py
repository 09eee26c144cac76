"""
Loss barriers over several seed pairs
=====================================

The measurement behind the alignment guide's numbers: for each pair of seeds, two MLPs
(784-512-512-10) are trained for one epoch of Adam (learning rate 1e-3, batch 128) on MNIST's
first 50,000 training digits; the test loss and accuracy are measured at 11 points of the
straight line between them, as they are, after weight matching and after activation matching
(on 5,000 training images). Prints one JSON line per pair and a summary, and writes
``results.json`` to ``--out`` when given.

Run it with ``python examples/align_barrier_seeds.py --pairs 3`` (a few minutes on one core).
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

import weightspace as ws
from weightspace import align, train


def mlp(seed: int) -> nn.Sequential:
    """The MLP, initialised from ``seed``."""
    torch.manual_seed(seed)
    return nn.Sequential(
        nn.Linear(784, 512), nn.ReLU(), nn.Linear(512, 512), nn.ReLU(), nn.Linear(512, 10)
    )


def main(argv: list[str] | None = None) -> list[dict[str, Any]]:
    """Measure the barriers of ``--pairs`` seed pairs (0/1, 2/3, ...)."""
    parser = argparse.ArgumentParser(description=__doc__.strip().splitlines()[0])
    parser.add_argument("--pairs", type=int, default=3, help="number of seed pairs")
    parser.add_argument("--out", type=Path, default=None, help="folder for results.json")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)

    train_set, test_set = ws.data.mnist("train50k"), ws.data.mnist("test")
    stats = train_set.mean_std()
    x, y = train_set.tensors(normalize=stats, flatten=True)
    xt, yt = test_set.tensors(normalize=stats, flatten=True)
    probe = mlp(0).eval()

    def loss_and_accuracy(state: dict[str, torch.Tensor]) -> tuple[float, float]:
        probe.load_state_dict(state)
        with torch.no_grad():
            logits = probe(xt)
        return F.cross_entropy(logits, yt).item(), (logits.argmax(1) == yt).float().mean().item()

    rows: list[dict[str, Any]] = []
    for pair in range(args.pairs):
        seeds = (2 * pair, 2 * pair + 1)
        models = []
        for seed in seeds:
            model = mlp(seed)
            train.fit_(model, (x, y), epochs=1, batch_size=128, lr=1e-3, seed=seed)
            models.append(model.eval())
        a, b = models
        spec = align.permutation_spec(a, xt[:2])
        start = time.perf_counter()
        by_weights = align.weight_matching(spec, a, b, seed=0)
        weights_s = time.perf_counter() - start
        start = time.perf_counter()
        by_activations = align.activation_matching(a, b, x[:5000], spec)
        activations_s = time.perf_counter() - start
        row: dict[str, Any] = {
            "seeds": list(seeds),
            "accuracy": [loss_and_accuracy(m.state_dict())[1] for m in models],
            "seconds": {"weight_matching": weights_s, "activation_matching": activations_s},
        }
        for label, other in (
            ("naive", b),
            ("weight_matching", align.permute(b, spec, by_weights)),
            ("activation_matching", align.permute(b, spec, by_activations)),
        ):
            accuracies: list[float] = []

            def loss(state: dict[str, torch.Tensor], seen: list[float] = accuracies) -> float:
                value, accuracy = loss_and_accuracy(state)
                seen.append(accuracy)
                return value

            curve = align.loss_barrier(loss, a, other)
            dip = align.BarrierResult.from_values(curve.t, accuracies, maximize=True)
            row[label] = {"loss_barrier": curve.barrier, "accuracy_barrier": dip.barrier}
        rows.append(row)
        print(json.dumps(row))

    for label in ("naive", "weight_matching", "activation_matching"):
        values = [r[label]["loss_barrier"] for r in rows]
        spread = statistics.stdev(values) if len(values) > 1 else 0.0
        print(f"{label}: loss barrier {statistics.fmean(values):.3f} ± {spread:.3f}")
    if args.out is not None:
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "results.json").write_text(json.dumps(rows, indent=1), encoding="utf-8")
    return rows


if __name__ == "__main__":
    main()
