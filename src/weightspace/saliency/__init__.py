"""Which weights matter: per-parameter importance scores and boolean masks built from them.

Scores (:func:`gradient`, :func:`snip`, :func:`fisher`, :func:`wanda`) map each trainable
parameter's name to a non-negative tensor of its shape, computed on labelled data without
changing the model. Masks are boolean state dicts: :func:`top_k` (global or per tensor) and
:func:`threshold` build them from scores; :func:`union`, :func:`intersection`,
:func:`difference` and :func:`complement` combine them; :func:`restrict` limits one to a
:mod:`weightspace.select` selection; :func:`mask_stats` counts what it selects;
:func:`random_mask` draws a baseline of the same size. For large models, :func:`iter_snip`
and :func:`iter_wanda` yield the scores one parameter at a time and :func:`top_ranking` keeps
only the best ``k`` of them (a :class:`Ranking`, whose masks equal :func:`top_k`'s).
Low-rank attribution (:func:`output_bases`, :func:`task_vector_bases`,
:func:`lowrank_difference`) finds the directions of each weight matrix that one data set
uses and another does not. A :class:`~weightspace.TaskVector` with the same keys is masked
with ``tv * mask``.

One machinery serves SalUn-style unlearning (:mod:`weightspace.unlearn`), TALL-style masks and
the localisation of safety weights.

Example:
    >>> import torch
    >>> from weightspace import TaskVector, saliency
    >>> net = torch.nn.Linear(4, 3)
    >>> data = (torch.randn(16, 4), torch.randint(0, 3, (16,)))
    >>> forget = saliency.top_k(saliency.gradient(net, data), fraction=0.25)
    >>> saliency.mask_stats(forget).selected
    4
    >>> tv = TaskVector({n: torch.ones_like(p) for n, p in net.named_parameters()})
    >>> float((tv * forget).norm() ** 2)
    4.0
"""

from __future__ import annotations

from weightspace.saliency._lowrank import lowrank_difference as lowrank_difference
from weightspace.saliency._lowrank import output_bases as output_bases
from weightspace.saliency._lowrank import random_mask as random_mask
from weightspace.saliency._lowrank import task_vector_bases as task_vector_bases
from weightspace.saliency._masks import MaskStats as MaskStats
from weightspace.saliency._masks import complement as complement
from weightspace.saliency._masks import difference as difference
from weightspace.saliency._masks import intersection as intersection
from weightspace.saliency._masks import mask_stats as mask_stats
from weightspace.saliency._masks import restrict as restrict
from weightspace.saliency._masks import threshold as threshold
from weightspace.saliency._masks import top_k as top_k
from weightspace.saliency._masks import union as union
from weightspace.saliency._ranking import Ranking as Ranking
from weightspace.saliency._ranking import top_ranking as top_ranking
from weightspace.saliency._scores import LossFn as LossFn
from weightspace.saliency._scores import fisher as fisher
from weightspace.saliency._scores import gradient as gradient
from weightspace.saliency._scores import iter_snip as iter_snip
from weightspace.saliency._scores import iter_wanda as iter_wanda
from weightspace.saliency._scores import snip as snip
from weightspace.saliency._scores import wanda as wanda
from weightspace.train import Data as Data

__all__ = [
    "MaskStats",
    "Ranking",
    "complement",
    "difference",
    "fisher",
    "gradient",
    "intersection",
    "iter_snip",
    "iter_wanda",
    "lowrank_difference",
    "mask_stats",
    "output_bases",
    "random_mask",
    "restrict",
    "snip",
    "task_vector_bases",
    "threshold",
    "top_k",
    "top_ranking",
    "union",
    "wanda",
]
