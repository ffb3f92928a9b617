"""An xarray backend: ``xr.open_dataset(url, engine="zcollection")`` and ``xr.open_datatree``.

>>> ds = xr.open_dataset("file:///data/altimetry", engine="zcollection",
...                      filters="year == 2024", chunks={})              # doctest: +SKIP
>>> ds.sel(time=slice("2024-03-01", "2024-03-03")).load()               # doctest: +SKIP

Registered as the ``zcollection`` entry point of ``xarray.backends``. Opening
reads the descriptor and the catalog (a filter prunes partitions there, before
anything else is read), nothing more: the axis variable is the index along the
partitioned dimension, an :class:`~dask_zcollection._xarray_index.AxisIndex`
that the catalog's per-partition min/max place, so ``sel`` on a label range
reads the axis of the partitions it touches only (a plain pandas index read at
open when the catalog cannot place them). Every other variable is a
:class:`ZCollectionArray`: lazy, read only for the rows an indexing asks (one
concurrent read per partition touched). With ``chunks={}`` the dask chunks are
our blocks (a block per zarr chunk inside each partition, as
:meth:`~dask_zcollection.LazyCollection.to_dask_array` makes them).

CF decoding follows ``xr.open_dataset``: a variable's fill value is its
``_FillValue``; ``mask_and_scale=True`` (the default) turns it into NaN (an
integer variable with a fill value becomes floating point, as with netCDF), and
``mask_and_scale=False`` keeps the stored values with ``_FillValue`` in the
attributes. See ``docs/xarray.md``.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, ClassVar

import numpy
from xarray.backends import BackendArray, BackendEntrypoint
from xarray.core import indexing

from ._sync import sync
from ._xarray_index import AxisIndex, LazyAxis
from .catalog._discovery import IMMUTABLE_PATH
from .errors import CorruptedDataError, InvalidInputError, NotFoundError, StorageError
from .io import CONFIG_KEY, ReadSource, read_block, unwritten_immutable
from .io._memory import empty
from .store import StoreSpec
from .view._config import VIEW_CONFIG_KEY

if TYPE_CHECKING:
    import xarray

    from .collection import LazyCollection
    from .io._fastread import ArrayHandle

__all__ = ["ZCollectionArray", "ZCollectionBackendEntrypoint"]

#: Seconds an opened partition array is reused by the blocks of a dataset: past it,
#: its ``zarr.json`` is read (and its identity checked) again.
HANDLE_TTL = 1.0


class ZCollectionArray(BackendArray):
    """One variable of a collection, read lazily (xarray's ``BackendArray``).

    Parameters
    ----------
    source : ReadSource
        The store and descriptor read from.
    paths : sequence of str
        The selected partitions, in key order.
    ranges : numpy.ndarray
        Rows ``[start, stop)`` kept of each partition (``(n, 2)``).
    variable : str
        The variable path.
    immutable_path : str
        The group holding the immutable variables.
    txns : sequence of str, optional
        The identity of each partition's group the catalog records, checked
        when its array is opened (``""`` or none given: not checked).
    """

    def __init__(
        self,
        source: ReadSource,
        paths: Sequence[str],
        ranges: numpy.ndarray,
        variable: str,
        immutable_path: str,
        txns: Sequence[str] | None = None,
    ) -> None:
        spec = source.config.schema[variable]
        dims = source.config.schema.all_dimensions()
        self.source, self.variable, self.immutable_path = source, variable, immutable_path
        self.paths = tuple(paths)
        self.txns = dict(zip(self.paths, txns, strict=True)) if txns else {}
        self.ranges = numpy.asarray(ranges, dtype="int64").reshape(-1, 2)
        # Row offset of each partition in the concatenation.
        self.offsets = numpy.concatenate(([0], numpy.cumsum(self.ranges[:, 1] - self.ranges[:, 0])))
        self.immutable = spec.immutable
        tail = spec.dimensions if spec.immutable else spec.dimensions[1:]
        shape_tail = tuple(dims[d].size or 0 for d in tail)
        self.shape = shape_tail if spec.immutable else (int(self.offsets[-1]), *shape_tail)
        self.dtype = numpy.dtype(spec.dtype)
        #: The opened array of each partition read (its ``zarr.json`` is read once, not by
        #: every dask block of it); in flight while being opened. Opened again after
        #: HANDLE_TTL: a dataset read slowly must still see its partition's version go.
        self._handles: dict[str, tuple[float, asyncio.Future[ArrayHandle]]] = {}

    def __getstate__(self) -> dict[str, Any]:
        # Opened handles (and futures of the library's event loop) stay in this process.
        state = dict(self.__dict__)
        state["_handles"] = {}
        return state

    def __getitem__(self, key: indexing.ExplicitIndexer) -> Any:
        return indexing.explicit_indexing_adapter(
            key, self.shape, indexing.IndexingSupport.BASIC, self._getitem
        )

    def _getitem(self, key: tuple[Any, ...]) -> numpy.ndarray:
        if self.immutable:
            whole = sync(read_block(self.source, self.immutable_path, self.variable, 0, 0))
            return numpy.asarray(whole)[key]
        first, rest = key[0], key[1:]
        n = self.shape[0]
        # The rows as bounds, never as an index array: with ``chunks={}`` every dask
        # block calls here, and ``arange(n)`` cost each one a fresh 8 bytes per row
        # of the whole variable (8 MB for the benchmark's million rows).
        local: Any
        if isinstance(first, slice):
            start, stop, step = first.indices(n)
            if step == 1:
                lo, hi, local = start, max(start, stop), slice(None)
            else:
                rows = numpy.arange(start, stop, step)  # the selected rows only
                if not rows.size:
                    lo = hi = 0
                else:
                    lo, hi = int(rows.min()), int(rows.max()) + 1
                    local = rows - lo
        else:  # an integer
            lo = int(first) + n if int(first) < 0 else int(first)
            if not 0 <= lo < n:
                raise IndexError(f"index {first} is out of bounds for {self.variable!r} ({n} rows)")
            hi, local = lo + 1, 0
        if hi <= lo:
            return numpy.empty((0, *self.shape[1:]), dtype=self.dtype)[(slice(None), *rest)]
        values = sync(self._read_rows(lo, hi))
        return values[(local, *rest)]

    async def _read_rows(self, lo: int, hi: int) -> numpy.ndarray:
        """Rows ``[lo, hi)`` of the concatenation, decoded straight into one array.

        One read per partition touched, concurrent (each decodes its chunks in
        the reader's thread pool).
        """
        offsets = self.offsets
        out = empty((hi - lo, *self.shape[1:]), self.dtype)  # large: on reused memory
        first = int(numpy.searchsorted(offsets, lo, side="right")) - 1
        last = int(numpy.searchsorted(offsets, hi, side="left"))
        reads = []
        for i in range(first, last):
            start, offset = int(self.ranges[i, 0]), int(offsets[i])
            a = max(lo, offset) - offset + start
            b = min(hi, int(offsets[i + 1])) - offset + start
            if b > a:
                at = max(lo, offset) - lo
                reads.append(self._read_into(self.paths[i], a, b, out[at : at + b - a]))
        await asyncio.gather(*reads)
        return out

    async def _handle(self, path: str) -> ArrayHandle:
        """The array of ``path`` (opened on first use; concurrent callers share the read)."""
        opened, opening = self._handles.get(path, (0.0, None))
        now = time.monotonic()
        if (
            opening is None
            or opening.get_loop() is not asyncio.get_running_loop()  # a forked child's loop
            or (opening.done() and (opening.cancelled() or opening.exception() is not None))
            or now - opened > HANDLE_TTL
        ):
            io, name = self.source.io, self.variable
            opening = asyncio.ensure_future(_open_one(io, path, name, self.txns.get(path, "")))
            self._handles[path] = (now, opening)
        return await asyncio.shield(opening)

    async def _read_into(self, path: str, start: int, stop: int, out: numpy.ndarray) -> None:
        arr = await self._handle(path)
        try:
            await arr.read_into(start, stop, out)
        except CorruptedDataError:
            raise
        except OSError as err:
            raise StorageError(f"cannot read {arr.key!r}: {err}") from err


async def _open_one(io: Any, path: str, name: str, txn: str) -> ArrayHandle:
    (handle,) = await io.open_partition(path, [name], txn)
    return handle


def _block_chunks(lazy: LazyCollection, variable: str, ranges: numpy.ndarray) -> tuple[int, ...]:
    """The rows of each block of ``variable`` (a block per zarr chunk inside each partition)."""
    from .expr import ReadBlocks

    blocks = ReadBlocks(lazy.source, lazy.catalog, variable, ranges)
    return blocks.chunks[0]


def _lazy_axis(
    array: ZCollectionArray, expr: Any, ranges: numpy.ndarray, spec: Any
) -> LazyAxis | None:
    """The axis read on demand, when the catalog's statistics place every partition.

    ``None`` (read the axis at open) without statistics, for an axis CF decoding
    transforms, or when the partitions' ranges overlap (the axis is then not
    sorted across partitions, and pandas would answer differently).
    """
    catalog = expr.catalog
    if (
        not catalog.has_stats
        or (catalog.rows < 0).any()
        or spec.dtype.kind not in "iufM"
        or spec.fill_value is not None
        or {"scale_factor", "add_offset"} & set(spec.attrs)
    ):
        return None
    lo, hi = catalog.bounds(expr.operand("time_range"))
    lo = numpy.asarray(lo, dtype=spec.dtype)
    hi = numpy.asarray(hi, dtype=spec.dtype)
    if not LazyAxis.ordered(lo, hi, ranges[:, 1] - ranges[:, 0]):
        return None
    return LazyAxis(array, lo, hi)


def _open_collection(
    filename_or_obj: Any,
    filters: Any,
    variables: Sequence[str] | None,
    storage_options: Mapping[str, Any] | None,
    version: str | None,
) -> LazyCollection:
    from .api import read_collection

    store = (
        os.fspath(filename_or_obj) if isinstance(filename_or_obj, os.PathLike) else filename_or_obj
    )
    return read_collection(
        store,
        variables=variables,
        filters=filters,
        storage_options=storage_options,
        version=version,
    )


class _Opened:
    """The raw (undecoded) xarray variables of an opened collection, by group."""

    def __init__(
        self, lazy: LazyCollection, drop_variables: Iterable[str], lazy_index: bool = True
    ) -> None:
        import xarray

        from .expr import ReadPartitions

        self.lazy = lazy
        #: The axis read on demand (``None``: read at open, a plain pandas index).
        self.lazy_axis: LazyAxis | None = None
        config = lazy.source.config
        self.axis, self.axis_variable = config.axis, config.axis_variable
        expr, rows = lazy._block_ranges()
        if not isinstance(expr, ReadPartitions):  # pragma: no cover - read_collection only reads
            raise InvalidInputError("the xarray backend opens a stored collection")
        ranges = numpy.asarray(rows, dtype="int64").reshape(-1, 2)
        catalog = expr.catalog
        immutable_path = catalog.immutable or IMMUTABLE_PATH
        schema = config.schema
        drop = {d.strip("/") for d in drop_variables}
        self.groups: dict[str, dict[str, xarray.Variable]] = {
            p: {} for p, _ in schema.walk_groups()
        }
        self.group_attrs = {p: dict(g.attrs) for p, g in schema.walk_groups()}
        dims = schema.all_dimensions()
        # A view (read_collection of a view's URL): its own variables live in the view
        # store, at its own paths, and may be stale or not computed; the block reads of
        # to_dask_array know that. The base's are read from the base as for a collection.
        overlay = getattr(lazy.source, "overlay", None)
        own = {p for p, _ in overlay.config.schema.walk()} if overlay is not None else set()
        base = getattr(lazy.source, "base", lazy.source)
        for path in lazy.variables:
            group, _, name = path.rpartition("/")
            if path in drop or (name in drop and path != self.axis_variable):
                continue
            spec = schema[path]
            # The stored dtype, for CF encoding on write (not of times: stored natively, a
            # datetime64 "dtype" would make xarray cast its encoded numbers to datetimes).
            encoding: dict[str, Any] = {} if spec.dtype.kind in "mM" else {"dtype": spec.dtype}
            if not spec.immutable:
                chunks = _block_chunks(lazy, path, ranges) or (0,)  # (0,): nothing selected
                encoding["preferred_chunks"] = {
                    spec.dimensions[0]: chunks,
                    **{d: dims[d].size for d in spec.dimensions[1:]},
                }
            attrs = dict(spec.attrs)
            if spec.fill_value is not None:
                attrs["_FillValue"] = spec.fill_value
            data: Any
            unwritten = unwritten_immutable(config, catalog, path)
            if path in own:
                data = lazy.to_dask_array(path)
            elif unwritten is not None:
                data = unwritten
            else:
                array = ZCollectionArray(
                    base, catalog.paths, ranges, path, immutable_path, catalog.identities
                )
                data = indexing.LazilyIndexedArray(array)
            if path == self.axis_variable:
                self.lazy_axis = _lazy_axis(array, expr, ranges, spec) if lazy_index else None
                if self.lazy_axis is None:  # no usable statistics: read the index now
                    data = array[indexing.BasicIndexer((slice(None),))]
            self.groups[group][name] = xarray.Variable(spec.dimensions, data, attrs, encoding)

    def dataset(self, group: str, decoders: Mapping[str, Any], with_axis: bool) -> xarray.Dataset:
        """The decoded dataset of one group (``with_axis``: add the axis coordinate if missing)."""
        import xarray
        from xarray import conventions

        variables = dict(self.groups[group])
        axis_group, _, axis_name = self.axis_variable.rpartition("/")
        axis_var = self.groups.get(axis_group, {}).get(axis_name)
        # The axis coordinate belongs here: its own group, or another group opened alone
        # whose variables span the axis and do not name one of theirs like it (it gets a
        # copy; a tree inherits it instead).
        has_axis = axis_var is not None and (
            group == axis_group
            or (
                with_axis
                and axis_name not in variables
                and any(self.axis in v.dims for v in variables.values())
            )
        )
        if has_axis and group != axis_group:
            variables[axis_name] = axis_var  # type: ignore[assignment]
        decoded, attrs, coord_names = conventions.decode_cf_variables(
            variables, self.group_attrs[group], **decoders
        )
        coords = {
            k
            for k, v in decoded.items()
            if k in coord_names or (v.ndim == 1 and v.dims[0] == k) or (has_axis and k == axis_name)
        }
        lazy_axis = self.lazy_axis if has_axis else None
        if lazy_axis is not None and decoded[axis_name].dtype != lazy_axis.array.dtype:
            lazy_axis = None  # CF decoding changed the values: index the decoded ones
        index_coords = None
        if lazy_axis is not None:
            # The lazy index (``_xarray_index``): nothing of the axis is read until a query
            # needs it.
            decoded = dict(decoded)
            var = decoded.pop(axis_name)
            index = AxisIndex(lazy_axis, axis_name, str(var.dims[0]))
            index_coords = xarray.Coordinates(
                index.create_variables({axis_name: var}), indexes={axis_name: index}
            )
        ds = xarray.Dataset(decoded, attrs=attrs).set_coords(sorted(coords & set(decoded)))
        if index_coords is not None:
            ds = ds.assign_coords(index_coords)
        elif has_axis and axis_name not in ds.xindexes:
            ds = ds.set_xindex(axis_name)  # ``time`` along ``num_lines``: a non-dimension index
        return ds


def _decoders(**kwargs: Any) -> dict[str, Any]:
    return {k: v for k, v in kwargs.items() if v is not None}


class ZCollectionBackendEntrypoint(BackendEntrypoint):
    """Open a collection with ``xr.open_dataset(url, engine="zcollection")``.

    Keyword arguments besides xarray's decoders: ``filters`` (a partition-key
    filter, as :meth:`~dask_zcollection.LazyCollection.filter`; a mapping may
    also hold a time range on the axis variable, ``{"time": slice(a, b)}``,
    bounds included), ``variables``
    (paths to read; the axis variable is always read, for the index),
    ``storage_options``, ``version`` (Icechunk snapshot, tag or branch),
    ``group`` (``open_dataset`` only; the root group by default) and
    ``lazy_index`` (``False``: read the axis at open into a plain pandas index,
    which aligns with other xarray objects' indexes; see ``docs/xarray.md``).
    """

    description = "Open a dask_zcollection collection (partitioned Zarr v3 groups)"
    url = "https://github.com/CNES/dask_zcollection"
    open_dataset_parameters: ClassVar[tuple[str, ...]] = (  # type: ignore[misc]
        "filename_or_obj",
        "drop_variables",
        "mask_and_scale",
        "decode_times",
        "decode_timedelta",
        "use_cftime",
        "concat_characters",
        "decode_coords",
        "group",
        "filters",
        "variables",
        "storage_options",
        "version",
        "lazy_index",
    )

    def guess_can_open(self, filename_or_obj: Any) -> bool:
        """A store spec, or a local path (``file://`` URL) holding a collection or view descriptor.

        Remote URLs are not probed (that would cost a request for every file any
        engine is asked to open): pass ``engine="zcollection"``.
        """
        if isinstance(filename_or_obj, StoreSpec):
            return True
        if not isinstance(filename_or_obj, str | os.PathLike):
            return False
        path = os.fspath(filename_or_obj)
        if path.startswith("file://"):
            path = path[len("file://") :]
        elif "://" in path:
            return False
        return any(os.path.isfile(os.path.join(path, key)) for key in (CONFIG_KEY, VIEW_CONFIG_KEY))

    def open_dataset(  # type: ignore[override]
        self,
        filename_or_obj: Any,
        *,
        drop_variables: str | Iterable[str] | None = None,
        mask_and_scale: bool = True,
        decode_times: bool = True,
        decode_timedelta: bool | None = None,
        use_cftime: bool | None = None,
        concat_characters: bool = True,
        decode_coords: bool = True,
        group: str | None = None,
        filters: Any = None,
        variables: Sequence[str] | None = None,
        storage_options: Mapping[str, Any] | None = None,
        version: str | None = None,
        lazy_index: bool = True,
    ) -> xarray.Dataset:
        """One group of the collection (the root by default) as a lazy ``xarray.Dataset``."""
        opened = self._open(
            filename_or_obj,
            drop_variables,
            filters,
            variables,
            storage_options,
            version,
            lazy_index,
        )
        name = (group or "").strip("/")
        if name not in opened.groups:
            raise NotFoundError(
                f"group {group!r} is not in the collection (groups: "
                f"{['/' + g for g in opened.groups]})"
            )
        decoders = _decoders(
            mask_and_scale=mask_and_scale,
            decode_times=decode_times,
            decode_timedelta=decode_timedelta,
            use_cftime=use_cftime,
            concat_characters=concat_characters,
            decode_coords=decode_coords,
        )
        return opened.dataset(name, decoders, with_axis=True)

    def open_groups_as_dict(  # type: ignore[override]
        self,
        filename_or_obj: Any,
        *,
        drop_variables: str | Iterable[str] | None = None,
        mask_and_scale: bool = True,
        decode_times: bool = True,
        decode_timedelta: bool | None = None,
        use_cftime: bool | None = None,
        concat_characters: bool = True,
        decode_coords: bool = True,
        filters: Any = None,
        variables: Sequence[str] | None = None,
        storage_options: Mapping[str, Any] | None = None,
        version: str | None = None,
        lazy_index: bool = True,
    ) -> dict[str, xarray.Dataset]:
        """Every group as a dataset, by path (``"/"``, ``"/data_01/ku"``)."""
        opened = self._open(
            filename_or_obj,
            drop_variables,
            filters,
            variables,
            storage_options,
            version,
            lazy_index,
        )
        decoders = _decoders(
            mask_and_scale=mask_and_scale,
            decode_times=decode_times,
            decode_timedelta=decode_timedelta,
            use_cftime=use_cftime,
            concat_characters=concat_characters,
            decode_coords=decode_coords,
        )
        # Nested groups inherit the axis coordinate from the root in the tree.
        return {"/" + g: opened.dataset(g, decoders, with_axis=False) for g in opened.groups}

    def open_datatree(  # type: ignore[override]
        self,
        filename_or_obj: Any,
        *,
        drop_variables: str | Iterable[str] | None = None,
        **kwargs: Any,
    ) -> xarray.DataTree:
        """Every group of the collection as a lazy ``xarray.DataTree``."""
        import xarray

        groups = self.open_groups_as_dict(filename_or_obj, drop_variables=drop_variables, **kwargs)
        return xarray.DataTree.from_dict(groups)  # type: ignore[arg-type]

    @staticmethod
    def _open(
        filename_or_obj: Any,
        drop_variables: str | Iterable[str] | None,
        filters: Any,
        variables: Sequence[str] | None,
        storage_options: Mapping[str, Any] | None,
        version: str | None,
        lazy_index: bool = True,
    ) -> _Opened:
        lazy = _open_collection(filename_or_obj, None, None, storage_options, version)
        axis = lazy.source.config.axis_variable
        if isinstance(filters, Mapping) and axis in filters:
            # A time range among the key filters: pruned by the catalog's statistics, so
            # the index is read of the partitions it touches only.
            keys = {k: v for k, v in filters.items() if k != axis}
            lazy = lazy.filter(keys or None, **{axis: filters[axis]})
        elif filters is not None:
            lazy = lazy.filter(filters)
        if variables is not None:
            names = [variables] if isinstance(variables, str) else list(variables)
            # The axis variable is always read: it is the index.
            lazy = lazy[[*names, axis] if axis not in names else names]
        drop = [drop_variables] if isinstance(drop_variables, str) else list(drop_variables or ())
        return _Opened(lazy, drop, lazy_index)
