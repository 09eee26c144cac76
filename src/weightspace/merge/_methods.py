"""The merge methods a config can name, and their settings resolved and checked once.

Every method is two steps applied to the task vectors: a **sparsify** step (none, the
magnitude trim of TIES, or the random drop of DARE) and a **combine** step (a weighted sum,
the mean, the TIES sign election with its disjoint mean, or the consensus of TALL masks),
followed by the product by ``scale``. :data:`METHODS` is the one table that says which steps
and settings each method uses; :func:`resolve_method` reads a config's settings into a
:class:`ResolvedMethod` (checking every value once, with messages that name the config key),
and the three ways of running a merge work from that description alone:

* the lazy task vectors of :mod:`weightspace.merge` (:func:`lazy_merge`), which give the
  results and the errors of record;
* the fused, chunked engine of :func:`weightspace.merge.run_merge`
  (:mod:`weightspace.merge._engine`), which gives the same bits faster;
* the distributed merge (:mod:`weightspace.merge._distributed`), which runs that engine on
  each rank's share of the tensors.

The methods whose combine step needs a statistic of whole tensors (``slerp``,
``model_stock``) or whose sparsify step ranks whole tensors (``breadcrumbs``, ``della``) are
computed tensor by tensor from full tensors (:mod:`weightspace.merge._whole`), on every path.

A new method that combines existing steps is one new row of :data:`METHODS`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any, Literal, Protocol, get_args

from weightspace._errors import WeightspaceValueError
from weightspace._task_vector import TaskVector
from weightspace.merge._merge import (
    consensus,
    dare,
    dare_ties,
    magnitude_prune,
    mean,
    task_arithmetic,
    ties,
)
from weightspace.merge._parse import fmt
from weightspace.merge._validate import (
    Majority,
    check_density,
    check_drop_rate,
    check_finite,
    check_k,
    check_lambdas,
    check_majority,
    check_seed,
    check_weights,
)
from weightspace.merge._whole import check_setting

__all__ = [
    "METHODS",
    "WHOLE_COMBINES",
    "Method",
    "MethodSpec",
    "ModelSettings",
    "ResolvedMethod",
    "lazy_merge",
    "resolve_method",
]

Method = Literal[
    "task_arithmetic",
    "average",
    "ties",
    "dare",
    "dare_ties",
    "magnitude_prune",
    "consensus",
    "slerp",
    "model_stock",
    "breadcrumbs",
    "breadcrumbs_ties",
    "della",
    "della_linear",
    "passthrough",
]
"""The merge methods a config can name (see :mod:`weightspace.merge`)."""

Sparsify = Literal["none", "trim", "dare", "outliers", "della"]
"""What is done to each task vector first: nothing, the magnitude trim, the DARE drop, the
Breadcrumbs trim (largest and smallest entries dropped), the DELLA rank-dependent drop."""

Combine = Literal[
    "sum", "mean", "ties", "consensus", "slerp", "model_stock", "gta", "gta_ties", "passthrough"
]
"""How the task vectors are combined (before the product by ``scale``); ``gta`` and
``gta_ties`` are mergekit's generalized task arithmetic without and with its sign election."""

#: Combine steps computed from whole tensors by :mod:`weightspace.merge._whole`.
WHOLE_COMBINES = ("slerp", "model_stock", "gta", "gta_ties")


@dataclass(frozen=True)
class MethodSpec:
    """One merge method: the settings a config may give it and the steps it runs.

    Attributes:
        parameters: Names allowed under ``parameters:``.
        per_model: Per-model settings it uses (besides ``path``).
        sparsify: Its first step.
        combine: Its second step.
    """

    parameters: tuple[str, ...]
    per_model: tuple[str, ...]
    sparsify: Sparsify
    combine: Combine


