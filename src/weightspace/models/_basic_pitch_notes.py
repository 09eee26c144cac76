"""Note creation for Basic Pitch: posteriorgrams to note events, pitch bends and MIDI.

A port of the official ``basic_pitch.note_creation`` (Apache-2.0) in numpy, without librosa:
onset peaks above a threshold start notes that last while the note posteriorgram stays above a
frame threshold (with a tolerance of 11 frames); the "melodia trick" then turns the remaining
strong frame activity into notes; pitch bends come from the contour posteriorgram around each
note's pitch. The decisions and their order are the official ones, so the same posteriorgrams
give the same notes.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import numpy as np
from numpy.typing import ArrayLike

from weightspace._errors import WeightspaceValueError
from weightspace._optional import require_module
from weightspace.models._basic_pitch import (
    BASIC_PITCH_FRAMES,
    BASIC_PITCH_HOP,
    BASIC_PITCH_SAMPLE_RATE,
    BASIC_PITCH_WINDOW,
    MIDI_OFFSET,
    Posteriorgrams,
)

__all__ = ["NoteEvent", "frame_times", "notes_from_posteriorgrams", "notes_to_midi"]

_MAX_FREQ_IDX = 87
_CONTOUR_BINS = 264
_PITCH_BEND_TICKS = 8192


class NoteEvent(NamedTuple):
    """One transcribed note: ``(start, end, pitch, amplitude, pitch_bends)``.

    ``start`` and ``end`` are the onset and offset in seconds, ``pitch`` the MIDI note number,
    ``amplitude`` the mean note activity over the note (in ``[0, 1]``) and ``pitch_bends`` the
    pitch deviation of each frame in thirds of a semitone (``None`` when not estimated).
    """

    start: float
    end: float
    pitch: int
    amplitude: float
    pitch_bends: list[int] | None


def frame_times(n_frames: int) -> np.ndarray:
    """Times in seconds of posteriorgram frames stitched by :meth:`BasicPitch.predict`.

    ``frame * 256 / 22050``, less the official per-window correction (the 2 s windows hold
    171.27 hops but give 172 frames; the official code also adds 1.8 ms per window).

    Args:
        n_frames: Number of frames.

    Returns:
        A float64 array ``[n_frames]``.
    """
    frames = np.arange(n_frames)
    times = frames * BASIC_PITCH_HOP / BASIC_PITCH_SAMPLE_RATE
    window_offset = (BASIC_PITCH_HOP / BASIC_PITCH_SAMPLE_RATE) * (
        BASIC_PITCH_FRAMES - BASIC_PITCH_WINDOW / BASIC_PITCH_HOP
    ) + 0.0018
    result: np.ndarray = times - window_offset * np.floor(frames / BASIC_PITCH_FRAMES)
    return result


def _hz_to_midi(hz: float) -> float:
    return 12.0 * float(np.log2(hz / 440.0)) + 69.0


def _inferred_onsets(onsets: np.ndarray, frames: np.ndarray, n_diff: int = 2) -> np.ndarray:
    diffs = []
    for n in range(1, n_diff + 1):
        appended = np.concatenate([np.zeros((n, frames.shape[1])), frames])
        diffs.append(appended[n:, :] - appended[:-n, :])
    frame_diff = np.min(diffs, axis=0)
    frame_diff[frame_diff < 0] = 0
    frame_diff[:n_diff, :] = 0
    frame_diff = np.max(onsets) * frame_diff / np.max(frame_diff)
    result: np.ndarray = np.max([onsets, frame_diff], axis=0)
    return result


def _local_maxima(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Indices of strict local maxima along axis 0 (``scipy.signal.argrelmax(x, axis=0)``)."""
    inner = (x[1:-1] > x[:-2]) & (x[1:-1] > x[2:])
    rows, cols = np.nonzero(inner)
    return rows + 1, cols


def _clear(energy: np.ndarray, rows: slice | int | np.integer[Any], freq: int) -> None:
    energy[rows, freq] = 0
    if freq < _MAX_FREQ_IDX:
        energy[rows, freq + 1] = 0
    if freq > 0:
        energy[rows, freq - 1] = 0


