"""xarray: the indexed axis of ``to_xarray``, the ``zcollection`` backend, reads it costs."""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any

import dask.array as da
import numpy
import pytest
import xarray

import dask_zcollection as zc
from dask_zcollection.errors import NotFoundError
from dask_zcollection.xarray_backend import ZCollectionBackendEntrypoint

pytest.register_assert_rewrite("conftest_read")
from conftest_read import counting_spec, is_chunk_key, reads, reset_reads  # noqa: E402

pytest_plugins = ["conftest_read"]

ENGINE = ZCollectionBackendEntrypoint  # the entry point needs an install; the class does not
ROOT = Path(__file__).parent.parent


def _npz(fixtures: Path, name: str) -> dict[str, numpy.ndarray]:
    with numpy.load(fixtures / f"{name}.expected.npz") as z:
        return {k.replace("__", "/"): z[k] for k in z.files}


def partition_of(key: str) -> str:
    return "/".join(p for p in key.split("/") if "=" in p)


def chunk_reads(tag: str) -> list[str]:
    return [k for k in reads(tag) if is_chunk_key(k)]


@pytest.fixture
def monthly(factory: Any, memory_url: str) -> tuple[str, dict[str, numpy.ndarray]]:
    """Four monthly partitions (Jan-Apr 2024, a row every 12 h, zarr chunks of 4 rows)."""
    col = factory.create(memory_url)
    times = numpy.arange(
        "2024-01-01", "2024-05-01", numpy.timedelta64(12, "h"), dtype="datetime64[ns]"
    )
    data = factory.data(times, seed=7)
    data["quality"][::5] = 255  # some rows at the fill value
    col.insert(data)
    return memory_url, data


LO, HI = "2024-02-10", "2024-02-12T12"


def _in_range(t: numpy.ndarray) -> numpy.ndarray:
    return (t >= numpy.datetime64(LO)) & (t <= numpy.datetime64(HI))


# -- to_xarray: the indexed axis ---------------------------------------------------------------
def test_to_xarray_indexes_the_axis_and_sel_reads_only_its_range(monthly: Any) -> None:
    url, data = monthly
    spec = counting_spec(url)
    lazy = zc.read_collection(spec)
    reset_reads(spec.tag)
    tree = lazy.to_xarray()
    # Building the index read the axis variable, nothing else.
    assert {k.split("/")[2] for k in chunk_reads(spec.tag)} == {"time"}
    root = tree.to_dataset()
    assert isinstance(root.xindexes["time"], xarray.indexes.PandasIndex)
    assert isinstance(root["ssh"].data, da.Array)

    reset_reads(spec.tag)
    sel = root.sel(time=slice(LO, HI))
    assert not reads(spec.tag), "sel computed data"
    ssh = sel["ssh"].values
    keys = chunk_reads(spec.tag)
    # Only February's chunks holding rows 2024-02-10 .. 2024-02-12T12 (rows 18..22, chunks of 4).
    assert {partition_of(k) for k in keys} == {"year=2024/month=02"}
    assert sorted(k.split("/", 2)[2] for k in keys) == ["ssh/c/4/0", "ssh/c/5/0"]
    mask = _in_range(data["time"])
    assert numpy.array_equal(ssh, data["ssh"][mask], equal_nan=True)
    numpy.testing.assert_array_equal(sel["time"].values, data["time"][mask])

    # A nested group inherits the index.
    reset_reads(spec.tag)
    ku = tree["/data_01/ku"].sel(time=slice(LO, HI))
    numpy.testing.assert_array_equal(ku["power"].values, data["data_01/ku/power"][mask])
    assert {partition_of(k) for k in chunk_reads(spec.tag)} == {"year=2024/month=02"}


def test_to_xarray_keeps_attributes_and_fill_values(monthly: Any) -> None:
    url, _ = monthly
    tree = zc.read_collection(url).to_xarray()
    root = tree.to_dataset()
    assert root.attrs == {"title": "test collection", "version": 3}
    assert root["ssh"].attrs == {"units": "m"}
    assert numpy.isnan(root["ssh"].encoding["_FillValue"])
    assert root["quality"].encoding["_FillValue"] == 255
    assert root["quality"].dtype == numpy.uint8  # not masked: the stored values
    assert root["time"].attrs == {"long_name": "time"}
    assert tree["/data_01/ku"].attrs == {"band": "Ku"}


