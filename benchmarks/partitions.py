"""``partitions``: many small partitions: insert cost, filter latency, graph size.

``N`` daily partitions of a few rows: the library inserts all of them at once;
raw zarr and xarray write one store per partition, timed on a sample (their
cost per partition does not depend on ``N``).
"""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Callable

import numpy

import dask_zcollection as dzc

from . import _data
from ._context import Context
from ._core import Config, Measurement, Result, Stat, graph_len, timed

__all__ = ["measurements"]

_GRAPH_K = 10


class _Many:
    """Fixture of ``n`` daily partitions in the three layouts (raw ones sampled)."""

    def __init__(self, ctx: Context, n: int) -> None:
        self.ctx, self.n = ctx, n
        self.base = ctx.path(f"many-{n}")
        self.url = "file://" + os.path.join(self.base, "dzc")
        self.zarr_root = os.path.join(self.base, "zarr")
        self.xarray_root = os.path.join(self.base, "xarray")
        self.columns = _data.many_columns(n, ctx.cfg.many_rows, ctx.cfg.width)
        self.sample = min(n, ctx.cfg.baseline_sample)
        rows = ctx.cfg.many_rows
        self.sample_columns = {k: v[: self.sample * rows] for k, v in self.columns.items()}
        self.dzc_written = False
        self.raw_written = False

    def write_dzc(self) -> None:
        self.ctx.write_dzc(self.url, self.columns)
        self.dzc_written = True

    def ensure(self) -> None:
        if not self.dzc_written:
            shutil.rmtree(os.path.join(self.base, "dzc"), ignore_errors=True)
            self.write_dzc()
        if not self.raw_written:
            self.write_raw()

    def write_raw(self) -> None:
        cfg = self.ctx.cfg
        for root in (self.zarr_root, self.xarray_root):
            shutil.rmtree(root, ignore_errors=True)
        _data.zarr_write(self.zarr_root, self.sample_columns, cfg.codec, cfg.chunks)
        _data.xarray_write(self.xarray_root, self.sample_columns, cfg.codec, cfg.chunks)
        # The rest only as names, for the listing baseline (its cost is in the names).
        days = _data.MANY_START.astype("datetime64[D]") + numpy.arange(self.sample, self.n)
        for d in days:
            os.mkdir(os.path.join(self.zarr_root, _data.partition_name(d)))
        self.raw_written = True


def _many(ctx: Context, n: int) -> _Many:
    key = f"many.{n}"
    if key not in ctx.cache:
        ctx.cache[key] = _Many(ctx, n)
    return ctx.cache[key]  # type: ignore[no-any-return]


def m_many_insert(n: int) -> Callable[[Context], Result]:
    def fn(ctx: Context) -> Result:
        f = _many(ctx, n)
        repeats = 1 if n >= 5000 else min(2, ctx.cfg.repeats)
        d = timed(
            f.write_dzc, repeats, setup=lambda: shutil.rmtree(os.path.join(f.base, "dzc"), True)
        )
        s = f.sample
        cfg = ctx.cfg

        def clear_raw() -> None:
            shutil.rmtree(f.zarr_root, True)
            shutil.rmtree(f.xarray_root, True)

        z = timed(
            lambda: _data.zarr_write(f.zarr_root, f.sample_columns, cfg.codec, cfg.chunks),
            repeats,
            setup=clear_raw,
        )
        x = timed(
            lambda: _data.xarray_write(f.xarray_root, f.sample_columns, cfg.codec, cfg.chunks),
            repeats,
            setup=lambda: shutil.rmtree(f.xarray_root, True),
        )
        clear_raw()
        f.raw_written = False
        ms = 1000.0
        return Result(
            f"partitions[N={n}].insert",
            "partitions",
            "ms/partition",
            {"dzc": d.scaled(ms / n), "zarr": z.scaled(ms / s), "xarray": x.scaled(ms / s)},
            note=f"dzc: one insert of {n} partitions ({d.median:.1f} s); zarr/xarray: "
            f"a store per partition, sample of {s}",
            params={"N": n},
        )

    return fn


