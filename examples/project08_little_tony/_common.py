"""The parts of project 8 that are not the library: an MSDM-style separator and its metrics.

* :class:`UNetConfig` / :class:`UNet1d`: a 1-D U-Net over patched waveforms (the network
  family of MSDM, Mariani et al., ICLR 2024, built with audio-diffusion-pytorch), whose
  configuration can express the paper's size (:meth:`UNetConfig.msdm`).
* :class:`Denoiser`: EDM preconditioning (Karras et al., NeurIPS 2022) of the network into a
  denoiser :math:`D(x; \\sigma, y)` of all stems jointly, given the mixture :math:`y`.
* :func:`edm_loss`, :func:`karras_sigmas`, :func:`separate` (the deterministic DDIM / Euler
  sampler of the probability-flow ODE), :func:`pd_target` (the two-step target of
  progressive distillation, Salimans and Ho, ICLR 2022) and :func:`si_sdr` (Le Roux et al.,
  ICASSP 2019).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

# ---- metric --------------------------------------------------------------------------------


def si_sdr(estimate: Tensor, reference: Tensor, eps: float = 1e-12) -> Tensor:
    r"""Scale-invariant signal-to-distortion ratio in dB (Le Roux et al., ICASSP 2019).

    .. math:: \alpha = \frac{\langle \hat s, s\rangle}{\|s\|^2},\quad
              \mathrm{SI\text{-}SDR} = 10\log_{10}\frac{\|\alpha s\|^2}{\|\alpha s - \hat s\|^2}

    No mean is removed (the paper's definition; signals here have zero mean anyway).

    Shapes:
        ``estimate``, ``reference``: ``[..., samples]`` -> ``[...]``.
    """
    alpha = (estimate * reference).sum(-1, keepdim=True) / (
        reference.pow(2).sum(-1, keepdim=True) + eps
    )
    target = alpha * reference
    noise = target - estimate
    return 10 * torch.log10((target.pow(2).sum(-1) + eps) / (noise.pow(2).sum(-1) + eps))


# ---- network -------------------------------------------------------------------------------


@dataclass(frozen=True)
class UNetConfig:
    """Sizes of the 1-D U-Net; the defaults are the CPU-sized teacher of the example."""

    stems: int = 4  # sources modelled jointly
    conditioned: bool = True  # the mixture enters as one more input channel
    patch: int = 16  # samples folded into channels before the first convolution
    base: int = 48  # channels after the input convolution (at the patched rate)
    channels: tuple[int, ...] = (64, 96, 128)  # channels of each level
    factors: tuple[int, ...] = (2, 4, 4)  # downsampling on entering each level
    blocks: tuple[int, ...] = (1, 1, 1)  # residual blocks per level (each way)
    attentions: tuple[bool, ...] = (False, True, True)  # self-attention after the blocks
    heads: int = 4
    head_features: int = 32
    embedding: int = 64  # width of the noise-level embedding
    groups: int = 8  # GroupNorm groups
    extra: dict[str, Any] = field(default_factory=dict, compare=False)

    def __post_init__(self) -> None:
        n = len(self.channels)
        if not (len(self.factors) == len(self.blocks) == len(self.attentions) == n):
            raise ValueError("channels, factors, blocks and attentions need one entry per level")

    @property
    def hop(self) -> int:
        """The clip length must be a multiple of this."""
        return self.patch * math.prod(self.factors)

    @classmethod
    def msdm(cls) -> UNetConfig:
        """MSDM's separator as its public training configuration sets it (Slakh2100, 4 stems).

        22,050 Hz, clips of 262,144 samples (11.9 s), patch factor 16, 256 channels after
        the patching, channel multipliers (2, 4, 4, 4, 4, 4) x 256 over six levels with
        downsampling factors (4, 4, 4, 2, 2, 2), two residual blocks per level and
        self-attention (8 heads of 128 features) in the three deepest levels; the mixture is
        *not* an input (MSDM conditions at sampling time through a Dirac likelihood).
        """
        return cls(
            stems=4,
            conditioned=False,
            patch=16,
            base=256,
            channels=(512, 1024, 1024, 1024, 1024, 1024),
            factors=(4, 4, 4, 2, 2, 2),
            blocks=(2, 2, 2, 2, 2, 2),
            attentions=(False, False, False, True, True, True),
            heads=8,
            head_features=128,
            embedding=1024,
            groups=8,
        )


class ResBlock(nn.Module):
    def __init__(self, cin: int, cout: int, emb: int, groups: int) -> None:
        super().__init__()
        self.norm1 = nn.GroupNorm(min(groups, cin), cin)
        self.conv1 = nn.Conv1d(cin, cout, 3, padding=1)
        self.film = nn.Linear(emb, 2 * cout)
        self.norm2 = nn.GroupNorm(min(groups, cout), cout)
        self.conv2 = nn.Conv1d(cout, cout, 3, padding=1)
        self.skip = nn.Conv1d(cin, cout, 1) if cin != cout else nn.Identity()

    def forward(self, x: Tensor, e: Tensor) -> Tensor:
        h = self.conv1(F.silu(self.norm1(x)))
        scale, shift = self.film(e).unsqueeze(-1).chunk(2, dim=1)
        h = self.norm2(h) * (1 + scale) + shift
        h = self.conv2(F.silu(h))
        return self.skip(x) + h  # type: ignore[no-any-return]


class Attention(nn.Module):
    def __init__(self, channels: int, heads: int, features: int, groups: int) -> None:
        super().__init__()
        self.norm = nn.GroupNorm(min(groups, channels), channels)
        self.heads, self.features = heads, features
        self.qkv = nn.Conv1d(channels, 3 * heads * features, 1)
        self.out = nn.Conv1d(heads * features, channels, 1)

    def forward(self, x: Tensor) -> Tensor:
        b, _, n = x.shape
        q, k, v = self.qkv(self.norm(x)).view(b, 3, self.heads, self.features, n).unbind(1)
        h = F.scaled_dot_product_attention(q.transpose(-1, -2), k.transpose(-1, -2),
                                           v.transpose(-1, -2))  # fmt: skip
        return x + self.out(h.transpose(-1, -2).reshape(b, -1, n))  # type: ignore[no-any-return]


class Level(nn.Module):
    def __init__(self, cin: int, cout: int, factor: int, blocks: int, attention: bool,
                 cfg: UNetConfig) -> None:  # fmt: skip
        super().__init__()
        self.down = nn.Conv1d(cin, cout, factor, stride=factor) if factor > 1 else (
            nn.Conv1d(cin, cout, 1))  # fmt: skip
        self.down_blocks = nn.ModuleList(
            [ResBlock(cout, cout, cfg.embedding, cfg.groups) for _ in range(blocks)]
        )
        self.up_blocks = nn.ModuleList(
            [ResBlock(2 * cout if i == 0 else cout, cout, cfg.embedding, cfg.groups)
             for i in range(blocks)]
        )  # fmt: skip
        self.attn = Attention(cout, cfg.heads, cfg.head_features, cfg.groups) if attention else None
        self.up = nn.ConvTranspose1d(cout, cin, factor, stride=factor) if factor > 1 else (
            nn.Conv1d(cout, cin, 1))  # fmt: skip


class UNet1d(nn.Module):
    """Patched 1-D U-Net: ``net(x [B, stems, L], c_noise [B], y [B, 1, L]) -> [B, stems, L]``."""

    def __init__(self, cfg: UNetConfig) -> None:
        super().__init__()
        self.cfg = cfg
        cin = (cfg.stems + int(cfg.conditioned)) * cfg.patch
        self.inp = nn.Conv1d(cin, cfg.base, 3, padding=1)
        self.freqs: Tensor
        self.register_buffer("freqs", torch.randn(cfg.embedding // 2) * 4.0)  # Fourier features
        width = cfg.embedding
        self.emb = nn.Sequential(nn.Linear(width, width), nn.SiLU(), nn.Linear(width, width))
        levels, prev = [], cfg.base
        for c, f, b, a in zip(cfg.channels, cfg.factors, cfg.blocks, cfg.attentions, strict=True):
            levels.append(Level(prev, c, f, b, a, cfg))
            prev = c
        self.levels = nn.ModuleList(levels)
        self.mid = ResBlock(prev, prev, cfg.embedding, cfg.groups)
        self.out_block = ResBlock(2 * cfg.base, cfg.base, cfg.embedding, cfg.groups)
        self.out_norm = nn.GroupNorm(min(cfg.groups, cfg.base), cfg.base)
        self.out = nn.Conv1d(cfg.base, cfg.stems * cfg.patch, 3, padding=1)
        nn.init.zeros_(self.out.weight)
        nn.init.zeros_(self.out.bias)

    def forward(self, x: Tensor, c_noise: Tensor, y: Tensor | None = None) -> Tensor:
        cfg = self.cfg
        if cfg.conditioned:
            assert y is not None
            x = torch.cat([x, y], dim=1)
        b, c, n = x.shape
        p = cfg.patch
        h = x.view(b, c, n // p, p).transpose(2, 3).reshape(b, c * p, n // p)
        angles = c_noise.view(-1, 1) * self.freqs.view(1, -1) * 2 * math.pi
        e = self.emb(torch.cat([angles.cos(), angles.sin()], dim=1))
        h = self.inp(h)
        skips = [h]
        for level in self.levels:
            h = level.down(h)
            for block in level.down_blocks:
                h = block(h, e)
            if level.attn is not None:
                h = level.attn(h)
            skips.append(h)
        h = self.mid(h, e)
        for level in reversed(self.levels):
            h = torch.cat([h, skips.pop()], dim=1)
            for block in level.up_blocks:
                h = block(h, e)
            if level.attn is not None:
                h = level.attn(h)
            h = level.up(h)
        h = self.out_block(torch.cat([h, skips.pop()], dim=1), e)
        h = self.out(F.silu(self.out_norm(h)))
        s = cfg.stems
        return h.view(b, s, p, n // p).transpose(2, 3).reshape(b, s, n)


def count_parameters(cfg: UNetConfig) -> int:
    """Parameters of a U-Net of this configuration (built on the meta device: no memory)."""
    with torch.device("meta"):
        net = UNet1d(cfg)
    return sum(p.numel() for p in net.parameters() if p.requires_grad)


# ---- EDM denoiser, loss, sampler -------------------------------------------------------------


class Denoiser(nn.Module):
    """EDM's preconditioned denoiser ``D(x; sigma, y)`` of all stems given the mixture ``y``.

    With ``project`` (and a mixture), the estimate is projected onto the stems that sum to
    the mixture, ``D + (y - sum_k D_k) / stems``: the hard constraint of MSDM's Dirac
    likelihood, applied at every noise level (in training too, so that the network learns
    what the constraint leaves open).
    """

    def __init__(self, cfg: UNetConfig, sigma_data: float = 0.5, project: bool = True) -> None:
        super().__init__()
        self.net = UNet1d(cfg)
        self.sigma_data = sigma_data
        self.project = project

    def forward(self, x: Tensor, sigma: Tensor, y: Tensor | None = None) -> Tensor:
        sd = self.sigma_data
        s = sigma.view(-1, 1, 1)
        c_skip = sd**2 / (s**2 + sd**2)
        c_out = s * sd / (s**2 + sd**2).sqrt()
        c_in = 1 / (s**2 + sd**2).sqrt()
        y_in = None if y is None else y / (2 * sd)
        d = c_skip * x + c_out * self.net(c_in * x, sigma.log() / 4, y_in)
        if self.project and y is not None:
            d = d + (y - d.sum(1, keepdim=True)) / d.shape[1]
        return d  # type: ignore[no-any-return]


def loss_weight(sigma: Tensor, sigma_data: float) -> Tensor:
    """EDM's loss weight (sigma^2 + sigma_d^2) / (sigma sigma_d)^2, shape ``[B, 1, 1]``."""
    s = sigma.view(-1, 1, 1)
    return (s**2 + sigma_data**2) / (s * sigma_data) ** 2


def draw_sigma(n: int, p_mean: float = -1.2, p_std: float = 1.2) -> Tensor:
    """EDM's log-normal training noise levels (from the global RNG: seeded by the trainer)."""
    return (torch.randn(n) * p_std + p_mean).exp()


def edm_loss(model: nn.Module, batch: Any) -> Tensor:
    """Denoising score matching with EDM's weighting: ``loss(model, (stems, mixture))``."""
    x, y = batch
    assert isinstance(model, Denoiser)
    sigma = draw_sigma(x.shape[0])
    noisy = x + sigma.view(-1, 1, 1) * torch.randn_like(x)
    w = loss_weight(sigma, model.sigma_data)
    return (w * (model(noisy, sigma, y) - x).pow(2)).mean()


def karras_sigmas(steps: int, sigma_min: float = 0.002, sigma_max: float = 10.0,
                  rho: float = 7.0) -> Tensor:  # fmt: skip
    """``steps + 1`` noise levels of Karras et al., from ``sigma_max`` down to 0."""
    i = torch.arange(steps, dtype=torch.float64)
    denom = max(steps - 1, 1)
    s = sigma_max ** (1 / rho) + i / denom * (sigma_min ** (1 / rho) - sigma_max ** (1 / rho))
    s = s**rho
    if steps == 1:
        s = torch.tensor([sigma_max], dtype=torch.float64)
    return torch.cat([s, torch.zeros(1, dtype=torch.float64)]).float()


def ddim_step(denoised: Tensor, x: Tensor, sigma: Tensor, sigma_next: Tensor) -> Tensor:
    """One deterministic (DDIM / Euler) step of the probability-flow ODE, from ``sigma`` on."""
    ratio = (sigma_next / sigma).view(-1, 1, 1)
    return denoised + ratio * (x - denoised)


@torch.no_grad()
def separate(model: Denoiser, mixture: Tensor, sigmas: Tensor, *, seed: int = 0,
             consistent: bool = True) -> Tensor:  # fmt: skip
    """Separate a batch of mixtures ``[B, 1, L]`` into ``[B, stems, L]`` stems.

    Starts from ``sigmas[0] * noise`` (seeded), takes one network evaluation per step of
    ``sigmas`` (the last level is 0), and, with ``consistent``, spreads the residual
    ``y - sum(stems)`` equally over the stems at the end (mixture consistency).
    """
    was = model.training
    model.eval()
    g = torch.Generator().manual_seed(seed)
    b, _, n = mixture.shape
    s = model.net.cfg.stems
    x = torch.randn(b, s, n, generator=g) * sigmas[0]
    for i in range(len(sigmas) - 1):
        sig = sigmas[i].expand(b)
        d = model(x, sig, mixture)
        x = ddim_step(d, x, sig, sigmas[i + 1].expand(b)) if sigmas[i + 1] > 0 else d
    if consistent:
        x = x + (mixture - x.sum(1, keepdim=True)) / s
    model.train(was)
    return x


def pd_target(teacher: Denoiser, x: Tensor, y: Tensor, sigma: Tensor, mid: Tensor,
              nxt: Tensor) -> Tensor:  # fmt: skip
    """The x-prediction that makes one student DDIM step equal two teacher steps.

    Two teacher steps ``sigma -> mid -> nxt`` give ``z``; the student's one step
    ``sigma -> nxt`` lands on ``z`` when it predicts
    ``(z - (nxt / sigma) x) / (1 - nxt / sigma)`` (``z`` itself when ``nxt`` is 0).
    """
    d1 = teacher(x, sigma, y)
    z1 = ddim_step(d1, x, sigma, mid)
    d2 = teacher(z1, mid, y)
    last = (nxt == 0).view(-1, 1, 1)
    z2 = torch.where(last, d2, ddim_step(d2, z1, mid, nxt.clamp_min(1e-12)))
    ratio = (nxt / sigma).view(-1, 1, 1)
    return torch.where(last, z2, (z2 - ratio * x) / (1 - ratio))


# ---- tables for the docs -------------------------------------------------------------------


def markdown_to_rst(text: str) -> str:
    """Markdown tables and ``###`` headings (as :mod:`weightspace.report` writes them) as rst.

    Tables become grid tables; a heading becomes a bold paragraph; other lines stay.
    """
    out: list[str] = []
    lines = text.splitlines()
    i = 0
    while i < len(lines):
        line = lines[i]
        if line.startswith("### "):
            out.append(f"**{line[4:]}**")
            i += 1
            continue
        if line.startswith("|"):
            rows = []
            while i < len(lines) and lines[i].startswith("|"):
                if not set(lines[i]) <= set("|-"):
                    rows.append([c.strip() for c in lines[i].strip()[1:-1].split(" | ")])
                i += 1
            widths = [max(len(r[k]) for r in rows) for k in range(len(rows[0]))]
            sep = "+" + "+".join("-" * (w + 2) for w in widths) + "+"
            head = "+" + "+".join("=" * (w + 2) for w in widths) + "+"
            cells = [
                "| " + " | ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)) + " |"
                for r in rows
            ]
            out += [sep, cells[0], head]
            for line_ in cells[1:]:
                out += [line_, sep]
            continue
        out.append(line)
        i += 1
    return "\n".join(out) + "\n"
