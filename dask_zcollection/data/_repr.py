"""Text and HTML representations of variables, groups and datasets.

Nothing here computes dask data: sizes come from shapes, and dask arrays
are shown by their chunk size.
"""

from __future__ import annotations

import html
import math
from collections.abc import Iterator, Mapping
from typing import TYPE_CHECKING, Any

import numpy

if TYPE_CHECKING:
    from ._dataset import Group, Variable

__all__ = ["format_bytes", "group_repr", "group_repr_html", "variable_repr"]

#: Maximum width of a line of the text repr.
WIDTH = 100
#: Sections longer than this are shown as their first and last HALF items.
MAX_ITEMS = 50
HALF = MAX_ITEMS // 2
#: Number of elements read to build a preview (numpy data only).
PREVIEW_ITEMS = 6
#: Maximum width of a preview of values in the text repr.
PREVIEW_WIDTH = 40
_UNITS = ("kB", "MB", "GB", "TB", "PB", "EB")


def format_bytes(nbytes: float) -> str:
    """Human readable size with decimal units: ``"24 B"``, ``"80.0 kB"``, ``"9.6 MB"``."""
    if nbytes < 1000:
        return f"{int(nbytes)} B"
    value = float(nbytes)
    for unit in _UNITS:
        value /= 1000.0
        if value < 1000 or unit == _UNITS[-1]:
            return f"{value:.1f} {unit}"
    raise AssertionError("unreachable")  # pragma: no cover


def _size(value: Any) -> str:
    return "?" if isinstance(value, float) and math.isnan(value) else str(value)


def format_dims(sizes: Mapping[str, Any]) -> str:
    """``(time: 10, x_ac: 240)``; unknown sizes shown as ``?``."""
    return "(" + ", ".join(f"{dim}: {_size(size)}" for dim, size in sizes.items()) + ")"


def _truncate(text: str, width: int) -> str:
    if width <= 3:
        return text[: max(width, 0)]
    return text if len(text) <= width else text[: width - 3] + "..."


def format_item(value: Any) -> str:
    """Short text of one array element."""
    if isinstance(value, numpy.datetime64):
        if numpy.isnat(value):
            return "NaT"
        text = str(value)
        if "." in text:
            text = text.rstrip("0").rstrip(".")
        if text.endswith("T00:00:00"):
            text = text[: -len("T00:00:00")]
        return text.replace("T", " ")
    if isinstance(value, numpy.timedelta64):
        return "NaT" if numpy.isnat(value) else str(value)
    if isinstance(value, numpy.bool_ | bool):
        return str(bool(value))
    if isinstance(value, numpy.floating | float):
        return f"{value:.4g}"
    if isinstance(value, numpy.complexfloating | complex):
        return f"{value:.3g}"
    if isinstance(value, numpy.integer | int):
        return str(value)
    if isinstance(value, numpy.bytes_ | bytes):
        return _truncate(repr(bytes(value)), 24)
    if isinstance(value, numpy.str_ | str):
        return _truncate(repr(str(value)), 24)
    return _truncate(repr(value), 24)


def preview(data: Any, width: int = 40) -> str:
    """Preview of the values of an array within ``width`` characters.

    Dask arrays are never computed: ``dask.array<chunksize=(4096,)>``.
    """
    if not isinstance(data, numpy.ndarray):
        chunksize = getattr(data, "chunksize", None)
        if chunksize is not None:
            return f"dask.array<chunksize={tuple(_size_int(c) for c in chunksize)}>"
        return type(data).__name__
    size = data.size
    if size == 0:
        return "[]"
    if data.ndim == 0:
        return _truncate(format_item(data[()]), width)
    n_front = min(size, PREVIEW_ITEMS)
    front_idx = numpy.arange(n_front)
    back_idx = numpy.arange(max(size - PREVIEW_ITEMS, n_front), size)
    front = [format_item(v) for v in data[numpy.unravel_index(front_idx, data.shape)]]
    back = [format_item(v) for v in data[numpy.unravel_index(back_idx, data.shape)]]
    if n_front + len(back) == size:
        text = " ".join(front + back)
        if len(text) <= width:
            return text
    # Alternate front and back items while they fit around " ... ".
    head: list[str] = [front[0]]
    tail: list[str] = [back[-1]] if back else [front[-1]] if n_front > 1 else []
    fi, bi = 1, len(back) - 2
    while True:
        grown = False
        if fi < n_front and (back or fi < n_front - 1):
            candidate = " ".join([*head, front[fi]]) + " ... " + " ".join(tail)
            if len(candidate) <= width:
                head.append(front[fi])
                fi += 1
                grown = True
        if bi >= 0:
            candidate = " ".join(head) + " ... " + " ".join([back[bi], *tail])
            if len(candidate) <= width:
                tail.insert(0, back[bi])
                bi -= 1
                grown = True
        if not grown:
            break
    text = " ".join(head) + " ... " + " ".join(tail) if tail else " ".join(head)
    return _truncate(text, width)


