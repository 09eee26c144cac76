"""Embedding quantisers: scalar, PCA truncation and product quantisation, with exact bit counts."""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from typing import TypeVar

import torch
from torch import Tensor

from weightspace._errors import ShapeMismatchError, WeightspaceValueError

__all__ = ["EmbeddingQuantizer", "PCAQuantizer", "ProductQuantizer", "ScalarQuantizer"]

_Q = TypeVar("_Q", bound="EmbeddingQuantizer")


def _matrix(x: object, argument: str, dim: int | None = None) -> Tensor:
    if not isinstance(x, Tensor) or x.ndim != 2 or not x.is_floating_point():
        shape = list(x.shape) if isinstance(x, Tensor) else type(x).__name__
        raise WeightspaceValueError(
            f"`{argument}` must be a float tensor of shape [N, dim], got {shape}; stack the "
            "embeddings into one matrix"
        )
    if dim is not None and x.shape[1] != dim:
        raise ShapeMismatchError(
            f"`{argument}` has {x.shape[1]} dimensions but the quantiser was fitted on {dim}; "
            "use embeddings of the same model"
        )
    if not bool(torch.isfinite(x).all()):
        raise WeightspaceValueError(f"`{argument}` holds NaN or infinite values; remove them")
    return x.detach().float()


class EmbeddingQuantizer(ABC):
    """A fixed-rate code for embedding vectors: ``fit`` on training vectors, then encode/decode.

    Every quantiser turns a vector into a row of integer *codes*, column ``j`` taking one of
    ``levels[j]`` values, so that storing a vector costs exactly :attr:`bits_per_vector`
    bits (``sum(ceil(log2(levels[j])))``) at a fixed rate, or fewer on average with an
    entropy code of the columns (:class:`HuffmanCoder`). What the decoder needs besides the
    codes (ranges, principal directions, codebooks) is fitted once on training vectors and
    shared by sender and receiver; :attr:`side_bits` says how large it is.
    """

    _fitted: bool = False

    @property
    @abstractmethod
    def levels(self) -> tuple[int, ...]:
        """How many values each code column takes (one entry per column)."""

    @property
    def bits_per_vector(self) -> int:
        """Exact size of one vector's codes at a fixed rate: ``sum(ceil(log2(levels)))``."""
        return sum(max(1, math.ceil(math.log2(n))) if n > 1 else 0 for n in self.levels)

    @property
    @abstractmethod
    def side_bits(self) -> int:
        """Size of the fitted parameters the decoder needs, in bits (float32 each)."""

    @abstractmethod
    def fit(self: _Q, x: Tensor) -> _Q:
        """Fit the quantiser on training vectors ``x`` of shape ``[N, dim]``; returns itself."""

    @abstractmethod
    def encode(self, x: Tensor) -> Tensor:
        """Codes of the vectors ``x``: an int64 tensor ``[N, len(levels)]``."""

    @abstractmethod
    def decode(self, codes: Tensor) -> Tensor:
        """Vectors ``[N, dim]`` (float32) reconstructed from ``codes``."""

    def round_trip(self, x: Tensor) -> Tensor:
        """``decode(encode(x))``: what a receiver reconstructs from ``x``'s codes."""
        return self.decode(self.encode(x))

    def _check_fitted(self) -> None:
        if not self._fitted:
            raise WeightspaceValueError(
                f"this {type(self).__name__} is not fitted; call `.fit(training_vectors)` first"
            )

    def _check_codes(self, codes: object) -> Tensor:
        self._check_fitted()
        levels = self.levels
        if not isinstance(codes, Tensor) or codes.ndim != 2 or codes.is_floating_point():
            shape = list(codes.shape) if isinstance(codes, Tensor) else type(codes).__name__
            raise WeightspaceValueError(
                f"`codes` must be an integer tensor of shape [N, {len(levels)}], got {shape}"
            )
        if codes.shape[1] != len(levels):
            raise ShapeMismatchError(
                f"`codes` has {codes.shape[1]} columns, this quantiser writes {len(levels)}"
            )
        top = torch.tensor(levels, dtype=torch.int64)
        bad = (codes < 0) | (codes >= top)
        if bool(bad.any()):
            i, j = (int(v) for v in bad.nonzero()[0])
            raise WeightspaceValueError(
                f"`codes[{i}, {j}]` = {int(codes[i, j])} is outside [0, {levels[j]}); pass codes "
                "written by this quantiser's `encode`"
            )
        return codes.long()


