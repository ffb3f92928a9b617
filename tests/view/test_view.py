"""Views (issue 13): the reference fixture, create/open/read, update, staleness, base untouched."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy
import pytest

import dask_zcollection as dzc
from dask_zcollection.errors import (
    AlreadyExistsError,
    CollectionNotFoundError,
    CorruptedDataError,
    ReadOnlyError,
    SchemaError,
    StalePartitionError,
    ZCollectionWarning,
)
from dask_zcollection.store import MemoryStore

pytest.register_assert_rewrite("conftest_read")
from conftest import Factory, unique_memory_name  # noqa: E402
from conftest_read import counting_spec, is_chunk_key, reads, reset_reads  # noqa: E402

WORKER = Path(__file__).parents[1] / "_workers" / "zc_view_worker.py"
ROOT = Path(__file__).parents[2]

VARIABLES = [
    {
        "name": "ssh_anom",
        "dtype": "float32",
        "dimensions": ["time", "x_ac"],
        "fill_value": float("nan"),
        "attrs": {"units": "m"},
    },
    {"name": "flag", "dtype": "int8", "dimensions": ["time"], "fill_value": -1},
]
TIMES = numpy.arange(
    "2024-01-01", "2024-04-01", numpy.timedelta64(12, "h"), dtype="datetime64[h]"
).astype("datetime64[ns]")


def anomalies(ds: dzc.Dataset) -> dict[str, numpy.ndarray]:
    ssh = ds["ssh"].values
    return {
        "ssh_anom": (ssh - numpy.float32(1.5)).astype("float32"),
        "flag": (ds["quality"].values > 100).astype("int8"),
    }


def tree_digest(root: str) -> dict[str, str]:
    """Every file under ``root`` with the sha1 of its bytes."""
    out = {}
    for dirpath, _, files in os.walk(root):
        for name in files:
            path = os.path.join(dirpath, name)
            with open(path, "rb") as f:
                out[os.path.relpath(path, root)] = hashlib.sha1(f.read()).hexdigest()
    return out


@pytest.fixture
def base(tmp_path: Path, factory: Factory) -> tuple[str, dict[str, numpy.ndarray]]:
    """A file:// base collection over three months, and its data."""
    url = f"file://{tmp_path}/base"
    data = factory.data(TIMES, nested=False)
    factory.create(url, nested=False).insert(data)
    return url, data


def month_rows(month: int) -> numpy.ndarray:
    return (TIMES.astype("datetime64[M]").astype(int) % 12 + 1) == month


# -- the reference implementation's view ----------------------------------------------------------
def test_fixture_reads_back_expected_with_fill_values(fixtures_dir: Path) -> None:
    url = f"file://{fixtures_dir}/date_monthly_view"
    expected = numpy.load(fixtures_dir / "date_monthly_view.expected.npz")
    for lazy in (dzc.read_view(url), dzc.read_collection(url)):
        ds = lazy[["time", "ssh_anom", "flag"]].compute()
        for name in expected.files:
            numpy.testing.assert_array_equal(ds[name].values, expected[name], err_msg=name)
    # Months 3 and 4 were not computed: fill values over every base row.
    flag = expected["flag"]
    assert (flag == -1).any() and (flag != -1).any()
    view = dzc.open_view(url)
    assert view.partitions() == ["year=2024/month=01", "year=2024/month=02"]
    assert view.variables == ("ssh_anom", "flag")
    assert view.stale_partitions() == []
    text = repr(view)
    assert "ssh_anom, flag" in text and "date_monthly" in text and "../date_monthly" in text
    xr = dzc.read_view(url).to_xarray()
    numpy.testing.assert_array_equal(xr["ssh_anom"].values, expected["ssh_anom"])
    arr = dzc.read_view(url).to_dask_array("flag")
    numpy.testing.assert_array_equal(arr.compute(), flag)


def test_fixture_filter_projection_and_explain(fixtures_dir: Path) -> None:
    url = f"file://{fixtures_dir}/date_monthly_view"
    expected = numpy.load(fixtures_dir / "date_monthly_view.expected.npz")
    base = dzc.read_collection(f"file://{fixtures_dir}/date_monthly").compute()
    feb = (expected["time"].astype("datetime64[M]").astype(int) % 12 + 1) == 2
    lazy = dzc.read_view(url).filter("month == 2")[["ssh", "ssh_anom"]]
    text = lazy.explain() if isinstance(lazy.explain(), str) else ""
    # One read task for the one selected partition, reading both sides.
    graph = dict(lazy.__dask_graph__())
    assert len(graph) == 1 and next(iter(graph))[0].startswith("zc-read")
    ds = lazy.compute()
    numpy.testing.assert_array_equal(ds["ssh"].values, base["ssh"].values[feb])
    numpy.testing.assert_array_equal(ds["ssh_anom"].values, expected["ssh_anom"][feb])
    if text:
        assert "from base" in text and "from view" in text and "1 of 4" in text
    # A time range trims both sides alike.
    lo, hi = expected["time"][100], expected["time"][900]
    t = dzc.read_view(url).filter(time=slice(lo, hi))[["time", "flag"]].compute()
    keep = (expected["time"] >= lo) & (expected["time"] <= hi)
    numpy.testing.assert_array_equal(t["time"].values, expected["time"][keep])
    numpy.testing.assert_array_equal(t["flag"].values, expected["flag"][keep])
    # map_partitions and persist work as on collections.
    counts = (
        dzc.read_view(url)[["flag"]]
        .map_partitions(lambda d: d.select(["flag"]))
        .persist()
        .compute()
    )
    numpy.testing.assert_array_equal(counts["flag"].values, expected["flag"])


