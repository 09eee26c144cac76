"""Task-vector construction, algebra, key policies, masks and laziness (`_vector.py`)."""

from __future__ import annotations

import math
import re

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from torch import nn

from weightspace import ShapeMismatchError, WeightspaceValueError, select
from weightspace._task_vector import TaskVector

# float32 values over the whole finite range, subnormals included
F32_ANY = st.floats(width=32, allow_nan=False, allow_infinity=False, allow_subnormal=True)
F32_MODERATE = st.floats(-1e4, 1e4, width=32, allow_subnormal=False)
SHAPES = hnp.array_shapes(min_dims=1, max_dims=2, min_side=1, max_side=6)


def f32_pair(elements: st.SearchStrategy[float] = F32_ANY) -> st.SearchStrategy[tuple]:
    return SHAPES.flatmap(
        lambda s: st.tuples(
            hnp.arrays(np.float32, s, elements=elements),
            hnp.arrays(np.float32, s, elements=elements),
        )
    )


def bits(t: torch.Tensor) -> torch.Tensor:
    return t.contiguous().view(torch.int32)


def mlp(seed: int) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(4, 8), nn.BatchNorm1d(8), nn.ReLU(), nn.Linear(8, 3))


# ------------------------------------------------------------------------------ identities


def tv_of(x: np.ndarray) -> TaskVector:
    return TaskVector({"w": torch.from_numpy(x)})


@settings(max_examples=60, deadline=None)
@given(f32_pair(F32_MODERATE))
def test_add_then_sub_within_rounding(pair: tuple) -> None:
    a, b = pair
    result = ((tv_of(a) + tv_of(b)) - tv_of(b))["w"].double()
    ta, tb = torch.from_numpy(a).double(), torch.from_numpy(b).double()
    bound = 2 * 2.0**-24 * (ta.abs() + tb.abs()) * 2
    assert bool(((result - ta).abs() <= bound).all())


@settings(max_examples=60, deadline=None)
@given(f32_pair(F32_MODERATE))
def test_negation_distributes_exactly(pair: tuple) -> None:
    a, b = tv_of(pair[0]), tv_of(pair[1])
    assert (-(a + b)).equal(-a - b)
    assert (-(-a)).equal(a)


@settings(max_examples=60, deadline=None)
@given(f32_pair(F32_MODERATE), st.floats(-100, 100, allow_nan=False))
def test_scalar_distributes_within_rounding(pair: tuple, k: float) -> None:
    a, b = tv_of(pair[0]), tv_of(pair[1])
    lhs = (k * (a + b))["w"].double()
    rhs = (k * a + b * k)["w"].double()
    ta, tb = a["w"].double(), b["w"].double()
    bound = 4 * 2.0**-24 * abs(k) * (ta.abs() + tb.abs()) + 1e-40
    assert bool(((lhs - rhs).abs() <= bound).all())


def test_division_is_true_division() -> None:
    a = TaskVector({"w": torch.tensor([1.0, 3.0])})
    assert torch.equal((a / 3)["w"], torch.tensor([1.0, 3.0]) / 3)


# ------------------------------------------------------------------------------ keys


def test_strict_keys_error_lists_missing_and_says_how_to_fix() -> None:
    a = TaskVector({"x": torch.ones(1), "y": torch.ones(1)})
    b = TaskVector({"x": torch.ones(1), "z": torch.ones(1)})
    with pytest.raises(ShapeMismatchError) as info:
        a + b
    msg = str(info.value)
    assert "['y']" in msg and "['z']" in msg
    assert "a.union(b)" in msg and "a.intersection(b)" in msg and 'keys="union"' in msg
    with pytest.raises(ShapeMismatchError):
        a - b
    with pytest.raises(ShapeMismatchError):
        a.dot(b)


def test_union_and_intersection() -> None:
    a = TaskVector({"x": torch.ones(2), "y": torch.ones(1)})
    b = TaskVector({"x": torch.ones(2), "z": torch.full((3,), 2.0)})
    s = a.add(b, keys="union")
    assert list(s) == ["x", "y", "z"]
    assert torch.equal(s["z"], torch.full((3,), 2.0)) and torch.equal(s["x"], torch.full((2,), 2.0))
    d = a.sub(b, keys="union")
    assert torch.equal(d["z"], torch.full((3,), -2.0)) and torch.equal(d["y"], torch.ones(1))
    assert list(a.add(b, keys="intersection")) == ["x"]
    padded = a.union(b) + b.union(a)
    assert padded.equal(s)
    assert list(a.intersection(b)) == ["x"]


