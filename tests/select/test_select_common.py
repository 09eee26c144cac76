from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from weightspace import WeightspaceValueError, select
from weightspace._task_vector import TaskVector


def mlp_head() -> nn.Sequential:
    return nn.Sequential(nn.Linear(16, 32), nn.ReLU(), nn.Linear(32, 5))


class CNN(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(3, 8, 3, padding=1),
            nn.BatchNorm2d(8),
            nn.ReLU(),
            nn.AdaptiveAvgPool2d(1),
            nn.Flatten(),
        )
        self.proj = nn.Linear(8, 16)
        self.head = mlp_head()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(torch.relu(self.proj(self.features(x))))


class Attention(nn.Module):
    def __init__(self, dim: int) -> None:
        super().__init__()
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        q, k, v = self.qkv(x).chunk(3, dim=-1)
        w = torch.softmax(q @ k.transpose(-1, -2) / q.shape[-1] ** 0.5, dim=-1)
        return self.proj(w @ v)


class EncoderBlock(nn.Module):
    def __init__(self, dim: int) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.attn = Attention(dim)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = nn.Sequential(nn.Linear(dim, 2 * dim), nn.GELU(), nn.Linear(2 * dim, dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


class ViT(nn.Module):
    """A tiny ViT for 16x16 images; its classification MLP is registered under `head_name`."""

    def __init__(self, head_name: str = "classifier") -> None:
        super().__init__()
        self.patch = nn.Conv2d(3, 16, 4, stride=4)
        self.pos = nn.Parameter(torch.zeros(1, 16, 16))
        self.blocks = nn.ModuleList([EncoderBlock(16), EncoderBlock(16)])
        self.norm = nn.LayerNorm(16)
        self.head_name = head_name
        setattr(self, head_name, mlp_head())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.patch(x).flatten(2).transpose(1, 2) + self.pos
        for block in self.blocks:
            x = block(x)
        return getattr(self, self.head_name)(self.norm(x).mean(1))


HEAD_A = ("head.0.weight", "head.0.bias", "head.2.weight", "head.2.bias")


def models(head_name: str = "classifier") -> tuple[CNN, ViT]:
    torch.manual_seed(0)
    return CNN(), ViT(head_name)


def test_by_name_and_shape() -> None:
    cnn, vit = models(head_name="head")
    sel = select.common(cnn, vit)
    assert sel.names_a == HEAD_A and sel.is_identity
    assert sel.shape("head.0.weight") == torch.Size([32, 16])
    # state dicts and the model give the same answer
    assert select.common(cnn.state_dict(), vit.state_dict()) == sel


def test_by_structure_pairs_the_shared_head_under_different_names() -> None:
    cnn, vit = models()
    sel = select.common(cnn, vit, by="structure")
    assert sel.mapping == {a: a.replace("head", "classifier") for a in HEAD_A}
    # the inverse direction finds the same pairs
    assert select.common(vit, cnn, by="structure") == sel.inverse()
    # state dicts (no module types): the same head is found by structure of names and shapes
    assert (
        select.common(cnn.state_dict(), vit.state_dict(), by="structure", targets=["head"]) == sel
    )


def test_by_explicit_mapping() -> None:
    cnn, vit = models()
    sel = select.common(cnn, vit, by="mapping", mapping={"head": "classifier"})
    assert sel.mapping == {a: a.replace("head", "classifier") for a in HEAD_A}
    with pytest.raises(WeightspaceValueError, match="shapes differ"):
        select.common(cnn, vit, by="mapping", mapping={"proj": "blocks.0.attn.proj"})
    with pytest.raises(WeightspaceValueError, match="not in `b`"):
        select.common(cnn, vit, by="mapping", mapping={"head": "norm"})
    with pytest.raises(WeightspaceValueError, match="hold no tensor of `a`"):
        select.common(cnn, vit, by="mapping", mapping={"haed": "classifier"})
    with pytest.raises(WeightspaceValueError, match="exactly when"):
        select.common(cnn, vit, mapping={"head": "classifier"})


def test_targets_restrict_model_a() -> None:
    cnn, vit = models()
    sel = select.common(cnn, vit, by="structure", targets=r"head\.2")
    assert sel.mapping == {
        "head.2.weight": "classifier.2.weight",
        "head.2.bias": "classifier.2.bias",
    }


def test_transfer_changes_exactly_the_shared_parameters_of_b() -> None:
    cnn, vit = models()
    ft = copy.deepcopy(cnn)
    with torch.no_grad():
        for p in ft.parameters():
            p.add_(0.05 * torch.randn_like(p))
    tv = TaskVector.from_models(base=cnn, finetuned=ft)
    sel = select.common(cnn, vit, by="structure")
    moved = tv.restrict(sel).transfer(sel)
    assert list(moved) == list(sel.names_b)
    new_vit = moved.apply_to(vit, scale=0.5)
    before, after = vit.state_dict(), new_vit.state_dict()
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    assert changed == set(sel.names_b)
    for a, b in sel.mapping.items():
        expected = before[b] + 0.5 * (ft.state_dict()[a] - cnn.state_dict()[a])
        assert torch.allclose(after[b], expected, atol=1e-7)
    assert new_vit(torch.randn(2, 3, 16, 16)).shape == (2, 5)
    # at scale 1 with B's head equal to A's base head, B receives A's fine-tuned head exactly
    vit2 = copy.deepcopy(vit)
    vit2.classifier.load_state_dict(cnn.head.state_dict())
    out = tv.transfer(sel).apply_to(vit2)
    assert all(
        torch.equal(out.classifier.state_dict()[k], v) for k, v in ft.head.state_dict().items()
    )


def test_empty_selection_lists_what_was_tried_and_candidates() -> None:
    cnn, vit = models(head_name="heads")
    with pytest.raises(WeightspaceValueError) as info:
        select.common(cnn, vit)
    msg = str(info.value)
    assert "by='name_shape'" in msg and "compared" in msg and 'by="structure"' in msg
    assert "'head.0.weight' ~ 'heads.0.weight'" in msg
    with pytest.raises(WeightspaceValueError, match="`targets`=\\['features'\\]"):
        select.common(cnn, vit, by="structure", targets=["features"])


def test_ambiguous_structure_is_an_error_listing_candidates() -> None:
    _, vit = models()
    single = nn.ModuleDict({"x": nn.Linear(16, 16)})
    with pytest.raises(WeightspaceValueError) as info:
        select.common(single, vit, by="structure")
    msg = str(info.value)
    assert "ambiguous" in msg and "'blocks.0.attn.proj'" in msg and "'blocks.1.attn.proj'" in msg
    # as many candidates on both sides: paired in order
    pair = nn.ModuleDict({"p": nn.ModuleList([nn.Linear(16, 16), nn.Linear(16, 16)])})
    sel = select.common(pair, vit, by="structure")
    assert sel.mapping["p.0.weight"] == "blocks.0.attn.proj.weight"
    assert sel.mapping["p.1.bias"] == "blocks.1.attn.proj.bias"


def test_identical_architectures_pair_at_the_root() -> None:
    a, b = models()[0], CNN()
    sel = select.common(a, b, by="structure")
    assert sel.is_identity and sel.names_a == tuple(n for n, _ in a.named_parameters())
    with pytest.raises(WeightspaceValueError, match="`by` must be"):
        select.common(a, b, by="magic")  # type: ignore[arg-type]


def test_subset_restricts_a_cross_architecture_selection_by_names_of_a() -> None:
    import torch

    from weightspace import ShapeMismatchError, TaskVector

    sel = select.Selection({"cnn.w": "vit.w", "cnn.b": "vit.b"})
    tv = TaskVector({"cnn.w": torch.ones(2)})
    assert len(sel & select.Selection(list(tv))) == 0  # pairs differ: & keeps nothing
    with pytest.raises(ShapeMismatchError, match=r"selection\.subset\(tv\)"):
        tv.transfer(sel)
    moved = tv.transfer(sel.subset(tv))
    assert list(moved) == ["vit.w"] and torch.equal(moved["vit.w"], torch.ones(2))
