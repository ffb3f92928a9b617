"""Synthetic altimetry-like data and the three ways of storing it.

``ssh`` is a smooth field (long-wave signal varying along and across track)
plus white noise, with contiguous NaN gaps (land, rain flags), so that
compressors see what they see on real float32 sea-surface heights: noisy
low mantissa bits, compressible exponents, cheap NaN runs.

The same codecs and chunks are used by the library, raw zarr-python (one
store per partition) and xarray (``to_zarr`` per partition).
"""

from __future__ import annotations

import itertools
import os
from collections.abc import Iterator
from typing import Any

import numpy

import dask_zcollection as dzc

__all__ = [
    "CODECS",
    "EPOCH",
    "MANY_START",
    "MONTH_FILTER",
    "codec_chain",
    "day_slices",
    "du",
    "make_columns",
    "make_schema",
    "many_columns",
    "numcodecs_codec",
    "partition_name",
    "xarray_read_all",
    "xarray_write",
    "zarr_read_all",
    "zarr_read_partition",
    "zarr_write",
]

#: Start of the synthetic time axis.
EPOCH = numpy.datetime64("2024-01-01T00:00:00", "ns")
NS_PER_DAY = 86_400 * 10**9
#: Start of the "many small partitions" data (daily partitions of a few rows).
MANY_START = numpy.datetime64("2000-01-01T00:00:00", "ns")
#: The partition filter of the many-partitions figures: the 31 days of January 2000.
MONTH_FILTER = "year == 2000 and month == 1"

#: Named compressor chains (zarr v3 codec JSON), as accepted by ``Schema.with_variable(codecs=)``.
CODECS: dict[str, list[dict[str, Any]]] = {
    "none": [],
    "zstd1": [{"name": "zstd", "configuration": {"level": 1, "checksum": False}}],
    "zstd3": [{"name": "zstd", "configuration": {"level": 3, "checksum": False}}],
    "lz4": [
        {
            "name": "blosc",
            "configuration": {
                "cname": "lz4",
                "clevel": 5,
                "shuffle": "shuffle",
                "typesize": 4,
                "blocksize": 0,
            },
        }
    ],
}


def codec_chain(name: str, typesize: int = 4) -> list[dict[str, Any]]:
    """The compressor chain ``name`` for items of ``typesize`` bytes (blosc needs it)."""
    try:
        chain = CODECS[name]
    except KeyError:
        raise ValueError(f"unknown codec {name!r} (known: {sorted(CODECS)})") from None
    out = []
    for c in chain:
        c = {"name": c["name"], "configuration": dict(c["configuration"])}
        if c["name"] == "blosc":
            c["configuration"]["typesize"] = typesize
        out.append(c)
    return out


def numcodecs_codec(name: str) -> Any:
    """The numcodecs object equivalent to ``CODECS[name]`` (``None`` for no compression)."""
    import numcodecs

    if name == "none":
        return None
    if name.startswith("zstd"):
        return numcodecs.Zstd(level=int(name[4:]))
    if name == "lz4":
        return numcodecs.Blosc(cname="lz4", clevel=5, shuffle=numcodecs.Blosc.SHUFFLE)
    raise ValueError(f"unknown codec {name!r}")


def make_schema(width: int, codec: str, chunks: int) -> dzc.Schema:
    """``time`` (datetime64[ns]) and ``ssh`` (float32, time x x_ac) with the given codec/chunks."""
    return (
        dzc.Schema()
        .with_dimension("time", chunks=chunks)
        .with_dimension("x_ac", size=width, chunks=width)
        .with_variable(
            "time", dtype="datetime64[ns]", dimensions=("time",), codecs=codec_chain(codec, 8)
        )
        .with_variable(
            "ssh",
            dtype="float32",
            dimensions=("time", "x_ac"),
            fill_value=numpy.float32("nan"),
            codecs=codec_chain(codec, 4),
        )
        .build()
    )