def test_to_xarray_of_a_sequence_indexes_time_along_num_lines(fixtures_dir: Path) -> None:
    expected = _npz(fixtures_dir, "sequence")
    ds = zc.read_collection(f"file://{fixtures_dir / 'sequence'}").to_xarray()
    assert ds["time"].dims == ("num_lines",)
    assert "time" in ds.xindexes and "num_lines" not in ds.xindexes
    t = expected["time"]
    lo, hi = t[20], t[40]
    sel = ds.sel(time=slice(lo, hi))
    mask = (t >= lo) & (t <= hi)
    numpy.testing.assert_array_equal(sel["time"].values, t[mask])
    numpy.testing.assert_array_equal(sel["swh"].values, expected["swh"][mask])
    numpy.testing.assert_array_equal(sel["cycle_number"].values, expected["cycle_number"][mask])


def test_to_xarray_without_the_axis_variable_has_no_index(monthly: Any) -> None:
    url, data = monthly
    ds = zc.read_collection(url)[["ssh", "quality"]].to_xarray()
    assert not ds.xindexes
    numpy.testing.assert_array_equal(ds["quality"].values, data["quality"])


# -- the backend -------------------------------------------------------------------------------
def test_entry_point_is_declared() -> None:
    """pyproject.toml registers the class (an install makes ``engine="zcollection"`` work)."""
    meta = tomllib.loads((ROOT / "pyproject.toml").read_text())
    target = meta["project"]["entry-points"]["xarray.backends"]["zcollection"]
    module, _, name = target.partition(":")
    import importlib

    assert getattr(importlib.import_module(module), name) is ZCollectionBackendEntrypoint


@pytest.mark.parametrize("name", ["date_monthly", "sequence"])
def test_fixtures_open_through_the_backend(fixtures_dir: Path, name: str) -> None:
    expected = _npz(fixtures_dir, name)
    url = f"file://{fixtures_dir / name}"
    lazy = zc.read_collection(url)
    raw = xarray.open_datatree(url, engine=ENGINE, mask_and_scale=False, chunks={})
    for path, values in expected.items():
        group, _, var = path.rpartition("/")
        got = raw["/" + group].to_dataset()[var] if group else raw.to_dataset()[var]
        assert got.dtype == values.dtype, path
        assert numpy.array_equal(got.values, values, equal_nan=values.dtype.kind in "fmM"), path
        if var != lazy.source.config.axis_variable and var != "x_ac":
            # dask chunks = our blocks (a block per zarr chunk inside each partition).
            assert got.chunks == lazy.to_dask_array(path).chunks, path
    if name == "date_monthly":  # a nested group inherits the index
        t = expected["time"]
        ku = raw["/data_01/ku"].sel(time=slice(t[100], t[300]))
        numpy.testing.assert_array_equal(ku["power"].values, expected["data_01/ku/power"][100:301])
    flat = xarray.open_dataset(url, engine=ENGINE, mask_and_scale=False)
    assert sorted(flat.variables) == sorted(k for k in expected if "/" not in k)
    for var in flat.variables:
        numpy.testing.assert_array_equal(flat[var].values, expected[str(var)])


def test_backend_masks_fill_values_by_default(monthly: Any) -> None:
    url, data = monthly
    ds = xarray.open_dataset(url, engine=ENGINE)
    quality = data["quality"]
    assert ds["quality"].dtype == numpy.float32  # CF masking: as netCDF integers with a fill
    want = numpy.where(quality == 255, numpy.nan, quality.astype("float32"))
    assert numpy.array_equal(ds["quality"].values, want, equal_nan=True)
    assert ds["quality"].encoding["_FillValue"] == 255
    assert ds["quality"].encoding["dtype"] == numpy.uint8
    assert "_FillValue" not in ds["quality"].attrs
    assert ds["ssh"].attrs == {"units": "m"} and ds.attrs["title"] == "test collection"
    raw = xarray.open_dataset(url, engine=ENGINE, mask_and_scale=False)
    numpy.testing.assert_array_equal(raw["quality"].values, quality)
    assert raw["quality"].attrs["_FillValue"] == 255


@pytest.mark.parametrize("chunks", [None, {}], ids=["lazy", "dask"])
def test_backend_filters_prune_and_sel_reads_only_its_range(
    monthly: Any, chunks: dict[str, Any] | None
) -> None:
    url, data = monthly
    spec = counting_spec(url)
    reset_reads(spec.tag)
    ds = xarray.open_dataset(spec, engine=ENGINE, filters="month in (2, 3)", chunks=chunks)
    t = data["time"]
    feb_mar = (t >= numpy.datetime64("2024-02")) & (t < numpy.datetime64("2024-04"))
    # Opening read nothing of the partitions (the index is lazy), only the immutable
    # ``x_ac``, a dimension coordinate xarray indexes.
    keys = chunk_reads(spec.tag)
    assert {k.split("/")[1] for k in keys} == {"x_ac"}
    if chunks is not None:
        assert isinstance(ds["ssh"].data, da.Array)
    reset_reads(spec.tag)
    sel = ds.sel(time=slice(LO, HI)).load()
    keys = chunk_reads(spec.tag)
    assert {partition_of(k) for k in keys} == {"year=2024/month=02"}
    # The data: only the chunks of rows 18..22 (chunks of 4); the axis: February's.
    assert {k.split("/", 2)[2] for k in keys if "/time/" not in k} == {
        f"{v}/c/{i}{tail}" for v, tail in (("ssh", "/0"), ("quality", "")) for i in (4, 5)
    }
    numpy.testing.assert_array_equal(ds["time"].values, t[feb_mar])
    mask = _in_range(t)
    assert numpy.array_equal(sel["ssh"].values, data["ssh"][mask], equal_nan=True)
    q = data["quality"][mask]
    assert numpy.array_equal(
        sel["quality"].values, numpy.where(q == 255, numpy.nan, q), equal_nan=True
    )


