"""Permutations: a permuted network computes the same function; the group algebra."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from weightspace import ShapeMismatchError, WeightspaceValueError, align, io
from weightspace.align import Permutation, PermutationSpec

SEEDS = st.integers(0, 2**16)
NAMES = st.sampled_from(["mlp", "cnn", "transformer", "attention1", "attention2"])


@settings(max_examples=12, deadline=None)
@given(name=NAMES, weights=SEEDS, seed=SEEDS)
def test_permuted_network_computes_the_same_function(zoo, name: str, weights: int, seed: int):
    model = zoo.make(name, weights)
    spec = zoo.spec(name)
    perm = Permutation.random(spec, seed=seed)
    other = align.permute(model, spec, perm)
    x = zoo.input(name, n=5, seed=seed)
    with torch.no_grad():
        y, y_other = model(x), other(x)
    assert torch.allclose(y_other, y, rtol=1e-5, atol=1e-5), (y_other - y).abs().max()
    # ... while the weights did move (every group has more than one unit)
    if not perm.is_identity():
        assert any(not torch.equal(a, b) for a, b in zip(
            model.state_dict().values(), other.state_dict().values(), strict=True
        ))  # fmt: skip


@settings(max_examples=10, deadline=None)
@given(name=NAMES, weights=SEEDS, seed=SEEDS)
def test_inverse_undoes_and_identity_changes_nothing(zoo, name: str, weights: int, seed: int):
    sd = zoo.make(name, weights).state_dict()
    spec = zoo.spec(name)
    perm = Permutation.random(spec, seed=seed)
    back = perm.inverse().apply(spec, perm.apply(spec, sd))
    assert all(torch.equal(back[k], v) for k, v in sd.items())
    assert (perm.inverse() @ perm).is_identity()
    assert (perm @ perm.inverse()) == Permutation.identity(spec)
    same = Permutation.identity(spec).apply(spec, sd)
    assert list(same) == list(sd)
    assert all(torch.equal(same[k], v) for k, v in sd.items())


@settings(max_examples=30, deadline=None)
@given(
    sizes=st.dictionaries(st.sampled_from("abc"), st.integers(1, 7), min_size=1),
    seeds=st.lists(SEEDS, min_size=3, max_size=3),
)
def test_composition_is_associative_and_acts_like_applying_twice(sizes, seeds) -> None:
    p, q, r = (Permutation.random(sizes, seed=s) for s in seeds)
    assert (p @ q) @ r == p @ (q @ r)
    assert p @ Permutation.identity(sizes) == p == Permutation.identity(sizes) @ p
    spec = PermutationSpec({f"w_{g}": (g, None) for g in sizes} | {"mix": (*sizes,)})
    sd = {f"w_{g}": torch.randn(n, 2) for g, n in sizes.items()}
    sd["mix"] = torch.randn(*sizes.values())
    twice = p.apply(spec, q.apply(spec, sd))
    once = (p @ q).apply(spec, sd)
    assert all(torch.equal(twice[k], once[k]) for k in sd)


def test_block_axes_move_whole_blocks() -> None:
    spec = PermutationSpec({"fc": (None, align.Axis("c", 3))})
    sd = {"fc": torch.arange(6.0).reshape(1, 6)}
    out = Permutation({"c": torch.tensor([1, 0])}).apply(spec, sd)
    assert out["fc"].tolist() == [[3.0, 4.0, 5.0, 0.0, 1.0, 2.0]]


def test_permute_never_mutates(zoo) -> None:
    model = zoo.make("cnn")
    spec = zoo.spec("cnn")
    before = {k: v.clone() for k, v in model.state_dict().items()}
    perm = Permutation.random(spec, seed=5)
    new_model = align.permute(model, spec, perm)
    new_sd = align.permute(model.state_dict(), spec, perm)
    assert new_model is not model
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert all(torch.equal(new_sd[k], v) for k, v in new_model.state_dict().items())


def test_permutation_errors() -> None:
    with pytest.raises(WeightspaceValueError, match=r"`perms\['h'\]` must hold each of 0\.\.2"):
        Permutation({"h": torch.tensor([0, 0, 2])})
    with pytest.raises(WeightspaceValueError, match=r"`perms\['h'\]` must be a 1-D integer"):
        Permutation({"h": torch.tensor([0.0, 1.0])})
    with pytest.raises(WeightspaceValueError, match="`perms` must map group names"):
        Permutation([0, 1])  # type: ignore[arg-type]
    with pytest.raises(ShapeMismatchError, match="group 'h' has 2 units in `self` but 3"):
        Permutation.identity({"h": 2}) @ Permutation.identity({"h": 3})
    with pytest.raises(WeightspaceValueError, match=r"`sizes\['h'\]` must be a positive integer"):
        Permutation.identity({"h": 0})
    with pytest.raises(WeightspaceValueError, match="sizes of groups \\['h'\\] are unknown"):
        Permutation.identity(PermutationSpec({"w": ("h",)}))
    spec = PermutationSpec({"w": ("h", None)})
    sd = {"w": torch.zeros(3, 2)}
    with pytest.raises(WeightspaceValueError, match=r"groups \['g'\] that `spec` does not know"):
        Permutation.identity({"g": 3}).apply(spec, sd)
    with pytest.raises(ShapeMismatchError, match=r"3 units in `state_dict` \(axis 0 of 'w'\)"):
        Permutation.identity({"h": 4}).apply(spec, sd)
    with pytest.raises(WeightspaceValueError, match="`spec` must be a PermutationSpec"):
        Permutation.identity({"h": 3}).apply({"w": ("h", None)}, sd)  # type: ignore[arg-type]
    with pytest.raises(WeightspaceValueError, match="`perm` must be a Permutation"):
        align.permute(sd, spec, {"h": torch.arange(3)})  # type: ignore[arg-type]
    with pytest.raises(
        WeightspaceValueError,
        match=r"^`state_dict` must map names \(str\) to tensors, but 1 entries do not \(e\.g\. "
        r"\['w'\]\)",
    ):
        Permutation.identity({"h": 3}).apply(spec, {"w": [1, 2]})  # type: ignore[dict-item]
    with pytest.raises(
        WeightspaceValueError, match=r"^`state_dict` must be an nn\.Module, .* got int"
    ):
        Permutation.identity({"h": 3}).apply(spec, 3)  # type: ignore[arg-type]
    with pytest.raises(
        WeightspaceValueError, match=r"^`model_or_state` '.*nope\.safetensors' does not"
    ):
        align.permute("nope.safetensors", spec, Permutation.identity({"h": 3}))


def test_repr() -> None:
    assert repr(Permutation.identity({"h": 3, "g": 2})) == "Permutation({'h': 3, 'g': 2})"


def test_every_align_entry_point_reads_checkpoint_paths(zoo, tmp_path) -> None:
    spec = zoo.spec("mlp")
    model = zoo.make("mlp", 1)
    perm = Permutation.random(spec, seed=4)
    sd = {k: v.clone() for k, v in model.state_dict().items()}
    shuffled = perm.apply(spec, sd)
    io.save_state_dict(sd, tmp_path / "a.safetensors")
    (tmp_path / "b").mkdir()
    io.save_state_dict(shuffled, tmp_path / "b" / "model.safetensors")  # read as a folder
    a, b = tmp_path / "a.safetensors", str(tmp_path / "b")

    from_path = perm.apply(spec, a)
    assert sorted(from_path) == sorted(shuffled)  # a file lists its tensors by name
    assert all(torch.equal(from_path[k], v) for k, v in shuffled.items())
    permuted = align.permute(b, spec, perm.inverse())
    assert all(torch.equal(permuted[k], v) for k, v in sd.items())
    assert align.weight_matching(spec, a, b) == perm.inverse()
    mid, expected = align.interpolate(a, b, 0.25), align.interpolate(sd, shuffled, 0.25)
    assert sorted(mid) == sorted(expected)
    assert all(torch.equal(mid[k], v) for k, v in expected.items())
    assert not torch.equal(expected["fc1.weight"], sd["fc1.weight"])
    seen: list[float] = []
    result = align.loss_barrier(
        lambda state: seen.append(float(state["out.bias"].sum())) or 0.0, a, b, steps=3
    )
    assert result.values == (0.0, 0.0, 0.0)
    assert seen[0] == float(sd["out.bias"].sum()) and seen[-1] == float(shuffled["out.bias"].sum())
