"""Random sequences of writes against an in-memory model (hypothesis stateful testing).

A :class:`~hypothesis.stateful.RuleBasedStateMachine` inserts (every merge
strategy, numpy or dask-backed input with random chunks, rows in random order,
duplicate keys included), drops partitions (random filters), updates a variable,
repairs and vacuums one collection, and keeps a model of what each partition
must hold: the merge references of ``tests/merge/test_merge_strategies.py``
applied per partition to lists of rows. After every step the whole collection
is read back (``read_collection(url).compute()``) and compared with the model:
the partition list and order, every row, every value bit for bit.

It runs on every backend of ``store_url``: file, memory, Icechunk and S3 (the
session's SeaweedFS server). Seeds are fixed (``derandomize``) and the runs are
short; ``ZC_SOAK=1`` runs many more and longer sequences (e.g.
``ZC_SOAK=1 pytest tests/test_stateful.py``).
"""

from __future__ import annotations

import importlib.util
import itertools
import os
from collections.abc import Callable, Mapping
from fractions import Fraction
from pathlib import Path
from typing import Any

import dask.array as da
import numpy
import pytest
from _figures import report
from hypothesis import HealthCheck, Phase, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    rule,
    run_state_machine_as_test,
)

import dask_zcollection as zc
from dask_zcollection.merge import upsert_within

# The per-partition merge references (one reference, shared with the merge tests).
_spec = importlib.util.spec_from_file_location(
    "zc_merge_reference", Path(__file__).parent / "merge" / "test_merge_strategies.py"
)
assert _spec is not None and _spec.loader is not None
REF = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(REF)

Row = tuple[Any, ...]
Columns = dict[str, numpy.ndarray]

SOAK = os.environ.get("ZC_SOAK", "") not in ("", "0")
#: Sequences per backend and steps per sequence (CI / soak).
EXAMPLES, STEPS = (100, 50) if SOAK else (10, 15)

DAY_NS = 86_400 * 10**9
HOUR_NS = 3_600 * 10**9
BASE = numpy.datetime64("2024-01-01", "ns")
N_DAYS = 5  # partitions day=01 .. day=05
N_HOURS = 8  # keys per day: duplicates and overlaps abound
N_X = 2
#: Variables in the order rows carry them (the axis first, as the references expect).
VARIABLES = ("time", "v", "w")
DTYPES = {"time": numpy.dtype("datetime64[ns]"), "v": numpy.dtype("float64"), "w": "float32"}
TOLERANCES = [numpy.timedelta64(0, "ns"), numpy.timedelta64(90, "m"), numpy.timedelta64(3, "h")]


def schema(chunks: int) -> zc.Schema:
    return (
        zc.Schema()
        .with_dimension("time", chunks=chunks)
        .with_dimension("x", size=N_X)
        .with_variable("time", dtype="datetime64[ns]", dimensions=("time",))
        .with_variable("v", dtype="float64", dimensions=("time",), fill_value=numpy.nan)
        .with_variable("w", dtype="float32", dimensions=("time", "x"))
        .build()
    )


def canonical(day: int) -> str:
    return f"year=2024/month=01/day={day + 1:02d}"


def to_rows(columns: Mapping[str, numpy.ndarray]) -> list[Row]:
    """Rows ``(key, bytes of time, bytes of v, bytes of w)`` (the references' form)."""
    return list(REF.rows({n: columns[n] for n in VARIABLES}))


def from_rows(rows: list[Row]) -> Columns:
    out = {}
    for i, name in enumerate(VARIABLES):
        dtype = numpy.dtype(DTYPES[name])
        flat = numpy.frombuffer(b"".join(r[1 + i] for r in rows), dtype=dtype)
        out[name] = flat.reshape(len(rows), N_X) if name == "w" else flat.copy()
    return out


