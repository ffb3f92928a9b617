"""``file://`` collections on a local (POSIX) filesystem."""

from __future__ import annotations

import asyncio
import dataclasses
import os
import uuid
from collections.abc import Callable, Mapping
from typing import Any

from zarr.abc.store import Store
from zarr.storage import LocalStore as _ZarrLocalStore

from ..errors import StorageError
from ._base import StoreSpec

__all__ = ["LocalStore"]


#: Below this many bytes a write runs on the event loop itself: a thread hop
#: costs more than writing a few small files (and far more when the GIL is busy).
INLINE_BYTES = 1 << 16

#: A directory this size or smaller (its entries' bytes: ext4 holds ~400 short
#: names in 16 KiB) is listed on the event loop.
SMALL_DIR_BYTES = 1 << 14


def _write_new(path: str, data: bytes, durable: bool = False) -> str:
    """Write ``data`` to a fresh temporary file next to ``path``; return its name."""
    tmp = os.path.join(
        os.path.dirname(path), f".{os.path.basename(path)}.{uuid.uuid4().hex}.partial"
    )
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view) :]
        if durable:
            os.fsync(fd)
    finally:
        os.close(fd)
    return tmp


def _put_if_absent(path: str, data: bytes, durable: bool) -> bool:
    # Write the whole object aside, then link it into place: link(2) fails when
    # the name exists, so the object appears complete or not at all.
    os.makedirs(os.path.dirname(path), exist_ok=True)
    tmp = _write_new(path, data, durable)
    try:
        os.link(tmp, path)
    except FileExistsError:
        return False
    finally:
        os.unlink(tmp)
    return True


def _write_all(root: str, batches: tuple[Mapping[str, bytes], ...]) -> None:
    """Write each batch after the previous one, each object atomically (rename)."""
    made: set[str] = set()
    for items in batches:
        for key, data in items.items():
            path = os.path.join(root, key)
            parent = os.path.dirname(path)
            if parent not in made:
                os.makedirs(parent, exist_ok=True)
                made.add(parent)
            os.replace(_write_new(path, data), path)


#: What :func:`_read_small` returns for a file of :data:`INLINE_BYTES` or more.
_LARGE = object()


def _read_small(path: str) -> bytes | object | None:
    """The bytes of the file at ``path`` when smaller than :data:`INLINE_BYTES`.

    ``None`` when there is no such file, :data:`_LARGE` when it is larger (the
    caller reads it on a thread).
    """
    try:
        fd = os.open(path, os.O_RDONLY)
    except (FileNotFoundError, NotADirectoryError, IsADirectoryError):
        return None
    try:
        size = os.fstat(fd).st_size
        if size >= INLINE_BYTES:
            return _LARGE
        parts = []
        while part := os.read(fd, size + 1):  # to its end, even when it grew since
            parts.append(part)
        return b"".join(parts)
    except IsADirectoryError:
        return None
    finally:
        os.close(fd)


async def _maybe_inline[T](size: int, fn: Callable[..., T], *args: Any) -> T:
    if size < INLINE_BYTES:
        return fn(*args)
    return await asyncio.to_thread(fn, *args)


@dataclasses.dataclass(frozen=True, slots=True)
class LocalStore(StoreSpec):
    """A collection in a directory of the local filesystem (``file://``).

    Attributes
    ----------
    root : str
        Absolute path of the collection directory.
    """

    root: str

    def __post_init__(self) -> None:
        object.__setattr__(self, "root", os.path.abspath(os.path.expanduser(self.root)))

    @property
    def url(self) -> str:
        return f"file://{self.root}"

    def _open_store(self) -> Store:
        return _ZarrLocalStore(self.root)

    async def get(self, key: str) -> bytes | None:
        # zarr's LocalStore creates its root when first used: looking for a
        # collection that does not exist must not leave an empty directory.
        if not os.path.isdir(self.root):
            return None
        if type(self.zarr_store()) is not _ZarrLocalStore:  # a subclass's own store
            return await StoreSpec.get(self, key)
        # A small object (descriptor, catalog root and segments, zarr.json) is read
        # on the event loop: a thread hop costs more than the read.
        try:
            data = _read_small(os.path.join(self.root, key))
        except OSError as err:
            raise StorageError(f"cannot read {key!r} from {self.url}: {err}") from err
        if data is _LARGE:
            return await StoreSpec.get(self, key)
        assert data is None or isinstance(data, bytes)
        return data

    async def put_if_absent(self, key: str, data: bytes, *, durable: bool = True) -> bool:
        path = os.path.join(self.root, key)
        try:
            return await _maybe_inline(
                0 if not durable else INLINE_BYTES, _put_if_absent, path, data, durable
            )
        except OSError as err:
            raise StorageError(f"cannot create {key!r} in {self.url}: {err}") from err

    async def put(self, key: str, data: bytes) -> None:
        try:
            await _maybe_inline(len(data), _write_all, self.root, ({key: data},))
        except OSError as err:
            raise StorageError(f"cannot write {key!r} to {self.url}: {err}") from err

    async def put_many(
        self, items: Mapping[str, bytes], *, last: Mapping[str, bytes] | None = None
    ) -> None:
        # One batch for the whole partition: small partitions are many small files.
        batches = (items, last or {})
        size = sum(len(v) for b in batches for v in b.values())
        try:
            await _maybe_inline(size, _write_all, self.root, batches)
        except OSError as err:
            raise StorageError(f"cannot write to {self.url}: {err}") from err

    async def exists(self, key: str) -> bool:
        return os.path.exists(os.path.join(self.root, key))

    async def list_dir(self, prefix: str) -> list[str]:
        # os.scandir is one syscall batch; zarr's listing stats every entry.
        path = os.path.join(self.root, prefix)

        def scan() -> list[str]:
            try:
                with os.scandir(path) as it:
                    return [e.name for e in it if not e.name.endswith(".partial")]
            except (FileNotFoundError, NotADirectoryError):
                return []

        # A small directory (the catalog's versions, a partition's arrays: a few
        # hundred entries at most) is listed on the event loop, as small objects
        # are read: a thread hop costs more.
        try:
            small = os.stat(path).st_size <= SMALL_DIR_BYTES
        except OSError:
            small = True  # missing: scan() says so at once
        return scan() if small else await asyncio.to_thread(scan)