def test_backend_time_range_filter_reads_the_axis_of_its_partitions(monthly: Any) -> None:
    url, data = monthly
    spec = counting_spec(url)
    reset_reads(spec.tag)
    ds = xarray.open_dataset(spec, engine=ENGINE, filters={"time": slice(LO, HI)}, chunks={})
    keys = [k for k in chunk_reads(spec.tag) if "=" in k]
    assert {partition_of(k) for k in keys} == {"year=2024/month=02"}
    mask = _in_range(data["time"])
    numpy.testing.assert_array_equal(ds["time"].values, data["time"][mask])
    assert numpy.array_equal(ds["ssh"].values, data["ssh"][mask], equal_nan=True)
    both = xarray.open_dataset(url, engine=ENGINE, filters={"month": 3, "time": slice(LO, None)})
    march = data["time"].astype("M8[M]") == numpy.datetime64("2024-03")
    numpy.testing.assert_array_equal(both["time"].values, data["time"][march])


def test_backend_projection_and_groups(monthly: Any) -> None:
    url, data = monthly
    spec = counting_spec(url)
    ds = xarray.open_dataset(spec, engine=ENGINE, variables=["quality"], chunks={})
    assert sorted(ds.variables) == ["quality", "time"]  # the axis is kept: it is the index
    ku = xarray.open_dataset(url, engine=ENGINE, group="/data_01/ku", chunks={})
    assert sorted(ku.variables) == ["power", "time"]
    assert ku.attrs == {"band": "Ku"}
    numpy.testing.assert_array_equal(
        ku.sel(time=slice(LO, HI))["power"].values,
        data["data_01/ku/power"][_in_range(data["time"])],
    )
    dropped = xarray.open_dataset(url, engine=ENGINE, drop_variables=["ssh"])
    assert "ssh" not in dropped.variables and "quality" in dropped.variables
    with pytest.raises(NotFoundError, match="nope"):
        xarray.open_dataset(url, engine=ENGINE, group="nope")


@pytest.mark.parametrize("chunks", [None, {}], ids=["lazy", "dask"])
def test_backend_with_nothing_selected(monthly: Any, chunks: dict[str, Any] | None) -> None:
    url, _ = monthly
    ds = xarray.open_dataset(url, engine=ENGINE, filters="month == 9", chunks=chunks).load()
    assert ds.sizes == {"time": 0, "x_ac": 3}
    assert ds["ssh"].shape == (0, 3) and ds["time"].dtype == numpy.dtype("M8[ns]")


def test_guess_can_open(fixtures_dir: Path, tmp_path: Path) -> None:
    entry = ZCollectionBackendEntrypoint()
    assert entry.guess_can_open(str(fixtures_dir / "date_monthly"))
    assert entry.guess_can_open(fixtures_dir / "sequence")
    assert entry.guess_can_open(f"file://{fixtures_dir / 'date_monthly'}")
    assert not entry.guess_can_open(str(tmp_path))
    assert not entry.guess_can_open(str(fixtures_dir / "date_monthly.expected.npz"))
    assert not entry.guess_can_open("s3://bucket/collection")  # never probed over the network
    assert not entry.guess_can_open(b"bytes")


# -- writing from xarray -----------------------------------------------------------------------
def _xarray_of(data: dict[str, numpy.ndarray], chunks: int = 10) -> xarray.DataTree:
    """The factory's data as a dask-backed DataTree (``time`` indexed, ``x_ac`` a coordinate)."""
    root = xarray.Dataset(
        {
            "ssh": (("time", "x_ac"), da.from_array(data["ssh"], chunks=chunks), {"units": "m"}),
            "quality": ("time", da.from_array(data["quality"], chunks=chunks)),
        },
        coords={"time": data["time"], "x_ac": data["x_ac"]},
        attrs={"title": "from xarray"},
    )
    root["ssh"].encoding["_FillValue"] = numpy.float32("nan")
    root["quality"].encoding["_FillValue"] = numpy.uint8(255)
    power = da.from_array(data["data_01/ku/power"], chunks=chunks)
    ku = xarray.Dataset({"power": (("time", "range"), power)}, attrs={"band": "Ku"})
    return xarray.DataTree.from_dict({"/": root, "/data_01/ku": ku})


