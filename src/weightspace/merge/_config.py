"""Merges described by a YAML file, streamed from checkpoints on disk to a checkpoint on disk.

:class:`MergeConfig` holds what to merge and how; :func:`plan_merge` checks a config against the
checkpoints it names (reading headers only) and :func:`run_merge` writes the merged checkpoint,
one tensor at a time, and returns a :class:`MergeReport`. ``weightspace merge CONFIG -o OUT``
is a thin command line around them.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import sys
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any, Literal, get_args

import torch
import yaml

from weightspace._errors import ShapeMismatchError, WeightspaceError, WeightspaceValueError
from weightspace._task_vector import TaskVector
from weightspace.io import LazyStateDict, open_state_dict, parse_size, provenance, save_state_dict
from weightspace.io._write import TensorChunks, raise_if_not_finite
from weightspace.merge import _core
from weightspace.merge._merge import (
    average,
    consensus,
    dare,
    dare_ties,
    magnitude_prune,
    task_arithmetic,
    ties,
)
from weightspace.merge._seeding import derived_generator
from weightspace.merge._threads import ThreadGovernor, check_threads
from weightspace.merge._validate import (
    check_density,
    check_drop_rate,
    check_k,
    check_majority,
    check_weights,
)
from weightspace.merge._validate import check_finite as check_finite_number

__all__ = ["MergeConfig", "MergePlan", "MergeReport", "ModelSpec", "plan_merge", "run_merge"]

logger = logging.getLogger(__name__)

Method = Literal[
    "task_arithmetic", "average", "ties", "dare", "dare_ties", "magnitude_prune", "consensus"
]
"""The merge methods a config can name (see :mod:`weightspace.merge`)."""

OutputDtype = Literal["float32", "float16", "bfloat16"]
"""Output dtypes a config can name; ``None`` keeps each base tensor's dtype."""

_METHODS: tuple[str, ...] = get_args(Method)
_DTYPES: dict[str, torch.dtype] = {
    "float32": torch.float32,
    "float16": torch.float16,
    "bfloat16": torch.bfloat16,
}

#: Names allowed under ``parameters:`` for each method.
_PARAMETERS: dict[str, tuple[str, ...]] = {
    "task_arithmetic": ("scale",),
    "average": (),
    "ties": ("scale", "density", "majority"),
    "dare": ("scale", "drop_rate", "seed", "rescale"),
    "dare_ties": ("scale", "drop_rate", "seed", "majority", "rescale"),
    "magnitude_prune": ("scale", "density"),
    "consensus": ("scale", "k", "lambdas"),
}
#: Per-model settings each method uses (besides ``path``).
_PER_MODEL: dict[str, tuple[str, ...]] = {
    "task_arithmetic": ("weight",),
    "average": (),
    "ties": ("weight", "density"),
    "dare": ("weight", "density", "seed"),
    "dare_ties": ("weight", "density", "seed"),
    "magnitude_prune": ("weight", "density"),
    "consensus": (),
}
_OUR_KEYS = (
    "base",
    "models",
    "method",
    "parameters",
    "select",
    "exclude",
    "dtype",
    "max_shard_size",
    "check_finite",
)
_OUR_MODEL_KEYS = ("path", "weight", "density", "seed")

# mergekit ---------------------------------------------------------------------------------
_MK_METHODS = ("task_arithmetic", "linear", "ties", "dare_linear", "dare_ties")
_MK_KEYS = ("merge_method", "base_model", "models", "parameters", "dtype", "out_dtype")
_MK_IGNORED = ("name", "random_seed")
_MK_UNSUPPORTED = {
    "slices": "layer slicing (`slices`) is not supported; merge whole models",
    "tokenizer_source": "tokenizers are not merged; copy the tokenizer files yourself",
    "tokenizer": "tokenizers are not merged; copy the tokenizer files yourself",
    "chat_template": "chat templates are not handled; copy them yourself",
    "modules": "per-module definitions (`modules`) are not supported",
}
_MK_GLOBAL_PARAMS = ("weight", "density", "normalize", "lambda", "rescale", "int8_mask")
_MK_MODEL_PARAMS = ("weight", "density")
_MK_NORMALIZE_DEFAULT = {
    "task_arithmetic": False,
    "linear": True,
    "ties": True,
    "dare_linear": False,
    "dare_ties": False,
}


def _fmt(values: Sequence[str]) -> str:
    return ", ".join(repr(v) for v in values) if values else "(none)"


