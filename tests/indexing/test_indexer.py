"""Indexes: build, parquet round trip on every backend, lookup, and the planner's row selection."""

from __future__ import annotations

import copy
import itertools
import json
import shutil
from pathlib import Path
from typing import Any

import numpy
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

import dask_zcollection as zc
from dask_zcollection.errors import FilterError, InvalidInputError, StaleIndexError
from dask_zcollection.indexing import Indexer, RowSelection
from dask_zcollection.indexing._selection import intersect, merge_ranges
from dask_zcollection.store import MemoryStore

pytest.register_assert_rewrite("conftest_read")
from conftest_read import counting_spec, is_chunk_key, reads, reset_reads  # noqa: E402

pytest_plugins = ["conftest_read"]

_law_names = itertools.count()

#: Rows per zarr chunk of the test collections.
CHUNK = 4


def six_hours(ds: zc.Dataset) -> dict[str, numpy.ndarray]:
    """One index row per run of equal 6-hour block (module level: pickles for a cluster)."""
    block = ds["time"].values.astype("datetime64[h]").astype("int64") // 6  # type: ignore[union-attr]
    edges = numpy.flatnonzero(numpy.diff(block)) + 1
    starts = numpy.concatenate([[0], edges]).astype("int64")
    stops = numpy.concatenate([edges, [len(block)]]).astype("int64")
    return {"block": block[starts], "parity": block[starts] % 2, "_start": starts, "_stop": stops}


def make(url: str, factory: Any) -> tuple[zc.Collection, dict[str, numpy.ndarray]]:
    """Three monthly partitions of hourly rows (40, 30, 50 rows), chunks of 4 rows."""
    times = numpy.concatenate(
        [
            numpy.datetime64("2024-01-03T00") + numpy.arange(40) * numpy.timedelta64(1, "h"),
            numpy.datetime64("2024-02-10T05") + numpy.arange(30) * numpy.timedelta64(1, "h"),
            numpy.datetime64("2024-03-01T00") + numpy.arange(50) * numpy.timedelta64(1, "h"),
        ]
    ).astype("datetime64[ns]")
    col = factory.create(url, schema=factory.schema(chunks=CHUNK))
    data = factory.data(times, seed=3)
    col.insert(data)
    return col, data


def reference(data: dict[str, numpy.ndarray], blocks: list[int]) -> numpy.ndarray:
    """Mask of the rows whose 6-hour block is in ``blocks`` (numpy over the whole array)."""
    block = data["time"].astype("datetime64[h]").astype("int64") // 6
    return numpy.isin(block, blocks)


# -- the reference implementation's file ---------------------------------------------------------
def test_reference_index_file_selects_the_expected_rows(fixtures_dir: Path) -> None:
    base = fixtures_dir
    idx = Indexer.read(str(base / "date_monthly.index.parquet"))
    notes = json.loads((base / "date_monthly.index.notes.json").read_text())
    assert len(idx) == notes["rows"] and idx.columns == ("half_day",)
    got = idx.lookup(**notes["lookup"])
    assert got == {k: [tuple(r) for r in v] for k, v in notes["lookup_result"].items()}
    expected = numpy.load(base / "date_monthly.index.expected.npz")["time"]
    lazy = zc.read_collection(str(base / "date_monthly")).filter(index=idx, **notes["lookup"])
    assert lazy.partitions == list(notes["lookup_result"])
    numpy.testing.assert_array_equal(lazy.compute()["time"].values, expected)
    numpy.testing.assert_array_equal(lazy.to_dask_array("time").compute(), expected)
    assert lazy.to_xarray()["time"].shape == expected.shape
    # The reference file has no build record: another collection's index is caught by its
    # partitions and row counts.
    assert idx.meta is None


