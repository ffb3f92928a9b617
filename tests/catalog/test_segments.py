"""The segmented catalog: commits cost what they change, readers read what a filter can match."""

from __future__ import annotations

import asyncio
import os
import shutil
from pathlib import Path
from typing import Any

import numpy
import pytest

import dask_zcollection as zc
from benchmarks import _data
from benchmarks.scale import FILTER, build, metadata_bytes, new_partition
from dask_zcollection._engine import encode_keys
from dask_zcollection._sync import sync
from dask_zcollection.catalog import Catalog, CatalogLog, encode_catalog
from dask_zcollection.catalog._log import by_keys, version_key
from dask_zcollection.catalog._segments import SEGMENT_DIR, Root, may_match, new_segment_id
from dask_zcollection.errors import ZCollectionWarning
from dask_zcollection.partitioning import Date, PartitionFilter, Sequence
from dask_zcollection.store import LocalStore

WIDTH = 2


def _schema() -> zc.Schema:
    return _data.make_schema(WIDTH, "zstd3", 4096)


def _insert_bytes(root: Path, n: int, inserts: int = 3) -> list[int]:
    """Metadata bytes written by each insert of one new partition into ``n`` hourly ones."""
    url = build(str(root), n, _schema())
    col = zc.open_collection(url, mode="rw")
    out = []
    for i in range(inserts):
        data = new_partition(n, i, WIDTH)
        key = col.partitioning.split({"time": data["time"][:1]}, {})[0][0]
        canonical = col.partitioning.encode(tuple(int(x) for x in key))
        with metadata_bytes(lambda k, c=canonical: k.startswith(c + "/")) as total:
            col.insert(data)
        out.append(total[0])
    assert len(col.partitions()) == n + inserts
    shutil.rmtree(root)
    return out


def test_metadata_bytes_per_commit_do_not_grow_with_the_catalog(tmp_path: Path) -> None:
    """From N = 1,000 to N = 20,000 partitions (20x the catalog), an insert of one new
    partition writes no more metadata (before segments: the whole catalog, ~20x)."""
    small = _insert_bytes(tmp_path / "small", 1_000)
    large = _insert_bytes(tmp_path / "large", 20_000)
    # The catalog object of 20,000 partitions alone is far above what a commit writes.
    whole = len(encode_catalog(_hourly(20_000)))
    assert whole > 100_000
    assert max(large) < 64 * 1024
    assert max(large) <= 1.5 * max(small), (small, large)


