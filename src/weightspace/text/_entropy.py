"""Entropy coding of quantiser codes: one canonical Huffman code per column, fitted on training."""

from __future__ import annotations

import heapq
import math
from collections.abc import Sequence

import torch
from torch import Tensor

from weightspace._errors import ShapeMismatchError, WeightspaceValueError

__all__ = ["HuffmanCoder"]

_MAX_LEVELS = 2**16


def _huffman_lengths(counts: Sequence[int]) -> list[int]:
    """Code lengths of a Huffman code for positive ``counts`` (ties broken by symbol order)."""
    n = len(counts)
    if n == 1:
        return [0]
    heap: list[tuple[int, int, list[int]]] = [(c, i, [i]) for i, c in enumerate(counts)]
    heapq.heapify(heap)
    lengths = [0] * n
    order = n
    while len(heap) > 1:
        c1, _, s1 = heapq.heappop(heap)
        c2, _, s2 = heapq.heappop(heap)
        for s in s1:
            lengths[s] += 1
        for s in s2:
            lengths[s] += 1
        heapq.heappush(heap, (c1 + c2, order, s1 + s2))
        order += 1
    return lengths


def _canonical(lengths: Sequence[int]) -> list[int]:
    """Canonical codewords (as integers) for the given lengths: shorter codes first."""
    codes = [0] * len(lengths)
    code, prev = 0, 0
    for length, sym in sorted((length, s) for s, length in enumerate(lengths)):
        code <<= length - prev
        codes[sym] = code
        code += 1
        prev = length
    return codes


