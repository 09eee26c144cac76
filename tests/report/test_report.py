"""weightspace.report: summaries of per-seed values and Markdown tables."""

from __future__ import annotations

import math
import statistics

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from scipy import stats

from weightspace import WeightspaceValueError
from weightspace.report import Summary, markdown_table, markdown_to_rst, summarize

finite = st.floats(-1e6, 1e6, allow_nan=False)


@given(st.lists(finite, min_size=1, max_size=12))
def test_summarize_matches_the_definitions(values: list[float]) -> None:
    s = summarize(values)
    assert s.n == len(values) and s.values == tuple(values) and s.ddof == 1
    assert s.mean == statistics.fmean(values)
    assert s.std == (statistics.stdev(values) if len(values) > 1 else 0.0)
    p = summarize(values, ddof=0)
    assert p.std == (statistics.pstdev(values) if len(values) > 1 else 0.0)
    assert p.mean == s.mean


@given(st.lists(finite, min_size=2, max_size=12))
def test_half_width_is_the_student_t_interval(values: list[float]) -> None:
    s = summarize(values)
    n = len(values)
    expected = stats.t.ppf(0.975, n - 1) * np.std(values, ddof=1) / math.sqrt(n)
    assert s.half_width == pytest.approx(expected, rel=1e-6, abs=1e-9)
    # the same interval whichever standard deviation the summary shows
    assert summarize(values, ddof=0).half_width == pytest.approx(s.half_width, rel=1e-9, abs=1e-9)


def test_half_width_known_value_and_undefined_cases() -> None:
    assert summarize([1.0, 2.0, 3.0]).half_width == pytest.approx(4.302652729911275 / math.sqrt(3))
    assert math.isnan(summarize([1.0]).half_width)
    assert math.isnan(summarize([1.0, None], missing="propagate").half_width)
    assert math.isnan(Summary(1.0, 0.0, 1).sample_std)


@given(st.lists(finite, min_size=1, max_size=8), st.floats(-100, 100, allow_nan=False))
def test_scaled_is_the_summary_of_the_scaled_values(values: list[float], k: float) -> None:
    s = summarize(values).scaled(k)
    assert s.mean == pytest.approx(statistics.fmean(v * k for v in values), rel=1e-9, abs=1e-6)
    assert s.std == pytest.approx(
        np.std(np.array(values) * k, ddof=1) if len(values) > 1 else 0.0, rel=1e-6, abs=1e-6
    )
    assert s.values == tuple(v * k for v in values)


def test_format_and_str() -> None:
    s = summarize([0.91, 0.93, 0.92])
    assert str(s) == "0.920 ± 0.010"
    assert f"{s:.1f}" == "0.9 ± 0.0"
    assert f"{s.scaled(100):.1f}" == "92.0 ± 1.0"
    assert f"{summarize([-0.5, 0.5]):+.2f}" == "+0.00 ± +0.71"
    assert str(summarize([2.0])) == "2.000 ± 0.000"
    undefined = summarize([1.0, float("nan")], missing="propagate")
    assert str(undefined) == "n/a" and undefined.n == 2


def test_a_population_std_table_matches_the_hand_computed_one() -> None:
    s = summarize([0.8, 0.9], ddof=0)
    assert f"{s.scaled(100):.1f}" == f"{100 * 0.85:.1f} ± {100 * 0.05:.1f}"


def test_markdown_table_cells_and_formats() -> None:
    rows = [
        ["a", summarize([0.5, 0.7]), 0.25, 3, None],
        ["b", Summary(float("nan"), float("nan"), 2), float("nan"), 10, "text"],
    ]
    out = markdown_table(
        ["row", "score", "scale", "n", "note"], rows, formats=[None, ".2f", "+.1f", None, None]
    )
    assert out == (
        "| row | score | scale | n | note |\n"
        "|---|---|---|---|---|\n"
        "| a | 0.60 ± 0.14 | +0.2 | 3 | n/a |\n"
        "| b | n/a | n/a | 10 | text |\n"
    )
    assert markdown_table(["x"], [[1.23456]], formats=".1f") == "| x |\n|---|\n| 1.2 |\n"
    assert markdown_table(["x"], [[None]], missing="–") == "| x |\n|---|\n| – |\n"
    upper = markdown_table(["x", "y"], [["a", "b"]], formats=lambda c: str(c).upper())
    assert upper.endswith("| A | B |\n")
    assert markdown_table(["x"], []) == "| x |\n|---|\n"


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda: summarize([]), "`values` must be a non-empty sequence of numbers, got []"),
        (lambda: summarize("12"), "`values` must be a non-empty sequence"),  # type: ignore[arg-type]
        (lambda: summarize([1.0, float("nan")]), "`values[1]` must be a number (not NaN)"),
        (lambda: summarize([1.0, None]), "missing='propagate'"),
        (lambda: summarize([True]), "`values[0]` must be a number (not NaN), got True"),
        (lambda: summarize([1.0], ddof=2), "`ddof` must be 0 or 1, got 2"),
        (lambda: summarize([1.0], missing="skip"), "`missing` must be"),  # type: ignore[arg-type]
        (lambda: markdown_table(["a", "b"], [["x"]]), "`rows[0]` has 1 cells"),
        (lambda: markdown_table(["a"], [["x"]], formats=[None, None]), "one format per column"),
        (lambda: markdown_table(["a"], [[[1]]]), "got list"),  # type: ignore[list-item]
    ],
)
def test_errors_name_the_argument(call: object, message: str) -> None:
    with pytest.raises(WeightspaceValueError) as info:
        call()  # type: ignore[operator]
    assert message in str(info.value)


def test_markdown_to_rst_sections_text_and_widths() -> None:
    md = (
        "Intro line.\n\n### first\n| x | longer |\n|---|---|\n| 10 | 2 |\n\n"
        "### second\n| a |\n|---|\n"
    )
    assert markdown_to_rst(md) == (
        "Intro line.\n"
        "\n"
        ".. section: first\n"
        "\n"
        "+----+--------+\n"
        "| x  | longer |\n"
        "+====+========+\n"
        "| 10 | 2      |\n"
        "+----+--------+\n"
        "\n"
        ".. end: first\n"
        "\n"
        "\n"
        ".. section: second\n"
        "\n"
        "+---+\n"
        "| a |\n"
        "+===+\n"
        "\n"
        ".. end: second\n"
    )
