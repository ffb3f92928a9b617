"""The async engine of a collection: open, list, read, insert, drop, repair.

Everything here is a coroutine; :mod:`dask_zcollection.api` wraps it for
sync callers and :mod:`dask_zcollection.aio` republishes it. The Dask graphs
(read and write paths) call these same coroutines per partition.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, Literal

import numpy

from ._display import size_of
from ._planner import Planned, WritePlanner
from ._prepare import prepare_insert
from ._repair import RepairReport, repair
from ._sync import sync
from ._update import (
    OverlapUpdateStrategy,
    RowsUpdateStrategy,
    UpdateStrategy,
    check_update_call,
)
from .catalog import Catalog
from .catalog._discovery import IMMUTABLE_PATH, CatalogDiscovery
from .catalog._log import by_filter
from .catalog._transaction import (
    DropPartitions,
    acquire_lock,
    collect_garbage,
    lock_token,
    recover,
    retry_on_conflict,
)
from .collection import LazyCollection, collection_from
from .data import Dataset
from .data._repr import format_bytes
from .errors import (
    InvalidInputError,
    ReadOnlyError,
)
from .expr import ReadPartitions
from .indexing._stored import StoredIndexes
from .io import (
    CollectionConfig,
    PartitionIO,
    VerifyReport,
)
from .io._writer import LAZY_WRITE
from .merge import MergeLike, resolve
from .partitioning import Partitioning, compile_filter
from .partitioning._filter import FilterLike
from .schema import Schema
from .store import StoreSpec

__all__ = ["IMMUTABLE_PATH", "AsyncCollection", "Mode"]

Mode = Literal["r", "rw"]
#: Partitions :meth:`AsyncCollection.verify` reads at once.
VERIFY_CONCURRENCY = 2
#: Times an insert is re-planned after losing a commit race on the same partitions.
DEFAULT_RETRIES = 3


def encode_keys(partitioning: Partitioning, keys: numpy.ndarray) -> list[str]:
    """The path of each key row (``partitioning.encode``), vectorised for many keys.

    Each component of a path of the library's partitionings depends on its own
    key only: it is encoded once per distinct value.
    """
    from .partitioning import Date, GroupedSequence, Sequence

    if len(keys) < 512 or type(partitioning) not in (Date, Sequence, GroupedSequence):
        return [partitioning.encode(tuple(row)) for row in keys.tolist()]
    columns = []
    for i in range(keys.shape[1]):
        _, first, inverse = numpy.unique(keys[:, i], return_index=True, return_inverse=True)
        parts = [partitioning.encode(tuple(keys[j].tolist())).split("/")[i] for j in first]
        columns.append(numpy.array(parts, dtype=object)[inverse].tolist())
    return ["/".join(row) for row in zip(*columns, strict=True)]


class AsyncCollection(StoredIndexes):
    """A partitioned collection (async API). Use :func:`open_collection` to get one."""

    def __init__(self, spec: StoreSpec, config: CollectionConfig, mode: Mode = "r") -> None:
        self.spec = spec
        self.config = config
        self.mode: Mode = mode
        self.io = PartitionIO(spec, config.schema, config.axis)
        self.discovery = CatalogDiscovery(
            spec, config.partitioning, config.schema[config.axis_variable].dtype
        )
        self.planner = WritePlanner(spec, config, self.io, self.discovery)
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
        return self.describe(self._catalog)

    def describe(self, catalog: Catalog | None) -> str:
        """The repr with the partitions and size of ``catalog`` (``?`` when ``None``)."""
        n: Any = "?"
        size = "?"
        if catalog is not None:
            n = len(catalog)
            rows = catalog.total_rows
            if rows >= 0:
                per_row, fixed = size_of(self.schema, [p for p, _ in self.schema.walk()])
                size = format_bytes(rows * per_row + fixed)
        return (
            f"<{type(self).__name__} {self.url!r} mode={self.mode!r} "
            f"partitioning={self.partitioning!r} partitions={n} size={size}>"
        )

    # -- catalog -----------------------------------------------------------------------------
    async def catalog(self, *, refresh: bool = False) -> Catalog:
        """The committed partition index (cached; ``refresh=True`` re-reads it)."""
        if self._catalog is None or refresh:
            await self.spec.refresh()
            self._catalog = await self.discovery.load()
        return self._catalog

    async def select(self, filters: FilterLike = None) -> Catalog:
        """The sub-catalog of the partitions matching ``filters`` (newest version).

        Reads only the catalog segments the filter may match.
        """
        return (await self.select_counted(filters))[0]

    async def select_counted(
        self, filters: FilterLike = None, spec: StoreSpec | None = None
    ) -> tuple[Catalog, int]:
        """:meth:`select`, and the number of partitions of the whole collection.

        The count comes from the catalog's root: the segments the filter
        cannot match are still not read. ``spec``: read the catalog of that
        (pinned) spec instead of this collection's newest.
        """
        spec = self.spec if spec is None else spec
        if spec is self.spec:
            await self.spec.refresh()
        predicate = compile_filter(filters, self.partitioning.keys)
        discovery = self.discovery_of(spec)
        if predicate is None:
            catalog = await discovery.load()
            if spec is self.spec:
                self._catalog = catalog
            return catalog, len(catalog)
        log = discovery.log
        log.partitions = -1
        loaded = await discovery.load(by_filter(predicate))
        # -1: not read through a committed version (a listed catalog is whole).
        total = len(loaded) if log.partitions < 0 else log.partitions
        return loaded.select(predicate), total

    async def partitions(self, filters: FilterLike = None) -> list[str]:
        """Canonical paths (``year=2024/month=03``) of the partitions, in key order."""
        selected = await self.select(filters)
        return encode_keys(self.partitioning, selected.keys)

    # -- read --------------------------------------------------------------------------------
    async def read_partition(
        self, catalog: Catalog, i: int, variables: Sequence[str] | None = None
    ) -> dict[str, numpy.ndarray]:
        """Read the partitioned variables of partition ``i`` of ``catalog``."""
        rows = int(catalog.rows[i])
        stop = None if rows < 0 else rows
        return await self.io.read(catalog.paths[i], variables, stop=stop, txn=catalog.identity(i))

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
        names = self._check_variables(variables)
        spec = await self.spec.pinned()  # a read-only spec workers can open
        # The catalog comes from the snapshot the data are read from: a writer's
        # spec (Icechunk) pins the branch tip, and a commit landing before the
        # catalog's read would name partitions that snapshot lacks. Only the
        # segments the filter may match are read.
        catalog, total = await self.select_counted(filters, spec)
        return collection_from(spec, self.config, catalog, names, filters, total=total)

    def discovery_of(self, spec: StoreSpec) -> CatalogDiscovery:
        """The catalog discovery over ``spec`` (this collection's own for its spec)."""
        if spec is self.spec:
            return self.discovery
        return CatalogDiscovery(
            spec, self.config.partitioning, self.config.schema[self.config.axis_variable].dtype
        )

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
            lambda: self.planner.insert(prepared, strategy), retries=retries, compute=compute
        )

    async def _run_graph(
        self,
        plan: Callable[[], Awaitable[Planned | None]],
        *,
        retries: int,
        compute: bool,
    ) -> Any:
        """Plan and run a write graph; abort and re-plan on a lost race, abort on failure."""
        if isinstance(retries, bool) or not isinstance(retries, int) or retries < 0:
            raise InvalidInputError(f"retries must be an int >= 0, got {retries!r}")
        if not compute:
            # Nothing aborts a lazy write after its graph: its tasks do (see LAZY_WRITE).
            token = LAZY_WRITE.set(True)
            try:
                planned = await plan()
            finally:
                LAZY_WRITE.reset(token)
            return [] if planned is None else planned.graph

        async def attempt() -> list[str]:
            planned = await plan()
            if planned is None:
                return []
            txn = planned.txn
            # Off the event loop: the graph's tasks use this loop for their I/O. A
            # backend whose writes cannot leave this process (Icechunk's session,
            # memory://) runs them on its threads, even under a distributed client.
            scheduler = None if txn.spec.shippable() else "threads"
            async with txn.aborting(), txn.alive(final=True):  # heartbeats while it runs
                written: list[str] = await asyncio.to_thread(
                    planned.graph.compute, scheduler=scheduler
                )
            self._catalog = None
            return written

        return await retry_on_conflict(attempt, retries)

    async def update(
        self,
        func: Callable[..., Any],
        *,
        filters: FilterLike = None,
        variables: Sequence[str] | None = None,
        retries: int = DEFAULT_RETRIES,
        compute: bool = True,
        index: Any = None,
        depth: Any = None,
        boundary: Any = "none",
        **predicates: Any,
    ) -> Any:
        """Rewrite variables of the selected partitions with ``func(partition) -> Dataset``.

        ``func`` receives each partition as a :class:`Dataset` (``variables``
        only, when given) and returns the variables to replace (a ``Dataset``
        or a mapping path -> array, same rows). Each partition is rewritten
        aside and all are published by one commit, as for :meth:`insert`.

        With ``index`` (a stored index's name or an ``Indexer``) and
        ``predicates`` on its columns, ``func`` gets only the selected rows of
        the partitions the index names, and only those rows are replaced.

        With ``depth`` (rows or a time span, as for
        :meth:`~dask_zcollection.LazyCollection.map_overlap`), ``func`` gets each
        partition extended by its neighbours' rows (read when planning; padded
        with ``boundary`` when a constant) and returns the variables over the
        extended rows; the halo is trimmed before writing.

        Returns
        -------
        list of str or Delayed
            Canonical paths of the partitions rewritten (or the lazy update).
        """
        self._check_writable()
        check_update_call(func, index, depth, predicates)
        names = self._check_variables(variables)
        strategy = UpdateStrategy(func, None if names is None else tuple(names), self.schema)

        maker = None
        if isinstance(index, str):
            # The index named: its entries of the partitions written are rebuilt beside them.
            from .indexing._stored import entry_maker

            found = await entry_maker(await self.spec.pinned(), index, self.axis_variable)
            maker = None if found is None else found[0]

        async def plan() -> Planned | None:
            # The lookup and the halos are taken again on each attempt: a retry after a
            # lost race sees the versions that won it (or a stale index refuses).
            chosen, where = strategy, filters
            if depth is not None:
                chosen = await self._overlap_strategy(strategy, filters, depth, boundary)
            elif index is not None:
                lazy = await self.lazy(filters=filters)
                rows_of, where, versions = await asyncio.to_thread(
                    _index_rows, lazy, index, predicates
                )
                if not rows_of:
                    return None
                chosen = RowsUpdateStrategy(
                    func,
                    strategy.variables,
                    self.schema,
                    self.config.partitioning,
                    rows_of,
                    depends_on={c: (v,) for c, v in versions.items()},
                    index_entries=maker,
                )
            return await self.planner.update(where, chosen)

        return await self._run_graph(plan, retries=retries, compute=compute)

    async def _overlap_strategy(
        self, strategy: UpdateStrategy, filters: FilterLike, depth: Any, boundary: Any
    ) -> OverlapUpdateStrategy:
        """Plan and read the halo of every selected partition (see ``_overlap``)."""
        from ._overlap import neighbour_versions, plan_halos, read_halos

        whole = await self.lazy()
        lazy = whole.filter(filters) if filters is not None else whole
        selected = lazy.catalog
        counts = selected.rows.tolist()
        if any(n < 0 for n in counts):
            counts = [
                n if n >= 0 else await self.io.row_count(p, self.axis_variable)
                for p, n in zip(selected.paths, counts, strict=True)
            ]
        planned, constant = await asyncio.to_thread(
            plan_halos,
            whole.source,
            whole.catalog,
            selected,
            [(0, n) for n in counts],
            depth,
            boundary,
        )
        schema = self.schema
        names = tuple(
            p
            for p, _ in schema.walk()
            if not schema[p].immutable
            and (strategy.variables is None or p in strategy.variables or p == self.axis_variable)
        )
        halos = await read_halos(whole.source, planned, names)
        depends_on = await neighbour_versions(whole.source, whole.catalog, lazy.partitions, planned)
        return OverlapUpdateStrategy(
            strategy.func,
            strategy.variables,
            schema,
            self.config.partitioning,
            {
                path: (n, before, after, h.pad_before, h.pad_after)
                for path, n, (h, _, _), (before, after) in zip(
                    lazy.partitions, counts, planned, halos, strict=True
                )
            },
            constant,
            depends_on=depends_on,
        )

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

    async def drop_partitions(self, filters: FilterLike = None) -> list[str]:
        """Delete the partitions matching ``filters`` (all when ``None``); returns their paths."""
        self._check_writable()

        async def attempt() -> list[str]:
            planned = await self.planner.drop(filters)
            if planned is None:
                return []
            txn, dropped, canonicals = planned
            async with txn.aborting():
                # Done from the start: a drop writes nothing under its locks.
                token = lock_token(txn.txn, done=True)
                for canonical in canonicals:
                    await acquire_lock(self.spec, canonical, token)
                # The commit releases the locks it holds (only those: others may own
                # them by then).
                await txn.commit(DropPartitions(dropped.keys))
                self._catalog = None  # the commit returns the touched segments only
            return canonicals

        return await retry_on_conflict(attempt, DEFAULT_RETRIES)

    async def vacuum(self, *, older_than: float | None = None) -> list[str]:
        """Delete superseded partition versions retired more than ``older_than`` seconds ago."""
        # Checked first: NaN compares false with every age, so it would delete nothing silently.
        if older_than is not None and (
            isinstance(older_than, bool)
            or not isinstance(older_than, (int, float))
            or not math.isfinite(older_than)
            or older_than < 0
        ):
            raise InvalidInputError(
                f"older_than must be a finite number of seconds >= 0, got {older_than!r}"
            )
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
            path = await self.discovery.immutable_path(catalog)
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


def _index_rows(
    lazy: LazyCollection, index: Any, predicates: dict[str, Any]
) -> tuple[Any, str, dict[str, Any]]:
    """``{canonical: (rows, ranges)}`` an index selects (checked fresh), their key filter, and
    the version of each the lookup was answered from (``check_versions`` re-checks them)."""
    from .indexing._indexer import _txns

    selected = lazy.filter(index=index, **predicates).optimize()
    expr = selected.expr
    assert isinstance(expr, ReadPartitions)
    catalog = expr.catalog
    ranges = expr.row_ranges()
    canonical = selected.partitions
    rows_of = {path: (int(catalog.rows[i]), ranges[i] or ()) for i, path in enumerate(canonical)}
    txns = sync(_txns(lazy.source.spec, catalog.paths))
    versions = {
        path: (path, catalog.key_tuple(i), catalog.paths[i], int(catalog.rows[i]), txns[i])
        for i, path in enumerate(canonical)
    }
    names = catalog.key_names
    terms = [
        "(" + " and ".join(f"{n} == {int(v)}" for n, v in zip(names, row, strict=True)) + ")"
        for row in catalog.keys.tolist()
    ]
    return rows_of, " or ".join(terms), versions
