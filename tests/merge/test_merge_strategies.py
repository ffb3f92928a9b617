"""Merge strategies against slow-but-obvious references on lists of rows."""

from __future__ import annotations

import datetime
import math
import pickle
from collections.abc import Callable, Mapping
from fractions import Fraction
from typing import Any

import numpy
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dask_zcollection.errors import InvalidInputError, MergeError
from dask_zcollection.merge import (
    AxisRange,
    CallableStrategy,
    MergeStrategy,
    concat,
    replace,
    resolve,
    time_series,
    upsert,
    upsert_within,
)

AXIS = "time"
AXIS_DTYPES = ["int64", "int32", "uint16", "float64", "datetime64[s]", "datetime64[ns]"]

Columns = dict[str, numpy.ndarray]
Row = tuple[Any, ...]


# --- building data ------------------------------------------------------------------------------


def make_columns(keys: list[int], dtype: str, first_id: int, seed: int) -> Columns:
    """Columns whose rows are all distinguishable (``ssh`` is a unique row id)."""
    n = len(keys)
    rng = numpy.random.default_rng(seed)
    return {
        AXIS: numpy.asarray(keys, dtype=numpy.int64).astype(dtype),
        "ssh": numpy.arange(first_id, first_id + n, dtype=numpy.float64),
        "data_01/ku/power": rng.standard_normal((n, 3)).astype(numpy.float32),
        "flags": rng.integers(0, 100, size=(n, 2, 2), dtype=numpy.int16),
    }


@st.composite
def merge_inputs(draw: st.DrawFn, *, sorted_existing: bool = False) -> tuple[Any, ...]:
    """(existing or None, inserted, dtype): small key ranges, so duplicates and overlaps abound."""
    dtype = draw(st.sampled_from(AXIS_DTYPES))
    keys = st.integers(0, 30)
    existing_keys = draw(st.none() | st.lists(keys, max_size=25))
    shift = draw(st.sampled_from([0, 0, 15, 40]))  # 40: inserted strictly after existing
    inserted_keys = [k + shift for k in draw(st.lists(keys, max_size=25))]
    seed = draw(st.integers(0, 2**16))
    existing = None
    if existing_keys is not None:
        if sorted_existing:
            existing_keys = sorted(existing_keys)
        existing = make_columns(existing_keys, dtype, 0, seed)
    inserted = make_columns(inserted_keys, dtype, 1000, seed + 1)
    return existing, inserted, dtype


def key_of(value: Any) -> Any:
    """An exact Python number for an axis scalar."""
    if isinstance(value, numpy.datetime64):
        return int(value.astype(numpy.int64))
    return value.item()


def rows(columns: Mapping[str, numpy.ndarray] | None) -> list[Row]:
    """Each row as (axis key, bytes of every variable's row), in the mapping's variable order."""
    if columns is None:
        return []
    names = list(columns)
    n = len(columns[AXIS])
    return [
        (
            key_of(columns[AXIS][i]),
            *(numpy.ascontiguousarray(columns[v][i]).tobytes() for v in names),
        )
        for i in range(n)
    ]


def by_key(row: Row) -> Any:
    return row[0]


# --- references -----------------------------------------------------------------------------------


def ref_replace(existing: list[Row], inserted: list[Row]) -> list[Row]:
    return sorted(inserted, key=by_key)


def ref_concat(existing: list[Row], inserted: list[Row]) -> list[Row]:
    return sorted(existing + inserted, key=by_key)


def ref_time_series(existing: list[Row], inserted: list[Row]) -> list[Row]:
    if not inserted:
        return sorted(existing, key=by_key)
    low = min(r[0] for r in inserted)
    high = max(r[0] for r in inserted)
    kept = [r for r in existing if not low <= r[0] <= high]
    return sorted(kept + inserted, key=by_key)


def last_wins(inserted: list[Row]) -> dict[Any, Row]:
    latest: dict[Any, Row] = {}
    for row in inserted:
        latest[row[0]] = row
    return latest


