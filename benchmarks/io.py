"""``io``: the library vs raw zarr vs xarray on the main dataset.

Write it, read it whole, read one partition, a 3-day range, and open it: the
eager API (``open_collection().query()``) and the lazy one
(``read_collection()...compute()``, rows ending in ``.lazy``; through
``to_xarray()``, rows ending in ``.xarray``) against the same baselines,
measured once per run.
"""

from __future__ import annotations

import os
from typing import Any

import numpy

import dask_zcollection as dzc

from . import _data
from ._context import Context
from ._core import Config, Measurement, Result, Stat, timed

__all__ = ["measurements"]


def _fraction(ctx: Context, mbps: float, what: str) -> str:
    ceil = ctx.cache.get(f"ceiling.{ctx.cfg.codec}")
    if not ceil:
        return ""
    return f", {100 * mbps / ceil[what].median:.0f}% of the {what} ceiling"


def m_write(ctx: Context) -> Result:
    r = ctx.cfg.repeats
    values = {
        "dzc": timed(ctx.write_dzc, r, setup=lambda: ctx.clear("dzc")),
        "zarr": timed(ctx.write_zarr, r, setup=lambda: ctx.clear("zarr")),
        "xarray": timed(ctx.write_xarray, r, setup=lambda: ctx.clear("xarray")),
    }
    for k in values:
        ctx.mark_written(k)
    mbps = ctx.mb / values["dzc"].median
    return Result(
        "io.write",
        "io",
        "s",
        values,
        note=f"{ctx.mb:,.0f} MB, {len(ctx.days)} partitions; dzc {mbps:,.0f} MB/s"
        + _fraction(ctx, mbps, "compress"),
    )


def _baseline_full_read(ctx: Context) -> dict[str, Stat | None]:
    r = ctx.cfg.repeats
    return {
        "zarr": ctx.cached(
            "full.zarr", lambda: timed(lambda: _data.zarr_read_all(ctx.zarr_root), r)
        ),
        "xarray": ctx.cached(
            "full.xarray", lambda: timed(lambda: _data.xarray_read_all(ctx.xarray_root), r)
        ),
    }


def _full_read_result(ctx: Context, name: str, dzc_stat: Stat) -> Result:
    values = {"dzc": dzc_stat, **_baseline_full_read(ctx)}
    mbps = ctx.mb / dzc_stat.median
    return Result(
        name,
        "io",
        "s",
        {k: v for k, v in values.items() if v is not None},
        note=f"dzc {mbps:,.0f} MB/s" + _fraction(ctx, mbps, "decompress"),
    )


def m_full_read(ctx: Context) -> Result:
    ctx.ensure_written()
    stat = timed(lambda: dzc.open_collection(ctx.dzc_url).query(), ctx.cfg.repeats)
    return _full_read_result(ctx, "io.full_read", stat)


def m_full_read_lazy(ctx: Context) -> Result:
    ctx.ensure_written()
    stat = timed(lambda: dzc.read_collection(ctx.dzc_url).compute(), ctx.cfg.repeats)
    return _full_read_result(ctx, "io.full_read.lazy", stat)


def m_full_read_xarray(ctx: Context) -> Result:
    ctx.ensure_written()
    stat = timed(lambda: dzc.read_collection(ctx.dzc_url).to_xarray().load(), ctx.cfg.repeats)
    return _full_read_result(ctx, "io.full_read.xarray", stat)


def _one_day(ctx: Context) -> numpy.datetime64:
    days = ctx.days
    return days[1] if len(days) > 2 else days[0]


def _baseline_one(ctx: Context) -> dict[str, Stat | None]:
    import xarray

    name = _data.partition_name(_one_day(ctx))
    zpath, xpath = os.path.join(ctx.zarr_root, name), os.path.join(ctx.xarray_root, name)
    r = ctx.cfg.repeats
    return {
        "zarr": ctx.cached("one.zarr", lambda: timed(lambda: _data.zarr_read_partition(zpath), r)),
        "xarray": ctx.cached(
            "one.xarray",
            lambda: timed(
                lambda: xarray.open_dataset(
                    xpath, engine="zarr", consolidated=False, zarr_format=3
                ).load(),
                r,
            ),
        ),
    }


