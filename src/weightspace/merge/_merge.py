"""Merges of :class:`~weightspace.TaskVector` objects, computed lazily tensor by tensor."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence

import torch

from weightspace._deprecation import deprecated
from weightspace._errors import ShapeMismatchError, WeightspaceValueError
from weightspace._task_vector import TaskVector
from weightspace.merge import _core
from weightspace.merge._seeding import dare_keep_masks
from weightspace.merge._validate import (
    Majority,
    check_density,
    check_drop_rate,
    check_finite,
    check_k,
    check_lambdas,
    check_majority,
    check_same_shape,
    check_seed,
    check_weights,
)

__all__ = [
    "average",
    "consensus",
    "dare",
    "dare_ties",
    "magnitude_prune",
    "mean",
    "tall_masks",
    "task_arithmetic",
    "ties",
]

Kernel = Callable[[str, list[torch.Tensor]], torch.Tensor]


# ---------------------------------------------------------------------------- validation


def _check_vectors(vectors: object, name: str = "vectors") -> tuple[TaskVector, ...]:
    if isinstance(vectors, TaskVector):
        raise WeightspaceValueError(
            f"`{name}` must be a sequence of TaskVectors, got a single TaskVector; "
            f"wrap it in a list: [{name}]"
        )
    if not isinstance(vectors, Iterable):
        raise WeightspaceValueError(
            f"`{name}` must be a sequence of TaskVectors, got {type(vectors).__name__}"
        )
    items = tuple(vectors)
    if not items:
        raise WeightspaceValueError(
            f"`{name}` must hold at least one TaskVector, got an empty sequence"
        )
    for index, item in enumerate(items):
        if not isinstance(item, TaskVector):
            raise WeightspaceValueError(
                f"`{name}[{index}]` must be a TaskVector, got {type(item).__name__}; "
                "build one with TaskVector.from_models(base=..., finetuned=...)"
            )
    reference = list(items[0].keys())
    reference_set = set(reference)
    for index, item in enumerate(items[1:], start=1):
        keys = set(item.keys())
        if keys != reference_set:
            missing = sorted(reference_set - keys)
            extra = sorted(keys - reference_set)
            raise ShapeMismatchError(
                f"`{name}[{index}]` does not have the keys of `{name}[0]`: "
                f"{len(missing)} missing {missing[:5]}, {len(extra)} extra {extra[:5]}; "
                "merge task vectors of one architecture, or restrict them to their common keys "
                "first"
            )
    return items


def _promote(name: str, tensors: list[torch.Tensor]) -> list[torch.Tensor]:
    check_same_shape("vectors", tensors, name)
    dtype = tensors[0].dtype
    for tensor in tensors[1:]:
        dtype = torch.promote_types(dtype, tensor.dtype)
    if not dtype.is_floating_point:
        raise WeightspaceValueError(
            f"the deltas for key {name!r} have dtype {dtype}; merges need floating-point deltas"
        )
    return [t if t.dtype == dtype else t.to(dtype) for t in tensors]


def _lazy(
    vectors: Sequence[TaskVector], kernel: Kernel, scale: float, **settings: object
) -> TaskVector:
    def merge_one(name: str, tensors: list[torch.Tensor]) -> torch.Tensor:
        out = kernel(name, _promote(name, tensors))
        return out * scale if scale != 1.0 else out

    return TaskVector.zip_map(merge_one, vectors).with_metadata(_provenance(scale, settings))


def _provenance(scale: float, settings: Mapping[str, object]) -> dict[str, str]:
    """Metadata recording how a merged vector was made (``merge.method``, ...)."""
    provenance = {
        f"merge.{key}": value if isinstance(value, str) else repr(value)
        for key, value in settings.items()
    }
    provenance["merge.scale"] = repr(scale)
    return provenance


# ---------------------------------------------------------------------------- merges


def task_arithmetic(
    vectors: Sequence[TaskVector],
    *,
    scale: float = 1.0,
    weights: Sequence[float] | None = None,
) -> TaskVector:
    r"""Task arithmetic: a scaled, optionally weighted, sum of task vectors.

    .. math::

        \tau = \lambda \sum_{t=1}^{T} w_t \, \tau_t

    with :math:`\lambda` = ``scale`` and :math:`w_t` = ``weights[t]`` (default 1). Ilharco
    et al., "Editing Models with Task Arithmetic", ICLR 2023, https://arxiv.org/abs/2212.04089
    (their 8-task ViT-B/32 experiments use :math:`\lambda = 0.3`). A negative weight forgets a
    task. The sum over tasks is accumulated in float64 (for three vectors or more) and rounded
    once, which makes it bitwise invariant to the order of ``(vector, weight)`` pairs whenever
    the terms of a coordinate lie within about 27 binades of each other (see
    :mod:`weightspace.merge.functional`).

    The result is lazy: each tensor is computed when it is accessed, from the tensors of the
    same name in every input, so a merge of N vectors holds about N+1 copies of one tensor.
    One vector with scale 1 (and no weight other than 1) is returned as is (with provenance
    metadata), so ``task_arithmetic([tv]).apply_to(base)`` keeps the bit-exact reconstruction
    of the fine-tuned weights that :meth:`~weightspace.TaskVector.apply_to` guarantees.

    Args:
        vectors: Task vectors with the same keys and shapes.
        scale: Coefficient :math:`\lambda` applied to the sum.
        weights: Optional coefficient per task vector.

    Returns:
        The merged task vector.

    Raises:
        WeightspaceValueError: if ``vectors`` is empty or not TaskVectors, or ``scale`` or
            ``weights`` is not finite or not one per vector.
        ShapeMismatchError: if the vectors' keys differ (shapes are checked on access).

    Example:
        >>> import torch
        >>> from weightspace import TaskVector
        >>> from weightspace import merge
        >>> a = TaskVector({"w": torch.tensor([1.0, 2.0])})
        >>> b = TaskVector({"w": torch.tensor([3.0, -2.0])})
        >>> merge.task_arithmetic([a, b], scale=0.5)["w"]
        tensor([2., 0.])
    """
    items = _check_vectors(vectors)
    scale = check_finite("scale", scale)
    w = None if weights is None else check_weights(weights, len(items))
    if len(items) == 1 and scale == 1.0 and (w is None or w == (1.0,)):
        # The identity: share the input's values, which keeps apply_to bit-exact.
        return items[0].with_metadata(_provenance(scale, {"method": "task_arithmetic"}))

    def kernel(name: str, tensors: list[torch.Tensor]) -> torch.Tensor:
        return _core.ordered_sum(tensors, w)

    return _lazy(items, kernel, scale, method="task_arithmetic", weights=w)


def mean(vectors: Sequence[TaskVector]) -> TaskVector:
    r"""Weight averaging: the mean of the task vectors.

    .. math::

        \tau = \frac{1}{T} \sum_{t=1}^{T} \tau_t

    Adding it to the base weights gives the average of the fine-tuned models ("model soup",
    Wortsman et al., ICML 2022, https://arxiv.org/abs/2203.05482). Lazy, like
    :func:`task_arithmetic`. The same as :func:`weightspace.merge.functional.mean`, tensor
    by tensor (and ``task_arithmetic(vectors, scale=1 / len(vectors))`` up to rounding).

    Args:
        vectors: Task vectors with the same keys and shapes.

    Returns:
        The mean task vector.

    Raises:
        WeightspaceValueError: if ``vectors`` is empty or not TaskVectors.
        ShapeMismatchError: if the vectors' keys differ.

    Example:
        >>> import torch
        >>> from weightspace import TaskVector, merge
        >>> a = TaskVector({"w": torch.tensor([1.0, 2.0])})
        >>> b = TaskVector({"w": torch.tensor([3.0, -2.0])})
        >>> merge.mean([a, b])["w"]
        tensor([2., 0.])
    """
    items = _check_vectors(vectors)
    if len(items) == 1:
        return items[0].with_metadata(_provenance(1.0, {"method": "average"}))

    def kernel(name: str, tensors: list[torch.Tensor]) -> torch.Tensor:
        return _core.ordered_sum(tensors, divide_by_count=True)

    return _lazy(items, kernel, 1.0, method="average")


average = deprecated(
    since="0.1", alternative="weightspace.merge.mean", name="weightspace.merge.average"
)(mean)


def ties(
    vectors: Sequence[TaskVector],
    *,
    density: float,
    scale: float = 1.0,
    weights: Sequence[float] | None = None,
    majority: Majority = "total",
) -> TaskVector:
    r"""TIES-merging of task vectors: trim, elect sign, disjoint mean, then scale.

    Each tensor of each task keeps its top-``density`` entries by magnitude; the sign of each
    coordinate is elected (``"total"``: sign of the summed trimmed values, as in the paper;
    ``"count"``: the sign held by more tasks); the agreeing values are averaged; the result is
    multiplied by ``scale``:

    .. math::

        \tau = \lambda \, \frac{1}{|A|} \sum_{t \in A} w_t \hat\tau_t

    See :func:`weightspace.merge.functional.ties` for the exact rules (ties at the trim
    threshold, perfect ties in the election). Yadav et al., NeurIPS 2023,
    https://arxiv.org/abs/2306.01708 (their :math:`\lambda` is tuned on validation data,
    typically around 1 with density 0.2). Lazy; holds one boolean mask per task besides the
    inputs while a tensor is computed.

    Args:
        vectors: Task vectors with the same keys and shapes.
        density: Fraction of each tensor's entries kept by the trim step, in ``(0, 1]``.
        scale: Coefficient :math:`\lambda` applied to the merged vector.
        weights: Optional coefficient per task vector, applied before the election.
        majority: ``"total"`` or ``"count"``.

    Returns:
        The merged task vector.

    Raises:
        WeightspaceValueError: on a bad ``density``, ``scale``, ``weights``, ``majority`` or
            ``vectors``.
        ShapeMismatchError: if the vectors' keys differ.

    Example:
        >>> import torch
        >>> from weightspace import TaskVector, merge
        >>> a = TaskVector({"w": torch.tensor([1.0, -2.0])})
        >>> b = TaskVector({"w": torch.tensor([3.0, 1.0])})
        >>> merge.ties([a, b], density=1.0)["w"]
        tensor([ 2., -2.])
    """
    items = _check_vectors(vectors)
    density = check_density(density)
    scale = check_finite("scale", scale)
    majority = check_majority(majority)
    w = None if weights is None else check_weights(weights, len(items))

    def kernel(name: str, tensors: list[torch.Tensor]) -> torch.Tensor:
        masks = [_core.magnitude_keep_mask(t, density) for t in tensors]
        return _core.ties_merge(tensors, keep_masks=masks, weights=w, majority=majority)

    return _lazy(items, kernel, scale, method="ties", density=density, weights=w, majority=majority)


def _dare_masks(
    name: str, tensors: list[torch.Tensor], drop_rate: float, seeds: tuple[int, ...] | int
) -> tuple[list[torch.Tensor] | None, float | None]:
    """DARE keep masks (one per task, from per-task generators) and the rescale divisor."""
    if drop_rate == 0.0:
        return None, None
    first = tensors[0]
    masks = dare_keep_masks(name, first.shape, len(tensors), drop_rate, seeds, first.device)
    return masks, 1.0 - drop_rate


def dare(
    vectors: Sequence[TaskVector],
    *,
    drop_rate: float,
    seed: int | Sequence[int],
    scale: float = 1.0,
    weights: Sequence[float] | None = None,
    rescale: bool = True,
) -> TaskVector:
    r"""DARE: randomly drop entries of each task vector, rescale, then add them up.

    .. math::

        \tau = \lambda \sum_{t=1}^{T} w_t \, \frac{m_t \odot \tau_t}{1 - p}, \qquad
        m_t \sim \operatorname{Bernoulli}(1 - p)

    Yu et al., "Language Models are Super Mario", ICML 2024, https://arxiv.org/abs/2311.03099.
    With ``drop_rate=0`` the result equals :func:`task_arithmetic` bit for bit.

    Seeding: each task's tensor ``name`` gets its own CPU generator, seeded with a stable hash
    (BLAKE2b) of ``(seed, task index, name)`` when ``seed`` is an int, or of
    ``(seed[t], name)`` when ``seed`` is a sequence with one seed per task vector. Results are
    therefore reproducible bit for bit and independent of the order in which tensors are
    accessed; with one seed per vector they are also invariant to the order of the vectors
    (permute the seeds with them).

    Args:
        vectors: Task vectors with the same keys and shapes.
        drop_rate: Probability ``p`` of dropping an entry, in ``[0, 1)`` (the paper uses up to
            0.9 for fine-tuned language models).
        seed: One int, or one int per task vector (see above).
        scale: Coefficient :math:`\lambda` applied to the sum.
        weights: Optional coefficient per task vector.
        rescale: Divide the kept entries by ``1 - p``.

    Returns:
        The merged task vector.

    Raises:
        WeightspaceValueError: on a bad ``drop_rate``, ``seed``, ``scale``, ``weights`` or
            ``vectors``.
        ShapeMismatchError: if the vectors' keys differ.

    Example:
        >>> import torch
        >>> from weightspace import TaskVector, merge
        >>> a = TaskVector({"w": torch.ones(4)})
        >>> merge.dare([a], drop_rate=0.0, seed=0)["w"]
        tensor([1., 1., 1., 1.])
    """
    items = _check_vectors(vectors)
    drop_rate = check_drop_rate(drop_rate)
    seeds = check_seed(seed, len(items))
    scale = check_finite("scale", scale)
    w = None if weights is None else check_weights(weights, len(items))

    def kernel(name: str, tensors: list[torch.Tensor]) -> torch.Tensor:
        masks, divisor = _dare_masks(name, tensors, drop_rate, seeds)
        return _core.ordered_sum(tensors, w, masks=masks, divisor=divisor if rescale else None)

    return _lazy(
        items,
        kernel,
        scale,
        method="dare",
        drop_rate=drop_rate,
        seed=seeds,
        weights=w,
        rescale=bool(rescale),
    )


def dare_ties(
    vectors: Sequence[TaskVector],
    *,
    drop_rate: float,
    seed: int | Sequence[int],
    scale: float = 1.0,
    weights: Sequence[float] | None = None,
    majority: Majority = "total",
    rescale: bool = True,
) -> TaskVector:
    r"""DARE sparsification followed by the TIES sign election and disjoint mean.

    .. math::

        \tau = \lambda \, \frac{1}{|A|} \sum_{t \in A} w_t \operatorname{dare}(\tau_t)

    Seeded as :func:`dare`; merged as :func:`ties` without the magnitude trim. With
    ``drop_rate=0`` it equals :func:`ties` with ``density=1``. DARE paper (Yu et al., ICML
    2024, https://arxiv.org/abs/2311.03099), as "DARE + TIES" and mergekit's ``dare_ties``.

    Args:
        vectors: Task vectors with the same keys and shapes.
        drop_rate: Probability of dropping an entry, in ``[0, 1)``.
        seed: One int, or one int per task vector (see :func:`dare`).
        scale: Coefficient :math:`\lambda` applied to the merged vector.
        weights: Optional coefficient per task vector, applied before the election.
        majority: ``"total"`` or ``"count"``.
        rescale: Divide the kept entries by ``1 - drop_rate``.

    Returns:
        The merged task vector.

    Raises:
        WeightspaceValueError: on a bad argument.
        ShapeMismatchError: if the vectors' keys differ.

    Example:
        >>> import torch
        >>> from weightspace import TaskVector, merge
        >>> a = TaskVector({"w": torch.tensor([1.0, -2.0])})
        >>> b = TaskVector({"w": torch.tensor([3.0, 1.0])})
        >>> merge.dare_ties([a, b], drop_rate=0.0, seed=0)["w"]
        tensor([ 2., -2.])
    """
    items = _check_vectors(vectors)
    drop_rate = check_drop_rate(drop_rate)
    seeds = check_seed(seed, len(items))
    scale = check_finite("scale", scale)
    majority = check_majority(majority)
    w = None if weights is None else check_weights(weights, len(items))

    def kernel(name: str, tensors: list[torch.Tensor]) -> torch.Tensor:
        masks, divisor = _dare_masks(name, tensors, drop_rate, seeds)
        return _core.ties_merge(
            tensors,
            keep_masks=masks,
            weights=w,
            majority=majority,
            divisor=divisor if rescale else None,
        )

    return _lazy(
        items,
        kernel,
        scale,
        method="dare_ties",
        drop_rate=drop_rate,
        seed=seeds,
        weights=w,
        majority=majority,
        rescale=bool(rescale),
    )


def magnitude_prune(vector: TaskVector, density: float) -> TaskVector:
    r"""Keep the top-``density`` fraction of each tensor of ``vector`` by magnitude.

    Per tensor, exactly ``round(density * numel)`` entries are kept; entries tied at the
    threshold are kept in row-major order (see
    :func:`weightspace.merge.functional.magnitude_prune`). Lazy.

    Args:
        vector: The task vector to sparsify.
        density: Fraction of entries to keep, in ``(0, 1]``.

    Returns:
        The pruned task vector.

    Raises:
        WeightspaceValueError: if ``vector`` is not a TaskVector or ``density`` is out of range.

    Example:
        >>> import torch
        >>> from weightspace import TaskVector, merge
        >>> v = TaskVector({"w": torch.tensor([0.1, -3.0, 2.0, -0.5])})
        >>> merge.magnitude_prune(v, 0.5)["w"]
        tensor([ 0., -3.,  2., -0.])
    """
    if not isinstance(vector, TaskVector):
        raise WeightspaceValueError(
            f"`vector` must be a TaskVector, got {type(vector).__name__}; for a plain tensor "
            "use weightspace.merge.functional.magnitude_prune"
        )
    density = check_density(density)

    def prune(name: str, tensor: torch.Tensor) -> torch.Tensor:
        return tensor * _core.magnitude_keep_mask(tensor, density)

    return vector.map(prune)


def _check_merged(merged: object, items: tuple[TaskVector, ...]) -> TaskVector | None:
    if merged is None:
        return None
    if not isinstance(merged, TaskVector):
        raise WeightspaceValueError(
            f"`merged` must be a TaskVector or None, got {type(merged).__name__}; build it with "
            "merge.task_arithmetic(vectors) or merge.ties(vectors, density=...)"
        )
    if set(merged.keys()) != set(items[0].keys()):
        missing = sorted(set(items[0].keys()) - set(merged.keys()))
        extra = sorted(set(merged.keys()) - set(items[0].keys()))
        raise ShapeMismatchError(
            f"`merged` does not have the keys of `vectors[0]`: {len(missing)} missing "
            f"{missing[:5]}, {len(extra)} extra {extra[:5]}; merge the same vectors"
        )
    return merged


def tall_masks(
    vectors: Sequence[TaskVector],
    *,
    lambdas: float | Sequence[float] = 0.4,
    merged: TaskVector | None = None,
) -> list[dict[str, torch.Tensor]]:
    r"""TALL masks: per task, the weights where the task dominates the rest of the merge.

    .. math::

        m_t = \mathbb{1}\left[\, |\tau_t| \ge \lambda_t \, |\tau_{\mathrm{MTL}} - \tau_t| \,\right]

    Wang et al., "Localizing Task Information for Improved Model Merging and Compression",
    ICML 2024, https://arxiv.org/abs/2405.07813. :math:`\tau_{\mathrm{MTL}}` is ``merged``,
    by default the task-arithmetic sum :math:`\sum_t \tau_t`. The paper tunes
    :math:`\lambda_t` per task in ``[0.2, 0.6]`` on validation data; 0.4 is the middle of that
    range. Task ``t`` is reconstructed from the merged vector as
    :math:`\theta_0 + m_t \odot \tau_{\mathrm{MTL}}`; store the masks compactly with
    :class:`PackedMasks`.

    The masks are computed eagerly, tensor by tensor (one boolean tensor per task and name).

    Args:
        vectors: Task vectors with the same keys and shapes.
        lambdas: One non-negative :math:`\lambda_t` per task vector, or one for all: a
            threshold of the mask, not a coefficient of the merge (that is ``scale``
            elsewhere); the name is the paper's.
        merged: The multi-task vector; ``None`` for ``task_arithmetic(vectors)``.

    Returns:
        One mask mapping per task vector, ``name -> bool tensor``.

    Raises:
        WeightspaceValueError: on bad ``vectors``, ``lambdas`` or ``merged``.
        ShapeMismatchError: if keys or shapes differ.

    Example:
        >>> import torch
        >>> from weightspace import TaskVector, merge
        >>> a = TaskVector({"w": torch.tensor([1.0, 0.0])})
        >>> b = TaskVector({"w": torch.tensor([0.0, 1.0])})
        >>> [m["w"] for m in merge.tall_masks([a, b], lambdas=1.0)]
        [tensor([ True, False]), tensor([False,  True])]
    """
    items = _check_vectors(vectors)
    lams = check_lambdas(lambdas, len(items))
    merged_vector = _check_merged(merged, items)
    masks: list[dict[str, torch.Tensor]] = [{} for _ in items]
    for name in items[0]:
        tensors = _promote(name, [v[name] for v in items])
        if merged_vector is None:
            total = _core.ordered_sum(tensors)
        else:
            total = merged_vector[name]
            check_same_shape("merged", [tensors[0], total], name)
        for task, mask in enumerate(_core.tall_masks_list(tensors, total, lams)):
            masks[task][name] = mask
    return masks


def consensus(
    vectors: Sequence[TaskVector],
    *,
    k: int = 2,
    lambdas: float | Sequence[float] = 0.4,
    merged: TaskVector | None = None,
    scale: float = 1.0,
) -> TaskVector:
    r"""Consensus merging: keep the merged vector only where at least ``k`` TALL masks agree.

    .. math::

        \tau = \lambda \; \mathbb{1}\left[\sum_t m_t \ge k\right] \odot \tau_{\mathrm{MTL}}

    with the TALL masks :math:`m_t` of :func:`tall_masks`. ``merged`` is
    :math:`\tau_{\mathrm{MTL}}`, by default the task-arithmetic sum (Consensus TA); pass
    ``merge.ties(vectors, density=...)`` for Consensus TIES. ``k=2`` (the paper's choice)
    removes the "selfish" weights used by one task only and the "catastrophic" weights used
    by none. Wang et al., ICML 2024, https://arxiv.org/abs/2405.07813. Lazy.

    Args:
        vectors: Task vectors with the same keys and shapes.
        k: Minimum number of task masks a weight must be in, in ``[1, len(vectors)]``.
        lambdas: TALL-mask :math:`\lambda_t`, one per task vector or one for all: mask
            thresholds (see :func:`tall_masks`), not the coefficient of the result, which
            is ``scale``.
        merged: The multi-task vector; ``None`` for ``task_arithmetic(vectors)``.
        scale: Coefficient :math:`\lambda` applied to the result.

    Returns:
        The consensus-merged task vector.

    Raises:
        WeightspaceValueError: on a bad ``k``, ``lambdas``, ``scale``, ``merged`` or
            ``vectors``.
        ShapeMismatchError: if keys differ.

    Example:
        >>> import torch
        >>> from weightspace import TaskVector, merge
        >>> a = TaskVector({"w": torch.tensor([1.0, 1.0, 0.0])})
        >>> b = TaskVector({"w": torch.tensor([1.0, 0.0, 1.0])})
        >>> merge.consensus([a, b], k=2, lambdas=1.0)["w"]
        tensor([2., 0., 0.])
    """
    items = _check_vectors(vectors)
    k = check_k(k, len(items))
    lams = check_lambdas(lambdas, len(items))
    merged_vector = _check_merged(merged, items)
    scale = check_finite("scale", scale)
    n = len(items)
    inputs = items if merged_vector is None else (*items, merged_vector)

    def kernel(name: str, tensors: list[torch.Tensor]) -> torch.Tensor:
        tasks = tensors[:n]
        total = _core.ordered_sum(tasks) if merged_vector is None else tensors[n]
        count = torch.zeros(total.shape, dtype=torch.int64, device=total.device)
        for mask in _core.tall_masks_list(tasks, total, lams):
            count += mask
        zero = torch.zeros((), dtype=total.dtype, device=total.device)
        return torch.where(count >= k, total, zero)

    return _lazy(
        inputs,
        kernel,
        scale,
        method="consensus",
        k=k,
        lambdas=lams,
        merged="task_arithmetic" if merged_vector is None else "given",
    )
