"""Write-side tasks of an insert graph: merge-write a partition, the immutable group, commit.

Each function is what one task of the graph runs; it receives a
:class:`WriteContext` (picklable) and plain arrays, and does its I/O through
the one sync bridge.
"""

from __future__ import annotations

import asyncio
import contextvars
import dataclasses
import json
import logging
import threading
import weakref
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any

import numpy
from dask.callbacks import Callback
from zarr.buffer import default_buffer_prototype
from zarr.storage import StorePath

from .._prepare import check_axis, conform_columns
from .._sync import sync
from .._zarr import array_from_metadata, event_loop
from ..catalog import CatalogLog
from ..catalog._discovery import IMMUTABLE_PATH
from ..catalog._log import by_keys
from ..catalog._transaction import (
    LOCK_WAIT,
    TXN_ATTR,
    PutPartitions,
    Transaction,
    lock_key,
)
from ..errors import ConflictError, InvalidInputError, MergeError, SchemaError
from ..merge import AxisRange, MergeStrategy
from ..store import StoreSpec
from ._integrity import RECORD_ATTR, CheckedStore, ChunkRecord, corrupted, record_of
from ._partition import partition_attrs
from ._reader import Part, ReadSource, read_partition

__all__ = [
    "COMMIT_PREFIX",
    "LAZY_WRITE",
    "InsertPlan",
    "PartitionPlan",
    "Version",
    "WriteContext",
    "check_versions",
    "commit_task",
    "immutable_task",
    "merge_write_task",
    "run_task",
    "watch_lazy_commit",
]

_log = logging.getLogger("dask_zcollection")


@dataclasses.dataclass(frozen=True, eq=False)
class WriteContext:
    """What every write task needs: where, how to merge, and the transaction."""

    source: ReadSource
    txn: Transaction
    strategy: MergeStrategy
    variables: tuple[str, ...]
    #: A lazy write (``compute=False``): its failing task aborts (see :func:`_aborting_on_error`).
    abort_in_tasks: bool = False

    @property
    def lock_wait(self) -> float:
        """Seconds a task waits for a partition lock a live writer holds (:data:`LOCK_WAIT`).

        A lazy write's holder may be a graph of the same compute, its commit due;
        an eager write fails at once and retries.
        """
        return LOCK_WAIT if self.abort_in_tasks else 0.0

    def on(self, spec: StoreSpec) -> WriteContext:
        """The same context writing through ``spec`` (a task's own fork session)."""
        if spec is self.txn.spec:
            return self
        return dataclasses.replace(
            self,
            source=dataclasses.replace(self.source, spec=spec),
            txn=dataclasses.replace(self.txn, spec=spec),
        )


@dataclasses.dataclass(frozen=True, slots=True)
class PartitionPlan:
    """The plan of one destination partition.

    Attributes
    ----------
    key : tuple of int
        Partition key values.
    canonical : str
        Canonical path (``year=2024/month=03``).
    existing : Part or None
        The committed partition (path, rows, True) when there is one.
    stored : AxisRange or None
        Its axis statistics.
    read_existing : bool
        Whether the merge needs the stored rows.
    append : bool
        Whether the new rows can be appended in place (after every stored row).
    """

    key: tuple[int, ...]
    canonical: str
    existing: Part | None
    stored: AxisRange | None
    read_existing: bool
    append: bool


@dataclasses.dataclass(frozen=True, slots=True)
class InsertPlan:
    """Everything the graph needs, computed on the client.

    Attributes
    ----------
    keys : numpy.ndarray
        ``(n, k)`` keys of the destination partitions, in key order.
    partitions : list of PartitionPlan
        One per destination partition.
    rows : list of numpy.ndarray
        Global row positions of each destination partition, in input order.
    """

    keys: numpy.ndarray
    partitions: list[PartitionPlan]
    rows: list[numpy.ndarray]


def _gather_rows(
    pieces: Sequence[Sequence[Any]], indices: Sequence[numpy.ndarray], n_vars: int
) -> list[numpy.ndarray]:
    """Rows of one partition, taken from every input chunk that holds some."""
    out = []
    for v in range(n_vars):
        parts = [numpy.asarray(chunk[v])[idx] for chunk, idx in zip(pieces, indices, strict=True)]
        out.append(parts[0] if len(parts) == 1 else numpy.concatenate(parts))
    return out


