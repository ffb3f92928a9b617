"""Child processes of the write-path invariant tests (run by path, never imported by pytest).

Commands (``python zc_write_worker.py CMD ...``):

``zygote``
    Imports everything once, then reads JSON commands on stdin; for each one it
    forks a writer process that runs the operation (``{"url": ..., "op": ...,
    "options": {...}, "markers": bool}``, ``options`` being the optional
    ``storage_options``; with ``markers`` the writer prints ``{"event": "committed"}``
    once its catalog put landed), prints ``{"event": "forked", "pid": N}``, reaps it and prints
    ``{"event": "exit", "pid": N, "status": S}``. The test kills the forked
    writer with SIGKILL at a chosen moment: a fresh interpreter per kill would
    spend ~1.5 s importing dask, zarr and xarray before doing anything.
``serve``
    Reads JSON commands on stdin, one at a time, and prints a JSON summary of each:
    ``{"cmd": "write", "url": ..., "wid": N, "spec": {"batches": [[segment, ...], ...],
    "merge": "concat"}, "options": {...}}`` inserts the batches in order, retrying itself on
    ``ConflictError`` (:func:`write_batches`); ``{"cmd": "read", "url": ...,
    "stop": FILE, "batch_rows": {tag: rows}}`` loops ``read_collection(url).compute()``
    until ``FILE`` exists, checking every state it sees (:func:`check_state`).
    The tests start these once and send several races to the same processes.

The tests load this module by path for :func:`make_rows`, :func:`schema` and
:func:`check_state`, so parent and children agree on the data.
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import signal
import sys
import time
import traceback
import warnings
from collections.abc import Mapping, Sequence
from typing import Any

import numpy

N_X = 8
BASE = numpy.datetime64("2024-01-01", "ns")


def schema(chunks: int = 512) -> Any:
    """time (axis), v (time, x) float64, k (time) int32 tag, xs (x) immutable."""
    import dask_zcollection as zc

    return (
        zc.Schema()
        .with_dimension("time", chunks=chunks)
        .with_dimension("x", size=N_X)
        .with_variable("time", dtype="datetime64[ns]", dimensions=("time",))
        .with_variable("v", dtype="float64", dimensions=("time", "x"))
        .with_variable("k", dtype="int32", dimensions=("time",), fill_value=-1)
        .with_variable("xs", dtype="int16", dimensions=("x",))
        .build()
    )


def expected_v(times: numpy.ndarray) -> numpy.ndarray:
    """The value every row carries: a function of its time (readers check it)."""
    f = (times.view("int64") // 10**9 % 100_003).astype("float64")
    return f[:, None] + numpy.arange(N_X) / N_X


def make_rows(segments: Sequence[Sequence[Any]]) -> dict[str, numpy.ndarray]:
    """Rows of ``[day0, ndays, second0, second1, step, offset, tag]`` segments.

    Day ``d`` (from 2024-01-01) gets times ``second0, second0 + step, ... < second1``
    (seconds of the day) plus ``offset`` seconds; ``v`` is :func:`expected_v`
    (plus ``tag * 1e6`` when ``tag`` is negative, so a rewrite is visible) and
    ``k`` is ``abs(tag)``.
    """
    times, tags = [], []
    for day0, ndays, s0, s1, step, offset, tag in segments:
        per = (numpy.arange(s0, s1, step) + offset) * numpy.timedelta64(1, "s")
        for d in range(day0, day0 + ndays):
            t = BASE + numpy.timedelta64(d, "D") + per
            times.append(t)
            tags.append(numpy.full(len(t), tag, "int64"))
    t = numpy.concatenate(times).astype("datetime64[ns]")
    tag = numpy.concatenate(tags)
    v = expected_v(t) + numpy.where(tag < 0, -tag * 1e6, 0.0)[:, None]
    return {"time": t, "v": v, "k": numpy.abs(tag).astype("int32")}


def with_immutable(data: dict[str, numpy.ndarray]) -> dict[str, numpy.ndarray]:
    return {**data, "xs": numpy.arange(N_X, dtype="int16")}


def run_op(url: str, op: Mapping[str, Any], options: Mapping[str, Any] | None = None) -> Any:
    """Run one write operation on ``url`` (what a crash-test writer does)."""
    import dask

    import dask_zcollection as zc

    dask.config.set(scheduler=op.get("scheduler", "threads"))
    col = zc.open_collection(url, mode="rw", storage_options=options)
    die_at = op.get("die_at")
    if die_at in ("after_catalog", "after_txn_commit"):
        _die_after(die_at)
    if op["kind"] == "insert":
        data = make_rows(op["segments"])
        if op.get("immutable"):
            data = with_immutable(data)
        if die_at == "after_writes":
            from dask_zcollection._prepare import prepare_insert
            from dask_zcollection.merge import resolve

            prepared = prepare_insert(data, col.schema, col.axis)
            _write_then_die(col.aio.planner.insert(prepared, resolve(op.get("merge"))))
        return col.insert(data, merge=op.get("merge"))
    if op["kind"] == "update":
        if die_at == "after_writes":
            from dask_zcollection._update import UpdateStrategy

            strategy = UpdateStrategy(negative_v, ("v",), col.schema)
            _write_then_die(col.aio.planner.update(op["filters"], strategy))
        return col.update(negative_v, filters=op["filters"], variables=["v"])
    if op["kind"] == "drop":
        return col.drop_partitions(op["filters"])
    if op["kind"] == "repair":
        return col.repair()
    if op["kind"] == "vacuum":
        return col.vacuum(older_than=0)
    raise ValueError(op["kind"])


def negative_v(ds: Any) -> dict[str, numpy.ndarray]:
    """The update of the crash tests: ``v`` of every row made negative (``k`` and ``time``
    kept). Idempotent, as the tests need: a crashed update runs again to the same state."""
    return {"v": -numpy.abs(numpy.asarray(ds["v"].values))}


def _suicide() -> None:
    os.kill(os.getpid(), signal.SIGKILL)
    time.sleep(10)  # never reached


def _die_after(point: str) -> None:
    """Kill this process right after a step of the commit protocol (fault injection)."""
    from dask_zcollection.catalog import CatalogLog
    from dask_zcollection.catalog._transaction import Transaction

    if point == "after_catalog":  # the new catalog version is published, nothing cleaned
        original = CatalogLog.commit

        async def commit(self: Any, catalog: Any) -> bool:
            won = await original(self, catalog)
            if won:
                _suicide()
            return won

        CatalogLog.commit = commit  # type: ignore[method-assign]
    else:  # Transaction.commit returned (superseded versions and lease deleted)
        original_txn = Transaction.commit

        async def txn_commit(self: Any, change: Any, **kwargs: Any) -> Any:
            await original_txn(self, change, **kwargs)
            _suicide()

        Transaction.commit = txn_commit  # type: ignore[method-assign]


def _mark_commit() -> None:
    """Print ``{"event": "committed"}`` as soon as this writer's catalog put has landed
    (a progress marker: the crash test kills relative to it, whatever the load)."""
    from dask_zcollection.catalog import CatalogLog

    original = CatalogLog.commit

    async def commit(self: Any, catalog: Any) -> bool:
        won = await original(self, catalog)
        if won:
            _emit({"event": "committed"})
        return won

    CatalogLog.commit = commit  # type: ignore[method-assign]


def _write_then_die(plan: Any) -> None:
    """Run every write task of a planned write graph (``plan``: a coroutine of the
    engine's planner), then die before the commit task."""
    import dask

    from dask_zcollection._sync import sync

    planned = sync(plan)
    assert planned is not None
    graph = dict(planned.graph.__dask_graph__())
    keys = [
        k
        for k in graph
        if isinstance(k, tuple) and str(k[0]).startswith(("zc-merge-write", "zc-immutable"))
    ]
    dask.get(graph, keys)
    _suicide()


def _emit(doc: Mapping[str, Any]) -> None:
    sys.stdout.write(json.dumps(doc) + "\n")
    sys.stdout.flush()


def zygote() -> None:
    import threading

    import dask_zcollection  # noqa: F401  (import before forking: that is the point)

    # Forking is only safe while no other Python thread exists. (An allocator's
    # background thread started by a compiled dependency is fork-aware: silence
    # Python's generic warning about it.)
    assert threading.active_count() == 1, threading.enumerate()
    warnings.filterwarnings("ignore", r"This process .* is multi-threaded", DeprecationWarning)
    _emit({"event": "ready"})
    for line in sys.stdin:
        if not line.strip():
            continue
        cmd = json.loads(line)
        if "cmd" in cmd:  # a process of the kill campaign (see ``campaign``)
            _campaign_command(cmd)
            continue
        pid = os.fork()
        if pid == 0:  # the writer
            code = 0
            start = time.perf_counter()
            if cmd.get("markers"):
                _mark_commit()
            try:
                run_op(cmd["url"], cmd["op"], cmd.get("options"))
                _emit({"event": "done", "elapsed": time.perf_counter() - start})
            except BaseException as err:
                _emit({"event": "error", "error": repr(err), "tb": traceback.format_exc()})
                code = 1
            os._exit(code)
        _emit({"event": "forked", "pid": pid})
        _, status = os.waitpid(pid, 0)
        _emit({"event": "exit", "pid": pid, "status": status})


# -- the kill campaign: processes that run concurrently, killed and respawned ---------------
def _campaign_command(cmd: Mapping[str, Any]) -> None:
    """``spawn`` a campaign process (not waited for), ``kill`` one (SIGKILL, then reap it) or
    ``poll`` one (reap it if it ended). Only the zygote reaps its children, and only when
    told: a pid the test holds is never reused behind its back."""
    if cmd["cmd"] == "spawn":
        pid = os.fork()
        if pid == 0:
            code = 0
            try:
                campaign(cmd["role"])
            except BaseException:
                traceback.print_exc()
                code = 1
            os._exit(code)
        _emit({"event": "spawned", "pid": pid})
        return
    pid = int(cmd["pid"])
    if cmd["cmd"] == "kill":
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
        _, status = os.waitpid(pid, 0)
        _emit({"event": "exit", "pid": pid, "status": status})
    elif cmd["cmd"] == "poll":
        done, status = os.waitpid(pid, os.WNOHANG)
        _emit({"event": "exit" if done else "running", "pid": pid, "status": status})
    else:
        raise ValueError(cmd["cmd"])


def campaign_rows(wid: int, seq: int) -> dict[str, numpy.ndarray]:
    """Insert ``seq`` of writer ``wid`` in the kill campaign: 3 rows in each of days ``seq``
    and ``seq + 1`` (an existing partition and, most often, a new one), times unique to the
    pair, tag ``1000 * (wid + 1) + seq``."""
    tag = 1000 * (wid + 1) + seq
    return make_rows(
        [[seq, 1, 0, 60, STEP, wid * 5, tag], [seq + 1, 1, 100, 160, STEP, wid * 5, tag]]
    )


STEP = 20


def campaign(role: Mapping[str, Any]) -> None:
    """Run one campaign process until ``role["stop"]`` exists, noting in ``role["journal"]``
    (one line per event, written before anything else happens) what returned normally.

    ``writer``: inserts ``campaign_rows(wid, seq)`` for ``seq`` in ``role["seqs"]``
    (``concat``), retrying on ``ConflictError`` for at most ``role["stuck_after"]``
    seconds per insert (then notes ``stuck``). ``maintainer``: calls ``repair()`` and
    ``vacuum(older_than=0)`` in turn, forever.
    """
    import dask

    import dask_zcollection as zc
    from dask_zcollection.errors import ConflictError

    dask.config.set(scheduler="threads")
    rng = random.Random(role.get("seed", 0))
    journal = open(role["journal"], "a", buffering=1)  # noqa: SIM115 - the process ends first

    def note(*words: Any) -> None:
        journal.write(" ".join(str(w) for w in words) + "\n")

    col = zc.open_collection(role["url"], mode="rw", storage_options=role.get("options"))
    stop = role["stop"]
    if role["kind"] == "writer":
        wid = role["wid"]
        for seq in range(*role["seqs"]):
            if os.path.exists(stop):
                break
            tag = 1000 * (wid + 1) + seq
            data = campaign_rows(wid, seq)
            note("begin", tag)
            deadline = time.monotonic() + role.get("stuck_after", 30.0)
            while True:
                try:
                    col.insert(data, merge="concat", retries=3)
                    note("ok", tag)
                    break
                except ConflictError as err:
                    if time.monotonic() > deadline:
                        note("stuck", tag, repr(err).replace("\n", " "))
                        return
                    time.sleep(rng.uniform(0.005, 0.05))
                except Exception as err:
                    note("error", tag, repr(err).replace("\n", " "))
                    break
        note("done")
        return
    i = 0
    while not os.path.exists(stop):
        what = role["ops"][i % len(role["ops"])]
        i += 1
        try:
            if what == "repair":
                col.repair()
            else:
                col.vacuum(older_than=0)
            note("ok", what)
        except ConflictError:
            note("conflict", what)
        except Exception as err:
            note("error", what, repr(err).replace("\n", " "))
        time.sleep(rng.uniform(0.0, role.get("pause", 0.05)))


def write_batches(
    url: str, wid: int, spec: Mapping[str, Any], options: Mapping[str, Any] | None = None
) -> dict[str, Any]:
    """Insert the batches of ``spec`` one after the other, retrying on ``ConflictError``."""
    import dask_zcollection as zc
    from dask_zcollection.errors import ConflictError

    col = zc.open_collection(url, mode="rw", storage_options=options)
    rng = random.Random(wid)
    summary: dict[str, Any] = {"wid": wid, "conflicts": 0, "inserts": 0, "errors": []}
    start = time.perf_counter()
    if spec.get("retention") is not None:
        import dask

        dask.config.set({"zcollection.retention": spec["retention"]})
    for batch in spec["batches"]:
        data = make_rows(batch)
        for _ in range(200):
            try:
                col.insert(data, merge=spec.get("merge"), retries=spec.get("retries", 3))
                summary["inserts"] += 1
                break
            except ConflictError:  # the library gave up retrying: so do we, a bit later
                summary["conflicts"] += 1
                time.sleep(rng.uniform(0.005, 0.05))
            except Exception as err:  # anything else breaks the invariant: report it
                summary["errors"].append(f"{err!r}\n{traceback.format_exc()}")
                break
        else:
            summary["errors"].append("gave up after 200 ConflictErrors")
    summary["elapsed"] = time.perf_counter() - start
    return summary


def serve() -> None:
    """Run JSON commands from stdin: ``write`` (:func:`write_batches`) or ``read``."""
    import dask

    import dask_zcollection  # noqa: F401

    dask.config.set(scheduler="threads")
    _emit({"event": "ready"})
    for line in sys.stdin:
        if not line.strip():
            continue
        cmd = json.loads(line)
        if cmd["cmd"] == "write":
            _emit(write_batches(cmd["url"], cmd["wid"], cmd["spec"], cmd.get("options")))
        else:
            rows = {int(k): v for k, v in cmd["batch_rows"].items()}
            _emit(reader(cmd["url"], cmd["stop"], rows))


def check_state(
    data: Mapping[str, numpy.ndarray] | None, batch_rows: Mapping[int, int]
) -> tuple[dict[int, int], list[str]]:
    """Check one observed state of a reader test collection.

    Every row's ``v`` must equal :func:`expected_v` of its time (no fill value,
    no torn chunk), times must be strictly increasing (no duplicate, in order)
    and each insert (tag ``k``) must be entirely present or entirely absent
    (``batch_rows[k]`` rows). Returns the row count per tag and the problems.
    """
    problems: list[str] = []
    if data is None:
        return {}, problems
    t, v, k = data["time"], data["v"], data["k"]
    if len(t) != len(v) or len(t) != len(k):
        problems.append(f"lengths differ: {len(t)} {len(v)} {len(k)}")
        return {}, problems
    if len(t) > 1 and not (numpy.diff(t.view("int64")) > 0).all():
        problems.append("times are not strictly increasing")
    bad = ~(v == expected_v(t)).all(axis=1)
    if bad.any():
        i = int(numpy.flatnonzero(bad)[0])
        problems.append(f"{int(bad.sum())} rows with wrong values, first at {t[i]}: {v[i]}")
    tags, counts = numpy.unique(k, return_counts=True)
    seen = {int(a): int(b) for a, b in zip(tags, counts, strict=True)}
    for tag, n in seen.items():
        if batch_rows.get(tag) != n:
            problems.append(f"insert {tag}: {n} rows visible, expected {batch_rows.get(tag)}")
    # Each writer inserts its batches (tags 1000 * w + b) in order: a prefix is visible.
    for w in {tag // 1000 for tag in seen}:
        batches = sorted(tag % 1000 for tag in seen if tag // 1000 == w)
        if batches != list(range(len(batches))):
            problems.append(f"writer {w}: batches {batches} visible, not a prefix")
    return seen, problems


def reader(url: str, stop: str, batch_rows: Mapping[int, int]) -> dict[str, Any]:
    """Read the whole collection in a loop until ``stop`` exists; check every state."""
    import dask_zcollection as zc

    summary: dict[str, Any] = {"reads": 0, "states": 0, "problems": [], "errors": []}
    previous: dict[int, int] = {}
    states = set()
    while True:
        last = os.path.exists(stop)  # one more read after the writers finished
        try:
            ds = zc.read_collection(url).compute()
        except Exception as err:
            summary["errors"].append(f"{err!r}\n{traceback.format_exc()}")
            if len(summary["errors"]) > 20 or last:
                break
            continue
        summary["reads"] += 1
        data = None if ds is None else {n: ds[n].values for n in ("time", "v", "k")}
        seen, problems = check_state(data, batch_rows)
        lost = sorted(tag for tag in previous if tag not in seen)
        if lost:  # a committed insert disappeared
            problems.append(f"inserts {lost} seen before are gone")
        summary["problems"].extend(problems[:5])
        previous = seen
        states.add(tuple(sorted(seen)))
        if last or len(summary["problems"]) > 20:
            break
    summary["states"] = len(states)
    summary["final"] = sorted(previous)
    return summary


def main(argv: Sequence[str]) -> None:
    if argv[0] == "zygote":
        zygote()
    elif argv[0] == "serve":
        serve()
    else:
        raise SystemExit(f"unknown command {argv[0]!r}")


if __name__ == "__main__":
    main(sys.argv[1:])
