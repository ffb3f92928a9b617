"""The one module that relies on zarr-python's internals.

Everything else in the package imports these names from here (or uses zarr's
public API: ``zarr.storage``, ``zarr.abc``, ``zarr.buffer``, ``zarr.api``), so
a change in zarr's internals is fixed in one place, and pinned by
``tests/test_zarr_contract.py``. What each name relies on:

- :func:`sync` and :func:`event_loop`: ``zarr.core.sync``, zarr's one event
  loop on a daemon thread per process (reset after fork) and its bridge. The
  package's sync API and fsspec's async filesystems run on that loop, so zarr's
  async API and ours share one loop and one thread pool.
- :func:`array_from_metadata`: the ``AsyncArray(metadata_dict, store_path)``
  constructor overload (a ``zarr.json`` document as a dict, no store read).
- :func:`read_selection_into`: ``AsyncArray._get_selection`` with an ``out``
  buffer, a ``BasicIndexer`` and the array's ``_chunk_grid``: zarr decodes the
  selected rows straight into a caller's array (there is no public async
  ``get_basic_selection(out=...)``).
"""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine, Mapping
from typing import Any

import numpy
from zarr import AsyncArray
from zarr.buffer import default_buffer_prototype
from zarr.core.indexing import BasicIndexer
from zarr.core.sync import _get_loop
from zarr.core.sync import sync as _sync
from zarr.storage import StorePath

__all__ = ["AsyncArray", "array_from_metadata", "event_loop", "read_selection_into", "sync"]


def sync[T](coro: Coroutine[Any, Any, T]) -> T:
    """Run ``coro`` on zarr's event loop thread and return its result (``zarr.core.sync.sync``).

    Raises ``zarr.core.sync.SyncError`` when called on that loop's own thread
    (:func:`dask_zcollection._sync.sync` checks first and raises a clear error).
    """
    return _sync(coro)


def event_loop() -> asyncio.AbstractEventLoop:
    """Zarr's event loop (``zarr.core.sync._get_loop``): started on first use, one per process."""
    return _get_loop()


def array_from_metadata(
    doc: Mapping[str, Any], store_path: StorePath, config: Mapping[str, Any] | None = None
) -> AsyncArray[Any]:
    """A zarr ``AsyncArray`` from its ``zarr.json`` document, reading nothing from the store."""
    if config is None:
        return AsyncArray(dict(doc), store_path)  # type: ignore[call-overload,no-any-return]
    return AsyncArray(dict(doc), store_path, config=dict(config))  # type: ignore[call-overload,no-any-return]


async def read_selection_into(
    arr: AsyncArray[Any], selection: tuple[slice, ...], out: numpy.ndarray
) -> None:
    """Decode the basic ``selection`` of ``arr`` into ``out`` (its shape is the selection's).

    Through zarr's codec pipeline: any layout zarr reads, chunks missing from
    the store read as the fill value.
    """
    prototype = default_buffer_prototype()
    indexer = BasicIndexer(selection, arr.shape, arr._chunk_grid)
    await arr._get_selection(
        indexer, prototype=prototype, out=prototype.nd_buffer.from_numpy_array(out)
    )
