"""LazyCollection: time ranges, projection, persist, interop (array, xarray, dataframe), reprs."""

from __future__ import annotations

import datetime
import pickle
import shutil
import uuid
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import dask
import dask.array as da
import numpy
import pandas
import pytest

import dask_zcollection as zc
from dask_zcollection.errors import FilterError, VariableNotFoundError
from dask_zcollection.store import MemoryStore

pytest.register_assert_rewrite("conftest_read")
from conftest_read import (  # noqa: E402
    TaskLog,
    assert_columns,
    counting_spec,
    is_chunk_key,
    make_rows,
    populate,
    reads,
    reference_order,
    reset_reads,
    take_rows,
    variable_of_key,
)

pytest_plugins = ["conftest_read"]

from conftest import FIXTURES  # noqa: E402

CHUNKS = 4


def rows_where(data: Mapping[str, numpy.ndarray], mask: numpy.ndarray) -> dict[str, numpy.ndarray]:
    """``data`` (sorted by time) restricted to the rows of ``mask`` (immutable ``x_ac`` kept)."""
    return {k: (v if k == "x_ac" else v[mask]) for k, v in data.items()}


def month_of(times: numpy.ndarray) -> numpy.ndarray:
    return times.astype("datetime64[M]")


@pytest.fixture
def monthly(factory: Any, store_url: str) -> tuple[str, dict[str, numpy.ndarray]]:
    """Four monthly partitions (Jan-Apr 2024, one row every 12 h), inserted out of order.

    Returns the URL and the data sorted by time (what a full read gives).
    """
    col = factory.create(store_url)
    times = numpy.arange(
        "2024-01-01", "2024-05-01", numpy.timedelta64(12, "h"), dtype="datetime64[ns]"
    )
    data = factory.data(times, seed=3)
    order = numpy.random.default_rng(1).permutation(len(times))
    col.insert({k: (v if k == "x_ac" else v[order]) for k, v in data.items()})
    return store_url, data


# -- time ranges -------------------------------------------------------------------------------
def _bound(v: Any) -> Any:
    return None if v is None else numpy.datetime64(v, "ns")


TIME_RANGES = {
    "partition-edges": ("2024-02-01", "2024-03-01"),
    "one-partition-min-max": ("2024-02-01T00:00", "2024-02-29T12:00"),
    "inside-one": ("2024-02-10T06", "2024-02-12"),
    "several": ("2024-01-20T12", "2024-04-02"),
    "one-row": ("2024-02-10T12", "2024-02-10T12"),
    "open-start": (None, "2024-01-05"),
    "open-stop": ("2024-04-25", None),
    "nanosecond-inside": ("2024-03-03T12:00:00.000000001", "2024-03-09T11:59:59.999999999"),
    "numpy-and-datetime": (numpy.datetime64("2024-03-03T12"), datetime.datetime(2024, 3, 9)),
}


@pytest.mark.parametrize("case", sorted(TIME_RANGES))
def test_time_range_equals_numpy_slicing(monthly: tuple[str, Any], case: str) -> None:
    url, data = monthly
    lo, hi = TIME_RANGES[case]
    t = data["time"]
    mask = numpy.ones(len(t), dtype=bool)
    if lo is not None:
        mask &= t >= _bound(lo)
    if hi is not None:
        mask &= t <= _bound(hi)
    assert mask.any()
    lazy = zc.read_collection(url).filter(time=slice(lo, hi))
    assert_columns(lazy.compute(), rows_where(data, mask), case)

    # Partitions pruned with the catalog stats: those whose [min, max] meets [lo, hi].
    months = month_of(t)
    expected_parts = 0
    for m in numpy.unique(months):
        tm = t[months == m]
        if (lo is None or tm.max() >= _bound(lo)) and (hi is None or tm.min() <= _bound(hi)):
            expected_parts += 1
    assert lazy.npartitions == expected_parts

    # Per-partition pieces are trimmed the same way.
    parts = dask.compute(*lazy.to_delayed())
    numpy.testing.assert_array_equal(numpy.concatenate([p["time"].values for p in parts]), t[mask])
    # And so are dask arrays built from the selection.
    numpy.testing.assert_array_equal(lazy.to_dask_array("quality").compute(), data["quality"][mask])


