"""Real recordings from Debian packages: spoken captions, sound effects and music samples.

Three loaders read audio files that Debian packages install and turn them into fixed-length
clips at one sample rate:

* :func:`stamp_captions`: human recordings of the captions of Tux Paint's clip-art stamps in
  up to 13 languages (package ``tuxpaint-stamps-default``), labelled by language. Every
  recording belongs to a stamp (``animals/mammals/badger``), so that training and test sets
  can be split by stamp: a caption's words never reach both sides.
* :func:`sound_effects`: the stamps' own sound effects (animal calls, a kettle, a toilet...),
  labelled by the stamp's category (``animals``, ``household``, ...).
* :func:`sonic_pi_samples`: the 165 instrument and effect samples of Sonic Pi (package
  ``sonic-pi-samples``), labelled by the category of their file-name prefix (``bd`` for bass
  drums, ``tabla``, ``ambi``, ...), optionally cut into several windows each.

Every file is read with :mod:`soundfile`, mixed down to mono, resampled to ``sample_rate``
(:func:`scipy.signal.resample_poly`) and trimmed of leading and trailing silence (10 ms frames
40 dB below the file's loudest). Then either the middle ``duration`` seconds are kept (shorter
audio is centred and zero-padded), or, with ``hop``, consecutive windows of ``duration``
seconds are cut every ``hop`` seconds. Each clip is peak-normalised to 0.9. The result is a
:class:`Recordings` data set, cached as a safetensors file under
``$WEIGHTSPACE_CACHE/recordings/`` whose name hashes the arguments and the list of source files
(names and sizes), so that an upgraded package is read again.

Example:
    >>> from weightspace.data import stamp_captions
    >>> ds = stamp_captions(["fr", "ru"], categories=["animals/birds"], progress=False)
    >>> ds.classes, ds.sample_rate, ds.waveforms.shape[1]
    (('fr', 'ru'), 16000, 24000)
    >>> train, test = ds.split((0.8, 0.2), seed=0)
    >>> set(train.item_name).isdisjoint(test.item_name)  # no stamp on both sides
    True

Determinism:
    Decoding, resampling and cutting involve no randomness; the cached file is identical bit
    for bit across builds with the same arguments and source files on the same machine.
    :meth:`Recordings.split` is seeded.
"""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from pathlib import Path

from weightspace._errors import WeightspaceValueError
from weightspace.data._clips import check_int
from weightspace.data._recording_build import (
    _FORMAT_VERSION,
    _audio_files,
    _build,
    _check_categories,
    _check_list,
    _common_args,
    _listing_digest,
    _root,
    _Source,
)
from weightspace.data._recording_set import Recordings, _under

__all__ = [
    "SONIC_PI_CATEGORIES",
    "STAMP_LANGUAGES",
    "sonic_pi_samples",
    "sound_effects",
    "stamp_captions",
]


_STAMPS_DIR = Path("/usr/share/tuxpaint/stamps")
_STAMPS_APT = "tuxpaint-stamps-default"
_SONIC_PI_DIR = Path("/usr/share/sonic-pi/samples")
_SONIC_PI_APT = "sonic-pi-samples"

STAMP_LANGUAGES: tuple[str, ...] = ("be", "bg", "ca", "el", "es", "fr", "ro", "ru")
"""The languages with at least ~700 recorded stamp captions, the default of
:func:`stamp_captions`: Belarusian, Bulgarian, Catalan, Greek, Spanish, French, Romanian and
Russian. Danish (``"da"``, ~320), English (``"en"``, ~70), Lithuanian (``"lt"``), Dutch
(``"nl"``) and Malayalam (``"ml"``) have fewer and must be asked for by name."""

