"""Views against their baselines, in one process (``python -m benchmarks.views``).

* **read**: a view read of one month (``time``, ``ssh`` from the base,
  ``ssh_anom`` from the view) against a plain read of the same bytes from the
  base (``time``, ``ssh`` and ``ssh2``, a base variable of the same size as
  ``ssh_anom``): the target is within 1.1x. Each read opens its collection
  (``read_view`` / ``read_collection``), filters and computes, as a user does.
* **update**: ``view.update`` computing ``ssh_anom = ssh - mean`` over a
  12-month collection against raw zarr reading ``ssh`` of each partition and
  writing ``ssh_anom`` with the same chunks and codec (the same threads, one
  task per partition): the target is within 1.3x.

The machine may be shared: the two sides of each comparison are measured as
adjacent pairs, alternating which goes first (load falls on both), and the
figures are the minimum and median of each side, the ratios of both, and the
median of the pairs' ratios. ``--latency-ms`` reads both sides through a
local store adding that latency to every request (an object store's round
trips); the requests of one read of each side are counted and printed.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import tempfile
import time
from collections.abc import Callable
from typing import Any

import numpy

import dask_zcollection as dzc

from ._data import codec_chain, make_columns
from ._latency import LatencyLocalStore

CODEC = "lz4"


def _timed(fn: Callable[[], object]) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def _schema(width: int, chunks: int) -> dzc.Schema:
    codecs = {"bytes_to_bytes": codec_chain(CODEC, 4)}
    return (
        dzc.Schema()
        .with_dimension("time", chunks=chunks)
        .with_dimension("x_ac", size=width, chunks=width)
        .with_variable("time", dtype="datetime64[ns]", dimensions=("time",))
        .with_variable("ssh", dtype="float32", dimensions=("time", "x_ac"), codecs=codecs)
        .with_variable("ssh2", dtype="float32", dimensions=("time", "x_ac"), codecs=codecs)
        .build()
    )


def _anomaly(ds: dzc.Dataset) -> dict[str, numpy.ndarray]:
    ssh = ds["ssh"].values
    return {"ssh_anom": ssh - ssh.mean(axis=0, dtype="float32")}


def _raw_update(base: str, out: str, paths: list[str], chunks: int, width: int) -> None:
    """Raw zarr: read ``ssh`` of each partition, write ``ssh_anom`` beside, one task each."""
    import dask
    import zarr

    def one(path: str) -> None:
        ssh = zarr.open_array(f"{base}/{path}/ssh", mode="r")[:]
        values = ssh - ssh.mean(axis=0, dtype="float32")
        arr = zarr.create_array(
            f"{out}/{path}/ssh_anom",
            shape=values.shape,
            chunks=(min(chunks, len(values)), width),
            dtype="float32",
            compressors=codec_chain(CODEC, 4),
            overwrite=True,
        )
        arr[:] = values

    dask.compute(*(dask.delayed(one)(p) for p in paths), scheduler="threads")


def _pairs(
    a: Callable[[], object], b: Callable[[], object], n: int
) -> tuple[list[float], list[float], list[float], list[float]]:
    """Wall and CPU seconds of ``n`` adjacent runs of ``a`` and ``b``, alternating the first.

    The CPU time is the process's (every thread): what the read costs whatever
    the other tenants of the machine do.
    """
    wall: dict[int, list[float]] = {0: [], 1: []}
    cpu: dict[int, list[float]] = {0: [], 1: []}
    for i in range(n):
        for side in (0, 1) if i % 2 == 0 else (1, 0):
            fn = (a, b)[side]
            c0 = time.process_time()
            wall[side].append(_timed(fn))
            cpu[side].append(time.process_time() - c0)
    return wall[0], wall[1], cpu[0], cpu[1]


def _stats(
    side: list[float], baseline: list[float], cpu: list[float], cpu_base: list[float]
) -> dict[str, float]:
    """Min and median of both sides, their ratios, the median of the pairs' ratios, CPU."""
    return {
        "min": min(side),
        "median": statistics.median(side),
        "base_min": min(baseline),
        "base_median": statistics.median(baseline),
        "ratio_min": min(side) / min(baseline),
        "ratio_median": statistics.median(side) / statistics.median(baseline),
        "ratio_paired": statistics.median(x / y for x, y in zip(side, baseline, strict=True)),
        "cpu_median": statistics.median(cpu),
        "base_cpu_median": statistics.median(cpu_base),
        "ratio_cpu": statistics.median(cpu) / statistics.median(cpu_base),
    }


