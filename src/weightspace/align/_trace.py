"""Derive a :class:`PermutationSpec` from a model by following its hidden axes through one pass.

Every parameter axis starts as its own *variable*. Each operation of one forward pass on an
example input says how the axes of its inputs and outputs relate: an elementwise op or a norm
keeps an axis, an addition ties the axes of its operands, a linear layer starts a new axis from
the rows of its weight and ties its input axis to the columns, a flatten after a convolution
expands a channel into a block of features, and any operation that is not known to commute
with a permutation of an axis *fixes* it. Variables are joined in a union-find whose links
carry a block factor (a unit of the parent spans ``factor`` entries of the child). At the end,
every class of variables that appears in an activation, is not fixed and has more than one
unit is a permutation group.

The pass is observed through ``torch.fx`` (the graph's functions and methods are interpreted
one by one, leaf modules run under a :class:`~torch.overrides.TorchFunctionMode` that sees the
functional calls inside them) or, where symbolic tracing fails, by recording the torch calls of
a plain forward pass with the same mode.

The union-find lives in :mod:`weightspace.align._trace_vars`, the rule of each operation in
:mod:`weightspace.align._trace_ops`; this module holds the tracer and its two front ends.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any, Literal

import torch
import torch.fx
from torch import Tensor, nn
from torch.overrides import TorchFunctionMode

from weightspace._errors import WeightspaceValueError
from weightspace.align._spec import Axis, PermutationSpec
from weightspace.align._trace_ops import Unknown, find_handler, op_name
from weightspace.align._trace_vars import AxisVars, Label, Labels, tensors_in

__all__ = ["permutation_spec"]

logger = logging.getLogger(__name__)


# ---- the tracer -----------------------------------------------------------------------------


class _Tracer:
    def __init__(self, model: nn.Module) -> None:
        self.vars = AxisVars()
        self.values: dict[int, Labels] = {}
        self.keep: list[Tensor] = []
        self.state = model.state_dict(keep_vars=True)
        self.param_keys: dict[int, list[str]] = {}
        for key, t in self.state.items():
            if isinstance(t, Tensor):
                self.param_keys.setdefault(id(t), []).append(key)
        self.param_labels: dict[int, Labels] = {}
        self.calls: list[tuple[str, list[Label], Labels]] = []
        self.unknown: set[str] = set()

    # labels of tensors ------------------------------------------------------------------------

    def labels(self, t: Tensor) -> Labels:
        i = id(t)
        if i in self.param_keys:
            if i not in self.param_labels:
                self.param_labels[i] = tuple((self.vars.new(int(s)), 1) for s in t.shape)
                self.keep.append(t)
            return self.param_labels[i]
        got = self.values.get(i)
        if got is not None and len(got) == t.ndim:
            return got
        return (None,) * t.ndim

    def set(self, t: Any, labels: Sequence[Label] | None, reason: str) -> None:
        if not isinstance(t, Tensor):
            return
        if labels is None or len(labels) != t.ndim:
            labels = (None,) * t.ndim
        if id(t) in self.param_keys:  # an in-place op on a parameter
            old = self.labels(t)
            for d, (a, b) in enumerate(zip(old, labels, strict=True)):
                size = int(t.shape[d])
                self.vars.unify(a, size, b, size, reason)
            return
        labels = tuple(labels)
        for label in labels:
            self.vars.activate(label)
        self.values[id(t)] = labels
        self.keep.append(t)

    def unify(self, a: Label, b: Label, size: int, reason: str) -> Label:
        return self.vars.unify(a, size, b, size, reason)

    def fix_all(self, obj: Any, reason: str) -> None:
        for t in tensors_in(obj):
            for label in self.labels(t):
                self.vars.fix(label, reason)

    # dispatch ---------------------------------------------------------------------------------

    def on_call(self, func: Any, args: Sequence[Any], kwargs: Mapping[str, Any], out: Any) -> None:
        name, reflected = op_name(func, args)
        if name == "setitem":  # an in-place write into some positions of a tensor
            self.fix_all((args, kwargs), "writing into a permuted axis")
            return
        if not any(True for _ in tensors_in(out)):
            return  # sizes, dtypes, python numbers: nothing to label
        if reflected and len(args) >= 2:
            args = (args[1], args[0], *args[2:])
        if name == "getattr" and len(args) == 2 and isinstance(args[1], str):
            name, args = f"prop:{args[1]}", args[:1]
        if name == "getitem" and not isinstance(args[0], Tensor):
            return  # indexing a tuple of outputs: the tensor already has its labels
        handler = find_handler(name)
        try:
            if handler is None:
                raise Unknown
            handler(self, name, list(args), dict(kwargs), out)
        except Unknown:
            if name not in self.unknown:
                self.unknown.add(name)
                logger.debug("align: %r is not known to commute with permutations", name)
            self._opaque(name, args, kwargs, out)
        except Exception as err:  # an unexpected signature: stay safe, fix everything
            logger.debug("align: could not follow %r (%s); its inputs are fixed", name, err)
            self._opaque(name, args, kwargs, out)

    def _opaque(self, name: str, args: Any, kwargs: Any, out: Any) -> None:
        self.fix_all((args, kwargs), f"used by {name!r}")
        for t in tensors_in(out):
            self.set(t, None, name)

    # results ----------------------------------------------------------------------------------

    def spec(self, outputs: Any) -> PermutationSpec:
        self.fix_all(outputs, "model output")
        v = self.vars

        def group_of(label: Label) -> tuple[int, int] | None:
            r = v.resolve(label)
            if r is None or not v.active[r[0]] or v.fixed[r[0]] or v.units[r[0]] < 2:
                return None
            return r

        # producers: modules whose output carries a group that none of their inputs carries
        producers: dict[int, list[tuple[str, int]]] = {}
        for name, in_labels, out_labels in self.calls:
            in_roots = {r[0] for r in map(v.resolve, in_labels) if r is not None}
            for dim, label in enumerate(out_labels):
                r = group_of(label)
                if r is None or r[0] in in_roots:
                    continue
                sites = producers.setdefault(r[0], [])
                if (name, dim - len(out_labels)) not in sites:
                    sites.append((name, dim - len(out_labels)))
        for root, sites in producers.items():  # keep the innermost modules
            modules = [s[0] for s in sites]
            producers[root] = [
                s for s in sites if not any(m.startswith(f"{s[0]}.") for m in modules)
            ]
        # the permuted axes of every tensor, and a name per group
        rows: dict[str, list[tuple[int, int] | None]] = {}
        first_axis: dict[int, str] = {}
        for key, t in self.state.items():
            labels = self.param_labels.get(id(t)) if isinstance(t, Tensor) else None
            if labels is None:
                continue
            row = [group_of(label) for label in labels]
            for dim, r in enumerate(row):
                if r is not None:
                    first_axis.setdefault(r[0], f"{key}:{dim}")
            if any(r is not None for r in row):
                rows[key] = row
        order = list(producers) + [r for r in first_axis if r not in producers]
        names: dict[int, str] = {}
        for root in order:
            base = producers[root][0][0] if root in producers else first_axis[root]
            name, i = base, 2
            while name in names.values():
                name, i = f"{base}#{i}", i + 1
            names[root] = name
        axes = {
            key: tuple(None if r is None else Axis(names[r[0]], r[1]) for r in row)
            for key, row in rows.items()
        }
        spec = PermutationSpec(
            axes,
            sizes={names[r]: v.units[r] for r in first_axis},
            producers={names[r]: tuple(s) for r, s in producers.items() if r in first_axis},
        )
        logger.debug("align: derived %r; fixed: %s", spec, v.reasons[:20])
        return spec


# ---- front ends -----------------------------------------------------------------------------


class _Recorder(TorchFunctionMode):
    def __init__(self, tracer: _Tracer) -> None:
        super().__init__()
        self.tracer = tracer

    def __torch_function__(
        self,
        func: Any,
        types: Any,
        args: Sequence[Any] = (),
        kwargs: Mapping[str, Any] | None = None,
    ) -> Any:
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        self.tracer.on_call(func, args, kwargs, out)
        return out


class _FxRunner(torch.fx.Interpreter):
    def __init__(self, gm: torch.fx.GraphModule, tracer: _Tracer) -> None:
        super().__init__(gm)
        self.tracer = tracer
        self.extra_traceback = False  # keep the model's own error message

    def call_function(self, target: Any, args: Any, kwargs: Any) -> Any:
        out = super().call_function(target, args, kwargs)
        self.tracer.on_call(target, args, kwargs, out)
        return out

    def call_method(self, target: Any, args: Any, kwargs: Any) -> Any:
        out = super().call_method(target, args, kwargs)
        self.tracer.on_call(target, args, kwargs, out)
        return out

    def call_module(self, target: Any, args: Any, kwargs: Any) -> Any:
        with _Recorder(self.tracer):
            return super().call_module(target, args, kwargs)


@contextmanager
def _watch_modules(model: nn.Module, tracer: _Tracer) -> Iterator[None]:
    handles = []
    pending: dict[int, list[list[Label]]] = {}

    def pre(name: str) -> Any:
        def fn(module: nn.Module, args: Any, kwargs: Any) -> None:
            labels = [lab for t in tensors_in((args, kwargs)) for lab in tracer.labels(t)]
            pending.setdefault(id(module), []).append(labels)

        return fn

    def post(name: str) -> Any:
        def fn(module: nn.Module, args: Any, output: Any) -> None:
            in_labels = pending[id(module)].pop()
            first = next(tensors_in(output), None)
            if first is not None:
                tracer.calls.append((name, in_labels, tracer.labels(first)))

        return fn

    try:
        for name, module in model.named_modules():
            if not name:
                continue
            handles.append(module.register_forward_pre_hook(pre(name), with_kwargs=True))
            handles.append(module.register_forward_hook(post(name)))
        yield
    finally:
        for h in handles:
            h.remove()


@contextmanager
def _eval_mode(*models: nn.Module) -> Iterator[None]:
    """Switch models to eval mode and restore every submodule's own flag afterwards."""
    flags = [(m, m.training) for model in models for m in model.modules()]
    try:
        for model in models:
            model.eval()
        yield
    finally:
        for m, flag in flags:
            m.training = flag


