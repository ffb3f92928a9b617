"""The Dask expressions of the read and write paths (graph only, no I/O)."""

from ._read import (
    Filter,
    Finalize,
    MapPartitions,
    Persisted,
    PersistedBlocks,
    Project,
    ReadBlocks,
    ReadPartitions,
    ZExpr,
)

__all__ = [
    "Filter",
    "Finalize",
    "MapPartitions",
    "Persisted",
    "PersistedBlocks",
    "Project",
    "ReadBlocks",
    "ReadPartitions",
    "ZExpr",
]
