"""The whole-tensor methods (slerp, model_stock, breadcrumbs, della): hand-computed cases."""

from __future__ import annotations

import math
import re
from pathlib import Path

import pytest
import torch

from weightspace._errors import WeightspaceValueError
from weightspace.io import open_state_dict, save_state_dict
from weightspace.merge import MergeConfig, run_merge
from weightspace.merge._whole import (
    della_keep,
    gta_combine,
    layer_positions,
    model_stock,
    outlier_keep,
    resolve_setting,
    slerp,
)

S = math.sqrt(0.5)


def merged(
    tmp_path: Path, base: dict[str, torch.Tensor], models: list[dict[str, torch.Tensor]], body: str
) -> dict[str, torch.Tensor]:
    """Run a mergekit config ``body`` on these checkpoints; the output tensors."""
    save_state_dict(base, tmp_path / "base.safetensors")
    lines = "".join(f"  - model: m{i}.safetensors\n" for i in range(len(models)))
    for i, m in enumerate(models):
        save_state_dict(m, tmp_path / f"m{i}.safetensors")
    config = tmp_path / "c.yml"
    config.write_text(
        "base_model: base.safetensors\nmodels:\n  - model: base.safetensors\n" + lines + body,
        encoding="utf-8",
    )
    out = run_merge(MergeConfig.from_yaml(config), tmp_path / "o.safetensors", progress=False)
    sd = open_state_dict(out.output)
    return {k: sd[k] for k in sd}


def test_slerp_kernel_hand_values() -> None:
    a, b = torch.tensor([1.0, 0.0]), torch.tensor([0.0, 1.0])
    assert torch.allclose(slerp(0.5, a, b), torch.tensor([S, S]))
    assert torch.equal(slerp(0.0, a, b), a) and torch.allclose(slerp(1.0, a, b), b)
    # a third of the way along the quarter circle: (cos 30°, sin 30°)
    assert torch.allclose(slerp(1 / 3, a, b), torch.tensor([math.sqrt(3) / 2, 0.5]))
    # lengths are interpolated along with the angle: 2a and b at t = 0.5
    assert torch.allclose(slerp(0.5, 2 * a, b), torch.tensor([2 * S, S]))
    # collinear inputs: linear interpolation
    c = torch.tensor([1.0, 2.0])
    assert torch.equal(slerp(0.25, c, 2 * c), 1.25 * c)


def test_settings_gradients_and_filters() -> None:
    assert resolve_setting(0.3, "x", 0.7) == 0.3
    assert resolve_setting([0.0, 1.0], "x", 0.25) == 0.25
    assert resolve_setting([0.0, 0.5, 0.3, 0.7, 1.0], "x", 0.5) == 0.3
    assert resolve_setting([0.0, 0.5, 0.3, 0.7, 1.0], "x", 0.375) == pytest.approx(0.4)
    flt = [{"filter": "self_attn", "value": [0.0, 1.0]}, {"filter": None, "value": 0.5}]
    assert resolve_setting(flt, "model.layers.1.self_attn.q_proj.weight", 1.0) == 1.0
    assert resolve_setting(flt, "model.layers.1.mlp.up_proj.weight", 1.0) == 0.5
    assert resolve_setting(flt[:1], "model.norm.weight", 0.0) is None
    names = [f"model.layers.{i}.w" for i in (0, 1, 2, 3)] + ["model.embed_tokens.weight"]
    assert layer_positions(names) == {
        "model.layers.0.w": 0.0,
        "model.layers.1.w": 1 / 3,
        "model.layers.2.w": 2 / 3,
        "model.layers.3.w": 1.0,
        "model.embed_tokens.weight": 0.0,
    }


