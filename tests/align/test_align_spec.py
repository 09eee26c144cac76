"""Deriving permutation groups from models, and hand-written specs."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from weightspace import ShapeMismatchError, WeightspaceValueError, align
from weightspace.align import Axis, PermutationSpec


def _a(group: str, repeat: int = 1) -> Axis:
    return Axis(group, repeat)


def test_mlp_groups_are_the_hidden_layers(zoo) -> None:
    spec = zoo.spec("mlp")
    assert spec.groups == ("fc1", "fc2")
    assert dict(spec.sizes) == {"fc1": 6, "fc2": 5}
    assert dict(spec.axes) == {
        "fc1.weight": (_a("fc1"), None),
        "fc1.bias": (_a("fc1"),),
        "fc2.weight": (_a("fc2"), _a("fc1")),
        "fc2.bias": (_a("fc2"),),
        "out.weight": (None, _a("fc2")),
    }
    assert dict(spec.producers) == {"fc1": (("fc1", -1),), "fc2": (("fc2", -1),)}


def test_cnn_ties_the_residual_stream_and_expands_flatten(zoo) -> None:
    spec = zoo.spec("cnn")
    stem, inner, down, fc = _a("stem"), _a("block.conv1"), _a("down"), _a("fc")
    stats = ("weight", "bias", "running_mean", "running_var")
    bn = {f"{p}.{s}": (stem,) for p in ("bn", "block.bn2") for s in stats}
    bn |= {f"block.bn1.{s}": (inner,) for s in stats}
    assert dict(spec.axes) == {
        "stem.weight": (stem, None, None, None),
        "stem.bias": (stem,),
        "block.conv1.weight": (inner, stem, None, None),
        "block.conv2.weight": (stem, inner, None, None),
        "down.weight": (down, stem, None, None),
        "down.bias": (down,),
        # 6 channels of 4 x 4 positions, flattened: each channel is a block of 16 features
        "fc.weight": (fc, Axis("down", 16)),
        "fc.bias": (fc,),
        "head.weight": (None, fc),
        **bn,
    }
    assert dict(spec.sizes) == {"stem": 4, "block.conv1": 4, "down": 6, "fc": 5}
    # the residual stream is produced by the stem and by the block's last convolution
    assert spec.producers["stem"] == (("stem", -3), ("block.conv2", -3))
    assert "bn.num_batches_tracked" not in spec.axes


def test_transformer_keeps_residual_stream_and_mlp_hidden_axis(zoo) -> None:
    spec = zoo.spec("transformer")
    d, h = _a("inp"), _a("fc1")
    norms = {f"{n}.{s}": (d,) for n in ("ln1", "ln2", "ln") for s in ("weight", "bias")}
    assert dict(spec.axes) == {
        "pos": (None, d),
        "inp.weight": (d, None),
        "inp.bias": (d,),
        "attn.in_proj_weight": (None, d),  # head-internal rows stay in place
        "attn.out_proj.weight": (d, None),
        "attn.out_proj.bias": (d,),
        "fc1.weight": (h, d),
        "fc1.bias": (h,),
        "fc2.weight": (d, h),
        "fc2.bias": (d,),
        "head.weight": (None, d),
        **norms,
    }


def test_single_head_attention_ties_queries_and_keys(zoo) -> None:
    spec = zoo.spec("attention1")
    assert dict(spec.sizes) == {"emb": 8, "attn.q": 8, "attn.v": 8, "mlp.0": 12}
    qk = [(r.key, r.axis) for r in spec.group_axes["attn.q"]]
    assert qk == [
        ("attn.q.weight", 0), ("attn.q.bias", 0), ("attn.k.weight", 0), ("attn.k.bias", 0)
    ]  # fmt: skip
    assert [(r.key, r.axis) for r in spec.group_axes["attn.v"]] == [
        ("attn.v.weight", 0), ("attn.v.bias", 0), ("attn.o.weight", 1)
    ]  # fmt: skip
    assert spec.axes["emb.weight"] == (None, _a("emb"))  # the vocabulary is never permuted


def test_multi_head_attention_leaves_heads_in_place(zoo) -> None:
    spec = zoo.spec("attention2")
    assert dict(spec.sizes) == {"emb": 8, "mlp.0": 12}
    assert spec.axes["attn.q.weight"] == (None, _a("emb"))
    assert spec.axes["attn.o.weight"] == (_a("emb"), None)


@pytest.mark.parametrize("name", ["mlp", "cnn", "transformer", "attention1", "attention2"])
def test_fx_and_recording_agree(zoo, name: str) -> None:
    model = zoo.make(name)
    fx = align.permutation_spec(model, zoo.input(name), method="fx")
    rec = align.permutation_spec(model, zoo.input(name), method="record")
    assert fx == rec == zoo.spec(name)


def test_derivation_changes_nothing(zoo) -> None:
    model = zoo.make("cnn").train()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    align.permutation_spec(model, zoo.input("cnn"))
    assert model.training and model.block.bn1.training
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert not any(m._forward_hooks or m._forward_pre_hooks for m in model.modules())


class Branchy(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc1, self.fc2 = nn.Linear(4, 6), nn.Linear(6, 2)

    def forward(self, x: Tensor) -> Tensor:
        h = torch.relu(self.fc1(x))
        if h.sum() > 0:  # data-dependent control flow: torch.fx cannot trace this
            h = h * 2
        return self.fc2(h)


def test_untraceable_model_is_recorded_or_refused() -> None:
    model = Branchy()
    with pytest.raises(WeightspaceValueError, match=r"cannot be traced by torch\.fx") as err:
        align.permutation_spec(model, torch.randn(2, 4), method="fx")
    assert "method='record'" in str(err.value)
    assert "PermutationSpec({" in str(err.value)
    spec = align.permutation_spec(model, torch.randn(2, 4))
    assert dict(spec.axes) == {
        "fc1.weight": (_a("fc1"), None),
        "fc1.bias": (_a("fc1"),),
        "fc2.weight": (None, _a("fc1")),
    }


def test_model_that_does_not_run_suggests_a_hand_written_spec() -> None:
    with pytest.raises(WeightspaceValueError) as err:
        align.permutation_spec(nn.Linear(4, 3), torch.zeros(2, 5))
    msg = str(err.value)
    assert "could not be traced on `example_input`" in msg
    assert "RuntimeError" in msg
    assert "write the spec by hand" in msg


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"model": {"w": torch.zeros(2)}}, r"`model` must be a torch\.nn\.Module, got dict"),
        ({"example_input": 3}, r"`example_input` must be a tensor.*got int"),
        ({"method": "jit"}, r"`method` must be 'auto', 'fx' or 'record', got 'jit'"),
    ],
)
def test_argument_errors(kwargs: dict, match: str) -> None:
    args = {"model": nn.Linear(2, 2), "example_input": torch.zeros(1, 2)} | kwargs
    with pytest.raises(WeightspaceValueError, match=match):
        align.permutation_spec(**args)


class Mixing(nn.Module):
    """Operations that do not commute with a permutation of the hidden units."""

    def __init__(self, op: str) -> None:
        super().__init__()
        self.fc1, self.fc2, self.out = nn.Linear(4, 6), nn.Linear(4, 6), nn.Linear(6, 2)
        self.op = op

    def forward(self, x: Tensor) -> Tensor:
        h = torch.relu(self.fc1(x))
        if self.op == "cumsum":
            h = torch.cumsum(h, dim=-1)
        elif self.op == "cat":
            h = torch.cat([h[:, :3], self.fc2(x)[:, 3:]], dim=1)
        elif self.op == "roll":
            h = h.roll(1, dims=1)
        elif self.op == "sort":
            h = h.sort(dim=-1).values
        elif self.op == "batch-cat":  # along the batch axis: harmless
            h = torch.cat([h, h], dim=0)[: x.shape[0]]
        elif self.op == "sum":  # a symmetric reduction of the hidden axis: harmless
            h = h + h.sum(-1, keepdim=True)
        elif self.op == "setitem":
            h = h.clone()
            h[:, 0] = 0.0
        elif self.op == "zeros_like":  # a constant in every position: harmless
            h = h + torch.ones_like(h)
        elif self.op == "einsum":  # not followed: the axis is fixed
            h = torch.einsum("bi->bi", h)
        return self.out(h)


@pytest.mark.parametrize(
    ("op", "groups"),
    [("cumsum", set()), ("cat", set()), ("roll", set()), ("sort", set()),
     ("batch-cat", {"fc1"}), ("sum", {"fc1"}), ("setitem", set()), ("zeros_like", {"fc1"}),
     ("einsum", set())],
)  # fmt: skip
def test_unknown_or_order_dependent_ops_fix_the_axis(op: str, groups: set[str]) -> None:
    torch.manual_seed(0)
    model = Mixing(op).eval()
    spec = align.permutation_spec(model, torch.randn(2, 4))
    assert set(spec.groups) == groups
    x = torch.randn(7, 4)
    other = align.permute(model, spec, align.Permutation.random(spec, seed=1))
    assert torch.allclose(other(x), model(x), atol=1e-6)


class Norms(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(2, 4, 3, padding=1)
        self.gn1 = nn.GroupNorm(1, 4)  # over all channels: permutation invariant
        self.dw = nn.Conv2d(4, 4, 3, padding=1, groups=4)  # depthwise: channels stay apart
        self.gn2 = nn.GroupNorm(2, 4)  # two channels per group: a permutation would mix them
        self.pw = nn.Conv2d(4, 3, 1)

    def forward(self, x: Tensor) -> Tensor:
        x = self.gn1(self.conv(x))
        y = F.adaptive_avg_pool2d(self.pw(self.gn2(F.relu(self.dw(x)))), 1)
        return y.flatten(1)


def test_group_norm_and_depthwise_convolution() -> None:
    torch.manual_seed(0)
    model = Norms()
    spec = align.permutation_spec(model, torch.randn(2, 2, 5, 5))
    assert spec.groups == ()
    # without the second group norm the conv channel survives through the depthwise conv
    model.gn2 = nn.Identity()
    spec = align.permutation_spec(model, torch.randn(2, 2, 5, 5))
    assert spec.groups == ("conv",)
    assert spec.axes["dw.weight"] == (_a("conv"), None, None, None)
    assert spec.axes["gn1.weight"] == (_a("conv"),)


def test_hand_written_spec_validation() -> None:
    spec = PermutationSpec(
        {"a.weight": ["h", None], "a.bias": ("h",), "b.weight": (None, Axis("h"))},
        producers={"h": "a"},
    )
    assert spec.producers["h"] == (("a", -1),)
    assert spec.axes["a.weight"] == (_a("h"), None)
    assert spec.describe() == "h (? units): a.weight[0], a.bias[0], b.weight[1]"
    with pytest.raises(WeightspaceValueError, match=r"`axes\['w'\]` must be a sequence"):
        PermutationSpec({"w": "h"})
    with pytest.raises(WeightspaceValueError, match=r"`axes\['w'\]\[0\]` must be a group name"):
        PermutationSpec({"w": (3,)})
    with pytest.raises(WeightspaceValueError, match="`repeat` must be a positive integer"):
        Axis("h", 0)
    with pytest.raises(WeightspaceValueError, match="`sizes` names the group 'g'"):
        PermutationSpec({"w": ("h",)}, sizes={"g": 2})
    with pytest.raises(WeightspaceValueError, match="`producers` names the group 'g'"):
        PermutationSpec({"w": ("h",)}, producers={"g": "m"})


def test_check_names_the_tensor() -> None:
    spec = PermutationSpec({"a": ("h", None), "b": (None, Axis("h", 2))})
    assert spec.check({"a": torch.zeros(3, 1), "b": torch.zeros(1, 6)}) == {"h": 3}
    with pytest.raises(ShapeMismatchError, match=r"missing from `state_dict`: \['b'\]"):
        spec.check({"a": torch.zeros(3, 1)})
    with pytest.raises(ShapeMismatchError, match=r"`state_dict\['a'\]` has shape \[3\]"):
        spec.check({"a": torch.zeros(3), "b": torch.zeros(1, 6)})
    with pytest.raises(ShapeMismatchError, match=r"3 units on `state_dict\['a'\]` but 4 on"):
        spec.check({"a": torch.zeros(3, 1), "b": torch.zeros(1, 8)})
    with pytest.raises(ShapeMismatchError, match="not a multiple of repeat=2"):
        spec.check({"a": torch.zeros(3, 1), "b": torch.zeros(1, 7)})
    sized = PermutationSpec({"a": ("h", None)}, sizes={"h": 4})
    with pytest.raises(ShapeMismatchError, match="but the spec says 4"):
        sized.check({"a": torch.zeros(3, 1)})
