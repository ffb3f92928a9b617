"""Round trips between Dataset and xarray: values, dtypes, attrs, laziness."""

from __future__ import annotations

import dask
import dask.array as da
import numpy
import pytest
import xarray

from dask_zcollection.data import Dataset, Group, Variable
from dask_zcollection.errors import InvalidInputError


def _boom() -> numpy.ndarray:
    raise AssertionError("dask data was computed")


def exploding(shape: tuple[int, ...], dtype: str) -> da.Array:
    return da.from_delayed(dask.delayed(_boom)(), shape=shape, dtype=dtype)


def make_xr_dataset(lazy: bool = False) -> xarray.Dataset:
    time = numpy.array(
        ["2024-01-01T00:00:00", "NaT", "2024-01-02T12:00:00.000000001", "2024-01-03"],
        dtype="M8[ns]",
    )
    ssh = numpy.array([[1.5, numpy.nan], [2.0, 3.0], [numpy.nan, 4.0], [5.0, 6.0]], "float32")
    ssh_data = da.from_array(ssh, chunks=(2, 2)) if lazy else ssh
    ds = xarray.Dataset(
        {
            "ssh": xarray.Variable(("time", "x_ac"), ssh_data, {"units": "m"}),
            "label": ("x_ac", numpy.array(["abcdefgh", "ij"], dtype="<U8")),
            "code": ("time", numpy.array([b"ab", b"cdef", b"", b"x"], dtype="S4")),
            "count": ("time", numpy.array([1, 2, 3, 4], dtype="uint16")),
        },
        coords={"time": ("time", time, {"long_name": "time"})},
        attrs={"title": "round trip", "version": 3},
    )
    ds["ssh"].encoding["_FillValue"] = numpy.float32(-9999.0)
    ds["count"].attrs["_FillValue"] = numpy.uint16(0)
    return ds


def assert_xr_equal(left: xarray.Dataset, right: xarray.Dataset) -> None:
    xarray.testing.assert_identical(left, right)
    for name, var in left.variables.items():
        assert right.variables[name].dtype == var.dtype, name


class TestDataset:
    def test_from_xarray(self) -> None:
        source = make_xr_dataset()
        ds = Dataset.from_xarray(source)
        assert isinstance(ds, Dataset)
        assert set(ds.variables) == {"time", "ssh", "label", "code", "count"}
        assert ds.attrs == {"title": "round trip", "version": 3}
        assert ds["time"].dtype == numpy.dtype("M8[ns]")
        assert ds["label"].dtype == numpy.dtype("<U8")
        assert ds["code"].dtype == numpy.dtype("S4")
        assert ds["count"].dtype == numpy.dtype("uint16")
        numpy.testing.assert_array_equal(ds["time"].values, source["time"].values)
        numpy.testing.assert_array_equal(ds["code"].values, source["code"].values)
        assert ds["ssh"].fill_value == numpy.float32(-9999.0)
        assert ds["count"].fill_value == 0 and "_FillValue" not in ds["count"].attrs
        assert ds["time"].attrs == {"long_name": "time"}
        assert ds["ssh"].attrs == {"units": "m"}
        assert ds.dimensions == {"time": 4, "x_ac": 2}

    def test_round_trip(self) -> None:
        source = make_xr_dataset()
        ds = Dataset.from_xarray(source)
        back = ds.to_xarray()
        assert isinstance(back, xarray.Dataset)
        assert "time" in back.indexes
        assert back["ssh"].encoding["_FillValue"] == numpy.float32(-9999.0)
        assert back["count"].encoding["_FillValue"] == 0
        source["count"].attrs.pop("_FillValue")
        assert_xr_equal(source, back)
        assert Dataset.from_xarray(back).identical(ds)

    def test_no_copy(self) -> None:
        data = numpy.arange(6.0).reshape(3, 2)
        ds = Dataset(variables=[Variable("v", data, ("a", "b"))])
        back = ds.to_xarray()
        assert numpy.shares_memory(back["v"].values, data)
        assert Dataset.from_xarray(back)["v"].data is back["v"].variable.data

    def test_lazy_round_trip(self) -> None:
        source = xarray.Dataset(
            {"ssh": (("time", "x"), exploding((4, 3), "float32"))},
            coords=xarray.Coordinates(
                {"time": xarray.Variable("time", exploding((4,), "M8[ns]"))}, indexes={}
            ),
        )
        ds = Dataset.from_xarray(source)
        assert ds["ssh"].is_lazy and ds["time"].is_lazy
        back = ds.to_xarray()
        assert isinstance(back["ssh"].data, da.Array)
        assert isinstance(back["time"].variable.data, da.Array)
        assert "time" in back.coords and "time" not in back.indexes
        assert back["ssh"].dtype == numpy.float32 and back["time"].dtype == numpy.dtype("M8[ns]")

    def test_lazy_values(self) -> None:
        source = make_xr_dataset(lazy=True)
        ds = Dataset.from_xarray(source)
        assert ds["ssh"].is_lazy
        assert ds["ssh"].data.chunks == ((2, 2), (2,))
        back = ds.to_xarray()
        assert back["ssh"].chunks == ((2, 2), (2,))
        expected = make_xr_dataset()
        expected["count"].attrs.pop("_FillValue")
        assert_xr_equal(expected, back.compute())

    def test_index_option(self) -> None:
        ds = Dataset(variables=[Variable("x", numpy.arange(3), ("x",))])
        back = ds.to_xarray(index=False)
        assert "x" in back.coords and "x" not in back.indexes
        numpy.testing.assert_array_equal(back["x"].values, numpy.arange(3))

    def test_not_xarray(self) -> None:
        with pytest.raises(InvalidInputError):
            Dataset.from_xarray({"a": 1})  # type: ignore[arg-type]


