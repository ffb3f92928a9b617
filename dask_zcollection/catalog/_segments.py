"""A catalog version as a small root naming immutable segments.

A version object ``_catalog/v<N>.zcat`` of format 2 is a *root*: the version's
header (transaction, immutable group, ...) and a table with one row per
*segment*, a slice of the catalog sorted by key stored as its own immutable
object ``_catalog/seg/<id>.zseg`` (a format-1 catalog object: columnar,
zstd-compressed, checksummed). Each row carries what a reader needs to skip
the segment: its first and last key, the min/max of each key column, the
axis range of its rows, and the segment's own size and CRC-32 (a segment
replaced by other intact bytes is caught too).

A commit reads the root and the segments its keys fall in, rewrites those
(split when they grow past :data:`SEGMENT_MAX` rows) and puts a new root that
names every other segment unchanged: O(changed partitions) + O(segments)
bytes, the root being ~100 bytes per segment. A reader evaluates the filter
on the segment bounds (:func:`may_match`) and reads only the segments that
can hold a match. The commit point is still the one put-if-absent of the
root.
"""

from __future__ import annotations

import ast
import asyncio
import dataclasses
import itertools
import json
import secrets
import struct
import time
import zlib
from collections.abc import Awaitable, Sequence
from typing import Any

import numpy

from ..errors import CorruptedDataError, FormatVersionError
from ._catalog import (
    _CODEC,
    _MAGIC,
    DECODED,
    Catalog,
    _void_view,
    decode_catalog,
    encode_catalog,
)

__all__ = [
    "ROOT_FORMAT",
    "SEGMENT_DIR",
    "Root",
    "decode_version",
    "encode_root",
    "may_match",
]

#: Format of a root (a format-1 object is a whole catalog, read as one segment).
ROOT_FORMAT = 2
#: Where the segments are (one listing of ``_catalog/`` stays short).
SEGMENT_DIR = "_catalog/seg"
#: Rows of the segments a grown one is split into, and the size that splits it.
SEGMENT_TARGET = 1024
SEGMENT_MAX = 2048
#: A segment below this size is merged with a neighbour by a commit touching either.
SEGMENT_MIN = 256


def new_segment_id() -> str:
    """A unique, time-ordered segment id (the time lets a sweep spare a writer's fresh ones)."""
    return f"{time.time_ns() // 1_000_000:011x}{secrets.token_hex(6)}"


def segment_key(name: str) -> str:
    """Store key of segment ``name``."""
    return f"{SEGMENT_DIR}/{name}.zseg"


