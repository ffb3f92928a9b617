"""The one module that imports dask's private expression machinery.

Everything else in the package imports these names from here, so a change in
dask's internals is fixed in one place (and pinned by tests/expr/test_dask_contract.py).
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping
from typing import Any

import numpy
from dask._expr import Expr, FinalizeCompute
from dask._task_spec import Alias, DataNode, GraphNode, List, Task, TaskRef

__all__ = [
    "Alias",
    "DataNode",
    "Expr",
    "FinalizeCompute",
    "GraphNode",
    "List",
    "Task",
    "TaskRef",
    "array_from_graph",
    "data_argument",
]


def data_argument(task: Any, i: int) -> Any:
    """The value of ``task``'s ``i``-th argument when it is a :class:`DataNode`, else ``None``."""
    args = getattr(task, "args", ())
    if isinstance(task, Task) and i < len(args) and isinstance(args[i], DataNode):
        return args[i].value
    return None


def array_from_graph(
    graph: Mapping[Any, Any],
    name: str,
    chunks: tuple[tuple[int, ...], ...],
    dtype: numpy.dtype[Any],
) -> Any:
    """A :class:`dask.array.Array` whose blocks are the keys ``(name, i, j, ...)`` of ``graph``.

    The classic array (dask's default in 2026.8) takes the graph as is; with
    ``array.query-planning`` on, dask's array expressions wrap it in their
    ``FromGraph`` expression (whose name is ``name`` plus a token).
    """
    import dask.array as da

    if da.array_expr_enabled():
        from dask.array._array_expr._collection import from_graph

        keys = [(name, *idx) for idx in itertools.product(*(range(len(c)) for c in chunks))]
        meta = numpy.empty((0,) * len(chunks), dtype=dtype)
        return from_graph(dict(graph), meta, chunks, keys, name)
    return da.Array(graph, name, chunks=chunks, dtype=dtype)
