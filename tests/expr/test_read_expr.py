"""The read expressions: pruning soundness, task counts, keys, graph size, projection, pushdown."""

from __future__ import annotations

import operator
import pickle
import uuid
from collections.abc import Callable, Mapping
from typing import Any

import dask
import numpy
import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

import dask_zcollection as zc
from dask_zcollection.catalog import Catalog
from dask_zcollection.collection import LazyCollection, collection_from
from dask_zcollection.expr import Finalize, MapPartitions, ReadPartitions
from dask_zcollection.store import MemoryStore

pytest.register_assert_rewrite("conftest_read")
from conftest_read import (  # noqa: E402
    KINDS,
    CountingMemoryStore,
    TaskLog,
    assert_columns,
    axis_of,
    counting_spec,
    create,
    key_columns,
    make_rows,
    populate,
    reads,
    reference_order,
    reset_reads,
    take_rows,
    variable_of_key,
)

pytest_plugins = ["conftest_read"]


# -- helpers -----------------------------------------------------------------------------------
def graph_read_keys(graph: Mapping[Any, Any]) -> list[Any]:
    return [
        k
        for k in graph
        if isinstance(k, tuple) and k[0].startswith("zc-read-") and not k[0].endswith("-immutable")
    ]


def add_one(ds: zc.Dataset) -> zc.Dataset:
    """A per-partition map (module level: pickles with plain pickle)."""
    return ds.with_variables({"quality": ds["quality"].with_data(ds["quality"].values + 1)})


# -- random key filters ------------------------------------------------------------------------
_CMP: dict[str, Callable[[Any, Any], Any]] = {
    "==": operator.eq,
    "!=": operator.ne,
    "<": operator.lt,
    "<=": operator.le,
    ">": operator.gt,
    ">=": operator.ge,
}


@st.composite
def filter_trees(draw: st.DrawFn, values: Mapping[str, list[int]], depth: int = 2) -> Any:
    """A small predicate tree over the key names (rendered and evaluated by the test)."""
    names = sorted(values)
    kind = draw(st.sampled_from(["cmp", "in", "between"] + (["and", "or", "not"] if depth else [])))
    if kind in ("and", "or"):
        return (kind, draw(filter_trees(values, depth - 1)), draw(filter_trees(values, depth - 1)))
    if kind == "not":
        return ("not", draw(filter_trees(values, depth - 1)))
    name = draw(st.sampled_from(names))
    pool = st.sampled_from(values[name])
    if kind == "cmp":
        return ("cmp", name, draw(st.sampled_from(sorted(_CMP))), draw(pool))
    if kind == "in":
        return ("in", name, draw(st.booleans()), tuple(draw(st.lists(pool, max_size=3))))
    lo, hi = sorted((draw(pool), draw(pool)))
    return ("between", name, lo, hi)


def render(tree: Any) -> str:
    tag = tree[0]
    if tag in ("and", "or"):
        return f"({render(tree[1])}) {tag} ({render(tree[2])})"
    if tag == "not":
        return f"not ({render(tree[1])})"
    if tag == "cmp":
        return f"{tree[1]} {tree[2]} {tree[3]}"
    if tag == "in":
        items = ", ".join(str(v) for v in tree[3])
        return (
            f"{tree[1]} {'in' if tree[2] else 'not in'} ({items}{',' if len(tree[3]) == 1 else ''})"
        )
    return f"{tree[2]} <= {tree[1]} <= {tree[3]}"


def evaluate(tree: Any, columns: Mapping[str, numpy.ndarray]) -> numpy.ndarray:
    tag = tree[0]
    if tag == "and":
        return evaluate(tree[1], columns) & evaluate(tree[2], columns)
    if tag == "or":
        return evaluate(tree[1], columns) | evaluate(tree[2], columns)
    if tag == "not":
        return ~evaluate(tree[1], columns)
    col = columns[tree[1]]
    if tag == "cmp":
        return numpy.asarray(_CMP[tree[2]](col, tree[3]), dtype=bool)
    if tag == "in":
        hit = numpy.isin(col, numpy.array(tree[3], dtype="int64"))
        return hit if tree[2] else ~hit
    return (col >= tree[2]) & (col <= tree[3])


