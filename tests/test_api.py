"""The public API end to end, on real zarr stores.

``store_url`` tests run on file://, memory://, Icechunk and on S3 (SeaweedFS on
loopback) through obstore; those marked ``also_fsspec`` through fsspec too
(see ``tests/conftest.py``).
"""

from __future__ import annotations

import asyncio
import json
import os
from pathlib import Path

import dask.config
import hypothesis.extra.numpy as hnp
import numpy
import pytest
import xarray
import zarr
from conftest import Factory, assert_arrays_identical, unique_memory_name
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import dask_zcollection as zc
from dask_zcollection.catalog._transaction import new_txn_id
from dask_zcollection.store import MemoryStore, resolve_store

# -- the quick start of the original description ---------------------------------------------


def quick_start_schema() -> zc.Schema:
    return (
        zc.Schema()
        .with_dimension("time", chunks=4096)
        .with_dimension("x_ac", size=240, chunks=240)
        .with_variable("time", dtype="int64", dimensions=("time",))
        .with_variable(
            "ssh",
            dtype="float32",
            dimensions=("time", "x_ac"),
            fill_value=numpy.float32("nan"),
        )
        .with_group("/data_01/ku", attrs={"band": "Ku"})
        .with_dimension("range", size=240, chunks=240, group="/data_01/ku")
        .with_variable(
            "power",
            dtype="float32",
            dimensions=("time", "range"),
            group="/data_01/ku",
        )
        .build()
    )


@pytest.mark.also_fsspec
def test_quick_start(store_url: str) -> None:
    col = zc.create_collection(
        store_url,
        schema=quick_start_schema(),
        axis="time",
        partitioning=zc.partitioning.Date(("time",), resolution="M"),
    )
    n = 1500  # one row per hour from 2024-01-01: January, February and March
    start = numpy.datetime64("2024-01-01", "ns")
    t = (start + numpy.arange(n) * numpy.timedelta64(3600, "s")).view("int64")
    rng = numpy.random.default_rng(42)
    ssh = rng.random((n, 240)).astype("float32")
    ssh[::7, 3] = numpy.nan
    dataset = {
        "time": t,
        "ssh": ssh,
        "data_01/ku/power": rng.random((n, 240)).astype("float32"),
    }
    written = col.insert(dataset)
    assert written == ["year=2024/month=01", "year=2024/month=02", "year=2024/month=03"]

    full = zc.open_collection(store_url, mode="r").query()
    Factory.assert_dataset(full, dataset)
    assert full["ssh"].fill_value is not None and numpy.isnan(full["ssh"].fill_value)
    assert full["data_01/ku"].attrs == {"band": "Ku"}
    # An int64 time is nanoseconds since the epoch: January holds 31 days of hours.
    rows = col.catalog().rows.tolist()
    assert rows == [31 * 24, 29 * 24, n - 60 * 24]

    text = repr(full)
    lines = text.splitlines()
    assert len(lines) > 5
    for word in ("time", "x_ac", "range", "ssh", "power", "/data_01/ku", "int64", "float32"):
        assert word in text, word


def test_collection_repr_names_url_and_partitioning(memory_url: str, factory: Factory) -> None:
    col = factory.create(memory_url)
    col.insert(factory.data(factory.times("2024-01-01", "2024-02-01")))
    assert len(col.partitions()) == 2  # repr reads the catalog once (cached until a write)
    text = repr(col)
    assert memory_url in text
    assert "Date" in text and "partitions=2" in text
    assert text.startswith("<Collection")


def test_int64_time_with_cf_units(memory_url: str) -> None:
    schema = (
        zc.Schema()
        .with_dimension("time")
        .with_variable(
            "time", dtype="int64", dimensions=("time",), attrs={"units": "seconds since 2000-01-01"}
        )
        .build()
    )
    col = zc.create_collection(
        memory_url, schema=schema, axis="time", partitioning=zc.partitioning.Date(("time",), "M")
    )
    epoch = numpy.datetime64("2000-01-01", "s")
    dates = numpy.array(["2024-03-05", "2000-01-01", "2000-02-01T00:00:01"], "datetime64[s]")
    t = (dates - epoch).astype("int64")
    assert col.insert({"time": t}) == [
        "year=2000/month=01",
        "year=2000/month=02",
        "year=2024/month=03",
    ]
    assert col.query()["time"].values.tolist() == sorted(t.tolist())


# -- rows are never lost, order is by value -----------------------------------------------------


def test_unsorted_non_contiguous_insert(store_url: str, factory: Factory) -> None:
    col = factory.create(store_url)
    rng = numpy.random.default_rng(1)
    # January, February, January again, March, January: shuffled inside each run.
    runs = [
        ("2024-01-10", 5),
        ("2024-02-03", 4),
        ("2024-01-02", 6),
        ("2024-03-20", 3),
        ("2024-01-25", 2),
    ]
    pieces = []
    for day, n in runs:
        offsets = rng.permutation(n) * numpy.timedelta64(3, "h")
        pieces.append(numpy.datetime64(day, "ns") + offsets)
    times = numpy.concatenate(pieces)
    data = factory.data(times, seed=2)
    assert col.insert(data) == ["year=2024/month=01", "year=2024/month=02", "year=2024/month=03"]

    full = col.query()
    assert full["time"].shape == (len(times),)  # every row kept
    factory.assert_dataset(full, factory.sorted_rows(data))

    for month, n in ((1, 13), (2, 4), (3, 3)):
        part = col.query(filters={"month": month})
        t = part["time"].values
        assert len(t) == n
        assert (numpy.diff(t) >= numpy.timedelta64(0, "ns")).all()
        assert (t.astype("datetime64[M]") == numpy.datetime64(f"2024-{month:02d}")).all()
    catalog = col.catalog()
    assert catalog.keys.tolist() == [[2024, 1], [2024, 2], [2024, 3]]
    assert catalog.rows.tolist() == [13, 4, 3]
    assert catalog.axis_min[0] == times[:11].min() or catalog.axis_min[0] == times.min()
    assert catalog.axis_min[0] == numpy.sort(times)[0]
    assert catalog.axis_max[-1] == numpy.sort(times)[-1]


