"""The lazy index of the xarray backend: the axis coordinate, read only where a query needs it.

:class:`AxisIndex` is an ``xarray.Index`` over the axis variable of the opened
partitions. Opening reads none of it: the catalog records each partition's row
count and axis min/max, enough for ``sel(time=slice(a, b))`` to find the
partitions a label range touches. Only their axis is read (concurrently); the
two at the ends place the bounds exactly, those in between lie wholly inside.
The bounds are cast by pandas itself (partial date strings, units), on the
per-partition min/max and on the end partitions' values, so the positions are
those plain xarray finds. The selection's result carries a plain
:class:`~xarray.indexes.PandasIndex` of the rows read.

Everything else (scalar or array labels, ``method=``, alignment, ``to_pandas_index``
for ``resample``/``groupby``) reads the whole axis once (cached) and answers with
a :class:`~xarray.indexes.PandasIndex`.
"""

from __future__ import annotations

import datetime
from collections.abc import Hashable, Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy
import pandas
import xarray
from xarray.core.indexing import IndexSelResult, PandasIndexingAdapter
from xarray.indexes import Index, PandasIndex

from ._sync import sync

if TYPE_CHECKING:
    from .xarray_backend import ZCollectionArray

__all__ = ["AxisIndex", "LazyAxis"]


class LazyAxis:
    """The axis values of the opened partitions, read on demand (shared by the indexes).

    Parameters
    ----------
    array : ZCollectionArray
        The axis variable (the partitions' kept rows, concatenated).
    lo, hi : numpy.ndarray
        Per partition, bounds enclosing its kept rows (the catalog's axis
        min/max, clipped to a time range).
    """

    def __init__(self, array: ZCollectionArray, lo: numpy.ndarray, hi: numpy.ndarray) -> None:
        self.array = array
        self.lo, self.hi = lo, hi
        self.offsets = array.offsets
        self._values: numpy.ndarray | None = None
        self._index: pandas.Index | None = None

    def __getstate__(self) -> dict[str, Any]:
        # A worker reads what it needs: the cached values do not travel.
        return {**self.__dict__, "_values": None, "_index": None}

    @staticmethod
    def ordered(lo: numpy.ndarray, hi: numpy.ndarray, rows: numpy.ndarray) -> bool:
        """Whether the non-empty partitions' bounds follow each other (a sorted axis)."""
        keep = rows > 0
        bounds = numpy.stack([lo[keep], hi[keep]], axis=1).ravel()
        if bounds.dtype.kind in "mM":
            if numpy.isnat(bounds).any():
                return False
        elif bounds.dtype.kind == "f" and numpy.isnan(bounds).any():
            return False
        return bool((bounds[1:] >= bounds[:-1]).all())

    @property
    def size(self) -> int:
        """Rows of the axis."""
        return int(self.offsets[-1])

    @property
    def cached(self) -> bool:
        """Whether every row was read."""
        return self._values is not None

    def index(self) -> pandas.Index:
        """Every row, as a :class:`pandas.Index` (read once)."""
        if self._index is None:
            self._index = pandas.Index(self.read(0, self.size))
        return self._index

    def read(self, start: int, stop: int) -> numpy.ndarray:
        """Rows ``[start, stop)`` (every row cached once read whole)."""
        if self._values is not None:
            return self._values[start:stop]
        if stop <= start:
            return numpy.empty(0, dtype=self.array.dtype)
        values = sync(self.array._read_rows(start, stop))
        if start == 0 and stop == self.size:
            self._values = values
        return values


