"""Tests of the Sequence and GroupedSequence partitionings and of from_dict."""

from __future__ import annotations

import pickle

import numpy
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dask_zcollection.errors import InvalidInputError, SchemaError, VariableNotFoundError
from dask_zcollection.partitioning import GroupedSequence, Partitioning, Sequence, from_dict
from dask_zcollection.partitioning._base import unique_int, unique_rows

INT64 = st.integers(-(2**63) + 1, 2**63 - 1)
SMALL = st.integers(-50, 50)
NAMES = ("cycle_number", "pass_number")


def check_split(keys: numpy.ndarray, inverse: numpy.ndarray, expected: list[tuple[int, ...]]):
    """keys sorted and unique, and every row maps to its expected key."""
    assert keys.dtype == numpy.int64
    assert inverse.dtype == numpy.intp
    rows = [tuple(int(v) for v in k) for k in keys]
    assert rows == sorted(set(expected))
    assert [rows[i] for i in inverse] == expected


def test_attributes_and_encode() -> None:
    p = Sequence(NAMES, dimension="num_lines")
    assert isinstance(p, Partitioning)
    assert (p.name, p.keys, p.variables, p.dimension) == ("sequence", NAMES, NAMES, "num_lines")
    assert p.encode((10, 3)) == "cycle_number=10/pass_number=3"
    assert p.encode((-1, 0)) == "cycle_number=-1/pass_number=0"
    assert p.decode("cycle_number=10/pass_number=3") == (10, 3)
    assert p.decode("cycle_number=-7/pass_number=003") == (-7, 3)


@pytest.mark.parametrize(
    "path",
    [
        "cycle_number=10",
        "pass_number=3/cycle_number=10",
        "cycle_number=1/pass_number=x",
        "cycle_number=1/pass_number=",
        "cycle_number=1/pass_number=1/x=2",
        "",
    ],
)
def test_decode_rejects(path: str) -> None:
    with pytest.raises(InvalidInputError, match="partition path"):
        Sequence(NAMES, "num_lines").decode(path)


@settings(max_examples=200, deadline=None)
@given(key=st.tuples(INT64, INT64))
def test_round_trip(key: tuple[int, int]) -> None:
    p = Sequence(NAMES, "num_lines")
    assert p.decode(p.encode(key)) == key