# -- build, lookup, read ---------------------------------------------------------------------------
def test_build_lookup_and_read_against_numpy(memory_url: str, factory: Any) -> None:
    _, data = make(memory_url, factory)
    lazy = zc.read_collection(memory_url)
    idx = Indexer.build(lazy, six_hours, variables=["time"])
    assert idx.columns == ("block", "parity")
    assert idx.partitions == ["year=2024/month=01", "year=2024/month=02", "year=2024/month=03"]
    block = data["time"].astype("datetime64[h]").astype("int64") // 6
    all_blocks = sorted(set(block.tolist()))
    chosen = [all_blocks[1], all_blocks[9], all_blocks[-1]]
    # A list, a scalar and an inclusive range.
    for preds, blocks in [
        ({"block": chosen}, chosen),
        ({"block": chosen[1]}, [chosen[1]]),
        ({"block": slice(all_blocks[2], all_blocks[4])}, all_blocks[2:5]),
        ({"block": slice(None, all_blocks[0]), "parity": all_blocks[0] % 2}, all_blocks[:1]),
    ]:
        mask = reference(data, blocks)
        out = lazy.filter(index=idx, **preds).compute()
        numpy.testing.assert_array_equal(out["time"].values, data["time"][mask])
        numpy.testing.assert_array_equal(out["ssh"].values, data["ssh"][mask])
        numpy.testing.assert_array_equal(
            out["data_01/ku/power"].values, data["data_01/ku/power"][mask]
        )
        numpy.testing.assert_array_equal(out["x_ac"].values, data["x_ac"])
        # The lookup: ranges of the rows of those blocks, per partition.
        found = idx.lookup(**preds)
        assert sum(b - a for r in found.values() for a, b in r) == int(mask.sum())
    # Nothing matches: no partition, compute gives None.
    empty = lazy.filter(index=idx, block=-5)
    assert empty.npartitions == 0 and empty.compute() is None


def test_index_composes_with_key_filters_time_ranges_projection_and_maps(
    memory_url: str, factory: Any
) -> None:
    _, data = make(memory_url, factory)
    lazy = zc.read_collection(memory_url)
    idx = Indexer.build(zc.open_collection(memory_url), six_hours, variables=["time"])
    block = data["time"].astype("datetime64[h]").astype("int64") // 6
    odd = block % 2 == 1
    month = data["time"].astype("datetime64[M]")
    # Key filter before and after, projection, time range, map_partitions after.
    sel = lazy.filter("month >= 2").filter(index=idx, parity=1)[["time", "quality"]]
    out = sel.compute()
    mask = odd & (month >= numpy.datetime64("2024-02"))
    numpy.testing.assert_array_equal(out["quality"].values, data["quality"][mask])
    assert sorted(p for p, _ in out.walk()) == ["quality", "time"]
    lo, hi = numpy.datetime64("2024-02-11T03"), numpy.datetime64("2024-03-01T10")
    timed = lazy.filter(index=idx, parity=1).filter(time=slice(str(lo), str(hi)))
    mask_t = odd & (data["time"] >= lo) & (data["time"] <= hi)
    numpy.testing.assert_array_equal(timed.compute()["time"].values, data["time"][mask_t])
    numpy.testing.assert_array_equal(timed.to_dask_array("ssh").compute(), data["ssh"][mask_t])
    frame = timed.to_dask_dataframe(["time", "quality"]).compute()
    numpy.testing.assert_array_equal(frame["quality"].to_numpy(), data["quality"][mask_t])
    after = lazy.filter(index=idx, parity=1).filter(month=3)
    numpy.testing.assert_array_equal(
        after.compute()["time"].values, data["time"][odd & (month == numpy.datetime64("2024-03"))]
    )

    def count(ds: zc.Dataset) -> zc.Dataset:
        return ds.isel({"time": slice(0, 1)})

    mapped = lazy.filter(index=idx, parity=1).map_partitions(count).compute()
    assert len(mapped["time"].values) == 3
    with pytest.raises(FilterError, match="before map_partitions"):
        lazy.map_partitions(count).filter(index=idx, parity=1)


