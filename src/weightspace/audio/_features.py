"""Log-mel and log-power spectrograms: the one audio front end of the library.

Written in plain PyTorch (no ``torchaudio`` needed) and differentiable, so that a synthesizer's
parameters can be fitted through it. The mel filter bank and the short-time transform follow
``torchaudio.transforms.MelSpectrogram``'s defaults exactly (HTK mel scale, no filter
normalisation, periodic Hann window, centred frames with reflection padding), so features
computed here equal torchaudio's bit for bit.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from weightspace._errors import WeightspaceValueError

__all__ = ["LogMel", "log_mel", "log_spectrogram", "mel_filterbank", "power_spectrogram"]


def _positive_int(value: object, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise WeightspaceValueError(f"`{name}` must be a positive integer, got {value!r}")
    return value


def _hz_to_mel(hz: float) -> float:
    return 2595.0 * math.log10(1.0 + hz / 700.0)


def mel_filterbank(
    n_freqs: int,
    *,
    sample_rate: int,
    n_mels: int,
    f_min: float = 0.0,
    f_max: float | None = None,
) -> Tensor:
    """Triangular filters on the HTK mel scale, one column per mel band.

    The band centres are equally spaced in mels between ``f_min`` and ``f_max``; each filter
    rises linearly from the previous centre to its own and falls to the next (peak 1, no area
    normalisation). This is ``torchaudio.functional.melscale_fbanks`` with its defaults.

    Args:
        n_freqs: Number of frequency bins of the spectrogram (``n_fft // 2 + 1``), equally
            spaced from 0 Hz to ``sample_rate / 2``.
        sample_rate: Sampling rate of the audio, in Hz.
        n_mels: Number of mel bands.
        f_min: Lowest edge of the first band, in Hz.
        f_max: Highest edge of the last band, in Hz; ``None`` means ``sample_rate / 2``.

    Returns:
        A float32 matrix ``[n_freqs, n_mels]``: ``power.transpose(-1, -2) @ bank`` maps a
        power spectrogram ``[..., n_freqs, frames]`` to mel bands.

    Raises:
        WeightspaceValueError: if a size is not a positive integer or the frequencies are not
            ``0 <= f_min < f_max <= sample_rate / 2``.

    Example:
        >>> from weightspace.audio import mel_filterbank
        >>> bank = mel_filterbank(257, sample_rate=16000, n_mels=32, f_min=40.0)
        >>> tuple(bank.shape), float(bank.max()) <= 1.0
        ((257, 32), True)
    """
    _positive_int(n_freqs, "n_freqs")
    _positive_int(sample_rate, "sample_rate")
    _positive_int(n_mels, "n_mels")
    top = sample_rate / 2 if f_max is None else float(f_max)
    if not 0.0 <= f_min < top <= sample_rate / 2:
        raise WeightspaceValueError(
            f"`f_min` and `f_max` must satisfy 0 <= f_min < f_max <= sample_rate / 2 "
            f"({sample_rate / 2:g} Hz), got f_min={f_min!r}, f_max={f_max!r}"
        )
    freqs = torch.linspace(0, sample_rate // 2, n_freqs)
    mels = torch.linspace(_hz_to_mel(f_min), _hz_to_mel(top), n_mels + 2)
    centres = 700.0 * (10.0 ** (mels / 2595.0) - 1.0)
    widths = centres[1:] - centres[:-1]
    slopes = centres.unsqueeze(0) - freqs.unsqueeze(1)  # [n_freqs, n_mels + 2]
    down = (-1.0 * slopes[:, :-2]) / widths[:-1]
    up = slopes[:, 2:] / widths[1:]
    return torch.clamp(torch.minimum(down, up), min=0.0)


def power_spectrogram(waves: Tensor, *, n_fft: int, hop_length: int) -> Tensor:
    """Squared magnitude of the short-time Fourier transform.

    Frames of ``n_fft`` samples under a periodic Hann window, every ``hop_length`` samples,
    centred on the frame time (the signal is padded by ``n_fft // 2`` samples at both ends, by
    reflection).

    Args:
        waves: Waveforms, any float dtype.
        n_fft: Frame length and FFT size, in samples.
        hop_length: Samples between the starts of successive frames.

    Returns:
        The power (squared amplitude, in the units of ``waves`` squared).

    Shapes:
        - ``waves``: ``[..., samples]``, with ``samples > n_fft // 2``.
        - output: ``[..., n_fft // 2 + 1, samples // hop_length + 1]`` (frequency bins from
          0 Hz to the Nyquist frequency, then frames).

    Raises:
        WeightspaceValueError: if ``waves`` is not a floating-point tensor with at least one
            dimension, or a size is not a positive integer.

    Example:
        >>> import torch
        >>> from weightspace.audio import power_spectrogram
        >>> power_spectrogram(torch.zeros(2, 1600), n_fft=400, hop_length=160).shape
        torch.Size([2, 201, 11])
    """
    _positive_int(n_fft, "n_fft")
    _positive_int(hop_length, "hop_length")
    if not isinstance(waves, Tensor) or waves.ndim == 0 or not waves.is_floating_point():
        got = (
            f"{waves.dtype} of shape {tuple(waves.shape)}"
            if isinstance(waves, Tensor)
            else type(waves).__name__
        )
        raise WeightspaceValueError(
            f"`waves` must be a floating-point tensor [..., samples], got {got}; "
            "convert integer samples with `waves.float() / 32768` first"
        )
    lead = waves.shape[:-1]
    flat = waves.reshape(-1, waves.shape[-1])
    spec = torch.stft(
        flat,
        n_fft=n_fft,
        hop_length=hop_length,
        win_length=n_fft,
        window=torch.hann_window(n_fft, dtype=waves.dtype, device=waves.device),
        center=True,
        pad_mode="reflect",
        normalized=False,
        onesided=True,
        return_complex=True,
    )
    power = spec.abs().pow(2.0)
    return power.reshape(*lead, *power.shape[-2:])


def log_spectrogram(
    waves: Tensor, *, n_fft: int = 400, hop_length: int = 160, eps: float = 1e-6
) -> Tensor:
    """Natural log of the power spectrogram, ``log(power + eps)``.

    The defaults are 25 ms frames every 10 ms at 16 kHz.

    Args:
        waves: Waveforms.
        n_fft: Frame length and FFT size, in samples.
        hop_length: Samples between the starts of successive frames.
        eps: Floor added to the power before the log (in the units of ``waves`` squared).

    Returns:
        The log power, in nepers of power (``log`` of squared amplitude).

    Shapes:
        - ``waves``: ``[..., samples]``.
        - output: ``[..., n_fft // 2 + 1, samples // hop_length + 1]``.

    Example:
        >>> import torch
        >>> from weightspace.audio import log_spectrogram
        >>> out = log_spectrogram(torch.zeros(1600))
        >>> tuple(out.shape), round(float(out[0, 0]), 3)  # log(1e-6)
        ((201, 11), -13.816)
    """
    return (power_spectrogram(waves, n_fft=n_fft, hop_length=hop_length) + eps).log()


def _standardize(features: Tensor, eps: float) -> Tensor:
    dims = (-2, -1)
    return (features - features.mean(dim=dims, keepdim=True)) / (
        features.std(dim=dims, keepdim=True) + eps
    )


class LogMel(nn.Module):
    """Log-mel spectrogram as a module: ``log(mel power + eps)``, optionally standardised.

    The filter bank is a (non-persistent) buffer, so the module moves with ``.to(device)`` and
    adds nothing to a state dict. Gradients flow to the waveforms.

    Args:
        sample_rate: Sampling rate of the audio, in Hz.
        n_fft: Frame length and FFT size, in samples (512 at 16 kHz: 32 ms).
        hop_length: Samples between frames (320 at 16 kHz: 20 ms).
        n_mels: Number of mel bands.
        f_min: Lowest band edge, in Hz.
        f_max: Highest band edge, in Hz; ``None`` means ``sample_rate / 2``.
        eps: Floor added to the mel power before the log, and (with ``standardize``) to the
            standard deviation it divides by.
        standardize: Rescale each clip to zero mean and unit (sample) standard deviation over
            its bands and frames, so that recording levels do not matter.

    Shapes:
        - input: waveforms ``[..., samples]`` at ``sample_rate``.
        - output: ``[..., n_mels, samples // hop_length + 1]``, natural log of mel power (or
          unitless when standardised).

    Example:
        >>> import torch
        >>> from weightspace.audio import LogMel
        >>> features = LogMel(sample_rate=16000, n_mels=32, standardize=True)
        >>> out = features(torch.randn(4, 16000, generator=torch.Generator().manual_seed(0)))
        >>> tuple(out.shape), round(float(out[0].mean()), 3), round(float(out[0].std()), 3)
        ((4, 32, 51), -0.0, 1.0)
    """

    filterbank: Tensor

    def __init__(
        self,
        *,
        sample_rate: int = 16000,
        n_fft: int = 512,
        hop_length: int = 320,
        n_mels: int = 32,
        f_min: float = 40.0,
        f_max: float | None = None,
        eps: float = 1e-5,
        standardize: bool = False,
    ) -> None:
        super().__init__()
        self.sample_rate = _positive_int(sample_rate, "sample_rate")
        self.n_fft = _positive_int(n_fft, "n_fft")
        self.hop_length = _positive_int(hop_length, "hop_length")
        self.n_mels = _positive_int(n_mels, "n_mels")
        if not eps > 0.0:
            raise WeightspaceValueError(f"`eps` must be a positive number, got {eps!r}")
        self.eps = float(eps)
        self.standardize = bool(standardize)
        bank = mel_filterbank(
            n_fft // 2 + 1, sample_rate=sample_rate, n_mels=n_mels, f_min=f_min, f_max=f_max
        )
        self.f_min = float(f_min)
        self.f_max = sample_rate / 2 if f_max is None else float(f_max)
        self.register_buffer("filterbank", bank, persistent=False)

    def forward(self, waves: Tensor) -> Tensor:
        """Log-mel features of ``waves`` (see the class docstring for shapes)."""
        power = power_spectrogram(waves, n_fft=self.n_fft, hop_length=self.hop_length)
        bank = self.filterbank.to(power.dtype)
        mel = torch.matmul(power.transpose(-1, -2), bank).transpose(-1, -2)
        out = torch.log(mel + self.eps)
        return _standardize(out, self.eps) if self.standardize else out

    def extra_repr(self) -> str:
        """The settings, as shown by ``repr``."""
        return (
            f"sample_rate={self.sample_rate}, n_fft={self.n_fft}, hop_length={self.hop_length}, "
            f"n_mels={self.n_mels}, f_min={self.f_min:g}, f_max={self.f_max:g}, "
            f"eps={self.eps:g}, standardize={self.standardize}"
        )


def log_mel(
    waves: Tensor,
    *,
    sample_rate: int = 16000,
    n_fft: int = 512,
    hop_length: int = 320,
    n_mels: int = 32,
    f_min: float = 40.0,
    f_max: float | None = None,
    eps: float = 1e-5,
    standardize: bool = False,
) -> Tensor:
    """Log-mel spectrogram of waveforms: the functional form of :class:`LogMel`.

    The defaults (32 bands from 40 Hz to 8 kHz, 32 ms frames every 20 ms at 16 kHz) are those
    of the speech and recording examples. Build a :class:`LogMel` once instead when calling
    this many times (it keeps the filter bank).

    Args:
        waves: Waveforms at ``sample_rate``.
        sample_rate: Sampling rate, in Hz.
        n_fft: Frame length and FFT size, in samples.
        hop_length: Samples between frames.
        n_mels: Number of mel bands.
        f_min: Lowest band edge, in Hz.
        f_max: Highest band edge, in Hz; ``None`` means ``sample_rate / 2``.
        eps: Floor added to the mel power before the log (and to the standard deviation when
            standardising).
        standardize: Rescale each clip to zero mean and unit standard deviation over its bands
            and frames.

    Returns:
        The features, natural log of mel power (unitless when standardised).

    Shapes:
        - ``waves``: ``[..., samples]``.
        - output: ``[..., n_mels, samples // hop_length + 1]``.

    Example:
        >>> import torch
        >>> from weightspace.audio import log_mel
        >>> t = torch.arange(16000) / 16000
        >>> out = log_mel(torch.sin(2 * torch.pi * 440 * t))
        >>> tuple(out.shape), int(out.mean(dim=1).argmax())  # band 5 holds 440 Hz
        ((32, 51), 5)
    """
    module = LogMel(
        sample_rate=sample_rate,
        n_fft=n_fft,
        hop_length=hop_length,
        n_mels=n_mels,
        f_min=f_min,
        f_max=f_max,
        eps=eps,
        standardize=standardize,
    ).to(waves.device if isinstance(waves, Tensor) else "cpu")
    result: Tensor = module(waves)
    return result
