"""``cluster``: the main dataset on a 2-process ``LocalCluster`` against the threaded scheduler.

Rows:

- ``cluster.read.threads`` / ``.cluster``: ``read_collection(url).compute()``
  of the whole collection. On a cluster the result is computed on a worker and
  shipped to the client; ``cluster.transfer`` is the same number of bytes as
  one plain numpy array moved from a worker to the client (no library code),
  the floor of any ``compute()`` of that size on a cluster.
- ``cluster.mean.threads`` / ``.cluster``: ``to_xarray().ssh.mean()``, a
  reduction: only a scalar crosses to the client.
- ``cluster.mean.cluster_malloc``: the same reduction on a cluster whose
  workers start with :data:`MALLOC_TUNED` (glibc keeps large buffers on its
  heap for reuse instead of the nanny's ``MALLOC_TRIM_THRESHOLD_=65536``).
- ``cluster.mean_blocks.threads`` / ``.cluster`` / ``.cluster_malloc``: the
  reduction over ``to_xarray(chunks=BLOCKS)`` (blocks of whole zarr chunks up
  to 32 MiB: half the tasks of the 16384-row default).
- ``cluster.overhead.threads`` / ``.cluster``: the same shape of reduction
  (72 blocks and dask's mean tree) over blocks of 16 rows made in memory: no
  library code, what the scheduler and the workers cost per task.
- The ``xarray`` column of ``cluster.mean.threads`` / ``.cluster``: the peer,
  ``open_mfdataset`` of the daily zarr stores (one block per store), the same mean.

The notes of the mean rows give the CPU seconds per pass of the worker
processes and of this process (the client, and the scheduler of a
``LocalCluster``): on 2 cores wall time follows the sum.
- ``cluster.persist``: ``persist()`` on the cluster; the note says where the
  partitions are held (the workers, never the client).
- ``cluster.big_insert`` (only with ``--big-insert SIZE``, e.g. ``10GB``): a
  dask-backed array of that size, generated on the workers, inserted into
  monthly partitions on a ``LocalCluster`` of 2 workers with a 3 GB memory limit
  each; the note gives the peak memory of each worker.
"""

from __future__ import annotations

import importlib
import os
import shutil
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import numpy

import dask_zcollection as dzc
from dask_zcollection.allocator import TuneAllocator

from . import _data
from ._context import Context
from ._core import Config, Measurement, Result, Stat, timed

__all__ = ["measurements"]


#: The advice of docs/distributed.md: buffers up to 32 MiB come from glibc's heap
#: (reused, no page faults), which keeps up to 128 MiB free at its top.
MALLOC_TUNED = {
    "distributed.nanny.pre-spawn-environ.MALLOC_MMAP_THRESHOLD_": 32 << 20,
    "distributed.nanny.pre-spawn-environ.MALLOC_TRIM_THRESHOLD_": 128 << 20,
}


@contextmanager
def tuned_allocator() -> Iterator[None]:
    """:data:`MALLOC_TUNED` for the workers of the clusters started inside the block.

    A nanny copies the variables it gives its worker into this process's
    ``os.environ``, and reads ``os.environ`` before the config: after one
    cluster with the defaults, its ``MALLOC_TRIM_THRESHOLD_=65536`` would win
    over the config (a half-tuned worker). They are removed for the block and
    restored after.
    """
    import dask

    names = [key.rsplit(".", 1)[1] for key in MALLOC_TUNED]
    saved = {n: os.environ.pop(n) for n in names if n in os.environ}
    try:
        with dask.config.set(MALLOC_TUNED):
            yield
    finally:
        for n in names:
            os.environ.pop(n, None)
        os.environ.update(saved)


