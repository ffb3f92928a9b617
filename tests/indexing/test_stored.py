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
