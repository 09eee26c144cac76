"""A constant-Q transform in PyTorch, its normalised-log scaling and harmonic stacking.

The transform follows the recursive-downsampling algorithm of Schörkhuber & Klapuri (2010) as
nnAudio's ``CQT2010v2`` implements it, which is the front end of Basic Pitch (Bittner et al.,
ICASSP 2022): one bank of complex kernels covers the top octave; the signal is low-pass filtered
and halved once per lower octave and the same bank is applied again with half the hop. Kernels,
filter and scaling are computed here from their definitions (periodic Hann windows, L1-normalised
kernels, a ``firwin2`` half-band filter, a final ``sqrt(kernel length)`` gain as librosa), so the
transform needs neither nnAudio nor TensorFlow.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import Tensor, nn
from torch.nn import functional as F

from weightspace._errors import WeightspaceValueError

__all__ = ["CQT", "cqt_frequencies", "harmonic_stack", "normalized_log"]


def _positive_int(value: object, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise WeightspaceValueError(f"`{name}` must be a positive integer, got {value!r}")
    return value


def cqt_frequencies(n_bins: int, *, fmin: float, bins_per_octave: int) -> np.ndarray:
    """Centre frequencies of a constant-Q transform, ``fmin * 2 ** (k / bins_per_octave)``.

    Args:
        n_bins: Number of bins.
        fmin: Frequency of the lowest bin, in Hz.
        bins_per_octave: Bins per octave.

    Returns:
        A float64 array ``[n_bins]`` of frequencies in Hz.

    Example:
        >>> from weightspace.audio import cqt_frequencies
        >>> [round(float(f), 2) for f in cqt_frequencies(3, fmin=27.5, bins_per_octave=12)]
        [27.5, 29.14, 30.87]
    """
    _positive_int(n_bins, "n_bins")
    _positive_int(bins_per_octave, "bins_per_octave")
    return float(fmin) * 2.0 ** (np.arange(n_bins) / float(bins_per_octave))


def _octave_kernels(
    q: float, sample_rate: float, fmin: float, n_filters: int, bins_per_octave: int
) -> tuple[np.ndarray, int]:
    """Complex time-domain kernels of one octave, centred in a power-of-two frame."""
    n_fft = int(2 ** math.ceil(math.log2(math.ceil(q * sample_rate / fmin))))
    freqs = fmin * 2.0 ** (np.arange(n_filters) / float(bins_per_octave))
    kernels = np.zeros((n_filters, n_fft), dtype=np.complex128)
    for k, freq in enumerate(freqs):
        length = math.ceil(q * sample_rate / freq)
        start = math.ceil(n_fft / 2.0 - length / 2.0) - length % 2
        n = np.arange(-(length // 2) - length % 2, length // 2)
        # Periodic Hann window of `length` samples (scipy's get_window("hann", fftbins=True)).
        window = 0.5 - 0.5 * np.cos(2.0 * np.pi * np.arange(length) / length)
        sig = window * np.exp(1j * 2.0 * np.pi * freq / sample_rate * n) / length
        kernels[k, start : start + length] = sig / np.abs(sig).sum()
    return kernels, n_fft


def _halfband_filter(n_taps: int = 256, transition: float = 0.001) -> np.ndarray:
    """Linear-phase low-pass filter at half the Nyquist frequency (frequency sampling)."""
    from scipy.signal import firwin2

    pass_max = 0.5 / (1.0 + transition)
    stop_min = 0.5 * (1.0 + transition)
    taps: np.ndarray = firwin2(n_taps, [0.0, pass_max, stop_min, 1.0], [1.0, 1.0, 0.0, 0.0])
    return taps


class CQT(nn.Module):
    """Constant-Q magnitude spectrogram by recursive octave downsampling.

    Frame ``t`` is centred on sample ``t * hop_length`` (reflection padding), so an input of
    ``n`` samples gives ``n // hop_length + 1`` frames. ``hop_length`` must be divisible by
    ``2 ** (n_octaves - 1)``. The kernels and the low-pass filter are buffers, not parameters.

    Args:
        sample_rate: Sampling rate of the input, in Hz.
        hop_length: Samples between frames.
        fmin: Centre frequency of the lowest bin, in Hz.
        n_bins: Number of frequency bins.
        bins_per_octave: Bins per octave.

    Shapes:
        - input: ``[batch, samples]`` or ``[samples]``
        - output: ``[batch, n_bins, frames]`` (``[n_bins, frames]`` for a 1-D input)

    Example:
        >>> import math, torch
        >>> from weightspace.audio import CQT
        >>> cqt = CQT(sample_rate=8000, hop_length=64, fmin=110.0, n_bins=24, bins_per_octave=12)
        >>> t = torch.arange(4096) / 8000
        >>> spec = cqt(torch.sin(2 * math.pi * 220.0 * t))
        >>> tuple(spec.shape), int(spec[:, 32].argmax())  # 220 Hz is one octave above fmin
        ((24, 65), 12)
    """

    kernels: Tensor
    lowpass: Tensor
    gains: Tensor

    def __init__(
        self,
        *,
        sample_rate: int = 22050,
        hop_length: int = 256,
        fmin: float = 27.5,
        n_bins: int = 309,
        bins_per_octave: int = 36,
    ) -> None:
        super().__init__()
        self.sample_rate = _positive_int(sample_rate, "sample_rate")
        self.hop_length = _positive_int(hop_length, "hop_length")
        self.n_bins = _positive_int(n_bins, "n_bins")
        self.bins_per_octave = _positive_int(bins_per_octave, "bins_per_octave")
        if not (isinstance(fmin, (int, float)) and math.isfinite(fmin) and fmin > 0):
            raise WeightspaceValueError(f"`fmin` must be a positive frequency in Hz, got {fmin!r}")
        self.fmin = float(fmin)
        self.n_octaves = math.ceil(n_bins / bins_per_octave)
        top = self.fmin * 2.0 ** ((n_bins - 1) / bins_per_octave)
        if top > sample_rate / 2:
            raise WeightspaceValueError(
                f"the top bin ({top:.1f} Hz) of `n_bins`={n_bins} is above the Nyquist frequency "
                f"({sample_rate / 2:g} Hz); use fewer bins or a lower `fmin`"
            )
        if hop_length % 2 ** (self.n_octaves - 1):
            raise WeightspaceValueError(
                f"`hop_length` must be divisible by 2 ** (n_octaves - 1) = "
                f"{2 ** (self.n_octaves - 1)} for {n_bins} bins at {bins_per_octave} per octave, "
                f"got {hop_length}; use a hop of a multiple of {2 ** (self.n_octaves - 1)}"
            )
        q = 1.0 / (2.0 ** (1.0 / bins_per_octave) - 1.0)
        remainder = n_bins % bins_per_octave
        top_octave_min = self.fmin * 2.0 ** (self.n_octaves - 1)
        steps = (bins_per_octave if remainder == 0 else remainder) - 1
        fmax_top = top_octave_min * 2.0 ** (steps / bins_per_octave)
        fmin_top = fmax_top / 2.0 ** (1.0 - 1.0 / bins_per_octave)
        n_filters = min(bins_per_octave, n_bins)
        kernels, self.n_fft = _octave_kernels(q, sample_rate, fmin_top, n_filters, bins_per_octave)
        stacked = np.concatenate([kernels.real, kernels.imag], axis=0)[:, None, :]
        self.register_buffer("kernels", torch.tensor(stacked, dtype=torch.float32))
        self.register_buffer(
            "lowpass", torch.tensor(_halfband_filter(), dtype=torch.float32).view(1, 1, -1)
        )
        freqs = cqt_frequencies(n_bins, fmin=self.fmin, bins_per_octave=bins_per_octave)
        lengths = np.ceil(q * sample_rate / freqs)
        self.register_buffer("gains", torch.tensor(np.sqrt(lengths), dtype=torch.float32))

    def _octave(self, x: Tensor, hop: int) -> Tensor:
        pad = self.n_fft // 2
        spec = F.conv1d(F.pad(x, (pad, pad), mode="reflect"), self.kernels, stride=hop)
        half = spec.shape[1] // 2
        return spec[:, :half] ** 2 + spec[:, half:] ** 2  # power of the top-octave bank

    def power(self, audio: Tensor) -> Tensor:
        """Constant-Q power ``|X|**2`` (the square of :meth:`forward`).

        Args:
            audio: Samples ``[batch, samples]`` or ``[samples]``.

        Returns:
            Power ``[batch, n_bins, frames]`` (no batch axis for a 1-D input).
        """
        squeeze = audio.dim() == 1
        x = (audio[None] if squeeze else audio).unsqueeze(1).float()
        pad = (self.lowpass.shape[-1] - 1) // 2
        hop = self.hop_length
        octaves = [self._octave(x, hop)]
        for _ in range(self.n_octaves - 1):
            hop //= 2
            x = F.conv1d(F.pad(x, (pad, pad)), self.lowpass, stride=2)
            octaves.append(self._octave(x, hop))
        power = torch.cat(octaves[::-1], dim=1)[:, -self.n_bins :]
        power = power * (self.gains**2)[:, None]
        return power[0] if squeeze else power

    def forward(self, audio: Tensor) -> Tensor:
        """Constant-Q magnitude ``|X|``.

        Args:
            audio: Samples ``[batch, samples]`` or ``[samples]``.

        Returns:
            Magnitude ``[batch, n_bins, frames]`` (no batch axis for a 1-D input).
        """
        return self.power(audio).sqrt()


def normalized_log(power: Tensor, *, eps: float = 1e-10) -> Tensor:
    """Decibels rescaled to ``[0, 1]`` per example: ``(db - min) / max(db - min)``.

    ``db = 10 * log10(power + eps)``; the minimum and maximum are taken over all but the first
    axis, and an example whose decibels are all equal maps to zeros. This is Basic Pitch's
    ``NormalizedLog`` layer.

    Args:
        power: Power values ``[batch, ...]`` (non-negative).
        eps: Added before the logarithm.

    Returns:
        A tensor of the same shape with values in ``[0, 1]``.

    Example:
        >>> import torch
        >>> from weightspace.audio import normalized_log
        >>> normalized_log(torch.tensor([[1.0, 10.0, 100.0]])).tolist()
        [[0.0, 0.5, 1.0]]
    """
    db = 10.0 * torch.log10(power + eps)
    dims = tuple(range(1, db.dim()))
    shifted = db - db.amin(dim=dims, keepdim=True)
    top = shifted.amax(dim=dims, keepdim=True)
    return torch.where(top == 0, torch.zeros_like(shifted), shifted / top.clamp_min(1e-30))


def harmonic_stack(
    spec: Tensor, harmonics: list[float], *, bins_per_semitone: int, n_output_bins: int
) -> Tensor:
    """Shift a log-frequency spectrogram so that harmonic ``h`` of each bin lines up with it.

    Channel ``i`` holds the spectrogram shifted down by ``round(12 * bins_per_semitone *
    log2(harmonics[i]))`` bins (up for sub-harmonics), zero-filled, and cropped to the first
    ``n_output_bins`` bins; a convolution over the stack then sees a note's partials at one
    frequency position (Bittner et al. 2017, "Deep salience representations").

    Args:
        spec: Log-frequency spectrogram ``[batch, frames, bins]``.
        harmonics: Positive harmonic numbers, such as ``[0.5, 1, 2, 3]``.
        bins_per_semitone: Frequency resolution of ``spec``.
        n_output_bins: Number of bins to keep.

    Returns:
        ``[batch, len(harmonics), frames, n_output_bins]``.

    Example:
        >>> import torch
        >>> from weightspace.audio import harmonic_stack
        >>> spec = torch.arange(48.0).view(1, 1, 48)
        >>> stack = harmonic_stack(spec, [0.5, 1, 2], bins_per_semitone=1, n_output_bins=24)
        >>> stack[0, :, 0, 12].tolist()  # bin 12 with its sub-octave (0), itself, its octave (24)
        [0.0, 12.0, 24.0]
    """
    if not harmonics or any(not (h > 0) for h in harmonics):
        raise WeightspaceValueError(
            f"`harmonics` must be a non-empty list of positive numbers, got {harmonics!r}"
        )
    _positive_int(n_output_bins, "n_output_bins")
    n_bins = spec.shape[-1]
    channels = []
    for h in harmonics:
        shift = round(12.0 * bins_per_semitone * math.log2(h))
        if shift > 0:
            shifted = F.pad(spec[..., shift:], (0, min(shift, n_bins)))
        elif shift < 0:
            shifted = F.pad(spec[..., :shift], (min(-shift, n_bins), 0))
        else:
            shifted = spec
        channels.append(shifted[..., :n_output_bins])
    return torch.stack(channels, dim=1)
