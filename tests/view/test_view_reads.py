"""A view's read of one month: its requests and round trips, and staleness checks on that path.

The read pins what a view read costs against a plain read of the base (so a
regression in cloud cost or latency fails a test), and the staleness record
keeps catching a base partition rewritten under the view: the same row count
(even back at the same path, time range and rows), a new base partition, and
views of the reference implementation (row counts only).
"""

from __future__ import annotations

import dataclasses
import os
import re
import shutil
import time
from pathlib import Path
from typing import Any

import dask
import numpy
import pytest
from conftest import Factory

import dask_zcollection as dzc
from benchmarks._latency import LatencyLocalStore
from dask_zcollection.errors import CollectionNotFoundError, StalePartitionError
from dask_zcollection.store._url import _FACTORIES
from dask_zcollection.testing import RequestCounter

TIMES = numpy.arange(
    "2024-01-01", "2024-04-01", numpy.timedelta64(12, "h"), dtype="datetime64[h]"
).astype("datetime64[ns]")
ANOM = {"name": "ssh_anom", "dtype": "float32", "dimensions": ["time", "x_ac"], "fill_value": "NaN"}
FEB = "month == 2"


def month_of(times: numpy.ndarray) -> numpy.ndarray:
    return times.astype("datetime64[M]").astype(int) % 12 + 1


def anomaly(ds: dzc.Dataset) -> dict[str, numpy.ndarray]:
    return {"ssh_anom": (ds["ssh"].values - numpy.float32(1.5)).astype("float32")}


class TimedCounter(RequestCounter):
    """Also records when each request starts (to count round trips)."""

    def __init__(self) -> None:
        super().__init__()
        self.starts: list[float] = []

    def add(self, n: int = 1, kind: str | None = None, keys: Any = ()) -> None:
        with self._lock:
            self.starts.extend([time.perf_counter()] * n)
        super().add(n, kind, keys)

    def rounds(self, latency: float) -> int:
        """Groups of requests started together: a new one ``latency`` after the last began."""
        with self._lock:
            starts = sorted(self.starts)
        groups, first = 0, -numpy.inf
        for t in starts:
            if t - first >= 0.9 * latency:
                groups, first = groups + 1, t
        return groups

    def reset(self) -> int:
        with self._lock:
            self.starts.clear()
        return super().reset()


_TIMED: dict[tuple[str, float], TimedCounter] = {}


@dataclasses.dataclass(frozen=True, slots=True)
class TimedStore(LatencyLocalStore):
    """A ``file://`` store counting (and timing) every request, listings included."""

    @property
    def counter(self) -> TimedCounter:
        return _TIMED.setdefault((self.root, self.latency), TimedCounter())


def _normalised(keys: list[str]) -> list[str]:
    """Read keys with catalog version and segment ids replaced (they vary)."""
    out = [re.sub(r"v\d{12}\.zcat$", "v<N>.zcat", k) for k in keys]
    return sorted(re.sub(r"seg/[0-9a-f]+\.zseg$", "seg/<id>.zseg", k) for k in out)


@pytest.fixture
def month_view(tmp_path: Path, factory: Factory) -> tuple[Path, dict[str, numpy.ndarray]]:
    """A file:// base over three months (one chunk per partition) and a view computed over it."""
    data = factory.data(TIMES, nested=False)
    factory.create(
        f"file://{tmp_path}/base", schema=factory.schema(nested=False, chunks=256)
    ).insert(data)
    view = dzc.create_view(
        f"file://{tmp_path}/view", base=f"file://{tmp_path}/base", variables=[ANOM]
    )
    assert view.update(anomaly) == [f"year=2024/month=0{m}" for m in (1, 2, 3)]
    return tmp_path, data


