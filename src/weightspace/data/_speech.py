"""Synthetic spoken words from many speakers, made offline with espeak-ng and flite.

Each clip is one word spoken by one synthetic *speaker*: a text-to-speech engine and voice with
a base pitch and speed. Every (speaker, word) pair is rendered ``clips_per_speaker`` times, each
time with a small seeded jitter of pitch and speed so that repeats differ. The audio is
resampled, trimmed of silence, centred in a fixed-length window and peak-normalised, then cached
as a safetensors file, so later calls with the same arguments load it in a fraction of a second.

Example:
    >>> from weightspace.data import spoken_words
    >>> ds = spoken_words(["yes", "no"], speakers=["en-us+m1", "flite-slt"], progress=False)
    >>> ds.waveforms.shape  # 2 speakers x 2 words x 1 clip, 1 s at 16 kHz
    torch.Size([4, 16000])
    >>> wave, label = ds[0]
    >>> wave.shape, ds.words[int(label)]
    (torch.Size([1, 16000]), 'yes')

Determinism:
    espeak-ng 1.51 and flite 2.2 are deterministic: the same command line gives the same bytes
    (checked for every voice in :data:`SPEAKERS`). The jitter of a clip is drawn from a generator
    seeded by ``seed`` and the (speaker, word, repeat) triple, so a clip does not depend on which
    other words or speakers were requested, and the cached file is identical bit for bit across
    builds with the same arguments on the same machine. Other versions of the engines may give
    other waveforms; the engine versions are recorded in the file's metadata but are not part
    of the cache key.
"""

from __future__ import annotations

import dataclasses
import difflib
import hashlib
import json
import logging
import math
import os
import re
import subprocess
import tempfile
import time
from collections.abc import Callable, Sequence
from concurrent.futures import FIRST_EXCEPTION, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any, Literal

import numpy as np
import numpy.typing as npt
import torch
from torch import Tensor
from torch.utils.data import Dataset

from weightspace._cache import cache_dir, cached_file
from weightspace._errors import CacheError, WeightspaceError, WeightspaceValueError
from weightspace._optional import require_executable, require_module

__all__ = ["COMMAND_WORDS", "DIGIT_WORDS", "SPEAKERS", "Speaker", "SpokenWords", "spoken_words"]

logger = logging.getLogger(__name__)

Engine = Literal["espeak-ng", "flite"]
Gender = Literal["male", "female", "unknown"]

DIGIT_WORDS: tuple[str, ...] = (
    "zero",
    "one",
    "two",
    "three",
    "four",
    "five",
    "six",
    "seven",
    "eight",
    "nine",
)
"""The ten digit words, ``"zero"`` to ``"nine"``; label ``i`` is the digit ``i``."""

COMMAND_WORDS: tuple[str, ...] = (
    "yes",
    "no",
    "up",
    "down",
    "left",
    "right",
    "on",
    "off",
    "stop",
    "go",
)
"""Ten command words, as in the Speech Commands data set."""

_FORMAT_VERSION = 1
_APT = "espeak-ng flite"
_ESPEAK_WPM = 175  # espeak-ng's default speaking rate, words per minute
_ESPEAK_PITCH = 50  # espeak-ng's default pitch on its 0-99 scale
_SPEED_JITTER = 0.08  # each clip's speed factor is multiplied by a factor in [1/1.08, 1.08]
_PITCH_JITTER = 0.06
_PEAK = 0.9  # peak amplitude after normalisation
_TRIM_DB = 40.0  # frames quieter than the loudest frame by more than this are silence
_MAX_WORD_LEN = 64
_TIMEOUT_S = 60.0

# flite's built-in voices and the recorded speakers behind them (CMU ARCTIC and earlier).
_FLITE_VOICES: dict[str, Gender] = {
    "kal": "male",  # Kevin Lenzo, US English, diphone, 8 kHz
    "kal16": "male",  # the same at 16 kHz
    "awb": "male",  # Alan W Black, Scottish English
    "rms": "male",  # Richard M. Stallman, US English
    "slt": "female",  # US English female speaker of CMU ARCTIC
}
# flite voices that ignore the `f0_shift` feature; their pitch is shifted by resampling.
_FLITE_FIXED_F0 = frozenset({"rms"})
_FLITE_RATE_STEP = 80  # Hz; the resampling pitch shift is quantised so that ratios stay small

