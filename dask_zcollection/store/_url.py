"""URL -> store adapter resolution."""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any
from urllib.parse import urlsplit

from ..errors import InvalidInputError
from ._base import StoreSpec
from ._local import LocalStore
from ._memory import MemoryStore

__all__ = ["StoreLike", "register_scheme", "resolve_store"]

StoreLike = str | os.PathLike[str] | StoreSpec

_FACTORIES: dict[str, Any] = {
    "file": lambda url, path, options: LocalStore(path),
    "memory": lambda url, path, options: MemoryStore(path.strip("/") or "default"),
}


def register_scheme(scheme: str, factory: Any) -> None:
    """Register ``factory(url, path, storage_options) -> StoreSpec`` for ``scheme``."""
    _FACTORIES[scheme] = factory


def resolve_store(store: StoreLike, storage_options: Mapping[str, Any] | None = None) -> StoreSpec:
    """Return the :class:`StoreSpec` for a URL, a path or a spec.

    Parameters
    ----------
    store : str, os.PathLike or StoreSpec
        ``file:///abs/path``, ``memory://name``, a plain local path, or a spec.
    storage_options : dict, optional
        Backend options (credentials, endpoint...), as in fsspec/xarray.

    Raises
    ------
    InvalidInputError
        When the scheme is not supported.
    """
    if isinstance(store, StoreSpec):
        return store
    url = os.fspath(store)
    parts = urlsplit(url)
    if len(parts.scheme) <= 1:  # no scheme, or a Windows drive letter
        return LocalStore(url)
    factory = _FACTORIES.get(parts.scheme)
    if factory is None:
        raise InvalidInputError(
            f"unsupported URL scheme {parts.scheme!r} in {url!r} (known: {sorted(_FACTORIES)})"
        )
    path = parts.netloc + parts.path if parts.scheme == "memory" else (parts.netloc + parts.path)
    spec: StoreSpec = factory(url, path, dict(storage_options or {}))
    return spec
