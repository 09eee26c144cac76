from __future__ import annotations

import copy
import json
import math
import warnings
from typing import Any

import pytest
import torch
from torch import nn

from weightspace import WeightspaceValueError
from weightspace._lora import LoraAdapter, lora_to_task_vector
from weightspace._task_vector import TaskVector


@pytest.fixture
def peft() -> Any:
    """The peft package; tests that compare with it are skipped without it."""
    return pytest.importorskip("peft")


class Tiny(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.emb = nn.Embedding(10, 4)
        self.conv = nn.Conv2d(4, 6, 3)
        self.fc1 = nn.Linear(6, 8)
        self.fc2 = nn.Linear(8, 3)


def peft_delta(peft: Any, base: nn.Module, config: object, tmp_path) -> tuple[dict, dict, str]:
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
def test_dense_delta_matches_peft_merge(peft: Any, tmp_path, options: dict) -> None:
    torch.manual_seed(0)
    base = Tiny()
    targets = ["conv", "fc1", "fc2"] if options.get("lora_bias") else ["emb", "conv", "fc1", "fc2"]
    config = peft.LoraConfig(
        r=2, lora_alpha=6, target_modules=targets, init_lora_weights=False, **options
    )
    base_sd, merged_sd, folder = peft_delta(peft, base, config, tmp_path)
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


def test_fan_in_fan_out_matches_peft(peft: Any, tmp_path) -> None:
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
    base_sd, merged_sd, folder = peft_delta(peft, base, config, tmp_path)
    tv = TaskVector.from_lora(folder)
    assert tv.shape("c_attn.weight") == torch.Size([4, 12])
    assert torch.allclose(
        tv["c_attn.weight"], merged_sd["c_attn.weight"] - base_sd["c_attn.weight"], atol=1e-6
    )


def test_in_memory_state_dict_with_adapter_names_and_base_weights(peft: Any) -> None:
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


def test_to_lora_round_trip_through_peft(peft: Any, tmp_path) -> None:
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


# ------------------------------------------------------------------------ without peft
# The adapter format and PEFT's scaling rules, checked against formulas written out by hand.


def factors(*shapes: tuple[int, ...]) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(7)
    return [torch.randn(shape, generator=g) for shape in shapes]


def test_scales_follow_rank_and_alpha_patterns_by_hand() -> None:
    a1, b1, a2, b2 = factors((2, 5), (4, 2), (3, 4), (6, 3))
    sd = {
        "base_model.model.blk.fc1.lora_A.weight": a1,
        "base_model.model.blk.fc1.lora_B.weight": b1,
        "base_model.model.blk.fc2.lora_A.weight": a2,
        "base_model.model.blk.fc2.lora_B.weight": b2,
    }
    config = {"r": 2, "lora_alpha": 4, "rank_pattern": {"fc2": 3}, "alpha_pattern": {"fc1": 6}}
    tv = lora_to_task_vector(sd, config=config)
    assert list(tv) == ["blk.fc1.weight", "blk.fc2.weight"]
    assert torch.allclose(tv["blk.fc1.weight"], (6 / 2) * b1 @ a1, atol=1e-6)
    assert torch.allclose(tv["blk.fc2.weight"], (4 / 3) * b2 @ a2, atol=1e-6)
    rs = lora_to_task_vector(sd, config={**config, "use_rslora": True})
    assert torch.allclose(rs["blk.fc1.weight"], (6 / math.sqrt(2)) * b1 @ a1, atol=1e-6)
    assert torch.allclose(rs["blk.fc2.weight"], (4 / math.sqrt(3)) * b2 @ a2, atol=1e-6)
    # a pattern matches at a dot boundary only: "fc2" does not match "blk.xfc2"
    odd = {k.replace("fc2", "xfc2"): v for k, v in sd.items()}
    with pytest.raises(WeightspaceValueError, match=r"'blk\.xfc2' has rank 3 .* r=2"):
        lora_to_task_vector(odd, config=config)


def test_embedding_conv_bias_and_fan_in_fan_out_by_hand() -> None:
    ea, eb, ca, cb, la, lb, bias = factors(
        (2, 10), (4, 2), (2, 3, 3, 3), (5, 2, 1, 1), (2, 6), (7, 2), (7,)
    )
    sd = {
        "base_model.model.emb.lora_embedding_A": ea,
        "base_model.model.emb.lora_embedding_B": eb,
        "base_model.model.conv.lora_A.weight": ca,
        "base_model.model.conv.lora_B.weight": cb,
        "base_model.model.fc.lora_A.weight": la,
        "base_model.model.fc.lora_B.weight": lb,
        "base_model.model.fc.lora_B.bias": bias,
    }
    tv = lora_to_task_vector(sd, config={"r": 2, "lora_alpha": 3})
    s = 3 / 2
    assert torch.allclose(tv["emb.weight"], s * (eb @ ea).T, atol=1e-6)
    assert tv.shape("emb.weight") == (10, 4)
    expected_conv = s * torch.einsum("or,rikl->oikl", cb[:, :, 0, 0], ca)
    assert torch.allclose(tv["conv.weight"], expected_conv, atol=1e-6)
    assert tv.shape("conv.weight") == (5, 3, 3, 3)
    assert torch.allclose(tv["fc.weight"], s * lb @ la, atol=1e-6)
    assert torch.allclose(tv["fc.bias"], s * bias, atol=1e-6)
    fifo = lora_to_task_vector(
        {k: v for k, v in sd.items() if ".fc." in k and "bias" not in k},
        config={"r": 2, "lora_alpha": 3, "fan_in_fan_out": True},
    )
    assert torch.allclose(fifo["fc.weight"], s * (lb @ la).T, atol=1e-6)
    assert fifo.shape("fc.weight") == (6, 7)


def test_adapter_names_and_renaming_without_peft() -> None:
    a, b, other = factors((2, 3), (4, 2), (2, 3))
    sd = {
        "base_model.model.fc.lora_A.default.weight": a,
        "base_model.model.fc.lora_B.default.weight": b,
        "base_model.model.fc.lora_A.second.weight": other,
        "base_model.model.fc.lora_B.second.weight": b,
        "base_model.model.fc.base_layer.weight": torch.ones(4, 3),
    }
    tv = lora_to_task_vector(sd, config={"r": 2, "lora_alpha": 2})
    assert list(tv) == ["fc.weight"]
    assert torch.allclose(tv["fc.weight"], b @ a, atol=1e-6)
    second = lora_to_task_vector(sd, config={"r": 2, "lora_alpha": 2}, adapter_name="second")
    assert torch.allclose(second["fc.weight"], b @ other, atol=1e-6)
    renamed = TaskVector.from_lora(
        sd, config={"r": 2, "lora_alpha": 2}, base_names={"fc.weight": "head.weight"}
    )
    assert list(renamed) == ["head.weight"]
    with pytest.raises(WeightspaceValueError, match="maps two adapter keys to the same name"):
        lora_to_task_vector(
            {**sd, "base_model.model.g.lora_A.weight": a, "base_model.model.g.lora_B.weight": b},
            config={"r": 2, "lora_alpha": 2},
            base_names=lambda name: "same",
        )


def test_to_lora_saves_an_adapter_that_reads_back_without_peft(tmp_path) -> None:
    g = torch.Generator().manual_seed(3)
    tv = TaskVector(
        {"a.weight": torch.randn(6, 4, generator=g), "b.weight": torch.randn(3, 6, generator=g)}
    )
    adapter = tv.to_lora(2, alpha=8.0)
    assert adapter.config["lora_alpha"] == 8.0 and adapter.config["r"] == 2
    b, a = (
        adapter.state_dict["base_model.model.a.lora_B.weight"],
        adapter.state_dict["base_model.model.a.lora_A.weight"],
    )
    # PEFT's scaling (alpha / r = 4) times the stored factors gives the truncated SVD
    assert torch.allclose(4.0 * b @ a, tv.low_rank(2).to_task_vector()["a.weight"], atol=1e-5)
    folder = adapter.save(tmp_path / "adapter")
    assert sorted(p.name for p in folder.iterdir()) == [
        "adapter_config.json",
        "adapter_model.safetensors",
    ]
    back = TaskVector.from_lora(folder)
    assert back.allclose(tv.low_rank(2).to_task_vector(), atol=1e-5)
    assert back.allclose(adapter.to_task_vector(), atol=1e-6)
    # a rank above the tensor's is padded with zero factors
    padded = TaskVector({"c.weight": torch.ones(2, 3)}).to_lora(4)
    assert padded.state_dict["base_model.model.c.lora_A.weight"].shape == (4, 3)
    assert padded.to_task_vector().allclose(TaskVector({"c.weight": torch.ones(2, 3)}))
    with pytest.raises(WeightspaceValueError, match="`alpha` must be finite and non-zero"):
        tv.to_lora(2, alpha=0.0)
