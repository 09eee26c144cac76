"""Weight matching and activation matching recover permutations and improve alignment."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from weightspace import ShapeMismatchError, WeightspaceValueError, align
from weightspace.align import Permutation, PermutationSpec

SEEDS = st.integers(0, 2**16)
NAMES = st.sampled_from(["mlp", "cnn", "transformer", "attention1", "attention2"])


def _objective(spec: PermutationSpec, ref: dict, other: dict) -> float:
    return sum(float((ref[k].double() * other[k].double()).sum()) for k in spec.axes)


@settings(max_examples=12, deadline=None)
@given(name=NAMES, weights=SEEDS, seed=SEEDS)
def test_weight_matching_recovers_the_permutation(zoo, name: str, weights: int, seed: int):
    model = zoo.make(name, weights)
    spec = zoo.spec(name)
    perm = Permutation.random(spec, seed=seed)
    shuffled = perm.apply(spec, model.state_dict())
    found = align.weight_matching(spec, model, shuffled, seed=seed)
    assert found == perm.inverse()
    aligned = found.apply(spec, shuffled)
    assert all(torch.equal(aligned[k], v) for k, v in model.state_dict().items())


@settings(max_examples=10, deadline=None)
@given(name=NAMES, weights=SEEDS, seed=SEEDS)
def test_activation_matching_recovers_the_permutation(zoo, name: str, weights: int, seed: int):
    model = zoo.make(name, weights)
    spec = zoo.spec(name)
    perm = Permutation.random(spec, seed=seed)
    shuffled = align.permute(model, spec, perm)
    data = zoo.input(name, n=32, seed=seed + 1)
    assert align.activation_matching(model, shuffled, data, spec) == perm.inverse()


@settings(max_examples=6, deadline=None)
@given(name=NAMES, seeds=st.tuples(SEEDS, SEEDS))
def test_weight_matching_of_independent_networks_increases_the_objective(zoo, name, seeds):
    spec = zoo.spec(name)
    a, b = (zoo.make(name, s).state_dict() for s in seeds)
    found = align.weight_matching(spec, a, b)
    assert _objective(spec, a, found.apply(spec, b)) >= _objective(spec, a, b) - 1e-9
    assert align.weight_matching(spec, a, b) == found  # reproducible


def test_matching_two_trained_like_networks_lowers_their_distance(zoo) -> None:
    spec = zoo.spec("mlp")
    a = zoo.make("mlp", 0).state_dict()
    # b: a permuted and slightly perturbed copy of a
    noisy = {k: v + 0.05 * torch.randn(v.shape, generator=torch.Generator().manual_seed(1))
             for k, v in a.items()}  # fmt: skip
    b = Permutation.random(spec, seed=2).apply(spec, noisy)
    aligned = align.weight_matching(spec, a, b).apply(spec, b)

    def dist(s: dict) -> float:
        return sum(float((a[k] - s[k]).norm() ** 2) for k in a)

    assert dist(aligned) < 0.01 * dist(b)


def test_activation_matching_reads_batches_and_restores_modes(zoo) -> None:
    model = zoo.make("cnn", 3).train()
    spec = zoo.spec("cnn")
    perm = Permutation.random(spec, seed=4)
    shuffled = align.permute(model, spec, perm)
    x = zoo.input("cnn", n=40, seed=5)
    loader = torch.utils.data.DataLoader(
        torch.utils.data.TensorDataset(x, torch.zeros(40)), batch_size=8
    )
    before = {k: v.clone() for k, v in model.state_dict().items()}
    found = align.activation_matching(model, shuffled, loader, spec, max_batches=4)
    assert found == perm.inverse()
    assert model.training and shuffled.training
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert not any(m._forward_hooks for m in model.modules())


def test_weight_matching_init_and_errors(zoo) -> None:
    spec = zoo.spec("mlp")
    a, b = zoo.make("mlp", 0), zoo.make("mlp", 1)
    start = Permutation.random(spec, seed=0)
    assert isinstance(align.weight_matching(spec, a, b, init=start, max_iter=1), Permutation)
    with pytest.raises(WeightspaceValueError, match="`max_iter` must be a positive integer, got 0"):
        align.weight_matching(spec, a, b, max_iter=0)
    wide = zoo.make("mlp").state_dict() | {"fc1.weight": torch.zeros(6, 5)}
    with pytest.raises(ShapeMismatchError, match=r"`reference\['fc1.weight'\]` has shape \[6, 4\]"):
        align.weight_matching(spec, a, wide)
    short = {k: v for k, v in b.state_dict().items() if k != "out.weight"}
    with pytest.raises(ShapeMismatchError, match=r"missing from `other`: \['out.weight'\]"):
        align.weight_matching(spec, a, short)
    with pytest.raises(ShapeMismatchError, match=r"`init\['fc1'\]` has 3 units"):
        align.weight_matching(spec, a, b, init=Permutation.identity({"fc1": 3}))
    with pytest.raises(WeightspaceValueError, match=r"`other` must be an nn\.Module, .* got list"):
        align.weight_matching(spec, a, [1, 2])  # type: ignore[arg-type]


def test_activation_matching_errors(zoo) -> None:
    net = nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Linear(4, 2))
    x = torch.randn(8, 3)
    hand = PermutationSpec({"0.weight": ("h", None), "0.bias": ("h",), "2.weight": (None, "h")})
    with pytest.raises(WeightspaceValueError, match=r"groups \['h'\] have no producing module"):
        align.activation_matching(net, net, x, hand)
    wrong = PermutationSpec(dict(hand.axes), producers={"h": [("9", -1)]})
    with pytest.raises(WeightspaceValueError, match="producer '9' is not a submodule of `ref"):
        align.activation_matching(net, net, x, wrong)
    ok = PermutationSpec(dict(hand.axes), producers={"h": "0"})
    assert align.activation_matching(net, net, x, ok).is_identity()
    with pytest.raises(WeightspaceValueError, match="`reference` must be a torch.nn.Module"):
        align.activation_matching(net.state_dict(), net, x, ok)  # type: ignore[arg-type]
    with pytest.raises(WeightspaceValueError, match="`data` holds no batch"):
        align.activation_matching(net, net, iter([]), ok)
    with pytest.raises(
        WeightspaceValueError, match="`data` must be a tensor, a Dataset, a DataLoa"
    ):
        align.activation_matching(net, net, 3, ok)
    with pytest.raises(WeightspaceValueError, match="`max_batches` must be a positive integer"):
        align.activation_matching(net, net, x, ok, max_batches=0)
    bad_dim = PermutationSpec(dict(hand.axes), producers={"h": [("0", 0)]})
    with pytest.raises(ShapeMismatchError, match="not a multiple of its group's 4 units"):
        align.activation_matching(net, net, torch.randn(7, 3), bad_dim)


def test_activation_matching_takes_the_batching_contract(zoo) -> None:
    model = zoo.make("cnn", 3)
    spec = zoo.spec("cnn")
    shuffled = align.permute(model, spec, Permutation.random(spec, seed=4))
    x = zoo.input("cnn", n=40, seed=5)
    expected = align.activation_matching(model, shuffled, x, spec)
    assert align.activation_matching(model, shuffled, (x, torch.zeros(40)), spec) == expected
    dataset = torch.utils.data.TensorDataset(x)
    assert align.activation_matching(model, shuffled, dataset, spec) == expected
    with pytest.warns(FutureWarning, match="as a list of batches"):
        listed = align.activation_matching(model, shuffled, list(x.split(8)), spec)
    assert listed == align.activation_matching(model, shuffled, iter(x.split(8)), spec)
