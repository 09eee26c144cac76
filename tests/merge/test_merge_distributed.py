"""The torch.distributed executor of run_merge: two CPU ranks (gloo) against the serial merge."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch

from weightspace.io import open_state_dict, save_state_dict
from weightspace.merge import MergeConfig, run_merge
from weightspace.merge._distributed import assign_tensors, launched_world

SHAPES = {
    "embed.weight": (64, 16),
    "l0.weight": (32, 16),
    "l0.bias": (32,),
    "l1.weight": (32, 32),
    "l1.bias": (32,),
    "head.weight": (10, 32),
}
TIMEOUT = 120


def make_base() -> dict[str, torch.Tensor]:
    gen = torch.Generator().manual_seed(0)
    sd = {k: torch.randn(s, generator=gen) for k, s in SHAPES.items()}
    sd["l1.weight"] = sd["l1.weight"].bfloat16()
    sd["steps"] = torch.tensor(3)
    return sd


def make_finetune(base: dict[str, torch.Tensor], seed: int) -> dict[str, torch.Tensor]:
    gen = torch.Generator().manual_seed(100 + seed)
    return {
        k: (v.float() + 0.05 * torch.randn(v.shape, generator=gen)).to(v.dtype)
        if v.is_floating_point()
        else v
        for k, v in base.items()
    }


@pytest.fixture
def ckpts(tmp_path: Path) -> dict[str, Path]:
    """A sharded base and two sharded fine-tunes (several shards each)."""
    base = make_base()
    paths = {"base": save_state_dict(base, tmp_path / "base", max_shard_size="3kB")}
    for i in range(2):
        sd = make_finetune(base, i)
        paths[f"ft{i}"] = save_state_dict(sd, tmp_path / f"ft{i}", max_shard_size="3kB")
    assert len(open_state_dict(paths["base"]).files) >= 2
    return paths


def write_config(ckpts: dict[str, Path], tmp_path: Path, body: str) -> Path:
    text = (
        f"base: {ckpts['base']}\nmodels:\n  - path: {ckpts['ft0']}\n"
        f"  - path: {ckpts['ft1']}\n{body}\n"
    )
    config = tmp_path / "merge.yaml"
    config.write_text(text, encoding="utf-8")
    return config


def merge_args(config: Path, out: Path) -> list[str]:
    """Arguments of ``torchrun ... -m weightspace merge CONFIG -o OUT``."""
    return ["-m", "weightspace", "merge", str(config), "-o", str(out), "--no-progress"]


def load(path: Path) -> dict[str, torch.Tensor]:
    sd = open_state_dict(path)
    return {k: sd[k] for k in sd}


def leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.startswith(".out"))


@pytest.mark.parametrize(
    "body",
    [
        "method: task_arithmetic\nparameters: {scale: 0.7}",
        "method: ties\nparameters: {density: 0.4}\nmax_shard_size: 2kB",
    ],
    ids=["task_arithmetic", "ties"],
)
def test_two_ranks_equal_serial(
    ckpts: dict[str, Path], tmp_path: Path, body: str, torchrun: Callable[..., Any]
) -> None:
    config = write_config(ckpts, tmp_path, body)
    cfg = MergeConfig.from_yaml(config)
    target = tmp_path / ("serial" if cfg.max_shard_size else "serial.safetensors")
    serial = load(run_merge(cfg, target, progress=False).output)
    out = tmp_path / "out"
    done = torchrun(merge_args(config, out), TIMEOUT)
    assert done.returncode == 0, done.stderr
    index = json.loads((out / "model.safetensors.index.json").read_text(encoding="utf-8"))
    weight_map = index["weight_map"]
    assert sorted(weight_map) == sorted(serial)
    files = sorted(p.name for p in out.glob("*.safetensors"))
    assert sorted(set(weight_map.values())) == files
    assert len(files) >= 2
    assert index["metadata"]["total_size"] == sum(t.nbytes for t in serial.values())
    for file in files:  # each shard holds what the index says
        held = set(open_state_dict(out / file))
        assert held == {n for n, f in weight_map.items() if f == file}
    merged = load(out)
    assert sorted(merged) == sorted(serial)
    for name, tensor in serial.items():
        assert merged[name].dtype == tensor.dtype, name
        assert torch.equal(merged[name], tensor), name
    assert leftovers(tmp_path) == []
    assert "merged" in done.stdout


def test_failure_on_one_rank_leaves_nothing(
    ckpts: dict[str, Path], tmp_path: Path, torchrun: Callable[..., Any]
) -> None:
    # A real failure that only rank 1 sees: a NaN in a fine-tune tensor that only rank 1 reads.
    base = open_state_dict(ckpts["base"])
    models = [open_state_dict(ckpts[f"ft{i}"]) for i in range(2)]
    names = list(base)
    selected = [n for n in names if base.dtype(n).is_floating_point]
    parts = assign_tensors(base, models, names, selected, 2)
    victim = next(n for n in parts[1] if n in selected)
    ft1 = load(ckpts["ft1"])
    ft1[victim] = ft1[victim].clone()
    ft1[victim].view(-1)[0] = float("nan")
    save_state_dict(ft1, ckpts["ft1"], max_shard_size="3kB", overwrite=True)
    config = write_config(ckpts, tmp_path, "method: task_arithmetic")
    out = tmp_path / "out"
    done = torchrun(merge_args(config, out), TIMEOUT)
    assert done.returncode != 0
    assert victim in done.stderr
    assert "rank 1" in done.stderr  # rank 0 learnt of rank 1's failure
    assert not out.exists()
    assert leftovers(tmp_path) == []


def test_assignment_by_source_shard_and_balanced(ckpts: dict[str, Path]) -> None:
    base = open_state_dict(ckpts["base"])
    models = [open_state_dict(ckpts[f"ft{i}"]) for i in range(2)]
    names = list(base)
    selected = [n for n in names if base.dtype(n).is_floating_point]
    parts = assign_tensors(base, models, names, selected, 2)
    assert parts == assign_tensors(base, models, names, selected, 2)  # deterministic
    assert sorted(n for p in parts for n in p) == sorted(names)
    assert all(p == [n for n in names if n in p] for p in parts)  # output order kept
    for file in base.files:  # a source shard is read by one rank only
        owners = {r for r, p in enumerate(parts) for n in p if base.source_file(n) == file}
        assert len(owners) == 1
    assert all(parts)
    # fewer source files than ranks: tensors are dealt out one by one, balanced by bytes
    many = assign_tensors(base, models, names, selected, len(base.files) + 1)
    assert all(many)
    assert sorted(n for p in many for n in p) == sorted(names)
    # more ranks than tensors: some ranks get nothing
    assert sum(1 for p in assign_tensors(base, models, names, selected, 20) if p) == len(names)


def test_launched_world(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    monkeypatch.delenv("RANK", raising=False)
    assert launched_world() is None
    monkeypatch.setenv("WORLD_SIZE", "1")
    monkeypatch.setenv("RANK", "0")
    assert launched_world() is None  # a world of one runs the serial merge
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "1")
    assert launched_world() == (1, 2)


SEARCH_CHILD = """
import json, sys, torch, torch.distributed as dist
from weightspace import TaskVector, merge

