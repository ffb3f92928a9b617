"""Read and write one partition group: every variable at once, concurrently.

Array metadata is built once per variable and chunk shape (a template) and
stamped with each partition's row count: creating a partition is then one
``zarr.json`` per node plus the chunk writes, no metadata round trips.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy
from zarr.api.asynchronous import create_array
from zarr.buffer import default_buffer_prototype
from zarr.storage import LocalStore as ZarrLocalStore
from zarr.storage import MemoryStore, StorePath

from .._zarr import AsyncArray, array_from_metadata
from ..catalog._catalog import NO_TXN
from ..catalog._transaction import TXN_ATTR
from ..errors import CorruptedDataError, PartitionNotFoundError, StorageError
from ..schema import Schema, VariableSchema
from ..schema._schema import json_value
from ..store import LocalStore, StoreSpec
from ..store._base import group_json
from ._fastread import ArrayHandle, encode_chunks
from ._integrity import (
    CRC32C,
    RECORD_ATTR,
    CheckedStore,
    ChunkRecord,
    has_checksum,
    record_of,
    stamp_of,
)

__all__ = ["PARTITION_KEY_ATTR", "PartitionIO", "gone", "group_json", "identity_of"]

_WRITE_CONFIG = {"write_empty_chunks": True}
#: Group attribute of a partition holding its key, ``[[name, value], ...]``: written
#: with every partition, read back by repair to re-file a group at its path.
PARTITION_KEY_ATTR = "_zc_partition_key"


def partition_attrs(names: Sequence[str], key: Sequence[int], txn: str) -> dict[str, Any]:
    """The attributes stamping a partition group: its key and the transaction that wrote it."""
    return {
        PARTITION_KEY_ATTR: [[n, int(v)] for n, v in zip(names, key, strict=True)],
        TXN_ATTR: txn,
    }


def _buffer(data: bytes) -> Any:
    return default_buffer_prototype().buffer.from_bytes(data)


def _zarr_codec_args(var: VariableSchema) -> dict[str, Any]:
    codecs = var.codecs
    compressors = [dict(c) for c in codecs.bytes_to_bytes]
    if codecs.checksum and not (compressors and compressors[-1].get("name") == "crc32c"):
        compressors.append(dict(CRC32C))  # last in the chain: it covers the stored bytes
    return {
        "filters": list(codecs.array_to_array) or None,
        "serializer": dict(codecs.array_to_bytes) if var.dtype.kind not in "U" else "auto",
        "compressors": compressors or None,
    }


def _with_record(
    meta: dict[str, Any], record: ChunkRecord | None, txn: str | None = None
) -> dict[str, Any]:
    """``meta`` (a template: its nested values are shared) with the record of its chunks.

    ``txn``: the transaction writing the array, stamped ``_zc_txn`` like its group
    (readers check a partition's identity on the ``zarr.json`` they read anyway).
    """
    attrs = dict(meta.get("attributes", {}))
    if record is not None:
        attrs[RECORD_ATTR] = record.to_json()
    if txn is not None:
        attrs[TXN_ATTR] = txn
    return {**meta, "attributes": attrs}


class PartitionIO:
    """Partition-level I/O for one collection (schema + store), reused across partitions.

    Parameters
    ----------
    spec : StoreSpec
        Where the collection lives.
    schema : Schema
        The collection schema (immutable flags set).
    dimension : str
        The partitioned dimension.
    """

    def __init__(self, spec: StoreSpec, schema: Schema, dimension: str) -> None:
        self.spec = spec
        self.schema = schema
        self.dimension = dimension
        self._templates: dict[tuple[str, tuple[int, ...]], dict[str, Any]] = {}
        self._parents: set[str] = set()
        self.partitioned = [p for p, v in schema.walk() if not v.immutable]
        self.immutable = [p for p, v in schema.walk() if v.immutable]

    # -- metadata templates ----------------------------------------------------------------
    def _chunks(
        self, path: str, shape: Sequence[int]
    ) -> tuple[tuple[int, ...], tuple[int, ...] | None]:
        dims = self.schema.variable_dimensions(path)
        chunks = []
        shards = []
        for n, dim in zip(shape, dims.values(), strict=True):
            c = dim.chunks or max(n, 1)
            # A partition shorter than one chunk is one chunk of its own length:
            # padding 16 rows to a 16384-row chunk costs a 16384-row encode. (A
            # sharded dimension keeps its chunks: they must divide the shard.)
            chunks.append(c if dim.shards else max(1, min(c, n)))
            shards.append(dim.shards or 0)
        if any(shards):
            shard_shape = tuple(s or c for s, c in zip(shards, chunks, strict=True))
            return tuple(chunks), shard_shape
        return tuple(chunks), None

    async def template(self, path: str, shape: Sequence[int]) -> dict[str, Any]:
        """The ``zarr.json`` of variable ``path`` for an array of ``shape``.

        A fresh top-level dict whose nested values are shared with the cached
        template: read them, never mutate them (a deep copy per partition cost
        a quarter of the CPU of inserting small partitions).
        """
        chunks, shards = self._chunks(path, shape)
        cache_key = (path, chunks + (shards or ()))
        meta = self._templates.get(cache_key)
        if meta is None:
            var = self.schema[path]
            store = MemoryStore()
            await create_array(
                store,
                name="a",
                shape=tuple(shape),
                dtype=var.dtype,
                chunks=chunks,
                shards=shards,
                fill_value=var.fill_value,
                attributes=_json_attrs(var.attrs),
                dimension_names=var.dimensions,
                **_zarr_codec_args(var),
            )
            buf = await store.get("a/zarr.json", prototype=default_buffer_prototype())
            assert buf is not None  # written by create_array just above
            meta = json.loads(buf.to_bytes())
            self._templates[cache_key] = meta
        return {**meta, "shape": list(shape)}

    # -- write --------------------------------------------------------------------------------
    async def write(
        self,
        path: str,
        columns: Mapping[str, numpy.ndarray],
        *,
        attrs: Mapping[str, Any] | None = None,
    ) -> None:
        """Write a complete partition group at ``path`` (nested groups included).

        The group's own ``zarr.json`` is written last, so a group whose
        ``zarr.json`` exists has all its arrays. The ``_zc_txn`` of ``attrs``
        is stamped on every array too.
        """
        txn = (attrs or {}).get(TXN_ATTR)
        files: dict[str, bytes] = {}
        for gpath, group in self.schema.walk_groups():
            if gpath:
                files[f"{path}/{gpath}/zarr.json"] = group_json(group.attrs)
        slow = []
        encoded = await asyncio.gather(
            *(self._encode_array(vpath, data, txn) for vpath, data in columns.items())
        )
        for (vpath, data), chunks in zip(columns.items(), encoded, strict=True):
            if chunks is None:
                slow.append(self._write_array(f"{path}/{vpath}", vpath, data, txn))
            else:
                files.update({f"{path}/{vpath}/{k}": v for k, v in chunks.items()})
        try:
            if slow:
                await asyncio.gather(*slow)
            await self.spec.put_many(files, last={f"{path}/zarr.json": self.root_group(attrs)})
        except OSError as err:
            raise StorageError(
                f"cannot write partition {path!r} to {self.spec.url}: {err}"
            ) from err

    def root_group(self, attrs: Mapping[str, Any] | None = None) -> bytes:
        """The ``zarr.json`` of a partition group: the schema's root attributes and ``attrs``."""
        return group_json(_json_attrs({**self.schema.root.attrs, **(attrs or {})}))

    async def _encode_array(
        self, vpath: str, data: numpy.ndarray, txn: str | None = None
    ) -> dict[str, bytes] | None:
        """``zarr.json`` and encoded chunks of one array (``None``: let zarr write it)."""
        meta = await self.template(vpath, data.shape)
        chunks = await encode_chunks(meta, data, self.schema[vpath].fill_value)
        if chunks is None:
            return None
        chunks["zarr.json"] = json.dumps(_with_record(meta, record_of(meta, chunks), txn)).encode()
        return chunks

    async def _write_array(
        self, key: str, vpath: str, data: numpy.ndarray, txn: str | None = None
    ) -> None:
        """Write one array through zarr's pipeline, then its ``zarr.json`` with the record.

        The metadata goes first too: Icechunk takes chunks only for an existing array.
        """
        meta = _with_record(await self.template(vpath, data.shape), None, txn)
        store = CheckedStore(self.spec.zarr_store(), key, meta, None)
        await store.set(f"{key}/zarr.json", _buffer(json.dumps(meta).encode()))
        if data.size:
            arr = array_from_metadata(meta, StorePath(store, key), _WRITE_CONFIG)
            await arr.setitem(Ellipsis, data)
        doc = _with_record(meta, record_of(meta, store.written), txn)
        await store.set(f"{key}/zarr.json", _buffer(json.dumps(doc).encode()))

    async def ensure_parents(self, path: str) -> None:
        """Write ``zarr.json`` of the intermediate groups of ``path`` (``year=2024/``).

        Parents seen once by this process are not checked again (except in
        transactions, which may be discarded).
        """
        parts = path.split("/")[:-1]
        keys = [
            k
            for k in ("/".join(parts[: i + 1]) + "/zarr.json" for i in range(len(parts)))
            if k not in self._parents or self.spec.transactional
        ]
        if not keys:
            return
        store = self.spec.zarr_store()
        missing = [
            k
            for k, ok in zip(
                keys, await asyncio.gather(*(store.exists(k) for k in keys)), strict=True
            )
            if not ok
        ]
        await asyncio.gather(*(store.set(k, _buffer(group_json())) for k in missing))
        self._parents.update(keys)

    # -- read ---------------------------------------------------------------------------------
    async def open_handle(self, key: str, name: str) -> ArrayHandle:
        """Open variable ``name`` stored at ``key`` (one metadata read, no zarr array built)."""
        store = self.spec.zarr_store()
        raw: bytes | None
        if isinstance(self.spec, LocalStore) and type(store) is ZarrLocalStore:
            # Read on the event loop (LocalStore.get), no thread hop.
            raw = await self.spec.get(f"{key}/zarr.json")
        else:
            buf = await store.get(f"{key}/zarr.json", prototype=default_buffer_prototype())
            raw = None if buf is None else buf.to_bytes()
        if raw is None:
            raise PartitionNotFoundError(f"array {key!r} is missing from {self.spec.url}")
        var = self.schema[name]
        return ArrayHandle(store, key, json.loads(raw), var.dtype, var.fill_value)

    async def open_array(self, key: str) -> AsyncArray[Any]:
        """Open the array at ``key`` (one metadata read)."""
        store = self.spec.zarr_store()
        buf = await store.get(f"{key}/zarr.json", prototype=default_buffer_prototype())
        if buf is None:
            raise PartitionNotFoundError(f"array {key!r} is missing from {self.spec.url}")
        return array_from_metadata(json.loads(buf.to_bytes()), StorePath(store, key))

    async def open_partition(
        self, path: str, names: Sequence[str], txn: str = ""
    ) -> list[ArrayHandle]:
        """Open the arrays ``names`` of the partition at ``path``, whose identity is ``txn``.

        Raises
        ------
        PartitionNotFoundError
            When the group the catalog names is gone (``txn`` known: another one
            may have taken its path, see :meth:`check_identity`).
        """
        try:
            arrays = list(
                await asyncio.gather(*(self.open_handle(f"{path}/{v}", v) for v in names))
            )
        except PartitionNotFoundError as err:
            if not txn:
                raise
            raise PartitionNotFoundError(gone(path, self.spec.url, txn)) from err
        if txn and not stamped(txn, arrays):
            await self.check_identity(path, txn, arrays)
        return arrays

    async def read(
        self,
        path: str,
        variables: Iterable[str] | None = None,
        *,
        start: int = 0,
        stop: int | None = None,
        txn: str = "",
    ) -> dict[str, numpy.ndarray]:
        """Read rows ``start:stop`` of the partition variables at ``path``.

        ``txn``: the identity of its group the catalog records (checked, see
        :meth:`check_identity`; ``""``: not checked).
        """
        names = list(self.partitioned if variables is None else variables)
        handles = await self.open_partition(path, names, txn)
        arrays = await asyncio.gather(*(self._read_handle(h, start, stop) for h in handles))
        return dict(zip(names, arrays, strict=True))

    async def _read_array(
        self, path: str, name: str, start: int, stop: int | None
    ) -> numpy.ndarray:
        return await self._read_handle(await self.open_handle(f"{path}/{name}", name), start, stop)

    async def _read_handle(self, arr: ArrayHandle, start: int, stop: int | None) -> numpy.ndarray:
        key = arr.key
        try:
            return await arr.read(start, stop)
        except CorruptedDataError:
            raise
        except OSError as err:
            raise StorageError(f"cannot read {key!r} from {self.spec.url}: {err}") from err

    async def read_immutable(
        self, path: str, variables: Iterable[str] | None = None
    ) -> dict[str, numpy.ndarray]:
        """Read the immutable variables stored at ``path``."""
        names = list(self.immutable if variables is None else variables)
        arrays = await asyncio.gather(*(self._read_array(path, v, 0, None) for v in names))
        return dict(zip(names, arrays, strict=True))

    async def check(
        self, path: str, names: Iterable[str], rows: int = -1
    ) -> tuple[int, list[tuple[str, str]], list[str]]:
        """Read rows ``[0, rows)`` of the arrays ``names`` of the group at ``path``, chunk by chunk.

        ``rows < 0``: every row of each array. Returns the chunk rows read, the
        damaged objects as ``(key, reason)``, and why the group cannot be fully
        verified (arrays without a record or without checksums).
        """
        count = 0
        damaged: list[tuple[str, str]] = []
        unrecorded: list[str] = []
        unsummed: list[str] = []
        group = await self.spec.get(f"{path}/zarr.json")
        if group is None:
            damaged.append((f"{path}/zarr.json", "the group's zarr.json is missing"))
        for name in names:  # one array at a time: memory stays a few chunks
            key = f"{path}/{name}"
            try:
                arr = await self.open_handle(key, name)
            except PartitionNotFoundError:
                damaged.append((f"{key}/zarr.json", "the array's zarr.json is missing"))
                continue
            except ValueError as err:  # JSONDecodeError
                damaged.append((f"{key}/zarr.json", f"the array's zarr.json is unreadable: {err}"))
                continue
            stop = arr.shape[0] if arr.ndim else 0
            if arr.ndim and rows >= 0:
                if arr.shape[0] < rows:
                    damaged.append(
                        (f"{key}/zarr.json", f"holds {arr.shape[0]} rows, the catalog {rows}")
                    )
                stop = min(rows, arr.shape[0])
            if arr.record is None:
                unrecorded.append(name)
            elif not has_checksum(arr.doc):
                unsummed.append(name)
            try:
                n, bad = await arr.check(stop)
            except OSError as err:
                raise StorageError(f"cannot read {key!r} from {self.spec.url}: {err}") from err
            count += n
            damaged += bad
        reasons = []
        if unrecorded:
            reasons.append(
                "no record of written chunks (written before checksums): " + ", ".join(unrecorded)
            )
        if unsummed:
            reasons.append("checksums off, only chunk presence checked: " + ", ".join(unsummed))
        return count, damaged, reasons

    async def axis_stats(self, path: str, axis: str) -> tuple[int, Any, Any]:
        """Row count, min and max of the axis variable of one partition (reads it)."""
        values = (await self.read(path, [axis]))[axis]
        if not len(values):
            return 0, None, None
        return len(values), values.min(), values.max()

    async def row_count(self, path: str, axis: str) -> int:
        """Row count of a partition from its axis array's metadata."""
        arr = await self.open_array(f"{path}/{axis}")
        return int(arr.shape[0])

    async def identity(self, path: str) -> str:
        """The identity of the group at ``path``: its ``_zc_txn``, :data:`NO_TXN` if it has none.

        ``""`` when the group is missing or unreadable (unknown: nothing to check).
        """
        raw = await self.spec.get(f"{path}/zarr.json")
        try:
            attrs = json.loads(raw).get("attributes", {}) if raw is not None else None
        except (ValueError, AttributeError):
            return ""
        return identity_of(attrs)

    async def check_identity(self, path: str, txn: str, arrays: Sequence[ArrayHandle]) -> None:
        """The group at ``path`` is the one the reader's catalog names (identity ``txn``).

        Checked on the arrays' ``zarr.json`` the read opened (each stamped
        ``_zc_txn`` by the writer): no request of its own, except for arrays
        without the stamp (written by an older version, or rebuilt by repair),
        where the group's ``zarr.json`` tells. ``txn`` empty: nothing to check
        (a catalog that records no identity).

        Raises
        ------
        PartitionNotFoundError
            When the group there is another one: the version the catalog names
            was retired and collected, and the path written again.
        """
        if not txn or not arrays:
            return
        stamps = {a.doc.get("attributes", {}).get(TXN_ATTR) for a in arrays}
        other = next((s for s in stamps if s is not None and s != txn), None)
        if other is None and (txn == NO_TXN or None not in stamps):
            return  # a reference group (no stamp anywhere), or every array stamped txn
        found = other if other is not None else await self.identity(path)
        if found != txn:
            raise PartitionNotFoundError(gone(path, self.spec.url, txn, found or None))

    async def read_key_attr(self, path: str) -> Any:
        """The partition-key attribute of a group (``None`` when absent)."""
        raw = await self.spec.get(f"{path}/zarr.json")
        if raw is None:
            return None
        return json.loads(raw).get("attributes", {}).get(PARTITION_KEY_ATTR)


def stamped(txn: str, arrays: Sequence[ArrayHandle]) -> bool:
    """Whether every array is stamped ``txn`` (the common case, checked without a coroutine)."""
    return all(stamp_of(a.doc) == txn for a in arrays)


def identity_of(attrs: Any) -> str:
    """The identity of a group from its attributes (``""``: no group, or not readable)."""
    if not isinstance(attrs, Mapping):
        return ""
    txn = attrs.get(TXN_ATTR)
    return txn if isinstance(txn, str) and txn else NO_TXN


def gone(path: str, url: str, txn: str, found: str | None = None) -> str:
    """The message of a partition whose version the reader's catalog names is gone.

    ``found``: the identity of the group at ``path`` now (``None``: nothing there).
    """
    was = "no transaction" if txn == NO_TXN else f"transaction {txn}"
    if found is None:
        now = "nothing is there now"
    elif found == NO_TXN:
        now = "a group written by no transaction is there now"
    else:
        now = f"the group of transaction {found} is there now"
    return (
        f"partition {path!r} of {url}: the version the reader's catalog names (written by "
        f"{was}) is gone, {now}. It was retired and deleted: the read ran longer than "
        "zcollection.retention after its catalog was read, or vacuum(older_than=...) ran "
        "meanwhile; read the collection again"
    )


def _json_attrs(attrs: Mapping[str, Any]) -> dict[str, Any]:
    """Attributes made JSON-safe (numpy scalars and arrays to Python values)."""
    return {k: json_value(v) for k, v in attrs.items()}
