r"""Per-parameter importance scores: gradient magnitude, SNIP, empirical Fisher, Wanda.

Every function returns a new ``dict`` mapping the name of each trainable parameter of the
model (``requires_grad=True``, in ``named_parameters`` order) to a non-negative ``float32``
tensor of the parameter's shape. The model is not changed: gradients are computed with
:func:`torch.autograd.grad` (``.grad`` attributes are left alone), the model runs in eval mode
and its previous mode is restored.

Data comes in the batching contract of :func:`weightspace.train.batches`, and ``loss`` follows
the library's one convention, ``loss(model, batch) -> batch mean``
(:data:`weightspace.train.LossFn`); a loss of ``(logits, targets)`` is adapted by
:func:`weightspace.train.logits_loss` (or, for one release, passed as ``logits_loss=``).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from weightspace import train
from weightspace._deprecation import warn_deprecated
from weightspace._errors import WeightspaceValueError
from weightspace.train import Data, LossFn
from weightspace.train._batches import (
    Source,
    batch_len,
    inputs_of,
    legacy_batch_list,
    to_device,
)

__all__ = ["LossFn", "fisher", "gradient", "iter_snip", "iter_wanda", "snip", "wanda"]

logger = logging.getLogger(__name__)

LogitsLoss = Callable[[Tensor, Tensor], Tensor]


def _loss_fn(loss: LossFn | None, logits_loss: LogitsLoss | None, func: str) -> LossFn:
    """The loss to use: ``loss``, the deprecated ``logits_loss`` adapted, or cross-entropy."""
    if logits_loss is not None:
        if loss is not None:
            raise TypeError(f"{func}() got both `logits_loss` (deprecated) and `loss`; pass `loss`")
        warn_deprecated(
            f"{func}(logits_loss=fn)", f"{func}(loss=train.logits_loss(fn))", since="0.1"
        )
        return train.logits_loss(logits_loss)
    if loss is None:
        return train.cross_entropy_loss
    if not callable(loss):
        raise WeightspaceValueError(
            f"`loss` must be a callable (model, batch) -> tensor, got {type(loss).__name__}"
        )
    return loss


def _call_loss(loss_fn: LossFn, model: nn.Module, batch: Any) -> Tensor:
    try:
        return loss_fn(model, batch)
    except TypeError as err:
        raise WeightspaceValueError(
            f"`loss` failed when called as loss(model, batch) ({err}); since weightspace 0.1 a "
            "saliency loss takes the model and a batch, as in weightspace.train: wrap a loss of "
            "(logits, targets) in `train.logits_loss(fn)`"
        ) from err


def _batches(data: Data, batch_size: int, func: str) -> Any:
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise WeightspaceValueError(f"`batch_size` must be a positive int, got {batch_size!r}")
    return Source(legacy_batch_list(data, func), None).iterate(batch_size)


def _check_model(model: object) -> list[tuple[str, nn.Parameter]]:
    if not isinstance(model, nn.Module):
        raise WeightspaceValueError(
            f"`model` must be an nn.Module, got {type(model).__name__}; scores need a forward pass"
        )
    params = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    if not params:
        raise WeightspaceValueError(
            "`model` has no trainable parameter (all have requires_grad=False); nothing to score"
        )
    return params


def _progress(iterable: Any, progress: bool, desc: str) -> Any:
    from tqdm.auto import tqdm

    return tqdm(iterable, desc=desc, disable=not progress, leave=False)


def _summed_gradient(
    model: nn.Module,
    data: Data,
    loss_fn: LossFn,
    batch_size: int,
    progress: bool,
    desc: str,
) -> tuple[list[tuple[str, nn.Parameter]], list[Tensor]]:
    """Gradient of the mean loss over all of ``data`` (accumulated batch by batch)."""
    params = _check_model(model)
    total = [torch.zeros_like(p, dtype=torch.float32) for _, p in params]
    count = 0
    device = params[0][1].device
    was_training = model.training
    model.eval()
    try:
        for batch in _progress(_batches(data, batch_size, f"saliency.{desc}"), progress, desc):
            batch = to_device(batch, device)
            k = batch_len(batch)
            value = _call_loss(loss_fn, model, batch) * k
            grads = torch.autograd.grad(value, [p for _, p in params], allow_unused=True)
            for acc, g in zip(total, grads, strict=True):
                if g is not None:
                    acc.add_(g.detach().to(torch.float32))
            count += k
    finally:
        model.train(was_training)
    return params, [t / count for t in total]


def gradient(
    model: nn.Module,
    data: Data,
    *,
    loss: LossFn | None = None,
    batch_size: int = 256,
    progress: bool = False,
    logits_loss: LogitsLoss | None = None,
) -> dict[str, Tensor]:
    r"""Gradient-magnitude saliency: :math:`s = |\nabla_\theta L(\theta; D)|`.

    The saliency of SalUn (Fan et al., "SalUn: Empowering Machine Unlearning via
    Gradient-based Weight Saliency in Both Image Classification and Generation", ICLR 2024,
    `arXiv:2310.12508 <https://arxiv.org/abs/2310.12508>`_): the magnitude of the gradient of
    the mean loss over the data set :math:`D` (the forget set, for unlearning),

    .. math::

        s_i = \Bigl|\frac{\partial}{\partial\theta_i}
              \frac{1}{|D|}\sum_{(x,y)\in D} \ell(f_\theta(x), y)\Bigr| .

    Args:
        model: The network (not modified).
        data: Labelled data in the contract of :func:`weightspace.train.batches` (an
            ``(inputs, targets)`` pair, a ``Dataset``, a ``DataLoader``...).
        loss: ``loss(model, batch)``, a batch mean; default
            :func:`weightspace.train.cross_entropy_loss`.
        batch_size: Examples per batch (for a pair or a ``Dataset``).
        progress: Show a progress bar.
        logits_loss: Deprecated: a loss of ``(logits, targets)``; pass
            ``loss=train.logits_loss(fn)`` instead (removed in 0.2).

    Returns:
        ``name -> float32 scores`` of each trainable parameter's shape.

    Raises:
        WeightspaceValueError: if ``model`` is not a module or has no trainable parameter, or
            ``data`` is malformed or empty.

    Shapes:
        - data: inputs ``[N, *]``, targets ``[N]`` (or what ``loss`` takes).
        - output: one tensor per parameter, of its shape.

    Example:
        >>> import torch
        >>> net = torch.nn.Linear(3, 2)
        >>> s = gradient(net, (torch.randn(8, 3), torch.randint(0, 2, (8,))))
        >>> s["weight"].shape, bool((s["weight"] >= 0).all())
        (torch.Size([2, 3]), True)
    """
    loss_fn = _loss_fn(loss, logits_loss, "saliency.gradient")
    params, grads = _summed_gradient(model, data, loss_fn, batch_size, progress, "gradient")
    return {name: g.abs() for (name, _), g in zip(params, grads, strict=True)}


def snip(
    model: nn.Module,
    data: Data,
    *,
    loss: LossFn | None = None,
    batch_size: int = 256,
    progress: bool = False,
    logits_loss: LogitsLoss | None = None,
) -> dict[str, Tensor]:
    r"""SNIP connection sensitivity: :math:`s = |\theta \odot \nabla_\theta L(\theta; D)|`.

    Lee et al., "SNIP: Single-shot Network Pruning based on Connection Sensitivity", ICLR 2019
    (`arXiv:1810.02340 <https://arxiv.org/abs/1810.02340>`_): the first-order change of the
    loss when a weight is removed,

    .. math::

        s_i = \Bigl|\theta_i \, \frac{\partial L(\theta; D)}{\partial\theta_i}\Bigr| .

    Args:
        model: The network (not modified).
        data: Labelled data in the contract of :func:`weightspace.train.batches` (an
            ``(inputs, targets)`` pair, a ``Dataset``, a ``DataLoader``...).
        loss: ``loss(model, batch)``, a batch mean; default
            :func:`weightspace.train.cross_entropy_loss`.
        batch_size: Examples per batch (for a pair or a ``Dataset``).
        progress: Show a progress bar.
        logits_loss: Deprecated: a loss of ``(logits, targets)``; pass
            ``loss=train.logits_loss(fn)`` instead (removed in 0.2).

    Returns:
        ``name -> float32 scores`` of each trainable parameter's shape.

    Raises:
        WeightspaceValueError: if ``model`` is not a module or has no trainable parameter, or
            ``data`` is malformed or empty.

    Shapes:
        - output: one tensor per parameter, of its shape.

    Example:
        >>> import torch
        >>> net = torch.nn.Linear(3, 2)
        >>> s = snip(net, (torch.randn(8, 3), torch.randint(0, 2, (8,))))
        >>> sorted(s)
        ['bias', 'weight']
    """
    loss_fn = _loss_fn(loss, logits_loss, "saliency.snip")
    return dict(_snip_scores(model, data, loss_fn, batch_size, progress))


def _snip_scores(
    model: nn.Module, data: Data, loss_fn: LossFn, batch_size: int, progress: bool
) -> Iterator[tuple[str, Tensor]]:
    """SNIP scores one parameter at a time; each gradient is dropped once its score is out."""
    params, grads = _summed_gradient(model, data, loss_fn, batch_size, progress, "snip")
    for i, (name, p) in enumerate(params):
        g = grads[i]
        grads[i] = g.new_empty(0)  # free the gradient before the next score is made
        yield name, (p.detach().to(torch.float32) * g).abs()
        del g


def iter_snip(
    model: nn.Module,
    data: Data,
    *,
    loss: LossFn | None = None,
    batch_size: int = 256,
    progress: bool = False,
) -> Iterator[tuple[str, Tensor]]:
    r"""SNIP scores of :func:`snip`, yielded one parameter at a time to save memory.

    The gradient of the whole data set is accumulated first (one float32 copy of the trainable
    parameters), then each score is made, yielded and its gradient freed, so a consumer that
    keeps only what it needs (:func:`top_ranking`, :func:`layer_top_k`) never holds a full
    set of scores. The values are exactly those of :func:`snip` on the same arguments, in
    ``named_parameters`` order. Nothing is computed before the first item is asked for.

    Example:
        >>> import torch
        >>> net = torch.nn.Linear(3, 2)
        >>> batch = (torch.randn(8, 3), torch.randint(0, 2, (8,)))
        >>> lazy = dict(iter_snip(net, batch))
        >>> all(torch.equal(lazy[n], s) for n, s in snip(net, batch).items())
        True

    Args:
        model: The network (not modified).
        data: Labelled data in the contract of :func:`weightspace.train.batches`.
        loss: ``loss(model, batch)``, a batch mean; default
            :func:`weightspace.train.cross_entropy_loss`.
        batch_size: Examples per batch (for a pair or a ``Dataset``).
        progress: Show a progress bar.

    Yields:
        ``(name, float32 scores)`` of each trainable parameter.

    Raises:
        WeightspaceValueError: if ``model`` is not a module or has no trainable parameter, or
            ``data`` is malformed or empty (on the first item).
    """
    loss_fn = _loss_fn(loss, None, "saliency.iter_snip")
    yield from _snip_scores(model, data, loss_fn, batch_size, progress)


def fisher(
    model: nn.Module,
    data: Data,
    *,
    loss: LossFn | None = None,
    batch_size: int = 64,
    progress: bool = False,
    logits_loss: LogitsLoss | None = None,
) -> dict[str, Tensor]:
    r"""Diagonal of the empirical Fisher information: the mean squared per-example gradient.

    .. math::

        F_i = \frac{1}{|D|}\sum_{(x,y)\in D}
              \Bigl(\frac{\partial \ell(f_\theta(x), y)}{\partial\theta_i}\Bigr)^2

    with :math:`\ell` the per-example loss (cross-entropy, i.e. :math:`-\log p_\theta(y|x)`,
    by default) at the true labels; as in elastic weight consolidation (Kirkpatrick et al.,
    "Overcoming catastrophic forgetting in neural networks", PNAS 2017,
    `arXiv:1612.00796 <https://arxiv.org/abs/1612.00796>`_). Per-example gradients are
    computed with :func:`torch.func.vmap` over :func:`torch.func.grad`, each example passed to
    the model as a batch of one, so the model's forward must be traceable by ``torch.func``.

    Args:
        model: The network (not modified).
        data: Labelled data in the contract of :func:`weightspace.train.batches`.
        loss: ``loss(model, batch)``, a batch mean, called on each example as a batch of
            one; default :func:`weightspace.train.cross_entropy_loss`.
        batch_size: Examples per vectorised chunk (for a pair or a ``Dataset``).
        progress: Show a progress bar.
        logits_loss: Deprecated: a loss of ``(logits, targets)``; pass
            ``loss=train.logits_loss(fn)`` instead (removed in 0.2).

    Returns:
        ``name -> float32 scores`` of each trainable parameter's shape.

    Raises:
        WeightspaceValueError: if ``model`` is not a module or has no trainable parameter, or
            ``data`` is malformed or empty.

    Shapes:
        - output: one tensor per parameter, of its shape.

    Example:
        >>> import torch
        >>> net = torch.nn.Linear(3, 2)
        >>> f = fisher(net, (torch.randn(8, 3), torch.randint(0, 2, (8,))))
        >>> bool((f["bias"] >= 0).all())
        True
    """
    from torch.func import grad, vmap

    params = _check_model(model)
    loss_fn = _loss_fn(loss, logits_loss, "saliency.fisher")
    names = [n for n, _ in params]
    frozen = {n: p.detach() for n, p in model.named_parameters() if not p.requires_grad}
    buffers = {n: b.detach() for n, b in model.named_buffers()}

    def one(theta: dict[str, Tensor], example: Any) -> Tensor:
        bound = _Bound(model, {**theta, **frozen, **buffers})
        value: Tensor = _call_loss(loss_fn, bound, _unsqueeze(example))
        return value

    per_example = vmap(grad(one), in_dims=(None, 0))
    theta = {n: p.detach() for n, p in params}
    total = {n: torch.zeros_like(p, dtype=torch.float32) for n, p in params}
    count = 0
    device = params[0][1].device
    was_training = model.training
    model.eval()
    try:
        for batch in _progress(_batches(data, batch_size, "saliency.fisher"), progress, "fisher"):
            batch = to_device(batch, device)
            grads = per_example(theta, tuple(batch) if isinstance(batch, list) else batch)
            for n in names:
                total[n].add_(grads[n].detach().to(torch.float32).square().sum(0))
            count += batch_len(batch)
    finally:
        model.train(was_training)
    return {n: t / count for n, t in total.items()}


class _Bound(nn.Module):
    """``model`` run with the given parameters and buffers (for ``torch.func``)."""

    def __init__(self, model: nn.Module, state: dict[str, Tensor]) -> None:
        super().__init__()
        self.inner = [model]  # a list: not registered as a submodule
        self.state = state

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        from torch.func import functional_call

        return functional_call(self.inner[0], self.state, args, kwargs)


def _unsqueeze(example: Any) -> Any:
    """One example as a batch of one (tensors nested in tuples, lists and dicts)."""
    if isinstance(example, Tensor):
        return example.unsqueeze(0)
    if isinstance(example, (tuple, list)):
        return type(example)(_unsqueeze(e) for e in example)
    if isinstance(example, dict):
        return {k: _unsqueeze(v) for k, v in example.items()}
    return example


def wanda(
    model: nn.Module,
    data: Data,
    *,
    batch_size: int = 256,
    progress: bool = False,
) -> dict[str, Tensor]:
    r"""Wanda importance: weight magnitude times the norm of the input feature it multiplies.

    Sun et al., "A Simple and Effective Pruning Approach for Large Language Models", ICLR 2024
    (`arXiv:2306.11695 <https://arxiv.org/abs/2306.11695>`_). For a linear layer with weight
    :math:`W \in \mathbb{R}^{d_\mathrm{out} \times d_\mathrm{in}}` and inputs :math:`X` (all
    examples, and all tokens of each example, stacked as rows),

    .. math::

        S_{ij} = |W_{ij}| \cdot \lVert X_{:,j} \rVert_2 .

    For a ``Conv2d`` the inputs are the unfolded patches (:func:`torch.nn.functional.unfold`
    with the layer's padding, stride and dilation; zero padding), so :math:`j` runs over
    (input channel, kernel row, kernel column) within the layer's group. Only the ``weight``
    of ``nn.Linear`` and ``nn.Conv2d`` modules gets a score; every other trainable parameter
    (biases, norms, embeddings) scores zero, so that a top-k mask never selects it. No
    gradient is computed, and the loss plays no part (targets are ignored).

    Args:
        model: The network (not modified).
        data: Data in the contract of :func:`weightspace.train.batches` (targets, if any,
            are ignored; a tensor of inputs will do).
        batch_size: Examples per batch (for a pair, a tensor or a ``Dataset``).
        progress: Show a progress bar.

    Returns:
        ``name -> float32 scores`` of each trainable parameter's shape.

    Raises:
        WeightspaceValueError: if ``model`` is not a module or has no trainable parameter, or
            ``data`` is malformed or empty.

    Shapes:
        - output: one tensor per parameter, of its shape.

    Example:
        >>> import torch
        >>> net = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.ReLU(), torch.nn.Linear(4, 2))
        >>> s = wanda(net, (torch.randn(8, 3), torch.zeros(8, dtype=torch.long)))
        >>> s["0.weight"].shape, float(s["0.bias"].sum())
        (torch.Size([4, 3]), 0.0)
    """
    return dict(_wanda_scores(model, data, batch_size, progress))


def _wanda_scores(
    model: nn.Module, data: Data, batch_size: int, progress: bool
) -> Iterator[tuple[str, Tensor]]:
    """Wanda scores one parameter at a time, from the per-layer input norms."""
    params = _check_model(model)
    param_names = {n for n, _ in params}
    sums: dict[str, Tensor] = {}
    layers: dict[str, nn.Linear | nn.Conv2d] = {}
    handles = []

    def hook_for(name: str, module: nn.Linear | nn.Conv2d) -> Callable[..., None]:
        def hook(_: nn.Module, inputs: tuple[Tensor, ...]) -> None:
            x = inputs[0].detach().to(torch.float32)
            if isinstance(module, nn.Conv2d):
                cols = F.unfold(
                    x,
                    module.kernel_size,
                    dilation=module.dilation,
                    padding=module.padding,  # type: ignore[arg-type]
                    stride=module.stride,
                )  # [N, C * kh * kw, L]
                sq = cols.square().sum(dim=(0, 2))
            else:
                sq = x.reshape(-1, x.shape[-1]).square().sum(0)
            sums[name] = sums[name] + sq if name in sums else sq

        return hook

    for mod_name, module in model.named_modules():
        if isinstance(module, (nn.Linear, nn.Conv2d)):
            w_name = f"{mod_name}.weight" if mod_name else "weight"
            if w_name in param_names:
                layers[w_name] = module
                handles.append(module.register_forward_pre_hook(hook_for(w_name, module)))
    was_training = model.training
    model.eval()
    try:
        device = params[0][1].device
        with torch.no_grad():
            for batch in _progress(_batches(data, batch_size, "saliency.wanda"), progress, "wanda"):
                model(to_device(inputs_of(batch), device))
    finally:
        for handle in handles:
            handle.remove()
        model.train(was_training)
    for name, p in params:
        yield name, _wanda_score(p, layers.get(name), sums.get(name))


def _wanda_score(p: Tensor, module: nn.Linear | nn.Conv2d | None, sq: Tensor | None) -> Tensor:
    w = p.detach().to(torch.float32)
    if module is None or sq is None:
        return torch.zeros_like(w)
    norms = sq.sqrt()
    if isinstance(module, nn.Conv2d):
        groups = module.groups
        out_ch = w.shape[0]
        per_group = w.reshape(groups, out_ch // groups, -1)
        scaled = per_group.abs() * norms.reshape(groups, 1, -1)
        return scaled.reshape(w.shape)
    return w.abs() * norms.reshape(1, -1)


def iter_wanda(
    model: nn.Module,
    data: Data,
    *,
    batch_size: int = 256,
    progress: bool = False,
) -> Iterator[tuple[str, Tensor]]:
    r"""Wanda scores of :func:`wanda`, yielded one parameter at a time to save memory.

    All forward passes run first and keep only each layer's squared input norms (one vector of
    the input size per layer); each score is then made when it is asked for. The values are
    exactly those of :func:`wanda` on the same arguments, in ``named_parameters`` order.
    Nothing is computed before the first item is asked for.

    Example:
        >>> import torch
        >>> net = torch.nn.Linear(3, 2)
        >>> x = torch.randn(8, 3)
        >>> [name for name, _ in iter_wanda(net, x)]
        ['weight', 'bias']

    Args:
        model: The network (not modified).
        data: Data in the contract of :func:`weightspace.train.batches` (targets ignored).
        batch_size: Examples per batch (for a pair, a tensor or a ``Dataset``).
        progress: Show a progress bar.

    Yields:
        ``(name, float32 scores)`` of each trainable parameter (zeros for parameters that are
        not the weight of an ``nn.Linear`` or ``nn.Conv2d``).

    Raises:
        WeightspaceValueError: if ``model`` is not a module or has no trainable parameter, or
            ``data`` is malformed or empty (on the first item).
    """
    yield from _wanda_scores(model, data, batch_size, progress)
