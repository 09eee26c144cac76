"""The :class:`TaskVector` class: construction, maps, key sets and arithmetic.

Reductions (:meth:`~TaskVector.dot`, :meth:`~TaskVector.norm`, ...) come from
:class:`~weightspace._task_vector._reduce.Reductions`, application to a model
(:meth:`~TaskVector.apply_to`) from :class:`~weightspace._task_vector._apply.Application`; the
package docstring of :mod:`weightspace._task_vector` explains laziness and exactness.
"""

from __future__ import annotations

import functools
import inspect
import os
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, Literal, ParamSpec, TypeVar

import torch
from torch import Tensor

from weightspace._errors import ShapeMismatchError, WeightspaceTypeError, WeightspaceValueError
from weightspace._task_vector._apply import Application
from weightspace._task_vector._base import KeysMode, _aligned_names, _require_vector
from weightspace._task_vector._interfaces import (
    SupportsNameMapping,
    check_recorded_shapes,
    lora_conversions,
    names_a_of,
    views_of,
)
from weightspace._task_vector._reduce import Reductions
from weightspace._task_vector._values import (
    Value,
    _accumulation_dtype,
    _add,
    _check_finite,
    _check_scalar,
    _Checked,
    _Diff,
    _Div,
    _fmt_names,
    _Get,
    _identity,
    _Many,
    _Mask,
    _neg,
    _Scale,
    _sub_union,
    _Unary,
    _zero_like,
    _Zeros,
)
from weightspace._task_vector._views import transfer_views
from weightspace.io import StateDictLike, as_state_dict, dtype_of, shape_of

if TYPE_CHECKING:
    from weightspace._lora import LoraAdapter, LowRankTaskVector

__all__ = ["TaskVector"]

_REPR_NORM_MAX_NUMEL = 10_000_000
_P = ParamSpec("_P")
_R = TypeVar("_R")


def _models_by_keyword(fn: Callable[_P, _R]) -> Callable[_P, _R]:
    """Refuse positional models in :meth:`TaskVector.from_models` with an error that says why."""

    @functools.wraps(fn)
    def wrapper(*args: _P.args, **kwargs: _P.kwargs) -> _R:
        if len(args) > 1:  # args[0] is the class
            raise WeightspaceTypeError(
                f"`TaskVector.from_models` takes its models by keyword only, got {len(args) - 1} "
                "positional argument(s); write `TaskVector.from_models(base=..., finetuned=...)` "
                "(positional models were easy to swap, which silently negates the vector)"
            )
        return fn(*args, **kwargs)

    # The signature, without `__wrapped__`: documentation tools that follow `__wrapped__` from
    # the bound classmethod would otherwise show `cls` as a parameter.
    wrapper.__signature__ = inspect.signature(fn)  # type: ignore[attr-defined]
    del wrapper.__wrapped__
    return wrapper


