"""How each torch operation moves the hidden axes of its inputs to its outputs (private).

One *handler* per family of operations (pointwise, reshape, reductions, matmul, linear,
convolution, norms, attention, pooling, ...) reads the labels of the input axes from a
:class:`Tracer`, ties the axes the operation relates (:meth:`AxisVars.unify`), fixes the axes it
does not commute with, and labels the outputs. An operation without a handler raises
:class:`Unknown`, and the tracer then fixes every axis it touches: the rules are conservative,
so a network permuted along the groups they leave always computes the same function.
"""

from __future__ import annotations

import inspect
import math
import re
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Protocol

import torch
from torch import Tensor, nn

from weightspace.align._trace_vars import AxisVars, Label, Labels, tensors_in

__all__ = ["Handler", "Tracer", "Unknown", "find_handler", "op_name"]


class Tracer(Protocol):
    """What a handler needs from the tracer: axis labels of tensors and the union-find."""

    vars: AxisVars

    def labels(self, t: Tensor) -> Labels:
        """The labels of the axes of ``t`` (fresh variables for a parameter)."""
        ...

    def set(self, t: Any, labels: Sequence[Label] | None, reason: str) -> None:
        """Label the axes of an output ``t`` (``None``: unpermuted)."""
        ...

    def unify(self, a: Label, b: Label, size: int, reason: str) -> Label:
        """Tie two axes of length ``size``."""
        ...

    def fix_all(self, obj: Any, reason: str) -> None:
        """Fix every axis of every tensor in ``obj``."""
        ...


class Unknown(Exception):
    """Raised by a handler that cannot follow a call: the tracer then fixes its axes."""


_REFLECTED = {"radd", "rsub", "rmul", "rtruediv", "rdiv", "rfloordiv", "rpow", "rmatmul", "rmod"}
_INPLACE = {
    "iadd", "isub", "imul", "itruediv", "idiv", "ifloordiv", "ipow", "imatmul", "imod",
    "iand", "ior", "ixor",
}  # fmt: skip


def op_name(func: Any, args: Sequence[Any]) -> tuple[str, bool]:
    """The handler name of a called ``func`` and whether its operands come reflected.

    Dunder, in-place (``iadd``, ``relu_``) and reflected (``radd``) spellings map to the plain
    operation (``add``, ``relu``); a property read through ``__get__`` becomes ``prop:<name>``.
    """
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

Handler = Callable[[Tracer, str, list[Any], dict[str, Any], Any], None]
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


def _broadcast(tr: Tracer, tensors: Sequence[Tensor], reason: str) -> list[Label]:
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
def _pointwise(tr: Tracer, name: str, args: list[Any], kwargs: dict[str, Any], out: Any) -> None:
    tensors = [t for t in tensors_in((args, kwargs)) if isinstance(t, Tensor)]
    if not tensors:
        raise Unknown
    labels = _broadcast(tr, tensors, f"broadcast in {name!r}")
    for o in tensors_in(out):
        tr.set(o, labels if o.ndim == len(labels) else None, name)


_CAST = _words("""
to type type_as float double half bfloat16 int long short bool cpu cuda contiguous clone detach
requires_grad prop:data prop:real alias identity pin_memory
""")


@_register(*_CAST)
def _cast(tr: Tracer, name: str, args: list[Any], kwargs: dict[str, Any], out: Any) -> None:
    x = args[0]
    if not isinstance(x, Tensor) or not isinstance(out, Tensor) or out.shape != x.shape:
        raise Unknown
    tr.set(out, tr.labels(x), name)


@_register("zeros_like", "ones_like", "full_like", "empty_like")
def _like(tr: Tracer, name: str, args: list[Any], kwargs: dict[str, Any], out: Any) -> None:
    x = args[0]
    if not isinstance(out, Tensor) or out.shape != x.shape:
        raise Unknown
    tr.set(out, tr.labels(x), name)  # a constant in every position: any order will do


@_register(
    "rand_like", "randn_like", "randint_like", "new_zeros", "new_ones", "new_full",
    "new_empty", "new_tensor",
)  # fmt: skip
def _fresh(tr: Tracer, name: str, args: list[Any], kwargs: dict[str, Any], out: Any) -> None:
    tr.set(out, None, name)  # a new tensor that only borrows a shape or dtype


def _reshape(tr: Tracer, labels: Labels, src: Sequence[int], dst: Sequence[int]) -> list[Label]:
    """Labels of a reshape of a tensor of shape ``src`` into ``dst``."""
    if math.prod(src) != math.prod(dst):
        raise Unknown
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
def _reshape_op(tr: Tracer, name: str, args: list[Any], kwargs: dict[str, Any], out: Any) -> None:
    x = args[0]
    if not isinstance(x, Tensor) or not isinstance(out, Tensor):
        raise Unknown
    tr.set(out, _reshape(tr, tr.labels(x), list(x.shape), list(out.shape)), name)


_PRIMES = (2, 3, 5, 7, 11, 13, 17, 19, 23, 29, 31, 37, 41, 43, 47, 53)


