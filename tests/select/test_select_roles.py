"""Role-based matching across model families (``select.common(..., by="role")``)."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from weightspace import ShapeMismatchError, TaskVector, WeightspaceValueError, select

transformers = pytest.importorskip("transformers")

D = 32  # width of every model here


def gpt2(layers: int = 2, heads: int = 4) -> nn.Module:
    torch.manual_seed(1)
    config = transformers.GPT2Config(
        vocab_size=40,
        n_embd=D,
        n_layer=layers,
        n_head=heads,
        n_positions=24,
        bos_token_id=0,
        eos_token_id=0,
    )
    return transformers.GPT2LMHeadModel(config)


def llama(layers: int = 2, heads: int = 4, kv_heads: int = 4) -> nn.Module:
    torch.manual_seed(2)
    config = transformers.LlamaConfig(
        vocab_size=40,
        hidden_size=D,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        num_key_value_heads=kv_heads,
        intermediate_size=4 * D,
        max_position_embeddings=24,
    )
    return transformers.LlamaForCausalLM(config)


def small(cls_name: str, **kw: int) -> nn.Module:
    torch.manual_seed(3)
    config_cls = getattr(transformers, cls_name.replace("Model", "Config"))
    return getattr(transformers, cls_name)(config_cls(**kw))


@pytest.fixture(scope="module")
def pair() -> tuple[nn.Module, nn.Module]:
    return gpt2(), llama()


def finetune(model: nn.Module) -> nn.Module:
    ft = copy.deepcopy(model)
    with torch.no_grad():
        for p in ft.parameters():
            p.add_(0.01 * torch.randn_like(p))
    return ft


def test_gpt2_onto_llama_by_role(pair: tuple[nn.Module, nn.Module]) -> None:
    a, b = pair
    sel = select.common(a, b, by="role")
    assert len(sel) == 2 + 2 * 8
    assert sel.blocks == (
        ("transformer.h.0", "model.layers.0"),
        ("transformer.h.1", "model.layers.1"),
    )
    pairs = dict(zip(sel.pairs, zip(sel.roles, sel.views, strict=True), strict=True))
    k = ("transformer.h.1.attn.c_attn.weight", "model.layers.1.self_attn.k_proj.weight")
    role, view = pairs[k]
    assert role == "attn.k.weight" and view is not None
    assert (view.slice_a, view.slice_b, view.transpose) == ((1, D, 2 * D), None, True)
    up = ("transformer.h.0.mlp.c_fc.weight", "model.layers.0.mlp.up_proj.weight")
    assert pairs[up][0] == "mlp.up.weight" and str(pairs[up][1]) == "a.T -> b"
    norm = ("transformer.h.0.ln_1.weight", "model.layers.0.input_layernorm.weight")
    assert pairs[norm] == ("norm.attn.weight", None)
    assert ("transformer.wte.weight", "model.embed_tokens.weight") in pairs
    # biases (GPT-2 has them, Llama does not) and Llama's gate are left out
    assert not any(n.endswith(".bias") for n in sel.names_a)
    assert not any("gate_proj" in n for n in sel.names_b)


def test_describe_prints_the_cross_family_table(pair: tuple[nn.Module, nn.Module]) -> None:
    text = str(select.common(*pair, by="role"))
    lines = text.splitlines()
    assert lines[:5] == [
        "Selection: 18 pairs of `a` onto `b` (by='role', gpt2 -> llama)",
        "  block of a        block of b      pairs",
        "  transformer.h.0   model.layers.0      8",
        "  transformer.h.1   model.layers.1      8",
        "  (outside blocks)                      2",
    ]
    assert (
        "  attn.q.weight     attn.c_attn.weight  self_attn.q_proj.weight          "
        "a[:, 0:32].T -> b" in lines
    )
    assert (
        "  mlp.down.weight   mlp.c_proj.weight   mlp.down_proj.weight             a.T -> b" in lines
    )


def test_transfer_then_apply_to_equals_the_hand_made_result(
    pair: tuple[nn.Module, nn.Module],
) -> None:
    a, b = pair
    ft = finetune(a)
    tv = TaskVector.from_models(base=a, finetuned=ft)
    sel = select.common(a, b, by="role")
    new_b = tv.transfer(sel.subset(tv)).apply_to(b.state_dict(), scale=0.7)
    base_b = b.state_dict()
    delta = {n: ft.state_dict()[n] - a.state_dict()[n] for n in tv}

    def expect(name_b: str, d: torch.Tensor) -> None:
        assert torch.equal(new_b[name_b], base_b[name_b] + 0.7 * d), name_b

    for i in range(2):
        h, lay = f"transformer.h.{i}.", f"model.layers.{i}."
        c_attn = delta[h + "attn.c_attn.weight"]
        for j, x in enumerate("qkv"):
            expect(lay + f"self_attn.{x}_proj.weight", c_attn[:, j * D : (j + 1) * D].T)
        expect(lay + "self_attn.o_proj.weight", delta[h + "attn.c_proj.weight"].T)
        expect(lay + "mlp.up_proj.weight", delta[h + "mlp.c_fc.weight"].T)
        expect(lay + "mlp.down_proj.weight", delta[h + "mlp.c_proj.weight"].T)
        expect(lay + "input_layernorm.weight", delta[h + "ln_1.weight"])
        expect(lay + "post_attention_layernorm.weight", delta[h + "ln_2.weight"])
        assert torch.equal(
            new_b[lay + "mlp.gate_proj.weight"], base_b[lay + "mlp.gate_proj.weight"]
        )
    expect("model.embed_tokens.weight", delta["transformer.wte.weight"])
    expect("model.norm.weight", delta["transformer.ln_f.weight"])
    assert torch.equal(new_b["lm_head.weight"], base_b["lm_head.weight"])


def test_split_then_fuse_round_trips_bit_for_bit(pair: tuple[nn.Module, nn.Module]) -> None:
    a, b = pair
    ft = finetune(a)
    tv = TaskVector.from_models(base=a, finetuned=ft)
    sel = select.common(a, b, by="role")
    back = tv.transfer(sel).transfer(sel.inverse())
    assert sorted(back) == sorted(set(sel.names_a))
    for name in back:
        assert torch.equal(back[name], tv[name]), name
    # the round trip keeps the exact reconstruction of from_models at scale 1
    out = back.apply_to(a.state_dict())
    assert all(torch.equal(out[n], ft.state_dict()[n]) for n in back)


def test_llama_onto_gpt2_fuses_q_k_v(pair: tuple[nn.Module, nn.Module]) -> None:
    a, b = pair
    sel = select.common(b, a, by="role")
    assert sel == select.common(a, b, by="role").inverse()
    ft = finetune(b)
    tv = TaskVector.from_models(base=b, finetuned=ft)
    moved = tv.transfer(sel)
    q, k, v = (tv[f"model.layers.0.self_attn.{x}_proj.weight"] for x in "qkv")
    assert torch.equal(moved["transformer.h.0.attn.c_attn.weight"], torch.cat([q.T, k.T, v.T], 1))
    assert moved.shape("transformer.h.0.attn.c_attn.weight") == torch.Size([D, 3 * D])


def test_state_dict_of_gpt2_pairs_its_tied_lm_head(pair: tuple[nn.Module, nn.Module]) -> None:
    a, b = pair
    sel = select.common(a.state_dict(), b.state_dict(), by="role")
    assert ("lm_head.weight", "lm_head.weight") in sel.pairs
    assert len(sel) == 19


def test_biases_split_too_gpt2_onto_qwen2() -> None:
    a = gpt2(layers=1)
    qwen = small(
        "Qwen2Model",
        vocab_size=40,
        hidden_size=D,
        num_hidden_layers=1,
        num_attention_heads=4,
        num_key_value_heads=4,
        intermediate_size=4 * D,
    )
    sel = select.common(a, qwen, by="role", roles=["attn.q", "attn.k", "attn.v"])
    assert sel.roles == tuple(f"attn.{x}.{k}" for k in ("weight", "bias") for x in "qkv")
    parts = sel.transfer(dict(a.named_parameters()))
    c_attn_bias = a.state_dict()["transformer.h.0.attn.c_attn.bias"]
    assert torch.equal(parts["layers.0.self_attn.v_proj.bias"], c_attn_bias[2 * D :])


def test_bert_onto_roberta_and_vit_by_role() -> None:
    kw = {
        "hidden_size": D,
        "num_hidden_layers": 2,
        "num_attention_heads": 4,
        "intermediate_size": 64,
    }
    bert = small("BertModel", vocab_size=40, max_position_embeddings=24, **kw)
    roberta = small("RobertaModel", vocab_size=40, max_position_embeddings=24, **kw)
    vit = small("ViTModel", image_size=8, patch_size=4, **kw)
    assert select.common(bert, roberta, by="role") == select.common(bert, roberta, by="structure")
    to_vit = select.common(bert, vit, by="role")
    assert len(to_vit) == 2 * 16 + 2 and not any(to_vit.views)
    assert to_vit.mapping["encoder.layer.1.attention.output.LayerNorm.weight"].endswith(
        "1.layernorm_before.weight"
    )


def test_refusals_name_the_role_and_both_shapes(pair: tuple[nn.Module, nn.Module]) -> None:
    a, _ = pair
    gqa = llama(kv_heads=2)  # k_proj and v_proj are [16, 32]
    with pytest.raises(ShapeMismatchError) as info:
        select.common(a, gqa, by="role")
    msg = str(info.value)
    assert "2 roles do not line up between `a` (GPT-2) and `b` (Llama / Mistral / Qwen2)" in msg
    assert (
        "role 'attn.k.weight': `a` gives (32, 32) from 'transformer.h.0.attn.c_attn.weight' "
        "(32, 96), `b` needs (16, 32) for 'model.layers.0.self_attn.k_proj.weight' (16, 32) "
        "(2 times)" in msg
    )
    assert "leave them out with `roles=`" in msg
    kept = select.common(a, gqa, by="role", roles=["attn.q", "attn.o", "mlp.up", "mlp.down"])
    assert len(kept) == 2 * 4
    with pytest.raises(WeightspaceValueError, match="`a` has 4 attention heads and `b` has 8"):
        select.common(a, llama(heads=8), by="role")
    assert len(select.common(a, llama(heads=8), by="role", roles=["mlp.up"])) == 2


def test_depths_and_unknown_families(pair: tuple[nn.Module, nn.Module]) -> None:
    a, _ = pair
    deep = llama(layers=4)
    with pytest.raises(WeightspaceValueError, match=r"`a` has 2 blocks .* `b` has 4 .*`layers="):
        select.common(a, deep, by="role")
    sel = select.common(a, deep, by="role", layers="spread")
    assert sel.blocks[1] == ("transformer.h.1", "model.layers.3")
    assert "layers='spread'" in str(sel).splitlines()[0]
    with pytest.raises(WeightspaceValueError) as info:
        select.common(nn.Linear(2, 2), deep, by="role")
    msg = str(info.value)
    assert '`by="role"` knows no family of `a`' in msg and "GPT-2 (blocks" in msg
    with pytest.raises(WeightspaceValueError, match='`roles` only applies to by="role"'):
        select.common(a, deep, roles=["attn.q"])
    with pytest.raises(
        WeightspaceValueError, match=r"unknown roles \['attn\.qq'\]; known roles: \["
    ):
        select.common(a, deep, by="role", layers="prefix", roles=["attn.q", "attn.qq"])
    with pytest.raises(WeightspaceValueError, match="`roles` must be a list of role names"):
        select.common(a, deep, by="role", layers="prefix", roles="attn.q")  # type: ignore[arg-type]
