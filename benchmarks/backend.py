"""``backend``: ``xr.open_dataset(engine="zcollection")`` vs ``xr.open_mfdataset``.

On the main dataset (daily partitions, the run's codec, zstd-3 by default, for
both): a 3-day ``.sel(time=...).load()`` after opening the whole collection,
and a full ``.load()``; xarray opens the same partitions with
``open_mfdataset`` (every one for the full load, those of the 3 days for the
range). The note gives each figure over our own ``read_collection`` path on the
same selection (the backend adds the opening of the xarray objects): the two are
timed in turn, the order swapped every round, and the ratio is the median of the
rounds' ratios (on a shared machine two separate series measure two moments).

Rows ending in ``.dask`` open with ``chunks={}`` (dask arrays over our blocks);
the others with xarray's default ``chunks=None`` (lazily indexed arrays: one
concurrent read per partition touched, no dask graph).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import numpy
import xarray

import dask_zcollection as dzc
from dask_zcollection.xarray_backend import ZCollectionBackendEntrypoint

from ._context import Context
from ._core import Config, Measurement, Result, Stat
from .io import _baseline_full_read, _baseline_range, _range

__all__ = ["measurements"]


def _open(ctx: Context, chunks: dict[str, Any] | None) -> xarray.Dataset:
    # The class, not the entry point name: the benchmark runs from a checkout too.
    return xarray.open_dataset(ctx.dzc_url, engine=ZCollectionBackendEntrypoint, chunks=chunks)


def _paired(
    backend: Callable[[], Any], ours: Callable[[], Any], repeats: int, warmup: int = 0
) -> tuple[Stat, Stat, float]:
    """``backend`` and ``ours`` timed in turn: their stats and the median ratio of a round."""
    samples: tuple[list[float], list[float]] = ([], [])
    fns = (backend, ours)
    for i in range(warmup + max(1, repeats)):
        for j in (0, 1) if i % 2 == 0 else (1, 0):
            t0 = time.perf_counter()
            fns[j]()
            if i >= warmup:
                samples[j].append(time.perf_counter() - t0)
    ratio = Stat.of(a / b for a, b in zip(*samples, strict=True)).median
    return Stat.of(samples[0]), Stat.of(samples[1]), ratio


def _note(what: str, ratio: float, ours: Stat, ctx: Context) -> str:
    return (
        f"{what}; {ctx.cfg.codec}; backend / read_collection = {ratio:.2f} "
        f"(paired; read_collection {ours.median:.3g} s)"
    )


def _range_result(ctx: Context, name: str, chunks: dict[str, Any] | None) -> Result:
    ctx.ensure_written()
    a, b = _range(ctx)
    window = slice(a, b - numpy.timedelta64(1, "ns"))
    r = ctx.cfg.repeats
    backend, ours, ratio = _paired(
        lambda: _open(ctx, chunks).sel(time=window).load(),
        lambda: dzc.read_collection(ctx.dzc_url).filter(time=window).compute(),
        r,
        warmup=1,
    )
    xr = _baseline_range(ctx)["xarray"]
    values = {"dzc": backend, **({"xarray": xr} if xr is not None else {})}
    return Result(
        name, "backend", "s", values, note=_note("open all, sel 3 days", ratio, ours, ctx)
    )


def _full_result(ctx: Context, name: str, chunks: dict[str, Any] | None) -> Result:
    ctx.ensure_written()
    r = ctx.cfg.repeats
    backend, ours, ratio = _paired(
        lambda: _open(ctx, chunks).load(), lambda: dzc.read_collection(ctx.dzc_url).compute(), r
    )
    xr = _baseline_full_read(ctx)["xarray"]
    values = {"dzc": backend, **({"xarray": xr} if xr is not None else {})}
    return Result(name, "backend", "s", values, note=_note("full load", ratio, ours, ctx))


def m_range(ctx: Context) -> Result:
    return _range_result(ctx, "backend.range_3day", None)


def m_range_dask(ctx: Context) -> Result:
    return _range_result(ctx, "backend.range_3day.dask", {})


def m_full(ctx: Context) -> Result:
    return _full_result(ctx, "backend.full_read", None)


def m_full_dask(ctx: Context) -> Result:
    return _full_result(ctx, "backend.full_read.dask", {})


def measurements(cfg: Config) -> list[Measurement]:
    """The backend rows: 3-day selection, then full load; lazy arrays, then dask."""
    del cfg
    return [
        Measurement("backend.range_3day", "backend", m_range),
        Measurement("backend.range_3day.dask", "backend", m_range_dask),
        Measurement("backend.full_read", "backend", m_full),
        Measurement("backend.full_read.dask", "backend", m_full_dask),
    ]
