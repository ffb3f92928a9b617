"""Dead writers are recovered by the writers they block, within the lease timeout.

Issue 12, item 2: a writer SIGKILLed while holding a partition lock blocked the
writers already open (ConflictError for good, an abort marker per retry) and a
lock whose lease was missing was never released, not even by ``repair`` or
``vacuum``.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import dask.config
import numpy
import pytest

import dask_zcollection as zc
from dask_zcollection._sync import sync
from dask_zcollection.catalog._lease import beat, liveness, write_lease
from dask_zcollection.catalog._transaction import (
    Transaction,
    lock_key,
    lock_token,
    new_txn_id,
    recover_transaction,
)
from dask_zcollection.errors import ConflictError
from dask_zcollection.store import resolve_store


def _create(path: Path) -> zc.Collection:
    schema = (
        zc.Schema()
        .with_dimension("time", chunks=16)
        .with_variable("time", dtype="datetime64[ns]", dimensions=("time",))
        .with_variable("v", dtype="float64", dimensions=("time",))
        .build()
    )
    return zc.create_collection(
        f"file://{path}",
        schema=schema,
        axis="time",
        partitioning=zc.partitioning.Date(("time",), "M"),
    )


def _rows(month: int, n: int, start: float) -> dict[str, numpy.ndarray]:
    t = numpy.datetime64(f"2024-{month:02d}-01", "ns") + numpy.arange(n) * numpy.timedelta64(1, "h")
    return {"time": t, "v": start + numpy.arange(n, dtype="float64")}


def _markers(path: Path) -> list[str]:
    return sorted(p.name for p in (path / "_transactions").glob("*.aborted"))


def _leftovers(path: Path) -> list[str]:
    locks = [str(p.relative_to(path)) for p in path.glob("_locks/**/*.lock")]
    leases = [p.name for p in (path / "_transactions").glob("*") if p.suffix in (".json", ".alive")]
    return sorted(locks + leases)


_KILLED_HOLDING_A_LOCK = """
import os, signal, sys
import numpy
import dask_zcollection as zc
from dask_zcollection._sync import sync
from dask_zcollection.catalog._transaction import Transaction, acquire_lock, lock_token
col = zc.open_collection(sys.argv[1], mode="rw")
base = col.catalog(refresh=True)
keys = numpy.array([[2024, 1]], dtype="int64")
txn = sync(Transaction.begin(col.aio.spec, base, keys, ["year=2024/month=01"]))
sync(acquire_lock(col.aio.spec, "year=2024/month=01", lock_token(txn.txn)))
print(txn.txn, flush=True)
os.kill(os.getpid(), signal.SIGKILL)
"""


def test_a_writer_killed_holding_a_lock_never_blocks_open_writers(tmp_path: Path) -> None:
    path = tmp_path / "col"
    col = _create(path)
    col.insert(_rows(1, 5, 0.0))
    writer = zc.open_collection(f"file://{path}", mode="rw")  # open before the crash
    run = subprocess.run(
        [sys.executable, "-c", _KILLED_HOLDING_A_LOCK, f"file://{path}"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert run.returncode == -signal.SIGKILL, run.stderr
    dead = run.stdout.strip()
    assert (path / lock_key("year=2024/month=01")).read_bytes() == lock_token(dead)

    # The open writer recovers the dead writer's lock itself, at once (its pid is gone).
    t0 = time.monotonic()
    writer.insert(_rows(1, 3, 100.0), merge="concat", retries=0)
    assert time.monotonic() - t0 < 10
    got = zc.open_collection(f"file://{path}").query()
    assert got is not None
    assert got["v"].values.tolist() == [0.0, 100.0, 1.0, 101.0, 2.0, 102.0, 3.0, 4.0]
    # One abort marker, for the dead transaction; nothing else left behind.
    assert _markers(path) == [f"{dead}.aborted"]
    assert _leftovers(path) == []


def _remote_lease(path: Path, txn: str, canonical: str, heartbeat: float) -> None:
    """A lease and lock of a writer on another host, last seen at ``heartbeat``."""
    doc = {
        "txn": txn,
        "host": "another-host.invalid",
        "pid": 1,
        "started": heartbeat,
        "heartbeat": heartbeat,
        "canonicals": [canonical],
        "superseded": [],
    }
    (path / "_transactions").mkdir(exist_ok=True)
    (path / "_transactions" / f"{txn}.json").write_text(json.dumps(doc))
    lock = path / lock_key(canonical)
    lock.parent.mkdir(parents=True, exist_ok=True)
    lock.write_bytes(lock_token(txn))


def test_a_remote_writer_is_dead_after_the_lease_timeout_and_alive_while_it_beats(
    tmp_path: Path,
) -> None:
    path = tmp_path / "col"
    col = _create(path)
    col.insert(_rows(2, 4, 0.0))
    spec = resolve_store(f"file://{path}")
    with dask.config.set({"zcollection.lease-timeout": 1.5}):
        # Beating: never taken for dead, the partition stays locked (a clear conflict).
        live = new_txn_id()
        _remote_lease(path, live, "year=2024/month=02", time.time())
        stop = threading.Event()

        def beating() -> None:
            while not stop.is_set():
                sync(
                    spec.put(
                        f"_transactions/{live}.alive",
                        json.dumps(
                            {"host": "another-host.invalid", "pid": 1, "heartbeat": time.time()}
                        ).encode(),
                    )
                )
                stop.wait(0.2)

        thread = threading.Thread(target=beating, daemon=True)
        thread.start()
        try:
            time.sleep(2.0)  # longer than the timeout: only the heartbeats keep it alive
            with pytest.raises(ConflictError, match=live):
                col.insert(_rows(2, 2, 50.0), merge="concat", retries=0)
        finally:
            stop.set()
            thread.join()
        # Silent for longer than the timeout: dead, recovered by the next writer.
        time.sleep(1.7)
        col.insert(_rows(2, 2, 50.0), merge="concat", retries=0)
    got = zc.open_collection(f"file://{path}").query()
    assert got is not None
    assert got["v"].values.tolist() == [0.0, 50.0, 1.0, 51.0, 2.0, 3.0]
    # The dead writer's marker, and the one of the insert that met it alive (aborted).
    markers = _markers(path)
    assert f"{live}.aborted" in markers and len(markers) == 2
    assert _leftovers(path) == []


@pytest.mark.parametrize("lease", ["missing", "unreadable"])
def test_a_lock_without_a_readable_lease_is_released(tmp_path: Path, lease: str) -> None:
    path = tmp_path / "col"
    col = _create(path)
    col.insert(_rows(3, 2, 0.0))
    old = f"{int((time.time() - 120) * 1000):011x}deadbeef"  # 2 minutes old
    lock = path / lock_key("year=2024/month=03")
    lock.parent.mkdir(parents=True, exist_ok=True)
    lock.write_bytes(lock_token(old))
    if lease == "unreadable":
        (path / "_transactions" / f"{old}.json").write_bytes(b"\x00{not json")
    # vacuum(0) sweeps it (it used to survive repair(force=True) and vacuum(0))...
    col.vacuum(older_than=0)
    assert not lock.exists()
    assert _leftovers(path) == []
    # ... and a writer meeting such a lock takes it over too.
    lock.write_bytes(lock_token(old))
    col.insert(_rows(3, 1, 9.0), merge="concat", retries=0)
    got = zc.open_collection(f"file://{path}").query()
    assert got is not None and got["v"].values.tolist() == [0.0, 9.0, 1.0]
    assert not lock.exists()


def test_a_young_lock_without_a_lease_is_a_live_writers(tmp_path: Path) -> None:
    path = tmp_path / "col"
    col = _create(path)
    col.insert(_rows(4, 2, 0.0))
    lock = path / lock_key("year=2024/month=04")
    lock.parent.mkdir(parents=True, exist_ok=True)
    young = new_txn_id()  # a writer between its lease and its lock is younger than this
    lock.write_bytes(lock_token(young))
    with pytest.raises(ConflictError, match="month=04"):
        col.insert(_rows(4, 1, 9.0), merge="concat", retries=0)
    assert lock.read_bytes() == lock_token(young)
    col.vacuum(older_than=0)
    assert lock.exists()  # not forced: still a live writer's
    zc.open_collection(f"file://{path}", mode="rw").repair(force=True)
    assert not lock.exists()


def test_a_writer_declared_dead_never_publishes(tmp_path: Path) -> None:
    """The recoverer's abort marker comes first: the commit of a writer wrongly taken
    for dead (a long pause) refuses to publish, and nothing of it is visible."""
    path = tmp_path / "col"
    col = _create(path)
    col.insert(_rows(5, 2, 0.0))
    spec = col.aio.spec
    base = col.catalog(refresh=True)
    keys = numpy.array([[2024, 6]], dtype="int64")
    txn = sync(Transaction.begin(spec, base, keys, ["year=2024/month=06"]))
    # Wrongly declared dead (forced): recovered, its lease deleted.
    assert sync(recover_transaction(spec, txn.txn, ["year=2024/month=06"], force=True))
    assert not sync(liveness(spec, txn.txn)).lease_present
    from dask_zcollection.catalog._transaction import PutPartitions

    change = PutPartitions(
        keys=keys,
        paths=("year=2024/month=06",),
        rows=numpy.array([1]),
        axis_min=numpy.array([numpy.datetime64("2024-06-01", "ns")]),
        axis_max=numpy.array([numpy.datetime64("2024-06-01", "ns")]),
    )
    with pytest.raises(ConflictError, match="recovered as dead"):
        sync(txn.commit(change))
    assert col.catalog(refresh=True).version == base.version
    # Even once its abort marker has expired (a pause longer than its TTL): the
    # missing lease alone stops the commit.
    for marker in (path / "_transactions").glob("*.aborted"):
        marker.unlink()
    with pytest.raises(ConflictError, match="recovered as dead"):
        sync(txn.commit(change))
    assert col.catalog(refresh=True).version == base.version


def test_a_recovery_racing_a_commit_never_deletes_what_it_publishes(tmp_path: Path) -> None:
    """A recoverer whose verdict predates the writer's signature, running between the
    writer's marker check and its publication: it judges again after its marker, finds
    the writer alive and deletes nothing (it deleted the claimed partition, and the
    published catalog named a path that no longer existed)."""
    from dask_zcollection.catalog import _log
    from dask_zcollection.catalog._transaction import PutPartitions, acquire_lock

    path = tmp_path / "col"
    col = _create(path)
    col.insert(_rows(5, 2, 0.0))
    spec = col.aio.spec
    base = col.catalog(refresh=True)
    keys = numpy.array([[2024, 6]], dtype="int64")
    canonical = "year=2024/month=06"
    txn = sync(Transaction.begin(spec, base, keys, [canonical]))
    sync(acquire_lock(spec, canonical, lock_token(txn.txn, done=True)))
    claimed = sync(txn.claim(canonical))
    (path / canonical / "v" / "c").mkdir(parents=True)
    (path / canonical / "v" / "c" / "0").write_bytes(b"data")
    original = _log.CatalogLog.commit
    recovered: list[bool] = []

    async def recovery_first(self: object, catalog: object) -> bool:
        recovered.append(await recover_transaction(spec, txn.txn, [canonical]))
        return await original(self, catalog)  # type: ignore[arg-type]

    _log.CatalogLog.commit = recovery_first  # type: ignore[method-assign]
    try:
        change = PutPartitions(
            keys=keys,
            paths=(claimed,),
            rows=numpy.array([1]),
            axis_min=numpy.array([numpy.datetime64("2024-06-01", "ns")]),
            axis_max=numpy.array([numpy.datetime64("2024-06-01", "ns")]),
        )
        sync(txn.commit(change))
    finally:
        _log.CatalogLog.commit = original  # type: ignore[method-assign]
    assert recovered == [False]  # alive: nothing deleted
    assert col.catalog(refresh=True).paths[-1] == canonical
    assert (path / canonical / "v" / "c" / "0").read_bytes() == b"data"


def test_liveness_verdicts(tmp_path: Path) -> None:
    spec = resolve_store(f"file://{tmp_path}")
    mine = new_txn_id()
    sync(write_lease(spec, mine, ["a=1"], []))
    assert not sync(liveness(spec, mine)).dead()  # this process runs
    assert sync(liveness(spec, mine)).dead(force=True)
    gone = new_txn_id()
    doc = {"txn": gone, "host": os.uname().nodename, "pid": 2**22 + 12345, "started": time.time()}
    sync(spec.put(f"_transactions/{gone}.json", json.dumps(doc).encode()))
    assert sync(liveness(spec, gone)).dead()  # no such pid on this host
    sync(beat(spec, gone))  # ... unless a live process of this host beats for it
    assert not sync(liveness(spec, gone)).dead()