_ESPEAK_VOICE_RE = re.compile(r"[a-z]{2,3}(?:-[A-Za-z0-9]{1,8})*")
_ESPEAK_VARIANT_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_]{0,31}")
_WORD_RE = re.compile(r"[^\W_]+(?:[' -][^\W_]+)*")


def _gender_of(engine: str, voice: str, variant: str | None) -> Gender:
    if engine == "flite":
        return _FLITE_VOICES.get(voice, "unknown")
    if variant is not None and re.fullmatch(r"m\d+", variant):
        return "male"
    if variant is not None and re.fullmatch(r"f\d+", variant):
        return "female"
    return "unknown"


@dataclass(frozen=True)
class Speaker:
    """One synthetic speaker: a text-to-speech engine and voice with a base pitch and speed.

    Two speakers differ when any of ``engine``, ``voice``, ``variant``, ``pitch`` or ``speed``
    differ. Pitch and speed are factors relative to the engine's defaults: for espeak-ng the
    command line gets ``-p round(50 * pitch)`` (its 0-99 scale) and ``-s round(175 * speed)``
    (words per minute); for flite ``--setf f0_shift=pitch`` and
    ``--setf duration_stretch=1/speed``. The flite voice ``rms`` ignores ``f0_shift``, so its
    pitch is changed by resampling instead (which also shifts its formants, like a smaller or
    larger vocal tract).

    Example:
        >>> Speaker("espeak-ng", "en-gb-x-rp", "f2", pitch=1.1).name
        'en-gb-x-rp+f2'
        >>> Speaker("flite", "awb").gender
        'male'

    Attributes:
        engine: ``"espeak-ng"`` or ``"flite"``.
        voice: For espeak-ng a language voice such as ``"en-us"``, ``"en-gb-x-rp"``,
            ``"en-029"`` or ``"de"`` (``espeak-ng --voices``; other languages' voices read the
            English words with their own rules, a strong accent). For flite one of ``"kal"``,
            ``"kal16"``, ``"awb"``, ``"rms"``, ``"slt"``.
        variant: espeak-ng voice variant, such as ``"m1"``..``"m7"``, ``"f1"``..``"f5"``
            (``espeak-ng --voices=variant``), or ``None``. Must be ``None`` for flite.
        pitch: Base pitch factor, in ``[0.5, 2]``.
        speed: Base speaking-rate factor, in ``[0.5, 2]``.
        name: Unique name; when empty it is derived as ``"<voice>+<variant>"`` for espeak-ng
            and ``"flite-<voice>"`` for flite.
    """

    engine: Engine
    voice: str
    variant: str | None = None
    pitch: float = 1.0
    speed: float = 1.0
    name: str = ""

    def __post_init__(self) -> None:
        if self.engine == "espeak-ng":
            if not isinstance(self.voice, str) or not _ESPEAK_VOICE_RE.fullmatch(self.voice):
                raise WeightspaceValueError(
                    f"`voice` must be an espeak-ng voice name such as 'en-us' or 'en-gb-x-rp', "
                    f"got {self.voice!r}; list them with `espeak-ng --voices`"
                )
            if self.variant is not None and (
                not isinstance(self.variant, str) or not _ESPEAK_VARIANT_RE.fullmatch(self.variant)
            ):
                raise WeightspaceValueError(
                    f"`variant` must be an espeak-ng variant name such as 'm3' or 'f2', or None, "
                    f"got {self.variant!r}; list them with `espeak-ng --voices=variant`"
                )
        elif self.engine == "flite":
            if self.voice not in _FLITE_VOICES:
                raise WeightspaceValueError(
                    f"`voice` must be one of flite's voices {sorted(_FLITE_VOICES)}, "
                    f"got {self.voice!r}"
                )
            if self.variant is not None:
                raise WeightspaceValueError(
                    f"`variant` must be None for flite voices, got {self.variant!r}; "
                    "use `pitch` and `speed` to make variants of a flite voice"
                )
        else:
            raise WeightspaceValueError(
                f"`engine` must be 'espeak-ng' or 'flite', got {self.engine!r}"
            )
        for arg in ("pitch", "speed"):
            value = getattr(self, arg)
            if isinstance(value, bool) or not isinstance(value, int | float):
                raise WeightspaceValueError(f"`{arg}` must be a number, got {value!r}")
            if not 0.5 <= value <= 2.0:
                raise WeightspaceValueError(
                    f"`{arg}` must be a factor in [0.5, 2] (1 is the engine's default), "
                    f"got {value!r}"
                )
            object.__setattr__(self, arg, float(value))
        if not self.name:
            derived = (
                f"flite-{self.voice}"
                if self.engine == "flite"
                else self.voice + (f"+{self.variant}" if self.variant else "")
            )
            object.__setattr__(self, "name", derived)
        if not isinstance(self.name, str) or not self.name.isprintable():
            raise WeightspaceValueError(f"`name` must be a printable string, got {self.name!r}")

    @property
    def gender(self) -> Gender:
        """Coarse gender label: ``"male"``, ``"female"`` or ``"unknown"``.

        espeak-ng variants ``m*`` are male and ``f*`` female; flite voices follow their
        recorded speakers (``slt`` female, the others male); anything else is unknown.
        """
        return _gender_of(self.engine, self.voice, self.variant)

    def _spec(self) -> dict[str, Any]:
        """The fields that determine the audio (everything but the name)."""
        return {
            "engine": self.engine,
            "voice": self.voice,
            "variant": self.variant,
            "pitch": self.pitch,
            "speed": self.speed,
        }

    def _record(self) -> dict[str, Any]:
        return {"name": self.name, **self._spec(), "gender": self.gender}


