from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest
import torch

from weightspace import WeightspaceValueError, io, models
from weightspace import _demo as demo
from weightspace._cli import main

METHODS = ["pretrained", "finetuned", "negation", "average", "task_arithmetic", "ties"]


@pytest.fixture(scope="module")
def result(tmp_path_factory: pytest.TempPathFactory) -> demo.DemoResult:
    out = tmp_path_factory.mktemp("demo")
    return demo.run_demo(quick=True, seed=0, output=out, progress=False)


def test_table_has_every_method_and_task(result: demo.DemoResult) -> None:
    assert [r.method for r in result.rows] == METHODS
    assert result.tasks == demo.TASKS and len(result.tasks) >= 3
    table = result.table()
    header = table.splitlines()[1]
    for task in (result.control, *result.tasks):
        assert task in header
        for r in result.rows:
            assert set(r.accuracy) == {result.control, *result.tasks}
    for r in result.rows:
        assert sum(line.startswith(r.label) for line in table.splitlines()) == 1


def test_each_finetuned_model_beats_the_pretrained_one_on_its_task(
    result: demo.DemoResult,
) -> None:
    pre, ft = result.row("pretrained"), result.row("finetuned")
    for task in result.tasks:
        assert ft.accuracy[task] >= pre.accuracy[task] + 0.04, task
        assert ft.normalized[task] == 1.0
    # The pretrained model is the 99 % MNIST CNN: the control task starts high.
    assert pre.accuracy[result.control] >= 0.95


def test_negation_forgets_the_target_and_keeps_the_control(result: demo.DemoResult) -> None:
    neg = result.negation
    assert neg.target == demo.NEGATION_TARGET
    assert neg.coefficient > 0
    assert result.row("negation").coefficient == -neg.coefficient
    # Test accuracy: the target drops by at least 10 points, the control by at most 6.
    assert neg.target_after <= neg.target_before - 0.10
    assert neg.control_after >= neg.control_before - 0.06
    # The chosen lambda satisfied the floor on validation, and was the best that did.
    curve = {lam: (target, control) for lam, target, control in neg.curve}
    floor = demo.CONTROL_FLOOR * curve[0.0][1]
    assert curve[neg.coefficient][1] >= floor
    allowed = [t for lam, (t, c) in curve.items() if lam > 0 and c >= floor]
    assert curve[neg.coefficient][0] == min(allowed)


def test_merges_keep_most_of_each_task(result: demo.DemoResult) -> None:
    pre = result.row("pretrained")
    for method in ("average", "task_arithmetic", "ties"):
        row = result.row(method)
        assert row.average_normalized > pre.average_normalized + 0.05, method
        assert row.validation_score is not None
    assert result.best_method == max(
        ("average", "task_arithmetic", "ties"), key=lambda m: result.row(m).validation_score or 0
    )
    expected = (
        result.row("average").average_normalized
        < result.row("task_arithmetic").average_normalized
        <= result.row("ties").average_normalized
    )
    assert result.ordering_holds == expected
    assert ("holds in this run" if expected else "does NOT hold") in result.table()


def test_merged_checkpoint_loads_and_names_its_method(result: demo.DemoResult) -> None:
    assert result.checkpoint.name == "merged.safetensors"
    sd = io.open_state_dict(result.checkpoint)
    assert sd.metadata["weightspace.method"] == result.best_method
    params = json.loads(sd.metadata["weightspace.parameters"])
    assert params["coefficient"] == result.row(result.best_method).coefficient
    assert params["tasks"] == list(result.tasks)
    net = models.MNISTNet()
    net.load_state_dict({k: sd[k] for k in sd})
    base = models.mnist_cnn().state_dict()
    assert not torch.equal(net.state_dict()["features.0.weight"], base["features.0.weight"])


def test_json_matches_the_printed_table(result: demo.DemoResult) -> None:
    payload = json.loads(result.results_json.read_text())
    assert payload == json.loads(json.dumps(result.as_dict()))
    lines = result.table().splitlines()
    for row in payload["rows"]:
        (line,) = [ln for ln in lines if ln.startswith(row["label"])]
        coef, *cells = line[len(row["label"]) :].replace("(", " ").replace(")", " ").split()
        numbers = [float(x) for x in cells]
        expected = [100 * row["accuracy"][payload["control"]]]
        for task in payload["tasks"]:
            expected += [100 * row["accuracy"][task], 100 * row["normalized"][task]]
        expected += [100 * row["average_accuracy"], 100 * row["average_normalized"]]
        if row["coefficient"] is None:
            assert coef == "-"
        else:
            assert float(coef) == pytest.approx(row["coefficient"])
        assert numbers == pytest.approx(expected, abs=0.051), row["method"]
    neg = payload["negation"]
    assert f"lambda={neg['coefficient']:g}" in result.table()


def test_figure_is_a_png(result: demo.DemoResult) -> None:
    assert result.figure is not None
    assert result.figure.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert result.figure.stat().st_size > 10_000


def test_fine_tuning_is_deterministic_given_the_seed() -> None:
    config = dataclasses.replace(demo._QUICK, steps=3, val_size=10, test_size=10)
    tasks = demo._load_tasks(config, seed=1)
    base = models.mnist_cnn()
    runs = [
        demo._fine_tune(base, tasks["digits"], config, seed=s, progress=False).state_dict()
        for s in (5, 5, 6)
    ]
    assert all(torch.equal(runs[0][k], runs[1][k]) for k in runs[0])
    assert not all(torch.equal(runs[0][k], runs[2][k]) for k in runs[0])
    # The input model is left alone.
    assert torch.equal(
        base.state_dict()["classifier.2.bias"], models.mnist_cnn().classifier[2].bias
    )


def test_bad_arguments_are_refused(tmp_path: Path) -> None:
    with pytest.raises(WeightspaceValueError, match="`seed` must be a non-negative int"):
        demo.run_demo(seed=-1, output=tmp_path)
    a_file = tmp_path / "file.txt"
    a_file.write_text("x")
    with pytest.raises(WeightspaceValueError, match="`output` must be a folder"):
        demo.run_demo(output=a_file)


def test_cli_demo_prints_the_table(
    result: demo.DemoResult,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    tmp_path: Path,
) -> None:
    calls: list[dict[str, object]] = []

    def fake_run_demo(**kwargs: object) -> demo.DemoResult:
        calls.append(kwargs)
        return result

    monkeypatch.setattr(demo, "run_demo", fake_run_demo)
    argv = ["demo", "--quick", "--seed", "3", "--output", str(tmp_path), "--no-progress"]
    assert main(argv) == 0
    assert calls == [{"quick": True, "seed": 3, "output": str(tmp_path), "progress": False}]
    out = capsys.readouterr().out
    assert out.startswith(result.table())
    assert str(result.checkpoint) in out
