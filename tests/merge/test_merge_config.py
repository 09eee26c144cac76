"""Tests of weightspace.merge.MergeConfig, plan_merge and run_merge (`weightspace merge`)."""

from __future__ import annotations

import errno
import json
import logging
import os
from pathlib import Path

import pytest
import torch

from weightspace import ShapeMismatchError, TaskVector, WeightspaceValueError
from weightspace import merge as wmerge
from weightspace.io import LazyStateDict, open_state_dict, save_state_dict
from weightspace.io import _write as io_write
from weightspace.merge import MergeConfig, ModelSpec, plan_merge, run_merge

SHAPES = {
    "0.weight": (8, 6),
    "0.bias": (8,),
    "2.weight": (4, 8),
    "2.bias": (4,),
    "bn.running_mean": (8,),
}


def tiny_base(seed: int = 0) -> dict[str, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    sd = {k: torch.randn(s, generator=gen) for k, s in SHAPES.items()}
    sd["bn.num_batches_tracked"] = torch.tensor(7)
    return sd


def finetune(base: dict[str, torch.Tensor], seed: int) -> dict[str, torch.Tensor]:
    gen = torch.Generator().manual_seed(100 + seed)
    return {
        k: v + 0.05 * torch.randn(v.shape, generator=gen) if v.is_floating_point() else v + seed
        for k, v in base.items()
    }


@pytest.fixture
def ckpts(tmp_path: Path) -> dict[str, Path]:
    """A base and three fine-tunes of a tiny MLP on disk; the third one sharded."""
    base = tiny_base()
    paths = {"base": save_state_dict(base, tmp_path / "base.safetensors")}
    for i in range(3):
        sd = finetune(base, i)
        if i == 2:
            paths[f"ft{i}"] = save_state_dict(sd, tmp_path / f"ft{i}", max_shard_size=200)
        else:
            paths[f"ft{i}"] = save_state_dict(sd, tmp_path / f"ft{i}.safetensors")
    assert (tmp_path / "ft2" / "model.safetensors.index.json").is_file()
    return paths


def load(path: Path) -> dict[str, torch.Tensor]:
    sd = open_state_dict(path)
    return {k: sd[k] for k in sd}


def config_text(ckpts: dict[str, Path], body: str, models: str | None = None) -> str:
    models = models or "\n".join(f"  - {ckpts[f'ft{i}']}" for i in range(3))
    return f"base: {ckpts['base']}\nmodels:\n{models}\n{body}\n"


def listing(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


def assert_same(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> None:
    assert list(a) == list(b) or sorted(a) == sorted(b)
    for k in a:
        assert a[k].dtype == b[k].dtype, k
        assert torch.equal(a[k], b[k]), k


def expected_from_vector(
    base_path: Path, merged: TaskVector, dtype: torch.dtype | None = None
) -> dict[str, torch.Tensor]:
    base = load(base_path)
    out = {}
    for k, b in base.items():
        if k in merged:
            out[k] = (b + merged[k]).to(dtype or b.dtype)
        else:
            out[k] = b.to(dtype) if dtype is not None and b.is_floating_point() else b
    return out


def vectors(ckpts: dict[str, Path]) -> list[TaskVector]:
    return [TaskVector.from_models(finetuned=ckpts[f"ft{i}"], base=ckpts["base"]) for i in range(3)]


# ------------------------------------------------------------------------ exact results


def test_task_arithmetic_equals_hand_computation(ckpts: dict[str, Path], tmp_path: Path) -> None:
    cfg = MergeConfig.from_yaml(
        config_text(ckpts, "method: task_arithmetic\nparameters: {scale: 0.3}")
    )
    report = run_merge(cfg, tmp_path / "out.safetensors", progress=False)
    out = load(report.output)
    base = load(ckpts["base"])
    fts = [load(ckpts[f"ft{i}"]) for i in range(3)]
    for k, b in base.items():
        if not b.is_floating_point():
            assert torch.equal(out[k], b)  # integer counters come from the base
            continue
        taus = torch.stack([ft[k] - b for ft in fts])
        # weightspace adds the values of each coordinate in ascending order (order invariance)
        rows = torch.sort(taus, dim=0).values
        total = rows[0] + rows[1] + rows[2]
        expected = b + total * 0.3
        assert out[k].dtype == torch.float32
        assert torch.equal(out[k], expected), k
    assert report.tensors == 6
    assert report.merged == 5


def test_two_models_plain_float32_sum(ckpts: dict[str, Path], tmp_path: Path) -> None:
    models = f"  - {ckpts['ft0']}\n  - {ckpts['ft1']}"
    cfg = MergeConfig.from_yaml(config_text(ckpts, "parameters: {scale: 0.5}", models))
    out = load(run_merge(cfg, tmp_path / "o.safetensors", progress=False).output)
    b, f0, f1 = load(ckpts["base"]), load(ckpts["ft0"]), load(ckpts["ft1"])
    w = b["0.weight"]
    assert torch.equal(out["0.weight"], w + 0.5 * ((f0["0.weight"] - w) + (f1["0.weight"] - w)))


@pytest.mark.parametrize(
    ("body", "direct"),
    [
        (
            "method: ties\nparameters: {density: 0.5, scale: 0.7, majority: count}",
            lambda v: wmerge.ties(v, density=0.5, scale=0.7, majority="count"),
        ),
        (
            "method: dare\nparameters: {drop_rate: 0.4, seed: 11, scale: 0.9}",
            lambda v: wmerge.dare(v, drop_rate=0.4, seed=11, scale=0.9),
        ),
        (
            "method: dare_ties\nparameters: {drop_rate: 0.5, seed: 3}",
            lambda v: wmerge.dare_ties(v, drop_rate=0.5, seed=3),
        ),
        ("method: average", wmerge.mean),
        (
            "method: consensus\nparameters: {k: 2, lambdas: 0.5, scale: 0.8}",
            lambda v: wmerge.consensus(v, k=2, lambdas=0.5, scale=0.8),
        ),
        (
            "method: magnitude_prune\nparameters: {density: 0.25, scale: 0.5}",
            lambda v: wmerge.task_arithmetic(
                [wmerge.magnitude_prune(x, 0.25) for x in v], scale=0.5
            ),
        ),
    ],
)
def test_methods_equal_direct_calls(ckpts, tmp_path, body, direct) -> None:  # type: ignore[no-untyped-def]
    cfg = MergeConfig.from_yaml(config_text(ckpts, body))
    out = load(run_merge(cfg, tmp_path / "o.safetensors", progress=False).output)
    assert_same(out, expected_from_vector(ckpts["base"], direct(vectors(ckpts))))


def test_per_model_weights_densities_and_seeds(ckpts: dict[str, Path], tmp_path: Path) -> None:
    models = "\n".join(
        f"  - {{path: {ckpts[f'ft{i}']}, weight: {w}, density: {d}}}"
        for i, (w, d) in enumerate([(1.0, 0.3), (0.5, 0.6), (2.0, 1.0)])
    )
    cfg = MergeConfig.from_yaml(config_text(ckpts, "method: ties", models))
    out = load(run_merge(cfg, tmp_path / "t.safetensors", progress=False).output)
    v = vectors(ckpts)
    pruned = [wmerge.magnitude_prune(v[0], 0.3), wmerge.magnitude_prune(v[1], 0.6), v[2]]
    expected = wmerge.ties(pruned, density=1.0, weights=[1.0, 0.5, 2.0])
    assert_same(out, expected_from_vector(ckpts["base"], expected))

    models = "\n".join(f"  - {{path: {ckpts[f'ft{i}']}, seed: {i + 5}}}" for i in range(3))
    cfg = MergeConfig.from_yaml(
        config_text(ckpts, "method: dare\nparameters: {drop_rate: 0.5}", models)
    )
    out = load(run_merge(cfg, tmp_path / "d.safetensors", progress=False).output)
    expected = wmerge.dare(vectors(ckpts), drop_rate=0.5, seed=[5, 6, 7])
    assert_same(out, expected_from_vector(ckpts["base"], expected))


def test_python_objects_without_yaml(ckpts: dict[str, Path], tmp_path: Path) -> None:
    cfg = MergeConfig(
        base=ckpts["base"],
        models=[ModelSpec(ckpts["ft0"], weight=-1.0), ckpts["ft1"]],  # type: ignore[arg-type]
        parameters={"scale": 0.5},
    )
    out = load(run_merge(cfg, tmp_path / "o.safetensors", progress=False).output)
    v = vectors(ckpts)
    expected = wmerge.task_arithmetic(v[:2], scale=0.5, weights=[-1.0, 1.0])
    assert_same(out, expected_from_vector(ckpts["base"], expected))


# ------------------------------------------------------------------------ mergekit format


def mk_models(ckpts: dict[str, Path], params: list[str], with_base: bool = True) -> str:
    lines = [f"  - model: {ckpts['base']}"] if with_base else []
    for i, p in enumerate(params):
        lines.append(f"  - model: {ckpts[f'ft{i}']}")
        if p:
            lines.append(f"    parameters: {{{p}}}")
    return "\n".join(lines)


def run_text(text: str, out: Path) -> dict[str, torch.Tensor]:
    return load(run_merge(MergeConfig.from_yaml(text), out, progress=False).output)


@pytest.mark.parametrize(
    ("mergekit", "ours"),
    [
        (
            "merge_method: task_arithmetic\nparameters: {lambda: 0.8}\ndtype: float32\n",
            "method: task_arithmetic\nparameters: {scale: 0.8}\ndtype: float32\n",
        ),
        (
            "merge_method: ties\nparameters: {normalize: true, int8_mask: true, density: 0.5}\n",
            "method: ties\nparameters: {density: 0.5}\n",
        ),
        (
            "merge_method: dare_ties\nrandom_seed: 3\n"
            "parameters: {normalize: true, density: 0.5}\n",
            "method: dare_ties\nparameters: {drop_rate: 0.5, seed: 3}\n",
        ),
        (
            "merge_method: dare_linear\nparameters: {density: 0.5, lambda: 2.0}\n",
            "method: dare\nparameters: {drop_rate: 0.5, seed: 0, scale: 2.0}\n",
        ),
    ],
)
def test_mergekit_format_equals_ours(ckpts, tmp_path, mergekit, ours) -> None:  # type: ignore[no-untyped-def]
    mk = f"base_model: {ckpts['base']}\nmodels:\n{mk_models(ckpts, ['', '', ''])}\n{mergekit}"
    a = run_text(mk, tmp_path / "mk.safetensors")
    b = run_text(config_text(ckpts, ours), tmp_path / "ours.safetensors")
    assert_same(a, b)
    meta = open_state_dict(tmp_path / "mk.safetensors").metadata
    assert json.loads(meta["weightspace.parameters"])["config_format"] == "mergekit"


def test_mergekit_weights_and_linear(ckpts: dict[str, Path], tmp_path: Path) -> None:
    # task_arithmetic with weights: the same as our per-model weights
    mk = (
        f"merge_method: task_arithmetic\nbase_model: {ckpts['base']}\nmodels:\n"
        f"{mk_models(ckpts, ['weight: 0.5', 'weight: 0.25', 'weight: 1.0'])}\n"
    )
    ours = "\n".join(
        f"  - {{path: {ckpts[f'ft{i}']}, weight: {w}}}" for i, w in enumerate([0.5, 0.25, 1.0])
    )
    assert_same(
        run_text(mk, tmp_path / "a.safetensors"),
        run_text(config_text(ckpts, "", ours), tmp_path / "b.safetensors"),
    )
    # linear: the weighted average of the full models (the base, listed, is one of them)
    mk = (
        f"merge_method: linear\nmodels:\n"
        f"  - model: {ckpts['base']}\n    parameters: {{weight: 1.0}}\n"
        f"{mk_models(ckpts, ['weight: 2.0', 'weight: 1.0'], with_base=False)}\n"
    )
    cfg = MergeConfig.from_yaml(mk)
    assert cfg.base == ckpts["base"] and len(cfg.models) == 3
    ours = "\n".join(
        f"  - {{path: {p}, weight: {w}}}"
        for p, w in [(ckpts["base"], 1.0), (ckpts["ft0"], 2.0), (ckpts["ft1"], 1.0)]
    )
    out = run_text(mk, tmp_path / "lin.safetensors")
    assert_same(
        out,
        run_text(
            config_text(ckpts, "parameters: {scale: 0.25}", ours), tmp_path / "lin2.safetensors"
        ),
    )
    b, f0, f1 = load(ckpts["base"]), load(ckpts["ft0"]), load(ckpts["ft1"])
    average = (b["0.weight"] + 2 * f0["0.weight"] + f1["0.weight"]) / 4
    torch.testing.assert_close(out["0.weight"], average, rtol=0, atol=1e-6)


def test_mergekit_ties_semantics_difference_is_logged(
    ckpts: dict[str, Path], caplog: pytest.LogCaptureFixture
) -> None:
    mk = (
        f"merge_method: ties\nbase_model: {ckpts['base']}\nmodels:\n"
        f"{mk_models(ckpts, ['weight: 0.5, density: 0.5', 'weight: 1.0, density: 0.5'])}\n"
    )
    with caplog.at_level(logging.WARNING, logger="weightspace.merge._mergekit"):
        cfg = MergeConfig.from_yaml(mk)
    assert "will differ from mergekit" in caplog.text
    assert [m.weight for m in cfg.models] == [0.5, 1.0]
    assert cfg.parameters["density"] == 0.5


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        ("slices: []\n", "`slices` are supported with `merge_method: passthrough`"),
        ("tokenizer_source: union\n", "mergekit key `tokenizer_source` is not supported"),
        ("foo: 1\n", "unknown key(s) 'foo'"),
        ("parameters: {weight: [0.2, 0.5]}\n", "`parameters.weight` is a gradient"),
        ("parameters: {kappa: 0.1}\n", "unknown key(s) 'kappa'"),
        ("parameters: {epsilon: 0.1}\n", "`parameters.epsilon` is not a parameter of mergekit's"),
    ],
)
def test_mergekit_unsupported_keys(ckpts, extra, message) -> None:  # type: ignore[no-untyped-def]
    mk = (
        f"merge_method: ties\nbase_model: {ckpts['base']}\nmodels:\n"
        f"{mk_models(ckpts, ['', ''])}\n{extra}"
    )
    with pytest.raises(WeightspaceValueError) as info:
        MergeConfig.from_yaml(mk)
    assert message in str(info.value)


def test_mergekit_unknown_method_and_model_gradient(ckpts: dict[str, Path]) -> None:
    with pytest.raises(WeightspaceValueError, match=r"`merge_method` 'nuslerp' is not supported"):
        MergeConfig.from_yaml(f"merge_method: nuslerp\nbase_model: {ckpts['base']}\nmodels: []")
    mk = (
        f"merge_method: ties\nbase_model: {ckpts['base']}\nmodels:\n"
        f"{mk_models(ckpts, ['weight: [{filter: mlp, value: 0.2}]'])}\n"
    )
    with pytest.raises(WeightspaceValueError, match=r"`models\[1\]\.parameters\.weight`"):
        MergeConfig.from_yaml(mk)


# ------------------------------------------------------------------------ output options


def test_header_metadata_records_the_merge(ckpts: dict[str, Path], tmp_path: Path) -> None:
    cfg = MergeConfig.from_yaml(
        config_text(ckpts, "method: ties\nparameters: {density: 0.5, scale: 0.7}")
    )
    out = run_merge(cfg, tmp_path / "o.safetensors", progress=False).output
    meta = open_state_dict(out).metadata
    assert meta["weightspace.method"] == "ties"
    assert json.loads(meta["weightspace.inputs"]) == [
        str(ckpts[k]) for k in ("base", "ft0", "ft1", "ft2")
    ]
    params = json.loads(meta["weightspace.parameters"])
    assert params["density"] == 0.5 and params["scale"] == 0.7
    assert params["weights"] == [1.0, 1.0, 1.0]
    assert meta["weightspace.version"]


def test_output_dtype_rounds_once(ckpts: dict[str, Path], tmp_path: Path) -> None:
    text = config_text(ckpts, "parameters: {scale: 0.3}")
    f32 = run_text(text, tmp_path / "f32.safetensors")
    bf16 = run_text(text + "dtype: bfloat16\n", tmp_path / "bf16.safetensors")
    for k, v in f32.items():
        if v.is_floating_point():
            assert bf16[k].dtype == torch.bfloat16
            assert torch.equal(bf16[k], v.to(torch.bfloat16)), k
        else:
            assert torch.equal(bf16[k], v) and bf16[k].dtype == torch.int64


def test_float16_base_keeps_its_dtype(tmp_path: Path) -> None:
    base = {k: v.half() for k, v in tiny_base().items() if v.is_floating_point()}
    ft = {k: v + 0.125 for k, v in base.items()}
    save_state_dict(base, tmp_path / "b.safetensors")
    save_state_dict(ft, tmp_path / "f.safetensors")
    text = "base: b.safetensors\nmodels: [f.safetensors]\nparameters: {scale: 0.5}\n"
    (tmp_path / "m.yaml").write_text(text)
    # relative paths are resolved against the config file's folder
    out = load(
        run_merge(
            MergeConfig.from_yaml(tmp_path / "m.yaml"), tmp_path / "o.safetensors", progress=False
        ).output
    )
    for k, b in base.items():
        assert out[k].dtype == torch.float16
        assert torch.equal(out[k], (b.float() + 0.5 * (ft[k].float() - b.float())).half())


def test_selected_and_unselected_names(ckpts: dict[str, Path], tmp_path: Path) -> None:
    text = config_text(ckpts, "parameters: {scale: 0.3}")
    full = run_text(text, tmp_path / "full.safetensors")
    base = load(ckpts["base"])
    part = run_text(text + "select: ['0']\n", tmp_path / "part.safetensors")
    for k in base:
        expected = full[k] if k.startswith("0.") else base[k]
        assert torch.equal(part[k], expected), k
    excl = run_text(text + "exclude: '.*bias|bn\\..*'\n", tmp_path / "excl.safetensors")
    for k in base:
        merged = k in ("0.weight", "2.weight")
        assert torch.equal(excl[k], full[k] if merged else base[k]), k
    meta = json.loads(
        open_state_dict(tmp_path / "part.safetensors").metadata["weightspace.parameters"]
    )
    assert meta["select"] == ["0"]


def test_unselected_names_may_be_missing_from_models(tmp_path: Path) -> None:
    base = tiny_base()
    ft = {k: v + 1.0 for k, v in base.items() if k.startswith("0.")}
    save_state_dict(base, tmp_path / "b.safetensors")
    save_state_dict(ft, tmp_path / "f.safetensors")
    text = "base: b.safetensors\nmodels: [f.safetensors]\nselect: ['0']\n"
    (tmp_path / "m.yaml").write_text(text)
    report = run_merge(
        MergeConfig.from_yaml(tmp_path / "m.yaml"), tmp_path / "o.safetensors", progress=False
    )
    out = load(report.output)
    assert torch.equal(out["0.bias"], base["0.bias"] + 1.0)
    assert torch.equal(out["2.weight"], base["2.weight"])
    assert report.merged == 2


def test_sharded_output_with_index(ckpts: dict[str, Path], tmp_path: Path) -> None:
    text = config_text(ckpts, "parameters: {scale: 0.3}")
    single = run_text(text, tmp_path / "one.safetensors")
    report = run_merge(
        MergeConfig.from_yaml(text + "max_shard_size: 150B\n"),
        tmp_path / "sharded",
        progress=False,
    )
    folder = tmp_path / "sharded"
    assert report.output == folder
    index = json.loads((folder / "model.safetensors.index.json").read_text())
    assert sorted(index["weight_map"]) == sorted(single)
    shards = [n for n in listing(folder) if n.endswith(".safetensors")]
    assert (
        len(shards)
        == plan_merge(MergeConfig.from_yaml(text + "max_shard_size: 150B\n"), folder).shards
    )
    assert len(shards) > 1
    assert_same(load(folder), single)
    assert report.bytes_written == sum(p.stat().st_size for p in folder.iterdir())


def test_bytes_read_each_input_tensor_once(ckpts: dict[str, Path], tmp_path: Path) -> None:
    cfg = MergeConfig.from_yaml(config_text(ckpts, "parameters: {scale: 0.3}"))
    report = run_merge(cfg, tmp_path / "o.safetensors", progress=False)
    sizes = [open_state_dict(ckpts[k]) for k in ("base", "ft0", "ft1", "ft2")]
    base_total = sum(sizes[0].nbytes(n) for n in sizes[0])
    floats = [n for n in sizes[0] if sizes[0].dtype(n).is_floating_point]
    models_total = sum(sd.nbytes(n) for sd in sizes[1:] for n in floats)
    assert report.bytes_read == base_total + models_total
    assert report.bytes_written == (tmp_path / "o.safetensors").stat().st_size
    assert report.seconds > 0 and report.peak_rss_bytes > 0
    text = str(report)
    assert text.startswith("merged 6 tensors (5 with a merged delta; task_arithmetic, 3 model(s))")
    assert "GB/s" in text and "peak RSS" in text


def test_plan_reads_no_tensor_data(
    ckpts: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def refuse(self: LazyStateDict, name: str) -> torch.Tensor:
        raise AssertionError(f"read {name}")

    monkeypatch.setattr(LazyStateDict, "__getitem__", refuse)
    cfg = MergeConfig.from_yaml(config_text(ckpts, "method: ties\nparameters: {density: 0.5}"))
    plan = plan_merge(cfg, tmp_path / "o.safetensors")
    assert (plan.tensors, plan.merged, plan.copied, plan.bytes_read) == (6, 5, 1, 0)
    assert plan.parameters == sum(torch.Size(s).numel() for s in SHAPES.values()) + 1
    assert plan.shards == 1 and plan.output_dtype == "same as base"
    assert "ties of 3 model(s)" in str(plan)
    assert not (tmp_path / "o.safetensors").exists()


# ------------------------------------------------------------------------ bad input


def write_model(tmp_path: Path, name: str, sd: dict[str, torch.Tensor]) -> Path:
    return save_state_dict(sd, tmp_path / name)


def run_bad(ckpts: dict[str, Path], tmp_path: Path, bad: Path) -> pytest.ExceptionInfo[Exception]:
    models = f"  - {ckpts['ft0']}\n  - {bad}"
    cfg = MergeConfig.from_yaml(config_text(ckpts, "parameters: {scale: 0.5}", models))
    before = listing(tmp_path)
    with pytest.raises(Exception) as info:
        run_merge(cfg, tmp_path / "out.safetensors", progress=False)
    assert listing(tmp_path) == before  # nothing on disk
    return info


def test_shape_mismatch_names_tensor_and_shapes(ckpts: dict[str, Path], tmp_path: Path) -> None:
    sd = finetune(tiny_base(), 5)
    sd["2.weight"] = torch.zeros(4, 9)
    bad = write_model(tmp_path, "bad.safetensors", sd)
    info = run_bad(ckpts, tmp_path, bad)
    assert info.type is ShapeMismatchError
    msg = str(info.value)
    assert "'2.weight'" in msg and "[4, 9]" in msg and "[4, 8]" in msg
    assert "`models[1].path`" in msg and str(bad) in msg


def test_integer_where_base_is_float(ckpts: dict[str, Path], tmp_path: Path) -> None:
    sd = finetune(tiny_base(), 5)
    sd["0.bias"] = torch.arange(8)
    bad = write_model(tmp_path, "bad.safetensors", sd)
    info = run_bad(ckpts, tmp_path, bad)
    assert info.type is ShapeMismatchError
    assert "'0.bias' is torch.int64 in `models[1].path`" in str(info.value)
    assert "torch.float32 in `base`" in str(info.value)


@pytest.mark.parametrize("value", [float("nan"), float("inf")])
def test_non_finite_model_tensor_is_named_with_its_file(
    ckpts: dict[str, Path], tmp_path: Path, value: float
) -> None:
    sd = finetune(tiny_base(), 5)
    sd["2.bias"][1] = value
    bad = write_model(tmp_path, "bad.safetensors", sd)
    info = run_bad(ckpts, tmp_path, bad)
    assert info.type is WeightspaceValueError
    msg = str(info.value)
    assert "tensor '2.bias' of `models[1].path`" in msg and str(bad) in msg
    assert "nothing was written" in msg


def test_non_finite_base_tensor(ckpts: dict[str, Path], tmp_path: Path) -> None:
    base = tiny_base()
    base["bn.running_mean"][0] = float("nan")
    save_state_dict(base, tmp_path / "nanbase.safetensors")
    text = f"base: {tmp_path / 'nanbase.safetensors'}\nmodels: [{ckpts['ft0']}]\n"
    before = listing(tmp_path)
    with pytest.raises(WeightspaceValueError, match=r"tensor 'bn.running_mean' of `base`"):
        run_merge(MergeConfig.from_yaml(text), tmp_path / "o.safetensors", progress=False)
    assert listing(tmp_path) == before


def test_missing_keys(ckpts: dict[str, Path], tmp_path: Path) -> None:
    sd = finetune(tiny_base(), 5)
    del sd["2.bias"]
    sd["extra.weight"] = torch.zeros(2)
    bad = write_model(tmp_path, "bad.safetensors", sd)
    info = run_bad(ckpts, tmp_path, bad)
    assert info.type is ShapeMismatchError
    msg = str(info.value)
    assert "1 tensors of the base are missing from `models[1].path`" in msg
    assert "['2.bias']" in msg and "['extra.weight']" in msg


def test_config_names_a_file_that_does_not_exist(ckpts: dict[str, Path], tmp_path: Path) -> None:
    missing = tmp_path / "nope.safetensors"
    models = f"  - {ckpts['ft0']}\n  - {{path: {missing}, weight: 0.5}}"
    cfg = MergeConfig.from_yaml(config_text(ckpts, "", models))
    for call in (lambda: plan_merge(cfg, tmp_path / "o"), lambda: run_merge(cfg, tmp_path / "o")):
        with pytest.raises(WeightspaceValueError) as info:
            call()
        assert f"`models[1].path` names {str(missing)!r}, which does not exist" in str(info.value)
    mk = f"merge_method: ties\nbase_model: {missing}\nmodels:\n  - model: {ckpts['ft0']}\n"
    with pytest.raises(WeightspaceValueError, match=r"`base_model` names .*nope"):
        plan_merge(MergeConfig.from_yaml(mk), tmp_path / "o.safetensors")
    with pytest.raises(WeightspaceValueError, match="merge config .*does not exist"):
        MergeConfig.from_yaml(tmp_path / "missing.yaml")
    assert not (tmp_path / "o").exists()


@pytest.mark.parametrize("target", ["base", "ft0", "ft2"])
def test_output_that_is_an_input_is_refused(
    ckpts: dict[str, Path], tmp_path: Path, target: str
) -> None:
    cfg = MergeConfig.from_yaml(config_text(ckpts, ""))
    before = {p: p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()}
    for overwrite in (False, True):
        with pytest.raises(WeightspaceValueError, match="is the input"):
            run_merge(cfg, ckpts[target], overwrite=overwrite, progress=False)
    assert {p: p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()} == before


def test_existing_output_needs_overwrite(ckpts: dict[str, Path], tmp_path: Path) -> None:
    out = tmp_path / "o.safetensors"
    out.write_bytes(b"old")
    cfg = MergeConfig.from_yaml(config_text(ckpts, ""))
    with pytest.raises(WeightspaceValueError, match="already exists; pass `overwrite=True`"):
        run_merge(cfg, out, progress=False)
    assert out.read_bytes() == b"old"
    run_merge(cfg, out, overwrite=True, progress=False)
    assert len(open_state_dict(out)) == 6


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ("method: nuslerp\n", "`method` must be one of 'task_arithmetic', 'average'"),
        (
            "method: ties\nparameters: {density: 0.5, lambda: 1}\n",
            "unknown `parameters` for method 'ties': 'lambda'; valid names are 'scale', "
            "'density', 'majority'",
        ),
        ("method: ties\n", "needs `parameters.density`"),
        ("method: ties\nparameters: {density: 1.5}\n", "`density` must lie in (0, 1]"),
        ("method: dare\nparameters: {seed: 1}\n", "needs `parameters.drop_rate`"),
        ("mehtod: ties\n", "unknown key(s) 'mehtod'"),
        ("dtype: int8\n", "`dtype` must be one of 'float32', 'float16', 'bfloat16'"),
        ("max_shard_size: lots\n", "`max_shard_size`"),
        ("select: '('\n", "`select`"),
        ("method: average\nparameters: {scale: 2}\n", "valid names are (none)"),
    ],
)
def test_bad_config_values(ckpts, body, message) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(WeightspaceValueError) as info:
        MergeConfig.from_yaml(config_text(ckpts, body))
    assert message in str(info.value)


