"""The partition index: one columnar, immutable snapshot per commit.

A :class:`Catalog` lists every committed partition with its key values, the
path of its Zarr group, its row count and the min/max of the axis variable.
It is stored as one compressed object per version, ``_catalog/v<N>.zcat``,
created with the backend's put-if-absent: creating version ``N + 1`` *is* the
commit, and two writers racing for the same version cannot both win.
"""

from __future__ import annotations

import collections
import dataclasses
import hashlib
import json
import struct
import threading
import time
import zlib
from collections.abc import Callable, Mapping, Sequence
from typing import Any, TypeVar

import numpy
from numcodecs import Zstd

from ..errors import CorruptedDataError, FormatVersionError

__all__ = [
    "CATALOG_FORMAT",
    "NO_TXN",
    "Catalog",
    "decode_catalog",
    "encode_catalog",
    "identity_array",
]

CATALOG_FORMAT = 1
#: The identity of a partition group stamped by no transaction (the reference
#: implementation's): the group a reader opens must carry no ``_zc_txn``.
NO_TXN = "-"
_MAGIC = b"ZCCAT\x01"
_CODEC = Zstd(level=3)


def _empty(dtype: Any) -> numpy.ndarray:
    return numpy.empty(0, dtype=dtype)


@dataclasses.dataclass(frozen=True, slots=True, eq=False)
class Catalog:
    """An immutable snapshot of the committed partitions, sorted by key value.

    Attributes
    ----------
    version : int
        Commit number (``0``: nothing committed yet).
    key_names : tuple of str
        Names of the key components (``("year", "month")``).
    keys : numpy.ndarray
        ``int64`` array ``(n, len(key_names))``, rows sorted by value.
    paths : tuple of str
        Path of each partition's Zarr group below the collection root.
    rows : numpy.ndarray
        ``int64`` row count of each partition (``-1`` when unknown).
    axis_min, axis_max : numpy.ndarray
        Min / max of the axis variable per partition (the axis dtype).
    has_stats : bool
        ``False`` for catalogs listed from a tree or a reference ``state.json``
        (no row counts or min/max; readers take them from the arrays).
    immutable : str or None
        Path of the committed group of immutable variables, if any.
    txn : str
        Identifier of the transaction that wrote this version.
    timestamp : float
        Commit time (seconds since the epoch).
    txns : numpy.ndarray or None
        The identity of each partition's group (bytes, ``S`` dtype): the
        ``_zc_txn`` of the transaction that wrote it, :data:`NO_TXN` for a
        group stamped by none (the reference format), empty when unknown
        (catalogs written before identities were recorded, listed ones).
        ``None``: unknown for all. Readers check the group they open against
        it (:meth:`identity`).
    """

    version: int
    key_names: tuple[str, ...]
    keys: numpy.ndarray
    paths: tuple[str, ...]
    rows: numpy.ndarray
    axis_min: numpy.ndarray
    axis_max: numpy.ndarray
    has_stats: bool = True
    immutable: str | None = None
    txn: str = ""
    timestamp: float = 0.0
    txns: numpy.ndarray | None = None

    @classmethod
    def empty(cls, key_names: Sequence[str], axis_dtype: Any) -> Catalog:
        """A catalog with no partition."""
        return cls(
            version=0,
            key_names=tuple(key_names),
            keys=numpy.empty((0, len(key_names)), dtype="int64"),
            paths=(),
            rows=_empty("int64"),
            axis_min=_empty(axis_dtype),
            axis_max=_empty(axis_dtype),
        )

    def __len__(self) -> int:
        return len(self.paths)

    def __dask_tokenize__(self) -> tuple[Any, ...]:
        from dask.base import tokenize

        # A committed version is identified by (txn, version); a subset by its keys.
        paths = hashlib.sha1("\n".join(self.paths).encode()).hexdigest() if not self.txn else ""
        return (
            "Catalog",
            self.txn,
            self.version,
            self.has_stats,
            self.immutable,
            tokenize(self.keys, self.rows),
            paths,
        )

    def __repr__(self) -> str:
        return (
            f"<Catalog version={self.version} partitions={len(self)} "
            f"keys={self.key_names} stats={self.has_stats}>"
        )

    def identity(self, i: int) -> str:
        """The identity of partition ``i``'s group (``""``: unknown, see ``txns``)."""
        return "" if self.txns is None else bytes(self.txns[i]).decode()

    @property
    def identities(self) -> tuple[str, ...]:
        """The identity of every partition's group (``""``: unknown)."""
        if self.txns is None:
            return ("",) * len(self)
        return tuple(t.decode() for t in self.txns.tolist())

    @property
    def columns(self) -> dict[str, numpy.ndarray]:
        """Key columns by name (for filter evaluation)."""
        return {name: self.keys[:, i] for i, name in enumerate(self.key_names)}

    @property
    def total_rows(self) -> int:
        """Sum of the row counts (``-1`` when some are unknown)."""
        if not self.has_stats or (self.rows < 0).any():
            return -1
        return int(self.rows.sum())

    def take(self, index: numpy.ndarray | Sequence[int] | slice) -> Catalog:
        """Return the sub-catalog of the partitions at ``index`` (positions or a mask)."""
        idx = numpy.arange(len(self))[index] if not isinstance(index, numpy.ndarray) else index
        if idx.dtype == bool:
            idx = numpy.flatnonzero(idx)
        paths = self.paths
        return dataclasses.replace(
            self,
            keys=self.keys[idx],
            paths=tuple(paths[i] for i in idx.tolist()),
            txns=None if self.txns is None else self.txns[idx],
            rows=self.rows[idx],
            axis_min=self.axis_min[idx],
            axis_max=self.axis_max[idx],
        )

    # -- pruning (the one place a predicate and a time range select partitions) -------------
    def matching(self, predicate: Any) -> numpy.ndarray:
        """Mask of the partitions whose keys satisfy ``predicate`` (``None``: all).

        ``predicate`` is a compiled filter (:func:`~dask_zcollection.partitioning.compile_filter`),
        evaluated vectorised on the key columns.
        """
        if predicate is None:
            return numpy.ones(len(self), dtype=bool)
        return numpy.asarray(predicate(self.columns, size=len(self)), dtype=bool)

    def overlapping(self, time_range: tuple[Any, Any] | None) -> numpy.ndarray:
        """Mask of the partitions that may hold rows in ``time_range`` (inclusive bounds).

        A partition without stats (row count unknown) is kept: only its rows
        can tell. An empty partition with stats never overlaps.
        """
        mask = numpy.ones(len(self), dtype=bool)
        if time_range is None or not self.has_stats:
            return mask
        lo, hi = time_range
        known = self.rows >= 0
        if lo is not None:
            mask &= ~known | (self.axis_max >= lo)
        if hi is not None:
            mask &= ~known | (self.axis_min <= hi)
        mask &= ~known | (self.rows > 0)
        return mask

    def inside(self, time_range: tuple[Any, Any] | None) -> numpy.ndarray:
        """Mask of the partitions whose rows all lie in ``time_range`` (by their stats)."""
        if time_range is None:
            return numpy.ones(len(self), dtype=bool)
        mask = numpy.full(len(self), self.has_stats, dtype=bool) & (self.rows >= 0)
        lo, hi = time_range
        if lo is not None:
            mask &= self.axis_min >= lo
        if hi is not None:
            mask &= self.axis_max <= hi
        return mask

    def select(self, predicate: Any = None, time_range: tuple[Any, Any] | None = None) -> Catalog:
        """The sub-catalog of the partitions matching ``predicate`` that overlap ``time_range``."""
        mask = self.matching(predicate) & self.overlapping(time_range)
        return self if mask.all() else self.take(mask)

    def bounds(self, time_range: tuple[Any, Any] | None) -> tuple[numpy.ndarray, numpy.ndarray]:
        """Per partition, the axis range of its rows in ``time_range`` (by the stats)."""
        lo, hi = self.axis_min, self.axis_max
        if time_range is not None:
            if time_range[0] is not None:
                lo = numpy.maximum(lo, time_range[0])
            if time_range[1] is not None:
                hi = numpy.minimum(hi, time_range[1])
        return lo, hi

    def find(self, keys: numpy.ndarray) -> numpy.ndarray:
        """Position of each key row of ``keys`` in the catalog, ``-1`` when absent."""
        keys = numpy.asarray(keys, dtype="int64").reshape(-1, len(self.key_names))
        if not len(self):
            return numpy.full(len(keys), -1, dtype="intp")
        mine = _void_view(self.keys)
        theirs = _void_view(keys)
        order = numpy.argsort(mine, kind="stable")
        pos = numpy.searchsorted(mine[order], theirs)
        pos = numpy.minimum(pos, len(mine) - 1)
        found = mine[order][pos] == theirs
        return numpy.where(found, order[pos], -1)

    def key_tuple(self, i: int) -> tuple[int, ...]:
        """Key values of partition ``i`` as Python ints."""
        return tuple(int(k) for k in self.keys[i])

    def with_partitions(
        self,
        keys: numpy.ndarray,
        paths: Sequence[str],
        rows: numpy.ndarray,
        axis_min: numpy.ndarray,
        axis_max: numpy.ndarray,
        txns: Sequence[str] | None = None,
    ) -> Catalog:
        """Return a catalog where the given partitions are added or replaced.

        ``txns``: the identity of each one's group (``None``: unknown).
        """
        keys = numpy.asarray(keys, dtype="int64").reshape(-1, len(self.key_names))
        pos = self.find(keys)
        keep = numpy.ones(len(self), dtype=bool)
        keep[pos[pos >= 0]] = False
        base = self.take(keep)
        all_keys = numpy.concatenate([base.keys, keys])
        order = numpy.lexsort(all_keys.T[::-1]) if len(all_keys) else numpy.arange(0)
        all_paths = base.paths + tuple(paths)
        new_txns = identity_array(txns) if txns is not None else None
        all_txns = None
        if base.txns is not None or new_txns is not None:
            unknown = numpy.zeros(len(base), "S1") if base.txns is None else base.txns
            added = numpy.zeros(len(keys), "S1") if new_txns is None else new_txns
            all_txns = numpy.concatenate([unknown, added])[order]
        return dataclasses.replace(
            self,
            keys=all_keys[order],
            paths=tuple(all_paths[i] for i in order.tolist()),
            txns=all_txns,
            rows=numpy.concatenate([base.rows, numpy.asarray(rows, "int64")])[order],
            axis_min=numpy.concatenate(
                [base.axis_min, numpy.asarray(axis_min, base.axis_min.dtype)]
            )[order],
            axis_max=numpy.concatenate(
                [base.axis_max, numpy.asarray(axis_max, base.axis_max.dtype)]
            )[order],
        )

    def without(self, keys: numpy.ndarray) -> Catalog:
        """Return a catalog without the partitions whose keys are given."""
        pos = self.find(keys)
        keep = numpy.ones(len(self), dtype=bool)
        keep[pos[pos >= 0]] = False
        return self.take(keep)

    def next_version(self, txn: str, *, immutable: str | None = None) -> Catalog:
        """This catalog stamped as the next commit by ``txn``."""
        return dataclasses.replace(
            self,
            version=self.version + 1,
            txn=txn,
            timestamp=time.time(),
            immutable=immutable if immutable is not None else self.immutable,
        )