#: The one table of methods (keys in the order of :data:`Method`).
METHODS: Mapping[str, MethodSpec] = MappingProxyType(
    {
        "task_arithmetic": MethodSpec(("scale",), ("weight",), "none", "sum"),
        "average": MethodSpec((), (), "none", "mean"),
        "ties": MethodSpec(("scale", "density", "majority"), ("weight", "density"), "trim", "ties"),
        "dare": MethodSpec(
            ("scale", "drop_rate", "seed", "rescale"), ("weight", "density", "seed"), "dare", "sum"
        ),
        "dare_ties": MethodSpec(
            ("scale", "drop_rate", "seed", "majority", "rescale"),
            ("weight", "density", "seed"),
            "dare",
            "ties",
        ),
        "magnitude_prune": MethodSpec(("scale", "density"), ("weight", "density"), "trim", "sum"),
        "consensus": MethodSpec(("scale", "k", "lambdas"), (), "none", "consensus"),
        "slerp": MethodSpec(("t",), (), "none", "slerp"),
        "model_stock": MethodSpec(("filter_wise",), (), "none", "model_stock"),
        "breadcrumbs": MethodSpec(
            ("scale", "density", "gamma", "rescale", "normalize"),
            ("weight", "density"),
            "outliers",
            "gta",
        ),
        "breadcrumbs_ties": MethodSpec(
            ("scale", "density", "gamma", "rescale", "normalize"),
            ("weight", "density"),
            "outliers",
            "gta_ties",
        ),
        "della": MethodSpec(
            ("scale", "density", "epsilon", "seed", "rescale", "normalize"),
            ("weight", "density", "seed"),
            "della",
            "gta_ties",
        ),
        "della_linear": MethodSpec(
            ("scale", "density", "epsilon", "seed", "rescale", "normalize"),
            ("weight", "density", "seed"),
            "della",
            "gta",
        ),
        "passthrough": MethodSpec(("slices",), (), "none", "passthrough"),
    }
)
assert tuple(METHODS) == get_args(Method)


class ModelSettings(Protocol):
    """The per-model settings of a config (:class:`~weightspace.merge.ModelSpec`)."""

    @property
    def weight(self) -> float: ...

    @property
    def density(self) -> float | None: ...

    @property
    def seed(self) -> int | None: ...

    @property
    def source_key(self) -> str: ...


@dataclass(frozen=True)
class ResolvedMethod:
    """A merge method with every setting read, defaulted and checked.

    Attributes:
        method: The method's name (a key of :data:`METHODS`).
        n_tasks: Number of task vectors.
        scale: The product applied to the combined vector.
        weights: One coefficient per task, or ``None`` when all are 1.
        densities: ``sparsify == "trim"``: the fraction of each task's tensor kept (1 keeps
            everything); ``None`` otherwise.
        drop_rate: ``sparsify == "dare"``: the probability of dropping an entry.
        seed: ``sparsify == "dare"``: one seed, or one per task.
        rescale: ``sparsify == "dare"``: divide the kept entries by ``1 - drop_rate``.
        majority: ``combine == "ties"``: the sign-election rule.
        k: ``combine == "consensus"``: masks a weight must be in.
        lambdas: ``combine == "consensus"``: the TALL-mask thresholds, one per task.
        t: ``combine == "slerp"``: the interpolation factor (a number, a gradient over the
            layers, or filtered entries; see :mod:`weightspace.merge._whole`).
        filter_wise: ``combine == "model_stock"``: one ratio per row.
        gamma: ``sparsify == "outliers"``: the fraction of largest entries dropped.
        epsilon: ``sparsify == "della"``: the spread of the keep probabilities.
        normalize: ``gta``/``gta_ties``: divide by the sum of the (agreeing) weights.
        slices: ``combine == "passthrough"``: the output's layers, as ``(model, start, stop)``
            ranges of the models' layers, stacked in order.
    """

    method: str
    n_tasks: int
    scale: float = 1.0
    weights: tuple[float, ...] | None = None
    densities: tuple[float, ...] | None = None
    drop_rate: float = 0.0
    seed: int | tuple[int, ...] = 0
    rescale: bool = True
    majority: Majority = "total"
    k: int = 2
    lambdas: tuple[float, ...] = ()
    t: Any = 0.5
    filter_wise: bool = False
    gamma: float = 0.01
    epsilon: float = 0.15
    normalize: bool = False
    slices: tuple[tuple[int, int, int], ...] = ()

    @property
    def spec(self) -> MethodSpec:
        """The method's row of :data:`METHODS`."""
        return METHODS[self.method]

    @property
    def sparsify(self) -> Sparsify:
        """The first step."""
        return self.spec.sparsify

    @property
    def combine(self) -> Combine:
        """The second step."""
        return self.spec.combine

    @property
    def whole(self) -> bool:
        """Whether the method is computed from whole tensors (:mod:`weightspace.merge._whole`)."""
        return self.combine in WHOLE_COMBINES


def _flag(parameters: Mapping[str, Any], key: str, default: bool) -> bool:
    value = parameters.get(key, default)
    if not isinstance(value, bool):
        raise WeightspaceValueError(f"`parameters.{key}` must be true or false, got {value!r}")
    return value


def _fraction(parameters: Mapping[str, Any], key: str, default: float) -> float:
    value = parameters.get(key, default)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value < 1:
        raise WeightspaceValueError(f"`parameters.{key}` must lie in [0, 1), got {value!r}")
    return float(value)


