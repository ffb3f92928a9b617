"""Chunk I/O without zarr's pipeline for simple layouts: decode in place, encode in bulk.

For the common layout (regular chunk grid, no sharding, ``bytes`` serializer
plus one numcodecs compressor, chunks spanning the trailing dimensions) a
chunk that lies wholly inside the requested rows is decompressed directly into
its place in the result: no intermediate array, no copy on the event loop
thread. (De)compression runs on a small thread pool (zstd, blosc and zlib
release the GIL). Anything else goes through zarr's own pipeline.

On a local store (zarr's ``LocalStore``) a chunk file is read on the codec
thread that decodes it. A large one on a local file system is mapped (read-only,
``MAP_POPULATE``) and decoded from the page cache, which saves copying the
compressed bytes (a tenth of a read's CPU, see ``docs/xarray.md``); others are
read into a reused scratch buffer: the compressed bytes never escape the
decode, so they need no fresh allocation per chunk. Fresh large allocations are
what a ``distributed`` worker pays for most: its nanny sets
``MALLOC_TRIM_THRESHOLD_``, which pins glibc's mmap threshold at 128 KiB, so
each one is mapped, page-faulted and unmapped again (see
``docs/distributed.md``).

A mapped file cut short under a reader makes the kernel kill the process
(``SIGBUS``) where ``read()`` would return fewer bytes. Nothing of ours cuts a
file: zarr's and our stores replace a file by renaming a new one over it (the
mapped one stays whole). So only files on local file systems are mapped: on a
network file system another host's delete can do the same. ``dask.config``
``zcollection.read-mmap: false`` turns it off.

Both paths check what they read (``_integrity``): the crc32c trailer of a
chain that ends with one, and the array's record of written chunks. A chunk
that fails either, or that its codec cannot decode, raises
:class:`~dask_zcollection.errors.CorruptedDataError` naming its key.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import mmap
import os
import re
import sys
import threading
import traceback
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from typing import Any, NamedTuple

import google_crc32c
import numcodecs
import numpy
from zarr.buffer import default_buffer_prototype
from zarr.storage import LocalStore, StorePath

from .._zarr import AsyncArray, array_from_metadata, read_selection_into
from ..errors import CorruptedDataError, StorageError
from ._integrity import (
    _DIGEST_RETRIES,
    CheckedStore,
    ChunkRecord,
    corrupted,
    missing_chunk,
    reread_record,
    split_trailer,
    stamp_of,
)

__all__ = ["ArrayHandle", "encode_chunks", "simple_layout"]

_POOL: ThreadPoolExecutor | None = None
_POOL_PID = 0
#: Chunk reads in flight per array read.
_READ_CONCURRENCY = 16
#: Rows of a local chunk up to this many bytes are read and decoded on the event loop.
_INLINE_BYTES = 1 << 16
#: Local chunk files this large or larger are mapped rather than read (see module doc).
_MAP_BYTES = 1 << 20
#: File systems whose files are mapped: those of one host, whose files no other host deletes.
_LOCAL_FILESYSTEMS = frozenset(
    {"ext2", "ext3", "ext4", "xfs", "btrfs", "tmpfs", "f2fs", "zfs", "overlay", "bcachefs"}
)
_MAP_FLAGS = getattr(mmap, "MAP_SHARED", 0) | getattr(mmap, "MAP_POPULATE", 0)


def _pool() -> ThreadPoolExecutor:
    global _POOL, _POOL_PID
    if _POOL is None or os.getpid() != _POOL_PID:  # a forked child needs its own threads
        _POOL = ThreadPoolExecutor(
            max_workers=max(2, os.cpu_count() or 2), thread_name_prefix="zc-codec"
        )
        _POOL_PID = os.getpid()
    return _POOL


class Scratch:
    """Reusable byte buffers for data that never leaves a decode.

    The compressed bytes of a chunk and a whole chunk decoded before a slice of
    it is copied out: :meth:`take` lends a buffer for the ``with`` block, and
    it returns to the free list afterwards. No result (an array handed to the
    caller) is ever built on one of these buffers.

    Parameters
    ----------
    keep : int
        Free buffers kept at most (others are released).
    largest : int
        Bytes above which a buffer is never kept.
    total : int
        Bytes the free buffers hold at most.
    """

    def __init__(self, keep: int, largest: int, total: int) -> None:
        self.keep, self.largest, self.total = keep, largest, total
        self._free: list[numpy.ndarray] = []
        self._lock = threading.Lock()

    @staticmethod
    def _size(nbytes: int) -> int:
        # Rounded up (1/8 more, 64 KiB steps) so that chunks of nearby sizes share buffers.
        step = 1 << 16
        return -(-(nbytes + nbytes // 8) // step) * step

    @contextmanager
    def take(self, nbytes: int) -> Iterator[numpy.ndarray]:
        """A ``uint8`` buffer of ``nbytes`` for the ``with`` block (its contents undefined)."""
        buf: numpy.ndarray | None = None
        with self._lock:
            fits = [i for i, b in enumerate(self._free) if b.nbytes >= nbytes]
            if fits:
                buf = self._free.pop(min(fits, key=lambda i: self._free[i].nbytes))
        if buf is None:
            buf = numpy.empty(self._size(nbytes), dtype=numpy.uint8)
        try:
            yield buf[:nbytes]
        finally:
            if buf.nbytes <= self.largest:
                with self._lock:
                    self._free.append(buf)
                    sizes = [b.nbytes for b in self._free]
                    while len(sizes) > self.keep or sum(sizes) > self.total:
                        i = sizes.index(min(sizes))  # release the smallest
                        del self._free[i], sizes[i]

    @property
    def nbytes(self) -> int:
        """Bytes held by the free buffers."""
        with self._lock:
            return sum(b.nbytes for b in self._free)


_SCRATCH: Scratch | None = None
_SCRATCH_PID = 0


def _scratch() -> Scratch:
    global _SCRATCH, _SCRATCH_PID
    if _SCRATCH is None or os.getpid() != _SCRATCH_PID:  # a forked child: a fresh lock
        # One buffer per codec thread for the compressed bytes, one for a partial
        # chunk; what a process keeps is bounded whatever its number of cores.
        threads = min(8, max(2, os.cpu_count() or 2))
        _SCRATCH = Scratch(keep=2 * threads, largest=64 << 20, total=256 << 20)
        _SCRATCH_PID = os.getpid()
    return _SCRATCH


def filesystem_type(path: str, mountinfo: str | None = None) -> str | None:
    """The type of the file system holding ``path`` (Linux ``mountinfo``), else ``None``.

    ``mountinfo`` is the text of ``/proc/self/mountinfo`` (read when ``None``).
    """
    if mountinfo is None:
        try:
            with open("/proc/self/mountinfo", encoding="utf-8", errors="replace") as f:
                mountinfo = f.read()
        except OSError:
            return None
    path = os.path.realpath(path)
    best, kind = -1, None
    for line in mountinfo.splitlines():
        fields = line.split(" - ", 1)
        head = fields[0].split()
        if len(fields) != 2 or len(head) < 5 or not fields[1].split():
            continue
        # Mount points escape spaces and the like as octal (``\040``).
        point = re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), head[4])
        inside = path == point or path.startswith(point.rstrip("/") + "/")
        if inside and len(point) > best:  # the last of equal mounts is the one on top
            best, kind = len(point), fields[1].split()[0]
        elif inside and len(point) == best:
            kind = fields[1].split()[0]
    return kind


@functools.lru_cache(maxsize=64)
def _local_filesystem(root: str) -> bool:
    return filesystem_type(root) in _LOCAL_FILESYSTEMS


def mappable(root: str) -> bool:
    """Whether large chunk files below ``root`` are mapped (see module doc)."""
    import dask.config

    if not _MAP_FLAGS or not dask.config.get("zcollection.read-mmap", True):
        return False
    return _local_filesystem(root)


def _mapped(f: Any, use: Any) -> Any:
    """``use(contents)`` on the open file ``f`` mapped read-only."""
    block = mmap.mmap(f.fileno(), 0, flags=_MAP_FLAGS, prot=mmap.PROT_READ)
    try:
        data = numpy.frombuffer(block, dtype=numpy.uint8)
        try:
            return use(data)
        except BaseException as err:
            # The failed decode's frames view the mapping: their locals go, so it can close.
            chain: list[BaseException] = []
            link: BaseException | None = err
            while link is not None and link not in chain:
                chain.append(link)
                traceback.clear_frames(link.__traceback__)
                link = link.__cause__ or link.__context__
            raise
        finally:
            del data
    finally:
        # A view still alive (a traceback's frame) keeps it mapped until it is freed.
        with contextlib.suppress(BufferError):
            block.close()


def _read_file(path: str, buf_of: Scratch, use: Any, mapped: bool = False) -> Any:
    """``use(bytes_read)`` on the contents of the file at ``path``.

    A file of at least :data:`_MAP_BYTES` is mapped when ``mapped`` is true,
    others are read into a scratch buffer. Returns ``None`` when there is no
    such file (zarr's ``LocalStore.get``: a missing chunk).
    """
    try:
        f = open(path, "rb", buffering=0)  # noqa: SIM115 - closed below, after the decode
    except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
        return None
    with f:
        size = os.fstat(f.fileno()).st_size
        if mapped and size >= _MAP_BYTES:
            return _mapped(f, use)
        # One byte more than its size: a file that grew since is read to its end.
        with buf_of.take(size + 1) as buf:
            n = 0
            view = memoryview(buf)
            try:
                while n < len(buf):
                    got = f.readinto(view[n:])
                    if not got:
                        break
                    n += got
            except IsADirectoryError:
                return None
            finally:
                view.release()
            if n <= size:
                return use(buf[:n])
            data = numpy.frombuffer(bytes(buf[:n]) + f.read(), dtype=numpy.uint8)
        return use(data)


def _check_blosc(data: numpy.ndarray, key: str) -> None:
    """Refuse a blosc frame whose header disagrees with its size.

    Blosc decompresses from a pointer, trusting the compressed size its
    16-byte header states: a truncated frame would be decoded from whatever
    memory follows it (a reused buffer holds the previous chunk's bytes).
    """
    if data.size < 16 or int(data[12:16].view("<u4")[0]) != data.size:
        raise corrupted(key, f"cannot decode chunk {key!r}: a truncated blosc frame")


def _compressor(codec: dict[str, Any]) -> Any:
    name = codec.get("name")
    conf = codec.get("configuration") or {}
    if name == "zstd":
        return numcodecs.Zstd(level=conf.get("level", 0))
    if name == "gzip":
        return numcodecs.GZip(level=conf.get("level", 1))
    if name == "blosc":
        shuffle = {"noshuffle": 0, "shuffle": 1, "bitshuffle": 2}.get(
            conf.get("shuffle", "noshuffle"), 0
        )
        return numcodecs.Blosc(
            cname=conf.get("cname", "lz4"), clevel=conf.get("clevel", 5), shuffle=shuffle
        )
    raise NotImplementedError(name)


class Layout(NamedTuple):
    """A simple layout's compressor, and whether its chunks end with a crc32c trailer."""

    compressor: Any
    crc: bool


def simple_layout(doc: dict[str, Any], dtype: numpy.dtype[Any]) -> Layout | None:
    """The codecs of a simple array layout (see module doc), else ``None``."""
    grid = doc.get("chunk_grid") or {}
    if grid.get("name") != "regular" or doc.get("zarr_format") != 3:
        return None
    enc = doc.get("chunk_key_encoding") or {}
    if (
        enc.get("name") != "default"
        or (enc.get("configuration") or {}).get("separator", "/") != "/"
    ):
        return None
    chunks = grid["configuration"]["chunk_shape"]
    shape = doc.get("shape") or []
    if not shape or list(chunks[1:]) != list(shape[1:]):
        return None  # split along a trailing dimension: let zarr assemble it
    if dtype.kind not in "biufcmM" or dtype.hasobject:
        return None
    codecs = doc.get("codecs") or []
    crc = bool(codecs) and codecs[-1].get("name") == "crc32c"
    if crc:
        codecs = codecs[:-1]
    if len(codecs) != 2 or codecs[0].get("name") != "bytes":
        return None
    endian = (codecs[0].get("configuration") or {}).get("endian", "little")
    if dtype.itemsize > 1 and endian != sys.byteorder:
        return None
    try:
        return Layout(_compressor(codecs[1]), crc)
    except NotImplementedError:
        return None


@functools.lru_cache(maxsize=256)
def _cached_layout(text: str, dtype: str) -> Layout | None:
    return simple_layout(json.loads(text), numpy.dtype(dtype))


class ArrayHandle:
    """An opened array: its ``zarr.json`` document, read without building a zarr array.

    The zarr ``AsyncArray`` (parsing the metadata, building a codec pipeline)
    is only made for layouts the fast path does not handle.
    """

    __slots__ = (
        "_array",
        "chunk_rows",
        "compressor",
        "crc",
        "doc",
        "dtype",
        "fill",
        "key",
        "ndim",
        "record",
        "shape",
        "store",
    )

    def __init__(
        self, store: Any, key: str, doc: dict[str, Any], dtype: numpy.dtype[Any], fill: Any
    ) -> None:
        self.store, self.key, self.doc, self.dtype, self.fill = store, key, doc, dtype, fill
        self.shape: tuple[int, ...] = tuple(doc.get("shape") or ())
        self.ndim = len(self.shape)
        self.compressor: Any = None
        self.crc = False
        self.chunk_rows = 0
        #: The record of written chunks (``None``: an array written without one).
        self.record = ChunkRecord.of(doc)
        if self.ndim:
            layout = {
                k: doc.get(k) for k in ("chunk_grid", "chunk_key_encoding", "codecs", "zarr_format")
            }
            layout["shape"] = [0, *self.shape[1:]]
            simple = _cached_layout(json.dumps(layout, sort_keys=True), dtype.str)
            if simple is not None:
                self.compressor, self.crc = simple
                self.chunk_rows = int(doc["chunk_grid"]["configuration"]["chunk_shape"][0])
        self._array: AsyncArray[Any] | None = None

    def zarr_array(self) -> AsyncArray[Any]:
        """The zarr array (built on first use), reading through a :class:`CheckedStore`."""
        if self._array is None:
            checked = CheckedStore(self.store, self.key, self.doc, self.record)
            self._array = array_from_metadata(self.doc, StorePath(checked, self.key))
        return self._array

    async def read(self, start: int = 0, stop: int | None = None) -> numpy.ndarray:
        """Rows ``start:stop`` as a new array (the whole value of a 0-d array)."""
        if not self.ndim:
            try:
                return numpy.asarray(await self.zarr_array().getitem(()))
            except (ValueError, RuntimeError) as err:
                raise corrupted(self.key, f"cannot decode array {self.key!r}: {err}") from err
        stop = self.shape[0] if stop is None else min(stop, self.shape[0])
        out = numpy.empty((max(0, stop - start), *self.shape[1:]), dtype=self.dtype)
        await self.read_into(start, stop, out)
        return out

    async def read_into(self, start: int, stop: int, out: numpy.ndarray) -> None:
        """Decode rows ``start:stop`` into ``out`` (C-contiguous for the fast path).

        Raises
        ------
        CorruptedDataError
            When a chunk is damaged, swapped or missing (see ``_integrity``).
        """
        if stop <= start:
            return
        if self.compressor is None or not out.flags.c_contiguous:
            selection = (slice(start, stop),) + (slice(None),) * (self.ndim - 1)
            try:
                await read_selection_into(self.zarr_array(), selection, out)
            except (ValueError, RuntimeError) as err:  # a codec failed on damaged bytes
                raise corrupted(
                    self.key, f"cannot decode rows {start}:{stop} of array {self.key!r}: {err}"
                ) from err
            return
        c = self.chunk_rows
        loop = asyncio.get_running_loop()
        pool = _pool()
        sem = asyncio.Semaphore(_READ_CONCURRENCY)
        prototype = default_buffer_prototype()
        tail = "/0" * (self.ndim - 1)
        coords_tail = (0,) * (self.ndim - 1)

        # A local chunk is read and decoded in one step on a codec thread.
        root = str(self.store.root) if type(self.store) is LocalStore else None
        mapped = root is not None and mappable(root)

        async def one(i: int) -> None:
            lo, hi = i * c, min((i + 1) * c, self.shape[0])
            a, b = max(lo, start), min(hi, stop)
            target = out[a - start : b - start]
            key = f"{self.key}/c/{i}{tail}"
            for attempt in range(_DIGEST_RETRIES + 1):
                entry = None if self.record is None else self.record.entry((i, *coords_tail))
                if root is not None and target.nbytes <= _INLINE_BYTES:
                    # A small chunk: read and decoded on the loop, cheaper than a thread hop.
                    done = self._read_local(root, key, target, a - lo, b - lo, entry, mapped)
                elif root is not None:
                    async with sem:
                        done = await loop.run_in_executor(
                            pool, self._read_local, root, key, target, a - lo, b - lo, entry,
                            mapped,
                        )  # fmt: skip
                else:
                    async with sem:
                        raw = await self.store.get(key, prototype=prototype)
                    done = None
                    if raw is not None:
                        done = await loop.run_in_executor(
                            pool, self._decode, raw.as_numpy_array(), target, a - lo, b - lo, key,
                            entry,
                        )  # fmt: skip
                if done is None:  # zarr semantics: a missing chunk holds the fill value
                    if entry is not None:
                        raise await missing_chunk(self.store, self.key, key, stamp_of(self.doc))
                    target[...] = self.fill if self.fill is not None else 0
                    return
                if done:
                    return
                if attempt < _DIGEST_RETRIES:
                    # An in-place append may have rewritten the chunk since the
                    # record was read: read both again.
                    await asyncio.sleep(0.02 * (attempt + 1))
                    stamp = stamp_of(self.doc)
                    self.record = await reread_record(self.store, self.key, stamp) or self.record
            raise corrupted(
                key, f"chunk {key!r} is not the chunk written at this index (swapped or replaced)"
            )

        await asyncio.gather(*(one(i) for i in range(start // c, (stop - 1) // c + 1)))

    async def check(self, stop: int) -> tuple[int, list[tuple[str, str]]]:
        """Read rows ``[0, stop)`` chunk by chunk (one row of chunks at a time).

        Returns
        -------
        tuple
            The number of chunk rows read, and the damaged ones as ``(key, reason)``.
        """
        if not self.ndim:
            try:
                await self.read()
            except CorruptedDataError as err:
                return 1, [(getattr(err, "key", self.key), str(err))]
            return 1, []
        grid = self.doc["chunk_grid"]["configuration"]["chunk_shape"]
        step = self.chunk_rows or int(grid[0])
        damaged: list[tuple[str, str]] = []
        sem = asyncio.Semaphore(4)  # a few chunks in memory at a time

        async def one(i: int) -> None:
            lo, hi = i * step, min((i + 1) * step, stop)
            out = numpy.empty((hi - lo, *self.shape[1:]), dtype=self.dtype)
            async with sem:
                try:
                    await self.read_into(lo, hi, out)
                except CorruptedDataError as err:
                    damaged.append((getattr(err, "key", self.key), str(err)))

        count = -(-stop // step) if step else 0
        await asyncio.gather(*(one(i) for i in range(count)))
        return count, sorted(damaged)

    def _decode(
        self,
        data: numpy.ndarray,
        target: numpy.ndarray,
        a: int,
        b: int,
        key: str,
        entry: int | bool | None,
    ) -> bool:
        """Decode rows ``a:b`` of one chunk into ``target``; ``False``: not the recorded chunk."""
        if self.crc:
            data, digest = split_trailer(data, key)
            if entry is not None and entry is not True and entry != digest:
                return False
        if isinstance(self.compressor, numcodecs.Blosc):
            _check_blosc(data, key)
        full = self.chunk_rows
        try:
            if a == 0 and b == full:
                # The whole chunk lands in place: decompress straight into the result.
                self.compressor.decode(data, out=target.view(numpy.uint8).reshape(-1))
                return True
            # Part of the chunk is kept: decode it whole into a scratch buffer, copy the rows.
            row = target.dtype.itemsize * int(numpy.prod(self.shape[1:], dtype=numpy.int64))
            with _scratch().take(full * row) as buf:
                self.compressor.decode(data, out=buf)
                chunk = buf.view(self.dtype).reshape((full, *self.shape[1:]))
                target[...] = chunk[a:b]
        except (ValueError, RuntimeError) as err:
            raise corrupted(key, f"cannot decode chunk {key!r}: {err}") from err
        return True

    def _read_local(
        self,
        root: str,
        key: str,
        target: numpy.ndarray,
        a: int,
        b: int,
        entry: int | bool | None,
        mapped: bool = False,
    ) -> bool | None:
        """:meth:`_decode` of the chunk file ``key`` below ``root``; ``None``: no such file."""
        path = os.path.join(root, *key.split("/"))
        try:
            return _read_file(  # type: ignore[no-any-return]
                path,
                _scratch(),
                lambda data: self._decode(data, target, a, b, key, entry),
                mapped,
            )
        except StorageError:  # CorruptedDataError: named already
            raise
        except OSError as err:
            raise StorageError(f"cannot read chunk {key!r} below {root}: {err}") from err


async def encode_chunks(
    doc: dict[str, Any], data: numpy.ndarray, fill: Any
) -> dict[str, bytes] | None:
    """Encoded chunks of ``data`` (key below the array -> bytes) for a simple layout, else ``None``.

    Edge chunks are padded with ``fill`` as zarr does; large arrays are
    compressed on the codec thread pool.
    """
    layout = simple_layout(doc, data.dtype)
    if layout is None:
        return None
    compressor, crc = layout
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
        encoded = compressor.encode(numpy.ascontiguousarray(block))
        if crc:  # Zarr v3's crc32c codec: the checksum of the bytes, little-endian, after them
            digest = google_crc32c.value(encoded).to_bytes(4, "little")
            return f"c/{i}{tail}", bytes(encoded) + digest
        return f"c/{i}{tail}", bytes(encoded)

    count = -(-n // c)
    if data.nbytes < (1 << 20):
        return dict(encode(i) for i in range(count))
    loop = asyncio.get_running_loop()
    pool = _pool()
    return dict(
        await asyncio.gather(*(loop.run_in_executor(pool, encode, i) for i in range(count)))
    )
