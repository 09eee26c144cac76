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

import dataclasses
import hashlib
import json
import logging
import math
import os
import re
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import torch
from torch import Tensor
from torch.utils.data import Dataset

from weightspace._cache import cache_dir, cached_file
from weightspace._errors import CacheError, MissingSourceError, WeightspaceValueError
from weightspace._optional import require_module
from weightspace.data._speech import ClipSet, check_int, index_mask, load_cached, workers

__all__ = [
    "SONIC_PI_CATEGORIES",
    "STAMP_LANGUAGES",
    "Recordings",
    "sonic_pi_samples",
    "sound_effects",
    "stamp_captions",
]

logger = logging.getLogger(__name__)

_FORMAT_VERSION = 1
_STAMPS_DIR = Path("/usr/share/tuxpaint/stamps")
_STAMPS_APT = "tuxpaint-stamps-default"
_SONIC_PI_DIR = Path("/usr/share/sonic-pi/samples")
_SONIC_PI_APT = "sonic-pi-samples"
_PEAK = 0.9  # peak amplitude of every clip
_TRIM_DB = 40.0  # 10 ms frames quieter than the loudest by more than this are silence
_SILENT_DB = 40.0  # a window whose peak is this far below the file's peak is dropped
_AUDIO_EXTENSIONS = (".ogg", ".flac", ".wav")

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
# The data set
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True, eq=False, repr=False)
class Recordings(ClipSet, Dataset[tuple[Tensor, Tensor]]):
    """Fixed-length clips cut from recorded audio files, with the item each clip comes from.

    An *item* is the unit a clip belongs to: a stamp for :func:`stamp_captions` (the same
    stamp's caption is recorded in several languages) and :func:`sound_effects`, a sample file
    for :func:`sonic_pi_samples` (which may cut several windows from one file). Split by item
    (:meth:`split`) so that no recording, or no stamp, reaches both the training and the test
    set.

    Item ``i`` of the data set is ``(waveform, label)``: the waveform as a ``[1, T]`` float32
    tensor (or ``transform`` of it) and the label as an int64 scalar indexing :attr:`classes`.
    Labels index the full :attr:`classes` and item ids the full :attr:`items`, also in subsets.

    Shapes:
        - waveforms: ``[N, T]`` float32, ``T = round(duration * sample_rate)``, peak 0.9.
        - labels, item: ``[N]`` int64.
        - offset: ``[N]`` float32, seconds.

    Attributes:
        waveforms: All clips.
        labels: Index of each clip's class in :attr:`classes`.
        classes: The class names, in label order.
        sample_rate: Samples per second.
        item: Index of each clip's item in :attr:`items`.
        offset: Where each clip starts in its source file, in seconds (negative when a short
            recording was centred in a longer window).
        items: The items of the build, such as ``"animals/mammals/badger"`` or ``"bd_808"``.
        item_category: The category of each item, aligned with :attr:`items`: the stamp's
            folder (``"animals/mammals"``) or the sample's prefix (``"bd"``).
        source: Where the audio comes from, such as ``"tuxpaint-stamps-default"``.
        transform: Applied to the ``[1, T]`` waveform in :meth:`__getitem__`, if not ``None``.

    Example:
        >>> ds = sonic_pi_samples(["tabla", "bd"], progress=False)
        >>> ds
        Recordings(sonic-pi-samples: 39 clips, 2 classes, 39 items, 1 s at 16000 Hz)
        >>> wave, label = ds[0]
        >>> wave.shape, ds.classes[int(label)], ds.item_name[0]
        (torch.Size([1, 16000]), 'bd', 'bd_808')
    """

    waveforms: Tensor
    labels: Tensor
    classes: tuple[str, ...]
    sample_rate: int
    item: Tensor
    offset: Tensor
    items: tuple[str, ...]
    item_category: tuple[str, ...]
    source: str
    transform: Callable[[Tensor], Tensor] | None = None

    def __post_init__(self) -> None:
        if self.waveforms.ndim != 2:
            raise WeightspaceValueError(
                f"`waveforms` must have shape [N, T], got {tuple(self.waveforms.shape)}"
            )
        n = self.waveforms.shape[0]
        for arg in ("labels", "item", "offset"):
            shape = tuple(getattr(self, arg).shape)
            if shape != (n,):
                raise WeightspaceValueError(
                    f"`{arg}` must have shape [{n}] to match `waveforms`, got {shape}"
                )
        if len(self.item_category) != len(self.items):
            raise WeightspaceValueError(
                f"`item_category` must have one entry per item ({len(self.items)}), "
                f"got {len(self.item_category)}"
            )

    def __repr__(self) -> str:
        return (
            f"Recordings({self.source}: {len(self)} clips, {len(self.classes)} classes, "
            f"{len(set(self.item.tolist()))} items, {self.duration:g} s at {self.sample_rate} Hz)"
        )

    @property
    def item_name(self) -> tuple[str, ...]:
        """The item (stamp or sample file) of each clip."""
        return tuple(self.items[i] for i in self.item.tolist())

    @property
    def category(self) -> tuple[str, ...]:
        """The category of each clip's item (see :attr:`item_category`)."""
        return tuple(self.item_category[i] for i in self.item.tolist())

    def counts(self) -> dict[str, int]:
        """Return the number of clips of each class, in class order.

        Example:
            >>> sonic_pi_samples(["tabla", "bd"], progress=False).counts()
            {'tabla': 26, 'bd': 13}
        """
        found = torch.bincount(self.labels, minlength=len(self.classes)).tolist()
        return {c: int(k) for c, k in zip(self.classes, found, strict=True)}

    def with_transform(self, transform: Callable[[Tensor], Tensor] | None) -> Recordings:
        """Return a copy that applies ``transform`` to each ``[1, T]`` waveform it yields.

        Args:
            transform: A function of a ``[1, T]`` float32 tensor, or ``None`` for none.

        Returns:
            A new data set sharing this one's tensors.

        Example:
            >>> ds = sonic_pi_samples(["bd"], progress=False)
            >>> ds.with_transform(lambda w: w[:, :100])[0][0].shape
            torch.Size([1, 100])
        """
        return dataclasses.replace(self, transform=transform)

    def subset(
        self,
        *,
        classes: Sequence[str] | str | None = None,
        items: Sequence[str] | str | None = None,
        categories: Sequence[str] | str | None = None,
        indices: Sequence[int] | Tensor | None = None,
    ) -> Recordings:
        """Return the clips that match every given filter, in their original order.

        Example:
            >>> ds = sonic_pi_samples(["tabla", "bd", "sn"], progress=False)
            >>> len(ds.subset(classes=["bd", "sn"])), len(ds.subset(items="bd_808"))
            (17, 1)

        Args:
            classes: Classes to keep; a single name is accepted too. Labels are not renumbered.
            items: Items to keep, by name (see :attr:`items`).
            categories: Categories to keep: a category matches itself and every category
                below it (``"animals"`` keeps ``"animals/birds"``).
            indices: Clip indices to keep (a sequence of ints, an int tensor or a bool mask
                of length ``len(self)``).

        Returns:
            A new data set; this one is not changed.

        Raises:
            WeightspaceValueError: if a class, item, category or index is not in this data set.
        """
        n = len(self)
        mask = torch.ones(n, dtype=torch.bool)
        if classes is not None:
            wanted = _names("classes", classes, self.classes)
            ids = torch.tensor([self.classes.index(c) for c in wanted], dtype=torch.int64)
            mask &= torch.isin(self.labels, ids)
        if items is not None:
            wanted = _names("items", items, self.items)
            ids = torch.tensor([self.items.index(i) for i in wanted], dtype=torch.int64)
            mask &= torch.isin(self.item, ids)
        if categories is not None:
            chosen = [categories] if isinstance(categories, str) else list(categories)
            keep = [
                i for i, cat in enumerate(self.item_category) if any(_under(cat, c) for c in chosen)
            ]
            if not keep:
                known = sorted(set(self.item_category))
                raise WeightspaceValueError(
                    f"`categories` {chosen} match no item of this data set; choose from {known}"
                )
            mask &= torch.isin(self.item, torch.tensor(keep, dtype=torch.int64))
        if indices is not None:
            mask &= index_mask(indices, n)
        return self._take(mask.nonzero().squeeze(1))

    def split(
        self, fractions: Sequence[float] = (0.6, 0.2, 0.2), *, seed: int = 0
    ) -> tuple[Recordings, ...]:
        """Split the clips into parts by item, so that no item has clips in two parts.

        Items are grouped by the set of classes of their clips (for Sonic Pi samples: by
        class; for stamp captions: by the languages the stamp was recorded in); each group is
        shuffled with ``seed`` and cut by ``fractions`` (rounded cumulative counts), so that
        every class is spread over the parts in about those proportions.

        Example:
            >>> ds = sonic_pi_samples(["tabla", "bd"], progress=False)
            >>> train, val, test = ds.split((0.6, 0.2, 0.2), seed=0)
            >>> len(train), len(val), len(test)
            (24, 7, 8)

        Args:
            fractions: Positive fractions that sum to 1, one per part.
            seed: Seed of the shuffle, a non-negative integer.

        Returns:
            One data set per fraction, each in the original clip order.

        Raises:
            WeightspaceValueError: if ``fractions`` or ``seed`` is invalid.
        """
        parts = [float(f) for f in fractions]
        if not parts or any(not (math.isfinite(f) and f > 0) for f in parts):
            raise WeightspaceValueError(
                f"`fractions` must be positive numbers, got {list(fractions)}"
            )
        if abs(sum(parts) - 1.0) > 1e-6:
            raise WeightspaceValueError(
                f"`fractions` must sum to 1, got {list(fractions)} (sum {sum(parts):g}); "
                "divide them by their sum"
            )
        if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
            raise WeightspaceValueError(f"`seed` must be a non-negative integer, got {seed!r}")
        present = sorted(set(self.item.tolist()))
        labels_of: dict[int, set[int]] = {i: set() for i in present}
        for i, y in zip(self.item.tolist(), self.labels.tolist(), strict=True):
            labels_of[i].add(y)
        groups: dict[tuple[int, ...], list[int]] = {}
        for i in present:
            groups.setdefault(tuple(sorted(labels_of[i])), []).append(i)
        part_of: dict[int, int] = {}
        for g, (key, members) in enumerate(sorted(groups.items())):
            rng = np.random.default_rng([seed, g, *key])
            order = [members[k] for k in rng.permutation(len(members))]
            bounds = np.rint(np.cumsum(parts) * len(order)).astype(int)
            bounds[-1] = len(order)
            start = 0
            for p, stop in enumerate(bounds.tolist()):
                for i in order[start:stop]:
                    part_of[i] = p
                start = max(start, stop)
        assignment = torch.tensor([part_of[i] for i in self.item.tolist()], dtype=torch.int64)
        return tuple(self._take((assignment == p).nonzero().squeeze(1)) for p in range(len(parts)))

    def _take(self, keep: Tensor) -> Recordings:
        return dataclasses.replace(
            self,
            waveforms=self.waveforms[keep],
            labels=self.labels[keep],
            item=self.item[keep],
            offset=self.offset[keep],
        )


