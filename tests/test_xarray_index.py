"""The lazy axis index of the xarray backend (``_xarray_index.py``) against pandas."""

from __future__ import annotations

import datetime
from typing import Any

import numpy
import pandas
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dask_zcollection._xarray_index import _positions

UNITS = ["D", "h", "s", "ms", "us", "ns"]


def pandas_positions(values: numpy.ndarray, start: Any, stop: Any) -> tuple[int, int, int]:
    found = pandas.Index(values).slice_indexer(start, stop)
    assert isinstance(found, slice)
    return found.indices(len(values))


@st.composite
def bounds(draw: Any, base: numpy.datetime64) -> Any:
    """A slice bound of any kind a user passes: numpy of any unit, pandas, datetime, str, None."""
    kind = draw(st.sampled_from(["numpy", "timestamp", "datetime", "str", "none", "nat"]))
    offset = numpy.timedelta64(draw(st.integers(-5_000, 200_000)), "s")
    offset += numpy.timedelta64(draw(st.integers(0, 999_999_999)), "ns") * draw(st.booleans())
    value = base + offset
    if kind == "none":
        return None
    if kind == "nat":
        return numpy.datetime64("NaT", "ns")
    if kind == "numpy":
        return value.astype(f"M8[{draw(st.sampled_from(UNITS))}]")
    if kind == "timestamp":
        return pandas.Timestamp(value)
    if kind == "datetime":
        return pandas.Timestamp(value).to_pydatetime(warn=False)
    return str(value.astype("M8[s]"))[: draw(st.sampled_from([10, 13, 16, 19]))]


@st.composite
def axes(draw: Any) -> tuple[numpy.ndarray, Any, Any]:
    unit = draw(st.sampled_from(["s", "ms", "ns"]))
    base = numpy.datetime64("2024-01-01T00:00:00", unit)
    steps = draw(st.lists(st.integers(0, 20_000), min_size=1, max_size=40))  # 0: duplicates
    values = base + numpy.cumsum(numpy.array(steps, dtype="int64")).astype(f"m8[{unit}]") * 1
    if draw(st.booleans()):
        values = values.astype(f"M8[{unit}]")
    if draw(st.integers(0, 9)) == 0:  # unsorted, or with a NaT: pandas decides
        values = values.copy()
        values[draw(st.integers(0, len(values) - 1))] = numpy.datetime64("NaT", unit)
    elif draw(st.integers(0, 9)) == 0:
        values = values[::-1].copy()
    return values, draw(bounds(base)), draw(bounds(base))


@settings(max_examples=300, deadline=None, derandomize=True)
@given(axes())
def test_positions_equal_pandas(case: tuple[numpy.ndarray, Any, Any]) -> None:
    values, start, stop = case
    try:
        expected: Any = pandas_positions(values, start, stop)
    except (KeyError, TypeError, ValueError) as err:
        expected = type(err)
    try:
        got: Any = _positions(values, start, stop)
    except (KeyError, TypeError, ValueError) as err:
        got = type(err)
    assert got == expected


@pytest.mark.parametrize(
    ("start", "stop", "expected"),
    [
        (numpy.datetime64("2024-01-02", "D"), numpy.datetime64("2024-01-03", "D"), (1, 5, 1)),
        (pandas.Timestamp("2024-01-02T12:00"), None, (3, 7, 1)),
        (None, datetime.datetime(2024, 1, 2, 12), (0, 4, 1)),  # the stop is included
        (numpy.datetime64("2024-01-05", "D"), None, (7, 7, 1)),
        (numpy.datetime64("2024-01-03", "D"), numpy.datetime64("2024-01-02", "D"), (4, 3, 1)),
        # Finer than the axis (seconds): compared at its own precision, as pandas does.
        (numpy.datetime64("2024-01-02T12:00:00.5", "ms"), None, (4, 7, 1)),
    ],
)
def test_positions_of_duplicated_sorted_values(start: Any, stop: Any, expected: Any) -> None:
    values = numpy.array(
        ["2024-01-01", "2024-01-02", "2024-01-02", "2024-01-02T12", "2024-01-03", "2024-01-04",
         "2024-01-04"],
        dtype="M8[s]",
    )  # fmt: skip
    assert _positions(values, start, stop) == expected == pandas_positions(values, start, stop)
