"""Chunk I/O without zarr's pipeline for simple layouts: decode in place, encode in bulk.

For the common layout (regular chunk grid, no sharding, ``bytes`` serializer
plus at most one numcodecs compressor) a chunk that lies wholly inside the
requested rows is decompressed directly into its place in the result: no
intermediate array, no copy on the event loop thread. Decompression runs on a
small thread pool (zstd, blosc and zlib release the GIL). Anything else falls
back to zarr's own pipeline.
"""

from __future__ import annotations

import asyncio
import os
import sys
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numcodecs
import numpy
from zarr.core.array import AsyncArray
from zarr.core.buffer import default_buffer_prototype

__all__ = ["FastReader", "encode_chunks", "fast_reader", "simple_layout"]

_POOL: ThreadPoolExecutor | None = None
_POOL_PID = 0


def _pool() -> ThreadPoolExecutor:
    global _POOL, _POOL_PID
    if _POOL is None or _POOL_PID != os.getpid():  # a forked child needs its own threads
        _POOL = ThreadPoolExecutor(max_workers=max(2, os.cpu_count() or 2), thread_name_prefix="zc-decode")
        _POOL_PID = os.getpid()
    return _POOL


def _compressor(codec: dict[str, Any]) -> Any:
    name = codec.get("name")
    conf = codec.get("configuration") or {}
    if name == "zstd":
        return numcodecs.Zstd(level=conf.get("level", 0))
    if name == "gzip":
        return numcodecs.GZip(level=conf.get("level", 1))
    if name == "blosc":
        shuffle = {"noshuffle": 0, "shuffle": 1, "bitshuffle": 2}.get(conf.get("shuffle", "noshuffle"), 0)
        return numcodecs.Blosc(
            cname=conf.get("cname", "lz4"), clevel=conf.get("clevel", 5), shuffle=shuffle
        )
    raise NotImplementedError(name)


class FastReader:
    """Reads row ranges of one simple array into preallocated outputs."""

    def __init__(self, arr: AsyncArray[Any], compressor: Any, chunk_rows: int) -> None:
        self.arr = arr
        self.compressor = compressor
        self.chunk_rows = chunk_rows
        meta = arr.metadata
        self.dtype = numpy.dtype(arr.dtype)
        self.shape = tuple(arr.shape)
        self.fill = meta.fill_value
        self.trailing = self.shape[1:]
        self.ndim = len(self.shape)

    def _key(self, i: int) -> str:
        return "/".join(["c", str(i)] + ["0"] * (self.ndim - 1))

    async def read_into(self, start: int, stop: int, out: numpy.ndarray) -> None:
        """Fill ``out`` (rows ``start:stop``, C-contiguous) from the stored chunks."""
        if stop <= start:
            return
        c = self.chunk_rows
        store_path = self.arr.store_path
        prototype = default_buffer_prototype()
        loop = asyncio.get_running_loop()
        pool = _pool()
        sem = asyncio.Semaphore(16)

        async def one(i: int) -> None:
            lo, hi = i * c, min((i + 1) * c, self.shape[0])
            a, b = max(lo, start), min(hi, stop)
            target = out[a - start : b - start]
            async with sem:
                raw = await (store_path / self._key(i)).get(prototype=prototype)
            if raw is None:
                target[...] = self.fill
                return
            data = raw.as_numpy_array()
            await loop.run_in_executor(pool, self._decode, data, target, a - lo, b - lo, hi - lo)

        first, last = start // c, (stop - 1) // c
        await asyncio.gather(*(one(i) for i in range(first, last + 1)))

    def _decode(self, data: numpy.ndarray, target: numpy.ndarray, a: int, b: int, n: int) -> None:
        full = self.chunk_rows
        if a == 0 and b == full and target.flags.c_contiguous:
            # The whole chunk lands in place: decompress straight into the result.
            self.compressor.decode(data, out=target.view(numpy.uint8).reshape(-1))
            return
        chunk = numpy.empty((full, *self.trailing), dtype=self.dtype)
        self.compressor.decode(data, out=chunk.view(numpy.uint8).reshape(-1))
        target[...] = chunk[a:b]


def fast_reader(arr: AsyncArray[Any]) -> FastReader | None:
    """A :class:`FastReader` for ``arr`` when its layout allows, else ``None``."""
    try:
        doc = arr.metadata.to_dict()
    except Exception:  # pragma: no cover - exotic metadata
        return None
    compressor = simple_layout(doc, numpy.dtype(arr.dtype))
    if compressor is None:
        return None
    return FastReader(arr, compressor, int(doc["chunk_grid"]["configuration"]["chunk_shape"][0]))

def simple_layout(doc: dict[str, Any], dtype: numpy.dtype[Any]) -> Any:
    """The numcodecs compressor of a simple array layout (see module doc), else ``None``."""
    grid = doc.get("chunk_grid", {})
    if grid.get("name") != "regular" or doc.get("zarr_format") != 3:
        return None
    enc = doc.get("chunk_key_encoding", {})
    if enc.get("name") != "default" or (enc.get("configuration") or {}).get("separator", "/") != "/":
        return None
    chunks = grid["configuration"]["chunk_shape"]
    shape = doc["shape"]
    if not shape or list(chunks[1:]) != list(shape[1:]):
        return None  # split along a trailing dimension: let zarr assemble it
    if dtype.kind not in "biufcmM" or dtype.hasobject:
        return None
    codecs = doc.get("codecs", [])
    if not codecs or codecs[0].get("name") != "bytes" or len(codecs) != 2:
        return None
    endian = (codecs[0].get("configuration") or {}).get("endian", "little")
    if dtype.itemsize > 1 and endian != sys.byteorder:
        return None
    try:
        return _compressor(codecs[1])
    except NotImplementedError:
        return None


async def encode_chunks(
    doc: dict[str, Any], data: numpy.ndarray, fill: Any
) -> dict[str, bytes] | None:
    """Encoded chunks of ``data`` (key below the array -> bytes) for a simple layout, else ``None``.

    Edge chunks are padded with ``fill`` as zarr does; large arrays are
    compressed on the decode/encode thread pool.
    """
    compressor = simple_layout(doc, data.dtype)
    if compressor is None:
        return None
    c = int(doc["chunk_grid"]["configuration"]["chunk_shape"][0])
    n = data.shape[0]
    tail = "/0" * (data.ndim - 1)

    def encode(i: int) -> tuple[str, bytes]:
        block = data[i * c : (i + 1) * c]
        if len(block) < c:
            padded = numpy.empty((c, *data.shape[1:]), dtype=data.dtype)
            padded[: len(block)] = block
            padded[len(block) :] = fill if fill is not None else 0
            block = padded
        return f"c/{i}{tail}", bytes(compressor.encode(numpy.ascontiguousarray(block)))

    count = -(-n // c)
    if data.nbytes < (1 << 20):
        return dict(encode(i) for i in range(count))
    loop = asyncio.get_running_loop()
    pool = _pool()
    return dict(await asyncio.gather(*(loop.run_in_executor(pool, encode, i) for i in range(count))))