@pytest.mark.parametrize("kind", ["Dataset", "DataTree"])
def test_insert_dask_backed_xarray_with_compute_false(
    factory: Any, memory_url: str, kind: str
) -> None:
    times = numpy.arange("2024-01-01T00", "2024-03-01T00", 12, dtype="datetime64[h]").astype(
        "M8[ns]"
    )
    data = factory.data(times, seed=11, nested=kind == "DataTree")
    col = factory.create(memory_url, nested=kind == "DataTree")
    tree = _xarray_of({"data_01/ku/power": numpy.zeros((len(times), 2), "f4"), **data})
    obj = tree.to_dataset() if kind == "Dataset" else tree
    delayed = col.insert(obj, compute=False)
    assert zc.read_collection(memory_url).npartitions == 0  # nothing written yet
    import dask

    dask.compute(delayed)
    got = zc.read_collection(memory_url).compute()
    for path, values in data.items():
        assert numpy.array_equal(got[path].values, values, equal_nan=True), path


def test_create_collection_from_a_tree_infers_the_schema(
    factory: Any, memory_url: str, fixtures_dir: Path
) -> None:
    times = numpy.arange("2024-01-01T00", "2024-03-01T00", 12, dtype="datetime64[h]").astype(
        "M8[ns]"
    )
    data = factory.data(times, seed=12)
    tree = _xarray_of(data)
    part = zc.partitioning.Date(("time",), resolution="M")
    col = zc.create_collection(memory_url, from_=tree, partitioning=part)
    schema = zc.read_collection(memory_url).source.config.schema
    assert schema["ssh"].dtype == numpy.float32 and numpy.isnan(schema["ssh"].fill_value)
    assert schema["ssh"].attrs == {"units": "m"}
    assert schema["quality"].fill_value == 255 and schema["quality"].dtype == numpy.uint8
    assert schema["x_ac"].immutable and schema["data_01/ku/power"].dimensions == ("time", "range")
    assert schema.root.attrs == {"title": "from xarray"}
    assert dict(schema.walk_groups())["data_01/ku"].attrs == {"band": "Ku"}
    assert schema.all_dimensions()["time"].size is None
    col.insert(tree)
    back = xarray.open_datatree(memory_url, engine=ENGINE, mask_and_scale=False)
    for path, values in data.items():
        group, _, var = path.rpartition("/")
        node = back["/" + group] if group else back
        assert numpy.array_equal(node[var].values, values, equal_nan=True), path
    with pytest.raises(zc.errors.InvalidInputError, match="not both"):
        zc.create_collection("memory://other", from_=tree, schema=schema, partitioning=part)


def test_a_collection_opened_with_the_backend_copies_to_another(
    fixtures_dir: Path, memory_url: str
) -> None:
    """Chunks and CF masking round trip: the masked uint8 goes back to uint8 with its fill."""
    src = f"file://{fixtures_dir / 'date_monthly'}"
    tree = xarray.open_datatree(src, engine=ENGINE, chunks={})
    assert tree["quality"].dtype == numpy.float32  # decoded
    part = zc.partitioning.Date(("time",), resolution="M")
    col = zc.create_collection(memory_url, from_=tree, partitioning=part)
    schema = col.lazy().source.config.schema
    original = zc.read_collection(src).source.config.schema
    for path, spec in original.walk():
        assert schema[path].dtype == spec.dtype, path
        assert schema[path].dimensions == spec.dimensions, path
    assert schema["quality"].fill_value == 255
    assert schema.all_dimensions()["time"].chunks == original.all_dimensions()["time"].chunks
    col.insert(tree)
    expected = _npz(fixtures_dir, "date_monthly")
    got = zc.read_collection(memory_url).compute()
    for path, values in expected.items():
        assert got[path].dtype == values.dtype, path
        assert numpy.array_equal(got[path].values, values, equal_nan=True), path


