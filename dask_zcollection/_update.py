"""``Collection.update``: a user function rewriting variables, run as a merge strategy.

Expressing an update as a strategy (``needs_existing`` always, never an
append, the inserted rows empty) reuses the whole write path: per-partition
lock, write aside, abort checks and the one commit.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from typing import Any

import numpy

from ._prepare import columns_to_dataset
from .data import Dataset, Variable
from .errors import MergeError, SchemaError
from .merge import AxisRange
from .schema import Schema

__all__ = ["OverlapUpdateStrategy", "RowsUpdateStrategy", "UpdateStrategy"]


@dataclasses.dataclass(frozen=True)
class UpdateStrategy:
    """Apply ``func`` to each stored partition and merge back the variables it returns."""

    func: Callable[..., Any]
    variables: tuple[str, ...] | None
    schema: Schema

    @property
    def name(self) -> str:
        return f"update({getattr(self.func, '__qualname__', self.func)!s})"

    def needs_existing(self, existing: AxisRange | None, inserted: AxisRange) -> bool:
        return True

    def appends(self, existing: AxisRange, inserted: AxisRange) -> bool:
        return False

    def __call__(
        self,
        existing: Mapping[str, numpy.ndarray] | None,
        inserted: Mapping[str, Any],
        *,
        axis: str,
    ) -> dict[str, numpy.ndarray]:
        if existing is None:
            raise MergeError("update: the partition to rewrite is missing")
        columns = dict(existing)
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
class RowsUpdateStrategy(UpdateStrategy):
    """``func`` sees only some rows of each partition (an index's selection); the rest are kept.

    ``rows`` maps each canonical partition path to its committed row count
    when selected and its half-open row ranges. The function returns the
    variables to replace for those rows only; they are written back in place.
    """

    partitioning: Any = None
    rows: Mapping[str, tuple[int, tuple[tuple[int, int], ...]]] = dataclasses.field(
        default_factory=dict
    )

    @property
    def name(self) -> str:
        return f"update({getattr(self.func, '__qualname__', self.func)!s}, rows)"

    def _partition(self, columns: Mapping[str, numpy.ndarray]) -> str:
        return _partition_of(self.partitioning, self.schema, columns)

    def __call__(
        self,
        existing: Mapping[str, numpy.ndarray] | None,
        inserted: Mapping[str, Any],
        *,
        axis: str,
    ) -> dict[str, numpy.ndarray]:
        if existing is None:
            raise MergeError("update: the partition to rewrite is missing")
        columns = dict(existing)
        n = len(columns[axis])
        path = self._partition(columns) if n else ""
        expected, ranges = self.rows.get(path, (n, ()))
        if expected >= 0 and expected != n:
            from .errors import StaleIndexError

            raise StaleIndexError(
                f"update: partition {path!r} has {n} rows, the index selected rows of a "
                f"version with {expected}: it was rewritten since the lookup"
            )
        index = (
            numpy.concatenate([numpy.arange(a, b) for a, b in ranges])
            if ranges
            else numpy.empty(0, dtype="intp")
        )
        subset = {k: v[index] for k, v in columns.items()}
        inner = UpdateStrategy(self.func, self.variables, self.schema)
        updated = inner(subset, inserted, axis=axis)
        for name, data in updated.items():
            if data is subset[name]:
                continue
            target = columns[name]
            if not numpy.can_cast(data.dtype, target.dtype, casting="safe"):
                raise SchemaError(
                    f"update returned variable {name!r} as {data.dtype}, which does not cast "
                    f"to its stored {target.dtype}"
                )
            merged = target.copy()
            merged[index] = data
            columns[name] = merged
        return columns


@dataclasses.dataclass(frozen=True)
class OverlapUpdateStrategy(UpdateStrategy):
    """``func`` sees each partition extended by its neighbours' rows (read when planned).

    ``halos`` maps each canonical partition path to its committed row count,
    the columns of the rows before and after it, and the rows of ``constant``
    padded beyond the collection's ends. ``func`` returns the variables to
    replace over the extended rows; the halo is trimmed before writing.
    """

    partitioning: Any = None
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
        if existing is None:
            raise MergeError("update: the partition to rewrite is missing")
        columns = dict(existing)
        n = len(columns[axis])
        path = _partition_of(self.partitioning, self.schema, columns) if n else ""
        if path not in self.halos:
            return UpdateStrategy(self.func, self.variables, self.schema)(
                existing, inserted, axis=axis
            )
        expected, before, after, pad_b, pad_a = self.halos[path]
        if expected >= 0 and expected != n:
            raise MergeError(
                f"update: partition {path!r} has {n} rows, its halo was planned for {expected}: "
                "it was rewritten since (retry)"
            )

        def pad(name: str, rows: int) -> numpy.ndarray:
            dtype = columns[name].dtype
            fill = numpy.array("NaT", dtype=dtype)[()] if dtype.kind in "mM" else self.constant
            return numpy.full((rows, *columns[name].shape[1:]), fill, dtype=dtype)

        names = list(before)
        extended = {
            k: numpy.concatenate([pad(k, pad_b), before[k], columns[k], after[k], pad(k, pad_a)])
            for k in names
        }
        head = pad_b + len(before[axis])
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
