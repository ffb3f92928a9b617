"""Store adapters: one picklable spec per URL scheme, with its commit primitive."""

from ._base import StoreSpec
from ._local import LocalStore
from ._memory import MemoryStore
from ._url import StoreLike, register_scheme, resolve_store

__all__ = [
    "LocalStore",
    "MemoryStore",
    "StoreLike",
    "StoreSpec",
    "register_scheme",
    "resolve_store",
]
