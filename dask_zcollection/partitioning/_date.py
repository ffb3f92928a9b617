"""Partitioning by calendar date of a time variable."""

from __future__ import annotations

import dataclasses
import datetime
import re
from collections.abc import Mapping, Sequence
from typing import Any, Final, Literal

import numpy
import numpy.typing as npt

from dask_zcollection.errors import InvalidInputError, SchemaError
from dask_zcollection.partitioning._base import (
    check_key,
    check_names,
    decode_path,
    get_column,
    unique_int,
)

__all__ = ["Date", "Resolution", "time_bound"]

Resolution = Literal["Y", "M", "D", "h", "m", "s"]

_RESOLUTIONS: Final = ("Y", "M", "D", "h", "m", "s")
_COMPONENTS: Final = ("year", "month", "day", "hour", "minute", "second")
_LIMITS: Final = {
    "month": (1, 12),
    "day": (1, 31),
    "hour": (0, 23),
    "minute": (0, 59),
    "second": (0, 59),
}

# CF unit spellings -> numpy time unit.
_CF_UNITS: Final = {
    **dict.fromkeys(("days", "day", "d"), "D"),
    **dict.fromkeys(("hours", "hour", "hrs", "hr", "h"), "h"),
    **dict.fromkeys(("minutes", "minute", "mins", "min"), "m"),
    **dict.fromkeys(("seconds", "second", "secs", "sec", "s"), "s"),
    **dict.fromkeys(("milliseconds", "millisecond", "msecs", "msec", "ms"), "ms"),
    **dict.fromkeys(("microseconds", "microsecond", "usecs", "usec", "us"), "us"),
    **dict.fromkeys(("nanoseconds", "nanosecond", "nsecs", "nsec", "ns"), "ns"),
}
_CF_RE: Final = re.compile(
    r"\s*(?P<unit>[A-Za-z]+)\s+since\s+"
    r"(?P<date>[+-]?\d{1,4}-\d{1,2}-\d{1,2})"
    r"(?:[T\s]+(?P<time>\d{1,2}:\d{1,2}(?::\d{1,2}(?:\.\d+)?)?))?"
    r"\s*(?:Z|UTC|GMT|[+-]0{1,2}(?::?00)?)?\s*"
)
_NAT: Final = numpy.iinfo(numpy.int64).min
_NANOSECONDS: Final = {
    "D": 86_400 * 10**9,
    "h": 3_600 * 10**9,
    "m": 60 * 10**9,
    "s": 10**9,
    "ms": 10**6,
    "us": 10**3,
    "ns": 1,
}


def _parse_cf_units(units: str, variable: str) -> tuple[str, numpy.datetime64]:
    """``"seconds since 2000-01-01"`` -> ``("s", numpy.datetime64("2000-01-01T00:00:00"))``."""
    match = _CF_RE.fullmatch(units)
    unit = _CF_UNITS.get(match["unit"].lower()) if match else None
    if match is None or unit is None:
        raise SchemaError(
            f"partitioning variable {variable!r}: unsupported CF time units {units!r} "
            "(expected '<days|hours|minutes|seconds|milliseconds|microseconds|nanoseconds> "
            "since <YYYY-MM-DD[ hh:mm[:ss]]>')"
        )
    year, month, day = match["date"].rsplit("-", 2)
    text = f"{int(year):04d}-{int(month):02d}-{int(day):02d}"
    if match["time"]:
        hms = match["time"].split(":")
        seconds = hms[2] if len(hms) > 2 else "0"
        whole, _, frac = seconds.partition(".")
        text += f"T{int(hms[0]):02d}:{int(hms[1]):02d}:{int(whole):02d}"
        if frac:
            text += "." + frac
    try:
        epoch = numpy.datetime64(text)
    except ValueError as err:
        raise SchemaError(
            f"partitioning variable {variable!r}: invalid reference date in units {units!r}"
        ) from err
    return unit, epoch


