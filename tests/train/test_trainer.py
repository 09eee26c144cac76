"""Tests of weightspace.train.Trainer: the old loop's exact steps, checkpoints, masks, hooks."""

from __future__ import annotations

import copy
import math
from pathlib import Path
from typing import Any

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from weightspace import WeightspaceValueError, io, train


def data(n: int = 64, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 4, generator=g)
    return x, (x[:, 0] + x[:, 1] > 0).long()


def model(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(4, 16), nn.ReLU(), nn.Dropout(0.2), nn.Linear(16, 2))


def same(a: nn.Module, b: nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


def old_fit(net: nn.Module, x: torch.Tensor, y: torch.Tensor, **cfg: Any) -> list[float]:
    """The serial loop of ``train.fit`` before the trainer was split out (weightspace 0.1.0)."""
    epochs, bs, seed = cfg["epochs"], cfg["batch_size"], cfg["seed"]
    lr, wd, name = cfg["lr"], cfg.get("weight_decay", 0.0), cfg.get("optimizer", "adam")
    clip, drop_last = cfg.get("max_grad_norm"), cfg.get("drop_last", False)
    named = dict(net.named_parameters())
    chosen = set(named) if cfg.get("trainable") is None else set(cfg["trainable"])
    params = [p for n, p in named.items() if n in chosen]
    for n, p in named.items():
        p.requires_grad_(n in chosen)
    if name == "adam":
        opt: torch.optim.Optimizer = torch.optim.Adam(params, lr=lr, weight_decay=wd)
    elif name == "adamw":
        opt = torch.optim.AdamW(params, lr=lr, weight_decay=wd)
    else:
        opt = torch.optim.SGD(params, lr=lr, momentum=0.9, weight_decay=wd)
    size = int(x.shape[0])
    steps = size // bs if drop_last else math.ceil(size / bs)
    losses = []
    net.train()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        for epoch in range(epochs):
            order = torch.randperm(size, generator=torch.Generator().manual_seed(seed + epoch))
            total, count = 0.0, 0
            for k in range(steps):
                idx = order[k * bs : (k + 1) * bs]
                value = F.cross_entropy(net(x[idx]), y[idx])
                opt.zero_grad(set_to_none=True)
                value.backward()  # type: ignore[no-untyped-call]
                if clip is not None:
                    torch.nn.utils.clip_grad_norm_(params, clip)
                opt.step()
                total += float(value.detach()) * len(idx)
                count += len(idx)
            losses.append(total / count)
    for p in named.values():
        p.requires_grad_(True)
    return losses


# Numbers the old ``train.fit`` gave on this machine for these settings (sum of the final
# weights and the per-epoch losses, as float.hex), recorded before the trainer was split out.
OLD: dict[str, tuple[dict[str, Any], str, list[str]]] = {
    "adam": (
        {"epochs": 3, "batch_size": 16, "lr": 0.02, "seed": 3},
        "-0x1.228207e810000p+1",
        ["0x1.178651999999ap-1", "0x1.b4de1e75c28f6p-2", "0x1.790c5b47ae148p-2"],
    ),
    "sgd_clip_trainable": (
        {
            "epochs": 2,
            "batch_size": 10,
            "lr": 0.05,
            "optimizer": "sgd",
            "max_grad_norm": 0.5,
            "trainable": ["3.weight", "3.bias"],
            "seed": 1,
        },
        "-0x1.0d3f19de00000p+0",
        ["0x1.25d4dc6666666p-1", "0x1.e9b2ce0000000p-2"],
    ),
    "adamw_droplast": (
        {
            "epochs": 2,
            "batch_size": 16,
            "lr": 0.01,
            "optimizer": "adamw",
            "weight_decay": 0.1,
            "drop_last": True,
            "seed": 7,
        },
        "-0x1.1cef988800000p+0",
        ["0x1.2952ed5555555p-1", "0x1.e38eff5555555p-2"],
    ),
}


@pytest.mark.parametrize("case", sorted(OLD))
def test_fit_takes_the_old_loops_steps_bit_for_bit(case: str) -> None:
    cfg, weight_sum, losses = OLD[case]
    x, y = data(50)
    new, old = model(), model()
    h = train.fit_(new, (x, y), **cfg)
    old_losses = old_fit(old, x, y, **cfg)
    assert same(new, old)
    assert list(h.losses) == old_losses
    # the recorded numbers (exact on the machine they were recorded on)
    total = sum(float(t.double().sum()) for t in new.state_dict().values())
    assert total == pytest.approx(float.fromhex(weight_sum), rel=1e-6)
    assert list(h.losses) == pytest.approx([float.fromhex(v) for v in losses], rel=1e-6)


def test_fit_is_a_deprecated_alias_of_fit_() -> None:
    a, b = model(), model()
    with pytest.warns(FutureWarning, match=r"weightspace\.train\.fit_"):
        ha = train.fit(a, data(), epochs=2, batch_size=16, seed=1)
    hb = train.fit_(b, data(), epochs=2, batch_size=16, seed=1)
    assert ha.losses == hb.losses and same(a, b)


@pytest.mark.parametrize("optimizer", ["adam", "sgd"])
def test_resume_from_a_checkpoint_is_bitwise_the_uninterrupted_run(
    tmp_path: Path, optimizer: str
) -> None:
    settings: dict[str, Any] = {"batch_size": 16, "lr": 0.02, "seed": 4, "optimizer": optimizer}
    straight = model()
    h2 = train.fit_(straight, data(), epochs=2, **settings)
    ckpt = tmp_path / "run.safetensors"
    first = model()
    h1 = train.fit_(first, data(), epochs=1, checkpoint=ckpt, **settings)
    assert h1.losses == h2.losses[:1]
    resumed = model()  # a new process: same initial model, state from the checkpoint
    hr = train.fit_(resumed, data(), epochs=2, checkpoint=ckpt, resume=True, **settings)
    assert same(resumed, straight)
    assert hr.losses == h2.losses and hr.steps == h2.steps == 8
    saved = io.open_state_dict(ckpt)
    assert saved.metadata["epoch"] == "2"
    assert torch.equal(saved["model.3.weight"], straight.state_dict()["3.weight"])
    assert any(k.startswith("optimizer.state.") for k in saved)
    assert [p.name for p in tmp_path.iterdir()] == ["run.safetensors"]  # nothing half-written


def test_resume_without_a_checkpoint_starts_afresh_and_refuses_another_run(
    tmp_path: Path,
) -> None:
    ckpt = tmp_path / "run.safetensors"
    a, b = model(), model()
    ha = train.fit_(a, data(), epochs=1, seed=2, checkpoint=ckpt, resume=True)
    hb = train.fit_(b, data(), epochs=1, seed=2)
    assert ha.losses == hb.losses and same(a, b)
    with pytest.raises(WeightspaceValueError, match="seed=2, but this run has seed=3"):
        train.fit_(model(), data(), epochs=2, seed=3, checkpoint=ckpt, resume=True)
    train.fit_(model(), data(), epochs=2, seed=2, checkpoint=ckpt)  # resume=False: overwrite
    done = model()
    h = train.fit_(done, data(), epochs=2, seed=2, checkpoint=ckpt, resume=True)
    assert h.steps == 2 * 1 and len(h.losses) == 2  # nothing left to do: the saved run
    with pytest.raises(WeightspaceValueError, match="has done 2 epochs, more than `epochs`=1"):
        train.fit_(model(), data(), epochs=1, seed=2, checkpoint=ckpt, resume=True)
    io.save_state_dict({"w": torch.zeros(1)}, tmp_path / "other.safetensors")
    with pytest.raises(WeightspaceValueError, match="not a checkpoint of Trainer.fit"):
        train.fit_(model(), data(), checkpoint=tmp_path / "other.safetensors", resume=True)
    with pytest.raises(WeightspaceValueError, match="`resume=True` needs `checkpoint`"):
        train.fit_(model(), data(), resume=True)


def test_masks_freeze_entries_and_hooks_edit_gradients() -> None:
    net = model()
    before = {n: p.detach().clone() for n, p in net.named_parameters()}
    mask = {"0.weight": torch.rand(16, 4, generator=torch.Generator().manual_seed(0)) > 0.5}
    train.fit_(net, data(), epochs=2, masks=mask, seed=0)
    after = dict(net.named_parameters())
    w = after["0.weight"].detach()
    assert torch.equal(w[~mask["0.weight"]], before["0.weight"][~mask["0.weight"]])
    assert not torch.equal(w[mask["0.weight"]], before["0.weight"][mask["0.weight"]])
    for name in ("0.bias", "3.weight", "3.bias"):  # not named in the mask: frozen
        assert torch.equal(after[name], before[name])

    def double(grads: dict[str, torch.Tensor]) -> None:
        for g in grads.values():
            g.mul_(2)

    a, b = model(), model()
    cfg: dict[str, Any] = {"optimizer": "sgd", "momentum": 0.0, "epochs": 2, "seed": 1}
    train.fit_(a, data(), lr=0.01, grad_hooks=[double], **cfg)
    train.fit_(b, data(), lr=0.02, **cfg)
    assert same(a, b)  # lr * (2 g) == (2 lr) * g exactly


def test_step_raises_on_a_non_finite_loss_and_leaves_the_weights() -> None:
    net = nn.Linear(4, 2)
    trainer = train.Trainer(net, lr=0.1)
    before = [p.detach().clone() for p in net.parameters()]
    x, y = data(8)
    with pytest.raises(train.NonFiniteLossError, match=r"not finite \(inf\) at step 0"):
        trainer.step(train.cross_entropy_loss(net, (x, y)) + float("inf"))
    assert all(torch.equal(p, q) for p, q in zip(net.parameters(), before, strict=True))
    assert trainer.steps_ == 0
    assert isinstance(train.NonFiniteLossError("x"), WeightspaceValueError)


def test_compute_loss_is_the_hook_a_subclass_overrides() -> None:
    teacher = model(1).eval()

    class Distil(train.Trainer):
        def compute_loss(self, batch: Any) -> torch.Tensor:
            x, _ = batch
            with torch.no_grad():
                target = teacher(x).softmax(-1)
            return F.cross_entropy(self.model(x), target)

    student = model(2)
    h = Distil(student, lr=0.01, seed=0).fit(data(), epochs=30, batch_size=16)
    assert h.final_loss < h.losses[0]
    agree = train.predict(student, data()[0]).argmax(1) == train.predict(teacher, data()[0]).argmax(
        1
    )
    assert agree.double().mean() > 0.9


def test_make_optimizer_and_trainer_errors() -> None:
    params = list(nn.Linear(2, 2).parameters())
    opt = train.make_optimizer(params, "adamw", lr=0.5, weight_decay=0.1)
    assert type(opt) is torch.optim.AdamW and opt.defaults["weight_decay"] == 0.1
    with pytest.raises(WeightspaceValueError, match="`optimizer` must be 'adam'"):
        train.make_optimizer(params, "lbfgs")  # type: ignore[arg-type]
    with pytest.raises(WeightspaceValueError, match="`params` is empty"):
        train.make_optimizer([])
    with pytest.raises(WeightspaceValueError, match="`lr` must be a finite number > 0, got 0"):
        train.Trainer(nn.Linear(2, 2), lr=0)
    with pytest.raises(WeightspaceValueError, match=r"`masks` names \['nope'\]"):
        train.Trainer(nn.Linear(2, 2), masks={"nope": torch.ones(2, dtype=torch.bool)})
    with pytest.raises(WeightspaceValueError, match=r"`masks\['bias'\]` must be a bool tensor"):
        train.Trainer(nn.Linear(2, 2), masks={"bias": torch.ones(3, dtype=torch.bool)})
    with pytest.raises(WeightspaceValueError, match="`grad_hooks` must hold callables"):
        train.Trainer(nn.Linear(2, 2), grad_hooks=[3])  # type: ignore[list-item]
    frozen = nn.Linear(2, 2).requires_grad_(False)
    with pytest.raises(WeightspaceValueError, match="no parameter of `model` is trainable"):
        train.Trainer(frozen)


def test_fit_on_a_dataloader_reads_it_in_its_own_order() -> None:
    x, y = data()
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x, y), batch_size=16)
    torch.manual_seed(0)
    a = nn.Sequential(nn.Linear(4, 16), nn.ReLU(), nn.Linear(16, 2))
    b = copy.deepcopy(a)  # no dropout: a DataLoader draws its base seed from the global RNG
    ha = train.fit_(a, loader, epochs=2, seed=0)
    hb = train.fit_(b, iter([(x[i : i + 16], y[i : i + 16]) for i in range(0, 64, 16)]), seed=0)
    assert ha.steps == 8 and hb.steps == 4
    assert ha.losses[0] == hb.losses[0]