class TaskVector(Reductions, Application):
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
        >>> tv = TaskVector.from_models(base=base, finetuned=ft)
        >>> (2 * tv)["w"]
        tensor([ 2., -4.])
        >>> tv.apply_to(base, scale=0.5)["w"]
        tensor([ 0.5000, -1.0000])
    """

    __slots__ = ()

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
        entries: dict[str, Value] = {}
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
    @_models_by_keyword
    def from_models(
        cls,
        *,
        base: StateDictLike,
        finetuned: StateDictLike,
        keys: Literal["strict", "intersection"] = "strict",
        dtype: torch.dtype = torch.float32,
        integer: Literal["base", "finetuned"] = "base",
    ) -> TaskVector:
        r"""Build :math:`\tau = \theta_{\mathrm{ft}} - \theta_{\mathrm{base}}` from two models.

        Both models are passed by keyword (``from_models(base=..., finetuned=...)``): passing
        them in the wrong order would silently build the negated vector, so positional
        arguments raise :class:`~weightspace.WeightspaceTypeError`.

        Nothing is read at construction beyond names, shapes and dtypes: each delta is computed
        when it is accessed (and again at every access). Floating-point tensors (parameters
        and float buffers such as BatchNorm running statistics) enter the vector; integer
        tensors (``num_batches_tracked``) do not (see ``integer``).

        Args:
            base: The model before fine-tuning: an ``nn.Module``, a mapping ``name -> tensor``
                or a path to a ``.safetensors`` file or sharded checkpoint folder.
            finetuned: The fine-tuned model, in any of the same forms.
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
            WeightspaceTypeError: if the models are passed positionally.

        Example:
            >>> import torch
            >>> from weightspace import TaskVector
            >>> base, ft = torch.nn.Linear(2, 2), torch.nn.Linear(2, 2)
            >>> tv = TaskVector.from_models(base=base, finetuned=ft)
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
        entries: dict[str, Value] = {}
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

        Delegates to :func:`weightspace._lora.lora_to_task_vector`; see there for the details
        of the adapter format.

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
        return lora_conversions().from_lora(
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
        entries: dict[str, Value] = {name: _Unary(fn, self, name) for name in self}
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
        entries: dict[str, Value] = {name: _Many(fn, vecs, name) for name in names}
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

    def restrict(
        self,
        selection: SupportsNameMapping | Iterable[str],
        *,
        keys: Literal["strict", "intersection"] = "strict",
    ) -> TaskVector:
        """Return this vector restricted to a selection of names.

        Args:
            selection: A :class:`~weightspace.select.Selection` or any object with ``names_a``
                (those are used), or an iterable of names.
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
        wanted = names_a_of(selection)
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

    def transfer(self, selection: SupportsNameMapping) -> TaskVector:
        """Restrict to a selection and rename its keys from model A's names to model B's.

        With a selection from :func:`weightspace.select.common`, the result can be applied to
        model B (a different architecture holding the common part).

        Args:
            selection: A :class:`~weightspace.select.Selection` (or any object with
                ``names_a`` and ``names_b``) mapping names of the model this vector was built on
                (``names_a``) to names of the target model (``names_b``), optionally with
                ``views`` (see :class:`~weightspace.select.TensorView`: they move slices,
                transposed if asked, and keep the exact :meth:`apply_to`).

        Returns:
            A new vector keyed by ``selection.names_b`` (each name once).

        Raises:
            ShapeMismatchError: if a name of ``selection.names_a`` is not in the vector, if
                the selection records a different shape than the vector's, or if views do not
                fit the vector's shapes or overlap in B.

        Example:
            >>> import torch
            >>> from weightspace import TaskVector, select
            >>> tv = TaskVector({"cnn.head.weight": torch.ones(2)})
            >>> sel = select.Selection({"cnn.head.weight": "vit.head.weight"})
            >>> list(tv.transfer(sel))
            ['vit.head.weight']
        """
        if not isinstance(selection, SupportsNameMapping):
            raise WeightspaceValueError(
                f"`selection` must be a weightspace.select.Selection (or have `names_a` and "
                f"`names_b`), got {type(selection).__name__}"
            )
        names_a, names_b = list(selection.names_a), list(selection.names_b)
        if len(names_a) != len(names_b):
            raise WeightspaceValueError(
                f"`selection` pairs {len(names_a)} names of A with {len(names_b)} names of B; "
                "`names_a` and `names_b` must have the same length"
            )
        missing = [n for n in names_a if n not in self._entries]
        if missing:
            raise ShapeMismatchError(
                f"{len(missing)} names of `selection.names_a` are not in the task vector: "
                f"{_fmt_names(missing)}; restrict the selection to the vector's keys first "
                "(`tv.transfer(selection.subset(tv))`)"
            )
        check_recorded_shapes(selection, names_a, self.shape)  # optional: `Selection.shape`
        views = views_of(selection, len(names_a))  # optional: `Selection.views`
        if views is None:
            return self._subset(names_a, names_b)
        return transfer_views(self, list(zip(names_a, names_b, views, strict=True)))

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
        entries: dict[str, Value] = {}
        for name in self:
            if name in mask:
                entries[name] = _Unary(fn, self, name)
            elif missing == "keep":
                entries[name] = _Unary(_identity, self, name)
            else:
                entries[name] = _Unary(_zero_like, self, name)
        return self._make(entries, self._shapes, self._dtype)

    # ---------------------------------------------------------------- reductions
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
        return lora_conversions().low_rank(self, rank)

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
        return lora_conversions().to_lora(self, rank, alpha=alpha)
