"""Tests of the method table and the resolution of a config's settings (merge._methods)."""

from __future__ import annotations

import typing
from pathlib import Path

import pytest
import torch

from weightspace import WeightspaceValueError
from weightspace._task_vector import TaskVector
from weightspace.io import save_state_dict
from weightspace.merge import MergeConfig, ModelSpec, _config, _methods, run_merge
from weightspace.merge import ties as ties_merge


def specs(n: int, **per_model: list[typing.Any]) -> tuple[ModelSpec, ...]:
    return tuple(
        ModelSpec(
            f"m{i}.safetensors",
            **{k: v[i] for k, v in per_model.items()},
            source_key=f"models[{i}].path",
        )
        for i in range(n)
    )


def test_the_table_names_every_method_of_a_config() -> None:
    assert tuple(_methods.METHODS) == typing.get_args(_methods.Method)
    named = typing.get_args(typing.get_type_hints(MergeConfig)["method"])
    assert set(named) == set(_methods.METHODS)
    steps = {(m.sparsify, m.combine) for m in _methods.METHODS.values()}
    assert len(steps) == len(_methods.METHODS)  # no two methods run the same steps


def test_defaults_are_filled_and_checked() -> None:
    r = _methods.resolve_method("dare_ties", {"drop_rate": 0.25}, specs(2))
    assert (r.sparsify, r.combine) == ("dare", "ties")
    assert (r.scale, r.weights, r.drop_rate, r.seed, r.rescale, r.majority) == (
        1.0,
        None,
        0.25,
        0,
        True,
        "total",
    )
    r = _methods.resolve_method("consensus", {"lambdas": 0.3}, specs(3))
    assert (r.k, r.lambdas) == (2, (0.3, 0.3, 0.3))


def test_per_model_settings_are_resolved() -> None:
    r = _methods.resolve_method(
        "ties", {"scale": 2}, specs(3, weight=[1.0, 0.5, 1.0], density=[0.2, 1.0, 0.5])
    )
    assert r.scale == 2.0 and isinstance(r.scale, float)
    assert r.weights == (1.0, 0.5, 1.0) and r.densities == (0.2, 1.0, 0.5)
    r = _methods.resolve_method("dare", {}, specs(2, density=[0.25, 0.25], seed=[4, 5]))
    assert (r.drop_rate, r.seed) == (0.75, (4, 5))


@pytest.mark.parametrize(
    ("method", "parameters", "per_model", "message"),
    [
        ("ties", {}, {}, r"merge config \(ties\): method 'ties' needs `parameters.density`"),
        ("ties", {"density": 1.5}, {}, r"merge config \(ties\): `density` must lie in \(0, 1\]"),
        ("dare", {"drop_rate": 1.0}, {}, r"merge config \(dare\): `drop_rate` must lie in"),
        ("dare", {"drop_rate": 0.1, "seed": "x"}, {}, r"`seed` must be an int or a sequence"),
        ("dare", {}, {"density": [0.5, 0.2]}, r"the models' `density` values differ"),
        ("consensus", {"lambdas": -1}, {}, r"merge config \(consensus\): `lambdas` must be non"),
        ("consensus", {"k": 3}, {}, r"`k` must lie in \[1, 2\] for 2 tasks"),
        ("task_arithmetic", {"scale": "big"}, {}, r"`scale` must be a finite real number"),
        ("ties", {"density": 0.5, "majority": "max"}, {}, r"`majority` must be 'total'"),
    ],
)
def test_bad_settings_fail_with_the_method_named(
    method: str, parameters: dict[str, typing.Any], per_model: dict[str, list[float]], message: str
) -> None:
    with pytest.raises(WeightspaceValueError, match=message):
        _methods.resolve_method(method, parameters, specs(2, **per_model))


def test_lazy_merge_is_the_public_merge() -> None:
    gen = torch.Generator().manual_seed(0)
    vectors = [TaskVector({"w": torch.randn(40, generator=gen)}) for _ in range(3)]
    r = _methods.resolve_method("ties", {"density": 0.3, "scale": 0.5}, specs(3))
    assert torch.equal(
        _methods.lazy_merge(r, vectors)["w"], ties_merge(vectors, density=0.3, scale=0.5)["w"]
    )


def test_a_config_is_resolved_once_however_often_it_runs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[str] = []
    resolve = _methods.resolve_method

    def counting(*args: typing.Any) -> _methods.ResolvedMethod:
        calls.append(args[0])
        return resolve(*args)

    monkeypatch.setattr(_config, "resolve_method", counting)
    base = {"w": torch.zeros(5)}
    save_state_dict(base, tmp_path / "b.safetensors")
    save_state_dict({"w": torch.arange(5.0)}, tmp_path / "f.safetensors")
    config = MergeConfig(
        tmp_path / "b.safetensors",
        [tmp_path / "f.safetensors"],
        method="ties",
        parameters={"density": 0.4},
    )
    assert calls == ["ties"]
    for i in range(2):
        run_merge(config, tmp_path / f"o{i}.safetensors", progress=False)
    assert calls == ["ties"]
