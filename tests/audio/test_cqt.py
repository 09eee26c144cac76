"""The constant-Q transform, its normalised-log scaling and harmonic stacking."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from weightspace import WeightspaceValueError
from weightspace.audio import CQT, cqt_frequencies, harmonic_stack, normalized_log


@pytest.fixture(scope="module")
def cqt() -> CQT:
    return CQT()  # Basic Pitch's: 309 bins of a third of a semitone from 27.5 Hz


def _tone(freq: float, n: int = 43844, rate: int = 22050) -> torch.Tensor:
    return torch.sin(2 * math.pi * freq * torch.arange(n) / rate)


@pytest.mark.parametrize(("freq", "bin_"), [(55.0, 36), (440.0, 144), (1760.0, 216), (3520.0, 252)])
def test_a_tone_peaks_in_its_bin(cqt: CQT, freq: float, bin_: int) -> None:
    spec = cqt(_tone(freq))
    assert spec.shape == (309, 172)
    assert int(spec[:, 86].argmax()) == bin_
    assert cqt_frequencies(309, fmin=27.5, bins_per_octave=36)[bin_] == pytest.approx(freq)


def test_magnitude_is_the_square_root_of_power_and_scales_linearly(cqt: CQT) -> None:
    x = _tone(261.6) + 0.3 * _tone(392.0)
    mag = cqt(x)
    assert torch.allclose(mag**2, cqt.power(x), rtol=1e-5, atol=1e-8)
    # Linear up to float32 rounding, relative to the loudest bin.
    assert float((cqt(3.0 * x) - 3.0 * mag).abs().max()) < 1e-4 * float(3.0 * mag.max())
    batched = cqt(torch.stack([x, 2 * x]))
    assert batched.shape == (2, 309, 172)
    assert torch.allclose(batched[0], mag, atol=1e-5 * float(mag.max()))


def test_frames_are_centred_on_hops() -> None:
    small = CQT(sample_rate=8000, hop_length=64, fmin=110.0, n_bins=24, bins_per_octave=12)
    assert small(torch.zeros(4096)).shape == (24, 4096 // 64 + 1)
    click = torch.zeros(4096)
    click[64 * 30] = 1.0
    energy = small(click).sum(0)
    assert int(energy.argmax()) == 30


def test_kernels_are_l1_normalised(cqt: CQT) -> None:
    k = cqt.kernels[:, 0].double()
    magnitude = torch.sqrt(k[:36] ** 2 + k[36:] ** 2)
    assert torch.allclose(magnitude.sum(1), torch.ones(36, dtype=torch.float64), atol=1e-6)


def test_cqt_validation() -> None:
    with pytest.raises(WeightspaceValueError, match="`hop_length` must be divisible by"):
        CQT(hop_length=100)
    with pytest.raises(WeightspaceValueError, match="above the Nyquist frequency"):
        CQT(n_bins=400)
    with pytest.raises(WeightspaceValueError, match="`fmin` must be a positive frequency"):
        CQT(fmin=0.0)
    with pytest.raises(WeightspaceValueError, match="`n_bins` must be a positive integer"):
        CQT(n_bins=0)


def test_normalized_log_scales_each_example_to_unit_range() -> None:
    power = torch.tensor([[1.0, 10.0, 100.0], [5.0, 5.0, 5.0]])
    assert normalized_log(power).tolist() == [[0.0, 0.5, 1.0], [0.0, 0.0, 0.0]]
    silent = normalized_log(torch.zeros(2, 3, 4))
    assert torch.equal(silent, torch.zeros(2, 3, 4))


@given(
    st.lists(st.floats(min_value=1e-6, max_value=1e6), min_size=2, max_size=30),
    st.floats(min_value=1e-3, max_value=1e3),
)
def test_normalized_log_ignores_a_gain(values: list[float], gain: float) -> None:
    power = torch.tensor([values], dtype=torch.float64)
    a, b = normalized_log(power, eps=0.0), normalized_log(gain * power, eps=0.0)
    assert torch.allclose(a, b, atol=1e-9)
    assert float(a.min()) == 0.0 and float(a.max()) in (0.0, 1.0)


def test_harmonic_stack_shifts_by_log_harmonics() -> None:
    spec = torch.arange(120.0).view(1, 1, 120)
    stack = harmonic_stack(spec, [0.5, 1, 2, 3], bins_per_semitone=3, n_output_bins=60)
    assert stack.shape == (1, 4, 1, 60)
    # Shifts of round(36 * log2(h)): -36, 0, 36, 57 bins.
    assert stack[0, :, 0, 40].tolist() == [4.0, 40.0, 76.0, 97.0]
    assert stack[0, 0, 0, :36].tolist() == [0.0] * 36  # below the spectrum: zeros
    assert stack[0, 3, 0, 59].tolist() == 116.0


@given(st.integers(min_value=1, max_value=4), st.integers(min_value=10, max_value=80))
def test_harmonic_stack_fundamental_channel_is_the_input(bps: int, n_out: int) -> None:
    spec = torch.randn(2, 3, 100)
    stack = harmonic_stack(spec, [1, 2], bins_per_semitone=bps, n_output_bins=n_out)
    assert torch.equal(stack[:, 0], spec[..., :n_out])
    shift = 12 * bps
    keep = max(0, min(n_out, 100 - shift))
    assert torch.equal(stack[:, 1, :, :keep], spec[..., shift : shift + keep])
    assert torch.equal(stack[:, 1, :, keep:], torch.zeros_like(stack[:, 1, :, keep:]))


def test_harmonic_stack_validation() -> None:
    with pytest.raises(WeightspaceValueError, match="`harmonics` must be a non-empty list"):
        harmonic_stack(torch.zeros(1, 1, 10), [], bins_per_semitone=1, n_output_bins=5)
    with pytest.raises(WeightspaceValueError, match="`harmonics` must be a non-empty list"):
        harmonic_stack(torch.zeros(1, 1, 10), [0.0], bins_per_semitone=1, n_output_bins=5)


def test_cqt_frequencies_double_every_octave() -> None:
    f = cqt_frequencies(73, fmin=27.5, bins_per_octave=36)
    assert np.allclose(f[36::36] / f[:-36:36], 2.0)
