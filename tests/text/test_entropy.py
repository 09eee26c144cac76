"""Huffman coding of quantiser codes: exact sizes, round trips, the Kraft equality."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from weightspace import WeightspaceValueError
from weightspace.text import HuffmanCoder, ScalarQuantizer


def test_hand_worked_code() -> None:
    # Counts 4, 1, 1 (symbol 3 unseen, no smoothing): lengths 1, 2, 2; canonical 0, 10, 11.
    train = torch.tensor([[0], [0], [0], [1], [2], [0]])
    coder = HuffmanCoder(levels=(4,), smoothing=0).fit(train)
    assert coder.lengths == [[1, 2, 2, 0]]
    rows = torch.tensor([[0, 1, 2, 0]]).T  # four one-column rows
    assert coder.encode(rows) == [b"\x00", b"\x80", b"\xc0", b"\x00"]
    assert coder.code_lengths(rows).tolist() == [1, 2, 2, 1]
    with pytest.raises(WeightspaceValueError, match="never occurred in training"):
        coder.code_lengths(torch.tensor([[3]]))


def test_skewed_codes_cost_less_than_the_fixed_rate() -> None:
    g = torch.Generator().manual_seed(0)
    x = torch.randn(3000, 8, generator=g)  # Gaussian: the middle cells are the common ones
    q = ScalarQuantizer(bits=4).fit(x)
    codes = q.encode(x)
    coder = HuffmanCoder(q.levels).fit(codes[:2000])
    held = codes[2000:]
    mean_bits = float(coder.code_lengths(held).double().mean())
    entropy = coder.entropy_bits(held)
    assert entropy <= mean_bits < q.bits_per_vector
    assert mean_bits < entropy + len(q.levels)  # Huffman: within one bit per column


@given(
    levels=st.lists(st.integers(1, 40), min_size=1, max_size=6),
    seed=st.integers(0, 2**16),
    n=st.integers(1, 30),
)
def test_round_trip_and_exact_sizes(levels: list[int], seed: int, n: int) -> None:
    g = torch.Generator().manual_seed(seed)
    top = torch.tensor(levels)
    skew = torch.rand(n, len(levels), generator=g) ** 3  # uneven symbol frequencies
    codes = (skew * top).long().clamp(max=top - 1)
    coder = HuffmanCoder(levels).fit(codes)
    blobs = coder.encode(codes)
    sizes = coder.code_lengths(codes)
    assert [len(b) for b in blobs] == [math.ceil(int(s) / 8) for s in sizes]
    assert torch.equal(coder.decode(blobs), codes)
    for j, lengths in enumerate(coder.lengths):
        if levels[j] > 1:  # a complete prefix code: the Kraft sum is exactly one
            assert sum(2.0**-length for length in lengths) == 1.0
        else:
            assert lengths == [0]


def test_errors() -> None:
    with pytest.raises(WeightspaceValueError, match="`levels` must be a non-empty sequence"):
        HuffmanCoder(levels=(2**32,))
    with pytest.raises(WeightspaceValueError, match="is not fitted"):
        HuffmanCoder(levels=(2,)).encode(torch.zeros(1, 1, dtype=torch.long))
    coder = HuffmanCoder(levels=(2, 3)).fit(torch.tensor([[0, 1], [1, 2]]))
    with pytest.raises(WeightspaceValueError, match="ends inside column"):
        coder.decode([b""])
    with pytest.raises(WeightspaceValueError, match=r"`codes\[0, 1\]` = 3 is outside \[0, 3\)"):
        coder.encode(torch.tensor([[0, 3]]))
