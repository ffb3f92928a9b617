"""The demo behind ``./run demo``: create a local collection, insert, read back with filters.

Run with ``python -m dask_zcollection.demo [--dir PATH] [--days N]``.
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import time
from pathlib import Path

import numpy

import dask_zcollection as dzc


def _synthetic(
    start: str, days: int, step_s: int = 10, width: int = 240
) -> dict[str, numpy.ndarray]:
    """Altimetry-like rows: a time axis and an ``ssh`` field (smooth signal plus noise)."""
    n = days * 86_400 // step_s
    time_ = numpy.datetime64(start, "ns") + numpy.arange(n) * numpy.timedelta64(step_s, "s")
    rng = numpy.random.default_rng(0)
    phase = numpy.linspace(0, 40 * numpy.pi, n, dtype="float32")[:, None]
    x = numpy.linspace(-1, 1, width, dtype="float32")[None, :]
    ssh = numpy.sin(phase + x) + rng.normal(0, 0.05, (n, width)).astype("float32")
    return {"time": time_, "ssh": ssh, "x_ac": numpy.arange(width, dtype="int16")}


def altimetry_schema(width: int = 240, chunks: int = 8192) -> dzc.Schema:
    """The demo's schema: a ``time`` axis and an ``ssh`` field ``width`` cross-track points wide."""
    return (
        dzc.Schema()
        .with_dimension("time", chunks=chunks)
        .with_dimension("x_ac", size=width, chunks=width)
        .with_variable("time", dtype="datetime64[ns]", dimensions=("time",))
        .with_variable(
            "ssh",
            dtype="float32",
            dimensions=("time", "x_ac"),
            fill_value=numpy.float32("nan"),
            attrs={"units": "m", "long_name": "sea surface height"},
        )
        .with_variable("x_ac", dtype="int16", dimensions=("x_ac",))
        .build()
    )


def main(argv: list[str] | None = None) -> None:
    """Run the demo and print what it does, with timings."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument(
        "--dir", default=None, help="where to create the collection (default: a temp dir)"
    )
    parser.add_argument("--days", type=int, default=90, help="days of 10 s data to insert")
    parser.add_argument("--width", type=int, default=240, help="cross-track points of ssh")
    args = parser.parse_args(argv)
    root = Path(args.dir) if args.dir else Path(tempfile.mkdtemp(prefix="dzc-demo-"))
    url = f"file://{root.resolve() / 'altimetry'}"

    schema = altimetry_schema(width=args.width)
    col = dzc.create_collection(
        url,
        schema=schema,
        axis="time",
        partitioning=dzc.partitioning.Date(("time",), resolution="M"),
        overwrite=True,
    )
    data = _synthetic("2024-01-01", args.days, width=args.width)
    mb = sum(a.nbytes for a in data.values()) / 1e6
    t0 = time.perf_counter()
    written = col.insert(data)
    t1 = time.perf_counter()
    print(f"created {url}")
    print(
        f"inserted {mb:.0f} MB into {len(written)} monthly partitions in {t1 - t0:.2f} s: {written}"
    )

    # Appending new acquisitions: time_series merge, in place after the stored rows.
    more = _synthetic(str(data["time"][-1] + numpy.timedelta64(10, "s")), 1, width=args.width)
    t0 = time.perf_counter()
    col.insert({"time": more["time"], "ssh": more["ssh"]}, merge="time_series")
    print(f"appended one more day ({more['time'].size} rows) in {time.perf_counter() - t0:.3f} s")

    lazy = dzc.read_collection(url)
    print(lazy)
    selected = lazy.filter("month == 2")[["time", "ssh"]]
    print(selected.explain())
    t0 = time.perf_counter()
    february = selected.compute()
    print(f"filtered read (month == 2) in {time.perf_counter() - t0:.3f} s:")
    print(february)

    three_days = lazy.filter(time=slice("2024-03-01", "2024-03-03T23:59:59"))
    t0 = time.perf_counter()
    part = three_days.compute()
    rows = 0 if part is None else part["time"].size  # None: no partition in the range
    print(f"3-day range read in {time.perf_counter() - t0:.3f} s: {rows} rows")

    t0 = time.perf_counter()
    mean = float(lazy.to_xarray()["ssh"].mean().compute())
    print(
        f"streaming mean of ssh over the whole collection: {mean:.5f} "
        f"({time.perf_counter() - t0:.2f} s)"
    )
    if not args.dir:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
