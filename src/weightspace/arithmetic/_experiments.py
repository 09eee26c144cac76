"""Negation and addition experiments with validation-chosen scales; the :class:`Task` they score."""

from __future__ import annotations

import copy
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import partial
from typing import Any, Literal

import torch
from torch import Tensor

from weightspace import train
from weightspace._errors import WeightspaceValueError
from weightspace._task_vector import TaskVector

__all__ = [
    "DEFAULT_GRID",
    "AdditionResult",
    "ForgetResult",
    "Method",
    "MethodRow",
    "Scores",
    "Task",
    "add",
    "default_methods",
    "forget",
]

#: Scaling coefficients tried on validation data: 0, 0.05, ..., 1 (Ilharco et al.'s grid).
DEFAULT_GRID: tuple[float, ...] = tuple(round(0.05 * i, 2) for i in range(21))

#: The grid of TIES, whose merged vector is a mean (not a sum) of the task vectors.
TIES_GRID: tuple[float, ...] = tuple(round(0.25 * i, 2) for i in range(1, 13))

StateDict = Mapping[str, Tensor]
Normalize = Literal["ratio", "gap"]
Score = Callable[[StateDict], float]


@dataclass(frozen=True)
class Task:
    """A task: a name and two score functions of a full state dict (higher is better).

    Args:
        name: The task's name, used in results and tables.
        validate: Score on validation data; used to choose scaling coefficients.
        test: Score on held-out test data; reported.

    Example:
        >>> import torch
        >>> from weightspace.arithmetic import Task
        >>> task = Task("norm", validate=lambda sd: -float(sd["w"].norm()),
        ...             test=lambda sd: -float(sd["w"].norm()))
        >>> task.test({"w": torch.tensor([3.0, 4.0])})
        -5.0
    """

    name: str = field(metadata={"help": "task name"})
    validate: Score = field(metadata={"help": "validation score of a state dict"})
    test: Score = field(metadata={"help": "test score of a state dict"})

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name:
            raise WeightspaceValueError(f"`name` must be a non-empty string, got {self.name!r}")
        for what in ("validate", "test"):
            if not callable(getattr(self, what)):
                raise WeightspaceValueError(
                    f"`{what}` of task {self.name!r} must be a callable state_dict -> float, "
                    f"got {type(getattr(self, what)).__name__}"
                )

    @classmethod
    def from_classifier(
        cls,
        name: str,
        model: torch.nn.Module,
        *,
        validation: train.Data,
        test: train.Data,
        batch_size: int = 1024,
    ) -> Task:
        """A task scored by the top-1 accuracy of ``model`` loaded with each state dict.

        Each score loads the state dict into one private copy of ``model`` and measures
        :func:`weightspace.train.accuracy` on the data; ``model`` itself is never changed.

        Args:
            name: The task's name.
            model: A classifier of the architecture of the state dicts to score.
            validation: Labelled validation data, in the contract of
                :func:`weightspace.train.batches`.
            test: Labelled test data.
            batch_size: Examples per forward pass.

        Returns:
            The task.

        Raises:
            WeightspaceValueError: if ``model`` is not a module.

        Example:
            >>> import torch
            >>> from weightspace.arithmetic import Task
            >>> net = torch.nn.Linear(2, 2, bias=False)
            >>> x, y = torch.eye(2), torch.tensor([0, 0])
            >>> task = Task.from_classifier("t", net, validation=(x, y), test=(x, y))
            >>> task.test({"weight": torch.eye(2)}), task.test({"weight": 1 - torch.eye(2)})
            (0.5, 0.5)
            >>> task.validate({"weight": torch.tensor([[1.0, 1.0], [0.0, 0.0]])})
            1.0
        """
        if not isinstance(model, torch.nn.Module):
            raise WeightspaceValueError(f"`model` must be an nn.Module, got {type(model).__name__}")
        at = _AccuracyAt(model, batch_size)
        return cls(name, validate=partial(at, validation), test=partial(at, test))


