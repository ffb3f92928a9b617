"""``Collection.update``: a user function rewriting variables, run as a merge strategy.

Expressing an update as a strategy (``needs_existing`` always, never an
append, the inserted rows empty) reuses the whole write path: per-partition
lock, write aside, abort checks and the one commit.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy

from ._prepare import columns_to_dataset
from .data import Dataset, Variable
from .errors import ConflictError, InvalidInputError, MergeError, SchemaError
from .expr._overlap import pad_rows
from .merge import AxisRange
from .schema import Schema

__all__ = [
    "OverlapUpdateStrategy",
    "RowsUpdateStrategy",
    "UpdateStrategy",
    "extend_rows",
    "row_index",
    "scatter_rows",
]


def check_update_call(func: Any, index: Any, depth: Any, predicates: Mapping[str, Any]) -> None:
    """The checks of an ``update(func, index=, depth=, **predicates)`` call (collection, view).

    Raises
    ------
    InvalidInputError
        When ``func`` is not callable, both ``index`` and ``depth`` are given,
        or keyword predicates come without ``index``.
    """
    if not callable(func):
        raise InvalidInputError(f"update needs a function, got {type(func).__name__}")
    if depth is not None and (index is not None or predicates):
        raise InvalidInputError("update takes index= or depth=, not both")
    if depth is None and predicates and index is None:
        raise InvalidInputError(
            f"update: keyword predicates {sorted(predicates)} need index= (they name "
            "an index's columns)"
        )


@dataclasses.dataclass(frozen=True)
class UpdateStrategy:
    """Apply ``func`` to each stored partition and merge back the variables it returns."""

    func: Callable[..., Any]
    variables: tuple[str, ...] | None
    schema: Schema
    #: Rebuilds a stored index's entry of each partition written (``update(index=name)``:
    #: :func:`dask_zcollection.indexing._stored.entry_maker`), or ``None``.
    index_entries: Any = dataclasses.field(default=None, kw_only=True)
    #: Canonical path -> the partition versions its input came from (an index lookup, a
    #: halo's neighbours): checked by the write task under its lock
    #: (:func:`dask_zcollection.io._writer.check_versions`) and by the commit (:attr:`reads`).
    depends_on: Mapping[str, tuple[Any, ...]] = dataclasses.field(
        default_factory=dict, kw_only=True
    )

    @property
    def name(self) -> str:
        return f"update({getattr(self.func, '__qualname__', self.func)!s})"

    @property
    def reads(self) -> tuple[Any, ...]:
        """Every version of :attr:`depends_on`, once (``Transaction.reads``)."""
        return tuple({v[0]: v for vs in self.depends_on.values() for v in vs}.values())

    def entries(self, columns: Mapping[str, numpy.ndarray], canonical: str, identity: Any) -> Any:
        """The index objects to write beside a partition version written (``{}``: none)."""
        if self.index_entries is None:
            return {}
        return self.index_entries(columns_to_dataset(self.schema, columns), canonical, identity)

    def needs_existing(self, existing: AxisRange | None, inserted: AxisRange) -> bool:
        return True

    @staticmethod
    def _stored(existing: Mapping[str, numpy.ndarray] | None) -> dict[str, numpy.ndarray]:
        """A copy of the partition's columns to rewrite."""
        if existing is None:
            raise MergeError("update: the partition to rewrite is missing")
        return dict(existing)

    def appends(self, existing: AxisRange, inserted: AxisRange) -> bool:
        return False

    def __call__(
        self,
        existing: Mapping[str, numpy.ndarray] | None,
        inserted: Mapping[str, Any],
        *,
        axis: str,
    ) -> dict[str, numpy.ndarray]:
        columns = self._stored(existing)
        rows = len(columns[axis])
        view = {k: v for k, v in columns.items() if self.variables is None or k in self.variables}
        result = self.func(columns_to_dataset(self.schema, view))
        if not isinstance(result, Dataset | Mapping):
            raise SchemaError(
                f"update: the function must return a Dataset or a mapping of variable path "
                f"to array, got {type(result).__name__}"
            )
        pairs = result.walk() if isinstance(result, Dataset) else dict(result).items()
        for path, value in pairs:
            if not isinstance(path, str):
                raise SchemaError(f"update returned a variable named {path!r}, not a path")
            path = path.strip("/")
            # A Variable's data; a bare array's ``.data`` is its raw buffer, not its values.
            data = numpy.asanyarray(value.data if isinstance(value, Variable) else value)
            if path not in columns:
                raise SchemaError(
                    f"update returned variable {path!r}, which is not a partitioned "
                    "variable of the schema"
                )
            if data.shape[:1] != (rows,) or data.shape[1:] != columns[path].shape[1:]:
                raise SchemaError(
                    f"update returned variable {path!r} with shape {data.shape}, "
                    f"expected {columns[path].shape}"
                )
            # Dtypes, masks and the partition's key range are checked by the writer,
            # as for every merge result: the rules of insert input (safe casts only).
            columns[path] = data
        return columns


@dataclasses.dataclass(frozen=True)
class _PartitionUpdate(UpdateStrategy):
    """An update whose inputs were planned per partition (named by canonical path)."""

    partitioning: Any = None

    def _located(
        self, existing: Mapping[str, numpy.ndarray] | None, axis: str
    ) -> tuple[dict[str, numpy.ndarray], int, str]:
        """The columns to rewrite, their rows and the canonical path of their partition."""
        columns = self._stored(existing)
        n = len(columns[axis])
        return columns, n, _partition_of(self.partitioning, self.schema, columns) if n else ""


