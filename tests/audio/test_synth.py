"""The synthesizer: pitch, envelope, band-limiting, gradients and the parameter vector."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from weightspace import WeightspaceValueError
from weightspace.audio import SYNTH_PARAMS, Param, Synth, adsr

PURE = {
    "sine": 0.0,
    "saw": 0.0,
    "square": 0.0,
    "noise": 0.0,
    "fm_index": 0.0,
    "attack": 0.002,
    "decay": 0.005,
    "sustain": 1.0,
    "release": 0.05,
    "gate": 0.9,
    "cutoff": 8000.0,
    "resonance": 0.5,
    "filter_env": 0.0,
    "gain": 0.0,
}


def _tone(synth: Synth, **values: float) -> torch.Tensor:
    return synth.render(synth.from_physical({**PURE, **values}))


def test_parameter_vector_is_documented() -> None:
    synth = Synth()
    assert synth.num_params == len(SYNTH_PARAMS) == 16
    assert synth.param_names[:5] == ("pitch", "sine", "saw", "square", "noise")
    assert len(set(synth.param_names)) == 16
    for p in SYNTH_PARAMS:
        assert p.unit and p.doc and p.low < p.high


@pytest.mark.parametrize("midi", [45.0, 57.0, 69.0, 81.0])
def test_sine_has_its_spectral_peak_at_the_pitch(midi: float) -> None:
    synth = Synth(sample_rate=16000, duration=1.0)
    audio = _tone(synth, pitch=midi, sine=1.0)
    spectrum = torch.fft.rfft(audio * torch.hann_window(len(audio))).abs()
    freqs = torch.fft.rfftfreq(len(audio), 1 / 16000)
    expected = 440.0 * 2 ** ((midi - 69) / 12)
    assert abs(float(freqs[spectrum.argmax()]) - expected) <= 1.0  # 1 Hz bins
    # A pure sine: almost all the energy within 5 Hz of the pitch.
    power = spectrum**2
    assert float(power[(freqs - expected).abs() < 5].sum() / power.sum()) > 0.999


def test_sine_at_440_peaks_at_bin_440_with_unit_amplitude() -> None:
    audio = _tone(Synth(), pitch=69.0, sine=1.0)
    assert int(torch.fft.rfft(audio).abs().argmax()) == 440
    # Unit amplitude times the low-pass's gain at 440 Hz (cutoff 8 kHz, Q 0.5): 0.99698.
    x = 440.0 / 8000.0
    expected = 1.0 / math.sqrt((1 - x**2) ** 2 + (x / 0.5) ** 2)
    assert audio.abs().max().item() == pytest.approx(expected, abs=1e-3)


@pytest.mark.parametrize("shape", ["saw", "square"])
@pytest.mark.parametrize("midi", [48.0, 72.0, 84.0])
def test_saw_and_square_are_harmonic_and_barely_alias(shape: str, midi: float) -> None:
    audio = _tone(Synth(), pitch=midi, **{shape: 1.0})
    f0 = 440.0 * 2 ** ((midi - 69) / 12)
    power = torch.fft.rfft(audio * torch.hann_window(len(audio))).abs() ** 2
    freqs = torch.fft.rfftfreq(len(audio), 1 / 16000)
    harmonic = ((freqs / f0 - (freqs / f0).round()).abs() * f0) < 4
    # Aliased partials fall between the harmonics: less than 0.1 % of the energy there.
    assert float(power[~harmonic].sum() / power.sum()) < 1e-3
    # The waveform has overtones (the second or third harmonic within 30 dB of the first).
    near = [float(power[(freqs - k * f0).abs() < 2].max()) for k in (1, 2, 3)]
    assert max(near[1:]) > near[0] * 1e-3


def test_square_has_only_odd_harmonics_and_saw_has_all() -> None:
    f0 = 220.0
    for shape, even_strong in (("square", False), ("saw", True)):
        audio = _tone(Synth(), pitch=57.0, **{shape: 1.0})
        spec = torch.fft.rfft(audio * torch.hann_window(len(audio))).abs()
        freqs = torch.fft.rfftfreq(len(audio), 1 / 16000)
        h2 = float(spec[(freqs - 2 * f0).abs() < 2].max() / spec[(freqs - f0).abs() < 2].max())
        assert (h2 > 0.1) is even_strong, (shape, h2)


def test_adsr_segments_have_the_stated_lengths() -> None:
    sr = 1000
    t = torch.arange(2000) / sr
    a, d, s, r, g = 0.1, 0.2, 0.4, 0.3, 0.8
    env = adsr(t, *(torch.tensor([v]) for v in (a, d, s, r, g)))[0]
    assert env[0] == 0
    assert int(env.argmax()) == 100  # peak 1 reached at t = attack
    assert float(env[100]) == pytest.approx(1.0)
    assert float(env[50]) == pytest.approx(0.5)  # linear rise
    assert float(env[300]) == pytest.approx(s)  # sustain reached at attack + decay
    assert float(env[200]) == pytest.approx(1 - (1 - s) / 2)
    assert torch.allclose(env[300:800], torch.full((500,), s))  # held until the gate
    assert float(env[950]) == pytest.approx(s / 2)  # half-way through the release
    assert float(env[1100]) == pytest.approx(0.0, abs=1e-6)  # silent at gate + release
    assert bool((env[1100:] == 0).all())


def test_adsr_released_during_the_attack_falls_from_its_level() -> None:
    t = torch.tensor([0.05, 0.1, 0.15])
    one = [torch.tensor([v]) for v in (0.2, 0.1, 0.5, 0.1, 0.1)]
    env = adsr(t, *one)[0]
    # Gate at 0.1 s during a 0.2 s attack: level 0.5 at the gate, 0 at 0.2 s.
    assert env.tolist() == pytest.approx([0.25, 0.5, 0.25])


def test_rendered_envelope_follows_the_gate() -> None:
    synth = Synth()
    audio = _tone(synth, pitch=69.0, sine=1.0, attack=0.002, gate=0.3, release=0.1)
    frames = audio.reshape(100, 160).abs().amax(1)  # 10 ms frames
    assert float(frames[10:28].min()) > 0.95
    assert float(frames[41:].max()) < 1e-3  # silent after gate + release (0.4 s)


def test_render_is_deterministic_batched_and_shaped() -> None:
    synth = Synth(duration=0.5)
    x = synth.sample(5, seed=3)
    a = synth.render(x)
    assert a.shape == (5, 8000) and a.dtype == torch.float32
    assert torch.equal(a, synth.render(x))
    assert torch.allclose(a[2], synth.render(x[2]), atol=1e-5)
    assert torch.equal(synth.sample(5, seed=3), x)
    assert not torch.equal(synth.sample(5, seed=4), x)
    assert bool(torch.isfinite(a).all())


def test_every_continuous_parameter_gets_a_finite_nonzero_gradient() -> None:
    synth = Synth(duration=0.5)
    point = synth.from_physical(
        {
            "pitch": 57.3,
            "sine": 0.5,
            "saw": 0.4,
            "square": 0.3,
            "noise": 0.2,
            "fm_ratio": 1.7,
            "fm_index": 1.5,
            "attack": 0.03,
            "decay": 0.1,
            "sustain": 0.6,
            "release": 0.1,
            "gate": 0.3,
            "cutoff": 1500.0,
            "resonance": 3.0,
            "filter_env": 1.5,
            "gain": -6.0,
        }
    ).requires_grad_(True)
    target = synth.render(synth.sample(1, seed=0)[0]).detach()
    from weightspace.audio import spectral_distance

    spectral_distance(synth.render(point), target).backward()
    grad = point.grad
    assert grad is not None
    assert bool(torch.isfinite(grad).all())
    zero = [n for n, g in zip(synth.param_names, grad.tolist(), strict=True) if g == 0.0]
    assert zero == []


def test_filter_cutoff_darkens_the_sound() -> None:
    synth = Synth()
    freqs = torch.fft.rfftfreq(16000, 1 / 16000)

    def centroid(cutoff: float) -> float:
        audio = _tone(synth, pitch=48.0, saw=1.0, cutoff=cutoff, resonance=0.7)
        p = torch.fft.rfft(audio).abs() ** 2
        return float((p * freqs).sum() / p.sum())

    assert centroid(300.0) < centroid(1000.0) < centroid(5000.0)


def test_resonance_boosts_the_cutoff_frequency() -> None:
    synth = Synth()
    freqs = torch.fft.rfftfreq(16000, 1 / 16000)

    def level_at(q: float) -> float:
        audio = _tone(synth, pitch=36.0, saw=1.0, cutoff=1000.0, resonance=q)
        p = torch.fft.rfft(audio).abs()
        return float(p[(freqs - 1000).abs() < 60].max())

    assert level_at(8.0) > 4 * level_at(0.7)


def test_gain_in_decibels() -> None:
    synth = Synth()
    loud = _tone(synth, pitch=69.0, sine=1.0, gain=0.0)
    quiet = _tone(synth, pitch=69.0, sine=1.0, gain=-20.0)
    assert float(quiet.abs().max() / loud.abs().max()) == pytest.approx(0.1, rel=1e-3)


@settings(max_examples=60, deadline=None)
@given(st.lists(st.floats(0.0, 1.0), min_size=16, max_size=16))
def test_normalisation_round_trip(values: list[float]) -> None:
    synth = Synth()
    x = torch.tensor(values, dtype=torch.float32)
    physical = synth.to_physical(x)
    for p in SYNTH_PARAMS:
        assert p.low - 1e-4 * abs(p.low) - 1e-6 <= float(physical[p.name]) <= p.high * 1.0001 + 1e-6
    back = synth.from_physical({k: v.double() for k, v in physical.items()})
    assert torch.allclose(back, x, atol=1e-5)
    stacked = torch.stack([physical[n] for n in synth.param_names])
    assert torch.allclose(synth.from_physical(stacked), x, atol=1e-5)


@settings(max_examples=60, deadline=None)
@given(st.floats(1e-3, 1e3), st.floats(1.001, 1e3), st.floats(0.0, 1.0))
def test_log_param_maps_the_box_onto_its_range(low: float, factor: float, u: float) -> None:
    p = Param("x", low, low * factor, "Hz", "log", "test")
    v = p.to_physical(torch.tensor(u, dtype=torch.float64))
    assert low * (1 - 1e-9) <= float(v) <= low * factor * (1 + 1e-9)
    assert float(p.to_normalized(v)) == pytest.approx(u, abs=1e-9)


def test_from_physical_fills_defaults_and_clips() -> None:
    synth = Synth()
    x = synth.from_physical({"pitch": 100.0, "gain": -15.0})
    assert x[0] == 1.0  # pitch above the range is clipped
    assert x[-1] == pytest.approx(0.5)
    assert torch.allclose(x[1:-1], torch.full((14,), 0.5))


def test_errors_name_the_argument() -> None:
    synth = Synth()
    with pytest.raises(WeightspaceValueError, match=r"`params` must have shape \[B, 16\]"):
        synth.render(torch.zeros(3, 15))
    with pytest.raises(WeightspaceValueError, match="`params` must be finite"):
        synth.render(torch.full((16,), math.nan))
    with pytest.raises(WeightspaceValueError, match=r"unknown parameter names \['pich'\]"):
        synth.from_physical({"pich": 60.0})
    with pytest.raises(WeightspaceValueError, match="`sample_rate` must be in"):
        Synth(sample_rate=100)
    with pytest.raises(WeightspaceValueError, match="`filter_fft` must be a power of two"):
        Synth(filter_fft=500)
    with pytest.raises(WeightspaceValueError, match="needs `low` > 0"):
        Param("x", 0.0, 1.0, "s", "log", "bad")
    with pytest.raises(WeightspaceValueError, match="`n` must be a positive integer"):
        synth.sample(0)
