"""The schema: builder, validation, JSON form, and its enforcement on insert."""

from __future__ import annotations

import asyncio
import json
import posixpath
from pathlib import Path
from typing import Any

import numpy
import pytest
from conftest import Factory
from hypothesis import given
from hypothesis import strategies as st

import dask_zcollection as zc
from dask_zcollection.schema import Codecs, Dimension, check_node_name
from dask_zcollection.store import resolve_store

# -- builder and validation ----------------------------------------------------------------------


def test_builder_returns_new_values() -> None:
    empty = zc.Schema()
    one = empty.with_dimension("time")
    two = one.with_variable("time", dtype="int64", dimensions=("time",))
    assert empty.to_dict()["dimensions"] == []
    assert [d["name"] for d in one.to_dict()["dimensions"]] == ["time"]
    assert one.to_dict()["variables"] == []
    assert list(two.build().variables) == ["time"]
    assert two.build() is two  # build validates and returns the same value


def test_nested_groups_and_dimension_inheritance(factory: Factory) -> None:
    schema = factory.schema()
    assert list(schema.variables) == ["time", "ssh", "quality", "x_ac", "data_01/ku/power"]
    assert [p for p, _ in schema.walk_groups()] == ["", "data_01", "data_01/ku"]
    dims = schema.variable_dimensions("data_01/ku/power")
    assert list(dims) == ["time", "range"]
    assert dims["time"] == Dimension("time", None, 4, None)  # inherited from the root
    assert dims["range"].size == factory.n_range
    assert "range" not in schema.dimensions("")
    assert set(schema.dimensions("data_01/ku")) == {"time", "x_ac", "range"}
    assert schema["/data_01/ku/power"].dtype == numpy.dtype("float32")
    assert "data_01/ku/power" in schema and "power" not in schema
    with pytest.raises(zc.errors.VariableNotFoundError, match="nope"):
        schema["nope"]


def test_with_axis_flags_immutable_variables(factory: Factory) -> None:
    schema = factory.schema().with_axis("time")
    flags = {p: v.immutable for p, v in schema.walk()}
    assert flags == {
        "time": False,
        "ssh": False,
        "quality": False,
        "x_ac": True,
        "data_01/ku/power": False,
    }
    with pytest.raises(zc.SchemaError, match="nope"):
        schema.with_axis("nope")
    bad = (
        zc.Schema()
        .with_dimension("time")
        .with_dimension("x", size=2)
        .with_variable("v", dtype="f4", dimensions=("x", "time"))
        .build()
    )
    with pytest.raises(zc.SchemaError, match=r"'v'.*first dimension"):
        bad.with_axis("time")


@pytest.mark.parametrize(
    ("build", "match"),
    [
        (lambda s: s.with_variable("v", dtype="f4", dimensions=("nope",)).build(), "'v'.*'nope'"),
        (
            lambda s: s.with_variable("time", dtype="f4", dimensions=("time",)),
            "'time' is declared twice",
        ),
        (lambda s: s.with_dimension("time"), "dimension 'time' is declared twice"),
        (lambda s: s.with_dimension("y", chunks=3, shards=4).build(), "'y'.*multiple"),
        (lambda s: s.with_dimension("y", chunks=0).build(), "'y'.*positive"),
        (lambda s: s.with_variable("o", dtype=object, dimensions=("time",)), "'o'.*object"),
        (lambda s: s.with_variable("v", dtype="nonsense", dimensions=("time",)), "'v'"),
        (lambda s: s.with_variable("a/b", dtype="f4", dimensions=("time",)), "a/b"),
        (lambda s: s.with_group("/_private"), "_private"),
        (lambda s: s.with_group("/a/../b"), r"\.\."),
        (lambda s: s.with_variable("v", dtype="f4", dimensions=("time",), group="/g"), "/g"),
        (
            lambda s: s.with_variable("v", dtype="f4", dimensions=("time", "time")).build(),
            "repeated",
        ),
        (lambda s: s.with_variable("v", dtype="i2", dimensions="time", fill_value="x"), "fill"),
    ],
)
def test_build_errors_name_the_culprit(build: Any, match: str) -> None:
    base = (
        zc.Schema().with_dimension("time").with_variable("time", dtype="M8[ns]", dimensions="time")
    )
    with pytest.raises(zc.SchemaError, match=match) as info:
        build(base)
    assert isinstance(info.value, ValueError)


