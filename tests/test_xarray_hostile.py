"""The xarray backend equals plain xarray (random filters and selections); lazy xarray input."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy
import pytest
import xarray
from hypothesis import given, settings
from hypothesis import strategies as st

import dask_zcollection as zc

#: 120 rows at random hours over five months, duplicates included (partitions of 13-35 rows).
_RNG = numpy.random.default_rng(7)
TIMES = numpy.sort(
    numpy.datetime64("2024-01-01T00", "h") + _RNG.integers(0, 150 * 24, 120).astype("m8[h]")
).astype("M8[ns]")
MONTHS = TIMES.astype("datetime64[M]").astype("int64") % 12 + 1


@pytest.fixture(scope="module")
def stored(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, xarray.Dataset]:
    from conftest import Factory

    factory = Factory()
    url = f"file://{tmp_path_factory.mktemp('xr')}/col"
    data = factory.data(TIMES, nested=False)
    factory.create(url, nested=False).insert(data)
    reference = xarray.Dataset(
        {"ssh": (("time", "x_ac"), data["ssh"]), "quality": (("time",), data["quality"])},
        coords={"time": data["time"], "x_ac": data["x_ac"]},
    )
    return url, reference


DAY = st.integers(-5, 160).map(lambda d: numpy.datetime64("2024-01-01") + numpy.timedelta64(d, "D"))
SELECTIONS = st.one_of(
    st.tuples(
        st.just("slice"),
        st.integers(-130, 130),
        st.integers(-130, 130),
        st.sampled_from([1, 2, 3, -1, -3]),
    ),
    st.tuples(st.just("array"), st.lists(st.integers(-120, 119), max_size=12)),
    st.tuples(st.just("int"), st.integers(-120, 119)),
    st.tuples(st.just("labels"), DAY, DAY),
)


def _select(ds: xarray.Dataset, how: tuple[Any, ...]) -> xarray.Dataset:
    if how[0] == "slice":
        return ds.isel(time=slice(how[1], how[2], how[3]))
    if how[0] == "array":
        return ds.isel(time=numpy.array(how[1], dtype="int64"))
    if how[0] == "int":
        return ds.isel(time=how[1])
    lo, hi = sorted(how[1:])
    return ds.sel(time=slice(lo, hi))


@settings(max_examples=40, deadline=None, derandomize=True, database=None)
@given(
    months=st.sets(st.integers(1, 5)),
    how=SELECTIONS,
    chunked=st.booleans(),
)
def test_backend_selections_equal_plain_xarray(
    stored: tuple[str, xarray.Dataset], months: set[int], how: tuple[Any, ...], chunked: bool
) -> None:
    url, reference = stored
    keep = numpy.isin(MONTHS, sorted(months)) if months else numpy.ones(len(TIMES), bool)
    expected_all = reference.isel(time=numpy.flatnonzero(keep))
    n = int(keep.sum())
    if how[0] == "slice" and how[3] < 0 and not len(range(*slice(*how[1:]).indices(n))):
        return  # xarray itself reads empty negative-step slices wrongly from any lazy backend
    if how[0] in ("array", "int") and not n:
        return
    if how[0] == "array":
        how = ("array", [i % n for i in how[1]])
    if how[0] == "int":
        how = ("int", how[1] % n)
    filters = f"month in ({', '.join(map(str, sorted(months)))},)" if months else None
    opened = xarray.open_dataset(
        url, engine="zcollection", filters=filters, chunks={} if chunked else None
    )
    got, expected = _select(opened, how), _select(expected_all, how)
    for name in ("time", "ssh", "quality"):
        numpy.testing.assert_array_equal(got[name].values, expected[name].values, err_msg=name)


@pytest.mark.parametrize("source", ["zarr", "zcollection"])
def test_insert_takes_lazily_opened_xarray_data(
    tmp_path: Path, stored: tuple[str, xarray.Dataset], source: str
) -> None:
    # Before: zarr's SyncError ("Calling sync() from within a running loop") for a Zarr
    # store opened with chunks=None, a RuntimeError for a collection opened through our
    # backend: their lazy arrays were read inside the insert's event loop.
    url, reference = stored
    if source == "zarr":
        reference.to_zarr(tmp_path / "in.zarr", consolidated=False)
        lazy = xarray.open_dataset(
            tmp_path / "in.zarr", engine="zarr", chunks=None, consolidated=False
        )
    else:
        lazy = xarray.open_dataset(url, engine="zcollection", mask_and_scale=False)
    target = f"file://{tmp_path}/copy"
    monthly = zc.partitioning.Date(("time",), resolution="M")
    col = zc.create_collection(target, from_=lazy, partitioning=monthly)
    assert col.insert(lazy) == zc.open_collection(url).partitions()
    got = zc.read_collection(target).compute()
    for name in ("time", "ssh", "quality"):
        numpy.testing.assert_array_equal(got[name].values, reference[name].values, err_msg=name)
