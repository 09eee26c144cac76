"""Permutations of hidden units: apply, invert, compose."""

from __future__ import annotations

import copy
import os
from collections.abc import Iterator, Mapping
from typing import Any, TypeVar, overload

import torch
from torch import Tensor, nn

from weightspace._errors import ShapeMismatchError, WeightspaceValueError
from weightspace.align._spec import PermutationSpec, expand_index
from weightspace.io import StateDictLike, as_state_dict

__all__ = ["Permutation", "permute"]

M = TypeVar("M", bound=nn.Module)


def _as_perm(group: str, value: Any) -> Tensor:
    t = torch.as_tensor(value)
    if t.ndim != 1 or t.dtype not in (torch.int64, torch.int32, torch.int16, torch.uint8):
        raise WeightspaceValueError(
            f"`perms[{group!r}]` must be a 1-D integer tensor, got {t.dtype} of shape "
            f"{list(t.shape)}; pass e.g. torch.randperm(n)"
        )
    t = t.to(torch.int64, copy=True).cpu()
    n = len(t)
    if n == 0 or not torch.equal(torch.sort(t).values, torch.arange(n)):
        raise WeightspaceValueError(
            f"`perms[{group!r}]` must hold each of 0..{n - 1} exactly once, got "
            f"{t[:10].tolist()}{' ...' if n > 10 else ''}"
        )
    return t


