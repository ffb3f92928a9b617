"""The async engine of a view, and its openers: create, open, read, update, drop.

A view is a store holding ``_zcollection_view.json`` (the reference
implementation's descriptor: the base's URI and the view's own variables)
and one Zarr group per computed partition, at the base's partition path.
The view store also gets what a collection of ours has for writing (its own
``_catalog/``, ``_locks/``, ``_transactions/``): an update is a write of the
view store through the collection's commit protocol, and the base is only
ever read.
"""

from __future__ import annotations

import asyncio
import dataclasses
import os
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, Literal

import numpy

from .._engine import DEFAULT_RETRIES, AsyncCollection
from .._update import check_update_call
from ..catalog import Catalog, CatalogLog
from ..catalog._discovery import CatalogDiscovery
from ..catalog._log import by_filter
from ..catalog._transaction import (
    TXN_ATTR,
    DropPartitions,
    Transaction,
    acquire_lock,
    lock_token,
    new_txn_id,
    recover,
    retry_on_conflict,
)
from ..collection import LazyCollection
from ..data import Dataset
from ..errors import (
    AlreadyExistsError,
    InvalidInputError,
    ReadOnlyError,
    SchemaError,
    VariableNotFoundError,
)
from ..expr import ReadPartitions
from ..indexing._stored import StoredIndexes
from ..io import ReadSource, forget_collection, group_json, read_config
from ..io._writer import LAZY_WRITE, PartitionPlan, WriteContext
from ..merge import AxisRange
from ..partitioning import compile_filter
from ..partitioning._filter import FilterLike
from ..schema import Schema
from ..schema._schema import VariableSchema
from ..store import StoreLike, StoreSpec, check_clearable, local_root, resolve_store
from ._config import (
    VIEW_CONFIG_KEY,
    ViewConfig,
    read_view_config,
    resolve_reference,
    write_view_config,
)
from ._source import BASE_ATTR, StaleMode, ViewSource, check_stale, group_attrs
from ._update import BasePart, ViewUpdate, build_update_graph

if TYPE_CHECKING:
    from .._repair import RepairReport

__all__ = ["AsyncView", "create_view", "is_view", "open_view", "read_view", "view_schema"]

Mode = Literal["r", "rw"]
BaseLike = Any  # a URL, a StoreSpec, a Collection or an AsyncCollection


def _joined(base: Schema, overlay: Schema) -> Schema:
    """The base schema with the view's (root) variables added."""
    root = dataclasses.replace(base.root, variables=(*base.root.variables, *overlay.root.variables))
    return dataclasses.replace(base, root=root)


def _check_stale_mode(stale: Any) -> StaleMode:
    if stale not in ("raise", "fill"):
        raise InvalidInputError(f"stale must be 'raise' or 'fill', got {stale!r}")
    return stale  # type: ignore[no-any-return]


