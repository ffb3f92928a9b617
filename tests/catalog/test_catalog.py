"""The catalog: columnar snapshot, binary encoding, versions on a store."""

from __future__ import annotations

import asyncio
import json
import struct

import hypothesis.extra.numpy as hnp
import numpy
import pytest
from conftest import unique_memory_name
from hypothesis import given, settings
from hypothesis import strategies as st

from dask_zcollection.catalog import (
    CATALOG_FORMAT,
    Catalog,
    CatalogLog,
    _log,
    decode_catalog,
    encode_catalog,
)
from dask_zcollection.errors import FormatVersionError, StorageError
from dask_zcollection.partitioning import Date, compile_filter
from dask_zcollection.store import MemoryStore, resolve_store


def assert_catalog_equal(a: Catalog, b: Catalog) -> None:
    assert a.version == b.version
    assert a.key_names == b.key_names
    assert a.keys.dtype == b.keys.dtype == numpy.dtype("int64")
    assert a.keys.shape == b.keys.shape
    assert numpy.array_equal(a.keys, b.keys)
    assert a.paths == b.paths
    assert numpy.array_equal(a.rows, b.rows)
    assert a.axis_min.dtype == b.axis_min.dtype and a.axis_max.dtype == b.axis_max.dtype
    assert a.axis_min.tobytes() == b.axis_min.tobytes()
    assert a.axis_max.tobytes() == b.axis_max.tobytes()
    assert a.has_stats == b.has_stats
    assert a.immutable == b.immutable
    assert a.txn == b.txn
    assert a.timestamp == b.timestamp


def _catalog(keys: list[tuple[int, int]], axis_dtype: str = "datetime64[ns]") -> Catalog:
    cat = Catalog.empty(("year", "month"), axis_dtype)
    n = len(keys)
    lo = (
        numpy.arange(n).astype("int64").view(axis_dtype)
        if axis_dtype[0] == "d"
        else numpy.arange(n)
    )
    return cat.with_partitions(
        numpy.array(keys, dtype="int64").reshape(-1, 2),
        [f"year={y}/month={m:02d}" for y, m in keys],
        numpy.arange(n) + 10,
        numpy.asarray(lo, axis_dtype),
        numpy.asarray(lo, axis_dtype),
    )


# -- encoding ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "axis_dtype", ["datetime64[ns]", "datetime64[s]", "int64", "float64", "int16"]
)
def test_encode_decode_round_trip(axis_dtype: str) -> None:
    cat = _catalog([(2024, 3), (2023, 12), (2024, 1)], axis_dtype)
    cat = cat.next_version("abc123", immutable="_immutable")
    decoded = decode_catalog(encode_catalog(cat))
    assert_catalog_equal(decoded, cat)
    assert decoded.keys.tolist() == [[2023, 12], [2024, 1], [2024, 3]]  # sorted by value
    assert decoded.paths == ("year=2023/month=12", "year=2024/month=01", "year=2024/month=03")
    assert decoded.version == 1 and decoded.immutable == "_immutable" and decoded.txn == "abc123"


def test_encode_decode_empty_and_listed() -> None:
    empty = Catalog.empty(("cycle", "pass"), "int64")
    assert_catalog_equal(decode_catalog(encode_catalog(empty)), empty)
    assert len(decode_catalog(encode_catalog(empty))) == 0
    import dataclasses

    listed = dataclasses.replace(_catalog([(1, 2)]), has_stats=False)
    back = decode_catalog(encode_catalog(listed))
    assert back.has_stats is False
    assert back.total_rows == -1
    assert _catalog([(1, 2), (1, 3)]).total_rows == 10 + 11