# -- dataframes --------------------------------------------------------------------------------
def test_to_dask_dataframe_takes_2d_variables_wide(monthly: Any, tmp_path: Path) -> None:
    import dask.dataframe as dd
    import pandas

    url, data = monthly
    spec = counting_spec(url)
    lazy = zc.read_collection(spec)
    df = lazy.to_dask_dataframe(["time", "ssh", "quality", "data_01/ku/power"])
    columns = [
        "ssh[0]",
        "ssh[1]",
        "ssh[2]",
        "quality",
        "data_01/ku/power[0]",
        "data_01/ku/power[1]",
    ]
    assert list(df.columns) == columns
    assert df.known_divisions and df.npartitions == 4
    assert df.divisions[0] == pandas.Timestamp(data["time"][0])
    frame = df.compute()
    numpy.testing.assert_array_equal(frame.index.values, data["time"])
    for j in range(3):
        assert numpy.array_equal(frame[f"ssh[{j}]"].values, data["ssh"][:, j], equal_nan=True)
    for j in range(2):
        power = frame[f"data_01/ku/power[{j}]"].values
        numpy.testing.assert_array_equal(power, data["data_01/ku/power"][:, j])
    # A projection to one column reads that variable only (and the index).
    reset_reads(spec.tag)
    one = df["ssh[1]"].loc["2024-02-10":"2024-02-12"].compute()
    assert {k.split("/")[2] for k in chunk_reads(spec.tag)} <= {"ssh", "time"}
    mask = (data["time"] >= numpy.datetime64("2024-02-10")) & (
        data["time"] < numpy.datetime64("2024-02-13")
    )
    numpy.testing.assert_array_equal(one.values, data["ssh"][mask, 1])
    # pandas/pyarrow round trips keep the dtypes.
    frame.to_parquet(tmp_path / "frame.parquet")
    back = pandas.read_parquet(tmp_path / "frame.parquet")
    assert dict(back.dtypes) == dict(frame.dtypes)
    pandas.testing.assert_frame_equal(back, frame)
    df.to_parquet(tmp_path / "dask")
    again = dd.read_parquet(tmp_path / "dask").compute()
    assert dict(again.dtypes) == dict(frame.dtypes)
    assert again.index.dtype == frame.index.dtype
    # The frames of a persisted collection too.
    persisted = zc.read_collection(url).persist().to_dask_dataframe(["time", "ssh"]).compute()
    pandas.testing.assert_frame_equal(persisted, frame[["ssh[0]", "ssh[1]", "ssh[2]"]])
    with pytest.raises(zc.errors.InvalidInputError, match="x_ac"):
        lazy.to_dask_dataframe(["x_ac"])


def test_schema_inference_dimensions_and_errors() -> None:
    from dask_zcollection._infer import schema_from_xarray

    t = numpy.arange(4).astype("M8[s]").astype("M8[ns]")
    tree = xarray.DataTree.from_dict(
        {
            "/": xarray.Dataset({"v": ("time", numpy.zeros(4, "i4"))}, coords={"time": t}),
            "/a": xarray.Dataset({"w": (("time", "band"), numpy.zeros((4, 2), "f8"))}),
            "/b": xarray.Dataset({"w": (("time", "band"), numpy.zeros((4, 3), "f8"))}),
        }
    )
    schema = schema_from_xarray(tree, "time")
    assert schema.variable_dimensions("a/w")["band"].size == 2
    assert schema.variable_dimensions("b/w")["band"].size == 3  # declared in each group
    assert schema["v"].fill_value is None and schema["time"].dtype == numpy.dtype("M8[ns]")
    with pytest.raises(zc.errors.SchemaError, match="'num_lines' is not a dimension"):
        schema_from_xarray(tree, "num_lines")
    with pytest.raises(zc.errors.InvalidInputError, match="dict"):
        schema_from_xarray({"v": [1]}, "time")


def test_backend_reads_an_icechunk_version(tmp_path: Path, factory: Any) -> None:
    """``version=`` (a tag) and ``storage_options`` reach the store: the snapshot's rows only."""
    import icechunk

    url = f"icechunk://{tmp_path}/repo"
    col = factory.create(url)
    first = numpy.array(["2024-01-03", "2024-01-09", "2024-02-27"], "M8[ns]")
    col.insert(factory.data(first, seed=1))
    repo = icechunk.Repository.open(icechunk.local_filesystem_storage(str(tmp_path / "repo")))
    repo.create_tag("v1", repo.lookup_branch("main"))
    col.insert(factory.data(numpy.array(["2024-03-05"], "M8[ns]"), seed=2))
    old = xarray.open_dataset(url, engine=ENGINE, version="v1", storage_options={}, chunks={})
    numpy.testing.assert_array_equal(old["time"].values, first)
    now = xarray.open_datatree(url, engine=ENGINE)
    assert now["/data_01/ku"].sizes["time"] == 4


def test_backend_arrays_pickle_for_workers(fixtures_dir: Path) -> None:
    import pickle

    expected = _npz(fixtures_dir, "date_monthly")
    ds = xarray.open_dataset(fixtures_dir / "date_monthly", engine=ENGINE, chunks={})
    ssh = pickle.loads(pickle.dumps(ds["ssh"].data))
    assert numpy.array_equal(ssh.compute(scheduler="sync"), expected["ssh"], equal_nan=True)