def test_group_named_like_a_variable() -> None:
    schema = (
        zc.Schema()
        .with_dimension("t")
        .with_variable("g", dtype="f4", dimensions="t")
        .with_group("/g")
        .with_variable("v", dtype="f4", dimensions="t", group="/g")
    )
    with pytest.raises(zc.SchemaError, match="/g"):
        schema.build()


def _rich_schema() -> zc.Schema:
    fills: dict[str, Any] = {
        "int8": -1,
        "uint64": 2**64 - 1,
        "float16": numpy.float16("nan"),
        "float32": numpy.float32("inf"),
        "float64": -9999.5,
        "complex64": numpy.complex64(1 + 2j),
        "complex128": numpy.complex128(complex("nan-inf j".replace(" ", ""))),
        "datetime64[ns]": numpy.datetime64("NaT", "ns"),
        "datetime64[s]": numpy.datetime64("2000-01-02", "D"),  # converted to seconds
        "timedelta64[ms]": numpy.timedelta64(-5, "ms"),
        "bool": True,
        "<U8": "n/a",
        "S4": b"\x00ab",
    }
    schema = (
        zc.Schema()
        .with_attrs({"title": "rich", "nested": {"a": [1, 2]}})
        .with_dimension("time", chunks=1024, shards=4096)
        .with_group("/g/h", attrs={"k": "v"})
        .with_dimension("w", size=3, group="/g")
        .with_variable("time", dtype="datetime64[ns]", dimensions=("time",))
    )
    for i, (dtype, fill) in enumerate(fills.items()):
        schema = schema.with_variable(
            f"v{i}",
            dtype=dtype,
            dimensions=("time", "w") if i % 2 else ("time",),
            fill_value=fill,
            attrs={"i": i},
            group="/g/h" if i % 2 else None,
            codecs=[{"name": "zstd", "configuration": {"level": 5, "checksum": False}}]
            if i == 0
            else None,
        )
    return schema.build()


def test_json_round_trip() -> None:
    schema = _rich_schema()
    doc = json.loads(json.dumps(schema.to_dict()))  # plain JSON, no numpy objects
    back = zc.Schema.from_dict(doc)
    assert back == schema
    assert back.to_dict() == schema.to_dict()
    for (path, a), (_, b) in zip(schema.walk(), back.walk(), strict=True):
        assert a.dtype == b.dtype, path
        if a.fill_value is None:
            assert b.fill_value is None, path
            continue
        assert type(a.fill_value) is type(b.fill_value), path
        assert isinstance(a.fill_value, numpy.generic), path
        fa, fb = numpy.asarray(a.fill_value, a.dtype), numpy.asarray(b.fill_value, a.dtype)
        assert fa.tobytes() == fb.tobytes(), path  # NaN, NaT and complex parts included
    assert schema["v8"].fill_value == numpy.datetime64("2000-01-02T00:00:00", "s")
    assert schema["v0"].codecs.bytes_to_bytes[0]["configuration"]["level"] == 5
    assert schema["g/h/v1"].codecs == Codecs()


def test_json_form_fields() -> None:
    doc = _rich_schema().to_dict()
    assert doc["format_version"] == 1
    assert doc["attrs"] == {"title": "rich", "nested": {"a": [1, 2]}}
    assert doc["dimensions"] == [{"name": "time", "size": None, "chunks": 1024, "shards": 4096}]
    time = doc["variables"][0]
    assert time["dtype"] == "<M8[ns]" and time["role"] == "user" and time["immutable"] is False
    fills = {v["name"]: v["fill_value"] for v in doc["variables"]}
    assert fills["v0"] == -1
    assert fills["v2"] == "NaN"
    assert fills["v4"] == -9999.5
    assert fills["v10"] is True
    [g] = doc["groups"]
    assert g["name"] == "g" and g["dimensions"][0]["name"] == "w"
    [h] = g["groups"]
    assert h["attrs"] == {"k": "v"}
    nested = {v["name"]: v["fill_value"] for v in h["variables"]}
    assert nested["v1"] == 2**64 - 1
    assert nested["v3"] == "Infinity"
    assert nested["v5"] == [1.0, 2.0]  # complex as [real, imag]
    assert nested["v7"] == -(2**63)  # NaT as the int64 minimum


