"""Pure tensor functions for model merging: the stable functional surface.

Every function here takes a *stacked* tensor of task deltas ``[n_tasks, *shape]`` (or one
delta ``[*shape]``) and returns a new tensor; nothing is modified in place. They are the
building blocks of the task-vector merges in :mod:`weightspace.merge`, and are meant for
integrators who hold their own tensors.

Two guarantees hold for every function:

* **Order invariance.** Permuting the tasks (together with their weights) gives the same
  result bit for bit: sums over three or more float32/bfloat16/float16 tasks are accumulated
  in float64, which is exact (hence independent of the order) whenever the non-zero terms of a
  coordinate lie within about 27 binades of each other (a ratio of :math:`10^8`; the exact
  bound is in :mod:`weightspace.merge._core`), then rounded once; beyond that range two orders
  differ by at most one float32 unit in the last place. Float64 inputs sort the task values of
  each coordinate before adding them.
* **Reproducibility.** Random functions take a ``seed`` or a :class:`torch.Generator`; the
  random draws are made on the generator's device (the CPU for a ``seed``), so a seed gives the
  same mask on every device.

Inputs are expected to be finite floating-point tensors (float32 or float64; with half
precision the per-task terms are computed in half precision, and sums over three tasks or more
are accumulated in float64 and rounded once).

Example:
    >>> import torch
    >>> from weightspace.merge import functional as F
    >>> deltas = torch.tensor([[1.0, -2.0, 0.5], [3.0, 1.0, -0.5]])
    >>> F.task_arithmetic(deltas, [0.5, 0.5])
    tensor([ 2.0000, -0.5000,  0.0000])
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from weightspace._errors import ShapeMismatchError, WeightspaceValueError
from weightspace.merge import _core
from weightspace.merge._validate import (
    Majority,
    check_density,
    check_drop_rate,
    check_finite,
    check_k,
    check_lambdas,
    check_majority,
    check_stacked,
    check_weights,
)

__all__ = [
    "consensus",
    "dare",
    "dare_ties",
    "magnitude_prune",
    "mean",
    "pack_mask",
    "tall_masks",
    "task_arithmetic",
    "ties",
    "unpack_mask",
]


def _resolve_generator(generator: torch.Generator | None, seed: int | None) -> torch.Generator:
    if (generator is None) == (seed is None):
        raise WeightspaceValueError(
            "pass exactly one of `generator` and `seed`, got "
            f"generator={generator!r}, seed={seed!r}; for example seed=0"
        )
    if generator is not None:
        if not isinstance(generator, torch.Generator):
            raise WeightspaceValueError(
                f"`generator` must be a torch.Generator, got {type(generator).__name__}"
            )
        return generator
    if not isinstance(seed, int) or isinstance(seed, bool):
        raise WeightspaceValueError(f"`seed` must be an int, got {seed!r}")
    made = torch.Generator(device="cpu")
    made.manual_seed(seed)
    return made


def _task_weights(
    weights: float | Sequence[float] | torch.Tensor, n_tasks: int
) -> tuple[float, ...]:
    if isinstance(weights, (int, float)) and not isinstance(weights, bool):
        return (check_finite("weights", weights),) * n_tasks
    return check_weights(weights, n_tasks)


def task_arithmetic(
    deltas: torch.Tensor, weights: float | Sequence[float] | torch.Tensor = 1.0
) -> torch.Tensor:
    r"""Weighted sum of task deltas (task arithmetic).

    .. math::

        \tau = \sum_{t=1}^{T} w_t \, \tau_t

    From Ilharco et al., "Editing Models with Task Arithmetic", ICLR 2023,
    https://arxiv.org/abs/2212.04089. A negative weight forgets a task (negation).

    Shapes:
        - ``deltas``: ``[n_tasks, *shape]``
        - output: ``[*shape]``

    Args:
        deltas: Stacked task deltas.
        weights: One coefficient per task (sequence or 1-D tensor), or one float for all tasks.

    Returns:
        The merged delta.

    Raises:
        WeightspaceValueError: if ``deltas`` is not a floating tensor with ``n_tasks >= 1`` or
            the weights are not finite or not one per task.

    Example:
        >>> import torch
        >>> task_arithmetic(torch.tensor([[1.0, 2.0], [3.0, 4.0]]), [1.0, -1.0])
        tensor([-2., -2.])
    """
    deltas = check_stacked(deltas)
    w = _task_weights(weights, deltas.shape[0])
    return _core.ordered_sum(list(deltas.unbind(0)), w)


def mean(deltas: torch.Tensor) -> torch.Tensor:
    r"""Mean of task deltas (weight averaging, "model soups").

    .. math::

        \tau = \frac{1}{T} \sum_{t=1}^{T} \tau_t

    Adding the mean delta to the base weights gives the average of the fine-tuned weights
    (Wortsman et al., "Model soups", ICML 2022, https://arxiv.org/abs/2203.05482).

    Shapes:
        - ``deltas``: ``[n_tasks, *shape]``
        - output: ``[*shape]``

    Args:
        deltas: Stacked task deltas.

    Returns:
        The mean delta.

    Raises:
        WeightspaceValueError: if ``deltas`` is not a floating tensor with ``n_tasks >= 1``.

    Example:
        >>> import torch
        >>> mean(torch.tensor([[1.0, 2.0], [3.0, 6.0]]))
        tensor([2., 4.])
    """
    deltas = check_stacked(deltas)
    return _core.ordered_sum(list(deltas.unbind(0)), divide_by_count=True)


def magnitude_prune(delta: torch.Tensor, density: float) -> torch.Tensor:
    r"""Keep the ``density`` fraction of entries of largest magnitude, zero the rest.

    Exactly :math:`k = \operatorname{round}(\text{density} \cdot \text{numel})` entries are kept
    (Python's ``round``, halves to even; ``k`` may be 0 for a tiny tensor and a low density).
    Entries whose magnitude equals the threshold are kept in row-major (flat index) order
    until ``k`` entries are kept, so the result is deterministic.

    .. math::

        \operatorname{prune}(\tau)_i = \tau_i \, \mathbb{1}[i \in \operatorname{top}_k |\tau|]

    This is the "trim" step of TIES-merging (Yadav et al., NeurIPS 2023,
    https://arxiv.org/abs/2306.01708).

    Shapes:
        - ``delta``: ``[*shape]`` (the fraction is taken over the whole tensor)
        - output: ``[*shape]``

    Args:
        delta: One tensor.
        density: Fraction of entries to keep, in ``(0, 1]``.

    Returns:
        A new tensor with the same shape and dtype.

    Raises:
        WeightspaceValueError: if ``density`` is outside ``(0, 1]`` or ``delta`` is not a
            floating tensor.

    Example:
        >>> import torch
        >>> magnitude_prune(torch.tensor([0.1, -3.0, 2.0, -0.5]), 0.5)
        tensor([ 0., -3.,  2., -0.])
    """
    if not isinstance(delta, torch.Tensor) or not delta.is_floating_point():
        raise WeightspaceValueError(
            f"`delta` must be a floating-point tensor, got {type(delta).__name__}"
            + (f" of dtype {delta.dtype}" if isinstance(delta, torch.Tensor) else "")
        )
    density = check_density(density)
    keep = _core.magnitude_keep_mask(delta, density)
    return delta * keep


def ties(
    deltas: torch.Tensor,
    *,
    density: float,
    weights: float | Sequence[float] | torch.Tensor | None = None,
    majority: Majority = "total",
) -> torch.Tensor:
    r"""TIES-merging: trim, elect sign, disjoint mean.

    1. **Trim**: each task keeps its top-``density`` entries by magnitude
       (:func:`magnitude_prune`), giving :math:`\hat\tau_t`; then :math:`v_t = w_t \hat\tau_t`.
    2. **Elect**: per coordinate, :math:`\gamma = \operatorname{sgn}(\sum_t v_t)` for
       ``majority="total"`` (the paper's rule, the sign of the larger total mass) or
       :math:`\gamma = \operatorname{sgn}(\sum_t \operatorname{sgn}(v_t))` for
       ``majority="count"`` (the sign held by more tasks).
    3. **Disjoint mean** over the tasks that agree, :math:`A = \{t : \operatorname{sgn}(v_t) =
       \gamma \neq 0\}`:

    .. math::

        \tau = \frac{1}{|A|} \sum_{t \in A} v_t \quad (\tau = 0 \text{ where } A = \emptyset)

    Where the election is a perfect tie (:math:`\gamma = 0`) no task agrees and the result is
    0, as in the paper's formula. Weights scale each task before the election; the mean divides
    by the number of agreeing tasks, not by their weights (as PEFT does), so equal weights
    :math:`w` give :math:`w` times the unweighted merge. The paper's final scale
    :math:`\lambda` is applied by the caller (``ties(...) * scale``).

    From Yadav et al., "TIES-Merging: Resolving Interference When Merging Models",
    NeurIPS 2023, https://arxiv.org/abs/2306.01708.

    Shapes:
        - ``deltas``: ``[n_tasks, *shape]``
        - output: ``[*shape]``

    Args:
        deltas: Stacked task deltas.
        density: Fraction of each task's entries kept by the trim step, in ``(0, 1]``.
        weights: Optional coefficient per task (or one float for all).
        majority: Sign-election rule, ``"total"`` or ``"count"``.

    Returns:
        The merged delta.

    Raises:
        WeightspaceValueError: on a bad ``density``, ``weights`` or ``majority``.

    Example:
        >>> import torch
        >>> ties(torch.tensor([[1.0, -2.0], [3.0, 1.0]]), density=1.0)
        tensor([ 2., -2.])
    """
    deltas = check_stacked(deltas)
    density = check_density(density)
    majority = check_majority(majority)
    tensors = list(deltas.unbind(0))
    w = None if weights is None else _task_weights(weights, len(tensors))
    masks = [_core.magnitude_keep_mask(t, density) for t in tensors]
    return _core.ties_merge(tensors, keep_masks=masks, weights=w, majority=majority)


def dare(
    delta: torch.Tensor,
    *,
    drop_rate: float,
    generator: torch.Generator | None = None,
    seed: int | None = None,
    rescale: bool = True,
) -> torch.Tensor:
    r"""DARE: drop each entry with probability ``drop_rate`` and rescale the survivors.

    .. math::

        m_i \sim \operatorname{Bernoulli}(1 - p), \qquad
        \operatorname{dare}(\tau)_i = \frac{m_i \, \tau_i}{1 - p}

    The rescale keeps the expected value: :math:`\mathbb{E}[\operatorname{dare}(\tau)] = \tau`.
    Entry ``i`` is kept when the ``i``-th uniform draw (``torch.rand`` of ``delta``'s shape, in
    float32, on the generator's device) is ``>= p``. With ``drop_rate=0`` the input is returned
    (as a copy) and no random number is drawn.

    From Yu et al., "Language Models are Super Mario: Absorbing Abilities from Homologous
    Models as a Free Lunch", ICML 2024, https://arxiv.org/abs/2311.03099.

    Shapes:
        - ``delta``: ``[*shape]`` (a stacked ``[n_tasks, *shape]`` tensor is treated as one)
        - output: ``[*shape]``

    Args:
        delta: The delta to sparsify.
        drop_rate: Probability ``p`` of dropping an entry, in ``[0, 1)``.
        generator: Source of randomness (mutually exclusive with ``seed``).
        seed: Seed of a fresh CPU generator (mutually exclusive with ``generator``).
        rescale: Divide the kept entries by ``1 - p`` (the paper's rescale).

    Returns:
        A new tensor with the same shape and dtype.

    Raises:
        WeightspaceValueError: on a bad ``drop_rate``, or unless exactly one of ``generator``
            and ``seed`` is given.

    Example:
        >>> import torch
        >>> out = dare(torch.ones(1000), drop_rate=0.9, seed=0)
        >>> sorted(set(out.tolist())) == [0.0, 10.0]
        True
    """
    if not isinstance(delta, torch.Tensor) or not delta.is_floating_point():
        raise WeightspaceValueError(
            f"`delta` must be a floating-point tensor, got {type(delta).__name__}"
        )
    drop_rate = check_drop_rate(drop_rate)
    gen = _resolve_generator(generator, seed)
    return _core.dare_one(delta, drop_rate, gen, rescale=bool(rescale))


def dare_ties(
    deltas: torch.Tensor,
    *,
    drop_rate: float,
    generator: torch.Generator | None = None,
    seed: int | None = None,
    weights: float | Sequence[float] | torch.Tensor | None = None,
    majority: Majority = "total",
    rescale: bool = True,
) -> torch.Tensor:
    r"""DARE sparsification followed by the TIES sign election and disjoint mean.

    Each task is sparsified with :func:`dare` (task ``t``'s mask is drawn after those of tasks
    ``0..t-1`` from the same generator), then merged as in :func:`ties` without the trim step:

    .. math::

        \tau = \frac{1}{|A|} \sum_{t \in A} w_t \operatorname{dare}(\tau_t)

    The combination of DARE with TIES is proposed in the DARE paper (Yu et al., ICML 2024,
    https://arxiv.org/abs/2311.03099).

    Shapes:
        - ``deltas``: ``[n_tasks, *shape]``
        - output: ``[*shape]``

    Args:
        deltas: Stacked task deltas.
        drop_rate: Probability of dropping an entry, in ``[0, 1)``.
        generator: Source of randomness (mutually exclusive with ``seed``).
        seed: Seed of a fresh CPU generator (mutually exclusive with ``generator``).
        weights: Optional coefficient per task (or one float for all).
        majority: Sign-election rule, ``"total"`` or ``"count"`` (see :func:`ties`).
        rescale: Divide the kept entries by ``1 - drop_rate``.

    Returns:
        The merged delta.

    Raises:
        WeightspaceValueError: on a bad argument (see :func:`dare` and :func:`ties`).

    Example:
        >>> import torch
        >>> dare_ties(torch.tensor([[1.0, -2.0], [3.0, 1.0]]), drop_rate=0.0, seed=0)
        tensor([ 2., -2.])
    """
    deltas = check_stacked(deltas)
    drop_rate = check_drop_rate(drop_rate)
    majority = check_majority(majority)
    gen = _resolve_generator(generator, seed)
    tensors = list(deltas.unbind(0))
    w = None if weights is None else _task_weights(weights, len(tensors))
    if drop_rate == 0.0:
        return _core.ties_merge(tensors, keep_masks=None, weights=w, majority=majority)
    masks = [_core.dare_keep_mask(t.shape, drop_rate, gen, t.device) for t in tensors]
    divisor = 1.0 - drop_rate if rescale else None
    return _core.ties_merge(
        tensors, keep_masks=masks, weights=w, majority=majority, divisor=divisor
    )


def tall_masks(
    deltas: torch.Tensor,
    merged: torch.Tensor,
    *,
    lambdas: float | Sequence[float] | torch.Tensor,
) -> torch.Tensor:
    r"""TALL masks: the weights where each task dominates the rest of the merged vector.

    .. math::

        m_t = \mathbb{1}\left[\, |\tau_t| \ge \lambda_t \, |\tau_{\mathrm{MTL}} - \tau_t| \,\right]

    as in Eq. (4) of Wang et al., "Localizing Task Information for Improved Model Merging and
    Compression", ICML 2024, https://arxiv.org/abs/2405.07813 (the authors' code uses a strict
    ``>``, which differs only where both sides are equal, e.g. at coordinates where every task
    delta is 0: those are kept here). ``merged`` is the multi-task vector
    :math:`\tau_{\mathrm{MTL}}`, typically the task-arithmetic sum :math:`\sum_t \tau_t`;
    the paper picks :math:`\lambda_t` in ``[0.2, 0.6]`` on validation data. Applying
    :math:`m_t` to :math:`\tau_{\mathrm{MTL}}` reconstructs task ``t`` (compression).

    Shapes:
        - ``deltas``: ``[n_tasks, *shape]``
        - ``merged``: ``[*shape]``
        - output: ``[n_tasks, *shape]``, boolean

    Args:
        deltas: Stacked task deltas :math:`\tau_t`.
        merged: The merged multi-task delta :math:`\tau_{\mathrm{MTL}}`.
        lambdas: One non-negative :math:`\lambda_t` per task, or one float for all: a
            threshold of the mask (the paper's name), not a coefficient that scales a delta.

    Returns:
        The stacked boolean masks.

    Raises:
        WeightspaceValueError: on bad ``lambdas``.
        ShapeMismatchError: if ``merged`` does not have the shape of one task delta.

    Example:
        >>> import torch
        >>> deltas = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
        >>> tall_masks(deltas, deltas.sum(0), lambdas=1.0)
        tensor([[ True, False],
                [False,  True]])
    """
    deltas = check_stacked(deltas)
    if not isinstance(merged, torch.Tensor) or tuple(merged.shape) != tuple(deltas.shape[1:]):
        got = tuple(merged.shape) if isinstance(merged, torch.Tensor) else type(merged).__name__
        raise ShapeMismatchError(
            f"`merged` must have the shape of one task delta {tuple(deltas.shape[1:])}, got {got}"
        )
    lams = check_lambdas(lambdas, deltas.shape[0])
    return torch.stack(_core.tall_masks_list(list(deltas.unbind(0)), merged, lams))


def consensus(masks: torch.Tensor, k: int) -> torch.Tensor:
    r"""Consensus mask: the coordinates selected by at least ``k`` task masks.

    .. math::

        m_{\mathrm{consensus}} = \mathbb{1}\left[\sum_{t=1}^{T} m_t \ge k\right]

    ``k=1`` is the union of the masks, ``k=n_tasks`` their intersection; the paper's default
    ``k=2`` removes the "selfish" weights (used by one task) and the "catastrophic" weights
    (used by none). Consensus merging multiplies the merged delta by this mask (Wang et al.,
    ICML 2024, https://arxiv.org/abs/2405.07813).

    Shapes:
        - ``masks``: ``[n_tasks, *shape]``, boolean
        - output: ``[*shape]``, boolean

    Args:
        masks: Stacked boolean masks, one per task.
        k: Minimum number of masks a coordinate must be in, in ``[1, n_tasks]``.

    Returns:
        The consensus mask.

    Raises:
        WeightspaceValueError: if ``masks`` is not boolean or ``k`` is out of range.

    Example:
        >>> import torch
        >>> consensus(torch.tensor([[True, True, False], [True, False, False]]), k=2)
        tensor([ True, False, False])
    """
    masks = check_stacked(masks, "masks", floating=False)
    if masks.dtype != torch.bool:
        raise WeightspaceValueError(
            f"`masks` must be a boolean tensor, got dtype {masks.dtype}; convert it with .bool()"
        )
    k = check_k(k, masks.shape[0])
    return masks.sum(dim=0) >= k


def pack_mask(mask: torch.Tensor) -> tuple[torch.Tensor, tuple[int, ...]]:
    r"""Pack a boolean mask into bytes, 8 mask entries per byte.

    The mask is flattened in row-major order and padded with ``False`` to a multiple of 8.
    Bit order is little-endian: bit ``i`` (value :math:`2^i`) of byte ``j`` holds flat entry
    ``8 j + i`` — the layout of ``numpy.packbits(mask, bitorder="little")``.

    Shapes:
        - ``mask``: ``[*shape]``, boolean
        - output: ``[ceil(numel / 8)]``, ``torch.uint8``, and ``shape`` as a tuple

    Args:
        mask: A boolean tensor of any shape.

    Returns:
        The packed bytes and the original shape, to pass to :func:`unpack_mask`.

    Raises:
        WeightspaceValueError: if ``mask`` is not a boolean tensor.

    Example:
        >>> import torch
        >>> packed, shape = pack_mask(torch.tensor([True, False, True, True]))
        >>> packed, shape
        (tensor([13], dtype=torch.uint8), (4,))
    """
    if not isinstance(mask, torch.Tensor) or mask.dtype != torch.bool:
        got = mask.dtype if isinstance(mask, torch.Tensor) else type(mask).__name__
        raise WeightspaceValueError(
            f"`mask` must be a boolean tensor, got {got}; convert it with .bool()"
        )
    return _core.pack_bits(mask), tuple(mask.shape)


def unpack_mask(packed: torch.Tensor, shape: Sequence[int]) -> torch.Tensor:
    """Unpack bytes written by :func:`pack_mask` into a boolean mask of ``shape``.

    Shapes:
        - ``packed``: ``[ceil(prod(shape) / 8)]``, ``torch.uint8``
        - output: ``shape``, boolean

    Args:
        packed: The packed bytes.
        shape: The shape of the original mask.

    Returns:
        The boolean mask, equal to the packed one.

    Raises:
        WeightspaceValueError: if ``packed`` is not a 1-D uint8 tensor of the right length.

    Example:
        >>> import torch
        >>> unpack_mask(torch.tensor([13], dtype=torch.uint8), (4,))
        tensor([ True, False,  True,  True])
    """
    dims = tuple(int(s) for s in shape)
    if any(s < 0 for s in dims):
        raise WeightspaceValueError(f"`shape` must have non-negative sizes, got {dims}")
    numel = 1
    for size in dims:
        numel *= size
    expected = (numel + 7) // 8
    if (
        not isinstance(packed, torch.Tensor)
        or packed.dtype != torch.uint8
        or packed.ndim != 1
        or packed.numel() != expected
    ):
        got = (
            f"dtype {packed.dtype} and shape {tuple(packed.shape)}"
            if isinstance(packed, torch.Tensor)
            else type(packed).__name__
        )
        raise WeightspaceValueError(
            f"`packed` must be a 1-D torch.uint8 tensor of {expected} bytes for a mask of shape "
            f"{dims}, got {got}; pass the output of pack_mask unchanged"
        )
    return _core.unpack_bits(packed, dims)
