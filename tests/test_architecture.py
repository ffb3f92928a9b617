"""The package's import graph has no circle (function-local imports count, TYPE_CHECKING ones not).

Layers point down only (``docs/architecture.md``): a circle means two modules
that each need the other, which is how a feature ends up written twice.
"""

from __future__ import annotations

import ast
from collections.abc import Callable
from pathlib import Path
from typing import Any

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


# -- calls go down the layers -------------------------------------------------------------------
#: Rank of each layer, top first (docs/architecture.md). Modules not listed are leaves
#: (schema, data, partitioning, merge, errors, the sync bridge, input validation):
#: anyone may call them, and they call no layer.
LAYERS = {
    "api": 0,
    "cli": 0,
    "aio": 0,
    "_engine": 1,
    "_planner": 2,
    "_repair": 2,
    "collection": 2,
    "_display": 2,
    "view": 1,
    "expr": 3,
    "indexing": 2,
    "_overlap": 2,
    "io": 4,
    "catalog": 5,
    "store": 6,
}
LEAF = 7


def layer_of(module: str) -> int:
    parts = module.split(".")
    return LAYERS.get(parts[1], LEAF) if len(parts) > 1 else 0


def _calls_during(run: Callable[[], object]) -> set[tuple[str, str]]:
    """(caller module, callee module) of every call between two package modules.

    A closure or lambda handed down (``retry_on_conflict(attempt)``) runs its
    own module's code on a lower layer's behalf: not a call up the layers.
    """
    import sys
    import threading

    edges: set[tuple[str, str]] = set()

    def profile(frame: Any, event: str, arg: object) -> None:
        if event != "call":
            return
        callee = frame.f_globals.get("__name__", "")
        if "<locals>" in frame.f_code.co_qualname or frame.f_code.co_name == "<lambda>":
            return
        caller_frame = frame.f_back
        if caller_frame is None or not callee.startswith(PACKAGE):
            return
        caller = caller_frame.f_globals.get("__name__", "")
        if caller.startswith(PACKAGE) and caller != callee:
            edges.add((caller, callee))

    threading.setprofile_all_threads(profile)
    sys.setprofile(profile)
    try:
        run()
    finally:
        sys.setprofile(None)
        threading.setprofile_all_threads(None)
    return edges


def test_an_insert_and_a_read_call_down_the_layers_only(tmp_path: Path) -> None:
    import numpy

    schema = (
        dask_zcollection.Schema()
        .with_dimension("time", chunks=8)
        .with_variable("time", dtype="datetime64[ns]", dimensions=("time",))
        .with_variable("v", dtype="float64", dimensions=("time",))
        .build()
    )
    url = f"file://{tmp_path}/col"
    col = dask_zcollection.create_collection(
        url,
        schema=schema,
        axis="time",
        partitioning=dask_zcollection.partitioning.Date(("time",), "M"),
    )
    t = numpy.datetime64("2024-01-30", "ns") + numpy.arange(20) * numpy.timedelta64(6, "h")
    col.insert({"time": t, "v": numpy.arange(20.0)})  # warm: imports and templates

    def work() -> None:
        col.insert({"time": t + numpy.timedelta64(1, "m"), "v": numpy.arange(20.0)}, merge="concat")
        got = dask_zcollection.read_collection(url).filter("month == 2").compute()
        assert got["v"].values.size == 24

    edges = _calls_during(work)
    assert ("dask_zcollection._engine", "dask_zcollection._planner") in edges  # it saw the insert
    assert any(callee.startswith("dask_zcollection.io") for _, callee in edges)
    upward = sorted((a, b) for a, b in edges if layer_of(b) < layer_of(a))
    assert upward == []