@dataclasses.dataclass(frozen=True, slots=True, eq=False)
class Root:
    """A catalog version stored as segments: the header and one row per segment.

    Attributes
    ----------
    head : Catalog
        The version's metadata (version, txn, immutable, ...) with no partition.
    names : tuple of str
        Segment ids, in key order.
    counts : numpy.ndarray
        Partitions per segment.
    first, last : numpy.ndarray
        First / last key row of each segment ``(n, k)``.
    cmin, cmax : numpy.ndarray
        Min / max of each key column per segment ``(n, k)``.
    tlo, thi : numpy.ndarray
        Axis range of the non-empty partitions of each segment (axis dtype).
    tknown : numpy.ndarray
        Whether every row count of the segment is known (else no time pruning).
    crc, nbytes : numpy.ndarray
        CRC-32 and size of each segment object.
    """

    head: Catalog
    names: tuple[str, ...]
    counts: numpy.ndarray
    first: numpy.ndarray
    last: numpy.ndarray
    cmin: numpy.ndarray
    cmax: numpy.ndarray
    tlo: numpy.ndarray
    thi: numpy.ndarray
    tknown: numpy.ndarray
    crc: numpy.ndarray
    nbytes: numpy.ndarray

    @property
    def version(self) -> int:
        return self.head.version

    def __len__(self) -> int:
        return len(self.names)

    @property
    def partitions(self) -> int:
        """Partitions of the version."""
        return int(self.counts.sum())

    def take(self, idx: Sequence[int] | numpy.ndarray) -> dict[str, Any]:
        """Columns of the segments at ``idx`` (to assemble another root)."""
        idx = numpy.asarray(idx, dtype="intp")
        return {
            "names": [self.names[i] for i in idx.tolist()],
            **{f: getattr(self, f)[idx] for f in _COLUMNS},
        }

    def locate(self, keys: numpy.ndarray) -> numpy.ndarray:
        """Segment of each key row: the last one whose first key is not above it."""
        if not len(self):
            return numpy.zeros(len(keys), dtype="intp")
        pos = numpy.searchsorted(_void_view(self.first), _void_view(keys), side="right") - 1
        return numpy.maximum(pos, 0).astype("intp")

    def select(self, predicate: Any = None, time_range: tuple[Any, Any] | None = None) -> Any:
        """Indices of the segments that may hold a partition matching the filter."""
        mask = numpy.ones(len(self), dtype=bool)
        if predicate is not None:
            names = self.head.key_names
            mask &= numpy.logical_or.reduce(
                [ok & may_match(predicate, names, lo, hi) for lo, hi, ok in self.boxes()]
            )
        if time_range is not None and self.head.has_stats:
            lo, hi = time_range
            known = self.tknown & (self.tlo <= self.thi)
            empty = self.tknown & (self.tlo > self.thi)
            if lo is not None:
                mask &= ~known | (self.thi >= lo)
            if hi is not None:
                mask &= ~known | (self.tlo <= hi)
            mask &= ~empty
        return numpy.flatnonzero(mask)

    def boxes(self) -> list[tuple[numpy.ndarray, numpy.ndarray, numpy.ndarray]]:
        """Per segment, three boxes of key values covering its key range (lo, hi, valid).

        A segment holds keys between its first and last one (in tuple order).
        Where they first differ, column ``d``: the keys with ``first[d]`` (the
        next column from ``first[d + 1]`` up), those strictly between, and those
        with ``last[d]`` (the next column up to ``last[d + 1]``); other columns
        within the segment's min/max. Tighter than the min/max box alone: a
        segment from December to January does not match "month == 6".
        """
        n, k = self.first.shape
        differs = self.first != self.last
        d = numpy.where(differs.any(axis=1), differs.argmax(axis=1), k - 1)
        rows = numpy.arange(n)
        nxt = numpy.minimum(d + 1, k - 1)
        deep = d + 1 < k  # the next column is bounded in the first and last box

        def box(col_lo: Any, col_hi: Any, next_lo: Any, next_hi: Any) -> tuple[Any, Any]:
            lo, hi = self.cmin.copy(), self.cmax.copy()
            lo[rows, d], hi[rows, d] = col_lo, col_hi
            lo[rows, nxt] = numpy.where(deep, next_lo, lo[rows, nxt])
            hi[rows, nxt] = numpy.where(deep, next_hi, hi[rows, nxt])
            return lo, hi

        f, last = self.first[rows, d], self.last[rows, d]
        a = box(f, f, self.first[rows, nxt], self.cmax[rows, nxt])
        c = box(last, last, self.cmin[rows, nxt], self.last[rows, nxt])
        b = box(f + 1, last - 1, self.cmin[rows, nxt], self.cmax[rows, nxt])
        single = ~differs.any(axis=1) | ~deep  # one box is exact enough
        return [
            (self.cmin, self.cmax, single),
            (*a, ~single),
            # Keys strictly between: ``last - f >= 2`` wraps around at the int64 extremes.
            (*b, ~single & (last > f) & (last - 1 > f)),
            (*c, ~single),
        ]


_COLUMNS = ("counts", "first", "last", "cmin", "cmax", "tlo", "thi", "tknown", "crc", "nbytes")


def describe(segment: Catalog, data: bytes, axis_dtype: Any) -> dict[str, Any]:
    """The root row of a (non-empty) segment whose object is ``data``."""
    keys = segment.keys
    known = bool(segment.has_stats and (segment.rows >= 0).all())
    full = segment.rows > 0
    if full.any():
        tlo, thi = segment.axis_min[full].min(), segment.axis_max[full].max()
    else:  # no row: lo > hi says "never overlaps" (when known)
        tlo = numpy.ones((), axis_dtype)
        thi = numpy.zeros((), axis_dtype)
    return {
        "counts": len(segment),
        "first": keys[0],
        "last": keys[-1],
        "cmin": keys.min(axis=0),
        "cmax": keys.max(axis=0),
        "tlo": tlo,
        "thi": thi,
        "tknown": known,
        "crc": zlib.crc32(data),
        "nbytes": len(data),
    }


