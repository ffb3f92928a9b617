"""Indexes stored with the collection: one small parquet object per partition.

Layout (``docs/format.md``)::

    _indexes/<name>/_index.json              {"format", "name", "columns", "keys", "builder"}
    _indexes/<name>/<canonical path>.parquet  the index rows of one partition

Each partition's object records, in its parquet metadata, the identity of the
partition version it was built from: the group path the catalog names, its
committed row count and the ``_zc_txn`` of its group; for an index of a view
(stored in the view's store), also the view partition's (``"view"``: its path,
rows and ``_zc_txn``, ``null`` when the view has not computed it), so
recomputing the view partition or rewriting the base one both make it stale. Writers never touch an
index; a lookup compares each selected partition's identity with the catalog
it reads under and refuses stale or missing entries
(:class:`~dask_zcollection.errors.StaleIndexError`, naming them), and
:func:`update_index` rebuilds only those. So no commit, crash or concurrent
writer can make an index answer with rows of another version.
"""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy

from ..errors import InvalidInputError, NotFoundError, StaleIndexError
from ._indexer import (
    INDEX_META_KEY,
    PARTITION,
    RESERVED,
    Indexer,
    _build_one,
    _txns,
    concat_columns,
    view_identities,
)

__all__ = [
    "INDEX_DIR",
    "EntryMaker",
    "create_index",
    "entry_maker",
    "drop_index",
    "list_indexes",
    "load_index",
    "update_index",
]

INDEX_DIR = "_indexes"
STORED_FORMAT = 1
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$")


def _check_name(name: str) -> str:
    if not isinstance(name, str) or not _NAME.match(name):
        raise InvalidInputError(
            f"invalid index name {name!r}: letters, digits, '_', '.', '-', not starting "
            "with '_' or '.'"
        )
    return name


def _descriptor_key(name: str) -> str:
    return f"{INDEX_DIR}/{name}/_index.json"


def _object_key(name: str, partition: str) -> str:
    return f"{INDEX_DIR}/{name}/{partition}.parquet"


def _spec_of(source: Any) -> Any:
    """The store holding the indexes of what ``source`` reads: the view's store for a view."""
    overlay = getattr(source, "overlay", None)  # a view's read source (view._source.ViewSource)
    return source.spec if overlay is None else overlay.spec


async def _identities(source: Any, catalog: Any, canonical: Sequence[str]) -> dict[str, Any]:
    """Canonical path -> ``{"path", "rows", "txn"}`` of each committed partition version.

    Over a view, each adds ``"view"``: ``{"path", "rows", "txn"}`` of the view's
    partition (``None``: not computed), read from the view's own catalog.
    """
    txns = await _txns(source.spec, catalog.paths)
    out = {
        c: {"path": p, "rows": int(r), "txn": t}
        for c, p, r, t in zip(canonical, catalog.paths, catalog.rows.tolist(), txns, strict=True)
    }
    views = await view_identities(source, canonical)
    if views is not None:
        for c in canonical:
            out[c]["view"] = views[c]
    return out


def _same(entry: Mapping[str, Any] | None, identity: Mapping[str, Any]) -> bool:
    if entry is None:
        return False
    if entry.get("path") != identity["path"] or entry.get("txn") != identity["txn"]:
        return False
    if entry.get("view") != identity.get("view"):
        return False
    return identity["rows"] < 0 or entry.get("rows") == identity["rows"]


def _canonical(catalog: Any, encode: Callable[[Sequence[int]], str]) -> list[str]:
    return [encode(catalog.key_tuple(i)) for i in range(len(catalog))]


def _partition_filter(catalog: Any, mask: numpy.ndarray) -> str:
    """A key filter selecting exactly the partitions of ``mask``."""
    names = catalog.key_names
    terms = [
        "(" + " and ".join(f"{n} == {int(v)}" for n, v in zip(names, row, strict=True)) + ")"
        for row in catalog.keys[mask].tolist()
    ]
    return " or ".join(terms)


