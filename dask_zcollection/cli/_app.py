"""The ``dzc`` commands (click), with rich tables and progress on the terminal.

Each command opens the collection through the public API
(:func:`~dask_zcollection.open_collection`), so what the command line does is
what a script does. Output for people goes to stdout as rich tables; with
``--json`` stdout holds one JSON document and nothing else. Progress and
errors go to stderr.
"""

from __future__ import annotations

import importlib
import json
import math
import os
import sys
import traceback
import warnings
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click
import numpy
from dask.callbacks import Callback

from .. import errors
from .._display import size_of
from .._sync import sync
from ..api import Collection, open_collection
from ..catalog import Catalog
from ..collection import LazyCollection
from ..data._repr import format_bytes
from ..store import resolve_store
from ..view._config import VIEW_CONFIG_KEY
from . import _export
from ._view import add_view_commands

if TYPE_CHECKING:
    from ..view._api import View

__all__ = ["cli", "main"]

#: Exit code of a library error (usage errors exit with click's 2).
EXIT_ERROR = 1
EXIT_USAGE = 2
#: Storage adapters by class name -> the backend name shown.
_BACKENDS = {
    "LocalStore": "file",
    "MemoryStore": "memory",
    "ObjectStore": "obstore",
    "FsspecStore": "fsspec",
    "IcechunkStore": "icechunk",
}


# -- options shared by the commands -------------------------------------------------------------
def _parse_option(text: str) -> tuple[str, Any]:
    key, sep, raw = text.partition("=")
    if not sep or not key:
        raise click.BadParameter(f"{text!r}: expected KEY=VALUE", param_hint="--storage-option")
    try:  # true, 3, {"region_name": "x"}: JSON values; anything else is a string
        value: Any = json.loads(raw)
    except ValueError:
        value = raw
    return key.strip(), value


def storage_options(values: Sequence[str]) -> dict[str, Any] | None:
    """``--storage-option k=v`` (repeated) as a dict; values are JSON when they parse."""
    if not values:
        return None
    return dict(_parse_option(v) for v in values)


def _url_command(func: Callable[..., Any]) -> Callable[..., Any]:
    """The URL argument and ``--storage-option`` of every command."""
    func = click.option(
        "--storage-option",
        "-o",
        "options",
        multiple=True,
        metavar="KEY=VALUE",
        help="Backend option (repeatable), e.g. -o endpoint=http://localhost:9000. "
        "Values are JSON when they parse (true, 3, {...}).",
    )(func)
    func = click.option(
        "--debug", is_flag=True, expose_value=False, help="Show the traceback of an error."
    )(func)  # read by main() from argv: it must work after the command name too
    return click.argument("url")(func)


def _json_option(func: Callable[..., Any]) -> Callable[..., Any]:
    return click.option("--json", "as_json", is_flag=True, help="Print one JSON document.")(func)


def _at_option(func: Callable[..., Any]) -> Callable[..., Any]:
    return click.option(
        "--at",
        "version",
        metavar="REF",
        default=None,
        help="Icechunk only: read as of a snapshot id, tag or branch.",
    )(func)


def _yes_option(func: Callable[..., Any]) -> Callable[..., Any]:
    return click.option("--yes", is_flag=True, help="Confirm a destructive command.")(func)


def _require_yes(yes: bool, what: str, *, dry_run: bool = True) -> None:
    if not yes:
        hint = " (or --dry-run to see what it does)" if dry_run else ""
        raise click.UsageError(f"{what}: pass --yes to confirm{hint}")


def _is_view(url: str, options: Mapping[str, Any] | None) -> bool:
    return bool(sync(resolve_store(url, options).exists(VIEW_CONFIG_KEY)))


def _open(url: str, options: Sequence[str], **kwargs: Any) -> Collection:
    opts = storage_options(options)
    try:
        return open_collection(url, storage_options=opts, **kwargs)
    except errors.CollectionNotFoundError as err:
        # A view's URL given to a collection command: say so (one more request, on failure only).
        if _is_view(url, opts):
            raise errors.CollectionNotFoundError(
                f"{url} is a view, not a collection ({VIEW_CONFIG_KEY}): the commands taking "
                "a view are `dzc view ls`, `dzc view update` and `dzc repair`"
            ) from err
        raise