def _slices(value: object, n_models: int) -> tuple[tuple[int, int, int], ...]:
    """``parameters.slices`` of passthrough: ``[{model: I, layers: [START, STOP]}, ...]``."""
    if not isinstance(value, (list, tuple)) or not value:
        raise WeightspaceValueError(
            "passthrough needs `parameters.slices`, a list of `{model: INDEX, layers: [START, "
            f"STOP]}}` entries (the layers of models[INDEX] stacked in order), got {value!r}"
        )
    out = []
    for i, entry in enumerate(value):
        ok = isinstance(entry, Mapping) and set(entry) == {"model", "layers"}
        model = entry.get("model") if isinstance(entry, Mapping) else None
        layers = entry.get("layers") if isinstance(entry, Mapping) else None
        ok = (
            ok
            and isinstance(model, int)
            and not isinstance(model, bool)
            and 0 <= model < n_models
            and isinstance(layers, (list, tuple))
            and len(layers) == 2
            and all(isinstance(x, int) and not isinstance(x, bool) for x in layers)
            and 0 <= layers[0] < layers[1]
        )
        if not ok:
            raise WeightspaceValueError(
                f"`parameters.slices[{i}]` must be `{{model: INDEX, layers: [START, STOP]}}` "
                f"with 0 <= INDEX < {n_models} and 0 <= START < STOP, got {entry!r}"
            )
        assert isinstance(model, int)
        assert isinstance(layers, (list, tuple))
        out.append((model, int(layers[0]), int(layers[1])))
    return tuple(out)


def _whole_settings(
    method: str, spec: MethodSpec, parameters: Mapping[str, Any], models: Sequence[ModelSettings]
) -> dict[str, Any]:
    """The settings of the whole-tensor methods (see :mod:`weightspace.merge._whole`)."""
    p = parameters
    n = len(models)
    if spec.combine == "slerp":
        if n != 1:
            raise WeightspaceValueError(
                f"slerp interpolates between the base and exactly one model, got {n} models"
            )
        if "t" not in p:
            raise WeightspaceValueError(
                "slerp needs `parameters.t` (0: the base, 1: the model; a list is a gradient "
                "over the layers)"
            )
        return {"t": check_setting(p["t"], "parameters.t")}
    if spec.combine == "model_stock":
        if n < 2:
            raise WeightspaceValueError(f"model_stock needs at least 2 models, got {n}")
        return {"filter_wise": _flag(p, "filter_wise", False)}
    densities = _densities(method, p, models, required=False)
    settings: dict[str, Any] = {
        "densities": None if densities is None else tuple(check_density(d) for d in densities),
        "normalize": _flag(p, "normalize", method == "della"),
        "rescale": _flag(p, "rescale", spec.sparsify == "della"),
    }
    if spec.sparsify == "outliers":
        settings["gamma"] = _fraction(p, "gamma", 0.01)
    else:
        epsilon = _fraction(p, "epsilon", 0.15)
        for d in densities or [1.0]:
            if d < 1.0 and not (d - epsilon > 0.0 and d + epsilon < 1.0):
                raise WeightspaceValueError(
                    f"`epsilon` {epsilon} must leave density +- epsilon inside (0, 1), "
                    f"got density {d}; lower epsilon"
                )
        settings["epsilon"] = epsilon
        seeds = [m.seed for m in models]
        if any(s is not None for s in seeds):
            if "seed" in p or any(s is None for s in seeds):
                raise WeightspaceValueError(
                    "give `seed` either under `parameters` or to every model, not both"
                )
            settings["seed"] = check_seed(tuple(s for s in seeds if s is not None), n)
        else:
            settings["seed"] = check_seed(p.get("seed", 0), n)
    return settings


def _densities(
    method: str, parameters: Mapping[str, Any], models: Sequence[ModelSettings], required: bool
) -> list[float] | None:
    given = parameters.get("density")
    per_model = [m.density for m in models]
    if given is not None and any(d is not None for d in per_model):
        raise WeightspaceValueError(
            "give `density` either under `parameters` or per model, not both"
        )
    if all(d is None for d in per_model):
        if given is None:
            if required:
                raise WeightspaceValueError(
                    f"method {method!r} needs `parameters.density` (the fraction of "
                    "each task vector kept, e.g. 0.2) or a `density` for every model"
                )
            return None
        return [given] * len(per_model)
    missing = [m.source_key for m in models if m.density is None]
    if missing:
        raise WeightspaceValueError(
            f"some models have a `density` and some do not ({fmt(missing)} lack one); give "
            "every model one, or use `parameters.density`"
        )
    return [float(d) for d in per_model if d is not None]