def test_malformed_json() -> None:
    with pytest.raises(zc.SchemaError, match="malformed"):
        zc.Schema.from_dict({"variables": [{"name": "x"}]})


def test_select_and_repr(factory: Factory) -> None:
    schema = factory.schema()
    sub = schema.select(["time", "/data_01/ku/power"])
    assert list(sub.variables) == ["time", "data_01/ku/power"]
    with pytest.raises(zc.errors.VariableNotFoundError, match="zz"):
        schema.select(["zz"])
    text = repr(schema.with_axis("time"))
    for word in ("time", "ssh", "x_ac", "immutable", "/data_01/ku", "range", "float32"):
        assert word in text


# -- enforcement on insert -----------------------------------------------------------------------


def _strict_schema() -> zc.Schema:
    return (
        zc.Schema()
        .with_dimension("time", chunks=8)
        .with_dimension("x_ac", size=3)
        .with_variable("time", dtype="datetime64[ns]", dimensions=("time",))
        .with_variable("ssh", dtype="float32", dimensions=("time", "x_ac"))
        .with_variable("count", dtype="int32", dimensions=("time",), fill_value=-1)
        .with_variable("label", dtype="<U4", dimensions=("time",))
        .with_variable("x_ac", dtype="int16", dimensions=("x_ac",))
        .with_group("/data_01/ku")
        .with_variable("power", dtype="float32", dimensions=("time",), group="/data_01/ku")
        .build()
    )


def _good(n: int = 3, month: str = "2024-01") -> dict[str, numpy.ndarray]:
    return {
        "time": numpy.datetime64(f"{month}-01", "ns") + numpy.arange(n) * numpy.timedelta64(1, "h"),
        "ssh": numpy.ones((n, 3), "float32"),
        "count": numpy.arange(n, dtype="int32"),
        "label": numpy.array(["ab"] * n, "<U4"),
        "x_ac": numpy.array([1, 2, 3], "int16"),
        "data_01/ku/power": numpy.zeros(n, "float32"),
    }


def _with(**changes: Any) -> dict[str, Any]:
    data: dict[str, Any] = _good(month="2024-02")
    for key, value in changes.items():
        key = key.replace("__", "/")
        if value is None:
            del data[key]
        else:
            data[key] = value
    return data


BAD_INSERTS = {
    "strings into float": (_with(ssh=numpy.array([["a"] * 3] * 3)), "'ssh'"),
    "float64 into int32": (_with(count=numpy.arange(3.0)), "'count'"),
    "int64 into int32": (_with(count=numpy.arange(3, dtype="int64")), "'count'"),
    "float64 into nested float32": (_with(data_01__ku__power=numpy.zeros(3)), "data_01/ku/power"),
    "too long strings": (_with(label=numpy.array(["abcdef"] * 3)), "'label'"),
    "numbers into strings": (_with(label=numpy.arange(3)), "'label'"),
    "datetime into int": (_with(count=numpy.zeros(3, "M8[ns]")), "'count'"),
    "wrong fixed size": (_with(ssh=numpy.ones((3, 4), "float32")), "'ssh'"),
    "missing a dimension": (_with(ssh=numpy.ones(3, "float32")), "'ssh'"),
    "extra dimension": (_with(count=numpy.ones((3, 1), "int32")), "'count'"),
    "wrong row count": (_with(count=numpy.arange(4, dtype="int32")), "'count'"),
    "missing variable": (_with(count=None), "'count'"),
    "missing nested variable": (_with(data_01__ku__power=None), "data_01/ku/power"),
    "unknown variable": (_with(extra=numpy.ones(3)), "'extra'"),
    "unknown nested variable": (_with(data_01__ku__noise=numpy.ones(3)), "data_01/ku/noise"),
    "NaT in the date key": (
        _with(time=numpy.array(["2024-02-01", "NaT", "2024-02-03"], "M8[ns]")),
        "'time'",
    ),
    "immutable wrong size": (_with(x_ac=numpy.arange(4, dtype="int16")), "'x_ac'"),
    "immutable differs": (_with(x_ac=numpy.array([1, 2, 4], "int16")), "'x_ac'"),
    "immutable wrong dtype": (_with(x_ac=numpy.array([1, 2, 3], "int64")), "'x_ac'"),
}


