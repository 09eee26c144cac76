"""Tests of the mask algebra of weightspace.saliency: identities (hypothesis), cases, errors."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from weightspace import ShapeMismatchError, TaskVector, WeightspaceValueError, saliency, select

SETTINGS = settings(max_examples=40, deadline=None)

SHAPES = {"a.weight": (3, 4), "a.bias": (3,), "b.weight": (2, 2, 2)}


@st.composite
def masks(draw: st.DrawFn, n: int = 1) -> list[dict[str, torch.Tensor]]:
    out = []
    for _ in range(n):
        out.append(
            {
                name: torch.from_numpy(draw(hnp.arrays(np.bool_, shape)))
                for name, shape in SHAPES.items()
            }
        )
    return out


@st.composite
def scores(draw: st.DrawFn) -> dict[str, torch.Tensor]:
    elements = st.floats(0, 10, width=32, allow_subnormal=False)
    return {
        name: torch.from_numpy(draw(hnp.arrays(np.float32, shape, elements=elements)))
        for name, shape in SHAPES.items()
    }


def _eq(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    return list(a) == list(b) and all(torch.equal(a[k], b[k]) for k in a)


@SETTINGS
@given(ms=masks(3))
def test_set_algebra_identities(ms: list[dict[str, torch.Tensor]]) -> None:
    a, b, c = ms
    u, i, d, n = saliency.union, saliency.intersection, saliency.difference, saliency.complement
    assert _eq(u(a, b), u(b, a))
    assert _eq(i(a, b), i(b, a))
    assert _eq(u(u(a, b), c), u(a, u(b, c)))
    assert _eq(i(i(a, b), c), i(a, i(b, c)))
    assert _eq(n(u(a, b)), i(n(a), n(b)))  # De Morgan
    assert _eq(n(i(a, b)), u(n(a), n(b)))
    assert _eq(n(n(a)), a)
    assert _eq(d(a, b), i(a, n(b)))
    assert _eq(i(a, u(b, c)), u(i(a, b), i(a, c)))  # distributivity
    assert saliency.mask_stats(i(d(a, b), b)).selected == 0
    sa, sb = saliency.mask_stats(a), saliency.mask_stats(b)
    inter, uni = saliency.mask_stats(i(a, b)), saliency.mask_stats(u(a, b))
    assert uni.selected == sa.selected + sb.selected - inter.selected  # inclusion-exclusion


@SETTINGS
@given(s=scores(), k=st.integers(0, 23), k2=st.integers(0, 23))
def test_top_k_selects_exactly_k_and_is_nested(s: dict[str, torch.Tensor], k: int, k2: int) -> None:
    lo, hi = sorted((k, k2))
    m_lo, m_hi = saliency.top_k(s, k=lo), saliency.top_k(s, k=hi)
    assert saliency.mask_stats(m_lo).selected == lo
    assert saliency.mask_stats(m_hi).selected == hi
    assert saliency.mask_stats(saliency.difference(m_lo, m_hi)).empty  # nested
    if 0 < lo < 23:
        selected = torch.cat([s[n][m_lo[n]] for n in s])
        left_out = torch.cat([s[n][~m_lo[n]] for n in s])
        assert selected.min() >= left_out.max()


@SETTINGS
@given(s=scores(), fraction=st.floats(0, 1))
def test_top_k_per_layer_keeps_the_fraction_of_each_tensor(
    s: dict[str, torch.Tensor], fraction: float
) -> None:
    m = saliency.top_k(s, fraction=fraction, scope="layer")
    for name, (sel, total) in saliency.mask_stats(m).per_tensor.items():
        assert sel == int(np.floor(fraction * total + 0.5)), name


@SETTINGS
@given(s=scores(), value=st.floats(0, 10))
def test_threshold_agrees_with_top_k_without_ties(s: dict[str, torch.Tensor], value: float) -> None:
    m = saliency.threshold(s, value)
    k = saliency.mask_stats(m).selected
    flat = torch.cat([t.reshape(-1) for t in s.values()])
    if torch.unique(flat).numel() == flat.numel():
        assert _eq(saliency.top_k(s, k=k), m)
    strict = saliency.threshold(s, value, inclusive=False)
    assert saliency.mask_stats(saliency.difference(strict, m)).empty


@SETTINGS
@given(ms=masks(1), names=st.sets(st.sampled_from(sorted(SHAPES))))
def test_restrict_is_an_intersection_with_the_selection(
    ms: list[dict[str, torch.Tensor]], names: set[str]
) -> None:
    (a,) = ms
    r = saliency.restrict(a, sorted(names))
    for name in SHAPES:
        assert torch.equal(r[name], a[name] if name in names else torch.zeros_like(a[name]))
    assert _eq(saliency.restrict(r, sorted(names)), r)  # idempotent


def test_top_k_breaks_ties_by_order() -> None:
    s = {"a": torch.tensor([1.0, 1.0]), "b": torch.tensor([1.0, 0.0])}
    m = saliency.top_k(s, k=2)
    assert m["a"].tolist() == [True, True] and m["b"].tolist() == [False, False]
    assert saliency.top_k(s, fraction=0.5)["a"].tolist() == [True, True]


def test_a_task_vector_times_a_mask_keeps_the_selected_entries() -> None:
    net = torch.nn.Linear(3, 2)
    s = {
        n: torch.arange(p.numel(), dtype=torch.float32).reshape(p.shape)
        for n, p in net.named_parameters()
    }
    mask = saliency.top_k(s, k=3)
    tv = TaskVector({n: torch.ones_like(p) for n, p in net.named_parameters()})
    masked = tv * mask
    assert masked["weight"].tolist() == [[0.0, 0.0, 0.0], [1.0, 1.0, 1.0]]
    assert masked["bias"].tolist() == [0.0, 0.0]


def test_restrict_takes_a_selection() -> None:
    net = torch.nn.Sequential(torch.nn.Linear(2, 2), torch.nn.Linear(2, 1))
    full = {n: torch.ones_like(p, dtype=torch.bool) for n, p in net.named_parameters()}
    r = saliency.restrict(full, select.parameters(net, ["1"]))
    assert saliency.mask_stats(r).per_tensor == {
        "0.weight": (0, 4),
        "0.bias": (0, 2),
        "1.weight": (2, 2),
        "1.bias": (1, 1),
    }
    stats = saliency.mask_stats(r)
    assert stats.fraction == 3 / 9 and stats.fractions()["1.weight"] == 1.0


def test_errors() -> None:
    a = {"w": torch.tensor([True, False])}
    with pytest.raises(ShapeMismatchError, match="same keys"):
        saliency.union(a, {"v": torch.tensor([True, False])})
    with pytest.raises(ShapeMismatchError, match="differ in shape"):
        saliency.intersection(a, {"w": torch.tensor([True])})
    with pytest.raises(WeightspaceValueError, match="must be a bool tensor"):
        saliency.complement({"w": torch.tensor([1.0])})
    with pytest.raises(WeightspaceValueError, match="exactly one of `k` and `fraction`"):
        saliency.top_k({"w": torch.ones(2)})
    with pytest.raises(WeightspaceValueError, match="only 2 entries"):
        saliency.top_k({"w": torch.ones(2)}, k=3)
    with pytest.raises(WeightspaceValueError, match=r"`fraction` must be a number in \[0, 1\]"):
        saliency.top_k({"w": torch.ones(2)}, fraction=1.5)
    with pytest.raises(WeightspaceValueError, match="NaN"):
        saliency.top_k({"w": torch.tensor([float("nan")])}, k=1)
    with pytest.raises(WeightspaceValueError, match="non-empty mapping"):
        saliency.top_k({}, k=0)
    with pytest.raises(WeightspaceValueError, match="not in the mask"):
        saliency.restrict(a, ["nope"])
    with pytest.raises(WeightspaceValueError, match="wrap it in a list"):
        saliency.restrict(a, "w")
    with pytest.raises(WeightspaceValueError, match="finite"):
        saliency.threshold({"w": torch.ones(1)}, float("inf"))
    with pytest.raises(WeightspaceValueError, match="'global' or 'layer'"):
        saliency.top_k({"w": torch.ones(2)}, k=1, scope="model")  # type: ignore[arg-type]