async def _read_descriptor(spec: Any, name: str) -> dict[str, Any]:
    raw = await spec.get(_descriptor_key(_check_name(name)))
    if raw is None:
        raise NotFoundError(f"{spec.url} has no index named {name!r}")
    descriptor: dict[str, Any] = json.loads(raw)
    if descriptor.get("format", 0) > STORED_FORMAT:
        raise InvalidInputError(f"index {name!r} has a newer format ({descriptor['format']})")
    return descriptor


async def _build_and_write(
    collection: Any,
    name: str,
    builder: Callable[..., Any],
    lazy: Any,
    descriptor: dict[str, Any],
) -> list[str]:
    """Build the index over ``lazy``'s partitions and write one object each, then the descriptor."""
    idx = await asyncio.to_thread(Indexer.build, lazy, builder)
    canonical = lazy.partitions
    identities = await _identities(lazy.source, lazy.catalog, canonical)
    parts = idx.table[PARTITION]
    columns = list(idx.columns)
    stored = [c for c, _ in descriptor.get("columns") or []]
    if descriptor.get("columns") is not None and len(parts) and stored != columns:
        raise InvalidInputError(
            f"the builder returns columns {columns}, index {name!r} has {stored}"
        )
    descriptor.setdefault("columns", [[c, str(idx.table[c].dtype)] for c in columns])
    objects: dict[str, bytes] = {}
    for path in canonical:
        mask = parts == path
        table = {k: v[mask] for k, v in idx.table.items()}
        meta = {"format": STORED_FORMAT, "partition": path, **identities[path]}
        objects[_object_key(name, path)] = Indexer(table, meta).to_parquet()
    spec = collection.spec.for_writing()
    await spec.put_many(
        objects, last={_descriptor_key(name): json.dumps(descriptor, sort_keys=True).encode()}
    )
    await spec.publish(f"index {name}: {len(objects)} partition(s)")
    return list(canonical)


async def create_index(
    collection: Any,
    name: str,
    builder: Callable[..., Any],
    *,
    filters: Any = None,
    variables: Sequence[str] | None = None,
    overwrite: bool = False,
) -> list[str]:
    """Build an index of ``collection`` and store it under ``_indexes/<name>/``.

    ``collection`` is an :class:`~dask_zcollection.aio.AsyncCollection` or an
    :class:`~dask_zcollection.aio.AsyncView` (anything with ``spec`` and
    ``lazy(filters=, variables=)``, checked writable by :class:`StoredIndexes`);
    a view's index lives in the view's store. Returns the partitions indexed.
    """
    _check_name(name)
    if not callable(builder):
        raise InvalidInputError(f"an index needs a builder function, got {builder!r}")
    read = await collection.spec.pinned()  # the branch tip on Icechunk
    if not overwrite and await read.get(_descriptor_key(name)) is not None:
        from ..errors import AlreadyExistsError

        raise AlreadyExistsError(f"index {name!r} exists (overwrite=True replaces it)")
    import cloudpickle

    lazy = await collection.lazy(filters=filters, variables=variables)
    descriptor: dict[str, Any] = {
        "format": STORED_FORMAT,
        "name": name,
        "keys": list(lazy.source.config.partitioning.keys),
        "variables": None if variables is None else list(variables),
        "builder": cloudpickle.dumps(builder).hex(),
    }
    if overwrite:
        spec = collection.spec.for_writing()
        await spec.delete_prefix(f"{INDEX_DIR}/{name}")
        await spec.publish(f"drop index {name}")
    return await _build_and_write(collection, name, builder, lazy, descriptor)


