"""The merge strategies: how inserted rows combine with the rows already stored.

A strategy is a pure function on two column mappings plus two cheap questions
the planner asks with only axis statistics in hand:

- :meth:`MergeStrategy.needs_existing`: must the stored rows be read at all?
- :meth:`MergeStrategy.appends`: is the result the stored rows followed by the
  new ones, so they can be appended in place?

Results are always stably sorted along the axis variable; every variable is
permuted identically.
"""

from __future__ import annotations

import datetime
import math
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

import numpy
import numpy.typing as npt

from ..errors import InvalidInputError, MergeError
from ._columns import (
    AxisRange,
    Columns,
    as_columns,
    check_compatible,
    combine,
    distance_within,
    has_rows,
    last_of_duplicates,
    sort_rows,
)

__all__ = [
    "CallableStrategy",
    "Concat",
    "MergeFunction",
    "MergeLike",
    "MergeStrategy",
    "Replace",
    "TimeSeries",
    "Upsert",
    "UpsertWithin",
    "concat",
    "replace",
    "resolve",
    "time_series",
    "upsert",
    "upsert_within",
]

_Arrays = dict[str, npt.NDArray[Any]]


@runtime_checkable
class MergeStrategy(Protocol):
    """How rows inserted into a partition combine with the rows stored there.

    Implementations must be picklable (they are shipped to Dask workers) and
    have a stable ``repr`` (it takes part in Dask tokens).
    """

    @property
    def name(self) -> str:
        """Short name of the strategy, e.g. ``"time_series"``."""
        ...

    def needs_existing(self, existing: AxisRange | None, inserted: AxisRange) -> bool:
        """Whether the stored rows must be read to compute the merge.

        Parameters
        ----------
        existing
            Axis statistics of the stored rows, ``None`` if nothing is stored.
        inserted
            Axis statistics of the inserted rows.

        Returns
        -------
        bool
            ``False`` guarantees ``strategy(existing_rows, inserted_rows, axis=...)
            == strategy(None, inserted_rows, axis=...)``.
        """
        ...

    def appends(self, existing: AxisRange, inserted: AxisRange) -> bool:
        """Whether the merge result is the stored rows followed by the new rows.

        Parameters
        ----------
        existing
            Axis statistics of the stored rows.
        inserted
            Axis statistics of the inserted rows.

        Returns
        -------
        bool
            ``True`` guarantees that, for stored rows sorted along the axis,
            the result is the stored rows unchanged followed by
            ``strategy(None, inserted_rows, axis=...)``, so the planner may
            append in place without reading the stored data.
        """
        ...

    def __call__(self, existing: Columns | None, inserted: Columns, *, axis: str) -> _Arrays:
        """Merge the inserted rows into the stored rows.

        Parameters
        ----------
        existing
            The stored rows, ``None`` if nothing is stored.
        inserted
            The inserted rows; same variables, dtypes and trailing shapes.
        axis
            Name of the axis variable (1-D) along which rows are ordered.

        Returns
        -------
        dict
            The merged rows, stably sorted along ``axis``.
        """
        ...


#: A user merge function: ``fn(existing, inserted, *, axis) -> columns``.
MergeFunction = Callable[..., Mapping[str, npt.ArrayLike]]

#: What ``insert(..., merge=...)`` accepts.
MergeLike = None | str | MergeStrategy | MergeFunction


def _prepare(
    existing: Columns | None, inserted: Columns, axis: str
) -> tuple[_Arrays | None, _Arrays]:
    """Validate both inputs; an empty stored mapping counts as nothing stored."""
    new = as_columns(inserted, axis=axis, what="inserted")
    if existing is None:
        return None, new
    old = as_columns(existing, axis=axis, what="stored")
    check_compatible(old, new)
    if old[axis].shape[0] == 0:
        return None, new
    return old, new


def _after(existing: AxisRange, inserted: AxisRange) -> bool:
    """True when every inserted value is strictly above every stored value."""
    if not has_rows(existing) or inserted.count == 0:
        return True
    return bool(inserted.min > existing.max)


