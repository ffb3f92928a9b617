"""A table of row ranges per partition, keyed by the columns a builder computes.

>>> idx = Indexer.build(dzc.read_collection(url), half_orbits)        # doctest: +SKIP
>>> idx.lookup(pass_number=[12, 13])                                 # doctest: +SKIP
{'cycle_number=1': [(0, 3120), (6200, 9000)], ...}
>>> dzc.read_collection(url).filter(index=idx, pass_number=[12, 13])  # doctest: +SKIP

The table has the builder's columns plus ``_partition`` (canonical partition
path), ``_start`` and ``_stop`` (half-open ``[start, stop)`` rows of the
partition), the layout of the reference implementation's parquet indexer, so
its files read as they are. Files written here add, in the parquet schema
metadata, what the index was built from (partition keys, and each partition's
version path and row count) so a lookup over another collection, or over
partitions rewritten since, is refused instead of answering wrong rows.
"""

from __future__ import annotations

import asyncio
import dataclasses
import datetime
import io
import json
import numbers
import os
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy

from .._sync import sync
from ..errors import FilterError, InvalidInputError, StaleIndexError, StorageError
from ..store import resolve_store
from ._selection import RowSelection

if TYPE_CHECKING:
    from ..catalog import Catalog

__all__ = ["INDEX_META_KEY", "Indexer", "check_ranges", "normalise_columns"]

_TXN_ATTR = "_zc_txn"  # catalog._transaction.TXN_ATTR: the transaction that wrote a group

#: Columns every index has (the reference implementation's names).
PARTITION, START, STOP = "_partition", "_start", "_stop"
RESERVED = (PARTITION, START, STOP)
#: Key of our entry in the parquet schema metadata.
INDEX_META_KEY = b"dask_zcollection.index"
INDEX_FORMAT = 1

#: What a builder returns: columns by name (``_start``, ``_stop`` and the key columns).
Columns = dict[str, numpy.ndarray]


def normalise_columns(result: Any, partition: str) -> Columns:
    """A builder's result (mapping, pandas or pyarrow table) as numpy columns of one length."""
    if hasattr(result, "to_pydict") and hasattr(result, "column_names"):  # pyarrow
        columns = {str(n): result.column(n).to_numpy() for n in result.column_names}
    elif hasattr(result, "columns") and hasattr(result, "to_numpy"):  # pandas
        columns = {str(n): result[n].to_numpy() for n in result.columns}
    elif isinstance(result, Mapping):
        columns = {str(k): numpy.asarray(v) for k, v in result.items()}
    else:
        raise InvalidInputError(
            f"the index builder returned a {type(result).__name__} for partition {partition!r}: "
            "return a mapping of columns (or a pandas/pyarrow table) with _start and _stop"
        )
    missing = [c for c in (START, STOP) if c not in columns]
    if missing:
        raise InvalidInputError(
            f"the index builder's result for partition {partition!r} lacks column(s) {missing} "
            f"(it has {sorted(columns)})"
        )
    if PARTITION in columns:
        raise InvalidInputError(
            f"the index builder's result for partition {partition!r} has a {PARTITION!r} column: "
            "the indexer sets it"
        )
    flat = [name for name, col in columns.items() if col.ndim != 1]
    if flat:
        raise InvalidInputError(
            f"the index builder's column(s) {flat} for partition {partition!r} are not "
            "one-dimensional (one value per index row)"
        )
    lengths = {name: len(col) for name, col in columns.items()}
    if len(set(lengths.values())) > 1:
        raise InvalidInputError(
            f"the index builder's columns for partition {partition!r} differ in length: {lengths}"
        )
    for c in (START, STOP):
        if columns[c].dtype.kind not in "iu":
            raise InvalidInputError(
                f"column {c!r} of the index of partition {partition!r} holds "
                f"{columns[c].dtype}, not integers"
            )
        columns[c] = columns[c].astype("int64")
    return columns


