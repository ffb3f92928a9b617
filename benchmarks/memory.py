"""``memory``: peak RSS of a streaming reduction, each in a fresh subprocess.

The mean of ``ssh`` over the whole main dataset: the library one eager query
per partition (or lazily through ``to_xarray()``), raw zarr a loop over the
stores, xarray ``open_mfdataset``; the baseline child only imports the libraries.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

from ._context import Context
from ._core import Config, Measurement, Result, Stat

__all__ = ["measurements"]

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


def measurements(cfg: Config) -> list[Measurement]:
    """The import baseline, then the eager and lazy reductions."""
    return [
        Measurement("memory.baseline", "memory", m_memory_baseline),
        Measurement("memory.reduction", "memory", m_memory),
        Measurement("memory.reduction.lazy", "memory", m_memory_lazy),
    ]
