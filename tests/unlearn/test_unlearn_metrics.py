"""Tests of the unlearning metrics: membership inference, evaluate, the accuracy alias."""

from __future__ import annotations

import math
from typing import Any

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from weightspace import WeightspaceValueError, train, unlearn


class _Fixed(nn.Module):
    """Returns stored logits for inputs that are indices."""

    def __init__(self, logits: torch.Tensor) -> None:
        super().__init__()
        self.logits = logits

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.logits[x.long().squeeze(1)]


def test_accuracy_by_hand_and_its_deprecated_alias() -> None:
    logits = torch.tensor([[2.0, 0.0], [0.0, 1.0], [3.0, 1.0], [0.0, 5.0]])
    net = _Fixed(logits)
    x = torch.arange(4.0)[:, None]
    data = (x, torch.tensor([0, 1, 1, 0]))
    assert train.accuracy(net, data, batch_size=3) == 0.5
    with pytest.warns(FutureWarning, match=r"use `weightspace\.train\.accuracy`"):
        assert unlearn.accuracy(net, data, batch_size=3) == 0.5


def test_metrics_take_the_batching_contract(tiny: Any) -> None:
    as_pairs = unlearn.evaluate(
        tiny.model, forget=tiny.forget, retain=tiny.retain, test=tiny.test, new=tiny.new_test
    )
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(*tiny.test), batch_size=9)
    as_other_forms = unlearn.evaluate(
        tiny.model,
        forget=torch.utils.data.TensorDataset(*tiny.forget),
        retain=torch.utils.data.DataLoader(list(zip(*tiny.retain, strict=True)), batch_size=50),
        test=loader,
        new=tiny.new_test,
    )
    assert as_other_forms == as_pairs


def test_the_attack_separates_confident_members_from_unsure_non_members() -> None:
    n = 200
    g = torch.Generator().manual_seed(0)
    confident = torch.stack([torch.full((n,), 8.0), torch.zeros(n)], 1)
    unsure = torch.stack([torch.rand(n, generator=g), torch.rand(n, generator=g)], 1)
    net = _Fixed(torch.cat([confident, unsure]))
    idx = torch.arange(2 * n, dtype=torch.float32)[:, None]
    zeros = torch.zeros(n, dtype=torch.int64)
    members, non_members = (idx[:n], zeros), (idx[n:], zeros)
    r = unlearn.membership_inference(net, members=members, non_members=non_members, target=members)
    assert r.attack_accuracy > 0.95 and r.efficacy < 0.05 and r.n_target == n
    r = unlearn.membership_inference(
        net, members=members, non_members=non_members, target=non_members, feature="loss"
    )
    assert r.efficacy > 0.95


def test_evaluate_on_the_tiny_model(tiny: Any) -> None:
    r = unlearn.evaluate(
        tiny.model,
        forget=tiny.forget,
        retain=tiny.retain,
        test=tiny.test,
        new=tiny.new_test,
        forget_test=tiny.forget_test,
    )
    assert r.forget_accuracy > 0.9 and r.retain_accuracy > 0.9 and r.test_accuracy > 0.9
    assert r.new_accuracy is not None and r.new_accuracy < 0.1
    assert r.mia_efficacy is not None and r.mia_efficacy < 0.7  # the model remembers its 6s
    assert set(r.as_dict()) == {
        "forget_accuracy",
        "retain_accuracy",
        "test_accuracy",
        "new_accuracy",
        "forget_test_accuracy",
        "mia_efficacy",
        "mia_attack_accuracy",
        "holdout_mia_accuracy",
        "holdout_mia_auc",
    }
    same_class = unlearn.holdout_mia(tiny.model, forget=tiny.forget, holdout=tiny.forget_test)
    assert (r.holdout_mia_accuracy, r.holdout_mia_auc) == (
        same_class.attack_accuracy,
        same_class.auc,
    )
    conf = unlearn.membership_inference(
        tiny.model, members=tiny.retain, non_members=tiny.test, target=tiny.forget
    )
    assert (r.mia_efficacy, r.mia_attack_accuracy) == (conf.efficacy, conf.attack_accuracy)
    retrained = unlearn.Retrain(epochs=3, lr=3e-3, batch_size=64).unlearn(
        tiny.model, tiny.forget, tiny.retain, seed=0
    )
    after = unlearn.evaluate(retrained, forget=tiny.forget, retain=tiny.retain, test=tiny.test)
    assert after.mia_efficacy is not None and after.mia_efficacy > 0.9
    assert math.isclose(after.forget_accuracy, train.accuracy(retrained, tiny.forget))
    assert F.softmax(retrained(tiny.forget[0][:1]), 1).shape == (1, 4)


def test_errors(tiny: Any) -> None:
    empty = (tiny.forget[0][:0], tiny.forget[1][:0])
    with pytest.raises(WeightspaceValueError, match="empty"):
        unlearn.evaluate(tiny.model, forget=empty, retain=tiny.retain, test=tiny.test)
    with pytest.raises(WeightspaceValueError, match="`feature`"):
        unlearn.membership_inference(
            tiny.model,
            members=tiny.retain,
            non_members=tiny.test,
            target=tiny.forget,
            feature="margin",  # type: ignore[arg-type]
        )
    one = (tiny.test[0][:1], tiny.test[1][:1])
    with pytest.raises(WeightspaceValueError, match="at least 2 members"):
        unlearn.membership_inference(
            tiny.model, members=tiny.retain, non_members=one, target=tiny.forget
        )


