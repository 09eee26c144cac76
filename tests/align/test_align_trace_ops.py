"""The rule of each operation: how it moves, ties or fixes the hidden axes of its operands."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from weightspace.align._trace import _Tracer
from weightspace.align._trace_ops import find_handler, op_name


@pytest.mark.parametrize(
    ("func", "expected"),
    [
        (torch.Tensor.__add__, ("add", False)),
        (torch.Tensor.__radd__, ("add", True)),
        (torch.Tensor.__rsub__, ("sub", True)),
        (torch.Tensor.__iadd__, ("add", False)),
        (torch.relu_, ("relu", False)),
        (torch.Tensor.add_, ("add", False)),
        (F.linear, ("linear", False)),
        ("view", ("view", False)),
        (getattr, ("getattr", False)),
        (torch.Tensor.T.__get__, ("prop:T", False)),
        (torch._C.TensorBase.__getitem__, ("getitem", False)),
    ],
)
def test_op_name_reduces_dunder_inplace_and_reflected_spellings(
    func: Any, expected: tuple[str, bool]
) -> None:
    assert op_name(func, ()) == expected


def test_find_handler_by_name_and_by_pattern() -> None:
    for name in (
        "max_pool2d",
        "adaptive_avg_pool1d",
        "max_pool3d_with_indices",
        "upsample_nearest2d",
    ):
        assert find_handler(name) is find_handler("interpolate") is not None
    assert find_handler("relu") is find_handler("add") is not None
    assert find_handler("linear") is not find_handler("relu")
    for name in ("einsum", "fft_fft", "max_pool4d", "unknown_op"):
        assert find_handler(name) is None


class Probe:
    """A tracer with labelled input tensors, to call one operation and read the result."""

    def __init__(self) -> None:
        self.tr = _Tracer(nn.Module())

    def tensor(self, *dims: int | tuple[int, int]) -> tuple[Tensor, list[int | None]]:
        """A tensor whose axis d is permuted by a fresh variable where ``dims[d]`` is a pair."""
        shape, labels, ids = [], [], []
        for d in dims:
            if isinstance(d, tuple):
                size, repeat = d
                var = self.tr.vars.new(size // repeat)
                shape.append(size)
                labels.append((var, repeat))
                ids.append(var)
            else:
                shape.append(d)
                labels.append(None)
                ids.append(None)
        t = torch.zeros(shape)
        self.tr.set(t, labels, "input")
        return t, ids

    def call(self, func: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        out = func(*args, **kwargs)
        self.tr.on_call(func, args, kwargs, out)
        return out

    def resolved(self, t: Tensor) -> list[tuple[int, int] | None]:
        return [self.tr.vars.resolve(label) for label in self.tr.labels(t)]

    def fixed(self, var: int | None) -> bool:
        assert var is not None
        return self.tr.vars.fixed[self.tr.vars.find(var)[0]]


def test_flatten_of_a_channel_makes_blocks_and_unflatten_restores_it() -> None:
    p = Probe()
    x, (_, c, _, _) = p.tensor(2, (4, 1), 3, 5)
    flat = p.call(torch.flatten, x, 1)
    assert p.resolved(flat) == [None, (c, 15)]  # a channel is a block of 3 * 5 features
    back = p.call(torch.Tensor.view, flat, 2, 4, 3, 5)
    assert p.resolved(back) == [None, (c, 1), None, None]
    assert not p.fixed(c)


def test_reshapes_that_split_or_mix_a_permuted_axis_fix_it() -> None:
    p = Probe()
    x, (_, h) = p.tensor(2, (12, 1))
    out = p.call(torch.Tensor.reshape, x, 2, 3, 4)  # 12 units cut into 3 x 4: not a block
    assert p.resolved(out) == [None, None, None]
    assert p.fixed(h)
    q = Probe()
    y, (_, a, b) = q.tensor(2, (3, 1), (4, 1))
    q.call(torch.Tensor.reshape, y, 2, 12)  # two groups merged into one axis
    assert q.fixed(a) and q.fixed(b)
    r = Probe()
    z, (_, s, _) = r.tensor(2, (4, 1), 1)
    out = r.call(torch.Tensor.squeeze, z, -1)  # size-1 axes come and go freely
    assert r.resolved(out) == [None, (s, 1)]
    assert not r.fixed(s)


def test_transpose_permute_and_properties_move_labels_with_their_axes() -> None:
    p = Probe()
    x, (_, a, b) = p.tensor(2, (3, 1), (4, 1))
    assert p.resolved(p.call(torch.transpose, x, 1, 2)) == [None, (b, 1), (a, 1)]
    assert p.resolved(p.call(torch.Tensor.permute, x, 2, 0, 1)) == [(b, 1), None, (a, 1)]
    assert p.resolved(p.call(torch.movedim, x, 0, -1)) == [(a, 1), (b, 1), None]
    out = torch.Tensor.mT.__get__(x)
    p.tr.on_call(torch.Tensor.mT.__get__, (x,), {}, out)
    assert p.resolved(out) == [None, (b, 1), (a, 1)]
    assert not p.fixed(a) and not p.fixed(b)


def test_indexing_keeps_whole_axes_and_fixes_partial_ones() -> None:
    getitem = torch._C.TensorBase.__getitem__
    p = Probe()
    x, (_, a, b) = p.tensor(2, (3, 1), (4, 1))
    assert p.resolved(p.call(getitem, x, (slice(None), None, ..., slice(0, 4)))) == [
        None, None, (a, 1), (b, 1)
    ]  # fmt: skip
    assert p.resolved(p.call(getitem, x, (0,))) == [(a, 1), (b, 1)]  # the batch axis goes
    assert not p.fixed(a) and not p.fixed(b)
    p.call(getitem, x, (slice(None), slice(0, 2)))
    assert p.fixed(a) and not p.fixed(b)
    p.call(getitem, x, (..., 1))
    assert p.fixed(b)


def test_broadcasting_ties_operands_and_reductions_drop_axes() -> None:
    p = Probe()
    x, (_, a) = p.tensor(2, (5, 1))
    y, (b,) = p.tensor((5, 1))
    out = p.call(torch.add, x, y)  # a bias-like operand broadcast over the batch
    assert p.resolved(out) == [None, (a, 1)]
    assert p.tr.vars.find(b)[0] == p.tr.vars.find(a)[0]
    s = p.call(torch.sum, out, 0)
    assert p.resolved(s) == [(a, 1)]
    k = p.call(torch.mean, out, -1, keepdim=True)  # a symmetric reduction: harmless
    assert p.resolved(k) == [None, None]
    assert not p.fixed(a)
    p.call(torch.cumsum, out, -1)  # order-dependent along the axis
    assert p.fixed(a)


def test_linear_and_matmul_tie_the_contracted_axes() -> None:
    p = Probe()
    x, (_, h) = p.tensor(2, (6, 1))
    w, (o, i) = p.tensor((3, 1), (6, 1))
    out = p.call(F.linear, x, w)
    assert p.resolved(out) == [None, (o, 1)]
    assert p.tr.vars.find(i) == p.tr.vars.find(h)
    q = Probe()
    x, (_, h) = q.tensor(2, (6, 1))
    m, (r, c) = q.tensor((6, 1), (4, 1))
    out = q.call(torch.matmul, x, m)
    assert q.resolved(out) == [None, (c, 1)]
    assert q.tr.vars.find(r) == q.tr.vars.find(h)


@pytest.mark.parametrize("transpose", [False, True])
def test_convolutions_tie_input_channels_and_fix_kernel_axes(transpose: bool) -> None:
    p = Probe()
    x, (_, cin, _, _) = p.tensor(1, (3, 1), 5, 5)
    if transpose:  # ConvTranspose weights are [in, out, kh, kw]
        w, (wi, wo, kh, kw) = p.tensor((3, 1), (4, 1), (2, 1), (2, 1))
        # positional, as nn.ConvTranspose2d passes them: groups (1) before dilation ((1, 1))
        out = p.call(F.conv_transpose2d, x, w, None, (2, 2), (0, 0), (0, 0), 1, (1, 1))
    else:
        w, (wo, wi, kh, kw) = p.tensor((4, 1), (3, 1), (2, 1), (2, 1))
        out = p.call(F.conv2d, x, w, None, (1, 1), (0, 0), (1, 1), 1)
    assert p.resolved(out) == [None, (wo, 1), None, None]
    assert p.tr.vars.find(wi) == p.tr.vars.find(cin)
    assert p.fixed(kh) and p.fixed(kw) and not p.fixed(wo) and not p.fixed(cin)


def test_grouped_convolution_fixes_every_channel_axis() -> None:
    p = Probe()
    x, (_, cin, _, _) = p.tensor(1, (4, 1), 5, 5)
    w, (wo, wi, _, _) = p.tensor((6, 1), (2, 1), 3, 3)
    out = p.call(F.conv2d, x, w, None, 1, 0, 1, 2)
    assert p.resolved(out) == [None, None, None, None]
    assert p.fixed(cin) and p.fixed(wo) and p.fixed(wi)


def test_an_unknown_operation_fixes_what_it_touches(caplog: pytest.LogCaptureFixture) -> None:
    p = Probe()
    x, (_, a) = p.tensor(2, (3, 1))
    with caplog.at_level("DEBUG", logger="weightspace.align._trace"):
        out = p.call(torch.einsum, "bi->bi", x)
    assert p.resolved(out) == [None, None]
    assert p.fixed(a)
    assert "'einsum' is not known to commute with permutations" in caplog.text


def test_a_handler_that_cannot_read_its_arguments_stays_safe(
    caplog: pytest.LogCaptureFixture,
) -> None:
    p = Probe()
    x, (_, a) = p.tensor(2, (3, 1))
    out = torch.zeros(2, 3)
    with caplog.at_level("DEBUG", logger="weightspace.align._trace"):
        p.tr.on_call(F.layer_norm, (x,), {}, out)  # no normalized_shape: the rule raises
    assert p.fixed(a)
    assert p.resolved(out) == [None, None]
    assert "could not follow 'layer_norm'" in caplog.text
