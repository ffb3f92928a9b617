"""Object-store collections through fsspec (``s3fs``, ``gcsfs``, ``adlfs``).

Chosen with ``storage_options={"backend": "fsspec", ...}``; the other options
go to the fsspec filesystem unchanged, as with dask and xarray
(``key``/``secret``, ``endpoint_url``, ``client_kwargs``, ``anon``...). obstore
is the default because it is several times faster per request; fsspec is
there for options and filesystems only it supports.

The commit primitive is a conditional put made by the server: on S3
``PutObject`` with ``If-None-Match: *`` (through s3fs's botocore client); on
other filesystems ``_pipe_file(..., mode="create")`` where the filesystem
implements it atomically (gcsfs does, with a generation precondition).
Listings are never cached (``use_listings_cache=False``): other writers change
the catalog directory.
"""

from __future__ import annotations

import asyncio
import dataclasses
import errno
import weakref
from collections.abc import Mapping
from typing import Any

from zarr.abc.store import Store
from zarr.storage import FsspecStore as _ZarrFsspecStore

from ..errors import InvalidInputError, StorageError
from ._base import StoreSpec
from ._options import Frozen, freeze, redact, thaw

__all__ = ["FsspecStore"]

#: Schemes this adapter accepts (its filesystem must offer an atomic create).
SCHEMES = ("s3", "s3a", "gs", "gcs", "az", "abfs", "abfss")
_S3 = ("s3", "s3a")
#: Attempts of a conditional put that the server answered "conflicting request in flight".
_BUSY_RETRIES = 5

# (spec cache key, event loop) -> zarr store: an async fsspec filesystem binds its
# HTTP session to the loop that first uses it, so each loop gets its own.
_PER_LOOP: dict[tuple[Any, ...], weakref.WeakKeyDictionary[Any, Store]] = {}


def _current_loop() -> asyncio.AbstractEventLoop:
    try:
        return asyncio.get_running_loop()
    except RuntimeError:
        from .._zarr import event_loop

        return event_loop()  # where zarr's sync API runs coroutines


