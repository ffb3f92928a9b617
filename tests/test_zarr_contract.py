"""Pins the zarr-python behaviours the package relies on (``_zarr.py`` and the chunk layout).

If a zarr upgrade changes one of these, this file fails first and names what moved:
- ``zarr.core.sync.sync`` runs a coroutine on one loop on a daemon thread, the
  loop ``_get_loop`` returns, and refuses to run from that loop's own thread;
- ``AsyncArray(doc_dict, store_path[, config])`` builds an array from a
  ``zarr.json`` document without reading the store;
- ``AsyncArray._get_selection(BasicIndexer(sel, shape, arr._chunk_grid), prototype=, out=)``
  decodes into the caller's array in place, missing chunks as the fill value;
- ``create_array`` writes the metadata document we stamp per partition (the
  keys we read: chunk grid, default ``/`` chunk key encoding, codec chain);
- chunk keys are ``c/i/j`` and the ``crc32c`` codec appends a little-endian
  crc32c of the bytes before it (our encoder writes both without zarr);
- ``zarr.buffer.default_buffer_prototype`` / ``zarr.abc.buffer.Buffer`` wrap bytes.
"""

from __future__ import annotations

import asyncio
import inspect
import json
import threading

import google_crc32c
import numcodecs
import numpy
import pytest
import zarr
from zarr.abc.buffer import Buffer, BufferPrototype
from zarr.api.asynchronous import create_array
from zarr.buffer import default_buffer_prototype
from zarr.core.sync import SyncError
from zarr.storage import MemoryStore, StorePath

from dask_zcollection import _sync, _zarr

_PROTO = default_buffer_prototype()


async def _make(store: MemoryStore, **kw: object) -> dict[str, object]:
    await create_array(store, name="a", **kw)  # type: ignore[arg-type]
    buf = await store.get("a/zarr.json", prototype=_PROTO)
    assert buf is not None
    return json.loads(buf.to_bytes())  # type: ignore[no-any-return]


def test_sync_runs_on_zarrs_loop_thread() -> None:
    async def where() -> tuple[asyncio.AbstractEventLoop, str]:
        return asyncio.get_running_loop(), threading.current_thread().name

    loop, thread = _zarr.sync(where())
    assert loop is _zarr.event_loop()
    assert thread != threading.current_thread().name
    assert loop.is_running()
    assert _zarr.event_loop() is loop  # one loop per process
    # The package's bridge is the same loop.
    assert _sync.sync(where())[0] is loop


def test_sync_refuses_its_own_loop() -> None:
    async def nested() -> None:
        coro = asyncio.sleep(0)
        try:
            _zarr.sync(coro)
        finally:
            coro.close()

    with pytest.raises(SyncError, match="within a running loop"):
        _zarr.sync(nested())


def test_sync_reraises_the_coroutines_exception() -> None:
    async def boom() -> None:
        raise KeyError("x")

    with pytest.raises(KeyError):
        _zarr.sync(boom())


def test_array_from_metadata_reads_nothing() -> None:
    async def run() -> None:
        store = MemoryStore()
        doc = await _make(store, shape=(10, 3), dtype="f8", chunks=(4, 3), fill_value=1.5)
        empty = MemoryStore()  # no zarr.json there: the constructor must not look
        arr = _zarr.array_from_metadata(doc, StorePath(empty, "a"))
        assert isinstance(arr, _zarr.AsyncArray)
        assert arr.shape == (10, 3)
        assert arr.chunks == (4, 3)
        assert arr.dtype == numpy.dtype("f8")
        assert not empty._store_dict  # nothing read or written
        cfg = _zarr.array_from_metadata(doc, StorePath(empty, "a"), {"write_empty_chunks": True})
        assert cfg.config.write_empty_chunks is True
        assert numpy.array_equal(await arr.getitem(slice(None)), numpy.full((10, 3), 1.5))

    asyncio.run(run())


def test_constructor_signatures() -> None:
    params = inspect.signature(_zarr.AsyncArray._get_selection).parameters
    assert list(params)[:2] == ["self", "indexer"]
    assert {"prototype", "out"} <= set(params)
    assert "_chunk_grid" in {f.name for f in __import__("dataclasses").fields(_zarr.AsyncArray)}
    create = inspect.signature(create_array).parameters
    assert {
        "name",
        "shape",
        "dtype",
        "chunks",
        "shards",
        "fill_value",
        "attributes",
        "dimension_names",
        "filters",
        "serializer",
        "compressors",
    } <= set(create)