def test_shape_disagreement_between_vectors() -> None:
    a = TaskVector({"x": torch.ones(2)})
    b = TaskVector({"x": torch.ones(3)})
    with pytest.raises(ShapeMismatchError, match="shape of 'x'"):
        a + b


def test_from_models_key_errors() -> None:
    with pytest.raises(ShapeMismatchError) as info:
        TaskVector.from_models(
            base={"a": torch.ones(1)}, finetuned={"a": torch.ones(1), "h": torch.ones(1)}
        )
    assert "['h']" in str(info.value) and 'keys="intersection"' in str(info.value)
    tv = TaskVector.from_models(
        base={"a": torch.zeros(1)},
        finetuned={"a": torch.ones(1), "h": torch.ones(1)},
        keys="intersection",
    )
    assert list(tv) == ["a"]


def test_shape_mismatch_names_key_and_both_shapes() -> None:
    with pytest.raises(ShapeMismatchError) as info:
        TaskVector.from_models(base={"w": torch.ones(3, 2)}, finetuned={"w": torch.ones(2, 3)})
    assert "'w'" in str(info.value) and "(2, 3)" in str(info.value) and "(3, 2)" in str(info.value)


def test_non_finite_inputs_name_the_tensor() -> None:
    tv = TaskVector.from_models(
        base={"layer.w": torch.ones(2)}, finetuned={"layer.w": torch.tensor([1.0, math.nan])}
    )
    with pytest.raises(WeightspaceValueError, match=re.escape("`finetuned['layer.w']`")):
        tv["layer.w"]
    tv = TaskVector.from_models(
        base={"w": torch.tensor([math.inf])}, finetuned={"w": torch.ones(1)}
    )
    with pytest.raises(WeightspaceValueError, match=re.escape("`base['w']`")):
        tv.apply_to({"w": torch.ones(1)})
    with pytest.raises(WeightspaceValueError, match=re.escape("`deltas['q']`")):
        TaskVector({"q": torch.tensor([math.nan])})


@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf])
def test_non_finite_scalars_are_rejected(bad: float) -> None:
    tv = TaskVector({"w": torch.ones(1)})
    with pytest.raises(WeightspaceValueError, match="scalar.*must be finite"):
        tv * bad
    with pytest.raises(WeightspaceValueError, match="scalar.*must be finite"):
        bad * tv
    with pytest.raises(WeightspaceValueError, match="divisor.*must be finite"):
        tv / bad
    with pytest.raises(WeightspaceValueError, match="`scale` must be finite"):
        tv.apply_to({"w": torch.ones(1)}, scale=bad)
    with pytest.raises(WeightspaceValueError, match="non-zero"):
        tv / 0


# ------------------------------------------------------------------------------ masks


def test_mask_multiplication() -> None:
    tv = TaskVector({"w": torch.tensor([1.0, 2.0, 3.0]), "b": torch.tensor([4.0])})
    mask = {"w": torch.tensor([True, False, True]), "b": torch.tensor([False])}
    out = tv * mask
    assert torch.equal(out["w"], torch.tensor([1.0, 0.0, 3.0])) and torch.equal(
        out["b"], torch.zeros(1)
    )
    assert (mask * tv).equal(out)
    with pytest.raises(ShapeMismatchError, match=r"missing from `mask`: \['b'\]"):
        tv * {"w": mask["w"]}
    kept = tv.masked({"w": mask["w"]}, missing="keep")
    assert torch.equal(kept["b"], torch.tensor([4.0]))
    assert torch.equal(tv.masked({"w": mask["w"]}, missing="zero")["b"], torch.zeros(1))
    with pytest.raises(WeightspaceValueError, match="bool tensor"):
        (tv * {"w": torch.ones(3), "b": torch.ones(1)})["w"]
    with pytest.raises(ShapeMismatchError, match="shape"):
        (tv * {"w": torch.ones(2, dtype=torch.bool), "b": mask["b"]})["w"]


# ------------------------------------------------------------------------------ laziness


def test_callables_are_evaluated_on_access_and_not_cached() -> None:
    calls = []

    def make() -> torch.Tensor:
        calls.append(1)
        return torch.ones(3)

    tv = TaskVector({"w": make}, shapes={"w": (3,)})
    derived = (2 * tv + tv).map(lambda name, t: t + 1)
    assert not calls
    assert tv.shape("w") == torch.Size([3])
    assert "3 parameters" in repr(derived) and not calls
    assert torch.equal(derived["w"], torch.full((3,), 4.0))
    n = len(calls)
    derived["w"]
    assert len(calls) == 2 * n