# -- output ---------------------------------------------------------------------------------------
def _console(stderr: bool = False) -> Any:
    from rich.console import Console

    # No markup: paths, dtypes ("datetime64[ns]") and attributes are printed as they are.
    return Console(stderr=stderr, highlight=False, markup=False)


def _iso(value: numpy.datetime64) -> str:
    """``2024-03-01T06:00:00`` (no trailing zero fractions)."""
    text = str(value)
    return text.rstrip("0").rstrip(".") if "." in text else text


def _jsonable(value: Any) -> Any:
    if isinstance(value, numpy.datetime64):
        return None if numpy.isnat(value) else _iso(value)
    if isinstance(value, numpy.timedelta64):
        return None if numpy.isnat(value) else str(value)
    if isinstance(value, numpy.integer):
        return int(value)
    if isinstance(value, numpy.floating):
        return None if numpy.isnan(value) else float(value)
    if isinstance(value, numpy.bool_):
        return bool(value)
    if isinstance(value, numpy.ndarray):
        return [_jsonable(v) for v in value] if value.dtype.kind in "mM" else value.tolist()
    if isinstance(value, numpy.dtype):
        return str(value)
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    if hasattr(value, "isoformat"):
        return value.isoformat()
    return str(value)


def _print_json(doc: Any) -> None:
    click.echo(json.dumps(doc, indent=2, default=_jsonable))


def _text(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, numpy.datetime64):
        return "NaT" if numpy.isnat(value) else _iso(value)
    return str(value)


def _backend(col: Collection) -> str:
    name = type(col.aio.spec).__name__
    return _BACKENDS.get(name, name)


def _partition_rows(col: Collection, catalog: Catalog) -> list[dict[str, Any]]:
    schema = col.schema
    per_row, _ = size_of(schema, [p for p, _ in schema.walk()])
    encode = col.partitioning.encode
    rows = []
    for i in range(len(catalog)):
        n = int(catalog.rows[i])
        known = catalog.has_stats and n >= 0
        rows.append(
            {
                "partition": encode(catalog.key_tuple(i)),
                "keys": dict(zip(catalog.key_names, catalog.keys[i].tolist(), strict=True)),
                "rows": n if known else None,
                "bytes": n * per_row if known else None,
                "start": catalog.axis_min[i] if known and n else None,
                "end": catalog.axis_max[i] if known and n else None,
            }
        )
    return rows


def _time_range(lazy: LazyCollection, text: str | None) -> LazyCollection:
    """``--time a..b`` (either side may be empty) as a time filter on the axis variable."""
    if text is None:
        return lazy
    start, sep, stop = text.partition("..")
    if not sep:
        raise click.BadParameter(f"{text!r}: expected START..STOP", param_hint="--time")
    axis = lazy.source.config.axis_variable
    return lazy.filter(**{axis: slice(start.strip() or None, stop.strip() or None)})


# -- the group ------------------------------------------------------------------------------------
@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(package_name="dask_zcollection", prog_name="dzc")
@click.option("--debug", is_flag=True, help="Show the traceback of an error.")
def cli(debug: bool) -> None:
    """Look at, query and maintain dask_zcollection collections.

    URL is a collection root: file:///path, a local path, s3://bucket/prefix,
    icechunk:///path, icechunk+s3://bucket/prefix or memory://name.
    """


@cli.command("ls")
@_url_command
@click.option("--filter", "-f", "filters", default=None, help='Key filter: "year == 2024".')
@click.option("--time", "time_", default=None, metavar="START..STOP", help="Axis range.")
@_at_option
@_json_option
def ls_command(
    url: str,
    options: tuple[str, ...],
    filters: str | None,
    time_: str | None,
    version: str | None,
    as_json: bool,
) -> None:
    """List the partitions: rows, size, time range."""
    col = _open(url, options, version=version)
    lazy = _time_range(col.lazy(filters=filters), time_)
    rows = _partition_rows(col, lazy.catalog)
    if as_json:
        _print_json(rows)
        return
    from rich.table import Table

    table = Table(box=None, header_style="bold")
    table.add_column("partition")
    table.add_column("rows", justify="right")
    table.add_column("size", justify="right")
    table.add_column("start")
    table.add_column("end")
    for r in rows:
        table.add_row(
            r["partition"],
            "?" if r["rows"] is None else str(r["rows"]),
            "?" if r["bytes"] is None else format_bytes(r["bytes"]),
            "?" if r["rows"] is None else _text(r["start"]),
            "?" if r["rows"] is None else _text(r["end"]),
        )
    console = _console()
    console.print(table)
    total = sum(r["rows"] or 0 for r in rows)
    console.print(f"{len(rows)} partition(s) of {len(col.catalog())}, {total} rows")


