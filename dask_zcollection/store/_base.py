"""The store adapter contract: one picklable spec per backend.

A :class:`StoreSpec` is a small frozen value (URL + options) that crosses to
dask workers by pickling; each process builds the live zarr store behind it
once (:meth:`StoreSpec.zarr_store`). Besides plain key/value I/O an adapter
provides the backend's commit primitive, :meth:`StoreSpec.put_if_absent`,
on which the catalog's optimistic concurrency rests.
"""

from __future__ import annotations

import abc
import asyncio
import json
import os
import threading
from collections.abc import Iterable, Mapping
from typing import Any, ClassVar

from zarr.abc.store import Store
from zarr.buffer import default_buffer_prototype

from ..errors import StorageError

__all__ = ["StoreSpec", "group_json"]


def group_json(attrs: Mapping[str, Any] | None = None) -> bytes:
    """The ``zarr.json`` document of a Zarr v3 group with attributes ``attrs``.

    The one place the package spells a group's metadata: partitions, their
    parent groups, the catalog marker, pending claims and the adapters' implicit
    parents all use it.
    """
    return json.dumps(
        {"attributes": dict(attrs or {}), "zarr_format": 3, "node_type": "group"}
    ).encode()


_LIVE: dict[tuple[Any, ...], Store] = {}
_LIVE_LOCK = threading.Lock()


def _forget_live_stores() -> None:
    # A forked child must not reuse its parent's clients (their connection pools
    # and sessions belong to the parent): it opens its own stores.
    _LIVE_LOCK._at_fork_reinit()  # type: ignore[attr-defined]
    _LIVE.clear()


os.register_at_fork(after_in_child=_forget_live_stores)


