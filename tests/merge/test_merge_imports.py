"""The import structure of weightspace.merge: no cycle, no import hidden in a function."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import weightspace.merge

PACKAGE = Path(weightspace.merge.__file__).parent
MODULES = sorted(p.stem for p in PACKAGE.glob("*.py") if p.stem != "__init__")


def _imports(tree: ast.Module) -> list[tuple[str, bool]]:
    """``(module, at_top_level)`` of every ``weightspace`` import in a module."""
    found: list[tuple[str, bool]] = []

    def visit(node: ast.AST, nested: bool) -> None:
        for child in ast.iter_child_nodes(node):
            inner = nested or isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef))
            if isinstance(child, ast.ImportFrom) and (child.module or "").startswith("weightspace"):
                base = child.module or ""
                if base == "weightspace.merge":  # from weightspace.merge import _core
                    found.extend((f"{base}.{a.name}", not inner) for a in child.names)
                else:
                    found.append((base, not inner))
            elif isinstance(child, ast.Import):
                found.extend((a.name, not inner) for a in child.names if a.name.startswith("weig"))
            visit(child, inner)

    visit(tree, False)
    return found


def _graph() -> dict[str, set[str]]:
    graph: dict[str, set[str]] = {}
    for name in MODULES:
        tree = ast.parse((PACKAGE / f"{name}.py").read_text(encoding="utf-8"))
        graph[name] = {
            module.rsplit(".", 1)[1]
            for module, _ in _imports(tree)
            if module.startswith("weightspace.merge.") and module.count(".") == 2
        }
    return graph


def test_no_import_of_weightspace_inside_a_function() -> None:
    hidden = {
        name: [m for m, top in _imports(ast.parse((PACKAGE / f"{name}.py").read_text())) if not top]
        for name in MODULES
    }
    assert {k: v for k, v in hidden.items() if v} == {}


def test_the_modules_of_merge_import_each_other_without_a_cycle() -> None:
    graph = _graph()
    assert graph["_config"] >= {"_methods", "_mergekit"}  # the graph is read correctly
    order: list[str] = []
    state: dict[str, int] = {}

    def visit(node: str, path: tuple[str, ...]) -> None:
        if state.get(node) == 2:
            return
        assert state.get(node) != 1, f"import cycle: {' -> '.join((*path, node))}"
        state[node] = 1
        for dep in sorted(graph[node]):
            visit(dep, (*path, node))
        state[node] = 2
        order.append(node)

    for name in MODULES:
        visit(name, ())
    assert set(order) == set(MODULES)


def test_a_leaf_first_import_order_works_in_a_fresh_interpreter() -> None:
    # The modules that others import most, imported first and alone: a cycle through them
    # would fail here with "partially initialised module".
    code = "; ".join(
        f"import weightspace.merge.{m}" for m in ("_distributed", "_engine", "_methods", "_run")
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=False
    )
    assert done.returncode == 0, done.stderr[-2000:]
