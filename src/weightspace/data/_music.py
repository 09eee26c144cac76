"""Rendered music with exact note labels: multi-part scores played through General-MIDI fonts.

Slakh2100 is MIDI rendered with virtual instruments; this is the same recipe at small scale.
Scores of the music21 corpus become MIDI parts (one General-MIDI program per part) that
FluidSynth renders one at a time, so every piece comes with aligned per-part *stems*, their
*mixture* and the *notes* that were played, at a stated sample rate. Three kinds:

* ``"ensemble"``: Bach chorales (music21's ``bach`` folder), each part on an instrument drawn
  per piece from a pool for its register (strings, winds, brass, guitars, keyboards, basses),
  through the FluidR3 General-MIDI font (Debian ``fluid-soundfont-gm``).
* ``"piano"``: other polyphony (Palestrina masses, Monteverdi madrigals, Classical string
  quartets) played as solo piano through a *different* font, TimGM6mb (shipped in
  ``pretty_midi``): another repertoire, timbre and sampler.
* ``"melodies"``: single folk-song lines (Essen collection) sung on "Choir Aahs"/"Voice Oohs"/
  "Synth Voice" or whistled ("Whistle", "Ocarina"), with vibrato, pitch drift and glides
  written as pitch bends, breath noise and a synthetic room. This is a *proxy* for recordings
  of hummed and whistled melodies (such as MLEnd Hums and Whistles, which cannot be downloaded
  here): rendered samples, not people.

Pieces are split by name (CRC-32 of the name: 10 % test, 10 % validation, 80 % train), so a
piece never reaches two splits; each rendered piece is cached as a checked ``.safetensors``
file under ``$WEIGHTSPACE_CACHE/music``. music21, pretty_midi and the ``fluidsynth`` program
are needed only to build a piece that is not cached yet.
"""

from __future__ import annotations

import itertools
import json
import logging
import math
import re
import subprocess
import tempfile
import zlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from torch import Tensor

from weightspace._cache import cache_dir, cached_file
from weightspace._errors import MissingSourceError, WeightspaceValueError
from weightspace._optional import require_executable, require_module

__all__ = [
    "MUSIC_KINDS",
    "MusicSet",
    "Piece",
    "fluidsynth_render",
    "rendered_music",
    "soundfont",
]

logger = logging.getLogger(__name__)

MusicKind = Literal["ensemble", "piano", "melodies"]
#: The kinds of :func:`rendered_music`.
MUSIC_KINDS: tuple[str, ...] = ("ensemble", "piano", "melodies")
_SPLITS = ("train", "valid", "test", "all")
_VERSION = 2  # 2: notes shorter than 20 ms (cut at `max_seconds`) are dropped
_MIN_NOTE = 0.02  # seconds

# General-MIDI programs (0-based, as pretty_midi numbers them) per register, for "ensemble".
_ENSEMBLE_POOLS: tuple[tuple[int, ...], ...] = (
    (40, 73, 68, 56, 71, 0, 24, 11),  # violin, flute, oboe, trumpet, clarinet, piano, guitar, vibes
    (41, 71, 65, 60, 26, 4, 19, 0),  # viola, clarinet, alto sax, horn, jazz guitar, e-piano, organ
    (42, 70, 66, 57, 25, 4, 19, 0),  # cello, bassoon, tenor sax, trombone, steel guitar, ...
    (43, 32, 33, 58, 70, 42, 19, 0),  # contrabass, acoustic bass, electric bass, tuba, bassoon
)
# Sung and whistled programs for "melodies", with the pitch around which a line is placed.
_MELODY_PROGRAMS: tuple[tuple[int, int], ...] = (
    (52, 55),  # Choir Aahs, low voice
    (53, 57),  # Voice Oohs, low voice (humming)
    (53, 67),  # Voice Oohs, high voice
    (52, 69),  # Choir Aahs, high voice
    (54, 62),  # Synth Voice
    (78, 81),  # Whistle
    (79, 76),  # Ocarina
)
_PIANO_SOURCES = ("palestrina", "monteverdi", "beethoven", "haydn", "mozart")


