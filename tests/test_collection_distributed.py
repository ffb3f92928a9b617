"""The lazy read path on a real ``distributed.LocalCluster`` (worker processes).

One cluster for the module. The collection lives on ``file://`` (worker
processes cannot see ``memory://``).
"""

from __future__ import annotations

import os
import pickle
from collections.abc import Iterator
from typing import Any

import dask
import numpy
import pytest

import dask_zcollection as zc
from dask_zcollection.expr import Finalize

pytest.register_assert_rewrite("conftest_read")
from conftest_read import (  # noqa: E402
    TaskLog,
    assert_columns,
    counting_spec,
    is_chunk_key,
    reads,
    reset_reads,
)

pytest_plugins = ["conftest_read"]
pytestmark = pytest.mark.cluster

distributed = pytest.importorskip("distributed")


def add_one(ds: zc.Dataset) -> zc.Dataset:
    """Module level: ships to workers by reference."""
    return ds.with_variables({"quality": ds["quality"].with_data(ds["quality"].values + 1)})


def worker_reads(tag: str) -> list[str]:
    """Keys read through counting stores tagged ``tag`` in this (worker) process."""
    return reads(tag)


@pytest.fixture(scope="module")
def client() -> Iterator[Any]:
    with (
        distributed.LocalCluster(
            processes=True, n_workers=2, threads_per_worker=1, dashboard_address=None
        ) as cluster,
        distributed.Client(cluster) as client,
    ):
        yield client


@pytest.fixture(scope="module")
def stored(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, dict[str, numpy.ndarray]]:
    """Five monthly partitions on disk (default factory schema: immutable, nested group)."""
    from conftest import Factory

    factory = Factory()
    url = f"file://{tmp_path_factory.mktemp('dist')}/col"
    col = factory.create(url, schema=factory.schema(chunks=32))
    times = numpy.arange(
        "2024-01-01", "2024-06-01", numpy.timedelta64(12, "h"), dtype="datetime64[ns]"
    )
    data = factory.data(times, seed=11)
    col.insert(data)
    return url, data


def months(data: dict[str, numpy.ndarray]) -> numpy.ndarray:
    return data["time"].astype("datetime64[M]")


def rows(data: dict[str, numpy.ndarray], mask: numpy.ndarray) -> dict[str, numpy.ndarray]:
    return {k: (v if k == "x_ac" else v[mask]) for k, v in data.items()}


def test_scheduler_shares_this_process(client: Any) -> None:
    # The in-process scheduler is what lets the tests below see its store reads.
    assert client.run_on_scheduler(os.getpid) == os.getpid()
    assert set(client.run(os.getpid).values()).isdisjoint({os.getpid()})


def test_compute_and_filter(client: Any, stored: tuple[str, Any]) -> None:
    url, data = stored
    lazy = zc.read_collection(url)
    assert_columns(lazy.compute(), data)
    got = client.compute(lazy.filter("month in (2, 4)")).result()
    m = months(data)
    assert_columns(
        got, rows(data, (m == numpy.datetime64("2024-02")) | (m == numpy.datetime64("2024-04")))
    )
    ranged = lazy.filter(time=slice("2024-03-30T12", "2024-04-02"))["ssh"].compute()
    t = data["time"]
    mask = (t >= numpy.datetime64("2024-03-30T12")) & (t <= numpy.datetime64("2024-04-02"))
    assert_columns(ranged, {"ssh": data["ssh"][mask]})
    assert lazy.filter(time=slice("2030-01-01", None)).compute() is None