def _check_bits(bits: object, allowed: str) -> int:
    if isinstance(bits, bool) or not isinstance(bits, int) or not (1 <= bits <= 16 or bits == 32):
        raise WeightspaceValueError(f"`bits` must be {allowed}, got {bits!r}")
    return bits


class ScalarQuantizer(EmbeddingQuantizer):
    r"""Each coordinate on its own uniform grid of ``2**bits`` cells over its fitted range.

    Fitting records, per dimension, the range ``[lo, hi]`` of the training values (the
    ``clip`` and ``1 - clip`` quantiles). A value ``x`` gets the code
    ``clamp(floor((x - lo) / step), 0, 2**bits - 1)`` with ``step = (hi - lo) / 2**bits``, and
    is decoded to its cell's centre ``lo + (code + 1/2) * step`` (``centres="midpoint"``) or
    to the mean of the training values in that cell (``centres="mean"``, better at 1 or 2
    bits). With midpoints, a value inside ``[lo, hi]`` is reconstructed within ``step / 2``:
    at 8 bits, ``(hi - lo) / 512``. ``bits=32`` stores the float32 value itself (its bit
    pattern is the code), losslessly.

    Args:
        bits: Bits per coordinate: 1 to 16, or 32 for raw float32.
        clip: Fraction of the training values left outside the range at each end (0 keeps
            the minimum and maximum); values outside are clamped to the edge cells.
        centres: ``"midpoint"`` or ``"mean"`` (see above).

    Example:
        >>> import torch
        >>> from weightspace.text import ScalarQuantizer
        >>> x = torch.tensor([[0.0, -1.0], [1.0, 1.0], [0.5, 0.2]])
        >>> q = ScalarQuantizer(bits=2).fit(x)
        >>> q.encode(x).tolist(), q.bits_per_vector
        ([[0, 0], [3, 3], [2, 2]], 4)
        >>> q.decode(q.encode(x))
        tensor([[ 0.1250, -0.7500],
                [ 0.8750,  0.7500],
                [ 0.6250,  0.2500]])
    """

    def __init__(self, bits: int, *, clip: float = 0.0, centres: str = "midpoint") -> None:
        self.bits = _check_bits(bits, "an int from 1 to 16, or 32 for raw float32")
        if isinstance(clip, bool) or not isinstance(clip, (int, float)) or not 0 <= clip < 0.5:
            raise WeightspaceValueError(f"`clip` must be a fraction in [0, 0.5), got {clip!r}")
        if centres not in ("midpoint", "mean"):
            raise WeightspaceValueError(f"`centres` must be 'midpoint' or 'mean', got {centres!r}")
        self.clip = float(clip)
        self.centres = centres
        self.dim = 0
        self.lo = torch.zeros(0)
        self.step = torch.zeros(0)
        self.table: Tensor | None = None  # [dim, 2**bits] cell means (centres="mean")

    @property
    def levels(self) -> tuple[int, ...]:
        """``2**bits`` values in each of the ``dim`` columns."""
        self._check_fitted()
        return (2**self.bits,) * self.dim

    @property
    def side_bits(self) -> int:
        """Two float32 per dimension (``lo``, ``step``), plus the cell means if kept."""
        self._check_fitted()
        if self.bits == 32:
            return 0
        table = 0 if self.table is None else self.table.numel()
        return 32 * (2 * self.dim + table)

    def fit(self, x: Tensor) -> ScalarQuantizer:
        """Fit the per-dimension ranges (and cell means) on training vectors ``x``.

        Args:
            x: Training vectors, ``[N, dim]``.

        Returns:
            The quantiser itself.

        Raises:
            WeightspaceValueError: if ``x`` is not a finite float matrix.
        """
        x = _matrix(x, "x")
        self.dim = int(x.shape[1])
        self._fitted = True
        if self.bits == 32:
            return self
        if self.clip > 0:
            q = torch.tensor([self.clip, 1.0 - self.clip])
            lo, hi = torch.quantile(x.double(), q.double(), dim=0).float()
        else:
            lo, hi = x.min(dim=0).values, x.max(dim=0).values
        self.lo = lo
        self.step = (hi - lo) / 2**self.bits
        self.table = None
        if self.centres == "mean":
            n = 2**self.bits
            codes = self.encode(x)
            sums = torch.zeros(self.dim, n, dtype=torch.float64)
            counts = torch.zeros(self.dim, n, dtype=torch.float64)
            sums.scatter_add_(1, codes.T, x.T.double())
            counts.scatter_add_(1, codes.T, torch.ones_like(sums[:, :1]).expand(-1, len(x)))
            mid = self.lo[:, None] + (torch.arange(n)[None, :] + 0.5) * self.step[:, None]
            means = torch.where(counts > 0, sums / counts.clamp(min=1), mid.double())
            self.table = means.float()
        return self

    def encode(self, x: Tensor) -> Tensor:
        """Codes ``[N, dim]`` (int64): the cell of each coordinate, or its float32 bits at 32."""
        self._check_fitted()
        x = _matrix(x, "x", self.dim)
        if self.bits == 32:
            return x.contiguous().view(torch.int32).long() & 0xFFFFFFFF
        safe = torch.where(self.step > 0, self.step, torch.ones_like(self.step))
        cells = torch.floor((x - self.lo) / safe)
        return cells.clamp(0, 2**self.bits - 1).long()

    def decode(self, codes: Tensor) -> Tensor:
        """Vectors ``[N, dim]`` from codes: cell centres (or means), or the float32 values."""
        codes = self._check_codes(codes)
        if self.bits == 32:
            signed = torch.where(codes >= 2**31, codes - 2**32, codes)
            return signed.to(torch.int32).view(torch.float32).clone()
        if self.table is not None:
            return torch.gather(self.table.expand(len(codes), -1, -1), 2, codes[..., None])[..., 0]
        return self.lo + (codes.float() + 0.5) * self.step


