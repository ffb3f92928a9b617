"""Small catalog segments are merged by the commits that touch them.

Segments split as they grow; drops shrink them. A commit reads, beside the
segments its keys fall in, a neighbour when one of the two is small, and
rewrites them as one. The segment sizes are scaled down here (8 partitions at
most, 4 after a split, small below 3) so that a few dozen monthly partitions
make a dozen segments.
"""

from __future__ import annotations

import concurrent.futures
from pathlib import Path
from typing import Any

import numpy
import pytest

import dask_zcollection as zc
from dask_zcollection._sync import sync
from dask_zcollection.catalog import CatalogLog, _segments
from dask_zcollection.catalog._log import compacting
from dask_zcollection.catalog._segments import SEGMENT_DIR, Root

MONTHS = 48


@pytest.fixture
def small_segments(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_segments, "SEGMENT_MAX", 8)
    monkeypatch.setattr(_segments, "SEGMENT_TARGET", 4)
    monkeypatch.setattr(_segments, "SEGMENT_MIN", 3)


@pytest.fixture(params=["file", "memory"])
def url(request: pytest.FixtureRequest, tmp_path: Path) -> Any:
    if request.param == "file":
        return f"file://{tmp_path}/col"
    return request.getfixturevalue("memory_url")


def _month(i: int) -> str:
    return f"{2020 + i // 12}-{i % 12 + 1:02d}-15"


def _newest(url: str) -> Root:
    log = CatalogLog(zc.open_collection(url).aio.spec)
    root = sync(log.version_object(max(sync(log.versions()))))
    assert isinstance(root, Root)
    return root


