"""Tests of train.batches (the one batching contract) and train.predict/evaluate/accuracy."""

from __future__ import annotations

from typing import Any

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from weightspace import WeightspaceValueError, train


def pair(n: int = 10) -> tuple[torch.Tensor, torch.Tensor]:
    return torch.arange(float(n))[:, None].repeat(1, 2), torch.arange(n)


def labels(batches: Any) -> list[list[int]]:
    out = []
    for b in batches:
        y = b[1] if isinstance(b, (tuple, list)) else b["y"]
        out.append(y.tolist())
    return out


def test_every_form_gives_the_same_batches() -> None:
    x, y = pair()
    expected = [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9]]
    assert labels(train.batches((x, y), batch_size=4)) == expected
    assert labels(train.batches([x, y], batch_size=4)) == expected  # a list of two tensors
    assert labels(train.batches(TensorDataset(x, y), batch_size=4)) == expected
    samples = [{"x": x[i], "y": y[i]} for i in range(10)]
    assert labels(train.batches(samples, batch_size=4)) == expected  # default_collate
    loader = DataLoader(TensorDataset(x, y), batch_size=4)
    assert labels(train.batches(loader, batch_size=999)) == expected  # its own batch size
    ready = iter([(x[:4], y[:4]), (x[4:8], y[4:8]), (x[8:], y[8:])])
    assert labels(train.batches(ready, batch_size=1)) == expected
    inputs = list(train.batches(x, batch_size=4))
    assert [b.shape[0] for b in inputs] == [4, 4, 2] and torch.equal(torch.cat(inputs), x)
    dropped = train.batches((x, y), batch_size=4, drop_last=True)
    assert labels(dropped) == expected[:2]
    collated = train.batches(samples, batch_size=5, collate_fn=lambda s: [d["y"] for d in s])
    assert [len(b) for b in collated] == [5, 5]


@settings(max_examples=30, deadline=None)
@given(st.integers(1, 40), st.integers(1, 9), st.integers(0, 50), st.integers(0, 3))
def test_shuffled_batches_read_the_epoch_order(n: int, size: int, seed: int, epoch: int) -> None:
    x, y = pair(n)
    got = torch.cat(
        [b[1] for b in train.batches((x, y), batch_size=size, shuffle=True, seed=seed, epoch=epoch)]
    )
    assert torch.equal(got, train.epoch_order(n, seed, epoch))
    assert sorted(got.tolist()) == list(range(n))


def test_a_generator_seed_is_drawn_from_and_advanced() -> None:
    x, y = pair()
    g = torch.Generator().manual_seed(3)
    first = torch.cat([b[1] for b in train.batches((x, y), batch_size=3, shuffle=True, seed=g)])
    second = torch.cat([b[1] for b in train.batches((x, y), batch_size=3, shuffle=True, seed=g)])
    check = torch.Generator().manual_seed(3)
    assert torch.equal(first, torch.randperm(10, generator=check))
    assert torch.equal(second, torch.randperm(10, generator=check))


@pytest.mark.parametrize(
    ("data", "kwargs", "message"),
    [
        (5, {}, r"`data` must be a Dataset, a DataLoader, a pair \(inputs, targets\)"),
        ([], {}, r"`data` is empty \(0 examples\)"),
        ((torch.zeros(3, 2), torch.zeros(2)), {}, r"shapes \[3, 2\] and \[2\]"),
        (iter([]), {}, "`data` holds no batch"),
        (pair(), {"batch_size": 0}, "`batch_size` must be an int >= 1, got 0"),
        (pair(), {"epoch": -1}, "`epoch` must be an int >= 0, got -1"),
        (pair(), {"seed": "1"}, "`seed` must be an int or a torch.Generator, got '1'"),
        (torch.tensor(1.0), {}, "needs a first \\(example\\) dimension"),
    ],
)
def test_bad_data(data: Any, kwargs: dict[str, Any], message: str) -> None:
    with pytest.raises(WeightspaceValueError, match=message):
        list(train.batches(data, **{"batch_size": 4, **kwargs}))


def classifier() -> nn.Module:
    net = nn.Linear(2, 3, bias=False)
    with torch.no_grad():
        net.weight.copy_(torch.tensor([[1.0, 0.0], [0.0, 1.0], [-1.0, -1.0]]))
    return net


def test_accuracy_evaluate_and_predict_on_every_form() -> None:
    x = torch.tensor([[2.0, 0.0], [0.0, 2.0], [-1.0, -1.0], [1.0, 0.0], [0.0, 1.0]])
    y = torch.tensor([0, 1, 2, 1, 0])
    net = classifier().train()
    forms = [(x, y), TensorDataset(x, y), DataLoader(TensorDataset(x, y), batch_size=2)]
    for data in forms:
        assert train.accuracy(net, data, batch_size=2) == 0.6
        result = train.evaluate(net, data, batch_size=3)
        assert result["accuracy"] == 0.6
        expected = float(F.cross_entropy(net(x).detach().double(), y))
        assert result["loss"] == pytest.approx(expected, rel=1e-12)
    assert net.training  # the mode is restored
    assert torch.equal(train.predict(net, x, batch_size=2), net(x).detach())
    custom = train.evaluate(net, (x, y), {"errors": lambda out, t: (out.argmax(1) != t).sum()})
    assert custom == {"errors": 2.0}
    doubled = train.predict(net, (x, y), forward=lambda m, b: 2 * m(b[0]))
    assert torch.equal(doubled, 2 * net(x).detach())


def test_evaluation_errors_and_the_deprecated_x_argument() -> None:
    net, x = classifier(), torch.ones(4, 2)
    with pytest.raises(WeightspaceValueError, match="must give \\(inputs, targets\\) batches"):
        train.accuracy(net, x)
    with pytest.raises(WeightspaceValueError, match="`metrics` must be a non-empty mapping"):
        train.evaluate(net, (x, torch.zeros(4).long()), {})
    with pytest.raises(WeightspaceValueError, match="`model` must be an nn.Module"):
        train.accuracy("net", (x, torch.zeros(4).long()))  # type: ignore[arg-type]
    with pytest.warns(FutureWarning, match=r"train\.predict\(data=\.\.\.\)"):
        old = train.predict(net, x=x)
    assert torch.equal(old, train.predict(net, x))
    with pytest.raises(TypeError, match="both `x`"):
        train.predict(net, x, x=x)