def _info(col: Collection) -> dict[str, Any]:
    catalog = col.catalog()
    schema = col.schema
    config = col.aio.config
    per_row, fixed = size_of(schema, [p for p, _ in schema.walk()])
    total = catalog.total_rows
    full = catalog.rows > 0  # empty partitions have no axis range
    known = total >= 0 and bool(full.any())
    dims = schema.all_dimensions()
    return {
        "url": col.url,
        "backend": _backend(col),
        "format_version": config.format_version,
        "axis": col.axis,
        "axis_variable": config.axis_variable,
        "partitioning": col.partitioning.to_dict(),
        "catalog_version": catalog.version,
        "committed_at": catalog.timestamp or None,
        "partitions": len(catalog),
        "rows": total if total >= 0 else None,
        "bytes": total * per_row + fixed if total >= 0 else None,
        "start": catalog.axis_min[full].min() if known else None,
        "end": catalog.axis_max[full].max() if known else None,
        "dimensions": {
            name: {"size": d.size, "chunks": d.chunks, "shards": d.shards}
            for name, d in dims.items()
        },
        "variables": {
            path: {
                "dimensions": list(spec.dimensions),
                "dtype": str(spec.dtype),
                "fill_value": spec.fill_value,
                "immutable": spec.immutable,
                "attrs": spec.attrs,
            }
            for path, spec in schema.walk()
        },
        "groups": {"/" + path: dict(g.attrs) for path, g in schema.walk_groups() if path},
        "attrs": dict(schema.root.attrs),
    }


@cli.command("info")
@_url_command
@_at_option
@click.option(
    "--html",
    "html_path",
    type=click.Path(dir_okay=False),
    default=None,
    help="Also write the collection's HTML repr (as in a notebook) to this page.",
)
@_json_option
def info_command(
    url: str, options: tuple[str, ...], version: str | None, html_path: str | None, as_json: bool
) -> None:
    """Describe a collection: schema, partitioning, catalog version, size, backend."""
    import datetime

    col = _open(url, options, version=version)
    doc = _info(col)
    if html_path is not None:
        from .._display import standalone_html

        page = standalone_html(col.lazy(), title=f"dask_zcollection: {col.url}")
        Path(html_path).write_text(page, encoding="utf-8")
    if doc["committed_at"] is not None:
        doc["committed_at"] = datetime.datetime.fromtimestamp(
            doc["committed_at"], datetime.UTC
        ).isoformat(timespec="seconds")
    if as_json:
        _print_json(doc)
        return
    from rich.table import Table

    console = _console()
    console.print(f"{doc['url']}  ({doc['backend']})", style="bold")
    size = "?" if doc["bytes"] is None else format_bytes(doc["bytes"])
    rows = "?" if doc["rows"] is None else doc["rows"]
    lines = [
        ("partitioning", repr(col.partitioning)),
        ("axis", f"{doc['axis']} (variable {doc['axis_variable']!r})"),
        ("partitions", f"{doc['partitions']}, {rows} rows, {size}"),
        (
            "time range",
            f"{_text(doc['start'])} .. {_text(doc['end'])}"
            if doc["start"] is not None
            else ("-" if doc["rows"] == 0 else "? (no statistics in the catalog)"),
        ),
        ("catalog", f"version {doc['catalog_version']}, committed {doc['committed_at'] or '-'}"),
        ("format", f"version {doc['format_version']}"),
    ]
    for key, value in lines:
        console.print(f"  {key + ':':<14}{value}")
    table = Table(box=None, header_style="bold", title=None)
    for name in ("variable", "dimensions", "dtype", "fill", "attrs"):
        table.add_column(name)
    for path, v in doc["variables"].items():
        attrs = ", ".join(f"{k}={val!r}" for k, val in v["attrs"].items())
        table.add_row(
            path + (" (immutable)" if v["immutable"] else ""),
            "(" + ", ".join(v["dimensions"]) + ")",
            v["dtype"],
            _text(v["fill_value"]),
            attrs,
        )
    console.print(table)


