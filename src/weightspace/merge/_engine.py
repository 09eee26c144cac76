"""The fused, chunked engine of :func:`weightspace.merge.run_merge`.

``run_merge`` computes each merged tensor here rather than through the lazy task vectors:
the base and every model are read once, in chunks of :data:`CHUNK_ELEMENTS` entries, by
positional reads into buffers reused from chunk to chunk and tensor to tensor; each chunk's
deltas are merged by the same elementwise kernels as the lazy path (or by fused equivalents
in :mod:`weightspace.merge._core` that give the same bits), added to the base, rounded once
to the output dtype, checked for finiteness once and handed to the streaming writer.
Whatever per-tensor state the method needs (the TIES trim thresholds over the whole tensor,
the DARE masks) is computed first. Anything unusual (a non-finite value, an input that is
not a plain safetensors file, an exotic dtype) goes through the lazy path, which gives the
results and the errors of record; the tests compare both paths bit for bit.

What to compute comes from the :class:`~weightspace.merge._methods.ResolvedMethod` alone
(its sparsify and combine steps), as for the lazy and the distributed paths.
"""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import torch

from weightspace._errors import WeightspaceError
from weightspace.io import LazyStateDict
from weightspace.io._write import TensorChunks, raise_if_not_finite
from weightspace.merge import _core
from weightspace.merge._methods import ResolvedMethod
from weightspace.merge._seeding import dare_keep_masks
from weightspace.merge._threads import ThreadGovernor
from weightspace.merge._views import OutputView

__all__ = ["CHUNK_ELEMENTS", "Engine", "FastOutput"]

#: Entries per chunk of the fused path (the buffers of one chunk stay in the CPU caches).
CHUNK_ELEMENTS = 1 << 17

_FAST_DTYPES = (torch.float32, torch.bfloat16, torch.float16, torch.float64)
_HALF = (torch.bfloat16, torch.float16)

#: Use the fused path in run_merge (the tests switch it off to compare with the lazy path).
ENABLED = True

#: Intra-op threads of torch in each rank of a distributed merge (restored afterwards); the
#: serial merge chooses its own (see :mod:`weightspace.merge._threads`). Every multi-threaded
#: operation waits for all its threads: on a busy machine (a core taken by another job, such
#: as another rank) that wait is a scheduler time slice per operation. Measured on a loaded
#: two-core machine (0.1B-parameter bf16 model, three models, task arithmetic): 1.2 s with
#: one thread, 33 to 119 s with two.
DISTRIBUTED_THREADS: int | None = 1


class _Reader:
    """Positional reads of element ranges of one tensor of a safetensors file."""

    __slots__ = ("dtype", "fd", "file", "itemsize", "name", "nbytes", "offset", "sd")

    def __init__(self, sd: LazyStateDict, name: str, fd: int, file: Path, offset: int) -> None:
        self.sd = sd
        self.name = name
        self.dtype = sd.dtype(name)
        self.itemsize = self.dtype.itemsize
        self.nbytes = sd.nbytes(name)
        self.fd = fd
        self.file = file
        self.offset = offset

    def read(self, start: int, stop: int, buf: torch.Tensor) -> torch.Tensor:
        """Entries ``[start, stop)`` (flat order) read into the byte buffer ``buf``."""
        size = (stop - start) * self.itemsize
        view = memoryview(buf.numpy().data)[:size]
        pos = self.offset + start * self.itemsize
        done = 0
        while done < size:
            n = os.preadv(self.fd, [view[done:]], pos + done)
            if n <= 0:
                self.sd[self.name]  # raises the reader's error for a truncated file
                raise WeightspaceError(  # pragma: no cover - the line above raises
                    f"tensor {self.name!r} could not be read from {self.file}"
                )
            done += n
        return buf[:size].view(self.dtype)


class _Files:
    """Open file descriptors of the input files, closed at the end of the merge."""

    def __init__(self) -> None:
        self._fds: dict[Path, int] = {}

    def fd(self, path: Path) -> int:
        fd = self._fds.get(path)
        if fd is None:
            fd = os.open(path, os.O_RDONLY | getattr(os, "O_CLOEXEC", 0))
            self._fds[path] = fd
        return fd

    def close(self) -> None:
        for fd in self._fds.values():
            with contextlib.suppress(OSError):
                os.close(fd)
        self._fds.clear()


