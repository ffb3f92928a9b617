"""Variables, groups and datasets: access, walking, selection, concat."""

from __future__ import annotations

import dask
import dask.array as da
import numpy
import pytest

from dask_zcollection.data import Dataset, Group, Variable
from dask_zcollection.errors import InvalidInputError, VariableNotFoundError


def _boom() -> numpy.ndarray:
    raise AssertionError("dask data was computed")


def exploding(shape: tuple[int, ...], dtype: str = "float32", chunk: int = 2) -> da.Array:
    """A dask array whose chunks raise when computed."""
    pieces = []
    for start in range(0, shape[0], chunk):
        size = min(chunk, shape[0] - start)
        pieces.append(da.from_delayed(dask.delayed(_boom)(), shape=(size, *shape[1:]), dtype=dtype))
    return da.concatenate(pieces, axis=0)


def make_dataset(lazy: bool = False) -> Dataset:
    time = numpy.arange("2024-01-01", "2024-01-11", dtype="datetime64[D]").astype("M8[ns]")
    ssh = numpy.arange(30, dtype="float32").reshape(10, 3)
    ssh[0, 0] = numpy.nan
    power = numpy.arange(40, dtype="float64").reshape(10, 4)
    ku = Group(
        "ku",
        [
            Variable(
                "power", da.from_array(power, chunks=(4, 4)) if lazy else power, ("time", "range")
            )
        ],
        attrs={"band": "Ku"},
    )
    return Dataset(
        variables=[
            Variable("time", time, ("time",), attrs={"long_name": "time"}),
            Variable("ssh", ssh, ("time", "x_ac"), {"units": "m"}, numpy.float32("nan")),
            Variable("label", numpy.array(["a", "bb", "ccc"]), ("x_ac",)),
        ],
        groups=[Group("data_01", groups=[ku], attrs={"mission": "x"})],
        attrs={"title": "test"},
    )


class TestVariable:
    def test_properties(self) -> None:
        data = numpy.zeros((4, 3), dtype="float32")
        var = Variable("ssh", data, ["time", "x_ac"], {"units": "m"}, 0.0)
        assert var.data is data  # never copied
        assert var.dimensions == ("time", "x_ac")
        assert (var.shape, var.ndim, var.size, var.nbytes) == ((4, 3), 2, 12, 48)
        assert var.dtype == numpy.float32
        assert not var.is_lazy
        assert var.sizes == {"time": 4, "x_ac": 3}
        numpy.testing.assert_array_equal(var.values, data)

    def test_list_becomes_numpy(self) -> None:
        var = Variable("x", [1, 2, 3], ("x",))
        assert isinstance(var.data, numpy.ndarray)
        numpy.testing.assert_array_equal(var.values, [1, 2, 3])

    def test_ndim_mismatch_names_variable(self) -> None:
        with pytest.raises(InvalidInputError, match="'ssh'"):
            Variable("ssh", numpy.zeros((2, 2)), ("time",))

    def test_lazy(self) -> None:
        var = Variable("x", exploding((6,)), ("x",))
        assert var.is_lazy
        assert var.nbytes == 24
        assert var.shape == (6,)

    def test_with_data(self) -> None:
        var = Variable("x", numpy.arange(3), ("x",), {"a": 1}, -1)
        new = var.with_data(numpy.arange(5))
        assert (new.name, new.dimensions, new.attrs, new.fill_value) == ("x", ("x",), {"a": 1}, -1)
        numpy.testing.assert_array_equal(new.values, numpy.arange(5))
        with pytest.raises(InvalidInputError, match="'x'"):
            var.with_data(numpy.zeros((2, 2)))

    def test_isel_numpy(self) -> None:
        data = numpy.arange(12).reshape(4, 3)
        var = Variable("v", data, ("time", "x_ac"))
        numpy.testing.assert_array_equal(var.isel({"time": slice(1, 3)}).values, data[1:3])
        numpy.testing.assert_array_equal(
            var.isel({"time": numpy.array([True, False, True, False])}).values, data[[0, 2]]
        )
        numpy.testing.assert_array_equal(var.isel({"x_ac": [2, 0]}).values, data[:, [2, 0]])
        both = var.isel({"time": [0, 3], "x_ac": [1, 2]})
        numpy.testing.assert_array_equal(both.values, data[[0, 3]][:, [1, 2]])
        scalar = var.isel({"time": 1})
        assert scalar.dimensions == ("x_ac",)
        numpy.testing.assert_array_equal(scalar.values, data[1])
        mixed = var.isel({"time": 2, "x_ac": [0, 2]})
        numpy.testing.assert_array_equal(mixed.values, data[2, [0, 2]])
        assert var.isel({"other": slice(0, 1)}) is var

    def test_isel_dask_stays_lazy(self) -> None:
        var = Variable("v", exploding((6, 2)), ("time", "x"))
        sub = var.isel({"time": slice(0, 4)})
        assert sub.is_lazy and sub.shape == (4, 2)
        sub = var.isel({"time": numpy.array([True, False] * 3)})
        assert sub.is_lazy and sub.shape == (3, 2)
        data = numpy.arange(12.0).reshape(6, 2)
        real = Variable("v", da.from_array(data, chunks=2), ("time", "x"))
        sub = real.isel({"time": numpy.array([5, 0, 1]), "x": slice(1, None)})
        assert sub.is_lazy
        numpy.testing.assert_array_equal(sub.values, data[[5, 0, 1], 1:])

    def test_isel_bad_indexer_names_variable(self) -> None:
        var = Variable("v", numpy.arange(3), ("x",))
        with pytest.raises(InvalidInputError, match="'v'"):
            var.isel({"x": numpy.array([True, False])})

    def test_compute(self) -> None:
        data = numpy.arange(5, dtype="int16")
        var = Variable("v", da.from_array(data, chunks=2), ("x",))
        done = var.compute()
        assert not done.is_lazy and done.dtype == numpy.int16
        numpy.testing.assert_array_equal(done.values, data)

    def test_identical_nan_aware(self) -> None:
        a = Variable("v", numpy.array([numpy.nan, 1.0]), ("x",), {"u": "m"}, numpy.nan)
        b = Variable("v", numpy.array([numpy.nan, 1.0]), ("x",), {"u": "m"}, numpy.nan)
        assert a.identical(b)
        assert a != b  # __eq__ is identity
        assert not a.identical(b.with_data(numpy.array([numpy.nan, 2.0])))
        assert not a.identical(
            Variable("v", numpy.array([numpy.nan, 1.0], "f4"), ("x",), {"u": "m"}, numpy.nan)
        )
        assert not a.identical(Variable("w", a.data, ("x",), {"u": "m"}, numpy.nan))
        assert not a.identical(Variable("v", a.data, ("x",), {"u": "cm"}, numpy.nan))
        nat = numpy.array(["NaT", "2024-01-01"], dtype="M8[ns]")
        assert Variable("t", nat, ("x",)).identical(Variable("t", nat.copy(), ("x",)))
        text = numpy.array(["a", "b"])
        assert Variable("s", text, ("x",)).identical(Variable("s", text.copy(), ("x",)))
        lazy = Variable("v", da.from_array(a.data), ("x",), {"u": "m"}, numpy.nan)
        assert a.identical(lazy)