@cli.command("query")
@_url_command
@click.option("--filter", "-f", "filters", default=None, help="Partition-key filter.")
@click.option("--vars", "variables", default=None, help="Comma-separated variable paths.")
@click.option("--time", "time_", default=None, metavar="START..STOP", help="Axis range.")
@click.option("--to", "target", required=True, type=click.Path(), help="out.nc|.zarr|.parquet|.csv")
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["netcdf", "zarr", "parquet", "csv"]),
    default=None,
    help="Output format (default: from the extension of --to).",
)
@click.option("--overwrite", is_flag=True, help="Replace --to when it exists.")
@_at_option
@_json_option
def query_command(
    url: str,
    options: tuple[str, ...],
    filters: str | None,
    variables: str | None,
    time_: str | None,
    target: str,
    fmt: str | None,
    overwrite: bool,
    version: str | None,
    as_json: bool,
) -> None:
    """Read a selection and write it to a file.

    CSV and Parquet hold one table in the long format of docs/cli.md (one row
    per axis index and index of the second dimension); selections one table
    cannot hold are refused.
    """
    kind = _export.format_of(target, fmt)
    names = [v.strip() for v in variables.split(",") if v.strip()] if variables else None
    if variables is not None and not names:  # "--vars ,": an empty file, not a selection
        raise click.BadParameter(f"{variables!r} names no variable", param_hint="--vars")
    col = _open(url, options, version=version)
    lazy = _time_range(col.lazy(filters=filters, variables=names), time_)
    selected = lazy.npartitions
    summary: dict[str, Any] = {
        "url": col.url,
        "partitions": selected,
        "of": len(col.catalog()),
        "variables": list(lazy.variables),
        "format": kind,
        "output": target,
        "written": False,
        "rows": 0,
    }
    if selected:
        rows, table_rows = _export.write(lazy, target, kind, overwrite=overwrite)
        summary.update(written=True, rows=rows, bytes=_size_on_disk(Path(target)))
        if table_rows is not None:
            summary["table_rows"] = table_rows
    if as_json:
        _print_json(summary)
    elif not selected:
        click.echo(f"no partition selected of {summary['of']}: nothing written", err=True)
    else:
        table = f", {summary['table_rows']} table rows" if "table_rows" in summary else ""
        click.echo(
            f"wrote {summary['rows']} rows of {len(summary['variables'])} variable(s) from "
            f"{selected} of {summary['of']} partition(s) to {target} "
            f"({kind}{table}, {format_bytes(summary['bytes'])})"
        )


def _size_on_disk(path: Path) -> int:
    if path.is_dir():
        return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())
    return path.stat().st_size


# -- writes ---------------------------------------------------------------------------------------
def load_function(spec: str) -> Callable[..., Any]:
    """``module:function`` (or ``module:Class.attr``) as the callable it names."""
    module_name, sep, attr = spec.partition(":")
    if not sep or not module_name or not attr:
        raise click.BadParameter(f"{spec!r}: expected module:function", param_hint="--func")
    if os.getcwd() not in sys.path:
        # As `python -m` does: a module of the current directory is found (the
        # console script's sys.path has only its own directory).
        sys.path.append(os.getcwd())
    try:
        obj: Any = importlib.import_module(module_name)
        for part in attr.split("."):
            obj = getattr(obj, part)
    except (ImportError, AttributeError) as err:
        raise click.BadParameter(f"cannot load {spec!r}: {err}", param_hint="--func") from err
    if not callable(obj):
        raise click.BadParameter(f"{spec!r} is not callable", param_hint="--func")
    return obj  # type: ignore[no-any-return]


