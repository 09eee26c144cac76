"""The torch.distributed executor of ``weightspace merge``: 1 and 2 processes against serial.

Run:

    .venv/bin/python benchmarks/bench_merge_distributed.py --tensors 24 --repeats 1

Generates, from a seed, a bf16 base of ``--tensors`` tensors of shape 2048 x 2048 (24: about
100M parameters, 201 MB) and two fine-tunes (base + Gaussian deltas of standard deviation 2e-3),
each a folder of about 50 MB safetensors shards with ``model.safetensors.index.json``. On them
it runs the same task-arithmetic merge (``max_shard_size: 50MB``) three ways, each in fresh
processes:

* ``serial``: ``run_merge`` in one plain process;
* ``torchrun x1``: ``torchrun --nproc-per-node 1`` (a world of one runs the serial merge);
* ``torchrun x2``: ``torchrun --nproc-per-node 2`` (gloo, one output part per rank).

For each rank it prints the wall time of ``run_merge`` (process group set-up included), its
peak RSS (``getrusage``, imports included), the tensor bytes it read and wrote (the
``MergeReport`` of that rank), and the wall time of the whole command (interpreter start and
imports included). Finally it checks that every output holds the serial tensors bit for bit.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

SHAPE = (2048, 2048)


def _worker(config: str, out: str) -> None:
    from weightspace.merge import MergeConfig, run_merge

    report = run_merge(MergeConfig.from_yaml(config), out, overwrite=True, progress=False)
    rank = int(os.environ.get("RANK", "0"))
    Path(f"{out}.rank{rank}.json").write_text(
        json.dumps(
            {
                "rank": int(os.environ.get("RANK", "0")),
                "seconds": report.seconds,
                "peak_rss": report.peak_rss_bytes,
                "bytes_read": report.bytes_read,
                "bytes_written": report.bytes_written,
                "tensors": report.tensors,
            }
        ),
        encoding="utf-8",
    )


def _generate(root: Path, tensors: int, seed: int) -> None:
    import torch

    from weightspace.io import save_state_dict

    gen = torch.Generator().manual_seed(seed)
    base = {
        f"layers.{i}.weight": torch.randn(SHAPE, generator=gen).bfloat16() for i in range(tensors)
    }
    save_state_dict(base, root / "base", max_shard_size="50MB")
    for m in range(2):
        ft = {
            k: (v.float() + 2e-3 * torch.randn(SHAPE, generator=gen)).bfloat16()
            for k, v in base.items()
        }
        save_state_dict(ft, root / f"ft{m}", max_shard_size="50MB")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def _run(cmd: list[str], out: Path) -> tuple[float, list[dict[str, float]]]:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    start = time.perf_counter()
    done = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=1800, check=False)
    wall = time.perf_counter() - start
    if done.returncode != 0:
        sys.exit(f"{' '.join(cmd)} failed:\n{done.stderr}")
    found = sorted(out.parent.glob(f"{out.name}.rank*.json"))
    rows = [json.loads(f.read_text(encoding="utf-8")) for f in found]
    for f in found:
        f.unlink()
    return wall, sorted(rows, key=lambda r: r["rank"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tensors", type=int, default=24, help="2048 x 2048 tensors per model")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--worker", nargs=2, metavar=("CONFIG", "OUT"), help=argparse.SUPPRESS)
    parser.add_argument("--generate", metavar="ROOT", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        _worker(*args.worker)
        return
    if args.generate:
        _generate(Path(args.generate), args.tensors, args.seed)
        return
    # torch is not imported here before the runs: Linux counts the resident set a process had
    # before exec in its peak RSS, so the commands are started from a small process; the
    # checkpoints are generated in a subprocess for the same reason.
    root = Path(tempfile.mkdtemp(prefix="ws-bench-dist-"))
    try:
        me = [sys.executable, str(Path(__file__).resolve())]
        gen = [
            *me,
            "--generate",
            str(root),
            "--tensors",
            str(args.tensors),
            "--seed",
            str(args.seed),
        ]
        subprocess.run(gen, check=True, timeout=1800)
        paths = {name: root / name for name in ("base", "ft0", "ft1")}
        config = root / "merge.yaml"
        config.write_text(
            f"base: {paths['base']}\nmodels:\n  - path: {paths['ft0']}\n"
            f"  - path: {paths['ft1']}\nmethod: task_arithmetic\nmax_shard_size: 50MB\n",
            encoding="utf-8",
        )

        def torchrun(n: int, out: str) -> list[str]:
            launch = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", str(n)]
            port = ["--master-addr", "127.0.0.1", "--master-port", str(_free_port())]
            return [*launch, *port, *me[1:], "--worker", str(config), out]

        runs: dict[str, Callable[[str], list[str]]] = {
            "serial": lambda out: [*me, "--worker", str(config), out],
            "torchrun x1": lambda out: torchrun(1, out),
            "torchrun x2": lambda out: torchrun(2, out),
        }
        params = args.tensors * SHAPE[0] * SHAPE[1]
        print(f"task arithmetic of 2 bf16 models of {params / 1e6:.0f}M parameters, 50 MB shards")
        print(f"{'run':<12} {'rank':>4} {'merge s':>8} {'command s':>10} {'peak RSS MB':>12} "
              f"{'read MB':>8} {'written MB':>11} {'tensors':>8}")  # fmt: skip
        outputs = {}
        for rep in range(args.repeats):
            for label, make in runs.items():
                out = root / f"out-{label.replace(' ', '')}"
                wall, rows = _run(make(str(out)), out)
                outputs[label] = out
                for row in rows:
                    print(
                        f"{label:<12} {row['rank']:>4} {row['seconds']:>8.2f} {wall:>10.2f} "
                        f"{row['peak_rss'] / 1e6:>12.0f} {row['bytes_read'] / 1e6:>8.1f} "
                        f"{row['bytes_written'] / 1e6:>11.1f} {row['tensors']:>8}"
                    )
            if rep + 1 < args.repeats:
                print()
        import torch

        from weightspace.io import open_state_dict

        serial = open_state_dict(outputs["serial"])
        for label, out in outputs.items():
            other = open_state_dict(out)
            same = sorted(other) == sorted(serial) and all(
                other.dtype(n) == serial.dtype(n) and torch.equal(other[n], serial[n])
                for n in serial
            )
            print(f"{label}: {'identical to' if same else 'DIFFERS FROM'} the serial output")
    finally:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