def ref_upsert(existing: list[Row], inserted: list[Row]) -> list[Row]:
    latest = last_wins(inserted)
    kept = [r for r in existing if r[0] not in latest]
    return sorted(kept + list(latest.values()), key=by_key)


def ref_upsert_within(tolerance: Fraction) -> Callable[[list[Row], list[Row]], list[Row]]:
    def reference(existing: list[Row], inserted: list[Row]) -> list[Row]:
        latest = last_wins(inserted)
        kept = [
            r
            for r in existing
            if all(abs(Fraction(r[0]) - Fraction(k)) > tolerance for k in latest)
        ]
        return sorted(kept + list(latest.values()), key=by_key)

    return reference


REFERENCES: list[tuple[MergeStrategy, Callable[[list[Row], list[Row]], list[Row]]]] = [
    (replace, ref_replace),
    (concat, ref_concat),
    (time_series, ref_time_series),
    (upsert, ref_upsert),
]


def check_result(result: Mapping[str, numpy.ndarray], inserted: Columns) -> None:
    """Same variables (in order), dtypes and trailing shapes as the inserted data."""
    assert list(result) == list(inserted)
    for name, array in result.items():
        assert isinstance(array, numpy.ndarray)
        assert array.dtype == inserted[name].dtype, name
        assert array.shape[1:] == inserted[name].shape[1:], name
        assert array.shape[0] == result[AXIS].shape[0], name
    keys = result[AXIS]
    assert bool(numpy.all(keys[:-1] <= keys[1:]))


def stats(columns: Columns | None) -> AxisRange | None:
    return None if columns is None else AxisRange.from_array(columns[AXIS])


# --- strategies against references ----------------------------------------------------------------


# Ids without the references' addresses: every pytest-xdist worker collects the same ids.
@pytest.mark.parametrize(
    ("strategy", "reference"), REFERENCES, ids=[repr(s) for s, _ in REFERENCES]
)
@given(data=merge_inputs())
@settings(deadline=None, max_examples=150)
def test_strategy_matches_reference(
    strategy: MergeStrategy, reference: Callable[..., list[Row]], data: tuple[Any, ...]
) -> None:
    existing, inserted, _ = data
    result = strategy(existing, inserted, axis=AXIS)
    check_result(result, inserted)
    assert rows(result) == reference(rows(existing), rows(inserted))


