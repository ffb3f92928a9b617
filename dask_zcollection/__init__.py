"""dask_zcollection: partitioned collections of Zarr v3 groups, Dask-native.

>>> import dask_zcollection as dzc
>>> ds = dzc.read_collection("file:///data/altimetry").filter("year == 2024").compute()
"""

from . import aio, errors, indexing, merge, partitioning
from ._repair import RepairAction, RepairReport
from .api import Collection, create_collection, open_collection, read_collection
from .collection import LazyCollection
from .data import Dataset, Group, Variable
from .errors import (
    AlreadyExistsError,
    CollectionNotFoundError,
    ConflictError,
    CorruptedDataError,
    InvalidInputError,
    NotFoundError,
    ReadOnlyError,
    SchemaError,
    StalePartitionError,
    StorageError,
    ZCollectionError,
)
from .io import VerifyReport
from .merge import upsert_within
from .schema import Codecs, Dimension, Schema
from .view._api import View, create_view, open_view, read_view

__version__ = "0.1.0"

__all__ = [
    "AlreadyExistsError",
    "Codecs",
    "Collection",
    "CollectionNotFoundError",
    "ConflictError",
    "CorruptedDataError",
    "Dataset",
    "Dimension",
    "Group",
    "InvalidInputError",
    "LazyCollection",
    "NotFoundError",
    "ReadOnlyError",
    "RepairAction",
    "RepairReport",
    "Schema",
    "SchemaError",
    "StalePartitionError",
    "StorageError",
    "Variable",
    "VerifyReport",
    "View",
    "ZCollectionError",
    "__version__",
    "aio",
    "create_collection",
    "create_view",
    "errors",
    "indexing",
    "merge",
    "open_collection",
    "open_view",
    "partitioning",
    "read_collection",
    "read_view",
    "upsert_within",
]