class PCAQuantizer(EmbeddingQuantizer):
    r"""Keep the first ``components`` principal coordinates, each scalar-quantised.

    Fitting centres the training vectors on their mean :math:`\mu`, takes the top
    ``components`` right singular vectors :math:`V` and fits a :class:`ScalarQuantizer` of
    ``bits`` to the training coordinates :math:`(x - \mu) V`. A vector costs
    ``components * bits`` bits and decodes to :math:`\mu + \hat c V^\top`. With every
    component and ``bits=32`` the round trip is exact up to float rounding.

    Args:
        components: How many principal directions to keep.
        bits: Bits per kept coordinate (1 to 16, or 32 for raw float32).
        clip: Passed on to the :class:`ScalarQuantizer` of the coordinates.
        centres: Passed on to the :class:`ScalarQuantizer` of the coordinates.

    Attributes:
        mean: :math:`\mu`, ``[dim]``.
        basis: :math:`V`, ``[dim, components]``, orthonormal columns.
        explained: Fraction of the training variance the kept directions hold.

    Example:
        >>> import torch
        >>> from weightspace.text import PCAQuantizer
        >>> x = torch.randn(200, 3, generator=torch.Generator().manual_seed(0)) * torch.tensor(
        ...     [3.0, 1.0, 0.01])
        >>> q = PCAQuantizer(components=2, bits=32).fit(x)
        >>> q.bits_per_vector, round(q.explained, 4)
        (64, 1.0)
        >>> bool((q.round_trip(x) - x).abs().max() < 0.05)
        True
    """

    def __init__(
        self, components: int, bits: int = 8, *, clip: float = 0.0, centres: str = "midpoint"
    ) -> None:
        if isinstance(components, bool) or not isinstance(components, int) or components < 1:
            raise WeightspaceValueError(f"`components` must be an int >= 1, got {components!r}")
        self.components = components
        self.coordinates = ScalarQuantizer(
            _check_bits(bits, "an int from 1 to 16, or 32"), clip=clip, centres=centres
        )
        self.mean = torch.zeros(0)
        self.basis = torch.zeros(0, 0)
        self.explained = math.nan

    @property
    def bits(self) -> int:
        """Bits per kept coordinate."""
        return self.coordinates.bits

    @property
    def levels(self) -> tuple[int, ...]:
        """``2**bits`` values in each of the ``components`` columns."""
        self._check_fitted()
        return self.coordinates.levels

    @property
    def side_bits(self) -> int:
        """The mean, the basis and the coordinates' ranges, in float32."""
        self._check_fitted()
        return 32 * (self.mean.numel() + self.basis.numel()) + self.coordinates.side_bits

    def fit(self, x: Tensor) -> PCAQuantizer:
        """Fit the mean, the principal directions and the coordinates' quantiser on ``x``.

        Args:
            x: Training vectors, ``[N, dim]``.

        Returns:
            The quantiser itself.

        Raises:
            WeightspaceValueError: if ``x`` is not a finite float matrix, or ``components``
                exceeds ``min(N, dim)``.
        """
        x = _matrix(x, "x")
        if self.components > min(x.shape):
            raise WeightspaceValueError(
                f"`components`={self.components} exceeds min(N, dim) = {min(x.shape)} of the "
                "training vectors; keep fewer components or fit on more vectors"
            )
        x64 = x.double()
        mean = x64.mean(dim=0)
        _, s, vh = torch.linalg.svd(x64 - mean, full_matrices=False)
        total = float((s**2).sum())
        self.explained = float((s[: self.components] ** 2).sum()) / total if total > 0 else 1.0
        self.mean = mean.float()
        self.basis = vh[: self.components].T.float().contiguous()
        self.coordinates.fit(((x64 - mean) @ vh[: self.components].T).float())
        self._fitted = True
        return self

    def project(self, x: Tensor) -> Tensor:
        """The principal coordinates ``(x - mean) @ basis`` of ``x``, ``[N, components]``."""
        self._check_fitted()
        x = _matrix(x, "x", int(self.mean.shape[0]))
        return (x - self.mean) @ self.basis

    def encode(self, x: Tensor) -> Tensor:
        """Codes ``[N, components]`` of the quantised principal coordinates."""
        return self.coordinates.encode(self.project(x))

    def decode(self, codes: Tensor) -> Tensor:
        """Vectors ``mean + coordinates @ basis.T``, ``[N, dim]``."""
        codes = self._check_codes(codes)
        return self.mean + self.coordinates.decode(codes) @ self.basis.T


