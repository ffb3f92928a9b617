"""Bad input gets a typed error naming what is wrong, and nothing is written (issue 12).

* names that would escape their partition or alias another node (item 3);
* ``overwrite=True`` on an empty path, a root, the home directory, a bucket root (item 3);
* custom merge results held to the schema and the partition's key range (item 4);
* NaT/NaN in the axis variable, masked arrays (item 5);
* builtins escaping the API: times out of range, deep filters, a damaged
  ``_zcollection.json`` (item 9).
"""

from __future__ import annotations

import contextlib
import json
from pathlib import Path
from typing import Any

import dask.array as da
import numpy
import pytest
from conftest import Factory, assert_arrays_identical
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_write_invariants import tree_problems

import dask_zcollection as zc
from dask_zcollection.errors import (
    CorruptedDataError,
    FormatVersionError,
    InvalidInputError,
    MergeError,
    SchemaError,
)
from dask_zcollection.store import StoreSpec, check_clearable, resolve_store

MONTHLY = zc.partitioning.Date(("time",), resolution="M")


def small_schema(name: str = "v", *, group: str | None = None) -> zc.Schema:
    schema = (
        zc.Schema()
        .with_dimension("time", chunks=4)
        .with_variable("time", dtype="datetime64[ns]", dimensions=("time",))
    )
    if group:
        schema = schema.with_group(group)
    return schema.with_variable(name, dtype="float64", dimensions=("time",), group=group).build()


def month(m: int, n: int = 3) -> numpy.ndarray:
    start = numpy.datetime64(f"2024-{m:02d}-02", "ns")
    return start + numpy.arange(n) * numpy.timedelta64(1, "h")


# -- item 3: names --------------------------------------------------------------------------------
def test_variable_dotdot_cannot_make_january_read_february(tmp_path: Path) -> None:
    """``..`` made every month of a year write one shared array (January read February's)."""
    january = numpy.array([1.0, 2.0, 3.0])
    with pytest.raises(SchemaError, match=r"variable name '\.\.'.*only of periods"):
        schema = small_schema("..")
        col = zc.create_collection(
            f"file://{tmp_path}/col", schema=schema, axis="time", partitioning=MONTHLY
        )
        col.insert({"time": month(1), "..": january})
        col.insert({"time": month(2), "..": january + 10})
        got = col.query(filters="month == 1")[".."].values
        assert_arrays_identical(got, january, "January")


def test_variable_dot_cannot_commit_and_break_reads(tmp_path: Path) -> None:
    """``.`` committed, then every later read failed."""
    with pytest.raises(SchemaError, match=r"variable name '\.'"):
        col = zc.create_collection(
            f"file://{tmp_path}/col", schema=small_schema("."), axis="time", partitioning=MONTHLY
        )
        col.insert({"time": month(1), ".": numpy.arange(3.0)})
        assert_arrays_identical(col.query()["."].values, numpy.arange(3.0))


def test_group_names_starting_with_underscore_are_refused() -> None:
    # Beside partitions, '_' names are the library's: _catalog, _immutable, _locks...
    with pytest.raises(SchemaError, match="'_catalog'"):
        zc.Schema().with_group("/_catalog")
    data = zc.Schema().with_dimension("time").build().to_dict()
    data["groups"] = [{"name": "_immutable"}]
    with pytest.raises(SchemaError, match="'_immutable'"):
        zc.Schema.from_dict(data)


@pytest.mark.parametrize(
    ("names", "why"),
    [
        (("_cycle",), "not starting with '_'"),
        ((".cycle",), "'.'"),
        (("a@b",), "'@'"),
        (("a=b",), "'='"),
        (("a\x00",), "control character"),
        (("",), "empty"),
    ],
)
def test_partition_key_names_must_be_path_safe(names: tuple[str, ...], why: str) -> None:
    # ``_cycle=1`` would be skipped by the tree walk, ``a@b=1`` read as a version.
    with pytest.raises(InvalidInputError, match=why):
        zc.partitioning.Sequence(names, dimension="num_lines")


