"""Hostile timing against readers in flight: a reader slower than the retention."""

from __future__ import annotations

from typing import Any

import dask.config
import numpy
import pytest

import dask_zcollection as zc
from dask_zcollection.errors import PartitionNotFoundError

TIMES = numpy.arange("2024-01-01", "2024-01-11", dtype="datetime64[D]").astype("M8[ns]")


@pytest.mark.xfail(
    strict=True,
    reason="docs/format.md (Retention) promises a reader slower than the retention a "
    "PartitionNotFoundError, never other data; but a canonical path freed by the "
    "collector is claimed again by the next write, and the catalog holds no partition "
    "identity (txn) a reader could check: the stale reader reads the newer version",
)
def test_a_reader_slower_than_the_retention_never_reads_other_data(
    tmp_path: Any, factory: Any
) -> None:
    url = f"file://{tmp_path}/col"
    with dask.config.set({"zcollection.retention": 3600}):
        col = factory.create(url, nested=False)
        first = factory.data(TIMES, nested=False, seed=1)
        col.insert(first)
        lazy = zc.read_collection(url)  # planned on version A, at the canonical path
        col.insert(factory.data(TIMES, nested=False, seed=2), merge="replace")  # B, aside
        col.vacuum(older_than=0)  # A is collected: the reader is now "slower than the retention"
        third = factory.data(TIMES, nested=False, seed=3)
        col.insert(third, merge="replace")  # C claims the freed canonical path again
        assert col.catalog(refresh=True).paths == ("year=2024/month=01",)
        try:
            got = lazy.compute()
        except PartitionNotFoundError:
            return  # the documented outcome
        # Never other data: the rows of the version the reader planned with, or nothing.
        numpy.testing.assert_array_equal(got["quality"].values, first["quality"])
        assert not numpy.array_equal(got["quality"].values, third["quality"])
