"""Embedding quantisers: round trips, exact bit counts and errors."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from weightspace import ShapeMismatchError, WeightspaceValueError
from weightspace.text import PCAQuantizer, ProductQuantizer, ScalarQuantizer


def _embeddings(n: int = 400, d: int = 16, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.nn.functional.normalize(torch.randn(n, d, generator=g), dim=1)


def test_scalar_8_bits_round_trip_within_half_a_step() -> None:
    x = _embeddings()
    q = ScalarQuantizer(bits=8).fit(x)
    span = x.max(dim=0).values - x.min(dim=0).values
    err = (q.round_trip(x) - x).abs()
    # The stated bound: half a cell, (hi - lo) / 2**9 per coordinate (float rounding aside).
    assert bool((err <= span / 512 + 1e-6).all())
    assert float(err.max()) > 0.25 * float((span / 512).max())  # the bound is nearly tight
    assert q.bits_per_vector == 8 * 16 and q.levels == (256,) * 16


@pytest.mark.parametrize("bits", [1, 2, 4, 8])
def test_scalar_bits_and_codes_are_exact(bits: int) -> None:
    x = _embeddings()
    q = ScalarQuantizer(bits=bits).fit(x)
    codes = q.encode(x)
    assert codes.dtype == torch.int64 and codes.shape == (400, 16)
    assert int(codes.min()) == 0 and int(codes.max()) == 2**bits - 1  # extremes hit the edges
    assert q.bits_per_vector == bits * 16
    assert q.side_bits == 32 * 2 * 16
    # Decoding lands inside the code's own cell: encoding it again gives the same codes.
    assert torch.equal(q.encode(q.decode(codes)), codes)


def test_scalar_error_shrinks_with_bits() -> None:
    x = _embeddings()
    errs = [
        float(((ScalarQuantizer(b).fit(x).round_trip(x) - x) ** 2).mean()) for b in (1, 2, 4, 8)
    ]
    assert errs == sorted(errs, reverse=True) and errs[-1] < 1e-5


def test_scalar_32_bits_is_lossless_float32() -> None:
    x = _embeddings()
    x[0, 0] = -0.0
    q = ScalarQuantizer(bits=32).fit(x)
    codes = q.encode(x)
    assert int(codes.min()) >= 0 and int(codes.max()) < 2**32
    out = q.decode(codes)
    assert torch.equal(out.view(torch.int32), x.view(torch.int32))  # bit for bit, -0.0 too
    assert q.bits_per_vector == 32 * 16 and q.side_bits == 0


def test_scalar_one_bit_hand_worked() -> None:
    x = torch.tensor([[-1.0], [0.0], [0.2], [1.0]])
    q = ScalarQuantizer(bits=1).fit(x)
    assert q.encode(x).tolist() == [[0], [1], [1], [1]]  # the cell boundary is 0
    assert q.decode(torch.tensor([[0], [1]])).tolist() == [[-0.5], [0.5]]
    m = ScalarQuantizer(bits=1, centres="mean").fit(x)
    assert m.decode(torch.tensor([[0], [1]]))[:, 0].tolist() == pytest.approx([-1.0, 0.4])


def test_scalar_clip_clamps_outliers_to_edge_cells() -> None:
    x = torch.linspace(0, 1, 1001)[:, None]
    q = ScalarQuantizer(bits=2, clip=0.1).fit(x)
    assert q.lo.tolist() == pytest.approx([0.1]) and q.step.tolist() == pytest.approx([0.2])
    assert q.encode(torch.tensor([[-5.0], [5.0]])).tolist() == [[0], [3]]


def test_constant_dimension_decodes_exactly() -> None:
    x = torch.stack([torch.full((50,), 0.3), torch.linspace(-1, 1, 50)], dim=1)
    q = ScalarQuantizer(bits=4).fit(x)
    assert torch.equal(q.round_trip(x)[:, 0], x[:, 0])


@given(bits=st.integers(1, 12), seed=st.integers(0, 2**16), d=st.integers(1, 6))
def test_scalar_code_identity_and_bits(bits: int, seed: int, d: int) -> None:
    x = torch.randn(40, d, generator=torch.Generator().manual_seed(seed))
    q = ScalarQuantizer(bits).fit(x)
    codes = q.encode(x)
    assert torch.equal(q.encode(q.decode(codes)), codes)
    assert q.bits_per_vector == bits * d == sum(math.ceil(math.log2(n)) for n in q.levels)


def test_pca_full_rank_float32_reconstructs() -> None:
    x = _embeddings()
    q = PCAQuantizer(components=16, bits=32).fit(x)
    assert q.explained == pytest.approx(1.0)
    assert torch.allclose(q.round_trip(x), x, atol=1e-5)
    basis = q.basis
    assert torch.allclose(basis.T @ basis, torch.eye(16), atol=1e-5)
    assert q.bits_per_vector == 16 * 32


def test_pca_truncation_keeps_the_top_directions() -> None:
    g = torch.Generator().manual_seed(1)
    x = torch.randn(500, 4, generator=g) * torch.tensor([4.0, 2.0, 0.1, 0.05])
    q = PCAQuantizer(components=2, bits=8).fit(x)
    assert q.bits_per_vector == 16 and q.levels == (256, 256)
    assert q.explained > 0.99
    assert q.side_bits == 32 * (4 + 4 * 2) + 32 * 2 * 2
    err = (q.round_trip(x) - x).pow(2).sum(1).mean()
    assert float(err) < 0.05


def test_pca_needs_enough_vectors() -> None:
    with pytest.raises(WeightspaceValueError, match=r"`components`=5 exceeds min\(N, dim\) = 3"):
        PCAQuantizer(components=5).fit(torch.randn(3, 8))


def test_product_quantizer_recovers_clustered_data() -> None:
    g = torch.Generator().manual_seed(0)
    centres = torch.randn(4, 8, generator=g) * 5
    labels = torch.arange(200) % 4
    x = centres[labels] + 0.01 * torch.randn(200, 8, generator=g)
    q = ProductQuantizer(subspaces=2, bits=2, seed=0).fit(x)
    assert q.bits_per_vector == 4 and q.codebooks.shape == (2, 4, 4)
    assert float((q.round_trip(x) - x).abs().max()) < 0.1
    assert q.side_bits == 32 * 2 * 4 * 4
    # Same seed, same codebooks; the codes of a centroid are that centroid.
    again = ProductQuantizer(subspaces=2, bits=2, seed=0).fit(x)
    assert torch.equal(again.codebooks, q.codebooks)
    codes = q.encode(x)
    assert torch.equal(q.encode(q.decode(codes)), codes)


def test_product_quantizer_beats_scalar_at_equal_rate_on_correlated_data() -> None:
    g = torch.Generator().manual_seed(0)
    z = torch.randn(2000, 2, generator=g)
    x = torch.cat([z, z + 0.05 * torch.randn(2000, 2, generator=g)], dim=1)  # 4 dims, rank ~2
    pq = ProductQuantizer(subspaces=1, bits=8, seed=0).fit(x)
    sq = ScalarQuantizer(bits=2).fit(x)
    assert pq.bits_per_vector == sq.bits_per_vector == 8
    mse = [float((q.round_trip(x) - x).pow(2).mean()) for q in (pq, sq)]
    assert mse[0] < 0.5 * mse[1]


def test_errors_name_the_argument() -> None:
    with pytest.raises(WeightspaceValueError, match="`bits` must be an int from 1 to 16"):
        ScalarQuantizer(bits=0)
    with pytest.raises(WeightspaceValueError, match=r"`clip` must be a fraction in \[0, 0.5\)"):
        ScalarQuantizer(bits=4, clip=0.5)
    with pytest.raises(WeightspaceValueError, match="is not fitted; call `.fit"):
        ScalarQuantizer(bits=4).encode(torch.zeros(1, 3))
    q = ScalarQuantizer(bits=2).fit(torch.randn(10, 3))
    with pytest.raises(
        ShapeMismatchError, match="has 4 dimensions but the quantiser was fitted on 3"
    ):
        q.encode(torch.zeros(1, 4))
    with pytest.raises(WeightspaceValueError, match=r"`codes\[0, 1\]` = 4 is outside \[0, 4\)"):
        q.decode(torch.tensor([[0, 4, 0]]))
    with pytest.raises(WeightspaceValueError, match="NaN or infinite"):
        q.encode(torch.tensor([[0.0, float("nan"), 0.0]]))
    with pytest.raises(WeightspaceValueError, match="`subspaces`=5 must divide the dimension 8"):
        ProductQuantizer(subspaces=5, bits=2).fit(torch.randn(10, 8))
    with pytest.raises(WeightspaceValueError, match="`bits`=4 needs at least 16 training vectors"):
        ProductQuantizer(subspaces=2, bits=4).fit(torch.randn(10, 8))
