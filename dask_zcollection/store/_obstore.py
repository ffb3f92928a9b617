"""``s3://``, ``gs://``, ``az://`` collections through obstore (the default client).

The zarr store is ``zarr.storage.ObjectStore`` over an ``obstore`` store; the
commit primitive is obstore's conditional put (``mode="create"``, an
``If-None-Match: *`` request on S3, a generation precondition on GCS, an
``If-None-Match`` on Azure): atomic on the server, so of several writers
creating one key exactly one wins.

Every object up to :data:`SINGLE_PUT_LIMIT` (100 MiB, the size under which
s3fs and AWS's guidance also use one request) is written with one ``PUT``.
obstore on its own turns anything over 5 MiB into a multipart upload: a
12 MB chunk then costs five requests (create, three parts, complete) and two
extra round trips, for no gain when a write already sends many chunks at once.

``storage_options`` accepts obstore's own configuration keys
(``access_key_id``, ``endpoint``, ``region``, ``aws_*``..., plus
``client_options`` / ``retry_config`` mappings) and the fsspec spellings used
with dask and xarray (``key``, ``secret``, ``token``, ``anon``,
``endpoint_url``, ``client_kwargs={"endpoint_url": ..., "region_name": ...}``).
Anything not given comes from the environment (``AWS_*``, ``GOOGLE_*``,
``AZURE_*``), as obstore does.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
from collections.abc import Iterator, Mapping
from typing import Any

from zarr.abc.buffer import Buffer
from zarr.abc.store import Store
from zarr.storage import ObjectStore as _ZarrObjectStore

from ..errors import InvalidInputError, StorageError
from ._base import StoreSpec
from ._options import Frozen, freeze, redact, thaw

__all__ = ["SINGLE_PUT_LIMIT", "ObjectStore", "obstore_options"]

#: Objects up to this many bytes are uploaded with one request (larger: multipart).
SINGLE_PUT_LIMIT = 100 * 2**20
#: Attempts of a delete or a conditional put that fails in transit (obstore does not
#: retry those itself: it cannot know that they are safe to send again).
DELETE_ATTEMPTS = CREATE_ATTEMPTS = 6

#: URL schemes obstore understands, by provider.
S3_SCHEMES = ("s3", "s3a")
GCS_SCHEMES = ("gs",)
AZURE_SCHEMES = ("az", "abfs", "abfss", "adl", "azure")
SCHEMES = S3_SCHEMES + GCS_SCHEMES + AZURE_SCHEMES

#: fsspec spelling -> obstore configuration key, per provider.
_S3_ALIASES = {
    "key": "access_key_id",
    "secret": "secret_access_key",
    "token": "session_token",
    "endpoint_url": "endpoint",
    "region_name": "region",
    "requester_pays": "request_payer",
}
_GCS_ALIASES = {"endpoint_url": "base_url"}
_AZURE_ALIASES = {"sas_token": "sas_key", "endpoint_url": "endpoint"}
#: fsspec options that mean nothing to obstore and are safe to drop.
_IGNORED = {"asynchronous", "skip_instance_cache", "use_listings_cache", "listings_expiry_time"}
#: Keys of obstore's ``client_options`` also accepted at the top level.
_CLIENT_KEYS = {"allow_http", "allow_invalid_certificates", "timeout", "connect_timeout"}


def _provider(url: str) -> str:
    scheme = url.partition("://")[0].lower()
    if scheme in S3_SCHEMES:
        return "s3"
    if scheme in GCS_SCHEMES:
        return "gcs"
    if scheme in AZURE_SCHEMES:
        return "azure"
    raise InvalidInputError(f"obstore does not handle the scheme of {url!r} (known: {SCHEMES})")


def obstore_options(url: str, storage_options: Mapping[str, Any] | None) -> dict[str, Any]:
    """Translate ``storage_options`` (fsspec or obstore spelling) to obstore keyword arguments.

    Returns
    -------
    dict
        Configuration keys plus optional ``client_options`` and ``retry_config``
        mappings, ready for ``obstore.store.from_url(url, **result)``.

    Raises
    ------
    InvalidInputError
        For an option with no obstore equivalent.
    """
    provider = _provider(url)
    aliases = {"s3": _S3_ALIASES, "gcs": _GCS_ALIASES, "azure": _AZURE_ALIASES}[provider]
    config: dict[str, Any] = {}
    client: dict[str, Any] = {}
    retry: dict[str, Any] | None = None
    for key, value in dict(storage_options or {}).items():
        if key in _IGNORED:
            continue
        if key == "client_options":
            client.update(dict(value))
        elif key == "retry_config":
            retry = dict(value)
        elif key in _CLIENT_KEYS:
            client[key] = value
        elif key == "client_kwargs":  # s3fs passes these to botocore's client
            for sub, v in dict(value).items():
                if sub == "endpoint_url":
                    config["endpoint"] = v
                elif sub == "region_name":
                    config["region"] = v
                elif sub == "verify" and v is False:
                    client["allow_invalid_certificates"] = True
                else:
                    raise InvalidInputError(
                        f"client_kwargs[{sub!r}] has no obstore equivalent; "
                        "use storage_options={'backend': 'fsspec', ...} for s3fs-only options"
                    )
        elif key == "anon":
            if value:
                config["skip_signature"] = True
        elif provider == "gcs" and key == "token":
            if value == "anon":
                config["skip_signature"] = True
            elif isinstance(value, str):
                config["service_account_path"] = value
            else:
                raise InvalidInputError("gs:// token must be 'anon' or the path of a key file")
        elif provider == "gcs" and key == "project":
            continue  # gcsfs needs it for listings of buckets; obstore does not
        elif key == "credential_provider":
            config[key] = value
        else:
            config[aliases.get(key, key)] = value
    endpoint = str(config.get("endpoint", config.get("aws_endpoint", "")))
    if endpoint.startswith("http://") and "allow_http" not in client:
        client["allow_http"] = True
    out: dict[str, Any] = dict(config)
    if client:
        out["client_options"] = client
    if retry is not None:
        out["retry_config"] = retry
    return out


class _ZarrStore(_ZarrObjectStore):
    """zarr's ``ObjectStore``, writing objects up to :data:`SINGLE_PUT_LIMIT` in one request."""

    async def set(self, key: str, value: Buffer) -> None:
        import obstore

        self._check_writable()
        data = value.as_buffer_like()
        # None: obstore's own choice (multipart above its 5 MiB part size).
        multipart = None if len(value) > SINGLE_PUT_LIMIT else False
        await obstore.put_async(self.store, key, data, use_multipart=multipart)

    async def delete(self, key: str) -> None:
        """Delete ``key``, retrying a request lost in transit (a bounded number of times).

        obstore sends a delete on S3 as a ``POST ?delete`` (DeleteObjects), which
        its client does not retry after a connection error, as it retries other
        requests: it cannot know that POST is idempotent. A delete is: sending
        it again is safe. Without this, a connection reset while a committed
        write deletes its lease made the write report a failure.
        """
        import obstore.exceptions as oe

        for attempt in range(DELETE_ATTEMPTS):
            try:
                await _ZarrObjectStore.delete(self, key)
                return
            except (oe.NotFoundError, FileNotFoundError):
                return
            except (OSError, oe.BaseError) as err:
                if attempt + 1 == DELETE_ATTEMPTS or not _in_transit(err):
                    raise StorageError(f"cannot delete {key!r}: {_short(err)}") from err
                await asyncio.sleep(0.05 * 2**attempt)