def _espeak(voice: str, variant: str, pitch: float, speed: float) -> Speaker:
    return Speaker("espeak-ng", voice, variant, pitch=pitch, speed=speed)


SPEAKERS: tuple[Speaker, ...] = (
    # US English (espeak-ng "en-us"), 5 speakers
    _espeak("en-us", "m1", 1.0, 1.0),
    _espeak("en-us", "m3", 0.9, 0.95),
    _espeak("en-us", "f1", 1.0, 1.0),
    _espeak("en-us", "f3", 1.1, 1.05),
    _espeak("en-us", "f5", 0.95, 0.9),
    # New York City
    _espeak("en-us-nyc", "m2", 1.0, 1.1),
    _espeak("en-us-nyc", "m7", 0.9, 1.0),
    _espeak("en-us-nyc", "f2", 1.05, 1.0),
    # British English (espeak-ng "en-gb")
    _espeak("en-gb", "m4", 1.0, 1.0),
    _espeak("en-gb", "m5", 1.1, 0.95),
    _espeak("en-gb", "f4", 0.95, 1.05),
    # Received Pronunciation
    _espeak("en-gb-x-rp", "m2", 0.95, 0.9),
    _espeak("en-gb-x-rp", "m6", 1.0, 1.05),
    _espeak("en-gb-x-rp", "f1", 1.1, 1.0),
    _espeak("en-gb-x-rp", "f3", 1.0, 0.95),
    # Scottish English
    _espeak("en-gb-scotland", "m1", 0.9, 1.0),
    _espeak("en-gb-scotland", "m3", 1.05, 1.1),
    _espeak("en-gb-scotland", "f2", 1.0, 0.95),
    # Lancaster
    _espeak("en-gb-x-gbclan", "m4", 1.0, 0.95),
    _espeak("en-gb-x-gbclan", "m6", 0.95, 1.05),
    _espeak("en-gb-x-gbclan", "f3", 1.05, 1.0),
    # West Midlands
    _espeak("en-gb-x-gbcwmd", "m5", 0.9, 1.05),
    _espeak("en-gb-x-gbcwmd", "m7", 1.05, 0.95),
    _espeak("en-gb-x-gbcwmd", "f5", 1.0, 1.0),
    # Caribbean English
    _espeak("en-029", "m2", 1.0, 0.9),
    _espeak("en-029", "m3", 1.1, 1.0),
    _espeak("en-029", "f4", 0.95, 1.1),
    _espeak("en-029", "f1", 1.05, 0.95),
    # flite's four recorded voices
    Speaker("flite", "kal16"),
    Speaker("flite", "awb"),
    Speaker("flite", "rms"),
    Speaker("flite", "slt"),
)
"""The default speaker grid: 32 speakers, 19 male and 13 female.

28 espeak-ng speakers cover eight English accents (``en-us``, ``en-us-nyc``, ``en-gb``,
``en-gb-x-rp``, ``en-gb-scotland``, ``en-gb-x-gbclan``, ``en-gb-x-gbcwmd``, ``en-029``), each
with male (``+m1``..``+m7``) and female (``+f1``..``+f5``) variants and base pitch and speed
factors between 0.9 and 1.1; their names are ``"<voice>+<variant>"``, e.g. ``"en-gb-x-rp+f1"``.
The other four are flite's voices ``"flite-kal16"``, ``"flite-awb"``, ``"flite-rms"`` (male)
and ``"flite-slt"`` (female), at their own pitch and speed. Voices of other languages (``"de"``,
``"fr"``, ...) are left out because they read English words by their own spelling rules; pass
them as :class:`Speaker` objects to get accented speakers.
"""