def _note_frames(
    frames: np.ndarray,
    onsets: np.ndarray,
    *,
    onset_threshold: float,
    frame_threshold: float,
    min_note_len: int,
    infer_onsets: bool,
    melodia_trick: bool,
    energy_tol: int = 11,
) -> list[tuple[int, int, int, float]]:
    n_frames = frames.shape[0]
    if infer_onsets:
        onsets = _inferred_onsets(onsets, frames)
    peaks = np.zeros(onsets.shape)
    rows, cols = _local_maxima(onsets)
    peaks[rows, cols] = onsets[rows, cols]
    onset_t, onset_f = np.where(peaks >= onset_threshold)
    remaining = frames.astype(np.float64)
    notes: list[tuple[int, int, int, float]] = []
    for start, freq in zip(onset_t[::-1], onset_f[::-1], strict=True):
        if start >= n_frames - 1:
            continue
        i, k = start + 1, 0
        while i < n_frames - 1 and k < energy_tol:
            k = k + 1 if remaining[i, freq] < frame_threshold else 0
            i += 1
        i -= k
        if i - start <= min_note_len:
            continue
        _clear(remaining, slice(start, i), int(freq))
        notes.append(
            (int(start), int(i), int(freq) + MIDI_OFFSET, float(np.mean(frames[start:i, freq])))
        )
    if melodia_trick:
        while np.max(remaining) > frame_threshold:
            mid, freq = np.unravel_index(np.argmax(remaining), remaining.shape)
            remaining[mid, freq] = 0
            i, k = mid + 1, 0
            while i < n_frames - 1 and k < energy_tol:
                k = k + 1 if remaining[i, freq] < frame_threshold else 0
                _clear(remaining, i, int(freq))
                i += 1
            end = i - 1 - k
            i, k = mid - 1, 0
            while i > 0 and k < energy_tol:
                k = k + 1 if remaining[i, freq] < frame_threshold else 0
                _clear(remaining, i, int(freq))
                i -= 1
            start = i + 1 + k
            if end - start <= min_note_len:
                continue
            notes.append(
                (
                    int(start),
                    int(end),
                    int(freq) + MIDI_OFFSET,
                    float(np.mean(frames[start:end, freq])),
                )
            )
    return notes


def _pitch_bends(
    contours: np.ndarray, notes: list[tuple[int, int, int, float]], n_bins_tolerance: int = 25
) -> list[list[int]]:
    from scipy.signal.windows import gaussian

    window_length = 2 * n_bins_tolerance + 1
    freq_gaussian = gaussian(window_length, std=5)
    bends = []
    for start, end, pitch, _ in notes:
        hz = 440.0 * 2.0 ** ((pitch - 69) / 12.0)
        freq_idx = int(np.round(36.0 * np.log2(hz / 27.5)))
        lo = max(freq_idx - n_bins_tolerance, 0)
        hi = min(_CONTOUR_BINS, freq_idx + n_bins_tolerance + 1)
        weights = freq_gaussian[
            max(0, n_bins_tolerance - freq_idx) : window_length
            - max(0, freq_idx - (_CONTOUR_BINS - n_bins_tolerance - 1))
        ]
        sub = contours[start:end, lo:hi] * weights
        shift = n_bins_tolerance - max(0, n_bins_tolerance - freq_idx)
        bends.append([int(b) for b in np.argmax(sub, axis=1) - shift])
    return bends


