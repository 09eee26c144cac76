"""The shared audio front end: exact agreement with the examples' former feature code."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

from weightspace import WeightspaceValueError
from weightspace.audio import LogMel, log_mel, log_spectrogram, mel_filterbank, power_spectrogram

# Values of the feature code that projects 6 (torchaudio's MelSpectrogram, log, per-clip
# standardisation) and 1 (log power spectrogram pooled to 40 x 25) used before the shared front
# end, on the signal of `_signal()`. They pin the numbers behind the committed results.
PROJECT6_COLUMN = [-1.8902891874313354, -0.8839517831802368, -1.9032156467437744,
                   -1.1235309839248657, -1.3606511354446411, -0.041509076952934265,
                   -0.5721223950386047, -0.5225426554679871, -1.1434917449951172,
                   -0.970719575881958, -0.4233611524105072, 0.32665959000587463,
                   -0.7104083895683289, -0.4649767279624939, 1.295592188835144,
                   0.29874420166015625, -0.4374955892562866, -0.08622667193412781,
                   -0.44561439752578735, 0.6437771916389465, 0.42755764722824097,
                   0.625190794467926, 0.011748350225389004, 0.07313734292984009,
                   1.4136219024658203, 1.4462884664535522, 0.28799113631248474,
                   0.25399357080459595, 2.325021505355835, 1.7055755853652954,
                   0.5200398564338684, 1.0958435535430908]  # fmt: skip
PROJECT6_ROW = [-2.3797335624694824, -1.006284475326538, -1.057253122329712, -1.3479602336883545,
                -1.6644573211669922, -0.8626285195350647, -1.083423376083374, -1.1396138668060303,
                -1.4009188413619995, -1.8857165575027466, -1.7251734733581543, -1.235831618309021,
                -1.0307285785675049, -1.3881182670593262, -1.7524243593215942, -1.3612385988235474,
                -0.9214157462120056, -1.0544538497924805, -1.345923900604248, -1.3984700441360474,
                -0.9587397575378418, -0.578226625919342, -1.0591131448745728, -1.4040639400482178,
                -0.8193383812904358, -0.9399774670600891]  # fmt: skip
PROJECT6_ABS_SUM = 1333.5387658627587
PROJECT1_FEATURES = [-2.8383913040161133, -1.4551984071731567, -1.2830928564071655,
                     -2.5130581855773926, -2.0071449279785156, -0.8846717476844788,
                     -1.6423012018203735, -2.1683785915374756, -2.3406293392181396,
                     -2.404568910598755, -1.6012083292007446, -1.1434637308120728]  # fmt: skip
PROJECT1_SUM = 770.4998172274209


def _signal() -> torch.Tensor:
    """Two half-second clips at 16 kHz built from integers (exact in float32): a sawtooth-like
    pattern, the second with a 25 ms ramp envelope."""
    n = 8000
    i = torch.arange(2 * n)
    x = (((i * 37) % 101 - 50) / 50.0).float().reshape(2, n)
    x[1] = x[1] * ((i[:n] % 400) / 400.0)
    return x


def _close(actual: torch.Tensor, expected: list[float]) -> None:
    # FFT libraries may round differently on other processors: pin to float32 precision.
    torch.testing.assert_close(actual, torch.tensor(expected), rtol=2e-6, atol=2e-6)


def test_log_mel_reproduces_the_project6_features() -> None:
    out = LogMel(n_mels=32, f_min=40.0, f_max=8000.0, standardize=True)(_signal())
    assert out.shape == (2, 32, 26) and out.dtype == torch.float32
    _close(out[0, :, 7], PROJECT6_COLUMN)
    _close(out[1, 3, :], PROJECT6_ROW)
    assert float(out.double().abs().sum()) == pytest.approx(PROJECT6_ABS_SUM, rel=1e-7)
    assert torch.equal(log_mel(_signal(), standardize=True), out)


def test_log_spectrogram_reproduces_the_project1_features() -> None:
    logp = log_spectrogram(_signal(), n_fft=400, hop_length=160, eps=1e-6)[:, 1:201]
    feats = F.adaptive_avg_pool2d(logp.unsqueeze(1), (40, 25)).flatten(1)
    _close(feats[1, :12], PROJECT1_FEATURES)
    assert float(feats.double().sum()) == pytest.approx(PROJECT1_SUM, rel=1e-7)
    x = _signal()
    spec = torch.stft(
        x, n_fft=400, hop_length=160, window=torch.hann_window(400), return_complex=True
    )
    assert torch.equal(log_spectrogram(x), (spec.abs().square() + 1e-6).log())


@pytest.mark.parametrize(
    ("sample_rate", "n_fft", "hop", "n_mels", "f_min", "f_max"),
    [
        (16000, 512, 320, 32, 40.0, 8000.0),
        (22050, 2048, 512, 128, 0.0, None),
        (8000, 256, 80, 40, 20.0, 3800.0),
    ],
)
def test_bit_identical_to_torchaudio(
    sample_rate: int, n_fft: int, hop: int, n_mels: int, f_min: float, f_max: float | None
) -> None:
    torchaudio = pytest.importorskip("torchaudio")
    x = torch.randn(3, 2, sample_rate // 2, generator=torch.Generator().manual_seed(1))
    reference = torchaudio.transforms.MelSpectrogram(
        sample_rate=sample_rate,
        n_fft=n_fft,
        hop_length=hop,
        n_mels=n_mels,
        f_min=f_min,
        f_max=f_max,
    )
    ours = LogMel(
        sample_rate=sample_rate,
        n_fft=n_fft,
        hop_length=hop,
        n_mels=n_mels,
        f_min=f_min,
        f_max=f_max,
    )
    assert torch.equal(ours.filterbank, reference.mel_scale.fb)
    assert torch.equal(ours(x), torch.log(reference(x) + 1e-5))


def test_shapes_batch_dims_and_state_dict() -> None:
    x = torch.randn(2, 3, 4000, generator=torch.Generator().manual_seed(0))
    module = LogMel(n_mels=24)
    out = module(x)
    assert out.shape == (2, 3, 24, 4000 // 320 + 1)
    assert torch.equal(out[1, 2], module(x[1, 2]))
    assert module.state_dict() == {}
    assert power_spectrogram(x, n_fft=400, hop_length=100).shape == (2, 3, 201, 41)
    assert "n_mels=24" in repr(module) and "standardize=False" in repr(module)


def test_gradients_reach_the_waveform() -> None:
    x = torch.randn(4000, generator=torch.Generator().manual_seed(0), requires_grad=True)
    log_mel(x).sum().backward()
    assert (
        x.grad is not None and bool(torch.isfinite(x.grad).all()) and float(x.grad.abs().sum()) > 0
    )


def test_filterbank_peaks_at_the_band_centres() -> None:
    bank = mel_filterbank(257, sample_rate=16000, n_mels=32, f_min=40.0)
    assert bank.shape == (257, 32) and float(bank.min()) == 0.0
    peaks = bank.argmax(dim=0)
    assert bool((peaks[1:] >= peaks[:-1]).all())  # band centres rise with the band index
    assert float(bank.sum(dim=1)[20:].max()) <= 1.0 + 1e-6  # neighbouring triangles sum to <= 1


def test_a_tone_lands_in_its_band() -> None:
    t = torch.arange(16000) / 16000
    bank = mel_filterbank(257, sample_rate=16000, n_mels=32, f_min=40.0)
    for hz in (300.0, 1000.0, 4000.0):
        out = log_mel(torch.sin(2 * math.pi * hz * t))
        bin_ = round(hz / (8000 / 256))
        assert int(out.mean(dim=1).argmax()) == int(bank[bin_].argmax()), hz


@settings(max_examples=25, deadline=None)
@given(gain=st.floats(0.01, 100.0))
def test_standardised_features_ignore_the_recording_level(gain: float) -> None:
    x = torch.randn(2, 3200, generator=torch.Generator().manual_seed(3))
    module = LogMel(standardize=True, eps=1e-9)
    torch.testing.assert_close(module(gain * x), module(x), rtol=1e-3, atol=1e-3)


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda: LogMel(n_mels=0), "`n_mels` must be a positive integer, got 0"),
        (lambda: LogMel(hop_length=1.5), "`hop_length` must be a positive integer, got 1.5"),
        (lambda: LogMel(eps=0.0), "`eps` must be a positive number, got 0.0"),
        (lambda: LogMel(f_max=9000.0), "f_min=40.0, f_max=9000.0"),
        (lambda: mel_filterbank(10, sample_rate=100, n_mels=4, f_min=60.0), "got f_min=60.0"),
        (lambda: log_mel(torch.zeros(100, dtype=torch.int16)), "got torch.int16 of shape (100,)"),
        (lambda: power_spectrogram([0.0], n_fft=4, hop_length=1), "got list"),  # type: ignore[arg-type]
    ],
)
def test_errors_name_the_argument(call: object, message: str) -> None:
    with pytest.raises(WeightspaceValueError) as info:
        call()  # type: ignore[operator]
    assert message in str(info.value)