def _under(category: str, prefix: str) -> bool:
    prefix = prefix.strip("/")
    return category == prefix or category.startswith(prefix + "/")


def _names(argument: str, given: Sequence[str] | str, known: Sequence[str]) -> list[str]:
    wanted = [given] if isinstance(given, str) else list(given)
    unknown = [w for w in wanted if w not in known]
    if unknown:
        shown = list(known) if len(known) <= 20 else [*known[:20], "..."]
        raise WeightspaceValueError(
            f"`{argument}` has names that are not in this data set: {unknown}; choose from {shown}"
        )
    return wanted


# ---------------------------------------------------------------------------------------------
# Reading and cutting audio files
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Source:
    """One audio file to read: its label, item and where it lies."""

    path: Path
    label: int
    item: int


def _read(path: Path, sample_rate: int) -> npt.NDArray[np.float64]:
    from scipy.signal import resample_poly

    sf = require_module("soundfile", pip="soundfile", extra="audio")
    try:
        data, rate = sf.read(str(path), dtype="float64", always_2d=True)
    except Exception as exc:  # soundfile raises its own LibsndfileError
        raise WeightspaceValueError(f"cannot read the audio file {str(path)!r}: {exc}") from None
    x = np.asarray(data, dtype=np.float64).mean(axis=1)
    ratio = Fraction(sample_rate, int(rate))
    if ratio != 1 and len(x):
        x = resample_poly(x, ratio.numerator, ratio.denominator)
    return np.asarray(x, dtype=np.float64)