def test_persist_then_filter(client: Any, stored: tuple[str, Any]) -> None:
    url, data = stored
    persisted = zc.read_collection(url).filter("month >= 2").persist()
    assert persisted.npartitions == 4
    assert "Persisted" in persisted.explain()
    m = months(data)
    assert_columns(
        persisted.filter(month=3).compute(), rows(data, m == numpy.datetime64("2024-03"))
    )
    t = data["time"]
    mask = (t >= numpy.datetime64("2024-02-27")) & (t <= numpy.datetime64("2024-03-02"))
    assert_columns(
        persisted.filter(time=slice("2024-02-27", "2024-03-02")).compute(), rows(data, mask)
    )
    assert_columns(persisted.compute(), rows(data, m >= numpy.datetime64("2024-02")))
    tree = persisted.filter(month=[2, 5]).to_xarray()
    two = (m == numpy.datetime64("2024-02")) | (m == numpy.datetime64("2024-05"))
    numpy.testing.assert_array_equal(tree.to_dataset()["quality"].values, data["quality"][two])
    mapped = persisted.map_partitions(add_one).compute()
    numpy.testing.assert_array_equal(
        mapped["quality"].values, data["quality"][m >= numpy.datetime64("2024-02")] + 1
    )


def test_persisted_time_range_to_dask_array(client: Any, stored: tuple[str, Any]) -> None:
    # Persisted results are futures here: the row counts sizing the blocks are
    # counted on the workers (the catalog holds the stored, untrimmed counts).
    url, data = stored
    t = data["time"]
    persisted = zc.read_collection(url).filter(time=slice("2024-02-10", "2024-03-10")).persist()
    mask = (t >= numpy.datetime64("2024-02-10")) & (t <= numpy.datetime64("2024-03-10"))
    arr = persisted.to_dask_array("quality")
    assert arr.shape == (int(mask.sum()),)
    numpy.testing.assert_array_equal(arr.compute(), data["quality"][mask])
    tree = persisted.to_xarray()
    numpy.testing.assert_array_equal(tree.to_dataset()["time"].values, t[mask])


def test_compute_two_projections_together(client: Any, stored: tuple[str, Any]) -> None:
    url, data = stored
    lazy = zc.read_collection(url).filter("month <= 2")
    a, b = dask.compute(lazy[["time", "ssh"]], lazy[["time", "quality"]])
    keep = months(data) <= numpy.datetime64("2024-02")
    assert_columns(a, {"time": data["time"][keep], "ssh": data["ssh"][keep]})
    assert_columns(b, {"time": data["time"][keep], "quality": data["quality"][keep]})


def test_map_partitions_delayed_and_dataframe(client: Any, stored: tuple[str, Any]) -> None:
    url, data = stored
    lazy = zc.read_collection(url)
    out = lazy.map_partitions(add_one).filter("month == 5").compute()
    may = months(data) == numpy.datetime64("2024-05")
    numpy.testing.assert_array_equal(out["quality"].values, data["quality"][may] + 1)
    pieces = dask.compute(*lazy.to_delayed())
    assert [len(p["time"].values) for p in pieces] == [62, 58, 62, 60, 62]
    frame = lazy.to_dask_dataframe(["time", "quality"]).loc["2024-02-15":"2024-03-10"].compute()
    t = data["time"]
    mask = (t >= numpy.datetime64("2024-02-15")) & (t < numpy.datetime64("2024-03-11"))
    numpy.testing.assert_array_equal(frame.index.values, t[mask])
    numpy.testing.assert_array_equal(frame["quality"].values, data["quality"][mask])


def test_to_xarray_reduction(client: Any, stored: tuple[str, Any]) -> None:
    url, data = stored
    tree = zc.read_collection(url).to_xarray()
    root = tree.to_dataset()
    power = tree["/data_01/ku"].to_dataset()["power"]
    total, top, low, window, means = dask.compute(
        root["quality"].astype("int64").sum(),
        root["ssh"].max(),
        power.min(),
        root["quality"].astype("int64").isel(time=slice(50, 200)).sum(),
        root["ssh"].mean("x_ac"),
    )
    assert int(total) == int(data["quality"].astype("int64").sum())
    assert float(top) == float(numpy.nanmax(data["ssh"]))
    assert float(low) == float(data["data_01/ku/power"].min())
    assert int(window) == int(data["quality"][50:200].astype("int64").sum())
    numpy.testing.assert_allclose(means.values, numpy.nanmean(data["ssh"], axis=1), rtol=1e-6)


