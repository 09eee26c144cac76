"""A tiny classifier pretrained on four MNIST digits, shared by the unlearning tests."""

from __future__ import annotations

from dataclasses import dataclass

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor, nn

import weightspace as ws

KEEP = (0, 1, 6, 7)  # output i is digit KEEP[i]; "6" is output 2, and "3" takes it over
SIX = 2
PER_CLASS = 200


@dataclass(frozen=True)
class Tiny:
    model: nn.Module
    forget: tuple[Tensor, Tensor]
    retain: tuple[Tensor, Tensor]
    new: tuple[Tensor, Tensor]
    test: tuple[Tensor, Tensor]
    forget_test: tuple[Tensor, Tensor]
    new_test: tuple[Tensor, Tensor]


def _take(ds: ws.data.ImageDataset, digit: int, n: int, label: int) -> tuple[Tensor, Tensor]:
    idx = (ds.targets == digit).nonzero().squeeze(1)[:n]
    x = ws.models.MNISTNet.preprocess(ds.images[idx]).flatten(1)
    return x, torch.full((len(idx),), label, dtype=torch.int64)


def _cat(parts: list[tuple[Tensor, Tensor]]) -> tuple[Tensor, Tensor]:
    return torch.cat([p[0] for p in parts]), torch.cat([p[1] for p in parts])


def _make_net(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(784, 32), nn.ReLU(), nn.Linear(32, len(KEEP)))


@pytest.fixture(scope="session")
def tiny() -> Tiny:
    train, test = ws.data.mnist("train"), ws.data.mnist("test")
    others = [i for i, d in enumerate(KEEP) if d != 6]
    retain = _cat([_take(train, KEEP[i], PER_CLASS, i) for i in others])
    forget = _take(train, 6, PER_CLASS, SIX)
    new = _take(train, 3, PER_CLASS, SIX)
    net = _make_net()
    x, y = _cat([retain, forget])
    opt = torch.optim.Adam(net.parameters(), lr=3e-3)
    g = torch.Generator().manual_seed(0)
    # Two intra-op threads whatever the runner (xdist workers use one): the recorded results
    # in test_unlearn_methods.py depend on the order of threaded reductions.
    threads = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        for _ in range(6):
            for idx in torch.randperm(len(y), generator=g).split(64):
                opt.zero_grad()
                F.cross_entropy(net(x[idx]), y[idx]).backward()
                opt.step()
    finally:
        torch.set_num_threads(threads)
    net.eval()
    return Tiny(
        model=net,
        forget=forget,
        retain=retain,
        new=new,
        test=_cat([_take(test, KEEP[i], 200, i) for i in others]),
        forget_test=_take(test, 6, 200, SIX),
        new_test=_take(test, 3, 200, SIX),
    )


@pytest.fixture(scope="session")
def make_net() -> object:
    """The tiny architecture, as a function of a seed."""
    return _make_net
