"""Faults on the wire: writes and reads through a proxy that resets, fails, slows and loses.

The session's S3 server sits behind :class:`fault_proxy.FaultProxy`, which
injects, with fixed seeds, connection resets, ``500``/``503`` answers, slow
answers, and lost answers (the server did the request, the client hears a
reset). A seeded sequence of inserts (``replace``, ``concat``,
``time_series``, ``upsert``), drops and reads runs through it, with the
client's default retries, while a model (the merge references, as in
``tests/test_stateful.py``) keeps what the collection must hold. After each
operation the collection is read beside the proxy:

* an operation that returned normally is there, whole;
* one that raised left the collection exactly as before or exactly as after
  (never a part), and that outcome is counted; one that raised although it
  landed is reported as ``failed but committed``;
* no operation runs longer than :data:`OP_BOUND` seconds (retries are bounded);
* at the end no committed row is missing.

The figures (operations, faults injected by kind, outcomes, rows lost) are
printed in the terminal summary. ``ZC_SOAK=1`` runs a much longer sequence.
"""

from __future__ import annotations

import collections
import os
import time
from collections.abc import Iterator
from typing import Any

import numpy
import pytest
from _figures import report
from conftest import s3_options, s3_prefix
from fault_proxy import FaultProxy
from s3_server import S3Server
from test_stateful import (
    BASE,
    DAY_NS,
    HOUR_NS,
    N_DAYS,
    N_HOURS,
    REF,
    VARIABLES,
    Row,
    canonical,
    day_of,
    schema,
    to_rows,
)

import dask_zcollection as zc

pytestmark = pytest.mark.s3

SOAK = os.environ.get("ZC_SOAK", "") not in ("", "0")
#: Operations per backend (fsspec's retries back off longer: fewer operations).
N_OPS = {"obstore": 400, "fsspec": 200} if SOAK else {"obstore": 16, "fsspec": 6}
#: Probability of each fault per request (about one request in twelve is hit).
RATES = {"reset": 0.02, "500": 0.015, "503": 0.015, "slow": 0.015, "lost": 0.02}
#: Seconds one operation may take, retries included.
OP_BOUND = 60.0
MERGES = ["replace", "concat", "time_series", "upsert"]

#: Figures of the module, by backend (printed at the end).
FIGURES: dict[str, collections.Counter[str]] = collections.defaultdict(collections.Counter)


@pytest.fixture(scope="module", autouse=True)
def _report(request: pytest.FixtureRequest) -> None:
    report(
        request.config,
        "faults on the wire",
        lambda: [
            f"{backend}: " + ", ".join(f"{k} {v}" for k, v in sorted(figures.items()))
            for backend, figures in FIGURES.items()
        ],
    )


@pytest.fixture
def proxy(s3: S3Server, request: pytest.FixtureRequest) -> Iterator[FaultProxy]:
    p = FaultProxy(s3.endpoint, RATES, seed=1234, slow=(0.02, 0.2))
    yield p
    p.close()


def through(proxy: FaultProxy, s3: S3Server, backend: str) -> dict[str, Any]:
    """``storage_options`` of ``backend`` reaching the server through ``proxy``."""
    options = s3_options(s3, backend)
    if backend == "fsspec":
        return {**options, "endpoint_url": proxy.endpoint}
    return {**options, "endpoint": proxy.endpoint}


def stored_rows(url: str, options: dict[str, Any]) -> tuple[list[str], list[Row]]:
    """Partitions and rows of the collection (read beside the proxy)."""
    col = zc.open_collection(url, storage_options=options)
    ds = zc.read_collection(url, storage_options=options).compute()
    rows = [] if ds is None else to_rows({n: numpy.asarray(ds[n].values) for n in VARIABLES})
    return col.partitions(), rows


def model_rows(model: dict[int, list[Row]]) -> tuple[list[str], list[Row]]:
    days = sorted(model)
    return [canonical(d) for d in days], [r for d in days for r in model[d]]


def batch(rng: numpy.random.Generator, first_id: int) -> dict[str, numpy.ndarray]:
    n = int(rng.integers(1, 15))
    days = rng.choice(N_DAYS, size=int(rng.integers(1, 4)), replace=False)
    keys = rng.choice(days, n) * DAY_NS + rng.integers(0, N_HOURS, n) * HOUR_NS
    ids = numpy.arange(first_id, first_id + n, dtype="float64")
    return {
        "time": BASE + keys.astype("timedelta64[ns]"),
        "v": ids,
        "w": numpy.stack([ids * 0.25, -ids], axis=1).astype("float32"),
    }


def apply_insert(
    model: dict[int, list[Row]], data: dict[str, numpy.ndarray], merge: str
) -> dict[int, list[Row]]:
    reference = getattr(REF, f"ref_{merge}")
    inserted = to_rows(data)
    out = dict(model)
    for day in sorted({day_of(r) for r in inserted}):
        out[day] = reference(model.get(day, []), [r for r in inserted if day_of(r) == day])
    return out