def check_ranges(starts: numpy.ndarray, stops: numpy.ndarray, rows: int, partition: str) -> None:
    """Ranges lie in ``[0, rows)`` (``rows < 0``: unknown), are non-empty and do not overlap.

    Equal ranges (two keys naming the same rows) are allowed; otherwise sorted
    by start, each must end before the next begins.
    """
    if not len(starts):
        return
    bad = numpy.flatnonzero(
        (starts < 0) | (stops <= starts) | ((stops > rows) if rows >= 0 else False)
    )
    if len(bad):
        i = int(bad[0])
        raise InvalidInputError(
            f"index range [{starts[i]}, {stops[i]}) of partition {partition!r} is empty or "
            f"outside its rows [0, {rows if rows >= 0 else '?'})"
        )
    order = numpy.lexsort((stops, starts))
    s, e = starts[order], stops[order]
    same = (s[1:] == s[:-1]) & (e[1:] == e[:-1])
    overlap = (s[1:] < e[:-1]) & ~same
    if overlap.any():
        i = int(numpy.flatnonzero(overlap)[0])
        raise InvalidInputError(
            f"index ranges [{s[i]}, {e[i]}) and [{s[i + 1]}, {e[i + 1]}) of partition "
            f"{partition!r} overlap"
        )


async def _txns(spec: Any, paths: Sequence[str]) -> list[str | None]:
    """The ``_zc_txn`` of each partition group (``None``: the reference format has none)."""

    async def one(path: str) -> str | None:
        raw = await spec.get(f"{path}/zarr.json")
        if raw is None:
            return None
        txn = json.loads(raw).get("attributes", {}).get(_TXN_ATTR)
        return None if txn is None else str(txn)

    return list(await asyncio.gather(*(one(p) for p in paths)))


async def view_identities(source: Any, canonical: Sequence[str]) -> dict[str, Any] | None:
    """Canonical path -> ``{"path", "rows", "txn"}`` of the view partition read (``None``:
    not computed), when ``source`` reads a view; ``None`` otherwise."""
    overlay = getattr(source, "overlay", None)  # a view's read source (view._source.ViewSource)
    if overlay is None:
        return None
    computed = {c: (p, int(n)) for c, p, n in source.computed}
    mine = [c for c in canonical if c in computed]
    txns = await _txns(overlay.spec, [computed[c][0] for c in mine])
    out: dict[str, Any] = dict.fromkeys(canonical)
    for c, t in zip(mine, txns, strict=True):
        out[c] = {"path": computed[c][0], "rows": computed[c][1], "txn": t}
    return out


def _natural_key(path: str) -> tuple[Any, ...]:
    """Sort canonical paths by their key values (``cycle=2`` before ``cycle=10``)."""
    out: list[Any] = []
    for part in path.split("/"):
        name, _, value = part.partition("=")
        out.append((name, int(value)) if re.fullmatch(r"-?\d+", value) else (name, 0, value))
    return tuple(out)


def _build_one(ds: Any, builder: Callable[..., Any], partition: str, axis: str) -> Columns:
    """Run the builder over one partition and check what it returns (on a worker)."""
    if ds is None:
        return {}
    columns = normalise_columns(builder(ds), partition)
    rows = int(ds.dimensions.get(axis, 0))
    check_ranges(columns[START], columns[STOP], rows, partition)
    columns[PARTITION] = numpy.full(len(columns[START]), partition, dtype=object)
    columns["__rows"] = numpy.asarray([rows], dtype="int64")  # popped by build
    return columns