def test_bad_per_model_settings(ckpts: dict[str, Path]) -> None:
    models = f"  - {{path: {ckpts['ft0']}, weight: 2.0}}"
    with pytest.raises(WeightspaceValueError, match=r"`models\[0\]\.weight` is not used by"):
        MergeConfig.from_yaml(config_text(ckpts, "method: average", models))
    models = f"  - {{path: {ckpts['ft0']}, wieght: 2.0}}"
    with pytest.raises(WeightspaceValueError, match=r"unknown key\(s\) 'wieght' in `models\[0\]`"):
        MergeConfig.from_yaml(config_text(ckpts, "", models))
    with pytest.raises(WeightspaceValueError, match="not valid YAML"):
        MergeConfig.from_yaml("base: [unclosed\nmodels: x\n")


@pytest.mark.parametrize("shards", [None, "150B"])
def test_disk_full_midway_leaves_nothing(
    ckpts: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch, shards: str | None
) -> None:
    real = io_write._tensor_bytes
    calls = {"n": 0}

    def full(name: str, tensor: torch.Tensor) -> object:
        calls["n"] += 1
        if calls["n"] > 2:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real(name, tensor)

    monkeypatch.setattr(io_write, "_tensor_bytes", full)
    text = config_text(ckpts, "parameters: {scale: 0.3}\n")
    if shards:
        text += f"max_shard_size: {shards}\n"
    out = tmp_path / ("o" if shards else "o.safetensors")
    before = listing(tmp_path)
    with pytest.raises(OSError) as info:
        run_merge(MergeConfig.from_yaml(text), out, progress=False)
    assert info.value.errno == errno.ENOSPC
    assert calls["n"] == 3
    assert listing(tmp_path) == before  # no output, no temporary litter