class SchedulerBlocks(distributed.diagnostics.plugin.SchedulerPlugin):
    """Block read tasks (``zc-block-<variable>``) the scheduler ran while on it."""

    def __init__(self, client: Any) -> None:
        self.keys: list[str] = []
        self.scheduler = client.cluster.scheduler  # in this process (see the first test)
        self.scheduler.add_plugin(self, name="zc-test-blocks")

    def transition(self, key: Any, start: str, finish: str, *args: Any, **kwargs: Any) -> None:
        if finish == "memory" and isinstance(key, tuple) and str(key[0]).startswith("zc-block"):
            self.keys.append(str(key[0]))

    def stop(self) -> list[str]:
        self.scheduler.remove_plugin(name="zc-test-blocks")
        return self.keys


def test_to_xarray_reads_its_index_on_the_client(client: Any, stored: tuple[str, Any]) -> None:
    # The axis index is read where the collection was planned (no round of tasks on the
    # cluster to ship it back); the reduction itself runs on the workers.
    url, data = stored
    seen = SchedulerBlocks(client)
    tree = zc.read_collection(url).to_xarray()
    built = list(seen.keys)
    numpy.testing.assert_array_equal(tree["time"].values, data["time"])
    total = tree.to_dataset()["quality"].astype("int64").sum().compute()
    ran = seen.stop()
    assert built == []
    assert int(total) == int(data["quality"].astype("int64").sum())
    assert ran and all(k.startswith("zc-block-quality") for k in ran), ran
    # A persisted collection's index comes from the workers.
    held = zc.read_collection(url).persist()
    numpy.testing.assert_array_equal(held.to_xarray()["time"].values, data["time"])


class SchedulerBlockReads(SchedulerBlocks):
    """Tasks reading a block, whatever dask fused them with (``mean_chunk-zc-block-ssh-...``)."""

    def transition(self, key: Any, start: str, finish: str, *args: Any, **kwargs: Any) -> None:
        if finish == "memory" and isinstance(key, tuple) and "zc-block-" in str(key[0]):
            self.keys.append(str(key[0]))


