"""Damaged chunks are detected: crc32c on every chunk, a record of the chunks written.

Every test damages stored bytes the way a disk, a copy tool or a person does
(a bit flip, a truncation, a deleted or swapped chunk) and checks that a read
raises :class:`CorruptedDataError` naming the chunk's key instead of returning
wrong values or fill values.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Coroutine
from pathlib import Path
from typing import Any

import numpy
import pytest
import zarr
from conftest import Factory, assert_arrays_identical

import dask_zcollection as zc
from dask_zcollection.io import ReadSource
from dask_zcollection.io._integrity import RECORD_ATTR, CheckedStore, ChunkRecord, record_of
from dask_zcollection.schema._schema import DEFAULT_CHECKSUM
from dask_zcollection.store import resolve_store

JAN = "year=2024/month=01"


def run[T](coro: Coroutine[Any, Any, T]) -> T:
    return asyncio.run(coro)


def times(n: int, start: str = "2024-01-01") -> numpy.ndarray:
    first = numpy.datetime64(start, "ns")
    return first + numpy.arange(n) * numpy.timedelta64(1, "h")


class Raw:
    """The stored objects of a collection, as bytes, on any backend (Icechunk: one commit)."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.spec = resolve_store(url).for_writing()

    def get(self, key: str) -> bytes:
        data = run(self.spec.get(key))
        assert data is not None, key
        return data

    def put(self, key: str, data: bytes) -> None:
        run(self.spec.put(key, data))
        run(self.spec.publish(f"tamper {key}"))

    def delete(self, key: str) -> None:
        run(self.spec.delete(key))
        run(self.spec.publish(f"delete {key}"))


def month(factory: Factory, url: str, rows: int = 20, **kwargs: Any) -> dict[str, Any]:
    """A collection with one partition (January 2024) of ``rows`` rows, 4-row chunks."""
    # Checksums explicitly on: these tests hold whatever the default is.
    kwargs.setdefault("schema", factory.schema().with_checksums(True))
    col = factory.create(url, **kwargs)
    data = factory.data(times(rows))
    col.insert(data)
    return data


def read_error(url: str, variables: list[str] | None = None) -> str:
    with pytest.raises(zc.CorruptedDataError) as info:
        zc.open_collection(url).query(variables=variables)
    return str(info.value)


# -- what is written -----------------------------------------------------------------------------
def test_chunks_end_with_crc32c_and_the_record_names_each(tmp_path: Path, factory: Factory) -> None:
    url = f"file://{tmp_path}/c"
    data = month(factory, url, rows=18)
    root = tmp_path / "c" / JAN / "ssh"
    meta = json.loads((root / "zarr.json").read_text())
    assert meta["codecs"][-1] == {"name": "crc32c"}
    record = meta["attributes"][RECORD_ATTR]
    assert record["grid"] == [5, 1]
    trailers = [
        int.from_bytes((root / "c" / str(i) / "0").read_bytes()[-4:], "little") for i in range(5)
    ]
    assert record["chunks"] == trailers
    # zarr-python reads the partition itself (its own crc32c codec checks every chunk).
    arr = zarr.open_array(str(root), mode="r")
    assert_arrays_identical(arr[:], data["ssh"], "ssh")


def test_descriptor_records_the_checksum_choice(factory: Factory) -> None:
    schema = factory.schema()
    assert all(v.codecs.checksum is DEFAULT_CHECKSUM for _, v in schema.walk())
    assert DEFAULT_CHECKSUM is False  # off by default: over 5 % (docs/benchmarks.md)
    off = schema.with_checksums(False)
    assert not any(v.codecs.checksum for _, v in off.walk())
    assert zc.Schema.from_dict(off.to_dict()) == off
    # A descriptor written before the field existed (reference format) means no checksum.
    doc = schema["ssh"].codecs.to_dict()
    del doc["checksum"]
    assert zc.Codecs.from_dict(doc).checksum is False
    # User input gets the default.
    assert zc.Codecs.coerce({"bytes_to_bytes": [{"name": "zstd"}]}).checksum is DEFAULT_CHECKSUM


def test_checksums_off_per_variable(tmp_path: Path, factory: Factory) -> None:
    schema = (
        factory.schema(immutable=False, nested=False)
        .with_checksums(True)
        .with_variable(
            "raw",
            dtype="int32",
            dimensions=("time",),
            codecs=zc.Codecs(
                bytes_to_bytes=({"name": "zstd", "configuration": {"level": 1}},), checksum=False
            ),
        )
        .build()
    )
    url = f"file://{tmp_path}/c"
    col = factory.create(url, schema=schema)
    data = factory.data(times(8), immutable=False, nested=False)
    data["raw"] = numpy.arange(8, dtype="int32")
    col.insert(data)
    codecs = json.loads((tmp_path / "c" / JAN / "raw" / "zarr.json").read_text())["codecs"]
    assert [c["name"] for c in codecs] == ["bytes", "zstd"]
    report = col.verify()
    assert report.ok
    assert report.unverifiable == ((JAN, "checksums off, only chunk presence checked: raw"),)
    # Presence is still recorded: a deleted chunk is damage, not fill values.
    (tmp_path / "c" / JAN / "raw" / "c" / "1").unlink()
    assert f"{JAN}/raw/c/1" in read_error(url)