_SPEAKERS_BY_NAME = {s.name: s for s in SPEAKERS}


# ---------------------------------------------------------------------------------------------
# The data set
# ---------------------------------------------------------------------------------------------


class ClipSet:
    """What the clip data sets share: ``len``, indexing with the transform, ``duration``.

    Subclasses are dataclasses with the fields ``waveforms`` ``[N, T]``, ``labels`` ``[N]``,
    ``sample_rate`` and ``transform``.
    """

    waveforms: Tensor
    labels: Tensor
    sample_rate: int
    transform: Callable[[Tensor], Tensor] | None

    def __len__(self) -> int:
        return int(self.waveforms.shape[0])

    def __getitem__(self, index: int) -> tuple[Tensor, Tensor]:
        wave = self.waveforms[index].unsqueeze(0)
        if self.transform is not None:
            wave = self.transform(wave)
        return wave, self.labels[index]

    @property
    def duration(self) -> float:
        """Length of every clip in seconds."""
        return self.waveforms.shape[1] / self.sample_rate


@dataclass(frozen=True, eq=False, repr=False)
class SpokenWords(ClipSet, Dataset[tuple[Tensor, Tensor]]):
    """Clips of spoken words with per-clip speaker metadata, as built by :func:`spoken_words`.

    Item ``i`` is ``(waveform, label)``: the waveform as a ``[1, T]`` float32 tensor (or
    ``transform`` of it) and the label as an int64 scalar indexing :attr:`words`. The object is
    immutable: :meth:`subset` returns a new data set holding copies of the selected rows, and
    :meth:`with_transform` a new one sharing the tensors.

    Labels index the full :attr:`words` tuple and speaker ids index the full
    :attr:`speaker_table` of the build, also in subsets, so that a split by speaker or word
    keeps the ids comparable.

    Shapes:
        - waveforms: ``[N, T]`` float32, ``T = round(duration * sample_rate)``, peak 0.9.
        - labels, speaker, clip: ``[N]`` int64.
        - speed, pitch: ``[N]`` float32.

    Attributes:
        waveforms: All clips.
        labels: Index of each clip's word in :attr:`words`.
        words: The vocabulary, in label order.
        sample_rate: Samples per second.
        speaker: Index of each clip's speaker in :attr:`speaker_table`.
        clip: Repeat number of each clip within its (speaker, word) pair.
        speed: Speaking-rate factor each clip was rendered with (base speed times jitter).
        pitch: Pitch factor each clip was rendered with (base pitch times jitter).
        speaker_table: The speakers of the build, in id order.
        transform: Applied to the ``[1, T]`` waveform in :meth:`__getitem__`, if not ``None``.
    """

    waveforms: Tensor
    labels: Tensor
    words: tuple[str, ...]
    sample_rate: int
    speaker: Tensor
    clip: Tensor
    speed: Tensor
    pitch: Tensor
    speaker_table: tuple[Speaker, ...]
    transform: Callable[[Tensor], Tensor] | None = None

    def __post_init__(self) -> None:
        n = self.waveforms.shape[0]
        if self.waveforms.ndim != 2:
            raise WeightspaceValueError(
                f"`waveforms` must have shape [N, T], got {tuple(self.waveforms.shape)}"
            )
        for arg in ("labels", "speaker", "clip", "speed", "pitch"):
            shape = tuple(getattr(self, arg).shape)
            if shape != (n,):
                raise WeightspaceValueError(
                    f"`{arg}` must have shape [{n}] to match `waveforms`, got {shape}"
                )

    def __repr__(self) -> str:
        return (
            f"SpokenWords(clips={len(self)}, words={len(self.words)}, "
            f"speakers={len(self.speakers())}, sample_rate={self.sample_rate}, "
            f"duration={self.duration:g})"
        )

    @property
    def speaker_name(self) -> tuple[str, ...]:
        """Name of each clip's speaker."""
        return tuple(self.speaker_table[i].name for i in self.speaker.tolist())

    @property
    def engine(self) -> tuple[str, ...]:
        """Engine of each clip's speaker (``"espeak-ng"`` or ``"flite"``)."""
        return tuple(self.speaker_table[i].engine for i in self.speaker.tolist())

    @property
    def voice(self) -> tuple[str, ...]:
        """Voice of each clip's speaker."""
        return tuple(self.speaker_table[i].voice for i in self.speaker.tolist())

    @property
    def gender(self) -> tuple[str, ...]:
        """Coarse gender label of each clip's speaker (see :attr:`Speaker.gender`)."""
        return tuple(self.speaker_table[i].gender for i in self.speaker.tolist())

    def speakers(self) -> tuple[Speaker, ...]:
        """Return the speakers that have clips in this data set, in id order.

        Returns:
            A subsequence of :attr:`speaker_table`.
        """
        present = set(self.speaker.tolist())
        return tuple(s for i, s in enumerate(self.speaker_table) if i in present)

    def with_transform(self, transform: Callable[[Tensor], Tensor] | None) -> SpokenWords:
        """Return a copy that applies ``transform`` to each ``[1, T]`` waveform it yields.

        Args:
            transform: A function of a ``[1, T]`` float32 tensor, or ``None`` for none.

        Returns:
            A new data set sharing this one's tensors.
        """
        return dataclasses.replace(self, transform=transform)

    def subset(
        self,
        *,
        speakers: Sequence[str | int | Speaker] | str | None = None,
        words: Sequence[str] | str | None = None,
        indices: Sequence[int] | Tensor | None = None,
    ) -> SpokenWords:
        """Return the clips that match every given filter, in their original order.

        Example:
            >>> ds = spoken_words(["yes", "no", "stop"], progress=False)
            >>> names = [s.name for s in ds.speakers()]
            >>> train = ds.subset(speakers=names[:-4])
            >>> test = ds.subset(speakers=names[-4:], words=["yes", "no"])
            >>> len(train), len(test)
            (84, 8)

        Args:
            speakers: Speakers to keep, by name, id (index into :attr:`speaker_table`) or
                :class:`Speaker`; a single name is accepted too.
            words: Words to keep; a single word is accepted too. Labels are not renumbered.
            indices: Clip indices to keep (a sequence of ints, an int tensor or a bool mask
                of length ``len(self)``).

        Returns:
            A new data set; this one is not changed.

        Raises:
            WeightspaceValueError: if a speaker, word or index is not in this data set.
        """
        n = len(self)
        mask = torch.ones(n, dtype=torch.bool)
        if speakers is not None:
            chosen = [speakers] if isinstance(speakers, str) else list(speakers)
            ids = [self._speaker_id(s) for s in chosen]
            mask &= torch.isin(self.speaker, torch.tensor(ids, dtype=torch.int64))
        if words is not None:
            wanted = [words] if isinstance(words, str) else list(words)
            unknown = [w for w in wanted if w not in self.words]
            if unknown:
                raise WeightspaceValueError(
                    f"`words` has words that are not in this data set: {unknown}; "
                    f"choose from {list(self.words)}"
                )
            labels = torch.tensor([self.words.index(w) for w in wanted], dtype=torch.int64)
            mask &= torch.isin(self.labels, labels)
        if indices is not None:
            mask &= self._index_mask(indices)
        keep = mask.nonzero().squeeze(1)
        return dataclasses.replace(
            self,
            waveforms=self.waveforms[keep],
            labels=self.labels[keep],
            speaker=self.speaker[keep],
            clip=self.clip[keep],
            speed=self.speed[keep],
            pitch=self.pitch[keep],
        )

    def _speaker_id(self, speaker: str | int | Speaker) -> int:
        table = self.speaker_table
        if isinstance(speaker, Speaker):
            if speaker in table:
                return table.index(speaker)
            speaker = speaker.name
        if isinstance(speaker, int) and not isinstance(speaker, bool):
            if 0 <= speaker < len(table):
                return speaker
            raise WeightspaceValueError(
                f"`speakers` has the id {speaker}, but ids run from 0 to {len(table) - 1}"
            )
        for i, s in enumerate(table):
            if s.name == speaker:
                return i
        close = difflib.get_close_matches(str(speaker), [s.name for s in table], n=3)
        hint = f"; did you mean {close}?" if close else ""
        raise WeightspaceValueError(
            f"`speakers` has {speaker!r}, which is not a speaker of this data set "
            f"(see `.speakers()`){hint}"
        )

    def _index_mask(self, indices: Sequence[int] | Tensor) -> Tensor:
        return index_mask(indices, len(self))


