"""The one bridge from the async core to synchronous callers.

Every sync method of the package hands its coroutine to :func:`sync`. It runs
on zarr's own event loop (one daemon thread per process, reset after fork), so
zarr's async API and ours share one loop and one thread pool.
"""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from typing import Any

from ._zarr import sync as _zarr_sync

__all__ = ["sync"]


def sync[T](coro: Coroutine[Any, Any, T]) -> T:
    """Run ``coro`` to completion on the library's event loop and return its result.

    Raises
    ------
    RuntimeError
        When called from a thread that is already running an event loop: use the
        ``dask_zcollection.aio`` functions (``await``) there instead.
    """
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return _zarr_sync(coro)
    coro.close()
    raise RuntimeError(
        "dask_zcollection's synchronous API was called from inside a running event loop; "
        "use the `dask_zcollection.aio` coroutines (await them) instead"
    )
