"""Results tables: per-seed values summarised, and Markdown tables of them.

Every experiment of the library and its examples reports a number as the mean over seeds with
its spread. :func:`summarize` turns the per-seed values into a :class:`Summary` (mean, sample
standard deviation, count, the half-width of a 95 % Student-t interval and the values
themselves), and :func:`markdown_table` lays out rows of summaries, numbers and text with one
format per column, writing ``n/a`` where a value is undefined.

Example:
    >>> from weightspace import report
    >>> rows = [["task arithmetic", report.summarize([0.91, 0.93, 0.92]), 3],
    ...         ["TIES", report.summarize([0.90, None], missing="propagate"), 2]]
    >>> print(report.markdown_table(["method", "accuracy", "seeds"], rows), end="")
    | method | accuracy | seeds |
    |---|---|---|
    | task arithmetic | 0.920 ± 0.010 | 3 |
    | TIES | n/a | 2 |
"""

from __future__ import annotations

from weightspace.report._tables import Cell as Cell
from weightspace.report._tables import Summary as Summary
from weightspace.report._tables import markdown_table as markdown_table
from weightspace.report._tables import markdown_to_rst as markdown_to_rst
from weightspace.report._tables import summarize as summarize

__all__ = ["Cell", "Summary", "markdown_table", "markdown_to_rst", "summarize"]