# A name the rules accept, drawn from every Unicode category but control characters.
node_names = st.text(
    st.characters(blacklist_categories=("Cc", "Cs")), min_size=1, max_size=12
).filter(lambda n: "/" not in n and "\\" not in n and n.strip(".") and not n.startswith("__"))


@settings(
    max_examples=12,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
    derandomize=True,
)
@given(names=st.lists(node_names, min_size=2, max_size=2, unique_by=lambda n: n.casefold()))
def test_accepted_names_round_trip_at_their_own_path(tmp_path: Path, names: list[str]) -> None:
    """Variables with any accepted names are stored at their own path and never alias."""
    try:
        schema = (
            small_schema(names[0])
            .with_variable(names[1], dtype="float64", dimensions=("time",))
            .build()
        )
    except SchemaError as err:  # e.g. equal after NFKC normalisation
        assert "differ only by case" in str(err) or "declared twice" in str(err)
        return
    root = tmp_path / f"c{abs(hash(tuple(names)))}"
    col = zc.create_collection(f"file://{root}", schema=schema, axis="time", partitioning=MONTHLY)
    values = {n: numpy.arange(3.0) + 10 * i for i, n in enumerate(names)}
    col.insert({"time": month(1), **values})
    col.insert({"time": month(2), **{n: v + 100 for n, v in values.items()}})
    got = col.query(filters="month == 1")
    for n, v in values.items():
        assert_arrays_identical(got[n].values, v, n)
        meta = root / "year=2024" / "month=01" / n / "zarr.json"
        assert json.loads(meta.read_text())["node_type"] == "array"


# -- item 3: overwrite=True ------------------------------------------------------------------------
@pytest.fixture
def no_clear(monkeypatch: pytest.MonkeyPatch) -> None:
    """Nothing may be cleared: a regression must fail the test, not delete a directory."""

    async def refuse(self: StoreSpec) -> None:
        raise AssertionError(f"clear() called on {self.url}")

    monkeypatch.setattr(StoreSpec, "clear", refuse)
    from dask_zcollection.store import LocalStore

    monkeypatch.setattr(LocalStore, "clear", refuse, raising=False)


def test_overwrite_refuses_an_empty_path(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, factory: Factory
) -> None:
    """``create_collection("file://", overwrite=True)`` deleted the working directory's contents."""
    work = tmp_path / "work"
    work.mkdir()
    (work / "thesis.tex").write_text("years of work")
    monkeypatch.chdir(work)
    for url in ("file://", ""):
        with pytest.raises(InvalidInputError, match="path is empty"):
            factory.create(url, overwrite=True)
    assert (work / "thesis.tex").read_text() == "years of work"
    assert sorted(p.name for p in work.iterdir()) == ["thesis.tex"]


@pytest.mark.usefixtures("no_clear")
def test_overwrite_refuses_roots_home_and_bucket_roots(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, factory: Factory
) -> None:
    home = tmp_path / "home"
    (home / "data").mkdir(parents=True)
    monkeypatch.setenv("HOME", str(home))
    for url, why in [
        ("file:///", "empty"),
        ("/", "empty"),
        (f"file://{home}", "home directory"),
        (str(tmp_path), "home directory or one of its parents"),
        ("~", "home directory"),
    ]:
        with pytest.raises(InvalidInputError, match=why):
            factory.create(url, overwrite=True)
    assert (home / "data").is_dir()
    for url in ("s3://bucket", "s3://bucket/", "gs://bucket", "az://container"):
        with pytest.raises(InvalidInputError, match="bucket root"):
            check_clearable(url, resolve_store(url))
    # A prefix, a directory below home, a memory collection: allowed.
    for url in ("s3://bucket/col", f"file://{home}/data/col", "memory://", "memory://x"):
        check_clearable(url, resolve_store(url))


def test_overwrite_still_replaces_a_collection(tmp_path: Path, factory: Factory) -> None:
    url = f"file://{tmp_path}/col"
    col = factory.create(url)
    col.insert(factory.data(factory.times("2024-01-05")))
    col = factory.create(url, overwrite=True)
    assert col.partitions() == []