@dataclasses.dataclass(frozen=True, eq=False)
class Indexer:
    """Row ranges of each partition keyed by computed columns (an index).

    Attributes
    ----------
    table : dict of numpy.ndarray
        Columns of equal length: the key columns, ``_partition`` (canonical
        partition path), ``_start`` and ``_stop`` (rows ``[start, stop)``).
    meta : dict or None
        What the index was built from: ``keys`` (partition key names) and
        ``partitions`` (canonical path -> ``{"path", "rows"}`` of the version
        indexed). ``None`` for files of the reference implementation.
    """

    table: dict[str, numpy.ndarray]
    meta: dict[str, Any] | None = None

    def __post_init__(self) -> None:
        missing = [c for c in RESERVED if c not in self.table]
        if missing:
            raise InvalidInputError(
                f"an index needs columns {list(RESERVED)}; missing {missing} "
                f"(has {sorted(self.table)})"
            )

    # -- description -------------------------------------------------------------------------------
    @property
    def columns(self) -> tuple[str, ...]:
        """The key columns (what :meth:`lookup` takes)."""
        return tuple(c for c in self.table if c not in RESERVED)

    def __len__(self) -> int:
        return len(self.table[START])

    @property
    def partitions(self) -> list[str]:
        """Canonical paths of the partitions indexed, in key order."""
        return sorted({str(p) for p in self.table[PARTITION].tolist()}, key=_natural_key)

    def __repr__(self) -> str:
        return (
            f"<dask_zcollection.indexing.Indexer {len(self)} row(s), "
            f"{len(self.partitions)} partition(s), columns {list(self.columns)}>"
        )

    def __dask_tokenize__(self) -> Any:
        from dask.base import tokenize

        return ("Indexer", tokenize(self.table), json.dumps(self.meta, sort_keys=True))

    # -- building ----------------------------------------------------------------------------------
    @classmethod
    def build(
        cls,
        collection: Any,
        builder: Callable[..., Any],
        *,
        filters: Any = None,
        variables: Sequence[str] | None = None,
    ) -> Indexer:
        """Run ``builder`` over every partition, as one Dask graph.

        Parameters
        ----------
        collection : LazyCollection or Collection
            What to index: a lazy collection (``read_collection(url)``), or any
            object with ``lazy(filters=, variables=)`` returning one (a
            :class:`~dask_zcollection.Collection`, a view).
        builder : callable
            ``builder(partition: Dataset) -> columns``: a mapping (or pandas /
            pyarrow table) of equal-length columns, ``_start`` and ``_stop``
            (rows ``[start, stop)`` of the partition, non-overlapping) and the
            key columns. Runs on the workers of the active scheduler.
        filters : str or mapping, optional
            Partition-key filter: index only those partitions.
        variables : list of str, optional
            Variables the builder needs (all by default).

        Raises
        ------
        InvalidInputError
            When a builder result lacks ``_start``/``_stop``, its columns differ
            in length, or a range is empty, outside the partition or overlaps
            another (the message names the partition).
        """
        import dask

        lazy = _as_lazy(collection, filters, variables)
        config = lazy.source.config
        catalog = lazy.catalog
        canonical = lazy.partitions
        tasks = [
            dask.delayed(_build_one, pure=True)(part, builder, path, config.axis)
            for part, path in zip(lazy.to_delayed(), canonical, strict=True)
        ]
        results = dask.compute(*tasks)
        txns = sync(_txns(lazy.source.spec, catalog.paths))
        views = sync(view_identities(lazy.source, canonical))
        partitions: dict[str, dict[str, Any]] = {}
        for path, version, txn, result in zip(canonical, catalog.paths, txns, results, strict=True):
            rows = int(result.pop("__rows", numpy.zeros(1, dtype="int64"))[0]) if result else 0
            partitions[path] = {"path": version, "rows": rows, "txn": txn}
            if views is not None:  # built over a view: the view partition's version too
                partitions[path]["view"] = views[path]
        meta = {
            "format": INDEX_FORMAT,
            "keys": list(config.partitioning.keys),
            "axis": config.axis,
            "partitions": partitions,
        }
        return cls(concat_columns([r for r in results if r]), meta)

    # -- lookup ------------------------------------------------------------------------------------
    def _mask(self, predicates: Mapping[str, Any]) -> numpy.ndarray:
        mask = numpy.ones(len(self), dtype=bool)
        for name, value in predicates.items():
            if name not in self.columns:
                raise FilterError(
                    f"the index has no column {name!r} (its columns: {list(self.columns)})"
                )
            mask &= _match(self.table[name], value, name)
        return mask

    def lookup(self, **predicates: Any) -> dict[str, list[tuple[int, int]]]:
        """The row ranges matching every predicate, by partition (in key order).

        Parameters
        ----------
        **predicates
            ``column=value`` (equality), ``column=[v1, v2]`` (any of), or
            ``column=slice(lo, hi)`` (``lo <= value <= hi``, inclusive like
            partition-key filters; ``None`` is open).

        Returns
        -------
        dict
            ``{canonical partition path: [(start, stop), ...]}``: half-open row
            ranges, sorted, duplicates removed (adjacent ones are not merged).

        Raises
        ------
        FilterError
            When a predicate names a column the index does not have.
        """
        mask = self._mask(predicates)
        parts = self.table[PARTITION][mask]
        starts = self.table[START][mask].tolist()
        stops = self.table[STOP][mask].tolist()
        out: dict[str, set[tuple[int, int]]] = {}
        for p, a, b in zip(parts.tolist(), starts, stops, strict=True):
            out.setdefault(str(p), set()).add((int(a), int(b)))
        return {p: sorted(out[p]) for p in sorted(out, key=_natural_key)}

    def selection(
        self,
        catalog: Catalog,
        encode: Callable[[Sequence[int]], str],
        key_names: Sequence[str],
        *,
        complete: bool = True,
        selected: Catalog | None = None,
        txns: Mapping[str, str | None] | None = None,
        views: Mapping[str, Any] | None = None,
        **predicates: Any,
    ) -> RowSelection:
        """The rows of ``catalog``'s partitions matching ``predicates``, checked against it.

        Parameters
        ----------
        catalog : Catalog
            The committed partitions (the whole collection when ``complete``).
        encode : callable
            Key tuple -> canonical path (the collection's partitioning).
        key_names : sequence of str
            The collection's partition key names.
        complete : bool
            Whether ``catalog`` lists every partition: an index naming a
            partition it lacks is then of another collection (or stale).
        selected : Catalog, optional
            The partitions read (a key filter's selection of ``catalog``): only
            these must be up to date.
        txns : mapping, optional
            Canonical path -> the ``_zc_txn`` of its committed group (see
            :meth:`needs_txns`): compared with the one indexed, so a version
            written at a path an older one had is not taken for it.
        views : mapping, optional
            Over a view: canonical path -> the view partition's identity
            (:func:`view_identities`), compared with the one indexed (an index
            built over a view is stale once the view recomputes the partition).

        Raises
        ------
        InvalidInputError
            An index of another collection (other key names, unknown
            partitions, ranges past a partition's rows).
        StaleIndexError
            Partitions rewritten (or dropped) since the index was built.
        FilterError
            A predicate names an unknown column.
        """
        found = self.lookup(**predicates)
        canonical = [encode(catalog.key_tuple(i)) for i in range(len(catalog))]
        where = {p: i for i, p in enumerate(canonical)}
        meta = self.meta or {}
        if meta.get("keys") is not None and list(meta["keys"]) != list(key_names):
            raise InvalidInputError(
                f"the index was built over a collection partitioned by {meta['keys']}, "
                f"not {list(key_names)}: an index of another collection"
            )
        known = meta.get("partitions") or {}
        indexed = self.partitions
        gone = [p for p in indexed if p not in where]
        if gone and complete:
            if known:
                raise StaleIndexError(
                    f"the index names partition(s) {gone[:5]} that the collection no longer "
                    "holds (dropped since it was built): rebuild it"
                )
            raise InvalidInputError(
                f"the index names partition(s) {gone[:5]} that the collection does not hold: "
                "an index of another collection?"
            )
        stale = []
        chosen = (
            where
            if selected is None
            else set(encode(selected.key_tuple(i)) for i in range(len(selected)))
        )
        for path in found:
            i = where.get(path)
            if i is None or path not in chosen:
                continue
            rows = int(catalog.rows[i])
            entry = known.get(path)
            if entry is not None and (
                entry.get("path") != catalog.paths[i]
                or (rows >= 0 and entry.get("rows") != rows)
                or (txns is not None and "txn" in entry and entry["txn"] != txns.get(path))
                or (views is not None and "view" in entry and entry["view"] != views.get(path))
            ):
                stale.append(path)
                continue
            top = max(b for _, b in found[path])
            if rows >= 0 and top > rows:
                raise InvalidInputError(
                    f"the index selects rows up to {top} of partition {path!r}, which has "
                    f"{rows}: an index of another collection, or a stale one"
                )
        if stale:
            raise StaleIndexError(
                f"the index is out of date for partition(s) {stale[:10]} (rewritten since it "
                "was built): rebuild it"
            )
        label = ", ".join(f"{k}={v!r}" for k, v in predicates.items())
        return RowSelection.from_mapping(
            {p: r for p, r in found.items() if p in chosen and p in where}, label=f"index[{label}]"
        )

    def needs_txns(self) -> bool:
        """Whether :meth:`selection` compares partition transactions (an index built here)."""
        known = (self.meta or {}).get("partitions") or {}
        return any("txn" in entry for entry in known.values())

    # -- parquet -----------------------------------------------------------------------------------
    def to_parquet(self) -> bytes:
        """The index as the bytes of a parquet file."""
        import pyarrow
        import pyarrow.parquet as pq

        arrays = {}
        for name, col in self.table.items():
            arrays[name] = pyarrow.array(col.tolist() if col.dtype == object else col)
        table = pyarrow.table(arrays)
        if self.meta is not None:
            table = table.replace_schema_metadata(
                {INDEX_META_KEY: json.dumps(self.meta, sort_keys=True).encode()}
            )
        sink = io.BytesIO()
        pq.write_table(table, sink)
        return sink.getvalue()

    @classmethod
    def from_parquet(cls, data: bytes, name: str = "index") -> Indexer:
        """An index from the bytes of a parquet file (ours or the reference implementation's)."""
        import pyarrow
        import pyarrow.parquet as pq

        try:
            table = pq.read_table(pyarrow.BufferReader(data))
        except (pyarrow.ArrowInvalid, OSError) as err:
            raise InvalidInputError(f"{name} is not a parquet file: {err}") from err
        columns: dict[str, numpy.ndarray] = {}
        for col_name in table.column_names:
            col = table.column(col_name)
            if pyarrow.types.is_string(col.type) or pyarrow.types.is_large_string(col.type):
                columns[col_name] = numpy.asarray(col.to_pylist(), dtype=object)
            else:
                columns[col_name] = col.to_numpy()
        raw = (table.schema.metadata or {}).get(INDEX_META_KEY)
        meta = json.loads(raw) if raw else None
        if meta is not None and meta.get("format", 0) > INDEX_FORMAT:
            raise InvalidInputError(f"{name} is an index of a newer format ({meta['format']})")
        for c in (START, STOP):
            if c in columns:
                columns[c] = columns[c].astype("int64")
        try:
            return cls(columns, meta)
        except InvalidInputError as err:
            raise InvalidInputError(f"{name}: {err}") from err

    @classmethod
    def read(
        cls, url: str | os.PathLike[str], *, storage_options: Mapping[str, Any] | None = None
    ) -> Indexer:
        """Read an index from a parquet file at ``url`` (any backend of the store layer)."""
        return sync(cls.read_async(url, storage_options=storage_options))

    @classmethod
    async def read_async(
        cls, url: str | os.PathLike[str], *, storage_options: Mapping[str, Any] | None = None
    ) -> Indexer:
        """Async twin of :meth:`read`."""
        spec, key = _split(url, storage_options)
        data = await spec.get(key)
        if data is None:
            from ..errors import NotFoundError

            raise NotFoundError(f"no index at {url!r}")
        return cls.from_parquet(data, repr(os.fspath(url)))

    def write(
        self, url: str | os.PathLike[str], *, storage_options: Mapping[str, Any] | None = None
    ) -> None:
        """Write the index as one parquet file at ``url`` (replaced when it exists)."""
        sync(self.write_async(url, storage_options=storage_options))

    async def write_async(
        self, url: str | os.PathLike[str], *, storage_options: Mapping[str, Any] | None = None
    ) -> None:
        """Async twin of :meth:`write`."""
        data = self.to_parquet()
        spec, key = _split(url, storage_options)
        spec = spec.for_writing()
        try:
            await spec.put(key, data)
            await spec.publish(f"index {key}")
        except OSError as err:
            raise StorageError(f"cannot write the index to {url!r}: {err}") from err


