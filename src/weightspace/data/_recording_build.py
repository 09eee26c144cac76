"""Reading, cutting and caching the recordings: audio files to fixed-length clips.

Every file is decoded, mixed to mono, resampled, trimmed of silence and cut into windows;
the clips of one call are cached as one safetensors file keyed by the arguments and the
listing of the source files.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import torch
from torch import Tensor

from weightspace._cache import cache_dir, cached_file
from weightspace._errors import CacheError, MissingSourceError, WeightspaceValueError
from weightspace._optional import require_module
from weightspace.data._clips import check_int, load_cached, workers
from weightspace.data._recording_set import Recordings, _under

__all__ = [
    "_FORMAT_VERSION",
    "_Source",
    "_audio_files",
    "_build",
    "_check_categories",
    "_check_list",
    "_common_args",
    "_listing_digest",
    "_root",
]

logger = logging.getLogger(__name__)

_FORMAT_VERSION = 1


_PEAK = 0.9  # peak amplitude of every clip
_TRIM_DB = 40.0  # 10 ms frames quieter than the loudest by more than this are silence
_SILENT_DB = 40.0  # a window whose peak is this far below the file's peak is dropped
_AUDIO_EXTENSIONS = (".ogg", ".flac", ".wav")


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