class StoreSpec(abc.ABC):
    """Picklable, tokenizable description of where a collection lives.

    Subclasses are frozen dataclasses; they implement :meth:`_open_store` (the
    zarr store) and :meth:`put_if_absent` (the atomic create used to commit).
    """

    #: Whether concurrent commits from several processes are safe.
    multiprocess_safe: ClassVar[bool] = True
    #: Whether the backend has transactions of its own (Icechunk): a write
    #: operation then runs in one session published by :meth:`publish`, and
    #: superseded versions need no retention (old snapshots keep them).
    transactional: ClassVar[bool] = False

    @property
    @abc.abstractmethod
    def url(self) -> str:
        """The canonical URL of the collection root."""

    @abc.abstractmethod
    def _open_store(self) -> Store:
        """Build the live zarr store (called once per process and spec)."""

    def _cache_key(self) -> tuple[Any, ...]:
        return (type(self).__name__, self.url)

    def zarr_store(self) -> Store:
        """Return the live zarr store for this spec (cached per process)."""
        key = self._cache_key()
        store = _LIVE.get(key)
        if store is None:
            with _LIVE_LOCK:
                store = _LIVE.get(key)
                if store is None:
                    store = _LIVE[key] = self._open_store()
        return store

    # -- transactions (no-ops unless :attr:`transactional`) -----------------------------
    def for_writing(self) -> StoreSpec:
        """The spec a read-write collection uses (its own session on Icechunk)."""
        return self

    async def pinned(self, version: str | None = None) -> StoreSpec:
        """A read-only spec of the newest committed state (or of ``version``)."""
        if version is not None:
            from ..errors import InvalidInputError

            raise InvalidInputError(
                f"{self.url}: reading a past version (version={version!r}) needs an "
                "icechunk:// collection"
            )
        return self

    async def refresh(self) -> None:
        """Let the next reads see the newest committed state."""
        return None

    async def publish(self, message: str) -> None:
        """Make the changes of the current write operation visible (one commit)."""
        return None

    async def discard(self) -> None:
        """Forget the uncommitted changes of the current write operation."""
        return None

    # -- writes from worker processes (Icechunk forks; identity elsewhere) ---------------
    def shippable(self) -> bool:
        """Whether write tasks with this spec may run in other processes."""
        return self.multiprocess_safe

    async def for_cluster(self) -> StoreSpec:
        """The spec a write graph ships to worker processes (see :meth:`task_spec`)."""
        return self

    def task_spec(self) -> StoreSpec:
        """The spec one write task uses; its changes come back by :meth:`end_task`."""
        return self

    def end_task(self) -> Any:
        """The changes a task made through this :meth:`task_spec` (``None``: in place)."""
        return None

    def absorb(self, changes: Iterable[Any]) -> StoreSpec:
        """The spec of a commit that publishes the tasks' ``changes`` too."""
        return self

    @property
    def forked(self) -> bool:
        """Whether tasks write to private forks merged at the commit."""
        return False

    def __dask_tokenize__(self) -> tuple[Any, ...]:
        return self._cache_key()

    # -- key/value I/O (async) --------------------------------------------------------
    async def get(self, key: str) -> bytes | None:
        """Return the object at ``key``, or ``None`` when absent."""
        try:
            buf = await self.zarr_store().get(key, prototype=default_buffer_prototype())
        except FileNotFoundError:
            return None
        except OSError as err:
            raise StorageError(f"cannot read {key!r} from {self.url}: {err}") from err
        return None if buf is None else buf.to_bytes()

    async def put(self, key: str, data: bytes) -> None:
        """Write ``data`` at ``key`` (atomic per key)."""
        buf = default_buffer_prototype().buffer.from_bytes(data)
        try:
            await self.zarr_store().set(key, buf)
        except OSError as err:
            raise StorageError(f"cannot write {key!r} to {self.url}: {err}") from err

    async def put_many(
        self, items: Mapping[str, bytes], *, last: Mapping[str, bytes] | None = None
    ) -> None:
        """Write several objects (each atomic, no order between them), then ``last``.

        ``last`` is written only once every item is: a group's ``zarr.json``
        after its arrays, so a group that exists is complete.
        """
        await asyncio.gather(*(self.put(k, v) for k, v in items.items()))
        if last:
            await asyncio.gather(*(self.put(k, v) for k, v in last.items()))

    @abc.abstractmethod
    async def put_if_absent(self, key: str, data: bytes, *, durable: bool = True) -> bool:
        """Atomically create ``key`` with ``data``; ``False`` if it already existed.

        ``durable=False`` allows skipping a flush to stable storage (claims and
        locks, which nothing committed depends on).
        """

    async def exists(self, key: str) -> bool:
        """Whether ``key`` exists."""
        try:
            return await self.zarr_store().exists(key)
        except (StorageError, FileNotFoundError):
            raise
        except OSError as err:  # e.g. s3fs's PermissionError on a wrong key: name the store
            raise StorageError(f"cannot check {key!r} in {self.url}: {err}") from err

    async def delete(self, key: str) -> None:
        """Delete ``key`` (no error when absent)."""
        await self.zarr_store().delete(key)

    async def delete_prefix(self, prefix: str) -> None:
        """Delete every key under ``prefix/``."""
        await self.zarr_store().delete_dir(prefix.rstrip("/"))

    async def delete_prefixes(self, prefixes: Iterable[str]) -> None:
        """Delete several prefixes concurrently."""
        await asyncio.gather(*(self.delete_prefix(p) for p in prefixes))

    async def list_dir(self, prefix: str) -> list[str]:
        """Names of the immediate children of ``prefix`` (keys and sub-prefixes)."""
        prefix = prefix.rstrip("/")
        store = self.zarr_store()
        return [name async for name in store.list_dir(f"{prefix}/" if prefix else "")]

    async def list_prefix(self, prefix: str) -> list[str]:
        """Every key below ``prefix``."""
        return [k async for k in self.zarr_store().list_prefix(prefix)]

    async def is_empty(self) -> bool:
        """Whether nothing is stored under the root."""
        return await self.zarr_store().is_empty("")

    async def clear(self) -> None:
        """Delete everything under the root."""
        await self.zarr_store().delete_dir("")

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.url!r})"
