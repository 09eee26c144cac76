"""Rendering one clip per (speaker, word, repeat) with espeak-ng or flite, in parallel.

Each job is a command line with a seeded jitter of speed and pitch; its output is resampled,
trimmed of silence, centred in a fixed-length window and peak-normalised.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import re
import subprocess
import tempfile
import time
from collections.abc import Sequence
from concurrent.futures import FIRST_EXCEPTION, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import numpy as np
import numpy.typing as npt
import torch
from torch import Tensor

from weightspace._errors import WeightspaceError, WeightspaceValueError
from weightspace._optional import require_executable, require_module
from weightspace.data._clips import workers
from weightspace.data._speakers import _FLITE_FIXED_F0, Speaker

__all__ = ["_synthesise"]

logger = logging.getLogger(__name__)

_APT = "espeak-ng flite"
_ESPEAK_WPM = 175  # espeak-ng's default speaking rate, words per minute
_ESPEAK_PITCH = 50  # espeak-ng's default pitch on its 0-99 scale
_SPEED_JITTER = 0.08  # each clip's speed factor is multiplied by a factor in [1/1.08, 1.08]
_PITCH_JITTER = 0.06
_PEAK = 0.9  # peak amplitude after normalisation
_TRIM_DB = 40.0  # frames quieter than the loudest frame by more than this are silence
_TIMEOUT_S = 60.0
_FLITE_RATE_STEP = 80  # Hz; the resampling pitch shift is quantised so that ratios stay small


@dataclass(frozen=True)
class _Job:
    index: int
    speaker: Speaker
    word: str
    speed: float  # the factor actually used, after quantisation to the engine's resolution
    pitch: float
    argv: tuple[str, ...]  # without the input and output file arguments
    rate_factor: float  # the source rate is multiplied by this before resampling (rms pitch)


def _clip_rng(seed: int, speaker: Speaker, word: str, clip: int) -> np.random.Generator:
    key = json.dumps([speaker._spec(), word, clip], sort_keys=True).encode()
    digest = int.from_bytes(hashlib.sha256(key).digest()[:8], "little")
    return np.random.default_rng([seed, digest])


def _make_job(
    index: int,
    speaker: Speaker,
    word: str,
    clip: int,
    seed: int,
    programs: dict[str, str],
) -> _Job:
    rng = _clip_rng(seed, speaker, word, clip)
    speed = speaker.speed * math.exp(rng.uniform(-1.0, 1.0) * math.log1p(_SPEED_JITTER))
    pitch = speaker.pitch * math.exp(rng.uniform(-1.0, 1.0) * math.log1p(_PITCH_JITTER))
    if speaker.engine == "espeak-ng":
        wpm = min(max(round(_ESPEAK_WPM * speed), 80), 450)
        p = min(max(round(_ESPEAK_PITCH * pitch), 0), 99)
        voice = speaker.voice + (f"+{speaker.variant}" if speaker.variant else "")
        argv: tuple[str, ...] = (programs["espeak-ng"], "-v", voice, "-s", str(wpm), "-p", str(p))
        return _Job(index, speaker, word, wpm / _ESPEAK_WPM, p / _ESPEAK_PITCH, argv, 1.0)
    speed = round(speed, 3)
    argv = (programs["flite"], "-voice", speaker.voice)
    rate_factor = 1.0
    if speaker.voice in _FLITE_FIXED_F0:
        # Shift pitch by resampling: play the audio `pitch` times faster, having stretched it
        # by `pitch` first, so that the duration is unchanged.
        steps = round(16000 * pitch / _FLITE_RATE_STEP)
        pitch = steps * _FLITE_RATE_STEP / 16000
        rate_factor = pitch
        argv += ("--setf", f"duration_stretch={pitch / speed:.6g}")
    else:
        pitch = round(pitch, 3)
        argv += ("--setf", f"duration_stretch={1.0 / speed:.6g}", "--setf", f"f0_shift={pitch}")
    return _Job(index, speaker, word, speed, pitch, argv, rate_factor)


def _command(job: _Job, text: Path, out: Path) -> list[str]:
    if job.speaker.engine == "espeak-ng":
        return [*job.argv, "-w", str(out), "-f", str(text)]
    return [*job.argv, "-f", str(text), "-o", str(out)]


def _trim(x: npt.NDArray[np.float64], sample_rate: int) -> npt.NDArray[np.float64]:
    """Cut leading and trailing frames more than ``_TRIM_DB`` below the loudest frame."""
    frame = max(1, sample_rate // 100)  # 10 ms
    n_frames = len(x) // frame
    if n_frames == 0:
        return x
    rms = np.sqrt(np.mean(x[: n_frames * frame].reshape(n_frames, frame) ** 2, axis=1))
    loud = np.flatnonzero(rms > rms.max() * 10.0 ** (-_TRIM_DB / 20.0))
    if loud.size == 0:
        return x[:0]
    return x[loud[0] * frame : (loud[-1] + 1) * frame]


def _fit(x: npt.NDArray[np.float64], length: int) -> npt.NDArray[np.float64]:
    """Centre ``x`` in a window of ``length`` samples, padding with zeros or cropping."""
    out = np.zeros(length, dtype=np.float64)
    if len(x) <= length:
        start = (length - len(x)) // 2
        out[start : start + len(x)] = x
    else:
        start = (len(x) - length) // 2
        out[:] = x[start : start + length]
    return out


def _render(job: _Job, workdir: Path, sample_rate: int, length: int) -> npt.NDArray[np.float32]:
    from scipy.signal import resample_poly

    sf = require_module("soundfile", pip="soundfile", extra="audio")
    text = workdir / f"{job.index}.txt"
    out = workdir / f"{job.index}.wav"
    text.write_text(job.word + "\n", encoding="utf-8")
    cmd = _command(job, text, out)
    try:
        proc = subprocess.run(cmd, capture_output=True, timeout=_TIMEOUT_S, check=False)
    except subprocess.TimeoutExpired:
        raise WeightspaceError(
            f"{job.speaker.engine} took more than {_TIMEOUT_S:g} s for the word {job.word!r} "
            f"(speaker {job.speaker.name!r}); command: {cmd}"
        ) from None
    if proc.returncode != 0 or not out.exists() or out.stat().st_size <= 44:
        stderr = proc.stderr.decode(errors="replace").strip()
        raise WeightspaceError(
            f"{job.speaker.engine} failed for the word {job.word!r} with speaker "
            f"{job.speaker.name!r} (exit status {proc.returncode}: {stderr or 'no output'}); "
            "check the voice with `espeak-ng --voices` or `flite -lv`"
        )
    data, source_rate = sf.read(str(out), dtype="float64", always_2d=True)
    text.unlink()
    out.unlink()
    x = np.asarray(data, dtype=np.float64).mean(axis=1)
    effective = round(source_rate * job.rate_factor)
    ratio = Fraction(sample_rate, effective)
    if ratio != 1:
        x = resample_poly(x, ratio.numerator, ratio.denominator)
    x = _fit(_trim(x, sample_rate), length)
    peak = float(np.abs(x).max())
    if peak == 0.0:
        raise WeightspaceValueError(
            f"{job.speaker.engine} produced silence for the word {job.word!r} with speaker "
            f"{job.speaker.name!r}; pass words that the voice can pronounce"
        )
    return (x * (_PEAK / peak)).astype(np.float32)


def _engine_version(program: str) -> str:
    proc = subprocess.run(
        [program, "--version"], capture_output=True, timeout=_TIMEOUT_S, check=False
    )
    lines = proc.stdout.decode(errors="replace").strip().splitlines()
    # espeak-ng: "eSpeak NG text-to-speech: 1.51  Data at: ..."; flite: "  version: flite-2.2 ..."
    for line in lines:
        line = line.strip()
        if "version:" in line:
            return line.split("version:", 1)[1].strip()
        if "text-to-speech:" in line:
            return line.split("text-to-speech:", 1)[1].split("Data at")[0].strip()
    return lines[0].strip() if lines else "unknown"


def _check_espeak_variants(program: str, speakers: Sequence[Speaker]) -> None:
    """Fail on an unknown espeak-ng variant, which espeak-ng would silently ignore."""
    proc = subprocess.run(
        [program, "--version"], capture_output=True, timeout=_TIMEOUT_S, check=False
    )
    found = re.search(r"Data at:\s*(.+)", proc.stdout.decode(errors="replace"))
    if found is None:  # pragma: no cover - an espeak-ng that does not say where its data is
        return
    variants = Path(found.group(1).strip()) / "voices" / "!v"
    if not variants.is_dir():  # pragma: no cover
        return
    for speaker in speakers:
        if speaker.variant is not None and not (variants / speaker.variant).is_file():
            known = sorted(p.name for p in variants.iterdir())
            raise WeightspaceValueError(
                f"`variant` {speaker.variant!r} of speaker {speaker.name!r} is not an espeak-ng "
                f"variant (espeak-ng would ignore it); choose from {known}"
            )


def _synthesise(
    words: Sequence[str],
    speakers: Sequence[Speaker],
    clips_per_speaker: int,
    sample_rate: int,
    length: int,
    seed: int,
    progress: bool,
) -> tuple[dict[str, Tensor], dict[str, str]]:
    from tqdm.auto import tqdm

    engines: list[str] = sorted({s.engine for s in speakers})
    programs = {e: require_executable(e, apt=_APT) for e in engines}
    require_module("soundfile", pip="soundfile", extra="audio")
    versions = {e: _engine_version(programs[e]) for e in engines}
    if "espeak-ng" in programs:
        _check_espeak_variants(programs["espeak-ng"], speakers)
    jobs: list[_Job] = []
    labels: list[int] = []
    speaker_ids: list[int] = []
    clips: list[int] = []
    for s, speaker in enumerate(speakers):
        for w, word in enumerate(words):
            for c in range(clips_per_speaker):
                jobs.append(_make_job(len(jobs), speaker, word, c, seed, programs))
                labels.append(w)
                speaker_ids.append(s)
                clips.append(c)
    waves = np.zeros((len(jobs), length), dtype=np.float32)
    start = time.perf_counter()
    with (
        tempfile.TemporaryDirectory(prefix="weightspace-speech-") as tmp,
        ThreadPoolExecutor(max_workers=workers()) as pool,
        tqdm(
            total=len(jobs), desc="synthesising spoken words", unit="clip", disable=not progress
        ) as bar,
    ):
        futures: dict[Future[npt.NDArray[np.float32]], int] = {
            pool.submit(_render, job, Path(tmp), sample_rate, length): job.index for job in jobs
        }
        pending = set(futures)
        while pending:
            done, pending = wait(pending, return_when=FIRST_EXCEPTION)
            for future in done:
                error = future.exception()
                if error is not None:
                    for other in pending:
                        other.cancel()
                    raise error
                waves[futures[future]] = future.result()
            bar.update(len(done))
    logger.info(
        "synthesised %d clips (%d speakers x %d words x %d) in %.1f s",
        len(jobs),
        len(speakers),
        len(words),
        clips_per_speaker,
        time.perf_counter() - start,
    )
    tensors = {
        "waveforms": torch.from_numpy(waves).to(torch.float16),
        "labels": torch.tensor(labels, dtype=torch.int64),
        "speaker": torch.tensor(speaker_ids, dtype=torch.int64),
        "clip": torch.tensor(clips, dtype=torch.int64),
        "speed": torch.tensor([j.speed for j in jobs], dtype=torch.float32),
        "pitch": torch.tensor([j.pitch for j in jobs], dtype=torch.float32),
    }
    return tensors, versions