def _merge_of(merge: str | None, func: str | None, tolerance: str | None) -> Any:
    from .. import merge as merges

    if func is not None:
        if merge is not None:
            raise click.UsageError("--merge and --func are exclusive")
        return load_function(func)
    if merge == "upsert_within":
        if tolerance is None:
            raise click.UsageError("--merge upsert_within needs --tolerance (e.g. 1s, 500ms, 3)")
        try:
            value: Any = int(tolerance)
        except ValueError:
            try:
                value = float(tolerance)
            except ValueError:
                value = tolerance
        return merges.upsert_within(value)
    if tolerance is not None:
        raise click.UsageError("--tolerance goes with --merge upsert_within")
    return merge


def _open_input(path: str, nested: bool) -> Any:
    """An xarray Dataset (DataTree for nested schemas) of a netCDF, Zarr or xarray file."""
    import xarray

    p = Path(path)
    if not p.exists():
        raise errors.InvalidInputError(f"input {path} does not exist")
    kwargs: dict[str, Any] = {"mask_and_scale": False, "decode_times": True}
    if p.is_dir() or p.suffix.lower() == ".zarr":
        kwargs.update(engine="zarr", consolidated=False)
    try:
        if nested:
            return xarray.open_datatree(path, **kwargs)
        return xarray.open_dataset(path, **kwargs)
    except (OSError, ValueError, KeyError) as err:
        raise errors.InvalidInputError(f"cannot read {path}: {err}") from err


class _MergeWriteProgress(Callback):  # type: ignore[misc]
    """Advances a progress bar as the insert graph's merge-write tasks finish.

    One merge-write task per destination partition (``zc-merge-write-...``);
    dask's local schedulers, which the command line uses, call these hooks.
    """

    def __init__(self, progress: Any, task: Any) -> None:
        super().__init__()
        self.progress, self.task = progress, task

    @staticmethod
    def _is_merge_write(key: Any) -> bool:
        name = key[0] if isinstance(key, tuple) else key
        return isinstance(name, str) and name.startswith("zc-merge-write-")

    def _start_state(self, dsk: Any, state: Any) -> None:
        n = sum(1 for k in dsk if self._is_merge_write(k))
        total = self.progress.tasks[self.task].total or 0
        self.progress.update(self.task, total=total + n)

    def _posttask(self, key: Any, result: Any, dsk: Any, state: Any, worker_id: Any) -> None:
        if self._is_merge_write(key):
            self.progress.advance(self.task)


@cli.command("insert")
@_url_command
@click.argument("files", nargs=-1, required=True, type=click.Path())
@click.option(
    "--merge",
    type=click.Choice(["replace", "concat", "time_series", "upsert", "upsert_within"]),
    default=None,
    help="Merge strategy with the stored rows (default: replace).",
)
@click.option("--tolerance", default=None, help="Tolerance of upsert_within (1s, 500ms, 3).")
@click.option("--func", default=None, metavar="MODULE:FUNCTION", help="A custom merge function.")
@_json_option
def insert_command(
    url: str,
    options: tuple[str, ...],
    files: tuple[str, ...],
    merge: str | None,
    tolerance: str | None,
    func: str | None,
    as_json: bool,
) -> None:
    """Insert netCDF, Zarr or other xarray-readable FILES, one commit per file.

    Every file is opened before the first is inserted (an unreadable file
    stops the command before anything is written). A file rejected by the
    schema stops the command: the files before it are committed.
    """
    strategy = _merge_of(merge, func, tolerance)
    col = _open(url, options, mode="rw")
    nested = any(path for path, _ in col.schema.walk_groups())
    inputs = [(f, _open_input(f, nested)) for f in files]
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

    written: dict[str, list[str]] = {}
    progress = Progress(
        TextColumn("{task.description:<24}"),
        BarColumn(),
        MofNCompleteColumn(),
        console=_console(stderr=True),
        transient=as_json,
    )
    with progress:
        files_bar = progress.add_task("files", total=len(inputs))
        parts_bar = progress.add_task("partitions written", total=0)
        done: set[str] = set()
        with _MergeWriteProgress(progress, parts_bar):
            for name, data in inputs:
                progress.update(files_bar, description=f"file {Path(name).name}")
                try:
                    # Into memory here, one file at a time: xarray's lazy Zarr reads cannot
                    # run inside the library's event loop, where the insert would pull them.
                    data.load()
                    written[name] = list(col.insert(data, merge=strategy))
                except errors.ZCollectionError as err:
                    raise type(err)(
                        f"{name}: {err} ({len(written)} file(s) before it committed)"
                    ) from err
                finally:
                    data.close()
                done.update(written[name])
                progress.advance(files_bar)
        progress.update(files_bar, description="files")
    if as_json:
        _print_json({"url": col.url, "files": written, "partitions": sorted(done)})
    else:
        click.echo(f"inserted {len(inputs)} file(s) into {len(done)} partition(s) of {col.url}")


