"""Throughput of ``run_merge``'s fused path: this tree's code against an earlier commit's.

Run:

    .venv/bin/python benchmarks/bench_merge_throughput.py --params 0.15B --repeats 5

Generates (or reuses, with ``--workdir``) the Llama-style bf16 base and three fine-tunes of
``bench_merge_vs_mergekit.py`` at ``--params`` parameters, extracts ``src/weightspace`` of
``--baseline`` (a git revision; default: the commit before the throughput work of issue 12)
into a temporary folder with ``git archive``, and times the same merges with both codes in
the same run, interleaved (one run of each, then the next repeat), each in a fresh process
with one torch thread (``threads=1``) and ``sync`` (untimed) before it:

* ``read floor``: read every input byte once (``os.preadv`` into a reused buffer), nothing else;
* ``new`` / ``baseline``: ``run_merge(config, OUT, threads=1)`` for each ``--methods`` entry
  (``ta``, ``average``, ``ties``, ``magnitude_prune`` with density 0.5, ``dare``, ``dare_ties``
  with drop rate 0.5).

For each it prints the median wall time of ``run_merge`` (imports excluded), the median CPU
time of the process during it (``time.process_time``, which a loaded machine inflates less
than wall time) and the ratios baseline / new, and checks that both codes wrote the same bytes.
The table, with the load average before and after and the versions, goes to
``benchmarks/results/merge_throughput.md`` (``--results PATH`` elsewhere).
"""

from __future__ import annotations

import argparse
import hashlib
import os
import shlex
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))

import bench_merge_vs_mergekit as bmk  # noqa: E402

#: The commit before the throughput work of issue 12 (chunk pipeline as of the idle table).
DEFAULT_BASELINE = "3154e38"

#: ``--methods`` names: the config's method and parameters.
METHODS = {
    "ta": ("task_arithmetic", ""),
    "average": ("average", ""),
    "ties": ("ties", "{density: 0.5}"),
    "magnitude_prune": ("magnitude_prune", "{density: 0.5}"),
    "dare": ("dare", "{drop_rate: 0.5, seed: 1}"),
    "dare_ties": ("dare_ties", "{drop_rate: 0.5, seed: 1}"),
}


def config_text(workdir: Path, method: str) -> str:
    """The ``weightspace merge`` config of one ``--methods`` entry (a one-shard folder)."""
    name, parameters = METHODS[method]
    lines = [
        f"base: {workdir / 'base'}",
        "models:",
        *(f"  - {folder}" for folder in bmk._input_dirs(workdir)[1:]),
        f"method: {name}",
        *([f"parameters: {parameters}"] if parameters else []),
        "max_shard_size: 5GB",
    ]
    return "\n".join(lines) + "\n"


_MERGE = """
import os, sys, time
sys.path.insert(0, sys.argv[1])
import torch
from weightspace.merge import MergeConfig, run_merge
config = MergeConfig.from_yaml(sys.argv[2])
wall, cpu = time.perf_counter(), time.process_time()
run_merge(config, sys.argv[3], progress=False, threads=1)
print("@@", time.perf_counter() - wall, time.process_time() - cpu)
"""

_READ = """
import os, sys, time
files = sys.argv[1:]
buf = bytearray(1 << 20)
view = memoryview(buf)
wall, cpu = time.perf_counter(), time.process_time()
for file in files:
    fd = os.open(file, os.O_RDONLY)
    pos = 0
    while True:
        n = os.preadv(fd, [view], pos)
        if n <= 0:
            break
        pos += n
    os.close(fd)
print("@@", time.perf_counter() - wall, time.process_time() - cpu)
"""


def _time(cmd: list[str], env: dict[str, str]) -> tuple[float, float]:
    done = subprocess.run(cmd, capture_output=True, text=True, env=env, check=False)
    lines = [ln for ln in done.stdout.splitlines() if ln.startswith("@@")]
    if done.returncode != 0 or not lines:
        raise SystemExit(f"failed ({done.returncode}): {shlex.join(cmd)}\n{done.stderr[-3000:]}")
    _, wall, cpu = lines[-1].split()
    return float(wall), float(cpu)


def _digest(folder: Path) -> str:
    h = hashlib.sha256()
    for file in sorted(folder.glob("*.safetensors")):
        h.update(file.read_bytes())
    return h.hexdigest()[:16]


