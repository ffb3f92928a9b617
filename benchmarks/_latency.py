"""A local store that behaves like a remote one: fixed latency per request.

:class:`LatencyStore` wraps any zarr store and sleeps (``asyncio.sleep``, so
concurrent requests overlap as they would over a network) before every
get / set / exists / delete / list call, counting requests (in total and by
kind: get, put, head, list, delete; with ``latency=0`` it only counts).
:class:`LatencyLocalStore` is the matching :class:`~dask_zcollection.store.StoreSpec`
so the library itself runs on it.
"""

from __future__ import annotations

import asyncio
import collections
import dataclasses
import threading
from collections.abc import AsyncIterator, Iterable, Mapping
from typing import Any

from zarr.abc.store import ByteRequest, Store
from zarr.core.buffer import Buffer, BufferPrototype
from zarr.storage import LocalStore as ZarrLocalStore
from zarr.storage import WrapperStore

from dask_zcollection.store import LocalStore, StoreSpec

__all__ = ["LatencyLocalStore", "LatencyStore", "RequestCounter"]


class RequestCounter:
    """Thread-safe request counter shared by the stores of one experiment.

    ``count`` is the total; ``kinds`` the same requests by kind (``get``,
    ``put``, ``head``, ``list``, ``delete``) when the caller names it.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.count = 0
        self.kinds: collections.Counter[str] = collections.Counter()

    def add(self, n: int = 1, kind: str | None = None) -> None:
        with self._lock:
            self.count += n
            if kind is not None:
                self.kinds[kind] += n

    def reset(self) -> int:
        with self._lock:
            n, self.count = self.count, 0
            self.kinds.clear()
        return n

    def take(self) -> collections.Counter[str]:
        """The counts by kind since the last reset, and reset."""
        with self._lock:
            kinds, self.kinds = self.kinds, collections.Counter()
            self.count = 0
        return kinds


class LatencyStore(WrapperStore[Store]):
    """Wrap ``store``; every request waits ``latency`` seconds first.

    Listing calls pay one latency for the call (a paged listing of a small
    prefix); partial reads pay one per range.
    """

    def __init__(
        self, store: Store, latency: float = 0.02, counter: RequestCounter | None = None
    ) -> None:
        super().__init__(store)
        self.latency = float(latency)
        self.counter = counter if counter is not None else RequestCounter()

    def _with_store(self, store: Store) -> LatencyStore:
        return type(self)(store, self.latency, self.counter)

    @property
    def _supports_sync_io(self) -> bool:
        # zarr would otherwise bypass the async methods (and the latency) with *_sync calls.
        return False

    async def _wait(self, n: int = 1, kind: str | None = None) -> None:
        self.counter.add(n, kind)
        if self.latency > 0:
            await asyncio.sleep(self.latency)

    async def get(
        self, key: str, prototype: BufferPrototype, byte_range: ByteRequest | None = None
    ) -> Buffer | None:
        await self._wait(kind="get")
        return await self._store.get(key, prototype, byte_range)

    async def get_partial_values(
        self, prototype: BufferPrototype, key_ranges: Iterable[tuple[str, ByteRequest | None]]
    ) -> list[Buffer | None]:
        key_ranges = list(key_ranges)
        await self._wait(len(key_ranges), "get")
        return await self._store.get_partial_values(prototype, key_ranges)

    async def exists(self, key: str) -> bool:
        await self._wait(kind="head")
        return await self._store.exists(key)

    async def set(self, key: str, value: Buffer) -> None:
        await self._wait(kind="put")
        await self._store.set(key, value)

    async def set_if_not_exists(self, key: str, value: Buffer) -> None:
        await self._wait(kind="put")
        await self._store.set_if_not_exists(key, value)

    async def delete(self, key: str) -> None:
        await self._wait(kind="delete")
        await self._store.delete(key)

    async def is_empty(self, prefix: str) -> bool:
        await self._wait(kind="list")
        return await self._store.is_empty(prefix)

    async def list(self) -> AsyncIterator[str]:
        await self._wait(kind="list")
        async for k in self._store.list():
            yield k

    async def list_prefix(self, prefix: str) -> AsyncIterator[str]:
        await self._wait(kind="list")
        async for k in self._store.list_prefix(prefix):
            yield k

    async def list_dir(self, prefix: str) -> AsyncIterator[str]:
        await self._wait(kind="list")
        async for k in self._store.list_dir(prefix):
            yield k

    def __repr__(self) -> str:
        return f"LatencyStore({self._store!r}, latency={self.latency})"


_COUNTERS: dict[tuple[str, float], RequestCounter] = {}


@dataclasses.dataclass(frozen=True, slots=True)
class LatencyLocalStore(LocalStore):
    """A ``file://`` collection reached through a :class:`LatencyStore`.

    Attributes
    ----------
    root : str
        Directory of the collection.
    latency : float
        Seconds added to every request (the commit primitive and listings too).
    """

    latency: float = 0.02

    @property
    def counter(self) -> RequestCounter:
        return _COUNTERS.setdefault((self.root, self.latency), RequestCounter())

    def _cache_key(self) -> tuple[Any, ...]:
        return (type(self).__name__, self.root, self.latency)

    def _open_store(self) -> Store:
        return LatencyStore(ZarrLocalStore(self.root), self.latency, self.counter)

    async def _wait(self) -> None:
        self.counter.add()
        if self.latency > 0:
            await asyncio.sleep(self.latency)

    # Methods the file adapter implements straight on the filesystem are routed back
    # through the latency store (or pay the latency themselves). Extra arguments are
    # forwarded as they are: the adapter contract may grow options.
    async def put_many(self, items: Mapping[str, bytes], *args: Any, **kwargs: Any) -> None:
        # The generic adapter: concurrent puts through the (latency) zarr store.
        await StoreSpec.put_many(self, items, *args, **kwargs)

    async def exists(self, key: str) -> bool:
        return await StoreSpec.exists(self, key)

    async def put_if_absent(self, key: str, data: bytes, *args: Any, **kwargs: Any) -> bool:
        await self._wait()
        return await LocalStore.put_if_absent(self, key, data, *args, **kwargs)

    async def list_dir(self, prefix: str, *args: Any, **kwargs: Any) -> list[str]:
        await self._wait()
        return await LocalStore.list_dir(self, prefix, *args, **kwargs)
