"""Basic Pitch (Bittner et al., ICASSP 2022) in PyTorch, with the released weights.

The network reads a harmonic-stacked constant-Q spectrogram (3 bins per semitone from 27.5 Hz)
and writes three posteriorgrams at 86 frames per second: a pitch *contour* (264 bins, a third
of a semitone each), *note* activity and note *onsets* (88 piano keys each). It has 16,782
trainable parameters (16,700 in its six convolutions, 82 in its three batch-norm layers), the
count the paper gives. The layer layout is that of the official ``basic_pitch/models.py``; the
first 32-filter contour convolution of that file, whose output is overwritten before use, is
left out, as it is absent from the released model.

:func:`basic_pitch` loads the released ``icassp_2022`` weights from the ``nmp.onnx`` file that
the ``basic-pitch`` wheel ships (batch norm is folded into the convolutions there; the loaded
batch-norm layers are set to the identity). :meth:`BasicPitch.predict` runs a whole recording
in the official overlapping windows and :func:`~weightspace.models.notes_from_posteriorgrams`
turns the posteriorgrams into notes.

Reference: R. M. Bittner, J. J. Bosch, D. Rubinstein, G. Meseguer-Brocal, S. Ewert, "A
Lightweight Instrument-Agnostic Model for Polyphonic Note Transcription and Multipitch
Estimation", ICASSP 2022, arXiv:2203.09893.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn
from torch.nn import functional as F

from weightspace._errors import MissingSourceError, ShapeMismatchError, WeightspaceValueError
from weightspace._optional import require_module
from weightspace.audio._cqt import CQT, harmonic_stack, normalized_log
from weightspace.models._common import package_file, user_path

__all__ = [
    "BASIC_PITCH_FPS",
    "BASIC_PITCH_SAMPLE_RATE",
    "BASIC_PITCH_WINDOW",
    "BasicPitch",
    "Posteriorgrams",
    "basic_pitch",
    "basic_pitch_loss",
    "note_targets",
]

logger = logging.getLogger(__name__)

#: Sampling rate the model expects, in Hz.
BASIC_PITCH_SAMPLE_RATE = 22050
#: Samples between posteriorgram frames.
BASIC_PITCH_HOP = 256
#: Samples in one model window (2 s less one hop); it gives 172 frames.
BASIC_PITCH_WINDOW = 2 * BASIC_PITCH_SAMPLE_RATE - BASIC_PITCH_HOP
#: Frames per second, as the official code counts them (``22050 // 256``).
BASIC_PITCH_FPS = BASIC_PITCH_SAMPLE_RATE // BASIC_PITCH_HOP
#: Frames per model window.
BASIC_PITCH_FRAMES = 2 * BASIC_PITCH_FPS
#: Lowest pitch (MIDI number of A0, 27.5 Hz) of the 88 note bins.
MIDI_OFFSET = 21
_N_OVERLAP_FRAMES = 30
_BN_EPS = 1e-3  # Keras' default, which the released model was trained with.


@dataclass(frozen=True)
class Posteriorgrams:
    """The three outputs of Basic Pitch for one recording (or a batch of windows).

    Attributes:
        contour: Pitch salience ``[..., frames, 264]``, 3 bins per semitone from 27.5 Hz.
        note: Note activity ``[..., frames, 88]``, MIDI 21 to 108.
        onset: Note onsets ``[..., frames, 88]``.
    """

    contour: Tensor
    note: Tensor
    onset: Tensor

    def numpy(self) -> dict[str, np.ndarray]:
        """Return the three posteriorgrams as float32 numpy arrays keyed by name."""
        return {
            "contour": self.contour.detach().cpu().float().numpy(),
            "note": self.note.detach().cpu().float().numpy(),
            "onset": self.onset.detach().cpu().float().numpy(),
        }


class BasicPitch(nn.Module):
    """The Basic Pitch network: harmonic CQT front end and contour, note and onset heads.

    ``forward`` maps audio windows to :class:`Posteriorgrams`; it is :meth:`features` (the
    normalised-log CQT, fixed) followed by :meth:`heads` (everything that learns), so training
    can cache the features. Output frames ``T = samples // 256 + 1`` (172 for a 2 s window).

    Args:
        n_harmonics: Harmonics stacked as input channels: ``[0.5, 1, 2, ..., n_harmonics - 1]``
            (``[1]`` when 1).
        n_filters_contour: Filters of the contour convolution (8 in the paper).
        n_filters_notes: Filters of the note convolution.
        n_filters_onsets: Filters of the onset convolution.

    Shapes:
        - audio: ``[batch, samples]`` at 22,050 Hz.
        - output: contour ``[batch, T, 264]``, note and onset ``[batch, T, 88]``.

    Example:
        >>> import torch
        >>> from weightspace.models import BasicPitch
        >>> model = BasicPitch().eval()
        >>> sum(p.numel() for p in model.parameters() if p.requires_grad)
        16782
        >>> out = model(torch.zeros(1, 43844))
        >>> tuple(out.contour.shape), tuple(out.note.shape), tuple(out.onset.shape)
        ((1, 172, 264), (1, 172, 88), (1, 172, 88))
    """

    def __init__(
        self,
        *,
        n_harmonics: int = 8,
        n_filters_contour: int = 8,
        n_filters_notes: int = 32,
        n_filters_onsets: int = 32,
    ) -> None:
        super().__init__()
        for name, value in [
            ("n_harmonics", n_harmonics),
            ("n_filters_contour", n_filters_contour),
            ("n_filters_notes", n_filters_notes),
            ("n_filters_onsets", n_filters_onsets),
        ]:
            if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
                raise WeightspaceValueError(f"`{name}` must be a positive integer, got {value!r}")
        self.harmonics: list[float] = [0.5, *range(1, n_harmonics)] if n_harmonics > 1 else [1.0]
        n_semitones = min(
            math.ceil(12.0 * math.log2(n_harmonics)) + 88,
            math.floor(12.0 * math.log2(0.5 * BASIC_PITCH_SAMPLE_RATE / 27.5)),
        )
        self.cqt = CQT(
            sample_rate=BASIC_PITCH_SAMPLE_RATE,
            hop_length=BASIC_PITCH_HOP,
            fmin=27.5,
            n_bins=3 * n_semitones,
            bins_per_octave=36,
        )
        n_in = len(self.harmonics)
        # The convolutions run on [batch, channels, frequency, time] maps: their kernels are
        # (frequency, time), the transpose of the official (time, frequency) layout. On CPU the
        # wide (39, 3) kernel is several times faster this way, forward and backward.
        self.cqt_norm = nn.BatchNorm2d(1, eps=_BN_EPS, momentum=0.01)
        self.contour_conv = nn.Conv2d(n_in, n_filters_contour, (39, 3), padding=(19, 1))
        self.contour_norm = nn.BatchNorm2d(n_filters_contour, eps=_BN_EPS, momentum=0.01)
        self.contour_out = nn.Conv2d(n_filters_contour, 1, (5, 5), padding=(2, 2))
        self.note_conv = nn.Conv2d(1, n_filters_notes, (7, 7), stride=(3, 1), padding=(2, 3))
        self.note_out = nn.Conv2d(n_filters_notes, 1, (3, 7), padding=(1, 3))
        self.onset_conv = nn.Conv2d(n_in, n_filters_onsets, (5, 5), stride=(3, 1), padding=(1, 2))
        self.onset_norm = nn.BatchNorm2d(n_filters_onsets, eps=_BN_EPS, momentum=0.01)
        self.onset_out = nn.Conv2d(n_filters_onsets + 1, 1, (3, 3), padding=(1, 1))

    def features(self, audio: Tensor) -> Tensor:
        """Normalised-log CQT of audio windows, scaled to ``[0, 1]`` per window.

        Args:
            audio: ``[batch, samples]`` (or ``[samples]``) at 22,050 Hz.

        Returns:
            ``[batch, frames, cqt_bins]`` (309 bins for 8 harmonics).
        """
        if audio.dim() == 1:
            audio = audio[None]
        if audio.dim() != 2:
            raise WeightspaceValueError(
                f"`audio` must be [batch, samples] or [samples], got shape {list(audio.shape)}"
            )
        return normalized_log(self.cqt.power(audio)).transpose(1, 2)

    def heads(self, features: Tensor) -> Posteriorgrams:
        """Posteriorgrams from :meth:`features` (all trainable layers).

        Args:
            features: ``[batch, frames, cqt_bins]``.

        Returns:
            The contour, note and onset posteriorgrams (probabilities).
        """
        x = self.cqt_norm(features.unsqueeze(1)).squeeze(1)
        x = harmonic_stack(x, self.harmonics, bins_per_semitone=3, n_output_bins=264)
        x = x.transpose(2, 3).contiguous()  # [batch, harmonics, frequency, time]
        contour = F.relu(self._conv_norm(self.contour_conv, self.contour_norm, x))
        contour = torch.sigmoid(self.contour_out(contour))
        note = torch.sigmoid(self.note_out(F.relu(self.note_conv(contour))))
        onset = F.relu(self._conv_norm(self.onset_conv, self.onset_norm, x))
        onset = torch.sigmoid(self.onset_out(torch.cat([note, onset], dim=1)))
        return Posteriorgrams(
            contour=contour[:, 0].transpose(1, 2),
            note=note[:, 0].transpose(1, 2),
            onset=onset[:, 0].transpose(1, 2),
        )

    def _conv_norm(self, conv: nn.Module, norm: nn.BatchNorm2d, x: Tensor) -> Tensor:
        """``norm(conv(x))``; at inference, one convolution with the norm folded into it."""
        if (
            self.training
            or torch.is_grad_enabled()
            or type(conv) is not nn.Conv2d
            or norm.running_mean is None
            or norm.running_var is None
        ):
            out: Tensor = norm(conv(x))
            return out
        scale = norm.weight / torch.sqrt(norm.running_var + norm.eps)
        bias = norm.bias - norm.running_mean * scale
        if conv.bias is not None:
            bias = bias + conv.bias * scale
        weight = conv.weight * scale[:, None, None, None]
        return F.conv2d(x, weight, bias, stride=conv.stride, padding=conv.padding)

    def forward(self, audio: Tensor) -> Posteriorgrams:
        """Posteriorgrams of audio windows (see the class docstring for shapes)."""
        return self.heads(self.features(audio))

    def windows(self, audio: Tensor | np.ndarray) -> tuple[Tensor, int]:
        """Cut a recording into the official overlapping model windows.

        The recording gets 3,840 zeros in front (15 frames), then windows of 43,844 samples
        start every 36,164 samples (30 frames of overlap); the last one is zero-padded.

        Args:
            audio: Mono samples ``[samples]`` at 22,050 Hz.

        Returns:
            The windows ``[n_windows, 43844]`` and the number of output frames of the
            recording, ``floor(samples * 86 / 22050)``.
        """
        x = torch.as_tensor(np.asarray(audio, dtype=np.float32)).reshape(-1)
        overlap = _N_OVERLAP_FRAMES * BASIC_PITCH_HOP
        hop = BASIC_PITCH_WINDOW - overlap
        padded = torch.cat([torch.zeros(overlap // 2), x])
        starts = range(0, padded.shape[0], hop)
        chunks = [
            F.pad(
                padded[s : s + BASIC_PITCH_WINDOW],
                (0, max(0, s + BASIC_PITCH_WINDOW - padded.shape[0])),
            )
            for s in starts
        ]
        n_frames = math.floor(x.shape[0] * (BASIC_PITCH_FPS / BASIC_PITCH_SAMPLE_RATE))
        return torch.stack(chunks), n_frames

    @torch.no_grad()
    def predict(self, audio: Tensor | np.ndarray, *, batch_size: int = 16) -> Posteriorgrams:
        """Posteriorgrams of a whole recording, stitched from overlapping windows.

        As the official ``run_inference``: half the 30 overlapping frames are dropped at each
        end of every window, and the result is trimmed to the recording's length. Runs in eval
        mode and restores the model's mode.

        Args:
            audio: Mono samples ``[samples]`` at 22,050 Hz.
            batch_size: Windows per forward pass.

        Returns:
            Posteriorgrams ``[frames, bins]`` for the recording.
        """
        windows, n_frames = self.windows(audio)
        was_training = self.training
        self.eval()
        try:
            device = next(self.parameters()).device
            outs = [
                self(windows[i : i + batch_size].to(device))
                for i in range(0, windows.shape[0], batch_size)
            ]
        finally:
            self.train(was_training)
        half = _N_OVERLAP_FRAMES // 2

        def unwrap(parts: list[Tensor]) -> Tensor:
            stacked = torch.cat(parts)[:, half:-half]
            return stacked.reshape(-1, stacked.shape[-1])[:n_frames].cpu()

        return Posteriorgrams(
            contour=unwrap([o.contour for o in outs]),
            note=unwrap([o.note for o in outs]),
            onset=unwrap([o.onset for o in outs]),
        )


def _bce(prob: Tensor, target: Tensor, label_smoothing: float) -> Tensor:
    """Element-wise binary cross entropy of probabilities against smoothed labels (Keras')."""
    target = target * (1.0 - label_smoothing) + 0.5 * label_smoothing
    prob = prob.clamp(1e-7, 1.0 - 1e-7)
    return -(target * prob.log() + (1.0 - target) * (1.0 - prob).log())


def basic_pitch_loss(
    outputs: Posteriorgrams,
    targets: Posteriorgrams,
    *,
    label_smoothing: float = 0.2,
    positive_onset_weight: float = 0.95,
) -> Tensor:
    """The training loss of Basic Pitch: binary cross entropy on the three outputs.

    Contour and note use plain binary cross entropy with label smoothing; the onset loss is
    class-balanced: the mean over positive onset labels weighted by ``positive_onset_weight``
    plus the mean over negative ones weighted by ``1 - positive_onset_weight``. The three terms
    are summed with equal weights.

    Args:
        outputs: Predicted posteriorgrams (probabilities).
        targets: Labels of the same shapes, in ``[0, 1]``.
        label_smoothing: Labels are squeezed towards 0.5 by this amount.
        positive_onset_weight: Weight of the positive onset labels.

    Returns:
        A scalar loss.

    Example:
        >>> import torch
        >>> from weightspace.models import Posteriorgrams, basic_pitch_loss
        >>> half = Posteriorgrams(*(torch.full((1, 4, n), 0.5) for n in (264, 88, 88)))
        >>> silent = Posteriorgrams(*(torch.zeros(1, 4, n) for n in (264, 88, 88)))
        >>> round(float(basic_pitch_loss(half, silent)), 4)  # (1 + 1 + 0.05) * log 2
        1.421
    """
    if not 0.0 <= label_smoothing < 1.0:
        raise WeightspaceValueError(f"`label_smoothing` must be in [0, 1), got {label_smoothing!r}")
    if not 0.0 <= positive_onset_weight <= 1.0:
        raise WeightspaceValueError(
            f"`positive_onset_weight` must be in [0, 1], got {positive_onset_weight!r}"
        )
    contour = _bce(outputs.contour, targets.contour, label_smoothing).mean()
    note = _bce(outputs.note, targets.note, label_smoothing).mean()
    onset_bce = _bce(outputs.onset, targets.onset, label_smoothing)
    positive = targets.onset > 0
    zero = onset_bce.new_zeros(())
    pos = onset_bce[positive].mean() if bool(positive.any()) else zero
    neg = onset_bce[~positive].mean() if bool((~positive).any()) else zero
    onset = positive_onset_weight * pos + (1.0 - positive_onset_weight) * neg
    return contour + note + onset


def note_targets(
    notes: Tensor | np.ndarray, *, start: float, n_frames: int = BASIC_PITCH_FRAMES
) -> Posteriorgrams:
    """Training labels for one window: note activity, onsets and contours from note rows.

    Frame ``k`` is at ``start + k * 256 / 22050`` seconds. A note ``(onset, offset, pitch)``
    is active in frames ``round((onset - start) / hop)`` up to (not including)
    ``round((offset - start) / hop)``, marks its onset frame (when inside the window) and its
    contour bin ``3 * (pitch - 21)``. Pitches outside MIDI 21-108 are ignored.

    Args:
        notes: Rows ``(onset s, offset s, MIDI pitch, ...)`` (extra columns ignored).
        start: Time of the window's first frame in seconds.
        n_frames: Frames in the window.

    Returns:
        Binary :class:`Posteriorgrams` ``[n_frames, bins]`` (float32).

    Example:
        >>> import torch
        >>> from weightspace.models import note_targets
        >>> t = note_targets(torch.tensor([[0.0, 0.1, 69.0]]), start=0.0, n_frames=10)
        >>> t.note[:, 48].tolist()
        [1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 0.0]
    """
    array = np.asarray(
        notes.detach().cpu() if isinstance(notes, Tensor) else notes, dtype=np.float64
    )
    rows = array.reshape(-1, array.shape[-1]) if array.size else np.zeros((0, 3))
    hop = BASIC_PITCH_HOP / BASIC_PITCH_SAMPLE_RATE
    note = torch.zeros(n_frames, 88)
    onset = torch.zeros(n_frames, 88)
    contour = torch.zeros(n_frames, 264)
    for row in rows.tolist():
        first = round((row[0] - start) / hop)
        last = min(round((row[1] - start) / hop), n_frames)
        key = round(row[2]) - MIDI_OFFSET
        if not 0 <= key < 88 or last <= 0 or first >= n_frames:
            continue
        note[max(first, 0) : last, key] = 1.0
        contour[max(first, 0) : last, 3 * key] = 1.0
        if first >= 0:
            onset[first, key] = 1.0
    return Posteriorgrams(contour=contour, note=note, onset=onset)


# -- loading the released weights ---------------------------------------------------------------

#: Our parameter name -> shape of the convolution weight in the released ONNX graph, whose
#: kernels are (time, frequency).
_CONV_SHAPES = {
    "contour_conv": (8, 8, 3, 39),
    "contour_out": (1, 8, 5, 5),
    "note_conv": (32, 1, 7, 7),
    "note_out": (1, 32, 7, 3),
    "onset_conv": (32, 8, 5, 5),
    "onset_out": (1, 33, 3, 3),
}


def _onnx_state_dict(path: Path) -> tuple[dict[str, Tensor], tuple[float, float]]:
    """Read the six convolutions and the input batch norm from the released ONNX graph."""
    onnx = require_module("onnx", pip="onnx", extra="pitch")
    numpy_helper = require_module("onnx.numpy_helper", pip="onnx", extra="pitch")
    try:
        graph = onnx.load(str(path)).graph
    except Exception as exc:  # onnx raises DecodeError and friends for a non-ONNX file
        raise WeightspaceValueError(
            f"`path` could not be read as an ONNX model: {str(path)!r} ({exc}); pass the "
            "`nmp.onnx` file of the basic-pitch package or leave `path=None`"
        ) from None
    arrays: dict[str, np.ndarray] = {
        init.name: numpy_helper.to_array(init) for init in graph.initializer
    }
    state: dict[str, Tensor] = {}
    by_shape = {shape: name for name, shape in _CONV_SHAPES.items()}
    for node in graph.node:
        if node.op_type != "Conv" or len(node.input) < 2 or node.input[1] not in arrays:
            continue
        weight = arrays[node.input[1]]
        name = by_shape.get(tuple(weight.shape))
        if name is None:
            continue  # the constant-Q kernels and the anti-aliasing filter
        # (time, frequency) kernels in the graph; ours are (frequency, time).
        state[f"{name}.weight"] = torch.from_numpy(weight.copy()).transpose(2, 3).contiguous()
        bias = arrays[node.input[2]] if len(node.input) > 2 else np.zeros(weight.shape[0])
        state[f"{name}.bias"] = torch.from_numpy(np.asarray(bias, dtype=np.float32).copy())
    # The batch norm after the CQT is a Mul then an Add of 1-element constants.
    affine: list[float] = []
    for node in graph.node:
        if node.op_type in ("Mul", "Add") and "batch_normalization/" in "".join(node.input):
            value = arrays[node.input[1]]
            if value.size == 1:
                affine.append(float(value.reshape(())))
    missing = sorted(set(f"{n}.{p}" for n in _CONV_SHAPES for p in ("weight", "bias")) - set(state))
    if missing or len(affine) != 2:
        raise ShapeMismatchError(
            f"the ONNX graph at {str(path)!r} does not hold the Basic Pitch layers: missing "
            f"{missing or 'the input batch norm'}; pass the `icassp_2022/nmp.onnx` file of "
            "basic-pitch 0.4"
        )
    return state, (affine[0], affine[1])


def _identity_norm(
    norm: nn.BatchNorm2d, weight: Tensor | float = 1.0, bias: Tensor | float = 0.0
) -> None:
    with torch.no_grad():
        norm.weight.copy_(torch.as_tensor(weight, dtype=torch.float32).expand_as(norm.weight))
        norm.bias.copy_(torch.as_tensor(bias, dtype=torch.float32).expand_as(norm.bias))
        if norm.running_mean is not None and norm.running_var is not None:
            norm.running_mean.zero_()
            norm.running_var.fill_(1.0 - norm.eps)


def basic_pitch(*, pretrained: bool = True, path: str | Path | None = None) -> BasicPitch:
    """Return Basic Pitch, with the released ``icassp_2022`` weights by default.

    The weights are read from the ONNX file that the ``basic-pitch`` wheel ships
    (``basic_pitch/saved_models/icassp_2022/nmp.onnx``; install it with
    ``pip install --no-deps basic-pitch``, plus ``onnx``). Batch norm is folded into the
    convolutions there, so the loaded batch-norm layers are identities (running variance
    ``1 - eps``) and the folded scale and shift of the input batch norm are its affine weights.
    On rendered audio the loaded model's posteriorgrams equal onnxruntime's to within 1e-5.

    Args:
        pretrained: Load the released weights. ``False`` gives a randomly initialised network
            (seeded by the global torch generator) and needs no package.
        path: An ONNX file of your own with the same graph. ``None`` uses the wheel's file.

    Returns:
        The network, on the CPU, in eval mode.

    Raises:
        MissingSourceError: if ``path`` is ``None`` and ``basic-pitch`` is not installed, or
            ``onnx`` is missing.
        ShapeMismatchError: if the ONNX graph lacks one of the layers.
        WeightspaceValueError: if ``path`` does not exist or is not an ONNX file, or is given
            with ``pretrained=False``.

    Example:
        >>> from weightspace.models import basic_pitch
        >>> model = basic_pitch()
        >>> round(model.cqt_norm.weight.item(), 4), tuple(model.contour_conv.weight.shape)
        (2.4807, (8, 8, 39, 3))
    """
    model = BasicPitch()
    if not pretrained:
        if path is not None:
            raise WeightspaceValueError(
                f"`path` is {str(path)!r} but `pretrained=False`; pass `pretrained=True` to "
                "load the weights at `path`"
            )
        return model.eval()
    if path is None:
        source = package_file(
            "basic_pitch",
            "saved_models/icassp_2022/nmp.onnx",
            pip="--no-deps basic-pitch",
            extra="pitch",
        )
    else:
        source = user_path(path)
    state, (scale, shift) = _onnx_state_dict(source)
    model.load_state_dict(state, strict=False)  # the batch norms are set below
    _identity_norm(model.cqt_norm, scale, shift)
    _identity_norm(model.contour_norm)
    _identity_norm(model.onset_norm)
    logger.info("loaded Basic Pitch from %s", source)
    return model.eval()


def onnx_session(path: str | Path | None = None) -> Any:
    """An onnxruntime session of the released model (for comparisons and benchmarks).

    Args:
        path: The ONNX file; ``None`` uses the one in the ``basic-pitch`` wheel.

    Returns:
        An ``onnxruntime.InferenceSession`` on the CPU.

    Raises:
        MissingSourceError: if onnxruntime or basic-pitch is not installed.
    """
    ort = require_module("onnxruntime", pip="onnxruntime", extra="pitch")
    if path is None:
        source = package_file(
            "basic_pitch",
            "saved_models/icassp_2022/nmp.onnx",
            pip="--no-deps basic-pitch",
            extra="pitch",
        )
    else:
        source = user_path(path)
    try:
        return ort.InferenceSession(str(source), providers=["CPUExecutionProvider"])
    except Exception as exc:  # pragma: no cover - depends on the file
        raise MissingSourceError(f"onnxruntime could not open {source}: {exc}") from None


def onnx_posteriorgrams(session: Any, windows: Tensor | np.ndarray) -> Posteriorgrams:
    """Run model windows through an onnxruntime session of the released model.

    One window per call, as the official ``run_inference`` does: under onnxruntime the
    released graph's output for a silent (all-zero) window changes with the other windows of
    a batch (by up to 0.05), so batching would not reproduce the official results.

    Args:
        session: From :func:`onnx_session`.
        windows: ``[n_windows, 43844]`` audio windows.

    Returns:
        Posteriorgrams ``[n_windows, 172, bins]``.
    """
    x = np.asarray(windows, dtype=np.float32)
    if x.ndim != 2 or x.shape[1] != BASIC_PITCH_WINDOW:
        raise WeightspaceValueError(
            f"`windows` must be [n_windows, {BASIC_PITCH_WINDOW}], got shape {list(x.shape)}"
        )
    names = ["StatefulPartitionedCall:1", "StatefulPartitionedCall:2", "StatefulPartitionedCall:0"]
    outs = [session.run(names, {"serving_default_input_2:0": w[None, :, None]}) for w in x]
    note, onset, contour = (np.concatenate([o[i] for o in outs]) for i in range(3))
    return Posteriorgrams(
        contour=torch.from_numpy(contour),
        note=torch.from_numpy(note),
        onset=torch.from_numpy(onset),
    )
