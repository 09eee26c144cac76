"""Tensor views on selections: split and fuse, transposes, exact transfer and apply_to."""

from __future__ import annotations

import pickle

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from weightspace import ShapeMismatchError, TaskVector, WeightspaceValueError, select
from weightspace.select import TensorView

D = 4


def qkv_split(d: int = D) -> select.Selection:
    """GPT-2's ``c_attn`` [d, 3d] (Conv1D, transposed) onto three [d, d] Linear weights."""
    return select.Selection(
        [("attn.c_attn.weight", f"attn.{x}_proj.weight") for x in "qkv"],
        views={
            ("attn.c_attn.weight", f"attn.{x}_proj.weight"): TensorView(
                (d, 3 * d), (d, d), slice_a=(1, i * d, (i + 1) * d), transpose=True
            )
            for i, x in enumerate("qkv")
        },
        roles={("attn.c_attn.weight", f"attn.{x}_proj.weight"): f"attn.{x}" for x in "qkv"},
    )


def test_tensor_view_takes_puts_inverts_and_prints() -> None:
    a = torch.arange(24.0).reshape(2, 12)
    view = TensorView((2, 12), (4, 2), slice_a=(1, 4, 8), transpose=True)
    assert view.piece_shape == (4, 2) and not view.is_identity
    assert torch.equal(view.take(a), a[:, 4:8].T)
    assert str(view) == "a[:, 4:8].T -> b" and str(view.inverse()) == "a.T -> b[:, 4:8]"
    out = torch.zeros(2, 12)
    view.inverse().put(out, view.inverse().take(view.take(a)))
    assert torch.equal(out[:, 4:8], a[:, 4:8]) and out[:, :4].abs().sum() == 0
    assert view.inverse().inverse() == view
    assert TensorView((3,), (3,)).is_identity


def test_tensor_view_refuses_what_does_not_fit() -> None:
    with pytest.raises(
        ShapeMismatchError,
        match=r"shape \(4, 2\) from `a` \(2, 12\) \(after the transpose\) but writes a piece "
        r"of shape \(2, 4\)",
    ):
        TensorView((2, 12), (2, 4), slice_a=(1, 4, 8), transpose=True)
    with pytest.raises(ShapeMismatchError, match=r"`slice_a`=\(1, 8, 16\) does not fit"):
        TensorView((2, 12), (4, 2), slice_a=(1, 8, 16), transpose=True)
    with pytest.raises(WeightspaceValueError, match="`transpose` needs a 2-D piece"):
        TensorView((6,), (6,), transpose=True)
    with pytest.raises(ShapeMismatchError, match=r"expects a tensor of shape \(2, 12\)"):
        TensorView((2, 12), (4, 2), slice_a=(1, 4, 8), transpose=True).take(torch.ones(3, 12))


def test_split_then_fuse_gives_the_tensor_back_bit_for_bit() -> None:
    torch.manual_seed(0)
    sel = qkv_split()
    w = torch.randn(D, 3 * D)
    parts = sel.transfer({"attn.c_attn.weight": w})
    assert list(parts) == ["attn.q_proj.weight", "attn.k_proj.weight", "attn.v_proj.weight"]
    assert torch.equal(parts["attn.k_proj.weight"], w[:, D : 2 * D].T)
    back = sel.inverse().transfer(parts)
    assert list(back) == ["attn.c_attn.weight"]
    assert torch.equal(back["attn.c_attn.weight"], w)
    # the same through task vectors, and the vector's exact apply_to survives the round trip
    base = {"attn.c_attn.weight": torch.randn(D, 3 * D)}
    ft = {"attn.c_attn.weight": base["attn.c_attn.weight"] + 1e-3 * torch.randn(D, 3 * D)}
    ft["attn.c_attn.weight"][0, 0] = 1.4086391e-11  # a weight that crosses zero
    base["attn.c_attn.weight"][0, 0] = 0.7315437
    tv = TaskVector.from_models(base=base, finetuned=ft)
    there = tv.transfer(sel)
    assert torch.equal(there["attn.q_proj.weight"], tv["attn.c_attn.weight"][:, :D].T)
    round_trip = there.transfer(sel.inverse())
    assert torch.equal(round_trip["attn.c_attn.weight"], tv["attn.c_attn.weight"])
    out = round_trip.apply_to(base)
    assert torch.equal(out["attn.c_attn.weight"], ft["attn.c_attn.weight"])


@settings(max_examples=40, deadline=None)
@given(
    d=st.integers(1, 5),
    n=st.integers(1, 4),
    rows=st.integers(1, 4),
    transpose=st.booleans(),
    seed=st.integers(0, 2**16),
)
def test_any_split_along_an_axis_round_trips(
    d: int, n: int, rows: int, transpose: bool, seed: int
) -> None:
    g = torch.Generator().manual_seed(seed)
    w = torch.randn(rows, n * d, generator=g)
    piece = (d, rows) if transpose else (rows, d)
    views = {
        ("w", f"p{i}"): TensorView(
            (rows, n * d), piece, slice_a=(1, i * d, (i + 1) * d), transpose=transpose
        )
        for i in range(n)
    }
    sel = select.Selection(list(views), views=views)
    parts = sel.transfer({"w": w})
    assert torch.equal(sel.inverse().transfer(parts)["w"], w)
    assert torch.equal(
        TaskVector({"w": w}).transfer(sel).transfer(sel.inverse())["w"], w.to(torch.float32)
    )
    assert pickle.loads(pickle.dumps(sel)) == sel


