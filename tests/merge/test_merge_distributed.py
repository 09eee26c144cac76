"""The torch.distributed executor of run_merge: two CPU ranks (gloo) against the serial merge."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

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


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def torchrun(config: Path, out: Path) -> subprocess.CompletedProcess[str]:
    """``torchrun --nproc-per-node 2 -m weightspace merge CONFIG -o OUT`` with a timeout."""
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--nproc-per-node",
        "2",
        "--master-addr",
        "127.0.0.1",
        "--master-port",
        str(free_port()),
        "-m",
        "weightspace",
        "merge",
        str(config),
        "-o",
        str(out),
        "--no-progress",
    ]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    for key in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        env.pop(key, None)
    proc = subprocess.Popen(
        cmd,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
        start_new_session=True,
    )
    try:
        stdout, stderr = proc.communicate(timeout=TIMEOUT)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate()
        pytest.fail(f"torchrun did not finish in {TIMEOUT} s")
    return subprocess.CompletedProcess(cmd, proc.returncode, stdout, stderr)


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
def test_two_ranks_equal_serial(ckpts: dict[str, Path], tmp_path: Path, body: str) -> None:
    config = write_config(ckpts, tmp_path, body)
    cfg = MergeConfig.from_yaml(config)
    target = tmp_path / ("serial" if cfg.max_shard_size else "serial.safetensors")
    serial = load(run_merge(cfg, target, progress=False).output)
    out = tmp_path / "out"
    done = torchrun(config, out)
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


def test_failure_on_one_rank_leaves_nothing(ckpts: dict[str, Path], tmp_path: Path) -> None:
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
    done = torchrun(config, out)
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
