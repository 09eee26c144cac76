"""Tests of the kernels in weightspace.merge._core (sums, trims, elections, masks, bits)."""

from __future__ import annotations

import itertools
import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from weightspace.merge import _core

#: float32 values i * 2**e spanning at most 45 binades, so a float64 sum of four is exact.
exact32 = st.builds(
    lambda i, e: math.ldexp(i, e), st.integers(-(2**24), 2**24), st.integers(-10, 10)
)


def columns(n_tasks: int, size: int) -> st.SearchStrategy[list[list[float]]]:
    return st.lists(
        st.lists(exact32, min_size=size, max_size=size), min_size=n_tasks, max_size=n_tasks
    )


# ---------------------------------------------------------------------------- sums


def test_sorted_column_sum_adds_from_the_smallest_value() -> None:
    # In row order 1e16 + 1 - 1e16 would depend on the order; sorted, it is always
    # (-1e16 + 1) + 1e16 = 0 (the 1 is lost to rounding, in every order alike).
    block = torch.tensor([[1e16, 3.0], [1.0, -2.0], [-1e16, 5.0]], dtype=torch.float64)
    expected = _core.sorted_column_sum(block)
    for order in itertools.permutations(range(3)):
        assert torch.equal(_core.sorted_column_sum(block[list(order)]), expected)
    assert expected.tolist() == [0.0, 6.0]
    five = torch.arange(10.0, dtype=torch.float64).reshape(5, 2)
    assert _core.sorted_column_sum(five).tolist() == [20.0, 25.0]


@settings(max_examples=40, deadline=None)
@given(columns(4, 6))
def test_ordered_sum_of_float32_is_the_correctly_rounded_exact_sum(rows: list[list[float]]) -> None:
    tensors = [torch.tensor(r, dtype=torch.float32) for r in rows]
    out = _core.ordered_sum(tensors)
    exact = torch.tensor(
        [math.fsum(col) for col in zip(*rows, strict=True)], dtype=torch.float64
    ).float()
    assert torch.equal(out, exact)
    for order in itertools.permutations(range(4)):
        assert torch.equal(_core.ordered_sum([tensors[i] for i in order]), out)


def test_ordered_sum_weights_masks_divisor_and_count() -> None:
    a = torch.tensor([1.0, 2.0, 4.0])
    b = torch.tensor([3.0, -6.0, 8.0])
    masks = [torch.tensor([True, False, True]), torch.tensor([True, True, False])]
    out = _core.ordered_sum([a, b], [2.0, 0.5], masks=masks, divisor=0.5)
    # 2 * [2, 0, 8] + 0.5 * [6, -12, 0]
    assert out.tolist() == [7.0, -6.0, 16.0]
    mean = _core.ordered_sum([a, b, a], divide_by_count=True)
    assert torch.equal(mean, torch.tensor([5.0 / 3.0, -2.0 / 3.0, 16.0 / 3.0]))


def test_fused_sum_gives_the_bits_of_ordered_sum() -> None:
    gen = torch.Generator().manual_seed(0)
    for n in (1, 2, 3, 5):
        tensors = [torch.randn(1000, generator=gen) * 10 ** float(i) for i in range(n)]
        weights = [0.3 + i for i in range(n)]
        for w in (None, weights):
            for mean in (False, True):
                expected = _core.ordered_sum(tensors, w, divide_by_count=mean)
                got = _core.fused_sum([t.clone() for t in tensors], w, divide_by_count=mean)
                assert torch.equal(got.view(torch.int32), expected.view(torch.int32)), (n, w)


# ---------------------------------------------------------------------------- trims


def test_kth_largest_matches_kthvalue() -> None:
    gen = torch.Generator().manual_seed(1)
    magnitude = torch.randn(5000, generator=gen).abs()
    magnitude[::7] = 0.5  # many ties
    for k in (1, 2, 700, 714, 715, 4999):
        expected = torch.kthvalue(magnitude, magnitude.numel() - k + 1).values
        assert torch.equal(_core._kth_largest(magnitude, k), expected), k
        value, above = _core.kth_largest_with_count(magnitude, k, block=333)
        assert torch.equal(value, expected), k
        assert above == int((magnitude > expected).sum()), k


def test_magnitude_keep_mask_keeps_exactly_k_with_ties_in_flat_order() -> None:
    t = torch.tensor([[0.1, -3.0, 2.0], [2.0, -2.0, 0.0]])
    # round(0.5 * 6) = 3: |-3| and the first two of the three entries tied at 2.
    mask = _core.magnitude_keep_mask(t, 0.5)
    assert mask.tolist() == [[False, True, True], [True, False, False]]
    assert _core.magnitude_keep_mask(t, 1.0).all()
    assert not _core.magnitude_keep_mask(t, 0.05).any()  # round(0.3) = 0
    # Python's round: 0.25 * 6 = 1.5 goes to 2
    assert int(_core.magnitude_keep_mask(t, 0.25).sum()) == 2
    assert torch.equal(
        _core.magnitude_keep_mask(t.double(), 0.5), _core.magnitude_keep_mask(t, 0.5)
    )
    assert torch.equal(
        _core.magnitude_keep_mask(t.bfloat16(), 0.5), _core.magnitude_keep_mask(t, 0.5)
    )