class Permutation(Mapping[str, Tensor]):
    """A permutation of the units of every group: a mapping group -> index tensor.

    ``perm[g][i] = j`` means that unit ``i`` of the permuted network is unit ``j`` of the
    original one: :meth:`apply` takes ``index_select(axis, perm[g])`` along every axis the
    group moves, so a permuted state dict is exact (bit for bit) and computes the same function
    as the original. Permutations are immutable; every operation returns a new one.

    Composition reads like function composition: ``(p @ q).apply(spec, sd)`` equals
    ``p.apply(spec, q.apply(spec, sd))``.

    Args:
        perms: Group -> 1-D integer tensor holding each of ``0 .. n-1`` once.

    Raises:
        WeightspaceValueError: if a value is not a permutation.

    Example:
        >>> import torch
        >>> p = Permutation({"h": torch.tensor([2, 0, 1])})
        >>> p.inverse()["h"].tolist()
        [1, 2, 0]
        >>> (p @ p.inverse()).is_identity()
        True
    """

    __slots__ = ("_perms",)

    def __init__(self, perms: Mapping[str, Any]) -> None:
        if not isinstance(perms, Mapping):
            raise WeightspaceValueError(
                f"`perms` must map group names to index tensors, got {type(perms).__name__}"
            )
        self._perms: dict[str, Tensor] = {str(g): _as_perm(str(g), p) for g, p in perms.items()}

    # Mapping protocol -------------------------------------------------------------------------

    def __getitem__(self, group: str) -> Tensor:
        return self._perms[group]

    def __iter__(self) -> Iterator[str]:
        return iter(self._perms)

    def __len__(self) -> int:
        return len(self._perms)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Permutation):
            return NotImplemented
        return self._perms.keys() == other._perms.keys() and all(
            torch.equal(p, other._perms[g]) for g, p in self._perms.items()
        )

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        sizes = ", ".join(f"{g!r}: {len(p)}" for g, p in self._perms.items())
        return f"Permutation({{{sizes}}})"

    # constructors -----------------------------------------------------------------------------

    @classmethod
    def identity(cls, sizes: PermutationSpec | Mapping[str, int]) -> Permutation:
        """The permutation that changes nothing.

        Args:
            sizes: Group -> number of units, or a spec whose :attr:`~PermutationSpec.sizes`
                are known (as derived by :func:`permutation_spec`; for a hand-written spec
                use ``spec.check(state_dict)``).

        Example:
            >>> Permutation.identity({"h": 3})["h"].tolist()
            [0, 1, 2]
        """
        return cls({g: torch.arange(n) for g, n in _sizes(sizes).items()})

    @classmethod
    def random(cls, sizes: PermutationSpec | Mapping[str, int], *, seed: int = 0) -> Permutation:
        """A uniformly random permutation of every group, reproducible from ``seed``.

        Args:
            sizes: Group -> number of units, or a spec with known sizes.
            seed: Seed of the random generator.

        Example:
            >>> p = Permutation.random({"h": 5}, seed=1)
            >>> sorted(p["h"].tolist())
            [0, 1, 2, 3, 4]
        """
        gen = torch.Generator().manual_seed(seed)
        return cls({g: torch.randperm(n, generator=gen) for g, n in _sizes(sizes).items()})

    # algebra ----------------------------------------------------------------------------------

    @property
    def sizes(self) -> dict[str, int]:
        """Group -> number of units."""
        return {g: len(p) for g, p in self._perms.items()}

    def inverse(self) -> Permutation:
        """The permutation that undoes this one.

        ``p.inverse().apply(spec, p.apply(spec, sd))`` gives ``sd`` back.

        Example:
            >>> import torch
            >>> Permutation({"h": torch.tensor([1, 2, 0])}).inverse()["h"].tolist()
            [2, 0, 1]
        """
        return Permutation({g: torch.argsort(p) for g, p in self._perms.items()})

    def compose(self, other: Permutation) -> Permutation:
        """Return ``self @ other``: apply ``other`` first, then ``self``.

        A group missing from one side counts as the identity there.

        Raises:
            ShapeMismatchError: if a group has different sizes in the two permutations.

        Example:
            >>> import torch
            >>> p = Permutation({"h": torch.tensor([1, 2, 0])})
            >>> p.compose(p)["h"].tolist()
            [2, 0, 1]
        """
        if not isinstance(other, Permutation):
            raise WeightspaceValueError(
                f"`other` must be a Permutation, got {type(other).__name__}"
            )
        out: dict[str, Tensor] = {}
        for g in [*self._perms, *(g for g in other._perms if g not in self._perms)]:
            a, b = self._perms.get(g), other._perms.get(g)
            if a is not None and b is not None:
                if len(a) != len(b):
                    raise ShapeMismatchError(
                        f"group {g!r} has {len(a)} units in `self` but {len(b)} in `other`; "
                        "compose permutations of the same architecture"
                    )
                out[g] = b[a]
            else:
                out[g] = a if a is not None else b  # type: ignore[assignment]
        return Permutation(out)

    def __matmul__(self, other: Permutation) -> Permutation:
        return self.compose(other)

    def is_identity(self) -> bool:
        """Whether every group is left in place.

        Example:
            >>> Permutation.identity({"h": 4}).is_identity()
            True
        """
        return all(torch.equal(p, torch.arange(len(p))) for p in self._perms.values())

    # applying ---------------------------------------------------------------------------------

    def apply(self, spec: PermutationSpec, state_dict: StateDictLike) -> dict[str, Tensor]:
        """Return a new state dict with the units of every group reordered.

        Nothing is mutated: permuted tensors are new, the others are the same tensor objects
        in a new dict. Groups of the spec that this permutation does not hold stay in place.

        Args:
            spec: Which axes each group moves.
            state_dict: The tensors to permute: a state dict, a module or a checkpoint path
                (see :func:`weightspace.io.as_state_dict`).

        Returns:
            The permuted state dict, with the keys of ``state_dict`` in the same order.

        Raises:
            ShapeMismatchError: if ``state_dict`` does not fit ``spec`` or a group has another
                size here; the message names the tensor.
            WeightspaceValueError: if this permutation holds a group the spec does not know.

        Example:
            >>> import torch
            >>> spec = PermutationSpec({"w1": ("h", None), "w2": (None, "h")})
            >>> sd = {"w1": torch.tensor([[1.0], [2.0]]), "w2": torch.tensor([[3.0, 4.0]])}
            >>> out = Permutation({"h": torch.tensor([1, 0])}).apply(spec, sd)
            >>> out["w1"].flatten().tolist(), out["w2"].flatten().tolist()
            ([2.0, 1.0], [4.0, 3.0])
        """
        if not isinstance(spec, PermutationSpec):
            raise WeightspaceValueError(
                f"`spec` must be a PermutationSpec, got {type(spec).__name__}; build one with "
                "`align.permutation_spec(model, example_input)`"
            )
        sd = as_state_dict(state_dict, argument="state_dict")
        sizes = spec.check(sd)
        unknown = [g for g in self._perms if g not in sizes]
        if unknown:
            raise WeightspaceValueError(
                f"the permutation holds groups {unknown} that `spec` does not know (its groups: "
                f"{list(spec.groups)}); use the spec the permutation was computed with"
            )
        for g, p in self._perms.items():
            if len(p) != sizes[g]:
                ref = spec.group_axes[g][0]
                raise ShapeMismatchError(
                    f"group {g!r} has {sizes[g]} units in `state_dict` (axis {ref.axis} of "
                    f"{ref.key!r}) but the permutation has {len(p)}"
                )
        return {key: self._permute_tensor(spec, key, t) for key, t in sd.items()}

    def _permute_tensor(self, spec: PermutationSpec, key: str, t: Tensor) -> Tensor:
        entries = spec.axes.get(key)
        if entries is None:
            return t
        out = t
        for dim, axis in enumerate(entries):
            if axis is None or axis.group not in self._perms:
                continue
            index = expand_index(self._perms[axis.group], axis.repeat).to(t.device)
            out = out.index_select(dim, index)
        return out if out is not t else t