def notes_from_posteriorgrams(
    posteriorgrams: Posteriorgrams | dict[str, ArrayLike],
    *,
    onset_threshold: float = 0.5,
    frame_threshold: float = 0.3,
    min_note_length: float = 127.70,
    min_freq: float | None = None,
    max_freq: float | None = None,
    infer_onsets: bool = True,
    melodia_trick: bool = True,
    pitch_bends: bool = True,
) -> list[NoteEvent]:
    """Decode Basic Pitch posteriorgrams of a recording into note events.

    The defaults are those of the official ``basic_pitch.inference.predict``.

    Args:
        posteriorgrams: ``[frames, bins]`` posteriorgrams of a whole recording, as
            :meth:`BasicPitch.predict` returns them (or a dict with ``"note"``, ``"onset"``
            and ``"contour"`` arrays).
        onset_threshold: Minimum onset peak that starts a note.
        frame_threshold: Minimum note activity that keeps a note going.
        min_note_length: Shortest note kept, in milliseconds.
        min_freq: Ignore activity below this frequency in Hz (``None``: no limit).
        max_freq: Ignore activity above this frequency in Hz (``None``: no limit).
        infer_onsets: Add onsets where the note activity jumps.
        melodia_trick: Also make notes from strong activity without an onset.
        pitch_bends: Estimate pitch bends from the contour posteriorgram.

    Returns:
        Note events, onset-detected notes first (latest first), then the others.

    Example:
        >>> import numpy as np
        >>> from weightspace.models import notes_from_posteriorgrams
        >>> note = np.zeros((100, 88)); onset = np.zeros((100, 88)); contour = np.zeros((100, 264))
        >>> note[10:40, 39] = 0.9; onset[10, 39] = 0.8  # middle C (MIDI 60) for 30 frames
        >>> [(n.pitch, round(n.start, 3), round(n.end, 3)) for n in notes_from_posteriorgrams(
        ...     {"note": note, "onset": onset, "contour": contour})]
        [(60, 0.116, 0.464)]
    """
    if isinstance(posteriorgrams, Posteriorgrams):
        arrays = posteriorgrams.numpy()
    else:
        arrays = {k: np.asarray(posteriorgrams[k]) for k in ("note", "onset", "contour")}
    frames, onsets, contours = arrays["note"], arrays["onset"], arrays["contour"]
    if frames.ndim != 2 or frames.shape[1] != 88 or onsets.shape != frames.shape:
        raise WeightspaceValueError(
            f"`posteriorgrams` must hold note and onset arrays [frames, 88] of one recording, got "
            f"{list(frames.shape)} and {list(onsets.shape)}; decode each recording separately"
        )
    frames, onsets = frames.copy(), onsets.copy()
    if max_freq is not None:
        idx = int(np.round(_hz_to_midi(max_freq) - MIDI_OFFSET))
        onsets[:, idx:] = 0
        frames[:, idx:] = 0
    if min_freq is not None:
        idx = int(np.round(_hz_to_midi(min_freq) - MIDI_OFFSET))
        onsets[:, :idx] = 0
        frames[:, :idx] = 0
    min_len = int(np.round(min_note_length / 1000 * (BASIC_PITCH_SAMPLE_RATE / BASIC_PITCH_HOP)))
    notes = _note_frames(
        frames,
        onsets,
        onset_threshold=onset_threshold,
        frame_threshold=frame_threshold,
        min_note_len=min_len,
        infer_onsets=infer_onsets,
        melodia_trick=melodia_trick,
    )
    bends: list[list[int] | None] = (
        list(_pitch_bends(contours, notes)) if pitch_bends else [None] * len(notes)
    )
    times = frame_times(contours.shape[0])
    return [
        NoteEvent(float(times[s]), float(times[e]), p, a, b)
        for (s, e, p, a), b in zip(notes, bends, strict=True)
    ]


def notes_to_midi(
    notes: list[NoteEvent], *, multiple_pitch_bends: bool = False, tempo: float = 120.0
) -> Any:
    """Write note events to a ``pretty_midi.PrettyMIDI`` object (Electric Piano 1).

    As the official ``note_events_to_midi``: without ``multiple_pitch_bends``, notes that
    overlap in time lose their pitch bends and all notes go to one instrument; with it, each
    pitch gets its own instrument so that bends cannot clash. Bends are clipped to +-2 semitones.

    Args:
        notes: Note events.
        multiple_pitch_bends: One instrument per pitch, keeping all bends.
        tempo: Tempo written to the file, in beats per minute.

    Returns:
        A ``pretty_midi.PrettyMIDI`` object (save it with ``.write(path)``).

    Raises:
        MissingSourceError: if pretty_midi is not installed.
    """
    pretty_midi = require_module("pretty_midi", pip="pretty_midi", extra="pitch")
    events = [NoteEvent(*n) for n in notes]
    if not multiple_pitch_bends:
        events.sort(key=lambda e: (e.start, e.end, e.pitch, e.amplitude))
        for i in range(len(events) - 1):
            for j in range(i + 1, len(events)):
                if events[j].start >= events[i].end:
                    break
                events[i] = events[i]._replace(pitch_bends=None)
                events[j] = events[j]._replace(pitch_bends=None)
    midi = pretty_midi.PrettyMIDI(initial_tempo=tempo)
    program = pretty_midi.instrument_name_to_program("Electric Piano 1")
    instruments: dict[int, Any] = {}
    for start, end, pitch, amplitude, bends in events:
        key = pitch if multiple_pitch_bends else 0
        if key not in instruments:
            instruments[key] = pretty_midi.Instrument(program=program)
        instrument = instruments[key]
        instrument.notes.append(
            pretty_midi.Note(
                velocity=int(np.round(127 * amplitude)), pitch=int(pitch), start=start, end=end
            )
        )
        if not bends:
            continue
        bend_times = np.linspace(start, end, len(bends))
        ticks = np.round(np.array(bends) * 4096 / 3).astype(int)
        ticks = np.clip(ticks, -_PITCH_BEND_TICKS, _PITCH_BEND_TICKS - 1)
        for when, tick in zip(bend_times, ticks, strict=True):
            instrument.pitch_bends.append(pretty_midi.PitchBend(int(tick), float(when)))
    midi.instruments.extend(instruments.values())
    return midi
