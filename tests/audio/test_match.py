"""Matching parameters to a target under a render budget."""

from __future__ import annotations

import pytest
import torch

from weightspace import WeightspaceValueError
from weightspace.audio import Synth, match, spectral_distance

SYNTH = Synth(duration=0.25)


@pytest.fixture(scope="module")
def target() -> torch.Tensor:
    return SYNTH.render(SYNTH.sample(1, seed=11)[0])


@pytest.mark.parametrize("method", ["random", "cma", "gradient"])
def test_budget_curve_and_best(method: str, target: torch.Tensor) -> None:
    result = match(target, SYNTH, method=method, budget=24, seed=0)  # type: ignore[arg-type]
    assert result.renders == 24 and result.curve.shape == (24,)
    assert bool((result.curve[1:] <= result.curve[:-1]).all())  # best so far never rises
    assert float(result.curve[-1]) == pytest.approx(result.distance)
    assert result.method == method and result.seconds > 0
    again = float(spectral_distance(SYNTH.render(result.params), target))
    assert again == pytest.approx(result.distance, rel=1e-4)
    assert float(result.curve[-1]) < float(result.curve[0])


@pytest.mark.parametrize("method", ["random", "cma", "gradient"])
def test_seeded(method: str, target: torch.Tensor) -> None:
    a = match(target, SYNTH, method=method, budget=12, seed=3)  # type: ignore[arg-type]
    b = match(target, SYNTH, method=method, budget=12, seed=3)  # type: ignore[arg-type]
    assert torch.equal(a.curve, b.curve) and torch.equal(a.params, b.params)


def test_gradient_descent_improves_a_nearby_patch(target: torch.Tensor) -> None:
    # Same pitch, every other parameter moved by about 0.03: thirty Adam steps close a fifth
    # of the distance (the spectral loss is far from convex, see the project-4 report).
    truth = SYNTH.sample(1, seed=11)[0]
    shift = torch.randn(16, generator=torch.Generator().manual_seed(0))
    shift[0] = 0.0
    start = (truth + 0.03 * shift).clamp(0, 1)
    first = float(spectral_distance(SYNTH.render(start), target))
    result = match(target, SYNTH, method="gradient", budget=30, init=start, restarts=1, lr=0.02)
    assert result.distance < 0.85 * first


def test_init_is_the_first_cma_mean(target: torch.Tensor) -> None:
    truth = SYNTH.sample(1, seed=11)[0]
    near = match(target, SYNTH, method="cma", budget=24, init=truth, sigma=0.01, seed=0)
    far = match(target, SYNTH, method="cma", budget=24, sigma=0.01, seed=0)
    assert near.distance < far.distance


def test_errors(target: torch.Tensor) -> None:
    with pytest.raises(WeightspaceValueError, match="`method` must be one of"):
        match(target, SYNTH, method="adam")  # type: ignore[arg-type]
    with pytest.raises(WeightspaceValueError, match="`budget` must be a positive integer"):
        match(target, SYNTH, budget=0)
    with pytest.raises(
        WeightspaceValueError, match=r"`target` must be a waveform of shape \[4000\]"
    ):
        match(target[:100], SYNTH)
    with pytest.raises(WeightspaceValueError, match=r"`init` must have shape \[16\]"):
        match(target, SYNTH, init=torch.zeros(3))