# -- item 4: merge results -------------------------------------------------------------------------
def collection_with_january(root: Path, factory: Factory) -> tuple[zc.Collection, dict[str, Any]]:
    col = factory.create(f"file://{root}", nested=False, immutable=False)
    data = factory.data(factory.times("2024-01-05", "2024-01-06"), nested=False, immutable=False)
    col.insert(data)
    return col, data


def replaced(name: str, fn: Any) -> Any:
    def merge(existing: Any, inserted: Any, *, axis: str) -> dict[str, Any]:
        return {k: fn(v) if k == name else v for k, v in inserted.items()}

    return merge


BAD_MERGES = {
    "float64 for float32": (replaced("ssh", lambda v: v.astype("float64")), "'ssh'.*float64"),
    "float for uint8": (replaced("quality", lambda v: v.astype("float32")), "'quality'.*float32"),
    "int64 for uint8": (replaced("quality", lambda v: v.astype("int64")), "'quality'.*int64"),
    "datetime64[D] as int": (replaced("time", lambda v: v.astype("int64")), "'time'.*int64"),
    "wrong width": (replaced("ssh", lambda v: v[:, :2]), "'ssh' with trailing shape \\(2,\\)"),
    "NaT in the axis": (
        replaced(
            "time",
            lambda v: numpy.where(numpy.arange(len(v)) == 1, numpy.datetime64("NaT", "ns"), v),
        ),
        "'time' holds 1 NaT.*row 1",
    ),
    "rows moved to February": (
        replaced("time", lambda v: v + numpy.timedelta64(31, "D")),
        "2 row\\(s\\) belong to another partition.*month=02",
    ),
    "unexpected variable": (
        lambda e, i, *, axis: {**i, "extra": i["quality"]},
        "unexpected: 'extra'",
    ),
}


@pytest.mark.parametrize("case", list(BAD_MERGES))
def test_bad_merge_results_raise_merge_error_and_commit_nothing(
    tmp_path: Path, factory: Factory, case: str
) -> None:
    fn, match = BAD_MERGES[case]
    root = tmp_path / "col"
    col, before = collection_with_january(root, factory)
    version = col.catalog(refresh=True).version
    new = factory.data(
        factory.times("2024-01-07", "2024-01-08"), seed=1, nested=False, immutable=False
    )
    with pytest.raises(MergeError, match=match) as info:
        col.insert(new, merge=fn)
    assert "year=2024/month=01" in str(info.value)
    assert col.catalog(refresh=True).version == version
    factory.assert_dataset(col.query(), before)
    assert tree_problems(root) == []


class Unsorted:
    """A merge strategy object (not a function) whose result is not sorted."""

    name = "unsorted"

    def needs_existing(self, existing: Any, inserted: Any) -> bool:
        return False

    def appends(self, existing: Any, inserted: Any) -> bool:
        return False

    def __call__(self, existing: Any, inserted: Any, *, axis: str) -> dict[str, Any]:
        return {k: numpy.asarray(v)[::-1] for k, v in inserted.items()}


def test_unsorted_strategy_result_is_refused(memory_url: str, factory: Factory) -> None:
    col = factory.create(memory_url, nested=False, immutable=False)
    data = factory.data(factory.times("2024-01-05", "2024-01-06"), nested=False, immutable=False)
    with pytest.raises(MergeError, match=r"'unsorted'.*'time' is not sorted"):
        col.insert(data, merge=Unsorted())
    assert col.partitions() == []


@pytest.mark.parametrize(
    ("name", "dtype"),
    [("time", "datetime64[s]"), ("ssh", "float16")],
)
def test_merge_results_are_cast_safely_as_insert_input(
    memory_url: str, factory: Factory, name: str, dtype: str
) -> None:
    """A safe cast (what insert accepts) is stored with its values, not byte for byte."""
    col = factory.create(memory_url, nested=False, immutable=False)
    data = factory.data(factory.times("2024-01-05", "2024-01-06"), nested=False, immutable=False)
    data["ssh"][0, 0] = 0.5  # exact in float16
    data["ssh"] = data["ssh"].astype("float16").astype("float32")
    col.insert(data, merge=replaced(name, lambda v: v.astype(dtype)))
    factory.assert_dataset(col.query(), data)


