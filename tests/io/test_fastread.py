"""The hand-written codec path (``io/_fastread.py``) against zarr-python, layout by layout.

Arrays are written by zarr-python itself; :class:`ArrayHandle` must decode
exactly what zarr decodes (bit for bit, NaN payloads included) for whole reads
and row ranges, on its fast path for the layouts it accepts and through zarr
(``read_selection_into``) for the others. Each test asserts which path ran. The
encoder (``encode_chunks``) is checked the other way round: zarr reads what it
writes.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable, Iterator
from typing import Any

import numpy
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from zarr.api.asynchronous import create_array, open_array
from zarr.buffer import default_buffer_prototype
from zarr.codecs import (
    BloscCodec,
    BytesCodec,
    Crc32cCodec,
    GzipCodec,
    TransposeCodec,
    ZstdCodec,
)
from zarr.storage import MemoryStore

from dask_zcollection.io import _fastread
from dask_zcollection.io._fastread import ArrayHandle, encode_chunks, simple_layout

_PROTO = default_buffer_prototype()
# zarr's empty-chunk check compares random floats (NaNs) with the fill value.
pytestmark = pytest.mark.filterwarnings("ignore:invalid value encountered in equal:RuntimeWarning")

#: Every dtype kind the fast path takes (``biufcmM``), plus the 1-byte ones.
DTYPES = ["<f8", "<f4", "<f2", "<i8", "<i4", "<i2", "|i1", "|u1", "<u4", "|b1", "<c16"]
DTYPES += ["<M8[ns]", "<M8[s]", "<m8[ns]"]

#: The compressor chains the fast path accepts (one compressor, crc32c or not).
COMPRESSORS: dict[str, Any] = {
    "zstd": ZstdCodec(level=3),
    "zstd-checksum": ZstdCodec(level=1, checksum=True),
    "gzip": GzipCodec(level=1),
    "blosc-lz4-shuffle": BloscCodec(cname="lz4", clevel=5, shuffle="shuffle"),
    "blosc-lz4-noshuffle": BloscCodec(cname="lz4", clevel=5, shuffle="noshuffle"),
    "blosc-zstd-shuffle": BloscCodec(cname="zstd", clevel=3, shuffle="shuffle"),
    "blosc-zstd-bitshuffle": BloscCodec(cname="zstd", clevel=3, shuffle="bitshuffle"),
}


def values(dtype: str, shape: tuple[int, ...], seed: int = 11) -> numpy.ndarray:
    """Random values of every bit pattern (floats: NaNs with payloads, infinities)."""
    rng = numpy.random.default_rng(seed)
    dt = numpy.dtype(dtype)
    if dt.kind == "b":
        return rng.integers(0, 2, size=shape).astype(dt)
    raw = rng.integers(0, 256, size=(*shape, dt.itemsize), dtype=numpy.uint8)
    data = raw.view(dt).reshape(shape)
    if dt.kind in "mM":
        return data
    if dt.kind == "f" and data.size:
        flat = data.reshape(-1)
        flat[:: max(1, flat.size // 4)] = numpy.nan  # canonical NaNs beside the random payloads
    return data


class Array:
    """A zarr-written array: its store, document, and the handle the library opens on it."""

    def __init__(self, store: MemoryStore, doc: dict[str, Any], arr: Any, dtype: str) -> None:
        self.store, self.doc, self.arr = store, doc, arr
        fill = arr.metadata.fill_value
        self.handle = ArrayHandle(store, "v", doc, numpy.dtype(dtype).newbyteorder("="), fill)


async def zarr_array(
    data: numpy.ndarray,
    chunks: tuple[int, ...],
    *,
    compressors: Any = None,
    crc: bool = False,
    fill_value: Any = None,
    **kwargs: Any,
) -> Array:
    store = MemoryStore()
    chain = [] if compressors is None else list(compressors)
    if crc:
        chain.append(Crc32cCodec())
    arr = await create_array(
        store,
        name="v",
        shape=data.shape,
        dtype=data.dtype,
        chunks=chunks,
        compressors=chain or None,
        fill_value=fill_value,
        config={"write_empty_chunks": False},  # all-fill chunks are left missing
        **kwargs,
    )
    if data.size:
        await arr.setitem(Ellipsis, data)
    buf = await store.get("v/zarr.json", prototype=_PROTO)
    assert buf is not None
    return Array(store, json.loads(buf.to_bytes()), arr, str(data.dtype))


def assert_same(got: numpy.ndarray, expected: Any) -> None:
    """Equal values, dtype, shape and (numeric) bytes: NaN payloads count."""
    expected = numpy.asarray(expected)
    assert got.shape == expected.shape
    if got.dtype.kind in "biufcmM":
        expected = expected.astype(got.dtype)  # zarr decodes big-endian data as stored
        numpy.testing.assert_array_equal(
            numpy.ascontiguousarray(got).view(numpy.uint8),
            numpy.ascontiguousarray(expected).view(numpy.uint8),
        )
    else:
        numpy.testing.assert_array_equal(got, expected)


@pytest.fixture
def via_zarr(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[tuple[slice, ...]]]:
    """The selections read through zarr's pipeline (the fallback path)."""
    calls: list[tuple[slice, ...]] = []
    real = _fastread.read_selection_into

    async def spy(arr: Any, selection: tuple[slice, ...], out: numpy.ndarray) -> None:
        calls.append(selection)
        await real(arr, selection, out)

    monkeypatch.setattr(_fastread, "read_selection_into", spy)
    yield calls