def _hourly(n: int) -> Catalog:
    hours = numpy.datetime64("2000-01-01T00", "h") + numpy.arange(n)
    keys = numpy.stack([hours.astype("int64") // 24, hours.astype("int64") % 24], axis=1).astype(
        "int64"
    )
    paths = [f"day={d}/hour={h:02d}" for d, h in keys.tolist()]
    start = hours.astype("datetime64[ns]")
    empty = Catalog.empty(("day", "hour"), start.dtype)
    return empty.with_partitions(keys, paths, numpy.full(n, 5), start, start).next_version("t")


def test_a_filter_reads_the_root_and_only_the_segments_it_can_match(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    n = 20_000
    url = build(str(tmp_path / "c"), n, _schema())
    segments = [k for k in os.listdir(tmp_path / "c" / SEGMENT_DIR)]
    assert len(segments) >= 10
    got: list[str] = []
    original = LocalStore.get

    async def get(self: Any, key: str) -> bytes | None:
        got.append(key)
        return await original(self, key)

    monkeypatch.setattr(LocalStore, "get", get)
    paths = zc.open_collection(url).partitions(FILTER)
    assert paths == [f"year=2000/month=01/day=02/hour={h:02d}" for h in range(24)]
    read = [k for k in got if k.startswith(SEGMENT_DIR)]
    assert len(read) == 1  # the day lies in one segment
    assert [k for k in got if k.startswith("_catalog/v")] == [version_key(2)]
    got.clear()
    assert len(zc.open_collection(url).partitions()) == n
    assert len([k for k in got if k.startswith(SEGMENT_DIR)]) == len(segments)


@pytest.mark.parametrize("seed", range(3))
def test_segment_pruning_never_drops_a_match(seed: int) -> None:
    """may_match is sound: every segment holding a matching key is kept (random filters)."""
    rng = numpy.random.default_rng(seed)
    keys = numpy.unique(rng.integers(0, 12, size=(400, 3)), axis=0)
    cuts = numpy.sort(rng.choice(numpy.arange(1, len(keys)), size=12, replace=False))
    bounds = list(zip([0, *cuts.tolist()], [*cuts.tolist(), len(keys)], strict=True))
    cmin = numpy.array([keys[a:b].min(axis=0) for a, b in bounds])
    cmax = numpy.array([keys[a:b].max(axis=0) for a, b in bounds])
    names = ("a", "b", "c")
    nseg = len(bounds)
    root = Root(
        head=Catalog.empty(names, "int64"),
        names=tuple(str(i) for i in range(nseg)),
        counts=numpy.array([b - a for a, b in bounds]),
        first=numpy.array([keys[a] for a, _ in bounds]),
        last=numpy.array([keys[b - 1] for _, b in bounds]),
        cmin=cmin,
        cmax=cmax,
        tlo=numpy.zeros(nseg, "int64"),
        thi=numpy.zeros(nseg, "int64"),
        tknown=numpy.zeros(nseg, bool),
        crc=numpy.zeros(nseg, "int64"),
        nbytes=numpy.zeros(nseg, "int64"),
    )
    ops = ["==", "!=", "<", "<=", ">", ">="]
    for _ in range(200):
        terms = []
        for _ in range(rng.integers(1, 4)):
            name = names[rng.integers(3)]
            if rng.random() < 0.2:
                values = ", ".join(str(v) for v in rng.integers(0, 12, 3).tolist())
                terms.append(f"{name} {'not in' if rng.random() < 0.5 else 'in'} ({values})")
            elif rng.random() < 0.2:
                terms.append(f"{rng.integers(0, 6)} <= {name} < {rng.integers(4, 12)}")
            else:
                terms.append(f"{name} {ops[rng.integers(6)]} {rng.integers(0, 12)}")
        joiner = " and " if rng.random() < 0.5 else " or "
        source = joiner.join(terms)
        if rng.random() < 0.3:
            source = f"not ({source})"
        predicate = PartitionFilter(source)
        exact = predicate({n: keys[:, i] for i, n in enumerate(names)})
        kept = may_match(predicate, names, cmin, cmax)
        boxed = numpy.zeros(len(bounds), dtype=bool)
        boxed[root.select(predicate)] = True
        for s, (a, b) in enumerate(bounds):
            if exact[a:b].any():
                assert kept[s] and boxed[s], (source, s)
    # The boxes are tighter than the min/max: only segments whose key range meets a == 3.
    both = PartitionFilter("a == 3 and b == 4")
    meets = [i for i, (a, b) in enumerate(bounds) if keys[a][0] <= 3 <= keys[b - 1][0]]
    assert set(root.select(both).tolist()) <= set(meets)


def test_encode_keys_matches_encode() -> None:
    date = Date(("time",), resolution="h")
    rng = numpy.random.default_rng(0)
    keys = numpy.stack(
        [
            rng.integers(1990, 2030, 3000),
            rng.integers(1, 13, 3000),
            rng.integers(1, 29, 3000),
            rng.integers(0, 24, 3000),
        ],
        axis=1,
    )
    assert encode_keys(date, keys) == [date.encode(tuple(k)) for k in keys.tolist()]
    seq = Sequence(("cycle_number", "pass_number"), "time")
    keys = rng.integers(0, 2000, size=(1000, 2))
    assert encode_keys(seq, keys) == [seq.encode(tuple(k)) for k in keys.tolist()]


def _segment_objects(spec: Any) -> list[str]:
    return sorted(sync(spec.list_prefix(SEGMENT_DIR)))


def test_inserts_split_segments_and_prune_frees_the_segments_only_old_versions_named(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Appending one partition at a time: the tail segment splits past SEGMENT_MAX, every
    other one is reused; after pruning, the segments left are exactly those the kept
    versions name."""
    from dask_zcollection.catalog import _log, _segments

    monkeypatch.setattr(_log, "prune_grace", lambda: 0.0)  # prune as soon as 4 are newer

    n = _segments.SEGMENT_MAX - 2
    url = build(str(tmp_path / "c"), n, _schema())
    col = zc.open_collection(url, mode="rw")
    spec = col.aio.spec
    log = CatalogLog(spec)
    for i in range(4):
        col.insert(new_partition(n, i, WIDTH))
    roots = {v: sync(log.version_object(v)) for v in sync(log.versions())}
    assert sorted(roots) == [3, 4, 5, 6]  # the 4 newest: older ones pruned
    assert all(isinstance(r, Root) for r in roots.values())
    assert [roots[v].counts.tolist() for v in (4, 5, 6)] == [[2048], [1024, 1025], [1024, 1026]]
    assert roots[6].names[0] == roots[5].names[0]  # the untouched segment is reused
    assert roots[6].names[1] != roots[5].names[1]
    named = {n for r in roots.values() if isinstance(r, Root) for n in r.names}
    assert _segment_objects(spec) == sorted(f"{SEGMENT_DIR}/{n}.zseg" for n in named)
    catalog = col.catalog(refresh=True)
    assert len(catalog) == n + 4
    assert numpy.lexsort(catalog.keys.T[::-1]).tolist() == list(range(n + 4))  # key order
    assert len(numpy.unique(catalog.keys, axis=0)) == n + 4


def test_a_damaged_or_missing_segment_falls_back_and_repair_quarantines_it(
    tmp_path: Path,
) -> None:
    path = tmp_path / "c"
    col = zc.create_collection(
        f"file://{path}",
        schema=_schema(),
        axis="time",
        partitioning=Date(("time",), resolution="D"),
    )
    times = numpy.datetime64("2024-01-01", "ns") + numpy.arange(3) * numpy.timedelta64(1, "D")
    for i, t in enumerate(times):
        col.insert(_data.make_columns(4, WIDTH, start=t, step_s=60.0, seed=i))
    spec = col.aio.spec
    log = CatalogLog(spec)
    newest = sync(log.version_object(max(sync(log.versions()))))
    assert isinstance(newest, Root) and len(newest) == 1
    segment = path / SEGMENT_DIR / f"{newest.names[0]}.zseg"
    data = segment.read_bytes()
    segment.write_bytes(data[:-3] + bytes([data[-3] ^ 1]) + data[-2:])
    reader = zc.open_collection(f"file://{path}")
    with pytest.warns(ZCollectionWarning, match="damaged"):
        assert reader.partitions() == ["year=2024/month=01/day=01", "year=2024/month=01/day=02"]
    with pytest.warns(ZCollectionWarning, match="damaged"):
        assert len(reader.partitions("day == 3")) == 0
    report = col.repair()  # no warning: repair is what sets the damage aside
    assert f"{SEGMENT_DIR}/{newest.names[0]}.zseg" in [a.path for a in report.quarantined]
    assert [a.path for a in report.adopted] == ["year=2024/month=01/day=03"]
    assert not segment.exists()
    assert len(zc.open_collection(f"file://{path}").query()["time"].values) == 12
    # A missing segment: the same fallback.
    newest = sync(log.version_object(max(sync(log.versions()))))
    assert isinstance(newest, Root)
    (path / SEGMENT_DIR / f"{newest.names[0]}.zseg").unlink()
    with pytest.warns(ZCollectionWarning, match="missing"):
        assert len(zc.open_collection(f"file://{path}").partitions()) < 3


def test_a_whole_catalog_version_reads_and_is_upgraded_by_the_next_commit(
    tmp_path: Path,
) -> None:
    """A format-1 version (one object: catalogs written before segments) keeps reading;
    the next commit writes it as segments and a root."""
    path = tmp_path / "c"
    col = zc.create_collection(
        f"file://{path}", schema=_schema(), axis="time", partitioning=Date(("time",), "D")
    )
    spec = col.aio.spec
    log = CatalogLog(spec)
    t = numpy.datetime64("2024-01-01", "ns")
    col.insert(_data.make_columns(4, WIDTH, start=t, step_s=60.0, seed=0))
    catalog = col.catalog(refresh=True)
    # Rewrite it as a format-1 object, as an older library wrote it.
    top = max(sync(log.versions()))
    legacy = encode_catalog(catalog.next_version(catalog.txn))
    sync(spec.put(version_key(top + 1), legacy))
    shutil.rmtree(path / SEGMENT_DIR)
    assert zc.open_collection(f"file://{path}").partitions() == ["year=2024/month=01/day=01"]
    assert sync(log.version_object(top + 1)).__class__ is Catalog
    col.insert(_data.make_columns(4, WIDTH, start=t + numpy.timedelta64(1, "D"), seed=1))
    upgraded = sync(log.version_object(top + 2))
    assert isinstance(upgraded, Root) and upgraded.partitions == 2
    assert len(zc.open_collection(f"file://{path}").query()["time"].values) == 8


def test_commit_reads_only_the_segments_of_its_keys(tmp_path: Path) -> None:
    url = build(str(tmp_path / "c"), 10_000, _schema())
    col = zc.open_collection(url, mode="rw")
    log = CatalogLog(col.aio.spec)
    keys = numpy.array([[2000, 1, 2, 3]])
    state = asyncio.run(log.state(by_keys(keys)))
    assert state.root is not None and len(state.chosen) == 1
    assert state.latest is not None and len(state.latest) <= 2048
    assert state.latest.find(keys).tolist() != [-1]


def test_repair_sweeps_old_segments_no_version_names(tmp_path: Path) -> None:
    """A writer killed between its segments and its root leaves segments no root names:
    repair deletes them once they are old enough that no writer can still publish them."""
    path = tmp_path / "c"
    col = zc.create_collection(
        f"file://{path}", schema=_schema(), axis="time", partitioning=Date(("time",), "D")
    )
    t = numpy.datetime64("2024-01-01", "ns")
    col.insert(_data.make_columns(4, WIDTH, start=t, step_s=60.0, seed=0))
    spec = col.aio.spec
    named = _segment_objects(spec)
    assert len(named) == 1
    old = f"{SEGMENT_DIR}/{'0' * 11}{'ab' * 6}.zseg"  # written in 1970
    fresh = f"{SEGMENT_DIR}/{new_segment_id()}.zseg"
    sync(spec.put(old, b"left by a killed writer"))
    sync(spec.put(fresh, b"a writer about to publish"))
    col.repair()
    assert _segment_objects(spec) == sorted([*named, fresh])
    assert col.partitions() == ["year=2024/month=01/day=01"]


def test_garbage_collection_reads_only_the_segments_of_its_paths(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Collecting retired versions checks the newest catalog in the segments of their
    keys only; a path the catalog still names is kept."""
    from dask_zcollection.catalog._transaction import _retire, collect_garbage

    url = build(str(tmp_path / "c"), 20_000, _schema())
    spec = zc.open_collection(url).aio.spec
    named = "year=2000/month=01/day=02/hour=03"
    retired = f"{named}@1a0000000000000000"
    sync(_retire(spec, "t1", [retired, named]))
    got: list[str] = []
    original = LocalStore.get

    async def get(self: Any, key: str) -> bytes | None:
        got.append(key)
        return await original(self, key)

    monkeypatch.setattr(LocalStore, "get", get)
    assert sync(collect_garbage(spec, older_than=0)) == [retired]
    assert len([k for k in got if k.startswith(SEGMENT_DIR)]) == 1


def test_a_time_range_reads_only_the_segments_it_overlaps(tmp_path: Path) -> None:
    from dask_zcollection.catalog._log import by_filter

    url = build(str(tmp_path / "c"), 10_000, _schema())
    log = CatalogLog(zc.open_collection(url).aio.spec)
    lo = numpy.datetime64("2000-03-01T00:00", "ns")
    hi = numpy.datetime64("2000-03-01T05:00", "ns")
    state = asyncio.run(log.state(by_filter(None, (lo, hi))))
    assert state.root is not None and len(state.chosen) == 1 < len(state.root)
    assert state.latest is not None
    got = state.latest.select(None, (lo, hi))
    full = asyncio.run(log.latest())
    assert full is not None
    assert got.paths == full.select(None, (lo, hi)).paths
    assert len(got) == 6


def test_concurrent_writers_rebase_across_segments(tmp_path: Path) -> None:
    """Writers appending after the last partition (the tail segment) and before the first
    (the first segment) at once: every insert is committed once, the middle segments are
    never rewritten."""
    import concurrent.futures

    n = 5_000
    url = build(str(tmp_path / "c"), n, _schema())
    log = CatalogLog(zc.open_collection(url).aio.spec)
    before = sync(log.version_object(2))
    assert isinstance(before, Root) and len(before) >= 4

    def writer(hours: list[int]) -> None:
        col = zc.open_collection(url, mode="rw")
        for h in hours:
            start = numpy.datetime64("2000-01-01T00", "h") + numpy.timedelta64(h, "h")
            data = _data.make_columns(3, WIDTH, start=start.astype("datetime64[ns]"), seed=abs(h))
            col.insert(data, retries=20)

    plans = [[n + i for i in range(0, 6, 2)], [n + i for i in range(1, 6, 2)]]
    plans += [[-1 - i for i in range(0, 6, 2)], [-1 - i for i in range(1, 6, 2)]]
    with concurrent.futures.ThreadPoolExecutor(4) as pool:
        list(pool.map(writer, plans))
    catalog = zc.open_collection(url).catalog()
    assert len(catalog) == n + 12
    assert int((catalog.rows == 3).sum()) == 12
    after = sync(log.version_object(max(sync(log.versions()))))
    assert isinstance(after, Root)
    assert set(before.names[1:-1]) <= set(after.names)  # the middle ones are reused


def test_survey_fetches_each_segment_once_and_reports_every_damaged_one(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """repair's read of every version: the versions share their segments, each is fetched
    once; a damaged shared segment damages every version naming it and is reported once."""
    n = 5_000
    url = build(str(tmp_path / "c"), n, _schema())
    col = zc.open_collection(url, mode="rw")
    for i in range(3):
        col.insert(new_partition(n, i, WIDTH))
    log = CatalogLog(col.aio.spec)
    versions = sync(log.versions())
    assert versions == [1, 2, 3, 4, 5]
    roots = [sync(log.version_object(v)) for v in versions[1:]]
    named = {n for r in roots if isinstance(r, Root) for n in r.names}
    got: list[str] = []
    original = LocalStore.get

    async def get(self: Any, key: str) -> bytes | None:
        got.append(key)
        return await original(self, key)

    monkeypatch.setattr(LocalStore, "get", get)
    survey = sync(log.survey())
    fetched = [k for k in got if k.startswith(SEGMENT_DIR)]
    assert sorted(fetched) == sorted(f"{SEGMENT_DIR}/{n}.zseg" for n in named)  # once each
    assert [c.version for c in survey.intact] == versions
    assert len(survey.intact[-1]) == n + 3 and len(survey.intact[-2]) == 0  # headers only
    assert survey.damaged == () and survey.damaged_segments == ()
    # The second segment is shared by every root; a damaged copy damages all of them.
    shared = roots[0].names[1]
    assert all(shared in r.names for r in roots if isinstance(r, Root))
    (tmp_path / "c" / SEGMENT_DIR / f"{shared}.zseg").write_bytes(b"damaged")
    survey = sync(log.survey())
    assert [v for v, _ in survey.damaged] == versions[1:]
    assert [c.version for c in survey.intact] == [1]
    assert [k for k, _ in survey.damaged_segments] == [f"{SEGMENT_DIR}/{shared}.zseg"]
