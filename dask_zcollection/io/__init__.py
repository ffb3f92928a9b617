"""Partition-level and collection-level I/O (async)."""

from ._config import CONFIG_KEY, CollectionConfig, default_axis_variable, read_config, write_config
from ._integrity import VerifyReport
from ._partition import PartitionIO, group_json

__all__ = [
    "CONFIG_KEY",
    "CollectionConfig",
    "PartitionIO",
    "VerifyReport",
    "default_axis_variable",
    "group_json",
    "read_config",
    "write_config",
]
from ._reader import (
    Part,
    ReadSource,
    RowRanges,
    TimeRange,
    chunk_groups,
    clip_ranges,
    forget_collection,
    parts_of,
    read_block,
    read_concat,
    read_partition,
    read_rows,
    row_range,
    unwritten_immutable,
)

__all__ += [
    "Part",
    "ReadSource",
    "RowRanges",
    "TimeRange",
    "chunk_groups",
    "clip_ranges",
    "forget_collection",
    "parts_of",
    "read_block",
    "read_concat",
    "read_partition",
    "read_rows",
    "row_range",
    "unwritten_immutable",
]