def _reader(sd: LazyStateDict, name: str, files: _Files) -> _Reader | None:
    """A :class:`_Reader` for ``name``, or ``None`` when it must be read the generic way."""
    where = sd._byte_range(name)
    if where is None or sd.dtype(name) not in _FAST_DTYPES:
        return None
    file, offset, _ = where
    return _Reader(sd, name, files.fd(file), file, offset)


@dataclass
class _Keep:
    """The trim of one task's tensor: what it keeps of ``|d|``.

    ``|d| > threshold``, and ``|d| == threshold`` at flat indices below ``cutoff`` (the first
    ties in flat order, as many as the trim keeps).
    """

    mode: Literal["all", "none", "threshold"]
    threshold: torch.Tensor | None = None
    cutoff: int = 0

    def apply(
        self, delta: torch.Tensor, magnitude: torch.Tensor, keep: torch.Tensor, start: int
    ) -> None:
        """``delta *= mask`` in place, for the chunk that starts at flat index ``start``.

        ``magnitude`` and ``keep`` are scratch buffers; the mask is a float 0/1 one. The
        same values as ``delta * magnitude_keep_mask(delta, density)`` over the whole tensor
        (a product by a boolean is one by 0.0 or 1.0), with float operations only, which are
        much faster than boolean ones: ``|d| >= threshold`` below the cutoff, ``|d| >
        threshold`` from it on. The chunks may come in any order.
        """
        if self.mode == "all":
            return
        if self.mode == "none":
            delta.mul_(0.0)
            return
        assert self.threshold is not None
        torch.abs(delta, out=magnitude)
        split = min(max(self.cutoff - start, 0), magnitude.numel())
        if split > 0:
            torch.ge(magnitude[:split], self.threshold, out=keep[:split])
        if split < magnitude.numel():
            torch.gt(magnitude[split:], self.threshold, out=keep[split:])
        delta.mul_(keep)


class _NotFinite(Exception):
    """A chunk held a value that is not finite: recompute the tensor the lazy way."""