def test_fixture_view_reads_an_index_selection(fixtures_dir: Path) -> None:
    # The reference index (over the base) selects rows of a computed month (2) and
    # of one the view has not computed (4): view values, then fill values.
    from dask_zcollection.indexing import Indexer

    view = dzc.read_view(f"file://{fixtures_dir}/date_monthly_view")
    index = Indexer.read(f"file://{fixtures_dir}/date_monthly.index.parquet")
    lookup = json.loads((fixtures_dir / "date_monthly.index.notes.json").read_text())["lookup"]
    expected = numpy.load(fixtures_dir / "date_monthly_view.expected.npz")
    times = numpy.load(fixtures_dir / "date_monthly.index.expected.npz")["time"]
    mask = numpy.isin(expected["time"], times)
    assert mask.sum() == len(times) == 72
    selected = view.filter(index=index, **lookup)
    got = selected.compute()
    for name in ("time", "ssh_anom", "flag"):
        numpy.testing.assert_array_equal(got[name].values, expected[name][mask])
    numpy.testing.assert_array_equal(
        selected.to_dask_array("ssh_anom").compute(), expected["ssh_anom"][mask]
    )
    assert (got["flag"].values[-24:] == -1).all()  # month 4: not computed


def _runs_of_flag(ds: dzc.Dataset) -> dict[str, numpy.ndarray]:
    """Index builder over a view variable: one row per run of equal ``flag``."""
    flag = ds["flag"].values  # type: ignore[union-attr]
    edges = numpy.flatnonzero(numpy.diff(flag)) + 1
    starts = numpy.concatenate([[0], edges]).astype("int64")
    stops = numpy.concatenate([edges, [len(flag)]]).astype("int64")
    return {"flag": flag[starts].astype("int64"), "_start": starts, "_stop": stops}


def test_an_index_built_over_a_view_variable_selects_its_rows(fixtures_dir: Path) -> None:
    from dask_zcollection.indexing import Indexer

    url = f"file://{fixtures_dir}/date_monthly_view"
    index = Indexer.build(dzc.open_view(url), _runs_of_flag, variables=["flag"])
    expected = numpy.load(fixtures_dir / "date_monthly_view.expected.npz")
    for value in (1, -1):  # -1: the fill value of the months not computed, indexed too
        mask = expected["flag"] == value
        assert mask.any()
        got = dzc.read_view(url).filter(index=index, flag=value).compute()
        numpy.testing.assert_array_equal(got["time"].values, expected["time"][mask])
        numpy.testing.assert_array_equal(got["ssh_anom"].values, expected["ssh_anom"][mask])


def test_map_overlap_on_a_view_crosses_partition_edges(fixtures_dir: Path) -> None:
    # A 3-row window over a view variable, computed and not computed months alike,
    # equals numpy over the whole expected array.
    def window(ds: dzc.Dataset) -> dzc.Dataset:
        flag = ds["flag"].values.astype("float32")  # type: ignore[union-attr]
        summed = numpy.convolve(flag, numpy.ones(3), mode="same").astype("int8")
        return ds.with_variables({"flag": ds["flag"].with_data(summed)})  # type: ignore[union-attr]

    view = dzc.read_view(f"file://{fixtures_dir}/date_monthly_view")[["time", "flag"]]
    got = view.map_overlap(window, 1).compute()
    flag = numpy.load(fixtures_dir / "date_monthly_view.expected.npz")["flag"].astype("float32")
    expected = numpy.convolve(flag, numpy.ones(3), mode="same").astype("int8")
    numpy.testing.assert_array_equal(got["flag"].values, expected)


