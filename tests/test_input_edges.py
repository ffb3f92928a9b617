"""Small input edges: vacuum's retention, index predicates of the wrong type, views for xarray."""

from __future__ import annotations

import asyncio
import shutil
from pathlib import Path
from typing import Any

import dask.config
import numpy
import pytest
import xarray
from conftest import Factory

import dask_zcollection as zc
from dask_zcollection import aio
from dask_zcollection.errors import FilterError, InvalidInputError
from dask_zcollection.indexing import Indexer
from dask_zcollection.xarray_backend import ZCollectionBackendEntrypoint

TIMES = numpy.arange("2024-01-01", "2024-03-01", dtype="datetime64[D]").astype("datetime64[ns]")
FLAG = [{"name": "flag", "dtype": "int8", "dimensions": ["time"], "fill_value": -1}]


def _tree(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in root.rglob("*") if p.is_file()}


# -- vacuum(older_than=) ---------------------------------------------------------------------------
@pytest.mark.parametrize("older_than", [float("nan"), -1.0, -1, float("inf"), "0", True])
def test_vacuum_refuses_a_retention_that_is_not_seconds(
    tmp_path: Path, factory: Factory, older_than: Any
) -> None:
    # Before: NaN compared false with every age and deleted nothing without a word;
    # a negative retention was taken as zero.
    url = f"file://{tmp_path}/col"
    col = factory.create(url, nested=False)
    col.insert(factory.data(TIMES, nested=False))
    with dask.config.set({"zcollection.retention": 600}):  # the commit keeps what it retires
        col.insert(factory.data(TIMES, seed=5, nested=False), merge="replace")
    before = _tree(tmp_path / "col")
    match = r"older_than must be a finite number of seconds >= 0, got"
    with pytest.raises(InvalidInputError, match=match):
        col.vacuum(older_than=older_than)
    assert _tree(tmp_path / "col") == before  # nothing written, nothing deleted
    # A valid retention still collects the retired versions.
    assert sorted(col.vacuum(older_than=0)) == ["year=2024/month=01", "year=2024/month=02"]

    async def run() -> None:
        acol = await aio.open_collection(url, mode="rw")
        with pytest.raises(InvalidInputError, match=match):
            await acol.vacuum(older_than=older_than)

    asyncio.run(run())


# -- index predicates of the wrong type ------------------------------------------------------------
def _parity(ds: zc.Dataset) -> dict[str, numpy.ndarray]:
    day = ds["time"].values.astype("datetime64[D]").astype("int64")  # type: ignore[union-attr]
    return {
        "parity": (day % 2)[:-1:3],
        "name": numpy.where(day % 2 == 0, "even", "odd")[:-1:3],
        "_start": numpy.arange(0, len(day) - 1, 3, dtype="int64"),
        "_stop": numpy.arange(1, len(day), 3, dtype="int64"),
    }


@pytest.mark.parametrize(
    ("predicate", "column", "got"),
    [
        ({"parity": "x"}, "parity", "str"),
        ({"parity": {"0", "1"}}, "parity", "str"),
        ({"parity": [0, "1"]}, "parity", "str"),
        ({"parity": slice("0", None)}, "parity", "str"),
        ({"parity": None}, "parity", "NoneType"),
        ({"parity": True}, "parity", "bool"),
        ({"parity": numpy.array(["0"])}, "parity", "str_"),
        ({"name": 1}, "name", "int"),
        ({"name": [b"odd", 0]}, "name", "int"),
    ],
)
def test_an_index_predicate_of_the_wrong_type_is_a_filter_error(
    tmp_path: Path, factory: Factory, predicate: dict[str, Any], column: str, got: str
) -> None:
    # Before: parity="x" on an int column matched no row without a word.
    url = f"file://{tmp_path}/col"
    factory.create(url, nested=False).insert(factory.data(TIMES, nested=False))
    idx = Indexer.build(zc.read_collection(url), _parity)
    expected = str(idx.table[column].dtype)
    match = rf"index column {column!r} holds {expected}, the predicate .* is {got}"
    with pytest.raises(FilterError, match=match):
        idx.lookup(**predicate)
    # The right types still select: every parity-0 row starts on an even day.
    even = idx.lookup(parity=0)
    assert even == idx.lookup(parity={0}) == idx.lookup(name="even") == idx.lookup(parity=[0.0])
    assert sum(len(v) for v in even.values()) == int(numpy.sum(idx.table["parity"] == 0)) > 0
    assert idx.lookup(parity=numpy.array([0, 1])) == idx.lookup(parity=slice(0, 1))


# -- the xarray backend recognises a view ----------------------------------------------------------
def test_the_xarray_backend_recognises_a_view_without_engine(
    fixtures_dir: Path, tmp_path: Path
) -> None:
    # Before: guess_can_open looked for _zcollection.json only; a view needed engine=.
    shutil.copytree(fixtures_dir / "date_monthly", tmp_path / "date_monthly")
    shutil.copytree(fixtures_dir / "date_monthly_view", tmp_path / "date_monthly_view")
    view = tmp_path / "date_monthly_view"
    guess = ZCollectionBackendEntrypoint().guess_can_open
    assert guess(str(view)) and guess(view) and guess(f"file://{view}")
    assert not guess(str(tmp_path))  # neither a collection nor a view
    expected = numpy.load(fixtures_dir / "date_monthly_view.expected.npz")
    ds = xarray.open_dataset(str(view), mask_and_scale=False)  # no engine: guessed
    for name in expected.files:
        numpy.testing.assert_array_equal(ds[name].values, expected[name], err_msg=name)
