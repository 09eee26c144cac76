"""A uniform view of a model's tensors and modules, from an ``nn.Module`` or a state dict."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from weightspace.io import StateDictLike, as_state_dict, dtype_of, shape_of

__all__ = ["ModelIndex", "build_index"]


@dataclass(frozen=True)
class ModelIndex:
    """Names, shapes and module structure of one model.

    Attributes:
        params: Selectable tensor names, in registration / file order.
        shapes: ``name -> shape`` for every name of ``params``.
        modules: Module names in pre-order (without the root ``""``).
        types: ``module name -> module object`` (empty for state dicts).
        model: The module, or ``None`` for a state dict.
    """

    params: tuple[str, ...]
    shapes: Mapping[str, torch.Size]
    modules: tuple[str, ...]
    types: Mapping[str, nn.Module]
    model: nn.Module | None

    def owner(self, name: str) -> str:
        """Return the name of the module that holds tensor ``name`` (``""`` for the root)."""
        return name.rpartition(".")[0]

    def ancestors(self, name: str) -> list[str]:
        """Return the names of the modules that contain tensor ``name``, outermost first."""
        parts = name.split(".")[:-1]
        return [".".join(parts[: i + 1]) for i in range(len(parts))]

    def under(self, module: str) -> list[str]:
        """Return the tensor names held by ``module`` or its submodules (root: all)."""
        if not module:
            return list(self.params)
        prefix = module + "."
        return [p for p in self.params if p.startswith(prefix)]


def build_index(x: StateDictLike, *, argument: str, buffers: bool = False) -> ModelIndex:
    """Index a module (parameters, plus float buffers if asked) or a state dict (float tensors).

    Args:
        x: An ``nn.Module``, a mapping of tensors or a checkpoint path.
        argument: The argument's name, for error messages.
        buffers: For modules, also index floating-point buffers.

    Returns:
        The index.
    """
    if isinstance(x, nn.Module):
        names: list[str] = []
        shapes: dict[str, torch.Size] = {}
        for name, p in x.named_parameters():
            names.append(name)
            shapes[name] = p.shape
        if buffers:
            for name, b in x.named_buffers():
                if b.is_floating_point() and name not in shapes:
                    names.append(name)
                    shapes[name] = b.shape
        types = {name: m for name, m in x.named_modules() if name}
        return ModelIndex(tuple(names), shapes, tuple(types), types, x)
    sd: Mapping[str, Tensor] = as_state_dict(x, argument=argument)
    names = [n for n in sd if dtype_of(sd, n).is_floating_point]
    shapes = {n: shape_of(sd, n) for n in names}
    modules: dict[str, None] = {}
    for n in names:
        parts = n.split(".")[:-1]
        for i in range(len(parts)):
            modules.setdefault(".".join(parts[: i + 1]), None)
    return ModelIndex(tuple(names), shapes, tuple(modules), {}, None)
