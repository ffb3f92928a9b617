"""Store adapters: one picklable spec per URL scheme, with its commit primitive."""

from ._base import StoreSpec
from ._fsspec import FsspecStore
from ._icechunk import IcechunkStore
from ._local import LocalStore
from ._memory import MemoryStore
from ._obstore import ObjectStore
from ._url import StoreLike, check_clearable, local_root, register_scheme, resolve_store

__all__ = [
    "FsspecStore",
    "IcechunkStore",
    "LocalStore",
    "MemoryStore",
    "ObjectStore",
    "StoreLike",
    "StoreSpec",
    "check_clearable",
    "local_root",
    "register_scheme",
    "resolve_store",
]
