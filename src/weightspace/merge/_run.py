"""Plan and run a merge described by a config: :func:`plan_merge` and :func:`run_merge`.

:func:`plan_merge` checks a config against the checkpoints it names (reading headers only);
:func:`run_merge` writes the merged checkpoint one tensor at a time, with the fused engine
(:mod:`weightspace.merge._engine`) where it can, and returns a :class:`MergeReport`. Under
``torchrun`` it hands over to :mod:`weightspace.merge._distributed`. ``weightspace merge
CONFIG -o OUT`` is a thin command line around them.
"""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path
from typing import Any, Literal

from weightspace._errors import WeightspaceError, WeightspaceValueError
from weightspace.io import parse_size
from weightspace.io._write import group_shards, write_checkpoint
from weightspace.merge._config import MergeConfig
from weightspace.merge._distributed import distributed_merge, launched_world
from weightspace.merge._prepare import (
    DEFAULT_SHARD_SIZE,
    build_target,
    check_output,
    merge_metadata,
    model_folder_files,
    prepare,
)
from weightspace.merge._report import MergePlan, MergeReport, peak_rss
from weightspace.merge._threads import ThreadGovernor, check_threads

__all__ = ["plan_merge", "run_merge"]

logger = logging.getLogger(__name__)


def _shard_size(config: MergeConfig, out: Path, max_shard_size: int | str | None) -> int | None:
    """The output's shard size: the argument, the config's, 5 GB for a folder, or none."""
    if max_shard_size is not None:
        try:
            return parse_size(max_shard_size)
        except WeightspaceError as exc:
            raise WeightspaceValueError(f"`max_shard_size`: {exc}") from None
    if config.max_shard_size is not None:
        return parse_size(config.max_shard_size)
    if out.suffix != ".safetensors":
        return parse_size(DEFAULT_SHARD_SIZE)
    return None


def plan_merge(
    config: MergeConfig,
    output: str | os.PathLike[str],
    *,
    max_shard_size: int | str | None = None,
) -> MergePlan:
    """Check ``config`` against its checkpoints and describe the merge, reading headers only.

    Everything :func:`run_merge` checks before it computes a tensor is checked here: the
    files exist and open, tensor names, shapes and dtypes line up, the selection is not
    empty, and ``output`` is not an input. No tensor data is read.

    Args:
        config: The merge config.
        output: Where the merged checkpoint would go.
        max_shard_size: The shard size :func:`run_merge` would be given.

    Returns:
        The plan; ``str(plan)`` is what ``weightspace merge --dry-run`` prints.

    Raises:
        WeightspaceValueError: if a file does not exist or cannot be opened (the config key is
            named), or the output is an input.
        ShapeMismatchError: if names, shapes or dtypes of the models and the base differ.

    Example:
        >>> print(plan_merge(MergeConfig.from_yaml("merge.yaml"), "out/"))  # doctest: +SKIP
        plan: ties of 3 model(s) onto the base -> out
          tensors     291 (290 merged, 1 copied from the base)
          ...
    """
    if not isinstance(config, MergeConfig):
        raise WeightspaceValueError(
            f"`config` must be a MergeConfig, got {type(config).__name__}; read one with "
            "MergeConfig.from_yaml(path)"
        )
    prep = prepare(config)
    out = Path(os.path.abspath(Path(output).expanduser()))
    check_output(out, config, prep, overwrite=True)
    shard_size = _shard_size(config, out, max_shard_size)
    base = prep.base
    selected = set(prep.selected)
    target: Any = build_target(config, prep)[0] if prep.sources is not None else None
    if prep.sources is not None:
        in_bytes = sum(sd.nbytes(n) for sd, n in prep.sources.values())
    else:
        in_bytes = sum(base.nbytes(n) for n in prep.names) + sum(
            sd.nbytes(n) for sd in prep.models for n in prep.names if n in selected
        )
    out_nbytes = {}
    for n in prep.names:
        if target is not None:
            shape, dtype = target.shape(n), target.dtype(n)
        else:
            shape, dtype = base.shape(n), base.dtype(n)
            if config.output_dtype is not None and dtype.is_floating_point:
                dtype = config.output_dtype
        out_nbytes[n] = shape.numel() * dtype.itemsize
    shards = 1
    if shard_size is not None:
        shards = len(group_shards(prep.names, out_nbytes, shard_size))
    return MergePlan(
        method=config.method,
        models=len(config.models),
        tensors=len(prep.names),
        merged=len(prep.selected),
        copied=len(prep.names) - len(prep.selected),
        parameters=sum(
            (target.shape(n) if target is not None else base.shape(n)).numel() for n in prep.names
        ),
        input_bytes=in_bytes,
        output_bytes=sum(out_nbytes.values()),
        output_dtype=config.dtype or "same as base",
        shards=shards,
        output=out,
        bytes_read=base.bytes_read + sum(sd.bytes_read for sd in prep.models),
    )


