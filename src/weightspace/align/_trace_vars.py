"""Union-find over the axis variables of a traced forward pass (private to ``align``).

Every parameter axis (and every axis an operation creates) starts as its own *variable*.
Variables are joined in a union-find whose links carry a block factor: a unit of the parent
spans ``factor`` entries of the child, which is how a convolution channel becomes a block of
``H * W`` features after a flatten. A class of variables is *fixed* as soon as one operation is
not known to commute with a permutation of it, and *active* once it labels an activation.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

from torch import Tensor

__all__ = ["AxisVars", "Label", "Labels", "tensors_in"]

Label = tuple[int, int] | None  # (variable, repeat) or None: an axis that is never permuted
Labels = tuple[Label, ...]


class AxisVars:
    """Union-find of axis variables; ``v`` is ``expand(parent[v], factor[v])``."""

    def __init__(self) -> None:
        self.parent: list[int] = []
        self.factor: list[int] = []
        self.units: list[int] = []
        self.fixed: list[bool] = []
        self.active: list[bool] = []
        self.reasons: list[str] = []

    def new(self, units: int) -> int:
        v = len(self.parent)
        self.parent.append(v)
        self.factor.append(1)
        self.units.append(units)
        self.fixed.append(False)
        self.active.append(False)
        return v

    def find(self, v: int) -> tuple[int, int]:
        path = []
        while self.parent[v] != v:
            path.append(v)
            v = self.parent[v]
        root, acc = v, 1
        for node in reversed(path):
            acc *= self.factor[node]
            self.factor[node] = acc
            self.parent[node] = root
        return root, (self.factor[path[0]] if path else 1)

    def resolve(self, label: Label) -> tuple[int, int] | None:
        if label is None:
            return None
        root, f = self.find(label[0])
        return root, f * label[1]

    def fix(self, label: Label, reason: str) -> None:
        r = self.resolve(label)
        if r is not None and not self.fixed[r[0]]:
            self.fixed[r[0]] = True
            self.reasons.append(reason)

    def activate(self, label: Label) -> None:
        r = self.resolve(label)
        if r is not None:
            self.active[r[0]] = True

    def _link(self, child: int, parent: int, k: int, reason: str) -> None:
        if self.units[child] != self.units[parent] * k:
            self.fixed[child] = self.fixed[parent] = True
            self.reasons.append(f"inconsistent sizes: {reason}")
        self.parent[child] = parent
        self.factor[child] = k
        self.fixed[parent] = self.fixed[parent] or self.fixed[child]
        self.active[parent] = self.active[parent] or self.active[child]

    def unify(self, a: Label, size_a: int, b: Label, size_b: int, reason: str) -> Label:
        """Tie two axes of equal length (or broadcast one of length 1); return the result."""
        if size_a == 1:
            return b
        if size_b == 1:
            return a
        if a is None and b is None:
            return None
        if a is None or b is None:
            self.fix(a if b is None else b, reason)
            return None
        ra, rb = self.resolve(a), self.resolve(b)
        assert ra is not None
        assert rb is not None
        (ka, x), (kb, y) = ra, rb
        if ka == kb:
            if x != y:
                self.fix(a, reason)
                return None
            return a
        if x == y:
            self._link(kb, ka, 1, reason)
        elif x > y and x % y == 0:
            self._link(kb, ka, x // y, reason)
        elif y > x and y % x == 0:
            self._link(ka, kb, y // x, reason)
        else:
            self.fix(a, reason)
            self.fix(b, reason)
            return None
        return a


def tensors_in(obj: Any) -> Iterator[Tensor]:
    """Every tensor in ``obj`` (nested lists, tuples and mapping values), depth first."""
    if isinstance(obj, Tensor):
        yield obj
    elif isinstance(obj, (list, tuple)):
        for o in obj:
            yield from tensors_in(o)
    elif isinstance(obj, Mapping):
        for o in obj.values():
            yield from tensors_in(o)
