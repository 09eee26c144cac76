"""Audio: a log-mel front end, spectral losses and a differentiable synthesizer.

The pieces that every audio study of the library shares: the log-mel features that the
speech and recording examples feed their networks, and (for sound matching) a batched
synthesizer whose parameters gradients reach, with the spectral losses to compare sounds.
"""

from __future__ import annotations

__all__: list[str] = []
