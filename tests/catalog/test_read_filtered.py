"""``read_collection(url, filters=...)`` reads the catalog segments its filter can match only."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy
import pytest

import dask_zcollection as zc
from benchmarks import _data
from benchmarks.scale import _hour_key, build, new_partition
from dask_zcollection.catalog._segments import SEGMENT_DIR
from dask_zcollection.store import LocalStore


def test_a_filtered_read_decodes_one_segment_and_knows_the_total(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    n = 10_000
    url = build(str(tmp_path / "c"), n, _data.make_schema(2, "zstd3", 4096))
    col = zc.open_collection(url, mode="rw")
    data = new_partition(n, 0, 2)  # the one real partition, after the simulated ones
    col.insert(data)
    segments = os.listdir(tmp_path / "c" / SEGMENT_DIR)
    assert len(segments) >= 4
    key = _hour_key(numpy.datetime64(data["time"][0], "h"))
    flt = "year == {} and month == {} and day == {} and hour == {}".format(*key)
    got: list[str] = []
    original = LocalStore.get

    async def get(self: Any, k: str) -> bytes | None:
        got.append(k)
        return await original(self, k)

    monkeypatch.setattr(LocalStore, "get", get)
    lazy = zc.read_collection(url, filters=flt)
    assert len([k for k in got if k.startswith(SEGMENT_DIR)]) == 1
    assert lazy.npartitions == 1
    assert "partitions:   1 selected of 10001" in repr(lazy)
    ds = lazy.compute()
    numpy.testing.assert_array_equal(ds["time"].values, data["time"])
    numpy.testing.assert_array_equal(ds["ssh"].values, data["ssh"])
    # Without a filter every segment is read.
    got.clear()
    whole = zc.read_collection(url)
    assert len({k for k in got if k.startswith(SEGMENT_DIR)}) >= 4  # the newest version's
    assert whole.npartitions == n + 1
    assert "partitions:   10001 selected of 10001" in repr(whole)
