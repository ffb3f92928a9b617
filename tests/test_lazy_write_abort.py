"""A lazy (``compute=False``) write that fails releases its locks and lease at once.

A scheduler does not run the commit task of a graph whose task raised: the
failing task aborts its transaction itself, and so does a failing commit.
The next write of the same partitions then succeeds without waiting for
recovery (the lease timeout).
"""

from __future__ import annotations

import time
from typing import Any

import dask
import numpy
import pytest
from conftest import Factory, unique_memory_name

import dask_zcollection as zc
from dask_zcollection.errors import ConflictError, InvalidInputError

MONTH = ["2024-03-01", "2024-03-02", "2024-03-03"]


def _leftovers(coll: zc.Collection) -> list[str]:
    """The locks and leases left in the store (none once every writer is over)."""
    from dask_zcollection._sync import sync

    spec = coll.aio.spec
    keys = [k for d in ("_locks", "_transactions") for k in sync(spec.list_prefix(d))]
    return sorted(k for k in keys if k.endswith((".lock", ".json", ".alive")))


def _settled(coll: zc.Collection) -> list[str]:
    """:func:`_leftovers` once the abort a failed task started beside it has ended (<= 5 s)."""
    deadline = time.monotonic() + 5.0
    while (left := _leftovers(coll)) and time.monotonic() < deadline:
        time.sleep(0.02)
    return left


def _check(coll: zc.Collection, expected: dict[str, Any]) -> None:
    ds = coll.query()
    assert ds is not None
    for name in ("time", "ssh", "quality"):
        numpy.testing.assert_array_equal(ds[name].values, expected[name])


@pytest.fixture(params=["file", "memory"])
def url(request: pytest.FixtureRequest, tmp_path: Any) -> str:
    if request.param == "file":
        return f"file://{tmp_path}/coll"
    return f"memory://{unique_memory_name('lazyabort')}/coll"


def test_two_lazy_writes_of_one_month_computed_together(url: str, factory: Factory) -> None:
    """One ``ConflictError``, the other committed; nothing left; a third insert succeeds at once."""
    coll = factory.create(url)
    coll.insert(factory.data(factory.times(*MONTH), seed=0))
    one, two = (factory.data(factory.times(*MONTH), seed=s) for s in (1, 2))
    a = coll.insert(one, compute=False)
    b = coll.insert(two, compute=False)
    with pytest.raises(ConflictError):
        dask.compute(a, b, scheduler="threads")
    assert _settled(coll) == []
    ds = coll.query()
    assert ds is not None
    got = ds["quality"].values
    assert any(numpy.array_equal(got, d["quality"]) for d in (one, two))
    third = factory.data(factory.times(*MONTH), seed=3)
    assert coll.insert(third) == ["year=2024/month=03"]
    _check(coll, third)


def test_two_lazy_updates_of_one_month_computed_together(url: str, factory: Factory) -> None:
    """The same for two lazy updates: one applied once, the next update succeeds at once."""
    coll = factory.create(url)
    first = factory.data(factory.times(*MONTH), seed=0)
    coll.insert(first)

    def plus(n: int) -> Any:
        return lambda ds: {"quality": ds["quality"].values + numpy.uint8(n)}

    a = coll.update(plus(1), variables=["quality"], compute=False)
    b = coll.update(plus(2), variables=["quality"], compute=False)
    with pytest.raises(ConflictError):
        dask.compute(a, b, scheduler="threads")
    assert _settled(coll) == []
    ds = coll.query()
    assert ds is not None
    got = ds["quality"].values
    assert any(numpy.array_equal(got, first["quality"] + numpy.uint8(n)) for n in (1, 2))
    assert coll.update(plus(10), variables=["quality"]) == ["year=2024/month=03"]
    ds = coll.query()
    assert ds is not None
    numpy.testing.assert_array_equal(ds["quality"].values, got + numpy.uint8(10))