def test_binary_layout() -> None:
    cat = _catalog([(2024, 1), (2024, 2)], "int64").next_version("t1")
    raw = encode_catalog(cat)
    assert raw[:6] == b"ZCCAT\x01"
    (hlen,) = struct.unpack_from("<I", raw, 6)
    header = json.loads(raw[10 : 10 + hlen])
    assert header["format"] == CATALOG_FORMAT == 1
    assert header["version"] == 1
    assert header["key_names"] == ["year", "month"]
    assert [c["name"] for c in header["columns"]] == ["keys", "rows", "axis_min", "axis_max"]
    assert header["columns"][0] == {"name": "keys", "dtype": "<i8", "shape": [2, 2], "offset": 0}
    assert header["paths"]["nbytes"] == len("year=2024/month=01\nyear=2024/month=02")
    from numcodecs import Zstd

    body = Zstd().decode(raw[10 + hlen :])
    keys = numpy.frombuffer(body, "<i8", count=4).reshape(2, 2)
    assert keys.tolist() == [[2024, 1], [2024, 2]]
    offset = header["paths"]["offset"]
    assert bytes(body[offset:]).decode().split("\n") == list(cat.paths)


def test_decode_rejects_foreign_and_newer_objects() -> None:
    with pytest.raises(StorageError, match="magic"):
        decode_catalog(b"PK\x03\x04 not a catalog")
    raw = encode_catalog(_catalog([(2024, 1)]))
    (hlen,) = struct.unpack_from("<I", raw, 6)
    header = json.loads(raw[10 : 10 + hlen])
    header["format"] = CATALOG_FORMAT + 1
    head = json.dumps(header).encode()
    newer = raw[:6] + struct.pack("<I", len(head)) + head + raw[10 + hlen :]
    with pytest.raises(FormatVersionError, match="newer"):
        decode_catalog(newer)


def _daily_catalog(n: int) -> tuple[Catalog, numpy.ndarray]:
    days = numpy.datetime64("1900-01-01", "D") + numpy.arange(n)
    months = days.astype("datetime64[M]")
    years = months.astype("datetime64[Y]")
    keys = numpy.stack(
        [
            years.astype("int64") + 1970,
            months.astype("int64") % 12 + 1,
            (days - months).astype("int64") + 1,
        ],
        axis=1,
    )
    text = numpy.strings
    k = keys.astype(str)
    paths = text.add(
        text.add(text.add("year=", k[:, 0]), text.add("/month=", text.zfill(k[:, 1], 2))),
        text.add("/day=", text.zfill(k[:, 2], 2)),
    )
    lo = days.astype("datetime64[s]")
    cat = Catalog.empty(Date(("time",), resolution="D").keys, "datetime64[s]").with_partitions(
        keys, tuple(paths.tolist()), numpy.full(n, 86400), lo, lo + numpy.timedelta64(86399, "s")
    )
    return cat, days


def test_a_million_partitions() -> None:
    n = 1_000_000
    cat, days = _daily_catalog(n)
    date = Date(("time",), resolution="D")
    assert cat.paths[0] == "year=1900/month=01/day=01" == date.encode(cat.key_tuple(0))
    assert cat.paths[-1] == date.encode(cat.key_tuple(n - 1))
    raw = encode_catalog(cat.next_version("big"))
    assert len(raw) < 8 * 1024 * 1024
    back = decode_catalog(raw)
    assert len(back) == n
    assert back.paths[123_456] == cat.paths[123_456]
    assert numpy.array_equal(back.keys, cat.keys)

    predicate = compile_filter("year == 2000 and month == 2", back.key_names)
    mask = predicate(back.columns)
    assert int(mask.sum()) == 29  # 2000 is a leap year
    selected = back.take(mask)
    assert selected.paths[0] == "year=2000/month=02/day=01"
    assert selected.paths[-1] == "year=2000/month=02/day=29"
    in_2000 = compile_filter({"year": 2000}, back.key_names)(back.columns)
    assert (
        int(in_2000.sum())
        == int((days.astype("datetime64[Y]") == numpy.datetime64("2000", "Y")).sum())
        == 366
    )
    pos = back.find(numpy.array([[2000, 2, 29], [2000, 2, 30], [1900, 1, 1]]))
    assert pos.tolist() == [cat.paths.index("year=2000/month=02/day=29"), -1, 0]


# -- operations against a Python reference -------------------------------------------------------

_keys = hnp.arrays(
    "int64",
    st.tuples(st.integers(0, 30), st.just(2)),
    elements=st.integers(-3, 12),
)


