"""Read-side expressions: nouns of the lazy plan, and their rewrite rules.

The plan of ``read_collection(url).filter("year == 2024")["ssh"].compute()``
starts as ``Finalize(Project(Filter(ReadPartitions)))``; simplification folds
the filter and the projection into ``ReadPartitions`` (evaluating the predicate
on the catalog's key columns, vectorised), so the graph holds one read task per
selected partition, or one task that decodes all of them into one result.
``ReadBlocks`` / ``PersistedBlocks`` are the graphs of ``to_dask_array``: a
task per zarr chunk of one variable inside each partition.
"""

from __future__ import annotations

import functools
import itertools
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy

from .._sync import sync
from ..catalog import Catalog
from ..catalog._discovery import IMMUTABLE_PATH
from ..data import Dataset
from ..io import (
    Part,
    ReadSource,
    TimeRange,
    parts_of,
    read_block,
    read_concat,
    read_partition,
    read_rows,
    row_range,
)
from ..partitioning import PartitionFilter
from ._dask import Alias, DataNode, Expr, List, Task, TaskRef

__all__ = [
    "Filter",
    "Finalize",
    "MapPartitions",
    "Persisted",
    "PersistedBlocks",
    "Project",
    "ReadBlocks",
    "ReadPartitions",
    "ZExpr",
    "intersect_ranges",
]

#: Partitions concatenated per task in the tree reduction of :class:`Finalize`.
SPLIT_EVERY = 32


def intersect_ranges(a: TimeRange | None, b: TimeRange | None) -> TimeRange | None:
    """Intersection of two inclusive ranges (``None``: unbounded)."""
    if a is None:
        return b
    if b is None:
        return a
    lo = a[0] if b[0] is None else b[0] if a[0] is None else max(a[0], b[0])
    hi = a[1] if b[1] is None else b[1] if a[1] is None else min(a[1], b[1])
    return (lo, hi)


def _and_rows(a: Any, b: Any) -> Any:
    """Rows selected by both row selections (``None``: every row)."""
    if a is None:
        return b
    if b is None:
        return a
    return a & b


def canonical_paths(source: ReadSource, catalog: Catalog) -> list[str]:
    """The canonical path (``year=2024/month=03``) of each partition of ``catalog``."""
    encode = source.config.partitioning.encode
    return [encode(catalog.key_tuple(i)) for i in range(len(catalog))]


def _select_rows(source: ReadSource, catalog: Catalog, rows: Any) -> Catalog:
    """The partitions of ``catalog`` holding a row of the row selection ``rows``."""
    if rows is None:
        return catalog
    return catalog.take(rows.mask(canonical_paths(source, catalog)))


def _and(a: PartitionFilter | None, b: PartitionFilter | None) -> PartitionFilter | None:
    if a is None:
        return b
    if b is None:
        return a
    return a & b


# -- task functions (run on workers) ----------------------------------------------------------
def _dataset(
    source: ReadSource, columns: Mapping[str, Any], immutable: Mapping[str, Any] | None
) -> Dataset:
    from .._prepare import columns_to_dataset

    return columns_to_dataset(source.config.schema, columns, immutable)


def read_immutable_task(
    source: ReadSource, path: str | None, variables: tuple[str, ...]
) -> dict[str, Any]:
    """Read the immutable variables (once per graph)."""
    if path is None or not variables:
        return {}
    return sync(source.io.read_immutable(path, variables))


def read_partition_task(
    source: ReadSource,
    part: Part,
    variables: tuple[str, ...],
    time_range: TimeRange | None,
    immutable: Mapping[str, Any] | None,
    rows: tuple[tuple[int, int], ...] | None = None,
) -> Dataset:
    """Read one partition into a :class:`Dataset` (only ``rows`` when given)."""
    columns = sync(read_partition(source, part, variables, time_range, rows))
    return _dataset(source, columns, immutable)


