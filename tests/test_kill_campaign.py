# ruff: noqa: F811  (the fixtures of test_write_invariants, imported, are parameters here)
"""The SIGKILL campaign: sampled moments and protocol steps on S3, repair and vacuum killed,
and writers racing ``repair()`` / ``vacuum(0)`` while processes are killed at random.

It extends ``tests/test_write_invariants.py`` (its zygote, base collection,
operations and checks are reused; there: every protocol step on file:// and
most on S3, and sampled moments on file://):

* sampled kill moments of insert, update and drop on S3;
* the protocol steps that file:// has and S3 had not;
* ``repair()`` and ``vacuum(0)`` killed at sampled moments (file:// and S3): the
  content is unchanged and the tree clean after the next ``rw`` open;
* the race: two writer processes insert two-partition ``concat`` batches while a
  third calls ``repair()`` and ``vacuum(older_than=0)`` in turn; with kills, a
  random process is SIGKILLed every fraction of a second and started again
  (a killed writer goes on with new batches). Each process notes in a journal
  what returned normally. At the end the collection is reopened (recovery) and
  read: every insert that returned is present, each insert is whole or absent
  (rows exact), every value is the one written, and nothing is left behind;
* a writer SIGKILLed holding its partition locks does not block a writer that is
  already open.

Each figure (operations, kills, rows lost) is printed in the terminal summary.
``ZC_SOAK=1`` runs the races 10x longer.
"""

from __future__ import annotations

import ast
import collections
import json
import os
import random
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy
import pytest
import test_write_invariants as WI
from _figures import report
from conftest import s3_options, s3_prefix
from test_write_invariants import (  # noqa: F401  (fixtures)
    OPS,
    Options,
    W,
    Where,
    Zygote,
    after_op,
    base,
    build_base,
    check_recovered,
    problems_of,
    same,
    snapshot,
    url_of,
    zygote,
)

import dask_zcollection as zc

SOAK = os.environ.get("ZC_SOAK", "") not in ("", "0")
S3 = pytest.mark.s3

#: Figures of the module (printed at the end).
FIGURES: collections.Counter[str] = collections.Counter()


@pytest.fixture(scope="module", autouse=True)
def _report(request: pytest.FixtureRequest) -> None:
    report(
        request.config,
        "kill campaign",
        lambda: [", ".join(f"{k} {v}" for k, v in sorted(FIGURES.items()))] if FIGURES else [],
    )


def new_target(
    backend: str, tmp_path: Path, request: pytest.FixtureRequest
) -> tuple[Where, Options]:
    if backend == "file":
        return tmp_path / "col", None
    server = request.getfixturevalue("s3")
    return f"{s3_prefix()}/col", s3_options(server, "obstore")


# -- sampled moments on S3 -------------------------------------------------------------------------
#: Kill moments per operation on S3 (each costs a new base collection on the server).
N_S3_DELAYS = 12 if SOAK else 2


