"""The exception tree of dask_zcollection.

Errors are grouped by what a handler does with them; each is also the
matching builtin so generic handlers keep working::

    ZCollectionError
    ├─ NotFoundError(KeyError)      CollectionNotFoundError, PartitionNotFoundError,
    │                               VariableNotFoundError
    ├─ AlreadyExistsError(FileExistsError)
    ├─ ReadOnlyError(PermissionError)
    ├─ InvalidInputError(ValueError) SchemaError, FilterError, MergeError,
    │                               StaleIndexError
    ├─ ConflictError                a concurrent commit won; retryable
    ├─ StalePartitionError          a view partition computed from an older base partition
    ├─ StorageError(OSError)        wraps backend errors
    │  └─ CorruptedDataError        stored bytes fail to decode or verify
    └─ FormatVersionError
"""

from __future__ import annotations

__all__ = [
    "AlreadyExistsError",
    "CollectionNotFoundError",
    "ConflictError",
    "CorruptedDataError",
    "FilterError",
    "FormatVersionError",
    "InvalidInputError",
    "MergeError",
    "NotFoundError",
    "PartitionNotFoundError",
    "ReadOnlyError",
    "SchemaError",
    "StalePartitionError",
    "StaleIndexError",
    "StorageError",
    "VariableNotFoundError",
    "ZCollectionError",
    "ZCollectionWarning",
]


class ZCollectionError(Exception):
    """Base class of every error raised by dask_zcollection."""


class NotFoundError(ZCollectionError, KeyError):
    """A collection, partition, variable or version does not exist."""

    def __str__(self) -> str:
        # KeyError quotes its argument; keep messages readable.
        return str(self.args[0]) if self.args else ""


class CollectionNotFoundError(NotFoundError):
    """No collection at the given URL."""


class PartitionNotFoundError(NotFoundError):
    """A partition named by the catalog is missing from the store."""


class VariableNotFoundError(NotFoundError):
    """A variable name or path is not in the schema or dataset."""


class AlreadyExistsError(ZCollectionError, FileExistsError):
    """Something that must be created already exists."""


class ReadOnlyError(ZCollectionError, PermissionError):
    """A write was attempted on a collection opened read-only."""


class InvalidInputError(ZCollectionError, ValueError):
    """Input does not satisfy a documented contract."""


class SchemaError(InvalidInputError):
    """A schema is malformed, or data does not match the schema."""


class FilterError(InvalidInputError):
    """A partition filter expression is malformed or names an unknown key."""


class MergeError(InvalidInputError):
    """A merge strategy cannot combine the stored and the inserted data."""


class StaleIndexError(InvalidInputError):
    """An index was built from other versions of some partitions than those committed.

    The message names the partitions; rebuild the index (``Collection.update_index``).
    """


class ConflictError(ZCollectionError):
    """A concurrent writer committed first; the operation can be retried."""


class StalePartitionError(ZCollectionError):
    """A view partition was computed from a base partition that has changed since.

    Its rows would be misaligned with the base's: read it with
    ``stale="fill"`` (fill values) or recompute it with ``View.update``.

    Attributes
    ----------
    partition : str
        Canonical path of the partition (``year=2024/month=03``).
    """

    def __init__(self, message: str, partition: str = "") -> None:
        super().__init__(message)
        self.partition = partition

    def __reduce__(self) -> tuple[type, tuple[str, str]]:
        return type(self), (str(self), self.partition)


class StorageError(ZCollectionError, OSError):
    """A storage backend failed; the original error is the ``__cause__``."""


class CorruptedDataError(StorageError):
    """Stored bytes are damaged: a checksum, codec or record check failed.

    The message names the object (the store key of the chunk, catalog or
    metadata document) that failed.
    """


class FormatVersionError(ZCollectionError):
    """The collection was written in a format version this library cannot read."""


class ZCollectionWarning(UserWarning):
    """Warnings emitted by dask_zcollection."""