@dataclass(frozen=True, slots=True, repr=False)
class Replace:
    """The inserted rows replace the stored rows entirely.

    Examples
    --------
    >>> import numpy
    >>> replace({"x": numpy.array([1, 2])}, {"x": numpy.array([5, 3])}, axis="x")
    {'x': array([3, 5])}
    """

    @property
    def name(self) -> str:
        """``"replace"``."""
        return "replace"

    def needs_existing(self, existing: AxisRange | None, inserted: AxisRange) -> bool:
        """Never: the stored rows are discarded."""
        return False

    def appends(self, existing: AxisRange, inserted: AxisRange) -> bool:
        """Only when nothing is stored."""
        return not has_rows(existing)

    def __call__(self, existing: Columns | None, inserted: Columns, *, axis: str) -> _Arrays:
        """Return the inserted rows, sorted along ``axis``."""
        _, new = _prepare(existing, inserted, axis)
        return sort_rows(new, axis=axis)

    def __repr__(self) -> str:
        return "replace"


@dataclass(frozen=True, slots=True, repr=False)
class Concat:
    """Stored rows and inserted rows are all kept; duplicates included.

    On equal axis values, stored rows come before inserted rows.

    Examples
    --------
    >>> import numpy
    >>> concat({"x": numpy.array([1, 2])}, {"x": numpy.array([2, 0])}, axis="x")
    {'x': array([0, 1, 2, 2])}
    """

    @property
    def name(self) -> str:
        """``"concat"``."""
        return "concat"

    def needs_existing(self, existing: AxisRange | None, inserted: AxisRange) -> bool:
        """Whenever something is stored."""
        return has_rows(existing)

    def appends(self, existing: AxisRange, inserted: AxisRange) -> bool:
        """When every inserted value is above the stored maximum."""
        return _after(existing, inserted)

    def __call__(self, existing: Columns | None, inserted: Columns, *, axis: str) -> _Arrays:
        """Concatenate the stored and inserted rows, stably sorted along ``axis``."""
        old, new = _prepare(existing, inserted, axis)
        return combine(old, None, new, None, axis=axis)

    def __repr__(self) -> str:
        return "concat"


@dataclass(frozen=True, slots=True, repr=False)
class TimeSeries:
    """Inserted rows replace the stored rows within their axis range.

    Stored rows whose axis value lies in the closed interval
    ``[inserted.min, inserted.max]`` are dropped; the remaining stored rows and
    all inserted rows are kept.

    Examples
    --------
    >>> import numpy
    >>> stored = {"x": numpy.array([1, 2, 3, 4])}
    >>> time_series(stored, {"x": numpy.array([3, 2])}, axis="x")
    {'x': array([1, 2, 3, 4])}
    """

    @property
    def name(self) -> str:
        """``"time_series"``."""
        return "time_series"

    def needs_existing(self, existing: AxisRange | None, inserted: AxisRange) -> bool:
        """Unless nothing is stored or the inserted range covers the stored range."""
        if not has_rows(existing):
            return False
        assert existing is not None
        if inserted.count == 0:
            return True
        return not (inserted.min <= existing.min and inserted.max >= existing.max)

    def appends(self, existing: AxisRange, inserted: AxisRange) -> bool:
        """When every inserted value is above the stored maximum."""
        return _after(existing, inserted)

    def __call__(self, existing: Columns | None, inserted: Columns, *, axis: str) -> _Arrays:
        """Drop stored rows in the inserted range, add the inserted rows, sort."""
        old, new = _prepare(existing, inserted, axis)
        keys = new[axis]
        if old is None or keys.shape[0] == 0:
            return combine(old, None, new, None, axis=axis)
        stored = old[axis]
        outside = (stored < keys.min()) | (stored > keys.max())
        keep = None if bool(outside.all()) else numpy.flatnonzero(outside)
        return combine(old, keep, new, None, axis=axis)

    def __repr__(self) -> str:
        return "time_series"


