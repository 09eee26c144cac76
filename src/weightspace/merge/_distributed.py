"""The ``torch.distributed`` executor of :func:`weightspace.merge.run_merge`.

:func:`~weightspace.merge.run_merge` is serial unless the process was launched by
``torchrun`` (or another launcher that sets ``WORLD_SIZE`` > 1 and ``RANK``) and
``torch.distributed`` is available; then :func:`distributed_merge` runs instead:

1. Every rank opens the inputs lazily and checks them (headers only, as the serial merge
   does), and computes the same assignment of tensors to ranks from the headers alone, so no
   plan is exchanged: tensors are grouped by the base's source shard (by tensor when there are
   fewer shards than ranks) and the groups are dealt out largest first to the rank with the
   fewest bytes to read (:func:`assign_tensors`).
2. Rank 0 creates a hidden temporary folder next to the output and sends its name to the
   others. Each rank reads only its tensors, computes them exactly as the serial merge does
   (same kernels, per-tensor state, per-tensor DARE generators) and writes its own shard(s)
   ``model-0000i-of-0000N.safetensors`` into the folder (one per rank, or several when the
   config's ``max_shard_size`` splits a rank's part).
3. All ranks exchange a success flag (``all_gather_object``, which is also the barrier). If
   any rank failed, rank 0 removes the temporary folder and every rank raises: nothing appears
   under the output's name. Otherwise rank 0 writes ``model.safetensors.index.json`` from the
   gathered weight maps and renames the folder into place.

No merge method needs a statistic over more than one tensor: the TIES and magnitude-pruning
thresholds are per tensor, DARE draws its masks from a generator per (seed, task, tensor
name), and consensus masks are elementwise. So the tensors are identical (bit for bit, same
dtypes, same names) to those of the serial merge; only the shard layout differs (a
distributed merge always writes a sharded folder with an index).

The process group is initialised (gloo backend, CPU, a 24-hour collective timeout, so that a
rank with more to write does not time out at the final barrier) unless it already is, and
destroyed at the end only if it was created here. Each rank's :class:`MergeReport` describes
that rank's part: its tensors, bytes read and written, time and peak memory.
"""

from __future__ import annotations

import heapq
import logging
import os
import shutil
import time
from collections.abc import Sequence
from datetime import timedelta
from pathlib import Path
from typing import Any

import torch
from tqdm.auto import tqdm

from weightspace._errors import WeightspaceError, WeightspaceValueError
from weightspace.io import LazyStateDict
from weightspace.io._temporaries import Temporary, remove_stale_temporaries
from weightspace.io._write import group_shards, install_sharded, write_extra_files, write_shard
from weightspace.merge import _engine
from weightspace.merge._config import MergeConfig
from weightspace.merge._engine import Engine
from weightspace.merge._prepare import (
    build_target,
    check_output,
    merge_metadata,
    model_folder_files,
    prepare,
)
from weightspace.merge._report import MergeReport, peak_rss

__all__ = ["assign_tensors", "distributed_merge", "launched_world"]

logger = logging.getLogger(__name__)

#: Collective timeout of a process group created here.
_TIMEOUT = timedelta(hours=24)


def launched_world() -> tuple[int, int] | None:
    """``(rank, world_size)`` when launched as one of several ranks, else ``None``.

    A process group initialised by the caller wins over the environment; otherwise the
    ``WORLD_SIZE`` and ``RANK`` variables that ``torchrun`` sets are read. A world of one
    process runs the serial merge.
    """
    if not torch.distributed.is_available():
        return None
    dist = torch.distributed
    if dist.is_initialized():
        world = dist.get_world_size()
        return (dist.get_rank(), world) if world > 1 else None
    try:
        world = int(os.environ.get("WORLD_SIZE", "1"))
        rank = int(os.environ["RANK"])
    except (KeyError, ValueError):
        return None
    return (rank, world) if world > 1 else None