@dataclass(frozen=True, eq=False)
class Piece:
    """One rendered piece: aligned stems, their mixture and the notes that were played.

    ``stems.sum(0)`` equals ``mixture`` (up to float rounding); all are scaled together so that
    the mixture peaks at 0.9.

    Shapes:
        - mixture: ``[samples]`` float32.
        - stems: ``[parts, samples]`` float32.
        - notes: ``[n_notes, 5]`` float64 rows ``(onset s, offset s, MIDI pitch, velocity,
          part index)``, sorted by onset then pitch.

    Attributes:
        name: Where the score comes from, such as ``"bach/bwv66.6"``.
        kind: ``"ensemble"``, ``"piano"`` or ``"melodies"``.
        sample_rate: Samples per second.
        mixture: The sum of the stems.
        stems: One rendered part per row.
        notes: The notes of all parts.
        parts: Part names, aligned with the rows of ``stems``.
        programs: The General-MIDI program (0-based) of each part.
    """

    name: str
    kind: str
    sample_rate: int
    mixture: Tensor
    stems: Tensor
    notes: Tensor
    parts: tuple[str, ...]
    programs: tuple[int, ...]

    @property
    def duration(self) -> float:
        """Length of the audio in seconds."""
        return self.mixture.shape[0] / self.sample_rate

    def part_notes(self, part: int) -> Tensor:
        """The rows of :attr:`notes` played by part ``part``."""
        return self.notes[self.notes[:, 4] == part]

    def __repr__(self) -> str:
        return (
            f"Piece({self.name!r}, {self.kind}, {len(self.parts)} parts, "
            f"{self.notes.shape[0]} notes, {self.duration:.1f} s at {self.sample_rate} Hz)"
        )


@dataclass(frozen=True, eq=False)
class MusicSet(Sequence[Piece]):
    """The pieces of one split of a :func:`rendered_music` kind.

    Attributes:
        kind: ``"ensemble"``, ``"piano"`` or ``"melodies"``.
        split: ``"train"``, ``"valid"``, ``"test"`` or ``"all"``.
        sample_rate: Samples per second of every piece.
        pieces: The pieces, in a fixed order.
    """

    kind: str
    split: str
    sample_rate: int
    pieces: tuple[Piece, ...]

    def __len__(self) -> int:
        return len(self.pieces)

    def __getitem__(self, index: int) -> Piece:  # type: ignore[override]
        return self.pieces[index]

    def __iter__(self) -> Iterator[Piece]:
        return iter(self.pieces)

    @property
    def names(self) -> tuple[str, ...]:
        """The names of the pieces."""
        return tuple(p.name for p in self.pieces)

    @property
    def duration(self) -> float:
        """Total length in seconds."""
        return sum(p.duration for p in self.pieces)

    def __repr__(self) -> str:
        return (
            f"MusicSet({self.kind}/{self.split}: {len(self)} pieces, {self.duration:.0f} s "
            f"at {self.sample_rate} Hz)"
        )


def split_of(name: str) -> str:
    """The split a piece belongs to: CRC-32 of its name mod 10 is 0 (test), 1 (valid), else train.

    Args:
        name: The piece name, such as ``"bach/bwv66.6"``.

    Returns:
        ``"test"``, ``"valid"`` or ``"train"``.

    Example:
        >>> from weightspace.data._music import split_of
        >>> split_of("bach/bwv66.6")
        'train'
    """
    r = zlib.crc32(name.encode()) % 10
    return "test" if r == 0 else "valid" if r == 1 else "train"


def soundfont(name: Literal["fluidr3", "timgm6mb"] = "fluidr3") -> Path:
    """Path of a General-MIDI soundfont available offline.

    Args:
        name: ``"fluidr3"`` (Debian ``fluid-soundfont-gm``, 141 MB) or ``"timgm6mb"`` (6 MB,
            shipped inside the ``pretty_midi`` package).

    Returns:
        The ``.sf2`` file.

    Raises:
        MissingSourceError: if the package that ships it is not installed.
        WeightspaceValueError: for another name.
    """
    if name == "fluidr3":
        path = Path("/usr/share/sounds/sf2/FluidR3_GM.sf2")
        if not path.is_file():
            raise MissingSourceError(
                f"the FluidR3 General-MIDI soundfont is missing ({path}); install it with "
                "`apt-get install -y fluid-soundfont-gm` (as root)"
            )
        return path
    if name == "timgm6mb":
        pretty_midi = require_module("pretty_midi", pip="pretty_midi", extra="pitch")
        return Path(str(pretty_midi.__file__)).parent / "TimGM6mb.sf2"
    raise WeightspaceValueError(f"`name` must be 'fluidr3' or 'timgm6mb', got {name!r}")


