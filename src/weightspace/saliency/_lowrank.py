r"""Low-rank attribution: which directions of each weight matrix carry a behaviour.

The low-rank counterpart of the set difference of two masks, after Wei et al., "Assessing the
Brittleness of Safety Alignment via Pruning and Low-Rank Modifications" (ICML 2024,
`arXiv:2402.05162 <https://arxiv.org/abs/2402.05162>`_). For a linear layer with weight
:math:`W` and inputs :math:`X` on some data, the leading left singular vectors of the outputs
:math:`W X^\top` span the directions the layer writes to on that data (:func:`output_bases`;
"ActSVD"). With an orthonormal safety basis :math:`U_s` and utility basis :math:`U_u` of a layer,

.. math::

    \Delta W = (I - U_u U_u^\top)\, U_s U_s^\top W

is the part of :math:`W` that writes to safety directions outside the utility ones
(:func:`lowrank_difference`); :math:`W - \Delta W` removes it. Without a utility basis,
:math:`\Delta W = U_s U_s^\top W` projects the whole span out. :func:`task_vector_bases` gives
the other source of directions: the leading left singular vectors of each matrix of a task
vector (such as the one an alignment fine-tune leaves).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Collection, Mapping

import torch
from torch import Tensor, nn

from weightspace._errors import WeightspaceValueError
from weightspace.saliency._masks import _count
from weightspace.saliency._scores import _batches, _check_model, _progress
from weightspace.train import Data
from weightspace.train._batches import inputs_of, to_device

__all__ = ["lowrank_difference", "output_bases", "random_mask", "task_vector_bases"]

logger = logging.getLogger(__name__)


def _check_rank(rank: object) -> int:
    if isinstance(rank, bool) or not isinstance(rank, int) or rank < 1:
        raise WeightspaceValueError(f"`rank` must be a positive int, got {rank!r}")
    return rank


def _top_vectors(gram: Tensor, rank: int) -> Tensor:
    """Leading eigenvectors of a symmetric PSD matrix, as columns, largest eigenvalue first."""
    values, vectors = torch.linalg.eigh(gram)
    order = torch.argsort(values, descending=True, stable=True)[: min(rank, gram.shape[0])]
    top: Tensor = vectors[:, order].to(torch.float32).contiguous()
    return top


def output_bases(
    model: nn.Module,
    data: Data,
    rank: int,
    *,
    names: Collection[str] | None = None,
    batch_size: int = 16,
    progress: bool = False,
) -> dict[str, Tensor]:
    r"""Leading left singular vectors of each linear layer's outputs :math:`W X^\top` on ``data``.

    The inputs of every ``nn.Linear`` whose ``weight`` is a trainable parameter of ``model``
    (under its ``named_parameters`` name; a weight tied to another module's is scored once,
    under its first name) are collected through forward pre-hooks into the Gram matrix
    :math:`C = X^\top X` (all tokens of all examples as rows, float64); the basis is the
    ``rank`` leading eigenvectors of :math:`W C W^\top = (W X^\top)(W X^\top)^\top`, i.e. the
    left singular vectors of the outputs without bias. The model is called on
    ``inputs_of(batch)`` in eval mode without gradients and is not changed.

    Args:
        model: The network.
        data: Data in the contract of :func:`weightspace.train.batches` (targets ignored).
        rank: Directions per layer (capped at the layer's output size).
        names: Only these weights (``named_parameters`` names); default every linear weight.
        batch_size: Examples per forward pass.
        progress: Show a progress bar.

    Returns:
        ``weight name -> [d_out, r]`` float32 orthonormal columns.

    Raises:
        WeightspaceValueError: if ``rank`` is not a positive int, ``model`` has no trainable
            parameter, or ``names`` names a weight that is not a linear layer's.

    Shapes:
        - output: ``[d_out, min(rank, d_out)]`` per linear weight.

    Example:
        >>> import torch
        >>> net = torch.nn.Linear(3, 3, bias=False)
        >>> _ = torch.nn.init.eye_(net.weight)
        >>> x = torch.tensor([[2.0, 0.0, 0.0], [0.0, 1.0, 0.0]])
        >>> u = output_bases(net, (x, torch.zeros(2)), rank=1)["weight"]
        >>> u.abs().flatten().tolist()
        [1.0, 0.0, 0.0]
    """
    rank = _check_rank(rank)
    params = _check_model(model)
    by_id = {id(p): n for n, p in params}
    layers: dict[str, nn.Linear] = {}
    for _, module in model.named_modules():
        if isinstance(module, nn.Linear) and id(module.weight) in by_id:
            layers.setdefault(by_id[id(module.weight)], module)
    if names is not None:
        if isinstance(names, str):
            raise WeightspaceValueError(f"`names` must be a collection of names, got {names!r}")
        unknown = sorted(set(names) - set(layers))
        if unknown:
            raise WeightspaceValueError(
                f"`names` holds {len(unknown)} names that are not linear weights of `model`: "
                f"{unknown[:5]}; choose among {sorted(layers)[:5]}..."
            )
        layers = {n: m for n, m in layers.items() if n in set(names)}
    grams: dict[str, Tensor] = {}
    handles = []

    def hook_for(name: str) -> Callable[..., None]:
        def hook(_: nn.Module, inputs: tuple[Tensor, ...]) -> None:
            x = inputs[0].detach().reshape(-1, inputs[0].shape[-1]).to(torch.float64)
            g = x.T @ x
            grams[name] = grams[name] + g if name in grams else g

        return hook

    for name, module in layers.items():
        handles.append(module.register_forward_pre_hook(hook_for(name)))
    was_training = model.training
    model.eval()
    device = params[0][1].device
    try:
        with torch.no_grad():
            for batch in _progress(
                _batches(data, batch_size, "saliency.output_bases"), progress, "bases"
            ):
                model(to_device(inputs_of(batch), device))
    finally:
        for handle in handles:
            handle.remove()
        model.train(was_training)
    out: dict[str, Tensor] = {}
    for name, module in layers.items():
        if name not in grams:
            continue
        w = module.weight.detach().to(torch.float64)
        out[name] = _top_vectors(w @ grams[name] @ w.T, rank)
    logger.info("output bases of %d linear layers at rank %d", len(out), rank)
    return out


def task_vector_bases(deltas: Mapping[str, Tensor], rank: int) -> dict[str, Tensor]:
    r"""Leading left singular vectors of every matrix of a task vector (or any state dict).

    Args:
        deltas: ``name -> tensor`` (a :class:`~weightspace.TaskVector` works); tensors that
            are not 2-D, or are all zero, are skipped.
        rank: Directions per matrix (capped at its smaller side).

    Returns:
        ``name -> [d_out, r]`` float32 orthonormal columns, largest singular value first.

    Raises:
        WeightspaceValueError: if ``rank`` is not a positive int or no 2-D tensor is nonzero.

    Shapes:
        - output: ``[d_out, min(rank, d_out, d_in)]`` per matrix.

    Example:
        >>> import torch
        >>> delta = {"w": torch.outer(torch.tensor([0.0, 3.0]), torch.tensor([1.0, 1.0, 0.0]))}
        >>> task_vector_bases(delta, rank=1)["w"].abs().flatten().tolist()
        [0.0, 1.0]
    """
    rank = _check_rank(rank)
    out: dict[str, Tensor] = {}
    for name in deltas:
        t = deltas[name]
        if not isinstance(t, Tensor) or t.ndim != 2 or not bool(t.any()):
            continue
        u, _, _ = torch.linalg.svd(t.detach().to(torch.float64), full_matrices=False)
        out[name] = u[:, : min(rank, min(t.shape))].to(torch.float32).contiguous()
    if not out:
        raise WeightspaceValueError(
            "`deltas` holds no nonzero 2-D tensor; pass the matrices of a task vector"
        )
    return out


def _weights(model: nn.Module | Mapping[str, Tensor]) -> Mapping[str, Tensor]:
    if isinstance(model, nn.Module):
        return dict(model.named_parameters())
    if isinstance(model, Mapping):
        return model
    raise WeightspaceValueError(
        f"`weights` must be an nn.Module or a mapping of tensors, got {type(model).__name__}"
    )


def lowrank_difference(
    weights: nn.Module | Mapping[str, Tensor],
    safety: Mapping[str, Tensor],
    utility: Mapping[str, Tensor] | None = None,
) -> dict[str, Tensor]:
    r"""The part of each weight that writes to ``safety`` directions outside ``utility`` ones.

    For each name in ``safety``,

    .. math::

        \Delta W = (I - U_u U_u^\top)\, U_s U_s^\top W ,

    with :math:`U_s = ` ``safety[name]`` and :math:`U_u = ` ``utility[name]`` (taken as
    zero when ``utility`` is ``None`` or lacks the name). Subtracting the result removes the
    safety-only rank: ``TaskVector(out).apply_to(weights, scale=-1.0)``.

    Args:
        weights: A model or ``name -> tensor``.
        safety: ``name -> [d_out, r_s]`` orthonormal columns (from :func:`output_bases` or
            :func:`task_vector_bases`).
        utility: ``name -> [d_out, r_u]`` orthonormal columns, or ``None``.

    Returns:
        ``name -> float32 Delta W`` of each weight's shape, for the names of ``safety``.

    Raises:
        WeightspaceValueError: if a name of ``safety`` is missing from ``weights`` or a basis
            does not match its weight's output size.

    Shapes:
        - safety[name], utility[name]: ``[d_out, r]``.
        - output[name]: ``[d_out, d_in]``.

    Example:
        >>> import torch
        >>> e = torch.eye(3)
        >>> d = lowrank_difference({"w": e}, {"w": e[:, :2]}, {"w": e[:, 1:2]})
        >>> d["w"].diagonal().tolist()
        [1.0, 0.0, 0.0]
    """
    state = _weights(weights)
    out: dict[str, Tensor] = {}
    for name, u_s in safety.items():
        if name not in state:
            raise WeightspaceValueError(
                f"`safety` has a basis for {name!r}, which `weights` lacks; pass bases computed "
                "on the same model"
            )
        w = state[name].detach().to(torch.float64)
        if w.ndim != 2 or u_s.ndim != 2 or u_s.shape[0] != w.shape[0]:
            raise WeightspaceValueError(
                f"`safety[{name!r}]` has shape {tuple(u_s.shape)}, not [d_out={w.shape[0]}, r] "
                f"for a weight of shape {tuple(w.shape)}"
            )
        us = u_s.detach().to(torch.float64)
        delta = us @ (us.T @ w)
        if utility is not None and name in utility:
            uu = utility[name].detach().to(torch.float64)
            if uu.ndim != 2 or uu.shape[0] != w.shape[0]:
                raise WeightspaceValueError(
                    f"`utility[{name!r}]` has shape {tuple(uu.shape)}, not [d_out={w.shape[0]}, r]"
                )
            delta = delta - uu @ (uu.T @ delta)
        out[name] = delta.to(torch.float32)
    return out


def random_mask(
    template: Mapping[str, Tensor],
    *,
    k: int | None = None,
    fraction: float | None = None,
    seed: int = 0,
) -> dict[str, Tensor]:
    """A mask of ``k`` (or a ``fraction`` of) entries drawn uniformly at random over all tensors.

    The baseline of an attribution: the same count of weights, chosen without scores. The
    draw is a seeded random permutation of all entries, in ``template``'s order.

    Args:
        template: ``name -> tensor`` giving names and shapes (scores or a mask).
        k: How many entries to select.
        fraction: Or the fraction of all entries (``round(fraction * n)``).
        seed: Seed of the draw.

    Returns:
        ``name -> bool tensor`` with exactly ``k`` entries selected.

    Raises:
        WeightspaceValueError: if not exactly one of ``k`` and ``fraction`` is given or it is
            out of range.

    Example:
        >>> import torch
        >>> m = random_mask({"a": torch.zeros(3, 4), "b": torch.zeros(5)}, k=6, seed=1)
        >>> int(m["a"].sum() + m["b"].sum())
        6
    """
    total = sum(t.numel() for t in template.values())
    count = _count(k, fraction, total)
    order = torch.randperm(total, generator=torch.Generator().manual_seed(seed))
    flat = torch.zeros(total, dtype=torch.bool)
    flat[order[:count]] = True
    out: dict[str, Tensor] = {}
    start = 0
    for name, t in template.items():
        out[name] = flat[start : start + t.numel()].reshape(t.shape).clone()
        start += t.numel()
    return out
