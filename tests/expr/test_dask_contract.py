"""Pins the private dask behaviours the read path relies on (dask._expr, dask._task_spec).

If dask changes one of these, this file fails first and names what moved:
- an ``Expr`` subclass declares ``_parameters`` / ``_defaults`` and builds its
  graph with ``_layer()``; ``_funcname`` prefixes ``_name`` (our ``zc-read`` keys);
  names are deterministic tokens of the operands;
- ``_simplify_up(parent, dependents)`` is called on a child with its parent and
  a mapping ``name -> [weakref to each dependent]`` (shared reads, pushdowns);
- ``dask.compute`` wraps collections in ``FinalizeCompute`` whose simplification
  calls ``expr.finalize_compute()`` and never calls ``__dask_postcompute__``;
- ``Expr.optimize(fuse=False)`` is the default and leaves layers unfused;
- ``dask.persist`` calls ``__dask_postpersist__`` and rebuilds with the results
  keyed by the optimised expression's keys;
- ``_pickle_functools_cache = False`` keeps cached properties out of pickles;
- ``Task``, ``TaskRef``, ``Alias``, ``DataNode``, ``List`` keep their meaning;
- a classic ``dask.array.Array(graph, name, chunks, dtype)`` takes our graph as is;
  with ``array.query-planning`` on, ``dask.array._array_expr._collection.from_graph``
  wraps it (``array_from_graph``).
"""

from __future__ import annotations

import functools
import inspect
import operator
import pickle
import uuid
import weakref
from typing import Any, ClassVar

import dask
import numpy
import pytest
from dask.base import DaskMethodsMixin
from dask.local import get_sync

import dask_zcollection as zc
from dask_zcollection.collection import LazyCollection
from dask_zcollection.expr import _dask
from dask_zcollection.expr._dask import (
    Alias,
    DataNode,
    Expr,
    FinalizeCompute,
    GraphNode,
    List,
    Task,
    TaskRef,
)
from dask_zcollection.store import MemoryStore


class Leaf(Expr):
    _parameters: ClassVar[list[str]] = ["value", "n"]
    _defaults: ClassVar[dict[str, Any]] = {"n": 3}

    @functools.cached_property
    def _funcname(self) -> str:
        return "zc-leaf"

    @property
    def npartitions(self) -> int:
        return self.operand("n")

    def _layer(self) -> dict[Any, Any]:
        return {
            (self._name, i): Task((self._name, i), operator.add, self.operand("value"), i)
            for i in range(self.operand("n"))
        }


class Double(Expr):
    _parameters: ClassVar[list[str]] = ["frame"]

    @property
    def npartitions(self) -> int:
        return self.frame.npartitions

    def _layer(self) -> dict[Any, Any]:
        return {
            (self._name, i): Task((self._name, i), operator.mul, TaskRef((self.frame._name, i)), 2)
            for i in range(self.npartitions)
        }


class Absorbing(Leaf):
    """A leaf that records its ``_simplify_up`` calls and absorbs a ``Double`` parent."""

    calls: ClassVar[list[tuple[Any, Any]]] = []

    def _simplify_up(self, parent: Expr, dependents: Any) -> Expr | None:
        Absorbing.calls.append((parent, dependents))
        if isinstance(parent, Double) and len(dependents[self._name]) == 1:
            return Absorbing(self.operand("value") * 2, self.operand("n"))
        return None


def test_the_private_names_we_import_exist() -> None:
    assert set(_dask.__all__) == {
        "Alias",
        "DataNode",
        "Expr",
        "FinalizeCompute",
        "GraphNode",
        "List",
        "Task",
        "TaskRef",
        "array_from_graph",
        "data_argument",
    }
    from dask import _expr, _task_spec

    assert _dask.Expr is _expr.Expr and _dask.FinalizeCompute is _expr.FinalizeCompute
    assert _dask.Task is _task_spec.Task and _dask.TaskRef is _task_spec.TaskRef


def test_a_tasks_data_argument_is_read_back() -> None:
    """The scheduler watch of lazy writes reads a commit task's context this way."""
    context = object()
    task = _dask.Task(("zc-commit-x", 0), print, _dask.DataNode(None, context), [1])
    assert _dask.data_argument(task, 0) is context
    assert _dask.data_argument(task, 1) is None  # not a DataNode
    assert _dask.data_argument(task, 5) is None and _dask.data_argument(None, 0) is None


