"""What the clip data sets (spoken words, recordings) share: the base class and small helpers."""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from weightspace._errors import CacheError, WeightspaceValueError

__all__ = ["ClipSet", "check_int", "index_mask", "load_cached", "workers"]


class ClipSet:
    """What the clip data sets share: ``len``, indexing with the transform, ``duration``.

    Subclasses are dataclasses with the fields ``waveforms`` ``[N, T]``, ``labels`` ``[N]``,
    ``sample_rate`` and ``transform``.
    """

    waveforms: Tensor
    labels: Tensor
    sample_rate: int
    transform: Callable[[Tensor], Tensor] | None

    def __len__(self) -> int:
        return int(self.waveforms.shape[0])

    def __getitem__(self, index: int) -> tuple[Tensor, Tensor]:
        wave = self.waveforms[index].unsqueeze(0)
        if self.transform is not None:
            wave = self.transform(wave)
        return wave, self.labels[index]

    @property
    def duration(self) -> float:
        """Length of every clip in seconds."""
        return self.waveforms.shape[1] / self.sample_rate


def index_mask(indices: Sequence[int] | Tensor, n: int) -> Tensor:
    """A bool mask of length ``n`` from indices or a mask (shared with the recordings)."""
    idx = torch.as_tensor(indices)
    if idx.dtype == torch.bool:
        if idx.shape != (n,):
            raise WeightspaceValueError(
                f"`indices` as a bool mask must have shape [{n}], got {tuple(idx.shape)}"
            )
        return idx
    idx = idx.reshape(-1).to(torch.int64)
    bad = idx[(idx < -n) | (idx >= n)]
    if bad.numel():
        raise WeightspaceValueError(f"`indices` must lie in [-{n}, {n}), got {bad[:5].tolist()}")
    mask = torch.zeros(n, dtype=torch.bool)
    mask[idx] = True
    return mask


def workers(limit: int = 32) -> int:
    """Worker threads for external encoders and decoders: the usable CPUs, at most ``limit``."""
    try:
        cpus = len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not on Linux
        cpus = os.cpu_count() or 1
    return max(1, min(cpus, limit))


def check_int(name: str, value: object, low: int, high: int | None = None) -> int:
    """``value`` as an ``int`` in ``[low, high]``, or an error that names the argument."""
    if isinstance(value, bool) or not isinstance(value, int | np.integer):
        raise WeightspaceValueError(f"`{name}` must be an integer, got {value!r}")
    if value < low or (high is not None and value > high):
        bound = f"in [{low}, {high}]" if high is not None else f">= {low}"
        raise WeightspaceValueError(f"`{name}` must be {bound}, got {value!r}")
    return int(value)


def load_cached(path: Path) -> dict[str, Tensor]:
    """The tensors of a cache entry, or a :class:`CacheError` that says to delete it."""
    from safetensors.torch import load_file

    try:
        return load_file(str(path))
    except Exception as exc:  # safetensors raises its own error types
        raise CacheError(
            f"cache entry {path} cannot be read ({exc}); delete it (and {path.name}.json) to "
            "rebuild it"
        ) from None
