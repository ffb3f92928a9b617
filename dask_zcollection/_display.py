"""Pictures of a lazy collection: its HTML repr and a timeline of its partitions.

Both come from the catalog and the schema alone: nothing is read from the
partitions. The HTML repr follows xarray's (a header, then collapsible
sections; no external CSS or JS, so it renders the same in a notebook, in the
docs and in a standalone page: :func:`standalone_html`).
"""

from __future__ import annotations

import html
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy

from .data._repr import _CELL, _STYLE, _e, _html_attrs, _section, format_bytes, format_item
from .errors import InvalidInputError

if TYPE_CHECKING:
    from .collection import LazyCollection

__all__ = [
    "lazy_repr_html",
    "plot_partitions",
    "size_of",
    "standalone_html",
    "time_span",
    "time_span_text",
]

#: Partitions listed in the HTML repr (the first and last half of them beyond).
MAX_PARTITIONS = 10


def size_of(schema: Any, variables: Sequence[str]) -> tuple[int, int]:
    """Bytes per row along the axis, and bytes of the immutable variables, of ``variables``.

    Uncompressed sizes from the schema alone: the catalog's row count times
    the first, plus the second, is the size of a selection.
    """
    dims = schema.all_dimensions()
    per_row = fixed = 0
    for v in variables:
        spec = schema[v]
        # Immutable variables do not span the axis: every dimension counts.
        shape = spec.dimensions if spec.immutable else spec.dimensions[1:]
        width = int(numpy.prod([dims[d].size or 1 for d in shape] or [1])) * spec.dtype.itemsize
        if spec.immutable:
            fixed += width
        else:
            per_row += width
    return per_row, fixed


def time_span(lazy: LazyCollection) -> tuple[Any, Any] | None:
    """First and last axis value of the selection (by the catalog's stats), or ``None``.

    ``None`` when no partition with rows is selected or the catalog has no
    stats (a listed catalog). A time range filter narrows the ends.
    """
    simple = lazy._simple()
    catalog = simple.catalog
    if not catalog.has_stats or not len(catalog) or (catalog.rows < 0).any():
        return None
    time_range = simple.operand("time_range") if "time_range" in simple._parameters else None
    lo, hi = catalog.bounds(time_range)
    full = catalog.rows > 0
    if not full.any():
        return None
    return lo[full].min(), hi[full].max()


def time_span_text(lazy: LazyCollection) -> str:
    """``2024-03-01 .. 2024-04-09 18:00:00``; ``-`` when nothing is selected, ``unknown``
    when the catalog cannot tell (no statistics, or after ``map_partitions``)."""
    span = time_span(lazy)
    if span is not None:
        return f"{format_item(span[0])} .. {format_item(span[1])}"
    catalog = lazy.catalog
    known = catalog.has_stats and not (catalog.rows < 0).any()
    return "-" if known or not len(catalog) else "unknown"


def _summary(lazy: LazyCollection) -> list[tuple[str, str]]:
    config = lazy.source.config
    catalog = lazy.catalog
    rows = catalog.total_rows
    size = lazy.nbytes
    return [
        ("partitioning", repr(config.partitioning)),
        ("partitions", f"{len(catalog)} selected of {lazy._simple().total}"),
        ("rows", "unknown" if rows < 0 else str(rows)),
        ("size", "unknown" if size < 0 else format_bytes(size)),
        ("time range", time_span_text(lazy)),
    ]


def _variables_table(lazy: LazyCollection) -> str:
    schema = lazy.source.config.schema
    rows = []
    for path in lazy.variables:
        spec = schema[path]
        fill = "" if spec.fill_value is None else format_item(spec.fill_value)
        cells = [
            f"<b>{_e(path)}</b>",
            _e("(" + ", ".join(spec.dimensions) + ")"),
            _e(spec.dtype),
            _e(f"fill {fill}" if fill else ""),
            _e("immutable" if spec.immutable else ""),
        ]
        row = "".join(f'<td style="{_CELL}">{cell}</td>' for cell in cells)
        attrs = ""
        if spec.attrs:
            attrs = (
                f'<tr><td></td><td colspan="4" style="{_CELL}">'
                f"<details><summary>attrs ({len(spec.attrs)})</summary>"
                f"{_html_attrs(spec.attrs)}</details></td></tr>"
            )
        rows.append(f"<tr>{row}</tr>{attrs}")
    return "<table>" + "".join(rows) + "</table>"


def _partitions_table(lazy: LazyCollection) -> str:
    catalog = lazy.catalog
    encode = lazy.source.config.partitioning.encode
    n = len(catalog)
    shown = list(range(n))
    if n > MAX_PARTITIONS:
        half = MAX_PARTITIONS // 2
        shown = [*range(half), -1, *range(n - half, n)]
    rows = []
    for i in shown:
        if i < 0:
            rows.append(f'<tr><td style="{_CELL}" colspan="4">...</td></tr>')
            continue
        count = int(catalog.rows[i])
        known = catalog.has_stats and count >= 0
        cells = [
            _e(encode(catalog.key_tuple(i))),
            _e(f"{count} rows" if known else "? rows"),
            _e(format_item(catalog.axis_min[i]) if known and count else ""),
            _e(format_item(catalog.axis_max[i]) if known and count else ""),
        ]
        rows.append("<tr>" + "".join(f'<td style="{_CELL}">{c}</td>' for c in cells) + "</tr>")
    return "<table>" + "".join(rows) + "</table>"


