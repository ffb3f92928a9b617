"""How a collection splits its rows into partitions, and filters over partition keys.

Pure computation, no I/O: a :class:`Partitioning` maps the values of some variables to
integer key tuples (:meth:`~Partitioning.split`) and key tuples to relative paths
(:meth:`~Partitioning.encode` / :meth:`~Partitioning.decode`); :func:`compile_filter`
turns a user predicate into a vectorised :class:`PartitionFilter` over key columns.
"""

from dask_zcollection.partitioning._base import Partitioning
from dask_zcollection.partitioning._date import Date, Resolution, time_bound
from dask_zcollection.partitioning._dict import from_dict
from dask_zcollection.partitioning._filter import FilterLike, PartitionFilter, compile_filter
from dask_zcollection.partitioning._sequence import GroupedSequence, Sequence

__all__ = [
    "Date",
    "FilterLike",
    "GroupedSequence",
    "PartitionFilter",
    "Partitioning",
    "Resolution",
    "Sequence",
    "compile_filter",
    "from_dict",
    "time_bound",
]
