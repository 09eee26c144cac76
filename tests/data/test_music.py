"""Rendered music: aligned stems, mixture and note labels, split by piece, cached."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch

from weightspace import WeightspaceValueError
from weightspace.data import MUSIC_KINDS, MusicSet, Piece, rendered_music
from weightspace.data._music import _candidates, split_of

pytest.importorskip("music21")
pytest.importorskip("pretty_midi")
needs_fluidsynth = pytest.mark.skipif(
    shutil.which("fluidsynth") is None, reason="needs the fluidsynth program"
)


@pytest.mark.parametrize("kind", MUSIC_KINDS)
def test_splits_are_disjoint_by_piece(kind: str) -> None:
    names = _candidates(kind)
    assert len(names) == len(set(names)) > 300
    splits = {s: {n for n in names if split_of(n) == s} for s in ("train", "valid", "test")}
    assert splits["train"].isdisjoint(splits["test"]) and splits["valid"].isdisjoint(splits["test"])
    assert sum(len(v) for v in splits.values()) == len(names)
    assert 0.05 < len(splits["test"]) / len(names) < 0.15


def test_split_is_a_pure_function_of_the_name() -> None:
    assert split_of("bach/bwv66.6") == "train"
    assert [split_of(f"piece{i}") for i in range(3)] == [split_of(f"piece{i}") for i in range(3)]


def _check_piece(piece: Piece, sample_rate: int, max_seconds: float) -> None:
    assert piece.sample_rate == sample_rate
    assert piece.mixture.dtype == torch.float32 and piece.stems.dtype == torch.float32
    assert piece.stems.shape == (len(piece.parts), piece.mixture.shape[0])
    assert len(piece.programs) == len(piece.parts)
    assert float((piece.stems.sum(0) - piece.mixture).abs().max()) < 1e-5
    assert float(piece.mixture.abs().max()) == pytest.approx(0.9, abs=1e-6)
    notes = piece.notes
    assert notes.dtype == torch.float64 and notes.shape[1] == 5 and notes.shape[0] > 0
    assert bool((notes[:, 1] > notes[:, 0]).all()) and float(notes[:, 1].max()) <= max_seconds
    assert bool((notes[1:, 0] >= notes[:-1, 0]).all())  # sorted by onset
    assert set(notes[:, 4].long().tolist()) <= set(range(len(piece.parts)))
    assert bool(((notes[:, 2] >= 21) & (notes[:, 2] <= 108)).all())
    # Every stem sounds while its part plays: energy in its first note, near silence after
    # the last note has died away.
    rate = sample_rate
    for part in range(len(piece.parts)):
        first = piece.part_notes(part)[0]
        a, b = int(first[0] * rate), int(first[1] * rate)
        assert float(piece.stems[part, a:b].abs().max()) > 1e-3


@needs_fluidsynth
def test_ensemble_pieces_have_aligned_stems_and_labels(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("WEIGHTSPACE_CACHE", str(tmp_path))
    songs = rendered_music("ensemble", split="test", n_pieces=2, max_seconds=3.0, sample_rate=16000)
    assert isinstance(songs, MusicSet) and len(songs) == 2
    assert all(split_of(n) == "test" for n in songs.names)
    for piece in songs:
        _check_piece(piece, 16000, 3.0)
        assert len(piece.parts) == 4 and piece.parts[0] == "Soprano"
    assert repr(songs).startswith("MusicSet(ensemble/test: 2 pieces")
    # Cached: the second call reads the same tensors back, without rendering.
    files = sorted((tmp_path / "music").rglob("*.safetensors"))
    assert len(files) == 2
    import weightspace.data._music as music

    monkeypatch.setattr(music, "fluidsynth_render", None)  # would fail if called
    again = rendered_music("ensemble", split="test", n_pieces=2, max_seconds=3.0, sample_rate=16000)
    for a, b in zip(songs, again, strict=True):
        assert torch.equal(a.mixture, b.mixture) and torch.equal(a.notes, b.notes)
        assert a.programs == b.programs


@needs_fluidsynth
@pytest.mark.parametrize("kind", ["piano", "melodies"])
def test_other_kinds(kind: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WEIGHTSPACE_CACHE", str(tmp_path))
    (piece,) = rendered_music(kind, split="valid", n_pieces=1, max_seconds=4.0)
    _check_piece(piece, 22050, 4.0)
    if kind == "piano":
        assert set(piece.programs) == {0} and len(piece.parts) >= 2
    else:
        assert piece.parts == ("melody",) and piece.programs[0] in (52, 53, 54, 78, 79)
        # A single line: no two notes sound at once.
        notes = piece.notes
        assert bool((notes[1:, 0] >= notes[:-1, 1] - 1e-9).all())


def test_validation_errors() -> None:
    with pytest.raises(WeightspaceValueError, match="`kind` must be one of"):
        rendered_music("drums")  # type: ignore[arg-type]
    with pytest.raises(WeightspaceValueError, match="`split` must be one of"):
        rendered_music("ensemble", split="dev")  # type: ignore[arg-type]
    with pytest.raises(WeightspaceValueError, match="`n_pieces` must be a positive integer"):
        rendered_music("ensemble", n_pieces=0)
    with pytest.raises(WeightspaceValueError, match="`sample_rate` must be an integer >= 8000"):
        rendered_music("ensemble", sample_rate=4000)
    with pytest.raises(WeightspaceValueError, match="`max_seconds` must be positive"):
        rendered_music("ensemble", max_seconds=0.0)


def test_fluidsynth_refuses_a_note_shorter_than_a_tick() -> None:
    pretty_midi = pytest.importorskip("pretty_midi")
    from weightspace.data import fluidsynth_render

    midi = pretty_midi.PrettyMIDI()
    instrument = pretty_midi.Instrument(program=0)
    instrument.notes.append(pretty_midi.Note(80, 60, 1.0, 1.0001))
    midi.instruments.append(instrument)
    with pytest.raises(WeightspaceValueError, match="shorter than one tick"):
        fluidsynth_render(midi, sample_rate=22050, font=Path("unused.sf2"))


def test_notes_cut_to_nothing_at_the_limit_are_dropped() -> None:
    music21 = pytest.importorskip("music21")
    from weightspace.data._music import _score_notes

    score = music21.stream.Score()
    part = music21.stream.Part()
    part.append(music21.note.Note("C4", quarterLength=1.0))
    part.append(music21.note.Note("D4", quarterLength=1.0))
    score.append(part)
    # At 60 bpm the D starts at 1.0 s: a limit of 1.01 s would leave 10 ms of it.
    _, parts = _score_notes(score, seconds_per_quarter=1.0, max_seconds=1.01, max_parts=4)
    assert parts == [[(0.0, 1.0, 60)]]
    _, parts = _score_notes(score, seconds_per_quarter=1.0, max_seconds=1.5, max_parts=4)
    assert parts == [[(0.0, 1.0, 60), (1.0, 1.5, 62)]]
