"""``MapOverlap``: a per-partition function that sees rows of its neighbours.

Each output partition reads its own rows plus a halo (rows just before and
after it in key order, from any partition of the collection, selected or not:
only those rows, so a neighbour costs one small read), optionally pads the
collection's ends with a constant, runs the function and trims the halo.
The halo's row ranges are planned on the client (``dask_zcollection._overlap``).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from typing import Any

import numpy

from .._sync import sync
from ..catalog import Catalog
from ..catalog._discovery import IMMUTABLE_PATH
from ..data import Dataset
from ..errors import InvalidInputError
from ..io import ReadSource, read_partition
from ._dask import DataNode, Expr, List, Task, TaskRef
from ._read import ZExpr, _dataset, read_immutable_task

__all__ = ["Halo", "MapOverlap", "Piece", "PersistedOverlap"]

#: Rows ``[start, stop)`` of a partition read for a halo: ``(path, rows, start, stop,
#: identity)``, the partition's path, committed rows and group identity (``Part``).
Piece = tuple[str, int, int, int, str]


@dataclasses.dataclass(frozen=True, slots=True)
class Halo:
    """What one output partition reads: pieces of partitions, in key order.

    Attributes
    ----------
    pieces : tuple
        ``(path, committed rows, start, stop)`` of every piece read, in order.
    before, after : int
        Rows of the pieces that are halo, before and after the partition's own.
    pad_before, pad_after : int
        Rows of the constant padded beyond the collection's first / last row.
    """

    pieces: tuple[Piece, ...]
    before: int
    after: int
    pad_before: int = 0
    pad_after: int = 0


async def _read_pieces(
    source: ReadSource, pieces: tuple[Piece, ...], variables: tuple[str, ...]
) -> list[dict[str, numpy.ndarray]]:
    """Each piece's rows of ``variables``, read concurrently (the halo and the partition)."""
    import asyncio

    return list(
        await asyncio.gather(
            *(
                read_partition(source, (path, rows, True, txn), variables, None, ((a, b),))
                for path, rows, a, b, txn in pieces
            )
        )
    )


def _run_and_trim(
    ds: Dataset,
    dim: str,
    head: int,
    tail: int,
    func: Callable[..., Dataset],
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
    label: str,
) -> Dataset:
    """``func`` over a partition extended by its halo, the halo trimmed off its result."""
    total = ds.dimensions.get(dim, 0)
    out = func(ds, *args, **kwargs)
    if not isinstance(out, Dataset):
        raise InvalidInputError(
            f"map_overlap's function returned a {type(out).__name__} for partition "
            f"{label!r}: return a Dataset"
        )
    if out.dimensions.get(dim, 0) != total:
        raise InvalidInputError(
            f"map_overlap's function returned {out.dimensions.get(dim, 0)} rows along {dim!r} "
            f"for partition {label!r} given {total}: it must keep the rows (the halo is trimmed "
            "after it)"
        )
    return out.isel({dim: slice(head, total - tail)})


def overlap_task(
    source: ReadSource,
    halo: Halo,
    variables: tuple[str, ...],
    immutable: Mapping[str, Any] | None,
    constant: Any,
    func: Callable[..., Dataset],
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
    label: str,
) -> Dataset:
    """Read a partition with its halo, apply ``func``, trim the halo."""
    chunks = sync(_read_pieces(source, halo.pieces, variables))
    columns: dict[str, numpy.ndarray] = {}
    schema = source.config.schema
    for name in variables:
        parts = [c[name] for c in chunks]
        dtype = schema[name].dtype
        if halo.pad_before or halo.pad_after:
            shape = parts[0].shape[1:] if parts else ()
            pad_b = pad_rows(name, dtype, (halo.pad_before, *shape), constant)
            pad_a = pad_rows(name, dtype, (halo.pad_after, *shape), constant)
            parts = [pad_b, *parts, pad_a]
        if parts:
            columns[name] = numpy.concatenate(parts)
        else:
            dims = schema.all_dimensions()
            trailing = tuple(dims[d].size or 0 for d in schema[name].dimensions[1:])
            columns[name] = numpy.empty((0, *trailing), dtype=dtype)
    ds = _dataset(source, columns, immutable)
    if not halo.pieces:
        return ds  # a time range kept no row of this partition: nothing to compute
    head = halo.pad_before + halo.before
    tail = halo.pad_after + halo.after
    return _run_and_trim(ds, source.config.axis, head, tail, func, args, kwargs, label)


