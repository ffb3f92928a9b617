"""``icechunk://`` collections: one Icechunk commit per write, time travel, conflicts.

The round-trip, merge, drop and lazy-read tests of ``tests/test_api.py`` and
``tests/test_collection.py`` also run on Icechunk through the ``store_url``
fixture; this module checks what only Icechunk has.
"""

from __future__ import annotations

import asyncio
import json
import pickle
import subprocess
import sys
import textwrap
import threading
import uuid
from pathlib import Path
from typing import Any

import icechunk
import numpy
import pytest
from conftest import Factory, assert_arrays_identical
from s3_server import S3Server

import dask_zcollection as zc
from dask_zcollection._sync import sync
from dask_zcollection.store import IcechunkStore, StoreSpec, resolve_store
from dask_zcollection.testing import StoreTests

pytestmark = pytest.mark.icechunk


# -- the adapter contract ----------------------------------------------------------------------
class TestIcechunkStore(StoreTests):
    """A local repository: no atomic create; sessions, one publish wins."""

    store_cls = IcechunkStore
    scheme = "icechunk"
    atomic_create = False
    transactional = True
    blobs_as_arrays = True

    @pytest.fixture
    def store(self, tmp_path: Path) -> StoreSpec:
        return resolve_store(f"icechunk://{tmp_path}/repo")

    @pytest.fixture
    def other(self, tmp_path: Path) -> StoreSpec:
        return resolve_store(f"icechunk://{tmp_path}/other")


@pytest.mark.s3
class TestIcechunkS3Store(TestIcechunkStore):
    """A repository on the session's S3 server."""

    scheme = "icechunk+s3"

    @pytest.fixture
    def storage_options(self, s3: S3Server) -> dict[str, Any]:
        return s3.fsspec_options()

    @pytest.fixture
    def store(self, storage_options: dict[str, Any]) -> StoreSpec:
        return resolve_store(f"icechunk+s3://test/{uuid.uuid4().hex}", storage_options)

    @pytest.fixture
    def other(self, storage_options: dict[str, Any]) -> StoreSpec:
        return resolve_store(f"icechunk+s3://test/{uuid.uuid4().hex}", storage_options)


def _repo(path: Path) -> icechunk.Repository:
    return icechunk.Repository.open(icechunk.local_filesystem_storage(str(path)))


def _months(*months: int) -> numpy.ndarray:
    return numpy.array([f"2024-{m:02d}-{d:02d}" for m in months for d in (3, 9, 27)], "M8[ns]")