def _load() -> str:
    return ", ".join(f"{x:.2f}" for x in os.getloadavg())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--params", default="0.15B", help="model size, e.g. 0.15B")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument(
        "--methods", default="ta,ties", help=f"comma-separated, of: {', '.join(METHODS)}"
    )
    parser.add_argument("--baseline", default=DEFAULT_BASELINE, help="git revision to compare")
    parser.add_argument("--workdir", type=Path, help="where the models are (generated if absent)")
    parser.add_argument("--results", type=Path, default=HERE / "results" / "merge_throughput.md")
    parser.add_argument("--note", default="", help="a line under the title of the results")
    args = parser.parse_args(argv)

    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="ws-throughput-"))
    arch = bmk.choose_arch(bmk.parse_params(args.params))
    if not (workdir / "base" / "model.safetensors.index.json").exists():
        workdir.mkdir(parents=True, exist_ok=True)
        print(f"generating {arch.params / 1e9:.3f}B parameters in {workdir}", flush=True)
        bmk.generate(workdir, arch, 0, 300_000_000)
    methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    configs = {}
    for method in methods:
        configs[method] = workdir / f"throughput-{method}.yml"
        configs[method].write_text(config_text(workdir, method))
    inputs = [str(f) for d in bmk._input_dirs(workdir) for f in sorted(d.glob("*.safetensors"))]
    in_bytes = sum(os.path.getsize(f) for f in inputs)

    scratch = Path(tempfile.mkdtemp(prefix="ws-baseline-"))
    archive = subprocess.run(
        ["git", "-C", str(ROOT), "archive", args.baseline, "src/weightspace"],
        capture_output=True,
        check=True,
    )
    subprocess.run(["tar", "-x", "-C", str(scratch)], input=archive.stdout, check=True)
    rev = subprocess.run(
        ["git", "-C", str(ROOT), "rev-parse", "--short", args.baseline],
        capture_output=True, text=True, check=True,
    ).stdout.strip()  # fmt: skip
    head = subprocess.run(
        ["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"],
        capture_output=True, text=True, check=True,
    ).stdout.strip()  # fmt: skip
    dirty = subprocess.run(
        ["git", "-C", str(ROOT), "status", "--porcelain", "src/weightspace"],
        capture_output=True, text=True, check=True,
    ).stdout.strip()  # fmt: skip
    codes = {"new": str(ROOT / "src"), "baseline": str(scratch / "src")}
    env = dict(os.environ, OMP_NUM_THREADS="1", HF_HUB_OFFLINE="1", PYTHONHASHSEED="0")
    out_root = Path(tempfile.mkdtemp(prefix="ws-throughput-out-"))

    load_before = _load()
    print(f"load average before: {load_before}", flush=True)
    runs: dict[str, list[tuple[float, float]]] = {}
    digests: dict[str, str] = {}
    try:
        for repeat in range(args.repeats):
            os.sync()
            runs.setdefault("read floor", []).append(
                _time([sys.executable, "-c", _READ, *inputs], env)
            )
            for method in methods:
                for code, src in codes.items():
                    key = f"{method} {code}"
                    out = out_root / key.replace(" ", "-")
                    shutil.rmtree(out, ignore_errors=True)
                    os.sync()
                    cmd = [sys.executable, "-c", _MERGE, src, str(configs[method]), str(out)]
                    runs.setdefault(key, []).append(_time(cmd, env))
                    digests[key] = _digest(out)
                    wall, cpu = runs[key][-1]
                    print(f"  {repeat + 1}/{args.repeats} {key:16s} {wall:7.2f} s wall "
                          f"{cpu:7.2f} s cpu  (load {_load()})", flush=True)  # fmt: skip
    finally:
        shutil.rmtree(out_root, ignore_errors=True)
        shutil.rmtree(scratch, ignore_errors=True)
    load_after = _load()

    def med(key: str, i: int) -> float:
        return statistics.median(r[i] for r in runs[key])

    lines = [
        "# run_merge throughput: this tree against an earlier commit",
        "",
        *([args.note, ""] if args.note else []),
        f"{arch.params / 1e9:.3f}B-parameter bf16 Llama-style base + 3 fine-tunes "
        f"({in_bytes / 1e9:.2f} GB of inputs), `run_merge(..., threads=1)`, each run in a "
        f"fresh process after `sync`, interleaved; median of {args.repeats} (min-max). "
        f"new = {head}{' + uncommitted changes' if dirty else ''}, baseline = {rev}.",
        "",
        "| run | wall s | min-max | CPU s | min-max | GB/s of input (wall) |",
        "|---|---|---|---|---|---|",
    ]
    for key, values in runs.items():
        walls, cpus = [v[0] for v in values], [v[1] for v in values]
        lines.append(
            f"| {key} | {med(key, 0):.2f} | {min(walls):.2f}-{max(walls):.2f} | "
            f"{med(key, 1):.2f} | {min(cpus):.2f}-{max(cpus):.2f} | "
            f"{in_bytes / 1e9 / med(key, 0):.2f} |"
        )
    lines.append("")
    for method in methods:
        new, old = f"{method} new", f"{method} baseline"
        same = digests[new] == digests[old]
        lines.append(
            f"- {method}: baseline / new = {med(old, 0) / med(new, 0):.2f}x wall, "
            f"{med(old, 1) / med(new, 1):.2f}x CPU; new = "
            f"{med(new, 0) / med('read floor', 0):.1f}x the read floor (wall); outputs "
            f"{'byte-identical' if same else 'DIFFER'} "
            f"(sha256 {digests[new]})"
        )
    lines += [
        f"- load average (1, 5, 15 min) before: {load_before}; after: {load_after} "
        f"(on {os.cpu_count()} cores)",
        f"- Python {sys.version.split()[0]}",
        "- command: `python benchmarks/bench_merge_throughput.py "
        + shlex.join(sys.argv[1:] if argv is None else argv)
        + "`",
        "",
    ]
    text = "\n".join(lines)
    print(text)
    args.results.parent.mkdir(parents=True, exist_ok=True)
    args.results.write_text(text, encoding="utf-8")
    if args.workdir is None:
        shutil.rmtree(workdir, ignore_errors=True)
    return 0 if all(digests[f"{m} new"] == digests[f"{m} baseline"] for m in methods) else 1


if __name__ == "__main__":
    raise SystemExit(main())
