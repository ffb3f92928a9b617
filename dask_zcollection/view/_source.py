"""The read source of a view: the base's partitions joined with the overlay's.

A :class:`ViewSource` is a :class:`~dask_zcollection.io.ReadSource` (so the
lazy collection, its expressions and their rewrite rules are those of a
collection) whose reads split the wanted variables by side: base variables are
read from the base store, overlay variables from the view store, each side
only when a variable of it is wanted. A partition the view has not computed
reads as its variables' fill values, with the base partition's length; one
computed from a base partition that changed since is *stale*
(:class:`~dask_zcollection.errors.StalePartitionError`, or fill values with
``stale="fill"``).
"""

from __future__ import annotations

import asyncio
import dataclasses
import functools
import json
from collections.abc import Mapping, Sequence
from typing import Any, Literal

import numpy

from ..catalog import Catalog
from ..catalog._transaction import TXN_ATTR
from ..errors import CorruptedDataError, PartitionNotFoundError, StalePartitionError, StorageError
from ..io import Part, ReadSource, RowRanges, TimeRange, clip_ranges, row_range
from ..io._partition import gone, identity_of
from ..schema import Schema

__all__ = ["BASE_ATTR", "Computed", "StaleMode", "ViewSource", "check_stale", "fill_array"]

#: Attribute of an overlay partition group recording what it was computed from:
#: ``{"path": base partition path, "rows": base rows, "txn": its _zc_txn or null}``.
BASE_ATTR = "_zc_view_base"

StaleMode = Literal["raise", "fill"]
#: Overlay partitions by canonical path: ``(path in the view store, rows)`` (``-1``: unknown).
Computed = tuple[tuple[str, str, int], ...]


def fill_array(schema: Schema, name: str, rows: int) -> numpy.ndarray:
    """``rows`` rows of variable ``name`` all at its fill value (zero when it has none)."""
    var = schema[name]
    dims = schema.all_dimensions()
    tail = tuple(dims[d].size or 0 for d in var.dimensions[1:])
    fill = var.fill_value
    if fill is None:
        return numpy.zeros((rows, *tail), dtype=var.dtype)
    return numpy.full((rows, *tail), fill, dtype=var.dtype)


async def group_attrs(source: ReadSource, path: str) -> dict[str, Any] | None:
    """Attributes of the group at ``path`` (``None``: no group)."""
    raw = await source.spec.get(f"{path}/zarr.json")
    if raw is None:
        return None
    return dict(json.loads(raw).get("attributes", {}))


def check_stale(
    record: Mapping[str, Any] | None,
    overlay_rows: int,
    base_path: str,
    base_rows: int,
    base_txn: str | None,
) -> str | None:
    """Why an overlay partition is stale against the base partition (``None``: it is not).

    ``record`` is the overlay group's :data:`BASE_ATTR` (absent from views of
    the reference implementation, judged by their row count alone).
    """
    if overlay_rows != base_rows:
        return f"computed over {overlay_rows} rows, the base partition now has {base_rows}"
    if record is None:
        return None
    if record.get("path") != base_path or record.get("txn") != base_txn:
        return (
            f"computed from base version {record.get('txn') or record.get('path')!r}, "
            f"the base partition is now {base_txn or base_path!r}"
        )
    return None