def test_masked_merge_result_stores_the_fill_value(memory_url: str, factory: Factory) -> None:
    col = factory.create(memory_url, nested=False, immutable=False)
    data = factory.data(factory.times("2024-01-05", "2024-01-06"), nested=False, immutable=False)
    mask = numpy.array([True, False])
    col.insert(data, merge=replaced("quality", lambda v: numpy.ma.masked_array(v, mask=mask)))
    got = col.query()["quality"].values
    assert_arrays_identical(got, numpy.where(mask, 255, data["quality"]).astype("uint8"))


def test_update_returning_rows_of_another_partition_is_refused(
    tmp_path: Path, factory: Factory
) -> None:
    root = tmp_path / "col"
    col, before = collection_with_january(root, factory)

    def shift(ds: zc.Dataset) -> dict[str, Any]:
        return {"time": ds["time"].values + numpy.timedelta64(400, "D")}

    with pytest.raises(MergeError, match=r"belong to another partition.*year=2025"):
        col.update(shift)
    factory.assert_dataset(col.query(), before)
    assert tree_problems(root) == []


# -- item 5: NaT/NaN in the axis, masked arrays ----------------------------------------------------
def sequence_collection(url: str, axis_dtype: str = "datetime64[ns]") -> zc.Collection:
    """Partitioned by cycle number: the axis variable ``time`` is not a key."""
    schema = (
        zc.Schema()
        .with_dimension("num_lines", chunks=8)
        .with_variable("time", dtype=axis_dtype, dimensions=("num_lines",))
        .with_variable("cycle", dtype="int32", dimensions=("num_lines",))
        .with_variable("v", dtype="float64", dimensions=("num_lines",), fill_value=numpy.nan)
        .build()
    )
    return zc.create_collection(
        url,
        schema=schema,
        axis="num_lines",
        axis_variable="time",
        partitioning=zc.partitioning.Sequence(("cycle",), dimension="num_lines"),
    )


def test_nat_in_a_non_key_axis_is_refused(tmp_path: Path) -> None:
    """One NaT hid the whole partition from every later filter(time=...)."""
    root = tmp_path / "col"
    col = sequence_collection(f"file://{root}")
    time = numpy.array(["2024-01-01", "NaT", "2024-01-03"], dtype="datetime64[ns]")
    data = {"time": time, "cycle": numpy.array([1, 1, 1], "int32"), "v": numpy.arange(3.0)}
    with pytest.raises(SchemaError, match=r"'time' holds 1 NaT value\(s\) \(first at row 1\)"):
        col.insert(data)
    assert col.partitions() == []
    # The same rows without NaT are found by a time filter.
    data["time"][1] = numpy.datetime64("2024-01-02")
    col.insert(data)
    got = col.lazy().filter(time=slice("2024-01-02", "2024-01-03")).compute()
    assert_arrays_identical(got["v"].values, numpy.array([1.0, 2.0]))
    assert tree_problems(root) == []


def test_nan_in_a_float_axis_is_refused(memory_url: str) -> None:
    col = sequence_collection(memory_url, axis_dtype="float64")
    time = numpy.array([0.0, 1.0, numpy.nan, numpy.nan])
    data = {"time": time, "cycle": numpy.ones(4, "int32"), "v": numpy.arange(4.0)}
    with pytest.raises(SchemaError, match=r"'time' holds 2 NaN value\(s\) \(first at row 2\)"):
        col.insert(data)
    with pytest.raises(SchemaError, match="NaN"):  # dask-backed: found at planning
        col.insert({k: da.from_array(v, chunks=2) for k, v in data.items()})
    assert col.partitions() == []


def test_masked_values_store_the_fill_value(memory_url: str, factory: Factory) -> None:
    """Masked values were stored as data (the mask lost)."""
    col = factory.create(memory_url)
    data = factory.data(factory.times("2024-01-05", "2024-01-06", "2024-01-07"))
    masked = dict(data)
    masked["ssh"] = numpy.ma.masked_array(data["ssh"], mask=[[0, 1, 0], [0, 0, 0], [1, 1, 1]])
    masked["quality"] = numpy.ma.masked_array(data["quality"], mask=[0, 1, 0])
    col.insert(masked)
    want = dict(data)
    want["ssh"] = numpy.where(masked["ssh"].mask, numpy.float32("nan"), data["ssh"])
    want["quality"] = numpy.where([False, True, False], 255, data["quality"]).astype("uint8")
    factory.assert_dataset(col.query(), want)


