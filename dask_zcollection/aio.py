"""The async API: ``await dask_zcollection.aio.open_collection(url)`` and friends."""

from ._engine import AsyncCollection, create_collection, open_collection

__all__ = ["AsyncCollection", "create_collection", "open_collection"]