def fluidsynth_render(midi: Any, *, sample_rate: int, font: Path, gain: float = 0.5) -> np.ndarray:
    """Render a ``pretty_midi.PrettyMIDI`` object to mono audio with the FluidSynth program.

    Reverb and chorus are off, so stems stay dry and sum to the mixture. A note that starts
    and ends on the same MIDI tick is refused: FluidSynth would sound it for ever (its note-off
    is written before its note-on) and fill the disk.

    Args:
        midi: The ``pretty_midi.PrettyMIDI`` object.
        sample_rate: Output sampling rate in Hz.
        font: The ``.sf2`` soundfont.
        gain: FluidSynth's master gain.

    Returns:
        Float32 samples ``[n]`` (the mean of FluidSynth's two channels).

    Raises:
        MissingSourceError: if ``fluidsynth`` is not installed (Debian ``fluidsynth``).
        WeightspaceValueError: if a note lasts less than one MIDI tick.
    """
    exe = require_executable("fluidsynth", apt="fluidsynth")
    for instrument in midi.instruments:
        for note in instrument.notes:
            if midi.time_to_tick(note.end) <= midi.time_to_tick(note.start):
                raise WeightspaceValueError(
                    f"`midi` has a note shorter than one tick (pitch {note.pitch} from "
                    f"{note.start:.4f} s to {note.end:.4f} s); FluidSynth would hold it for ever. "
                    "Drop or lengthen it"
                )
    sf = require_module("soundfile", pip="soundfile", extra="audio")
    with tempfile.TemporaryDirectory(prefix="weightspace-render-") as tmp:
        mid, wav = Path(tmp) / "in.mid", Path(tmp) / "out.wav"
        midi.write(str(mid))
        cmd = [exe, "-ni", "-q", "-R", "0", "-C", "0", "-g", str(gain), "-r", str(sample_rate)]
        cmd += ["-O", "float", "-T", "wav", "-F", str(wav), str(font), str(mid)]
        subprocess.run(cmd, check=True, capture_output=True, timeout=120 + 20 * midi.get_end_time())
        audio, rate = sf.read(str(wav), dtype="float32", always_2d=True)
    if rate != sample_rate:  # pragma: no cover - fluidsynth honours -r
        raise MissingSourceError(f"fluidsynth wrote {rate} Hz instead of {sample_rate} Hz")
    mono: np.ndarray = audio.mean(axis=1).astype(np.float32)
    return mono


# -- scores ---------------------------------------------------------------------------------------


def _candidates(kind: str) -> list[str]:
    """Names of the scores a kind draws from, in a fixed pseudo-random order."""
    music21 = require_module("music21", pip="music21", extra="pitch")
    corpus = music21.corpus
    names: list[str] = []
    if kind == "ensemble":
        for path in corpus.getComposer("bach"):
            stem = Path(path).stem
            if re.fullmatch(r"bwv\d+(\.\d+)?", stem) and Path(path).suffix in (".mxl", ".xml"):
                names.append(f"bach/{stem}")
    elif kind == "piano":
        for composer in _PIANO_SOURCES:
            for path in corpus.getComposer(composer):
                p = Path(path)
                if p.suffix in (".mxl", ".xml", ".krn", ".musicxml"):
                    names.append(f"{composer}/{p.parent.name}/{p.stem}")
    else:
        root = Path(str(music21.__file__)).parent / "corpus" / "essenFolksong"
        for path in sorted(root.glob("*.abc")):
            text = path.read_text(encoding="latin-1")
            for number in re.findall(r"^X:\s*(\d+)", text, flags=re.MULTILINE):
                names.append(f"essenFolksong/{path.stem}#{number}")
    names = sorted(set(names), key=lambda n: (zlib.crc32(f"{kind}:{n}".encode()), n))
    return names


def _parse(kind: str, name: str) -> Any:
    music21 = require_module("music21", pip="music21", extra="pitch")
    if kind == "melodies":
        work, number = name.split("#")
        return music21.corpus.parse(work, number=int(number))
    if kind == "piano":
        composer, folder, stem = name.split("/")
        for path in music21.corpus.getComposer(composer):
            p = Path(path)
            if p.parent.name == folder and p.stem == stem:
                return music21.converter.parse(str(p))
        raise MissingSourceError(f"music21's corpus has no score {name!r}")  # pragma: no cover
    return music21.corpus.parse(name)