def test_scalar_time_filter_selects_one_row(monthly: tuple[str, Any]) -> None:
    url, data = monthly
    got = zc.read_collection(url).filter(time="2024-03-15T12:00").compute()
    assert_columns(got, rows_where(data, data["time"] == numpy.datetime64("2024-03-15T12:00")))


def test_time_range_combined_with_key_filter_and_chained(monthly: tuple[str, Any]) -> None:
    url, data = monthly
    t = data["time"]
    lazy = zc.read_collection(url)
    got = lazy.filter("month == 2", time=slice("2024-01-15", "2024-02-05")).compute()
    mask = (month_of(t) == numpy.datetime64("2024-02")) & (t <= numpy.datetime64("2024-02-05"))
    assert_columns(got, rows_where(data, mask))
    # Two time filters intersect.
    chained = lazy.filter(time=slice("2024-01-15", "2024-03-10")).filter(
        time=slice("2024-02-20", None)
    )
    mask = (t >= numpy.datetime64("2024-02-20")) & (t <= numpy.datetime64("2024-03-10"))
    assert_columns(chained.compute(), rows_where(data, mask))
    assert chained.npartitions == 2


EMPTY_RANGES = {
    # name: (lo, hi, partitions selected by the stats)
    "before-data": ("2023-01-01", "2023-06-01", 0),
    "after-data": ("2025-01-01", None, 0),
    "gap-between-partitions": ("2024-01-31T13", "2024-01-31T23", 0),
    "between-two-rows": ("2024-02-10T01", "2024-02-10T11", 1),
    "reversed": ("2024-03-01", "2024-02-01", 0),
}


@pytest.mark.parametrize("case", sorted(EMPTY_RANGES))
def test_empty_time_range_computes_to_none(monthly: tuple[str, Any], case: str) -> None:
    """No row selected -> ``None``: stats pruned every partition, or trimming emptied them."""
    url, _ = monthly
    lo, hi, nparts = EMPTY_RANGES[case]
    lazy = zc.read_collection(url).filter(time=slice(lo, hi))
    assert lazy.npartitions == nparts
    assert lazy.compute() is None
    assert lazy.persist().compute() is None
    assert lazy["ssh"].compute() is None
    (again,) = dask.compute(lazy)
    assert again is None
    pieces = dask.compute(*lazy.to_delayed())
    assert len(pieces) == nparts
    assert all(p["time"].values.size == 0 for p in pieces)
    assert lazy.to_dask_array("ssh").shape == (0, 3)


def test_empty_key_filter_computes_to_none(monthly: tuple[str, Any]) -> None:
    url, data = monthly
    lazy = zc.read_collection(url).filter("year == 1999")
    assert lazy.npartitions == 0
    assert lazy.partitions == []
    assert lazy.compute() is None
    assert lazy.to_delayed() == []
    # The immutable variable does not depend on partitions.
    numpy.testing.assert_array_equal(lazy.to_dask_array("x_ac").compute(), data["x_ac"])
    assert lazy.to_dask_array("ssh").compute().shape == (0, 3)


@pytest.fixture(params=["cf-hours", "ns-since-epoch"])
def int_axis(
    request: pytest.FixtureRequest, memory_name: str
) -> tuple[str, numpy.ndarray, numpy.ndarray]:
    """A collection with an int64 axis (CF ``hours since 2000-01-01``, or ns since the epoch)."""
    hourly = numpy.arange(
        "2024-01-01", "2024-03-16", numpy.timedelta64(1, "h"), dtype="datetime64[ns]"
    )
    if request.param == "cf-hours":
        attrs = {"units": "hours since 2000-01-01"}
        values = (
            (hourly - numpy.datetime64("2000-01-01", "ns")) // numpy.timedelta64(1, "h")
        ).astype("int64")
    else:
        attrs = {}
        values = hourly.astype("int64")
    schema = (
        zc.Schema()
        .with_dimension("time", chunks=7)
        .with_variable("time", dtype="int64", dimensions=("time",), attrs=attrs)
        .with_variable("v", dtype="float64", dimensions=("time",))
        .build()
    )
    url = f"memory://{memory_name}"
    col = zc.create_collection(
        url,
        schema=schema,
        axis="time",
        partitioning=zc.partitioning.Date(("time",), resolution="M"),
    )
    col.insert({"time": values, "v": numpy.arange(len(values), dtype="float64")})
    return url, values, hourly