def _split(
    url: str | os.PathLike[str], storage_options: Mapping[str, Any] | None
) -> tuple[Any, str]:
    """The store spec of the folder holding ``url``, and the file's key in it."""
    if not isinstance(url, str | os.PathLike):
        raise InvalidInputError(f"an index is read from / written to a URL, not {url!r}")
    text = os.fspath(url).rstrip("/")
    parent, sep, name = text.rpartition("/")
    if not sep or not name or parent.endswith(":/"):
        raise InvalidInputError(f"{text!r} does not name a file below a folder or bucket")
    return resolve_store(parent, storage_options), name


#: Predicate values compared with ``==`` (``None``: an object column's missing key).
_SCALARS = (
    str,
    bytes,
    numbers.Number,
    numpy.generic,
    datetime.date,
    datetime.timedelta,
    type(None),
)


def _predicate_like(value: Any) -> bool:
    """A value, a list of values or a slice (what :meth:`Indexer.lookup` compares)."""
    return isinstance(value, (slice, list, tuple, numpy.ndarray, *_SCALARS))


def _fits(kind: str, value: Any) -> bool:
    """Whether ``value`` can equal a value of a column of dtype kind ``kind``."""
    if isinstance(value, (bool, numpy.bool_)):
        return kind in "bO"
    if kind in "iufc":
        return isinstance(value, numbers.Number)
    if kind == "b":
        return False
    if kind in "US":
        return isinstance(value, (str, bytes))
    return True  # object columns hold anything; dates are cast (a bad one raises)


