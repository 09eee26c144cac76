"""Tests of weightspace.data._speech (synthetic spoken words from espeak-ng and flite)."""

from __future__ import annotations

import dataclasses
import logging
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

from weightspace import MissingSourceError, WeightspaceError, WeightspaceValueError
from weightspace.data import (
    COMMAND_WORDS,
    DIGIT_WORDS,
    SPEAKERS,
    Speaker,
    SpokenWords,
    _speech,
    spoken_words,
)

WORDS = ["yes", "seven", "stop"]
# espeak-ng male and female, flite rms (pitch by resampling) and slt (pitch by f0_shift).
SMALL_SPEAKERS = ["en-us+m3", "en-gb-x-rp+f1", "flite-rms", "flite-slt"]
CLIPS = 2


def _build(**kwargs: object) -> SpokenWords:
    args: dict[str, object] = {
        "speakers": SMALL_SPEAKERS,
        "clips_per_speaker": CLIPS,
        "progress": False,
    }
    args.update(kwargs)
    words = args.pop("words", WORDS)
    return spoken_words(words, **args)  # type: ignore[arg-type]


@pytest.fixture(scope="module")
def small(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SpokenWords]:
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("WEIGHTSPACE_CACHE", str(tmp_path_factory.mktemp("cache")))
        yield _build()


@pytest.fixture
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("WEIGHTSPACE_CACHE", str(tmp_path))
    return tmp_path


def _cache_files(root: Path) -> list[Path]:
    return sorted((root / "spoken_words").glob("*.safetensors"))


# --- contents -------------------------------------------------------------------------------


def test_counts_per_speaker_and_word(small: SpokenWords) -> None:
    assert len(small) == len(SMALL_SPEAKERS) * len(WORDS) * CLIPS
    assert small.words == tuple(WORDS)
    pairs = Counter(zip(small.speaker_name, small.labels.tolist(), strict=True))
    assert set(pairs.values()) == {CLIPS}
    assert len(pairs) == len(SMALL_SPEAKERS) * len(WORDS)
    assert sorted(set(small.clip.tolist())) == list(range(CLIPS))
    assert [s.name for s in small.speakers()] == SMALL_SPEAKERS


def test_shapes_rate_and_dtypes(small: SpokenWords) -> None:
    assert small.sample_rate == 16000
    assert small.waveforms.shape == (len(small), 16000)
    assert small.waveforms.dtype == torch.float32
    assert small.duration == 1.0
    wave, label = small[5]
    assert wave.shape == (1, 16000)
    assert label.dtype == torch.int64
    assert label.ndim == 0
    assert small.labels.dtype == small.speaker.dtype == small.clip.dtype == torch.int64
    assert small.speed.dtype == small.pitch.dtype == torch.float32


def test_clips_are_audible_centred_and_not_clipped(small: SpokenWords) -> None:
    w = small.waveforms
    rms = w.pow(2).mean(dim=1).sqrt()
    assert rms.min().item() > 0.03
    peak = w.abs().amax(dim=1)
    torch.testing.assert_close(peak, torch.full_like(peak, 0.9), atol=1e-3, rtol=0)
    assert (w.abs() >= 0.999).sum().item() == 0
    # Every word is centred: the middle of its non-silent span is within 20 ms of the centre.
    loud = w.abs() > 1e-3
    first = loud.float().argmax(dim=1)
    last = w.shape[1] - 1 - loud.flip(1).float().argmax(dim=1)
    middle = (first + last).float() / 2
    assert (middle - w.shape[1] / 2).abs().max().item() < 0.02 * 16000
    assert ((last - first) / 16000).min().item() > 0.15  # no clip is cut to nothing


