"""Hostile timing against readers in flight: a reader slower than the retention."""

from __future__ import annotations

import os
from typing import Any

import dask.config
import numpy
import pytest

import dask_zcollection as zc
from dask_zcollection.errors import PartitionNotFoundError

TIMES = numpy.arange("2024-01-01", "2024-01-11", dtype="datetime64[D]").astype("M8[ns]")


def test_a_reader_slower_than_the_retention_never_reads_other_data(
    tmp_path: Any, factory: Any
) -> None:
    url = f"file://{tmp_path}/col"
    with dask.config.set({"zcollection.retention": 3600}):
        col = factory.create(url, nested=False)
        first = factory.data(TIMES, nested=False, seed=1)
        col.insert(first)
        lazy = zc.read_collection(url)  # planned on version A, at the canonical path
        col.insert(factory.data(TIMES, nested=False, seed=2), merge="replace")  # B, aside
        col.vacuum(older_than=0)  # A is collected: the reader is now "slower than the retention"
        third = factory.data(TIMES, nested=False, seed=3)
        col.insert(third, merge="replace")  # C claims the freed canonical path again
        assert col.catalog(refresh=True).paths == ("year=2024/month=01",)
        try:
            got = lazy.compute()
        except PartitionNotFoundError:
            return  # the documented outcome
        # Never other data: the rows of the version the reader planned with, or nothing.
        numpy.testing.assert_array_equal(got["quality"].values, first["quality"])
        assert not numpy.array_equal(got["quality"].values, third["quality"])


def test_readers_racing_compaction_and_pruning_see_only_committed_states(
    tmp_path: Any, factory: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A reader thread loops over whole and filtered reads while a writer inserts and
    drops random months: segments split, merge (small ones) and old versions and their
    segments are pruned (lease timeout 0.2 s, so prune's grace is 0.4 s). Every read must
    be a state some commit published, each partition whole (held)."""
    import threading

    from dask_zcollection.catalog import _segments

    monkeypatch.setattr(_segments, "SEGMENT_MAX", 8)
    monkeypatch.setattr(_segments, "SEGMENT_TARGET", 4)
    monkeypatch.setattr(_segments, "SEGMENT_MIN", 3)
    rng = numpy.random.default_rng(5)
    url = f"file://{tmp_path}/col"
    months = 30

    def rows(month: int, gen: int) -> dict[str, numpy.ndarray]:
        day = numpy.datetime64(f"{2020 + month // 12}-{month % 12 + 1:02d}-03", "D")
        times = (day + numpy.array([0, 6, 12])).astype("M8[ns]")
        data = factory.data(times, nested=False, immutable=False)
        data["quality"] = numpy.full(3, gen, dtype="uint8")
        return data

    states: list[frozenset[tuple[int, int]]] = []
    present: dict[int, int] = {}
    failures: list[Any] = []
    reads: list[int] = []
    stop = threading.Event()
    lock = threading.Lock()

    def reader() -> None:
        local = numpy.random.default_rng(6)
        while not stop.is_set():
            year = None if local.random() < 0.5 else int(local.integers(0, 3))
            filters = None if year is None else f"year == {2020 + year}"
            try:
                ds = zc.read_collection(url, filters=filters).compute()
            except Exception as err:
                failures.append(("error", repr(err)))
                continue
            seen = set()
            if ds is not None:
                month = ds["time"].values.astype("M8[M]").astype("int64") - 50 * 12
                for m in numpy.unique(month):
                    gens = numpy.unique(ds["quality"].values[month == m])
                    if len(gens) != 1 or (month == m).sum() != 3:
                        failures.append(("torn partition", int(m), gens.tolist()))
                    seen.add((int(m), int(gens[0])))
            with lock:
                candidates = list(states)
            if not any(
                frozenset(s for s in state if year is None or s[0] // 12 == year) == seen
                for state in candidates
            ):
                failures.append(("never committed", filters, sorted(seen)))
            reads.append(len(seen))

    with dask.config.set({"zcollection.lease-timeout": 0.2, "zcollection.retention": 3600}):
        col = factory.create(url, nested=False, immutable=False)
        for m in range(0, months, 2):
            present[m] = m + 1
            col.insert(rows(m, m + 1))
        states.append(frozenset(present.items()))
        thread = threading.Thread(target=reader)
        thread.start()
        try:
            for step in range(40):
                m = int(rng.integers(0, months))
                if rng.random() < 0.5:
                    present[m] = 100 + step
                else:
                    present.pop(m, None)
                with lock:  # before the commit: a reader may see it as soon as it lands
                    states.append(frozenset(present.items()))
                if m in present:
                    col.insert(rows(m, 100 + step), merge="replace")
                else:
                    col.drop_partitions(f"year == {2020 + m // 12} and month == {m % 12 + 1}")
        finally:
            stop.set()
            thread.join()
        versions = sorted(os.listdir(tmp_path / "col" / "_catalog"))
    assert failures == []
    assert len(reads) >= 5 and max(reads) > 0
    assert sum(v.endswith(".zcat") for v in versions) < 20  # old versions were pruned
