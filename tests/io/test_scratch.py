"""Chunk files of a local store read into reused scratch buffers (``io/_fastread.py``).

A chunk of a ``file://`` array is read and decoded on one codec thread, its
compressed bytes (and a partly kept chunk, decoded whole) in buffers lent by
:class:`Scratch`; the results never share them.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import numpy
import pytest
from zarr.api.asynchronous import create_array
from zarr.buffer import default_buffer_prototype
from zarr.codecs import BloscCodec, Crc32cCodec, GzipCodec, ZstdCodec
from zarr.storage import LocalStore

import dask_zcollection as zc
from dask_zcollection.io import _fastread
from dask_zcollection.io._fastread import ArrayHandle, Scratch

COMPRESSORS: dict[str, Any] = {
    "zstd": ZstdCodec(level=1),
    "blosc": BloscCodec(cname="lz4", clevel=5, shuffle="shuffle"),
    "gzip": GzipCodec(level=1),
}


async def local_array(root: Path, data: numpy.ndarray, chunk: int, name: str, crc: bool) -> Any:
    store = LocalStore(root)
    chain = [COMPRESSORS[name], *([Crc32cCodec()] if crc else [])]
    arr = await create_array(
        store,
        name="v",
        shape=data.shape,
        dtype=data.dtype,
        chunks=(chunk, *data.shape[1:]),
        compressors=chain,
        fill_value=-1.0,
        config={"write_empty_chunks": False},
    )
    await arr.setitem(Ellipsis, data)
    buf = await store.get("v/zarr.json", prototype=default_buffer_prototype())
    assert buf is not None
    return ArrayHandle(store, "v", json.loads(buf.to_bytes()), data.dtype, -1.0)


@pytest.mark.parametrize("width", [3, 1000], ids=["on-the-loop", "on-codec-threads"])
@pytest.mark.parametrize("crc", [False, True], ids=["nocrc", "crc"])
@pytest.mark.parametrize("name", sorted(COMPRESSORS))
def test_local_chunks_are_read_from_their_files(
    tmp_path: Path, name: str, crc: bool, width: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    # 10 rows of 3 float64 are read on the event loop, 10 rows of 1000 on codec threads.
    assert (10 * width * 8 <= _fastread._INLINE_BYTES) is (width == 3)
    rng = numpy.random.default_rng(3)
    data = rng.random((45, width))
    data[10:20] = -1.0  # a chunk of fill values only: not written
    handle = asyncio.run(local_array(tmp_path, data, 10, name, crc))
    assert handle.compressor is not None and handle.crc is crc
    assert not (tmp_path / "v" / "c" / "1" / "0").exists()
    gets: list[str] = []
    real = LocalStore.get

    async def spy(self: Any, key: str, *args: Any, **kwargs: Any) -> Any:
        gets.append(key)
        return await real(self, key, *args, **kwargs)

    monkeypatch.setattr(LocalStore, "get", spy)

    async def reads() -> list[numpy.ndarray]:
        # Whole chunks, parts of chunks, the partial last one, the missing one, at once.
        spans = [(0, 45), (3, 7), (0, 10), (12, 31), (40, 45), (44, 45), (9, 41)]
        got = await asyncio.gather(*(handle.read(a, b) for a, b in spans))
        for (a, b), values in zip(spans, got, strict=True):
            numpy.testing.assert_array_equal(values, data[a:b])
        return got

    first = asyncio.run(reads())
    second = asyncio.run(reads())
    # The first results are intact after the second reads reused the scratch buffers.
    for a, b in zip(first, second, strict=True):
        assert not numpy.shares_memory(a, b)
        numpy.testing.assert_array_equal(a, b)
    assert gets == []  # no chunk went through zarr's store


def test_scratch_lends_distinct_buffers_and_keeps_a_few() -> None:
    scratch = Scratch(keep=2, largest=1 << 20, total=1 << 21)
    with scratch.take(1000) as a, scratch.take(1000) as b:
        assert a.nbytes == b.nbytes == 1000
        assert not numpy.shares_memory(a, b)  # both lent at once: never the same memory
        a[:] = 1
        b[:] = 2
        assert (a == 1).all() and (b == 2).all()
        first = a.__array_interface__["data"][0]
    held = scratch.nbytes
    assert held >= 2000
    with scratch.take(900) as c:  # a free buffer large enough is lent again
        reused = c.__array_interface__["data"][0]
    assert reused in (first, b.__array_interface__["data"][0])
    assert scratch.nbytes == held
    with scratch.take(10), scratch.take(10), scratch.take(10):
        pass
    assert len(scratch._free) == 2  # no more than ``keep``
    with scratch.take(2 << 20):  # above ``largest``: never kept
        pass
    assert all(buf.nbytes <= 1 << 20 for buf in scratch._free)
    with scratch.take(900_000), scratch.take(900_000), scratch.take(900_000):
        pass
    assert scratch.nbytes <= 1 << 21  # no more than ``total``
    assert len(scratch._free) == 2


def test_scratch_of_a_forked_child_is_its_own() -> None:
    parent = _fastread._scratch()
    assert _fastread._scratch() is parent
    _fastread._SCRATCH_PID = -1  # as seen from a child after fork
    try:
        assert _fastread._scratch() is not parent
    finally:
        _fastread._SCRATCH, _fastread._SCRATCH_PID = parent, __import__("os").getpid()


def test_truncated_blosc_frame_is_corrupted_after_a_good_read(tmp_path: Path) -> None:
    # Without a checksum, blosc trusts the size in the frame's header: the bytes after
    # a truncated frame in a reused buffer (the previous chunk's) must never be decoded.
    rng = numpy.random.default_rng(4)
    data = rng.random((40, 2))
    handle = asyncio.run(local_array(tmp_path, data, 10, "blosc", crc=False))
    numpy.testing.assert_array_equal(asyncio.run(handle.read()), data)
    chunk = tmp_path / "v" / "c" / "2" / "0"
    chunk.write_bytes(chunk.read_bytes()[:40])
    with pytest.raises(zc.CorruptedDataError, match="truncated blosc frame") as info:
        asyncio.run(handle.read())
    assert "v/c/2/0" in str(info.value)