@pytest.mark.parametrize("kind", ["file", "icechunk"])
def test_indexed_read_touches_only_chunks_holding_a_selected_row(
    kind: str, tmp_path: Path, factory: Any
) -> None:
    url = f"file://{tmp_path}/col" if kind == "file" else f"icechunk://{tmp_path}/repo"
    _, data = make(url, factory)
    idx = Indexer.build(zc.read_collection(url), six_hours, variables=["time"])
    block = data["time"].astype("datetime64[h]").astype("int64") // 6
    chosen = sorted(set(block.tolist()))[3:5]  # two adjacent runs in one partition
    spec = counting_spec(url)
    lazy = zc.read_collection(spec).filter(index=idx, block=chosen)["ssh"]
    for compute in (
        lambda: lazy.compute()["ssh"].values,
        lambda: lazy.to_dask_array("ssh").compute(),
    ):
        reset_reads(spec.tag)
        values = compute()
        mask = numpy.isin(block, chosen)
        numpy.testing.assert_array_equal(values, data["ssh"][mask])
        rows = numpy.flatnonzero(mask)  # all in January: row numbers are the partition's
        wanted = {f"year=2024/month=01/ssh/c/{c}/0" for c in set((rows // CHUNK).tolist())}
        chunks = [k for k in reads(spec.tag) if is_chunk_key(k)]
        assert sorted(chunks) == sorted(wanted)  # each chunk read once, none other


def test_builder_runs_on_a_distributed_cluster(memory_url: str, factory: Any) -> None:
    distributed = pytest.importorskip("distributed")
    _, data = make(memory_url, factory)
    with distributed.Client(
        processes=False, n_workers=1, threads_per_worker=2, dashboard_address=None
    ):
        idx = Indexer.build(zc.read_collection(memory_url), six_hours, variables=["time"])
        out = zc.read_collection(memory_url).filter(index=idx, parity=0).compute()
    block = data["time"].astype("datetime64[h]").astype("int64") // 6
    numpy.testing.assert_array_equal(out["time"].values, data["time"][block % 2 == 0])


# -- parquet on every backend ------------------------------------------------------------------
def test_write_and_read_on_every_backend(store_url: str, factory: Any) -> None:
    _, data = make(store_url, factory)
    idx = Indexer.build(zc.read_collection(store_url), six_hours, variables=["time"])
    url = f"{store_url}/_indexes/six_hours.parquet"
    idx.write(url)
    back = Indexer.read(url)
    assert back.meta == idx.meta
    for name in idx.table:
        numpy.testing.assert_array_equal(back.table[name], idx.table[name])
    out = zc.read_collection(store_url).filter(index=back, parity=1).compute()
    block = data["time"].astype("datetime64[h]").astype("int64") // 6
    numpy.testing.assert_array_equal(out["time"].values, data["time"][block % 2 == 1])


# -- bad input ------------------------------------------------------------------
def test_bad_builders_and_lookups_raise_typed_errors(memory_url: str, factory: Any) -> None:
    make(memory_url, factory)
    lazy = zc.read_collection(memory_url)

    def outside(ds: zc.Dataset) -> dict[str, Any]:
        n = ds.dimensions["time"]
        return {"k": [0], "_start": [n - 2], "_stop": [n + 1]}

    def overlapping(ds: zc.Dataset) -> dict[str, Any]:
        return {"k": [0, 1], "_start": [0, 3], "_stop": [5, 8]}

    def no_stop(ds: zc.Dataset) -> dict[str, Any]:
        return {"k": [0], "_start": [0]}

    def ragged(ds: zc.Dataset) -> dict[str, Any]:
        return {"k": [0, 1], "_start": [0], "_stop": [1]}

    for builder, match in [
        (outside, r"partition 'year=2024/month=0\d' is empty or outside its rows"),
        (overlapping, "overlap"),
        (no_stop, r"lacks column\(s\) \['_stop'\]"),
        (ragged, "differ in length"),
    ]:
        with pytest.raises(InvalidInputError, match=match):
            Indexer.build(lazy, builder, variables=["time"])
    idx = Indexer.build(lazy, six_hours, variables=["time"])
    with pytest.raises(FilterError, match=r"no column 'pass_number'.*\['block', 'parity'\]"):
        lazy.filter(index=idx, pass_number=3)
    with pytest.raises(FilterError, match="takes an Indexer"):
        lazy.filter(index=42, block=1)
    with pytest.raises(InvalidInputError, match="whole stored partitions"):
        Indexer.build(lazy.filter(time=slice("2024-01-04", None)), six_hours)


def test_an_index_of_another_collection_is_refused(
    tmp_path: Path, fixtures_dir: Path, factory: Any
) -> None:
    url = f"file://{tmp_path}/col"
    make(url, factory)
    foreign = Indexer.read(str(fixtures_dir / "date_monthly.index.parquet"))
    with pytest.raises(InvalidInputError, match="another collection"):
        zc.read_collection(url).filter(index=foreign, half_day=[39548])
    # Ours carries its build record: other partition keys are named.
    other = f"file://{tmp_path}/seq"
    shutil.rmtree(tmp_path / "seq", ignore_errors=True)
    idx = Indexer.build(zc.read_collection(url), six_hours, variables=["time"])
    col = zc.create_collection(
        other,
        schema=factory.schema(),
        axis="time",
        partitioning=zc.partitioning.Date(("time",), resolution="D"),
    )
    col.insert(factory.data(factory.times("2024-01-03T01", "2024-01-04")))
    with pytest.raises(InvalidInputError, match=r"partitioned by \['year', 'month'\]"):
        zc.read_collection(other).filter(index=idx, parity=1)


def test_a_stale_index_is_refused_naming_the_partitions(memory_url: str, factory: Any) -> None:
    col, data = make(memory_url, factory)
    idx = Indexer.build(zc.read_collection(memory_url), six_hours, variables=["time"])
    # A version written where an older one was (same path and rows once the older one is
    # collected) differs by its transaction: the index records it.
    assert idx.meta is not None and idx.needs_txns()
    moved = copy.deepcopy(idx.meta)
    moved["partitions"]["year=2024/month=03"]["txn"] = "0123456789a"
    with pytest.raises(StaleIndexError, match="month=03"):
        zc.read_collection(memory_url).filter(index=Indexer(idx.table, moved), parity=1)
    # Rewrite February (more rows): the index's February rows no longer hold.
    col.insert(factory.data(factory.times("2024-02-20T00", "2024-02-21T00"), seed=9))
    lazy = zc.read_collection(memory_url)
    with pytest.raises(StaleIndexError, match="year=2024/month=02"):
        lazy.filter(index=idx, parity=[0, 1])
    # Partitions not rewritten still answer.
    jan = lazy.filter(month=1).filter(index=idx, parity=1).compute()
    block = data["time"].astype("datetime64[h]").astype("int64") // 6
    mask = (block % 2 == 1) & (data["time"] < numpy.datetime64("2024-02"))
    numpy.testing.assert_array_equal(jan["time"].values, data["time"][mask])
    col.drop_partitions("month == 3")
    with pytest.raises(StaleIndexError, match="month=03"):
        zc.read_collection(memory_url).filter(index=idx, parity=1)


# -- ranges ------------------------------------------------------------------
def test_range_algebra() -> None:
    assert merge_ranges([(5, 8), (0, 2), (2, 3), (7, 9), (4, 4)]) == ((0, 3), (5, 9))
    assert intersect(((0, 3), (5, 9)), ((2, 6), (8, 20))) == ((2, 3), (5, 6), (8, 9))
    a = RowSelection.from_mapping({"p=1": [(0, 4)], "p=2": [(1, 2)]})
    b = RowSelection.from_mapping({"p=1": [(2, 8)], "p=3": [(0, 1)]})
    assert (a & b).paths == ("p=1",) and (a & b).ranges == (((2, 4),),)


# -- a law: any ranges, any chunking ---------------------------------------------------------------
def _ranges_builder(cuts: dict[int, list[tuple[int, int, int]]]) -> Any:
    def build(ds: zc.Dataset) -> dict[str, Any]:
        month = int(ds["time"].values[0].astype("datetime64[M]").astype(int) % 12 + 1)  # type: ignore[union-attr]
        rows = cuts.get(month, [])
        return {
            "k": numpy.asarray([k for k, _, _ in rows], dtype="int64"),
            "_start": numpy.asarray([a for _, a, _ in rows], dtype="int64"),
            "_stop": numpy.asarray([b for _, _, b in rows], dtype="int64"),
        }

    return build


@st.composite
def _layouts(draw: Any) -> tuple[list[int], dict[int, list[tuple[int, int, int]]], list[int]]:
    sizes = draw(st.lists(st.integers(1, 14), min_size=1, max_size=3))
    cuts: dict[int, list[tuple[int, int, int]]] = {}
    for m, n in enumerate(sizes, start=1):
        points = sorted(set(draw(st.lists(st.integers(0, n), max_size=8))) | {0, n})
        pairs = list(itertools.pairwise(points))
        cuts[m] = [(draw(st.integers(0, 3)), a, b) for a, b in pairs if draw(st.booleans())]
    keys = draw(st.lists(st.integers(0, 3), min_size=1, max_size=3, unique=True))
    return sizes, cuts, keys


@settings(max_examples=25, deadline=None)
@given(layout=_layouts(), time_cut=st.integers(0, 6))
@example(layout=([7], {1: [(0, 0, 1), (0, 2, 3)]}, [0]), time_cut=0)  # two ranges in one chunk
def test_any_row_selection_reads_exactly_its_chunks(
    layout: tuple[list[int], dict[int, list[tuple[int, int, int]]], list[int]], time_cut: int
) -> None:
    sizes, cuts, keys = layout
    schema = (
        zc.Schema()
        .with_dimension("time", chunks=3)
        .with_dimension("x", size=2, chunks=2)
        .with_variable("time", dtype="datetime64[ns]", dimensions=("time",))
        .with_variable("v", dtype="int32", dimensions=("time", "x"))
        .build()
    )
    name = f"law-{next(_law_names)}"
    url = f"memory://{name}"
    try:
        col = zc.create_collection(
            url, schema=schema, axis="time", partitioning=zc.partitioning.Date(("time",), "M")
        )
        times = numpy.concatenate(
            [
                numpy.datetime64(f"2024-{m:02d}-01", "ns")
                + numpy.arange(n) * numpy.timedelta64(1, "h")
                for m, n in enumerate(sizes, start=1)
            ]
        )
        values = numpy.arange(2 * len(times), dtype="int32").reshape(-1, 2)
        col.insert({"time": times, "v": values})
        idx = Indexer.build(zc.read_collection(url), _ranges_builder(cuts), variables=["time"])
        # Reference: the rows of the ranges whose key is selected, in key order.
        offsets = numpy.concatenate([[0], numpy.cumsum(sizes)])
        mask = numpy.zeros(len(times), dtype=bool)
        for m, rows in cuts.items():
            for k, a, b in rows:
                if k in keys:
                    mask[offsets[m - 1] + a : offsets[m - 1] + b] = True
        spec = counting_spec(url)
        lazy = zc.read_collection(spec).filter(index=idx, k=keys)
        lo = times[0] + numpy.timedelta64(time_cut, "h")
        timed = lazy.filter(time=slice(str(lo), None))
        for sel, keep in ((lazy, mask), (timed, mask & (times >= lo))):
            reset_reads(spec.tag)
            out = sel.compute()
            if not keep.any():
                assert out is None
                continue
            numpy.testing.assert_array_equal(out["v"].values, values[keep])
            touched = sorted(k for k in reads(spec.tag) if is_chunk_key(k) and "/v/" in k)
            assert len(touched) == len(set(touched))  # each chunk once
            numpy.testing.assert_array_equal(sel.to_dask_array("v").compute(), values[keep])
            # Blocks of two zarr chunks: the same rows, each chunk read once.
            reset_reads(spec.tag)
            pairs = sel.to_dask_array("v", chunks=6)
            numpy.testing.assert_array_equal(pairs.compute(), values[keep])
            touched = sorted(k for k in reads(spec.tag) if is_chunk_key(k) and "/v/" in k)
            assert len(touched) == len(set(touched))
        # Only chunks holding a selected row (of v, without a time range).
        reset_reads(spec.tag)
        lazy["v"].compute()
        touched = {k for k in reads(spec.tag) if is_chunk_key(k)}
        wanted = set()
        for g in numpy.flatnonzero(mask):
            m = int(numpy.searchsorted(offsets, g, side="right"))
            wanted.add(f"year=2024/month={m:02d}/v/c/{(g - offsets[m - 1]) // 3}/0")
        assert touched == wanted
    finally:
        MemoryStore.forget(name)
