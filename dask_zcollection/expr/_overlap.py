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
from ._dask import DataNode, Expr, Task, TaskRef
from ._read import ZExpr, _dataset, read_immutable_task

__all__ = ["Halo", "MapOverlap"]


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

    pieces: tuple[tuple[str, int, int, int], ...]
    before: int
    after: int
    pad_before: int = 0
    pad_after: int = 0


async def _read_pieces(
    source: ReadSource, pieces: tuple[tuple[str, int, int, int], ...], variables: tuple[str, ...]
) -> list[dict[str, numpy.ndarray]]:
    """Each piece's rows of ``variables``, read concurrently (the halo and the partition)."""
    import asyncio

    return list(
        await asyncio.gather(
            *(
                read_partition(source, (path, rows, True), variables, None, ((a, b),))
                for path, rows, a, b in pieces
            )
        )
    )


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
            fill = numpy.array("NaT", dtype=dtype)[()] if dtype.kind in "mM" else constant
            pad_b = numpy.full((halo.pad_before, *shape), fill, dtype=dtype)
            pad_a = numpy.full((halo.pad_after, *shape), fill, dtype=dtype)
            parts = [pad_b, *parts, pad_a]
        if parts:
            columns[name] = numpy.concatenate(parts)
        else:
            dims = schema.all_dimensions()
            trailing = tuple(dims[d].size or 0 for d in schema[name].dimensions[1:])
            columns[name] = numpy.empty((0, *trailing), dtype=dtype)
    ds = _dataset(source, columns, immutable)
    dim = source.config.axis
    total = ds.dimensions.get(dim, 0)
    if not halo.pieces:
        return ds  # a time range kept no row of this partition: nothing to compute
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
    head = halo.pad_before + halo.before
    tail = halo.pad_after + halo.after
    return out.isel({dim: slice(head, total - tail)})


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