async def update_index(
    collection: Any, name: str, builder: Callable[..., Any] | None = None
) -> list[str]:
    """Rebuild the stale or missing partitions of index ``name``; drop entries of dropped ones.

    Without ``builder``, the one stored by :func:`create_index` is used (it is
    unpickled: the store is trusted as the code that wrote it). Returns the
    partitions rebuilt.
    """
    read = await collection.spec.pinned()  # the branch tip on Icechunk
    descriptor = await _read_descriptor(read, name)
    if builder is None:
        import cloudpickle

        builder = cloudpickle.loads(bytes.fromhex(descriptor["builder"]))
    assert builder is not None
    lazy = await collection.lazy(variables=descriptor.get("variables"))
    catalog = lazy.catalog
    canonical = lazy.partitions
    identities = await _identities(lazy.source, catalog, canonical)
    entries = await _entries(read, name, canonical)
    stale = numpy.array([not _same(entries[c], identities[c]) for c in canonical], dtype=bool)
    listed = await read.list_prefix(f"{INDEX_DIR}/{name}/")
    known = set(canonical)
    gone = [
        k
        for k in listed
        if k.endswith(".parquet")
        and k[len(INDEX_DIR) + len(name) + 2 : -len(".parquet")] not in known
    ]
    if gone:
        spec = collection.spec.for_writing()
        await asyncio.gather(*(spec.delete(k) for k in gone))
        await spec.publish(f"index {name}: drop {len(gone)} entries")
    if not stale.any():
        return []
    sub = lazy.filter(_partition_filter(catalog, stale))
    return await _build_and_write(collection, name, builder, sub, descriptor)


async def _entries(spec: Any, name: str, canonical: Sequence[str]) -> dict[str, Any]:
    """The stored identity of each partition's index object (``None``: missing)."""

    async def one(path: str) -> Any:
        raw = await spec.get(_object_key(name, path))
        return None if raw is None else _meta_of(raw)

    return dict(zip(canonical, await asyncio.gather(*(one(p) for p in canonical)), strict=True))


def _meta_of(raw: bytes) -> dict[str, Any] | None:
    import pyarrow
    import pyarrow.parquet as pq

    meta = pq.read_schema(pyarrow.BufferReader(raw)).metadata or {}
    value = meta.get(INDEX_META_KEY)
    return None if value is None else json.loads(value)  # type: ignore[no-any-return]


async def load_index(
    source: Any, name: str, catalog: Any, encode: Callable[[Sequence[int]], str]
) -> Indexer:
    """The stored index ``name`` over the partitions of ``catalog``, checked fresh.

    ``source`` is the read source of the lazy collection (a view's: the index
    is read from the view's store, and the view's partitions must be fresh too).

    Raises
    ------
    NotFoundError
        No index of that name.
    StaleIndexError
        Partitions of ``catalog`` whose entry is missing or was built from
        another version (named; ``update_index`` rebuilds them).
    """
    spec = _spec_of(source)
    descriptor = await _read_descriptor(spec, name)
    canonical = _canonical(catalog, encode)
    identities, raws = await asyncio.gather(
        _identities(source, catalog, canonical),
        asyncio.gather(*(spec.get(_object_key(name, p)) for p in canonical)),
    )
    missing = [p for p, raw in zip(canonical, raws, strict=True) if raw is None]
    if missing:
        raise StaleIndexError(
            f"index {name!r} has no entry for partition(s) {missing[:10]} (written since it "
            "was built): update_index(name) builds them"
        )
    tables = []
    stale = []
    partitions: dict[str, Any] = {}
    for path, raw in zip(canonical, raws, strict=True):
        part = Indexer.from_parquet(raw, f"index {name!r} of partition {path!r}")
        if not _same(part.meta, identities[path]):
            stale.append(path)
        tables.append(part.table)
        partitions[path] = identities[path]
    if stale:
        raise StaleIndexError(
            f"index {name!r} is out of date for partition(s) {stale[:10]} (rewritten since "
            "it was built): update_index(name) rebuilds them"
        )
    if tables:
        table = concat_columns(tables)
    else:
        table = concat_columns([])
        for c, dtype in descriptor.get("columns") or []:
            table[c] = numpy.empty(0, dtype=dtype)
    meta = {"format": 1, "keys": descriptor.get("keys"), "partitions": partitions}
    return Indexer(table, meta)


#: ``make(dataset, canonical, identity) -> {key: parquet bytes}``: a partition's new entry.
EntryMaker = Callable[[Any, str, Mapping[str, Any]], dict[str, bytes]]