def _kmeans(x: Tensor, k: int, iterations: int, generator: torch.Generator) -> Tensor:
    """Lloyd's k-means with k-means++ seeding, in float64; returns ``[k, d]`` centroids."""
    n = x.shape[0]
    centres = torch.empty(k, x.shape[1], dtype=x.dtype)
    centres[0] = x[int(torch.randint(n, (1,), generator=generator))]
    d2 = ((x - centres[0]) ** 2).sum(dim=1)
    for i in range(1, k):
        total = float(d2.sum())
        if total <= 0:  # fewer distinct points than centres: repeat one
            idx = int(torch.randint(n, (1,), generator=generator))
        else:
            idx = int(torch.multinomial(d2 / total, 1, generator=generator))
        centres[i] = x[idx]
        d2 = torch.minimum(d2, ((x - centres[i]) ** 2).sum(dim=1))
    for _ in range(iterations):
        assign = torch.cdist(x, centres).argmin(dim=1)
        sums = torch.zeros_like(centres).index_add_(0, assign, x)
        counts = torch.bincount(assign, minlength=k).to(x.dtype)
        moved = torch.where(counts[:, None] > 0, sums / counts.clamp(min=1)[:, None], centres)
        if torch.equal(moved, centres):
            break
        centres = moved
    return centres


