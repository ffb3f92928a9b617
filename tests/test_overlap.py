"""map_overlap: each partition sees its neighbours' rows; equals numpy over the whole array."""

from __future__ import annotations

import itertools
from typing import Any

import numpy
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import dask_zcollection as zc
from dask_zcollection.errors import InvalidInputError
from dask_zcollection.store import MemoryStore

pytest.register_assert_rewrite("conftest_read")
from conftest_read import counting_spec, is_chunk_key, reads, reset_reads  # noqa: E402

pytest_plugins = ["conftest_read"]

CHUNK = 3
_names = itertools.count()


def schema() -> zc.Schema:
    return (
        zc.Schema()
        .with_dimension("time", chunks=CHUNK)
        .with_variable("time", dtype="datetime64[ns]", dimensions=("time",))
        .with_variable("v", dtype="int64", dimensions=("time",))
        .build()
    )


def collection(url: str, sizes: list[int]) -> numpy.ndarray:
    """Month ``m + 1`` of 2024 holds ``sizes[m]`` rows, a day apart; ``v`` is random."""
    col = zc.create_collection(
        url, schema=schema(), axis="time", partitioning=zc.partitioning.Date(("time",), "M")
    )
    times = numpy.concatenate(
        [
            numpy.datetime64(f"2024-{m + 1:02d}-01", "ns")
            + numpy.arange(n) * numpy.timedelta64(1, "D")
            for m, n in enumerate(sizes)
        ]
    ).astype("datetime64[ns]")
    values = numpy.random.default_rng(len(times)).integers(-50, 50, len(times))
    if len(times):
        col.insert({"time": times, "v": values})
    return values


def moving_sum(ds: zc.Dataset, depth: int) -> zc.Dataset:
    """Sum of ``v`` over the rows within ``depth`` of each row (module level: picklable)."""
    x = ds["v"].values  # type: ignore[union-attr]
    c = numpy.concatenate([[0], numpy.cumsum(x)])
    i = numpy.arange(len(x))
    out = c[numpy.minimum(i + depth + 1, len(x))] - c[numpy.maximum(i - depth, 0)]
    return ds.with_variables({"v": ds["v"].with_data(out)})


def reference(values: numpy.ndarray, depth: int, constant: int | None) -> numpy.ndarray:
    """The moving sum over the whole array (padded with ``constant`` beyond its ends)."""
    if constant is None:
        x = values
        c = numpy.concatenate([[0], numpy.cumsum(x)])
        i = numpy.arange(len(x))
        return c[numpy.minimum(i + depth + 1, len(x))] - c[numpy.maximum(i - depth, 0)]
    padded = numpy.concatenate([numpy.full(depth, constant), values, numpy.full(depth, constant)])
    c = numpy.concatenate([[0], numpy.cumsum(padded)])
    i = numpy.arange(len(values)) + depth
    return c[i + depth + 1] - c[i - depth]


@settings(
    max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    sizes=st.lists(st.integers(0, 8), min_size=1, max_size=6),
    depth=st.integers(0, 12),
    constant=st.one_of(st.none(), st.integers(-5, 5)),
    keep=st.lists(st.booleans(), min_size=6, max_size=6),
)
def test_map_overlap_equals_numpy_over_the_whole_array(
    sizes: list[int], depth: int, constant: int | None, keep: list[bool]
) -> None:
    name = f"overlap-{next(_names)}"
    url = f"memory://{name}"
    try:
        values = collection(url, sizes)
        if not len(values):
            return
        months = [m + 1 for m, n in enumerate(sizes) if n and keep[m]]
        lazy = zc.read_collection(url)
        if not months:
            return
        lazy = lazy.filter(month=months)  # skips partitions: their rows are still neighbours
        boundary = "none" if constant is None else constant
        out = lazy.map_overlap(moving_sum, depth, depth, boundary=boundary).compute()
        month_of = numpy.repeat(numpy.arange(1, len(sizes) + 1), sizes)
        mask = numpy.isin(month_of, months)
        numpy.testing.assert_array_equal(out["v"].values, reference(values, depth, constant)[mask])
    finally:
        MemoryStore.forget(name)


def within(ds: zc.Dataset, span: numpy.timedelta64) -> zc.Dataset:
    """Sum of ``v`` over the rows whose time is within ``span`` of each row's."""
    t = ds["time"].values  # type: ignore[union-attr]
    x = ds["v"].values  # type: ignore[union-attr]
    c = numpy.concatenate([[0], numpy.cumsum(x)])
    lo = numpy.searchsorted(t, t - span, side="left")
    hi = numpy.searchsorted(t, t + span, side="right")
    return ds.with_variables({"v": ds["v"].with_data(c[hi] - c[lo])})


