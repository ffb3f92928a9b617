"""Registry, configuration, timing and result types of the benchmark harness.

A measurement is a small function ``fn(ctx) -> Result`` registered with a name
and a group. Each :class:`Result` holds up to three columns (``dzc``, ``zarr``,
``xarray``), each a :class:`Stat` (median, min, max over ``n`` runs).

Why not pytest-benchmark or asv: both time one callable per benchmark and keep
its statistics, but neither puts three contenders side by side with their
ratios in one run, nor records the figures that are not wall times here
(MB/s over uncompressed bytes, ms per partition, task counts, peak RSS of a
child process, request counts). Adapting them would take more code than the
:class:`Stat`, :func:`timed` and :class:`Result` below.
"""

from __future__ import annotations

import dataclasses
import math
import re
import statistics
import time
from collections.abc import Callable, Iterable
from typing import Any

__all__ = [
    "COLUMNS",
    "Config",
    "Measurement",
    "Result",
    "Stat",
    "graph_len",
    "parse_size",
    "timed",
]

#: Columns of the table, in order.
COLUMNS = ("dzc", "zarr", "xarray")


def parse_size(text: str | int | float) -> int:
    """``"1GB"``, ``"300MB"``, ``"0.3GB"``, ``"512k"`` or a number of bytes -> bytes."""
    if isinstance(text, int | float):
        return int(text)
    m = re.fullmatch(r"\s*([0-9.]+)\s*([kmgt]?)i?b?\s*", text.lower())
    if m is None:
        raise ValueError(f"cannot parse size {text!r} (e.g. 1GB, 300MB)")
    scale = {"": 1, "k": 10**3, "m": 10**6, "g": 10**9, "t": 10**12}[m.group(2)]
    return int(float(m.group(1)) * scale)


