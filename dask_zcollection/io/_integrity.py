"""Chunk integrity: the crc32c trailer, the record of written chunks, checked reads.

Every chunk this library writes ends with Zarr v3's ``crc32c`` codec (4 bytes,
the crc32c of the encoded chunk before them), unless the variable's codecs turn
checksums off. Each array's ``zarr.json`` also carries, in the attribute
:data:`RECORD_ATTR`, the record of the chunks written on purpose::

    "_zc_chunks": {"shape": [10, 3], "grid": [3, 1], "chunks": [2891336453, 41230533, true]}

``shape`` is the array's shape when the record was written: a record whose
shape is not the array's was left behind by a writer that does not keep
records (an older version appending in place) and is ignored. ``grid`` is the
chunk grid of that shape; ``chunks`` has one entry
per chunk, in C order of the grid (so appending rows appends entries): an
integer is the chunk's crc32c trailer (the chunk exists and must end with it),
``true`` a chunk that exists but whose digest is not known (checksums off, a
sharded array, or an in-place append in progress), ``null`` a chunk not written
(all fill, skipped). A chunk the record lists as written that is missing, a
trailer that does not match the bytes (a bit flip, a truncation) or a trailer
that is not the recorded one (a chunk swapped for another) is damage:
:class:`~dask_zcollection.errors.CorruptedDataError` naming the chunk's key.
Arrays without a record (the reference format, older versions) are read as
before, unchecked.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import math
from collections.abc import Mapping, Sequence
from typing import Any

import google_crc32c
import numpy
from zarr.buffer import default_buffer_prototype
from zarr.storage import WrapperStore

from ..catalog._transaction import TXN_ATTR
from ..errors import CorruptedDataError, PartitionNotFoundError

__all__ = [
    "CRC32C",
    "RECORD_ATTR",
    "VerifyReport",
    "CheckedStore",
    "ChunkRecord",
    "corrupted",
    "missing_chunk",
    "record_of",
    "split_trailer",
]

#: The array attribute holding the record of written chunks.
RECORD_ATTR = "_zc_chunks"
#: Zarr v3's checksum codec, last in a chain.
CRC32C: dict[str, Any] = {"name": "crc32c"}
#: Times a reader re-reads an array's metadata when a chunk's digest is not the
#: recorded one (an in-place append rewrites the last chunk, then the record).
_DIGEST_RETRIES = 4


def corrupted(key: str, message: str) -> CorruptedDataError:
    """A :class:`CorruptedDataError` for the object at ``key`` (kept as its ``key`` attribute)."""
    err = CorruptedDataError(message)
    err.key = key  # type: ignore[attr-defined]
    return err


def split_trailer(data: Any, key: str) -> tuple[Any, int]:
    """The payload of a chunk ending with a crc32c trailer, and the trailer.

    Raises
    ------
    CorruptedDataError
        When the chunk is too short or its trailer does not match its bytes.
    """
    raw = numpy.frombuffer(data, dtype=numpy.uint8) if not isinstance(data, numpy.ndarray) else data
    if raw.size < 4:
        raise corrupted(key, f"chunk {key!r} is truncated ({raw.size} bytes)")
    payload = raw[:-4]
    stored = int(raw[-4:].view("<u4")[0])
    if google_crc32c.value(payload) != stored:
        raise corrupted(key, f"chunk {key!r} fails its crc32c checksum (damaged bytes)")
    return payload, stored


def ends_with_crc(doc: Mapping[str, Any]) -> bool:
    """Whether the array's own chunks (not inner shard chunks) end with a crc32c trailer."""
    codecs = doc.get("codecs") or []
    return bool(codecs) and codecs[-1].get("name") == "crc32c"


def has_checksum(doc: Mapping[str, Any]) -> bool:
    """Whether the array's chunks (or a sharded array's inner chunks) end with crc32c."""
    codecs = doc.get("codecs") or []
    if ends_with_crc(doc):
        return True
    if len(codecs) == 1 and codecs[0].get("name") == "sharding_indexed":
        return ends_with_crc(codecs[0].get("configuration") or {})
    return False


