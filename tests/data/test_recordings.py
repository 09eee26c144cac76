"""Tests of the recordings (stamp captions, sound effects, Sonic Pi samples): data set and build."""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import pytest
import soundfile as sf
import torch

from weightspace import CacheError, MissingSourceError, WeightspaceValueError
from weightspace.data import _clips, _recording_build, _recordings
from weightspace.data._recordings import Recordings, sonic_pi_samples, sound_effects, stamp_captions

RATE = 16000


def _tone(
    seconds: float, freq: float, rate: int, *, lead: float = 0.0, tail: float = 0.0
) -> npt.NDArray[np.float64]:
    t = np.arange(round(seconds * rate)) / rate
    body = 0.3 * np.sin(2 * np.pi * freq * t)
    return np.concatenate([np.zeros(round(lead * rate)), body, np.zeros(round(tail * rate))])


def _write(path: Path, x: npt.NDArray[np.float64], rate: int, channels: int = 1) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    data = np.stack([x] * channels, axis=1) if channels > 1 else x
    fmt = {".ogg": "OGG", ".flac": "FLAC", ".wav": "WAV"}[path.suffix]
    sub = {"OGG": "VORBIS", "FLAC": "PCM_16", "WAV": "PCM_16"}[fmt]
    sf.write(str(path), data, rate, format=fmt, subtype=sub)


@pytest.fixture
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    root = tmp_path / "cache"
    monkeypatch.setenv("WEIGHTSPACE_CACHE", str(root))
    return root


@pytest.fixture
def stamps(tmp_path: Path) -> Path:
    """A tiny stamps tree: 5 stamps in 3 categories, captions in fr/ru/en, 3 sound effects."""
    root = tmp_path / "stamps"
    layout = {
        "animals/birds/owl": {"fr": 440, "ru": 550, "en": 660, "effect": 1000},
        "animals/birds/duck": {"fr": 445, "ru": 555, "effect": 1200},
        "household/kettle": {"fr": 450, "en": 670, "effect": 1500},
        "household/cup": {"ru": 560},
        "plants/rose": {"en": 680},
    }
    for stamp, recordings in layout.items():
        path = root / stamp
        path.parent.mkdir(parents=True, exist_ok=True)
        path.with_suffix(".png").write_bytes(b"png")
        path.with_suffix(".txt").write_text("A thing.\nfr.utf8=Une chose.\n")
        for lang, freq in recordings.items():
            if lang == "effect":
                _write(path.with_suffix(".ogg"), _tone(0.6, freq, 22050), 22050)
            else:
                suffix = "_desc.ogg" if lang == "en" else f"_desc_{lang}.ogg"
                rate, channels = (44100, 2) if lang == "ru" else (RATE, 1)
                x = _tone(0.5, freq, rate, lead=0.3, tail=0.2)
                _write(path.parent / (path.name + suffix), x, rate, channels)
    # Things that must be ignored: a caption with a doubled extension, spoken numbers, a
    # localised sound of a stamp, and a sound with no stamp image.
    _write(root / "household" / "cup_desc_da.ogg.ogg", _tone(0.3, 300, RATE), RATE)
    math_dir = root / "symbols" / "math"
    math_dir.mkdir(parents=True)
    (math_dir / "7.png").write_bytes(b"png")
    _write(math_dir / "7.ogg", _tone(0.3, 300, RATE), RATE)
    _write(root / "animals" / "birds" / "owl_en_GB.ogg", _tone(0.3, 300, RATE), RATE)
    _write(root / "household" / "orphan.ogg", _tone(0.3, 300, RATE), RATE)
    return root


@pytest.fixture
def samples(tmp_path: Path) -> Path:
    """A Sonic-Pi-like folder: short hits, a long loop, a silent file, a README."""
    root = tmp_path / "samples"
    root.mkdir()
    _write(root / "bd_one.flac", _tone(0.2, 60, 44100), 44100)
    _write(root / "bd_two.flac", _tone(0.3, 70, 44100), 44100)
    _write(root / "loop_long.flac", _tone(4.0, 500, 44100), 44100)
    _write(root / "loop_quiet.flac", np.zeros(44100), 44100)
    _write(root / "tabla_na.wav", _tone(0.4, 900, 22050), 22050)
    (root / "README.md").write_text("samples")
    return root


# --- stamp captions ---------------------------------------------------------------------------


