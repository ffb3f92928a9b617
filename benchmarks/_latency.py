"""A local store that behaves like a remote one: fixed latency per request.

:class:`dask_zcollection.testing.CountingStore` wraps any zarr store and sleeps
(``asyncio.sleep``, so concurrent requests overlap as they would over a
network) before every get / set / exists / delete / list call, counting
requests (in total and by kind: get, put, head, list, delete; with
``latency=0`` it only counts). :class:`LatencyLocalStore` is the matching
:class:`~dask_zcollection.store.StoreSpec` so the library itself runs on it.
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Mapping
from typing import Any

from zarr.abc.store import Store
from zarr.storage import LocalStore as ZarrLocalStore

from dask_zcollection.store import LocalStore, StoreSpec
from dask_zcollection.testing import CountingStore, RequestCounter

__all__ = ["LatencyLocalStore"]


_COUNTERS: dict[tuple[str, float], RequestCounter] = {}


@dataclasses.dataclass(frozen=True, slots=True)
class LatencyLocalStore(LocalStore):
    """A ``file://`` collection reached through a :class:`CountingStore` with latency.

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
        return CountingStore(ZarrLocalStore(self.root), self.latency, self.counter)

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

    async def put(self, key: str, data: bytes, *args: Any, **kwargs: Any) -> None:
        await self._wait()
        await LocalStore.put(self, key, data, *args, **kwargs)

    async def put_if_absent(self, key: str, data: bytes, *args: Any, **kwargs: Any) -> bool:
        await self._wait()
        return await LocalStore.put_if_absent(self, key, data, *args, **kwargs)

    async def list_dir(self, prefix: str, *args: Any, **kwargs: Any) -> list[str]:
        await self._wait()
        return await LocalStore.list_dir(self, prefix, *args, **kwargs)