SONIC_PI_CATEGORIES: tuple[str, ...] = (
    "ambi",
    "bass",
    "bd",
    "drum",
    "elec",
    "glitch",
    "guit",
    "loop",
    "mehackit",
    "misc",
    "perc",
    "sn",
    "tabla",
    "vinyl",
)
"""The 14 file-name prefixes of Sonic Pi's samples (the default of :func:`sonic_pi_samples`):
ambient sounds, bass notes, bass drums (``bd``), acoustic drum kit, electronic sounds, glitches,
guitar, drum loops, Mehackit phones and robots, miscellaneous, percussion, snares (``sn``),
tabla strokes and vinyl effects."""

# `NAME_desc.ogg` (English) or `NAME_desc_LANG.ogg`, LANG like "fr" or "pt_BR".
_CAPTION_RE = re.compile(r"(?P<stamp>.+)_desc(?:_(?P<lang>[a-z]{2,3}(?:_[A-Za-z]{2,4})?))?\.ogg")
_LANG_RE = re.compile(r"[a-z]{2,3}(?:_[A-Za-z]{2,4})?")
_STAMP_IMAGE = (".png", ".svg", ".txt")
_EFFECTS_EXCLUDED = ("symbols/math", "symbols/alphabets")  # spoken numbers and letters


# ---------------------------------------------------------------------------------------------
# Tux Paint stamps: captions and sound effects
# ---------------------------------------------------------------------------------------------


def _stamp_files(root: Path) -> list[Path]:
    files = [f for f in _audio_files(root) if f.suffix == ".ogg"]
    if not files:
        raise WeightspaceValueError(
            f"`path` {str(root)!r} holds no .ogg file; pass the folder of Tux Paint's stamps "
            f"({_STAMPS_DIR})"
        )
    return files


