"""Deriving permutation groups from a forward pass: exact groups, refusals, invariance."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import Tensor, nn

from weightspace import WeightspaceValueError, align
from weightspace.align import Axis


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


# ---- more architectures: exact groups ---------------------------------------------------------


class VGG(nn.Module):
    """conv -> batch norm -> max pool -> conv -> global pool -> flatten -> linear."""

    def __init__(self) -> None:
        super().__init__()
        self.c1 = nn.Conv2d(3, 4, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(4)
        self.c2 = nn.Conv2d(4, 5, 3, padding=1)
        self.head = nn.Linear(5, 2)

    def forward(self, x: Tensor) -> Tensor:
        x = F.max_pool2d(F.relu(self.bn1(self.c1(x))), 2)
        x = F.adaptive_avg_pool2d(F.relu(self.c2(x)), 1).flatten(1)
        return self.head(x)


class ResMLP(nn.Module):
    """A pre-norm residual MLP block with a per-channel PReLU."""

    def __init__(self) -> None:
        super().__init__()
        self.inp = nn.Linear(3, 6)
        self.ln = nn.LayerNorm(6)
        self.fc1 = nn.Linear(6, 8)
        self.act = nn.PReLU(8)
        self.fc2 = nn.Linear(8, 6)
        self.head = nn.Linear(6, 2)

    def forward(self, x: Tensor) -> Tensor:
        x = self.inp(x)
        x = x + self.fc2(self.act(self.fc1(self.ln(x))))
        return self.head(x)


class Decoder(nn.Module):
    """linear -> view as 4 channels of 2 x 2 -> transposed convolution -> 1 x 1 convolution."""

    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(3, 16)
        self.deconv = nn.ConvTranspose2d(4, 3, 2, stride=2)
        self.out = nn.Conv2d(3, 1, 1)

    def forward(self, z: Tensor) -> Tensor:
        h = F.relu(self.fc(z)).view(-1, 4, 2, 2)
        return self.out(F.relu(self.deconv(h))).flatten(1)


class Roundtrip(nn.Module):
    """A channel flattened into a block of features and unflattened back."""

    def __init__(self) -> None:
        super().__init__()
        self.c1 = nn.Conv2d(1, 4, 3, padding=1)
        self.c2 = nn.Conv2d(4, 2, 1)

    def forward(self, x: Tensor) -> Tensor:
        h = torch.tanh(self.c1(x)).flatten(1)
        return self.c2(h.unflatten(1, (4, 3, 3))).sum((2, 3))


class SDPA(nn.Module):
    """Single-head attention through F.scaled_dot_product_attention, in a residual stream."""

    def __init__(self) -> None:
        super().__init__()
        self.inp = nn.Linear(5, 8)
        self.q, self.k, self.v = nn.Linear(8, 6), nn.Linear(8, 6), nn.Linear(8, 4)
        self.o = nn.Linear(4, 8)
        self.head = nn.Linear(8, 2)

    def forward(self, x: Tensor) -> Tensor:
        x = self.inp(x)
        a = F.scaled_dot_product_attention(self.q(x), self.k(x), self.v(x))
        return self.head((x + self.o(a)).mean(1))


class Functional(nn.Module):
    """Bare parameters and matmuls, no submodules: groups are named after their first axis."""

    def __init__(self) -> None:
        super().__init__()
        self.w1 = nn.Parameter(torch.randn(3, 6))
        self.b1 = nn.Parameter(torch.randn(6))
        self.w2 = nn.Parameter(torch.randn(6, 2))

    def forward(self, x: Tensor) -> Tensor:
        return torch.relu(x @ self.w1 + self.b1) @ self.w2


EXTRA = {
    "vgg": (VGG, (2, 3, 4, 4)),
    "resmlp": (ResMLP, (2, 3)),
    "decoder": (Decoder, (2, 3)),
    "roundtrip": (Roundtrip, (2, 1, 3, 3)),
    "sdpa": (SDPA, (2, 4, 5)),
    "functional": (Functional, (2, 3)),
}

DESCRIBED = {
    "vgg": [
        "c1 (4 units): c1.weight[0], bn1.weight[0], bn1.bias[0], bn1.running_mean[0], "
        "bn1.running_var[0], c2.weight[1]",
        "c2 (5 units): c2.weight[0], c2.bias[0], head.weight[1]",
    ],
    "resmlp": [
        "inp (6 units): inp.weight[0], inp.bias[0], ln.weight[0], ln.bias[0], fc1.weight[1], "
        "fc2.weight[0], fc2.bias[0], head.weight[1]",
        "fc1 (8 units): fc1.weight[0], fc1.bias[0], act.weight[0], fc2.weight[1]",
    ],
    # the 16 linear units cut into 4 channels of 2 x 2 are not a block of one group: fixed
    "decoder": ["deconv (3 units): deconv.weight[1], deconv.bias[0], out.weight[1]"],
    "roundtrip": ["c1 (4 units): c1.weight[0], c1.bias[0], c2.weight[1]"],
    "sdpa": [
        "inp (8 units): inp.weight[0], inp.bias[0], q.weight[1], k.weight[1], v.weight[1], "
        "o.weight[0], o.bias[0], head.weight[1]",
        "q (6 units): q.weight[0], q.bias[0], k.weight[0], k.bias[0]",
        "v (4 units): v.weight[0], v.bias[0], o.weight[1]",
    ],
    "functional": ["w1:1 (6 units): w1[1], b1[0], w2[0]"],
}


def _extra(name: str, seed: int = 0) -> tuple[nn.Module, Tensor]:
    cls, shape = EXTRA[name]
    torch.manual_seed(seed)
    model = cls().double().eval()
    with torch.no_grad():  # random norms and running statistics too, so that they matter
        for key, t in model.state_dict().items():
            if key.endswith("running_var"):
                t.uniform_(0.5, 1.5)
            elif t.is_floating_point():
                t.normal_(0.0, 0.5)
    return model, torch.randn(shape, dtype=torch.float64)


@pytest.mark.parametrize("name", list(EXTRA))
def test_groups_of_more_architectures(name: str) -> None:
    model, x = _extra(name)
    spec = align.permutation_spec(model, x)
    assert spec.describe().splitlines() == DESCRIBED[name]
    assert align.permutation_spec(model, x, method="record") == spec


def test_producers_of_a_residual_stream_and_of_tied_projections() -> None:
    spec = align.permutation_spec(*_extra("sdpa"))
    assert dict(spec.producers) == {
        "inp": (("inp", -1), ("o", -1)),
        "q": (("q", -1), ("k", -1)),
        "v": (("v", -1),),
    }
    assert spec.axes["o.weight"] == (_a("inp"), _a("v"))


# ---- invariance: a traced spec never changes the function ----------------------------------

ALL = [*EXTRA, "zoo:mlp", "zoo:cnn", "zoo:transformer", "zoo:attention1", "zoo:attention2"]


@settings(max_examples=25, deadline=None)
@given(name=st.sampled_from(ALL), weights=st.integers(0, 2**16), seed=st.integers(0, 2**16))
def test_the_traced_permutations_leave_the_function_unchanged(
    zoo, name: str, weights: int, seed: int
) -> None:
    if name.startswith("zoo:"):
        name = name[4:]
        model = zoo.make(name, weights).double()
        x = zoo.input(name, n=2)
        probe = zoo.input(name, n=6, seed=seed)
        if probe.is_floating_point():
            x, probe = x.double(), probe.double()
    else:
        model, x = _extra(name, weights)
        probe = torch.randn((6, *x.shape[1:]), dtype=torch.float64)
    spec = align.permutation_spec(model, x)
    assert spec.groups  # every model here has something to permute
    perm = align.Permutation.random(spec, seed=seed)
    other = align.permute(model, spec, perm)
    with torch.no_grad():
        y, y_other = model(probe), other(probe)
    assert (y_other - y).abs().max().item() <= 1e-6
    if not perm.is_identity():
        assert any(
            not torch.equal(a, b)
            for a, b in zip(model.state_dict().values(), other.state_dict().values(), strict=True)
        )


def test_a_wrong_spec_would_be_caught_by_the_invariance_check() -> None:
    # the check above is not vacuous: permuting the fixed linear units of the decoder changes
    # its output
    model, x = _extra("decoder")
    wrong = align.PermutationSpec({"fc.weight": ("h", None), "fc.bias": ("h",)})
    other = align.permute(model, wrong, align.Permutation({"h": torch.arange(16).flip(0)}))
    with torch.no_grad():
        assert (other(x) - model(x)).abs().max().item() > 1e-3


# ---- refusals and fallbacks --------------------------------------------------------------


class Keyword(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc1, self.fc2 = nn.Linear(4, 6), nn.Linear(6, 2)

    def forward(self, x: Tensor, *, scale: float = 1.0) -> Tensor:
        return self.fc2(torch.relu(self.fc1(x))) * scale


def test_keyword_inputs_are_followed_by_recording() -> None:
    model = Keyword()
    spec = align.permutation_spec(model, {"x": torch.randn(2, 4), "scale": 2.0})
    assert spec.describe() == "fc1 (6 units): fc1.weight[0], fc1.bias[0], fc2.weight[1]"
    assert spec == align.permutation_spec(model, (torch.randn(2, 4),), method="record")


class Broken(Branchy):
    def forward(self, x: Tensor) -> Tensor:
        if x.sum() > 0:  # untraceable, and then fails to run
            raise RuntimeError("boom")
        return x


def test_a_model_that_neither_traces_nor_runs_reports_both() -> None:
    with pytest.raises(WeightspaceValueError) as err:
        align.permutation_spec(Broken(), torch.ones(2, 4))
    msg = str(err.value)
    assert msg.startswith(
        "`model` (Broken) could not be traced on `example_input` (torch.fx failed:"
    )
    assert "RuntimeError: boom" in msg
    assert "PermutationSpec({" in msg


class Refusing(nn.Module):
    def forward(self, x: Tensor) -> Tensor:
        raise WeightspaceValueError("`x` must be positive, got -1")


def test_the_models_own_weightspace_error_passes_through() -> None:
    with pytest.raises(WeightspaceValueError, match=r"^`x` must be positive, got -1$"):
        align.permutation_spec(Refusing(), torch.zeros(1))