def make_root(head: Catalog, names: Sequence[str], rows: Sequence[dict[str, Any]]) -> Root:
    """A root from its header and per-segment rows (:func:`describe`)."""
    k = len(head.key_names)
    dtype = head.axis_min.dtype

    def col(name: str, dt: Any, shape: tuple[int, ...] = ()) -> numpy.ndarray:
        if not rows:
            return numpy.empty((0, *shape), dtype=dt)
        return numpy.array([r[name] for r in rows], dtype=dt).reshape(len(rows), *shape)

    return Root(
        head=head,
        names=tuple(names),
        counts=col("counts", "int64"),
        first=col("first", "int64", (k,)),
        last=col("last", "int64", (k,)),
        cmin=col("cmin", "int64", (k,)),
        cmax=col("cmax", "int64", (k,)),
        tlo=col("tlo", dtype),
        thi=col("thi", dtype),
        tknown=col("tknown", bool),
        crc=col("crc", "int64"),
        nbytes=col("nbytes", "int64"),
    )


def concat_roots(head: Catalog, parts: Sequence[dict[str, Any]]) -> Root:
    """A root whose segments are the concatenation of ``parts`` (:meth:`Root.take` shape)."""
    k = len(head.key_names)
    names = [n for p in parts for n in p["names"]]
    empty = make_root(head, [], [])
    cols = {
        f: numpy.concatenate([getattr(empty, f), *(numpy.asarray(p[f]) for p in parts)])
        if parts
        else getattr(empty, f)
        for f in _COLUMNS
    }
    for f in ("first", "last", "cmin", "cmax"):
        cols[f] = cols[f].reshape(-1, k)
    return Root(head=head, names=tuple(names), **cols)


# -- the root object -----------------------------------------------------------------------------
def encode_root(root: Root) -> bytes:
    """Serialise a root: the container of :func:`encode_catalog`, format 2."""
    head = root.head
    columns = {f: numpy.ascontiguousarray(getattr(root, f)) for f in _COLUMNS}
    columns["tknown"] = columns["tknown"].astype("u1")
    names = "\n".join(root.names).encode()
    layout, offset = [], 0
    for name, c in columns.items():
        layout.append(
            {"name": name, "dtype": c.dtype.str, "shape": list(c.shape), "offset": offset}
        )
        offset += c.nbytes
    header = {
        "format": ROOT_FORMAT,
        "layout": "segments",
        "version": head.version,
        "key_names": list(head.key_names),
        "axis_dtype": head.axis_min.dtype.str,
        "has_stats": head.has_stats,
        "immutable": head.immutable,
        "txn": head.txn,
        "timestamp": head.timestamp,
        "columns": layout,
        "names": {"offset": offset, "nbytes": len(names)},
    }
    body = b"".join([*(c.tobytes() for c in columns.values()), names])
    packed = bytes(_CODEC.encode(body or b"\0"))
    header["body_crc32"] = zlib.crc32(packed)
    text = json.dumps(header).encode()
    return _MAGIC + struct.pack("<I", len(text)) + text + packed


def decode_version(data: bytes, name: str = "catalog object") -> Catalog | Root:
    """A version object: a :class:`Root` (format 2) or a whole :class:`Catalog` (format 1).

    Raises
    ------
    CorruptedDataError
        When ``data`` is not an intact version object.
    FormatVersionError
        When it was written by a newer format.
    """
    if not data.startswith(_MAGIC):
        raise CorruptedDataError(f"{name} is not a dask_zcollection catalog object (bad magic)")
    try:
        (hlen,) = struct.unpack_from("<I", data, len(_MAGIC))
        start = len(_MAGIC) + 4
        header = json.loads(data[start : start + hlen])
        fmt = header.get("format", 0)
    except Exception as err:
        raise CorruptedDataError(f"{name} is damaged: {type(err).__name__}: {err}") from err
    if fmt != ROOT_FORMAT:
        return decode_catalog(data, name)
    if header.get("layout") != "segments":
        raise FormatVersionError(f"{name}: catalog layout {header.get('layout')!r} is unknown")
    try:
        return DECODED.get(data, lambda raw: _decode_root(header, raw[start + hlen :]))
    except CorruptedDataError as err:
        raise CorruptedDataError(f"{name} is damaged: {err}") from err
    except Exception as err:
        raise CorruptedDataError(f"{name} is damaged: {type(err).__name__}: {err}") from err


