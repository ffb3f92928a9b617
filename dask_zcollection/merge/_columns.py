"""Validation and row-combination helpers shared by the merge strategies.

Everything here is pure and vectorised: rows are never visited one by one in
Python. A *column mapping* maps a variable path to an array whose first
dimension is the partition axis.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy
import numpy.typing as npt

from ..errors import MergeError

__all__ = [
    "AxisRange",
    "Columns",
    "as_columns",
    "check_compatible",
    "combine",
    "distance_within",
    "last_of_duplicates",
    "sort_rows",
]

#: A partition's data: variable path -> array, first dimension the partition axis.
Columns = Mapping[str, npt.NDArray[Any]]

#: Integer index arrays used to select rows.
_Index = npt.NDArray[numpy.intp]

#: dtype kinds accepted for the axis variable (bool, integers, floats, dates, strings).
_ORDERABLE_KINDS = frozenset("biufmMSU")


@dataclass(frozen=True, slots=True)
class AxisRange:
    """What the planner knows about the axis of some rows without reading them.

    Parameters
    ----------
    min
        Smallest axis value, a numpy scalar of the axis dtype (``None`` when
        ``count`` is 0).
    max
        Largest axis value, a numpy scalar of the axis dtype (``None`` when
        ``count`` is 0).
    count
        Number of rows.
    """

    min: Any
    """Smallest axis value (a numpy scalar of the axis dtype)."""
    max: Any
    """Largest axis value (a numpy scalar of the axis dtype)."""
    count: int
    """Number of rows."""

    @classmethod
    def from_array(cls, values: npt.ArrayLike) -> AxisRange:
        """Compute the range of a 1-D array of axis values.

        Parameters
        ----------
        values
            The axis values.

        Returns
        -------
        AxisRange
            ``min``/``max`` are ``None`` when ``values`` is empty.

        Examples
        --------
        >>> AxisRange.from_array(numpy.array([3, 1, 2]))
        AxisRange(min=np.int64(1), max=np.int64(3), count=3)
        """
        array = numpy.asarray(values)
        if array.size == 0:
            return cls(min=None, max=None, count=0)
        return cls(min=array.min(), max=array.max(), count=int(array.shape[0]))


def has_rows(stats: AxisRange | None) -> bool:
    """Whether ``stats`` describes at least one row."""
    return stats is not None and stats.count > 0


def as_columns(data: Columns, *, axis: str, what: str) -> dict[str, npt.NDArray[Any]]:
    """Check one column mapping on its own and return it as a dict of arrays.

    Raises
    ------
    MergeError
        If the axis variable is missing or not 1-D with an orderable dtype, a
        variable is a scalar, or the variables disagree on the axis length.
    """
    if not isinstance(data, Mapping):
        raise MergeError(
            f"the {what} data must be a mapping of variable name to array, "
            f"got {type(data).__name__}"
        )
    if axis not in data:
        raise MergeError(f"the axis variable {axis!r} is missing from the {what} data")
    # asanyarray: a masked array keeps its mask (the writer stores the fill value there).
    columns = {name: numpy.asanyarray(array) for name, array in data.items()}
    axis_values = columns[axis]
    if axis_values.ndim != 1:
        raise MergeError(
            f"the axis variable {axis!r} of the {what} data must be 1-D, "
            f"got shape {axis_values.shape}"
        )
    if axis_values.dtype.kind not in _ORDERABLE_KINDS:
        raise MergeError(
            f"the axis variable {axis!r} of the {what} data has dtype "
            f"{axis_values.dtype}, which cannot be ordered"
        )
    length = axis_values.shape[0]
    for name, array in columns.items():
        if array.ndim == 0:
            raise MergeError(f"variable {name!r} of the {what} data is a scalar, not an array")
        if array.shape[0] != length:
            raise MergeError(
                f"variable {name!r} of the {what} data has {array.shape[0]} rows "
                f"along the partition axis, but the axis variable {axis!r} has {length}"
            )
    return columns


def check_compatible(
    existing: Mapping[str, npt.NDArray[Any]], inserted: Mapping[str, npt.NDArray[Any]]
) -> None:
    """Check that two validated column mappings hold the same variables.

    Raises
    ------
    MergeError
        If the variable sets differ, or a variable's dtype or trailing shape
        differs between the two mappings.
    """
    if existing.keys() != inserted.keys():
        missing = sorted(existing.keys() - inserted.keys())
        extra = sorted(inserted.keys() - existing.keys())
        parts = []
        if missing:
            parts.append(f"stored but not inserted: {', '.join(map(repr, missing))}")
        if extra:
            parts.append(f"inserted but not stored: {', '.join(map(repr, extra))}")
        raise MergeError("the inserted and stored variables differ; " + "; ".join(parts))
    for name, new in inserted.items():
        old = existing[name]
        if old.dtype != new.dtype:
            raise MergeError(
                f"variable {name!r} has dtype {new.dtype} in the inserted data "
                f"but {old.dtype} in the stored data"
            )
        if old.shape[1:] != new.shape[1:]:
            raise MergeError(
                f"variable {name!r} has trailing shape {new.shape[1:]} in the inserted "
                f"data but {old.shape[1:]} in the stored data"
            )


def _is_sorted(values: npt.NDArray[Any]) -> bool:
    return values.shape[0] < 2 or bool(numpy.all(values[:-1] <= values[1:]))


def _take(array: npt.NDArray[Any], index: _Index | None) -> npt.NDArray[Any]:
    return array if index is None else array[index]


def sort_rows(columns: Mapping[str, npt.NDArray[Any]], *, axis: str) -> dict[str, npt.NDArray[Any]]:
    """Stably sort every variable of ``columns`` along ``axis``.

    The input arrays are returned as they are (no copy) when already sorted.
    """
    keys = columns[axis]
    if _is_sorted(keys):
        return dict(columns)
    order = numpy.argsort(keys, kind="stable")
    return {name: array[order] for name, array in columns.items()}


def last_of_duplicates(values: npt.NDArray[Any]) -> tuple[_Index, npt.NDArray[Any]]:
    """Rows to keep so that each distinct value appears once, the last one winning.

    Returns
    -------
    index
        Row numbers into ``values`` in ascending order of value; for a value
        that appears several times, the row that comes last in ``values``.
    unique
        ``values[index]``: the sorted distinct values.
    """
    order = numpy.argsort(values, kind="stable")
    ordered = values[order]
    keep = numpy.ones(ordered.shape[0], dtype=bool)
    # With a stable sort, the last of a run of equal values is the last in input order.
    keep[:-1] = ordered[:-1] != ordered[1:]
    return order[keep], ordered[keep]


def combine(
    existing: Mapping[str, npt.NDArray[Any]] | None,
    keep: _Index | None,
    inserted: Mapping[str, npt.NDArray[Any]],
    select: _Index | None,
    *,
    axis: str,
) -> dict[str, npt.NDArray[Any]]:
    """Concatenate selected stored rows with selected inserted rows, stably sorted.

    Parameters
    ----------
    existing
        Validated stored columns, or ``None``.
    keep
        Row numbers of ``existing`` to keep (ascending), or ``None`` for all.
    inserted
        Validated inserted columns (same variables as ``existing``).
    select
        Row numbers of ``inserted`` to use, or ``None`` for all.
    axis
        Name of the axis variable.

    Returns
    -------
    dict
        The combined columns, in the variable order of ``inserted``. On equal
        axis values, stored rows come first, then rows keep their relative order.
        Arrays may be shared with the inputs when nothing has to move.
    """
    if existing is None or (keep is not None and keep.shape[0] == 0):
        part = (
            dict(inserted)
            if select is None
            else {name: array[select] for name, array in inserted.items()}
        )
        return sort_rows(part, axis=axis)

    old_keys = _take(existing[axis], keep)
    new_keys = _take(inserted[axis], select)
    if new_keys.shape[0] == 0:
        return sort_rows({name: _take(existing[name], keep) for name in inserted}, axis=axis)

    keys = numpy.concatenate([old_keys, new_keys])
    if _is_sorted(keys):
        # Common case (append, or disjoint sorted blocks): one concatenation per variable.
        result = {axis: keys}
        for name in inserted:
            if name != axis:
                result[name] = numpy.concatenate(
                    [_take(existing[name], keep), _take(inserted[name], select)]
                )
        return {name: result[name] for name in inserted}

    order = numpy.argsort(keys, kind="stable")
    size = keys.shape[0]
    rank = numpy.empty(size, dtype=numpy.intp)
    rank[order] = numpy.arange(size, dtype=numpy.intp)
    split = old_keys.shape[0]
    old_position, new_position = rank[:split], rank[split:]
    result = {}
    for name, new in inserted.items():
        if name == axis:
            result[name] = keys[order]
            continue
        out = numpy.empty((size, *new.shape[1:]), dtype=new.dtype)
        out[old_position] = _take(existing[name], keep)
        out[new_position] = _take(new, select)
        result[name] = out
    return result


def _as_uint64(values: npt.NDArray[Any]) -> npt.NDArray[numpy.uint64]:
    if values.dtype.kind in "mM":
        values = values.view(numpy.int64)
    # Wrapping casts: differences are then exact modulo 2**64.
    return values.astype(numpy.uint64, casting="unsafe")


def distance_within(
    left: npt.NDArray[Any], right: npt.NDArray[Any], tolerance: Any
) -> npt.NDArray[numpy.bool_]:
    """Element-wise ``|left - right| <= tolerance`` without overflow.

    ``tolerance`` must already be expressed for the dtype of the arrays: a
    non-negative ``numpy.uint64`` for integer and date/time axes (in the axis
    unit), a float for float axes.
    """
    if left.dtype.kind == "f":
        with numpy.errstate(invalid="ignore", over="ignore"):
            diff = numpy.abs(left.astype(numpy.float64) - right.astype(numpy.float64))
        close: npt.NDArray[numpy.bool_] = diff <= tolerance
        return close
    greater = left >= right
    a, b = _as_uint64(left), _as_uint64(right)
    within: npt.NDArray[numpy.bool_] = numpy.where(greater, a - b, b - a) <= tolerance
    return within
