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
max_shard_size, check_finite) or mergekit's; see `weightspace.merge.MergeConfig`.
OUT ending in .safetensors is one file; any other OUT is a Hugging Face model folder, as
mergekit-yaml writes it (shards and their index, the base model's config.json,
generation_config.json and tokenizer files). mergekit-yaml's run-time flags --lazy-unpickle,
--no-cuda, --low-cpu-memory, --no-write-model-card and --quiet are accepted and ignored.
"""

#: mergekit-yaml options that only change how mergekit runs: accepted and ignored.
_MERGEKIT_NO_OPS = (
    "--lazy-unpickle",
    "--no-lazy-unpickle",
    "--no-cuda",
    "--low-cpu-memory",
    "--no-low-cpu-memory",
    "--no-write-model-card",
    "--quiet",
    "--no-quiet",
)

_UNITS_KMB = {"": 1, "K": 10**3, "M": 10**6, "B": 10**9}


def _kmb_size(value: str) -> int:
    """``--out-shard-size``: mergekit's spelling, a number with an optional K, M or B."""
    text = value.strip().upper()
    unit = text[-1:] if text[-1:] in ("K", "M", "B") else ""
    try:
        number = float(text[: len(text) - len(unit)])
    except ValueError:
        number = 0.0
    size = int(number * _UNITS_KMB[unit])
    if size < 1:
        raise argparse.ArgumentTypeError(
            f"expected a size such as 5B (5 billion bytes), 500M or 1000000, got {value!r}"
        )
    return size


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

    if args.allow_crimes:
        print(
            "weightspace: error: --allow-crimes is refused: weightspace merges only checkpoints "
            "whose tensor names, shapes and kinds agree (it says which tensor differs); to "
            "merge the common tensors of different models, name them with `select:` in a "
            "weightspace config",
            file=sys.stderr,
        )
        return 2
    shard_size = args.max_shard_size if args.max_shard_size is not None else args.out_shard_size
    config = MergeConfig.from_yaml(args.config)
    if args.dry_run:
        print(plan_merge(config, args.output, max_shard_size=shard_size))
        return 0
    try:
        report = run_merge(
            config,
            args.output,
            overwrite=args.overwrite,
            progress=not args.no_progress,
            threads=args.threads,
            max_shard_size=shard_size,
            copy_tokenizer=args.copy_tokenizer,
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
        help="output: a .safetensors file, or a model folder (any other path)",
    )
    merge.add_argument(
        "--max-shard-size",
        default=None,
        help="largest shard of a folder output, e.g. 2GB or 500MiB (default: the config's "
        "max_shard_size, else 5GB)",
    )
    merge.add_argument(
        "--out-shard-size",
        default=None,
        type=_kmb_size,
        help="mergekit's spelling of --max-shard-size: bytes, with K, M or B for thousands, "
        "millions or billions",
    )
    merge.add_argument(
        "--copy-tokenizer",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="copy the base model's tokenizer files into a folder output (default: yes)",
    )
    merge.add_argument(
        "--allow-crimes",
        action="store_true",
        help="mergekit's option to mix architectures: refused (see the message)",
    )
    for flag in _MERGEKIT_NO_OPS:
        merge.add_argument(
            flag,
            action="store_true",
            dest="mergekit_" + flag.lstrip("-").replace("-", "_"),
            help=argparse.SUPPRESS,
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