def test_expr_parameters_defaults_layer_and_names() -> None:
    a = Leaf(10)
    assert a.operand("n") == 3 and a.operand("value") == 10
    assert a._name.startswith("zc-leaf-")
    assert a._name == Leaf(10)._name == Leaf(10, 3)._name
    assert a._name != Leaf(11)._name
    assert a.substitute_parameters({"n": 2})._name == Leaf(10, 2)._name
    graph = dict(a.__dask_graph__())
    assert sorted(graph) == [(a._name, 0), (a._name, 1), (a._name, 2)]
    assert a.__dask_keys__() == [(a._name, i) for i in range(3)]
    assert get_sync(graph, [(a._name, 2)]) == (12,)
    b = Double(a)
    graph = dict(b.__dask_graph__())
    assert len(graph) == 6
    assert get_sync(graph, b.__dask_keys__()) == (20, 22, 24)
    assert inspect.signature(Expr.lower_completely)


def test_simplify_up_gets_parent_and_weakref_dependents() -> None:
    Absorbing.calls.clear()
    leaf = Absorbing(5, 2)
    out = Double(leaf).simplify()
    assert isinstance(out, Absorbing) and out.operand("value") == 10
    parent, dependents = Absorbing.calls[0]
    assert isinstance(parent, Double)
    refs = dependents[leaf._name]
    assert all(isinstance(r, weakref.ref) for r in refs)
    assert [r()._name for r in refs] == [parent._name]
    # Two consumers of one child: both are listed, and the child is not rewritten.
    Absorbing.calls.clear()
    from dask._expr import _ExprSequence

    shared = _ExprSequence(Double(leaf), leaf).simplify()
    first, second = shared.operands
    assert isinstance(first, Double) and first.frame._name == leaf._name
    assert second._name == leaf._name
    # (dask may list a dependent more than once: count distinct consumers.)
    assert any(
        {type(r()).__name__ for r in d[leaf._name]} == {"Double", "_ExprSequence"}
        for _, d in Absorbing.calls
    )


class Tiny(DaskMethodsMixin):
    """The smallest expression-backed collection: what LazyCollection relies on."""

    def __init__(self, expr: Expr) -> None:
        self.expr = expr

    def __dask_graph__(self) -> Any:
        return self.expr.__dask_graph__()

    def __dask_keys__(self) -> Any:
        return self.expr.__dask_keys__()

    def __dask_postcompute__(self) -> Any:
        raise AssertionError(
            "dask.compute must not call __dask_postcompute__ on expression collections"
        )

    def __dask_postpersist__(self) -> Any:
        return Tiny.rebuilt, ("state",)

    received: ClassVar[list[Any]] = []

    @staticmethod
    def rebuilt(dsk: Any, state: str) -> Any:
        Tiny.received.append((dict(dsk), state))
        return "rebuilt"

    __dask_scheduler__ = staticmethod(dask.threaded.get)


class Summed(Leaf):
    """A leaf whose finalisation is itself an expression (summing its partitions)."""

    def finalize_compute(self) -> Expr:
        return Total(self)


class Total(Expr):
    _parameters: ClassVar[list[str]] = ["frame"]

    def __dask_keys__(self) -> list[Any]:
        return [(self._name, 0)]

    def _layer(self) -> dict[Any, Any]:
        refs = [TaskRef(k) for k in self.frame.__dask_keys__()]
        return {(self._name, 0): Task((self._name, 0), sum, List(*refs))}


def test_compute_goes_through_finalize_compute() -> None:
    expr = Summed(10, 3)
    fin = FinalizeCompute(expr).optimize()
    assert isinstance(fin, Total)
    (result,) = dask.compute(Tiny(expr))
    assert result == 10 + 11 + 12
    assert Tiny(expr).compute() == 33


def test_optimize_defaults_to_no_fusion() -> None:
    assert inspect.signature(Expr.optimize).parameters["fuse"].default is False
    leaf = Leaf(1, 2)
    plan = Double(leaf).optimize(fuse=False)
    graph = dict(plan.__dask_graph__())
    assert (leaf._name, 0) in graph and (plan._name, 0) in graph


