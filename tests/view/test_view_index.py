"""Indexes stored in a view's store, and ``View.update`` through an index or with a halo."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy
import pytest
from conftest import Factory
from test_view import TIMES, VARIABLES, anomalies, month_rows

import dask_zcollection as dzc
from dask_zcollection.errors import (
    NotFoundError,
    ReadOnlyError,
    StaleIndexError,
    StalePartitionError,
)


def runs_of_flag(ds: dzc.Dataset) -> dict[str, numpy.ndarray]:
    """One index row per run of equal ``flag`` (a view variable)."""
    flag = ds["flag"].values  # type: ignore[union-attr]
    edges = numpy.flatnonzero(numpy.diff(flag)) + 1
    starts = numpy.concatenate([[0], edges]).astype("int64")
    stops = numpy.concatenate([edges, [len(flag)]]).astype("int64")
    return {"flag": flag[starts].astype("int64"), "_start": starts, "_stop": stops}


def inverted(ds: dzc.Dataset) -> dict[str, numpy.ndarray]:
    return {"flag": (ds["quality"].values <= 100).astype("int8")}  # type: ignore[union-attr]


@pytest.fixture
def base(tmp_path: Path, factory: Factory) -> tuple[str, dict[str, numpy.ndarray]]:
    url = f"file://{tmp_path}/base"
    data = factory.data(TIMES, nested=False)
    factory.create(url, nested=False).insert(data)
    return url, data


def flags(data: dict[str, numpy.ndarray], computed: dict[int, Any]) -> numpy.ndarray:
    """The view's ``flag`` over the whole base: each computed month's function, else -1."""
    out = numpy.full(len(TIMES), -1, dtype="int8")
    for month, fn in computed.items():
        rows = month_rows(month)
        out[rows] = (data["quality"][rows] > 100).astype("int8")
        if fn is inverted:
            out[rows] = 1 - out[rows]
    return out


def test_an_index_in_the_view_store_follows_both_sides(tmp_path: Path, base: Any) -> None:
    base_url, data = base
    url = f"file://{tmp_path}/view"
    view = dzc.create_view(url, base=base_url, variables=VARIABLES)
    view.update(anomalies, filters="month <= 2", variables=["ssh", "quality"])
    assert view.create_index("runs", runs_of_flag, variables=["flag"]) == [
        "year=2024/month=01",
        "year=2024/month=02",
        "year=2024/month=03",
    ]
    assert view.indexes() == ["runs"]
    assert dzc.open_collection(base_url).indexes() == []  # the base is never written
    assert (tmp_path / "view" / "_indexes" / "runs" / "_index.json").is_file()

    def check(computed: dict[int, Any], lazy: Any = None) -> None:
        expected = flags(data, computed)
        for value in (1, 0, -1):
            mask = expected == value
            got = (lazy or dzc.read_view(url)).filter(index="runs", flag=value).compute()
            if not mask.any():
                assert got is None
                continue
            numpy.testing.assert_array_equal(got["time"].values, TIMES[mask])
            numpy.testing.assert_array_equal(got["flag"].values, expected[mask])
            numpy.testing.assert_array_equal(got["ssh"].values, data["ssh"][mask])

    check({1: anomalies, 2: anomalies})  # month 3 is -1 (fill values), indexed as such

    # The view recomputes February: its entry is stale, January's and March's still answer.
    view.update(inverted, filters="month == 2", variables=["quality"])
    with pytest.raises(StaleIndexError, match=r"'runs'.*year=2024/month=02"):
        dzc.read_view(url).filter(index="runs", flag=1)
    got = dzc.read_view(url).filter("month != 2").filter(index="runs", flag=1).compute()
    mask = (flags(data, {1: anomalies}) == 1) & ~month_rows(2)
    numpy.testing.assert_array_equal(got["time"].values, TIMES[mask])
    assert view.update_index("runs") == ["year=2024/month=02"]  # the stored builder
    check({1: anomalies, 2: inverted})

    # March computed for the first time: its entry was built over fill values.
    view.update(anomalies, filters="month == 3", variables=["ssh", "quality"])
    with pytest.raises(StaleIndexError, match="month=03"):
        dzc.read_view(url).filter(index="runs", flag=0)
    assert view.update_index("runs") == ["year=2024/month=03"]
    check({1: anomalies, 2: inverted, 3: anomalies})

    # The base rewrites January (same rows): the view's entry of January is stale too.
    dzc.open_collection(base_url, mode="rw").update(
        lambda ds: {"quality": 255 - ds["quality"].values},  # type: ignore[union-attr]
        filters="month == 1",
        variables=["quality"],
    )
    with pytest.raises(StaleIndexError, match="month=01"):
        dzc.read_view(url).filter(index="runs", flag=1)
    with pytest.raises(StalePartitionError):  # its view partition must be recomputed first
        view.update_index("runs")
    view.update(anomalies, filters="month == 1", variables=["ssh", "quality"])
    assert view.update_index("runs") == ["year=2024/month=01"]
    data = dict(data, quality=numpy.where(month_rows(1), 255 - data["quality"], data["quality"]))
    check({1: anomalies, 2: inverted, 3: anomalies})

    reader = dzc.open_view(url)
    assert reader.indexes() == ["runs"]
    with pytest.raises(ReadOnlyError):
        reader.create_index("other", runs_of_flag)
    with pytest.raises(ReadOnlyError):
        reader.drop_index("runs")
    view.drop_index("runs")
    assert view.indexes() == []
    with pytest.raises(NotFoundError, match="no index named 'runs'"):
        dzc.read_view(url).filter(index="runs", flag=1)
