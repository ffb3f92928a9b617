"""``filter(index=)`` and ``map_overlap`` after ``persist()``; the refusals after map_partitions."""

from __future__ import annotations

import itertools
from typing import Any

import numpy
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from indexing.test_indexer import make, six_hours
from test_overlap import collection, moving_sum, reference

import dask_zcollection as zc
from dask_zcollection.errors import FilterError, InvalidInputError
from dask_zcollection.indexing import Indexer
from dask_zcollection.store import MemoryStore

_names = itertools.count()


def blocks_of(times: numpy.ndarray) -> numpy.ndarray:
    return times.astype("datetime64[h]").astype("int64") // 6


def test_an_index_selects_rows_of_persisted_partitions(memory_url: str, factory: Any) -> None:
    col, data = make(memory_url, factory)
    col.create_index("six", six_hours, variables=["time"])
    idx = Indexer.build(zc.read_collection(memory_url), six_hours, variables=["time"])
    odd = blocks_of(data["time"]) % 2 == 1
    month = data["time"].astype("datetime64[M]")
    persisted = zc.read_collection(memory_url).persist()
    assert "rows selected by index[parity=1]" in persisted.filter(index=idx, parity=1).explain()
    for index in ("six", idx):
        got = persisted.filter(index=index, parity=1).compute()
        numpy.testing.assert_array_equal(got["time"].values, data["time"][odd])
        numpy.testing.assert_array_equal(got["ssh"].values, data["ssh"][odd])
        # With a key filter and a time range, before or after the index's selection.
        got = (
            persisted.filter("month != 2")
            .filter(index=index, parity=1)
            .filter(time=slice("2024-01-03T06", "2024-03-01T20"))
            .compute()
        )
        keep = (
            odd
            & (month != numpy.datetime64("2024-02"))
            & (data["time"] >= numpy.datetime64("2024-01-03T06"))
            & (data["time"] <= numpy.datetime64("2024-03-01T20"))
        )
        numpy.testing.assert_array_equal(got["quality"].values, data["quality"][keep])
    # Projected after persist: the selection still applies to the persisted rows.
    got = persisted[["time", "quality"]].filter(index="six", parity=0).compute()
    numpy.testing.assert_array_equal(got["quality"].values, data["quality"][~odd])
    assert set(got.variables) == {"time", "quality"}

    # Partitions trimmed before persist no longer hold their stored rows: refused.
    trimmed = zc.read_collection(memory_url).filter(time=slice("2024-01-03T06", None)).persist()
    with pytest.raises(FilterError, match=r"year=2024/month=01.*before persist"):
        trimmed.filter(index="six", parity=1)
    # map_partitions may move rows: refused, persisted or not, with the alternative.
    mapped = zc.read_collection(memory_url).map_partitions(lambda ds: ds)
    with pytest.raises(FilterError, match="before map_partitions"):
        mapped.filter(index="six", parity=1)
    with pytest.raises(FilterError, match="before persist"):
        mapped.persist().filter(index="six", parity=1)


@settings(max_examples=15, deadline=None)
@given(
    sizes=st.lists(st.integers(0, 7), min_size=1, max_size=5),
    depth=st.integers(0, 10),
    constant=st.one_of(st.none(), st.integers(-5, 5)),
    keep=st.lists(st.booleans(), min_size=5, max_size=5),
)
def test_map_overlap_over_persisted_partitions_equals_numpy(
    sizes: list[int], depth: int, constant: int | None, keep: list[bool]
) -> None:
    """The persisted partitions are the array: halos come from them, nothing is read."""
    name = f"persisted-overlap-{next(_names)}"
    url = f"memory://{name}"
    try:
        values = collection(url, sizes)
        months = [m + 1 for m, n in enumerate(sizes) if n and keep[m]]
        if not months:
            return
        persisted = zc.read_collection(url).filter(month=months).persist()
    finally:
        MemoryStore.forget(name)  # nothing is read from here on
    boundary = "none" if constant is None else constant
    out = persisted.map_overlap(moving_sum, depth, depth, boundary=boundary).compute()
    month_of = numpy.repeat(numpy.arange(1, len(sizes) + 1), sizes)
    mine = values[numpy.isin(month_of, months)]
    numpy.testing.assert_array_equal(out["v"].values, reference(mine, depth, constant))


def within(ds: zc.Dataset, span: numpy.timedelta64) -> zc.Dataset:
    """For each row, how many rows lie within ``span`` of it along the axis."""
    t = ds["time"].values  # type: ignore[union-attr]
    counts = numpy.searchsorted(t, t + span, side="right") - numpy.searchsorted(
        t, t - span, side="left"
    )
    return ds.with_variables({"v": ds["v"].with_data(counts.astype("int64"))})  # type: ignore[union-attr]


def test_map_overlap_after_map_partitions_and_persist(memory_url: str) -> None:
    values = collection(memory_url, [5, 3, 6])
    lazy = zc.read_collection(memory_url)

    def double(ds: zc.Dataset) -> zc.Dataset:
        return ds.with_variables({"v": ds["v"].with_data(ds["v"].values * 2)})  # type: ignore[union-attr]

    with pytest.raises(InvalidInputError, match="persist"):
        lazy.map_partitions(double).map_overlap(moving_sum, 1, 1)
    out = lazy.map_partitions(double).persist().map_overlap(moving_sum, 2, 2).compute()
    numpy.testing.assert_array_equal(out["v"].values, reference(values * 2, 2, None))
    # A time span: rows a day apart, so 2 days is 2 rows each side (the ends shorter).
    span = numpy.timedelta64(2, "D")
    got = lazy.persist().map_overlap(within, "2D", span).compute()
    times = lazy.compute()["time"].values
    numpy.testing.assert_array_equal(got["v"].values, within_reference(times, span))
    with pytest.raises(InvalidInputError, match="axis variable"):
        lazy[["v"]].persist().map_overlap(within, "2D", span)


def within_reference(times: numpy.ndarray, span: numpy.timedelta64) -> numpy.ndarray:
    return numpy.searchsorted(times, times + span, side="right") - numpy.searchsorted(
        times, times - span, side="left"
    )
