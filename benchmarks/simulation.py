"""``simulation``: planning over a huge catalog; a store with latency per request.

A catalog of ``sim_partitions`` hourly partitions is committed without data,
then opened and filtered; the graph of a query is optimised with the catalog
in hand; and a small collection is written, opened, filtered and read through
:class:`benchmarks._latency.LatencyLocalStore` (``L`` ms per request) beside
raw zarr through the same wrapper.
"""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Callable
from typing import Any

import numpy

import dask_zcollection as dzc

from . import _data
from ._context import Context
from ._core import Config, Measurement, Result, Stat, graph_len, timed

__all__ = ["measurements"]


def _sim_collection(ctx: Context) -> tuple[str, str]:
    """A collection whose catalog lists ``sim_partitions`` hourly partitions (no data)."""
    from dask_zcollection._sync import sync
    from dask_zcollection.catalog import CatalogLog

    key = "sim.url"
    if key in ctx.cache:
        return ctx.cache[key]  # type: ignore[no-any-return]
    n = ctx.cfg.sim_partitions
    url = "file://" + ctx.path("sim", "dzc")
    part = dzc.partitioning.Date(("time",), resolution="h")
    col = dzc.create_collection(
        url, schema=ctx.schema(), axis="time", partitioning=part, overwrite=True
    )
    hours = numpy.datetime64("2000-01-01T00", "h") + numpy.arange(n)
    start = hours.astype("datetime64[ns]")
    years = hours.astype("datetime64[Y]")
    months = hours.astype("datetime64[M]")
    days = hours.astype("datetime64[D]")
    keys = numpy.stack(
        [
            years.astype("int64") + 1970,
            (months - years).astype("int64") + 1,
            (days - months).astype("int64") + 1,
            (hours - days).astype("int64"),
        ],
        axis=1,
    )
    paths = [part.encode(tuple(row)) for row in keys.tolist()]
    rows = numpy.full(n, 3600, dtype="int64")
    hi = start + numpy.timedelta64(3599, "s")
    catalog = sync(col.aio.catalog())
    catalog = catalog.with_partitions(keys, paths, rows, start, hi).next_version("bench-sim")
    if not sync(CatalogLog(col.aio.spec).commit(catalog)):
        raise RuntimeError("could not commit the simulated catalog")
    ctx.cache[key] = (url, "year == 2000 and month == 1 and day == 2")
    return ctx.cache[key]  # type: ignore[no-any-return]


def m_planning(ctx: Context) -> Result:
    url, filt = _sim_collection(ctx)
    n = ctx.cfg.sim_partitions
    r = max(3, ctx.cfg.repeats)
    k = len(dzc.open_collection(url).partitions(filt))
    d = timed(lambda: dzc.open_collection(url).partitions(filt), r)
    size = _data.du(ctx.path("sim", "dzc", "_catalog"))
    return Result(
        f"sim.planning[N={n}]",
        "simulation",
        "s",
        {"dzc": d},
        note=f"open + filter {k} of {n:,} partitions (no data); "
        f"catalog objects {size / 1e6:.1f} MB",
        params={"N": n, "k": k},
    )


def m_planning_lazy(ctx: Context) -> Result:
    url, filt = _sim_collection(ctx)
    n = ctx.cfg.sim_partitions
    r = max(3, ctx.cfg.repeats)
    tasks = []

    def plan() -> None:
        tasks.append(graph_len(dzc.read_collection(url).filter(filt)))

    d = timed(plan, r)
    return Result(
        f"sim.planning[N={n}].lazy",
        "simulation",
        "s",
        {"dzc": d},
        note=f"read_collection + filter + build the graph: {tasks[-1]} tasks",
        params={"N": n},
    )


def m_graph(ctx: Context) -> Result:
    """Optimise + materialise the graph of k = 31 of N = 100,000 partitions, catalog in hand.

    The catalog is the first N hours of the simulated one, already read (what an
    open collection holds): the figure is the planning alone, plus the size of the
    pickled optimised plan against the same query over 1,000 partitions.
    """
    import pickle

    from dask_zcollection._sync import sync
    from dask_zcollection.collection import collection_from

    url, _ = _sim_collection(ctx)
    col = dzc.open_collection(url)
    full = sync(col.aio.catalog())
    n = min(100_000, len(full))
    filt = "year == 2000 and month == 1 and hour == 0"  # one partition a day: 31

    def lazy(size: int) -> Any:
        catalog = full.take(numpy.arange(size))
        return collection_from(col.aio.spec, col.aio.config, catalog)

    big, small = lazy(n), lazy(min(1_000, n))
    tasks: list[int] = []

    def plan() -> None:
        expr = big.filter(filt).expr.optimize(fuse=False)
        tasks.append(len(dict(expr.__dask_graph__())))

    d = timed(plan, max(5, ctx.cfg.repeats))
    k = big.filter(filt).npartitions
    sizes = {
        m: len(pickle.dumps(x.filter(filt).expr.optimize(fuse=False)))
        for m, x in ((n, big), (1_000, small))
    }
    return Result(
        f"sim.graph[N={n},k={k}]",
        "simulation",
        "s",
        {"dzc": d},
        note=f"filter + optimise + materialise, catalog in hand: {tasks[-1]} tasks; "
        f"pickled plan {sizes[n]:,} B (N = 1,000: {sizes[1_000]:,} B)",
        params={"N": n, "k": k},
    )


