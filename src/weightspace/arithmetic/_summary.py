"""Mean ± standard deviation over seeds, and Markdown tables of experiment results."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from weightspace import report
from weightspace._errors import WeightspaceValueError
from weightspace.arithmetic._analogy import AnalogyResult
from weightspace.arithmetic._experiments import AdditionResult, ForgetResult

__all__ = ["Summary", "summarize", "table"]

Summary = report.Summary


def summarize(values: Sequence[float]) -> Summary:
    """Mean and sample standard deviation of per-seed values.

    Args:
        values: One number per run; NaNs are not allowed (a failed run must be reported, not
            averaged away).

    Returns:
        A :class:`Summary`.

    Raises:
        WeightspaceValueError: if ``values`` is empty or holds a NaN or a non-number.

    Example:
        >>> from weightspace.arithmetic import summarize
        >>> str(summarize([0.91, 0.93, 0.92]))
        '0.920 ± 0.010'
    """
    return report.summarize(values)


def _get(obj: Any, path: Sequence[str]) -> Any:
    for key in path:
        obj = obj[key] if isinstance(obj, Mapping) else getattr(obj, key)
    return obj


def _cell(results: Sequence[Any], path: Sequence[str], spec: str) -> str:
    # "n/a" where a run is undefined, e.g. a score normalised by a fine-tuned score of 0
    summary = report.summarize([_get(r, path) for r in results], missing="propagate")
    return format(summary, spec)


def _markdown(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    return report.markdown_table(header, rows)


def _forget_table(results: Sequence[ForgetResult], spec: str) -> str:
    task, controls = results[0].task, list(results[0].control)
    header = ["model", "scale", f"target: {task}", *(f"control: {c}" for c in controls)]
    rows = []
    for label, pick in (("pretrained", "pretrained"), ("fine-tuned", "finetuned")):
        rows.append(
            [
                label,
                "",
                _cell(results, ("target", pick), spec),
                *(_cell(results, ("control", c, pick), spec) for c in controls),
            ]
        )
    rows.append(
        [
            "negated task vector",
            _cell(results, ("scale",), ".2f"),
            _cell(results, ("target", "edited"), spec),
            *(_cell(results, ("control", c, "edited"), spec) for c in controls),
        ]
    )
    if all(r.random is not None for r in results):
        rows.append(
            [
                "negated random vector",
                _cell(results, ("random_scale",), ".2f"),
                _cell(results, ("random", task, "edited"), spec),
                *(_cell(results, ("random", c, "edited"), spec) for c in controls),
            ]
        )
    return _markdown(header, rows)


def _addition_table(results: Sequence[AdditionResult], spec: str) -> str:
    tasks = list(results[0].tasks)
    kept = "gain kept (mean)" if results[0].normalize == "gap" else "normalised mean"
    header = ["method", "scale", *tasks, "mean", kept]
    rows = []
    for name, row in results[0].rows.items():
        scale = "" if row.scale is None else _cell(results, ("rows", name, "scale"), ".2f")
        rows.append(
            [
                name,
                scale,
                *(_cell(results, ("rows", name, "scores", t), spec) for t in tasks),
                _cell(results, ("rows", name, "mean"), spec),
                _cell(results, ("rows", name, "normalized_mean"), spec),
            ]
        )
    return _markdown(header, rows)


def _analogy_table(results: Sequence[AnalogyResult], spec: str) -> str:
    header = ["model", "scale", f"task: {results[0].task}"]
    labels = {
        "pretrained": "pretrained",
        "c_only": "vector of C alone",
        "analogy": "analogy C + (B - A)",
        "reference": "fine-tuned on the task (reference)",
    }
    rows = []
    for key in results[0].scores:
        scale = _cell(results, ("scales", key), ".2f") if key in results[0].scales else ""
        rows.append([labels.get(key, key), scale, _cell(results, ("scores", key), spec)])
    return _markdown(header, rows)


def table(
    results: Sequence[ForgetResult] | Sequence[AdditionResult] | Sequence[AnalogyResult],
    *,
    spec: str = ".3f",
) -> str:
    """A Markdown table of the results of several seeds of one experiment: mean ± std.

    Args:
        results: One result per seed, all of the same kind (from :func:`forget`, :func:`add`
            or :func:`analogy`) and over the same tasks.
        spec: Format of the scores (scales use ``.2f``).

    Returns:
        The table, with a trailing newline.

    Raises:
        WeightspaceValueError: if ``results`` is empty or mixes kinds.

    Example:
        >>> from weightspace.arithmetic import AnalogyResult, table
        >>> runs = [AnalogyResult({"pretrained": p, "analogy": a}, {"analogy": 0.4}, "d")
        ...         for p, a in ((0.1, 0.6), (0.1, 0.8))]
        >>> print(table(runs), end="")
        | model | scale | task: d |
        |---|---|---|
        | pretrained |  | 0.100 ± 0.000 |
        | analogy C + (B - A) | 0.40 ± 0.00 | 0.700 ± 0.141 |
    """
    if isinstance(results, (str, bytes)) or not isinstance(results, Sequence) or not results:
        raise WeightspaceValueError(
            f"`results` must be a non-empty sequence of results, got {results!r}"
        )
    kinds = {type(r) for r in results}
    if len(kinds) != 1:
        raise WeightspaceValueError(
            f"`results` mixes kinds of results: {sorted(k.__name__ for k in kinds)}"
        )
    first = results[0]
    if isinstance(first, ForgetResult):
        return _forget_table(results, spec)  # type: ignore[arg-type]
    if isinstance(first, AdditionResult):
        return _addition_table(results, spec)  # type: ignore[arg-type]
    if isinstance(first, AnalogyResult):
        return _analogy_table(results, spec)  # type: ignore[arg-type]
    raise WeightspaceValueError(
        "`results` must hold ForgetResult, AdditionResult or AnalogyResult objects, got "
        f"{type(first).__name__}"
    )
