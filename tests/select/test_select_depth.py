"""Depth alignment in ``select.common``: ``layers="prefix" | "suffix" | "spread" | [(i, j)]``."""

from __future__ import annotations

import copy

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from weightspace import TaskVector, WeightspaceValueError, select
from weightspace.select._blocks import align_depths

transformers = pytest.importorskip("transformers")


def bert(layers: int) -> nn.Module:
    torch.manual_seed(layers)
    config = transformers.BertConfig(
        vocab_size=40,
        hidden_size=32,
        num_hidden_layers=layers,
        num_attention_heads=4,
        intermediate_size=64,
        max_position_embeddings=24,
    )
    return transformers.BertModel(config)


def roberta(layers: int) -> nn.Module:
    torch.manual_seed(100 + layers)
    config = transformers.RobertaConfig(
        vocab_size=40,
        hidden_size=32,
        num_hidden_layers=layers,
        num_attention_heads=4,
        intermediate_size=64,
        max_position_embeddings=24,
    )
    return transformers.RobertaModel(config)


def llama(layers: int) -> nn.Module:
    torch.manual_seed(200 + layers)
    config = transformers.LlamaConfig(
        vocab_size=40,
        hidden_size=32,
        num_hidden_layers=layers,
        num_attention_heads=4,
        num_key_value_heads=4,
        intermediate_size=64,
        max_position_embeddings=24,
    )
    return transformers.LlamaForCausalLM(config)


@pytest.fixture(scope="module")
def bert2_roberta4() -> tuple[nn.Module, nn.Module]:
    return bert(2), roberta(4)


@pytest.mark.parametrize(
    ("layers", "blocks_b"),
    [("prefix", (0, 1)), ("suffix", (2, 3)), ("spread", (0, 3)), ([(0, 1), (1, 2)], (1, 2))],
)
def test_bert_2_layers_onto_roberta_4_layers(
    bert2_roberta4: tuple[nn.Module, nn.Module], layers: object, blocks_b: tuple[int, int]
) -> None:
    a, b = bert2_roberta4
    sel = select.common(a, b, by="structure", layers=layers)  # type: ignore[arg-type]
    assert len(sel) == 39  # 5 embedding tensors, 2 x 16 block tensors, 2 pooler tensors
    assert sel.blocks == tuple(
        (f"encoder.layer.{i}", f"encoder.layer.{j}") for i, j in zip((0, 1), blocks_b, strict=True)
    )
    for i, j in zip((0, 1), blocks_b, strict=True):
        q = f"encoder.layer.{i}.attention.self.query.weight"
        assert sel.mapping[q] == f"encoder.layer.{j}.attention.self.query.weight"
    assert sel.mapping["embeddings.LayerNorm.weight"] == "embeddings.LayerNorm.weight"
    assert sel.mapping["pooler.dense.bias"] == "pooler.dense.bias"
    assert sel.names_a == tuple(n for n, _ in a.named_parameters())  # a's order
    # state dicts give the same pairs
    assert select.common(a.state_dict(), b.state_dict(), by="structure", layers=layers) == sel  # type: ignore[arg-type]


def test_without_layers_the_depth_mismatch_says_how_to_pair(
    bert2_roberta4: tuple[nn.Module, nn.Module],
) -> None:
    a, b = bert2_roberta4
    with pytest.raises(WeightspaceValueError) as info:
        select.common(a, b, by="structure")
    msg = str(info.value)
    assert "ambiguous structural match: 5 submodules of `a`" in msg
    assert '`layers="prefix"`, "suffix", "spread" or [(i, j), ...]' in msg


def test_describe_prints_the_block_to_block_table(
    bert2_roberta4: tuple[nn.Module, nn.Module],
) -> None:
    a, b = bert2_roberta4
    text = str(select.common(a, b, by="structure", layers="spread"))
    assert text.splitlines()[:5] == [
        "Selection: 39 pairs of `a` onto `b` (by='structure', layers='spread')",
        "  block of a        block of b       pairs",
        "  encoder.layer.0   encoder.layer.0     16",
        "  encoder.layer.1   encoder.layer.3     16",
        "  (outside blocks)                       7",
    ]
    assert "  attention.self.query.weight        attention.self.query.weight" in text
    assert "  pooler.dense.bias                        pooler.dense.bias" in text


def test_transfer_then_apply_to_moves_each_block_onto_its_partner(
    bert2_roberta4: tuple[nn.Module, nn.Module],
) -> None:
    a, b = bert2_roberta4
    ft = copy.deepcopy(a)
    with torch.no_grad():
        for p in ft.parameters():
            p.add_(0.01 * torch.randn_like(p))
    tv = TaskVector.from_models(base=a, finetuned=ft)
    sel = select.common(a, b, by="structure", layers="spread")
    new_b = tv.transfer(sel).apply_to(b, scale=0.5)
    before, after = b.state_dict(), new_b.state_dict()
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    assert changed == set(sel.names_b)
    assert not any(k.startswith(("encoder.layer.1.", "encoder.layer.2.")) for k in changed)
    name_a = "encoder.layer.1.output.dense.weight"
    name_b = "encoder.layer.3.output.dense.weight"
    expected = before[name_b] + 0.5 * (ft.state_dict()[name_a] - a.state_dict()[name_a])
    assert torch.equal(after[name_b], expected)


