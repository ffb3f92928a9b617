"""Read paths used by the Dask graph: one partition, or many straight into one result.

:class:`ReadSource` is what read tasks carry to workers: the store spec and the
collection descriptor, both small and picklable. Each process keeps one
:class:`~dask_zcollection.io.PartitionIO` per source.
"""

from __future__ import annotations

import asyncio
import dataclasses
import functools
import hashlib
import json
from collections.abc import Sequence
from typing import Any

import numpy

from ..catalog import Catalog
from ..errors import CorruptedDataError, StorageError
from ..store import StoreSpec
from ._config import CollectionConfig
from ._fastread import ArrayHandle
from ._memory import empty
from ._partition import PartitionIO

__all__ = [
    "Part",
    "ReadSource",
    "RowRanges",
    "TimeRange",
    "clip_ranges",
    "parts_of",
    "read_concat",
    "read_block",
    "read_partition",
    "read_rows",
    "row_range",
]

#: Inclusive ``(lo, hi)`` bounds on the axis variable (``None``: open end).
TimeRange = tuple[Any, Any]
#: Half-open row ranges ``((start, stop), ...)`` of a partition, sorted and disjoint.
RowRanges = tuple[tuple[int, int], ...]


@dataclasses.dataclass(frozen=True)
class ReadSource:
    """Where and what to read: the store spec and the collection descriptor."""

    spec: StoreSpec
    config: CollectionConfig

    @functools.cached_property
    def _token(self) -> str:
        from dask.base import tokenize

        # The spec's token, not only its URL: two specs of one URL (other options,
        # another adapter) are different sources and must not share a PartitionIO.
        text = json.dumps(self.config.to_dict(), sort_keys=True, default=str)
        return hashlib.sha1(f"{tokenize(self.spec)}|{self.spec.url}|{text}".encode()).hexdigest()

    def __dask_tokenize__(self) -> tuple[str, str]:
        return ("ReadSource", self._token)

    @property
    def io(self) -> PartitionIO:
        """The per-process partition I/O object of this source."""
        return _partition_io(self.spec, self._token, self.config)

    # Hooks a source joining several stores (a view) overrides; the read tasks
    # call them through the module functions below.
    async def read_many(
        self,
        parts: Sequence[Part],
        variables: Sequence[str],
        time_range: TimeRange | None,
        *,
        concat: bool,
        rows: Sequence[RowRanges | None] | None = None,
    ) -> list[dict[str, numpy.ndarray]]:
        """Read ``variables`` of ``parts`` (one dict per part, or one when ``concat``).

        ``rows``: per part, only these half-open row ranges (``None``: all).
        """
        return await _read_many(self, parts, variables, time_range, concat=concat, rows=rows)

    async def read_rows(
        self, path: str, name: str, start: int, stop: int, txn: str = ""
    ) -> numpy.ndarray:
        """Rows ``start:stop`` of one variable of one partition (see :func:`read_block`).

        ``txn``: the identity of the partition's group (``""``: not checked).
        """
        return await _read_block(self, path, name, start, stop, txn)

    def describe(self, variables: Sequence[str]) -> list[str]:
        """Lines ``explain()`` adds about reading ``variables`` from this source."""
        return []


_IO_CACHE: dict[tuple[str, str, str], PartitionIO] = {}


def forget_collection(url: str) -> None:
    """Drop this process's cached I/O state of the collection at ``url`` (it was re-created)."""
    for key in [k for k in _IO_CACHE if k[0] == url]:
        del _IO_CACHE[key]


def _partition_io(spec: StoreSpec, token: str, config: CollectionConfig) -> PartitionIO:
    key = (type(spec).__name__, spec.url, token)
    io = _IO_CACHE.get(key)
    if io is None:
        io = _IO_CACHE[key] = PartitionIO(spec, config.schema, config.axis)
    return io


def row_range(axis_values: numpy.ndarray, time_range: TimeRange | None) -> tuple[int, int]:
    """Rows ``[start, stop)`` of sorted ``axis_values`` inside the inclusive ``time_range``."""
    if time_range is None:
        return 0, len(axis_values)
    lo, hi = time_range
    start = 0 if lo is None else int(numpy.searchsorted(axis_values, lo, side="left"))
    stop = (
        len(axis_values) if hi is None else int(numpy.searchsorted(axis_values, hi, side="right"))
    )
    return start, max(start, stop)


#: What a read task needs to know of one partition: its path, its committed row
#: count (``-1``: unknown, take the array's), whether it lies wholly inside the
#: time range (no trimming, no axis read) and the identity of its group (the
#: ``_zc_txn`` the catalog records; ``""``: unknown, not checked).
Part = tuple[str, int, bool, str]


def parts_of(catalog: Catalog, time_range: TimeRange | None = None) -> list[Part]:
    """The :data:`Part` of every partition of ``catalog`` (vectorised)."""
    inside = catalog.inside(time_range)
    return list(
        zip(catalog.paths, catalog.rows.tolist(), inside.tolist(), catalog.identities, strict=True)
    )


