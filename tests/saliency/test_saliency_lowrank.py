"""Safety-weight attribution on toy models where the answer is known.

The toy classifier ``Linear(8, 2, bias=False)`` reads "safety" inputs on features 0-2, "utility"
inputs on features 5-7, and both on features 3-4. SNIP and Wanda scores on each data set are
exactly zero on the other set's private features, so the set difference of the top masks is
exactly the safety-only columns, and pruning it leaves every utility output unchanged.
"""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import Tensor, nn

from weightspace import TaskVector, WeightspaceValueError, saliency

SAFETY_ONLY = [0, 1, 2]
SHARED = [3, 4]
UTILITY_ONLY = [5, 6, 7]


def _data(features: list[int], seed: int) -> tuple[Tensor, Tensor]:
    g = torch.Generator().manual_seed(seed)
    x = torch.zeros(64, 8)
    x[:, features] = torch.randn(64, len(features), generator=g)
    return x, torch.randint(0, 2, (64,), generator=g)


def _toy() -> nn.Linear:
    net = nn.Linear(8, 2, bias=False)
    with torch.no_grad():
        net.weight.copy_(
            torch.linspace(0.5, 2.0, 16).reshape(2, 8) * torch.tensor([1.0, -1.0])[:, None]
        )
    return net


def _columns(mask: dict[str, Tensor]) -> list[int]:
    return sorted({int(c) for c in mask["weight"].nonzero()[:, 1]})


@pytest.mark.parametrize("score", ["snip", "wanda"])
def test_set_difference_finds_the_safety_only_columns(score: str) -> None:
    net = _toy()
    safety = _data(SAFETY_ONLY + SHARED, seed=0)
    utility = _data(SHARED + UTILITY_ONLY, seed=1)
    fn = saliency.snip if score == "snip" else saliency.wanda
    s_scores, u_scores = fn(net, safety), fn(net, utility)
    assert _columns(saliency.threshold(s_scores, 0.0, inclusive=False)) == SAFETY_ONLY + SHARED
    # p = 10/16 keeps all 10 nonzero safety scores, q = 10/16 all nonzero utility scores.
    s_top = saliency.top_k(s_scores, fraction=10 / 16)
    u_top = saliency.top_k(u_scores, fraction=10 / 16)
    diff = saliency.difference(s_top, u_top)
    assert _columns(diff) == SAFETY_ONLY
    assert saliency.mask_stats(diff).selected == 6  # 3 columns x 2 rows
    # Pruning the difference: utility outputs unchanged, safety outputs changed.
    pruned = TaskVector({"weight": -net.weight.detach() * diff["weight"]}).apply_to(net)
    x_u, x_s = utility[0], safety[0]
    torch.testing.assert_close(pruned(x_u).detach(), net(x_u).detach(), rtol=0, atol=0)
    assert not torch.allclose(pruned(x_s).detach(), net(x_s).detach())
    # The random baseline of the same count and the top-utility mask miss the safety columns.
    rand = saliency.random_mask(diff, k=6, seed=0)
    assert saliency.mask_stats(rand).selected == 6
    assert set(_columns(u_top)) == set(SHARED + UTILITY_ONLY)


def test_output_bases_and_lowrank_difference_remove_exactly_the_safety_directions() -> None:
    net = nn.Linear(6, 6, bias=False)
    with torch.no_grad():
        net.weight.copy_(torch.eye(6))
    safety = _data_dim(6, [0, 1, 2], seed=0)
    utility = _data_dim(6, [2, 3], seed=1)
    u_s = saliency.output_bases(net, safety, rank=3)["weight"]
    u_u = saliency.output_bases(net, utility, rank=2)["weight"]
    assert u_s.shape == (6, 3) and u_u.shape == (6, 2)
    torch.testing.assert_close(u_s.T @ u_s, torch.eye(3), atol=1e-6, rtol=0)
    delta = saliency.lowrank_difference(net, {"weight": u_s}, {"weight": u_u})["weight"]
    expected = torch.zeros(6, 6)
    expected[0, 0] = expected[1, 1] = 1.0  # the projector onto e0, e1 (e2 is shared)
    torch.testing.assert_close(delta, expected, atol=1e-6, rtol=0)
    edited = TaskVector({"weight": delta}).apply_to(net, scale=-1.0).weight.detach()
    x_u = utility[0]
    torch.testing.assert_close(x_u @ edited.T, x_u, atol=1e-6, rtol=0)
    # Without a utility basis the whole safety span goes, e2 included.
    full = saliency.lowrank_difference(net, {"weight": u_s})["weight"]
    torch.testing.assert_close(
        full.diagonal(), torch.tensor([1.0, 1, 1, 0, 0, 0]), atol=1e-6, rtol=0
    )