def _describe_prebuilt(store: Any) -> tuple[str, Frozen]:
    """URL and a value-like identity of a pre-built obstore store."""
    import obstore.store as obs

    config = dict(getattr(store, "config", {}) or {})
    prefix = str(getattr(store, "prefix", "") or "").strip("/")
    if isinstance(store, obs.S3Store):
        url = f"s3://{config.get('bucket', '')}"
    elif isinstance(store, obs.GCSStore):
        url = f"gs://{config.get('bucket', '')}"
    elif isinstance(store, obs.AzureStore):
        url = f"az://{config.get('container_name', '')}"
    else:
        raise InvalidInputError(
            f"{type(store).__name__} has no atomic create (put if absent) usable for commits; "
            "pass an S3Store, GCSStore or AzureStore"
        )
    if prefix:
        url = f"{url}/{prefix}"
    identity = {
        "config": {k: str(v) for k, v in config.items()},
        "client_options": {
            k: str(v) for k, v in (getattr(store, "client_options", None) or {}).items()
        },
        "prebuilt": True,
    }
    return url, freeze(identity)


@dataclasses.dataclass(frozen=True, slots=True, repr=False)
class ObjectStore(StoreSpec):
    """A collection on an object store (S3, GCS, Azure) through obstore.

    Attributes
    ----------
    location : str
        ``s3://bucket/prefix`` (or ``gs://``, ``az://``...), without trailing slash.
    options : tuple
        The obstore keyword arguments, frozen (see :func:`obstore_options`).
    prebuilt : obstore store, optional
        A store built by the caller (:meth:`from_obstore`), used as is. It
        pickles with its configuration (obstore stores do), not with Python
        credential callbacks that cannot be pickled.
    """

    location: str
    options: Frozen = ()
    prebuilt: Any = dataclasses.field(default=None, compare=False, hash=False)

    @classmethod
    def from_url(cls, url: str, storage_options: Mapping[str, Any] | None = None) -> ObjectStore:
        """The spec of ``url`` with ``storage_options`` (fsspec or obstore spelling)."""
        location = url.rstrip("/")
        return cls(location, freeze(obstore_options(location, storage_options)))

    @classmethod
    def from_obstore(cls, store: Any) -> ObjectStore:
        """Wrap a pre-built ``obstore.store.S3Store`` / ``GCSStore`` / ``AzureStore``."""
        url, identity = _describe_prebuilt(store)
        return cls(url, identity, prebuilt=store)

    @property
    def url(self) -> str:
        return self.location

    def _cache_key(self) -> tuple[Any, ...]:
        return (type(self).__name__, self.location, self.options)

    def _open_store(self) -> Store:
        return _ZarrStore(self.obstore(), read_only=False)

    def obstore(self) -> Any:
        """A new obstore store for this spec (the live one is ``zarr_store().store``)."""
        if self.prebuilt is not None:
            return self.prebuilt
        from obstore.store import from_url

        kwargs = thaw(self.options)
        try:
            return from_url(self.location, **kwargs)
        except Exception as err:
            raise InvalidInputError(
                f"cannot configure obstore for {self.location}: {err}".split("\n")[0]
            ) from err

    def _raw(self) -> Any:
        """The live obstore store (below any ``WrapperStore`` a subclass adds)."""
        store: Any = self.zarr_store()
        while not isinstance(store, _ZarrObjectStore):
            store = store._store
        return store.store

    async def get(self, key: str) -> bytes | None:
        import obstore.exceptions as oe

        try:
            return await StoreSpec.get(self, key)
        except oe.NotFoundError:
            return None
        except oe.BaseError as err:
            raise StorageError(f"cannot read {key!r} from {self.url}: {_short(err)}") from err

    async def put(self, key: str, data: bytes) -> None:
        import obstore.exceptions as oe

        try:
            await StoreSpec.put(self, key, data)
        except oe.BaseError as err:
            raise StorageError(f"cannot write {key!r} to {self.url}: {_short(err)}") from err

    # Listings and existence checks: obstore's errors (a wrong key, a missing bucket)
    # are StorageErrors naming the collection, as for get and put.
    async def exists(self, key: str) -> bool:
        with _storage_errors(f"cannot check {key!r} in {self.url}"):
            return await StoreSpec.exists(self, key)

    async def delete_prefix(self, prefix: str) -> None:
        with _storage_errors(f"cannot delete {prefix!r} in {self.url}"):
            await StoreSpec.delete_prefix(self, prefix)

    async def list_dir(self, prefix: str) -> list[str]:
        with _storage_errors(f"cannot list {prefix!r} in {self.url}"):
            return await StoreSpec.list_dir(self, prefix)

    async def list_prefix(self, prefix: str) -> list[str]:
        with _storage_errors(f"cannot list {prefix!r} in {self.url}"):
            return await StoreSpec.list_prefix(self, prefix)

    async def is_empty(self) -> bool:
        with _storage_errors(f"cannot list {self.url}"):
            return await StoreSpec.is_empty(self)

    async def clear(self) -> None:
        with _storage_errors(f"cannot clear {self.url}"):
            await StoreSpec.clear(self)

    async def put_if_absent(self, key: str, data: bytes, *, durable: bool = True) -> bool:
        import obstore
        import obstore.exceptions as oe

        # obstore does not retry a conditional PUT that failed in transit (it cannot know
        # whether the server got it): retry here. Sending it again is safe: if the first
        # request landed, the next one finds the key, holding our own bytes.
        for attempt in range(CREATE_ATTEMPTS):
            try:
                await obstore.put_async(self._raw(), key, data, mode="create")
            except (FileExistsError, oe.AlreadyExistsError, oe.PreconditionError):
                # A retried request whose first attempt landed finds its own bytes there:
                # that is a success (callers always write unique payloads).
                return await self.get(key) == data
            except (OSError, oe.BaseError) as err:
                if attempt + 1 < CREATE_ATTEMPTS and _in_transit(err):
                    await asyncio.sleep(0.05 * 2**attempt)
                    continue
                # Before reporting a failure, look: one of the attempts may have landed
                # (its answer lost). Reporting a landed catalog commit as failed would
                # make a caller insert the same rows twice.
                if _in_transit(err) and await _holds(self, key, data):
                    return True
                raise StorageError(f"cannot create {key!r} in {self.url}: {_short(err)}") from err
            return True
        raise AssertionError("unreachable")

    def __repr__(self) -> str:
        shown = redact(thaw(self.options))
        shown.pop("prebuilt", None)
        extra = f", {shown}" if shown and self.prebuilt is None else ""
        return f"{type(self).__name__}({self.location!r}{extra})"


async def _holds(spec: StoreSpec, key: str, data: bytes) -> bool:
    """Whether ``key`` holds ``data`` (``False`` when that cannot be read either)."""
    try:
        return await spec.get(key) == data
    except StorageError:
        return False


def _in_transit(err: BaseException) -> bool:
    """Whether ``err`` is a request that failed on the way (reset, refused, timed out, 5xx)."""
    text = str(err)
    return any(
        sign in text
        for sign in (
            "error sending request",
            "Connection reset",
            "connection closed",
            "timed out",
            "Server returned non-2xx status code: 5",
        )
    )


@contextlib.contextmanager
def _storage_errors(what: str) -> Iterator[None]:
    """Raise obstore's errors (and other I/O errors) in the block as :class:`StorageError`."""
    import obstore.exceptions as oe

    try:
        yield
    except StorageError:
        raise
    except (OSError, oe.BaseError) as err:
        raise StorageError(f"{what}: {_short(err)}") from err


def _short(err: BaseException) -> str:
    return str(err).strip().split("\n")[0]
