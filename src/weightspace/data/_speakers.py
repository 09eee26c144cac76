"""The synthetic speakers of :func:`~weightspace.data.spoken_words` and its word lists.

A :class:`Speaker` is a text-to-speech engine (espeak-ng or flite), a voice and variant, and a
base pitch and speed; :data:`SPEAKERS` is the built-in grid of them.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Literal

from weightspace._errors import WeightspaceValueError

__all__ = ["COMMAND_WORDS", "DIGIT_WORDS", "SPEAKERS", "Engine", "Gender", "Speaker"]


Engine = Literal["espeak-ng", "flite"]
Gender = Literal["male", "female", "unknown"]

DIGIT_WORDS: tuple[str, ...] = (
    "zero",
    "one",
    "two",
    "three",
    "four",
    "five",
    "six",
    "seven",
    "eight",
    "nine",
)
"""The ten digit words, ``"zero"`` to ``"nine"``; label ``i`` is the digit ``i``."""

COMMAND_WORDS: tuple[str, ...] = (
    "yes",
    "no",
    "up",
    "down",
    "left",
    "right",
    "on",
    "off",
    "stop",
    "go",
)
"""Ten command words, as in the Speech Commands data set."""


# flite's built-in voices and the recorded speakers behind them (CMU ARCTIC and earlier).
_FLITE_VOICES: dict[str, Gender] = {
    "kal": "male",  # Kevin Lenzo, US English, diphone, 8 kHz
    "kal16": "male",  # the same at 16 kHz
    "awb": "male",  # Alan W Black, Scottish English
    "rms": "male",  # Richard M. Stallman, US English
    "slt": "female",  # US English female speaker of CMU ARCTIC
}
# flite voices that ignore the `f0_shift` feature; their pitch is shifted by resampling.
_FLITE_FIXED_F0 = frozenset({"rms"})


_ESPEAK_VOICE_RE = re.compile(r"[a-z]{2,3}(?:-[A-Za-z0-9]{1,8})*")
_ESPEAK_VARIANT_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_]{0,31}")


def _gender_of(engine: str, voice: str, variant: str | None) -> Gender:
    if engine == "flite":
        return _FLITE_VOICES.get(voice, "unknown")
    if variant is not None and re.fullmatch(r"m\d+", variant):
        return "male"
    if variant is not None and re.fullmatch(r"f\d+", variant):
        return "female"
    return "unknown"


@dataclass(frozen=True)
class Speaker:
    """One synthetic speaker: a text-to-speech engine and voice with a base pitch and speed.

    Two speakers differ when any of ``engine``, ``voice``, ``variant``, ``pitch`` or ``speed``
    differ. Pitch and speed are factors relative to the engine's defaults: for espeak-ng the
    command line gets ``-p round(50 * pitch)`` (its 0-99 scale) and ``-s round(175 * speed)``
    (words per minute); for flite ``--setf f0_shift=pitch`` and
    ``--setf duration_stretch=1/speed``. The flite voice ``rms`` ignores ``f0_shift``, so its
    pitch is changed by resampling instead (which also shifts its formants, like a smaller or
    larger vocal tract).

    Example:
        >>> Speaker("espeak-ng", "en-gb-x-rp", "f2", pitch=1.1).name
        'en-gb-x-rp+f2'
        >>> Speaker("flite", "awb").gender
        'male'

    Attributes:
        engine: ``"espeak-ng"`` or ``"flite"``.
        voice: For espeak-ng a language voice such as ``"en-us"``, ``"en-gb-x-rp"``,
            ``"en-029"`` or ``"de"`` (``espeak-ng --voices``; other languages' voices read the
            English words with their own rules, a strong accent). For flite one of ``"kal"``,
            ``"kal16"``, ``"awb"``, ``"rms"``, ``"slt"``.
        variant: espeak-ng voice variant, such as ``"m1"``..``"m7"``, ``"f1"``..``"f5"``
            (``espeak-ng --voices=variant``), or ``None``. Must be ``None`` for flite.
        pitch: Base pitch factor, in ``[0.5, 2]``.
        speed: Base speaking-rate factor, in ``[0.5, 2]``.
        name: Unique name; when empty it is derived as ``"<voice>+<variant>"`` for espeak-ng
            and ``"flite-<voice>"`` for flite.
    """

    engine: Engine
    voice: str
    variant: str | None = None
    pitch: float = 1.0
    speed: float = 1.0
    name: str = ""

    def __post_init__(self) -> None:
        if self.engine == "espeak-ng":
            if not isinstance(self.voice, str) or not _ESPEAK_VOICE_RE.fullmatch(self.voice):
                raise WeightspaceValueError(
                    f"`voice` must be an espeak-ng voice name such as 'en-us' or 'en-gb-x-rp', "
                    f"got {self.voice!r}; list them with `espeak-ng --voices`"
                )
            if self.variant is not None and (
                not isinstance(self.variant, str) or not _ESPEAK_VARIANT_RE.fullmatch(self.variant)
            ):
                raise WeightspaceValueError(
                    f"`variant` must be an espeak-ng variant name such as 'm3' or 'f2', or None, "
                    f"got {self.variant!r}; list them with `espeak-ng --voices=variant`"
                )
        elif self.engine == "flite":
            if self.voice not in _FLITE_VOICES:
                raise WeightspaceValueError(
                    f"`voice` must be one of flite's voices {sorted(_FLITE_VOICES)}, "
                    f"got {self.voice!r}"
                )
            if self.variant is not None:
                raise WeightspaceValueError(
                    f"`variant` must be None for flite voices, got {self.variant!r}; "
                    "use `pitch` and `speed` to make variants of a flite voice"
                )
        else:
            raise WeightspaceValueError(
                f"`engine` must be 'espeak-ng' or 'flite', got {self.engine!r}"
            )
        for arg in ("pitch", "speed"):
            value = getattr(self, arg)
            if isinstance(value, bool) or not isinstance(value, int | float):
                raise WeightspaceValueError(f"`{arg}` must be a number, got {value!r}")
            if not 0.5 <= value <= 2.0:
                raise WeightspaceValueError(
                    f"`{arg}` must be a factor in [0.5, 2] (1 is the engine's default), "
                    f"got {value!r}"
                )
            object.__setattr__(self, arg, float(value))
        if not self.name:
            derived = (
                f"flite-{self.voice}"
                if self.engine == "flite"
                else self.voice + (f"+{self.variant}" if self.variant else "")
            )
            object.__setattr__(self, "name", derived)
        if not isinstance(self.name, str) or not self.name.isprintable():
            raise WeightspaceValueError(f"`name` must be a printable string, got {self.name!r}")

    @property
    def gender(self) -> Gender:
        """Coarse gender label: ``"male"``, ``"female"`` or ``"unknown"``.

        espeak-ng variants ``m*`` are male and ``f*`` female; flite voices follow their
        recorded speakers (``slt`` female, the others male); anything else is unknown.
        """
        return _gender_of(self.engine, self.voice, self.variant)

    def _spec(self) -> dict[str, Any]:
        """The fields that determine the audio (everything but the name)."""
        return {
            "engine": self.engine,
            "voice": self.voice,
            "variant": self.variant,
            "pitch": self.pitch,
            "speed": self.speed,
        }

    def _record(self) -> dict[str, Any]:
        return {"name": self.name, **self._spec(), "gender": self.gender}


def _espeak(voice: str, variant: str, pitch: float, speed: float) -> Speaker:
    return Speaker("espeak-ng", voice, variant, pitch=pitch, speed=speed)


SPEAKERS: tuple[Speaker, ...] = (
    # US English (espeak-ng "en-us"), 5 speakers
    _espeak("en-us", "m1", 1.0, 1.0),
    _espeak("en-us", "m3", 0.9, 0.95),
    _espeak("en-us", "f1", 1.0, 1.0),
    _espeak("en-us", "f3", 1.1, 1.05),
    _espeak("en-us", "f5", 0.95, 0.9),
    # New York City
    _espeak("en-us-nyc", "m2", 1.0, 1.1),
    _espeak("en-us-nyc", "m7", 0.9, 1.0),
    _espeak("en-us-nyc", "f2", 1.05, 1.0),
    # British English (espeak-ng "en-gb")
    _espeak("en-gb", "m4", 1.0, 1.0),
    _espeak("en-gb", "m5", 1.1, 0.95),
    _espeak("en-gb", "f4", 0.95, 1.05),
    # Received Pronunciation
    _espeak("en-gb-x-rp", "m2", 0.95, 0.9),
    _espeak("en-gb-x-rp", "m6", 1.0, 1.05),
    _espeak("en-gb-x-rp", "f1", 1.1, 1.0),
    _espeak("en-gb-x-rp", "f3", 1.0, 0.95),
    # Scottish English
    _espeak("en-gb-scotland", "m1", 0.9, 1.0),
    _espeak("en-gb-scotland", "m3", 1.05, 1.1),
    _espeak("en-gb-scotland", "f2", 1.0, 0.95),
    # Lancaster
    _espeak("en-gb-x-gbclan", "m4", 1.0, 0.95),
    _espeak("en-gb-x-gbclan", "m6", 0.95, 1.05),
    _espeak("en-gb-x-gbclan", "f3", 1.05, 1.0),
    # West Midlands
    _espeak("en-gb-x-gbcwmd", "m5", 0.9, 1.05),
    _espeak("en-gb-x-gbcwmd", "m7", 1.05, 0.95),
    _espeak("en-gb-x-gbcwmd", "f5", 1.0, 1.0),
    # Caribbean English
    _espeak("en-029", "m2", 1.0, 0.9),
    _espeak("en-029", "m3", 1.1, 1.0),
    _espeak("en-029", "f4", 0.95, 1.1),
    _espeak("en-029", "f1", 1.05, 0.95),
    # flite's four recorded voices
    Speaker("flite", "kal16"),
    Speaker("flite", "awb"),
    Speaker("flite", "rms"),
    Speaker("flite", "slt"),
)
"""The default speaker grid: 32 speakers, 19 male and 13 female.

28 espeak-ng speakers cover eight English accents (``en-us``, ``en-us-nyc``, ``en-gb``,
``en-gb-x-rp``, ``en-gb-scotland``, ``en-gb-x-gbclan``, ``en-gb-x-gbcwmd``, ``en-029``), each
with male (``+m1``..``+m7``) and female (``+f1``..``+f5``) variants and base pitch and speed
factors between 0.9 and 1.1; their names are ``"<voice>+<variant>"``, e.g. ``"en-gb-x-rp+f1"``.
The other four are flite's voices ``"flite-kal16"``, ``"flite-awb"``, ``"flite-rms"`` (male)
and ``"flite-slt"`` (female), at their own pitch and speed. Voices of other languages (``"de"``,
``"fr"``, ...) are left out because they read English words by their own spelling rules; pass
them as :class:`Speaker` objects to get accented speakers.
"""

_SPEAKERS_BY_NAME = {s.name: s for s in SPEAKERS}
