"""The write path as one graph: a plan, one merge-write task per destination partition, one commit.

``insert`` plans on the client from the axis and partitioning variables only
(computed alone when the input is dask-backed), then builds

* ``zc-merge-write-<token>``: one task per destination partition, taking its
  rows from every input chunk that holds some (unsorted and non-contiguous
  input is normal), reading the stored partition only when the strategy needs
  it, and writing the result aside (or appending in place);
* ``zc-immutable-<token>``: the immutable variables, on the first insert;
* ``zc-commit-<token>``: one task publishing everything as one catalog version.

The result is a :class:`dask.delayed.Delayed`: computed alone, or inside a
larger ``dask.compute`` together with the pipeline producing the data.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy
from dask.base import tokenize
from dask.delayed import Delayed
from dask.highlevelgraph import HighLevelGraph

from ..catalog._transaction import Transaction
from ..io._reader import ReadSource
from ..io._writer import (
    COMMIT_PREFIX,
    LAZY_WRITE,
    InsertPlan,
    WriteContext,
    commit_task,
    immutable_task,
    merge_write_task,
    watch_lazy_commit,
)
from ..merge import MergeStrategy
from ._dask import DataNode, List, Task, TaskRef

__all__ = ["build_insert_graph", "watch_lazy_write"]


def watch_lazy_write(ctx: WriteContext, commit_key: Any) -> None:
    """Have a compute of this lazy write graph that fails before its commit task abort it.

    A task failing upstream of the write's tasks (its input) runs no task of
    the write that could abort it, while the write tasks of other partitions
    may have run and kept their locks for the commit. The local schedulers
    call back once such a compute failed (``io._writer.watch_lazy_commit``); on
    a ``distributed`` client a scheduler plugin sees the commit task err
    (:mod:`._cluster`). An eager write is aborted by its caller.
    """
    if not ctx.abort_in_tasks or ctx.txn.spec.transactional:
        return
    watch_lazy_commit(ctx, commit_key)
    client = _cluster_client()
    if client is not None:
        from ._cluster import watch_cluster

        watch_cluster(client)


def _cluster_client() -> Any:
    """The ``distributed`` client a ``compute()`` would run on now, else ``None``."""
    from dask.base import get_scheduler

    owner = getattr(get_scheduler(), "__self__", None)
    return owner if type(owner).__name__ == "Client" else None


def _slices(rows: numpy.ndarray) -> Any:
    """A slice when ``rows`` is a contiguous ascending run (no copy), else the positions."""
    if (
        len(rows)
        and rows[-1] - rows[0] + 1 == len(rows)
        and (len(rows) < 2 or (numpy.diff(rows) == 1).all())
    ):
        return slice(int(rows[0]), int(rows[-1]) + 1)
    return rows


def build_insert_graph(
    source: ReadSource,
    txn: Transaction,
    strategy: MergeStrategy,
    plan: InsertPlan,
    columns: Mapping[str, Any],
    immutable: Mapping[str, numpy.ndarray] | None,
) -> Delayed:
    """Build the insert graph; computing the returned ``Delayed`` commits (returns the paths)."""
    names = tuple(columns)
    ctx = WriteContext(
        source=source,
        txn=txn,
        strategy=strategy,
        variables=names,
        abort_in_tasks=LAZY_WRITE.get(),
    )
    token = tokenize(txn.txn)
    mw, commit_name = f"zc-merge-write-{token}", f"{COMMIT_PREFIX}{token}"
    ctx_node = DataNode(None, ctx)
    layer: dict[Any, Any] = {}
    dependencies: list[Any] = []
    lazy = [c for c in columns.values() if not isinstance(c, numpy.ndarray)]
    if lazy:
        import dask.array as da

        # One chunking along the axis for every variable, whole along the others.
        first = da.asarray(lazy[0])
        row_chunks = first.chunks[0]
        arrays = [
            da.asarray(columns[n]).rechunk(
                {0: row_chunks, **{d: -1 for d in range(1, numpy.ndim(columns[n]))}}
            )
            for n in names
        ]
        offsets = numpy.concatenate([[0], numpy.cumsum(row_chunks)])
        dependencies = arrays
        for j, part in enumerate(plan.partitions):
            rows = plan.rows[j]
            chunk_of = numpy.searchsorted(offsets, rows, side="right") - 1
            pieces, indices = [], []
            for c in numpy.unique(chunk_of).tolist():
                local = rows[chunk_of == c] - offsets[c]
                pieces.append(List(*(TaskRef((a.name, c) + (0,) * (a.ndim - 1)) for a in arrays)))
                indices.append(_slices(local))
            key = (mw, j)
            layer[key] = Task(key, merge_write_task, ctx_node, part, List(*pieces), indices)
    else:
        for j, part in enumerate(plan.partitions):
            sel = _slices(plan.rows[j])
            piece = [columns[n][sel] for n in names]
            key = (mw, j)
            full = slice(None)
            layer[key] = Task(key, merge_write_task, ctx_node, part, [piece], [full])
    imm_ref: Any = None
    if immutable:
        imm_key = (f"zc-immutable-{token}", 0)
        layer[imm_key] = Task(imm_key, immutable_task, ctx_node, DataNode(None, dict(immutable)))
        imm_ref = TaskRef(imm_key)
    results = List(*(TaskRef((mw, j)) for j in range(len(plan.partitions))))
    commit_key = (commit_name, 0)
    layer[commit_key] = Task(commit_key, commit_task, ctx_node, plan.keys, results, imm_ref)
    watch_lazy_write(ctx, commit_key)
    graph = HighLevelGraph.from_collections(commit_name, layer, dependencies=dependencies)
    return Delayed(commit_key, graph, layer=commit_name)