dist.init_process_group("gloo")
g = torch.Generator().manual_seed(0)
base = {"a.weight": torch.randn(4, 3, generator=g), "b.weight": torch.randn(2, 4, generator=g)}
goal = {k: v + torch.randn(v.shape, generator=g) for k, v in base.items()}
vectors = [TaskVector({k: torch.randn(v.shape, generator=g) for k, v in base.items()})
           for _ in range(3)]
calls = []

def evaluate(sd):
    calls.append(1)
    return -sum(float((sd[k] - goal[k]).square().sum()) for k in goal)

r = merge.search_scales(vectors, base, evaluate, per_layer=True, rounds=2)
counts = [None, None]
dist.all_gather_object(counts, len(calls))
if dist.get_rank() == 0:
    json.dump({"scale": r.scale, "score": r.score,
               "layers": dict(r.layer_scales), "scores": r.scores,
               "layer_scores": r.layer_scores, "calls": counts}, open(sys.argv[1], "w"))
dist.destroy_process_group()
"""


def test_scale_search_split_across_ranks_equals_serial(
    tmp_path: Path, torchrun: Callable[..., Any]
) -> None:
    script = tmp_path / "search.py"
    script.write_text(SEARCH_CHILD, encoding="utf-8")
    done = torchrun([str(script), str(tmp_path / "out.json")], TIMEOUT)
    assert done.returncode == 0, done.stderr[-3000:]
    ddp = json.loads((tmp_path / "out.json").read_text(encoding="utf-8"))

    namespace: dict[str, Any] = {}
    serial_code = SEARCH_CHILD.replace('dist.init_process_group("gloo")', "")
    serial_code = serial_code[: serial_code.index("counts = [None, None]")]
    exec(serial_code, namespace)  # the same script, without the process group
    r = namespace["r"]
    assert ddp["scale"] == r.scale and ddp["score"] == r.score
    assert ddp["layers"] == dict(r.layer_scales)
    assert [tuple(s) for s in ddp["scores"]] == list(r.scores)
    assert [tuple(s) for s in ddp["layer_scores"]] == list(r.layer_scores)
    serial_calls = len(namespace["calls"])
    assert sum(ddp["calls"]) == serial_calls
    assert max(ddp["calls"]) <= serial_calls // 2 + 2
