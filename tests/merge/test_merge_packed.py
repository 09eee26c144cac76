"""Tests of weightspace.merge.PackedMasks."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from weightspace import ShapeMismatchError, WeightspaceValueError
from weightspace._task_vector import TaskVector
from weightspace.merge import PackedMasks, tall_masks


@settings(max_examples=30, deadline=None)
@given(
    n_tasks=st.integers(1, 4),
    shapes=st.lists(
        hnp.array_shapes(min_dims=0, max_dims=3, min_side=1, max_side=7), min_size=1, max_size=3
    ),
    seed=st.integers(0, 2**16),
)
def test_round_trip_is_exact(n_tasks: int, shapes: list[tuple[int, ...]], seed: int) -> None:
    gen = torch.Generator().manual_seed(seed)
    masks = [
        {f"t{i}": torch.rand(s, generator=gen) > 0.5 for i, s in enumerate(shapes)}
        for _ in range(n_tasks)
    ]
    packed = PackedMasks(masks)
    assert len(packed) == n_tasks
    assert packed.nbytes == n_tasks * sum((int(np.prod(s)) + 7) // 8 for s in shapes)
    unpacked = packed.unpack()
    for task in range(n_tasks):
        assert list(unpacked[task]) == list(masks[task])
        for key in masks[task]:
            assert torch.equal(unpacked[task][key], masks[task][key])
    rebuilt = PackedMasks.from_tensors(packed.to_tensors(), packed.shapes)
    for a, b in zip(rebuilt, masks, strict=True):
        for key in b:
            assert torch.equal(a[key], b[key])


def test_packs_tall_masks_eightfold() -> None:
    gen = torch.Generator().manual_seed(0)
    vectors = [TaskVector({"w": torch.randn(64, 64, generator=gen)}) for _ in range(3)]
    masks = tall_masks(vectors)
    packed = PackedMasks(masks)
    assert packed.nbytes == 3 * 64 * 64 // 8
    assert packed.names == ("w",)
    assert packed.shapes["w"] == (64, 64)
    assert torch.equal(packed.task(-1)["w"], masks[2]["w"])
    assert repr(packed) == "PackedMasks(3 tasks, 1 tensors, 1536 bytes)"


def test_is_immutable_and_returns_copies() -> None:
    packed = PackedMasks([{"w": torch.tensor([True, False])}])
    with pytest.raises(AttributeError, match="immutable"):
        packed._n_tasks = 3  # type: ignore[misc]
    tensors = packed.to_tensors()
    tensors["w"].zero_()
    assert torch.equal(packed.task(0)["w"], torch.tensor([True, False]))


def test_bad_inputs() -> None:
    with pytest.raises(WeightspaceValueError, match="non-empty sequence"):
        PackedMasks([])
    with pytest.raises(
        WeightspaceValueError, match=r"`masks\[0\]\['w'\]` must be a boolean tensor"
    ):
        PackedMasks([{"w": torch.ones(2)}])
    with pytest.raises(ShapeMismatchError, match="has shape"):
        PackedMasks(
            [{"w": torch.ones(2, dtype=torch.bool)}, {"w": torch.ones(3, dtype=torch.bool)}]
        )
    with pytest.raises(ShapeMismatchError, match="names"):
        PackedMasks(
            [{"w": torch.ones(2, dtype=torch.bool)}, {"v": torch.ones(2, dtype=torch.bool)}]
        )
    with pytest.raises(WeightspaceValueError, match=r"`index` must be an int in \[0, 1\)"):
        PackedMasks([{"w": torch.ones(2, dtype=torch.bool)}]).task(1)
    with pytest.raises(WeightspaceValueError, match=r"uint8 tensor \[n_tasks, 1\]"):
        PackedMasks.from_tensors({"w": torch.zeros(1, 2, dtype=torch.uint8)}, {"w": (3,)})
