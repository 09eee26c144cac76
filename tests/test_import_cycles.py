"""No import cycles: every module imports alone, and the core's import graph is acyclic.

Two checks. The dynamic one imports every module of the package on its own, in a fresh
interpreter state (no ``weightspace`` module loaded before it), so that a cycle which only
bites for one entry point shows up. The static one builds the import graph from the source
with :mod:`ast` (imports at module level and inside functions alike; only ``if
TYPE_CHECKING:`` blocks are left out, since they never run) and asserts that the core has no
cycle: a function-level import that dodges a cycle at import time is still a cycle here.
"""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

import weightspace

PACKAGE = Path(weightspace.__file__).resolve().parent
ROOT = "weightspace"

#: The core: the state-dict layer, task vectors, LoRA, selections, errors and merging.
CORE = ("weightspace.io", "weightspace.select", "weightspace._task_vector", "weightspace._lora")
CORE_MODULES = ("weightspace._errors",)
MERGE = ("weightspace.merge",)


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


MODULE_FILES = {_module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}
MODULES = sorted(MODULE_FILES)
PACKAGES = {name for name, path in MODULE_FILES.items() if path.name == "__init__.py"}


def _under(name: str, prefixes: tuple[str, ...]) -> bool:
    return any(name == p or name.startswith(p + ".") for p in prefixes)


def _is_core(name: str) -> bool:
    return _under(name, CORE) or name in CORE_MODULES


# --------------------------------------------------------------------------------------------
# Static import graph
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Edge:
    """``source`` imports ``target`` (at ``line``; ``implicit`` for a parent package)."""

    source: str
    target: str
    line: int
    implicit: bool = False


def _is_type_checking(test: ast.expr) -> bool:
    if isinstance(test, ast.Name):
        return test.id == "TYPE_CHECKING"
    return isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"


def _import_nodes(node: ast.AST) -> Iterator[ast.Import | ast.ImportFrom]:
    """Every import under ``node``, at any depth, except inside ``if TYPE_CHECKING:``."""
    for child in ast.iter_child_nodes(node):
        if isinstance(child, ast.If) and _is_type_checking(child.test):
            for other in child.orelse:
                yield from _import_nodes_of(other)
            continue
        yield from _import_nodes_of(child)


def _import_nodes_of(node: ast.AST) -> Iterator[ast.Import | ast.ImportFrom]:
    if isinstance(node, (ast.Import, ast.ImportFrom)):
        yield node
    yield from _import_nodes(node)


def _resolve_from(module: str, node: ast.ImportFrom) -> str:
    if node.level == 0:
        return node.module or ""
    package = module if module in PACKAGES else module.rpartition(".")[0]
    base = package.split(".")
    if node.level > 1:
        base = base[: -(node.level - 1)]
    return ".".join(base + ([node.module] if node.module else []))


def _targets(module: str, node: ast.Import | ast.ImportFrom) -> list[str]:
    if isinstance(node, ast.Import):
        return [alias.name for alias in node.names]
    origin = _resolve_from(module, node)
    out = []
    for alias in node.names:
        candidate = f"{origin}.{alias.name}"
        out.append(candidate if candidate in MODULE_FILES else origin)
    return out


def _ancestors(name: str) -> list[str]:
    parts = name.split(".")
    return [".".join(parts[:i]) for i in range(2, len(parts))]


def import_graph() -> dict[str, list[Edge]]:
    """``module -> edges`` for every module of the package (targets inside it only).

    Importing ``weightspace.a.b`` also runs ``weightspace/a/__init__.py``, so an import of a
    module adds an implicit edge to each enclosing package that the importer is not part of.
    The root package is left out of those implicit edges: every module's import runs it
    first, which is how Python defines the order, not a cycle.
    """
    graph: dict[str, list[Edge]] = {}
    for module, path in MODULE_FILES.items():
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        edges: dict[tuple[str, bool], Edge] = {}
        for node in _import_nodes(tree):
            for target in _targets(module, node):
                if target not in MODULE_FILES or target == module:
                    continue
                edges.setdefault((target, False), Edge(module, target, node.lineno))
                for parent in _ancestors(target):
                    if not _under(module, (parent,)) and parent != module:
                        edges.setdefault(
                            (parent, True), Edge(module, parent, node.lineno, implicit=True)
                        )
        graph[module] = list(edges.values())
    return graph


