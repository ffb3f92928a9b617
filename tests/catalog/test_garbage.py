"""The garbage collector never deletes a committed partition version.

A collector read the garbage records and the newest catalog before taking
the partitions' locks. Another collector could process the same record
meanwhile, and a writer re-create the partition at its canonical path and
commit it: the late collector then deleted the committed version (an insert
lost in the S3 disjoint-writers race). It now reads both under the locks.
"""

from __future__ import annotations

import asyncio
import dataclasses
import threading
import time
from typing import ClassVar

import dask.config
import numpy

import dask_zcollection as zc
from dask_zcollection._sync import sync
from dask_zcollection.catalog._transaction import collect_garbage
from dask_zcollection.store import MemoryStore


@dataclasses.dataclass(frozen=True, slots=True)
class _HeldCollector(MemoryStore):
    """Holds the first lock a garbage collector takes (once armed) until released."""

    armed: ClassVar[bool] = False
    reached: ClassVar[threading.Event] = threading.Event()
    release: ClassVar[threading.Event] = threading.Event()

    async def put_if_absent(self, key: str, data: bytes, *, durable: bool = True) -> bool:
        if _HeldCollector.armed and key.startswith("_locks/") and data.startswith(b"gc-"):
            _HeldCollector.armed = False
            _HeldCollector.reached.set()
            await asyncio.to_thread(_HeldCollector.release.wait, 30)
        return await MemoryStore.put_if_absent(self, key, data, durable=durable)


def _rows(hours: list[int], v: float) -> dict[str, numpy.ndarray]:
    t = numpy.datetime64("2024-01-01", "ns") + numpy.array(hours) * numpy.timedelta64(1, "h")
    return {"time": t, "v": numpy.full(len(hours), v)}


def test_a_late_collector_never_deletes_a_version_committed_meanwhile() -> None:
    spec = _HeldCollector(f"gc-race-{time.monotonic_ns()}")
    schema = (
        zc.Schema()
        .with_dimension("time", chunks=64)
        .with_variable("time", dtype="datetime64[ns]", dimensions=("time",))
        .with_variable("v", dtype="float64", dimensions=("time",))
        .build()
    )
    try:
        with dask.config.set({"zcollection.retention": 600}):
            col = zc.create_collection(
                spec, schema=schema, axis="time", partitioning=zc.partitioning.Date(("time",), "M")
            )
            col.insert(_rows([0, 1], 1.0))
            # A partition shorter than a chunk grows by a rewrite aside: the canonical
            # version is retired (a garbage record), the new one is at month=01@<txn>.
            col.insert(_rows([2], 2.0), merge="concat")
            assert col.catalog(refresh=True).paths[0].startswith("year=2024/month=01@")
            _HeldCollector.reached.clear()
            _HeldCollector.release.clear()
            _HeldCollector.armed = True
            late: list[object] = []
            thread = threading.Thread(
                target=lambda: late.append(sync(collect_garbage(spec, older_than=0)))
            )
            thread.start()  # read the records, then held at the partition's lock
            assert _HeldCollector.reached.wait(30)
            # Another collector deletes the retired canonical version...
            assert sync(collect_garbage(spec, older_than=0)) == ["year=2024/month=01"]
            # ... and a writer re-creates the partition at its canonical path.
            col.insert(_rows([5, 6], 3.0), merge="replace")
            assert col.catalog(refresh=True).paths == ("year=2024/month=01",)
        _HeldCollector.release.set()
        thread.join(30)
        assert late and "year=2024/month=01" not in late[0]  # type: ignore[operator]
        got = zc.open_collection(spec).query()
        assert got is not None
        assert got["v"].values.tolist() == [3.0, 3.0]
    finally:
        _HeldCollector.armed = False
        _HeldCollector.release.set()
        MemoryStore.forget(spec.name)