def index_mask(indices: Sequence[int] | Tensor, n: int) -> Tensor:
    """A bool mask of length ``n`` from indices or a mask (shared with the recordings)."""
    idx = torch.as_tensor(indices)
    if idx.dtype == torch.bool:
        if idx.shape != (n,):
            raise WeightspaceValueError(
                f"`indices` as a bool mask must have shape [{n}], got {tuple(idx.shape)}"
            )
        return idx
    idx = idx.reshape(-1).to(torch.int64)
    bad = idx[(idx < -n) | (idx >= n)]
    if bad.numel():
        raise WeightspaceValueError(f"`indices` must lie in [-{n}, {n}), got {bad[:5].tolist()}")
    mask = torch.zeros(n, dtype=torch.bool)
    mask[idx] = True
    return mask


# ---------------------------------------------------------------------------------------------
# Synthesis
# ---------------------------------------------------------------------------------------------


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


def workers(limit: int = 32) -> int:
    """Worker threads for external encoders and decoders: the usable CPUs, at most ``limit``."""
    try:
        cpus = len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not on Linux
        cpus = os.cpu_count() or 1
    return max(1, min(cpus, limit))


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


# ---------------------------------------------------------------------------------------------
# The public builder
# ---------------------------------------------------------------------------------------------


def _check_words(words: Sequence[str] | None) -> tuple[str, ...]:
    if words is None:
        return DIGIT_WORDS + COMMAND_WORDS
    if isinstance(words, str):
        raise WeightspaceValueError(
            f"`words` must be a sequence of words, got the string {words!r}; pass [{words!r}]"
        )
    out = tuple(words)
    if not out:
        raise WeightspaceValueError("`words` must not be empty; pass at least one word")
    for word in out:
        if not isinstance(word, str) or not word.strip():
            raise WeightspaceValueError(
                f"`words` must hold non-empty strings, got {word!r}; remove it"
            )
        if len(word) > _MAX_WORD_LEN or not _WORD_RE.fullmatch(word):
            raise WeightspaceValueError(
                f"`words` has {word!r}, which is not a plain word; use letters and digits, "
                f"with single spaces, hyphens or apostrophes between them (at most "
                f"{_MAX_WORD_LEN} characters, no leading '-')"
            )
    duplicates = sorted({w for w in out if out.count(w) > 1})
    if duplicates:
        raise WeightspaceValueError(f"`words` has duplicates {duplicates}; pass each word once")
    return out


