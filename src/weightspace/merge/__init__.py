"""Model merging over task vectors: task arithmetic, averaging, TIES, DARE, TALL masks.

Every merge takes a sequence of :class:`~weightspace.TaskVector` objects with the same keys and
returns a new, lazy :class:`~weightspace.TaskVector`: nothing is computed until a tensor is
read, and each tensor is computed from the tensors of the same name only, so that merging N
checkpoints needs memory for about N+1 copies of the largest tensor, not of the model. The
pure tensor functions behind them are in :mod:`weightspace.merge.functional`.

All merges are bitwise invariant to the order of their inputs (sums over tasks sort the
values of each coordinate first) and the random ones (:func:`dare`, :func:`dare_ties`) are
seeded per task and tensor, so their results do not depend on the order of evaluation.

Example:
    >>> import torch
    >>> from weightspace import TaskVector, merge
    >>> a = TaskVector({"w": torch.tensor([1.0, -2.0, 0.5])})
    >>> b = TaskVector({"w": torch.tensor([3.0, 1.0, -0.5])})
    >>> merge.task_arithmetic([a, b], scale=0.5)["w"]
    tensor([ 2.0000, -0.5000,  0.0000])
    >>> merge.ties([a, b], density=1.0)["w"]
    tensor([ 2., -2.,  0.])
"""

from __future__ import annotations

from typing import Any

from weightspace._deprecation import warn_deprecated
from weightspace.merge import functional as functional
from weightspace.merge._config import MergeConfig as MergeConfig
from weightspace.merge._config import ModelSpec as ModelSpec
from weightspace.merge._merge import average as average
from weightspace.merge._merge import consensus as consensus
from weightspace.merge._merge import dare as dare
from weightspace.merge._merge import dare_ties as dare_ties
from weightspace.merge._merge import magnitude_prune as magnitude_prune
from weightspace.merge._merge import mean as mean
from weightspace.merge._merge import tall_masks as tall_masks
from weightspace.merge._merge import task_arithmetic as task_arithmetic
from weightspace.merge._merge import ties as ties
from weightspace.merge._packed import PackedMasks as PackedMasks
from weightspace.merge._report import MergePlan as MergePlan
from weightspace.merge._report import MergeReport as MergeReport
from weightspace.merge._run import plan_merge as plan_merge
from weightspace.merge._run import run_merge as run_merge
from weightspace.merge._search import ScaleSearchResult as ScaleSearchResult
from weightspace.merge._search import search_coefficients as search_coefficients
from weightspace.merge._search import search_scales as search_scales

__all__ = [
    "MergeConfig",
    "MergePlan",
    "MergeReport",
    "ModelSpec",
    "PackedMasks",
    "ScaleSearchResult",
    "consensus",
    "dare",
    "dare_ties",
    "functional",
    "magnitude_prune",
    "mean",
    "plan_merge",
    "run_merge",
    "search_scales",
    "tall_masks",
    "task_arithmetic",
    "ties",
]


def __getattr__(name: str) -> Any:
    """Deprecated names of the package (removed in 0.2)."""
    if name == "CoefficientSearchResult":
        warn_deprecated(
            "weightspace.merge.CoefficientSearchResult",
            "weightspace.merge.ScaleSearchResult",
            since="0.1",
        )
        return ScaleSearchResult
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
