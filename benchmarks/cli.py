"""Command line of the benchmarks.

``python -m benchmarks [--quick] [--size 1GB] [--json out.json] [--compare old.json]``
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import fnmatch
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
import traceback
from collections.abc import Sequence
from typing import Any

from ._context import Context
from ._core import Config, Result, parse_size
from ._report import compare, format_table, load_json, to_json
from ._suite import GROUPS, registry

__all__ = ["main", "run"]


def _log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def run(
    cfg: Config, workdir: str, only: Sequence[str] = (), *, verbose: bool = True
) -> list[Result]:
    """Run the measurements of ``cfg`` (those matching ``only``: names, globs or groups)."""
    ctx = Context(cfg, workdir)
    results: list[Result] = []
    for m in registry(cfg):
        if only and not any(
            fnmatch.fnmatch(m.name, p) or p == m.group or p in m.name for p in only
        ):
            continue
        t0 = time.perf_counter()
        if verbose:
            _log(f"[bench] {m.name} ...")
        try:
            out = m.fn(ctx)
            results.extend(out if isinstance(out, list) else [out])
        except Exception as err:  # a failing measurement must not lose the others
            results.append(
                Result(m.name, m.group, "", status="error", note=f"{type(err).__name__}: {err}")
            )
            if verbose:
                traceback.print_exc()
        if verbose:
            _log(f"[bench] {m.name} done in {time.perf_counter() - t0:.1f} s")
    return results


def _versions() -> dict[str, str]:
    out = {"python": platform.python_version()}
    for mod in ("dask_zcollection", "zarr", "numcodecs", "numpy", "dask", "xarray"):
        try:
            out[mod] = __import__(mod).__version__
        except Exception:  # pragma: no cover
            out[mod] = "?"
    return out


def _git_commit() -> str | None:
    try:
        here = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
        proc = subprocess.run(
            ["git", "-C", here, "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
            timeout=10,
        )
        return proc.stdout.strip() or None
    except Exception:  # pragma: no cover
        return None


def _ints(text: str) -> tuple[int, ...]:
    return tuple(int(x) for x in text.split(",") if x)


def _floats(text: str) -> tuple[float, ...]:
    return tuple(float(x) for x in text.split(",") if x)


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__)
    p.add_argument("--quick", action="store_true", help="small sizes, runs in seconds (smoke test)")
    p.add_argument("--size", help="main dataset size, e.g. 1GB, 300MB (default 1GB)")
    p.add_argument("--repeats", type=int, help="runs per timing (median, min-max)")
    p.add_argument("--codec", help="compressor for all three: none, zstd1, zstd3, lz4")
    p.add_argument("--chunks", type=int, help="chunk length along time (rows)")
    p.add_argument("--many", type=_ints, help="partition counts, e.g. 1000,10000")
    p.add_argument("--sim-partitions", type=int, help="catalog size of the planning simulation")
    p.add_argument(
        "--scale-partitions", type=_ints, help="catalog sizes of the scale group, e.g. 1000,100000"
    )
    p.add_argument("--latencies", type=_floats, help="simulated latencies in ms, e.g. 0,5,20")
    p.add_argument(
        "--latency-partitions", type=_ints, help="partition counts under latency, e.g. 10,100"
    )
    p.add_argument("--codec-matrix", help="codecs of the codec/chunk matrix, comma separated")
    p.add_argument(
        "--chunk-matrix", type=_ints, help="chunk lengths of the matrix, e.g. 4096,16384"
    )
    p.add_argument(
        "--big-insert",
        help="size of the dask-backed insert on a 2 x 3 GB cluster, e.g. 10GB (default: skip)",
    )
    p.add_argument(
        "--only",
        action="append",
        default=[],
        help="run only these measurements (name, glob or group); repeatable",
    )
    p.add_argument(
        "--dir", help="work directory (default: a new one under /tmp, removed at the end)"
    )
    p.add_argument("--keep", action="store_true", help="keep the work directory")
    p.add_argument("--json", help="write the results as JSON here")
    p.add_argument("--compare", help="a JSON file of an earlier run: print old/new")
    p.add_argument("--list", action="store_true", help="list the measurements and exit")
    p.add_argument("--no-notes", action="store_true", help="table without the note lines")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress on stderr")
    return p


def config_from_args(args: argparse.Namespace) -> Config:
    cfg = Config.quick_config() if args.quick else Config()
    over: dict[str, Any] = {}
    if args.size:
        over["size"] = parse_size(args.size)
    for name, attr in (
        ("repeats", "repeats"),
        ("codec", "codec"),
        ("chunks", "chunks"),
        ("many", "many"),
        ("sim_partitions", "sim_partitions"),
        ("scale_partitions", "scale_partitions"),
        ("latencies", "latencies_ms"),
        ("latency_partitions", "latency_partitions"),
        ("chunk_matrix", "chunk_matrix"),
    ):
        value = getattr(args, name)
        if value is not None:
            over[attr] = value
    if args.big_insert:
        over["big_insert"] = parse_size(args.big_insert)
    if args.codec_matrix:
        over["codec_matrix"] = tuple(args.codec_matrix.split(","))
    return dataclasses.replace(cfg, **over)


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    cfg = config_from_args(args)
    if args.list:
        for m in registry(cfg):
            print(f"{m.group:12s} {m.name}")
        return 0
    workdir = args.dir or tempfile.mkdtemp(prefix="dzc-bench-", dir="/tmp")
    if args.dir:
        workdir = os.path.join(args.dir, f"dzc-bench-{os.getpid()}")
    t0 = time.perf_counter()
    try:
        results = run(cfg, workdir, args.only, verbose=not args.quiet)
    finally:
        if not args.keep:
            import shutil

            shutil.rmtree(workdir, ignore_errors=True)
    elapsed = time.perf_counter() - t0
    meta = {
        "config": dataclasses.asdict(cfg),
        "versions": _versions(),
        "commit": _git_commit(),
        "cpus": os.cpu_count(),
        "machine": platform.machine(),
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "elapsed_s": elapsed,
        "argv": list(argv if argv is not None else sys.argv[1:]),
    }
    print(
        f"dask_zcollection benchmarks: {cfg.size / 1e6:,.0f} MB, codec {cfg.codec}, "
        f"chunks {cfg.chunks} rows, {cfg.repeats} runs each (median (min-max)), "
        f"{os.cpu_count()} CPUs, {elapsed:.0f} s"
    )
    print(format_table(results, GROUPS, notes=not args.no_notes))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(to_json(results, meta), f, indent=1)
        print(f"\nwrote {args.json}")
    if args.compare:
        _, old = load_json(args.compare)
        print(f"\ncompared with {args.compare}:")
        print(compare(old, results))
    errors = [r for r in results if r.status == "error"]
    return 1 if errors else 0