def _score_notes(
    score: Any, *, seconds_per_quarter: float, max_seconds: float | None, max_parts: int
) -> tuple[list[str], list[list[tuple[float, float, int]]]]:
    """Notes per part ``(onset s, offset s, pitch)``, ties merged, chords expanded."""
    names: list[str] = []
    parts: list[list[tuple[float, float, int]]] = []
    for index, part in enumerate(score.parts):
        notes: list[tuple[float, float, int]] = []
        for element in part.stripTies().flatten().notes:
            start = float(element.offset) * seconds_per_quarter
            length = float(element.duration.quarterLength) * seconds_per_quarter
            if length <= 0 or (max_seconds is not None and start >= max_seconds):
                continue
            end = start + length if max_seconds is None else min(start + length, max_seconds)
            if end - start < _MIN_NOTE:
                continue  # a note cut to nothing at `max_seconds`
            for pitch in getattr(element, "pitches", ()):
                if 21 <= pitch.midi <= 108:
                    notes.append((start, end, int(pitch.midi)))
        if notes:
            names.append(str(part.partName or f"part {index}"))
            parts.append(sorted(notes))
        if len(parts) == max_parts:
            break
    return names, parts


def _bend_curve(
    notes: list[tuple[float, float, int]], rng: np.random.Generator, step: float = 0.01
) -> list[tuple[float, int]]:
    """Pitch bends (time, value) for vibrato, slow drift and glides into each note."""
    if not notes:
        return []
    end = notes[-1][1]
    times = np.arange(0.0, end + step, step)
    rate, depth = rng.uniform(4.5, 6.5), rng.uniform(15.0, 45.0)  # Hz, cents
    cents = depth * np.sin(2 * np.pi * rate * times + rng.uniform(0, 2 * np.pi))
    drift = np.cumsum(rng.normal(0.0, 1.0, times.shape))
    cents += 20.0 * drift / max(1.0, float(np.abs(drift).max()))
    for (_, _, previous), (start, _, pitch) in itertools.pairwise(notes):
        glide = rng.uniform(0.03, 0.08)
        where = (times >= start) & (times < start + glide)
        offset = float(np.clip((previous - pitch) * 100.0, -150.0, 150.0))
        cents[where] += offset * (1.0 - (times[where] - start) / glide)
    values = np.clip(np.round(cents / 200.0 * 8192), -8192, 8191).astype(int)
    return [(float(t), int(v)) for t, v in zip(times, values, strict=True)]


def _room(audio: np.ndarray, sample_rate: int, rng: np.random.Generator) -> np.ndarray:
    """Add breath noise shaped by the signal envelope and a synthetic room response."""
    from scipy.signal import fftconvolve, lfilter

    n = audio.shape[0]
    envelope = np.convolve(np.abs(audio), np.ones(441) / 441, mode="same")
    breath = lfilter([1.0], [1.0, -0.95], rng.standard_normal(n))  # reddish noise
    breath = breath / (np.abs(breath).max() + 1e-9)
    snr_db = rng.uniform(18.0, 30.0)
    level = np.sqrt(np.mean(audio**2) + 1e-12) * 10 ** (-snr_db / 20)
    noisy = audio + level * breath * (0.3 + envelope / (envelope.max() + 1e-9))
    rt60 = rng.uniform(0.15, 0.6)
    length = int(rt60 * sample_rate)
    t = np.arange(length) / sample_rate
    ir = rng.standard_normal(length) * np.exp(-6.9 * t / rt60)
    ir[0] = 1.0 / rng.uniform(0.2, 0.6)  # direct path against the diffuse tail
    wet = fftconvolve(noisy, ir)[:n]
    mix = rng.uniform(0.15, 0.45)
    out = (1 - mix) * noisy / (np.abs(noisy).max() + 1e-9) + mix * wet / (np.abs(wet).max() + 1e-9)
    out += 10 ** (-rng.uniform(45, 60) / 20) * rng.standard_normal(n)  # microphone floor
    result: np.ndarray = out.astype(np.float32)
    return result