def test_captions_labels_items_and_categories(stamps: Path, cache: Path) -> None:
    ds = stamp_captions(["fr", "ru", "en"], path=stamps, progress=False)
    assert isinstance(ds, Recordings)
    assert ds.classes == ("fr", "ru", "en")
    assert ds.counts() == {"fr": 3, "ru": 3, "en": 3}
    assert ds.items == (
        "animals/birds/duck",
        "animals/birds/owl",
        "household/cup",
        "household/kettle",
        "plants/rose",
    )
    assert ds.item_category == (
        "animals/birds",
        "animals/birds",
        "household",
        "household",
        "plants",
    )
    # Ordered by stamp, then by the order of `languages`.
    assert ds.item_name[:2] == ("animals/birds/duck", "animals/birds/duck")
    assert [ds.classes[int(y)] for y in ds.labels[:2]] == ["fr", "ru"]
    assert ds.waveforms.shape == (9, round(1.5 * RATE))
    assert ds.waveforms.dtype == torch.float32
    peaks = ds.waveforms.abs().amax(1)
    torch.testing.assert_close(peaks, torch.full((9,), 0.9), atol=2e-3, rtol=0)
    assert ds.source == "tuxpaint-stamps-default"


def test_captions_are_trimmed_centred_and_resampled(stamps: Path, cache: Path) -> None:
    ds = stamp_captions(["ru"], path=stamps, progress=False).subset(items="animals/birds/owl")
    wave = ds.waveforms[0].numpy()
    loud = np.flatnonzero(np.abs(wave) > 0.05)
    # 0.5 s of tone centred in 1.5 s: it starts about 0.5 s in, whatever the silence around it.
    assert abs(loud[0] / RATE - 0.5) < 0.03 and abs(loud[-1] / RATE - 1.0) < 0.03
    assert -0.25 < float(ds.offset[0]) < -0.15  # 0.3 s of leading silence, 0.5 s of padding
    # The 44.1 kHz stereo file keeps its 550 Hz tone at 16 kHz.
    spectrum = np.abs(np.fft.rfft(wave))
    assert abs(np.argmax(spectrum) * RATE / len(wave) - 550) < 3


def test_captions_filters_and_errors(stamps: Path, cache: Path) -> None:
    ds = stamp_captions(["fr"], categories=["household"], path=stamps, progress=False)
    assert ds.items == ("household/kettle",) and len(ds) == 1
    assert (
        len(stamp_captions(["fr"], categories=["animals/birds"], path=stamps, progress=False)) == 2
    )
    with pytest.raises(WeightspaceValueError, match=r"`languages` has \['de'\].*'fr': 3"):
        stamp_captions(["de"], path=stamps, progress=False)
    with pytest.raises(WeightspaceValueError, match="`categories` has 'trees'"):
        stamp_captions(["fr"], categories=["trees"], path=stamps, progress=False)
    with pytest.raises(WeightspaceValueError, match="no stamp in `categories`"):
        stamp_captions(["fr"], categories=["plants"], path=stamps, progress=False)
    with pytest.raises(WeightspaceValueError, match="got the string 'fr'"):
        stamp_captions("fr", path=stamps, progress=False)
    with pytest.raises(WeightspaceValueError, match="duplicates"):
        stamp_captions(["fr", "fr"], path=stamps, progress=False)
    with pytest.raises(WeightspaceValueError, match="not a language code"):
        stamp_captions(["French"], path=stamps, progress=False)
    with pytest.raises(WeightspaceValueError, match=r"`duration` must be in \(0, 30\]"):
        stamp_captions(["fr"], duration=0, path=stamps, progress=False)
    with pytest.raises(WeightspaceValueError, match="`sample_rate` must be in"):
        stamp_captions(["fr"], sample_rate=10, path=stamps, progress=False)
    with pytest.raises(WeightspaceValueError, match="`path` must be an existing folder"):
        stamp_captions(["fr"], path=stamps / "nope", progress=False)


