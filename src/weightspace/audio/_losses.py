"""Distances between sounds: multi-resolution STFT and log-mel distances, and pitch in cents.

The distances compare batches of waveforms item by item and return one value per item, so
that a matcher can rank a population in one call; every one of them is differentiable, zero
on identical inputs and symmetric in its two arguments. :func:`estimate_pitch` is a YIN-style
autocorrelation estimator (de Cheveigné & Kawahara, JASA 2002) for the pitch-error metric; it
is not differentiable.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor

from weightspace._errors import ShapeMismatchError, WeightspaceValueError
from weightspace.audio._features import log_mel

__all__ = ["cents", "estimate_pitch", "mel_distance", "spectral_distance"]

_EPS = 1e-5


def _pair(x: Tensor, y: Tensor) -> tuple[Tensor, Tensor, bool]:
    for arg, v in (("x", x), ("y", y)):
        if not isinstance(v, Tensor) or v.ndim not in (1, 2):
            shape = tuple(v.shape) if isinstance(v, Tensor) else type(v).__name__
            raise WeightspaceValueError(f"`{arg}` must be a [B, T] or [T] tensor, got {shape}")
    single = x.ndim == 1 and y.ndim == 1
    xb = x if x.ndim == 2 else x.unsqueeze(0)
    yb = y if y.ndim == 2 else y.unsqueeze(0)
    if xb.shape[-1] != yb.shape[-1]:
        raise ShapeMismatchError(
            f"`x` and `y` must have the same number of samples, got {xb.shape[-1]} and "
            f"{yb.shape[-1]}; crop or pad one of them"
        )
    if xb.shape[0] != yb.shape[0] and 1 not in (xb.shape[0], yb.shape[0]):
        raise ShapeMismatchError(
            f"`x` and `y` must have the same batch size (or one of them 1), got "
            f"{xb.shape[0]} and {yb.shape[0]}"
        )
    b = max(xb.shape[0], yb.shape[0])
    return xb.float().expand(b, -1), yb.float().expand(b, -1), single


def _magnitude(x: Tensor, n_fft: int) -> Tensor:
    window = torch.hann_window(n_fft, dtype=x.dtype)
    spec = torch.stft(
        x, n_fft, hop_length=n_fft // 4, window=window, center=True, return_complex=True
    )
    power = spec.real**2 + spec.imag**2
    return torch.sqrt(power + 1e-12) / window.sum()


def spectral_distance(
    x: Tensor,
    y: Tensor,
    *,
    fft_sizes: Sequence[int] = (2048, 1024, 512, 256, 128, 64),
    linear_weight: float = 1.0,
    log_weight: float = 1.0,
) -> Tensor:
    r"""Multi-resolution STFT distance between two batches of sounds.

    For each frame length :math:`n` (hop :math:`n/4`, Hann window), with magnitudes
    :math:`S_n` normalised by the window's sum (a unit sine peaks at 0.5),

    .. math::

        d_n(x, y) = w_{\text{lin}} \operatorname{mean} |S_n(x) - S_n(y)|
                  + w_{\text{log}} \operatorname{mean}
                    |\log(S_n(x) + \epsilon) - \log(S_n(y) + \epsilon)|,

    and the distance is the mean of :math:`d_n` over the frame lengths (the DDSP loss of
    Engel et al., ICLR 2020, with :math:`\epsilon = 10^{-5}`). Symmetric, zero on identical
    inputs, differentiable.

    Args:
        x: Sounds, ``[B, T]`` or ``[T]``.
        y: Sounds, ``[B, T]`` or ``[T]``; a batch of 1 on either side is broadcast.
        fft_sizes: Frame lengths, each at least 16; those longer than the sounds are
            skipped (the shortest is kept if all are).
        linear_weight: Weight of the linear-magnitude term, non-negative.
        log_weight: Weight of the log-magnitude term, non-negative.

    Returns:
        One distance per item, ``[B]`` (a scalar tensor for two ``[T]`` inputs).

    Raises:
        WeightspaceValueError: on a bad shape, weight or frame length.
        ShapeMismatchError: if the two sides have different lengths or batch sizes.

    Example:
        >>> t = torch.arange(16000) / 16000
        >>> a, b = torch.sin(2 * math.pi * 440 * t), torch.sin(2 * math.pi * 660 * t)
        >>> spectral_distance(a, a).item(), round(spectral_distance(a, b).item(), 2)
        (0.0, 0.53)
    """
    xb, yb, single = _pair(x, y)
    for name, w in (("linear_weight", linear_weight), ("log_weight", log_weight)):
        if not (math.isfinite(w) and w >= 0):
            raise WeightspaceValueError(f"`{name}` must be a non-negative number, got {w!r}")
    sizes = [int(n) for n in fft_sizes]
    if not sizes or any(n < 16 for n in sizes):
        raise WeightspaceValueError(
            f"`fft_sizes` must be frame lengths of at least 16, got {list(fft_sizes)}"
        )
    usable = [n for n in sizes if n <= xb.shape[-1]] or [min(sizes)]
    total = torch.zeros(xb.shape[0])
    for n in usable:
        sx, sy = _magnitude(xb, n), _magnitude(yb, n)
        term = torch.zeros(xb.shape[0])
        if linear_weight:
            term = term + linear_weight * (sx - sy).abs().mean(dim=(1, 2))
        if log_weight:
            logs = torch.log(sx + _EPS) - torch.log(sy + _EPS)
            term = term + log_weight * logs.abs().mean(dim=(1, 2))
        total = total + term
    out = total / len(usable)
    return out[0] if single else out


def mel_distance(
    x: Tensor,
    y: Tensor,
    sample_rate: int,
    *,
    n_mels: int = 64,
    n_fft: int = 1024,
    hop: int = 256,
) -> Tensor:
    """Mean absolute difference of log-mel power spectrograms, one value per item.

    Symmetric, zero on identical inputs, differentiable. The mel filters are triangular on
    the HTK mel scale from 40 Hz to Nyquist (:func:`~weightspace.audio.log_mel`), with a floor
    of :math:`10^{-5}` added to the mel power before the natural log.

    Args:
        x: Sounds, ``[B, T]`` or ``[T]``.
        y: Sounds of the same length; a batch of 1 on either side is broadcast.
        sample_rate: Sample rate of both, in Hz.
        n_mels: Number of mel bands.
        n_fft: Frame length.
        hop: Hop between frames.

    Returns:
        ``[B]`` distances (a scalar tensor for two ``[T]`` inputs).

    Raises:
        WeightspaceValueError: on a bad shape or setting.
        ShapeMismatchError: if the two sides have different lengths or batch sizes.

    Example:
        >>> t = torch.arange(16000) / 16000
        >>> a, b = torch.sin(2 * math.pi * 440 * t), torch.sin(2 * math.pi * 880 * t)
        >>> mel_distance(a, a, 16000).item(), bool(mel_distance(a, b, 16000) > 1.0)
        (0.0, True)
    """
    xb, yb, single = _pair(x, y)
    if isinstance(sample_rate, bool) or not isinstance(sample_rate, int) or sample_rate <= 0:
        raise WeightspaceValueError(
            f"`sample_rate` must be a positive integer, got {sample_rate!r}"
        )
    for name, v in (("n_mels", n_mels), ("n_fft", n_fft), ("hop", hop)):
        if isinstance(v, bool) or not isinstance(v, int) or v < 1:
            raise WeightspaceValueError(f"`{name}` must be a positive integer, got {v!r}")
    fx = log_mel(xb, sample_rate=sample_rate, n_fft=n_fft, hop_length=hop, n_mels=n_mels)
    fy = log_mel(yb, sample_rate=sample_rate, n_fft=n_fft, hop_length=hop, n_mels=n_mels)
    out = (fx - fy).abs().mean(dim=(1, 2))
    return out[0] if single else out


def estimate_pitch(
    x: Tensor,
    sample_rate: int,
    *,
    fmin: float = 50.0,
    fmax: float = 2000.0,
    frame: int = 2048,
    threshold: float = 0.2,
) -> Tensor:
    """Estimate the fundamental frequency of each sound with a YIN-style estimator.

    The estimate comes from the loudest ``frame``-sample window of each sound: the cumulative
    mean normalised difference function of YIN (de Cheveigné & Kawahara, JASA 111(4), 2002)
    is computed through FFT autocorrelation, the first lag whose value falls below
    ``threshold`` (else the global minimum) is taken, its local minimum refined by parabolic
    interpolation. Sounds with no periodicity (minimum above 0.5, or silence) get ``nan``.
    Not differentiable.

    Args:
        x: Sounds, ``[B, T]`` or ``[T]``.
        sample_rate: Sample rate in Hz.
        fmin: Lowest pitch searched, Hz.
        fmax: Highest pitch searched, Hz.
        frame: Analysis window in samples (shorter sounds use their whole length).
        threshold: YIN's absolute threshold.

    Returns:
        ``[B]`` pitches in Hz (a scalar tensor for ``[T]`` input), ``nan`` where unvoiced.

    Raises:
        WeightspaceValueError: on a bad shape or range.

    Example:
        >>> t = torch.arange(16000) / 16000
        >>> round(estimate_pitch(torch.sin(2 * math.pi * 220 * t), 16000).item())
        220
    """
    if not isinstance(x, Tensor) or x.ndim not in (1, 2):
        shape = tuple(x.shape) if isinstance(x, Tensor) else type(x).__name__
        raise WeightspaceValueError(f"`x` must be a [B, T] or [T] tensor, got {shape}")
    if not 0 < fmin < fmax < sample_rate / 2:
        raise WeightspaceValueError(
            f"`fmin` and `fmax` must satisfy 0 < fmin < fmax < sample_rate / 2, got "
            f"{fmin!r} and {fmax!r} at {sample_rate} Hz"
        )
    single = x.ndim == 1
    xb = (x.unsqueeze(0) if single else x).detach().double()
    n = min(frame, xb.shape[-1])
    max_lag = min(int(sample_rate / fmin) + 2, n // 2)
    min_lag = max(int(sample_rate / fmax), 2)
    if max_lag <= min_lag + 2:
        raise WeightspaceValueError(
            f"`frame` ({n} samples) is too short for `fmin` {fmin} Hz; pass a longer frame"
        )
    # Loudest window (hop frame / 4).
    hop = max(n // 4, 1)
    windows = xb.unfold(-1, n, hop)  # [B, W, n]
    best = windows.pow(2).sum(-1).argmax(-1)
    w = windows[torch.arange(xb.shape[0]), best]  # [B, n]
    w = w - w.mean(-1, keepdim=True)
    size = 1 << (2 * n - 1).bit_length()
    spec = torch.fft.rfft(w, size)
    acf = torch.fft.irfft(spec.real**2 + spec.imag**2, size)[:, : max_lag + 1]
    energy = torch.cumsum(w**2, -1)
    total = energy[:, -1:]
    lags = torch.arange(max_lag + 1)
    # Difference function d(tau) = E[0, n - tau) + E[tau, n) - 2 acf(tau).
    head = torch.cat([total, energy[:, n - 1 - lags[1:]]], -1)
    tail = total - torch.cat([torch.zeros_like(total), energy[:, lags[1:] - 1]], -1)
    diff = (head + tail - 2 * acf).clamp(min=0.0)
    cum = torch.cumsum(diff[:, 1:], -1) / lags[1:]
    cmnd = torch.ones_like(diff)
    cmnd[:, 1:] = diff[:, 1:] / cum.clamp(min=1e-12)
    out = torch.full((xb.shape[0],), math.nan, dtype=torch.float64)
    for b in range(xb.shape[0]):
        if float(total[b, 0]) < 1e-10:
            continue
        c = cmnd[b]
        region = c[min_lag : max_lag + 1]
        below = (region < threshold).nonzero()
        if len(below):
            tau = min_lag + int(below[0, 0])
            while tau + 1 <= max_lag and c[tau + 1] < c[tau]:
                tau += 1
        else:
            tau = min_lag + int(region.argmin())
        if float(c[tau]) > 0.5:
            continue
        shift = 0.0
        if min_lag < tau < max_lag:
            a, m, z = float(c[tau - 1]), float(c[tau]), float(c[tau + 1])
            denom = a - 2 * m + z
            if denom > 0:
                shift = 0.5 * (a - z) / denom
        out[b] = sample_rate / (tau + shift)
    return (out[0] if single else out).float()


def cents(f: Tensor, reference: Tensor) -> Tensor:
    """Interval from ``reference`` to ``f`` in cents, ``1200 log2(f / reference)``.

    Example:
        >>> cents(torch.tensor([880.0, 440.0]), torch.tensor(440.0))
        tensor([1200.,    0.])
    """
    return 1200.0 * torch.log2(f / reference)