def read_concat_task(
    source: ReadSource,
    parts: list[Part],
    variables: tuple[str, ...],
    time_range: TimeRange | None,
    immutable: Mapping[str, Any] | None,
    rows: list[tuple[tuple[int, int], ...] | None] | None = None,
) -> Dataset | None:
    """Read all partitions straight into one :class:`Dataset`."""
    columns = sync(read_concat(source, parts, variables, time_range, rows))
    if columns and all(len(v) == 0 for v in columns.values()):
        return None  # the time range keeps no row: same answer as when no partition is selected
    return _dataset(source, columns, immutable)


def _has_rows(ds: Dataset, dim: str) -> bool:
    return ds.dimensions.get(dim, 1) != 0


def concat_task(parts: Sequence[Dataset | None], dim: str) -> Dataset | None:
    """Concatenate partition datasets along the partition axis (in key order).

    ``None`` when no partition holds a row (nothing selected, or a time range
    that keeps no row): the result of an empty selection does not depend on how
    it was pruned.
    """
    present = [p for p in parts if p is not None and _has_rows(p, dim)]
    if not present:
        return None
    if len(present) == 1:
        return present[0]
    return Dataset.concat(present, dim)


def project_task(ds: Dataset, variables: tuple[str, ...]) -> Dataset:
    """Keep only ``variables``."""
    return ds.select(variables)


def trim_task(ds: Dataset, axis: str, dim: str, time_range: TimeRange) -> Dataset:
    """Keep the rows whose axis value lies in ``time_range`` (sorted axis)."""
    values = ds[axis].values  # type: ignore[union-attr]
    start, stop = row_range(values, time_range)
    return ds.isel({dim: slice(start, stop)})


def select_rows_task(
    ds: Dataset,
    dim: str,
    ranges: tuple[tuple[int, int], ...],
    axis: str,
    time_range: TimeRange | None,
) -> Dataset:
    """Rows ``ranges`` of a computed partition (an index's selection), then a time range."""
    out = Dataset.concat([ds.isel({dim: slice(a, b)}) for a, b in ranges], dim)
    return out if time_range is None else trim_task(out, axis, dim, time_range)


def map_task(
    func: Callable[..., Dataset], ds: Dataset, args: tuple[Any, ...], kwargs: dict[str, Any]
) -> Dataset:
    """Apply a user function to one partition."""
    return func(ds, *args, **kwargs)


def read_block_task(
    source: ReadSource, path: str, variable: str, start: int, stop: int, txn: str = ""
) -> numpy.ndarray:
    """Rows ``start:stop`` of one variable of one partition (an immutable one whole).

    ``txn``: the identity of the partition's group, checked (``""``: not checked).
    """
    return sync(read_block(source, path, variable, start, stop, txn))


def read_pieces_task(
    source: ReadSource,
    path: str,
    variable: str,
    pieces: tuple[tuple[int, int], ...],
    txn: str = "",
) -> numpy.ndarray:
    """The rows of ``pieces`` of one variable of one partition (each chunk read once)."""
    return sync(read_rows(source, path, variable, pieces, txn))


def slice_rows_task(ds: Dataset, variable: str, start: int, stop: int) -> numpy.ndarray:
    """Rows ``start:stop`` of one variable of a persisted partition."""
    return ds[variable].values[start:stop]  # type: ignore[union-attr,no-any-return]


def values_task(ds: Dataset, variable: str) -> numpy.ndarray:
    """The whole values of one variable of a persisted partition (immutable variables)."""
    return ds[variable].values  # type: ignore[union-attr,no-any-return]


def row_count_task(ds: Dataset, dim: str) -> int:
    """Rows of a persisted partition along the partition axis."""
    return int(ds.dimensions.get(dim, 0))


