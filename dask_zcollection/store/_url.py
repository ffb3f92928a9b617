"""URL -> store adapter resolution."""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any
from urllib.parse import urlsplit

from ..errors import InvalidInputError
from ._base import StoreSpec
from ._icechunk import SCHEMES as _ICECHUNK_SCHEMES
from ._icechunk import IcechunkStore
from ._local import LocalStore
from ._memory import MemoryStore
from ._obstore import SCHEMES as _OBSTORE_SCHEMES
from ._obstore import ObjectStore
from ._options import pop_backend

__all__ = ["StoreLike", "check_clearable", "register_scheme", "resolve_store"]

#: A URL, a local path, a spec, or a pre-built store object (obstore, zarr, Icechunk).
StoreLike = str | os.PathLike[str] | StoreSpec | Any


def _object_store(url: str, path: str, options: dict[str, Any]) -> StoreSpec:
    """``s3://``, ``gs://``, ``az://``: obstore by default, fsspec on request."""
    backend, options = pop_backend(options)
    if backend == "fsspec":
        from ._fsspec import FsspecStore

        return FsspecStore.from_url(url, options)
    return ObjectStore.from_url(url, options)


def _fsspec_only(url: str, path: str, options: dict[str, Any]) -> StoreSpec:
    """``gcs://`` is gcsfs's spelling of ``gs://``."""
    backend, options = pop_backend(options)
    if backend == "fsspec":
        from ._fsspec import FsspecStore

        return FsspecStore.from_url(url, options)
    return ObjectStore.from_url("gs://" + url.partition("://")[2], options)


_FACTORIES: dict[str, Any] = {
    "file": lambda url, path, options: LocalStore(path),
    "memory": lambda url, path, options: MemoryStore(path.strip("/") or "default"),
    **dict.fromkeys(_OBSTORE_SCHEMES, _object_store),
    "gcs": _fsspec_only,
    **dict.fromkeys(
        _ICECHUNK_SCHEMES, lambda url, path, options: IcechunkStore.from_url(url, options)
    ),
}


def register_scheme(scheme: str, factory: Any) -> None:
    """Register ``factory(url, path, storage_options) -> StoreSpec`` for ``scheme``."""
    _FACTORIES[scheme] = factory


def resolve_store(store: StoreLike, storage_options: Mapping[str, Any] | None = None) -> StoreSpec:
    """Return the :class:`StoreSpec` for a URL, a path or a spec.

    Parameters
    ----------
    store : str, os.PathLike, StoreSpec or store object
        ``file:///abs/path``, ``memory://name``, ``s3://bucket/prefix`` (also
        ``gs://``, ``az://``), a plain local path, a spec, or a pre-built store:
        an obstore ``S3Store``/``GCSStore``/``AzureStore``, a zarr
        ``ObjectStore``/``FsspecStore``/``LocalStore``.
    storage_options : dict, optional
        Backend options (credentials, endpoint...), as in fsspec/xarray. On
        object stores ``{"backend": "fsspec"}`` selects fsspec instead of
        obstore; every other key goes to the chosen client.

    Raises
    ------
    InvalidInputError
        When the scheme is not supported.
    """
    if isinstance(store, StoreSpec):
        return store
    if not isinstance(store, str | os.PathLike):
        return _from_object(store, storage_options)
    url = os.fspath(store)
    try:
        parts = urlsplit(url)
    except ValueError as err:  # e.g. an unbalanced '[' (an IPv6 host)
        raise InvalidInputError(f"invalid store URL {url!r}: {err}") from err
    if len(parts.scheme) <= 1:  # no scheme, or a Windows drive letter
        return LocalStore(url)
    factory = _FACTORIES.get(parts.scheme)
    if factory is None:
        raise InvalidInputError(
            f"unsupported URL scheme {parts.scheme!r} in {url!r} (known: {sorted(_FACTORIES)})"
        )
    path = parts.netloc + parts.path
    spec: StoreSpec = factory(url, path, dict(storage_options or {}))
    return spec


def _from_object(store: Any, storage_options: Mapping[str, Any] | None) -> StoreSpec:
    """Wrap a pre-built store object in its spec."""
    import zarr.storage

    if storage_options:
        raise InvalidInputError("storage_options cannot be combined with a pre-built store")
    module = type(store).__module__
    if module.startswith("obstore"):
        return ObjectStore.from_obstore(store)
    if isinstance(store, zarr.storage.ObjectStore):
        return ObjectStore.from_obstore(store.store)
    if isinstance(store, zarr.storage.LocalStore):
        return LocalStore(str(store.root))
    if isinstance(store, zarr.storage.FsspecStore):
        from ._fsspec import FsspecStore

        return FsspecStore.from_prebuilt(store)
    if module.startswith("icechunk"):
        return IcechunkStore.from_object(store)
    raise InvalidInputError(
        f"cannot use a {type(store).__name__} as a collection store; pass a URL, a StoreSpec, "
        "an obstore store, or a zarr ObjectStore/FsspecStore/LocalStore"
    )


def local_root(spec: StoreSpec) -> str | None:
    """The real local directory holding ``spec``'s objects (``None``: not a local store).

    A local store's root, or a local Icechunk repository's, symlinks resolved:
    what two stores are compared by to tell whether one lies inside the other.
    """
    if isinstance(spec, LocalStore):
        return os.path.realpath(spec.root)
    if isinstance(spec, IcechunkStore) and spec.location.startswith("file://"):
        return os.path.realpath(spec.location.removeprefix("file://"))
    return None


def check_clearable(store: StoreLike, spec: StoreSpec) -> None:
    """Refuse to delete everything under a root that is not one collection's own.

    ``overwrite=True`` clears the store's root. An empty path (``file://``
    is the working directory), a filesystem root, the home directory (or
    one of its parents) and a bucket without a prefix (``s3://bucket``) are
    refused: clearing them would delete far more than a collection.

    Raises
    ------
    InvalidInputError
        Naming the URL and why; nothing is deleted.
    """
    why = None
    if isinstance(store, str | os.PathLike):
        url = os.fspath(store)
        parts = urlsplit(url)  # resolve_store parsed it already
        scheme = parts.scheme if len(parts.scheme) > 1 else ""
        path = (parts.netloc + parts.path) if scheme else url
        if scheme != "memory" and not path.strip().strip("/").strip("."):
            why = "its path is empty (or '.', '/'): it names a working directory or a root"
    if why is None and isinstance(spec, LocalStore):
        root = os.path.realpath(spec.root)
        home = os.path.realpath(os.path.expanduser("~"))
        if os.path.dirname(root) == root:
            why = "it is a filesystem root"
        elif root == home or home.startswith(root.rstrip(os.sep) + os.sep):
            why = "it is the home directory or one of its parents"
    if why is None and spec.url.partition("://")[0] in _OBJECT_SCHEMES:
        bucket_path = spec.url.partition("://")[2].strip("/")
        if "/" not in bucket_path:
            why = "it is a bucket root: give a prefix, e.g. s3://bucket/collection"
    if why is not None:
        raise InvalidInputError(f"overwrite=True refuses to clear {spec.url}: {why}")


#: Object-store schemes whose first path component is a bucket (container).
_OBJECT_SCHEMES = frozenset({*_OBSTORE_SCHEMES, "gcs"})