class _AxisAdapter(PandasIndexingAdapter):
    """The values of the axis coordinate, for xarray an index's (in memory), read on demand.

    xarray keeps an index's coordinate in memory: it is not chunked by
    ``chunks={}`` (``groupby("time.month")`` needs its values) and its repr shows
    values. Here they are read when asked: a slice reads only its rows (a repr
    its first and last ones), anything else the whole axis, once.
    """

    __slots__ = ("axis",)

    def __init__(self, axis: LazyAxis) -> None:  # no super(): nothing is read yet
        self.axis = axis
        self._dtype = axis.array.dtype

    @property  # type: ignore[override]
    def array(self) -> pandas.Index:
        return self.axis.index()

    @property
    def _in_memory(self) -> bool:
        return True

    @property
    def shape(self) -> tuple[int, ...]:
        return (self.axis.size,)

    @property
    def nbytes(self) -> int:
        return self.axis.size * self.axis.array.dtype.itemsize

    def _index_get(self, indexer: Any, func_name: str) -> Any:
        key = indexer.tuple
        if len(key) == 1 and isinstance(key[0], slice) and not self.axis.cached:
            a, b, step = key[0].indices(self.axis.size)
            rows = numpy.arange(a, b, step)
            if not rows.size:
                values = numpy.empty(0, dtype=self._dtype)
            else:
                lo, hi = int(rows.min()), int(rows.max()) + 1
                values = self.axis.read(lo, hi)[rows - lo]
            return PandasIndexingAdapter(pandas.Index(values), dtype=self._dtype)
        return super()._index_get(indexer, func_name)

    def copy(self, deep: bool = True) -> _AxisAdapter:
        return self  # read-only

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (self.axis,))

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.axis.size} rows, dtype={self._dtype!r})"


def _scalar(x: Any) -> Any:
    """A slice bound as pandas takes it (xarray's own sanitising of 0-d arrays)."""
    if not isinstance(x, tuple) and len(numpy.shape(x)) != 0:
        raise ValueError(f"cannot use non-scalar arrays in a slice for xarray indexing: {x}")
    if isinstance(x, xarray.Variable | xarray.DataArray):
        x = x.values
    if isinstance(x, numpy.ndarray):
        x = x[()]
    return x


