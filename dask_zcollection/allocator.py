"""glibc's allocator settings for reductions on ``distributed`` workers.

A ``distributed`` nanny starts its workers with ``MALLOC_TRIM_THRESHOLD_=65536``.
Any explicit trim threshold also pins glibc's mmap threshold at 128 KiB, so
every larger buffer (the blocks a reduction reads, numpy's temporaries of
``nanmean``) is mapped, page-faulted and unmapped again: on the benchmark's
1 GB reduction that is 163 k page faults and 0.85 s of CPU a pass
(``docs/distributed.md``). The environment can only be set before a worker
starts; :func:`tune_allocator` sets the same thresholds with ``mallopt`` in a
running process, and :class:`TuneAllocator` does it on every worker of a
cluster, those started later included::

    from dask_zcollection.allocator import TuneAllocator

    client.register_plugin(TuneAllocator())

Outside glibc (macOS, musl) both do nothing.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
from typing import Any

from distributed import WorkerPlugin

from .errors import InvalidInputError

__all__ = ["MMAP_THRESHOLD", "TRIM_THRESHOLD", "TuneAllocator", "tune_allocator"]

#: Buffers up to this size come from the heap (glibc's largest allowed threshold on 64 bits).
MMAP_THRESHOLD = 32 << 20
#: Free memory at the top of the heap kept for the next buffers.
TRIM_THRESHOLD = 128 << 20

# mallopt parameters (glibc's malloc.h).
_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3


@functools.cache
def _mallopt() -> Any:
    """glibc's ``mallopt`` (``None`` in another C library)."""
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        fn = libc.mallopt
    except (OSError, AttributeError):
        return None
    if not hasattr(libc, "gnu_get_libc_version"):  # musl has a mallopt that does nothing
        return None
    fn.argtypes = [ctypes.c_int, ctypes.c_int]
    fn.restype = ctypes.c_int
    return fn


def _check(*values: Any) -> None:
    for value in values:
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise InvalidInputError(f"a threshold must be a number of bytes >= 0, not {value!r}")


def tune_allocator(
    mmap_threshold: int = MMAP_THRESHOLD, trim_threshold: int = TRIM_THRESHOLD
) -> bool:
    """Serve buffers up to ``mmap_threshold`` bytes from glibc's heap in this process.

    Parameters
    ----------
    mmap_threshold : int
        Allocations of at most this many bytes come from the heap, reused
        without page faults (at most 32 MiB on 64-bit glibc).
    trim_threshold : int
        Free bytes at the top of the heap glibc keeps instead of returning them.

    Returns
    -------
    bool
        Whether both settings took (``False`` outside glibc, or a value glibc refuses).
    """
    _check(mmap_threshold, trim_threshold)
    mallopt = _mallopt()
    if mallopt is None:
        return False
    return bool(
        mallopt(_M_MMAP_THRESHOLD, mmap_threshold) and mallopt(_M_TRIM_THRESHOLD, trim_threshold)
    )


class TuneAllocator(WorkerPlugin):  # type: ignore[misc]
    """A worker plugin running :func:`tune_allocator` on every worker.

    Parameters
    ----------
    mmap_threshold, trim_threshold : int
        As :func:`tune_allocator`.

    Examples
    --------
    >>> client.register_plugin(TuneAllocator())  # doctest: +SKIP
    """

    name = "dask-zcollection-allocator"

    def __init__(
        self, mmap_threshold: int = MMAP_THRESHOLD, trim_threshold: int = TRIM_THRESHOLD
    ) -> None:
        _check(mmap_threshold, trim_threshold)
        self.mmap_threshold = mmap_threshold
        self.trim_threshold = trim_threshold
        self.tuned: bool | None = None

    def setup(self, worker: Any) -> None:
        """Tune the worker's process (its tasks run in it)."""
        self.tuned = tune_allocator(self.mmap_threshold, self.trim_threshold)
