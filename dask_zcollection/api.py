"""Synchronous front door: each method hands its coroutine to the one bridge."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

from . import _engine, aio
from ._engine import AsyncCollection, Mode
from ._prepare import _to_dataset
from ._repair import RepairReport
from ._sync import sync
from .catalog import Catalog
from .collection import LazyCollection
from .data import Dataset
from .errors import ZCollectionError
from .io import VerifyReport
from .merge import MergeLike
from .partitioning import Partitioning
from .partitioning._filter import FilterLike
from .schema import Schema
from .store import StoreLike

__all__ = ["Collection", "create_collection", "open_collection"]


class Collection:
    """A partitioned collection of Zarr groups (synchronous API).

    Get one from :func:`create_collection` or :func:`open_collection`; the
    coroutine twin of every method is on :attr:`aio`.
    """

    def __init__(self, impl: AsyncCollection) -> None:
        self.aio = impl

    url = property(lambda self: self.aio.url, doc="URL of the collection root.")
    schema = property(lambda self: self.aio.schema, doc="The collection schema.")
    partitioning = property(lambda self: self.aio.partitioning, doc="How rows map to partitions.")
    axis = property(lambda self: self.aio.axis, doc="The partitioned dimension.")
    mode = property(lambda self: self.aio.mode, doc="'r' or 'rw'.")

    def __repr__(self) -> str:
        # The committed partitions and their size: the catalog is read once
        # (cached until the next write); a repr never raises for it.
        try:
            catalog = self.catalog()
        except (ZCollectionError, OSError, RuntimeError):
            catalog = None
        return self.aio.describe(catalog).replace("AsyncCollection", "Collection", 1)

    def catalog(self, *, refresh: bool = False) -> Catalog:
        """The committed partition index."""
        return sync(self.aio.catalog(refresh=refresh))

    def partitions(self, filters: FilterLike = None) -> list[str]:
        """Canonical paths of the partitions matching ``filters``, in key order."""
        return sync(self.aio.partitions(filters))

    def query(
        self, *, filters: FilterLike = None, variables: Sequence[str] | None = None
    ) -> Dataset | None:
        """Read the selected partitions (numpy-backed); ``None`` when nothing matches.

        Parameters
        ----------
        filters : str, mapping or None
            Filter on partition keys, e.g. ``"year == 2024 and month in (3, 4)"``
            or ``{"year": 2024}``.
        variables : list of str, optional
            Variable paths to read (all by default).
        """
        return self.lazy(filters=filters, variables=variables).compute()  # type: ignore[no-any-return]

    def lazy(
        self, *, filters: FilterLike = None, variables: Sequence[str] | None = None
    ) -> LazyCollection:
        """The lazy Dask collection over the current catalog (see :func:`read_collection`)."""
        return sync(self.aio.lazy(filters=filters, variables=variables))

    def insert(
        self,
        data: Any,
        *,
        merge: MergeLike = None,
        retries: int = _engine.DEFAULT_RETRIES,
        compute: bool = True,
    ) -> Any:
        """Insert data, merging with the stored partitions through ``merge``.

        Parameters
        ----------
        data : Dataset, xarray.Dataset, xarray.DataTree or mapping
            Rows to insert; every partitioned variable of the schema.
        merge : None, str, MergeStrategy or callable
            ``None``/``"replace"``, ``"concat"``, ``"time_series"``, ``"upsert"``,
            ``merge.upsert_within(tol)`` or ``fn(existing, inserted, *, axis)``.
        retries : int
            Re-plans after losing a commit race on the same partitions.
        compute : bool
            ``False`` returns the insert as a :class:`dask.delayed.Delayed`, to
            compute later, e.g. in one ``dask.compute`` with the pipeline that
            produces ``data`` or on a ``distributed`` cluster.

        Returns
        -------
        list of str or Delayed
            Canonical paths of the partitions written (or the lazy insert).
        """
        if type(data).__module__.startswith("xarray"):
            # Here, in the caller's thread: xarray's lazy indexes and backend arrays (ours
            # included) read through a synchronous API that cannot run inside the event
            # loop the insert runs on. Backend arrays become dask arrays, not reads.
            data = _to_dataset(data, self.aio.config.schema)
        return sync(self.aio.insert(data, merge=merge, retries=retries, compute=compute))

    def update(
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
        """Rewrite variables of the selected partitions with ``func(partition) -> Dataset``.

        ``func`` gets each partition as a :class:`Dataset` (only ``variables``
        when given) and returns the variables to replace, same rows. All
        partitions are rewritten aside and published by one commit.

        With ``index=`` (a stored index's name or an
        :class:`~dask_zcollection.indexing.Indexer`) and keyword predicates on
        its columns (``pass_number=[12, 13]``), ``func`` gets only the rows the
        index selects (of the partitions it names) and only those are replaced.

        With ``depth=`` (rows, or a time span along the axis) ``func`` gets each
        partition extended by its neighbours' rows, as for
        :meth:`LazyCollection.map_overlap` (``boundary`` too), and returns the
        variables over the extended rows; the halo is trimmed before writing.
        """
        return sync(
            self.aio.update(
                func,
                filters=filters,
                variables=variables,
                compute=compute,
                index=index,
                depth=depth,
                boundary=boundary,
                **predicates,
            )
        )

    def create_index(
        self,
        name: str,
        builder: Callable[..., Any],
        *,
        filters: FilterLike = None,
        variables: Sequence[str] | None = None,
        overwrite: bool = False,
    ) -> list[str]:
        """Build an index with ``builder`` and store it in the collection (``_indexes/<name>/``).

        ``builder(partition: Dataset)`` returns the key columns and ``_start``,
        ``_stop`` (see :meth:`dask_zcollection.indexing.Indexer.build`). Read
        through it with ``read_collection(url).filter(index=name, column=...)``.
        Writers never update an index: a lookup refuses partitions rewritten
        since (:class:`~dask_zcollection.errors.StaleIndexError`) until
        :meth:`update_index` rebuilds them. Returns the partitions indexed.
        """
        return sync(
            self.aio.create_index(
                name, builder, filters=filters, variables=variables, overwrite=overwrite
            )
        )

    def update_index(self, name: str, builder: Callable[..., Any] | None = None) -> list[str]:
        """Rebuild the entries of index ``name`` that are stale or missing; return those partitions.

        Without ``builder``, the one given to :meth:`create_index` (stored with
        the index) runs.
        """
        return sync(self.aio.update_index(name, builder))

    def drop_index(self, name: str) -> None:
        """Delete index ``name``."""
        sync(self.aio.drop_index(name))

    def indexes(self) -> list[str]:
        """Names of the indexes stored in the collection."""
        return sync(self.aio.indexes())

    def map(self, func: Callable[..., Any], *, filters: FilterLike = None) -> dict[str, Any]:
        """``func(partition)`` for every selected partition, as one graph: path -> result."""
        return sync(self.aio.map(func, filters=filters))

    def drop_partitions(self, filters: FilterLike = None) -> list[str]:
        """Delete the partitions matching ``filters``; returns their paths."""
        return sync(self.aio.drop_partitions(filters))

    def vacuum(self, *, older_than: float | None = None) -> list[str]:
        """Delete superseded partition versions retired more than ``older_than`` seconds ago.

        Superseded (and dropped) versions stay readable for readers holding an
        older catalog for ``dask.config`` ``zcollection.retention`` seconds
        (default one hour); every commit collects those past it. Returns the
        paths deleted. ``older_than`` must be a finite number of seconds >= 0
        (else :class:`~dask_zcollection.errors.InvalidInputError`, nothing done).
        """
        return sync(self.aio.vacuum(older_than=older_than))

    def verify(self, filters: FilterLike = None) -> VerifyReport:
        """Read every chunk of the selected partitions and report damage.

        Each chunk is checked against its crc32c checksum and the record of
        the chunks written (see ``docs/format.md``): bit flips, truncations,
        swapped and missing chunks are listed in ``report.damaged`` by store
        key. Partitions written without checksums (the reference format) are
        listed in ``report.unverifiable``. Memory holds a few chunks at a time.

        Parameters
        ----------
        filters : str, mapping or None
            Filter on partition keys (all partitions and the immutable group
            by default).

        Returns
        -------
        VerifyReport
            ``report.ok`` is true when nothing is damaged.

        Examples
        --------
        >>> report = collection.verify()  # doctest: +SKIP
        >>> report.ok, report.damaged  # doctest: +SKIP
        (True, ())
        """
        return sync(self.aio.verify(filters))

    def repair(self, *, force: bool = False, dry_run: bool = False) -> RepairReport:
        """Make the catalog and the tree agree, never dropping data that can be read.

        Cleans up after dead writers, then compares the newest intact catalog
        with the tree: rebuilds missing metadata of committed partitions,
        adopts groups whose commit was lost (no intact catalog, or damaged
        newer versions), quarantines what disagrees (copies under
        ``_quarantine/``, never deleted by :meth:`vacuum`), drops committed
        partitions with nothing left. Each partition is changed under its lock
        and the result is one commit that conflicts like any other: it never
        drops a partition committed meanwhile.

        Parameters
        ----------
        force : bool
            Treat every writer as dead (only when none can be running).
        dry_run : bool
            Report what would be done; change nothing.

        Returns
        -------
        RepairReport
            What was rebuilt, adopted, quarantined, dropped and skipped, with
            the reasons, and the catalog after the repair.

        Raises
        ------
        CorruptedDataError
            When the configuration cannot name the committed partitions
            (``_zcollection.json`` edited); nothing is changed.
        """
        return sync(self.aio.repair(force=force, dry_run=dry_run))


def create_collection(
    store: StoreLike,
    *,
    schema: Schema | None = None,
    axis: str | None = None,
    partitioning: Partitioning,
    axis_variable: str | None = None,
    overwrite: bool = False,
    storage_options: Mapping[str, Any] | None = None,
    from_: Any = None,
) -> Collection:
    """Create an empty collection (see :func:`dask_zcollection.aio.create_collection`).

    ``from_=ds`` (an ``xarray.Dataset`` or ``DataTree``) infers the schema from
    the data: ``dzc.create_collection(url, from_=ds, partitioning=...).insert(ds)``.
    """
    return Collection(
        sync(
            aio.create_collection(
                store,
                schema=schema,
                axis=axis,
                partitioning=partitioning,
                axis_variable=axis_variable,
                overwrite=overwrite,
                storage_options=storage_options,
                from_=from_,
            )
        )
    )


def open_collection(
    store: StoreLike,
    *,
    mode: Mode = "r",
    storage_options: Mapping[str, Any] | None = None,
    version: str | None = None,
) -> Collection:
    """Open an existing collection (``mode="r"`` or ``"rw"``).

    ``version`` (Icechunk only, ``mode="r"``) reads the collection as of a
    snapshot id, tag or branch.
    """
    return Collection(
        sync(
            aio.open_collection(store, mode=mode, storage_options=storage_options, version=version)
        )
    )


def read_collection(
    store: StoreLike,
    *,
    variables: Sequence[str] | None = None,
    filters: FilterLike = None,
    storage_options: Mapping[str, Any] | None = None,
    version: str | None = None,
) -> LazyCollection:
    """Open a collection lazily, as a Dask collection.

    Reads the collection descriptor and the catalog (never a listing of every
    partition when the catalog exists) and returns a :class:`LazyCollection`.

    Parameters
    ----------
    store : str or StoreSpec
        ``file:///path``, ``memory://name``, a local path or a store spec.
    variables : list of str, optional
        Variable paths to read (all by default).
    filters : str or mapping, optional
        A partition-key filter, as for :meth:`LazyCollection.filter`.
    storage_options : dict, optional
        Backend options.
    version : str, optional
        Icechunk only: the snapshot id, tag or branch to read (time travel).

    Examples
    --------
    >>> import dask_zcollection as dzc
    >>> ds = dzc.read_collection("file:///data/altimetry").filter("year == 2024")  # doctest: +SKIP
    >>> ds.compute()                                                             # doctest: +SKIP
    """
    return sync(  # one trip to the event loop
        aio.read_collection(
            store,
            variables=variables,
            filters=filters,
            storage_options=storage_options,
            version=version,
        )
    )
