"""Cost of chunk checksums, A/B in one process (``python -m benchmarks.checksums``).

Writes and reads (all, and one day) the same data (``ssh`` float32 x 240 +
``time``, 4 daily partitions, 16384-row chunks) in two ``file://`` collections, one with
checksums (crc32c on every chunk and the chunk record, the default) and one
``schema.with_checksums(False)``, alternating which goes first in each round
so load changes on a shared machine fall on both. Prints the medians of wall
time and of the process's CPU time (all threads: on a shared machine it
varies far less than wall time) and the ratios on/off for each codec.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import tempfile
import time
from collections.abc import Callable

import numpy

import dask_zcollection as zc

from ._data import make_columns, make_schema


def _timed(fn: Callable[[], object]) -> tuple[float, float]:
    """Wall and CPU seconds of ``fn()``."""
    t0, c0 = time.perf_counter(), time.process_time()
    fn()
    return time.perf_counter() - t0, time.process_time() - c0


def run(codec: str, mb: int, rounds: int) -> dict[str, dict[str, tuple[float, float, float]]]:
    """Median wall, median CPU and min wall seconds of each operation, checksums on and off.

    Operations: ``write`` (insert all), ``read`` (``query()`` of all), ``one``
    (``query`` of the first day).
    """
    width = 240
    rows = mb * 1024 * 1024 // (width * 4)
    columns = make_columns(rows, width, step_s=86400 * 4 / rows)  # 4 daily partitions
    schemas = {"on": make_schema(width, codec, 16384)}
    schemas["off"] = schemas["on"].with_checksums(False)
    day = columns["time"][0].astype("datetime64[D]").astype(object)
    first_day = {"year": day.year, "month": day.month, "day": day.day}
    work = tempfile.mkdtemp()
    times: dict[str, dict[str, list[tuple[float, float]]]] = {
        k: {"write": [], "read": [], "one": []} for k in ("on", "off")
    }
    try:
        for r in range(rounds):
            order = ["on", "off"] if r % 2 == 0 else ["off", "on"]
            for which in order:
                url = f"file://{work}/{which}"
                col = zc.create_collection(
                    url,
                    schema=schemas[which],
                    axis="time",
                    partitioning=zc.partitioning.Date(("time",), resolution="D"),
                    overwrite=True,
                )
                times[which]["write"].append(_timed(lambda c=col: c.insert(columns)))
            for which in order:
                url = f"file://{work}/{which}"
                times[which]["read"].append(_timed(lambda u=url: zc.open_collection(u).query()))
            for which in order:
                url = f"file://{work}/{which}"
                times[which]["one"].append(
                    _timed(lambda u=url: zc.open_collection(u).query(filters=first_day))
                )
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return {
        k: {
            op: (
                statistics.median(w for w, _ in v),
                statistics.median(c for _, c in v),
                min(w for w, _ in v),
            )
            for op, v in ops.items()
        }
        for k, ops in times.items()
    }


def main() -> None:
    """Run the A/B rounds and print the table."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--mb", type=int, default=256, help="data size in MB")
    p.add_argument("--rounds", type=int, default=7, help="rounds (median)")
    p.add_argument("--codecs", default="zstd3,lz4", help="codecs, comma separated")
    args = p.parse_args()
    print(f"{args.mb} MB, {args.rounds} rounds, medians: wall s (MB/s) | CPU s")
    print(f"{'codec':<6} {'op':<6} {'wall on':>15} {'wall off':>15} {'on/off':>7} ", end="")
    print(f"{'cpu on':>7} {'cpu off':>7} {'on/off':>7} {'min on':>7} {'min off':>7} {'on/off':>7}")
    for codec in args.codecs.split(","):
        res = run(codec, args.mb, args.rounds)
        for op in ("write", "read", "one"):
            (won, con, mon), (woff, coff, moff) = res["on"][op], res["off"][op]
            print(
                f"{codec:<6} {op:<6} {won:6.3f} ({args.mb / won:5.0f}) "
                f"{woff:6.3f} ({args.mb / woff:5.0f}) {won / woff:7.3f} "
                f"{con:7.3f} {coff:7.3f} {con / coff:7.3f} "
                f"{mon:7.3f} {moff:7.3f} {mon / moff:7.3f}"
            )


if __name__ == "__main__":
    numpy.seterr(all="ignore")
    main()
