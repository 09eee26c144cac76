"""`weightspace merge CONFIG -o DIR`: the Hugging Face model folder that mergekit-yaml writes.

A tiny Llama (transformers' own classes, bf16, with a word-level tokenizer and a generation
config) and two fine-tunes; the merged folder must load with ``AutoModelForCausalLM`` and hold
the inputs' arithmetic, the base's config (output dtype set) and its tokenizer files.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch

from weightspace._cli import main
from weightspace.io import open_state_dict
from weightspace.merge import MergeConfig, plan_merge

transformers = pytest.importorskip("transformers")
tokenizers = pytest.importorskip("tokenizers")

WORDS = ["[UNK]", "[PAD]", "the", "cat", "sat", "on", "a", "mat"]
WEIGHTS = (0.5, 0.3)
TOKENIZER = ("tokenizer.json", "tokenizer_config.json")


def _tiny_llama(seed: int) -> Any:
    config = transformers.LlamaConfig(
        vocab_size=64,
        hidden_size=16,
        intermediate_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        num_key_value_heads=1,
        max_position_embeddings=32,
        tie_word_embeddings=False,
    )
    torch.manual_seed(seed)
    return transformers.LlamaForCausalLM(config).to(torch.bfloat16)


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``base/`` (with tokenizer and generation config), ``ft0/``, ``ft1/`` in one folder."""
    root = tmp_path_factory.mktemp("hf")
    base = _tiny_llama(0)
    base.save_pretrained(root / "base")
    vocab = {w: i for i, w in enumerate(WORDS)}
    tok = tokenizers.Tokenizer(tokenizers.models.WordLevel(vocab, unk_token="[UNK]"))
    tok.pre_tokenizer = tokenizers.pre_tokenizers.Whitespace()
    fast = transformers.PreTrainedTokenizerFast(
        tokenizer_object=tok, unk_token="[UNK]", pad_token="[PAD]"
    )
    fast.save_pretrained(root / "base")
    transformers.GenerationConfig(max_new_tokens=7, do_sample=False).save_pretrained(root / "base")
    gen = torch.Generator().manual_seed(1)
    for i in range(2):
        ft = _tiny_llama(0)
        with torch.no_grad():
            for p in ft.parameters():
                p.add_((0.01 * torch.randn(p.shape, generator=gen)).to(p.dtype))
        ft.save_pretrained(root / f"ft{i}")
    return root


def write_config(root: Path, name: str = "merge.yml") -> Path:
    config = root / name
    config.write_text(
        "merge_method: task_arithmetic\nbase_model: base\nmodels:\n"
        + "".join(
            f"  - model: ft{i}\n    parameters: {{weight: {w}}}\n" for i, w in enumerate(WEIGHTS)
        )
        + "dtype: bfloat16\n",
        encoding="utf-8",
    )
    return config


def reference(root: Path) -> dict[str, torch.Tensor]:
    """base + sum_i w_i (ft_i - base) in float64."""
    sds = [open_state_dict(root / n) for n in ("base", "ft0", "ft1")]
    out = {}
    for name in sds[0]:
        b = sds[0][name].double()
        out[name] = b + sum(
            w * (sd[name].double() - b) for w, sd in zip(WEIGHTS, sds[1:], strict=True)
        )
    return out


def bf16_steps(value: torch.Tensor, ref: torch.Tensor) -> torch.Tensor:
    """``|value - ref|`` in units of the bf16 spacing at ``ref``."""
    exp = torch.floor(torch.log2(ref.abs().clamp_min(1e-30)))
    return (value.double() - ref).abs() / torch.exp2(exp - 7)