def test_every_write_is_one_commit_with_a_message(tmp_path: Path, factory: Factory) -> None:
    url = f"icechunk://{tmp_path}/repo"
    col = factory.create(url)
    col.insert(factory.data(_months(1, 2, 3)))
    col.insert(factory.data(_months(2), seed=1), merge="upsert")
    col.update(lambda ds: {"quality": ds["quality"].values // 2}, filters="month == 3")
    col.drop_partitions("month == 1")
    messages = [s.message for s in _repo(tmp_path / "repo").ancestry(branch="main")]
    assert len(messages) == 6  # init, create, insert, upsert, update, drop
    assert messages[-1] == "Repository initialized"
    assert messages[-2].startswith("dask_zcollection create collection")
    assert messages[-3].startswith("dask_zcollection write 3 partition(s): year=2024/month=01")
    assert messages[-4].startswith("dask_zcollection write 1 partition(s): year=2024/month=02")
    assert messages[-5].startswith("dask_zcollection write 1 partition(s): year=2024/month=03")
    assert messages[0].startswith("dask_zcollection drop 1 partition(s)")
    # Nothing of the protocol's transient objects is committed.
    # Nothing of the protocol's transient objects is committed (their groups may be).
    transient = [
        k
        for k in _keys(url)
        if k.startswith(("_transactions/", "_garbage/", "_locks/"))
        and (".json/" in k or ".lock/" in k or ".aborted/" in k)
    ]
    assert not transient
    assert zc.open_collection(url).partitions() == ["year=2024/month=02", "year=2024/month=03"]


def _keys(url: str) -> list[str]:
    from dask_zcollection._sync import sync

    return sync(resolve_store(url).list_prefix(""))


def test_time_travel_by_snapshot_tag_and_branch(tmp_path: Path, factory: Factory) -> None:
    url = f"icechunk://{tmp_path}/repo"
    col = factory.create(url)
    first = factory.data(_months(1, 2))
    col.insert(first)
    repo = _repo(tmp_path / "repo")
    snap = repo.lookup_branch("main")
    repo.create_tag("v1", snap)
    repo.create_branch("frozen", snap)
    col.insert(factory.data(_months(2), seed=5), merge="replace")
    col.insert(factory.data(_months(4), seed=6))

    now = zc.read_collection(url).compute()
    assert len(now["time"].values) == 9
    expected = Factory.sorted_rows(first)
    for version in (snap, "v1", "frozen"):
        old = zc.read_collection(url, version=version).compute()
        # The eager query of a pinned collection reads its snapshot too (the replaced
        # month's old version is gone from the tip).
        eager = zc.open_collection(url, version=version).query()
        for path in ("time", "ssh", "quality", "data_01/ku/power"):
            assert_arrays_identical(old[path].values, expected[path], f"{version}:{path}")
            assert_arrays_identical(eager[path].values, expected[path], f"{version}:{path}")
        assert zc.open_collection(url, version=version).partitions() == [
            "year=2024/month=01",
            "year=2024/month=02",
        ]
    # The pinned spec names its snapshot: a read on another process sees the same state.
    lazy = zc.read_collection(url, version="v1")
    spec = pickle.loads(pickle.dumps(lazy.source.spec))
    assert isinstance(spec, IcechunkStore) and spec.snapshot == snap
    with pytest.raises(zc.errors.NotFoundError, match="no snapshot, tag or branch"):
        zc.read_collection(url, version="nope")
    with pytest.raises(zc.errors.InvalidInputError, match="mode='r'"):
        zc.open_collection(url, mode="rw", version="v1")


def test_version_needs_icechunk(tmp_path: Path, factory: Factory) -> None:
    col = factory.create(f"file://{tmp_path}/col")
    col.insert(factory.data(_months(1)))
    with pytest.raises(zc.errors.InvalidInputError, match="icechunk"):
        zc.read_collection(f"file://{tmp_path}/col", version="v1")


def test_a_concurrent_commit_is_a_conflict_and_a_retry_lands(
    tmp_path: Path, factory: Factory
) -> None:
    url = f"icechunk://{tmp_path}/repo"
    factory.create(url).insert(factory.data(_months(1)))
    a = zc.open_collection(url, mode="rw")
    b = zc.open_collection(url, mode="rw")
    lazy = a.insert(factory.data(_months(2), seed=1), compute=False)  # planned on the old tip
    b.insert(factory.data(_months(3), seed=2))
    with pytest.raises(zc.errors.ConflictError, match="committed to branch 'main'"):
        lazy.compute()
    # Never last-writer-wins: b's commit is intact, a's write is not there.
    assert zc.open_collection(url).partitions() == ["year=2024/month=01", "year=2024/month=03"]
    a.insert(factory.data(_months(2), seed=1))
    ds = zc.open_collection(url).query()
    assert ds is not None
    assert_arrays_identical(ds["time"].values, _months(1, 2, 3), "time")


def test_processes_inserting_at_once_lose_nothing(tmp_path: Path, factory: Factory) -> None:
    url = f"icechunk://{tmp_path}/repo"
    factory.create(url, immutable=False, nested=False)
    script = textwrap.dedent(
        f"""
        import sys, numpy, dask_zcollection as zc
        month = int(sys.argv[1])
        col = zc.open_collection({url!r}, mode="rw")
        for day in range(1, 4):
            t = [f"2024-{{month:02d}}-{{day:02d}}T{{h:02d}}" for h in range(3)]
            t = numpy.array(t, "M8[ns]")
            data = {{"time": t, "ssh": numpy.full((3, 3), month, "float32"),
                     "quality": numpy.full(3, day, "uint8")}}
            col.insert(data, merge="concat", retries=50)
        """
    )
    procs = [
        subprocess.Popen([sys.executable, "-c", script, str(m)], stderr=subprocess.PIPE)
        for m in (1, 2, 3, 4)
    ]
    for p in procs:
        _, err = p.communicate(timeout=240)
        assert p.returncode == 0, err.decode()[-2000:]
    ds = zc.open_collection(url).query()
    assert ds is not None
    assert len(ds["time"].values) == 4 * 3 * 3
    assert numpy.array_equal(ds["ssh"].values[:, 0], numpy.repeat([1, 2, 3, 4], 9))
    history = list(_repo(tmp_path / "repo").ancestry(branch="main"))
    assert sum(s.message.startswith("dask_zcollection write") for s in history) == 12


def test_repository_object_in_memory(factory: Factory) -> None:
    repo = icechunk.Repository.create(icechunk.in_memory_storage())
    col = zc.create_collection(
        repo, schema=factory.schema(), axis="time", partitioning=factory.partitioning()
    )
    data = factory.data(_months(5, 6))
    col.insert(data)
    factory.assert_dataset(zc.open_collection(repo).query(), Factory.sorted_rows(data))
    assert len(list(repo.ancestry(branch="main"))) == 3
    with pytest.raises(zc.errors.InvalidInputError, match="Repository"):
        zc.open_collection(repo.writable_session("main"))


@pytest.mark.s3
def test_icechunk_on_s3(s3: S3Server, factory: Factory) -> None:
    import uuid

    url = f"icechunk+s3://test/{uuid.uuid4().hex}"
    options = s3.fsspec_options()
    col = factory.create(url, storage_options=options)
    data = factory.data(_months(1, 2, 3))
    col.insert(data)
    col.insert(factory.data(_months(2), seed=3), merge="replace")
    lazy = zc.read_collection(url, storage_options=options).filter("month != 2")
    got = lazy.compute()
    keep = data["time"].astype("M8[M]") != numpy.datetime64("2024-02")
    assert_arrays_identical(got["ssh"].values, data["ssh"][keep], "ssh")
    old = zc.open_collection(url, storage_options=options)
    assert old.partitions() == [f"year=2024/month={m:02d}" for m in (1, 2, 3)]


# -- regressions ---------------------------------------------------------------------------
def _run_with_timeout(coro: Any, timeout: float = 30) -> Any:
    """Run ``coro`` on a private event loop in a daemon thread; fail if it hangs.

    A deadlocked loop stays stuck in its own thread instead of hanging the test
    session (and the library's shared loop stays usable).
    """
    result: list[Any] = []

    def main() -> None:
        try:
            result.append(asyncio.run(coro))
        except BaseException as err:  # handed to the test thread
            result.append(err)

    thread = threading.Thread(target=main, daemon=True)
    thread.start()
    thread.join(timeout)
    assert not thread.is_alive(), f"hung for {timeout} s (deadlock)"
    if isinstance(result[0], BaseException):
        raise result[0]
    return result[0]


def test_concurrent_publishes_on_one_loop_do_not_deadlock(tmp_path: Path) -> None:
    """Two sessions of one process publishing at once on one event loop.

    The commit lock was taken on the loop thread: the second publish blocked the
    loop, so the first could never finish its commit and release the lock.
    """
    store = resolve_store(f"icechunk://{tmp_path}/repo")
    assert isinstance(store, IcechunkStore)
    store.repository(create=True)

    async def race() -> list[BaseException | None]:
        a, b = store.for_writing(), store.for_writing()
        await a.put("zarr.json", b'{"zarr_format": 3, "node_type": "group", "attributes": {}}')
        await a.put("k/a", b"from a")
        await b.put("k/b", b"from b")
        return await asyncio.gather(a.publish("a"), b.publish("b"), return_exceptions=True)

    outcome = _run_with_timeout(race())
    # Both started from the same snapshot: Icechunk lets exactly one commit land.
    losers = [e for e in outcome if e is not None]
    assert len(losers) == 1 and isinstance(losers[0], zc.errors.ConflictError), outcome
    won, lost = ("a", "b") if outcome[0] is None else ("b", "a")
    tip = sync(store.pinned())
    assert sync(tip.get(f"k/{won}")) == f"from {won}".encode()
    assert sync(tip.get(f"k/{lost}")) is None

    async def retry() -> None:  # what the write path does on ConflictError
        writer = store.for_writing()
        await writer.put(f"k/{lost}", f"from {lost}".encode())
        await writer.publish(lost)

    _run_with_timeout(retry())
    tip = sync(store.pinned())
    assert sync(tip.get("k/a")) == b"from a"
    assert sync(tip.get("k/b")) == b"from b"
    messages = [s.message for s in _repo(tmp_path / "repo").ancestry(branch="main")]
    assert messages == [lost, won, "Repository initialized"]


def test_threads_inserting_at_once_in_one_process(tmp_path: Path, factory: Factory) -> None:
    """Two threads of one process insert other partitions: both land, nothing hangs.

    Run in a child process, so that a deadlock of the library's event loop fails
    this test (by the timeout) instead of hanging every later one.
    """
    url = f"icechunk://{tmp_path}/repo"
    factory.create(url, immutable=False, nested=False)
    script = textwrap.dedent(
        f"""
        import threading, numpy, dask_zcollection as zc

        def insert(month):
            t = numpy.array([f"2024-{{month:02d}}-{{d:02d}}" for d in (1, 2, 3)], "M8[ns]")
            data = {{"time": t, "ssh": numpy.full((3, 3), month, "float32"),
                     "quality": numpy.full(3, month, "uint8")}}
            zc.open_collection({url!r}, mode="rw").insert(data, retries=20)

        threads = [threading.Thread(target=insert, args=(m,)) for m in (1, 2, 3, 4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        """
    )
    proc = subprocess.run(
        [sys.executable, "-c", script], stderr=subprocess.PIPE, timeout=90, check=False
    )
    assert proc.returncode == 0, proc.stderr.decode()[-2000:]
    col = zc.open_collection(url)
    assert col.partitions() == [f"year=2024/month={m:02d}" for m in (1, 2, 3, 4)]
    ds = col.query()
    assert ds is not None
    assert numpy.array_equal(ds["ssh"].values[:, 0], numpy.repeat([1, 2, 3, 4], 3))
    assert numpy.array_equal(ds["quality"].values, numpy.repeat([1, 2, 3, 4], 3))
    history = list(_repo(tmp_path / "repo").ancestry(branch="main"))
    assert sum(s.message.startswith("dask_zcollection write") for s in history) == 4


_GROUP = b'{"zarr_format": 3, "node_type": "group", "attributes": {}}'


def test_missing_keys_and_prefixes_are_empty_not_errors(tmp_path: Path) -> None:
    """Icechunk lists only below a node: a missing prefix is listed as ``[]``.

    Its own errors never leak: a key it refuses is a ``StorageError`` naming it.
    """
    store = resolve_store(f"icechunk://{tmp_path}/repo")
    writer = store.for_writing()
    sync(writer.put("a/b", b"xyz"))
    sync(writer.put("a/e/f", b"1"))
    for spec in (writer, sync(_published(writer))):
        assert sync(spec.list_prefix("nothing/here")) == []
        assert sync(spec.list_prefix("_locks")) == []
        assert sync(spec.list_prefix("a/b/x")) == []  # below a blob (an array)
        assert sync(spec.list_prefix("a/b/c")) == ["a/b/c/0"]  # the blob's chunk
        assert sync(spec.list_prefix("a/e/")) == ["a/e/zarr.json", "a/e/f/zarr.json", "a/e/f/c/0"]
        assert sync(spec.list_dir("nothing/here")) == []
        assert sync(spec.get("nothing/here")) is None
        assert sync(spec.get("nothing/zarr.json")) is None
        assert sync(spec.exists("nothing/here")) is False
        for call in (spec.exists, spec.get):
            with pytest.raises(zc.errors.StorageError, match="'a/b/c/0/'") as info:
                sync(call("a/b/c/0/"))
            assert isinstance(info.value.__cause__, icechunk.IcechunkError)
    writer = store.for_writing()
    sync(writer.delete_prefix("nothing/here"))
    sync(writer.delete("nothing/here"))
    sync(writer.delete("nothing/zarr.json"))
    with pytest.raises(zc.errors.StorageError, match="'a/b/c/0/'") as info:
        sync(writer.delete("a/b/c/0/"))
    assert isinstance(info.value.__cause__, icechunk.IcechunkError)
    assert sync(writer.get("a/b")) == b"xyz"  # nothing was deleted
    assert sync(writer.get("a/e/f")) == b"1"


async def _published(writer: StoreSpec) -> StoreSpec:
    await writer.publish("test")
    return await writer.pinned()


@pytest.mark.parametrize(
    ("first", "data", "top"),
    [("blob", b"x", "blob"), ("a/b/blob", b"x", "a"), ("g/zarr.json", _GROUP, "g")],
    ids=["blob", "nested-blob", "group"],
)
def test_the_root_is_listed_whatever_is_written_first(
    tmp_path: Path, first: str, data: bytes, top: str
) -> None:
    """``put`` creates the root group with the parents: ``list_dir("")`` sees the object."""
    store = resolve_store(f"icechunk://{tmp_path}/repo")
    assert sync(store.is_empty())
    writer = store.for_writing()
    sync(writer.put(first, data))
    assert sorted(sync(writer.list_dir(""))) == [top, "zarr.json"]
    assert sync(writer.is_empty()) is False
    sync(writer.publish("first"))
    assert sync(store.is_empty()) is False
    assert sorted(sync(store.list_dir(""))) == [top, "zarr.json"]
    assert sync(store.get(first)) == data
    root = json.loads(sync(store.get("zarr.json")) or b"null")
    assert root == {"zarr_format": 3, "node_type": "group", "attributes": {}}
    # Emptied again, the repository is empty.
    writer = store.for_writing()
    sync(writer.clear())
    sync(writer.publish("clear"))
    assert sync(store.is_empty()) is True


def test_put_many_keeps_the_root_group_it_writes(tmp_path: Path) -> None:
    """A root ``zarr.json`` among the items is kept, and lists the top-level nodes.

    It is written before the nodes below it, which would otherwise create an
    empty root group (a race the gate's scheduling happens to hide today).
    """
    store = resolve_store(f"icechunk://{tmp_path}/repo")
    writer = store.for_writing()
    root = json.dumps({"zarr_format": 3, "node_type": "group", "attributes": {"a": 1}}).encode()
    items = {"g/zarr.json": _GROUP, "h/zarr.json": _GROUP, "zarr.json": root, "blob": b"1"}
    sync(writer.put_many(items))
    assert sync(writer.get("zarr.json")) == root
    assert sorted(sync(writer.list_dir(""))) == ["blob", "g", "h", "zarr.json"]
    assert sync(writer.get("blob")) == b"1"


def test_a_lazy_read_takes_its_catalog_from_the_snapshot_it_reads(
    tmp_path: Path, factory: Factory, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A commit landing while a read-write collection plans a read never mixes two snapshots.

    The data are read from the snapshot pinned first; a catalog read from the
    branch tip after another commit named a partition that snapshot lacks.
    """
    url = f"icechunk://{tmp_path}/repo"
    factory.create(url).insert(factory.data(_months(1)))
    col = zc.open_collection(url, mode="rw")
    other = zc.open_collection(url, mode="rw")
    pinned = IcechunkStore.pinned
    landed: list[bool] = []

    async def pinned_then_commit(self: IcechunkStore, version: str | None = None) -> IcechunkStore:
        spec = await pinned(self, version)
        if not landed:  # another writer commits right after the snapshot is taken
            landed.append(True)
            await asyncio.to_thread(other.insert, factory.data(_months(2), seed=1))
        return spec

    monkeypatch.setattr(IcechunkStore, "pinned", pinned_then_commit)
    lazy = col.lazy()
    monkeypatch.undo()
    assert landed
    ds = lazy.compute()
    # One snapshot: January only (February landed after the snapshot was taken).
    assert_arrays_identical(ds["time"].values, _months(1), "time")
    ds = zc.read_collection(url).compute()
    assert_arrays_identical(ds["time"].values, _months(1, 2), "time")
