"""Intermediate features of named submodules, through forward hooks (no model surgery)."""

from __future__ import annotations

from collections.abc import Iterable
from types import TracebackType
from typing import Any

from torch import Tensor, nn
from torch.utils.hooks import RemovableHandle

from weightspace._errors import WeightspaceValueError

__all__ = ["FeatureCapture", "resolve_module"]


def resolve_module(model: nn.Module, target: str, argument: str) -> str:
    """The one module of ``model`` that ``target`` names (exact name, dotted suffix or regex).

    Resolved with :func:`weightspace.select.modules`; an ambiguous or unknown name is an
    error naming ``argument``.
    """
    from weightspace import select

    if not isinstance(target, str):
        raise WeightspaceValueError(
            f"`{argument}` must be the name of a submodule, got {type(target).__name__}"
        )
    names = dict(model.named_modules())
    if target in names:
        return target
    try:
        found = select.modules(model, [target])  # a dotted suffix
    except WeightspaceValueError as err:
        try:
            found = select.modules(model, target)  # a full-match regex
        except WeightspaceValueError:
            raise WeightspaceValueError(f"`{argument}`={target!r}: {err}") from None
    found = tuple(n for n in found if n in names)
    if len(found) != 1:
        raise WeightspaceValueError(
            f"`{argument}`={target!r} must name one submodule, but it matches "
            f"{len(found)}: {list(found)[:5]}; give the full dotted name"
        )
    return found[0]


class FeatureCapture:
    r"""Record the outputs of chosen submodules while a model runs (a context manager).

    Forward hooks are registered on entry and removed on exit, so the model is not changed.
    The modules are chosen with :func:`weightspace.select.modules`' grammar (a list of exact
    names or dotted suffixes, a full-match regex, or a :class:`~weightspace.select.Selector`),
    so ``["layer2"]`` and ``r"blocks\.\d+"`` both work. A module that returns a tuple is
    recorded by its first element.

    Args:
        model: The network.
        targets: Which submodules, in :func:`weightspace.select.modules`' grammar; or
            ``None`` / an empty list for none.
        detach: Record detached tensors (for a teacher; a student's features keep their
            graph so that losses on them train it).

    Attributes:
        names: The resolved module names, in registration order.
        features: ``name -> output`` of the last forward pass inside the ``with`` block.

    Raises:
        WeightspaceValueError: if ``targets`` matches no module (with the closest names), or a
            chosen module returns something other than a tensor or a tuple starting with one.

    Example:
        >>> import torch
        >>> from torch import nn
        >>> from weightspace import distill
        >>> net = nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Linear(4, 2))
        >>> with distill.FeatureCapture(net, ["0", "1"]) as cap:
        ...     out = net(torch.ones(5, 3))
        >>> cap.names, tuple(cap.features["1"].shape)
        (('0', '1'), (5, 4))
        >>> len(net._forward_hooks) + len(net[0]._forward_hooks)  # removed on exit
        0
    """

    def __init__(self, model: nn.Module, targets: Any, *, detach: bool = False) -> None:
        from weightspace import select

        if not isinstance(model, nn.Module):
            raise WeightspaceValueError(f"`model` must be an nn.Module, got {type(model).__name__}")
        self.model = model
        self.detach = detach
        if targets is None or (isinstance(targets, (list, tuple)) and not targets):
            self.names: tuple[str, ...] = ()
        else:
            modules = dict(model.named_modules())
            exact = (
                isinstance(targets, (list, tuple))
                and all(isinstance(t, str) for t in targets)
                and all(t in modules for t in targets)
            )
            if exact:
                self.names = tuple(dict.fromkeys(targets))
            else:
                self.names = tuple(n for n in select.modules(model, targets) if n in modules)
        self.features: dict[str, Tensor] = {}
        self._handles: list[RemovableHandle] = []

    def _hook(self, name: str) -> Any:
        def hook(module: nn.Module, inputs: Any, output: Any) -> None:
            value = output[0] if isinstance(output, (tuple, list)) and output else output
            if not isinstance(value, Tensor):
                raise WeightspaceValueError(
                    f"submodule {name!r} returned {type(output).__name__}; features must be "
                    "tensors (or tuples whose first element is one): choose another module"
                )
            self.features[name] = value.detach() if self.detach else value

        return hook

    def __enter__(self) -> FeatureCapture:
        self.features = {}
        modules = dict(self.model.named_modules())
        for name in self.names:
            self._handles.append(modules[name].register_forward_hook(self._hook(name)))
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles = []


def union(names: Iterable[tuple[str, ...]]) -> tuple[str, ...]:
    """The names of several terms, each once, in first-seen order."""
    return tuple(dict.fromkeys(n for group in names for n in group))