def test_int64_axis_time_ranges(int_axis: tuple[str, numpy.ndarray, numpy.ndarray]) -> None:
    url, values, hourly = int_axis
    lazy = zc.read_collection(url)
    assert lazy.partitions == ["year=2024/month=01", "year=2024/month=02", "year=2024/month=03"]
    # Datetime strings; bounds between two stored hours round inwards (inclusive range).
    for lo, hi in [
        ("2024-02-03T01:30", "2024-02-05T04:30"),
        ("2024-02-01", "2024-03-01"),
        ("2024-01-31T23:59:59", "2024-01-31T23:59:59"),
    ]:
        mask = (hourly >= numpy.datetime64(lo)) & (hourly <= numpy.datetime64(hi))
        got = lazy.filter(time=slice(lo, hi)).compute()
        if not mask.any():
            assert got is None
            continue
        numpy.testing.assert_array_equal(got["time"].values, values[mask])
        numpy.testing.assert_array_equal(got["v"].values, numpy.flatnonzero(mask).astype("float64"))
    # Raw integers of the stored unit.
    lo, hi = int(values[100]), int(values[900])
    got = lazy.filter(time=slice(lo, hi)).compute()
    numpy.testing.assert_array_equal(got["time"].values, values[100:901])
    assert lazy.filter(time=slice(lo, hi)).npartitions == 2


# -- projection --------------------------------------------------------------------------------
def test_projection_on_file_store_reads_only_requested_arrays(monthly: tuple[str, Any]) -> None:
    url, data = monthly
    spec = counting_spec(url)
    lazy = zc.read_collection(spec)
    variables = list(lazy.variables)
    for sel, wanted in [(lazy["ssh"], {"ssh"}), (lazy[["time", "ssh"]], {"time", "ssh"})]:
        reset_reads(spec.tag)
        out = sel.filter("month >= 2").compute()
        touched = {variable_of_key(k, variables) for k in reads(spec.tag)} - {None}
        assert touched == wanted
        mask = month_of(data["time"]) >= numpy.datetime64("2024-02")
        for w in wanted:
            numpy.testing.assert_array_equal(out[w].values, data[w][mask])
    # A projected time range reads the axis (to trim) but returns only what was asked.
    reset_reads(spec.tag)
    out = lazy["ssh"].filter(time=slice("2024-02-10", "2024-03-10")).compute()
    assert [p for p, _ in out.walk()] == ["ssh"]
    touched = {variable_of_key(k, variables) for k in reads(spec.tag)} - {None}
    assert touched == {"ssh", "time"}
    mask = (data["time"] >= numpy.datetime64("2024-02-10")) & (
        data["time"] <= numpy.datetime64("2024-03-10")
    )
    assert_columns(out, {"ssh": data["ssh"][mask]})


def test_projection_errors(monthly: tuple[str, Any]) -> None:
    url, _ = monthly
    lazy = zc.read_collection(url)
    with pytest.raises(VariableNotFoundError, match="nope"):
        lazy["nope"]
    with pytest.raises(VariableNotFoundError, match="projected away"):
        lazy["ssh"]["quality"]
    with pytest.raises(VariableNotFoundError):
        zc.read_collection(url, variables=["nope"])
    with pytest.raises(FilterError, match="ssh"):
        lazy.filter(ssh=1)
    with pytest.raises(FilterError):
        lazy.filter(time=slice("2024-01-01", "2024-02-01", 2))
    with pytest.raises(FilterError):
        lazy.filter("month == ")


