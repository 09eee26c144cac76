"""Tests of weightspace.merge.search_scales."""

from __future__ import annotations

import functools
import math

import pytest
import torch
from torch import nn

from weightspace import WeightspaceValueError, merge
from weightspace._task_vector import TaskVector
from weightspace.merge import ScaleSearchResult, search_scales, ties

GRID = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0)


def quadratic(optimum: float):  # type: ignore[no-untyped-def]
    # base is 0 and the merged delta is 1, so the weight equals the coefficient.
    def evaluate(state: dict[str, torch.Tensor]) -> float:
        c = state["layer.weight"].mean().item()
        return -((c - optimum) ** 2)

    return evaluate


def setup() -> tuple[list[TaskVector], dict[str, torch.Tensor]]:
    vectors = [TaskVector({"layer.weight": torch.ones(3), "layer.bias": torch.ones(1)})]
    base = {"layer.weight": torch.zeros(3), "layer.bias": torch.zeros(1)}
    return vectors, base


def test_finds_the_optimum_of_a_quadratic() -> None:
    vectors, base = setup()
    result = search_scales(vectors, base, quadratic(0.7))
    assert result.scale == 0.7
    assert result.score == pytest.approx(0.0, abs=1e-12)
    assert [c for c, _ in result.scores] == list(GRID)
    assert result.n_evaluations == 10
    assert result.layer_scales is None


def test_minimizes_a_loss() -> None:
    vectors, base = setup()
    result = search_scales(
        vectors, base, lambda sd: (sd["layer.weight"][0].item() - 0.4) ** 2, maximize=False
    )
    assert result.scale == 0.4


def test_two_vectors_sum_and_a_module_base() -> None:
    model = nn.Linear(2, 1)
    with torch.no_grad():
        model.weight.zero_()
        model.bias.zero_()
    vectors = [
        TaskVector({"weight": torch.full((1, 2), 0.5), "bias": torch.zeros(1)}) for _ in range(2)
    ]
    # merged delta = 1.0 per weight, so the weight equals the coefficient.
    result = search_scales(
        vectors, model, lambda sd: -abs(sd["weight"][0, 0].item() - 0.3), grid=(0.2, 0.3, 0.5)
    )
    assert result.scale == 0.3
    assert model.weight.abs().sum().item() == 0.0  # base untouched


def test_per_layer_greedy_search_finds_separate_optima() -> None:
    vectors = [
        TaskVector({"a.weight": torch.ones(2), "a.bias": torch.ones(2), "b.weight": torch.ones(2)})
    ]
    base = {k: torch.zeros(2) for k in vectors[0]}

    def evaluate(sd: dict[str, torch.Tensor]) -> float:
        ca, cb = sd["a.weight"][0].item(), sd["b.weight"][0].item()
        assert sd["a.bias"][0].item() == ca  # one coefficient per module
        return -((ca - 0.2) ** 2) - (cb - 0.9) ** 2

    result = search_scales(vectors, base, evaluate, per_layer=True)
    assert result.layer_scales is not None
    assert dict(result.layer_scales) == {"a": 0.2, "b": 0.9}
    assert result.score == pytest.approx(0.0, abs=1e-12)
    assert result.n_evaluations == 10 + 2 * 9  # len(grid) + n_groups * (len(grid) - 1)
    with pytest.raises(TypeError):
        result.layer_scales["a"] = 1.0  # type: ignore[index]


def test_custom_method_and_nan_scores() -> None:
    vectors, base = setup()
    calls = []

    def evaluate(sd: dict[str, torch.Tensor]) -> float:
        c = sd["layer.weight"][0].item()
        calls.append(c)
        return math.nan if c > 0.5 else c

    result = search_scales(
        vectors, base, evaluate, method=functools.partial(ties, density=1.0), grid=(0.2, 0.6, 0.4)
    )
    assert result.scale == 0.4
    assert len(calls) == 3
    assert math.isnan(result.scores[1][1])


def test_errors() -> None:
    vectors, base = setup()
    with pytest.raises(WeightspaceValueError, match="`grid` must be a non-empty sequence"):
        search_scales(vectors, base, quadratic(0.5), grid=())
    with pytest.raises(WeightspaceValueError, match=r"`grid\[1\]` must be finite, got inf"):
        search_scales(vectors, base, quadratic(0.5), grid=(0.1, math.inf))
    with pytest.raises(WeightspaceValueError, match="`evaluate` must return a number"):
        search_scales(vectors, base, lambda sd: "good")  # type: ignore[arg-type,return-value]
    with pytest.raises(WeightspaceValueError, match="NaN for every scale in `grid`"):
        search_scales(vectors, base, lambda sd: math.nan)
    with pytest.raises(WeightspaceValueError, match="`rounds` must be an int >= 1"):
        search_scales(vectors, base, quadratic(0.5), per_layer=True, rounds=0)


def test_deprecated_search_names_warn_and_agree() -> None:
    vectors, base = setup()
    new = search_scales(vectors, base, quadratic(0.7), per_layer=True)
    with pytest.warns(FutureWarning, match=r"`weightspace.merge.search_coefficients` is dep"):
        old = merge.search_coefficients(vectors, base, quadratic(0.7), per_layer=True)
    assert old == new and isinstance(old, ScaleSearchResult)
    with pytest.warns(FutureWarning, match=r"`ScaleSearchResult.coefficient` is deprecated"):
        assert old.coefficient == new.scale == 0.7
    with pytest.warns(FutureWarning, match=r"`ScaleSearchResult.layer_coefficients` is dep"):
        assert old.layer_coefficients == new.layer_scales
    with pytest.warns(FutureWarning, match=r"`weightspace.merge.CoefficientSearchResult` is"):
        assert merge.CoefficientSearchResult is ScaleSearchResult
    assert "CoefficientSearchResult" not in merge.__all__
    assert "search_coefficients" not in merge.__all__
