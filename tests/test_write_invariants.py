"""Write-path invariants 1 and 4: crash safety (SIGKILL at many moments) and failed tasks.

Crash tests run each write in a child process and kill it with SIGKILL, at
evenly spread delays over the operation's measured duration and at injected
points of the commit protocol, then check in the parent that

* reopening with ``mode="rw"`` leaves the collection exactly as before or
  exactly as after the operation (every partition, all or nothing);
* no lease, abort marker or partition lock is left, no partition directory
  exists that the catalog does not name, and a walk of the tree finds exactly
  the catalog's partitions;
* the collection stays writable: the same operation then runs to the "after" state.

Writers are forked from a "zygote" child that imported everything once (a
fresh interpreter per kill spends ~1.5 s importing before doing anything).

The commit-protocol crash tests also run on S3 (the session's SeaweedFS server,
through obstore), where the tree is checked by a listing of the objects.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import importlib.util
import json
import os
import queue
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import dask
import dask.array as da
import numpy
import pytest
import zarr.storage
from conftest import s3_options, s3_prefix
from s3_server import S3Server

import dask_zcollection as zc
from dask_zcollection._sync import sync
from dask_zcollection.catalog._transaction import new_txn_id
from dask_zcollection.errors import ConflictError, SchemaError
from dask_zcollection.store import MemoryStore, resolve_store

WORKER = Path(__file__).parent / "_workers" / "zc_write_worker.py"
_spec = importlib.util.spec_from_file_location("zc_write_worker", WORKER)
assert _spec is not None and _spec.loader is not None
W = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(W)

DAY = 86_400
HALF = DAY // 2
SECOND = numpy.timedelta64(1, "s")
STEP = 20
N_DAYS = 12
#: Kill moments per operation, spread over its measured duration.
N_DELAYS = 10


# -- helpers --------------------------------------------------------------------------------------
#: A collection is a local directory (``Path``) or a URL (with its ``storage_options``).
Where = Path | str
Options = Mapping[str, Any] | None


def url_of(path: Where) -> str:
    return path if isinstance(path, str) else f"file://{path}"


def create(
    path: Where, *, partitioning: Any = None, chunks: int = 512, options: Options = None
) -> zc.Collection:
    return zc.create_collection(
        url_of(path),
        schema=W.schema(chunks),
        axis="time",
        partitioning=partitioning or zc.partitioning.Date(("time",), resolution="D"),
        storage_options=options,
    )


def snapshot(path: Where, options: Options = None) -> dict[str, dict[str, numpy.ndarray]]:
    """The committed content: canonical partition path -> its variables."""
    col = zc.open_collection(url_of(path), storage_options=options)
    out: dict[str, dict[str, numpy.ndarray]] = {}
    catalog = col.catalog(refresh=True)
    for i, canonical in enumerate(col.partitions()):
        ds = sync(col.aio.read_partition(catalog, i))
        out[canonical] = {k: numpy.asarray(ds[k]) for k in ("time", "v", "k")}
    imm = sync(col.aio.planner.stored_immutable(catalog))
    if imm:
        out["_immutable"] = {k: numpy.asarray(v) for k, v in imm.items()}
    return out


def same(a: Mapping[str, Mapping[str, numpy.ndarray]], b: Mapping[str, Any]) -> bool:
    return a.keys() == b.keys() and all(
        a[p].keys() == b[p].keys() and all(numpy.array_equal(a[p][k], b[p][k]) for k in a[p])
        for p in a
    )


def describe(state: Mapping[str, Any], before: Mapping[str, Any], after: Mapping[str, Any]) -> str:
    """Which partitions look like before and which like after (for failure messages)."""
    lines = []
    for p in sorted(set(state) | set(before) | set(after)):
        tags = [n for n, s in (("before", before), ("after", after)) if same_part(state, s, p)]
        lines.append(f"  {p}: {'/'.join(tags) or 'NEITHER'}")
    return "\n".join(lines)


def same_part(a: Mapping[str, Any], b: Mapping[str, Any], p: str) -> bool:
    if (p in a) != (p in b):
        return False
    return p not in a or all(numpy.array_equal(a[p][k], b[p][k]) for k in a[p])


def partition_dirs(root: Path, depth: int) -> set[str]:
    """Every directory at partition depth (``year=2024/month=01/day=05``, ``@txn`` versions too)."""
    level = [root]
    for _ in range(depth):
        level = [
            c
            for d in level
            for c in (d.iterdir() if d.is_dir() else [])
            if c.is_dir() and "=" in c.name and not c.name.startswith((".", "_"))
        ]
    return {str(p.relative_to(root)) for p in level}


def tree_problems(root: Path) -> list[str]:
    """What a clean collection must not have, checked against the committed catalog."""
    col = zc.open_collection(url_of(root))
    catalog = col.catalog(refresh=True)
    problems = []
    # Abort markers stay a while on purpose (tasks of an aborted insert check them).
    leases = sorted(
        p.name
        for p in (root / "_transactions").glob("*")
        if not p.name.endswith((".aborted", ".partial"))
    )
    if leases:
        problems.append(f"leases left: {leases}")
    # ``.partial``: temporary files of a put killed before its rename / link(2)
    # (store-level garbage, not leases or locks; see ``stray_temporaries``).
    locks = sorted(
        str(p.relative_to(root))
        for p in root.glob("_locks/**/*")
        if p.is_file() and not p.name.endswith(".partial")
    )
    if locks:
        problems.append(f"partition locks left: {locks}")
    dirs = {
        d
        for d in partition_dirs(root, len(col.partitioning.keys))
        if not all(p.name.endswith(".partial") for p in (root / d).iterdir())
    }
    named = set(catalog.paths)
    if dirs - named:
        problems.append(f"partition directories the catalog does not name: {sorted(dirs - named)}")
    if named - dirs:
        problems.append(f"catalog names missing directories: {sorted(named - dirs)}")
    walked = sorted(sync(col.aio.discovery.newest_versions()))
    if walked != sorted(catalog.paths):
        problems.append(f"tree walk {walked} != catalog {sorted(catalog.paths)}")
    if catalog.immutable is not None and not (root / catalog.immutable / "zarr.json").exists():
        problems.append(f"immutable group {catalog.immutable} missing")
    imm = {p.name for p in root.iterdir() if p.name.startswith("_immutable")}
    if imm - {catalog.immutable}:
        problems.append(f"immutable versions not committed: {sorted(imm - {catalog.immutable})}")
    for i, path in enumerate(catalog.paths):
        meta = json.loads((root / path / "time" / "zarr.json").read_text())
        if meta["shape"][0] < catalog.rows[i]:
            problems.append(f"{path}: {meta['shape'][0]} rows stored < {catalog.rows[i]} committed")
    return problems


def store_problems(url: str, options: Options) -> list[str]:
    """:func:`tree_problems` on an object store, checked against a listing of every object."""
    col = zc.open_collection(url, storage_options=options)
    catalog = col.catalog(refresh=True)
    spec = resolve_store(url, options)
    keys = sync(spec.list_prefix(""))
    problems = []
    leases = sorted(
        k
        for k in keys
        if k.startswith("_transactions/") and not k.endswith((".aborted", ".partial"))
    )
    if leases:
        problems.append(f"leases left: {leases}")
    locks = sorted(k for k in keys if k.startswith("_locks/") and not k.endswith(".partial"))
    if locks:
        problems.append(f"partition locks left: {locks}")
    depth = len(col.partitioning.keys)
    groups = {
        "/".join(parts[:depth])
        for parts in (k.split("/") for k in keys)
        if len(parts) > depth
        and all("=" in p and not p.startswith((".", "_")) for p in parts[:depth])
    }
    named = set(catalog.paths)
    if groups - named:
        problems.append(f"partition groups the catalog does not name: {sorted(groups - named)}")
    if named - groups:
        problems.append(f"catalog names missing groups: {sorted(named - groups)}")
    incomplete = sorted(p for p in named if f"{p}/zarr.json" not in keys)
    if incomplete:
        problems.append(f"catalog names groups without zarr.json: {incomplete}")
    walked = sorted(sync(col.aio.discovery.newest_versions()))
    if walked != sorted(catalog.paths):
        problems.append(f"walk {walked} != catalog {sorted(catalog.paths)}")
    if catalog.immutable is not None and f"{catalog.immutable}/zarr.json" not in keys:
        problems.append(f"immutable group {catalog.immutable} missing")
    imm = {k.split("/")[0] for k in keys if k.startswith("_immutable")}
    if imm - {catalog.immutable}:
        problems.append(f"immutable versions not committed: {sorted(imm - {catalog.immutable})}")
    for i, path in enumerate(catalog.paths):
        raw = sync(spec.get(f"{path}/time/zarr.json"))
        stored = -1 if raw is None else json.loads(raw)["shape"][0]
        if stored < catalog.rows[i]:
            problems.append(f"{path}: {stored} rows stored < {catalog.rows[i]} committed")
    return problems


def problems_of(path: Where, options: Options = None) -> list[str]:
    """:func:`tree_problems` of a local directory, :func:`store_problems` of a URL."""
    return store_problems(path, options) if isinstance(path, str) else tree_problems(path)


def stray_temporaries(root: Path) -> list[str]:
    """Temporary files left by writes killed half-way (``*.partial``)."""
    return sorted(str(p.relative_to(root)) for p in root.rglob("*.partial"))


class Zygote:
    """A child process that forks writers on demand (see ``zc_write_worker.zygote``)."""

    def __init__(self) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, str(WORKER), "zygote"],
            # No BLAS thread pool in the process that forks.
            env={**os.environ, "OPENBLAS_NUM_THREADS": "1", "OMP_NUM_THREADS": "1"},
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            bufsize=1,
        )
        self.events: queue.Queue[dict[str, Any]] = queue.Queue()
        threading.Thread(target=self._pump, daemon=True).start()
        assert self.next(60)["event"] == "ready"

    def _pump(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.events.put(json.loads(line))
        self.events.put({"event": "eof"})

    def next(self, timeout: float) -> dict[str, Any]:
        try:
            event = self.events.get(timeout=timeout)
        except queue.Empty:
            raise AssertionError(f"no news from the writer process in {timeout} s") from None
        assert event["event"] != "eof", "the zygote process died"
        return event

    def run(
        self,
        url: str,
        op: Mapping[str, Any],
        kill_after: float | None = None,
        options: Options = None,
        *,
        marker: str | None = None,
    ) -> dict[str, Any]:
        """Run ``op`` in a forked writer; SIGKILL it ``kill_after`` seconds after the fork.

        ``marker``: the writer reports its progress (``"committed"``: its catalog put
        landed), and ``kill_after`` counts from that event (no kill if the writer ends
        without it). Each event is recorded with ``at``, seconds since the fork.
        """
        assert self.proc.stdin is not None
        cmd = {"url": url, "op": op, "options": dict(options or {}), "markers": bool(marker)}
        self.proc.stdin.write(json.dumps(cmd) + "\n")
        self.proc.stdin.flush()
        forked = self.next(30)
        assert forked["event"] == "forked", forked
        start = time.monotonic()
        outcome: dict[str, Any] = {"pid": forked["pid"]}

        def record(event: dict[str, Any]) -> dict[str, Any] | None:
            event["at"] = time.monotonic() - start
            if event["event"] == "exit":
                outcome["elapsed"] = event["at"]
                outcome["status"] = event["status"]
                outcome["killed"] = os.WIFSIGNALED(event["status"])
                return outcome
            outcome[event["event"]] = event
            return None

        if kill_after is not None:
            t0 = start
            if marker is not None:
                while True:
                    event = self.next(60)
                    if record(event) is not None:
                        return outcome  # ended before the marker: nothing to kill
                    if event["event"] == marker:
                        t0 = time.monotonic()
                        break
            time.sleep(max(0.0, kill_after - (time.monotonic() - t0)))
            with contextlib.suppress(ProcessLookupError):  # it finished and was reaped
                os.kill(forked["pid"], signal.SIGKILL)
        while True:
            if (done := record(self.next(60))) is not None:
                return done

    def close(self) -> None:
        if self.proc.stdin:
            self.proc.stdin.close()
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=10)


@pytest.fixture(scope="module")
def zygote() -> Iterator[Zygote]:
    z = Zygote()
    yield z
    z.close()


# -- the collection every crash test starts from ------------------------------------------------
#: 12 daily partitions (00:00-12:00 every 20 s); days 0-5 rewritten once, so they live at
#: ``day=..@<txn>`` paths and a new version of them claims the canonical path.
def build_base(path: Where, options: Options = None) -> None:
    col = create(path, options=options)
    col.insert(W.with_immutable(W.make_rows([[0, N_DAYS, 0, HALF, STEP, 0, 1]])))
    col.insert(W.make_rows([[0, 6, 3600, 7200, STEP, 0, -2]]), merge="upsert")


OPS: dict[str, dict[str, Any]] = {
    # new partitions only: each claims its canonical path
    "insert_new": {"kind": "insert", "segments": [[N_DAYS, N_DAYS, 0, HALF, STEP, 0, 3]]},
    # rewrites of every stored partition (aside: at the canonical path or at @txn) + new ones
    "upsert_merge": {
        "kind": "insert",
        "merge": "upsert",
        "segments": [
            [0, N_DAYS, 4 * 3600, 10 * 3600, STEP, 0, -4],
            [N_DAYS, 4, 0, HALF, STEP, 0, 4],
        ],
    },
    # rows after the end of every stored partition: appended in place
    "append": {
        "kind": "insert",
        "merge": "time_series",
        "segments": [[0, N_DAYS, HALF, HALF + 6 * 3600, STEP, 0, 5]],
    },
    # rewrites of the selected partitions through Collection.update (aside, one commit)
    "update": {"kind": "update", "filters": "day >= 2 and day <= 9"},
    "drop": {"kind": "drop", "filters": "day >= 3 and day != 7"},
}


@pytest.fixture(scope="module")
def base(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, Any]]:
    path = tmp_path_factory.mktemp("base") / "col"
    build_base(path)
    return path, snapshot(path)


def fresh_copy(base_path: Path, dest: Path) -> Path:
    shutil.copytree(base_path, dest)
    return dest


@pytest.fixture(scope="module")
def after_op(
    base: tuple[Path, Any], tmp_path_factory: pytest.TempPathFactory
) -> Callable[[str], dict[str, Any]]:
    """The state of the base collection after each operation of ``OPS`` (computed once)."""
    states: dict[str, dict[str, Any]] = {}

    def after(name: str) -> dict[str, Any]:
        if name not in states:
            done = fresh_copy(base[0], tmp_path_factory.mktemp("done") / "col")
            W.run_op(url_of(done), OPS[name])
            states[name] = snapshot(done)
        return states[name]

    return after


def check_recovered(
    path: Where, before: Any, after: Any, what: str, options: Options = None
) -> str:
    """Reopen (recovery), check the state and the tree; returns "before" or "after"."""
    zc.open_collection(url_of(path), mode="rw", storage_options=options)  # runs recovery
    state = snapshot(path, options)
    is_before, is_after = same(state, before), same(state, after)
    assert is_before or is_after, (
        f"{what}: the collection is neither as before nor as after the operation\n"
        + describe(state, before, after)
    )
    problems = problems_of(path, options)
    assert not problems, f"{what}: " + "\n".join(problems)
    return "before" if is_before else "after"


@pytest.mark.slow
@pytest.mark.parametrize("name", list(OPS))
def test_sigkill_at_many_moments(
    name: str, zygote: Zygote, base: tuple[Path, Any], tmp_path: Path
) -> None:
    base_path, before = base
    op = OPS[name]
    # Measure the operation (3 runs: durations vary by 2x here); it also gives the "after" state.
    elapsed, committed = [], []
    for j in range(3):
        done = fresh_copy(base_path, tmp_path / f"done{j}")
        full = zygote.run(url_of(done), op, marker="committed")
        assert "done" in full, full
        elapsed.append(full["elapsed"])
        committed.append(full["committed"]["at"])
    duration, commit_at = float(numpy.median(elapsed)), float(numpy.median(committed))
    after = snapshot(done)
    assert not same(before, after)
    assert not tree_problems(done), tree_problems(done)
    changed = [p for p in set(before) | set(after) if not same_part(before, after, p)]
    assert len(changed) >= 4  # a multi-partition operation

    # Kill moments relative to the writer's progress, not absolute times (which a loaded
    # machine may never reach before the commit): half counted from the fork, spread
    # over the time to its commit (the writes); half counted from its "committed" marker
    # (its catalog put landed), spread over the clean-up and past the end.
    outcomes = []
    temporaries = 0
    rng = numpy.random.default_rng(len(name))
    n_before = N_DELAYS // 2
    jitter = rng.uniform(0, 0.05, N_DELAYS)
    kills = [
        (None, commit_at * (f + jitter[i]))
        for i, f in enumerate(numpy.linspace(0.0, 1.0, n_before, endpoint=False))
    ] + [
        ("committed", max(duration - commit_at, 0.01) * (f + jitter[n_before + i]))
        for i, f in enumerate(numpy.linspace(0.0, 1.5, N_DELAYS - n_before))
    ]
    for j, (marker, delay) in enumerate(kills):
        path = fresh_copy(base_path, tmp_path / f"kill{j}")
        out = zygote.run(url_of(path), op, kill_after=float(delay), marker=marker)
        since = "its commit" if marker else "the fork"
        what = (
            f"{name}, killed {delay:.3f} s after {since} (~{commit_at:.3f} s of ~{duration:.3f} s)"
        )
        assert out["killed"] or "done" in out, (what, out)
        outcome = check_recovered(path, before, after, what)
        if marker is not None:
            assert "committed" in out, (what, out)
            assert outcome == "after", what  # its catalog put landed: the commit stays
        outcomes.append(outcome)
        temporaries += len(stray_temporaries(path))
        # The collection stays writable: the operation now runs to the end.
        W.run_op(url_of(path), op)
        assert same(snapshot(path), after), what
        assert not tree_problems(path)
        shutil.rmtree(path)
    print(
        f"{name}: {elapsed} s, committed at {committed} s; outcomes {outcomes}; "
        f"{temporaries} stray *.partial files"
    )
    # A kill at the fork lands before anything is written.
    assert outcomes[0] == "before", outcomes
    assert "after" in outcomes


#: (operation, step of the commit protocol at which its writer dies).
PROTOCOL_STEPS = [
    ("insert_new", "after_writes"),
    ("upsert_merge", "after_writes"),
    ("append", "after_writes"),
    ("upsert_merge", "after_catalog"),
    ("append", "after_catalog"),
    ("drop", "after_catalog"),
    ("upsert_merge", "after_txn_commit"),
    ("append", "after_txn_commit"),
    ("drop", "after_txn_commit"),
    ("update", "after_writes"),
    ("update", "after_catalog"),
    ("update", "after_txn_commit"),
]
#: The steps on S3: every step, with the operations whose leftovers differ there
#: (``upsert_merge`` also claims new canonical paths, as ``insert_new`` does; once
#: ``Transaction.commit`` has returned, ``after_txn_commit``, one operation is enough).
S3_PROTOCOL_STEPS = [
    ("upsert_merge", "after_writes"),
    ("append", "after_writes"),
    ("upsert_merge", "after_catalog"),
    ("append", "after_catalog"),
    ("drop", "after_catalog"),
    ("drop", "after_txn_commit"),
]


def base_collection(
    backend: str, base: tuple[Path, Any], dest: Path, request: pytest.FixtureRequest
) -> tuple[Where, Options]:
    """A collection equal to ``base``: a copy of its directory, or built anew on S3."""
    if backend == "file":
        return fresh_copy(base[0], dest), None
    server: S3Server = request.getfixturevalue("s3")
    url, options = f"{s3_prefix()}/col", s3_options(server, backend.removeprefix("s3-"))
    build_base(url, options)
    return url, options


def leases(path: Where, options: Options = None) -> list[str]:
    """The leases of the writers in flight (or dead): ``_transactions/*.json``."""
    if isinstance(path, Path):
        return sorted(str(p) for p in (path / "_transactions").glob("*.json"))
    keys = sync(resolve_store(path, options).list_prefix("_transactions/"))
    return sorted(k for k in keys if k.endswith(".json"))


@pytest.mark.parametrize(
    ("name", "die_at", "backend"),
    [(name, die_at, "file") for name, die_at in PROTOCOL_STEPS]
    + [
        pytest.param(name, die_at, "s3-obstore", marks=pytest.mark.s3)
        for name, die_at in S3_PROTOCOL_STEPS
    ],
)
def test_sigkill_at_protocol_steps(
    name: str,
    die_at: str,
    backend: str,
    zygote: Zygote,
    base: tuple[Path, Any],
    after_op: Callable[[str], dict[str, Any]],
    tmp_path: Path,
    request: pytest.FixtureRequest,
) -> None:
    """SIGKILL at chosen steps: all writes done but no commit; committed but nothing cleaned
    up; committed and lease deleted but the partition locks not yet released."""
    before, after = base[1], after_op(name)
    op = OPS[name]

    path, options = base_collection(backend, base, tmp_path / "crash", request)
    out = zygote.run(url_of(path), {**op, "die_at": die_at}, options=options)
    assert out["killed"], out
    if die_at == "after_writes":
        # Leftovers exist before recovery (the checks see them) and readers ignore them.
        assert leases(path, options)
        assert problems_of(path, options)
        assert same(snapshot(path, options), before)
    expected = "before" if die_at == "after_writes" else "after"
    what = f"{name} killed {die_at} on {backend}"
    assert check_recovered(path, before, after, what, options) == expected
    # The collection stays writable: the operation now runs to the end.
    W.run_op(url_of(path), op, options)
    assert same(snapshot(path, options), after)
    assert not problems_of(path, options)


def test_repair_after_crashed_append_keeps_committed_rows(
    zygote: Zygote, base: tuple[Path, Any], tmp_path: Path
) -> None:
    """Rows appended in place by a writer that died before committing are not data:
    ``repair()`` (a rebuild of the catalog from the tree) must not publish them."""
    base_path, before = base
    path = fresh_copy(base_path, tmp_path / "crash")
    out = zygote.run(url_of(path), {**OPS["append"], "die_at": "after_writes"})
    assert out["killed"]
    col = zc.open_collection(url_of(path), mode="rw")
    col.repair()
    assert same(snapshot(path), before), describe(snapshot(path), before, before)


# -- invariant 4: a failed task leaves nothing visible and no orphan writes --------------------
def _day(times: numpy.ndarray) -> int:
    return int((times[0].astype("datetime64[D]") - numpy.datetime64("2024-01-01", "D")).astype(int))


def _slow_failing_merge(bad_day: int, delay: float) -> Any:
    def merge(existing: Any, inserted: Any, *, axis: str) -> Any:
        if _day(inserted[axis]) == bad_day:
            raise RuntimeError(f"merge failed for day {bad_day}")
        time.sleep(delay)  # the other partitions are still being written when it fails
        return {k: numpy.concatenate([existing[k], inserted[k]]) for k in inserted}

    return merge


@pytest.mark.parametrize("scheduler", ["threads", "sync"])
def test_failed_merge_task_leaves_nothing(scheduler: str, tmp_path: Path) -> None:
    path = tmp_path / "col"
    build_base(path)
    before = snapshot(path)
    version = zc.open_collection(url_of(path)).catalog().version
    col = zc.open_collection(url_of(path), mode="rw")
    data = W.make_rows([[0, N_DAYS, HALF, HALF + 3600, STEP, 0, 7]])
    with dask.config.set(scheduler=scheduler), pytest.raises(RuntimeError, match="day 4"):
        col.insert(data, merge=_slow_failing_merge(bad_day=4, delay=0.05))
    for _ in range(2):  # no orphan write appears later either
        assert zc.open_collection(url_of(path)).catalog(refresh=True).version == version
        assert same(snapshot(path), before)
        assert not tree_problems(path), tree_problems(path)
        time.sleep(0.6)
    # Nothing blocks the next insert of the same partitions.
    col.insert(data, merge="concat")


def _dask_input_failing_for(data: Mapping[str, numpy.ndarray], bad_chunk: int, delay: float) -> Any:
    """``data`` as dask arrays (one chunk per day); computing chunk ``bad_chunk`` raises."""
    n_per = len(data["time"]) // N_DAYS

    def block(x: numpy.ndarray, block_info: Any = None) -> numpy.ndarray:
        i = block_info[0]["chunk-location"][0]
        if i == bad_chunk:
            raise RuntimeError(f"source chunk {i} failed")
        time.sleep(delay)
        return x

    out = {}
    for name, value in data.items():
        arr = da.from_array(value, chunks=(n_per, *value.shape[1:]))
        out[name] = arr.map_blocks(block, dtype=arr.dtype) if name == "v" else arr
    return out


@pytest.mark.parametrize("merge", ["time_series", "upsert"])
def test_failed_source_chunk_leaves_nothing(merge: str, tmp_path: Path) -> None:
    """A dask-backed insert whose input pipeline fails for one chunk, while the other
    partitions are appended in place (``time_series``) or rewritten aside (``upsert``)."""
    path = tmp_path / "col"
    build_base(path)
    before = snapshot(path)
    col = zc.open_collection(url_of(path), mode="rw")
    data = W.make_rows([[0, N_DAYS, HALF, HALF + 3600, STEP, 0, 7]])
    lazy = _dask_input_failing_for(data, bad_chunk=5, delay=0.02)
    with dask.config.set(scheduler="threads", num_workers=4), pytest.raises(RuntimeError):
        col.insert(lazy, merge=merge)
    for _ in range(2):
        assert same(snapshot(path), before)
        assert not tree_problems(path), tree_problems(path)
        time.sleep(0.5)
    col.insert(data, merge=merge)  # not blocked by a leaked lock


@pytest.mark.parametrize("merge", ["time_series", "upsert", "replace"])
def test_task_running_after_abort_cleans_up(merge: str, tmp_path: Path) -> None:
    """A merge-write task still running when its insert was aborted (the scheduler does not
    wait for tasks in flight) removes what it wrote and releases its partition lock."""
    from dask_zcollection._prepare import prepare_insert
    from dask_zcollection.merge import resolve

    path = tmp_path / "col"
    build_base(path)
    before = snapshot(path)
    col = zc.open_collection(url_of(path), mode="rw")
    data = W.make_rows([[0, 3, HALF, HALF + 3600, STEP, 0, 7], [20, 2, 0, 3600, STEP, 0, 7]])
    prepared = prepare_insert(data, col.schema, col.axis)
    planned = sync(col.aio.planner.insert(prepared, resolve(merge)))
    assert planned is not None
    sync(planned.txn.abort())  # the insert failed elsewhere before these tasks ran
    graph = dict(planned.graph.__dask_graph__())
    for key in [k for k in graph if str(k[0]).startswith("zc-merge-write")]:
        with pytest.raises(ConflictError, match="aborted"):
            dask.get(graph, key)
    zc.open_collection(url_of(path), mode="rw")  # clears the abort marker of the ended writer
    assert same(snapshot(path), before)
    assert not tree_problems(path), tree_problems(path)
    col.insert(data, merge=merge)


class _HeldWrite(zarr.storage.WrapperStore[Any]):
    """Holds the first write of a chunk of ``k`` in partition ``day=02`` (once armed)."""

    armed = False
    release = threading.Event()  # set by the test: the held write goes on
    written = threading.Event()  # set once the held write is done

    def _with_store(self, store: Any) -> _HeldWrite:
        return type(self)(store)

    async def set(self, key: str, value: Any, *args: Any, **kwargs: Any) -> None:
        held = _HeldWrite.armed and "/day=02/k/c/" in key
        if held:
            _HeldWrite.armed = False
            await asyncio.to_thread(_HeldWrite.release.wait, 10)
        await self._store.set(key, value, *args, **kwargs)
        if held:
            _HeldWrite.written.set()


@dataclasses.dataclass(frozen=True, slots=True)
class _HeldMemoryStore(MemoryStore):
    def _open_store(self) -> Any:
        return _HeldWrite(MemoryStore._open_store(self))


def test_an_aborted_append_never_touches_rows_committed_meanwhile() -> None:
    """Writer A's insert fails on one partition (another writer holds its lock) while its
    task for another partition is appending in place (its write of ``k`` held). Writer B
    then appends to that partition. Whatever the order, B's committed rows keep B's
    values: A's task, still running after A's abort, must not write into them."""
    schema = (
        zc.Schema()
        .with_dimension("time", chunks=8)
        .with_variable("time", dtype="datetime64[ns]", dimensions=("time",))
        .with_variable("k", dtype="int32", dimensions=("time",))
        .build()
    )

    def rows(day: int, first: int, n: int, k: int) -> dict[str, numpy.ndarray]:
        t = W.BASE + numpy.timedelta64(day, "D") + numpy.arange(first, first + n) * SECOND
        return {"time": t, "k": numpy.full(n, k, "int32")}

    def both(a: Mapping[str, Any], b: Mapping[str, Any]) -> dict[str, numpy.ndarray]:
        return {n: numpy.concatenate([a[n], b[n]]) for n in a}

    spec = _HeldMemoryStore(f"held-{os.getpid()}-{time.monotonic_ns()}")
    try:
        col = zc.create_collection(
            spec, schema=schema, axis="time", partitioning=zc.partitioning.Date(("time",), "D")
        )
        # Days 0 and 1 (day=01, day=02): 10 rows each, a full chunk and a partial one.
        col.insert(both(rows(0, 0, 10, 1), rows(1, 0, 10, 1)))
        # A live writer's lock (younger than the lease timeout).
        sync(spec.put("_locks/year=2024/month=01/day=03.lock", new_txn_id().encode()))
        a = zc.open_collection(spec, mode="rw")
        b = zc.open_collection(spec, mode="rw")
        _HeldWrite.release.clear()
        _HeldWrite.written.clear()
        _HeldWrite.armed = True
        # The held write goes on after 0.3 s: A's abort waits for its task until then.
        threading.Timer(0.3, _HeldWrite.release.set).start()
        t0 = time.monotonic()
        with pytest.raises(ConflictError, match="day=03"):
            a.insert(both(rows(1, 20, 2, 7), rows(2, 0, 1, 7)), merge="concat", retries=0)
        assert time.monotonic() - t0 >= 0.3
        assert _HeldWrite.written.is_set()
        assert not [k for k in sync(spec.list_prefix("_locks")) if "day=02" in k]
        for _ in range(200):
            try:
                b.insert(rows(1, 30, 2, 9), merge="concat", retries=0)
                break
            except ConflictError:  # A's task still holds the partition: wait for it
                time.sleep(0.02)
            finally:
                _HeldWrite.release.set()
        else:
            raise AssertionError("writer B never got the partition")
        assert _HeldWrite.written.wait(10)
        time.sleep(0.2)  # A's task ends (it finds its insert aborted)
        got = zc.open_collection(spec).query(filters={"day": 2})
        assert got is not None
        expected = both(rows(1, 0, 10, 1), rows(1, 30, 2, 9))
        assert got["time"].values.tolist() == expected["time"].tolist()
        assert got["k"].values.tolist() == expected["k"].tolist()
    finally:
        _HeldWrite.armed = False
        _HeldWrite.release.set()
        MemoryStore.forget(spec.name)


# -- immutable variables ------------------------------------------------------------------------
def test_immutable_written_once_and_checked(tmp_path: Path) -> None:
    path = tmp_path / "col"
    col = create(path)
    first = W.with_immutable(W.make_rows([[0, 2, 0, 3600, STEP, 0, 1]]))
    col.insert(first)
    catalog = col.catalog(refresh=True)
    imm_path = catalog.immutable
    assert imm_path is not None
    stamp = (path / imm_path / "xs" / "zarr.json").stat().st_mtime_ns
    # Later inserts with equal values (or without them) do not rewrite the group.
    col.insert(W.with_immutable(W.make_rows([[2, 1, 0, 3600, STEP, 0, 2]])))
    col.insert(W.make_rows([[3, 1, 0, 3600, STEP, 0, 3]]))
    assert col.catalog(refresh=True).immutable == imm_path
    assert (path / imm_path / "xs" / "zarr.json").stat().st_mtime_ns == stamp
    before = snapshot(path)
    files = sorted(str(p) for p in path.rglob("*"))
    # Different values: SchemaError, nothing written (not even a lease or a parent group).
    other = W.make_rows([[10, 2, 0, 3600, STEP, 0, 4]])
    other["xs"] = numpy.arange(W.N_X, dtype="int16")[::-1].copy()
    for data in (other, {k: da.from_array(v, chunks=50) for k, v in other.items()}):
        with pytest.raises(SchemaError, match="xs"):
            col.insert(data)
        assert sorted(str(p) for p in path.rglob("*")) == files
        assert same(snapshot(path), before)


def test_concurrent_first_inserts_with_different_immutables(tmp_path: Path) -> None:
    """Two first inserts racing with different immutable values: one wins, the other
    gets a SchemaError on its retry; the stored immutable is the winner's."""
    path = tmp_path / "col"
    create(path)
    a = W.with_immutable(W.make_rows([[0, 2, 0, 3600, STEP, 0, 1]]))
    b = W.with_immutable(W.make_rows([[5, 2, 0, 3600, STEP, 0, 2]]))
    b["xs"] = b["xs"] + 1
    ca = zc.open_collection(url_of(path), mode="rw")
    cb = zc.open_collection(url_of(path), mode="rw")
    da_ = ca.insert(a, compute=False)
    db_ = cb.insert(b, compute=False)  # planned against the same (empty) catalog
    da_.compute()
    with pytest.raises(ConflictError):
        db_.compute()
    with pytest.raises(SchemaError, match="xs"):
        cb.insert(b)
    assert numpy.array_equal(snapshot(path)["_immutable"]["xs"], a["xs"])
