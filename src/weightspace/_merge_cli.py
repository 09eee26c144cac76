"""The ``weightspace merge CONFIG -o OUT`` subcommand.

Kept apart from :mod:`weightspace._cli` so that the command line starts without importing
torch; the merge machinery is imported when the command runs.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

__all__ = ["add_merge_command"]

_DESCRIPTION = """\
Merge fine-tuned checkpoints as a YAML config says, streaming one tensor at a time, and
write the result atomically (nothing is left on disk if anything fails). The config is
weightspace's format (base, models, method, parameters, select/exclude, dtype,
max_shard_size, check_finite) or mergekit's (merge_method task_arithmetic, linear, ties,
dare_linear or dare_ties); see `weightspace.merge.MergeConfig`.
"""


def _threads_arg(value: str) -> int | str:
    """``--threads``: "auto" or a positive int."""
    if value == "auto":
        return value
    try:
        number = int(value)
    except ValueError:
        number = 0
    if number < 1:
        raise argparse.ArgumentTypeError(f'expected "auto" or an int >= 1, got {value!r}')
    return number


def _cmd_merge(args: argparse.Namespace) -> int:
    from weightspace.merge import MergeConfig, plan_merge, run_merge

    config = MergeConfig.from_yaml(args.config)
    if args.dry_run:
        print(plan_merge(config, args.output))
        return 0
    try:
        report = run_merge(
            config,
            args.output,
            overwrite=args.overwrite,
            progress=not args.no_progress,
            threads=args.threads,
        )
    except OSError as exc:
        print(
            f"weightspace: error: writing {args.output!r} failed: {exc}; nothing was written",
            file=sys.stderr,
        )
        return 1
    print(report)
    return 0


def add_merge_command(subparsers: Any) -> argparse.ArgumentParser:
    """Register the ``merge`` subcommand on the sub-parsers of the ``weightspace`` parser.

    Args:
        subparsers: What ``parser.add_subparsers()`` returned.

    Returns:
        The ``merge`` sub-parser (its handler is set as ``func``).

    Example:
        >>> import argparse
        >>> parser = argparse.ArgumentParser(prog="weightspace")
        >>> _ = add_merge_command(parser.add_subparsers(dest="command"))
        >>> parser.parse_args(["merge", "m.yaml", "-o", "out.safetensors"]).dry_run
        False
    """
    merge = subparsers.add_parser(
        "merge",
        help="merge checkpoints as a YAML config says",
        description=_DESCRIPTION,
    )
    merge.add_argument("config", help="the YAML config (weightspace's or mergekit's format)")
    merge.add_argument(
        "-o",
        "--output",
        required=True,
        help="output .safetensors file (a folder when the config sets max_shard_size)",
    )
    merge.add_argument("--overwrite", action="store_true", help="replace an existing output")
    merge.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    merge.add_argument(
        "--threads",
        default="auto",
        type=_threads_arg,
        help='torch threads: "auto" (default: the cores no other process keeps busy) or N',
    )
    merge.add_argument(
        "--dry-run",
        action="store_true",
        help="check the config and the inputs (headers only) and print the plan",
    )
    merge.set_defaults(func=_cmd_merge)
    parser: argparse.ArgumentParser = merge
    return parser