class Engine:
    """Computes merged tensors chunk by chunk (see the module notes).

    Args:
        resolved: The merge method.
        base: The base checkpoint.
        models: The fine-tuned checkpoints, one per task.
        generic: The lazy output, for tensors the engine cannot compute and for the errors
            of record.
        check_finite: Whether the merge refuses non-finite values.
    """

    def __init__(
        self,
        resolved: ResolvedMethod,
        base: LazyStateDict,
        models: Sequence[LazyStateDict],
        generic: OutputView,
        *,
        check_finite: bool,
    ) -> None:
        self.r = resolved
        self.base = base
        self.models = list(models)
        self.generic = generic
        self.check_finite = check_finite
        self.files = _Files()
        self.n = len(self.models)
        self.bytes_read = 0
        self.chunk = CHUNK_ELEMENTS
        self._buffers: dict[tuple[str, int], torch.Tensor] = {}
        self._views: dict[tuple[str, int, int, torch.dtype], torch.Tensor] = {}
        self._dare: list[torch.Tensor] = []
        self.governor: ThreadGovernor | None = None

    def close(self) -> None:
        """Close the input files and drop the buffers."""
        self.files.close()
        self._buffers.clear()
        self._views.clear()

    # -- reading ---------------------------------------------------------------------------

    def _read_chunks(
        self, readers: Sequence[_Reader], numel: int
    ) -> Iterator[tuple[int, int, list[torch.Tensor]]]:
        """``(start, stop, raw)`` of every chunk: ``raw`` its entries read from ``readers``.

        The buffers are reused from chunk to chunk. (Reading the next chunk on a background
        thread while this one is computed made merges slower on a busy two-core machine:
        every torch operation hands the GIL over, and each hand-over waited for a
        descheduled thread.)
        """
        step = self.chunk
        for start in range(0, numel, step):
            stop = min(numel, start + step)
            m = stop - start
            raw = [
                r.read(start, stop, self._buf("raw", i, m * r.itemsize))
                for i, r in enumerate(readers)
            ]
            yield start, stop, raw

    def _buf(
        self, key: str, index: int, numel: int, dtype: torch.dtype = torch.uint8
    ) -> torch.Tensor:
        """A reused buffer of ``numel`` entries of ``dtype``.

        Its views are kept: most chunks have one size, and making a view costs more than
        looking one up.
        """
        view = self._views.get((key, index, numel, dtype))
        if view is not None:
            return view
        nbytes = numel * dtype.itemsize
        buf = self._buffers.get((key, index))
        if buf is None or buf.numel() < nbytes:
            buf = torch.empty(max(nbytes, 1), dtype=torch.uint8)
            self._buffers[(key, index)] = buf
            self._views = {k: v for k, v in self._views.items() if k[:2] != (key, index)}
        view = buf[:nbytes].view(dtype)
        if len(self._views) < 256:
            self._views[(key, index, numel, dtype)] = view
        return view

    # -- one tensor ------------------------------------------------------------------------

    def output(self, name: str) -> TensorChunks | None:
        """The chunks of merged tensor ``name``, or ``None`` to use the lazy path."""
        if sys.byteorder != "little":  # pragma: no cover - no big-endian CI
            return None
        readers = [_reader(self.base, name, self.files)]
        readers += [_reader(sd, name, self.files) for sd in self.models]
        if any(r is None for r in readers):
            return None
        ready = [r for r in readers if r is not None]
        shape = self.base.shape(name)
        out_dtype = self.generic.dtype(name)
        if out_dtype not in _FAST_DTYPES:
            return None
        return TensorChunks(
            shape,
            out_dtype,
            self._chunks(name, ready, shape.numel(), out_dtype),
            checked_finite=True,
        )

    def _chunks(
        self, name: str, readers: list[_Reader], numel: int, out_dtype: torch.dtype
    ) -> Iterator[torch.Tensor]:
        self.bytes_read += sum(r.nbytes for r in readers)
        try:
            state = self._tensor_state(name, readers, numel)
        except _NotFinite:
            yield from self._generic_rest(name, 0)
            return
        for start, stop, raw in self._read_chunks(readers, numel):
            if self.governor is not None:
                self.governor.tick()
            try:
                out = self._chunk(raw, state, start, stop, out_dtype)
            except _NotFinite:
                yield from self._generic_rest(name, start)
                return
            yield out

    def _generic_rest(self, name: str, start: int) -> Iterator[torch.Tensor]:
        """Entries ``[start:]`` of the lazy result (which raises the errors of record)."""
        tensor = self.generic[name]
        if self.check_finite:
            raise_if_not_finite(name, tensor)
        yield tensor.reshape(-1)[start:]

    def _deltas(
        self, raw: Sequence[torch.Tensor], tasks: Sequence[int] | None = None
    ) -> tuple[torch.Tensor, torch.Tensor, list[torch.Tensor]]:
        """The chunk's base (as read), base in float32, and float32 deltas of ``tasks``.

        ``raw`` holds the chunk as read: the base, then the model of each task of ``tasks``
        (all tasks when ``None``).
        """
        base = raw[0]
        m = base.numel()
        if base.dtype == torch.float32:
            b32 = base
        else:
            b32 = self._buf("b32", 0, m, torch.float32)
            b32.copy_(base)
        deltas = []
        for t, f in zip(range(self.n) if tasks is None else tasks, raw[1:], strict=True):
            d = self._buf("d", t, m, torch.float32)
            # f.float() - b32: the conversion is exact for the half dtypes, and a float32
            # subtraction after it is faster than a mixed-dtype one (the same values).
            d.copy_(f)
            d.sub_(b32)
            deltas.append(d)
        return base, b32, deltas

    def _tensor_state(self, name: str, readers: list[_Reader], numel: int) -> list[_Keep] | None:
        """Per-tensor state: the magnitude trims, or the DARE masks (kept in ``_dare``)."""
        r = self.r
        if r.sparsify == "trim":
            assert r.densities is not None
            return [self._trim(readers, numel, t, d) for t, d in enumerate(r.densities)]
        if r.sparsify == "dare" and r.drop_rate != 0.0:
            shape = self.base.shape(name)
            masks = dare_keep_masks(name, shape, self.n, r.drop_rate, r.seed, torch.device("cpu"))
            self._dare = [mask.reshape(-1) for mask in masks]
        return None

    def _trim(self, readers: list[_Reader], numel: int, task: int, density: float) -> _Keep:
        """What :func:`weightspace.merge._core.magnitude_keep_mask` keeps of task ``task``."""
        k = round(density * numel)
        if k >= numel:
            return _Keep("all")
        if k <= 0:
            return _Keep("none")
        magnitude = self._buf("magnitude", 0, numel, torch.float32)
        for start, stop, raw in self._read_chunks([readers[0], readers[task + 1]], numel):
            _, _, (d,) = self._deltas(raw, [task])
            if not bool(torch.isfinite(d.sum())):
                raise _NotFinite
            torch.abs(d, out=magnitude[start:stop])
        threshold, above = _core.kth_largest_with_count(magnitude, k, self.chunk)
        return _Keep("threshold", threshold, self._tie_cutoff(magnitude, threshold, k - above))

    def _tie_cutoff(self, magnitude: torch.Tensor, threshold: torch.Tensor, missing: int) -> int:
        """One past the flat index of the ``missing``-th entry equal to ``threshold``.

        The ties that the trim keeps are those below it (none when ``missing`` is 0).
        """
        if missing <= 0:
            return 0
        numel = magnitude.numel()
        for start in range(0, numel, self.chunk):
            stop = min(numel, start + self.chunk)
            tied = magnitude[start:stop] == threshold
            count = int(tied.sum())
            if count >= missing:
                return start + int(torch.nonzero(tied)[missing - 1, 0]) + 1
            missing -= count
        raise AssertionError("fewer ties than the count of entries above the threshold implies")

    def _chunk(
        self,
        raw: Sequence[torch.Tensor],
        state: list[_Keep] | None,
        start: int,
        stop: int,
        out_dtype: torch.dtype,
    ) -> torch.Tensor:
        base, b32, deltas = self._deltas(raw)
        if self.r.sparsify != "none" or self.r.combine in ("ties", "consensus"):
            # Masks can hide a bad input from the output: check the deltas (a non-finite
            # input gives a non-finite delta; an overflow only sends us to the lazy path).
            for d in deltas:
                if not bool(torch.isfinite(d.sum())):
                    raise _NotFinite
        merged = self._merge_chunk(deltas, state, start, stop)
        m = stop - start
        if base.dtype == torch.float64:
            total = self._buf("o64", 0, m, torch.float64)
            total.copy_(merged)
            total.add_(base)  # b + delta in float64 (a + b == b + a exactly)
        else:
            total = merged.add_(b32)  # b + delta (a + b == b + a exactly)
        if total.dtype == out_dtype:
            out = total
        else:
            out = self._buf("out", 0, m, out_dtype)
            out.copy_(total)
        # A non-finite entry makes the sum non-finite: this checks every entry of the output
        # and, for the unmasked methods, every input (a bad input propagates). The sum of
        # half-precision entries is taken in float32 (three times faster than in float64):
        # finite entries whose sum overflows, which takes values near 3e38, only send the
        # tensor to the lazy path, which gives the same bits.
        check = torch.float32 if out.dtype in _HALF else out.dtype
        if not bool(torch.isfinite(out.sum(dtype=check))):
            raise _NotFinite
        return out

    def _dare_terms(
        self,
        deltas: list[torch.Tensor],
        drops: list[torch.Tensor],
        weights: Sequence[float] | None,
        divisor: float | None,
    ) -> None:
        """``deltas[t] = weights[t] * where(drops[t], deltas[t] / divisor, 0)``, in place.

        The terms of :func:`weightspace.merge._core.ordered_sum` and ``ties_merge``, bit for
        bit, with float operations instead of ``torch.where`` (which takes most of a DARE
        merge's time otherwise): the product by the 0/1 mask gives the kept value or a zero of
        its sign (the deltas are finite: ``_chunk`` checked them), and adding ``+0.0`` turns
        ``-0.0`` into the ``+0.0`` of ``torch.where`` and changes nothing else. A kept value
        that the division makes infinite gives NaN where it is dropped, which the output's
        finiteness check sends to the lazy path.
        """
        keep = self._buf("f32", 5, deltas[0].numel(), torch.float32)
        for t, (d, mask) in enumerate(zip(deltas, drops, strict=True)):
            if divisor is not None:
                d.div_(divisor)
            keep.copy_(mask)
            d.mul_(keep)
            d.add_(0.0)
            if weights is not None and weights[t] != 1.0:
                d.mul_(weights[t])

    def _merge_chunk(
        self, deltas: list[torch.Tensor], state: list[_Keep] | None, start: int, stop: int
    ) -> torch.Tensor:
        """The merged delta of one chunk, in float32 (may be one of the delta buffers).

        The kernels are those of :mod:`weightspace.merge._merge`, applied to the chunk: they
        work entry by entry, given the per-tensor masks, so a chunk gives the bits that the
        whole tensor gives. Trimmed entries become zeros of either sign, which changes
        neither a sum nor a TIES election (a zero never agrees).
        """
        r, w, n, m = self.r, self.r.weights, self.n, stop - start
        if state is not None:  # the magnitude trim, in place
            magnitude = self._buf("f32", 3, m, torch.float32)
            keep = self._buf("f32", 4, m, torch.float32)
            for d, trim in zip(deltas, state, strict=True):
                trim.apply(d, magnitude, keep, start)
        drops: list[torch.Tensor] | None = None
        divisor: float | None = None
        if r.sparsify == "dare" and r.drop_rate != 0.0:
            drops = [mask[start:stop] for mask in self._dare]
            divisor = 1.0 - r.drop_rate if r.rescale else None
        fused_ties = n >= 3 and r.majority == "total"
        if drops is not None and (r.combine == "sum" or fused_ties):
            self._dare_terms(deltas, drops, w, divisor)  # the terms, weights included
            drops, divisor, w = None, None, None
        out: torch.Tensor
        if r.combine == "mean":
            acc = self._buf("acc", 0, m, torch.float64)
            return _core.fused_sum(deltas, None, acc, divide_by_count=True)
        if r.combine == "sum":
            if n == 1 and r.scale == 1.0 and w is None and r.sparsify == "none":
                return deltas[0]  # task_arithmetic's identity
            out = _core.fused_sum(deltas, w, self._buf("acc", 0, m, torch.float64))
        elif r.combine == "ties":
            if drops is None and fused_ties:
                if w is not None:  # masked and weighted terms (see fused_ties)
                    for d, weight in zip(deltas, w, strict=True):
                        if weight != 1.0:
                            d.mul_(weight)
                out = _core.fused_ties(
                    deltas,
                    self._buf("acc", 0, m, torch.float64),
                    self._buf("acc", 1, m, torch.float64),
                    self._buf("f32", 0, m, torch.float32),
                    self._buf("f32", 1, m, torch.float32),
                    self._buf("f32", 2, m, torch.float32),
                )
            else:
                out = _core.ties_merge(
                    deltas, keep_masks=drops, weights=w, majority=r.majority, divisor=divisor
                )
        else:  # consensus
            total = _core.ordered_sum(deltas)
            count = torch.zeros(total.shape, dtype=torch.int64)
            for mask in _core.tall_masks_list(deltas, total, r.lambdas):
                count += mask
            out = torch.where(count >= r.k, total, torch.zeros((), dtype=total.dtype))
        return out * r.scale if r.scale != 1.0 else out


class FastOutput(Mapping[str, "torch.Tensor | TensorChunks"]):
    """The lazy output, with the merged tensors computed by the engine where it can.

    Args:
        generic: The lazy output.
        engine: The engine.
        merged: The names that get a merged delta.
    """

    def __init__(self, generic: OutputView, engine: Engine, merged: Sequence[str]) -> None:
        self._generic = generic
        self._engine = engine
        self._merged = set(merged)

    def __getitem__(self, name: str) -> torch.Tensor | TensorChunks:
        if name in self._merged:
            chunks = self._engine.output(name)
            if chunks is not None:
                return chunks
        return self._generic[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._generic)

    def __len__(self) -> int:
        return len(self._generic)

    def shape(self, name: str) -> torch.Size:
        """The shape of output tensor ``name``."""
        return self._generic.shape(name)

    def dtype(self, name: str) -> torch.dtype:
        """The dtype of output tensor ``name``."""
        return self._generic.dtype(name)
