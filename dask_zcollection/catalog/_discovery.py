"""Finding the committed partitions: the newest catalog, else a listing of the tree.

A collection of ours has a catalog (``_catalog/v<N>.zcat``); a reference
collection has ``_catalog/state.json`` or nothing. Without a catalog of ours
the partitions are *listed* (no row counts or axis stats; the first writer
adopts the listing, see ``WritePlanner.base``). :func:`walk` is also how
``repair()`` compares the tree with the catalog.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
from collections.abc import Sequence
from typing import Any

import numpy

from ..errors import CorruptedDataError
from ..store import StoreSpec
from ._catalog import Catalog
from ._log import CatalogLog, Chooser
from ._transaction import PENDING_ATTR, TXN_ATTR

__all__ = ["IMMUTABLE_PATH", "CatalogDiscovery", "FoundGroup", "walk"]

#: Where the variables that do not span the partition axis are stored.
IMMUTABLE_PATH = "_immutable"


@dataclasses.dataclass(frozen=True, slots=True)
class FoundGroup:
    """A partition-looking directory found by :func:`walk`.

    Attributes
    ----------
    path : str
        Its path (``year=2024/month=03`` or ``…@<txn>``).
    attrs : dict or None
        Attributes of its group ``zarr.json`` (``None``: missing or unreadable).
    has_data : bool
        Whether it holds anything besides ``zarr.json`` (only when probed).
    """

    path: str
    attrs: dict[str, Any] | None
    has_data: bool = False

    @property
    def canonical(self) -> str:
        """The path without its version suffix."""
        return self.path.partition("@")[0]

    @property
    def txn(self) -> str:
        """The transaction that wrote it (stamped, else its path suffix)."""
        return str((self.attrs or {}).get(TXN_ATTR, self.path.partition("@")[2]))

    @property
    def pending(self) -> bool:
        """A claim whose writer has not written the group yet."""
        return bool((self.attrs or {}).get(PENDING_ATTR))


async def walk(
    spec: StoreSpec, keys: Sequence[str], *, strict: bool = False, probe_data: bool = False
) -> list[FoundGroup]:
    """Every partition-looking directory at the depth of ``keys`` (one listing per level).

    Parameters
    ----------
    strict : bool
        Refuse a directory named by another key than its level's (the
        collection descriptor was edited) with a ``CorruptedDataError``.
    probe_data : bool
        Also list each group (:attr:`FoundGroup.has_data`).
    """
    level = [""]
    for depth, name in enumerate(keys):
        children = await asyncio.gather(*(spec.list_dir(p) for p in level))
        nxt = []
        for parent, kids in zip(level, children, strict=True):
            for kid in kids:
                if "=" not in kid or kid.startswith((".", "_")):
                    continue
                label = kid.partition("=")[0]
                if strict and label != name:
                    raise CorruptedDataError(
                        f"{spec.url}/{parent + '/' if parent else ''}{kid}: a directory named "
                        f"{label!r} where the collection's partitioning "
                        f"({'/'.join(n + '=...' for n in keys)}) has {name!r} at level "
                        f"{depth + 1}; was _zcollection.json edited? Nothing was changed"
                    )
                nxt.append(f"{parent}/{kid}" if parent else kid)
        level = nxt
    metas = await asyncio.gather(*(spec.get(f"{p}/zarr.json") for p in level))
    listings: Sequence[Sequence[str]] = [()] * len(level)
    if probe_data:
        listings = await asyncio.gather(*(spec.list_dir(p) for p in level))
    found = []
    for path, raw, listing in zip(level, metas, listings, strict=True):
        attrs: dict[str, Any] | None = None
        if raw is not None:
            try:
                attrs = dict(json.loads(raw).get("attributes", {}))
            except (ValueError, AttributeError, TypeError):
                attrs = None
        found.append(FoundGroup(path, attrs, any(n != "zarr.json" for n in listing)))
    return found


class CatalogDiscovery:
    """How the committed partitions of one collection are found (and adopted).

    Parameters
    ----------
    spec : StoreSpec
        The collection's store.
    partitioning : Partitioning
        Decodes partition paths.
    axis_dtype : numpy.dtype
        Dtype of the axis statistics.
    """

    def __init__(self, spec: StoreSpec, partitioning: Any, axis_dtype: Any) -> None:
        self.spec = spec
        self.partitioning = partitioning
        self.axis_dtype = axis_dtype
        self.log = CatalogLog(spec)

    def empty(self) -> Catalog:
        """A catalog with no partition."""
        return Catalog.empty(self.partitioning.keys, self.axis_dtype)

    async def load(self, choose: Chooser = None, *, writing: bool = False) -> Catalog:
        """The newest intact catalog, else one listed from ``state.json`` or a walk.

        ``choose`` picks the segments of a committed catalog to read (see
        :func:`~dask_zcollection.catalog._log.by_filter`): the catalog returned
        then holds at least the partitions they may match (a listed one, all).
        ``writing``: refuse (``CorruptedDataError``) while a version above the
        newest intact one is damaged, instead of warning.
        """
        latest = await (self.log.writable(choose) if writing else self.log.latest(choose))
        if latest is not None:
            return latest
        paths = await self.log.legacy_paths()
        if paths is None:
            paths = await self.newest_versions()
        return self.listed(paths)

    def listed(self, paths: Sequence[str]) -> Catalog:
        """A catalog without stats from partition paths (reference state.json or a walk)."""
        catalog = self.empty()
        if not paths:
            return catalog
        keys = numpy.array(
            [self.partitioning.decode(p.partition("@")[0]) for p in paths], dtype="int64"
        )
        n = len(paths)
        zeros = numpy.zeros(n, catalog.axis_min.dtype)
        catalog = catalog.with_partitions(keys, list(paths), numpy.full(n, -1), zeros, zeros)
        return dataclasses.replace(catalog, has_stats=False)

    async def newest_versions(self, prefer: frozenset[str] = frozenset()) -> list[str]:
        """The path of each partition group found by a walk (collections without a catalog).

        Of several versions of a partition, one in ``prefer`` (the paths the
        committed catalog names) wins, else the newest transaction's. Pending
        claims and groups without ``zarr.json`` are not partitions.
        """
        best: dict[str, tuple[str, str]] = {}
        for group in await walk(self.spec, self.partitioning.keys):
            if group.attrs is None or group.pending:
                continue
            rank = "\uffff" if group.path in prefer else group.txn
            if group.canonical not in best or rank > best[group.canonical][0]:
                best[group.canonical] = (rank, group.path)
        return [p for _, p in best.values()]

    async def unnamed_immutable(self, *, listed: bool) -> bool:
        """Whether ``_immutable/`` holds a group to trust although no catalog names it.

        A reference-format group (no ``_zc_txn``) always; one of ours (stamped
        ``_zc_txn``) only when the catalog is listed from the tree (never
        written, or lost), as partitions found by a walk are; a pending claim never.
        """
        raw = await self.spec.get(f"{IMMUTABLE_PATH}/zarr.json")
        if raw is None:
            return False
        attrs = json.loads(raw).get("attributes", {})
        if attrs.get(PENDING_ATTR):
            return False
        return listed or TXN_ATTR not in attrs

    async def immutable_path(self, catalog: Catalog) -> str | None:
        """Where the immutable variables of ``catalog`` are (``None``: never written).

        The path the catalog names, else ``_immutable/`` when a group there is
        to be trusted although unnamed (see :meth:`unnamed_immutable`).
        """
        if catalog.immutable is not None:
            return catalog.immutable
        listed = catalog.version == 0
        return IMMUTABLE_PATH if await self.unnamed_immutable(listed=listed) else None
