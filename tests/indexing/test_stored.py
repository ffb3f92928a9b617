"""Indexes stored with the collection: one object per partition, never answering stale rows."""

from __future__ import annotations

from typing import Any

import numpy
import pytest

import dask_zcollection as zc
from dask_zcollection.errors import AlreadyExistsError, NotFoundError, StaleIndexError

from .test_indexer import make, six_hours


def blocks_of(times: numpy.ndarray) -> numpy.ndarray:
    return times.astype("datetime64[h]").astype("int64") // 6


def test_create_lookup_update_on_every_backend(store_url: str, factory: Any) -> None:
    col, data = make(store_url, factory)
    assert col.create_index("six", six_hours, variables=["time"]) == [
        "year=2024/month=01",
        "year=2024/month=02",
        "year=2024/month=03",
    ]
    assert col.indexes() == ["six"]
    with pytest.raises(AlreadyExistsError):
        col.create_index("six", six_hours)
    reader = zc.open_collection(store_url, mode="r")
    assert reader.indexes() == ["six"]
    for call in (
        lambda: reader.create_index("other", six_hours),
        lambda: reader.update_index("six"),
        lambda: reader.drop_index("six"),
    ):
        with pytest.raises(zc.ReadOnlyError):
            call()
    with pytest.raises(zc.InvalidInputError, match="invalid index name"):
        col.create_index("../x", six_hours)
    lazy = zc.read_collection(store_url)
    out = lazy.filter(index="six", parity=1).compute()
    odd = blocks_of(data["time"]) % 2 == 1
    numpy.testing.assert_array_equal(out["time"].values, data["time"][odd])
    numpy.testing.assert_array_equal(out["ssh"].values, data["ssh"][odd])

    # A write to February: its entry is stale, the others still answer.
    extra = factory.times("2024-02-20T00", "2024-02-20T07")
    col.insert(factory.data(extra, seed=5))
    lazy = zc.read_collection(store_url)
    with pytest.raises(StaleIndexError, match=r"'six'.*year=2024/month=02"):
        lazy.filter(index="six", parity=1)
    jan = lazy.filter("month != 2").filter(index="six", parity=1).compute()
    keep = odd & (data["time"].astype("datetime64[M]") != numpy.datetime64("2024-02"))
    numpy.testing.assert_array_equal(jan["time"].values, data["time"][keep])

    # A new partition has no entry: refused too, until update_index.
    col.insert(factory.data(factory.times("2024-05-01T00", "2024-05-01T13"), seed=6))
    with pytest.raises(StaleIndexError, match="month=05"):
        zc.read_collection(store_url).filter(index="six", parity=1)
    # update_index rebuilds only February and May (the stored builder runs).
    assert col.update_index("six") == ["year=2024/month=02", "year=2024/month=05"]
    assert col.update_index("six") == []
    every = zc.read_collection(store_url).compute()
    times = every["time"].values
    got = zc.read_collection(store_url).filter(index="six", parity=1).compute()
    numpy.testing.assert_array_equal(got["time"].values, times[blocks_of(times) % 2 == 1])

    # A dropped partition's entry goes with update_index; drop_index removes the index.
    col.drop_partitions("month == 5")
    assert col.update_index("six") == []
    got = zc.read_collection(store_url).filter(index="six", parity=0).compute()
    times = zc.read_collection(store_url).compute()["time"].values
    numpy.testing.assert_array_equal(got["time"].values, times[blocks_of(times) % 2 == 0])
    col.drop_index("six")
    assert col.indexes() == []
    with pytest.raises(NotFoundError, match="no index named 'six'"):
        zc.read_collection(store_url).filter(index="six", parity=0)