@st.composite
def mapping_filters(draw: st.DrawFn, values: Mapping[str, list[int]]) -> dict[str, Any]:
    """``{key: int | list | slice(lo, hi)}`` (inclusive slices, open ends allowed)."""
    names = draw(st.lists(st.sampled_from(sorted(values)), min_size=1, max_size=2, unique=True))
    out: dict[str, Any] = {}
    for name in names:
        pool = st.sampled_from(values[name])
        form = draw(st.sampled_from(["eq", "list", "slice"]))
        if form == "eq":
            out[name] = draw(pool)
        elif form == "list":
            out[name] = draw(st.lists(pool, min_size=1, max_size=3))
        else:
            lo, hi = draw(st.one_of(st.none(), pool)), draw(st.one_of(st.none(), pool))
            out[name] = slice(lo, hi)
    return out


def evaluate_mapping(
    filters: Mapping[str, Any], columns: Mapping[str, numpy.ndarray]
) -> numpy.ndarray:
    n = len(next(iter(columns.values())))
    mask = numpy.ones(n, dtype=bool)
    for name, value in filters.items():
        col = columns[name]
        if isinstance(value, slice):
            if value.start is not None:
                mask &= col >= value.start
            if value.stop is not None:
                mask &= col <= value.stop
        elif isinstance(value, list):
            mask &= numpy.isin(col, value)
        else:
            mask &= col == value
    return mask