class TestGroup:
    def test_path_access(self) -> None:
        ds = make_dataset()
        assert ds["ssh"].name == "ssh"
        power = ds["data_01/ku/power"]
        assert isinstance(power, Variable)
        assert power is ds["/data_01/ku/power"]
        numpy.testing.assert_array_equal(power.values, numpy.arange(40.0).reshape(10, 4))
        ku = ds["data_01/ku"]
        assert isinstance(ku, Group) and ku.name == "ku" and ku.attrs == {"band": "Ku"}
        assert ds["/"] is ds
        assert "data_01/ku/power" in ds and "/data_01" in ds and "nope" not in ds
        assert "data_01/nope/power" not in ds
        assert ds.get("nope") is None and ds.get("nope", 1) == 1

    def test_missing_path_names_it(self) -> None:
        ds = make_dataset()
        with pytest.raises(VariableNotFoundError, match="data_01/xx/power"):
            ds["data_01/xx/power"]
        with pytest.raises(KeyError):
            ds["nope"]

    def test_walk_order(self) -> None:
        ds = make_dataset()
        assert [path for path, _ in ds.walk()] == ["time", "ssh", "label", "data_01/ku/power"]
        assert list(ds) == ["time", "ssh", "label", "data_01/ku/power"]
        assert [path for path, _ in ds.walk_groups()] == ["/", "data_01", "data_01/ku"]
        assert [g.name for _, g in ds.walk_groups()] == ["/", "data_01", "ku"]

    def test_dimensions_and_nbytes(self) -> None:
        ds = make_dataset()
        assert ds.dimensions == {"time": 10, "x_ac": 3, "range": 4}
        assert ds.nbytes == 80 + 120 + 3 * 12 + 320
        assert ds["data_01"].dimensions == {"time": 10, "range": 4}

    def test_inconsistent_dimensions(self) -> None:
        ds = make_dataset().with_variables(
            {"data_01/bad": Variable("bad", numpy.zeros(3), ("time",))}
        )
        with pytest.raises(InvalidInputError, match=r"'data_01/bad'.*'time'"):
            _ = ds.dimensions

    def test_name_clash(self) -> None:
        with pytest.raises(InvalidInputError, match="'a'"):
            Group("/", [Variable("a", numpy.zeros(1), ("x",))], [Group("a")])
        with pytest.raises(InvalidInputError, match="duplicate"):
            Group("/", [Variable("a", numpy.zeros(1), ("x",))] * 2)

    def test_mapping_renames(self) -> None:
        group = Group("g", {"b": Variable("a", numpy.zeros(1), ("x",))})
        assert group["b"].name == "b"

    def test_isel_numpy(self) -> None:
        ds = make_dataset()
        sub = ds.isel({"time": slice(2, 5)})
        assert isinstance(sub, Dataset)
        assert sub.dimensions == {"time": 3, "x_ac": 3, "range": 4}
        numpy.testing.assert_array_equal(sub["ssh"].values, ds["ssh"].values[2:5])
        numpy.testing.assert_array_equal(
            sub["data_01/ku/power"].values, ds["data_01/ku/power"].values[2:5]
        )
        assert sub["label"] is ds["label"]  # untouched
        assert sub["data_01/ku"].attrs == {"band": "Ku"}
        assert ds.dimensions["time"] == 10  # original unchanged
        mask = numpy.arange(10) % 2 == 0
        numpy.testing.assert_array_equal(sub["time"].values, ds["time"].values[2:5])
        numpy.testing.assert_array_equal(
            ds.isel({"time": mask})["time"].values, ds["time"].values[mask]
        )

    def test_isel_unknown_dimension(self) -> None:
        with pytest.raises(InvalidInputError, match="nope"):
            make_dataset().isel({"nope": slice(0, 1)})

    def test_isel_dask_stays_lazy(self) -> None:
        ds = make_dataset().with_variables(
            {
                "data_01/ku/power": Variable(
                    "power", exploding((10, 4), "float64"), ("time", "range")
                )
            }
        )
        sub = ds.isel({"time": slice(0, 3), "range": numpy.array([0, 3])})
        power = sub["data_01/ku/power"]
        assert isinstance(power, Variable) and power.is_lazy
        assert power.shape == (3, 2)
        numpy.testing.assert_array_equal(sub["ssh"].values, ds["ssh"].values[:3])

    def test_select(self) -> None:
        ds = make_dataset()
        sub = ds.select(["data_01/ku/power", "time"])
        assert isinstance(sub, Dataset)
        assert [path for path, _ in sub.walk()] == ["time", "data_01/ku/power"]
        assert sub["data_01"].attrs == {"mission": "x"}
        assert sub["data_01/ku"].attrs == {"band": "Ku"}
        assert sub.attrs == {"title": "test"}
        assert sub["time"] is ds["time"]
        only_root = ds.select(["ssh"])
        assert not only_root.groups and list(only_root.variables) == ["ssh"]
        whole = ds.select(["data_01"])
        assert [path for path, _ in whole.walk()] == ["data_01/ku/power"]

    def test_select_unknown(self) -> None:
        with pytest.raises(VariableNotFoundError, match="data_01/ku/nope"):
            make_dataset().select(["time", "data_01/ku/nope"])

    def test_with_variables(self) -> None:
        ds = make_dataset()
        new = ds.with_variables(
            {
                "data_02/c/sig": Variable("x", numpy.ones(10), ("time",)),
                "data_01/ku/extra": Variable("extra", numpy.zeros(10), ("time",)),
                "ssh": ds["ssh"].with_data(numpy.zeros((10, 3), "float32")),
            }
        )
        assert [path for path, _ in new.walk()] == [
            "time",
            "ssh",
            "label",
            "data_01/ku/power",
            "data_01/ku/extra",
            "data_02/c/sig",
        ]
        assert new["data_02/c/sig"].name == "sig"
        numpy.testing.assert_array_equal(new["data_02/c/sig"].values, numpy.ones(10))
        numpy.testing.assert_array_equal(new["ssh"].values, numpy.zeros((10, 3)))
        assert new["data_01/ku"].attrs == {"band": "Ku"}
        # the original is untouched
        assert "data_01/ku/extra" not in ds and "data_02" not in ds
        assert numpy.isnan(ds["ssh"].values[0, 0])
        with pytest.raises(InvalidInputError, match="data_01"):
            ds.with_variables({"data_01": Variable("x", numpy.ones(10), ("time",))})

    def test_drop(self) -> None:
        ds = make_dataset()
        new = ds.drop(["ssh", "data_01/ku/power"])
        assert [path for path, _ in new.walk()] == ["time", "label"]
        assert "ssh" in ds and "data_01/ku/power" in ds
        with pytest.raises(VariableNotFoundError, match="zz"):
            ds.drop(["zz"])

    def test_compute_single_call(self, monkeypatch: pytest.MonkeyPatch) -> None:
        ds = make_dataset(lazy=True).with_variables(
            {"extra": Variable("extra", da.arange(10, chunks=5), ("time",))}
        )
        assert ds.is_lazy
        calls = []
        original = dask.compute

        def counting(*args, **kwargs):  # type: ignore[no-untyped-def]
            calls.append(len(args))
            return original(*args, **kwargs)

        monkeypatch.setattr(dask, "compute", counting)
        done = ds.compute()
        assert calls == [2]
        assert not done.is_lazy
        numpy.testing.assert_array_equal(
            done["data_01/ku/power"].values, numpy.arange(40.0).reshape(10, 4)
        )
        numpy.testing.assert_array_equal(done["extra"].values, numpy.arange(10))
        assert done.identical(
            make_dataset().with_variables({"extra": Variable("extra", numpy.arange(10), ("time",))})
        )

    def test_identical(self) -> None:
        assert make_dataset().identical(make_dataset())
        assert make_dataset().identical(make_dataset(lazy=True))
        other = make_dataset()
        other["data_01/ku"].attrs["band"] = "C"
        assert not make_dataset().identical(other)
        changed = make_dataset().with_variables(
            {"ssh": make_dataset()["ssh"].with_data(numpy.zeros((10, 3), "float32"))}
        )
        assert not make_dataset().identical(changed)
        assert not make_dataset().identical(make_dataset().select(["time"]))
        assert not make_dataset().identical("x")


