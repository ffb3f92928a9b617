"""``update(fn, index=name)`` rebuilds that stored index's entries of the partitions it writes."""

from __future__ import annotations

from typing import Any

import numpy
import pytest

import dask_zcollection as zc
from dask_zcollection.errors import StaleIndexError

from .test_indexer import make, six_hours


def runs_of_hot(ds: zc.Dataset) -> dict[str, numpy.ndarray]:
    """One index row per run of equal ``quality > 100``."""
    hot = (ds["quality"].values > 100).astype("int64")  # type: ignore[union-attr]
    edges = numpy.flatnonzero(numpy.diff(hot)) + 1
    starts = numpy.concatenate([[0], edges]).astype("int64")
    stops = numpy.concatenate([edges, [len(hot)]]).astype("int64")
    return {"hot": hot[starts], "_start": starts, "_stop": stops}


def cool(ds: zc.Dataset) -> dict[str, Any]:
    """Halve the quality of the rows given (some stop being hot)."""
    return {"quality": ds["quality"].values // 2}  # type: ignore[union-attr]


def test_the_index_an_update_selects_through_is_fresh_after_it(
    store_url: str, factory: Any
) -> None:
    col, data = make(store_url, factory)
    col.create_index("hot", runs_of_hot, variables=["quality"])
    col.create_index("six", six_hours, variables=["time"])
    assert col.update(cool, index="hot", hot=1, filters="month >= 2", variables=["quality"]) == [
        "year=2024/month=02",
        "year=2024/month=03",
    ]
    month = data["time"].astype("datetime64[M]")
    quality = data["quality"].copy()
    touched = (quality > 100) & (month >= numpy.datetime64("2024-02"))
    quality[touched] //= 2
    out = zc.read_collection(store_url).compute()
    numpy.testing.assert_array_equal(out["quality"].values, quality)
    # Its entries were rebuilt over the rows written, in the update's own commit.
    for value in (0, 1):
        got = zc.read_collection(store_url).filter(index="hot", hot=value).compute()
        numpy.testing.assert_array_equal(got["quality"].values, quality[(quality > 100) == value])
    assert col.update_index("hot") == []
    # An index the update did not name is stale for what it wrote, until update_index.
    with pytest.raises(StaleIndexError, match=r"'six'.*month=02.*update_index"):
        zc.read_collection(store_url).filter(index="six", parity=1)
    assert col.update_index("six") == ["year=2024/month=02", "year=2024/month=03"]


def test_a_failed_update_leaves_no_entry_that_lies(memory_url: str, factory: Any) -> None:
    """A task rewrote its entry, another task failed: nothing is committed, and the
    rewritten entries (naming a version never committed) are refused until update_index."""
    col, data = make(memory_url, factory)
    col.create_index("hot", runs_of_hot, variables=["quality"])
    ran: list[str] = []

    def cool_but_the_last(ds: zc.Dataset) -> dict[str, Any]:
        # The last month to run fails, whichever it is (dask's order breaks ties by key
        # names, which differ between runs): the two before it rewrote their entries.
        months = numpy.unique(ds["time"].values.astype("datetime64[M]"))  # type: ignore[union-attr]
        if len(months) == 1 and len(ran) == 2:
            raise RuntimeError(f"boom in {months[0]}")
        ran.extend(str(m)[-2:] for m in months)
        return cool(ds)

    import dask

    # One task at a time: two months run (and rewrite their entries), then one fails.
    with dask.config.set(scheduler="synchronous"), pytest.raises(RuntimeError, match="boom"):
        col.update(cool_but_the_last, index="hot", hot=1, variables=["quality", "time"])
    assert len(ran) == 2
    (failed,) = {"01", "02", "03"} - set(ran)
    out = zc.read_collection(memory_url).compute()
    numpy.testing.assert_array_equal(out["quality"].values, data["quality"])  # nothing committed
    hot = data["quality"] > 100
    month = data["time"].astype("datetime64[M]")
    for m in ran:  # their entries name versions never committed
        with pytest.raises(StaleIndexError, match=f"month={m}"):
            zc.read_collection(memory_url).filter(f"month == {int(m)}").filter(index="hot", hot=1)
    left = zc.read_collection(memory_url).filter(f"month == {int(failed)}")
    mask = hot & (month == numpy.datetime64(f"2024-{failed}"))
    got = left.filter(index="hot", hot=1).compute()
    numpy.testing.assert_array_equal(got["quality"].values, data["quality"][mask])
    assert col.update_index("hot") == [f"year=2024/month={m}" for m in sorted(ran)]
    got = zc.read_collection(memory_url).filter(index="hot", hot=1).compute()
    numpy.testing.assert_array_equal(got["quality"].values, data["quality"][hot])
