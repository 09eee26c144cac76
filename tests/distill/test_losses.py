"""The distillation losses against values worked out by hand, and their identities."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from weightspace import ShapeMismatchError, WeightspaceValueError, distill


def test_kd_at_temperature_one_is_the_kl_of_the_softmaxes() -> None:
    s = torch.tensor([[0.0, 0.0]])
    t = torch.tensor([[math.log(3.0), 0.0]])  # teacher 0.75 / 0.25, student 0.5 / 0.5
    expected = 0.75 * math.log(0.75 / 0.5) + 0.25 * math.log(0.25 / 0.5)
    assert distill.kd_loss(s, t, temperature=1.0).item() == pytest.approx(expected, abs=1e-7)


def test_kd_carries_the_t_squared_factor() -> None:
    s = torch.tensor([[0.0, 0.0]])
    t = torch.tensor([[math.log(3.0), 0.0]])
    # At T = 2 the teacher's softmax is (sqrt 3, 1) / (sqrt 3 + 1); the KL is multiplied by 4.
    p = [math.sqrt(3) / (math.sqrt(3) + 1), 1 / (math.sqrt(3) + 1)]
    kl = sum(q * math.log(q / 0.5) for q in p)
    assert distill.kd_loss(s, t, temperature=2.0).item() == pytest.approx(4 * kl, abs=1e-6)


def test_kd_means_over_the_batch_and_sums_over_classes() -> None:
    s = torch.tensor([[0.0, 0.0], [0.0, 0.0]])
    t = torch.tensor([[math.log(3.0), 0.0], [0.0, 0.0]])
    per = distill.kd_loss(s, t, temperature=1.0, reduction="none")
    first = 0.75 * math.log(1.5) + 0.25 * math.log(0.5)
    assert per.tolist() == pytest.approx([first, 0.0], abs=1e-7)
    assert distill.kd_loss(s, t, temperature=1.0).item() == pytest.approx(first / 2, abs=1e-7)


def test_dkd_splits_into_target_and_non_target_parts() -> None:
    # Teacher (0.5, 0.3, 0.2), student uniform, true class 0, T = 1.
    t = torch.log(torch.tensor([[0.5, 0.3, 0.2]]))
    s = torch.zeros(1, 3)
    y = torch.tensor([0])
    tckd = 0.5 * math.log(0.5 / (1 / 3)) + 0.5 * math.log(0.5 / (2 / 3))
    nckd = 0.6 * math.log(0.6 / 0.5) + 0.4 * math.log(0.4 / 0.5)
    got = distill.dkd_loss(s, t, y, alpha=1.0, beta=0.0, temperature=1.0)
    assert got.item() == pytest.approx(tckd, abs=1e-6)
    got = distill.dkd_loss(s, t, y, alpha=0.0, beta=1.0, temperature=1.0)
    assert got.item() == pytest.approx(nckd, abs=1e-6)
    got = distill.dkd_loss(s, t, y, temperature=1.0)  # defaults alpha 1, beta 8
    assert got.item() == pytest.approx(tckd + 8 * nckd, abs=1e-6)
    # Hinton's KD is TCKD + (1 - p_t[y]) NCKD (Zhao et al., eq. 7).
    kd = distill.kd_loss(s, t, temperature=1.0).item()
    assert kd == pytest.approx(tckd + 0.5 * nckd, abs=1e-6)


def test_dkd_temperature_factor() -> None:
    t = torch.log(torch.tensor([[0.5, 0.3, 0.2]])) * 2.0  # at T = 2: (0.5, 0.3, 0.2) again
    s = torch.zeros(1, 3)
    y = torch.tensor([0])
    tckd = 0.5 * math.log(1.5) + 0.5 * math.log(0.75)
    got = distill.dkd_loss(s, t, y, alpha=1.0, beta=0.0, temperature=2.0)
    assert got.item() == pytest.approx(4 * tckd, abs=1e-6)


logits = st.lists(st.floats(-6, 6), min_size=4, max_size=4)


@settings(max_examples=60, deadline=None)
@given(logits, logits, st.integers(0, 3), st.sampled_from([1.0, 2.0, 4.0]))
def test_kd_decomposes_into_tckd_and_nckd(
    zs: list[float], zt: list[float], y: int, temperature: float
) -> None:
    s = torch.tensor([zs], dtype=torch.float64)
    t = torch.tensor([zt], dtype=torch.float64)
    target = torch.tensor([y])
    tckd = distill.dkd_loss(s, t, target, alpha=1, beta=0, temperature=temperature)
    nckd = distill.dkd_loss(s, t, target, alpha=0, beta=1, temperature=temperature)
    p_y = torch.softmax(t / temperature, dim=1)[0, y]
    kd = distill.kd_loss(s, t, temperature=temperature)
    torch.testing.assert_close(kd, tckd + (1 - p_y) * nckd, rtol=1e-9, atol=1e-9)


@settings(max_examples=60, deadline=None)
@given(logits, st.floats(-50, 50), st.sampled_from([0.5, 1.0, 3.0]))
def test_kd_is_zero_on_itself_and_ignores_a_shift(
    z: list[float], shift: float, temperature: float
) -> None:
    a = torch.tensor([z], dtype=torch.float64)
    assert distill.kd_loss(a, a + shift, temperature=temperature).item() == pytest.approx(
        0.0, abs=1e-9
    )
    b = a.flip(1)
    torch.testing.assert_close(
        distill.kd_loss(a + shift, b, temperature=temperature),
        distill.kd_loss(a, b, temperature=temperature),
        rtol=1e-9,
        atol=1e-9,
    )
    assert distill.kd_loss(a, b, temperature=temperature).item() >= 0.0


def test_losses_give_gradients_only_to_the_student() -> None:
    s = torch.zeros(2, 3, requires_grad=True)
    t = torch.randn(2, 3, generator=torch.Generator().manual_seed(0))
    distill.dkd_loss(s, t, torch.tensor([0, 2])).backward()  # type: ignore[no-untyped-call]
    assert s.grad is not None and bool(s.grad.abs().sum() > 0)
    # At the optimum (student = teacher) the KD gradient vanishes.
    s2 = t.clone().requires_grad_(True)
    distill.kd_loss(s2, t).backward()  # type: ignore[no-untyped-call]
    assert s2.grad is not None
    torch.testing.assert_close(s2.grad, torch.zeros_like(t), atol=1e-7, rtol=0)


def test_hint_loss_is_the_mean_squared_error() -> None:
    s = torch.tensor([[1.0, 2.0], [0.0, 0.0]])
    t = torch.tensor([[3.0, 2.0], [0.0, 2.0]])
    assert distill.hint_loss(s, t).item() == pytest.approx((4 + 0 + 0 + 4) / 4)
    with pytest.raises(ShapeMismatchError, match="connector"):
        distill.hint_loss(torch.zeros(2, 3), torch.zeros(2, 4))


def test_attention_map_and_loss_by_hand() -> None:
    # Two channels over two positions: (1, 2) and (3, 0). p = 2: mean of squares (5, 2).
    a = torch.tensor([[[[1.0, 2.0]], [[3.0, 0.0]]]])
    expected = [5 / math.sqrt(29), 2 / math.sqrt(29)]
    assert distill.attention_map(a)[0].tolist() == pytest.approx(expected)
    # p = 1: mean of absolute values (2, 1).
    assert distill.attention_map(-a, p=1)[0].tolist() == pytest.approx(
        [2 / math.sqrt(5), 1 / math.sqrt(5)]
    )
    b = torch.tensor([[[[0.0, 1.0]]]])  # one channel, map (0, 1)
    loss = ((expected[0] - 0.0) ** 2 + (expected[1] - 1.0) ** 2) / 2
    assert distill.attention_loss(a, b).item() == pytest.approx(loss)
    with pytest.raises(ShapeMismatchError, match="spatial"):
        distill.attention_loss(torch.zeros(1, 2, 2, 2), torch.zeros(1, 2, 4, 4))
    with pytest.raises(ShapeMismatchError, match=r"\[N, C, \*spatial\]"):
        distill.attention_map(torch.zeros(2, 3))


def test_output_loss() -> None:
    s = torch.tensor([0.0, 1.0, 2.0])
    t = torch.tensor([1.0, 1.0, 0.0])
    assert distill.output_loss(s, t).item() == pytest.approx(5 / 3)
    assert distill.output_loss(s, t, kind="l1").item() == pytest.approx(1.0)
    with pytest.raises(WeightspaceValueError, match="`kind` must be 'mse' or 'l1', got 'huber'"):
        distill.output_loss(s, t, kind="huber")  # type: ignore[arg-type]
    with pytest.raises(ShapeMismatchError, match="same shape"):
        distill.output_loss(s, t[:2])


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda: distill.kd_loss(torch.zeros(2, 3), torch.zeros(2, 4)), r"\[N, classes\]"),
        (lambda: distill.kd_loss(torch.zeros(2), torch.zeros(2)), r"\[N, classes\]"),
        (lambda: distill.kd_loss(torch.zeros(1, 2), torch.zeros(1, 2), temperature=0), "`temp"),
        (
            lambda: distill.kd_loss(torch.zeros(1, 2), torch.zeros(1, 2), reduction="sum"),
            "`reduction` must be 'mean' or 'none', got 'sum'",
        ),
        (
            lambda: distill.dkd_loss(torch.zeros(1, 2), torch.zeros(1, 2), torch.tensor([2])),
            r"`targets` must lie in \[0, 1\], got values from 2 to 2",
        ),
        (
            lambda: distill.dkd_loss(torch.zeros(1, 2), torch.zeros(1, 2), torch.tensor([0.0])),
            "`targets` must be integer classes",
        ),
        (
            lambda: distill.dkd_loss(
                torch.zeros(1, 2), torch.zeros(1, 2), torch.tensor([0]), beta=-1
            ),
            "`beta` must be a finite number >= 0, got -1",
        ),
        (lambda: distill.attention_map(torch.zeros(1, 1, 2), p=0), "`p` must be"),
    ],
)
def test_bad_arguments(call: object, message: str) -> None:
    with pytest.raises(WeightspaceValueError, match=message):
        call()  # type: ignore[operator]