@pytest.mark.parametrize("backend", ["obstore", "fsspec"])
def test_writes_through_faults(backend: str, s3: S3Server, proxy: FaultProxy) -> None:
    figures = FIGURES[backend]
    url = f"{s3_prefix()}/col"
    direct = s3_options(s3, backend)
    faulty = through(proxy, s3, backend)
    zc.create_collection(
        url,
        schema=schema(3),
        axis="time",
        partitioning=zc.partitioning.Date(("time",), resolution="D"),
        storage_options=direct,
    )
    col = zc.open_collection(url, mode="rw", storage_options=faulty)
    rng = numpy.random.default_rng(7)
    model: dict[int, list[Row]] = {}
    next_id = 0
    failures: list[str] = []
    proxy.arm()
    for i in range(N_OPS[backend]):
        kind = str(rng.choice(["insert", "insert", "insert", "insert", "drop", "read"]))
        before = model
        start = time.monotonic()
        error: BaseException | None = None
        if kind == "insert":
            merge = str(rng.choice(MERGES))
            data = batch(rng, next_id)
            next_id += len(data["time"])
            after = apply_insert(model, data, merge)
            what = f"op {i}: insert {merge} of {len(data['time'])} rows"
            try:
                col.insert(data, merge=merge)
            except Exception as err:
                error = err
        elif kind == "drop":
            day = int(rng.integers(0, N_DAYS))
            after = {d: r for d, r in model.items() if d != day}
            what = f"op {i}: drop day {day + 1}"
            try:
                col.drop_partitions(f"day == {day + 1}")
            except Exception as err:
                error = err
        else:
            after = model
            what = f"op {i}: read"
            try:
                ds = zc.read_collection(url, storage_options=faulty).compute()
                got = [] if ds is None else to_rows({n: ds[n].values for n in VARIABLES})
                assert got == model_rows(model)[1], f"{what}: the read differs from the model"
            except AssertionError:
                raise
            except Exception as err:
                error = err
        elapsed = time.monotonic() - start
        figures["operations"] += 1
        figures[f"{kind}s"] += 1
        figures["max seconds per operation"] = max(
            figures["max seconds per operation"], round(elapsed)
        )
        assert elapsed < OP_BOUND, f"{what}: {elapsed:.1f} s (retries unbounded?)"
        with proxy.calm():
            state = stored_rows(url, direct)
        if error is None:
            assert state == model_rows(after), f"{what} returned normally but is not there whole"
            model = after
            continue
        figures[f"{kind}s failed ({type(error).__name__})"] += 1
        if state == model_rows(before):
            figures[f"{kind}s failed, nothing written"] += 1
        elif state == model_rows(after):
            figures[f"{kind}s failed but committed"] += 1
            failures.append(f"{what} raised {error!r} but committed")
            model = after
        else:
            raise AssertionError(f"{what} raised {error!r} and left a partial state") from error
        # The handle stays usable after a failure (a new one would run recovery).
    proxy.arm(False)
    for kind in ("faults", *RATES):
        figures[f"faults {kind}" if kind != "faults" else "faults injected"] = proxy.counts[kind]
    figures["requests"] = proxy.counts["requests"]
    for method, n in proxy.lost_methods.items():
        figures[f"lost answers to {method}"] = n
    _, rows = stored_rows(url, direct)
    expected = model_rows(model)[1]
    missing = collections.Counter(expected) - collections.Counter(rows)
    figures["rows committed"] = len(expected)
    figures["rows lost"] = sum(missing.values())
    assert not missing
    assert proxy.counts["faults"] >= N_OPS[backend], proxy.counts  # the faults did happen
    assert not failures, "\n".join(failures)


# -- one fault at a chosen request --------------------------------------------------------------
@pytest.mark.parametrize("backend", ["obstore", "fsspec"])
@pytest.mark.parametrize("fault", ["lost", "reset", "503"])
def test_conditional_put_and_delete_survive_one_fault(
    backend: str, fault: str, s3: S3Server, proxy: FaultProxy
) -> None:
    """A create-if-absent whose request or answer is lost is sent again and reports the
    truth (its own bytes there: created; another's: not); a delete likewise."""
    from dask_zcollection._sync import sync
    from dask_zcollection.store import resolve_store

    prefix = s3_prefix()
    spec = resolve_store(prefix, through(proxy, s3, backend))
    beside = resolve_store(prefix, s3_options(s3, backend))
    proxy.plan(fault, method="PUT", contains="/mine")
    assert sync(spec.put_if_absent("mine", b"A")) is True
    assert proxy.planned_left() == 0
    assert sync(beside.get("mine")) == b"A"
    sync(beside.put("theirs", b"B"))
    proxy.plan(fault, method="PUT", contains="/theirs")
    assert sync(spec.put_if_absent("theirs", b"C")) is False
    assert sync(beside.get("theirs")) == b"B"
    proxy.plan(fault, method="POST", contains="?delete")
    sync(spec.delete("mine"))
    assert proxy.planned_left() == 0
    assert sync(beside.get("mine")) is None