def test_lazy_write_whose_merge_task_raises(url: str, factory: Factory) -> None:
    """Bad input caught only at compute: the error surfaces, the next write succeeds at once."""
    coll = factory.create(url)
    first = factory.data(factory.times(*MONTH), seed=0)
    coll.insert(first)

    def unsorted(existing: Any, inserted: dict[str, Any], *, axis: str) -> dict[str, Any]:
        raise InvalidInputError("quality out of range")

    lazy = coll.insert(factory.data(factory.times(*MONTH), seed=1), merge=unsorted, compute=False)
    with pytest.raises(InvalidInputError, match=r"month=03.*out of range"):
        lazy.compute(scheduler="threads")
    assert _settled(coll) == []
    _check(coll, first)  # nothing of the failed write is visible
    again = factory.data(factory.times(*MONTH), seed=2)
    assert coll.insert(again) == ["year=2024/month=03"]
    _check(coll, again)


def failing_in_march(existing: Any, inserted: dict[str, Any], *, axis: str) -> Any:
    """A merge strategy failing in March (module level: ships to worker processes)."""
    if inserted[axis][0] == numpy.datetime64("2024-03-05", "ns"):
        raise InvalidInputError("bad march")
    return inserted


def test_lazy_write_failing_in_one_of_its_partitions(url: str, factory: Factory) -> None:
    """The task's own error surfaces (not a sibling's ConflictError); the other months roll back."""
    coll = factory.create(url)
    months = ["2024-01-05", "2024-02-05", "2024-03-05", "2024-04-05"]
    first = factory.data(factory.times(*months), seed=0)
    coll.insert(first)

    lazy = coll.insert(
        factory.data(factory.times(*months), seed=1), merge=failing_in_march, compute=False
    )
    with pytest.raises(InvalidInputError, match=r"month=03.*bad march"):
        lazy.compute(scheduler="threads")
    assert _settled(coll) == []
    _check(coll, first)
    again = factory.data(factory.times(*months), seed=2)
    assert len(coll.insert(again)) == 4
    _check(coll, again)


# -- lazy view updates ------------------------------------------------------------------------
VIEW_VARIABLES = [{"name": "flag", "dtype": "int8", "dimensions": ["time"], "fill_value": -1}]


def _store_leftovers(spec: Any) -> list[str]:
    from dask_zcollection._sync import sync

    keys = [k for d in ("_locks", "_transactions") for k in sync(spec.list_prefix(d))]
    return sorted(k for k in keys if k.endswith((".lock", ".json", ".alive")))


def _store_settled(spec: Any) -> list[str]:
    deadline = time.monotonic() + 5.0
    while (left := _store_leftovers(spec)) and time.monotonic() < deadline:
        time.sleep(0.02)
    return left


def flag(n: int) -> Any:
    return lambda ds: {"flag": numpy.full(len(ds["time"].values), n, dtype="int8")}


def flag_failing_in_march(ds: zc.Dataset) -> Any:
    """A view function failing in March (module level: ships to worker processes)."""
    if ds["time"].values[0] == numpy.datetime64("2024-03-05", "ns"):
        raise RuntimeError("bad march")
    return flag(2)(ds)


def test_lazy_view_update_whose_function_raises(tmp_path: Any, factory: Factory) -> None:
    """The view's function fails in one month: its error surfaces, the view's locks and lease
    go at once, the months written beside it are rolled back, and the next update succeeds."""
    months = ["2024-01-05", "2024-02-05", "2024-03-05"]
    base = factory.create(f"file://{tmp_path}/base", nested=False)
    data = factory.data(factory.times(*months), nested=False)
    base.insert(data)
    view = zc.create_view(f"file://{tmp_path}/view", base=base.url, variables=VIEW_VARIABLES)

    view.update(flag(1))
    lazy = view.update(flag_failing_in_march, compute=False)
    with pytest.raises(RuntimeError, match="bad march"):
        lazy.compute(scheduler="threads")
    spec = view.aio.spec
    assert _store_settled(spec) == []
    ds = zc.read_view(view.url).compute()
    assert (ds["flag"].values == 1).all()  # nothing of the failed update is visible
    assert len(view.update(flag(3))) == 3
    assert (zc.read_view(view.url).compute()["flag"].values == 3).all()