class AsyncView(StoredIndexes):
    """A view: variables of its own over a read-only base collection (async API).

    Get one from :func:`create_view` or :func:`open_view`.
    """

    def __init__(
        self, spec: StoreSpec, config: ViewConfig, base: AsyncCollection, mode: Mode = "r"
    ) -> None:
        self.spec = spec
        self.config = config
        self.base = base
        self.mode: Mode = mode
        bcfg = base.config
        clash = sorted({p for p, _ in bcfg.schema.walk()} & set(config.variables))
        if clash:  # the base (or base= at open) has variables named like the view's
            raise SchemaError(
                f"view {spec.url}: variable(s) {clash} are also variables of its base {base.url}"
            )
        #: The base's descriptor over the view's variables: what the view store holds.
        self.overlay_config = dataclasses.replace(bcfg, schema=config.schema)
        #: The base's descriptor over base and view variables: what a read sees.
        self.joined_config = dataclasses.replace(bcfg, schema=_joined(bcfg.schema, config.schema))
        self.discovery = CatalogDiscovery(
            spec, bcfg.partitioning, bcfg.schema[bcfg.axis_variable].dtype
        )

    # -- properties ------------------------------------------------------------------------
    @property
    def url(self) -> str:
        """URL of the view store."""
        return self.spec.url

    @property
    def variables(self) -> tuple[str, ...]:
        """Paths of the view's own variables."""
        return self.config.variables

    @property
    def schema(self) -> Schema:
        """Base and view variables together."""
        return self.joined_config.schema

    def __repr__(self) -> str:
        base_vars = [p for p, _ in self.base.schema.walk()]
        return (
            f"<{type(self).__name__} {self.url!r} mode={self.mode!r}>\n"
            f"  base {self.base.url!r} (read-only, reference {self.config.reference!r}): "
            f"{', '.join(base_vars)}\n"
            f"  view: {', '.join(self.variables)}"
        )

    # -- catalogs ----------------------------------------------------------------------------
    def _check_keys(self, overlay: Catalog) -> Catalog:
        """``overlay``, refused when its partition keys are not the base's.

        The base was recreated with another partitioning since the view was
        computed: no view partition can be matched to a base one (the view's
        catalog would be read with the wrong number of key columns).
        """
        keys = tuple(self.base.partitioning.keys)
        if tuple(overlay.key_names) != keys:
            raise SchemaError(
                f"view {self.url} was computed over partitions keyed by "
                f"{list(overlay.key_names)}, its base {self.base.url} is now keyed by "
                f"{list(keys)}: recreate the view (create_view(..., overwrite=True))"
            )
        return overlay

    async def overlay_catalog(self) -> Catalog:
        """The view's computed partitions (its own catalog, else a listing of its tree)."""
        await self.spec.refresh()
        return self._check_keys(await self.discovery.load())

    async def _writable_catalog(self) -> Catalog:
        """The newest overlay catalog, published first when only listed (reference views)."""
        await self.spec.refresh()
        log = self.discovery.log
        latest = await log.writable()  # never on a version below a damaged one
        if latest is not None:
            return self._check_keys(latest)
        listed = await self.discovery.load()
        first = self.variables[0]
        io = ReadSource(self.spec, self.overlay_config).io
        handles = await asyncio.gather(
            *(io.open_handle(f"{p}/{first}", first) for p in listed.paths)
        )
        rows = numpy.array([h.shape[0] for h in handles], dtype="int64")
        adopted = dataclasses.replace(listed, rows=rows, has_stats=True, version=0)
        await log.initialise()
        await log.versions()
        adopted = log.numbered(adopted.next_version(new_txn_id()))
        if await log.commit(adopted):
            return adopted
        latest = await log.latest()  # another writer adopted it first
        assert latest is not None
        return latest

    def _canonical(self, catalog: Catalog, i: int) -> str:
        return self.base.partitioning.encode(catalog.key_tuple(i))

    async def partitions(self, filters: FilterLike = None) -> list[str]:
        """Canonical paths of the computed view partitions matching ``filters``, in key order."""
        catalog = (await self.overlay_catalog()).select(
            compile_filter(filters, self.base.partitioning.keys)
        )
        return [self._canonical(catalog, i) for i in range(len(catalog))]

    # -- read --------------------------------------------------------------------------------
    def _discoveries(
        self, base_spec: StoreSpec, view_spec: StoreSpec
    ) -> tuple[CatalogDiscovery, CatalogDiscovery]:
        """Catalog discoveries over the pinned specs of the base and of the view.

        A spec that was already pinned keeps its discovery: the versions its
        open listed (``CatalogLog.prime``) save the first read a round trip.
        """
        part, dtype = self.base.partitioning, self.discovery.axis_dtype
        return (
            self.base.discovery_of(base_spec),
            self.discovery if view_spec is self.spec else CatalogDiscovery(view_spec, part, dtype),
        )

    async def _catalogs(
        self, predicate: Any = None
    ) -> tuple[StoreSpec, Catalog, StoreSpec, Catalog]:
        """Pinned specs and catalogs of the base and of the overlay, read concurrently.

        Each catalog is read from the pinned spec its data is read from (one
        snapshot of each side), and only its segments ``predicate`` may match.
        """
        base_spec, view_spec = await asyncio.gather(self.base.spec.pinned(), self.spec.pinned())
        bdisc, odisc = self._discoveries(base_spec, view_spec)
        choose = by_filter(predicate)
        # The two catalogs are independent: one chain of round trips, not two.
        base, overlay = await asyncio.gather(bdisc.load(choose), odisc.load(choose))
        self._check_keys(overlay)
        if predicate is not None:  # the base's is selected by the read's filter
            overlay = overlay.select(predicate)
        return base_spec, base, view_spec, overlay

    def _source(
        self, base_spec: StoreSpec, view_spec: StoreSpec, overlay: Catalog, stale: StaleMode
    ) -> ViewSource:
        return ViewSource(
            base_spec,
            self.joined_config,
            base=ReadSource(base_spec, self.base.config),
            overlay=ReadSource(view_spec, self.overlay_config),
            url=self.url,
            overlay_catalog=overlay,
            stale=_check_stale_mode(stale),
        )

    async def source(self, stale: StaleMode = "raise") -> ViewSource:
        """The read source of the current overlay catalog (what the read tasks carry)."""
        _check_stale_mode(stale)
        base_spec, view_spec = await asyncio.gather(self.base.spec.pinned(), self.spec.pinned())
        overlay = self._check_keys(await self._discoveries(base_spec, view_spec)[1].load())
        return self._source(base_spec, view_spec, overlay, stale)

    def _names(self, variables: Sequence[str] | None) -> tuple[str, ...]:
        every = tuple(p for p, _ in self.schema.walk())
        if variables is None:
            return every
        wanted = [v.strip("/") for v in ([variables] if isinstance(variables, str) else variables)]
        for v in wanted:
            if v not in self.schema:
                raise VariableNotFoundError(f"variable {v!r} is in neither the view nor its base")
        return tuple(v for v in every if v in wanted)

    async def lazy(
        self,
        *,
        filters: FilterLike = None,
        variables: Sequence[str] | None = None,
        stale: StaleMode = "raise",
    ) -> LazyCollection:
        """The lazy collection over base and view (see :func:`read_view`)."""
        names = self._names(variables)
        _check_stale_mode(stale)
        # Only the catalog segments the filter may match, on both sides (it is applied below).
        predicate = compile_filter(filters, self.base.partitioning.keys)
        base_spec, catalog, view_spec, overlay = await self._catalogs(predicate)
        source = self._source(base_spec, view_spec, overlay, stale)
        lazy = LazyCollection(ReadPartitions(source, catalog, len(catalog), names))
        return lazy.filter(filters) if filters is not None else lazy

    async def query(
        self,
        *,
        filters: FilterLike = None,
        variables: Sequence[str] | None = None,
        stale: StaleMode = "raise",
    ) -> Dataset | None:
        """Read the selected partitions eagerly; ``None`` when nothing matches."""
        lazy = await self.lazy(filters=filters, variables=variables, stale=stale)
        return await asyncio.to_thread(lazy.compute)

    async def stale_partitions(self) -> list[str]:
        """Canonical paths of the computed partitions whose base partition changed since.

        A partition is stale when its base partition was dropped, or has another
        row count, path or writing transaction than the one it was computed from
        (views of the reference implementation: another row count).
        """
        base_spec, base, view_spec, overlay = await self._catalogs()
        pos = base.find(overlay.keys) if len(overlay) else numpy.empty(0, dtype="intp")
        first = self.variables[0]
        axis = self.base.config.axis_variable
        osource = ReadSource(view_spec, self.overlay_config)
        bsource = ReadSource(base_spec, self.base.config)

        async def base_rows(path: str, rows: int) -> int:
            if rows >= 0:
                return rows
            return int((await bsource.io.open_handle(f"{path}/{axis}", axis)).shape[0])

        async def overlay_rows(path: str, rows: int) -> int:
            if rows >= 0:
                return rows
            return int((await osource.io.open_handle(f"{path}/{first}", first)).shape[0])

        async def one(i: int) -> str | None:
            j = int(pos[i])
            canonical = self._canonical(overlay, i)
            if j < 0:
                return canonical
            path = base.paths[j]
            # Independent reads: one round trip, not four.
            rows, orows, own, theirs = await asyncio.gather(
                base_rows(path, int(base.rows[j])),
                overlay_rows(overlay.paths[i], int(overlay.rows[i])),
                group_attrs(osource, overlay.paths[i]),
                group_attrs(bsource, path),
            )
            record = (own or {}).get(BASE_ATTR)
            txn = (theirs or {}).get(TXN_ATTR)
            return canonical if check_stale(record, orows, path, rows, txn) else None

        found = await asyncio.gather(*(one(i) for i in range(len(overlay))))
        return [c for c in found if c is not None]

    # -- write -------------------------------------------------------------------------------
    def _check_writable(self) -> None:
        if self.mode != "rw":
            raise ReadOnlyError(f"view {self.url} is open read-only; open it with mode='rw'")

    async def _run(
        self, plan: Callable[[], Awaitable[tuple[Any, Transaction] | None]], compute: bool
    ) -> Any:
        """Plan and run a write graph; abort and re-plan on a lost race (the write path's rules)."""
        if not compute:
            # Nothing aborts a lazy update after its graph: its tasks do (see LAZY_WRITE).
            token = LAZY_WRITE.set(True)
            try:
                planned = await plan()
            finally:
                LAZY_WRITE.reset(token)
            if planned is None:
                import dask

                return dask.delayed(list)(())
            return planned[0]

        async def attempt() -> list[str]:
            planned = await plan()
            if planned is None:
                return []
            graph, txn = planned
            scheduler = None if txn.spec.shippable() else "threads"
            async with txn.aborting(), txn.alive(final=True):
                written: list[str] = await asyncio.to_thread(graph.compute, scheduler=scheduler)
            return written

        return await retry_on_conflict(attempt, DEFAULT_RETRIES)

    async def update(
        self,
        func: Callable[..., Any],
        *,
        filters: FilterLike = None,
        variables: Sequence[str] | None = None,
        compute: bool = True,
        index: Any = None,
        depth: Any = None,
        boundary: Any = "none",
        **predicates: Any,
    ) -> Any:
        """Compute view variables of the selected base partitions with ``func``.

        ``func`` gets each base partition as a :class:`Dataset` (base and view
        variables, or only ``variables`` when given; view variables not
        computed yet are fill values) and returns view variables (a
        ``Dataset`` or a mapping path -> array), each of the partition's
        length. Variables it does not return keep their stored values. One
        task per base partition, then one commit of the view store.

        With ``index`` (the name of an index stored in the view, or an
        :class:`~dask_zcollection.indexing.Indexer`) and ``predicates`` on its
        columns, ``func`` gets only the selected rows of the partitions the
        index names; only those rows of the view variables it returns are
        written (the others keep their values, or fill values in a partition
        never computed). With ``depth`` (rows or a time span, as for
        :meth:`~dask_zcollection.LazyCollection.map_overlap`), ``func`` gets
        each partition extended by its neighbours' rows (padded with
        ``boundary`` when a constant) and its result is trimmed. The lookup and
        the halos are taken when planning; each task re-checks the versions
        they came from (a partition committed since is a lost race: re-planned).

        Returns
        -------
        list of str or Delayed
            Canonical paths of the partitions computed (or the lazy update).

        Raises
        ------
        SchemaError
            When ``func`` returns an unknown or base variable, a wrong length
            or dtype (naming the partition and variable; nothing is committed).
        ReadOnlyError
            When the view is open read-only.
        """
        self._check_writable()
        check_update_call(func, index, depth, predicates)
        names = self._names(variables)
        overlay_set = set(self.variables)
        job = ViewUpdate(
            func=func,
            base=ReadSource(await self.base.spec.pinned(), self.base.config),
            overlay_config=self.overlay_config,
            joined=self.schema,
            base_names=tuple(
                v for v in names if v not in overlay_set and not self.schema[v].immutable
            ),
            overlay_names=tuple(v for v in names if v in overlay_set),
            url=self.url,
        )
        compile_filter(filters, self.base.partitioning.keys)  # a bad filter: nothing written
        immutable = [v for v in names if self.schema[v].immutable]
        if immutable:
            catalog = await self.base.catalog(refresh=True)
            stored = await self.base.planner.stored_immutable(catalog, immutable)
            job = dataclasses.replace(job, immutable=stored)

        async def plan() -> tuple[Any, Transaction] | None:
            # The base's catalog and data from one state of it, the newest (each attempt).
            await self.base.spec.refresh()
            base_spec = await self.base.spec.pinned()
            base = await self.base.discovery_of(base_spec).load()
            current = dataclasses.replace(job, base=ReadSource(base_spec, self.base.config))
            selected = base.select(compile_filter(filters, self.base.partitioning.keys))
            chosen = current
            if index is not None or depth is not None:
                # Taken again on each attempt: a retry sees the versions that won the race.
                chosen, selected = await self._selection_job(
                    current, names, filters, index, depth, boundary, predicates
                )
            if not len(selected):
                return None
            overlay = await self._writable_catalog()
            canonicals = [self._canonical(selected, i) for i in range(len(selected))]
            txn = await Transaction.begin(self.spec, overlay, selected.keys, canonicals)
            pos = overlay.find(selected.keys)
            plans, parts = [], []
            for i in range(len(selected)):
                j = int(pos[i])
                plans.append(
                    PartitionPlan(
                        key=selected.key_tuple(i),
                        canonical=canonicals[i],
                        existing=None
                        if j < 0
                        else (overlay.paths[j], int(overlay.rows[j]), True, overlay.identity(j)),
                        stored=None
                        if j < 0
                        else AxisRange(
                            overlay.axis_min[j], overlay.axis_max[j], int(overlay.rows[j])
                        ),
                        read_existing=True,
                        append=False,
                    )
                )
                stats = selected.has_stats and int(selected.rows[i]) >= 0
                part: BasePart = (
                    selected.paths[i],
                    int(selected.rows[i]) if stats else -1,
                    selected.axis_min[i] if stats and selected.rows[i] else None,
                    selected.axis_max[i] if stats and selected.rows[i] else None,
                    selected.identity(i),
                )
                parts.append(part)
            ctx = WriteContext(
                source=ReadSource(txn.spec, self.joined_config),
                txn=txn,
                strategy=chosen,  # type: ignore[arg-type]
                variables=(),
                abort_in_tasks=LAZY_WRITE.get(),
            )
            return build_update_graph(ctx, chosen, selected.keys, plans, parts), txn

        return await self._run(plan, compute)

    async def _selection_job(
        self,
        job: ViewUpdate,
        names: tuple[str, ...],
        filters: FilterLike,
        index: Any,
        depth: Any,
        boundary: Any,
        predicates: dict[str, Any],
    ) -> tuple[ViewUpdate, Catalog]:
        """The job of ``update(index=)`` / ``update(depth=)`` and the base partitions it writes.

        The collection's helpers do the lookup (``_engine._index_rows``) and the
        halos (``_overlap``); this adds the view side of the versions re-checked.
        """
        from .._engine import _index_rows
        from .._overlap import neighbour_versions, plan_halos, read_halos
        from ..indexing._stored import entry_maker

        maker = None
        if isinstance(index, str):  # the index named: its entries are rebuilt beside the data
            maker = await entry_maker(await self.spec.pinned(), index, self.base.axis_variable)
        whole = await self.lazy(stale="fill")
        lazy = whole.filter(filters) if filters is not None else whole
        source = whole.source
        assert isinstance(source, ViewSource)
        full = whole.catalog
        if index is not None:
            rows_of, where, versions = await asyncio.to_thread(_index_rows, lazy, index, predicates)
            selected = full.select(compile_filter(where or None, self.base.partitioning.keys))
            if not rows_of:
                return job, selected.take(numpy.zeros(0, dtype="intp"))
            canonical = [self._canonical(selected, i) for i in range(len(selected))]
            mine = await _view_versions(source, full, canonical)
            depends: dict[str, tuple[tuple[Any, ...], tuple[Any, ...]]] = {
                c: ((versions[c],), (mine[c],)) for c in canonical
            }
            ranges = {c: rows_of[c][1] for c in canonical}
            entries = None
            if maker is not None:
                entries = (maker[0], None if maker[1] is None else tuple(maker[1]))
            job = dataclasses.replace(job, rows=ranges, depends_on=depends, index_entries=entries)
            return job, selected
        selected = lazy.catalog
        canonical = lazy.partitions
        counts = selected.rows.tolist()
        if any(n < 0 for n in counts):
            axis = self.base.config.axis_variable
            counts = [
                n if n >= 0 else await self.base.io.row_count(p, axis)
                for p, n in zip(selected.paths, counts, strict=True)
            ]
        planned, constant = await asyncio.to_thread(
            plan_halos, source, full, selected, [(0, n) for n in counts], depth, boundary
        )
        read = tuple(v for v in names if not self.schema[v].immutable)
        halos = await read_halos(source, planned, read)
        theirs = await neighbour_versions(source, full, canonical, planned)
        around = sorted({v[0] for vs in theirs.values() for v in vs})
        mine = await _view_versions(source, full, around)
        around_deps: dict[str, tuple[tuple[Any, ...], tuple[Any, ...]]] = {
            c: (theirs[c], tuple(mine[v[0]] for v in theirs[c])) for c in canonical
        }
        job = dataclasses.replace(
            job,
            halos={
                c: (before, after, h.pad_before, h.pad_after)
                for c, (h, _, _), (before, after) in zip(canonical, planned, halos, strict=True)
            },
            constant=constant,
            depends_on=around_deps,
        )
        return job, selected

    async def repair(self, *, force: bool = False, dry_run: bool = False) -> RepairReport:
        """Set aside the view's damaged catalog versions (see :meth:`View.repair`)."""
        self._check_writable()
        from .._repair import set_aside_damaged

        return await set_aside_damaged(self.spec, force=force, dry_run=dry_run)

    async def drop_partitions(self, filters: FilterLike = None) -> list[str]:
        """Forget the computed view partitions matching ``filters`` (the base is untouched)."""
        self._check_writable()
        predicate = compile_filter(filters, self.base.partitioning.keys)

        async def attempt() -> list[str]:
            overlay = await self._writable_catalog()
            dropped = overlay.select(predicate)
            if not len(dropped):
                return []
            canonicals = [self._canonical(dropped, i) for i in range(len(dropped))]
            txn = await Transaction.begin(self.spec, overlay, dropped.keys, canonicals)
            async with txn.aborting():
                token = lock_token(txn.txn, done=True)  # a drop writes nothing under its locks
                for canonical in canonicals:
                    await acquire_lock(self.spec, canonical, token)
                await txn.commit(DropPartitions(dropped.keys))
            return canonicals

        return await retry_on_conflict(attempt, DEFAULT_RETRIES)