def test_backend_lazy_indexing_matches_numpy(fixtures_dir: Path) -> None:
    """Integers, negative steps and arrays through the lazy arrays (``chunks=None``)."""
    expected = _npz(fixtures_dir, "date_monthly")["ssh"]
    ds = xarray.open_dataset(fixtures_dir / "date_monthly", engine=ENGINE, mask_and_scale=False)
    ssh = ds["ssh"]
    cases: list[Any] = [
        -1,
        5,
        slice(None, None, -5),
        slice(3000, 10, -7),
        slice(830, 1700, 3),
        [0, 839, 840, 3359, 2],
    ]
    for key in cases:
        got = ssh.isel(time=key, x_ac=slice(1, None, 2)).values
        want = expected[key if not isinstance(key, list) else numpy.asarray(key)][..., 1::2]
        assert numpy.array_equal(got, want, equal_nan=True), key


def test_backend_group_with_its_own_variable_named_like_the_axis(memory_url: str) -> None:
    """A nested ``time`` (not the axis) is not indexed in place of the root's."""
    schema = (
        zc.Schema()
        .with_dimension("num_lines", chunks=4)
        .with_variable("time", dtype="M8[ns]", dimensions=("num_lines",))
        .with_variable("cycle_number", dtype="i2", dimensions=("num_lines",))
        .with_variable("pass_number", dtype="i2", dimensions=("num_lines",))
        .with_group("/g")
        .with_variable("time", dtype="f8", dimensions=("num_lines",), group="/g")
        .build()
    )
    part = zc.partitioning.Sequence(("cycle_number", "pass_number"), dimension="num_lines")
    col = zc.create_collection(memory_url, schema=schema, partitioning=part)
    n = 10
    own = numpy.arange(n, dtype="f8")[::-1].copy()
    col.insert(
        {
            "time": numpy.arange(n).astype("M8[s]").astype("M8[ns]"),
            "cycle_number": numpy.ones(n, "i2"),
            "pass_number": numpy.repeat(numpy.array([1, 2], "i2"), 5),
            "g/time": own,
        }
    )
    g = xarray.open_dataset(memory_url, engine=ENGINE, group="g")
    assert "time" not in g.xindexes
    numpy.testing.assert_array_equal(g["time"].values, own)
    root = xarray.open_dataset(memory_url, engine=ENGINE)
    assert root["time"].dtype == numpy.dtype("M8[ns]") and "time" in root.xindexes


# -- the lazy axis index -----------------------------------------------------------------------
def test_backend_index_is_lazy_and_sel_reads_the_axis_of_the_partitions_touched(
    monthly: Any,
) -> None:
    from dask_zcollection._xarray_index import AxisIndex

    url, data = monthly
    spec = counting_spec(url)
    reset_reads(spec.tag)
    ds = xarray.open_dataset(spec, engine=ENGINE)
    # Opening read no partition's axis: the catalog's row counts and min/max suffice.
    assert not [k for k in chunk_reads(spec.tag) if "=" in k]
    assert isinstance(ds.xindexes["time"], AxisIndex)
    assert "2024-01-01" in repr(ds)  # a repr shows the axis' first and last rows: reads them
    assert {partition_of(k) for k in chunk_reads(spec.tag) if "=" in k} == {
        "year=2024/month=01",
        "year=2024/month=04",
    }
    reset_reads(spec.tag)
    sel = ds.sel(time=slice("2024-01-20", "2024-03-10"))
    # The axis of January to March only (April is out of range); no data yet.
    assert {(partition_of(k), k.split("/")[2]) for k in chunk_reads(spec.tag)} == {
        (f"year=2024/month=0{m}", "time") for m in (1, 2, 3)
    }
    assert isinstance(sel.xindexes["time"], xarray.indexes.PandasIndex)
    t = data["time"]
    mask = (t >= numpy.datetime64("2024-01-20")) & (t < numpy.datetime64("2024-03-11"))
    reset_reads(spec.tag)
    numpy.testing.assert_array_equal(sel["time"].values, t[mask])
    assert not chunk_reads(spec.tag), "the selected axis was read again"
    assert numpy.array_equal(sel["ssh"].values, data["ssh"][mask], equal_nan=True)
    # A tree opens without reading either; nested groups inherit the lazy index.
    reset_reads(spec.tag)
    dt = xarray.open_datatree(spec, engine=ENGINE, chunks={})
    assert not [k for k in chunk_reads(spec.tag) if "=" in k]
    ku = dt["/data_01/ku"].sel(time=slice(LO, HI))
    numpy.testing.assert_array_equal(ku["power"].values, data["data_01/ku/power"][_in_range(t)])
    # Whole-axis uses read it once: values, pandas index, isel, scalar and nearest labels.
    numpy.testing.assert_array_equal(ds["time"].values, t)
    assert ds.indexes["time"].equals(xarray.Variable("time", t).to_index())
    numpy.testing.assert_array_equal(ds.isel(time=slice(5, 40, 3))["time"].values, t[5:40:3])
    assert ds.sel(time=t[17])["ssh"].shape == (3,)
    near = ds.sel(time=[t[3] + numpy.timedelta64(1, "h")], method="nearest")
    numpy.testing.assert_array_equal(near["time"].values, t[[3]])


