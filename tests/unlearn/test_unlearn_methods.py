"""Each unlearning method on a tiny MNIST classifier: the effect, no mutation, errors."""

from __future__ import annotations

import copy
from typing import Any

import pytest
import torch

from weightspace import WeightspaceValueError, unlearn

# (method, forget-accuracy bound, allowed drop of retain accuracy) for forgetting "6" alone.
FORGET = [
    (unlearn.Retrain(epochs=4, lr=3e-3, batch_size=64), 0.01, 0.03),
    (unlearn.FineTune(epochs=3, lr=3e-3, batch_size=64), 0.8, 0.03),
    (unlearn.GradientAscent(epochs=2, lr=5e-3, batch_size=64), 0.1, 0.5),
    (unlearn.NegGradPlus(epochs=4, lr=2e-3, beta=0.7, batch_size=64), 0.1, 0.1),
    (unlearn.RandomLabels(epochs=4, lr=2e-3, batch_size=64), 0.1, 0.05),
    (unlearn.SalUn(epochs=4, lr=2e-3, batch_size=64), 0.1, 0.05),
    (unlearn.SCRUB(epochs=3, max_epochs=2, lr=1e-3, batch_size=64), 0.1, 0.05),
    (unlearn.TaskVectorNegation(epochs=4, lr=3e-3, batch_size=64, scale=2.0), 0.3, 0.15),
    (unlearn.Redistribute(epochs=3, lr=1e-3, batch_size=64), 0.05, 0.03),
]


@pytest.mark.parametrize(
    ("method", "forget_bound", "retain_drop"), FORGET, ids=lambda m: type(m).__name__
)
def test_forgetting_one_class(
    tiny: Any, method: unlearn.Unlearner, forget_bound: float, retain_drop: float
) -> None:
    before = copy.deepcopy(tiny.model.state_dict())
    out = method.unlearn(tiny.model, tiny.forget, tiny.retain, seed=0)
    assert out is not tiny.model
    assert all(torch.equal(before[k], v) for k, v in tiny.model.state_dict().items())
    base_retain = unlearn.accuracy(tiny.model, tiny.retain)
    assert unlearn.accuracy(tiny.model, tiny.forget) > 0.9
    assert unlearn.accuracy(out, tiny.forget) < forget_bound
    assert unlearn.accuracy(out, tiny.forget_test) < forget_bound + 0.05
    assert unlearn.accuracy(out, tiny.retain) > base_retain - retain_drop
    assert method.elapsed_s_ > 0
    assert not out.training


@pytest.mark.parametrize(
    "method",
    [
        unlearn.Redistribute(epochs=10, lr=3e-3, batch_size=64),
        unlearn.Retrain(epochs=4, lr=3e-3, batch_size=64),
    ],
    ids=lambda m: type(m).__name__,
)
def test_replacing_six_by_three(tiny: Any, method: unlearn.Unlearner) -> None:
    out = method.unlearn(tiny.model, tiny.forget, tiny.retain, tiny.new, seed=0)
    assert unlearn.accuracy(tiny.model, tiny.new_test) < 0.1  # "3" was never learnt
    assert unlearn.accuracy(out, tiny.new_test) > 0.85
    assert unlearn.accuracy(out, tiny.forget_test) < 0.3
    assert unlearn.accuracy(out, tiny.test) > unlearn.accuracy(tiny.model, tiny.test) - 0.05


def test_the_catalogue_baseline_learns_the_new_class_with_masked_weights_only(tiny: Any) -> None:
    method = unlearn.MaskedFineTune(fraction=0.05, epochs=5, lr=5e-3, batch_size=64)
    out = method.unlearn(tiny.model, tiny.forget, tiny.retain, tiny.new, seed=0)
    assert unlearn.accuracy(out, tiny.new_test) > 0.5
    changed = {
        n: ~torch.isclose(p, tiny.model.state_dict()[n]) for n, p in out.state_dict().items()
    }
    for name, mask in method.mask_.items():  # only masked weights moved
        assert not bool((changed[name] & ~mask).any()), name
    total = sum(m.numel() for m in method.mask_.values())
    assert sum(int(m.sum()) for m in method.mask_.values()) == round(0.05 * total)


