"""Large read results on reused memory: a read does not pay for fresh pages.

A read decodes each chunk straight into its place in one result array (see
``_fastread``). For a large result that array is fresh memory: glibc maps it
(anything above 32 MiB is always mapped) and the kernel zeroes every page on
first touch, inside the decode. On a virtual machine that reports freed pages
to its host (``page_reporting`` shows in the kernel's profile here), that
zeroing apparently also waits for the host to back each page again: measured
on the benchmark machine, faulting in a
fresh 250 MB array took 0.04-2 s against 0.01 s to rewrite a resident one, and
``clear_page`` took 20-36 % of the CPU of a 3-day read (as much as half of
zstd's own decoding).

:func:`empty` hands out large result arrays on private anonymous mappings.
When the last array using one is freed, the mapping is not unmapped but kept
(up to ``dask.config`` ``zcollection.read-memory`` bytes, default 512 MiB; one
unused for :data:`_IDLE_SECONDS` is unmapped at the next read or release) and
marked ``MADV_FREE``: the kernel may take
its pages back under memory pressure (they then read as zeros, which the next
read overwrites), otherwise the next read of a similar size rewrites them
without a fault. A mapping is reused only once no array refers to it: the
arrays' base is an owner object whose finalizer returns the mapping, and numpy
keeps that owner alive from every view.

Only reads that return one result per variable use it (``read_concat``, the
xarray backend's row reads), not the per-partition pieces of a dask graph: a
kept page counts in the process's resident memory until the kernel takes it,
which a ``distributed`` worker's memory monitor would see. For the same
reason a read running in a worker (a fused read task on a cluster) takes
plain ``numpy.empty``.
"""

from __future__ import annotations

import collections
import contextlib
import mmap
import os
import sys
import threading
import time
import weakref
from typing import Any

import numpy

__all__ = ["ResultMemory", "empty", "result_memory"]

#: Results smaller than this are plain ``numpy.empty`` (glibc reuses its heap for them).
_MIN_BYTES = 8 << 20
#: Mappings are sized in steps of a huge page, so that nearby sizes share them.
_STEP = 2 << 20
#: A kept mapping unused for this long is unmapped.
_IDLE_SECONDS = 30.0
_DEFAULT_LIMIT = 512 << 20
_PRIVATE = getattr(mmap, "MAP_PRIVATE", 0) | getattr(mmap, "MAP_ANONYMOUS", 0)


def _limit() -> int:
    import dask.config

    value = dask.config.get("zcollection.read-memory", None)
    return _DEFAULT_LIMIT if value is None else int(value)


def _in_worker() -> bool:
    """Whether this thread runs a task of a ``distributed`` worker."""
    distributed = sys.modules.get("distributed")
    if distributed is None:
        return False
    try:
        distributed.get_worker()
    except ValueError:  # not in a worker
        return False
    return True


class _Owner:
    """The base of the arrays on one mapping: alive as long as any of them."""

    __slots__ = ("__weakref__", "block")

    def __init__(self, block: mmap.mmap) -> None:
        self.block = block

    def __buffer__(self, flags: int) -> memoryview:
        return memoryview(self.block)


