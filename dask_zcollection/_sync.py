"""The one bridge from the async core to synchronous callers.

Every sync method of the package hands its coroutine to :func:`sync`. It runs
on zarr's own event loop (one daemon thread per process, reset after fork), so
zarr's async API and ours share one loop and one thread pool.
"""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from typing import Any

from ._zarr import event_loop
from ._zarr import sync as _zarr_sync

__all__ = ["sync"]


def sync[T](coro: Coroutine[Any, Any, T]) -> T:
    """Run ``coro`` to completion on the library's event loop and return its result.

    Callable from a thread running another event loop (a Jupyter kernel runs
    every cell inside one): that thread waits, as for any blocking call.

    Raises
    ------
    RuntimeError
        When called from a coroutine running on the library's own loop (it would
        wait for itself): ``await`` the ``dask_zcollection.aio`` functions there.
    """
    try:
        running = asyncio.get_running_loop()
    except RuntimeError:
        running = None
    if running is None or running is not event_loop():
        return _zarr_sync(coro)
    coro.close()
    raise RuntimeError(
        "dask_zcollection's synchronous API was called from a coroutine on the library's "
        "own event loop; use the `dask_zcollection.aio` coroutines (await them) instead"
    )