def _listing(url: str) -> list[str]:
    return sorted(asyncio.run(resolve_store(url).list_prefix("")))


def _dirs(url: str) -> list[str]:
    if not url.startswith("file://"):
        return []
    root = Path(url.removeprefix("file://"))
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_dir())


@pytest.mark.parametrize("case", list(BAD_INSERTS))
def test_bad_insert_is_refused_and_writes_nothing(store_url: str, case: str) -> None:
    col = zc.create_collection(
        store_url,
        schema=_strict_schema(),
        axis="time",
        partitioning=zc.partitioning.Date(("time",), resolution="M"),
    )
    col.insert(_good())
    version = col.catalog(refresh=True).version
    keys, dirs = _listing(store_url), _dirs(store_url)

    data, name = BAD_INSERTS[case]
    with pytest.raises(zc.SchemaError) as info:
        col.insert(data)
    assert isinstance(info.value, ValueError)
    assert name in str(info.value)

    assert zc.open_collection(store_url).catalog().version == version
    assert _listing(store_url) == keys
    assert (
        _dirs(store_url) == [d for d in dirs if not d.startswith("_transactions")]
        or _dirs(store_url) == dirs
    )
    assert not [d for d in _dirs(store_url) if "month=02" in d]
    assert zc.open_collection(store_url).partitions() == ["year=2024/month=01"]


def test_safe_casts_are_accepted(memory_url: str) -> None:
    col = zc.create_collection(
        memory_url,
        schema=_strict_schema(),
        axis="time",
        partitioning=zc.partitioning.Date(("time",), resolution="M"),
    )
    data = _good()
    data["count"] = numpy.arange(3, dtype="int16")  # int16 fits int32
    data["label"] = numpy.array(["a", "b", "c"], "<U1")  # shorter strings fit
    col.insert(data)
    ds = col.query()
    assert ds["count"].values.dtype == numpy.dtype("int32")
    assert ds["count"].values.tolist() == [0, 1, 2]
    assert ds["label"].values.dtype == numpy.dtype("<U4")
    assert ds["label"].values.tolist() == ["a", "b", "c"]


def test_dataset_with_swapped_dimensions(memory_url: str) -> None:
    col = zc.create_collection(
        memory_url,
        schema=_strict_schema(),
        axis="time",
        partitioning=zc.partitioning.Date(("time",), resolution="M"),
    )
    data = {k: (col.schema[k].dimensions, v) for k, v in _good().items()}
    data["ssh"] = (("x_ac", "time"), numpy.ones((3, 3), "float32"))
    with pytest.raises(zc.SchemaError, match=r"'ssh'.*dimensions"):
        col.insert(zc.Dataset.from_mapping(data))
    assert col.partitions() == []


def test_insert_rejects_other_objects(memory_url: str) -> None:
    col = zc.create_collection(
        memory_url,
        schema=_strict_schema(),
        axis="time",
        partitioning=zc.partitioning.Date(("time",), resolution="M"),
    )
    with pytest.raises(zc.InvalidInputError, match="list"):
        col.insert([1, 2, 3])


