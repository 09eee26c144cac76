"""Neural encodings: covariances, Procrustes, and the same FunctionalMap identities on neurons."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.stats import ortho_group
from torch import nn

from weightspace import ShapeMismatchError, WeightspaceValueError, spectral

SEEDS = st.integers(0, 10_000)


def _random_cov(d: int, seed: int) -> np.ndarray:
    x = np.random.default_rng(seed).normal(size=(3 * d, d)) * np.linspace(2.0, 0.3, d)
    return x.T @ x / (3 * d)


@settings(max_examples=20)
@given(
    shape=st.tuples(st.integers(1, 6), st.integers(1, 5), st.integers(1, 3), st.integers(1, 3)),
    seed=SEEDS,
)
def test_weight_covariance_traces_agree(shape: tuple[int, int, int, int], seed: int) -> None:
    w = torch.from_numpy(np.random.default_rng(seed).normal(size=shape))
    cov = spectral.weight_covariances(w)
    o, c, h, k = shape
    assert cov.spatial.shape == (h * k, h * k) and cov.channel.shape == (c, c)
    total = float((w**2).sum())
    assert np.trace(cov.spatial) * o * c == pytest.approx(total)
    assert np.trace(cov.channel) * o * h * k == pytest.approx(total)
    for m in cov:
        assert np.linalg.eigvalsh(m).min() > -1e-12


@settings(max_examples=20)
@given(d=st.integers(2, 9), seed=SEEDS)
def test_neuron_permutation_leaves_the_encoding_map_unchanged(d: int, seed: int) -> None:
    sx = _random_cov(d, seed)
    sy = _random_cov(d, seed + 1)
    q = ortho_group.rvs(d, random_state=np.random.default_rng(seed + 2)) if d > 1 else np.eye(1)
    base = spectral.neural_encoding_map(sx, sy, q)
    p = np.eye(d)[np.random.default_rng(seed + 3).permutation(d)]
    # relabel the neurons of Y: covariance P S P^T, correspondence P Q
    relabelled = spectral.neural_encoding_map(sx, p @ sy @ p.T, p @ q)
    np.testing.assert_allclose(relabelled.matrix, base.matrix, atol=1e-8)
    assert relabelled.bures_wasserstein_similarity() == pytest.approx(
        base.bures_wasserstein_similarity(), abs=1e-10
    )


@settings(max_examples=20)
@given(d=st.integers(2, 9), seed=SEEDS)
def test_rotated_network_gives_orthogonal_commuting_map(d: int, seed: int) -> None:
    sx = _random_cov(d, seed)
    r = ortho_group.rvs(d, random_state=np.random.default_rng(seed + 1))
    fmap = spectral.neural_encoding_map(sx, r @ sx @ r.T, r)
    assert fmap.orthogonality_defect() < 1e-9
    assert fmap.commutativity_defect() < 1e-8
    np.testing.assert_allclose(abs(fmap.matrix), np.eye(d), atol=1e-6)
    assert fmap.bures_wasserstein_similarity() == pytest.approx(1.0, abs=1e-9)


@settings(max_examples=20)
@given(d=st.integers(1, 8), seed=SEEDS)
def test_bures_similarity_through_the_map_equals_the_direct_formula(d: int, seed: int) -> None:
    sx, sy = _random_cov(d, seed), _random_cov(d, seed + 1)
    q = ortho_group.rvs(d, random_state=np.random.default_rng(seed)) if d > 1 else np.eye(1)
    direct = spectral.bures_wasserstein_similarity(sx, sy, q)
    via_map = spectral.neural_encoding_map(sx, sy, q).bures_wasserstein_similarity()
    assert via_map == pytest.approx(direct, abs=1e-8)
    assert 0.0 <= direct <= 1.0 + 1e-12


@settings(max_examples=20)
@given(n=st.integers(20, 60), d=st.integers(1, 6), seed=SEEDS)
def test_procrustes_recovers_rotation_and_cka_is_rotation_invariant(
    n: int, d: int, seed: int
) -> None:
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, d))
    r = ortho_group.rvs(d, random_state=rng) if d > 1 else np.array([[-1.0]])
    y = x @ r.T + 5.0
    np.testing.assert_allclose(spectral.procrustes_rotation(x, y), r, atol=1e-8)
    assert spectral.linear_cka(x, 2.5 * y) == pytest.approx(1.0, abs=1e-10)


def test_collect_activations_and_channel_samples() -> None:
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(1, 3, 3, padding=1), nn.ReLU(), nn.Conv2d(3, 2, 3)).train()
    x = torch.randn(5, 1, 6, 6)
    acts = spectral.collect_activations(net, x, ["1", "2"], batch_size=2)
    assert acts["1"].shape == (5, 3, 6, 6) and acts["2"].shape == (5, 2, 4, 4)
    inputs = spectral.collect_activations(net, x, ["2"], kind="input")
    torch.testing.assert_close(inputs["2"], acts["1"])
    assert net.training  # mode restored
    rows = spectral.channel_samples(acts["1"])
    assert rows.shape == (180, 3)
    torch.testing.assert_close(rows[7], acts["1"][0, :, 1, 1])
    assert spectral.channel_samples(acts["1"], max_samples=10, seed=1).shape == (10, 3)
    with pytest.raises(WeightspaceValueError, match="unknown submodules"):
        spectral.collect_activations(net, x, ["9"])


def test_neural_errors() -> None:
    with pytest.raises(ShapeMismatchError, match="need a `correspondence`"):
        spectral.neural_encoding_map(np.eye(2), np.eye(3))
    with pytest.raises(ShapeMismatchError, match="same samples"):
        spectral.procrustes_rotation(np.zeros((3, 2)), np.zeros((4, 2)))
    with pytest.raises(WeightspaceValueError, match="`weight` must have 2 or 4"):
        spectral.weight_covariances(np.zeros(3))


def test_linear_cka_sample_and_feature_forms_agree() -> None:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(30, 50))
    y = x @ rng.normal(size=(50, 40))
    wide = spectral.linear_cka(x, y)  # more features than inputs: Gram-matrix form
    a, b = x - x.mean(0), y - y.mean(0)
    ref = np.linalg.norm(b.T @ a) ** 2 / (np.linalg.norm(a.T @ a) * np.linalg.norm(b.T @ b))
    assert wide == pytest.approx(ref, rel=1e-10)
