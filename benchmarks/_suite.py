"""The registry: every measurement of the topic modules, in run order.

Groups (one module each), in run order:

``ceilings``    compressor and memory throughput of this machine on the data
``io``          the library vs raw zarr vs xarray on the main dataset
``codecs``      write / read throughput per codec and chunk length
``memory``      peak RSS of a streaming reduction (subprocesses)
``partitions``  many small partitions: insert cost, filter latency, graph size
``writes``      appending to a stored month; a dask-backed insert, threads vs a cluster
``cluster``     the main dataset read, reduced and persisted on a 2-process LocalCluster
``simulation``  planning over a huge catalog; a store with latency per request
``backend``     ``xr.open_dataset(engine="zcollection")`` vs ``open_mfdataset``
``scale``       catalog cost against the number of partitions (open, insert, bytes, listing)

The page-cache ceiling runs after ``io``, which writes the store it reads.
"""

from __future__ import annotations

from . import (
    backend,
    ceilings,
    cluster,
    codecs,
    io,
    memory,
    partitions,
    scale,
    simulation,
    writes,
)
from ._core import Config, Measurement

__all__ = ["GROUPS", "expected_names", "registry"]

GROUPS = (
    "ceilings",
    "io",
    "codecs",
    "memory",
    "partitions",
    "writes",
    "cluster",
    "simulation",
    "backend",
    "scale",
)


def registry(cfg: Config) -> list[Measurement]:
    """Every measurement for ``cfg``, in run order."""
    return [
        *ceilings.measurements(cfg),
        *io.measurements(cfg),
        *ceilings.page_cache(cfg),
        *codecs.measurements(cfg),
        *memory.measurements(cfg),
        *partitions.measurements(cfg),
        *writes.measurements(cfg),
        *cluster.measurements(cfg),
        *simulation.measurements(cfg),
        *backend.measurements(cfg),
        *scale.measurements(cfg),
    ]


def expected_names(cfg: Config) -> list[str]:
    """Row names a full (unfiltered) run of ``cfg`` produces."""
    return [name for m in registry(cfg) for name in m.row_names]