def test_a_rewrite_with_the_same_rows_is_stale(memory_url: str, factory: Any) -> None:
    """``update`` keeps a partition's rows and axis: only its version identity tells."""
    col, data = make(memory_url, factory)
    col.create_index("six", six_hours, variables=["time"])

    def bump(ds: zc.Dataset) -> dict[str, Any]:
        return {"quality": ds["quality"].values // 2}  # type: ignore[union-attr]

    col.update(bump, filters="month == 3", variables=["quality"])
    with pytest.raises(StaleIndexError, match="month=03"):
        zc.read_collection(memory_url).filter(index="six", parity=1)
    assert col.update_index("six", six_hours) == ["year=2024/month=03"]
    out = zc.read_collection(memory_url).filter(index="six", parity=1).compute()
    odd = blocks_of(data["time"]) % 2 == 1
    numpy.testing.assert_array_equal(out["time"].values, data["time"][odd])


def halve_quality(ds: zc.Dataset) -> dict[str, Any]:
    return {"quality": ds["quality"].values // 2}  # type: ignore[union-attr]


@pytest.mark.parametrize("stored", [True, False])
def test_update_through_an_index_rewrites_only_the_selected_rows(
    memory_url: str, factory: Any, stored: bool
) -> None:
    col, data = make(memory_url, factory)
    if stored:
        col.create_index("six", six_hours, variables=["time"])
        index: Any = "six"
    else:
        from dask_zcollection.indexing import Indexer

        index = Indexer.build(zc.read_collection(memory_url), six_hours, variables=["time"])
    seen: list[int] = []

    def halve(ds: zc.Dataset) -> dict[str, Any]:
        seen.append(ds.dimensions["time"])
        return halve_quality(ds)

    written = col.update(halve, index=index, parity=1, filters="month >= 2", variables=["quality"])
    month = data["time"].astype("datetime64[M]")
    mask = (blocks_of(data["time"]) % 2 == 1) & (month >= numpy.datetime64("2024-02"))
    assert written == ["year=2024/month=02", "year=2024/month=03"]
    assert sorted(seen) == sorted(
        [int((mask & (month == numpy.datetime64(m))).sum()) for m in ("2024-02", "2024-03")]
    )
    expected = data["quality"].copy()
    expected[mask] //= 2
    out = zc.read_collection(memory_url).compute()
    numpy.testing.assert_array_equal(out["quality"].values, expected)
    numpy.testing.assert_array_equal(out["ssh"].values, data["ssh"])
    with pytest.raises(zc.InvalidInputError, match="need index="):
        col.update(halve, parity=1)


def test_concurrent_writers_never_make_an_index_lie(tmp_path: Any, factory: Any) -> None:
    """A writer appends to and rewrites partitions while the index is rebuilt and read.

    Every lookup either answers exactly the rows a numpy reference finds in the
    same catalog snapshot, or refuses with StaleIndexError.
    """
    import threading

    url = f"file://{tmp_path}/col"
    col, _ = make(url, factory)
    col.create_index("six", six_hours, variables=["time"])
    stop = threading.Event()
    errors: list[BaseException] = []

    def writer() -> None:
        try:
            rng = numpy.random.default_rng(1)
            for i in range(6):
                day = f"2024-0{1 + i % 3}-{20 + i:02d}"
                times = factory.times(*(f"{day}T{h:02d}" for h in sorted(rng.choice(24, 5))))
                col.insert(factory.data(times, seed=i), merge="upsert")
        except BaseException as err:  # reported by the main thread
            errors.append(err)
        finally:
            stop.set()

    def rebuilder() -> None:
        try:
            while not stop.is_set():
                col.update_index("six")
        except BaseException as err:
            errors.append(err)

    threads = [threading.Thread(target=writer), threading.Thread(target=rebuilder)]
    for t in threads:
        t.start()
    answered = refused = 0
    try:
        while not stop.is_set() or answered + refused < 3:
            lazy = zc.read_collection(url)
            try:
                got = lazy.filter(index="six", parity=1)
            except StaleIndexError:
                refused += 1
                continue
            whole = lazy.compute()
            times = whole["time"].values
            expected = times[blocks_of(times) % 2 == 1]
            out = got.compute()
            numpy.testing.assert_array_equal(out["time"].values, expected)
            answered += 1
    finally:
        stop.set()
        for t in threads:
            t.join()
    assert not errors, errors
    assert answered >= 1
    col.update_index("six")
    final = zc.read_collection(url)
    times = final.compute()["time"].values
    numpy.testing.assert_array_equal(
        final.filter(index="six", parity=1).compute()["time"].values,
        times[blocks_of(times) % 2 == 1],
    )