@dataclass(frozen=True, slots=True, repr=False)
class Upsert:
    """Inserted rows replace stored rows with the same axis value.

    Among inserted rows sharing an axis value, the last one wins.

    Examples
    --------
    >>> import numpy
    >>> stored = {"x": numpy.array([1, 2]), "v": numpy.array([10, 20])}
    >>> inserted = {"x": numpy.array([2, 3, 2]), "v": numpy.array([1, 2, 3])}
    >>> upsert(stored, inserted, axis="x")
    {'x': array([1, 2, 3]), 'v': array([10,  3,  2])}
    """

    @property
    def name(self) -> str:
        """``"upsert"``."""
        return "upsert"

    def needs_existing(self, existing: AxisRange | None, inserted: AxisRange) -> bool:
        """Whenever something is stored."""
        return has_rows(existing)

    def appends(self, existing: AxisRange, inserted: AxisRange) -> bool:
        """When every inserted value is above the stored maximum."""
        return _after(existing, inserted)

    def __call__(self, existing: Columns | None, inserted: Columns, *, axis: str) -> _Arrays:
        """Replace stored rows by inserted rows with equal axis values, sort."""
        old, new = _prepare(existing, inserted, axis)
        select, unique = last_of_duplicates(new[axis])
        if old is None or unique.shape[0] == 0:
            return combine(old, None, new, select, axis=axis)
        stored = old[axis]
        index = numpy.searchsorted(unique, stored)
        found = unique[numpy.minimum(index, unique.shape[0] - 1)] == stored
        keep = None if not bool(found.any()) else numpy.flatnonzero(~found)
        return combine(old, keep, new, select, axis=axis)

    def __repr__(self) -> str:
        return "upsert"


_TIMEDELTA_TEXT = re.compile(r"^\s*(\d+)\s*(W|D|h|m|s|ms|us|ns)\s*$")


def _normalise_tolerance(tolerance: Any) -> float | int | numpy.timedelta64:
    """Check a tolerance and return it as a number or a ``numpy.timedelta64``."""
    if isinstance(tolerance, str):
        match = _TIMEDELTA_TEXT.match(tolerance)
        if match is None:
            raise InvalidInputError(
                f"tolerance {tolerance!r} is not understood; use e.g. '1s', '500ms', "
                "a numpy.timedelta64, a datetime.timedelta or a number"
            )
        unit: Any = match.group(2)
        tolerance = numpy.timedelta64(int(match.group(1)), unit)
    if isinstance(tolerance, datetime.timedelta):
        tolerance = numpy.timedelta64(tolerance, "us")
    if isinstance(tolerance, numpy.timedelta64):
        if numpy.datetime_data(tolerance.dtype)[0] in ("generic", "Y", "M"):
            raise InvalidInputError(
                f"tolerance {tolerance!r} must have a fixed-length unit (W, D, h, m, s, ms, "
                "us, ns, ...)"
            )
        if numpy.isnat(tolerance) or int(tolerance.astype(numpy.int64)) < 0:
            raise InvalidInputError(f"tolerance {tolerance!r} must be a non-negative duration")
        return tolerance
    if isinstance(tolerance, bool | numpy.bool_) or not isinstance(
        tolerance, int | float | numpy.integer | numpy.floating
    ):
        raise InvalidInputError(
            f"tolerance must be a number or a duration, got {type(tolerance).__name__}"
        )
    value: int | float = (
        int(tolerance) if isinstance(tolerance, int | numpy.integer) else float(tolerance)
    )
    if math.isnan(value) or value < 0:
        raise InvalidInputError(f"tolerance {tolerance!r} must be a non-negative number")
    return value