class HuffmanCoder:
    r"""Variable-length codes for the columns of quantiser codes, fitted on training codes.

    Each column ``j`` gets its own canonical Huffman code over its ``levels[j]`` symbols,
    built from the training counts plus ``smoothing`` (so that a symbol never seen in
    training still has a codeword). Sender and receiver share the code tables; a row of codes
    is written as the concatenation of its codewords, padded with zeros to whole bytes. The
    number of columns is fixed, so the padding is never read as a symbol.

    :meth:`code_lengths` gives the exact size of each row in bits (before padding to bytes);
    on average it lies within one bit per column of the empirical entropy of the training
    codes.

    Args:
        levels: Number of symbols of each column (a quantiser's ``levels``); at most 65,536.
        smoothing: Pseudo-count added to every symbol before building the code.

    Attributes:
        lengths: Per column, the codeword length of each symbol.

    Example:
        >>> import torch
        >>> from weightspace.text import HuffmanCoder
        >>> train = torch.tensor([[0], [0], [0], [1], [2], [0]])
        >>> coder = HuffmanCoder(levels=(4,), smoothing=0).fit(train)
        >>> coder.lengths[0]
        [1, 2, 2, 0]
        >>> rows = torch.tensor([[0], [2], [1]])
        >>> coder.code_lengths(rows).tolist()
        [1, 2, 2]
        >>> coder.decode(coder.encode(rows)).tolist()
        [[0], [2], [1]]
    """

    def __init__(self, levels: Sequence[int], *, smoothing: float = 1.0) -> None:
        levels = tuple(levels)
        if not levels or any(
            isinstance(n, bool) or not isinstance(n, int) or not 1 <= n <= _MAX_LEVELS
            for n in levels
        ):
            raise WeightspaceValueError(
                f"`levels` must be a non-empty sequence of ints from 1 to {_MAX_LEVELS}, got "
                f"{levels[:5]!r}{'...' if len(levels) > 5 else ''}; entropy-code quantisers of "
                "at most 16 bits per column"
            )
        if isinstance(smoothing, bool) or not isinstance(smoothing, (int, float)) or smoothing < 0:
            raise WeightspaceValueError(f"`smoothing` must be a number >= 0, got {smoothing!r}")
        self.levels = levels
        self.smoothing = float(smoothing)
        self.lengths: list[list[int]] = []
        self._codes: list[list[int]] = []
        self._tables: list[dict[tuple[int, int], int]] = []
        self._length_table = torch.zeros(0, dtype=torch.int64)

    def _check(self, codes: object, argument: str = "codes") -> Tensor:
        if not isinstance(codes, Tensor) or codes.ndim != 2 or codes.is_floating_point():
            shape = list(codes.shape) if isinstance(codes, Tensor) else type(codes).__name__
            raise WeightspaceValueError(
                f"`{argument}` must be an integer tensor [N, {len(self.levels)}], got {shape}"
            )
        if codes.shape[1] != len(self.levels):
            raise ShapeMismatchError(
                f"`{argument}` has {codes.shape[1]} columns, the coder has {len(self.levels)}"
            )
        top = torch.tensor(self.levels, dtype=torch.int64)
        bad = (codes < 0) | (codes >= top)
        if bool(bad.any()):
            i, j = (int(v) for v in bad.nonzero()[0])
            raise WeightspaceValueError(
                f"`{argument}[{i}, {j}]` = {int(codes[i, j])} is outside [0, {self.levels[j]})"
            )
        return codes.long()

    def fit(self, codes: Tensor) -> HuffmanCoder:
        """Build each column's code from the symbol counts of training ``codes``.

        Args:
            codes: Training codes ``[N, len(levels)]`` (a quantiser's ``encode`` output).

        Returns:
            The coder itself.

        Raises:
            WeightspaceValueError: if a code is outside its column's levels, or a symbol has
                zero weight while ``smoothing`` is 0 and it is needed (every weight zero).
        """
        codes = self._check(codes)
        self.lengths, self._codes, self._tables = [], [], []
        width = max(self.levels)
        table = torch.zeros(len(self.levels), width, dtype=torch.int64)
        for j, n in enumerate(self.levels):
            counts = torch.bincount(codes[:, j], minlength=n).double() + self.smoothing
            # Integer weights keep the construction exact: scale the smoothed counts.
            weights = [round(float(c) * 1024) for c in counts]
            present = [s for s in range(n) if weights[s] > 0]
            if not present:
                raise WeightspaceValueError(
                    f"column {j} has no training symbol and `smoothing` is 0; fit on codes or "
                    "set smoothing > 0"
                )
            sub = _huffman_lengths([weights[s] for s in present])
            if len(present) == 1 and n > 1:
                sub = [1]  # one codeword still needs a bit when other symbols may exist
            lengths = [0] * n
            for s, length in zip(present, sub, strict=True):
                lengths[s] = length
            codewords = _canonical([lengths[s] for s in present])
            words = [0] * n
            for s, w in zip(present, codewords, strict=True):
                words[s] = w
            self.lengths.append(lengths)
            self._codes.append(words)
            self._tables.append({(lengths[s], words[s]): s for s in present})
            table[j, :n] = torch.tensor(lengths)
        self._length_table = table
        return self

    def _check_fitted(self) -> None:
        if not self.lengths:
            raise WeightspaceValueError(
                "this HuffmanCoder is not fitted; call `.fit(training_codes)` first"
            )

    def code_lengths(self, codes: Tensor) -> Tensor:
        """Exact size of each row's codewords in bits (int64 ``[N]``), before byte padding.

        Raises:
            WeightspaceValueError: if a row holds a symbol that has no codeword (possible
                only with ``smoothing=0``).
        """
        self._check_fitted()
        codes = self._check(codes)
        per = torch.gather(self._length_table.expand(len(codes), -1, -1), 2, codes[..., None])
        per = per[..., 0]
        if len(self.levels) and bool(((per == 0) & (torch.tensor(self.levels) > 1)).any()):
            i, j = (int(v) for v in ((per == 0) & (torch.tensor(self.levels) > 1)).nonzero()[0])
            raise WeightspaceValueError(
                f"`codes[{i}, {j}]` = {int(codes[i, j])} never occurred in training and "
                "`smoothing` is 0, so it has no codeword; fit with smoothing > 0"
            )
        return per.sum(dim=1)

    def encode(self, codes: Tensor) -> list[bytes]:
        """Each row's codewords, concatenated and padded with zero bits to whole bytes."""
        lengths = self.code_lengths(codes).tolist()
        out = []
        for row, total in zip(codes.long().tolist(), lengths, strict=True):
            value = 0
            for j, s in enumerate(row):
                value = (value << self.lengths[j][s]) | self._codes[j][s]
            pad = (-total) % 8
            out.append((value << pad).to_bytes((total + pad) // 8, "big"))
        return out

    def decode(self, blobs: Sequence[bytes]) -> Tensor:
        """Codes ``[N, len(levels)]`` read back from the rows that :meth:`encode` wrote.

        Raises:
            WeightspaceValueError: if a row is truncated or holds no valid codeword.
        """
        self._check_fitted()
        rows = []
        for i, blob in enumerate(blobs):
            if not isinstance(blob, (bytes, bytearray)):
                raise WeightspaceValueError(
                    f"`blobs[{i}]` must be bytes written by `encode`, got {type(blob).__name__}"
                )
            value, nbits, pos = int.from_bytes(blob, "big"), 8 * len(blob), 0
            row = []
            for j, table in enumerate(self._tables):
                if self.levels[j] == 1:
                    row.append(0)
                    continue
                code, length = 0, 0
                while True:
                    if pos >= nbits:
                        raise WeightspaceValueError(
                            f"`blobs[{i}]` ends inside column {j}: it is truncated or was not "
                            "written by this coder"
                        )
                    code = (code << 1) | ((value >> (nbits - 1 - pos)) & 1)
                    pos += 1
                    length += 1
                    found = table.get((length, code))
                    if found is not None:
                        row.append(found)
                        break
                    if length > 64:
                        raise WeightspaceValueError(
                            f"`blobs[{i}]` holds no valid codeword in column {j}"
                        )
            rows.append(row)
        return torch.tensor(rows, dtype=torch.int64).reshape(len(rows), len(self.levels))

    def entropy_bits(self, codes: Tensor) -> float:
        """Empirical entropy of ``codes``' columns, summed, in bits per row (a lower bound)."""
        codes = self._check(codes)
        total = 0.0
        for j, n in enumerate(self.levels):
            p = torch.bincount(codes[:, j], minlength=n).double() / len(codes)
            p = p[p > 0]
            total -= float((p * torch.log2(p)).sum())
        return total if math.isfinite(total) else math.nan