def day_of(row: Row) -> int:
    """The partition (days since ``BASE``) of a row (its key: nanoseconds since the epoch)."""
    return int((row[0] - int(BASE.astype("int64"))) // DAY_NS)


#: The update functions: name -> (the function given to ``update``, variables it reads).
def _shift_v(ds: Any) -> dict[str, numpy.ndarray]:
    return {"v": numpy.asarray(ds["v"].values) + 0.5}


def _w_from_v(ds: Any) -> dict[str, numpy.ndarray]:
    v = numpy.asarray(ds["v"].values)
    return {"w": (v[:, None] * numpy.array([1.0, -2.0])).astype("float32")}


UPDATES: dict[str, Callable[[Any], dict[str, numpy.ndarray]]] = {
    "shift_v": _shift_v,
    "w_from_v": _w_from_v,
}


class _Partition:
    """What :func:`_apply_update` needs of a partition: ``ds[name].values``."""

    def __init__(self, columns: Columns) -> None:
        self._columns = columns

    def __getitem__(self, name: str) -> Any:
        return type("V", (), {"values": self._columns[name]})()


def _apply_update(name: str, rows: list[Row]) -> list[Row]:
    columns = from_rows(rows)
    columns.update(UPDATES[name](_Partition(columns)))
    return to_rows(columns)


# -- the strategies of the rules --------------------------------------------------------------
@st.composite
def batches(draw: st.DrawFn) -> list[tuple[int, int]]:
    """(day, hour) of each row, in random order, duplicates allowed."""
    days = draw(st.lists(st.integers(0, N_DAYS - 1), min_size=1, max_size=3, unique=True))
    cells = st.tuples(st.sampled_from(days), st.integers(0, N_HOURS - 1))
    return draw(st.lists(cells, min_size=1, max_size=14))


FILTERS = st.one_of(
    st.integers(0, N_DAYS - 1).map(lambda d: (f"day == {d + 1}", {d})),
    st.tuples(st.integers(0, N_DAYS - 1), st.integers(0, N_DAYS - 1)).map(
        lambda ab: (
            f"day >= {min(ab) + 1} and day <= {max(ab) + 1}",
            set(range(min(ab), max(ab) + 1)),
        )
    ),
    st.lists(st.integers(0, N_DAYS - 1), min_size=1, max_size=3, unique=True).map(
        lambda ds: (f"day in ({', '.join(str(d + 1) for d in ds)},)", set(ds))
    ),
)


#: Figures of the whole session: steps run per rule.
FIGURES: dict[str, int] = {}


def make_machine(base_url: str) -> type[RuleBasedStateMachine]:
    """The state machine of one backend: each sequence writes a new collection under it."""
    counter = itertools.count()

    class Writes(RuleBasedStateMachine):
        def __init__(self) -> None:
            super().__init__()
            self.url = f"{base_url}/s{next(counter)}"
            self.col: zc.Collection | None = None
            #: day -> the rows it must hold, in stored order.
            self.model: dict[int, list[Row]] = {}
            self.next_id = 0

        def _count(self, what: str) -> None:
            FIGURES[what] = FIGURES.get(what, 0) + 1

        @initialize(chunks=st.integers(1, 6))
        def create(self, chunks: int) -> None:
            self.col = zc.create_collection(
                self.url,
                schema=schema(chunks),
                axis="time",
                partitioning=zc.partitioning.Date(("time",), resolution="D"),
            )

        def _insert(
            self,
            cells: list[tuple[int, int]],
            merge: str,
            lazy: bool,
            data: st.DataObject,
            tolerance: numpy.timedelta64 | None = None,
        ) -> None:
            assert self.col is not None
            n = len(cells)
            keys = numpy.array([d * DAY_NS + h * HOUR_NS for d, h in cells], "int64")
            ids = numpy.arange(self.next_id, self.next_id + n, dtype="float64")
            self.next_id += n
            columns: Columns = {
                "time": BASE + keys.astype("timedelta64[ns]"),
                "v": ids,
                "w": numpy.stack([ids * 0.25, -ids], axis=1).astype("float32"),
            }
            given: dict[str, Any] = dict(columns)
            if lazy:  # dask-backed input, random chunks (the same for every variable)
                chunk = data.draw(st.integers(1, n), label="chunk")
                given = {
                    k: da.from_array(v, chunks=(chunk, *v.shape[1:])) for k, v in given.items()
                }
            if tolerance is None:
                written = self.col.insert(given, merge=merge)
                reference = getattr(REF, f"ref_{merge}")
            else:
                written = self.col.insert(given, merge=upsert_within(tolerance))
                reference = REF.ref_upsert_within(
                    Fraction(int(tolerance.astype("timedelta64[ns]").astype("int64")))
                )
            assert sorted(written) == sorted({canonical(d) for d, _ in cells})
            inserted = to_rows(columns)
            for day in sorted({d for d, _ in cells}):
                mine = [r for r in inserted if day_of(r) == day]
                self.model[day] = reference(self.model.get(day, []), mine)
            self._count(f"insert {merge}{' (dask)' if lazy else ''}")

        # One rule per strategy: inserts are half of the steps.
        @rule(cells=batches(), lazy=st.booleans(), data=st.data())
        def insert_replace(self, cells: Any, lazy: bool, data: st.DataObject) -> None:
            self._insert(cells, "replace", lazy, data)

        @rule(cells=batches(), lazy=st.booleans(), data=st.data())
        def insert_concat(self, cells: Any, lazy: bool, data: st.DataObject) -> None:
            self._insert(cells, "concat", lazy, data)

        @rule(cells=batches(), lazy=st.booleans(), data=st.data())
        def insert_time_series(self, cells: Any, lazy: bool, data: st.DataObject) -> None:
            self._insert(cells, "time_series", lazy, data)

        @rule(cells=batches(), lazy=st.booleans(), data=st.data())
        def insert_upsert(self, cells: Any, lazy: bool, data: st.DataObject) -> None:
            self._insert(cells, "upsert", lazy, data)

        @rule(
            cells=batches(),
            lazy=st.booleans(),
            data=st.data(),
            tolerance=st.sampled_from(TOLERANCES),
        )
        def insert_upsert_within(
            self, cells: Any, lazy: bool, data: st.DataObject, tolerance: numpy.timedelta64
        ) -> None:
            self._insert(cells, "upsert_within", lazy, data, tolerance)

        @rule(selected=FILTERS)
        def drop(self, selected: tuple[str, set[int]]) -> None:
            assert self.col is not None
            filters, days = selected
            dropped = self.col.drop_partitions(filters)
            expected = sorted(d for d in days if d in self.model)
            assert dropped == [canonical(d) for d in expected]
            for d in expected:
                del self.model[d]
            self._count("drop")

        @rule(selected=st.none() | FILTERS, name=st.sampled_from(sorted(UPDATES)))
        def update(self, selected: tuple[str, set[int]] | None, name: str) -> None:
            assert self.col is not None
            filters, days = (None, set(self.model)) if selected is None else selected
            written = self.col.update(UPDATES[name], filters=filters, variables=["v"])
            expected = sorted(d for d in days if d in self.model)
            assert sorted(written or []) == [canonical(d) for d in expected]
            for d in expected:
                self.model[d] = _apply_update(name, self.model[d])
            self._count("update")

        @rule()
        def repair(self) -> None:
            assert self.col is not None
            self.col.repair()
            self._count("repair")

        @rule()
        def vacuum(self) -> None:
            assert self.col is not None
            self.col.vacuum(older_than=0)
            self._count("vacuum")

        @rule()
        def reopen(self) -> None:
            """A new handle (and, in ``rw`` mode, the recovery it runs) changes nothing."""
            self.col = zc.open_collection(self.url, mode="rw")
            self._count("reopen")

        @invariant()
        def contents_match_the_model(self) -> None:
            if self.col is None:
                return
            days = sorted(self.model)
            assert self.col.partitions() == [canonical(d) for d in days]
            assert zc.open_collection(self.url).partitions() == [canonical(d) for d in days]
            got = zc.read_collection(self.url).compute()
            expected = [r for d in days for r in self.model[d]]
            if not expected:
                assert got is None
                return
            assert got is not None
            stored = {n: numpy.asarray(got[n].values) for n in VARIABLES}
            for name in VARIABLES:
                assert stored[name].dtype == numpy.dtype(DTYPES[name]), name
            assert len(stored["time"]) == len(expected), (len(stored["time"]), len(expected))
            mismatch = [
                (i, a, b)
                for i, (a, b) in enumerate(zip(to_rows(stored), expected, strict=True))
                if a != b
            ]
            assert not mismatch, f"{len(mismatch)} rows differ, first {mismatch[0]}"
            catalog = self.col.catalog(refresh=True)
            assert catalog.rows.tolist() == [len(self.model[d]) for d in days]
            self._count("full reads")

    return Writes


@pytest.fixture(scope="module", autouse=True)
def _figures(request: pytest.FixtureRequest) -> None:
    report(
        request.config,
        "stateful test: steps by rule (all backends)",
        lambda: [", ".join(f"{k} {v}" for k, v in sorted(FIGURES.items()))] if FIGURES else [],
    )


def test_writes_match_the_model(store_url: str, request: pytest.FixtureRequest) -> None:
    machine = make_machine(store_url)
    machine.TestCase.settings = settings(
        max_examples=EXAMPLES,
        stateful_step_count=STEPS,
        derandomize=True,
        deadline=None,
        suppress_health_check=list(HealthCheck),
        # No shrinking: the sequences are short, and shrinking one replays it hundreds
        # of times against a real store.
        phases=[Phase.explicit, Phase.reuse, Phase.generate],
    )
    run_state_machine_as_test(machine, settings=machine.TestCase.settings)