def _size_int(value: Any) -> Any:
    return int(value) if isinstance(value, numpy.integer | int) else value


def variable_summary(var: Variable) -> str:
    """``(time, x_ac) float32 9.6 MB``."""
    dims = "(" + ", ".join(var.dimensions) + ")"
    return f"{dims} {var.dtype} {format_bytes(var.nbytes)}"


def variable_repr(var: Variable) -> str:
    """One line like xarray's, plus one line per attribute."""
    sizes = dict(zip(var.dimensions, var.shape, strict=True))
    lines = [f"<Variable {var.name!r} {format_dims(sizes)} {var.dtype} {format_bytes(var.nbytes)}>"]
    lines.extend(_attr_lines(var.attrs, "    "))
    return "\n".join(lines)


def _format_attr(value: Any) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, numpy.ndarray):
        return preview(value, WIDTH)
    return repr(value)


def _attr_lines(attrs: Mapping[str, Any], indent: str) -> Iterator[str]:
    if not attrs:
        return
    keys = list(attrs)
    key_width = min(max(len(str(k)) for k in keys) + 1, 24)
    for key in _elide(keys):
        if key is None:
            yield f"{indent}..."
            continue
        text = f"{indent}{str(key) + ':':<{key_width}} {_format_attr(attrs[key])}"
        yield _truncate(text.replace("\n", " "), WIDTH)


def _elide(items: list[Any]) -> list[Any]:
    """First and last items of a long list, ``None`` marking the gap."""
    if len(items) <= MAX_ITEMS:
        return items
    return [*items[:HALF], None, *items[-HALF:]]


def _variable_lines(variables: Mapping[str, Variable], indent: str) -> Iterator[str]:
    if not variables:
        return
    names = list(variables)
    name_width = max(min(max(len(n) for n in names), 24), 8)
    for name in _elide(names):
        if name is None:
            yield f"{indent}..."
            continue
        var = variables[name]
        line = f"{indent}{name:<{name_width}} {variable_summary(var)}  "
        budget = min(WIDTH - len(line), PREVIEW_WIDTH)
        if budget >= 12:
            line += preview(var.data, budget)
        yield _truncate(line.rstrip(), WIDTH)


def _local_dims(group: Group) -> dict[str, Any]:
    sizes: dict[str, Any] = {}
    for var in group.variables.values():
        for dim, size in zip(var.dimensions, var.shape, strict=True):
            sizes.setdefault(dim, size)
    return sizes


def _group_entries(group: Group) -> list[tuple[str, Group, dict[str, Any]]]:
    """(path, group, dims not seen in an ancestor) for every descendant."""
    entries: list[tuple[str, Group, dict[str, Any]]] = []

    def visit(node: Group, prefix: str, inherited: frozenset[str]) -> None:
        for name, child in node.groups.items():
            path = prefix + "/" + name
            local = _local_dims(child)
            new = {dim: size for dim, size in local.items() if dim not in inherited}
            entries.append((path, child, new))
            visit(child, path, inherited | local.keys())

    visit(group, "", frozenset(_local_dims(group)))
    return entries


def _header(group: Group) -> str:
    if getattr(group, "KIND", "Group") == "Dataset":
        return f"<dask_zcollection.Dataset> Size: {format_bytes(group.nbytes)}"
    return f"<dask_zcollection.Group {group.name!r}> Size: {format_bytes(group.nbytes)}"


def _short_attrs(attrs: Mapping[str, Any]) -> str:
    return ", ".join(f"{k}={_truncate(repr(v), 30)}" for k, v in attrs.items())


