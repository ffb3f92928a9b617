"""The synchronous front door of views: each method hands its coroutine to the one bridge."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from .._sync import sync
from ..collection import LazyCollection
from ..data import Dataset
from ..partitioning._filter import FilterLike
from ..store import StoreLike
from . import _view
from ._source import StaleMode
from ._view import AsyncView, BaseLike, Mode

if TYPE_CHECKING:
    from .._repair import RepairReport

__all__ = ["View", "create_view", "open_view", "read_view"]


class View:
    """Variables of their own over a read-only base collection (synchronous API).

    Get one from :func:`create_view` or :func:`open_view`; the coroutine twin
    of every method is on :attr:`aio`. The base is never written: the view's
    variables live in the view store, one group per computed partition at the
    base's partition path.
    """

    def __init__(self, impl: AsyncView) -> None:
        self.aio = impl

    url = property(lambda self: self.aio.url, doc="URL of the view store.")
    mode = property(lambda self: self.aio.mode, doc="'r' or 'rw'.")
    variables = property(lambda self: self.aio.variables, doc="The view's own variables.")
    schema = property(lambda self: self.aio.schema, doc="Base and view variables together.")

    @property
    def base(self) -> Any:
        """The base collection (open read-only)."""
        from ..api import Collection

        return Collection(self.aio.base)

    def __repr__(self) -> str:
        return repr(self.aio).replace("AsyncView", "View", 1)

    def partitions(self, filters: FilterLike = None) -> list[str]:
        """Canonical paths of the computed view partitions matching ``filters``."""
        return sync(self.aio.partitions(filters))

    def stale_partitions(self) -> list[str]:
        """Canonical paths of computed partitions whose base partition changed since."""
        return sync(self.aio.stale_partitions())

    def lazy(
        self,
        *,
        filters: FilterLike = None,
        variables: Sequence[str] | None = None,
        stale: StaleMode = "raise",
    ) -> LazyCollection:
        """The lazy collection over base and view variables (see :func:`read_view`)."""
        return sync(self.aio.lazy(filters=filters, variables=variables, stale=stale))

    def query(
        self,
        *,
        filters: FilterLike = None,
        variables: Sequence[str] | None = None,
        stale: StaleMode = "raise",
    ) -> Dataset | None:
        """Read the selected partitions (numpy-backed); ``None`` when nothing matches."""
        return self.lazy(filters=filters, variables=variables, stale=stale).compute()  # type: ignore[no-any-return]

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
        """Compute view variables of the selected partitions with ``func(partition)``.

        See :meth:`dask_zcollection.view.AsyncView.update`. ``compute=False``
        returns a :class:`dask.delayed.Delayed` to compute later (on a
        ``distributed`` cluster, inside a larger ``dask.compute``).
        ``index=`` and keyword predicates on its columns: ``func`` gets (and
        writes) only the rows the index selects; ``depth=``: ``func`` gets each
        partition with ``depth`` rows (or a time span) of its neighbours, as
        for ``Collection.update``.

        Examples
        --------
        >>> view.update(recheck, index="runs", flag=1)  # doctest: +SKIP
        >>> view.update(smooth, depth=3, variables=["ssh"])  # doctest: +SKIP
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

    def drop_partitions(self, filters: FilterLike = None) -> list[str]:
        """Forget the computed view partitions matching ``filters``; returns their paths."""
        return sync(self.aio.drop_partitions(filters))

    def repair(self, *, force: bool = False, dry_run: bool = False) -> RepairReport:
        """Set aside the view's damaged catalog versions; then updates and drops write again.

        A damaged newest catalog version (truncated, bad magic, zero bytes, an
        object that is no real version) makes reads fall back to the newest
        intact version with a warning, and every write refuse with a
        :class:`~dask_zcollection.errors.CorruptedDataError`: a commit on the
        version below would lose what the damaged one committed. This cleans
        up after dead writers, copies the damaged objects under
        ``_quarantine/``, commits the drops they held again (numbered past
        them), and only then deletes them; the view partitions the damaged
        version computed read as not computed until :meth:`update` computes
        them again (from the base, unchanged).

        Parameters
        ----------
        force : bool
            Treat every writer as dead (only when none can be running).
        dry_run : bool
            Report what would be done; change nothing.

        Returns
        -------
        RepairReport
            ``quarantined`` lists the objects set aside, with the reason;
            ``dropped`` the drops committed again; ``recovered`` the dead
            writers cleaned up.
        """
        return sync(self.aio.repair(force=force, dry_run=dry_run))

    # -- indexes ---------------------------------------------------------------------------
    def create_index(
        self,
        name: str,
        builder: Callable[..., Any],
        *,
        filters: FilterLike = None,
        variables: Sequence[str] | None = None,
        overwrite: bool = False,
    ) -> list[str]:
        """Build an index with ``builder`` and store it in the view's store as ``name``.

        ``builder(partition) -> columns`` gets each partition with base and view
        variables (``variables`` only, when given), as for
        :meth:`dask_zcollection.Collection.create_index`. Each partition's entry
        records the base partition's version and the view partition's (its
        ``_zc_txn``, or that the view had not computed it): recomputing the view
        partition or rewriting the base one makes the entry stale, and
        ``read_view(url).filter(index=name, ...)`` then refuses it
        (:class:`~dask_zcollection.errors.StaleIndexError` naming the partition)
        until :meth:`update_index`. Returns the partitions indexed.

        Examples
        --------
        >>> view.create_index("flagged", runs_of_flag, variables=["flag"])  # doctest: +SKIP
        >>> dzc.read_view(url).filter(index="flagged", flag=1).compute()  # doctest: +SKIP
        """
        return sync(
            self.aio.create_index(
                name, builder, filters=filters, variables=variables, overwrite=overwrite
            )
        )

    def update_index(self, name: str, builder: Callable[..., Any] | None = None) -> list[str]:
        """Rebuild the stale or missing entries of index ``name`` (the stored builder by default).

        Returns the partitions rebuilt; entries of partitions the base dropped go.
        """
        return sync(self.aio.update_index(name, builder))

    def drop_index(self, name: str) -> None:
        """Delete index ``name`` from the view's store."""
        sync(self.aio.drop_index(name))

    def indexes(self) -> list[str]:
        """Names of the indexes stored in the view's store."""
        return sync(self.aio.indexes())