#: Requests of one insert (the substring of their request line) that get the fault.
STEPS = {
    "lease": "/_transactions/",
    "partition lock": "/_locks/",
    "partition claim": "/zarr.json",
    "catalog commit": "/_catalog/v",
}


@pytest.mark.parametrize("step", list(STEPS))
@pytest.mark.parametrize("fault", ["lost", "reset"])
def test_insert_survives_a_fault_at_each_protocol_step(
    step: str, fault: str, s3: S3Server, proxy: FaultProxy
) -> None:
    """The answer to (or the request of) one create-if-absent of the commit protocol is
    lost: the insert still returns normally, once, with every row there exactly once.
    (Before obstore's conditional puts were retried, a lost answer to the catalog commit
    made an insert that had landed raise, and a lost lock made the next abort wait 120 s.)"""
    url = f"{s3_prefix()}/col"
    direct = s3_options(s3, "obstore")
    col = zc.create_collection(
        url,
        schema=schema(3),
        axis="time",
        partitioning=zc.partitioning.Date(("time",), resolution="D"),
        storage_options=through(proxy, s3, "obstore"),
    )
    first = batch(numpy.random.default_rng(1), 0)
    col.insert(first, merge="concat")
    second = batch(numpy.random.default_rng(2), 100)
    version = col.catalog(refresh=True).version
    proxy.plan(fault, method="PUT", contains=STEPS[step])
    start = time.monotonic()
    col.insert(second, merge="concat")
    assert time.monotonic() - start < 10
    assert proxy.planned_left() == 0
    expected = apply_insert(apply_insert({}, first, "concat"), second, "concat")
    assert stored_rows(url, direct) == model_rows(expected)
    assert (
        zc.open_collection(url, storage_options=direct).catalog(refresh=True).version == version + 1
    )


@pytest.mark.parametrize("step", ["partition lock", "catalog commit"])
def test_a_create_whose_answers_stay_lost_reports_what_landed(
    step: str, s3: S3Server, proxy: FaultProxy
) -> None:
    """Every attempt of a create-if-absent loses its answer (more than the adapter
    retries): the adapter looks before reporting a failure, so a commit that landed is
    reported as landed (it raised before, and a caller retrying inserted twice), and a
    lock that landed is held, not left behind for 120 s of abort wait and a
    ``ConflictError`` for the next insert."""
    from dask_zcollection.store._obstore import CREATE_ATTEMPTS

    url = f"{s3_prefix()}/col"
    col = zc.create_collection(
        url,
        schema=schema(3),
        axis="time",
        partitioning=zc.partitioning.Date(("time",), resolution="D"),
        storage_options=through(proxy, s3, "obstore"),
    )
    first, second = batch(numpy.random.default_rng(1), 0), batch(numpy.random.default_rng(2), 100)
    col.insert(first, merge="concat")
    proxy.plan("lost", method="PUT", contains=STEPS[step], times=CREATE_ATTEMPTS)
    start = time.monotonic()
    col.insert(second, merge="concat")
    assert time.monotonic() - start < 10
    assert proxy.planned_left() == 0
    third = batch(numpy.random.default_rng(3), 200)
    col.insert(third, merge="concat")  # nothing left blocks the next insert
    expected: dict[int, list[Row]] = {}
    for data in (first, second, third):
        expected = apply_insert(expected, data, "concat")
    assert stored_rows(url, s3_options(s3, "obstore")) == model_rows(expected)


def test_a_clean_up_failing_after_the_commit_does_not_fail_the_insert(
    s3: S3Server, proxy: FaultProxy
) -> None:
    from dask_zcollection.store._obstore import DELETE_ATTEMPTS

    url = f"{s3_prefix()}/col"
    direct = s3_options(s3, "obstore")
    col = zc.create_collection(
        url,
        schema=schema(3),
        axis="time",
        partitioning=zc.partitioning.Date(("time",), resolution="D"),
        storage_options=through(proxy, s3, "obstore"),
    )
    first, second = batch(numpy.random.default_rng(1), 0), batch(numpy.random.default_rng(2), 100)
    col.insert(first, merge="concat")
    version = col.catalog(refresh=True).version
    # Every attempt of the next delete (the release of a lock, after the commit) is reset.
    proxy.plan("reset", method="POST", contains="?delete", times=DELETE_ATTEMPTS)
    try:
        col.insert(second, merge="concat")
    finally:
        # Whatever the insert said, it landed, once.
        committed = zc.open_collection(url, storage_options=direct).catalog(refresh=True)
        assert committed.version == version + 1
        expected = apply_insert(apply_insert({}, first, "concat"), second, "concat")
        assert stored_rows(url, direct) == model_rows(expected)