def _check_types(column: numpy.ndarray, value: Any, name: str) -> None:
    """Refuse a predicate no row can match by type (``parity="x"`` on an int column)."""
    if isinstance(value, slice):
        items: list[Any] = [v for v in (value.start, value.stop) if v is not None]
    elif isinstance(value, numpy.ndarray) and value.ndim:
        items = list(value.ravel()[:1])  # one element: they share its dtype
    elif isinstance(value, (list, tuple)):
        items = list(value)
    else:
        items = [value]
    for item in items:
        if not _fits(column.dtype.kind, item):
            raise FilterError(
                f"index column {name!r} holds {column.dtype}, the predicate "
                f"{item!r} is {type(item).__name__}: it would match nothing"
            )


def _match(column: numpy.ndarray, value: Any, name: str) -> numpy.ndarray:
    """Rows of ``column`` matching one predicate value."""

    def cast(v: Any) -> Any:
        if column.dtype.kind in "mM":
            return numpy.asarray(v).astype(column.dtype)
        return v

    if isinstance(value, set | frozenset):  # any of, as a list
        try:
            value = sorted(value)
        except TypeError as err:
            raise FilterError(
                f"cannot order the values {value!r} of index column {name!r}"
            ) from err
    if not _predicate_like(value):
        # A callable, a mapping or another object equals no key: every row would be
        # left out without a word.
        raise FilterError(
            f"a predicate on index column {name!r} is a value, a list of values or a slice, "
            f"not {type(value).__name__}"
        )
    _check_types(column, value, name)
    try:
        if isinstance(value, slice):
            if value.step is not None:
                raise FilterError(f"a range on index column {name!r} takes no step")
            out = numpy.ones(len(column), dtype=bool)
            if value.start is not None:
                out &= column >= cast(value.start)
            if value.stop is not None:
                out &= column <= cast(value.stop)
            return out
        if isinstance(value, str | bytes) or numpy.ndim(value) == 0:
            return numpy.asarray(column == cast(value), dtype=bool)
        values = [cast(v) for v in value]
        return numpy.isin(column, numpy.asarray(values, dtype=column.dtype if values else None))
    except (TypeError, ValueError) as err:
        if isinstance(err, FilterError):
            raise
        raise FilterError(f"cannot compare index column {name!r} with {value!r}: {err}") from err


