"""to_dask_array / to_xarray: block expressions, what building them reads, the graph they make.

Building the arrays reads on the client only what sizes the blocks and the
catalog does not tell: nothing for partitions with stats, the axis variable of
the partitions at the ends of a time range, the axis array's metadata of a
listed catalog (row counts unknown). Values are compared with numpy.
"""

from __future__ import annotations

import itertools
from typing import Any

import dask
import dask.array as da
import numpy
import pytest

import dask_zcollection as zc
from dask_zcollection.expr._dask import GraphNode

pytest.register_assert_rewrite("conftest_read")
from conftest_read import (  # noqa: E402
    TaskLog,
    counting_spec,
    is_chunk_key,
    reads,
    reset_reads,
    variable_of_key,
)

pytest_plugins = ["conftest_read"]

from conftest import FIXTURES  # noqa: E402

VARIABLES = ("time", "ssh", "quality", "x_ac", "data_01/ku/power")


@pytest.fixture
def monthly(factory: Any, memory_url: str) -> tuple[str, dict[str, numpy.ndarray]]:
    """Four monthly partitions (Jan-Apr 2024, a row every 12 h, zarr chunks of 4 rows)."""
    col = factory.create(memory_url)
    times = numpy.arange(
        "2024-01-01", "2024-05-01", numpy.timedelta64(12, "h"), dtype="datetime64[ns]"
    )
    data = factory.data(times, seed=5)
    col.insert(data)
    return memory_url, data


def month_of(times: numpy.ndarray) -> numpy.ndarray:
    return times.astype("datetime64[M]")


def partition_of(key: str) -> str:
    return "/".join(p for p in key.split("/") if "=" in p)


def assert_arrays(lazy: zc.LazyCollection, data: dict[str, Any], mask: numpy.ndarray) -> None:
    """Every variable of ``to_xarray`` and ``to_dask_array`` equals the numpy reference."""
    tree = lazy.to_xarray()
    root, ku = tree.to_dataset(), tree["/data_01/ku"].to_dataset()
    for name in VARIABLES:
        expected = data[name] if name == "x_ac" else data[name][mask]
        got = ku["power"] if name == "data_01/ku/power" else root[name]
        # The axis is the index (numpy values); every other variable stays lazy.
        assert isinstance(got.data, numpy.ndarray if name == "time" else da.Array), name
        for values in (got.values, lazy.to_dask_array(name).compute()):
            assert values.dtype == expected.dtype and values.shape == expected.shape, name
            assert numpy.array_equal(values, expected, equal_nan=True), name


@pytest.mark.parametrize("how", ["key filter", "whole partitions time range", "no filter"], ids=str)
def test_building_reads_nothing_when_the_catalog_tells(monthly: tuple[str, Any], how: str) -> None:
    url, data = monthly
    t = data["time"]
    spec = counting_spec(url)
    lazy = zc.read_collection(spec)
    mask = numpy.ones(len(t), dtype=bool)
    if how == "key filter":
        lazy = lazy.filter("month >= 2")
        mask = month_of(t) >= numpy.datetime64("2024-02")
    elif how == "whole partitions time range":
        # Feb and Mar: their [min, max] lie inside the range, by the catalog stats.
        lazy = lazy.filter(time=slice("2024-02-01", "2024-03-31T12"))
        mask = (t >= numpy.datetime64("2024-02-01")) & (t <= numpy.datetime64("2024-03-31T12"))
    assert lazy.catalog.has_stats and (lazy.catalog.rows >= 0).all()
    reset_reads(spec.tag)
    lazy.to_xarray(index=False)
    lazy.to_dask_array("ssh")
    assert reads(spec.tag) == []
    assert_arrays(lazy, data, mask)