def test_partition_order_is_numeric(memory_url: str) -> None:
    schema = (
        zc.Schema()
        .with_dimension("n")
        .with_variable("cycle", dtype="int32", dimensions=("n",))
        .with_variable("v", dtype="float64", dimensions=("n",))
        .build()
    )
    col = zc.create_collection(
        memory_url,
        schema=schema,
        axis="n",
        partitioning=zc.partitioning.Sequence(("cycle",), dimension="n"),
    )
    cycle = numpy.array([10, 2, 1, 10, 2, 100, 9], "int32")
    col.insert({"cycle": cycle, "v": numpy.arange(7.0)})
    assert col.partitions() == ["cycle=1", "cycle=2", "cycle=9", "cycle=10", "cycle=100"]
    ds = col.query()
    assert ds["cycle"].values.tolist() == [1, 2, 2, 9, 10, 10, 100]
    assert ds["v"].values.tolist() == [2.0, 1.0, 4.0, 6.0, 0.0, 3.0, 5.0]


# -- bit-exact round trip ------------------------------------------------------------------------

DTYPE_FILLS = {
    "int8": -1,
    "int16": 7,
    "int32": -3,
    "int64": -(2**63),
    "uint8": 255,
    "uint16": 1,
    "uint32": 2**32 - 1,
    "uint64": 2**64 - 1,
    "float16": numpy.float16("nan"),
    "float32": numpy.float32("nan"),
    "float64": -9999.5,
    "complex64": numpy.complex64(1 + 2j),
    "complex128": numpy.complex128(complex("nan+1j")),
    "datetime64[ns]": numpy.datetime64("NaT", "ns"),
    "datetime64[s]": numpy.datetime64("2000-01-01", "s"),
    "timedelta64[ns]": numpy.timedelta64(5, "ns"),
    "bool": False,
    "<U8": "",
    "S4": b"xy",
}


def _random_values(dtype: numpy.dtype, n: int, rng: numpy.random.Generator) -> numpy.ndarray:
    if dtype.kind in "iu":
        info = numpy.iinfo(dtype)
        out = rng.integers(info.min, info.max, n, dtype=dtype, endpoint=True)
        out[:2] = [info.min, info.max]
        return out
    if dtype.kind == "f":
        out = rng.standard_normal(n).astype(dtype)
        out[:3] = [numpy.nan, numpy.inf, -0.0]
        return out
    if dtype.kind == "c":
        out = (rng.standard_normal(n) + 1j * rng.standard_normal(n)).astype(dtype)
        out[0] = complex(numpy.nan, 1.0)
        return out
    if dtype.kind == "M":
        out = rng.integers(-(2**40), 2**40, n).view(dtype)
        out[0] = numpy.datetime64("NaT", "ns")
        return out
    if dtype.kind == "m":
        out = rng.integers(-(2**50), 2**50, n).view(dtype)
        out[0] = numpy.timedelta64("NaT", "ns")
        return out
    if dtype.kind == "b":
        return rng.integers(0, 2, n).astype(bool)
    if dtype.kind == "U":
        words = ["", "a", "béta", "xyzxyzxy", "日本", "z z", "\u00e9t\u00e9"]
        return numpy.array([words[i % len(words)] for i in range(n)], dtype)
    if dtype.kind == "S":
        words = [b"", b"a", b"bb", b"\x00c", b"dddd", b"\xff\xfe"]
        return numpy.array([words[i % len(words)] for i in range(n)], dtype)
    raise AssertionError(dtype)


def _all_dtypes_schema() -> zc.Schema:
    schema = (
        zc.Schema()
        .with_attrs({"title": "every dtype", "n": 3, "list": [1, 2.5, "x"]})
        .with_group("/g/h", attrs={"kind": "nested", "depth": 2})
        .with_attrs({"where": "g"}, group="/g")
        .with_dimension("time", chunks=3)
        .with_variable("time", dtype="datetime64[ns]", dimensions=("time",))
    )
    for i, (dtype, fill) in enumerate(DTYPE_FILLS.items()):
        group = "/g/h" if i % 3 == 0 else None
        schema = schema.with_variable(
            f"v{i}",
            dtype=dtype,
            dimensions=("time",),
            fill_value=fill,
            attrs={"dtype": dtype, "i": i},
            group=group,
        )
    return schema.build()


