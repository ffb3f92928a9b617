"""Where the reduction's time goes on a cluster: ``python -m benchmarks.cluster_breakdown``.

Not a row of the table: a diagnosis, printed. For ``to_xarray(chunks=...)
["ssh"].mean()`` over the main dataset (written under ``--dir`` when missing)
on the threaded scheduler, on ``LocalCluster(2 processes x 1 thread)`` and on
the same cluster with :data:`~benchmarks.cluster.MALLOC_TUNED` workers
(:func:`~benchmarks.cluster.tuned_allocator`):

- wall time of ``--repeats`` passes after a warm-up (sorted);
- CPU seconds and minor page faults per pass, of the worker processes and of
  this process (the client, and the ``LocalCluster``'s scheduler);
- the tasks of one more pass by name (count, total and mean duration), from
  ``get_task_stream()`` on the cluster and a dask callback on threads, and how
  long each worker was busy within the pass's span.

``--chunks 32MiB`` measures ``to_xarray(chunks="32MiB")`` instead of the default
blocks (one zarr chunk each).
"""

from __future__ import annotations

import argparse
import collections
import importlib
import os
import resource
import time
from collections.abc import Callable
from typing import Any

import dask
import numpy

import dask_zcollection as dzc

from ._context import Context
from ._core import Config, parse_size
from .cluster import local_cluster, tuned_allocator


def _usage() -> tuple[float, int]:
    use = resource.getrusage(resource.RUSAGE_SELF)
    return use.ru_utime + use.ru_stime, use.ru_minflt


def _prefix(key: Any) -> str:
    name = str(key[0] if isinstance(key, tuple) else key)
    return name.rsplit("-", 1)[0]


def _print_tasks(durations: dict[str, list[float]]) -> None:
    for name, values in sorted(durations.items(), key=lambda kv: -sum(kv[1])):
        print(
            f"    {name:<40} n={len(values):<4d} total {sum(values):6.3f} s  "
            f"mean {sum(values) / len(values) * 1e3:6.1f} ms"
        )


def _passes(fn: Callable[[], None], repeats: int) -> list[float]:
    fn()
    walls = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        walls.append(time.perf_counter() - t0)
    return sorted(walls)


def _threads(mean: Callable[[], None], repeats: int) -> None:
    from dask.callbacks import Callback

    cpu0, faults0 = _usage()
    walls = _passes(mean, repeats)
    cpu1, faults1 = _usage()
    n = repeats + 1
    print(f"threads: wall {', '.join(f'{w:.3f}' for w in walls)} s")
    print(
        f"  CPU {(cpu1 - cpu0) / n:.2f} s/pass, {(faults1 - faults0) / n / 1e3:.1f} k faults/pass"
    )
    starts: dict[Any, float] = {}
    durations: dict[str, list[float]] = collections.defaultdict(list)

    class Timer(Callback):
        def _pretask(self, key: Any, dsk: Any, state: Any) -> None:
            starts[key] = time.perf_counter()

        def _posttask(self, key: Any, result: Any, dsk: Any, state: Any, id: Any) -> None:
            durations[_prefix(key)].append(time.perf_counter() - starts[key])

    with Timer():
        mean()
    _print_tasks(durations)


def _cluster(label: str, mean: Callable[[], None], repeats: int) -> None:
    import distributed

    with local_cluster() as client:
        client.run(importlib.import_module, "dask_zcollection.io")
        before, here0 = client.run(_usage), _usage()
        walls = _passes(mean, repeats)
        after, here1 = client.run(_usage), _usage()
        n = repeats + 1
        workers = sum(after[w][0] - before[w][0] for w in before) / n
        faults = sum(after[w][1] - before[w][1] for w in before) / n
        print(f"{label}: wall {', '.join(f'{w:.3f}' for w in walls)} s")
        print(
            f"  CPU {workers:.2f} s/pass on the workers + {(here1[0] - here0[0]) / n:.2f} s here; "
            f"{faults / 1e3:.1f} k faults/pass on the workers"
        )
        with distributed.get_task_stream() as stream:
            mean()
        durations: dict[str, list[float]] = collections.defaultdict(list)
        spans: list[tuple[float, float, str]] = []
        for task in stream.data:
            for step in task["startstops"]:
                if step["action"] == "compute":
                    durations[_prefix(task["key"])].append(step["stop"] - step["start"])
                    spans.append((step["start"], step["stop"], task["worker"]))
        print(f"  {len(stream.data)} tasks")
        _print_tasks(durations)
        if spans:
            span = max(s[1] for s in spans) - min(s[0] for s in spans)
            busy = collections.Counter[str]()
            for a, b, w in spans:
                busy[w] += b - a
            print(
                f"  span {span:.3f} s; busy "
                + ", ".join(f"{v:.3f} s" for v in sorted(busy.values()))
                + " per worker"
            )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dir", default="/tmp/dzc-cluster-breakdown")
    parser.add_argument("--size", default="1GB")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--chunks", default=None, help="to_xarray(chunks=...), e.g. 32MiB")
    args = parser.parse_args(argv)
    cfg = Config(size=parse_size(args.size))
    ctx = Context(cfg, args.dir)
    if not os.path.exists(ctx.path("main", "dzc", "_zcollection.json")):
        ctx.write_dzc()
    expected = float(numpy.nanmean(ctx.columns["ssh"], dtype="float64"))
    lazy = dzc.read_collection(ctx.dzc_url)

    def mean() -> None:
        got = float(lazy.to_xarray(chunks=args.chunks)["ssh"].mean().compute())
        if not numpy.isclose(got, expected, rtol=1e-5):
            raise AssertionError(f"mean {got} != {expected}")

    print(
        f"to_xarray(chunks={args.chunks!r})['ssh'].mean(), {ctx.mb:,.0f} MB, load {os.getloadavg()}"
    )
    with dask.config.set(scheduler="threads"):
        _threads(mean, args.repeats)
    _cluster("cluster", mean, args.repeats)
    with tuned_allocator():
        _cluster("cluster, MALLOC_TUNED workers", mean, args.repeats)


if __name__ == "__main__":
    main()