def test_fixture_copy_is_updatable_and_base_override(tmp_path: Path, fixtures_dir: Path) -> None:
    shutil.copytree(fixtures_dir / "date_monthly", tmp_path / "date_monthly")
    shutil.copytree(fixtures_dir / "date_monthly_view", tmp_path / "date_monthly_view")
    os.system(f"chmod -R u+w {tmp_path}")
    before = tree_digest(str(tmp_path / "date_monthly"))
    view = dzc.open_view(f"file://{tmp_path}/date_monthly_view", mode="rw")
    view.update(
        lambda ds: {"flag": numpy.full(len(ds["time"].values), 7, "int8")},
        filters="month == 3",
        variables=["time"],
    )
    expected = numpy.load(fixtures_dir / "date_monthly_view.expected.npz")
    got = dzc.read_view(f"file://{tmp_path}/date_monthly_view").compute()
    march = (expected["time"].astype("datetime64[M]").astype(int) % 12 + 1) == 3
    numpy.testing.assert_array_equal(got["flag"].values[march], 7)
    numpy.testing.assert_array_equal(got["flag"].values[~march], expected["flag"][~march])
    numpy.testing.assert_array_equal(got["ssh_anom"].values, expected["ssh_anom"])  # NaN in March
    assert tree_digest(str(tmp_path / "date_monthly")) == before
    # base= at open overrides the reference.
    other = dzc.read_view(
        f"file://{tmp_path}/date_monthly_view", base=f"file://{fixtures_dir}/date_monthly"
    )
    numpy.testing.assert_array_equal(other.compute()["time"].values, expected["time"])


# -- create ---------------------------------------------------------------------------------------
def test_create_writes_the_reference_descriptor(tmp_path: Path, base: Any) -> None:
    url, _ = base
    view = dzc.create_view(f"file://{tmp_path}/view", base="../base", variables=VARIABLES)
    doc = json.loads((tmp_path / "view" / "_zcollection_view.json").read_text())
    assert doc["format_version"] == 1
    assert doc["reference"] == {"uri": "../base"}  # exactly as given
    names = [v["name"] for v in doc["schema"]["variables"]]
    assert names == ["ssh_anom", "flag"]
    flag = doc["schema"]["variables"][1]
    assert flag["dtype"] == "|i1" and flag["fill_value"] == -1 and flag["dimensions"] == ["time"]
    assert doc["schema"]["variables"][0]["fill_value"] == "NaN"
    assert {d["name"] for d in doc["schema"]["dimensions"]} == {"time", "x_ac"}
    assert view.variables == ("ssh_anom", "flag")
    # Nothing computed yet: every base row reads as fill values.
    ds = dzc.read_view(f"file://{tmp_path}/view").compute()
    assert ds["flag"].values.shape == (len(TIMES),) and (ds["flag"].values == -1).all()
    assert numpy.isnan(ds["ssh_anom"].values).all() and ds["ssh_anom"].values.shape == (
        len(TIMES),
        3,
    )
    with pytest.raises(AlreadyExistsError):
        dzc.create_view(f"file://{tmp_path}/view", base=url, variables=VARIABLES)
    again = dzc.create_view(
        f"file://{tmp_path}/view", base=url, variables=VARIABLES[1:], overwrite=True
    )
    assert again.variables == ("flag",)
    assert json.loads((tmp_path / "view" / "_zcollection_view.json").read_text())["reference"] == {
        "uri": url
    }


@pytest.mark.parametrize(
    ("variables", "match"),
    [
        ([{"name": "ssh", "dtype": "float32", "dimensions": ["time"]}], "'ssh' clashes"),
        ([{"name": "v", "dtype": "float32", "dimensions": ["time", "nope"]}], "dimension 'nope'"),
        ([{"name": "v", "dtype": "float32", "dimensions": ["x_ac"]}], "partitioned dimension"),
        ([{"name": "v", "dtype": "float32"}], "needs name, dtype and dimensions"),
    ],
)
def test_create_refuses_bad_variables_and_writes_nothing(
    tmp_path: Path, base: Any, variables: list[dict[str, Any]], match: str
) -> None:
    url, _ = base
    before = tree_digest(str(tmp_path / "base"))
    with pytest.raises(SchemaError, match=match):
        dzc.create_view(f"file://{tmp_path}/view", base=url, variables=variables)
    assert not (tmp_path / "view").exists()
    assert tree_digest(str(tmp_path / "base")) == before


