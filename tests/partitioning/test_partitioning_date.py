"""Tests of the Date partitioning."""

from __future__ import annotations

import datetime
import pickle

import hypothesis.extra.numpy as hnp
import numpy
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dask_zcollection.errors import InvalidInputError, SchemaError, VariableNotFoundError
from dask_zcollection.partitioning import Date, Partitioning, from_dict

RESOLUTIONS = ("Y", "M", "D", "h", "m", "s")
FIELDS = ("year", "month", "day", "hour", "minute", "second")
# Seconds since the epoch covering 1700..2250, inside the datetime64[ns] range.
SECONDS = st.integers(-8_500_000_000, 8_700_000_000)


def reference_key(value: numpy.datetime64, resolution: str) -> tuple[int, ...]:
    """Calendar key through the standard library."""
    seconds = int(value.astype("datetime64[s]").astype(numpy.int64))
    moment = datetime.datetime(1970, 1, 1) + datetime.timedelta(seconds=seconds)
    parts = (moment.year, moment.month, moment.day, moment.hour, moment.minute, moment.second)
    return parts[: RESOLUTIONS.index(resolution) + 1]


def check_split(keys: numpy.ndarray, inverse: numpy.ndarray, expected: list[tuple[int, ...]]):
    """keys sorted and unique, and every row maps to its expected key."""
    assert keys.dtype == numpy.int64
    assert inverse.dtype == numpy.intp
    assert inverse.shape == (len(expected),)
    rows = [tuple(int(v) for v in k) for k in keys]
    assert rows == sorted(set(expected))
    assert [rows[i] for i in inverse] == expected


@pytest.mark.parametrize(
    ("resolution", "keys"),
    [(r, FIELDS[: i + 1]) for i, r in enumerate(RESOLUTIONS)],
)
def test_keys(resolution: str, keys: tuple[str, ...]) -> None:
    p = Date(("time",), resolution=resolution)
    assert p.keys == keys
    assert p.name == "date"
    assert p.variables == ("time",)
    assert p.dimension == "time"
    assert isinstance(p, Partitioning)


def test_encode_padding() -> None:
    p = Date(("time",), resolution="s")
    assert (
        p.encode((2024, 3, 5, 7, 0, 9)) == "year=2024/month=03/day=05/hour=07/minute=00/second=09"
    )
    assert Date(("time",), "M").encode((987, 12)) == "year=0987/month=12"
    assert p.decode("year=2024/month=3/day=5/hour=7/minute=0/second=9") == (2024, 3, 5, 7, 0, 9)
    assert Date(("time",), "M").decode("/year=2024/month=03/") == (2024, 3)


@pytest.mark.parametrize(
    "path",
    [
        "year=2024",
        "year=2024/month=13",
        "year=2024/day=03",
        "year=2024/month=xx",
        "year=2024/month=03/day=01",
        "month=03/year=2024",
        "year=2024/month03",
    ],
)
def test_decode_rejects(path: str) -> None:
    with pytest.raises(InvalidInputError, match="partition path"):
        Date(("time",), "M").decode(path)


def test_encode_rejects_bad_key() -> None:
    p = Date(("time",), "M")
    with pytest.raises(InvalidInputError, match="2 components"):
        p.encode((2024,))
    with pytest.raises(InvalidInputError, match="'month'"):
        p.encode((2024, 1.5))  # type: ignore[arg-type]


@settings(max_examples=200, deadline=None)
@given(resolution=st.sampled_from(RESOLUTIONS), seconds=SECONDS)
def test_key_path_round_trip(resolution: str, seconds: int) -> None:
    p = Date(("time",), resolution=resolution)
    key = reference_key(numpy.datetime64(seconds, "s"), resolution)
    path = p.encode(key)
    assert p.decode(path) == key
    assert p.encode(numpy.array(key, dtype=numpy.int64)) == path
    # Lexicographic path order matches key order for 4-digit years.
    assert path.startswith(f"year={key[0]:04d}")


@settings(max_examples=100, deadline=None)
@given(
    resolution=st.sampled_from(RESOLUTIONS),
    seconds=st.lists(SECONDS, min_size=0, max_size=60),
    unit=st.sampled_from(["s", "ms", "us", "ns"]),
)
def test_split_matches_reference(resolution: str, seconds: list[int], unit: str) -> None:
    values = (
        numpy.array(seconds, dtype=numpy.int64)
        .astype("datetime64[s]")
        .astype(f"datetime64[{unit}]")
    )
    keys, inverse = Date(("time",), resolution).split({"time": values})
    check_split(keys, inverse, [reference_key(v, resolution) for v in values])


