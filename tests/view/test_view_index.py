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


def double_ssh(ds: dzc.Dataset) -> dict[str, numpy.ndarray]:
    return {"ssh_anom": (ds["ssh"].values * 2).astype("float32")}  # type: ignore[union-attr]


def test_update_through_an_index_writes_only_its_rows(tmp_path: Path, base: Any) -> None:
    base_url, data = base
    url = f"file://{tmp_path}/view"
    view = dzc.create_view(url, base=base_url, variables=VARIABLES)
    view.update(anomalies, filters="month <= 2", variables=["ssh", "quality"])
    view.create_index("runs", runs_of_flag, variables=["flag"])
    flag = flags(data, {1: anomalies, 2: anomalies})
    seen: list[int] = []

    def double(ds: dzc.Dataset) -> dict[str, numpy.ndarray]:
        seen.append(ds.dimensions["time"])
        return double_ssh(ds)

    # flag == -1: every row of March, which the view never computed.
    written = view.update(double, index="runs", flag=[1, -1], variables=["ssh"])
    assert written == ["year=2024/month=01", "year=2024/month=02", "year=2024/month=03"]
    chosen = numpy.isin(flag, [1, -1])
    assert sorted(seen) == sorted(int((chosen & month_rows(m)).sum()) for m in (1, 2, 3))
    got = dzc.read_view(url).compute()
    expected = numpy.where(
        chosen[:, None], data["ssh"] * 2, data["ssh"] - numpy.float32(1.5)
    ).astype("float32")
    numpy.testing.assert_array_equal(got["ssh_anom"].values, expected)
    numpy.testing.assert_array_equal(got["flag"].values, flag)  # kept, fill values too

    # The update rebuilt the entries of the index it named beside the partitions it wrote:
    # fresh at once, nothing for update_index to do.
    again = dzc.read_view(url).filter(index="runs", flag=1).compute()
    numpy.testing.assert_array_equal(again["ssh_anom"].values, expected[flag == 1])
    assert view.update_index("runs") == []
    # Another stored index is stale for the partitions written, until update_index.
    view.create_index("other", runs_of_flag, variables=["flag"])
    view.update(double, index="runs", flag=0, filters="month == 1", variables=["ssh"])
    expected[(flag == 0) & month_rows(1)] = (data["ssh"] * 2)[(flag == 0) & month_rows(1)]
    with pytest.raises(StaleIndexError, match=r"'other'.*month=01.*update_index"):
        dzc.read_view(url).filter(index="other", flag=1)
    assert view.update_index("other") == ["year=2024/month=01"]
    got = dzc.read_view(url).filter(index="other", flag=0).compute()
    numpy.testing.assert_array_equal(got["ssh_anom"].values, expected[flag == 0])

    # An Indexer object selects as well; a partition recomputed after a lazy update was
    # planned is a lost race: nothing written.
    from dask_zcollection.indexing import Indexer

    idx = Indexer.build(dzc.open_view(url), runs_of_flag, variables=["flag"])
    graph = view.update(double, index=idx, flag=0, variables=["ssh"], compute=False)
    view.update(inverted, filters="month == 2", variables=["quality"])
    with pytest.raises(dzc.ConflictError, match=r"month=02"):
        graph.compute()
    after = dzc.read_view(url).compute()
    numpy.testing.assert_array_equal(after["ssh_anom"].values, expected)
    with pytest.raises(dzc.InvalidInputError, match="need index="):
        view.update(double, flag=1)
    with pytest.raises(dzc.InvalidInputError, match="not both"):
        view.update(double, index="runs", flag=1, depth=1)


def window(ds: dzc.Dataset) -> dict[str, numpy.ndarray]:
    """``flag``: how many rows within 2 of each have quality > 100 (base variable)."""
    hot = (ds["quality"].values > 100).astype("int64")  # type: ignore[union-attr]
    return {"flag": numpy.convolve(hot, numpy.ones(5, "int64"), mode="same").astype("int8")}


def window_of_flag(ds: dzc.Dataset) -> dict[str, numpy.ndarray]:
    """``flag``: the sum of ``flag`` (a view variable) within 1 row of each."""
    flag = ds["flag"].values.astype("int64")  # type: ignore[union-attr]
    return {"flag": numpy.convolve(flag, numpy.ones(3, "int64"), mode="same").astype("int8")}


def test_update_with_depth_sees_both_sides_of_the_neighbours(tmp_path: Path, base: Any) -> None:
    base_url, data = base
    url = f"file://{tmp_path}/view"
    view = dzc.create_view(url, base=base_url, variables=VARIABLES)
    # February only: its halo comes from January and March, which are not selected.
    assert view.update(window, depth=2, filters="month == 2", variables=["quality"]) == [
        "year=2024/month=02"
    ]
    hot = (data["quality"] > 100).astype("int64")
    ref = numpy.convolve(hot, numpy.ones(5, "int64"), mode="same").astype("int8")
    got = dzc.read_view(url).compute()["flag"].values
    feb = month_rows(2)
    numpy.testing.assert_array_equal(got[feb], ref[feb])
    assert (got[~feb] == -1).all()
    # A window over the view's own variable: January's halo reads February's computed
    # values and nothing else (fill values beyond); a constant boundary pads the start.
    view.update(window_of_flag, depth=1, boundary=0, filters="month == 1", variables=["flag"])
    before = got.astype("int64")
    padded = numpy.concatenate([[0], before, [0]])
    ref2 = (padded[:-2] + padded[1:-1] + padded[2:]).astype("int8")
    now = dzc.read_view(url).compute()["flag"].values
    jan = month_rows(1)
    numpy.testing.assert_array_equal(now[jan], ref2[jan])
    numpy.testing.assert_array_equal(now[feb], ref[feb])