def identity_array(values: Sequence[str]) -> numpy.ndarray | None:
    """The ``txns`` column of identities ``values`` (``None`` when every one is unknown)."""
    if not any(values):
        return None
    return numpy.array([v.encode() for v in values], dtype="S")


def _void_view(keys: numpy.ndarray) -> numpy.ndarray:
    """View each key row as one scalar whose byte order is the value order.

    Flipping the sign bit and storing big-endian makes memcmp order equal to
    signed integer order, so numpy sorts and searches the rows as tuples.
    """
    unsigned = numpy.asarray(keys, dtype="int64").view("uint64") ^ numpy.uint64(1 << 63)
    packed = numpy.ascontiguousarray(unsigned.astype(">u8"))
    return packed.view(f"V{8 * keys.shape[1]}").ravel()


def encode_catalog(catalog: Catalog) -> bytes:
    """Serialise a catalog: magic, header length, JSON header, zstd-compressed columns."""
    columns = {
        "keys": numpy.ascontiguousarray(catalog.keys, dtype="<i8"),
        "rows": numpy.ascontiguousarray(catalog.rows, dtype="<i8"),
        "axis_min": numpy.ascontiguousarray(catalog.axis_min),
        "axis_max": numpy.ascontiguousarray(catalog.axis_max),
    }
    if catalog.txns is not None and (catalog.txns != b"").any():
        # The groups' identities, NUL-padded bytes stored character-major: the time
        # prefix of the ids compresses away (half the size). Readers that predate the
        # column ignore it.
        txns = numpy.ascontiguousarray(catalog.txns)
        width = txns.dtype.itemsize
        columns["txns"] = numpy.ascontiguousarray(txns.view("u1").reshape(-1, width).T)
    paths = "\n".join(catalog.paths).encode()
    layout = []
    offset = 0
    for name, col in columns.items():
        layout.append(
            {"name": name, "dtype": col.dtype.str, "shape": list(col.shape), "offset": offset}
        )
        offset += col.nbytes
    header = {
        "format": CATALOG_FORMAT,
        "version": catalog.version,
        "key_names": list(catalog.key_names),
        "has_stats": catalog.has_stats,
        "immutable": catalog.immutable,
        "txn": catalog.txn,
        "timestamp": catalog.timestamp,
        "columns": layout,
        "paths": {"offset": offset, "nbytes": len(paths)},
    }
    body = b"".join([*(c.tobytes() for c in columns.values()), paths])
    # zstd cannot round-trip an empty frame: an empty catalog carries one pad byte.
    packed = bytes(_CODEC.encode(body or b"\0"))
    header["body_crc32"] = zlib.crc32(packed)  # a flipped bit never decodes silently
    head = json.dumps(header).encode()
    return _MAGIC + struct.pack("<I", len(head)) + head + packed