@pytest.mark.parametrize(
    ("lo", "hi", "ends"),
    [
        ("2024-01-20T12", "2024-04-02", {"month=01", "month=04"}),
        ("2024-02-10", "2024-03-10", {"month=02", "month=03"}),
        ("2024-02-10T06", "2024-02-12", {"month=02"}),
        ("2024-02-01", "2024-03-10", {"month=03"}),
    ],
)
def test_building_a_time_range_reads_the_axis_of_its_ends(
    monthly: tuple[str, Any], lo: str, hi: str, ends: set[str]
) -> None:
    url, data = monthly
    t = data["time"]
    spec = counting_spec(url)
    lazy = zc.read_collection(spec).filter(time=slice(lo, hi))
    reset_reads(spec.tag)
    lazy.to_xarray(index=False)
    keys = reads(spec.tag)
    assert {variable_of_key(k, VARIABLES) for k in keys} == {"time"}
    assert {partition_of(k).split("/")[-1] for k in keys} == ends
    assert any(is_chunk_key(k) for k in keys)
    mask = (t >= numpy.datetime64(lo)) & (t <= numpy.datetime64(hi))
    assert_arrays(lazy, data, mask)


def test_building_over_a_listed_catalog_reads_only_the_axis_metadata() -> None:
    if not (FIXTURES / "date_monthly" / "_zcollection.json").exists():
        pytest.fail(f"reference fixtures missing from {FIXTURES}")
    with numpy.load(FIXTURES / "date_monthly.expected.npz") as z:
        expected = {k.replace("__", "/"): z[k] for k in z.files}
    spec = counting_spec(f"file://{FIXTURES / 'date_monthly'}")
    lazy = zc.read_collection(spec)
    assert (lazy.catalog.rows == -1).all()  # listed: no row counts
    reset_reads(spec.tag)
    tree = lazy.to_xarray(index=False)
    keys = reads(spec.tag)
    assert sorted(keys) == sorted(f"{p}/time/zarr.json" for p in lazy.partitions)
    root = tree.to_dataset()
    numpy.testing.assert_array_equal(root["time"].values, expected["time"])
    assert numpy.array_equal(root["ssh"].values, expected["ssh"], equal_nan=True)
    power = tree["/data_01/ku"].to_dataset()["power"].values
    assert numpy.array_equal(power, expected["data_01/ku/power"], equal_nan=True)


def test_a_block_reads_its_chunk_of_its_variable(monthly: tuple[str, Any]) -> None:
    url, data = monthly
    t = data["time"]
    spec = counting_spec(url)
    lazy = zc.read_collection(spec).filter(time=slice("2024-01-20T12", "2024-04-02"))
    arr = lazy.to_dask_array("quality")
    reset_reads(spec.tag)
    total = int(arr.astype("int64").sum().compute())
    mask = (t >= numpy.datetime64("2024-01-20T12")) & (t <= numpy.datetime64("2024-04-02"))
    assert total == int(data["quality"][mask].astype("int64").sum())
    chunks = [k for k in reads(spec.tag) if is_chunk_key(k)]
    assert {variable_of_key(k, VARIABLES) for k in reads(spec.tag)} == {"quality"}
    # One block per zarr chunk inside each partition: each chunk read once.
    assert len(chunks) == len(set(chunks)) == arr.numblocks[0]


@pytest.mark.parametrize("how", ["read", "time range", "persisted", "empty persisted"])
@pytest.mark.parametrize("name", ["ssh", "x_ac", "data_01/ku/power"])
def test_dask_array_graph_is_task_spec(monthly: tuple[str, Any], how: str, name: str) -> None:
    url, _ = monthly
    lazy = zc.read_collection(url)
    if how == "time range":
        lazy = lazy.filter(time=slice("2024-01-20T12", "2024-04-02"))
    elif how == "persisted":
        lazy = lazy.filter("month >= 3").persist()
    elif how == "empty persisted":
        lazy = lazy.filter(time=slice("2024-02-10T06", "2024-02-12")).persist().filter(month=4)
        if name == "x_ac":
            with pytest.raises(zc.errors.InvalidInputError, match="no partition selected"):
                lazy.to_dask_array(name)
            return
    arr = lazy.to_dask_array(name)
    if how == "empty persisted":
        assert arr.shape[0] == 0
        return
    assert arr.name.startswith(f"zc-block-{name.replace('/', '.')}-")
    graph = dict(arr.__dask_graph__())
    blocks = [k for k in graph if isinstance(k, tuple) and k[0] == arr.name]
    assert sorted(blocks) == sorted(dask.core.flatten(arr.__dask_keys__()))
    for key, node in graph.items():
        assert isinstance(key, tuple) and key[0].startswith("zc-"), key
        # (A persisted graph also holds the persisted results themselves.)
        if how != "persisted" or key[0] == arr.name:
            assert isinstance(node, GraphNode), (key, node)


