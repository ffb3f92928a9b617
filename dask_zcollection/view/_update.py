"""``View.update`` as one graph: one task per base partition, then one commit.

Each task reads, from the base, the variables the function needs (and, from
the view store, the overlay variables it needs and those it keeps), runs the
function, checks its result and writes the partition's overlay variables
aside in the view store, stamped with what it was computed from (the base
partition's path, row count and transaction: :data:`BASE_ATTR`). The commit
is the write path's (:func:`dask_zcollection.io._writer.commit_task`): the
view store has its own catalog, locks and leases, and the base is only read.
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy
from dask.base import tokenize
from dask.delayed import Delayed
from dask.highlevelgraph import HighLevelGraph

from .._prepare import _conform, columns_to_dataset
from .._update import extend_rows, row_index, scatter_rows
from ..catalog._transaction import TXN_ATTR, lock_key
from ..data import Dataset, Variable
from ..errors import ConflictError, SchemaError
from ..expr._dask import DataNode, List, Task, TaskRef
from ..expr._write import watch_lazy_write
from ..io import CollectionConfig, ReadSource
from ..io._partition import partition_attrs
from ..io._writer import (
    COMMIT_PREFIX,
    PartitionPlan,
    WriteContext,
    _check_unchanged,
    check_versions,
    commit_task,
    run_task,
)
from ..schema import Schema
from ._source import BASE_ATTR, fill_array, group_attrs

__all__ = ["BasePart", "ViewUpdate", "build_update_graph", "view_update_task"]

#: What a task knows of its base partition: path, committed rows (``-1``: unknown),
#: axis min and max (``None``: unknown), the identity of its group (``""``: unknown).
BasePart = tuple[str, int, Any, Any, str]


@dataclasses.dataclass(frozen=True, eq=False)
class ViewUpdate:
    """What every update task needs besides its partition (picklable).

    Attributes
    ----------
    func : callable
        ``func(partition: Dataset) -> Dataset | mapping`` returning view variables.
    base : ReadSource
        The base collection (read only).
    overlay_config : CollectionConfig
        The base's descriptor with the view's schema (what the view store holds).
    joined : Schema
        Base and view variables together (the dataset ``func`` gets).
    base_names : tuple of str
        Base variables ``func`` gets.
    overlay_names : tuple of str
        View variables ``func`` gets (their stored values, else fill values).
    url : str
        The view's URL (for messages).
    immutable : dict
        The base's immutable variables ``func`` gets (read once, on the client).
    rows : dict or None
        ``update(index=)``: canonical path -> the row ranges ``func`` gets (the
        other rows keep their overlay values).
    halos : dict or None
        ``update(depth=)``: canonical path -> the rows before and after it and the
        rows of ``constant`` padded beyond the collection's ends; ``func`` gets
        the extended partition, its result is trimmed.
    constant : scalar or None
        The padding of ``halos``.
    depends_on : dict
        Canonical path -> the base and view partition versions its input came
        from (the index lookup, the halos), re-checked before writing.
    index_entries : tuple or None
        ``update(index=name)``: what rebuilds that stored index's entry of each
        partition written (``indexing._stored.entry_maker``) and the variables
        its builder needs (``None``: all).
    """

    func: Callable[..., Any]
    base: ReadSource
    overlay_config: CollectionConfig
    joined: Schema
    base_names: tuple[str, ...]
    overlay_names: tuple[str, ...]
    url: str
    immutable: Mapping[str, numpy.ndarray] = dataclasses.field(default_factory=dict)
    rows: Mapping[str, tuple[tuple[int, int], ...]] | None = None
    halos: Mapping[str, tuple[Any, Any, int, int]] | None = None
    constant: Any = None
    depends_on: Mapping[str, tuple[tuple[Any, ...], tuple[Any, ...]]] = dataclasses.field(
        default_factory=dict
    )
    index_entries: tuple[Any, tuple[str, ...] | None] | None = None

    @property
    def reads(self) -> tuple[Any, ...]:
        """The view partition versions of :attr:`depends_on` (the view's commit re-checks them;
        the base's are checked by the tasks only: another store)."""
        return tuple({v[0]: v for _, vs in self.depends_on.values() for v in vs}.values())

    @property
    def name(self) -> str:
        return f"view update({getattr(self.func, '__qualname__', self.func)!s})"

    @property
    def variables(self) -> list[str]:
        """Every view variable."""
        return [p for p, _ in self.overlay_config.schema.walk()]

    def conform(self, result: Any, rows: int, canonical: str) -> dict[str, numpy.ndarray]:
        """The variables ``func`` returned, checked against the view's schema.

        Raises
        ------
        SchemaError
            Naming the partition and the variable: not a view variable, wrong
            length, shape or dtype.
        """
        where = f"view {self.url}, partition {canonical!r}"
        if not isinstance(result, Dataset | Mapping):
            raise SchemaError(
                f"{where}: the update function must return a Dataset or a mapping of view "
                f"variable to array, got {type(result).__name__}"
            )
        pairs = result.walk() if isinstance(result, Dataset) else dict(result).items()
        schema = self.overlay_config.schema
        axis = self.overlay_config.axis
        out: dict[str, numpy.ndarray] = {}
        for path, value in pairs:
            key = path.strip("/") if isinstance(path, str) else path
            if not isinstance(key, str) or key not in schema:
                what = (
                    "a base variable (the base is read-only)"
                    if key in self.joined
                    else ("not a variable of the view")
                )
                raise SchemaError(
                    f"{where}: the update returned {path!r}, {what}; the view's variables are "
                    f"{self.variables}"
                )
            data = numpy.asanyarray(value.data if isinstance(value, Variable) else value)
            if data.shape[:1] != (rows,):
                got = data.shape[0] if data.ndim else 0
                raise SchemaError(
                    f"{where}: the update returned {key!r} with {got} row(s) "
                    f"(shape {data.shape}); it was given {rows}"
                )
            try:
                out[key] = numpy.asarray(_conform(key, data, schema, axis))
            except SchemaError as err:
                raise SchemaError(f"{where}: {err}") from err
        return out


def view_update_task(
    ctx: WriteContext, job: ViewUpdate, plan: PartitionPlan, part: BasePart
) -> tuple[str, int, Any, Any, str | None, Any]:
    """Compute and write the view variables of one partition; returns what the commit needs."""
    written, changes = run_task(ctx, lambda task: _update_one(task, job, plan, part))
    return (*written, changes)


async def _update_one(
    ctx: WriteContext, job: ViewUpdate, plan: PartitionPlan, part: BasePart
) -> tuple[str, int, Any, Any, str | None]:
    spec = ctx.txn.spec
    io = ReadSource(spec, job.overlay_config).io
    axis = job.base.config.axis_variable
    base_path, rows, lo, hi, base_identity = part
    lock = None if spec.transactional else lock_key(plan.canonical)
    async with ctx.txn.writing(plan.canonical, wait=ctx.lock_wait) as done:
        if plan.existing is not None:
            # Under the lock: a concurrent update of this partition committed first is
            # a lost race (re-planned), never a lost variable.
            await _check_unchanged(ctx, plan)
        names = list(job.base_names)
        need_axis = axis not in names and (rows < 0 or lo is None)
        read = names + ([axis] if need_axis else [])
        stop = None if rows < 0 else rows
        base = await job.base.io.read(base_path, read, stop=stop, txn=base_identity)
        if rows < 0:  # a listed base catalog (reference format): the axis was read
            rows = len(base[axis])
        if lo is None and rows and axis in base:
            lo, hi = base[axis].min(), base[axis].max()
        base_txn = (await group_attrs(job.base, base_path) or {}).get(TXN_ATTR)
        # A stale partition (other row count) starts again from fill values.
        kept = plan.existing[0] if plan.existing is not None and plan.existing[1] == rows else None
        stored: dict[str, numpy.ndarray] = {}
        if kept is not None and job.overlay_names:
            stored = await io.read(kept, job.overlay_names, stop=rows)
        given = {v: stored.get(v, fill_array(job.joined, v, rows)) for v in job.overlay_names}
        inputs = {**{k: base[k] for k in names}, **given}
        # Under the lock: the versions the lookup / the halos were taken from.
        base_versions, view_versions = job.depends_on.get(plan.canonical, ((), ()))
        await check_versions(job.base.spec, base_versions)
        await check_versions(spec, view_versions)
        index = None if job.rows is None else row_index(job.rows.get(plan.canonical, ()))
        halo = None if job.halos is None else job.halos.get(plan.canonical)
        head, size = 0, rows
        if index is not None:  # func gets the index's rows only
            inputs, size = {k: v[index] for k, v in inputs.items()}, len(index)
        elif halo is not None:  # func gets the partition extended by its halo
            before, after, pad_b, pad_a = halo
            inputs, head = extend_rows(inputs, before, after, pad_b, pad_a, job.constant)
            size = len(next(iter(inputs.values()))) if inputs else rows
        ds = columns_to_dataset(job.joined, inputs, job.immutable)
        # Off the event loop: it is shared by every task of this process.
        result = await asyncio.to_thread(lambda: job.conform(job.func(ds), size, plan.canonical))
        if halo is not None:
            result = {k: v[head : head + rows] for k, v in result.items()}
        # The variables it did not return (all, for rows it did not get) keep their values.
        missing = [
            v for v in job.variables if v not in stored and (v not in result or index is not None)
        ]
        if kept is not None and missing:
            stored.update(await io.read(kept, missing, stop=rows))
        columns = {v: stored.get(v, fill_array(job.joined, v, rows)) for v in job.variables}
        if index is not None:
            columns = scatter_rows(columns, index, result)
        else:
            columns.update(result)
        attrs = {
            **partition_attrs(job.overlay_config.partitioning.keys, plan.key, ctx.txn.txn),
            BASE_ATTR: {"path": base_path, "rows": rows, "txn": base_txn},
        }
        path = await ctx.txn.claim(plan.canonical)
        if not spec.forked:
            await io.ensure_parents(path)
        await io.write(path, columns, attrs=attrs)
        if job.index_entries is not None:  # the index named: its entry of this version
            identity = {
                "path": base_path,
                "rows": rows,
                "txn": base_txn,
                "view": {"path": path, "rows": rows, "txn": ctx.txn.txn},
            }
            make, wanted = job.index_entries
            every = [p for p, _ in job.joined.walk() if not job.joined[p].immutable]
            need = [
                v
                for v in (every if wanted is None else wanted)
                if v not in columns and v not in base and v in job.base.config.schema
            ]
            if need:
                more = await job.base.io.read(base_path, need, stop=rows, txn=base_identity)
                base = {**base, **more}
            view = {v: a for v, a in base.items() if v in every}
            ds = columns_to_dataset(job.joined, {**view, **columns}, job.immutable)
            await spec.put_many(make(ds, plan.canonical, identity))
        if await ctx.txn.aborted():  # the update failed elsewhere while this task wrote
            await spec.delete_prefix(path)
            raise ConflictError(f"transaction {ctx.txn.txn} was aborted")
        await done()
        return path, rows, lo, hi, lock


def build_update_graph(
    ctx: WriteContext,
    job: ViewUpdate,
    keys: numpy.ndarray,
    plans: Sequence[PartitionPlan],
    parts: Sequence[BasePart],
) -> Delayed:
    """One ``zc-view-update`` task per partition and one ``zc-commit``; computing it commits."""
    token = tokenize(ctx.txn.txn)
    name, commit_name = f"zc-view-update-{token}", f"{COMMIT_PREFIX}{token}"
    ctx_node, job_node = DataNode(None, ctx), DataNode(None, job)
    layer: dict[Any, Any] = {}
    for j, (plan, part) in enumerate(zip(plans, parts, strict=True)):
        layer[(name, j)] = Task((name, j), view_update_task, ctx_node, job_node, plan, part)
    results = List(*(TaskRef((name, j)) for j in range(len(plans))))
    commit_key = (commit_name, 0)
    layer[commit_key] = Task(commit_key, commit_task, ctx_node, keys, results, None)
    watch_lazy_write(ctx, commit_key)
    graph = HighLevelGraph.from_collections(commit_name, layer, dependencies=[])
    return Delayed(commit_key, graph, layer=commit_name)