def test_split_non_contiguous() -> None:
    values = numpy.array(
        ["2024-01-05", "2024-01-31", "2024-02-01", "2024-01-10", "2023-12-31"],
        dtype="datetime64[ns]",
    )
    keys, inverse = Date(("time",), "M").split({"time": values})
    assert keys.tolist() == [[2023, 12], [2024, 1], [2024, 2]]
    assert inverse.tolist() == [1, 1, 2, 1, 0]


def test_split_empty() -> None:
    keys, inverse = Date(("time",), "D").split({"time": numpy.array([], dtype="datetime64[ns]")})
    assert keys.shape == (0, 3)
    assert inverse.shape == (0,)


def test_split_before_epoch_floors() -> None:
    values = numpy.array([-1, 0], dtype="datetime64[ns]")
    keys, inverse = Date(("time",), "s").split({"time": values})
    assert keys.tolist() == [[1969, 12, 31, 23, 59, 59], [1970, 1, 1, 0, 0, 0]]
    assert inverse.tolist() == [0, 1]


@settings(max_examples=100, deadline=None)
@given(
    resolution=st.sampled_from(RESOLUTIONS),
    seconds=st.lists(SECONDS, min_size=1, max_size=40),
)
def test_int64_nanoseconds_equals_datetime64(resolution: str, seconds: list[int]) -> None:
    times = numpy.array(seconds, dtype=numpy.int64).astype("datetime64[s]").astype("datetime64[ns]")
    p = Date(("time",), resolution)
    expected = p.split({"time": times})
    got = p.split({"time": times.view(numpy.int64)})
    numpy.testing.assert_array_equal(got[0], expected[0])
    numpy.testing.assert_array_equal(got[1], expected[1])
    # An empty attribute mapping or one without units changes nothing.
    got = p.split({"time": times.view(numpy.int64)}, {"time": {"long_name": "time"}})
    numpy.testing.assert_array_equal(got[0], expected[0])


CF_CASES = [
    ("seconds since 2000-01-01", "s", "2000-01-01"),
    ("days since 1950-01-01 00:00:00", "D", "1950-01-01"),
    ("hours since 1990-06-15T12:00:00Z", "h", "1990-06-15T12:00:00"),
    ("minutes since 2010-1-1 6:30", "m", "2010-01-01T06:30"),
    ("milliseconds since 1970-01-01", "ms", "1970-01-01"),
    ("microseconds since 2020-02-29 00:00:00.5", "us", "2020-02-29T00:00:00.5"),
    ("nanoseconds since 1970-01-01 UTC", "ns", "1970-01-01"),
]


# Largest |count| per unit keeping every case inside the datetime64[ns] range.
CF_LIMITS = {
    "D": 50_000,
    "h": 10**6,
    "m": 6 * 10**7,
    "s": 3 * 10**9,
    "ms": 3 * 10**12,
    "us": 3 * 10**15,
    "ns": 4 * 10**18,
}


@pytest.mark.parametrize(("units", "unit", "epoch"), CF_CASES)
@settings(max_examples=30, deadline=None)
@given(resolution=st.sampled_from(RESOLUTIONS), data=st.data())
def test_int_with_cf_units(
    units: str, unit: str, epoch: str, resolution: str, data: st.DataObject
) -> None:
    limit = CF_LIMITS[unit]
    elements = st.integers(-limit, limit) | st.integers(-1000, 1000)
    counts = data.draw(hnp.arrays(numpy.int64, st.integers(1, 30), elements=elements))
    times = counts.view(f"timedelta64[{unit}]") + numpy.datetime64(epoch)
    p = Date(("time",), resolution)
    expected = p.split({"time": times})
    for dtype in (numpy.int64, numpy.int32) if abs(counts).max() < 2**31 else (numpy.int64,):
        got = p.split({"time": counts.astype(dtype)}, {"time": {"units": units}})
        numpy.testing.assert_array_equal(got[0], expected[0])
        numpy.testing.assert_array_equal(got[1], expected[1])
    numpy.testing.assert_array_equal(
        p.to_datetime64(counts, {"units": units}), times.astype("datetime64[ns]")
    )
    # The split-style mapping is accepted too.
    numpy.testing.assert_array_equal(
        p.to_datetime64(counts, {"time": {"units": units}}), times.astype("datetime64[ns]")
    )