def run_merge(
    config: MergeConfig,
    output: str | os.PathLike[str],
    *,
    overwrite: bool = False,
    progress: bool = True,
    threads: int | Literal["auto"] = "auto",
    max_shard_size: int | str | None = None,
    copy_tokenizer: bool = True,
) -> MergeReport:
    """Merge the checkpoints a config names and write the result, streaming, atomically.

    The inputs are opened lazily (:func:`weightspace.io.open_state_dict`) and
    :func:`weightspace.io.save_state_dict` writes the header first, then computes and writes
    one tensor at a time. Each merged tensor of a safetensors input is computed in chunks of
    ``2**17`` entries: the base and each model are read once, by positional reads into
    buffers reused from chunk to chunk, the deltas are merged by the kernels of
    :mod:`weightspace.merge` (or fused equivalents that give the same bits), added to the
    base and written, so memory stays at a few megabytes of buffers plus, for ``ties`` and
    ``magnitude_prune``, one float32 copy of the largest tensor (the trim thresholds are
    found over the whole tensor), and for ``dare``/``dare_ties`` one boolean mask per model.
    With ``threads="auto"`` torch starts single-threaded and, every quarter of a second,
    uses as many threads as there are cores that other processes leave free (its setting is
    restored afterwards): on an idle two-core machine two threads are about 1.5x faster, while
    on a busy one each multi-threaded operation would wait for a descheduled thread. The
    number of threads never changes the result. Other inputs (legacy pickles,
    unusual dtypes) and tensors holding NaN or infinity go through the lazy task vectors
    (:meth:`weightspace.TaskVector.from_models`, :mod:`weightspace.merge`), which give the
    same results and the errors of record.

    Each output tensor is ``base + merged delta`` in float32 (float64 for float64 base
    tensors), rounded once to the output dtype; integer and unselected tensors
    are copied from the base. The header's metadata records the method, the inputs, the
    parameters and the library version (:func:`weightspace.io.provenance`).

    **Output.** A path ending in ``.safetensors`` gets one file (unless the config sets
    ``max_shard_size``). Any other path is a Hugging Face model folder, as ``mergekit-yaml``
    writes it: safetensors shards of at most ``max_shard_size`` (the argument, else the
    config's, else 5 GB; a single ``model.safetensors`` when everything fits in one) with
    ``model.safetensors.index.json``, and, from the folder of the base checkpoint when it has
    them, ``config.json`` (its ``torch_dtype`` set to the config's ``dtype`` when there is
    one), ``generation_config.json`` and, with ``copy_tokenizer``, the tokenizer files. Such a
    folder loads with ``transformers.AutoModelForCausalLM.from_pretrained``.

    Nothing is left on disk when anything fails (bad input, NaN, a full disk): the output is
    written under a temporary name and renamed at the end. A temporary left by a process that
    was killed (``kill -9``, or a ``torchrun`` rank whose neighbour died) is removed by the
    next merge into the same place, which logs what it removed.

    Launched by ``torchrun`` (``WORLD_SIZE`` > 1), the merge is spread over the ranks: each
    computes its share of the tensors (grouped by source shard, balanced by bytes) and writes
    its own shards; rank 0 writes the index and copies the base model's files. ``output``
    must then be a folder; the tensors and the copied files are those of the serial merge,
    bit for bit, and each rank returns the report of its part (see the "Scaling out" page of
    the documentation).

    Args:
        config: The merge config.
        output: A ``.safetensors`` file, or a model folder (any other path).
        overwrite: Replace an existing output (never an input).
        progress: Show a ``tqdm`` progress bar, advanced after each tensor.
        threads: torch threads of the chunked path: ``"auto"`` (the cores other processes
            leave free, re-checked as the merge runs) or a fixed number. Under ``torchrun``
            each rank uses one.
        max_shard_size: Largest shard of a folder output (bytes, or a size such as
            ``"2GB"``); overrides the config's ``max_shard_size``.
        copy_tokenizer: Copy the base model's tokenizer files into a folder output.

    Returns:
        The report; ``str(report)`` is what ``weightspace merge`` prints.

    Raises:
        WeightspaceValueError: if a file is missing, the output is an input or exists
            without ``overwrite``, or (with ``config.check_finite``) a tensor holds NaN or
            infinity (the tensor and its file are named).
        ShapeMismatchError: if tensor names, shapes or dtypes of the inputs do not line up.
        OSError: if writing fails (for instance a full disk); nothing is left behind.

    Example:
        >>> cfg = MergeConfig.from_yaml("merge.yaml")  # doctest: +SKIP
        >>> run_merge(cfg, "merged.safetensors").tensors  # doctest: +SKIP
        291
    """
    start = time.perf_counter()
    if not isinstance(config, MergeConfig):
        raise WeightspaceValueError(
            f"`config` must be a MergeConfig, got {type(config).__name__}; read one with "
            "MergeConfig.from_yaml(path)"
        )
    threads = check_threads(threads)
    if launched_world() is not None:
        return distributed_merge(
            config,
            output,
            overwrite=overwrite,
            progress=progress,
            max_shard_size=max_shard_size,
            copy_tokenizer=copy_tokenizer,
        )
    prep = prepare(config)
    out = Path(os.path.abspath(Path(output).expanduser()))
    check_output(out, config, prep, overwrite)
    shard_size = _shard_size(config, out, max_shard_size)
    extras = {} if shard_size is None else model_folder_files(config, copy_tokenizer, prep.layers)
    target, engine = build_target(config, prep)
    meta = merge_metadata(config)
    governor = None if engine is None else ThreadGovernor(threads)
    if engine is not None:
        engine.governor = governor
    try:
        written = write_checkpoint(
            target,
            out,
            metadata=meta,
            max_shard_size=shard_size,
            inputs=[config.base, *(m.path for m in config.models)],
            overwrite=overwrite,
            check_finite=config.check_finite,
            progress=progress,
            extra_files=extras,
        )
    finally:
        if engine is not None:
            engine.close()
        if governor is not None:
            governor.close()
    files = [p for p in written.iterdir() if p.is_file()] if written.is_dir() else [written]
    seconds = time.perf_counter() - start
    report = MergeReport(
        output=written,
        method=config.method,
        models=len(config.models),
        tensors=len(prep.names),
        merged=len(prep.selected),
        bytes_read=prep.base.bytes_read
        + sum(sd.bytes_read for sd in prep.models)
        + (0 if engine is None else engine.bytes_read),
        bytes_written=sum(p.stat().st_size for p in files),
        seconds=seconds,
        peak_rss_bytes=peak_rss(),
    )
    logger.info("%s", report)
    return report