class TestFromMapping:
    def test_forms(self) -> None:
        ds = Dataset.from_mapping(
            {
                "time": numpy.arange(3, dtype="int64"),
                "data_01/ku/power": (("time", "range"), numpy.ones((3, 2), "float32")),
                "flag": Variable("whatever", numpy.array([b"ab", b"cd", b"ef"]), ("time",)),
            },
            dimensions=lambda path: ("time",),
            attrs={"a": 1},
        )
        assert [path for path, _ in ds.walk()] == ["time", "flag", "data_01/ku/power"]
        assert ds["flag"].name == "flag" and ds["flag"].dtype == numpy.dtype("S2")
        assert ds.attrs == {"a": 1}
        assert ds.dimensions == {"time": 3, "range": 2}
        numpy.testing.assert_array_equal(ds["data_01/ku/power"].values, numpy.ones((3, 2)))

    def test_callback_receives_path(self) -> None:
        seen = []

        def dims(path: str) -> tuple[str, ...]:
            seen.append(path)
            return ("x",)

        Dataset.from_mapping({"g/v": numpy.zeros(2)}, dimensions=dims)
        assert seen == ["g/v"]

    def test_missing_dimensions_names_variable(self) -> None:
        with pytest.raises(InvalidInputError, match="'g/v'"):
            Dataset.from_mapping({"g/v": numpy.zeros(2)})


