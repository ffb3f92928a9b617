"""A second hostile campaign: values, dtypes, key names and bounds at their extremes.

Each test was written against the code before its fix and failed there (see the
docstrings); the module runs in a few seconds on ``memory://``.
"""

from __future__ import annotations

import numpy
from hypothesis import example, given, settings
from hypothesis import strategies as st

import dask_zcollection as zc
from dask_zcollection.catalog import Catalog
from dask_zcollection.catalog._segments import Root
from dask_zcollection.partitioning import PartitionFilter

I64 = numpy.iinfo("int64")


def _sequence_collection(url: str) -> zc.Collection:
    schema = (
        zc.Schema()
        .with_dimension("n", chunks=3)
        .with_variable("cycle", dtype="int64", dimensions=("n",))
        .with_variable("track", dtype="int32", dimensions=("n",))
        .with_variable("v", dtype="float64", dimensions=("n",))
        .build()
    )
    return zc.create_collection(
        url,
        schema=schema,
        axis="n",
        partitioning=zc.partitioning.Sequence(("cycle", "track"), dimension="n"),
    )


# -- keys at the int64 extremes --------------------------------------------------------------------
def test_a_key_at_the_int64_maximum_hides_no_partition_from_filters(memory_url: str) -> None:
    """A partition keyed INT64_MAX made ``cycle == 2`` select nothing.

    The catalog's segment boxes computed ``last - first >= 2`` in int64: from -5 to
    INT64_MAX it wrapped negative and every key strictly between was pruned.
    """
    col = _sequence_collection(memory_url)
    cycles = numpy.array([2, 9, 10, -5, I64.max, I64.min])
    tracks = numpy.array([1, 2, 3, 4, 0, 0], dtype="int32")
    col.insert({"cycle": cycles, "track": tracks, "v": numpy.arange(6.0)})
    assert col.partitions(filters="cycle == 2") == ["cycle=2/track=1"]
    assert col.partitions(filters={"cycle": [2, 9]}) == ["cycle=2/track=1", "cycle=9/track=2"]
    assert col.partitions(filters="track == 3") == ["cycle=10/track=3"]
    ds = zc.read_collection(memory_url).filter("cycle == 9").compute()
    assert ds["v"].values.tolist() == [1.0]


_KEYS = st.sampled_from([I64.min, I64.min + 1, -5, 0, 2, I64.max - 1, I64.max])


@settings(max_examples=150, deadline=None, derandomize=True)
@given(
    keys=st.lists(st.tuples(_KEYS, _KEYS), min_size=1, max_size=8, unique=True),
    cut=st.integers(0, 11),
    name=st.sampled_from(["a", "b"]),
    op=st.sampled_from(["==", "!=", "<", "<=", ">", ">="]),
    value=_KEYS,
)
@example(keys=[(-5, 0), (2, 0), (int(I64.max), 0)], cut=0, name="a", op="==", value=2)
@example(keys=[(int(I64.min), 1), (0, 1), (5, 1)], cut=0, name="a", op=">=", value=0)
def test_segment_pruning_is_sound_at_the_int64_extremes(
    keys: list[tuple[int, int]], cut: int, name: str, op: str, value: int
) -> None:
    """Law: a segment holding a key that matches is never pruned (keys near +-2**63)."""
    table = numpy.array(sorted(keys), dtype="int64")
    cut = min(cut, len(table) - 1) or len(table)
    bounds = [(0, cut), (cut, len(table))] if cut < len(table) else [(0, len(table))]
    parts = [table[a:b] for a, b in bounds]
    n = len(parts)
    root = Root(
        head=Catalog.empty(("a", "b"), "int64"),
        names=tuple(str(i) for i in range(n)),
        counts=numpy.array([len(p) for p in parts]),
        first=numpy.array([p[0] for p in parts]),
        last=numpy.array([p[-1] for p in parts]),
        cmin=numpy.array([p.min(axis=0) for p in parts]),
        cmax=numpy.array([p.max(axis=0) for p in parts]),
        tlo=numpy.zeros(n, "int64"),
        thi=numpy.zeros(n, "int64"),
        tknown=numpy.zeros(n, bool),
        crc=numpy.zeros(n, "int64"),
        nbytes=numpy.zeros(n, "int64"),
    )
    predicate = PartitionFilter(f"{name} {op} {value}")
    kept = set(root.select(predicate).tolist())
    for s, part in enumerate(parts):
        if predicate({"a": part[:, 0], "b": part[:, 1]}).any():
            assert s in kept, (predicate.source, part.tolist())