def test_an_indexer_built_over_a_view_goes_stale_with_the_view(tmp_path: Path, base: Any) -> None:
    base_url, data = base
    url = f"file://{tmp_path}/view"
    view = dzc.create_view(url, base=base_url, variables=VARIABLES)
    view.update(anomalies, filters="month <= 2", variables=["ssh", "quality"])
    from dask_zcollection.indexing import Indexer

    idx = Indexer.build(dzc.open_view(url), runs_of_flag, variables=["flag"])
    flag = flags(data, {1: anomalies, 2: anomalies})
    got = dzc.read_view(url).filter(index=idx, flag=1).compute()
    numpy.testing.assert_array_equal(got["time"].values, TIMES[flag == 1])
    # The view recomputes February (the base is untouched): its rows of flag == 1 moved.
    view.update(inverted, filters="month == 2", variables=["quality"])
    with pytest.raises(StaleIndexError, match="month=02"):
        dzc.read_view(url).filter(index=idx, flag=1)
    jan = dzc.read_view(url).filter("month == 1").filter(index=idx, flag=1).compute()
    numpy.testing.assert_array_equal(jan["time"].values, TIMES[(flag == 1) & month_rows(1)])
    # So does computing March, indexed over fill values.
    view.update(anomalies, filters="month == 3", variables=["ssh", "quality"])
    with pytest.raises(StaleIndexError, match="month=03"):
        dzc.read_view(url).filter("month == 3").filter(index=idx, flag=-1)


def test_a_neighbour_committed_after_the_task_checked_it_fails_the_commit(
    tmp_path: Path, base: Any
) -> None:
    """The commit re-checks the view partitions a halo was read from (the task checked them
    before ``fn`` ran; this neighbour is committed while ``fn`` runs): re-planned, not lost."""
    base_url, data = base
    url = f"file://{tmp_path}/view"
    view = dzc.create_view(url, base=base_url, variables=VARIABLES)
    view.update(anomalies, filters="month != 2", variables=["ssh", "quality"])
    other = dzc.open_view(url, mode="rw")
    calls: list[int] = []

    def racing(ds: dzc.Dataset) -> dict[str, numpy.ndarray]:
        calls.append(1)
        if len(calls) == 1:  # March is recomputed while February's window runs
            other.update(inverted, filters="month == 3", variables=["quality"])
        return window_of_flag(ds)

    view.update(racing, depth=1, filters="month == 2", variables=["flag"])
    assert len(calls) == 2  # the first attempt's commit failed; the second saw March's values
    now = flags(data, {1: anomalies, 3: inverted}).astype("int64")  # February: fill (-1)
    padded = numpy.concatenate([[0], now, [0]])
    ref = (padded[:-2] + padded[1:-1] + padded[2:]).astype("int8")
    got = dzc.read_view(url).compute()["flag"].values
    numpy.testing.assert_array_equal(got[month_rows(2)], ref[month_rows(2)])
    numpy.testing.assert_array_equal(got[month_rows(3)], now[month_rows(3)])


@pytest.mark.parametrize("kind", ["memory", "icechunk"])
def test_a_view_index_in_a_memory_or_icechunk_view_store(
    tmp_path: Path, base: Any, kind: str
) -> None:
    if kind == "icechunk":
        pytest.importorskip("icechunk")
        url = f"icechunk://{tmp_path}/views"
    else:
        from conftest import unique_memory_name

        url = f"memory://{unique_memory_name()}"
    base_url, data = base
    view = dzc.create_view(url, base=base_url, variables=VARIABLES)
    view.update(anomalies, variables=["ssh", "quality"])
    assert len(view.create_index("runs", runs_of_flag, variables=["flag"])) == 3
    assert dzc.open_view(url).indexes() == ["runs"]
    flag = flags(data, {1: anomalies, 2: anomalies, 3: anomalies})
    view.update(double_ssh, index="runs", flag=1, variables=["ssh"])
    got = dzc.read_view(url).filter(index="runs", flag=1).compute()  # fresh after the update
    numpy.testing.assert_array_equal(got["ssh_anom"].values, (data["ssh"] * 2)[flag == 1])
    rest = dzc.read_view(url).filter(index="runs", flag=0).compute()
    numpy.testing.assert_array_equal(
        rest["ssh_anom"].values, (data["ssh"] - numpy.float32(1.5))[flag == 0]
    )
    view.drop_index("runs")
    assert view.indexes() == []
    if kind == "memory":
        from dask_zcollection.store import MemoryStore

        MemoryStore.forget(url.removeprefix("memory://"))