def assign_tensors(
    base: LazyStateDict,
    models: Sequence[LazyStateDict],
    names: Sequence[str],
    selected: Sequence[str],
    world: int,
) -> list[list[str]]:
    """Split the output tensors among ``world`` ranks, by source shard, balanced by bytes.

    Deterministic and computed from the headers alone, so every rank gets the same answer.
    A tensor's cost is the bytes the merge reads for it (the base, plus every model for a
    selected tensor). Tensors are grouped by the base file that holds them, or taken one by
    one when there are fewer files than ranks; groups go, largest first, to the rank with the
    smallest load so far (the lowest rank on a tie).

    Args:
        base: The base checkpoint.
        models: The fine-tuned checkpoints.
        names: All output tensor names, in output order.
        selected: The names that get a merged delta.
        world: Number of ranks.

    Returns:
        For each rank, its tensor names in output order (possibly none).
    """
    chosen = set(selected)
    cost = {
        n: base.nbytes(n) + (sum(sd.nbytes(n) for sd in models) if n in chosen else 0)
        for n in names
    }
    by_file: dict[Path, list[str]] = {}
    for n in names:
        by_file.setdefault(base.source_file(n), []).append(n)
    units = list(by_file.values()) if len(by_file) >= world else [[n] for n in names]
    order = sorted(range(len(units)), key=lambda i: (-sum(cost[n] for n in units[i]), i))
    heap = [(0, r) for r in range(world)]
    owner: dict[str, int] = {}
    for i in order:
        load, rank = heapq.heappop(heap)
        for n in units[i]:
            owner[n] = rank
        heapq.heappush(heap, (load + sum(cost[n] for n in units[i]), rank))
    return [[n for n in names if owner[n] == r] for r in range(world)]


def _agree(ok: bool, message: str, payload: Any) -> list[tuple[bool, str, Any]]:
    """Exchange ``(ok, message, payload)`` among all ranks (also a barrier)."""
    gathered: list[Any] = [None] * torch.distributed.get_world_size()
    torch.distributed.all_gather_object(gathered, (ok, message, payload))
    return [(bool(g[0]), str(g[1]), g[2]) for g in gathered]


def _failure(results: Sequence[tuple[bool, str, Any]], final: Path) -> WeightspaceError | None:
    bad = [(r, msg) for r, (ok, msg, _) in enumerate(results) if not ok]
    if not bad:
        return None
    what = "; ".join(f"rank {r}: {msg}" for r, msg in bad)
    return WeightspaceError(
        f"the distributed merge failed ({what}); nothing was written to {str(final)!r}"
    )


def distributed_merge(
    config: MergeConfig,
    output: str | os.PathLike[str],
    *,
    overwrite: bool,
    progress: bool,
    max_shard_size: int | str | None = None,
    copy_tokenizer: bool = True,
) -> MergeReport:
    """Run :func:`~weightspace.merge.run_merge` as one rank of a ``torch.distributed`` world.

    Every rank of the world must call this with the same config and output (the command line
    ``torchrun ... -m weightspace merge CONFIG -o OUT`` does). See the module notes.

    Args:
        config: The :class:`~weightspace.merge.MergeConfig`.
        output: The output folder (a distributed merge always writes a sharded folder).
        overwrite: Replace an existing output.
        progress: Show a progress bar (on rank 0, over rank 0's part).
        max_shard_size: Split each rank's part into shards of at most this size (``None``:
            the config's ``max_shard_size``, else one shard per rank).
        copy_tokenizer: Copy the base model's tokenizer files into the output folder.

    Returns:
        This rank's :class:`~weightspace.merge.MergeReport`.

    Raises:
        WeightspaceValueError: as the serial merge does, on the rank(s) where it happened.
        WeightspaceError: on the other ranks when any rank failed; nothing is left on disk.
    """
    start = time.perf_counter()
    dist = torch.distributed
    created = False
    if not dist.is_initialized():
        dist.init_process_group(backend="gloo", timeout=_TIMEOUT)
        created = True
    try:
        return _run(config, output, overwrite, progress, start, max_shard_size, copy_tokenizer)
    finally:
        if created:
            dist.destroy_process_group()