def _real(value: object, key: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise WeightspaceValueError(
            f"`{key}` must be a number, got {value!r} ({type(value).__name__})"
        )
    number = float(value)
    if not math.isfinite(number):
        raise WeightspaceValueError(f"`{key}` must be finite, got {value!r}")
    return number


def _targets(value: object, key: str) -> str | tuple[str, ...] | None:
    if value is None or isinstance(value, str):
        return value
    if isinstance(value, (list, tuple)) and all(isinstance(v, str) and v for v in value):
        if not value:
            raise WeightspaceValueError(f"`{key}` must not be an empty list; leave it out")
        return tuple(value)
    raise WeightspaceValueError(
        f"`{key}` must be a list of tensor/module names or dotted suffixes, or a regular "
        f"expression string (matched with re.fullmatch), got {value!r}"
    )


# --------------------------------------------------------------------------------------------
# Config
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ModelSpec:
    """One fine-tuned checkpoint of a merge, with its per-model settings.

    Args:
        path: The checkpoint: a ``.safetensors`` file, a sharded checkpoint folder or index.
        weight: Coefficient of this model's task vector (``weights`` of the merge function).
        density: Fraction of this model's task vector kept (``ties``, ``magnitude_prune``;
            for ``dare``/``dare_ties`` the keep probability ``1 - drop_rate``). ``None``: the
            method's ``density`` / ``drop_rate`` parameter.
        seed: Seed of this model's DARE drop mask; give one to every model or to none.
        source_key: Where the config names this model, for error messages (``models[0].path``).

    Raises:
        WeightspaceValueError: on a bad value.

    Example:
        >>> ModelSpec("ft_a.safetensors", weight=0.5).weight
        0.5
    """

    path: Path = field(metadata={"help": "checkpoint file, sharded folder or index JSON"})
    weight: float = field(default=1.0, metadata={"help": "coefficient of this task vector"})
    density: float | None = field(
        default=None, metadata={"help": "fraction of entries kept (ties, dare, pruning)"}
    )
    seed: int | None = field(default=None, metadata={"help": "seed of this model's DARE mask"})
    source_key: str = field(
        default="",
        compare=False,
        repr=False,
        metadata={"help": "the config key that names this model (for messages)"},
    )

    def __post_init__(self) -> None:
        key = self.source_key or "path"
        if not isinstance(self.path, (str, os.PathLike)) or not os.fspath(self.path):
            raise WeightspaceValueError(
                f"`{key}` must be a path to a checkpoint, got {self.path!r}"
            )
        object.__setattr__(self, "path", Path(self.path).expanduser())
        prefix = key.rpartition(".")[0] + "." if "." in key else ""
        object.__setattr__(self, "weight", _real(self.weight, f"{prefix}weight"))
        if self.density is not None:
            density = _real(self.density, f"{prefix}density")
            if not 0.0 < density <= 1.0:
                raise WeightspaceValueError(
                    f"`{prefix}density` must lie in (0, 1] (the fraction of entries kept), got "
                    f"{density}"
                )
            object.__setattr__(self, "density", density)
        if self.seed is not None and (
            isinstance(self.seed, bool) or not isinstance(self.seed, int)
        ):
            raise WeightspaceValueError(f"`{prefix}seed` must be an int, got {self.seed!r}")


@dataclass(frozen=True)
class MergeConfig:
    r"""What to merge and how: the content of a ``weightspace merge`` YAML file.

    The output is :math:`\theta_{\mathrm{base}} + \tau` where :math:`\tau` is the merge
    (``method``, with ``parameters``) of the task vectors
    :math:`\tau_i = \theta_i - \theta_{\mathrm{base}}` of ``models``, computed tensor by tensor
    in float32 (float64 for float64 base tensors) and rounded once to the output dtype.

    **Selection.** ``select`` and ``exclude`` use the grammar of
    :func:`weightspace.select.parameters` (a list matches exact names or dotted suffixes, and a
    name is matched with every module that contains it, so ``["layers"]`` selects everything
    under ``layers``; a string is a regular expression matched with ``re.fullmatch``). Only
    selected floating-point tensors are merged; **every other tensor of the base is copied
    from the base unchanged** (converted to ``dtype`` if one is given, for floating tensors),
    and the models need not hold it. Without ``select``/``exclude`` every floating tensor is
    merged and the models must hold exactly the base's tensor names. Integer tensors (step
    counters) are always copied from the base.

    **Parameters** by method (each model may also carry ``weight``, ``density``, ``seed``
    where the method uses them):

    ===================  =====================================  ==========================
    method               ``parameters``                         per model
    ===================  =====================================  ==========================
    ``task_arithmetic``  ``scale``                              ``weight``
    ``average``          none                                   none
    ``ties``             ``scale``, ``density``, ``majority``   ``weight``, ``density``
    ``dare``             ``scale``, ``drop_rate``, ``seed``,    ``weight``, ``density``,
                         ``rescale``                            ``seed``
    ``dare_ties``        as ``dare``, and ``majority``          as ``dare``
    ``magnitude_prune``  ``scale``, ``density``                 ``weight``, ``density``
    ``consensus``        ``scale``, ``k``, ``lambdas``          none
    ===================  =====================================  ==========================

    ``magnitude_prune`` prunes each task vector to its density, then adds them up as task
    arithmetic does. For ``dare``/``dare_ties`` a per-model ``density`` is the keep
    probability ``1 - drop_rate`` (all models must then agree); ``seed`` defaults to 0.
    Different per-model densities in ``ties`` prune each vector first, then run TIES
    without a further trim. Everything else follows the function of the same name in
    :mod:`weightspace.merge`.

    **Relative paths** in a file are resolved against the folder of that file; in YAML text
    given directly, against the current directory.

    Args:
        base: The model the others were fine-tuned from (the base of the task vectors).
        models: The fine-tuned checkpoints (:class:`ModelSpec` or paths).
        method: The merge method.
        parameters: The method's settings (see the table).
        select: Which tensors to merge (the rest is copied from the base).
        exclude: Tensors not to merge, in the same grammar.
        dtype: Output dtype of floating tensors; ``None`` keeps each base tensor's dtype.
        max_shard_size: Write an HF sharded folder with shards of at most this size
            (``"5GB"``); ``None`` writes one ``.safetensors`` file.
        check_finite: Refuse NaN or infinite values in the inputs and the output.
        source_format: ``"weightspace"`` or ``"mergekit"``: the YAML dialect this came from
            (used in messages and provenance only).

    Raises:
        WeightspaceValueError: on an unknown method or parameter (the valid ones are listed),
            or a bad value.

    Example:
        A config file in weightspace's format::

            base: checkpoints/base.safetensors
            models:
              - path: checkpoints/mnist.safetensors
                weight: 1.0
              - path: checkpoints/svhn/          # a sharded folder
                weight: 0.5
            method: ties
            parameters:
              density: 0.2
              scale: 1.0
            exclude: [head]                      # the head is copied from the base
            dtype: bfloat16
            max_shard_size: 5GB

        >>> cfg = MergeConfig.from_yaml('''
        ... base: base.safetensors
        ... models: [a.safetensors, b.safetensors]
        ... method: task_arithmetic
        ... parameters: {scale: 0.3}
        ... ''')
        >>> cfg.method, dict(cfg.parameters), [m.path.name for m in cfg.models]
        ('task_arithmetic', {'scale': 0.3}, ['a.safetensors', 'b.safetensors'])
    """

    base: Path = field(metadata={"help": "the base checkpoint (file, sharded folder or index)"})
    models: tuple[ModelSpec, ...] = field(metadata={"help": "the fine-tuned checkpoints"})
    method: Method = field(default="task_arithmetic", metadata={"help": "the merge method"})
    parameters: Mapping[str, Any] = field(
        default_factory=dict, metadata={"help": "the method's settings (scale, density, ...)"}
    )
    select: str | tuple[str, ...] | None = field(
        default=None, metadata={"help": "tensors to merge (names/suffixes list, or a regex)"}
    )
    exclude: str | tuple[str, ...] | None = field(
        default=None, metadata={"help": "tensors not to merge (copied from the base)"}
    )
    dtype: OutputDtype | None = field(
        default=None, metadata={"help": "output dtype of floating tensors; None: the base's"}
    )
    max_shard_size: str | int | None = field(
        default=None, metadata={"help": "shard the output (e.g. '5GB'); None: one file"}
    )
    check_finite: bool = field(
        default=True, metadata={"help": "refuse NaN/Inf in the inputs and the output"}
    )
    source_format: Literal["weightspace", "mergekit"] = field(
        default="weightspace", metadata={"help": "the YAML dialect the config was read from"}
    )

    def __post_init__(self) -> None:
        if self.source_format not in ("weightspace", "mergekit"):
            raise WeightspaceValueError(
                f"`source_format` must be 'weightspace' or 'mergekit', got {self.source_format!r}"
            )
        base_key = self._base_key
        if not isinstance(self.base, (str, os.PathLike)) or not os.fspath(self.base):
            raise WeightspaceValueError(
                f"`{base_key}` must be the path of the base checkpoint, got {self.base!r}"
            )
        object.__setattr__(self, "base", Path(self.base).expanduser())
        models = self.models
        if isinstance(models, (str, os.PathLike, ModelSpec)) or not isinstance(models, Sequence):
            raise WeightspaceValueError(
                f"`models` must be a list of fine-tuned checkpoints, got {models!r}"
            )
        if not models:
            raise WeightspaceValueError("`models` must name at least one fine-tuned checkpoint")
        specs = []
        for i, m in enumerate(models):
            if isinstance(m, ModelSpec):
                spec = m
            elif isinstance(m, (str, os.PathLike)):
                spec = ModelSpec(Path(m), source_key=f"models[{i}].path")
            else:
                raise WeightspaceValueError(
                    f"`models[{i}]` must be a ModelSpec or a path, got {type(m).__name__}"
                )
            if not spec.source_key:
                spec = ModelSpec(
                    spec.path, spec.weight, spec.density, spec.seed, f"models[{i}].path"
                )
            specs.append(spec)
        object.__setattr__(self, "models", tuple(specs))
        if self.method not in _METHODS:
            raise WeightspaceValueError(
                f"`method` must be one of {_fmt(_METHODS)}, got {self.method!r}"
            )
        params = self.parameters if self.parameters is not None else {}
        if not isinstance(params, Mapping) or not all(isinstance(k, str) for k in params):
            raise WeightspaceValueError(
                f"`parameters` must be a mapping of names to values, got {params!r}"
            )
        valid = _PARAMETERS[self.method]
        unknown = sorted(set(params) - set(valid))
        if unknown:
            raise WeightspaceValueError(
                f"unknown `parameters` for method {self.method!r}: {_fmt(unknown)}; valid "
                f"names are {_fmt(valid)}"
            )
        object.__setattr__(self, "parameters", MappingProxyType(dict(params)))
        allowed = _PER_MODEL[self.method]
        for spec in self.models:
            prefix = spec.source_key.rpartition(".")[0]
            used = {
                "weight": spec.weight != 1.0,
                "density": spec.density is not None,
                "seed": spec.seed is not None,
            }
            for name, is_set in used.items():
                if is_set and name not in allowed:
                    raise WeightspaceValueError(
                        f"`{prefix}.{name}` is not used by method {self.method!r} (per-model "
                        f"settings it uses: {_fmt(allowed)}); remove it"
                    )
        object.__setattr__(self, "select", _targets(self.select, "select"))
        object.__setattr__(self, "exclude", _targets(self.exclude, "exclude"))
        from weightspace.select import pattern

        for key in ("select", "exclude"):
            value = getattr(self, key)
            if value is not None:
                try:
                    pattern(value if isinstance(value, str) else list(value))
                except WeightspaceError as exc:
                    raise WeightspaceValueError(f"`{key}`: {exc}") from None
        if self.dtype is not None and self.dtype not in _DTYPES:
            raise WeightspaceValueError(
                f"`dtype` must be one of {_fmt(list(_DTYPES))} or null (the base's dtype), got "
                f"{self.dtype!r}"
            )
        if self.max_shard_size is not None:
            try:
                parse_size(self.max_shard_size)
            except WeightspaceError as exc:
                raise WeightspaceValueError(f"`max_shard_size`: {exc}") from None
        if not isinstance(self.check_finite, bool):
            raise WeightspaceValueError(
                f"`check_finite` must be true or false, got {self.check_finite!r}"
            )
        # Check every value now, on placeholder vectors (merges are lazy: nothing is computed).
        dummy = [TaskVector({"w": torch.zeros(2)}) for _ in self.models]
        _merged_vector(self, dummy)

    @property
    def _base_key(self) -> str:
        return "base_model" if self.source_format == "mergekit" else "base"

    @property
    def output_dtype(self) -> torch.dtype | None:
        """The torch dtype of floating output tensors, or ``None`` for the base's dtypes."""
        return None if self.dtype is None else _DTYPES[self.dtype]

    @classmethod
    def from_yaml(cls, source: str | os.PathLike[str]) -> MergeConfig:
        r"""Read a config from a YAML file or YAML text, in weightspace's or mergekit's format.

        The format is detected: a mapping with ``merge_method`` is mergekit's, anything else
        weightspace's (see the class docstring). mergekit configs are accepted for the
        methods both libraries have and translated as follows:

        ================  ====================================================================
        mergekit          weightspace
        ================  ====================================================================
        task_arithmetic   ``task_arithmetic``, ``weights`` = the models' ``weight``
        linear            ``task_arithmetic`` with ``scale = 1 / sum(weight)``: the weighted
                          average of the full models, :math:`\theta_b + \sum_i w_i\tau_i /
                          \sum_i w_i = \sum_i w_i\theta_i / \sum_i w_i` (the first model is
                          the base when there is no ``base_model``)
        ties              ``ties``; ``density`` per model (default 1)
        dare_linear       ``dare``, ``drop_rate = 1 - density``
        dare_ties         ``dare_ties``, ``drop_rate = 1 - density``
        ================  ====================================================================

        ``lambda`` becomes ``scale``; ``normalize: true`` divides ``scale`` by the sum of the
        weights (mergekit's default for ``linear`` and ``ties``; it leaves the weights as they
        are when they sum to 0, as mergekit does); ``dtype`` (or ``out_dtype``) becomes the
        output dtype; ``random_seed`` becomes the DARE ``seed`` (default 0); a ``models``
        entry that is the base model is dropped (its task vector is zero), except for
        ``linear``, where it is one of the averaged models.

        Differences from mergekit, which the same YAML can therefore give:

        * **Arithmetic.** mergekit computes in ``dtype`` (often bfloat16); weightspace
          accumulates in float32 and rounds once to the output dtype, so results differ by up
          to a few bfloat16 rounding steps (ours are the more accurate).
        * **TIES / DARE-TIES mean.** weightspace's disjoint merge divides the agreeing
          weighted values by their *number*, as in the TIES paper. mergekit divides by the
          *sum of their weights* with ``normalize: true`` (the same when all weights are
          equal, as then the weights cancel: they are dropped), and does not divide at all
          with ``normalize: false`` (its default for ``dare_ties``). Where the two differ a
          warning is logged; the ``normalize`` key itself is otherwise ignored for these two.
        * **Sign election.** A coordinate whose weighted values sum to exactly 0 gets no
          sign, hence 0, in weightspace; mergekit then elects ``+``.
        * **Density.** weightspace keeps ``round(density * numel)`` entries per tensor (ties
          at the threshold in index order); mergekit's magnitude trim keeps
          ``int(density * numel)``, so it can keep one entry fewer.
        * **DARE masks** are drawn from weightspace's seeded per-tensor generators, not
          torch's global generator, so the dropped entries differ from mergekit's (the
          distribution is the same). DARE needs one density for all models here.
        * **Not supported** (an error names the key): ``slices``, ``tokenizer_source`` and
          the other tokenizer options, ``modules``, other merge methods, gradient or
          per-filter parameter lists (``weight: [0.2, 0.5]``), Hugging Face hub names (paths
          must be local checkpoints). ``int8_mask`` only changes mergekit's memory use, so
          it is accepted and ignored.

        Args:
            source: A path to a ``.yaml``/``.yml`` file, or YAML text.

        Returns:
            The config.

        Raises:
            WeightspaceValueError: if the file is missing or is not valid YAML, on an unknown
                or unsupported key (named, with the supported ones), or on a bad value.

        Example:
            >>> cfg = MergeConfig.from_yaml('''
            ... merge_method: ties
            ... base_model: base
            ... models:
            ...   - model: base
            ...   - model: ft_a
            ...     parameters: {weight: 1.0, density: 0.5}
            ...   - model: ft_b
            ...     parameters: {weight: 1.0, density: 0.5}
            ... parameters: {normalize: true, int8_mask: true}
            ... dtype: bfloat16
            ... ''')
            >>> cfg.method, dict(cfg.parameters), cfg.dtype, len(cfg.models)
            ('ties', {'scale': 1.0, 'density': 0.5}, 'bfloat16', 2)
        """
        text, folder = _read_source(source)
        try:
            data = yaml.safe_load(text)
        except yaml.YAMLError as exc:
            raise WeightspaceValueError(
                f"the merge config is not valid YAML: {exc}; check the indentation and quoting"
            ) from None
        if not isinstance(data, Mapping):
            raise WeightspaceValueError(
                f"the merge config must be a YAML mapping (keys such as `base`, `models`, "
                f"`method`), got {type(data).__name__}"
            )
        if "merge_method" in data or "slices" in data:
            if "method" in data:
                raise WeightspaceValueError(
                    "the config mixes `merge_method` (mergekit's format) and `method` "
                    "(weightspace's format); use one of them"
                )
            return _from_mergekit(data, folder)
        return _from_ours(data, folder)


def _read_source(source: str | os.PathLike[str]) -> tuple[str, Path | None]:
    if isinstance(source, os.PathLike) or (
        isinstance(source, str)
        and "\n" not in source
        and (source.endswith((".yaml", ".yml")) or Path(source).expanduser().is_file())
    ):
        path = Path(source).expanduser()
        if not path.is_file():
            raise WeightspaceValueError(
                f"the merge config {str(source)!r} does not exist; pass the path of a YAML file"
            )
        try:
            return path.read_text(encoding="utf-8"), path.resolve().parent
        except (OSError, UnicodeDecodeError) as exc:
            raise WeightspaceValueError(
                f"the merge config {str(source)!r} cannot be read: {exc}"
            ) from None
    if not isinstance(source, str):
        raise WeightspaceValueError(
            f"`source` must be a path or YAML text, got {type(source).__name__}"
        )
    return source, None


def _path(value: object, key: str, folder: Path | None) -> Path:
    if not isinstance(value, str) or not value:
        raise WeightspaceValueError(f"`{key}` must be a path (a string), got {value!r}")
    path = Path(value).expanduser()
    if folder is not None and not path.is_absolute():
        path = folder / path
    return path


def _check_keys(data: Mapping[str, Any], valid: Sequence[str], where: str) -> None:
    unknown = [str(k) for k in data if k not in valid]
    if unknown:
        raise WeightspaceValueError(
            f"unknown key(s) {_fmt(unknown)} in {where}; valid keys are {_fmt(valid)}"
        )


def _from_ours(data: Mapping[str, Any], folder: Path | None) -> MergeConfig:
    _check_keys(data, _OUR_KEYS, "the merge config")
    for key in ("base", "models"):
        if key not in data:
            raise WeightspaceValueError(f"the merge config has no `{key}`; add it")
    raw_models = data["models"]
    if not isinstance(raw_models, list):
        raise WeightspaceValueError(
            f"`models` must be a list of paths or of mappings with `path`, got {raw_models!r}"
        )
    specs = []
    for i, entry in enumerate(raw_models):
        if isinstance(entry, str):
            entry = {"path": entry}
        if not isinstance(entry, Mapping):
            raise WeightspaceValueError(
                f"`models[{i}]` must be a path or a mapping with `path`, got {entry!r}"
            )
        _check_keys(entry, _OUR_MODEL_KEYS, f"`models[{i}]`")
        if "path" not in entry:
            raise WeightspaceValueError(f"`models[{i}]` has no `path`; add it")
        specs.append(
            ModelSpec(
                _path(entry["path"], f"models[{i}].path", folder),
                weight=entry.get("weight", 1.0),
                density=entry.get("density"),
                seed=entry.get("seed"),
                source_key=f"models[{i}].path",
            )
        )
    parameters = data.get("parameters") or {}
    return MergeConfig(
        base=_path(data["base"], "base", folder),
        models=tuple(specs),
        method=data.get("method", "task_arithmetic"),
        parameters=parameters,
        select=data.get("select"),
        exclude=data.get("exclude"),
        dtype=data.get("dtype"),
        max_shard_size=data.get("max_shard_size"),
        check_finite=data.get("check_finite", True),
    )


def _mk_scalar(value: object, key: str) -> float:
    if isinstance(value, (list, dict)):
        raise WeightspaceValueError(
            f"`{key}` is a gradient or per-filter list ({value!r}); weightspace supports one "
            "number per model only"
        )
    return _real(value, key)


def _mk_bool(value: object, key: str) -> bool:
    if not isinstance(value, bool):
        raise WeightspaceValueError(f"`{key}` must be true or false, got {value!r}")
    return value


def _from_mergekit(data: Mapping[str, Any], folder: Path | None) -> MergeConfig:
    for key, why in _MK_UNSUPPORTED.items():
        if key in data:
            raise WeightspaceValueError(
                f"mergekit key `{key}` is not supported by weightspace: {why}"
            )
    _check_keys(data, (*_MK_KEYS, *_MK_IGNORED), "the mergekit config")
    method = data.get("merge_method")
    if method not in _MK_METHODS:
        raise WeightspaceValueError(
            f"mergekit `merge_method` {method!r} is not supported; weightspace reads "
            f"{_fmt(_MK_METHODS)} (or write a weightspace config with `method:` one of "
            f"{_fmt(_METHODS)})"
        )
    params = data.get("parameters") or {}
    if not isinstance(params, Mapping):
        raise WeightspaceValueError(f"`parameters` must be a mapping, got {params!r}")
    _check_keys(params, _MK_GLOBAL_PARAMS, "the mergekit `parameters`")
    normalize = _mk_bool(
        params.get("normalize", _MK_NORMALIZE_DEFAULT[method]), "parameters.normalize"
    )
    lam = _mk_scalar(params.get("lambda", 1.0), "parameters.lambda")
    default_weight = _mk_scalar(params.get("weight", 1.0), "parameters.weight")
    default_density = _mk_scalar(params.get("density", 1.0), "parameters.density")
    if "int8_mask" in params:
        _mk_bool(params["int8_mask"], "parameters.int8_mask")
    if "rescale" in params and method not in ("dare_linear", "dare_ties"):
        raise WeightspaceValueError(
            f"`parameters.rescale` is only used by dare_linear and dare_ties, not {method!r}"
        )
    if method == "linear" and "lambda" in params:
        raise WeightspaceValueError("`parameters.lambda` is not a parameter of mergekit's linear")

    raw_models = data.get("models")
    if not isinstance(raw_models, list) or not raw_models:
        raise WeightspaceValueError(
            f"`models` must be a non-empty list of `- model: PATH` entries, got {raw_models!r}"
        )
    base_raw = data.get("base_model")
    if base_raw is None and method != "linear":
        raise WeightspaceValueError(
            f"mergekit's {method!r} needs `base_model` (the model the others were fine-tuned "
            "from); add it"
        )
    entries: list[tuple[str, Path, float, float]] = []
    for i, entry in enumerate(raw_models):
        if not isinstance(entry, Mapping) or "model" not in entry:
            raise WeightspaceValueError(
                f"`models[{i}]` must be a mapping with `model: PATH`, got {entry!r}"
            )
        _check_keys(entry, ("model", "parameters"), f"`models[{i}]`")
        mp = entry.get("parameters") or {}
        if not isinstance(mp, Mapping):
            raise WeightspaceValueError(f"`models[{i}].parameters` must be a mapping, got {mp!r}")
        _check_keys(mp, _MK_MODEL_PARAMS, f"`models[{i}].parameters`")
        key = f"models[{i}].model"
        path = _path(entry["model"], key, folder)
        if method != "linear" and entry["model"] == base_raw:
            continue  # mergekit leaves the base model out of the task vectors
        weight = _mk_scalar(mp.get("weight", default_weight), f"models[{i}].parameters.weight")
        density = _mk_scalar(mp.get("density", default_density), f"models[{i}].parameters.density")
        entries.append((key, path, weight, density))
    if not entries:
        raise WeightspaceValueError(
            "`models` lists only the base model; add the fine-tuned models to merge"
        )
    base = entries[0][1] if base_raw is None else _path(base_raw, "base_model", folder)
    weights = [w for _, _, w, _ in entries]
    total = sum(weights)
    divisor = total if normalize and abs(total) >= 1e-8 else 1.0
    out_dtype = data.get("out_dtype", data.get("dtype"))
    seed = data.get("random_seed", 0)

    def specs(use_weight: bool, use_density: bool) -> tuple[ModelSpec, ...]:
        return tuple(
            ModelSpec(
                path,
                weight=w if use_weight else 1.0,
                density=d if use_density else None,
                source_key=key,
            )
            for key, path, w, d in entries
        )

    parameters: dict[str, Any]
    if method in ("task_arithmetic", "linear"):
        if method == "linear" and not normalize and abs(total - 1.0) > 1e-6:
            raise WeightspaceValueError(
                f"mergekit's linear with `parameters.normalize: false` and weights summing to "
                f"{total} is not a task-vector merge (it scales the base too); set "
                "`normalize: true` or make the weights sum to 1"
            )
        models = specs(True, False)
        new_method: Method = "task_arithmetic"
        parameters = {"scale": lam / divisor}
    else:
        equal = all(w == weights[0] for w in weights)
        ties_like = method in ("ties", "dare_ties")
        if ties_like and (not equal or not normalize) and len(entries) > 1:
            logger.warning(
                "mergekit's %s with %s divides the merged values %s; weightspace divides by "
                "the number of agreeing models (the TIES paper's disjoint mean), so the "
                "result will differ from mergekit's",
                method,
                f"normalize: {str(normalize).lower()} and weights {weights}",
                "by the sum of the agreeing weights" if normalize else "by nothing",
            )
        drop_weights = ties_like and equal and normalize and weights[0] > 0
        models = specs(not drop_weights, method == "ties")
        scale = lam if ties_like else lam / divisor
        if method == "ties":
            new_method = "ties"
            parameters = {"scale": scale}
            densities = {d for *_, d in entries}
            if len(densities) == 1:
                models = specs(not drop_weights, False)
                parameters["density"] = densities.pop()
        else:
            densities = {d for *_, d in entries}
            if len(densities) > 1:
                raise WeightspaceValueError(
                    f"mergekit's {method} with different `density` per model "
                    f"({[d for *_, d in entries]}) is not supported; weightspace's DARE uses "
                    "one drop rate for all models"
                )
            new_method = "dare_ties" if method == "dare_ties" else "dare"
            parameters = {
                "scale": scale,
                "drop_rate": 1.0 - densities.pop(),
                "seed": seed,
                "rescale": _mk_bool(params.get("rescale", True), "parameters.rescale"),
            }
    return MergeConfig(
        base=base,
        models=models,
        method=new_method,
        parameters=parameters,
        dtype=out_dtype,
        source_format="mergekit",
    )


# --------------------------------------------------------------------------------------------
# Building the merge
# --------------------------------------------------------------------------------------------


def _densities(config: MergeConfig, required: bool) -> list[float] | None:
    given = config.parameters.get("density")
    per_model = [m.density for m in config.models]
    if given is not None and any(d is not None for d in per_model):
        raise WeightspaceValueError(
            "give `density` either under `parameters` or per model, not both"
        )
    if all(d is None for d in per_model):
        if given is None:
            if required:
                raise WeightspaceValueError(
                    f"method {config.method!r} needs `parameters.density` (the fraction of "
                    "each task vector kept, e.g. 0.2) or a `density` for every model"
                )
            return None
        return [given] * len(per_model)
    missing = [m.source_key for m in config.models if m.density is None]
    if missing:
        raise WeightspaceValueError(
            f"some models have a `density` and some do not ({_fmt(missing)} lack one); give "
            "every model one, or use `parameters.density`"
        )
    return [float(d) for d in per_model if d is not None]


def _dare_settings(config: MergeConfig) -> tuple[float, int | tuple[int, ...], bool]:
    p = config.parameters
    densities = _densities(config, required=False)
    if densities is not None and "drop_rate" in p:
        raise WeightspaceValueError(
            "give either `parameters.drop_rate` or a per-model `density` (= 1 - drop_rate), "
            "not both"
        )
    if densities is not None:
        if len(set(densities)) > 1:
            raise WeightspaceValueError(
                f"the models' `density` values differ ({densities}); DARE uses one drop rate "
                "for all models"
            )
        drop_rate: Any = 1.0 - densities[0]
    else:
        drop_rate = p.get("drop_rate")
        if drop_rate is None:
            raise WeightspaceValueError(
                f"method {config.method!r} needs `parameters.drop_rate` (e.g. 0.9) or a "
                "`density` for every model"
            )
    seeds = [m.seed for m in config.models]
    seed: Any
    if any(s is not None for s in seeds):
        if "seed" in p:
            raise WeightspaceValueError(
                "give `seed` either under `parameters` or per model, not both"
            )
        if any(s is None for s in seeds):
            raise WeightspaceValueError(
                "some models have a `seed` and some do not; give every model one, or use "
                "`parameters.seed`"
            )
        seed = tuple(s for s in seeds if s is not None)
    else:
        seed = p.get("seed", 0)
    rescale = p.get("rescale", True)
    if not isinstance(rescale, bool):
        raise WeightspaceValueError(f"`parameters.rescale` must be true or false, got {rescale!r}")
    return drop_rate, seed, rescale


def _merged_vector(config: MergeConfig, vectors: Sequence[TaskVector]) -> TaskVector:
    """The lazy merged task vector of ``vectors`` (one per model) as ``config`` says."""
    p = config.parameters
    weights = tuple(m.weight for m in config.models)
    w = None if all(x == 1.0 for x in weights) else weights
    scale: Any = p.get("scale", 1.0)
    method = config.method
    try:
        if method == "task_arithmetic":
            return task_arithmetic(vectors, scale=scale, weights=w)
        if method == "average":
            return average(vectors)
        if method == "consensus":
            return consensus(vectors, k=p.get("k", 2), lambdas=p.get("lambdas", 0.4), scale=scale)
        if method in ("ties", "magnitude_prune"):
            densities = _densities(config, required=True)
            assert densities is not None
            if method == "magnitude_prune":
                pruned = [magnitude_prune(v, d) for v, d in zip(vectors, densities, strict=True)]
                return task_arithmetic(pruned, scale=scale, weights=w).with_metadata(
                    {"merge.method": "magnitude_prune"}
                )
            majority = p.get("majority", "total")
            if len(set(densities)) == 1:
                return ties(
                    vectors, density=densities[0], scale=scale, weights=w, majority=majority
                )
            pruned = [
                magnitude_prune(v, d) if d < 1.0 else v
                for v, d in zip(vectors, densities, strict=True)
            ]
            return ties(pruned, density=1.0, scale=scale, weights=w, majority=majority)
        drop_rate, seed, rescale = _dare_settings(config)
        if method == "dare":
            return dare(
                vectors, drop_rate=drop_rate, seed=seed, scale=scale, weights=w, rescale=rescale
            )
        return dare_ties(
            vectors,
            drop_rate=drop_rate,
            seed=seed,
            scale=scale,
            weights=w,
            majority=p.get("majority", "total"),
            rescale=rescale,
        )
    except WeightspaceValueError as exc:
        raise WeightspaceValueError(f"merge config ({method}): {exc}") from None


# --------------------------------------------------------------------------------------------
# Lazy inputs and output
# --------------------------------------------------------------------------------------------


class _NamedView(Mapping[str, torch.Tensor]):
    """A mapping over a fixed list of names; subclasses say how a tensor is read."""

    _names: list[str]
    _set: set[str]

    def _set_names(self, names: Sequence[str]) -> None:
        self._names = list(names)
        self._set = set(self._names)

    def __iter__(self) -> Iterator[str]:
        return iter(self._names)

    def __len__(self) -> int:
        return len(self._names)

    def __contains__(self, name: object) -> bool:
        return name in self._set


class _Input(_NamedView):
    """A view of some tensors of a checkpoint: checks finiteness, caches the last tensor."""

    def __init__(
        self,
        sd: LazyStateDict,
        names: Sequence[str],
        label: str,
        *,
        check_finite: bool,
        cache_last: bool,
    ) -> None:
        self.sd = sd
        self._set_names(names)
        self.label = label
        self._check = check_finite
        self._cache = cache_last
        self._last: tuple[str, torch.Tensor] | None = None

    def __getitem__(self, name: str) -> torch.Tensor:
        if name not in self._set:
            raise KeyError(name)
        if self._last is not None and self._last[0] == name:
            return self._last[1]
        self._last = None
        tensor = self.sd[name]
        if self._check and (tensor.is_floating_point() or tensor.is_complex()):
            finite = torch.isfinite(tensor)
            if not bool(finite.all()):
                n_nan = int(torch.isnan(tensor).sum())
                n_inf = int((~finite).sum()) - n_nan
                raise WeightspaceValueError(
                    f"tensor {name!r} of {self.label} ({str(self.sd.source_file(name))!r}) has "
                    f"{n_nan} NaN and {n_inf} infinite values; fix the checkpoint, or leave the "
                    "tensor out of the merge with `exclude:` (set `check_finite: false` to copy "
                    "non-finite base tensors anyway); nothing was written"
                )
        if self._cache:
            self._last = (name, tensor)
        return tensor

    def shape(self, name: str) -> torch.Size:
        return self.sd.shape(name)

    def dtype(self, name: str) -> torch.dtype:
        return self.sd.dtype(name)


class _Subset(_NamedView):
    """Some names of an :class:`_Input`, read through it (and its cache)."""

    def __init__(self, parent: _Input, names: Sequence[str]) -> None:
        self._parent = parent
        self._set_names(names)

    def __getitem__(self, name: str) -> torch.Tensor:
        if name not in self._set:
            raise KeyError(name)
        return self._parent[name]

    def shape(self, name: str) -> torch.Size:
        return self._parent.shape(name)

    def dtype(self, name: str) -> torch.dtype:
        return self._parent.dtype(name)


class _Output(Mapping[str, torch.Tensor]):
    """``name -> base + merged delta`` (or the base tensor), computed on lookup."""

    def __init__(
        self, base: _Input, merged: TaskVector | None, out_dtype: torch.dtype | None
    ) -> None:
        self._base = base
        self._merged = merged
        self._out = out_dtype

    def __getitem__(self, name: str) -> torch.Tensor:
        b = self._base[name]
        dtype = self.dtype(name)
        if self._merged is not None and name in self._merged:
            acc = torch.float64 if b.dtype == torch.float64 else torch.float32
            delta = self._merged[name].to(acc)
            return (b.to(acc) + delta).to(dtype)
        return b.to(dtype)

    def __iter__(self) -> Iterator[str]:
        return iter(self._base)

    def __len__(self) -> int:
        return len(self._base)

    def shape(self, name: str) -> torch.Size:
        return self._base.shape(name)

    def dtype(self, name: str) -> torch.dtype:
        dtype = self._base.dtype(name)
        return self._out if self._out is not None and dtype.is_floating_point else dtype


# --------------------------------------------------------------------------------------------
# The fused, chunked path of run_merge
# --------------------------------------------------------------------------------------------
#
# run_merge computes each merged tensor here rather than through the lazy task vectors: the
# base and every model are read once, in chunks of CHUNK_ELEMENTS entries, by positional reads
# into buffers reused from chunk to chunk and tensor to tensor; each chunk's deltas are merged
# by the same elementwise kernels as the generic path (or by fused equivalents in
# weightspace.merge._core that give the same bits), added to the base, rounded once to the
# output dtype, checked for finiteness once and handed to the streaming writer. Whatever the
# per-tensor state the method needs (the TIES trim thresholds over the whole tensor, the DARE
# masks) is computed first. Anything unusual (a non-finite value, an input that is not a plain
# safetensors file, an exotic dtype) goes through the generic path, which gives the results
# and the errors of record; the tests compare both paths bit for bit.

#: Entries per chunk of the fused path (the buffers of one chunk stay in the CPU caches).
CHUNK_ELEMENTS = 1 << 17

_FAST_DTYPES = (torch.float32, torch.bfloat16, torch.float16, torch.float64)
_HALF = (torch.bfloat16, torch.float16)


class _Reader:
    """Positional reads of element ranges of one tensor of a safetensors file."""

    __slots__ = ("dtype", "fd", "itemsize", "name", "nbytes", "offset", "sd")

    def __init__(self, sd: LazyStateDict, name: str, fd: int, offset: int) -> None:
        self.sd = sd
        self.name = name
        self.dtype = sd.dtype(name)
        self.itemsize = self.dtype.itemsize
        self.nbytes = sd.nbytes(name)
        self.fd = fd
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
                    f"tensor {self.name!r} could not be read from {self.sd.source_file(self.name)}"
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
    entry = sd._entry(name)
    if (
        entry.offset is None
        or not entry.nbytes
        or sd._device != "cpu"
        or entry.file.suffix.lower() in (".bin", ".pt", ".pth")
        or sd.dtype(name) not in _FAST_DTYPES
    ):
        return None
    return _Reader(sd, name, files.fd(entry.file), entry.offset)


@dataclass
class _Keep:
    """The trim of one task's tensor: keep ``|d| > threshold`` and the first ``missing`` ties."""

    mode: Literal["all", "none", "threshold"]
    threshold: torch.Tensor | None = None
    missing: int = 0

    def apply(self, delta: torch.Tensor, magnitude: torch.Tensor, keep: torch.Tensor) -> None:
        """``delta *= mask`` in place, with a float 0/1 mask (``magnitude``, ``keep``: scratch).

        The same values as ``delta * self.mask(delta.abs())`` (a product by a boolean is one
        by 0.0 or 1.0), with float operations only, which are much faster than boolean ones.
        """
        if self.mode == "all":
            return
        if self.mode == "none":
            delta.mul_(0.0)
            return
        assert self.threshold is not None
        torch.abs(delta, out=magnitude)
        torch.gt(magnitude, self.threshold, out=keep)
        if self.missing > 0:
            tied = torch.nonzero(magnitude == self.threshold).squeeze(1)[: self.missing]
            keep[tied] = 1.0
            self.missing -= int(tied.numel())
        delta.mul_(keep)

    def mask(self, magnitude: torch.Tensor) -> torch.Tensor:
        """The keep mask of a chunk (``magnitude`` = ``|d|``), consuming tied entries."""
        if self.mode == "all":
            return torch.ones(magnitude.shape, dtype=torch.bool)
        if self.mode == "none":
            return torch.zeros(magnitude.shape, dtype=torch.bool)
        assert self.threshold is not None
        keep = magnitude > self.threshold
        if self.missing > 0:
            tied = torch.nonzero(magnitude == self.threshold).squeeze(1)[: self.missing]
            keep[tied] = True
            self.missing -= int(tied.numel())
        return keep


class _NotFinite(Exception):
    """A chunk held a value that is not finite: recompute the tensor the generic way."""


class _Engine:
    """Computes merged tensors chunk by chunk (see the notes above)."""

    def __init__(self, config: MergeConfig, prep: _Prepared, generic: _Output) -> None:
        self.config = config
        self.prep = prep
        self.generic = generic
        self.files = _Files()
        self.n = len(prep.models)
        self.bytes_read = 0
        self.chunk = CHUNK_ELEMENTS
        self._buffers: dict[tuple[str, int], torch.Tensor] = {}
        self._dare: list[torch.Tensor] = []
        self.governor: ThreadGovernor | None = None
        p = config.parameters
        method = config.method
        weights = tuple(m.weight for m in config.models)
        self.w: tuple[float, ...] | None = (
            None if all(x == 1.0 for x in weights) else check_weights(weights, self.n)
        )
        self.scale = check_finite_number("scale", p.get("scale", 1.0))
        self.method = method
        self.densities: list[float] | None = None
        self.majority: Literal["total", "count"] = "total"
        if method in ("ties", "magnitude_prune"):
            self.densities = [check_density(d) for d in _densities(config, required=True) or []]
            self.majority = check_majority(p.get("majority", "total"))
        if method in ("dare", "dare_ties"):
            drop_rate, seed, rescale = _dare_settings(config)
            self.drop_rate = check_drop_rate(drop_rate)
            self.seeds = seed if isinstance(seed, int) else tuple(seed)
            self.rescale = bool(rescale)
            self.majority = check_majority(p.get("majority", "total"))
        if method == "consensus":
            self.k = check_k(p.get("k", 2), self.n)
            lambdas = p.get("lambdas", 0.4)
            if isinstance(lambdas, (int, float)) and not isinstance(lambdas, bool):
                self.lambdas: tuple[float, ...] = (float(lambdas),) * self.n
            else:
                self.lambdas = check_weights(lambdas, self.n, "lambdas")

    def close(self) -> None:
        self.files.close()
        self._buffers.clear()

    def _buf(
        self, key: str, index: int, numel: int, dtype: torch.dtype = torch.uint8
    ) -> torch.Tensor:
        """A reused buffer of at least ``numel`` entries of ``dtype``."""
        nbytes = numel * dtype.itemsize
        buf = self._buffers.get((key, index))
        if buf is None or buf.numel() < nbytes:
            buf = torch.empty(max(nbytes, 1), dtype=torch.uint8)
            self._buffers[(key, index)] = buf
        return buf[:nbytes].view(dtype)

    # -- one tensor ------------------------------------------------------------------------

    def output(self, name: str) -> TensorChunks | None:
        """The chunks of merged tensor ``name``, or ``None`` to use the generic path."""
        if sys.byteorder != "little":  # pragma: no cover - no big-endian CI
            return None
        base = self.prep.base
        readers = [_reader(base, name, self.files)]
        readers += [_reader(sd, name, self.files) for sd in self.prep.models]
        if any(r is None for r in readers):
            return None
        ready = [r for r in readers if r is not None]
        shape = base.shape(name)
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
        step = self.chunk
        for start in range(0, numel, step):
            stop = min(numel, start + step)
            if self.governor is not None:
                self.governor.tick()
            try:
                out = self._chunk(name, readers, state, start, stop, out_dtype)
            except _NotFinite:
                yield from self._generic_rest(name, start)
                return
            yield out

    def _generic_rest(self, name: str, start: int) -> Iterator[torch.Tensor]:
        """Entries ``[start:]`` of the generic result (which raises the errors of record)."""
        tensor = self.generic[name]
        if self.config.check_finite:
            raise_if_not_finite(name, tensor)
        yield tensor.reshape(-1)[start:]

    def _deltas(
        self, readers: list[_Reader], start: int, stop: int, tasks: Sequence[int] | None = None
    ) -> tuple[torch.Tensor, torch.Tensor, list[torch.Tensor]]:
        """The chunk's base (as read), base in float32, and float32 deltas of ``tasks``."""
        m = stop - start
        base_reader = readers[0]
        raw = base_reader.read(start, stop, self._buf("raw", 0, m * base_reader.itemsize))
        if raw.dtype == torch.float32:
            b32 = raw
        else:
            b32 = self._buf("b32", 0, m, torch.float32)
            b32.copy_(raw)
        deltas = []
        for t in range(self.n) if tasks is None else tasks:
            reader = readers[t + 1]
            f = reader.read(start, stop, self._buf("raw", t + 1, m * reader.itemsize))
            d = self._buf("d", t, m, torch.float32)
            if f.dtype == torch.float32 or f.dtype in _HALF:
                torch.sub(f, b32, out=d)  # bf16/f16 -> f32 is exact: same as f.float() - b32
            else:
                d.copy_(f)
                d.sub_(b32)
            deltas.append(d)
        return raw, b32, deltas

    def _tensor_state(self, name: str, readers: list[_Reader], numel: int) -> list[_Keep] | None:
        """Per-tensor state: the trims of TIES / magnitude pruning, the DARE masks."""
        method = self.method
        if method in ("ties", "magnitude_prune"):
            assert self.densities is not None
            densities = self.densities
            if method == "ties" and len(set(densities)) > 1:
                densities = [d if d < 1.0 else 2.0 for d in densities]  # 2.0: no trim at all
            return [self._trim(name, readers, numel, t, d) for t, d in enumerate(densities)]
        if method in ("dare", "dare_ties") and self.drop_rate != 0.0:
            self._dare = []
            shape = self.prep.base.shape(name)
            for task in range(self.n):
                if isinstance(self.seeds, int):
                    generator = derived_generator(self.seeds, name, task)
                else:
                    generator = derived_generator(self.seeds[task], name, None)
                mask = _core.dare_keep_mask(shape, self.drop_rate, generator, torch.device("cpu"))
                self._dare.append(mask.reshape(-1))
        return None

    def _trim(
        self, name: str, readers: list[_Reader], numel: int, task: int, density: float
    ) -> _Keep:
        """What :func:`weightspace.merge._core.magnitude_keep_mask` keeps of task ``task``."""
        k = round(density * numel)
        if k >= numel:
            return _Keep("all")
        if k <= 0:
            return _Keep("none")
        magnitude = self._buf("magnitude", 0, numel, torch.float32)
        for start in range(0, numel, self.chunk):
            stop = min(numel, start + self.chunk)
            _, _, (d,) = self._deltas(readers, start, stop, [task])
            if not bool(torch.isfinite(d.sum())):
                raise _NotFinite
            torch.abs(d, out=magnitude[start:stop])
        threshold, above = _core.kth_largest_with_count(magnitude, k, self.chunk)
        return _Keep("threshold", threshold, k - above)

    def _chunk(
        self,
        name: str,
        readers: list[_Reader],
        state: list[_Keep] | None,
        start: int,
        stop: int,
        out_dtype: torch.dtype,
    ) -> torch.Tensor:
        raw, b32, deltas = self._deltas(readers, start, stop)
        if self.method not in ("task_arithmetic", "average"):
            # Masks can hide a bad input from the output: check the deltas (a non-finite
            # input gives a non-finite delta; an overflow only sends us to the generic path).
            for d in deltas:
                if not bool(torch.isfinite(d.sum())):
                    raise _NotFinite
        merged = self._merge_chunk(deltas, state, start, stop)
        m = stop - start
        if raw.dtype == torch.float64:
            total = self._buf("o64", 0, m, torch.float64)
            total.copy_(merged)
            total.add_(raw)  # b + delta in float64 (a + b == b + a exactly)
        else:
            total = merged.add_(b32)  # b + delta (a + b == b + a exactly)
        if total.dtype == out_dtype:
            out = total
        else:
            out = self._buf("out", 0, m, out_dtype)
            out.copy_(total)
        # A float64 sum of finite entries is finite (no overflow): this checks every entry of
        # the output and, for the unmasked methods, every input (a bad input propagates).
        if not bool(torch.isfinite(out.sum(dtype=torch.float64))):
            raise _NotFinite
        return out

    def _prune(self, deltas: list[torch.Tensor], state: list[_Keep]) -> None:
        """Multiply each delta by its trim mask, in place."""
        m = deltas[0].numel()
        magnitude = self._buf("f32", 3, m, torch.float32)
        keep = self._buf("f32", 4, m, torch.float32)
        for d, trim in zip(deltas, state, strict=True):
            trim.apply(d, magnitude, keep)

    def _merge_chunk(
        self, deltas: list[torch.Tensor], state: list[_Keep] | None, start: int, stop: int
    ) -> torch.Tensor:
        """The merged delta of one chunk, in float32 (may be one of the delta buffers).

        The kernels are those of :mod:`weightspace.merge._merge`, applied to the chunk: they
        work entry by entry, given the per-tensor masks, so a chunk gives the bits that the
        whole tensor gives.
        """
        method, w, scale, n = self.method, self.w, self.scale, self.n
        out: torch.Tensor
        if method in ("task_arithmetic", "magnitude_prune"):
            terms = deltas
            if method == "magnitude_prune":
                assert state is not None
                self._prune(deltas, state)
            if n == 1 and scale == 1.0 and w is None:
                return terms[0]  # task_arithmetic's identity
            out = _core.fused_sum(terms, w, self._buf("acc", 0, stop - start, torch.float64))
        elif method == "average":
            if n == 1:
                return deltas[0]
            return _core.ordered_sum(deltas, divide_by_count=True)
        elif method == "ties":
            assert state is not None
            assert self.densities is not None
            if n >= 3 and self.majority == "total":
                # Masked and weighted terms (zeros of either sign: see fused_ties).
                self._prune(deltas, state)
                if w is not None:
                    for d, weight in zip(deltas, w, strict=True):
                        if weight != 1.0:
                            d.mul_(weight)
                m = stop - start
                out = _core.fused_ties(
                    deltas,
                    self._buf("acc", 0, m, torch.float64),
                    self._buf("acc", 1, m, torch.float64),
                    self._buf("f32", 0, m, torch.float32),
                    self._buf("f32", 1, m, torch.float32),
                    self._buf("f32", 2, m, torch.float32),
                )
            elif len(set(self.densities)) == 1:
                masks = [keep.mask(d.abs()) for d, keep in zip(deltas, state, strict=True)]
                out = _core.ties_merge(deltas, keep_masks=masks, weights=w, majority=self.majority)
            else:
                self._prune(deltas, state)
                out = _core.ties_merge(deltas, keep_masks=None, weights=w, majority=self.majority)
        elif method in ("dare", "dare_ties"):
            drops = None if self.drop_rate == 0.0 else [m[start:stop] for m in self._dare]
            divisor = None if self.drop_rate == 0.0 or not self.rescale else 1.0 - self.drop_rate
            if method == "dare":
                out = _core.ordered_sum(deltas, w, masks=drops, divisor=divisor)
            else:
                out = _core.ties_merge(
                    deltas, keep_masks=drops, weights=w, majority=self.majority, divisor=divisor
                )
        else:  # consensus
            total = _core.ordered_sum(deltas)
            count = torch.zeros(total.shape, dtype=torch.int64)
            for mask in _core.tall_masks_list(deltas, total, self.lambdas):
                count += mask
            out = torch.where(count >= self.k, total, torch.zeros((), dtype=total.dtype))
        return out * scale if scale != 1.0 else out


class _FastOutput(Mapping[str, "torch.Tensor | TensorChunks"]):
    """:class:`_Output` with the merged tensors computed by the fused path where it can."""

    def __init__(self, generic: _Output, engine: _Engine) -> None:
        self._generic = generic
        self._engine = engine
        self._merged = set(engine.prep.selected)

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
        return self._generic.shape(name)

    def dtype(self, name: str) -> torch.dtype:
        return self._generic.dtype(name)


#: Use the fused path in run_merge (the tests switch it off to compare with the generic path).
_FAST_PATH = True

#: Intra-op threads of torch in each rank of a distributed merge (restored afterwards); the
#: serial merge chooses its own (see :mod:`weightspace.merge._threads`). Every multi-threaded
#: operation waits for all its threads: on a busy machine (a core taken by another job, such
#: as another rank) that wait is a scheduler time slice per operation. Measured on a loaded
#: two-core machine (0.1B-parameter bf16 model, three models, task arithmetic): 1.2 s with
#: one thread, 33 to 119 s with two.
_CHUNK_THREADS: int | None = 1


@dataclass
class _Prepared:
    base: LazyStateDict
    models: list[LazyStateDict]
    names: list[str]
    selected: list[str]


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


def _prepare(config: MergeConfig) -> _Prepared:
    """Open the inputs lazily and check names, shapes and dtypes (headers only)."""
    base = _open(config.base, config._base_key)
    models = [_open(m.path, m.source_key) for m in config.models]
    names = list(base)
    floating = [n for n in names if base.dtype(n).is_floating_point]
    if config.select is None and config.exclude is None:
        selected = floating
        strict = True
    else:
        from weightspace.select import parameters

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
    return _Prepared(base, models, names, selected)


def _check_output(output: Path, config: MergeConfig, prep: _Prepared, overwrite: bool) -> None:
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


def _peak_rss() -> int:
    try:
        import resource
    except ImportError:  # pragma: no cover - Windows
        return 0
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return int(rss) if sys.platform == "darwin" else int(rss) * 1024


def _size(n: float) -> str:
    for unit in ("B", "kB", "MB", "GB"):
        if abs(n) < 1000 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.2f} {unit}"
        n /= 1000
    return f"{n:.2f} TB"  # pragma: no cover