@dataclass(frozen=True, slots=True, repr=False)
class UpsertWithin:
    """Like :class:`Upsert`, matching stored rows within a tolerance.

    A stored row is dropped when its axis value is within ``tolerance``
    (``|stored - inserted| <= tolerance``) of any inserted axis value. Among
    inserted rows with equal axis values, the last one wins; inserted rows
    that are merely close to each other are all kept.

    Use :func:`upsert_within` to build one.
    """

    tolerance: float | int | numpy.timedelta64
    """The largest axis distance at which a stored row counts as a match."""

    def __post_init__(self) -> None:
        object.__setattr__(self, "tolerance", _normalise_tolerance(self.tolerance))

    @property
    def name(self) -> str:
        """``"upsert_within"``."""
        return "upsert_within"

    def needs_existing(self, existing: AxisRange | None, inserted: AxisRange) -> bool:
        """Whenever something is stored."""
        return has_rows(existing)

    def appends(self, existing: AxisRange, inserted: AxisRange) -> bool:
        """When every inserted value is above the stored maximum plus the tolerance."""
        if not has_rows(existing) or inserted.count == 0:
            return True
        stored = numpy.asarray([existing.max])
        new = numpy.asarray([inserted.min], dtype=stored.dtype)
        if not bool(new[0] > stored[0]):
            return False
        tolerance = self._for_axis(stored.dtype, "axis")
        return not bool(distance_within(new, stored, tolerance)[0])

    def _for_axis(self, dtype: numpy.dtype[Any], axis: str) -> Any:
        """The tolerance expressed for an axis of ``dtype``."""
        tolerance = self.tolerance
        kind = dtype.kind
        if kind in "mM":
            if not isinstance(tolerance, numpy.timedelta64):
                raise MergeError(
                    f"the axis variable {axis!r} has dtype {dtype}: the tolerance must be "
                    f"a duration, got {tolerance!r}"
                )
            unit, _ = numpy.datetime_data(dtype)
            # Truncation toward zero is a floor here: |dt| <= 1.5s <=> |dt| <= 1s for seconds.
            ticks = int(tolerance.astype(f"m8[{unit}]").astype(numpy.int64))
            return numpy.uint64(ticks)
        if isinstance(tolerance, numpy.timedelta64):
            raise MergeError(
                f"the axis variable {axis!r} has dtype {dtype}: the tolerance must be "
                f"a number, got {tolerance!r}"
            )
        if kind in "iu":
            if isinstance(tolerance, float) and math.isinf(tolerance):
                return numpy.uint64(2**64 - 1)
            return numpy.uint64(min(math.floor(tolerance), 2**64 - 1))
        if kind == "f":
            return float(tolerance)
        raise MergeError(
            f"the axis variable {axis!r} has dtype {dtype}, on which no distance is defined"
        )

    def __call__(self, existing: Columns | None, inserted: Columns, *, axis: str) -> _Arrays:
        """Replace stored rows within the tolerance of an inserted value, sort."""
        old, new = _prepare(existing, inserted, axis)
        keys = new[axis]
        tolerance = self._for_axis(keys.dtype, axis)
        select, unique = last_of_duplicates(keys)
        if old is None or unique.shape[0] == 0:
            return combine(old, None, new, select, axis=axis)
        stored = old[axis]
        last = unique.shape[0] - 1
        # The nearest inserted values are the neighbours of the insertion point.
        index = numpy.searchsorted(unique, stored)
        above = numpy.minimum(index, last)
        below = numpy.maximum(index - 1, 0)
        found = (index <= last) & distance_within(stored, unique[above], tolerance)
        found |= (index > 0) & distance_within(stored, unique[below], tolerance)
        keep = None if not bool(found.any()) else numpy.flatnonzero(~found)
        return combine(old, keep, new, select, axis=axis)

    def __repr__(self) -> str:
        return f"upsert_within(tolerance={self.tolerance!r})"


def upsert_within(
    tolerance: float | int | numpy.timedelta64 | datetime.timedelta | str,
) -> UpsertWithin:
    """Upsert matching stored rows within ``tolerance`` of an inserted axis value.

    Parameters
    ----------
    tolerance
        Largest axis distance at which a stored row is replaced. A number for
        integer and float axes; for date/time axes a ``numpy.timedelta64``, a
        ``datetime.timedelta`` or a string such as ``"1s"`` / ``"500ms"``.
        It is floored to the axis resolution (``1.5`` matches integer
        neighbours at distance 1).

    Returns
    -------
    UpsertWithin
        The strategy.

    Raises
    ------
    InvalidInputError
        If the tolerance is negative, NaN or of an unsupported type.

    Examples
    --------
    >>> import numpy
    >>> strategy = upsert_within(numpy.timedelta64(1, "s"))
    >>> strategy
    upsert_within(tolerance=np.timedelta64(1,'s'))
    >>> stored = {"t": numpy.array([0, 10], dtype="M8[s]")}
    >>> strategy(stored, {"t": numpy.array([1], dtype="M8[s]")}, axis="t")["t"].astype(int)
    array([ 1, 10])
    """
    return UpsertWithin(tolerance)  # type: ignore[arg-type]


