"""Checkpoint and resume of :meth:`Trainer.fit` in one safetensors file (private)."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor

from weightspace._errors import WeightspaceValueError

if TYPE_CHECKING:
    from weightspace.train._trainer import Trainer

__all__ = ["Resumed", "load_checkpoint", "save_checkpoint"]

FORMAT = "weightspace.train.checkpoint/1"


@dataclass(frozen=True)
class Resumed:
    """What a checkpoint gives back to the loop: where to start, and the RNG states."""

    epoch: int
    losses: tuple[float, ...]
    rng_cpu: Tensor
    rng_cuda: Tensor | None

    def restore_rng(self, device: torch.device) -> None:
        """Put the saved RNG states back (CPU, and the model's CUDA device if saved)."""
        torch.set_rng_state(self.rng_cpu)
        if self.rng_cuda is not None and device.type == "cuda":
            torch.cuda.set_rng_state(self.rng_cuda, device)


def _cpu(t: Tensor) -> Tensor:
    return t.detach().to("cpu").contiguous().clone()


def save_checkpoint(
    trainer: Trainer, path: Path, *, epoch: int, losses: Sequence[float], batch_size: int
) -> None:
    """Write the model, the flattened optimiser state, the RNG state and the history."""
    if trainer.rank != 0:
        return
    from weightspace import io

    tensors: dict[str, Tensor] = {}
    for name, t in trainer.model.state_dict().items():
        tensors[f"model.{name}"] = _cpu(t)
    opt = trainer.optimizer.state_dict()
    scalars: dict[str, Any] = {}
    for idx, entries in opt["state"].items():
        for key, value in entries.items():
            if isinstance(value, Tensor):
                tensors[f"optimizer.state.{idx}.{key}"] = _cpu(value)
            else:
                scalars[f"{idx}.{key}"] = value
    tensors["rng.cpu"] = torch.get_rng_state()
    device = trainer.params[0][1].device
    if device.type == "cuda":
        tensors["rng.cuda"] = torch.cuda.get_rng_state(device)
    meta = {
        "format": FORMAT,
        "epoch": str(epoch),
        "steps": str(trainer.steps_),
        "seed": str(trainer.seed),
        "world_size": str(trainer.world_size),
        "batch_size": str(batch_size),
        "losses": json.dumps(list(losses)),
        "optimizer.param_groups": json.dumps(opt["param_groups"]),
        "optimizer.scalars": json.dumps(scalars),
        "optimizer.type": type(trainer.optimizer).__name__,
    }
    io.save_state_dict(tensors, path, metadata=meta, overwrite=True)


def _tuples(group: dict[str, Any]) -> dict[str, Any]:
    return {k: tuple(v) if k == "betas" and isinstance(v, list) else v for k, v in group.items()}


def load_checkpoint(trainer: Trainer, path: Path, *, batch_size: int, epochs: int) -> Resumed:
    """Load a checkpoint into ``trainer`` after checking that it is from the same run."""
    from weightspace import io

    with io.open_state_dict(path) as sd:
        meta = dict(sd.metadata)
        if meta.get("format") != FORMAT:
            raise WeightspaceValueError(
                f"`checkpoint` {str(path)!r} is not a checkpoint of Trainer.fit (format "
                f"{meta.get('format')!r}); pass another path or resume=False"
            )
        expected = {
            "seed": trainer.seed,
            "world_size": trainer.world_size,
            "batch_size": batch_size,
            "optimizer.type": type(trainer.optimizer).__name__,
        }
        for key, value in expected.items():
            if meta.get(key) != str(value):
                raise WeightspaceValueError(
                    f"`checkpoint` {str(path)!r} was written with {key}={meta.get(key)}, but this "
                    f"run has {key}={value}; resume with the same settings or start afresh "
                    "(resume=False)"
                )
        epoch = int(meta["epoch"])
        if epoch > epochs:
            raise WeightspaceValueError(
                f"`checkpoint` {str(path)!r} has done {epoch} epochs, more than `epochs`={epochs}"
            )
        tensors = {name: sd[name] for name in sd}
    model_state = {k[len("model.") :]: v for k, v in tensors.items() if k.startswith("model.")}
    trainer.model.load_state_dict(model_state)
    state: dict[int, dict[str, Any]] = {}
    for key, value in tensors.items():
        if key.startswith("optimizer.state."):
            idx, name = key[len("optimizer.state.") :].split(".", 1)
            state.setdefault(int(idx), {})[name] = value
    for key, value in json.loads(meta["optimizer.scalars"]).items():
        idx, name = key.split(".", 1)
        state.setdefault(int(idx), {})[name] = value
    groups = [_tuples(g) for g in json.loads(meta["optimizer.param_groups"])]
    trainer.optimizer.load_state_dict({"state": state, "param_groups": groups})
    trainer.steps_ = int(meta["steps"])
    return Resumed(
        epoch=epoch,
        losses=tuple(float(v) for v in json.loads(meta["losses"])),
        rng_cpu=tensors["rng.cpu"],
        rng_cuda=tensors.get("rng.cuda"),
    )
