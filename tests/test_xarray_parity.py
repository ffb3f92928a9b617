"""The parity table of ``docs/xarray.md``: what a user does on a time series, on our result and on
plain xarray over the same data (a zarr store written and opened by xarray itself).

Each operation runs on ``LazyCollection.to_xarray()`` (stored values, against
``xr.open_zarr(..., mask_and_scale=False)``) and on ``xr.open_dataset(engine=...)``
(CF-masked, against ``xr.open_zarr(...)``), and the results must be equal.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import numpy
import pytest
import xarray
from conftest import Factory, unique_memory_name

import dask_zcollection as zc
from dask_zcollection.store import MemoryStore
from dask_zcollection.xarray_backend import ZCollectionBackendEntrypoint

ENGINE = ZCollectionBackendEntrypoint


@pytest.fixture(scope="module")
def stored(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Path]]:
    """One collection (Jan-Apr 2024, a row every 6 h) and the same data as an xarray zarr store."""
    factory = Factory()
    name = unique_memory_name()
    url = f"memory://{name}"
    col = factory.create(url, schema=factory.schema(nested=False, chunks=32))
    times = numpy.arange("2024-01-01T00", "2024-05-01T00", 6, dtype="datetime64[h]").astype(
        "M8[ns]"
    )
    data = factory.data(times, seed=21, nested=False)
    data["quality"][::7] = 255  # missing values
    col.insert(data)
    ref = xarray.Dataset(
        {
            "ssh": (("time", "x_ac"), data["ssh"], {"units": "m"}),
            "quality": ("time", data["quality"]),
        },
        coords={"time": ("time", data["time"], {"long_name": "time"}), "x_ac": data["x_ac"]},
        attrs={"title": "test collection", "version": 3},
    )
    path = tmp_path_factory.mktemp("parity") / "reference.zarr"
    ref.to_zarr(
        path,
        encoding={"quality": {"_FillValue": 255}, "ssh": {"_FillValue": numpy.float32("nan")}},
        zarr_format=3,
        consolidated=False,
    )
    yield url, path
    MemoryStore.forget(name)


def _ours(url: str, how: str) -> xarray.Dataset:
    if how == "to_xarray":
        ds = zc.read_collection(url).to_xarray()
        return ds.set_xindex("x_ac")  # the immutable coordinate: indexed by the user
    return xarray.open_dataset(url, engine=ENGINE, chunks={})


def _reference(path: Path, how: str) -> xarray.Dataset:
    ref = xarray.open_zarr(path, consolidated=False, mask_and_scale=how != "to_xarray")
    if how == "to_xarray":
        # Stored values in both; to_xarray declares the fill value in the encoding.
        for var in ref.variables.values():
            if "_FillValue" in var.attrs:
                var.encoding["_FillValue"] = var.attrs.pop("_FillValue")
    return ref


OPERATIONS: dict[str, Callable[[xarray.Dataset, Path], xarray.Dataset]] = {
    "sel": lambda ds, _: ds.sel(time=slice("2024-02-10", "2024-03-05T12")),
    "sel-nearest": lambda ds, _: ds.sel(time=["2024-02-10T01", "2024-04-03T20"], method="nearest"),
    "isel": lambda ds, _: ds.isel(time=slice(10, 300, 7), x_ac=[0, 2]),
    "resample": lambda ds, _: ds.resample(time="1D").mean(),
    "groupby": lambda ds, _: ds.groupby("time.month").mean(),
    "rolling": lambda ds, _: ds.rolling(time=4, min_periods=1).mean(),
    "to_netcdf": lambda ds, tmp: _round_trip_netcdf(ds, tmp),
    "to_zarr": lambda ds, tmp: _round_trip_zarr(ds, tmp),
}


REDUCTIONS = {"resample", "groupby", "rolling"}


def _round_trip_netcdf(ds: xarray.Dataset, tmp: Path) -> xarray.Dataset:
    target = tmp / f"{id(ds)}.nc"
    ds.to_netcdf(target, engine="h5netcdf")
    return xarray.open_dataset(target, engine="h5netcdf").load()


def _round_trip_zarr(ds: xarray.Dataset, tmp: Path) -> xarray.Dataset:
    target = tmp / f"{id(ds)}.zarr"
    # Zarr takes uniform dask chunks; ours stop at partition ends (as open_mfdataset's at
    # files): rechunk, and forget the source's zarr chunks (as any copy between stores).
    ds = ds.chunk(time=64)
    for var in ds.variables.values():
        var.encoding.pop("chunks", None)
        var.encoding.pop("preferred_chunks", None)
    ds.to_zarr(target, zarr_format=3, consolidated=False)
    return xarray.open_zarr(target, consolidated=False).load()


@pytest.mark.parametrize("how", ["to_xarray", "backend"])
@pytest.mark.parametrize("op", list(OPERATIONS))
def test_parity_with_plain_xarray(
    stored: tuple[str, Path], tmp_path: Path, op: str, how: str
) -> None:
    url, path = stored
    ours, ref = _ours(url, how), _reference(path, how)
    assert ours["quality"].dtype == ref["quality"].dtype
    got = OPERATIONS[op](ours, tmp_path).compute()
    want = OPERATIONS[op](ref, tmp_path).compute()
    if op in REDUCTIONS:  # float32 sums in another (chunk) order: equal to rounding
        xarray.testing.assert_allclose(got, want, rtol=1e-6)
        assert got.attrs == want.attrs
        assert all(got[k].attrs == want[k].attrs for k in want.variables)
    else:
        xarray.testing.assert_identical(got, want)
    for name in ("ssh", "quality"):
        assert got[name].dtype == want[name].dtype, name
