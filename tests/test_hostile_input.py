"""Hostile input to the newest code: typed errors naming what is wrong, and nothing written."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy
import pytest
import xarray

import dask_zcollection as zc
from dask_zcollection.errors import FilterError, InvalidInputError, SchemaError

MONTHLY = zc.partitioning.Date(("time",), resolution="M")


@pytest.mark.parametrize("fill", [1000, -129, 1.5, float("nan")])
def test_fill_value_that_does_not_fit_is_a_schema_error_naming_the_variable(fill: object) -> None:
    # Before: 1000 into int8 raised a bare OverflowError, and 1.5 was truncated to 1.
    match = r"variable 'flag': fill value .* does not fit dtype int8"
    with pytest.raises(SchemaError, match=match):
        zc.Schema().with_dimension("time").with_variable(
            "flag", dtype="int8", dimensions=("time",), fill_value=fill
        )
    ok = (
        zc.Schema()
        .with_dimension("time")
        .with_variable("flag", dtype="int8", dimensions=("time",), fill_value=2.0)
    )
    assert ok["flag"].fill_value == numpy.int8(2)


def _month_data() -> xarray.Dataset:
    times = numpy.arange("2024-01-01", "2024-03-01", dtype="datetime64[D]").astype("M8[ns]")
    attrs = {
        "scale": numpy.float32(0.5),
        "valid_range": numpy.array([0, 100], dtype="int16"),
        "flag": numpy.int8(3),
    }
    values = numpy.arange(len(times), dtype="float32")
    return xarray.Dataset({"v": (("time",), values, attrs)}, coords={"time": times})


def test_from_a_dataset_with_numpy_attributes_round_trips(tmp_path: Path) -> None:
    # What xr.open_dataset gives for a netCDF file: numpy scalars and arrays as
    # attributes. Before: a bare TypeError (not JSON serializable) after the
    # root's zarr.json was written.
    ds = _month_data()
    url = f"file://{tmp_path}/col"
    zc.create_collection(url, from_=ds, partitioning=MONTHLY).insert(ds)
    expected = {"scale": 0.5, "valid_range": [0, 100], "flag": 3}
    assert zc.open_collection(url).aio.schema["v"].attrs == expected
    got = xarray.open_dataset(url, engine="zcollection")
    assert got["v"].attrs == expected
    numpy.testing.assert_array_equal(got["v"].values, ds["v"].values)


@pytest.mark.parametrize("where", ["variable", "root"])
def test_attribute_json_cannot_hold_is_a_schema_error_and_writes_nothing(
    tmp_path: Path, where: str
) -> None:
    ds = _month_data()
    bad = {"when": numpy.datetime64("2024-01-01")}
    if where == "variable":
        ds["v"].attrs.update(bad)
    else:
        ds.attrs.update(bad)
    owner = "variable 'v'" if where == "variable" else "group '/'"
    with pytest.raises(SchemaError, match=f"{owner}: attribute 'when'"):
        zc.create_collection(f"file://{tmp_path}/col", from_=ds, partitioning=MONTHLY)
    assert not (tmp_path / "col").exists()


# -- update(depth=, boundary=) and map_overlap ----------------------------------------------------
def _three_months(url: str, factory: Any) -> tuple[zc.Collection, dict[str, numpy.ndarray]]:
    times = numpy.arange("2024-01-01", "2024-04-01", dtype="datetime64[D]").astype("M8[ns]")
    col = factory.create(url, nested=False)
    data = factory.data(times, nested=False)
    col.insert(data)
    return col, data


def _same(ds: zc.Dataset) -> zc.Dataset:
    return ds


def _plus_one(ds: zc.Dataset) -> dict[str, numpy.ndarray]:
    return {"ssh": ds["ssh"].values + numpy.float32(1)}  # type: ignore[union-attr]


@pytest.mark.parametrize(
    ("depth", "boundary", "match"),
    [
        # Before: NaT was taken (no halo), a span too long for ns wrapped around.
        (numpy.timedelta64("NaT", "ns"), "none", "not a finite time span"),
        ("100000000W", "none", "not a finite time span"),
        (numpy.timedelta64(10**12, "W"), "none", "not a finite time span"),
        (1, object(), "boundary is 'none' or a number"),  # before: a bare TypeError
        (1, True, "boundary is 'none' or a number"),
    ],
)
def test_bad_depth_or_boundary_is_refused_before_anything_is_written(
    memory_url: str, factory: Any, depth: Any, boundary: Any, match: str
) -> None:
    col, _ = _three_months(memory_url, factory)
    version = col.catalog().version
    with pytest.raises(InvalidInputError, match=match):
        col.update(_plus_one, depth=depth, boundary=boundary)
    assert col.catalog(refresh=True).version == version
    lazy = zc.read_collection(memory_url)
    with pytest.raises(InvalidInputError, match=match):
        lazy.map_overlap(_same, depth, boundary=boundary)


@pytest.mark.parametrize("boundary", [300, float("nan"), 1.5])
def test_a_boundary_a_variable_cannot_hold_is_refused_naming_it(
    memory_url: str, factory: Any, boundary: Any
) -> None:
    # Before: NaN padded uint8 'quality' with garbage (func saw it), 300 failed with a
    # bare OverflowError inside the task.
    col, data = _three_months(memory_url, factory)
    version = col.catalog().version
    match = r"boundary .* does not fit variable 'quality' \(uint8\)"
    with pytest.raises(InvalidInputError, match=match):
        col.update(_plus_one, depth=2, boundary=boundary)
    assert col.catalog(refresh=True).version == version
    with pytest.raises(InvalidInputError, match=match):
        zc.read_collection(memory_url).map_overlap(_same, 2, boundary=boundary).compute()
    # Leaving the integer variable out pads the float one with the constant.
    if boundary != boundary:  # NaN
        col.update(_plus_one, depth=2, boundary=boundary, variables=["ssh"])
        got = zc.read_collection(memory_url).compute()["ssh"].values
        numpy.testing.assert_array_equal(got, data["ssh"] + numpy.float32(1))


# -- index predicates and builders -----------------------------------------------------------------
def _runs(ds: zc.Dataset) -> dict[str, numpy.ndarray]:
    """One index row per row: its quality's parity."""
    n = len(ds["time"].values)  # type: ignore[arg-type]
    parity = ds["quality"].values.astype("int64") % 2  # type: ignore[union-attr]
    return {"parity": parity, "_start": numpy.arange(n), "_stop": numpy.arange(n) + 1}