def test_slerp_config_with_gradient_and_filter(tmp_path: Path) -> None:
    base = {f"model.layers.{i}.{part}": torch.tensor([1.0, 0.0]) for i in range(3)
            for part in ("self_attn.w", "mlp.w")}  # fmt: skip
    base["model.embed.weight"] = torch.tensor([1.0, 0.0])
    model = {k: torch.tensor([0.0, 1.0]) for k in base}
    body = (
        "merge_method: slerp\nparameters:\n  t:\n    - filter: self_attn\n"
        "      value: [0, 1]\n    - value: 0.5\ndtype: float32\n"
    )
    out = merged(tmp_path, base, [model], body)
    half = torch.tensor([S, S])
    assert torch.equal(out["model.layers.0.self_attn.w"], torch.tensor([1.0, 0.0]))
    assert torch.allclose(out["model.layers.1.self_attn.w"], half)
    assert torch.allclose(out["model.layers.2.self_attn.w"], torch.tensor([0.0, 1.0]))
    for i in range(3):
        assert torch.allclose(out[f"model.layers.{i}.mlp.w"], half)
    assert torch.allclose(out["model.embed.weight"], half)


def test_model_stock_hand_values() -> None:
    base = torch.zeros(2)
    # orthogonal task vectors: cos 0, t 0, the base
    assert torch.equal(model_stock(base, [torch.tensor([1.0, 0.0]), torch.tensor([0.0, 1.0])]),
                       base)  # fmt: skip
    # identical task vectors: cos 1, t = 2 / 2 = 1, their mean
    same = torch.tensor([3.0, -1.0])
    assert torch.allclose(model_stock(base, [same, same.clone()]), same)
    # 60 degrees apart: cos 1/2, t = 2 * 0.5 / 1.5 = 2/3 of the mean
    a, b = torch.tensor([1.0, 0.0]), torch.tensor([0.5, math.sqrt(3) / 2])
    assert torch.allclose(model_stock(base, [a, b]), (2 / 3) * (a + b) / 2)
    # filter-wise: one ratio per row
    first, second = torch.tensor([[1.0, 0.0], [1.0, 0.0]]), torch.tensor([[0.0, 1.0], [1.0, 0.0]])
    rows = model_stock(torch.zeros(2, 2), [first, second], filter_wise=True)
    assert torch.allclose(rows, torch.tensor([[0.0, 0.0], [1.0, 0.0]]))


def test_model_stock_config(tmp_path: Path) -> None:
    base = {"w": torch.tensor([1.0, 1.0])}
    models = [{"w": torch.tensor([2.0, 1.0])}, {"w": torch.tensor([1.5, 1.0 + math.sqrt(3) / 2])}]
    out = merged(tmp_path, base, models, "merge_method: model_stock\n")
    expected = torch.tensor([1.0, 1.0]) + (2 / 3) * torch.tensor([1.5, math.sqrt(3) / 2]) / 2
    assert torch.allclose(out["w"], expected)


def test_breadcrumbs_mask_hand_values() -> None:
    delta = torch.tensor([3.0, -1.0, 10.0, 2.0, -7.0, 5.0, 4.0, -9.0, 6.0, 8.0])
    # n 10, density 0.5 keeps 5; gamma 0.1 drops the largest (10) first, then the 4 smallest
    mask = outlier_keep(delta, 0.5, 0.1)
    assert sorted(delta[mask].abs().tolist()) == [5.0, 6.0, 7.0, 8.0, 9.0]
    assert outlier_keep(delta, 0.5, 0.0).sum() == 5 and bool(outlier_keep(delta, 0.5, 0.0)[2])
    ties = torch.ones(6)  # all tied: the first entries in index order are ranked lowest
    assert outlier_keep(ties, 0.5, 0.0).tolist() == [False] * 3 + [True] * 3


def test_breadcrumbs_config_hand_values(tmp_path: Path) -> None:
    base = {"w": torch.zeros(10)}
    d0 = torch.tensor([3.0, -1.0, 10.0, 2.0, -7.0, 5.0, 4.0, -9.0, 6.0, 8.0])
    d1 = -torch.arange(1.0, 11.0)
    body = "merge_method: breadcrumbs\nparameters: {density: 0.5, gamma: 0.1}\n"
    out = merged(tmp_path, base, [{"w": d0}, {"w": d1}], body + "dtype: float32\n")
    keep0 = torch.where(outlier_keep(d0, 0.5, 0.1), d0, 0.0)
    keep1 = torch.where(outlier_keep(d1, 0.5, 0.1), d1, 0.0)
    assert torch.equal(keep1, torch.tensor([0.0, 0, 0, 0, -5, -6, -7, -8, -9, 0]))
    assert torch.equal(out["w"], keep0 + keep1)  # weights 1, no normalisation