@dataclasses.dataclass(frozen=True)
class ViewSource(ReadSource):
    """Where a view's data comes from: the base source, the overlay source, which variable where.

    ``spec`` is the base's store and ``config`` the base's descriptor with the
    overlay variables added (the catalog the planner prunes is the base's).

    Attributes
    ----------
    base : ReadSource
        The base collection.
    overlay : ReadSource
        The view store, with the overlay variables' schema.
    url : str
        The view's URL (for messages).
    overlay_catalog : Catalog
        The view's catalog: its computed partitions (path in the view store, rows).
    stale : {"raise", "fill"}
        What reading a stale partition does.
    """

    base: ReadSource
    overlay: ReadSource
    url: str
    overlay_catalog: Catalog
    stale: StaleMode = "raise"

    @functools.cached_property
    def _token(self) -> str:
        from dask.base import tokenize

        return str(
            tokenize(
                "ViewSource",
                self.base._token,
                self.overlay._token,
                self.overlay_catalog,
                self.stale,
            )
        )

    @functools.cached_property
    def computed(self) -> Computed:
        """``(canonical, overlay path, rows)`` of every computed partition.

        Encodes every key: the read path looks partitions up by key instead
        (a view of thousands of partitions read for one).
        """
        cat, encode = self.overlay_catalog, self.config.partitioning.encode
        return tuple(
            (encode(cat.key_tuple(i)), cat.paths[i], int(cat.rows[i])) for i in range(len(cat))
        )

    @functools.cached_property
    def _positions(self) -> dict[tuple[int, ...], int]:
        return {tuple(k): i for i, k in enumerate(self.overlay_catalog.keys.tolist())}

    def _entry(self, path: str) -> tuple[tuple[int, ...], str, int] | None:
        """``(key, overlay path, rows)`` of the view partition over the base one at ``path``.

        By key, not by path text: a base path written unpadded (``month=1``)
        is the view's ``month=01``.
        """
        key = tuple(int(v) for v in self.config.partitioning.decode(path.partition("@")[0]))
        i = self._positions.get(key)
        if i is None:
            return None
        return key, self.overlay_catalog.paths[i], int(self.overlay_catalog.rows[i])

    @functools.cached_property
    def overlay_variables(self) -> frozenset[str]:
        """Paths of the variables the view store holds."""
        return frozenset(p for p, _ in self.overlay.config.schema.walk())

    @property
    def io(self) -> Any:
        # Row counts and the axis (to_dask_array, time ranges) are the base's.
        return self.base.io

    def describe(self, variables: Sequence[str]) -> list[str]:
        mine = [v for v in variables if v in self.overlay_variables]
        theirs = [v for v in variables if v not in self.overlay_variables]
        return [
            f"from base {self.base.spec.url}: {', '.join(theirs) or '(nothing)'}",
            f"from view {self.url} ({len(self.overlay_catalog)} partition(s) computed, others "
            f"fill values): {', '.join(mine) or '(nothing)'}",
        ]

    # -- reads -------------------------------------------------------------------------------
    async def read_many(
        self,
        parts: Sequence[Part],
        variables: Sequence[str],
        time_range: TimeRange | None,
        *,
        concat: bool,
        rows: Sequence[RowRanges | None] | None = None,
    ) -> list[dict[str, numpy.ndarray]]:
        mine = [v for v in variables if v in self.overlay_variables]
        if not mine:  # base variables only: never touch the view store
            return await self.base.read_many(parts, variables, time_range, concat=concat, rows=rows)
        theirs = [v for v in variables if v not in self.overlay_variables]
        results = await asyncio.gather(
            *(
                self._read_part(p, theirs, mine, time_range, None if rows is None else rows[k])
                for k, p in enumerate(parts)
            )
        )
        ordered = [{v: r[v] for v in variables} for r in results]
        if not concat or len(ordered) == 1:  # one partition: no copy
            return ordered
        schema = self.config.schema
        return [
            {
                v: numpy.concatenate([r[v] for r in ordered])
                if ordered
                else fill_array(schema, v, 0)
                for v in variables
            }
        ]

    async def read_rows(
        self, path: str, name: str, start: int, stop: int, txn: str = ""
    ) -> numpy.ndarray:
        if name not in self.overlay_variables:
            return await self.base.read_rows(path, name, start, stop, txn)
        rows = await self._base_rows(path, txn)
        out = await self._read_overlay(path, [name], rows, start, stop, txn)
        return out[name]

    async def _base_rows(self, path: str, txn: str = "") -> int:
        axis = self.base.config.axis_variable
        (handle,) = await self.base.io.open_partition(path, [axis], txn)
        return int(handle.shape[0])

    async def _read_part(
        self,
        part: Part,
        theirs: list[str],
        mine: list[str],
        time_range: TimeRange | None,
        selection: RowRanges | None = None,
    ) -> dict[str, numpy.ndarray]:
        path, rows, inside, txn = part

        async def base_side() -> dict[str, numpy.ndarray]:
            if not theirs:
                return {}
            return (
                await self.base.read_many(
                    [part], theirs, time_range, concat=False, rows=[selection]
                )
            )[0]

        async def overlay_side() -> dict[str, numpy.ndarray]:
            n = rows if rows >= 0 else await self._base_rows(path, txn)
            start, stop = 0, n
            if time_range is not None and not inside:
                axis = self.base.config.axis_variable
                values = (await self.base.io.read(path, [axis], stop=n, txn=txn))[axis]
                start, stop = row_range(values, time_range)
            if selection is None:
                return await self._read_overlay(path, mine, n, start, stop, txn)
            # An index's row ranges: the span holding them, then the ranges.
            pieces = clip_ranges((start, stop), selection)
            lo, hi = (pieces[0][0], pieces[-1][1]) if pieces else (start, start)
            span = await self._read_overlay(path, mine, n, lo, hi, txn)
            return {
                v: numpy.concatenate([a[x - lo : y - lo] for x, y in pieces]) if pieces else a
                for v, a in span.items()
            }

        # Both sides at once: their requests overlap.
        base, overlay = await asyncio.gather(base_side(), overlay_side())
        return {**base, **overlay}

    async def _read_overlay(
        self, path: str, names: list[str], rows: int, start: int, stop: int, txn: str = ""
    ) -> dict[str, numpy.ndarray]:
        """Rows ``start:stop`` of overlay ``names`` of the partition whose base is at ``path``.

        ``txn``: the identity of the base partition's group the base catalog records.
        """
        schema = self.config.schema
        entry = self._entry(path)
        if entry is None:
            return {v: fill_array(schema, v, stop - start) for v in names}
        key, opath, orows = entry
        io = self.overlay.io
        # The arrays and both groups' attributes (the staleness record) at once.
        handles, own, theirs = await asyncio.gather(
            asyncio.gather(*(io.open_handle(f"{opath}/{v}", v) for v in names)),
            group_attrs(self.overlay, opath),
            group_attrs(self.base, path),
        )
        if txn and identity_of(theirs) != txn:  # the base version read was collected
            raise PartitionNotFoundError(
                gone(path, self.base.spec.url, txn, identity_of(theirs) or None)
            )
        # The view partition its catalog names (its group may have been collected too).
        mine = self.overlay_catalog.identity(self._positions[key])
        await io.check_identity(opath, mine, handles)
        stored = orows if orows >= 0 else int(handles[0].shape[0])
        record = (own or {}).get(BASE_ATTR)
        reason = check_stale(record, stored, path, rows, (theirs or {}).get(TXN_ATTR))
        if reason is not None:
            if self.stale == "fill":
                return {v: fill_array(schema, v, stop - start) for v in names}
            canonical = self.config.partitioning.encode(key)
            raise StalePartitionError(
                f"view {self.url}: partition {canonical!r} is stale ({reason}); recompute it "
                "with View.update, or read fill values with stale='fill'",
                canonical,
            )
        out = {}
        for v, handle in zip(names, handles, strict=True):
            target = numpy.empty((stop - start, *handle.shape[1:]), dtype=schema[v].dtype)
            try:
                await handle.read_into(start, stop, target)
            except CorruptedDataError:
                raise  # names the chunk already
            except OSError as err:
                raise StorageError(f"cannot read {handle.key!r} of view {self.url}: {err}") from err
            out[v] = target
        return out