@contextmanager
def local_cluster(n_workers: int = 2, **kwargs: Any) -> Iterator[Any]:
    """A ``LocalCluster`` of ``n_workers`` processes x 1 thread and its client (the default)."""
    import distributed

    with (
        distributed.LocalCluster(
            n_workers=n_workers,
            threads_per_worker=1,
            processes=True,
            dashboard_address=None,
            **kwargs,
        ) as cluster,
        distributed.Client(cluster) as client,
    ):
        # A cluster in use has the library imported on its workers already.
        client.run(importlib.import_module, "dask_zcollection.io")
        yield client


def _ones(nbytes: int) -> numpy.ndarray:
    return numpy.ones(nbytes, dtype="uint8")


#: ``to_xarray(chunks=)`` of the ``mean_blocks`` rows: 2 zarr chunks of the main dataset,
#: under glibc's largest heap (not mmap) allocation on threads and on tuned workers.
BLOCKS = "32MiB"


def _cpu_seconds() -> float:
    import resource

    use = resource.getrusage(resource.RUSAGE_SELF)
    return use.ru_utime + use.ru_stime


class _CpuPerPass:
    """CPU seconds per call of the worker processes and of this process, around ``timed``."""

    def __init__(self, client: Any | None) -> None:
        self.client = client
        self.workers = self.here = 0.0

    def timed(self, fn: Callable[[], None], repeats: int) -> Stat:
        fn()  # the warm-up, outside the count
        w0 = sum(self.client.run(_cpu_seconds).values()) if self.client else 0.0
        h0 = _cpu_seconds()
        stat = timed(fn, repeats)
        self.here = (_cpu_seconds() - h0) / repeats
        if self.client:
            self.workers = (sum(self.client.run(_cpu_seconds).values()) - w0) / repeats
        return stat

    def text(self) -> str:
        if self.client is None:
            return f"CPU {self.here:.2f} s/pass"
        return f"CPU {self.workers:.2f} s/pass on the workers + {self.here:.2f} s here"


def _noop_block(rows: int, width: int, block_info: Any = None) -> numpy.ndarray:
    return numpy.ones((rows, width), dtype="float32")


