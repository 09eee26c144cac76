from __future__ import annotations

import pickle

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from weightspace import ShapeMismatchError, WeightspaceValueError, select
from weightspace._task_vector import TaskVector

NAMES = st.lists(st.sampled_from([f"m{i}.weight" for i in range(12)]), max_size=12)


@settings(max_examples=60, deadline=None)
@given(NAMES, NAMES)
def test_identity_selection_algebra_behaves_as_sets(x: list[str], y: list[str]) -> None:
    a, b = select.Selection(x), select.Selection(y)
    assert set(a | b) == set(x) | set(y)
    assert set(a & b) == set(x) & set(y)
    assert set(a - b) == set(x) - set(y)
    assert len(a) == len(set(x))
    assert (a | b) == (b | a) and (a & b) == (b & a)
    assert ((a | b) - b) == (a - b)
    assert all(n in a for n in x)
    assert list(a) == list(dict.fromkeys(x))  # order of first appearance


@settings(max_examples=40, deadline=None)
@given(st.dictionaries(st.sampled_from("abcdefgh"), st.integers(0, 20), max_size=8))
def test_mapping_selection_algebra_on_pairs(pairs: dict[str, int]) -> None:
    mapping = {a: f"b{v}" for a, v in pairs.items()}
    if len(set(mapping.values())) != len(mapping):
        with pytest.raises(WeightspaceValueError, match="one-to-one"):
            select.Selection(mapping)
        return
    sel = select.Selection(mapping)
    assert sel.names_a == tuple(mapping) and sel.names_b == tuple(mapping.values())
    assert sel.inverse().inverse() == sel
    assert (sel & sel) == sel and len(sel - sel) == 0


def test_conflicting_union_is_an_error() -> None:
    with pytest.raises(WeightspaceValueError, match="disagree"):
        select.Selection({"a": "x"}) | select.Selection({"a": "y"})
    with pytest.raises(WeightspaceValueError, match="disagree"):
        select.Selection({"a": "x"}) | select.Selection({"b": "x"})


def test_selection_is_immutable_hashable_and_picklable() -> None:
    sel = select.Selection({"a": "b"}, shapes={"a": (2,)})
    with pytest.raises(AttributeError):
        sel._map = {}  # type: ignore[misc]
    assert pickle.loads(pickle.dumps(sel)) == sel
    assert pickle.loads(pickle.dumps(sel)).shape("a") == torch.Size([2])
    assert len({sel, select.Selection({"a": "b"})}) == 1
    assert "a' -> 'b" in repr(sel)
    with pytest.raises(WeightspaceValueError, match="wrap it in a list"):
        select.Selection("abc")


def test_apply_to_state_dicts_and_task_vectors() -> None:
    sd = {"a": torch.ones(1), "b": torch.zeros(2)}
    ident = select.Selection(["b"])
    assert list(ident.restrict(sd)) == ["b"]
    moved = select.Selection({"b": "enc.b"}).transfer(sd)
    assert list(moved) == ["enc.b"] and moved["enc.b"] is sd["b"]
    with pytest.raises(ShapeMismatchError, match="missing"):
        select.Selection(["c"]).restrict(sd)
    tv = TaskVector(sd)
    assert list(ident.restrict(tv)) == ["b"]
    assert list(select.Selection({"b": "enc.b"}).transfer(tv)) == ["enc.b"]
    with pytest.raises(ShapeMismatchError, match="records"):
        select.Selection({"b": "x"}, shapes={"b": (3,)}).transfer(sd)
