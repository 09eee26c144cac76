from __future__ import annotations

import copy
import json
import math
import warnings

import pytest
import torch
from torch import nn

from weightspace import WeightspaceValueError
from weightspace._lora import LoraAdapter, lora_to_task_vector
from weightspace._task_vector import TaskVector

peft = pytest.importorskip("peft")


class Tiny(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.emb = nn.Embedding(10, 4)
        self.conv = nn.Conv2d(4, 6, 3)
        self.fc1 = nn.Linear(6, 8)
        self.fc2 = nn.Linear(8, 3)


def peft_delta(base: nn.Module, config: object, tmp_path) -> tuple[dict, dict, str]:
    """Wrap a copy of base with PEFT, save the adapter, merge: return (base sd, merged sd, dir)."""
    torch.manual_seed(1)
    model = copy.deepcopy(base)
    pm = peft.get_peft_model(model, config)
    with warnings.catch_warnings():
        # PEFT warns that 1-D lora_B.bias tensors look like ungathered shards (lora_bias=True)
        warnings.filterwarnings("ignore", message=".*LoRA tensor.*invalid shape")
        pm.save_pretrained(str(tmp_path))
    merged = pm.merge_and_unload()
    return base.state_dict(), merged.state_dict(), str(tmp_path)


@pytest.mark.parametrize(
    "options",
    [
        {},
        {"use_rslora": True},
        {"rank_pattern": {"fc2": 3}, "alpha_pattern": {"fc1": 5.0}},
        {"lora_bias": True},
    ],
    ids=["plain", "rslora", "patterns", "lora_bias"],
)
def test_dense_delta_matches_peft_merge(tmp_path, options: dict) -> None:
    torch.manual_seed(0)
    base = Tiny()
    targets = ["conv", "fc1", "fc2"] if options.get("lora_bias") else ["emb", "conv", "fc1", "fc2"]
    config = peft.LoraConfig(
        r=2, lora_alpha=6, target_modules=targets, init_lora_weights=False, **options
    )
    base_sd, merged_sd, folder = peft_delta(base, config, tmp_path)
    tv = TaskVector.from_lora(folder)
    expected = sorted(f"{t}.weight" for t in targets)
    if options.get("lora_bias"):
        expected = sorted([*expected, "conv.bias", "fc1.bias", "fc2.bias"])
    assert sorted(tv) == expected
    new = tv.apply_to(base_sd)
    for name, value in merged_sd.items():
        assert torch.allclose(new[name], value, atol=1e-6, rtol=0), name
        if name in tv:
            assert torch.allclose(tv[name], value - base_sd[name], atol=1e-6, rtol=0), name
            assert tv.shape(name) == value.shape


def test_fan_in_fan_out_matches_peft(tmp_path) -> None:
    conv1d = pytest.importorskip("transformers.pytorch_utils").Conv1D

    class GPTish(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.c_attn = conv1d(12, 4)  # weight (in=4, out=12)

    torch.manual_seed(0)
    base = GPTish()
    config = peft.LoraConfig(
        r=2, lora_alpha=4, target_modules=["c_attn"], fan_in_fan_out=True, init_lora_weights=False
    )
    base_sd, merged_sd, folder = peft_delta(base, config, tmp_path)
    tv = TaskVector.from_lora(folder)
    assert tv.shape("c_attn.weight") == torch.Size([4, 12])
    assert torch.allclose(
        tv["c_attn.weight"], merged_sd["c_attn.weight"] - base_sd["c_attn.weight"], atol=1e-6
    )


def test_in_memory_state_dict_with_adapter_names_and_base_weights() -> None:
    torch.manual_seed(0)
    base = Tiny()
    config = peft.LoraConfig(r=2, lora_alpha=4, target_modules=["fc1"], init_lora_weights=False)
    pm = peft.get_peft_model(copy.deepcopy(base), config)
    sd = pm.state_dict()  # holds base_layer weights and lora_A.default.weight keys
    tv = TaskVector.from_lora(sd, config=config)
    assert list(tv) == ["fc1.weight"]
    delta = pm.base_model.model.fc1.get_delta_weight("default")
    assert torch.allclose(tv["fc1.weight"], delta, atol=1e-7)
    renamed = TaskVector.from_lora(sd, config=config, base_names=lambda n: "model." + n)
    assert list(renamed) == ["model.fc1.weight"]
    assert list(TaskVector.from_lora(sd, config=config, base_names={"x": "y"})) == ["fc1.weight"]


def test_hand_made_adapter_in_peft_format(tmp_path) -> None:
    from safetensors.torch import save_file

    a, b = torch.randn(2, 5), torch.randn(3, 2)
    save_file(
        {
            "base_model.model.blk.proj.lora_A.weight": a,
            "base_model.model.blk.proj.lora_B.weight": b,
        },
        str(tmp_path / "adapter_model.safetensors"),
    )
    (tmp_path / "adapter_config.json").write_text(json.dumps({"r": 2, "lora_alpha": 8}))
    tv = lora_to_task_vector(tmp_path)
    assert torch.allclose(tv["blk.proj.weight"], 4.0 * b @ a)
    assert tv.metadata["source"] == "lora"


def test_errors() -> None:
    a, b = torch.ones(2, 3), torch.ones(4, 2)
    sd = {"base_model.model.fc.lora_A.weight": a, "base_model.model.fc.lora_B.weight": b}
    with pytest.raises(WeightspaceValueError, match="`config` is required"):
        lora_to_task_vector(sd)
    with pytest.raises(WeightspaceValueError, match="DoRA"):
        lora_to_task_vector(sd, config={"r": 2, "lora_alpha": 2, "use_dora": True})
    with pytest.raises(WeightspaceValueError, match="rank 2 .* r=4"):
        lora_to_task_vector(sd, config={"r": 4, "lora_alpha": 2})
    with pytest.raises(WeightspaceValueError, match="only one of its LoRA factors"):
        lora_to_task_vector({"fc.lora_A.weight": a}, config={"r": 2, "lora_alpha": 2})
    with pytest.raises(WeightspaceValueError, match="no LoRA factors"):
        lora_to_task_vector({"fc.weight": a}, config={"r": 2, "lora_alpha": 2})
    with pytest.raises(WeightspaceValueError, match="modules_to_save"):
        lora_to_task_vector(
            {**sd, "base_model.model.head.modules_to_save.default.weight": a},
            config={"r": 2, "lora_alpha": 2},
        )


def test_low_rank_factors_and_errors() -> None:
    torch.manual_seed(0)
    u, v = torch.randn(6, 2), torch.randn(2, 5)
    tv = TaskVector({"w": u @ v + 1e-3 * torch.randn(6, 5), "b": torch.ones(6)})
    lr = tv.low_rank(2)
    b, a = lr.factors["w"]
    assert b.shape == (6, 2) and a.shape == (2, 5)
    s = torch.linalg.svdvals(tv["w"].double())
    assert lr.relative_error["w"] == pytest.approx(float(s[2:].norm() / s.norm()), rel=1e-6)
    approx = lr.to_task_vector()
    err = (approx["w"] - tv["w"]).norm() / tv["w"].norm()
    assert float(err) == pytest.approx(lr.relative_error["w"], rel=1e-4)
    assert torch.equal(approx["b"], tv["b"])
    full = tv.low_rank(10)
    assert full.relative_error["w"] < 1e-6
    with pytest.raises(WeightspaceValueError, match="positive integer"):
        tv.low_rank(0)


def test_to_lora_round_trip_through_peft(tmp_path) -> None:
    torch.manual_seed(0)
    base = nn.Sequential(nn.Linear(5, 7), nn.ReLU(), nn.Linear(7, 3))
    ft = copy.deepcopy(base)
    with torch.no_grad():
        for p in ft.parameters():
            p.add_(0.1 * torch.randn_like(p))
    tv = TaskVector.from_models(base=base, finetuned=ft).restrict(["0.weight", "2.weight"])
    adapter = tv.to_lora(3, alpha=6.0)
    assert isinstance(adapter, LoraAdapter)
    assert adapter.config["target_modules"] == ["0", "2"]
    ours = adapter.to_task_vector()
    assert ours.allclose(tv.low_rank(3).to_task_vector(), atol=1e-6)
    folder = adapter.save(tmp_path / "adapter")
    assert json.loads((folder / "adapter_config.json").read_text())["lora_alpha"] == 6.0
    loaded = peft.PeftModel.from_pretrained(copy.deepcopy(base), str(folder))
    merged = loaded.merge_and_unload().state_dict()
    expected = tv.low_rank(3).to_task_vector().apply_to(base.state_dict())
    for name in ("0.weight", "2.weight"):
        assert torch.allclose(merged[name], expected[name], atol=1e-6), name
    with pytest.raises(WeightspaceValueError, match="2-D"):
        TaskVector.from_models(base=base, finetuned=ft).to_lora(2)
    assert math.isfinite(adapter.relative_error["0.weight"])