def pad_rows(name: str, dtype: numpy.dtype[Any], shape: tuple[int, ...], constant: Any) -> Any:
    """Rows of ``constant`` (NaT for datetimes) for variable ``name`` of ``dtype``.

    Raises
    ------
    InvalidInputError
        When ``dtype`` cannot hold ``constant`` (NaN or 300 into ``uint8``):
        numpy would pad with garbage, or fail with a bare error.
    """
    if dtype.kind in "mM":
        return numpy.full(shape, numpy.array("NaT", dtype=dtype)[()], dtype=dtype)
    if not shape[0]:
        return numpy.empty(shape, dtype=dtype)
    with numpy.errstate(invalid="raise", over="raise"):
        try:
            cast = numpy.array(constant).astype(dtype)
            fits = bool(cast == constant) or bool(cast != cast and constant != constant)
        except (ValueError, TypeError, OverflowError, FloatingPointError):
            fits = False
    if not fits:
        raise InvalidInputError(
            f"boundary {constant!r} does not fit variable {name!r} ({dtype}): pad with a "
            "value of its dtype, or leave the variable out (variables=)"
        )
    return numpy.full(shape, constant, dtype=dtype)


def _padding(ds: Dataset, dim: str, rows: int, constant: Any) -> Dataset:
    """``rows`` rows of ``constant`` (NaT for datetimes) shaped like ``ds``'s rows."""
    empty = ds.isel({dim: slice(0, 0)})
    padded = {}
    for path, var in empty.walk():
        if var.dimensions[:1] != (dim,):
            continue
        padded[path] = var.with_data(pad_rows(path, var.dtype, (rows, *var.shape[1:]), constant))
    return empty.with_variables(padded)


def persisted_overlap_task(
    parts: list[Dataset],
    pieces: tuple[tuple[int, int], ...],
    before: int,
    after: int,
    pad: tuple[int, int],
    constant: Any,
    dim: str,
    func: Callable[..., Dataset],
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
    label: str,
) -> Dataset:
    """A persisted partition with its halo (rows ``pieces`` of ``parts``), ``func``, trimmed."""
    chunks = [ds.isel({dim: slice(a, b)}) for ds, (a, b) in zip(parts, pieces, strict=True)]
    if pad[0]:
        chunks.insert(0, _padding(parts[0], dim, pad[0], constant))
    if pad[1]:
        chunks.append(_padding(parts[-1], dim, pad[1], constant))
    ds = Dataset.concat(chunks, dim)
    if ds.dimensions.get(dim, 0) == before + after + pad[0] + pad[1]:
        return ds.isel({dim: slice(0, 0)})  # a persisted partition without rows
    return _run_and_trim(ds, dim, pad[0] + before, pad[1] + after, func, args, kwargs, label)


