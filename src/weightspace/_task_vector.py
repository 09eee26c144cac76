r"""Task vectors: immutable, lazily evaluated mappings ``name -> delta tensor``.

A task vector is the difference between the weights of a fine-tuned model and those of the
model it was fine-tuned from (Ilharco et al., "Editing Models with Task Arithmetic", ICLR 2023,
`arXiv:2212.04089 <https://arxiv.org/abs/2212.04089>`_):

.. math::

    \tau = \theta_{\mathrm{ft}} - \theta_{\mathrm{base}}, \qquad
    \theta_{\mathrm{new}} = \theta_{\mathrm{base}} + \lambda \sum_i \tau_i .

Laziness and memory
-------------------
A value may be a tensor or a zero-argument callable that computes it. Callables are evaluated on
every ``__getitem__`` and **not cached**, so that a vector built over two checkpoints that do
not fit in memory only ever holds the tensors currently in use. Operations (``+``, ``*``,
:meth:`TaskVector.map`, ...) build new lazy vectors and compute nothing; reductions
(:meth:`TaskVector.norm`, :meth:`TaskVector.dot`, ...) and :meth:`TaskVector.apply_to` read one
key at a time. Call :meth:`TaskVector.materialize` to compute every value once and keep it.

References, not copies
----------------------
A vector built with :meth:`TaskVector.from_models` from ``nn.Module`` objects or in-memory state
dicts holds references to their tensors: if those tensors are later changed in place, the vector
changes with them. :meth:`TaskVector.materialize` takes a snapshot.

Exactness
---------
For a vector built directly from two models, ``tv.apply_to(base, scale=1.0)`` reproduces the
fine-tuned weights bit for bit. This cannot be obtained by plain arithmetic: neither
``b + (f - b)`` in float32 nor the same sum in float64 (then rounded once to float32) is always
``f``. In float64, ``f - b`` is exact only when the binary exponents of ``f`` and ``b`` differ
by at most 28; for instance with ``b = 0.7315437`` and ``f = 1.4086391e-11`` (float32), the
float64 route returns ``1.4086399e-11``. Such pairs do occur (a weight that crosses zero).
The vector therefore keeps a reference to the fine-tuned and base tensors of every key it
built with :meth:`TaskVector.from_models`; at scale 1, every element of the target whose value
equals the original base element is replaced by the fine-tuned element itself, which is exact
by construction, and the remaining elements use the arithmetic route. Operations that do not
change values (``tv * 1``, :meth:`~TaskVector.restrict`, :meth:`~TaskVector.transfer`,
:meth:`~TaskVector.intersection`) keep those references; all others drop them.

Buffers
-------
Floating-point buffers (such as BatchNorm ``running_mean`` / ``running_var``) are part of a
state dict and are treated as any other floating-point tensor: they get a delta and are scaled
like weights. Integer tensors (``num_batches_tracked``, counters) are never scaled: they are
left out of the vector, and :meth:`TaskVector.apply_to` copies them from the base (or from the
fine-tuned model with ``integer="finetuned"`` in :meth:`TaskVector.from_models`).
"""

from __future__ import annotations

import copy
import math
import os
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, Literal, TypeVar, overload

import torch
from torch import Tensor, nn

from weightspace._errors import ShapeMismatchError, WeightspaceValueError
from weightspace.io import StateDictLike, as_state_dict, dtype_of, shape_of

if TYPE_CHECKING:
    from weightspace._lora import LoraAdapter, LowRankTaskVector
    from weightspace.select._selection import Selection

__all__ = ["LayerStats", "TaskVector"]

KeysMode = Literal["strict", "intersection", "union"]
_Value = Tensor | Callable[[], Tensor]
_ModuleT = TypeVar("_ModuleT", bound=nn.Module)

_REPR_NORM_MAX_NUMEL = 10_000_000


# --------------------------------------------------------------------------------------------
# State-dict-likes
# --------------------------------------------------------------------------------------------


def _fmt_names(names: Sequence[str], limit: int = 8) -> str:
    shown = list(names[:limit])
    more = f" and {len(names) - limit} more" if len(names) > limit else ""
    return f"{shown}{more}"


def _check_finite(tensor: Tensor, what: str) -> None:
    if not tensor.is_floating_point():
        return
    # Fast path (a vectorised reduction, about 20x faster than `isfinite(t).all()`): NaN and
    # infinities propagate through a sum, so a finite sum proves every entry finite. Only a
    # sum that is not finite (a bad entry, or an overflow of finite entries) takes the exact
    # test below.
    if bool(torch.isfinite(tensor.sum())):
        return
    if not bool(torch.isfinite(tensor).all()):
        bad = int((~torch.isfinite(tensor)).sum())
        raise WeightspaceValueError(
            f"{what} contains {bad} non-finite value(s) (nan or inf) out of {tensor.numel()}; "
            "task vectors need finite weights: fix or drop that tensor first"
        )