@overload
def permute(model_or_state: M, spec: PermutationSpec, perm: Permutation) -> M: ...


@overload
def permute(
    model_or_state: Mapping[str, Tensor] | str | os.PathLike[str],
    spec: PermutationSpec,
    perm: Permutation,
) -> dict[str, Tensor]: ...


def permute(
    model_or_state: StateDictLike, spec: PermutationSpec, perm: Permutation
) -> nn.Module | dict[str, Tensor]:
    """Return a permuted copy of a model or a state dict (the input is not changed).

    Args:
        model_or_state: A module (a deep copy with permuted weights is returned), a state
            dict or a checkpoint path (a new state dict is returned).
        spec: Which axes each group moves.
        perm: The permutation.

    Returns:
        A new module or state dict computing the same function as the input.

    Example:
        >>> import torch
        >>> from torch import nn
        >>> net = nn.Sequential(nn.Linear(3, 5), nn.ReLU(), nn.Linear(5, 2))
        >>> spec = PermutationSpec({"0.weight": ("h", None), "0.bias": ("h",),
        ...                         "2.weight": (None, "h")})
        >>> other = permute(net, spec, Permutation.random({"h": 5}, seed=0))
        >>> x = torch.randn(4, 3)
        >>> torch.allclose(net(x), other(x), atol=1e-6)
        True
    """
    if not isinstance(perm, Permutation):
        raise WeightspaceValueError(
            f"`perm` must be a Permutation, got {type(perm).__name__}; build one with "
            "`Permutation(...)`, `weight_matching` or `activation_matching`"
        )
    if isinstance(model_or_state, nn.Module):
        new = perm.apply(spec, model_or_state.state_dict())
        clone = copy.deepcopy(model_or_state)
        clone.load_state_dict(new)
        return clone
    return perm.apply(spec, as_state_dict(model_or_state, argument="model_or_state"))


def _sizes(sizes: PermutationSpec | Mapping[str, int]) -> dict[str, int]:
    if isinstance(sizes, PermutationSpec):
        missing = [g for g in sizes.groups if g not in sizes.sizes]
        if missing:
            raise WeightspaceValueError(
                f"the sizes of groups {missing} are unknown to this spec; pass "
                "`spec.check(state_dict)` (group -> size) instead"
            )
        return dict(sizes.sizes)
    if not isinstance(sizes, Mapping):
        raise WeightspaceValueError(
            f"`sizes` must be a PermutationSpec or a mapping group -> size, got "
            f"{type(sizes).__name__}"
        )
    for g, n in sizes.items():
        if isinstance(n, bool) or not isinstance(n, int) or n < 1:
            raise WeightspaceValueError(f"`sizes[{g!r}]` must be a positive integer, got {n!r}")
    return dict(sizes)
