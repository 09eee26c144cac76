"""mergekit's YAML configs, translated into weightspace's (see ``MergeConfig.from_yaml``).

Only the methods both libraries have are read (``task_arithmetic``, ``linear``, ``ties``,
``dare_linear``, ``dare_ties``, ``slerp``, ``model_stock``, ``breadcrumbs``,
``breadcrumbs_ties``, ``della``, ``della_linear``); every other key is refused with a message
that names it,
and the documented differences from mergekit are in the docstring of
:meth:`weightspace.merge.MergeConfig.from_yaml`.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from weightspace._errors import WeightspaceValueError
from weightspace.merge._methods import METHODS, Method
from weightspace.merge._parse import check_keys, fmt, real, resolve_path

__all__ = ["from_mergekit"]

logger = logging.getLogger(__name__)

_MK_METHODS = (
    "task_arithmetic",
    "linear",
    "ties",
    "dare_linear",
    "dare_ties",
    "slerp",
    "model_stock",
    "breadcrumbs",
    "breadcrumbs_ties",
    "della",
    "della_linear",
    "passthrough",
)
#: mergekit methods with its own generalized-task-arithmetic semantics, kept as they are.
_MK_GTA = ("breadcrumbs", "breadcrumbs_ties", "della", "della_linear")
_MK_KEYS = ("merge_method", "base_model", "models", "parameters", "dtype", "out_dtype")
_MK_IGNORED = ("name", "random_seed")
_MK_UNSUPPORTED = {
    "tokenizer_source": "tokenizers are not merged; copy the tokenizer files yourself",
    "tokenizer": "tokenizers are not merged; copy the tokenizer files yourself",
    "chat_template": "chat templates are not handled; copy them yourself",
    "modules": "per-module definitions (`modules`) are not supported",
}
_MK_GLOBAL_PARAMS = (
    "weight",
    "density",
    "normalize",
    "lambda",
    "rescale",
    "int8_mask",
    "t",
    "filter_wise",
    "gamma",
    "epsilon",
)
_MK_MODEL_PARAMS = ("weight", "density", "gamma", "epsilon")
_MK_NORMALIZE_DEFAULT = {
    "task_arithmetic": False,
    "linear": True,
    "ties": True,
    "dare_linear": False,
    "dare_ties": False,
    "breadcrumbs": False,
    "breadcrumbs_ties": False,
    "della": True,
    "della_linear": False,
}


def _mk_scalar(value: object, key: str) -> float:
    if isinstance(value, (list, dict)):
        raise WeightspaceValueError(
            f"`{key}` is a gradient or per-filter list ({value!r}); weightspace supports one "
            "number per model only"
        )
    return real(value, key)


def _mk_bool(value: object, key: str) -> bool:
    if not isinstance(value, bool):
        raise WeightspaceValueError(f"`{key}` must be true or false, got {value!r}")
    return value


def from_mergekit(data: Mapping[str, Any], folder: Path | None) -> dict[str, Any]:
    """The arguments of :class:`~weightspace.merge.MergeConfig` for a mergekit config.

    Args:
        data: The parsed YAML mapping (it has ``merge_method``).
        folder: The config file's folder (relative paths are resolved against it).

    Returns:
        ``base``, ``models`` (a tuple of :class:`~weightspace.merge.ModelSpec` arguments),
        ``method``, ``parameters``, ``dtype`` and ``source_format``.

    Raises:
        WeightspaceValueError: on an unsupported or bad key or value.
    """
    for key, why in _MK_UNSUPPORTED.items():
        if key in data:
            raise WeightspaceValueError(
                f"mergekit key `{key}` is not supported by weightspace: {why}"
            )
    if "slices" in data or data.get("merge_method") == "passthrough":
        return _passthrough(data, folder)
    check_keys(data, (*_MK_KEYS, *_MK_IGNORED), "the mergekit config")
    method = data.get("merge_method")
    if method not in _MK_METHODS:
        raise WeightspaceValueError(
            f"mergekit `merge_method` {method!r} is not supported; weightspace reads "
            f"{fmt(_MK_METHODS)} (or write a weightspace config with `method:` one of "
            f"{fmt(list(METHODS))})"
        )
    params = data.get("parameters") or {}
    if not isinstance(params, Mapping):
        raise WeightspaceValueError(f"`parameters` must be a mapping, got {params!r}")
    check_keys(params, _MK_GLOBAL_PARAMS, "the mergekit `parameters`")
    if method in ("slerp", "model_stock"):
        return _interpolating(method, data, params, folder)
    for key in ("t", "filter_wise", "gamma", "epsilon"):
        used = {"gamma": ("breadcrumbs", "breadcrumbs_ties"), "epsilon": ("della", "della_linear")}
        if key in params and method not in used.get(key, ()):
            raise WeightspaceValueError(
                f"`parameters.{key}` is not a parameter of mergekit's {method}"
            )
    normalize = _mk_bool(
        params.get("normalize", _MK_NORMALIZE_DEFAULT[method]), "parameters.normalize"
    )
    lam = _mk_scalar(params.get("lambda", 1.0), "parameters.lambda")
    default_weight = _mk_scalar(params.get("weight", 1.0), "parameters.weight")
    default_density = _mk_scalar(params.get("density", 1.0), "parameters.density")
    if "int8_mask" in params:
        _mk_bool(params["int8_mask"], "parameters.int8_mask")
    if "rescale" in params and method not in ("dare_linear", "dare_ties", *_MK_GTA):
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
    extra: dict[str, set[float]] = {"gamma": set(), "epsilon": set()}
    for i, entry in enumerate(raw_models):
        if not isinstance(entry, Mapping) or "model" not in entry:
            raise WeightspaceValueError(
                f"`models[{i}]` must be a mapping with `model: PATH`, got {entry!r}"
            )
        check_keys(entry, ("model", "parameters"), f"`models[{i}]`")
        mp = entry.get("parameters") or {}
        if not isinstance(mp, Mapping):
            raise WeightspaceValueError(f"`models[{i}].parameters` must be a mapping, got {mp!r}")
        check_keys(mp, _MK_MODEL_PARAMS, f"`models[{i}].parameters`")
        key = f"models[{i}].model"
        path = resolve_path(entry["model"], key, folder)
        if method != "linear" and entry["model"] == base_raw:
            continue  # mergekit leaves the base model out of the task vectors
        weight = _mk_scalar(mp.get("weight", default_weight), f"models[{i}].parameters.weight")
        density = _mk_scalar(mp.get("density", default_density), f"models[{i}].parameters.density")
        for name in extra:
            if name in mp:
                extra[name].add(_mk_scalar(mp[name], f"models[{i}].parameters.{name}"))
        entries.append((key, path, weight, density))
    if not entries:
        raise WeightspaceValueError(
            "`models` lists only the base model; add the fine-tuned models to merge"
        )
    base = entries[0][1] if base_raw is None else resolve_path(base_raw, "base_model", folder)
    weights = [w for _, _, w, _ in entries]
    total = sum(weights)
    divisor = total if normalize and abs(total) >= 1e-8 else 1.0
    out_dtype = data.get("out_dtype", data.get("dtype"))
    seed = data.get("random_seed", 0)

    def specs(use_weight: bool, use_density: bool) -> tuple[dict[str, Any], ...]:
        return tuple(
            {
                "path": path,
                "weight": w if use_weight else 1.0,
                "density": d if use_density else None,
                "source_key": key,
            }
            for key, path, w, d in entries
        )

    parameters: dict[str, Any]
    if method in _MK_GTA:
        given = [d for *_, d in entries]
        parameters = {
            "scale": lam,
            "normalize": normalize,
            "rescale": _mk_bool(
                params.get("rescale", method.startswith("della")), "parameters.rescale"
            ),
        }
        name = "gamma" if method.startswith("breadcrumbs") else "epsilon"
        values = extra[name] | (
            {_mk_scalar(params[name], f"parameters.{name}")} if name in params else set()
        )
        if len(values) > 1:
            raise WeightspaceValueError(
                f"mergekit's {method} with different `{name}` per model ({sorted(values)}) is "
                "not supported; give one value under `parameters`"
            )
        if values:
            parameters[name] = values.pop()
        if method.startswith("della"):
            parameters["seed"] = seed
        uniform = len(set(given)) == 1
        return {
            "base": base,
            "models": tuple(
                {
                    "path": path,
                    "weight": w,
                    "density": None if uniform else d,
                    "source_key": key,
                }
                for key, path, w, d in entries
            ),
            "method": method,
            "parameters": {**parameters, **({"density": given[0]} if uniform else {})},
            "dtype": out_dtype,
            "source_format": "mergekit",
        }
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
    return {
        "base": base,
        "models": models,
        "method": new_method,
        "parameters": parameters,
        "dtype": out_dtype,
        "source_format": "mergekit",
    }


def _interpolating(
    method: str, data: Mapping[str, Any], params: Mapping[str, Any], folder: Path | None
) -> dict[str, Any]:
    """Mergekit's ``slerp`` (the base and one model) and ``model_stock`` (two or more)."""
    allowed = ("t",) if method == "slerp" else ("filter_wise",)
    check_keys(params, allowed, f"the mergekit `parameters` of {method}")
    base_raw = data.get("base_model")
    if base_raw is None:
        raise WeightspaceValueError(
            f"mergekit's {method} needs `base_model` (for slerp: the model at t = 0); add it"
        )
    raw_models = data.get("models")
    if not isinstance(raw_models, list) or not raw_models:
        raise WeightspaceValueError(
            f"`models` must be a non-empty list of `- model: PATH` entries, got {raw_models!r}"
        )
    models = []
    for i, entry in enumerate(raw_models):
        if not isinstance(entry, Mapping) or "model" not in entry:
            raise WeightspaceValueError(
                f"`models[{i}]` must be a mapping with `model: PATH`, got {entry!r}"
            )
        check_keys(entry, ("model", "parameters"), f"`models[{i}]`")
        if entry.get("parameters"):
            raise WeightspaceValueError(
                f"`models[{i}].parameters`: mergekit's {method} takes no per-model parameters"
            )
        if entry["model"] == base_raw:
            continue
        key = f"models[{i}].model"
        models.append({"path": resolve_path(entry["model"], key, folder), "source_key": key})
    parameters = {k: params[k] for k in allowed if k in params}
    return {
        "base": resolve_path(base_raw, "base_model", folder),
        "models": tuple(models),
        "method": method,
        "parameters": parameters,
        "dtype": data.get("out_dtype", data.get("dtype")),
        "source_format": "mergekit",
    }


