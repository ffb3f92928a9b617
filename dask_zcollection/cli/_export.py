"""Writing a query's result to a file: netCDF, Zarr, Parquet or CSV.

netCDF and Zarr keep the collection's structure (through xarray; nested groups
as a ``DataTree``). Parquet and CSV hold one table, in the *long format*
documented in ``docs/cli.md``: one row per index along the axis, and for
variables with a second dimension one row per (axis index, second index),
with a column named after the second dimension holding its coordinate values
(the immutable variable of that name when it is selected) or its indices.
Variables along the axis repeat on the rows of their axis index. A selection
that one table cannot hold (3-D variables, two different second dimensions,
an immutable variable other than the coordinate) is refused before anything
is read.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import os
import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy

from ..errors import InvalidInputError
from ..schema import Schema
from ..store import StoreSpec, local_root

__all__ = ["FORMATS", "TableLayout", "format_of", "long_table", "table_layout", "write"]

#: File extension -> output format.
FORMATS = {
    ".nc": "netcdf",
    ".nc4": "netcdf",
    ".zarr": "zarr",
    ".parquet": "parquet",
    ".pq": "parquet",
    ".csv": "csv",
}
#: Partitions computed at once when streaming a table.
BATCH = 4


def format_of(path: str, explicit: str | None = None) -> str:
    """The output format of ``path`` (from its extension unless ``explicit``)."""
    if explicit is not None:
        return explicit
    suffix = Path(path.rstrip("/")).suffix.lower()
    try:
        return FORMATS[suffix]
    except KeyError:
        known = ", ".join(sorted(FORMATS))
        raise InvalidInputError(
            f"cannot tell the output format of {path!r} from its extension "
            f"(known: {known}); pass --format"
        ) from None


@dataclasses.dataclass(frozen=True, slots=True)
class TableLayout:
    """How a selection of variables maps to the long table.

    Attributes
    ----------
    columns : tuple of str
        Variable paths along the axis, in order (1-D and 2-D).
    second : str or None
        The second dimension of the 2-D variables (``None``: all 1-D).
    coordinate : str or None
        The immutable variable giving the values of ``second`` (else indices).
    """

    columns: tuple[str, ...]
    second: str | None
    coordinate: str | None


def table_layout(schema: Schema, variables: Sequence[str], axis: str) -> TableLayout:
    """Check that ``variables`` fit one long table; the layout, or a clear refusal.

    Raises
    ------
    InvalidInputError
        Naming the variables that do not fit, and why.
    """
    columns: list[str] = []
    immutable: list[str] = []
    seconds: dict[str, list[str]] = {}
    for path in variables:
        spec = schema[path]
        if spec.immutable:
            immutable.append(path)
            continue
        if len(spec.dimensions) > 2:
            raise InvalidInputError(
                f"a table holds at most 2-D variables: {path!r} is "
                f"{spec.dimensions}; choose variables with --vars, or write .nc/.zarr"
            )
        if len(spec.dimensions) == 2:
            seconds.setdefault(spec.dimensions[1], []).append(path)
        columns.append(path)
    if len(seconds) > 1:
        described = "; ".join(f"{dim}: {', '.join(paths)}" for dim, paths in seconds.items())
        raise InvalidInputError(
            f"a table has one second dimension, these variables have {len(seconds)} "
            f"({described}); choose variables of one with --vars, or write .nc/.zarr"
        )
    second = next(iter(seconds), None)
    coordinate = None
    for path in immutable:
        spec = schema[path]
        if second is not None and spec.dimensions == (second,):
            coordinate = path
            continue
        raise InvalidInputError(
            f"the immutable variable {path!r} {spec.dimensions} does not lie along {axis!r}: "
            "a table cannot hold it (leave it out with --vars, or write .nc/.zarr)"
        )
    if not columns:
        raise InvalidInputError(f"no variable along {axis!r} selected: nothing to tabulate")
    return TableLayout(tuple(columns), second, coordinate)


def long_table(ds: Any, layout: TableLayout) -> Any:
    """One partition (a :class:`~dask_zcollection.Dataset`) as a long ``pandas.DataFrame``."""
    import pandas

    arrays = {p: numpy.asarray(ds[p].values) for p in layout.columns}
    if layout.second is None:
        return pandas.DataFrame(arrays, columns=list(layout.columns))
    n = len(next(iter(arrays.values())))
    width = next(a.shape[1] for a in arrays.values() if a.ndim == 2)
    if layout.coordinate is not None:
        coord = numpy.asarray(ds[layout.coordinate].values)
    else:
        coord = numpy.arange(width)
    out: dict[str, Any] = {}
    for path, values in arrays.items():
        out[path] = values.reshape(-1) if values.ndim == 2 else numpy.repeat(values, width)
    frame = pandas.DataFrame(out)
    # The second dimension's column comes right after the first column (the axis, usually).
    frame.insert(min(1, len(frame.columns)), layout.second, numpy.tile(coord, n))
    return frame


def _needs(module: str, what: str, extra: str) -> None:
    if importlib.util.find_spec(module) is None:
        raise ImportError(f"{what} needs {module}: pip install 'dask_zcollection[{extra}]'")


def write(
    lazy: Any,
    path: str,
    fmt: str,
    *,
    overwrite: bool = False,
) -> tuple[int, int | None]:
    """Write the selection ``lazy`` to ``path`` as ``fmt``.

    Tables (parquet, csv) are written partition by partition, so memory holds
    a few partitions at a time; netCDF and Zarr stream the dask arrays of
    :meth:`~dask_zcollection.LazyCollection.to_xarray`. The output is written
    aside and renamed into place: an error leaves no partial file, and an
    ``overwrite`` replaces the old output only once the new one is complete.

    Returns
    -------
    (int, int or None)
        Rows along the axis, and rows of the table (``None`` for netCDF and Zarr).
    """
    config = lazy.source.config
    layout = None
    if fmt in ("parquet", "csv"):
        layout = table_layout(config.schema, lazy.variables, config.axis)
        if fmt == "parquet":
            _needs("pyarrow", "writing Parquet", "parquet")
    elif fmt == "netcdf":
        if not (_has("h5netcdf") or _has("netCDF4")):
            raise ImportError(
                "writing netCDF needs h5netcdf: pip install 'dask_zcollection[netcdf]'"
            )
    elif fmt != "zarr":
        raise InvalidInputError(f"unknown output format {fmt!r} (netcdf, zarr, parquet, csv)")
    target = Path(path)
    _check_outside(lazy.source, target)
    if target.exists() and not overwrite:
        raise InvalidInputError(f"{path} exists; pass --overwrite to replace it")
    tmp = Path(f"{path}.part-{os.getpid()}")
    table_rows: int | None = None
    try:
        if layout is not None:
            rows, table_rows = _write_table(lazy, layout, tmp, fmt)
        else:
            data = lazy.to_xarray()
            along = [p for p in lazy.variables if not config.schema[p].immutable]
            rows = int(data[along[0]].shape[0]) if along else 0
            if fmt == "netcdf":
                data.to_netcdf(tmp, engine="h5netcdf" if _has("h5netcdf") else None)
            else:
                # Zarr needs one chunk size per dimension; partitions end in short chunks.
                data = _uniform_chunks(data)
                data.to_zarr(tmp, mode="w-", consolidated=False)
        if target.is_dir():
            shutil.rmtree(target)
        elif target.exists():
            target.unlink()
        os.replace(tmp, target)
    finally:
        if tmp.is_dir():
            shutil.rmtree(tmp)
        elif tmp.exists():
            tmp.unlink()
    return rows, table_rows


def _local_roots(source: Any) -> list[Path]:
    """The local directories the read ``source`` takes its data from (views: base and view)."""
    specs = [getattr(source, "spec", None)]
    specs += [getattr(getattr(source, side, None), "spec", None) for side in ("base", "overlay")]
    roots = (local_root(spec) for spec in specs if isinstance(spec, StoreSpec))
    return [Path(root) for root in roots if root is not None]


def _check_outside(source: Any, target: Path) -> None:
    """Refuse an output that is, holds or lies inside the collection read.

    Replacing it (``--overwrite``) would delete committed partitions, or the
    whole collection, once the export is written; writing inside it leaves
    foreign files in its tree.
    """
    out = Path(os.path.realpath(target))
    for root in _local_roots(source):
        if out == root or root in out.parents or out in root.parents:
            raise InvalidInputError(
                f"the output {target} overlaps the collection read ({root}): "
                "write the export outside the collection"
            )


def _uniform_chunks(data: Any) -> Any:
    """``data`` (a Dataset or DataTree) rechunked to one chunk size per dimension."""

    def uniform(ds: Any) -> Any:
        sizes: dict[str, int] = {}
        for var in ds.variables.values():
            for dim, chunks in zip(var.dims, var.chunks or (), strict=False):
                if len(set(chunks[:-1])) > 1 or (len(chunks) > 1 and chunks[-1] > chunks[0]):
                    sizes[dim] = max(sizes.get(dim, 0), *chunks)
        return ds.chunk(sizes) if sizes else ds

    if hasattr(data, "map_over_datasets"):
        return data.map_over_datasets(uniform)
    return uniform(data)


def _has(module: str) -> bool:
    return importlib.util.find_spec(module) is not None


def _write_table(lazy: Any, layout: TableLayout, path: Path, fmt: str) -> tuple[int, int]:
    """The long table of ``lazy`` at ``path``, a few partitions at a time.

    Returns (rows along the axis, rows of the table).
    """
    import dask

    parts = lazy.to_delayed()
    rows = table_rows = 0
    writer: Any = None
    try:
        with open(path, "wb") as out:
            for start in range(0, len(parts), BATCH):
                for ds in dask.compute(*parts[start : start + BATCH]):
                    frame = long_table(ds, layout)
                    if fmt == "csv":
                        frame.to_csv(out, header=writer is None, index=False)
                        writer = True  # the header is written
                    else:
                        import pyarrow
                        import pyarrow.parquet

                        table = pyarrow.Table.from_pandas(frame, preserve_index=False)
                        if writer is None:
                            writer = pyarrow.parquet.ParquetWriter(out, table.schema)
                        writer.write_table(table)
                    rows += len(ds[layout.columns[0]].values)
                    table_rows += len(frame)
            if fmt == "parquet" and writer is not None:
                writer.close()
    finally:
        if fmt == "parquet" and writer is not None:
            writer.close()
    return rows, table_rows