class AxisIndex(Index):
    """An ``xarray`` index over the collection's axis, read only where a query needs it.

    ``sel`` with a label slice reads the axis of the partitions the range
    touches only, and its result (``isel`` of those rows) carries a plain
    :class:`~xarray.indexes.PandasIndex` of them. Other queries read the whole
    axis once and answer as a :class:`~xarray.indexes.PandasIndex`.

    Parameters
    ----------
    axis : LazyAxis
        The axis values, read on demand.
    name : hashable
        The coordinate's name (``time``).
    dim : str
        Its dimension (``time``, or ``num_lines`` for a Sequence collection).
    """

    def __init__(self, axis: LazyAxis, name: Hashable, dim: str) -> None:
        self.axis, self.name, self.dim = axis, name, dim
        self._pandas: PandasIndex | None = None
        # The rows ``[start, stop)`` the last ``sel`` found, and their values: the ``isel``
        # that follows indexes them without reading again.
        self._selected: tuple[int, int, numpy.ndarray] | None = None

    @classmethod
    def from_variables(  # type: ignore[override]
        cls, variables: Mapping[Any, xarray.Variable], *, options: Mapping[str, Any]
    ) -> Index:
        """``set_xindex(name, AxisIndex)``: a plain :class:`~xarray.indexes.PandasIndex`.

        An :class:`AxisIndex` is built by the backend, which knows the catalog;
        given bare values there is nothing to read lazily.
        """
        return PandasIndex.from_variables(variables, options=options)

    @classmethod
    def concat(  # type: ignore[override]
        cls,
        indexes: Sequence[AxisIndex],
        dim: Hashable,
        positions: Iterable[Iterable[int]] | None = None,
    ) -> PandasIndex:
        """Concatenate the materialised indexes."""
        return PandasIndex.concat([i.materialised() for i in indexes], dim, positions)

    def materialised(self) -> PandasIndex:
        """The :class:`~xarray.indexes.PandasIndex` of the axis (read once)."""
        if self._pandas is None:
            index = self.axis.index()
            self._pandas = PandasIndex(index.rename(self.name), self.dim, coord_dtype=index.dtype)
        return self._pandas

    def _index(self, values: numpy.ndarray) -> PandasIndex:
        index = pandas.Index(values, name=self.name)
        return PandasIndex(index, self.dim, coord_dtype=values.dtype)

    def to_pandas_index(self) -> pandas.Index:
        """The axis values as a :class:`pandas.Index` (reads them, once)."""
        return self.materialised().index

    def create_variables(
        self, variables: Mapping[Any, xarray.Variable] | None = None
    ) -> dict[Hashable, xarray.Variable]:
        """The coordinate variable: lazy, its rows read when its values are asked."""
        var = (variables or {}).get(self.name)
        attrs = dict(var.attrs) if var is not None else None
        encoding = dict(var.encoding) if var is not None else None
        data = _AxisAdapter(self.axis)
        return {self.name: xarray.Variable(self.dim, data, attrs, encoding, fastpath=True)}

    def sel(
        self, labels: dict[Any, Any], method: Any = None, tolerance: Any = None
    ) -> IndexSelResult:
        """Positions of ``labels``: a label slice reads only the partitions it touches."""
        label = labels.get(self.name)
        if (
            not isinstance(label, slice)
            or method is not None
            or tolerance is not None
            or _scalar(label.step) is not None
            or self._pandas is not None
        ):
            return self.materialised().sel(labels, method=method, tolerance=tolerance)
        return IndexSelResult({self.dim: self._slice(_scalar(label.start), _scalar(label.stop))})

    def _slice(self, start: Any, stop: Any) -> slice:
        """Rows of the labels ``[start, stop]``, as pandas finds them."""
        axis = self.axis
        offsets = axis.offsets
        parts = numpy.flatnonzero(offsets[1:] > offsets[:-1])  # the non-empty partitions
        if not parts.size:
            return slice(0, 0)
        # pandas casts the bounds against the partitions' min/max (sorted: an ordered axis):
        # probes [s, e) lie in the range, so partition parts[j] (probes 2j, 2j+1) holds rows
        # in it iff j is in [s // 2, (e - 1) // 2], and every one strictly between the two
        # ends lies wholly inside.
        probe = numpy.stack([axis.lo[parts], axis.hi[parts]], axis=1).ravel()
        s, e, _ = _positions(probe, start, stop)
        j0, j1 = s // 2, (e - 1) // 2
        if j0 > j1:  # nothing in range: an empty slice where the range would be
            at = int(offsets[parts[j0]]) if j0 < len(parts) else axis.size
            return slice(at, at)
        # The axis of the partitions touched (concurrently); the ends place the bounds.
        begin, end = int(offsets[parts[j0]]), int(offsets[parts[j1] + 1])
        values = axis.read(begin, end)
        first = values[: int(offsets[parts[j0] + 1]) - begin]
        last = values[int(offsets[parts[j1]]) - begin :]
        lo = begin + _positions(first, start, stop)[0]
        hi = int(offsets[parts[j1]]) + _positions(last, start, stop)[1]
        hi = max(lo, hi)
        self._selected = (lo, hi, values[lo - begin : hi - begin])
        return slice(lo, hi)

    def isel(self, indexers: Mapping[Any, Any]) -> Index | None:
        """Rows of the axis: a :class:`~xarray.indexes.PandasIndex` of them.

        The rows a ``sel`` just found are not read again; a scalar drops the index.
        """
        indexer = indexers[self.dim]
        if not isinstance(indexer, slice | xarray.Variable) and numpy.ndim(indexer) == 0:
            return None  # as pandas' (nothing to read)
        if isinstance(indexer, slice) and self._pandas is None:
            a, b, step = indexer.indices(self.axis.size)
            if (a, b, step) == (0, self.axis.size, 1):
                return self
            selected = self._selected
            if step == 1 and selected is not None and selected[:2] == (a, max(a, b)):
                return self._index(selected[2])
            if step == 1:  # the rows of the slice only
                return self._index(self.axis.read(a, max(a, b)))
        return self.materialised().isel(indexers)

    def equals(self, other: Index, *, exclude: frozenset[Hashable] | None = None) -> bool:
        """The same axis (without reading), else the same values."""
        if isinstance(other, AxisIndex):
            if (other.axis, other.dim) == (self.axis, self.dim):
                return True
            return self.materialised().equals(other.materialised())
        return isinstance(other, PandasIndex) and self.materialised().equals(other)

    def join(self, other: Index, how: Any = "inner") -> PandasIndex:  # type: ignore[override]
        """Join the materialised indexes (alignment)."""
        return self.materialised().join(_as_pandas(other), how=how)

    def reindex_like(self, other: Index) -> dict[Hashable, Any]:
        """Reindex on the materialised indexes (alignment)."""
        return self.materialised().reindex_like(_as_pandas(other))

    def roll(self, shifts: Mapping[Any, int]) -> PandasIndex:  # type: ignore[override]
        """Roll the materialised index."""
        return self.materialised().roll(shifts)

    def rename(self, name_dict: Mapping[Any, Hashable], dims_dict: Mapping[Any, Hashable]) -> Any:
        """The same axis under a new coordinate or dimension name."""
        if self.name not in name_dict and self.dim not in dims_dict:
            return self
        new = AxisIndex(
            self.axis, name_dict.get(self.name, self.name), str(dims_dict.get(self.dim, self.dim))
        )
        new._pandas = None if self._pandas is None else self._pandas.rename(name_dict, dims_dict)
        return new

    def _copy(self, deep: bool = True, memo: dict[int, Any] | None = None) -> AxisIndex:
        # The axis is read-only and shared: a deep copy need not copy the store.
        new = AxisIndex(self.axis, self.name, self.dim)
        new._pandas = self._pandas
        return new

    def __getitem__(self, indexer: Any) -> Any:
        return self.materialised()[indexer]

    def _repr_inline_(self, max_width: int) -> str:
        return f"AxisIndex (lazy, {self.axis.size} rows)"

    def __repr__(self) -> str:
        return f"AxisIndex(name={self.name!r}, dim={self.dim!r}, rows={self.axis.size})"


