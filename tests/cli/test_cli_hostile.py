"""Hostile ``dzc`` arguments: outputs overlapping the collection read, multi-partition exports."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy
import pytest
import xarray
from test_cli import run

import dask_zcollection as zc

#: Half-daily rows over three months: each partition ends in a short chunk (chunks of 4).
TIMES = numpy.arange(
    "2024-01-01", "2024-04-01", numpy.timedelta64(12, "h"), dtype="datetime64[h]"
).astype("datetime64[ns]")


@pytest.fixture
def collection(tmp_path: Path, factory: object) -> tuple[str, dict[str, numpy.ndarray]]:
    url = f"file://{tmp_path}/col"
    data = factory.data(TIMES, nested=False)  # type: ignore[attr-defined]
    factory.create(url, nested=False).insert(data)  # type: ignore[attr-defined]
    return url, data


def _tree(root: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()
    }


@pytest.mark.parametrize(
    ("where", "fmt"),
    [
        ("col", "zarr"),  # the collection itself
        ("col/year=2024/month=01", "csv"),  # one committed partition
        (".", "csv"),  # the directory holding it
        ("col/export.csv", "csv"),  # a file inside its tree
    ],
)
def test_query_refuses_an_output_overlapping_the_collection(
    tmp_path: Path, collection: tuple[str, dict[str, numpy.ndarray]], where: str, fmt: str
) -> None:
    # Before: --overwrite replaced the collection (or a committed partition) by the export.
    url, data = collection
    before = _tree(tmp_path / "col")
    target = tmp_path / where
    out = run("query", url, "--to", str(target), "--format", fmt, "--overwrite", check=1)
    assert "InvalidInputError" in out.stderr and "overlaps the collection" in out.stderr
    assert _tree(tmp_path / "col") == before  # nothing written, nothing deleted
    ds = zc.read_collection(url).compute()
    numpy.testing.assert_array_equal(ds["quality"].values, data["quality"])


def test_query_to_zarr_exports_partitions_ending_in_short_chunks(
    tmp_path: Path, collection: tuple[str, dict[str, numpy.ndarray]]
) -> None:
    # Before: "Zarr requires uniform chunk sizes" for any multi-partition selection
    # whose partitions are not a multiple of the chunk size.
    url, data = collection
    target = tmp_path / "all.zarr"
    out = run("query", url, "--to", str(target), "--json")
    assert json.loads(out.stdout)["rows"] == len(TIMES)
    got = xarray.open_zarr(target, consolidated=False)
    for name in ("time", "ssh", "quality"):
        numpy.testing.assert_array_equal(got[name].values, data[name], err_msg=name)
    assert not [p for p in os.listdir(tmp_path) if ".part-" in p]


@pytest.mark.parametrize("names", ["", ",", " , ,"])
def test_query_refuses_vars_naming_no_variable(
    tmp_path: Path, collection: tuple[str, dict[str, numpy.ndarray]], names: str
) -> None:
    # Before: an empty netCDF file was written ("wrote 0 rows of 0 variable(s)").
    url, _ = collection
    out = run("query", url, "--vars", names, "--to", str(tmp_path / "out.nc"), check=2)
    assert "names no variable" in out.stderr
    assert not (tmp_path / "out.nc").exists()