def _check_scalar(value: object, what: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        if isinstance(value, Tensor) and value.numel() == 1:
            value = float(value.item())
        else:
            raise WeightspaceValueError(f"{what} must be a real number, got {value!r}")
    result = float(value)
    if not math.isfinite(result):
        raise WeightspaceValueError(f"{what} must be finite, got {result}")
    return result


def _accumulation_dtype(*dtypes: torch.dtype) -> torch.dtype:
    return torch.float64 if torch.float64 in dtypes else torch.float32


# --------------------------------------------------------------------------------------------
# Lazy values (module-level classes, so that no closure captures a loop variable)
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Diff:
    """``finetuned[name] - base[name]``, read on call; keeps its sources for exact apply."""

    finetuned: Mapping[str, Tensor]
    base: Mapping[str, Tensor]
    name: str
    dtype: torch.dtype

    def sources(self) -> tuple[Tensor, Tensor]:
        f = self.finetuned[self.name]
        b = self.base[self.name]
        _check_finite(f, f"`finetuned[{self.name!r}]`")
        _check_finite(b, f"`base[{self.name!r}]`")
        if f.shape != b.shape:
            raise ShapeMismatchError(
                f"`finetuned[{self.name!r}]` has shape {tuple(f.shape)} but `base[{self.name!r}]` "
                f"has shape {tuple(b.shape)}; they must match"
            )
        return f, b.to(f.device)

    def __call__(self) -> Tensor:
        f, b = self.sources()
        return f.to(self.dtype) - b.to(self.dtype)


@dataclass(frozen=True)
class _Get:
    mapping: Mapping[str, Tensor]
    name: str

    def __call__(self) -> Tensor:
        return self.mapping[self.name]


@dataclass(frozen=True)
class _Checked:
    """A user-supplied callable, validated (tensor, floating, finite) on every call."""

    fn: Callable[[], Tensor]
    name: str

    def __call__(self) -> Tensor:
        value = self.fn()
        if not isinstance(value, Tensor):
            raise WeightspaceValueError(
                f"the callable for `deltas[{self.name!r}]` must return a Tensor, "
                f"got {type(value).__name__}"
            )
        if not value.is_floating_point():
            raise WeightspaceValueError(
                f"`deltas[{self.name!r}]` must be a floating-point tensor, got {value.dtype}"
            )
        _check_finite(value, f"`deltas[{self.name!r}]`")
        return value


@dataclass(frozen=True)
class _Unary:
    fn: Callable[[str, Tensor], Tensor]
    vector: TaskVector
    name: str

    def __call__(self) -> Tensor:
        return self.fn(self.name, self.vector[self.name])


@dataclass(frozen=True)
class _Many:
    fn: Callable[[str, list[Tensor]], Tensor]
    vectors: tuple[TaskVector, ...]
    name: str

    def __call__(self) -> Tensor:
        return self.fn(self.name, [v[self.name] for v in self.vectors if self.name in v])


@dataclass(frozen=True)
class _Zeros:
    shape: torch.Size
    dtype: torch.dtype

    def __call__(self) -> Tensor:
        return torch.zeros(self.shape, dtype=self.dtype)


def _neg(_: str, t: Tensor) -> Tensor:
    return -t


@dataclass(frozen=True)
class _Scale:
    k: float

    def __call__(self, _: str, t: Tensor) -> Tensor:
        return t * self.k


@dataclass(frozen=True)
class _Div:
    k: float

    def __call__(self, _: str, t: Tensor) -> Tensor:
        return t / self.k


@dataclass(frozen=True)
class _Mask:
    mask: Mapping[str, Tensor]

    def __call__(self, name: str, t: Tensor) -> Tensor:
        m = self.mask[name]
        if m.dtype != torch.bool:
            raise WeightspaceValueError(
                f"`mask[{name!r}]` must be a bool tensor, got {m.dtype}; for an elementwise "
                "product with real values use `tv.map(lambda name, t: t * other[name])`"
            )
        if m.shape != t.shape:
            raise ShapeMismatchError(
                f"`mask[{name!r}]` has shape {tuple(m.shape)} but the vector's tensor has shape "
                f"{tuple(t.shape)}"
            )
        return torch.where(m.to(t.device), t, torch.zeros((), dtype=t.dtype, device=t.device))


def _add(_: str, ts: list[Tensor]) -> Tensor:
    if len(ts) == 1:
        return ts[0]
    return ts[0] + ts[1]


def _sub_union(a: TaskVector, b: TaskVector) -> Callable[[str, list[Tensor]], Tensor]:
    def fn(name: str, ts: list[Tensor]) -> Tensor:
        if name in a and name in b:
            return ts[0] - ts[1]
        return ts[0] if name in a else -ts[0]

    return fn


# --------------------------------------------------------------------------------------------
# Statistics
# --------------------------------------------------------------------------------------------


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


# --------------------------------------------------------------------------------------------
# TaskVector
# --------------------------------------------------------------------------------------------


class TaskVector(Mapping[str, Tensor]):
    r"""An immutable, lazily evaluated mapping ``name -> delta tensor``.

    .. math::

        \tau = \theta_{\mathrm{ft}} - \theta_{\mathrm{base}}

    (Ilharco et al., "Editing Models with Task Arithmetic", ICLR 2023,
    `arXiv:2212.04089 <https://arxiv.org/abs/2212.04089>`_). Task vectors support ``+``,
    ``-``, unary ``-``, scalar ``*`` and ``/``, multiplication by a boolean mask, :meth:`dot`,
    :meth:`norm`, :meth:`cosine` and :meth:`apply_to`. Every operation returns a new vector and
    evaluates nothing until a value is read.

    Values may be tensors or zero-argument callables; callables are evaluated on every
    ``__getitem__`` and not cached (memory stays bounded by the tensors in use). Values are
    returned in the vector's ``dtype`` (float32 by default, or float64); the arithmetic of
    derived vectors runs in that dtype and is rounded once to the target's dtype in
    :meth:`apply_to`.

    Binary operations are strict about keys: both vectors must hold the same names, otherwise a
    :class:`~weightspace.ShapeMismatchError` lists the differences. Use :meth:`add` /
    :meth:`sub` with ``keys="union"`` (missing deltas count as zero) or
    ``keys="intersection"``, or align first with :meth:`union` / :meth:`intersection`.

    Args:
        deltas: Mapping ``name -> tensor`` or ``name -> zero-argument callable returning a
            tensor``. Tensors must be floating point and finite; they are not copied.
        dtype: Floating-point dtype of the values and of the arithmetic (``torch.float32`` or
            ``torch.float64``).
        metadata: Free-form string metadata (provenance), kept with the vector.
        shapes: Shapes of lazily computed values, when known, so that :meth:`shape` does not
            have to compute them.

    Raises:
        WeightspaceValueError: if a key is not a string, a value is neither a tensor nor a
            callable, a tensor is not floating point or not finite, or ``dtype`` is not float32
            or float64.

    Example:
        >>> import torch
        >>> from weightspace import TaskVector
        >>> base = {"w": torch.zeros(2)}
        >>> ft = {"w": torch.tensor([1.0, -2.0])}
        >>> tv = TaskVector.from_models(ft, base)
        >>> (2 * tv)["w"]
        tensor([ 2., -4.])
        >>> tv.apply_to(base, scale=0.5)["w"]
        tensor([ 0.5000, -1.0000])
    """

    __slots__ = ("_dtype", "_entries", "_extras", "_metadata", "_shapes", "_sources")

    _entries: Mapping[str, _Value]
    _shapes: Mapping[str, torch.Size]
    _dtype: torch.dtype
    _metadata: Mapping[str, str]
    _sources: Mapping[str, _Diff]
    _extras: Mapping[str, Callable[[], Tensor]]

    def __init__(
        self,
        deltas: Mapping[str, Tensor | Callable[[], Tensor]],
        *,
        dtype: torch.dtype = torch.float32,
        metadata: Mapping[str, str] | None = None,
        shapes: Mapping[str, Sequence[int]] | None = None,
    ) -> None:
        if dtype not in (torch.float32, torch.float64):
            raise WeightspaceValueError(
                f"`dtype` must be torch.float32 or torch.float64, got {dtype}"
            )
        if not isinstance(deltas, Mapping):
            raise WeightspaceValueError(
                f"`deltas` must be a mapping of names to tensors, got {type(deltas).__name__}"
            )
        entries: dict[str, _Value] = {}
        known: dict[str, torch.Size] = {}
        for name, value in deltas.items():
            if not isinstance(name, str):
                raise WeightspaceValueError(f"keys of `deltas` must be strings, got {name!r}")
            if isinstance(value, Tensor):
                if not value.is_floating_point():
                    raise WeightspaceValueError(
                        f"`deltas[{name!r}]` must be a floating-point tensor, got {value.dtype}; "
                        "integer tensors (counters) are never part of a task vector"
                    )
                _check_finite(value, f"`deltas[{name!r}]`")
                entries[name] = value.detach().to(dtype)
                known[name] = value.shape
            elif callable(value):
                entries[name] = _Checked(value, name)
            else:
                raise WeightspaceValueError(
                    f"`deltas[{name!r}]` must be a tensor or a zero-argument callable, "
                    f"got {type(value).__name__}"
                )
        for name, shape in (shapes or {}).items():
            if name not in entries:
                raise WeightspaceValueError(f"`shapes` names {name!r}, which is not in `deltas`")
            size = torch.Size(shape)
            if name in known and known[name] != size:
                raise ShapeMismatchError(
                    f"`shapes[{name!r}]` is {tuple(size)} but the tensor has shape "
                    f"{tuple(known[name])}"
                )
            known[name] = size
        meta = {str(k): str(v) for k, v in (metadata or {}).items()}
        self._init(entries, known, dtype, meta, {}, {})

    def _init(
        self,
        entries: Mapping[str, _Value],
        shapes: Mapping[str, torch.Size],
        dtype: torch.dtype,
        metadata: Mapping[str, str],
        sources: Mapping[str, _Diff],
        extras: Mapping[str, Callable[[], Tensor]],
    ) -> None:
        object.__setattr__(self, "_entries", MappingProxyType(dict(entries)))
        object.__setattr__(self, "_shapes", MappingProxyType(dict(shapes)))
        object.__setattr__(self, "_dtype", dtype)
        object.__setattr__(self, "_metadata", MappingProxyType(dict(metadata)))
        object.__setattr__(self, "_sources", MappingProxyType(dict(sources)))
        object.__setattr__(self, "_extras", MappingProxyType(dict(extras)))

    @classmethod
    def _make(
        cls,
        entries: Mapping[str, _Value],
        shapes: Mapping[str, torch.Size],
        dtype: torch.dtype,
        *,
        metadata: Mapping[str, str] | None = None,
        sources: Mapping[str, _Diff] | None = None,
        extras: Mapping[str, Callable[[], Tensor]] | None = None,
    ) -> TaskVector:
        obj = cls.__new__(cls)
        obj._init(entries, shapes, dtype, metadata or {}, sources or {}, extras or {})
        return obj

    def __setattr__(self, name: str, value: object) -> None:
        raise AttributeError(f"TaskVector is immutable; cannot set {name!r}")

    def __delattr__(self, name: str) -> None:
        raise AttributeError(f"TaskVector is immutable; cannot delete {name!r}")

    def __copy__(self) -> TaskVector:
        return self

    def __deepcopy__(self, memo: dict[int, Any]) -> TaskVector:
        return self

    def __reduce__(self) -> Any:
        raise TypeError(
            "TaskVector cannot be pickled (it may hold lazy readers); use "
            "`dict(tv.materialize())` or write it with weightspace.io"
        )

    # ---------------------------------------------------------------- mapping protocol

    def __getitem__(self, name: str) -> Tensor:
        """Return the delta for ``name``, computing it if it is lazy (not cached)."""
        value = self._entries[name]
        tensor = value if isinstance(value, Tensor) else value()
        if tensor.dtype != self._dtype:
            tensor = tensor.to(self._dtype)
        expected = self._shapes.get(name)
        if expected is not None and tensor.shape != expected:
            raise ShapeMismatchError(
                f"the value of {name!r} has shape {tuple(tensor.shape)} but {tuple(expected)} was "
                "expected; functions given to `map` / `zip_map` must preserve shapes"
            )
        return tensor

    def __iter__(self) -> Iterator[str]:
        return iter(self._entries)

    def __len__(self) -> int:
        return len(self._entries)

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def __eq__(self, other: object) -> bool:
        """Identity comparison; use :meth:`equal` or :meth:`allclose` to compare values."""
        return self is other

    def __hash__(self) -> int:
        return id(self)

    # ---------------------------------------------------------------- properties

    @property
    def dtype(self) -> torch.dtype:
        """The dtype of the values and of the arithmetic."""
        return self._dtype

    @property
    def metadata(self) -> Mapping[str, str]:
        """Read-only string metadata (provenance) attached to the vector."""
        return self._metadata

    def with_metadata(self, metadata: Mapping[str, str]) -> TaskVector:
        """Return the same vector with ``metadata`` merged into its metadata.

        Args:
            metadata: String keys and values to add (existing keys are overwritten).

        Returns:
            A new task vector sharing the values of this one.

        Example:
            >>> import torch
            >>> from weightspace import TaskVector
            >>> TaskVector({"w": torch.ones(1)}).with_metadata({"task": "mnist"}).metadata["task"]
            'mnist'
        """
        meta = dict(self._metadata)
        meta.update({str(k): str(v) for k, v in metadata.items()})
        return self._make(
            self._entries,
            self._shapes,
            self._dtype,
            metadata=meta,
            sources=self._sources,
            extras=self._extras,
        )

    def shape(self, name: str) -> torch.Size:
        """Return the shape of the delta for ``name``.

        Shapes are known without computing anything for vectors built from tensors, from
        models and by the operations of this class; for a lazy value whose shape was not
        declared, the value is computed once to find it.

        Args:
            name: A key of the vector.

        Returns:
            The shape.

        Raises:
            KeyError: if ``name`` is not a key of the vector.

        Example:
            >>> import torch
            >>> from weightspace import TaskVector
            >>> TaskVector({"w": torch.ones(2, 3)}).shape("w")
            torch.Size([2, 3])
        """
        if name not in self._entries:
            raise KeyError(name)
        known = self._shapes.get(name)
        return known if known is not None else self[name].shape

    def numel(self) -> int:
        """Return the total number of entries over all tensors.

        Returns:
            The number of scalar parameters the vector holds.

        Example:
            >>> import torch
            >>> from weightspace import TaskVector
            >>> TaskVector({"w": torch.ones(2, 3), "b": torch.ones(2)}).numel()
            8
        """
        return sum(self.shape(name).numel() for name in self)

    def __repr__(self) -> str:
        n = len(self)
        if all(name in self._shapes for name in self):
            params = f"{sum(s.numel() for s in self._shapes.values()):,} parameters"
        else:
            params = "parameters unknown"
        text = f"TaskVector({n} tensors, {params}, dtype={str(self._dtype).replace('torch.', '')}"
        eager = all(isinstance(v, Tensor) for v in self._entries.values())
        if eager and sum(s.numel() for s in self._shapes.values()) <= _REPR_NORM_MAX_NUMEL:
            text += f", norm={self.norm():.4g}"
        return text + ")"

    # ---------------------------------------------------------------- construction

    @classmethod
    def from_models(
        cls,
        finetuned: StateDictLike,
        base: StateDictLike,
        *,
        keys: Literal["strict", "intersection"] = "strict",
        dtype: torch.dtype = torch.float32,
        integer: Literal["base", "finetuned"] = "base",
    ) -> TaskVector:
        r"""Build :math:`\tau = \theta_{\mathrm{ft}} - \theta_{\mathrm{base}}` from two models.

        Nothing is read at construction beyond names, shapes and dtypes: each delta is computed
        when it is accessed (and again at every access). Floating-point tensors (parameters
        and float buffers such as BatchNorm running statistics) enter the vector; integer
        tensors (``num_batches_tracked``) do not (see ``integer``).

        Args:
            finetuned: The fine-tuned model: an ``nn.Module``, a mapping ``name -> tensor`` or a
                path to a ``.safetensors`` file or sharded checkpoint folder.
            base: The model it was fine-tuned from, in any of the same forms.
            keys: ``"strict"`` (default) requires both to hold the same names;
                ``"intersection"`` keeps the common names.
            dtype: Dtype of the deltas and of the arithmetic (float32 or float64).
            integer: Where :meth:`apply_to` takes integer tensors from: ``"base"`` (default;
                the target's own values are kept) or ``"finetuned"`` (the fine-tuned model's
                values are recorded, lazily, and written by :meth:`apply_to`).

        Returns:
            A lazy task vector keyed like ``finetuned``.

        Raises:
            ShapeMismatchError: if the names differ (with ``keys="strict"``), if a name has
                different shapes in the two models, or if a name is floating point in one
                model and integer in the other.
            WeightspaceValueError: if an argument has the wrong type or value. Non-finite
                values raise it (naming the tensor) when the delta is read.

        Example:
            >>> import torch
            >>> from weightspace import TaskVector
            >>> base, ft = torch.nn.Linear(2, 2), torch.nn.Linear(2, 2)
            >>> tv = TaskVector.from_models(ft, base)
            >>> sorted(tv)
            ['bias', 'weight']
            >>> torch.equal(tv.apply_to(base).weight, ft.weight)
            True
        """
        if keys not in ("strict", "intersection"):
            raise WeightspaceValueError(f"`keys` must be 'strict' or 'intersection', got {keys!r}")
        if integer not in ("base", "finetuned"):
            raise WeightspaceValueError(f"`integer` must be 'base' or 'finetuned', got {integer!r}")
        if dtype not in (torch.float32, torch.float64):
            raise WeightspaceValueError(
                f"`dtype` must be torch.float32 or torch.float64, got {dtype}"
            )
        ft = as_state_dict(finetuned, argument="finetuned")
        bs = as_state_dict(base, argument="base")
        ft_names = list(ft)
        bs_set = set(bs)
        if keys == "strict":
            ft_set = set(ft_names)
            only_ft = [k for k in ft_names if k not in bs_set]
            only_bs = [k for k in bs if k not in ft_set]
            if only_ft or only_bs:
                parts = []
                if only_ft:
                    parts.append(
                        f"{len(only_ft)} keys of `finetuned` are missing from `base`: "
                        f"{_fmt_names(only_ft)}"
                    )
                if only_bs:
                    parts.append(
                        f"{len(only_bs)} keys of `base` are missing from `finetuned`: "
                        f"{_fmt_names(only_bs)}"
                    )
                raise ShapeMismatchError(
                    "; ".join(parts) + '; pass `keys="intersection"` to keep the common keys'
                )
        entries: dict[str, _Value] = {}
        shapes: dict[str, torch.Size] = {}
        sources: dict[str, _Diff] = {}
        extras: dict[str, Callable[[], Tensor]] = {}
        for name in ft_names:
            if name not in bs_set:
                continue
            f_shape, b_shape = shape_of(ft, name), shape_of(bs, name)
            if f_shape != b_shape:
                raise ShapeMismatchError(
                    f"`finetuned[{name!r}]` has shape {tuple(f_shape)} but `base[{name!r}]` has "
                    f"shape {tuple(b_shape)}; they must match"
                )
            f_float = dtype_of(ft, name).is_floating_point
            b_float = dtype_of(bs, name).is_floating_point
            if f_float != b_float:
                raise ShapeMismatchError(
                    f"`finetuned[{name!r}]` is {dtype_of(ft, name)} but `base[{name!r}]` is "
                    f"{dtype_of(bs, name)}; a tensor must be floating point in both or in neither"
                )
            if not f_float:
                if integer == "finetuned":
                    extras[name] = _Get(ft, name)
                continue
            diff = _Diff(ft, bs, name, dtype)
            entries[name] = diff
            shapes[name] = f_shape
            sources[name] = diff
        return cls._make(entries, shapes, dtype, sources=sources, extras=extras)

    @classmethod
    def from_lora(
        cls,
        adapter: str | os.PathLike[str] | Mapping[str, Tensor],
        *,
        config: Mapping[str, Any] | None = None,
        base_names: Mapping[str, str] | Callable[[str], str] | None = None,
        adapter_name: str = "default",
        dtype: torch.dtype = torch.float32,
    ) -> TaskVector:
        r"""Build the dense task vector :math:`s\,BA` of a PEFT LoRA adapter.

        Thin wrapper around :func:`weightspace._lora.lora_to_task_vector`; see there for the
        details of the adapter format.

        Args:
            adapter: A PEFT adapter folder (``adapter_config.json`` and
                ``adapter_model.safetensors``) or a mapping of its tensors.
            config: The adapter configuration (the content of ``adapter_config.json``, or a
                ``peft.LoraConfig``); required when ``adapter`` is a mapping.
            base_names: Renames ``<module>.weight`` keys to the base model's names (a mapping or
                a function); by default only PEFT's ``base_model.model.`` prefix is removed.
            adapter_name: The adapter to read when keys carry adapter names
                (``lora_A.<adapter_name>.weight``).
            dtype: Dtype of the deltas.

        Returns:
            A lazy task vector keyed by the base model's weight names.

        Raises:
            WeightspaceValueError: if the adapter is malformed or uses an unsupported variant.

        Example:
            >>> import torch
            >>> from weightspace import TaskVector
            >>> sd = {
            ...     "base_model.model.fc.lora_A.weight": torch.ones(1, 3),
            ...     "base_model.model.fc.lora_B.weight": torch.ones(2, 1),
            ... }
            >>> tv = TaskVector.from_lora(sd, config={"r": 1, "lora_alpha": 2})
            >>> tv["fc.weight"]
            tensor([[2., 2., 2.],
                    [2., 2., 2.]])
        """
        from weightspace._lora import lora_to_task_vector

        return lora_to_task_vector(
            adapter, config=config, base_names=base_names, adapter_name=adapter_name, dtype=dtype
        )

    def materialize(self) -> TaskVector:
        """Compute every value once and return a vector that holds them as tensors.

        The result owns copies of its values (later in-place changes of the models the vector
        was built from no longer affect it). It holds deltas only, so the bit-exact
        reconstruction of :meth:`apply_to` at scale 1 (see the module notes) is not kept.

        Returns:
            An eager task vector with the same keys and values.

        Example:
            >>> import torch
            >>> from weightspace import TaskVector
            >>> tv = TaskVector({"w": lambda: torch.ones(2)}).materialize()
            >>> tv
            TaskVector(1 tensors, 2 parameters, dtype=float32, norm=1.414)
        """
        entries = {name: self[name].clone() for name in self}
        shapes = {name: t.shape for name, t in entries.items()}
        return self._make(entries, shapes, self._dtype, metadata=self._metadata)

    # ---------------------------------------------------------------- functional core

    def map(self, fn: Callable[[str, Tensor], Tensor]) -> TaskVector:
        """Return a lazy vector whose value for ``name`` is ``fn(name, self[name])``.

        Args:
            fn: Function of the name and the delta; it must return a tensor of the same shape.

        Returns:
            A new lazy task vector with the same keys.

        Example:
            >>> import torch
            >>> from weightspace import TaskVector
            >>> tv = TaskVector({"w": torch.tensor([1.0, -2.0])})
            >>> tv.map(lambda name, t: t.abs())["w"]
            tensor([1., 2.])
        """
        entries: dict[str, _Value] = {name: _Unary(fn, self, name) for name in self}
        return self._make(entries, self._shapes, self._dtype)

    @classmethod
    def zip_map(
        cls,
        fn: Callable[[str, list[Tensor]], Tensor],
        vectors: Sequence[TaskVector],
        *,
        keys: KeysMode = "strict",
    ) -> TaskVector:
        """Combine several vectors key by key, lazily: ``fn(name, [v[name] for v in vectors])``.

        This is the primitive that merge methods are built on: each output tensor is computed
        from one tensor per input vector, when it is read.

        Args:
            fn: Function of the name and the list of deltas (in the order of ``vectors``); it
                must return a tensor of the shape of its inputs.
            vectors: The vectors to combine (at least one).
            keys: ``"strict"`` (default): all vectors hold the same names; ``"intersection"``:
                the names common to all; ``"union"``: all names, and ``fn`` receives only the
                deltas of the vectors that hold the name.

        Returns:
            A new lazy task vector, in the widest dtype of the inputs.

        Raises:
            ShapeMismatchError: if key sets differ (``keys="strict"``) or shapes disagree.
            WeightspaceValueError: if ``vectors`` is empty or holds something else.

        Example:
            >>> import torch
            >>> from weightspace import TaskVector
            >>> a = TaskVector({"w": torch.tensor([1.0, 3.0])})
            >>> b = TaskVector({"w": torch.tensor([3.0, 5.0])})
            >>> TaskVector.zip_map(lambda name, ts: sum(ts) / len(ts), [a, b])["w"]
            tensor([2., 4.])
        """
        vecs = tuple(vectors)
        if not vecs:
            raise WeightspaceValueError("`vectors` must hold at least one TaskVector, got none")
        for i, v in enumerate(vecs):
            if not isinstance(v, TaskVector):
                raise WeightspaceValueError(
                    f"`vectors[{i}]` must be a TaskVector, got {type(v).__name__}"
                )
        names = _aligned_names(vecs, keys, what="vectors")
        shapes = {}
        for name in names:
            shape = next((v._shapes[name] for v in vecs if name in v._shapes), None)
            if shape is not None:
                shapes[name] = shape
        dtype = _accumulation_dtype(*(v.dtype for v in vecs))
        entries: dict[str, _Value] = {name: _Many(fn, vecs, name) for name in names}
        return cls._make(entries, shapes, dtype)

    # ---------------------------------------------------------------- key sets

    def union(self, other: Mapping[str, Tensor]) -> TaskVector:
        """Return this vector extended with zero deltas for the keys of ``other`` it lacks.

        ``a.union(b) + b.union(a)`` adds two vectors over the union of their keys.

        Args:
            other: A task vector or mapping of tensors (only its names and shapes are used).

        Returns:
            A new vector whose keys are this vector's followed by ``other``'s extra keys.

        Example:
            >>> import torch
            >>> from weightspace import TaskVector
            >>> a = TaskVector({"x": torch.ones(1)})
            >>> b = TaskVector({"y": torch.ones(2)})
            >>> a.union(b)["y"]
            tensor([0., 0.])
        """
        entries = dict(self._entries)
        shapes = dict(self._shapes)
        for name in other:
            if name not in entries:
                shape = shape_of(other, name)
                entries[name] = _Zeros(shape, self._dtype)
                shapes[name] = shape
        return self._make(
            entries, shapes, self._dtype, metadata=self._metadata, sources=self._sources
        )

    def intersection(self, other: Iterable[str]) -> TaskVector:
        """Return this vector restricted to the keys that ``other`` also holds.

        Args:
            other: A task vector, a mapping (such as a model's state dict) or any iterable of
                names.

        Returns:
            A new vector with the common keys, in this vector's order.

        Example:
            >>> import torch
            >>> from weightspace import TaskVector
            >>> a = TaskVector({"x": torch.ones(1), "y": torch.ones(1)})
            >>> list(a.intersection({"y": torch.zeros(1)}))
            ['y']
        """
        keep = set(other)
        return self._subset([name for name in self if name in keep])

    def _subset(self, names: Sequence[str], rename: Sequence[str] | None = None) -> TaskVector:
        new_names = list(rename) if rename is not None else list(names)
        entries = {new: self._entries[old] for old, new in zip(names, new_names, strict=True)}
        shapes = {
            new: self._shapes[old]
            for old, new in zip(names, new_names, strict=True)
            if old in self._shapes
        }
        sources = {
            new: self._sources[old]
            for old, new in zip(names, new_names, strict=True)
            if old in self._sources
        }
        extras = dict(self._extras) if rename is None else {}
        return self._make(
            entries, shapes, self._dtype, metadata=self._metadata, sources=sources, extras=extras
        )

    def restrict(
        self,
        selection: Selection | Iterable[str],
        *,
        keys: Literal["strict", "intersection"] = "strict",
    ) -> TaskVector:
        """Return this vector restricted to a selection of names.

        Args:
            selection: A :class:`~weightspace.select.Selection` (its ``names_a`` are used) or an
                iterable of names.
            keys: ``"strict"`` (default): every selected name must be in the vector;
                ``"intersection"``: selected names that the vector lacks are ignored.

        Returns:
            A new vector holding the selected keys, in the vector's order.

        Raises:
            ShapeMismatchError: if selected names are missing (``keys="strict"``).
            WeightspaceValueError: if the restriction is empty.

        Example:
            >>> import torch
            >>> from weightspace import TaskVector
            >>> tv = TaskVector({"a.weight": torch.ones(1), "b.weight": torch.ones(1)})
            >>> list(tv.restrict(["b.weight"]))
            ['b.weight']
        """
        wanted = _selection_names_a(selection)
        missing = [n for n in wanted if n not in self._entries]
        if missing and keys == "strict":
            raise ShapeMismatchError(
                f"{len(missing)} selected names are not in the task vector: "
                f'{_fmt_names(missing)}; pass `keys="intersection"` to ignore them'
            )
        keep = set(wanted)
        names = [name for name in self if name in keep]
        if not names:
            raise WeightspaceValueError(
                f"the restriction of the task vector ({len(self)} keys) to the selection "
                f"({len(wanted)} names) is empty"
            )
        return self._subset(names)

    def transfer(self, selection: Selection) -> TaskVector:
        """Restrict to a selection and rename its keys from model A's names to model B's.

        With a selection from :func:`weightspace.select.common`, the result can be applied to
        model B (a different architecture holding the common part).

        Args:
            selection: A :class:`~weightspace.select.Selection` mapping names of the model this
                vector was built on (``names_a``) to names of the target model (``names_b``).

        Returns:
            A new vector keyed by ``selection.names_b``.

        Raises:
            ShapeMismatchError: if a name of ``selection.names_a`` is not in the vector, or if
                the selection records a different shape than the vector's.

        Example:
            >>> import torch
            >>> from weightspace import TaskVector, select
            >>> tv = TaskVector({"cnn.head.weight": torch.ones(2)})
            >>> sel = select.Selection({"cnn.head.weight": "vit.head.weight"})
            >>> list(tv.transfer(sel))
            ['vit.head.weight']
        """
        from weightspace.select._selection import Selection

        if not isinstance(selection, Selection):
            raise WeightspaceValueError(
                f"`selection` must be a weightspace.select.Selection, got "
                f"{type(selection).__name__}"
            )
        missing = [n for n in selection.names_a if n not in self._entries]
        if missing:
            raise ShapeMismatchError(
                f"{len(missing)} names of `selection.names_a` are not in the task vector: "
                f"{_fmt_names(missing)}; restrict the selection to the vector's keys first "
                "(`tv.transfer(selection.subset(tv))`)"
            )
        for a_name in selection.names_a:
            recorded = selection.shape(a_name)
            if recorded is not None and recorded != self.shape(a_name):
                raise ShapeMismatchError(
                    f"`selection` records shape {tuple(recorded)} for {a_name!r} but the task "
                    f"vector's tensor has shape {tuple(self.shape(a_name))}"
                )
        return self._subset(list(selection.names_a), list(selection.names_b))

    # ---------------------------------------------------------------- arithmetic

    def add(self, other: TaskVector, *, keys: KeysMode = "strict") -> TaskVector:
        """Return ``self + other`` with an explicit key policy.

        Args:
            other: Another task vector.
            keys: ``"strict"`` (default, same as ``+``), ``"intersection"`` (common keys only)
                or ``"union"`` (a key missing from one vector counts as a zero delta).

        Returns:
            A new lazy task vector.

        Raises:
            ShapeMismatchError: if keys differ (``keys="strict"``) or shapes disagree.

        Example:
            >>> import torch
            >>> from weightspace import TaskVector
            >>> a = TaskVector({"x": torch.ones(1)})
            >>> b = TaskVector({"x": torch.ones(1), "y": torch.ones(1)})
            >>> sorted(a.add(b, keys="union"))
            ['x', 'y']
        """
        _require_vector(other, "other")
        return self.zip_map(_add, [self, other], keys=keys)

    def sub(self, other: TaskVector, *, keys: KeysMode = "strict") -> TaskVector:
        """Return ``self - other`` with an explicit key policy.

        Args:
            other: Another task vector.
            keys: ``"strict"`` (default, same as ``-``), ``"intersection"`` or ``"union"``
                (a key missing from one vector counts as a zero delta).

        Returns:
            A new lazy task vector.

        Raises:
            ShapeMismatchError: if keys differ (``keys="strict"``) or shapes disagree.

        Example:
            >>> import torch
            >>> from weightspace import TaskVector
            >>> a = TaskVector({"x": torch.ones(1)})
            >>> b = TaskVector({"x": torch.ones(1), "y": torch.ones(1)})
            >>> a.sub(b, keys="union")["y"]
            tensor([-1.])
        """
        _require_vector(other, "other")
        return self.zip_map(_sub_union(self, other), [self, other], keys=keys)

    def __add__(self, other: object) -> TaskVector:
        if not isinstance(other, TaskVector):
            return NotImplemented
        return self.add(other)

    def __sub__(self, other: object) -> TaskVector:
        if not isinstance(other, TaskVector):
            return NotImplemented
        return self.sub(other)

    def __neg__(self) -> TaskVector:
        return self.map(_neg)

    def __pos__(self) -> TaskVector:
        return self

    def __mul__(self, other: object) -> TaskVector:
        if isinstance(other, Mapping):
            return self.masked(other)
        k = _check_scalar(other, "the scalar in `task_vector * scalar`")
        if k == 1.0:
            return self._make(
                self._entries,
                self._shapes,
                self._dtype,
                metadata=self._metadata,
                sources=self._sources,
                extras=self._extras,
            )
        return self.map(_Scale(k))

    def __rmul__(self, other: object) -> TaskVector:
        return self.__mul__(other)

    def __truediv__(self, other: object) -> TaskVector:
        k = _check_scalar(other, "the divisor in `task_vector / scalar`")
        if k == 0.0:
            raise WeightspaceValueError("the divisor in `task_vector / scalar` must be non-zero")
        return self * 1.0 if k == 1.0 else self.map(_Div(k))

    def masked(
        self,
        mask: Mapping[str, Tensor],
        *,
        missing: Literal["error", "keep", "zero"] = "error",
    ) -> TaskVector:
        """Keep the entries where a boolean mask is true and zero the others (``tv * mask``).

        Args:
            mask: Mapping ``name -> bool tensor`` of the shapes of the vector's tensors.
            missing: What to do with keys of the vector that ``mask`` lacks: ``"error"``
                (default, same as ``tv * mask``), ``"keep"`` (left unchanged) or ``"zero"``.

        Returns:
            A new lazy task vector with the same keys.

        Raises:
            ShapeMismatchError: if keys are missing (``missing="error"``), if ``mask`` holds
                keys that the vector lacks, or (on access) if a mask's shape differs.
            WeightspaceValueError: (on access) if a mask is not boolean.

        Example:
            >>> import torch
            >>> from weightspace import TaskVector
            >>> tv = TaskVector({"w": torch.tensor([1.0, 2.0, 3.0])})
            >>> (tv * {"w": torch.tensor([True, False, True])})["w"]
            tensor([1., 0., 3.])
        """
        if missing not in ("error", "keep", "zero"):
            raise WeightspaceValueError(
                f"`missing` must be 'error', 'keep' or 'zero', got {missing!r}"
            )
        extra = [n for n in mask if n not in self._entries]
        if extra:
            raise ShapeMismatchError(
                f"{len(extra)} keys of `mask` are not in the task vector: {_fmt_names(extra)}"
            )
        absent = [n for n in self if n not in mask]
        if absent and missing == "error":
            raise ShapeMismatchError(
                f"{len(absent)} keys of the task vector are missing from `mask`: "
                f'{_fmt_names(absent)}; use `tv.masked(mask, missing="keep")` or '
                '`missing="zero"`'
            )
        fn = _Mask(mask)
        entries: dict[str, _Value] = {}
        for name in self:
            if name in mask:
                entries[name] = _Unary(fn, self, name)
            elif missing == "keep":
                entries[name] = _Unary(_identity, self, name)
            else:
                entries[name] = _Unary(_zero_like, self, name)
        return self._make(entries, self._shapes, self._dtype)

    # ---------------------------------------------------------------- reductions

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

    # ---------------------------------------------------------------- low rank

    def low_rank(self, rank: int) -> LowRankTaskVector:
        """Return the truncated-SVD factors ``B @ A`` of every 2-D delta, with their errors.

        Args:
            rank: Number of singular values to keep (capped at ``min(out, in)`` per tensor).

        Returns:
            A :class:`~weightspace._lora.LowRankTaskVector` (factors, relative errors, and the
            non-2-D tensors kept dense).

        Example:
            >>> import torch
            >>> from weightspace import TaskVector
            >>> tv = TaskVector({"w": torch.outer(torch.arange(3.0), torch.ones(4))})
            >>> lr = tv.low_rank(1)
            >>> lr.relative_error["w"] < 1e-6
            True
        """
        from weightspace._lora import low_rank

        return low_rank(self, rank)

    def to_lora(self, rank: int, *, alpha: float | None = None) -> LoraAdapter:
        """Return a PEFT-format LoRA adapter approximating the vector (truncated SVD).

        Args:
            rank: LoRA rank ``r``.
            alpha: ``lora_alpha`` written in the configuration (default ``rank``, scale 1).

        Returns:
            A :class:`~weightspace._lora.LoraAdapter` (PEFT keys, configuration, errors);
            :meth:`~weightspace._lora.LoraAdapter.save` writes it as a PEFT adapter folder.

        Example:
            >>> import torch
            >>> from weightspace import TaskVector
            >>> tv = TaskVector({"fc.weight": torch.ones(2, 3)})
            >>> sorted(tv.to_lora(1).state_dict)
            ['base_model.model.fc.lora_A.weight', 'base_model.model.fc.lora_B.weight']
        """
        from weightspace._lora import to_lora

        return to_lora(self, rank, alpha=alpha)

    # ---------------------------------------------------------------- application

    @overload
    def apply_to(
        self, base: _ModuleT, *, scale: float = 1.0, dtype: torch.dtype | None = None
    ) -> _ModuleT: ...

    @overload
    def apply_to(
        self,
        base: Mapping[str, Tensor] | str | os.PathLike[str],
        *,
        scale: float = 1.0,
        dtype: torch.dtype | None = None,
    ) -> dict[str, Tensor]: ...

    def apply_to(
        self,
        base: nn.Module | Mapping[str, Tensor] | str | os.PathLike[str],
        *,
        scale: float = 1.0,
        dtype: torch.dtype | None = None,
    ) -> nn.Module | dict[str, Tensor]:
        r"""Return :math:`\theta_{\mathrm{base}} + \lambda\,\tau` as a new model; never mutates.

        Each floating-point tensor is computed in float32 (float64 if the vector or the base
        tensor is float64) and rounded once to the output dtype. Keys of ``base`` that the
        vector lacks are copied unchanged; integer tensors come from ``base`` (or from the
        fine-tuned model, see ``integer`` in :meth:`from_models`). At ``scale=1`` a vector
        built by :meth:`from_models` reproduces the fine-tuned tensors bit for bit on every
        element where ``base`` equals the original base (see the module notes on exactness).

        Args:
            base: An ``nn.Module`` (a deep copy is returned, with the new weights loaded), a
                mapping ``name -> tensor`` or a checkpoint path (a new ``dict`` is returned).
            scale: The coefficient :math:`\lambda`.
            dtype: Output dtype of the floating-point tensors (default: each base tensor's).

        Returns:
            A new module, or a new ``dict`` of new tensors holding every key of ``base``.

        Raises:
            ShapeMismatchError: if keys of the vector are missing from ``base`` or a shape
                differs.
            WeightspaceValueError: if ``scale`` is not finite or a base tensor is not finite.

        Example:
            >>> import torch
            >>> from weightspace import TaskVector
            >>> tv = TaskVector({"w": torch.ones(2)})
            >>> base = {"w": torch.zeros(2), "steps": torch.tensor(7)}
            >>> out = tv.apply_to(base, scale=-1.0)
            >>> out["w"], out["steps"], base["w"]
            (tensor([-1., -1.]), tensor(7), tensor([0., 0.]))
        """
        scale = _check_scalar(scale, "`scale`")
        if dtype is not None and not dtype.is_floating_point:
            raise WeightspaceValueError(f"`dtype` must be a floating-point dtype, got {dtype}")
        if isinstance(base, nn.Module):
            new = copy.deepcopy(base)
            self.apply_to_(new, scale=scale)
            if dtype is not None:
                new.to(dtype)
            return new
        sd = as_state_dict(base, argument="base")
        self._check_target(sd, "base")
        out: dict[str, Tensor] = {}
        for name in sd:
            if name in self._entries:
                out[name] = self._new_value(name, sd[name], scale, dtype)
            elif name in self._extras:
                out[name] = self._extras[name]().detach().clone()
            else:
                t = sd[name].detach()
                out[name] = (
                    t.to(dtype) if dtype is not None and t.is_floating_point() else t.clone()
                )
        return out

    def apply_to_(self, module: _ModuleT, *, scale: float = 1.0) -> _ModuleT:
        r"""Add :math:`\lambda\,\tau` to ``module``'s weights in place (trailing underscore).

        Same arithmetic as :meth:`apply_to`; every key is validated before anything is written.

        Args:
            module: The module to modify.
            scale: The coefficient :math:`\lambda`.

        Returns:
            ``module`` itself.

        Raises:
            ShapeMismatchError: if keys of the vector are missing from the module or a shape
                differs.
            WeightspaceValueError: if ``scale`` is not finite or a weight is not finite.

        Example:
            >>> import torch
            >>> from weightspace import TaskVector
            >>> lin = torch.nn.Linear(2, 1, bias=False)
            >>> tv = TaskVector({"weight": -lin.weight.detach().clone()})
            >>> tv.apply_to_(lin).weight.abs().sum().item()
            0.0
        """
        if not isinstance(module, nn.Module):
            raise WeightspaceValueError(
                f"`module` must be an nn.Module, got {type(module).__name__}; use `apply_to` for "
                "state dicts"
            )
        scale = _check_scalar(scale, "`scale`")
        sd = module.state_dict(keep_vars=True)
        self._check_target(sd, "module")
        with torch.no_grad():
            for name in self:
                target = sd[name]
                target.copy_(self._new_value(name, target.detach(), scale, None))
            for name, getter in self._extras.items():
                if name in sd:
                    sd[name].copy_(getter())
        return module

    def _check_target(self, sd: Mapping[str, Tensor], argument: str) -> None:
        missing = [n for n in self if n not in sd]
        if missing:
            raise ShapeMismatchError(
                f"{len(missing)} keys of the task vector are missing from `{argument}`: "
                f"{_fmt_names(missing)}; restrict the vector first, e.g. "
                f"`tv.intersection({argument}_state_dict)` or `tv.restrict(selection)`"
            )
        for name in self:
            shape = shape_of(sd, name)
            if shape != self.shape(name):
                raise ShapeMismatchError(
                    f"`{argument}[{name!r}]` has shape {tuple(shape)} but the task vector's "
                    f"tensor has shape {tuple(self.shape(name))}"
                )
            if not dtype_of(sd, name).is_floating_point:
                raise ShapeMismatchError(
                    f"`{argument}[{name!r}]` is {dtype_of(sd, name)}, not floating point; task "
                    "vectors never change integer tensors"
                )

    def _new_value(
        self, name: str, target: Tensor, scale: float, dtype: torch.dtype | None
    ) -> Tensor:
        _check_finite(target, f"the target tensor {name!r}")
        out_dtype = dtype if dtype is not None else target.dtype
        acc = _accumulation_dtype(self._dtype, target.dtype, out_dtype)
        source = self._sources.get(name)
        if source is not None and scale == 1.0:
            f, b = source.sources()
            delta = f.to(acc) - b.to(acc)
            general = (target.to(acc) + delta.to(target.device)).to(out_dtype)
            same = target == b.to(target.device)
            return torch.where(same, f.to(device=target.device, dtype=out_dtype), general)
        delta = self[name].to(device=target.device, dtype=acc)
        if scale != 1.0:
            delta = delta * scale
        return (target.to(acc) + delta).to(out_dtype)


# --------------------------------------------------------------------------------------------
# helpers
# --------------------------------------------------------------------------------------------


def _identity(_: str, t: Tensor) -> Tensor:
    return t


def _zero_like(_: str, t: Tensor) -> Tensor:
    return torch.zeros_like(t)


def _require_vector(other: object, argument: str) -> None:
    if not isinstance(other, TaskVector):
        raise WeightspaceValueError(
            f"`{argument}` must be a TaskVector, got {type(other).__name__}"
        )


def _selection_names_a(selection: object) -> list[str]:
    names_a = getattr(selection, "names_a", None)
    if names_a is not None:
        return list(names_a)
    if isinstance(selection, str) or not isinstance(selection, Iterable):
        raise WeightspaceValueError(
            "`selection` must be a weightspace.select.Selection or an iterable of names, "
            f"got {selection!r}"
        )
    return [str(n) for n in selection]


def _aligned_names(vectors: Sequence[TaskVector], keys: KeysMode, *, what: str) -> list[str]:
    """Names over which to combine ``vectors`` under a key policy; checks known shapes."""
    if keys not in ("strict", "intersection", "union"):
        raise WeightspaceValueError(
            f"`keys` must be 'strict', 'intersection' or 'union', got {keys!r}"
        )
    first = vectors[0]
    if keys == "strict":
        first_set = set(first)
        for i, v in enumerate(vectors[1:], start=1):
            v_set = set(v)
            if v_set != first_set:
                only_first = [n for n in first if n not in v_set]
                only_other = [n for n in v if n not in first_set]
                label = "`other`" if len(vectors) == 2 else f"`{what}[{i}]`"
                self_label = "this vector" if len(vectors) == 2 else f"`{what}[0]`"
                parts = []
                if only_first:
                    parts.append(
                        f"{len(only_first)} keys of {self_label} are missing from {label}: "
                        f"{_fmt_names(only_first)}"
                    )
                if only_other:
                    parts.append(
                        f"{len(only_other)} keys of {label} are missing from {self_label}: "
                        f"{_fmt_names(only_other)}"
                    )
                raise ShapeMismatchError(
                    "; ".join(parts) + "; align the key sets with `a.union(b)` / "
                    '`a.intersection(b)`, or pass `keys="union"` or `keys="intersection"` '
                    '(e.g. `a.add(b, keys="union")`)'
                )
        names = list(first)
    elif keys == "intersection":
        common = set(first).intersection(*(set(v) for v in vectors[1:]))
        names = [n for n in first if n in common]
    else:
        seen: dict[str, None] = {}
        for v in vectors:
            for n in v:
                seen.setdefault(n, None)
        names = list(seen)
    for name in names:
        shapes = {tuple(v._shapes[name]) for v in vectors if name in v and name in v._shapes}
        if len(shapes) > 1:
            raise ShapeMismatchError(
                f"the {what} disagree on the shape of {name!r}: {sorted(shapes)}"
            )
    return names