def test_read_collection_variables_argument(monthly: tuple[str, Any]) -> None:
    url, data = monthly
    lazy = zc.read_collection(url, variables=["/data_01/ku/power", "time"])
    assert lazy.variables == ("time", "data_01/ku/power")
    assert_columns(
        lazy.compute(), {"time": data["time"], "data_01/ku/power": data["data_01/ku/power"]}
    )


# -- persist, to_delayed -----------------------------------------------------------------------
def test_persist_then_filter(monthly: tuple[str, Any]) -> None:
    url, data = monthly
    t = data["time"]
    persisted = zc.read_collection(url).filter("month >= 2").persist()
    assert persisted.npartitions == 3
    assert persisted.partitions == [
        "year=2024/month=02",
        "year=2024/month=03",
        "year=2024/month=04",
    ]
    assert "Persisted 3 of 4 partitions" in persisted.explain()
    with TaskLog() as log:
        got = persisted.filter(month=3).compute()
        ranged = persisted.filter(time=slice("2024-02-27", "2024-03-02T12")).compute()
        ssh = persisted["ssh"].compute()
        mapped = persisted.map_partitions(_add_one).compute()
    assert log.reads() == []  # nothing read again
    assert_columns(got, rows_where(data, month_of(t) == numpy.datetime64("2024-03")))
    mask = (t >= numpy.datetime64("2024-02-27")) & (t <= numpy.datetime64("2024-03-02T12"))
    assert_columns(ranged, rows_where(data, mask))
    keep = month_of(t) >= numpy.datetime64("2024-02")
    assert_columns(ssh, {"ssh": data["ssh"][keep]})
    numpy.testing.assert_array_equal(mapped["quality"].values, data["quality"][keep] + 1)
    pieces = dask.compute(*persisted.to_delayed())
    assert [len(p["time"].values) for p in pieces] == [58, 62, 60]
    numpy.testing.assert_array_equal(persisted.to_dask_array("ssh").compute(), data["ssh"][keep])
    # A persisted collection persists again.
    twice = persisted.persist()
    assert_columns(twice.compute(), rows_where(data, keep))
    # A key filter on a persisted collection stays persisted: interop keeps working.
    march = persisted.filter(month=3)
    assert "Persisted 1 of 4 partitions" in march.explain()
    mar = month_of(t) == numpy.datetime64("2024-03")
    with TaskLog() as log:
        tree = march.to_xarray()
        numpy.testing.assert_array_equal(tree.to_dataset()["time"].values, t[mar])
    assert log.reads() == []
    with TaskLog() as log:  # frames of the persisted partitions: nothing read again
        frame = march.to_dask_dataframe(["time", "quality"]).compute()
    assert log.reads() == []
    numpy.testing.assert_array_equal(frame["quality"].values, data["quality"][mar])
    numpy.testing.assert_array_equal(frame.index.values, t[mar])
    # Persisted after a time range: the frame holds the trimmed rows (it re-read the
    # whole partitions from the store: 120 rows for 59).
    lo, hi = numpy.datetime64("2024-02-10"), numpy.datetime64("2024-03-10")
    trimmed = zc.read_collection(url).filter(time=slice(str(lo), str(hi))).persist()
    frame = trimmed.to_dask_dataframe(["time", "quality"]).compute()
    inside = (t >= lo) & (t <= hi)
    numpy.testing.assert_array_equal(frame.index.values, t[inside])
    numpy.testing.assert_array_equal(frame["quality"].values, data["quality"][inside])
    assert march.filter(month=2).compute() is None