def _dare_settings(
    method: str, parameters: Mapping[str, Any], models: Sequence[ModelSettings]
) -> tuple[float, int | tuple[int, ...], bool]:
    p = parameters
    densities = _densities(method, parameters, models, required=False)
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
                f"method {method!r} needs `parameters.drop_rate` (e.g. 0.9) or a "
                "`density` for every model"
            )
    seeds = [m.seed for m in models]
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
    return check_drop_rate(drop_rate), check_seed(seed, len(models)), rescale


def resolve_method(
    method: str, parameters: Mapping[str, Any], models: Sequence[ModelSettings]
) -> ResolvedMethod:
    """Read, default and check the settings of a merge (the config's job, done once).

    Args:
        method: A key of :data:`METHODS`.
        parameters: The config's ``parameters`` (names already checked against the table).
        models: The config's models, with their per-model settings.

    Returns:
        The resolved method.

    Raises:
        WeightspaceValueError: on a missing, contradictory or bad setting; the message
            starts with ``merge config (METHOD):``.
    """
    spec = METHODS[method]
    n = len(models)
    p = parameters
    try:
        settings: dict[str, Any] = {}
        if spec.combine == "passthrough":
            settings["slices"] = _slices(p.get("slices"), n)
        elif spec.combine in WHOLE_COMBINES:
            settings = _whole_settings(method, spec, p, models)
        elif spec.sparsify == "trim":
            densities = _densities(method, p, models, required=True)
            assert densities is not None
            settings["densities"] = tuple(check_density(d) for d in densities)
        elif spec.sparsify == "dare":
            drop_rate, seed, rescale = _dare_settings(method, p, models)
            settings.update(drop_rate=drop_rate, seed=seed, rescale=rescale)
        if spec.combine == "ties":
            settings["majority"] = check_majority(p.get("majority", "total"))
        elif spec.combine == "consensus":
            settings["k"] = check_k(p.get("k", 2), n)
            settings["lambdas"] = check_lambdas(p.get("lambdas", 0.4), n)
        weights = tuple(m.weight for m in models)
        return ResolvedMethod(
            method=method,
            n_tasks=n,
            scale=check_finite("scale", p.get("scale", 1.0)),
            weights=None if all(x == 1.0 for x in weights) else check_weights(weights, n),
            **settings,
        )
    except WeightspaceValueError as exc:
        raise WeightspaceValueError(f"merge config ({method}): {exc}") from None


def lazy_merge(resolved: ResolvedMethod, vectors: Sequence[TaskVector]) -> TaskVector:
    """The lazy merged task vector of ``vectors`` (one per model), by the public merges.

    Args:
        resolved: The method.
        vectors: One task vector per model.

    Returns:
        The merged task vector (computed tensor by tensor when read).
    """
    r = resolved
    scale, w = r.scale, r.weights
    if r.whole or r.combine == "passthrough":
        raise ValueError(f"{r.method} is not a task-vector merge; lazy_merge does not run it")
    if r.combine == "mean":
        return mean(vectors)
    if r.combine == "consensus":
        return consensus(vectors, k=r.k, lambdas=r.lambdas, scale=scale)
    if r.sparsify == "dare":
        if r.combine == "sum":
            return dare(
                vectors,
                drop_rate=r.drop_rate,
                seed=r.seed,
                scale=scale,
                weights=w,
                rescale=r.rescale,
            )
        return dare_ties(
            vectors,
            drop_rate=r.drop_rate,
            seed=r.seed,
            scale=scale,
            weights=w,
            majority=r.majority,
            rescale=r.rescale,
        )
    if r.sparsify == "trim":
        assert r.densities is not None
        if r.combine == "sum":
            pruned = [magnitude_prune(v, d) for v, d in zip(vectors, r.densities, strict=True)]
            return task_arithmetic(pruned, scale=scale, weights=w).with_metadata(
                {"merge.method": r.method}
            )
        if len(set(r.densities)) == 1:
            return ties(
                vectors, density=r.densities[0], scale=scale, weights=w, majority=r.majority
            )
        # One trim per task (a density of 1 keeps everything), then TIES without a trim.
        pruned = [magnitude_prune(v, d) for v, d in zip(vectors, r.densities, strict=True)]
        return ties(pruned, density=1.0, scale=scale, weights=w, majority=r.majority)
    return task_arithmetic(vectors, scale=scale, weights=w)
