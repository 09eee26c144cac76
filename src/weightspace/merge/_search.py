"""Search of the ``scale`` of a merge, driven by a user's validation callback."""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import partial
from types import MappingProxyType

import torch
import torch.distributed
from torch import nn

from weightspace._deprecation import deprecated, warn_deprecated
from weightspace._errors import WeightspaceValueError
from weightspace._task_vector import TaskVector
from weightspace._world import world_of
from weightspace.io import StateDictLike
from weightspace.merge._merge import _check_vectors, task_arithmetic
from weightspace.merge._validate import check_finite

__all__ = ["ScaleSearchResult", "search_coefficients", "search_scales"]

logger = logging.getLogger(__name__)

DEFAULT_GRID: tuple[float, ...] = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0)


@dataclass(frozen=True)
class ScaleSearchResult:
    """The outcome of :func:`search_scales`.

    Attributes:
        scale: Best uniform ``scale`` (the same for every tensor).
        score: Best score found (of the uniform phase, or of the per-layer phase if it
            improved on it).
        layer_scales: With ``per_layer=True``, the best ``scale`` per layer group (read-only
            mapping ``group -> scale``); ``None`` otherwise.
        scores: ``(scale, score)`` of every uniform trial, in grid order.
        layer_scores: ``(group, scale, score)`` of every per-layer trial, in order.

    Example:
        >>> from weightspace.merge import ScaleSearchResult
        >>> r = ScaleSearchResult(0.3, 0.9, None, ((0.1, 0.5), (0.3, 0.9)))
        >>> r.scale, r.n_evaluations
        (0.3, 2)
    """

    scale: float = field(metadata={"help": "best uniform scale"})
    score: float = field(metadata={"help": "best score over all trials"})
    layer_scales: Mapping[str, float] | None = field(
        default=None, metadata={"help": "best scale per layer group (per_layer=True)"}
    )
    scores: tuple[tuple[float, float], ...] = field(
        default=(), metadata={"help": "(scale, score) of the uniform trials"}
    )
    layer_scores: tuple[tuple[str, float, float], ...] = field(
        default=(), metadata={"help": "(group, scale, score) of the per-layer trials"}
    )

    @property
    def coefficient(self) -> float:
        """Deprecated spelling of :attr:`scale` (removed in 0.2)."""
        warn_deprecated("ScaleSearchResult.coefficient", "ScaleSearchResult.scale", since="0.1")
        return self.scale

    @property
    def layer_coefficients(self) -> Mapping[str, float] | None:
        """Deprecated spelling of :attr:`layer_scales` (removed in 0.2)."""
        warn_deprecated(
            "ScaleSearchResult.layer_coefficients", "ScaleSearchResult.layer_scales", since="0.1"
        )
        return self.layer_scales

    @property
    def n_evaluations(self) -> int:
        """Number of calls made to the ``evaluate`` callback."""
        return len(self.scores) + len(self.layer_scores)


def _default_group(name: str) -> str:
    return name.rpartition(".")[0] or name


def _is_better(score: float, best: float, maximize: bool) -> bool:
    if math.isnan(score):
        return False
    if math.isnan(best):
        return True
    return score > best if maximize else score < best


@dataclass(frozen=True)
class _GroupScale:
    scales: Mapping[str, float]
    group_of: Mapping[str, str]

    def __call__(self, name: str, tensor: torch.Tensor) -> torch.Tensor:
        return tensor * self.scales[self.group_of[name]]


