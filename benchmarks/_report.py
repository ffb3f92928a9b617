"""The table, the JSON file and the comparison between two runs."""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Sequence
from typing import Any

from ._core import COLUMNS, Result, Stat

__all__ = ["compare", "format_table", "load_json", "to_json"]


def _fmt_num(x: float) -> str:
    if math.isinf(x) or math.isnan(x):
        return str(x)
    a = abs(x)
    if a == 0:
        return "0"
    if a >= 1000:
        return f"{x:,.0f}"
    if a >= 100:
        return f"{x:.0f}"
    if a >= 10:
        return f"{x:.1f}"
    if a >= 1:
        return f"{x:.2f}"
    if a >= 0.01:
        return f"{x:.3f}"
    return f"{x:.2e}"


def _fmt_stat(s: Stat | None) -> str:
    if s is None:
        return "-"
    if s.n == 1 or s.min == s.max:
        return _fmt_num(s.median)
    return f"{_fmt_num(s.median)} ({_fmt_num(s.min)}-{_fmt_num(s.max)})"


def _fmt_ratio(r: float | None) -> str:
    return "-" if r is None else f"{r:.2f}"


def _first(r: Result) -> Stat | None:
    return r.values.get("dzc", r.values.get("value"))


def format_table(
    results: Sequence[Result], groups: Iterable[str] = (), *, notes: bool = True
) -> str:
    """One table: rows are measurements; columns dzc, zarr, xarray, the two ratios, unit.

    Ceiling and baseline rows (a single machine figure) show it in the first
    column. Ratios are dzc / other on the row's unit: below 1 is better for
    times (unit ``s``, ``ms``, ``MB``), above 1 for throughputs (``MB/s``).
    """
    order = {g: i for i, g in enumerate(groups)}
    rows = sorted(results, key=lambda r: order.get(r.group, len(order)))
    header = ["measurement", "dzc", "zarr", "xarray", "dzc/zarr", "dzc/xarray", "unit"]
    body: list[list[str] | str] = []
    group = None
    for r in rows:
        if r.group != group:
            group = r.group
            body.append(f"-- {group}")
        if r.status != "ok":
            body.append(
                [
                    r.name,
                    r.status,
                    "",
                    "",
                    "",
                    "",
                    r.unit,
                ]
            )
        else:
            unit = r.unit + (" (higher=better)" if not r.lower_is_better else "")
            body.append(
                [
                    r.name,
                    _fmt_stat(_first(r)),
                    _fmt_stat(r.values.get("zarr")),
                    _fmt_stat(r.values.get("xarray")),
                    _fmt_ratio(r.ratio("zarr")),
                    _fmt_ratio(r.ratio("xarray")),
                    unit,
                ]
            )
        if notes and r.note:
            body.append(f"     {r.note}")
    widths = [len(h) for h in header]
    for line in body:
        if isinstance(line, list):
            widths = [max(w, len(c)) for w, c in zip(widths, line, strict=True)]

    def fmt(cells: list[str]) -> str:
        return "  ".join(
            c.ljust(w) if i in (0, 6) else c.rjust(w)
            for i, (c, w) in enumerate(zip(cells, widths, strict=True))
        )

    out = [fmt(header), "  ".join("-" * w for w in widths)]
    for line in body:
        out.append(line if isinstance(line, str) else fmt(line))
    return "\n".join(out)


def to_json(results: Sequence[Result], meta: dict[str, Any]) -> dict[str, Any]:
    return {"meta": meta, "results": [r.to_dict() for r in results]}


def load_json(path: str) -> tuple[dict[str, Any], list[Result]]:
    with open(path) as f:
        doc = json.load(f)
    return doc.get("meta", {}), [Result.from_dict(d) for d in doc.get("results", [])]


def compare(old: Sequence[Result], new: Sequence[Result]) -> str:
    """Old vs new medians of every column present in both runs, and new/old."""
    before = {r.name: r for r in old}
    header = ["measurement", "column", "old", "new", "new/old", "unit"]
    rows = []
    for r in new:
        o = before.get(r.name)
        if o is None or o.status != "ok" or r.status != "ok":
            continue
        for col in (*COLUMNS, "value"):
            a, b = o.values.get(col), r.values.get(col)
            if a is None or b is None:
                continue
            ratio = b.median / a.median if a.median else math.inf
            rows.append(
                [r.name, col, _fmt_num(a.median), _fmt_num(b.median), f"{ratio:.2f}", r.unit]
            )
        for other in COLUMNS[1:]:
            a_r, b_r = o.ratio(other), r.ratio(other)
            if a_r is not None and b_r is not None:
                rows.append(
                    [
                        r.name,
                        f"dzc/{other}",
                        f"{a_r:.2f}",
                        f"{b_r:.2f}",
                        f"{b_r / a_r:.2f}",
                        "ratio",
                    ]
                )
    only_new = [r.name for r in new if r.name not in before]
    widths = [max([len(h)] + [len(x[i]) for x in rows]) for i, h in enumerate(header)]

    def fmt(cells: list[str]) -> str:
        return "  ".join(
            c.ljust(w) if i in (0, 1, 5) else c.rjust(w)
            for i, (c, w) in enumerate(zip(cells, widths, strict=True))
        )

    lines = [fmt(header), "  ".join("-" * w for w in widths), *(fmt(x) for x in rows)]
    if only_new:
        lines.append(f"(only in the new run: {', '.join(only_new)})")
    return "\n".join(lines)