def test_one_month_view_read_requests(month_view: Any) -> None:
    root, data = month_view
    vspec, bspec = TimedStore(f"{root}/view", latency=0.0), TimedStore(f"{root}/base", latency=0.0)
    feb = month_of(data["time"]) == 2

    def view_read() -> dzc.Dataset:
        return dzc.read_view(vspec, base=bspec).filter(FEB)[["time", "ssh", "ssh_anom"]].compute()

    def base_read() -> dzc.Dataset:
        return dzc.read_collection(bspec).filter(FEB)[["time", "ssh", "quality"]].compute()

    for read in (view_read, base_read):
        read()  # warm: nothing is cached between reads, but imports and pools are
        vspec.counter.reset(), bspec.counter.reset()
        ds = read()
        numpy.testing.assert_array_equal(ds["time"].values, data["time"][feb])
        numpy.testing.assert_array_equal(ds["ssh"].values, data["ssh"][feb])
        if read is view_read:
            numpy.testing.assert_array_equal(ds["ssh_anom"].values, data["ssh"][feb] - 1.5)
            view_keys, base_keys = vspec.counter.reads(), bspec.counter.reads()
            view_count, base_count = vspec.counter.reset(), bspec.counter.reset()
        else:
            assert vspec.counter.reset() == 0
            plain_keys, plain_count = bspec.counter.reads(), bspec.counter.reset()
    feb_path = "year=2024/month=02"
    catalog = ["_catalog/seg/<id>.zseg", "_catalog/v<N>.zcat"]
    # The base read: descriptor, catalog (two listings: one while the descriptor
    # is read), the three arrays' metadata and their one chunk each.
    assert _normalised(plain_keys) == sorted(
        ["_zcollection.json", *catalog]
        + [f"{feb_path}/{v}/zarr.json" for v in ("time", "ssh", "quality")]
        + [f"{feb_path}/time/c/0", f"{feb_path}/ssh/c/0/0", f"{feb_path}/quality/c/0"]
    )
    assert plain_count == len(plain_keys) + 2
    # The view read: the same of each side for its variables, plus the view's
    # descriptor and catalog, and each side's partition group (the staleness check).
    assert _normalised(view_keys) == sorted(
        [
            "_zcollection_view.json",
            *catalog,
            f"{feb_path}/zarr.json",
            f"{feb_path}/ssh_anom/zarr.json",
            f"{feb_path}/ssh_anom/c/0/0",
        ]
    )
    assert _normalised(base_keys) == sorted(
        ["_zcollection.json", *catalog, f"{feb_path}/zarr.json"]
        + [f"{feb_path}/{v}/zarr.json" for v in ("time", "ssh")]
        + [f"{feb_path}/time/c/0", f"{feb_path}/ssh/c/0/0"]
    )
    assert (view_count, base_count) == (len(view_keys) + 2, len(base_keys) + 2)
    assert view_count + base_count == plain_count + 7


