"""Planning ``LazyCollection.map_overlap``: the halo of every selected partition.

The collection is seen as one array along the axis: the rows of every
partition (selected or not) in key order. A selected partition's own rows are
global rows ``[g0, g1)``; its halo is ``[g0 - depth, g0)`` and ``[g1, g1 +
depth)`` clipped to the collection (a depth in rows), or the rows whose axis
value lies within ``depth`` of its first / last value (a time span). Both are
cut into pieces of the partitions holding them, so a task reads only those
rows of each neighbour.
"""

from __future__ import annotations

import asyncio
import datetime
from collections.abc import Callable
from typing import Any

import numpy

from ._sync import sync
from .catalog import Catalog
from .errors import InvalidInputError
from .expr._overlap import Halo, MapOverlap, PersistedOverlap, Piece
from .io import ReadSource

__all__ = [
    "neighbour_versions",
    "plan_halos",
    "plan_overlap",
    "plan_persisted_overlap",
    "read_halos",
]


def _depth(depth: Any, axis_dtype: numpy.dtype[Any]) -> tuple[int | None, Any]:
    """``(rows, None)`` or ``(None, span)`` in the axis dtype's unit."""
    if isinstance(depth, bool):
        raise InvalidInputError(f"depth must be a number of rows or a time span, not {depth!r}")
    if isinstance(depth, int | numpy.integer) and not isinstance(depth, numpy.timedelta64):
        if depth < 0:
            raise InvalidInputError(f"depth must be >= 0, got {depth}")
        return int(depth), None
    if isinstance(depth, str | datetime.timedelta | numpy.timedelta64):
        if axis_dtype.kind != "M":
            raise InvalidInputError(
                f"a time span depth ({depth!r}) needs a datetime axis, not {axis_dtype}"
            )
        try:
            span: Any
            if isinstance(depth, str):
                count, unit_of = _parse_span(depth)
                span = numpy.array(count, dtype=f"timedelta64[{unit_of}]")[()]
            else:
                span = numpy.timedelta64(depth)
        except (ValueError, TypeError) as err:
            raise InvalidInputError(f"cannot read the time span {depth!r}: {err}") from err
        unit = numpy.datetime_data(axis_dtype)[0]
        # NaT compares false with every gap (no halo at all); a span too long for
        # the axis unit wraps around when converted.
        if numpy.isnat(span) or abs(int(span.astype("int64"))) * _per(unit, span) >= 2**63:
            raise InvalidInputError(f"depth {depth!r} is not a finite time span in {unit}")
        span = span.astype(f"timedelta64[{unit}]")
        if span < numpy.array(0, dtype=span.dtype)[()]:
            raise InvalidInputError(f"depth must be >= 0, got {depth!r}")
        return None, span
    raise InvalidInputError(
        f"depth must be a number of rows or a time span (numpy.timedelta64, "
        f"datetime.timedelta, '3h'), not {depth!r}"
    )


def _per(unit: str, span: numpy.timedelta64) -> int:
    """How many ``unit`` make one unit of ``span`` (1 when ``span``'s unit is finer)."""
    one = numpy.array(1, dtype=span.dtype)[()]
    return max(1, int(one.astype(f"timedelta64[{unit}]").astype("int64")))


def _parse_span(text: str) -> tuple[int, str]:
    """``"3h"`` -> ``(3, "h")``."""
    import re

    m = re.fullmatch(r"\s*(\d+)\s*(W|D|h|m|s|ms|us|ns)\s*", text)
    if m is None:
        raise ValueError("write it as <integer><unit>, unit one of W D h m s ms us ns")
    return int(m.group(1)), m.group(2)


def plan_overlap(
    source: ReadSource,
    full: Catalog,
    selected: Catalog,
    ranges: list[tuple[int, int]],
    variables: tuple[str, ...],
    func: Callable[..., Any],
    args: tuple[Any, ...],
    kwargs: dict[str, Any] | None,
    depth: Any,
    boundary: Any,
) -> MapOverlap:
    """The :class:`MapOverlap` of the selected partitions (reads what sizes the halos).

    ``full`` is the catalog of the whole collection (the neighbours), ``selected``
    the partitions of the output and ``ranges`` their rows kept (a time range).
    Reads row counts the catalog lacks and, for a time-span depth, the axis of
    the partitions the halos reach.
    """
    halos, constant = plan_halos(source, full, selected, ranges, depth, boundary)
    return MapOverlap(
        source,
        selected,
        len(full),
        variables,
        tuple(h for h, _, _ in halos),
        constant,
        func,
        tuple(args),
        kwargs or None,
    )


