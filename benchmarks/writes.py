"""``writes``: appending to a stored month; a dask-backed insert, threads vs a cluster.

Append: 3,000 rows after a stored 90,000-row month (copied afresh before each
run), by the library (open + insert + commit), ``Array.append`` and
``to_zarr(append_dim=)``. Dask insert: the main dataset computed by the workers
(``map_blocks``) and inserted on the threaded scheduler, then on a
``LocalCluster`` of one and of two worker processes.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable
from typing import Any

import numpy

import dask_zcollection as dzc

from . import _data
from ._context import Context
from ._core import Config, Measurement, Result, timed
from .cluster import local_cluster

__all__ = ["measurements"]

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
        with local_cluster(workers):
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


def measurements(cfg: Config) -> list[Measurement]:
    """The two appends, then the dask-backed insert (three rows)."""
    return [
        *(
            Measurement(f"writes.append[{m}]", "writes", m_append(m))
            for m in ("time_series", "upsert")
        ),
        Measurement(
            "writes.dask_insert",
            "writes",
            m_dask_insert,
            rows=tuple(f"writes.dask_insert.{run}" for run in ("threads", "cluster1", "cluster")),
        ),
    ]