_T = TypeVar("_T")


class DecodeCache:
    """Decoded catalog objects by their bytes: a decode is a function of them only.

    Committed catalog objects are immutable, and every open reads the newest
    root and its segments again: decoding the same bytes twice is wasted
    (about 0.2 ms a root or a small segment). Entries are found by size and
    CRC-32 and checked byte for byte; the decoded objects are shared, and their
    arrays are read-only (``numpy.frombuffer``). Failures are not kept.

    Parameters
    ----------
    entries : int
        Objects kept at most (least recently used go first).
    largest : int
        Bytes above which an object is not kept.
    """

    def __init__(self, entries: int = 64, largest: int = 1 << 20) -> None:
        self.entries, self.largest = entries, largest
        self._items: collections.OrderedDict[tuple[int, int], tuple[bytes, Any]] = (
            collections.OrderedDict()
        )
        self._lock = threading.Lock()

    def get(self, data: bytes, decode: Callable[[bytes], _T]) -> _T:
        """``decode(data)``, from the cache when these bytes were decoded already."""
        if len(data) > self.largest:
            return decode(data)
        key = (len(data), zlib.crc32(data))
        with self._lock:
            hit = self._items.get(key)
            if hit is not None and hit[0] == data:
                self._items.move_to_end(key)
                return hit[1]  # type: ignore[no-any-return]
        value = decode(data)
        with self._lock:
            self._items[key] = (bytes(data), value)
            self._items.move_to_end(key)
            while len(self._items) > self.entries:
                self._items.popitem(last=False)
        return value