# -- a failing input task ---------------------------------------------------------------------
def _with_failing_march(data: dict[str, Any], variable: str, delay: float = 0.3) -> dict[str, Any]:
    """``data`` with ``variable`` a dask array, one chunk per month, March's raising (late)."""
    import dask.array as da

    @dask.delayed
    def broken(block: numpy.ndarray) -> numpy.ndarray:
        time.sleep(delay)  # the other months' write tasks run (and lock) first
        raise RuntimeError("input of march failed")

    values = data[variable]
    blocks = [values[i : i + 1] for i in range(len(values))]
    parts = [da.from_array(b, chunks=b.shape) for b in blocks[:-1]]
    parts.append(da.from_delayed(broken(blocks[-1]), shape=blocks[-1].shape, dtype=values.dtype))
    return {**data, variable: da.concatenate(parts)}


def _with_slow_march(data: dict[str, Any], delay: float = 3.0) -> dict[str, Any]:
    """``data`` with ``ssh`` a dask array, one chunk per month, March's taking ``delay`` s."""
    import dask.array as da

    @dask.delayed
    def slow(block: numpy.ndarray) -> numpy.ndarray:
        time.sleep(delay)
        return block

    values = data["ssh"]
    blocks = [values[i : i + 1] for i in range(len(values))]
    parts = [da.from_array(b, chunks=b.shape) for b in blocks[:-1]]
    parts.append(da.from_delayed(slow(blocks[-1]), shape=blocks[-1].shape, dtype=values.dtype))
    return {**data, "ssh": da.concatenate(parts)}


def test_lazy_insert_whose_input_task_raises(url: str, factory: Factory) -> None:
    """No task of the write runs after the input failed: the failed compute aborts it."""
    coll = factory.create(url, nested=False)
    months = ["2024-01-05", "2024-02-05", "2024-03-05"]
    first = factory.data(factory.times(*months), nested=False)
    coll.insert(first)
    data = factory.data(factory.times(*months), seed=1, nested=False)
    lazy = coll.insert(_with_failing_march(data, "ssh"), compute=False)
    with pytest.raises(RuntimeError, match="input of march failed"):
        dask.compute(lazy, scheduler="threads")
    assert _settled(coll) == []
    _check(coll, first)
    again = factory.data(factory.times(*months), seed=2, nested=False)
    assert len(coll.insert(again)) == 3  # at once: no lock left for recovery
    _check(coll, again)


def test_lazy_insert_computed_beside_a_failing_result(url: str, factory: Factory) -> None:
    """Another result of the same ``dask.compute`` fails before the commit ran: aborted."""
    coll = factory.create(url, nested=False)
    months = ["2024-01-05", "2024-02-05", "2024-03-05"]
    first = factory.data(factory.times(*months), nested=False)
    coll.insert(first)
    data = factory.data(factory.times(*months), seed=1, nested=False)
    lazy = coll.insert(_with_slow_march(data, delay=1.0), compute=False)

    @dask.delayed
    def other() -> None:
        time.sleep(0.3)  # the write tasks of January and February ran
        raise RuntimeError("another result failed")

    with pytest.raises(RuntimeError, match="another result failed"):
        dask.compute(lazy, other(), scheduler="threads")
    assert _settled(coll) == []
    _check(coll, first)
    assert len(coll.insert(factory.data(factory.times(*months), seed=2, nested=False))) == 3


def test_lazy_insert_whose_axis_input_raises(url: str, factory: Factory) -> None:
    """The axis is computed when planning: its failure raises there and leaves nothing."""
    coll = factory.create(url, nested=False)
    data = factory.data(factory.times(*MONTH), nested=False)
    with pytest.raises(RuntimeError, match="input of march failed"):
        coll.insert(_with_failing_march(data, "time", delay=0.0), compute=False)
    assert _leftovers(coll) == []
    assert coll.partitions() == []