# ------------------------------------------------------------------------ threads


@pytest.mark.parametrize("method", ["task_arithmetic", "ties\nparameters: {density: 0.4}"])
def test_thread_count_never_changes_the_result(
    ckpts: dict[str, Path], tmp_path: Path, method: str
) -> None:
    from weightspace.merge import _threads

    cfg = MergeConfig.from_yaml(config_text(ckpts, f"method: {method}"))
    before = torch.get_num_threads()
    one = load(run_merge(cfg, tmp_path / "one.safetensors", progress=False, threads=1).output)
    two = load(run_merge(cfg, tmp_path / "two.safetensors", progress=False, threads=2).output)
    assert torch.get_num_threads() == before  # restored
    assert_same(one, two)
    governor = _threads.ThreadGovernor("auto")
    try:
        assert governor.current == 1 and governor.limit == _threads.usable_cpus()
        governor._wall -= 1.0  # pretend a window passed: it decides from /proc/stat
        governor.tick()
        assert 1 <= governor.current <= governor.limit
        assert torch.get_num_threads() == governor.current
    finally:
        governor.close()
    assert torch.get_num_threads() == before


@pytest.mark.parametrize("bad", [0, -1, 1.5, "two", True])
def test_bad_threads(ckpts: dict[str, Path], tmp_path: Path, bad: object) -> None:
    cfg = MergeConfig.from_yaml(config_text(ckpts, "method: task_arithmetic"))
    with pytest.raises(WeightspaceValueError, match="`threads`"):
        run_merge(cfg, tmp_path / "o.safetensors", progress=False, threads=bad)  # type: ignore[arg-type]
    assert not (tmp_path / "o.safetensors").exists()
