"""Time `import weightspace` beyond `import torch`, in fresh interpreters.

Run: .venv/bin/python benchmarks/bench_import.py [--repeats 5]

Prints the median wall time of `import torch` alone and of `import torch, weightspace`, and the
difference, which is what weightspace itself costs. Target: well under two seconds.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time


def _time(code: str) -> float:
    start = time.perf_counter()
    subprocess.run([sys.executable, "-c", code], check=True)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    _time("import torch")  # warm the file-system cache
    base, full = [], []
    for _ in range(args.repeats):
        base.append(_time("import torch"))
        full.append(_time("import torch, weightspace"))
    b, f = statistics.median(base), statistics.median(full)
    print(f"import torch              : {b:.3f} s (median of {args.repeats})")
    print(f"import torch, weightspace : {f:.3f} s")
    print(f"weightspace itself        : {f - b:+.3f} s  (ratio {f / b:.3f}x torch alone)")


if __name__ == "__main__":
    main()