# -- expressions ---------------------------------------------------------------------------------
class ZExpr(Expr):
    """Base of the collection's expressions: one output partition per catalog row."""

    _prefix = "zc"
    # Cached properties hold catalogs: never ship them with the pickled plan.
    _pickle_functools_cache = False

    @functools.cached_property
    def _funcname(self) -> str:
        return self._prefix

    @property
    def frame(self) -> ZExpr:
        """The input expression."""
        return self.operand("frame")  # type: ignore[no-any-return]

    @property
    def source(self) -> ReadSource:
        """Where the data comes from."""
        return self.frame.source

    @property
    def catalog(self) -> Catalog:
        """One row per output partition (key values, paths, stats)."""
        return self.frame.catalog

    @property
    def total(self) -> int:
        """Number of partitions of the whole collection."""
        return self.frame.total

    @property
    def variables(self) -> tuple[str, ...]:
        """Variable paths in the output."""
        return self.frame.variables

    @property
    def npartitions(self) -> int:
        return len(self.catalog)

    def finalize_compute(self) -> Expr:
        return Finalize(self)

    def describe(self) -> list[str]:
        """Lines of :meth:`explain` for this node (and below)."""
        return self.frame.describe()


class ReadPartitions(ZExpr):
    """Read the partitions of ``catalog`` (already pruned), ``variables`` only.

    Parameters (operands)
    ---------------------
    source : ReadSource
    catalog : Catalog
        The selected partitions; the full catalog before any filter.
    total : int
        Partitions in the whole collection (for reprs).
    variables : tuple of str
        Partitioned and immutable variable paths to read.
    time_range : (lo, hi) or None
        Inclusive bounds on the axis variable; boundary partitions are trimmed.
    filters : tuple of str
        The filters absorbed so far (for :meth:`explain`).
    fused : bool
        One task decoding every partition into one result (set when the read
        is finalised directly and nothing else shares it).
    rows : RowSelection or None
        Only these rows of each partition (an index lookup), by canonical path;
        the catalog holds only the partitions it names.
    """

    _parameters = [
        "source",
        "catalog",
        "total",
        "variables",
        "time_range",
        "filters",
        "fused",
        "rows",
    ]
    _defaults = {"time_range": None, "filters": (), "fused": False, "rows": None}
    _prefix = "zc-read"

    @property
    def source(self) -> ReadSource:
        return self.operand("source")  # type: ignore[no-any-return]

    @property
    def catalog(self) -> Catalog:
        return self.operand("catalog")  # type: ignore[no-any-return]

    @property
    def total(self) -> int:
        return self.operand("total")  # type: ignore[no-any-return]

    @property
    def variables(self) -> tuple[str, ...]:
        return self.operand("variables")  # type: ignore[no-any-return]

    @property
    def npartitions(self) -> int:
        return 1 if self.operand("fused") else len(self.catalog)

    def _split_variables(self) -> tuple[tuple[str, ...], tuple[str, ...]]:
        schema = self.source.config.schema
        part = tuple(v for v in self.variables if not schema[v].immutable)
        imm = tuple(v for v in self.variables if schema[v].immutable)
        return part, imm

    def describe(self) -> list[str]:
        cat = self.catalog
        lines = [
            f"ReadPartitions {self.source.spec.url}: {len(cat)} of {self.total} partitions"
            + (" (fused into one task)" if self.operand("fused") else ""),
            f"  variables: {', '.join(self.variables)}",
        ]
        lines += ["  " + line for line in self.source.describe(self.variables)]
        for f in self.operand("filters"):
            lines.append(f"  absorbed filter: {f}")
        if self.operand("time_range") is not None:
            lo, hi = self.operand("time_range")
            lines.append(f"  rows trimmed to {self.source.config.axis_variable} in [{lo}, {hi}]")
        selection = self.operand("rows")
        if selection is not None:
            lines.append(f"  rows selected by {selection.label}: {selection.rows:,}")
        rows = cat.total_rows
        if rows >= 0:
            lines.append(f"  rows: {rows:,}")
        return lines

    def _simplify_up(self, parent: Expr, dependents: Mapping[str, Any]) -> Expr | None:
        if self.operand("fused"):
            return None
        if isinstance(parent, Filter):
            return self.apply_filter(
                parent.operand("predicate"), parent.operand("time_range"), parent.operand("rows")
            )
        if isinstance(parent, Project):
            # Read the union of what every consumer projects, once.
            users = [d() for d in dependents[self._name]]
            if not all(isinstance(u, Project) for u in users):
                return None
            needed = tuple(
                v for v in self.variables if any(v in u.operand("variables") for u in users)
            )
            if needed != self.variables:
                return type(parent)(
                    self.substitute_parameters({"variables": needed}), *parent.operands[1:]
                )
            if needed == parent.operand("variables"):
                return self
            return None
        if (
            isinstance(parent, Finalize)
            and len(dependents[self._name]) == 1
            and len(self.catalog) > 1
        ):
            return Finalize(self.substitute_parameters({"fused": True}))
        return None

    def apply_filter(
        self, predicate: PartitionFilter | None, time_range: TimeRange | None, rows: Any = None
    ) -> ReadPartitions:
        """This read restricted by a key predicate, a time range and/or a row selection."""
        filters = list(self.operand("filters"))
        if predicate is not None:
            filters.append(str(predicate.source))
        if time_range is not None:
            axis = self.source.config.axis_variable
            filters.append(f"{axis} in [{time_range[0]}, {time_range[1]}]")
        if rows is not None:
            filters.append(f"rows {rows.label}".rstrip())
        selection = _and_rows(self.operand("rows"), rows)
        return ReadPartitions(
            self.source,
            _select_rows(self.source, self.catalog.select(predicate, time_range), selection),
            self.total,
            self.variables,
            intersect_ranges(self.operand("time_range"), time_range),
            tuple(filters),
            False,
            selection,
        )

    def row_ranges(self) -> list[tuple[tuple[int, int], ...] | None]:
        """The rows selected of each partition of the catalog (``None``: every row)."""
        selection = self.operand("rows")
        if selection is None:
            return [None] * len(self.catalog)
        by_path = dict(zip(selection.paths, selection.ranges, strict=True))
        return [by_path.get(p, ()) for p in canonical_paths(self.source, self.catalog)]

    def _immutable_task(self, imm: tuple[str, ...]) -> tuple[Any, Task | None]:
        if not imm:
            return None, None
        key = (f"{self._name}-immutable", 0)
        path = self.catalog.immutable
        if path is None:
            path = IMMUTABLE_PATH  # reference-format collections
        return key, Task(key, read_immutable_task, DataNode(None, self.source), path, imm)

    def _layer(self) -> dict[Any, Any]:
        source = self.source
        part_vars, imm = self._split_variables()
        time_range = self.operand("time_range")
        parts = parts_of(self.catalog, time_range)
        imm_key, imm_task = self._immutable_task(imm)
        imm_ref = TaskRef(imm_key) if imm_key is not None else None
        layer: dict[Any, Any] = {} if imm_task is None else {imm_key: imm_task}
        src = DataNode(None, source)
        name = self._name
        selected = self.row_ranges()
        if self.operand("fused"):
            key = (name, 0)
            layer[key] = Task(
                key, read_concat_task, src, parts, part_vars, time_range, imm_ref, selected
            )
            return layer
        for i, part in enumerate(parts):
            key = (name, i)
            layer[key] = Task(
                key, read_partition_task, src, part, part_vars, time_range, imm_ref, selected[i]
            )
        return layer