def _zarr_latency_store(path: str, latency: float, counter: Any) -> Any:
    from zarr.storage import LocalStore as ZarrLocalStore

    from dask_zcollection.testing import CountingStore

    return CountingStore(ZarrLocalStore(path), latency, counter)


def m_latency(latency_ms: float, n: int) -> Callable[[Context], list[Result]]:
    def fn(ctx: Context) -> list[Result]:
        import zarr

        from dask_zcollection.testing import RequestCounter

        from ._latency import LatencyLocalStore

        lat = latency_ms / 1000.0
        cfg = ctx.cfg
        base = ctx.path(f"latency-{latency_ms:g}-{n}")
        spec = LatencyLocalStore(os.path.join(base, "dzc"), latency=lat)
        counter = spec.counter
        zcounter = RequestCounter()
        cols = _data.many_columns(n, cfg.many_rows, cfg.width)
        repeats = min(2, cfg.repeats)
        filt = _data.MONTH_FILTER
        zroot = os.path.join(base, "zarr")

        def run(
            fn: Callable[[], Any], setup: Callable[[], Any] | None = None, c: Any = counter
        ) -> tuple[Stat, int]:
            c.reset()
            stat = timed(fn, repeats, setup=setup)
            return stat, c.reset() // stat.n

        def clear_dzc() -> None:
            shutil.rmtree(spec.root, ignore_errors=True)
            spec.zarr_store()  # the live store is cached: keep it, the directory is recreated

        def insert() -> None:
            ctx.write_dzc(spec, cols)

        def zarr_insert() -> None:
            for day, sl in _data.day_slices(cols["time"]):
                store = _zarr_latency_store(
                    os.path.join(zroot, _data.partition_name(day)), lat, zcounter
                )
                g = zarr.open_group(store=store, mode="w", zarr_format=3)
                g.create_array(
                    "time",
                    data=cols["time"][sl],
                    compressors=_data.codec_chain(cfg.codec, 8) or None,
                )
                g.create_array(
                    "ssh",
                    data=cols["ssh"][sl],
                    compressors=_data.codec_chain(cfg.codec, 4) or None,
                    fill_value=numpy.float32("nan"),
                )

        def zarr_paths() -> list[str]:
            zcounter.add()  # one listing request
            time.sleep(lat)
            return [os.path.join(zroot, n) for n in sorted(os.listdir(zroot))]

        def zarr_open() -> list[Any]:
            out = []
            for p in zarr_paths():
                g = zarr.open_group(
                    store=_zarr_latency_store(p, lat, zcounter), mode="r", zarr_format=3
                )
                out.append((g["time"], g["ssh"]))
            return out

        def zarr_read() -> None:
            for t, s in zarr_open():
                t[:]
                s[:]

        out: dict[str, tuple[tuple[Stat, int], tuple[Stat, int] | None]] = {}
        out["insert"] = (
            run(insert, clear_dzc),
            run(zarr_insert, lambda: shutil.rmtree(zroot, True), zcounter),
        )
        out["open"] = (
            run(lambda: dzc.open_collection(spec).partitions()),
            run(zarr_open, c=zcounter),
        )
        col = dzc.open_collection(spec)
        out["filter"] = (
            run(lambda: col.partitions(filt)),
            run(lambda: [p for p in zarr_paths() if "2000-01-" in p], c=zcounter),
        )
        out["read"] = (run(lambda: dzc.open_collection(spec).query()), run(zarr_read, c=zcounter))
        shutil.rmtree(base, ignore_errors=True)
        results = []
        for op, ((d, dreq), z) in out.items():
            values = {"dzc": d}
            note = f"dzc {dreq} req"
            if lat > 0:
                note += f" (serial {dreq * lat:.2f} s, overlap x{dreq * lat / d.median:.1f})"
            if z is not None:
                values["zarr"] = z[0]
                note += f"; zarr sequential {z[1]} req"
            results.append(
                Result(
                    f"sim.latency[{latency_ms:g}ms,N={n}].{op}",
                    "simulation",
                    "s",
                    values,
                    note=note,
                    params={"latency_ms": latency_ms, "N": n, "requests": dreq},
                )
            )
        return results

    return fn


def measurements(cfg: Config) -> list[Measurement]:
    """Planning (eager, lazy), the graph of a big catalog, and each latency x size."""
    out = [
        Measurement(f"sim.planning[N={cfg.sim_partitions}]", "simulation", m_planning),
        Measurement(f"sim.planning[N={cfg.sim_partitions}].lazy", "simulation", m_planning_lazy),
        Measurement(f"sim.graph[N={min(100_000, cfg.sim_partitions)},k=31]", "simulation", m_graph),
    ]
    for lat in cfg.latencies_ms:
        for n in cfg.latency_partitions:
            name = f"sim.latency[{lat:g}ms,N={n}]"
            out.append(
                Measurement(
                    name,
                    "simulation",
                    m_latency(lat, n),
                    rows=tuple(f"{name}.{op}" for op in ("insert", "open", "filter", "read")),
                )
            )
    return out