class _AccuracyAt:
    """``train.accuracy`` of a private copy of a model loaded with a given state dict."""

    def __init__(self, model: torch.nn.Module, batch_size: int) -> None:
        self.model = model
        self.batch_size = batch_size
        self._copy: torch.nn.Module | None = None

    def __call__(self, data: train.Data, state: StateDict) -> float:
        if self._copy is None:
            self._copy = copy.deepcopy(self.model)
        self._copy.load_state_dict(state)
        return train.accuracy(self._copy, data, batch_size=self.batch_size)


def _score(fn: Score, state: StateDict, task: str, split: str) -> float:
    raw = fn(state)
    try:
        value = float(raw)
    except (TypeError, ValueError):
        raise WeightspaceValueError(
            f"the {split} score of task {task!r} must be a number, got {raw!r}"
        ) from None
    if math.isnan(value):
        raise WeightspaceValueError(f"the {split} score of task {task!r} is NaN")
    return value


def _check_grid(grid: object, name: str = "grid") -> tuple[float, ...]:
    if isinstance(grid, (str, bytes)) or not isinstance(grid, Sequence) or len(grid) == 0:
        raise WeightspaceValueError(
            f"`{name}` must be a non-empty sequence of scales, got {grid!r}; for example "
            "arithmetic.DEFAULT_GRID"
        )
    out = []
    for i, c in enumerate(grid):
        ok = isinstance(c, (int, float)) and not isinstance(c, bool) and math.isfinite(c)
        if not ok or c < 0:
            raise WeightspaceValueError(
                f"`{name}[{i}]` must be a finite number >= 0, got {c!r} (negation is chosen "
                "by the function, the grid holds magnitudes)"
            )
        out.append(float(c))
    return tuple(out)


def _check_vector(vector: object, name: str) -> TaskVector:
    if not isinstance(vector, TaskVector):
        raise WeightspaceValueError(
            f"`{name}` must be a TaskVector, got {type(vector).__name__}; build one with "
            "TaskVector.from_models(base=..., finetuned=...)"
        )
    return vector


def _check_base(base: object) -> StateDict:
    if isinstance(base, torch.nn.Module):
        return base.state_dict()
    if not isinstance(base, Mapping):
        raise WeightspaceValueError(
            f"`base` must be a state dict (name -> tensor) or an nn.Module, got "
            f"{type(base).__name__}"
        )
    return base


@dataclass(frozen=True)
class Scores:
    """Test scores of one task under the pretrained, the fine-tuned and the edited model.

    Attributes:
        pretrained: Score of the pretrained model.
        finetuned: Score of the model fine-tuned on the task (the base plus its full vector);
            ``nan`` where there is none.
        edited: Score of the edited model.

    Example:
        >>> from weightspace.arithmetic import Scores
        >>> Scores(pretrained=0.5, finetuned=0.9, edited=0.2).drop
        0.3
    """

    pretrained: float
    finetuned: float
    edited: float

    @property
    def drop(self) -> float:
        """``pretrained - edited`` (positive when the edit lowered the score)."""
        return round(self.pretrained - self.edited, 12)