@settings(max_examples=200, deadline=None)
@given(
    key=st.tuples(INT64, INT64),
    size=st.integers(1, 10**6),
    start=st.integers(-(10**6), 10**6),
)
def test_grouped_round_trip(key: tuple[int, int], size: int, start: int) -> None:
    p = GroupedSequence(NAMES, "num_lines", size=size, start=start)
    aligned = (key[0], start + ((key[1] // 4 - start) // size) * size)
    assert p.decode(p.encode(aligned)) == aligned


def test_numeric_order() -> None:
    p = Sequence(("cycle_number",), "num_lines")
    keys, inverse = p.split({"cycle_number": numpy.array([10, 2, 1, 10, 2])})
    assert keys.tolist() == [[1], [2], [10]]
    assert inverse.tolist() == [2, 1, 0, 2, 1]
    assert [p.encode(k) for k in keys] == [
        "cycle_number=1",
        "cycle_number=2",
        "cycle_number=10",
    ]


@settings(max_examples=200, deadline=None)
@given(
    rows=st.lists(st.tuples(SMALL, SMALL), max_size=80)
    | st.lists(st.tuples(INT64, INT64), max_size=20)
    | st.lists(st.tuples(INT64, SMALL), max_size=20),
    dtype=st.sampled_from(["int64", "int32", "int16", "uint8", "uint64"]),
)
def test_split_matches_reference(rows: list[tuple[int, int]], dtype: str) -> None:
    info = numpy.iinfo(dtype)
    rows = [(min(max(a, info.min), info.max), min(max(b, info.min), info.max)) for a, b in rows]
    columns = {name: numpy.array([r[i] for r in rows], dtype=dtype) for i, name in enumerate(NAMES)}
    keys, inverse = Sequence(NAMES, "num_lines").split(columns)
    check_split(keys, inverse, rows)


@settings(max_examples=200, deadline=None)
@given(
    rows=st.lists(st.tuples(SMALL, st.integers(-1000, 1000)), max_size=80),
    size=st.integers(1, 300),
    start=st.integers(-100, 100),
)
def test_grouped_bins(rows: list[tuple[int, int]], size: int, start: int) -> None:
    p = GroupedSequence(NAMES, "num_lines", size=size, start=start)
    columns = {
        name: numpy.array([r[i] for r in rows], dtype=numpy.int64) for i, name in enumerate(NAMES)
    }
    keys, inverse = p.split(columns)
    expected = [(a, start + ((b - start) // size) * size) for a, b in rows]
    check_split(keys, inverse, expected)
    for (a, b), key in zip(rows, keys[inverse], strict=True):
        assert key[0] == a
        assert key[1] <= b < key[1] + size
        assert p.decode(p.encode(key)) == tuple(key)


def test_grouped_example() -> None:
    p = GroupedSequence(("cycle", "pass"), "num_lines", size=10, start=1)
    keys, inverse = p.split(
        {"cycle": numpy.array([1, 1, 1, 2]), "pass": numpy.array([1, 10, 11, 0])}
    )
    assert keys.tolist() == [[1, 1], [1, 11], [2, -9]]
    assert inverse.tolist() == [0, 0, 1, 2]
    with pytest.raises(InvalidInputError, match="pass=12"):
        p.decode("cycle=1/pass=12")
    with pytest.raises(InvalidInputError, match="pass=12"):
        p.encode((1, 12))


def test_dtype_errors_name_variable() -> None:
    p = Sequence(NAMES, "num_lines")
    good = numpy.arange(3)
    with pytest.raises(SchemaError, match=r"'pass_number'.*float64"):
        p.split({"cycle_number": good, "pass_number": numpy.arange(3.0)})
    with pytest.raises(SchemaError, match=r"'cycle_number'.*bool"):
        p.split({"cycle_number": good > 0, "pass_number": good})
    with pytest.raises(SchemaError, match="'cycle_number'"):
        p.split({"cycle_number": numpy.array([2**63], dtype=numpy.uint64), "pass_number": good[:1]})
    with pytest.raises(VariableNotFoundError, match="'pass_number'"):
        p.split({"cycle_number": good})
    with pytest.raises(InvalidInputError, match="different lengths"):
        p.split({"cycle_number": good, "pass_number": good[:2]})


def test_construction_errors() -> None:
    with pytest.raises(InvalidInputError, match="at least one"):
        Sequence((), "x")
    with pytest.raises(InvalidInputError, match="duplicate"):
        Sequence(("a", "a"), "x")
    with pytest.raises(InvalidInputError, match="dimension"):
        Sequence(("a",), "")
    with pytest.raises(InvalidInputError, match="size"):
        GroupedSequence(("a",), "x", size=0)
    with pytest.raises(InvalidInputError, match="size"):
        GroupedSequence(("a",), "x", size=1.5)  # type: ignore[arg-type]


def test_repr_eq_pickle_dict() -> None:
    p = Sequence(NAMES, dimension="num_lines")
    assert repr(p) == "Sequence(('cycle_number', 'pass_number'), dimension='num_lines')"
    assert p == Sequence(list(NAMES), "num_lines")  # type: ignore[arg-type]
    assert hash(p) == hash(Sequence(NAMES, "num_lines"))
    assert pickle.loads(pickle.dumps(p)) == p
    reference = {"name": "sequence", "variables": list(NAMES), "dimension": "num_lines"}
    assert p.to_dict() == reference
    assert from_dict(reference) == p

    g = GroupedSequence(NAMES, "num_lines", size=10, start=1)
    assert repr(g) == (
        "GroupedSequence(('cycle_number', 'pass_number'), dimension='num_lines', size=10, start=1)"
    )
    assert g.to_dict() == {
        "name": "grouped_sequence",
        "variables": list(NAMES),
        "dimension": "num_lines",
        "size": 10,
        "start": 1,
    }
    assert from_dict(g.to_dict()) == g
    assert pickle.loads(pickle.dumps(g)) == g
    assert g != GroupedSequence(NAMES, "num_lines", size=10)


def test_from_dict_errors() -> None:
    with pytest.raises(InvalidInputError, match="unknown partitioning 'zorder'"):
        from_dict({"name": "zorder"})
    with pytest.raises(InvalidInputError, match="'dimension'"):
        from_dict({"name": "sequence", "variables": ["a"]})
    with pytest.raises(InvalidInputError, match="mapping"):
        from_dict(["date"])  # type: ignore[arg-type]


@settings(max_examples=200, deadline=None)
@given(values=st.lists(INT64, max_size=50) | st.lists(SMALL, max_size=200))
def test_unique_int(values: list[int]) -> None:
    array = numpy.array(values, dtype=numpy.int64)
    for data in (array, numpy.sort(array)):
        unique, inverse = unique_int(data)
        assert unique.tolist() == sorted(set(data.tolist()))
        numpy.testing.assert_array_equal(unique[inverse], data)


def test_unique_rows_wide_ranges_fall_back() -> None:
    big = numpy.array([2**62, -(2**62), 2**62, 0], dtype=numpy.int64)
    keys, inverse = unique_rows([big, big[::-1].copy()])
    assert keys.tolist() == [[-(2**62), 2**62], [0, 2**62], [2**62, -(2**62)], [2**62, 0]]
    numpy.testing.assert_array_equal(keys[inverse], numpy.stack([big, big[::-1]], axis=1))