def _run(
    config: MergeConfig,
    output: str | os.PathLike[str],
    overwrite: bool,
    progress: bool,
    start: float,
    max_shard_size: int | str | None,
    copy_tokenizer: bool,
) -> MergeReport:
    dist = torch.distributed
    rank, world = dist.get_rank(), dist.get_world_size()
    final = Path(os.path.abspath(Path(output).expanduser()))
    error: BaseException | None = None
    tmp_name: str | None = None
    temp: Temporary | None = None
    engine: Engine | None = None
    shard_size = config.max_shard_size if max_shard_size is None else max_shard_size
    try:
        if final.suffix in (".safetensors", ".json"):
            raise WeightspaceValueError(
                f"the output {str(output)!r} must be a folder: a distributed merge writes a "
                "sharded checkpoint (shards and model.safetensors.index.json); drop the suffix"
            )
        if config.method == "passthrough":
            raise WeightspaceValueError(
                "passthrough only copies tensors: run it without torchrun (a serial merge "
                "reads each input byte once and is as fast)"
            )
        prep = prepare(config)
        check_output(final, config, prep, overwrite)
        mapping, engine = build_target(config, prep)
        target: Any = mapping
        parts = assign_tensors(prep.base, prep.models, prep.names, prep.selected, world)
        planned = {n: (tuple(target.shape(n)), target.dtype(n)) for n in prep.names}
        nbytes = {
            n: torch.Size(shape).numel() * dtype.itemsize for n, (shape, dtype) in planned.items()
        }
        groups = [group_shards(part, nbytes, shard_size) if part else [] for part in parts]
        n_files = sum(len(g) for g in groups)
        first = sum(len(g) for g in groups[:rank])
        files = [
            f"model-{first + i + 1:05d}-of-{n_files:05d}.safetensors"
            for i in range(len(groups[rank]))
        ]
        extras = model_folder_files(config, copy_tokenizer)
        if rank == 0:
            remove_stale_temporaries(final)
            temp = Temporary.create(final, folder=True)
            tmp_name = str(temp.path)
    except Exception as exc:
        error = exc
    results = _agree(error is None, repr(error), tmp_name)
    failed = _failure(results, final)
    if failed is None and rank != 0:
        try:  # every rank holds the owner record while it writes into the folder
            temp = Temporary.join(Path(results[0][2]))
        except OSError as exc:
            error = exc
        failed = _failure(_agree(error is None, repr(error), None), final)
    elif failed is None:
        failed = _failure(_agree(True, "", None), final)
    if failed is not None:
        if engine is not None:
            engine.close()
        _cleanup(rank, results[0][2], temp)
        dist.barrier()
        raise error if error is not None else failed
    tmp = Path(results[0][2])

    written: list[tuple[str, list[str]]] = []
    out_bytes = 0
    threads = torch.get_num_threads()
    if engine is not None and _engine.DISTRIBUTED_THREADS is not None:
        torch.set_num_threads(_engine.DISTRIBUTED_THREADS)
    try:
        meta = merge_metadata(config)
        total = sum(nbytes[n] for n in parts[rank])
        with tqdm(
            total=total, unit="B", unit_scale=True, desc=final.name, disable=not progress or rank
        ) as bar:
            for group, file in zip(groups[rank], files, strict=True):
                out_bytes += write_shard(
                    tmp / file,
                    {n: planned[n] for n in group},
                    target.__getitem__,
                    metadata=meta,
                    check_finite=config.check_finite,
                    bar=bar,
                )
                written.append((file, list(group)))
    except Exception as exc:
        error = exc
        for file in files:
            (tmp / file).unlink(missing_ok=True)
    finally:
        if engine is not None:
            engine.close()
            torch.set_num_threads(threads)
    results = _agree(error is None, repr(error), (written, sum(nbytes[n] for n in parts[rank])))
    failed = _failure(results, final)
    if failed is None and rank == 0:
        try:
            write_extra_files(tmp, extras)
            _finish(tmp, final, results, prep.names)
        except Exception as exc:
            error = exc
    if failed is None:
        results = _agree(error is None, repr(error), None)
        failed = _failure(results, final)
    if failed is not None:
        _cleanup(rank, str(tmp), temp)
        dist.barrier()
        raise error if error is not None else failed
    if temp is not None:
        temp.release(remove_record=rank == 0)
    mine = parts[rank]
    chosen = set(prep.selected)
    report = MergeReport(
        output=final,
        method=config.method,
        models=len(config.models),
        tensors=len(mine),
        merged=sum(1 for n in mine if n in chosen),
        bytes_read=prep.base.bytes_read
        + sum(sd.bytes_read for sd in prep.models)
        + (0 if engine is None else engine.bytes_read),
        bytes_written=out_bytes,
        seconds=time.perf_counter() - start,
        peak_rss_bytes=peak_rss(),
    )
    logger.info("rank %d of %d: %s", rank, len(results), report)
    return report


def _cleanup(rank: int, tmp: str | None, temp: Temporary | None) -> None:
    if rank == 0 and tmp is not None and os.path.isdir(tmp):
        shutil.rmtree(tmp, ignore_errors=True)
    if temp is not None:
        temp.release(remove_record=rank == 0)


def _finish(
    tmp: Path, final: Path, results: Sequence[tuple[bool, str, Any]], names: Sequence[str]
) -> None:
    """Rank 0: write the index from the gathered weight maps and move the folder into place."""
    groups: list[list[str]] = []
    files: list[str] = []
    total = 0
    for _, _, (written, nbytes) in results:
        for file, group in written:
            files.append(file)
            groups.append(group)
        total += nbytes
    covered = sorted(n for g in groups for n in g)
    if covered != sorted(names):  # pragma: no cover - the assignment covers every name once
        raise WeightspaceError("the ranks' weight maps do not cover the output tensors once")
    install_sharded(tmp, final, groups, files, total)