def m_cluster(ctx: Context) -> list[Result]:
    """Whole read, reduction and persist, on threads then on the cluster."""
    import dask
    import distributed

    ctx.ensure_written()
    url, r = ctx.dzc_url, ctx.cfg.repeats
    lazy = dzc.read_collection(url)
    expected_mean = float(numpy.nanmean(ctx.columns["ssh"], dtype="float64"))

    def read() -> None:
        ds = lazy.compute()
        if ds["time"].shape[0] != ctx.cfg.rows:
            raise AssertionError("the read returned the wrong number of rows")

    def mean(chunks: str | None = None) -> None:
        got = float(lazy.to_xarray(chunks=chunks)["ssh"].mean().compute())
        if not numpy.isclose(got, expected_mean, rtol=1e-5):
            raise AssertionError(f"mean {got} != {expected_mean}")

    def mean_blocks() -> None:
        mean(BLOCKS)

    # The shape of the reduction's graph without the library: as many blocks, tiny.
    import dask.array as da

    n_blocks = lazy.to_dask_array("ssh").numblocks[0]
    noop = da.map_blocks(
        _noop_block, 16, 240, dtype="float32", chunks=((16,) * n_blocks, (240,))
    ).mean()
    noop_tasks = len(dask.optimize(noop)[0].__dask_graph__())

    def overhead() -> None:
        if float(noop.compute()) != 1.0:
            raise AssertionError("the no-op reduction is wrong")

    peer_paths = sorted(_data.iter_partitions(ctx.xarray_root))

    def mean_xarray() -> None:
        got = float(_data.xarray_open(peer_paths)["ssh"].mean().compute())
        if not numpy.isclose(got, expected_mean, rtol=1e-5):
            raise AssertionError(f"xarray mean {got} != {expected_mean}")

    cpu: dict[str, _CpuPerPass] = {}

    def counted(label: str, client: Any | None, fn: Callable[[], None]) -> Stat:
        cpu[label] = _CpuPerPass(client)
        return cpu[label].timed(fn, r)

    with dask.config.set(scheduler="threads"):
        read_threads = timed(read, r, warmup=1)
        mean_threads = counted("threads", None, mean)
        blocks_threads = counted("blocks.threads", None, mean_blocks)
        overhead_threads = timed(overhead, r, warmup=1)
        xarray_threads = timed(mean_xarray, r, warmup=1)
    with local_cluster() as client:
        read_cluster = timed(read, r, warmup=1)
        mean_cluster = counted("cluster", client, mean)
        blocks_cluster = counted("blocks.cluster", client, mean_blocks)
        overhead_cluster = timed(overhead, r, warmup=1)
        xarray_cluster = timed(mean_xarray, r, warmup=1)

        def transfer() -> None:
            future = client.submit(_ones, ctx.nbytes, pure=False)
            distributed.wait(future)
            t0 = time.perf_counter()
            future.result()
            samples.append(time.perf_counter() - t0)

        samples: list[float] = []
        for _ in range(r + 1):
            transfer()
        transfer_stat = Stat.of(samples[1:])  # the first pays the client's allocation
        t0 = time.perf_counter()
        held = lazy.persist()
        futures = distributed.futures_of(held)
        distributed.wait(futures)
        persist_s = time.perf_counter() - t0
        placed = client.who_has(futures)
        workers = {w for holders in placed.values() for w in holders}
        on_workers = sum(1 for holders in placed.values() if holders)
        # Partitions the client holds itself (a persisted result it computed locally).
        layer = dict(held.__dask_graph__())
        on_client = sum(1 for v in layer.values() if isinstance(v, dzc.Dataset))
        n_persisted = len(futures)
        del held, futures
    mean_tuned: Stat | None = None
    blocks_tuned: Stat | None = None
    mean_plugin: Stat | None = None
    blocks_plugin: Stat | None = None
    if not ctx.cfg.quick:  # more clusters: not in the smoke test
        with tuned_allocator(), local_cluster() as client:
            mean_tuned = counted("cluster_malloc", client, mean)
            blocks_tuned = counted("blocks.cluster_malloc", client, mean_blocks)
        # The nanny's defaults, then the library's plugin tunes the running workers.
        with local_cluster() as client:
            client.register_plugin(TuneAllocator())
            mean_plugin = counted("cluster_plugin", client, mean)
            blocks_plugin = counted("blocks.cluster_plugin", client, mean_blocks)
    ratio = read_cluster.median / read_threads.median
    read_note = (
        f"{ctx.mb:,.0f} MB, {lazy.npartitions} partitions; cluster {ratio:.2f}x threads; "
        f"moving {ctx.mb:,.0f} MB from a worker to the client alone takes "
        f"{transfer_stat.median:.2f} s (cluster.transfer)"
    )

    def ratios(
        label: str, threads: Stat, on_cluster: Stat, tuned: Stat | None, plugin: Stat | None
    ) -> str:
        base = f"{label} on the cluster {on_cluster.median / threads.median:.2f}x threads"
        if tuned is not None:
            base += f", {tuned.median / threads.median:.2f}x with MALLOC_TUNED workers"
        if plugin is not None:
            base += f", {plugin.median / threads.median:.2f}x with TuneAllocator"
        return base

    def cpu_text(prefix: str) -> str:
        return "; ".join(
            f"{k.removeprefix(prefix)} {v.text()}"
            for k, v in cpu.items()
            if k.startswith(prefix) and (prefix or "." not in k)
        )

    mean_note = (
        ratios("to_xarray().ssh.mean()", mean_threads, mean_cluster, mean_tuned, mean_plugin)
        + f" ({n_blocks} blocks); "
        + cpu_text("")
    )
    blocks_note = (
        ratios(
            f"to_xarray(chunks={BLOCKS!r})",
            mean_threads,
            blocks_cluster,
            blocks_tuned,
            blocks_plugin,
        )
        + f" (threads' default); {blocks_threads.median / mean_threads.median:.2f}x on threads; "
        + cpu_text("blocks.")
    )
    overhead_note = (
        f"{n_blocks} blocks of 16 rows, the mean's {noop_tasks} tasks: the cluster's own cost "
        f"{(overhead_cluster.median - overhead_threads.median) * 1e3 / noop_tasks:.1f} ms a task"
    )
    xarray_note = (
        f"open_mfdataset of {len(peer_paths)} zarr stores + ssh.mean(): cluster "
        f"{xarray_cluster.median / xarray_threads.median:.2f}x threads"
    )
    persist_note = (
        f"{on_workers} of {n_persisted} partitions held on {len(workers)} worker(s), "
        f"{on_client} on the client"
    )
    return (
        [
            Result("cluster.read.threads", "cluster", "s", {"dzc": read_threads}, note=read_note),
            Result("cluster.read.cluster", "cluster", "s", {"dzc": read_cluster}, note=read_note),
            Result("cluster.transfer", "cluster", "s", {"dzc": transfer_stat}, note=read_note),
            Result(
                "cluster.mean.threads",
                "cluster",
                "s",
                {"dzc": mean_threads, "xarray": xarray_threads},
                note=f"{mean_note}; {xarray_note}",
            ),
            Result(
                "cluster.mean.cluster",
                "cluster",
                "s",
                {"dzc": mean_cluster, "xarray": xarray_cluster},
                note=f"{mean_note}; {xarray_note}",
            ),
            Result(
                "cluster.persist", "cluster", "s", {"dzc": Stat.one(persist_s)}, note=persist_note
            ),
            Result(
                "cluster.mean_blocks.threads",
                "cluster",
                "s",
                {"dzc": blocks_threads},
                note=blocks_note,
            ),
            Result(
                "cluster.mean_blocks.cluster",
                "cluster",
                "s",
                {"dzc": blocks_cluster},
                note=blocks_note,
            ),
            Result(
                "cluster.overhead.threads",
                "cluster",
                "s",
                {"value": overhead_threads},
                note=overhead_note,
            ),
            Result(
                "cluster.overhead.cluster",
                "cluster",
                "s",
                {"value": overhead_cluster},
                note=overhead_note,
            ),
        ]
        + (
            []
            if mean_tuned is None or blocks_tuned is None
            else [
                Result(
                    "cluster.mean.cluster_malloc",
                    "cluster",
                    "s",
                    {"dzc": mean_tuned},
                    note=mean_note,
                ),
                Result(
                    "cluster.mean_blocks.cluster_malloc",
                    "cluster",
                    "s",
                    {"dzc": blocks_tuned},
                    note=blocks_note,
                ),
            ]
        )
        + (
            []
            if mean_plugin is None or blocks_plugin is None
            else [
                Result(
                    "cluster.mean.cluster_plugin",
                    "cluster",
                    "s",
                    {"dzc": mean_plugin},
                    note=mean_note,
                ),
                Result(
                    "cluster.mean_blocks.cluster_plugin",
                    "cluster",
                    "s",
                    {"dzc": blocks_plugin},
                    note=blocks_note,
                ),
            ]
        )
    )