@_register("permute", "transpose", "swapaxes", "swapdims", "t", "movedim", "moveaxis", "adjoint")
def _permute_dims(tr: Tracer, name: str, args: list[Any], kwargs: dict[str, Any], out: Any) -> None:
    x = args[0]
    if not isinstance(x, Tensor) or not isinstance(out, Tensor) or x.ndim > len(_PRIMES):
        raise Unknown
    probe = torch.empty(_PRIMES[: x.ndim], device="meta")
    moved = getattr(torch.Tensor, name)(probe, *args[1:], **kwargs)
    source = [_PRIMES.index(int(s)) for s in moved.shape]
    labels = tr.labels(x)
    tr.set(out, [labels[s] for s in source], name)


@_register("prop:T", "prop:mT", "prop:H", "prop:mH")
def _prop_transpose(
    tr: Tracer, name: str, args: list[Any], kwargs: dict[str, Any], out: Any
) -> None:
    x = args[0]
    labels = list(tr.labels(x))
    if name in ("prop:T", "prop:H"):
        labels.reverse()
    else:
        labels[-2], labels[-1] = labels[-1], labels[-2]
    tr.set(out, labels, name)


@_register("expand", "expand_as", "broadcast_to", "repeat", "tile")
def _expand(tr: Tracer, name: str, args: list[Any], kwargs: dict[str, Any], out: Any) -> None:
    x = args[0]
    if not isinstance(x, Tensor) or not isinstance(out, Tensor) or out.ndim < x.ndim:
        raise Unknown
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
def _getitem(tr: Tracer, name: str, args: list[Any], kwargs: dict[str, Any], out: Any) -> None:
    x, idx = args[0], args[1]
    if not isinstance(idx, tuple):
        idx = (idx,)
    if any(isinstance(i, (Tensor, list, bool)) for i in idx):
        raise Unknown
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
            raise Unknown
    res.extend(labels[d:])
    tr.set(out, res, name)


@_register("cat", "concat", "concatenate", "stack")
def _cat(tr: Tracer, name: str, args: list[Any], kwargs: dict[str, Any], out: Any) -> None:
    tensors = [t for t in args[0] if isinstance(t, Tensor)] if args else []
    if not tensors or not isinstance(out, Tensor):
        raise Unknown
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
def _split(tr: Tracer, name: str, args: list[Any], kwargs: dict[str, Any], out: Any) -> None:
    x = args[0]
    dim = _arg(args, kwargs, 1 if name == "unbind" else 2, "dim")
    dim = _norm_dim(0 if dim is None else dim, x.ndim)
    labels = list(tr.labels(x))
    tr.vars.fix(labels[dim], f"{name!r} along a permuted axis")
    labels[dim] = None
    for o in tensors_in(out):
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
def _along(tr: Tracer, name: str, args: list[Any], kwargs: dict[str, Any], out: Any) -> None:
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
            for o in tensors_in(out):
                tr.set(o, None, name)
            return
        if default is None:
            raise Unknown
        dim = default
    dims = [dim] if isinstance(dim, int) else list(dim)
    dims = [_norm_dim(d, x.ndim) for d in dims]
    for d in dims:
        tr.vars.fix(labels[d], f"{name!r} along a permuted axis")
        labels[d] = None
    removed = [lab for d, lab in enumerate(labels) if d not in dims]
    for o in tensors_in(out):
        tr.set(o, labels if o.ndim == x.ndim else removed, name)


_REDUCE = {
    "sum": 1, "mean": 1, "nansum": 1, "nanmean": 1, "amax": 1, "amin": 1, "logsumexp": 1,
    "prod": 1, "all": 1, "any": 1, "count_nonzero": 1, "var": 1, "std": 1, "var_mean": 1,
    "std_mean": 1, "norm": 2, "linalg_vector_norm": 2, "aminmax": 1,
}  # fmt: skip


@_register(*_REDUCE)
def _reduce(tr: Tracer, name: str, args: list[Any], kwargs: dict[str, Any], out: Any) -> None:
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
    for o in tensors_in(out):
        tr.set(o, keep if o.ndim == x.ndim and dims else kept, name)


def _matmul_labels(tr: Tracer, a: Tensor, b: Tensor, name: str) -> list[Label]:
    la, lb = tr.labels(a), tr.labels(b)
    if a.ndim == 0 or b.ndim == 0:
        raise Unknown
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
def _matmul(tr: Tracer, name: str, args: list[Any], kwargs: dict[str, Any], out: Any) -> None:
    a, b = args[0], args[1]
    if not (isinstance(a, Tensor) and isinstance(b, Tensor) and isinstance(out, Tensor)):
        raise Unknown
    tr.set(out, _matmul_labels(tr, a, b, name), name)


