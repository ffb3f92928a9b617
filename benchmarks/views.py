"""Views against their baselines, in one process (``python -m benchmarks.views``).

* **read**: a view read of one month (``time``, ``ssh`` from the base,
  ``ssh_anom`` from the view) against a plain read of the same bytes from the
  base (``time``, ``ssh`` and ``ssh2``, a base variable of the same size as
  ``ssh_anom``): the target is within 1.1x.
* **update**: ``view.update`` computing ``ssh_anom = ssh - mean`` over a
  12-month collection against raw zarr reading ``ssh`` of each partition and
  writing ``ssh_anom`` with the same chunks and codec (the same threads, one
  task per partition): the target is within 1.3x.

The two sides alternate which goes first in each round (load on a shared
machine falls on both). Prints the medians of wall time and the ratios.
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


def run(rows_per_month: int, width: int, chunks: int, rounds: int) -> dict[str, Any]:
    """Median seconds of each side of each comparison."""
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
        times: dict[str, list[float]] = {"view": [], "base": [], "update": [], "zarr": []}

        def view_read() -> None:
            dzc.read_view(view_url).filter(month)[["time", "ssh", "ssh_anom"]].compute()

        def base_read() -> None:
            dzc.read_collection(base_url).filter(month)[["time", "ssh", "ssh2"]].compute()

        def update() -> None:
            dzc.open_view(f"file://{work}/upd", mode="rw").update(_anomaly, variables=["ssh"])

        def raw() -> None:
            _raw_update(f"{work}/base", f"{work}/raw", paths, chunks, width)

        dzc.create_view(f"file://{work}/upd", base=base_url, variables=variables)
        for r in range(rounds):
            pairs = [("view", view_read), ("base", base_read)]
            for name, fn in pairs if r % 2 == 0 else pairs[::-1]:
                times[name].append(_timed(fn))
            pairs = [("update", update), ("zarr", raw)]
            for name, fn in pairs if r % 2 == 0 else pairs[::-1]:
                times[name].append(_timed(fn))
        med = {k: statistics.median(v) for k, v in times.items()}
        return {
            "median_s": med,
            "min_s": {k: min(v) for k, v in times.items()},
            "read_ratio": med["view"] / med["base"],
            "update_ratio": med["update"] / med["zarr"],
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
    args = parser.parse_args()
    out = run(args.rows_per_month, args.width, args.chunks, args.rounds)
    med, low = out["median_s"], out["min_s"]
    print(f"data: 12 months, {out['mb_per_variable']:.0f} MB per float32 variable, codec {CODEC}")
    print(
        f"read one month:  view {med['view'] * 1e3:.1f} ms, base (same bytes) "
        f"{med['base'] * 1e3:.1f} ms, ratio {out['read_ratio']:.2f} (target <= 1.1); "
        f"min {low['view'] * 1e3:.1f} / {low['base'] * 1e3:.1f} ms"
    )
    print(
        f"update 12 months: view.update {med['update'] * 1e3:.0f} ms, raw zarr "
        f"{med['zarr'] * 1e3:.0f} ms, ratio {out['update_ratio']:.2f} (target <= 1.3); "
        f"min {low['update'] * 1e3:.0f} / {low['zarr'] * 1e3:.0f} ms"
    )


if __name__ == "__main__":
    main()