class Filter(ZExpr):
    """Keep the partitions whose keys satisfy ``predicate`` and the rows inside ``time_range``.

    ``rows`` (a ``RowSelection``, from an index) keeps only those rows of the
    partitions it names; it is absorbed by the read (row numbers are those of
    the stored partitions).
    """

    _parameters = ["frame", "predicate", "time_range", "rows"]
    _defaults = {"predicate": None, "time_range": None, "rows": None}
    _prefix = "zc-filter"

    def _simplify_down(self) -> Expr | None:
        frame = self.frame
        predicate, time_range = self.operand("predicate"), self.operand("time_range")
        rows = self.operand("rows")
        if isinstance(frame, Filter):
            return Filter(
                frame.frame,
                _and(frame.operand("predicate"), predicate),
                intersect_ranges(frame.operand("time_range"), time_range),
                _and_rows(frame.operand("rows"), rows),
            )
        if isinstance(frame, MapPartitions) and predicate is not None:
            # A partition filter commutes with a per-partition map; a row filter
            # on the axis does not (the function may change the axis).
            below = MapPartitions(Filter(frame.frame, predicate, None), *frame.operands[1:])
            if time_range is None and rows is None:
                return below
            return Filter(below, None, time_range, rows)
        if isinstance(frame, Project):
            return Project(
                Filter(frame.frame, predicate, time_range, rows), frame.operand("variables")
            )
        return None

    @property
    def catalog(self) -> Catalog:
        selected = self.frame.catalog.select(self.operand("predicate"))
        return _select_rows(self.source, selected, self.operand("rows"))

    def describe(self) -> list[str]:
        p, t = self.operand("predicate"), self.operand("time_range")
        r = self.operand("rows")
        head = f"Filter {p.source if p is not None else ''} {t if t is not None else ''}".rstrip()
        if r is not None:
            head += f" rows selected by {r.label}: {r.rows:,}"
        return [head] + ["  " + line for line in self.frame.describe()]

    def _layer(self) -> dict[Any, Any]:
        # A row selection the read did not absorb: over persisted partitions holding
        # their stored rows (LazyCollection.filter(index=) checks they do).
        rows = self.operand("rows")
        mask = self.frame.catalog.matching(self.operand("predicate"))
        canonical = canonical_paths(self.source, self.frame.catalog) if rows is not None else []
        if rows is not None:
            mask &= rows.mask(canonical)
        selected = numpy.flatnonzero(mask).tolist()
        time_range = self.operand("time_range")
        config = self.source.config
        name, frame_name = self._name, self.frame._name
        layer: dict[Any, Any] = {}
        for j, i in enumerate(selected):
            key = (name, j)
            if rows is not None:
                layer[key] = Task(
                    key,
                    select_rows_task,
                    TaskRef((frame_name, i)),
                    config.axis,
                    rows.get(canonical[i]),
                    config.axis_variable,
                    time_range,
                )
            elif time_range is None:
                layer[key] = Alias(key, (frame_name, i))
            else:
                layer[key] = Task(
                    key,
                    trim_task,
                    TaskRef((frame_name, i)),
                    config.axis_variable,
                    config.axis,
                    time_range,
                )
        return layer


