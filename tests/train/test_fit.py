"""Tests of train.fit_: determinism, freezing, data forms, errors and DDP equivalence."""

from __future__ import annotations

import textwrap
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from weightspace import WeightspaceValueError, train
from weightspace.train import epoch_order


def data(n: int = 64, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 4, generator=g)
    return x, (x[:, 0] + x[:, 1] > 0).long()


def model(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(4, 16), nn.ReLU(), nn.Dropout(0.2), nn.Linear(16, 2))


def test_learns_and_is_deterministic() -> None:
    a, b = model(), model()
    ha = train.fit_(a, data(), epochs=15, batch_size=16, lr=0.02, seed=3)
    hb = train.fit_(b, data(), epochs=15, batch_size=16, lr=0.02, seed=3)
    assert ha.losses == hb.losses and ha.steps == 60 and ha.world_size == 1
    assert all(torch.equal(p, q) for p, q in zip(a.parameters(), b.parameters(), strict=True))
    assert ha.final_loss < 0.5 * ha.losses[0]
    assert train.accuracy(a, data(256, seed=1)) > 0.85


def test_global_rng_untouched_and_mode_restored() -> None:
    m = model()
    m.eval()
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    train.fit_(m, data(), epochs=1)
    assert torch.equal(torch.rand(3), expected)
    assert not m.training


def test_trainable_freezes_the_rest() -> None:
    m = model()
    before = {n: p.detach().clone() for n, p in m.named_parameters()}
    train.fit_(m, data(), epochs=2, trainable=["3"])
    after = dict(m.named_parameters())
    assert torch.equal(after["0.weight"], before["0.weight"])
    assert not torch.equal(after["3.weight"], before["3.weight"])
    assert all(p.requires_grad for p in m.parameters())


def test_dataset_with_collate_and_custom_loss() -> None:
    x, y = data()
    samples = [{"x": x[i], "y": y[i]} for i in range(len(x))]

    def collate(items: list[dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
        return {k: torch.stack([it[k] for it in items]) for k in items[0]}

    def loss(net: nn.Module, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        return nn.functional.cross_entropy(net(batch["x"]), batch["y"])

    a, b = model(), model()
    ha = train.fit_(a, samples, collate_fn=collate, loss=loss, epochs=3, batch_size=10, seed=1)
    hb = train.fit_(b, (x, y), epochs=3, batch_size=10, seed=1)
    assert ha.losses == pytest.approx(hb.losses, rel=1e-6)
    assert train.predict(a, samples, collate_fn=lambda it: collate(it)["x"]).shape == (64, 2)


def test_drop_last_counts_steps() -> None:
    h = train.fit_(model(), data(50), epochs=2, batch_size=16, drop_last=True)
    assert h.steps == 6


@settings(max_examples=40, deadline=None)
@given(st.integers(1, 60), st.integers(1, 4), st.integers(0, 5), st.integers(0, 100))
def test_ranks_partition_the_serial_order(n: int, world: int, epoch: int, seed: int) -> None:
    # the union of the ranks' indices is the serial epoch order (padded to a multiple of world)
    serial = epoch_order(n, seed, epoch, 0, 1)
    parts = [epoch_order(n, seed, epoch, r, world) for r in range(world)]
    assert len({len(p) for p in parts}) == 1
    interleaved = torch.stack(parts, dim=1).reshape(-1)
    assert torch.equal(interleaved[:n], serial)
    assert sorted(serial.tolist()) == list(range(n))


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"epochs": 0}, "`epochs`"),
        ({"batch_size": 2.5}, "`batch_size`"),
        ({"lr": -1.0}, "`lr`"),
        ({"optimizer": "lbfgs"}, "`optimizer`"),
        ({"seed": "0"}, "`seed`"),
        ({"loss": 3}, "`loss`"),
        ({"trainable": ["nope"]}, "nope"),
        ({"distributed": True}, "torchrun"),
        ({"batch_size": 100, "drop_last": True}, "drop_last"),
    ],
)
def test_bad_arguments(kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(WeightspaceValueError, match=message):
        train.fit_(model(), data(), **kwargs)  # type: ignore[arg-type]


def test_bad_data_and_divergence() -> None:
    with pytest.raises(WeightspaceValueError, match="same first dimension"):
        train.fit_(model(), (torch.zeros(3, 4), torch.zeros(2).long()))
    with pytest.raises(WeightspaceValueError, match="empty"):
        train.fit_(model(), [])
    with pytest.raises(WeightspaceValueError, match=r"a pair \(inputs, targets\) of tensors"):
        train.fit_(model(), 5)
    x, y = data()
    with pytest.raises(WeightspaceValueError, match="not finite"):
        train.fit_(model(), (x * float("inf"), y))
    with pytest.raises(WeightspaceValueError, match="`data` is empty"):
        train.predict(model(), torch.zeros(0, 4))


CHILD = textwrap.dedent(
    """
    import sys, torch, torch.distributed as dist
    from torch import nn
    from weightspace import train

    dist.init_process_group("gloo")
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(4, 16), nn.ReLU(), nn.Linear(16, 2))
    g = torch.Generator().manual_seed(0)
    x = torch.randn(64, 4, generator=g)
    y = (x[:, 0] + x[:, 1] > 0).long()
    h = train.fit_(net, (x, y), epochs=3, batch_size=8, lr=0.01, optimizer="sgd", seed=5)
    assert h.world_size == 2, h
    if dist.get_rank() == 0:
        torch.save({"state": net.state_dict(), "losses": h.losses, "steps": h.steps}, sys.argv[1])
    dist.destroy_process_group()
    """
)


def test_two_ranks_take_the_serial_steps(tmp_path: Path, torchrun: Callable[..., Any]) -> None:
    script = tmp_path / "child.py"
    script.write_text(CHILD, encoding="utf-8")
    out = tmp_path / "ddp.pt"
    done = torchrun([str(script), str(out)])
    assert done.returncode == 0, done.stderr[-3000:]
    ddp = torch.load(out, weights_only=True)

    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(4, 16), nn.ReLU(), nn.Linear(16, 2))
    x, y = data()
    h = train.fit_(net, (x, y), epochs=3, batch_size=16, lr=0.01, optimizer="sgd", seed=5)
    assert ddp["steps"] == h.steps == 12
    assert ddp["losses"] == pytest.approx(h.losses, rel=1e-5)
    for name, tensor in net.state_dict().items():
        torch.testing.assert_close(ddp["state"][name], tensor, rtol=1e-5, atol=1e-6)