@S3
@pytest.mark.parametrize("name", ["upsert_merge", "update", "drop"])
def test_sigkill_at_sampled_moments_on_s3(
    name: str, zygote: Zygote, request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    op = OPS[name]
    server = request.getfixturevalue("s3")
    options = s3_options(server, "obstore")

    def fresh() -> str:
        url = f"{s3_prefix()}/col"
        build_base(url, options)
        return url

    done = fresh()
    before = snapshot(done, options)
    full = zygote.run(done, op, options=options)
    assert "done" in full, full
    after = snapshot(done, options)
    assert not same(before, after)
    rng = numpy.random.default_rng(len(name))
    outcomes = []
    for j in range(N_S3_DELAYS):
        delay = full["elapsed"] * (1.5 * j / max(1, N_S3_DELAYS - 1) + rng.uniform(0, 0.05))
        url = fresh()
        out = zygote.run(url, op, kill_after=float(delay), options=options)
        what = f"{name} on S3, killed after {delay:.3f} s of ~{full['elapsed']:.3f} s"
        assert out["killed"] or "done" in out, (what, out)
        FIGURES["kills"] += int(out["killed"])
        outcomes.append(check_recovered(url, before, after, what, options))
        W.run_op(url, op, options)  # the collection stays writable
        assert same(snapshot(url, options), after), what
        assert not problems_of(url, options)
    FIGURES["operations"] += N_S3_DELAYS + 1
    print(f"{name} on S3: ~{full['elapsed']:.2f} s; outcomes {outcomes}")


# -- protocol steps file:// has and S3 had not -------------------------------------------------
@S3
@pytest.mark.parametrize(
    ("name", "die_at"),
    [
        ("insert_new", "after_writes"),
        ("update", "after_writes"),
        ("update", "after_catalog"),
        ("update", "after_txn_commit"),
    ],
)
def test_sigkill_at_remaining_protocol_steps_on_s3(
    name: str,
    die_at: str,
    zygote: Zygote,
    base: tuple[Path, Any],
    after_op: Any,
    tmp_path: Path,
    request: pytest.FixtureRequest,
) -> None:
    WI.test_sigkill_at_protocol_steps(
        name, die_at, "s3-obstore", zygote, base, after_op, tmp_path, request
    )
    FIGURES["kills"] += 1
    FIGURES["operations"] += 2


# -- repair and vacuum killed ----------------------------------------------------------------------
@pytest.mark.parametrize("backend", ["file", pytest.param("s3", marks=S3)])
@pytest.mark.parametrize("kind", ["repair", "vacuum"])
def test_sigkill_during_repair_and_vacuum(
    kind: str, backend: str, zygote: Zygote, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    """Killed at sampled moments, ``repair()`` / ``vacuum(0)`` change no content; the next
    ``rw`` open leaves a clean tree and both then run to the end."""
    n_delays = 12 if SOAK else (4 if backend == "file" else 2)
    durations = []
    for j in range(n_delays + 1):
        path, options = new_target(backend, tmp_path / f"{j}", request)
        build_base(path, options)
        # Something to repair and to collect: a writer that died after its writes.
        dead = {**OPS["upsert_merge"], "die_at": "after_writes"}
        assert zygote.run(url_of(path), dead, options=options)["killed"]
        before = snapshot(path, options)
        spread = 1.5 * (j - 1) / max(1, n_delays - 1)
        delay = None if j == 0 else float(numpy.median(durations)) * spread
        out = zygote.run(url_of(path), {"kind": kind}, kill_after=delay, options=options)
        if j == 0:
            assert "done" in out, out
            durations.append(out["elapsed"])
        FIGURES["kills"] += int(out["killed"])
        FIGURES["operations"] += 1
        what = f"{kind} on {backend}, killed after {delay} s"
        zc.open_collection(url_of(path), mode="rw", storage_options=options)  # recovery
        assert same(snapshot(path, options), before), what
        assert not significant_problems(path, options), what
        W.run_op(url_of(path), {"kind": kind}, options)
        assert same(snapshot(path, options), before), what
        assert not significant_problems(path, options), what


def significant_problems(path: Where, options: Options) -> list[str]:
    """:func:`problems_of`, less partition directories that hold no file at all.

    A ``repair()`` killed while it cleans up after a dead writer on file:// can
    leave that writer's partition directories as empty skeletons (``day=02/k/``)
    that later recoveries and repairs keep (no object store has directories:
    there, nothing is left). They hold no byte; they are counted in the figures.
    """
    problems = problems_of(path, options)
    if not isinstance(path, Path):
        return problems
    kept = []
    for problem in problems:
        prefix = "partition directories the catalog does not name: "
        if problem.startswith(prefix):
            dirs = ast.literal_eval(problem.removeprefix(prefix))  # the list the check printed
            full = [d for d in dirs if any(p.is_file() for p in (path / d).rglob("*"))]
            FIGURES["empty partition directories left (file://)"] += len(dirs) - len(full)
            if full:
                kept.append(f"{prefix}{full}")
        else:
            kept.append(problem)
    return kept


# -- the race ------------------------------------------------------------------------------------
#: Rows of one campaign insert (3 in each of 2 partitions).
BATCH_ROWS = len(W.campaign_rows(0, 0)["time"])
#: Seqs of one writer incarnation (a killed writer goes on with the next range).
SEQS_PER_LIFE = 100


def campaign_command(z: Zygote, cmd: Mapping[str, Any]) -> dict[str, Any]:
    assert z.proc.stdin is not None
    z.proc.stdin.write(json.dumps(cmd) + "\n")
    z.proc.stdin.flush()
    return z.next(30)


def race(
    z: Zygote,
    url: str,
    options: Options,
    tmp: Path,
    *,
    duration: float,
    maintainer: list[str] | None,
    kill_every: tuple[float, float] | None,
    seed: int,
    stuck_after: float = 20.0,
) -> dict[str, Any]:
    """Run the race (see the module docstring); returns what the journals say."""
    rng = random.Random(seed)
    stop = tmp / "stop"
    roles: dict[str, dict[str, Any]] = {}
    lives = collections.Counter[str]()

    def role(name: str) -> dict[str, Any]:
        common = {"url": url, "options": dict(options or {}), "stop": str(stop)}
        journal = str(tmp / f"{name}.journal")
        if name.startswith("writer"):
            w, life = int(name[-1]), lives[name]
            assert life < 7, "too many lives"
            seqs = [life * SEQS_PER_LIFE, (life + 1) * SEQS_PER_LIFE]
            return {
                **common,
                "kind": "writer",
                "wid": w,
                "seqs": seqs,
                "journal": journal,
                "stuck_after": stuck_after,
                "seed": seed + life,
            }
        return {
            **common,
            "kind": "maintainer",
            "ops": maintainer,
            "journal": journal,
            "seed": seed + lives[name],
        }

    def spawn(name: str) -> int:
        roles[name] = role(name)
        lives[name] += 1
        event = campaign_command(z, {"cmd": "spawn", "role": roles[name]})
        assert event["event"] == "spawned", event
        return int(event["pid"])

    names = ["writer0", "writer1"] + (["maintainer"] if maintainer else [])
    pids = {name: spawn(name) for name in names}
    kills = collections.Counter[str]()
    end = time.monotonic() + duration
    while time.monotonic() < end:
        if kill_every is None:
            time.sleep(0.1)
            continue
        time.sleep(rng.uniform(*kill_every))
        victim = rng.choice(names)
        event = campaign_command(z, {"cmd": "kill", "pid": pids[victim]})
        assert event["event"] == "exit", event
        kills[victim] += 1
        pids[victim] = spawn(victim)
    stop.touch()
    not_stopped = []
    deadline = time.monotonic() + stuck_after + 30
    for name, pid in pids.items():
        while True:
            event = campaign_command(z, {"cmd": "poll", "pid": pid})
            if event["event"] == "exit":
                break
            if time.monotonic() > deadline:
                not_stopped.append(name)
                campaign_command(z, {"cmd": "kill", "pid": pid})
                break
            time.sleep(0.05)
    journals: dict[str, list[list[str]]] = {
        name: [line.split(" ", 2) for line in (tmp / f"{name}.journal").read_text().splitlines()]
        for name in names
    }
    return {"journals": journals, "kills": kills, "not_stopped": not_stopped}


def final_check(path: Where, options: Options, summary: Mapping[str, Any]) -> dict[str, Any]:
    """Reopen (recovery), read everything; what was lost, torn or left behind."""
    journals = summary["journals"]
    ok = {
        int(e[1]) for n, j in journals.items() if n.startswith("writer") for e in j if e[0] == "ok"
    }
    begun = {
        int(e[1])
        for n, j in journals.items()
        if n.startswith("writer")
        for e in j
        if e[0] == "begin"
    }
    stuck = [e for j in journals.values() for e in j if e[0] == "stuck"]
    errors = [e for j in journals.values() for e in j if e[0] == "error"]
    zc.open_collection(url_of(path), mode="rw", storage_options=options)  # recovery
    ds = zc.read_collection(url_of(path), storage_options=options).compute()
    problems = []
    counts: dict[int, int] = {}
    if ds is not None:
        t, v, k = (numpy.asarray(ds[n].values) for n in ("time", "v", "k"))
        if len(t) > 1 and not (numpy.diff(t.view("int64")) > 0).all():
            problems.append("times are not strictly increasing")
        if not (v == W.expected_v(t)).all():
            problems.append("rows with values other than written")
        tags, n = numpy.unique(k, return_counts=True)
        counts = {int(a): int(b) for a, b in zip(tags, n, strict=True)}
    seed_tags = {1}
    torn = {tag: n for tag, n in counts.items() if tag not in seed_tags and n != BATCH_ROWS}
    unknown = set(counts) - begun - seed_tags
    lost = sorted(ok - set(counts))
    maintenance = collections.Counter(
        f"{e[1]} {e[0]}" for e in journals.get("maintainer", []) if e[0] in ("ok", "conflict")
    )
    return {
        "inserts returned": len(ok),
        "inserts begun": len(begun),
        "inserts present": len(set(counts) - seed_tags),
        "lost": lost,
        "rows lost": BATCH_ROWS * len(lost),
        "torn": torn,
        "unknown": sorted(unknown),
        "stuck": stuck,
        "errors": errors,
        "problems": problems + problems_of(path, options),
        "maintenance": dict(maintenance),
        "kills": dict(summary["kills"]),
        "not stopped": summary["not_stopped"],
    }


def run_race(
    backend: str,
    z: Zygote,
    tmp_path: Path,
    request: pytest.FixtureRequest,
    *,
    maintainer: list[str] | None,
    kill_every: tuple[float, float] | None,
    duration: float,
    seed: int,
) -> dict[str, Any]:
    path, options = new_target(backend, tmp_path, request)
    WI.create(path, chunks=64, options=options).insert(
        W.with_immutable(W.make_rows([[0, 2, 43_000, 43_100, 20, 0, 1]]))  # tag 1
    )
    summary = race(
        z,
        url_of(path),
        options,
        tmp_path,
        duration=duration * (10 if SOAK else 1),
        maintainer=maintainer,
        kill_every=kill_every,
        seed=seed,
    )
    result = final_check(path, options, summary)
    FIGURES["races"] += 1
    FIGURES["kills"] += sum(result["kills"].values())
    FIGURES["inserts returned"] += result["inserts returned"]
    FIGURES["rows lost"] += result["rows lost"]
    FIGURES["maintenance calls"] += sum(result["maintenance"].values())
    print(f"race on {backend}: {result}")
    return result


def assert_nothing_lost(result: Mapping[str, Any]) -> None:
    assert not result["errors"], result["errors"][:3]
    assert not result["problems"], result["problems"]
    assert not result["torn"], f"inserts partly present: {result['torn']}"
    assert not result["unknown"], result["unknown"]
    assert not result["stuck"], f"writers blocked: {result['stuck'][:3]}"
    assert not result["not stopped"], result["not stopped"]
    assert not result["lost"], (
        f"{len(result['lost'])} inserts that returned normally are gone "
        f"({result['rows lost']} rows): {result['lost']}"
    )


BACKENDS = ["file", pytest.param("s3", marks=S3)]


@pytest.mark.parametrize("backend", BACKENDS)
def test_writers_killed_at_random(
    backend: str, zygote: Zygote, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    """Two writers, killed and restarted at random moments: no insert that returned is
    lost, none is torn."""
    result = run_race(
        backend,
        zygote,
        tmp_path,
        request,
        maintainer=None,
        kill_every=(0.2, 0.6),
        duration=3.0,
        seed=1,
    )
    assert_nothing_lost(result)
    assert result["inserts returned"] >= 5 and sum(result["kills"].values()) >= 4, result


@pytest.mark.parametrize("backend", BACKENDS)
def test_repair_and_vacuum_racing_writers(
    backend: str, zygote: Zygote, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    result = run_race(
        backend,
        zygote,
        tmp_path,
        request,
        maintainer=["repair", "vacuum"],
        kill_every=None,
        duration=3.0,
        seed=2,
    )
    assert_nothing_lost(result)
    assert result["maintenance"].get("repair ok", 0) >= 3, result


@pytest.mark.parametrize("backend", BACKENDS)
def test_repair_and_vacuum_racing_writers_with_kills(
    backend: str, zygote: Zygote, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    result = run_race(
        backend,
        zygote,
        tmp_path,
        request,
        maintainer=["repair", "vacuum"],
        kill_every=(0.2, 0.6),
        duration=3.0,
        seed=3,
    )
    assert_nothing_lost(result)
