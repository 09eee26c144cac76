"""Tests of the task-vector merges in weightspace.merge."""

from __future__ import annotations

import math
from collections.abc import Callable

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from weightspace import ShapeMismatchError, WeightspaceValueError, merge
from weightspace._task_vector import TaskVector
from weightspace.merge import (
    consensus,
    dare,
    dare_ties,
    magnitude_prune,
    mean,
    tall_masks,
    task_arithmetic,
    ties,
)
from weightspace.merge import functional as F

SHAPES = {"enc.weight": (6, 5), "enc.bias": (6,), "head.weight": (3, 6), "scalar": ()}


def make_vectors(n: int, seed: int = 0, dtype: torch.dtype = torch.float32) -> list[TaskVector]:
    gen = torch.Generator().manual_seed(seed)
    return [
        TaskVector({k: torch.randn(s, generator=gen, dtype=dtype) for k, s in SHAPES.items()})
        for _ in range(n)
    ]


def assert_equal(a: TaskVector, b: TaskVector) -> None:
    assert list(a) == list(b)
    for key in a:
        assert torch.equal(a[key], b[key]), key


# ---------------------------------------------------------------- identities


def test_task_arithmetic_of_one_vector_with_scale_one_is_the_vector() -> None:
    (tv,) = make_vectors(1)
    assert_equal(task_arithmetic([tv]), tv)
    assert_equal(task_arithmetic([tv], weights=[1.0]), tv)
    assert_equal(mean([tv]), tv)


def test_mean_is_functional_mean_and_average_is_its_deprecated_alias() -> None:
    vectors = make_vectors(3, seed=4)
    merged = mean(vectors)
    for key in SHAPES:
        stacked = torch.stack([v[key] for v in vectors])
        assert torch.equal(merged[key], F.mean(stacked)), key
    with pytest.warns(FutureWarning, match=r"`weightspace.merge.average` is deprecated .*"):
        old = merge.average(vectors)
    assert_equal(old, merged)
    assert "average" not in merge.__all__ and "mean" in merge.__all__


def test_task_arithmetic_of_one_vector_reproduces_the_finetuned_weights_bit_for_bit() -> None:
    gen = torch.Generator().manual_seed(5)
    base = {k: torch.randn(s, generator=gen) for k, s in SHAPES.items()}
    finetuned = {k: v + 1e-3 * torch.randn(v.shape, generator=gen) for k, v in base.items()}
    finetuned["scalar"] = torch.tensor(1.4086391e-11)  # crosses zero: plain b + (f - b) != f
    base["scalar"] = torch.tensor(0.7315437)
    tv = TaskVector.from_models(finetuned=finetuned, base=base)
    out = task_arithmetic([tv]).apply_to(base)
    for key in base:
        assert torch.equal(out[key], finetuned[key]), key


def test_dare_with_drop_rate_zero_equals_task_arithmetic() -> None:
    vectors = make_vectors(3)
    for kwargs in ({}, {"scale": 0.3}, {"scale": 0.7, "weights": [1.0, -0.5, 2.0]}):
        assert_equal(
            dare(vectors, drop_rate=0.0, seed=4, **kwargs), task_arithmetic(vectors, **kwargs)
        )


def test_dare_ties_with_drop_rate_zero_equals_ties_with_density_one() -> None:
    vectors = make_vectors(3)
    assert_equal(
        dare_ties(vectors, drop_rate=0.0, seed=1, scale=0.4),
        ties(vectors, density=1.0, scale=0.4),
    )


@pytest.mark.parametrize("scale", [1.0, 0.3, 1.7])
@pytest.mark.parametrize("n", [1, 2, 3, 5])
def test_ties_density_one_with_agreeing_signs_equals_the_mean_times_the_scale(
    n: int, scale: float
) -> None:
    gen = torch.Generator().manual_seed(n)
    signs = {k: torch.randn(s, generator=gen).sign() for k, s in SHAPES.items()}
    vectors = [
        TaskVector({k: (torch.rand(s, generator=gen) + 0.1) * signs[k] for k, s in SHAPES.items()})
        for _ in range(n)
    ]
    assert_equal(ties(vectors, density=1.0, scale=scale), mean(vectors) * scale)


