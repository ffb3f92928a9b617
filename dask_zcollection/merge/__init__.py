"""Merge strategies: how inserted rows combine with the rows already stored.

Pure functions on column mappings (variable path -> array whose first
dimension is the partition axis); no I/O. The planner asks each strategy, from
axis statistics alone, whether the stored rows must be read
(:meth:`MergeStrategy.needs_existing`) and whether the new rows can be
appended in place (:meth:`MergeStrategy.appends`).
"""

from __future__ import annotations

from ._columns import AxisRange, Columns
from ._strategies import (
    CallableStrategy,
    Concat,
    MergeFunction,
    MergeLike,
    MergeStrategy,
    Replace,
    TimeSeries,
    Upsert,
    UpsertWithin,
    concat,
    replace,
    resolve,
    time_series,
    upsert,
    upsert_within,
)

__all__ = [
    "AxisRange",
    "CallableStrategy",
    "Columns",
    "Concat",
    "MergeFunction",
    "MergeLike",
    "MergeStrategy",
    "Replace",
    "TimeSeries",
    "Upsert",
    "UpsertWithin",
    "concat",
    "replace",
    "resolve",
    "time_series",
    "upsert",
    "upsert_within",
]
