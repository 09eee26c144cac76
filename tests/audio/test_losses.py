"""Spectral distances and the pitch estimator."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from weightspace import ShapeMismatchError, WeightspaceValueError
from weightspace.audio import Synth, cents, estimate_pitch, mel_distance, spectral_distance

SR = 16000
T = torch.arange(SR) / SR


def _sine(f: float, n: int = SR) -> torch.Tensor:
    return torch.sin(2 * math.pi * f * torch.arange(n) / SR)


@pytest.mark.parametrize("distance", ["spectral", "mel"])
def test_zero_on_identical_inputs_and_symmetric(distance: str) -> None:
    synth = Synth(duration=0.5)
    a = synth.render(synth.sample(6, seed=0))
    b = synth.render(synth.sample(6, seed=1))

    def d(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return spectral_distance(x, y) if distance == "spectral" else mel_distance(x, y, SR)

    assert torch.equal(d(a, a), torch.zeros(6))
    assert torch.allclose(d(a, b), d(b, a), rtol=1e-6, atol=0)
    assert bool((d(a, b) > 0).all())


@settings(max_examples=15, deadline=None)
@given(st.integers(0, 2**31 - 1), st.floats(0.0, 1.0))
def test_spectral_distance_is_symmetric_on_random_sounds(seed: int, scale: float) -> None:
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(2, 2048, generator=gen)
    y = scale * torch.randn(2, 2048, generator=gen)
    assert torch.allclose(spectral_distance(x, y), spectral_distance(y, x), rtol=1e-6)
    assert torch.equal(spectral_distance(x, x), torch.zeros(2))


def test_distance_grows_with_the_pitch_interval() -> None:
    ref = _sine(440.0)
    values = [float(spectral_distance(ref, _sine(440 * 2 ** (c / 1200)))) for c in (5, 100, 700)]
    assert values[0] < values[1] < values[2]
    mels = [float(mel_distance(ref, _sine(440 * 2 ** (c / 1200)), SR)) for c in (5, 100, 700)]
    assert mels[0] < mels[1] < mels[2]


def test_broadcasting_and_scalar_output() -> None:
    a = torch.randn(3, 4000, generator=torch.Generator().manual_seed(0))
    one = a[:1]
    d = spectral_distance(a, one)
    assert d.shape == (3,) and float(d[0]) == 0.0
    assert spectral_distance(a[0], a[1]).shape == ()
    assert mel_distance(a[0], a[1], SR).shape == ()
    # Frame lengths longer than the sound are skipped.
    short = spectral_distance(a[:, :100], a[:, 100:200], fft_sizes=(2048, 64))
    assert torch.allclose(short, spectral_distance(a[:, :100], a[:, 100:200], fft_sizes=(64,)))


def test_weights_select_the_terms() -> None:
    a, b = _sine(440.0), 0.5 * _sine(440.0)
    lin = spectral_distance(a, b, log_weight=0.0)
    log = spectral_distance(a, b, linear_weight=0.0)
    assert float(spectral_distance(a, b)) == pytest.approx(float(lin + log), rel=1e-6)


def test_errors() -> None:
    with pytest.raises(ShapeMismatchError, match="same number of samples"):
        spectral_distance(torch.zeros(100), torch.zeros(99))
    with pytest.raises(ShapeMismatchError, match="same batch size"):
        spectral_distance(torch.zeros(2, 100), torch.zeros(3, 100))
    with pytest.raises(WeightspaceValueError, match="`x` must be a"):
        spectral_distance(torch.zeros(1, 1, 100), torch.zeros(100))
    with pytest.raises(WeightspaceValueError, match="`log_weight` must be a non-negative"):
        spectral_distance(torch.zeros(100), torch.zeros(100), log_weight=-1.0)
    with pytest.raises(WeightspaceValueError, match="`fft_sizes` must be frame lengths"):
        spectral_distance(torch.zeros(100), torch.zeros(100), fft_sizes=(8,))
    with pytest.raises(WeightspaceValueError, match="`sample_rate` must be a positive integer"):
        mel_distance(torch.zeros(100), torch.zeros(100), 0)
    with pytest.raises(WeightspaceValueError, match="`fmin` and `fmax`"):
        estimate_pitch(torch.zeros(100), SR, fmin=500.0, fmax=100.0)


@pytest.mark.parametrize("f0", [55.0, 110.0, 261.63, 440.0, 987.77])
def test_pitch_of_sines_and_squares_within_15_cents(f0: float) -> None:
    for wave in (_sine(f0), torch.sign(_sine(f0)) * 0.5):
        est = estimate_pitch(wave, SR)
        assert abs(float(cents(est, torch.tensor(f0)))) < 15, (f0, float(est))


def test_pitch_of_synth_notes() -> None:
    synth = Synth()
    pitches = [40.0, 52.0, 64.0, 76.0]
    x = synth.from_physical(
        torch.tensor(
            [
                [p, 0.2, 0.8, 0.0, 0.0, 1.0, 0.0, 0.01, 0.2, 0.7, 0.1, 0.8, 4000, 1.0, 1.0, -6]
                for p in pitches
            ],
            dtype=torch.float64,
        )
    )
    est = estimate_pitch(synth.render(x), SR)
    want = 440.0 * 2 ** ((torch.tensor(pitches) - 69) / 12)
    assert cents(est, want).abs().max() < 15


def test_silence_and_noise_are_unvoiced() -> None:
    noise = torch.randn(2, SR, generator=torch.Generator().manual_seed(0))
    out = estimate_pitch(torch.cat([torch.zeros(1, SR), noise]), SR)
    assert bool(torch.isnan(out).all())


def test_cents() -> None:
    assert float(cents(torch.tensor(880.0), torch.tensor(440.0))) == pytest.approx(1200.0)
    assert float(cents(torch.tensor(440.0), torch.tensor(466.1638))) == pytest.approx(
        -100.0, abs=1e-3
    )