def test_breadcrumbs_ties_election_and_normalize(tmp_path: Path) -> None:
    base = {"w": torch.zeros(4)}
    a = {"w": torch.tensor([2.0, -1.0, 4.0, 0.0])}
    b = {"w": torch.tensor([1.0, 3.0, -4.0, 0.0])}
    body = (
        "merge_method: breadcrumbs_ties\nparameters: {density: 1.0, gamma: 0.0, normalize: true}\n"
    )
    out = merged(tmp_path, base, [a, b], body)
    # signs of the sums: +, +, + (0 elects +), + -> agreeing means 1.5, 3, 4, 0
    assert torch.equal(out["w"], torch.tensor([1.5, 3.0, 4.0, 0.0]))
    assert torch.equal(
        gta_combine([a["w"], b["w"]], [1.0, 1.0], consensus=True, normalize=False, scale=2.0),
        torch.tensor([6.0, 6.0, 8.0, 0.0]),
    )
    assert torch.equal(
        gta_combine([a["w"], b["w"]], [1.0, 3.0], consensus=False, normalize=True, scale=1.0),
        (a["w"] + 3 * b["w"]) / 4,
    )


def test_della_mask_law_and_seeding() -> None:
    delta = torch.randn(64, 512, generator=torch.Generator().manual_seed(0))
    gen = torch.Generator().manual_seed(5)
    mask = della_keep(delta, 0.4, 0.2, gen)
    assert abs(float(mask.float().mean()) - 0.4) < 0.01
    order = delta.abs().argsort(dim=1)
    low = mask.gather(1, order[:, :128]).float().mean()  # ranks of keep probability ~0.25
    high = mask.gather(1, order[:, -128:]).float().mean()  # ~0.55
    assert abs(float(low) - 0.25) < 0.02 and abs(float(high) - 0.55) < 0.02
    again = della_keep(delta, 0.4, 0.2, torch.Generator().manual_seed(5))
    assert torch.equal(mask, again)


def test_della_config_keeps_the_l1_norm_and_is_seeded(tmp_path: Path) -> None:
    gen = torch.Generator().manual_seed(1)
    base = {"w": torch.randn(32, 64, generator=gen)}
    model = {"w": base["w"] + torch.randn(32, 64, generator=gen)}
    body = "merge_method: della_linear\nparameters: {density: 0.5, epsilon: 0.1}\nrandom_seed: 3\n"
    out = merged(tmp_path, base, [model], body)
    delta = model["w"] - base["w"]
    got = out["w"] - base["w"]
    kept = got != 0
    assert abs(float(kept.float().mean()) - 0.5) < 0.05
    ratio = float(delta.abs().sum() / delta[kept].abs().sum())
    assert torch.allclose(got[kept], delta[kept] * ratio, rtol=1e-5, atol=1e-6)
    assert float(got.abs().sum()) == pytest.approx(float(delta.abs().sum()), rel=1e-5)
    (tmp_path / "o.safetensors").unlink()
    second = run_merge(
        MergeConfig.from_yaml(tmp_path / "c.yml"), tmp_path / "o.safetensors", progress=False
    )
    assert torch.equal(open_state_dict(second.output)["w"], out["w"])  # seeded


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ("merge_method: slerp\nparameters: {t: 0.5}\nmodels_extra: x\n", "models_extra"),
        ("merge_method: slerp\n", "needs `parameters.t`"),
        ("merge_method: slerp\nparameters: {t: [{filter: 3, value: 1}]}\n", "must be a string"),
        ("merge_method: slerp\nparameters: {t: 'high'}\n", "a gradient"),
        ("merge_method: model_stock\nparameters: {t: 0.5}\n", "unknown key(s) 't'"),
        ("merge_method: della\nparameters: {density: 0.9, epsilon: 0.2}\n", "epsilon"),
        ("merge_method: breadcrumbs\nparameters: {gamma: 1.5}\n", "[0, 1)"),
        ("merge_method: breadcrumbs\nparameters: {epsilon: 0.1}\n", "not a parameter"),
    ],
)
def test_bad_settings_are_named(tmp_path: Path, body: str, message: str) -> None:
    text = (
        "base_model: base.safetensors\nmodels:\n  - model: base.safetensors\n"
        "  - model: m0.safetensors\n" + body
    )
    with pytest.raises(WeightspaceValueError, match=re.escape(message)):
        MergeConfig.from_yaml(text)