@given(data=merge_inputs(), ticks=st.integers(0, 6), half=st.booleans())
@settings(deadline=None, max_examples=200)
def test_upsert_within_matches_reference(data: tuple[Any, ...], ticks: int, half: bool) -> None:
    existing, inserted, dtype = data
    kind = numpy.dtype(dtype).kind
    if kind == "M":
        unit = numpy.datetime_data(numpy.dtype(dtype))[0]
        # Express the tolerance in a finer unit than the axis, with an extra half tick.
        finer = {"s": ("ms", 1000), "ns": ("ps", 1000)}[unit]
        tolerance: Any = numpy.timedelta64(
            ticks * finer[1] + (finer[1] // 2 if half else 0), finer[0]
        )
        exact = Fraction(int(tolerance.astype(numpy.int64)), finer[1])
    else:
        tolerance = ticks + 0.5 if half else ticks
        exact = Fraction(tolerance)
    strategy = upsert_within(tolerance)
    result = strategy(existing, inserted, axis=AXIS)
    check_result(result, inserted)
    assert rows(result) == ref_upsert_within(exact)(rows(existing), rows(inserted))


@given(data=merge_inputs())
@settings(deadline=None, max_examples=50)
def test_upsert_within_zero_is_upsert(data: tuple[Any, ...]) -> None:
    existing, inserted, dtype = data
    zero = numpy.timedelta64(0, "s") if numpy.dtype(dtype).kind == "M" else 0
    expected = upsert(existing, inserted, axis=AXIS)
    assert rows(upsert_within(zero)(existing, inserted, axis=AXIS)) == rows(expected)


def test_concat_ties_keep_existing_first() -> None:
    existing = {AXIS: numpy.array([1, 2, 2]), "v": numpy.array([10, 20, 21])}
    inserted = {AXIS: numpy.array([2, 0, 2]), "v": numpy.array([30, 31, 32])}
    result = concat(existing, inserted, axis=AXIS)
    numpy.testing.assert_array_equal(result[AXIS], [0, 1, 2, 2, 2, 2])
    numpy.testing.assert_array_equal(result["v"], [31, 10, 20, 21, 30, 32])


def test_upsert_last_inserted_duplicate_wins() -> None:
    existing = {AXIS: numpy.array([1, 2, 3]), "v": numpy.array([10, 20, 30])}
    inserted = {AXIS: numpy.array([3, 2, 3, 2]), "v": numpy.array([1, 2, 3, 4])}
    result = upsert(existing, inserted, axis=AXIS)
    numpy.testing.assert_array_equal(result[AXIS], [1, 2, 3])
    numpy.testing.assert_array_equal(result["v"], [10, 4, 3])


def test_time_series_closed_interval() -> None:
    existing = {AXIS: numpy.arange(6).astype("M8[D]"), "v": numpy.arange(6)}
    inserted = {AXIS: numpy.array([4, 2], dtype="M8[D]"), "v": numpy.array([40, 20])}
    result = time_series(existing, inserted, axis=AXIS)
    numpy.testing.assert_array_equal(result[AXIS].astype(int), [0, 1, 2, 4, 5])
    numpy.testing.assert_array_equal(result["v"], [0, 1, 20, 40, 5])


def test_upsert_within_datetime_neighbours() -> None:
    existing = {AXIS: numpy.array([0, 9, 10, 11, 12, 30], dtype="M8[s]"), "v": numpy.arange(6)}
    inserted = {AXIS: numpy.array([10, 10], dtype="M8[s]"), "v": numpy.array([100, 101])}
    result = upsert_within(datetime.timedelta(seconds=1, milliseconds=500))(
        existing, inserted, axis=AXIS
    )
    numpy.testing.assert_array_equal(result[AXIS].astype(int), [0, 10, 12, 30])
    numpy.testing.assert_array_equal(result["v"], [0, 101, 4, 5])


@pytest.mark.parametrize("dtype", ["int64", "uint64"])
def test_upsert_within_no_overflow_at_extremes(dtype: str) -> None:
    info = numpy.iinfo(dtype)
    existing = {AXIS: numpy.array([info.min, info.max - 5], dtype=dtype), "v": numpy.array([1, 2])}
    inserted = {AXIS: numpy.array([info.max], dtype=dtype), "v": numpy.array([3])}
    result = upsert_within(1)(existing, inserted, axis=AXIS)
    numpy.testing.assert_array_equal(result["v"], [1, 2, 3])
    result = upsert_within(5)(existing, inserted, axis=AXIS)
    numpy.testing.assert_array_equal(result["v"], [1, 3])
    result = upsert_within(math.inf)(existing, inserted, axis=AXIS)
    numpy.testing.assert_array_equal(result["v"], [3])


def test_replace_and_none_existing_return_sorted_inserted() -> None:
    inserted = make_columns([5, 1, 3, 1], "datetime64[ns]", 0, 0)
    expected = sorted(rows(inserted), key=by_key)
    for strategy in (replace, concat, time_series):
        assert rows(strategy(None, inserted, axis=AXIS)) == expected
    assert rows(replace(make_columns([0, 9], "datetime64[ns]", 50, 1), inserted, axis=AXIS)) == (
        expected
    )


def test_empty_inputs() -> None:
    empty = make_columns([], "int64", 0, 0)
    some = make_columns([3, 1], "int64", 10, 1)
    for strategy in (replace, concat, time_series, upsert, upsert_within(2)):
        out = strategy(empty, empty, axis=AXIS)
        check_result(out, empty)
        assert len(out[AXIS]) == 0
        assert rows(strategy(empty, some, axis=AXIS)) == sorted(rows(some), key=by_key)
    for strategy in (concat, time_series, upsert, upsert_within(2)):
        assert rows(strategy(some, empty, axis=AXIS)) == sorted(rows(some), key=by_key)
    assert rows(replace(some, empty, axis=AXIS)) == []


# --- laws of needs_existing / appends ---------------------------------------------------------

ALL_STRATEGIES: list[MergeStrategy] = [
    replace,
    concat,
    time_series,
    upsert,
    upsert_within(2),
    upsert_within(0),
]


def for_dtype(strategy: MergeStrategy, dtype: str) -> MergeStrategy:
    """upsert_within with a tolerance of the axis kind."""
    if isinstance(strategy, type(upsert_within(0))) and numpy.dtype(dtype).kind == "M":
        unit = numpy.datetime_data(numpy.dtype(dtype))[0]
        return upsert_within(numpy.timedelta64(int(strategy.tolerance), unit))
    return strategy


@pytest.mark.parametrize("base", ALL_STRATEGIES, ids=repr)
@given(data=merge_inputs(sorted_existing=True))
@settings(deadline=None, max_examples=100)
def test_appends_law(base: MergeStrategy, data: tuple[Any, ...]) -> None:
    existing, inserted, dtype = data
    strategy = for_dtype(base, dtype)
    if existing is None:
        return
    if strategy.appends(AxisRange.from_array(existing[AXIS]), AxisRange.from_array(inserted[AXIS])):
        alone = strategy(None, inserted, axis=AXIS)
        assert rows(strategy(existing, inserted, axis=AXIS)) == rows(existing) + rows(alone)


@pytest.mark.parametrize("base", ALL_STRATEGIES, ids=repr)
@given(data=merge_inputs())
@settings(deadline=None, max_examples=100)
def test_needs_existing_law(base: MergeStrategy, data: tuple[Any, ...]) -> None:
    existing, inserted, dtype = data
    strategy = for_dtype(base, dtype)
    if not strategy.needs_existing(stats(existing), AxisRange.from_array(inserted[AXIS])):
        expected = rows(strategy(None, inserted, axis=AXIS))
        assert rows(strategy(existing, inserted, axis=AXIS)) == expected


def test_needs_existing_and_appends_values() -> None:
    stored = AxisRange(min=numpy.int64(10), max=numpy.int64(20), count=5)
    nothing = AxisRange(min=None, max=None, count=0)
    covering = AxisRange(min=numpy.int64(10), max=numpy.int64(20), count=3)
    inside = AxisRange(min=numpy.int64(12), max=numpy.int64(30), count=3)
    after = AxisRange(min=numpy.int64(22), max=numpy.int64(30), count=3)
    assert not replace.needs_existing(stored, inside)
    assert not replace.appends(stored, after)
    assert replace.appends(nothing, after)
    for strategy in (concat, upsert, upsert_within(1)):
        assert strategy.needs_existing(stored, covering)
        assert not strategy.needs_existing(None, covering)
        assert not strategy.needs_existing(nothing, covering)
    assert not time_series.needs_existing(stored, covering)
    assert time_series.needs_existing(stored, inside)
    assert not time_series.needs_existing(None, inside)
    for strategy in (concat, time_series, upsert):
        assert strategy.appends(stored, after)
        assert not strategy.appends(stored, inside)
        assert not strategy.appends(stored, covering)
    assert upsert_within(1).appends(stored, after)
    assert not upsert_within(2).appends(stored, after)
    assert not upsert_within(1.9).appends(
        AxisRange(numpy.float64(0), numpy.float64(1), 2),
        AxisRange(numpy.float64(2.5), numpy.float64(3), 2),
    )
    dates = AxisRange(numpy.datetime64(0, "s"), numpy.datetime64(10, "s"), 2)
    later = AxisRange(numpy.datetime64(12, "s"), numpy.datetime64(20, "s"), 2)
    assert upsert_within("1s").appends(dates, later)
    assert not upsert_within("2s").appends(dates, later)
    assert not upsert_within("2000ms").appends(dates, later)


# --- user callables -------------------------------------------------------------------------------


def keep_older(existing: Columns | None, inserted: Columns, *, axis: str) -> dict[str, Any]:
    """Insert only rows whose axis value is not yet stored; returned unsorted on purpose."""
    if existing is None:
        return {name: array[::-1] for name, array in inserted.items()}
    new = ~numpy.isin(inserted[axis], existing[axis])
    return {
        name: numpy.concatenate([inserted[name][new][::-1], existing[name]]) for name in inserted
    }


@given(data=merge_inputs())
@settings(deadline=None, max_examples=100)
def test_callable_strategy_sorted_and_checked(data: tuple[Any, ...]) -> None:
    existing, inserted, _ = data
    strategy = resolve(keep_older)
    assert isinstance(strategy, CallableStrategy)
    result = strategy(existing, inserted, axis=AXIS)
    check_result(result, inserted)
    old = rows(existing)
    stored = {r[0] for r in old}
    new = [r for r in rows(inserted) if r[0] not in stored][::-1]
    assert rows(result) == sorted(new + old, key=by_key)
    assert strategy.needs_existing(stats(existing), AxisRange.from_array(inserted[AXIS])) == (
        existing is not None and len(existing[AXIS]) > 0
    )
    if existing is not None:
        assert not strategy.appends(stats(existing), AxisRange.from_array(inserted[AXIS]))  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("returned", "match"),
    [
        (lambda e, i: {"v": i["v"]}, "'time' is missing from the merged"),
        (lambda e, i: {AXIS: i[AXIS]}, "missing: 'v'"),
        (lambda e, i: {**i, "extra": i["v"]}, "unexpected: 'extra'"),
        (lambda e, i: {**i, "v": i["v"][:1]}, "'v'"),
        (lambda e, i: {**i, "v": i["v"][:, None]}, "'v' with trailing shape"),
        (lambda e, i: [1, 2], "must return a mapping"),
    ],
)
def test_callable_strategy_bad_results(returned: Callable[..., Any], match: str) -> None:
    inserted = {AXIS: numpy.array([2, 1]), "v": numpy.array([1.0, 2.0])}

    def fn(existing: Any, inserted: Any, *, axis: str) -> Any:
        return returned(existing, inserted)

    with pytest.raises(MergeError, match=match):
        resolve(fn)(None, inserted, axis=AXIS)