# -- pruning soundness -------------------------------------------------------------------------
@settings(
    max_examples=100,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(data=st.data())
def test_pruning_is_sound(data: st.DataObject) -> None:
    """``read(url).filter(f).compute()`` == the full read filtered with numpy; npartitions too."""
    kind = data.draw(st.sampled_from(KINDS), label="kind")
    n = data.draw(st.integers(1, 40), label="rows")
    seed = data.draw(st.integers(0, 2**16), label="seed")
    batches = data.draw(st.integers(1, 3), label="batches")
    chunks = data.draw(st.integers(1, 4), label="chunks")
    rows = make_rows(kind, n, seed)
    name = f"prop-{uuid.uuid4().hex}"
    url = f"memory://{name}"
    try:
        populate(url, kind, rows, batches=batches, chunks=chunks)
        keys = key_columns(kind, rows)
        order = reference_order(kind, rows)
        values = {
            k: sorted({int(v) for v in col} | {int(col.min()) - 1, int(col.max()) + 1})
            for k, col in keys.items()
        }
        form = data.draw(
            st.sampled_from(
                ["str", "mapping", "kwargs", "read_filters", "chained", "time", "time"]
            ),
            label="form",
        )
        lazy = zc.read_collection(url)
        full = lazy.compute()
        assert_columns(full, take_rows(rows, order), "full read")
        if form == "str":
            tree = data.draw(filter_trees(values), label="filter")
            mask = evaluate(tree, keys)
            got = lazy.filter(render(tree))
        elif form in ("mapping", "kwargs", "read_filters"):
            mapping = data.draw(mapping_filters(values), label="filter")
            mask = evaluate_mapping(mapping, keys)
            if form == "mapping":
                got = lazy.filter(mapping)
            elif form == "kwargs":
                got = lazy.filter(**mapping)
            else:
                got = zc.read_collection(url, filters=mapping)
        elif form == "time":
            # A time range (optionally with a key filter): stats prune, boundary rows trimmed.
            t = rows["time"]
            quarter = numpy.timedelta64(15, "m")
            lo = data.draw(st.one_of(st.none(), st.sampled_from(list(t))), label="lo")
            hi = data.draw(st.one_of(st.none(), st.sampled_from(list(t))), label="hi")
            # Bounds on a stored value, or half a step before / after one.
            nudge = st.sampled_from([-1, 0, 0, 1])
            if lo is not None:
                lo = lo + data.draw(nudge, label="lo nudge") * quarter // 2
            if hi is not None:
                hi = hi + data.draw(nudge, label="hi nudge") * quarter // 2
            mask = numpy.ones(n, dtype=bool)
            if lo is not None:
                mask &= t >= lo
            if hi is not None:
                mask &= t <= hi
            got = lazy.filter(time=slice(lo, hi))
            key_mask = numpy.ones(n, dtype=bool)
            if data.draw(st.booleans(), label="with key filter"):
                tree = data.draw(filter_trees(values, depth=1), label="filter")
                key_mask = evaluate(tree, keys)
                got = got.filter(render(tree))
            mask &= key_mask
            # Partitions kept: key filter matches and [min, max] of the axis meets [lo, hi].
            ids = numpy.unique(
                numpy.stack(list(keys.values()), axis=1), axis=0, return_inverse=True
            )[1]
            expected_parts = 0
            for p in numpy.unique(ids):
                tp = t[ids.ravel() == p]
                meets = (lo is None or tp.max() >= lo) and (hi is None or tp.min() <= hi)
                expected_parts += bool(meets and key_mask[ids.ravel() == p][0])
        else:
            tree = data.draw(filter_trees(values, depth=1), label="first")
            mapping = data.draw(mapping_filters(values), label="second")
            mask = evaluate(tree, keys) & evaluate_mapping(mapping, keys)
            got = lazy.filter(render(tree)).filter(mapping)
        selected = order[mask[order]]
        event(f"kind={kind}")
        event(f"form={form}")
        event("empty selection" if not mask.any() else ("all rows" if mask.all() else "some rows"))
        # The reference: the full result filtered row by row with numpy.
        full_cols = {p: v.values for p, v in full.walk()}
        full_mask = mask[order]
        expected = {p: v[full_mask] for p, v in full_cols.items()}
        assert_columns_or_none(got.compute(), expected)
        assert_columns_or_none(got.compute(), take_rows(rows, selected))
        matching = {tuple(int(keys[k][i]) for k in keys) for i in numpy.flatnonzero(mask)}
        if form == "time":
            # Stats prune on [min, max]: a kept partition may hold no selected row.
            assert got.npartitions == expected_parts >= len(matching)
            pieces = dask.compute(*got.to_delayed())
            assert len(pieces) == got.npartitions
            concat = numpy.concatenate([p["time"].values for p in pieces]) if pieces else []
            numpy.testing.assert_array_equal(concat, rows["time"][selected])
        else:
            assert got.npartitions == len(matching)
            assert len(got.to_delayed()) == len(matching)
        assert got.partitions == sorted(
            got.partitions, key=lambda p: [int(x.split("=")[1]) for x in p.split("/")]
        )
    finally:
        MemoryStore.forget(name)


def assert_columns_or_none(ds: zc.Dataset | None, expected: Mapping[str, numpy.ndarray]) -> None:
    if len(next(iter(expected.values()))) == 0:
        assert ds is None, "an empty selection computes to None"
    else:
        assert_columns(ds, expected)


# -- task counts, prefixes, tokens -------------------------------------------------------------
@pytest.fixture
def monthly(factory: Any, memory_name: str) -> tuple[str, dict[str, numpy.ndarray]]:
    """Six monthly partitions of the default factory schema (immutable ``x_ac``, nested group)."""
    url = f"memory://{memory_name}"
    col = factory.create(url)
    times = numpy.arange(
        "2024-01-01", "2024-07-01", numpy.timedelta64(12, "h"), dtype="datetime64[ns]"
    )
    data = factory.data(times)
    col.insert(data)
    return url, data


def test_filter_builds_exactly_k_read_tasks(monthly: tuple[str, Any]) -> None:
    url, data = monthly
    lazy = zc.read_collection(url)
    assert lazy.npartitions == 6
    sel = lazy.filter("month in (2, 5)")
    assert sel.npartitions == 2

    # to_delayed / persist: one task per selected partition, plus the immutable read.
    with TaskLog() as log:
        parts = dask.compute(*sel.to_delayed())
    assert len(log.reads()) == 2
    assert len(log.immutable_reads()) == 1
    assert len(log.keys) == 3
    months = data["time"].astype("datetime64[M]")
    for part, month in zip(parts, ("2024-02", "2024-05"), strict=True):
        keep = months == numpy.datetime64(month)
        numpy.testing.assert_array_equal(part["time"].values, data["time"][keep])
        numpy.testing.assert_array_equal(part["x_ac"].values, data["x_ac"])

    with TaskLog() as log:
        persisted = sel.persist()
    assert len(log.reads()) == 2 and len(log.keys) <= 2 + 1 + 1

    # compute: the read is fused into one task decoding both partitions.
    with TaskLog() as log:
        result = sel.compute()
    assert len(log.reads()) == 1
    assert len(log.keys) <= 3
    keep = numpy.isin(months, numpy.array(["2024-02", "2024-05"], dtype="datetime64[M]"))
    numpy.testing.assert_array_equal(result["time"].values, data["time"][keep])
    numpy.testing.assert_array_equal(result["ssh"].values, data["ssh"][keep])

    # The persisted collection computes without reading again.
    with TaskLog() as log:
        again = persisted.compute()
    assert log.reads() == []
    numpy.testing.assert_array_equal(again["ssh"].values, data["ssh"][keep])


def test_unfiltered_reads_every_partition_once(monthly: tuple[str, Any]) -> None:
    url, _ = monthly
    with TaskLog() as log:
        dask.compute(*zc.read_collection(url).to_delayed())
    assert len(log.reads()) == 6
    assert len({k[1] for k in log.reads()}) == 6


def test_task_key_prefixes(monthly: tuple[str, Any]) -> None:
    url, data = monthly
    lazy = zc.read_collection(url).filter("month <= 3").map_partitions(add_one)
    with TaskLog() as log:
        out = lazy.compute()
    names = log.names()
    assert sum(n.startswith("zc-read-") and not n.endswith("-immutable") for n in names) == 3
    assert sum(n.startswith("zc-map-") for n in names) == 3
    assert sum(n.startswith("zc-concat-") for n in names) == 1
    assert all(n.startswith(("zc-read-", "zc-map-", "zc-concat-")) for n in names), names
    keep = data["time"] < numpy.datetime64("2024-04-01")
    numpy.testing.assert_array_equal(out["quality"].values, data["quality"][keep] + 1)
    numpy.testing.assert_array_equal(out["ssh"].values, data["ssh"][keep])


def test_keys_are_deterministic(monthly: tuple[str, Any]) -> None:
    url, _ = monthly

    def build(f: str) -> LazyCollection:
        return zc.read_collection(url).filter(f)[["time", "ssh"]].map_partitions(add_one)

    a, b, c = build("month in (2, 4)"), build("month in (2, 4)"), build("month in (2, 5)")
    assert a.__dask_keys__() == b.__dask_keys__()
    assert dict(a.__dask_graph__()).keys() == dict(b.__dask_graph__()).keys()
    assert Finalize(a.expr).optimize()._name == Finalize(b.expr).optimize()._name
    assert dask.base.tokenize(a) == dask.base.tokenize(b)
    assert not set(a.__dask_keys__()) & set(c.__dask_keys__())
    assert not set(dict(a.__dask_graph__())) & set(dict(c.__dask_graph__()))
    # The same partitions selected through another spelling of the filter: same read.
    d = zc.read_collection(url).filter({"month": [2, 4]})
    e = zc.read_collection(url).filter("month == 2 or month == 4")
    assert d.partitions == e.partitions == ["year=2024/month=02", "year=2024/month=04"]


# -- graph size at 100,000 partitions ----------------------------------------------------------
def synthetic(n: int) -> LazyCollection:
    """A Sequence collection of ``n`` partitions (catalog only, no data): cycles x 1000 passes."""
    name = f"synthetic-{uuid.uuid4().hex}"
    try:
        col = create(f"memory://{name}", "sequence")
        spec, config = col.aio.spec, col.aio.config
    finally:
        MemoryStore.forget(name)
    passes = 1000
    cycles = numpy.repeat(numpy.arange(1, n // passes + 1), passes)
    keys = numpy.stack([cycles, numpy.tile(numpy.arange(1, passes + 1), n // passes)], axis=1)
    paths = [f"cycle_number={c}/pass_number={p}" for c, p in keys.tolist()]
    start = numpy.datetime64("2020-01-01", "ns") + numpy.arange(n) * numpy.timedelta64(1, "h")
    catalog = Catalog.empty(("cycle_number", "pass_number"), "datetime64[ns]").with_partitions(
        keys, paths, numpy.full(n, 10), start, start + numpy.timedelta64(59, "m")
    )
    return collection_from(spec, config, catalog)


@pytest.fixture(scope="module")
def huge() -> LazyCollection:
    return synthetic(100_000)


def test_graph_of_31_out_of_100k_partitions(huge: LazyCollection) -> None:
    assert huge.npartitions == 100_000
    lazy = huge.filter("cycle_number == 1 and pass_number <= 31")
    assert lazy.npartitions == 31
    graph = dict(lazy.__dask_graph__())
    assert len(graph_read_keys(graph)) == 31
    assert len(graph) == 31  # no immutable variable in this schema
    assert len(lazy.to_delayed()) == 31
    assert "31 of 100000 partitions" in lazy.explain()
    assert lazy.partitions[0] == "cycle_number=1/pass_number=1"
    assert lazy.partitions[-1] == "cycle_number=1/pass_number=31"
    # compute fuses the 31 reads into one task.
    final = dict(Finalize(lazy.expr).optimize(fuse=False).__dask_graph__())
    assert len(graph_read_keys(final)) == 1


def test_pickled_plan_does_not_grow_with_the_collection(huge: LazyCollection) -> None:
    f = "cycle_number == 1 and pass_number <= 31"
    small = pickle.dumps(synthetic(1_000).filter(f).expr.optimize(fuse=False))
    big = pickle.dumps(huge.filter(f).expr.optimize(fuse=False))
    assert len(big) < 100_000
    assert abs(len(big) - len(small)) < 1_000, (len(small), len(big))
    plan = pickle.loads(big)
    assert isinstance(plan, ReadPartitions)
    assert len(plan.catalog) == 31


def test_time_range_prunes_a_huge_catalog_with_stats(huge: LazyCollection) -> None:
    # Partition i covers [t0 + i h, t0 + i h + 59 min].
    lazy = huge.filter(time=slice("2020-01-01T05:30", "2020-01-01T09:00"))
    assert lazy.npartitions == 5  # hours 5, 6, 7, 8, 9
    assert lazy.partitions == [f"cycle_number=1/pass_number={p}" for p in range(6, 11)]


# -- projection --------------------------------------------------------------------------------
def test_projection_reads_only_the_requested_variables(monthly: tuple[str, Any]) -> None:
    url, data = monthly
    spec = counting_spec(url)
    lazy = zc.read_collection(spec)
    variables = [p for p, _ in zc.open_collection(url).schema.walk()]
    for wanted in (["ssh"], ["time", "ssh"], ["data_01/ku/power"], ["x_ac"]):
        reset_reads(spec.tag)
        sel = lazy[wanted] if len(wanted) > 1 else lazy[wanted[0]]
        out = sel.compute()
        touched = {variable_of_key(k, variables) for k in reads(spec.tag)} - {None}
        assert touched == set(wanted), (wanted, sorted(reads(spec.tag))[:5])
        for w in wanted:
            numpy.testing.assert_array_equal(out[w].values, data[w])
        assert sorted(p for p, _ in out.walk()) == sorted(wanted)


def test_two_projections_share_one_read(monthly: tuple[str, Any]) -> None:
    url, data = monthly
    spec = counting_spec(url)
    lazy = zc.read_collection(spec).filter("month >= 3")
    reset_reads(spec.tag)
    with TaskLog() as log:
        a, b = dask.compute(lazy[["time", "ssh"]], lazy[["time", "quality"]])
    assert len(log.reads()) == 4  # one read task per partition, shared
    keys = reads(spec.tag)
    for var in ("time", "ssh", "quality"):
        metas = [k for k in keys if k.endswith(f"/{var}/zarr.json")]
        assert len(metas) == 4, (var, metas)
        assert len(set(metas)) == 4
    assert not [k for k in keys if "/data_01/" in k or "x_ac" in k]
    keep = data["time"] >= numpy.datetime64("2024-03-01")
    assert sorted(p for p, _ in a.walk()) == ["ssh", "time"]
    assert sorted(p for p, _ in b.walk()) == ["quality", "time"]
    numpy.testing.assert_array_equal(a["ssh"].values, data["ssh"][keep])
    numpy.testing.assert_array_equal(b["quality"].values, data["quality"][keep])
    numpy.testing.assert_array_equal(b["time"].values, data["time"][keep])


def test_full_and_projected_compute_together(monthly: tuple[str, Any]) -> None:
    url, data = monthly
    lazy = zc.read_collection(url)
    with TaskLog() as log:
        full, ssh = dask.compute(lazy, lazy["ssh"])
    assert len(log.reads()) == 6
    assert sorted(p for p, _ in ssh.walk()) == ["ssh"]
    numpy.testing.assert_array_equal(ssh["ssh"].values, data["ssh"])
    numpy.testing.assert_array_equal(full["data_01/ku/power"].values, data["data_01/ku/power"])


# -- map_partitions ----------------------------------------------------------------------------
def test_map_partitions_values(monthly: tuple[str, Any]) -> None:
    url, data = monthly
    out = zc.read_collection(url).map_partitions(add_one).compute()
    numpy.testing.assert_array_equal(out["quality"].values, data["quality"] + 1)
    numpy.testing.assert_array_equal(out["time"].values, data["time"])

    def scale(ds: zc.Dataset, factor: float, *, offset: float = 0.0) -> zc.Dataset:
        return ds.with_variables({"ssh": ds["ssh"].with_data(ds["ssh"].values * factor + offset)})

    out = zc.read_collection(url)["ssh"].map_partitions(scale, 2.0, offset=1.0).compute()
    numpy.testing.assert_array_equal(
        out["ssh"].values, data["ssh"] * numpy.float32(2) + numpy.float32(1)
    )


def test_key_filter_after_map_is_pushed_below_it(monthly: tuple[str, Any]) -> None:
    url, data = monthly
    lazy = zc.read_collection(url).map_partitions(add_one).filter("month in (1, 6)")
    plan = lazy.expr.simplify()
    assert isinstance(plan, MapPartitions)
    assert isinstance(plan.frame, ReadPartitions)
    assert len(plan.frame.catalog) == 2
    text = lazy.explain()
    lines = text.splitlines()
    map_line = next(i for i, line in enumerate(lines) if "MapPartitions add_one" in line)
    read_line = next(i for i, line in enumerate(lines) if "ReadPartitions" in line)
    assert map_line < read_line
    assert "2 of 6 partitions" in lines[read_line]
    assert "absorbed filter: month in (1, 6)" in text
    assert "Filter" not in text.replace("absorbed filter", "")
    with TaskLog() as log:
        out = lazy.compute()
    assert len(log.reads()) == 2
    assert sum(n.startswith("zc-map-") for n in log.names()) == 2
    months = data["time"].astype("datetime64[M]")
    keep = (months == numpy.datetime64("2024-01")) | (months == numpy.datetime64("2024-06"))
    numpy.testing.assert_array_equal(out["quality"].values, data["quality"][keep] + 1)


def test_time_filter_after_map_stays_above_it(monthly: tuple[str, Any]) -> None:
    url, data = monthly
    lazy = (
        zc.read_collection(url)
        .map_partitions(add_one)
        .filter("month == 3", time=slice("2024-03-10", "2024-03-12"))
    )
    plan = lazy.expr.simplify()
    assert not isinstance(plan, MapPartitions)  # the row filter stays on the map output
    out = lazy.compute()
    keep = (data["time"] >= numpy.datetime64("2024-03-10")) & (
        data["time"] <= numpy.datetime64("2024-03-12")
    )
    numpy.testing.assert_array_equal(out["time"].values, data["time"][keep])
    numpy.testing.assert_array_equal(out["quality"].values, data["quality"][keep] + 1)


# -- no I/O when the graph is materialised -----------------------------------------------------
def test_materialising_an_unpickled_plan_does_no_io(monthly: tuple[str, Any]) -> None:
    url, data = monthly
    spec = counting_spec(url)
    lazy = zc.read_collection(spec).filter("month > 2")[["time", "ssh", "x_ac"]]
    plan = pickle.dumps(Finalize(lazy.expr).optimize(fuse=False))
    plan_parts = pickle.dumps(lazy.expr.optimize(fuse=False))
    reset_reads(spec.tag)
    for blob in (plan, plan_parts):
        graph = dict(pickle.loads(blob).__dask_graph__())
        assert graph
        tasks = pickle.dumps(graph)  # every task pickles with plain pickle
        assert pickle.loads(tasks).keys() == graph.keys()
    assert reads(spec.tag) == []
    assert isinstance(spec, CountingMemoryStore)
    # ... and the same plan, once run, reads.
    out = dask.compute(lazy)[0]
    assert reads(spec.tag)
    keep = data["time"] >= numpy.datetime64("2024-03-01")
    numpy.testing.assert_array_equal(out["ssh"].values, data["ssh"][keep])


def test_axis_name_in_explain(monthly: tuple[str, Any]) -> None:
    url, _ = monthly
    text = zc.read_collection(url).filter(time=slice("2024-02-03", "2024-02-05")).explain()
    assert "1 partition(s) selected of 6" in text
    assert f"rows trimmed to {axis_of('date_M')} in [2024-02-03" in text