def _as_pandas(index: Index) -> PandasIndex:
    if isinstance(index, AxisIndex):
        return index.materialised()
    if not isinstance(index, PandasIndex):
        raise TypeError(f"cannot align an AxisIndex with {type(index).__name__}")
    return index


def _bound(values: numpy.ndarray, label: Any) -> numpy.datetime64 | None:
    """``label`` as a value of the datetime axis ``values``, when the cast is exact, else None.

    Dates and times only (tz-naive): pandas reads strings as partial dates, and
    a bound finer than the axis is compared at its own precision.
    """
    if isinstance(label, pandas.Timestamp):
        if label.tz is not None:
            return None
        label = label.to_datetime64()
    elif isinstance(label, datetime.datetime):
        if label.tzinfo is not None:
            return None
        label = numpy.datetime64(label)
    if not isinstance(label, numpy.datetime64) or numpy.isnat(label):
        return None
    if not numpy.can_cast(label.dtype, values.dtype, casting="safe"):
        return None
    return label.astype(values.dtype)


def _positions(values: numpy.ndarray, start: Any, stop: Any) -> tuple[int, int, int]:
    """``pandas.Index(values).slice_indexer(start, stop)`` as ``(start, stop, step)`` positions.

    On a sorted datetime axis without NaT, with datetime bounds, a binary
    search gives pandas' positions (the first row at or after ``start``, past
    the last at or before ``stop``) without building pandas' hash table of the
    values (half a millisecond a partition).
    """
    if values.dtype.kind == "M" and values.size:
        ints = values.view(numpy.int64)
        lo = None if start is None else _bound(values, start)
        hi = None if stop is None else _bound(values, stop)
        if (
            (start is None or lo is not None)
            and (stop is None or hi is not None)
            and not numpy.isnat(values[0])  # NaT is the smallest integer: first if anywhere
            and bool((ints[1:] >= ints[:-1]).all())
        ):
            a = 0 if lo is None else int(values.searchsorted(lo, side="left"))
            b = values.size if hi is None else int(values.searchsorted(hi, side="right"))
            return a, b, 1
    found = pandas.Index(values).slice_indexer(start, stop)
    if not isinstance(found, slice):  # pragma: no cover - a sorted index gives a slice
        raise KeyError("cannot represent a label slice over the axis as positions")
    return found.indices(len(values))