#: Name prefix of every write graph's commit task (:func:`commit_task`; its first
#: argument is the WriteContext).
COMMIT_PREFIX = "zc-commit-"
#: Set while a lazy write (``compute=False``) is planned: its graph's tasks abort on failure.
LAZY_WRITE: contextvars.ContextVar[bool] = contextvars.ContextVar("zc_lazy_write", default=False)
#: Seconds a failed task's abort waits before putting its marker.
_TASK_ABORT_DELAY = 0.1
#: Aborts started by failed tasks, referenced until they end.
_ABORTS: set[asyncio.Future[None]] = set()


async def _aborting_on_error[T](step: Awaitable[T], ctx: WriteContext) -> T:
    """Run a write task's ``step``; when it fails in a lazy write, abort its transaction.

    A scheduler never runs the commit task of a graph one of whose tasks
    raised: nothing else would abort a lazy write, and its partition locks and
    lease would block every writer of those partitions until recovery judged
    it dead (up to an hour while this process lives). The abort runs beside
    the task, which raises at once: its error, not the ``ConflictError`` of a
    sibling task seeing the abort marker, is the one the compute raises. The
    abort waits for the tasks still writing, releases only this
    transaction's locks and never deletes what a catalog names. An eager
    write is aborted by its caller after the graph.
    """
    try:
        return await step
    except BaseException:
        txn = ctx.txn
        if ctx.abort_in_tasks and not txn.spec.transactional:
            future = asyncio.ensure_future(_abort_once(txn))
            _ABORTS.add(future)
            future.add_done_callback(_ABORTS.discard)
        raise


def run_task[T](ctx: WriteContext, step: Callable[[WriteContext], Awaitable[T]]) -> tuple[T, Any]:
    """Run ``step`` as one write task of ``ctx``'s graph: returns its result and changes.

    ``step`` gets the context of the task's own spec (a fork session on a
    cluster, Icechunk); ``changes`` are what the commit merges (else ``None``).
    A failing ``step`` of a lazy write aborts the transaction
    (:func:`_aborting_on_error`).
    """
    spec = ctx.txn.spec.task_spec()
    try:
        result = sync(_aborting_on_error(step(ctx.on(spec)), ctx))
    finally:
        changes = spec.end_task()
    return result, changes


async def _abort_once(txn: Transaction) -> None:
    """Abort ``txn`` unless an abort or recovery of it runs (best effort: recovery ends it)."""
    if txn.txn in _ABORTING:  # this process aborts it already (a task and the watch)
        return
    _ABORTING.add(txn.txn)
    try:
        # The failing task's error reaches the scheduler first: a sibling task seeing the
        # marker raises a ConflictError, which would otherwise often be the one reported.
        await asyncio.sleep(_TASK_ABORT_DELAY)
        if await txn.claim_abort():  # one abort, whichever process sees the failure first
            await txn.abort()
    except Exception as err:
        _log.warning("abort of the lazy write %s failed: %s", txn.txn, err)
    finally:
        _ABORTING.discard(txn.txn)


#: Transactions this process is aborting (started by a failed task or a failed compute).
_ABORTING: set[str] = set()
#: The commit task key of each lazy write graph built here and still referenced.
_LAZY_COMMITS: weakref.WeakValueDictionary[Any, WriteContext] = weakref.WeakValueDictionary()
#: Planning (the library's loop) and a failed compute (its caller's thread) both use it.
_LAZY_LOCK = threading.Lock()


class _FailedComputeWatch(Callback):
    """Aborts the lazy writes of a failed local compute whose commit task never ran.

    A task failing *before* the write tasks (the input: a chunk of a dask array
    that raises) runs nothing of the write's graph, or only the write tasks of
    the other partitions, which keep their locks for the commit. No task of
    ours can abort then; the local schedulers (threads, sync, processes) call
    this once the compute has failed, in the process that computed it.
    """

    def _finish(self, dsk: Mapping[Any, Any], state: Mapping[str, Any], errored: bool) -> None:
        if not errored:
            return
        # A commit task still running publishes or aborts by itself: an abort beside it
        # could read the catalog before the commit lands and delete what it published.
        over = state.get("finished", set()) | state.get("running", set())
        with _LAZY_LOCK:
            lazy = list(_LAZY_COMMITS.items())
        for key, ctx in lazy:
            if key in dsk and key not in over:
                abort_lazy(ctx)


