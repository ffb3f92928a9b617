"""A writer that stalls while others commit past the versions prune keeps loses no commit.

Prune deletes the catalog versions older than the ``KEEP_VERSIONS`` newest. A
writer that read version ``L`` and stalled while ``KEEP_VERSIONS + 1`` other
commits landed found ``v(L+1)`` free again: its put-if-absent succeeded below
the newest version, where nobody looks, and its insert returned success with
its rows lost. The writer lists the versions right before its put (a stall
before that listing), prune spares a version for ``prune_grace()`` after its
successor's commit (a stall between the listing and the put's landing), and a
writer slower than ``put_window()`` from its listing to its put plans again.
"""

from __future__ import annotations

import asyncio
from typing import Any

import numpy
import pytest

import dask_zcollection as zc
from dask_zcollection._sync import sync
from dask_zcollection.catalog import CatalogLog, _log
from dask_zcollection.catalog._log import KEEP_VERSIONS


def _check(url: str, factory: Any, mine: numpy.ndarray, others: int) -> list[int]:
    """The rows of every writer are committed; the catalog versions present."""
    stored = zc.open_collection(url).query()
    assert stored is not None
    times = stored["time"].values
    assert numpy.isin(mine, times).all(), "the stalled writer's rows were lost"
    assert len(times) == 2 + 2 * others + len(mine)
    return sync(CatalogLog(zc.open_collection(url).aio.spec).versions())


async def _commit_others(others: Any, factory: Any, count: int, first: int = 2) -> None:
    for month in range(first, first + count):
        day = f"2024-{month:02d}-01"
        await others.aio.insert(factory.data(factory.times(day, day), seed=month))