@_register("addmm", "baddbmm", "addbmm", "addmv")
def _addmm(tr: Tracer, name: str, args: list[Any], kwargs: dict[str, Any], out: Any) -> None:
    bias, a, b = args[0], args[1], args[2]
    labels = _matmul_labels(tr, a, b, name)
    if name == "addbmm":
        raise Unknown
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
def _linear(tr: Tracer, name: str, args: list[Any], kwargs: dict[str, Any], out: Any) -> None:
    x, w = args[0], _arg(args, kwargs, 1, "weight")
    b = _arg(args, kwargs, 2, "bias")
    lx, lw = tr.labels(x), tr.labels(w)
    if w.ndim != 2:
        raise Unknown
    tr.unify(lx[-1], lw[1], int(w.shape[1]), "linear input")
    if isinstance(b, Tensor):
        tr.unify(tr.labels(b)[0], lw[0], int(w.shape[0]), "linear bias")
    tr.set(out, [*lx[:-1], lw[0]], name)


@_register("conv1d", "conv2d", "conv3d", "conv_transpose1d", "conv_transpose2d", "conv_transpose3d")
def _conv(tr: Tracer, name: str, args: list[Any], kwargs: dict[str, Any], out: Any) -> None:
    x, w = args[0], _arg(args, kwargs, 1, "weight")
    b = _arg(args, kwargs, 2, "bias")
    transpose = name.startswith("conv_transpose")
    groups = _arg(args, kwargs, 6, "groups") or 1  # conv_transpose*d too
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
def _batch_norm(tr: Tracer, name: str, args: list[Any], kwargs: dict[str, Any], out: Any) -> None:
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
def _group_norm(tr: Tracer, name: str, args: list[Any], kwargs: dict[str, Any], out: Any) -> None:
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
def _layer_norm(tr: Tracer, name: str, args: list[Any], kwargs: dict[str, Any], out: Any) -> None:
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
def _prelu(tr: Tracer, name: str, args: list[Any], kwargs: dict[str, Any], out: Any) -> None:
    x, w = args[0], args[1]
    if w.numel() == 1:
        return tr.set(out, tr.labels(x), name)
    lx = list(tr.labels(x))
    c = 1 if x.ndim > 1 else 0
    lx[c] = tr.unify(lx[c], tr.labels(w)[0], int(x.shape[c]), name)
    tr.set(out, lx, name)


@_register("embedding")
def _embedding(tr: Tracer, name: str, args: list[Any], kwargs: dict[str, Any], out: Any) -> None:
    a, b = args[0], args[1]
    # F.embedding(input, weight) and torch.embedding(weight, input): the weight is the float one
    ids, w = (b, a) if a.is_floating_point() else (a, b)
    lw = tr.labels(w)
    tr.vars.fix(lw[0], "embedding rows are looked up by index")
    tr.set(out, [*tr.labels(ids), lw[1]], name)


@_register("scaled_dot_product_attention")
def _sdpa(tr: Tracer, name: str, args: list[Any], kwargs: dict[str, Any], out: Any) -> None:
    q, k, v = args[0], args[1], args[2]
    if not (q.ndim == k.ndim == v.ndim) or int(q.shape[-3 if q.ndim > 2 else 0]) != int(
        k.shape[-3 if k.ndim > 2 else 0]
    ):
        raise Unknown  # grouped-query attention: keep it simple
    lq, lk, lv = tr.labels(q), tr.labels(k), tr.labels(v)
    tr.unify(lq[-1], lk[-1], int(q.shape[-1]), "attention scores")
    tr.unify(lk[-2], lv[-2], int(k.shape[-2]), "attention keys and values")
    for lab in (*lq[:-2], *lk[:-2], *lv[:-2]):
        tr.vars.fix(lab, "attention batch axis")
    tr.set(out, [*lq[:-1], lv[-1]], name)


@_register("multi_head_attention_forward")
def _mha(tr: Tracer, name: str, args: list[Any], kwargs: dict[str, Any], out: Any) -> None:
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


def _pool(tr: Tracer, name: str, args: list[Any], kwargs: dict[str, Any], out: Any) -> None:
    x = args[0]
    m = re.search(r"([123])d", name)
    spatial = int(m.group(1)) if m else x.ndim - 2
    lx = tr.labels(x)
    keep = list(lx[: x.ndim - spatial])
    for o in tensors_in(out):
        tr.set(o, keep + [None] * spatial if o.ndim == x.ndim else None, name)


_PATTERNS.append((re.compile(r"(adaptive_)?(max|avg|lp)_pool[123]d(_with_indices)?"), _pool))
_PATTERNS.append((re.compile(r"fractional_max_pool[23]d(_with_indices)?"), _pool))
_PATTERNS.append((re.compile(r"interpolate|upsample.*"), _pool))


@_register("pad")
def _pad(tr: Tracer, name: str, args: list[Any], kwargs: dict[str, Any], out: Any) -> None:
    x, pad = args[0], _arg(args, kwargs, 1, "pad")
    lx = list(tr.labels(x))
    for i in range(len(pad) // 2):
        d = x.ndim - 1 - i
        if pad[2 * i] or pad[2 * i + 1]:
            tr.vars.fix(lx[d], "padding a permuted axis")
            lx[d] = None
    tr.set(out, lx, name)


def find_handler(name: str) -> Handler | None:
    """The handler of the operation ``name`` (as :func:`op_name` spells it), if there is one."""
    handler = _HANDLERS.get(name)
    if handler is None:
        for pattern, h in _PATTERNS:
            if pattern.fullmatch(name):
                return h
    return handler