def _zarr_list_select(root: str) -> list[str]:
    out = []
    for name in os.listdir(root):
        if not name.endswith(".zarr"):
            continue
        y, m, _ = name[:-5].split("-")
        if int(y) == 2000 and int(m) == 1:
            out.append(os.path.join(root, name))
    return sorted(out)


def m_many_filter(n: int) -> Callable[[Context], Result]:
    def fn(ctx: Context) -> Result:
        f = _many(ctx, n)
        f.ensure()
        r = max(5, ctx.cfg.repeats)
        filt = _data.MONTH_FILTER
        k = len(dzc.open_collection(f.url).partitions(filt))
        d = timed(lambda: dzc.open_collection(f.url).partitions(filt), r)
        z = ctx.cached(f"many.{n}.list", lambda: timed(lambda: _zarr_list_select(f.zarr_root), r))
        return Result(
            f"partitions[N={n}].filter",
            "partitions",
            "s",
            {"dzc": d, "zarr": z},  # type: ignore[dict-item]
            note=f"open_collection + partitions(filter): {k} of {n}; "
            "zarr: listdir + parse names (xarray has no index)",
            params={"N": n, "k": k},
        )

    return fn


def m_many_filter_lazy(n: int) -> Callable[[Context], Result]:
    def fn(ctx: Context) -> Result:
        f = _many(ctx, n)
        f.ensure()
        r = max(5, ctx.cfg.repeats)
        filt = _data.MONTH_FILTER
        d = timed(lambda: dzc.read_collection(f.url).filter(filt).npartitions, r)
        z = ctx.cached(f"many.{n}.list", lambda: timed(lambda: _zarr_list_select(f.zarr_root), r))
        opened = dzc.read_collection(f.url)
        pure = timed(lambda: opened.filter(filt).npartitions, r)
        return Result(
            f"partitions[N={n}].filter.lazy",
            "partitions",
            "s",
            {"dzc": d, "zarr": z},  # type: ignore[dict-item]
            note=f"read_collection + filter + npartitions; the filter alone on an open "
            f"collection: {pure.median * 1e3:.2f} ms",
            params={"N": n},
        )

    return fn


def m_many_graph(n: int) -> Callable[[Context], Result]:
    def fn(ctx: Context) -> Result:
        f = _many(ctx, n)
        f.ensure()
        k = min(_GRAPH_K, f.sample, n)
        filt = f"year == 2000 and month == 1 and day <= {k}"
        t0 = time.perf_counter()
        lazy = dzc.read_collection(f.url).filter(filt)
        tasks = graph_len(lazy)
        build = time.perf_counter() - t0
        paths = [
            os.path.join(f.xarray_root, _data.partition_name(d))
            for d in _data.MANY_START.astype("datetime64[D]") + numpy.arange(k)
        ]
        t0 = time.perf_counter()
        xtasks = graph_len(_data.xarray_open(paths))
        xbuild = time.perf_counter() - t0
        return Result(
            f"partitions[N={n}].graph",
            "partitions",
            "tasks",
            {"dzc": Stat.one(tasks), "xarray": Stat.one(xtasks)},
            note=f"tasks of a query of {k} of {n}; build dzc {build * 1e3:.0f} ms, "
            f"xarray open_mfdataset {xbuild * 1e3:.0f} ms",
            params={"N": n, "k": k},
        )

    return fn


def measurements(cfg: Config) -> list[Measurement]:
    """Insert, filter (eager and lazy) and graph size for each partition count."""
    out: list[Measurement] = []
    for n in cfg.many:
        out += [
            Measurement(f"partitions[N={n}].insert", "partitions", m_many_insert(n)),
            Measurement(f"partitions[N={n}].filter", "partitions", m_many_filter(n)),
            Measurement(f"partitions[N={n}].filter.lazy", "partitions", m_many_filter_lazy(n)),
            Measurement(f"partitions[N={n}].graph", "partitions", m_many_graph(n)),
        ]
    return out