async def _view_versions(
    source: ViewSource, full: Catalog, canonical: Sequence[str]
) -> dict[str, tuple[Any, ...]]:
    """Canonical path -> the view partition version a read of ``source`` saw (``check_versions``).

    A partition the view had not computed is recorded as such (path ``None``).
    """
    from ..indexing._indexer import _txns

    computed = {c: (p, int(n)) for c, p, n in source.computed}
    keys = {c: k for c, k in zip(_canonicals_of(source, full), full.keys.tolist(), strict=True)}
    mine = [c for c in canonical if c in computed]
    txns = dict(
        zip(mine, await _txns(source.overlay.spec, [computed[c][0] for c in mine]), strict=True)
    )
    out: dict[str, tuple[Any, ...]] = {}
    for c in canonical:
        key = tuple(int(x) for x in keys[c])
        path, rows = computed.get(c, (None, -1))
        out[c] = (c, key, path, rows, txns.get(c))
    return out


def _canonicals_of(source: ViewSource, catalog: Catalog) -> list[str]:
    """Canonical path of each partition of ``catalog``."""
    encode = source.config.partitioning.encode
    return [encode(catalog.key_tuple(i)) for i in range(len(catalog))]


# -- openers -----------------------------------------------------------------------------------
async def _open_base(
    base: BaseLike, storage_options: Mapping[str, Any] | None, *, pin: bool = True
) -> AsyncCollection:
    """The base collection, read-only (a URL, a spec, or an open collection).

    ``pin``: stay on the base's state of now (a reader's snapshot on Icechunk);
    otherwise each operation starts from the newest (a view open for writing:
    an update must see what the base committed since the view was opened).
    """
    if isinstance(base, AsyncCollection):
        return base
    impl = getattr(base, "aio", None)
    if isinstance(impl, AsyncCollection):
        return impl
    spec = resolve_store(base, storage_options)
    if pin:
        spec = await spec.pinned()
    # The catalog versions are listed meanwhile, as open_collection does: the
    # first catalog read then fetches the newest root during its own listing.
    log = CatalogLog(spec)
    config, _ = await asyncio.gather(read_config(spec), log.prime())
    collection = AsyncCollection(spec, config, "r")
    collection.discovery.log.guess = log.guess
    return collection


