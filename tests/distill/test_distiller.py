"""The Distiller: the shared trainer with a frozen teacher, resumable and data-parallel."""

from __future__ import annotations

import textwrap
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from weightspace import WeightspaceValueError, distill, train


def data(n: int = 64) -> tuple[Tensor, Tensor]:
    g = torch.Generator().manual_seed(0)
    x = torch.randn(n, 6, generator=g)
    y = (x[:, 0] + x[:, 1] > 0).long() + (x[:, 2] > 1).long()
    return x, y


def teacher() -> nn.Module:
    torch.manual_seed(1)
    return nn.Sequential(
        nn.Linear(6, 16), nn.BatchNorm1d(16), nn.ReLU(), nn.Dropout(0.3), nn.Linear(16, 3)
    )


def student() -> nn.Module:
    torch.manual_seed(2)
    return nn.Sequential(nn.Linear(6, 4), nn.ReLU(), nn.Dropout(0.2), nn.Linear(4, 3))


def terms(s: nn.Module, t: nn.Module) -> list[distill.Term]:
    torch.manual_seed(3)
    hint = distill.Hint.for_models(s, t, "1", "2", data()[0][:2])
    return [
        distill.Task(weight=0.5),
        distill.KD(2.0, weight=0.5),
        distill.DKD(1.0, 4.0, 2.0, warmup=5, weight=0.2),
        hint,
    ]


def state(module: nn.Module) -> dict[str, Tensor]:
    return {k: v.clone() for k, v in module.state_dict().items()}


def test_teacher_is_frozen_and_only_the_student_learns() -> None:
    t = teacher()
    t.train()  # left in training mode by its owner: the distiller must not care
    before = state(t)
    s = student()
    s_before = state(s)
    d = distill.Distiller(s, t, terms(s, t), lr=0.01, seed=0)
    assert all(not n.startswith("teacher") for n, _ in d.params)
    loss = d.compute_loss(data(8))
    loss.backward()  # type: ignore[no-untyped-call]
    assert all(p.grad is None for p in t.parameters())
    assert all(p.grad is not None and bool(p.grad.abs().sum() > 0) for _, p in d.params)
    d.optimizer.zero_grad()
    history = d.fit(data(), epochs=2, batch_size=16)
    assert history.steps == 8
    for k, v in t.state_dict().items():  # weights and BatchNorm statistics
        assert torch.equal(v, before[k]), k
    assert t.training  # its mode is restored
    assert not torch.equal(s.state_dict()["0.weight"], s_before["0.weight"])
    assert set(d.last_terms_) == {"0:Task", "1:KD", "2:DKD", "3:Hint"}


def test_the_loss_is_the_weighted_sum_of_the_functional_losses() -> None:
    t, s = teacher(), student()
    tt = terms(s, t)
    d = distill.Distiller(s, t, tt)
    x, y = data(8)
    d.model.eval()  # no dropout in the student, no warm-up count in DKD
    got = d.compute_loss((x, y))
    t.eval()
    with torch.no_grad():
        zt = t(x)
        ht = t[:3](x)
    zs = s(x)
    hs = s[:2](x)
    dkd_scale = 0.0  # the warm-up has not started: no call in training mode yet
    expected = (
        0.5 * F.cross_entropy(zs, y)
        + 0.5 * distill.kd_loss(zs, zt, temperature=2.0)
        + 0.2 * dkd_scale
        + 1.0 * distill.hint_loss(tt[3].connector(hs), ht)
    )
    torch.testing.assert_close(got, expected, rtol=1e-6, atol=1e-7)
    assert d.last_terms_["2:DKD"] == 0.0


def test_task_term_alone_is_the_plain_trainer_bit_for_bit() -> None:
    x, y = data()
    a, b = student(), student()
    train.fit_(a, (x, y), epochs=3, batch_size=16, lr=0.01, seed=4)
    d = distill.Distiller(b, teacher(), [distill.Task()], lr=0.01, seed=4)
    d.fit((x, y), epochs=3, batch_size=16)
    for k, v in a.state_dict().items():
        assert torch.equal(v, b.state_dict()[k]), k


def test_resume_equals_an_uninterrupted_run(tmp_path: Path) -> None:
    x, y = data()
    t = teacher()
    s1 = student()
    d1 = distill.Distiller(s1, t, terms(s1, t), lr=0.01, seed=7)
    full = d1.fit((x, y), epochs=3, batch_size=16)

    ckpt = tmp_path / "run.safetensors"
    s2 = student()
    d2 = distill.Distiller(s2, t, terms(s2, t), lr=0.01, seed=7)
    d2.fit((x, y), epochs=1, batch_size=16, checkpoint=ckpt)
    s3 = student()
    d3 = distill.Distiller(s3, t, terms(s3, t), lr=0.01, seed=7)
    resumed = d3.fit((x, y), epochs=3, batch_size=16, checkpoint=ckpt, resume=True)

    assert resumed.losses == full.losses and resumed.steps == full.steps == 12
    for k, v in d1.model.state_dict().items():  # student, connector, the DKD warm-up counter
        assert torch.equal(v, d3.model.state_dict()[k]), k
    assert int(d3.terms[2].calls) == 12


