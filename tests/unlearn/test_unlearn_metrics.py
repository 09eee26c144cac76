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
    }
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