def abort_lazy(ctx: WriteContext) -> None:
    """Start aborting the lazy write of ``ctx`` whose commit task will never run; returns at once.

    For a watch that learns of the failure outside the write's tasks; the
    abort runs on the library's event loop (best effort: recovery finishes it).
    """
    if ctx.abort_in_tasks and not ctx.txn.spec.transactional:
        asyncio.run_coroutine_threadsafe(_abort_once(ctx.txn), event_loop())


_WATCH = _FailedComputeWatch()


def watch_lazy_commit(ctx: WriteContext, key: Any) -> None:
    """Have a failed local compute of the lazy write graph whose commit task is ``key`` abort it.

    See :class:`_FailedComputeWatch`. The watch is a ``dask.callbacks``
    callback registered (once) in this process by the first lazy write; it
    does nothing for a compute that succeeds or holds no lazy write.
    """
    if not ctx.abort_in_tasks:
        return
    with _LAZY_LOCK:
        _LAZY_COMMITS[key] = ctx
    # dask swaps the set out while a local compute runs (its tasks' own computes see
    # none): add it again when it is missing.
    Callback.active.add(_WATCH._callback)


def merge_write_task(
    ctx: WriteContext,
    plan: PartitionPlan,
    pieces: Sequence[Sequence[Any]],
    indices: Sequence[numpy.ndarray],
) -> tuple[str, int, Any, Any, str | None, Any]:
    """Merge the inserted rows of one partition with the stored ones and write the result aside.

    Returns
    -------
    tuple
        ``(path, rows, axis_min, axis_max, lock, changes)`` for the commit;
        ``changes`` are the task's fork session on a cluster (Icechunk), else ``None``.
    """
    inserted = dict(
        zip(ctx.variables, _gather_rows(pieces, indices, len(ctx.variables)), strict=True)
    )
    written, changes = run_task(ctx, lambda task: _merge_write(task, plan, inserted))
    return (*written, changes)


async def _merge_write(
    ctx: WriteContext, plan: PartitionPlan, inserted: dict[str, numpy.ndarray]
) -> tuple[str, int, Any, Any, str | None]:
    axis = ctx.source.config.axis_variable
    io = ctx.source.io
    spec = ctx.txn.spec
    lock = None if spec.transactional else lock_key(plan.canonical)
    attrs = partition_attrs(ctx.source.config.partitioning.keys, plan.key, ctx.txn.txn)
    # One writer at a time writes a partition; the others retry (a dead holder's lock
    # is recovered). New partitions are locked too: their canonical path may hold a
    # retired version being collected.
    async with ctx.txn.writing(plan.canonical, wait=ctx.lock_wait) as done:
        if plan.existing is not None:
            # Holding the lock, the planned version cannot be superseded any more; but it
            # may have been before: then this is a lost race, not an error.
            await _check_unchanged(ctx, plan)
        # The versions the strategy's input was taken from (an index lookup, halos).
        await check_versions(
            ctx.txn.spec, getattr(ctx.strategy, "depends_on", {}).get(plan.canonical)
        )
        if plan.append and plan.existing is not None and plan.stored is not None:
            merged = merge_checked(ctx, plan, None, inserted)
            if await _append(ctx, plan.existing, plan.stored.count, merged):
                if await ctx.txn.aborted():  # rows past the committed count stay invisible
                    raise ConflictError(f"transaction {ctx.txn.txn} was aborted")
                await done()
                values = merged[axis]
                n = plan.stored.count + len(values)
                lo = plan.stored.min if plan.stored.count else values.min()
                hi = values.max() if len(values) else plan.stored.max
                return plan.existing[0], n, lo, hi, lock
        existing = None
        if (plan.read_existing or plan.append) and plan.existing is not None:
            existing = await read_partition(ctx.source, plan.existing, io.partitioned)
        merged = merge_checked(ctx, plan, existing, inserted)
        path = await ctx.txn.claim(plan.canonical)
        if not spec.forked:  # forks creating one parent conflict: the commit creates them
            await io.ensure_parents(path)
        await io.write(path, merged, attrs=attrs)
        entries = getattr(ctx.strategy, "entries", None)
        if entries is not None:  # a stored index's entry of this version (update(index=))
            identity = {"path": path, "rows": len(merged[axis]), "txn": ctx.txn.txn}
            await spec.put_many(entries(merged, plan.canonical, identity))
        if await ctx.txn.aborted():  # the insert failed elsewhere while this task wrote
            await spec.delete_prefix(path)
            raise ConflictError(f"transaction {ctx.txn.txn} was aborted")
        await done()
        values = merged[axis]
        n = len(values)
        return path, n, values.min() if n else None, values.max() if n else None, lock