def _decode_root(header: dict[str, Any], packed: bytes) -> Root:
    if zlib.crc32(packed) != header["body_crc32"]:
        raise CorruptedDataError("checksum mismatch")
    body = bytes(_CODEC.decode(packed))
    cols: dict[str, numpy.ndarray] = {}
    for c in header["columns"]:
        count = int(numpy.prod(c["shape"])) if c["shape"] else 1
        cols[c["name"]] = numpy.frombuffer(
            body, dtype=numpy.dtype(c["dtype"]), count=count, offset=c["offset"]
        ).reshape(c["shape"])
    cols["tknown"] = cols["tknown"].astype(bool)
    n = header["names"]
    text = body[n["offset"] : n["offset"] + n["nbytes"]].decode()
    names = tuple(text.split("\n")) if text else ()
    if any(len(cols[f]) != len(names) for f in _COLUMNS):
        raise CorruptedDataError("columns of different lengths")
    head = dataclasses.replace(
        Catalog.empty(header["key_names"], numpy.dtype(header["axis_dtype"])),
        version=int(header["version"]),
        has_stats=bool(header["has_stats"]),
        immutable=header.get("immutable"),
        txn=header.get("txn", ""),
        timestamp=float(header.get("timestamp", 0.0)),
    )
    return Root(head=head, names=names, **{f: cols[f] for f in _COLUMNS})


def check_segment(root: Root, i: int, data: bytes, name: str) -> Catalog:
    """Decode segment ``i`` of ``root`` from ``data``, checked against the root's record."""
    if len(data) != int(root.nbytes[i]) or zlib.crc32(data) != int(root.crc[i]):
        raise CorruptedDataError(
            f"{name} is damaged: its size or checksum differs from the one its root records"
        )
    segment = decode_catalog(data, name)
    if len(segment) != int(root.counts[i]):
        raise CorruptedDataError(
            f"{name} is damaged: {len(segment)} partitions, not {root.counts[i]}"
        )
    return segment


def join(head: Catalog, segments: Sequence[Catalog]) -> Catalog:
    """The catalog of ``head`` holding the partitions of ``segments`` (in key order)."""
    if not segments:
        return head
    if len(segments) == 1:
        s = segments[0]
        return dataclasses.replace(
            head,
            keys=s.keys,
            paths=s.paths,
            rows=s.rows,
            axis_min=s.axis_min,
            axis_max=s.axis_max,
            txns=s.txns,
        )
    known = any(s.txns is not None for s in segments)
    txns = [s.txns if s.txns is not None else numpy.zeros(len(s), "S1") for s in segments]
    return dataclasses.replace(
        head,
        txns=numpy.concatenate(txns) if known else None,
        keys=numpy.concatenate([s.keys for s in segments]),
        paths=tuple(itertools.chain.from_iterable(s.paths for s in segments)),
        rows=numpy.concatenate([s.rows for s in segments]),
        axis_min=numpy.concatenate([s.axis_min for s in segments]),
        axis_max=numpy.concatenate([s.axis_max for s in segments]),
    )


def chunks(n: int) -> list[tuple[int, int]]:
    """Bounds of the segments ``n`` sorted partitions are cut into (even, at most MAX)."""
    if n == 0:
        return []
    pieces = 1 if n <= SEGMENT_MAX else max(2, round(n / SEGMENT_TARGET))
    edges = numpy.linspace(0, n, pieces + 1).round().astype(int).tolist()
    return list(itertools.pairwise(edges))


def encode_segments(
    catalog: Catalog, ids: Sequence[str]
) -> tuple[list[bytes], list[dict[str, Any]]]:
    """Objects and root rows of ``catalog`` cut into segments named ``ids`` (one per chunk)."""
    data, rows = [], []
    for (lo, hi), _ in zip(chunks(len(catalog)), ids, strict=True):
        part = catalog.take(numpy.arange(lo, hi))
        raw = encode_catalog(part)
        data.append(raw)
        rows.append(describe(part, raw, catalog.axis_min.dtype))
    return data, rows


# -- pruning segments by a filter ------------------------------------------------------------------
def may_match(
    predicate: Any, key_names: Sequence[str], cmin: numpy.ndarray, cmax: numpy.ndarray
) -> Any:
    """Mask of the segments where ``predicate`` may hold for some key in their column ranges.

    Three-valued interval evaluation of the filter's tree: each node gives
    (may be true, may be false) per segment; sound (never drops a segment
    holding a match), exact for a conjunction of ranges on each column.
    """
    from ..partitioning._filter import _parse

    tree = _parse(predicate.source)[0]
    ranges = {n: (cmin[:, i], cmax[:, i]) for i, n in enumerate(key_names)}
    true, _ = _interval(tree, ranges, len(cmin))
    return numpy.broadcast_to(numpy.asarray(true, dtype=bool), (len(cmin),)).copy()


