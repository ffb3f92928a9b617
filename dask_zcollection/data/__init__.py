"""The in-memory data model: variables, groups and datasets (no I/O).

A :class:`Dataset` is the root :class:`Group` of a hierarchy; every group
holds :class:`Variable` objects (numpy or dask arrays with dimension names,
attributes and a fill value), child groups and attributes.
"""

from ._dataset import ArrayLike, Dataset, Group, Indexer, Variable, split_path
from ._serialize import register as _register_serializer

# Datasets cross distributed comms as numpy frames (see _serialize); registered
# wherever the package is imported: the client and every worker running a task.
_register_serializer()

__all__ = ["ArrayLike", "Dataset", "Group", "Indexer", "Variable", "split_path"]