# --- validation -----------------------------------------------------------------------------------


def test_validation_errors() -> None:
    good = {AXIS: numpy.array([1, 2]), "v": numpy.zeros((2, 3), "f4")}
    with pytest.raises(MergeError, match="'time' is missing from the inserted"):
        concat(good, {"v": good["v"]}, axis=AXIS)
    with pytest.raises(MergeError, match="'time' is missing from the stored"):
        concat({"v": good["v"]}, good, axis=AXIS)
    with pytest.raises(MergeError, match=r"'time'.*must be 1-D"):
        replace(None, {AXIS: numpy.zeros((2, 2)), "v": good["v"]}, axis=AXIS)
    with pytest.raises(MergeError, match="variable 'v' of the inserted data has 3 rows"):
        replace(None, {AXIS: good[AXIS], "v": numpy.zeros((3, 3), "f4")}, axis=AXIS)
    with pytest.raises(MergeError, match="'w'"):
        concat(good, {**good, "w": good[AXIS]}, axis=AXIS)
    with pytest.raises(MergeError, match="stored but not inserted: 'v'"):
        upsert(good, {AXIS: good[AXIS]}, axis=AXIS)
    with pytest.raises(MergeError, match="variable 'v' has dtype float64"):
        time_series(good, {**good, "v": good["v"].astype("f8")}, axis=AXIS)
    with pytest.raises(MergeError, match="variable 'v' has trailing shape"):
        time_series(good, {**good, "v": numpy.zeros((2, 4), "f4")}, axis=AXIS)
    with pytest.raises(MergeError, match="variable 'time' has dtype"):
        upsert(good, {**good, AXIS: good[AXIS].astype("f8")}, axis=AXIS)
    with pytest.raises(MergeError, match="cannot be ordered"):
        replace(None, {AXIS: numpy.array([1j, 2j]), "v": good["v"]}, axis=AXIS)
    # MergeError is an InvalidInputError and a ValueError
    with pytest.raises(ValueError):
        concat(good, {"v": good["v"]}, axis=AXIS)