def stamp_captions(
    languages: Sequence[str] | None = None,
    *,
    categories: Sequence[str] | None = None,
    sample_rate: int = 16000,
    duration: float = 1.5,
    path: str | os.PathLike[str] | None = None,
    progress: bool = True,
) -> Recordings:
    """Load the recorded captions of Tux Paint's stamps, labelled by language.

    Each stamp (a clip-art image such as ``animals/mammals/badger``) has a short caption
    ("A badger.") read aloud by volunteers in several languages, one file per language
    (``badger_desc_fr.ogg``; ``badger_desc.ogg`` is English, here ``"en"``). About 900 stamps
    are recorded in each of Bulgarian, Catalan, French, Romanian, Russian and Spanish, and about
    700 in Belarusian and Greek; most languages seem to be read by one or a few voices, so a
    language classifier also learns the voices and their microphones. Every recording gives
    one clip: its middle ``duration`` seconds after the silence around it is trimmed (shorter
    recordings are centred and zero-padded), peak-normalised to 0.9.

    Example:
        >>> ds = stamp_captions(["es", "el"], categories=["food"], progress=False)
        >>> ds.counts()
        {'es': 72, 'el': 66}
        >>> sorted(set(ds.category))[:2]
        ['food', 'food/dessert']

    Shapes:
        - ``waveforms``: ``[N, T]`` with ``T = round(duration * sample_rate)``, ordered by
          stamp path, then by the order of ``languages``.

    Args:
        languages: Language codes as in the file names (``"fr"``, ``"ru"``, ``"en"``...);
            defaults to :data:`STAMP_LANGUAGES`. Labels follow this order.
        categories: Stamp folders to keep, such as ``["animals", "food/fruit"]`` (a folder
            keeps everything below it); ``None`` keeps all.
        sample_rate: Output sample rate in Hz, in [1000, 192000].
        duration: Length of every clip in seconds, in (0, 30].
        path: A folder laid out like ``/usr/share/tuxpaint/stamps``; ``None`` uses the Debian
            package's folder.
        progress: Show a progress bar while reading the files.

    Returns:
        A :class:`Recordings` whose items are the stamps and whose classes are the languages.

    Raises:
        MissingSourceError: if ``path`` is ``None`` and ``tuxpaint-stamps-default`` is not
            installed (the message says ``apt-get install -y tuxpaint-stamps-default``), or
            ``soundfile`` is missing.
        WeightspaceValueError: if an argument is invalid, such as a language with no recording.
    """
    folder = _root(path, _STAMPS_DIR, _STAMPS_APT, "Tux Paint's stamps")
    langs = _check_list("languages", languages, STAMP_LANGUAGES)
    for lang in langs:
        if not _LANG_RE.fullmatch(lang):
            raise WeightspaceValueError(
                f"`languages` has {lang!r}, which is not a language code such as 'fr' or 'pt_BR'"
            )
    rate, seconds, length, _, _ = _common_args(sample_rate, duration, None, 1)
    files = _stamp_files(folder)
    by_stamp: dict[str, dict[str, Path]] = {}
    found: dict[str, int] = {}
    for f in files:
        m = _CAPTION_RE.fullmatch(f.name)
        if m is None:
            continue
        lang = m.group("lang") or "en"
        found[lang] = found.get(lang, 0) + 1
        stamp = (f.parent / m.group("stamp")).as_posix()
        by_stamp.setdefault(stamp, {})[lang] = f
    missing = [lang for lang in langs if lang not in found]
    if missing:
        have = {k: found[k] for k in sorted(found)}
        raise WeightspaceValueError(
            f"`languages` has {missing}, which have no recorded caption under {folder}; "
            f"languages found (with their number of recordings): {have}"
        )
    stamp_dirs = sorted({Path(s).parent.as_posix() for s in by_stamp})
    cats = _check_categories(categories, stamp_dirs)
    items: list[str] = []
    item_cats: list[str] = []
    sources: list[_Source] = []
    for stamp in sorted(by_stamp):
        cat = Path(stamp).parent.as_posix()
        if cats is not None and not any(_under(cat, c) for c in cats):
            continue
        recorded = [
            (k, by_stamp[stamp][lang]) for k, lang in enumerate(langs) if lang in by_stamp[stamp]
        ]
        if not recorded:
            continue
        for label, f in recorded:
            sources.append(_Source(folder / f, label, len(items)))
        items.append(stamp)
        item_cats.append(cat)
    if not sources:
        raise WeightspaceValueError(
            f"no stamp in `categories` {list(cats or [])} has a caption in `languages` "
            f"{list(langs)}; widen one of them"
        )
    meta = {
        "kind": "stamp_captions",
        "format_version": _FORMAT_VERSION,
        "languages": list(langs),
        "categories": None if cats is None else list(cats),
        "sample_rate": rate,
        "duration": seconds,
        "root": str(folder),
        "files": _listing_digest(folder, [s.path.relative_to(folder) for s in sources]),
    }
    return _build(
        "stamp_captions",
        meta,
        sources,
        langs,
        items,
        item_cats,
        sample_rate=rate,
        length=length,
        hop=None,
        max_clips=1,
        progress=progress,
        source_name=_STAMPS_APT,
    )


