"""A reader slower than the retention never reads another version of a partition.

A reader plans with catalog version A (the partition at its canonical path);
a writer replaces it (B, written aside), the collector deletes A, and the next
write (C) claims the canonical path again. Every kind of reader, run after
that, must raise ``PartitionNotFoundError`` naming the partition: the catalog
records the identity (``_zc_txn``) of each partition's group, and the reader
checks it on the arrays it opens. A partition grown in place keeps its
identity: a reader of its earlier row count still reads its own rows.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from typing import Any

import dask
import dask.config
import numpy
import pytest
import xarray

import dask_zcollection as zc
from dask_zcollection._sync import sync
from dask_zcollection.catalog import CatalogLog
from dask_zcollection.catalog._catalog import NO_TXN
from dask_zcollection.catalog._transaction import TXN_ATTR, PutPartitions
from dask_zcollection.errors import PartitionNotFoundError, StalePartitionError
from dask_zcollection.store import resolve_store

TIMES = numpy.arange("2024-01-01", "2024-01-11", dtype="datetime64[D]").astype("M8[ns]")
JAN = "year=2024/month=01"
ANOM = {"name": "anom", "dtype": "float32", "dimensions": ["time"], "fill_value": "NaN"}


def _rewrite_twice(col: zc.Collection, factory: Any, wait: float = 0.0) -> dict[str, Any]:
    """Replace January (aside), collect the version read, then claim its path again."""
    col.insert(factory.data(TIMES, nested=False, seed=2), merge="replace")  # B, aside
    if wait:  # the retention passes: the next commits collect A themselves
        time.sleep(wait)
        col.insert(factory.data(TIMES, nested=False, seed=3), merge="replace")  # C aside
        time.sleep(wait)
        col.insert(factory.data(TIMES, nested=False, seed=4), merge="replace")
    else:
        col.vacuum(older_than=0)
        col.insert(factory.data(TIMES, nested=False, seed=4), merge="replace")
    assert col.catalog(refresh=True).paths == (JAN,)  # the canonical path, written again
    return factory.data(TIMES, nested=False, seed=4)


@pytest.fixture
def stale(tmp_path: Any, factory: Any) -> tuple[str, zc.Collection, dict[str, Any]]:
    url = f"file://{tmp_path}/col"
    col = factory.create(url, nested=False)
    first = factory.data(TIMES, nested=False, seed=1)
    col.insert(first)
    return url, col, first


def _gone(run: Callable[[], Any]) -> str:
    with pytest.raises(PartitionNotFoundError) as info:
        run()
    message = str(info.value)
    assert JAN in message and "is gone" in message, message
    return message


#: Each kind of reader, planned before the rewrite (``plan``) and run after it.
READERS: dict[str, Callable[[str], Callable[[], Any]]] = {
    # read_concat_task: every partition decoded into one result
    "compute": lambda url: zc.read_collection(url).compute,
    # read_partition_task: one task per partition
    "map_partitions": lambda url: zc.read_collection(url).map_partitions(lambda ds: ds).compute,
    # ReadBlocks: a task per chunk of one variable
    "to_dask_array": lambda url: zc.read_collection(url).to_dask_array("quality").compute,
    # to_xarray, loaded lazily (its blocks are ReadBlocks too, planned at to_xarray)
    "to_xarray": lambda url: zc.read_collection(url).to_xarray().load,
    # the DataFrame reader
    "to_dask_dataframe": lambda url: zc.read_collection(url).to_dask_dataframe().compute,
    # the halo reads of map_overlap
    "map_overlap": lambda url: zc.read_collection(url).map_overlap(lambda ds: ds, depth=1).compute,
    # dask.persist of the lazy collection
    "persist": lambda url: (lambda lazy: lambda: dask.persist(lazy))(zc.read_collection(url)),
}


@pytest.mark.parametrize("reader", sorted(READERS))
def test_every_reader_slower_than_vacuum_raises(stale: Any, factory: Any, reader: str) -> None:
    url, col, _ = stale
    run = READERS[reader](url)  # planned on version A
    _rewrite_twice(col, factory)
    _gone(run)
    # Read again: the newest version, whole.
    got = zc.read_collection(url).compute()
    numpy.testing.assert_array_equal(
        got["quality"].values, factory.data(TIMES, nested=False, seed=4)["quality"]
    )


def test_a_reader_waiting_past_a_short_retention_raises(stale: Any, factory: Any) -> None:
    url, col, _ = stale
    with dask.config.set({"zcollection.retention": 0.3}):
        lazy = zc.read_collection(url)
        _rewrite_twice(col, factory, wait=0.4)  # collected by the commits, not by vacuum
        _gone(lazy.compute)


def test_the_xarray_backend_slower_than_the_retention_raises(stale: Any, factory: Any) -> None:
    url, col, first = stale
    ds = xarray.open_dataset(url, engine="zcollection", chunks=None)
    assert ds["quality"][:2].values.tolist() == first["quality"][:2].tolist()  # opened: version A
    _rewrite_twice(col, factory)
    time.sleep(1.1)  # past the reuse of opened arrays (xarray_backend.HANDLE_TTL)
    _gone(lambda: ds["quality"].values)


def test_the_eager_partition_read_checks_too(stale: Any, factory: Any) -> None:
    _, col, _ = stale
    catalog = col.catalog()
    _rewrite_twice(col, factory)
    _gone(lambda: sync(col.aio.read_partition(catalog, 0)))


@pytest.mark.parametrize("variables", [["time", "ssh"], ["time", "anom"]])
def test_a_view_reading_its_base_slower_than_the_retention(
    tmp_path: Any, stale: Any, factory: Any, variables: list[str]
) -> None:
    url, col, _ = stale
    view = zc.create_view(f"file://{tmp_path}/view", base=url, variables=[ANOM])
    view.update(lambda ds: {"anom": ds["quality"].values.astype("float32")})
    lazy = zc.read_view(f"file://{tmp_path}/view", variables=variables)
    _rewrite_twice(col, factory)
    # Not StalePartitionError: the base version the reader planned with is gone.
    with pytest.raises(PartitionNotFoundError) as info:
        lazy.compute()
    assert not isinstance(info.value, StalePartitionError)
    assert JAN in str(info.value) and "is gone" in str(info.value)


def test_a_partition_appended_in_place_keeps_its_identity(stale: Any, factory: Any) -> None:
    """Legal: the group grew, nothing was collected; the stale reader reads its own rows."""
    url, col, first = stale
    txn = col.catalog().identity(0)
    assert txn and txn != NO_TXN
    lazy = zc.read_collection(url)
    blocks = lazy.to_dask_array("quality")
    later = factory.data(TIMES + numpy.timedelta64(12, "D"), nested=False, seed=5)
    col.insert(later, merge="time_series")  # appended in place: same group, more rows
    after = col.catalog(refresh=True)
    assert after.paths == (JAN,) and int(after.rows[0]) == 2 * len(TIMES)
    assert after.identity(0) == txn  # the group's identity is unchanged
    col.vacuum(older_than=0)
    numpy.testing.assert_array_equal(lazy.compute()["quality"].values, first["quality"])
    numpy.testing.assert_array_equal(blocks.compute(), first["quality"])
    both = numpy.concatenate([first["quality"], later["quality"]])
    numpy.testing.assert_array_equal(zc.read_collection(url).compute()["quality"].values, both)


def test_the_catalog_records_the_writer_of_each_group(stale: Any, factory: Any) -> None:
    url, col, _ = stale
    spec = resolve_store(url)
    catalog = col.catalog(refresh=True)
    group = json.loads(sync(spec.get(f"{JAN}/zarr.json")))["attributes"][TXN_ATTR]
    array = json.loads(sync(spec.get(f"{JAN}/quality/zarr.json")))["attributes"][TXN_ATTR]
    assert catalog.identity(0) == group == array == catalog.txn  # one insert wrote it
    col.insert(factory.data(TIMES[:3], nested=False, seed=7), merge="replace")
    replaced = col.catalog(refresh=True)
    assert replaced.paths[0] == f"{JAN}@{replaced.txn}"
    assert replaced.identity(0) == replaced.txn != catalog.txn
    # Stored in the segment: read back by a fresh log, not only from this process.
    latest = sync(CatalogLog(spec).latest())
    assert latest is not None and latest.identities == (replaced.txn,)


def test_a_reference_collection_adopted_records_groups_stamped_by_no_transaction(
    fixtures_dir: Any, tmp_path: Any
) -> None:
    """The reference writer stamps no ``_zc_txn``: its groups get NO_TXN, checked as such."""
    import shutil

    shutil.copytree(fixtures_dir / "date_monthly", tmp_path / "ref")
    url = f"file://{tmp_path}/ref"
    col = zc.open_collection(url, mode="rw")
    x_ac = zc.read_collection(url, variables=["x_ac"]).compute()["x_ac"].values

    def month(day: str, n: int, seed: int) -> dict[str, Any]:
        rng = numpy.random.default_rng(seed)
        return {
            "time": numpy.datetime64(day, "ns") + numpy.arange(n) * numpy.timedelta64(1, "h"),
            "ssh": rng.random((n, 8)).astype("float32"),
            "quality": rng.integers(0, 250, n).astype("uint8"),
            "x_ac": x_ac,
            "data_01/ku/power": rng.random((n, 4)).astype("float32"),
        }

    col.insert(month("2024-05-01", 4, 1))  # adopts the listed catalog first
    catalog = col.catalog(refresh=True)
    assert catalog.identities == (NO_TXN,) * 4 + (catalog.txn,)
    lazy = zc.read_collection(url, filters="month == 2")  # planned on the reference group
    before = lazy.compute()["quality"].values
    assert len(before) > 0
    col.insert(month("2024-02-01", 5, 2), merge="replace")  # aside
    col.vacuum(older_than=0)  # the reference group is deleted
    col.insert(month("2024-02-01", 6, 3), merge="replace")  # the canonical path again
    assert col.catalog(refresh=True).paths[1] == "year=2024/month=02"
    with pytest.raises(PartitionNotFoundError, match=r"year=2024/month=02.*no transaction"):
        lazy.compute()
    # The reference groups not rewritten still read (their arrays carry no stamp).
    got = zc.read_collection(url, filters="month == 3").compute()["quality"].values
    assert len(got) > 0


def test_a_catalog_without_identities_still_reads(stale: Any, factory: Any) -> None:
    """Segments written before identities were recorded: read as before, nothing checked."""
    import dataclasses

    from dask_zcollection.catalog._catalog import decode_catalog, encode_catalog

    _, col, first = stale
    catalog = col.catalog(refresh=True)
    old = dataclasses.replace(catalog, txns=None)
    raw = encode_catalog(old)
    assert b'"txns"' not in raw  # the header of such a segment
    back = decode_catalog(raw)
    assert back.txns is None and back.identity(0) == "" and back.identities == ("",)
    assert decode_catalog(encode_catalog(catalog)).identities == catalog.identities
    # A read planned on it opens the group without a check (the rows are the group's).
    got = sync(col.aio.read_partition(back, 0))
    numpy.testing.assert_array_equal(got["quality"], first["quality"])
    # A commit on it: the entries it writes get their identity, the others stay unknown,
    # and a group grown in place keeps the identity it had (unknown here).
    feb = numpy.array([[2024, 2]])
    put = PutPartitions(
        keys=numpy.concatenate([back.keys, feb]),
        paths=(back.paths[0], "year=2024/month=02"),
        rows=numpy.array([20, 3]),
        axis_min=numpy.concatenate([back.axis_min, back.axis_min]),
        axis_max=numpy.concatenate([back.axis_max, back.axis_max]),
        txn="1a2000000000000abcd",
    )
    assert put(back).identities == ("", "1a2000000000000abcd")
    moved = dataclasses.replace(put, paths=(f"{JAN}@1a2000000000000abcd", "year=2024/month=02"))
    assert moved(back).identities == ("1a2000000000000abcd",) * 2


def test_the_check_costs_no_request(tmp_path: Any, factory: Any) -> None:
    """The identity is read from the arrays' ``zarr.json`` the read opens anyway."""
    from benchmarks._latency import LatencyLocalStore

    factory.create(f"file://{tmp_path}/col", nested=False).insert(
        factory.data(TIMES, nested=False, seed=1)
    )
    spec = LatencyLocalStore(f"{tmp_path}/col", latency=0.0)
    lazy = zc.read_collection(spec)[["time", "quality"]]
    assert lazy.catalog.identity(0) == lazy.catalog.txn  # checked, not unknown
    spec.counter.reset()
    lazy.compute()
    read = [k for k in spec.counter.reads() if k.startswith(JAN)]
    assert sorted(k for k in read if k.endswith("zarr.json")) == [
        f"{JAN}/quality/zarr.json",
        f"{JAN}/time/zarr.json",
    ]  # not the group's