def test_a_stalled_writer_never_takes_a_pruned_version_number(
    store_url: str, factory: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A stall between the read of the newest version and the listing before the put
    (prune without grace: the listing alone catches it)."""
    monkeypatch.setattr(_log, "prune_grace", lambda: 0.0)
    col = factory.create(store_url)
    col.insert(factory.data(factory.times("2024-01-01T00", "2024-01-01T05"), seed=1))
    others = zc.open_collection(store_url, mode="rw")
    stalled = {"done": False}
    original = CatalogLog.stage

    async def stage(self: CatalogLog, *args: Any, **kwargs: Any) -> Any:
        # Between the writer's read of the newest version and its put of the next.
        if not stalled["done"]:
            stalled["done"] = True
            # Meanwhile, other writers commit past everything prune keeps.
            await _commit_others(others, factory, KEEP_VERSIONS + 1)
        return await original(self, *args, **kwargs)

    monkeypatch.setattr(CatalogLog, "stage", stage)
    mine = factory.times("2024-12-24T00", "2024-12-24T03")
    col.insert(factory.data(mine, seed=99))
    assert stalled["done"]
    monkeypatch.undo()
    versions = _check(store_url, factory, mine, KEEP_VERSIONS + 1)
    assert len(versions) <= KEEP_VERSIONS + 1


def test_a_put_landing_after_five_commits_and_a_prune_is_refused(
    protocol_url: str, factory: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The writer's put of ``v(L+1)`` is held in flight, after its listing, while other
    writers commit 5 times and prune: the number is still taken (prune's grace), the put
    fails, the writer plans again on the newest version and its rows are committed."""
    col = factory.create(protocol_url)
    col.insert(factory.data(factory.times("2024-01-01T00", "2024-01-01T05"), seed=1))
    others = zc.open_collection(protocol_url, mode="rw")
    spec_type = type(col.aio.spec)
    original = spec_type.put_if_absent
    puts: list[tuple[str, bool]] = []
    stalled = {"done": False}

    async def put_if_absent(self: Any, key: str, data: bytes, **kwargs: Any) -> bool:
        if key.startswith("_catalog/v") and not stalled["done"]:
            stalled["done"] = True  # the writer's first put, sent after its listing
            await _commit_others(others, factory, KEEP_VERSIONS + 1)
            versions = await CatalogLog(self).versions()
            assert max(versions) == _version(key) + KEEP_VERSIONS  # past what prune keeps
            won = await original(self, key, data, **kwargs)
            puts.append((key, won))
            return won
        return await original(self, key, data, **kwargs)

    monkeypatch.setattr(spec_type, "put_if_absent", put_if_absent)
    mine = factory.times("2024-12-24T00", "2024-12-24T03")
    col.insert(factory.data(mine, seed=99))
    monkeypatch.undo()
    assert len(puts) == 1 and puts[0][1] is False, puts  # the number was still taken
    versions = _check(protocol_url, factory, mine, KEEP_VERSIONS + 1)
    # Within the grace nothing older than the 4 newest was deleted.
    assert versions == list(range(1, 2 + 2 + KEEP_VERSIONS + 1))


def test_a_writer_slower_than_its_put_window_plans_again(
    protocol_url: str, factory: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Between the writer's listing and its put, other writers commit 5 times, their
    successors' commits age past prune's grace and prune deletes ``v(L+1)``: the writer,
    past its put window, does not put and plans again."""
    grace, window = 0.3, 0.05
    monkeypatch.setattr(_log, "prune_grace", lambda: grace)
    monkeypatch.setattr(_log, "put_window", lambda: window)
    col = factory.create(protocol_url)
    col.insert(factory.data(factory.times("2024-01-01T00", "2024-01-01T05"), seed=1))
    others = zc.open_collection(protocol_url, mode="rw")
    state = {"committing": False, "done": False, "after": False}
    original_commit = CatalogLog.commit
    original_versions = CatalogLog.versions
    puts: list[str] = []
    original_put = type(col.aio.spec).put_if_absent

    async def commit(self: CatalogLog, *args: Any, **kwargs: Any) -> bool:
        state["committing"] = not state["done"]
        try:
            return await original_commit(self, *args, **kwargs)
        finally:
            state["committing"] = False

    async def versions(self: CatalogLog) -> list[int]:
        listed = await original_versions(self)
        if state["committing"] and not state["done"]:
            state["done"] = True  # the writer's listing before its first put
            state["committing"] = False
            await _commit_others(others, factory, KEEP_VERSIONS + 1)
            await asyncio.sleep(grace + 0.1)
            await _commit_others(others, factory, 1, first=2 + KEEP_VERSIONS + 1)  # prunes
            present = await original_versions(self)
            assert listed[-1] + 1 not in present  # the writer's number is free again
            state["after"] = True  # from now on, only the writer puts
        return listed

    async def put_if_absent(self: Any, key: str, data: bytes, **kwargs: Any) -> bool:
        if key.startswith("_catalog/v") and state["after"]:
            puts.append(key)
        return await original_put(self, key, data, **kwargs)

    monkeypatch.setattr(CatalogLog, "commit", commit)
    monkeypatch.setattr(CatalogLog, "versions", versions)
    monkeypatch.setattr(type(col.aio.spec), "put_if_absent", put_if_absent)
    mine = factory.times("2024-12-24T00", "2024-12-24T03")
    col.insert(factory.data(mine, seed=99))
    assert state["done"]
    monkeypatch.undo()
    assert _version(puts[0]) == 2 + 2 + KEEP_VERSIONS + 1  # never the freed number
    _check(protocol_url, factory, mine, KEEP_VERSIONS + 2)


def _version(key: str) -> int:
    return int(key.rpartition("/v")[2].removesuffix(".zcat"))


@pytest.mark.icechunk
def test_on_icechunk_prune_needs_no_grace(tmp_path: Any, factory: Any) -> None:
    """An Icechunk commit fails when another landed since its session began: no put lands
    late, so prune keeps only the 4 newest versions, at once."""
    url = f"icechunk://{tmp_path}/repo"
    col = factory.create(url)
    for month in range(1, 8):
        day = f"2024-{month:02d}-01"
        col.insert(factory.data(factory.times(day), seed=month))
    versions = sync(CatalogLog(zc.open_collection(url).aio.spec).versions())
    assert versions == [5, 6, 7, 8]