def ranges(n: int, c: int) -> list[tuple[int, int | None]]:
    """Row ranges inside one chunk, across chunks, on chunk boundaries and past the end."""
    out: list[tuple[int, int | None]] = [(0, None), (0, n), (0, 1), (n - 1, n), (0, n + 5)]
    out += [(c, 2 * c), (c - 1, c + 1), (1, c - 1), (c, n), (1, n - 1), (n + 1, n + 4)]
    out += [(3, 3), (5, 2)]
    return [(max(0, a), b) for a, b in out]


def check_reads(a: Array, data: numpy.ndarray, c: int) -> None:
    async def run() -> None:
        for start, stop in ranges(len(data), c):
            got = await a.handle.read(start, stop)
            assert_same(got, data[start:stop])
            assert_same(got, await a.arr.getitem(slice(start, stop)))

    asyncio.run(run())


# -- the layouts the fast path accepts ------------------------------------------------------


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("trailing", [(), (3,), (2, 2)], ids=["1d", "2d", "3d"])
def test_every_dtype_decodes_as_zarr(
    dtype: str, trailing: tuple[int, ...], via_zarr: list[Any]
) -> None:
    data = values(dtype, (23, *trailing))
    a = asyncio.run(zarr_array(data, (5, *trailing), compressors=[ZstdCodec(level=1)], crc=True))
    assert a.handle.compressor is not None and a.handle.crc
    check_reads(a, data, 5)
    assert via_zarr == []


@pytest.mark.parametrize("name", sorted(COMPRESSORS))
@pytest.mark.parametrize("crc", [False, True], ids=["nocrc", "crc"])
def test_every_compressor_decodes_as_zarr(name: str, crc: bool, via_zarr: list[Any]) -> None:
    data = values("<f8", (37, 2))
    a = asyncio.run(zarr_array(data, (8, 2), compressors=[COMPRESSORS[name]], crc=crc))
    assert a.handle.compressor is not None and a.handle.crc is crc
    check_reads(a, data, 8)
    assert via_zarr == []


@pytest.mark.parametrize(
    ("n", "c"),
    [(20, 5), (21, 5), (4, 5), (1, 1), (17, 17), (30, 1)],
    ids=["divides", "partial-last", "one-short-chunk", "single-row", "one-chunk", "row-chunks"],
)
def test_chunk_shapes(n: int, c: int, via_zarr: list[Any]) -> None:
    data = values("<i4", (n, 3))
    a = asyncio.run(zarr_array(data, (c, 3), compressors=[BloscCodec(cname="lz4")], crc=True))
    assert a.handle.chunk_rows == c
    check_reads(a, data, c)
    assert via_zarr == []


@pytest.mark.parametrize(
    ("dtype", "fill"),
    [("<f8", numpy.nan), ("<f4", -1.5), ("<i2", 7), ("|b1", True), ("<M8[ns]", "NaT")],
)
def test_missing_chunks_read_as_the_fill_value(dtype: str, fill: Any, via_zarr: list[Any]) -> None:
    data = values(dtype, (22, 2))
    fill_value = numpy.array(fill, dtype=dtype)[()]
    data[5:10] = fill_value  # chunk 1 holds only the fill value: zarr does not write it
    data[20:] = fill_value  # nor the partial last chunk
    a = asyncio.run(zarr_array(data, (5, 2), compressors=[ZstdCodec()], fill_value=fill_value))
    stored = sorted(k for k in a.store._store_dict if "/c/" in k)
    assert stored == ["v/c/0/0", "v/c/2/0", "v/c/3/0"]
    check_reads(a, data, 5)
    assert via_zarr == []


def test_one_byte_dtypes_ignore_endianness(via_zarr: list[Any]) -> None:
    data = values("|u1", (13,))
    a = asyncio.run(
        zarr_array(data, (4,), compressors=[ZstdCodec()], serializer=BytesCodec(endian="big"))
    )
    assert a.handle.compressor is not None
    check_reads(a, data, 4)
    assert via_zarr == []


# -- the layouts it refuses: zarr decodes them ---------------------------------------------


