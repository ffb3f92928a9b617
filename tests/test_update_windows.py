"""The windows of ``update(index=)`` and ``update(depth=)``: input read at planning, re-checked.

An index lookup and the halos of a depth update are taken when the update is
planned; the write task re-checks the versions they came from, so a partition
committed in between is a lost race (re-planned, or refused) and never old
rows written over new ones.
"""

from __future__ import annotations

from typing import Any

import numpy
import pytest
from indexing.test_indexer import make, six_hours
from test_overlap import collection, moving_sum, reference

import dask_zcollection as zc
import dask_zcollection._engine as engine
import dask_zcollection._overlap as overlap
from dask_zcollection.errors import ConflictError, StaleIndexError


def halve(ds: zc.Dataset) -> dict[str, Any]:
    return {"quality": ds["quality"].values // 2}  # type: ignore[union-attr]


def negate(ds: zc.Dataset) -> dict[str, Any]:
    return {"v": -ds["v"].values}  # type: ignore[union-attr]


@pytest.mark.parametrize("stored", [True, False])
def test_an_index_update_refuses_a_partition_rewritten_after_the_lookup(
    memory_url: str, factory: Any, monkeypatch: pytest.MonkeyPatch, stored: bool
) -> None:
    col, data = make(memory_url, factory)
    if stored:
        col.create_index("six", six_hours, variables=["time"])
        index: Any = "six"
    else:
        from dask_zcollection.indexing import Indexer

        index = Indexer.build(zc.read_collection(memory_url), six_hours, variables=["time"])
    other = zc.open_collection(memory_url, mode="rw")
    lookup = engine._index_rows
    raced: list[bool] = []

    def racing_lookup(*args: Any) -> Any:
        found = lookup(*args)
        if not raced:  # another writer rewrites March (same rows) right after the lookup
            raced.append(True)
            other.update(halve, filters="month == 3", variables=["quality"])
        return found

    monkeypatch.setattr(engine, "_index_rows", racing_lookup)
    with pytest.raises(StaleIndexError, match="month=03"):
        col.update(halve, index=index, parity=1, filters="month == 3", variables=["quality"])
    # Only the other writer's rewrite landed (the old lookup's rows were never written).
    expected = data["quality"].copy()
    march = data["time"].astype("datetime64[M]") == numpy.datetime64("2024-03")
    expected[march] //= 2
    out = zc.read_collection(memory_url).compute()
    numpy.testing.assert_array_equal(out["quality"].values, expected)


def test_a_lazy_depth_update_refuses_a_neighbour_committed_since(memory_url: str) -> None:
    values = collection(memory_url, [5, 4, 6])
    col = zc.open_collection(memory_url, mode="rw")
    graph = col.update(
        lambda ds: {"v": moving_sum(ds, 2)["v"].values},  # type: ignore[union-attr]
        depth=2,
        filters="month == 2",
        variables=["v"],
        compute=False,
    )
    col.update(negate, filters="month == 3", variables=["v"])  # the neighbour, same rows
    with pytest.raises(ConflictError, match=r"month=03.*changed since the update was planned"):
        graph.compute()
    expected = values.copy()
    expected[9:] = -expected[9:]
    numpy.testing.assert_array_equal(zc.read_collection(memory_url).compute()["v"].values, expected)


def test_a_depth_update_re_reads_the_halo_of_a_neighbour_committed_since(
    memory_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    values = collection(memory_url, [5, 4, 6])
    col = zc.open_collection(memory_url, mode="rw")
    other = zc.open_collection(memory_url, mode="rw")
    read = overlap.read_halos
    raced: list[bool] = []

    async def racing_read(*args: Any) -> Any:
        halos = await read(*args)
        if not raced:  # January is rewritten once the halos are read
            raced.append(True)
            await other.aio.update(negate, filters="month == 1", variables=["v"])
        return halos

    monkeypatch.setattr(overlap, "read_halos", racing_read)
    col.update(
        lambda ds: {"v": moving_sum(ds, 2)["v"].values},  # type: ignore[union-attr]
        depth=2,
        filters="month == 2",
        variables=["v"],
    )
    now = values.copy()
    now[:5] = -now[:5]
    expected = now.copy()
    expected[5:9] = reference(now, 2, None)[5:9]  # over January's new values
    assert len(raced) == 1
    numpy.testing.assert_array_equal(zc.read_collection(memory_url).compute()["v"].values, expected)


def test_a_neighbour_committed_while_the_task_runs_fails_the_commit(tmp_path: Any) -> None:
    """The task checked its halo's neighbours before ``fn`` ran; January is committed (by
    another process) while ``fn`` runs: the commit re-checks the reads and the update
    plans again over January's new rows."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    url = f"file://{tmp_path}/col"
    values = collection(url, [5, 4, 6])
    col = zc.open_collection(url, mode="rw")
    root = str(Path(__file__).parents[1])
    script = (
        "import dask_zcollection as zc\n"
        f"zc.open_collection({url!r}, mode='rw').update(\n"
        "    lambda ds: {'v': -ds['v'].values}, filters='month == 1', variables=['v'])\n"
    )
    calls: list[int] = []

    def racing(ds: zc.Dataset) -> dict[str, Any]:
        calls.append(1)
        if len(calls) == 1:
            env = {**os.environ, "PYTHONPATH": root}
            subprocess.run([sys.executable, "-c", script], check=True, env=env, timeout=120)
        return {"v": moving_sum(ds, 2)["v"].values}  # type: ignore[union-attr]

    col.update(racing, depth=2, filters="month == 2", variables=["v"])
    assert len(calls) == 2
    now = values.copy()
    now[:5] = -now[:5]
    expected = now.copy()
    expected[5:9] = reference(now, 2, None)[5:9]
    numpy.testing.assert_array_equal(zc.read_collection(url).compute()["v"].values, expected)


def cool_quality(ds: zc.Dataset) -> dict[str, Any]:
    """Module level: ships to the workers by reference."""
    return {"quality": ds["quality"].values // 2}  # type: ignore[union-attr]


def moving_sum_2(ds: zc.Dataset) -> dict[str, Any]:
    """Module level: ships to the workers by reference."""
    return {"v": moving_sum(ds, 2)["v"].values}  # type: ignore[union-attr]


def test_index_and_depth_updates_on_worker_processes(tmp_path: Any) -> None:
    """The tasks (their version checks, the index entries they write) run on the workers."""
    distributed = pytest.importorskip("distributed")
    from conftest import Factory
    from indexing.test_maintained import runs_of_hot

    url = f"file://{tmp_path}/col"
    col, data = make(url, Factory())
    col.create_index("hot", runs_of_hot, variables=["quality"])
    over = f"file://{tmp_path}/overlap"
    values = collection(over, [5, 4, 6])
    with (
        distributed.LocalCluster(
            processes=True, n_workers=2, threads_per_worker=1, dashboard_address=None
        ) as cluster,
        distributed.Client(cluster),
    ):
        written = col.update(cool_quality, index="hot", hot=1, variables=["quality"])
        zc.open_collection(over, mode="rw").update(
            moving_sum_2, depth=2, filters="month == 2", variables=["v"]
        )
    assert len(written) == 3
    quality = numpy.where(data["quality"] > 100, data["quality"] // 2, data["quality"])
    numpy.testing.assert_array_equal(zc.read_collection(url).compute()["quality"].values, quality)
    got = zc.read_collection(url).filter(index="hot", hot=1).compute()  # fresh: rebuilt there
    numpy.testing.assert_array_equal(got["quality"].values, quality[quality > 100])
    expected = values.copy()
    expected[5:9] = reference(values, 2, None)[5:9]
    numpy.testing.assert_array_equal(zc.read_collection(over).compute()["v"].values, expected)