def _sequence_collection(url: str, dtype: str) -> zc.Collection:
    schema = (
        zc.Schema()
        .with_dimension("n")
        .with_variable("cycle", dtype=dtype, dimensions=("n",))
        .with_variable("v", dtype="float64", dimensions=("n",))
        .build()
    )
    return zc.create_collection(
        url, schema=schema, axis="n", partitioning=zc.partitioning.Sequence(("cycle",), "n")
    )


@pytest.mark.parametrize("declared", ["int64", "float64"])
def test_float_sequence_keys_are_refused(memory_url: str, declared: str) -> None:
    if declared == "float64":  # a partitioning its variable cannot feed: refused at create
        with pytest.raises(zc.SchemaError, match="'cycle'"):
            _sequence_collection(memory_url, declared)
        assert _listing(memory_url) == []
        return
    col = _sequence_collection(memory_url, declared)
    version = col.catalog().version
    with pytest.raises(zc.SchemaError, match="'cycle'"):
        col.insert({"cycle": numpy.array([1.0, 2.5]), "v": numpy.ones(2)})
    assert col.catalog(refresh=True).version == version
    assert col.partitions() == []
    assert _listing(memory_url) == sorted(
        ["zarr.json", "_zcollection.json", "_catalog/zarr.json", "_catalog/v000000000001.zcat"]
    )


# -- issue 12: names that would escape their partition or alias another node ----------------
BAD_NAMES = {
    "": "empty",
    ".": "only of periods",
    "..": "only of periods",
    "...": "only of periods",
    "a/b": "separate paths",
    "a\\b": "separate paths",
    "__meta": "reserved by Zarr",
    "zarr.json": "metadata",
    "nul\x00": "control character",
    "line\nfeed": "control character",
    "del\x7f": "control character",
    "half\ud800": "surrogate",
}


@pytest.mark.parametrize("name", list(BAD_NAMES), ids=[repr(n) for n in BAD_NAMES])
@pytest.mark.parametrize("kind", ["variable", "dimension", "group", "json"])
def test_bad_names_raise_schema_error(name: str, kind: str) -> None:
    why = BAD_NAMES[name]
    base = zc.Schema().with_dimension("time")
    if kind == "group" and name.startswith("_"):
        why = "'_' starts reserved names"
    with pytest.raises(zc.SchemaError, match=why) as info:
        if kind == "variable":
            base.with_variable(name, dtype="f8", dimensions=("time",)).build()
        elif kind == "dimension":
            base.with_dimension(name).build()
        elif kind == "group":
            if "/" in name or not name.strip("/"):
                pytest.skip("'/' separates groups in a group path")
            base.with_group(name).build()
        else:  # a stored schema: the same rules on read
            good = base.with_variable("x", dtype="f8", dimensions=("time",)).build().to_dict()
            good["variables"][0]["name"] = name
            zc.Schema.from_dict(good)
    assert repr(name) in str(info.value)


def test_sibling_names_differing_by_case_are_refused() -> None:
    # One directory on macOS and Windows filesystems: two variables, one array.
    schema = zc.Schema().with_dimension("time").with_variable("ssh", dtype="f4", dimensions="time")
    with pytest.raises(zc.SchemaError, match="'ssh' and 'SSH'"):
        schema.with_variable("SSH", dtype="f4", dimensions="time").build()
    with pytest.raises(zc.SchemaError, match="differ only by case"):
        schema.with_group("/Ssh").build()
    # Same name in different groups is fine: different paths.
    ok = schema.with_group("/g").with_variable("SSH", dtype="f4", dimensions="time", group="/g")
    assert sorted(ok.build().variables) == ["g/SSH", "ssh"]


@given(name=st.text(max_size=8))
def test_check_node_name_law(name: str) -> None:
    """An accepted name is one path component that resolves to itself below its parent."""
    try:
        check_node_name(name, "variable")
    except zc.SchemaError:
        return
    path = f"year=2024/month=01/{name}"
    assert posixpath.normpath(path) == path
    assert posixpath.dirname(path) == "year=2024/month=01"
    assert name.isprintable() or not any(ord(c) < 32 for c in name)