def _refused() -> dict[str, Callable[[], tuple[Array, numpy.ndarray, int]]]:
    def case(
        dtype: str, shape: tuple[int, ...], chunks: tuple[int, ...], **kw: Any
    ) -> Callable[[], tuple[Array, numpy.ndarray, int]]:
        def make() -> tuple[Array, numpy.ndarray, int]:
            data = values(dtype, shape) if dtype != "<U4" else _strings(shape)
            return asyncio.run(zarr_array(data, chunks, **kw)), data, chunks[0]

        return make

    zstd = [ZstdCodec()]
    return {
        "no-compressor": case("<f8", (17, 2), (5, 2)),
        "crc-only": case("<f8", (17, 2), (5, 2), crc=True),
        "two-compressors": case("<f8", (17,), (5,), compressors=[ZstdCodec(), GzipCodec()]),
        "big-endian": case(
            "<f8", (17, 2), (5, 2), compressors=zstd, serializer=BytesCodec(endian="big")
        ),
        "trailing-split": case("<i4", (17, 4), (5, 2), compressors=zstd),
        "filter": case(
            "<i4", (17, 3), (5, 3), compressors=zstd, filters=[TransposeCodec(order=(1, 0))]
        ),
        "sharded": case("<f8", (17, 2), (5, 2), shards=(10, 2), compressors=zstd),
        "dot-separator": case(
            "<f8",
            (17,),
            (5,),
            compressors=zstd,
            chunk_key_encoding={"name": "default", "separator": "."},
        ),
        "v2-keys": case("<f8", (17,), (5,), compressors=zstd, chunk_key_encoding={"name": "v2"}),
        "strings": case("<U4", (17,), (5,), compressors=zstd),
    }


def _strings(shape: tuple[int, ...]) -> numpy.ndarray:
    return numpy.array([f"s{i}" for i in range(int(numpy.prod(shape)))], dtype="<U4").reshape(shape)


REFUSED = _refused()


@pytest.mark.parametrize("name", sorted(REFUSED))
def test_refused_layouts_go_through_zarr(name: str, via_zarr: list[Any]) -> None:
    a, data, c = REFUSED[name]()
    assert a.handle.compressor is None
    assert simple_layout(a.doc, a.handle.dtype) is None
    check_reads(a, data, c)
    assert len(via_zarr) == sum(1 for s, e in ranges(len(data), c) if min(e or 99, 17) > s)


def test_zero_d_array_goes_through_zarr(via_zarr: list[Any]) -> None:
    data = numpy.array(2.5)
    a = asyncio.run(zarr_array(data, (), compressors=[ZstdCodec()]))
    assert a.handle.ndim == 0 and a.handle.compressor is None
    assert_same(asyncio.run(a.handle.read()), data)


def test_non_contiguous_target_goes_through_zarr(via_zarr: list[Any]) -> None:
    data = values("<f8", (20, 3))
    a = asyncio.run(zarr_array(data, (6, 3), compressors=[ZstdCodec()], crc=True))
    assert a.handle.compressor is not None
    target = numpy.zeros((3, 20), dtype="<f8").T[3:17]  # a Fortran-ordered view
    asyncio.run(a.handle.read_into(3, 17, target))
    assert via_zarr == [(slice(3, 17), slice(None))]
    assert_same(numpy.ascontiguousarray(target), data[3:17])


# -- the law, over accepted layouts and any row range ---------------------------------------


@st.composite
def layouts(draw: st.DrawFn) -> tuple[numpy.ndarray, int, str, bool, int, int]:
    dtype = draw(st.sampled_from(DTYPES))
    trailing = draw(st.sampled_from([(), (2,), (3, 2)]))
    n = draw(st.integers(1, 40))
    c = draw(st.integers(1, 12))
    data = values(dtype, (n, *trailing), draw(st.integers(0, 2**16)))
    start = draw(st.integers(0, n + 2))
    stop = draw(st.integers(0, n + 2))
    return data, c, draw(st.sampled_from(sorted(COMPRESSORS))), draw(st.booleans()), start, stop


@settings(max_examples=60, deadline=None, derandomize=True)
@given(layouts())
def test_any_row_range_of_any_accepted_layout_equals_zarr(
    case: tuple[numpy.ndarray, int, str, bool, int, int],
) -> None:
    data, c, name, crc, start, stop = case
    chunks = (c, *data.shape[1:])

    async def run() -> None:
        a = await zarr_array(data, chunks, compressors=[COMPRESSORS[name]], crc=crc)
        assert a.handle.compressor is not None
        assert_same(await a.handle.read(start, stop), await a.arr.getitem(slice(start, stop)))
        # The encoder, the other way round: zarr reads what it writes.
        encoded = await encode_chunks(a.doc, data, a.arr.metadata.fill_value)
        assert encoded is not None
        store = MemoryStore()
        await store.set("v/zarr.json", _PROTO.buffer.from_bytes(json.dumps(a.doc).encode()))
        for key, raw in encoded.items():
            await store.set(f"v/{key}", _PROTO.buffer.from_bytes(raw))
        reopened = await open_array(store=store, path="v")
        assert_same(await reopened.getitem(slice(None)), data)

    asyncio.run(run())