def lazy_repr_html(lazy: LazyCollection) -> str:
    """The HTML repr of a :class:`~dask_zcollection.LazyCollection` (xarray's style).

    A header with the URL, the summary (partitions selected of total, rows,
    size, time range), then collapsible sections: variables (dimensions,
    dtype, fill value, attributes), partitions, attributes.
    """
    config = lazy.source.config
    head = f"<div><b>&lt;dask_zcollection.LazyCollection&gt;</b> {_e(lazy.source.spec.url)}</div>"
    summary = "".join(
        f'<tr><td style="{_CELL}">{_e(k)}:</td><td style="{_CELL}">{_e(v)}</td></tr>'
        for k, v in _summary(lazy)
    )
    parts = [head, f"<table>{summary}</table>"]
    parts.append(_section(f"Variables ({len(lazy.variables)})", _variables_table(lazy)))
    if len(lazy.catalog):
        parts.append(
            _section(f"Partitions ({len(lazy.catalog)})", _partitions_table(lazy), open_=False)
        )
    attrs = config.schema.root.attrs
    if attrs:
        parts.append(_section(f"Attributes ({len(attrs)})", _html_attrs(attrs), open_=False))
    return f'<div class="dask-zcollection-repr" style="{_STYLE}">' + "".join(parts) + "</div>"


def standalone_html(obj: Any, title: str = "dask_zcollection repr") -> str:
    """A complete HTML page showing ``obj._repr_html_()`` (for screenshots and browser checks).

    The page has every ``<details>`` section of the repr open, so a screenshot
    shows them; it loads nothing from outside.
    """
    body = obj._repr_html_().replace("<details>", "<details open>")
    return (
        "<!DOCTYPE html>\n"
        f'<html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)}</title>'
        "</head>"
        f'<body style="margin:1em;background:#fff;color:#111">{body}</body></html>\n'
    )


def plot_partitions(lazy: LazyCollection, by: str = "rows", ax: Any = None) -> Any:
    """A timeline of the selected partitions, coloured by rows or bytes.

    See :meth:`dask_zcollection.LazyCollection.plot_partitions`.
    """
    if by not in ("rows", "bytes"):
        raise InvalidInputError(f"plot_partitions colours by 'rows' or 'bytes', not {by!r}")
    try:
        import matplotlib.pyplot as plt
        from matplotlib import cm, colors
    except ImportError as err:
        raise ImportError(
            "plot_partitions() needs matplotlib: pip install 'dask_zcollection[plot]'"
        ) from err
    catalog = lazy.catalog
    config = lazy.source.config
    if not catalog.has_stats or (catalog.rows < 0).any():
        raise InvalidInputError(
            f"{lazy.source.spec.url}: the catalog has no row counts or axis range for its "
            "partitions (a listed catalog); repair() records them"
        )
    full = catalog.rows > 0
    lo, hi = catalog.axis_min[full], catalog.axis_max[full]
    counts = catalog.rows[full].astype("int64")
    per_row, _ = size_of(config.schema, lazy.variables)
    values = counts if by == "rows" else counts * per_row
    if ax is None:
        _, ax = plt.subplots(figsize=(10, 2.2), layout="constrained")
    dates = lo.dtype.kind == "M"
    if dates:
        from matplotlib import dates as mdates

        start = mdates.date2num(lo.astype("datetime64[us]").astype(object))
        stop = mdates.date2num(hi.astype("datetime64[us]").astype(object))
    else:
        start, stop = lo.astype("float64"), hi.astype("float64")
    width = numpy.asarray(stop) - numpy.asarray(start)
    norm = colors.Normalize(vmin=0, vmax=max(int(values.max()) if len(values) else 1, 1))
    cmap = plt.get_cmap("viridis")
    ax.barh(
        numpy.zeros(len(width)),
        width,
        left=start,
        height=0.8,
        color=cmap(norm(values)),
        edgecolor="black",
        linewidth=0.5,
    )
    if dates:
        locator = mdates.AutoDateLocator()
        ax.xaxis.set_major_locator(locator)
        ax.xaxis.set_major_formatter(mdates.ConciseDateFormatter(locator))
    ax.set_yticks([])
    ax.set_ylim(-0.6, 0.6)
    ax.set_xlabel(config.axis_variable)
    ax.set_title(
        f"{lazy.source.spec.url}: {int(full.sum())} partition(s) with rows "
        f"of {len(catalog)} selected (gaps are blank)",
        fontsize="medium",
    )
    label = "rows" if by == "rows" else "bytes (uncompressed)"
    ax.figure.colorbar(cm.ScalarMappable(norm=norm, cmap=cmap), ax=ax, label=label, pad=0.01)
    return ax
