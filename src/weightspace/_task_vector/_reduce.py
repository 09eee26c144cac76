"""Reductions of task vectors: inner products, norms, cosines, statistics and comparisons.

Every reduction reads one tensor at a time and accumulates in float64.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch

from weightspace._errors import WeightspaceValueError
from weightspace._task_vector._base import VectorBase, _aligned_names, _require_vector

if TYPE_CHECKING:
    from weightspace._task_vector._vector import TaskVector

__all__ = ["LayerStats", "Reductions"]


@dataclass(frozen=True)
class LayerStats:
    """Statistics of one tensor of a task vector (see :meth:`TaskVector.stats`).

    Attributes:
        name: The tensor's name.
        numel: Number of entries.
        norm: L2 (Frobenius) norm, accumulated in float64.
        mean_abs: Mean of the absolute values.
        max_abs: Largest absolute value.
        zero_fraction: Fraction of entries exactly equal to zero.

    Example:
        >>> import torch
        >>> from weightspace import TaskVector
        >>> TaskVector({"w": torch.tensor([3.0, 0.0, -4.0])}).stats()["w"].norm
        5.0
    """

    name: str
    numel: int
    norm: float
    mean_abs: float
    max_abs: float
    zero_fraction: float


class Reductions(VectorBase):
    """The reductions of :class:`~weightspace.TaskVector` (a mixin; see there)."""

    __slots__ = ()

    def dot(self, other: TaskVector) -> float:
        r"""Return the inner product :math:`\langle\tau_a, \tau_b\rangle` over all entries.

        Accumulated in float64, one key at a time.

        Args:
            other: A task vector with the same keys and shapes.

        Returns:
            The inner product as a Python float.

        Raises:
            ShapeMismatchError: if keys or shapes differ.

        Example:
            >>> import torch
            >>> from weightspace import TaskVector
            >>> a = TaskVector({"w": torch.tensor([1.0, 2.0])})
            >>> a.dot(a)
            5.0
        """
        _require_vector(other, "other")
        names = _aligned_names((self, other), "strict", what="vectors")
        total = 0.0
        for name in names:
            total += float((self[name].double() * other[name].double().to(self[name].device)).sum())
        return total

    def norm(self) -> float:
        r"""Return the L2 norm :math:`\|\tau\|_2` over all entries, accumulated in float64.

        Returns:
            The norm as a Python float.

        Example:
            >>> import torch
            >>> from weightspace import TaskVector
            >>> TaskVector({"a": torch.tensor([3.0]), "b": torch.tensor([4.0])}).norm()
            5.0
        """
        total = 0.0
        for name in self:
            t = self[name].double()
            total += float((t * t).sum())
        return math.sqrt(total)

    def cosine(self, other: TaskVector) -> float:
        r"""Return the cosine similarity :math:`\langle a, b\rangle / (\|a\|\,\|b\|)`.

        Each tensor of both vectors is read once; accumulation is in float64.

        Args:
            other: A task vector with the same keys and shapes.

        Returns:
            The cosine similarity in ``[-1, 1]``.

        Raises:
            ShapeMismatchError: if keys or shapes differ.
            WeightspaceValueError: if either vector is zero.

        Example:
            >>> import torch
            >>> from weightspace import TaskVector
            >>> a = TaskVector({"w": torch.tensor([1.0, 0.0])})
            >>> b = TaskVector({"w": torch.tensor([1.0, 1.0])})
            >>> round(a.cosine(b), 6)
            0.707107
        """
        _require_vector(other, "other")
        names = _aligned_names((self, other), "strict", what="vectors")
        dot = aa = bb = 0.0
        for name in names:
            a = self[name].double()
            b = other[name].double().to(a.device)
            dot += float((a * b).sum())
            aa += float((a * a).sum())
            bb += float((b * b).sum())
        if aa == 0.0 or bb == 0.0:
            which = "`self`" if aa == 0.0 else "`other`"
            raise WeightspaceValueError(
                f"the cosine similarity is undefined: {which} is the zero vector"
            )
        return max(-1.0, min(1.0, dot / (math.sqrt(aa) * math.sqrt(bb))))

    def stats(self) -> dict[str, LayerStats]:
        """Return per-tensor statistics (norm, mean and max absolute value, zero fraction).

        Returns:
            Mapping ``name -> LayerStats`` in the vector's order.

        Example:
            >>> import torch
            >>> from weightspace import TaskVector
            >>> s = TaskVector({"w": torch.tensor([0.0, -2.0])}).stats()["w"]
            >>> (s.numel, s.max_abs, s.zero_fraction)
            (2, 2.0, 0.5)
        """
        result: dict[str, LayerStats] = {}
        for name in self:
            t = self[name].double()
            n = t.numel()
            a = t.abs()
            result[name] = LayerStats(
                name=name,
                numel=n,
                norm=float(torch.sqrt((t * t).sum())),
                mean_abs=float(a.mean()) if n else 0.0,
                max_abs=float(a.max()) if n else 0.0,
                zero_fraction=float((t == 0).sum()) / n if n else 0.0,
            )
        return result

    def equal(self, other: TaskVector) -> bool:
        """Return whether both vectors hold the same keys and bit-identical values.

        Args:
            other: Another task vector.

        Returns:
            ``True`` if keys, shapes and values are equal.

        Example:
            >>> import torch
            >>> from weightspace import TaskVector
            >>> a = TaskVector({"w": torch.ones(2)})
            >>> a.equal(-(-a))
            True
        """
        _require_vector(other, "other")
        if set(self) != set(other):
            return False
        return all(torch.equal(self[n], other[n].to(self._dtype)) for n in self)

    def allclose(self, other: TaskVector, *, rtol: float = 1e-5, atol: float = 1e-8) -> bool:
        """Return whether both vectors hold the same keys and values within tolerances.

        Args:
            other: Another task vector.
            rtol: Relative tolerance (as in :func:`torch.allclose`).
            atol: Absolute tolerance.

        Returns:
            ``True`` if keys match and every pair of tensors is close.

        Example:
            >>> import torch
            >>> from weightspace import TaskVector
            >>> a = TaskVector({"w": torch.tensor([0.1, 0.2])})
            >>> ((a + a) - a).allclose(a)
            True
        """
        _require_vector(other, "other")
        if set(self) != set(other):
            return False
        return all(
            self.shape(n) == other.shape(n)
            and torch.allclose(self[n].double(), other[n].double(), rtol=rtol, atol=atol)
            for n in self
        )
