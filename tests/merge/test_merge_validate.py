"""Tests of the argument checks in weightspace.merge._validate."""

from __future__ import annotations

import math

import pytest
import torch

from weightspace import ShapeMismatchError, WeightspaceValueError
from weightspace.merge import _validate as V


def test_check_finite_returns_a_float_or_names_the_argument() -> None:
    assert V.check_finite("scale", 2) == 2.0 and isinstance(V.check_finite("scale", 2), float)
    with pytest.raises(WeightspaceValueError, match=r"`scale` must be a finite real number, got"):
        V.check_finite("scale", "0.3")
    with pytest.raises(WeightspaceValueError, match=r"`scale` must be a finite real number, got"):
        V.check_finite("scale", True)
    with pytest.raises(WeightspaceValueError, match=r"`scale` must be finite, got inf"):
        V.check_finite("scale", math.inf)


@pytest.mark.parametrize("good", [1e-9, 0.5, 1, 1.0])
def test_check_density_accepts_the_half_open_unit_interval(good: float) -> None:
    assert V.check_density(good) == float(good)


@pytest.mark.parametrize("bad", [0.0, -0.1, 1.0001, math.nan])
def test_check_density_refuses_the_rest(bad: float) -> None:
    with pytest.raises(WeightspaceValueError, match=r"`density`"):
        V.check_density(bad)
    with pytest.raises(WeightspaceValueError, match=r"`models\[2\]\.density`"):
        V.check_density(bad, "models[2].density")


def test_check_drop_rate_accepts_zero_and_refuses_one() -> None:
    assert V.check_drop_rate(0) == 0.0 and V.check_drop_rate(0.9) == 0.9
    with pytest.raises(WeightspaceValueError, match=r"`drop_rate` must lie in \[0, 1\).* got 1.0"):
        V.check_drop_rate(1.0)
    with pytest.raises(WeightspaceValueError, match=r"`drop_rate` must lie in \[0, 1\)"):
        V.check_drop_rate(-0.5)


def test_check_majority() -> None:
    assert V.check_majority("total") == "total" and V.check_majority("count") == "count"
    with pytest.raises(WeightspaceValueError, match=r"`majority` must be 'total' .* got 'sum'"):
        V.check_majority("sum")


def test_check_k_is_an_int_between_one_and_the_number_of_tasks() -> None:
    assert V.check_k(1, 3) == 1 and V.check_k(3, 3) == 3
    with pytest.raises(WeightspaceValueError, match=r"`k` must lie in \[1, 3\] for 3 tasks"):
        V.check_k(4, 3)
    with pytest.raises(WeightspaceValueError, match=r"`k` must lie in \[1, 3\]"):
        V.check_k(0, 3)
    with pytest.raises(WeightspaceValueError, match=r"`k` must be an int .* got 2.0"):
        V.check_k(2.0, 3)
    with pytest.raises(WeightspaceValueError, match=r"`k` must be an int"):
        V.check_k(True, 3)


def test_check_weights_takes_sequences_and_1d_tensors() -> None:
    assert V.check_weights([1, 0.5], 2) == (1.0, 0.5)
    assert V.check_weights(torch.tensor([1.0, -2.0]), 2) == (1.0, -2.0)
    with pytest.raises(
        WeightspaceValueError, match=r"`weights` must have one entry per task \(3\)"
    ):
        V.check_weights([1.0, 2.0], 3)
    with pytest.raises(WeightspaceValueError, match=r"`weights` must be 1-D .* shape \(2, 1\)"):
        V.check_weights(torch.ones(2, 1), 2)
    with pytest.raises(WeightspaceValueError, match=r"`weights` must be a sequence of 2 floats"):
        V.check_weights("ab", 2)
    with pytest.raises(WeightspaceValueError, match=r"`weights\[1\]` must be finite"):
        V.check_weights([1.0, math.nan], 2)


def test_check_lambdas_one_for_all_or_one_per_task_never_negative() -> None:
    assert V.check_lambdas(0.4, 3) == (0.4, 0.4, 0.4)
    assert V.check_lambdas([0.2, 0.6], 2) == (0.2, 0.6)
    assert V.check_lambdas(torch.tensor([0.5, 0.25]), 2) == (0.5, 0.25)
    for bad in (-0.1, [0.2, -0.2], True):
        with pytest.raises(WeightspaceValueError, match=r"`lambdas` must be non-negative"):
            V.check_lambdas(bad, 2)
    with pytest.raises(WeightspaceValueError, match=r"`lambdas` must have one entry per task"):
        V.check_lambdas([0.1, 0.2, 0.3], 2)


def test_check_seed_one_int_or_one_per_task() -> None:
    assert V.check_seed(7, 3) == 7
    assert V.check_seed([1, 2, 3], 3) == (1, 2, 3)
    for bad in ([1, 2], [1, 2, 3.0], "3", True, None):
        with pytest.raises(
            WeightspaceValueError, match=r"`seed` must be an int or a sequence of 3"
        ):
            V.check_seed(bad, 3)


def test_check_stacked() -> None:
    stacked = torch.zeros(2, 3)
    assert V.check_stacked(stacked) is stacked
    with pytest.raises(WeightspaceValueError, match=r"`deltas` must be a tensor .* got list"):
        V.check_stacked([torch.zeros(3)])
    with pytest.raises(WeightspaceValueError, match=r"n_tasks >= 1, got shape \(0, 3\)"):
        V.check_stacked(torch.zeros(0, 3))
    with pytest.raises(WeightspaceValueError, match=r"`deltas` must be a floating-point tensor"):
        V.check_stacked(torch.zeros(2, 3, dtype=torch.int64))
    masks = torch.zeros(2, 3, dtype=torch.bool)
    assert V.check_stacked(masks, "masks", floating=False) is masks


def test_check_same_shape_names_the_key() -> None:
    V.check_same_shape("vectors", [torch.zeros(2), torch.ones(2)])
    with pytest.raises(ShapeMismatchError, match=r"`vectors` for key 'w' .* \[\(2,\), \(3,\)\]"):
        V.check_same_shape("vectors", [torch.zeros(2), torch.zeros(3)], "w")
