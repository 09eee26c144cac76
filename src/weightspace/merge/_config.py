"""Merge configs: :class:`MergeConfig` and :class:`ModelSpec`, read from weightspace's YAML.

A config says what to merge and how; mergekit's YAML dialect is translated by
:mod:`weightspace.merge._mergekit`, the method's settings are resolved and checked by
:mod:`weightspace.merge._methods`, and :mod:`weightspace.merge._run` plans and runs the merge.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any, Literal

import torch
import yaml

from weightspace._errors import WeightspaceError, WeightspaceValueError
from weightspace.io import parse_size
from weightspace.merge._mergekit import from_mergekit
from weightspace.merge._methods import METHODS, Method, ResolvedMethod, resolve_method
from weightspace.merge._parse import check_keys, fmt, read_source, real, resolve_path, targets
from weightspace.select import pattern

__all__ = ["MergeConfig", "ModelSpec", "OutputDtype"]

OutputDtype = Literal["float32", "float16", "bfloat16"]
"""Output dtypes a config can name; ``None`` keeps each base tensor's dtype."""

_DTYPES: dict[str, torch.dtype] = {
    "float32": torch.float32,
    "float16": torch.float16,
    "bfloat16": torch.bfloat16,
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
        object.__setattr__(self, "weight", real(self.weight, f"{prefix}weight"))
        if self.density is not None:
            density = real(self.density, f"{prefix}density")
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

    ====================  =====================================  ==========================
    method                ``parameters``                         per model
    ====================  =====================================  ==========================
    ``task_arithmetic``   ``scale``                              ``weight``
    ``average``           none                                   none
    ``ties``              ``scale``, ``density``, ``majority``   ``weight``, ``density``
    ``dare``              ``scale``, ``drop_rate``, ``seed``,    ``weight``, ``density``,
                          ``rescale``                            ``seed``
    ``dare_ties``         as ``dare``, and ``majority``          as ``dare``
    ``magnitude_prune``   ``scale``, ``density``                 ``weight``, ``density``
    ``consensus``         ``scale``, ``k``, ``lambdas``          none
    ``slerp``             ``t`` (a number, a gradient list, or   none (exactly one model)
                          ``{filter, value}`` entries)
    ``model_stock``       ``filter_wise``                        none (two or more models)
    ``breadcrumbs``       ``scale``, ``density``, ``gamma``,     ``weight``, ``density``
                          ``rescale``, ``normalize``
    ``breadcrumbs_ties``  as ``breadcrumbs``                     as ``breadcrumbs``
    ``della``             ``scale``, ``density``, ``epsilon``,   ``weight``, ``density``,
                          ``seed``, ``rescale``, ``normalize``   ``seed``
    ``della_linear``      as ``della``                           as ``della``
    ====================  =====================================  ==========================

    ``magnitude_prune`` prunes each task vector to its density, then adds them up as task
    arithmetic does. For ``dare``/``dare_ties`` a per-model ``density`` is the keep
    probability ``1 - drop_rate`` (all models must then agree); ``seed`` defaults to 0.
    Different per-model densities in ``ties`` prune each vector first, then run TIES
    without a further trim. ``average`` is :func:`weightspace.merge.mean`. ``slerp``,
    ``model_stock``, ``breadcrumbs``, ``breadcrumbs_ties``, ``della`` and ``della_linear``
    follow mergekit 0.1 (``scale`` is its ``lambda``; ``density`` defaults to 1, ``gamma`` to
    0.01, ``epsilon`` to 0.15; ``normalize`` defaults to true for ``della`` only, ``rescale``
    to true for the two DELLA methods) and are computed from whole tensors, on the lazy path
    (see the "Scaling out" page of the documentation). Everything else
    follows the function of the same name in :mod:`weightspace.merge`; each method's settings
    are checked when the config is built, so a bad value fails here, naming its key.

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
        if self.method not in METHODS:
            raise WeightspaceValueError(
                f"`method` must be one of {fmt(list(METHODS))}, got {self.method!r}"
            )
        params = self.parameters if self.parameters is not None else {}
        if not isinstance(params, Mapping) or not all(isinstance(k, str) for k in params):
            raise WeightspaceValueError(
                f"`parameters` must be a mapping of names to values, got {params!r}"
            )
        valid = METHODS[self.method].parameters
        unknown = sorted(set(params) - set(valid))
        if unknown:
            raise WeightspaceValueError(
                f"unknown `parameters` for method {self.method!r}: {fmt(unknown)}; valid "
                f"names are {fmt(valid)}"
            )
        object.__setattr__(self, "parameters", MappingProxyType(dict(params)))
        allowed = METHODS[self.method].per_model
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
                        f"settings it uses: {fmt(allowed)}); remove it"
                    )
        object.__setattr__(self, "select", targets(self.select, "select"))
        object.__setattr__(self, "exclude", targets(self.exclude, "exclude"))
        for key in ("select", "exclude"):
            value = getattr(self, key)
            if value is not None:
                try:
                    pattern(value if isinstance(value, str) else list(value))
                except WeightspaceError as exc:
                    raise WeightspaceValueError(f"`{key}`: {exc}") from None
        if self.dtype is not None and self.dtype not in _DTYPES:
            raise WeightspaceValueError(
                f"`dtype` must be one of {fmt(list(_DTYPES))} or null (the base's dtype), got "
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
        self._resolved  # noqa: B018 - resolve and check the method's settings now, once

    @functools.cached_property
    def _resolved(self) -> ResolvedMethod:
        """The method with its settings read and checked (package-internal)."""
        return resolve_method(self.method, self.parameters, self.models)

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
        slerp             ``slerp`` of the base (``t = 0``) and the one other model, ``t``
                          with mergekit's gradients and ``filter`` entries
        model_stock       ``model_stock``, ``filter_wise`` as given
        breadcrumbs,      the method of the same name, with mergekit's ``weight``,
        breadcrumbs_ties  ``density``, ``gamma``, ``normalize``, ``rescale``, ``lambda``
        della,            the method of the same name, with mergekit's ``weight``,
        della_linear      ``density``, ``epsilon``, ``normalize``, ``rescale``, ``lambda``;
                          ``random_seed`` becomes ``seed``
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
        * **DELLA masks** are drawn from weightspace's seeded generators with mergekit's
          law (keep probability rising linearly with the magnitude rank in each row), so
          the kept entries differ from mergekit's; the rescaling (the L1 norm of each task
          vector kept) is mergekit's.
        * **Not supported** (an error names the key): ``slices``, ``tokenizer_source`` and
          the other tokenizer options, ``modules``, other merge methods, gradient or
          per-filter lists for parameters other than slerp's ``t`` (``weight: [0.2, 0.5]``),
          Hugging Face hub names (paths must be local checkpoints). ``int8_mask`` only
          changes mergekit's memory use, so it is accepted and ignored.

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
        text, folder = read_source(source)
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
            translated = from_mergekit(data, folder)
            models = tuple(ModelSpec(**m) for m in translated.pop("models"))
            return cls(models=models, **translated)
        return _from_ours(data, folder)


def _from_ours(data: Mapping[str, Any], folder: Path | None) -> MergeConfig:
    check_keys(data, _OUR_KEYS, "the merge config")
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
        check_keys(entry, _OUR_MODEL_KEYS, f"`models[{i}]`")
        if "path" not in entry:
            raise WeightspaceValueError(f"`models[{i}]` has no `path`; add it")
        specs.append(
            ModelSpec(
                resolve_path(entry["path"], f"models[{i}].path", folder),
                weight=entry.get("weight", 1.0),
                density=entry.get("density"),
                seed=entry.get("seed"),
                source_key=f"models[{i}].path",
            )
        )
    parameters = data.get("parameters") or {}
    return MergeConfig(
        base=resolve_path(data["base"], "base", folder),
        models=tuple(specs),
        method=data.get("method", "task_arithmetic"),
        parameters=parameters,
        select=data.get("select"),
        exclude=data.get("exclude"),
        dtype=data.get("dtype"),
        max_shard_size=data.get("max_shard_size"),
        check_finite=data.get("check_finite", True),
    )