def test_custom_forwards_for_a_regression_teacher() -> None:
    """Progressive-distillation shape: the teacher's target is two steps, the student's one."""
    torch.manual_seed(0)
    t = nn.Linear(3, 3)
    s = nn.Linear(3, 3)
    seen: list[bool] = []

    def two_steps(model: nn.Module, batch: Tensor) -> Tensor:
        seen.append(torch.is_grad_enabled() or model.training)
        return model(model(batch))  # type: ignore[no-any-return]

    d = distill.Distiller(
        s, t, [distill.OutputMatch("mse")], teacher_forward=two_steps, lr=0.05, seed=0
    )
    x = torch.randn(128, 3)
    h = d.fit(x, epochs=60, batch_size=32)
    assert seen and not any(seen)  # always without gradients and in eval mode
    with torch.no_grad():
        gap = F.mse_loss(s(x), t(t(x))).item()
    assert h.losses[0] > 10 * gap  # the student has learnt the composed map


def test_bad_arguments() -> None:
    s = student()
    with pytest.raises(WeightspaceValueError, match="shares 4 parameter tensor"):
        distill.Distiller(s, s, [distill.KD()])
    with pytest.raises(WeightspaceValueError, match="`terms` must be a non-empty list"):
        distill.Distiller(s, teacher(), [])
    with pytest.raises(WeightspaceValueError, match="`teacher` must be an nn.Module, got str"):
        distill.Distiller(s, "t", [distill.KD()])  # type: ignore[arg-type]
    with pytest.raises(WeightspaceValueError, match="`teacher_forward` must be a callable"):
        distill.Distiller(s, teacher(), [distill.KD()], teacher_forward=3)  # type: ignore[arg-type]
    with pytest.raises(WeightspaceValueError, match="`weight` must be a finite number >= 0"):
        distill.KD(weight=-1.0)
    with pytest.raises(WeightspaceValueError, match="`temperature` must be a finite number > 0"):
        distill.KD(0.0)
    with pytest.raises(WeightspaceValueError, match="`warmup` must be an int >= 0, got 1.5"):
        distill.DKD(warmup=1.5)  # type: ignore[arg-type]
    d = distill.Distiller(s, teacher(), [distill.DKD()])
    with pytest.raises(WeightspaceValueError, match=r"needs \(inputs, targets\) batches"):
        d.compute_loss(torch.zeros(4, 6))


CHILD = textwrap.dedent(
    """
    import sys, torch, torch.distributed as dist
    from torch import nn
    from weightspace import distill

    dist.init_process_group("gloo")
    torch.manual_seed(1)
    teacher = nn.Sequential(nn.Linear(6, 16), nn.ReLU(), nn.Linear(16, 3))
    torch.manual_seed(2)
    student = nn.Sequential(nn.Linear(6, 4), nn.ReLU(), nn.Linear(4, 3))
    g = torch.Generator().manual_seed(0)
    x = torch.randn(64, 6, generator=g)
    y = (x[:, 0] + x[:, 1] > 0).long() + (x[:, 2] > 1).long()
    torch.manual_seed(3)
    hint = distill.Hint.for_models(student, teacher, "1", "1", x[:2])
    terms = [distill.Task(weight=0.5), distill.KD(2.0, weight=0.5), hint]
    d = distill.Distiller(student, teacher, terms, optimizer="sgd", lr=0.05, seed=5)
    h = d.fit((x, y), epochs=3, batch_size=8)
    assert h.world_size == 2, h
    if dist.get_rank() == 0:
        torch.save({"state": d.model.state_dict(), "losses": h.losses, "steps": h.steps},
                   sys.argv[1])
    dist.destroy_process_group()
    """
)


def test_two_ranks_match_one_process(tmp_path: Path, torchrun: Callable[..., Any]) -> None:
    script = tmp_path / "child.py"
    script.write_text(CHILD, encoding="utf-8")
    out = tmp_path / "ddp.pt"
    done = torchrun([str(script), str(out)])
    assert done.returncode == 0, done.stderr[-3000:]
    ddp = torch.load(out, weights_only=True)

    torch.manual_seed(1)
    t = nn.Sequential(nn.Linear(6, 16), nn.ReLU(), nn.Linear(16, 3))
    torch.manual_seed(2)
    s = nn.Sequential(nn.Linear(6, 4), nn.ReLU(), nn.Linear(4, 3))
    x, y = data()
    torch.manual_seed(3)
    hint = distill.Hint.for_models(s, t, "1", "1", x[:2])
    tt = [distill.Task(weight=0.5), distill.KD(2.0, weight=0.5), hint]
    d = distill.Distiller(s, t, tt, optimizer="sgd", lr=0.05, seed=5)
    h = d.fit((x, y), epochs=3, batch_size=16)
    assert ddp["steps"] == h.steps == 12
    assert ddp["losses"] == pytest.approx(h.losses, rel=1e-5)
    for name, tensor in d.model.state_dict().items():
        torch.testing.assert_close(ddp["state"][name], tensor, rtol=1e-5, atol=1e-6)
