"""The commit protocol: write aside, publish with one atomic catalog version.

A writer

1. records a *lease* ``_transactions/<txn>.json`` (owner, and later every path
   it writes or supersedes), so a crash leaves a note of what to clean;
2. writes each new partition version to a path no committed catalog names:
   it *claims* the canonical path ``year=2024/month=03`` with put-if-absent on
   its ``zarr.json``, or, when that path is taken (it holds the version being
   replaced), writes beside it at ``year=2024/month=03@<txn>``;
3. commits by creating catalog version ``N + 1`` (put-if-absent). If another
   writer won version ``N + 1``, the commit is rebased on the newest catalog
   when the two touched disjoint partitions, and fails with
   :class:`~dask_zcollection.errors.ConflictError` otherwise;
4. deletes the versions it superseded, then its lease.

Readers only follow a committed catalog, so they never see data written
before step 3. After a crash, :func:`recover` deletes every path of a dead
writer's lease that the newest catalog does not name.
"""

from __future__ import annotations

import asyncio
import json
import os
import secrets
import socket
import time
from collections.abc import Callable, Iterable
from typing import Any

import numpy

from ..errors import ConflictError
from ..store import StoreSpec
from ._catalog import Catalog
from ._log import CatalogLog

__all__ = ["LEASE_DIR", "Transaction", "new_txn_id", "recover"]

LEASE_DIR = "_transactions"
#: Leases older than this (seconds) are considered abandoned, whatever the owner.
LEASE_TIMEOUT = 3600.0
_PENDING_ATTR = "_zc_pending"
_TXN_ATTR = "_zc_txn"


def new_txn_id() -> str:
    """A unique, time-ordered transaction id (hex)."""
    return f"{time.time_ns() // 1_000_000:011x}{secrets.token_hex(4)}"


def _pending_group(txn: str) -> bytes:
    doc = {"attributes": {_PENDING_ATTR: True, _TXN_ATTR: txn}, "zarr_format": 3, "node_type": "group"}
    return json.dumps(doc).encode()


def _conflicts(base: Catalog, latest: Catalog, keys: numpy.ndarray, immutable: bool) -> list[tuple[int, ...]]:
    """Keys among ``keys`` whose committed version changed between ``base`` and ``latest``."""
    if immutable and base.immutable != latest.immutable:
        return [()]
    if not len(keys):
        return []
    pb, pl = base.find(keys), latest.find(keys)
    out = []
    for i in range(len(keys)):
        a = base.paths[pb[i]] if pb[i] >= 0 else None
        b = latest.paths[pl[i]] if pl[i] >= 0 else None
        if a != b:
            out.append(tuple(int(k) for k in keys[i]))
    return out


class Transaction:
    """One writer's transaction against a collection.

    Parameters
    ----------
    spec : StoreSpec
        The collection's store.
    base : Catalog
        The catalog the writer planned against.
    """

    def __init__(self, spec: StoreSpec, base: Catalog) -> None:
        self.spec = spec
        self.log = CatalogLog(spec)
        self.base = base
        self.txn = new_txn_id()
        self.written: list[str] = []
        self.superseded: list[str] = []
        self._lease_key = f"{LEASE_DIR}/{self.txn}.json"

    async def _write_lease(self) -> None:
        doc = {
            "txn": self.txn,
            "host": socket.gethostname(),
            "pid": os.getpid(),
            "started": time.time(),
            "paths": self.written + self.superseded,
        }
        await self.spec.put(self._lease_key, json.dumps(doc).encode())

    async def begin(self, paths: Iterable[str] = ()) -> None:
        """Record the lease, listing the paths the writer may write."""
        self.written.extend(paths)
        await self._write_lease()

    async def claim(self, canonical: str) -> str:
        """Reserve a fresh path for a new version of the partition at ``canonical``."""
        if await self.spec.put_if_absent(f"{canonical}/zarr.json", _pending_group(self.txn)):
            path = canonical
        else:
            path = f"{canonical}@{self.txn}"
        if path not in self.written:
            self.written.append(path)
            await self._write_lease()
        return path

    async def commit(
        self,
        build: Callable[[Catalog], Catalog],
        *,
        touched: numpy.ndarray,
        immutable: str | None = None,
        superseded: Callable[[Catalog], list[str]] | None = None,
    ) -> Catalog:
        """Publish ``build(catalog)`` as the next catalog version.

        Parameters
        ----------
        build
            Applies this transaction's changes to a catalog.
        touched
            Keys (``(n, k)`` int64) of the partitions this transaction read or
            replaced: a concurrent change to any of them is a conflict.
        immutable
            Path of the immutable group this transaction writes, if any.
        superseded
            Paths of ``catalog`` that the new version no longer names (deleted
            after the commit).

        Raises
        ------
        ConflictError
            When a concurrent commit changed a touched partition.
        """
        base = self.base
        while True:
            new = build(base).next_version(self.txn, immutable=immutable)
            if superseded is not None:
                old = [p for p in superseded(base) if p not in set(new.paths)]
                self.superseded = old
                await self._write_lease()
            if await self.log.commit(new):
                break
            latest = await self.log.latest()
            assert latest is not None  # a version exists: someone committed it
            clash = _conflicts(base, latest, touched, immutable is not None)
            if clash:
                raise ConflictError(
                    f"a concurrent writer committed version {latest.version} of {self.spec.url} "
                    f"changing partition(s) {clash[:5]} that this write also changes; retry"
                )
            base = latest
        await self._cleanup(new)
        return new

    async def _cleanup(self, committed: Catalog) -> None:
        # The committed catalog names the new versions: drop their pending flag
        # is unnecessary (attrs were rewritten by the data write); remove what
        # was superseded, then the lease.
        await self.spec.delete_prefixes(self.superseded)
        await self.spec.delete(self._lease_key)
        await self.log.prune(committed.version)

    async def abort(self) -> None:
        """Delete everything written by this (uncommitted) transaction."""
        await self.spec.delete_prefixes(self.written)
        await self.spec.delete(self._lease_key)


def _owner_dead(lease: dict[str, Any]) -> bool:
    if time.time() - float(lease.get("started", 0)) > LEASE_TIMEOUT:
        return True
    if lease.get("host") != socket.gethostname():
        return False
    try:
        os.kill(int(lease["pid"]), 0)
    except ProcessLookupError:
        return True
    except (PermissionError, KeyError, ValueError):
        return False
    return False


async def recover(spec: StoreSpec) -> list[str]:
    """Clean up after writers that died: delete their unreferenced paths and leases.

    Returns
    -------
    list of str
        The transaction ids cleaned up.
    """
    names = [n for n in await spec.list_dir(LEASE_DIR) if n.endswith(".json")]
    if not names:
        return []
    leases = []
    for name in names:
        raw = await spec.get(f"{LEASE_DIR}/{name}")
        if raw is None:
            continue
        try:
            lease = json.loads(raw)
        except ValueError:
            lease = {"started": 0, "paths": []}
        if _owner_dead(lease):
            leases.append((name, lease))
    if not leases:
        return []
    latest = await CatalogLog(spec).latest()
    named = set(latest.paths if latest else ()) | {latest.immutable if latest else None}
    done = []
    for name, lease in leases:
        stale = [p for p in lease.get("paths", []) if p not in named]
        await asyncio.gather(*(spec.delete_prefix(p) for p in stale))
        await spec.delete(f"{LEASE_DIR}/{name}")
        done.append(str(lease.get("txn", name)))
    return done