def _passthrough(data: Mapping[str, Any], folder: Path | None) -> dict[str, Any]:
    """Translate mergekit's ``passthrough`` with ``slices`` of one source each (stacking)."""
    if data.get("merge_method") != "passthrough":
        raise WeightspaceValueError(
            f"mergekit `slices` are supported with `merge_method: passthrough` (layer "
            f"stacking) only, got {data.get('merge_method')!r}; merge whole models with `models:`"
        )
    check_keys(data, ("merge_method", "base_model", "slices", "dtype", "out_dtype", *_MK_IGNORED),
               "the mergekit passthrough config")  # fmt: skip
    raw = data.get("slices")
    if not isinstance(raw, list) or not raw:
        raise WeightspaceValueError(
            "mergekit's passthrough needs `slices`: a list of `- sources: [{model: PATH, "
            f"layer_range: [START, STOP]}}]` entries, got {raw!r}"
        )
    paths: list[str] = []
    slices = []
    for i, entry in enumerate(raw):
        if not isinstance(entry, Mapping):
            raise WeightspaceValueError(f"`slices[{i}]` must be a mapping with `sources`")
        check_keys(entry, ("sources",), f"`slices[{i}]`")
        sources = entry.get("sources")
        if not isinstance(sources, list) or len(sources) != 1:
            raise WeightspaceValueError(
                f"`slices[{i}].sources` must list exactly one source for passthrough, got "
                f"{sources!r}"
            )
        src = sources[0]
        if not isinstance(src, Mapping) or "model" not in src or "layer_range" not in src:
            raise WeightspaceValueError(
                f"`slices[{i}].sources[0]` must be `{{model: PATH, layer_range: [START, "
                f"STOP]}}`, got {src!r}"
            )
        check_keys(src, ("model", "layer_range"), f"`slices[{i}].sources[0]`")
        resolve_path(src["model"], f"slices[{i}].sources[0].model", folder)
        if src["model"] not in paths:
            paths.append(src["model"])
        slices.append({"model": paths.index(src["model"]), "layers": src["layer_range"]})
    base_raw = data.get("base_model", paths[0])
    models = tuple(
        {
            "path": resolve_path(p, f"slices (model {p!r})", folder),
            "source_key": f"slices (model {p!r})",
        }
        for p in paths
    )
    return {
        "base": resolve_path(base_raw, "base_model", folder),
        "models": models,
        "method": "passthrough",
        "parameters": {"slices": slices},
        "dtype": data.get("out_dtype", data.get("dtype")),
        "source_format": "mergekit",
    }
