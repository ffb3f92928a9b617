"""The partitioning contract and the vectorised helpers shared by its implementations."""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from typing import Any, Protocol, runtime_checkable

import numpy
import numpy.typing as npt

from dask_zcollection.errors import InvalidInputError, SchemaError, VariableNotFoundError
from dask_zcollection.schema import check_node_name

__all__ = ["Partitioning"]

#: Largest value range handled by the O(n) dense unique; wider ranges sort.
_DENSE_SPAN_MIN = 1 << 20

_INT64 = numpy.iinfo(numpy.int64)


@runtime_checkable
class Partitioning(Protocol):
    """How a collection splits its rows into partitions.

    A partitioning computes, for every row along :attr:`dimension`, an integer key tuple
    from the values of :attr:`variables`; rows sharing a key form one partition, stored
    under the relative path :meth:`encode` gives for that key.
    """

    @property
    def name(self) -> str:
        """Registered name: ``"date"``, ``"sequence"`` or ``"grouped_sequence"``."""
        ...

    @property
    def variables(self) -> tuple[str, ...]:
        """Root-level variables the keys are computed from."""
        ...

    @property
    def dimension(self) -> str:
        """The partitioned dimension."""
        ...

    @property
    def keys(self) -> tuple[str, ...]:
        """Names of the key components, in path order."""
        ...

    def split(
        self,
        columns: Mapping[str, npt.ArrayLike],
        attrs: Mapping[str, Mapping[str, Any]] | None = None,
    ) -> tuple[npt.NDArray[numpy.int64], npt.NDArray[numpy.intp]]:
        """Compute the partition of every row.

        Parameters
        ----------
        columns
            Variable name -> 1-D values along :attr:`dimension`; must hold :attr:`variables`.
        attrs
            Variable name -> its attributes (Date over integers reads CF ``units``).

        Returns
        -------
        keys
            ``int64`` array of shape ``(n_partitions, len(self.keys))``, rows sorted by
            key value (lexicographic on the tuple).
        inverse
            ``intp`` array of shape ``(n_rows,)``: the index in ``keys`` of each row.
        """
        ...

    def encode(self, key: Sequence[int]) -> str:
        """Relative path of the partition with this key, e.g. ``"year=2024/month=03"``."""
        ...

    def decode(self, path: str) -> tuple[int, ...]:
        """Key of the partition at this relative path (inverse of :meth:`encode`)."""
        ...

    def to_dict(self) -> dict[str, Any]:
        """JSON-able description, read back by :func:`~dask_zcollection.partitioning.from_dict`."""
        ...


# --------------------------------------------------------------------------------------
# Validation helpers


def check_names(variables: Any, what: str) -> tuple[str, ...]:
    """Normalise ``variables`` to a non-empty tuple of distinct, path-safe names."""
    if isinstance(variables, str):
        variables = (variables,)
    try:
        names = tuple(variables)
    except TypeError as err:
        raise InvalidInputError(
            f"{what}: expected a tuple of variable names, got {variables!r}"
        ) from err
    if not names:
        raise InvalidInputError(f"{what}: at least one variable is required")
    for name in names:
        # Each name becomes a path component ``name=value`` of every partition: a
        # Zarr node name that the tree walk takes for a partition ('=' once, and no
        # leading '_' or '.', no '@' which separates a version).
        if not isinstance(name, str) or "=" in name or "@" in name or name.startswith(("_", ".")):
            raise InvalidInputError(
                f"{what}: invalid variable name {name!r} (a string without '=' or '@', "
                "not starting with '_' or '.')"
            )
        try:
            check_node_name(name, "partitioning variable")
        except SchemaError as err:
            raise InvalidInputError(f"{what}: {err}") from err
    if len(set(names)) != len(names):
        raise InvalidInputError(f"{what}: duplicate variable names in {names!r}")
    return names


def get_column(columns: Mapping[str, npt.ArrayLike], name: str) -> numpy.ndarray:
    """The 1-D array of variable ``name``, or an error naming it."""
    try:
        values = numpy.asarray(columns[name])
    except KeyError as err:
        raise VariableNotFoundError(
            f"partitioning variable {name!r} is missing; got {sorted(columns)!r}"
        ) from err
    if values.ndim != 1:
        raise SchemaError(f"partitioning variable {name!r} must be 1-D, got shape {values.shape}")
    return values


def as_int64(values: numpy.ndarray, name: str) -> npt.NDArray[numpy.int64]:
    """Integer ``values`` as ``int64``; any other dtype is a :class:`SchemaError`."""
    if values.dtype.kind not in "iu":
        raise SchemaError(
            f"partitioning variable {name!r} must have an integer dtype, got {values.dtype}"
        )
    if values.dtype == numpy.uint64 and values.size and int(values.max()) > _INT64.max:
        raise SchemaError(f"partitioning variable {name!r} has values above the int64 range")
    return values.astype(numpy.int64, copy=False)