def plan_persisted_overlap(
    frame: Any,
    counts: list[int],
    read_axis: Callable[[int], numpy.ndarray],
    func: Callable[..., Any],
    args: tuple[Any, ...],
    kwargs: dict[str, Any] | None,
    depth: Any,
    boundary: Any,
) -> PersistedOverlap:
    """The :class:`PersistedOverlap` of persisted partitions ``frame`` (``counts`` rows each).

    The persisted partitions, in key order, are the array: a halo takes rows of
    the persisted neighbours only (``read_axis(k)``: the axis values of
    persisted partition ``k``, for a time span).
    """
    config = frame.source.config
    axis_dtype = config.schema[config.axis_variable].dtype
    rows_depth, span, constant = depth_of(depth, boundary, axis_dtype)
    sizes = numpy.asarray(counts, dtype="int64")
    offsets = numpy.concatenate([[0], numpy.cumsum(sizes)]).astype("int64")
    bounds = halo_bounds(
        sizes,
        list(range(len(counts))),
        [(0, int(n)) for n in counts],
        rows_depth,
        span,
        constant,
        read_axis,
    )
    halos: list[tuple[tuple[tuple[int, int, int], ...], int, int, int, int]] = []
    for i, (lo, g0, g1, hi, pad_b, pad_a) in enumerate(bounds):
        if g1 <= g0:
            halos.append((((i, 0, 0),), 0, 0, 0, 0))
            continue
        pieces = []
        for k in range(len(counts)):
            a, b = max(lo, int(offsets[k])), min(hi, int(offsets[k + 1]))
            if a < b:
                pieces.append((k, a - int(offsets[k]), b - int(offsets[k])))
        halos.append((tuple(pieces), g0 - lo, hi - g1, pad_b, pad_a))
    return PersistedOverlap(frame, tuple(halos), constant, func, tuple(args), kwargs or None)


#: A partition's halo: the whole read, and the pieces before and after its own rows.
Planned = tuple[Halo, tuple[Piece, ...], tuple[Piece, ...]]


def plan_halos(
    source: ReadSource,
    full: Catalog,
    selected: Catalog,
    ranges: list[tuple[int, int]],
    depth: Any,
    boundary: Any,
) -> tuple[list[Planned], Any]:
    """The halo of each selected partition, and the constant padding (``None``: none)."""
    config = source.config
    axis_dtype = config.schema[config.axis_variable].dtype
    rows_depth, span, constant = depth_of(depth, boundary, axis_dtype)
    io = source.io
    axis = config.axis_variable
    counts = full.rows.copy()
    unknown = numpy.flatnonzero(counts < 0).tolist()
    if unknown:

        async def count() -> list[int]:
            return list(await asyncio.gather(*(io.row_count(full.paths[k], axis) for k in unknown)))

        counts[unknown] = sync(count())
    offsets = numpy.concatenate([[0], numpy.cumsum(counts)]).astype("int64")
    where = full.find(selected.keys)
    if (where < 0).any():
        raise InvalidInputError("map_overlap: a selected partition is not in the collection")

    def read_axis(k: int) -> numpy.ndarray:
        n = int(counts[k])
        return sync(io.read(full.paths[k], [axis], stop=n, txn=full.identity(k)))[axis][:n]

    halos: list[Planned] = []
    bounds = halo_bounds(counts, where.tolist(), ranges, rows_depth, span, constant, read_axis)
    for lo, g0, g1, hi, pad_b, pad_a in bounds:
        if g1 <= g0:
            halos.append((Halo((), 0, 0), (), ()))
            continue
        halo = Halo(_pieces(full, counts, offsets, lo, hi), g0 - lo, hi - g1, pad_b, pad_a)
        before = _pieces(full, counts, offsets, lo, g0)
        after = _pieces(full, counts, offsets, g1, hi)
        halos.append((halo, before, after))
    return halos, constant


def halo_bounds(
    counts: numpy.ndarray,
    where: list[int],
    ranges: list[tuple[int, int]],
    rows_depth: int | None,
    span: Any,
    constant: Any,
    read_axis: Callable[[int], numpy.ndarray],
) -> list[tuple[int, int, int, int, int, int]]:
    """``(lo, g0, g1, hi, pad_before, pad_after)`` of each output partition, in global rows.

    The partitions (``counts`` rows each, in key order) are one array; output
    partition ``j`` is rows ``ranges[j]`` of partition ``where[j]``, i.e. global
    rows ``[g0, g1)``; its halo is ``[lo, g0)`` and ``[g1, hi)``, ``depth`` rows
    (or the rows whose axis value, read with ``read_axis(k)``, lies within the
    time span) each side, plus the constant rows padded beyond the ends.
    """
    offsets = numpy.concatenate([[0], numpy.cumsum(counts)]).astype("int64")
    n_total, last = int(offsets[-1]), len(counts) - 1
    axes: dict[int, numpy.ndarray] = {}

    def axis_of(k: int) -> numpy.ndarray:
        if k not in axes:
            axes[k] = read_axis(k)
        return axes[k]

    def first_global_at_or_after(t: Any, k: int) -> int:
        """Smallest global row ``>= offsets[k]`` going back: first row with axis >= t."""
        while True:
            local = int(numpy.searchsorted(axis_of(k), t, side="left"))
            if local > 0 or k == 0:
                return int(offsets[k]) + local
            k -= 1

    def last_global_at_or_before(t: Any, k: int) -> int:
        """One past the last global row with axis <= t, going forward from partition ``k``."""
        while True:
            values = axis_of(k)
            local = int(numpy.searchsorted(values, t, side="right"))
            if local < len(values) or k == last:
                return int(offsets[k]) + local
            k += 1

    out = []
    for k, (start, stop) in zip(where, ranges, strict=True):
        g0, g1 = int(offsets[k]) + start, int(offsets[k]) + stop
        if g1 <= g0:
            out.append((g0, g0, g1, g1, 0, 0))
            continue
        if rows_depth is not None:
            lo, hi = max(0, g0 - rows_depth), min(n_total, g1 + rows_depth)
            pad_b = rows_depth - (g0 - lo) if constant is not None else 0
            pad_a = rows_depth - (hi - g1) if constant is not None else 0
        else:
            own = axis_of(k)
            lo = first_global_at_or_after(own[start] - span, k)
            hi = last_global_at_or_before(own[stop - 1] + span, k)
            lo, hi = min(lo, g0), max(hi, g1)
            pad_b = pad_a = 0
        out.append((lo, g0, g1, hi, pad_b, pad_a))
    return out


