"""Large chunk files of a local store decoded from a read-only mapping (``io/_fastread.py``).

A chunk file of at least ``_MAP_BYTES`` on a local file system is mapped and
decoded from the page cache instead of being copied into a scratch buffer.
The values must be those read without the mapping, a damaged file must still
be a :class:`~dask_zcollection.errors.CorruptedDataError` naming its chunk, and
no mapping may outlive the read.
"""

from __future__ import annotations

import asyncio
import gc
import json
import time
from pathlib import Path
from typing import Any

import dask.config
import numpy
import pytest
from zarr.api.asynchronous import create_array
from zarr.buffer import default_buffer_prototype
from zarr.codecs import Crc32cCodec, ZstdCodec
from zarr.storage import LocalStore

import dask_zcollection as zc
from dask_zcollection.io import _fastread
from dask_zcollection.io._fastread import ArrayHandle, filesystem_type, mappable

#: Rows of one chunk: 2 MiB of random float64 (incompressible: a file above ``_MAP_BYTES``).
ROWS = 1 << 18


async def local_array(root: Path, data: numpy.ndarray, crc: bool) -> ArrayHandle:
    store = LocalStore(root)
    arr = await create_array(
        store,
        name="v",
        shape=data.shape,
        dtype=data.dtype,
        chunks=(ROWS,),
        compressors=[ZstdCodec(level=1), *([Crc32cCodec()] if crc else [])],
        fill_value=-1.0,
    )
    await arr.setitem(Ellipsis, data)
    buf = await store.get("v/zarr.json", prototype=default_buffer_prototype())
    assert buf is not None
    return ArrayHandle(store, "v", json.loads(buf.to_bytes()), data.dtype, -1.0)


@pytest.fixture
def mapped_calls(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """The sizes of the files decoded from a mapping."""
    calls: list[int] = []
    real = _fastread._mapped

    def spy(f: Any, use: Any) -> Any:
        calls.append(__import__("os").fstat(f.fileno()).st_size)
        return real(f, use)

    monkeypatch.setattr(_fastread, "_mapped", spy)
    return calls


def chunk_maps(root: Path) -> list[str]:
    """Lines of this process's mappings naming a chunk file below ``root``."""
    with open("/proc/self/maps") as f:
        return [line for line in f if str(root) in line]


@pytest.mark.parametrize("crc", [False, True], ids=["nocrc", "crc"])
def test_large_chunk_files_are_mapped_and_read_as_without(
    tmp_path: Path, crc: bool, mapped_calls: list[int]
) -> None:
    assert mappable(str(tmp_path))  # the test machine's /tmp is a local file system
    data = numpy.random.default_rng(7).random(3 * ROWS - 1000)
    handle = asyncio.run(local_array(tmp_path, data, crc))
    ranges = [(0, len(data)), (5, ROWS - 3), (ROWS - 10, 2 * ROWS + 10), (2 * ROWS, len(data))]
    for start, stop in ranges:
        got = asyncio.run(handle.read(start, stop))
        numpy.testing.assert_array_equal(got, data[start:stop])
    # Every chunk file is above the bound (the short last one too: zarr pads it).
    assert len(mapped_calls) == 3 + 1 + 3 + 1
    assert min(mapped_calls) >= _fastread._MAP_BYTES
    assert chunk_maps(tmp_path) == []  # no mapping outlives its read
    mapped_calls.clear()
    with dask.config.set({"zcollection.read-mmap": False}):
        assert not mappable(str(tmp_path))
        numpy.testing.assert_array_equal(asyncio.run(handle.read()), data)
    assert mapped_calls == []


@pytest.mark.parametrize("crc", [False, True], ids=["nocrc", "crc"])
def test_a_truncated_mapped_chunk_is_corrupted(
    tmp_path: Path, crc: bool, mapped_calls: list[int]
) -> None:
    data = numpy.random.default_rng(8).random(2 * ROWS)
    handle = asyncio.run(local_array(tmp_path, data, crc))
    chunk = tmp_path / "v" / "c" / "1"
    raw = chunk.read_bytes()
    chunk.write_bytes(raw[: len(raw) - 4096])  # still above the bound: mapped
    with pytest.raises(zc.CorruptedDataError) as info:
        asyncio.run(handle.read())
    assert "v/c/1" in str(info.value)
    assert _fastread._MAP_BYTES <= len(raw) - 4096 in mapped_calls
    # The failed decode's frames viewed its mapping: their locals are cleared, so it
    # is closed even while the error (and its traceback) lives.
    assert not [m for m in chunk_maps(tmp_path) if m.rstrip().endswith("/v/c/1")]
    # The other chunk's decode may still run on its codec thread (gather does not stop
    # it): its mapping goes when it ends.
    del info
    gc.collect()
    deadline = time.monotonic() + 5
    while chunk_maps(tmp_path) and time.monotonic() < deadline:
        time.sleep(0.01)
    assert chunk_maps(tmp_path) == []
    # The first chunk still reads.
    numpy.testing.assert_array_equal(asyncio.run(handle.read(0, ROWS)), data[:ROWS])


MOUNTINFO = """\
22 27 0:21 / /proc rw,relatime - proc proc rw
27 1 254:0 / / rw,relatime - ext4 /dev/vda rw
40 27 0:50 / /data rw,relatime - xfs /dev/vdb rw
41 40 0:51 / /data/shared\\040space rw,relatime - nfs4 server:/export rw
42 27 0:52 / /scratch rw,relatime - lustre 10.0.0.1@tcp:/fs rw
43 27 0:53 / /scratch rw,relatime - tmpfs tmpfs rw
"""


@pytest.mark.parametrize(
    ("path", "kind"),
    [
        ("/home/user/col", "ext4"),
        ("/data/col", "xfs"),
        ("/data", "xfs"),
        ("/data/shared space/col", "nfs4"),  # a mount inside a mount, its name escaped
        ("/data/shared", "xfs"),  # a prefix of a mount point's name is not inside it
        ("/scratch/col", "tmpfs"),  # the last of two mounts on one point is on top
        ("/proc/self", "proc"),
    ],
)
def test_filesystem_type_is_that_of_the_longest_mount_point(path: str, kind: str) -> None:
    assert filesystem_type(path, MOUNTINFO) == kind


def test_no_mountinfo_means_no_mapping() -> None:
    assert filesystem_type("/data/col", "") is None
    assert filesystem_type("/data/col", "garbage line\n") is None
    assert None not in _fastread._LOCAL_FILESYSTEMS
    assert "nfs4" not in _fastread._LOCAL_FILESYSTEMS
    assert "lustre" not in _fastread._LOCAL_FILESYSTEMS
