"""Adding a task vector to a model (`_task_vector/_apply.py`).

Exactness at scale 1, dtypes, never mutating the input, validating before writing.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from torch import nn

from weightspace import ShapeMismatchError
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


# ------------------------------------------------------------------------------ exactness


@settings(max_examples=60, deadline=None)
@given(f32_pair())
def test_scale_one_reproduces_finetuned_bit_for_bit(pair: tuple) -> None:
    b, f = (torch.from_numpy(x) for x in pair)
    tv = TaskVector.from_models(base={"w": b}, finetuned={"w": f})
    out = tv.apply_to({"w": b.clone()}, scale=1.0)["w"]
    assert torch.equal(bits(out), bits(f))


@settings(max_examples=30, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.floats(0.5, 1.0, width=32),
            st.integers(-126, 127),
            st.floats(0.5, 1.0, width=32),
            st.integers(-149, 127),
        ),
        min_size=1,
        max_size=20,
    )
)
def test_exactness_with_extreme_exponent_gaps(items: list) -> None:
    # base and fine-tuned values whose exponents are far apart (the hard case for float64)
    b = torch.tensor([m * 2.0**e for m, e, _, _ in items], dtype=torch.float64).float()
    f = torch.tensor([m * 2.0**e for _, _, m, e in items], dtype=torch.float64).float()
    b, f = torch.nan_to_num(b, posinf=1e38), torch.nan_to_num(f, posinf=1e38)
    out = TaskVector.from_models(base={"w": b}, finetuned={"w": f}).apply_to({"w": b})["w"]
    assert torch.equal(bits(out), bits(f))


def test_float64_route_alone_is_not_exact_which_is_why_sources_are_kept() -> None:
    b = np.float32(0.7315437)
    f = np.float32(1.4086391e-11)
    assert np.float32(np.float64(b) + (np.float64(f) - np.float64(b))) != f
    tv = TaskVector.from_models(base={"w": torch.tensor([b])}, finetuned={"w": torch.tensor([f])})
    assert tv.apply_to({"w": torch.tensor([b])})["w"].item() == f
    # the delta alone (after materialize) uses the arithmetic route
    assert tv.materialize().apply_to({"w": torch.tensor([b])})["w"].item() != f


def test_exactness_with_modules_and_value_preserving_operations() -> None:
    base, ft = mlp(0), mlp(1)
    tv = TaskVector.from_models(base=base, finetuned=ft)
    for vec in (tv, tv * 1.0, 1 * tv, tv / 1, tv.restrict(list(tv)), tv.intersection(tv)):
        new = vec.apply_to(base)
        for name, value in ft.state_dict().items():
            assert torch.equal(new.state_dict()[name], value), name


def test_exactness_elementwise_on_a_partly_different_target() -> None:
    b = torch.tensor([0.7315437, 1.0, 2.0])
    f = torch.tensor([1.4086391e-11, 3.0, -1.0])
    tv = TaskVector.from_models(base={"w": b}, finetuned={"w": f})
    target = torch.tensor([0.7315437, 5.0, 2.0])
    out = tv.apply_to({"w": target})["w"]
    assert out[0].item() == f[0].item() and out[2].item() == f[2].item()
    assert out[1].item() == 7.0


# ------------------------------------------------------------------------------ apply


def test_apply_to_never_mutates_state_dict_or_module() -> None:
    base, ft = mlp(0), mlp(1)
    before = {k: v.clone() for k, v in base.state_dict().items()}
    tv = TaskVector.from_models(base=base, finetuned=ft)
    sd = base.state_dict()
    out = tv.apply_to(sd, scale=0.5)
    new = tv.apply_to(base, scale=0.5)
    assert new is not base
    for k, v in base.state_dict().items():
        assert torch.equal(v, before[k]), k
        assert out[k].data_ptr() != v.data_ptr()
    assert torch.allclose(out["0.weight"], (before["0.weight"] + ft.state_dict()["0.weight"]) / 2)
    assert torch.equal(new.state_dict()["0.weight"], out["0.weight"])


def test_integer_buffers_are_never_scaled() -> None:
    base, ft = mlp(0), mlp(1)
    ft[1].num_batches_tracked.fill_(17)
    base[1].num_batches_tracked.fill_(3)
    ft[1].running_mean.add_(1.0)
    tv = TaskVector.from_models(base=base, finetuned=ft)
    assert "1.num_batches_tracked" not in tv
    assert "1.running_mean" in tv  # float buffers are ordinary deltas
    out = tv.apply_to(base.state_dict(), scale=5.0)
    assert out["1.num_batches_tracked"].item() == 3
    tv_ft = TaskVector.from_models(base=base, finetuned=ft, integer="finetuned")
    assert tv_ft.apply_to(base.state_dict(), scale=5.0)["1.num_batches_tracked"].item() == 17
    assert tv_ft.apply_to(base)[1].num_batches_tracked.item() == 17
    assert base[1].num_batches_tracked.item() == 3


def test_apply_in_place_validates_before_writing() -> None:
    base, ft = mlp(0), mlp(1)
    tv = TaskVector.from_models(base=base, finetuned=ft)
    target = mlp(0)
    assert tv.apply_to_(target) is target
    assert torch.equal(target[0].weight, ft[0].weight)
    bad = tv.add(TaskVector({"extra.weight": torch.ones(1)}), keys="union")
    before = target[0].weight.clone()
    with pytest.raises(ShapeMismatchError, match="extra.weight"):
        bad.apply_to_(target)
    assert torch.equal(target[0].weight, before)


def test_apply_rounds_once_to_the_base_dtype() -> None:
    base = {"w": torch.tensor([1.0, 2.0], dtype=torch.bfloat16), "n": torch.tensor(2)}
    tv = TaskVector({"w": torch.tensor([1e-3, 0.5])})
    out = tv.apply_to(base, scale=3.0)
    expected = (base["w"].float() + 3.0 * torch.tensor([1e-3, 0.5])).to(torch.bfloat16)
    assert out["w"].dtype == torch.bfloat16 and torch.equal(out["w"], expected)
    assert tv.apply_to(base, dtype=torch.float64)["w"].dtype == torch.float64


def test_apply_errors_on_missing_keys_and_shapes() -> None:
    tv = TaskVector({"w": torch.ones(2), "v": torch.ones(1)})
    with pytest.raises(ShapeMismatchError, match=r"missing from `base`: \['v'\]"):
        tv.apply_to({"w": torch.ones(2)})
    with pytest.raises(ShapeMismatchError, match=r"\(3,\)"):
        tv.apply_to({"w": torch.ones(3), "v": torch.ones(1)})


def test_float64_vectors() -> None:
    base = {"w": torch.tensor([1.0], dtype=torch.float64)}
    ft = {"w": torch.tensor([1.0 + 1e-12], dtype=torch.float64)}
    tv = TaskVector.from_models(base=base, finetuned=ft, dtype=torch.float64)
    assert tv["w"].dtype == torch.float64
    assert tv["w"].item() == pytest.approx(1e-12, rel=1e-3)
    assert (tv * 2).apply_to(base)["w"].item() == pytest.approx(1.0 + 2e-12, rel=1e-15)