@pytest.mark.parametrize("chunks", [None, {}], ids=["lazy", "dask"])
def test_axis_index_sel_finds_what_plain_xarray_finds(
    factory: Any, memory_url: str, chunks: dict[str, Any] | None
) -> None:
    """Label slices of every kind, gaps inside and between partitions, against pandas."""
    col = factory.create(memory_url)
    times = numpy.arange(
        "2024-01-01", "2024-05-01", numpy.timedelta64(7, "h"), dtype="datetime64[ns]"
    )
    # Gaps: inside February, and the first days of March and April.
    gap = (
        ((times >= numpy.datetime64("2024-02-10")) & (times < numpy.datetime64("2024-02-20")))
        | ((times >= numpy.datetime64("2024-03")) & (times < numpy.datetime64("2024-03-06")))
        | ((times >= numpy.datetime64("2024-04")) & (times < numpy.datetime64("2024-04-03")))
    )
    times = times[~gap]
    data = factory.data(times, seed=3)
    col.insert(data)
    ds = xarray.open_dataset(memory_url, engine=ENGINE, chunks=chunks)
    assert type(ds.xindexes["time"]).__name__ == "AxisIndex"
    plain = xarray.Dataset({"ssh": (("time", "x_ac"), data["ssh"])}, coords={"time": times})
    rng = numpy.random.default_rng(5)
    bounds: list[Any] = [
        None,
        "2024-02",
        "2024-02-15",  # in a gap
        "2024-03",  # a month starting with a gap
        "2024-02-29T23",
        "2024-01-01",
        "2023-12",
        "2024-06",
        numpy.datetime64("2024-03-06T00", "ns"),
        *times[rng.integers(0, times.size, 6)],  # stored values (partition ends among them)
        times[0],
        times[-1],
        *(times[rng.integers(0, times.size, 4)] + numpy.timedelta64(1, "h")),
    ]
    for start in bounds:
        for stop in bounds:
            label = slice(start, stop)
            want = plain.sel(time=label)
            got = ds.sel(time=label)
            numpy.testing.assert_array_equal(got["time"].values, want["time"].values, str(label))
    label = slice("2024-02-09", "2024-03-07")
    assert numpy.array_equal(
        ds.sel(time=label)["ssh"].values, plain.sel(time=label)["ssh"].values, equal_nan=True
    )


def test_axis_index_falls_back_when_partitions_overlap(memory_url: str) -> None:
    """An axis not sorted across partitions (a Sequence): read at open, a pandas index."""
    schema = (
        zc.Schema()
        .with_dimension("num_lines", chunks=4)
        .with_variable("time", dtype="M8[ns]", dimensions=("num_lines",))
        .with_variable("cycle_number", dtype="i2", dimensions=("num_lines",))
        .with_variable("pass_number", dtype="i2", dimensions=("num_lines",))
        .build()
    )
    part = zc.partitioning.Sequence(("cycle_number", "pass_number"), dimension="num_lines")
    col = zc.create_collection(memory_url, schema=schema, partitioning=part)
    t = numpy.arange(10).astype("M8[s]").astype("M8[ns]")
    # Pass 1 holds the later times: key order is not time order.
    col.insert(
        {
            "time": numpy.concatenate([t[5:], t[:5]]),
            "cycle_number": numpy.ones(10, "i2"),
            "pass_number": numpy.repeat(numpy.array([1, 2], "i2"), 5),
        }
    )
    ds = xarray.open_dataset(memory_url, engine=ENGINE)
    assert type(ds.xindexes["time"]) is xarray.indexes.PandasIndex
    numpy.testing.assert_array_equal(ds.sel(time=t[7])["pass_number"].values, 1)


def test_backend_lazy_index_false_reads_the_axis_at_open(monthly: Any) -> None:
    """The escape hatch: a pandas index, which aligns with a selection of itself."""
    url, data = monthly
    spec = counting_spec(url)
    reset_reads(spec.tag)
    ds = xarray.open_dataset(spec, engine=ENGINE, lazy_index=False)
    assert type(ds.xindexes["time"]) is xarray.indexes.PandasIndex
    assert {k.split("/")[2] for k in chunk_reads(spec.tag) if "=" in k} == {"time"}
    diff = ds["ssh"] - ds["ssh"].isel(time=slice(0, 10))  # aligned: an inner join
    assert diff.sizes["time"] == 10
    assert numpy.nanmax(numpy.abs(diff.values)) == 0
    numpy.testing.assert_array_equal(diff["time"].values, data["time"][:10])