def test_task_arithmetic_values() -> None:
    vectors = make_vectors(2, dtype=torch.float64)
    merged = task_arithmetic(vectors, scale=0.5, weights=[2.0, -1.0])
    for key in SHAPES:
        expected = 0.5 * (2.0 * vectors[0][key] - vectors[1][key])
        torch.testing.assert_close(merged[key], expected, rtol=1e-15, atol=1e-15)
    assert merged.metadata["merge.method"] == "task_arithmetic"
    assert merged.metadata["merge.scale"] == "0.5"


# ---------------------------------------------------------------- order invariance


@settings(max_examples=15, deadline=None)
@given(perm=st.permutations(range(4)), seed=st.integers(0, 2**16))
def test_merges_are_invariant_to_the_order_of_the_vectors(perm: list[int], seed: int) -> None:
    # Gaussian deltas lie far inside the range where the float64 sums are exact, so the
    # merges must agree bit for bit.
    vectors = make_vectors(4, seed=seed)
    weights = [0.5, -1.0, 2.0, 0.25]
    seeds = [11, 22, 33, 44]
    p_vectors = [vectors[i] for i in perm]
    p_weights = [weights[i] for i in perm]
    p_seeds = [seeds[i] for i in perm]
    assert_equal(mean(vectors), mean(p_vectors))
    assert_equal(
        task_arithmetic(vectors, weights=weights, scale=0.3),
        task_arithmetic(p_vectors, weights=p_weights, scale=0.3),
    )
    assert_equal(ties(vectors, density=0.4), ties(p_vectors, density=0.4))
    assert_equal(
        ties(vectors, density=0.4, weights=weights, majority="count"),
        ties(p_vectors, density=0.4, weights=p_weights, majority="count"),
    )
    assert_equal(
        dare(vectors, drop_rate=0.5, seed=seeds, weights=weights),
        dare(p_vectors, drop_rate=0.5, seed=p_seeds, weights=p_weights),
    )
    assert_equal(
        dare_ties(vectors, drop_rate=0.5, seed=seeds),
        dare_ties(p_vectors, drop_rate=0.5, seed=p_seeds),
    )
    assert_equal(consensus(vectors, k=2), consensus(p_vectors, k=2))


# ---------------------------------------------------------------- DARE seeding


def test_dare_is_reproducible_and_independent_of_access_order() -> None:
    vectors = make_vectors(3)
    first = dare(vectors, drop_rate=0.6, seed=7)
    forward = {k: first[k] for k in SHAPES}
    second = dare(vectors, drop_rate=0.6, seed=7)
    backward = {k: second[k] for k in reversed(list(SHAPES))}
    for key in SHAPES:
        assert torch.equal(forward[key], backward[key])
        assert torch.equal(first[key], forward[key])  # re-reading a lazy value gives the same
    other = dare(vectors, drop_rate=0.6, seed=8)
    assert not torch.equal(other["enc.weight"], forward["enc.weight"])


def test_dare_masks_differ_between_tasks_and_tensors() -> None:
    ones = TaskVector({"a": torch.ones(400), "b": torch.ones(400)})
    one_each = dare([ones, ones], drop_rate=0.5, seed=0, weights=[1.0, 0.0])
    other_task = dare([ones, ones], drop_rate=0.5, seed=0, weights=[0.0, 1.0])
    assert not torch.equal(one_each["a"], other_task["a"])
    assert not torch.equal(one_each["a"], one_each["b"])
    kept = (one_each["a"] != 0).float().mean().item()
    assert abs(kept - 0.5) < 5 * math.sqrt(0.25 / 400)