def test_folder_loads_with_transformers_and_holds_the_arithmetic(
    models: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = write_config(models)
    out = tmp_path / "merged"
    args = ["merge", str(config), "-o", str(out), "--no-progress", "--max-shard-size", "4kB"]
    assert main([*args, "--lazy-unpickle", "--no-cuda"]) == 0
    assert capsys.readouterr().out.startswith("merged ")
    names = sorted(p.name for p in out.iterdir())
    shards = [n for n in names if n.endswith(".safetensors")]
    assert len(shards) >= 2 and "model.safetensors.index.json" in names
    assert all(n.startswith("model-") and n.endswith(f"-of-{len(shards):05d}.safetensors")
               for n in shards)  # fmt: skip
    index = json.loads((out / "model.safetensors.index.json").read_text(encoding="utf-8"))
    assert sorted(set(index["weight_map"].values())) == shards
    assert "generation_config.json" in names and set(TOKENIZER) <= set(names)
    assert not any(n.startswith(".") for n in names)
    for name in ("generation_config.json", *TOKENIZER):
        assert (out / name).read_bytes() == (models / "base" / name).read_bytes(), name
    base_cfg = json.loads((models / "base" / "config.json").read_text(encoding="utf-8"))
    out_cfg = json.loads((out / "config.json").read_text(encoding="utf-8"))
    assert out_cfg["torch_dtype"] == "bfloat16"
    assert {k: v for k, v in out_cfg.items() if k not in ("torch_dtype", "dtype")} == {
        k: v for k, v in base_cfg.items() if k not in ("torch_dtype", "dtype")
    }

    model = transformers.AutoModelForCausalLM.from_pretrained(out)
    assert isinstance(model, transformers.LlamaForCausalLM)
    ref = reference(models)
    state = model.state_dict()
    assert sorted(state) == sorted(ref)
    exact = total = 0
    for name, value in state.items():
        assert value.dtype == torch.bfloat16, name
        steps = bf16_steps(value, ref[name])
        assert float(steps.max()) <= 1.0, name  # within one bf16 step of float64
        exact += int((value == ref[name].to(torch.bfloat16)).sum())
        total += value.numel()
    assert exact / total > 0.99  # and almost always the correctly rounded value
    tok = transformers.AutoTokenizer.from_pretrained(out)
    assert tok("the cat sat")["input_ids"] == [2, 3, 4]
    assert transformers.GenerationConfig.from_pretrained(out).max_new_tokens == 7


def test_no_copy_tokenizer_and_default_single_shard(models: Path, tmp_path: Path) -> None:
    config = write_config(models)
    out = tmp_path / "merged"
    assert main(["merge", str(config), "-o", str(out), "--no-progress", "--no-copy-tokenizer"]) == 0
    # 5 GB shards: the tiny model is one `model.safetensors`, without an index (as mergekit)
    names = sorted(p.name for p in out.iterdir())
    assert names == ["config.json", "generation_config.json", "model.safetensors"]
    plan = plan_merge(MergeConfig.from_yaml(config), tmp_path / "other")
    assert plan.shards == 1
    assert plan_merge(MergeConfig.from_yaml(config), out, max_shard_size="4kB").shards >= 2


def test_out_shard_size_is_mergekits_spelling(models: Path, tmp_path: Path) -> None:
    config = write_config(models)
    a, b = tmp_path / "a", tmp_path / "b"
    assert (
        main(["merge", str(config), "-o", str(a), "--no-progress", "--max-shard-size", "4kB"]) == 0
    )
    assert (
        main(["merge", str(config), "-o", str(b), "--no-progress", "--out-shard-size", "4K"]) == 0
    )
    assert sorted(p.name for p in a.iterdir()) == sorted(p.name for p in b.iterdir())
    for p in a.iterdir():
        if p.suffix == ".json":
            assert p.read_bytes() == (b / p.name).read_bytes()


def test_allow_crimes_and_bad_sizes_are_refused(
    models: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = write_config(models)
    out = tmp_path / "merged"
    assert main(["merge", str(config), "-o", str(out), "--allow-crimes"]) == 2
    err = capsys.readouterr().err
    assert "--allow-crimes is refused" in err and "`select:`" in err
    assert not out.exists()
    with pytest.raises(SystemExit):
        main(["merge", str(config), "-o", str(out), "--out-shard-size", "lots"])
    assert "expected a size such as 5B" in capsys.readouterr().err
    from weightspace.merge import run_merge

    with pytest.raises(Exception, match=r"`max_shard_size`: .*'lots'"):
        run_merge(MergeConfig.from_yaml(config), out, max_shard_size="lots", progress=False)
    assert not out.exists()


def test_config_dtype_kept_without_an_output_dtype(models: Path, tmp_path: Path) -> None:
    config = tmp_path / "keep.yml"
    config.write_text(
        f"base: {models / 'base'}\nmodels: [{models / 'ft0'}]\nmethod: task_arithmetic\n",
        encoding="utf-8",
    )
    out = tmp_path / "merged"
    assert main(["merge", str(config), "-o", str(out), "--no-progress"]) == 0
    # no output dtype: config.json is the base's, byte for byte
    assert (out / "config.json").read_bytes() == (models / "base" / "config.json").read_bytes()
    merged = open_state_dict(out)
    ft0 = open_state_dict(models / "ft0")
    assert all(torch.equal(merged[n], ft0[n]) for n in ft0)  # base + (ft0 - base) == ft0


def test_torchrun_folder_equals_serial(
    models: Path, tmp_path: Path, torchrun: Callable[..., Any]
) -> None:
    config = write_config(models, "dist.yml")
    serial = tmp_path / "serial"
    assert main(["merge", str(config), "-o", str(serial), "--no-progress"]) == 0
    out = tmp_path / "dist"
    done = torchrun(
        ["-m", "weightspace", "merge", str(config), "-o", str(out), "--no-progress"], 180
    )
    assert done.returncode == 0, done.stderr[-3000:]
    extra = sorted(p.name for p in serial.iterdir() if p.suffix != ".safetensors")
    assert extra == ["config.json", "generation_config.json", *sorted(TOKENIZER)]
    for name in extra:
        assert (out / name).read_bytes() == (serial / name).read_bytes(), name
    a, b = open_state_dict(serial), open_state_dict(out)
    assert sorted(a) == sorted(b)
    for name in a:
        assert torch.equal(a[name], b[name]) and a[name].dtype == b[name].dtype, name
    assert transformers.AutoModelForCausalLM.from_pretrained(out) is not None
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]


def test_stacked_layers_load_with_transformers(models: Path, tmp_path: Path) -> None:
    config = tmp_path / "stack.yml"
    config.write_text(
        "merge_method: passthrough\nbase_model: base\nslices:\n"
        "  - sources: [{model: ft0, layer_range: [0, 2]}]\n"
        "  - sources: [{model: ft1, layer_range: [1, 2]}]\n",
        encoding="utf-8",
    )
    (tmp_path / "base").symlink_to(models / "base")
    (tmp_path / "ft0").symlink_to(models / "ft0")
    (tmp_path / "ft1").symlink_to(models / "ft1")
    out = tmp_path / "stacked"
    assert main(["merge", str(config), "-o", str(out), "--no-progress"]) == 0
    model = transformers.AutoModelForCausalLM.from_pretrained(out)
    assert model.config.num_hidden_layers == 3
    ft1 = open_state_dict(models / "ft1")
    state = model.state_dict()
    assert torch.equal(state["model.layers.2.mlp.up_proj.weight"],
                       ft1["model.layers.1.mlp.up_proj.weight"])  # fmt: skip
    assert torch.equal(state["lm_head.weight"], ft1["lm_head.weight"])
