"""Each example's tables, rebuilt from its committed ``results.json``, equal the committed ones.

The tables are written by :mod:`weightspace.report` (and :func:`weightspace.arithmetic.table`);
this pins the committed reports to the numbers in the committed results, byte for byte.
"""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


def _load(script: str) -> ModuleType:
    path = EXAMPLES / script
    name = f"_example_{path.stem}"
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


def _saved(folder: str) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((EXAMPLES / folder / "results" / "results.json").read_text())
    return data


def _committed(folder: str, name: str) -> str:
    return (EXAMPLES / folder / "results" / name).read_text(encoding="utf-8")


def test_project01_tables() -> None:
    folder = "project01_unlearning"
    module = _load(f"{folder}/run_unlearning.py")
    assert module.tables(_saved(folder)) == _committed(folder, "tables.md")


def test_project02_tables() -> None:
    folder = "project02_spectral_maps"
    module = _load(f"{folder}/spectral_maps.py")
    assert module.markdown(_saved(folder)) == _committed(folder, "results.md")