def test_create_over_a_url_that_is_not_a_collection(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    with pytest.raises(CollectionNotFoundError, match="empty"):
        dzc.create_view(
            f"file://{tmp_path}/view", base=f"file://{tmp_path}/empty", variables=VARIABLES
        )
    assert not (tmp_path / "view").exists()
    with pytest.raises(CollectionNotFoundError, match="no view"):
        dzc.open_view(f"file://{tmp_path}/empty")


# -- update ---------------------------------------------------------------------------------------
def test_update_values_base_untouched_and_drop(tmp_path: Path, base: Any) -> None:
    url, data = base
    before = tree_digest(str(tmp_path / "base"))
    view = dzc.create_view(f"file://{tmp_path}/view", base=url, variables=VARIABLES)
    assert view.update(anomalies, filters="month <= 2", variables=["ssh", "quality"]) == [
        "year=2024/month=01",
        "year=2024/month=02",
    ]
    got = dzc.read_view(f"file://{tmp_path}/view").compute()
    done = month_rows(1) | month_rows(2)
    ref = {
        "ssh_anom": (data["ssh"] - numpy.float32(1.5)).astype("float32"),
        "flag": (data["quality"] > 100).astype("int8"),
    }
    numpy.testing.assert_array_equal(got["ssh_anom"].values[done], ref["ssh_anom"][done])
    numpy.testing.assert_array_equal(got["flag"].values[done], ref["flag"][done])
    assert (got["flag"].values[~done] == -1).all() and numpy.isnan(
        got["ssh_anom"].values[~done]
    ).all()
    numpy.testing.assert_array_equal(got["ssh"].values, data["ssh"])
    # A second update of one variable keeps the other.
    view.update(
        lambda ds: {"flag": numpy.full(len(ds["time"].values), 3, "int8")},
        filters="month == 1",
        variables=["time"],
    )
    again = dzc.read_view(f"file://{tmp_path}/view").compute()
    numpy.testing.assert_array_equal(again["ssh_anom"].values, got["ssh_anom"].values)
    assert (again["flag"].values[month_rows(1)] == 3).all()
    assert view.drop_partitions("month == 2") == ["year=2024/month=02"]
    assert view.partitions() == ["year=2024/month=01"]
    after = dzc.read_view(f"file://{tmp_path}/view").compute()
    assert (after["flag"].values[month_rows(2)] == -1).all()
    assert tree_digest(str(tmp_path / "base")) == before
    # The view store has the write path's own objects; the base none of them.
    assert (tmp_path / "view" / "_catalog").is_dir() and (tmp_path / "view" / "_locks").is_dir()
    assert not (tmp_path / "base" / "_locks").exists() or before == tree_digest(
        str(tmp_path / "base")
    )


@pytest.mark.parametrize(
    ("fn", "match"),
    [
        (lambda ds: {"flag": numpy.zeros(3, "int8")}, "3 row"),
        (lambda ds: {"flag": numpy.zeros(len(ds["time"].values), "float64")}, "dtype float64"),
        (lambda ds: {"nope": numpy.zeros(len(ds["time"].values))}, "not a variable of the view"),
        (lambda ds: {"ssh": ds["ssh"].values}, "base variable"),
        (lambda ds: 42, "must return a Dataset"),
    ],
)
def test_update_refuses_bad_results_and_commits_nothing(
    tmp_path: Path, base: Any, fn: Any, match: str
) -> None:
    url, _ = base
    view = dzc.create_view(f"file://{tmp_path}/view", base=url, variables=VARIABLES)
    view.update(anomalies, filters="month == 1")
    first = dzc.read_view(f"file://{tmp_path}/view").compute()
    with pytest.raises(SchemaError, match=match) as info:
        view.update(fn)
    assert "year=2024/month=0" in str(info.value)
    assert view.partitions() == ["year=2024/month=01"]
    now = dzc.read_view(f"file://{tmp_path}/view").compute()
    numpy.testing.assert_array_equal(now["flag"].values, first["flag"].values)
    groups = sorted(p.name for p in (tmp_path / "view" / "year=2024").iterdir())
    assert groups == ["month=01", "zarr.json"]  # the aborted versions were deleted
    ro = dzc.open_view(f"file://{tmp_path}/view")
    with pytest.raises(ReadOnlyError):
        ro.update(anomalies)
    with pytest.raises(ReadOnlyError):
        ro.drop_partitions()


def test_staleness_after_the_base_changes(tmp_path: Path, base: Any, factory: Factory) -> None:
    url, data = base
    view = dzc.create_view(f"file://{tmp_path}/view", base=url, variables=VARIABLES)
    view.update(anomalies)
    assert view.stale_partitions() == []
    col = dzc.open_collection(url, mode="rw")
    # Same row count, rewritten values: caught by the base version, not the rows.
    col.update(
        lambda ds: {"quality": numpy.zeros(len(ds["time"].values), "uint8")}, filters="month == 2"
    )
    # Fewer rows in month 3.
    col.drop_partitions("month == 3")
    col.insert({k: (v[month_rows(3)][:5] if k != "x_ac" else v) for k, v in data.items()})
    assert view.stale_partitions() == ["year=2024/month=02", "year=2024/month=03"]
    with pytest.raises(StalePartitionError, match=r"month=0[23].* is stale") as info:
        dzc.read_view(f"file://{tmp_path}/view").compute()
    assert info.value.partition in ("year=2024/month=02", "year=2024/month=03")
    with pytest.raises(StalePartitionError, match=r"month=02.*base version") as info:
        dzc.read_view(f"file://{tmp_path}/view").filter("month == 2").compute()
    assert info.value.partition == "year=2024/month=02"
    # Base variables only: the view store is not read, nothing is stale.
    dzc.read_view(f"file://{tmp_path}/view", variables=["time", "ssh"]).compute()
    filled = dzc.read_view(f"file://{tmp_path}/view", stale="fill").compute()
    rows1 = int(month_rows(1).sum())
    assert (filled["flag"].values[rows1:] == -1).all() and len(
        filled["flag"].values
    ) == rows1 + int(month_rows(2).sum()) + 5
    assert (filled["flag"].values[:rows1] == (data["quality"][:rows1] > 100)).all()
    view.update(anomalies, filters="month >= 2")
    assert view.stale_partitions() == []
    fresh = dzc.read_view(f"file://{tmp_path}/view").compute()
    numpy.testing.assert_array_equal(
        fresh["flag"].values[rows1:], fresh["quality"].values[rows1:] > 100
    )


def test_partitions_added_to_the_base_read_as_fill(tmp_path: Path, factory: Factory) -> None:
    url = f"file://{tmp_path}/base"
    col = factory.create(url, nested=False)
    col.insert(factory.data(TIMES[month_rows(1)], nested=False))
    view = dzc.create_view(f"file://{tmp_path}/view", base=url, variables=VARIABLES)
    view.update(anomalies)
    col.insert(factory.data(TIMES[month_rows(2)], seed=1, nested=False))
    ds = dzc.read_view(f"file://{tmp_path}/view").compute()
    n1 = int(month_rows(1).sum())
    assert len(ds["flag"].values) == len(ds["time"].values) == n1 + int(month_rows(2).sum())
    assert (ds["flag"].values[n1:] == -1).all() and (ds["flag"].values[:n1] >= 0).all()


# -- reads touch only the side they need ----------------------------------------------------------
def test_each_side_is_read_only_for_its_variables(factory: Factory) -> None:
    base_url, view_url = f"memory://{unique_memory_name()}", f"memory://{unique_memory_name()}"
    try:
        factory.create(base_url, nested=False).insert(factory.data(TIMES, nested=False))
        dzc.create_view(view_url, base=base_url, variables=VARIABLES).update(anomalies)
        base_spec, view_spec = counting_spec(base_url), counting_spec(view_url)
        lazy = dzc.read_view(view_spec, base=base_spec).filter("month == 2")
        reset_reads(base_spec.tag), reset_reads(view_spec.tag)
        lazy[["ssh"]].compute()
        assert reads(view_spec.tag) == []
        assert any(is_chunk_key(k) for k in reads(base_spec.tag))
        reset_reads(base_spec.tag), reset_reads(view_spec.tag)
        ds = lazy[["flag"]].compute()
        assert len(ds["flag"].values) == int(month_rows(2).sum())
        # The overlay's arrays; of the base, only the partition group's metadata (staleness).
        assert not [k for k in reads(base_spec.tag) if is_chunk_key(k)]
        assert all("month=02" in k for k in reads(view_spec.tag))
        assert any(is_chunk_key(k) for k in reads(view_spec.tag))
    finally:
        MemoryStore.forget(base_url.removeprefix("memory://"))
        MemoryStore.forget(view_url.removeprefix("memory://"))


# -- graphs: compute=False, a distributed cluster, another backend --------------------------------
def test_update_lazy_inside_dask_compute(tmp_path: Path, base: Any) -> None:
    import dask

    url, data = base
    view = dzc.create_view(f"file://{tmp_path}/view", base=url, variables=VARIABLES)
    lazy = view.update(anomalies, compute=False)
    assert view.partitions() == []  # nothing committed before compute
    other = dask.delayed(sum)([1, 2])
    written, total = dask.compute(lazy, other)
    assert total == 3 and len(written) == 3
    ds = dzc.read_view(f"file://{tmp_path}/view").compute()
    numpy.testing.assert_array_equal(ds["flag"].values, (data["quality"] > 100).astype("int8"))


def test_update_on_a_distributed_cluster(tmp_path: Path, base: Any) -> None:
    distributed = pytest.importorskip("distributed")
    url, data = base
    view = dzc.create_view(f"file://{tmp_path}/view", base=url, variables=VARIABLES)
    with (
        distributed.LocalCluster(
            n_workers=1, threads_per_worker=2, processes=False, dashboard_address=":0"
        ) as cluster,
        distributed.Client(cluster),
    ):
        assert len(view.update(anomalies)) == 3
    ds = dzc.read_view(f"file://{tmp_path}/view").compute()
    numpy.testing.assert_array_equal(ds["flag"].values, (data["quality"] > 100).astype("int8"))


def test_base_on_memory_view_on_file(tmp_path: Path, factory: Factory) -> None:
    base_url = f"memory://{unique_memory_name()}"
    try:
        data = factory.data(TIMES, nested=False)
        factory.create(base_url, nested=False).insert(data)
        view = dzc.create_view(f"file://{tmp_path}/view", base=base_url, variables=VARIABLES)
        view.update(anomalies, filters="month == 3")
        ds = dzc.read_view(f"file://{tmp_path}/view").compute()
        m3 = month_rows(3)
        numpy.testing.assert_array_equal(ds["flag"].values[m3], (data["quality"][m3] > 100))
        assert (ds["flag"].values[~m3] == -1).all()
        assert (
            json.loads((tmp_path / "view" / "_zcollection_view.json").read_text())["reference"][
                "uri"
            ]
            == base_url
        )
    finally:
        MemoryStore.forget(base_url.removeprefix("memory://"))


@pytest.mark.icechunk
def test_base_on_icechunk_view_on_file(tmp_path: Path, factory: Factory) -> None:
    pytest.importorskip("icechunk")
    base_url = f"icechunk://{tmp_path}/repo"
    data = factory.data(TIMES, nested=False)
    factory.create(base_url, nested=False).insert(data)
    view = dzc.create_view(f"file://{tmp_path}/view", base=base_url, variables=VARIABLES)
    view.update(anomalies, variables=["quality", "ssh"])
    ds = dzc.read_view(f"file://{tmp_path}/view").compute()
    numpy.testing.assert_array_equal(ds["flag"].values, (data["quality"] > 100))
    numpy.testing.assert_array_equal(ds["ssh"].values, data["ssh"])


# -- processes: concurrency and SIGKILL -----------------------------------------------------------
def _spawn(
    url: str,
    filters: str,
    variable: str,
    value: float,
    go: Path,
    slow: Path | None = None,
    retention: str = "0",
) -> subprocess.Popen[str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "DASK_ZCOLLECTION__RETENTION": retention}
    args = [sys.executable, str(WORKER), url, filters, variable, str(value), str(go)]
    if slow is not None:
        args.append(str(slow))
    return subprocess.Popen(
        args, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )


@pytest.fixture
def view_url(tmp_path: Path, base: Any) -> Iterator[str]:
    url, _ = base
    dzc.create_view(f"file://{tmp_path}/view", base=url, variables=VARIABLES)
    yield f"file://{tmp_path}/view"


@pytest.mark.parametrize(
    ("one", "two"),
    [
        (("month == 1", "flag", 1), ("month == 2", "flag", 2)),  # other partitions
        (("month == 1", "flag", 1), ("month == 1", "ssh_anom", 2.5)),  # other variables
    ],
)
def test_concurrent_updaters_lose_nothing(
    tmp_path: Path, view_url: str, one: Any, two: Any
) -> None:
    go = tmp_path / "go"
    procs = [_spawn(view_url, *one, go), _spawn(view_url, *two, go)]
    go.touch()
    for p in procs:
        _out, err = p.communicate(timeout=120)
        assert p.returncode == 0, err
    ds = dzc.read_view(view_url).compute()
    for filters, variable, value in (one, two):
        rows = month_rows(int(filters[-1]))
        numpy.testing.assert_array_equal(ds[variable].values[rows], value)


def test_same_partition_and_variable_both_land_in_commit_order(
    tmp_path: Path, view_url: str
) -> None:
    from dask_zcollection._sync import sync
    from dask_zcollection.catalog import CatalogLog
    from dask_zcollection.store import resolve_store

    go = tmp_path / "go"
    # Superseded versions kept: the test reads each committed version.
    procs = [
        _spawn(view_url, "month == 1", "flag", 1, go, retention="3600"),
        _spawn(view_url, "month == 1", "flag", 2, go, retention="3600"),
    ]
    go.touch()
    for p in procs:
        _, err = p.communicate(timeout=120)
        assert p.returncode == 0, err
    log = CatalogLog(resolve_store(view_url))
    versions = sync(log.versions())
    latest = max(versions)
    assert latest == 3  # create, then one commit per updater
    values = []
    for v in (2, 3):  # each committed version holds one whole update, never half of one
        cat = sync(log.read(v))
        assert cat is not None and len(cat) == 1
        flag = sync(dzc.open_view(view_url).aio.source()).overlay.io.read(cat.paths[0], ["flag"])
        values.append(set(numpy.unique(sync(flag)["flag"]).tolist()))
    assert sorted(map(tuple, values)) == [(1,), (2,)]
    final = dzc.read_view(view_url).compute()["flag"].values[month_rows(1)]
    assert set(numpy.unique(final).tolist()) == values[-1]


def test_sigkill_mid_update_leaves_the_previous_overlay_readable(
    tmp_path: Path, view_url: str
) -> None:
    view = dzc.open_view(view_url, mode="rw")
    view.update(anomalies)
    before = dzc.read_view(view_url).compute()
    go, slow = tmp_path / "go", tmp_path / "slow"
    go.touch()
    proc = _spawn(view_url, "month >= 1", "flag", 9, go, slow)
    deadline = time.monotonic() + 60
    while not slow.exists():
        assert proc.poll() is None, proc.communicate()[1]
        assert time.monotonic() < deadline
        time.sleep(0.02)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    after = dzc.read_view(view_url).compute()
    for name in ("flag", "ssh_anom"):
        numpy.testing.assert_array_equal(after[name].values, before[name].values)
    # Reopening for writing recovers the dead writer; a new update lands whole.
    view = dzc.open_view(view_url, mode="rw")
    view.update(
        lambda ds: {"flag": numpy.full(len(ds["time"].values), 4, "int8")}, variables=["time"]
    )
    final = dzc.read_view(view_url).compute()
    assert (final["flag"].values == 4).all()
    numpy.testing.assert_array_equal(final["ssh_anom"].values, before["ssh_anom"].values)


def test_the_docs_example_runs() -> None:
    import re

    text = (ROOT / "docs" / "views.md").read_text()
    code = re.findall(r"```python\n(.*?)```", text, re.S)[0]
    try:
        exec(compile(code, "docs/views.md", "exec"), {})
    finally:
        MemoryStore.forget("mission")
        MemoryStore.forget("anomalies")


@pytest.mark.s3
def test_base_on_s3_view_on_file_never_stores_credentials(
    tmp_path: Path, factory: Factory, s3: Any
) -> None:
    from conftest import s3_options, s3_prefix

    options = s3_options(s3, "obstore")
    base_url = f"{s3_prefix()}/base"
    data = factory.data(TIMES, nested=False)
    dzc.create_collection(
        base_url,
        schema=factory.schema(nested=False),
        axis="time",
        partitioning=factory.partitioning(),
        storage_options=options,
    ).insert(data)
    view = dzc.create_view(
        f"file://{tmp_path}/view", base=base_url, variables=VARIABLES, base_storage_options=options
    )
    view.update(anomalies, filters="month == 2", variables=["ssh", "quality"])
    ds = dzc.read_view(f"file://{tmp_path}/view", base_storage_options=options).compute()
    m2 = month_rows(2)
    numpy.testing.assert_array_equal(ds["flag"].values[m2], data["quality"][m2] > 100)
    assert (ds["flag"].values[~m2] == -1).all()
    stored = b"".join(p.read_bytes() for p in (tmp_path / "view").rglob("*") if p.is_file())
    secrets = [str(v) for v in options.values() if isinstance(v, str) and len(str(v)) > 3]
    assert secrets and not [s for s in secrets if s.encode() in stored and s not in base_url]


@pytest.mark.icechunk
def test_view_on_icechunk(tmp_path: Path, base: Any) -> None:
    pytest.importorskip("icechunk")
    url, data = base
    view_url = f"icechunk://{tmp_path}/views"
    view = dzc.create_view(view_url, base=url, variables=VARIABLES[1:])
    assert view.update(anomalies_flag, filters="month == 1") == ["year=2024/month=01"]
    ds = dzc.read_view(view_url).compute()
    m1 = month_rows(1)
    numpy.testing.assert_array_equal(ds["flag"].values[m1], data["quality"][m1] > 100)
    assert (ds["flag"].values[~m1] == -1).all()
    assert dzc.open_view(view_url, mode="rw").drop_partitions() == ["year=2024/month=01"]
    assert dzc.open_view(view_url).partitions() == []


def anomalies_flag(ds: dzc.Dataset) -> dict[str, numpy.ndarray]:
    return {"flag": (ds["quality"].values > 100).astype("int8")}


def test_aio_twins(tmp_path: Path, base: Any) -> None:
    import asyncio

    from dask_zcollection import aio

    url, data = base

    async def main() -> tuple[list[str], Any, list[str]]:
        view = await aio.create_view(f"file://{tmp_path}/view", base=url, variables=VARIABLES)
        written = await view.update(anomalies, filters="month == 3")
        opened = await aio.open_view(f"file://{tmp_path}/view")
        lazy = await aio.read_view(f"file://{tmp_path}/view", variables=["flag"])
        ds = await asyncio.to_thread(lazy.compute)
        assert await opened.stale_partitions() == []
        return written, ds, await opened.partitions()

    written, ds, parts = asyncio.run(main())
    assert written == parts == ["year=2024/month=03"]
    m3 = month_rows(3)
    numpy.testing.assert_array_equal(ds["flag"].values[m3], data["quality"][m3] > 100)
    assert [p for p, _ in ds.walk()] == ["flag"]


def test_variable_schema_objects_and_a_dataset_result(tmp_path: Path, base: Any) -> None:
    url, data = base
    spec = (
        dzc.Schema()
        .with_dimension("time")
        .with_variable("flag", dtype="int8", dimensions=("time",), fill_value=-1)
        .build()
        .root.variables[0]
    )
    view = dzc.create_view(f"file://{tmp_path}/view", base=url, variables=[spec])
    assert view.variables == ("flag",)

    def as_dataset(ds: dzc.Dataset) -> dzc.Dataset:
        flag = (ds["quality"].values > 100).astype("int8")
        return dzc.Dataset.from_mapping({"flag": (("time",), flag)})

    view.update(as_dataset, variables=["quality"])
    got = dzc.read_view(f"file://{tmp_path}/view").compute()
    numpy.testing.assert_array_equal(got["flag"].values, data["quality"] > 100)
    numpy.testing.assert_array_equal(got["quality"].values, data["quality"])


def test_update_arguments_refused_before_anything_is_written(tmp_path: Path, base: Any) -> None:
    from dask_zcollection.errors import FilterError, InvalidInputError, VariableNotFoundError

    url, _ = base
    view = dzc.create_view(f"file://{tmp_path}/view", base=url, variables=VARIABLES)
    before = tree_digest(str(tmp_path / "view"))
    with pytest.raises(VariableNotFoundError, match="nope"):
        view.update(anomalies, variables=["ssh", "nope"])
    with pytest.raises(FilterError):
        view.update(anomalies, filters="cycle == 3")
    with pytest.raises(InvalidInputError, match="function"):
        view.update(42)  # type: ignore[arg-type]
    with pytest.raises(InvalidInputError, match="stale"):
        dzc.read_view(f"file://{tmp_path}/view", stale="maybe")  # type: ignore[arg-type]
    assert tree_digest(str(tmp_path / "view")) == before
    assert view.update(anomalies, filters="year == 1990") == []


def test_open_refuses_a_base_with_a_variable_named_like_the_view(
    tmp_path: Path, base: Any, factory: Factory
) -> None:
    url, _ = base
    dzc.create_view(f"file://{tmp_path}/view", base=url, variables=VARIABLES)
    other = f"file://{tmp_path}/other"
    schema = factory.schema(nested=False).with_variable("flag", dtype="int8", dimensions=("time",))
    factory.create(other, schema=schema)
    with pytest.raises(SchemaError, match="flag"):
        dzc.open_view(f"file://{tmp_path}/view", base=other)


def test_a_damaged_view_catalog_version_refuses_writes_until_repair(
    tmp_path: Path, base: Any
) -> None:
    """A view writer never commits on the version below a damaged one (the damaged
    version's partitions would be silently forgotten): update and drop refuse, writing
    nothing; repair sets the damaged object aside, and the next update recomputes."""
    url, data = base
    view = dzc.create_view(f"file://{tmp_path}/view", base=url, variables=VARIABLES)
    view.update(anomalies, filters="month == 1", variables=["ssh", "quality"])
    view.update(anomalies, filters="month == 2", variables=["ssh", "quality"])
    newest = sorted((tmp_path / "view" / "_catalog").glob("v*.zcat"))[-1]
    newest.write_bytes(newest.read_bytes()[:20])
    with pytest.warns(ZCollectionWarning, match="damaged"):
        assert dzc.open_view(f"file://{tmp_path}/view").partitions() == ["year=2024/month=01"]
    before = tree_digest(str(tmp_path / "view"))
    with pytest.raises(CorruptedDataError, match=rf"{newest.name}.*Run repair\(\)"):
        view.update(anomalies, filters="month == 3", variables=["ssh", "quality"])
    with pytest.raises(CorruptedDataError, match=r"Run repair\(\)"):
        view.drop_partitions("month == 1")
    assert tree_digest(str(tmp_path / "view")) == before
    report = view.repair()
    assert [a.path for a in report.quarantined] == [f"_catalog/{newest.name}"]
    assert list((tmp_path / "view" / "_quarantine").glob(f"*/_catalog/{newest.name}"))
    view.update(anomalies, filters="month >= 2", variables=["ssh", "quality"])
    got = dzc.read_view(f"file://{tmp_path}/view").compute()
    numpy.testing.assert_array_equal(
        got["ssh_anom"].values, (data["ssh"] - numpy.float32(1.5)).astype("float32")
    )
    numpy.testing.assert_array_equal(got["flag"].values, (data["quality"] > 100).astype("int8"))
