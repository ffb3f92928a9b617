"""Indexed selection vs full-partition read, and map_overlap vs map_partitions.

``python -m benchmarks.indexing --mb 1024``

Writes ``--mb`` MB (``ssh`` float32 x 240 + ``time``, daily partitions,
``--chunk``-row chunks) to a ``file://`` collection, builds an index of
"passes" (runs of ``--pass-rows`` rows) and selects ~1 % of the rows (random
passes over every partition). Times, median of ``--rounds``:

- ``indexed``: ``read_collection(url).filter(index=idx, pass_number=chosen).compute()``;
- ``full``: the same partitions read whole (what one did before indexes, then masked);
- ``overlap`` / ``partitions``: a centred moving mean of ``ssh`` (``--depth`` rows)
  with ``map_overlap`` and with ``map_partitions`` (wrong at the edges) over all rows.

Prints the times, their ratios and the chunks each read touches.
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

import dask_zcollection as zc
from dask_zcollection.indexing import Indexer

from ._data import make_columns, make_schema

WIDTH = 240


def passes(pass_rows: int) -> Callable[[Any], dict[str, numpy.ndarray]]:
    """An index builder: pass ``k`` is rows ``[k * pass_rows, (k + 1) * pass_rows)`` of the day."""

    def build(ds: Any) -> dict[str, numpy.ndarray]:
        n = ds.dimensions["time"]
        day = ds["time"].values[:1].astype("datetime64[D]").astype("int64")
        starts = numpy.arange(0, n, pass_rows, dtype="int64")
        stops = numpy.minimum(starts + pass_rows, n)
        number = (day * 10_000 if len(day) else 0) + numpy.arange(len(starts))
        return {"pass_number": number, "_start": starts, "_stop": stops}

    return build


def moving_mean(ds: Any, depth: int) -> Any:
    """Centred moving mean of ``ssh`` over ``2 * depth + 1`` rows (truncated at the ends)."""
    x = ds["ssh"].values.astype("float64")
    c = numpy.concatenate([numpy.zeros((1, x.shape[1])), numpy.cumsum(x, axis=0)])
    i = numpy.arange(len(x))
    lo, hi = numpy.maximum(i - depth, 0), numpy.minimum(i + depth + 1, len(x))
    out = ((c[hi] - c[lo]) / (hi - lo)[:, None]).astype("float32")
    return ds.with_variables({"ssh": ds["ssh"].with_data(out)})


def _timed(fn: Callable[[], Any]) -> tuple[float, Any]:
    t0 = time.perf_counter()
    out = fn()
    return time.perf_counter() - t0, out


def run(mb: int, rounds: int, chunk: int, pass_rows: int, depth: int, days: int) -> None:
    rows = mb * 1024 * 1024 // (WIDTH * 4 + 8)
    work = tempfile.mkdtemp()
    url = f"file://{work}/col"
    try:
        columns = make_columns(rows, WIDTH, step_s=86400 * days / rows)
        col = zc.create_collection(
            url,
            schema=make_schema(WIDTH, "lz4", chunk),
            axis="time",
            partitioning=zc.partitioning.Date(("time",), resolution="D"),
        )
        t_write, _ = _timed(lambda: col.insert(columns))
        lazy = zc.read_collection(url)
        t_index, idx = _timed(lambda: Indexer.build(lazy, passes(pass_rows), variables=["time"]))
        numbers = idx.table["pass_number"]
        rng = numpy.random.default_rng(0)
        chosen = rng.choice(numbers, max(1, round(len(numbers) * 0.01)), replace=False)
        indexed = lazy.filter(index=idx, pass_number=chosen.tolist())
        partitions = indexed.partitions
        full = lazy.filter(" or ".join(_key_filter(p) for p in partitions))
        selected = sum(
            b - a for r in idx.lookup(pass_number=chosen.tolist()).values() for a, b in r
        )
        times: dict[str, list[float]] = {k: [] for k in ("indexed", "full", "overlap", "maps")}
        for _ in range(rounds):
            times["indexed"].append(_timed(indexed.compute)[0])
            times["full"].append(_timed(full.compute)[0])
        for _ in range(max(1, rounds // 2)):
            times["overlap"].append(
                _timed(lazy["ssh"].map_overlap(moving_mean, depth, depth).compute)[0]
            )
            times["maps"].append(_timed(lazy["ssh"].map_partitions(moving_mean, depth).compute)[0])
        med = {k: statistics.median(v) for k, v in times.items()}
        found = idx.lookup(pass_number=chosen.tolist())
        chunks_sel = len(
            {
                (p, c)
                for p, r in found.items()
                for a, b in r
                for c in range(a // chunk, (b - 1) // chunk + 1)
            }
        )
        chunks_all = sum(-(-n // chunk) for n in indexed.catalog.rows.tolist())
        print(
            f"{mb} MB, {rows:,} rows, {len(lazy.partitions)} daily partitions, "
            f"chunks of {chunk} rows"
        )
        print(f"write {t_write:.2f} s, index build {t_index:.2f} s ({len(idx)} passes)")
        print(
            f"selection: {len(chosen)} passes, {selected:,} rows ({100 * selected / rows:.2f} %) "
            f"in {len(partitions)} partitions; {chunks_sel} of their {chunks_all} chunks of ssh "
            "hold them (the indexed read reads only those)"
        )
        print(f"indexed read   {med['indexed']:.3f} s")
        print(
            f"full partitions {med['full']:.3f} s   "
            f"ratio indexed/full {med['indexed'] / med['full']:.3f}"
        )
        print(f"map_overlap    {med['overlap']:.3f} s")
        print(
            f"map_partitions {med['maps']:.3f} s   ratio overlap/partitions "
            f"{med['overlap'] / med['maps']:.3f}"
        )
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _key_filter(path: str) -> str:
    """``year=2024/month=01/day=02`` -> ``(year == 2024 and month == 1 and day == 2)``."""
    terms = [f"{k} == {int(v)}" for k, v in (c.split("=") for c in path.split("/"))]
    return "(" + " and ".join(terms) + ")"


def main() -> None:
    p = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    p.add_argument("--mb", type=int, default=256, help="data size in MB")
    p.add_argument("--rounds", type=int, default=3, help="rounds (median)")
    p.add_argument("--chunk", type=int, default=4096, help="rows per chunk")
    p.add_argument("--pass-rows", type=int, default=1024, help="rows per pass (index entry)")
    p.add_argument("--depth", type=int, default=16, help="map_overlap depth in rows")
    p.add_argument("--days", type=int, default=8, help="daily partitions")
    args = p.parse_args()
    run(args.mb, args.rounds, args.chunk, args.pass_rows, args.depth, args.days)


if __name__ == "__main__":
    numpy.seterr(all="ignore")
    main()
