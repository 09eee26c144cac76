"""The public surface: what `import weightspace` costs, and that every public name is documented."""

from __future__ import annotations

import importlib
import inspect
import re
import subprocess
import sys
from pathlib import Path

import pytest

import weightspace

ROOT = Path(__file__).resolve().parent.parent
PUBLIC_MODULES = [
    "weightspace",
    *(f"weightspace.{m}" for m in sorted(weightspace._SUBMODULES)),
    "weightspace.merge.functional",
]
OPTIONAL = [
    "transformers",
    "timm",
    "torchvision",
    "torchaudio",
    "torch_geometric",
    "rdkit",
    "sklearn",
    "soundfile",
    "matplotlib",
]


def _public_names() -> list[str]:
    names = []
    for mod_name in PUBLIC_MODULES:
        module = importlib.import_module(mod_name)
        for name in module.__all__:
            if name == "__version__" or f"{mod_name}.{name}" in PUBLIC_MODULES:
                continue
            names.append(f"{mod_name}.{name}")
    return names


def test_import_needs_only_core_dependencies() -> None:
    code = (
        "import sys, weightspace\n"
        f"bad = [m for m in {OPTIONAL!r} if m in sys.modules]\n"
        "print(','.join(bad))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout.strip()
    assert out == "", f"`import weightspace` imported optional packages: {out}"


def test_subpackages_load_lazily() -> None:
    code = "import sys, weightspace\nprint('weightspace.data' in sys.modules)\n"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
    assert weightspace.data.__name__ == "weightspace.data"
    with pytest.raises(AttributeError, match="no attribute 'nonexistent'"):
        _ = weightspace.nonexistent  # type: ignore[attr-defined]


def test_all_is_unique_and_resolvable() -> None:
    for mod_name in PUBLIC_MODULES:
        module = importlib.import_module(mod_name)
        assert len(set(module.__all__)) == len(module.__all__), mod_name
        for name in module.__all__:
            assert hasattr(module, name), f"{mod_name}.{name} is in __all__ but missing"


@pytest.mark.parametrize("qualname", _public_names())
def test_public_name_has_docstring(qualname: str) -> None:
    mod_name, _, name = qualname.rpartition(".")
    obj = getattr(importlib.import_module(mod_name), name)
    if inspect.isclass(obj) or inspect.isfunction(obj) or inspect.ismodule(obj):
        doc = inspect.getdoc(obj)
        assert doc and len(doc) > 20, f"{qualname} has no real docstring"


def test_every_public_name_is_in_the_api_reference() -> None:
    api = (ROOT / "docs" / "api.rst").read_text()
    listed = set(re.findall(r"^\s{3,}([A-Za-z_][\w.]*)\s*$", api, flags=re.MULTILINE))
    current = ""
    resolved = set()
    for line in api.splitlines():
        m = re.match(r"\.\. currentmodule:: ([\w.]+)", line)
        if m:
            current = m.group(1)
        elif line.strip() in listed:
            resolved.add(f"{current}.{line.strip()}")
    missing = [q for q in _public_names() if q not in resolved]
    assert not missing, f"public names missing from docs/api.rst: {missing}"