def strongly_connected(graph: dict[str, list[Edge]]) -> list[list[str]]:
    """Tarjan's algorithm (iterative): the components with more than one module."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    out: list[list[str]] = []
    counter = 0
    for start in sorted(graph):
        if start in index:
            continue
        work = [(start, 0)]
        while work:
            node, i = work.pop()
            if i == 0:
                index[node] = low[node] = counter
                counter += 1
                stack.append(node)
                on_stack.add(node)
            targets = [e.target for e in graph[node]]
            if i < len(targets):
                work.append((node, i + 1))
                nxt = targets[i]
                if nxt not in index:
                    work.append((nxt, 0))
                elif nxt in on_stack:
                    low[node] = min(low[node], index[nxt])
                continue
            if low[node] == index[node]:
                component = []
                while True:
                    w = stack.pop()
                    on_stack.discard(w)
                    component.append(w)
                    if w == node:
                        break
                if len(component) > 1:
                    out.append(sorted(component))
            if work:
                parent = work[-1][0]
                low[parent] = min(low[parent], low[node])
    return out


def describe_cycle(graph: dict[str, list[Edge]], component: list[str]) -> str:
    """One cycle through ``component``, edge by edge with the importing line."""
    members = set(component)
    start = component[0]
    path: list[Edge] = []
    seen = {start}

    def walk(node: str) -> bool:
        for edge in graph[node]:
            if edge.target not in members:
                continue
            if edge.target == start:
                path.append(edge)
                return True
            if edge.target in seen:
                continue
            seen.add(edge.target)
            path.append(edge)
            if walk(edge.target):
                return True
            path.pop()
        return False

    walk(start)
    steps = [
        f"  {e.source} -> {e.target}"
        f" ({MODULE_FILES[e.source].relative_to(PACKAGE.parent)}:{e.line}"
        f"{', runs the package __init__' if e.implicit else ''})"
        for e in path
    ]
    return "\n".join(steps)


def _cycles(select: str) -> list[str]:
    graph = import_graph()
    found = []
    for component in strongly_connected(graph):
        in_core = [m for m in component if _is_core(m)]
        in_merge = [m for m in component if _under(m, MERGE)]
        kind = "core" if in_core and not in_merge else "merge" if in_merge else "other"
        if kind == select:
            found.append(describe_cycle(graph, component))
    return found


def test_graph_sees_function_level_imports_and_skips_type_checking(tmp_path: Path) -> None:
    source = (
        "from typing import TYPE_CHECKING\n"
        "if TYPE_CHECKING:\n"
        "    from weightspace._lora import LoraAdapter\n"
        "def f():\n"
        "    from weightspace.select import _selection\n"
    )
    nodes = list(_import_nodes(ast.parse(source)))
    targets = [t for n in nodes for t in _targets("weightspace._task_vector._vector", n)]
    assert targets == ["typing", "weightspace.select._selection"]
    assert "weightspace.select" in _ancestors("weightspace.select._selection")


def test_cycle_finder_reports_a_cycle() -> None:
    graph = {
        "a": [Edge("a", "b", 1)],
        "b": [Edge("b", "c", 2)],
        "c": [Edge("c", "a", 3)],
        "d": [Edge("d", "a", 4)],
    }
    assert strongly_connected(graph) == [["a", "b", "c"]]


def test_the_core_has_no_import_cycle() -> None:
    cycles = _cycles("core")
    assert not cycles, "import cycles in the core:\n" + "\n\n".join(cycles)


def test_merge_has_no_import_cycle() -> None:
    cycles = _cycles("merge")
    assert not cycles, "import cycles in weightspace.merge:\n" + "\n\n".join(cycles)


def test_the_rest_has_no_import_cycle() -> None:
    cycles = _cycles("other")
    assert not cycles, "import cycles outside the core:\n" + "\n\n".join(cycles)


# --------------------------------------------------------------------------------------------
# Every module imports alone
# --------------------------------------------------------------------------------------------

_IMPORT_EACH = r"""
import importlib, json, sys, traceback
results = {}
for name in json.loads(sys.argv[1]):
    for loaded in [m for m in sys.modules if m == "weightspace" or m.startswith("weightspace.")]:
        del sys.modules[loaded]
    try:
        importlib.import_module(name)
    except ModuleNotFoundError as exc:
        if exc.name and not exc.name.startswith("weightspace"):
            results[name] = "optional:" + exc.name
        else:
            results[name] = traceback.format_exc()
    except Exception:
        results[name] = traceback.format_exc()
    else:
        results[name] = "ok"
print(json.dumps(results))
"""


@pytest.fixture(scope="module")
def imported_alone() -> dict[str, str]:
    """Import every module alone, each after removing all weightspace modules."""
    done = subprocess.run(
        [sys.executable, "-c", _IMPORT_EACH, json.dumps(MODULES)],
        capture_output=True,
        text=True,
        check=True,
        timeout=600,
    )
    result: dict[str, str] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def test_every_module_is_found() -> None:
    assert "weightspace._task_vector._vector" in MODULES
    assert "weightspace.io" in PACKAGES
    assert len(MODULES) > 50


@pytest.mark.parametrize("name", [m for m in MODULES if _is_core(m)])
def test_core_module_imports_alone(name: str, imported_alone: dict[str, str]) -> None:
    assert imported_alone[name] == "ok", f"importing {name} alone failed:\n{imported_alone[name]}"


@pytest.mark.parametrize("name", [m for m in MODULES if not _is_core(m)])
def test_module_imports_alone(name: str, imported_alone: dict[str, str]) -> None:
    outcome = imported_alone[name]
    if outcome.startswith("optional:"):
        pytest.skip(f"{name} needs the optional package {outcome.split(':', 1)[1]}")
    assert outcome == "ok", f"importing {name} alone failed:\n{outcome}"
