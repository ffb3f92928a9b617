"""``icechunk://`` collections: an Icechunk repository, every write one Icechunk commit.

Icechunk is transactional, so the commit primitive is the repository's own: a
write operation (insert, update, drop, repair, create) runs in one *writable
session* of this process, and publishing it is ``session.commit(message)``.
Concurrent writers are detected by Icechunk (the commit's parent is no longer
the branch tip) and surface as :class:`~dask_zcollection.errors.ConflictError`,
which the write path retries after re-planning; there is no last-writer-wins.
Readers use a read-only session pinned to one snapshot (a picklable spec that
names it), so a lazy read on any worker sees one committed state, and
``version=`` (a snapshot id, tag or branch) reads the past.

The collection's own objects that are not Zarr nodes (``_zcollection.json``,
``_catalog/v<N>.zcat``, leases, locks) are stored as one-chunk ``uint8``
arrays at their key, so listings keep their names and the layout is the same
as on the other backends.

URLs: ``icechunk:///abs/path`` or ``icechunk://rel/path`` (local repository),
``icechunk+s3://bucket/prefix`` (``storage_options``: ``endpoint_url``,
``key``/``access_key_id``, ``secret``/``secret_access_key``, ``region``,
``allow_http``...). ``branch`` in ``storage_options`` picks the branch
(default ``main``). A ``Repository`` passed directly works too (in this
process: in-memory repositories cannot reach worker processes).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import fcntl
import functools
import json
import os
import pickle
import threading
import uuid
from collections.abc import AsyncIterator, Iterable, Iterator, Mapping
from typing import Any, ClassVar

from zarr.abc.store import Store
from zarr.buffer import default_buffer_prototype
from zarr.storage import WrapperStore

from ..errors import (
    CollectionNotFoundError,
    ConflictError,
    InvalidInputError,
    StorageError,
)
from ._base import StoreSpec, group_json
from ._options import Frozen, freeze, thaw

__all__ = ["IcechunkStore"]

SCHEMES = ("icechunk", "icechunk+file", "icechunk+s3")

#: Repositories opened in this process, and repository objects handed to us.
_REPOS: dict[tuple[Any, ...], Any] = {}
#: Writable sessions of this process, by writer id (``None``: start one when needed).
_SESSIONS: dict[str, Any] = {}
_LOCK = threading.Lock()
#: Operations in flight per writable session (several at once can hang Icechunk).
SESSION_CONCURRENCY = 1

_S3_ALIASES = {
    "key": "access_key_id",
    "secret": "secret_access_key",
    "token": "session_token",
    "endpoint": "endpoint_url",
    "region_name": "region",
}
_S3_KEYS = {
    "region",
    "endpoint_url",
    "allow_http",
    "access_key_id",
    "secret_access_key",
    "session_token",
    "anonymous",
    "from_env",
    "force_path_style",
}


def _is_zarr_key(key: str) -> bool:
    parts = key.split("/")
    return parts[-1] == "zarr.json" or "c" in parts[:-1]


def _blob_meta(n: int) -> bytes:
    doc = {
        "zarr_format": 3,
        "node_type": "array",
        "shape": [n],
        "data_type": "uint8",
        "chunk_grid": {"name": "regular", "configuration": {"chunk_shape": [max(n, 1)]}},
        "chunk_key_encoding": {"name": "default", "configuration": {"separator": "/"}},
        "fill_value": 0,
        "codecs": [{"name": "bytes"}],
        "attributes": {"_zc_blob": True},
    }
    return json.dumps(doc).encode()


_GROUP = group_json()

#: Icechunk's (Rust) log filter while ``ICECHUNK_LOG`` is unset. Two of its
#: warnings are printed on every open and are about what this adapter already
#: handles: a local repository "is not safe for concurrent commits" (commits are
#: serialised by :meth:`IcechunkStore._commit_lock`), and conditional writes
#: "may surface as spurious conflicts" (a conflict is retried by the write
#: path). Every other warning still shows; ``ICECHUNK_LOG`` overrides this.
LOG_FILTER = "warn,icechunk_arrow_object_store=error,icechunk_storage::readback=error"


@functools.cache
def quiet_logs() -> None:
    """Apply :data:`LOG_FILTER` once per process, unless the user set ``ICECHUNK_LOG``."""
    import icechunk

    if os.environ.get("ICECHUNK_LOG") is None:
        icechunk.set_logs_filter(LOG_FILTER)


class _BoundedStore(WrapperStore[Any]):
    """A writable session's store with its operations serialised per event loop.

    Concurrent node creations and listings on one writable session hung it
    (FIELD_NOTES, and seen here with concurrent merge-write tasks); read-only
    sessions are used unwrapped.
    """

    def __init__(self, store: Any) -> None:
        super().__init__(store)
        self._gates: dict[int, asyncio.Semaphore] = {}

    def _gate(self) -> asyncio.Semaphore:
        loop = id(asyncio.get_running_loop())
        gate = self._gates.get(loop)
        if gate is None:
            gate = self._gates[loop] = asyncio.Semaphore(SESSION_CONCURRENCY)
        return gate

    async def get(self, key: str, prototype: Any, byte_range: Any = None) -> Any:
        async with self._gate():
            return await self._store.get(key, prototype, byte_range)

    async def set(self, key: str, value: Any) -> None:
        async with self._gate():
            await self._store.set(key, value)

    async def exists(self, key: str) -> bool:
        async with self._gate():
            return bool(await self._store.exists(key))

    async def delete(self, key: str) -> None:
        async with self._gate():
            await self._store.delete(key)

    async def delete_dir(self, prefix: str) -> None:
        async with self._gate():
            await self._store.delete_dir(prefix)

    async def list_dir(self, prefix: str) -> AsyncIterator[str]:  # type: ignore[override]
        async with self._gate():
            names = [name async for name in self._store.list_dir(prefix)]
        for name in names:
            yield name

    async def list_prefix(self, prefix: str) -> AsyncIterator[str]:  # type: ignore[override]
        async with self._gate():
            keys = [key async for key in self._store.list_prefix(prefix)]
        for key in keys:
            yield key


@dataclasses.dataclass(frozen=True)
class IcechunkStore(StoreSpec):
    """A collection in an Icechunk repository.

    Attributes
    ----------
    location : str
        ``file:///abs/path``, ``s3://bucket/prefix`` or ``object:<id>`` (a
        repository object registered in this process).
    options : Frozen
        Storage options (S3 endpoint and credentials).
    branch : str
        The branch read and written.
    snapshot : str or None
        The snapshot a read-only spec is pinned to.
    writer : str or None
        Id of this process's writable session (write specs only).
    fork : bytes or None
        A pickled ``ForkSession`` of the writing session (the spec a write
        graph ships to worker processes; each task writes to its own copy).
    base : str or None
        The snapshot the fork started from (its commit must start there too).
    """

    location: str
    options: Frozen = ()
    branch: str = "main"
    snapshot: str | None = None
    writer: str | None = None
    fork: bytes | None = dataclasses.field(default=None, repr=False)
    base: str | None = None
    multiprocess_safe: ClassVar[bool] = False
    transactional: ClassVar[bool] = True

    # -- construction --------------------------------------------------------------------
    @classmethod
    def from_url(cls, url: str, options: Mapping[str, Any]) -> IcechunkStore:
        """Spec of the repository at an ``icechunk://`` URL."""
        scheme, _, rest = url.partition("://")
        opts = dict(options)
        branch = str(opts.pop("branch", "main"))
        if scheme == "icechunk+s3":
            if not rest.strip("/"):
                raise InvalidInputError(f"{url!r}: an S3 bucket is required")
            for old, new in _S3_ALIASES.items():
                if old in opts:
                    opts[new] = opts.pop(old)
            client = opts.pop("client_kwargs", None) or {}
            for old, new in (("endpoint_url", "endpoint_url"), ("region_name", "region")):
                if old in client:
                    opts.setdefault(new, client[old])
            unknown = sorted(set(opts) - _S3_KEYS)
            if unknown:
                raise InvalidInputError(f"unknown Icechunk S3 storage option(s) {unknown}")
            if "endpoint_url" in opts:  # a custom server: path-style requests
                opts.setdefault("force_path_style", True)
                if str(opts["endpoint_url"]).startswith("http://"):
                    opts.setdefault("allow_http", True)
            return cls(f"s3://{rest.strip('/')}", freeze(opts), branch)
        if opts:
            raise InvalidInputError(f"unknown storage option(s) {sorted(opts)} for {url!r}")
        return cls(f"file://{os.path.abspath(os.path.expanduser(rest))}", (), branch)

    @classmethod
    def from_object(cls, obj: Any) -> IcechunkStore:
        """Spec of a ``Repository`` (or of the repository of a ``Session``) passed directly."""
        import icechunk

        if isinstance(obj, icechunk.Session):
            raise InvalidInputError(
                "pass the icechunk Repository (sessions are opened per write by the library)"
            )
        if not isinstance(obj, icechunk.Repository):
            raise InvalidInputError(f"cannot use a {type(obj).__name__} as an Icechunk repository")
        ident = f"object:{uuid.uuid4().hex}"
        _REPOS[(ident, ())] = obj
        return cls(ident)

    @property
    def url(self) -> str:
        if self.location.startswith("s3://"):
            return f"icechunk+{self.location}"
        if self.location.startswith("file://"):
            return f"icechunk://{self.location.removeprefix('file://')}"
        return f"icechunk://{self.location}"

    def _cache_key(self) -> tuple[Any, ...]:
        return (
            type(self).__name__,
            self.location,
            self.options,
            self.branch,
            self.snapshot,
            self.writer,
            self.base,
        )

    # -- the repository ------------------------------------------------------------------
    def _storage(self) -> Any:
        import icechunk

        quiet_logs()
        if self.location.startswith("file://"):
            return icechunk.local_filesystem_storage(self.location.removeprefix("file://"))
        bucket, _, prefix = self.location.removeprefix("s3://").partition("/")
        return icechunk.s3_storage(bucket=bucket, prefix=prefix or None, **thaw(self.options))

    def repository(self, *, create: bool = False) -> Any:
        """The Icechunk repository (opened once per process; ``create`` when missing)."""
        import icechunk

        key = (self.location, self.options)
        repo = _REPOS.get(key)
        if repo is None:
            if self.location.startswith("object:"):
                raise StorageError(
                    f"the repository object of {self.url} lives in another process; "
                    "use a file or S3 repository with worker processes"
                )
            with _LOCK:
                repo = _REPOS.get(key)
                if repo is None:
                    storage = self._storage()
                    try:
                        if icechunk.Repository.exists(storage):
                            repo = icechunk.Repository.open(storage)
                        elif create:
                            repo = icechunk.Repository.create(storage)
                        else:
                            raise CollectionNotFoundError(f"no Icechunk repository at {self.url}")
                    except icechunk.IcechunkError as err:
                        raise StorageError(f"cannot open {self.url}: {err}") from err
                    _REPOS[key] = repo
        return repo

    # -- sessions ------------------------------------------------------------------------
    def for_writing(self) -> IcechunkStore:
        """A spec whose operations go to one writable session of this process."""
        writer = uuid.uuid4().hex
        _SESSIONS[writer] = None
        return dataclasses.replace(self, snapshot=None, writer=writer)

    def _session(self) -> Any:
        assert self.writer is not None
        if self.writer not in _SESSIONS:
            raise StorageError(
                f"the write session of {self.url} belongs to another process: Icechunk "
                "writes run in the threads of the process that started them (compute "
                "the insert with the threaded scheduler)"
            )
        session = _SESSIONS[self.writer]
        if session is None:
            with self._known_branch():
                session = self.repository(create=True).writable_session(self.branch)
            _SESSIONS[self.writer] = session
        return session

    @contextlib.contextmanager
    def _known_branch(self) -> Iterator[None]:
        """Icechunk's ``RefNotFoundError`` on :attr:`branch` as an error naming it."""
        import icechunk

        try:
            yield
        except icechunk.RefNotFoundError as err:
            raise CollectionNotFoundError(
                f"{self.url} has no branch {self.branch!r} (storage_options['branch'])"
            ) from err

    def zarr_store(self) -> Store:
        if self.writer is not None:
            session = self._session()
            store = getattr(session, "_zc_store", None)
            if store is None:
                store = _BoundedStore(session.store)
                session._zc_store = store
            return store  # type: ignore[no-any-return]
        if self.snapshot is None:  # the branch tip, now (not cached: it moves)
            with self._known_branch():
                return self.repository().readonly_session(branch=self.branch).store  # type: ignore[no-any-return]
        return super().zarr_store()

    def _open_store(self) -> Store:
        return self.repository().readonly_session(snapshot_id=self.snapshot).store  # type: ignore[no-any-return]

    async def pinned(self, version: str | None = None) -> IcechunkStore:
        """A read-only spec of the newest commit of the branch, or of ``version``.

        ``version`` is a snapshot id, a tag or a branch name.
        """
        if version is None and self.snapshot is not None and self.writer is None:
            return self  # already pinned: its catalog and its data stay one snapshot
        repo = self.repository()
        if version is None:
            with self._known_branch():
                snapshot = repo.lookup_branch(self.branch)
        else:
            snapshot = _resolve_version(repo, version, self.url)
        return dataclasses.replace(self, snapshot=snapshot, writer=None)

    async def refresh(self) -> None:
        """Start the next operation from the branch tip (when nothing is pending)."""
        if self.writer is not None:
            session = _SESSIONS.get(self.writer)
            if session is not None and not session.has_uncommitted_changes:
                _SESSIONS[self.writer] = None

    async def publish(self, message: str) -> None:
        """Commit the session's changes as one Icechunk commit on the branch."""
        import icechunk

        if self.writer is None:
            raise StorageError(f"{self.url} was opened read-only")
        session = _SESSIONS.get(self.writer)
        if session is None or not session.has_uncommitted_changes:
            return
        try:
            # The commit lock is taken in the worker thread, never on the event
            # loop: a publish waiting for it would block the loop, and with it
            # the publish that holds it (two writers of one process deadlocked).
            await asyncio.to_thread(self._commit, session, message)
        except icechunk.ConflictError as err:
            raise ConflictError(
                f"another writer committed to branch {self.branch!r} of {self.url} first; retry"
            ) from err
        except icechunk.IcechunkError as err:
            raise StorageError(f"cannot commit to {self.url}: {err}") from err
        finally:
            _SESSIONS[self.writer] = None

    async def discard(self) -> None:
        """Drop the session's uncommitted changes."""
        if self.writer is not None and self.writer in _SESSIONS:
            _SESSIONS[self.writer] = None

    # -- writes from worker processes: fork sessions ------------------------------------
    def shippable(self) -> bool:
        return self.fork is not None

    async def for_cluster(self) -> IcechunkStore:
        """Ship a fork of this process's session (repositories in files or S3 only)."""
        if self.writer is None or self.location.startswith("object:"):
            return self
        session = self._session()
        return dataclasses.replace(
            self, writer=None, fork=pickle.dumps(session.fork()), base=session.snapshot_id
        )

    @property
    def forked(self) -> bool:
        return self.base is not None

    def task_spec(self) -> IcechunkStore:
        if self.fork is None:
            return self
        writer = uuid.uuid4().hex
        _SESSIONS[writer] = pickle.loads(self.fork)
        return dataclasses.replace(self, writer=writer, fork=None)

    def end_task(self) -> bytes | None:
        if self.writer is None or not self.forked:
            return None
        return pickle.dumps(_SESSIONS.pop(self.writer))

    def absorb(self, changes: Iterable[Any]) -> IcechunkStore:
        """A writable session at the fork's snapshot holding every task's changes."""
        import icechunk

        changes = [c for c in changes if c is not None]
        if not self.forked:
            return self
        session = self.repository().writable_session(self.branch)
        if session.snapshot_id != self.base:
            raise ConflictError(
                f"another writer committed to branch {self.branch!r} of {self.url} first; retry"
            )
        try:
            if changes:
                session.merge(*(pickle.loads(c) for c in changes))
        except icechunk.IcechunkError as err:
            raise ConflictError(f"cannot merge the write tasks of {self.url}: {err}") from err
        writer = uuid.uuid4().hex
        _SESSIONS[writer] = session
        return dataclasses.replace(self, writer=writer, fork=None, base=None)

    def _commit(self, session: Any, message: str) -> None:
        """Commit ``session`` under the commit lock (blocking: run in a thread)."""
        with self._commit_lock():
            session.commit(message)

    @contextlib.contextmanager
    def _commit_lock(self) -> Iterator[None]:
        # Icechunk on a local filesystem loses concurrent commits of several
        # processes: serialise them (the loser then fails with a conflict).
        if not self.location.startswith("file://"):
            yield
            return
        root = self.location.removeprefix("file://")
        with open(os.path.join(root, ".zc-commit.lock"), "a") as f:
            fcntl.flock(f, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(f, fcntl.LOCK_UN)

    # -- key/value I/O: blobs are one-chunk uint8 arrays -----------------------------------
    async def get(self, key: str) -> bytes | None:
        if _is_zarr_key(key):
            return await self._get(key)
        if await self._get(f"{key}/zarr.json") is None:
            return None
        return await self._get(f"{key}/c/0") or b""

    async def _get(self, key: str) -> bytes | None:
        store = self.zarr_store()  # outside: a missing branch is no missing key
        try:
            buf = await store.get(key, prototype=default_buffer_prototype())
        except (FileNotFoundError, KeyError):
            return None
        except Exception as err:
            raise StorageError(f"cannot read {key!r} from {self.url}: {err}") from err
        return None if buf is None else buf.to_bytes()

    async def _set(self, key: str, data: bytes) -> None:
        buf = default_buffer_prototype().buffer.from_bytes(data)
        try:
            await self.zarr_store().set(key, buf)
        except Exception as err:
            raise StorageError(f"cannot write {key!r} to {self.url}: {err}") from err

    async def _create_parents(self, node: str) -> None:
        """Create the missing groups above ``node``, the root group included.

        Icechunk lists only the children of groups that exist (``list_dir("")``
        is empty without a root ``zarr.json``), so, as Zarr does for the nodes
        it creates, a blob is written with its parents.
        """
        parts = node.split("/")[:-1] if node else []
        parents = [
            "zarr.json",
            *("/".join(parts[: i + 1]) + "/zarr.json" for i in range(len(parts))),
        ]
        found = await asyncio.gather(*(self.exists(p) for p in parents))
        for parent, ok in zip(parents, found, strict=True):
            if not ok:
                await self._set(parent, _GROUP)

    async def put(self, key: str, data: bytes) -> None:
        if _is_zarr_key(key):
            if key.count("/") == 1 and key.endswith("/zarr.json"):
                # A node below the root needs the root group to be listed. Deeper
                # nodes are written with their parents by the library and Zarr
                # (creating them here would race with their own metadata).
                await self._create_parents(key.removesuffix("/zarr.json"))
            await self._set(key, data)
            return
        await self.delete_prefix(key)
        await self._create_parents(key)
        await self._set(f"{key}/zarr.json", _blob_meta(len(data)))
        if data:
            await self._set(f"{key}/c/0", data)

    async def put_many(
        self, items: Mapping[str, bytes], *, last: Mapping[str, bytes] | None = None
    ) -> None:
        # Icechunk takes a chunk only for an existing array: metadata first, the
        # root group before the others (which would otherwise create an empty one).
        if "zarr.json" in items:
            await self.put("zarr.json", items["zarr.json"])
        meta = {k: v for k, v in items.items() if k.endswith("zarr.json") and k != "zarr.json"}
        await asyncio.gather(*(self.put(k, v) for k, v in meta.items()))
        rest = {k: v for k, v in items.items() if k not in meta and k != "zarr.json"}
        await asyncio.gather(*(self.put(k, v) for k, v in rest.items()))
        if last:
            await asyncio.gather(*(self.put(k, v) for k, v in last.items()))

    async def put_if_absent(self, key: str, data: bytes, *, durable: bool = True) -> bool:
        # Inside one session there is one writer; the commit detects the others.
        if await self.exists(key):
            return False
        await self.put(key, data)
        return True

    async def exists(self, key: str) -> bool:
        probe = key if _is_zarr_key(key) else f"{key}/zarr.json"
        with self._errors("check", key):
            return await self.zarr_store().exists(probe)

    async def delete(self, key: str) -> None:
        if _is_zarr_key(key):
            with self._errors("delete", key), contextlib.suppress(FileNotFoundError, KeyError):
                await self.zarr_store().delete(key)
        else:
            await self.delete_prefix(key)

    async def delete_prefix(self, prefix: str) -> None:
        with self._errors("delete", prefix):
            await super().delete_prefix(prefix)

    async def list_dir(self, prefix: str) -> list[str]:
        with self._errors("list", prefix):
            return await super().list_dir(prefix)

    async def list_prefix(self, prefix: str) -> list[str]:
        import icechunk

        path = prefix.strip("/")
        with self._errors("list", prefix):
            try:
                return await super().list_prefix(path)
            except icechunk.InvalidInputError:
                # Icechunk lists only below a node (a group or an array).
                return await self._list_below_no_node(path)

    async def _list_below_no_node(self, path: str) -> list[str]:
        """Keys below ``path``, a path that is no node.

        Below the nearest node above it: inside an array, its keys under
        ``path`` (chunks); inside a group, nothing, as nodes are written with
        their parent groups (:meth:`_create_parents`, and Zarr). A node written
        below a missing group is not listed (Icechunk's ``list_dir`` does not
        show it either), rather than list the whole repository for every
        missing prefix.
        """
        parts = path.split("/")
        for i in range(len(parts) - 1, 0, -1):
            node = "/".join(parts[:i])
            meta = await self._get(f"{node}/zarr.json")
            if meta is None:
                continue
            try:
                node_type = json.loads(meta).get("node_type")
            except (ValueError, AttributeError):
                node_type = None
            if node_type != "array":
                return []
            keys = await super().list_prefix(node)
            return [k for k in keys if k.startswith(f"{path}/")]
        return []

    @contextlib.contextmanager
    def _errors(self, action: str, key: str) -> Iterator[None]:
        """Icechunk's errors as :class:`StorageError` naming ``key``."""
        import icechunk

        try:
            yield
        except (icechunk.IcechunkError, OSError) as err:
            if isinstance(err, StorageError):
                raise
            raise StorageError(f"cannot {action} {key!r} in {self.url}: {err}") from err

    async def clear(self) -> None:
        names = await self.list_dir("")
        await asyncio.gather(*(self.delete_prefix(n) for n in names if n != "zarr.json"))
        await self.delete("zarr.json")

    async def is_empty(self) -> bool:
        try:
            self.repository()
        except CollectionNotFoundError:
            return True
        return not await self.list_dir("")

    def __repr__(self) -> str:
        at = f" @{self.snapshot}" if self.snapshot else ""
        return f"IcechunkStore({self.url!r}, branch={self.branch!r}{at})"


def _resolve_version(repo: Any, version: str, url: str) -> str:
    """Snapshot id of a tag, a branch or a snapshot id."""
    import icechunk

    if not isinstance(version, str):
        raise InvalidInputError(
            f"{url}: version must be a str (a snapshot id, tag or branch), got {version!r}"
        )
    for lookup in (repo.lookup_tag, repo.lookup_branch):
        try:
            return str(lookup(version))
        except icechunk.IcechunkError:
            continue
    try:
        repo.readonly_session(snapshot_id=version)
    except (icechunk.IcechunkError, ValueError) as err:
        raise CollectionNotFoundError(
            f"{url} has no snapshot, tag or branch named {version!r}"
        ) from err
    return version