def test_slerp_needs_exactly_one_model() -> None:
    text = "base: b.safetensors\nmodels: [a.safetensors, c.safetensors]\nmethod: slerp\n"
    with pytest.raises(WeightspaceValueError, match="exactly one model, got 2"):
        MergeConfig.from_yaml(text + "parameters: {t: 0.5}\n")


def _layered(seed: int, layers: int) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    sd = {"model.embed_tokens.weight": torch.randn(8, 4, generator=g)}
    for i in range(layers):
        sd[f"model.layers.{i}.mlp.weight"] = torch.randn(4, 4, generator=g)
        sd[f"model.layers.{i}.norm.weight"] = torch.randn(4, generator=g)
    sd["model.norm.weight"] = torch.randn(4, generator=g)
    sd["lm_head.weight"] = torch.randn(8, 4, generator=g)
    return sd


def test_passthrough_stacks_layers(tmp_path: Path) -> None:
    a, b = _layered(0, 4), _layered(1, 4)
    save_state_dict(a, tmp_path / "a" / "model.safetensors")
    save_state_dict(b, tmp_path / "b" / "model.safetensors")
    (tmp_path / "a" / "config.json").write_text('{"num_hidden_layers": 4}', encoding="utf-8")
    config = MergeConfig.from_yaml(
        f"merge_method: passthrough\nslices:\n"
        f"  - sources: [{{model: {tmp_path / 'a'}, layer_range: [0, 3]}}]\n"
        f"  - sources: [{{model: {tmp_path / 'b'}, layer_range: [1, 4]}}]\n"
    )
    out = run_merge(config, tmp_path / "out", progress=False).output
    sd = open_state_dict(out)
    # layers 0-2 of a, then layers 1-3 of b as layers 3-5
    expected = {f"model.layers.{i}.{p}": a[f"model.layers.{i}.{p}"] for i in range(3)
                for p in ("mlp.weight", "norm.weight")}  # fmt: skip
    expected.update({f"model.layers.{i + 2}.{p}": b[f"model.layers.{i}.{p}"] for i in (1, 2, 3)
                     for p in ("mlp.weight", "norm.weight")})  # fmt: skip
    expected["model.embed_tokens.weight"] = a["model.embed_tokens.weight"]  # the first slice's
    expected["model.norm.weight"] = b["model.norm.weight"]  # the last slice's
    expected["lm_head.weight"] = b["lm_head.weight"]
    assert sorted(sd) == sorted(expected)
    assert all(torch.equal(sd[n], t) for n, t in expected.items())
    assert (out / "config.json").read_text(encoding="utf-8") == '{\n  "num_hidden_layers": 6\n}\n'


@pytest.mark.parametrize(
    ("slices", "message"),
    [
        ("[{model: 0, layers: [2, 9]}]", "takes layers 2 to 8"),
        ("[{model: 3, layers: [0, 1]}]", "0 <= INDEX < 1"),
        ("[]", "needs `parameters.slices`"),
    ],
)
def test_passthrough_bad_slices(tmp_path: Path, slices: str, message: str) -> None:
    save_state_dict(_layered(0, 4), tmp_path / "a.safetensors")
    text = (
        f"base: {tmp_path / 'a.safetensors'}\nmodels: [{tmp_path / 'a.safetensors'}]\n"
        f"method: passthrough\nparameters: {{slices: {slices}}}\n"
    )
    with pytest.raises(WeightspaceValueError, match=re.escape(message)):
        run_merge(MergeConfig.from_yaml(text), tmp_path / "o.safetensors", progress=False)