def test_dare_keeps_the_expected_value() -> None:
    # Mean over 2000 seeds of DARE on a constant vector: each entry has mean x and variance
    # x**2 p / (1 - p); allow 5 standard errors.
    x, p, m = 0.7, 0.8, 2000
    tv = TaskVector({"w": torch.full((16,), x, dtype=torch.float64)}, dtype=torch.float64)
    total = torch.zeros(16, dtype=torch.float64)
    for seed in range(m):
        total += dare([tv], drop_rate=p, seed=seed)["w"]
    stderr = x * math.sqrt(p / ((1 - p) * m))
    assert torch.all((total / m - x).abs() < 5 * stderr)


# ---------------------------------------------------------------- laziness


class Counter:
    def __init__(self) -> None:
        self.calls: dict[tuple[int, str], int] = {}

    def value(self, task: int, key: str, tensor: torch.Tensor) -> Callable[[], torch.Tensor]:
        def read() -> torch.Tensor:
            self.calls[task, key] = self.calls.get((task, key), 0) + 1
            return tensor

        return read


@pytest.mark.parametrize(
    ("build", "tasks_read"),
    [
        (lambda vs: task_arithmetic(vs, scale=0.5), 3),
        (mean, 3),
        (lambda vs: ties(vs, density=0.3), 3),
        (lambda vs: dare(vs, drop_rate=0.5, seed=0), 3),
        (lambda vs: dare_ties(vs, drop_rate=0.5, seed=0), 3),
        (lambda vs: consensus(vs, k=2), 3),
        (lambda vs: magnitude_prune(vs[0], 0.5), 1),
    ],
)
def test_merges_compute_nothing_until_a_key_is_read(
    build: Callable[[list[TaskVector]], TaskVector], tasks_read: int
) -> None:
    counter = Counter()
    eager = make_vectors(3)
    lazy = [
        TaskVector({k: counter.value(t, k, v[k]) for k in SHAPES}, shapes=SHAPES)
        for t, v in enumerate(eager)
    ]
    merged = build(lazy)
    assert counter.calls == {}
    assert merged.shape("enc.weight") == (6, 5)
    assert counter.calls == {}
    value = merged["enc.bias"]
    assert value.shape == (6,)
    # Each input tensor of that key only, each read once.
    assert counter.calls == {(t, "enc.bias"): 1 for t in range(tasks_read)}


# ---------------------------------------------------------------- pruning and masks


def test_magnitude_prune_keeps_round_density_numel_per_tensor() -> None:
    (tv,) = make_vectors(1)
    pruned = magnitude_prune(tv, 0.3)
    for key, shape in SHAPES.items():
        numel = math.prod(shape)
        assert int((pruned[key] != 0).sum()) == round(0.3 * numel)
        assert torch.equal(pruned[key], F.magnitude_prune(tv[key], 0.3))


def test_tall_masks_match_the_functional_definition() -> None:
    vectors = make_vectors(3)
    masks = tall_masks(vectors, lambdas=[0.2, 0.4, 0.6])
    for key in SHAPES:
        stacked = torch.stack([v[key] for v in vectors])
        expected = F.tall_masks(stacked, F.task_arithmetic(stacked), lambdas=[0.2, 0.4, 0.6])
        for task in range(3):
            assert torch.equal(masks[task][key], expected[task])


def test_tall_masks_with_a_given_merged_vector() -> None:
    vectors = make_vectors(2)
    merged = ties(vectors, density=0.5)
    masks = tall_masks(vectors, lambdas=0.3, merged=merged)
    stacked = torch.stack([v["enc.weight"] for v in vectors])
    expected = F.tall_masks(stacked, merged["enc.weight"], lambdas=0.3)
    assert torch.equal(torch.stack([m["enc.weight"] for m in masks]), expected)


def test_consensus_k1_is_task_arithmetic_on_the_union_of_the_masks() -> None:
    vectors = make_vectors(3)
    masks = tall_masks(vectors, lambdas=0.5)
    out = consensus(vectors, k=1, lambdas=0.5, scale=0.3)
    out_all = consensus(vectors, k=3, lambdas=0.5)
    total = task_arithmetic(vectors)
    for key in SHAPES:
        union = masks[0][key] | masks[1][key] | masks[2][key]
        inter = masks[0][key] & masks[1][key] & masks[2][key]
        assert torch.equal(out[key], torch.where(union, total[key], 0.0) * 0.3)
        assert torch.equal(out_all[key], torch.where(inter, total[key], 0.0))