def _check_result(result: Any, inserted: Mapping[str, npt.NDArray[Any]], axis: str) -> _Arrays:
    if not isinstance(result, Mapping):
        raise MergeError(
            f"the merge function must return a mapping of variable name to array, "
            f"got {type(result).__name__}"
        )
    columns = as_columns(result, axis=axis, what="merged")
    if columns.keys() != inserted.keys():
        missing = sorted(inserted.keys() - columns.keys())
        extra = sorted(columns.keys() - inserted.keys())
        raise MergeError(
            "the merge function must return the inserted variables; "
            f"missing: {', '.join(map(repr, missing)) or 'none'}, "
            f"unexpected: {', '.join(map(repr, extra)) or 'none'}"
        )
    for name, array in columns.items():
        expected = inserted[name].shape[1:]
        if array.shape[1:] != expected:
            raise MergeError(
                f"the merge function returned variable {name!r} with trailing shape "
                f"{array.shape[1:]}, expected {expected}"
            )
    return {name: columns[name] for name in inserted}


@dataclass(frozen=True, slots=True, repr=False)
class CallableStrategy:
    """A user function ``fn(existing, inserted, *, axis) -> columns`` as a strategy.

    The stored rows are always read when there are any, and never appended to
    in place. The function's result is checked (same variables, consistent
    lengths, same trailing shapes) and stably sorted along the axis.
    """

    function: MergeFunction
    """The user's merge function."""

    @property
    def name(self) -> str:
        """The function's qualified name."""
        return str(getattr(self.function, "__qualname__", type(self.function).__qualname__))

    def needs_existing(self, existing: AxisRange | None, inserted: AxisRange) -> bool:
        """Whenever something is stored."""
        return has_rows(existing)

    def appends(self, existing: AxisRange, inserted: AxisRange) -> bool:
        """Never."""
        return False

    def __call__(self, existing: Columns | None, inserted: Columns, *, axis: str) -> _Arrays:
        """Call the function on validated inputs, check and sort its result."""
        old, new = _prepare(existing, inserted, axis)
        result = self.function(old, new, axis=axis)
        return sort_rows(_check_result(result, new, axis), axis=axis)

    def __repr__(self) -> str:
        module = getattr(self.function, "__module__", None) or "?"
        return f"merge_function({module}.{self.name})"

    def __dask_tokenize__(self) -> object:
        return (type(self).__qualname__, self.function)


replace = Replace()
"""Replace the stored rows by the inserted rows (the default)."""
concat = Concat()
"""Keep stored and inserted rows, duplicates included."""
time_series = TimeSeries()
"""Replace the stored rows within the inserted axis range."""
upsert = Upsert()
"""Replace stored rows having an inserted axis value; last inserted duplicate wins."""

_BY_NAME: dict[str, MergeStrategy] = {
    strategy.name: strategy for strategy in (replace, concat, time_series, upsert)
}


def resolve(merge: MergeLike) -> MergeStrategy:
    """Turn what a user passes as ``merge=`` into a strategy.

    Parameters
    ----------
    merge
        ``None`` (the default, :data:`replace`), a strategy name
        (``"replace"``, ``"concat"``, ``"time_series"``, ``"upsert"``), a
        :class:`MergeStrategy`, or a function
        ``fn(existing, inserted, *, axis) -> columns``.

    Returns
    -------
    MergeStrategy
        The strategy.

    Raises
    ------
    InvalidInputError
        For an unknown name or an object that is neither a strategy nor callable.

    Examples
    --------
    >>> resolve("time_series")
    time_series
    >>> resolve(None)
    replace
    """
    if merge is None:
        return replace
    if isinstance(merge, str):
        try:
            return _BY_NAME[merge]
        except KeyError:
            hint = (
                "; build it with dask_zcollection.merge.upsert_within(tolerance)"
                if merge == "upsert_within"
                else ""
            )
            raise InvalidInputError(
                f"unknown merge strategy {merge!r}; valid names are "
                f"{', '.join(map(repr, _BY_NAME))}{hint}"
            ) from None
    if isinstance(merge, MergeStrategy):
        return merge
    if callable(merge):
        return CallableStrategy(merge)
    raise InvalidInputError(
        f"merge must be None, a strategy name, a MergeStrategy or a function, "
        f"got {type(merge).__name__}"
    )