async def _part_rows(
    part: Part,
    arrays: Sequence[ArrayHandle],
    axis_array: ArrayHandle | None,
    time_range: TimeRange | None,
) -> tuple[int, int]:
    """Committed rows ``[start, stop)`` of a partition, trimmed to ``time_range``."""
    _, stored, inside, _ = part
    first = arrays[0] if arrays else axis_array
    shape_rows = int(first.shape[0]) if first is not None else 0
    # Readers trust the committed row count: rows past it are an uncommitted append.
    n = shape_rows if stored < 0 else min(stored, shape_rows)
    if inside or time_range is None:
        return 0, n
    assert axis_array is not None
    return row_range(await axis_array.read(0, n), time_range)


async def read_partition(
    source: ReadSource,
    part: Part,
    variables: Sequence[str],
    time_range: TimeRange | None = None,
    rows: RowRanges | None = None,
) -> dict[str, numpy.ndarray]:
    """Read ``variables`` of one partition, trimmed to ``time_range``.

    ``rows``: only these half-open row ranges (sorted, disjoint; an index's
    selection), intersected with the committed rows and the time range.
    """
    out = await source.read_many([part], variables, time_range, concat=False, rows=[rows])
    return out[0]


async def read_concat(
    source: ReadSource,
    parts: Sequence[Part],
    variables: Sequence[str],
    time_range: TimeRange | None = None,
    rows: Sequence[RowRanges | None] | None = None,
) -> dict[str, numpy.ndarray]:
    """Read many partitions decoded straight into one preallocated result (no second copy)."""
    out = await source.read_many(parts, variables, time_range, concat=True, rows=rows)
    return out[0]


def clip_ranges(bounds: tuple[int, int], rows: RowRanges | None) -> RowRanges:
    """The row ranges read of a partition: ``rows`` clipped to ``bounds``, or ``bounds``."""
    start, stop = bounds
    if rows is None:
        return ((start, stop),)
    return tuple((max(a, start), min(b, stop)) for a, b in rows if max(a, start) < min(b, stop))


