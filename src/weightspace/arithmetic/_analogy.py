"""Task analogies in weight space: "A is to B as C is to D"."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch

from weightspace._errors import WeightspaceValueError
from weightspace._task_vector import TaskVector
from weightspace.arithmetic._experiments import (
    DEFAULT_GRID,
    StateDict,
    Task,
    _check_base,
    _check_grid,
    _check_vector,
    _score,
)

__all__ = ["AnalogyResult", "analogy"]


@dataclass(frozen=True)
class AnalogyResult:
    r"""Outcome of :func:`analogy`.

    Attributes:
        scores: Test scores of ``"pretrained"``, ``"c_only"`` (the vector of C alone, its scale
            chosen on validation), ``"analogy"`` (:math:`\tau_C + \tau_B - \tau_A`) and
            ``"reference"`` (a vector trained on the task itself, at scale 1, if given).
        scales: The chosen scale of ``"c_only"`` and ``"analogy"``.
        task: The task's name.
        curve: ``(scale, validation score)`` of the analogy vector's trials.

    Example:
        >>> from weightspace.arithmetic import AnalogyResult
        >>> r = AnalogyResult({"pretrained": 0.1, "analogy": 0.6}, {"analogy": 0.5}, "d")
        >>> r.to_dict()["scores"]["analogy"]
        0.6
    """

    scores: Mapping[str, float]
    scales: Mapping[str, float]
    task: str
    curve: tuple[tuple[float, float], ...] = ()

    def to_dict(self) -> dict[str, Any]:
        """Plain-data form (for JSON)."""
        return {
            "task": self.task,
            "scores": dict(self.scores),
            "scales": dict(self.scales),
            "curve": [list(p) for p in self.curve],
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> AnalogyResult:
        """Rebuild a result from :meth:`to_dict`'s form (for instance, read back from JSON).

        Example:
            >>> from weightspace.arithmetic import AnalogyResult
            >>> r = AnalogyResult({"analogy": 0.6}, {"analogy": 0.5}, "d", ((0.5, 0.55),))
            >>> AnalogyResult.from_dict(r.to_dict()) == r
            True
        """
        return cls(
            scores=dict(data["scores"]),
            scales=dict(data["scales"]),
            task=str(data["task"]),
            curve=tuple((float(c), float(v)) for c, v in data.get("curve", ())),
        )


def analogy(
    base: StateDict | torch.nn.Module,
    *,
    a: TaskVector,
    b: TaskVector,
    c: TaskVector,
    task: Task,
    reference: TaskVector | None = None,
    grid: Sequence[float] = DEFAULT_GRID,
) -> AnalogyResult:
    r"""Solve "A is to B as C is to D" in weight space: :math:`\tau_C + \tau_B - \tau_A`.

    The analogy vector, and the vector of C alone as a baseline, are each scaled by the
    ``grid`` value with the best validation score on ``task`` (the task D, never trained on);
    test scores are reported beside the pretrained model and, if given, a ``reference`` vector
    fine-tuned on D itself (the upper bound). Ilharco et al., ICLR 2023, Section 5.

    Args:
        base: The pretrained state dict (or model); it must hold the vectors' keys.
        a: Vector of task A.
        b: Vector of task B.
        c: Vector of task C.
        task: Task D, scored by the analogy.
        reference: Optional vector fine-tuned on task D.
        grid: Scales to try (the analogy's vector is a sum of three, so scales near 0.3-0.5
            are typical).

    Returns:
        Test scores, chosen scales and the analogy's validation curve.

    Raises:
        WeightspaceValueError: on a bad argument or a score that is not a number.

    Example:
        >>> import torch
        >>> from weightspace import TaskVector, arithmetic
        >>> tv = lambda *x: TaskVector({"w": torch.tensor(x)})
        >>> target = torch.tensor([0.0, 1.0, 1.0])
        >>> score = lambda sd: 1 - float((sd["w"] - target).abs().sum())
        >>> r = arithmetic.analogy({"w": torch.zeros(3)}, a=tv(1.0, 0.0, 0.0),
        ...                        b=tv(0.0, 1.0, 0.0), c=tv(1.0, 0.0, 1.0),
        ...                        task=arithmetic.Task("d", score, score), grid=(0.5, 1.0))
        >>> r.scales["analogy"], r.scores["analogy"], r.scores["c_only"]
        (1.0, 1.0, -1.0)
    """
    sd = _check_base(base)
    va, vb, vc = (_check_vector(v, n) for v, n in ((a, "a"), (b, "b"), (c, "c")))
    if reference is not None:
        _check_vector(reference, "reference")
    if not isinstance(task, Task):
        raise WeightspaceValueError(f"`task` must be an arithmetic.Task, got {type(task).__name__}")
    values = _check_grid(grid)
    target = (vc + (vb - va)).materialize()

    def choose(v: TaskVector) -> tuple[float, list[tuple[float, float]]]:
        curve = []
        best_scale, best = values[0], -math.inf
        for s in values:
            score = _score(task.validate, v.apply_to(sd, scale=s), task.name, "validation")
            curve.append((s, score))
            if score > best:
                best_scale, best = s, score
        return best_scale, curve

    c_scale, _ = choose(vc)
    t_scale, curve = choose(target)
    scores = {
        "pretrained": _score(task.test, sd, task.name, "test"),
        "c_only": _score(task.test, vc.apply_to(sd, scale=c_scale), task.name, "test"),
        "analogy": _score(task.test, target.apply_to(sd, scale=t_scale), task.name, "test"),
    }
    if reference is not None:
        scores["reference"] = _score(task.test, reference.apply_to(sd), task.name, "test")
    return AnalogyResult(
        scores=scores,
        scales={"c_only": c_scale, "analogy": t_scale},
        task=task.name,
        curve=tuple(curve),
    )