def search_scales(
    vectors: Sequence[TaskVector],
    base: StateDictLike,
    evaluate: Callable[[dict[str, torch.Tensor]], float],
    *,
    grid: Sequence[float] = DEFAULT_GRID,
    per_layer: bool = False,
    method: Callable[[Sequence[TaskVector]], TaskVector] = task_arithmetic,
    maximize: bool = True,
    groups: Callable[[str], str] | None = None,
    rounds: int = 1,
    progress: bool = False,
    distributed: bool | None = None,
) -> ScaleSearchResult:
    r"""Choose the ``scale`` :math:`\lambda` of a merge by evaluating candidate models.

    The merged vector :math:`\tau = \text{method}(\text{vectors})` is computed once (and kept
    in memory: one model-sized copy). Then, for every ``c`` in ``grid``, the state dict
    :math:`\theta_0 + c\,\tau` is passed to ``evaluate`` (a validation accuracy, a negative
    loss, ...), and the best ``c`` is kept — the procedure of Ilharco et al. (ICLR 2023,
    https://arxiv.org/abs/2212.04089) and Yadav et al. (NeurIPS 2023,
    https://arxiv.org/abs/2306.01708). Cost: ``len(grid)`` calls.

    With ``per_layer=True`` a greedy coordinate search follows, starting from the best uniform
    scale: the tensors are split into groups (by default, the module prefix of the name, so
    that ``fc.weight`` and ``fc.bias`` share one scale); for each group in turn, every
    other grid value is tried for that group with the others fixed, and the group keeps the
    best (an improvement must be strict). ``rounds`` repeats the sweep. Cost:
    ``len(grid) + rounds * n_groups * (len(grid) - 1)`` calls (for distinct grid values). It is
    a cheap, gradient-free stand-in for layer-wise AdaMerging; it finds a coordinate-wise
    optimum on the grid, not a global one, and with few validation examples it can overfit.

    Ties between scores go to the trial made first; a NaN score is recorded but never best.

    Under ``torchrun`` with an initialised process group of ``W > 1`` ranks, the independent
    trials of each phase (the uniform grid; the grid values of one group) are dealt out
    round-robin, each rank scores its share and the scores are gathered, so every rank returns
    the serial result with about ``W`` times fewer calls each. Every rank must pass the same
    arguments, and ``evaluate`` must give the same score for the same state dict on any rank.

    Args:
        vectors: Task vectors with the same keys.
        base: The base model: an ``nn.Module`` (its ``state_dict()`` is used), a mapping
            ``name -> tensor`` or a checkpoint path.
        evaluate: Callback from a full state dict (``name -> tensor``, new tensors) to a
            score. It must not keep the dict between calls if memory matters.
        grid: Candidate scales (finite floats), tried in order.
        per_layer: Run the greedy per-group search after the uniform one.
        method: Merge function called as ``method(vectors)``, returning an unscaled merged
            vector; for example ``functools.partial(merge.ties, density=0.2)``.
        maximize: ``True`` if higher scores are better (accuracy), ``False`` for losses.
        groups: ``name -> group`` for the per-layer mode; default: the name without its last
            dotted component.
        rounds: Number of sweeps over the groups in the per-layer mode (at least 1).
        progress: Show a progress bar (``tqdm``).
        distributed: ``None`` (default) splits the trials across ranks exactly when a process
            group of more than one rank is initialised; ``True`` requires one; ``False``
            never splits.

    Returns:
        The best scale(s), the best score and every trial's score.

    Raises:
        WeightspaceValueError: if ``grid`` is empty or not finite, ``rounds`` < 1,
            ``evaluate`` returns something that is not a number, every score is NaN, or
            ``vectors`` is bad.

    Example:
        >>> import torch
        >>> from weightspace import TaskVector, merge
        >>> tv = TaskVector({"w": torch.ones(3)})
        >>> base = {"w": torch.zeros(3)}
        >>> result = merge.search_scales(
        ...     [tv], base, lambda sd: -float((sd["w"] - 0.3).abs().sum())
        ... )
        >>> result.scale, result.n_evaluations
        (0.3, 10)
    """
    items = _check_vectors(vectors)
    if isinstance(grid, (str, bytes)) or not isinstance(grid, Sequence) or len(grid) == 0:
        raise WeightspaceValueError(
            f"`grid` must be a non-empty sequence of scales, got {grid!r}; "
            "for example (0.1, 0.2, ..., 1.0)"
        )
    values = tuple(check_finite(f"grid[{i}]", c) for i, c in enumerate(grid))
    if not isinstance(rounds, int) or isinstance(rounds, bool) or rounds < 1:
        raise WeightspaceValueError(f"`rounds` must be an int >= 1, got {rounds!r}")
    if not callable(evaluate):
        raise WeightspaceValueError(
            f"`evaluate` must be a callable state_dict -> float, got {type(evaluate).__name__}"
        )
    base_sd: Mapping[str, torch.Tensor] | str | os.PathLike[str] = (
        base.state_dict() if isinstance(base, nn.Module) else base
    )

    merged = method(items)
    if not isinstance(merged, TaskVector):
        raise WeightspaceValueError(
            f"`method` must return a TaskVector, got {type(merged).__name__}"
        )
    merged = merged.materialize()

    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(desc="search_scales", unit="eval")

    rank, world = world_of(distributed)

    def run_all(trials: Sequence[Callable[[], float]]) -> list[float]:
        """Score every trial: all here, or rank r takes trials r, r + W, ... and they gather."""
        if world == 1:
            return [t() for t in trials]
        mine = {i: trials[i]() for i in range(rank, len(trials), world)}
        gathered: list[dict[int, float] | None] = [None] * world
        torch.distributed.all_gather_object(gathered, mine)
        merged_scores: dict[int, float] = {}
        for part in gathered:
            merged_scores.update(part or {})
        if bar is not None:
            bar.update(len(trials) - len(mine))
        return [merged_scores[i] for i in range(len(trials))]

    def score_of(vector: TaskVector, scale: float) -> float:
        state = vector.apply_to(base_sd, scale=scale)
        raw = evaluate(state)
        if bar is not None:
            bar.update(1)
        try:
            return float(raw)
        except (TypeError, ValueError):
            raise WeightspaceValueError(
                f"`evaluate` must return a number, got {raw!r} of type {type(raw).__name__}"
            ) from None

    try:
        scores: list[tuple[float, float]] = []
        best_c, best = values[0], math.nan
        uniform = run_all([partial(score_of, merged, c) for c in values])
        for c, s in zip(values, uniform, strict=True):
            logger.debug("scale %s: score %s", c, s)
            scores.append((c, s))
            if _is_better(s, best, maximize):
                best_c, best = c, s
        if math.isnan(best):
            raise WeightspaceValueError(
                "`evaluate` returned NaN for every scale in `grid`; check the callback "
                "or choose smaller scales"
            )
        if not per_layer:
            return ScaleSearchResult(best_c, best, None, tuple(scores))

        group = groups if groups is not None else _default_group
        group_of = {name: str(group(name)) for name in merged}
        order = list(dict.fromkeys(group_of.values()))
        current = dict.fromkeys(order, best_c)
        layer_scores: list[tuple[str, float, float]] = []
        for _ in range(rounds):
            for g in order:
                start, chosen = current[g], current[g]
                tried = [c for c in values if c != start]
                trials = []
                for c in tried:
                    trial = dict(current)
                    trial[g] = c
                    vector = merged.map(_GroupScale(MappingProxyType(trial), group_of))
                    trials.append(partial(score_of, vector, 1.0))
                for c, s in zip(tried, run_all(trials), strict=True):
                    logger.debug("group %s scale %s: score %s", g, c, s)
                    layer_scores.append((g, c, s))
                    if _is_better(s, best, maximize):
                        best, chosen = s, c
                current[g] = chosen
        return ScaleSearchResult(
            best_c, best, MappingProxyType(dict(current)), tuple(scores), tuple(layer_scores)
        )
    finally:
        if bar is not None:
            bar.close()


search_coefficients = deprecated(
    since="0.1",
    alternative="weightspace.merge.search_scales",
    name="weightspace.merge.search_coefficients",
)(search_scales)