def chunk_groups(pieces: Sequence[tuple[int, int]], chunk: int) -> list[list[tuple[int, int]]]:
    """Consecutive ``pieces`` grouped so that no two groups share a chunk of ``chunk`` rows.

    A group is read as one span (each chunk it touches once) and its rows
    taken out; ``chunk <= 0`` (unknown) groups only touching pieces.
    """
    groups: list[list[tuple[int, int]]] = []
    for a, b in pieces:
        if groups:
            last = groups[-1][-1][1]
            shared = a <= last if chunk <= 0 else (a // chunk) <= (last - 1) // chunk
            if shared:
                groups[-1].append((a, b))
                continue
        groups.append([(a, b)])
    return groups


async def _fill_pieces(
    arr: ArrayHandle, pieces: Sequence[tuple[int, int]], target: numpy.ndarray
) -> None:
    """Decode the rows of ``pieces`` of ``arr`` one after the other into ``target``.

    Pieces sharing a chunk are read as one span, so every chunk is fetched once.
    """
    jobs = []
    offset = 0
    for group in chunk_groups(pieces, _chunk_rows(arr)):
        n = sum(b - a for a, b in group)
        out = target[offset : offset + n]
        offset += n
        if len(group) == 1:
            jobs.append(_fill(arr, group[0][0], group[0][1], out))
        else:
            jobs.append(_fill_group(arr, group, out))
    await asyncio.gather(*jobs)


def _chunk_rows(arr: ArrayHandle) -> int:
    """Rows per chunk (per shard when sharded) of ``arr``; ``0`` when its grid is not regular."""
    if arr.chunk_rows:
        return arr.chunk_rows
    grid = arr.doc.get("chunk_grid") or {}
    shape = (grid.get("configuration") or {}).get("chunk_shape") or [0]
    return int(shape[0]) if grid.get("name") == "regular" else 0


async def _fill_group(
    arr: ArrayHandle, group: Sequence[tuple[int, int]], out: numpy.ndarray
) -> None:
    lo, hi = group[0][0], group[-1][1]
    span = numpy.empty((hi - lo, *out.shape[1:]), dtype=out.dtype)
    await _fill(arr, lo, hi, span)
    offset = 0
    for a, b in group:
        out[offset : offset + b - a] = span[a - lo : b - lo]
        offset += b - a


async def _read_many(
    source: ReadSource,
    parts: Sequence[Part],
    variables: Sequence[str],
    time_range: TimeRange | None,
    *,
    concat: bool,
    rows: Sequence[RowRanges | None] | None = None,
) -> list[dict[str, numpy.ndarray]]:
    io = source.io
    schema = source.config.schema
    axis = source.config.axis_variable
    names = list(variables)
    need_axis = time_range is not None and axis not in names
    opened = await asyncio.gather(
        *(
            io.open_partition(part[0], names + ([axis] if need_axis else []), part[3])
            for part in parts
        )
    )

    def axis_of(arrays: list[ArrayHandle]) -> ArrayHandle | None:
        if axis in names:
            return arrays[names.index(axis)]
        return arrays[-1] if need_axis else None

    ranges = await asyncio.gather(
        *(
            _part_rows(part, arrays[: len(names)], axis_of(arrays), time_range)
            for part, arrays in zip(parts, opened, strict=True)
        )
    )
    selected = [
        clip_ranges(bounds, None if rows is None else rows[k]) for k, bounds in enumerate(ranges)
    ]
    sizes = [sum(b - a for a, b in pieces) for pieces in selected]
    if concat:
        total = sum(sizes)
        # One result per variable, each chunk decoded into its place; large ones on
        # reused memory (``_memory``: fresh pages cost more than the decode on some hosts).
        outputs = [
            empty((total, *(opened[0][j].shape[1:] if opened else ())), schema[name].dtype)
            for j, name in enumerate(names)
        ]
        offsets = numpy.concatenate([[0], numpy.cumsum(sizes)]).tolist()
        targets = [[out[offsets[k] : offsets[k + 1]] for out in outputs] for k in range(len(parts))]
        results = [dict(zip(names, outputs, strict=True))]
    else:
        targets = [
            [
                numpy.empty((size, *arr.shape[1:]), dtype=schema[name].dtype)
                for name, arr in zip(names, arrays[: len(names)], strict=True)
            ]
            for size, arrays in zip(sizes, opened, strict=True)
        ]
        results = [dict(zip(names, t, strict=True)) for t in targets]
    await asyncio.gather(
        *(
            _fill(arr, pieces[0][0], pieces[0][1], target)
            if len(pieces) == 1
            else _fill_pieces(arr, pieces, target)
            for pieces, arrays, tgt in zip(selected, opened, targets, strict=True)
            if pieces
            for arr, target in zip(arrays[: len(names)], tgt, strict=True)
        )
    )
    return results


async def _fill(arr: ArrayHandle, start: int, stop: int, target: numpy.ndarray) -> None:
    """Decode rows ``start:stop`` of ``arr`` into ``target``."""
    try:
        await arr.read_into(start, stop, target)
    except CorruptedDataError:
        raise  # names the chunk already
    except OSError as err:
        raise StorageError(f"cannot read {arr.key!r}: {err}") from err


async def read_rows(
    source: ReadSource, path: str, name: str, pieces: RowRanges, txn: str = ""
) -> numpy.ndarray:
    """The rows of ``pieces`` of one variable of one partition, one after the other.

    ``txn``: the identity of the partition's group (see :meth:`PartitionIO.open_partition`).
    """
    if type(source).read_rows is not ReadSource.read_rows:
        # A source joining stores (a view) reads through its hook: the span, then the pieces.
        if not pieces:
            return await source.read_rows(path, name, 0, 0, txn)
        lo = pieces[0][0]
        span = await source.read_rows(path, name, lo, pieces[-1][1], txn)
        return numpy.concatenate([span[a - lo : b - lo] for a, b in pieces])
    (arr,) = await source.io.open_partition(path, [name], txn)
    out = numpy.empty((sum(b - a for a, b in pieces), *arr.shape[1:]), dtype=arr.dtype)
    await _fill_pieces(arr, pieces, out)
    return out


def unwritten_immutable(config: CollectionConfig, catalog: Catalog, name: str) -> Any:
    """The value of immutable ``name`` before any insert wrote it, else ``None``.

    A collection nothing was inserted into has no immutable group (its catalog
    names none and holds no partition): the variable reads as its fill value
    (zero without one), its values not known yet. Elsewhere a missing
    immutable group is damage, and reading it raises.
    """
    spec = config.schema[name]
    if not spec.immutable or catalog.immutable is not None or len(catalog):
        return None
    dims = config.schema.all_dimensions()
    shape = tuple(dims[d].size or 0 for d in spec.dimensions)
    return numpy.full(shape, 0 if spec.fill_value is None else spec.fill_value, spec.dtype)


async def read_block(
    source: ReadSource, path: str, name: str, start: int, stop: int, txn: str = ""
) -> numpy.ndarray:
    """Rows ``start:stop`` of one variable of one partition (only the chunks holding them).

    Immutable variables are read whole (``start``/``stop`` ignored). ``txn``:
    the identity of the partition's group (see :meth:`PartitionIO.open_partition`).
    """
    return await source.read_rows(path, name, start, stop, txn)


async def _read_block(
    source: ReadSource, path: str, name: str, start: int, stop: int, txn: str = ""
) -> numpy.ndarray:
    (arr,) = await source.io.open_partition(path, [name], txn)
    try:
        if source.config.schema[name].immutable:
            return await arr.read()
        return await arr.read(start, stop)
    except CorruptedDataError:
        raise
    except OSError as err:
        raise StorageError(f"cannot read {arr.key!r}: {err}") from err