def _example_args(example_input: Any) -> tuple[tuple[Any, ...], dict[str, Any]]:
    if isinstance(example_input, Tensor):
        return (example_input,), {}
    if isinstance(example_input, Mapping):
        return (), dict(example_input)
    if isinstance(example_input, (tuple, list)):
        return tuple(example_input), {}
    raise WeightspaceValueError(
        f"`example_input` must be a tensor, a tuple of positional inputs or a dict of keyword "
        f"inputs, got {type(example_input).__name__}; pass e.g. torch.zeros(1, 784)"
    )


_HAND_WRITTEN = (
    "write the spec by hand instead: PermutationSpec({'fc1.weight': ('h1', None), "
    "'fc1.bias': ('h1',), 'fc2.weight': (None, 'h1')}) lists, for every tensor a group moves, "
    "which axis it moves"
)


def permutation_spec(
    model: nn.Module,
    example_input: Any,
    *,
    method: Literal["auto", "fx", "record"] = "auto",
) -> PermutationSpec:
    """Derive the hidden-unit permutation groups of a model from one forward pass.

    Each output axis of a linear layer, convolution or embedding starts a group; the group
    follows its units through elementwise ops (ReLU, GELU, dropout, ...), batch norm (weight,
    bias and running statistics move with the channel), layer norm over the permuted axis,
    pooling, residual additions (which tie the groups of both operands into one), ``flatten``
    after a convolution (a channel becomes a block of ``H * W`` features, see :class:`Axis`)
    and into the input axis of the next layer. Single-head attention written with matmuls ties
    the query and key projections into one group. :class:`torch.nn.MultiheadAttention` keeps
    its head-internal axes fixed and lets the residual stream through (input axis of the
    in-projection, output axis of the out-projection). An operation that is not known to
    commute with a permutation fixes the axes it touches, so the spec is conservative: a model
    permuted by it always computes the same function. The model's input and output axes are
    never permuted.

    The pass is observed with :func:`torch.fx.symbolic_trace`; a model that does not trace
    symbolically (data-dependent control flow) is followed by recording the torch calls of a
    plain forward pass instead, which sees only the branch that ``example_input`` takes. The
    model runs once, in eval mode under :func:`torch.no_grad`; its modes are restored and
    nothing else is changed.

    Args:
        model: The network.
        example_input: An input batch (tensor), a tuple of positional inputs, or a dict of
            keyword inputs. A batch of two is enough.
        method: ``"fx"`` (symbolic tracing only), ``"record"`` (recording only) or ``"auto"``
            (fx, then recording if fx fails).

    Returns:
        A :class:`PermutationSpec` with sizes and producing modules (for
        :func:`activation_matching`). A group is named after the first module that produces
        it (a residual stream after its first producer).

    Raises:
        WeightspaceValueError: if the model cannot be traced or run on ``example_input``;
            the message shows how to write the spec by hand.

    Example:
        >>> import torch
        >>> from torch import nn
        >>> net = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 8), nn.ReLU(),
        ...                     nn.Linear(8, 2))
        >>> spec = permutation_spec(net, torch.zeros(2, 4))
        >>> spec
        PermutationSpec(groups={'0': 8, '2': 8}, tensors=5)
        >>> print(spec.describe())
        0 (8 units): 0.weight[0], 0.bias[0], 2.weight[1]
        2 (8 units): 2.weight[0], 2.bias[0], 4.weight[1]
    """
    if not isinstance(model, nn.Module):
        raise WeightspaceValueError(
            f"`model` must be a torch.nn.Module, got {type(model).__name__}; for a bare state "
            f"dict, {_HAND_WRITTEN}"
        )
    if method not in ("auto", "fx", "record"):
        raise WeightspaceValueError(f"`method` must be 'auto', 'fx' or 'record', got {method!r}")
    args, kwargs = _example_args(example_input)
    fx_error: str | None = None
    if method in ("auto", "fx"):
        try:
            gm = torch.fx.symbolic_trace(model)
        except Exception as err:
            fx_error = f"{type(err).__name__}: {err}".strip()
            if method == "fx":
                raise WeightspaceValueError(
                    f"`model` ({type(model).__name__}) cannot be traced by torch.fx "
                    f"({_short(fx_error)}); pass `method='record'` to follow one forward pass "
                    f"instead, or {_HAND_WRITTEN}"
                ) from None
        else:
            if kwargs:
                fx_error = "keyword inputs"
            else:
                return _run(model, lambda tr: _FxRunner(gm, tr).run(*args), args, kwargs)
    return _run(
        model,
        None,
        args,
        kwargs,
        context=f" (torch.fx failed: {_short(fx_error)})" * bool(fx_error),
    )


def _short(text: str | None, limit: int = 160) -> str:
    text = (text or "").splitlines()[0] if text else ""
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _run(
    model: nn.Module,
    runner: Callable[[_Tracer], Any] | None,
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
    context: str = "",
) -> PermutationSpec:
    tracer = _Tracer(model)
    try:
        with torch.no_grad(), _eval_mode(model), _watch_modules(model, tracer):
            if runner is not None:
                outputs = runner(tracer)
            else:
                with _Recorder(tracer):
                    outputs = model(*args, **kwargs)
    except WeightspaceValueError:
        raise
    except Exception as err:
        raise WeightspaceValueError(
            f"`model` ({type(model).__name__}) could not be traced on `example_input`"
            f"{context}: {type(err).__name__}: {_short(str(err))}; check that `model(*example_"
            f"input)` runs, or {_HAND_WRITTEN}"
        ) from None
    return tracer.spec(outputs)
