"""Transcription throughput of our Basic Pitch port against onnxruntime on the released model.

Run: .venv/bin/python benchmarks/bench_basic_pitch.py [--threads 2] [--repeats 3]
     [--seconds 30] [--out benchmarks/results/basic_pitch.md]

Same audio, same run: a rendered Bach chorale (the first test piece of
``weightspace.data.rendered_music("ensemble")``, cut after ``--seconds``), cut into the
official overlapping 2 s windows. Measured, with ``--threads`` threads for torch and for
onnxruntime alike:

* posteriorgrams: our port (:meth:`weightspace.models.BasicPitch.predict`, windows in batches
  of 16, and one window at a time) against onnxruntime on the wheel's ``nmp.onnx`` (one window
  per call, as the official ``run_inference`` does, and in batches of 16);
* note creation: ours (:func:`weightspace.models.notes_from_posteriorgrams`) against the
  official ``basic_pitch.note_creation.model_output_to_notes`` on the same posteriorgrams.

Throughput is seconds of audio per second of wall time, from the minimum time over
``--repeats`` runs (the usual way to discount a shared machine's load). The target of issue 14:
our port no slower than onnxruntime.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time
import types
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from weightspace import report
from weightspace.data import rendered_music
from weightspace.models import basic_pitch, notes_from_posteriorgrams
from weightspace.models._common import package_file

ROOT = Path(__file__).resolve().parents[1]


def best_time(fn: Callable[[], object], repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=30.0)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    import onnxruntime as ort

    piece = rendered_music("ensemble", split="test", n_pieces=1, max_seconds=args.seconds)[0]
    audio = piece.mixture.numpy()
    duration = len(audio) / piece.sample_rate
    model = basic_pitch()
    windows, n_frames = model.windows(audio)
    options = ort.SessionOptions()
    options.intra_op_num_threads = args.threads
    options.inter_op_num_threads = 1
    path = package_file("basic_pitch", "saved_models/icassp_2022/nmp.onnx", pip="basic-pitch")
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    names = ["StatefulPartitionedCall:1", "StatefulPartitionedCall:2", "StatefulPartitionedCall:0"]
    x = windows.numpy()[:, :, None]

    def onnx_single() -> list[list[np.ndarray]]:
        return [session.run(names, {"serving_default_input_2:0": w[None]}) for w in x]

    def onnx_batched() -> list[list[np.ndarray]]:
        return [
            session.run(names, {"serving_default_input_2:0": x[i : i + 16]})
            for i in range(0, len(x), 16)
        ]

    ours = model.predict(audio)  # also warms up
    onnx_single()
    rows: list[list[report.Cell]] = []
    timings = {
        "ours, batches of 16 windows": best_time(lambda: model.predict(audio), args.repeats),
        "ours, one window per call": best_time(
            lambda: model.predict(audio, batch_size=1), args.repeats
        ),
        "onnxruntime, one window per call (official)": best_time(onnx_single, args.repeats),
        "onnxruntime, batches of 16 windows": best_time(onnx_batched, args.repeats),
    }
    for name, seconds in timings.items():
        rows.append([name, seconds, duration / seconds])
    # Note creation on the same posteriorgrams.
    sys.modules.setdefault("resampy", types.ModuleType("resampy"))  # see tests/models
    from basic_pitch.note_creation import model_output_to_notes

    arrays = ours.numpy()
    notes_time = {
        "ours": best_time(lambda: notes_from_posteriorgrams(arrays), args.repeats),
        "official": best_time(
            lambda: model_output_to_notes(
                {k: v.copy() for k, v in arrays.items()},
                onset_thresh=0.5,
                frame_thresh=0.3,
                min_note_len=11,
            ),
            args.repeats,
        ),
    }
    for name, seconds in notes_time.items():
        rows.append([f"note creation, {name}", seconds, duration / seconds])
    ratio = (
        timings["onnxruntime, one window per call (official)"]
        / timings["ours, batches of 16 windows"]
    )
    text = (
        f"Basic Pitch transcription throughput: {duration:.1f} s of rendered audio "
        f"({piece.name}, {len(windows)} windows, {n_frames} frames), {args.threads} thread(s) "
        f"for torch {torch.__version__} and onnxruntime {ort.__version__}, minimum of "
        f"{args.repeats} runs; {platform.processor() or platform.machine()}, "
        f"{os.cpu_count()} cores, load average {os.getloadavg()[0]:.1f} at the end.\n\n"
        + report.markdown_table(
            ["pipeline", "seconds", "audio seconds per second"],
            rows,
            formats=[None, ".3f", ".1f"],
        )
        + f"\nOur port (batched) against the official onnxruntime path: {ratio:.2f}x the "
        f"throughput (target: at least 1x).\n"
    )
    print(text)
    if args.out is not None:
        args.out.write_text(text)


if __name__ == "__main__":
    main()