class _PeakMemory:
    """Samples the RSS of every worker process of ``client`` every 0.2 s."""

    def __init__(self, client: Any) -> None:
        self.client = client
        self.peak: dict[str, int] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    @staticmethod
    def _rss() -> int:
        import psutil

        return int(psutil.Process().memory_info().rss)

    def _run(self) -> None:
        while not self._stop.wait(0.2):
            try:
                for worker, rss in self.client.run(self._rss).items():
                    self.peak[worker] = max(self.peak.get(worker, 0), rss)
            except Exception:  # a worker restarting: sample again next time
                continue

    def __enter__(self) -> _PeakMemory:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def _ssh_block(width: int, block_info: Any = None) -> numpy.ndarray:
    lo, hi = block_info[None]["array-location"][0]
    return _data.make_columns(hi - lo, width, seed=lo)["ssh"]


def _time_block(start: Any, step_ns: int, block_info: Any = None) -> numpy.ndarray:
    lo, hi = block_info[None]["array-location"][0]
    return start + (numpy.arange(lo, hi, dtype="int64") * step_ns).astype("timedelta64[ns]")


def _big_columns(nbytes: int, width: int) -> tuple[dict[str, Any], int]:
    """About ``nbytes`` of rows over 120 months, as dask arrays the workers generate.

    One chunk per day; the time axis is a dask array too (the planner computes
    it: 8 bytes a row).
    """
    import dask.array as da

    rows = max(1, nbytes // (8 + 4 * width))
    start = numpy.datetime64("2010-01-01", "ns")
    step_ns = int((numpy.datetime64("2020-01-01", "ns") - start).astype("int64")) // rows
    per_day = max(1, 86_400 * 10**9 // step_ns)
    chunks = tuple(min(per_day, rows - lo) for lo in range(0, rows, per_day))
    ssh = da.map_blocks(_ssh_block, width, dtype="float32", chunks=(chunks, (width,)))
    time_ = da.map_blocks(_time_block, start, step_ns, dtype="datetime64[ns]", chunks=(chunks,))
    return {"time": time_, "ssh": ssh}, rows


def m_big_insert(nbytes: int) -> Callable[[Context], Result]:
    def fn(ctx: Context) -> Result:
        cols, rows = _big_columns(nbytes, ctx.cfg.width)
        root = ctx.path("big-insert")
        shutil.rmtree(root, ignore_errors=True)
        url = "file://" + root
        col = dzc.create_collection(
            url,
            schema=ctx.schema(),
            axis="time",
            partitioning=dzc.partitioning.Date(("time",), resolution="M"),
            overwrite=True,
        )
        with local_cluster(memory_limit="3GB") as client, _PeakMemory(client) as peak:
            t0 = time.perf_counter()
            col.insert(cols)
            seconds = time.perf_counter() - t0
        catalog = dzc.open_collection(url).catalog()
        stored = int(catalog.rows.sum())
        shutil.rmtree(root, ignore_errors=True)
        if stored != rows:
            raise AssertionError(f"the insert stored {stored} rows, expected {rows}")
        per_partition = nbytes / len(catalog) / 1e6
        peaks = ", ".join(f"{v / 2**30:.2f} GiB" for v in sorted(peak.peak.values()))
        return Result(
            "cluster.big_insert",
            "cluster",
            "s",
            {"dzc": Stat.one(seconds)},
            note=(
                f"{nbytes / 1e9:.1f} GB generated on the workers into {len(catalog)} monthly "
                f"partitions of ~{per_partition:.0f} MB, 2 workers x 3 GB limit; "
                f"peak worker RSS {peaks}; {nbytes / 1e6 / seconds:,.0f} MB/s"
            ),
        )

    return fn


def measurements(cfg: Config) -> list[Measurement]:
    """The read/reduction/persist rows, then the big insert when asked for."""
    rows = (
        "read.threads",
        "read.cluster",
        "transfer",
        "mean.threads",
        "mean.cluster",
        "persist",
        "mean_blocks.threads",
        "mean_blocks.cluster",
        "overhead.threads",
        "overhead.cluster",
        *(() if cfg.quick else ("mean.cluster_malloc", "mean_blocks.cluster_malloc")),
    )
    out = [
        Measurement(
            "cluster.read",
            "cluster",
            m_cluster,
            rows=tuple(f"cluster.{r}" for r in rows),
        )
    ]
    if cfg.big_insert:
        out.append(Measurement("cluster.big_insert", "cluster", m_big_insert(cfg.big_insert)))
    return out
