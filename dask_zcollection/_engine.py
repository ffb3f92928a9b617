"""The async engine of a collection: open, list, read, insert, drop, repair.

Everything here is a coroutine; :mod:`dask_zcollection.api` wraps it for
sync callers and :mod:`dask_zcollection.aio` republishes it. The Dask graphs
(read and write paths) call these same coroutines per partition.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import random
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, Literal

import numpy

from ._prepare import Prepared, check_axis, prepare_insert
from ._repair import RepairReport, repair
from ._update import UpdateStrategy
from .catalog import CATALOG_DIR, Catalog, CatalogLog
from .catalog._transaction import (
    LEASE_DIR,
    DropPartitions,
    Transaction,
    collect_garbage,
    new_txn_id,
    recover,
)
from .data import Dataset
from .errors import (
    AlreadyExistsError,
    CollectionNotFoundError,
    ConflictError,
    InvalidInputError,
    ReadOnlyError,
    SchemaError,
)
from .io import (
    CONFIG_KEY,
    CollectionConfig,
    PartitionIO,
    VerifyReport,
    default_axis_variable,
    forget_collection,
    read_config,
    write_config,
)
from .merge import AxisRange, MergeLike, resolve
from .partitioning import Partitioning, compile_filter
from .partitioning._filter import FilterLike
from .schema import Schema
from .store import StoreLike, StoreSpec, check_clearable, resolve_store

if TYPE_CHECKING:
    from .collection import LazyCollection

__all__ = ["IMMUTABLE_PATH", "AsyncCollection", "create_collection", "open_collection"]

IMMUTABLE_PATH = "_immutable"
Mode = Literal["r", "rw"]
_KEY_ATTR = "_zc_partition_key"
#: Partitions written concurrently by one eager insert.
WRITE_CONCURRENCY = 8
#: Partitions :meth:`AsyncCollection.verify` reads at once.
VERIFY_CONCURRENCY = 2
#: Times an insert is re-planned after losing a commit race on the same partitions.
DEFAULT_RETRIES = 3


class AsyncCollection:
    """A partitioned collection (async API). Use :func:`open_collection` to get one."""

    def __init__(self, spec: StoreSpec, config: CollectionConfig, mode: Mode = "r") -> None:
        self.spec = spec
        self.config = config
        self.mode: Mode = mode
        self.io = PartitionIO(spec, config.schema, config.axis)
        self.log = CatalogLog(spec)
        self._catalog: Catalog | None = None

    # -- properties ------------------------------------------------------------------------
    @property
    def url(self) -> str:
        """URL of the collection root."""
        return self.spec.url

    @property
    def schema(self) -> Schema:
        """The collection schema."""
        return self.config.schema

    @property
    def partitioning(self) -> Partitioning:
        """How rows map to partitions."""
        return self.config.partitioning

    @property
    def axis(self) -> str:
        """The partitioned dimension."""
        return self.config.axis

    @property
    def axis_variable(self) -> str:
        """The variable whose min/max the catalog records."""
        return self.config.axis_variable

    def __repr__(self) -> str:
        n = len(self._catalog) if self._catalog is not None else "?"
        return (
            f"<{type(self).__name__} {self.url!r} mode={self.mode!r} "
            f"partitioning={self.partitioning!r} partitions={n}>"
        )

    # -- catalog -----------------------------------------------------------------------------
    async def catalog(self, *, refresh: bool = False) -> Catalog:
        """The committed partition index (cached; ``refresh=True`` re-reads it)."""
        if self._catalog is None or refresh:
            await self.spec.refresh()
            self._catalog = await self._load_catalog()
        return self._catalog

    def _empty_catalog(self) -> Catalog:
        return Catalog.empty(self.partitioning.keys, self.schema[self.axis_variable].dtype)

    async def _load_catalog(self) -> Catalog:
        latest = await self.log.latest()
        if latest is not None:
            return latest
        paths = await self.log.legacy_paths()
        if paths is None:
            paths = await self._walk()
        return self._listed_catalog(paths)

    def _listed_catalog(self, paths: Sequence[str]) -> Catalog:
        """A catalog without stats from partition paths (reference state.json or a walk)."""
        if not paths:
            return self._empty_catalog()
        keys = numpy.array(
            [self.partitioning.decode(p.partition("@")[0]) for p in paths], dtype="int64"
        )
        catalog = self._empty_catalog()
        n = len(paths)
        dtype = catalog.axis_min.dtype
        catalog = catalog.with_partitions(
            keys, list(paths), numpy.full(n, -1), numpy.zeros(n, dtype), numpy.zeros(n, dtype)
        )
        return dataclasses.replace(catalog, has_stats=False)

    async def _walk(self, prefer: frozenset[str] = frozenset()) -> list[str]:
        """List partition groups by walking the tree (collections without a catalog).

        Of several versions of a partition, one in ``prefer`` (the paths the
        committed catalog names) wins, else the newest transaction's.
        """
        depth = len(self.partitioning.keys)
        level = [""]
        for _ in range(depth):
            children = await asyncio.gather(*(self.spec.list_dir(p) for p in level))
            level = [
                f"{parent}/{name}" if parent else name
                for parent, names in zip(level, children, strict=True)
                for name in names
                if "=" in name and not name.startswith((".", "_"))
            ]
        # Keep committed-looking groups only (a crashed claim is marked pending).
        metas = await asyncio.gather(*(self.spec.get(f"{p}/zarr.json") for p in level))
        best: dict[str, tuple[str, str]] = {}
        for path, raw in zip(level, metas, strict=True):
            if raw is None:
                continue
            attrs = json.loads(raw).get("attributes", {})
            if attrs.get("_zc_pending"):
                continue
            canonical, _, txn = path.partition("@")
            rank = "\uffff" if path in prefer else str(attrs.get("_zc_txn", txn))
            if canonical not in best or rank > best[canonical][0]:
                best[canonical] = (rank, path)
        return [p for _, p in best.values()]

    async def _with_stats(self, catalog: Catalog) -> Catalog:
        """Fill in row counts and axis min/max of a listed catalog (reads the axis)."""
        if catalog.has_stats:
            return catalog
        stats = await asyncio.gather(
            *(self.io.axis_stats(p, self.axis_variable) for p in catalog.paths)
        )
        dtype = catalog.axis_min.dtype
        rows = numpy.array([s[0] for s in stats], dtype="int64")
        lo = numpy.array([s[1] if s[0] else numpy.zeros((), dtype) for s in stats], dtype=dtype)
        hi = numpy.array([s[2] if s[0] else numpy.zeros((), dtype) for s in stats], dtype=dtype)
        return dataclasses.replace(catalog, rows=rows, axis_min=lo, axis_max=hi, has_stats=True)

    async def _writable_base(self, listed: Catalog | None = None) -> Catalog:
        """The newest catalog, with stats, for a write to plan and commit against.

        A collection written by the reference implementation has no catalog of
        ours (version 0, listed from ``_catalog/state.json`` or a walk): its
        listed catalog (or ``listed``) is first published as version 1, so the
        commit protocol has a version to race on.
        """
        base = await self.catalog(refresh=True)
        if base.version > 0:
            return await self._with_stats(base)
        base = listed if listed is not None else await self._with_stats(base)
        immutable = IMMUTABLE_PATH if await self._unnamed_immutable(listed=True) else None
        adopted = dataclasses.replace(base, version=0)
        await self.log.initialise()
        await self.log.versions()  # numbered past damaged versions, if any
        adopted = self.log.numbered(adopted.next_version(new_txn_id(), immutable=immutable))
        if not await self.log.commit(adopted):  # another writer adopted it first
            latest = await self.log.latest()
            assert latest is not None
            adopted = await self._with_stats(latest)
        self._catalog = adopted
        return adopted

    async def select(self, filters: FilterLike = None) -> Catalog:
        """The sub-catalog of the partitions matching ``filters``."""
        catalog = await self.catalog(refresh=True)
        predicate = compile_filter(filters, self.partitioning.keys)
        if predicate is None:
            return catalog
        return catalog.take(predicate(catalog.columns))

    async def partitions(self, filters: FilterLike = None) -> list[str]:
        """Canonical paths (``year=2024/month=03``) of the partitions, in key order."""
        selected = await self.select(filters)
        return [self.partitioning.encode(selected.key_tuple(i)) for i in range(len(selected))]

    # -- read --------------------------------------------------------------------------------
    async def read_partition(
        self, catalog: Catalog, i: int, variables: Sequence[str] | None = None
    ) -> dict[str, numpy.ndarray]:
        """Read the partitioned variables of partition ``i`` of ``catalog``."""
        rows = int(catalog.rows[i])
        return await self.io.read(catalog.paths[i], variables, stop=None if rows < 0 else rows)

    async def read_immutable(
        self, catalog: Catalog, variables: Sequence[str] | None = None
    ) -> dict[str, numpy.ndarray]:
        """Read the immutable variables (empty when none were written)."""
        names = (
            self.io.immutable
            if variables is None
            else [v for v in variables if v in self.io.immutable]
        )
        path = catalog.immutable
        listed = catalog.version == 0
        if path is None and names and await self._unnamed_immutable(listed=listed):
            path = IMMUTABLE_PATH  # reference-format collection, or a lost catalog
        if path is None or not names:
            return {}
        return await self.io.read_immutable(path, names)

    async def _unnamed_immutable(self, *, listed: bool) -> bool:
        """Whether ``_immutable/`` holds a group to trust although no catalog names it.

        A reference-format group (no ``_zc_txn``) always; one of ours (stamped
        ``_zc_txn``) only when the catalog is listed from the tree (never
        written, or lost), as partitions found by a walk are; a pending claim never.
        """
        raw = await self.spec.get(f"{IMMUTABLE_PATH}/zarr.json")
        if raw is None:
            return False
        attrs = json.loads(raw).get("attributes", {})
        if attrs.get("_zc_pending"):
            return False
        return listed or "_zc_txn" not in attrs

    def _check_variables(self, variables: Sequence[str] | None) -> list[str] | None:
        if variables is None:
            return None
        if isinstance(variables, str):
            variables = [variables]
        if not isinstance(variables, Sequence | set | frozenset) or not all(
            isinstance(v, str) for v in variables
        ):
            raise InvalidInputError(
                f"variables must be a list of variable paths, got {variables!r}"
            )
        out = []
        for v in variables:
            key = v.strip("/")
            self.schema[key]  # raises VariableNotFoundError naming it
            out.append(key)
        return out

    async def lazy(
        self, *, filters: FilterLike = None, variables: Sequence[str] | None = None
    ) -> LazyCollection:
        """The lazy Dask collection over the current catalog (see :func:`read_collection`)."""
        from .collection import collection_from

        names = self._check_variables(variables)
        spec = await self.spec.pinned()  # a read-only spec workers can open
        return collection_from(spec, self.config, await self.catalog(refresh=True), names, filters)

    async def query(
        self, *, filters: FilterLike = None, variables: Sequence[str] | None = None
    ) -> Dataset | None:
        """Read the selected partitions eagerly; ``None`` when nothing matches.

        Runs the lazy read path (one engine): the graph is computed on a
        thread so its tasks can use this event loop.
        """
        lazy = await self.lazy(filters=filters, variables=variables)
        return await asyncio.to_thread(lazy.compute)

    # -- write -------------------------------------------------------------------------------
    def _check_writable(self) -> None:
        if self.mode != "rw":
            raise ReadOnlyError(f"collection {self.url} is open read-only; open it with mode='rw'")

    async def insert(
        self,
        data: Any,
        *,
        merge: MergeLike = None,
        retries: int = DEFAULT_RETRIES,
        compute: bool = True,
    ) -> Any:
        """Insert ``data``, merging with stored partitions through ``merge``.

        Builds one graph (see :mod:`dask_zcollection.expr._write`): one
        merge-write task per destination partition and one commit.

        Parameters
        ----------
        compute : bool
            ``False`` returns the graph as a :class:`dask.delayed.Delayed` to
            compute later (alone or inside a larger ``dask.compute``).

        Returns
        -------
        list of str or Delayed
            Canonical paths of the partitions written (or the lazy insert).

        Raises
        ------
        SchemaError
            When the data does not match the schema (nothing is written).
        ConflictError
            When concurrent writers kept changing the same partitions.
        """
        self._check_writable()
        strategy = resolve(merge)
        keys = {self.axis_variable, *self.partitioning.variables}
        prepared = prepare_insert(data, self.schema, self.axis, keys=keys)
        return await self._run_graph(
            lambda: self._plan_insert(prepared, strategy), retries=retries, compute=compute
        )

    async def _run_graph(
        self,
        plan: Callable[[], Awaitable[tuple[Any, Transaction] | None]],
        *,
        retries: int,
        compute: bool,
    ) -> Any:
        """Plan and run a write graph; abort and re-plan on a lost race, abort on failure."""
        if isinstance(retries, bool) or not isinstance(retries, int) or retries < 0:
            raise InvalidInputError(f"retries must be an int >= 0, got {retries!r}")
        for attempt in range(retries + 1):
            planned = await plan()
            if planned is None:
                return []
            delayed, txn = planned
            if not compute:
                return delayed
            try:
                # Off the event loop: the graph's tasks use this loop for their I/O.
                # A backend whose writes cannot leave this process (Icechunk's
                # session, memory://) runs them on its threads, even under a
                # distributed client.
                scheduler = None if txn.spec.shippable() else "threads"
                async with txn.alive(final=True):  # heartbeats while the graph runs
                    written: list[str] = await asyncio.to_thread(
                        delayed.compute, scheduler=scheduler
                    )
            except ConflictError:
                await txn.abort()
                if attempt == retries:
                    raise
                await asyncio.sleep(random.uniform(0.01, 0.05) * 2**attempt)
                continue
            except BaseException:
                await asyncio.shield(txn.abort())
                raise
            self._catalog = None
            return written
        raise AssertionError("unreachable")

    async def update(
        self,
        func: Callable[..., Any],
        *,
        filters: FilterLike = None,
        variables: Sequence[str] | None = None,
        retries: int = DEFAULT_RETRIES,
        compute: bool = True,
    ) -> Any:
        """Rewrite variables of the selected partitions with ``func(partition) -> Dataset``.

        ``func`` receives each partition as a :class:`Dataset` (``variables``
        only, when given) and returns the variables to replace (a ``Dataset``
        or a mapping path -> array, same rows). Each partition is rewritten
        aside and all are published by one commit, as for :meth:`insert`.

        Returns
        -------
        list of str or Delayed
            Canonical paths of the partitions rewritten (or the lazy update).
        """
        self._check_writable()
        if not callable(func):
            raise InvalidInputError(f"update needs a function, got {type(func).__name__}")
        names = self._check_variables(variables)
        strategy = UpdateStrategy(func, None if names is None else tuple(names), self.schema)
        return await self._run_graph(
            lambda: self._plan_update(filters, strategy), retries=retries, compute=compute
        )

    async def _plan_update(
        self, filters: FilterLike, strategy: Any
    ) -> tuple[Any, Transaction] | None:
        from .expr._write import InsertPlan, build_insert_graph
        from .io import ReadSource
        from .io._writer import PartitionPlan

        base = await self._with_stats(await self.catalog(refresh=True))
        predicate = compile_filter(filters, self.partitioning.keys)
        selected = base if predicate is None else base.take(predicate(base.columns, size=len(base)))
        if not len(selected):
            return None
        encode = self.partitioning.encode
        plans = [
            PartitionPlan(
                key=selected.key_tuple(i),
                canonical=encode(selected.key_tuple(i)),
                existing=(selected.paths[i], int(selected.rows[i]), True),
                stored=AxisRange(selected.axis_min[i], selected.axis_max[i], int(selected.rows[i])),
                read_existing=True,
                append=False,
            )
            for i in range(len(selected))
        ]
        txn = await self._begin(base, selected.keys, [p.canonical for p in plans])
        empty = numpy.empty(0, dtype="intp")
        plan = InsertPlan(keys=selected.keys, partitions=plans, rows=[empty] * len(plans))
        delayed = build_insert_graph(
            ReadSource(txn.spec, self.config), txn, strategy, plan, {}, None
        )
        return delayed, txn

    async def _begin(
        self, base: Catalog, keys: numpy.ndarray, canonicals: Sequence[str]
    ) -> Transaction:
        """Start the transaction of a write graph, with the spec its tasks use.

        Under a ``distributed`` client, a backend whose writes are bound to this
        process (Icechunk's session) ships a fork to the workers instead.
        """
        txn = await Transaction.begin(self.spec, base, keys, canonicals)
        if self.spec.shippable() or not _on_cluster():
            return txn
        spec = await self.spec.for_cluster()
        if spec is not self.spec:
            # The commit task publishes the forks from a session of its own: this
            # one (holding only the lease) is done, and the next write starts fresh.
            await self.spec.discard()
        return dataclasses.replace(txn, spec=spec)

    async def map(self, func: Callable[..., Any], *, filters: FilterLike = None) -> dict[str, Any]:
        """``func(partition: Dataset)`` for every selected partition, as one graph.

        Returns
        -------
        dict
            Canonical partition path -> result, in key order.
        """
        import dask

        if not callable(func):
            raise InvalidInputError(f"map needs a function, got {type(func).__name__}")

        lazy = await self.lazy(filters=filters)
        parts = [dask.delayed(func)(d) for d in lazy.to_delayed()]
        results = await asyncio.to_thread(dask.compute, parts)
        return dict(zip(lazy.partitions, results[0], strict=True))

    async def _plan_insert(
        self, prepared: Prepared, strategy: Any
    ) -> tuple[Any, Transaction] | None:
        """Plan from the axis and partitioning variables; record the lease; build the graph."""
        from .expr._write import build_insert_graph, partition_rows, plan_partitions
        from .io import ReadSource

        axis = self.axis_variable
        small = {
            v: prepared.columns[v]
            for v in {*self.partitioning.variables, axis}
            if v in prepared.columns
        }
        missing = [v for v in self.partitioning.variables if v not in prepared.columns]
        if missing:
            raise SchemaError(
                f"partitioning variable(s) {missing} are missing from the inserted data"
            )
        small, immutable = await asyncio.to_thread(_materialise, small, prepared.immutable)
        if not prepared.rows:
            return None
        check_axis(axis, small[axis])
        attrs = {v: self.schema[v].attrs for v in self.partitioning.variables}
        keys, inverse = self.partitioning.split(
            {v: small[v] for v in self.partitioning.variables}, attrs
        )
        rows = partition_rows(inverse, len(keys))
        base = await self._writable_base()
        write_immutable = await self._check_immutable(base, immutable)
        encode = self.partitioning.encode
        canonicals = [encode(tuple(int(x) for x in k)) for k in keys]
        if write_immutable:
            canonicals.append(IMMUTABLE_PATH)
        txn = await self._begin(base, keys, canonicals)
        plan = plan_partitions(keys, rows, small[axis], base, strategy, encode)
        columns = {**prepared.columns, **{k: v for k, v in small.items()}}
        delayed = build_insert_graph(
            ReadSource(txn.spec, self.config),
            txn,
            strategy,
            plan,
            columns,
            immutable if write_immutable else None,
        )
        return delayed, txn

    async def _check_immutable(self, base: Catalog, immutable: Mapping[str, numpy.ndarray]) -> bool:
        """Immutable variables are written once; later inserts must carry equal values.

        Returns whether this insert writes them (the first one that carries them).
        """
        if not immutable:
            if (
                self.io.immutable
                and base.immutable is None
                and not await self._unnamed_immutable(listed=base.version == 0)
            ):
                raise SchemaError(
                    f"immutable variable(s) {self.io.immutable} are missing from the first insert"
                )
            return False
        stored = await self.read_immutable(base, list(immutable))
        if not stored:
            missing = [p for p in self.io.immutable if p not in immutable]
            if missing:
                raise SchemaError(
                    f"immutable variable(s) {missing} are missing from the first insert"
                )
            return True
        from .data._dataset import _values_equal

        for path, value in immutable.items():
            if not _values_equal(value, stored[path]):
                raise SchemaError(
                    f"immutable variable {path!r} differs from the stored one; "
                    "immutable variables are written once and never replaced"
                )
        return False

    async def drop_partitions(self, filters: FilterLike = None) -> list[str]:
        """Delete the partitions matching ``filters`` (all when ``None``); returns their paths."""
        self._check_writable()
        from .catalog._transaction import acquire_lock, lock_token

        encode = self.partitioning.encode
        for attempt in range(DEFAULT_RETRIES + 1):
            base = await self.catalog(refresh=True)
            predicate = compile_filter(filters, self.partitioning.keys)
            mask = (
                numpy.ones(len(base), bool)
                if predicate is None
                else predicate(base.columns, size=len(base))
            )
            dropped = base.take(mask)
            if not len(dropped):
                return []
            base = await self._writable_base()
            canonicals = [encode(dropped.key_tuple(i)) for i in range(len(dropped))]
            txn = await Transaction.begin(self.spec, base, dropped.keys, canonicals)
            try:
                # Done from the start: a drop writes nothing under its locks.
                token = lock_token(txn.txn, done=True)
                for canonical in canonicals:
                    await acquire_lock(self.spec, canonical, token)
                committed = await txn.commit(DropPartitions(dropped.keys))
            except ConflictError:
                await txn.abort()
                if attempt == DEFAULT_RETRIES:
                    raise
                await asyncio.sleep(random.uniform(0.01, 0.05) * 2**attempt)
                continue
            except BaseException:
                await asyncio.shield(txn.abort())
                raise
            # The commit released the locks it held (only those: others may own them now).
            self._catalog = committed
            return canonicals
        raise AssertionError("unreachable")

    async def vacuum(self, *, older_than: float | None = None) -> list[str]:
        """Delete superseded partition versions retired more than ``older_than`` seconds ago."""
        self._check_writable()
        # Dead writers' locks first: a lock held by a dead writer blocks collection.
        await recover(self.spec, locks=True, garbage=False)
        return await collect_garbage(self.spec, older_than)

    async def verify(
        self, filters: FilterLike = None, *, concurrency: int = VERIFY_CONCURRENCY
    ) -> VerifyReport:
        """Read every chunk of the selected partitions (and the immutable group); report damage.

        Partitions are read ``concurrency`` at a time, each array chunk by
        chunk, so memory holds a few chunks per partition, never the collection.
        Only the committed rows are read (rows past a partition's committed
        count belong to an uncommitted append).

        Parameters
        ----------
        filters : str, mapping or None
            Filter on partition keys (all partitions by default).
        concurrency : int
            Partitions read at once.

        Returns
        -------
        VerifyReport
            ``report.ok`` is true when nothing is damaged; partitions written
            without checksums or chunk records (the reference format) are
            listed as ``unverifiable``, not as damaged.
        """
        catalog = await self.select(filters)
        sem = asyncio.Semaphore(max(1, concurrency))
        groups: list[tuple[str, list[str], int]] = [
            (catalog.paths[i], self.io.partitioned, int(catalog.rows[i]))
            for i in range(len(catalog))
        ]
        if self.io.immutable and filters is None:
            path = catalog.immutable
            if path is None and await self._unnamed_immutable(listed=catalog.version == 0):
                path = IMMUTABLE_PATH
            if path is not None:
                groups.append((path, self.io.immutable, -1))

        async def one(path: str, names: list[str], rows: int) -> tuple[int, Any, list[str]]:
            async with sem:
                return await self.io.check(path, names, rows)

        results = await asyncio.gather(*(one(*g) for g in groups))
        damaged: list[tuple[str, str]] = []
        unverifiable: list[tuple[str, str]] = []
        for (path, _, _), (_, bad, reasons) in zip(groups, results, strict=True):
            damaged += bad
            unverifiable += [(path, why) for why in reasons]
        return VerifyReport(
            checked=len(groups),
            chunks=sum(r[0] for r in results),
            damaged=tuple(damaged),
            unverifiable=tuple(unverifiable),
        )

    async def repair(self, *, force: bool = False, dry_run: bool = False) -> RepairReport:
        """Make the catalog and the tree agree, never dropping data that can be read.

        See :meth:`dask_zcollection.Collection.repair`.
        """
        self._check_writable()
        report = await repair(self, force=force, dry_run=dry_run)
        self._catalog = None
        return report


def _on_cluster() -> bool:
    """Whether ``compute()`` would run on a ``distributed`` client now."""
    from dask.base import get_scheduler

    scheduler = get_scheduler()
    owner = getattr(scheduler, "__self__", None)
    return type(owner).__name__ == "Client"


def _materialise(
    columns: Mapping[str, Any], immutable: Mapping[str, Any]
) -> tuple[dict[str, numpy.ndarray], dict[str, numpy.ndarray]]:
    """Compute the (small) planning columns and immutable variables of dask-backed input."""
    import dask

    lazy = {k: v for k, v in {**columns, **immutable}.items() if not isinstance(v, numpy.ndarray)}
    (done,) = dask.compute(lazy) if lazy else ({},)
    return (
        {k: numpy.asarray(done.get(k, v)) for k, v in columns.items()},
        {k: numpy.asarray(done.get(k, v)) for k, v in immutable.items()},
    )


# -- create / open --------------------------------------------------------------------------------
async def create_collection(
    store: StoreLike,
    *,
    schema: Schema,
    axis: str,
    partitioning: Partitioning,
    axis_variable: str | None = None,
    overwrite: bool = False,
    storage_options: Mapping[str, Any] | None = None,
) -> AsyncCollection:
    """Create an empty collection and return it open for writing.

    Parameters
    ----------
    store : str or StoreSpec
        ``file:///path``, ``memory://name``, a local path or a store spec.
    schema : Schema
        The variables, dimensions and groups of every partition.
    axis : str
        The partitioned dimension (e.g. ``"time"``).
    partitioning : Partitioning
        How rows map to partitions, e.g. ``partitioning.Date(("time",), resolution="M")``.
    axis_variable : str, optional
        1-D variable along ``axis`` used for stats and merges (default: the
        variable named like ``axis``, else the Date variable, else a datetime).
    overwrite : bool
        Replace an existing collection (all of it) instead of failing.
    storage_options : dict, optional
        Backend options.

    Raises
    ------
    AlreadyExistsError
        When a collection exists at ``store`` and ``overwrite`` is false.
    InvalidInputError
        When ``overwrite`` would clear an empty path, a filesystem root, the
        home directory or a bucket root (nothing is deleted).
    SchemaError
        When the schema, axis and partitioning do not fit together.
    """
    if not isinstance(schema, Schema):
        raise InvalidInputError(f"schema must be a dask_zcollection.Schema, got {schema!r}")
    if not isinstance(partitioning, Partitioning):
        raise InvalidInputError(
            f"partitioning must be a partitioning (e.g. partitioning.Date), got {partitioning!r}"
        )
    spec = resolve_store(store, storage_options).for_writing()
    if overwrite:
        check_clearable(store, spec)
    schema = schema.build().with_axis(axis).with_default_chunks(axis)
    for name in partitioning.variables:
        if name not in schema or schema[name].dimensions != (axis,):
            raise SchemaError(
                f"partitioning variable {name!r} must be a 1-D variable along {axis!r} "
                "in the schema"
            )
    if partitioning.dimension != axis:
        raise SchemaError(
            f"the partitioning splits dimension {partitioning.dimension!r} but axis is {axis!r}"
        )
    if axis_variable is None:
        axis_variable = default_axis_variable(schema, axis, partitioning)
    elif axis_variable not in schema or schema[axis_variable].dimensions != (axis,):
        raise SchemaError(f"axis_variable {axis_variable!r} must be a 1-D variable along {axis!r}")
    config = CollectionConfig(
        axis=axis, axis_variable=axis_variable, partitioning=partitioning, schema=schema
    )
    if await spec.exists(CONFIG_KEY) or not await spec.is_empty():
        if not overwrite:
            raise AlreadyExistsError(f"a collection (or other data) already exists at {spec.url}")
        await spec.clear()
        forget_collection(spec.url)
    await write_config(spec, config)
    log = CatalogLog(spec)
    await log.initialise()
    collection = AsyncCollection(spec, config, "rw")
    empty = collection._empty_catalog()
    await log.commit(empty.next_version("create"))
    await spec.publish(f"dask_zcollection create collection (partitioning {partitioning!r})")
    return collection


async def open_collection(
    store: StoreLike,
    *,
    mode: Mode = "r",
    storage_options: Mapping[str, Any] | None = None,
    version: str | None = None,
) -> AsyncCollection:
    """Open an existing collection.

    Parameters
    ----------
    store : str or StoreSpec
        Where the collection lives.
    mode : {"r", "rw"}
        Read-only, or read-write (which also cleans up after crashed writers).
    version : str, optional
        Icechunk only: read the collection as of a snapshot id, tag or branch.

    Raises
    ------
    CollectionNotFoundError
        When there is no collection at ``store``.
    """
    if mode not in ("r", "rw"):
        raise InvalidInputError(f"mode must be 'r' or 'rw', got {mode!r}")
    spec = resolve_store(store, storage_options)
    if mode == "rw":
        if version is not None:
            raise InvalidInputError("version= reads the past: open it with mode='r'")
        spec = spec.for_writing()
    else:
        spec = await spec.pinned(version)
    config = await read_config(spec)
    collection = AsyncCollection(spec, config, mode)
    if mode == "rw":
        await recover(spec)
    return collection


__all__ += ["CATALOG_DIR", "LEASE_DIR", "CollectionNotFoundError"]