@dataclasses.dataclass(frozen=True, slots=True, repr=False)
class Date:
    """Partition by the calendar date of a time variable, truncated to ``resolution``.

    The variable may be ``datetime64`` (any unit) or integer. Integers are read with the
    CF ``units`` attribute when present (``"seconds since 2000-01-01"``; days, hours,
    minutes, seconds, milliseconds, microseconds and nanoseconds are supported), else
    as nanoseconds since the Unix epoch (numpy's integer view of ``datetime64[ns]``).

    Parameters
    ----------
    variables
        Exactly one time variable.
    resolution
        ``"Y"``, ``"M"``, ``"D"``, ``"h"``, ``"m"`` or ``"s"``.
    dimension
        The partitioned dimension; defaults to the variable name.

    Examples
    --------
    >>> p = Date(("time",), resolution="M")
    >>> p.keys
    ('year', 'month')
    >>> p.encode((2024, 3))
    'year=2024/month=03'
    """

    variables: tuple[str, ...]
    """The one time variable."""
    resolution: Resolution = "D"
    """Truncation unit: Y, M, D, h, m or s."""
    dimension: str = None  # type: ignore[assignment]  # defaults to the variable name
    """The partitioned dimension."""

    def __post_init__(self) -> None:
        variables = check_names(self.variables, "Date")
        if len(variables) != 1:
            raise InvalidInputError(f"Date: exactly one variable is required, got {variables!r}")
        if self.resolution not in _RESOLUTIONS:
            raise InvalidInputError(
                f"Date: resolution must be one of {_RESOLUTIONS!r}, got {self.resolution!r}"
            )
        dimension = variables[0] if self.dimension is None else self.dimension
        if not isinstance(dimension, str) or not dimension:
            raise InvalidInputError(f"Date: dimension must be a non-empty str, got {dimension!r}")
        object.__setattr__(self, "variables", variables)
        object.__setattr__(self, "dimension", dimension)

    @property
    def name(self) -> str:
        """``"date"``."""
        return "date"

    @property
    def variable(self) -> str:
        """The time variable."""
        return self.variables[0]

    @property
    def keys(self) -> tuple[str, ...]:
        """``("year", "month", ...)`` down to :attr:`resolution`."""
        return _COMPONENTS[: _RESOLUTIONS.index(self.resolution) + 1]

    def __repr__(self) -> str:
        extra = "" if self.dimension == self.variable else f", dimension={self.dimension!r}"
        return f"Date({self.variables!r}, resolution={self.resolution!r}{extra})"

    # ----------------------------------------------------------------------------------
    # Conversion

    def _datetime64(self, values: npt.ArrayLike, attrs: Mapping[str, Any] | None) -> numpy.ndarray:
        """Values as ``datetime64`` of their natural unit; NaT and floats are errors."""
        variable = self.variable
        array = numpy.asarray(values)
        kind = array.dtype.kind
        if kind == "M":
            if numpy.isnat(array).any():
                raise SchemaError(f"partitioning variable {variable!r} contains NaT")
            return array
        if kind not in "iu":
            raise SchemaError(
                f"partitioning variable {variable!r} must be datetime64 or integer, "
                f"got {array.dtype}"
            )
        if kind == "u" and array.size and int(array.max()) > numpy.iinfo(numpy.int64).max:
            raise SchemaError(
                f"partitioning variable {variable!r} has values above the int64 range"
            )
        ints = array.astype(numpy.int64, copy=False)
        if array.dtype == numpy.int64 and (ints == _NAT).any():
            raise SchemaError(f"partitioning variable {variable!r} contains NaT (int64 minimum)")
        units = (attrs or {}).get("units")
        if units is None:
            return ints.view("datetime64[ns]")
        if not isinstance(units, str):
            raise SchemaError(
                f"partitioning variable {variable!r}: units must be a str, got {units!r}"
            )
        unit, epoch = _parse_cf_units(units, variable)
        return ints.view(f"timedelta64[{unit}]") + epoch

    def _variable_attrs(self, attrs: Mapping[str, Any] | None) -> Mapping[str, Any]:
        # Accept either the variable's own attributes or a name -> attributes mapping.
        if not attrs:
            return {}
        nested = attrs.get(self.variable)
        return nested if isinstance(nested, Mapping) else attrs

    def to_datetime64(
        self, values: npt.ArrayLike, attrs: Mapping[str, Any] | None = None
    ) -> npt.NDArray[numpy.datetime64]:
        """Interpret values of the time variable as ``datetime64[ns]``.

        Parameters
        ----------
        values
            ``datetime64`` or integer values (scalars or arrays).
        attrs
            The variable's attributes (its CF ``units`` are used for integers); a
            ``{variable: attributes}`` mapping, as given to :meth:`split`, is also accepted.

        Raises
        ------
        SchemaError
            On NaT, float or other non-time values, or unsupported CF units.
        """
        times = self._datetime64(values, self._variable_attrs(attrs))
        try:
            return times.astype("datetime64[ns]")
        except OverflowError as err:
            raise SchemaError(
                f"partitioning variable {self.variable!r}: values overflow datetime64[ns]"
            ) from err

    def _truncate(self, times: numpy.ndarray) -> npt.NDArray[numpy.int64]:
        """Integer count of ``resolution`` units since the epoch, for every value."""
        resolution = self.resolution
        target = resolution if resolution in ("D", "h", "m", "s") else "D"
        unit, count = numpy.datetime_data(times.dtype)
        if unit in ("D", "h", "m", "s", "ms", "us", "ns"):
            # Fixed-length units: truncation is an integer floor division (fast path).
            ratio, remainder = divmod(_NANOSECONDS[target], _NANOSECONDS[unit] * count)
            if ratio >= 1 and not remainder:
                out = times.view(numpy.int64) // ratio
            else:
                out = times.astype(f"datetime64[{target}]").view(numpy.int64)
        else:
            out = times.astype(f"datetime64[{target}]").view(numpy.int64)
        return out

    def key_of(
        self, values: npt.ArrayLike, attrs: Mapping[str, Any] | None = None
    ) -> npt.NDArray[numpy.int64]:
        """Key of every value: ``int64`` array of shape ``(n, len(self.keys))``."""
        times = self._datetime64(numpy.atleast_1d(values), self._variable_attrs(attrs))
        return _decompose(times.astype(f"datetime64[{self.resolution}]").view(numpy.int64), self)

    def bounds(
        self, keys: npt.ArrayLike
    ) -> tuple[npt.NDArray[numpy.datetime64], npt.NDArray[numpy.datetime64]]:
        """Half-open time interval ``[start, stop)`` covered by each partition key.

        Parameters
        ----------
        keys
            ``int64`` array of shape ``(n, len(self.keys))`` (or one key tuple).

        Returns
        -------
        start, stop
            ``datetime64[ns]`` arrays of shape ``(n,)``.
        """
        table = numpy.atleast_2d(numpy.asarray(keys, dtype=numpy.int64))
        if table.shape[1] != len(self.keys):
            raise InvalidInputError(f"keys must have {len(self.keys)} columns {self.keys!r}")
        counts = (table[:, 0] - 1970) * 12 if self.resolution != "Y" else table[:, 0] - 1970
        if self.resolution != "Y":
            counts = counts + (table[:, 1] - 1)
        if self.resolution in ("D", "h", "m", "s"):
            counts = counts.view("datetime64[M]").astype("datetime64[D]").view(numpy.int64)
            counts = counts + (table[:, 2] - 1)
            for column, factor in ((3, 24), (4, 60), (5, 60)):
                if column < table.shape[1]:
                    counts = counts * factor + table[:, column]
        dtype = f"datetime64[{self.resolution}]"
        start = counts.view(dtype).astype("datetime64[ns]")
        stop = (counts + 1).view(dtype).astype("datetime64[ns]")
        return start, stop

    # ----------------------------------------------------------------------------------
    # Partitioning

    def split(
        self,
        columns: Mapping[str, npt.ArrayLike],
        attrs: Mapping[str, Mapping[str, Any]] | None = None,
    ) -> tuple[npt.NDArray[numpy.int64], npt.NDArray[numpy.intp]]:
        """Group rows by calendar key; see :meth:`Partitioning.split`."""
        values = get_column(columns, self.variable)
        attributes = (attrs or {}).get(self.variable)
        times = self._datetime64(values, attributes)
        unique, inverse = unique_int(self._truncate(times))
        if self.resolution in ("Y", "M"):
            # Few distinct days: map them to months/years, then compose the inverse.
            coarse = unique.view("datetime64[D]").astype(f"datetime64[{self.resolution}]")
            unique, day_to_coarse = unique_int(coarse.view(numpy.int64))
            inverse = day_to_coarse[inverse]
        return _decompose(unique, self), inverse

    def encode(self, key: Sequence[int]) -> str:
        """``(2024, 3)`` -> ``"year=2024/month=03"`` (year padded to 4 digits, others to 2)."""
        values = check_key(key, self.keys)
        return "/".join(
            f"{name}={value:0{4 if name == 'year' else 2}d}"
            for name, value in zip(self.keys, values, strict=True)
        )

    def decode(self, path: str) -> tuple[int, ...]:
        """``"year=2024/month=03"`` -> ``(2024, 3)``; unpadded numbers are accepted."""
        values = decode_path(path, self.keys)
        for name, value in zip(self.keys, values, strict=True):
            low, high = _LIMITS.get(name, (value, value))
            if not low <= value <= high:
                raise InvalidInputError(
                    f"partition path {path!r}: {name}={value} is out of range [{low}, {high}]"
                )
        return values

    def to_dict(self) -> dict[str, Any]:
        """``{"name": "date", "variable": ..., "resolution": ..., "dimension": ...}``."""
        return {
            "name": self.name,
            "variable": self.variable,
            "resolution": self.resolution,
            "dimension": self.dimension,
        }


