"""A small differentiable synthesizer: one voice, sixteen parameters, batched on CPU.

The signal path is the classic subtractive one with a phase-modulation (FM) stage in front:

``oscillators (sine, saw, square, noise; FM on the tonal ones) -> resonant low-pass filter
(cutoff moved by the envelope) -> amplifier (ADSR envelope) -> gain``.

Every parameter is continuous and every stage is written with differentiable torch
operations, so gradients of any loss on the rendered audio reach all sixteen parameters.
Parameters live in two spaces: *physical* values with units (a MIDI note, seconds, Hz,
decibels) and *normalised* values in ``[0, 1]`` (linear or logarithmic maps of each range),
which is what :meth:`Synth.render`, the matchers and the environment take.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import torch
from torch import Tensor

from weightspace._errors import WeightspaceValueError

__all__ = ["SYNTH_PARAMS", "Param", "Synth", "adsr"]

_TWO_PI = 2.0 * math.pi
_BLOCK = 256  # samples per block of the phase computation


@dataclass(frozen=True)
class Param:
    """One synthesizer parameter: its name, range, unit and how ``[0, 1]`` maps onto it.

    Attributes:
        name: Identifier, such as ``"cutoff"``.
        low: Physical value at normalised 0.
        high: Physical value at normalised 1.
        unit: Unit of the physical value (``"Hz"``, ``"s"``, ``"dB"``, ...).
        scale: ``"linear"`` maps ``u`` to ``low + u (high - low)``; ``"log"`` maps it to
            ``low (high / low) ** u`` (both ends positive).
        doc: What the parameter does, in a few words.

    Example:
        >>> p = Param("cutoff", 50.0, 8000.0, "Hz", "log", "filter cutoff")
        >>> round(p.to_physical(torch.tensor(0.5)).item(), 1)
        632.5
    """

    name: str
    low: float
    high: float
    unit: str
    scale: Literal["linear", "log"]
    doc: str

    def __post_init__(self) -> None:
        if not (math.isfinite(self.low) and math.isfinite(self.high) and self.low < self.high):
            raise WeightspaceValueError(
                f"`low` and `high` of parameter {self.name!r} must be finite with low < high, "
                f"got {self.low!r} and {self.high!r}"
            )
        if self.scale not in ("linear", "log"):
            raise WeightspaceValueError(
                f"`scale` of parameter {self.name!r} must be 'linear' or 'log', got {self.scale!r}"
            )
        if self.scale == "log" and self.low <= 0:
            raise WeightspaceValueError(
                f"a 'log' parameter needs `low` > 0; {self.name!r} has low={self.low!r}"
            )

    def to_physical(self, u: Tensor) -> Tensor:
        """Map normalised values in ``[0, 1]`` to physical values (any shape)."""
        if self.scale == "log":
            return self.low * torch.pow(self.high / self.low, u)
        return self.low + u * (self.high - self.low)

    def to_normalized(self, value: Tensor) -> Tensor:
        """Map physical values to ``[0, 1]`` (the inverse of :meth:`to_physical`)."""
        if self.scale == "log":
            return torch.log(value / self.low) / math.log(self.high / self.low)
        return (value - self.low) / (self.high - self.low)


SYNTH_PARAMS: tuple[Param, ...] = (
    Param("pitch", 36.0, 84.0, "MIDI note", "linear", "fundamental: 69 is A4 (440 Hz)"),
    Param("sine", 0.0, 1.0, "level", "linear", "level of the sine oscillator"),
    Param("saw", 0.0, 1.0, "level", "linear", "level of the band-limited sawtooth"),
    Param("square", 0.0, 1.0, "level", "linear", "level of the band-limited square"),
    Param("noise", 0.0, 1.0, "level", "linear", "level of white noise"),
    Param("fm_ratio", 0.5, 8.0, "ratio", "log", "modulator frequency / fundamental"),
    Param("fm_index", 0.0, 6.0, "radians", "linear", "peak phase deviation of the FM stage"),
    Param("attack", 0.002, 1.0, "s", "log", "envelope rise from 0 to 1"),
    Param("decay", 0.005, 1.0, "s", "log", "envelope fall from 1 to the sustain level"),
    Param("sustain", 0.0, 1.0, "level", "linear", "envelope level held until note-off"),
    Param("release", 0.005, 1.0, "s", "log", "envelope fall from note-off to 0"),
    Param("gate", 0.05, 0.9, "s", "linear", "note-off time (note length)"),
    Param("cutoff", 50.0, 8000.0, "Hz", "log", "low-pass cutoff with the envelope at 0"),
    Param("resonance", 0.5, 12.0, "Q", "log", "filter quality factor (peak gain about Q)"),
    Param("filter_env", 0.0, 5.0, "octaves", "linear", "cutoff rise at envelope level 1"),
    Param("gain", -30.0, 0.0, "dB", "linear", "output gain"),
)
"""The parameters of :class:`Synth`, in the order of the parameter vector."""


def adsr(
    t: Tensor, attack: Tensor, decay: Tensor, sustain: Tensor, release: Tensor, gate: Tensor
) -> Tensor:
    """Evaluate a linear ADSR envelope at times ``t``.

    The envelope rises linearly from 0 to 1 in ``attack`` seconds, falls linearly to
    ``sustain`` in ``decay`` seconds, holds until the note-off time ``gate``, and then falls
    linearly to 0 in ``release`` seconds from whatever level it had at ``gate`` (a note shorter
    than attack + decay is released mid-segment). Differentiable in every argument.

    Args:
        t: Times in seconds, shape ``[T]``.
        attack: Attack times in seconds, shape ``[B]``, positive.
        decay: Decay times in seconds, shape ``[B]``, positive.
        sustain: Sustain levels, shape ``[B]``, in ``[0, 1]``.
        release: Release times in seconds, shape ``[B]``, positive.
        gate: Note-off times in seconds, shape ``[B]``.

    Returns:
        The envelope, shape ``[B, T]``, in ``[0, 1]``.

    Example:
        >>> t = torch.tensor([0.0, 0.05, 0.1, 0.2, 0.5, 0.6, 0.7])
        >>> one = lambda v: torch.tensor([v])
        >>> adsr(t, one(0.1), one(0.2), one(0.5), one(0.2), one(0.5)).round(decimals=4)
        tensor([[0.0000, 0.5000, 1.0000, 0.7500, 0.5000, 0.2500, 0.0000]])
    """
    tt = t.unsqueeze(0)
    a, d, s = attack.unsqueeze(1), decay.unsqueeze(1), sustain.unsqueeze(1)
    r, g = release.unsqueeze(1), gate.unsqueeze(1)

    def held(time: Tensor) -> Tensor:  # the envelope as if the key were never released
        rise = time / a
        fall = torch.maximum(1.0 - (1.0 - s) * (time - a) / d, s)
        return torch.where(time < a, rise, fall)

    level_at_gate = held(g)
    after = level_at_gate * torch.clamp(1.0 - (tt - g) / r, min=0.0)
    return torch.where(tt < g, held(tt), after)


@dataclass(frozen=True)
class Synth:
    r"""A one-voice subtractive synthesizer with FM, rendered in batches and differentiable.

    The voice (see :data:`SYNTH_PARAMS` for the sixteen parameters, their ranges and units):

    * **Oscillators.** A sine, a sawtooth and a square at the fundamental
      :math:`f_0 = 440 \cdot 2^{(p - 69)/12}` Hz of the MIDI pitch :math:`p`, mixed with their
      levels, plus white noise (a fixed sequence drawn from ``noise_seed``, so that rendering is
      a deterministic function of the parameters). The saw and square are approximately
      band-limited by waveshaping a sine (Lazzarini & Timoney, "New perspectives on distortion
      synthesis for virtual analog oscillators", Computer Music Journal 34(1), 2010):
      ``square = tanh(k sin phi) / tanh(k)`` and ``saw = square (1 + cos phi) / 2``, with a
      steepness ``k`` that grows with the number of harmonics below Nyquist, so that a low
      note is bright and a high note does not alias much.
    * **FM.** The tonal oscillators' phase is modulated by a sine at ``fm_ratio`` times
      :math:`f_0` with peak deviation ``fm_index`` radians (DX7-style phase modulation). FM
      sidebands are not band-limited: a high note with a large index aliases.
    * **Filter.** A two-pole resonant low-pass, :math:`|H(f)| = 1/\sqrt{(1-x^2)^2 + (x/Q)^2}`
      with :math:`x = f / f_c(t)`, applied frame by frame in the short-time Fourier domain
      (zero phase, ``filter_fft``-point Hann frames, hop half of that), with a cutoff that
      rises by ``filter_env`` octaves at envelope level 1:
      :math:`f_c(t) = f_c \cdot 2^{\text{filter\_env} \cdot e(t)}`.
    * **Amplifier.** The linear ADSR envelope :func:`adsr` times the gain in dB.

    Args:
        sample_rate: Samples per second, in [4000, 96000].
        duration: Length of every rendered sound in seconds, in (0, 10].
        noise_seed: Seed of the noise sequence.
        filter_fft: Frame length of the filter, a power of two in [64, 4096].

    Shapes:
        - normalised parameters: ``[B, P]`` (or ``[P]``) with ``P = 16``, values in [0, 1].
        - audio: ``[B, T]`` (or ``[T]``), ``T = round(duration * sample_rate)``.

    Example:
        >>> synth = Synth(sample_rate=16000, duration=0.5)
        >>> x = synth.sample(4, seed=0)
        >>> audio = synth.render(x)
        >>> x.shape, audio.shape
        (torch.Size([4, 16]), torch.Size([4, 8000]))
        >>> params = synth.from_physical({"pitch": 69.0, "sine": 1.0, "cutoff": 8000.0})
        >>> round(synth.to_physical(params)["pitch"].item(), 3)
        69.0
    """

    sample_rate: int = 16000
    duration: float = 1.0
    noise_seed: int = 0
    filter_fft: int = 512

    def __post_init__(self) -> None:
        if isinstance(self.sample_rate, bool) or not isinstance(self.sample_rate, int):
            raise WeightspaceValueError(
                f"`sample_rate` must be an integer, got {self.sample_rate!r}"
            )
        if not 4000 <= self.sample_rate <= 96000:
            raise WeightspaceValueError(
                f"`sample_rate` must be in [4000, 96000] Hz, got {self.sample_rate}"
            )
        if not (isinstance(self.duration, (int, float)) and 0 < self.duration <= 10):
            raise WeightspaceValueError(
                f"`duration` must be in (0, 10] seconds, got {self.duration!r}"
            )
        n = self.filter_fft
        if not (isinstance(n, int) and 64 <= n <= 4096 and n & (n - 1) == 0):
            raise WeightspaceValueError(
                f"`filter_fft` must be a power of two in [64, 4096], got {n!r}"
            )

    # -- the parameter vector ------------------------------------------------------------

    @property
    def params(self) -> tuple[Param, ...]:
        """The parameters, in vector order (the same as :data:`SYNTH_PARAMS`)."""
        return SYNTH_PARAMS

    @property
    def param_names(self) -> tuple[str, ...]:
        """The names of the parameters, in vector order."""
        return tuple(p.name for p in SYNTH_PARAMS)

    @property
    def num_params(self) -> int:
        """Length of the parameter vector (16)."""
        return len(SYNTH_PARAMS)

    @property
    def num_samples(self) -> int:
        """Samples per rendered sound."""
        return round(self.duration * self.sample_rate)

    def to_physical(self, params: Tensor) -> dict[str, Tensor]:
        """Map normalised parameters to physical values, one tensor per parameter name.

        Args:
            params: Normalised parameters, ``[B, P]`` or ``[P]``, values in [0, 1].

        Returns:
            ``{name: values}``, each of shape ``[B]`` (or a scalar tensor for ``[P]`` input).
        """
        x = self._check(params)
        return {p.name: p.to_physical(x[..., i]) for i, p in enumerate(SYNTH_PARAMS)}

    def from_physical(
        self, values: dict[str, float | Tensor] | Tensor, *, default: float = 0.5
    ) -> Tensor:
        """Map physical values to normalised parameters, clipped to [0, 1].

        Args:
            values: Either ``{name: value}`` (floats or tensors of one shape; parameters that
                are missing take the normalised value ``default``) or a ``[..., P]`` tensor of
                physical values in vector order.
            default: Normalised value of the parameters missing from a mapping.

        Returns:
            Normalised parameters, ``[..., P]`` float32.

        Raises:
            WeightspaceValueError: on an unknown name or a wrong last dimension.
        """
        if isinstance(values, Tensor):
            if values.ndim == 0 or values.shape[-1] != self.num_params:
                raise WeightspaceValueError(
                    f"`values` must have a last dimension of {self.num_params}, "
                    f"got shape {tuple(values.shape)}"
                )
            cols = [p.to_normalized(values[..., i].double()) for i, p in enumerate(SYNTH_PARAMS)]
            return torch.stack(cols, -1).clamp(0.0, 1.0).float()
        unknown = sorted(set(values) - set(self.param_names))
        if unknown:
            raise WeightspaceValueError(
                f"`values` has unknown parameter names {unknown}; choose from {self.param_names}"
            )
        given = {k: torch.as_tensor(v, dtype=torch.float64) for k, v in values.items()}
        shape = next(iter(given.values())).shape if given else torch.Size([])
        cols = []
        for p in SYNTH_PARAMS:
            if p.name in given:
                cols.append(p.to_normalized(given[p.name].expand(shape)))
            else:
                cols.append(torch.full(shape, float(default), dtype=torch.float64))
        return torch.stack(cols, -1).clamp(0.0, 1.0).float()

    def sample(self, n: int, *, seed: int = 0) -> Tensor:
        """Draw ``n`` random patches: every normalised parameter uniform in [0, 1].

        Args:
            n: Number of patches, positive.
            seed: Seed of the draw.

        Returns:
            ``[n, P]`` float32 normalised parameters.
        """
        if isinstance(n, bool) or not isinstance(n, int) or n < 1:
            raise WeightspaceValueError(f"`n` must be a positive integer, got {n!r}")
        gen = torch.Generator().manual_seed(int(seed))
        return torch.rand(n, self.num_params, generator=gen)

    # -- rendering -----------------------------------------------------------------------

    def render(self, params: Tensor) -> Tensor:
        """Render sounds from normalised parameters (differentiable).

        Args:
            params: Normalised parameters, ``[B, P]`` or ``[P]``; values outside [0, 1] are
                clipped.

        Returns:
            Audio, ``[B, T]`` (or ``[T]``), float32.

        Raises:
            WeightspaceValueError: if the last dimension is not ``P`` or a value is not finite.
        """
        x = self._check(params)
        single = x.ndim == 1
        if single:
            x = x.unsqueeze(0)
        x = x.float().clamp(0.0, 1.0)
        p = {q.name: q.to_physical(x[:, i]) for i, q in enumerate(SYNTH_PARAMS)}
        sr, n = self.sample_rate, self.num_samples
        f0 = 440.0 * torch.pow(2.0, (p["pitch"] - 69.0) / 12.0)  # [B]
        index = torch.arange(n)
        hi = (index // _BLOCK).float().unsqueeze(0)  # sample n = _BLOCK * hi + lo
        lo = (index % _BLOCK).float().unsqueeze(0)

        # Phase in cycles, wrapped to [0, 1): frac(n f / sr) = frac(hi frac(B f / sr) + lo f / sr)
        # keeps float32 accurate to about 1e-5 cycles over a second; d/df is still n / sr.
        def cycles(freq: Tensor) -> Tensor:
            per_sample = freq.double() / sr
            per_block = per_sample * _BLOCK
            per_block = per_block - per_block.detach().floor()
            c = hi * per_block.float().unsqueeze(1) + lo * per_sample.float().unsqueeze(1)
            return c - c.detach().floor()

        modulator = torch.sin(_TWO_PI * cycles(f0 * p["fm_ratio"]))
        phase = torch.addcmul(_TWO_PI * cycles(f0), p["fm_index"].unsqueeze(1), modulator)
        sin_phase = torch.sin(phase)
        harmonics = (0.5 * sr) / f0  # harmonics below Nyquist
        k = (0.25 * harmonics).clamp(min=1.0).unsqueeze(1)
        square = torch.tanh(k * sin_phase)  # not yet divided by tanh(k): folded into levels
        # sine * sin + saw * square (1 + cos) / 2 + square * square_level + noise, with
        # square = tanh(k sin) / tanh(k):
        inv = 1.0 / torch.tanh(k)
        half_saw = 0.5 * p["saw"].unsqueeze(1) * inv
        shape = torch.addcmul(p["square"].unsqueeze(1) * inv + half_saw, half_saw, torch.cos(phase))
        gen = torch.Generator().manual_seed(int(self.noise_seed))
        noise = torch.randn(n, generator=gen).unsqueeze(0)
        source = torch.addcmul(p["sine"].unsqueeze(1) * sin_phase, square, shape)
        source = torch.addcmul(source, 0.3 * p["noise"].unsqueeze(1), noise)

        env_args = (p["attack"], p["decay"], p["sustain"], p["release"], p["gate"])
        filtered = self._filter(source, p, env_args)
        t = index.float() / sr
        env = adsr(t, *env_args) * torch.pow(10.0, p["gain"] / 20.0).unsqueeze(1)
        out = filtered * env
        return out[0] if single else out

    def _filter(self, source: Tensor, p: dict[str, Tensor], env_args: tuple[Tensor, ...]) -> Tensor:
        n_fft = self.filter_fft
        hop = n_fft // 2
        window = torch.hann_window(n_fft)
        spec = torch.stft(
            source, n_fft, hop_length=hop, window=window, center=True, return_complex=True
        )  # [B, K, F]
        frames = spec.shape[-1]
        frame_t = torch.arange(frames, dtype=torch.float32) * (hop / self.sample_rate)
        env = adsr(frame_t, *env_args)  # [B, F]
        # x^2 = (f / f_c(t))^2 with f_c(t) = cutoff 2^(filter_env e(t)).
        inv_cutoff2 = torch.pow(
            p["cutoff"].unsqueeze(1) * torch.pow(2.0, p["filter_env"].unsqueeze(1) * env), -2.0
        )
        freqs2 = torch.fft.rfftfreq(n_fft, d=1.0 / self.sample_rate) ** 2  # [K]
        x2 = freqs2.view(1, -1, 1) * inv_cutoff2.unsqueeze(1)  # [B, K, F]
        inv_q2 = p["resonance"].pow(-2.0).view(-1, 1, 1)
        one_minus = 1.0 - x2
        gain = torch.rsqrt(torch.addcmul(x2 * inv_q2, one_minus, one_minus))
        filtered = torch.view_as_complex(torch.view_as_real(spec) * gain.unsqueeze(-1))
        return torch.istft(
            filtered, n_fft, hop_length=hop, window=window, center=True, length=source.shape[-1]
        )

    def _check(self, params: Tensor) -> Tensor:
        if not isinstance(params, Tensor):
            raise WeightspaceValueError(
                f"`params` must be a torch.Tensor of shape [B, {self.num_params}], "
                f"got {type(params).__name__}"
            )
        if params.ndim not in (1, 2) or params.shape[-1] != self.num_params:
            raise WeightspaceValueError(
                f"`params` must have shape [B, {self.num_params}] or [{self.num_params}], "
                f"got {tuple(params.shape)}"
            )
        if not bool(torch.isfinite(params).all()):
            raise WeightspaceValueError("`params` must be finite, got nan or inf values")
        return params