@pytest.mark.filterwarnings("ignore:The data type .* does not have a Zarr V3 specification")
def test_round_trip_every_dtype(store_url: str) -> None:
    schema = _all_dtypes_schema()
    col = zc.create_collection(
        store_url, schema=schema, axis="time", partitioning=zc.partitioning.Date(("time",), "M")
    )
    n = 40
    rng = numpy.random.default_rng(7)
    times = numpy.datetime64("2024-01-01", "ns") + rng.integers(0, 90, n) * numpy.timedelta64(
        1, "D"
    )
    data = {"time": times}
    for path, var in schema.walk():
        if path != "time":
            data[path] = _random_values(var.dtype, n, rng)
    col.insert(data)
    ds = zc.open_collection(store_url).query()
    order = numpy.argsort(times, kind="stable")
    for path, var in schema.walk():
        got = ds[path].values
        expected = data[path][order]
        assert got.dtype == var.dtype, path
        assert got.tobytes() == expected.tobytes(), path  # bit-exact, NaN payloads included
        assert ds[path].attrs == dict(var.attrs), path
        fill = ds[path].fill_value
        if var.fill_value is None:
            assert fill is None, path
            continue
        assert isinstance(fill, numpy.generic) and fill.dtype.kind == var.dtype.kind, path
        got_fill, want_fill = (
            numpy.asarray(fill, var.dtype),
            numpy.asarray(var.fill_value, var.dtype),
        )
        assert got_fill.tobytes() == want_fill.tobytes(), path
    assert ds.attrs == {"title": "every dtype", "n": 3, "list": [1, 2.5, "x"]}
    assert ds["g"].attrs == {"where": "g"}
    assert ds["g/h"].attrs == {"kind": "nested", "depth": 2}

    # The partitions are plain Zarr v3 groups: zarr itself reads them.
    spec = resolve_store(store_url)
    path = col.catalog().paths[0]
    group = zarr.open_group(store=spec.zarr_store(), path=path, mode="r")
    assert group.attrs["title"] == "every dtype"
    assert group.attrs["_zc_partition_key"] == [["year", 2024], ["month", 1]]
    nested = zarr.open_group(store=spec.zarr_store(), path=f"{path}/g/h", mode="r")
    assert nested.attrs["kind"] == "nested"
    arr = nested["v0"]
    assert arr.dtype == numpy.dtype("int8")
    assert arr.fill_value == -1
    assert arr.attrs["dtype"] == "int8"
    assert arr.metadata.dimension_names == ("time",)
    january = numpy.sort(times)[: arr.shape[0]]
    assert (january.astype("datetime64[M]") == numpy.datetime64("2024-01")).all()
    assert_arrays_identical(arr[:], data["g/h/v0"][order][: arr.shape[0]], "v0")


_HYP_DTYPES = ["int8", "uint16", "int64", "float32", "float64", "complex64", "bool", "<U3"]


@st.composite
def _datasets(draw: st.DrawFn) -> tuple[str, numpy.ndarray, numpy.ndarray, numpy.ndarray]:
    dtype = draw(st.sampled_from(_HYP_DTYPES))
    n = draw(st.integers(1, 25))
    start = numpy.datetime64("2023-11-01", "ns").astype("int64")
    span = 150 * 86400 * 10**9  # five months
    times = draw(hnp.arrays("int64", n, elements=st.integers(start, start + span)))
    values = draw(hnp.arrays(numpy.dtype(dtype), (n, 2)))
    flag = draw(hnp.arrays("uint8", n))
    return dtype, times.view("datetime64[ns]"), values, flag


