from __future__ import annotations

import pytest
import torch
from torch import nn

from weightspace import WeightspaceValueError, select


class Block(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.self_attn = nn.ModuleDict(
            {"q_proj": nn.Linear(4, 4), "xq_proj": nn.Linear(4, 4), "v_proj": nn.Linear(4, 4)}
        )
        self.norm = nn.LayerNorm(4)


class LM(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.embed_tokens = nn.Embedding(10, 4)
        self.layers = nn.ModuleList([Block(), Block()])
        self.lm_head = nn.Linear(4, 10, bias=False)


def test_list_matches_exact_names_and_dotted_suffixes_only() -> None:
    model = LM()
    mods = select.modules(model, ["q_proj"])
    assert mods == ("layers.0.self_attn.q_proj", "layers.1.self_attn.q_proj")
    params = select.parameters(model, ["q_proj"]).names_a
    assert params == (
        "layers.0.self_attn.q_proj.weight",
        "layers.0.self_attn.q_proj.bias",
        "layers.1.self_attn.q_proj.weight",
        "layers.1.self_attn.q_proj.bias",
    )
    # exact full name, and a parameter-level suffix
    assert select.modules(model, ["layers.1.self_attn.v_proj"]) == ("layers.1.self_attn.v_proj",)
    assert len(select.parameters(model, ["q_proj.weight"])) == 2
    # a module matches all tensors under it
    assert len(select.parameters(model, ["layers.0"])) == 8


def test_string_is_a_fullmatch_regex() -> None:
    model = LM()
    assert select.modules(model, r".*\.0\..*_proj") == (
        "layers.0.self_attn.q_proj",
        "layers.0.self_attn.xq_proj",
        "layers.0.self_attn.v_proj",
    )
    # fullmatch, not search: "q_proj" as a regex matches no full name
    with pytest.raises(WeightspaceValueError):
        select.modules(model, "q_proj")
    assert len(select.parameters(model, r".*\.bias")) == 2 * 3 + 2
    with pytest.raises(WeightspaceValueError, match="does not compile"):
        select.parameters(model, "(")


def test_exclude_uses_the_same_grammar() -> None:
    model = LM()
    sel = select.parameters(model, r".*_proj", exclude=["xq_proj", "layers.1"])
    assert all("xq_proj" not in n and not n.startswith("layers.1") for n in sel)
    assert len(sel) == 4
    mods = select.modules(model, ["q_proj", "v_proj"], exclude=r"layers\.0\..*")
    assert mods == ("layers.1.self_attn.q_proj", "layers.1.self_attn.v_proj")


def test_presets_and_combinations() -> None:
    model = LM()
    linear = select.parameters(model, select.LINEAR)
    assert "lm_head.weight" in linear and len(linear) == 2 * 3 * 2 + 1
    no_head = select.parameters(model, select.linear(exclude_head=True))
    assert set(linear.names_a) - set(no_head.names_a) == {"lm_head.weight"}
    assert (
        select.modules(model, select.linear(exclude_head=True))[-1] == "layers.1.self_attn.v_proj"
    )
    no_norms = select.parameters(model, select.NO_NORMS)
    assert not any(".norm." in n for n in no_norms) and "embed_tokens.weight" in no_norms
    both = select.parameters(model, select.NO_NORMS & select.NO_EMBEDDINGS)
    assert set(both.names_a) == set(linear.names_a)
    union = select.parameters(model, select.pattern(["norm"]) | select.pattern(["embed_tokens"]))
    assert len(union) == 2 * 2 + 1
    assert select.parameters(model, select.LINEAR - select.pattern(["layers"])).names_a == (
        "lm_head.weight",
    )
    assert set(select.parameters(model, ~select.LINEAR).names_a) == set(
        select.parameters(model, r".*").names_a
    ) - set(linear.names_a)


def test_hugging_face_style_head_detection() -> None:
    class WithHead(LM):
        def get_output_embeddings(self) -> nn.Module:
            return self.lm_head

    class Reordered(WithHead):
        def __init__(self) -> None:
            super().__init__()
            self.extra = nn.Linear(2, 2)  # registered after the head

    mods = select.modules(Reordered(), select.linear(exclude_head=True))
    assert "lm_head" not in mods and "extra" in mods


def test_state_dicts_use_name_heuristics() -> None:
    sd = LM().state_dict()
    no_norms = select.parameters(sd, select.NO_NORMS & select.NO_EMBEDDINGS)
    assert not any("norm" in n or "embed" in n for n in no_norms)
    with pytest.raises(WeightspaceValueError, match="needs an nn.Module"):
        select.parameters(sd, select.LINEAR)
    assert select.modules(sd, ["q_proj"]) == (
        "layers.0.self_attn.q_proj",
        "layers.1.self_attn.q_proj",
    )


def test_buffers_option() -> None:
    model = nn.Sequential(nn.Linear(2, 2), nn.BatchNorm1d(2))
    assert "1.running_mean" not in select.parameters(model, ["1"])
    sel = select.parameters(model, ["1"], buffers=True)
    assert sel.names_a == ("1.weight", "1.bias", "1.running_mean", "1.running_var")


def test_empty_selection_error_says_what_was_tried_and_lists_candidates() -> None:
    model = LM()
    with pytest.raises(WeightspaceValueError) as info:
        select.parameters(model, ["q_prj"])
    msg = str(info.value)
    assert "`targets`=['q_prj']" in msg and "tensor names" in msg and "module names" in msg
    assert "'q_proj'" in msg
    with pytest.raises(WeightspaceValueError) as info:
        select.parameters(model, ["q_proj"], exclude=["self_attn"])
    assert "all removed by `exclude`" in str(info.value)
    with pytest.raises(WeightspaceValueError, match="must be a list"):
        select.parameters(model, 3)  # type: ignore[arg-type]


def test_selector_is_immutable() -> None:
    with pytest.raises(AttributeError):
        select.LINEAR.exclude_head = True  # type: ignore[attr-defined]
    assert repr(select.LINEAR) == "select.LINEAR"
    assert isinstance(select.pattern(["a"]) & select.NO_NORMS, select.Selector)
    assert torch.is_tensor(torch.ones(1))
