"""The whole-tensor methods against mergekit itself, tensor for tensor, on the same YAML.

mergekit lives in the benchmark environment (``.bench-venv``, see benchmarks/README.md), never
in the project's; these tests skip unless ``.bench-venv/bin/mergekit-yaml`` (or the program
named by ``WEIGHTSPACE_MERGEKIT_YAML``) exists. Both tools compute in float32 here
(``dtype: float32``), so the deterministic methods agree to float32 rounding; DELLA draws
random masks (mergekit from torch's global generator, weightspace from its seeded ones), so
its check is of the law: the kept fraction and the L1 norm that the rescaling keeps.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest
import torch

from weightspace.io import open_state_dict
from weightspace.merge import MergeConfig, run_merge

ROOT = Path(__file__).resolve().parents[2]
MERGEKIT = Path(os.environ.get("WEIGHTSPACE_MERGEKIT_YAML", ROOT / ".bench-venv/bin/mergekit-yaml"))

pytestmark = pytest.mark.skipif(
    not MERGEKIT.is_file(), reason=f"mergekit is not installed ({MERGEKIT} is missing)"
)

LAYERS = 5


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny float32 Llama (5 layers) and three fine-tunes, as transformers folders."""
    transformers = pytest.importorskip("transformers")
    root = tmp_path_factory.mktemp("mk")
    config = transformers.LlamaConfig(
        vocab_size=96,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=LAYERS,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=64,
        tie_word_embeddings=False,
    )
    torch.manual_seed(0)
    base = transformers.LlamaForCausalLM(config)
    base.save_pretrained(root / "base")
    gen = torch.Generator().manual_seed(1)
    for i in range(3):
        with torch.no_grad():
            ft = transformers.LlamaForCausalLM(config)
            ft.load_state_dict(base.state_dict())
            for p in ft.parameters():
                p.add_(0.02 * torch.randn(p.shape, generator=gen))
        ft.save_pretrained(root / f"ft{i}")
    return root


def both(models: Path, tmp_path: Path, name: str, body: str) -> tuple[dict, dict]:  # type: ignore[type-arg]
    """Run mergekit and weightspace on the same YAML; their output tensors."""
    config = tmp_path / f"{name}.yml"
    config.write_text(body, encoding="utf-8")
    theirs = tmp_path / f"{name}-mergekit"
    done = subprocess.run(
        [str(MERGEKIT), str(config), str(theirs), "--no-cuda", "--no-copy-tokenizer",
         "--no-write-model-card", "--quiet", "--random-seed", "0"],
        cwd=models, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    cfg = MergeConfig.from_yaml(config)
    ours = run_merge(cfg, tmp_path / f"{name}-ours", progress=False).output
    a, b = open_state_dict(ours), open_state_dict(theirs)
    assert sorted(a) == sorted(b)
    return {k: a[k] for k in a}, {k: b[k] for k in b}


def yaml(method: str, models: list[str], params: str, base: str = "base") -> str:
    lines = "".join(f"  - model: MODELS/{m}\n" for m in models)
    return (
        f"merge_method: {method}\nbase_model: MODELS/{base}\nmodels:\n{lines}"
        f"parameters:\n{params}dtype: float32\n"
    )


def fix_paths(text: str, models: Path) -> str:
    return text.replace("MODELS/", f"{models}/")


def run_both(models: Path, tmp_path: Path, name: str, body: str) -> tuple[dict, dict]:  # type: ignore[type-arg]
    return both(models, tmp_path, name, fix_paths(body, models))


def assert_close(ours: dict, theirs: dict) -> None:  # type: ignore[type-arg]
    for name, value in theirs.items():
        assert ours[name].dtype == value.dtype == torch.float32, name
        scale = float(value.abs().max()) or 1.0
        diff = float((ours[name] - value).abs().max())
        assert diff <= 4e-6 * scale, f"{name}: max |ours - mergekit| = {diff} (scale {scale})"


def test_slerp_with_gradients_and_filters(models: Path, tmp_path: Path) -> None:
    params = (
        "  t:\n    - filter: self_attn\n      value: [0, 0.5, 0.3, 0.7, 1]\n"
        "    - filter: mlp\n      value: [1, 0.5, 0.7, 0.3, 0]\n    - value: 0.5\n"
    )
    ours, theirs = run_both(models, tmp_path, "slerp", yaml("slerp", ["base", "ft0"], params))
    assert_close(ours, theirs)


def test_model_stock(models: Path, tmp_path: Path) -> None:
    body = yaml("model_stock", ["base", "ft0", "ft1", "ft2"], "  filter_wise: false\n")
    ours, theirs = run_both(models, tmp_path, "model_stock", body)
    assert_close(ours, theirs)


@pytest.mark.parametrize(
    ("method", "params"),
    [
        ("breadcrumbs", "  density: 0.6\n  gamma: 0.05\n  weight: 0.7\n"),
        ("breadcrumbs_ties", "  density: 0.5\n  gamma: 0.02\n  normalize: true\n  weight: 1.0\n"),
    ],
)
def test_breadcrumbs(models: Path, tmp_path: Path, method: str, params: str) -> None:
    body = yaml(method, ["ft0", "ft1", "ft2"], params)
    ours, theirs = run_both(models, tmp_path, method, body)
    assert_close(ours, theirs)


@pytest.mark.parametrize("method", ["della", "della_linear"])
def test_della_follows_the_same_law(models: Path, tmp_path: Path, method: str) -> None:
    body = yaml(method, ["ft0"], "  density: 0.4\n  epsilon: 0.1\n  weight: 1.0\n")
    ours, theirs = run_both(models, tmp_path, method, body)
    base = open_state_dict(models / "base")
    ft = open_state_dict(models / "ft0")
    kept = {"ours": 0, "mergekit": 0}
    total = 0
    for name in base:
        delta = ft[name] - base[name]
        for who, out in (("ours", ours), ("mergekit", theirs)):
            got = out[name] - base[name]
            kept[who] += int((got != 0).sum())
            # the L1 rescaling keeps each tensor's L1 norm
            assert float(got.abs().sum()) == pytest.approx(float(delta.abs().sum()), rel=1e-4)
        total += delta.numel()
    assert abs(kept["ours"] / total - 0.4) < 0.01
    assert abs(kept["mergekit"] / total - 0.4) < 0.01


def test_passthrough_slices(models: Path, tmp_path: Path) -> None:
    body = fix_paths(
        "merge_method: passthrough\nslices:\n"
        "  - sources:\n      - model: MODELS/ft0\n        layer_range: [0, 3]\n"
        "  - sources:\n      - model: MODELS/ft1\n        layer_range: [1, 5]\n"
        "dtype: float32\n",
        models,
    )
    ours, theirs = both(models, tmp_path, "passthrough", body)
    assert len([n for n in ours if n.endswith("mlp.up_proj.weight")]) == 7
    for name, value in theirs.items():
        assert torch.equal(ours[name], value), name
    config = (tmp_path / "passthrough-ours" / "config.json").read_text(encoding="utf-8")
    assert '"num_hidden_layers": 7' in config