def run(
    rows_per_month: int,
    width: int,
    chunks: int,
    rounds: int,
    reads: int = 10,
    latency_ms: float = 0.0,
) -> dict[str, Any]:
    """Both comparisons: ``rounds * reads`` read pairs, ``rounds`` update pairs."""
    work = tempfile.mkdtemp()
    try:
        rows = 12 * rows_per_month
        columns = make_columns(rows, width, step_s=365 * 86400 / rows)
        columns["ssh2"] = (columns["ssh"] * numpy.float32(0.5)).astype("float32")
        base_url = f"file://{work}/base"
        col = dzc.create_collection(
            base_url,
            schema=_schema(width, chunks),
            axis="time",
            partitioning=dzc.partitioning.Date(("time",), resolution="M"),
        )
        col.insert(columns)
        paths = [p for p in col.catalog().paths]
        variables = [
            {
                "name": "ssh_anom",
                "dtype": "float32",
                "dimensions": ["time", "x_ac"],
                "fill_value": float("nan"),
                "codecs": {"bytes_to_bytes": codec_chain(CODEC, 4)},
            }
        ]
        view_url = f"file://{work}/view"
        view = dzc.create_view(view_url, base=base_url, variables=variables)
        view.update(_anomaly, variables=["ssh"])  # the view to read
        month = "year == {y} and month == 2".format(y=int(str(columns["time"][0])[:4]))

        def reader(
            latency: float | None,
        ) -> tuple[Callable[[], Any], Callable[[], Any]]:
            """Both reads: on ``file://`` URLs (``None``) or through a latency store."""
            vspec: Any = view_url
            bspec: Any = base_url
            base: Any = None  # the view finds its base by the URL it records
            if latency is not None:
                vspec = LatencyLocalStore(f"{work}/view", latency=latency)
                bspec = base = LatencyLocalStore(f"{work}/base", latency=latency)

            def view_read() -> Any:
                lazy = dzc.read_view(vspec, base=base)
                return lazy.filter(month)[["time", "ssh", "ssh_anom"]].compute()

            def base_read() -> Any:
                lazy = dzc.read_collection(bspec)
                return lazy.filter(month)[["time", "ssh", "ssh2"]].compute()

            return view_read, base_read

        # Requests of one read of each side (after a warm-up read), counted without latency.
        view_read, base_read = reader(0.0)
        counters = (
            LatencyLocalStore(f"{work}/view", latency=0.0).counter,
            LatencyLocalStore(f"{work}/base", latency=0.0).counter,
        )
        requests: dict[str, dict[str, int]] = {}
        for name, fn in (("view", view_read), ("base", base_read)):
            fn()
            for c in counters:
                c.reset()
            fn()
            requests[name] = {"view store": counters[0].reset(), "base store": counters[1].reset()}
        view_read, base_read = reader(latency_ms / 1e3 if latency_ms > 0 else None)
        view_read(), base_read()  # warm-up
        read_times = _pairs(view_read, base_read, rounds * reads)

        def update() -> None:
            dzc.open_view(f"file://{work}/upd", mode="rw").update(_anomaly, variables=["ssh"])

        def raw() -> None:
            _raw_update(f"{work}/base", f"{work}/raw", paths, chunks, width)

        dzc.create_view(f"file://{work}/upd", base=base_url, variables=variables)
        update_times = _pairs(update, raw, rounds)
        return {
            "read": _stats(*read_times),
            "update": _stats(*update_times),
            "requests": requests,
            "latency_ms": latency_ms,
            "mb_per_variable": rows * width * 4 / 1e6,
        }
    finally:
        shutil.rmtree(work, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows-per-month", type=int, default=40_000)
    parser.add_argument("--width", type=int, default=64)
    parser.add_argument("--chunks", type=int, default=16_384)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--reads", type=int, default=10, help="read pairs per round")
    parser.add_argument("--latency-ms", type=float, default=0.0, help="per request, reads only")
    args = parser.parse_args()
    out = run(
        args.rows_per_month, args.width, args.chunks, args.rounds, args.reads, args.latency_ms
    )
    where = f"{out['latency_ms']:g} ms per request" if out["latency_ms"] else "file://"
    print(f"data: 12 months, {out['mb_per_variable']:.0f} MB per float32 variable, codec {CODEC}")
    for label, key, unit, scale, target in (
        (f"read one month ({where}): view", "read", "ms", 1e3, 1.1),
        ("update 12 months: view.update", "update", "ms", 1e3, 1.3),
    ):
        st = out[key]
        base = "base (same bytes)" if key == "read" else "raw zarr"
        print(
            f"{label} min {st['min'] * scale:.1f} / median {st['median'] * scale:.1f} {unit}, "
            f"{base} {st['base_min'] * scale:.1f} / {st['base_median'] * scale:.1f} {unit}; "
            f"ratio of mins {st['ratio_min']:.2f}, of medians {st['ratio_median']:.2f}, "
            f"median of pairs {st['ratio_paired']:.2f} (target <= {target}); "
            f"CPU median {st['cpu_median'] * scale:.1f} / {st['base_cpu_median'] * scale:.1f} "
            f"{unit}, ratio {st['ratio_cpu']:.2f}"
        )
    req = out["requests"]
    print(
        "requests of one read: view {v} (view store {vv}, base store {vb}), base {b}".format(
            v=sum(req["view"].values()),
            vv=req["view"]["view store"],
            vb=req["view"]["base store"],
            b=req["base"]["base store"],
        )
    )


if __name__ == "__main__":
    main()
