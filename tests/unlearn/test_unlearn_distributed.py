"""Data-parallel unlearning under torchrun: two CPU ranks take the serial run's steps."""

from __future__ import annotations

import textwrap
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch
from torch import nn

from weightspace import unlearn

CHILD = textwrap.dedent(
    """
    import sys, torch, torch.distributed as dist
    from torch import nn
    from weightspace import unlearn

    dist.init_process_group("gloo")
    g = torch.Generator().manual_seed(0)
    x = torch.randn(96, 6, generator=g)
    y = x[:, :3].argmax(dim=1)
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(6, 12), nn.ReLU(), nn.Linear(12, 3))
    method = getattr(unlearn, sys.argv[2])(epochs=2, batch_size=8, lr=0.05, optimizer="sgd")
    out = method.unlearn(net, (x[y == 0], y[y == 0]), (x[y != 0], y[y != 0]), seed=3)
    states = [None, None]
    dist.all_gather_object(states, out.state_dict())
    if dist.get_rank() == 0:
        for name, t in states[0].items():
            assert torch.equal(t, states[1][name]), name
        torch.save(out.state_dict(), sys.argv[1])
    dist.destroy_process_group()
    """
)


@pytest.mark.parametrize("method", ["FineTune", "Retrain"])
def test_two_ranks_equal_serial_with_twice_the_batch(
    tmp_path: Path, torchrun: Callable[..., Any], method: str
) -> None:
    script = tmp_path / "child.py"
    script.write_text(CHILD, encoding="utf-8")
    done = torchrun([str(script), str(tmp_path / "ddp.pt"), method])
    assert done.returncode == 0, done.stderr[-3000:]
    ddp = torch.load(tmp_path / "ddp.pt", weights_only=True)

    g = torch.Generator().manual_seed(0)
    x = torch.randn(96, 6, generator=g)
    y = x[:, :3].argmax(dim=1)
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(6, 12), nn.ReLU(), nn.Linear(12, 3))
    serial = getattr(unlearn, method)(epochs=2, batch_size=16, lr=0.05, optimizer="sgd")
    out = serial.unlearn(net, (x[y == 0], y[y == 0]), (x[y != 0], y[y != 0]), seed=3)
    changed = False
    for name, tensor in out.state_dict().items():
        torch.testing.assert_close(ddp[name], tensor, rtol=1e-5, atol=1e-6)
        changed |= not torch.equal(tensor, net.state_dict()[name])
    assert changed
