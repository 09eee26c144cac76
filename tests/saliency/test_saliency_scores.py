"""Tests of weightspace.saliency scores: hand-computed values, invariants, no mutation."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from weightspace import WeightspaceValueError, saliency, train


def _data(n: int = 12, d: int = 3, c: int = 2, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, d, generator=g), torch.randint(0, c, (n,), generator=g)


def _net(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Linear(4, 2))


def test_gradient_is_the_magnitude_of_the_mean_loss_gradient() -> None:
    net, (x, y) = _net(), _data()
    expected = torch.autograd.grad(F.cross_entropy(net(x), y), list(net.parameters()))
    for batch_size in (5, 100):
        s = saliency.gradient(net, (x, y), batch_size=batch_size)
        for (name, _), g in zip(net.named_parameters(), expected, strict=True):
            torch.testing.assert_close(s[name], g.abs(), rtol=1e-5, atol=1e-7)


def test_snip_is_weight_times_gradient() -> None:
    net, data = _net(), _data()
    g, s = saliency.gradient(net, data), saliency.snip(net, data)
    for name, p in net.named_parameters():
        torch.testing.assert_close(s[name], (p.detach() * g[name]).abs())


def test_fisher_is_the_mean_squared_per_example_gradient() -> None:
    net, (x, y) = _net(), _data(n=6)
    expected = {n: torch.zeros_like(p) for n, p in net.named_parameters()}
    for i in range(6):
        grads = torch.autograd.grad(
            F.cross_entropy(net(x[i : i + 1]), y[i : i + 1]), list(net.parameters())
        )
        for (name, _), g in zip(net.named_parameters(), grads, strict=True):
            expected[name] += g.square() / 6
    f = saliency.fisher(net, (x, y), batch_size=4)
    for name in expected:
        torch.testing.assert_close(f[name], expected[name], rtol=1e-4, atol=1e-8)


def test_wanda_is_weight_magnitude_times_input_norm() -> None:
    net, (x, y) = _net(), _data()
    s = saliency.wanda(net, (x, y), batch_size=5)
    w0 = net[0].weight.detach()
    torch.testing.assert_close(s["0.weight"], w0.abs() * x.norm(dim=0)[None, :])
    h = torch.relu(net[0](x)).detach()
    torch.testing.assert_close(s["2.weight"], net[2].weight.detach().abs() * h.norm(dim=0)[None])
    assert float(s["0.bias"].abs().sum()) == 0.0


def test_wanda_on_a_grouped_convolution_matches_unfolded_norms() -> None:
    torch.manual_seed(0)
    conv = nn.Conv2d(4, 6, 3, padding=1, groups=2)
    x = torch.randn(3, 4, 5, 5)
    s = saliency.wanda(conv, (x, torch.zeros(3, dtype=torch.long)))["weight"]
    cols = F.unfold(x, 3, padding=1)  # [3, 4*9, 25]
    norms = cols.square().sum(dim=(0, 2)).sqrt().reshape(2, 18)
    w = conv.weight.detach().reshape(2, 3, 18)
    torch.testing.assert_close(s, (w.abs() * norms[:, None, :]).reshape(6, 2, 3, 3))


@pytest.mark.parametrize("fn", [saliency.gradient, saliency.snip, saliency.fisher, saliency.wanda])
def test_scores_do_not_touch_the_model(fn: object) -> None:
    net = _net()
    net.train()
    before = copy.deepcopy(net.state_dict())
    s = fn(net, iter([_data(seed=1), _data(seed=2)]))  # type: ignore[operator]
    assert net.training
    assert all(p.grad is None for p in net.parameters())
    assert all(torch.equal(before[k], v) for k, v in net.state_dict().items())
    assert list(s) == [n for n, _ in net.named_parameters()]
    assert all(bool((t >= 0).all()) and t.dtype == torch.float32 for t in s.values())


def test_frozen_parameters_are_not_scored() -> None:
    net = _net()
    net[0].weight.requires_grad_(False)
    assert "0.weight" not in saliency.gradient(net, _data())
    assert "0.weight" not in saliency.fisher(net, _data())


def test_errors() -> None:
    net = _net()
    with pytest.raises(WeightspaceValueError, match="is empty"):
        saliency.gradient(net, (torch.zeros(0, 3), torch.zeros(0, dtype=torch.long)))
    with pytest.raises(WeightspaceValueError, match="is empty"):
        saliency.snip(net, [])
    with pytest.raises(WeightspaceValueError, match="must be an nn.Module"):
        saliency.gradient({"w": torch.ones(1)}, _data())  # type: ignore[arg-type]
    with pytest.raises(WeightspaceValueError, match=r"the default loss needs batches \(x, y\)"):
        saliency.gradient(net, torch.ones(3, 3))  # inputs without targets
    with pytest.raises(WeightspaceValueError, match="must be a Dataset, a DataLoader"):
        saliency.gradient(net, 3)
    for p in net.parameters():
        p.requires_grad_(False)
    with pytest.raises(WeightspaceValueError, match="no trainable parameter"):
        saliency.gradient(net, _data())


def _dict_loss(model: nn.Module, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    return F.cross_entropy(model(batch["x"]), batch["y"])


@pytest.mark.parametrize("fn", [saliency.gradient, saliency.snip, saliency.fisher])
def test_the_loss_is_the_librarys_loss_of_model_and_batch(fn: object) -> None:
    net, (x, y) = _net(), _data()
    expected = fn(net, (x, y), batch_size=5)  # type: ignore[operator]
    samples = [{"x": x[i], "y": y[i]} for i in range(len(y))]
    loader = torch.utils.data.DataLoader(samples, batch_size=5)  # type: ignore[arg-type]
    got = fn(net, loader, loss=_dict_loss)  # type: ignore[operator]
    for name, t in expected.items():
        torch.testing.assert_close(got[name], t, rtol=1e-5, atol=1e-7)


def test_a_loss_of_logits_is_adapted_or_deprecated() -> None:
    net, data = _net(), _data()
    expected = saliency.gradient(net, data)

    def mean_ce(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(logits, y)

    adapted = saliency.gradient(net, data, loss=train.logits_loss(mean_ce))
    with pytest.warns(FutureWarning, match=r"saliency\.gradient\(loss=train\.logits_loss\(fn\)\)"):
        old = saliency.gradient(net, data, logits_loss=mean_ce)
    for name, t in expected.items():
        assert torch.equal(adapted[name], t) and torch.equal(old[name], t)
    with pytest.raises(WeightspaceValueError, match=r"wrap a loss of \(logits, targets\)"):
        saliency.gradient(net, data, loss=mean_ce)  # the old convention, unwrapped
    with pytest.raises(TypeError, match="both `logits_loss`"):
        saliency.gradient(net, data, loss=train.cross_entropy_loss, logits_loss=mean_ce)


def test_a_list_of_batches_still_reads_as_batches_for_one_release() -> None:
    net = _net()
    batches = [_data(seed=1), _data(seed=2)]
    expected = saliency.wanda(net, iter(batches))
    with pytest.warns(FutureWarning, match=r"saliency\.wanda\(<a list of batches>\)"):
        got = saliency.wanda(net, batches)
    assert all(torch.equal(got[k], v) for k, v in expected.items())