def _reference(keys: numpy.ndarray) -> dict[tuple[int, int], str]:
    return {tuple(k): f"p={k[0]}/q={k[1]}" for k in keys.tolist()}


def _from_mapping(ref: dict[tuple[int, int], str]) -> Catalog:
    cat = Catalog.empty(("p", "q"), "int64")
    keys = numpy.array(list(ref), dtype="int64").reshape(-1, 2)
    n = len(keys)
    return cat.with_partitions(
        keys, list(ref.values()), numpy.arange(n), numpy.arange(n), numpy.arange(n)
    )


def _as_mapping(cat: Catalog) -> dict[tuple[int, int], str]:
    return {cat.key_tuple(i): cat.paths[i] for i in range(len(cat))}


@settings(max_examples=60, deadline=None)
@given(first=_keys, second=_keys, probe=_keys)
def test_find_with_partitions_without(
    first: numpy.ndarray, second: numpy.ndarray, probe: numpy.ndarray
) -> None:
    ref = _reference(first)
    cat = _from_mapping(ref)
    # Sorted by value (tuple order), never by text.
    assert [cat.key_tuple(i) for i in range(len(cat))] == sorted(ref)
    assert _as_mapping(cat) == ref

    pos = cat.find(probe)
    for k, p in zip(probe.tolist(), pos.tolist(), strict=True):
        if tuple(k) in ref:
            assert cat.key_tuple(p) == tuple(k)
        else:
            assert p == -1

    # with_partitions: added or replaced (new paths win), still sorted.
    update = {tuple(k): f"new/{k[0]}/{k[1]}" for k in second.tolist()}
    keys = numpy.array(list(update), dtype="int64").reshape(-1, 2)
    rows = numpy.arange(len(keys)) + 100
    merged = cat.with_partitions(keys, list(update.values()), rows, rows, rows)
    assert _as_mapping(merged) == {**ref, **update}
    assert [merged.key_tuple(i) for i in range(len(merged))] == sorted({**ref, **update})
    for k, r in zip(update, rows.tolist(), strict=True):
        assert merged.rows[merged.find(numpy.array([k]))[0]] == r
    for k in set(ref) - set(update):
        i = merged.find(numpy.array([k]))[0]
        assert merged.rows[i] == cat.rows[cat.find(numpy.array([k]))[0]]

    # without: exactly those keys are gone.
    dropped = merged.without(probe)
    gone = {tuple(k) for k in probe.tolist()}
    assert _as_mapping(dropped) == {k: v for k, v in {**ref, **update}.items() if k not in gone}


def test_take_by_mask_positions_and_slice() -> None:
    cat = _catalog([(2024, m) for m in range(1, 7)])
    mask = cat.keys[:, 1] % 2 == 0
    assert cat.take(mask).paths == (
        "year=2024/month=02",
        "year=2024/month=04",
        "year=2024/month=06",
    )
    assert cat.take(numpy.array([5, 0])).paths == ("year=2024/month=06", "year=2024/month=01")
    assert cat.take(slice(1, 3)).rows.tolist() == [11, 12]
    assert cat.take(mask).version == cat.version
    assert cat.columns["month"].tolist() == [1, 2, 3, 4, 5, 6]


def test_negative_keys_order_and_find() -> None:
    cat = Catalog.empty(("k",), "int64")
    keys = numpy.array([[5], [-1], [-(2**62)], [0], [2**62]])
    cat = cat.with_partitions(
        keys, [f"k={k}" for k in keys[:, 0]], numpy.ones(5), keys[:, 0], keys[:, 0]
    )
    assert cat.keys[:, 0].tolist() == [-(2**62), -1, 0, 5, 2**62]
    assert cat.find(numpy.array([[0], [7], [-1]])).tolist() == [2, -1, 1]


# -- versions on a store -------------------------------------------------------------------------