def create_view(
    store: StoreLike,
    *,
    base: BaseLike,
    variables: Sequence[Any],
    overwrite: bool = False,
    storage_options: Mapping[str, Any] | None = None,
    base_storage_options: Mapping[str, Any] | None = None,
) -> View:
    """Create a view over ``base`` (see :func:`dask_zcollection.aio.create_view`).

    Examples
    --------
    >>> view = dzc.create_view(  # doctest: +SKIP
    ...     "file:///data/anomalies", base="file:///data/altimetry",
    ...     variables=[{"name": "ssh_anom", "dtype": "float32", "dimensions": ["time"],
    ...                 "fill_value": float("nan")}])
    """
    return View(
        sync(
            _view.create_view(
                store,
                base=base,
                variables=variables,
                overwrite=overwrite,
                storage_options=storage_options,
                base_storage_options=base_storage_options,
            )
        )
    )


def open_view(
    store: StoreLike,
    *,
    mode: Mode = "r",
    base: BaseLike | None = None,
    storage_options: Mapping[str, Any] | None = None,
    base_storage_options: Mapping[str, Any] | None = None,
    version: str | None = None,
) -> View:
    """Open a view (``mode="r"`` or ``"rw"``); ``base=`` overrides the base it names."""
    return View(
        sync(
            _view.open_view(
                store,
                mode=mode,
                base=base,
                storage_options=storage_options,
                base_storage_options=base_storage_options,
                version=version,
            )
        )
    )


def read_view(
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
    """Open a view lazily, as a Dask collection over base and view variables.

    Parameters
    ----------
    store : str or StoreSpec
        The view's URL.
    base : str or Collection, optional
        Overrides the base the view names.
    variables : list of str, optional
        Base and/or view variables to read (all by default).
    filters : str or mapping, optional
        A partition-key filter.
    stale : {"raise", "fill"}
        Reading a partition computed from a since-changed base partition raises
        :class:`~dask_zcollection.errors.StalePartitionError`, or reads fill values.

    Examples
    --------
    >>> ds = dzc.read_view("file:///data/anomalies").filter("month == 2")  # doctest: +SKIP
    >>> ds[["ssh", "ssh_anom"]].compute()  # doctest: +SKIP
    """
    return sync(
        _view.read_view(
            store,
            base=base,
            variables=variables,
            filters=filters,
            stale=stale,
            storage_options=storage_options,
            base_storage_options=base_storage_options,
            version=version,
        )
    )