def _build_piece(
    kind: str, name: str, *, sample_rate: int, max_seconds: float | None, seed: int
) -> dict[str, Any] | None:
    pretty_midi = require_module("pretty_midi", pip="pretty_midi", extra="pitch")
    rng = np.random.default_rng([zlib.crc32(name.encode()), seed])
    score = _parse(kind, name)
    if kind == "melodies":
        bpm = rng.uniform(70.0, 110.0)
    elif kind == "piano":
        bpm = rng.uniform(80.0, 120.0)
    else:
        bpm = rng.uniform(70.0, 100.0)
    max_parts = 1 if kind == "melodies" else 6
    part_names, parts = _score_notes(
        score, seconds_per_quarter=60.0 / bpm, max_seconds=max_seconds, max_parts=max_parts
    )
    if not parts or (kind != "melodies" and len(parts) < 2):
        return None
    if kind == "ensemble":
        programs = [int(rng.choice(_ENSEMBLE_POOLS[min(i, 3)])) for i in range(len(parts))]
        font = soundfont("fluidr3")
    elif kind == "piano":
        programs = [0] * len(parts)
        font = soundfont("timgm6mb")
    else:
        program, centre = _MELODY_PROGRAMS[int(rng.integers(len(_MELODY_PROGRAMS)))]
        mean_pitch = float(np.mean([p for _, _, p in parts[0]]))
        shift = round(centre - mean_pitch) + int(rng.integers(-2, 3))
        parts = [[(s, e, min(108, max(21, p + shift))) for s, e, p in parts[0]]]
        programs = [program]
        part_names = ["melody"]
        font = soundfont("fluidr3")
    stems: list[np.ndarray] = []
    rows: list[tuple[float, float, int, int, int]] = []
    for index, (notes, program) in enumerate(zip(parts, programs, strict=True)):
        midi = pretty_midi.PrettyMIDI(initial_tempo=bpm)
        instrument = pretty_midi.Instrument(program=program)
        for start, end, pitch in notes:
            velocity = int(np.clip(rng.normal(85 if kind != "piano" else 75, 10), 40, 120))
            instrument.notes.append(pretty_midi.Note(velocity, pitch, start, end))
            rows.append((start, end, pitch, velocity, index))
        if kind == "melodies":
            for when, value in _bend_curve(notes, rng):
                instrument.pitch_bends.append(pretty_midi.PitchBend(value, when))
        midi.instruments.append(instrument)
        stems.append(fluidsynth_render(midi, sample_rate=sample_rate, font=font))
    length = max(s.shape[0] for s in stems)
    stacked = np.zeros((len(stems), length), dtype=np.float32)
    for i, s in enumerate(stems):
        stacked[i, : s.shape[0]] = s
    if kind == "melodies":
        stacked[0] = _room(stacked[0], sample_rate, rng)
    mixture = stacked.sum(axis=0)
    scale = 0.9 / max(float(np.abs(mixture).max()), 1e-9)
    rows.sort(key=lambda r: (r[0], r[2], r[4]))
    return {
        "mixture": (mixture * scale).astype(np.float32),
        "stems": (stacked * scale).astype(np.float32),
        "notes": np.array(rows, dtype=np.float64).reshape(-1, 5),
        "parts": part_names,
        "programs": programs,
    }


def _load_piece(path: Path, kind: str, name: str, sample_rate: int) -> Piece | None:
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as f:
        meta = f.metadata() or {}
        if meta.get("empty") == "1":
            return None
        return Piece(
            name=name,
            kind=kind,
            sample_rate=sample_rate,
            mixture=f.get_tensor("mixture"),
            stems=f.get_tensor("stems"),
            notes=f.get_tensor("notes"),
            parts=tuple(json.loads(meta["parts"])),
            programs=tuple(int(p) for p in json.loads(meta["programs"])),
        )