def test_catalog_log(monkeypatch: pytest.MonkeyPatch) -> None:
    name = unique_memory_name("log")
    spec = resolve_store(f"memory://{name}")
    log = CatalogLog(spec)

    async def scenario() -> None:
        assert await log.latest() is None
        assert await log.legacy_paths() is None
        await log.initialise()
        assert json.loads(await spec.get("_catalog/zarr.json"))["node_type"] == "group"
        first = _catalog([(2024, 1)]).next_version("a")
        assert await log.commit(first) is True
        rival = _catalog([(2024, 2)]).next_version("b")  # also version 1
        assert await log.commit(rival) is False  # put-if-absent: the first one won
        latest = await log.latest()
        assert latest is not None
        assert latest.txn == "a" and latest.paths == ("year=2024/month=01",)
        assert await spec.exists("_catalog/v000000000001.zcat")
        current = latest
        for i in range(6):
            current = current.with_partitions(
                numpy.array([[2025, i + 1]]),
                [f"year=2025/month={i + 1:02d}"],
                [1],
                current.axis_min[:1],
                current.axis_max[:1],
            ).next_version(f"t{i}")
            assert await log.commit(current)
        assert (await log.latest()).version == 7
        assert await log.versions() == list(range(1, 8))
        # Superseded for less than prune's grace (two lease timeouts): all kept.
        assert await log.prune(7) == []
        assert await log.versions() == list(range(1, 8))
        monkeypatch.setattr(_log, "prune_grace", lambda: 0.0)
        assert await log.prune(7) == [1, 2, 3]
        assert await log.versions() == [4, 5, 6, 7]
        assert len((await log.latest()).paths) == 7
        assert (await log.read(2)) is None

    try:
        asyncio.run(scenario())
    finally:
        MemoryStore.forget(name)


def test_legacy_state_json() -> None:
    name = unique_memory_name("legacy")
    spec = resolve_store(f"memory://{name}")

    async def scenario() -> None:
        paths = ["year=2024/month=01", "year=2024/month=02"]
        await spec.put(
            "_catalog/state.json", json.dumps({"format_version": 1, "paths": paths}).encode()
        )
        log = CatalogLog(spec)
        assert await log.legacy_paths() == paths
        assert await log.latest() is None
        await spec.put("_catalog/state.json", b"{not json")
        with pytest.raises(StorageError, match=r"state\.json"):
            await log.legacy_paths()

    try:
        asyncio.run(scenario())
    finally:
        MemoryStore.forget(name)


def test_pruning_methods_agree_with_a_row_by_row_reference() -> None:
    """Catalog.select/overlapping/inside/bounds: the one place partitions are pruned."""
    from dask_zcollection.partitioning import compile_filter

    rng = numpy.random.default_rng(7)
    n = 200
    keys = numpy.stack([numpy.full(n, 2024), numpy.arange(n)], axis=1).astype("int64")
    lo = numpy.sort(rng.integers(0, 10_000, n))
    hi = lo + rng.integers(0, 300, n)
    rows = rng.integers(-1, 5, n)  # -1: unknown, 0: empty
    catalog = Catalog.empty(("year", "n"), "int64").with_partitions(
        keys, [f"year=2024/n={i}" for i in range(n)], rows, lo, hi
    )
    predicate = compile_filter({"n": [i for i in range(n) if i % 3]}, ("year", "n"))
    for time_range in [(None, None), (2_000, None), (None, 5_000), (3_000, 3_100), (9_999, 1)]:
        selected = catalog.select(predicate, time_range)
        expected = [
            i
            for i in range(n)
            if i % 3 != 0
            and (
                rows[i] < 0
                or (
                    rows[i] > 0
                    and (time_range[0] is None or hi[i] >= time_range[0])
                    and (time_range[1] is None or lo[i] <= time_range[1])
                )
            )
        ]
        assert selected.keys[:, 1].tolist() == expected
        inside = catalog.inside(time_range)
        assert inside.tolist() == [
            bool(
                rows[i] >= 0
                and (time_range[0] is None or lo[i] >= time_range[0])
                and (time_range[1] is None or hi[i] <= time_range[1])
            )
            for i in range(n)
        ]
        b_lo, b_hi = catalog.bounds(time_range)
        assert (b_lo >= lo).all() and (b_hi <= hi).all()
    assert catalog.select() is catalog  # nothing to prune: the same object