def test_a_stale_reader_on_every_protocol_backend(protocol_url: str, factory: Any) -> None:
    col = factory.create(protocol_url, nested=False)
    col.insert(factory.data(TIMES, nested=False, seed=1))
    lazy = zc.read_collection(protocol_url)
    _rewrite_twice(col, factory)
    _gone(lazy.compute)


@pytest.mark.icechunk
def test_on_icechunk_a_stale_reader_reads_its_snapshot(tmp_path: Any, factory: Any) -> None:
    """Readers are pinned to a snapshot: the rows of the version they planned with, no error."""
    url = f"icechunk://{tmp_path}/repo"
    col = factory.create(url, nested=False)
    first = factory.data(TIMES, nested=False, seed=1)
    col.insert(first)
    lazy = zc.read_collection(url)
    _rewrite_twice(col, factory)
    numpy.testing.assert_array_equal(lazy.compute()["quality"].values, first["quality"])


def test_an_array_opened_before_its_version_went_is_not_read_as_the_next(
    tmp_path: Any, factory: Any
) -> None:
    """An opened array whose chunks turn out to be another version's (checksums on): the
    record read again is that version's, by its stamp: refused, not taken."""
    from dask_zcollection.io import ReadSource

    url = f"file://{tmp_path}/col"
    col = factory.create(url, schema=factory.schema(nested=False).with_checksums(True))
    col.insert(factory.data(TIMES, nested=False, seed=1))
    source = ReadSource(resolve_store(url), col.aio.config)
    opened = sync(source.io.open_handle(f"{JAN}/quality", "quality"))  # version A
    _rewrite_twice(col, factory)
    with pytest.raises(PartitionNotFoundError, match="another version's"):
        sync(opened.read(0, len(TIMES)))