def _variable(item: Any) -> VariableSchema:
    if isinstance(item, VariableSchema):
        return item
    if not isinstance(item, Mapping):
        raise InvalidInputError(
            f"view variables must be VariableSchema objects or mappings, got {item!r}"
        )
    fields = dict(item)
    unknown = set(fields) - {"name", "dtype", "dimensions", "fill_value", "codecs", "attrs"}
    if unknown or "name" not in fields or "dtype" not in fields or "dimensions" not in fields:
        raise SchemaError(
            f"view variable {fields.get('name')!r}: needs name, dtype and dimensions "
            f"(and optionally fill_value, codecs, attrs); got unknown field(s) {sorted(unknown)}"
        )
    return (
        Schema()
        .with_variable(
            fields["name"],
            dtype=fields["dtype"],
            dimensions=fields["dimensions"],
            fill_value=fields.get("fill_value"),
            codecs=fields.get("codecs"),
            attrs=fields.get("attrs"),
        )
        .root.variables[0]
    )


def view_schema(base: AsyncCollection, variables: Sequence[Any]) -> Schema:
    """The view's schema: its variables and the base dimensions they use.

    Raises
    ------
    SchemaError
        A variable named like a base variable or group, a dimension the base
        lacks, a variable not spanning the partitioned dimension first.
    """
    if isinstance(variables, str | Mapping) or not isinstance(variables, Sequence) or not variables:
        raise InvalidInputError(
            f"variables must be a non-empty list of view variables, got {variables!r}"
        )
    dims = base.schema.all_dimensions()
    taken = {p for p, _ in base.schema.walk()} | {p for p, _ in base.schema.walk_groups() if p}
    schema = Schema()
    declared: list[str] = []
    for item in variables:
        var = _variable(item)
        if var.name in taken:
            raise SchemaError(
                f"view variable {var.name!r} clashes with a variable or group of the base "
                f"collection {base.url}"
            )
        if not var.dimensions or var.dimensions[0] != base.axis:
            raise SchemaError(
                f"view variable {var.name!r} must have the partitioned dimension {base.axis!r} "
                f"first, got dimensions {var.dimensions}"
            )
        for d in var.dimensions:
            if d not in dims:
                raise SchemaError(
                    f"view variable {var.name!r}: dimension {d!r} is not a dimension of the "
                    f"base collection {base.url} (it has {sorted(dims)})"
                )
            if d not in declared:
                dim = dims[d]
                if d != base.axis and dim.size is None:
                    raise SchemaError(f"view variable {var.name!r}: dimension {d!r} has no size")
                schema = schema.with_dimension(
                    d, size=dim.size, chunks=dim.chunks, shards=dim.shards
                )
                declared.append(d)
        schema = schema.with_variable(
            var.name,
            dtype=var.dtype,
            dimensions=var.dimensions,
            fill_value=var.fill_value,
            codecs=var.codecs,
            attrs=var.attrs,
        )
    return schema.build().with_axis(base.axis)


