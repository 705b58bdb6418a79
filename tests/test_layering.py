"""The package's layers, read from the source: every import of every module (at the top,
inside functions, under `if TYPE_CHECKING`), drawn as a graph, must point down or
sideways within a package, and the graph must have no cycle.

    top     runs, isolation, stages, commands, cli, status, __main__
    middle  extract.*  |  loaders.*  |  transform      (each: core + its own package)
    core    core.*                                      (nothing else of flexsync)

`flexsync/__init__.py` holds only `__version__`, which any layer may import.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

PACKAGE_DIR = Path(__file__).resolve().parents[1] / "flexsync"
TOP = {"flexsync.runs", "flexsync.isolation", "flexsync.stages", "flexsync.commands",
       "flexsync.cli", "flexsync.status", "flexsync.__main__"}
# Middle-layer groups: each may import the core and itself, nothing else.
MIDDLE = ("flexsync.extract", "flexsync.loaders", "flexsync.transform")

def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE_DIR.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {module_name(p): p for p in sorted(PACKAGE_DIR.rglob("*.py"))}


def _is_package(module: str) -> bool:
    return MODULES[module].name == "__init__.py"


def imported_names(module: str, tree: ast.AST) -> Iterator[tuple[str, int]]:
    """(flexsync module imported, line) for every import statement anywhere in `tree`."""
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield alias.name, node.lineno
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # relative: resolve against this module's package
                package = module if _is_package(module) else module.rsplit(".", 1)[0]
                base_parts = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(base_parts + ([node.module] if node.module else []))
            else:
                base = node.module or ""
            for alias in node.names:
                if base == "flexsync" and alias.name == "__version__":
                    continue  # the one thing flexsync/__init__.py is for
                submodule = f"{base}.{alias.name}"
                # `from pkg import sub` imports the module pkg.sub; `from m import name` m.
                yield (submodule if submodule in MODULES else base), node.lineno


def import_graph() -> dict[str, dict[str, int]]:
    """module → {flexsync module it imports: first line}."""
    graph: dict[str, dict[str, int]] = {}
    for module, path in MODULES.items():
        edges: dict[str, int] = {}
        for target, line in imported_names(module, ast.parse(path.read_text(), str(path))):
            if target == "flexsync" or target.startswith("flexsync."):
                edges.setdefault(_known(target), line)
        edges.pop(module, None)
        graph[module] = edges
    return graph


def _known(target: str) -> str:
    """The module a dotted import name refers to (`flexsync.x.y` of a class y → flexsync.x)."""
    while target not in MODULES and "." in target:
        target = target.rsplit(".", 1)[0]
    return target


def layer(module: str) -> tuple[int, str]:
    """(height, group): 0 core, 1 middle, 2 top; the group says which middle package."""
    if module == "flexsync":
        return 0, "flexsync"
    if module == "flexsync.core" or module.startswith("flexsync.core."):
        return 0, "flexsync.core"
    for group in MIDDLE:
        if module == group or module.startswith(group + "."):
            return 1, group
    if module in TOP:
        return 2, "top"
    raise AssertionError(f"{module}: not in any layer — add it to tests/test_layering.py")


def violations(graph: dict[str, dict[str, int]]) -> list[str]:
    found = []
    for module, edges in sorted(graph.items()):
        height, group = layer(module)
        for target, line in sorted(edges.items()):
            target_height, target_group = layer(target)
            where = f"{MODULES[module].relative_to(PACKAGE_DIR.parent)}:{line}"
            if target == "flexsync":
                found.append(f"{where}: imports from flexsync/__init__.py, which holds "
                             "nothing but __version__")
            elif target_height > height:
                found.append(f"{where}: {module} (layer {height}) imports {target} "
                             f"(layer {target_height})")
            elif height == 1 and target_height == 1 and target_group != group:
                found.append(f"{where}: {module} imports {target}: {group} and "
                             f"{target_group} are separate middle-layer packages")
    return found


def cycles(graph: dict[str, dict[str, int]]) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for target in graph.get(node, {}):
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def test_every_module_is_in_a_layer() -> None:
    for module in MODULES:
        layer(module)


def test_no_import_goes_up_a_layer_or_across_middle_packages() -> None:
    assert violations(import_graph()) == []


def test_the_import_graph_has_no_cycle() -> None:
    assert cycles(import_graph()) == []


# --- the checker itself: it must see what it is meant to forbid ---------------------------


def _graph_with(module: str, source: str) -> dict[str, dict[str, int]]:
    graph = import_graph()
    edges = dict(graph[module])
    for target, line in imported_names(module, ast.parse(source)):
        if target.startswith("flexsync"):
            edges.setdefault(_known(target), line)
    return {**graph, module: edges}


@pytest.mark.parametrize(("module", "source"), [
    ("flexsync.core.config", "from flexsync.runs import RunRecord"),
    ("flexsync.core.errors", "import flexsync.transform"),
    ("flexsync.extract.flex_client", "def f():\n    from flexsync import stages"),
    ("flexsync.loaders.pushgateway",
     "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from flexsync.cli import app"),
    ("flexsync.loaders.ledger", "from flexsync.extract.flex_landing import FlexSource"),
    ("flexsync.extract.wealthfolio_snapshot", "from flexsync.loaders import ledger"),
    ("flexsync.transform", "from flexsync.extract import flex_client"),
    ("flexsync.loaders.analytics_copy", "from ..extract import flex_client"),
    ("flexsync.extract.flex_markup", "from flexsync import settings_of_some_kind"),
    ("flexsync.core.logs", "import flexsync"),
])
def test_a_wrong_way_import_is_caught(module: str, source: str) -> None:
    assert violations(_graph_with(module, source)), source


def test_a_cycle_is_caught() -> None:
    graph = _graph_with("flexsync.runs", "def later():\n    from flexsync import commands")
    assert any({"flexsync.commands", "flexsync.runs"} <= set(c) for c in cycles(graph))