def test_index_predicates_a_set_is_any_of_and_other_objects_are_refused(
    memory_url: str, factory: Any
) -> None:
    col, data = _three_months(memory_url, factory)
    col.create_index("parity", _runs)
    lazy = zc.read_collection(memory_url)
    # Before: a set matched nothing (compared with ==): no row, without a word.
    got = lazy.filter(index="parity", parity={0, 1}).compute()
    numpy.testing.assert_array_equal(got["time"].values, data["time"])
    odd = lazy.filter(index="parity", parity=[1]).compute()
    numpy.testing.assert_array_equal(odd["time"].values, data["time"][data["quality"] % 2 == 1])
    for bad in (lambda v: v > 0, {"a": 1}, object()):
        with pytest.raises(FilterError, match="is a value, a list of values or a slice"):
            lazy.filter(index="parity", parity=bad)


def test_an_index_column_of_two_dimensions_is_refused_and_nothing_is_stored(
    memory_url: str, factory: Any
) -> None:
    col, _ = _three_months(memory_url, factory)

    def square(ds: zc.Dataset) -> dict[str, numpy.ndarray]:
        return {"k": numpy.zeros((2, 2)), "_start": numpy.array([0, 1]), "_stop": [1, 2]}

    # Before: pyarrow's ArrowInvalid ("only handle 1-dimensional arrays").
    with pytest.raises(InvalidInputError, match=r"column\(s\) \['k'\] .* not one-dimensional"):
        col.create_index("square", square)
    assert col.indexes() == []