def group_repr(group: Group) -> str:
    """Multi-line, size-aware repr in the style of xarray's."""
    lines = [_header(group), _truncate(f"Dimensions:  {format_dims(_local_dims(group))}", WIDTH)]
    if group.variables:
        lines.append("Data variables:")
        lines.extend(_variable_lines(group.variables, "    "))
    entries = _group_entries(group)
    if entries:
        lines.append("Groups:")
        for entry in _elide(entries):
            if entry is None:
                lines.append("    ...")
                continue
            path, child, dims = entry
            line = f"    {path}"
            if dims:
                line += f"  {format_dims(dims)}"
            if child.attrs:
                line += f"  attrs: {_short_attrs(child.attrs)}"
            lines.append(_truncate(line, WIDTH))
            lines.extend(_variable_lines(child.variables, "        "))
    if group.attrs:
        lines.append("Attributes:")
        lines.extend(_attr_lines(group.attrs, "    "))
    return "\n".join(lines)


# -- HTML ---------------------------------------------------------------------

_STYLE = "font-family:monospace;font-size:12px;line-height:1.4;"
_CELL = "padding:0 1em 0 0;text-align:left;vertical-align:top;white-space:nowrap"


def _e(value: Any) -> str:
    return html.escape(str(value), quote=True)


def _html_variables(variables: Mapping[str, Variable]) -> str:
    rows = []
    for name in _elide(list(variables)):
        if name is None:
            rows.append(f'<tr><td style="{_CELL}" colspan="5">...</td></tr>')
            continue
        var = variables[name]
        cells = [
            f"<b>{_e(name)}</b>",
            _e("(" + ", ".join(var.dimensions) + ")"),
            _e(var.dtype),
            _e(format_bytes(var.nbytes)),
            _e(preview(var.data, 60)),
        ]
        row = "".join(f'<td style="{_CELL}">{cell}</td>' for cell in cells)
        attrs = ""
        if var.attrs:
            attrs = (
                f'<tr><td></td><td colspan="4" style="{_CELL}">'
                f"<details><summary>attrs ({len(var.attrs)})</summary>"
                f"{_html_attrs(var.attrs)}</details></td></tr>"
            )
        rows.append(f"<tr>{row}</tr>{attrs}")
    return "<table>" + "".join(rows) + "</table>"


def _html_attrs(attrs: Mapping[str, Any]) -> str:
    items = []
    for key in _elide(list(attrs)):
        if key is None:
            items.append("<dt>...</dt>")
            continue
        value = _truncate(_format_attr(attrs[key]), 200)
        items.append(f"<dt><b>{_e(key)}</b></dt><dd>{_e(value)}</dd>")
    return '<dl style="margin:0">' + "".join(items) + "</dl>"


def _section(title: str, body: str, *, open_: bool = True) -> str:
    flag = " open" if open_ else ""
    return (
        f"<details{flag}><summary>{_e(title)}</summary>"
        f'<div style="margin-left:1.5em">{body}</div></details>'
    )


def group_repr_html(group: Group) -> str:
    """Collapsible HTML repr (``<details>``/``<summary>``), no external CSS or JS."""
    parts = [f"<div><b>{_e(_header(group))}</b></div>"]
    parts.append(f"<div>Dimensions: {_e(format_dims(_local_dims(group)))}</div>")
    if group.variables:
        parts.append(
            _section(f"Data variables ({len(group.variables)})", _html_variables(group.variables))
        )
    entries = _group_entries(group)
    if entries:
        sub = []
        for entry in _elide(entries):
            if entry is None:
                sub.append("<div>...</div>")
                continue
            path, child, dims = entry
            title = path + (f"  {format_dims(dims)}" if dims else "")
            body = ""
            if child.attrs:
                body += _section(f"Attributes ({len(child.attrs)})", _html_attrs(child.attrs))
            if child.variables:
                body += _html_variables(child.variables)
            sub.append(_section(title, body, open_=len(entries) <= 10))
        parts.append(_section(f"Groups ({len(entries)})", "".join(sub)))
    if group.attrs:
        parts.append(_section(f"Attributes ({len(group.attrs)})", _html_attrs(group.attrs)))
    return f'<div class="dask-zcollection-repr" style="{_STYLE}">' + "".join(parts) + "</div>"
