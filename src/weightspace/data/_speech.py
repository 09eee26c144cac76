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
import math
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor
from torch.utils.data import Dataset

from weightspace._cache import cache_dir, cached_file
from weightspace._errors import CacheError, WeightspaceValueError
from weightspace.data._clips import ClipSet, check_int, index_mask, load_cached
from weightspace.data._speakers import (
    _SPEAKERS_BY_NAME,
    COMMAND_WORDS,
    DIGIT_WORDS,
    SPEAKERS,
    Speaker,
)
from weightspace.data._synthesis import _synthesise

__all__ = ["SpokenWords", "spoken_words"]

_FORMAT_VERSION = 1
_MAX_WORD_LEN = 64
_WORD_RE = re.compile(r"[^\W_]+(?:[' -][^\W_]+)*")


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