def test_metadata_columns(small: SpokenWords) -> None:
    n = len(small)
    assert len(small.engine) == len(small.voice) == len(small.gender) == n
    assert set(small.engine) == {"espeak-ng", "flite"}
    assert set(small.gender) == {"male", "female"}
    by_name = dict(zip(small.speaker_name, small.gender, strict=True))
    assert by_name == {
        "en-us+m3": "male",
        "en-gb-x-rp+f1": "female",
        "flite-rms": "male",
        "flite-slt": "female",
    }
    # The jitter stays within its bounds around each speaker's base pitch and speed.
    base_speed = torch.tensor([small.speaker_table[i].speed for i in small.speaker.tolist()])
    base_pitch = torch.tensor([small.speaker_table[i].pitch for i in small.speaker.tolist()])
    assert ((small.speed / base_speed - 1).abs() <= 0.1).all()
    assert ((small.pitch / base_pitch - 1).abs() <= 0.08).all()


def test_repeats_differ(small: SpokenWords) -> None:
    first = small.subset(indices=(small.clip == 0).nonzero().squeeze(1))
    second = small.subset(indices=(small.clip == 1).nonzero().squeeze(1))
    assert first.speaker.tolist() == second.speaker.tolist()
    for a, b in zip(first.waveforms, second.waveforms, strict=True):
        assert not torch.equal(a, b)


def test_other_sample_rate_and_duration(cache: Path) -> None:
    ds = _build(words=["go"], speakers=["en-us+f1", "flite-kal16"], sample_rate=8000, duration=0.5)
    assert ds.sample_rate == 8000
    assert ds.waveforms.shape == (2 * CLIPS, 4000)
    assert ds.waveforms.pow(2).mean(dim=1).sqrt().min().item() > 0.03


def test_custom_speaker_objects(cache: Path) -> None:
    low = Speaker("espeak-ng", "en-us", "m1", pitch=0.7, speed=0.8, name="slow-low")
    high = Speaker("espeak-ng", "en-us", "m1", pitch=1.4)
    ds = _build(words=["no"], speakers=[low, high], clips_per_speaker=1)
    assert ds.speaker_name == ("slow-low", "en-us+m1")
    assert ds.speed[0].item() < 0.9
    assert ds.pitch[0].item() < ds.pitch[1].item()


# --- the default grid -------------------------------------------------------------------------