def test_to_xarray_chunks_runs_fewer_block_tasks(client: Any, stored: tuple[str, Any]) -> None:
    # Blocks of 3 zarr chunks (96 rows): a third of the read tasks on the cluster, one
    # per block; the reduction is the same.
    url, data = stored
    per_month = numpy.unique(months(data), return_counts=True)[1]
    one_chunk = sum(-(-int(n) // 32) for n in per_month)
    three_chunks = sum(-(-int(n) // 96) for n in per_month)
    results = []
    for chunks, blocks in ((None, one_chunk), (96, three_chunks)):
        ssh = zc.read_collection(url).to_xarray(chunks=chunks).to_dataset()["ssh"]
        assert len(ssh.chunks[0]) == blocks
        seen = SchedulerBlockReads(client)
        results.append(float(ssh.mean().compute()))
        ran = seen.stop()
        assert len(ran) == blocks and all("zc-block-ssh" in k for k in ran), ran
    assert 2 * three_chunks <= one_chunk
    expected = float(numpy.nanmean(data["ssh"], dtype="float64"))
    assert results == [pytest.approx(expected, rel=1e-6)] * 2


def test_shipped_tasks_pickle_with_plain_pickle(stored: tuple[str, Any]) -> None:
    url, _ = stored
    lazy = zc.read_collection(url).filter("month > 1")
    for coll in (
        lazy,
        lazy[["ssh"]],
        lazy.map_partitions(add_one),
        lazy.filter(time=slice("2024-02-03", None)),
    ):
        for plan in (Finalize(coll.expr).optimize(fuse=False), coll.expr.optimize(fuse=False)):
            graph = dict(plan.__dask_graph__())
            again = pickle.loads(pickle.dumps(graph))
            assert again.keys() == graph.keys()
            assert pickle.loads(pickle.dumps(plan))._name == plan._name


def test_graph_building_does_no_io_on_the_scheduler(client: Any, stored: tuple[str, Any]) -> None:
    url, data = stored
    spec = counting_spec(url)
    lazy = zc.read_collection(spec).filter("month in (1, 3)")[["time", "ssh"]]
    reset_reads(spec.tag)  # reading the config and catalog was the client's one-off I/O
    got = client.compute(lazy).result()
    m = months(data)
    keep = (m == numpy.datetime64("2024-01")) | (m == numpy.datetime64("2024-03"))
    assert_columns(got, {"time": data["time"][keep], "ssh": data["ssh"][keep]})
    # The scheduler (this process) materialised the graph without touching the store ...
    assert reads(spec.tag) == []
    # ... the workers did the reading, of the selected partitions only.
    on_workers = [k for keys in client.run(worker_reads, spec.tag).values() for k in keys]
    assert any(is_chunk_key(k) for k in on_workers)
    assert {k.split("/")[1].split("@")[0] for k in on_workers} == {"month=01", "month=03"}
    # And a plan unpickled on a worker materialises there without I/O too.
    blob = pickle.dumps(Finalize(lazy.expr).optimize(fuse=False))
    n_before = len(client.submit(worker_reads, spec.tag, pure=False).result())
    assert client.submit(_materialise, blob, pure=False).result() > 0
    assert len(client.submit(worker_reads, spec.tag, pure=False).result()) == n_before


def _materialise(blob: bytes) -> int:
    return len(dict(pickle.loads(blob).__dask_graph__()))


def test_worker_count(client: Any) -> None:
    assert len(client.scheduler_info()["workers"]) == 2


def _dask_backed(data: dict[str, numpy.ndarray], chunks: int) -> dict[str, Any]:
    import dask.array as da

    return {k: (v if k == "x_ac" else da.from_array(v, chunks=chunks)) for k, v in data.items()}


@pytest.mark.icechunk
def test_icechunk_writes_on_workers_through_forks_and_one_commit(
    client: Any, tmp_path: Any
) -> None:
    """Each merge-write task writes to a fork session on a worker; one Icechunk commit."""
    import icechunk
    from conftest import Factory

    factory = Factory()
    repo_path = tmp_path / "repo"
    url = f"icechunk://{repo_path}"
    col = factory.create(url, schema=factory.schema(chunks=8))

    def history() -> list[str]:
        repo = icechunk.Repository.open(icechunk.local_filesystem_storage(str(repo_path)))
        return [s.message for s in repo.ancestry(branch="main")]

    before = history()
    times = numpy.arange(
        "2024-01-01", "2024-04-01", numpy.timedelta64(12, "h"), dtype="datetime64[ns]"
    )
    data = factory.data(times, seed=5)
    with distributed.get_task_stream(client) as stream:
        written = col.insert(_dask_backed(data, 25))
    assert written == ["year=2024/month=01", "year=2024/month=02", "year=2024/month=03"]
    ran = {str(t["key"]) for t in stream.data}
    assert sum("zc-merge-write" in k for k in ran) == 3, sorted(ran)
    assert any("zc-commit" in k for k in ran)
    after = history()
    assert len(after) == len(before) + 1
    assert after[0].startswith("dask_zcollection write 3 partition(s): year=2024/month=01")
    factory.assert_dataset(zc.open_collection(url).query(), data)

    # A merge that reads the stored partition on the worker, computed inside a larger graph.
    extra = factory.data(factory.times("2024-02-10T06:00", "2024-03-31T18:00"), seed=6)
    lazy = col.insert(_dask_backed(extra, 1), merge="concat", compute=False)
    (paths,) = dask.compute(lazy)
    assert paths == ["year=2024/month=02", "year=2024/month=03"]
    assert len(history()) == len(before) + 2
    expected = {
        k: (v if k == "x_ac" else numpy.concatenate([v, extra[k]])) for k, v in data.items()
    }
    factory.assert_dataset(zc.open_collection(url).query(), Factory.sorted_rows(expected))
    # The state before the second insert is still there.
    factory.assert_dataset(zc.open_collection(url, version=_snapshot(repo_path, 1)).query(), data)


def _snapshot(repo_path: Any, back: int) -> str:
    import icechunk

    repo = icechunk.Repository.open(icechunk.local_filesystem_storage(str(repo_path)))
    return str(list(repo.ancestry(branch="main"))[back].id)


@pytest.mark.icechunk
def test_icechunk_fork_commit_detects_a_concurrent_writer(client: Any, tmp_path: Any) -> None:
    """A lazy insert planned before another writer's commit fails with ConflictError."""
    from conftest import Factory

    factory = Factory()
    url = f"icechunk://{tmp_path / 'repo'}"
    col = factory.create(url, schema=factory.schema(chunks=8))
    first = factory.data(factory.times("2024-01-05", "2024-02-05"), seed=1)
    col.insert(first)
    lazy = col.insert(
        _dask_backed(factory.data(factory.times("2024-01-06"), seed=2), 1),
        merge="concat",
        compute=False,
    )
    other = factory.data(factory.times("2024-03-07"), seed=3)
    zc.open_collection(url, mode="rw").insert(other)  # commits first
    with pytest.raises(zc.ConflictError, match="committed to branch 'main'"):
        dask.compute(lazy)
    # Nothing of the lost insert is visible; the other writer's rows are.
    expected = {
        k: (v if k == "x_ac" else numpy.concatenate([v, other[k]])) for k, v in first.items()
    }
    factory.assert_dataset(zc.open_collection(url).query(), expected)
    # The same insert, planned again, lands.
    col.insert(_dask_backed(factory.data(factory.times("2024-01-06"), seed=2), 1), merge="concat")
    assert zc.open_collection(url).catalog().rows.tolist() == [2, 1, 1]


def _fail_on_march(block: numpy.ndarray) -> numpy.ndarray:
    """Module level (ships to workers): a pipeline step that fails on March's rows."""
    if (block.astype("datetime64[M]") == numpy.datetime64("2024-03")).any():
        raise RuntimeError("the pipeline failed on March")
    return block


def test_file_insert_runs_its_tasks_on_the_workers(client: Any, tmp_path: Any) -> None:
    """A dask-backed insert into ``file://``: the merge-write tasks run on both worker
    processes, one commit; a lazy insert computed with the pipeline that feeds it lands too."""
    from conftest import Factory

    factory = Factory()
    url = f"file://{tmp_path}/col"
    col = factory.create(url, schema=factory.schema(chunks=8))
    times = numpy.arange(
        "2024-01-01", "2024-07-01", numpy.timedelta64(12, "h"), dtype="datetime64[ns]"
    )
    data = factory.data(times, seed=21)
    with distributed.get_task_stream(client) as stream:
        written = col.insert(_dask_backed(data, 40))
    assert written == [f"year=2024/month={m:02d}" for m in range(1, 7)]
    merge_writes = [t for t in stream.data if "zc-merge-write" in str(t["key"])]
    assert len(merge_writes) == 6
    assert {t["worker"] for t in merge_writes} == set(client.scheduler_info()["workers"])
    assert sum("zc-commit" in str(t["key"]) for t in stream.data) == 1
    factory.assert_dataset(zc.open_collection(url).query(), data)

    extra = factory.data(factory.times("2024-02-10T06:00", "2024-05-31T18:00"), seed=22)
    source = _dask_backed(extra, 1)
    lazy = col.insert(source, merge="concat", compute=False)
    paths, total = dask.compute(lazy, source["quality"].sum())
    assert paths == ["year=2024/month=02", "year=2024/month=05"]
    assert total == extra["quality"].sum()
    expected = {
        k: (v if k == "x_ac" else numpy.concatenate([v, extra[k]])) for k, v in data.items()
    }
    factory.assert_dataset(zc.open_collection(url).query(), Factory.sorted_rows(expected))


def test_a_failed_pipeline_chunk_leaves_nothing_visible(client: Any, tmp_path: Any) -> None:
    """A lazy insert whose input fails on a worker publishes nothing; the next insert lands."""
    import dask.array as da
    from conftest import Factory

    factory = Factory()
    url = f"file://{tmp_path}/col"
    col = factory.create(url, schema=factory.schema(chunks=8))
    first = factory.data(factory.times("2024-01-05", "2024-02-05", "2024-03-05"), seed=1)
    col.insert(first)
    more = factory.data(
        factory.times("2024-01-06", "2024-02-06", "2024-03-06", "2024-04-06"), seed=2
    )
    source = _dask_backed(more, 1)
    source["time"] = da.asarray(more["time"], chunks=1).map_blocks(
        _fail_on_march, meta=numpy.empty(0, "datetime64[ns]")
    )
    with pytest.raises(RuntimeError, match="failed on March"):
        col.insert(source, merge="concat")
    factory.assert_dataset(zc.open_collection(url).query(), first)
    assert zc.open_collection(url).catalog().rows.tolist() == [1, 1, 1]
    # Nothing holds the partitions: the same rows, from a sound pipeline, land.
    col.insert(_dask_backed(more, 1), merge="concat")
    expected = {
        k: (v if k == "x_ac" else numpy.concatenate([v, more[k]])) for k, v in first.items()
    }
    factory.assert_dataset(zc.open_collection(url).query(), Factory.sorted_rows(expected))


# -- every dask entry point sees the pruned graph ----------------------------------------------
#: Daily partitions of the entry-point tests: one is selected.
N_DAYS = 730


@pytest.fixture(scope="module")
def daily(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, numpy.ndarray]:
    """``N_DAYS`` daily partitions of 3 rows each (time and a float) on disk."""
    schema = (
        zc.Schema()
        .with_dimension("time", chunks=3)
        .with_variable("time", dtype="datetime64[ns]", dimensions=("time",))
        .with_variable("value", dtype="float64", dimensions=("time",))
        .build()
    )
    url = f"file://{tmp_path_factory.mktemp('daily')}/col"
    col = zc.create_collection(
        url, schema=schema, axis="time", partitioning=zc.partitioning.Date(("time",), "D")
    )
    times = numpy.datetime64("2020-01-01", "ns") + numpy.arange(3 * N_DAYS) * numpy.timedelta64(
        8, "h"
    )
    col.insert({"time": times, "value": numpy.arange(3 * N_DAYS, dtype="float64")})
    return url, times


def one_day(daily: tuple[str, numpy.ndarray], day: int = 5) -> tuple[Any, numpy.ndarray]:
    """The lazy selection of 2021-03-``day`` (1 partition of ``N_DAYS``) and its values."""
    url, times = daily
    lazy = zc.read_collection(url).filter(f"year == 2021 and month == 3 and day == {day}")
    mask = times.astype("datetime64[D]") == numpy.datetime64(f"2021-03-{day:02d}")
    assert mask.sum() == 3
    return lazy, numpy.flatnonzero(mask).astype("float64")


def read_keys(keys: Any) -> list[Any]:
    """The keys of partition read tasks among ``keys``."""
    return [k for k in keys if isinstance(k, tuple) and str(k[0]).startswith("zc-read")]


def test_dask_optimize_returns_the_pruned_graph(daily: tuple[str, numpy.ndarray]) -> None:
    lazy, expected = one_day(daily)
    assert zc.read_collection(daily[0]).npartitions == N_DAYS
    (optimized,) = dask.optimize(lazy)
    graph = dict(optimized.__dask_graph__())
    # Before: the expression as built, 2 x N_DAYS + 2 tasks (every partition read).
    assert len(read_keys(graph)) == 1
    assert len(graph) <= 2
    numpy.testing.assert_array_equal(optimized.compute()["value"].values, expected)
    (projected,) = dask.optimize(lazy["value"])
    assert len(read_keys(dict(projected.__dask_graph__()))) == 1
    assert projected.variables == ("value",)
    numpy.testing.assert_array_equal(projected.compute()["value"].values, expected)


@pytest.mark.parametrize(
    "entry",
    ["compute", "method", "persist", "delayed", "to_delayed", "array", "xarray", "dataframe"],
)
def test_local_entry_points_run_one_read(daily: tuple[str, numpy.ndarray], entry: str) -> None:
    lazy, expected = one_day(daily)

    def values() -> numpy.ndarray:
        if entry == "compute":
            return dask.compute(lazy)[0]["value"].values  # type: ignore[no-any-return]
        if entry == "method":
            return lazy.compute()["value"].values  # type: ignore[no-any-return]
        if entry == "persist":
            (held,) = dask.persist(lazy)
            return held.compute()["value"].values  # type: ignore[no-any-return]
        if entry == "delayed":
            return dask.delayed(lambda ds: ds["value"].values)(lazy).compute()  # type: ignore[no-any-return]
        if entry == "to_delayed":
            return numpy.concatenate([d["value"].values for d in dask.compute(*lazy.to_delayed())])
        if entry == "array":
            return lazy.to_dask_array("value").compute()  # type: ignore[no-any-return]
        if entry == "xarray":
            return lazy.to_xarray()["value"].values  # type: ignore[no-any-return]
        return lazy.to_dask_dataframe()["value"].compute().values  # type: ignore[no-any-return]

    with TaskLog() as executed, dask.config.set(scheduler="threads"):
        got = values()
    numpy.testing.assert_array_equal(got, expected)
    # One partition selected (one chunk): one read task, or one block read.
    names = [str(n) for n in executed.names()]
    reads_run = [n for n in names if n.startswith(("zc-read", "zc-block"))]
    if entry == "xarray":  # the axis is read first: to_xarray builds its index on it
        assert [n for n in reads_run if n.startswith("zc-block-time")], names
        reads_run = [n for n in reads_run if not n.startswith("zc-block-time")]
    assert len(reads_run) == 1, names
    assert len(names) <= 6, names


class SchedulerReads(distributed.diagnostics.plugin.SchedulerPlugin):
    """Distinct partition read tasks the scheduler ran while this plugin was on it."""

    def __init__(self, client: Any) -> None:
        self.keys: set[str] = set()
        self.scheduler = client.cluster.scheduler  # in this process (see the first test)
        self.scheduler.add_plugin(self, name="zc-test-reads")

    def transition(self, key: Any, start: str, finish: str, *args: Any, **kwargs: Any) -> None:
        if finish == "memory" and read_keys([key]):
            self.keys.add(str(key))

    def count(self) -> int:
        self.scheduler.remove_plugin(name="zc-test-reads")
        return len(self.keys)


def test_client_entry_points_run_one_read(client: Any, daily: tuple[str, numpy.ndarray]) -> None:
    # Another day per entry point: a partition held by an earlier one is not read again.
    lazy, expected = one_day(daily, 11)
    seen = SchedulerReads(client)
    numpy.testing.assert_array_equal(client.compute(lazy).result()["value"].values, expected)
    assert seen.count() == 1
    lazy, expected = one_day(daily, 12)
    seen = SchedulerReads(client)
    held = client.persist(lazy)
    # The partitions stay on the workers: the collection holds futures, never data.
    futures = distributed.futures_of(held)
    assert len(futures) == 1
    distributed.wait(futures)
    assert all(client.who_has(futures).values())
    assert not [v for v in dict(held.__dask_graph__()).values() if isinstance(v, zc.Dataset)]
    numpy.testing.assert_array_equal(held.compute()["value"].values, expected)
    assert seen.count() == 1
    lazy, expected = one_day(daily, 13)
    seen = SchedulerReads(client)
    (held,) = dask.persist(lazy)  # the default scheduler is the client's
    numpy.testing.assert_array_equal(held.compute()["value"].values, expected)
    assert seen.count() == 1
    lazy, expected = one_day(daily, 14)
    seen = SchedulerReads(client)
    (optimized,) = dask.optimize(lazy)
    assert len(read_keys(dict(optimized.__dask_graph__()))) == 1
    numpy.testing.assert_array_equal(client.compute(optimized).result()["value"].values, expected)
    assert seen.count() == 1


def day_runs(ds: zc.Dataset) -> dict[str, numpy.ndarray]:
    """An index builder: one entry per day (module level: ships to workers by reference)."""
    day = ds["time"].values.astype("datetime64[D]").astype("int64")  # type: ignore[union-attr]
    edges = numpy.flatnonzero(numpy.diff(day)) + 1
    starts = numpy.concatenate([[0], edges]).astype("int64")
    stops = numpy.concatenate([edges, [len(day)]]).astype("int64")
    return {"day": day[starts], "_start": starts, "_stop": stops}


def quality_sum(ds: zc.Dataset, depth: int) -> zc.Dataset:
    """Sum of ``quality`` over the rows within ``depth`` of each row."""
    x = ds["quality"].values.astype("int64")  # type: ignore[union-attr]
    c = numpy.concatenate([[0], numpy.cumsum(x)])
    i = numpy.arange(len(x))
    out = c[numpy.minimum(i + depth + 1, len(x))] - c[numpy.maximum(i - depth, 0)]
    return ds.select(["time"]).with_variables({"total": ds["time"].with_data(out)})


def test_index_and_overlap_on_the_cluster(client: Any, stored: tuple[str, Any]) -> None:
    from dask_zcollection.indexing import Indexer

    url, data = stored
    lazy = zc.read_collection(url)
    idx = Indexer.build(lazy, day_runs, variables=["time"])  # the builder runs on the workers
    day = data["time"].astype("datetime64[D]").astype("int64")
    chosen = day[[3, 100, 200]].tolist()
    got = client.compute(lazy.filter(index=idx, day=chosen)).result()
    assert_columns(got, rows(data, numpy.isin(day, chosen)))
    out = client.compute(lazy.filter("month in (2, 4)").map_overlap(quality_sum, 40, 40)).result()
    x = data["quality"].astype("int64")
    c = numpy.concatenate([[0], numpy.cumsum(x)])
    i = numpy.arange(len(x))
    ref = c[numpy.minimum(i + 41, len(x))] - c[numpy.maximum(i - 40, 0)]
    m = months(data)
    keep = (m == numpy.datetime64("2024-02")) | (m == numpy.datetime64("2024-04"))
    numpy.testing.assert_array_equal(out["total"].values, ref[keep])


# -- a view updated by worker processes --------------------------------------------------------
def view_flag(ds: zc.Dataset) -> dict[str, numpy.ndarray]:
    """Module level: ships to the workers by reference."""
    return {"flag": (ds["quality"].values > 100).astype("int8")}  # type: ignore[union-attr]


def test_view_update_runs_on_worker_processes(
    client: Any, stored: tuple[str, Any], tmp_path: Any
) -> None:
    url, data = stored
    view_url = f"file://{tmp_path}/view"
    view = zc.create_view(
        view_url,
        base=url,
        variables=[{"name": "flag", "dtype": "int8", "dimensions": ["time"], "fill_value": -1}],
    )
    with distributed.get_task_stream(client) as stream:
        written = view.update(view_flag, filters="month >= 2", variables=["quality"])
    assert len(written) == 4
    tasks = [t for t in stream.data if "view-update" in str(t["key"])]
    assert len(tasks) == 4  # one per base partition, run by the workers
    assert {t["worker"] for t in tasks} <= set(client.scheduler_info()["workers"])
    got = zc.read_view(view_url).compute()
    m = months(data)
    expected = numpy.where(m >= numpy.datetime64("2024-02"), data["quality"] > 100, -1)
    numpy.testing.assert_array_equal(got["flag"].values, expected.astype("int8"))


def pooled_in_this_process() -> bool:
    """Whether a large read result lands on pooled memory in this process."""
    from dask_zcollection.io._memory import ResultMemory

    return ResultMemory(limit=64 << 20).empty((16 << 20,), numpy.uint8).base is not None


def test_a_worker_never_keeps_read_results_on_pooled_memory(client: Any) -> None:
    """Kept pages would count in a worker's memory: a task's large result is plain numpy."""
    assert client.submit(pooled_in_this_process, pure=False).result() is False
    # The same call on the client (not a worker) does pool it.
    assert pooled_in_this_process() is True