def test_upsert_within_tolerance_checks() -> None:
    ints = {AXIS: numpy.array([1, 2]), "v": numpy.array([1, 2])}
    dates = {AXIS: numpy.array([1, 2], dtype="M8[s]"), "v": numpy.array([1, 2])}
    with pytest.raises(MergeError, match=r"'time'.*must be a number"):
        upsert_within(numpy.timedelta64(1, "s"))(ints, ints, axis=AXIS)
    with pytest.raises(MergeError, match=r"'time'.*must be a duration"):
        upsert_within(1)(dates, dates, axis=AXIS)
    strings = {AXIS: numpy.array(["a", "b"]), "v": numpy.array([1, 2])}
    with pytest.raises(MergeError, match="no distance"):
        upsert_within(1)(strings, strings, axis=AXIS)
    for bad in (-1, -0.5, math.nan, True, "soon", numpy.timedelta64(-1, "s"), [1], None):
        with pytest.raises(InvalidInputError):
            upsert_within(bad)  # type: ignore[arg-type]
    with pytest.raises(InvalidInputError, match="fixed-length unit"):
        upsert_within(numpy.timedelta64(1, "M"))
    assert upsert_within("1s") == upsert_within(numpy.timedelta64(1, "s"))
    assert upsert_within(datetime.timedelta(seconds=1)).tolerance == numpy.timedelta64(1, "s")
    assert upsert_within(numpy.int32(3)).tolerance == 3