# --------------------------------------------------------------------------------------------
# Plan, run, report
# --------------------------------------------------------------------------------------------


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
        return "\n".join(
            [
                f"plan: {self.method} of {self.models} model(s) onto the base -> {self.output}",
                f"  tensors     {self.tensors} ({self.merged} merged, {self.copied} copied "
                "from the base)",
                f"  parameters  {self.parameters:,}",
                f"  read        {_size(self.input_bytes)}, write {_size(self.output_bytes)} "
                f"in {self.shards} file(s), dtype {self.output_dtype}",
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
            f"  read {_size(self.bytes_read)}, wrote {_size(self.bytes_written)} in "
            f"{self.seconds:.2f} s ({self.gb_per_s:.2f} GB/s), peak RSS "
            f"{_size(self.peak_rss_bytes)}"
        )


def plan_merge(config: MergeConfig, output: str | os.PathLike[str]) -> MergePlan:
    """Check ``config`` against its checkpoints and describe the merge, reading headers only.

    Everything :func:`run_merge` checks before it computes a tensor is checked here: the
    files exist and open, tensor names, shapes and dtypes line up, the selection is not
    empty, and ``output`` is not an input. No tensor data is read.

    Args:
        config: The merge config.
        output: Where the merged checkpoint would go.

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
    prep = _prepare(config)
    out = Path(os.path.abspath(Path(output).expanduser()))
    _check_output(out, config, prep, overwrite=True)
    out_dtype = config.output_dtype
    base = prep.base
    selected = set(prep.selected)
    in_bytes = sum(base.nbytes(n) for n in prep.names) + sum(
        sd.nbytes(n) for sd in prep.models for n in prep.names if n in selected
    )
    out_nbytes = {}
    for n in prep.names:
        dtype = base.dtype(n)
        if out_dtype is not None and dtype.is_floating_point:
            dtype = out_dtype
        out_nbytes[n] = base.shape(n).numel() * dtype.itemsize
    shards = 1
    if config.max_shard_size is not None:
        from weightspace.io._write import _shards

        shards = len(_shards(prep.names, out_nbytes, parse_size(config.max_shard_size)))
    return MergePlan(
        method=config.method,
        models=len(config.models),
        tensors=len(prep.names),
        merged=len(prep.selected),
        copied=len(prep.names) - len(prep.selected),
        parameters=sum(base.shape(n).numel() for n in prep.names),
        input_bytes=in_bytes,
        output_bytes=sum(out_nbytes.values()),
        output_dtype=config.dtype or "same as base",
        shards=shards,
        output=out,
        bytes_read=base.bytes_read + sum(sd.bytes_read for sd in prep.models),
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


def _build_target(config: MergeConfig, prep: _Prepared) -> tuple[Mapping[str, Any], _Engine | None]:
    """The lazy output mapping of a merge (fused where possible) and its engine."""
    base_label = f"`{config._base_key}`"
    base_all = _Input(
        prep.base, prep.names, base_label, check_finite=config.check_finite, cache_last=True
    )
    merged: TaskVector | None = None
    if prep.selected:
        # The selected part of the base shares base_all's cache: the reads of one tensor by
        # every task vector and by the output hit the file once.
        base_view = _Subset(base_all, prep.selected)
        vectors = []
        for spec, sd in zip(config.models, prep.models, strict=True):
            view = _Input(
                sd,
                prep.selected,
                f"`{spec.source_key}`",
                check_finite=config.check_finite,
                cache_last=False,
            )
            vectors.append(TaskVector.from_models(view, base_view))
        merged = _merged_vector(config, vectors)
    mapping = _Output(base_all, merged, config.output_dtype)
    engine = _Engine(config, prep, mapping) if _FAST_PATH and prep.selected else None
    target: Mapping[str, Any] = mapping if engine is None else _FastOutput(mapping, engine)
    return target, engine


def _merge_metadata(config: MergeConfig) -> dict[str, str]:
    """The header metadata of a merge's output (:func:`weightspace.io.provenance`)."""
    return provenance(
        config.method,
        [config.base, *(m.path for m in config.models)],
        _provenance_parameters(config),
    )


def run_merge(
    config: MergeConfig,
    output: str | os.PathLike[str],
    *,
    overwrite: bool = False,
    progress: bool = True,
    threads: int | Literal["auto"] = "auto",
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

    Nothing is left on disk when anything fails (bad input, NaN, a full disk): the output is
    written under a temporary name and renamed at the end.

    Launched by ``torchrun`` (``WORLD_SIZE`` > 1), the merge is spread over the ranks: each
    computes its share of the tensors (grouped by source shard, balanced by bytes) and writes
    its own shards; rank 0 writes the index. ``output`` must then be a folder; the tensors
    are those of the serial merge, bit for bit, and each rank returns the report of its part
    (see the "Scaling out" page of the documentation).

    Args:
        config: The merge config.
        output: A ``.safetensors`` file, or a folder when ``config.max_shard_size`` is set.
        overwrite: Replace an existing output (never an input).
        progress: Show a ``tqdm`` progress bar, advanced after each tensor.
        threads: torch threads of the chunked path: ``"auto"`` (the cores other processes
            leave free, re-checked as the merge runs) or a fixed number. Under ``torchrun``
            each rank uses one.

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
    from weightspace.merge._distributed import distributed_merge, launched_world

    if launched_world() is not None:
        return distributed_merge(config, output, overwrite=overwrite, progress=progress)
    prep = _prepare(config)
    out = Path(os.path.abspath(Path(output).expanduser()))
    _check_output(out, config, prep, overwrite)
    target, engine = _build_target(config, prep)
    meta = _merge_metadata(config)
    governor = None if engine is None else ThreadGovernor(threads)
    if engine is not None:
        engine.governor = governor
    try:
        written = save_state_dict(
            target,
            out,
            metadata=meta,
            max_shard_size=config.max_shard_size,
            inputs=[config.base, *(m.path for m in config.models)],
            overwrite=overwrite,
            check_finite=config.check_finite,
            progress=progress,
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
        peak_rss_bytes=_peak_rss(),
    )
    logger.info("%s", report)
    return report
