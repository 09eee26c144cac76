"""A conditional Real-NVP normalizing flow: an embedding in, a distribution over vectors out.

The flow of AWOL (Aldasoro et al., "AWOL: Analysis WithOut synthesis using Language",
arXiv:2404.03042), which maps a text or image embedding to the parameters of a procedural
generator: a stack of affine coupling layers (Dinh, Sohl-Dickstein & Bengio, "Density
estimation using Real NVP", ICLR 2017) whose scale and shift networks also see the
conditioning embedding. The map from data ``x`` to latent ``z`` is invertible for every
embedding, its log-determinant is a sum of the coupling scales, so the conditional
log-likelihood ``log p(x | c) = log N(z; 0, I) + log |det dz/dx|`` is exact and training is
plain maximum likelihood (:func:`flow_nll_loss` with :mod:`weightspace.train`).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from weightspace._errors import WeightspaceValueError

__all__ = ["ConditionalRealNVP", "flow_nll_loss"]

_LOG_2PI = math.log(2.0 * math.pi)


def _positive_int(name: str, value: object, low: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        raise WeightspaceValueError(f"`{name}` must be an integer >= {low}, got {value!r}")
    return value


class _Coupling(nn.Module):
    """One affine coupling layer: the unmasked coordinates move given the masked ones."""

    mask: Tensor

    def __init__(self, mask: Tensor, context_dim: int, hidden: int, scale_limit: float) -> None:
        super().__init__()
        dim = mask.numel()
        self.register_buffer("mask", mask)
        self.scale_limit = scale_limit
        self.net = nn.Sequential(
            nn.Linear(dim + context_dim, hidden),
            nn.SiLU(),
            nn.Linear(hidden, hidden),
            nn.SiLU(),
            nn.Linear(hidden, 2 * dim),
        )
        last = self.net[-1]
        assert isinstance(last, nn.Linear)
        nn.init.zeros_(last.weight)  # every layer starts as the identity
        nn.init.zeros_(last.bias)

    def _scale_shift(self, kept: Tensor, context: Tensor) -> tuple[Tensor, Tensor]:
        mask = self.mask
        raw_scale, shift = self.net(torch.cat([kept, context], -1)).chunk(2, -1)
        # A soft clamp keeps every layer's scale in exp(+-scale_limit).
        scale = self.scale_limit * torch.tanh(raw_scale / self.scale_limit)
        return scale * (1 - mask), shift * (1 - mask)

    def forward(self, x: Tensor, context: Tensor) -> tuple[Tensor, Tensor]:
        mask = self.mask
        scale, shift = self._scale_shift(x * mask, context)
        z = x * mask + (1 - mask) * ((x - shift) * torch.exp(-scale))
        return z, -scale.sum(-1)

    def inverse(self, z: Tensor, context: Tensor) -> Tensor:
        mask = self.mask
        scale, shift = self._scale_shift(z * mask, context)
        return z * mask + (1 - mask) * (z * torch.exp(scale) + shift)


class ConditionalRealNVP(nn.Module):
    r"""A conditional Real-NVP flow: a density :math:`p(x \mid c)` over :math:`\mathbb{R}^D`.

    ``layers`` affine coupling layers map a data vector :math:`x` to a latent :math:`z` with a
    standard normal distribution. Layer :math:`k` keeps the coordinates of a binary mask
    :math:`m_k` (alternately the even and the odd ones) and moves the others,

    .. math::

        z = m_k \odot x + (1 - m_k) \odot (x - t_k(m_k \odot x, c))
            \odot e^{-s_k(m_k \odot x, c)},

    where :math:`s_k` and :math:`t_k` come from one MLP (two hidden layers of ``hidden``
    SiLU units) that sees the kept coordinates and the embedding :math:`c`. Each
    :math:`s_k` is softly clamped to :math:`(-\text{scale\_limit}, \text{scale\_limit})`;
    the log-determinant of the whole map is :math:`-\sum_k \sum_i s_{k,i}`. The last layer of
    every MLP starts at zero, so an untrained flow is the identity.

    Points are generated in the other direction: :meth:`sample` draws
    :math:`z \sim \mathcal{N}(0, T^2 I)` and inverts the layers; :meth:`mode` inverts
    :math:`z = 0`, the mode of the base distribution, which is AWOL's point estimate (the
    mode of :math:`p(x \mid c)` itself can differ where the log-determinant varies with
    :math:`x`); :meth:`mean` estimates :math:`E[x \mid c]` from samples.

    Args:
        dim: Dimension :math:`D` of the data vectors, at least 2.
        context_dim: Dimension of the conditioning embeddings, at least 1.
        layers: Number of coupling layers, at least 2 (so that every coordinate moves).
        hidden: Width of the hidden layers of each coupling network.
        scale_limit: Bound of each layer's log-scale, positive.

    Shapes:
        - data ``x`` and latent ``z``: ``[B, D]``.
        - context ``c``: ``[B, C]`` (or ``[C]``, broadcast over the batch).
        - log-densities and log-determinants: ``[B]``.

    Example:
        >>> _ = torch.manual_seed(0)
        >>> flow = ConditionalRealNVP(dim=3, context_dim=2, layers=4, hidden=16)
        >>> x, c = torch.randn(5, 3), torch.randn(5, 2)
        >>> z, log_det = flow(x, c)
        >>> bool(torch.allclose(flow.inverse(z, c), x, atol=1e-6)), tuple(log_det.shape)
        (True, (5,))
        >>> flow.log_prob(x, c).shape, flow.sample(c, seed=0).shape
        (torch.Size([5]), torch.Size([5, 3]))
    """

    def __init__(
        self,
        dim: int,
        context_dim: int,
        *,
        layers: int = 6,
        hidden: int = 64,
        scale_limit: float = 3.0,
    ) -> None:
        super().__init__()
        self.dim = _positive_int("dim", dim, 2)
        self.context_dim = _positive_int("context_dim", context_dim, 1)
        _positive_int("layers", layers, 2)
        _positive_int("hidden", hidden, 1)
        if not (isinstance(scale_limit, (int, float)) and math.isfinite(scale_limit)) or (
            scale_limit <= 0
        ):
            raise WeightspaceValueError(
                f"`scale_limit` must be a positive number, got {scale_limit!r}"
            )
        even = (torch.arange(dim) % 2 == 0).float()
        self.couplings = nn.ModuleList(
            _Coupling(even if k % 2 == 0 else 1 - even, context_dim, hidden, float(scale_limit))
            for k in range(layers)
        )

    def _check(self, x: Tensor, context: Tensor, name: str = "x") -> tuple[Tensor, Tensor]:
        if not isinstance(x, Tensor) or x.ndim != 2 or x.shape[1] != self.dim:
            shape = tuple(x.shape) if isinstance(x, Tensor) else type(x).__name__
            raise WeightspaceValueError(f"`{name}` must have shape [B, {self.dim}], got {shape}")
        if not isinstance(context, Tensor) or context.shape[-1:] != (self.context_dim,):
            shape = tuple(context.shape) if isinstance(context, Tensor) else type(context).__name__
            raise WeightspaceValueError(
                f"`context` must have shape [B, {self.context_dim}] or [{self.context_dim}], "
                f"got {shape}"
            )
        if context.ndim == 1:
            context = context.expand(x.shape[0], -1)
        if context.ndim != 2 or context.shape[0] != x.shape[0]:
            raise WeightspaceValueError(
                f"`context` must have one row per row of `{name}` ({x.shape[0]}), "
                f"got shape {tuple(context.shape)}"
            )
        return x, context.to(x.dtype)

    def forward(self, x: Tensor, context: Tensor) -> tuple[Tensor, Tensor]:
        r"""Map data to latents (the normalizing direction).

        Args:
            x: Data vectors, ``[B, D]``.
            context: Conditioning embeddings, ``[B, C]`` or ``[C]``.

        Returns:
            ``(z, log_det)``: the latents ``[B, D]`` and :math:`\log |\det \partial z /
            \partial x|` per row, ``[B]``.

        Raises:
            WeightspaceValueError: on a wrong shape.
        """
        z, c = self._check(x, context)
        log_det = torch.zeros(z.shape[0], dtype=z.dtype, device=z.device)
        for coupling in self.couplings:
            z, ld = coupling(z, c)
            log_det = log_det + ld
        return z, log_det

    def inverse(self, z: Tensor, context: Tensor) -> Tensor:
        """Map latents to data (the generative direction), the exact inverse of :meth:`forward`.

        Args:
            z: Latents, ``[B, D]``.
            context: Conditioning embeddings, ``[B, C]`` or ``[C]``.

        Returns:
            Data vectors, ``[B, D]``.

        Raises:
            WeightspaceValueError: on a wrong shape.
        """
        x, c = self._check(z, context, "z")
        for coupling in reversed(self.couplings):
            assert isinstance(coupling, _Coupling)
            x = coupling.inverse(x, c)
        return x

    def log_prob(self, x: Tensor, context: Tensor) -> Tensor:
        r"""The exact conditional log-density :math:`\log p(x \mid c)`, in nats.

        Args:
            x: Data vectors, ``[B, D]``.
            context: Conditioning embeddings, ``[B, C]`` or ``[C]``.

        Returns:
            One log-density per row, ``[B]``.
        """
        z, log_det = self(x, context)
        base = -0.5 * (z.pow(2).sum(-1) + self.dim * _LOG_2PI)
        out: Tensor = base + log_det
        return out

    def _context_rows(self, context: Tensor) -> Tensor:
        if not isinstance(context, Tensor) or context.ndim not in (1, 2):
            shape = tuple(context.shape) if isinstance(context, Tensor) else type(context).__name__
            raise WeightspaceValueError(
                f"`context` must have shape [B, {self.context_dim}] or [{self.context_dim}], "
                f"got {shape}"
            )
        return context.unsqueeze(0) if context.ndim == 1 else context

    def _param(self) -> Tensor:
        return next(self.parameters())

    def sample(self, context: Tensor, *, seed: int = 0, temperature: float = 1.0) -> Tensor:
        """Draw one data vector per embedding (without gradients).

        Args:
            context: Conditioning embeddings, ``[B, C]`` (or ``[C]`` for one draw).
            seed: Seed of the latent draw.
            temperature: Standard deviation of the latent normal (1 samples the model; lower
                values concentrate the draws around :meth:`mode`), non-negative.

        Returns:
            ``[B, D]`` samples.

        Raises:
            WeightspaceValueError: on a wrong shape or a negative temperature.
        """
        if not (math.isfinite(temperature) and temperature >= 0):
            raise WeightspaceValueError(
                f"`temperature` must be a non-negative number, got {temperature!r}"
            )
        c = self._context_rows(context)
        p = self._param()
        gen = torch.Generator().manual_seed(int(seed))
        z = torch.randn(c.shape[0], self.dim, generator=gen, dtype=p.dtype).to(p.device)
        with torch.no_grad():
            return self.inverse(z * temperature, c.to(p.device))

    def mode(self, context: Tensor) -> Tensor:
        """The image of the base distribution's mode, ``inverse(0, c)`` (without gradients).

        Args:
            context: Conditioning embeddings, ``[B, C]`` (or ``[C]``).

        Returns:
            ``[B, D]`` point estimates.
        """
        c = self._context_rows(context)
        p = self._param()
        z = torch.zeros(c.shape[0], self.dim, dtype=p.dtype, device=p.device)
        with torch.no_grad():
            return self.inverse(z, c.to(p.device))

    def mean(self, context: Tensor, *, samples: int = 256, seed: int = 0) -> Tensor:
        r"""Monte-Carlo estimate of :math:`E[x \mid c]` from ``samples`` draws per embedding.

        Args:
            context: Conditioning embeddings, ``[B, C]`` (or ``[C]``).
            samples: Draws per embedding, positive.
            seed: Seed of the draws.

        Returns:
            ``[B, D]`` sample means.
        """
        _positive_int("samples", samples)
        c = self._context_rows(context)
        draws = self.sample(c.repeat_interleave(samples, 0), seed=seed)
        return draws.view(c.shape[0], samples, self.dim).mean(1)


def flow_nll_loss(model: nn.Module, batch: object) -> Tensor:
    """Mean negative log-likelihood of a ``(context, x)`` batch: the flow's training loss.

    The loss follows :mod:`weightspace.train`'s convention ``loss(model, batch) -> scalar``, so
    that ``train.fit_(flow, (contexts, xs), loss=flow_nll_loss)`` fits a
    :class:`ConditionalRealNVP` by maximum likelihood. The value is in nats per vector.

    Args:
        model: A :class:`ConditionalRealNVP`.
        batch: A pair ``(context [B, C], x [B, D])`` (inputs first, as in every
            ``(inputs, targets)`` batch of the training layer).

    Returns:
        The scalar loss.

    Raises:
        WeightspaceValueError: if ``model`` is not a :class:`ConditionalRealNVP` or ``batch``
            is not a pair.

    Example:
        >>> _ = torch.manual_seed(0)
        >>> flow = ConditionalRealNVP(dim=2, context_dim=1, layers=2, hidden=8)
        >>> x, c = torch.zeros(4, 2), torch.zeros(4, 1)
        >>> round(flow_nll_loss(flow, (c, x)).item(), 4)  # log(2 pi): the identity at start
        1.8379
    """
    if not isinstance(model, ConditionalRealNVP):
        raise WeightspaceValueError(
            f"`model` must be a ConditionalRealNVP, got {type(model).__name__}"
        )
    if not isinstance(batch, (tuple, list)) or len(batch) != 2:
        raise WeightspaceValueError(
            f"`batch` must be a pair (context, x), got {type(batch).__name__}"
        )
    context, x = batch
    return -model.log_prob(x, context).mean()