def depth_of(
    depth: Any, boundary: Any, axis_dtype: numpy.dtype[Any]
) -> tuple[int | None, Any, Any]:
    """``(rows, span, constant)`` of ``map_overlap``'s ``depth`` and ``boundary`` (checked)."""
    rows_depth, span = _depth(depth, axis_dtype)
    if isinstance(boundary, str):
        if boundary != "none":
            raise InvalidInputError(f"boundary is 'none' or a constant, not {boundary!r}")
        return rows_depth, span, None
    if span is not None:
        raise InvalidInputError(
            "a constant boundary pads a number of rows: give depth in rows with it"
        )
    if boundary is not None and (
        isinstance(boundary, bool) or not isinstance(boundary, int | float | numpy.number)
    ):
        raise InvalidInputError(f"boundary is 'none' or a number, not {boundary!r}")
    return rows_depth, span, boundary


def _pieces(
    full: Catalog, counts: numpy.ndarray, offsets: numpy.ndarray, lo: int, hi: int
) -> tuple[Piece, ...]:
    """Global rows ``[lo, hi)`` as ``(path, rows, start, stop, identity)`` pieces."""
    out = []
    k = int(numpy.searchsorted(offsets, lo, side="right")) - 1
    while lo < hi and k < len(full):
        a, b = max(lo, int(offsets[k])), min(hi, int(offsets[k + 1]))
        if a < b:
            out.append(
                (
                    full.paths[k],
                    int(counts[k]),
                    a - int(offsets[k]),
                    b - int(offsets[k]),
                    full.identity(k),
                )
            )
        k += 1
    return tuple(out)


async def read_halos(
    source: ReadSource, planned: list[Planned], variables: tuple[str, ...]
) -> list[tuple[dict[str, numpy.ndarray], dict[str, numpy.ndarray]]]:
    """The rows before and after each partition (``variables``), read concurrently."""
    from .io import read_partition

    async def read(pieces: tuple[Piece, ...]) -> dict[str, numpy.ndarray]:
        parts = await asyncio.gather(
            *(
                read_partition(source, (p, n, True, t), variables, None, ((a, b),))
                for p, n, a, b, t in pieces
            )
        )
        schema = source.config.schema
        return {
            v: numpy.concatenate([c[v] for c in parts])
            if parts
            else numpy.empty((0, *_tail(source, v)), dtype=schema[v].dtype)
            for v in variables
        }

    async def both(item: Planned) -> tuple[dict[str, numpy.ndarray], dict[str, numpy.ndarray]]:
        _, before, after = item
        a, b = await asyncio.gather(read(before), read(after))
        return a, b

    return list(await asyncio.gather(*(both(p) for p in planned)))


async def neighbour_versions(
    source: ReadSource, full: Catalog, canonical: list[str], planned: list[Planned]
) -> dict[str, tuple[Any, ...]]:
    """Canonical path -> the versions of the partitions its halo reads (``check_versions``).

    A halo is read when planning; the write task re-checks these versions, so a
    neighbour committed in between is a lost race, never older rows written.
    """
    from .indexing._indexer import _txns

    where = {p: k for k, p in enumerate(full.paths)}
    used = sorted({where[p] for _, before, after in planned for p, *_ in (*before, *after)})
    txns = dict(zip(used, await _txns(source.spec, [full.paths[k] for k in used]), strict=True))
    encode = source.config.partitioning.encode
    out: dict[str, tuple[Any, ...]] = {}
    for own, (_, before, after) in zip(canonical, planned, strict=True):
        ks = sorted({where[p] for p, *_ in (*before, *after)})
        out[own] = tuple(
            (
                encode(full.key_tuple(k)),
                full.key_tuple(k),
                full.paths[k],
                int(full.rows[k]),
                txns[k],
            )
            for k in ks
        )
    return out


def _tail(source: ReadSource, name: str) -> tuple[int, ...]:
    """Sizes of a partitioned variable's dimensions after the axis."""
    dims = source.config.schema.all_dimensions()
    return tuple(dims[d].size or 0 for d in source.config.schema[name].dimensions[1:])
