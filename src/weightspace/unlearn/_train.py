"""Small training helpers shared by the unlearning methods (private)."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from weightspace._errors import WeightspaceValueError

__all__ = ["Stream", "Trainer", "kd_loss", "masked_softmax_targets"]


class Stream:
    """Endless shuffled minibatches of ``(x, y)``; reshuffles (seeded) after each pass."""

    def __init__(self, x: Tensor, y: Tensor, batch_size: int, generator: torch.Generator):
        self.x, self.y = x, y
        self.batch_size = batch_size
        self.generator = generator
        self._perm: Tensor | None = None
        self._pos = 0

    def __len__(self) -> int:
        return int(self.x.shape[0])

    @property
    def steps_per_epoch(self) -> int:
        return max(1, math.ceil(len(self) / self.batch_size))

    def next(self) -> tuple[Tensor, Tensor]:
        n = len(self)
        if self._perm is None or self._pos >= n:
            self._perm = torch.randperm(n, generator=self.generator)
            self._pos = 0
        idx = self._perm[self._pos : self._pos + self.batch_size]
        self._pos += self.batch_size
        return self.x[idx], self.y[idx]


@dataclass
class Trainer:
    """One optimiser over a model's trainable parameters, optionally restricted by a mask."""

    model: nn.Module
    optimizer: str
    lr: float
    mask: Mapping[str, Tensor] | None = None
    max_grad_norm: float | None = None

    def __post_init__(self) -> None:
        self.params = [(n, p) for n, p in self.model.named_parameters() if p.requires_grad]
        tensors = [p for _, p in self.params]
        if self.optimizer == "adam":
            self.opt: torch.optim.Optimizer = torch.optim.Adam(tensors, lr=self.lr)
        else:
            self.opt = torch.optim.SGD(tensors, lr=self.lr, momentum=0.9)
        self.frozen: dict[str, Tensor] = {}
        if self.mask is not None:
            names = {n for n, _ in self.params}
            unknown = [n for n in self.mask if n not in names]
            if unknown:
                raise WeightspaceValueError(
                    f"the mask names {unknown[:5]}, which are not trainable parameters of the "
                    "model; build it from scores of this model"
                )
            self.frozen = {n: p.detach().clone() for n, p in self.params}

    def step(self, loss: Tensor) -> float:
        self.opt.zero_grad(set_to_none=True)
        loss.backward()  # type: ignore[no-untyped-call]
        if self.max_grad_norm is not None:
            nn.utils.clip_grad_norm_([p for _, p in self.params], self.max_grad_norm)
        if self.mask is not None:
            for n, p in self.params:
                if p.grad is not None:
                    m = self.mask.get(n)
                    if m is None:
                        p.grad.zero_()
                    else:
                        p.grad.mul_(m.to(p.grad.dtype))
        self.opt.step()
        if self.mask is not None:
            with torch.no_grad():
                for n, p in self.params:
                    m = self.mask.get(n)
                    keep = self.frozen[n] if m is None else torch.where(m, p, self.frozen[n])
                    p.copy_(keep)
        return float(loss.detach())


def masked_softmax_targets(logits: Tensor, drop: Tensor, temperature: float) -> Tensor:
    """Softmax of ``logits / temperature`` with the classes in ``drop`` removed (renormalised)."""
    z = logits / temperature
    if drop.numel():
        z = z.index_fill(1, drop, float("-inf"))
    return F.softmax(z, dim=1)


def kd_loss(student_logits: Tensor, target_probs: Tensor, temperature: float) -> Tensor:
    r"""Distillation loss :math:`T^2\,\mathrm{KL}(q \,\|\, \mathrm{softmax}(z / T))`, batch mean."""
    log_p = F.log_softmax(student_logits / temperature, dim=1)
    kl = (target_probs * (target_probs.clamp_min(1e-12).log() - log_p)).sum(1)
    return kl.mean() * temperature**2