def merge_checked(
    ctx: WriteContext,
    plan: PartitionPlan,
    existing: dict[str, numpy.ndarray] | None,
    inserted: dict[str, numpy.ndarray],
) -> dict[str, numpy.ndarray]:
    """Run the merge strategy and check its result (:func:`check_merged`).

    Raises
    ------
    MergeError
        From the strategy or the check, naming the partition.
    """
    axis = ctx.source.config.axis_variable
    try:
        merged = ctx.strategy(existing, inserted, axis=axis)
    except InvalidInputError as err:
        name = getattr(ctx.strategy, "name", ctx.strategy)
        raise type(err)(f"merge strategy {name!r} on partition {plan.canonical!r}: {err}") from err
    return check_merged(ctx, plan, merged)


def check_merged(ctx: WriteContext, plan: PartitionPlan, merged: Any) -> dict[str, numpy.ndarray]:
    """Hold a merge strategy's result to what an insert accepts, before anything is written.

    The schema as for insert input (:func:`~dask_zcollection._prepare.conform_columns`:
    the same variables, dtypes or safe casts, shapes, masks), then what the
    partition needs: an axis without NaT/NaN, sorted, and every row inside
    this partition's key.

    Raises
    ------
    MergeError
        Naming the strategy, the partition and the variable; the insert aborts.
    """
    config = ctx.source.config
    axis = config.axis_variable
    partitioning = config.partitioning
    try:
        if not isinstance(merged, Mapping):
            raise SchemaError(
                f"expected a mapping of variable to array, got {type(merged).__name__}"
            )
        columns = conform_columns(
            merged, config.schema, config.axis, keys={axis, *partitioning.variables}
        )
        values = columns[axis]
        check_axis(axis, values)
        if len(values) > 1 and (values[1:] < values[:-1]).any():
            first = int(numpy.flatnonzero(values[1:] < values[:-1])[0]) + 1
            raise SchemaError(f"axis variable {axis!r} is not sorted (row {first} goes back)")
        if len(values):
            attrs = {v: config.schema[v].attrs for v in partitioning.variables}
            key = numpy.asarray(plan.key, dtype="int64")
            if tuple(partitioning.variables) == (axis,) and partitioning.name == "date":
                # Dates map a sorted axis to non-decreasing keys: its ends decide.
                ends, _ = partitioning.split({axis: values[[0, -1]]}, attrs)
                if (ends == key).all():
                    return columns
            found, inverse = partitioning.split(
                {v: columns[v] for v in partitioning.variables}, attrs
            )
            outside = (found != key).any(axis=1)[inverse]
            if outside.any():
                first = int(numpy.flatnonzero(outside)[0])
                other = partitioning.encode(tuple(int(k) for k in found[inverse[first]]))
                raise SchemaError(
                    f"{int(outside.sum())} row(s) belong to another partition (first: row "
                    f"{first}, in {other!r})"
                )
    except InvalidInputError as err:
        name = getattr(ctx.strategy, "name", ctx.strategy)
        raise MergeError(f"merge strategy {name!r} on partition {plan.canonical!r}: {err}") from err
    return columns