def _piece(
    kind: str, name: str, *, sample_rate: int, max_seconds: float | None, seed: int
) -> Piece | None:
    from safetensors.torch import save_file

    slug = re.sub(r"[^A-Za-z0-9_.-]+", "_", name)
    tag = "full" if max_seconds is None else f"{max_seconds:g}s"
    folder = cache_dir("music", kind, f"{sample_rate}Hz-{tag}-seed{seed}")
    path = folder / f"{slug}.safetensors"

    def build(tmp: Path) -> None:
        built = _build_piece(
            kind, name, sample_rate=sample_rate, max_seconds=max_seconds, seed=seed
        )
        if built is None:
            save_file({"empty": torch.zeros(1)}, str(tmp), metadata={"empty": "1"})
            return
        tensors = {
            "mixture": torch.from_numpy(built["mixture"]),
            "stems": torch.from_numpy(built["stems"]),
            "notes": torch.from_numpy(built["notes"]),
        }
        metadata = {"parts": json.dumps(built["parts"]), "programs": json.dumps(built["programs"])}
        save_file(tensors, str(tmp), metadata=metadata)

    meta = {"version": _VERSION, "kind": kind, "name": name, "sample_rate": sample_rate}
    meta.update({"max_seconds": max_seconds, "seed": seed})
    cached_file(path, build, meta=meta)
    return _load_piece(path, kind, name, sample_rate)


def rendered_music(
    kind: MusicKind,
    *,
    split: Literal["train", "valid", "test", "all"] = "train",
    n_pieces: int | None = None,
    sample_rate: int = 22050,
    max_seconds: float | None = 30.0,
    seed: int = 0,
    progress: bool = False,
) -> MusicSet:
    """Rendered pieces with aligned stems, mixture and exact note labels (see the module).

    The first ``n_pieces`` pieces of the split are rendered (or read from the cache); scores
    that cannot be used (one part only, no notes in range) are skipped. Everything random
    (tempo, instruments, transposition, vibrato, noise, room) is drawn from ``seed`` and the
    piece name, so a piece is the same whichever other pieces are asked for.

    Args:
        kind: ``"ensemble"`` (Bach chorales on mixed instruments), ``"piano"`` (other
            polyphony on solo piano, another soundfont) or ``"melodies"`` (sung and whistled
            folk-song lines with expressive pitch and a room: a proxy for hums).
        split: ``"train"``, ``"valid"``, ``"test"`` or ``"all"``.
        n_pieces: How many pieces; ``None`` means all of the split (slow the first time).
        sample_rate: Sampling rate of the audio in Hz (22,050 is Basic Pitch's).
        max_seconds: Cut each score after this many seconds; ``None`` keeps it whole.
        seed: Seed of the random choices.
        progress: Show a progress bar while rendering.

    Returns:
        A :class:`MusicSet`.

    Raises:
        WeightspaceValueError: for an unknown ``kind`` or ``split``, or a bad number.
        MissingSourceError: if music21, pretty_midi, FluidSynth or a soundfont is needed and
            missing; the message names the package.

    Example:
        >>> from weightspace.data import rendered_music
        >>> songs = rendered_music("ensemble", split="test", n_pieces=1, max_seconds=4.0)
        >>> piece = songs[0]
        >>> piece.stems.shape[0] == len(piece.parts), bool(
        ...     (piece.stems.sum(0) - piece.mixture).abs().max() < 1e-5)
        (True, True)
    """
    if kind not in MUSIC_KINDS:
        raise WeightspaceValueError(f"`kind` must be one of {list(MUSIC_KINDS)}, got {kind!r}")
    if split not in _SPLITS:
        raise WeightspaceValueError(f"`split` must be one of {list(_SPLITS)}, got {split!r}")
    if n_pieces is not None and (isinstance(n_pieces, bool) or n_pieces < 1):
        raise WeightspaceValueError(
            f"`n_pieces` must be a positive integer or None, got {n_pieces!r}"
        )
    if isinstance(sample_rate, bool) or not isinstance(sample_rate, int) or sample_rate < 8000:
        raise WeightspaceValueError(
            f"`sample_rate` must be an integer >= 8000 Hz, got {sample_rate!r}"
        )
    if max_seconds is not None and not (math.isfinite(max_seconds) and max_seconds > 0):
        raise WeightspaceValueError(f"`max_seconds` must be positive or None, got {max_seconds!r}")
    names = [n for n in _candidates(kind) if split == "all" or split_of(n) == split]
    pieces: list[Piece] = []
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=n_pieces or len(names), desc=f"rendering {kind}/{split}")
    for name in names:
        piece = _piece(kind, name, sample_rate=sample_rate, max_seconds=max_seconds, seed=seed)
        if piece is None:
            continue
        pieces.append(piece)
        if bar is not None:
            bar.update(1)
        if n_pieces is not None and len(pieces) == n_pieces:
            break
    if bar is not None:
        bar.close()
    return MusicSet(kind=kind, split=split, sample_rate=sample_rate, pieces=tuple(pieces))