@dataclasses.dataclass(frozen=True, slots=True, repr=False)
class FsspecStore(StoreSpec):
    """A collection on an object store through an fsspec filesystem.

    Attributes
    ----------
    location : str
        ``s3://bucket/prefix`` (or ``gs://``, ``az://``...), without trailing slash.
    options : tuple
        The fsspec ``storage_options``, frozen.
    """

    location: str
    options: Frozen = ()

    def __post_init__(self) -> None:
        scheme = self.location.partition("://")[0].lower()
        if scheme not in SCHEMES:
            raise InvalidInputError(
                f"the fsspec backend handles {SCHEMES}, not {scheme!r} ({self.location})"
            )

    @classmethod
    def from_url(cls, url: str, storage_options: Mapping[str, Any] | None = None) -> FsspecStore:
        """The spec of ``url`` with fsspec ``storage_options``."""
        return cls(url.rstrip("/"), freeze(storage_options))

    @classmethod
    def from_prebuilt(cls, store: Any) -> FsspecStore:
        """The spec of a ``zarr.storage.FsspecStore``: its filesystem's protocol, path and options.

        The filesystem is rebuilt from its options in every process (as fsspec
        pickles it), not shared.
        """
        protocol = store.fs.protocol
        protocol = protocol[0] if isinstance(protocol, tuple | list) else protocol
        options = {
            k: v
            for k, v in dict(store.fs.storage_options).items()
            if k not in ("asynchronous", "loop", "skip_instance_cache")
        }
        return cls.from_url(f"{protocol}://{store.path.strip('/')}", options)

    @property
    def url(self) -> str:
        return self.location

    @property
    def scheme(self) -> str:
        return self.location.partition("://")[0].lower()

    def _cache_key(self) -> tuple[Any, ...]:
        return (type(self).__name__, self.location, self.options)

    def _open_store(self) -> Store:
        from fsspec.core import url_to_fs

        options = {"use_listings_cache": False, **thaw(self.options)}
        options.update(asynchronous=True, skip_instance_cache=True)
        if self.scheme in _S3:
            # With max_concurrency > 1, s3fs sends a HEAD before every whole-object GET
            # (to split large objects into ranged GETs): twice the requests per chunk
            # read, when reads already fetch many chunks at once.
            options.setdefault("max_concurrency", 1)
        if self.scheme in _S3 and "session" not in options:
            # One botocore session per spec and process: the clients of each loop share
            # its loaded service models (a new session costs ~0.2 s per client).
            options["session"] = _botocore_session(self._cache_key())
        try:
            fs, path = url_to_fs(self.location, **options)
        except (ImportError, TypeError, ValueError) as err:
            raise InvalidInputError(f"cannot configure fsspec for {self.location}: {err}") from err
        return _ZarrFsspecStore(fs, path=path, read_only=False)

    def zarr_store(self) -> Store:
        """The live zarr store of this spec for the running event loop."""
        loop = _current_loop()
        per_loop = _PER_LOOP.setdefault(self._cache_key(), weakref.WeakKeyDictionary())
        store = per_loop.get(loop)
        if store is None:
            store = per_loop[loop] = self._open_store()
        return store

    def _fs_root(self) -> tuple[Any, str]:
        store: Any = self.zarr_store()
        while not isinstance(store, _ZarrFsspecStore):
            store = store._store  # below a WrapperStore
        return store.fs, store.path.rstrip("/")

    def _fs_path(self, key: str) -> tuple[Any, str]:
        fs, root = self._fs_root()
        return fs, f"{root}/{key}"

    # Listings and deletions go to the filesystem directly: only objects count
    # (some servers, SeaweedFS among them, keep emptied "directories", which
    # fsspec then reports as files), and nothing ever deletes a bucket.
    async def list_prefix(self, prefix: str) -> list[str]:
        fs, root = self._fs_root()
        base = f"{root}/{prefix.strip('/')}".rstrip("/")
        try:
            found = await fs._find(base, withdirs=False, detail=True)
        except FileNotFoundError:
            return []
        except OSError as err:  # e.g. PermissionError on a wrong key: name the store
            raise StorageError(f"cannot list {prefix!r} in {self.url}: {err}") from err
        start = f"{root}/"
        return [
            name[len(start) :]
            for name, info in found.items()
            if name.startswith(start) and info.get("type") != "directory"
        ]

    async def is_empty(self) -> bool:
        return not await self.list_prefix("")

    async def delete_prefix(self, prefix: str) -> None:
        prefix = prefix.strip("/")
        keys = await self.list_prefix(prefix)
        keys = [k for k in keys if not prefix or k == prefix or k.startswith(f"{prefix}/")]
        if keys:
            fs, root = self._fs_root()
            await fs._rm([f"{root}/{k}" for k in keys])

    async def clear(self) -> None:
        await self.delete_prefix("")

    async def put_if_absent(self, key: str, data: bytes, *, durable: bool = True) -> bool:
        fs, path = self._fs_path(key)
        for attempt in range(_BUSY_RETRIES):
            try:
                if self.scheme in _S3:
                    bucket, object_key, _ = fs.split_path(path)
                    await fs._call_s3(
                        "put_object", Bucket=bucket, Key=object_key, Body=data, IfNoneMatch="*"
                    )
                else:
                    await fs._pipe_file(path, data, mode="create")
            except FileExistsError:
                break
            except (TypeError, NotImplementedError) as err:
                raise StorageError(
                    f"{type(fs).__name__} has no atomic create; use the obstore backend"
                ) from err
            except OSError as err:
                if _precondition_failed(err):
                    break
                if err.errno == errno.EBUSY and attempt + 1 < _BUSY_RETRIES:
                    # 409 ConditionalRequestConflict: another create of this key is in flight.
                    await asyncio.sleep(0.05 * 2**attempt)
                    continue
                # Before reporting a failure, look: a retried attempt may have landed
                # with its answer lost (a landed catalog commit reported as failed would
                # make a caller insert the same rows twice).
                try:
                    landed = await self.get(key) == data
                except OSError:
                    landed = False
                if landed:
                    return True
                raise StorageError(f"cannot create {key!r} in {self.url}: {err}") from err
            else:
                return True
        # The key exists. A retried request whose first attempt landed finds its own
        # bytes there: that is a success (callers always write unique payloads).
        return await self.get(key) == data

    def __repr__(self) -> str:
        shown = redact(thaw(self.options))
        return f"{type(self).__name__}({self.location!r}, {shown})"


_SESSIONS: dict[tuple[Any, ...], Any] = {}


def _botocore_session(key: tuple[Any, ...]) -> Any:
    session = _SESSIONS.get(key)
    if session is None:
        from aiobotocore.session import AioSession

        session = _SESSIONS[key] = AioSession()
    return session


def _precondition_failed(err: OSError) -> bool:
    cause = err.__cause__
    response = getattr(cause, "response", None) or {}
    code = str(response.get("Error", {}).get("Code", ""))
    status = response.get("ResponseMetadata", {}).get("HTTPStatusCode")
    return code in ("PreconditionFailed", "412") or status == 412
