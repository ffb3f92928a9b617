"""A writer that stalls while others commit past the versions prune keeps loses no commit.

Prune deletes the catalog versions older than the ``KEEP_VERSIONS`` newest. A
writer that read version ``L`` and stalled while ``KEEP_VERSIONS + 1`` other
commits landed found ``v(L+1)`` free again: its put-if-absent succeeded below
the newest version, where nobody looks, and its insert returned success with
its rows lost.
"""

from __future__ import annotations

from typing import Any

import numpy
import pytest

import dask_zcollection as zc
from dask_zcollection._sync import sync
from dask_zcollection.catalog import CatalogLog
from dask_zcollection.catalog._log import KEEP_VERSIONS


def test_a_stalled_writer_never_takes_a_pruned_version_number(
    store_url: str, factory: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
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
            for month in range(2, 3 + KEEP_VERSIONS):
                day = f"2024-{month:02d}-01"
                await others.aio.insert(factory.data(factory.times(day, day), seed=month))
        return await original(self, *args, **kwargs)

    monkeypatch.setattr(CatalogLog, "stage", stage)
    mine = factory.times("2024-12-24T00", "2024-12-24T03")
    col.insert(factory.data(mine, seed=99))
    assert stalled["done"]
    monkeypatch.undo()
    stored = zc.open_collection(store_url).query()
    assert stored is not None
    times = stored["time"].values
    assert numpy.isin(mine, times).all(), "the stalled writer's rows were lost"
    assert len(times) == 2 + 2 * (1 + KEEP_VERSIONS) + len(mine)
    versions = sync(CatalogLog(zc.open_collection(store_url).aio.spec).versions())
    assert len(versions) <= KEEP_VERSIONS + 1