def m_one_partition(ctx: Context) -> Result:
    ctx.ensure_written()
    filt = ctx.day_filter([_one_day(ctx)])
    stat = timed(lambda: dzc.open_collection(ctx.dzc_url).query(filters=filt), ctx.cfg.repeats)
    return Result(
        "io.one_partition",
        "io",
        "s",
        {"dzc": stat, **_baseline_one(ctx)},  # type: ignore[dict-item]
        note=f"one day, {ctx.mb / len(ctx.days):,.0f} MB",
    )


def m_one_partition_lazy(ctx: Context) -> Result:
    ctx.ensure_written()
    filt = ctx.day_filter([_one_day(ctx)])
    stat = timed(lambda: dzc.read_collection(ctx.dzc_url).filter(filt).compute(), ctx.cfg.repeats)
    return Result("io.one_partition.lazy", "io", "s", {"dzc": stat, **_baseline_one(ctx)})  # type: ignore[dict-item]


def _range(ctx: Context) -> tuple[numpy.datetime64, numpy.datetime64]:
    """A 3-day window starting mid-day (touches 4 partitions when the data allows)."""
    t = ctx.columns["time"]
    span = t[-1] - t[0]
    three = numpy.timedelta64(3 * 86400, "s").astype("timedelta64[ns]")
    margin = max(
        numpy.timedelta64(0, "ns"), min(numpy.timedelta64(12 * 3600, "s"), (span - three) // 2)
    )
    start = t[0] + margin
    return start, min(start + three, t[-1] + numpy.timedelta64(1, "ns"))


def _range_days(ctx: Context) -> list[numpy.datetime64]:
    a, b = _range(ctx)
    da, db = a.astype("datetime64[D]"), (b - numpy.timedelta64(1, "ns")).astype("datetime64[D]")
    return [d for d in ctx.days if da <= d <= db]


def _zarr_range(ctx: Context) -> dict[str, numpy.ndarray]:
    import zarr

    a, b = _range(ctx)
    out: dict[str, list[numpy.ndarray]] = {"time": [], "ssh": []}
    for day in _range_days(ctx):
        g = zarr.open_group(
            os.path.join(ctx.zarr_root, _data.partition_name(day)), mode="r", zarr_format=3
        )
        t = g["time"][:]
        lo, hi = numpy.searchsorted(t, a), numpy.searchsorted(t, b)
        out["time"].append(t[lo:hi])
        out["ssh"].append(g["ssh"][lo:hi])
    return {k: numpy.concatenate(v) for k, v in out.items()}


def _baseline_range(ctx: Context) -> dict[str, Stat | None]:
    a, b = _range(ctx)
    paths = [os.path.join(ctx.xarray_root, _data.partition_name(d)) for d in _range_days(ctx)]
    r = ctx.cfg.repeats
    return {
        "zarr": ctx.cached("range.zarr", lambda: timed(lambda: _zarr_range(ctx), r)),
        "xarray": ctx.cached(
            "range.xarray",
            lambda: timed(
                lambda: (
                    _data.xarray_open(paths)
                    .sel(time=slice(a, b - numpy.timedelta64(1, "ns")))
                    .load()
                ),
                r,
            ),
        ),
    }


def m_range(ctx: Context) -> Result:
    ctx.ensure_written()
    a, b = _range(ctx)
    filt = ctx.day_filter(_range_days(ctx))

    def run() -> dict[str, numpy.ndarray]:
        ds = dzc.open_collection(ctx.dzc_url).query(filters=filt)
        t = ds["time"].values
        lo, hi = numpy.searchsorted(t, a), numpy.searchsorted(t, b)
        return {"time": t[lo:hi], "ssh": ds["ssh"].values[lo:hi]}

    stat = timed(run, ctx.cfg.repeats)
    return Result(
        "io.range_3day",
        "io",
        "s",
        {"dzc": stat, **_baseline_range(ctx)},  # type: ignore[dict-item]
        note=f"eager: query {len(_range_days(ctx))} partitions then slice; "
        "zarr reads the slice only",
    )


def m_range_lazy(ctx: Context) -> Result:
    ctx.ensure_written()
    a, b = _range(ctx)
    stat = timed(
        lambda: dzc.read_collection(ctx.dzc_url).filter(time=slice(a, b)).compute(),
        ctx.cfg.repeats,
    )
    return Result("io.range_3day.lazy", "io", "s", {"dzc": stat, **_baseline_range(ctx)})  # type: ignore[dict-item]


def m_range_xarray(ctx: Context) -> Result:
    ctx.ensure_written()
    a, b = _range(ctx)
    stat = timed(
        lambda: dzc.read_collection(ctx.dzc_url).filter(time=slice(a, b)).to_xarray().load(),
        ctx.cfg.repeats,
    )
    return Result("io.range_3day.xarray", "io", "s", {"dzc": stat, **_baseline_range(ctx)})  # type: ignore[dict-item]


def _zarr_open_all(root: str) -> list[Any]:
    import zarr

    out = []
    for p in _data.iter_partitions(root):
        g = zarr.open_group(p, mode="r", zarr_format=3)
        out.append((g["time"], g["ssh"]))
    return out


def _baseline_open(ctx: Context) -> dict[str, Stat | None]:
    r = max(3, ctx.cfg.repeats)
    paths = list(_data.iter_partitions(ctx.xarray_root))
    return {
        "zarr": ctx.cached("open.zarr", lambda: timed(lambda: _zarr_open_all(ctx.zarr_root), r)),
        "xarray": ctx.cached("open.xarray", lambda: timed(lambda: _data.xarray_open(paths), r)),
    }


def m_open(ctx: Context) -> Result:
    ctx.ensure_written()
    stat = timed(lambda: dzc.open_collection(ctx.dzc_url).partitions(), max(3, ctx.cfg.repeats))
    return Result(
        "io.open",
        "io",
        "s",
        {"dzc": stat, **_baseline_open(ctx)},  # type: ignore[dict-item]
        note="dzc: config + catalog; zarr: every group + arrays; xarray: open_mfdataset",
    )


def m_open_lazy(ctx: Context) -> Result:
    ctx.ensure_written()
    stat = timed(lambda: dzc.read_collection(ctx.dzc_url).npartitions, max(3, ctx.cfg.repeats))
    return Result("io.open.lazy", "io", "s", {"dzc": stat, **_baseline_open(ctx)})  # type: ignore[dict-item]


def m_open_xarray(ctx: Context) -> Result:
    ctx.ensure_written()
    a, b = _range(ctx)

    def build() -> Any:
        # The dask graphs of a whole and of a time-ranged collection (no value read).
        dzc.read_collection(ctx.dzc_url).to_xarray()
        return dzc.read_collection(ctx.dzc_url).filter(time=slice(a, b)).to_xarray()

    stat = timed(build, max(3, ctx.cfg.repeats))
    return Result(
        "io.open.xarray",
        "io",
        "s",
        {"dzc": stat, **_baseline_open(ctx)},  # type: ignore[dict-item]
        note="dzc: to_xarray() of all and of a 3-day range, built, not computed",
    )


def measurements(cfg: Config) -> list[Measurement]:
    """Every ``io`` row, eager then lazy."""
    return [
        Measurement("io.write", "io", m_write),
        Measurement("io.full_read", "io", m_full_read),
        Measurement("io.full_read.lazy", "io", m_full_read_lazy),
        Measurement("io.full_read.xarray", "io", m_full_read_xarray),
        Measurement("io.one_partition", "io", m_one_partition),
        Measurement("io.one_partition.lazy", "io", m_one_partition_lazy),
        Measurement("io.range_3day", "io", m_range),
        Measurement("io.range_3day.lazy", "io", m_range_lazy),
        Measurement("io.range_3day.xarray", "io", m_range_xarray),
        Measurement("io.open", "io", m_open),
        Measurement("io.open.lazy", "io", m_open_lazy),
        Measurement("io.open.xarray", "io", m_open_xarray),
    ]