def test_apply_to_after_transfer_equals_the_hand_made_result() -> None:
    torch.manual_seed(1)
    sel = qkv_split()
    delta = torch.randn(D, 3 * D)
    target = {f"attn.{x}_proj.weight": torch.randn(D, D) for x in "qkv"}
    target["other"] = torch.randn(3)
    out = TaskVector({"attn.c_attn.weight": delta}).transfer(sel).apply_to(target, scale=0.5)
    for i, x in enumerate("qkv"):
        name = f"attn.{x}_proj.weight"
        assert torch.equal(out[name], target[name] + 0.5 * delta[:, i * D : (i + 1) * D].T)
    assert torch.equal(out["other"], target["other"])


def test_partial_fuse_fills_zeros_and_overlaps_are_refused() -> None:
    sel = qkv_split().inverse()
    parts = {f"attn.{x}_proj.weight": torch.ones(D, D) for x in "qv"}
    some = sel.subset(parts)
    fused = some.transfer(parts)["attn.c_attn.weight"]
    assert fused[:, D : 2 * D].abs().sum() == 0 and fused[:, :D].eq(1).all()
    assert torch.equal(TaskVector(parts).transfer(some)["attn.c_attn.weight"], fused)
    v = TensorView((D, D), (D, 3 * D), slice_b=(1, 0, D), transpose=True)
    w = TensorView((D, D), (D, 3 * D), slice_b=(1, 2, 2 + D), transpose=True)
    with pytest.raises(ShapeMismatchError, match=r"overlap: \[\(0, 4\), \(2, 6\)\]"):
        select.Selection([("x", "f"), ("y", "f")], views={("x", "f"): v, ("y", "f"): w})


def test_selection_rules_for_views() -> None:
    sel = qkv_split()
    assert sel.names_a == ("attn.c_attn.weight",) * 3 and list(sel) == ["attn.c_attn.weight"]
    assert len(sel) == 3 and "attn.c_attn.weight" in sel and not sel.is_identity
    assert sel.roles == ("attn.q", "attn.k", "attn.v")
    assert sel.inverse().inverse() == sel
    assert sel.inverse().mapping["attn.k_proj.weight"] == "attn.c_attn.weight"
    with pytest.raises(WeightspaceValueError, match="use `selection.pairs`"):
        sel.mapping  # noqa: B018
    # pairs are compared with their views: a plain pair is not the viewed one
    plain = select.Selection([("attn.c_attn.weight", "attn.q_proj.weight")])
    assert len(sel & plain) == 0 and len(sel - plain) == 3
    assert (sel - sel.subset([])) == sel
    with pytest.raises(WeightspaceValueError, match="is mapped twice"):
        select.Selection([("a", "x"), ("a", "y")])
    with pytest.raises(WeightspaceValueError, match="one-to-one unless views slice"):
        select.Selection([("a", "x"), ("b", "x")])
    with pytest.raises(WeightspaceValueError, match="`views` names pairs that are not selected"):
        select.Selection(["a"], views={("a", "b"): TensorView((2,), (2,))})
    with pytest.raises(ShapeMismatchError, match=r"`shapes` records \(5, 12\)"):
        select.Selection(
            qkv_split().pairs,
            views=dict(zip(qkv_split().pairs, qkv_split().views, strict=True)),  # type: ignore[arg-type]
            shapes={"attn.c_attn.weight": (5, 12)},
        )
    with pytest.raises(ShapeMismatchError, match=r"records shape \(4, 12\) for 'attn.c_attn"):
        TaskVector({"attn.c_attn.weight": torch.ones(5, 12)}).transfer(
            select.Selection(
                sel.pairs,
                views={p: TensorView((4, 12), (4, 4), (1, 0, 4), None, True) for p in sel.pairs},
            )
        )


def test_task_vector_transfer_checks_views_it_receives() -> None:
    class Renames:
        names_a = ("w", "w")
        names_b = ("x", "y")
        views = (TensorView((2, 4), (2, 2), slice_a=(1, 0, 2)), None)

    tv = TaskVector({"w": torch.ones(2, 4)})
    with pytest.raises(ShapeMismatchError, match="are all transferred into"):

        class Both(Renames):
            names_b = ("x", "x")
            views = (TensorView((2, 4), (2, 2), slice_a=(1, 0, 2)), None)

        tv.transfer(Both())
    with pytest.raises(WeightspaceValueError, match="one TensorView or None per pair"):

        class Short(Renames):
            views = (None,)  # type: ignore[assignment]

        tv.transfer(Short())
    moved = tv.transfer(Renames())
    assert moved.shape("x") == torch.Size([2, 2]) and torch.equal(moved["y"], torch.ones(2, 4))


def test_describe_lists_roles_and_views() -> None:
    text = str(qkv_split())
    assert text.splitlines() == [
        "Selection: 3 pairs of `a` onto `b`",
        "pairs:",
        "  role    a                   b                   view",
        "  attn.q  attn.c_attn.weight  attn.q_proj.weight  a[:, 0:4].T -> b",
        "  attn.k  attn.c_attn.weight  attn.k_proj.weight  a[:, 4:8].T -> b",
        "  attn.v  attn.c_attn.weight  attn.v_proj.weight  a[:, 8:12].T -> b",
    ]
    assert "[a[:, 0:4].T -> b]" in repr(qkv_split())
