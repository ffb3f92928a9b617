"""The measurements: one small function each, registered by :func:`registry`.

Groups, in run order:

``ceilings``    compressor and memory throughput of this machine on the data
``io``          the library vs raw zarr vs xarray on the main dataset
``codecs``      write / read throughput per codec and chunk length
``memory``      peak RSS of a streaming reduction (subprocesses)
``partitions``  many small partitions: insert cost, filter latency, graph size
``writes``      appending to a stored month; a dask-backed insert, threads vs a cluster
``simulation``  planning over a huge catalog; a store with latency per request
"""

from __future__ import annotations

import concurrent.futures
import importlib
import json
import os
import shutil
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable
from typing import Any

import numpy

import dask_zcollection as dzc

from . import _data
from ._context import Context, lazy_available
from ._core import Config, Measurement, NotImplementedYet, Result, Stat, timed

__all__ = ["GROUPS", "expected_names", "registry"]

GROUPS = ("ceilings", "io", "codecs", "memory", "partitions", "writes", "simulation")


def _read_collection(url: Any) -> Any:
    if not lazy_available():
        raise NotImplementedYet("dask_zcollection.read_collection")
    return dzc.read_collection(url)  # type: ignore[attr-defined]


def _compute(lazy: Any) -> Any:
    return lazy.compute()


def _mbps(stat: Stat | None, mb: float) -> str:
    return "" if stat is None else f"{mb / stat.median:,.0f} MB/s"


def _graph_len(obj: Any) -> int:
    return len(dict(obj.__dask_graph__()))


# ================================================================================================
# ceilings
# ================================================================================================
def _chunk_bytes(ctx: Context, chunks: int | None = None) -> numpy.ndarray:
    rows = min(chunks or ctx.cfg.chunks, ctx.cfg.rows)
    return numpy.ascontiguousarray(ctx.columns["ssh"][:rows])