def _loud_span(x: npt.NDArray[np.float64], sample_rate: int) -> tuple[int, int]:
    """Return ``(start, stop)`` of the part between the first and last loud 10 ms frame."""
    frame = max(1, sample_rate // 100)
    n_frames = len(x) // frame
    if n_frames == 0:
        return 0, len(x)
    rms = np.sqrt(np.mean(x[: n_frames * frame].reshape(n_frames, frame) ** 2, axis=1))
    loud = np.flatnonzero(rms > rms.max() * 10.0 ** (-_TRIM_DB / 20.0))
    if loud.size == 0:
        return 0, 0
    stop = len(x) if loud[-1] == n_frames - 1 else (loud[-1] + 1) * frame
    return int(loud[0] * frame), int(stop)


def _cut(
    path: Path,
    sample_rate: int,
    length: int,
    hop: int | None,
    max_clips: int,
) -> tuple[list[npt.NDArray[np.float32]], list[float]]:
    """Read one file and return its clips and their offsets in seconds (none if silent)."""
    x = _read(path, sample_rate)
    start, stop = _loud_span(x, sample_rate)
    x = x[start:stop]
    file_peak = float(np.abs(x).max()) if len(x) else 0.0
    if file_peak == 0.0:
        logger.warning("%s is silent; it gives no clip", path)
        return [], []
    if hop is None or len(x) <= length:
        starts = [(len(x) - length) // 2]
    else:
        starts = list(range(0, len(x) - length + 1, hop))
        if len(starts) > max_clips:  # spread the kept windows over the whole file
            picks = np.linspace(0, len(starts) - 1, max_clips).round().astype(int)
            starts = [starts[k] for k in picks]
    clips, offsets = [], []
    for s in starts:
        window = np.zeros(length, dtype=np.float64)
        lo, hi = max(s, 0), min(s + length, len(x))
        window[lo - s : hi - s] = x[lo:hi]
        peak = float(np.abs(window).max())
        if peak < file_peak * 10.0 ** (-_SILENT_DB / 20.0):
            continue
        clips.append((window * (_PEAK / peak)).astype(np.float32))
        offsets.append((start + s) / sample_rate)
    return clips, offsets


def _decode_all(
    sources: Sequence[_Source],
    sample_rate: int,
    length: int,
    hop: int | None,
    max_clips: int,
    progress: bool,
    desc: str,
) -> dict[str, Tensor]:
    from tqdm.auto import tqdm

    require_module("soundfile", pip="soundfile", extra="audio")
    require_module("scipy.signal", pip="scipy")
    with (
        ThreadPoolExecutor(max_workers=workers(16)) as pool,
        tqdm(total=len(sources), desc=desc, unit="file", disable=not progress) as bar,
    ):
        results = []
        for result in pool.map(
            lambda s: _cut(s.path, sample_rate, length, hop, max_clips), sources
        ):
            results.append(result)
            bar.update(1)
    waves: list[npt.NDArray[np.float32]] = []
    labels: list[int] = []
    items: list[int] = []
    offsets: list[float] = []
    for source, (clips, starts) in zip(sources, results, strict=True):
        waves.extend(clips)
        labels.extend([source.label] * len(clips))
        items.extend([source.item] * len(clips))
        offsets.extend(starts)
    stacked = np.stack(waves) if waves else np.zeros((0, length), dtype=np.float32)
    return {
        "waveforms": torch.from_numpy(stacked).to(torch.float16),
        "labels": torch.tensor(labels, dtype=torch.int64),
        "item": torch.tensor(items, dtype=torch.int64),
        "offset": torch.tensor(offsets, dtype=torch.float32),
    }


# ---------------------------------------------------------------------------------------------
# Argument checks and the cache
# ---------------------------------------------------------------------------------------------


def _check_seconds(name: str, value: object, *, allow_none: bool = False) -> float | None:
    if value is None and allow_none:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise WeightspaceValueError(f"`{name}` must be a number of seconds, got {value!r}")
    if not (math.isfinite(value) and 0 < value <= 30):
        raise WeightspaceValueError(f"`{name}` must be in (0, 30] seconds, got {value!r}")
    return float(value)


def _check_list(
    name: str, values: Sequence[str] | str | None, default: Sequence[str]
) -> tuple[str, ...]:
    if values is None:
        return tuple(default)
    if isinstance(values, str):
        raise WeightspaceValueError(
            f"`{name}` must be a sequence of names, got the string {values!r}; pass [{values!r}]"
        )
    out = tuple(values)
    if not out:
        raise WeightspaceValueError(f"`{name}` must not be empty; pass at least one name")
    for v in out:
        if not isinstance(v, str) or not v.strip("/"):
            raise WeightspaceValueError(f"`{name}` must hold non-empty strings, got {v!r}")
    duplicates = sorted({v for v in out if out.count(v) > 1})
    if duplicates:
        raise WeightspaceValueError(f"`{name}` has duplicates {duplicates}; pass each once")
    return out


def _root(path: str | os.PathLike[str] | None, default: Path, apt: str, what: str) -> Path:
    if path is None:
        if not default.is_dir():
            raise MissingSourceError(
                f"{what} are not installed: {default} does not exist; install them with "
                f"`apt-get install -y {apt}` (as root), or pass `path=` a folder laid out like "
                f"{default}"
            )
        return default
    if isinstance(path, bool) or not isinstance(path, str | os.PathLike):
        raise WeightspaceValueError(f"`path` must be a folder path or None, got {path!r}")
    folder = Path(path).expanduser()
    if not folder.is_dir():
        raise WeightspaceValueError(
            f"`path` must be an existing folder laid out like {default}, got {str(path)!r}"
        )
    return folder.resolve()


def _audio_files(root: Path) -> list[Path]:
    """Every audio file under ``root``, as paths relative to it, sorted."""
    found: list[Path] = []
    for folder, dirs, files in os.walk(root):
        dirs.sort()
        for name in sorted(files):
            if name.endswith(_AUDIO_EXTENSIONS):
                found.append((Path(folder) / name).relative_to(root))
    return found


def _listing_digest(root: Path, files: Sequence[Path]) -> str:
    h = hashlib.sha256()
    for f in files:
        h.update(f"{f.as_posix()}\0{(root / f).stat().st_size}\n".encode())
    return h.hexdigest()


def _build(
    kind: str,
    meta: dict[str, Any],
    sources: Sequence[_Source],
    classes: Sequence[str],
    items: Sequence[str],
    categories: Sequence[str],
    *,
    sample_rate: int,
    length: int,
    hop: int | None,
    max_clips: int,
    progress: bool,
    source_name: str,
) -> Recordings:
    key = hashlib.sha256(json.dumps(meta, sort_keys=True).encode()).hexdigest()[:16]
    path = cache_dir("recordings") / f"{kind}-v{_FORMAT_VERSION}-{key}.safetensors"

    def build(tmp: Path) -> None:
        from safetensors.torch import save_file

        tensors = _decode_all(
            sources, sample_rate, length, hop, max_clips, progress, f"reading {source_name}"
        )
        header = json.dumps(
            {
                **meta,
                "classes": list(classes),
                "items": list(items),
                "categories": list(categories),
            },
            sort_keys=True,
        )
        save_file(tensors, str(tmp), metadata={"weightspace": header})

    cached_file(path, build, meta=meta)
    tensors = load_cached(path)
    if tensors["waveforms"].ndim != 2 or tensors["waveforms"].shape[1] != length:
        raise CacheError(
            f"cache entry {path} holds waveforms of shape {tuple(tensors['waveforms'].shape)}, "
            f"expected [N, {length}]; delete the file to rebuild it"
        )
    return Recordings(
        waveforms=tensors["waveforms"].to(torch.float32),
        labels=tensors["labels"],
        classes=tuple(classes),
        sample_rate=sample_rate,
        item=tensors["item"],
        offset=tensors["offset"],
        items=tuple(items),
        item_category=tuple(categories),
        source=source_name,
    )


def _common_args(
    sample_rate: object, duration: object, hop: object, max_clips_per_file: object
) -> tuple[int, float, int, int | None, int]:
    rate = check_int("sample_rate", sample_rate, 1000, 192000)
    seconds = _check_seconds("duration", duration)
    assert seconds is not None
    hop_s = _check_seconds("hop", hop, allow_none=True)
    max_clips = check_int("max_clips_per_file", max_clips_per_file, 1)
    length = max(1, round(seconds * rate))
    hop_n = None if hop_s is None else max(1, round(hop_s * rate))
    return rate, seconds, length, hop_n, max_clips


def _check_categories(given: Sequence[str] | None, known: Sequence[str]) -> tuple[str, ...] | None:
    if given is None:
        return None
    chosen = _check_list("categories", given, ())
    for c in chosen:
        if not any(_under(k, c) for k in known):
            tops = sorted({k.split("/")[0] for k in known})
            raise WeightspaceValueError(
                f"`categories` has {c!r}, which matches no stamp folder; pass a folder such as "
                f"'animals' or 'animals/birds' (top-level folders: {tops})"
            )
    return tuple(sorted(c.strip("/") for c in chosen))


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
