"""``LocalStore.get``: small objects read on the event loop, large ones on a thread, same bytes."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path
from typing import Any

import pytest

from dask_zcollection.store import LocalStore, _local


@pytest.mark.parametrize("size", [0, 1, _local.INLINE_BYTES - 1, _local.INLINE_BYTES, 300_000])
def test_get_returns_the_file_bytes_inline_or_not(
    tmp_path: Path, size: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    data = os.urandom(size)
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "k").write_bytes(data)
    hops: list[Any] = []
    real = asyncio.to_thread

    async def to_thread(fn: Any, *args: Any, **kwargs: Any) -> Any:
        hops.append(fn)
        return await real(fn, *args, **kwargs)

    monkeypatch.setattr(asyncio, "to_thread", to_thread)
    spec = LocalStore(str(tmp_path))
    assert asyncio.run(spec.get("a/k")) == data
    # Below INLINE_BYTES no thread is involved; zarr's store reads the others.
    assert (hops == []) is (size < _local.INLINE_BYTES)


def test_get_of_a_missing_key_or_a_directory_is_none(tmp_path: Path) -> None:
    (tmp_path / "d").mkdir()
    (tmp_path / "f").write_bytes(b"x")
    spec = LocalStore(str(tmp_path))
    assert asyncio.run(spec.get("missing")) is None
    assert asyncio.run(spec.get("d")) is None  # a prefix, not an object
    assert asyncio.run(spec.get("f/below")) is None  # below a file
    assert asyncio.run(LocalStore(str(tmp_path / "nowhere")).get("f")) is None
    assert not (tmp_path / "nowhere").exists()


def test_a_subclass_with_its_own_zarr_store_sees_every_read(tmp_path: Path) -> None:
    # The benchmarks' LatencyLocalStore counts (and delays) requests through a wrapping
    # zarr store: the inline read must not go around it.
    import numpy

    import dask_zcollection as zc
    from benchmarks._latency import LatencyLocalStore

    url = f"file://{tmp_path}/c"
    schema = (
        zc.Schema()
        .with_dimension("time", chunks=8)
        .with_variable("time", dtype="datetime64[ns]", dimensions=("time",))
        .build()
    )
    col = zc.create_collection(
        url, schema=schema, axis="time", partitioning=zc.partitioning.Date(("time",), "D")
    )
    times = numpy.datetime64("2024-01-01", "ns") + numpy.arange(4) * numpy.timedelta64(1, "h")
    col.insert({"time": times})
    spec = LatencyLocalStore(str(tmp_path / "c"), latency=0.0)
    spec.counter.reset()
    got = zc.read_collection(spec).compute()
    numpy.testing.assert_array_equal(got["time"].values, times)
    reads = spec.counter.reads()
    # The descriptor, the catalog root, the array's zarr.json and its chunk.
    assert "_zcollection.json" in reads, reads
    assert any(k.startswith("_catalog/") for k in reads), reads
    assert any(k.endswith("time/zarr.json") for k in reads), reads
    assert any("/time/c/" in k for k in reads), reads