def _memoriser(x: torch.Tensor, y: torch.Tensor, seed: int) -> nn.Module:
    """An MLP trained to fit (x, y) exactly: random labels on random inputs are memorised."""
    torch.manual_seed(seed)
    net = nn.Sequential(nn.Linear(x.shape[1], 256), nn.ReLU(), nn.Linear(256, 4))
    opt = torch.optim.Adam(net.parameters(), lr=3e-3)
    for _ in range(300):
        opt.zero_grad()
        F.cross_entropy(net(x), y).backward()
        opt.step()
    return net.eval()


def test_holdout_attack_catches_a_model_that_memorised_and_not_one_that_never_saw() -> None:
    g = torch.Generator().manual_seed(0)
    x = torch.randn(400, 20, generator=g)
    y = torch.randint(0, 4, (400,), generator=g)
    forget, holdout, other = (x[:100], y[:100]), (x[100:200], y[100:200]), (x[200:], y[200:])
    memorised = _memoriser(*forget, seed=0)
    assert train.accuracy(memorised, forget) == 1.0
    r = unlearn.holdout_mia(memorised, forget=forget, holdout=holdout)
    # Every member has a lower loss than every unseen example (AUC 1); the threshold fitted on
    # one half misplaces at most a few of the other half.
    assert r.auc == 1.0 and r.attack_accuracy >= 0.95 and r.n == 100
    # A model trained on other data of the same kind never saw either set: chance, both ways.
    never = _memoriser(*other, seed=0)
    r = unlearn.holdout_mia(never, forget=forget, holdout=holdout)
    assert abs(r.attack_accuracy - 0.5) < 0.1 and abs(r.auc - 0.5) < 0.1
    r = unlearn.holdout_mia(memorised, forget=forget, holdout=holdout, score="confidence")
    assert r.auc == 1.0 and r.attack_accuracy >= 0.95


def test_holdout_attack_by_hand_and_its_calibration() -> None:
    # Losses by construction: two levels, low for the first ten examples, high for the rest:
    # a threshold separates them on both folds; reversed, it is the over-forgetting side
    # (AUC 0). With the same level on both sides, nothing separates them.
    y = torch.zeros(10, dtype=torch.int64)
    idx = torch.arange(20.0)[:, None]
    margin = torch.cat([torch.full((10,), 8.0), torch.linspace(-2.0, -6.0, 10)])
    net = _Fixed(torch.stack([margin, torch.zeros(20)], 1))
    low, high = (idx[:10], y), (idx[10:], y)
    assert unlearn.holdout_mia(net, forget=low, holdout=high) == unlearn.HoldoutMIAResult(
        1.0, 1.0, 10
    )
    assert unlearn.holdout_mia(net, forget=high, holdout=low) == unlearn.HoldoutMIAResult(
        1.0, 0.0, 10
    )
    same = unlearn.holdout_mia(net, forget=low, holdout=(idx[:10], y))
    assert (same.attack_accuracy, same.auc) == (0.5, 0.5)
    # Per-example difficulty dominates the raw loss; the reference model (the difficulty
    # alone) calibrates it away and exposes the members' small extra confidence.
    g = torch.Generator().manual_seed(1)
    difficulty = 6.0 * torch.randn(200, generator=g)
    member = torch.arange(200) < 100
    ref_logits = torch.stack([difficulty, torch.zeros(200)], 1)
    target_logits = ref_logits + torch.stack([0.3 * member.float(), torch.zeros(200)], 1)
    idx = torch.arange(200.0)[:, None]
    zeros = torch.zeros(100, dtype=torch.int64)
    sets = {"forget": (idx[:100], zeros), "holdout": (idx[100:], zeros)}
    raw = unlearn.holdout_mia(_Fixed(target_logits), **sets)
    calibrated = unlearn.holdout_mia(_Fixed(target_logits), **sets, reference=_Fixed(ref_logits))
    assert raw.attack_accuracy < 0.65
    assert calibrated.auc == 1.0 and calibrated.attack_accuracy >= 0.99


def test_holdout_attack_errors(tiny: Any) -> None:
    with pytest.raises(WeightspaceValueError, match="`score` must be 'loss' or 'confidence'"):
        unlearn.holdout_mia(
            tiny.model,
            forget=tiny.forget,
            holdout=tiny.forget_test,
            score="all",  # type: ignore[arg-type]
        )
    with pytest.raises(WeightspaceValueError, match="`max_samples` must be an int >= 4"):
        unlearn.holdout_mia(tiny.model, forget=tiny.forget, holdout=tiny.forget_test, max_samples=2)
    with pytest.raises(WeightspaceValueError, match="at least 4 examples"):
        three = (tiny.forget_test[0][:3], tiny.forget_test[1][:3])
        unlearn.holdout_mia(tiny.model, forget=tiny.forget, holdout=three)
    with pytest.raises(WeightspaceValueError, match="`reference` must be an nn.Module"):
        unlearn.holdout_mia(
            tiny.model,
            forget=tiny.forget,
            holdout=tiny.forget_test,
            reference="net",  # type: ignore[arg-type]
        )


def test_the_combined_feature_is_deprecated(tiny: Any) -> None:
    sets = {"members": tiny.retain, "non_members": tiny.test, "target": tiny.forget}
    with pytest.warns(FutureWarning, match=r"use `membership_inference\(feature=\"confidence\"\)"):
        old = unlearn.membership_inference(tiny.model, **sets, feature="all")
    assert 0.0 <= old.efficacy <= 1.0 and old.n_target == len(tiny.forget[1])
    # The default is now the confidence feature alone.
    assert unlearn.membership_inference(tiny.model, **sets) == unlearn.membership_inference(
        tiny.model, **sets, feature="confidence"
    )