class ResultMemory:
    """Mappings of freed results, kept for the next reads.

    Parameters
    ----------
    limit : int or None
        Bytes kept at most (``None``: ``zcollection.read-memory`` at each read;
        ``0`` keeps nothing and :meth:`empty` is ``numpy.empty``).
    """

    def __init__(self, limit: int | None = None) -> None:
        self._fixed = limit
        #: Kept mappings and when each was returned, oldest first.
        self._free: list[tuple[mmap.mmap, float]] = []
        # Finalizers only append here (atomic, no lock): one may run during a
        # garbage collection started while this thread holds the lock.
        self._returned: collections.deque[tuple[mmap.mmap, float]] = collections.deque()
        self._lock = threading.Lock()
        self._pid = os.getpid()

    @property
    def limit(self) -> int:
        """Bytes kept at most."""
        return _limit() if self._fixed is None else self._fixed

    @property
    def nbytes(self) -> int:
        """Bytes of the kept mappings."""
        with self._lock:
            self._collect(time.monotonic())
            return sum(len(b) for b, _ in self._free)

    def empty(self, shape: tuple[int, ...], dtype: Any) -> numpy.ndarray:
        """An uninitialised C-contiguous array, on a reused mapping when it is large."""
        dtype = numpy.dtype(dtype)
        nbytes = int(numpy.prod(shape, dtype=numpy.int64)) * dtype.itemsize
        limit = self.limit
        if nbytes < _MIN_BYTES or nbytes > limit or not _PRIVATE or dtype.hasobject:
            return numpy.empty(shape, dtype=dtype)
        if _in_worker():  # kept pages would count in the worker's memory
            return numpy.empty(shape, dtype=dtype)
        size = -(-nbytes // _STEP) * _STEP
        block = self._take(size, limit)
        if block is None:
            try:
                block = mmap.mmap(-1, size, flags=_PRIVATE)
            except OSError:  # out of address space: numpy's own error if memory is short
                return numpy.empty(shape, dtype=dtype)
            if hasattr(mmap, "MADV_HUGEPAGE"):
                with contextlib.suppress(OSError):  # a kernel without transparent huge pages
                    block.madvise(mmap.MADV_HUGEPAGE)
        owner = _Owner(block)
        done = weakref.finalize(owner, self._give, block)
        done.atexit = False
        flat = numpy.frombuffer(owner, dtype=dtype, count=nbytes // dtype.itemsize)  # type: ignore[call-overload]
        return flat.reshape(shape)  # type: ignore[no-any-return]

    def clear(self) -> None:
        """Unmap every kept mapping."""
        with self._lock:
            self._collect(time.monotonic())
            self._free.clear()

    def _take(self, size: int, limit: int) -> mmap.mmap | None:
        """The smallest kept mapping of ``size`` bytes or at most an eighth more, removed."""
        now = time.monotonic()
        with self._lock:
            self._collect(now)
            fits = [i for i, (b, _) in enumerate(self._free) if size <= len(b) <= size + size // 8]
            if not fits:
                return None
            i = min(fits, key=lambda k: len(self._free[k][0]))
            return self._free.pop(i)[0]

    def _give(self, block: mmap.mmap) -> None:
        """The finalizer of an owner: keep its mapping (its pages the kernel's to take)."""
        try:
            if os.getpid() != self._pid or block.closed:
                return  # a forked child's copy: let it go
            if hasattr(mmap, "MADV_FREE"):
                with contextlib.suppress(OSError):  # an old kernel: keep the pages as they are
                    block.madvise(mmap.MADV_FREE)
            self._returned.append((block, time.monotonic()))
            if self._lock.acquire(blocking=False):
                try:
                    self._collect(time.monotonic())
                finally:
                    self._lock.release()
        except Exception:  # a finalizer (maybe at interpreter exit): unmap instead
            return

    def _collect(self, now: float) -> None:
        """Move returned mappings to the kept ones; drop idle ones and those over the limit."""
        while self._returned:
            self._free.append(self._returned.popleft())
        limit = self.limit
        self._free = [(b, t) for b, t in self._free if now - t < _IDLE_SECONDS]
        total = sum(len(b) for b, _ in self._free)
        while self._free and total > limit:
            block, _ = self._free.pop(0)  # the oldest first
            total -= len(block)
        # Dropped mappings are unmapped when collected (nothing refers to them).


_MEMORY: ResultMemory | None = None


def result_memory() -> ResultMemory:
    """This process's :class:`ResultMemory`."""
    global _MEMORY
    if _MEMORY is None or _MEMORY._pid != os.getpid():  # a forked child: its own
        _MEMORY = ResultMemory()
    return _MEMORY


def empty(shape: tuple[int, ...], dtype: Any) -> numpy.ndarray:
    """``numpy.empty`` for a read's result, on reused memory when it is large."""
    return result_memory().empty(shape, dtype)
