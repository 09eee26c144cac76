"""What a merge would do and what it did: :class:`MergePlan` and :class:`MergeReport`."""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path

__all__ = ["MergePlan", "MergeReport", "fmt_size", "peak_rss"]


def peak_rss() -> int:
    """Peak resident memory of this process in bytes (0 where ``getrusage`` is missing)."""
    try:
        import resource
    except ImportError:  # pragma: no cover - Windows
        return 0
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return int(rss) if sys.platform == "darwin" else int(rss) * 1024


def fmt_size(n: float) -> str:
    """``n`` bytes in B, kB, MB or GB (powers of 1000), for reports."""
    for unit in ("B", "kB", "MB", "GB"):
        if abs(n) < 1000 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.2f} {unit}"
        n /= 1000
    return f"{n:.2f} TB"  # pragma: no cover


@dataclass(frozen=True)
class MergePlan:
    """What :func:`run_merge` would do with a config, found from the checkpoint headers alone.

    Attributes:
        method: The merge method.
        models: Number of fine-tuned models.
        tensors: Number of tensors the output will hold (all tensors of the base).
        merged: How many of them get a merged delta (the selected floating tensors).
        copied: How many are copied from the base (unselected and integer tensors).
        parameters: Total number of scalars in the output.
        input_bytes: Size of the tensor data the merge reads (each input tensor once).
        output_bytes: Size of the tensor data it writes.
        output_dtype: The output dtype of floating tensors (``"same as base"`` when unset).
        shards: Number of output files (1 unless ``max_shard_size`` splits it).
        output: The output path.
        bytes_read: Tensor bytes read while planning (0: only headers are read).

    Example:
        >>> plan = plan_merge(MergeConfig.from_yaml("merge.yaml"), "out.safetensors")
        ... # doctest: +SKIP
        >>> plan.tensors, plan.bytes_read  # doctest: +SKIP
        (291, 0)
    """

    method: str
    models: int
    tensors: int
    merged: int
    copied: int
    parameters: int
    input_bytes: int
    output_bytes: int
    output_dtype: str
    shards: int
    output: Path
    bytes_read: int

    def __str__(self) -> str:
        read, write = fmt_size(self.input_bytes), fmt_size(self.output_bytes)
        return "\n".join(
            [
                f"plan: {self.method} of {self.models} model(s) onto the base -> {self.output}",
                f"  tensors     {self.tensors} ({self.merged} merged, {self.copied} copied "
                "from the base)",
                f"  parameters  {self.parameters:,}",
                f"  read        {read}, write {write} in {self.shards} file(s), dtype "
                f"{self.output_dtype}",
                f"  read while planning: {self.bytes_read} bytes of tensor data",
            ]
        )


@dataclass(frozen=True)
class MergeReport:
    """What :func:`run_merge` did.

    Attributes:
        output: The path written (a ``.safetensors`` file, or a folder when sharded).
        tensors: Number of tensors written.
        merged: How many of them carry a merged delta (the others are copied from the base).
        bytes_read: Tensor bytes read from the inputs (sum of
            :attr:`~weightspace.io.LazyStateDict.bytes_read`).
        bytes_written: Size of the files written.
        seconds: Wall time of the merge, opening the inputs included.
        peak_rss_bytes: Peak resident memory of the process so far (``getrusage``; 0 where
            unavailable).

    Example:
        >>> report = run_merge(MergeConfig.from_yaml("merge.yaml"), "out.safetensors")
        ... # doctest: +SKIP
        >>> print(report)  # doctest: +SKIP
        merged 291 tensors (task_arithmetic, 3 models) into out.safetensors
          read 3.96 GB, wrote 0.99 GB in 2.10 s (2.36 GB/s), peak RSS 1.02 GB
    """

    output: Path
    method: str
    models: int
    tensors: int
    merged: int
    bytes_read: int
    bytes_written: int
    seconds: float
    peak_rss_bytes: int

    @property
    def gb_per_s(self) -> float:
        """Bytes read and written per second, in GB/s (10**9 bytes)."""
        total = self.bytes_read + self.bytes_written
        return total / self.seconds / 1e9 if self.seconds > 0 else 0.0

    def __str__(self) -> str:
        return (
            f"merged {self.tensors} tensors ({self.merged} with a merged delta; "
            f"{self.method}, {self.models} model(s)) into {self.output}\n"
            f"  read {fmt_size(self.bytes_read)}, wrote {fmt_size(self.bytes_written)} in "
            f"{self.seconds:.2f} s ({self.gb_per_s:.2f} GB/s), peak RSS "
            f"{fmt_size(self.peak_rss_bytes)}"
        )
