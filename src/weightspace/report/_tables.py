"""Summaries of per-seed values and Markdown tables (see the package docstring)."""

from __future__ import annotations

import math
import statistics
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Literal, TypeAlias

from weightspace._errors import WeightspaceValueError

__all__ = ["Cell", "Summary", "markdown_table", "summarize"]


@dataclass(frozen=True)
class Summary:
    """Mean and standard deviation of a few runs (one per seed), with the runs themselves.

    ``str()`` gives ``"mean ± std"`` with three decimals; ``format(s, ".1f")`` uses another
    format for both numbers. An undefined summary (mean NaN, e.g. from a run that could not
    be scored) formats as ``"n/a"``.

    Attributes:
        mean: The mean.
        std: The standard deviation with ``ddof`` (sample standard deviation by default; 0 for
            a single run).
        n: The number of runs.
        values: The per-run values (empty when the summary was built from its moments only).
        ddof: Delta degrees of freedom of ``std``: 1 for the sample standard deviation, 0 for
            the population one.

    Example:
        >>> from weightspace.report import Summary
        >>> f"{Summary(0.9123, 0.0101, 3):.2f}"
        '0.91 ± 0.01'
        >>> f"{Summary(0.9123, 0.0101, 3).scaled(100):.1f}"
        '91.2 ± 1.0'
    """

    mean: float
    std: float
    n: int
    values: tuple[float, ...] = ()
    ddof: int = 1

    def __format__(self, spec: str) -> str:
        spec = spec or ".3f"
        if math.isnan(self.mean):
            return "n/a"
        return f"{self.mean:{spec}} ± {self.std:{spec}}"

    def __str__(self) -> str:
        return format(self, "")

    @property
    def sample_std(self) -> float:
        """The sample standard deviation (``ddof=1``), whatever ``ddof`` is; NaN for one run."""
        if self.n < 2:
            return math.nan
        if self.ddof == 1:
            return self.std
        return self.std * math.sqrt((self.n - self.ddof) / (self.n - 1))

    @property
    def half_width(self) -> float:
        """Half-width of the 95 % Student-t confidence interval of the mean.

        ``t(0.975, n - 1) * sample_std / sqrt(n)``; NaN for fewer than two runs.

        Example:
            >>> from weightspace.report import summarize
            >>> round(summarize([1.0, 2.0, 3.0]).half_width, 4)  # 4.3027 * 1 / sqrt(3)
            2.4841
        """
        if self.n < 2 or math.isnan(self.mean):
            return math.nan
        from scipy import stats

        return float(stats.t.ppf(0.975, self.n - 1)) * self.sample_std / math.sqrt(self.n)

    def scaled(self, factor: float) -> Summary:
        """The summary of the values times ``factor`` (e.g. 100 for percentages).

        Args:
            factor: The multiplier (may be negative: the spread stays non-negative).

        Returns:
            A new :class:`Summary`.
        """
        return Summary(
            self.mean * factor,
            self.std * abs(factor),
            self.n,
            tuple(v * factor for v in self.values),
            self.ddof,
        )


def summarize(
    values: Sequence[float | None],
    *,
    ddof: int = 1,
    missing: Literal["raise", "propagate"] = "raise",
) -> Summary:
    """Mean and standard deviation of per-seed values.

    Args:
        values: One number per run.
        ddof: 1 (default) for the sample standard deviation, 0 for the population one. A
            single run has standard deviation 0 either way.
        missing: What a ``None`` or NaN among ``values`` does: ``"raise"`` (a failed run must
            be reported, not averaged away) or ``"propagate"`` (the summary is undefined, its
            mean and standard deviation NaN, and it shows as ``n/a`` in tables).

    Returns:
        A :class:`Summary`.

    Raises:
        WeightspaceValueError: if ``values`` is empty or holds a non-number, or (with
            ``missing="raise"``) a NaN or ``None``.

    Example:
        >>> from weightspace.report import summarize
        >>> str(summarize([0.91, 0.93, 0.92]))
        '0.920 ± 0.010'
        >>> s = summarize([0.91, 0.93, 0.92], ddof=0)
        >>> round(s.std, 5), s.values
        (0.00816, (0.91, 0.93, 0.92))
    """
    if isinstance(values, (str, bytes)) or not isinstance(values, Sequence) or not values:
        raise WeightspaceValueError(
            f"`values` must be a non-empty sequence of numbers, got {values!r}"
        )
    if ddof not in (0, 1) or isinstance(ddof, bool):
        raise WeightspaceValueError(f"`ddof` must be 0 or 1, got {ddof!r}")
    if missing not in ("raise", "propagate"):
        raise WeightspaceValueError(f"`missing` must be 'raise' or 'propagate', got {missing!r}")
    floats: list[float] = []
    undefined = False
    for i, v in enumerate(values):
        if v is None or (isinstance(v, float) and math.isnan(v)):
            if missing == "raise":
                raise WeightspaceValueError(
                    f"`values[{i}]` must be a number (not NaN), got {v!r}; a failed run is "
                    "reported, not averaged away (report.summarize(..., missing='propagate') "
                    "shows the summary as n/a)"
                )
            undefined = True
            floats.append(math.nan)
            continue
        if isinstance(v, bool) or not isinstance(v, (int, float)):
            raise WeightspaceValueError(f"`values[{i}]` must be a number (not NaN), got {v!r}")
        floats.append(float(v))
    if undefined:
        return Summary(math.nan, math.nan, len(floats), tuple(floats), ddof)
    if len(floats) == 1:
        std = 0.0
    else:
        std = statistics.stdev(floats) if ddof == 1 else statistics.pstdev(floats)
    return Summary(statistics.fmean(floats), std, len(floats), tuple(floats), ddof)