def test_masked_dask_values_store_the_fill_value(memory_url: str, factory: Factory) -> None:
    col = factory.create(memory_url, nested=False)
    data = factory.data(factory.times("2024-01-05", "2024-01-06", "2024-02-07"), nested=False)
    quality = numpy.ma.masked_array(data["quality"], mask=[1, 0, 1])
    lazy = {
        **data,
        "quality": da.ma.masked_array(
            da.from_array(quality.data, chunks=2), mask=da.from_array(quality.mask, chunks=2)
        ),
    }
    col.insert(lazy)
    got = col.query()["quality"].values
    assert_arrays_identical(got, numpy.where(quality.mask, 255, quality.data).astype("uint8"))


def test_masked_values_without_fill_value_are_refused(memory_url: str, factory: Factory) -> None:
    col = factory.create(memory_url)
    data = factory.data(factory.times("2024-01-05", "2024-01-06"))
    power = numpy.ma.masked_array(data["data_01/ku/power"], mask=[[0, 0], [0, 1]])
    with pytest.raises(SchemaError, match=r"'data_01/ku/power': 1 masked.*index 3.*no fill"):
        col.insert({**data, "data_01/ku/power": power})
    time = numpy.ma.masked_array(data["time"], mask=[0, 1])  # the axis: never missing
    with pytest.raises(SchemaError, match=r"'time': 1 masked.*cannot be missing"):
        col.insert({**data, "time": time})
    # A mask with nothing masked is just the data.
    col.insert({**data, "quality": numpy.ma.masked_array(data["quality"])})
    factory.assert_dataset(col.query(), data)


# -- item 9: typed errors --------------------------------------------------------------------------
def test_times_beyond_the_ns_range_are_refused_at_insert(memory_url: str, factory: Factory) -> None:
    col = factory.create(memory_url, nested=False)
    data = factory.data(factory.times("2024-01-05", "2024-01-06"), nested=False)
    far = numpy.array(["2024-01-05", "2500-01-01"], dtype="datetime64[s]")
    with pytest.raises(SchemaError, match=r"'time'.*outside the range of datetime64\[ns\]"):
        col.insert({**data, "time": far})
    with pytest.raises(SchemaError, match="outside the range"):
        col.insert({**data, "time": da.from_array(far, chunks=1)})
    assert col.partitions() == []


@pytest.mark.parametrize(
    "bound",
    [
        slice("2500-01-01", None),
        slice(None, numpy.datetime64("1000-01-01")),
        slice("NaT", None),
        slice("not a time", None),
        slice(numpy.datetime64(2**62, "s"), None),
    ],
    ids=["2500", "1000", "NaT", "text", "2**62 s"],
)
def test_time_bounds_that_cannot_be_compared_are_refused(
    memory_url: str, factory: Factory, bound: slice
) -> None:
    col = factory.create(memory_url)
    col.insert(factory.data(factory.times("2024-01-05")))
    with pytest.raises(InvalidInputError, match="'time'"):
        col.lazy().filter(time=bound)


def test_long_and_chains_still_work(memory_url: str, factory: Factory) -> None:
    col = factory.create(memory_url)
    col.insert(factory.data(factory.times("2024-01-05", "2024-03-05")))
    text = " and ".join(["year == 2024"] * 3000 + ["month >= 2"])
    assert col.partitions(filters=text) == ["year=2024/month=03"]
    deep = "not (" * 50 + "month == 1" + ")" * 50  # even: month == 1
    assert col.partitions(filters=deep) == ["year=2024/month=01"]


def _set(path: tuple[str, ...], value: Any) -> Any:
    def edit(data: dict[str, Any]) -> None:
        for key in path[:-1]:
            data = data[key]
        data[path[-1]] = value

    return edit