def test_llama_2_layers_onto_4_layers() -> None:
    a, b = llama(2), llama(4)
    sel = select.common(a, b, by="structure", layers="suffix")
    assert len(sel) == 2 * 9 + 3
    assert (
        sel.mapping["model.layers.1.mlp.down_proj.weight"] == "model.layers.3.mlp.down_proj.weight"
    )
    assert sel.mapping["lm_head.weight"] == "lm_head.weight"
    # the deeper model onto the shallower one: spread picks its first and last blocks
    back = select.common(b, a, by="structure", layers="spread")
    assert back.blocks == (
        ("model.layers.0", "model.layers.0"),
        ("model.layers.3", "model.layers.1"),
    )


def test_layers_refusals_name_the_problem(bert2_roberta4: tuple[nn.Module, nn.Module]) -> None:
    a, b = bert2_roberta4
    with pytest.raises(
        WeightspaceValueError, match=r"`layers` pairs \[\(2, 0\)\] are out of range"
    ):
        select.common(a, b, by="structure", layers=[(2, 0)])
    with pytest.raises(WeightspaceValueError, match=r"uses blocks \[3\] of `b` more than once"):
        select.common(a, b, by="structure", layers=[(0, 3), (1, 3)])
    with pytest.raises(WeightspaceValueError, match="got 'middle'"):
        select.common(a, b, by="structure", layers="middle")  # type: ignore[arg-type]
    with pytest.raises(WeightspaceValueError, match=r"non-empty list of \(i, j\)"):
        select.common(a, b, by="structure", layers=[])
    with pytest.raises(WeightspaceValueError, match="got by='name_shape'"):
        select.common(a, b, layers="prefix")
    mlp = nn.Sequential(nn.Linear(3, 3), nn.ReLU(), nn.Linear(3, 2))
    with pytest.raises(WeightspaceValueError, match="hold no runs of blocks with the same"):
        select.common(mlp, b, by="structure", layers="prefix")


def test_blocks_found_in_plain_modules_and_state_dicts() -> None:
    def stack(n: int) -> nn.Module:
        return nn.ModuleDict(
            {
                "inp": nn.Linear(2, 6),
                "blocks": nn.ModuleList([nn.Linear(6, 6) for _ in range(n)]),
                "out": nn.Linear(6, 1),
            }
        )

    a, b = stack(3), stack(5)
    sel = select.common(a, b, by="structure", layers="spread")
    assert sel.blocks == (
        ("blocks.0", "blocks.0"),
        ("blocks.1", "blocks.2"),
        ("blocks.2", "blocks.4"),
    )
    assert sel.mapping["inp.weight"] == "inp.weight" and sel.mapping["out.bias"] == "out.bias"
    assert select.common(a.state_dict(), b.state_dict(), by="structure", layers="spread") == sel
    only_blocks = select.common(a, b, by="structure", layers="prefix", targets=["blocks"])
    assert only_blocks.names_a == tuple(
        f"blocks.{i}.{k}" for i in range(3) for k in ("weight", "bias")
    )


@settings(max_examples=80, deadline=None)
@given(st.integers(1, 12), st.integers(1, 12), st.sampled_from(["prefix", "suffix", "spread"]))
def test_alignment_modes_are_one_to_one_increasing_and_as_long_as_the_shallower(
    n_a: int, n_b: int, mode: str
) -> None:
    pairs = align_depths(n_a, n_b, mode)  # type: ignore[arg-type]
    assert len(pairs) == min(n_a, n_b)
    assert all(0 <= i < n_a and 0 <= j < n_b for i, j in pairs)
    assert [i for i, _ in pairs] == sorted({i for i, _ in pairs})  # strictly increasing
    assert [j for _, j in pairs] == sorted({j for _, j in pairs})
    if mode == "prefix":
        assert pairs[0] == (0, 0)
    if mode == "suffix":
        assert pairs[-1] == (n_a - 1, n_b - 1)
    if mode == "spread" and min(n_a, n_b) > 1:
        assert pairs[0] == (0, 0) and pairs[-1] == (n_a - 1, n_b - 1)
    if n_a == n_b:
        assert pairs == [(i, i) for i in range(n_a)]
    # swapping the models swaps the pairs
    assert align_depths(n_b, n_a, mode) == [(j, i) for i, j in pairs]  # type: ignore[arg-type]


@settings(max_examples=25, deadline=None)
@given(st.integers(1, 5), st.integers(1, 5), st.sampled_from(["prefix", "suffix", "spread"]))
def test_common_with_random_depths_pairs_whole_blocks(n_a: int, n_b: int, mode: str) -> None:
    def stack(n: int) -> nn.Module:
        return nn.ModuleDict({"layers": nn.ModuleList([nn.LayerNorm(4) for _ in range(n)])})

    sel = select.common(stack(n_a), stack(n_b), by="structure", layers=mode)  # type: ignore[arg-type]
    expected = align_depths(n_a, n_b, mode)  # type: ignore[arg-type]
    assert sel.blocks == tuple((f"layers.{i}", f"layers.{j}") for i, j in expected)
    assert dict(sel.mapping) == {
        f"layers.{i}.{k}": f"layers.{j}.{k}" for i, j in expected for k in ("weight", "bias")
    }
