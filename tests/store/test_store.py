"""The adapter contract (:mod:`dask_zcollection.testing`) on the local backends.

S3 (obstore, fsspec) runs it in ``test_s3.py``, Icechunk in ``test_icechunk.py``.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import unique_memory_name

from dask_zcollection.errors import InvalidInputError
from dask_zcollection.store import LocalStore, MemoryStore, StoreSpec, resolve_store
from dask_zcollection.testing import StoreTests, run


class TestLocalStore(StoreTests):
    store_cls = LocalStore
    scheme = "file"

    @pytest.fixture
    def store(self, tmp_path: Path) -> StoreSpec:
        return resolve_store(f"file://{tmp_path}/store")

    @pytest.fixture
    def other(self, tmp_path: Path) -> StoreSpec:
        return resolve_store(f"file://{tmp_path}/other")

    def test_paths(self, tmp_path: Path) -> None:
        assert resolve_store(str(tmp_path / "x")) == LocalStore(str(tmp_path / "x"))
        assert resolve_store(tmp_path / "x") == LocalStore(str(tmp_path / "x"))
        assert LocalStore(str(tmp_path / "a" / ".." / "x")).root == str(tmp_path / "x")

    def test_put_if_absent_leaves_no_partial_file(self, store: LocalStore) -> None:
        run(store.put_if_absent("v/obj", b"1"))
        run(store.put_if_absent("v/obj", b"2"))
        assert sorted(p.name for p in Path(store.root, "v").iterdir()) == ["obj"]

    def test_list_dir_hides_partial_files(self, store: LocalStore) -> None:
        run(store.put("d/real", b"1"))
        Path(store.root, "d", ".real.abc.partial").write_bytes(b"")
        assert run(store.list_dir("d")) == ["real"]


class TestMemoryStore(StoreTests):
    store_cls = MemoryStore
    scheme = "memory"

    @pytest.fixture
    def store(self) -> Iterator[StoreSpec]:
        name = unique_memory_name("store")
        yield resolve_store(f"memory://{name}")
        MemoryStore.forget(name)

    @pytest.fixture
    def other(self) -> Iterator[StoreSpec]:
        name = unique_memory_name("other")
        yield resolve_store(f"memory://{name}")
        MemoryStore.forget(name)

    def test_forget(self) -> None:
        name = unique_memory_name("forget")
        store = resolve_store(f"memory://{name}")
        run(store.put("k", b"v"))
        MemoryStore.forget(name)
        fresh = resolve_store(f"memory://{name}")
        assert run(fresh.get("k")) is None
        assert run(fresh.put_if_absent("k", b"new")) is True
        assert run(fresh.get("k")) == b"new"
        MemoryStore.forget(name)


def test_unknown_scheme() -> None:
    with pytest.raises(InvalidInputError, match="nosuch"):
        resolve_store("nosuch://x/y")


class _RacyStore(LocalStore):
    """A broken adapter: its create checks, then writes (not atomic)."""

    async def put_if_absent(self, key: str, data: bytes, *, durable: bool = True) -> bool:
        if await self.exists(key):
            return False
        await asyncio.sleep(0)  # every concurrent caller checks before any writes
        await self.put(key, data)
        return True


def test_the_suite_catches_a_create_that_is_not_atomic(tmp_path: Path) -> None:
    suite = TestLocalStore()
    racy = _RacyStore(str(tmp_path / "racy"))
    suite.test_put_if_absent(racy)  # sequentially it behaves
    with pytest.raises(AssertionError, match="True, True"):
        suite.test_commit_has_one_winner(_RacyStore(str(tmp_path / "race")))