async def create_view(
    store: StoreLike,
    *,
    base: BaseLike,
    variables: Sequence[Any],
    overwrite: bool = False,
    storage_options: Mapping[str, Any] | None = None,
    base_storage_options: Mapping[str, Any] | None = None,
) -> AsyncView:
    """Create a view over ``base`` and return it open for writing.

    Parameters
    ----------
    store : str or StoreSpec
        Where the view lives (``file:///...``, ``memory://...``, ``s3://...``).
    base : str, StoreSpec or Collection
        The base collection; a URL is recorded exactly as given (a relative one
        resolves against the view's URL taken as a directory), an open
        collection by its URL. Credentials are never recorded.
    variables : sequence of VariableSchema or mappings
        The view's variables (``name``, ``dtype``, ``dimensions``, and optionally
        ``fill_value``, ``codecs``, ``attrs``), each spanning the base's
        partitioned dimension first.
    overwrite : bool
        Replace an existing view (all of it).
    storage_options, base_storage_options : dict, optional
        Backend options of the view store and of the base.

    Raises
    ------
    CollectionNotFoundError
        When ``base`` is not a collection.
    SchemaError
        A view variable named like a base one, a dimension the base lacks.
    AlreadyExistsError
        When the view store holds data and ``overwrite`` is false.
    """
    if isinstance(base, str | os.PathLike):
        reference = os.fspath(base)
        base_url = resolve_reference(_url_of(store), reference)
        collection = await _open_base(base_url, base_storage_options, pin=False)
    else:
        collection = await _open_base(base, base_storage_options, pin=False)
        reference = collection.url
    schema = view_schema(collection, variables)
    spec = resolve_store(store, storage_options).for_writing()
    if _overlaps(spec, collection.spec):
        # Inside the base it would write into the base's tree; around it, overwrite=True
        # would clear the base with the view's old content.
        raise InvalidInputError(
            f"a view cannot live in, or hold, its base collection "
            f"(view {spec.url}, base {collection.url})"
        )
    if overwrite:
        check_clearable(store, spec)
    if await spec.exists(VIEW_CONFIG_KEY) or not await spec.is_empty():
        if not overwrite:
            raise AlreadyExistsError(f"a view (or other data) already exists at {spec.url}")
        await spec.clear()
        forget_collection(spec.url)
    config = ViewConfig(reference=reference, schema=schema)
    await spec.put("zarr.json", group_json())
    await write_view_config(spec, config)
    view = AsyncView(spec, config, collection, "rw")
    log = CatalogLog(spec)
    await log.initialise()
    await log.commit(view.discovery.empty().next_version("create"))
    await spec.publish(f"dask_zcollection create view over {reference}")
    return view