def test_default_speaker_grid() -> None:
    names = [s.name for s in SPEAKERS]
    assert len(SPEAKERS) >= 24
    assert len(set(names)) == len(names)
    specs = {(s.engine, s.voice, s.variant, s.pitch, s.speed) for s in SPEAKERS}
    assert len(specs) == len(SPEAKERS)
    genders = Counter(s.gender for s in SPEAKERS)
    assert genders["male"] >= 8
    assert genders["female"] >= 8
    assert {s.engine for s in SPEAKERS} == {"espeak-ng", "flite"}
    assert DIGIT_WORDS == (
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
    assert len(COMMAND_WORDS) == 10
    assert set(DIGIT_WORDS).isdisjoint(COMMAND_WORDS)


def test_default_set(cache: Path) -> None:
    ds = spoken_words(progress=False)
    assert ds.words == DIGIT_WORDS + COMMAND_WORDS
    assert len(ds) == len(SPEAKERS) * 20
    assert len(ds.speakers()) == len(SPEAKERS)
    rms = ds.waveforms.pow(2).mean(dim=1).sqrt()
    assert rms.min().item() > 0.03
    assert ds.waveforms.abs().max().item() <= 0.9 + 1e-3


# --- determinism and the cache ----------------------------------------------------------------


def test_same_seed_gives_identical_tensors_and_bytes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("WEIGHTSPACE_CACHE", str(tmp_path / "a"))
    a = _build(seed=3)
    monkeypatch.setenv("WEIGHTSPACE_CACHE", str(tmp_path / "b"))
    b = _build(seed=3)
    assert torch.equal(a.waveforms, b.waveforms)
    assert torch.equal(a.speed, b.speed)
    assert torch.equal(a.pitch, b.pitch)
    (fa,) = _cache_files(tmp_path / "a")
    (fb,) = _cache_files(tmp_path / "b")
    assert fa.name == fb.name
    assert fa.read_bytes() == fb.read_bytes()


def test_different_seed_differs(cache: Path, small: SpokenWords) -> None:
    other = _build(seed=1)
    assert other.waveforms.shape == small.waveforms.shape
    assert not torch.equal(other.speed, small.speed)
    differs = (other.waveforms != small.waveforms).any(dim=1)
    assert differs.float().mean().item() > 0.9


def test_clip_does_not_depend_on_the_other_words(cache: Path, small: SpokenWords) -> None:
    alone = _build(words=["stop"], speakers=["flite-slt", "en-us+m3"])
    expected = small.subset(words="stop", speakers=["en-us+m3", "flite-slt"])
    assert len(alone) == len(expected) == 2 * CLIPS
    by_key = {
        (n, c): w
        for n, c, w in zip(alone.speaker_name, alone.clip.tolist(), alone.waveforms, strict=True)
    }
    for n, c, w in zip(
        expected.speaker_name, expected.clip.tolist(), expected.waveforms, strict=True
    ):
        assert torch.equal(by_key[(n, c)], w)


def test_cache_is_reused(cache: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    first = _build()
    files = _cache_files(cache)
    assert len(files) == 1

    def fail(*args: object, **kwargs: object) -> None:
        raise AssertionError("the cache was not used")

    monkeypatch.setattr(_speech, "_synthesise", fail)
    second = _build()
    assert torch.equal(first.waveforms, second.waveforms)
    # Any other argument gives another file.
    monkeypatch.undo()
    monkeypatch.setenv("WEIGHTSPACE_CACHE", str(cache))
    _build(clips_per_speaker=1)
    assert len(_cache_files(cache)) == 2


def test_corrupted_cache_is_rebuilt(cache: Path, caplog: pytest.LogCaptureFixture) -> None:
    first = _build()
    (path,) = _cache_files(cache)
    data = bytearray(path.read_bytes())
    data[len(data) // 2 : len(data) // 2 + 64] = b"\xff" * 64  # NaNs in float16
    path.write_bytes(bytes(data))
    with pytest.raises(AssertionError):
        torch.testing.assert_close(_speech.load_cached(path)["waveforms"], first.waveforms.half())
    with caplog.at_level(logging.WARNING, logger="weightspace"):
        second = _build()
    assert any("is corrupted" in r.getMessage() for r in caplog.records)
    assert torch.equal(first.waveforms, second.waveforms)


# --- subsets ----------------------------------------------------------------------------------


def test_subset_by_speaker(small: SpokenWords) -> None:
    before = small.waveforms.clone()
    train = small.subset(speakers=SMALL_SPEAKERS[:3])
    test = small.subset(speakers=[SMALL_SPEAKERS[3]])
    assert len(train) + len(test) == len(small)
    assert set(train.speaker_name) == set(SMALL_SPEAKERS[:3])
    assert set(test.speaker_name) == {SMALL_SPEAKERS[3]}
    assert [s.name for s in test.speakers()] == [SMALL_SPEAKERS[3]]
    assert test.speaker_table == small.speaker_table  # ids stay comparable
    assert set(test.speaker.tolist()) == {3}
    assert torch.equal(small.waveforms, before)  # never mutated
    # by id, by Speaker object and by a single name give the same clips
    by_id = small.subset(speakers=[3])
    by_obj = small.subset(speakers=[small.speaker_table[3]])
    by_str = small.subset(speakers=SMALL_SPEAKERS[3])
    for other in (by_id, by_obj, by_str):
        assert torch.equal(other.waveforms, test.waveforms)


def test_subset_by_word_and_index(small: SpokenWords) -> None:
    yes = small.subset(words=["yes"])
    assert set(yes.labels.tolist()) == {0}
    assert len(yes) == len(SMALL_SPEAKERS) * CLIPS
    assert yes.words == small.words  # labels are not renumbered
    both = small.subset(words="stop", speakers=["flite-slt"])
    assert len(both) == CLIPS
    picked = small.subset(indices=[5, 0, -1])
    assert torch.equal(picked.waveforms, small.waveforms[[0, 5, len(small) - 1]])
    mask = small.labels == 1
    assert torch.equal(small.subset(indices=mask).waveforms, small.waveforms[mask])


def test_subset_errors(small: SpokenWords) -> None:
    with pytest.raises(WeightspaceValueError, match=r"`speakers` has 'flite-awb'"):
        small.subset(speakers=["flite-awb"])
    with pytest.raises(WeightspaceValueError, match=r"`speakers` has the id 9"):
        small.subset(speakers=[9])
    with pytest.raises(WeightspaceValueError, match=r"`words` has words .*\['nine'\]"):
        small.subset(words=["nine"])
    with pytest.raises(WeightspaceValueError, match=r"`indices` must lie in"):
        small.subset(indices=[len(small)])


def test_getitem_and_transform(small: SpokenWords) -> None:
    doubled = small.with_transform(lambda x: 2 * x)
    wave, label = doubled[3]
    assert torch.equal(wave, 2 * small.waveforms[3].unsqueeze(0))
    assert label.item() == small.labels[3].item()
    assert small.transform is None
    loader = torch.utils.data.DataLoader(small, batch_size=4)
    x, y = next(iter(loader))
    assert x.shape == (4, 1, 16000)
    assert y.tolist() == small.labels[:4].tolist()
    assert "SpokenWords(clips=24" in repr(small)


def test_objects_are_frozen(small: SpokenWords) -> None:
    with pytest.raises(dataclasses.FrozenInstanceError):
        small.words = ("a",)  # type: ignore[misc]
    with pytest.raises(dataclasses.FrozenInstanceError):
        SPEAKERS[0].pitch = 2.0  # type: ignore[misc]


def test_progress_bar(cache: Path, capsys: pytest.CaptureFixture[str]) -> None:
    ds = _build(words=["up"], speakers=["en-us+f1"], clips_per_speaker=1, progress=True)
    assert len(ds) == 1
    assert "synthesising spoken words" in capsys.readouterr().err


# --- errors -----------------------------------------------------------------------------------


def test_missing_program(cache: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    empty = tmp_path / "empty-bin"
    empty.mkdir()
    monkeypatch.setenv("PATH", str(empty))
    with pytest.raises(MissingSourceError, match=r"apt-get install -y espeak-ng flite") as info:
        _build(speakers=["en-us+m1"])
    assert "`espeak-ng`" in str(info.value)
    assert isinstance(info.value, ImportError)
    with pytest.raises(MissingSourceError, match=r"`flite`"):
        _build(speakers=["flite-slt"])
    assert _cache_files(cache) == []


@pytest.mark.parametrize(
    ("kwargs", "pattern"),
    [
        ({"clips_per_speaker": 0}, r"`clips_per_speaker` must be >= 1, got 0"),
        ({"clips_per_speaker": 1.5}, r"`clips_per_speaker` must be an integer, got 1.5"),
        ({"speakers": ["nobody"]}, r"`speakers` has 'nobody'.*'en-us\+f1'"),
        ({"speakers": ["en-us+m33"]}, r"did you mean"),
        ({"speakers": []}, r"`speakers` must not be empty"),
        ({"speakers": ["en-us+m1", "en-us+m1"]}, r"`speakers` has duplicate names"),
        ({"words": [""]}, r"`words` must hold non-empty strings, got ''"),
        ({"words": ["  "]}, r"`words` must hold non-empty strings"),
        ({"words": []}, r"`words` must not be empty"),
        ({"words": "seven"}, r"`words` must be a sequence of words, got the string 'seven'"),
        ({"words": ["-w"]}, r"`words` has '-w', which is not a plain word"),
        ({"words": ["--help"]}, r"`words` has '--help'"),
        ({"words": ["[[h@'loU]]"]}, r"not a plain word"),
        ({"words": ["yes; rm -rf /"]}, r"not a plain word"),
        ({"words": ["yes", "yes"]}, r"`words` has duplicates \['yes'\]"),
        ({"sample_rate": 0}, r"`sample_rate` must be in \[1000, 192000\], got 0"),
        ({"sample_rate": -16000}, r"`sample_rate` must be in .*got -16000"),
        ({"duration": 0.0}, r"`duration` must be in \(0, 10\] seconds, got 0.0"),
        ({"duration": float("nan")}, r"`duration` must be in"),
        ({"seed": -1}, r"`seed` must be >= 0, got -1"),
    ],
)
def test_bad_arguments(cache: Path, kwargs: dict[str, object], pattern: str) -> None:
    with pytest.raises(WeightspaceValueError, match=pattern):
        _build(**kwargs)
    assert _cache_files(cache) == []


def test_multiword_and_hyphenated_words_are_accepted(cache: Path) -> None:
    ds = _build(words=["turn off", "x-ray", "don't"], speakers=["en-us+f1"], clips_per_speaker=1)
    assert ds.words == ("turn off", "x-ray", "don't")
    assert ds.waveforms.pow(2).mean(dim=1).sqrt().min().item() > 0.03


@pytest.mark.parametrize(
    ("kwargs", "pattern"),
    [
        ({"engine": "festival", "voice": "kal"}, r"`engine` must be 'espeak-ng' or 'flite'"),
        ({"engine": "flite", "voice": "http://x/v.flitevox"}, r"`voice` must be one of flite"),
        ({"engine": "flite", "voice": "slt", "variant": "f1"}, r"`variant` must be None"),
        ({"engine": "espeak-ng", "voice": "--help"}, r"`voice` must be an espeak-ng voice"),
        ({"engine": "espeak-ng", "voice": "en", "variant": "-x"}, r"`variant` must be"),
        ({"engine": "espeak-ng", "voice": "en", "pitch": 3.0}, r"`pitch` must be a factor .*3.0"),
        ({"engine": "espeak-ng", "voice": "en", "speed": 0.1}, r"`speed` must be a factor"),
    ],
)
def test_bad_speaker(kwargs: dict[str, object], pattern: str) -> None:
    with pytest.raises(WeightspaceValueError, match=pattern):
        Speaker(**kwargs)  # type: ignore[arg-type]


def test_speaker_names_and_genders() -> None:
    assert Speaker("espeak-ng", "en-gb-x-rp", "f2").name == "en-gb-x-rp+f2"
    assert Speaker("espeak-ng", "de").name == "de"
    assert Speaker("flite", "awb").name == "flite-awb"
    assert Speaker("espeak-ng", "en", "m7").gender == "male"
    assert Speaker("espeak-ng", "en", "f5").gender == "female"
    assert Speaker("espeak-ng", "en", "klatt").gender == "unknown"
    assert Speaker("flite", "slt").gender == "female"


def test_unknown_espeak_variant_is_an_error(cache: Path) -> None:
    odd = Speaker("espeak-ng", "en-us", "m99")
    with pytest.raises(WeightspaceValueError, match=r"`variant` 'm99' .* choose from \[.*'f1'"):
        _build(words=["go"], speakers=[odd])


def test_engine_failure_is_reported(cache: Path) -> None:
    nobody = Speaker("espeak-ng", "xq")  # well-formed, but espeak-ng has no such voice
    with pytest.raises(WeightspaceError, match=r"espeak-ng failed for the word 'go'.*'xq'"):
        _build(words=["go"], speakers=[nobody])
    assert _cache_files(cache) == []
