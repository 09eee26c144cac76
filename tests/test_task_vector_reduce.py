"""Reductions of task vectors (`_task_vector/_reduce.py`): dot, norm, cosine and statistics."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from torch import nn

from weightspace import WeightspaceValueError
from weightspace._task_vector import LayerStats, TaskVector

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


def tv_of(x: np.ndarray) -> TaskVector:
    return TaskVector({"w": torch.from_numpy(x)})


# ------------------------------------------------------------------------------ reductions


@settings(max_examples=40, deadline=None)
@given(f32_pair(st.floats(-1e3, 1e3, width=32)))
def test_dot_norm_cosine_match_numpy_float64(pair: tuple) -> None:
    x, y = pair
    a = TaskVector({"w": torch.from_numpy(x), "v": torch.from_numpy(y[..., :1].copy())})
    b = TaskVector({"w": torch.from_numpy(y), "v": torch.from_numpy(x[..., :1].copy())})
    xa = np.concatenate([x.ravel(), y[..., :1].ravel()]).astype(np.float64)
    xb = np.concatenate([y.ravel(), x[..., :1].ravel()]).astype(np.float64)
    assert a.dot(b) == pytest.approx(float(xa @ xb), rel=1e-12, abs=1e-9)
    assert a.norm() == pytest.approx(float(np.linalg.norm(xa)), rel=1e-12, abs=1e-12)
    if np.linalg.norm(xa) > 0 and np.linalg.norm(xb) > 0:
        expected = float(xa @ xb / (np.linalg.norm(xa) * np.linalg.norm(xb)))
        assert a.cosine(b) == pytest.approx(expected, rel=1e-9, abs=1e-12)


def test_cosine_of_zero_vector_is_an_error() -> None:
    z = TaskVector({"w": torch.zeros(3)})
    with pytest.raises(WeightspaceValueError, match="zero vector"):
        z.cosine(TaskVector({"w": torch.ones(3)}))


def test_stats() -> None:
    tv = TaskVector({"w": torch.tensor([[3.0, 0.0], [-4.0, 0.0]]), "b": torch.tensor([1.0])})
    stats = tv.stats()
    assert list(stats) == ["w", "b"]
    assert stats["w"] == LayerStats("w", 4, 5.0, 1.75, 4.0, 0.5)
    assert stats["b"].zero_fraction == 0.0
