"""The in-memory data model: variables, groups and datasets (no I/O).

A :class:`Dataset` is the root :class:`Group` of a hierarchy; every group
holds :class:`Variable` objects (numpy or dask arrays with dimension names,
attributes and a fill value), child groups and attributes.
"""

from ._dataset import ArrayLike, Dataset, Group, Indexer, Variable, split_path

__all__ = ["ArrayLike", "Dataset", "Group", "Indexer", "Variable", "split_path"]