def test_persisted_time_range_sizes_blocks_from_the_results(monthly: tuple[str, Any]) -> None:
    # Regression: the blocks took the stored row counts of the catalog (120 rows
    # declared, 59 computed).
    url, data = monthly
    t = data["time"]
    lo, hi = "2024-02-10", "2024-03-10"
    persisted = zc.read_collection(url).filter(time=slice(lo, hi)).persist()
    mask = (t >= numpy.datetime64(lo)) & (t <= numpy.datetime64(hi))
    with TaskLog() as log:
        assert persisted.to_dask_array("ssh").shape == (int(mask.sum()), 3)
        assert_arrays(persisted, data, mask)
    assert log.reads() == []


# -- chunks=: blocks of several whole zarr chunks -------------------------------------------------
def expected_blocks(partition_rows: list[tuple[int, int]], step: int) -> list[int]:
    """Rows of each block: ``[start, stop)`` of each partition split every ``step`` stored rows."""
    sizes = []
    for start, stop in partition_rows:
        edges = sorted({start, stop, *range((start // step + 1) * step, stop, step)})
        sizes += [b - a for a, b in itertools.pairwise(edges)]
    return sizes


@pytest.mark.parametrize(
    ("chunks", "step"),
    [(8, 8), (11, 8), (3, 4), ("120B", 8), ("20B", 4), (10**6, 10**6)],  # ssh: 12 bytes a row
    ids=str,
)
def test_chunks_makes_blocks_of_whole_zarr_chunks(
    monthly: tuple[str, Any], chunks: int | str, step: int
) -> None:
    url, data = monthly
    t = data["time"]
    lo, hi = numpy.datetime64("2024-01-20T12"), numpy.datetime64("2024-04-02")
    spec = counting_spec(url)
    lazy = zc.read_collection(spec).filter(time=slice(lo, hi))
    arr = lazy.to_dask_array("ssh", chunks=chunks)
    mask = (t >= lo) & (t <= hi)
    # Rows kept of each month, counted from the start of its partition (zarr chunks of 4).
    month = month_of(t)
    kept = []
    for m in numpy.unique(month[mask]):
        where = numpy.flatnonzero(month == m)
        inside = numpy.flatnonzero(mask[where])
        kept.append((int(inside[0]), int(inside[-1]) + 1))
    assert arr.chunks[0] == tuple(expected_blocks(kept, step))
    reset_reads(spec.tag)
    assert numpy.array_equal(arr.compute(), data["ssh"][mask], equal_nan=True)
    chunk_keys = [k for k in reads(spec.tag) if is_chunk_key(k)]
    # Each chunk read once, by the one block that holds it.
    assert len(chunk_keys) == len(set(chunk_keys)) == len(expected_blocks(kept, 4))


def test_chunks_of_to_xarray_are_the_same_for_every_variable(monthly: tuple[str, Any]) -> None:
    url, data = monthly
    # A byte size counts the widest row: ssh's 12 bytes (not quality's 1 or power's 8).
    tree = zc.read_collection(url).to_xarray(chunks="100B")
    root, ku = tree.to_dataset(), tree["/data_01/ku"].to_dataset()
    per_month = [int(n) for n in numpy.unique(month_of(data["time"]), return_counts=True)[1]]
    blocks = tuple(expected_blocks([(0, n) for n in per_month], 8))
    assert root.chunks["time"] == blocks
    assert ku["power"].chunks[0] == blocks
    assert numpy.array_equal(root["ssh"].values, data["ssh"], equal_nan=True)
    numpy.testing.assert_array_equal(root["quality"].values, data["quality"])
    numpy.testing.assert_array_equal(ku["power"].values, data["data_01/ku/power"])
    assert float(root["ssh"].mean()) == pytest.approx(float(numpy.nanmean(data["ssh"])), rel=1e-6)


def test_chunks_of_a_persisted_collection_read_nothing(monthly: tuple[str, Any]) -> None:
    url, data = monthly
    persisted = zc.read_collection(url).filter("month >= 2").persist()
    mask = month_of(data["time"]) >= numpy.datetime64("2024-02")
    with TaskLog() as log:
        arr = persisted.to_dask_array("quality", chunks=12)
        assert max(arr.chunks[0]) == 12
        numpy.testing.assert_array_equal(arr.compute(), data["quality"][mask])
    assert log.reads() == []


def test_chunks_from_dask_config(monthly: tuple[str, Any]) -> None:
    url, data = monthly
    lazy = zc.read_collection(url)
    per_month = [int(n) for n in numpy.unique(month_of(data["time"]), return_counts=True)[1]]
    by_chunk = tuple(expected_blocks([(0, n) for n in per_month], 4))
    by_two = tuple(expected_blocks([(0, n) for n in per_month], 8))
    with dask.config.set({"zcollection.array-chunks": "100B"}):  # ssh: 12 bytes, 8 rows
        arr = lazy.to_dask_array("ssh")
        assert arr.chunks[0] == by_two
        assert lazy.to_xarray().to_dataset()["ssh"].chunks[0] == by_two
        assert lazy.to_dask_array("ssh", chunks=4).chunks[0] == by_chunk  # the argument wins
    assert lazy.to_dask_array("ssh").chunks[0] == by_chunk
    assert numpy.array_equal(arr.compute(), data["ssh"], equal_nan=True)


@pytest.mark.parametrize("chunks", [0, -4, True, 2.5, "many", "-1MiB", "0B"], ids=str)
def test_chunks_refuses_what_is_not_a_size(monthly: tuple[str, Any], chunks: Any) -> None:
    url, _ = monthly
    lazy = zc.read_collection(url)
    with pytest.raises(zc.errors.InvalidInputError, match="chunks="):
        lazy.to_dask_array("ssh", chunks=chunks)
    with pytest.raises(zc.errors.InvalidInputError, match="chunks="):
        lazy.to_xarray(chunks=chunks)


_ARRAY_EXPR_SCRIPT = """
import sys
import dask.array as da
import numpy
import dask_zcollection as zc
from conftest import Factory

assert da.array_expr_enabled()
factory = Factory()
url = "memory://array-expr"
times = numpy.arange("2024-01-01", "2024-03-01", numpy.timedelta64(12, "h"), dtype="M8[ns]")
data = factory.data(times, seed=1)
factory.create(url).insert(data)
lo, hi = numpy.datetime64("2024-01-10"), numpy.datetime64("2024-02-10T12")
mask = (times >= lo) & (times <= hi)
lazy = zc.read_collection(url).filter(time=slice(lo, hi))
for collection in (lazy, lazy.persist()):
    ssh = collection.to_dask_array("ssh")
    assert type(ssh) is da.Array and ssh.name.startswith("zc-block-ssh-"), ssh.name
    assert numpy.array_equal(ssh.compute(), data["ssh"][mask], equal_nan=True)
    total = collection.to_dask_array("quality").astype("int64").sum().compute()
    assert int(total) == int(data["quality"][mask].astype("int64").sum())
    assert numpy.array_equal(collection.to_dask_array("x_ac").compute(), data["x_ac"])
    # xarray takes array-expression arrays for objects: a clear error, not object arrays.
    try:
        collection.to_xarray()
    except zc.errors.InvalidInputError as err:
        assert "array.query-planning" in str(err)
    else:
        raise AssertionError("to_xarray built object arrays")
print("ok")
"""


def test_to_dask_array_with_dask_array_expressions() -> None:
    # dask 2026.8 builds arrays from expressions when ``array.query-planning`` is
    # on (read once, at import: hence a fresh interpreter).
    import os
    import subprocess
    import sys
    from pathlib import Path

    tests = Path(__file__).parent
    env = {
        **os.environ,
        "DASK_ARRAY__QUERY_PLANNING": "True",
        "PYTHONPATH": os.pathsep.join([str(tests.parent), str(tests)]),
    }
    out = subprocess.run(
        [sys.executable, "-c", _ARRAY_EXPR_SCRIPT],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    assert out.stdout.strip() == "ok"