def _data_dim(dim: int, features: list[int], seed: int) -> tuple[Tensor, Tensor]:
    g = torch.Generator().manual_seed(seed)
    x = torch.zeros(32, dim)
    x[:, features] = torch.randn(32, len(features), generator=g)
    return x, torch.zeros(32, dtype=torch.long)


def test_task_vector_bases_recover_a_planted_low_rank_update() -> None:
    g = torch.Generator().manual_seed(0)
    u = torch.linalg.qr(torch.randn(10, 2, generator=g))[0]
    delta = {"w": u @ torch.randn(2, 7, generator=g), "b": torch.ones(10)}
    basis = saliency.task_vector_bases(TaskVector(delta), rank=2)
    assert set(basis) == {"w"}  # 1-D tensors are skipped
    torch.testing.assert_close(basis["w"] @ basis["w"].T, u @ u.T, atol=1e-5, rtol=0)
    with pytest.raises(WeightspaceValueError, match="no nonzero 2-D tensor"):
        saliency.task_vector_bases({"w": torch.zeros(3, 3)}, rank=1)


def test_lowrank_errors() -> None:
    net = nn.Linear(4, 3)
    with pytest.raises(WeightspaceValueError, match="`rank` must be a positive int, got 0"):
        saliency.output_bases(net, (torch.randn(2, 4), torch.zeros(2)), rank=0)
    with pytest.raises(WeightspaceValueError, match="not linear weights of `model`: \\['bias'\\]"):
        saliency.output_bases(net, (torch.randn(2, 4), torch.zeros(2)), rank=1, names=["bias"])
    with pytest.raises(WeightspaceValueError, match="which `weights` lacks"):
        saliency.lowrank_difference(net, {"other": torch.zeros(3, 1)})
    with pytest.raises(WeightspaceValueError, match=r"has shape \(4, 1\), not \[d_out=3, r\]"):
        saliency.lowrank_difference(net, {"weight": torch.zeros(4, 1)})
    with pytest.raises(WeightspaceValueError, match="exactly one of `k` and `fraction`"):
        saliency.random_mask({"w": torch.zeros(3)}, seed=0)


@settings(max_examples=25, deadline=None)
@given(st.integers(1, 50), st.integers(0, 2**31 - 1))
def test_random_mask_selects_exactly_k_and_is_seeded(k: int, seed: int) -> None:
    template = {"a": torch.zeros(5, 4), "b": torch.zeros(30)}
    m = saliency.random_mask(template, k=k, seed=seed)
    assert saliency.mask_stats(m).selected == k
    assert all(torch.equal(m[n], saliency.random_mask(template, k=k, seed=seed)[n]) for n in m)


@settings(max_examples=25, deadline=None)
@given(st.integers(0, 2**31 - 1))
def test_lowrank_difference_identities(seed: int) -> None:
    g = torch.Generator().manual_seed(seed)
    w = torch.randn(6, 4, generator=g)
    u_s = torch.linalg.qr(torch.randn(6, 3, generator=g))[0]
    u_u = torch.linalg.qr(torch.randn(6, 2, generator=g))[0]
    d = saliency.lowrank_difference({"w": w}, {"w": u_s}, {"w": u_u})["w"]
    # The removed part writes nothing to utility directions.
    torch.testing.assert_close(u_u.T @ d, torch.zeros(2, 4), atol=1e-5, rtol=0)
    # Without utility it is a projection: removing it twice removes nothing more.
    p = saliency.lowrank_difference({"w": w}, {"w": u_s})["w"]
    again = saliency.lowrank_difference({"w": w - p}, {"w": u_s})["w"]
    torch.testing.assert_close(again, torch.zeros(6, 4), atol=1e-5, rtol=0)