def _operand(node: ast.expr, ranges: dict[str, tuple[Any, Any]]) -> tuple[Any, Any]:
    if isinstance(node, ast.Name):
        return ranges[node.id]
    assert isinstance(node, ast.Constant)
    return node.value, node.value


def _interval(node: ast.expr, ranges: dict[str, tuple[Any, Any]], n: int) -> tuple[Any, Any]:
    """(may be true, may be false) of ``node`` over the column ranges."""
    if isinstance(node, ast.Constant):
        return bool(node.value), not node.value
    if isinstance(node, ast.BoolOp):
        parts = [_interval(v, ranges, n) for v in node.values]
        t, f = parts[0]
        for pt, pf in parts[1:]:
            if isinstance(node.op, ast.And):
                t, f = t & pt, f | pf
            else:
                t, f = t | pt, f & pf
        return t, f
    if isinstance(node, ast.UnaryOp):  # not
        t, f = _interval(node.operand, ranges, n)
        return f, t
    assert isinstance(node, ast.Compare)
    t, f = True, False
    left = _operand(node.left, ranges)
    for op, comparator in zip(node.ops, node.comparators, strict=True):
        if isinstance(op, ast.In | ast.NotIn):
            assert isinstance(comparator, ast.Tuple)
            choices = numpy.array([e.value for e in comparator.elts], dtype="int64")  # type: ignore[attr-defined]
            lo, hi = numpy.asarray(left[0]), numpy.asarray(left[1])
            inside = numpy.searchsorted(choices, hi, side="right") > numpy.searchsorted(choices, lo)
            single = (lo == hi) & numpy.isin(lo, choices)
            pt, pf = inside, ~single
            if isinstance(op, ast.NotIn):
                pt, pf = pf, pt
        else:
            right = _operand(comparator, ranges)
            pt, pf = _compare(type(op), left, right)
            left = right
        t, f = t & pt, f | pf
    return t, f


def _compare(op: type[ast.cmpop], a: tuple[Any, Any], b: tuple[Any, Any]) -> tuple[Any, Any]:
    alo, ahi = numpy.asarray(a[0]), numpy.asarray(a[1])
    blo, bhi = numpy.asarray(b[0]), numpy.asarray(b[1])
    if op is ast.Eq or op is ast.NotEq:
        t = (alo <= bhi) & (blo <= ahi)
        f = ~((alo == ahi) & (blo == bhi) & (alo == blo))
        return (t, f) if op is ast.Eq else (f, t)
    if op is ast.Lt:
        return alo < bhi, ahi >= blo
    if op is ast.LtE:
        return alo <= bhi, ahi > blo
    if op is ast.Gt:
        return ahi > blo, alo <= bhi
    assert op is ast.GtE
    return ahi >= blo, alo < bhi


#: Segment requests in flight at once: a whole read of 1,000,000 partitions (~1,000
#: segments) is 4 waves of requests, and a catalog ten times larger no storm of 10,000.
READ_CONCURRENCY = 256


async def gather_bounded[T](
    coros: Sequence[Awaitable[T]], limit: int = READ_CONCURRENCY
) -> list[T]:
    """``asyncio.gather`` of ``coros`` with at most ``limit`` of them running at once."""
    if len(coros) <= limit:
        return list(await asyncio.gather(*coros))
    gate = asyncio.Semaphore(limit)

    async def one(coro: Awaitable[T]) -> T:
        async with gate:
            return await coro

    return list(await asyncio.gather(*(one(c) for c in coros)))


async def read_segments(spec: Any, root: Root, idx: Sequence[int]) -> list[Catalog | None]:
    """Read and check the segments ``idx`` of ``root`` (``None``: missing), concurrently.

    Raises
    ------
    CorruptedDataError
        When one is damaged.
    """
    keys = [segment_key(root.names[i]) for i in idx]
    raws = await gather_bounded([spec.get(k) for k in keys])
    out: list[Catalog | None] = []
    for i, key, raw in zip(idx, keys, raws, strict=True):
        out.append(None if raw is None else check_segment(root, i, raw, f"{spec.url}/{key}"))
    return out