@settings(
    max_examples=25,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
@given(example=_datasets())
def test_round_trip_law(example: tuple[str, numpy.ndarray, numpy.ndarray, numpy.ndarray]) -> None:
    """query(insert(data)) is data, stably sorted along the axis, for random datasets."""
    dtype, times, values, flag = example
    schema = (
        zc.Schema()
        .with_dimension("time", chunks=4)
        .with_dimension("pair", size=2)
        .with_variable("time", dtype="datetime64[ns]", dimensions=("time",))
        .with_group("/g")
        .with_variable("values", dtype=dtype, dimensions=("time", "pair"), group="/g")
        .with_variable("flag", dtype="uint8", dimensions=("time",), fill_value=255)
        .build()
    )
    name = unique_memory_name("law")
    try:
        col = zc.create_collection(
            f"memory://{name}",
            schema=schema,
            axis="time",
            partitioning=zc.partitioning.Date(("time",), resolution="M"),
        )
        data = {"time": times, "g/values": values, "flag": flag}
        written = col.insert(data)
        months = numpy.unique(times.astype("datetime64[M]"))
        assert len(written) == len(months)
        ds = zc.open_collection(f"memory://{name}").query()
        order = numpy.argsort(times, kind="stable")
        for path, value in data.items():
            got = ds[path].values
            assert got.dtype == value.dtype
            assert got.tobytes() == value[order].tobytes(), path
    finally:
        MemoryStore.forget(name)


def test_xarray_input(memory_url: str, factory: Factory) -> None:
    col = factory.create(memory_url, nested=False)
    data = factory.data(factory.times("2024-02-01", "2024-01-01"), nested=False)
    ds = xarray.Dataset(
        {
            "time": ("time", data["time"]),
            "ssh": (("time", "x_ac"), data["ssh"]),
            "quality": ("time", data["quality"]),
            "x_ac": ("x_ac", data["x_ac"]),
        }
    )
    assert col.insert(ds) == ["year=2024/month=01", "year=2024/month=02"]
    factory.assert_dataset(col.query(), factory.sorted_rows(data))


def test_dask_backed_input(memory_url: str, factory: Factory) -> None:
    import dask.array as da

    col = factory.create(memory_url)
    data = factory.data(factory.times("2024-03-01", "2024-01-01", "2024-01-02", "2024-03-09"))
    lazy = {k: da.from_array(v, chunks=2) if v.shape[0] == 4 else v for k, v in data.items()}
    col.insert(zc.Dataset.from_mapping(lazy, dimensions=lambda p: col.schema[p].dimensions))
    factory.assert_dataset(col.query(), factory.sorted_rows(data))


# -- immutable variables -------------------------------------------------------------------------


@pytest.mark.also_fsspec
def test_immutable_group(store_url: str, factory: Factory) -> None:
    col = factory.create(store_url)
    first = factory.data(factory.times("2024-01-01", "2024-02-01"), seed=1)
    col.insert(first)
    catalog = col.catalog()
    assert catalog.immutable is not None and catalog.immutable.startswith("_immutable")
    spec = resolve_store(store_url)
    immutable = zarr.open_group(store=spec.zarr_store(), path=catalog.immutable, mode="r")
    assert_arrays_identical(immutable["x_ac"][:], first["x_ac"], "x_ac")
    # Stored once: no partition holds x_ac.
    for path in catalog.paths:
        group = zarr.open_group(store=spec.zarr_store(), path=path, mode="r")
        assert "x_ac" not in group
        assert "ssh" in group

    # The same value again is fine; the stored group is not rewritten.
    second = factory.data(factory.times("2024-03-01"), seed=2)
    col.insert(second)
    assert col.catalog().immutable == catalog.immutable

    # A later insert may leave it out.
    third = factory.data(factory.times("2024-04-01"), seed=3, immutable=False)
    col.insert(third)

    # A different value is refused, and nothing is written.
    version = col.catalog(refresh=True).version
    bad = factory.data(factory.times("2024-05-01"), seed=4)
    bad["x_ac"] = bad["x_ac"] + 1
    with pytest.raises(zc.SchemaError, match="x_ac"):
        col.insert(bad)
    assert col.catalog(refresh=True).version == version
    assert col.partitions() == [f"year=2024/month={m:02d}" for m in (1, 2, 3, 4)]

    full = col.query()
    assert_arrays_identical(full["x_ac"].values, first["x_ac"], "x_ac")
    assert full["time"].shape == (4,)
    only = col.query(variables=["x_ac", "time"])
    assert sorted(p for p, _ in only.walk()) == ["time", "x_ac"]


def test_first_insert_needs_the_immutable_variables(memory_url: str, factory: Factory) -> None:
    col = factory.create(memory_url)
    with pytest.raises(zc.SchemaError, match="x_ac"):
        col.insert(factory.data(factory.times("2024-01-01"), immutable=False))
    assert col.partitions() == []
    assert col.catalog(refresh=True).version == 1


# -- merge strategies ----------------------------------------------------------------------------


def _dedup_last(t: numpy.ndarray) -> numpy.ndarray:
    """Positions of the last occurrence of each value of ``t``."""
    last: dict[int, int] = {}
    for i, v in enumerate(t.view("int64").tolist()):
        last[v] = i
    return numpy.array(sorted(last.values()), dtype="intp")


def _reference_merge(
    strategy: str, old: dict[str, numpy.ndarray], new: dict[str, numpy.ndarray]
) -> dict[str, numpy.ndarray]:
    """What one partition holds after merging ``new`` into ``old`` (a numpy model)."""
    if not len(new["time"]):
        return old
    told, tnew = old["time"].view("int64"), new["time"].view("int64")
    select = numpy.arange(len(tnew))
    if strategy == "replace":
        keep = numpy.zeros(len(told), bool)
    elif strategy == "concat":
        keep = numpy.ones(len(told), bool)
    elif strategy == "time_series":
        keep = (told < tnew.min()) | (told > tnew.max())
    elif strategy == "upsert":
        select = _dedup_last(new["time"])
        keep = ~numpy.isin(told, tnew)
    elif strategy == "upsert_within":
        select = _dedup_last(new["time"])
        tol = 2 * 10**9
        keep = numpy.array([numpy.abs(tnew - v).min() > tol for v in told.tolist()], bool)
    else:
        raise AssertionError(strategy)
    rows = {k: numpy.concatenate([old[k][keep], new[k][select]]) for k in old}
    order = numpy.argsort(rows["time"], kind="stable")
    return {k: v[order] for k, v in rows.items()}


def _by_month(data: dict[str, numpy.ndarray]) -> dict[numpy.datetime64, dict[str, numpy.ndarray]]:
    months = data["time"].astype("datetime64[M]")
    return {m: {k: v[months == m] for k, v in data.items()} for m in numpy.unique(months)}


MERGES = {
    "replace": "replace",
    "concat": "concat",
    "time_series": "time_series",
    "upsert": "upsert",
    "upsert_within": zc.upsert_within("2s"),
}


@pytest.mark.parametrize("name", list(MERGES))
def test_merge_strategies_against_numpy(store_url: str, factory: Factory, name: str) -> None:
    col = factory.create(store_url, immutable=False)
    day = numpy.timedelta64(1, "D")
    sec = numpy.timedelta64(1, "s")
    jan = numpy.datetime64("2024-01-01", "ns")
    feb = numpy.datetime64("2024-02-01", "ns")
    old_t = numpy.concatenate([jan + numpy.arange(10) * day, feb + numpy.arange(6) * day])
    old = factory.data(old_t, seed=10, immutable=False)
    col.insert(old)
    # January: exact matches (2 and 4 twice, the last wins), near matches (+1 s, +3 s), a new day,
    # all inside [Jan 3, Jan 8]; March is new; February untouched.
    new_t = numpy.array(
        [
            jan + 4 * day,
            jan + 2 * day,
            jan + 4 * day,
            jan + 6 * day + sec,
            jan + 7 * day + 3 * sec,
            jan + 3 * day + 12 * 3600 * sec,
            numpy.datetime64("2024-03-05", "ns"),
        ]
    )
    new = factory.data(new_t, seed=11, immutable=False)
    written = col.insert(new, merge=MERGES[name])
    assert written == ["year=2024/month=01", "year=2024/month=03"]

    expected_parts = []
    old_parts, new_parts = _by_month(old), _by_month(new)
    for month in sorted(set(old_parts) | set(new_parts)):
        empty = {k: v[:0] for k, v in old.items()}
        part_old = old_parts.get(month, empty)
        part_new = new_parts.get(month, empty)
        expected_parts.append(_reference_merge(name, part_old, part_new))
    expected = {k: numpy.concatenate([p[k] for p in expected_parts]) for k in old}
    factory.assert_dataset(zc.open_collection(store_url).query(), expected)
    assert col.catalog().rows.tolist() == [len(p["time"]) for p in expected_parts]


def test_merge_callable(memory_url: str, factory: Factory) -> None:
    col = factory.create(memory_url, immutable=False, nested=False)
    col.insert(
        factory.data(factory.times("2024-01-01", "2024-01-02"), immutable=False, nested=False)
    )

    def keep_stored(existing, inserted, *, axis):
        return existing if existing is not None else inserted

    before = col.query()
    col.insert(
        factory.data(factory.times("2024-01-05"), seed=9, immutable=False, nested=False),
        merge=keep_stored,
    )
    after = col.query()
    assert_arrays_identical(after["time"].values, before["time"].values, "time")
    assert_arrays_identical(after["ssh"].values, before["ssh"].values, "ssh")


# -- create / open -------------------------------------------------------------------------------


def _partition_dirs(root: Path) -> list[str]:
    return sorted(
        str(p.relative_to(root)) for p in root.rglob("*") if p.is_dir() and "month=" in p.name
    )


def test_create_overwrite_leaves_nothing_of_the_old_collection(
    store_url: str, factory: Factory
) -> None:
    col = factory.create(store_url)
    col.insert(factory.data(factory.times("2024-01-01", "2024-02-01", "2024-03-01")))
    col.insert(factory.data(factory.times("2024-01-05")), merge="concat")  # a versioned path
    assert len(col.partitions()) == 3

    with pytest.raises(zc.AlreadyExistsError, match="already exists") as info:
        factory.create(store_url)
    assert isinstance(info.value, FileExistsError)
    assert len(zc.open_collection(store_url).partitions()) == 3  # untouched by the failure

    fresh = factory.create(store_url, overwrite=True)
    assert fresh.partitions() == []
    assert len(fresh.catalog()) == 0
    reopened = zc.open_collection(store_url)
    assert reopened.partitions() == []
    assert reopened.query() is None
    spec = resolve_store(store_url)
    keys = asyncio.run(spec.list_prefix(""))
    assert not [k for k in keys if "=" in k or k.startswith("_immutable")], keys
    if store_url.startswith("file://"):
        root = Path(store_url.removeprefix("file://"))
        assert _partition_dirs(root) == []
        assert not (root / "_immutable").exists()

    fresh.insert(factory.data(factory.times("2024-06-01"), seed=5))
    assert zc.open_collection(store_url).partitions() == ["year=2024/month=06"]


def test_create_refuses_a_non_empty_location(tmp_path: Path, factory: Factory) -> None:
    root = tmp_path / "busy"
    root.mkdir()
    (root / "something.txt").write_text("user data")
    with pytest.raises(zc.AlreadyExistsError):
        factory.create(f"file://{root}")
    assert (root / "something.txt").read_text() == "user data"


def test_plain_path_and_file_url_are_the_same_collection(tmp_path: Path, factory: Factory) -> None:
    col = factory.create(str(tmp_path / "c"))
    col.insert(factory.data(factory.times("2024-01-01")))
    other = zc.open_collection(f"file://{tmp_path}/c")
    assert other.url == col.url == f"file://{tmp_path}/c"
    assert other.partitions() == ["year=2024/month=01"]


def test_memory_collection_is_shared_by_name(factory: Factory) -> None:
    name = unique_memory_name("shared")
    try:
        writer = factory.create(f"memory://{name}")
        reader = zc.open_collection(f"memory://{name}")
        writer.insert(factory.data(factory.times("2024-01-01", "2024-02-02")))
        again = zc.open_collection(f"memory://{name}", mode="rw")
        assert (
            reader.partitions()
            == again.partitions()
            == [
                "year=2024/month=01",
                "year=2024/month=02",
            ]
        )
        again.drop_partitions({"month": 1})
        assert reader.partitions() == ["year=2024/month=02"]
        assert zc.open_collection(f"memory://{name}").query()["time"].shape == (1,)
    finally:
        MemoryStore.forget(name)
    with pytest.raises(zc.CollectionNotFoundError):
        zc.open_collection(f"memory://{name}")


def test_read_only_collection_refuses_writes(store_url: str, factory: Factory) -> None:
    factory.create(store_url).insert(factory.data(factory.times("2024-01-01")))
    ro = zc.open_collection(store_url, mode="r")
    assert ro.mode == "r"
    data = factory.data(factory.times("2024-02-01"))
    for call in (lambda: ro.insert(data), lambda: ro.drop_partitions(), ro.repair):
        with pytest.raises(zc.ReadOnlyError, match="read-only") as info:
            call()
        assert isinstance(info.value, PermissionError)
    assert ro.partitions() == ["year=2024/month=01"]
    assert ro.catalog(refresh=True).version == 2


def test_open_missing_collection(tmp_path: Path) -> None:
    for url in (f"file://{tmp_path}/nothing", str(tmp_path / "nothing"), "memory://nothing-here"):
        with pytest.raises(zc.CollectionNotFoundError, match="no collection") as info:
            zc.open_collection(url)
        assert isinstance(info.value, KeyError)
        assert isinstance(info.value, zc.NotFoundError)
    assert not (tmp_path / "nothing").exists()


def test_open_bad_mode_and_scheme(memory_url: str, factory: Factory) -> None:
    factory.create(memory_url)
    with pytest.raises(zc.InvalidInputError, match="mode"):
        zc.open_collection(memory_url, mode="w")  # type: ignore[arg-type]
    with pytest.raises(zc.InvalidInputError, match="scheme"):
        zc.open_collection("nosuch://bucket/x")


def test_create_checks_axis_and_partitioning(memory_url: str, factory: Factory) -> None:
    schema = factory.schema()
    with pytest.raises(zc.SchemaError, match="x_ac"):
        zc.create_collection(
            memory_url,
            schema=schema,
            axis="x_ac",
            partitioning=zc.partitioning.Date(("time",), "M"),
        )
    with pytest.raises(zc.SchemaError, match="unknown"):
        zc.create_collection(
            memory_url,
            schema=schema,
            axis="time",
            partitioning=zc.partitioning.Date(("unknown",), "M"),
        )
    with pytest.raises(zc.CollectionNotFoundError):
        zc.open_collection(memory_url)  # nothing was created


# -- partitions, filters, drop -------------------------------------------------------------------


def _twelve_months(col: zc.Collection, factory: Factory) -> None:
    times = numpy.array(
        [f"2023-{m:02d}-15" for m in range(7, 13)] + [f"2024-{m:02d}-15" for m in range(1, 7)],
        "datetime64[ns]",
    )
    col.insert(factory.data(times))


@pytest.mark.also_fsspec
def test_partitions_with_filters(store_url: str, factory: Factory) -> None:
    col = factory.create(store_url)
    _twelve_months(col, factory)
    everything = col.partitions()
    assert len(everything) == 12
    assert everything[0] == "year=2023/month=07" and everything[-1] == "year=2024/month=06"
    assert col.partitions("year == 2024 and month >= 3") == [
        f"year=2024/month={m:02d}" for m in (3, 4, 5, 6)
    ]
    assert col.partitions({"year": 2023, "month": 12}) == ["year=2023/month=12"]
    assert col.partitions({"month": [1, 12]}) == ["year=2023/month=12", "year=2024/month=01"]
    assert col.partitions("month == 13") == []
    ds = col.query(filters="year == 2023 and month > 10")
    assert ds["time"].values.astype("datetime64[M]").tolist() == [
        numpy.datetime64("2023-11"),
        numpy.datetime64("2023-12"),
    ]
    assert col.query(filters={"year": 1999}) is None
    with pytest.raises(zc.InvalidInputError):
        col.partitions("day == 3")


@pytest.mark.also_fsspec
def test_drop_partitions(store_url: str, factory: Factory) -> None:
    col = factory.create(store_url)
    _twelve_months(col, factory)
    before = col.query()
    dropped = col.drop_partitions("year == 2023 and month in (8, 10)")
    assert dropped == ["year=2023/month=08", "year=2023/month=10"]
    remaining = zc.open_collection(store_url).partitions()
    assert len(remaining) == 10
    assert "year=2023/month=08" not in remaining and "year=2023/month=10" not in remaining
    catalog = col.catalog(refresh=True)
    assert not {"year=2023/month=08", "year=2023/month=10"} & {
        p.partition("@")[0] for p in catalog.paths
    }
    keys = asyncio.run(resolve_store(store_url).list_prefix(""))
    assert not [k for k in keys if k.startswith(("year=2023/month=08", "year=2023/month=10"))]
    if store_url.startswith("file://"):
        root = Path(store_url.removeprefix("file://"))
        dirs = _partition_dirs(root)
        assert len(dirs) == 10 and not [d for d in dirs if d.endswith(("month=08", "month=10"))]

    # The other partitions are intact.
    months = before["time"].values.astype("datetime64[M]")
    keep = ~numpy.isin(months, numpy.array(["2023-08", "2023-10"], "datetime64[M]"))
    expected = {p: (v.values[keep] if p != "x_ac" else v.values) for p, v in before.walk()}
    factory.assert_dataset(zc.open_collection(store_url).query(), expected)

    assert col.drop_partitions({"year": 1999}) == []
    assert col.drop_partitions() == remaining
    assert zc.open_collection(store_url).partitions() == []


# -- the aio mirror ------------------------------------------------------------------------------


def test_aio_mirror_equals_sync(store_url: str, factory: Factory) -> None:
    data = factory.data(factory.times("2024-02-01", "2024-01-01", "2024-01-03"))

    async def main() -> tuple[zc.Dataset, list[str], list[str]]:
        col = await zc.aio.create_collection(
            store_url, schema=factory.schema(), axis="time", partitioning=factory.partitioning()
        )
        written = await col.insert(data)
        reader = await zc.aio.open_collection(store_url)
        return await reader.query(), written, await reader.partitions()

    ds, written, partitions = asyncio.run(main())
    assert written == partitions == ["year=2024/month=01", "year=2024/month=02"]
    sync = zc.open_collection(store_url).query()
    factory.assert_dataset(ds, {p: v.values for p, v in sync.walk()})
    factory.assert_dataset(ds, factory.sorted_rows(data))
    assert ds.attrs == sync.attrs
    # The sync collection exposes its async twin.
    twin = zc.open_collection(store_url).aio
    assert isinstance(twin, zc.aio.AsyncCollection)


def test_sync_api_inside_another_running_loop_works(memory_url: str, factory: Factory) -> None:
    # A Jupyter kernel runs every cell inside a running event loop: the sync API
    # must work there (the calling thread waits, as for any blocking call).
    col = factory.create(memory_url)
    col.insert(factory.data(factory.times("2024-01-05", "2024-02-05")))

    async def main() -> tuple[list[str], int]:
        col = zc.open_collection(memory_url)
        return col.partitions(), len(zc.read_collection(memory_url).compute()["time"].values)

    partitions, rows = asyncio.run(main())
    assert partitions == ["year=2024/month=01", "year=2024/month=02"]
    assert rows == 2


def test_sync_api_on_the_library_loop_raises(memory_url: str, factory: Factory) -> None:
    # A coroutine on the library's own loop calling the sync API would wait for itself.
    from dask_zcollection._sync import sync

    factory.create(memory_url)

    async def main() -> str:
        with pytest.raises(RuntimeError, match=r"own event loop.*aio") as info:
            zc.open_collection(memory_url)
        col = await zc.aio.open_collection(memory_url)
        with pytest.raises(RuntimeError, match=r"dask_zcollection\.aio"):
            zc.Collection(col).partitions()
        return str(info.value)

    message = sync(main())
    assert "await" in message


# -- on-disk config ------------------------------------------------------------------------------


def test_config_on_disk(tmp_path: Path, factory: Factory) -> None:
    root = tmp_path / "c"
    factory.create(f"file://{root}")
    config = json.loads((root / "_zcollection.json").read_text())
    assert config["format_version"] == 1
    assert config["axis"] == "time"
    assert config["axis_variable"] == "time"
    assert config["partitioning"] == {
        "name": "date",
        "variable": "time",
        "resolution": "M",
        "dimension": "time",
    }
    assert config["catalog"] == {"enabled": True, "format": "zcat"}
    assert zc.Schema.from_dict(config["schema"]).to_dict() == config["schema"]
    root_meta = json.loads((root / "zarr.json").read_text())
    assert root_meta["node_type"] == "group" and root_meta["zarr_format"] == 3
    assert root_meta["attributes"] == {"title": "test collection", "version": 3}
    assert sorted(os.listdir(root / "_catalog")) == ["v000000000001.zcat", "zarr.json"]


# -- failures and repair -------------------------------------------------------------------------


def _small_collection(url: str) -> zc.Collection:
    schema = (
        zc.Schema()
        .with_dimension("time", chunks=2)
        .with_variable("time", dtype="datetime64[ns]", dimensions=("time",))
        .with_variable("v", dtype="float64", dimensions=("time",))
        .build()
    )
    col = zc.create_collection(
        url, schema=schema, axis="time", partitioning=zc.partitioning.Date(("time",), "M")
    )
    t = numpy.array(["2024-01-01", "2024-01-02", "2024-02-01"], "datetime64[ns]")
    col.insert({"time": t, "v": numpy.arange(3.0)})
    return col


@pytest.mark.also_fsspec
def test_failed_insert_changes_nothing_and_repair_ignores_its_rows(protocol_url: str) -> None:
    col = _small_collection(protocol_url)
    spec = resolve_store(protocol_url)
    before = col.query()
    version = col.catalog(refresh=True).version
    # Another writer holds February: the insert fails after January may have been
    # appended in place (past its committed row count).
    lock = "_locks/year=2024/month=02.lock"
    # A live writer's lock (its lease is not needed: a lock younger than the lease
    # timeout is never taken for a dead writer's).
    asyncio.run(spec.put(lock, new_txn_id().encode()))
    t = numpy.array(["2024-01-10", "2024-01-11", "2024-01-12", "2024-02-05"], "datetime64[ns]")
    with pytest.raises(zc.ConflictError, match="month=02"):
        col.insert({"time": t, "v": numpy.arange(4.0) + 10}, merge="concat", retries=0)
    asyncio.run(spec.delete(lock))

    after = zc.open_collection(protocol_url).query()
    assert_arrays_identical(after["v"].values, before["v"].values, "v")
    assert col.catalog(refresh=True).version == version

    repaired = zc.open_collection(protocol_url, mode="rw").repair().catalog
    assert repaired.rows.tolist() == [2, 1]
    assert_arrays_identical(
        zc.open_collection(protocol_url).query()["v"].values, before["v"].values, "v"
    )
    assert repaired.axis_max[0] == numpy.datetime64("2024-01-02", "ns")

    # And the next insert works.
    col.insert({"time": t, "v": numpy.arange(4.0) + 10}, merge="concat")
    assert zc.open_collection(protocol_url).query()["v"].values.tolist() == [
        0.0, 1.0, 10.0, 11.0, 12.0, 2.0, 13.0,
    ]  # fmt: skip


def test_repair_keeps_the_committed_version(protocol_url: str) -> None:
    col = _small_collection(protocol_url)
    spec = resolve_store(protocol_url)
    committed = col.catalog(refresh=True)
    path = committed.paths[0]
    # A newer, uncommitted version beside it (a writer in flight).
    stray = f"{path}@{'f' * 19}"

    async def copy() -> None:
        for key in await spec.list_prefix(path + "/"):
            data = await spec.get(key)
            assert data is not None
            if key == f"{path}/zarr.json":
                doc = json.loads(data)
                doc["attributes"]["_zc_txn"] = "f" * 19
                data = json.dumps(doc).encode()
            await spec.put(stray + key[len(path) :], data)

    asyncio.run(copy())
    repaired = zc.open_collection(protocol_url, mode="rw").repair().catalog
    assert repaired.paths == committed.paths
    assert repaired.rows.tolist() == committed.rows.tolist()


def test_repair_rebuilds_a_lost_catalog(store_url: str, factory: Factory) -> None:
    col = factory.create(store_url)
    _twelve_months(col, factory)
    col.insert(factory.data(factory.times("2024-01-20"), seed=3), merge="concat")
    before = col.catalog(refresh=True)
    expected = {p: v.values for p, v in col.query().walk()}
    spec = resolve_store(store_url)

    async def lose_catalog() -> None:
        for key in await spec.list_prefix("_catalog/"):
            if key.endswith(".zcat"):
                await spec.delete(key)

    asyncio.run(lose_catalog())
    reader = zc.open_collection(store_url)
    assert reader.partitions() == [
        before.paths[i].partition("@")[0] for i in range(len(before))
    ]  # listed by a walk
    repaired = zc.open_collection(store_url, mode="rw").repair().catalog
    assert repaired.paths == before.paths
    assert repaired.rows.tolist() == before.rows.tolist()
    assert repaired.axis_min.tolist() == before.axis_min.tolist()
    assert repaired.axis_max.tolist() == before.axis_max.tolist()
    assert repaired.immutable == before.immutable
    factory.assert_dataset(zc.open_collection(store_url).query(), expected)


@pytest.mark.also_fsspec
def test_an_insert_planned_before_another_commit_is_a_conflict(
    store_url: str, factory: Factory
) -> None:
    """Two writers plan inserts into the same partition against the same catalog: the
    second to commit gets a ConflictError and leaves nothing; planned again, it lands."""
    col = factory.create(store_url)
    col.insert(factory.data(factory.times("2024-01-01", "2024-02-01"), seed=1))
    a = zc.open_collection(store_url, mode="rw")
    b = zc.open_collection(store_url, mode="rw")
    first = factory.data(factory.times("2024-01-05"), seed=2, immutable=False)
    second = factory.data(factory.times("2024-01-06"), seed=3, immutable=False)
    lazy_a = a.insert(first, merge="concat", compute=False)
    lazy_b = b.insert(second, merge="concat", compute=False)
    assert lazy_a.compute() == ["year=2024/month=01"]
    version = zc.open_collection(store_url).catalog().version
    with pytest.raises(zc.ConflictError):
        lazy_b.compute()
    reader = zc.open_collection(store_url)
    assert reader.catalog().version == version
    assert (
        reader.query()["time"].values.tolist()
        == factory.times("2024-01-01", "2024-01-05", "2024-02-01").tolist()
    )
    assert b.insert(second, merge="concat") == ["year=2024/month=01"]
    got = zc.open_collection(store_url).query(filters={"month": 1})
    assert (
        got["time"].values.tolist()
        == factory.times("2024-01-01", "2024-01-05", "2024-01-06").tolist()
    )
    assert_arrays_identical(
        got["quality"].values[1:],
        numpy.concatenate([first["quality"], second["quality"]]),
        "quality",
    )


# -- superseded versions stay readable for readers in flight ------------------------------------


@pytest.mark.also_fsspec
def test_a_planned_read_survives_overwrite_and_drop(store_url: str, factory: Factory) -> None:
    col = factory.create(store_url)
    _twelve_months(col, factory)
    with dask.config.set({"zcollection.retention": 600}):
        planned = zc.read_collection(store_url).filter("year == 2024")  # holds this catalog
        before = planned.compute()
        times = numpy.array([f"2024-{m:02d}-15" for m in range(1, 7)], "datetime64[ns]")
        col.insert(factory.data(times, seed=7), merge="replace")  # supersedes 6 months
        col.drop_partitions("year == 2024 and month == 6")
        # The old plan reads the versions its catalog names: retired, not deleted.
        again = planned.compute()
        factory.assert_dataset(again, {p: v.values for p, v in before.walk()})
        now = zc.open_collection(store_url).query(filters="year == 2024")
        assert len(now["time"].values) == 5
        assert not numpy.array_equal(now["ssh"].values, before["ssh"].values[:5], equal_nan=True)
        # A vacuum within the retention deletes nothing; past it, every retired version.
        assert col.vacuum() == []
    if store_url.startswith("icechunk"):
        # Superseded versions are gone from the tip at once, but the plan is pinned
        # to its snapshot, which keeps them: it still reads the old state.
        assert col.vacuum(older_than=0) == []
        factory.assert_dataset(planned.compute(), {p: v.values for p, v in before.walk()})
        return
    # The six replaced months and the replacement of June, dropped.
    deleted = col.vacuum(older_than=0)
    deleted.sort()
    assert deleted[:6] == [f"year=2024/month={m:02d}" for m in range(1, 7)]
    assert len(deleted) == 7 and deleted[-1].startswith("year=2024/month=06@")
    keys = asyncio.run(resolve_store(store_url).list_prefix(""))
    groups = {k.rsplit("/", 1)[0] for k in keys if k.startswith("year=2024/month=")}
    live = set(col.catalog(refresh=True).paths)
    assert {"/".join(g.split("/")[:2]) for g in groups} == {p for p in live if "2024" in p}
    assert not [k for k in keys if k.startswith("_garbage/")]
    with pytest.raises(zc.errors.NotFoundError, match="month="):
        planned.compute()  # its versions are gone now: a clear error, not wrong data


@pytest.mark.parametrize("merge", ["time_series", "upsert", "concat"])
def test_a_partition_shorter_than_a_chunk_is_one_short_chunk(store_url: str, merge: str) -> None:
    """16 rows are not padded to a 16384-row chunk; growing past it rewrites, then appends."""
    schema = (
        zc.Schema()
        .with_dimension("time", chunks=4)
        .with_variable("time", dtype="datetime64[ns]", dimensions=("time",))
        .with_variable("v", dtype="float64", dimensions=("time",))
        .build()
    )
    col = zc.create_collection(
        store_url, schema=schema, axis="time", partitioning=zc.partitioning.Date(("time",), "M")
    )
    spec = resolve_store(store_url)
    day = numpy.datetime64("2024-01-01", "ns")
    hour = numpy.timedelta64(3600, "s").astype("timedelta64[ns]")

    def chunk_and_shape() -> tuple[list[int], list[int]]:
        path = col.catalog(refresh=True).paths[0]
        raw = asyncio.run(spec.get(f"{path}/v/zarr.json"))
        assert raw is not None
        meta = json.loads(raw)
        return meta["chunk_grid"]["configuration"]["chunk_shape"], meta["shape"]

    expected_v: list[float] = []
    paths = []
    for step, n in enumerate([3, 3, 2, 5]):
        start = len(expected_v)
        t = day + numpy.arange(start, start + n) * hour
        v = numpy.arange(start, start + n, dtype="float64") * 1.5
        col.insert({"time": t, "v": v}, merge=merge)
        expected_v += v.tolist()
        chunks, shape = chunk_and_shape()
        assert shape == [len(expected_v)]
        # 3 rows: one chunk of 3; from 4 rows on: the schema's 4-row chunks.
        assert chunks == ([3] if step == 0 else [4]), (step, chunks)
        paths.append(col.catalog(refresh=True).paths[0])
        got = zc.open_collection(store_url).query()
        assert got["v"].values.tolist() == expected_v
        assert got["time"].values.tolist() == (day + numpy.arange(len(expected_v)) * hour).tolist()
    # Growing out of the short chunk rewrote the partition aside; then it grows in place.
    assert paths[1] != paths[0]
    assert paths[3] == paths[2] == paths[1]