def test_time_filter_needs_the_axis_of_a_persisted_collection(monthly: tuple[str, Any]) -> None:
    url, data = monthly
    lazy = zc.read_collection(url)
    # Before persist, a projection without the axis still filters on it (the read trims).
    got = lazy["ssh"].filter(time=slice("2024-02-01", "2024-02-02")).compute()
    t = data["time"]
    mask = (t >= numpy.datetime64("2024-02-01")) & (t <= numpy.datetime64("2024-02-02"))
    assert_columns(got, {"ssh": data["ssh"][mask]})
    # After persist, the rows to trim cannot be found: a clear error, at once.
    with pytest.raises(FilterError, match="persist"):
        lazy["ssh"].persist().filter(time=slice("2024-02-01", "2024-02-02"))
    # With the axis persisted, it works.
    both = lazy[["time", "ssh"]].persist().filter(time=slice("2024-02-01", "2024-02-02"))
    assert_columns(both.compute(), {"time": t[mask], "ssh": data["ssh"][mask]})


def _add_one(ds: zc.Dataset) -> zc.Dataset:
    return ds.with_variables({"quality": ds["quality"].with_data(ds["quality"].values + 1)})


def test_to_delayed_one_per_partition(monthly: tuple[str, Any]) -> None:
    url, data = monthly
    lazy = zc.read_collection(url)
    delayed = lazy.to_delayed()
    assert len(delayed) == lazy.npartitions == 4
    pieces = dask.compute(*delayed)
    months = month_of(data["time"])
    for piece, month in zip(pieces, numpy.unique(months), strict=True):
        assert_columns(piece, rows_where(data, months == month), str(month))
    # One piece computes alone.
    assert_columns(delayed[2].compute(), rows_where(data, months == numpy.datetime64("2024-03")))


# -- to_dask_array -----------------------------------------------------------------------------
@pytest.mark.parametrize(
    "time_range", [None, ("2024-01-03T12", "2024-03-20"), ("2024-02-05T12", "2024-02-06")]
)
def test_to_dask_array_chunks_follow_partitions_and_zarr_chunks(
    monthly: tuple[str, Any], time_range: tuple[str, str] | None
) -> None:
    url, data = monthly
    t = data["time"]
    lazy = zc.read_collection(url)
    mask = numpy.ones(len(t), dtype=bool)
    if time_range is not None:
        lazy = lazy.filter(time=slice(*time_range))
        mask = (t >= numpy.datetime64(time_range[0])) & (t <= numpy.datetime64(time_range[1]))
    arr = lazy.to_dask_array("ssh")
    assert isinstance(arr, da.Array)
    assert arr.chunks[1] == (3,)
    # Allowed boundaries: partition edges, and zarr chunk edges of each stored partition.
    months = month_of(t)
    allowed = {0}
    offset = 0
    for m in numpy.unique(months[mask]):
        rows = numpy.flatnonzero(months == m)  # stored rows of the partition
        kept = numpy.flatnonzero(mask[rows])  # their positions kept by the range
        start, stop = int(kept[0]), int(kept[-1]) + 1
        allowed |= {
            offset + (k - start) for k in range(0, len(rows) + CHUNKS, CHUNKS) if start < k < stop
        }
        offset += stop - start
        allowed.add(offset)
    edges = set(numpy.cumsum((0, *arr.chunks[0])).tolist())
    assert edges <= allowed, sorted(edges - allowed)
    assert max(arr.chunks[0]) <= CHUNKS
    assert_equal_nan(arr.compute(), data["ssh"][mask])
    numpy.testing.assert_array_equal(lazy.to_dask_array("time").compute(), t[mask])
    assert_equal_nan(
        lazy.to_dask_array("data_01/ku/power").compute(), data["data_01/ku/power"][mask]
    )
    numpy.testing.assert_array_equal(lazy.to_dask_array("x_ac").compute(), data["x_ac"])


def assert_equal_nan(got: numpy.ndarray, expected: numpy.ndarray) -> None:
    assert got.dtype == expected.dtype and got.shape == expected.shape
    assert numpy.array_equal(got, expected, equal_nan=True)