def _where(spec: StoreSpec) -> str:
    """Where ``spec`` keeps its objects: a real local path, else its URL (no trailing ``/``)."""
    root = local_root(spec)
    return spec.url.rstrip("/") if root is None else "file://" + root


def _overlaps(a: StoreSpec, b: StoreSpec) -> bool:
    """Whether one of the stores ``a`` and ``b`` is, or lies inside, the other."""
    x, y = _where(a), _where(b)
    return x == y or x.startswith(y + "/") or y.startswith(x + "/")


def _url_of(store: StoreLike) -> str:
    return os.fspath(store) if isinstance(store, str | os.PathLike) else resolve_store(store).url


#: The base URL each view opened in this process named (bounded): the next open
#: reads the base's descriptor while it reads the view's, and checks it was right.
_BASES: dict[str, str] = {}
_BASES_MAX = 1024


def _remember_base(view_url: str, base_url: str) -> None:
    _BASES.pop(view_url, None)
    _BASES[view_url] = base_url
    if len(_BASES) > _BASES_MAX:
        del _BASES[next(iter(_BASES))]


async def open_view(
    store: StoreLike,
    *,
    mode: Mode = "r",
    base: BaseLike | None = None,
    storage_options: Mapping[str, Any] | None = None,
    base_storage_options: Mapping[str, Any] | None = None,
    version: str | None = None,
) -> AsyncView:
    """Open an existing view (``mode="r"`` or ``"rw"``).

    ``base`` overrides the base the view names (a URL or an open collection);
    ``version`` (Icechunk view stores, ``mode="r"``) reads the view as of a
    snapshot id, tag or branch.

    Raises
    ------
    CollectionNotFoundError
        When there is no view at ``store``, or its base is not a collection.
    """
    if mode not in ("r", "rw"):
        raise InvalidInputError(f"mode must be 'r' or 'rw', got {mode!r}")
    spec = resolve_store(store, storage_options)
    if mode == "rw":
        if version is not None:
            raise InvalidInputError("version= reads the past: open the view with mode='r'")
        spec = spec.for_writing()
    else:
        spec = await spec.pinned(version)
    # A reader lists the view's catalog versions while it reads the descriptors
    # (see CatalogLog.prime): its first read saves a round trip.
    log = CatalogLog(spec)
    prime = log.prime() if mode == "r" else asyncio.sleep(0)
    view_url = _url_of(store)
    # The base is opened while the view's descriptor is read: the one given, else
    # the one this view named when last opened here (kept only if it still does).
    target = base if base is not None else _BASES.get(view_url)
    pin = mode == "r"
    opening = (
        _open_base(target, base_storage_options, pin=pin)
        if target is not None
        else asyncio.sleep(0)
    )
    got = await asyncio.gather(read_view_config(spec), opening, prime, return_exceptions=True)
    for outcome in got:  # the view's error first; then a cancellation or the given base's
        if isinstance(outcome, BaseException) and (
            outcome is got[0] or base is not None or not isinstance(outcome, Exception)
        ):
            raise outcome
    config: ViewConfig = got[0]  # type: ignore[assignment]
    collection: AsyncCollection = got[1]  # type: ignore[assignment]
    if base is None:
        named = resolve_reference(view_url, config.reference)
        if named != target or isinstance(collection, BaseException):
            collection = await _open_base(named, base_storage_options, pin=pin)
        _remember_base(view_url, named)
    view = AsyncView(spec, config, collection, mode)
    view.discovery.log.guess = log.guess
    if mode == "rw":
        await recover(spec)
    return view


async def read_view(
    store: StoreLike,
    *,
    base: BaseLike | None = None,
    variables: Sequence[str] | None = None,
    filters: FilterLike = None,
    stale: StaleMode = "raise",
    storage_options: Mapping[str, Any] | None = None,
    base_storage_options: Mapping[str, Any] | None = None,
    version: str | None = None,
) -> LazyCollection:
    """Open a view lazily: a :class:`LazyCollection` over base and view variables.

    Partitions the view has not computed read as fill values; ``stale``
    says what a partition computed from a since-changed base partition does:
    ``"raise"`` a :class:`~dask_zcollection.errors.StalePartitionError`
    naming it, or ``"fill"`` read fill values.
    """
    view = await open_view(
        store,
        mode="r",
        base=base,
        storage_options=storage_options,
        base_storage_options=base_storage_options,
        version=version,
    )
    return await view.lazy(filters=filters, variables=variables, stale=stale)


async def is_view(store: StoreLike, storage_options: Mapping[str, Any] | None = None) -> bool:
    """Whether ``store`` holds a view descriptor."""
    return await resolve_store(store, storage_options).exists(VIEW_CONFIG_KEY)