def _check_speakers(speakers: Sequence[str | Speaker] | None) -> tuple[Speaker, ...]:
    if speakers is None:
        return SPEAKERS
    if isinstance(speakers, str | Speaker):
        speakers = [speakers]
    out: list[Speaker] = []
    for s in speakers:
        if isinstance(s, Speaker):
            out.append(s)
        elif isinstance(s, str) and s in _SPEAKERS_BY_NAME:
            out.append(_SPEAKERS_BY_NAME[s])
        else:
            close = difflib.get_close_matches(str(s), list(_SPEAKERS_BY_NAME), n=3)
            hint = f"did you mean {close}? " if close else ""
            raise WeightspaceValueError(
                f"`speakers` has {s!r}, which is not a speaker name of `SPEAKERS`; {hint}"
                "pass names such as 'en-us+f1' or 'flite-slt', or `Speaker` objects"
            )
    if not out:
        raise WeightspaceValueError("`speakers` must not be empty; pass at least one speaker")
    names = [s.name for s in out]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise WeightspaceValueError(
            f"`speakers` has duplicate names {duplicates}; give each speaker a unique `name`"
        )
    specs = [json.dumps(s._spec(), sort_keys=True) for s in out]
    same = sorted({out[i].name for i, k in enumerate(specs) if specs.count(k) > 1})
    if same:
        raise WeightspaceValueError(
            f"`speakers` {same} have the same engine, voice, variant, pitch and speed, so they "
            "would speak identically; change one of them"
        )
    return tuple(out)