def test_axis_index_of_a_time_range_filter(factory: Any, memory_url: str) -> None:
    """End partitions trimmed by the filter: their bounds are the catalog's, clipped."""
    col = factory.create(memory_url)
    t = numpy.arange("2024-01-01", "2024-05-01", numpy.timedelta64(5, "h"), dtype="M8[ns]")
    col.insert(factory.data(t, seed=1))
    lo, hi = numpy.datetime64("2024-01-20T03"), numpy.datetime64("2024-03-10T07")
    ds = xarray.open_dataset(memory_url, engine=ENGINE, filters={"time": slice(lo, hi)})
    assert type(ds.xindexes["time"]).__name__ == "AxisIndex"
    kept = t[(t >= lo) & (t <= hi)]
    plain = xarray.Dataset(coords={"time": kept})
    bounds = [None, "2024-01", "2024-01-20", "2024-02-15", "2024-03-10", kept[3], kept[-1], "2025"]
    for a in bounds:
        for b in bounds:
            got = ds.sel(time=slice(a, b))["time"].values
            numpy.testing.assert_array_equal(got, plain.sel(time=slice(a, b))["time"].values)


def test_axis_index_pickles_without_its_values(monthly: Any) -> None:
    """A dataset sent to workers: the lazy index travels without the axis it read."""
    import pickle

    url, data = monthly
    ds = xarray.open_dataset(url, engine=ENGINE)
    small = len(pickle.dumps(ds))
    numpy.testing.assert_array_equal(ds["time"].values, data["time"])  # read and cached
    assert len(pickle.dumps(ds)) == small
    back = pickle.loads(pickle.dumps(ds))
    sel = back.sel(time=slice(LO, HI))
    numpy.testing.assert_array_equal(sel["time"].values, data["time"][_in_range(data["time"])])


# -- chunks={}: what a full load costs ----------------------------------------------------------
def test_backend_dask_load_opens_each_partition_array_once(monthly: Any) -> None:
    """A ``chunks={}`` load reads each chunk once and each ``zarr.json`` once per partition.

    xarray makes a dask block per zarr chunk, each reading through the backend
    array: the array of a partition is opened by the first block, not by each.
    """
    from collections import Counter

    url, data = monthly
    spec = counting_spec(url)
    ds = xarray.open_dataset(spec, engine=ENGINE, chunks={}, mask_and_scale=False)
    assert len(ds["ssh"].data.chunks[0]) > 4 * 2  # several blocks per partition
    reset_reads(spec.tag)
    ds = ds.load()
    keys = [k for k in reads(spec.tag) if "=" in k]
    counts = Counter(keys)
    assert max(counts.values()) == 1, [k for k, n in counts.items() if n > 1]
    metadata = [k for k in keys if k.endswith("/zarr.json")]
    # The root group's ssh and quality, and the axis the lazy index reads: 4 partitions each.
    assert {k.rsplit("/", 2)[-2] for k in metadata} == {"ssh", "quality", "time"}
    assert len(metadata) == 3 * 4
    assert numpy.array_equal(ds["ssh"].values, data["ssh"], equal_nan=True)
    numpy.testing.assert_array_equal(ds["quality"].values, data["quality"])


def test_backend_block_read_allocates_its_rows_only(monthly: Any) -> None:
    """Reading a few rows costs memory for them, not an index of every row of the variable."""
    import tracemalloc

    from xarray.core import indexing

    from dask_zcollection.xarray_backend import ZCollectionArray

    url, data = monthly
    lazy = zc.read_collection(url)
    expr, _ = lazy._block_ranges()
    first = expr.catalog.paths[:1]
    # The partition's first rows, inside a concatenation claiming 10 million rows.
    array = ZCollectionArray(lazy.source, first, numpy.array([[0, 10_000_000]]), "ssh", "")
    for key, want in ((slice(0, 5), data["ssh"][:5]), (slice(1, 9, 3), data["ssh"][1:9:3])):
        tracemalloc.start()
        try:
            got = array[indexing.BasicIndexer((key, slice(None)))]
            peak = tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()
        assert numpy.array_equal(got, want, equal_nan=True)
        assert peak < 1_000_000, peak  # an arange of 10 million rows is 80 MB
    with pytest.raises(IndexError, match="ssh"):
        array[indexing.BasicIndexer((10_000_000, slice(None)))]
