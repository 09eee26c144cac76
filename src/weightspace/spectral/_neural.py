"""Neural encodings: weight covariances of trained CNNs compared through functional maps."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any, Literal, NamedTuple

import numpy as np
import scipy.linalg
import torch
from torch import Tensor, nn

from weightspace._errors import ShapeMismatchError, WeightspaceValueError
from weightspace.spectral._basis import covariance_eigenbasis
from weightspace.spectral._common import ArrayLike, FloatArray, as_float_array, describe
from weightspace.spectral._fmap import FunctionalMap

__all__ = [
    "WeightCovariances",
    "bures_wasserstein_similarity",
    "channel_samples",
    "collect_activations",
    "linear_cka",
    "neural_encoding_map",
    "procrustes_rotation",
    "weight_covariances",
]

logger = logging.getLogger(__name__)


class WeightCovariances(NamedTuple):
    """The spatial and channel second moments of one layer's weights.

    ``spatial`` is the covariance of the ``h*w`` spatial filters (over output and input
    channels); ``channel`` is the covariance of the ``C_in`` input-channel weights (over
    outputs and positions).

    Shapes:
        - spatial: ``[h*w, h*w]``; channel: ``[C_in, C_in]``.

    Example:
        >>> import numpy as np
        >>> cov = weight_covariances(np.ones((2, 3, 1, 1)))
        >>> cov.channel.shape, float(cov.spatial[0, 0])
        ((3, 3), 1.0)
    """

    spatial: FloatArray
    channel: FloatArray


def weight_covariances(weight: ArrayLike) -> WeightCovariances:
    r"""Return the spatial and channel weight covariances of a convolution or linear layer.

    For a convolution :math:`W \in \mathbb{R}^{C_{out}\times C_{in}\times h\times w}`, with
    :math:`w_{o,c} \in \mathbb{R}^{hw}` the spatial filter and :math:`w_{o,\cdot,s} \in
    \mathbb{R}^{C_{in}}` the channel vector at position ``s``:

    .. math::

        \Sigma_{sp} = \frac{1}{C_{out} C_{in}} \sum_{o,c} w_{o,c} w_{o,c}^\top, \qquad
        \Sigma_{ch} = \frac{1}{C_{out}\, hw} \sum_{o,s} w_{o,\cdot,s} w_{o,\cdot,s}^\top.

    These are the (uncentred) second moments whose eigenvectors Guth & Ménard study ("On the
    universality of neural encodings in CNNs", ICLR 2024 Re-Align workshop; "A rainbow in deep
    network black boxes", JMLR 2024). A linear layer ``[C_out, C_in]`` is a ``1 x 1``
    convolution. Depthwise convolutions (``C_in = 1``) have a ``1 x 1`` channel covariance.

    Args:
        weight: The layer's weight (tensor or array).

    Returns:
        :class:`WeightCovariances` ``(spatial, channel)`` as ``float64`` arrays.

    Raises:
        WeightspaceValueError: if ``weight`` is not 2-D or 4-D.

    Shapes:
        - weight: ``[C_out, C_in, h, w]`` or ``[C_out, C_in]``.
        - output: ``spatial [h*w, h*w]``, ``channel [C_in, C_in]``.

    Example:
        >>> import torch
        >>> cov = weight_covariances(torch.ones(4, 2, 3, 3))
        >>> cov.spatial.shape, cov.channel.shape
        ((9, 9), (2, 2))
    """
    w = as_float_array(weight, "weight", ndim=(2, 4))
    if w.ndim == 2:
        w = w[:, :, None, None]
    c_out, c_in, h, k = w.shape
    flat_sp = w.reshape(c_out * c_in, h * k)
    spatial = flat_sp.T @ flat_sp / (c_out * c_in)
    flat_ch = w.transpose(0, 2, 3, 1).reshape(c_out * h * k, c_in)
    channel = flat_ch.T @ flat_ch / (c_out * h * k)
    return WeightCovariances(spatial, channel)


def procrustes_rotation(source: ArrayLike, target: ArrayLike, *, center: bool = True) -> FloatArray:
    r"""Return the orthogonal map that best aligns two sets of paired features.

    .. math::

        R = \arg\min_{R:\ R R^\top = I \text{ or } R^\top R = I} \|X R^\top - Y\|_F
          = U V^\top, \quad Y^\top X = U S V^\top,

    so that ``y ≈ R x`` (Schönemann 1966). It moves functions of ``X``'s channels to ``Y``'s:
    use it as the correspondence of :func:`neural_encoding_map`. With different widths, ``R``
    is semi-orthogonal (orthonormal rows or columns).

    Args:
        source: Features of network ``X`` on some inputs (rows: samples).
        target: Features of network ``Y`` on the same inputs, row for row.
        center: Subtract each side's mean first.

    Returns:
        ``R``, mapping ``X``-coordinates to ``Y``-coordinates.

    Raises:
        ShapeMismatchError: if the numbers of samples differ.

    Shapes:
        - source: ``[N, C_X]``; target: ``[N, C_Y]``; output: ``[C_Y, C_X]``.

    Example:
        >>> import numpy as np
        >>> x = np.random.default_rng(0).normal(size=(100, 3))
        >>> r = procrustes_rotation(x, x[:, [2, 0, 1]])
        >>> abs(r.round(6)).tolist()
        [[0.0, 0.0, 1.0], [1.0, 0.0, 0.0], [0.0, 1.0, 0.0]]
    """
    x = as_float_array(source, "source", ndim=2)
    y = as_float_array(target, "target", ndim=2)
    if x.shape[0] != y.shape[0]:
        raise ShapeMismatchError(
            f"`source` and `target` must hold the same samples, got {x.shape[0]} and "
            f"{y.shape[0]} rows"
        )
    if center:
        x = x - x.mean(axis=0, keepdims=True)
        y = y - y.mean(axis=0, keepdims=True)
    u, _, vt = scipy.linalg.svd(y.T @ x, full_matrices=False)
    out: FloatArray = u @ vt
    return out


def neural_encoding_map(
    source_covariance: ArrayLike,
    target_covariance: ArrayLike,
    correspondence: ArrayLike | None = None,
    *,
    k: int | None = None,
    shrinkage: float = 0.0,
) -> FunctionalMap:
    r"""Return the eigenvector inner-product matrix of two weight covariances, as a functional map.

    With :math:`\Sigma_X = \Phi_X\Lambda_X\Phi_X^\top`, :math:`\Sigma_Y = \Phi_Y\Lambda_Y
    \Phi_Y^\top` (largest variance first) and a correspondence :math:`\Pi` (the Procrustes
    rotation of :func:`procrustes_rotation`, a permutation matrix, or the identity when both
    live on the same coordinates, such as pixels or a spatial grid):

    .. math::

        C = \Phi_Y^\top \Pi\, \Phi_X, \qquad C_{ij} = \langle \phi^Y_i, \Pi\phi^X_j\rangle,

    the matrix Guth & Ménard (ICLR 2024 Re-Align workshop, OpenReview ``ofEBFOrITI``) read as
    "the eigenvectors of two networks' weight covariances are aligned". It is exactly a
    :class:`FunctionalMap` with unit mass and :math:`\Pi` in place of a point map.

    Args:
        source_covariance: :math:`\Sigma_X`.
        target_covariance: :math:`\Sigma_Y`.
        correspondence: :math:`\Pi` mapping ``X``-coordinates to ``Y``-coordinates, or
            ``None`` for the identity.
        k: Keep the ``k`` leading eigenvectors per side (default all).
        shrinkage: Shrinkage towards the identity of both covariances (see
            :func:`covariance_eigenbasis`).

    Returns:
        The :class:`FunctionalMap` (descending covariance bases).

    Raises:
        ShapeMismatchError: if ``correspondence`` is not ``[d_Y, d_X]`` (or is ``None`` with
            ``d_X != d_Y``).

    Shapes:
        - source_covariance: ``[d_X, d_X]``; target_covariance: ``[d_Y, d_Y]``.
        - correspondence: ``[d_Y, d_X]``; output matrix: ``[k, k]``.

    Example:
        >>> import numpy as np
        >>> s = np.diag([3.0, 2.0, 1.0])
        >>> p = np.eye(3)[[1, 2, 0]]
        >>> fmap = neural_encoding_map(s, p @ s @ p.T, p)
        >>> np.abs(fmap.matrix).round(6).tolist()
        [[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]]
    """
    bx = covariance_eigenbasis(covariance=source_covariance, k=k, shrinkage=shrinkage)
    by = covariance_eigenbasis(covariance=target_covariance, k=k, shrinkage=shrinkage)
    if correspondence is None:
        if bx.n != by.n:
            raise ShapeMismatchError(
                f"covariances of different sizes ({bx.n} and {by.n}) need a `correspondence`"
            )
        correspondence = np.eye(bx.n)
    return FunctionalMap.from_correspondence(correspondence, bx, by)


def _sqrtm_psd(a: FloatArray) -> FloatArray:
    vals, vecs = np.linalg.eigh((a + a.T) * 0.5)
    out: FloatArray = (vecs * np.sqrt(np.clip(vals, 0.0, None))) @ vecs.T
    return out


def bures_wasserstein_similarity(
    source_covariance: ArrayLike,
    target_covariance: ArrayLike,
    correspondence: ArrayLike | None = None,
) -> float:
    r"""Return the normalised Bures fidelity between two covariances after alignment.

    .. math::

        F(\Sigma_X, \Sigma_Y) = \frac{\mathrm{tr}\big(A^{1/2}\Sigma_Y A^{1/2}\big)^{1/2}}
        {\sqrt{\mathrm{tr}A\ \mathrm{tr}\Sigma_Y}}, \quad A = \Pi\Sigma_X\Pi^\top,

    one minus half the squared Bures–Wasserstein distance between the trace-normalised
    covariances (Bhatia, Jain & Lim, "On the Bures–Wasserstein distance between positive
    definite matrices", Expo. Math. 2019). Equals
    :meth:`FunctionalMap.bures_wasserstein_similarity` of :func:`neural_encoding_map` with
    full bases and an orthogonal :math:`\Pi`.

    Args:
        source_covariance: :math:`\Sigma_X`.
        target_covariance: :math:`\Sigma_Y`.
        correspondence: :math:`\Pi` (``[d_Y, d_X]``) or ``None`` for the identity.

    Returns:
        ``F`` in ``[0, 1]``.

    Raises:
        ShapeMismatchError: on incompatible shapes.

    Shapes:
        - source_covariance: ``[d_X, d_X]``; target_covariance: ``[d_Y, d_Y]``.

    Example:
        >>> import numpy as np
        >>> round(bures_wasserstein_similarity(np.diag([1.0, 0.0]), np.diag([0.0, 1.0])), 6)
        0.0
    """
    sx = as_float_array(source_covariance, "source_covariance", ndim=2)
    sy = as_float_array(target_covariance, "target_covariance", ndim=2)
    if correspondence is not None:
        pi = as_float_array(correspondence, "correspondence", ndim=2)
        if pi.shape != (sy.shape[0], sx.shape[0]):
            raise ShapeMismatchError(
                f"`correspondence` must be [{sy.shape[0]}, {sx.shape[0]}], got {list(pi.shape)}"
            )
        sx = pi @ sx @ pi.T
    if sx.shape != sy.shape:
        raise ShapeMismatchError(
            f"covariances must have the same shape, got {list(sx.shape)} and {list(sy.shape)}"
        )
    root = _sqrtm_psd(sx)
    inner = _sqrtm_psd(root @ sy @ root)
    denom = float(np.sqrt(np.trace(sx) * np.trace(sy)))
    return float(np.trace(inner) / denom) if denom > 0 else 0.0


def linear_cka(x: ArrayLike, y: ArrayLike) -> float:
    r"""Return linear centred kernel alignment between two representations of the same inputs.

    .. math::

        \mathrm{CKA}(X, Y) = \frac{\|Y_c^\top X_c\|_F^2}{\|X_c^\top X_c\|_F\,\|Y_c^\top Y_c\|_F}

    with column-centred features (Kornblith et al., "Similarity of neural network
    representations revisited", ICML 2019). Invariant to orthogonal transforms and isotropic
    scaling of either side; the baseline that network-similarity scores are measured against.

    Args:
        x: Features of one network (rows: inputs).
        y: Features of another network on the same inputs.

    Returns:
        CKA in ``[0, 1]``.

    Raises:
        ShapeMismatchError: if the numbers of rows differ.

    Shapes:
        - x: ``[N, d_X]``; y: ``[N, d_Y]``.

    Example:
        >>> import numpy as np
        >>> x = np.random.default_rng(0).normal(size=(50, 4))
        >>> round(linear_cka(x, 3 * x[:, ::-1]), 6)
        1.0
    """
    a = as_float_array(x, "x", ndim=2)
    b = as_float_array(y, "y", ndim=2)
    if a.shape[0] != b.shape[0]:
        raise ShapeMismatchError(
            f"`x` and `y` need the same rows, got {a.shape[0]} and {b.shape[0]}"
        )
    a = a - a.mean(axis=0, keepdims=True)
    b = b - b.mean(axis=0, keepdims=True)
    if a.shape[0] < max(a.shape[1], b.shape[1]):
        # sample-space form, cheaper when features outnumber inputs: tr(K_X K_Y) etc.
        ka, kb = a @ a.T, b @ b.T
        num = float((ka * kb).sum())
        den = float(np.linalg.norm(ka) * np.linalg.norm(kb))
    else:
        num = float(np.linalg.norm(b.T @ a) ** 2)
        den = float(np.linalg.norm(a.T @ a) * np.linalg.norm(b.T @ b))
    return num / den if den > 0 else 0.0


def collect_activations(
    model: nn.Module,
    inputs: Tensor,
    modules: Sequence[str],
    *,
    batch_size: int = 512,
    kind: Literal["output", "input"] = "output",
) -> dict[str, Tensor]:
    """Run ``model`` on ``inputs`` and return what the named submodules produce (or receive).

    The model runs in eval mode under :func:`torch.no_grad`; its mode is restored afterwards
    and nothing else is changed (hooks are removed even on error).

    Args:
        model: The network.
        inputs: A batch of inputs, split into ``batch_size`` chunks.
        modules: Names from ``model.named_modules()`` (such as ``"features.1"``).
        batch_size: Chunk size (positive).
        kind: ``"output"`` of each module, or its first positional ``"input"``.

    Returns:
        Name -> concatenated activations, on the CPU.

    Raises:
        WeightspaceValueError: if a name is unknown; the message lists the valid ones.

    Shapes:
        - inputs: ``[N, ...]``; each output: ``[N, ...]``.

    Example:
        >>> import torch
        >>> from torch import nn
        >>> net = nn.Sequential(nn.Linear(3, 4), nn.ReLU())
        >>> collect_activations(net, torch.zeros(5, 3), ["0"])["0"].shape
        torch.Size([5, 4])
    """
    named = dict(model.named_modules())
    unknown = [m for m in modules if m not in named]
    if unknown:
        valid = [n for n in named if n][:20]
        raise WeightspaceValueError(
            f"`modules` names unknown submodules {unknown}; valid names include {valid}"
        )
    if batch_size < 1:
        raise WeightspaceValueError(f"`batch_size` must be positive, got {batch_size}")
    store: dict[str, list[Tensor]] = {m: [] for m in modules}

    def hook(name: str) -> Any:
        def fn(_module: nn.Module, args: tuple[Any, ...], output: Any) -> None:
            value = args[0] if kind == "input" else output
            store[name].append(value.detach().cpu())

        return fn

    handles = [named[m].register_forward_hook(hook(m)) for m in modules]
    was_training = model.training
    try:
        model.eval()
        with torch.no_grad():
            for chunk in torch.split(inputs, batch_size):
                model(chunk)
    finally:
        for h in handles:
            h.remove()
        model.train(was_training)
    return {m: torch.cat(v) for m, v in store.items()}


def channel_samples(
    activations: Tensor, *, max_samples: int | None = None, seed: int = 0
) -> Tensor:
    """Return activations as channel vectors: one row per (input, position).

    Args:
        activations: ``[N, C, H, W]`` feature maps or ``[N, C]`` features.
        max_samples: Keep at most this many rows, drawn with ``seed`` (same rows for two
            networks' activations of the same shape and seed, so they stay paired).
        seed: Seeds the row subsample.

    Returns:
        A ``[N*H*W, C]`` (or ``[N, C]``) tensor.

    Raises:
        WeightspaceValueError: if ``activations`` is not 2-D or 4-D.

    Shapes:
        - activations: ``[N, C, H, W]`` or ``[N, C]``; output: ``[M, C]``.

    Example:
        >>> import torch
        >>> channel_samples(torch.zeros(2, 3, 4, 4)).shape
        torch.Size([32, 3])
    """
    if activations.ndim == 4:
        rows = activations.permute(0, 2, 3, 1).reshape(-1, activations.shape[1])
    elif activations.ndim == 2:
        rows = activations
    else:
        raise WeightspaceValueError(
            f"`activations` must be [N, C, H, W] or [N, C], got {describe(activations)}"
        )
    if max_samples is not None and rows.shape[0] > max_samples:
        gen = torch.Generator().manual_seed(seed)
        idx = torch.randperm(rows.shape[0], generator=gen)[:max_samples].sort().values
        rows = rows[idx]
    return rows
