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
"""

from __future__ import annotations

import logging
import math
import re
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any, Literal

import torch
import torch.fx
from torch import Tensor, nn
from torch.overrides import TorchFunctionMode

from weightspace._errors import WeightspaceValueError
from weightspace.align._spec import Axis, PermutationSpec

__all__ = ["permutation_spec"]

logger = logging.getLogger(__name__)

Label = tuple[int, int] | None  # (variable, repeat) or None: an axis that is never permuted
Labels = tuple[Label, ...]


# ---- union-find over axis variables ---------------------------------------------------------


class _Vars:
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


# ---- the tracer -----------------------------------------------------------------------------


def _tensors(obj: Any) -> Iterator[Tensor]:
    if isinstance(obj, Tensor):
        yield obj
    elif isinstance(obj, (list, tuple)):
        for o in obj:
            yield from _tensors(o)
    elif isinstance(obj, Mapping):
        for o in obj.values():
            yield from _tensors(o)


class _Tracer:
    def __init__(self, model: nn.Module) -> None:
        self.vars = _Vars()
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
        for t in _tensors(obj):
            for label in self.labels(t):
                self.vars.fix(label, reason)

    # dispatch ---------------------------------------------------------------------------------

    def on_call(self, func: Any, args: Sequence[Any], kwargs: Mapping[str, Any], out: Any) -> None:
        name, reflected = _op_name(func, args)
        if name == "setitem":  # an in-place write into some positions of a tensor
            self.fix_all((args, kwargs), "writing into a permuted axis")
            return
        if not any(True for _ in _tensors(out)):
            return  # sizes, dtypes, python numbers: nothing to label
        if reflected and len(args) >= 2:
            args = (args[1], args[0], *args[2:])
        if name == "getattr" and len(args) == 2 and isinstance(args[1], str):
            name, args = f"prop:{args[1]}", args[:1]
        if name == "getitem" and not isinstance(args[0], Tensor):
            return  # indexing a tuple of outputs: the tensor already has its labels
        handler = _HANDLERS.get(name)
        if handler is None:
            for pattern, h in _PATTERNS:
                if pattern.fullmatch(name):
                    handler = h
                    break
        try:
            if handler is None:
                raise _Unknown
            handler(self, name, list(args), dict(kwargs), out)
        except _Unknown:
            if name not in self.unknown:
                self.unknown.add(name)
                logger.debug("align: %r is not known to commute with permutations", name)
            self._opaque(name, args, kwargs, out)
        except Exception as err:  # an unexpected signature: stay safe, fix everything
            logger.debug("align: could not follow %r (%s); its inputs are fixed", name, err)
            self._opaque(name, args, kwargs, out)

    def _opaque(self, name: str, args: Any, kwargs: Any, out: Any) -> None:
        self.fix_all((args, kwargs), f"used by {name!r}")
        for t in _tensors(out):
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


class _Unknown(Exception):
    pass


_REFLECTED = {"radd", "rsub", "rmul", "rtruediv", "rdiv", "rfloordiv", "rpow", "rmatmul", "rmod"}
_INPLACE = {
    "iadd", "isub", "imul", "itruediv", "idiv", "ifloordiv", "ipow", "imatmul", "imod",
    "iand", "ior", "ixor",
}  # fmt: skip


def _op_name(func: Any, args: Sequence[Any]) -> tuple[str, bool]:
    if isinstance(func, str):
        name = func
    elif func is getattr:
        name = "getattr"
    else:
        name = getattr(func, "__name__", None) or type(func).__name__
        if name == "__get__":
            owner = getattr(func, "__self__", None)
            return f"prop:{getattr(owner, '__name__', '?')}", False
    reflected = False
    if name.startswith("__") and name.endswith("__"):
        name = name[2:-2]
    if name in _REFLECTED:
        name, reflected = name[1:], True
    elif name in _INPLACE:
        name = name[1:]
    elif name.endswith("_") and not name.startswith("_"):
        name = name[:-1]
    return name, reflected


# ---- handlers -------------------------------------------------------------------------------

Handler = Callable[[_Tracer, str, list[Any], dict[str, Any], Any], None]
_HANDLERS: dict[str, Handler] = {}
_PATTERNS: list[tuple[re.Pattern[str], Handler]] = []


def _register(*names: str) -> Callable[[Handler], Handler]:
    def deco(fn: Handler) -> Handler:
        for n in names:
            _HANDLERS[n] = fn
        return fn

    return deco


def _words(text: str) -> list[str]:
    return text.split()


def _arg(args: Sequence[Any], kwargs: Mapping[str, Any], pos: int, *names: str) -> Any:
    for n in names:
        if n in kwargs:
            return kwargs[n]
    return args[pos] if len(args) > pos else None


def _norm_dim(d: int, ndim: int) -> int:
    return d + ndim if d < 0 else d


def _broadcast(tr: _Tracer, tensors: Sequence[Tensor], reason: str) -> list[Label]:
    nd = max(t.ndim for t in tensors)
    ops = [(t, tr.labels(t)) for t in tensors]
    out: list[Label] = []
    for d in range(nd):
        label: Label = None
        size = 1
        for t, labels in ops:
            k = d - (nd - t.ndim)
            if k < 0:
                continue
            s = int(t.shape[k])
            if size == 1:
                label, size = labels[k], s
            elif s != 1:
                label = tr.vars.unify(label, size, labels[k], s, reason)
        out.append(label)
    return out


_POINTWISE = _words("""
add sub mul div truediv true_divide floordiv floor_divide pow float_power mod remainder fmod
and or xor bitwise_and bitwise_or bitwise_xor logical_and logical_or logical_xor logical_not
neg negative pos positive abs absolute invert bitwise_not eq ne lt le gt ge greater less
greater_equal less_equal not_equal maximum minimum fmax fmin where masked_fill clamp clip
clamp_min clamp_max lerp addcmul addcdiv hypot atan2 copysign multiply subtract rsub sign sgn
exp exp2 expm1 log log2 log10 log1p sqrt rsqrt square reciprocal sin cos tan sinh cosh tanh asin
acos atan erf erfc erfinv sigmoid logit relu relu6 gelu silu mish elu selu celu leaky_relu
rrelu hardtanh hardswish hardsigmoid hardshrink softshrink tanhshrink softplus softsign
threshold logsigmoid dropout dropout1d dropout2d dropout3d alpha_dropout feature_alpha_dropout
feature_dropout round floor ceil trunc frac nan_to_num isnan isinf isfinite signbit heaviside
xlogy sinc deg2rad rad2deg softmax log_softmax softmin normalize gumbel_softmax zero fill copy
nextafter
""")


@_register(*_POINTWISE)
def _pointwise(tr: _Tracer, name: str, args: list[Any], kwargs: dict[str, Any], out: Any) -> None:
    tensors = [t for t in _tensors((args, kwargs)) if isinstance(t, Tensor)]
    if not tensors:
        raise _Unknown
    labels = _broadcast(tr, tensors, f"broadcast in {name!r}")
    for o in _tensors(out):
        tr.set(o, labels if o.ndim == len(labels) else None, name)


_CAST = _words("""
to type type_as float double half bfloat16 int long short bool cpu cuda contiguous clone detach
requires_grad prop:data prop:real alias identity pin_memory
""")


@_register(*_CAST)
def _cast(tr: _Tracer, name: str, args: list[Any], kwargs: dict[str, Any], out: Any) -> None:
    x = args[0]
    if not isinstance(x, Tensor) or not isinstance(out, Tensor) or out.shape != x.shape:
        raise _Unknown
    tr.set(out, tr.labels(x), name)


@_register("zeros_like", "ones_like", "full_like", "empty_like")
def _like(tr: _Tracer, name: str, args: list[Any], kwargs: dict[str, Any], out: Any) -> None:
    x = args[0]
    if not isinstance(out, Tensor) or out.shape != x.shape:
        raise _Unknown
    tr.set(out, tr.labels(x), name)  # a constant in every position: any order will do


@_register(
    "rand_like", "randn_like", "randint_like", "new_zeros", "new_ones", "new_full",
    "new_empty", "new_tensor",
)  # fmt: skip
def _fresh(tr: _Tracer, name: str, args: list[Any], kwargs: dict[str, Any], out: Any) -> None:
    tr.set(out, None, name)  # a new tensor that only borrows a shape or dtype


def _reshape(tr: _Tracer, labels: Labels, src: Sequence[int], dst: Sequence[int]) -> list[Label]:
    """Labels of a reshape of a tensor of shape ``src`` into ``dst``."""
    if math.prod(src) != math.prod(dst):
        raise _Unknown
    ins = [(labels[i], s) for i, s in enumerate(src) if s != 1]
    for i, s in enumerate(src):
        if s == 1:
            tr.vars.fix(labels[i], "size-1 axis")  # harmless: a size-1 group is never used
    outs = [j for j, s in enumerate(dst) if s != 1]
    result: list[Label] = [None] * len(dst)
    i = j = 0
    while i < len(ins) and j < len(outs):
        i2, j2 = i + 1, j + 1
        p, q = ins[i][1], dst[outs[j]]
        while p != q:
            if p < q:
                p *= ins[i2][1]
                i2 += 1
            else:
                q *= dst[outs[j2]]
                j2 += 1
        block_in, block_out = ins[i:i2], outs[j:j2]
        if len(block_in) == 1 and len(block_out) == 1:
            result[block_out[0]] = block_in[0][0]
        elif len(block_out) == 1:  # merge (flatten)
            head, rest = block_in[0], block_in[1:]
            if all(lab is None for lab, _ in rest):
                result[block_out[0]] = (
                    None if head[0] is None else (head[0][0], head[0][1] * p // head[1])
                )
            else:
                for lab, _ in block_in:
                    tr.vars.fix(lab, "reshape mixes permuted axes")
        elif len(block_in) == 1:  # split (unflatten)
            lab = block_in[0][0]
            if lab is not None:
                tail = math.prod(dst[k] for k in block_out[1:])
                if lab[1] % tail == 0:
                    result[block_out[0]] = (lab[0], lab[1] // tail)
                else:
                    tr.vars.fix(lab, "reshape splits a permuted axis")
        else:
            for lab, _ in block_in:
                tr.vars.fix(lab, "reshape mixes permuted axes")
        i, j = i2, j2
    return result


@_register(
    "view", "reshape", "flatten", "unflatten", "view_as", "reshape_as", "squeeze", "unsqueeze",
    "ravel", "atleast_1d", "atleast_2d", "atleast_3d",
)  # fmt: skip
def _reshape_op(tr: _Tracer, name: str, args: list[Any], kwargs: dict[str, Any], out: Any) -> None:
    x = args[0]
    if not isinstance(x, Tensor) or not isinstance(out, Tensor):
        raise _Unknown
    tr.set(out, _reshape(tr, tr.labels(x), list(x.shape), list(out.shape)), name)


_PRIMES = (2, 3, 5, 7, 11, 13, 17, 19, 23, 29, 31, 37, 41, 43, 47, 53)


@_register("permute", "transpose", "swapaxes", "swapdims", "t", "movedim", "moveaxis", "adjoint")
def _permute_dims(
    tr: _Tracer, name: str, args: list[Any], kwargs: dict[str, Any], out: Any
) -> None:
    x = args[0]
    if not isinstance(x, Tensor) or not isinstance(out, Tensor) or x.ndim > len(_PRIMES):
        raise _Unknown
    probe = torch.empty(_PRIMES[: x.ndim], device="meta")
    moved = getattr(torch.Tensor, name)(probe, *args[1:], **kwargs)
    source = [_PRIMES.index(int(s)) for s in moved.shape]
    labels = tr.labels(x)
    tr.set(out, [labels[s] for s in source], name)


@_register("prop:T", "prop:mT", "prop:H", "prop:mH")
def _prop_transpose(
    tr: _Tracer, name: str, args: list[Any], kwargs: dict[str, Any], out: Any
) -> None:
    x = args[0]
    labels = list(tr.labels(x))
    if name in ("prop:T", "prop:H"):
        labels.reverse()
    else:
        labels[-2], labels[-1] = labels[-1], labels[-2]
    tr.set(out, labels, name)


@_register("expand", "expand_as", "broadcast_to", "repeat", "tile")
def _expand(tr: _Tracer, name: str, args: list[Any], kwargs: dict[str, Any], out: Any) -> None:
    x = args[0]
    if not isinstance(x, Tensor) or not isinstance(out, Tensor) or out.ndim < x.ndim:
        raise _Unknown
    labels = tr.labels(x)
    res: list[Label] = [None] * out.ndim
    offset = out.ndim - x.ndim
    for k in range(x.ndim):
        if int(x.shape[k]) == int(out.shape[offset + k]):
            res[offset + k] = labels[k]
        elif int(x.shape[k]) != 1:
            tr.vars.fix(labels[k], f"{name!r} repeats a permuted axis")
    tr.set(out, res, name)


@_register("getitem")
def _getitem(tr: _Tracer, name: str, args: list[Any], kwargs: dict[str, Any], out: Any) -> None:
    x, idx = args[0], args[1]
    if not isinstance(idx, tuple):
        idx = (idx,)
    if any(isinstance(i, (Tensor, list, bool)) for i in idx):
        raise _Unknown
    labels = tr.labels(x)
    consumed = sum(1 for i in idx if i is not None and i is not Ellipsis)
    res: list[Label] = []
    d = 0
    for i in idx:
        if i is Ellipsis:
            k = x.ndim - consumed
            res.extend(labels[d : d + k])
            d += k
        elif i is None:
            res.append(None)
        elif isinstance(i, int):
            if int(x.shape[d]) > 1:
                tr.vars.fix(labels[d], "indexing a permuted axis")
            d += 1
        elif isinstance(i, slice):
            size = int(x.shape[d])
            if i.indices(size) == (0, size, 1):
                res.append(labels[d])
            else:
                tr.vars.fix(labels[d], "slicing a permuted axis")
                res.append(None)
            d += 1
        else:
            raise _Unknown
    res.extend(labels[d:])
    tr.set(out, res, name)


@_register("cat", "concat", "concatenate", "stack")
def _cat(tr: _Tracer, name: str, args: list[Any], kwargs: dict[str, Any], out: Any) -> None:
    tensors = [t for t in args[0] if isinstance(t, Tensor)] if args else []
    if not tensors or not isinstance(out, Tensor):
        raise _Unknown
    dim = _arg(args, kwargs, 1, "dim", "axis") or 0
    nd = tensors[0].ndim
    if name == "stack":
        dim = _norm_dim(dim, nd + 1)
        res = list(_broadcast(tr, tensors, "stack"))
        res.insert(dim, None)
    else:
        dim = _norm_dim(dim, nd)
        for t in tensors:
            tr.vars.fix(tr.labels(t)[dim], "concatenating along a permuted axis")
        res = []
        for d in range(nd):
            if d == dim:
                res.append(None)
                continue
            label: Label = None
            for k, t in enumerate(tensors):
                lab = tr.labels(t)[d]
                label = lab if k == 0 else tr.unify(label, lab, int(t.shape[d]), "cat")
            res.append(label)
    tr.set(out, res, name)


@_register("chunk", "split", "unbind", "tensor_split", "split_with_sizes")
def _split(tr: _Tracer, name: str, args: list[Any], kwargs: dict[str, Any], out: Any) -> None:
    x = args[0]
    dim = _arg(args, kwargs, 1 if name == "unbind" else 2, "dim")
    dim = _norm_dim(0 if dim is None else dim, x.ndim)
    labels = list(tr.labels(x))
    tr.vars.fix(labels[dim], f"{name!r} along a permuted axis")
    labels[dim] = None
    for o in _tensors(out):
        tr.set(o, labels if o.ndim == x.ndim else labels[:dim] + labels[dim + 1 :], name)


# ops that treat positions along one axis differently: the axis is fixed
_ALONG = {
    "sort": (1, -1), "argsort": (1, -1), "topk": (2, -1), "kthvalue": (2, -1),
    "cumsum": (1, None), "cumprod": (1, None), "cummax": (1, None), "cummin": (1, None),
    "logcumsumexp": (1, None), "index_select": (1, None), "narrow": (1, None),
    "select": (1, None), "flip": (1, None), "roll": (2, None), "argmax": (1, None),
    "argmin": (1, None), "median": (1, "all"), "nanmedian": (1, "all"), "mode": (1, -1),
    "max": (1, "all"), "min": (1, "all"), "gather": (1, None), "index_add": (1, None),
}  # fmt: skip


@_register(*_ALONG)
def _along(tr: _Tracer, name: str, args: list[Any], kwargs: dict[str, Any], out: Any) -> None:
    x = args[0]
    if name in ("max", "min") and len(args) > 1 and isinstance(args[1], Tensor):
        return _pointwise(tr, name, args, kwargs, out)
    if name in ("max", "min") and "other" in kwargs:
        return _pointwise(tr, name, args, kwargs, out)
    pos, default = _ALONG[name]
    dim = _arg(args, kwargs, pos, "dim", "dims")
    labels = list(tr.labels(x))
    if dim is None:
        if default == "all":  # a symmetric reduction to a scalar
            for o in _tensors(out):
                tr.set(o, None, name)
            return
        if default is None:
            raise _Unknown
        dim = default
    dims = [dim] if isinstance(dim, int) else list(dim)
    dims = [_norm_dim(d, x.ndim) for d in dims]
    for d in dims:
        tr.vars.fix(labels[d], f"{name!r} along a permuted axis")
        labels[d] = None
    removed = [lab for d, lab in enumerate(labels) if d not in dims]
    for o in _tensors(out):
        tr.set(o, labels if o.ndim == x.ndim else removed, name)


_REDUCE = {
    "sum": 1, "mean": 1, "nansum": 1, "nanmean": 1, "amax": 1, "amin": 1, "logsumexp": 1,
    "prod": 1, "all": 1, "any": 1, "count_nonzero": 1, "var": 1, "std": 1, "var_mean": 1,
    "std_mean": 1, "norm": 2, "linalg_vector_norm": 2, "aminmax": 1,
}  # fmt: skip


@_register(*_REDUCE)
def _reduce(tr: _Tracer, name: str, args: list[Any], kwargs: dict[str, Any], out: Any) -> None:
    x = args[0]
    dim = _arg(args, kwargs, _REDUCE[name], "dim", "axis")
    if isinstance(dim, (bool, str)):
        dim = None
    labels = list(tr.labels(x))
    if dim is None:
        dims = list(range(x.ndim))
    else:
        dims = [_norm_dim(d, x.ndim) for d in ([dim] if isinstance(dim, int) else dim)]
    kept = [lab for d, lab in enumerate(labels) if d not in dims]
    keep = [None if d in dims else lab for d, lab in enumerate(labels)]
    for o in _tensors(out):
        tr.set(o, keep if o.ndim == x.ndim and dims else kept, name)


def _matmul_labels(tr: _Tracer, a: Tensor, b: Tensor, name: str) -> list[Label]:
    la, lb = tr.labels(a), tr.labels(b)
    if a.ndim == 0 or b.ndim == 0:
        raise _Unknown
    if b.ndim == 1:
        tr.unify(la[-1], lb[0], int(b.shape[0]), name)
        return list(la[:-1])
    if a.ndim == 1:
        tr.unify(la[0], lb[-2], int(a.shape[0]), name)
        return [*lb[:-2], lb[-1]]
    tr.unify(la[-1], lb[-2], int(a.shape[-1]), name)
    ba, bb = a.shape[:-2], b.shape[:-2]
    nd = max(len(ba), len(bb))
    batch = []
    for d in range(nd):
        ka, kb = d - (nd - len(ba)), d - (nd - len(bb))
        sa = int(ba[ka]) if ka >= 0 else 1
        sb = int(bb[kb]) if kb >= 0 else 1
        lab_a = la[ka] if ka >= 0 else None
        lab_b = lb[kb] if kb >= 0 else None
        batch.append(tr.vars.unify(lab_a, sa, lab_b, sb, name))
    return [*batch, la[-2], lb[-1]]


@_register("matmul", "mm", "bmm", "mv", "dot", "inner_product")
def _matmul(tr: _Tracer, name: str, args: list[Any], kwargs: dict[str, Any], out: Any) -> None:
    a, b = args[0], args[1]
    if not (isinstance(a, Tensor) and isinstance(b, Tensor) and isinstance(out, Tensor)):
        raise _Unknown
    tr.set(out, _matmul_labels(tr, a, b, name), name)


@_register("addmm", "baddbmm", "addbmm", "addmv")
def _addmm(tr: _Tracer, name: str, args: list[Any], kwargs: dict[str, Any], out: Any) -> None:
    bias, a, b = args[0], args[1], args[2]
    labels = _matmul_labels(tr, a, b, name)
    if name == "addbmm":
        raise _Unknown
    lb = tr.labels(bias)
    res = []
    offset = len(labels) - bias.ndim
    for d, lab in enumerate(labels):
        k = d - offset
        if k >= 0 and int(bias.shape[k]) != 1:
            lab = tr.unify(lab, lb[k], int(bias.shape[k]), name)
        res.append(lab)
    tr.set(out, res, name)


@_register("linear")
def _linear(tr: _Tracer, name: str, args: list[Any], kwargs: dict[str, Any], out: Any) -> None:
    x, w = args[0], _arg(args, kwargs, 1, "weight")
    b = _arg(args, kwargs, 2, "bias")
    lx, lw = tr.labels(x), tr.labels(w)
    if w.ndim != 2:
        raise _Unknown
    tr.unify(lx[-1], lw[1], int(w.shape[1]), "linear input")
    if isinstance(b, Tensor):
        tr.unify(tr.labels(b)[0], lw[0], int(w.shape[0]), "linear bias")
    tr.set(out, [*lx[:-1], lw[0]], name)


@_register("conv1d", "conv2d", "conv3d", "conv_transpose1d", "conv_transpose2d", "conv_transpose3d")
def _conv(tr: _Tracer, name: str, args: list[Any], kwargs: dict[str, Any], out: Any) -> None:
    x, w = args[0], _arg(args, kwargs, 1, "weight")
    b = _arg(args, kwargs, 2, "bias")
    transpose = name.startswith("conv_transpose")
    groups = _arg(args, kwargs, 7 if transpose else 6, "groups") or 1
    spatial = w.ndim - 2
    c = x.ndim - spatial - 1
    lx, lw = tr.labels(x), tr.labels(w)
    for d in range(2, w.ndim):
        tr.vars.fix(lw[d], "convolution kernel axis")
    in_axis, out_axis = (0, 1) if transpose else (1, 0)
    out_label: Label
    if groups == 1:
        tr.unify(lx[c], lw[in_axis], int(x.shape[c]), f"{name} input")
        out_label = lw[out_axis]
    elif not transpose and groups == int(x.shape[c]) == int(w.shape[0]):  # depthwise
        tr.unify(lx[c], lw[0], int(w.shape[0]), "depthwise convolution")
        out_label = lx[c]
    else:
        tr.vars.fix(lx[c], "grouped convolution")
        tr.vars.fix(lw[0], "grouped convolution")
        tr.vars.fix(lw[1], "grouped convolution")
        out_label = None
    if isinstance(b, Tensor):
        size = int(b.shape[0])
        out_label = tr.unify(out_label, tr.labels(b)[0], size, "convolution bias")
    res: list[Label] = [*lx[:c], out_label] + [None] * spatial
    tr.set(out, res, name)


@_register("batch_norm", "instance_norm")
def _batch_norm(tr: _Tracer, name: str, args: list[Any], kwargs: dict[str, Any], out: Any) -> None:
    x = args[0]
    lx = list(tr.labels(x))
    c = 1 if x.ndim > 1 else 0
    size = int(x.shape[c])
    label = lx[c]
    for pos, key in ((1, "running_mean"), (2, "running_var"), (3, "weight"), (4, "bias")):
        t = _arg(args, kwargs, pos, key)
        if isinstance(t, Tensor):
            label = tr.unify(label, tr.labels(t)[0], size, name)
    lx[c] = label
    tr.set(out, lx, name)


@_register("group_norm")
def _group_norm(tr: _Tracer, name: str, args: list[Any], kwargs: dict[str, Any], out: Any) -> None:
    x, groups = args[0], _arg(args, kwargs, 1, "num_groups")
    lx = list(tr.labels(x))
    size = int(x.shape[1])
    label = lx[1]
    tensors = [t for t in (_arg(args, kwargs, 2, "weight"), _arg(args, kwargs, 3, "bias"))]
    if groups in (1, size):
        for t in tensors:
            if isinstance(t, Tensor):
                label = tr.unify(label, tr.labels(t)[0], size, name)
    else:
        tr.vars.fix(label, "group norm over several channels")
        tr.fix_all(tensors, "group norm over several channels")
        label = None
    lx[1] = label
    tr.set(out, lx, name)


@_register("layer_norm", "rms_norm")
def _layer_norm(tr: _Tracer, name: str, args: list[Any], kwargs: dict[str, Any], out: Any) -> None:
    x, shape = args[0], _arg(args, kwargs, 1, "normalized_shape")
    k = len(shape)
    lx = list(tr.labels(x))
    params = [_arg(args, kwargs, 2, "weight")]
    if name == "layer_norm":
        params.append(_arg(args, kwargs, 3, "bias"))
    for i in range(k):
        d = x.ndim - k + i
        size = int(x.shape[d])
        for t in params:
            if isinstance(t, Tensor):
                lx[d] = tr.unify(lx[d], tr.labels(t)[i], size, name)
    tr.set(out, lx, name)


@_register("prelu")
def _prelu(tr: _Tracer, name: str, args: list[Any], kwargs: dict[str, Any], out: Any) -> None:
    x, w = args[0], args[1]
    if w.numel() == 1:
        return tr.set(out, tr.labels(x), name)
    lx = list(tr.labels(x))
    c = 1 if x.ndim > 1 else 0
    lx[c] = tr.unify(lx[c], tr.labels(w)[0], int(x.shape[c]), name)
    tr.set(out, lx, name)


@_register("embedding")
def _embedding(tr: _Tracer, name: str, args: list[Any], kwargs: dict[str, Any], out: Any) -> None:
    a, b = args[0], args[1]
    # F.embedding(input, weight) and torch.embedding(weight, input): the weight is the float one
    ids, w = (b, a) if a.is_floating_point() else (a, b)
    lw = tr.labels(w)
    tr.vars.fix(lw[0], "embedding rows are looked up by index")
    tr.set(out, [*tr.labels(ids), lw[1]], name)


@_register("scaled_dot_product_attention")
def _sdpa(tr: _Tracer, name: str, args: list[Any], kwargs: dict[str, Any], out: Any) -> None:
    q, k, v = args[0], args[1], args[2]
    if not (q.ndim == k.ndim == v.ndim) or int(q.shape[-3 if q.ndim > 2 else 0]) != int(
        k.shape[-3 if k.ndim > 2 else 0]
    ):
        raise _Unknown  # grouped-query attention: keep it simple
    lq, lk, lv = tr.labels(q), tr.labels(k), tr.labels(v)
    tr.unify(lq[-1], lk[-1], int(q.shape[-1]), "attention scores")
    tr.unify(lk[-2], lv[-2], int(k.shape[-2]), "attention keys and values")
    for lab in (*lq[:-2], *lk[:-2], *lv[:-2]):
        tr.vars.fix(lab, "attention batch axis")
    tr.set(out, [*lq[:-1], lv[-1]], name)


@_register("multi_head_attention_forward")
def _mha(tr: _Tracer, name: str, args: list[Any], kwargs: dict[str, Any], out: Any) -> None:
    import inspect

    bound = inspect.signature(nn.functional.multi_head_attention_forward).bind(*args, **kwargs)
    p = bound.arguments
    q, k, v = p["query"], p["key"], p["value"]
    e = int(q.shape[-1])
    lq, lk, lv = tr.labels(q), tr.labels(k), tr.labels(v)
    if p.get("use_separate_proj_weight", False):
        for x, lx, key in ((q, lq, "q_proj_weight"), (k, lk, "k_proj_weight")):
            w = p[key]
            tr.unify(lx[-1], tr.labels(w)[1], int(x.shape[-1]), name)
            tr.vars.fix(tr.labels(w)[0], "attention heads")
        w = p["v_proj_weight"]
        tr.unify(lv[-1], tr.labels(w)[1], int(v.shape[-1]), name)
        tr.vars.fix(tr.labels(w)[0], "attention heads")
    else:
        lw = tr.labels(p["in_proj_weight"])
        for lx in (lq, lk, lv):
            tr.unify(lx[-1], lw[1], e, name)
        tr.vars.fix(lw[0], "attention heads")
    tr.fix_all(
        [p.get("in_proj_bias"), p.get("bias_k"), p.get("bias_v"), p.get("static_k"),
         p.get("static_v")],
        "attention heads",
    )  # fmt: skip
    for lab in (*lq[:-1], *lk[:-1], *lv[:-1]):
        tr.vars.fix(lab, "attention sequence axis")
    lo = tr.labels(p["out_proj_weight"])
    tr.vars.fix(lo[1], "attention heads")
    label = lo[0]
    bias = p.get("out_proj_bias")
    if isinstance(bias, Tensor):
        label = tr.unify(label, tr.labels(bias)[0], int(bias.shape[0]), name)
    attn, weights = out
    tr.set(attn, [*lq[:-1], label], name)
    tr.set(weights, None, name)


def _pool(tr: _Tracer, name: str, args: list[Any], kwargs: dict[str, Any], out: Any) -> None:
    x = args[0]
    m = re.search(r"([123])d", name)
    spatial = int(m.group(1)) if m else x.ndim - 2
    lx = tr.labels(x)
    keep = list(lx[: x.ndim - spatial])
    for o in _tensors(out):
        tr.set(o, keep + [None] * spatial if o.ndim == x.ndim else None, name)


_PATTERNS.append((re.compile(r"(adaptive_)?(max|avg|lp)_pool[123]d(_with_indices)?"), _pool))
_PATTERNS.append((re.compile(r"fractional_max_pool[23]d(_with_indices)?"), _pool))
_PATTERNS.append((re.compile(r"interpolate|upsample.*"), _pool))


@_register("pad")
def _pad(tr: _Tracer, name: str, args: list[Any], kwargs: dict[str, Any], out: Any) -> None:
    x, pad = args[0], _arg(args, kwargs, 1, "pad")
    lx = list(tr.labels(x))
    for i in range(len(pad) // 2):
        d = x.ndim - 1 - i
        if pad[2 * i] or pad[2 * i + 1]:
            tr.vars.fix(lx[d], "padding a permuted axis")
            lx[d] = None
    tr.set(out, lx, name)


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
            labels = [lab for t in _tensors((args, kwargs)) for lab in tracer.labels(t)]
            pending.setdefault(id(module), []).append(labels)

        return fn

    def post(name: str) -> Any:
        def fn(module: nn.Module, args: Any, output: Any) -> None:
            in_labels = pending[id(module)].pop()
            first = next(_tensors(output), None)
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