@pytest.mark.parametrize("span", ["3D", numpy.timedelta64(40, "D")])
def test_a_time_span_depth_with_a_time_range(memory_url: str, span: Any) -> None:
    values = collection(memory_url, [7, 0, 5, 8, 2])
    delta = numpy.timedelta64(3, "D") if isinstance(span, str) else span
    lazy = zc.read_collection(memory_url).filter(time=slice("2024-03-02", "2024-04-05"))
    out = lazy.map_overlap(within, span, delta).compute()
    whole = zc.read_collection(memory_url).compute()
    ref = within(whole, delta)
    t = whole["time"].values
    mask = (t >= numpy.datetime64("2024-03-02")) & (t <= numpy.datetime64("2024-04-05"))
    numpy.testing.assert_array_equal(out["v"].values, ref["v"].values[mask])
    numpy.testing.assert_array_equal(out["time"].values, t[mask])
    assert values.sum() == whole["v"].values.sum()


def test_a_neighbour_costs_only_the_chunks_of_its_halo(tmp_path: Any) -> None:
    url = f"file://{tmp_path}/col"
    collection(url, [9, 9, 9])
    spec = counting_spec(url)
    lazy = zc.read_collection(spec).filter(month=2)
    reset_reads(spec.tag)
    out = lazy.map_overlap(moving_sum, 2, 2).compute()
    values = zc.read_collection(url).compute()["v"].values
    numpy.testing.assert_array_equal(out["v"].values, reference(values, 2, None)[9:18])
    chunks = sorted(k for k in reads(spec.tag) if is_chunk_key(k))
    # February whole (3 chunks of 3 rows per variable), the last chunk of January and the
    # first of March: 2 halo rows each side.
    expected = sorted(
        [f"year=2024/month=02/{v}/c/{i}" for v in ("time", "v") for i in range(3)]
        + [f"year=2024/month=01/{v}/c/2" for v in ("time", "v")]
        + [f"year=2024/month=03/{v}/c/0" for v in ("time", "v")]
    )
    assert chunks == expected


def test_bad_input(memory_url: str) -> None:
    collection(memory_url, [3, 3])
    lazy = zc.read_collection(memory_url)
    with pytest.raises(InvalidInputError, match=">= 0"):
        lazy.map_overlap(moving_sum, -1, 1)
    with pytest.raises(InvalidInputError, match="boundary is 'none' or a constant"):
        lazy.map_overlap(moving_sum, 1, 1, boundary="reflect")
    with pytest.raises(InvalidInputError, match="number of rows or a time span"):
        lazy.map_overlap(moving_sum, 1.5, 1)
    with pytest.raises(InvalidInputError, match="give depth in rows"):
        lazy.map_overlap(within, "2D", numpy.timedelta64(2, "D"), boundary=0)

    def shrink(ds: zc.Dataset) -> zc.Dataset:
        return ds.isel({"time": slice(0, 1)})

    with pytest.raises(InvalidInputError, match="must keep the rows"):
        lazy.map_overlap(shrink, 1).compute()
    with pytest.raises(InvalidInputError, match="before map_partitions"):
        lazy.map_partitions(shrink).map_overlap(moving_sum, 1, 1)


@pytest.mark.parametrize("boundary", ["none", 7])
def test_update_with_depth_sees_the_neighbours(memory_url: str, boundary: Any) -> None:
    values = collection(memory_url, [5, 2, 6, 4])
    col = zc.open_collection(memory_url, mode="rw")
    written = col.update(
        lambda ds: {"v": moving_sum(ds, 3)["v"].values},  # type: ignore[union-attr]
        depth=3,
        boundary=boundary,
        filters="month in (1, 3)",
        variables=["v"],
    )
    assert written == ["year=2024/month=01", "year=2024/month=03"]
    expected = values.copy()
    ref = reference(values, 3, None if boundary == "none" else boundary)
    expected[:5], expected[7:13] = ref[:5], ref[7:13]
    numpy.testing.assert_array_equal(zc.read_collection(memory_url).compute()["v"].values, expected)
    with pytest.raises(InvalidInputError, match="not both"):
        col.update(moving_sum, depth=1, index="x", parity=1)


def test_a_time_range_keeping_no_row_of_a_partition(memory_url: str) -> None:
    collection(memory_url, [3, 3])  # Jan 1-3, Feb 1-3
    lazy = zc.read_collection(memory_url).filter(time=slice("2024-01-02T01", "2024-01-02T12"))
    assert lazy.npartitions == 1
    assert lazy.map_overlap(moving_sum, 1, 1).compute() is None
    both = zc.read_collection(memory_url).filter(time=slice("2024-01-03", "2024-02-01"))
    values = zc.read_collection(memory_url).compute()["v"].values
    out = both.map_overlap(moving_sum, 1, 1).compute()["v"].values
    numpy.testing.assert_array_equal(out, reference(values, 1, None)[2:4])
