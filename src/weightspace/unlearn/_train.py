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

    def __init__(
        self,
        x: Tensor,
        y: Tensor,
        batch_size: int,
        generator: torch.Generator,
        rank: int = 0,
        world: int = 1,
    ):
        self.x, self.y = x, y
        self.batch_size = batch_size
        self.generator = generator
        self.rank, self.world = rank, world
        self._perm: Tensor | None = None
        self._pos = 0

    def __len__(self) -> int:
        return int(self.x.shape[0])

    @property
    def steps_per_epoch(self) -> int:
        return max(1, math.ceil(len(self) / (self.batch_size * self.world)))

    def next(self) -> tuple[Tensor, Tensor]:
        """The next batch; with ``world`` ranks, this rank's share of the next global batch.

        Every rank draws the same permutation (same seed); a global batch of
        ``batch_size * world`` indices is dealt out round-robin, so the ranks' batches together
        are the batch one process with ``batch_size * world`` would read.
        """
        n = len(self)
        if self._perm is None or self._pos >= n:
            self._perm = torch.randperm(n, generator=self.generator)
            self._pos = 0
        step = self.batch_size * self.world
        idx = self._perm[self._pos : self._pos + step][self.rank :: self.world]
        self._pos += step
        if idx.numel() == 0:  # a last global batch smaller than the world: reuse its head
            idx = self._perm[self._pos - step : self._pos][:1]
        return self.x[idx], self.y[idx]


@dataclass
class Trainer:
    """One optimiser over a model's trainable parameters, optionally restricted by a mask."""

    model: nn.Module
    optimizer: str
    lr: float
    mask: Mapping[str, Tensor] | None = None
    max_grad_norm: float | None = None
    world: int = 1

    def __post_init__(self) -> None:
        self.params = [(n, p) for n, p in self.model.named_parameters() if p.requires_grad]
        if self.world > 1:
            import torch.distributed as dist

            with torch.no_grad():  # every rank starts from rank 0's weights
                for _, p in self.params:
                    dist.broadcast(p.data, src=0)
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
        value = loss.detach().double()
        if self.world > 1:
            value = self._average_across_ranks(value)
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
        return float(value)

    def _average_across_ranks(self, value: Tensor) -> Tensor:
        """All-reduce the gradients (mean, as DDP does) and the loss, in one flat buffer."""
        import torch.distributed as dist

        grads = [p.grad if p.grad is not None else torch.zeros_like(p) for _, p in self.params]
        flat = torch.cat([g.reshape(-1).double() for g in grads] + [value.reshape(1)])
        dist.all_reduce(flat)
        flat /= self.world
        offset = 0
        for (_, p), g in zip(self.params, grads, strict=True):
            k = g.numel()
            p.grad = flat[offset : offset + k].view_as(p).to(p.dtype)
            offset += k
        return flat[-1]


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