# -- damage --------------------------------------------------------------------------------------
def test_every_single_bit_flip_is_detected(tmp_path: Path, factory: Factory) -> None:
    url = f"file://{tmp_path}/c"
    month(factory, url)
    key = f"{JAN}/ssh/c/1/0"
    path = tmp_path / "c" / key
    good = path.read_bytes()
    col = zc.open_collection(url)
    # Every bit of the first and last 4 bytes (header, crc32c), every 5th bit between.
    nbits = len(good) * 8
    positions = sorted({*range(32), *range(nbits - 32, nbits), *range(32, nbits - 32, 5)})
    assert len(positions) > 100
    for n, bit in enumerate(positions):
        flipped = bytearray(good)
        flipped[bit // 8] ^= 1 << (bit % 8)
        path.write_bytes(bytes(flipped))
        with pytest.raises(zc.CorruptedDataError, match=key):
            col.query(variables=["ssh"])
        if n % 40 == 0:  # verify() lists it (sampled: it reads the whole collection)
            report = col.verify()
            assert [k for k, _ in report.damaged] == [key]
    path.write_bytes(good)
    assert col.verify().ok


def test_bit_flips_on_zarrs_path(tmp_path: Path, factory: Factory) -> None:
    """Chunks split along a trailing dimension are read by zarr's pipeline, checked too."""
    schema = (
        zc.Schema()
        .with_dimension("time", chunks=4)
        .with_dimension("x", size=4, chunks=2)
        .with_variable("time", dtype="datetime64[ns]", dimensions=("time",))
        .with_variable("v", dtype="float64", dimensions=("time", "x"))
        .with_variable("label", dtype="<U4", dimensions=("time",))
        .build()
        .with_checksums(True)
    )
    url = f"file://{tmp_path}/c"
    col = factory.create(url, schema=schema)
    t = times(8)
    col.insert(
        {
            "time": t,
            "v": numpy.arange(32.0).reshape(8, 4),
            "label": numpy.array([f"a{i}" for i in range(8)]),
        }
    )
    for key in (f"{JAN}/v/c/1/1", f"{JAN}/label/c/0"):
        path = tmp_path / "c" / key
        good = path.read_bytes()
        for pos in (0, len(good) // 2, len(good) - 1):
            flipped = bytearray(good)
            flipped[pos] ^= 0x10
            path.write_bytes(bytes(flipped))
            assert key in read_error(url)
        path.write_bytes(good)
    assert col.verify().ok
    (tmp_path / "c" / f"{JAN}/v/c/1/0").unlink()
    assert f"{JAN}/v/c/1/0" in read_error(url)


@pytest.mark.parametrize("codec", ["zstd", "blosc"])
def test_codec_failure_without_checksum_is_corrupted_data(
    tmp_path: Path, factory: Factory, codec: str
) -> None:
    conf = {"zstd": {"level": 1}, "blosc": {"cname": "lz4", "clevel": 5, "shuffle": "shuffle"}}
    schema = (
        zc.Schema()
        .with_dimension("time", chunks=64)
        .with_variable("time", dtype="datetime64[ns]", dimensions=("time",))
        .with_variable(
            "v",
            dtype="float64",
            dimensions=("time",),
            codecs=zc.Codecs(bytes_to_bytes=({"name": codec, "configuration": conf[codec]},)),
        )
        .build()
        .with_checksums(False)
    )
    url = f"file://{tmp_path}/c"
    col = factory.create(url, schema=schema)
    col.insert({"time": times(128), "v": numpy.random.default_rng(0).random(128)})
    key = f"{JAN}/v/c/1"
    path = tmp_path / "c" / key
    path.write_bytes(path.read_bytes()[:9])  # a truncated frame: the codec itself fails
    assert key in read_error(url)
    assert [k for k, _ in col.verify().damaged] == [key]


def test_codec_failure_on_zarrs_path_names_the_array(tmp_path: Path, factory: Factory) -> None:
    schema = (
        zc.Schema()
        .with_dimension("time", chunks=4)
        .with_dimension("x", size=4, chunks=2)
        .with_variable("time", dtype="datetime64[ns]", dimensions=("time",))
        .with_variable(
            "v",
            dtype="float64",
            dimensions=("time", "x"),
            codecs=zc.Codecs(bytes_to_bytes=({"name": "zstd", "configuration": {"level": 1}},)),
        )
        .build()
        .with_checksums(False)
    )
    url = f"file://{tmp_path}/c"
    col = factory.create(url, schema=schema)
    col.insert({"time": times(8), "v": numpy.arange(32.0).reshape(8, 4)})
    path = tmp_path / "c" / JAN / "v" / "c" / "1" / "1"
    path.write_bytes(path.read_bytes()[:5])
    assert f"{JAN}/v" in read_error(url)
    assert [k for k, _ in col.verify().damaged] == [f"{JAN}/v"]


def test_truncated_chunk(tmp_path: Path, factory: Factory) -> None:
    url = f"file://{tmp_path}/c"
    month(factory, url)
    key = f"{JAN}/time/c/2"
    path = tmp_path / "c" / key
    good = path.read_bytes()
    for size in (0, 3, len(good) - 1):
        path.write_bytes(good[:size])
        assert key in read_error(url)


def test_deleted_and_swapped_chunks(store_url: str, factory: Factory) -> None:
    data = month(factory, store_url)
    raw = Raw(store_url)
    a, b = f"{JAN}/ssh/c/1/0", f"{JAN}/ssh/c/2/0"
    first, second = raw.get(a), raw.get(b)
    # Swapped: each chunk is valid (its crc32c holds) but not the one of its index.
    raw.put(a, second)
    raw.put(b, first)
    message = read_error(store_url)
    assert "swapped" in message and (a in message or b in message)
    report = zc.open_collection(store_url).verify()
    assert [k for k, _ in report.damaged] == [a, b]
    raw.put(a, first)
    raw.put(b, second)
    factory.assert_dataset(zc.open_collection(store_url).query(), factory.sorted_rows(data))
    # Deleted: a written chunk that is gone is damage, not fill values.
    raw.delete(f"{JAN}/quality/c/3")
    assert f"{JAN}/quality/c/3" in read_error(store_url, ["quality"])
    report = zc.open_collection(store_url).verify()
    assert not report.ok
    assert [k for k, _ in report.damaged] == [f"{JAN}/quality/c/3"]


def test_skipped_all_fill_chunk_is_not_damage(tmp_path: Path, factory: Factory) -> None:
    """A chunk zarr skips because it holds only the fill value is recorded as not written."""
    url = f"file://{tmp_path}/c"
    month(factory, url, rows=12)
    source = ReadSource(resolve_store(url), zc.open_collection(url).aio.config)
    io = source.io
    key = f"{JAN}/quality"
    values = numpy.arange(12, dtype="uint8")
    values[4:8] = 255  # the fill value: chunk 1 is all fill

    async def write() -> dict[str, Any]:
        meta = await io.template("quality", values.shape)
        store = CheckedStore(io.spec.zarr_store(), key, meta, None)
        arr = zarr.AsyncArray(
            meta,
            zarr.storage.StorePath(store, key),  # type: ignore[call-overload]
            config={"write_empty_chunks": False},
        )
        await store.delete(f"{key}/c/1")
        await arr.setitem(slice(None), values)
        record = record_of(meta, store.written)
        doc = {**meta, "attributes": {**meta["attributes"], RECORD_ATTR: record.to_json()}}
        await io.spec.put(f"{key}/zarr.json", json.dumps(doc).encode())
        return doc

    doc = run(write())
    assert doc["attributes"][RECORD_ATTR]["chunks"][1] is None
    assert not (tmp_path / "c" / key / "c" / "1").exists()
    got = zc.open_collection(url).query(variables=["quality"])
    assert got is not None
    assert_arrays_identical(got["quality"].values, values, "quality")
    assert zc.open_collection(url).verify().ok
    # The same absence with the record saying "written" is damage.
    record = ChunkRecord.of(doc)
    assert record is not None
    record.entries[1] = True
    doc["attributes"][RECORD_ATTR] = record.to_json()
    (tmp_path / "c" / key / "zarr.json").write_text(json.dumps(doc))
    assert f"{key}/c/1" in read_error(url, ["quality"])


# -- appends in place ----------------------------------------------------------------------------
def test_append_in_place_keeps_the_record(tmp_path: Path, factory: Factory) -> None:
    url = f"file://{tmp_path}/c"
    first = month(factory, url, rows=18)
    col = zc.open_collection(url, mode="rw")
    path_before = col.catalog().paths
    # A handle opened before the append holds the old record of the last chunk.
    source = ReadSource(resolve_store(url), col.aio.config)
    stale = run(source.io.open_handle(f"{JAN}/ssh", "ssh"))
    more = factory.data(times(7, "2024-01-05"), seed=1)
    col.insert(more, merge="concat")
    assert col.catalog(refresh=True).paths == path_before  # appended in place
    root = tmp_path / "c" / JAN / "ssh"
    record = json.loads((root / "zarr.json").read_text())["attributes"][RECORD_ATTR]
    assert record["grid"] == [7, 1]
    trailers = [
        int.from_bytes((root / "c" / str(i) / "0").read_bytes()[-4:], "little") for i in range(7)
    ]
    assert record["chunks"] == trailers
    report = col.verify()
    assert report.ok and report.checked == 2 and not report.unverifiable
    # The stale handle finds chunk 4 rewritten: it re-reads the record, no false alarm.
    assert_arrays_identical(run(stale.read(0, 18)), first["ssh"], "ssh")
    # The appended chunks are checked like the others.
    path = root / "c" / "6" / "0"
    flipped = bytearray(path.read_bytes())
    flipped[2] ^= 4
    path.write_bytes(bytes(flipped))
    assert [k for k, _ in col.verify().damaged] == [f"{JAN}/ssh/c/6/0"]


def test_append_that_dies_before_its_final_record_reads_clean(
    tmp_path: Path, factory: Factory, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Killed between the chunk writes and the final record: no committed row reads as damage."""
    url = f"file://{tmp_path}/c"
    first = month(factory, url, rows=18)
    col = zc.open_collection(url, mode="rw")

    def boom(*args: Any, **kwargs: Any) -> Any:
        raise OSError("killed")

    monkeypatch.setattr("dask_zcollection.io._writer.record_of", boom)
    with pytest.raises((OSError, zc.ConflictError)):
        col.insert(factory.data(times(7, "2024-01-05"), seed=1), merge="concat", retries=0)
    monkeypatch.undo()
    col = zc.open_collection(url, mode="rw")
    factory.assert_dataset(col.query(), factory.sorted_rows(first))
    assert col.verify().ok


def test_a_record_left_stale_by_an_older_writer_is_ignored(
    tmp_path: Path, factory: Factory
) -> None:
    """An older version appending in place grows the shape but not the record: not damage."""
    url = f"file://{tmp_path}/c"
    data = month(factory, url, rows=18)
    meta_path = tmp_path / "c" / JAN / "ssh" / "zarr.json"
    meta = json.loads(meta_path.read_text())
    meta["shape"] = [19, meta["shape"][1]]  # what an append of one row by such a writer does
    chunk = tmp_path / "c" / JAN / "ssh" / "c" / "4" / "0"
    chunk.write_bytes((tmp_path / "c" / JAN / "ssh" / "c" / "0" / "0").read_bytes())
    meta_path.write_text(json.dumps(meta))
    col = zc.open_collection(url)
    with_chunk_4 = col.query(variables=["ssh"])
    assert with_chunk_4 is not None
    assert_arrays_identical(with_chunk_4["ssh"].values[:16], data["ssh"][:16], "ssh")
    report = col.verify()
    assert report.ok
    assert report.unverifiable == (
        (JAN, "no record of written chunks (written before checksums): ssh"),
    )


@pytest.mark.parametrize("way", ["fast", "zarr"])
def test_an_array_deleted_while_it_is_read_is_not_found(
    tmp_path: Path, factory: Factory, way: str
) -> None:
    """A version collected under a reader (slower than the retention) takes its chunks along:
    the reader that opened its ``zarr.json`` gets PartitionNotFoundError, not damage."""
    import shutil

    from dask_zcollection.io._fastread import ArrayHandle

    url = f"file://{tmp_path}/c"
    month(factory, url)
    root = tmp_path / "c"
    doc = json.loads((root / JAN / "quality" / "zarr.json").read_bytes())
    store = zarr.storage.LocalStore(root)
    handle = ArrayHandle(store, f"{JAN}/quality", doc, numpy.dtype("uint8"), None)
    assert handle.record is not None and handle.compressor is not None
    shutil.rmtree(root / JAN)  # collected, as a whole, after the reader opened the array
    out = numpy.empty(40, "uint8")
    target = out if way == "fast" else out[::2]  # not contiguous: through zarr's pipeline
    with pytest.raises(zc.errors.PartitionNotFoundError, match="deleted since it was opened"):
        run(handle.read_into(0, 20, target))
    # The path written again by another transaction: not found either.
    (root / JAN / "quality").mkdir(parents=True)
    other = {**doc, "attributes": {**doc["attributes"], "_zc_txn": "another"}}
    (root / JAN / "quality" / "zarr.json").write_text(json.dumps(other))
    with pytest.raises(zc.errors.PartitionNotFoundError, match="another version"):
        run(handle.read_into(0, 20, target))
    # The array still there and its own, one chunk gone: damage, naming the chunk.
    (root / JAN / "quality" / "zarr.json").write_text(json.dumps(doc))
    with pytest.raises(zc.CorruptedDataError, match=f"chunk .{JAN}/quality/c/[0-4]. is missing"):
        run(handle.read_into(0, 20, target))