class Project(ZExpr):
    """Keep only some variables."""

    _parameters = ["frame", "variables"]
    _prefix = "zc-project"

    @property
    def variables(self) -> tuple[str, ...]:
        return self.operand("variables")  # type: ignore[no-any-return]

    def _simplify_down(self) -> Expr | None:
        frame = self.frame
        if isinstance(frame, Project):
            return Project(frame.frame, self.variables)
        if tuple(frame.variables) == tuple(self.variables):
            return frame
        return None

    def describe(self) -> list[str]:
        return [f"Project {', '.join(self.variables)}"] + ["  " + x for x in self.frame.describe()]

    def _layer(self) -> dict[Any, Any]:
        name, frame_name = self._name, self.frame._name
        variables = self.variables
        return {
            (name, i): Task((name, i), project_task, TaskRef((frame_name, i)), variables)
            for i in range(self.npartitions)
        }


class MapPartitions(ZExpr):
    """Apply ``func(dataset, *args, **kwargs) -> Dataset`` to every partition."""

    _parameters = ["frame", "func", "args", "kwargs", "variables_out"]
    _defaults = {"args": (), "kwargs": None, "variables_out": None}
    _prefix = "zc-map"

    @property
    def variables(self) -> tuple[str, ...]:
        out = self.operand("variables_out")
        return tuple(out) if out is not None else self.frame.variables

    @property
    def catalog(self) -> Catalog:
        # The function may change rows and the axis: stats no longer hold.
        import dataclasses

        cat = self.frame.catalog
        return dataclasses.replace(
            cat, has_stats=False, rows=numpy.full(len(cat), -1, dtype="int64")
        )

    def describe(self) -> list[str]:
        func = self.operand("func")
        return [f"MapPartitions {getattr(func, '__qualname__', func)!s}"] + [
            "  " + x for x in self.frame.describe()
        ]

    def _layer(self) -> dict[Any, Any]:
        name, frame_name = self._name, self.frame._name
        func = self.operand("func")
        args = tuple(self.operand("args"))
        kwargs = dict(self.operand("kwargs") or {})
        return {
            (name, i): Task((name, i), map_task, func, TaskRef((frame_name, i)), args, kwargs)
            for i in range(self.npartitions)
        }


