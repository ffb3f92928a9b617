"""Hostile use of views: a view store around or inside its base, and a random law over both."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import numpy
import pytest
import xarray
from conftest import Factory, unique_memory_name
from hypothesis import given, settings
from hypothesis import strategies as st

import dask_zcollection as dzc
from dask_zcollection.errors import InvalidInputError, SchemaError, StalePartitionError
from dask_zcollection.store import MemoryStore

TIMES = numpy.arange("2024-01-01", "2024-03-01", dtype="datetime64[D]").astype("datetime64[ns]")
ROOT = Path(__file__).parents[2]
FLAG = [{"name": "flag", "dtype": "int8", "dimensions": ["time"], "fill_value": -1}]


@pytest.mark.parametrize("where", ["top", "top/", "top/base/..", "top/base/sub", "top/base"])
def test_a_view_cannot_hold_or_live_in_its_base(
    tmp_path: Path, factory: Factory, where: str
) -> None:
    # Before: a view created with overwrite=True at a directory holding its base
    # cleared it, base included; a view inside its base wrote into the base's tree.
    base = f"file://{tmp_path}/top/base"
    data = factory.data(TIMES, nested=False)
    factory.create(base, nested=False).insert(data)
    before = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*"))
    with pytest.raises(InvalidInputError, match="cannot live in, or hold, its base"):
        dzc.create_view(f"file://{tmp_path}/{where}", base=base, variables=FLAG, overwrite=True)
    assert sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*")) == before
    got = dzc.read_collection(base).compute()
    numpy.testing.assert_array_equal(got["quality"].values, data["quality"])
    # A sibling is fine.
    view = dzc.create_view(f"file://{tmp_path}/top/view", base=base, variables=FLAG)
    assert view.update(lambda ds: {"flag": (ds["quality"].values > 9).astype("int8")}) == [
        "year=2024/month=01",
        "year=2024/month=02",
    ]


# -- the law: after any sequence of base and view writes, the view is its function of the base ----
def _flag(ds: dzc.Dataset) -> dict[str, numpy.ndarray]:
    days = ds["time"].values.astype("datetime64[D]").astype("int64")  # type: ignore[union-attr]
    return {"flag": ((ds["quality"].values.astype("int64") + days) % 100).astype("int8")}  # type: ignore[union-attr]


OPS = st.tuples(
    st.sampled_from(["insert", "drop", "update", "view-drop"]),
    st.integers(1, 3),  # month
    st.booleans(),  # one month, or every partition
    st.integers(1, 4),  # rows inserted
    st.integers(0, 99),  # seed of the rows
)


@pytest.mark.parametrize("kind", ["memory", pytest.param("icechunk", marks=pytest.mark.icechunk)])
@settings(max_examples=8, deadline=None, derandomize=True, database=None)
@given(ops=st.lists(OPS, min_size=4, max_size=7))
def test_a_view_is_its_function_of_the_base_after_any_writes(
    kind: str, ops: list[tuple[str, int, bool, int, int]]
) -> None:
    factory = Factory()
    base_url, view_url = f"memory://{unique_memory_name()}", f"memory://{unique_memory_name()}"
    scratch = tempfile.mkdtemp(prefix="view-law-")
    if kind == "icechunk":  # the base on Icechunk (found: a view pinned its base snapshot)
        base_url = f"icechunk://{scratch}/base"
    try:
        col = factory.create(base_url, nested=False, immutable=False)
        first = numpy.array(["2024-01-05", "2024-02-05", "2024-03-05"], dtype="datetime64[ns]")
        col.insert(factory.data(first, nested=False, immutable=False))
        view = dzc.create_view(view_url, base=base_url, variables=FLAG)
        checked = 0
        for op, month, one, n, seed in ops:
            where = f"month == {month}" if one else None
            if op == "insert":
                days = numpy.random.default_rng(seed).choice(numpy.arange(1, 28), n, replace=False)
                times = numpy.array(
                    [f"2024-{month:02d}-{d:02d}" for d in sorted(days)], dtype="datetime64[ns]"
                )
                col.insert(factory.data(times, seed=seed, nested=False, immutable=False))
            elif op == "drop":
                col.drop_partitions(where)
            elif op == "update":
                view.update(_flag, filters=where)
            else:
                view.drop_partitions(where)
            base = dzc.read_collection(base_url).compute()
            if base is None:
                continue
            got = dzc.read_view(view_url, stale="fill").compute()
            assert got is not None
            numpy.testing.assert_array_equal(got["time"].values, base["time"].values)
            flag, expected = got["flag"].values, _flag(base)["flag"]
            # Every row holds f(base) or the fill value: never values of another version.
            assert ((flag == expected) | (flag == -1)).all(), (op, month, one)
            # A partition just computed holds f(base) on every row and is not stale.
            stale = set(view.stale_partitions()) & set(col.partitions())
            if op == "update":
                months = base["time"].values.astype("datetime64[M]").astype("int64") % 12 + 1
                rows = months == month if one else numpy.ones(len(flag), bool)
                numpy.testing.assert_array_equal(flag[rows], expected[rows])
                assert not stale & set(view.partitions(where))
            # A strict read refuses exactly when a base partition changed since it was computed.
            if stale:
                with pytest.raises(StalePartitionError):
                    dzc.read_view(view_url).compute()
            else:
                numpy.testing.assert_array_equal(
                    dzc.read_view(view_url).compute()["flag"].values, flag
                )
            checked += 1
        assert checked  # the law was checked after some write
    finally:
        MemoryStore.forget(base_url.removeprefix("memory://"))
        MemoryStore.forget(view_url.removeprefix("memory://"))
        shutil.rmtree(scratch, ignore_errors=True)


# -- the xarray backend over a view ----------------------------------------------------------------
@pytest.mark.parametrize("chunks", [None, {}])
def test_the_xarray_backend_reads_a_view_as_read_view_does(
    fixtures_dir: Path, tmp_path: Path, factory: Factory, chunks: Any
) -> None:
    # Before: open_dataset(view) opened, then read the view's variables from the base
    # store (PartitionNotFoundError 'year=2024/month=01/flag' missing from the base).
    url = f"file://{fixtures_dir}/date_monthly_view"
    expected = numpy.load(fixtures_dir / "date_monthly_view.expected.npz")
    ds = xarray.open_dataset(url, engine="zcollection", chunks=chunks, mask_and_scale=False)
    for name in expected.files:  # months 3 and 4 were not computed: fill values
        numpy.testing.assert_array_equal(ds[name].values, expected[name], err_msg=name)
    feb = xarray.open_dataset(url, engine="zcollection", filters="month == 2", chunks=chunks)
    months = expected["time"].astype("datetime64[M]").astype("int64") % 12 + 1
    numpy.testing.assert_array_equal(feb["ssh_anom"].values, expected["ssh_anom"][months == 2])

    # A base partition rewritten since: refused as read_view refuses it, never other rows.
    base, view_url = f"file://{tmp_path}/base", f"file://{tmp_path}/view"
    factory.create(base, nested=False).insert(factory.data(TIMES, nested=False))
    view = dzc.create_view(view_url, base=base, variables=FLAG)
    view.update(lambda ds: {"flag": (ds["quality"].values % 100).astype("int8")})
    got = xarray.open_dataset(view_url, engine="zcollection", chunks=chunks)
    numpy.testing.assert_array_equal(got["flag"].values, got["quality"].values % 100)
    february = TIMES[numpy.datetime64("2024-02-01") <= TIMES]
    col = dzc.open_collection(base, mode="rw")
    col.insert(factory.data(february, seed=7, nested=False), merge="replace")
    with pytest.raises(StalePartitionError, match="year=2024/month=02"):
        numpy.asarray(xarray.open_dataset(view_url, engine="zcollection", chunks=chunks)["flag"])


def test_a_view_over_a_base_recreated_with_other_partition_keys_is_refused(
    tmp_path: Path, factory: Factory
) -> None:
    # Before: a strict read returned fill values without a word (no view partition
    # matched), stale_partitions() and update() raised a bare ValueError (reshape).
    base, view_url = f"file://{tmp_path}/base", f"file://{tmp_path}/view"
    factory.create(base, nested=False).insert(factory.data(TIMES, nested=False))
    view = dzc.create_view(view_url, base=base, variables=FLAG)
    view.update(lambda ds: {"flag": (ds["quality"].values % 100).astype("int8")})
    daily = dzc.partitioning.Date(("time",), resolution="D")
    schema = factory.schema(nested=False)
    col = dzc.create_collection(
        base, schema=schema, axis="time", partitioning=daily, overwrite=True
    )
    col.insert(factory.data(TIMES, nested=False, seed=3))
    match = r"keyed by \['year', 'month'\].*now keyed by \['year', 'month', 'day'\]"
    reopened = dzc.open_view(view_url, mode="rw")
    for call in (
        lambda: dzc.read_view(view_url).compute(),
        lambda: dzc.read_view(view_url, stale="fill").compute(),
        reopened.stale_partitions,
        lambda: reopened.update(lambda ds: {"flag": numpy.zeros(len(ds["time"].values), "i1")}),
    ):
        with pytest.raises(SchemaError, match=match):
            call()


# -- processes: view updates racing base rewrites --------------------------------------------------
RACE_WORKER = Path(__file__).parents[1] / "_workers" / "zc_view_race_worker.py"


def test_view_updates_racing_base_rewrites_never_read_values_of_another_version(
    tmp_path: Path,
) -> None:
    race = _load_race_worker()
    base, view_url = f"file://{tmp_path}/base", f"file://{tmp_path}/view"
    schema = (
        dzc.Schema()
        .with_dimension("time", chunks=4)
        .with_variable("time", dtype="datetime64[ns]", dimensions=("time",))
        .with_variable("quality", dtype="uint8", dimensions=("time",))
        .build()
    )
    monthly = dzc.partitioning.Date(("time",), resolution="M")
    dzc.create_collection(base, schema=schema, axis="time", partitioning=monthly).insert(
        race.rows(0)
    )
    dzc.create_view(view_url, base=base, variables=FLAG)
    go = tmp_path / "go"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    procs = [
        subprocess.Popen(
            [sys.executable, str(RACE_WORKER), role, base, view_url, str(go), rounds, "1"],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for role, rounds in (("base", "8"), ("view", "12"))
    ]
    go.touch()
    reports = []
    for proc in procs:
        out, err = proc.communicate(timeout=180)
        assert proc.returncode == 0, err
        reports.append(json.loads(out.strip().splitlines()[-1]))
    assert [r["wrong"] for r in reports] == [0, 0]
    assert reports[0]["done"] == 8 and reports[1]["done"] >= 1
    # At rest: a strict read refuses exactly when January was rewritten after its update.
    view = dzc.open_view(view_url, mode="rw")
    if view.stale_partitions():
        with pytest.raises(StalePartitionError):
            dzc.read_view(view_url).compute()
    view.update(race.flag_of)
    final = dzc.read_view(view_url).compute()
    numpy.testing.assert_array_equal(final["flag"].values, race.flag_of(final)["flag"])


def _load_race_worker() -> Any:
    import importlib.util

    spec = importlib.util.spec_from_file_location("zc_view_race_worker", RACE_WORKER)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_a_view_cannot_hold_its_base_on_every_backend(store_url: str, factory: Factory) -> None:
    base = f"{store_url}/top/base"
    data = factory.data(TIMES, nested=False)
    factory.create(base, nested=False).insert(data)
    for where in (f"{store_url}/top", f"{base}/sub"):
        with pytest.raises(InvalidInputError, match="cannot live in, or hold, its base"):
            dzc.create_view(where, base=base, variables=FLAG, overwrite=True)
    got = dzc.read_collection(base).compute()
    numpy.testing.assert_array_equal(got["quality"].values, data["quality"])
    view = dzc.create_view(f"{store_url}/top/view", base=base, variables=FLAG)
    assert view.partitions() == []


@pytest.mark.parametrize("kind", ["file", pytest.param("icechunk", marks=pytest.mark.icechunk)])
def test_a_view_open_for_writing_updates_from_the_newest_base(
    tmp_path: Path, factory: Factory, kind: str
) -> None:
    # Before, on Icechunk: the view pinned its base to the snapshot of its opening, so
    # an update saw nothing the base committed since (it computed nothing, silently).
    base = f"{kind}://{tmp_path}/base"
    col = factory.create(base, nested=False)
    col.insert(factory.data(TIMES[:5], nested=False))  # January only
    created = dzc.create_view(f"file://{tmp_path}/view", base=base, variables=FLAG)
    reopened = dzc.open_view(f"file://{tmp_path}/view", mode="rw")
    col.insert(factory.data(TIMES, nested=False, seed=4))  # January rewritten, February new

    def flag(ds: dzc.Dataset) -> dict[str, numpy.ndarray]:
        return {"flag": (ds["quality"].values % 100).astype("int8")}  # type: ignore[union-attr]

    months = ["year=2024/month=01", "year=2024/month=02"]
    for view in (created, reopened):
        assert view.update(flag) == months
        got = dzc.read_view(f"file://{tmp_path}/view").compute()
        numpy.testing.assert_array_equal(got["flag"].values, got["quality"].values % 100)
        assert len(got["time"].values) == len(TIMES)
    # A reader opened now sees both months computed.
    reader = dzc.open_view(f"file://{tmp_path}/view")
    assert reader.partitions() == months