def _drop_all_but_first_of_each_segment(col: zc.Collection) -> list[int]:
    """One drop per original segment (4 months): its last 3 months; the months kept."""
    kept = []
    for seg in range(MONTHS // 4):
        months = [4 * seg + j for j in range(4)]
        kept.append(months[0])
        year = 2020 + months[1] // 12
        dropped = ", ".join(str(m % 12 + 1) for m in months[1:])
        col.drop_partitions(f"year == {year} and month in ({dropped})")
    return kept


def test_drops_merge_small_segments_and_every_partition_reads(
    url: str, factory: Any, small_segments: None
) -> None:
    col = factory.create(url)
    times = factory.times(*(_month(i) for i in range(MONTHS)))
    data = factory.data(times, seed=3)
    col.insert(data)
    first = _newest(url)
    assert first.counts.tolist() == [4] * 12
    kept = _drop_all_but_first_of_each_segment(col)
    root = _newest(url)
    # Without merging: 12 segments of 1 partition each.
    assert root.partitions == len(kept)
    assert len(root) <= 4, root.counts.tolist()
    assert (root.counts[:-1] >= 3).all(), root.counts.tolist()
    stored = zc.open_collection(url).query()
    assert stored is not None
    expected = factory.sorted_rows({k: v for k, v in data.items()})
    rows = numpy.array(kept)
    factory.assert_dataset(
        stored, {k: (v[rows] if k != "x_ac" else v) for k, v in expected.items()}
    )
    # A reader of an older version still reads it whole: its segments are kept.
    log = CatalogLog(zc.open_collection(url).aio.spec)
    older = sync(log.read(first.version))
    assert older is not None and len(older) == MONTHS
    named = {n for v in sync(log.versions()) for n in _names(log, v)}
    listed = {k.rpartition("/")[2].removesuffix(".zseg") for k in _segment_keys(log)}
    assert named <= listed


def _names(log: CatalogLog, version: int) -> tuple[str, ...]:
    root = sync(log.version_object(version))
    return root.names if isinstance(root, Root) else ()


def _segment_keys(log: CatalogLog) -> list[str]:
    return sync(log.spec.list_prefix(SEGMENT_DIR))


def test_concurrent_writers_into_merged_segments_lose_nothing(
    url: str, factory: Any, small_segments: None
) -> None:
    """Writers inserting at once into the months between those left by the drops: each
    commit may merge segments the others rewrite too; every row is committed once."""
    col = factory.create(url)
    col.insert(factory.data(factory.times(*(_month(i) for i in range(MONTHS))), seed=3))
    kept = _drop_all_but_first_of_each_segment(col)
    gaps = [m for m in range(MONTHS) if m not in kept]

    def writer(months: list[int]) -> None:
        mine = zc.open_collection(url, mode="rw")
        for m in months:
            mine.insert(factory.data(factory.times(_month(m)), seed=m), retries=20)

    plans = [gaps[i::3] for i in range(3)]
    with concurrent.futures.ThreadPoolExecutor(3) as pool:
        list(pool.map(writer, plans))
    catalog = zc.open_collection(url).catalog()
    assert len(catalog) == MONTHS
    stored = zc.open_collection(url).query()
    assert stored is not None
    assert len(stored["time"].values) == MONTHS
    for m in gaps:  # each writer's row, with its own values
        got = stored["quality"].values[m]
        assert got == factory.data(factory.times(_month(m)), seed=m)["quality"][0]


def test_compacting_reads_at_most_two_more_segments_per_run(small_segments: None) -> None:
    """The neighbours of a run are added only when one side is small and both fit."""
    counts = [4, 1, 4, 4, 2, 8, 1]
    root = _root(counts)

    def pick(idx: list[int]) -> list[int]:
        chooser = compacting(lambda r: idx)
        assert chooser is not None
        return list(chooser(root))

    assert pick([]) == []
    assert pick([0]) == [0, 1]  # the small neighbour after
    assert pick([2]) == [1, 2]  # the small neighbour before; the one after is not small
    assert pick([3]) == [3, 4]
    assert pick([4]) == [3, 4]  # small itself: one neighbour, the other would not fit
    assert pick([5]) == [5]  # 8 + 1 or 8 + 2 do not fit in one segment
    assert pick([2, 3]) == [2, 3]  # a run of 8: with the small one before, 9 would not fit
    assert pick([0, 1]) == [0, 1]  # a run of 5 and a neighbour of 4: neither is small
    assert pick([6]) == [6]  # small, but 1 + 8 does not fit
    assert compacting(None) is None


def _root(counts: list[int]) -> Root:
    from dask_zcollection.catalog import Catalog

    n = len(counts)
    keys = numpy.arange(n, dtype="int64").reshape(n, 1)
    return Root(
        head=Catalog.empty(("k",), "int64"),
        names=tuple(str(i) for i in range(n)),
        counts=numpy.array(counts, dtype="int64"),
        first=keys,
        last=keys,
        cmin=keys,
        cmax=keys,
        tlo=numpy.zeros(n, "int64"),
        thi=numpy.zeros(n, "int64"),
        tknown=numpy.zeros(n, bool),
        crc=numpy.zeros(n, "int64"),
        nbytes=numpy.zeros(n, "int64"),
    )


def test_a_damaged_segment_refuses_writes_until_repair_then_prune_keeps_every_month(
    memory_url: str, factory: Any, small_segments: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A writer never builds on the version below a damaged one: that commit would drop
    the months the damaged version committed (before, it did, and wrote every segment
    afresh). Repair adopts them from the tree and publishes a version past the damaged
    one; prune then deletes the old versions and the segments only they name: every
    month stays readable."""
    from dask_zcollection.catalog import _log
    from dask_zcollection.catalog._segments import segment_key
    from dask_zcollection.errors import CorruptedDataError, ZCollectionWarning

    monkeypatch.setattr(_log, "prune_grace", lambda: 0.0)
    monkeypatch.setattr(_segments, "SEGMENT_MIN", 0)  # no merging: fixed segments
    col = factory.create(memory_url)
    col.insert(factory.data(factory.times(*(_month(i) for i in range(12))), seed=3))
    col.insert(factory.data(factory.times(_month(12)), seed=12))
    base = _newest(memory_url)
    assert base.counts.tolist() == [4, 4, 5]
    # The next version rewrites the first and the last segment (a month before all and
    # one after all); its last segment is then damaged.
    col.insert(factory.data(factory.times(_month(-1), _month(13)), seed=40))
    damaged = _newest(memory_url)
    assert damaged.names[1] == base.names[1] and damaged.names[0] != base.names[0]
    spec = col.aio.spec
    sync(spec.put(segment_key(damaged.names[-1]), b"damaged"))
    with pytest.raises(CorruptedDataError, match=r"Run repair\(\)"):
        col.insert(factory.data(factory.times(_month(14)), seed=14))
    assert _newest(memory_url).version == damaged.version  # nothing published
    with pytest.warns(ZCollectionWarning, match="damaged"):
        fallback = zc.open_collection(memory_url).query()
    assert fallback is not None and len(fallback["time"].values) == 13
    report = col.repair()
    assert sorted(a.path for a in report.adopted) == ["year=2019/month=12", "year=2021/month=02"]
    assert segment_key(damaged.names[-1]) in [a.path for a in report.quarantined]
    assert _newest(memory_url).version == damaged.version + 1  # past the damaged one
    for m in range(14, 20):  # prune deletes the base, the damaged version and their segments
        col.insert(factory.data(factory.times(_month(m)), seed=m))
    log = CatalogLog(spec)
    assert base.version not in sync(log.versions())
    assert damaged.version not in sync(log.versions())
    stored = zc.open_collection(memory_url).query()
    assert stored is not None  # every month: none lost with the damaged version
    expected = numpy.array([_month(i) for i in range(-1, 20)], dtype="datetime64[ns]")
    assert (stored["time"].values == expected).all()
    first = factory.data(factory.times(*(_month(i) for i in range(12))), seed=3)
    assert stored["quality"].values[1] == first["quality"][0]


@pytest.mark.parametrize("seed", range(3))
def test_random_inserts_and_drops_keep_the_segments_sound(
    memory_url: str, factory: Any, small_segments: None, seed: int
) -> None:
    """Random inserts and drops of months (segments split, shrink and merge): the catalog
    lists exactly the months of a model, and every segment holds the keys from its first
    key up to the next segment's, in order."""
    rng = numpy.random.default_rng(seed)
    col = factory.create(memory_url)
    model: set[int] = set()
    log = CatalogLog(col.aio.spec)
    for _ in range(25):
        if model and rng.random() < 0.4:
            doomed = sorted(rng.choice(sorted(model), size=min(len(model), 5), replace=False))
            for m in doomed:
                year, month = 2020 + int(m) // 12, int(m) % 12 + 1
                col.drop_partitions(f"year == {year} and month == {month}")
            model -= {int(m) for m in doomed}
        else:
            months = sorted({int(m) for m in rng.integers(0, 60, size=int(rng.integers(1, 12)))})
            col.insert(factory.data(factory.times(*(_month(m) for m in months)), seed=len(model)))
            model |= set(months)
        root = _newest(memory_url)
        catalog = sync(log.read(root.version))
        assert catalog is not None
        listed = sorted((k[0] - 2020) * 12 + k[1] - 1 for k in catalog.keys.tolist())
        assert listed == sorted(model)
        assert (root.counts > 0).all() and root.partitions == len(model)
        assert (root.counts <= _segments.SEGMENT_MAX).all()
        bounds = [tuple(r) for r in root.first.tolist()]
        assert bounds == sorted(set(bounds))  # first keys strictly increasing
        start = 0
        for i, count in enumerate(root.counts.tolist()):
            keys = [tuple(k) for k in catalog.keys[start : start + count].tolist()]
            assert keys[0] == bounds[i] and keys[-1] == tuple(root.last[i].tolist())
            if i + 1 < len(bounds):
                assert keys[-1] < bounds[i + 1]
            start += count