def grid_of(doc: Mapping[str, Any]) -> tuple[int, ...]:
    shape = doc.get("shape") or []
    chunks = ((doc.get("chunk_grid") or {}).get("configuration") or {}).get("chunk_shape") or []
    return tuple(-(-int(n) // int(c)) if c else 0 for n, c in zip(shape, chunks, strict=True))


class ChunkRecord:
    """The record of the chunks of one array written on purpose (see module doc)."""

    __slots__ = ("entries", "grid", "shape")

    def __init__(
        self, shape: Sequence[int], grid: Sequence[int], entries: Sequence[int | bool | None]
    ) -> None:
        self.shape = tuple(int(n) for n in shape)
        self.grid = tuple(int(g) for g in grid)
        self.entries = list(entries)

    @classmethod
    def of(cls, doc: Mapping[str, Any]) -> ChunkRecord | None:
        """The record in an array's ``zarr.json``; ``None`` when it has none or a stale one."""
        raw = (doc.get("attributes") or {}).get(RECORD_ATTR)
        if not isinstance(raw, Mapping) or list(raw.get("shape") or ()) != list(
            doc.get("shape") or ()
        ):
            return None
        return cls(raw.get("shape") or (), raw.get("grid") or (), raw.get("chunks") or ())

    def to_json(self) -> dict[str, Any]:
        """The JSON form stored in ``zarr.json``."""
        return {"shape": list(self.shape), "grid": list(self.grid), "chunks": list(self.entries)}

    def index(self, coords: Sequence[int]) -> int:
        """Flat index of chunk ``coords`` (``-1``: outside the recorded grid)."""
        if len(coords) != len(self.grid) or any(
            not 0 <= c < g for c, g in zip(coords, self.grid, strict=True)
        ):
            return -1
        flat = 0
        for c, g in zip(coords, self.grid, strict=True):  # C order, as numpy.ravel_multi_index
            flat = flat * g + int(c)
        return flat

    def entry(self, coords: Sequence[int]) -> int | bool | None:
        """The entry of chunk ``coords`` (``None`` outside the grid: not recorded)."""
        i = self.index(coords)
        return self.entries[i] if 0 <= i < len(self.entries) else None

    def has_digests(self) -> bool:
        """Whether any entry is a digest (not only presence)."""
        return any(e is not None and e is not True for e in self.entries)

    def n_chunks(self) -> int:
        """Number of chunks of the recorded grid."""
        return math.prod(self.grid)

    def grown(self, doc: Mapping[str, Any], first_row_chunk: int) -> ChunkRecord:
        """The record of an in-place append in progress.

        The array grows to the shape of ``doc`` (along the first dimension); every chunk
        from row-chunk ``first_row_chunk`` on is being (re)written: its digest is
        not known yet (``true``), so a reader accepts whichever version it finds.
        """
        grid = grid_of(doc)
        per_row = math.prod(grid[1:]) if len(grid) > 1 else 1
        keep = min(first_row_chunk * per_row, len(self.entries))
        total = math.prod(grid) if grid else 1
        entries = [*self.entries[:keep], *([True] * (total - keep))]
        return ChunkRecord(doc.get("shape") or (), grid, entries)


def chunk_coords(suffix: str) -> tuple[int, ...] | None:
    """Grid coordinates of a chunk key below its array (``c/1/0``), ``None`` for metadata."""
    if suffix == "c":
        return ()
    if not suffix.startswith("c/"):
        return None
    try:
        return tuple(int(p) for p in suffix[2:].split("/"))
    except ValueError:
        return None


def record_of(
    doc: Mapping[str, Any],
    chunks: Mapping[str, bytes],
    *,
    base: ChunkRecord | None = None,
) -> ChunkRecord:
    """The record of an array whose chunks ``chunks`` (key below the array -> bytes) were written.

    ``base`` is the record before an in-place append: its entries are kept for
    the chunks not rewritten.
    """
    grid = grid_of(doc)
    digests = ends_with_crc(doc)
    total = math.prod(grid) if grid else 1
    entries: list[int | bool | None] = [None] * total
    if base is not None:
        entries[: min(total, len(base.entries))] = base.entries[:total]
    record = ChunkRecord(doc.get("shape") or (), grid, entries)
    for suffix, data in chunks.items():
        coords = chunk_coords(suffix)
        if coords is None:
            continue
        i = record.index(coords)
        if i < 0:
            continue
        record.entries[i] = int.from_bytes(data[-4:], "little") if digests else True
    return record


class CheckedStore(WrapperStore[Any]):
    """A store wrapper for one array: checks the chunks zarr reads, notes those it writes.

    Reads of a chunk key are checked against the record (``record``) and the
    crc32c trailer (when the array's chain ends with one); whole-object writes
    of chunk keys are noted in :attr:`written` (key below the array -> last 4 bytes).
    """

    def __init__(
        self, store: Any, key: str, doc: Mapping[str, Any], record: ChunkRecord | None
    ) -> None:
        super().__init__(store)
        self.key = key
        self.record = record
        self.crc = ends_with_crc(doc)  # (a sharded array's chain ends with the sharding codec)
        #: The transaction the array is stamped with (a record read again must be its).
        self.txn = stamp_of(doc)
        #: The last 4 bytes of each chunk written (all the record needs of it).
        self.written: dict[str, bytes] = {}

    def _with_store(self, store: Any) -> CheckedStore:
        out = CheckedStore(store, self.key, {}, self.record)
        out.crc, out.txn = self.crc, self.txn
        return out

    @property
    def _supports_sync_io(self) -> bool:
        return False  # every chunk goes through :meth:`get` / :meth:`set`

    def _coords(self, key: str) -> tuple[int, ...] | None:
        prefix = f"{self.key}/"
        if not key.startswith(prefix):
            return None
        return chunk_coords(key[len(prefix) :])

    async def get(self, key: str, prototype: Any, byte_range: Any = None) -> Any:
        coords = self._coords(key)
        if coords is None or self.record is None:
            return await self._store.get(key, prototype, byte_range)
        for attempt in range(_DIGEST_RETRIES + 1):
            buf = await self._store.get(key, prototype, byte_range)
            entry = self.record.entry(coords)
            if buf is None:
                if entry is None:
                    return None  # never written (all fill): zarr reads the fill value
                raise await missing_chunk(self._store, self.key, key, self.txn)
            if byte_range is not None or not self.crc:
                return buf
            _, digest = split_trailer(buf.as_numpy_array(), key)
            if entry is True or entry is None or entry == digest:
                return buf
            if attempt == _DIGEST_RETRIES:
                break
            # An in-place append may have rewritten the chunk since the record was read.
            await asyncio.sleep(0.02 * (attempt + 1))
            self.record = await reread_record(self._store, self.key, self.txn) or self.record
        raise corrupted(
            key, f"chunk {key!r} is not the chunk written at this index (swapped or replaced)"
        )

    async def set(self, key: str, value: Any) -> None:
        if self._coords(key) is not None:
            self.written[key[len(self.key) + 1 :]] = value.as_numpy_array()[-4:].tobytes()
        await self._store.set(key, value)


def stamp_of(doc: Mapping[str, Any]) -> str | None:
    """The ``_zc_txn`` an array's ``zarr.json`` is stamped with (``None``: none)."""
    txn = (doc.get("attributes") or {}).get(TXN_ATTR)
    return txn if isinstance(txn, str) else None


async def reread_record(store: Any, key: str, txn: str | None = None) -> ChunkRecord | None:
    """The record of the array at ``key`` as stored now.

    ``txn``: the stamp of the ``zarr.json`` read first; another one means the
    array is another version's (its version was deleted and the path written
    again while it was read).

    Raises
    ------
    PartitionNotFoundError
        When the array there now is stamped by another transaction.
    """
    raw = await store.get(f"{key}/zarr.json", prototype=default_buffer_prototype())
    if raw is None:
        return None
    doc = json.loads(raw.to_bytes())
    _check_stamp(doc, key, txn)
    return ChunkRecord.of(doc)


def _check_stamp(doc: Mapping[str, Any], key: str, txn: str | None) -> None:
    """Raise PartitionNotFoundError when array ``key``'s ``doc`` is stamped by another ``txn``."""
    if txn is not None and stamp_of(doc) != txn:
        raise PartitionNotFoundError(
            f"array {key!r} is another version's since it was opened (transaction "
            f"{stamp_of(doc)}, not {txn}): the version read was deleted meanwhile (the read "
            "ran longer than zcollection.retention); read the collection again"
        )


async def missing_chunk(store: Any, array: str, key: str, txn: str | None) -> Exception:
    """The error for chunk ``key`` of ``array``, recorded as written but missing.

    A version deleted while it was read (a read longer than the retention)
    loses its chunks too: when the array's ``zarr.json`` is gone, or stamped by
    another transaction than ``txn`` (the stamp read first), the partition is
    not found. Otherwise the chunk alone is gone: the data is corrupted.
    """
    raw = await store.get(f"{array}/zarr.json", prototype=default_buffer_prototype())
    if raw is None:
        return PartitionNotFoundError(
            f"array {array!r} was deleted since it was opened (chunk {key!r} is gone "
            "with it): the version read was deleted meanwhile (the read ran longer "
            "than zcollection.retention); read the collection again"
        )
    try:
        _check_stamp(json.loads(raw.to_bytes()), array, txn)
    except PartitionNotFoundError as err:
        return err
    return corrupted(key, f"chunk {key!r} is missing (the record says it was written)")


@dataclasses.dataclass(frozen=True, slots=True)
class VerifyReport:
    """What :meth:`Collection.verify <dask_zcollection.Collection.verify>` found.

    Attributes
    ----------
    checked : int
        Partitions (and the immutable group) read.
    chunks : int
        Rows of chunks read (one per chunk for arrays chunked along the axis only).
    damaged : tuple of (str, str)
        ``(store key, reason)`` of every damaged, swapped or missing object.
    unverifiable : tuple of (str, str)
        ``(partition, reason)`` of the partitions whose arrays carry no checksum
        or no record of their chunks (written by the reference implementation
        or an older version, or with checksums off): read, but damage that
        still decodes cannot be told from data.
    """

    checked: int
    chunks: int
    damaged: tuple[tuple[str, str], ...] = ()
    unverifiable: tuple[tuple[str, str], ...] = ()

    @property
    def ok(self) -> bool:
        """No damage found (unverifiable partitions do not count as damage)."""
        return not self.damaged

    def __repr__(self) -> str:
        head = (
            f"VerifyReport(ok={self.ok}, checked={self.checked}, chunks={self.chunks}, "
            f"damaged={len(self.damaged)}, unverifiable={len(self.unverifiable)})"
        )
        lines = [head]
        lines += [f"  damaged      {key}: {why}" for key, why in self.damaged]
        lines += [f"  unverifiable {key}: {why}" for key, why in self.unverifiable]
        return "\n".join(lines)