def sound_effects(
    categories: Sequence[str] | None = None,
    *,
    depth: int = 1,
    sample_rate: int = 16000,
    duration: float = 1.0,
    hop: float | None = None,
    max_clips_per_file: int = 8,
    path: str | os.PathLike[str] | None = None,
    progress: bool = True,
) -> Recordings:
    """Load the real sound effects of Tux Paint's stamps, labelled by the stamp's category.

    Many stamps come with a recorded sound (``animals/birds/owl.ogg``: an owl's call; a
    kettle, a toilet, a camera shutter...), 108 in all, two thirds of them animals. The spoken
    numbers and letters under ``symbols/math`` and ``symbols/alphabets`` are speech, not
    effects, and are left out. The label is the stamp's folder cut to ``depth`` levels:
    ``depth=1`` gives ``"animals"``, ``"household"``, ...; ``depth=2`` gives
    ``"animals/birds"``, ``"animals/mammals"``, ...

    Example:
        >>> ds = sound_effects(["animals/birds", "animals/insects", "household"], progress=False)
        >>> ds.counts()
        {'animals': 21, 'household': 12}
        >>> sound_effects(["animals/birds", "animals/insects"], depth=2, progress=False).classes
        ('animals/birds', 'animals/insects')

    Args:
        categories: Stamp folders to keep (a folder keeps everything below it); ``None`` keeps
            all.
        depth: Number of folder levels in the label, at least 1.
        sample_rate: Output sample rate in Hz, in [1000, 192000].
        duration: Length of every clip in seconds, in (0, 30].
        hop: ``None`` keeps one clip per file (its middle); a number of seconds cuts windows
            every ``hop`` seconds (at most ``max_clips_per_file``, spread over the file).
        max_clips_per_file: Most windows kept per file when ``hop`` is given.
        path: A folder laid out like ``/usr/share/tuxpaint/stamps``; ``None`` uses the Debian
            package's folder.
        progress: Show a progress bar while reading the files.

    Returns:
        A :class:`Recordings` whose items are the stamps and whose classes are the categories,
        sorted.

    Raises:
        MissingSourceError: if ``path`` is ``None`` and ``tuxpaint-stamps-default`` is not
            installed, or ``soundfile`` is missing.
        WeightspaceValueError: if an argument is invalid.
    """
    folder = _root(path, _STAMPS_DIR, _STAMPS_APT, "Tux Paint's stamps")
    depth = check_int("depth", depth, 1)
    rate, seconds, length, hop_n, max_clips = _common_args(
        sample_rate, duration, hop, max_clips_per_file
    )
    files = _stamp_files(folder)
    names = {f.as_posix() for f in _all_files(folder)}
    effects: list[Path] = []
    for f in files:
        if "_desc" in f.name or any(_under(f.parent.as_posix(), e) for e in _EFFECTS_EXCLUDED):
            continue
        stem = f.with_suffix("").as_posix()
        if any(stem + ext in names for ext in _STAMP_IMAGE):
            effects.append(f)
    if not effects:
        raise WeightspaceValueError(f"`path` {str(folder)!r} holds no stamp sound effect")
    cats = _check_categories(categories, sorted({f.parent.as_posix() for f in effects}))
    if cats is not None:
        effects = [f for f in effects if any(_under(f.parent.as_posix(), c) for c in cats)]
    label_of = {f: "/".join(f.parent.parts[:depth]) for f in effects}
    classes = tuple(sorted(set(label_of.values())))
    sources = [_Source(folder / f, classes.index(label_of[f]), k) for k, f in enumerate(effects)]
    meta = {
        "kind": "sound_effects",
        "format_version": _FORMAT_VERSION,
        "categories": None if cats is None else list(cats),
        "depth": depth,
        "sample_rate": rate,
        "duration": seconds,
        "hop": hop_n,
        "max_clips_per_file": max_clips if hop_n is not None else None,
        "root": str(folder),
        "files": _listing_digest(folder, effects),
    }
    return _build(
        "sound_effects",
        meta,
        sources,
        classes,
        [f.with_suffix("").as_posix() for f in effects],
        [f.parent.as_posix() for f in effects],
        sample_rate=rate,
        length=length,
        hop=hop_n,
        max_clips=max_clips,
        progress=progress,
        source_name=_STAMPS_APT,
    )


def _all_files(root: Path) -> list[Path]:
    found: list[Path] = []
    for folder, _, files in os.walk(root):
        found.extend((Path(folder) / name).relative_to(root) for name in files)
    return found


# ---------------------------------------------------------------------------------------------
# Sonic Pi's samples
# ---------------------------------------------------------------------------------------------


