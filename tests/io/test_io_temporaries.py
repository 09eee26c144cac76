"""The writer's temporaries: owner records, and the removal of stale ones by the next write."""

from __future__ import annotations

import json
import logging
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from weightspace.io import open_state_dict, save_state_dict
from weightspace.io._temporaries import Temporary, remove_stale_temporaries

#: Writes a two-tensor checkpoint to argv[2] and stops for good in the middle of it (after the
#: first tensor), having written its pid to argv[1]; the test kills it with SIGKILL.
HANG = """
import os, sys, time
from pathlib import Path
import torch
from weightspace.io import _write, save_state_dict

real = _write._tensor_bytes
calls = []

def slow(name, tensor):
    calls.append(name)
    if len(calls) == 2:
        Path(sys.argv[1]).write_text(str(os.getpid()))
        time.sleep(600)
    return real(name, tensor)

_write._tensor_bytes = slow
tensors = {"a": torch.ones(1000), "b": torch.zeros(1000)}
save_state_dict(tensors, sys.argv[2], max_shard_size=sys.argv[3] if len(sys.argv) > 3 else None)
"""


def run_and_kill(tmp_path: Path, out: Path, *extra: str) -> None:
    """Start the hanging writer, wait until it is mid-write, kill it with SIGKILL."""
    script = tmp_path / "hang.py"
    script.write_text(HANG, encoding="utf-8")
    ready = tmp_path / "ready"
    proc = subprocess.Popen([sys.executable, str(script), str(ready), str(out), *extra])
    try:
        deadline = time.monotonic() + 120
        while not ready.exists():
            assert proc.poll() is None, "the writer ended before it was killed"
            assert time.monotonic() < deadline, "the writer never got to its second tensor"
            time.sleep(0.05)
        time.sleep(0.1)
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
    ready.unlink()


def hidden(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.startswith("."))


@pytest.mark.parametrize("sharded", [False, True], ids=["file", "folder"])
def test_killed_writer_leaves_a_temporary_the_next_write_removes(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, sharded: bool
) -> None:
    out = tmp_path / ("out" if sharded else "out.safetensors")
    run_and_kill(tmp_path, out, *(["3kB"] if sharded else []))
    left = hidden(tmp_path)
    assert len(left) == 2 and left[1] == left[0] + ".owner"  # the temporary and its record
    temp = tmp_path / left[0]
    assert temp.name.startswith(f".{out.name}.") and temp.name.endswith(".tmp")
    record = json.loads((tmp_path / left[1]).read_text(encoding="utf-8"))
    assert record["host"] == socket.gethostname() and isinstance(record["pid"], int)
    assert temp.is_dir() == sharded
    assert not out.exists()
    with caplog.at_level(logging.WARNING, logger="weightspace.io._temporaries"):
        save_state_dict({"x": torch.arange(4.0)}, out, max_shard_size="3kB" if sharded else None)
    assert hidden(tmp_path) == []
    assert torch.equal(open_state_dict(out)["x"], torch.arange(4.0))
    (message,) = [r.getMessage() for r in caplog.records]
    assert f"removed the stale temporary {temp}" in message
    assert f"pid {record['pid']} on this host is gone" in message


def test_a_live_owner_keeps_its_temporary(tmp_path: Path) -> None:
    final = tmp_path / "m.safetensors"
    temp = Temporary.create(final, folder=True)
    (temp.path / "part").write_bytes(b"x" * 10)
    other = Temporary.join(temp.path)  # a second writer (a torchrun rank)
    assert remove_stale_temporaries(final) == []
    temp.release(remove_record=False)  # the creator is gone, the other writer is not
    assert remove_stale_temporaries(final) == []
    assert temp.path.is_dir()
    other.release(remove_record=False)
    assert remove_stale_temporaries(final) == [temp.path]
    assert hidden(tmp_path) == []


def test_other_hosts_and_records_without_owner_are_left_alone(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    final = tmp_path / "m.safetensors"
    foreign = tmp_path / ".m.safetensors.abc.tmp"
    foreign.write_bytes(b"partial")
    record = {"pid": 1, "host": "another-machine", "created": 0.0}
    (tmp_path / (foreign.name + ".owner")).write_text(json.dumps(record), encoding="utf-8")
    legacy = tmp_path / ".m.safetensors.old1.tmp"
    legacy.write_bytes(b"partial")
    unrelated = tmp_path / ".n.safetensors.x.tmp"  # another output's temporary
    unrelated.write_bytes(b"partial")
    with caplog.at_level(logging.INFO, logger="weightspace.io._temporaries"):
        assert remove_stale_temporaries(final) == []
    assert foreign.exists() and legacy.exists() and unrelated.exists()
    text = caplog.text
    assert "'another-machine'" in text and "left alone" in text
    assert "no owner record" in text and str(legacy) in text


def test_an_empty_record_is_removed_only_once_old(tmp_path: Path) -> None:
    final = tmp_path / "m.safetensors"
    owner = tmp_path / ".m.safetensors.e.tmp.owner"
    owner.write_bytes(b"")  # a writer killed between creating and filling its record
    assert remove_stale_temporaries(final) == []  # maybe still being written
    os.utime(owner, (time.time() - 3600, time.time() - 3600))
    assert remove_stale_temporaries(final) == [tmp_path / ".m.safetensors.e.tmp"]
    assert hidden(tmp_path) == []


def test_successful_and_failed_writes_leave_no_record(tmp_path: Path) -> None:
    save_state_dict({"x": torch.ones(2)}, tmp_path / "a.safetensors")
    save_state_dict({"x": torch.ones(2)}, tmp_path / "b", max_shard_size=4)
    with pytest.raises(Exception, match="NaN"):
        save_state_dict(
            {"x": torch.tensor([float("nan")])}, tmp_path / "c.safetensors", check_finite=True
        )
    assert hidden(tmp_path) == []
