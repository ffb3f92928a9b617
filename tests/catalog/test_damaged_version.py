"""A writer never commits on top of a damaged catalog version (a commit would be lost).

Before: a writer built its commit on the newest intact version below a damaged
one and numbered it past the damaged one, silently dropping what that version
committed (and naming the path it had retired), and repair kept a partition the
damaged version rewrote at its old, retired path and quarantined the new
version. Now writers refuse with a ``CorruptedDataError`` until ``repair()``
(checked at plan and again at commit), garbage collection deletes nothing while
the newest version is damaged, and repair adopts the rewritten partition:
nothing is lost.
"""

from __future__ import annotations

import asyncio
import concurrent.futures

import dask
import numpy
import pytest

import dask_zcollection as zc
from dask_zcollection._sync import sync
from dask_zcollection.catalog import CatalogLog
from dask_zcollection.catalog._log import version_key
from dask_zcollection.catalog._segments import segment_key
from dask_zcollection.errors import CorruptedDataError, ZCollectionWarning
from dask_zcollection.store import resolve_store


def _schema() -> zc.Schema:
    return (
        zc.Schema()
        .with_dimension("time", chunks=8)
        .with_variable("time", dtype="datetime64[ns]", dimensions=("time",))
        .with_variable("v", dtype="float64", dimensions=("time",))
        .build()
    )


def _rows(month: int, n: int, start: float) -> dict[str, numpy.ndarray]:
    t0 = numpy.datetime64(f"2024-{month:02d}-01", "ns")
    return {
        "time": t0 + numpy.arange(n) * numpy.timedelta64(1, "h"),
        "v": start + numpy.arange(n, dtype="float64"),
    }


def _values(url: str) -> list[float]:
    ds = zc.open_collection(url).query()
    assert ds is not None
    return [float(x) for x in ds["v"].values]


def _keys(col: zc.Collection) -> list[str]:
    """Every object of the collection but the quarantine's."""
    spec = col.aio.spec
    return sorted(k for k in sync(spec.list_prefix("")) if not k.startswith("_quarantine/"))


@pytest.mark.parametrize("damage", ["root", "segment"])
def test_a_rewritten_partition_in_a_damaged_version_is_never_lost(
    protocol_url: str, damage: str
) -> None:
    url = protocol_url
    col = zc.create_collection(
        url, schema=_schema(), axis="time", partitioning=zc.partitioning.Date(("time",), "M")
    )
    with dask.config.set({"zcollection.retention": 3600}):  # readers in flight keep it
        col.insert(_rows(1, 4, 10.0))
        col.insert(_rows(2, 4, 20.0))
        col.insert(_rows(1, 6, 100.0), merge="replace")  # month 1: a new path, old retired
    spec = col.aio.spec
    log = CatalogLog(spec)
    newest = sync(log.versions())[-1]
    obj = sync(log.version_object(newest))
    assert obj is not None and not hasattr(obj, "paths")  # a root (format 2)
    rewritten = [p for p in sync(log.read(newest)).paths if p.startswith("year=2024/month=01")]
    assert len(rewritten) == 1 and "@" in rewritten[0]
    key = version_key(newest) if damage == "root" else segment_key(obj.names[0])
    sync(spec.put(key, b"\0" * 7))

    # Reads fall back to the version below (month 1's old values), with a warning.
    with pytest.warns(ZCollectionWarning, match="damaged"):
        assert _values(url) == [10.0, 11.0, 12.0, 13.0, 20.0, 21.0, 22.0, 23.0]
    # Garbage collection deletes nothing while the newest version is damaged: the
    # fallback readers still read month 1's retired path.
    assert col.vacuum(older_than=0) == []
    with pytest.warns(ZCollectionWarning, match="damaged"):
        assert _values(url)[:4] == [10.0, 11.0, 12.0, 13.0]
    # Writers refuse before writing anything: insert, update, drop.
    before = _keys(col)
    with pytest.raises(CorruptedDataError, match=r"damaged.*repair\(\)"):
        col.insert(_rows(3, 2, 30.0))
    with pytest.raises(CorruptedDataError, match=r"repair\(\)"):
        col.drop_partitions("month == 2")
    with pytest.raises(CorruptedDataError, match=r"repair\(\)"):
        col.update(lambda ds: {"v": ds["v"] * 2})
    assert _keys(col) == before

    report = col.repair()
    assert [a.path for a in report.adopted] == rewritten
    assert key in [a.path for a in report.quarantined]
    assert report.dropped == ()
    col.insert(_rows(3, 2, 30.0))
    expected = [100.0 + i for i in range(6)] + [20.0, 21.0, 22.0, 23.0, 30.0, 31.0]
    assert _values(url) == expected  # no warning: the damage is set aside
    col.vacuum(older_than=0)  # the retired old path goes now (if the commits' GC left it)
    assert not sync(spec.exists("year=2024/month=01/zarr.json"))
    assert _values(url) == expected