def test_map_and_zip_map() -> None:
    a = TaskVector({"w": torch.tensor([1.0, -3.0])})
    b = TaskVector({"w": torch.tensor([3.0, 1.0])})
    m = TaskVector.zip_map(lambda name, ts: torch.stack(ts).mean(0), [a, b])
    assert torch.equal(m["w"], torch.tensor([2.0, -1.0]))
    bad = a.map(lambda name, t: t[:1])
    with pytest.raises(ShapeMismatchError, match="preserve shapes"):
        bad["w"]
    with pytest.raises(WeightspaceValueError, match="at least one"):
        TaskVector.zip_map(lambda name, ts: ts[0], [])


def test_from_models_on_paths_reads_nothing_until_needed(tmp_path) -> None:
    from weightspace import io

    base, ft = mlp(0), mlp(1)
    io.save_state_dict(base.state_dict(), tmp_path / "base.safetensors")
    io.save_state_dict(ft.state_dict(), tmp_path / "ft.safetensors")
    tv = TaskVector.from_models(
        base=tmp_path / "base.safetensors", finetuned=tmp_path / "ft.safetensors"
    )
    assert len(tv) == 8
    out = tv.apply_to(tmp_path / "base.safetensors")
    for k, v in ft.state_dict().items():
        assert torch.equal(out[k], v), k


def test_lazy_checkpoints_are_not_read_at_construction(tmp_path) -> None:
    from weightspace import io

    io.save_state_dict(mlp(0).state_dict(), tmp_path / "base.safetensors")
    io.save_state_dict(mlp(1).state_dict(), tmp_path / "ft.safetensors")
    base = io.open_state_dict(tmp_path / "base.safetensors")
    ft = io.open_state_dict(tmp_path / "ft.safetensors")
    tv = TaskVector.from_models(base=base, finetuned=ft)
    derived = 0.3 * (tv + tv)
    assert derived.shape("0.weight") == torch.Size([8, 4])
    repr(derived)
    assert base.bytes_read == 0 and ft.bytes_read == 0
    derived["0.weight"]
    assert base.bytes_read > 0 and ft.bytes_read > 0


# ------------------------------------------------------------------------------ object


def test_immutability_and_repr() -> None:
    tv = TaskVector({"w": torch.ones(2, 2)}, metadata={"task": "a"})
    with pytest.raises(AttributeError):
        tv._entries = {}  # type: ignore[misc]
    with pytest.raises(TypeError):
        tv["w"] = torch.ones(1)  # type: ignore[index]
    assert repr(tv) == "TaskVector(1 tensors, 4 parameters, dtype=float32, norm=2)"
    assert tv.metadata["task"] == "a"
    assert tv.with_metadata({"x": "1"}).metadata == {"task": "a", "x": "1"}
    assert tv == tv and tv != TaskVector({"w": torch.ones(2, 2)})
    assert len({tv}) == 1


def test_constructor_validation() -> None:
    with pytest.raises(WeightspaceValueError, match="floating-point"):
        TaskVector({"n": torch.tensor([1, 2])})
    with pytest.raises(WeightspaceValueError, match="tensor or a zero-argument callable"):
        TaskVector({"n": 3})  # type: ignore[dict-item]
    with pytest.raises(WeightspaceValueError, match="float32 or torch.float64"):
        TaskVector({}, dtype=torch.float16)
    tv = TaskVector({"w": lambda: "nope"})  # type: ignore[dict-item, return-value]
    with pytest.raises(WeightspaceValueError, match="must return a Tensor"):
        tv["w"]


def test_restrict_and_transfer() -> None:
    tv = TaskVector({"a.weight": torch.ones(2), "b.weight": torch.full((3,), 2.0)})
    assert list(tv.restrict(["b.weight"])) == ["b.weight"]
    with pytest.raises(ShapeMismatchError, match="not in the task vector"):
        tv.restrict(["c.weight"])
    assert list(tv.restrict(["b.weight", "c.weight"], keys="intersection")) == ["b.weight"]
    sel = select.Selection({"b.weight": "other.b.weight"}, shapes={"b.weight": (3,)})
    moved = tv.transfer(sel)
    assert list(moved) == ["other.b.weight"] and torch.equal(
        moved["other.b.weight"], tv["b.weight"]
    )
    with pytest.raises(ShapeMismatchError, match="records shape"):
        tv.transfer(select.Selection({"a.weight": "x"}, shapes={"a.weight": (5,)}))