def make_tree(lazy: bool = False) -> xarray.DataTree:
    power = numpy.arange(8, dtype="float32").reshape(4, 2)
    power[1, 1] = numpy.nan
    ku = xarray.Dataset(
        {
            "power": (
                ("time", "range"),
                da.from_array(power, chunks=(2, 2)) if lazy else power,
                {"units": "dB"},
            )
        },
        attrs={"band": "Ku"},
    )
    return xarray.DataTree.from_dict(
        {
            "/": make_xr_dataset(),
            "/data_01": xarray.Dataset(attrs={"mission": "m"}),
            "/data_01/ku": ku,
            "/data_02": xarray.Dataset({"flag": ("time", numpy.array([1, 0, 1, 0], "int8"))}),
        }
    )


class TestDataTree:
    def test_from_tree(self) -> None:
        ds = Dataset.from_xarray(make_tree())
        assert [path for path, _ in ds.walk_groups()] == ["/", "data_01", "data_01/ku", "data_02"]
        power = ds["data_01/ku/power"]
        assert isinstance(power, Variable)
        assert power.dtype == numpy.float32 and power.attrs == {"units": "dB"}
        numpy.testing.assert_array_equal(power.values, make_tree()["/data_01/ku/power"].values)
        assert ds["data_01"].attrs == {"mission": "m"}
        assert ds["data_01/ku"].attrs == {"band": "Ku"}
        # inherited coordinates are not duplicated in child groups
        ku = ds["data_01/ku"]
        assert isinstance(ku, Group) and list(ku.variables) == ["power"]
        assert ds["data_02/flag"].dtype == numpy.int8

    def test_round_trip(self) -> None:
        source = make_tree()
        ds = Dataset.from_xarray(source)
        back = ds.to_xarray()
        assert isinstance(back, xarray.DataTree)
        source["/"].variables["count"].attrs.pop("_FillValue")
        xarray.testing.assert_identical(back, source)
        for node in back.subtree:
            for name, var in node.to_dataset(inherit=False).variables.items():
                expected = source[node.path].to_dataset(inherit=False).variables[name]
                assert var.dtype == expected.dtype
        assert Dataset.from_xarray(back).identical(ds)

    def test_lazy(self) -> None:
        ds = Dataset.from_xarray(make_tree(lazy=True))
        power = ds["data_01/ku/power"]
        assert isinstance(power, Variable) and power.is_lazy
        ds = ds.with_variables({"data_01/ku/power": power.with_data(exploding((4, 2), "float32"))})
        back = ds.to_xarray()
        assert isinstance(back, xarray.DataTree)
        assert isinstance(back["/data_01/ku/power"].data, da.Array)

    def test_dataset_without_groups_gives_dataset(self) -> None:
        tree = xarray.DataTree(make_xr_dataset())
        ds = Dataset.from_xarray(tree)
        assert not ds.groups
        assert isinstance(ds.to_xarray(), xarray.Dataset)
