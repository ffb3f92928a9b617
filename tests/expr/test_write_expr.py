"""The insert graph: its shape, what the client computes to plan, and what the tasks read.

An insert is one graph: one merge-write task per destination partition, each
taking its rows from every input chunk that holds some, and one commit. The
planner computes the axis variable only; each task reads the stored partition
only when its strategy needs it, and only touched partitions are read.
"""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Iterator
from typing import Any

import dask
import dask.array as da
import numpy
import pytest

pytest.register_assert_rewrite("conftest_read")
from conftest_read import (  # noqa: E402
    TaskLog,
    assert_columns,
    counting_spec,
    create,
    is_chunk_key,
    make_rows,
    reads,
    reference_order,
    reset_reads,
    take_rows,
)

import dask_zcollection as zc  # noqa: E402

pytest_plugins = ["conftest_read"]

_COMPUTED: Counter[str] = Counter()
_LOCK = threading.Lock()


def _counted(name: str) -> Any:
    def block(x: numpy.ndarray) -> numpy.ndarray:
        with _LOCK:
            _COMPUTED[name] += 1
        return x

    return block


@pytest.fixture
def computed() -> Iterator[Counter[str]]:
    """Input chunks computed so far, by variable (the blocks count themselves)."""
    _COMPUTED.clear()
    yield _COMPUTED
    _COMPUTED.clear()


def dask_input(data: dict[str, numpy.ndarray], chunks: int) -> dict[str, Any]:
    """``data`` as dask arrays whose blocks count their computations."""
    return {
        k: da.from_array(v, chunks=(chunks, *v.shape[1:])).map_blocks(
            _counted(k), meta=numpy.empty((0,) * v.ndim, v.dtype)
        )
        for k, v in data.items()
    }


def stored_reads(tag: str) -> set[str]:
    """Partitions (``year=2024/month=02``) whose chunks were read."""
    return {"/".join(k.split("/")[:2]) for k in reads(tag) if is_chunk_key(k) and "=" in k}


def test_one_merge_write_per_partition_from_every_chunk(file_url: str, computed: Counter) -> None:
    """Rows of 5 months, shuffled over 7 input chunks: 5 merge-write tasks, one commit,
    every row stored once, sorted along the axis inside its partition."""
    col = create(file_url, "date_M")
    data = make_rows("date_M", 700, seed=3)  # random order: every chunk holds every month
    lazy = col.insert(dask_input(data, 100), compute=False)
    # Planning computed the axis only (each of its 7 chunks once); nothing else yet.
    assert computed == Counter({"time": 7})
    graph = dict(lazy.__dask_graph__())
    names = Counter(k[0].rsplit("-", 1)[0] for k in graph if isinstance(k, tuple))
    assert names["zc-merge-write"] == 5
    assert names["zc-commit"] == 1
    months = set(data["time"].astype("datetime64[M]").tolist())
    assert len(months) == 5
    # Each merge-write task depends on all 7 input chunks of each variable (they all hold rows).
    for key, task in graph.items():
        if isinstance(key, tuple) and key[0].startswith("zc-merge-write"):
            deps = {d[0] for d in task.dependencies if isinstance(d, tuple)}
            assert len(deps) == 3  # time, ssh, quality
    with TaskLog() as log:
        written = dask.compute(lazy)[0]
    assert len(written) == 5
    assert sum(n.startswith("zc-merge-write") for n in log.names()) == 5
    assert sum(n.startswith("zc-commit") for n in log.names()) == 1
    # Every other input chunk was computed once, by the graph; the axis computed to plan
    # was not computed again.
    assert computed == Counter({"time": 7, "ssh": 7, "quality": 7})
    got = zc.read_collection(file_url).compute()
    assert_columns(got, take_rows(data, reference_order("date_M", data)))


def test_lazy_insert_inside_a_larger_compute(file_url: str) -> None:
    """``compute=False`` runs in one ``dask.compute`` with the pipeline producing the data."""
    col = create(file_url, "date_M")
    data = make_rows("date_M", 300, seed=4)
    source = dask_input(data, 64)
    mean = source["ssh"].mean()
    lazy = col.insert(source, compute=False)
    assert zc.open_collection(file_url).partitions() == []  # nothing before the compute
    written, m = dask.compute(lazy, mean)
    assert numpy.isclose(m, data["ssh"].mean())
    assert written == zc.open_collection(file_url).partitions()
    got = zc.read_collection(file_url).compute()
    assert_columns(got, take_rows(data, reference_order("date_M", data)))


@pytest.mark.parametrize(
    ("merge", "new_range", "read"),
    [
        # replace never reads the stored partition.
        ("replace", ("2024-02-10", "2024-02-12"), False),
        # time_series reads it when the new rows fall inside its range ...
        ("time_series", ("2024-02-10", "2024-02-12"), True),
        # ... and not when they cover it.
        ("time_series", ("2024-02-01", "2024-02-29T23"), False),
        ("upsert", ("2024-02-10", "2024-02-12"), True),
        ("concat", ("2024-02-10", "2024-02-12"), True),
    ],
)
def test_only_what_the_strategy_needs_is_read(
    file_url: str, merge: str, new_range: tuple[str, str], read: bool
) -> None:
    """Three stored months; an insert into February reads February only when the strategy
    needs the stored rows, and never reads January or March."""
    col = create(file_url, "date_M")
    data = make_rows("date_M", 400, seed=5)
    data = take_rows(data, numpy.flatnonzero(data["time"] < numpy.datetime64("2024-04-01")))
    col.insert(data)
    assert len(col.partitions()) == 3
    lo, hi = (numpy.datetime64(v, "ns") for v in new_range)
    n = 40
    new = make_rows("date_M", n, seed=6)
    new["time"] = numpy.sort(lo + (numpy.arange(n) * ((hi - lo) // (n - 1))))
    spec = counting_spec(file_url)
    reset_reads(spec.tag)
    assert zc.open_collection(spec, mode="rw").insert(new, merge=merge) == ["year=2024/month=02"]
    assert stored_reads(spec.tag) == ({"year=2024/month=02"} if read else set())
    # And the result is the strategy's, checked on the stored February.
    feb = zc.read_collection(file_url).filter(year=2024, month=2).compute()
    old = take_rows(
        data, numpy.flatnonzero(data["time"].astype("datetime64[M]") == lo.astype("datetime64[M]"))
    )
    old = take_rows(old, numpy.argsort(old["time"]))
    # The numpy reference of each strategy: which stored rows survive beside the new ones.
    keep = {
        "replace": numpy.zeros(len(old["time"]), bool),
        "time_series": (old["time"] < new["time"][0]) | (old["time"] > new["time"][-1]),
        "upsert": ~numpy.isin(old["time"], new["time"]),
        "concat": numpy.ones(len(old["time"]), bool),
    }[merge]
    both = {k: numpy.concatenate([old[k][keep], new[k]]) for k in new}
    assert_columns(feb, take_rows(both, numpy.argsort(both["time"], kind="stable")), merge)
