"""``memory://name`` collections, shared by name within one process."""

from __future__ import annotations

import dataclasses
import threading
from typing import ClassVar

from zarr.abc.buffer import Buffer
from zarr.abc.store import Store
from zarr.buffer import default_buffer_prototype
from zarr.storage import MemoryStore as _ZarrMemoryStore

from ._base import _LIVE, _LIVE_LOCK, StoreSpec

__all__ = ["MemoryStore"]

# name -> the dict behind zarr's MemoryStore: opening ``memory://name`` twice in
# a process gives the same collection.
_REGISTRY: dict[str, dict[str, Buffer]] = {}
_LOCK = threading.Lock()


@dataclasses.dataclass(frozen=True, slots=True)
class MemoryStore(StoreSpec):
    """An in-process collection (``memory://name``), for tests and prototyping.

    It lives in the process that created it: dask's threaded scheduler sees
    it, worker processes do not.

    Attributes
    ----------
    name : str
        Name of the in-memory collection.
    """

    name: str
    multiprocess_safe: ClassVar[bool] = False

    @property
    def url(self) -> str:
        return f"memory://{self.name}"

    def _open_store(self) -> Store:
        with _LOCK:
            data = _REGISTRY.setdefault(self.name, {})
        return _ZarrMemoryStore(store_dict=data)

    async def put_if_absent(self, key: str, data: bytes, *, durable: bool = True) -> bool:
        store = self.zarr_store()
        await store._ensure_open()
        buf = default_buffer_prototype().buffer.from_bytes(data)
        # dict.setdefault is atomic under the GIL.
        mapping = _REGISTRY[self.name]
        return mapping.setdefault(key, buf) is buf

    @staticmethod
    def forget(name: str) -> None:
        """Drop the in-memory collection ``name`` (frees its memory)."""
        with _LOCK:
            _REGISTRY.pop(name, None)
        # Also drop the live zarr store cached for this spec, which holds the old dict.
        with _LIVE_LOCK:
            _LIVE.pop(MemoryStore(name)._cache_key(), None)