class TestConcat:
    def test_numpy(self) -> None:
        ds = make_dataset()
        parts = [ds.isel({"time": slice(0, 4)}), ds.isel({"time": slice(4, 10)})]
        joined = Dataset.concat(parts, "time")
        assert isinstance(joined, Dataset)
        assert joined.identical(ds)
        assert isinstance(joined["ssh"].data, numpy.ndarray)
        assert joined["time"].dtype == numpy.dtype("M8[ns]")
        assert joined["label"] is parts[0]["label"]

    def test_dask(self) -> None:
        ds = make_dataset(lazy=True)
        parts = [ds.isel({"time": slice(0, 4)}), ds.isel({"time": slice(4, 10)})]
        joined = Dataset.concat(parts, "time")
        assert joined["data_01/ku/power"].is_lazy
        assert joined.identical(ds)

    def test_mixed_stays_lazy(self) -> None:
        a = Dataset(variables=[Variable("v", numpy.arange(3), ("x",))])
        b = Dataset(variables=[Variable("v", exploding((4,), "int64"), ("x",))])
        joined = Dataset.concat([a, b], "x")
        assert joined["v"].is_lazy and joined["v"].shape == (7,)

    def test_different_variables(self) -> None:
        ds = make_dataset()
        with pytest.raises(InvalidInputError, match="ssh"):
            Dataset.concat([ds, ds.drop(["ssh"])], "time")
        with pytest.raises(InvalidInputError):
            Dataset.concat([], "time")

    def test_bad_shapes_name_variable(self) -> None:
        a = Dataset(variables=[Variable("v", numpy.zeros((2, 3)), ("x", "y"))])
        b = Dataset(variables=[Variable("v", numpy.zeros((2, 4)), ("x", "y"))])
        with pytest.raises(InvalidInputError, match="'v'"):
            Dataset.concat([a, b], "x")