def _decompose(counts: npt.NDArray[numpy.int64], date: Date) -> npt.NDArray[numpy.int64]:
    """Counts of ``date.resolution`` units since the epoch -> calendar key table."""
    resolution = date.resolution
    keys = numpy.empty((counts.size, len(date.keys)), dtype=numpy.int64)
    if resolution == "Y":
        keys[:, 0] = counts + 1970
        return keys
    if resolution == "M":
        keys[:, 0] = counts // 12 + 1970
        keys[:, 1] = counts % 12 + 1
        return keys
    # Sub-day fields by integer arithmetic; the calendar only for the distinct days.
    per_day = {"D": 1, "h": 24, "m": 1440, "s": 86400}[resolution]
    days, rest = numpy.divmod(counts, per_day)
    unique_days, inverse = unique_int(days)
    months = unique_days.view("datetime64[D]").astype("datetime64[M]")
    day_of_month = unique_days - months.astype("datetime64[D]").view(numpy.int64) + 1
    month_counts = months.view(numpy.int64)
    keys[:, 0] = (month_counts // 12 + 1970)[inverse]
    keys[:, 1] = (month_counts % 12 + 1)[inverse]
    keys[:, 2] = day_of_month[inverse]
    divisor = per_day
    for column, factor in ((3, 24), (4, 60), (5, 60)):
        if column >= keys.shape[1]:
            break
        divisor //= factor
        keys[:, column], rest = numpy.divmod(rest, divisor)
    return keys


def time_bound(
    value: Any,
    dtype: numpy.dtype[Any],
    attrs: Mapping[str, Any] | None = None,
    name: str = "time",
    *,
    upper: bool = False,
) -> Any:
    """A user's time bound as a scalar comparable with an axis variable of ``dtype``.

    Parameters
    ----------
    value : str, datetime, numpy.datetime64 or number
        The bound (``None``: open).
    dtype : numpy.dtype
        The axis variable's dtype: ``datetime64`` or an integer time with CF
        ``units`` in ``attrs`` (``"seconds since 2000-01-01"``).
    attrs : mapping, optional
        The axis variable's attributes.
    name : str
        The variable's name, for messages.
    upper : bool
        An upper bound: integer times round down (inclusive bounds never keep
        a value outside the range), lower bounds round up.

    Raises
    ------
    InvalidInputError
        When the value cannot be read as a time of ``dtype``, is outside its
        range, or is NaT / NaN (nothing compares with them).

    Examples
    --------
    >>> time_bound("2024-03-01", numpy.dtype("int64"), {"units": "days since 2024-01-01"})
    np.int64(60)
    """
    attrs = dict(attrs or {})
    if value is None:
        return None
    if isinstance(value, str) and value.strip().lower() == "nat":
        raise InvalidInputError(f"a bound of {name!r} cannot be NaT or NaN, got {value!r}")
    try:
        bound = _time_bound(value, dtype, attrs, name, upper=upper)
    except InvalidInputError:
        raise
    except (ValueError, TypeError, OverflowError) as err:  # e.g. beyond datetime64[ns]
        raise InvalidInputError(
            f"cannot use {value!r} as a bound of {name!r} ({dtype}): {err}"
        ) from err
    missing = (
        numpy.isnat(bound) if dtype.kind in "mM" else dtype.kind in "fc" and numpy.isnan(bound)
    )
    if missing:
        # Nothing compares with NaT or NaN: the range would silently select no row.
        raise InvalidInputError(f"a bound of {name!r} cannot be NaT or NaN, got {value!r}")
    return bound


#: The UTC offset ending an ISO 8601 time: ``Z``, ``+02:00``, ``-0530``.
_UTC_OFFSET: Final = re.compile(r"[T ]\d[\d:.]*(?:Z|[+-]\d{2}(?::?\d{2})?)$")


def _naive_utc(value: Any) -> Any:
    """A time with a timezone as naive UTC, what the axis holds (the others unchanged).

    numpy converts such a time itself, but with a ``UserWarning`` (its parsing
    of offsets is deprecated); a ``datetime`` or ``pandas.Timestamp`` with a
    timezone is converted here too.
    """
    if isinstance(value, datetime.datetime) and value.tzinfo is not None:
        utc = value.astimezone(datetime.UTC).replace(tzinfo=None)
        to_numpy = getattr(utc, "to_datetime64", None)  # pandas: keeps its nanoseconds
        return to_numpy() if to_numpy is not None else utc
    if isinstance(value, str) and _UTC_OFFSET.search(value.strip()):
        try:
            parsed = datetime.datetime.fromisoformat(value.strip())
        except ValueError:
            return value  # e.g. nanoseconds: left to numpy
        if parsed.tzinfo is not None:
            return parsed.astimezone(datetime.UTC).replace(tzinfo=None)
    return value


def _time_bound(
    value: Any, dtype: numpy.dtype[Any], attrs: dict[str, Any], name: str, *, upper: bool
) -> Any:
    value = _naive_utc(value)
    if dtype.kind == "M":
        try:
            when = numpy.datetime64(value)
            if numpy.datetime_data(when.dtype)[0] in ("ps", "fs", "as"):
                # numpy's range below ns is months around 1970: the value wrapped silently.
                when = numpy.datetime64(value, "ns")
            bound = when.astype(dtype)
        except (ValueError, TypeError) as err:
            raise InvalidInputError(f"cannot interpret {value!r} as a time of {name!r}") from err
        if not upper and bound.astype(when.dtype) < when:
            # A lower bound finer than the axis rounds up, as integer times do: the
            # conversion rounded it down, keeping a value below the range.
            bound = bound + numpy.timedelta64(1, numpy.datetime_data(dtype)[0])  # type: ignore[call-overload]
        return bound
    if isinstance(value, (str, numpy.datetime64)) or hasattr(value, "isoformat"):
        if dtype.kind not in "iu":
            raise InvalidInputError(
                f"variable {name!r} ({dtype}) cannot be compared with {value!r}"
            )
        when = numpy.datetime64(value, "ns")
        units = attrs.get("units")
        if units:
            unit, ref = _parse_cf_units(str(units), name)
            delta = (when - ref.astype("datetime64[ns]")) / numpy.timedelta64(1, unit)  # type: ignore[call-overload]
            # Inclusive bounds: round inwards so no value outside the range is kept.
            return dtype.type(int(numpy.floor(delta) if upper else numpy.ceil(delta)))
        return dtype.type(when.astype("int64"))
    return numpy.asarray(value).astype(dtype)[()]