def test_consensus_hand_example() -> None:
    a = TaskVector({"w": torch.tensor([1.0, 1.0, 0.0, 0.1])})
    b = TaskVector({"w": torch.tensor([1.0, 0.0, 1.0, -0.1])})
    # merged [2, 1, 1, 0]; lambda 1: a -> [T, T, F, T], b -> [T, F, T, T]
    assert torch.equal(consensus([a, b], lambdas=1.0)["w"], torch.tensor([2.0, 0.0, 0.0, 0.0]))


# ---------------------------------------------------------------- errors


@pytest.mark.parametrize(
    ("call", "error", "pattern"),
    [
        (
            lambda vs: task_arithmetic([]),
            WeightspaceValueError,
            r"`vectors` must hold at least one",
        ),
        (lambda vs: task_arithmetic(vs[0]), WeightspaceValueError, r"got a single TaskVector"),
        (
            lambda vs: mean([vs[0], {"w": torch.ones(1)}]),
            WeightspaceValueError,
            r"`vectors\[1\]` must be a TaskVector, got dict",
        ),
        (
            lambda vs: task_arithmetic([vs[0], TaskVector({"other": torch.ones(1)})]),
            ShapeMismatchError,
            r"`vectors\[1\]` does not have the keys of `vectors\[0\]`: 4 missing",
        ),
        (
            lambda vs: task_arithmetic(vs, scale=math.nan),
            WeightspaceValueError,
            r"`scale` must be finite, got nan",
        ),
        (
            lambda vs: task_arithmetic(vs, scale="1"),
            WeightspaceValueError,
            r"`scale` must be a finite real",
        ),
        (
            lambda vs: task_arithmetic(vs, weights=[1.0]),
            WeightspaceValueError,
            r"`weights` must have one entry per task \(2\)",
        ),
        (
            lambda vs: ties(vs, density=0.0),
            WeightspaceValueError,
            r"`density` must lie in \(0, 1\]",
        ),
        (
            lambda vs: ties(vs, density=0.5, majority="max"),
            WeightspaceValueError,
            r"`majority` must be",
        ),
        (
            lambda vs: dare(vs, drop_rate=1.0, seed=0),
            WeightspaceValueError,
            r"`drop_rate` must lie in \[0, 1\).*got 1.0",
        ),
        (
            lambda vs: dare(vs, drop_rate=0.5, seed=[1]),
            WeightspaceValueError,
            r"`seed` must be an int or a sequence of 2 ints",
        ),
        (
            lambda vs: dare_ties(vs, drop_rate=0.5, seed=1.5),
            WeightspaceValueError,
            r"`seed` must be an int",
        ),
        (lambda vs: consensus(vs, k=3), WeightspaceValueError, r"`k` must lie in \[1, 2\]"),
        (
            lambda vs: consensus(vs, lambdas=-0.1),
            WeightspaceValueError,
            r"`lambdas` must be non-negative",
        ),
        (
            lambda vs: tall_masks(vs, merged={"w": 1}),
            WeightspaceValueError,
            r"`merged` must be a TaskVector",
        ),
        (
            lambda vs: magnitude_prune(vs, 0.5),
            WeightspaceValueError,
            r"`vector` must be a TaskVector",
        ),
    ],
)
def test_bad_arguments_raise_with_a_clear_message(
    call, error: type[Exception], pattern: str
) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(error, match=pattern):
        call(make_vectors(2))


def test_shape_mismatch_inside_a_key_is_reported_on_access() -> None:
    a = TaskVector({"w": torch.ones(2)})
    b = TaskVector({"w": torch.ones(3)})
    with pytest.raises(ShapeMismatchError):
        task_arithmetic([a, b])["w"]