BN_CHILD = """
import sys, torch, torch.distributed as dist
from torch import nn
from weightspace import train

dist.init_process_group("gloo")
torch.manual_seed(0)
net = nn.Sequential(nn.Linear(4, 8), nn.BatchNorm1d(8), nn.ReLU(), nn.Linear(8, 2))
g = torch.Generator().manual_seed(0)
x = torch.randn(64, 4, generator=g) + dist.get_rank()  # the ranks see different statistics
y = (x[:, 0] > 0).long()
train.fit_(net, (x, y), epochs=2, batch_size=8, seed=1)
states = [None, None]
dist.all_gather_object(states, net.state_dict())
if dist.get_rank() == 0:
    for name, t in states[0].items():
        assert torch.equal(t, states[1][name]), name
    open(sys.argv[1], "w").write("ok")
dist.destroy_process_group()
"""


def test_ranks_end_with_the_same_weights_and_batch_norm_statistics(
    tmp_path: Path, torchrun: Any
) -> None:
    script = tmp_path / "child.py"
    script.write_text(BN_CHILD, encoding="utf-8")
    done = torchrun([str(script), str(tmp_path / "ok.txt")])
    assert done.returncode == 0, done.stderr[-3000:]
    assert (tmp_path / "ok.txt").read_text() == "ok"
