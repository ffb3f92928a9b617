"""The one module that imports dask's private expression machinery.

Everything else in the package imports these names from here, so a change in
dask's internals is fixed in one place (and pinned by tests/expr/test_dask_contract.py).
"""

from __future__ import annotations

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
]
