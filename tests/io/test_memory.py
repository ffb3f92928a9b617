"""Large read results on reused memory (``io/_memory.py``).

A mapping goes back to the pool only once no array refers to it, and a read on
reused memory (which still holds the previous result, poisoned here) returns
exactly the stored values: windows starting and ending mid-chunk, on chunk
edges, across partitions, 2-D and nested variables, fill values.
"""

from __future__ import annotations

import gc
import threading
import time
from pathlib import Path
from typing import Any

import dask.config
import numpy
import pytest
import xarray

import dask_zcollection as zc
from dask_zcollection.io import _memory
from dask_zcollection.io._memory import ResultMemory
from dask_zcollection.xarray_backend import ZCollectionBackendEntrypoint

MIB = 1 << 20


def address(a: numpy.ndarray) -> int:
    return int(a.__array_interface__["data"][0])


def test_small_results_are_plain_numpy() -> None:
    mem = ResultMemory(limit=64 * MIB)
    a = mem.empty((10, 3), numpy.float32)
    assert a.base is None and a.shape == (10, 3) and a.dtype == numpy.float32
    big = mem.empty((3, MIB), numpy.float32)  # 12 MiB: on a mapping
    assert big.base is not None and big.flags.c_contiguous and big.flags.writeable
    assert big.shape == (3, MIB) and big.dtype == numpy.float32


def test_limit_zero_keeps_nothing() -> None:
    mem = ResultMemory(limit=0)
    a = mem.empty((3, MIB), numpy.float32)
    assert a.base is None
    with dask.config.set({"zcollection.read-memory": 0}):
        assert ResultMemory().empty((3, MIB), numpy.float32).base is None


def test_a_mapping_is_reused_only_when_no_array_refers_to_it() -> None:
    mem = ResultMemory(limit=64 * MIB)
    a = mem.empty((3, MIB), numpy.float32)
    a[...] = 1.5
    first = address(a)
    view = a[1:, ::2]  # its base is the owner too, not ``a``
    del a
    gc.collect()
    assert mem.nbytes == 0
    b = mem.empty((3, MIB), numpy.float32)
    assert address(b) != first  # the view still uses the first mapping
    assert (view == 1.5).all()
    del view
    gc.collect()
    assert mem.nbytes == 12 * MIB
    c = mem.empty((3, MIB), numpy.int32)  # same size, another dtype
    assert address(c) == first and mem.nbytes == 0
    del b, c


def test_kept_mappings_are_bounded_and_sized() -> None:
    mem = ResultMemory(limit=30 * MIB)
    arrays = [mem.empty((3, MIB), numpy.float32) for _ in range(3)]  # 12 MiB each
    del arrays
    gc.collect()
    assert mem.nbytes == 24 * MIB  # the third over the limit is unmapped
    # A mapping more than an eighth larger than asked is not lent.
    small = mem.empty((2, MIB), numpy.float32)  # 8 MiB: too small for a 12 MiB mapping
    assert mem.nbytes == 24 * MIB
    del small
    gc.collect()
    assert mem.nbytes == 20 * MIB  # 32 MiB over the limit: the oldest (12 MiB) unmapped


def test_idle_mappings_are_unmapped(monkeypatch: pytest.MonkeyPatch) -> None:
    mem = ResultMemory(limit=64 * MIB)
    a = mem.empty((3, MIB), numpy.float32)
    del a
    gc.collect()
    assert mem.nbytes == 12 * MIB
    monkeypatch.setattr(_memory, "_IDLE_SECONDS", 0.0)
    assert mem.nbytes == 0