class Persisted(ZExpr):
    """Partitions already computed (``persist``): a graph of their results."""

    _parameters = ["source", "catalog", "total", "variables", "layer", "keys"]
    _prefix = "zc-persisted"

    @property
    def source(self) -> ReadSource:
        return self.operand("source")  # type: ignore[no-any-return]

    @property
    def catalog(self) -> Catalog:
        return self.operand("catalog")  # type: ignore[no-any-return]

    @property
    def total(self) -> int:
        return self.operand("total")  # type: ignore[no-any-return]

    @property
    def variables(self) -> tuple[str, ...]:
        return self.operand("variables")  # type: ignore[no-any-return]

    def describe(self) -> list[str]:
        return [f"Persisted {len(self.catalog)} of {self.total} partitions"]

    def _simplify_up(self, parent: Expr, dependents: Mapping[str, Any]) -> Expr | None:
        # A key filter selects persisted partitions: the result is persisted too
        # (so to_xarray / to_dask_dataframe still know its row counts).
        if not isinstance(parent, Filter) or parent.operand("predicate") is None:
            return None
        if parent.operand("rows") is not None:
            return None
        catalog = self.catalog
        mask = catalog.matching(parent.operand("predicate"))
        keys = [k for k, keep in zip(self.operand("keys"), mask.tolist(), strict=True) if keep]
        layer = self.operand("layer")
        below = Persisted(
            self.source,
            catalog.take(mask),
            self.total,
            self.variables,
            {k: layer[k] for k in keys},
            keys,
        )
        time_range = parent.operand("time_range")
        return below if time_range is None else Filter(below, None, time_range)

    def _layer(self) -> dict[Any, Any]:
        layer = dict(self.operand("layer"))
        for i, old in enumerate(self.operand("keys")):
            layer[(self._name, i)] = Alias((self._name, i), old)
        return layer


class Finalize(ZExpr):
    """Concatenate every partition along the axis, in key order, into one :class:`Dataset`."""

    _parameters = ["frame"]
    _prefix = "zc-concat"

    @property
    def npartitions(self) -> int:
        return 1

    def describe(self) -> list[str]:
        return [
            f"Concat {self.frame.npartitions} partition(s) along {self.source.config.axis!r}"
        ] + ["  " + x for x in self.frame.describe()]

    def __dask_keys__(self) -> list[Any]:
        return [(self._name, 0)]

    def _layer(self) -> dict[Any, Any]:
        name, frame_name = self._name, self.frame._name
        n = self.frame.npartitions
        dim = self.source.config.axis
        key = (name, 0)
        if n == 0:
            return {key: DataNode(key, None)}
        layer: dict[Any, Any] = {}
        refs = [TaskRef((frame_name, i)) for i in range(n)]
        level = 0
        while len(refs) > SPLIT_EVERY:
            level += 1
            grouped = [refs[i : i + SPLIT_EVERY] for i in range(0, len(refs), SPLIT_EVERY)]
            refs = []
            for j, group in enumerate(grouped):
                k = (f"{name}-partial-{level}", j)
                layer[k] = Task(k, concat_task, List(*group), dim)
                refs.append(TaskRef(k))
        layer[key] = Task(key, concat_task, List(*refs), dim)
        return layer


