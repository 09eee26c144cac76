"""Runs the project-8 examples (distillation) in quick mode and checks what they report."""

from __future__ import annotations

import importlib.util
import json
import math
import sys
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
FOLDER = "project08_little_tony"
QuickRun = Callable[..., tuple[Path, dict[str, Any]]]


def _load(script: str) -> ModuleType:
    path = EXAMPLES / FOLDER / script
    name = f"_example_{path.stem}"
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def ordering(run_quick: QuickRun) -> tuple[Path, dict[str, Any]]:
    return run_quick(f"{FOLDER}/distill_ordering.py", timeout=300)


def test_ordering_quick_mode_reports_every_method(ordering: tuple[Path, dict[str, Any]]) -> None:
    out, data = ordering
    assert data["mode"] == "quick"
    res = data["datasets"]["mnist"]
    assert 0.5 < res["teacher"]["test"] <= 1.0
    assert res["teacher"]["parameters"] == 784 * 128 + 128 + 128 * 128 + 128 + 128 * 10 + 10
    assert res["student_parameters"] == 784 * 32 + 32 + 32 * 10 + 10
    for method in ("alone", "kd", "dkd", "hints"):
        (run,) = res["methods"][method]
        assert run["seed"] == 0 and 0.0 <= run["test"] <= 1.0
        assert run["chosen"] == data["config"]["grid"][method][0]
        assert run["val"] == run["trials"][str(run["chosen"])]["val"]
    text = (out / "results.md").read_text()
    assert "### MNIST" in text and "| hints | weight = 10 |" in text
    assert (out / "ordering.png").stat().st_size > 5_000
    assert "+=====" in (out / "results.rst").read_text()


def test_ordering_tables_rebuild_from_committed_results() -> None:
    folder = EXAMPLES / FOLDER / "results" / "ordering"
    if not (folder / "results.json").exists():
        pytest.fail("the committed full run of the ordering study is missing")
    module = _load("distill_ordering.py")
    saved = json.loads((folder / "results.json").read_text())
    assert saved["mode"] == "full"
    text = module.tables(saved)
    assert text == (folder / "results.md").read_text(encoding="utf-8")
    assert module.markdown_to_rst(text) == (folder / "results.rst").read_text(encoding="utf-8")


# ---- project 8 proper: the separator -------------------------------------------------------


@pytest.fixture(scope="module")
def common() -> ModuleType:
    return _load("_common.py")


def test_si_sdr_on_hand_worked_signals(common: ModuleType) -> None:
    import torch

    s = torch.tensor([1.0, 0.0, 0.0, 0.0])
    e = torch.tensor([0.0, 0.1, 0.0, 0.0])
    assert common.si_sdr(s + e, s).item() == pytest.approx(20.0, abs=1e-4)  # 10 log10(1 / 0.01)
    assert common.si_sdr(3 * (s + e), s).item() == pytest.approx(20.0, abs=1e-4)  # scale
    # est = 2 s + e: alpha = 2, the target is 2 s and the error e: 10 log10(4 / 0.01).
    assert common.si_sdr(2 * s + e, s).item() == pytest.approx(26.0206, abs=1e-3)
    # s = (1, 2), est = (2, 1): alpha = 4 / 5, target (0.8, 1.6), error (-1.2, 0.6).
    got = common.si_sdr(torch.tensor([2.0, 1.0]), torch.tensor([1.0, 2.0])).item()
    assert got == pytest.approx(10 * math.log10(3.2 / 1.8), abs=1e-5)
    # An orthogonal estimate has no target component at all.
    assert common.si_sdr(e, s).item() == pytest.approx(10 * math.log10(1e-12 / (0.01 + 1e-12)))
    # Batched over leading dimensions.
    batch = common.si_sdr(torch.stack([s + e, 2 * s + e]), torch.stack([s, s]))
    assert batch.shape == (2,) and batch[1].item() == pytest.approx(26.0206, abs=1e-3)


def test_progressive_distillation_target_is_exact(common: ModuleType) -> None:
    import torch

    class Affine(torch.nn.Module):
        sigma_data = 0.5

        def forward(self, x: Any, sigma: Any, y: Any = None) -> Any:
            return 0.3 * x + sigma.view(-1, 1, 1) * 0.1 + 1.0

    teacher = Affine()
    g = torch.Generator().manual_seed(0)
    x = torch.randn(3, 4, 8, generator=g)
    sigma = torch.tensor([2.0, 1.0, 0.5])
    mid = torch.tensor([1.0, 0.5, 0.1])
    nxt = torch.tensor([0.5, 0.1, 0.0])
    target = common.pd_target(teacher, x, None, sigma, mid, nxt)
    # Two teacher steps by hand...
    z1 = common.ddim_step(teacher(x, sigma), x, sigma, mid)
    d2 = teacher(z1, mid)
    z2 = common.ddim_step(d2, z1, mid, nxt)
    z2[2] = d2[2]  # the last step (to sigma 0) returns the denoised estimate
    # ...equal one student step that predicts the target.
    one = common.ddim_step(target, x, sigma, nxt)
    one[2] = target[2]
    torch.testing.assert_close(one, z2, rtol=1e-5, atol=1e-5)


