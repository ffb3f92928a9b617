"""Write-path invariants 2 and 3: concurrent writers in separate processes, readers meanwhile.

Four writer processes race, on disjoint partitions and on the same partitions
(``concat``; ``upsert`` of distinct keys and of the same keys); each retries
itself when ``insert`` gives up with a ``ConflictError``. Afterwards every row
of every writer is present (the same keys: each once, with the value of the
last insert of one of the writers), the catalog equals a walk of the tree
(on S3: a listing of the objects), and nothing (lease, lock, unnamed version)
is left. The races run on file:// and on S3 (the session's SeaweedFS server,
through obstore). A reader process loops over the whole collection while writers append
in place, rewrite aside and merge, and checks that each state it sees is a
committed one: every insert wholly present or wholly absent, values equal
to what was written, each writer's inserts a prefix of its sequence.
"""

from __future__ import annotations

import json
import queue
import subprocess
import sys
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import dask
import numpy
import pytest
from conftest import s3_options, s3_prefix
from test_write_invariants import (
    WORKER,
    Options,
    W,
    Where,
    create,
    problems_of,
    snapshot,
    url_of,
)

import dask_zcollection as zc

STEP = 20
N_WRITERS = 4
#: Where the races run: a local directory, and S3 through obstore.
S3 = pytest.param("s3-obstore", marks=pytest.mark.s3)
BACKENDS = ["file", S3]


class Worker:
    """A ``serve`` child process (see ``zc_write_worker.serve``)."""

    def __init__(self) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, str(WORKER), "serve"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            bufsize=1,
        )
        self.out: queue.Queue[dict[str, Any]] = queue.Queue()
        threading.Thread(target=self._pump, daemon=True).start()

    def _pump(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.out.put(json.loads(line))
        self.out.put({"event": "eof"})

    def send(self, cmd: Mapping[str, Any]) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(json.dumps(cmd) + "\n")
        self.proc.stdin.flush()

    def receive(self, timeout: float) -> dict[str, Any]:
        try:
            msg = self.out.get(timeout=timeout)
        except queue.Empty:
            raise AssertionError(f"worker silent for {timeout} s") from None
        assert msg.get("event") != "eof", "worker process died"
        return msg

    def close(self) -> None:
        if self.proc.stdin:
            self.proc.stdin.close()
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=10)


@pytest.fixture(scope="module")
def workers() -> Iterator[list[Worker]]:
    """Four writers and one reader, started once (importing takes ~1.5 s each)."""
    pool = [Worker() for _ in range(N_WRITERS + 1)]
    for w in pool:
        assert w.receive(120)["event"] == "ready"
    yield pool
    for w in pool:
        w.close()


@pytest.fixture
def target(request: pytest.FixtureRequest, tmp_path: Path) -> tuple[Where, Options]:
    """A new collection's place and ``storage_options``, per backend."""
    if request.param == "file":
        return tmp_path / "col", None
    server = request.getfixturevalue("s3")
    return f"{s3_prefix()}/col", s3_options(server, request.param.removeprefix("s3-"))


def race(
    pool: Sequence[Worker],
    url: str,
    specs: Sequence[Mapping[str, Any]],
    options: Options = None,
) -> list[dict]:
    """Start every writer at once; return their summaries (none may report an error).

    A writer whose insert gave up with a ``ConflictError`` retried it: each
    summary counts the inserts that landed (all of them) and the conflicts.
    """
    for wid, (w, spec) in enumerate(zip(pool, specs, strict=False)):
        w.send({"cmd": "write", "url": url, "wid": wid, "spec": spec, "options": options})
    summaries = [w.receive(120) for w in pool[: len(specs)]]
    errors = [e for s in summaries for e in s["errors"]]
    assert not errors, "\n".join(errors)
    assert all(
        s["inserts"] == len(spec["batches"]) for s, spec in zip(summaries, specs, strict=True)
    )
    return summaries


def expected_rows(batches: Sequence[Sequence[Sequence[Any]]]) -> dict[str, numpy.ndarray]:
    """All rows of all batches, sorted by time (times never repeat across writers)."""
    parts = [W.make_rows(b) for b in batches]
    out = {k: numpy.concatenate([p[k] for p in parts]) for k in parts[0]}
    order = numpy.argsort(out["time"], kind="stable")
    return {k: v[order] for k, v in out.items()}


def assert_holds(
    path: Where, batches: Sequence[Sequence[Sequence[Any]]], options: Options = None
) -> None:
    ds = zc.open_collection(url_of(path), storage_options=options).query()
    assert ds is not None
    expected = expected_rows(batches)
    got = {k: ds[k].values for k in ("time", "v", "k")}
    assert len(got["time"]) == len(expected["time"]), (len(got["time"]), len(expected["time"]))
    for k in expected:
        assert numpy.array_equal(got[k], expected[k]), k
    assert_clean(path, options)


