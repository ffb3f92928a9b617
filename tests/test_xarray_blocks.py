"""The backend's ``chunks={}`` blocks: decoded into huge-page-aligned buffers, never shared."""

from __future__ import annotations

from typing import Any

import dask
import dask.threaded
import numpy
import pytest
import xarray

import dask_zcollection as zc
from dask_zcollection.xarray_backend import ZCollectionBackendEntrypoint, huge_page_empty

HUGE = 2 << 20
ROWS, WIDTH, CHUNK = 6000, 256, 4096  # float32 rows of 1 KiB: a whole zarr chunk is 4 MiB


@pytest.mark.parametrize(
    ("shape", "dtype", "padded"),
    [
        ((8192, 128), "f8", 8 << 20),  # whole huge pages: nothing to pad
        ((1000, 1000), "f8", 8 << 20),  # 8.0 MB: 0.39 MB of padding is < 1/8
        ((5000, 256), "f4", 5_120_000),  # 5.1 MB: 0.9 MB of padding is > 1/8, not padded
        ((600_000,), "U2", 4_800_000),  # any fixed-size dtype
    ],
)
def test_huge_page_empty_starts_on_a_huge_page(
    shape: tuple[int, ...], dtype: str, padded: int
) -> None:
    a = huge_page_empty(shape, numpy.dtype(dtype))
    assert a.shape == shape and a.dtype == numpy.dtype(dtype)
    assert a.flags.c_contiguous and a.flags.writeable
    assert a.ctypes.data % HUGE == 0
    raw = a.base
    while raw.base is not None:
        raw = raw.base
    assert raw.nbytes == padded + HUGE  # room to align the start, and the padded tail
    b = huge_page_empty(shape, numpy.dtype(dtype))
    assert not numpy.shares_memory(a, b)


@pytest.mark.parametrize(("shape", "dtype"), [((100, 3), "f4"), ((600_000,), "O"), ((0, 9), "f8")])
def test_huge_page_empty_small_or_object_is_plain(shape: tuple[int, ...], dtype: str) -> None:
    a = huge_page_empty(shape, numpy.dtype(dtype))
    assert a.shape == shape and a.dtype == numpy.dtype(dtype) and a.flags.owndata


@pytest.fixture
def wide(memory_url: str) -> tuple[str, numpy.ndarray, numpy.ndarray]:
    """Two daily partitions of 6,000 rows of 1 KiB, zarr chunks of 4 MiB."""
    schema = (
        zc.Schema()
        .with_dimension("time", chunks=CHUNK)
        .with_dimension("x_ac", size=WIDTH, chunks=WIDTH)
        .with_variable("time", dtype="datetime64[ns]", dimensions=("time",))
        .with_variable("ssh", dtype="float32", dimensions=("time", "x_ac"))
        .build()
    )
    col = zc.create_collection(
        memory_url, schema=schema, partitioning=zc.partitioning.Date(("time",), resolution="D")
    )
    n = 2 * ROWS
    time = numpy.datetime64("2024-01-01", "ns") + numpy.arange(n) * numpy.timedelta64(
        86_400_000_000_000 // ROWS, "ns"
    )
    ssh = numpy.random.default_rng(3).standard_normal((n, WIDTH), dtype="float32")
    col.insert({"time": time, "ssh": ssh})
    return memory_url, time, ssh


def test_dask_blocks_decode_into_aligned_buffers_of_their_own(wide: Any) -> None:
    """Each whole-chunk block starts on a huge page; no two blocks or loads share memory."""
    url, _, ssh = wide
    ds = xarray.open_dataset(url, engine=ZCollectionBackendEntrypoint, chunks={})
    array = ds["ssh"].data
    assert array.chunks[0] == (CHUNK, ROWS - CHUNK) * 2  # a block per zarr chunk per partition
    # The blocks as the tasks return them (dask's finalize then copies them into the result).
    blocks = [b[0] for b in dask.threaded.get(dict(array.__dask_graph__()), array.__dask_keys__())]
    at = numpy.cumsum((0, *array.chunks[0]))
    for i, block in enumerate(blocks):
        numpy.testing.assert_array_equal(block, ssh[at[i] : at[i + 1]])
        if block.nbytes >= 4 << 20:
            assert block.ctypes.data % HUGE == 0, i
    assert sum(b.nbytes >= 4 << 20 for b in blocks) == 2
    assert not any(numpy.shares_memory(a, b) for i, a in enumerate(blocks) for b in blocks[i + 1 :])
    # Two overlapping selections computed together, then a full load: all right, all apart.
    first, second = dask.compute(array[: ROWS + 100], array[CHUNK - 50 :])
    numpy.testing.assert_array_equal(first, ssh[: ROWS + 100])
    numpy.testing.assert_array_equal(second, ssh[CHUNK - 50 :])
    loaded = ds.load()["ssh"].values
    numpy.testing.assert_array_equal(loaded, ssh)
    first[:] = -1.0
    numpy.testing.assert_array_equal(second, ssh[CHUNK - 50 :])
    numpy.testing.assert_array_equal(loaded, ssh)


def test_lazy_rows_read_into_one_aligned_array(wide: Any) -> None:
    """Without dask (``chunks=None``) the rows asked land in one aligned array."""
    url, time, ssh = wide
    ds = xarray.open_dataset(url, engine=ZCollectionBackendEntrypoint)
    part = ds["ssh"].isel(time=slice(CHUNK - 10, 2 * ROWS - 7))
    values = part.values
    numpy.testing.assert_array_equal(values, ssh[CHUNK - 10 : 2 * ROWS - 7])
    assert values.ctypes.data % HUGE == 0
    numpy.testing.assert_array_equal(ds["time"].values, time)