@cli.command("drop")
@_url_command
@click.option("--filter", "-f", "filters", default=None, help="Partitions to drop.")
@click.option("--all", "all_", is_flag=True, help="Drop every partition.")
@click.option("--dry-run", is_flag=True, help="List what would be dropped; change nothing.")
@_yes_option
@_json_option
def drop_command(
    url: str,
    options: tuple[str, ...],
    filters: str | None,
    all_: bool,
    dry_run: bool,
    yes: bool,
    as_json: bool,
) -> None:
    """Delete the partitions matching --filter (or --all) in one commit."""
    if (filters is None) == (not all_):
        raise click.UsageError("name the partitions to drop: --filter EXPR or --all")
    if dry_run:
        paths = _open(url, options).partitions(filters)
    else:
        _require_yes(yes, "drop deletes partitions")
        paths = _open(url, options, mode="rw").drop_partitions(filters)
    if as_json:
        _print_json({"url": url, "dry_run": dry_run, "partitions": paths})
        return
    verb = "would drop" if dry_run else "dropped"
    click.echo(f"{verb} {len(paths)} partition(s)" + "".join(f"\n  {p}" for p in paths))


def _seconds(ctx: click.Context, param: click.Parameter, value: float | None) -> float | None:
    # click's FloatRange lets NaN through (it compares false with both bounds).
    if value is not None and not (math.isfinite(value) and value >= 0):
        raise click.BadParameter(f"{value!r}: expected a finite number of seconds >= 0")
    return value


@cli.command("vacuum")
@_url_command
@click.option(
    "--older-than",
    type=float,
    default=None,
    callback=_seconds,
    metavar="SECONDS",
    help="Delete versions retired this long ago (default: zcollection.retention).",
)
@_yes_option
@_json_option
def vacuum_command(
    url: str, options: tuple[str, ...], older_than: float | None, yes: bool, as_json: bool
) -> None:
    """Delete superseded partition versions (readers in flight may still need recent ones)."""
    _require_yes(yes, "vacuum deletes superseded versions", dry_run=False)
    deleted = _open(url, options, mode="rw").vacuum(older_than=older_than)
    if as_json:
        _print_json({"url": url, "deleted": deleted})
    else:
        click.echo(f"deleted {len(deleted)} superseded version(s)")


@cli.command("repair")
@_url_command
@click.option("--dry-run", is_flag=True, help="Report what would be done; change nothing.")
@click.option("--force", is_flag=True, help="Treat every writer as dead (none can be running).")
@_yes_option
@_json_option
def repair_command(
    url: str, options: tuple[str, ...], dry_run: bool, force: bool, yes: bool, as_json: bool
) -> None:
    """Make the catalog and the tree agree (see Collection.repair; a view: View.repair)."""
    if not dry_run:
        _require_yes(yes, "repair changes the collection")
    target: Collection | View
    try:
        target = _open(url, options, mode="rw")
    except errors.CollectionNotFoundError:
        opts = storage_options(options)
        if not _is_view(url, opts):
            raise
        from ..view._api import open_view

        target = open_view(url, mode="rw", storage_options=opts)  # View.repair: same report
    report = target.repair(force=force, dry_run=dry_run)
    kinds = ("rebuilt", "adopted", "quarantined", "dropped", "skipped")
    if as_json:
        doc: dict[str, Any] = {
            k: [{"path": a.path, "reason": a.reason} for a in getattr(report, k)] for k in kinds
        }
        doc.update(
            url=url,
            dry_run=report.dry_run,
            changed=report.changed,
            recovered=list(report.recovered),
            catalog_version=None if report.catalog is None else report.catalog.version,
        )
        _print_json(doc)
        return
    click.echo(repr(report))