async def entry_maker(
    spec: Any, name: str, axis: str
) -> tuple[EntryMaker, list[str] | None] | None:
    """What rebuilds index ``name``'s entry of a partition a write task just wrote.

    ``update(fn, index=name)`` hands it to its tasks: each runs the stored
    builder over the partition version it wrote and puts the entry, recording
    that version's identity (its path, rows and this transaction), beside the
    data. The entry matches the catalog once the commit lands (on Icechunk, in
    the same commit); if the commit never does, the entry names a version
    never committed and is refused as stale until ``update_index``. Returns it
    with the variables the builder needs (``None``: all), or ``None`` when there
    is no stored index ``name``.
    """
    raw = await spec.get(_descriptor_key(_check_name(name)))
    if raw is None:
        return None
    import cloudpickle

    descriptor = json.loads(raw)
    builder = cloudpickle.loads(bytes.fromhex(descriptor["builder"]))
    stored = [c for c, _ in descriptor.get("columns") or []]

    def make(ds: Any, canonical: str, identity: Mapping[str, Any]) -> dict[str, bytes]:
        try:
            columns = _build_one(ds, builder, canonical, axis)
        except Exception:  # the old entry stays, stale: update_index reports the error
            return {}
        columns.pop("__rows", None)
        if stored and [c for c in columns if c not in RESERVED] != stored:
            return {}  # not the index's columns: left stale, update_index reports it
        meta = {"format": STORED_FORMAT, "partition": canonical, **identity}
        return {_object_key(name, canonical): Indexer(columns, meta).to_parquet()}

    variables = descriptor.get("variables")
    return make, None if variables is None else list(variables)


async def drop_index(collection: Any, name: str) -> None:
    """Delete index ``name`` (its descriptor first: a half-deleted index is no index)."""
    await _read_descriptor(await collection.spec.pinned(), name)
    spec = collection.spec.for_writing()
    await spec.delete(_descriptor_key(name))
    await spec.delete_prefix(f"{INDEX_DIR}/{name}")
    await spec.publish(f"drop index {name}")


async def list_indexes(spec: Any) -> list[str]:
    """Names of the indexes stored in the collection."""
    read = await spec.pinned()
    names = [n.strip("/") for n in await read.list_dir(INDEX_DIR)]
    names = [n for n in names if _NAME.match(n) and n != "zarr.json"]
    # An index exists once its descriptor does (an emptied folder may still be listed:
    # SeaweedFS keeps directories; Icechunk lists an implicit group's zarr.json).
    exists = await asyncio.gather(*(read.exists(_descriptor_key(n)) for n in names))
    return sorted(n for n, ok in zip(names, exists, strict=True) if ok)


class StoredIndexes:
    """The stored-index methods of a writable collection or view (async API).

    The class using it has ``spec`` (where the indexes are stored) and
    ``_check_writable()``; the index lives in that store under ``_indexes/``.
    """

    spec: Any

    def _check_writable(self) -> None:  # pragma: no cover - the using class's own
        raise NotImplementedError

    async def create_index(
        self,
        name: str,
        builder: Callable[..., Any],
        *,
        filters: Any = None,
        variables: Sequence[str] | None = None,
        overwrite: bool = False,
    ) -> list[str]:
        """Build an index and store it (see ``Collection.create_index``)."""
        self._check_writable()
        return await create_index(
            self, name, builder, filters=filters, variables=variables, overwrite=overwrite
        )

    async def update_index(self, name: str, builder: Callable[..., Any] | None = None) -> list[str]:
        """Rebuild the stale or missing entries of index ``name``; return those partitions."""
        self._check_writable()
        return await update_index(self, name, builder)

    async def drop_index(self, name: str) -> None:
        """Delete index ``name``."""
        self._check_writable()
        await drop_index(self, name)

    async def indexes(self) -> list[str]:
        """Names of the stored indexes."""
        return await list_indexes(self.spec)