def assert_clean(path: Where, options: Options = None) -> None:
    """Nothing left behind, the catalog names what the store holds, its stats are right."""
    problems = problems_of(path, options)
    assert not problems, problems
    # The catalog's stats agree with the data (a race never corrupts them).
    catalog = zc.open_collection(url_of(path), storage_options=options).catalog(refresh=True)
    state = snapshot(path, options)
    partitions = [c for c in state if c != "_immutable"]
    assert len(catalog) == len(partitions)
    for i, canonical in enumerate(partitions):
        t = state[canonical]["time"]
        assert catalog.rows[i] == len(t)
        assert catalog.axis_min[i] == t.min() and catalog.axis_max[i] == t.max()


SEED = [[40, 1, 0, 60, STEP, 0, 1]]


def seeded(path: Where, options: Options = None) -> Where:
    create(path, options=options).insert(W.with_immutable(W.make_rows(SEED)))
    return path


@pytest.mark.parametrize("target", BACKENDS, indirect=True)
def test_disjoint_partitions_all_land(workers: list[Worker], target: tuple[Where, Options]) -> None:
    path, options = target
    seeded(path, options)
    # Writer w owns days 4w..4w+3; each of its 4 inserts spans all of them (in-place appends
    # after the first).
    specs = [
        {
            "merge": "concat",
            "batches": [
                [[4 * w, 4, b * 600, (b + 1) * 600, STEP, 0, 1000 * (w + 1) + b]] for b in range(4)
            ],
        }
        for w in range(N_WRITERS)
    ]
    summaries = race(workers, url_of(path), specs, options)
    assert_holds(path, [SEED] + [b for s in specs for b in s["batches"]], options)
    col = zc.open_collection(url_of(path), storage_options=options)
    assert len(col.partitions()) == 4 * N_WRITERS + 1
    print("disjoint:", [(s["conflicts"], round(s["elapsed"], 2)) for s in summaries])


# S3 runs the upsert of the same keys instead (the stronger test of upsert).
@pytest.mark.parametrize(
    ("merge", "target"),
    [("concat", "file"), ("upsert", "file"), pytest.param("concat", "s3-obstore", marks=S3.marks)],
    indirect=["target"],
)
def test_same_partitions_every_row_present(
    merge: str, workers: list[Worker], target: tuple[Where, Options]
) -> None:
    path, options = target
    seeded(path, options)
    # Every writer inserts into the same 3 days, 5 times; writer w's times are offset by w
    # seconds, so each insert both lands after stored rows (append in place) and between
    # them (merge and rewrite aside), depending on who committed first.
    specs = [
        {
            "merge": merge,
            "batches": [
                [[0, 3, b * 400, (b + 1) * 400, STEP, w, 1000 * (w + 1) + b]] for b in range(5)
            ],
        }
        for w in range(N_WRITERS)
    ]
    summaries = race(workers, url_of(path), specs, options)
    assert_holds(path, [SEED] + [b for s in specs for b in s["batches"]], options)
    print(f"same/{merge}:", [(s["conflicts"], round(s["elapsed"], 2)) for s in summaries])


def upsert_same_keys(w: int, b: int) -> list[list[int]]:
    """Batch ``b`` of writer ``w``: seconds [400 b, 400 b + 600) of days 0-2, every writer
    the same times; tag ``-(1000 (w + 1) + b)`` (``k`` names writer and batch, ``v`` carries
    it too, see ``make_rows``). Batch ``b`` overlaps batch ``b - 1`` by 200 s."""
    return [[0, 3, 400 * b, 400 * b + 600, STEP, 0, -(1000 * (w + 1) + b)]]