def concat_columns(parts: Iterable[Columns]) -> dict[str, numpy.ndarray]:
    """Concatenate builder results (the union of their columns must agree)."""
    parts = list(parts)
    if not parts:
        return {
            PARTITION: numpy.empty(0, dtype=object),
            START: numpy.empty(0, dtype="int64"),
            STOP: numpy.empty(0, dtype="int64"),
        }
    names = list(parts[0])
    for p in parts[1:]:
        if list(p) != names:
            raise InvalidInputError(
                f"the index builder returned columns {sorted(p)} for partition "
                f"{p[PARTITION][0] if len(p[PARTITION]) else '?'!r} and {sorted(names)} for another"
            )
    return {n: numpy.concatenate([p[n] for p in parts]) for n in names}


def _as_lazy(collection: Any, filters: Any, variables: Sequence[str] | None) -> Any:
    """A lazy collection of whole partitions (an index's rows are stored row numbers)."""
    lazy = collection
    if not hasattr(lazy, "to_delayed"):
        if not hasattr(collection, "lazy"):
            raise InvalidInputError(
                f"cannot index a {type(collection).__name__}: pass a LazyCollection, or an "
                "object with lazy(filters=, variables=)"
            )
        lazy = collection.lazy(filters=filters, variables=variables)
    else:
        if filters is not None:
            lazy = lazy.filter(filters)
        if variables is not None:
            lazy = lazy[list(variables)]
    if not lazy._reads_whole_partitions():
        raise InvalidInputError(
            "an index is built over whole stored partitions: build it before a time range, "
            "a row selection or map_partitions (filter partitions with filters=)"
        )
    return lazy