#: The process's cache of decoded catalog objects (roots and segments).
DECODED = DecodeCache()


def decode_catalog(data: bytes, name: str = "catalog object") -> Catalog:
    """Inverse of :func:`encode_catalog`.

    Raises
    ------
    CorruptedDataError
        When ``data`` is not an intact catalog object (named ``name``).
    FormatVersionError
        When it was written by a newer format.
    """
    if not data.startswith(_MAGIC):
        raise CorruptedDataError(f"{name} is not a dask_zcollection catalog object (bad magic)")
    try:
        return DECODED.get(data, _decode)
    except FormatVersionError:
        raise
    except CorruptedDataError as err:
        raise CorruptedDataError(f"{name} is damaged: {err}") from err
    except Exception as err:  # any decoding failure of damaged bytes
        raise CorruptedDataError(f"{name} is damaged: {type(err).__name__}: {err}") from err


def _decode(data: bytes) -> Catalog:
    (hlen,) = struct.unpack_from("<I", data, len(_MAGIC))
    start = len(_MAGIC) + 4
    header: Mapping[str, Any] = json.loads(data[start : start + hlen])
    if header.get("format", 0) > CATALOG_FORMAT:
        raise FormatVersionError(
            f"catalog format {header.get('format')} is newer than this library ({CATALOG_FORMAT})"
        )
    packed = data[start + hlen :]
    crc = header.get("body_crc32")
    if crc is not None and zlib.crc32(packed) != crc:
        raise CorruptedDataError("checksum mismatch")
    body = bytes(_CODEC.decode(packed))
    cols: dict[str, numpy.ndarray] = {}
    for c in header["columns"]:
        dtype = numpy.dtype(c["dtype"])
        count = int(numpy.prod(c["shape"])) if c["shape"] else 1
        cols[c["name"]] = numpy.frombuffer(
            body, dtype=dtype, count=count, offset=c["offset"]
        ).reshape(c["shape"])
    p = header["paths"]
    text = body[p["offset"] : p["offset"] + p["nbytes"]].decode()
    paths = tuple(text.split("\n")) if text else ()
    n = len(cols["keys"])
    txns = None  # absent: written before identities were recorded (no check)
    if "txns" in cols:
        t = cols["txns"]
        if t.dtype != numpy.uint8 or t.ndim != 2 or t.shape[1] != n:
            raise CorruptedDataError("columns of different lengths")
        txns = numpy.ascontiguousarray(t.T).view(f"S{t.shape[0]}").ravel()
    if not (len(paths) == n == len(cols["rows"]) == len(cols["axis_min"]) == len(cols["axis_max"])):
        raise CorruptedDataError("columns of different lengths")
    return Catalog(
        version=int(header["version"]),
        key_names=tuple(header["key_names"]),
        keys=cols["keys"],
        paths=paths,
        rows=cols["rows"],
        axis_min=cols["axis_min"],
        axis_max=cols["axis_max"],
        has_stats=bool(header.get("has_stats", True)),
        immutable=header.get("immutable"),
        txn=header.get("txn", ""),
        timestamp=float(header.get("timestamp", 0.0)),
        txns=txns,
    )