def test_salun_updates_only_its_mask(tiny: Any) -> None:
    method = unlearn.SalUn(fraction=0.3, epochs=1, batch_size=64)
    out = method.unlearn(tiny.model, tiny.forget, tiny.retain, seed=0)
    for name, p in out.state_dict().items():
        frozen = ~method.mask_[name]
        assert torch.equal(p[frozen], tiny.model.state_dict()[name][frozen])


def test_results_are_reproducible_and_leave_the_global_rng_alone(tiny: Any) -> None:
    method = unlearn.RandomLabels(epochs=1, batch_size=64)
    torch.manual_seed(123)
    state = torch.get_rng_state()
    a = method.unlearn(tiny.model, tiny.forget, tiny.retain, seed=7)
    assert torch.equal(torch.get_rng_state(), state)
    b = method.unlearn(tiny.model, tiny.forget, tiny.retain, seed=7)
    c = method.unlearn(tiny.model, tiny.forget, tiny.retain, seed=8)
    sa, sb, sc = a.state_dict(), b.state_dict(), c.state_dict()
    assert all(torch.equal(sa[k], sb[k]) for k in sa)
    assert not all(torch.equal(sa[k], sc[k]) for k in sa)


def test_retrain_with_an_init_function(tiny: Any, make_net: Any) -> None:
    method = unlearn.Retrain(epochs=1, batch_size=64, init=lambda: make_net(seed=5))
    out = method.unlearn(tiny.model, tiny.forget, tiny.retain, seed=0)
    assert unlearn.accuracy(out, tiny.forget) < 0.05
    assert method.settings()["epochs"] == 1


def test_errors(tiny: Any) -> None:
    empty = (tiny.forget[0][:0], tiny.forget[1][:0])
    with pytest.raises(WeightspaceValueError, match="`forget` is empty"):
        unlearn.SalUn().unlearn(tiny.model, empty, tiny.retain)
    bad = (tiny.forget[0][:4], torch.full((4,), 9, dtype=torch.int64))
    with pytest.raises(WeightspaceValueError, match=r"classes \[9\], which are not among"):
        unlearn.FineTune().unlearn(tiny.model, bad, tiny.retain)
    with pytest.raises(WeightspaceValueError, match="`new` has the classes"):
        unlearn.FineTune().unlearn(tiny.model, tiny.forget, tiny.retain, bad)
    with pytest.raises(WeightspaceValueError, match="selects nothing"):
        unlearn.SalUn(fraction=1e-9).unlearn(tiny.model, tiny.forget, tiny.retain)
    with pytest.raises(WeightspaceValueError, match="selects nothing"):
        unlearn.MaskedFineTune(fraction=1e-9).unlearn(tiny.model, tiny.forget)
    with pytest.raises(WeightspaceValueError, match="needs non-empty `retain`"):
        unlearn.RandomLabels().unlearn(tiny.model, tiny.forget)
    with pytest.raises(WeightspaceValueError, match="`epochs` must be a positive int"):
        unlearn.FineTune(epochs=0)
    with pytest.raises(WeightspaceValueError, match="`fraction` must be a number in"):
        unlearn.SalUn(fraction=0.0)
    with pytest.raises(WeightspaceValueError, match="`max_epochs` must lie"):
        unlearn.SCRUB(epochs=1, max_epochs=2)
    with pytest.raises(WeightspaceValueError, match="`optimizer`"):
        unlearn.FineTune(optimizer="lion")  # type: ignore[arg-type]
    with pytest.raises(WeightspaceValueError, match="`seed`"):
        unlearn.FineTune().unlearn(tiny.model, tiny.forget, tiny.retain, seed=-1)
    with pytest.raises(WeightspaceValueError, match="`model` must be an nn.Module"):
        unlearn.FineTune().unlearn("net", tiny.forget, tiny.retain)  # type: ignore[arg-type]