async def _check_unchanged(ctx: WriteContext, plan: PartitionPlan) -> None:
    """The committed partition is still the planned one (checked under its lock)."""
    assert plan.existing is not None and plan.stored is not None
    key = numpy.array([plan.key], dtype="int64")
    latest = await CatalogLog(ctx.txn.spec).latest(by_keys(key))  # its segment only
    pos = int(latest.find(key)[0]) if latest is not None else -1
    committed = None if latest is None or pos < 0 else (latest.paths[pos], int(latest.rows[pos]))
    if committed != (plan.existing[0], plan.stored.count):
        raise ConflictError(
            f"partition {plan.canonical!r} changed since the insert was planned; retry"
        )


#: A partition version a write task's input came from: canonical path, key, the
#: version's path (``None``: no partition was committed there), its committed rows
#: and the ``_zc_txn`` of its group (``None``: none).
Version = tuple[str, tuple[int, ...], str | None, int, str | None]


async def check_versions(spec: StoreSpec, versions: Sequence[Version] | None) -> None:
    """Each partition of ``versions`` is still the committed version it names.

    A write task calls it before writing, when part of its input was read (or
    looked up) while planning: an index's row ranges, the halo rows of its
    neighbours. The partition rewritten since is a lost race (re-planned).

    Raises
    ------
    ConflictError
        Naming the partition that changed.
    """
    if not versions:
        return
    keys = numpy.array([v[1] for v in versions], dtype="int64")
    latest = await CatalogLog(spec).latest(by_keys(keys))  # their segments only
    pos = latest.find(keys) if latest is not None else numpy.full(len(keys), -1)

    async def txn_of(path: str) -> str | None:
        raw = await spec.get(f"{path}/zarr.json")
        txn = None if raw is None else json.loads(raw).get("attributes", {}).get(TXN_ATTR)
        return None if txn is None else str(txn)

    committed = [
        None if latest is None or p < 0 else (latest.paths[p], int(latest.rows[p]))
        for p in pos.tolist()
    ]
    txns = await asyncio.gather(
        *(txn_of(c[0]) if c is not None else asyncio.sleep(0) for c in committed)
    )
    for (canonical, _, path, rows, txn), now, now_txn in zip(
        versions, committed, txns, strict=True
    ):
        if path is None:  # the input saw no committed partition there
            changed = now is not None
        else:
            changed = (
                now is None or now[0] != path or (rows >= 0 and now[1] != rows) or now_txn != txn
            )
        if changed:
            raise ConflictError(
                f"partition {canonical!r} of {spec.url} changed since the update was planned "
                "(its input was read from the version before); retry"
            )


