"""Audio: a log-mel front end, spectral losses and a differentiable synthesizer.

The pieces that every audio study of the library shares: the log-mel features that the
speech and recording examples feed their networks, and (for sound matching) a batched
synthesizer whose parameters gradients reach, with the spectral losses to compare sounds.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from weightspace.audio._cqt import CQT as CQT
from weightspace.audio._cqt import cqt_frequencies as cqt_frequencies
from weightspace.audio._cqt import harmonic_stack as harmonic_stack
from weightspace.audio._cqt import normalized_log as normalized_log
from weightspace.audio._features import LogMel as LogMel
from weightspace.audio._features import log_mel as log_mel
from weightspace.audio._features import log_spectrogram as log_spectrogram
from weightspace.audio._features import mel_filterbank as mel_filterbank
from weightspace.audio._features import power_spectrogram as power_spectrogram
from weightspace.audio._flow import ConditionalRealNVP as ConditionalRealNVP
from weightspace.audio._flow import flow_nll_loss as flow_nll_loss
from weightspace.audio._losses import cents as cents
from weightspace.audio._losses import estimate_pitch as estimate_pitch
from weightspace.audio._losses import mel_distance as mel_distance
from weightspace.audio._losses import spectral_distance as spectral_distance
from weightspace.audio._match import MatchResult as MatchResult
from weightspace.audio._match import match as match
from weightspace.audio._synth import SYNTH_PARAMS as SYNTH_PARAMS
from weightspace.audio._synth import Param as Param
from weightspace.audio._synth import Synth as Synth
from weightspace.audio._synth import adsr as adsr
from weightspace.audio._transcription import frame_accuracy as frame_accuracy
from weightspace.audio._transcription import note_f_measure as note_f_measure
from weightspace.audio._transcription import notes_array as notes_array
from weightspace.audio._transcription import transcription_scores as transcription_scores

if TYPE_CHECKING:
    from weightspace.audio._env import SoundMatchEnv as SoundMatchEnv

__all__: list[str] = [
    "CQT",
    "SYNTH_PARAMS",
    "ConditionalRealNVP",
    "LogMel",
    "MatchResult",
    "Param",
    "SoundMatchEnv",
    "Synth",
    "adsr",
    "cents",
    "cqt_frequencies",
    "estimate_pitch",
    "flow_nll_loss",
    "frame_accuracy",
    "harmonic_stack",
    "log_mel",
    "log_spectrogram",
    "match",
    "mel_distance",
    "mel_filterbank",
    "normalized_log",
    "note_f_measure",
    "notes_array",
    "power_spectrogram",
    "spectral_distance",
    "transcription_scores",
]


def __getattr__(name: str) -> Any:
    # The sound-matching environment needs gymnasium (the `rl` extra): import it on first use.
    if name == "SoundMatchEnv":
        from weightspace.audio._env import SoundMatchEnv

        return SoundMatchEnv
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