@dataclasses.dataclass(frozen=True)
class RowsUpdateStrategy(_PartitionUpdate):
    """``func`` sees only some rows of each partition (an index's selection); the rest are kept.

    ``rows`` maps each canonical partition path to its committed row count
    when selected and its half-open row ranges. The function returns the
    variables to replace for those rows only; they are written back in place.
    """

    rows: Mapping[str, tuple[int, tuple[tuple[int, int], ...]]] = dataclasses.field(
        default_factory=dict
    )

    @property
    def name(self) -> str:
        return f"update({getattr(self.func, '__qualname__', self.func)!s}, rows)"

    def __call__(
        self,
        existing: Mapping[str, numpy.ndarray] | None,
        inserted: Mapping[str, Any],
        *,
        axis: str,
    ) -> dict[str, numpy.ndarray]:
        columns, n, path = self._located(existing, axis)
        expected, ranges = self.rows.get(path, (n, ()))
        if expected >= 0 and expected != n:
            from .errors import StaleIndexError

            raise StaleIndexError(
                f"update: partition {path!r} has {n} rows, the index selected rows of a "
                f"version with {expected}: it was rewritten since the lookup"
            )
        index = row_index(ranges)
        subset = {k: v[index] for k, v in columns.items()}
        inner = UpdateStrategy(self.func, self.variables, self.schema)
        updated = inner(subset, inserted, axis=axis)
        return scatter_rows(
            columns, index, {k: v for k, v in updated.items() if v is not subset[k]}
        )


def row_index(ranges: Sequence[tuple[int, int]]) -> numpy.ndarray:
    """The row numbers of half-open ``ranges``."""
    if not ranges:
        return numpy.empty(0, dtype="intp")
    return numpy.concatenate([numpy.arange(a, b) for a, b in ranges])


def scatter_rows(
    columns: Mapping[str, numpy.ndarray], index: numpy.ndarray, updated: Mapping[str, Any]
) -> dict[str, numpy.ndarray]:
    """``columns`` with rows ``index`` of each variable of ``updated`` replaced by its values.

    Raises
    ------
    SchemaError
        A value that does not cast safely to its variable's dtype.
    """
    out = dict(columns)
    for name, data in updated.items():
        target = columns[name]
        data = numpy.asarray(data)
        if not numpy.can_cast(data.dtype, target.dtype, casting="safe"):
            raise SchemaError(
                f"update returned variable {name!r} as {data.dtype}, which does not cast "
                f"to its stored {target.dtype}"
            )
        merged = target.copy()
        merged[index] = data
        out[name] = merged
    return out


def extend_rows(
    columns: Mapping[str, numpy.ndarray],
    before: Mapping[str, numpy.ndarray],
    after: Mapping[str, numpy.ndarray],
    pad_before: int,
    pad_after: int,
    constant: Any,
) -> tuple[dict[str, numpy.ndarray], int]:
    """Each variable of ``before`` extended by its halo rows (and the constant padding).

    Returns the extended columns and the row of the first own row in them.
    """

    def pad(name: str, rows: int) -> numpy.ndarray:
        column = columns[name]
        padded: numpy.ndarray = pad_rows(name, column.dtype, (rows, *column.shape[1:]), constant)
        return padded

    extended = {
        k: numpy.concatenate(
            [pad(k, pad_before), before[k], columns[k], after[k], pad(k, pad_after)]
        )
        for k in before
    }
    head = pad_before + (len(next(iter(before.values()))) if before else 0)
    return extended, head


@dataclasses.dataclass(frozen=True)
class OverlapUpdateStrategy(_PartitionUpdate):
    """``func`` sees each partition extended by its neighbours' rows (read when planned).

    ``halos`` maps each canonical partition path to its committed row count,
    the columns of the rows before and after it, and the rows of ``constant``
    padded beyond the collection's ends. ``func`` returns the variables to
    replace over the extended rows; the halo is trimmed before writing.
    """

    halos: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    constant: Any = None

    @property
    def name(self) -> str:
        return f"update({getattr(self.func, '__qualname__', self.func)!s}, overlap)"

    def __call__(
        self,
        existing: Mapping[str, numpy.ndarray] | None,
        inserted: Mapping[str, Any],
        *,
        axis: str,
    ) -> dict[str, numpy.ndarray]:
        columns, n, path = self._located(existing, axis)
        if path not in self.halos:
            return UpdateStrategy(self.func, self.variables, self.schema)(
                existing, inserted, axis=axis
            )
        expected, before, after, pad_b, pad_a = self.halos[path]
        if expected >= 0 and expected != n:
            raise ConflictError(
                f"update: partition {path!r} has {n} rows, its halo was planned for {expected}: "
                "it was rewritten since; retry"
            )

        extended, head = extend_rows(columns, before, after, pad_b, pad_a, self.constant)
        inner = UpdateStrategy(self.func, None, self.schema)
        updated = inner(extended, inserted, axis=axis)
        for name, data in updated.items():
            if data is not extended[name]:
                columns[name] = data[head : head + n]
        return columns


def _partition_of(partitioning: Any, schema: Schema, columns: Mapping[str, numpy.ndarray]) -> str:
    """The canonical path of the partition holding ``columns`` (computed from its rows)."""
    values = {v: columns[v] for v in partitioning.variables}
    attrs = {v: schema[v].attrs for v in partitioning.variables}
    keys, _ = partitioning.split(values, attrs)
    return str(partitioning.encode(tuple(int(k) for k in keys[0])))