def _drop(key: str) -> Any:
    return lambda data: data.pop(key)


DAMAGE = {
    "truncated": lambda raw: raw[: len(raw) // 2],
    "zero bytes": lambda raw: b"",
    "not JSON": lambda raw: b"\x89PNG\r\n\x1a\n",
    "not UTF-8": lambda raw: b'{"axis": "\xff"}',
    "a list": lambda raw: b"[]",
    "deep JSON": lambda raw: b"[" * 100_000 + b"]" * 100_000,
    "no schema": _drop("schema"),
    "no partitioning": _drop("partitioning"),
    "partitioning is a number": _set(("partitioning",), 3),
    "unknown partitioning": _set(("partitioning", "name"), "spiral"),
    "variables is a number": _set(("schema", "variables"), 5),
    "dtype nonsense": _set(("schema", "variables", 0, "dtype"), "<q9"),
    "size is text": _set(("schema", "dimensions", 0, "chunks"), "many"),
    "axis_variable unknown": _set(("axis_variable",), "nope"),
    "variable named ..": _set(("schema", "variables", 0, "name"), ".."),
}


@pytest.mark.parametrize("case", list(DAMAGE))
def test_damaged_descriptor_raises_corrupted_data_error(
    tmp_path: Path, factory: Factory, case: str
) -> None:
    root = tmp_path / "col"
    factory.create(f"file://{root}")
    path = root / "_zcollection.json"
    edit = DAMAGE[case]
    if isinstance(edit, type(lambda: 0)) and edit.__code__.co_varnames[:1] == ("raw",):
        path.write_bytes(edit(path.read_bytes()))
    else:
        data = json.loads(path.read_text())
        edit(data)
        path.write_text(json.dumps(data))
    with pytest.raises(CorruptedDataError, match=r"_zcollection\.json") as info:
        zc.open_collection(f"file://{root}")
    assert str(root) in str(info.value)


@pytest.mark.parametrize("version", ["1", 0, -3, 1.5, None, True, 999])
def test_bad_format_version_raises_format_version_error(
    tmp_path: Path, factory: Factory, version: Any
) -> None:
    root = tmp_path / "col"
    factory.create(f"file://{root}")
    path = root / "_zcollection.json"
    data = json.loads(path.read_text())
    data["format_version"] = version
    path.write_text(json.dumps(data))
    with pytest.raises(FormatVersionError):
        zc.open_collection(f"file://{root}")


def test_the_reference_fixtures_still_open(fixtures_dir: Path) -> None:
    names = sorted(p.name for p in fixtures_dir.iterdir() if (p / "_zcollection.json").exists())
    assert names
    for name in names:
        col = zc.open_collection(f"file://{fixtures_dir / name}")
        assert col.partitions()


# -- found by fuzzing the public API: builtins that escaped ----------------------------------------
def test_odd_arguments_raise_typed_errors(memory_url: str, factory: Factory) -> None:
    col = factory.create(memory_url)
    col.insert(factory.data(factory.times("2024-01-05")))
    with pytest.raises(InvalidInputError, match="variables must be a list"):
        col.query(variables=5)  # type: ignore[arg-type]
    with pytest.raises(SchemaError, match=r"must return a Dataset or a mapping.*NoneType"):
        col.update(lambda ds: None)
    with pytest.raises(InvalidInputError, match="invalid store URL"):
        zc.open_collection("s3://[bucket")


_ARRAYS = st.one_of(
    st.none(),
    st.integers(),
    st.text(max_size=3),
    st.lists(st.integers(), max_size=3),
    st.sampled_from(
        ["i1", "u8", "f2", "f8", "c8", "?", "U9", "S2", "M8[s]", "M8[D]", "m8[ns]"]
    ).map(lambda d: numpy.zeros(2, d)),
    st.just(numpy.zeros((2, 3), "f4")),
    st.just(numpy.zeros((2, 4), "f4")),
    st.just(numpy.array(5)),
)


@settings(
    max_examples=60,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(time=_ARRAYS, ssh=_ARRAYS, quality=_ARRAYS, merge_out=_ARRAYS)
def test_odd_insert_input_and_merge_results_raise_typed_errors(
    memory_url: str, factory: Factory, time: Any, ssh: Any, quality: Any, merge_out: Any
) -> None:
    """Whatever the arrays, insert raises the library's errors, and commits only valid rows."""
    col = factory.create(memory_url, nested=False, immutable=False, overwrite=True)
    good = factory.data(factory.times("2024-01-05", "2024-01-06"), nested=False, immutable=False)
    with contextlib.suppress(zc.ZCollectionError):
        col.insert({"time": time, "ssh": ssh, "quality": quality})
    with contextlib.suppress(zc.ZCollectionError):
        col.insert(good, merge=lambda e, i, *, axis: {**i, "quality": merge_out})
    if col.partitions():  # anything committed reads back in the schema's dtypes, without NaT
        ds = col.query()
        assert ds["quality"].values.dtype == numpy.uint8
        assert not numpy.isnat(ds["time"].values).any()


def test_a_bad_merge_commits_nothing_on_every_backend(store_url: str, factory: Factory) -> None:
    """Rows moved out of their partition: refused before anything is written, on every store."""
    col = factory.create(store_url, nested=False, immutable=False)
    before = factory.data(factory.times("2024-01-05", "2024-01-06"), nested=False, immutable=False)
    col.insert(before)
    version = col.catalog(refresh=True).version
    new = factory.data(factory.times("2024-01-07"), seed=1, nested=False, immutable=False)
    with pytest.raises(MergeError, match=r"month=01.*belong to another partition.*month=02"):
        col.insert(new, merge=replaced("time", lambda v: v + numpy.timedelta64(31, "D")))
    assert col.catalog(refresh=True).version == version
    assert col.partitions() == ["year=2024/month=01"]
    factory.assert_dataset(col.query(), before)


@pytest.mark.parametrize(
    "call",
    [
        lambda col: col.lazy()[5],
        lambda col: col.insert({}, retries=-1),
        lambda col: col.insert({}, retries="3"),
        lambda col: col.map(5),
        lambda col: col.update(5),
        lambda col: zc.create_collection("memory://x", schema=None, axis="t", partitioning=None),
        lambda col: zc.Schema().with_dimension("t", size="3"),
        lambda col: zc.Schema().with_dimension("t", chunks=2.5),
        lambda col: zc.Schema().with_dimension("t").with_variable("v", dtype="f8", dimensions=5),
        lambda col: (
            zc.Schema().with_dimension("t").with_variable("v", dtype="f8", dimensions="t", attrs=5)
        ),
        lambda col: (
            zc.Schema().with_dimension("t").with_variable("v", dtype="f8", dimensions="t", codecs=5)
        ),
        lambda col: zc.Schema().with_group("/g", attrs=[1]),
    ],
    ids=[
        "lazy[5]",
        "retries=-1",
        "retries='3'",
        "map(5)",
        "update(5)",
        "create(None)",
        "size='3'",
        "chunks=2.5",
        "dimensions=5",
        "attrs=5",
        "codecs=5",
        "group attrs",
    ],
)
def test_wrong_argument_types_raise_invalid_input_error(
    memory_url: str, factory: Factory, call: Any
) -> None:
    col = factory.create(memory_url)
    with pytest.raises(InvalidInputError):
        call(col)


def test_update_results_follow_the_insert_rules(memory_url: str, factory: Factory) -> None:
    """A narrowing cast (float64 into float32) was accepted by update(), not by insert."""
    col = factory.create(memory_url, nested=False, immutable=False)
    data = factory.data(factory.times("2024-01-05", "2024-01-06"), nested=False, immutable=False)
    col.insert(data)
    with pytest.raises(MergeError, match=r"month=01.*'ssh': dtype float64 cannot be stored"):
        col.update(lambda ds: {"ssh": ds["ssh"].values.astype("float64") * 2})
    factory.assert_dataset(col.query(), data)
    col.update(lambda ds: {"quality": (ds["quality"].values // 2).astype("uint8")})
    assert_arrays_identical(col.query()["quality"].values, data["quality"] // 2)