# -- to_xarray ---------------------------------------------------------------------------------
def test_to_xarray_is_lazy_and_equal(monthly: tuple[str, Any]) -> None:
    import xarray

    url, data = monthly
    spec = counting_spec(url)
    lazy = zc.read_collection(spec)
    reset_reads(spec.tag)
    unindexed = lazy.to_xarray(index=False)
    assert not [k for k in reads(spec.tag) if is_chunk_key(k)], "building to_xarray read data"
    assert isinstance(unindexed.to_dataset()["time"].data, da.Array)
    assert "time" not in unindexed.to_dataset().xindexes
    tree = lazy.to_xarray()
    # The index reads the axis variable, nothing else.
    built = {variable_of_key(k, lazy.variables) for k in reads(spec.tag) if is_chunk_key(k)}
    assert built == {"time"}
    assert isinstance(tree, xarray.DataTree)
    root = tree.to_dataset()
    assert "time" in root.xindexes
    for name in ("ssh", "quality"):
        assert isinstance(root[name].data, da.Array), name
    power = tree["/data_01/ku"].to_dataset()["power"]
    assert isinstance(power.data, da.Array)
    assert tree["/data_01/ku"].attrs.get("band") == "Ku"
    assert root.attrs["title"] == "test collection"
    assert root["ssh"].attrs["units"] == "m"
    numpy.testing.assert_array_equal(root["time"].values, data["time"])
    assert_equal_nan(root["ssh"].values, data["ssh"])
    numpy.testing.assert_array_equal(root["x_ac"].values, data["x_ac"])
    assert_equal_nan(power.values, data["data_01/ku/power"])
    assert int(root["quality"].sum().compute()) == int(data["quality"].astype("int64").sum())

    # A time range reads only the axis of the boundary partitions while building.
    reset_reads(spec.tag)
    ranged = lazy.filter(time=slice("2024-02-10", "2024-03-10")).to_xarray(index=False)
    built = [variable_of_key(k, lazy.variables) for k in reads(spec.tag) if is_chunk_key(k)]
    assert set(built) <= {"time"}
    mask = (data["time"] >= numpy.datetime64("2024-02-10")) & (
        data["time"] <= numpy.datetime64("2024-03-10")
    )
    assert_equal_nan(ranged.to_dataset()["ssh"].values, data["ssh"][mask])


def test_to_xarray_flat_dataset(factory: Any, memory_name: str) -> None:
    import xarray

    url = f"memory://{memory_name}"
    col = factory.create(url, nested=False)
    times = numpy.arange(
        "2024-01-01", "2024-03-01", numpy.timedelta64(1, "D"), dtype="datetime64[ns]"
    )
    data = factory.data(times, nested=False)
    col.insert(data)
    ds = zc.read_collection(url).filter(month=2).to_xarray()
    assert isinstance(ds, xarray.Dataset)
    feb = month_of(times) == numpy.datetime64("2024-02")
    numpy.testing.assert_array_equal(ds["time"].values, times[feb])
    assert_equal_nan(ds["ssh"].values, data["ssh"][feb])
    numpy.testing.assert_array_equal(ds["quality"].values, data["quality"][feb])


# -- to_dask_dataframe -------------------------------------------------------------------------
def test_to_dask_dataframe_divisions_and_loc_pruning(monthly: tuple[str, Any]) -> None:
    url, data = monthly
    t = data["time"]
    df = zc.read_collection(url).to_dask_dataframe(["time", "quality"])
    months = month_of(t)
    starts = [pandas.Timestamp(t[months == m].min()) for m in numpy.unique(months)]
    assert df.npartitions == 4
    assert df.divisions == (*starts, pandas.Timestamp(t.max()))
    frame = df.compute()
    numpy.testing.assert_array_equal(frame.index.values, t)
    numpy.testing.assert_array_equal(frame["quality"].values, data["quality"])
    sub = df.loc["2024-02-10":"2024-03-05"]
    assert sub.npartitions == 2
    got = sub.compute()
    mask = (t >= numpy.datetime64("2024-02-10")) & (
        t <= numpy.datetime64("2024-03-05T23:59:59.999999999")
    )
    numpy.testing.assert_array_equal(got.index.values, t[mask])
    numpy.testing.assert_array_equal(got["quality"].values, data["quality"][mask])


