"""Tests of `weightspace merge CONFIG -o OUT` (weightspace._merge_cli)."""

from __future__ import annotations

import errno
import os
from pathlib import Path

import pytest
import torch

from weightspace._cli import main
from weightspace.io import LazyStateDict, open_state_dict, save_state_dict
from weightspace.io import _write as io_write
from weightspace.merge import MergeConfig, run_merge

SHAPES = {"0.weight": (8, 6), "0.bias": (8,), "2.weight": (4, 8), "2.bias": (4,)}


@pytest.fixture
def setup(tmp_path: Path) -> Path:
    """base + three fine-tunes (one sharded) and a config file `merge.yaml` in tmp_path."""
    gen = torch.Generator().manual_seed(0)
    base = {k: torch.randn(s, generator=gen) for k, s in SHAPES.items()}
    base["steps"] = torch.tensor(3)
    save_state_dict(base, tmp_path / "base.safetensors")
    for i in range(3):
        ft = {
            k: v + 0.05 * torch.randn(v.shape, generator=gen) if v.is_floating_point() else v
            for k, v in base.items()
        }
        if i == 2:
            save_state_dict(ft, tmp_path / "ft2", max_shard_size=200)
        else:
            save_state_dict(ft, tmp_path / f"ft{i}.safetensors")
    (tmp_path / "merge.yaml").write_text(
        "base: base.safetensors\n"
        "models:\n  - ft0.safetensors\n  - {path: ft1.safetensors, weight: 0.5}\n  - ft2\n"
        "method: ties\nparameters: {density: 0.5, scale: 0.8}\n"
    )
    return tmp_path


def load(path: Path) -> dict[str, torch.Tensor]:
    sd = open_state_dict(path)
    return {k: sd[k] for k in sd}


def listing(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


def test_cli_equals_python_api(setup: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = setup / "cli.safetensors"
    assert main(["merge", str(setup / "merge.yaml"), "-o", str(out), "--no-progress"]) == 0
    printed = capsys.readouterr().out
    assert printed.startswith("merged 5 tensors (4 with a merged delta; ties, 3 model(s))")
    assert "GB/s" in printed and "peak RSS" in printed
    api = run_merge(
        MergeConfig.from_yaml(setup / "merge.yaml"), setup / "api.safetensors", progress=False
    )
    a, b = load(out), load(api.output)
    assert sorted(a) == sorted(b)
    for k in a:
        assert torch.equal(a[k], b[k]), k
    # the files are identical byte for byte (same header, same provenance)
    assert out.read_bytes() == api.output.read_bytes()
    fixed = setup / "fixed.safetensors"
    args = ["merge", str(setup / "merge.yaml"), "-o", str(fixed), "--no-progress"]
    assert main([*args, "--threads", "2"]) == 0
    assert fixed.read_bytes() == out.read_bytes()  # threads never change the result
    with pytest.raises(SystemExit):
        main([*args, "--threads", "none"])


def test_cli_progress_bar_goes_to_stderr(setup: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = setup / "o.safetensors"
    assert main(["merge", str(setup / "merge.yaml"), "-o", str(out)]) == 0
    captured = capsys.readouterr()
    assert "o.safetensors" in captured.err  # tqdm's bar, labelled with the file name
    assert captured.out.startswith("merged 5 tensors")


def test_dry_run_reads_no_tensor_data(
    setup: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    def refuse(self: LazyStateDict, name: str) -> torch.Tensor:
        raise AssertionError(f"read {name}")

    monkeypatch.setattr(LazyStateDict, "__getitem__", refuse)
    out = setup / "o.safetensors"
    assert main(["merge", str(setup / "merge.yaml"), "-o", str(out), "--dry-run"]) == 0
    printed = capsys.readouterr().out
    assert printed.splitlines()[0] == f"plan: ties of 3 model(s) onto the base -> {out}"
    assert "tensors     5 (4 merged, 1 copied from the base)" in printed
    assert f"parameters  {8 * 6 + 8 + 4 * 8 + 4 + 1:,}" in printed
    assert "in 1 file(s), dtype same as base" in printed
    assert "read while planning: 0 bytes" in printed
    assert not out.exists()


def test_dry_run_shows_shards_and_dtype(setup: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cfg = setup / "merge.yaml"
    cfg.write_text(cfg.read_text() + "dtype: bfloat16\nmax_shard_size: 100B\n")
    assert main(["merge", str(cfg), "-o", str(setup / "out"), "--dry-run"]) == 0
    printed = capsys.readouterr().out
    assert "dtype bfloat16" in printed and "in 3 file(s)" in printed


def test_errors_exit_2_with_the_message(setup: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cfg = setup / "merge.yaml"
    cfg.write_text(cfg.read_text().replace("ft0.safetensors", "gone.safetensors"))
    before = listing(setup)
    assert main(["merge", str(cfg), "-o", str(setup / "o.safetensors")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("weightspace: error: `models[0].path` names ")
    assert "gone.safetensors" in err and "does not exist" in err
    assert listing(setup) == before

    cfg.write_text("base: base.safetensors\nmodels: [ft1.safetensors]\nmethod: nope\n")
    assert main(["merge", str(cfg), "-o", str(setup / "o.safetensors"), "--dry-run"]) == 2
    assert "`method` must be one of 'task_arithmetic'" in capsys.readouterr().err


def test_output_onto_input_and_overwrite(setup: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cfg = str(setup / "merge.yaml")
    base = setup / "base.safetensors"
    original = base.read_bytes()
    assert main(["merge", cfg, "-o", str(base), "--overwrite", "--no-progress"]) == 2
    assert "is the input `base`" in capsys.readouterr().err
    assert base.read_bytes() == original

    out = setup / "o.safetensors"
    assert main(["merge", cfg, "-o", str(out), "--no-progress"]) == 0
    capsys.readouterr()
    assert main(["merge", cfg, "-o", str(out), "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert "already exists" in err and "--overwrite" in err
    assert main(["merge", cfg, "-o", str(out), "--no-progress", "--overwrite"]) == 0


def test_disk_full_exits_1_and_leaves_nothing(
    setup: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    real = io_write._tensor_bytes
    calls = {"n": 0}

    def full(name: str, tensor: torch.Tensor) -> object:
        calls["n"] += 1
        if calls["n"] > 1:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real(name, tensor)

    monkeypatch.setattr(io_write, "_tensor_bytes", full)
    before = listing(setup)
    out = setup / "o.safetensors"
    assert main(["merge", str(setup / "merge.yaml"), "-o", str(out), "--no-progress"]) == 1
    err = capsys.readouterr().err
    assert "No space left on device" in err and "nothing was written" in err
    assert listing(setup) == before


def test_output_is_required() -> None:
    with pytest.raises(SystemExit) as info:
        main(["merge", "m.yaml"])
    assert info.value.code == 2
