"""Write planning: from the input (or a filter) and the catalog to a transaction and a graph.

An insert is planned on the client from the axis and partitioning variables
only (computed alone when the input is dask-backed): which partitions the
rows go to, which of them exist, what the merge strategy needs of each
(read the stored rows? append in place?), the transaction's lease, then the
graph (:func:`dask_zcollection.expr._write.build_insert_graph`). An update
is the same plan over the selected partitions, with the update as strategy.
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Mapping, Sequence
from typing import Any

import numpy
from dask.delayed import Delayed

from ._prepare import Prepared, check_axis
from .catalog import Catalog
from .catalog._catalog import identity_array
from .catalog._discovery import IMMUTABLE_PATH, CatalogDiscovery
from .catalog._log import Chooser, by_filter, by_keys
from .catalog._transaction import Transaction, new_txn_id
from .data._dataset import _values_equal
from .errors import SchemaError
from .expr._write import build_insert_graph
from .io import CollectionConfig, PartitionIO, ReadSource
from .io._writer import InsertPlan, PartitionPlan
from .merge import AxisRange, MergeStrategy
from .partitioning import compile_filter
from .partitioning._filter import FilterLike
from .store import StoreSpec

__all__ = ["Planned", "WritePlanner", "partition_rows", "plan_partitions"]


@dataclasses.dataclass(frozen=True, slots=True)
class Planned:
    """A planned write: its graph (computing it commits) and its transaction."""

    graph: Delayed
    txn: Transaction


class WritePlanner:
    """Plans the writes of one collection.

    Parameters
    ----------
    spec : StoreSpec
        The collection's store (writable).
    config : CollectionConfig
        Its descriptor.
    io : PartitionIO
        Partition I/O of the collection.
    discovery : CatalogDiscovery
        How the committed catalog is found (and a listed one adopted).
    """

    def __init__(
        self,
        spec: StoreSpec,
        config: CollectionConfig,
        io: PartitionIO,
        discovery: CatalogDiscovery,
    ) -> None:
        self.spec = spec
        self.config = config
        self.io = io
        self.discovery = discovery

    async def base(self, listed: Catalog | None = None, choose: Chooser = None) -> Catalog:
        """The newest catalog, with stats, for a write to plan and commit against.

        A collection written by the reference implementation has no catalog of
        ours (version 0, listed from ``state.json`` or a walk): its listed
        catalog (or ``listed``) is first published as the next version, so the
        commit protocol has a version to race on.

        Raises
        ------
        CorruptedDataError
            When a catalog version is damaged (``repair()`` first).
        """
        await self.spec.refresh()
        # Refused before anything is written when a version is damaged (the commit
        # checks again).
        current = await self.discovery.load(choose, writing=True)
        if current.version > 0:
            return await self.with_stats(current)
        adopted = await self.adopt(listed if listed is not None else await self.with_stats(current))
        if adopted is not None:
            return adopted
        latest = await self.discovery.log.latest()  # another writer adopted it first
        assert latest is not None
        return await self.with_stats(latest)

    async def adopt(self, listed: Catalog, *, past: int = 0) -> Catalog | None:
        """Commit ``listed`` (a catalog listed from the tree) as the next version.

        Numbered past every version present, damaged ones included, and above
        ``past`` (repair: the damaged versions it sets aside), so a number is
        never taken twice. Returns it, or ``None`` when another put of that
        number landed first.
        """
        log = self.discovery.log
        immutable = IMMUTABLE_PATH if await self.discovery.unnamed_immutable(listed=True) else None
        await log.initialise()
        await log.versions()  # numbered past damaged versions, if any
        adopted = dataclasses.replace(listed, version=0)
        adopted = log.numbered(adopted.next_version(new_txn_id(), immutable=immutable))
        if adopted.version <= past:
            adopted = dataclasses.replace(adopted, version=past + 1)
        return adopted if await log.commit(adopted) else None

    async def with_stats(self, catalog: Catalog) -> Catalog:
        """Fill in row counts and axis min/max of a listed catalog (reads the axis)."""
        if catalog.has_stats:
            return catalog
        axis = self.config.axis_variable
        stats = await asyncio.gather(*(self.io.axis_stats(p, axis) for p in catalog.paths))
        # The identity readers check: the group's ``_zc_txn``, NO_TXN for a reference group.
        txns = await asyncio.gather(*(self.io.identity(p) for p in catalog.paths))
        dtype = catalog.axis_min.dtype
        zero = numpy.zeros((), dtype)
        rows = numpy.array([s[0] for s in stats], dtype="int64")
        lo = numpy.array([s[1] if s[0] else zero for s in stats], dtype=dtype)
        hi = numpy.array([s[2] if s[0] else zero for s in stats], dtype=dtype)
        return dataclasses.replace(
            catalog,
            rows=rows,
            axis_min=lo,
            axis_max=hi,
            has_stats=True,
            txns=identity_array(txns),
        )

    # -- insert ----------------------------------------------------------------------------
    async def insert(self, prepared: Prepared, strategy: MergeStrategy) -> Planned | None:
        """Plan an insert from the axis and partitioning variables; record the lease."""
        config = self.config
        part = config.partitioning
        axis = config.axis_variable
        missing = [v for v in part.variables if v not in prepared.columns]
        if missing:
            raise SchemaError(
                f"partitioning variable(s) {missing} are missing from the inserted data"
            )
        small = {v: prepared.columns[v] for v in {*part.variables, axis} if v in prepared.columns}
        small, immutable = await asyncio.to_thread(materialise, small, prepared.immutable)
        if not prepared.rows:
            return None
        check_axis(axis, small[axis])
        attrs = {v: config.schema[v].attrs for v in part.variables}
        keys, inverse = part.split({v: small[v] for v in part.variables}, attrs)
        rows = partition_rows(inverse, len(keys))
        base = await self.base(choose=by_keys(keys))
        write_immutable = await self._check_immutable(base, immutable)
        canonicals = [part.encode(tuple(int(x) for x in k)) for k in keys]
        if write_immutable:
            canonicals.append(IMMUTABLE_PATH)
        txn = await self._begin(base, keys, canonicals)
        plan = plan_partitions(keys, rows, small[axis], base, strategy, part.encode)
        columns = {**prepared.columns, **small}
        graph = build_insert_graph(
            ReadSource(txn.spec, config),
            txn,
            strategy,
            plan,
            columns,
            immutable if write_immutable else None,
        )
        return Planned(graph, txn)

    async def _check_immutable(self, base: Catalog, immutable: Mapping[str, numpy.ndarray]) -> bool:
        """Immutable variables are written once; later inserts must carry equal values.

        Returns whether this insert writes them (the first one that carries them).
        """
        expected = self.io.immutable
        if not immutable:
            if expected and await self.discovery.immutable_path(base) is None:
                raise SchemaError(
                    f"immutable variable(s) {expected} are missing from the first insert"
                )
            return False
        stored = await self.stored_immutable(base, list(immutable))
        if not stored:
            missing = [p for p in expected if p not in immutable]
            if missing:
                raise SchemaError(
                    f"immutable variable(s) {missing} are missing from the first insert"
                )
            return True
        for path, value in immutable.items():
            if not _values_equal(value, stored[path]):
                raise SchemaError(
                    f"immutable variable {path!r} differs from the stored one; "
                    "immutable variables are written once and never replaced"
                )
        return False

    async def stored_immutable(
        self, catalog: Catalog, variables: Sequence[str] | None = None
    ) -> dict[str, numpy.ndarray]:
        """The stored immutable variables (empty when none were written)."""
        names = (
            self.io.immutable
            if variables is None
            else [v for v in variables if v in self.io.immutable]
        )
        if not names:
            return {}
        path = await self.discovery.immutable_path(catalog)
        return {} if path is None else await self.io.read_immutable(path, names)

    # -- update ----------------------------------------------------------------------------
    async def update(self, filters: FilterLike, strategy: MergeStrategy) -> Planned | None:
        """Plan the rewrite of the partitions selected by ``filters``; record the lease."""
        part = self.config.partitioning
        predicate = compile_filter(filters, part.keys)
        base = await self.base(choose=by_filter(predicate))
        selected = base.select(predicate)
        if not len(selected):
            return None
        plans = [
            PartitionPlan(
                key=selected.key_tuple(i),
                canonical=part.encode(selected.key_tuple(i)),
                existing=(selected.paths[i], int(selected.rows[i]), True, selected.identity(i)),
                stored=AxisRange(selected.axis_min[i], selected.axis_max[i], int(selected.rows[i])),
                read_existing=True,
                append=False,
            )
            for i in range(len(selected))
        ]
        txn = await self._begin(base, selected.keys, [p.canonical for p in plans])
        empty = numpy.empty(0, dtype="intp")
        plan = InsertPlan(keys=selected.keys, partitions=plans, rows=[empty] * len(plans))
        graph = build_insert_graph(ReadSource(txn.spec, self.config), txn, strategy, plan, {}, None)
        return Planned(graph, txn)

    # -- drop ----------------------------------------------------------------------------------
    async def drop(self, filters: FilterLike) -> tuple[Transaction, Catalog, list[str]] | None:
        """The transaction, sub-catalog and canonical paths of the partitions to drop."""
        part = self.config.partitioning
        predicate = compile_filter(filters, part.keys)
        base = await self.base(choose=by_filter(predicate))
        dropped = base.select(predicate)
        if not len(dropped):
            return None
        canonicals = [part.encode(dropped.key_tuple(i)) for i in range(len(dropped))]
        txn = await Transaction.begin(self.spec, base, dropped.keys, canonicals)
        return txn, dropped, canonicals

    # -- the transaction ---------------------------------------------------------------------
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


def _on_cluster() -> bool:
    """Whether ``compute()`` would run on a ``distributed`` client now."""
    from dask.base import get_scheduler

    scheduler = get_scheduler()
    owner = getattr(scheduler, "__self__", None)
    return type(owner).__name__ == "Client"


def materialise(
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


def partition_rows(inverse: numpy.ndarray, n: int) -> list[numpy.ndarray]:
    """Row positions of each partition (input order kept inside each)."""
    order = numpy.argsort(inverse, kind="stable")
    bounds = numpy.cumsum(numpy.bincount(inverse, minlength=n))[:-1]
    return list(numpy.split(order, bounds))


def plan_partitions(
    keys: numpy.ndarray,
    rows: list[numpy.ndarray],
    axis_values: numpy.ndarray,
    base: Catalog,
    strategy: MergeStrategy,
    encode: Any,
) -> InsertPlan:
    """Join the input's partitions with the catalog and ask the strategy what each needs."""
    pos = base.find(keys)
    plans = []
    for j, key in enumerate(keys):
        values = axis_values[rows[j]]
        inserted = AxisRange.from_array(values)
        existing = stored = None
        read = append = False
        if pos[j] >= 0:
            i = int(pos[j])
            stored = AxisRange(base.axis_min[i], base.axis_max[i], int(base.rows[i]))
            existing = (base.paths[i], int(base.rows[i]), True, base.identity(i))
            read = strategy.needs_existing(stored, inserted)
            append = stored.count > 0 and strategy.appends(stored, inserted)
        plans.append(
            PartitionPlan(
                key=tuple(int(x) for x in key),
                canonical=encode(tuple(int(x) for x in key)),
                existing=existing,
                stored=stored,
                read_existing=read,
                append=append,
            )
        )
    return InsertPlan(keys=keys, partitions=plans, rows=rows)
