"""``file://`` collections on a local (POSIX) filesystem."""

from __future__ import annotations

import asyncio
import dataclasses
import os
import uuid
from collections.abc import Mapping
from pathlib import Path
from typing import ClassVar

from zarr.abc.store import Store
from zarr.storage import LocalStore as _ZarrLocalStore

from ..errors import StorageError
from ._base import StoreSpec

__all__ = ["LocalStore"]


def _put_if_absent(path: Path, data: bytes, durable: bool) -> bool:
    # Write the whole object aside, then link it into place: link(2) fails when
    # the name exists, so the object appears complete or not at all.
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}.partial")
    with open(tmp, "wb") as f:
        f.write(data)
        if durable:
            f.flush()
            os.fsync(f.fileno())
    try:
        os.link(tmp, path)
    except FileExistsError:
        return False
    finally:
        tmp.unlink(missing_ok=True)
    return True


@dataclasses.dataclass(frozen=True, slots=True)
class LocalStore(StoreSpec):
    """A collection in a directory of the local filesystem (``file://``).

    Attributes
    ----------
    root : str
        Absolute path of the collection directory.
    """

    root: str
    schemes: ClassVar[tuple[str, ...]] = ("file", "")

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
        return await StoreSpec.get(self, key)

    async def put_if_absent(self, key: str, data: bytes, *, durable: bool = True) -> bool:
        try:
            return await asyncio.to_thread(_put_if_absent, Path(self.root, key), data, durable)
        except OSError as err:
            raise StorageError(f"cannot create {key!r} in {self.url}: {err}") from err

    async def put_many(self, items: Mapping[str, bytes]) -> None:
        # One thread hop for the whole batch: small partitions are many small files.
        def write_all() -> None:
            made: set[Path] = set()
            for key, data in items.items():
                path = Path(self.root, key)
                if path.parent not in made:
                    path.parent.mkdir(parents=True, exist_ok=True)
                    made.add(path.parent)
                tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}.partial")
                tmp.write_bytes(data)
                os.replace(tmp, path)

        try:
            await asyncio.to_thread(write_all)
        except OSError as err:
            raise StorageError(f"cannot write to {self.url}: {err}") from err

    async def list_dir(self, prefix: str) -> list[str]:
        # os.scandir is one syscall batch; zarr's listing stats every entry.
        def scan() -> list[str]:
            try:
                with os.scandir(os.path.join(self.root, prefix)) as it:
                    return [e.name for e in it if not e.name.endswith(".partial")]
            except (FileNotFoundError, NotADirectoryError):
                return []

        return await asyncio.to_thread(scan)
