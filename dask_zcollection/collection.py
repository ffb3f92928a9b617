"""The lazy, Dask-native view of a collection: :class:`LazyCollection`.

>>> ds = dzc.read_collection("file:///data/altimetry")          # doctest: +SKIP
>>> ds = ds.filter("year == 2024 and month >= 3")[["time", "ssh"]]  # doctest: +SKIP
>>> ds.npartitions, ds.compute()                                  # doctest: +SKIP

Every method returns a new collection wrapping a bigger expression; nothing is
read until ``compute``/``persist`` (or a dask array/dataframe built from it is
computed; building the arrays of ``to_xarray`` reads only what sizes their
blocks and the catalog does not tell, see :meth:`LazyCollection.to_dask_array`).
Filters and projections are folded into the read while the graph is planned, so
only the selected partitions and variables are touched.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import dask
import numpy
from dask.base import DaskMethodsMixin
from dask.delayed import Delayed
from dask.utils import parse_bytes

from ._display import lazy_repr_html, size_of, time_span_text
from ._sync import sync
from .catalog import Catalog
from .data import Dataset
from .data._repr import format_bytes
from .errors import FilterError, InvalidInputError, VariableNotFoundError
from .expr import (
    Filter,
    Finalize,
    MapPartitions,
    Persisted,
    PersistedBlocks,
    Project,
    ReadBlocks,
    ReadPartitions,
    ZExpr,
)
from .expr._dask import array_from_graph
from .expr._read import row_count_task, values_task
from .indexing._selection import clip
from .io import Part, ReadSource, TimeRange, parts_of, row_range, unwritten_immutable
from .partitioning import compile_filter, time_bound
from .partitioning._filter import FilterLike

__all__ = ["LazyCollection"]


class LazyCollection(DaskMethodsMixin):
    """A lazy selection of a partitioned collection, as a Dask collection.

    Built by :func:`dask_zcollection.read_collection`. ``compute()`` returns a
    :class:`~dask_zcollection.Dataset` (partitions concatenated along the axis
    in key order), or ``None`` when no partition is selected.
    """

    __slots__ = ("_expr", "_optimized", "_pruned", "_simplified")

    def __init__(self, expr: ZExpr) -> None:
        self._expr = expr
        # The expression never changes: simplify and optimise it once.
        self._simplified: ZExpr | None = None
        self._optimized: ZExpr | None = None
        self._pruned: ZExpr | None = None

    # -- dask collection protocol -------------------------------------------------------------
    @property
    def expr(self) -> ZExpr:
        """The expression dask sees: filters absorbed into the read, projections above it.

        Every dask entry point builds its graph from this (``dask.optimize``,
        ``dask.compute``, ``dask.persist``, ``Client.compute``/``persist``,
        ``dask.delayed``), and ``dask.optimize`` does not simplify it: the
        expression as built would read every partition of the collection.
        Projections stay above the read so that collections computed together
        still share one read of each partition (``dask.compute(lazy,
        lazy["ssh"])``); simplification then absorbs them.
        :attr:`unoptimized_expr` is the expression as built.
        """
        if self._pruned is None:
            self._pruned = _pruned(self._expr, self._simple())
        return self._pruned

    @property
    def unoptimized_expr(self) -> ZExpr:
        """The expression as built, before simplification."""
        return self._expr

    def __dask_graph__(self) -> Mapping[Any, Any]:
        return self._optimized_partitions().__dask_graph__()  # type: ignore[no-any-return]

    def __dask_keys__(self) -> list[Any]:
        return self._optimized_partitions().__dask_keys__()  # type: ignore[no-any-return]

    def __dask_tokenize__(self) -> Any:
        return self._expr._name

    def __dask_postcompute__(self) -> tuple[Callable[..., Any], tuple[Any, ...]]:
        from .expr._read import concat_task

        return concat_task, (self.source.config.axis,)

    def __dask_postpersist__(self) -> tuple[Callable[..., Any], tuple[Any, ...]]:
        expr = self._optimized_partitions()
        return LazyCollection._rebuild, (expr.source, expr.catalog, expr.total, expr.variables)

    @staticmethod
    def _rebuild(
        dsk: Mapping[Any, Any],
        source: ReadSource,
        catalog: Catalog,
        total: int,
        variables: tuple[str, ...],
    ) -> LazyCollection:
        keys = sorted(dsk, key=lambda k: k[1])
        return LazyCollection(Persisted(source, catalog, total, variables, dict(dsk), keys))

    __dask_scheduler__ = staticmethod(dask.threaded.get)

    def _optimized_partitions(self) -> ZExpr:
        """The optimised expression, one output key per partition (no fusion)."""
        if self._optimized is None:
            self._optimized = self._expr.optimize(fuse=False).lower_completely()  # type: ignore[assignment]
        assert self._optimized is not None
        return self._optimized

    def _simple(self) -> ZExpr:
        """The simplified expression (filters absorbed)."""
        if self._simplified is None:
            self._simplified = self._expr.simplify()  # type: ignore[assignment]
        assert self._simplified is not None
        return self._simplified

    def optimize(self) -> LazyCollection:
        """A collection over the simplified expression (filters absorbed)."""
        return LazyCollection(self._simple())

    # -- introspection -----------------------------------------------------------------------------
    @property
    def source(self) -> ReadSource:
        """The store and descriptor read from."""
        return self._expr.source

    @property
    def catalog(self) -> Catalog:
        """The selected partitions (after optimisation)."""
        return self._simple().catalog

    @property
    def npartitions(self) -> int:
        """Number of selected partitions."""
        return len(self.catalog)

    @property
    def partitions(self) -> list[str]:
        """Canonical paths (``year=2024/month=03``) of the selected partitions, in key order."""
        catalog = self.catalog
        encode = self.source.config.partitioning.encode
        return [encode(catalog.key_tuple(i)) for i in range(len(catalog))]

    @property
    def variables(self) -> tuple[str, ...]:
        """Variable paths the collection yields."""
        return self._expr.variables

    @property
    def nbytes(self) -> int:
        """Estimated size of the selected data (``-1`` when row counts are unknown)."""
        rows = self.catalog.total_rows
        if rows < 0:
            return -1
        per_row, fixed = size_of(self.source.config.schema, self.variables)
        return rows * per_row + fixed

    def explain(self) -> str:
        """The optimised plan in words, with the number of partitions read."""
        optimized = self._expr.optimize(fuse=False)
        expr = optimized.frame if isinstance(optimized, Finalize) else optimized
        lines = [f"{type(self).__name__}: {expr.npartitions} partition(s) selected of {expr.total}"]
        lines += ["  " + line for line in expr.describe()]
        return "\n".join(lines)

    def visualize(  # type: ignore[override]
        self, filename: str | None = "zcollection", format: str | None = None, **kwargs: Any
    ) -> Any:
        """Draw the optimised task graph: the tasks :meth:`compute` runs.

        Filters and projections are applied first, so only the selected
        partitions' read tasks appear (``zc-read-...``).

        Parameters
        ----------
        filename : str or None
            File to write (``.png`` unless ``format`` or its extension says
            otherwise); ``None`` writes nothing and returns the image.
        format : str, optional
            ``png``, ``svg``, ``pdf``, ``dot``, ``jpeg``.
        **kwargs
            Passed to :func:`dask.dot.to_graphviz`.

        Raises
        ------
        ImportError
            Without the ``graphviz`` package (``pip install
            'dask_zcollection[graphviz]'``) or Graphviz's ``dot`` program.
        """
        try:
            import graphviz
        except ImportError as err:
            raise ImportError(
                "visualize() needs the graphviz package: pip install "
                "'dask_zcollection[graphviz]' (and Graphviz's dot program)"
            ) from err
        from dask import dot

        graph = dict(Finalize(self._expr).optimize(fuse=False).__dask_graph__())
        drawing = dot.to_graphviz(graph, **kwargs)
        try:
            return dot.graphviz_to_file(drawing, filename, format)
        except graphviz.ExecutableNotFound as err:
            raise ImportError(
                "visualize() needs Graphviz's dot program on PATH "
                "(apt install graphviz, or conda install graphviz)"
            ) from err

    def plot_partitions(self, by: str = "rows", ax: Any = None) -> Any:
        """A timeline of the selected partitions, coloured by rows or bytes.

        One bar per partition from the first to the last value of its axis
        variable (the catalog's stats; nothing is read), so gaps in the data
        show as blank spans.

        Parameters
        ----------
        by : {"rows", "bytes"}
            What the colour shows (bytes: uncompressed size of the variables).
        ax : matplotlib.axes.Axes, optional
            Where to draw (a new figure by default).

        Returns
        -------
        matplotlib.axes.Axes
            The axes drawn on.

        Raises
        ------
        ImportError
            Without matplotlib (``pip install 'dask_zcollection[plot]'``).
        """
        from ._display import plot_partitions

        return plot_partitions(self, by, ax)

    def __repr__(self) -> str:
        cat = self.catalog
        config = self.source.config
        size = self.nbytes
        return (
            f"<dask_zcollection.LazyCollection {self.source.spec.url!r}>\n"
            f"  partitioning: {config.partitioning!r}\n"
            f"  partitions:   {len(cat)} selected of {self._simple().total}\n"
            f"  variables:    {', '.join(self.variables)}\n"
            f"  size:         {format_bytes(size) if size >= 0 else 'unknown'}\n"
            f"  time range:   {time_span_text(self)}"
        ) + "".join(f"\n  {line}" for line in self.source.describe(self.variables))

    def _repr_html_(self) -> str:
        return lazy_repr_html(self)

    # -- operations --------------------------------------------------------------------------------
    def filter(
        self, expr: FilterLike = None, /, *, index: Any = None, **kwargs: Any
    ) -> LazyCollection:
        """Select partitions by key and rows by axis range, or rows by an index.

        Parameters
        ----------
        expr : str, mapping or None
            A filter on partition keys: ``"year == 2024 and month in (3, 4)"``.
        index : str or Indexer, optional
            Select rows through an index: the name of one stored in the
            collection (``Collection.create_index``) or an
            :class:`~dask_zcollection.indexing.Indexer`; the keyword
            predicates then name the index's columns (``value``, a list, or an
            inclusive ``slice``), only the partitions it names are read, and of
            them only the chunks holding a selected row. After ``persist()``
            it selects rows of the persisted partitions (when they hold their
            stored rows); after ``map_partitions`` it is refused.
        **kwargs
            ``key=value`` (or a list, or ``slice(lo, hi)`` inclusive) on key
            components; ``<axis variable>=slice(start, stop)`` (inclusive, datetime
            strings accepted) for a time range.

        Raises
        ------
        FilterError
            An unknown key, axis or index column.
        StaleIndexError
            The index was built from other versions of the selected partitions.

        Examples
        --------
        >>> ds.filter("year == 2024", month=3)                      # doctest: +SKIP
        >>> ds.filter(time=slice("2024-03-01", "2024-03-04T12:00"))  # doctest: +SKIP
        >>> ds.filter(index=idx, pass_number=[12, 13])               # doctest: +SKIP
        """
        if index is not None:
            base = self.filter(expr) if expr is not None else self
            return base._filter_index(index, kwargs)
        config = self.source.config
        keys = config.partitioning.keys
        axis = config.axis_variable
        time_range: TimeRange | None = None
        key_filters: dict[str, Any] = {}
        for name, value in kwargs.items():
            if name in keys:
                key_filters[name] = value
            elif name == axis:
                time_range = self._time_range(value)
            else:
                raise FilterError(
                    f"cannot filter on {name!r}: use a partition key {list(keys)} "
                    f"or the axis variable {axis!r}"
                )
        predicate = compile_filter(expr, keys)
        if key_filters:
            extra = compile_filter(key_filters, keys)
            predicate = extra if predicate is None else predicate & extra  # type: ignore[operator]
        if predicate is None and time_range is None:
            return self
        filtered = Filter(self._expr, predicate, time_range)
        if time_range is not None and axis not in self.variables:
            # Trimming persisted partitions needs their axis variable.
            for node in filtered.simplify().walk():
                if (
                    isinstance(node, Filter)
                    and node.operand("time_range") is not None
                    and isinstance(node.frame, Persisted)
                    and axis not in node.frame.variables
                ):
                    raise FilterError(
                        f"cannot filter on {axis!r}: it is not among the persisted variables "
                        f"{list(node.frame.variables)}; filter on it before persist()"
                    )
        return LazyCollection(filtered)

    def _filter_index(self, index: Any, predicates: dict[str, Any]) -> LazyCollection:
        """Rows selected through ``index`` (checked against the collection's catalog)."""
        stored = isinstance(index, str)
        if stored:
            from .indexing._stored import load_index

            partitioning = self.source.config.partitioning
            index = sync(load_index(self.source, index, self.catalog, partitioning.encode))
        if not hasattr(index, "selection"):
            raise FilterError(
                f"index= takes an Indexer (dask_zcollection.indexing), not {type(index).__name__}"
            )
        leaf: ReadPartitions | Persisted | None = None
        for node in self._expr.walk():
            if isinstance(node, MapPartitions):
                # Row numbers of the output are the stored ones only if the function
                # keeps every row in place, which cannot be known.
                raise FilterError(
                    "an index selects stored rows, and map_partitions may change them: filter "
                    "with index= before map_partitions"
                )
            if isinstance(node, ReadPartitions | Persisted):
                leaf = node
        if leaf is None:
            raise FilterError("an index selects rows of a stored collection only")
        if isinstance(leaf, Persisted):
            self._check_stored_rows(leaf)
        partitioning = self.source.config.partitioning
        selected = self.catalog
        txns = views = None
        if not stored and index.needs_txns():
            # The version each selected partition holds (a stored index checked it already).
            from .indexing._indexer import _txns, view_identities

            names = [partitioning.encode(selected.key_tuple(i)) for i in range(len(selected))]
            txns = dict(zip(names, sync(_txns(self.source.spec, selected.paths)), strict=True))
            views = sync(view_identities(self.source, names))
        selection = index.selection(
            leaf.catalog,
            partitioning.encode,
            partitioning.keys,
            complete=not stored and len(leaf.catalog) == leaf.total,
            selected=selected,
            txns=txns,
            views=views,
            **predicates,
        )
        return LazyCollection(Filter(self._expr, None, None, selection))

    def _check_stored_rows(self, expr: Persisted) -> None:
        """The persisted partitions hold their stored rows (an index's row numbers apply).

        Raises
        ------
        FilterError
            Naming the partitions trimmed (a time range or a row selection before
            ``persist``) or changed (``map_partitions``).
        """
        counts = [b - a for a, b in self._persisted_ranges(expr)]
        catalog = expr.catalog
        encode = self.source.config.partitioning.encode
        bad = [
            encode(catalog.key_tuple(i))
            for i, n in enumerate(counts)
            if int(catalog.rows[i]) < 0 or int(catalog.rows[i]) != n
        ]
        if bad:
            raise FilterError(
                f"an index selects stored rows; the persisted partition(s) {bad[:5]} do not "
                "hold their stored rows (a time range, a row selection or map_partitions before "
                "persist()): filter with index= before persist()"
            )

    def _reads_whole_partitions(self) -> bool:
        """Whether the plan reads whole stored partitions (no time range, row selection, map)."""
        expr = self._optimized_partitions()
        return (
            isinstance(expr, ReadPartitions)
            and expr.operand("time_range") is None
            and expr.operand("rows") is None
        )

    def _time_range(self, value: Any) -> TimeRange:
        config = self.source.config
        spec = config.schema[config.axis_variable]
        if not isinstance(value, slice):
            value = slice(value, value)
        if value.step is not None:
            raise FilterError("a time range takes no step")

        def bound(v: Any, upper: bool) -> Any:
            return time_bound(v, spec.dtype, spec.attrs, config.axis_variable, upper=upper)

        return (bound(value.start, False), bound(value.stop, True))

    def __getitem__(self, key: str | Sequence[str]) -> LazyCollection:
        names = [key] if isinstance(key, str) else key
        if not isinstance(names, Sequence) or not all(isinstance(n, str) for n in names):
            raise InvalidInputError(f"select variables by path or a list of paths, got {key!r}")
        schema = self.source.config.schema
        wanted = []
        for name in names:
            path = name.strip("/")
            if path not in schema:
                raise VariableNotFoundError(
                    f"variable {name!r} is not in the collection (known: {list(schema.variables)})"
                )
            if path not in self.variables:
                raise VariableNotFoundError(f"variable {name!r} was projected away")
            wanted.append(path)
        ordered = tuple(v for v in self.variables if v in wanted)
        return LazyCollection(Project(self._expr, ordered))

    def map_partitions(
        self, func: Callable[..., Dataset], *args: Any, **kwargs: Any
    ) -> LazyCollection:
        """Apply ``func(partition: Dataset, *args, **kwargs) -> Dataset`` to every partition.

        A key filter written after ``map_partitions`` is pushed below it.
        """
        return LazyCollection(
            MapPartitions(self._expr, func, tuple(args), dict(kwargs) or None, None)
        )

    def map_overlap(
        self,
        func: Callable[..., Dataset],
        depth: Any,
        *args: Any,
        boundary: Any = "none",
        **kwargs: Any,
    ) -> LazyCollection:
        """Apply ``func`` to every partition extended by ``depth`` rows of its neighbours.

        Each selected partition is read with a halo: the rows just before and
        after it in key order, from any partition of the collection (selected
        or not; only those rows are read), ``func(dataset, *args, **kwargs)``
        runs on the extended partition (it must keep its rows) and the halo is
        trimmed off its result. The result equals running ``func``'s windowed
        computation over the whole collection.

        Parameters
        ----------
        func : callable
            ``func(partition: Dataset, *args, **kwargs) -> Dataset`` (same rows).
        depth : int or time span
            Rows on each side, or a time span along the axis
            (``numpy.timedelta64``, ``datetime.timedelta``, ``"6h"``): every
            row whose axis value is within it of the partition's first / last.
        boundary : "none" or scalar
            ``"none"``: the collection's first and last partitions get a shorter
            halo; a constant: they are padded with it to ``depth`` rows
            (datetime variables with NaT; a depth in rows only).

        Planning reads the row counts the catalog lacks and, for a time span,
        the axis of the partitions the halos reach. After ``persist()`` the
        persisted partitions are the array: each halo is sliced from the
        persisted neighbours and nothing is read.

        Raises
        ------
        InvalidInputError
            A negative depth, a bad boundary, or a plan that is neither a read
            of stored partitions nor persisted partitions (directly after
            ``map_partitions``: persist first; after an index's row selection).
        """
        from ._overlap import plan_overlap, plan_persisted_overlap

        optimized = self._optimized_partitions()
        if isinstance(optimized, Persisted):
            # The persisted partitions are the array: halos are sliced from them.
            return LazyCollection(
                plan_persisted_overlap(
                    optimized,
                    [b - a for a, b in self._persisted_ranges(optimized)],
                    self._persisted_axis(optimized),
                    func,
                    tuple(args),
                    dict(kwargs) or None,
                    depth,
                    boundary,
                )
            )
        if any(isinstance(n, MapPartitions) for n in self._expr.walk()):
            raise InvalidInputError(
                "map_overlap reads stored partitions and their neighbours: call it before "
                "map_partitions, or persist() the mapped collection first (its halos are "
                "then taken from the persisted partitions)"
            )
        expr, ranges = self._block_ranges()
        if not isinstance(expr, ReadPartitions) or expr.operand("rows") is not None:
            raise InvalidInputError(
                "map_overlap reads stored partitions and their neighbours: call it before "
                "map_partitions, persist() or a filter(index=)"
            )
        leaf = next(n for n in self._expr.walk() if isinstance(n, ReadPartitions))
        overlap = plan_overlap(
            self.source,
            leaf.catalog,
            expr.catalog,
            [(int(a), int(b)) for a, b in ranges],
            expr.variables,
            func,
            tuple(args),
            dict(kwargs) or None,
            depth,
            boundary,
        )
        return LazyCollection(overlap)

    # -- interop -----------------------------------------------------------------------------------
    def to_delayed(self) -> list[Delayed]:
        """One :class:`dask.delayed.Delayed` per partition (a ``Dataset`` each).

        They share the graph of the optimised read expression (as dask's own
        ``DataFrame.to_delayed`` does); nothing is read until they are computed.
        """
        from dask.highlevelgraph import HighLevelGraph

        expr = self._optimized_partitions()
        layer = f"delayed-{expr._name}"
        hlg = HighLevelGraph.from_collections(layer, dict(expr.__dask_graph__()), dependencies=())
        return [Delayed(k, hlg, layer=layer) for k in expr.__dask_keys__()]

    def _block_ranges(self) -> tuple[ReadPartitions | Persisted, tuple[tuple[int, int], ...]]:
        """The optimised expression and the rows ``[start, stop)`` kept of each partition.

        What sizes the blocks of :meth:`to_dask_array`. Reads on the client only
        what the catalog does not tell: the row count (the axis array's metadata)
        of a partition the catalog has none for (``rows == -1``: listed
        catalogs), and the axis variable of a partition at an end of a time
        range (of every partition of a time range when the catalog has no
        stats). Persisted partitions are measured where they are held.
        """
        expr = self._optimized_partitions()
        if isinstance(expr, Persisted):
            return expr, self._persisted_ranges(expr)
        if not isinstance(expr, ReadPartitions):
            raise InvalidInputError(
                "to_xarray/to_dask_array need the row count of every partition: call them "
                "before map_partitions, and before a time filter on a persisted collection"
            )
        time_range = expr.operand("time_range")
        parts = parts_of(expr.catalog, time_range)
        if all(n >= 0 and inside for _, n, inside, _ in parts):
            return expr, tuple((0, n) for _, n, _, _ in parts)  # the catalog tells everything
        io = self.source.io
        axis = self.source.config.axis_variable

        async def rows(part: Part) -> tuple[int, int]:
            path, n, inside, txn = part
            if n < 0:
                n = await io.row_count(path, axis)
            if inside:
                return 0, n
            values = (await io.read(path, [axis], stop=n, txn=txn))[axis]
            return row_range(values, time_range)

        async def gather() -> list[tuple[int, int]]:
            return list(await asyncio.gather(*(rows(p) for p in parts)))

        return expr, tuple(sync(gather()))

    def _persisted_axis(self, expr: Persisted) -> Callable[[int], numpy.ndarray]:
        """The axis values of persisted partition ``k`` (what a time-span halo needs)."""
        axis = self.source.config.axis_variable

        def read(k: int) -> numpy.ndarray:
            if axis not in expr.variables:
                raise InvalidInputError(
                    f"a time span depth needs the axis variable {axis!r}, which is not among "
                    f"the persisted variables {list(expr.variables)}"
                )
            value = expr.operand("layer")[expr.operand("keys")[k]]
            if isinstance(value, Dataset):
                return values_task(value, axis)
            delayed = LazyCollection(expr).to_delayed()[k]
            return dask.compute(dask.delayed(values_task)(delayed, axis))[0]  # type: ignore[no-any-return]

        return read

    @staticmethod
    def _persisted_ranges(expr: Persisted) -> tuple[tuple[int, int], ...]:
        """Rows of each persisted partition: counted on the results, never read again.

        (The catalog's counts are the stored ones, not those of a partition a
        time range trimmed before ``persist``.)
        """
        layer, dim = expr.operand("layer"), expr.source.config.axis
        values = [layer[k] for k in expr.operand("keys")]
        if all(isinstance(v, Dataset) for v in values):
            counts = [row_count_task(v, dim) for v in values]
        else:  # held elsewhere (futures of a distributed client): count them there
            delayed = LazyCollection(expr).to_delayed()
            counts = list(dask.compute(*(dask.delayed(row_count_task)(d, dim) for d in delayed)))
        return tuple((0, n) for n in counts)

    def to_dask_array(self, name: str, *, chunks: int | str | None = None) -> Any:
        """One variable as a :class:`dask.array.Array`.

        A block per zarr chunk inside each partition: a block reads only its
        rows of its variable, so a reduction streams and computing one variable
        reads nothing else. Building the array reads the axis variable of the
        partitions at the ends of a time range to size their blocks (and the
        axis array's metadata of partitions whose catalog has no row count);
        nothing else. Over a persisted collection, blocks slice the persisted
        partitions and nothing is read.

        Parameters
        ----------
        name : str
            The variable.
        chunks : int or str, optional
            Size of a block along the axis: rows (an ``int``) or bytes (a
            string such as ``"32MiB"``), rounded down to whole zarr chunks
            (one at least); a block never spans two partitions. Fewer, larger
            blocks are fewer tasks: on a ``distributed`` cluster each costs the
            scheduler and the worker a few milliseconds (see
            ``docs/distributed.md``). Default: ``zcollection.array-chunks`` of
            dask's config, else one zarr chunk.

        Raises
        ------
        InvalidInputError
            When ``chunks`` is not a positive row count or a byte size.
        """
        return self._dask_arrays([name], chunks)[name]

    def _block_rows(self, names: Sequence[str], chunks: int | str | None) -> int | None:
        """The rows of a block ``chunks`` asks for (a byte size: the widest row of ``names``).

        ``None`` takes ``zcollection.array-chunks`` from dask's config (unset: one zarr chunk).
        """
        if chunks is None:
            chunks = dask.config.get("zcollection.array-chunks", None)
        if chunks is None:
            return None
        if isinstance(chunks, str):
            try:
                nbytes = parse_bytes(chunks)
            except ValueError as err:
                raise InvalidInputError(f"chunks={chunks!r} is not a byte size") from err
            if nbytes <= 0:
                raise InvalidInputError(f"chunks={chunks!r} is not a positive byte size")
            schema = self.source.config.schema
            dims = schema.all_dimensions()
            row = max(
                (
                    schema[n].dtype.itemsize
                    * math.prod(dims[d].size or 0 for d in schema[n].dimensions[1:])
                    for n in names
                    if not schema[n].immutable
                ),
                default=0,
            )
            # Rounded down to whole zarr chunks by the blocks: one chunk at least.
            return max(1, nbytes // row) if row else None
        if isinstance(chunks, bool) or not isinstance(chunks, int) or chunks <= 0:
            raise InvalidInputError(
                f"chunks={chunks!r}: expected a positive number of rows or a byte size "
                "such as '32MiB'"
            )
        return chunks

    def _dask_arrays(self, names: Sequence[str], chunks: int | str | None = None) -> dict[str, Any]:
        """One dask array per variable, each over one block expression.

        Over a read, :class:`~dask_zcollection.expr.ReadBlocks` (a task per
        block reading its rows from the store); over a persisted collection,
        :class:`~dask_zcollection.expr.PersistedBlocks` (slicing the persisted
        partitions).
        """
        import dask.array as da

        schema = self.source.config.schema
        for n in names:
            if n not in schema:
                raise VariableNotFoundError(f"variable {n!r} is not in the collection")
        block_rows = self._block_rows(names, chunks)
        expr, rows = self._block_ranges()
        ranges = numpy.asarray(rows, dtype="int64").reshape(-1, 2)
        selected = None
        if isinstance(expr, ReadPartitions) and expr.operand("rows") is not None:
            # An index's selection, inside the committed (and time-trimmed) rows.
            selected = tuple(
                clip(pieces or (), a, b)
                for pieces, (a, b) in zip(expr.row_ranges(), rows, strict=True)
            )
        out: dict[str, Any] = {}
        for name in names:
            spec = schema[name]
            blocks: ZExpr
            unwritten = (
                unwritten_immutable(self.source.config, expr.catalog, name)
                if isinstance(expr, ReadPartitions)
                else None
            )
            if unwritten is not None:
                out[name] = da.from_array(unwritten, chunks=unwritten.shape or ())
                continue
            if isinstance(expr, ReadPartitions):
                blocks = ReadBlocks(self.source, expr.catalog, name, ranges, selected, block_rows)
            elif spec.immutable and not len(expr.catalog):
                raise InvalidInputError(f"no partition selected: cannot build {name!r}")
            else:
                blocks = PersistedBlocks(expr, name, ranges, block_rows)
            blocks = blocks.optimize(fuse=False)  # type: ignore[assignment]
            assert isinstance(blocks, (ReadBlocks, PersistedBlocks))
            if not blocks.npartitions:
                out[name] = da.empty(tuple(sum(c) for c in blocks.chunks), dtype=spec.dtype)
                continue
            graph = blocks.__dask_graph__()
            out[name] = array_from_graph(graph, blocks._name, blocks.chunks, spec.dtype)
        return out

    def to_xarray(self, *, index: bool = True, chunks: int | str | None = None) -> Any:
        """A dask-backed ``xarray.Dataset`` (``DataTree`` with nested groups).

        Each variable is the array of :meth:`to_dask_array`. Values are read
        when computed; the fill value of a variable is its
        ``encoding["_FillValue"]`` (values are not masked, see ``docs/xarray.md``).

        Parameters
        ----------
        index : bool, default True
            Give the axis variable an index along the partitioned dimension
            (``time`` along ``time``; a non-dimension coordinate indexed with
            ``set_xindex`` when it is named otherwise, as ``time`` along
            ``num_lines``), so ``.sel`` on it needs nothing computed and reads
            only the blocks in range. Building it reads the axis variable
            (only that variable: nothing when it is projected away). Nested
            groups of a ``DataTree`` inherit it. With ``False``, building reads
            only the axis of the partitions at the ends of a time range (and
            the axis array's metadata of partitions whose catalog has no row
            count).
        chunks : int or str, optional
            Size of a block along the axis, the same for every variable: rows,
            or bytes of the widest variable's block (``"32MiB"``); see
            :meth:`to_dask_array`. Default: ``zcollection.array-chunks`` of
            dask's config, else one zarr chunk.

        Raises
        ------
        InvalidInputError
            When dask's array expressions are on (``array.query-planning``):
            xarray takes their arrays for objects (use :meth:`to_dask_array`);
            when ``chunks`` is not a positive row count or a byte size.
        """
        import dask.array as da

        if da.array_expr_enabled():
            raise InvalidInputError(
                "to_xarray needs dask's classic arrays: xarray does not wrap dask array "
                "expressions (array.query-planning is on); use to_dask_array(name) or compute()"
            )
        arrays = self._dask_arrays(list(self.variables), chunks)
        from .data import Variable

        config = self.source.config
        schema = config.schema
        axis_variable = config.axis_variable if index and config.axis_variable in arrays else None
        if axis_variable is not None:
            # The index holds the axis values: read them (that variable only, blocks in
            # parallel). Read from the store, they are read here, on the client that
            # planned from that store: on a cluster a round of tasks shipping the values
            # back costs more (0.65 s against 0.05 s for the 1 GB benchmark's axis).
            # Persisted blocks live on the workers: the default scheduler fetches them.
            reads = isinstance(self._block_ranges()[0], ReadPartitions)
            axis = arrays[axis_variable]
            values = axis.compute(scheduler="threads") if reads else axis.compute()
            arrays[axis_variable] = numpy.asarray(values)
        variables = {}
        for path, arr in arrays.items():
            spec = schema[path]
            variables[path] = Variable(
                spec.name, arr, spec.dimensions, dict(spec.attrs), spec.fill_value
            )
        from ._prepare import columns_to_dataset

        ds = columns_to_dataset(
            schema,
            {p: v.data for p, v in variables.items() if not schema[p].immutable},
            {p: v.data for p, v in variables.items() if schema[p].immutable},
        )
        from .data._xarray import to_xarray

        return to_xarray(ds, axis=axis_variable)

    def to_dask_dataframe(self, variables: Sequence[str] | None = None) -> Any:
        """Variables along the axis as a :class:`dask.dataframe.DataFrame`.

        A 1-D variable is a column; a variable with more dimensions is one
        column per index of the others (the wide format): ``ssh[0]``,
        ``ssh[1]``, ... (``name[i,j]`` for 3-D). By default the 1-D variables
        only. The dtypes are the stored ones (no masking). Divisions come from
        the catalog's min/max of the axis variable when it is in ``variables``
        and partitions do not overlap, so ``.loc[a:b]`` prunes.

        Raises
        ------
        InvalidInputError
            When a variable does not span the axis (an immutable one).
        VariableNotFoundError
            When a variable is not in the collection or was projected away.
        """
        import dask.dataframe as dd
        import pandas

        config = self.source.config
        schema = config.schema
        if variables is None:
            names = [v for v in self.variables if schema[v].dimensions == (config.axis,)]
        else:
            # As ``lazy[...]`` (which checks them): a path or a list, a leading '/' allowed,
            # each column once (a str was read as a list of one-letter names: "variable 'q'").
            self[variables]
            listed = [variables] if isinstance(variables, str) else variables
            names = list(dict.fromkeys(v.strip("/") for v in listed))
        for n in names:
            if schema[n].immutable or schema[n].dimensions[0] != config.axis:
                raise InvalidInputError(f"variable {n!r} is not a variable along {config.axis!r}")
        expr = self._optimized_partitions()
        if not isinstance(expr, (ReadPartitions, Persisted)):
            raise InvalidInputError(
                "to_dask_dataframe must be called before map_partitions, and before a time "
                "filter on a persisted collection"
            )
        catalog = expr.catalog
        axis = config.axis_variable
        time_range = expr.operand("time_range") if isinstance(expr, ReadPartitions) else None
        from .io import parts_of

        parts = parts_of(catalog, time_range)
        dims = schema.all_dimensions()
        meta = pandas.DataFrame(
            _flat_columns(
                {
                    n: numpy.empty(
                        (0, *(dims[d].size or 0 for d in schema[n].dimensions[1:])),
                        dtype=schema[n].dtype,
                    )
                    for n in names
                },
                names,
            )
        )
        index = axis if axis in names else None
        if index is not None:
            meta = meta.set_index(index)
        divisions: Any = None
        if index is not None and catalog.has_stats and len(catalog) and (catalog.rows > 0).all():
            lo, hi = catalog.bounds(time_range)
            if (lo[1:] > hi[:-1]).all():
                divisions = (
                    *[pandas.Timestamp(x) if lo.dtype.kind == "M" else x.item() for x in lo],
                    pandas.Timestamp(hi[-1]) if hi.dtype.kind == "M" else hi[-1].item(),
                )
        if not parts:
            return dd.from_pandas(meta, npartitions=1)
        if isinstance(expr, Persisted):
            # The persisted partitions are the data (a time range applied before
            # persist() trimmed them): frames of those, never a second read of the store.
            frames = [
                dask.delayed(_frame_of, pure=True)(part, tuple(names), index)
                for part in self.to_delayed()
            ]
            return dd.from_delayed(frames, meta=meta, verify_meta=False)
        rows_of = None
        if isinstance(expr, ReadPartitions) and expr.operand("rows") is not None:
            rows_of = dict(zip(catalog.paths, expr.row_ranges(), strict=True))
        return dd.from_map(
            _DataFrameReader(self.source, tuple(names), time_range, index, rows_of),
            parts,
            meta=meta,
            divisions=divisions,
            label="zc-read-frame",
            enforce_metadata=False,
        )


def _pruned(built: ZExpr, simple: ZExpr) -> ZExpr:
    """``simple`` with each read narrower than the read of ``built`` put back under a projection.

    The partitions stay pruned; the projection is absorbed again when the
    expression is optimised, by then together with every other consumer of
    the read.
    """
    leaf = next((n for n in built.walk() if isinstance(n, ReadPartitions)), None)
    if leaf is None:
        return simple
    out = simple
    for node in list(simple.find_operations(ReadPartitions)):
        if node.variables != leaf.variables:
            wide = node.substitute_parameters({"variables": leaf.variables})
            out = out.substitute(node, Project(wide, node.variables))  # type: ignore[assignment]
    return out  # type: ignore[no-any-return]


def _flat_columns(values: Mapping[str, Any], names: Sequence[str]) -> dict[str, Any]:
    """1-D columns: a variable with more dimensions gives ``name[i]`` (``name[i,j]``...)."""
    out: dict[str, Any] = {}
    for n in names:
        v = numpy.asarray(values[n])
        if v.ndim <= 1:
            out[n] = v
            continue
        flat = v.reshape(len(v), math.prod(v.shape[1:]))
        for j, idx in enumerate(numpy.ndindex(v.shape[1:])):
            out[f"{n}[{','.join(map(str, idx))}]"] = flat[:, j]
    return out


def _column_variable(column: str) -> str:
    """The variable a column of :func:`_flat_columns` comes from."""
    return column.partition("[")[0] if column.endswith("]") else column


def _frame_of(ds: Dataset, names: tuple[str, ...], index: str | None) -> Any:
    """One persisted partition as a pandas DataFrame."""
    import pandas

    values = {n: ds[n].values for n in names}  # type: ignore[union-attr]
    frame = pandas.DataFrame(_flat_columns(values, names))
    return frame.set_index(index) if index else frame


class _DataFrameReader:
    """Reads one partition as a pandas DataFrame (``columns=`` projection supported)."""

    def __init__(
        self,
        source: ReadSource,
        names: tuple[str, ...],
        time_range: TimeRange | None,
        index: str | None,
        rows_of: dict[str, Any] | None = None,
    ) -> None:
        self.source, self.names, self.time_range, self.index = source, names, time_range, index
        #: The rows selected of each partition by path (an index's selection), or ``None``.
        self.rows_of = rows_of

    def __call__(self, part: Part, columns: Sequence[str] | None = None) -> Any:
        import pandas

        from .io import read_partition

        wanted = None if columns is None else {_column_variable(c) for c in columns}
        names = (
            self.names
            if wanted is None
            else tuple(n for n in self.names if n in wanted or n == self.index)
        )
        rows = None if self.rows_of is None else self.rows_of.get(part[0])
        values = sync(read_partition(self.source, part, names, self.time_range, rows))
        frame = pandas.DataFrame(_flat_columns(values, names))
        if columns is not None:  # a projection of some columns of a 2-D variable
            frame = frame[[c for c in frame.columns if c in columns or c == self.index]]
        return frame.set_index(self.index) if self.index else frame


def collection_from(
    spec: Any,
    config: Any,
    catalog: Catalog,
    variables: Sequence[str] | None = None,
    filters: FilterLike = None,
    *,
    total: int | None = None,
) -> LazyCollection:
    """A :class:`LazyCollection` over an already read catalog.

    ``total`` is the number of partitions of the whole collection when
    ``catalog`` holds only some of them (default: ``len(catalog)``).
    """
    source = ReadSource(spec, config)
    names = tuple(p for p, _ in config.schema.walk())
    if variables is not None:
        wanted = [v.strip("/") for v in ([variables] if isinstance(variables, str) else variables)]
        for v in wanted:
            if v not in config.schema:
                raise VariableNotFoundError(f"variable {v!r} is not in the collection")
        names = tuple(v for v in names if v in wanted)
    count = len(catalog) if total is None else total
    lazy = LazyCollection(ReadPartitions(source, catalog, count, names))
    return lazy.filter(filters) if filters is not None else lazy