Cell: TypeAlias = "Summary | float | int | str | None"
"""What a table cell may hold: a :class:`Summary`, a number, ready text or ``None``."""

Format: TypeAlias = "str | Callable[[Cell], str] | None"


def _render(cell: Cell, fmt: Format, missing: str) -> str:
    if callable(fmt):
        return fmt(cell)
    if cell is None:
        return missing
    if isinstance(cell, str):
        return cell
    if isinstance(cell, Summary):
        return missing if math.isnan(cell.mean) else format(cell, fmt or ".3f")
    if isinstance(cell, bool):
        return str(cell)
    if isinstance(cell, int):
        return format(cell, fmt or "d")
    if isinstance(cell, float):
        return missing if math.isnan(cell) else format(cell, fmt or ".3f")
    raise WeightspaceValueError(
        f"a table cell must be a Summary, a number, a string or None, got {type(cell).__name__}"
    )


def markdown_table(
    header: Sequence[str],
    rows: Sequence[Sequence[Cell]],
    *,
    formats: str | Callable[[Cell], str] | Sequence[Format] | None = None,
    missing: str = "n/a",
) -> str:
    """A Markdown (GitHub) table of summaries, numbers and text.

    Args:
        header: The column titles.
        rows: One sequence of cells per row, as long as ``header``. A :class:`Summary` shows
            as ``mean ± std``, a float or an int with the column's format, a string as it is,
            and ``None``, a NaN or an undefined summary as ``missing``.
        formats: One format for all columns, or one per column: a format spec such as
            ``".1f"`` or ``"+.3f"`` (applied to both numbers of a summary), a callable
            ``cell -> str``, or ``None`` for the default (``".3f"``; ``"d"`` for ints).
        missing: The text of an undefined cell.

    Returns:
        The table, one line per row, with a trailing newline.

    Raises:
        WeightspaceValueError: if a row's length or the number of ``formats`` differs from
            the header's, or a cell has another type.

    Example:
        >>> from weightspace.report import markdown_table, summarize
        >>> rows = [["negation", summarize([0.5, 0.7]), 0.25, None]]
        >>> print(markdown_table(["edit", "accuracy", "scale", "note"], rows,
        ...                      formats=[None, ".2f", ".2f", None]), end="")
        | edit | accuracy | scale | note |
        |---|---|---|---|
        | negation | 0.60 ± 0.14 | 0.25 | n/a |
    """
    width = len(header)
    if isinstance(formats, str) or formats is None or callable(formats):
        per_column: list[Format] = [formats] * width
    else:
        per_column = list(formats)
        if len(per_column) != width:
            raise WeightspaceValueError(
                f"`formats` must hold one format per column ({width}), got {len(per_column)}"
            )
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * width]
    for i, row in enumerate(rows):
        if len(row) != width:
            raise WeightspaceValueError(
                f"`rows[{i}]` has {len(row)} cells but the header has {width} columns: "
                f"{list(header)!r}"
            )
        cells = [_render(c, f, missing) for c, f in zip(row, per_column, strict=True)]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def markdown_to_rst(md: str) -> str:
    r"""Turn markdown pipe tables into reStructuredText grid tables with includable sections.

    Each ``### title`` line becomes the comment ``.. section: title`` and the table under it
    ends with ``.. end: title``, so that a report page includes one table at a time with
    ``.. include:: tables.rst`` and ``:start-after: .. section: title`` /
    ``:end-before: .. end: title``. Other lines are copied; the separator row of each pipe
    table (its second row) is dropped. The examples write their ``results/tables.rst`` with it
    from the markdown of :func:`markdown_table`.

    Args:
        md: Markdown text with ``### title`` headings and pipe tables.

    Returns:
        The reStructuredText, ending in one newline.

    Example:
        >>> print(markdown_to_rst("### sizes\n| a | bb |\n|---|---|\n| 1 | 2 |"), end="")
        .. section: sizes
        <BLANKLINE>
        +---+----+
        | a | bb |
        +===+====+
        | 1 | 2  |
        +---+----+
        <BLANKLINE>
        .. end: sizes
    """
    out: list[str] = []
    lines = md.splitlines()
    i, title = 0, ""
    while i < len(lines):
        line = lines[i]
        if line.startswith("### "):
            title = line[4:]
            out += [f".. section: {title}", ""]
            i += 1
        elif line.startswith("|"):
            block = []
            while i < len(lines) and lines[i].startswith("|"):
                block.append(lines[i])
                i += 1
            cells = [[c.strip() for c in row.strip("|").split("|")] for row in block]
            header, body = cells[0], cells[2:]
            widths = [max(len(r[k]) for r in [header, *body]) for k in range(len(header))]
            rule = {ch: "+" + "+".join(ch * (w + 2) for w in widths) + "+" for ch in "-="}
            out += [rule["-"], _grid_row(header, widths), rule["="]]
            for r in body:
                out += [_grid_row(r, widths), rule["-"]]
            out += ["", f".. end: {title}", ""]
        else:
            out.append(line)
            i += 1
    return "\n".join(out).rstrip("\n") + "\n"


def _grid_row(cells: list[str], widths: list[int]) -> str:
    return "| " + " | ".join(c.ljust(w) for c, w in zip(cells, widths, strict=True)) + " |"