def test_persist_rebuilds_with_optimised_keys() -> None:
    Tiny.received.clear()
    expr = Leaf(1, 2)
    (out,) = dask.persist(Tiny(expr))
    assert out == "rebuilt"
    dsk, state = Tiny.received[0]
    assert state == "state"
    assert sorted(dsk) == [(expr._name, 0), (expr._name, 1)]
    assert [dsk[k] for k in sorted(dsk)] == [1, 2]


class Heavy(Leaf):
    _pickle_functools_cache = False

    @functools.cached_property
    def payload(self) -> bytes:
        return b"x" * 1_000_000


def test_pickle_functools_cache_flag() -> None:
    h = Heavy(1, 1)
    assert len(h.payload) == 1_000_000
    assert len(pickle.dumps(h)) < 10_000


def test_task_spec_nodes() -> None:
    graph = {
        "a": DataNode("a", 3),
        "b": Task("b", operator.add, TaskRef("a"), 4),
        "c": Alias("c", "b"),
        "d": Task("d", sum, List(TaskRef("a"), TaskRef("b"), TaskRef("c"))),
        "e": Task("e", len, DataNode(None, [1, 2, 3])),
    }
    assert get_sync(graph, ["a", "b", "c", "d", "e"]) == (3, 7, 7, 17, 3)
    # Every node is a GraphNode (what the tests of to_dask_array's graph check).
    assert all(isinstance(node, GraphNode) for node in graph.values())


def test_array_from_graph() -> None:
    # Classic arrays (dask's default) take our graph as is: the array's keys are ours.
    import dask.array as da

    graph = {
        ("zc-x", 0, 0): DataNode(("zc-x", 0, 0), numpy.arange(6).reshape(2, 3)),
        ("zc-x", 1, 0): Task(("zc-x", 1, 0), numpy.ones, (1, 3), dtype="int64"),
    }
    assert not da.array_expr_enabled()
    arr = _dask.array_from_graph(graph, "zc-x", ((2, 1), (3,)), numpy.dtype("int64"))
    assert isinstance(arr, da.Array) and arr.name == "zc-x"
    numpy.testing.assert_array_equal(arr.compute(), [[0, 1, 2], [3, 4, 5], [1, 1, 1]])
    # With array expressions on, dask's ``from_graph`` (FromGraph) wraps it: pinned
    # in a fresh interpreter by tests/test_collection_blocks.py (the mode is
    # chosen once per process, at the first import of dask.array).


# -- the same behaviours, through LazyCollection -----------------------------------------------
@pytest.fixture
def lazy(factory: Any) -> Any:
    name = f"contract-{uuid.uuid4().hex}"
    url = f"memory://{name}"
    col = factory.create(url, nested=False)
    times = numpy.arange(
        "2024-01-01", "2024-04-01", numpy.timedelta64(1, "D"), dtype="datetime64[ns]"
    )
    data = factory.data(times, nested=False)
    col.insert(data)
    yield zc.read_collection(url), data
    MemoryStore.forget(name)


def test_lazy_collection_never_needs_postcompute(
    lazy: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    coll, data = lazy

    def boom(self: Any) -> Any:
        raise AssertionError("__dask_postcompute__ called")

    monkeypatch.setattr(LazyCollection, "__dask_postcompute__", boom)
    (out,) = dask.compute(coll.filter(month=2))
    feb = data["time"].astype("datetime64[M]") == numpy.datetime64("2024-02")
    numpy.testing.assert_array_equal(out["time"].values, data["time"][feb])


def test_lazy_persist_receives_optimised_partition_keys(
    lazy: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    coll, _ = lazy
    sel = coll.filter("month != 2")
    seen: list[Any] = []
    original = LazyCollection._rebuild

    def spy(dsk: Any, *state: Any) -> Any:
        seen.append(sorted(dsk))
        return original(dsk, *state)

    monkeypatch.setattr(LazyCollection, "_rebuild", staticmethod(spy))
    persisted = sel.persist()
    assert seen == [sorted(sel.__dask_keys__())]
    assert all(k[0].startswith("zc-read-") for k in seen[0])
    assert persisted.npartitions == 2