def test_a_garbage_version_refuses_writes_until_repair(protocol_url: str) -> None:
    """An object that is no real version (``v999`` written by something else) still hides
    whether a commit was lost: refused, set aside by repair, and nothing committed is lost."""
    url = protocol_url
    col = zc.create_collection(
        url, schema=_schema(), axis="time", partitioning=zc.partitioning.Date(("time",), "M")
    )
    col.insert(_rows(1, 3, 1.0))
    sync(col.aio.spec.put(version_key(999), b"garbage"))
    with pytest.raises(CorruptedDataError, match="999"):
        col.insert(_rows(2, 3, 2.0))
    report = col.repair()
    assert [a.path for a in report.quarantined] == [version_key(999)]
    assert report.adopted == ()
    col.insert(_rows(2, 3, 2.0))
    assert _values(url) == [1.0, 2.0, 3.0, 2.0, 3.0, 4.0]


def test_damage_between_plan_and_commit_aborts_and_leaves_nothing(protocol_url: str) -> None:
    """The commit checks again: a version damaged while the insert's tasks ran (here by
    its merge function) is refused at commit, and the aborted insert leaves nothing."""
    url = protocol_url
    col = zc.create_collection(
        url, schema=_schema(), axis="time", partitioning=zc.partitioning.Date(("time",), "M")
    )
    col.insert(_rows(1, 4, 1.0))
    col.insert(_rows(2, 4, 2.0))
    spec = col.aio.spec
    newest = version_key(sync(CatalogLog(spec).versions())[-1])
    before = _keys(col)

    def damage() -> None:  # another process's write: its own store, its own loop
        asyncio.run(resolve_store(url).put(newest, b"x"))

    def merge(existing: dict, inserted: dict, *, axis: str) -> dict:
        # The damage lands after the plan (the merge runs on the library's loop).
        with concurrent.futures.ThreadPoolExecutor(1) as pool:
            pool.submit(damage).result()
        return inserted

    with pytest.raises(CorruptedDataError, match=r"Run repair\(\)"):
        col.insert(_rows(1, 3, 9.0), merge=merge)
    # Only the abort marker (kept for the insert's tasks, dropped after its TTL).
    added = sorted(set(_keys(col)) - set(before))
    assert [k.rpartition(".")[2] for k in added] == ["aborted"], added
    assert set(before) <= set(_keys(col))
    report = col.repair()
    assert [a.path for a in report.quarantined] == [newest]
    assert _values(url) == [1.0, 2.0, 3.0, 4.0, 2.0, 3.0, 4.0, 5.0]


def test_a_writer_dead_after_committing_the_damaged_version_loses_nothing(
    protocol_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A writer committed (a rewrite of month 1), then died before cleaning up (its
    lease and locks stay); its version is damaged. Recovery (repair's first step)
    cannot read that version: it keeps what the writer wrote instead of deleting it as
    uncommitted, and repair adopts it. Before, recovery deleted the committed month."""
    from dask_zcollection.catalog._transaction import Transaction

    url = protocol_url
    col = zc.create_collection(
        url, schema=_schema(), axis="time", partitioning=zc.partitioning.Date(("time",), "M")
    )
    col.insert(_rows(1, 4, 10.0))
    col.insert(_rows(2, 4, 20.0))

    async def dies(*args: object, **kwargs: object) -> None:
        return None

    with monkeypatch.context() as patch:
        patch.setattr(Transaction, "_clean_up", dies)  # killed right after its commit
        col.insert(_rows(1, 6, 100.0), merge="replace")
    spec = col.aio.spec
    log = CatalogLog(spec)
    newest = sync(log.versions())[-1]
    committed = sync(log.read(newest))
    assert committed is not None
    rewritten = [p for p in committed.paths if p.startswith("year=2024/month=01")]
    assert "@" in rewritten[0] and sync(spec.list_dir("_transactions"))  # its lease stays
    sync(spec.put(version_key(newest), b"\0"))
    report = col.repair(force=True)  # no writer runs: the dead one is recovered now
    assert report.recovered == (committed.txn,)
    assert [a.path for a in report.adopted] == rewritten
    assert _values(url) == [100.0 + i for i in range(6)] + [20.0, 21.0, 22.0, 23.0]