# -- blocks of one variable (dask arrays) ----------------------------------------------------------
def _per_chunk(pieces: Sequence[tuple[int, int]], chunk: int) -> list[list[tuple[int, int]]]:
    """``pieces`` split on the chunk edges, grouped by the chunk they lie in."""
    groups: list[list[tuple[int, int]]] = []
    current = -1
    for a, b in pieces:
        edges = sorted({a, b, *range((a // chunk + 1) * chunk, b, chunk)} if chunk else {a, b})
        for x, y in itertools.pairwise(edges):
            c = x // chunk if chunk else 0
            if groups and c == current:
                if groups[-1][-1][1] == x:
                    groups[-1][-1] = (groups[-1][-1][0], y)
                else:
                    groups[-1].append((x, y))
            else:
                groups.append([(x, y)])
                current = c
    return groups


#: Rows ``[start, stop)`` kept of each partition: ``int64`` ``(n, 2)`` (tokenised fast).
RowRanges = numpy.ndarray


class _Blocks(ZExpr):
    """One variable as the blocks of a dask array: a task per zarr chunk inside each partition.

    ``ranges`` holds the rows ``[start, stop)`` kept of each partition of the
    catalog (the committed rows, trimmed to a time range); each is split on the
    zarr chunk edges of the stored array, so a block reads only its chunks. An
    immutable variable is one block. Keys are ``(name, i, 0, ...)``, the keys of
    a :class:`dask.array.Array` named ``_name`` with :attr:`chunks`.

    The ``block_rows`` operand (``None``: one zarr chunk) makes a block several
    whole chunks of one partition instead: fewer, larger tasks, each paying the
    scheduler's per-task cost once (see ``docs/distributed.md``).
    """

    _prefix = "zc-block"

    @functools.cached_property
    def _funcname(self) -> str:
        # Readable keys: ``zc-block-data_01.ku.power-<token>``.
        return f"{self._prefix}-{self.variable.replace('/', '.')}"

    @property
    def variable(self) -> str:
        """The variable path."""
        return self.operand("variable")  # type: ignore[no-any-return]

    @property
    def ranges(self) -> RowRanges:
        """Rows ``[start, stop)`` kept of each partition."""
        return self.operand("ranges")  # type: ignore[no-any-return]

    @property
    def variables(self) -> tuple[str, ...]:
        return (self.variable,)

    @functools.cached_property
    def _spec(self) -> Any:
        return self.source.config.schema[self.variable]

    @functools.cached_property
    def _shape_tail(self) -> tuple[int, ...]:
        """Sizes of the dimensions after the partition axis (every one when immutable)."""
        dims = self.source.config.schema.all_dimensions()
        spec = self._spec
        names = spec.dimensions if spec.immutable else spec.dimensions[1:]
        return tuple(dims[d].size or 0 for d in names)

    @functools.cached_property
    def _step(self) -> int:
        """Rows of a block: whole zarr chunks (``0``: an unchunked axis, a block per partition)."""
        dims = self.source.config.schema.all_dimensions()
        chunk = dims[self._spec.dimensions[0]].chunks or 0
        want = self.operand("block_rows")
        if not want or not chunk:
            return chunk
        return chunk * max(1, want // chunk)  # blocks never split a chunk

    @functools.cached_property
    def _blocks(self) -> list[tuple[int, int, int]]:
        """``(partition index, start, stop)`` of every block along the axis."""
        chunk = self._step
        blocks = []
        selection = self._selection
        if selection is not None:
            # One block per chunk (per block of chunks) holding selected rows: its pieces.
            for i, pieces in enumerate(selection):
                for group in _per_chunk(pieces, chunk):
                    blocks.append((i, group[0][0], group[-1][1]))
            return blocks
        for i, (start, stop) in enumerate(self.ranges.tolist()):
            # Split each partition on the zarr chunk boundaries of the stored array
            # (every ``block_rows`` of them).
            edges = sorted(
                {start, stop, *range((start // chunk + 1) * chunk, stop, chunk)}
                if chunk
                else {start, stop}
            )
            blocks += [(i, a, b) for a, b in itertools.pairwise(edges)]
        return blocks

    @property
    def _selection(self) -> tuple[tuple[tuple[int, int], ...], ...] | None:
        """Row ranges kept of each partition (an index's selection), or ``None``."""
        return None

    @functools.cached_property
    def _pieces(self) -> list[tuple[tuple[int, int], ...] | None]:
        """The row ranges of each block when they are not one span (a row selection)."""
        selection = self._selection
        if selection is None:
            return [None] * len(self._blocks)
        return [tuple(g) for pieces in selection for g in _per_chunk(pieces, self._step)]

    @property
    def npartitions(self) -> int:
        return 1 if self._spec.immutable else len(self._blocks)

    @property
    def chunks(self) -> tuple[tuple[int, ...], ...]:
        """The chunks of the dask array (rows of each block, then the other dimensions)."""
        if self._spec.immutable:
            return tuple((s,) for s in self._shape_tail)
        sizes = tuple(
            b - a if pieces is None else sum(y - x for x, y in pieces)
            for (_, a, b), pieces in zip(self._blocks, self._pieces, strict=True)
        )
        return (sizes, *((s,) for s in self._shape_tail))

    def __dask_keys__(self) -> list[Any]:
        return [self._key(i) for i in range(self.npartitions)]

    def _key(self, i: int) -> tuple[Any, ...]:
        zeros = (0,) * len(self._shape_tail)
        return (self._name, *zeros) if self._spec.immutable else (self._name, i, *zeros)

    def describe(self) -> list[str]:
        return [f"Blocks of {self.variable}: {self.npartitions}"]


class ReadBlocks(_Blocks):
    """Blocks of one variable read from the store (nothing else is read).

    Parameters (operands)
    ---------------------
    source : ReadSource
    catalog : Catalog
        The selected partitions.
    variable : str
    ranges : numpy.ndarray
        Rows ``[start, stop)`` kept of each partition of ``catalog`` (``int64``, ``(n, 2)``).
    rows : tuple or None
        The row ranges kept of each partition (an index's selection, inside
        ``ranges``): one block per chunk holding one of them.
    block_rows : int or None
        Rows of a block, rounded down to whole zarr chunks (at least one);
        ``None``: one chunk.
    """

    _parameters = ["source", "catalog", "variable", "ranges", "rows", "block_rows"]
    _defaults = {"rows": None, "block_rows": None}

    @property
    def _selection(self) -> tuple[tuple[tuple[int, int], ...], ...] | None:
        return self.operand("rows")  # type: ignore[no-any-return]

    @property
    def source(self) -> ReadSource:
        return self.operand("source")  # type: ignore[no-any-return]

    @property
    def catalog(self) -> Catalog:
        return self.operand("catalog")  # type: ignore[no-any-return]

    @property
    def total(self) -> int:
        return len(self.catalog)

    def _layer(self) -> dict[Any, Any]:
        src = DataNode(None, self.source)
        name = self.variable
        if self._spec.immutable:
            key = self._key(0)
            path = self.catalog.immutable or IMMUTABLE_PATH  # reference-format collections
            return {key: Task(key, read_block_task, src, path, name, 0, 0)}
        paths, txns = self.catalog.paths, self.catalog.identities
        layer: dict[Any, Any] = {}
        for j, ((i, a, b), pieces) in enumerate(zip(self._blocks, self._pieces, strict=True)):
            key = self._key(j)
            if pieces is None or len(pieces) == 1:
                layer[key] = Task(key, read_block_task, src, paths[i], name, a, b, txns[i])
            else:
                layer[key] = Task(key, read_pieces_task, src, paths[i], name, pieces, txns[i])
        return layer


class PersistedBlocks(_Blocks):
    """Blocks of one variable sliced from persisted partitions (nothing is read).

    Parameters (operands)
    ---------------------
    frame : Persisted
    variable : str
    ranges : numpy.ndarray
        Rows ``[0, rows)`` of each persisted partition (``int64``, ``(n, 2)``).
    block_rows : int or None
        Rows of a block, as for :class:`ReadBlocks`.
    """

    _parameters = ["frame", "variable", "ranges", "block_rows"]
    _defaults = {"block_rows": None}

    def _layer(self) -> dict[Any, Any]:
        frame_name, name = self.frame._name, self.variable
        if self._spec.immutable:
            key = self._key(0)
            return {key: Task(key, values_task, TaskRef((frame_name, 0)), name)}
        layer: dict[Any, Any] = {}
        starts = self.ranges[:, 0].tolist()
        for j, (i, a, b) in enumerate(self._blocks):
            key = self._key(j)
            start = starts[i]
            layer[key] = Task(
                key, slice_rows_task, TaskRef((frame_name, i)), name, a - start, b - start
            )
        return layer