# -- the same on a distributed cluster (worker processes) -------------------------------------
@pytest.mark.cluster
def test_lazy_writes_failing_on_a_distributed_cluster(tmp_path: Any, factory: Factory) -> None:
    """A failing write task aborts from its worker process (the context is pickled, not a
    context variable); an input failure and a cancelled compute are seen by the scheduler
    plugin; a view update too."""
    distributed = pytest.importorskip("distributed")
    months = ["2024-01-05", "2024-02-05", "2024-03-05"]
    coll = factory.create(f"file://{tmp_path}/coll", nested=False)
    first = factory.data(factory.times(*months), nested=False)
    coll.insert(first)
    view = zc.create_view(f"file://{tmp_path}/view", base=coll.url, variables=VIEW_VARIABLES)
    view.update(flag(1))
    data = factory.data(factory.times(*months), seed=1, nested=False)
    with (
        distributed.LocalCluster(
            processes=True, n_workers=1, threads_per_worker=2, dashboard_address=":0"
        ) as cluster,
        distributed.Client(cluster) as client,
    ):
        lazy = coll.insert(data, merge=failing_in_march, compute=False)
        with pytest.raises(InvalidInputError, match="bad march"):
            dask.compute(lazy)
        assert _settled(coll) == []
        lazy = coll.insert(_with_failing_march(data, "ssh"), compute=False)
        with pytest.raises(RuntimeError, match="input of march failed"):
            dask.compute(lazy)
        assert _settled(coll) == []
        lazy = view.update(flag_failing_in_march, compute=False)
        with pytest.raises(RuntimeError, match="bad march"):
            dask.compute(lazy)
        assert _store_settled(view.aio.spec) == []
        # Cancelled once the other months were written (their locks held for the commit).
        future = client.compute(coll.insert(_with_slow_march(data, delay=10.0), compute=False))
        deadline = time.monotonic() + 10.0
        while not any(k.startswith("_locks/") for k in _leftovers(coll)):
            assert time.monotonic() < deadline and not future.done()
            time.sleep(0.02)
        future.cancel()
        assert _settled(coll) == []
    _check(coll, first)
    assert (zc.read_view(view.url).compute()["flag"].values == 1).all()
    again = factory.data(factory.times(*months), seed=2, nested=False)
    assert len(coll.insert(again)) == 3
    _check(coll, again)


# -- an abandoned lazy graph ------------------------------------------------------------------
def test_abandoned_lazy_insert_blocks_no_writer(url: str, factory: Factory) -> None:
    """Planned, never computed: only its lease is left, no lock; the next writer does not wait.
    Computed later, after another writer committed those months, it publishes nothing."""
    coll = factory.create(url, nested=False)
    months = ["2024-01-05", "2024-02-05"]
    coll.insert(factory.data(factory.times(*months), nested=False))
    stale = coll.insert(factory.data(factory.times(*months), seed=1, nested=False), compute=False)
    left = _leftovers(coll)
    assert len(left) == 1 and left[0].startswith("_transactions/") and left[0].endswith(".json")
    again = factory.data(factory.times(*months), seed=2, nested=False)
    assert len(coll.insert(again)) == 2  # at once
    # Its planning process lives: recovery leaves the lease (see docs/format.md, Failure).
    zc.open_collection(url, mode="rw").vacuum()
    assert _leftovers(coll) == left
    with pytest.raises(ConflictError, match="changed since the insert was planned"):
        dask.compute(stale, scheduler="threads")
    assert _settled(coll) == []
    _check(coll, again)


def test_abandoned_lazy_insert_of_an_ended_process(tmp_path: Any, factory: Factory) -> None:
    """A process that planned a lazy insert and ended: the next ``mode='rw'`` open recovers it."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    url = f"file://{tmp_path}/coll"
    coll = factory.create(url, nested=False)
    coll.insert(factory.data(factory.times(*MONTH), nested=False))
    tests = Path(__file__).parent
    script = (
        "import sys; from conftest import Factory; import dask_zcollection as zc; "
        "f = Factory(); coll = zc.open_collection(sys.argv[1], mode='rw'); "
        "coll.insert(f.data(f.times(*sys.argv[2:]), seed=1, nested=False), compute=False)"
    )
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(tests.parent), str(tests)])}
    subprocess.run([sys.executable, "-c", script, url, *MONTH], env=env, check=True, timeout=120)
    assert len(_leftovers(coll)) == 1  # its lease
    zc.open_collection(url, mode="rw")
    assert _leftovers(coll) == []