@dataclass(frozen=True)
class ForgetResult:
    r"""Outcome of :func:`forget`.

    Attributes:
        target: Test scores of the task to forget.
        control: Test scores of each control task, by name.
        scale: The chosen :math:`\lambda` (the model is :math:`\theta_0 - \lambda\tau`).
        random: Test scores under a random vector of the same per-tensor norms, with its own
            scale chosen by the same rule (``None`` if not asked for): target, then controls.
        random_scale: The scale chosen for the random vector.
        curve: Validation curve ``(scale, target score, {control: score})`` for every trial.

    Example:
        >>> from weightspace.arithmetic import ForgetResult, Scores
        >>> r = ForgetResult(Scores(0.1, 0.9, 0.1), {}, 0.0)
        >>> r.to_dict()["scale"]
        0.0
    """

    target: Scores
    control: Mapping[str, Scores]
    scale: float
    random: Mapping[str, Scores] | None = None
    random_scale: float | None = None
    curve: tuple[tuple[float, float, Mapping[str, float]], ...] = ()
    task: str = "target"

    def to_dict(self) -> dict[str, Any]:
        """Plain-data form (for JSON)."""
        return {
            "task": self.task,
            "scale": self.scale,
            "target": vars(self.target).copy(),
            "control": {k: vars(v).copy() for k, v in self.control.items()},
            "random_scale": self.random_scale,
            "random": None
            if self.random is None
            else {k: vars(v).copy() for k, v in self.random.items()},
            "curve": [[s, t, dict(c)] for s, t, c in self.curve],
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ForgetResult:
        """Rebuild a result from :meth:`to_dict`'s form (for instance, read back from JSON).

        Example:
            >>> from weightspace.arithmetic import ForgetResult, Scores
            >>> r = ForgetResult(Scores(0.9, 0.95, 0.2), {"c": Scores(0.8, 0.7, 0.79)}, 0.5)
            >>> ForgetResult.from_dict(r.to_dict()) == r
            True
        """
        random = data.get("random")
        return cls(
            target=Scores(**data["target"]),
            control={k: Scores(**v) for k, v in data["control"].items()},
            scale=float(data["scale"]),
            random=None if random is None else {k: Scores(**v) for k, v in random.items()},
            random_scale=data.get("random_scale"),
            curve=tuple((float(s), float(t), dict(c)) for s, t, c in data.get("curve", ())),
            task=str(data.get("task", "target")),
        )


def _random_like(vector: TaskVector, seed: int) -> TaskVector:
    """Gaussian directions with each tensor's norm equal to the vector's (a null edit)."""
    out: dict[str, Tensor] = {}
    for i, name in enumerate(vector):
        t = vector[name].float()
        g = torch.Generator().manual_seed(seed * 100_003 + i)
        r = torch.randn(t.shape, generator=g)
        norm = float(r.norm())
        out[name] = r * (float(t.norm()) / norm if norm > 0 else 0.0)
    return TaskVector(out)


def _select_forget(
    base: StateDict,
    vector: TaskVector,
    target: Task,
    controls: Sequence[Task],
    grid: tuple[float, ...],
    keep: float,
    pre_val: Mapping[str, float],
) -> tuple[float, list[tuple[float, float, dict[str, float]]]]:
    curve: list[tuple[float, float, dict[str, float]]] = []
    best_scale, best = 0.0, pre_val[target.name]
    for c in grid:
        state = vector.apply_to(base, scale=-c)
        t = _score(target.validate, state, target.name, "validation")
        cs = {k.name: _score(k.validate, state, k.name, "validation") for k in controls}
        curve.append((c, t, cs))
        feasible = all(cs[k.name] >= keep * pre_val[k.name] for k in controls)
        if feasible and t < best:
            best_scale, best = c, t
    return best_scale, curve


def forget(
    base: StateDict | torch.nn.Module,
    vector: TaskVector,
    *,
    target: Task,
    control: Task | Sequence[Task],
    grid: Sequence[float] = DEFAULT_GRID,
    keep: float = 0.95,
    random_baseline: bool = True,
    seed: int = 0,
) -> ForgetResult:
    r"""Forget a task by negating its vector: :math:`\theta_0 - \lambda\tau`.

    The scale is chosen on validation data with Ilharco et al.'s rule: among the ``grid``
    values whose model keeps every control task's validation score at least ``keep`` times its
    pretrained validation score, the one with the lowest validation score on the target
    (:math:`\lambda = 0`, the pretrained model itself, when none qualifies; ties go to the
    smaller scale). Test scores are then reported for the pretrained, fine-tuned and edited
    models. With ``random_baseline``, the same is done for a random vector with the same norm
    in every tensor, the paper's check that forgetting comes from the task's direction and
    not from moving far enough in any direction.

    Args:
        base: The pretrained model's state dict (or the model); it must hold the vector's keys,
            other keys are kept as they are.
        vector: The target task's vector.
        target: The task to forget.
        control: One or more tasks that must be preserved.
        grid: Magnitudes :math:`\lambda \ge 0` to try.
        keep: The fraction of each control's pretrained validation score that must be kept.
        random_baseline: Also evaluate a random vector of matching norms.
        seed: Seed of the random vector.

    Returns:
        The chosen scale, test scores, the random baseline and the validation curve.

    Raises:
        WeightspaceValueError: on a bad argument or a score that is not a number.
        ShapeMismatchError: if ``base`` lacks a key of the vector or holds another shape.

    Example:
        >>> import torch
        >>> from weightspace import TaskVector, arithmetic
        >>> base = {"w": torch.tensor([1.0, 1.0])}
        >>> first = lambda sd: float(sd["w"][0])
        >>> second = lambda sd: float(sd["w"][1])
        >>> target = arithmetic.Task("first", validate=first, test=first)
        >>> control = arithmetic.Task("second", validate=second, test=second)
        >>> tau = TaskVector({"w": torch.tensor([1.0, 0.5])})
        >>> r = arithmetic.forget(base, tau, target=target, control=control,
        ...                       grid=(0.0, 0.5, 1.0), keep=0.7, random_baseline=False)
        >>> r.scale, r.target.edited, r.control["second"].edited
        (0.5, 0.5, 0.75)
    """
    sd = _check_base(base)
    vector = _check_vector(vector, "vector")
    controls = [control] if isinstance(control, Task) else list(control)
    for i, k in enumerate([target, *controls]):
        if not isinstance(k, Task):
            raise WeightspaceValueError(
                f"`target` and `control` must be arithmetic.Task objects, got "
                f"{type(k).__name__} at position {i}"
            )
    if not controls:
        raise WeightspaceValueError("`control` must hold at least one Task")
    names = [target.name, *(k.name for k in controls)]
    if len(set(names)) != len(names):
        raise WeightspaceValueError(f"task names must be distinct, got {names}")
    values = _check_grid(grid)
    ok = isinstance(keep, (int, float)) and not isinstance(keep, bool) and 0 <= keep <= 1
    if not ok:
        raise WeightspaceValueError(f"`keep` must be a number in [0, 1], got {keep!r}")

    tasks = [target, *controls]
    pre_val = {k.name: _score(k.validate, sd, k.name, "validation") for k in tasks}
    pre_test = {k.name: _score(k.test, sd, k.name, "test") for k in tasks}
    ft_state = vector.apply_to(sd, scale=1.0)
    ft_test = {k.name: _score(k.test, ft_state, k.name, "test") for k in tasks}
    del ft_state

    def scores_at(v: TaskVector, scale: float) -> dict[str, Scores]:
        state = v.apply_to(sd, scale=-scale)
        return {
            k.name: Scores(pre_test[k.name], ft_test[k.name], _score(k.test, state, k.name, "test"))
            for k in tasks
        }

    scale, curve = _select_forget(sd, vector, target, controls, values, keep, pre_val)
    edited = scores_at(vector, scale)
    random_scores, random_scale = None, None
    if random_baseline:
        noise = _random_like(vector, seed).materialize()
        random_scale, _ = _select_forget(sd, noise, target, controls, values, keep, pre_val)
        random_scores = scores_at(noise, random_scale)
    return ForgetResult(
        target=edited[target.name],
        control={k.name: edited[k.name] for k in controls},
        scale=scale,
        random=random_scores,
        random_scale=random_scale,
        curve=tuple((c, t, cs) for c, t, cs in curve),
        task=target.name,
    )


Merged = TaskVector | Sequence[TaskVector]


@dataclass(frozen=True)
class Method:
    """A merge method for :func:`add`: a function of the task vectors and its scale grid.

    Args:
        fn: ``fn(vectors) -> TaskVector`` (one model for every task), or a sequence of
            vectors, one per task in the order of ``vectors`` (task-specific reconstructions
            such as TALL masks).
        grid: The scales tried on validation; ``None`` uses the ``grid`` given to :func:`add`;
            ``(1.0,)`` fixes the scale.

    Example:
        >>> from weightspace import merge
        >>> from weightspace.arithmetic import Method
        >>> Method(merge.mean, grid=(1.0,)).grid
        (1.0,)
    """

    fn: Callable[[Sequence[TaskVector]], Merged]
    grid: tuple[float, ...] | None = None

    def __post_init__(self) -> None:
        if not callable(self.fn):
            raise WeightspaceValueError(
                f"`fn` must be a callable vectors -> TaskVector, got {type(self.fn).__name__}"
            )
        if self.grid is not None:
            object.__setattr__(self, "grid", _check_grid(self.grid))


def _tall_masks(vectors: Sequence[TaskVector], lambdas: float = 0.4) -> list[TaskVector]:
    from weightspace import merge

    merged = merge.task_arithmetic(vectors).materialize()
    return [merged.masked(m) for m in merge.tall_masks(vectors, lambdas=lambdas, merged=merged)]


def default_methods() -> dict[str, Method]:
    """The baselines of the task-arithmetic literature, as :class:`Method` objects.

    * ``"average"``: the mean of the vectors at scale 1 (weight averaging, model soups);
    * ``"task_arithmetic"``: their sum, scale on validation (Ilharco et al., ICLR 2023);
    * ``"ties"``: TIES-merging with density 0.2, scale on a grid up to 3, as the merged
      vector is a mean (Yadav et al., NeurIPS 2023, arXiv 2306.01708);
    * ``"tall_masks"``: per task, the TALL mask (lambda 0.4) of the sum, applied to the sum
      (Wang et al., ICML 2024, arXiv 2405.07813): one model per task, one stored vector;
    * ``"consensus"``: the sum where at least two TALL masks agree (same paper).

    Returns:
        A new dict ``name -> Method`` (edit it freely).

    Example:
        >>> from weightspace import arithmetic
        >>> sorted(arithmetic.default_methods())
        ['average', 'consensus', 'tall_masks', 'task_arithmetic', 'ties']
    """
    from weightspace import merge

    return {
        "average": Method(merge.mean, grid=(1.0,)),
        "task_arithmetic": Method(merge.task_arithmetic),
        "ties": Method(partial(merge.ties, density=0.2), grid=TIES_GRID),
        "tall_masks": Method(_tall_masks),
        "consensus": Method(partial(merge.consensus, k=2)),
    }


@dataclass(frozen=True)
class MethodRow:
    """One row of :class:`AdditionResult`: a method's test scores on every task.

    Attributes:
        scale: The chosen scale (``None`` for the pretrained and fine-tuned rows).
        scores: Test score per task.
        normalized: Test score divided by the fine-tuned model's test score, per task.
        validation: Mean normalised validation score at the chosen scale (``nan`` if unused).
        curve: ``(scale, mean normalised validation score)`` of every trial.

    Example:
        >>> from weightspace.arithmetic import MethodRow
        >>> row = MethodRow(0.3, {"a": 0.8, "b": 0.6}, {"a": 0.9, "b": 0.7})
        >>> round(row.mean, 3), round(row.normalized_mean, 3)
        (0.7, 0.8)
    """

    scale: float | None
    scores: Mapping[str, float]
    normalized: Mapping[str, float]
    validation: float = math.nan
    curve: tuple[tuple[float, float], ...] = ()

    @property
    def mean(self) -> float:
        """Mean test score over the tasks (absolute)."""
        return sum(self.scores.values()) / len(self.scores)

    @property
    def normalized_mean(self) -> float:
        """Mean normalised test score over the tasks."""
        return sum(self.normalized.values()) / len(self.normalized)

    def to_dict(self) -> dict[str, Any]:
        """Plain-data form (for JSON)."""
        return {
            "scale": self.scale,
            "scores": dict(self.scores),
            "normalized": dict(self.normalized),
            "mean": self.mean,
            "normalized_mean": self.normalized_mean,
            "validation": self.validation,
            "curve": [list(p) for p in self.curve],
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> MethodRow:
        """Rebuild a row from :meth:`to_dict`'s form (derived fields are recomputed).

        Example:
            >>> from weightspace.arithmetic import MethodRow
            >>> row = MethodRow(0.3, {"a": 0.8}, {"a": 0.9}, 0.85, ((0.3, 0.85),))
            >>> MethodRow.from_dict(row.to_dict()) == row
            True
        """
        scale = data.get("scale")
        return cls(
            scale=None if scale is None else float(scale),
            scores=dict(data["scores"]),
            normalized=dict(data["normalized"]),
            validation=float(data.get("validation", math.nan)),
            curve=tuple((float(c), float(v)) for c, v in data.get("curve", ())),
        )


@dataclass(frozen=True)
class AdditionResult:
    """Outcome of :func:`add`: one :class:`MethodRow` per method, plus the references.

    Attributes:
        rows: ``"pretrained"``, ``"finetuned"`` (each task under its own vector), then every
            method, in order.
        tasks: The task names, in order.
        normalize: How the rows' ``normalized`` scores were computed: ``"ratio"`` or
            ``"gap"`` (see :func:`add`).

    Example:
        >>> from weightspace.arithmetic import AdditionResult, MethodRow
        >>> r = AdditionResult({"pretrained": MethodRow(None, {"a": 0.5}, {"a": 0.5})}, ("a",))
        >>> r.to_dict()["tasks"]
        ['a']
    """

    rows: Mapping[str, MethodRow]
    tasks: tuple[str, ...]
    normalize: Normalize = "ratio"

    def to_dict(self) -> dict[str, Any]:
        """Plain-data form (for JSON)."""
        return {
            "tasks": list(self.tasks),
            "normalize": self.normalize,
            "rows": {k: v.to_dict() for k, v in self.rows.items()},
        }

    def best_by_family(self) -> dict[str, str]:
        """Per method family, the configuration with the best validation score.

        A method named ``"family@value"`` (e.g. ``"ties@0.2"``, one entry per value of a
        second hyperparameter) belongs to ``family``; a name without ``@`` is its own family.
        The reference rows ``"pretrained"`` and ``"finetuned"`` are left out. On equal
        validation scores the first configuration in :attr:`rows` wins.

        Returns:
            ``{family: row name}``, in the order families first appear.

        Example:
            >>> from weightspace.arithmetic import AdditionResult, MethodRow
            >>> rows = {
            ...     "ties@0.2": MethodRow(1.0, {"a": 0.7}, {"a": 0.7}, validation=0.6),
            ...     "ties@0.5": MethodRow(1.0, {"a": 0.8}, {"a": 0.8}, validation=0.9),
            ...     "average": MethodRow(1.0, {"a": 0.5}, {"a": 0.5}, validation=0.5),
            ... }
            >>> AdditionResult(rows, ("a",)).best_by_family()
            {'ties': 'ties@0.5', 'average': 'average'}
        """
        best: dict[str, str] = {}
        for name, row in self.rows.items():
            if name in ("pretrained", "finetuned"):
                continue
            family = name.partition("@")[0]
            if family not in best or row.validation > self.rows[best[family]].validation:
                best[family] = name
        return best

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> AdditionResult:
        """Rebuild a result from :meth:`to_dict`'s form (for instance, read back from JSON).

        Example:
            >>> from weightspace.arithmetic import AdditionResult, MethodRow
            >>> r = AdditionResult({"pretrained": MethodRow(None, {"a": 0.5}, {"a": 0.6})}, ("a",))
            >>> AdditionResult.from_dict(r.to_dict()) == r
            True
        """
        return cls(
            rows={k: MethodRow.from_dict(v) for k, v in data["rows"].items()},
            tasks=tuple(data["tasks"]),
            normalize=data.get("normalize", "ratio"),
        )


def _per_task(merged: Merged, n: int, method: str) -> list[TaskVector]:
    if isinstance(merged, TaskVector):
        return [merged.materialize()] * n
    if (
        isinstance(merged, Sequence)
        and len(merged) == n
        and all(isinstance(v, TaskVector) for v in merged)
    ):
        return [v.materialize() for v in merged]
    raise WeightspaceValueError(
        f"method {method!r} must return a TaskVector or a sequence of {n} TaskVectors (one "
        f"per task), got {type(merged).__name__}"
    )


def add(
    base: StateDict | torch.nn.Module,
    vectors: Mapping[str, TaskVector],
    tasks: Mapping[str, Task],
    *,
    methods: Mapping[str, Method] | None = None,
    grid: Sequence[float] = DEFAULT_GRID,
    finetuned: Mapping[str, TaskVector] | None = None,
    normalize: Normalize = "ratio",
) -> AdditionResult:
    r"""Learn several tasks at once by merging their vectors, against the usual baselines.

    For each method, the merged vector is computed once; each scale of its grid is applied to
    the base and scored on every task's validation data, normalised by the fine-tuned model's
    validation score on that task; the scale with the best mean normalised validation score is
    kept (Ilharco et al.'s rule; ties go to the first). Test scores are then reported, absolute
    and normalised (merged / fine-tuned). Two reference rows come first: the pretrained model
    and, per task, the model fine-tuned on it (its own vector at scale 1).

    Args:
        base: The pretrained state dict (or model); it must hold the vectors' keys.
        vectors: ``task name -> vector``; every vector has the same keys.
        tasks: ``task name -> Task``, the same names as ``vectors``.
        methods: ``name -> Method``; ``None`` uses :func:`default_methods`.
        grid: Default scales for the methods without their own grid.
        finetuned: ``task name -> vector`` of the models that normalise the scores (the
            ``"finetuned"`` row), when they are not ``vectors`` themselves: for instance, with
            vectors transferred from another architecture, this architecture's own
            fine-tuned vectors.
        normalize: ``"ratio"`` (default): merged / fine-tuned, the paper's normalised
            accuracy; ``"gap"``: (merged - pretrained) / (fine-tuned - pretrained), the
            fraction of the fine-tuning gain kept (1: as fine-tuned, 0: as pretrained), which
            stays meaningful for scores near or below zero (R², log-likelihoods). Used both to
            choose the scales and in the rows; undefined (NaN) where the reference equals 0
            (ratio) or the pretrained score (gap).

    Returns:
        One row per method (and the two reference rows).

    Raises:
        WeightspaceValueError: if the names of ``vectors`` and ``tasks`` differ, fewer than two
            vectors are given, a method returns something else than vectors, or a score is not
            a number.

    Example:
        >>> import torch
        >>> from weightspace import TaskVector, arithmetic, merge
        >>> base = {"w": torch.zeros(2)}
        >>> coordinate = lambda i: (lambda sd: float(sd["w"][i] - (sd["w"][1 - i]).abs()))
        >>> tasks = {n: arithmetic.Task(n, coordinate(i), coordinate(i))
        ...          for i, n in enumerate("ab")}
        >>> vectors = {"a": TaskVector({"w": torch.tensor([1.0, 0.0])}),
        ...            "b": TaskVector({"w": torch.tensor([0.0, 1.0])})}
        >>> r = arithmetic.add(base, vectors, tasks,
        ...                    methods={"sum": arithmetic.Method(merge.task_arithmetic)})
        >>> r.rows["sum"].scale, r.rows["sum"].normalized_mean
        (0.0, 0.0)
    """
    sd = _check_base(base)
    if not isinstance(vectors, Mapping) or not isinstance(tasks, Mapping):
        raise WeightspaceValueError(
            "`vectors` and `tasks` must be mappings from task names, got "
            f"{type(vectors).__name__} and {type(tasks).__name__}"
        )
    if set(vectors) != set(tasks):
        raise WeightspaceValueError(
            f"`vectors` and `tasks` must have the same names, got {sorted(vectors)} and "
            f"{sorted(tasks)}"
        )
    if len(vectors) < 2:
        raise WeightspaceValueError(f"`vectors` must hold at least two tasks, got {len(vectors)}")
    names = tuple(vectors)
    items = [_check_vector(vectors[n], f"vectors[{n!r}]") for n in names]
    for n in names:
        if not isinstance(tasks[n], Task):
            raise WeightspaceValueError(
                f"`tasks[{n!r}]` must be an arithmetic.Task, got {type(tasks[n]).__name__}"
            )
    default = _check_grid(grid)
    chosen = default_methods() if methods is None else dict(methods)
    for m, method in chosen.items():
        if not isinstance(method, Method):
            raise WeightspaceValueError(
                f"`methods[{m!r}]` must be an arithmetic.Method, got {type(method).__name__}"
            )

    def evaluate(states: Sequence[StateDict], split: str) -> dict[str, float]:
        fn = "validate" if split == "validation" else "test"
        return {n: _score(getattr(tasks[n], fn), states[i], n, split) for i, n in enumerate(names)}

    references = items
    if finetuned is not None:
        if not isinstance(finetuned, Mapping) or set(finetuned) != set(names):
            raise WeightspaceValueError(
                f"`finetuned` must map the task names {sorted(names)} to vectors, got "
                f"{sorted(finetuned) if isinstance(finetuned, Mapping) else finetuned!r}"
            )
        references = [_check_vector(finetuned[n], f"finetuned[{n!r}]") for n in names]
    if normalize not in ("ratio", "gap"):
        raise WeightspaceValueError(f'`normalize` must be "ratio" or "gap", got {normalize!r}')
    pre_test = evaluate([sd] * len(names), "test")
    pre_val = evaluate([sd] * len(names), "validation") if normalize == "gap" else {}
    ft_states = [v.apply_to(sd, scale=1.0) for v in references]
    ft_val = evaluate(ft_states, "validation")
    ft_test = evaluate(ft_states, "test")
    del ft_states

    def normalise(
        scores: Mapping[str, float], ref: Mapping[str, float], pre: Mapping[str, float]
    ) -> dict[str, float]:
        if normalize == "ratio":
            return {n: scores[n] / ref[n] if ref[n] != 0 else math.nan for n in names}
        return {
            n: (scores[n] - pre[n]) / (ref[n] - pre[n]) if ref[n] != pre[n] else math.nan
            for n in names
        }

    rows: dict[str, MethodRow] = {
        "pretrained": MethodRow(None, pre_test, normalise(pre_test, ft_test, pre_test)),
        "finetuned": MethodRow(None, ft_test, normalise(ft_test, ft_test, pre_test)),
    }
    for m, method in chosen.items():
        merged = _per_task(method.fn(items), len(items), m)
        curve: list[tuple[float, float]] = []
        best_scale, best = 0.0, -math.inf
        for c in method.grid or default:
            states = _apply_all(merged, sd, c)
            val = normalise(evaluate(states, "validation"), ft_val, pre_val)
            mean = sum(val.values()) / len(val)
            curve.append((c, mean))
            if mean > best:
                best_scale, best = c, mean
        test = evaluate(_apply_all(merged, sd, best_scale), "test")
        rows[m] = MethodRow(
            best_scale, test, normalise(test, ft_test, pre_test), best, tuple(curve)
        )
    return AdditionResult(rows=rows, tasks=names, normalize=normalize)


def _apply_all(merged: list[TaskVector], sd: StateDict, scale: float) -> list[StateDict]:
    cache: dict[int, StateDict] = {}
    out = []
    for v in merged:
        if id(v) not in cache:
            cache[id(v)] = v.apply_to(sd, scale=scale)
        out.append(cache[id(v)])
    return out