def sonic_pi_samples(
    categories: Sequence[str] | None = None,
    *,
    sample_rate: int = 16000,
    duration: float = 1.0,
    hop: float | None = None,
    max_clips_per_file: int = 8,
    path: str | os.PathLike[str] | None = None,
    progress: bool = True,
) -> Recordings:
    """Load Sonic Pi's recorded samples, labelled by the category of their file-name prefix.

    The Debian package ``sonic-pi-samples`` installs 165 FLAC samples (mostly from
    freesound.org, CC0): drum hits, bass notes, tabla strokes, ambient textures, drum loops,
    ... named ``<category>_<name>.flac`` (``bd_808.flac``, ``tabla_ghe1.flac``). The classes
    are the categories (see :data:`SONIC_PI_CATEGORIES`), the items the files. Many samples
    are shorter than a second (a drum hit); loops and ambient sounds last up to 11 s, and
    ``hop`` cuts several windows from them.

    Example:
        >>> ds = sonic_pi_samples(["ambi", "loop"], hop=0.5, max_clips_per_file=4,
        ...                       progress=False)
        >>> ds.counts(), len(set(ds.item_name))
        ({'ambi': 37, 'loop': 56}, 28)

    Args:
        categories: Prefixes to keep, in label order; defaults to every prefix found, sorted.
        sample_rate: Output sample rate in Hz, in [1000, 192000].
        duration: Length of every clip in seconds, in (0, 30].
        hop: ``None`` keeps one clip per file (its middle); a number of seconds cuts windows
            every ``hop`` seconds (at most ``max_clips_per_file``, spread over the file).
        max_clips_per_file: Most windows kept per file when ``hop`` is given.
        path: A folder of ``<category>_<name>`` audio files (FLAC, Ogg or WAV); ``None`` uses
            ``/usr/share/sonic-pi/samples``.
        progress: Show a progress bar while reading the files.

    Returns:
        A :class:`Recordings` whose items are the sample files (without extension).

    Raises:
        MissingSourceError: if ``path`` is ``None`` and ``sonic-pi-samples`` is not installed
            (the message says ``apt-get install -y sonic-pi-samples``), or ``soundfile`` is
            missing.
        WeightspaceValueError: if an argument is invalid, such as an unknown category.
    """
    folder = _root(path, _SONIC_PI_DIR, _SONIC_PI_APT, "Sonic Pi's samples")
    rate, seconds, length, hop_n, max_clips = _common_args(
        sample_rate, duration, hop, max_clips_per_file
    )
    files = [f for f in _audio_files(folder) if f.parent == Path(".") and "_" in f.stem]
    if not files:
        raise WeightspaceValueError(
            f"`path` {str(folder)!r} holds no '<category>_<name>' audio file; pass the folder of "
            f"Sonic Pi's samples ({_SONIC_PI_DIR})"
        )
    prefix = {f: f.stem.split("_", 1)[0] for f in files}
    known = sorted(set(prefix.values()))
    classes = _check_list("categories", categories, known)
    unknown = [c for c in classes if c not in known]
    if unknown:
        raise WeightspaceValueError(
            f"`categories` has {unknown}, which are not sample prefixes under {folder}; "
            f"choose from {known}"
        )
    chosen = [f for f in files if prefix[f] in classes]
    sources = [_Source(folder / f, classes.index(prefix[f]), k) for k, f in enumerate(chosen)]
    meta = {
        "kind": "sonic_pi_samples",
        "format_version": _FORMAT_VERSION,
        "categories": list(classes),
        "sample_rate": rate,
        "duration": seconds,
        "hop": hop_n,
        "max_clips_per_file": max_clips if hop_n is not None else None,
        "root": str(folder),
        "files": _listing_digest(folder, chosen),
    }
    return _build(
        "sonic_pi_samples",
        meta,
        sources,
        classes,
        [f.stem for f in chosen],
        [prefix[f] for f in chosen],
        sample_rate=rate,
        length=length,
        hop=hop_n,
        max_clips=max_clips,
        progress=progress,
        source_name=_SONIC_PI_APT,
    )