@cli.command("verify")
@_url_command
@click.option("--filter", "-f", "filters", default=None, help="Partitions to check.")
@_json_option
def verify_command(url: str, options: tuple[str, ...], filters: str | None, as_json: bool) -> None:
    """Read every chunk and report damage (exit 1 when something is damaged)."""
    report = _open(url, options).verify(filters)
    if as_json:
        _print_json(
            {
                "url": url,
                "ok": report.ok,
                "checked": report.checked,
                "chunks": report.chunks,
                "damaged": [list(d) for d in report.damaged],
                "unverifiable": [list(u) for u in report.unverifiable],
            }
        )
    else:
        click.echo(repr(report))
    if not report.ok:
        raise SystemExit(EXIT_ERROR)


@cli.command("history")
@_url_command
@click.option("--limit", "-n", type=int, default=None, help="Newest N snapshots only.")
@_json_option
def history_command(url: str, options: tuple[str, ...], limit: int | None, as_json: bool) -> None:
    """List the snapshots of an Icechunk collection, newest first (with its tags)."""
    from ..store import IcechunkStore

    col = _open(url, options)
    spec = col.aio.spec
    if not isinstance(spec, IcechunkStore):
        raise errors.InvalidInputError(
            f"{col.url} keeps no history ({_backend(col)} backend: only its newest catalog, "
            f"version {col.catalog().version}); history needs an icechunk:// collection"
        )
    repo = spec.repository()
    tags: dict[str, list[str]] = {}
    for tag in sorted(repo.list_tags()):
        tags.setdefault(repo.lookup_tag(tag), []).append(tag)
    snapshots = []
    for i, info in enumerate(repo.ancestry(branch=spec.branch)):
        if limit is not None and i >= limit:
            break
        snapshots.append(
            {
                "id": info.id,
                "written_at": info.written_at.isoformat(timespec="seconds"),
                "message": info.message,
                "tags": tags.get(info.id, []),
            }
        )
    if as_json:
        _print_json({"url": col.url, "branch": spec.branch, "snapshots": snapshots})
        return
    from rich.table import Table

    table = Table(box=None, header_style="bold")
    for name in ("snapshot", "written at", "message", "tags"):
        table.add_column(name)
    for s in snapshots:
        table.add_row(s["id"], s["written_at"], s["message"], ", ".join(s["tags"]))
    _console().print(table)


add_view_commands(cli, _url_command, _json_option, storage_options, load_function, _print_json)


# -- the entry point ------------------------------------------------------------------------------
def _one_line(err: BaseException) -> str:
    text = " ".join(str(err).split()) or type(err).__name__
    return f"{type(err).__name__}: {text}"


def _one_line_warnings() -> None:
    # A command line prints its own messages: library warnings on one line each.
    def show(
        message: Warning | str,
        category: type[Warning],
        filename: str,
        lineno: int,
        file: Any = None,
        line: str | None = None,
    ) -> None:
        click.echo(f"dzc: warning: {category.__name__}: {message}", err=True)

    warnings.showwarning = show


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``dzc`` with ``argv`` (default: ``sys.argv[1:]``); the exit code.

    0 success, 1 a library error (one line on stderr, the traceback with
    ``--debug``), 2 a usage error.
    """
    args = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in args
    try:
        with warnings.catch_warnings():  # restores the warning display on return
            _one_line_warnings()
            result = cli.main(args=args, prog_name="dzc", standalone_mode=False)
    except click.exceptions.Exit as exc:
        return int(exc.exit_code)
    except click.ClickException as exc:
        exc.show()
        return int(exc.exit_code)
    except click.exceptions.Abort:
        click.echo("dzc: aborted", err=True)
        return EXIT_ERROR
    except KeyboardInterrupt:
        click.echo("dzc: interrupted", err=True)
        return 130
    except SystemExit as exc:
        return int(exc.code) if isinstance(exc.code, int) else EXIT_ERROR
    except Exception as err:
        if debug:
            traceback.print_exc()
        click.echo(f"dzc: error: {_one_line(err)}", err=True)
        return EXIT_ERROR
    return result if isinstance(result, int) else 0