def test_to_dask_dataframe_of_a_filtered_selection(monthly: tuple[str, Any]) -> None:
    url, data = monthly
    t = data["time"]
    lazy = zc.read_collection(url).filter(time=slice("2024-01-20", "2024-02-10"))
    df = lazy.to_dask_dataframe(["time", "quality"])
    assert df.npartitions == 2
    assert df.divisions == (
        pandas.Timestamp("2024-01-20"),
        pandas.Timestamp("2024-02-01"),
        pandas.Timestamp("2024-02-10"),
    )
    mask = (t >= numpy.datetime64("2024-01-20")) & (t <= numpy.datetime64("2024-02-10"))
    frame = df.compute()
    numpy.testing.assert_array_equal(frame.index.values, t[mask])
    numpy.testing.assert_array_equal(frame["quality"].values, data["quality"][mask])
    # Without the axis among the columns: a plain frame, no index.
    plain = zc.read_collection(url).filter(month=4).to_dask_dataframe(["quality"]).compute()
    numpy.testing.assert_array_equal(
        plain["quality"].values, data["quality"][month_of(t) == numpy.datetime64("2024-04")]
    )


# -- introspection -----------------------------------------------------------------------------
def test_partitions_are_in_numeric_key_order(memory_name: str) -> None:
    rows = make_rows("sequence", 60, seed=5)
    rows["pass_number"] = (rows["pass_number"] % 3 + 1).astype("int32")
    url = f"memory://{memory_name}"
    populate(url, "sequence", rows)
    lazy = zc.read_collection(url)
    cycles = [int(p.split("/")[0].split("=")[1]) for p in lazy.partitions]
    assert cycles == sorted(cycles)
    assert sorted(set(cycles)) == [1, 2, 10, 11]
    assert lazy.filter("cycle_number >= 2").partitions[0].startswith("cycle_number=2/")
    assert_columns(lazy.compute(), take_rows(rows, reference_order("sequence", rows)))


def test_explain_repr_and_sizes(monthly: tuple[str, Any]) -> None:
    url, data = monthly
    lazy = zc.read_collection(url)
    sel = lazy.filter("month >= 3")
    text = sel.explain()
    assert text.startswith("LazyCollection: 2 partition(s) selected of 4")
    assert "2 of 4 partitions" in text
    assert "absorbed filter: month >= 3" in text
    n_rows = int((month_of(data["time"]) >= numpy.datetime64("2024-03")).sum())
    assert n_rows == 62 + 60
    assert f"rows: {n_rows}" in text
    r = repr(sel)
    assert url in r or url.replace("memory://", "") in r
    assert "Date(('time',), resolution='M')" in r
    assert "2 selected of 4" in r
    assert "time, ssh, quality, x_ac, data_01/ku/power" in r
    assert "2 selected of 4" in sel._repr_html_()  # tests/test_display.py checks the rest
    # nbytes is the size of what compute returns.
    assert sel.nbytes == sel.compute().nbytes
    assert lazy["ssh"].nbytes == data["ssh"].nbytes
    assert lazy.variables == ("time", "ssh", "quality", "x_ac", "data_01/ku/power")
    assert lazy[["ssh", "time"]].variables == ("time", "ssh")
    assert sel.catalog.rows.tolist() == [62, 60]


def test_visualize_needs_graphviz(monthly: tuple[str, Any], tmp_path: Path) -> None:
    url, _ = monthly
    lazy = zc.read_collection(url).filter(month=1)
    try:
        import graphviz  # noqa: F401
    except ImportError:
        with pytest.raises(ImportError, match=r"dask_zcollection\[graphviz\]"):
            lazy.visualize(filename=str(tmp_path / "g"), format="png")
        return
    if shutil.which("dot") is None:
        with pytest.raises(ImportError, match="Graphviz's dot program"):
            lazy.visualize(filename=str(tmp_path / "g"), format="png")
        return
    lazy.visualize(filename=str(tmp_path / "g"), format="png")
    assert (tmp_path / "g.png").read_bytes().startswith(b"\x89PNG")