@dataclasses.dataclass(frozen=True)
class Config:
    """What to run and at which size.

    Attributes
    ----------
    size : int
        Bytes of the main synthetic dataset (``time`` + ``ssh``).
    width : int
        Across-track width of ``ssh`` (240 like real swaths; smaller in quick mode).
    repeats : int
        Runs per timing (median, min, max).
    codec : str
        Compressor of ``time`` and ``ssh`` (a key of ``CODECS``), the same for
        the library, raw zarr and xarray.
    chunks : int
        Chunk length along ``time`` (rows), the same for all three.
    many : tuple of int
        Partition counts of the "many partitions" group.
    many_rows : int
        Rows per partition in that group.
    baseline_sample : int
        Partitions written by raw zarr / xarray to estimate their per-partition
        insert cost (their cost does not depend on the total).
    sim_partitions : int
        Catalog size of the planning simulation.
    latencies_ms : tuple of float
        Per-request latencies of the simulated remote store.
    latency_partitions : tuple of int
        Partition counts used with the simulated remote store.
    codec_matrix : tuple of str
        Codecs of the codec/chunk matrix.
    chunk_matrix : tuple of int
        Chunk lengths of the codec/chunk matrix.
    matrix_rows : int
        Rows written per cell of the matrix.
    scale_partitions : tuple of int
        Catalog sizes of the ``scale`` group.
    scale_latency_ms : float
        Per-request latency of the ``scale`` group's remote-store rows (0: none).
    big_insert : int
        Bytes of the dask-backed insert on a memory-limited cluster (0: skip).
    """

    size: int = 10**9
    width: int = 240
    repeats: int = 3
    codec: str = "zstd3"
    chunks: int = 16384
    many: tuple[int, ...] = (1000, 10000)
    many_rows: int = 16
    baseline_sample: int = 200
    sim_partitions: int = 1_000_000
    latencies_ms: tuple[float, ...] = (0.0, 5.0, 20.0)
    latency_partitions: tuple[int, ...] = (10, 100)
    codec_matrix: tuple[str, ...] = ("none", "zstd1", "zstd3", "lz4")
    chunk_matrix: tuple[int, ...] = (4096, 16384, 65536)
    matrix_rows: int = 86400
    scale_partitions: tuple[int, ...] = (1_000, 10_000, 100_000, 1_000_000)
    scale_latency_ms: float = 20.0
    big_insert: int = 0
    quick: bool = False

    @classmethod
    def quick_config(cls, **overrides: Any) -> Config:
        """A configuration that runs in seconds (used by the smoke test)."""
        base = cls(
            size=5 * 86400 * (8 * 4 + 8),  # 5 days at 1 s, 8 columns: ~17 MB
            width=8,
            repeats=2,
            many=(30, 100),
            many_rows=4,
            baseline_sample=10,
            sim_partitions=20_000,
            latencies_ms=(0.0, 10.0),
            latency_partitions=(5,),
            codec_matrix=("none", "zstd3", "lz4"),
            chunk_matrix=(4096, 16384),
            matrix_rows=86400,
            scale_partitions=(1_000, 5_000),
            scale_latency_ms=5.0,
            quick=True,
        )
        return dataclasses.replace(base, **overrides)

    @property
    def row_bytes(self) -> int:
        return 8 + 4 * self.width

    @property
    def rows(self) -> int:
        return max(1, self.size // self.row_bytes)


@dataclasses.dataclass(frozen=True)
class Stat:
    """Median, min and max of ``n`` samples."""

    median: float
    min: float
    max: float
    n: int

    @classmethod
    def of(cls, samples: Iterable[float]) -> Stat:
        values = [float(v) for v in samples]
        return cls(statistics.median(values), min(values), max(values), len(values))

    @classmethod
    def one(cls, value: float) -> Stat:
        return cls(float(value), float(value), float(value), 1)

    def scaled(self, factor: float) -> Stat:
        """Every figure multiplied by ``factor`` (min/max swap when negative)."""
        lo, hi = sorted((self.min * factor, self.max * factor))
        return Stat(self.median * factor, lo, hi, self.n)

    def inverse(self, numerator: float) -> Stat:
        """``numerator / x`` for each figure (e.g. seconds -> MB/s)."""

        def inv(x: float) -> float:
            return numerator / x if x > 0 else math.inf

        return Stat(inv(self.median), inv(self.max), inv(self.min), self.n)

    def to_dict(self) -> dict[str, float]:
        return {"median": self.median, "min": self.min, "max": self.max, "n": self.n}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Stat:
        return cls(float(d["median"]), float(d["min"]), float(d["max"]), int(d["n"]))


@dataclasses.dataclass
class Result:
    """One row of the table.

    ``status`` is ``"ok"`` or ``"error"``; ``note`` explains figures (throughput,
    request counts...).
    ``lower_is_better`` tells how to read the ratios.
    """

    name: str
    group: str
    unit: str
    values: dict[str, Stat] = dataclasses.field(default_factory=dict)
    note: str = ""
    status: str = "ok"
    lower_is_better: bool = True
    params: dict[str, Any] = dataclasses.field(default_factory=dict)

    def ratio(self, other: str) -> float | None:
        a, b = self.values.get("dzc"), self.values.get(other)
        if a is None or b is None or b.median == 0:
            return None
        return a.median / b.median

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "group": self.group,
            "unit": self.unit,
            "status": self.status,
            "note": self.note,
            "lower_is_better": self.lower_is_better,
            "params": self.params,
            "values": {k: v.to_dict() for k, v in self.values.items()},
            "ratios": {f"dzc/{c}": self.ratio(c) for c in COLUMNS[1:] if c in self.values},
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Result:
        return cls(
            name=d["name"],
            group=d["group"],
            unit=d["unit"],
            values={k: Stat.from_dict(v) for k, v in d.get("values", {}).items()},
            note=d.get("note", ""),
            status=d.get("status", "ok"),
            lower_is_better=d.get("lower_is_better", True),
            params=d.get("params", {}),
        )


@dataclasses.dataclass(frozen=True)
class Measurement:
    """A registered measurement: ``fn(ctx) -> Result`` (or a list of them).

    ``rows`` names the results it produces when they are not just ``name``.
    """

    name: str
    group: str
    fn: Callable[[Any], Result | list[Result]]
    description: str = ""
    rows: tuple[str, ...] = ()

    @property
    def row_names(self) -> tuple[str, ...]:
        return self.rows or (self.name,)


def timed(
    fn: Callable[[], Any],
    repeats: int,
    *,
    setup: Callable[[], Any] | None = None,
    warmup: int = 0,
) -> Stat:
    """Run ``fn`` ``repeats`` times (``setup`` before each, untimed); seconds.

    ``warmup`` runs go first, untimed: for short operations whose first runs in a
    process pay thread pools, allocator growth and first-call imports.
    """
    for _ in range(warmup):
        if setup is not None:
            setup()
        fn()
    samples = []
    for _ in range(max(1, repeats)):
        if setup is not None:
            setup()
        t0 = time.perf_counter()
        fn()
        samples.append(time.perf_counter() - t0)
    return Stat.of(samples)


def graph_len(obj: Any) -> int:
    """Tasks in the materialised graph of a dask collection."""
    return len(dict(obj.__dask_graph__()))
