from __future__ import annotations

import json
import logging
import subprocess
import sys
from pathlib import Path

import pytest

from weightspace._cache import (
    atomic_path,
    cache_dir,
    cached_file,
    file_digest,
    update_json_mapping,
)


def test_cache_dir_follows_the_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WEIGHTSPACE_CACHE", str(tmp_path / "c"))
    assert cache_dir() == (tmp_path / "c").resolve()
    assert cache_dir("mnist", "v1") == (tmp_path / "c" / "mnist" / "v1").resolve()
    assert (tmp_path / "c" / "mnist" / "v1").is_dir()


def test_cache_dir_default_is_under_xdg(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("WEIGHTSPACE_CACHE", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    assert cache_dir() == (tmp_path / "weightspace").resolve()


def test_atomic_path_leaves_nothing_on_failure(tmp_path: Path) -> None:
    final = tmp_path / "out.bin"
    final.write_bytes(b"old")
    with pytest.raises(RuntimeError, match="boom"), atomic_path(final) as tmp:
        tmp.write_bytes(b"half-written")
        raise RuntimeError("boom")
    assert final.read_bytes() == b"old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.bin"]


def test_atomic_path_replaces_on_success(tmp_path: Path) -> None:
    final = tmp_path / "sub" / "out.bin"
    with atomic_path(final) as tmp:
        assert tmp.parent == final.parent
        tmp.write_bytes(b"new")
    assert final.read_bytes() == b"new"
    assert sorted(p.name for p in final.parent.iterdir()) == ["out.bin"]


def test_cached_file_builds_once_then_reuses(tmp_path: Path) -> None:
    calls: list[Path] = []

    def build(p: Path) -> None:
        calls.append(p)
        p.write_bytes(b"payload")

    target = tmp_path / "a.bin"
    assert cached_file(target, build, meta={"seed": 1}) == target
    assert cached_file(target, build, meta={"seed": 1}) == target
    assert len(calls) == 1
    manifest = json.loads((tmp_path / "a.bin.json").read_text())
    assert manifest == {"sha256": file_digest(target), "meta": {"seed": 1}}


def test_cached_file_rebuilds_on_other_parameters(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    calls: list[int] = []

    def build(p: Path) -> None:
        calls.append(1)
        p.write_bytes(b"x" * len(calls))

    target = tmp_path / "a.bin"
    cached_file(target, build, meta={"seed": 1})
    with caplog.at_level(logging.INFO, logger="weightspace._cache"):
        cached_file(target, build, meta={"seed": 2})
    assert len(calls) == 2
    assert target.read_bytes() == b"xx"
    assert "other sources or parameters" in caplog.text
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]


def test_cached_file_detects_corruption_and_rebuilds(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    target = tmp_path / "a.bin"
    cached_file(target, lambda p: p.write_bytes(b"good data"))
    target.write_bytes(b"bad data!")  # same length, different bytes
    with caplog.at_level(logging.WARNING, logger="weightspace._cache"):
        cached_file(target, lambda p: p.write_bytes(b"good data"))
    assert target.read_bytes() == b"good data"
    assert "is corrupted" in caplog.text


def test_cached_file_rebuilds_without_manifest(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    target = tmp_path / "a.bin"
    target.write_bytes(b"unknown origin")
    with caplog.at_level(logging.WARNING, logger="weightspace._cache"):
        cached_file(target, lambda p: p.write_bytes(b"built"))
    assert target.read_bytes() == b"built"
    assert "no manifest" in caplog.text


def test_cached_file_failed_build_keeps_nothing(tmp_path: Path) -> None:
    def build(p: Path) -> None:
        p.write_bytes(b"partial")
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        cached_file(tmp_path / "a.bin", build)
    assert list(tmp_path.iterdir()) == []


_ADD_KEYS = """
import sys
from pathlib import Path
from weightspace._cache import update_json_mapping
for k in range(25):
    update_json_mapping(Path(sys.argv[1]), {f"{sys.argv[2]}-{k}": k})
"""


def test_update_json_mapping_keeps_every_writers_entries(tmp_path: Path) -> None:
    """Four processes add 25 keys each to one file: none is lost to a concurrent rewrite."""
    path = tmp_path / "replies.json"
    workers = [
        subprocess.Popen([sys.executable, "-c", _ADD_KEYS, str(path), str(w)]) for w in range(4)
    ]
    assert [p.wait(timeout=120) for p in workers] == [0, 0, 0, 0]
    stored = json.loads(path.read_text(encoding="utf-8"))
    assert stored == {f"{w}-{k}": k for w in range(4) for k in range(25)}
    assert [p.name for p in tmp_path.iterdir() if p.name.endswith(".tmp")] == []


def test_update_json_mapping_replaces_an_unreadable_file(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "replies.json"
    path.write_text("{not json", encoding="utf-8")
    with caplog.at_level(logging.WARNING, logger="weightspace._cache"):
        merged = update_json_mapping(path, {"a": "b"})
    assert merged == {"a": "b"}
    assert json.loads(path.read_text(encoding="utf-8")) == {"a": "b"}
    assert "unreadable cache file" in caplog.text
