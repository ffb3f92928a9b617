"""Shared state of one benchmark run: the data, where it is written, cached figures."""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable
from typing import Any

import numpy

import dask_zcollection as dzc

from . import _data
from ._core import Config, Stat

__all__ = ["Context"]


class Context:
    """Data, paths and cached figures shared by the measurements of a run."""

    def __init__(self, cfg: Config, workdir: str) -> None:
        self.cfg = cfg
        self.workdir = workdir
        os.makedirs(workdir, exist_ok=True)
        self._columns: dict[str, numpy.ndarray] | None = None
        self._written: set[str] = set()
        #: Figures measured once and reused by several rows (baselines, ceilings).
        self.cache: dict[str, Any] = {}

    # -- the main dataset -------------------------------------------------------------------
    @property
    def columns(self) -> dict[str, numpy.ndarray]:
        if self._columns is None:
            self._columns = _data.make_columns(self.cfg.rows, self.cfg.width)
        return self._columns

    @property
    def nbytes(self) -> int:
        return sum(v.nbytes for v in self.columns.values())

    @property
    def mb(self) -> float:
        return self.nbytes / 1e6

    def schema(self, codec: str | None = None, chunks: int | None = None) -> dzc.Schema:
        return _data.make_schema(self.cfg.width, codec or self.cfg.codec, chunks or self.cfg.chunks)

    def path(self, *parts: str) -> str:
        return os.path.join(self.workdir, *parts)

    @property
    def dzc_url(self) -> str:
        return "file://" + self.path("main", "dzc")

    @property
    def zarr_root(self) -> str:
        return self.path("main", "zarr")

    @property
    def xarray_root(self) -> str:
        return self.path("main", "xarray")

    # -- writers (used by the write measurement and, untimed, as fixtures) -------------------
    def write_dzc(
        self,
        url: str | None = None,
        columns: dict[str, numpy.ndarray] | None = None,
        schema: dzc.Schema | None = None,
    ) -> dzc.Collection:
        col = dzc.create_collection(
            url or self.dzc_url,
            schema=schema or self.schema(),
            axis="time",
            partitioning=dzc.partitioning.Date(("time",), resolution="D"),
            overwrite=True,
        )
        col.insert(columns if columns is not None else self.columns)
        return col

    def write_zarr(self) -> int:
        return _data.zarr_write(self.zarr_root, self.columns, self.cfg.codec, self.cfg.chunks)

    def write_xarray(self) -> int:
        return _data.xarray_write(self.xarray_root, self.columns, self.cfg.codec, self.cfg.chunks)

    def clear(self, which: str) -> None:
        root = {
            "dzc": self.path("main", "dzc"),
            "zarr": self.zarr_root,
            "xarray": self.xarray_root,
        }[which]
        shutil.rmtree(root, ignore_errors=True)
        self._written.discard(which)

    def mark_written(self, which: str) -> None:
        self._written.add(which)

    def ensure_written(self) -> None:
        """Write the main dataset in all three layouts (once)."""
        for which, fn in (
            ("dzc", self.write_dzc),
            ("zarr", self.write_zarr),
            ("xarray", self.write_xarray),
        ):
            if which not in self._written:
                self.clear(which)
                fn()
                self._written.add(which)

    # -- partitions of the main dataset ------------------------------------------------------
    @property
    def days(self) -> list[numpy.datetime64]:
        return [d for d, _ in _data.day_slices(self.columns["time"])]

    def day_filter(self, days: list[numpy.datetime64]) -> str:
        """A partition filter selecting ``days`` (grouped by month)."""
        by_month: dict[tuple[int, int], list[int]] = {}
        for d in days:
            y, m, dd = (int(x) for x in str(d).split("-"))
            by_month.setdefault((y, m), []).append(dd)
        terms = [
            f"(year == {y} and month == {m} and day in ({', '.join(map(str, ds))},))"
            for (y, m), ds in by_month.items()
        ]
        return " or ".join(terms)

    def cached(self, key: str, fn: Callable[[], Stat | None]) -> Stat | None:
        """Measure once per run (baselines shared by the eager and lazy rows)."""
        if key not in self.cache:
            self.cache[key] = fn()
        return self.cache[key]

    def cleanup(self) -> None:
        shutil.rmtree(self.workdir, ignore_errors=True)
