"""Synthesizer throughput: weightspace.audio.Synth against torchsynth's Voice and plain numpy.

Seconds of audio rendered per second of wall time, batched, on ``--threads`` threads (two by
default: the whole machine), at 16 kHz, 1 s per sound. Rows:

* ``weightspace Synth`` (16 parameters): :meth:`Synth.render` under ``torch.no_grad``;
* ``weightspace Synth + backward``: render, a sum, and the backward pass to the parameters
  (the cost of one gradient step of sound matching, without the loss);
* ``numpy reference`` (the same 16-parameter patch written with numpy in float64: same
  oscillators, FM, STFT-domain filter and envelope; the table also gives its largest
  difference from the torch render, as a check that it is the same patch);
* ``torchsynth Voice`` (78 parameters: two VCOs, noise, LFOs, ADSRs, a mixer; torchsynth
  1.0.2), when ``--torchsynth-path`` points at a folder where it is installed. It needs
  packages that current releases no longer provide, so it is installed apart from the project's
  environment, into a folder of its own (nothing in site-packages is patched)::

      pip install --target /tmp/tspkg --no-deps torchsynth==1.0.2 "setuptools<81" \\
          pytorch-lightning==1.8.6 torchmetrics==0.11.4 lightning-utilities==0.8.0 \\
          tensorboardX==2.6 "protobuf<5"

  and run in a child process with that folder on ``PYTHONPATH`` (and
  ``PROTOCOL_BUFFERS_PYTHON_IMPLEMENTATION=python``, which that protobuf needs).

Each row is timed ``--repeats`` times after one warm-up call; the table gives the median (and
the range). The load average before and after, the versions and the command line are printed
and written with the table to ``--out`` (default ``benchmarks/results/synth.md``). Run::

    .venv/bin/python benchmarks/bench_synth.py --torchsynth-path /tmp/tspkg
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from importlib.metadata import version
from pathlib import Path
from typing import Any

import numpy as np
import torch

from weightspace.audio import SYNTH_PARAMS, Synth

SR = 16000
HERE = Path(__file__).resolve().parent


def timed(fn: Any, repeats: int) -> list[float]:
    fn()  # warm-up
    out = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t0)
    return out


# ---------------------------------------------------------------------------------------------
# The same patch in numpy
# ---------------------------------------------------------------------------------------------


def _adsr(t: np.ndarray, a: np.ndarray, d: np.ndarray, s: np.ndarray, r: np.ndarray,
          g: np.ndarray) -> np.ndarray:  # fmt: skip
    a, d, s, r, g = (v[:, None] for v in (a, d, s, r, g))

    def held(x: np.ndarray) -> np.ndarray:
        return np.where(x < a, x / a, np.maximum(1.0 - (1.0 - s) * (x - a) / d, s))

    after = held(g) * np.clip(1.0 - (t[None] - g) / r, 0.0, None)
    return np.where(t[None] < g, held(np.broadcast_to(t[None], after.shape)), after)


def render_numpy(x: np.ndarray, synth: Synth) -> np.ndarray:
    """The 16-parameter patch of :class:`Synth`, in numpy (float64)."""
    p = {}
    for i, q in enumerate(SYNTH_PARAMS):
        u = np.clip(x[:, i], 0.0, 1.0)
        p[q.name] = (
            q.low * (q.high / q.low) ** u if q.scale == "log" else q.low + u * (q.high - q.low)
        )
    n = synth.num_samples
    t = np.arange(n) / SR
    f0 = 440.0 * 2.0 ** ((p["pitch"] - 69.0) / 12.0)

    def cycles(f: np.ndarray) -> np.ndarray:
        c = f[:, None] * t[None]
        return c - np.floor(c)

    mod = np.sin(2 * np.pi * cycles(f0 * p["fm_ratio"]))
    phase = 2 * np.pi * cycles(f0) + p["fm_index"][:, None] * mod
    sin_phase = np.sin(phase)
    k = np.maximum(0.25 * (0.5 * SR) / f0, 1.0)[:, None]
    square = np.tanh(k * sin_phase) / np.tanh(k)
    saw = square * (1.0 + np.cos(phase)) * 0.5
    gen = torch.Generator().manual_seed(synth.noise_seed)
    noise = torch.randn(n, generator=gen).numpy().astype(np.float64)[None]
    src = (p["sine"][:, None] * sin_phase + p["saw"][:, None] * saw
           + p["square"][:, None] * square + p["noise"][:, None] * noise * 0.3)  # fmt: skip
    env_args = (p["attack"], p["decay"], p["sustain"], p["release"], p["gate"])
    # STFT-domain filter: periodic Hann, centred frames with reflection padding, overlap-add.
    n_fft, hop = synth.filter_fft, synth.filter_fft // 2
    win = 0.5 - 0.5 * np.cos(2 * np.pi * np.arange(n_fft) / n_fft)
    padded = np.pad(src, ((0, 0), (n_fft // 2, n_fft // 2)), mode="reflect")
    frames = 1 + (padded.shape[1] - n_fft) // hop
    idx = np.arange(n_fft)[None] + hop * np.arange(frames)[:, None]
    spec = np.fft.rfft(padded[:, idx] * win, axis=-1)  # [B, F, K]
    env_f = _adsr(np.arange(frames) * hop / SR, *env_args)  # [B, F]
    cutoff = p["cutoff"][:, None] * 2.0 ** (p["filter_env"][:, None] * env_f)
    ratio = np.fft.rfftfreq(n_fft, 1.0 / SR)[None, None] / cutoff[..., None]
    q = p["resonance"][:, None, None]
    gain = 1.0 / np.sqrt((1.0 - ratio**2) ** 2 + (ratio / q) ** 2)
    out_frames = np.fft.irfft(spec * gain, n_fft, axis=-1) * win
    total = np.zeros((len(x), padded.shape[1]))
    norm = np.zeros(padded.shape[1])
    for f in range(frames):
        total[:, f * hop : f * hop + n_fft] += out_frames[:, f]
        norm[f * hop : f * hop + n_fft] += win**2
    y = total[:, n_fft // 2 : n_fft // 2 + n] / norm[n_fft // 2 : n_fft // 2 + n]
    env = _adsr(t, *env_args)
    return y * env * 10.0 ** (p["gain"][:, None] / 20.0)


# ---------------------------------------------------------------------------------------------
# torchsynth, in a child process
# ---------------------------------------------------------------------------------------------


def torchsynth_child(batch: int, repeats: int, threads: int) -> None:
    import warnings

    warnings.filterwarnings("ignore")
    torch.set_num_threads(threads)
    from torchsynth.config import SynthConfig
    from torchsynth.synth import Voice

    voice = Voice(
        SynthConfig(batch_size=batch, sample_rate=SR, buffer_size_seconds=1.0, reproducible=False)
    )
    n_params = sum(1 for _ in voice.parameters())

    def run() -> None:
        with torch.no_grad():
            voice()

    times = timed(run, repeats)
    info = {"times": times, "params": n_params, "version": version("torchsynth")}
    print(json.dumps(info))


def run_torchsynth(path: str, batch: int, repeats: int, threads: int) -> dict[str, Any] | None:
    env = dict(os.environ)
    env["PYTHONPATH"] = path + os.pathsep + env.get("PYTHONPATH", "")
    env["PROTOCOL_BUFFERS_PYTHON_IMPLEMENTATION"] = "python"
    cmd = [sys.executable, __file__, "--child-torchsynth", "--batch", str(batch),
           "--repeats", str(repeats), "--threads", str(threads)]  # fmt: skip
    done = subprocess.run(cmd, capture_output=True, text=True, env=env, check=False)
    if done.returncode != 0:
        print(f"torchsynth could not run:\n{done.stderr[-2000:]}", file=sys.stderr)
        return None
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


# ---------------------------------------------------------------------------------------------


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--batches", type=int, nargs="+", default=[64, 256])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--torchsynth-path", default=None)
    parser.add_argument("--out", type=Path, default=HERE / "results" / "synth.md")
    parser.add_argument("--child-torchsynth", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--batch", type=int, default=64, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child_torchsynth:
        torchsynth_child(args.batch, args.repeats, args.threads)
        return
    torch.set_num_threads(args.threads)
    os.environ.setdefault("OMP_NUM_THREADS", str(args.threads))
    load_before = os.getloadavg()
    synth = Synth(sample_rate=SR, duration=1.0)
    rows = []
    checks = []
    for batch in args.batches:
        x = synth.sample(batch, seed=0)

        def ours(x: torch.Tensor = x) -> None:
            with torch.no_grad():
                synth.render(x)

        def ours_grad(x: torch.Tensor = x) -> None:
            xg = x.clone().requires_grad_(True)
            torch.autograd.backward(synth.render(xg).sum())

        xn = x.double().numpy()

        def ref(xn: np.ndarray = xn) -> None:
            render_numpy(xn, synth)

        with torch.no_grad():
            diff = float(np.abs(render_numpy(xn, synth) - synth.render(x).double().numpy()).max())
        checks.append((batch, diff))
        timings = {
            "weightspace Synth (16 params)": timed(ours, args.repeats),
            "weightspace Synth + backward": timed(ours_grad, args.repeats),
            "numpy reference, same patch (float64)": timed(ref, args.repeats),
        }
        if args.torchsynth_path:
            ts = run_torchsynth(args.torchsynth_path, batch, args.repeats, args.threads)
            if ts is not None:
                timings[f"torchsynth {ts['version']} Voice ({ts['params']} params)"] = ts["times"]
        base = None
        for name, times in timings.items():
            med = float(np.median(times))
            speed = batch * 1.0 / med
            if name.startswith("torchsynth"):
                base = speed
            rows.append([batch, name, med, min(times), max(times), speed])
        if base is not None:
            for row in rows:
                if row[0] == batch:
                    row.append(row[5] / base)
    load_after = os.getloadavg()
    versions = {n: version(n) for n in ("weightspace", "torch", "numpy")}
    header = "| batch | renderer | median s | min s | max s | audio s per s |"
    rule = "|---|---|---|---|---|---|"
    if any(len(r) == 7 for r in rows):
        header += " vs torchsynth |"
        rule += "---|"
    lines = [header, rule]
    for r in rows:
        cells = [str(r[0]), r[1], f"{r[2]:.4f}", f"{r[3]:.4f}", f"{r[4]:.4f}", f"{r[5]:.0f}"]
        if len(r) == 7:
            cells.append(f"{r[6]:.2f}x")
        lines.append("| " + " | ".join(cells) + " |")
    command = " ".join([Path(sys.executable).name, *sys.argv])
    text = "\n".join(
        [
            "# Synthesizer throughput",
            "",
            f"1 s sounds at {SR} Hz, {args.threads} threads, median of {args.repeats} runs "
            "after a warm-up.",
            "",
            *lines,
            "",
            "numpy reference against the torch render, largest absolute difference: "
            + ", ".join(f"batch {b}: {d:.1e}" for b, d in checks),
            "",
            f"- load average (1, 5, 15 min) before: {load_before[0]:.2f} {load_before[1]:.2f} "
            f"{load_before[2]:.2f}; after: {load_after[0]:.2f} {load_after[1]:.2f} "
            f"{load_after[2]:.2f} (on {os.cpu_count()} cores)",
            f"- versions: {', '.join(f'{k} {v}' for k, v in versions.items())}, "
            f"Python {platform.python_version()}",
            f"- command: `{command}`",
            "",
        ]
    )
    print(text)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text)


if __name__ == "__main__":
    main()
