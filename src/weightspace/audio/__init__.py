"""Audio: a log-mel front end, spectral losses and a differentiable synthesizer.

The pieces that every audio study of the library shares: the log-mel features that the
speech and recording examples feed their networks, and (for sound matching) a batched
synthesizer whose parameters gradients reach, with the spectral losses to compare sounds.
"""

from __future__ import annotations

from weightspace.audio._features import LogMel as LogMel
from weightspace.audio._features import log_mel as log_mel
from weightspace.audio._features import log_spectrogram as log_spectrogram
from weightspace.audio._features import mel_filterbank as mel_filterbank
from weightspace.audio._features import power_spectrogram as power_spectrogram

__all__: list[str] = [
    "LogMel",
    "log_mel",
    "log_spectrogram",
    "mel_filterbank",
    "power_spectrogram",
]