def test_missing_packages_name_the_apt_package(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(_recordings, "_STAMPS_DIR", tmp_path / "absent")
    monkeypatch.setattr(_recordings, "_SONIC_PI_DIR", tmp_path / "absent")
    with pytest.raises(MissingSourceError, match="apt-get install -y tuxpaint-stamps-default"):
        stamp_captions(progress=False)
    with pytest.raises(MissingSourceError, match="apt-get install -y tuxpaint-stamps-default"):
        sound_effects(progress=False)
    with pytest.raises(MissingSourceError, match="apt-get install -y sonic-pi-samples"):
        sonic_pi_samples(progress=False)


# --- sound effects ----------------------------------------------------------------------------


def test_sound_effects_keep_stamp_sounds_only(stamps: Path, cache: Path) -> None:
    ds = sound_effects(path=stamps, progress=False)
    assert ds.items == ("animals/birds/duck", "animals/birds/owl", "household/kettle")
    assert ds.classes == ("animals", "household")
    assert ds.labels.tolist() == [0, 0, 1]
    assert ds.waveforms.shape == (3, RATE)
    deep = sound_effects(depth=2, path=stamps, progress=False)
    assert deep.classes == ("animals/birds", "household")
    birds = sound_effects(["animals"], path=stamps, progress=False)
    assert birds.classes == ("animals",) and len(birds) == 2
    with pytest.raises(WeightspaceValueError, match="`depth` must be >= 1"):
        sound_effects(depth=0, path=stamps, progress=False)


# --- Sonic Pi samples -------------------------------------------------------------------------


def test_sonic_pi_windows_offsets_and_silence(
    samples: Path, cache: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING, logger="weightspace.data._recording_build"):
        ds = sonic_pi_samples(hop=0.5, max_clips_per_file=4, path=samples, progress=False)
    assert "loop_quiet.flac is silent" in caplog.text
    assert ds.classes == ("bd", "loop", "tabla")
    assert ds.counts() == {"bd": 2, "loop": 4, "tabla": 1}
    loop = ds.subset(items="loop_long")
    # 4 s of tone gives 7 windows of 1 s every 0.5 s; 4 are kept, spread from start to end.
    assert loop.offset.tolist() == pytest.approx([0.0, 1.0, 2.0, 3.0], abs=0.02)
    one = sonic_pi_samples(["loop"], path=samples, progress=False)
    assert one.offset.tolist() == pytest.approx([1.5], abs=0.02)  # the middle second
    assert one.items == ("loop_long", "loop_quiet") and len(one) == 1
    with pytest.raises(WeightspaceValueError, match=r"`categories` has \['kick'\]"):
        sonic_pi_samples(["kick"], path=samples, progress=False)
    with pytest.raises(WeightspaceValueError, match="`max_clips_per_file` must be >= 1"):
        sonic_pi_samples(hop=0.5, max_clips_per_file=0, path=samples, progress=False)
    with pytest.raises(WeightspaceValueError, match="`hop` must be in"):
        sonic_pi_samples(hop=-1.0, path=samples, progress=False)


# --- the data set -----------------------------------------------------------------------------


def test_split_is_by_item_seeded_and_stratified(samples: Path, cache: Path) -> None:
    ds = sonic_pi_samples(hop=0.5, max_clips_per_file=4, path=samples, progress=False)
    train, test = ds.split((0.5, 0.5), seed=3)
    assert set(train.item_name).isdisjoint(test.item_name)
    assert len(train) + len(test) == len(ds)
    # Each class is cut separately: bd has two files, one on each side.
    assert train.counts()["bd"] == 1 and test.counts()["bd"] == 1
    again = ds.split((0.5, 0.5), seed=3)
    assert torch.equal(again[0].offset, train.offset) and again[0].item_name == train.item_name
    assert {ds.split((0.5, 0.5), seed=s)[0].item_name for s in range(8)} != {train.item_name}
    with pytest.raises(WeightspaceValueError, match="must sum to 1"):
        ds.split((0.5, 0.4))
    with pytest.raises(WeightspaceValueError, match="positive numbers"):
        ds.split((1.5, -0.5))
    with pytest.raises(WeightspaceValueError, match="`seed` must be a non-negative integer"):
        ds.split((0.5, 0.5), seed=-1)


def test_subset_filters_and_errors(stamps: Path, cache: Path) -> None:
    ds = stamp_captions(["fr", "ru", "en"], path=stamps, progress=False)
    assert ds.subset(categories="animals").items == ds.items  # ids are not renumbered
    assert len(ds.subset(categories="animals")) == 5
    assert set(ds.subset(categories="animals").category) == {"animals/birds"}
    assert len(ds.subset(classes=["fr"], categories=["household"])) == 1
    assert len(ds.subset(indices=torch.tensor([0, -1]))) == 2
    assert len(ds.subset(indices=ds.labels == 0)) == 3
    assert len(ds.subset(classes="en")) == 3
    with pytest.raises(WeightspaceValueError, match=r"`classes` has names.*\['de'\]"):
        ds.subset(classes="de")
    with pytest.raises(WeightspaceValueError, match="`items` has names"):
        ds.subset(items=["owl"])
    with pytest.raises(WeightspaceValueError, match="match no item"):
        ds.subset(categories="trees")
    with pytest.raises(WeightspaceValueError, match="must lie in"):
        ds.subset(indices=[100])
    with pytest.raises(WeightspaceValueError, match="bool mask must have shape"):
        ds.subset(indices=torch.ones(3, dtype=torch.bool))


def test_getitem_transform_repr_and_checks(samples: Path, cache: Path) -> None:
    ds = sonic_pi_samples(["bd"], path=samples, progress=False)
    wave, label = ds[1]
    assert wave.shape == (1, RATE) and int(label) == 0
    assert ds.with_transform(lambda w: w * 0)[0][0].abs().sum() == 0
    assert ds.transform is None
    assert repr(ds) == "Recordings(sonic-pi-samples: 2 clips, 1 classes, 2 items, 1 s at 16000 Hz)"
    assert ds.duration == 1.0
    with pytest.raises(WeightspaceValueError, match="`labels` must have shape"):
        dataclasses.replace(ds, labels=ds.labels[:1])
    with pytest.raises(WeightspaceValueError, match="`item_category` must have one entry"):
        dataclasses.replace(ds, item_category=())


# --- the cache --------------------------------------------------------------------------------


def test_cache_is_reused_deterministic_and_follows_sources(
    samples: Path, cache: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    first = sonic_pi_samples(hop=0.5, path=samples, progress=False)
    files = sorted((cache / "recordings").glob("*.safetensors"))
    assert len(files) == 1 and files[0].with_name(files[0].name + ".json").exists()
    calls: list[int] = []
    real = _recording_build._decode_all

    def counting(*args: Any, **kwargs: Any) -> Any:
        calls.append(1)
        return real(*args, **kwargs)

    monkeypatch.setattr(_recording_build, "_decode_all", counting)
    again = sonic_pi_samples(hop=0.5, path=samples, progress=False)
    assert calls == [] and torch.equal(again.waveforms, first.waveforms)
    assert again.items == first.items and again.item_category == first.item_category
    # Another cache folder builds the same bytes.
    monkeypatch.setenv("WEIGHTSPACE_CACHE", str(tmp_path / "other"))
    sonic_pi_samples(hop=0.5, path=samples, progress=False)
    other = sorted((tmp_path / "other" / "recordings").glob("*.safetensors"))
    assert other[0].name == files[0].name and other[0].read_bytes() == files[0].read_bytes()
    # A changed source file (another size) gives a new cache entry.
    _write(samples / "bd_one.flac", _tone(0.25, 60, 44100), 44100)
    sonic_pi_samples(hop=0.5, path=samples, progress=False)
    assert len(list((tmp_path / "other" / "recordings").glob("*.safetensors"))) == 2
    assert calls == [1, 1]


def test_corrupted_cache_is_rebuilt_or_reported(samples: Path, cache: Path) -> None:
    first = sonic_pi_samples(["bd"], path=samples, progress=False)
    path = next((cache / "recordings").glob("*.safetensors"))
    path.write_bytes(b"garbage")
    rebuilt = sonic_pi_samples(["bd"], path=samples, progress=False)
    assert torch.equal(rebuilt.waveforms, first.waveforms)
    with pytest.raises(CacheError, match="cannot be read"):
        _clips.load_cached(path.with_name("missing.safetensors"))


# --- the Debian packages (skipped where they are not installed) -------------------------------

needs_stamps = pytest.mark.skipif(
    not _recordings._STAMPS_DIR.is_dir(), reason="tuxpaint-stamps-default is not installed"
)
needs_sonic_pi = pytest.mark.skipif(
    not _recordings._SONIC_PI_DIR.is_dir(), reason="sonic-pi-samples is not installed"
)


@needs_stamps
def test_real_stamp_captions_and_effects() -> None:
    ds = stamp_captions(["fr", "ru"], categories=["animals/birds"], progress=False)
    assert ds.counts()["fr"] >= 30 and ds.counts()["ru"] >= 30
    assert all(c.startswith("animals/birds") for c in ds.category)
    train, test = ds.split((0.8, 0.2), seed=0)
    assert set(train.item_name).isdisjoint(test.item_name)
    fx = sound_effects(["animals/birds"], progress=False)
    assert fx.classes == ("animals",) and len(fx) >= 15
    assert "animals/birds/owl" in fx.items


@needs_sonic_pi
def test_real_sonic_pi_samples() -> None:
    ds = sonic_pi_samples(progress=False)
    assert ds.classes == _recordings.SONIC_PI_CATEGORIES
    assert len(ds.items) == 165
    assert ds.counts()["tabla"] == 26 and ds.counts()["elec"] == 25