def make_columns(
    rows: int, width: int, *, start: numpy.datetime64 = EPOCH, step_s: float = 1.0, seed: int = 0
) -> dict[str, numpy.ndarray]:
    """``time`` at ``step_s`` seconds from ``start`` and a smooth-plus-noise ``ssh``."""
    rng = numpy.random.default_rng(seed)
    step = numpy.int64(round(step_s * 1e9))
    time = start + numpy.arange(rows, dtype="int64") * step.astype("timedelta64[ns]")
    ssh = numpy.empty((rows, width), dtype="float32")
    x = numpy.linspace(0.0, 1.0, width, dtype="float32")
    block = 65536
    for lo in range(0, rows, block):
        hi = min(rows, lo + block)
        t = (numpy.arange(lo, hi, dtype="float64") * step_s).astype("float32")
        # sin(a + b) = sin a cos b + cos a sin b: two outer products, no per-element sin.
        a1, a2 = 2 * numpy.pi * t / 6000.0, 2 * numpy.pi * t / 86400.0
        b1, b2 = 2 * numpy.pi * x * 1.5, 2 * numpy.pi * x * 0.5
        out = ssh[lo:hi]
        numpy.multiply.outer(0.8 * numpy.sin(a1), numpy.cos(b1), out=out)
        out += numpy.multiply.outer(0.8 * numpy.cos(a1), numpy.sin(b1))
        out += numpy.multiply.outer(0.3 * numpy.sin(a2), numpy.cos(b2))
        out += numpy.multiply.outer(0.3 * numpy.cos(a2), numpy.sin(b2))
        out += rng.standard_normal((hi - lo, width), dtype="float32") * numpy.float32(0.03)
    # Land / flagged gaps: ~8% of rows in runs of a few minutes.
    n_gaps = max(1, rows // 3000)
    starts = rng.integers(0, rows, n_gaps)
    lengths = rng.integers(60, 420, n_gaps)
    for s, n in zip(starts.tolist(), lengths.tolist(), strict=True):
        ssh[s : s + n] = numpy.nan
    return {"time": time, "ssh": ssh}


def many_columns(n: int, rows: int, width: int) -> dict[str, numpy.ndarray]:
    """``n`` daily partitions of ``rows`` rows from :data:`MANY_START` (seeded by ``n``)."""
    return make_columns(n * rows, width, start=MANY_START, step_s=86400 / rows, seed=n)


def day_slices(time: numpy.ndarray) -> list[tuple[numpy.datetime64, slice]]:
    """``(day, rows)`` of each calendar day present in the sorted ``time``."""
    days = time.astype("datetime64[D]")
    cut = numpy.flatnonzero(days[1:] != days[:-1]) + 1
    bounds = [0, *cut.tolist(), len(time)]
    return [(days[a], slice(a, b)) for a, b in itertools.pairwise(bounds)]


def partition_name(day: numpy.datetime64) -> str:
    """Directory of one partition in the raw zarr / xarray layouts."""
    return f"{numpy.datetime_as_string(day, unit='D')}.zarr"


def du(path: str) -> int:
    """Bytes stored in the files below ``path``."""
    return sum(os.path.getsize(os.path.join(d, f)) for d, _, fs in os.walk(path) for f in fs)


def iter_partitions(root: str) -> Iterator[str]:
    """Partition stores of a raw layout, in name (= date) order."""
    for name in sorted(os.listdir(root)):
        if name.endswith(".zarr"):
            yield os.path.join(root, name)


# -- raw zarr-python ----------------------------------------------------------------------------
def zarr_write(root: str, columns: dict[str, numpy.ndarray], codec: str, chunks: int) -> int:
    """One zarr group per day (``root/YYYY-MM-DD.zarr``); returns the partition count."""
    import zarr

    os.makedirs(root, exist_ok=True)
    time, ssh = columns["time"], columns["ssh"]
    parts = day_slices(time)
    for day, sl in parts:
        group = zarr.open_group(os.path.join(root, partition_name(day)), mode="w", zarr_format=3)
        n = sl.stop - sl.start
        group.create_array(
            "time",
            data=time[sl],
            chunks=(min(chunks, n),),
            compressors=codec_chain(codec, 8) or None,
            dimension_names=("time",),
        )
        group.create_array(
            "ssh",
            data=ssh[sl],
            chunks=(min(chunks, n), ssh.shape[1]),
            compressors=codec_chain(codec, 4) or None,
            fill_value=numpy.float32("nan"),
            dimension_names=("time", "x_ac"),
        )
    return len(parts)


def zarr_read_partition(path: str, store: Any = None) -> dict[str, numpy.ndarray]:
    """Read ``time`` and ``ssh`` of one partition store."""
    import zarr

    group = zarr.open_group(store if store is not None else path, mode="r", zarr_format=3)
    return {"time": group["time"][:], "ssh": group["ssh"][:]}


def zarr_read_all(root: str) -> dict[str, numpy.ndarray]:
    """Read every partition and concatenate (what a user of raw zarr writes)."""
    parts = [zarr_read_partition(p) for p in iter_partitions(root)]
    return {k: numpy.concatenate([p[k] for p in parts]) for k in ("time", "ssh")}


# -- xarray ---------------------------------------------------------------------------------------
def xarray_dataset(columns: dict[str, numpy.ndarray]) -> Any:
    import xarray

    return xarray.Dataset(
        {"ssh": (("time", "x_ac"), columns["ssh"])}, coords={"time": columns["time"]}
    )


def xarray_encoding(codec: str, chunks: int, width: int, n: int) -> dict[str, Any]:
    c = min(chunks, max(n, 1))
    return {
        "ssh": {"compressors": codec_chain(codec, 4) or None, "chunks": (c, width)},
        "time": {"compressors": codec_chain(codec, 8) or None, "chunks": (c,)},
    }


def xarray_write(root: str, columns: dict[str, numpy.ndarray], codec: str, chunks: int) -> int:
    """``to_zarr`` per day (``root/YYYY-MM-DD.zarr``); returns the partition count."""
    os.makedirs(root, exist_ok=True)
    parts = day_slices(columns["time"])
    width = columns["ssh"].shape[1]
    for day, sl in parts:
        ds = xarray_dataset({k: v[sl] for k, v in columns.items()})
        ds.to_zarr(
            os.path.join(root, partition_name(day)),
            mode="w",
            zarr_format=3,
            consolidated=False,
            encoding=xarray_encoding(codec, chunks, width, sl.stop - sl.start),
        )
    return len(parts)


def xarray_open(paths: list[str]) -> Any:
    import xarray

    return xarray.open_mfdataset(
        paths,
        engine="zarr",
        consolidated=False,
        combine="nested",
        concat_dim="time",
        zarr_format=3,
        data_vars="all",
        coords="different",
        compat="no_conflicts",
        join="outer",
    )


def xarray_read_all(root: str) -> Any:
    """``open_mfdataset`` over every partition, loaded."""
    return xarray_open(list(iter_partitions(root))).load()
