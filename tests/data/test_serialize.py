"""A Dataset crosses distributed comms as numpy frames (``data/_serialize.py``)."""

from __future__ import annotations

import numpy
import pytest

import dask_zcollection as zc
from dask_zcollection._prepare import columns_to_dataset

distributed = pytest.importorskip("distributed")


def dataset(rows: int) -> zc.Dataset:
    """``rows`` rows of the test factory's schema (a nested group, an immutable variable)."""
    from conftest import Factory

    factory = Factory()
    schema = factory.schema(chunks=1024)
    times = numpy.datetime64("2024-01-01", "ns") + numpy.arange(rows) * numpy.timedelta64(1, "s")
    data = factory.data(times, seed=3)
    immutable = {k: v for k, v in data.items() if schema[k].immutable}
    columns = {k: v for k, v in data.items() if not schema[k].immutable}
    return columns_to_dataset(schema.build().with_axis("time"), columns, immutable)


def test_round_trip_keeps_everything() -> None:
    from distributed.protocol import deserialize, serialize

    ds = dataset(5_000)
    header, frames = serialize(ds, serializers=("dask", "pickle"), on_error="raise")
    assert header["serializer"] == "dask"  # ours, not a pickle with its buffers as one frame
    back = deserialize(header, frames)
    assert isinstance(back, zc.Dataset)
    assert sorted(p for p, _ in back.walk()) == sorted(p for p, _ in ds.walk())
    for path, var in ds.walk():
        got = back[path]
        numpy.testing.assert_array_equal(got.values, var.values)  # type: ignore[union-attr]
        assert got.dimensions == var.dimensions  # type: ignore[union-attr]
        assert got.attrs == var.attrs  # type: ignore[union-attr]
        assert got.values.flags.writeable  # type: ignore[union-attr]
    assert back.attrs == ds.attrs


def test_large_arrays_travel_as_split_frames() -> None:
    # distributed splits a numpy frame past frame-split-size (64 MiB); a pickled
    # object's buffers went as single frames, 2-3x slower to a client.
    from distributed.protocol import dumps, loads, to_serialize

    schema = (
        zc.Schema()
        .with_dimension("time", chunks=4096)
        .with_dimension("x_ac", size=240, chunks=240)
        .with_variable("time", dtype="int64", dimensions=("time",))
        .with_variable("ssh", dtype="float32", dimensions=("time", "x_ac"))
        .build()
    )
    rows = 80_000  # 77 MB of ssh
    ssh = numpy.random.default_rng(0).random((rows, 240), dtype="float32")
    ds = columns_to_dataset(schema, {"time": numpy.arange(rows), "ssh": ssh}, None)
    split = distributed.protocol.utils.BIG_BYTES_SHARD_SIZE
    assert ssh.nbytes > split
    frames = dumps({"op": "x", "data": to_serialize(ds)})
    assert max(memoryview(f).nbytes for f in frames) <= split
    back = loads(frames)["data"]
    numpy.testing.assert_array_equal(back["ssh"].values, ssh)
    numpy.testing.assert_array_equal(back["time"].values, numpy.arange(rows))
