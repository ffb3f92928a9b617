"""The async engine of a collection: open, list, read, insert, drop, repair.

Everything here is a coroutine; :mod:`dask_zcollection.api` wraps it for
sync callers and :mod:`dask_zcollection.aio` republishes it. The Dask graphs
(read and write paths) call these same coroutines per partition.
"""

from __future__ import annotations

import asyncio
import dataclasses
import random
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any, Literal

import numpy

from ._prepare import Prepared, check_axis, prepare_insert
from ._repair import RepairReport, repair
from ._update import UpdateStrategy
from .catalog import Catalog, CatalogLog
from .catalog._discovery import IMMUTABLE_PATH, CatalogDiscovery
from .catalog._transaction import (
    DropPartitions,
    Transaction,
    collect_garbage,
    recover,
)
from .collection import LazyCollection, collection_from
from .data import Dataset
from .errors import (
    ConflictError,
    InvalidInputError,
    ReadOnlyError,
    SchemaError,
)
from .io import (
    CollectionConfig,
    PartitionIO,
)
from .merge import AxisRange, MergeLike, resolve
from .partitioning import Partitioning, compile_filter
from .partitioning._filter import FilterLike
from .schema import Schema
from .store import StoreSpec

__all__ = ["IMMUTABLE_PATH", "AsyncCollection", "Mode"]

Mode = Literal["r", "rw"]
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
        axis = config.axis_variable
        self.discovery = CatalogDiscovery(
            spec,
            config.partitioning,
            config.schema[axis].dtype,
            lambda path: self.io.axis_stats(path, axis),
        )
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
            self._catalog = await self.discovery.load()
        return self._catalog

    async def _writable_base(self, listed: Catalog | None = None) -> Catalog:
        """The newest catalog, with stats, for a write (a listed one is adopted first)."""
        self._catalog = await self.discovery.adopt(await self.catalog(refresh=True), listed)
        return self._catalog

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
        if path is None and names and await self.discovery.unnamed_immutable(listed=listed):
            path = IMMUTABLE_PATH  # reference-format collection, or a lost catalog
        if path is None or not names:
            return {}
        return await self.io.read_immutable(path, names)

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

        base = await self.discovery.with_stats(await self.catalog(refresh=True))
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
                and not await self.discovery.unnamed_immutable(listed=base.version == 0)
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
