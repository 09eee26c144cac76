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


def test_gradient_descent_improves_a_nearby_patch() -> None:
    # A clean patch (no noise, no FM) and a start with the same pitch and every other
    # parameter moved by about 0.05: thirty Adam steps close more than half of the distance.
    # (With noise and FM the log-magnitude term is nearly flat around the target, and
    # gradient descent gains much less; see the project-4 report.)
    truth = SYNTH.from_physical(
        {
            "pitch": 57.0,
            "sine": 0.5,
            "saw": 0.8,
            "square": 0.2,
            "noise": 0.0,
            "fm_index": 0.0,
            "attack": 0.01,
            "decay": 0.1,
            "sustain": 0.6,
            "release": 0.05,
            "gate": 0.15,
            "cutoff": 1200.0,
            "resonance": 2.0,
            "filter_env": 1.0,
            "gain": -6.0,
        }
    )
    target = SYNTH.render(truth)
    shift = torch.randn(16, generator=torch.Generator().manual_seed(0))
    shift[[0, 4, 6]] = 0.0  # pitch, noise and FM index stay
    start = (truth + 0.05 * shift).clamp(0, 1)
    result = match(target, SYNTH, method="gradient", budget=30, init=start, restarts=1, lr=0.01)
    # The first render is the start, clipped to [0.02, 0.98] so that its logits are finite.
    clipped = float(spectral_distance(SYNTH.render(start.clamp(0.02, 0.98)), target))
    assert float(result.curve[0]) == pytest.approx(clipped, rel=1e-4)
    assert result.distance < 0.5 * clipped


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