def test_cf_units_example() -> None:
    p = Date(("time",), "D")
    keys, inverse = p.split(
        {"time": numpy.array([0, 86_400, 86_400 * 40, 1], dtype=numpy.int64)},
        {"time": {"units": "seconds since 2000-01-01 00:00:00"}},
    )
    assert keys.tolist() == [[2000, 1, 1], [2000, 1, 2], [2000, 2, 10]]
    assert inverse.tolist() == [0, 1, 2, 0]


def test_bad_cf_units_named() -> None:
    p = Date(("time",), "D")
    with pytest.raises(SchemaError, match=r"'time'.*fortnights"):
        p.split({"time": numpy.arange(3)}, {"time": {"units": "fortnights since 2000-01-01"}})
    with pytest.raises(SchemaError, match="'time'"):
        p.split({"time": numpy.arange(3)}, {"time": {"units": "seconds"}})


def test_nat_rejected() -> None:
    p = Date(("obs_time",), "D")
    values = numpy.array(["2024-01-01", "NaT"], dtype="datetime64[ns]")
    with pytest.raises(SchemaError, match=r"'obs_time'.*NaT"):
        p.split({"obs_time": values})
    with pytest.raises(SchemaError, match=r"'obs_time'.*NaT"):
        p.split({"obs_time": values.view(numpy.int64)})
    with pytest.raises(SchemaError, match="'obs_time'"):
        p.to_datetime64(values)


@pytest.mark.parametrize("dtype", ["float64", "float32", "bool", "U4", "complex64"])
def test_non_time_dtype_rejected(dtype: str) -> None:
    p = Date(("obs_time",), "D")
    with pytest.raises(SchemaError, match="'obs_time'"):
        p.split({"obs_time": numpy.ones(3, dtype=dtype)})


def test_missing_variable_and_shape() -> None:
    p = Date(("time",), "D")
    with pytest.raises(VariableNotFoundError, match="'time'"):
        p.split({"other": numpy.arange(3)})
    with pytest.raises(SchemaError, match=r"'time'.*1-D"):
        p.split({"time": numpy.zeros((2, 2), dtype="datetime64[ns]")})


def test_construction_errors() -> None:
    with pytest.raises(InvalidInputError, match="exactly one"):
        Date(("a", "b"), "D")
    with pytest.raises(InvalidInputError, match="resolution"):
        Date(("time",), "W")  # type: ignore[arg-type]
    with pytest.raises(InvalidInputError, match="variable name"):
        Date(("a/b",), "D")


def test_key_of_and_bounds() -> None:
    p = Date(("time",), "h")
    values = numpy.array(["2024-02-29T23:59:59", "1969-12-31T00:30"], dtype="datetime64[s]")
    keys = p.key_of(values)
    assert keys.tolist() == [[2024, 2, 29, 23], [1969, 12, 31, 0]]
    start, stop = p.bounds(keys)
    assert (
        start.tolist() == numpy.array(["2024-02-29T23", "1969-12-31T00"], "datetime64[ns]").tolist()
    )
    assert (stop - start == numpy.timedelta64(1, "h")).all()


@settings(max_examples=100, deadline=None)
@given(resolution=st.sampled_from(RESOLUTIONS), seconds=st.lists(SECONDS, min_size=1, max_size=20))
def test_bounds_contain_values(resolution: str, seconds: list[int]) -> None:
    p = Date(("time",), resolution)
    times = numpy.array(seconds, dtype=numpy.int64).astype("datetime64[s]").astype("datetime64[ns]")
    keys, inverse = p.split({"time": times})
    start, stop = p.bounds(keys)
    assert (start[inverse] <= times).all()
    assert (times < stop[inverse]).all()
    numpy.testing.assert_array_equal(p.key_of(start), keys)


def test_repr_eq_hash_pickle_dict() -> None:
    p = Date(("time",), resolution="M")
    assert repr(p) == "Date(('time',), resolution='M')"
    assert repr(Date(("t",), "D", "obs")) == "Date(('t',), resolution='D', dimension='obs')"
    assert p == Date(["time"], "M", "time")  # type: ignore[arg-type]
    assert hash(p) == hash(Date(("time",), "M"))
    assert p != Date(("time",), "D")
    assert pickle.loads(pickle.dumps(p)) == p
    reference = {"name": "date", "variable": "time", "resolution": "M", "dimension": "time"}
    assert p.to_dict() == reference
    assert from_dict(reference) == p
    assert from_dict(p.to_dict()) == p
    other = Date(("t",), "s", dimension="obs")
    assert from_dict(other.to_dict()) == other