async def _append(
    ctx: WriteContext, existing: Part, offset: int, rows: dict[str, numpy.ndarray]
) -> bool:
    """Write ``rows`` after the ``offset`` committed rows of a partition, in place.

    Readers trust the committed row count, so the rows written here stay
    invisible until the commit; only the last partial chunk is rewritten.
    Returns ``False`` (nothing written) when the partition is stored with
    shorter chunks than the grown one would have (a partition shorter than one
    chunk is one chunk of its length): it is then rewritten aside, cheaply,
    since it holds less than a chunk.
    """
    store = ctx.source.spec.zarr_store()
    io = ctx.source.io
    path = existing[0]
    prototype = default_buffer_prototype()
    raws = await asyncio.gather(
        *(store.get(f"{path}/{name}/zarr.json", prototype=prototype) for name in rows)
    )
    metas = {}
    records = {}
    for (name, data), raw in zip(rows.items(), raws, strict=True):
        assert raw is not None
        meta = json.loads(raw.to_bytes())
        records[name] = ChunkRecord.of(meta)  # of the stored shape (None: none kept)
        grown = [offset + len(data), *meta["shape"][1:]]
        wanted = (await io.template(name, grown))["chunk_grid"]["configuration"]["chunk_shape"]
        if meta["chunk_grid"]["configuration"]["chunk_shape"] != wanted:
            return False
        meta["shape"] = grown
        metas[name] = meta

    def put_meta(key: str, meta: dict[str, Any], record: ChunkRecord | None) -> Any:
        if record is not None:
            meta = {**meta, "attributes": {**meta["attributes"], RECORD_ATTR: record.to_json()}}
        return store.set(f"{key}/zarr.json", prototype.buffer.from_bytes(json.dumps(meta).encode()))

    async def one(name: str, data: numpy.ndarray) -> None:
        key = f"{path}/{name}"
        meta = metas[name]
        old = records[name]  # None: an array written without a record stays so
        # The record first says every chunk from the one holding the committed end on
        # is being rewritten (digest unknown): a reader, or a crash, between the chunk
        # writes and the final record then never sees a chunk the record rejects.
        rows = int(meta["chunk_grid"]["configuration"]["chunk_shape"][0])
        grown = None if old is None else old.grown(meta, offset // rows)
        await put_meta(key, meta, grown)
        # The reads of zarr's read-modify-write of the last chunk are checked against
        # the committed record; the chunks it writes are noted for the final record.
        checked = CheckedStore(store, key, meta, old)
        arr = array_from_metadata(meta, StorePath(checked, key), {"write_empty_chunks": True})
        if len(data):
            try:
                await arr.setitem(slice(offset, offset + len(data)), data)
            except (ValueError, RuntimeError) as err:  # the stored last chunk is damaged
                raise corrupted(key, f"cannot append to array {key!r}: {err}") from err
        if grown is not None:
            await put_meta(key, meta, record_of(meta, checked.written, base=grown))

    await asyncio.gather(*(one(name, data) for name, data in rows.items()))
    return True


def immutable_task(ctx: WriteContext, arrays: dict[str, Any]) -> tuple[str, Any]:
    """Write the immutable variables (first insert only); returns their group path, changes."""

    async def run(ctx: WriteContext) -> str:
        path = await ctx.txn.claim(IMMUTABLE_PATH)
        # Stamp the transaction (as partitions are): abort/recover recognise the claim
        # by it, and readers never take it for a reference-format ``_immutable``.
        await ctx.source.io.write(
            path, {k: numpy.asarray(v) for k, v in arrays.items()}, attrs={TXN_ATTR: ctx.txn.txn}
        )
        return path

    return run_task(ctx, run)


def commit_task(
    ctx: WriteContext,
    keys: numpy.ndarray,
    results: Sequence[tuple[str, int, Any, Any, str | None, Any]],
    immutable: tuple[str, Any] | None,
) -> list[str]:
    """Publish every written partition at once (one catalog version); returns canonical paths."""
    dtype = ctx.source.config.schema[ctx.source.config.axis_variable].dtype
    zero = numpy.zeros((), dtype)
    change = PutPartitions(
        keys=keys,
        paths=tuple(r[0] for r in results),
        rows=numpy.array([r[1] for r in results], dtype="int64"),
        axis_min=numpy.array([zero if r[2] is None else r[2] for r in results], dtype=dtype),
        axis_max=numpy.array([zero if r[3] is None else r[3] for r in results], dtype=dtype),
        txn=ctx.txn.txn,
    )

    async def run() -> list[str]:
        try:
            # The tasks' forks (Icechunk on a cluster) merged into one session.
            changes = [r[5] for r in results] + ([immutable[1]] if immutable else [])
            txn = ctx.txn if not ctx.txn.spec.forked else ctx.on(ctx.txn.spec.absorb(changes)).txn
            reads = tuple(getattr(ctx.strategy, "reads", ()))
            if reads:  # what the tasks' input was read from: still committed as read
                txn = dataclasses.replace(txn, reads=reads)
            if ctx.txn.spec.forked:
                io = ctx.on(txn.spec).source.io
                for path in change.paths:
                    await io.ensure_parents(path)
            # Releases the partition locks (those this transaction holds) once published.
            async with txn.alive():
                await txn.commit(change, immutable=immutable[0] if immutable else None)
        except BaseException:
            # Not published: abort (what a conflict, a cancelled or a failed commit wrote,
            # its locks, its lease), as the eager path does after the graph.
            await asyncio.shield(ctx.txn.abort())
            raise
        encode = ctx.source.config.partitioning.encode
        return [encode(tuple(int(x) for x in k)) for k in keys]

    return sync(run())
