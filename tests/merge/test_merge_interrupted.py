"""A merge killed with SIGKILL (serial, or one torchrun rank): the next merge cleans up."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch

from weightspace._cli import main
from weightspace.io import open_state_dict, save_state_dict

#: ``python KILLABLE READY VICTIM_RANK merge ...``: runs ``weightspace merge ...`` and, in the
#: process of rank VICTIM_RANK (0 when not under torchrun), stops for good after the first
#: tensor was written, having written its pid to READY.
KILLABLE = """
import os, sys, time
from pathlib import Path
from weightspace.io import _write

ready, victim, args = Path(sys.argv[1]), int(sys.argv[2]), sys.argv[3:]
real = _write._tensor_bytes
calls = []

def slow(name, tensor):
    calls.append(name)
    if int(os.environ.get("RANK", "0")) == victim and len(calls) == 2:
        ready.write_text(str(os.getpid()))
        time.sleep(600)
    return real(name, tensor)

_write._tensor_bytes = slow
from weightspace._cli import main
sys.exit(main(args))
"""


@pytest.fixture
def config(tmp_path: Path) -> Path:
    gen = torch.Generator().manual_seed(0)
    base = {f"l{i}.weight": torch.randn(64, 64, generator=gen) for i in range(6)}
    save_state_dict(base, tmp_path / "base", max_shard_size="40kB")
    for t in range(2):
        ft = {k: v + 0.01 * torch.randn(v.shape, generator=gen) for k, v in base.items()}
        save_state_dict(ft, tmp_path / f"ft{t}", max_shard_size="40kB")
    path = tmp_path / "merge.yaml"
    path.write_text(
        "base: base\nmodels: [ft0, ft1]\nmethod: ties\nparameters: {density: 0.5}\n",
        encoding="utf-8",
    )
    return path


def wait_and_kill(proc: subprocess.Popen[Any], ready: Path) -> int:
    """Wait until the victim process wrote its pid to ``ready``; SIGKILL it; its pid."""
    deadline = time.monotonic() + 150
    while not ready.exists() or not ready.read_text():
        assert proc.poll() is None, "the merge ended before it was killed"
        assert time.monotonic() < deadline, "the merge never reached its second tensor"
        time.sleep(0.05)
    pid = int(ready.read_text())
    os.kill(pid, signal.SIGKILL)
    return pid


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def stale(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.startswith(".out"))


def test_killed_serial_merge_is_cleaned_by_the_next(
    config: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    script = tmp_path / "killable.py"
    script.write_text(KILLABLE, encoding="utf-8")
    ready = tmp_path / "ready"
    out = tmp_path / "out"
    cmd = [sys.executable, str(script), str(ready), "0", "merge", str(config), "-o", str(out)]
    proc = subprocess.Popen([*cmd, "--no-progress"])
    wait_and_kill(proc, ready)
    proc.wait()
    left = stale(tmp_path)
    assert len(left) == 2 and left[0].endswith(".tmp") and left[1] == left[0] + ".owner"
    assert any((tmp_path / left[0]).iterdir())  # partial shards
    assert not out.exists()
    assert main(["merge", str(config), "-o", str(out), "--no-progress"]) == 0
    assert stale(tmp_path) == []
    assert f"removed the stale temporary {tmp_path / left[0]}" in caplog.text
    ref = tmp_path / "ref.safetensors"
    assert main(["merge", str(config), "-o", str(ref), "--no-progress"]) == 0
    a, b = open_state_dict(out), open_state_dict(ref)
    assert all(torch.equal(a[n], b[n]) for n in b)


def test_killed_torchrun_rank_is_cleaned_by_the_next_run(
    config: Path, tmp_path: Path, torchrun: Callable[..., Any]
) -> None:
    script = tmp_path / "killable.py"
    script.write_text(KILLABLE, encoding="utf-8")
    ready = tmp_path / "ready"
    out = tmp_path / "out"
    args = [str(script), str(ready), "0", "merge", str(config), "-o", str(out), "--no-progress"]
    # rank 0 (the one that made the temporary folder) is killed; torchrun then ends rank 1
    cmd = [
        sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2",
        "--master-addr", "127.0.0.1", "--master-port", str(free_port()), *args,
    ]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    for key in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        env.pop(key, None)
    proc = subprocess.Popen(
        cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True
    )
    try:
        wait_and_kill(proc, ready)
        proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:  # pragma: no cover - torchrun did not notice
            os.killpg(proc.pid, signal.SIGKILL)
            proc.communicate()
    assert proc.returncode != 0
    left = stale(tmp_path)
    assert len(left) == 2 and left[1] == left[0] + ".owner"
    assert not out.exists()
    done = torchrun(["-m", "weightspace", "merge", str(config), "-o", str(out), "--no-progress"])
    assert done.returncode == 0, done.stderr[-3000:]
    assert f"removed the stale temporary {tmp_path / left[0]}" in done.stderr
    assert stale(tmp_path) == []
    ref = tmp_path / "ref.safetensors"
    assert main(["merge", str(config), "-o", str(ref), "--no-progress"]) == 0
    a, b = open_state_dict(out), open_state_dict(ref)
    assert sorted(a) == sorted(b) and all(torch.equal(a[n], b[n]) for n in b)