@pytest.mark.parametrize("target", BACKENDS, indirect=True)
def test_same_keys_upsert_keeps_one_writers_last_value(
    workers: list[Worker], target: tuple[Where, Options]
) -> None:
    """Four writers upsert the same keys: each key is present once, and its row is whole
    and comes from the last insert covering it of one of the writers (a writer's earlier
    insert never wins over its own later one, and no row mixes two inserts)."""
    path, options = target
    seeded(path, options)
    n_batches = 5
    specs = [
        {"merge": "upsert", "batches": [upsert_same_keys(w, b) for b in range(n_batches)]}
        for w in range(N_WRITERS)
    ]
    summaries = race(workers, url_of(path), specs, options)

    # The last batch covering each time (the same for every writer).
    last: dict[int, int] = {}
    for b in range(n_batches):
        last.update(dict.fromkeys(W.make_rows(upsert_same_keys(0, b))["time"].view("int64"), b))
    seed = W.make_rows(SEED)["time"]
    keys = numpy.sort(numpy.concatenate([numpy.array(sorted(last), "int64"), seed.view("int64")]))

    ds = zc.open_collection(url_of(path), storage_options=options).query()
    assert ds is not None
    t, v, k = (ds[n].values for n in ("time", "v", "k"))
    stored = t.view("int64")
    # Every key, once, in order.
    assert numpy.array_equal(stored, keys), (
        f"{len(stored)} rows for {len(keys)} keys: "
        f"{len(numpy.setdiff1d(keys, stored))} missing, "
        f"{len(numpy.setdiff1d(stored, keys))} unknown, "
        f"{len(stored) - len(numpy.unique(stored))} repeated"
    )
    upserted = k != 1
    assert numpy.array_equal(t[~upserted], seed)
    # Each row is whole: its value is the one its writer's batch (k) carries.
    assert (v == W.expected_v(t) + numpy.where(upserted, k * 1e6, 0.0)[:, None]).all()
    writers, batches = k[upserted] // 1000, k[upserted] % 1000
    assert set(writers.tolist()) <= set(range(1, N_WRITERS + 1))
    assert batches.tolist() == [last[int(x)] for x in t[upserted].view("int64")]
    assert_clean(path, options)
    print("same keys/upsert:", [(s["conflicts"], round(s["elapsed"], 2)) for s in summaries])


@pytest.mark.slow
def test_readers_see_only_committed_states(workers: list[Worker], tmp_path: Path) -> None:
    path = tmp_path / "col"
    col = create(path, chunks=64)  # several chunks per partition: appends rewrite a partial one
    first = [[0, 2, 0, 300, STEP, 0, 1000]]
    col.insert(W.with_immutable(W.make_rows(first)))
    n_batches = 6
    specs = [
        # writer 1: days 0-1, appends after the end (in place), one insert spanning both days
        {
            "merge": "concat",
            "batches": [
                [[0, 2, 300 * b, 300 * (b + 1), STEP, 0, 1000 + b]] for b in range(1, n_batches)
            ],
        },
        # writer 2: days 2-3, each insert between the stored rows (read, merge, rewrite aside)
        {
            "merge": "concat",
            "batches": [[[2, 2, 0, 1800, 120, 5 * b, 2000 + b]] for b in range(n_batches)],
        },
        # writer 3: rewrites writer 1's first insert with identical rows (upsert, aside),
        # superseding (and deleting) the versions readers may be reading
        {"merge": "upsert", "batches": [first] * n_batches},
        # writer 4: new partitions, one insert each, with replace
        {
            "merge": None,
            "batches": [[[10 + b, 1, 0, 600, STEP, 0, 4000 + b]] for b in range(n_batches)],
        },
    ]
    # Superseded versions stay readable for readers holding an older catalog.
    for spec in specs:
        spec["retention"] = 600
    batch_rows = {1000: len(W.make_rows(first)["time"])}
    for spec in specs:
        for batch in spec["batches"]:
            tag = batch[0][-1]
            batch_rows[tag] = len(W.make_rows(batch)["time"])
    stop = tmp_path / "stop"
    reader = workers[N_WRITERS]
    reader.send({"cmd": "read", "url": url_of(path), "stop": str(stop), "batch_rows": batch_rows})
    time.sleep(0.2)
    summaries = race(workers, url_of(path), specs)
    stop.touch()
    seen = reader.receive(120)
    assert not seen["problems"], "\n".join(seen["problems"])
    assert not seen["errors"], "\n".join(seen["errors"][:3])
    assert seen["final"] == sorted(batch_rows)
    assert seen["reads"] >= 5 and seen["states"] >= 3, seen
    # Writer 3 superseded versions: retired, not deleted, until a vacuum.
    retired = list((path / "_garbage").glob("*.json"))
    paths = {p for f in retired for p in json.loads(f.read_text())["paths"]}
    assert paths and all((path / p / "zarr.json").exists() for p in paths)
    with dask.config.set({"zcollection.retention": 600}):
        rw = zc.open_collection(url_of(path), mode="rw")  # recovery keeps them
        assert len(list((path / "_garbage").glob("*.json"))) == len(retired)
        deleted = rw.vacuum(older_than=0)
    assert set(deleted) == paths and not any((path / "_garbage").iterdir())
    assert not problems_of(path)
    print(
        f"reader: {seen['reads']} reads, {seen['states']} distinct states;",
        "writers:",
        [(s["conflicts"], round(s["elapsed"], 2)) for s in summaries],
    )
