"""The conditional Real-NVP flow: invertibility, exact log-determinants, likelihood fits."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from weightspace import WeightspaceValueError, train
from weightspace.audio import ConditionalRealNVP, flow_nll_loss


def _flow(dim: int = 4, context_dim: int = 3, layers: int = 4, seed: int = 0) -> ConditionalRealNVP:
    torch.manual_seed(seed)
    flow = ConditionalRealNVP(dim, context_dim, layers=layers, hidden=16)
    # Move the last layers off zero so the flow is not the identity.
    with torch.no_grad():
        for coupling in flow.couplings:
            last = coupling.net[-1]
            last.weight.normal_(0.0, 0.3)
            last.bias.normal_(0.0, 0.3)
    return flow


def test_an_untrained_flow_is_the_identity_with_a_standard_normal_density() -> None:
    flow = ConditionalRealNVP(3, 2, layers=2, hidden=8)
    x, c = torch.randn(6, 3), torch.randn(6, 2)
    z, log_det = flow(x, c)
    assert torch.equal(z, x) and torch.equal(log_det, torch.zeros(6))
    expected = -0.5 * (x.pow(2).sum(-1) + 3 * math.log(2 * math.pi))
    torch.testing.assert_close(flow.log_prob(x, c), expected)
    assert torch.equal(flow.mode(c), torch.zeros(6, 3))


def test_inverse_undoes_forward_to_1e_5() -> None:
    flow = _flow()
    x, c = 3 * torch.randn(64, 4), torch.randn(64, 3)
    z, _ = flow(x, c)
    assert not torch.allclose(z, x, atol=1e-2)
    assert (flow.inverse(z, c) - x).abs().max().item() < 1e-5
    zz = torch.randn(64, 4)
    assert (flow(flow.inverse(zz, c), c)[0] - zz).abs().max().item() < 1e-5


def test_log_det_equals_autograd_jacobian() -> None:
    flow = _flow(dim=3, context_dim=2).double()
    x, c = torch.randn(5, 3, dtype=torch.float64), torch.randn(5, 2, dtype=torch.float64)
    _, log_det = flow(x, c)
    for i in range(5):
        jac = torch.autograd.functional.jacobian(
            lambda v, i=i: flow(v.unsqueeze(0), c[i : i + 1])[0][0], x[i]
        )
        sign, logabs = torch.linalg.slogdet(jac)
        assert sign.item() == 1.0  # affine couplings preserve orientation
        assert abs(logabs.item() - log_det[i].item()) < 1e-10


@settings(max_examples=25, deadline=None)
@given(
    dim=st.integers(2, 6),
    context_dim=st.integers(1, 4),
    layers=st.integers(2, 5),
    batch=st.integers(1, 8),
    seed=st.integers(0, 2**16),
)
def test_round_trip_and_change_of_variables_hold_for_any_flow(
    dim: int, context_dim: int, layers: int, batch: int, seed: int
) -> None:
    flow = _flow(dim, context_dim, layers, seed).double()
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(batch, dim, generator=gen, dtype=torch.float64)
    c = torch.randn(batch, context_dim, generator=gen, dtype=torch.float64)
    z, log_det = flow(x, c)
    torch.testing.assert_close(flow.inverse(z, c), x, atol=1e-9, rtol=0)
    # log p(x|c) = log N(z; 0, I) + log|det dz/dx|.
    base = torch.distributions.Normal(0.0, 1.0).log_prob(z).sum(-1)
    torch.testing.assert_close(flow.log_prob(x, c), base + log_det)
    # z -> x -> z is exact for any latent, not only for those of data points.
    z2 = 0.5 * z
    torch.testing.assert_close(flow(flow.inverse(z2, c), c)[0], z2, atol=1e-9, rtol=0)


def test_a_context_vector_is_broadcast_over_the_batch() -> None:
    flow = _flow()
    x, c = torch.randn(4, 4), torch.randn(3)
    torch.testing.assert_close(flow.log_prob(x, c), flow.log_prob(x, c.expand(4, 3)))
    assert flow.mode(c).shape == (1, 4)


def test_sampling_is_seeded_and_temperature_zero_gives_the_mode() -> None:
    flow = _flow()
    c = torch.randn(5, 3)
    assert torch.equal(flow.sample(c, seed=3), flow.sample(c, seed=3))
    assert not torch.equal(flow.sample(c, seed=3), flow.sample(c, seed=4))
    torch.testing.assert_close(flow.sample(c, seed=3, temperature=0.0), flow.mode(c))
    assert flow.mean(c, samples=8, seed=1).shape == (5, 4)


def test_fit_recovers_a_known_conditional_gaussian() -> None:
    # x | c ~ N(A c + b, diag(sigma^2)) with a one-dimensional context c.
    gen = torch.Generator().manual_seed(0)
    n = 2000
    c = torch.rand(n, 1, generator=gen) * 2 - 1
    a, b, sigma = torch.tensor([2.0, -1.0]), torch.tensor([0.5, 1.0]), torch.tensor([0.3, 0.6])
    x = c * a + b + sigma * torch.randn(n, 2, generator=gen)
    torch.manual_seed(0)
    flow = ConditionalRealNVP(2, 1, layers=4, hidden=32)
    history = train.fit_(
        flow, (c, x), loss=flow_nll_loss, epochs=100, batch_size=100, lr=1e-3, seed=0
    )
    assert history.losses[-1] < history.losses[0]
    grid = torch.tensor([[-0.8], [0.0], [0.8]])
    expected_mean = grid * a + b
    torch.testing.assert_close(flow.mode(grid), expected_mean, atol=0.08, rtol=0)
    draws = flow.sample(grid.repeat_interleave(4000, 0), seed=1).view(3, 4000, 2)
    torch.testing.assert_close(draws.mean(1), expected_mean, atol=0.08, rtol=0)
    torch.testing.assert_close(draws.std(1), sigma.expand(3, 2), atol=0.04, rtol=0)
    torch.testing.assert_close(flow.mean(grid, samples=4000, seed=1), draws.mean(1))
    # The fitted density is close to the true one (mean NLL of the Gaussian, in nats).
    true_nll = 0.5 * 2 * (1 + math.log(2 * math.pi)) + sigma.log().sum().item()
    with torch.no_grad():
        assert flow_nll_loss(flow, (c, x)).item() < true_nll + 0.05


def test_bad_arguments_are_named() -> None:
    with pytest.raises(WeightspaceValueError, match="`dim` must be an integer >= 2, got 1"):
        ConditionalRealNVP(1, 3)
    with pytest.raises(WeightspaceValueError, match="`layers` must be an integer >= 2"):
        ConditionalRealNVP(2, 3, layers=1)
    with pytest.raises(WeightspaceValueError, match="`scale_limit` must be a positive number"):
        ConditionalRealNVP(2, 3, scale_limit=0.0)
    flow = ConditionalRealNVP(2, 3)
    with pytest.raises(WeightspaceValueError, match=r"`x` must have shape \[B, 2\], got \(4, 3\)"):
        flow(torch.zeros(4, 3), torch.zeros(4, 3))
    with pytest.raises(WeightspaceValueError, match=r"`context` must have shape \[B, 3\]"):
        flow(torch.zeros(4, 2), torch.zeros(4, 2))
    with pytest.raises(WeightspaceValueError, match="one row per row of `x` \\(4\\)"):
        flow(torch.zeros(4, 2), torch.zeros(5, 3))
    with pytest.raises(WeightspaceValueError, match="`temperature` must be a non-negative"):
        flow.sample(torch.zeros(3), temperature=-1.0)
    with pytest.raises(WeightspaceValueError, match="`model` must be a ConditionalRealNVP"):
        flow_nll_loss(torch.nn.Linear(2, 2), (torch.zeros(1, 3), torch.zeros(1, 2)))
    with pytest.raises(WeightspaceValueError, match="`batch` must be a pair"):
        flow_nll_loss(flow, torch.zeros(1, 2))