# ---------------------------------------------------------------------------- TIES


def test_ties_merge_elects_and_averages_the_agreeing_values() -> None:
    a = torch.tensor([1.0, -2.0, 1.0, 3.0])
    b = torch.tensor([3.0, 1.0, -1.0, -1.0])
    c = torch.tensor([-1.0, -1.0, 0.0, -1.0])
    out = _core.ties_merge([a, b, c], keep_masks=None, weights=None, majority="total")
    # sums 3, -2, 0, 1: signs +, -, none, +; means of the agreeing values
    assert out.tolist() == [2.0, -1.5, 0.0, 3.0]
    count = _core.ties_merge([a, b, c], keep_masks=None, weights=None, majority="count")
    # sign counts +1, -1, 0, -1
    assert count.tolist() == [2.0, -1.5, 0.0, -1.0]
    weighted = _core.ties_merge(
        [a, b, c], keep_masks=None, weights=[1.0, 1.0, 4.0], majority="total"
    )
    # c weighted by 4: sums 0, -5, 0, -2
    assert weighted.tolist() == [0.0, -3.0, 0.0, -2.5]


def test_fused_ties_gives_the_bits_of_ties_merge() -> None:
    gen = torch.Generator().manual_seed(2)
    tensors = [torch.randn(4096, generator=gen) for _ in range(4)]
    masks = [_core.magnitude_keep_mask(t, 0.4) for t in tensors]
    weights = [1.0, 0.5, 2.0, -1.0]
    expected = _core.ties_merge(tensors, keep_masks=masks, weights=weights, majority="total")
    values = [t * m * w for t, m, w in zip(tensors, masks, weights, strict=True)]  # -0.0 too
    m = 4096
    buffers = [torch.empty(m, dtype=torch.float64) for _ in range(2)]
    scratch = [torch.empty(m) for _ in range(3)]
    got = _core.fused_ties(values, *buffers, *scratch)
    assert torch.equal(got, expected)


# ---------------------------------------------------------------------------- DARE, TALL


def test_dare_keep_mask_is_seeded_and_has_the_keep_rate() -> None:
    shape = torch.Size([200, 50])
    draw = lambda: _core.dare_keep_mask(  # noqa: E731
        shape, 0.9, torch.Generator().manual_seed(3), torch.device("cpu")
    )
    first = draw()
    assert torch.equal(first, draw())
    assert first.dtype == torch.bool and first.shape == shape
    assert abs(first.float().mean().item() - 0.1) < 0.015
    expected = torch.rand(shape, generator=torch.Generator().manual_seed(3)) >= 0.9
    assert torch.equal(first, expected)


def test_dare_one_rescales_the_kept_entries() -> None:
    x = torch.full((1000,), 2.0)
    out = _core.dare_one(x, 0.75, torch.Generator().manual_seed(4), rescale=True)
    assert set(out.unique().tolist()) <= {0.0, 8.0}
    kept = _core.dare_keep_mask(x.shape, 0.75, torch.Generator().manual_seed(4), x.device)
    assert torch.equal(out != 0, kept)
    plain = _core.dare_one(x, 0.75, torch.Generator().manual_seed(4), rescale=False)
    assert torch.equal(plain, torch.where(kept, x, 0.0))
    assert torch.equal(_core.dare_one(x, 0.0, torch.Generator(), rescale=True), x)


def test_tall_masks_list_compares_each_task_with_the_rest() -> None:
    a = torch.tensor([1.0, 0.0, 0.2])
    b = torch.tensor([0.0, 1.0, 0.2])
    total = a + b
    ma, mb = _core.tall_masks_list([a, b], total, [1.0, 1.0])
    # |a| >= |total - a| = |b|
    assert ma.tolist() == [True, False, True] and mb.tolist() == [False, True, True]
    (strict,) = _core.tall_masks_list([a], total, [2.0])
    assert strict.tolist() == [True, False, False]  # 0.2 >= 2 * 0.2 fails


# ---------------------------------------------------------------------------- bits


def test_pack_bits_is_little_endian_within_each_byte() -> None:
    mask = torch.tensor([True, False, False, False, False, False, False, False, False, True])
    packed = _core.pack_bits(mask)
    assert packed.dtype == torch.uint8 and packed.tolist() == [1, 2]


@settings(max_examples=40, deadline=None)
@given(st.lists(st.booleans(), min_size=1, max_size=70), st.integers(1, 5))
def test_pack_unpack_round_trip(bits: list[bool], rows: int) -> None:
    mask = torch.tensor(bits * rows).reshape(rows, len(bits))
    packed = _core.pack_bits(mask)
    assert packed.numel() == -(-mask.numel() // 8)
    assert torch.equal(_core.unpack_bits(packed, tuple(mask.shape)), mask)


@pytest.mark.parametrize("n", [1, 2, 3])
def test_block_columns_bounds_the_temporaries(n: int) -> None:
    assert _core._block_columns(10, n) == 10
    big = 1 << 24
    assert _core._block_columns(big, n) * n <= max(_core.BLOCK_ELEMENTS, n << 16)