def test_one_month_view_read_round_trips(month_view: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """Requests that do not depend on each other go out together: a view read
    waits for as many round trips as a read of the base."""
    root, _ = month_view
    latency = 0.1
    vspec = TimedStore(f"{root}/view", latency=latency)
    bspec = TimedStore(f"{root}/base", latency=latency)
    # The base the view names (file://.../base) resolves to the timed store too.
    original = _FACTORIES["file"]
    monkeypatch.setitem(
        _FACTORIES,
        "file",
        lambda url, path, options: bspec if path == bspec.root else original(url, path, options),
    )

    def rounds(read: Any, attempts: int = 2) -> int:
        best = []
        for _ in range(attempts):  # the fewest: a stalled thread can only split a round
            vspec.counter.reset(), bspec.counter.reset()
            read()
            starts = TimedCounter()
            starts.starts = vspec.counter.starts + bspec.counter.starts
            best.append(starts.rounds(latency))
        return min(best)

    def view_read(base: Any = None) -> Any:
        return dzc.read_view(vspec, base=base).filter(FEB)[["ssh", "ssh_anom"]].compute()

    # The first open of the view in this process learns its base from its
    # descriptor: one round trip more. Later ones open the base meanwhile.
    assert rounds(view_read, attempts=1) >= 6
    # descriptors + listings, listings + catalog roots, segments, arrays' metadata, chunks
    assert rounds(view_read) == 5
    assert rounds(lambda: view_read(bspec)) == 5
    assert rounds(lambda: dzc.read_collection(bspec).filter(FEB)[["ssh", "quality"]].compute()) == 5


def test_a_view_recreated_over_another_base_reads_the_new_base(
    month_view: Any, factory: Factory
) -> None:
    """The base a view named at its last open is only a guess: the descriptor decides."""
    root, data = month_view
    view_url = f"file://{root}/view"
    feb = month_of(data["time"]) == 2
    got = dzc.read_view(view_url).filter(FEB)[["ssh", "ssh_anom"]].compute()  # remembered
    numpy.testing.assert_array_equal(got["ssh"].values, data["ssh"][feb])
    other = factory.data(TIMES, seed=7, nested=False)
    factory.create(f"file://{root}/other", schema=factory.schema(nested=False)).insert(other)
    view = dzc.create_view(view_url, base=f"file://{root}/other", variables=[ANOM], overwrite=True)
    view.update(anomaly, filters=FEB)
    for _ in range(2):
        got = dzc.read_view(view_url).filter(FEB)[["ssh", "ssh_anom"]].compute()
        numpy.testing.assert_array_equal(got["ssh"].values, other["ssh"][feb])
        numpy.testing.assert_array_equal(got["ssh_anom"].values, other["ssh"][feb] - 1.5)
    # The base it named is gone: the error names the base the descriptor names.
    shutil.rmtree(root / "other")
    with pytest.raises(CollectionNotFoundError, match="other"):
        dzc.read_view(view_url)


def test_read_view_filters_reads_the_matching_partitions(month_view: Any) -> None:
    root, data = month_view
    ds = dzc.read_view(f"file://{root}/view", filters=FEB, variables=["time", "ssh_anom"]).compute()
    feb = month_of(data["time"]) == 2
    numpy.testing.assert_array_equal(ds["time"].values, data["time"][feb])
    numpy.testing.assert_array_equal(ds["ssh_anom"].values, data["ssh"][feb] - 1.5)
    lazy = dzc.read_view(f"file://{root}/view", filters="month >= 2")
    assert lazy.npartitions == 2


# -- staleness ------------------------------------------------------------------------------------
def test_a_base_partition_rewritten_back_at_its_path_is_stale(month_view: Any) -> None:
    """Same path, rows and time range as when the view computed it: only the
    base group's transaction tells, and it is still checked."""
    root, data = month_view
    view_url, base_url = f"file://{root}/view", f"file://{root}/base"
    col = dzc.open_collection(base_url, mode="rw")
    before = col.catalog()
    with dask.config.set({"zcollection.retention": 0}):  # the first path is free again
        for q in (1, 2):
            col.update(
                lambda ds, q=q: {"quality": numpy.full(len(ds["time"].values), q, "uint8")},
                filters=FEB,
            )
    after = col.catalog()
    assert (
        after.paths
        == before.paths
        == ("year=2024/month=01", "year=2024/month=02", "year=2024/month=03")
    )
    numpy.testing.assert_array_equal(after.rows, before.rows)
    numpy.testing.assert_array_equal(after.axis_min, before.axis_min)
    numpy.testing.assert_array_equal(after.axis_max, before.axis_max)
    assert dzc.open_view(view_url).stale_partitions() == ["year=2024/month=02"]
    for lazy in (
        dzc.read_view(view_url).filter(FEB),
        dzc.read_view(view_url, base=base_url, filters=FEB),
        dzc.read_view(view_url),
    ):
        with pytest.raises(StalePartitionError, match=r"month=02.* is stale") as info:
            lazy[["ssh_anom"]].compute()
        assert info.value.partition == "year=2024/month=02"
    filled = dzc.read_view(view_url, stale="fill")[["time", "ssh_anom"]].compute()
    feb = month_of(data["time"]) == 2
    assert numpy.isnan(filled["ssh_anom"].values[feb]).all()
    numpy.testing.assert_array_equal(filled["ssh_anom"].values[~feb], data["ssh"][~feb] - 1.5)
    # Recomputed: fresh again.
    dzc.open_view(view_url, mode="rw").update(anomaly, filters=FEB)
    assert dzc.open_view(view_url).stale_partitions() == []
    got = dzc.read_view(view_url).filter(FEB)[["ssh_anom"]].compute()
    numpy.testing.assert_array_equal(got["ssh_anom"].values, data["ssh"][feb] - 1.5)


def test_a_new_base_partition_reads_as_fill_without_touching_the_view(
    month_view: Any, factory: Factory
) -> None:
    root, _ = month_view
    april = numpy.arange("2024-04-01", "2024-04-11", dtype="datetime64[D]").astype("datetime64[ns]")
    dzc.open_collection(f"file://{root}/base", mode="rw").insert(
        factory.data(april, seed=3, nested=False, immutable=False)
    )
    vspec, bspec = TimedStore(f"{root}/view", latency=0.0), TimedStore(f"{root}/base", latency=0.0)
    lazy = dzc.read_view(vspec, base=bspec).filter("month == 4")
    vspec.counter.reset()
    ds = lazy[["time", "ssh_anom"]].compute()
    numpy.testing.assert_array_equal(ds["time"].values, april)
    assert ds["ssh_anom"].values.shape == (10, 3) and numpy.isnan(ds["ssh_anom"].values).all()
    assert vspec.counter.reads() == []  # not computed: nothing of it is in the view store
    assert dzc.open_view(f"file://{root}/view").stale_partitions() == []


def test_a_reference_view_is_stale_when_its_base_rows_change(
    tmp_path: Path, fixtures_dir: Path
) -> None:
    """Views of the reference implementation have no record: their row count is checked."""
    shutil.copytree(fixtures_dir / "date_monthly", tmp_path / "date_monthly")
    shutil.copytree(fixtures_dir / "date_monthly_view", tmp_path / "date_monthly_view")
    os.system(f"chmod -R u+w {tmp_path}")
    base_url, view_url = f"file://{tmp_path}/date_monthly", f"file://{tmp_path}/date_monthly_view"
    expected = numpy.load(fixtures_dir / "date_monthly_view.expected.npz")
    base = dzc.read_collection(base_url).compute()
    jan = month_of(base["time"].values) == 1
    col = dzc.open_collection(base_url, mode="rw")
    col.drop_partitions("month == 1")
    col.insert({p: v.values[jan][:5] for p, v in base.walk() if p != "x_ac"})
    assert dzc.open_view(view_url).stale_partitions() == ["year=2024/month=01"]
    with pytest.raises(StalePartitionError, match=r"month=01.* 5") as info:
        dzc.read_view(view_url).filter("month == 1")[["flag"]].compute()
    assert info.value.partition == "year=2024/month=01"
    # February still reads its computed values; January reads fill values on request.
    feb = month_of(expected["time"]) == 2
    got = dzc.read_view(view_url).filter("month == 2")[["flag"]].compute()
    numpy.testing.assert_array_equal(got["flag"].values, expected["flag"][feb])
    filled = dzc.read_view(view_url, stale="fill").filter("month <= 2")[["flag"]].compute()
    numpy.testing.assert_array_equal(filled["flag"].values, [-1] * 5 + list(expected["flag"][feb]))


@pytest.mark.icechunk
def test_a_pinned_view_version_reads_its_snapshot(month_view: Any) -> None:
    """``version=`` pins the view store: its catalog and its arrays are of that snapshot."""
    icechunk = pytest.importorskip("icechunk")
    root, data = month_view
    url = f"icechunk://{root}/views"
    view = dzc.create_view(url, base=f"file://{root}/base", variables=[ANOM])
    assert view.update(anomaly, filters=FEB) == ["year=2024/month=02"]
    repo = icechunk.Repository.open(icechunk.local_filesystem_storage(str(root / "views")))
    snap = repo.lookup_branch("main")
    view.update(lambda ds: {"ssh_anom": numpy.zeros_like(ds["ssh"].values)}, filters="month <= 2")
    feb = month_of(data["time"]) <= 2
    now = dzc.read_view(url).filter("month <= 2")[["ssh_anom"]].compute()
    numpy.testing.assert_array_equal(now["ssh_anom"].values, numpy.zeros_like(data["ssh"][feb]))
    for lazy in (
        dzc.read_view(url, version=snap),
        dzc.read_view(url, version=snap, base=f"file://{root}/base", filters="month <= 2"),
    ):
        old = lazy.filter("month <= 2")[["ssh_anom"]].compute()["ssh_anom"].values
        jan = month_of(data["time"][feb]) == 1
        assert numpy.isnan(old[jan]).all()  # not computed at that snapshot
        numpy.testing.assert_array_equal(old[~jan], data["ssh"][feb][~jan] - 1.5)
    assert dzc.open_view(url, version=snap).partitions() == ["year=2024/month=02"]


def test_a_base_partition_path_written_unpadded_reads_the_computed_values(
    tmp_path: Path, fixtures_dir: Path
) -> None:
    """``month=1`` in the base, ``month=01`` in the view: the same partition (it read
    as fill values, silently)."""
    shutil.copytree(fixtures_dir / "date_monthly", tmp_path / "date_monthly")
    shutil.copytree(fixtures_dir / "date_monthly_view", tmp_path / "date_monthly_view")
    os.system(f"chmod -R u+w {tmp_path}")
    months = tmp_path / "date_monthly" / "year=2024"
    (months / "month=01").rename(months / "month=1")
    state = tmp_path / "date_monthly" / "_catalog" / "state.json"
    state.write_text(state.read_text().replace("month=01", "month=1"))
    view_url = f"file://{tmp_path}/date_monthly_view"
    expected = numpy.load(fixtures_dir / "date_monthly_view.expected.npz")
    ds = dzc.read_view(view_url)[["time", "ssh_anom", "flag"]].compute()
    for name in expected.files:
        numpy.testing.assert_array_equal(ds[name].values, expected[name], err_msg=name)
    assert dzc.open_view(view_url).stale_partitions() == []


def test_a_one_partition_read_does_not_encode_every_computed_partition(
    tmp_path: Path, factory: Factory, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The read looks view partitions up by key: its cost does not grow with the
    view's computed partitions (each read encoded all of them: 50 ms for 3,650)."""
    step = numpy.timedelta64(12, "h")
    times = numpy.arange("2024-01-01", "2024-02-10", step, dtype="datetime64[h]").astype("M8[ns]")
    data = factory.data(times, nested=False)
    col = dzc.create_collection(
        f"file://{tmp_path}/base",
        schema=factory.schema(nested=False, chunks=64),
        axis="time",
        partitioning=dzc.partitioning.Date(("time",), resolution="D"),
    )
    col.insert(data)
    view_url = f"file://{tmp_path}/view"
    view = dzc.create_view(view_url, base=f"file://{tmp_path}/base", variables=[ANOM])
    assert len(view.update(anomaly)) == 40
    calls: list[Any] = []
    encode = dzc.partitioning.Date.encode

    def counting(self: Any, key: Any) -> str:
        calls.append(key)
        return encode(self, key)

    monkeypatch.setattr(dzc.partitioning.Date, "encode", counting)
    day = "month == 1 and day == 20"
    got = dzc.read_view(view_url).filter(day)[["time", "ssh_anom"]].compute()
    mask = times.astype("datetime64[D]") == numpy.datetime64("2024-01-20")
    numpy.testing.assert_array_equal(got["time"].values, times[mask])
    numpy.testing.assert_array_equal(got["ssh_anom"].values, data["ssh"][mask] - 1.5)
    view_calls, calls[:] = len(calls), []
    dzc.read_collection(f"file://{tmp_path}/base").filter(day)[["time", "ssh"]].compute()
    assert view_calls <= len(calls) + 1