class MapOverlap(ZExpr):
    """Apply ``func`` to every partition extended by a halo of its neighbours' rows.

    Parameters (operands)
    ---------------------
    source : ReadSource
    catalog : Catalog
        The output partitions (the selection).
    total : int
    variables : tuple of str
    halos : tuple of Halo
        One per partition of ``catalog``.
    constant : scalar or None
        The padding beyond the collection's ends (``None``: no padding).
    func, args, kwargs
    """

    _parameters = [
        "source",
        "catalog",
        "total",
        "variables",
        "halos",
        "constant",
        "func",
        "args",
        "kwargs",
    ]
    _defaults = {"constant": None, "args": (), "kwargs": None}
    _prefix = "zc-overlap"

    @property
    def source(self) -> ReadSource:
        return self.operand("source")  # type: ignore[no-any-return]

    @property
    def catalog(self) -> Catalog:
        import dataclasses as dc

        cat: Catalog = self.operand("catalog")
        # The function may change the values: the axis stats no longer hold.
        return dc.replace(cat, has_stats=False, rows=numpy.full(len(cat), -1, dtype="int64"))

    @property
    def total(self) -> int:
        return self.operand("total")  # type: ignore[no-any-return]

    @property
    def variables(self) -> tuple[str, ...]:
        return self.operand("variables")  # type: ignore[no-any-return]

    def _simplify_up(self, parent: Expr, dependents: Mapping[str, Any]) -> Expr | None:
        return None

    def describe(self) -> list[str]:
        func = self.operand("func")
        halos = self.operand("halos")
        rows = sum(h.before + h.after for h in halos)
        return [
            f"MapOverlap {getattr(func, '__qualname__', func)!s}: {len(halos)} partition(s), "
            f"{rows:,} halo row(s) read",
            f"  variables: {', '.join(self.variables)}",
        ]

    def _layer(self) -> dict[Any, Any]:
        source = self.source
        schema = source.config.schema
        part_vars = tuple(v for v in self.variables if not schema[v].immutable)
        imm = tuple(v for v in self.variables if schema[v].immutable)
        src = DataNode(None, source)
        layer: dict[Any, Any] = {}
        imm_ref = None
        if imm:
            key = (f"{self._name}-immutable", 0)
            path = self.operand("catalog").immutable or IMMUTABLE_PATH
            layer[key] = Task(key, read_immutable_task, src, path, imm)
            imm_ref = TaskRef(key)
        cat: Catalog = self.operand("catalog")
        encode = source.config.partitioning.encode
        func, args = self.operand("func"), tuple(self.operand("args"))
        kwargs = dict(self.operand("kwargs") or {})
        for i, halo in enumerate(self.operand("halos")):
            key = (self._name, i)
            layer[key] = Task(
                key,
                overlap_task,
                src,
                halo,
                part_vars,
                imm_ref,
                self.operand("constant"),
                func,
                args,
                kwargs,
                encode(cat.key_tuple(i)),
            )
        return layer


class PersistedOverlap(ZExpr):
    """``map_overlap`` over persisted partitions: the halo is sliced from their neighbours.

    The persisted partitions, in key order, are the array (nothing is read):
    output partition ``i`` is partition ``i`` extended by rows of the persisted
    partitions around it (planned on the client, ``dask_zcollection._overlap``).

    Parameters (operands)
    ---------------------
    frame : Persisted
    halos : tuple
        Per partition: ``(pieces, before, after, pad_before, pad_after)``, where
        ``pieces`` are ``(partition, start, stop)`` of the persisted partitions.
    constant : scalar or None
    func, args, kwargs
    """

    _parameters = ["frame", "halos", "constant", "func", "args", "kwargs"]
    _defaults = {"constant": None, "args": (), "kwargs": None}
    _prefix = "zc-overlap-persisted"

    @property
    def catalog(self) -> Catalog:
        import dataclasses as dc

        cat: Catalog = self.frame.catalog
        return dc.replace(cat, has_stats=False, rows=numpy.full(len(cat), -1, dtype="int64"))

    def _simplify_up(self, parent: Expr, dependents: Mapping[str, Any]) -> Expr | None:
        return None

    def describe(self) -> list[str]:
        func = self.operand("func")
        halos = self.operand("halos")
        rows = sum(h[1] + h[2] for h in halos)
        return [
            f"MapOverlap {getattr(func, '__qualname__', func)!s}: {len(halos)} persisted "
            f"partition(s), {rows:,} halo row(s) sliced from their neighbours"
        ] + ["  " + x for x in self.frame.describe()]

    def _layer(self) -> dict[Any, Any]:
        frame = self.frame
        dim = self.source.config.axis
        encode = self.source.config.partitioning.encode
        cat = frame.catalog
        func, args = self.operand("func"), tuple(self.operand("args"))
        kwargs = dict(self.operand("kwargs") or {})
        layer: dict[Any, Any] = {}
        for i, (pieces, before, after, pad_b, pad_a) in enumerate(self.operand("halos")):
            key = (self._name, i)
            refs = List(*(TaskRef((frame._name, j)) for j, _, _ in pieces))
            layer[key] = Task(
                key,
                persisted_overlap_task,
                refs,
                tuple((a, b) for _, a, b in pieces),
                before,
                after,
                (pad_b, pad_a),
                self.operand("constant"),
                dim,
                func,
                args,
                kwargs,
                encode(cat.key_tuple(i)),
            )
        return layer
