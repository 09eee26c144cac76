"""Tests of weightspace.merge.functional: identities, hand-computed cases and errors."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from weightspace import ShapeMismatchError, WeightspaceValueError
from weightspace.merge import functional as F

SETTINGS = settings(max_examples=40, deadline=None)


@st.composite
def stacks(draw: st.DrawFn, *, min_tasks: int = 1, max_tasks: int = 5, nonzero: bool = False):
    n = draw(st.integers(min_tasks, max_tasks))
    shape = draw(hnp.array_shapes(min_dims=1, max_dims=3, min_side=1, max_side=6))
    elements = st.floats(-1e3, 1e3, width=32, allow_subnormal=False)
    if nonzero:
        elements = elements.filter(lambda x: x != 0.0)
    array = draw(hnp.arrays(np.float32, (n, *shape), elements=elements))
    return torch.from_numpy(array)


# ---------------------------------------------------------------- task arithmetic and mean


def test_task_arithmetic_of_one_vector_with_weight_one_is_the_vector() -> None:
    delta = torch.randn(7, 5, generator=torch.Generator().manual_seed(0))
    out = F.task_arithmetic(delta[None], [1.0])
    assert torch.equal(out, delta)
    assert out.data_ptr() != delta.data_ptr()


def test_task_arithmetic_hand_example() -> None:
    deltas = torch.tensor([[1.0, 2.0, 4.0], [0.5, -1.0, 2.0]])
    assert torch.equal(F.task_arithmetic(deltas, [2.0, -4.0]), torch.tensor([0.0, 8.0, 0.0]))
    assert torch.equal(F.task_arithmetic(deltas, 0.5), torch.tensor([0.75, 0.5, 3.0]))


def test_mean_hand_example() -> None:
    deltas = torch.tensor([[1.0, 2.0], [3.0, 6.0], [5.0, 1.0]])
    assert torch.equal(F.mean(deltas), torch.tensor([3.0, 3.0]))


@st.composite
def bounded_stacks(draw: st.DrawFn, *, min_tasks: int = 2, max_tasks: int = 5):
    """Stacks whose non-zero magnitudes span at most 2**-10 .. 2**10 (20 binades).

    Inside the range where a float64 sum of float32 terms is exact (see weightspace.merge._core),
    so every merge must be bitwise invariant to the order of the tasks. Weights are drawn from
    {+-0.5, +-1, +-2}, which keep the weighted terms inside 2**-11 .. 2**11.
    """
    n = draw(st.integers(min_tasks, max_tasks))
    shape = draw(hnp.array_shapes(min_dims=1, max_dims=3, min_side=1, max_side=6))
    magnitude = st.floats(2.0**-10, 2.0**10, width=32)
    elements = st.one_of(st.just(0.0), magnitude, magnitude.map(lambda x: -x))
    array = draw(hnp.arrays(np.float32, (n, *shape), elements=elements))
    return torch.from_numpy(array)


WEIGHTS = st.sampled_from([0.5, 1.0, 2.0, -0.5, -1.0, -2.0])


@SETTINGS
@given(deltas=bounded_stacks(), data=st.data())
def test_merges_are_bitwise_invariant_to_task_order(
    deltas: torch.Tensor, data: st.DataObject
) -> None:
    n = deltas.shape[0]
    perm = data.draw(st.permutations(range(n)))
    weights = data.draw(st.lists(WEIGHTS, min_size=n, max_size=n))
    permuted = deltas[list(perm)]
    permuted_weights = [weights[i] for i in perm]
    assert torch.equal(F.mean(deltas), F.mean(permuted))
    assert torch.equal(
        F.task_arithmetic(deltas, weights), F.task_arithmetic(permuted, permuted_weights)
    )
    for majority in ("total", "count"):
        assert torch.equal(
            F.ties(deltas, density=0.5, weights=weights, majority=majority),
            F.ties(permuted, density=0.5, weights=permuted_weights, majority=majority),
        )


def _f32_ulp(x: torch.Tensor) -> torch.Tensor:
    return torch.nextafter(x.abs(), torch.tensor(math.inf)) - x.abs()


@SETTINGS
@given(deltas=stacks(min_tasks=3), data=st.data())
def test_sums_are_order_invariant_within_one_float32_ulp_for_any_exponent_range(
    deltas: torch.Tensor, data: st.DataObject
) -> None:
    # Beyond the exact range (terms more than ~27 binades apart at one coordinate) the float64
    # sum may round; two orders then differ by at most one float32 ulp of the result, plus
    # the float64 rounding of the largest term (where terms cancel).
    n = deltas.shape[0]
    perm = data.draw(st.permutations(range(n)))
    weights = data.draw(st.lists(st.floats(-2, 2, width=32), min_size=n, max_size=n))
    permuted = deltas[list(perm)]
    permuted_weights = [weights[i] for i in perm]
    for a, b in (
        (F.mean(deltas), F.mean(permuted)),
        (F.task_arithmetic(deltas, weights), F.task_arithmetic(permuted, permuted_weights)),
    ):
        largest = (deltas.abs() * 2).amax(0)
        tolerance = torch.maximum(_f32_ulp(a), _f32_ulp(b)) + largest * 2.0**-50
        assert bool(((a - b).abs() <= tolerance).all())


def test_sums_are_exact_and_order_invariant_inside_the_documented_range() -> None:
    # 2**26 + 2**0 + 2**-1 - 2**26: terms 27 binades apart; a float32 sum depends on the order
    # (and loses the small terms), the float64 sum is exact: 1.5 in every order.
    deltas = torch.tensor([[2.0**26], [1.0], [0.5], [-(2.0**26)]])
    for order in ([0, 1, 2, 3], [1, 2, 0, 3], [0, 3, 1, 2], [3, 2, 1, 0]):
        assert F.task_arithmetic(deltas[order], 1.0).item() == 1.5


def test_sums_of_many_tasks_do_not_depend_on_order_where_plain_sum_would() -> None:
    # 1e8 + 1 - 1e8 in float32 depends on the order of the terms.
    deltas = torch.tensor([[1e8], [1.0], [-1e8]])
    orders = [[0, 1, 2], [1, 0, 2], [2, 1, 0], [0, 2, 1]]
    results = {F.task_arithmetic(deltas[o], 1.0).item() for o in orders}
    assert len(results) == 1


@SETTINGS
@given(deltas=stacks())
def test_mean_equals_task_arithmetic_over_n_up_to_rounding(deltas: torch.Tensor) -> None:
    n = deltas.shape[0]
    expected = deltas.double().mean(0).float()
    torch.testing.assert_close(F.mean(deltas), expected, rtol=1e-5, atol=1e-3)
    torch.testing.assert_close(F.task_arithmetic(deltas, 1.0 / n), expected, rtol=1e-5, atol=1e-3)


# ---------------------------------------------------------------- magnitude pruning


@SETTINGS
@given(deltas=stacks(max_tasks=1, nonzero=True), density=st.floats(0.01, 1.0))
def test_magnitude_prune_keeps_exactly_round_density_numel(
    deltas: torch.Tensor, density: float
) -> None:
    delta = deltas[0]
    out = F.magnitude_prune(delta, density)
    k = round(density * delta.numel())
    assert int((out != 0).sum()) == k
    kept = out != 0
    assert torch.equal(out[kept], delta[kept])
    if 0 < k < delta.numel():
        assert delta[kept].abs().min() >= delta[~kept].abs().max()


def test_magnitude_prune_breaks_ties_in_row_major_order() -> None:
    delta = torch.tensor([[1.0, -2.0, 2.0], [-2.0, 2.0, 0.5]])
    out = F.magnitude_prune(delta, 0.5)  # k = 3 of the four entries of magnitude 2
    assert torch.equal(out, torch.tensor([[0.0, -2.0, 2.0], [-2.0, 0.0, 0.0]]))
    assert torch.equal(F.magnitude_prune(torch.ones(5), 0.4), torch.tensor([1.0, 1, 0, 0, 0]))


def test_magnitude_prune_density_one_is_identity_and_tiny_density_zeroes() -> None:
    delta = torch.tensor([3.0, -1.0, 2.0])
    assert torch.equal(F.magnitude_prune(delta, 1.0), delta)
    assert torch.equal(F.magnitude_prune(delta, 0.1), torch.zeros(3))  # round(0.3) == 0


# ---------------------------------------------------------------- TIES


def test_ties_hand_example_trim_elect_disjoint_mean() -> None:
    # Three tasks, density 0.5 keeps two of four entries per task:
    #   trimmed t1 = [1.0, 0, 0, -0.8], t2 = [0, 0.5, 0.7, 0], t3 = [0, -0.9, 0, 0.4]
    # total-mass election: [+, -(0.5-0.9), +, -(-0.8+0.4)] -> [1.0, -0.9, 0.7, -0.8]
    # count election: columns 1 and 3 are one-against-one ties -> 0
    deltas = torch.tensor(
        [
            [1.0, -0.1, 0.6, -0.8],
            [-0.4, 0.5, 0.7, 0.05],
            [0.3, -0.9, -0.2, 0.4],
        ],
        dtype=torch.float64,
    )
    total = F.ties(deltas, density=0.5)
    count = F.ties(deltas, density=0.5, majority="count")
    assert torch.equal(total, torch.tensor([1.0, -0.9, 0.7, -0.8], dtype=torch.float64))
    assert torch.equal(count, torch.tensor([1.0, 0.0, 0.7, 0.0], dtype=torch.float64))


def test_ties_disjoint_mean_and_the_two_election_rules() -> None:
    # column 0: two agreeing tasks are averaged, the dissenting one ignored.
    # column 1: the total mass says "+" (0.9 > 0.7); the count says "-" (two tasks against one).
    deltas = torch.tensor([[0.6, 0.9], [0.2, -0.3], [-0.3, -0.4]], dtype=torch.float64)
    torch.testing.assert_close(
        F.ties(deltas, density=1.0), torch.tensor([0.4, 0.9], dtype=torch.float64)
    )
    torch.testing.assert_close(
        F.ties(deltas, density=1.0, majority="count"),
        torch.tensor([0.4, -0.35], dtype=torch.float64),
    )


def test_ties_coordinates_without_agreement_are_zero() -> None:
    deltas = torch.tensor([[1.0, 0.0], [-1.0, 0.0]])
    assert torch.equal(F.ties(deltas, density=1.0), torch.tensor([0.0, 0.0]))


@SETTINGS
@given(deltas=stacks(nonzero=True), data=st.data())
def test_ties_density_one_with_agreeing_signs_is_the_mean(
    deltas: torch.Tensor, data: st.DataObject
) -> None:
    signs = torch.tensor(
        data.draw(
            st.lists(
                st.sampled_from([-1.0, 1.0]), min_size=deltas[0].numel(), max_size=deltas[0].numel()
            )
        )
    ).reshape(deltas.shape[1:])
    agreeing = deltas.abs() * signs
    assert torch.equal(F.ties(agreeing, density=1.0), F.mean(agreeing))
    assert torch.equal(F.ties(agreeing, density=1.0, majority="count"), F.mean(agreeing))


def test_ties_weights_scale_the_tasks() -> None:
    deltas = torch.tensor([[1.0, -2.0], [3.0, 1.0]])
    out = F.ties(deltas, density=1.0, weights=[1.0, 3.0])
    # weighted values [1, -2] and [9, 3]: column 0 -> (1 + 9) / 2; column 1 -> 3 wins over -2
    assert torch.equal(out, torch.tensor([5.0, 3.0]))


# ---------------------------------------------------------------- DARE


def test_dare_with_drop_rate_zero_returns_the_input() -> None:
    delta = torch.randn(4, 6, generator=torch.Generator().manual_seed(1))
    assert torch.equal(F.dare(delta, drop_rate=0.0, seed=3), delta)


def test_dare_is_reproducible_bit_for_bit() -> None:
    delta = torch.randn(100, 30, generator=torch.Generator().manual_seed(2))
    a = F.dare(delta, drop_rate=0.7, seed=11)
    b = F.dare(delta, drop_rate=0.7, seed=11)
    c = F.dare(delta, drop_rate=0.7, generator=torch.Generator().manual_seed(11))
    assert torch.equal(a, b)
    assert torch.equal(a, c)
    assert not torch.equal(a, F.dare(delta, drop_rate=0.7, seed=12))


def test_dare_values_are_dropped_or_rescaled() -> None:
    delta = torch.randn(5000, generator=torch.Generator().manual_seed(3)).double()
    p = 0.8
    out = F.dare(delta, drop_rate=p, seed=0)
    kept = out != 0
    torch.testing.assert_close(out[kept], delta[kept] / (1 - p), rtol=0, atol=0)
    plain = F.dare(delta, drop_rate=p, seed=0, rescale=False)
    assert torch.equal(plain[kept], delta[kept])
    # Fraction kept: Binomial(5000, 0.2), standard deviation sqrt(5000 * 0.2 * 0.8) ~ 28.
    assert abs(int(kept.sum()) - 1000) < 5 * math.sqrt(5000 * p * (1 - p))


@pytest.mark.parametrize("p", [0.3, 0.9])
def test_dare_expected_value_is_the_input(p: float) -> None:
    # Each output entry is x/(1-p) with probability 1-p, else 0: mean x, variance
    # x**2 * p / (1-p). Averaging M independent draws gives a standard error
    # |x| * sqrt(p / ((1-p) M)); we allow 5 standard errors per coordinate (fixed seed).
    x = torch.linspace(-2.0, 2.0, 50, dtype=torch.float64)
    m = 4000
    gen = torch.Generator().manual_seed(1234)
    draws = torch.stack([F.dare(x, drop_rate=p, generator=gen) for _ in range(m)])
    stderr = x.abs() * math.sqrt(p / ((1 - p) * m))
    assert torch.all((draws.mean(0) - x).abs() <= 5 * stderr + 1e-12)


def test_dare_ties_drop_zero_equals_ties_density_one() -> None:
    deltas = torch.randn(3, 40, generator=torch.Generator().manual_seed(4))
    assert torch.equal(F.dare_ties(deltas, drop_rate=0.0, seed=0), F.ties(deltas, density=1.0))


def test_dare_ties_is_reproducible() -> None:
    deltas = torch.randn(3, 40, generator=torch.Generator().manual_seed(4))
    a = F.dare_ties(deltas, drop_rate=0.5, seed=9, weights=[1.0, 0.5, 2.0])
    b = F.dare_ties(deltas, drop_rate=0.5, seed=9, weights=[1.0, 0.5, 2.0])
    assert torch.equal(a, b)


# ---------------------------------------------------------------- TALL masks and consensus


def test_tall_masks_hand_example_uses_greater_or_equal() -> None:
    deltas = torch.tensor([[1.0, 0.2, 0.0], [0.5, 1.0, 0.0]])
    merged = deltas.sum(0)  # [1.5, 1.2, 0]
    # task 0: |1| >= 0.5*|0.5|, |0.2| >= 0.5*|1.0| is False, 0 >= 0 is True
    out = F.tall_masks(deltas, merged, lambdas=[0.5, 0.5])
    assert torch.equal(out, torch.tensor([[True, False, True], [True, True, True]]))
    # task 1 with lambda 3: 0.5 >= 3 * 1.0 is False, 1.0 >= 3 * |1.2 - 1.0| is True
    out = F.tall_masks(deltas, merged, lambdas=[0.5, 3.0])
    assert torch.equal(out, torch.tensor([[True, False, True], [False, True, True]]))


@SETTINGS
@given(
    masks=hnp.arrays(np.bool_, st.tuples(st.integers(1, 5), st.integers(1, 20), st.integers(1, 3)))
)
def test_consensus_k1_is_union_and_kn_is_intersection(masks: np.ndarray) -> None:
    stacked = torch.from_numpy(masks)
    n = stacked.shape[0]
    assert torch.equal(F.consensus(stacked, 1), stacked.any(0))
    assert torch.equal(F.consensus(stacked, n), stacked.all(0))


# ---------------------------------------------------------------- packing


@SETTINGS
@given(mask=hnp.arrays(np.bool_, hnp.array_shapes(min_dims=0, max_dims=4, min_side=0, max_side=9)))
def test_pack_unpack_round_trip(mask: np.ndarray) -> None:
    tensor = torch.from_numpy(mask)
    packed, shape = F.pack_mask(tensor)
    assert packed.dtype == torch.uint8
    assert packed.numel() == (tensor.numel() + 7) // 8
    assert shape == tuple(tensor.shape)
    assert np.array_equal(packed.numpy(), np.packbits(mask.reshape(-1), bitorder="little"))
    assert torch.equal(F.unpack_mask(packed, shape), tensor)


# ---------------------------------------------------------------- errors


@pytest.mark.parametrize(
    ("call", "pattern"),
    [
        (lambda d: F.ties(d, density=0.0), r"`density` must lie in \(0, 1\].*got 0.0"),
        (lambda d: F.ties(d, density=1.5), r"`density` must lie in \(0, 1\].*got 1.5"),
        (lambda d: F.magnitude_prune(d[0], float("nan")), r"`density` must be finite, got nan"),
        (lambda d: F.dare(d, drop_rate=1.0, seed=0), r"`drop_rate` must lie in \[0, 1\).*got 1.0"),
        (lambda d: F.dare(d, drop_rate=-0.1, seed=0), r"`drop_rate` must lie in \[0, 1\)"),
        (lambda d: F.dare(d, drop_rate=0.5), r"exactly one of `generator` and `seed`"),
        (
            lambda d: F.dare(d, drop_rate=0.5, seed=0, generator=torch.Generator()),
            r"exactly one of `generator` and `seed`",
        ),
        (lambda d: F.task_arithmetic(d, [1.0]), r"`weights` must have one entry per task \(2\)"),
        (lambda d: F.task_arithmetic(d, [1.0, math.inf]), r"`weights\[1\]` must be finite"),
        (lambda d: F.ties(d, density=0.5, majority="sum"), r"`majority` must be 'total'"),
        (lambda d: F.mean(d[:0]), r"`deltas` must have shape \[n_tasks, \*shape\]"),
        (lambda d: F.mean(d.long()), r"`deltas` must be a floating-point tensor"),
        (lambda d: F.consensus(d > 0, 3), r"`k` must lie in \[1, 2\]"),
        (lambda d: F.consensus(d, 1), r"`masks` must be a boolean tensor"),
        (lambda d: F.pack_mask(d), r"`mask` must be a boolean tensor"),
        (
            lambda d: F.unpack_mask(torch.zeros(3, dtype=torch.uint8), (4, 4)),
            r"`packed` must be a 1-D torch.uint8 tensor of 2 bytes",
        ),
        (lambda d: F.tall_masks(d, d[0], lambdas=-1.0), r"`lambdas` must be non-negative"),
    ],
)
def test_bad_arguments_raise_with_a_clear_message(call, pattern: str) -> None:  # type: ignore[no-untyped-def]
    deltas = torch.tensor([[1.0, -2.0, 3.0], [0.5, 0.5, -1.0]])
    with pytest.raises(WeightspaceValueError, match=pattern):
        call(deltas)


def test_tall_masks_merged_shape_is_checked() -> None:
    with pytest.raises(ShapeMismatchError, match=r"`merged` must have the shape"):
        F.tall_masks(torch.zeros(2, 3), torch.zeros(4), lambdas=0.4)