def check_key(key: Sequence[int], names: tuple[str, ...]) -> tuple[int, ...]:
    """Validate a key tuple against the key component names."""
    try:
        values = tuple(key)
    except TypeError as err:
        raise InvalidInputError(f"partition key must be a sequence of ints, got {key!r}") from err
    if len(values) != len(names):
        raise InvalidInputError(
            f"partition key {values!r} must have {len(names)} components {names!r}"
        )
    out = []
    for name, value in zip(names, values, strict=True):
        if isinstance(value, bool | numpy.bool_) or not isinstance(value, int | numpy.integer):
            raise InvalidInputError(
                f"partition key component {name!r} must be an int, got {value!r}"
            )
        out.append(int(value))
    return tuple(out)


_INT_RE = re.compile(r"-?[0-9]+")


def decode_path(path: str, names: tuple[str, ...]) -> tuple[int, ...]:
    """Parse ``name=value/...`` with exactly the components ``names``, in order."""
    if not isinstance(path, str):
        raise InvalidInputError(f"partition path must be a str, got {path!r}")
    parts = path.strip("/").split("/")
    if len(parts) != len(names):
        raise InvalidInputError(
            f"partition path {path!r} does not match {'/'.join(n + '=...' for n in names)!r}"
        )
    values = []
    for part, name in zip(parts, names, strict=True):
        label, sep, text = part.partition("=")
        if not sep or label != name or not _INT_RE.fullmatch(text):
            raise InvalidInputError(
                f"partition path {path!r}: component {part!r} is not '{name}=<int>'"
            )
        values.append(int(text))
    return tuple(values)


# --------------------------------------------------------------------------------------
# Vectorised grouping


def unique_int(
    values: npt.NDArray[numpy.int64],
) -> tuple[npt.NDArray[numpy.int64], npt.NDArray[numpy.intp]]:
    """Sorted unique values of a 1-D int64 array and the inverse index.

    A dense O(n) scatter/gather is used when the value range is narrow (the usual case
    for partition keys); otherwise ``numpy.unique`` sorts.
    """
    if values.size == 0:
        return numpy.empty(0, numpy.int64), numpy.empty(0, numpy.intp)
    if values.size > 1 and bool((values[1:] >= values[:-1]).all()):
        # Sorted input (the usual case for time): runs, no sort and no scatter.
        starts = numpy.empty(values.size, dtype=numpy.bool_)
        starts[0] = True
        numpy.not_equal(values[1:], values[:-1], out=starts[1:])
        inverse = numpy.cumsum(starts, dtype=numpy.intp)
        inverse -= 1
        return values[starts].astype(numpy.int64, copy=False), inverse
    lo, hi = int(values.min()), int(values.max())
    span = hi - lo + 1
    if span <= max(_DENSE_SPAN_MIN, 2 * values.size):
        offsets = values - lo if lo else values
        present = numpy.zeros(span, dtype=numpy.bool_)
        present[offsets] = True
        unique = numpy.flatnonzero(present)
        lookup = numpy.cumsum(present, dtype=numpy.intp)
        lookup -= 1
        return (unique + lo).astype(numpy.int64, copy=False), lookup[offsets]
    unique, inverse = numpy.unique(values, return_inverse=True)
    return unique.astype(numpy.int64, copy=False), inverse.reshape(-1).astype(
        numpy.intp, copy=False
    )


def unique_rows(
    columns: Sequence[npt.NDArray[numpy.int64]],
) -> tuple[npt.NDArray[numpy.int64], npt.NDArray[numpy.intp]]:
    """Lexicographically sorted unique rows of int64 columns and the inverse index.

    Columns are packed into one int64 (first column most significant) when the product
    of their value ranges fits, so grouping is a single 1-D unique.
    """
    ncols = len(columns)
    size = columns[0].size
    if size == 0:
        return numpy.empty((0, ncols), numpy.int64), numpy.empty(0, numpy.intp)
    if ncols == 1:
        unique, inverse = unique_int(columns[0])
        return unique[:, numpy.newaxis], inverse
    lows = [int(c.min()) for c in columns]
    spans = [int(c.max()) - lo + 1 for c, lo in zip(columns, lows, strict=True)]
    if math.prod(spans) >= 1 << 62:
        table = numpy.stack(columns, axis=1)
        unique, inverse = numpy.unique(table, axis=0, return_inverse=True)
        return unique.astype(numpy.int64, copy=False), inverse.reshape(-1).astype(numpy.intp)
    strides = [math.prod(spans[i + 1 :]) for i in range(ncols)]
    packed = numpy.zeros(size, dtype=numpy.int64)
    for column, lo, stride in zip(columns, lows, strides, strict=True):
        part = column - lo
        if stride != 1:
            part *= stride
        packed += part
    unique, inverse = unique_int(packed)
    keys = numpy.empty((unique.size, ncols), dtype=numpy.int64)
    for i, (lo, span, stride) in enumerate(zip(lows, spans, strides, strict=True)):
        keys[:, i] = (unique // stride) % span + lo
    return keys, inverse
