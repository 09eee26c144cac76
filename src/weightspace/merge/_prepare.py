"""Opening and checking the inputs of a merge, and building its lazy and fused output.

Shared by the serial merge (:mod:`weightspace.merge._run`) and the distributed one
(:mod:`weightspace.merge._distributed`): both open the checkpoints lazily, check names,
shapes and dtypes from the headers, refuse to write over an input, and write the mapping
that :func:`build_target` returns.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from weightspace._errors import ShapeMismatchError, WeightspaceError, WeightspaceValueError
from weightspace._task_vector import TaskVector
from weightspace.io import LazyStateDict, open_state_dict, provenance
from weightspace.merge import _engine
from weightspace.merge._config import MergeConfig
from weightspace.merge._engine import Engine, FastOutput
from weightspace.merge._methods import lazy_merge
from weightspace.merge._passthrough import PassthroughView, stacked_layers
from weightspace.merge._views import InputView, OutputView, SubsetView
from weightspace.merge._whole import WholeMerge
from weightspace.select import parameters

__all__ = [
    "DEFAULT_SHARD_SIZE",
    "TOKENIZER_FILES",
    "Prepared",
    "build_target",
    "check_output",
    "merge_metadata",
    "model_folder_files",
    "prepare",
]

logger = logging.getLogger(__name__)

#: Shard size of a folder output when neither the config nor the caller gives one (mergekit's
#: default: 5 GB).
DEFAULT_SHARD_SIZE = "5GB"

#: Tokenizer files copied from the base model's folder into a folder output (mergekit 0.1's
#: list, with the vocabulary files of the other tokenizer formats).
TOKENIZER_FILES = (
    "tokenizer_config.json",
    "special_tokens_map.json",
    "tokenizer.json",
    "tokenizer.model",
    "added_tokens.json",
    "vocab.json",
    "vocab.txt",
    "merges.txt",
    "spiece.model",
    "sentencepiece.bpe.model",
    "chat_template.jinja",
    "chat_template.json",
)


@dataclass
class Prepared:
    """The inputs of a merge, opened lazily, and the output's tensor names.

    Attributes:
        base: The base checkpoint.
        models: The fine-tuned checkpoints.
        names: Every output tensor (the base's names, in its order).
        selected: The names that get a merged delta.
        sources: ``passthrough``: where each output tensor comes from.
        layers: ``passthrough``: the output's number of layers.
    """

    base: LazyStateDict
    models: list[LazyStateDict]
    names: list[str]
    selected: list[str]
    sources: dict[str, tuple[LazyStateDict, str]] | None = None
    layers: int | None = None


def _open(path: Path, key: str) -> LazyStateDict:
    if not path.exists():
        raise WeightspaceValueError(
            f"`{key}` names {str(path)!r}, which does not exist; fix the path in the config "
            "(relative paths are resolved against the config file's folder)"
        )
    try:
        return open_state_dict(path)
    except WeightspaceError as exc:
        raise WeightspaceValueError(f"`{key}` {str(path)!r} cannot be opened: {exc}") from None


def _describe(sd: LazyStateDict) -> str:
    return repr(str(sd.source))


def prepare(config: MergeConfig) -> Prepared:
    """Open the inputs lazily and check names, shapes and dtypes (headers only)."""
    base = _open(config.base, config._base_key)
    models = [_open(m.path, m.source_key) for m in config.models]
    if config.method == "passthrough":
        sources, layers = stacked_layers(config, models)
        return Prepared(base, models, list(sources), [], sources, layers)
    names = list(base)
    floating = [n for n in names if base.dtype(n).is_floating_point]
    if config.select is None and config.exclude is None:
        selected = floating
        strict = True
    else:
        targets: Any = ".*" if config.select is None else config.select
        exclude: Any = config.exclude
        try:
            chosen = parameters(
                base,
                targets if isinstance(targets, str) else list(targets),
                exclude=exclude if exclude is None or isinstance(exclude, str) else list(exclude),
            )
        except WeightspaceError as exc:
            raise WeightspaceValueError(f"`select`/`exclude` on the base: {exc}") from None
        keep = set(chosen.names_a)
        selected = [n for n in floating if n in keep]
        strict = False
    base_label = f"`{config._base_key}` {_describe(base)}"
    for spec, sd in zip(config.models, models, strict=True):
        label = f"`{spec.source_key}` {_describe(sd)}"
        have = set(sd)
        wanted = names if strict else selected
        missing = [n for n in wanted if n not in have]
        extra = [n for n in sd if n not in set(names)] if strict else []
        if missing or extra:
            parts = []
            if missing:
                parts.append(
                    f"{len(missing)} tensors of the base are missing from {label}: "
                    f"{missing[:8]}{' ...' if len(missing) > 8 else ''}"
                )
            if extra:
                parts.append(
                    f"{len(extra)} tensors of {label} are not in the base "
                    f"{_describe(base)}: {extra[:8]}{' ...' if len(extra) > 8 else ''}"
                )
            raise ShapeMismatchError(
                "; ".join(parts) + "; merge checkpoints of one architecture, or merge only the "
                "common tensors with `select:` (unselected tensors are copied from the base)"
            )
        for name in names if strict else selected:
            b_shape, m_shape = base.shape(name), sd.shape(name)
            if b_shape != m_shape:
                raise ShapeMismatchError(
                    f"tensor {name!r} has shape {list(m_shape)} in {label} but "
                    f"{list(b_shape)} in {base_label}; merge checkpoints of one architecture, "
                    "or leave the tensor out with `exclude:`"
                )
            b_dtype, m_dtype = base.dtype(name), sd.dtype(name)
            if b_dtype.is_floating_point != m_dtype.is_floating_point:
                raise ShapeMismatchError(
                    f"tensor {name!r} is {m_dtype} in {label} but {b_dtype} in {base_label}; "
                    "floating-point and integer tensors cannot be combined: leave the tensor "
                    "out with `exclude:` (it is then copied from the base)"
                )
    return Prepared(base, models, names, selected)


def check_output(output: Path, config: MergeConfig, prep: Prepared, overwrite: bool) -> None:
    """Refuse an output that is an input, or that exists without ``overwrite``."""
    real_out = Path(os.path.realpath(output))
    sources = [(config._base_key, prep.base)] + [
        (m.source_key, sd) for m, sd in zip(config.models, prep.models, strict=True)
    ]
    for key, sd in sources:
        for cand in (sd.source, *sd.files):
            real = Path(os.path.realpath(cand))
            if real == real_out or real.is_relative_to(real_out):
                raise WeightspaceValueError(
                    f"the output {str(output)!r} is the input `{key}` ({str(cand)!r}); write "
                    "to another path (weightspace never overwrites its inputs)"
                )
    if (output.exists() or output.is_symlink()) and not overwrite:
        raise WeightspaceValueError(
            f"the output {str(output)!r} already exists; pass `overwrite=True` (on the command "
            "line: --overwrite) to replace it, or choose another path"
        )


def _provenance_parameters(config: MergeConfig) -> dict[str, Any]:
    return {
        **dict(config.parameters),
        "weights": [m.weight for m in config.models],
        "densities": [m.density for m in config.models],
        "seeds": [m.seed for m in config.models],
        "select": list(config.select) if isinstance(config.select, tuple) else config.select,
        "exclude": list(config.exclude) if isinstance(config.exclude, tuple) else config.exclude,
        "dtype": config.dtype,
        "config_format": config.source_format,
    }


def merge_metadata(config: MergeConfig) -> dict[str, str]:
    """The header metadata of a merge's output (:func:`weightspace.io.provenance`)."""
    return provenance(
        config.method,
        [config.base, *(m.path for m in config.models)],
        _provenance_parameters(config),
    )


def build_target(config: MergeConfig, prep: Prepared) -> tuple[Mapping[str, Any], Engine | None]:
    """The lazy output mapping of a merge (fused where possible) and its engine."""
    if prep.sources is not None:
        return PassthroughView(prep.sources, config.output_dtype), None
    base_label = f"`{config._base_key}`"
    base_all = InputView(
        prep.base, prep.names, base_label, check_finite=config.check_finite, cache_last=True
    )
    merged: TaskVector | None = None
    resolved = config._resolved
    if prep.selected and resolved.whole:
        base_view = SubsetView(base_all, prep.selected)
        views = [
            InputView(
                sd,
                prep.selected,
                f"`{spec.source_key}`",
                check_finite=config.check_finite,
                cache_last=False,
            )
            for spec, sd in zip(config.models, prep.models, strict=True)
        ]
        whole = WholeMerge(resolved, base_view, views, prep.selected)
        mapping = OutputView(base_all, None, config.output_dtype, whole, prep.selected)
        return mapping, None
    if prep.selected:
        # The selected part of the base shares base_all's cache: the reads of one tensor by
        # every task vector and by the output hit the file once.
        base_view = SubsetView(base_all, prep.selected)
        vectors = []
        for spec, sd in zip(config.models, prep.models, strict=True):
            view = InputView(
                sd,
                prep.selected,
                f"`{spec.source_key}`",
                check_finite=config.check_finite,
                cache_last=False,
            )
            vectors.append(TaskVector.from_models(finetuned=view, base=base_view))
        merged = lazy_merge(config._resolved, vectors)
    mapping = OutputView(base_all, merged, config.output_dtype)
    engine = None
    if _engine.ENABLED and prep.selected:
        engine = Engine(
            config._resolved, prep.base, prep.models, mapping, check_finite=config.check_finite
        )
    target: Mapping[str, Any] = (
        mapping if engine is None else FastOutput(mapping, engine, prep.selected)
    )
    return target, engine


def _model_folder(path: Path) -> Path:
    """The folder holding a checkpoint (itself, or the folder of a file or an index)."""
    return path if path.is_dir() else path.parent


def model_folder_files(
    config: MergeConfig, copy_tokenizer: bool, layers: int | None = None
) -> dict[str, bytes | Path]:
    """The files of the base model's folder that a folder output gets beside its shards.

    ``config.json`` (with ``torch_dtype``, and ``dtype`` where the file has it, set to the
    config's output dtype when it has one), ``generation_config.json`` and, with
    ``copy_tokenizer``, the tokenizer files (:data:`TOKENIZER_FILES`), each when the folder
    of the base checkpoint has it, as mergekit writes them.

    Args:
        config: The merge config.
        copy_tokenizer: Copy the tokenizer files too.
        layers: The output's number of layers, when it differs from the base's (written as
            ``num_hidden_layers``).

    Returns:
        ``file name -> content`` (bytes) or the file to copy.

    Raises:
        WeightspaceValueError: if the base's ``config.json`` is not a JSON object.
    """
    folder = _model_folder(config.base)
    files: dict[str, bytes | Path] = {}
    cfg = folder / "config.json"
    if cfg.is_file():
        if config.dtype is None and layers is None:
            files["config.json"] = cfg
        else:
            try:
                data = json.loads(cfg.read_text(encoding="utf-8"))
            except (OSError, UnicodeDecodeError, ValueError) as exc:
                raise WeightspaceValueError(
                    f"the base model's {str(cfg)!r} cannot be read as JSON: {exc}; fix it or "
                    "write the merge to a .safetensors file"
                ) from None
            if not isinstance(data, dict):
                raise WeightspaceValueError(
                    f"the base model's {str(cfg)!r} must hold a JSON object, got "
                    f"{type(data).__name__}"
                )
            if config.dtype is not None:
                data["torch_dtype"] = config.dtype
                if "dtype" in data:
                    data["dtype"] = config.dtype
            if layers is not None:
                data["num_hidden_layers"] = layers
            text = json.dumps(data, indent=2, sort_keys=True) + "\n"
            files["config.json"] = text.encode("utf-8")
    names = ["generation_config.json", *(TOKENIZER_FILES if copy_tokenizer else ())]
    for name in names:
        if (folder / name).is_file():
            files[name] = folder / name
    if files:
        logger.info("copying %s from %s into the output folder", ", ".join(files), folder)
    return files