def test_denoiser_and_sampler_shapes(common: ModuleType) -> None:
    import torch

    cfg = common.UNetConfig(base=8, channels=(8, 16), factors=(2, 4), blocks=(1, 1),
                            attentions=(False, True), heads=1, head_features=8)  # fmt: skip
    torch.manual_seed(0)
    model = common.Denoiser(cfg)
    x = torch.randn(2, 4, 2 * cfg.hop)
    sigma = torch.tensor([0.5, 2.0])
    # The output convolution starts at zero, so the denoiser starts as EDM's c_skip * x,
    # projected onto the stems that sum to the mixture.
    c_skip = (0.25 / (sigma**2 + 0.25)).view(-1, 1, 1)
    y = torch.randn(2, 1, 2 * cfg.hop)
    expected = c_skip * x + (y - c_skip * x.sum(1, keepdim=True)) / 4
    torch.testing.assert_close(model(x, sigma, y), expected)
    model.project = False
    torch.testing.assert_close(model(x, sigma, y), c_skip * x)
    model.project = True
    sigmas = common.karras_sigmas(4)
    assert sigmas.shape == (5,) and sigmas[0] == pytest.approx(10.0) and sigmas[-1] == 0
    assert sigmas[3] == pytest.approx(0.002)
    y = x.sum(1, keepdim=True)
    est = common.separate(model, y, sigmas, seed=1)
    torch.testing.assert_close(est.sum(1, keepdim=True), y, rtol=1e-5, atol=1e-5)  # consistent
    assert common.count_parameters(cfg) == sum(p.numel() for p in model.parameters())
    assert common.count_parameters(common.UNetConfig.msdm()) > 100_000_000


def test_markdown_tables_become_rst_grid_tables(common: ModuleType) -> None:
    md = "### Title\n\n| a | bb |\n|---|---|\n| 1 | 2 |\n"
    assert common.markdown_to_rst(md) == (
        "**Title**\n\n+---+----+\n| a | bb |\n+===+====+\n| 1 | 2  |\n+---+----+\n"
    )


@pytest.fixture(scope="module")
def separation(run_quick: QuickRun) -> tuple[Path, dict[str, Any]]:
    return run_quick(f"{FOLDER}/little_tony.py", timeout=300)


def test_separation_quick_mode(separation: tuple[Path, dict[str, Any]]) -> None:
    out, data = separation
    assert data["mode"] == "quick"
    models = data["models"]
    assert list(models) == ["teacher", "pd4", "pd2", "small", "small_no_teacher"]
    nfe = {k: m["eval"]["nfe"] for k, m in models.items()}
    assert nfe == {"teacher": 8, "pd4": 4, "pd2": 2, "small": 8, "small_no_teacher": 8}
    assert sorted(models["teacher"]["fewer_steps"], key=int) == ["1", "2", "4"]
    teacher = models["teacher"]["parameters"]
    assert models["pd2"]["parameters"] == teacher
    assert models["small"]["parameters"] == models["small_no_teacher"]["parameters"] < teacher
    for m in models.values():
        per_clip = m["eval"]["si_sdri_per_clip"]
        assert len(per_clip) == data["data"]["test_clips"] and len(per_clip[0]) == 4
        assert all(math.isfinite(v) for row in per_clip for v in row)
        assert m["eval"]["seconds_per_audio_second"] > 0
    assert set(data["data"]["train_pieces"]).isdisjoint(data["data"]["test_pieces"])
    text = (out / "results.md").read_text()
    assert "| pd (2 steps) |" in text and "| small (no teacher) |" in text
    for name in ("si_sdr_vs_nfe.png", "spectrograms.png"):
        assert (out / name).stat().st_size > 5_000, name
    wavs = sorted(p.name for p in (out / "audio").iterdir())
    assert "mixture.wav" in wavs and "teacher_bass.wav" in wavs and "pd2_soprano.wav" in wavs


def test_separation_tables_rebuild_from_committed_results() -> None:
    folder = EXAMPLES / FOLDER / "results" / "separation"
    if not (folder / "results.json").exists():
        pytest.fail("the committed full run of the separation study is missing")
    module = _load("little_tony.py")
    saved = json.loads((folder / "results.json").read_text())
    assert saved["mode"] == "full"
    text = module.tables(saved)
    assert text == (folder / "results.md").read_text(encoding="utf-8")
    assert module.markdown_to_rst(text) == (folder / "results.rst").read_text(encoding="utf-8")