def test_live_arrays_never_share_memory_across_threads(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_memory, "_MIN_BYTES", 0)
    mem = ResultMemory(limit=16 * MIB)  # 8 mappings of 2 MiB for 4 threads: constant reuse
    errors: list[str] = []

    def work(k: int) -> None:
        for i in range(200):
            a = mem.empty((1 << 14,), numpy.int64)
            a[...] = k * 1000 + i
            view = a[::7]
            del a
            time.sleep(0.0001)  # let the other threads take memory meanwhile
            if not (view == k * 1000 + i).all():
                errors.append(f"thread {k}, round {i}: overwritten by another")
            del view

    threads = [threading.Thread(target=work, args=(k,)) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert 0 < mem.nbytes <= 16 * MIB


# -- reads on reused memory --------------------------------------------------------------------
#: Rows per zarr chunk; a row every 6 h, monthly partitions.
CHUNK = 4


@pytest.fixture(params=["file", "memory"])
def stored(
    request: pytest.FixtureRequest, factory: Any, tmp_path: Path, memory_url: str
) -> tuple[str, dict[str, numpy.ndarray]]:
    url = f"file://{tmp_path / 'c'}" if request.param == "file" else memory_url
    col = factory.create(url, schema=factory.schema(chunks=CHUNK))
    times = numpy.arange(
        "2024-01-01", "2024-04-01", numpy.timedelta64(6, "h"), dtype="datetime64[ns]"
    )
    data = factory.data(times, seed=5)
    data["quality"][::3] = 255  # at the fill value
    data["ssh"][7:19] = numpy.nan  # three whole chunks of NaN
    col.insert(data)
    return url, data


@pytest.fixture
def reuse_all(monkeypatch: pytest.MonkeyPatch) -> ResultMemory:
    """Every result on a pooled mapping, however small."""
    monkeypatch.setattr(_memory, "_MIN_BYTES", 0)
    mem = ResultMemory(limit=256 * MIB)
    monkeypatch.setattr(_memory, "_MEMORY", mem)
    return mem


#: Windows (first row, last row) of the 364 rows: mid-chunk, on chunk edges, one
#: row, across partitions (January has 124 rows), everything.
WINDOWS = [(1, 6), (4, 7), (4, 8), (3, 12), (123, 124), (100, 250), (0, 363), (200, 200)]


@pytest.mark.parametrize(("first", "last"), WINDOWS)
def test_reads_on_reused_memory_return_the_stored_values(
    stored: tuple[str, dict[str, numpy.ndarray]], reuse_all: ResultMemory, first: int, last: int
) -> None:
    url, data = stored
    t = data["time"]
    window = slice(t[first], t[last])
    names = ["time", "ssh", "quality", "data_01/ku/power"]
    # A read of several partitions is one task decoding into one result per variable
    # (``read_concat``, on the pool); one partition's rows are that partition's task.
    pooled = bool(t[first].astype("M8[M]") != t[last].astype("M8[M]"))
    for round_ in range(3):
        ds = zc.read_collection(url).filter(time=window).compute()
        for name in names:
            got = ds[name].values
            expected = data[name][first : last + 1]
            assert got.dtype == expected.dtype
            numpy.testing.assert_array_equal(got, expected, err_msg=f"{name}, round {round_}")
            if round_ < 2:
                # Poison what the next read will be given.
                got.view(numpy.uint8)[...] = 0x5A
        if round_ == 0:
            assert reuse_all.nbytes == 0  # still in use
        del ds, got
        gc.collect()
        assert (reuse_all.nbytes > 0) is pooled  # returned, for the next round


@pytest.mark.parametrize(("first", "last"), [(3, 12), (100, 250), (5, 362)])
def test_backend_loads_on_reused_memory(
    stored: tuple[str, dict[str, numpy.ndarray]], reuse_all: ResultMemory, first: int, last: int
) -> None:
    url, data = stored
    t = data["time"]
    for _ in range(3):
        ds = xarray.open_dataset(url, engine=ZCollectionBackendEntrypoint)
        sel = ds.sel(time=slice(t[first], t[last])).load()
        expected_ssh = data["ssh"][first : last + 1]
        numpy.testing.assert_array_equal(sel["ssh"].values, expected_ssh)
        numpy.testing.assert_array_equal(sel["time"].values, t[first : last + 1])
        quality = data["quality"][first : last + 1].astype("float32")
        quality[data["quality"][first : last + 1] == 255] = numpy.nan  # CF masking
        numpy.testing.assert_array_equal(sel["quality"].values, quality)
        sel["ssh"].values.view(numpy.uint8)[...] = 0x5A
        del ds, sel
        gc.collect()
    assert reuse_all.nbytes > 0