def test_lazy_collection_pickles(monthly: tuple[str, Any]) -> None:
    url, data = monthly
    lazy = zc.read_collection(url).filter("month == 1")[["time", "quality"]]
    again = pickle.loads(pickle.dumps(lazy))
    assert again.npartitions == 1
    jan = month_of(data["time"]) == numpy.datetime64("2024-01")
    assert_columns(again.compute(), {"time": data["time"][jan], "quality": data["quality"][jan]})


# -- reference fixtures ------------------------------------------------------------------------
def _npz(name: str) -> dict[str, numpy.ndarray]:
    with numpy.load(FIXTURES / f"{name}.expected.npz") as z:
        return {k.replace("__", "/"): z[k] for k in z.files}


@pytest.fixture
def reference() -> Path:
    if not (FIXTURES / "date_monthly" / "_zcollection.json").exists():
        pytest.fail(f"reference fixtures missing from {FIXTURES}")
    return FIXTURES


def test_fixture_date_monthly_through_the_lazy_path(reference: Path) -> None:
    expected = _npz("date_monthly")
    lazy = zc.read_collection(f"file://{reference / 'date_monthly'}")
    assert lazy.partitions == [f"year=2024/month=0{m}" for m in range(1, 5)]
    assert_columns(lazy.compute(), expected, "date_monthly")
    t = expected["time"]
    # Filters and time ranges (this catalog has no stats: rows are trimmed after reading).
    mar = month_of(t) == numpy.datetime64("2024-03")
    assert_columns(lazy.filter("month == 3").compute(), rows_where(expected, mar))
    lo, hi = t[100], t[2000]
    got = lazy.filter(time=slice(lo, hi)).compute()
    assert_columns(got, rows_where(expected, (t >= lo) & (t <= hi)))
    tree = lazy.to_xarray()
    assert_equal_nan(tree.to_dataset()["ssh"].values, expected["ssh"])
    assert_equal_nan(tree["/data_01/ku"].to_dataset()["power"].values, expected["data_01/ku/power"])
    numpy.testing.assert_array_equal(lazy.to_dask_array("x_ac").compute(), expected["x_ac"])
    pieces = dask.compute(*lazy.to_delayed())
    numpy.testing.assert_array_equal(numpy.concatenate([p["time"].values for p in pieces]), t)


def test_fixture_sequence_through_the_lazy_path(reference: Path) -> None:
    expected = _npz("sequence")
    lazy = zc.read_collection(f"file://{reference / 'sequence'}")
    assert lazy.partitions == [
        f"cycle_number={c}/pass_number={p}" for c in (1, 2, 10) for p in (1, 2, 3)
    ]
    assert_columns(lazy.compute(), expected, "sequence")
    ten = expected["cycle_number"] == 10
    got = lazy.filter("cycle_number == 10 and pass_number != 2").compute()
    assert_columns(got, {k: v[ten & (expected["pass_number"] != 2)] for k, v in expected.items()})
    assert lazy.filter({"cycle_number": [2, 10]}).npartitions == 6
    numpy.testing.assert_array_equal(lazy.to_dask_array("swh").compute(), expected["swh"])
    sub = lazy[["cycle_number", "swh"]].filter(cycle_number=2).compute()
    two = expected["cycle_number"] == 2
    assert_columns(
        sub, {"cycle_number": expected["cycle_number"][two], "swh": expected["swh"][two]}
    )


def test_memory_collections_are_independent(factory: Any) -> None:
    # Two memory collections with the same schema never share cached I/O objects.
    names = [f"ind-{uuid.uuid4().hex}" for _ in range(2)]
    try:
        for i, name in enumerate(names):
            col = factory.create(f"memory://{name}", nested=False, immutable=False)
            col.insert(
                factory.data(
                    factory.times("2024-01-01", "2024-01-02"), seed=i, nested=False, immutable=False
                )
            )
        a, b = (zc.read_collection(f"memory://{n}").compute() for n in names)
        assert not numpy.array_equal(a["quality"].values, b["quality"].values)
    finally:
        for name in names:
            MemoryStore.forget(name)
