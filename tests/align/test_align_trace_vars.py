"""The union-find of axis variables: links with block factors, fixing, path compression."""

from __future__ import annotations

import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from weightspace.align._trace_vars import AxisVars, tensors_in


def test_a_new_variable_is_its_own_root() -> None:
    v = AxisVars()
    a, b = v.new(4), v.new(4)
    assert (a, b) == (0, 1)
    assert v.find(b) == (b, 1)
    assert v.resolve((b, 3)) == (b, 3)
    assert v.resolve(None) is None
    assert not v.fixed[a] and not v.active[a]


def test_unify_equal_axes_joins_them_and_carries_flags_to_the_root() -> None:
    v = AxisVars()
    a, b = v.new(5), v.new(5)
    v.activate((b, 1))
    assert v.unify((a, 1), 5, (b, 1), 5, "add") == (a, 1)
    assert v.find(b) == (a, 1)
    assert v.active[a]  # the child's flag moved to the root
    v.fix((b, 1), "because")
    assert v.fixed[a] and v.reasons == ["because"]
    v.fix((a, 1), "again")  # an already fixed class keeps its first reason
    assert v.reasons == ["because"]


def test_a_block_axis_links_with_its_factor() -> None:
    # a channel of 3 units, flattened with 4 positions each, meets a 12-unit linear input
    v = AxisVars()
    channel, features = v.new(3), v.new(12)
    assert v.unify((channel, 4), 12, (features, 1), 12, "flatten") == (channel, 4)
    assert v.find(features) == (channel, 4)
    assert v.resolve((features, 1)) == (channel, 4)
    assert not v.fixed[channel]
    # the same link written the other way round
    w = AxisVars()
    features, channel = w.new(12), w.new(3)
    w.unify((features, 1), 12, (channel, 4), 12, "flatten")
    assert w.find(features) == (channel, 4)


def test_incompatible_links_fix_both_sides() -> None:
    v = AxisVars()
    a, b = v.new(3), v.new(5)
    assert v.unify((a, 5), 15, (b, 3), 15, "mixed") is None  # 5 and 3: no block structure
    assert v.fixed[a] and v.fixed[b]
    w = AxisVars()
    a, b = w.new(3), w.new(8)  # 3 * 2 != 8: sizes that cannot be one axis
    w.unify((a, 2), 6, (b, 1), 8, "bad")
    assert w.fixed[w.find(a)[0]]
    assert w.reasons[0] == "inconsistent sizes: bad"
    x = AxisVars()
    a = x.new(4)
    x.unify((a, 1), 4, (a, 2), 8, "self")  # one class seen with two block sizes
    assert x.fixed[a]


def test_broadcast_and_unpermuted_operands() -> None:
    v = AxisVars()
    a = v.new(4)
    assert v.unify((a, 1), 4, None, 1, "broadcast") == (a, 1)  # a size-1 side adopts the other
    assert v.unify(None, 1, (a, 1), 4, "broadcast") == (a, 1)
    assert not v.fixed[a]
    assert v.unify(None, 4, None, 4, "both plain") is None
    assert v.unify((a, 1), 4, None, 4, "plain operand") is None  # an unpermuted partner fixes it
    assert v.fixed[a] and v.reasons == ["plain operand"]


@settings(max_examples=50, deadline=None)
@given(factors=st.lists(st.integers(1, 4), min_size=1, max_size=6))
def test_path_compression_multiplies_the_factors(factors: list[int]) -> None:
    # a chain v_k -> v_{k-1} -> ... -> v_0 with v_i = expand(v_{i-1}, factors[i - 1])
    v = AxisVars()
    units = [2]
    for f in factors:
        units.append(units[-1] * f)
    ids = [v.new(u) for u in units]
    for i, f in enumerate(factors, start=1):
        v.unify((ids[i - 1], f), units[i], (ids[i], 1), units[i], "chain")
    total = 1
    for i, f in enumerate(factors, start=1):
        total *= f
        assert v.find(ids[i]) == (ids[0], total)
    assert not any(v.fixed)
    assert v.find(ids[-1]) == (ids[0], total)  # stable after compression
    assert all(v.parent[i] == ids[0] for i in ids)


def test_tensors_in_walks_nested_containers_in_order() -> None:
    a, b, c = torch.zeros(1), torch.ones(2), torch.zeros(3)
    found = list(tensors_in([a, (3, {"x": b, "y": "s"}), [[c]], None]))
    assert [t is s for t, s in zip(found, (a, b, c), strict=True)] == [True, True, True]
    assert list(tensors_in(5)) == []
