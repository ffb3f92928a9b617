"""The package's import graph has no circle (function-local imports count, TYPE_CHECKING ones not).

Layers point down only (``docs/architecture.md``): a circle means two modules
that each need the other, which is how a feature ends up written twice.
"""

from __future__ import annotations

import ast
from pathlib import Path

import dask_zcollection

ROOT = Path(dask_zcollection.__file__).parent
PACKAGE = "dask_zcollection"


def _module_name(path: Path) -> str:
    parts = path.relative_to(ROOT.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _is_package(name: str) -> bool:
    return (ROOT.parent / name.replace(".", "/") / "__init__.py").exists()


def _exists(name: str) -> bool:
    rel = ROOT.parent / name.replace(".", "/")
    return rel.with_suffix(".py").exists() or (rel / "__init__.py").exists()


def _type_checking_lines(tree: ast.Module) -> set[int]:
    """Line numbers of statements under ``if TYPE_CHECKING:``."""
    lines: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            for child in node.body:
                lines.update(range(child.lineno, (child.end_lineno or child.lineno) + 1))
    return lines


def imports_of(path: Path) -> set[str]:
    """Modules of the package that ``path`` imports (anywhere but under TYPE_CHECKING)."""
    name = _module_name(path)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    tree = ast.parse(path.read_text())
    skip = _type_checking_lines(tree)
    out: set[str] = set()
    for node in ast.walk(tree):
        if getattr(node, "lineno", None) in skip:
            continue
        if isinstance(node, ast.Import):
            out.update(a.name for a in node.names if a.name.startswith(PACKAGE))
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - node.level + 1]
                target = ".".join([*base, node.module] if node.module else base)
            else:
                target = node.module or ""
            if not target.startswith(PACKAGE):
                continue
            out.add(target)
            for alias in node.names:  # ``from . import errors``: the submodule itself
                sub = f"{target}.{alias.name}"
                if _is_package(target) and _exists(sub):
                    out.add(sub)
    out.discard(name)
    return out


def import_graph() -> dict[str, set[str]]:
    graph = {}
    for path in sorted(ROOT.rglob("*.py")):
        graph[_module_name(path)] = imports_of(path)
    # Importing ``a.b.c`` runs ``a.b/__init__`` first: a package's __init__ is a dependency.
    for deps in graph.values():
        for dep in list(deps):
            parts = dep.split(".")
            deps.update(".".join(parts[:i]) for i in range(2, len(parts)))
    for name, deps in graph.items():
        deps.discard(name)
        # A package's own __init__ importing its submodules is how packages work; a
        # submodule importing its own package's __init__ is not counted as a circle.
        graph[name] = {d for d in deps if not name.startswith(d + ".")}
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Every elementary circle found by a depth-first search (one per back edge)."""
    found: list[list[str]] = []
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> None:
        state[node] = 1
        stack.append(node)
        for dep in sorted(graph.get(node, ())):
            if state.get(dep) == 1:
                found.append([*stack[stack.index(dep) :], dep])
            elif dep not in state:
                visit(dep)
        stack.pop()
        state[node] = 2

    for node in sorted(graph):
        if node not in state:
            visit(node)
    return found


def test_the_import_graph_has_no_circle() -> None:
    graph = import_graph()
    assert "dask_zcollection._engine" in graph
    assert cycles(graph) == []


def test_the_circle_check_finds_a_function_local_circle() -> None:
    graph = import_graph()
    # The lazy collection never imports the engine or the API layer (it did: a
    # function-local import of the engine's opener), and the check would see it.
    forbidden = {"dask_zcollection._engine", "dask_zcollection.api", "dask_zcollection.aio"}
    assert not graph["dask_zcollection.collection"] & forbidden
    graph["dask_zcollection.collection"].add("dask_zcollection._engine")
    assert any("dask_zcollection.collection" in c for c in cycles(graph))