class ProductQuantizer(EmbeddingQuantizer):
    r"""Split each vector into ``subspaces`` equal chunks and code each by its nearest centroid.

    Jégou et al. (TPAMI 2011): one k-means codebook of ``2**bits`` centroids per chunk,
    trained on the training vectors (Lloyd iterations from k-means++ seeds, seeded). A
    vector costs ``subspaces * bits`` bits and decodes to its chunks' centroids.

    Args:
        subspaces: Number of chunks; must divide the dimension.
        bits: Bits per chunk (1 to 16): ``2**bits`` centroids per codebook.
        iterations: Most Lloyd iterations per codebook.
        seed: Seed of the k-means++ draws.

    Attributes:
        codebooks: ``[subspaces, 2**bits, dim // subspaces]`` centroids.

    Example:
        >>> import torch
        >>> from weightspace.text import ProductQuantizer
        >>> x = torch.tensor([[0.0, 0.0, 5.0, 5.0], [1.0, 1.0, 5.0, 5.0], [0.0, 0.0, 9.0, 9.0]])
        >>> q = ProductQuantizer(subspaces=2, bits=1, seed=0).fit(x)
        >>> q.bits_per_vector, torch.equal(q.round_trip(x), x)
        (2, True)
    """

    def __init__(self, subspaces: int, bits: int = 8, *, iterations: int = 25, seed: int = 0):
        if isinstance(subspaces, bool) or not isinstance(subspaces, int) or subspaces < 1:
            raise WeightspaceValueError(f"`subspaces` must be an int >= 1, got {subspaces!r}")
        if isinstance(bits, bool) or not isinstance(bits, int) or not 1 <= bits <= 16:
            raise WeightspaceValueError(f"`bits` must be an int from 1 to 16, got {bits!r}")
        if isinstance(iterations, bool) or not isinstance(iterations, int) or iterations < 0:
            raise WeightspaceValueError(f"`iterations` must be an int >= 0, got {iterations!r}")
        self.subspaces = subspaces
        self.bits = bits
        self.iterations = iterations
        self.seed = int(seed)
        self.codebooks = torch.zeros(0, 0, 0)

    @property
    def levels(self) -> tuple[int, ...]:
        """``2**bits`` values in each of the ``subspaces`` columns."""
        self._check_fitted()
        return (2**self.bits,) * self.subspaces

    @property
    def side_bits(self) -> int:
        """The codebooks in float32."""
        self._check_fitted()
        return 32 * self.codebooks.numel()

    def fit(self, x: Tensor) -> ProductQuantizer:
        """Train one codebook per chunk on the training vectors ``x``.

        Args:
            x: Training vectors, ``[N, dim]``, with ``N >= 2**bits``.

        Returns:
            The quantiser itself.

        Raises:
            WeightspaceValueError: if ``subspaces`` does not divide ``dim`` or there are fewer
                training vectors than centroids.
        """
        x = _matrix(x, "x")
        n, dim = x.shape
        if dim % self.subspaces:
            raise WeightspaceValueError(
                f"`subspaces`={self.subspaces} must divide the dimension {dim}; pick a divisor"
            )
        k = 2**self.bits
        if n < k:
            raise WeightspaceValueError(
                f"`bits`={self.bits} needs at least {k} training vectors (one per centroid), got "
                f"{n}; lower bits or fit on more vectors"
            )
        g = torch.Generator().manual_seed(self.seed)
        chunks = x.double().reshape(n, self.subspaces, dim // self.subspaces)
        books = [_kmeans(chunks[:, j], k, self.iterations, g) for j in range(self.subspaces)]
        self.codebooks = torch.stack(books).float()
        self._fitted = True
        return self

    def encode(self, x: Tensor) -> Tensor:
        """Codes ``[N, subspaces]``: the nearest centroid of each chunk."""
        self._check_fitted()
        m, _, sub = self.codebooks.shape
        x = _matrix(x, "x", m * sub)
        chunks = x.reshape(len(x), m, sub).transpose(0, 1)  # [m, N, sub]
        dist = (
            (chunks**2).sum(-1, keepdim=True)
            - 2 * chunks @ self.codebooks.transpose(1, 2)
            + (self.codebooks**2).sum(-1)[:, None, :]
        )
        return dist.argmin(dim=2).T.contiguous().long()

    def decode(self, codes: Tensor) -> Tensor:
        """Vectors ``[N, dim]``: each chunk's centroid."""
        codes = self._check_codes(codes)
        m = self.codebooks.shape[0]
        parts = self.codebooks[torch.arange(m)[None, :], codes]  # [N, m, sub]
        return parts.reshape(len(codes), -1)