def _codec_throughput(ctx: Context, codec_name: str, threads: int) -> tuple[Stat, Stat, float]:
    """Compress / decompress MB/s (uncompressed bytes) with ``threads`` threads; ratio."""
    import numcodecs.blosc

    codec = _data.numcodecs_codec(codec_name)
    data = _chunk_bytes(ctx)
    n_chunks = max(4, int((16e6 if ctx.cfg.quick else 128e6) // max(data.nbytes, 1)))
    if codec is None:

        def enc(x: numpy.ndarray) -> Any:
            return x.tobytes()

        def dec(b: Any) -> Any:
            return numpy.frombuffer(b, dtype=data.dtype).copy()
    else:
        enc, dec = codec.encode, codec.decode
    encoded = enc(data)
    ratio = data.nbytes / len(encoded)
    old = getattr(numcodecs.blosc, "use_threads", None)
    numcodecs.blosc.use_threads = False  # one blosc thread per call: we control parallelism
    try:
        with concurrent.futures.ThreadPoolExecutor(threads) as pool:

            def run(fn: Callable[[Any], Any], arg: Any) -> None:
                list(pool.map(fn, [arg] * n_chunks))

            mb = data.nbytes * n_chunks / 1e6
            c = timed(lambda: run(enc, data), ctx.cfg.repeats).inverse(mb)
            d = timed(lambda: run(dec, encoded), ctx.cfg.repeats).inverse(mb)
    finally:
        numcodecs.blosc.use_threads = old
    return c, d, ratio


def m_codec_ceiling(codec_name: str) -> Callable[[Context], list[Result]]:
    def fn(ctx: Context) -> list[Result]:
        one = _codec_throughput(ctx, codec_name, 1)
        two = _codec_throughput(ctx, codec_name, os.cpu_count() or 1)
        ctx.cache[f"ceiling.{codec_name}"] = {
            "compress": two[0],
            "decompress": two[1],
            "ratio": one[2],
        }
        label = f"{ctx.cfg.chunks}-row chunks, ratio {one[2]:.2f}"
        out = []
        for i, what in enumerate(("compress", "decompress")):
            out.append(
                Result(
                    f"ceiling.{what}[{codec_name}]",
                    "ceilings",
                    "MB/s",
                    values={"value": one[i], "threads": two[i]},
                    note=f"1 thread (first column) / {os.cpu_count()} threads: "
                    f"{two[i].median:,.0f}; {label}",
                    lower_is_better=False,
                )
            )
        return out

    return fn


def m_memcpy(ctx: Context) -> Result:
    src = ctx.columns["ssh"][: max(1, min(ctx.cfg.rows, int(256e6 // (4 * ctx.cfg.width))))]
    dst = numpy.empty_like(src)
    mb = src.nbytes / 1e6
    stat = timed(lambda: numpy.copyto(dst, src), max(3, ctx.cfg.repeats)).inverse(mb)
    fresh = timed(lambda: src.copy(), max(3, ctx.cfg.repeats)).inverse(mb)
    ctx.cache["ceiling.memcpy"] = stat
    return Result(
        "ceiling.memcpy",
        "ceilings",
        "MB/s",
        {"value": stat},
        note=f"into an existing buffer; into fresh memory {fresh.median:,.0f} MB/s",
        lower_is_better=False,
    )


def m_page_cache(ctx: Context) -> Result:
    ctx.ensure_written()
    root = ctx.path("main", "dzc")
    files = [os.path.join(d, f) for d, _, fs in os.walk(root) for f in fs]
    total = sum(os.path.getsize(f) for f in files)
    buf = bytearray(max(os.path.getsize(f) for f in files))
    view = memoryview(buf)

    def read_all() -> None:
        for f in files:
            fd = os.open(f, os.O_RDONLY)
            try:
                n = os.path.getsize(f)
                got = 0
                while got < n:
                    k = os.readv(fd, [view[got:n]])
                    if k == 0:
                        break
                    got += k
            finally:
                os.close(fd)

    read_all()  # warm
    stat = timed(read_all, max(3, ctx.cfg.repeats)).inverse(total / 1e6)
    ctx.cache["ceiling.page_cache"] = stat
    return Result(
        "ceiling.page_cache_read",
        "ceilings",
        "MB/s",
        {"value": stat},
        note=f"{len(files)} files, {total / 1e6:,.0f} MB stored (compressed) of the dzc store",
        lower_is_better=False,
    )


# ================================================================================================
# io: the library vs raw zarr vs xarray
# ================================================================================================
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
    stat = timed(lambda: _compute(_read_collection(ctx.dzc_url)), ctx.cfg.repeats)
    return _full_read_result(ctx, "io.full_read.lazy", stat)


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
    stat = timed(lambda: _compute(_read_collection(ctx.dzc_url).filter(filt)), ctx.cfg.repeats)
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
        lambda: _compute(_read_collection(ctx.dzc_url).filter(time=slice(a, b))), ctx.cfg.repeats
    )
    return Result("io.range_3day.lazy", "io", "s", {"dzc": stat, **_baseline_range(ctx)})  # type: ignore[dict-item]


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
    stat = timed(lambda: _read_collection(ctx.dzc_url).npartitions, max(3, ctx.cfg.repeats))
    return Result("io.open.lazy", "io", "s", {"dzc": stat, **_baseline_open(ctx)})  # type: ignore[dict-item]


# ================================================================================================
# codecs x chunks
# ================================================================================================
def _du(path: str) -> int:
    return sum(os.path.getsize(os.path.join(d, f)) for d, _, fs in os.walk(path) for f in fs)


def m_codec_cell(codec: str, chunks: int) -> Callable[[Context], list[Result]]:
    def fn(ctx: Context) -> list[Result]:
        rows = min(ctx.cfg.matrix_rows, ctx.cfg.rows)
        cols = {k: v[:rows] for k, v in ctx.columns.items()}
        mb = sum(v.nbytes for v in cols.values()) / 1e6
        schema = ctx.schema(codec, chunks)
        base = ctx.path("codecs", f"{codec}-{chunks}")
        url, zroot = "file://" + os.path.join(base, "dzc"), os.path.join(base, "zarr")

        def clear() -> None:
            shutil.rmtree(base, ignore_errors=True)

        r = ctx.cfg.repeats
        w_dzc = timed(lambda: ctx.write_dzc(url, cols, schema), r, setup=clear)
        w_zarr = timed(
            lambda: _data.zarr_write(zroot, cols, codec, chunks),
            r,
            setup=lambda: shutil.rmtree(zroot, ignore_errors=True),
        )
        stored = _du(zroot)
        r_dzc = timed(lambda: dzc.open_collection(url).query(), r)
        r_zarr = timed(lambda: _data.zarr_read_all(zroot), r)
        clear()
        tag = f"codec[{codec},{chunks}]"
        note = f"{mb:,.0f} MB, ratio {mb * 1e6 / stored:.2f}"
        return [
            Result(
                f"{tag}.write",
                "codecs",
                "MB/s",
                {"dzc": w_dzc.inverse(mb), "zarr": w_zarr.inverse(mb)},
                note=note,
                lower_is_better=False,
                params={"codec": codec, "chunks": chunks},
            ),
            Result(
                f"{tag}.read",
                "codecs",
                "MB/s",
                {"dzc": r_dzc.inverse(mb), "zarr": r_zarr.inverse(mb)},
                note=note,
                lower_is_better=False,
                params={"codec": codec, "chunks": chunks},
            ),
        ]

    return fn


# ================================================================================================
# memory: peak RSS of a streaming reduction, each in a fresh subprocess
# ================================================================================================
_CHILD_PRELUDE = """
import json, os, resource, sys
import numpy
args = json.loads(sys.argv[1])
def done(value):
    # VmHWM, not ru_maxrss: Linux carries ru_maxrss over from the parent across fork + exec.
    with open("/proc/self/status") as f:
        hwm = [int(line.split()[1]) for line in f if line.startswith("VmHWM:")]
    rss = hwm[0] if hwm else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(json.dumps({"maxrss_kb": rss, "value": float(value)}))
"""

_CHILD = {
    "baseline": """
import dask, xarray, zarr, dask_zcollection
done(0.0)
""",
    "dzc": """
import dask_zcollection as dzc
col = dzc.open_collection(args["url"])
cat = col.catalog()
total, count = 0.0, 0
for i in range(len(cat)):
    key = dict(zip(cat.key_names, cat.key_tuple(i)))
    ds = col.query(filters=" and ".join(f"{k} == {v}" for k, v in key.items()), variables=["ssh"])
    ssh = ds["ssh"].values
    total += float(numpy.nansum(ssh, dtype="float64")); count += int(numpy.isfinite(ssh).sum())
    del ds, ssh
done(total / count)
""",
    "dzc_lazy": """
import dask_zcollection as dzc
ds = dzc.read_collection(args["url"]).to_xarray()
done(ds["ssh"].mean().compute())
""",
    "zarr": """
import zarr
total, count = 0.0, 0
for name in sorted(os.listdir(args["zarr"])):
    ssh = zarr.open_group(os.path.join(args["zarr"], name), mode="r", zarr_format=3)["ssh"][:]
    total += float(numpy.nansum(ssh, dtype="float64")); count += int(numpy.isfinite(ssh).sum())
    del ssh
done(total / count)
""",
    "xarray": """
import xarray
paths = [os.path.join(args["xarray"], n) for n in sorted(os.listdir(args["xarray"]))]
ds = xarray.open_mfdataset(paths, engine="zarr", consolidated=False, combine="nested",
    concat_dim="time", zarr_format=3, data_vars="all", coords="different", compat="no_conflicts",
    join="outer")
done(ds["ssh"].mean().compute())
""",
}


def _child_rss(ctx: Context, which: str) -> Stat:
    code = textwrap.dedent(_CHILD_PRELUDE) + textwrap.dedent(_CHILD[which])
    args = json.dumps({"url": ctx.dzc_url, "zarr": ctx.zarr_root, "xarray": ctx.xarray_root})
    samples = []
    for _ in range(1 if ctx.cfg.quick else max(1, min(ctx.cfg.repeats, 3))):
        proc = subprocess.run(
            [sys.executable, "-c", code, args], capture_output=True, text=True, timeout=1800
        )
        if proc.returncode:
            raise RuntimeError(f"{which} child failed: {proc.stderr.strip().splitlines()[-1:]}")
        out = json.loads(proc.stdout.strip().splitlines()[-1])
        samples.append(out["maxrss_kb"] / 1024)
    return Stat.of(samples)


def m_memory_baseline(ctx: Context) -> Result:
    stat = _child_rss(ctx, "baseline")
    ctx.cache["memory.baseline"] = stat
    return Result(
        "memory.baseline",
        "memory",
        "MB",
        {"value": stat},
        note="peak RSS of a child that only imports dask, xarray, zarr, dask_zcollection",
    )


def _memory_note(ctx: Context) -> str:
    return (
        f"peak RSS of a child; data {ctx.mb:,.0f} MB uncompressed; "
        "mean of ssh over the whole collection"
    )


def m_memory(ctx: Context) -> Result:
    ctx.ensure_written()
    values = {
        "dzc": _child_rss(ctx, "dzc"),
        "zarr": ctx.cached("mem.zarr", lambda: _child_rss(ctx, "zarr")),
        "xarray": ctx.cached("mem.xarray", lambda: _child_rss(ctx, "xarray")),
    }
    return Result(
        "memory.reduction",
        "memory",
        "MB",
        values,  # type: ignore[arg-type]
        note="eager: one query per partition; " + _memory_note(ctx),
    )


def m_memory_lazy(ctx: Context) -> Result:
    if not lazy_available():
        raise NotImplementedYet("dask_zcollection.read_collection")
    ctx.ensure_written()
    values = {
        "dzc": _child_rss(ctx, "dzc_lazy"),
        "zarr": ctx.cached("mem.zarr", lambda: _child_rss(ctx, "zarr")),
        "xarray": ctx.cached("mem.xarray", lambda: _child_rss(ctx, "xarray")),
    }
    return Result(
        "memory.reduction.lazy",
        "memory",
        "MB",
        values,  # type: ignore[arg-type]
        note="to_xarray()['ssh'].mean(); " + _memory_note(ctx),
    )


# ================================================================================================
# many partitions
# ================================================================================================
_MANY_START = numpy.datetime64("2000-01-01T00:00:00", "ns")
_GRAPH_K = 10


def _many_columns(ctx: Context, n: int) -> dict[str, numpy.ndarray]:
    rows = ctx.cfg.many_rows
    return _data.make_columns(
        n * rows, ctx.cfg.width, start=_MANY_START, step_s=86400 / rows, seed=n
    )


class _Many:
    """Fixture of ``n`` daily partitions in the three layouts (raw ones sampled)."""

    def __init__(self, ctx: Context, n: int) -> None:
        self.ctx, self.n = ctx, n
        self.base = ctx.path(f"many-{n}")
        self.url = "file://" + os.path.join(self.base, "dzc")
        self.zarr_root = os.path.join(self.base, "zarr")
        self.xarray_root = os.path.join(self.base, "xarray")
        self.columns = _many_columns(ctx, n)
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
        days = _MANY_START.astype("datetime64[D]") + numpy.arange(self.sample, self.n)
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


def _month_filter() -> str:
    return "year == 2000 and month == 1"


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
        filt = _month_filter()
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
        filt = _month_filter()
        d = timed(lambda: _read_collection(f.url).filter(filt).npartitions, r)
        z = ctx.cached(f"many.{n}.list", lambda: timed(lambda: _zarr_list_select(f.zarr_root), r))
        opened = _read_collection(f.url)
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
        lazy = _read_collection(f.url).filter(filt)
        tasks = _graph_len(lazy)
        build = time.perf_counter() - t0
        paths = [
            os.path.join(f.xarray_root, _data.partition_name(d))
            for d in _MANY_START.astype("datetime64[D]") + numpy.arange(k)
        ]
        t0 = time.perf_counter()
        xtasks = _graph_len(_data.xarray_open(paths))
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


# ================================================================================================
# simulation: a huge catalog, a store with latency
# ================================================================================================
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
    size = _du(ctx.path("sim", "dzc", "_catalog"))
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
        tasks.append(_graph_len(_read_collection(url).filter(filt)))

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

    from ._latency import LatencyStore

    return LatencyStore(ZarrLocalStore(path), latency, counter)


def m_latency(latency_ms: float, n: int) -> Callable[[Context], list[Result]]:
    def fn(ctx: Context) -> list[Result]:
        import zarr

        from ._latency import LatencyLocalStore, RequestCounter

        lat = latency_ms / 1000.0
        cfg = ctx.cfg
        base = ctx.path(f"latency-{latency_ms:g}-{n}")
        spec = LatencyLocalStore(os.path.join(base, "dzc"), latency=lat)
        counter = spec.counter
        zcounter = RequestCounter()
        cols = _many_columns(ctx, n)
        repeats = min(2, cfg.repeats)
        filt = _month_filter()
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


# ================================================================================================
# writes
# ================================================================================================
_APPEND_STORED, _APPEND_NEW = 90_000, 3_000


class _Append:
    """A stored 90,000-row month in the three layouts, copied afresh before each append."""

    def __init__(self, ctx: Context) -> None:
        import zarr

        cfg = ctx.cfg
        self.ctx = ctx
        self.base = ctx.path("append")
        cols = _data.make_columns(_APPEND_STORED + _APPEND_NEW, cfg.width, seed=7)
        self.old = {k: v[:_APPEND_STORED] for k, v in cols.items()}
        self.new = {k: v[_APPEND_STORED:] for k, v in cols.items()}
        self.templates = {k: os.path.join(self.base, "template", k) for k in _TRIO}
        self.live = {k: os.path.join(self.base, "live", k) for k in _TRIO}
        col = dzc.create_collection(
            "file://" + self.templates["dzc"],
            schema=ctx.schema(),
            axis="time",
            partitioning=dzc.partitioning.Date(("time",), resolution="M"),
            overwrite=True,
        )
        col.insert(self.old)
        group = zarr.open_group(self.templates["zarr"], mode="w", zarr_format=3)
        for name, typesize, fill in (("time", 8, None), ("ssh", 4, numpy.float32("nan"))):
            data = self.old[name]
            group.create_array(
                name,
                data=data,
                chunks=(cfg.chunks, *data.shape[1:]),
                compressors=_data.codec_chain(cfg.codec, typesize) or None,
                fill_value=fill,
                dimension_names=("time", "x_ac")[: data.ndim],
            )
        _data.xarray_dataset(self.old).to_zarr(
            self.templates["xarray"],
            mode="w",
            zarr_format=3,
            consolidated=False,
            encoding=_data.xarray_encoding(cfg.codec, cfg.chunks, cfg.width, _APPEND_STORED),
        )

    def fresh(self, which: str) -> Callable[[], None]:
        def setup() -> None:
            shutil.rmtree(self.live[which], ignore_errors=True)
            shutil.copytree(self.templates[which], self.live[which])
            # The copy's dirty pages are written back now, not during the timed append.
            os.sync()

        return setup

    def zarr_append(self) -> None:
        import zarr

        group = zarr.open_group(self.live["zarr"], mode="r+", zarr_format=3)
        for name, data in self.new.items():
            group[name].append(data)  # type: ignore[union-attr]

    def xarray_append(self) -> None:
        _data.xarray_dataset(self.new).to_zarr(
            self.live["xarray"], append_dim="time", zarr_format=3, consolidated=False
        )


_TRIO = ("dzc", "zarr", "xarray")


def m_append(merge: str) -> Callable[[Context], Result]:
    def fn(ctx: Context) -> Result:
        if "append" not in ctx.cache:
            ctx.cache["append"] = _Append(ctx)
        f: _Append = ctx.cache["append"]
        url = "file://" + f.live["dzc"]

        def insert() -> None:
            dzc.open_collection(url, mode="rw").insert(f.new, merge=merge)

        r, w = max(ctx.cfg.repeats, 5), 2
        values = {
            "dzc": timed(insert, r, setup=f.fresh("dzc"), warmup=w),
            "zarr": ctx.cached(
                "append.zarr", lambda: timed(f.zarr_append, r, setup=f.fresh("zarr"), warmup=w)
            ),
            "xarray": ctx.cached(
                "append.xarray",
                lambda: timed(f.xarray_append, r, setup=f.fresh("xarray"), warmup=w),
            ),
        }
        # The values appended land after the stored ones, nothing else changed.
        got = dzc.open_collection(url).query()
        expected = numpy.concatenate([f.old["time"], f.new["time"]])
        if not numpy.array_equal(got["time"].values, expected):
            raise AssertionError("the appended month does not hold the expected rows")
        return Result(
            f"writes.append[{merge}]",
            "writes",
            "s",
            values,  # type: ignore[arg-type]
            note=f"{_APPEND_NEW:,} rows after a stored {_APPEND_STORED:,}-row month "
            "(dzc: open + insert + commit; zarr: Array.append; xarray: to_zarr(append_dim))",
        )

    return fn


def _dask_columns(ctx: Context) -> dict[str, Any]:
    """The main dataset as dask arrays whose chunks the workers compute themselves.

    One chunk per day, as an acquisition pipeline producing a day per task:
    each merge-write task then runs where its day was computed.
    """
    import dask.array as da

    cfg = ctx.cfg
    rows, step = cfg.rows, 86400

    def block(width: int, block_info: Any = None) -> numpy.ndarray:
        lo, hi = block_info[None]["array-location"][0]
        return _data.make_columns(hi - lo, width, seed=lo)["ssh"]

    ssh = da.map_blocks(
        block,
        cfg.width,
        dtype="float32",
        chunks=(tuple(min(step, rows - lo) for lo in range(0, rows, step)), (cfg.width,)),
    )
    time_ = _data.EPOCH + numpy.arange(rows, dtype="int64").astype("timedelta64[s]").astype(
        "timedelta64[ns]"
    )
    return {"time": da.from_array(time_, chunks=step), "ssh": ssh}


def m_dask_insert(ctx: Context) -> list[Result]:
    """A dask-backed insert on the threaded scheduler and on a 2-process LocalCluster."""
    import distributed

    cols = _dask_columns(ctx)
    root = ctx.path("dask-insert")
    url = "file://" + root
    r = min(ctx.cfg.repeats, 2)

    def insert() -> None:
        col = dzc.create_collection(
            url,
            schema=ctx.schema(),
            axis="time",
            partitioning=dzc.partitioning.Date(("time",), resolution="D"),
            overwrite=True,
        )
        col.insert(cols)

    clear = lambda: shutil.rmtree(root, ignore_errors=True)  # noqa: E731
    threads = timed(insert, r, setup=clear)
    on_cluster = {}
    # One worker process, then two: the ratio shows the insert's tasks run in parallel
    # on the cluster (the threaded scheduler already keeps both cores busy here).
    for workers in (1, 2):
        with (
            distributed.LocalCluster(
                n_workers=workers, threads_per_worker=1, processes=True, dashboard_address=None
            ) as cluster,
            distributed.Client(cluster) as client,
        ):
            # A cluster in use has the library imported on its workers already.
            client.run(importlib.import_module, "dask_zcollection.io")
            on_cluster[workers] = timed(insert, r, setup=clear)
    rows = dzc.open_collection(url).catalog().rows.sum()
    shutil.rmtree(root, ignore_errors=True)
    if int(rows) != ctx.cfg.rows:
        raise AssertionError(f"the insert stored {rows} rows, expected {ctx.cfg.rows}")
    note = (
        f"{ctx.mb:,.0f} MB generated by the workers (map_blocks), daily partitions; "
        f"LocalCluster(2 processes x 1 thread) {on_cluster[1].median / on_cluster[2].median:.2f}x "
        f"1 process, {threads.median / on_cluster[2].median:.2f}x the threaded scheduler"
    )
    return [
        Result("writes.dask_insert.threads", "writes", "s", {"dzc": threads}, note=note),
        Result("writes.dask_insert.cluster1", "writes", "s", {"dzc": on_cluster[1]}, note=note),
        Result("writes.dask_insert.cluster", "writes", "s", {"dzc": on_cluster[2]}, note=note),
    ]


# ================================================================================================
# the registry
# ================================================================================================
def registry(cfg: Config) -> list[Measurement]:
    """Every measurement for ``cfg``, in run order."""
    M = Measurement
    out: list[Measurement] = []
    codecs = list(dict.fromkeys([cfg.codec, *cfg.codec_matrix]))
    for c in codecs:
        out.append(
            M(f"ceiling[{c}]", "ceilings", m_codec_ceiling(c), description="numcodecs on one chunk")
        )
    out.append(M("ceiling.memcpy", "ceilings", m_memcpy))
    out += [
        M("io.write", "io", m_write),
        M("io.full_read", "io", m_full_read),
        M("io.full_read.lazy", "io", m_full_read_lazy, needs_lazy=True),
        M("io.one_partition", "io", m_one_partition),
        M("io.one_partition.lazy", "io", m_one_partition_lazy, needs_lazy=True),
        M("io.range_3day", "io", m_range),
        M("io.range_3day.lazy", "io", m_range_lazy, needs_lazy=True),
        M("io.open", "io", m_open),
        M("io.open.lazy", "io", m_open_lazy, needs_lazy=True),
        M("ceiling.page_cache_read", "ceilings", m_page_cache),
    ]
    for c in cfg.codec_matrix:
        for ch in cfg.chunk_matrix:
            out.append(M(f"codec[{c},{ch}]", "codecs", m_codec_cell(c, ch)))
    out += [
        M("memory.baseline", "memory", m_memory_baseline),
        M("memory.reduction", "memory", m_memory),
        M("memory.reduction.lazy", "memory", m_memory_lazy, needs_lazy=True),
    ]
    for n in cfg.many:
        out += [
            M(f"partitions[N={n}].insert", "partitions", m_many_insert(n)),
            M(f"partitions[N={n}].filter", "partitions", m_many_filter(n)),
            M(
                f"partitions[N={n}].filter.lazy",
                "partitions",
                m_many_filter_lazy(n),
                needs_lazy=True,
            ),
            M(f"partitions[N={n}].graph", "partitions", m_many_graph(n), needs_lazy=True),
        ]
    out += [M(f"writes.append[{m}]", "writes", m_append(m)) for m in ("time_series", "upsert")]
    out.append(M("writes.dask_insert", "writes", m_dask_insert))
    out += [
        M(f"sim.planning[N={cfg.sim_partitions}]", "simulation", m_planning),
        M(
            f"sim.planning[N={cfg.sim_partitions}].lazy",
            "simulation",
            m_planning_lazy,
            needs_lazy=True,
        ),
        M(
            f"sim.graph[N={min(100_000, cfg.sim_partitions)},k=31]",
            "simulation",
            m_graph,
            needs_lazy=True,
        ),
    ]
    for lat in cfg.latencies_ms:
        for n in cfg.latency_partitions:
            out.append(M(f"sim.latency[{lat:g}ms,N={n}]", "simulation", m_latency(lat, n)))
    return out


def expected_names(cfg: Config) -> list[str]:
    """Row names a full (unfiltered) run of ``cfg`` produces, skipped rows included."""
    names: list[str] = []
    for m in registry(cfg):
        if m.name.startswith("ceiling["):
            c = m.name[len("ceiling[") : -1]
            names += [f"ceiling.compress[{c}]", f"ceiling.decompress[{c}]"]
        elif m.name.startswith("codec["):
            names += [f"{m.name}.write", f"{m.name}.read"]
        elif m.name == "writes.dask_insert":
            names += [f"{m.name}.{run}" for run in ("threads", "cluster1", "cluster")]
        elif m.name.startswith("sim.latency["):
            names += [f"{m.name}.{op}" for op in ("insert", "open", "filter", "read")]
        else:
            names.append(m.name)
    return names