# --- resolve, pickling, repr ----------------------------------------------------------------------


def test_resolve() -> None:
    assert resolve(None) is replace
    assert resolve("replace") is replace
    assert resolve("concat") is concat
    assert resolve("time_series") is time_series
    assert resolve("upsert") is upsert
    within = upsert_within(3)
    assert resolve(within) is within
    assert resolve(keep_older) == CallableStrategy(keep_older)
    with pytest.raises(InvalidInputError, match="'replace', 'concat', 'time_series', 'upsert'"):
        resolve("merge_sort")
    with pytest.raises(InvalidInputError, match=r"upsert_within\(tolerance\)"):
        resolve("upsert_within")
    with pytest.raises(InvalidInputError, match="got int"):
        resolve(42)  # type: ignore[arg-type]


def test_resolved_strategies_satisfy_protocol() -> None:
    for strategy in [*ALL_STRATEGIES, resolve(keep_older)]:
        assert isinstance(strategy, MergeStrategy)
        assert isinstance(strategy.name, str)
    assert resolve(keep_older).name == "keep_older"


@pytest.mark.parametrize(
    "strategy",
    [*ALL_STRATEGIES, upsert_within("1s"), upsert_within(0.25), CallableStrategy(keep_older)],
    ids=repr,
)
def test_pickle_round_trip(strategy: MergeStrategy) -> None:
    clone = pickle.loads(pickle.dumps(strategy))
    assert clone == strategy
    assert repr(clone) == repr(strategy)
    assert hash(clone) == hash(strategy)
    dtype = "datetime64[s]" if "timedelta" in repr(strategy) else "int64"
    existing = make_columns([1, 5, 3, 9], dtype, 0, 1)
    inserted = make_columns([5, 4, 11], dtype, 100, 2)
    assert rows(clone(existing, inserted, axis=AXIS)) == rows(
        strategy(existing, inserted, axis=AXIS)
    )


def test_reprs_are_stable() -> None:
    assert [repr(s) for s in (replace, concat, time_series, upsert)] == [
        "replace",
        "concat",
        "time_series",
        "upsert",
    ]
    assert repr(upsert_within(numpy.timedelta64(1, "s"))) == (
        "upsert_within(tolerance=np.timedelta64(1,'s'))"
    )
    assert repr(upsert_within(2)) == "upsert_within(tolerance=2)"
    assert repr(resolve(keep_older)) == f"merge_function({__name__}.keep_older)"