def check_int(name: str, value: object, low: int, high: int | None = None) -> int:
    if isinstance(value, bool) or not isinstance(value, int | np.integer):
        raise WeightspaceValueError(f"`{name}` must be an integer, got {value!r}")
    if value < low or (high is not None and value > high):
        bound = f"in [{low}, {high}]" if high is not None else f">= {low}"
        raise WeightspaceValueError(f"`{name}` must be {bound}, got {value!r}")
    return int(value)


def spoken_words(
    words: Sequence[str] | None = None,
    *,
    speakers: Sequence[str | Speaker] | None = None,
    clips_per_speaker: int = 1,
    sample_rate: int = 16000,
    duration: float = 1.0,
    seed: int = 0,
    progress: bool = True,
) -> SpokenWords:
    """Synthesise (or load from the cache) spoken words from many synthetic speakers.

    Every word is spoken ``clips_per_speaker`` times by every speaker with espeak-ng or flite,
    each time with its speed and pitch jittered by up to 8 % and 6 % (seeded). Each clip is
    resampled to ``sample_rate`` (:func:`scipy.signal.resample_poly`), trimmed of leading and
    trailing silence (frames 40 dB below the loudest), centred in a window of ``duration``
    seconds (zero-padded, or cropped around the middle if longer) and peak-normalised to 0.9.

    The result is cached under ``$WEIGHTSPACE_CACHE/spoken_words/`` in a safetensors file whose
    name hashes every argument but ``progress``; a corrupted cache file is rebuilt. The default
    set (20 words x 32 speakers, 640 clips) takes a few seconds to build on two cores.

    Example:
        >>> ds = spoken_words(DIGIT_WORDS, clips_per_speaker=3, progress=False)
        >>> len(ds), ds.sample_rate
        (960, 16000)
        >>> held_out = ["flite-slt", "en-029+f4"]
        >>> test = ds.subset(speakers=held_out)

    Shapes:
        - ``waveforms``: ``[len(speakers) * len(words) * clips_per_speaker, T]`` with
          ``T = round(duration * sample_rate)``, ordered by speaker, then word, then repeat.

    Args:
        words: The words to speak; defaults to :data:`DIGIT_WORDS` followed by :data:`COMMAND_WORDS`
            (labels 0-9 are the digits). Letters and digits, with single spaces, hyphens or
            apostrophes between them.
        speakers: Names from :data:`SPEAKERS` or :class:`Speaker` objects; defaults to all of
            :data:`SPEAKERS`.
        clips_per_speaker: Clips per (speaker, word) pair, at least 1.
        sample_rate: Output sample rate in Hz, in [1000, 192000].
        duration: Length of every clip in seconds, in (0, 10].
        seed: Seed of the per-clip jitter, a non-negative integer.
        progress: Show a progress bar while synthesising.

    Returns:
        The data set, with float32 waveforms.

    Raises:
        MissingSourceError: if ``espeak-ng`` or ``flite`` (whichever the speakers need) is not
            installed, or the Python package ``soundfile`` is missing.
        WeightspaceValueError: if an argument is invalid.
        WeightspaceError: if an engine fails on a word.
    """
    word_list = _check_words(words)
    speaker_list = _check_speakers(speakers)
    clips_per_speaker = check_int("clips_per_speaker", clips_per_speaker, 1)
    sample_rate = check_int("sample_rate", sample_rate, 1000, 192000)
    seed = check_int("seed", seed, 0)
    if isinstance(duration, bool) or not isinstance(duration, int | float):
        raise WeightspaceValueError(f"`duration` must be a number of seconds, got {duration!r}")
    if not (math.isfinite(duration) and 0 < duration <= 10):
        raise WeightspaceValueError(f"`duration` must be in (0, 10] seconds, got {duration!r}")
    duration = float(duration)
    length = max(1, round(duration * sample_rate))

    meta: dict[str, Any] = {
        "kind": "spoken_words",
        "format_version": _FORMAT_VERSION,
        "words": list(word_list),
        "speakers": [s._record() for s in speaker_list],
        "clips_per_speaker": clips_per_speaker,
        "sample_rate": sample_rate,
        "duration": duration,
        "seed": seed,
    }
    key = hashlib.sha256(json.dumps(meta, sort_keys=True).encode()).hexdigest()[:16]
    path = cache_dir("spoken_words") / f"spoken_words-v{_FORMAT_VERSION}-{key}.safetensors"

    def build(tmp: Path) -> None:
        from safetensors.torch import save_file

        tensors, versions = _synthesise(
            word_list, speaker_list, clips_per_speaker, sample_rate, length, seed, progress
        )
        header = json.dumps({**meta, "engine_versions": versions}, sort_keys=True)
        # A single metadata entry keeps the header's byte order deterministic.
        save_file(tensors, str(tmp), metadata={"weightspace": header})

    cached_file(path, build, meta=meta)
    tensors = load_cached(path)
    n = len(speaker_list) * len(word_list) * clips_per_speaker
    if tuple(tensors["waveforms"].shape) != (n, length):
        raise CacheError(
            f"cache entry {path} holds waveforms of shape {tuple(tensors['waveforms'].shape)}, "
            f"expected {(n, length)}; delete the file to rebuild it"
        )
    return SpokenWords(
        waveforms=tensors["waveforms"].to(torch.float32),
        labels=tensors["labels"],
        words=word_list,
        sample_rate=sample_rate,
        speaker=tensors["speaker"],
        clip=tensors["clip"],
        speed=tensors["speed"],
        pitch=tensors["pitch"],
        speaker_table=speaker_list,
    )


def load_cached(path: Path) -> dict[str, Tensor]:
    from safetensors.torch import load_file

    try:
        return load_file(str(path))
    except Exception as exc:  # safetensors raises its own error types
        raise CacheError(
            f"cache entry {path} cannot be read ({exc}); delete it (and {path.name}.json) to "
            "rebuild it"
        ) from None