def test_read_selection_into_decodes_in_place() -> None:
    async def run() -> None:
        store = MemoryStore()
        data = numpy.arange(30, dtype="i4").reshape(10, 3)
        doc = await _make(store, shape=(10, 3), dtype="i4", chunks=(4, 3), fill_value=-7)
        arr = _zarr.array_from_metadata(doc, StorePath(store, "a"))
        await arr.setitem(slice(0, 4), data[:4])  # chunks 1 and 2 stay missing
        out = numpy.zeros((5, 3), dtype="i4")
        base = out.__array_interface__["data"][0]
        await _zarr.read_selection_into(arr, (slice(2, 7), slice(None)), out)
        assert out.__array_interface__["data"][0] == base
        expected = numpy.full((5, 3), -7, dtype="i4")
        expected[:2] = data[2:4]
        numpy.testing.assert_array_equal(out, expected)

    asyncio.run(run())


def test_metadata_layout_we_read() -> None:
    async def run() -> None:
        doc = await _make(
            MemoryStore(),
            shape=(10, 3),
            dtype="<f4",
            chunks=(4, 3),
            fill_value=0,
            compressors=[{"name": "zstd", "configuration": {"level": 0}}, {"name": "crc32c"}],
        )
        assert doc["zarr_format"] == 3
        assert doc["node_type"] == "array"
        assert doc["chunk_grid"] == {
            "name": "regular",
            "configuration": {"chunk_shape": [4, 3]},
        }
        assert doc["chunk_key_encoding"] == {
            "name": "default",
            "configuration": {"separator": "/"},
        }
        names = [c["name"] for c in doc["codecs"]]
        assert names == ["bytes", "zstd", "crc32c"]
        assert doc["codecs"][0]["configuration"]["endian"] == "little"

    asyncio.run(run())


def test_chunk_keys_and_crc32c_trailer() -> None:
    async def run() -> None:
        store = MemoryStore()
        doc = await _make(
            store,
            shape=(5, 2),
            dtype="<i2",
            chunks=(2, 2),
            fill_value=0,
            compressors=[{"name": "zstd", "configuration": {"level": 0}}, {"name": "crc32c"}],
        )
        arr = _zarr.array_from_metadata(doc, StorePath(store, "a"), {"write_empty_chunks": True})
        data = numpy.arange(10, dtype="<i2").reshape(5, 2)
        await arr.setitem(Ellipsis, data)
        keys = sorted(k for k in store._store_dict if "/c/" in k)
        assert keys == ["a/c/0/0", "a/c/1/0", "a/c/2/0"]
        raw = store._store_dict["a/c/2/0"].to_bytes()
        body, trailer = raw[:-4], raw[-4:]
        assert trailer == google_crc32c.value(body).to_bytes(4, "little")
        # The last chunk is padded to the chunk shape with the fill value.
        decoded = numpy.frombuffer(numcodecs.Zstd().decode(body), dtype="<i2")
        numpy.testing.assert_array_equal(decoded, [8, 9, 0, 0])

    asyncio.run(run())


def test_buffers_wrap_bytes() -> None:
    buf = _PROTO.buffer.from_bytes(b"abc")
    assert isinstance(buf, Buffer)
    assert buf.to_bytes() == b"abc"
    assert isinstance(_PROTO, BufferPrototype)
    assert zarr.AsyncArray is _zarr.AsyncArray


def test_only_the_zarr_module_touches_zarr_internals() -> None:
    """``zarr.core`` and zarr's private attributes appear in ``_zarr.py`` only."""
    import re
    from pathlib import Path

    import dask_zcollection

    root = Path(dask_zcollection.__file__).parent
    private = re.compile(r"zarr\.core|\._get_selection|\._chunk_grid|_store_dict|_get_loop")
    offenders = [
        f"{path.relative_to(root)}:{n}"
        for path in sorted(root.rglob("*.py"))
        if path.name != "_zarr.py"
        for n, line in enumerate(path.read_text().splitlines(), 1)
        if private.search(line)
    ]
    assert offenders == []
