"""Interpolation, loss barriers and batch-norm statistics."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from weightspace import ShapeMismatchError, WeightspaceValueError, align
from weightspace.align import BarrierResult


@settings(max_examples=30, deadline=None)
@given(seed=st.integers(0, 2**16), t=st.floats(0, 1))
def test_interpolation_ends_are_exact_and_points_lie_on_the_line(seed: int, t: float) -> None:
    g = torch.Generator().manual_seed(seed)
    a = {"w": torch.randn(3, 4, generator=g), "n": torch.tensor(3)}
    b = {"w": torch.randn(3, 4, generator=g), "n": torch.tensor(7)}
    assert torch.equal(align.interpolate(a, b, 0.0)["w"], a["w"])
    assert torch.equal(align.interpolate(a, b, 1.0)["w"], b["w"])
    mid = align.interpolate(a, b, t)
    assert torch.allclose(mid["w"], (1 - t) * a["w"] + t * b["w"], atol=1e-6)
    assert int(mid["n"]) == (3 if t < 0.5 else 7)  # integer buffers: the nearer end
    assert mid["w"] is not a["w"]


def test_interpolation_errors() -> None:
    a = {"w": torch.zeros(2)}
    with pytest.raises(ShapeMismatchError, match=r"only in `state_a`: \['w'\], only in `state_b`"):
        align.interpolate(a, {"v": torch.zeros(2)}, 0.5)
    with pytest.raises(ShapeMismatchError, match=r"`state_a\['w'\]` has shape \[2\] but"):
        align.interpolate(a, {"w": torch.zeros(3)}, 0.5)
    with pytest.raises(WeightspaceValueError, match="`t` must be a finite number, got nan"):
        align.interpolate(a, a, math.nan)


def test_barrier_of_a_bump_and_of_a_straight_line() -> None:
    a, b = {"w": torch.tensor([0.0])}, {"w": torch.tensor([1.0])}

    def bumpy(sd: dict) -> float:
        w = float(sd["w"])
        return 1 + w + 4 * w * (1 - w)

    bump = align.loss_barrier(bumpy, a, b)
    assert bump.barrier == pytest.approx(1.0)
    assert bump.t_max == 0.5
    assert bump.t == tuple(i / 10 for i in range(11))
    assert bump.linear[5] == pytest.approx(1.5)
    line = align.loss_barrier(lambda sd: 2 - float(sd["w"]), a, b, steps=3)
    assert line.barrier == pytest.approx(0.0, abs=1e-12)
    # accuracy: a dip in the middle is a barrier, a rise is not
    dip = BarrierResult.from_values([0, 0.5, 1], [0.9, 0.6, 0.8], maximize=True)
    assert dip.barrier == pytest.approx(0.25)
    rise = BarrierResult.from_values([0, 0.5, 1], [0.9, 0.95, 0.8], maximize=True)
    assert rise.barrier == 0.0
    assert rise.to_dict() == {
        "t": [0.0, 0.5, 1.0], "values": [0.9, 0.95, 0.8], "barrier": 0.0, "t_max": 0.0,
        "maximize": True,
    }  # fmt: skip


def test_barrier_errors() -> None:
    a = {"w": torch.zeros(1)}
    with pytest.raises(WeightspaceValueError, match="`steps` must be an integer >= 2, got 1"):
        align.loss_barrier(lambda sd: 0.0, a, a, steps=1)
    with pytest.raises(WeightspaceValueError, match="`evaluate` must return a number, got str"):
        align.loss_barrier(lambda sd: "low", a, a)  # type: ignore[arg-type,return-value]
    with pytest.raises(WeightspaceValueError, match="`evaluate` returned nan at t=0"):
        align.loss_barrier(lambda sd: math.nan, a, a)
    with pytest.raises(WeightspaceValueError, match="`evaluate` must be a function"):
        align.loss_barrier(3, a, a)  # type: ignore[arg-type]
    with pytest.raises(WeightspaceValueError, match="must have the same length"):
        BarrierResult.from_values([0, 1], [1.0])


def _bn_net() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(3, 4), nn.Dropout(0.5), nn.BatchNorm1d(4), nn.ReLU()).eval()


def test_reset_bn_stats_recomputes_exact_statistics_without_touching_the_input() -> None:
    net = _bn_net()
    x = torch.randn(4, 16, 3, generator=torch.Generator().manual_seed(1)) * 2 + 1
    fresh = align.reset_bn_stats(net, iter(x))
    with torch.no_grad():
        h = [net[0](b) for b in x]  # dropout is off while statistics are collected
    bn = fresh[2]
    assert torch.allclose(bn.running_mean, torch.stack([b.mean(0) for b in h]).mean(0), atol=1e-5)
    assert torch.allclose(bn.running_var, torch.stack([b.var(0) for b in h]).mean(0), atol=1e-5)
    assert int(bn.num_batches_tracked) == 4
    assert bn.momentum == 0.1 and not fresh.training and not bn.training
    assert torch.equal(net[2].running_mean, torch.zeros(4))  # the input model is unchanged
    only_two = align.reset_bn_stats(net.train(), iter([(b, None) for b in x]), max_batches=2)
    assert int(only_two[2].num_batches_tracked) == 2 and only_two.training
    with pytest.warns(FutureWarning, match="as a list of batches"):  # one more release
        listed = align.reset_bn_stats(net, list(x))
    assert torch.equal(listed[2].running_var, fresh[2].running_var)


def test_reset_bn_stats_repairs_an_interpolated_network() -> None:
    net = _bn_net()
    x = torch.randn(512, 3, generator=torch.Generator().manual_seed(2))
    a = align.reset_bn_stats(net, x)
    b = align.reset_bn_stats(net, 3 - 2 * x)
    probe = _bn_net()
    probe.load_state_dict(align.interpolate(a.state_dict(), b.state_dict(), 0.5))
    repaired = align.reset_bn_stats(probe, x)
    with torch.no_grad():
        h = repaired[2](repaired[0](x))
    assert h.mean(0).abs().max() < 1e-4  # normalised again on the data


def test_reset_bn_stats_errors_and_models_without_batch_norm() -> None:
    plain = nn.Linear(2, 2)
    copy = align.reset_bn_stats(plain, torch.zeros(1, 2))
    assert copy is not plain and torch.equal(copy.weight, plain.weight)
    with pytest.raises(WeightspaceValueError, match="`model` must be a torch.nn.Module"):
        align.reset_bn_stats({"w": torch.zeros(1)}, torch.zeros(1, 2))  # type: ignore[type-var]
    with pytest.raises(WeightspaceValueError, match="`max_batches` must be a positive integer"):
        align.reset_bn_stats(_bn_net(), torch.zeros(2, 3), max_batches=-1)
