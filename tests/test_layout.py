"""The package's shape: every module imports, no import cycles, the layers import only downwards."""

from __future__ import annotations

import ast
import importlib
import pkgutil
from pathlib import Path

import pytest

import mediacache

PACKAGE_DIR = Path(mediacache.__file__).parent
MODULES = sorted(m.name for m in pkgutil.walk_packages([str(PACKAGE_DIR)], prefix="mediacache.")
                 if ".migrations.versions." not in m.name and not m.name.endswith((".migrations.env", "__main__")))


def _module_file(name: str) -> Path:
    rel = Path(*name.split(".")[1:])
    package = PACKAGE_DIR / rel / "__init__.py"
    return package if package.exists() else PACKAGE_DIR / rel.with_suffix(".py")


def _imports_of(name: str) -> set[str]:
    """The mediacache modules `name` imports at module level (not inside functions). Imports under
    TYPE_CHECKING count: a type-only cycle still means two modules that cannot be read apart."""
    tree = ast.parse(_module_file(name).read_text())
    found: set[str] = set()
    for node in tree.body:
        for sub in ast.walk(node) if not isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef) else ():
            if isinstance(sub, ast.FunctionDef | ast.AsyncFunctionDef):
                break
            if isinstance(sub, ast.ImportFrom) and sub.module and sub.module.startswith("mediacache"):
                found.add(sub.module)
                for alias in sub.names:
                    if f"{sub.module}.{alias.name}" in MODULES:
                        found.add(f"{sub.module}.{alias.name}")
            elif isinstance(sub, ast.Import):
                found.update(a.name for a in sub.names if a.name.startswith("mediacache"))
    return {m for m in found if m in MODULES and m != name}


GRAPH = {name: _imports_of(name) for name in MODULES}


@pytest.mark.parametrize("name", MODULES)
def test_every_module_imports_on_its_own(name: str) -> None:
    importlib.import_module(name)


def test_no_import_cycles() -> None:
    # A package's __init__ re-exporting a submodule is not a cycle of ideas: drop the edges from a
    # package to its own children before looking for cycles.
    graph = {n: {m for m in deps if not m.startswith(n + ".")} for n, deps in GRAPH.items()}
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> None:
        state[node] = 1
        stack.append(node)
        for dep in sorted(graph[node]):
            if state.get(dep) == 1:
                cycle = [*stack[stack.index(dep):], dep]
                raise AssertionError("import cycle: " + " -> ".join(cycle))
            if dep not in state:
                visit(dep)
        stack.pop()
        state[node] = 2

    for node in sorted(graph):
        if node not in state:
            visit(node)


def test_routes_reach_the_database_only_through_the_service() -> None:
    offenders = {n: sorted(d for d in deps if d.startswith("mediacache.db"))
                 for n, deps in GRAPH.items() if n.startswith("mediacache.api")}
    assert {n: d for n, d in offenders.items() if d} == {}


def test_the_domain_imports_nothing_with_io() -> None:
    tree = ast.parse(_module_file("mediacache.domain").read_text())
    imported = {a.name.split(".")[0] for node in ast.walk(tree) if isinstance(node, ast.Import) for a in node.names}
    imported |= {node.module.split(".")[0] for node in ast.walk(tree)
                 if isinstance(node, ast.ImportFrom) and node.module}
    assert imported <= {"__future__", "uuid", "enum", "dataclasses", "typing", "collections", "datetime"}, imported


def test_no_module_shadows_the_standard_library() -> None:
    import sys

    shadowing = [n for n in MODULES if n.rsplit(".", 1)[-1] in sys.stdlib_module_names]
    assert shadowing == []


def test_the_worker_is_importable_where_scripts_find_it() -> None:
    from mediacache.worker import CacheWorker
    from mediacache.worker.runner import CacheWorker as Runner

    assert CacheWorker is Runner
