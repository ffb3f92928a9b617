"""Store adapters: a reusable contract suite (like ``zarr.testing.store.StoreTests``)."""

from __future__ import annotations

import asyncio
import pickle
from collections.abc import Coroutine, Iterator
from pathlib import Path
from typing import Any, ClassVar

import dask.base
import pytest
from conftest import unique_memory_name

from dask_zcollection.errors import InvalidInputError
from dask_zcollection.store import LocalStore, MemoryStore, StoreSpec, resolve_store


def run[T](coro: Coroutine[Any, Any, T]) -> T:
    return asyncio.run(coro)


class StoreTests:
    """The contract every :class:`StoreSpec` adapter meets.

    Subclass it, set ``store_cls`` and implement the ``store`` fixture (a fresh,
    empty store) and ``other`` (another location of the same backend).
    """

    store_cls: ClassVar[type[StoreSpec]]
    scheme: ClassVar[str]

    @pytest.fixture
    def store(self) -> StoreSpec:
        raise NotImplementedError

    @pytest.fixture
    def other(self) -> StoreSpec:
        raise NotImplementedError

    def test_type_and_url(self, store: StoreSpec) -> None:
        assert isinstance(store, self.store_cls)
        assert store.url.startswith(f"{self.scheme}://")
        assert resolve_store(store.url) == store
        assert resolve_store(store) is store

    def test_empty(self, store: StoreSpec) -> None:
        assert run(store.is_empty())
        assert run(store.get("missing")) is None
        assert not run(store.exists("missing"))
        assert run(store.list_dir("")) == []
        assert run(store.list_dir("no/such/dir")) == []
        assert run(store.list_prefix("")) == []

    def test_put_get(self, store: StoreSpec) -> None:
        run(store.put("a/b/c", b"\x00\x01payload"))
        assert run(store.get("a/b/c")) == b"\x00\x01payload"
        assert run(store.exists("a/b/c"))
        run(store.put("a/b/c", b"second"))  # put overwrites
        assert run(store.get("a/b/c")) == b"second"
        run(store.put("empty", b""))
        assert run(store.get("empty")) == b""
        assert not run(store.is_empty())

    def test_put_many(self, store: StoreSpec) -> None:
        items = {f"g/a{i}/zarr.json": f"doc {i}".encode() for i in range(5)}
        items["g/zarr.json"] = b"root"
        run(store.put("g/a0/zarr.json", b"old"))
        run(store.put_many(items))
        for key, value in items.items():
            assert run(store.get(key)) == value
        assert sorted(run(store.list_dir("g"))) == [*(f"a{i}" for i in range(5)), "zarr.json"]

    def test_put_if_absent(self, store: StoreSpec) -> None:
        assert run(store.put_if_absent("k/v1.zcat", b"first")) is True
        assert run(store.put_if_absent("k/v1.zcat", b"second")) is False
        assert run(store.get("k/v1.zcat")) == b"first"
        assert run(store.put_if_absent("k/claim", b"a", durable=False)) is True
        assert run(store.put_if_absent("k/claim", b"b", durable=False)) is False
        assert run(store.get("k/claim")) == b"a"
        # A key written by put counts as present too.
        run(store.put("k/v2.zcat", b"put"))
        assert run(store.put_if_absent("k/v2.zcat", b"other")) is False
        assert run(store.get("k/v2.zcat")) == b"put"
        # No temporary object is visible.
        assert sorted(run(store.list_dir("k"))) == ["claim", "v1.zcat", "v2.zcat"]

    def test_put_if_absent_race_has_one_winner(self, store: StoreSpec) -> None:
        async def race() -> list[bool]:
            return await asyncio.gather(
                *(store.put_if_absent("race/obj", f"writer {i}".encode()) for i in range(16))
            )

        results = run(race())
        assert results.count(True) == 1
        winner = results.index(True)
        assert run(store.get("race/obj")) == f"writer {winner}".encode()

    def test_list_dir(self, store: StoreSpec) -> None:
        for key in ("a/b/c", "a/bx", "a/d/e/f", "top"):
            run(store.put(key, b"x"))
        assert sorted(run(store.list_dir(""))) == ["a", "top"]
        assert sorted(run(store.list_dir("a"))) == ["b", "bx", "d"]
        assert sorted(run(store.list_dir("a/"))) == ["b", "bx", "d"]
        assert sorted(run(store.list_dir("a/d"))) == ["e"]
        assert sorted(run(store.list_prefix("a/d"))) == ["a/d/e/f"]
        assert sorted(run(store.list_prefix(""))) == ["a/b/c", "a/bx", "a/d/e/f", "top"]

    def test_delete(self, store: StoreSpec) -> None:
        run(store.put("x/y", b"1"))
        run(store.delete("x/y"))
        assert run(store.get("x/y")) is None
        run(store.delete("x/y"))  # absent: no error
        run(store.delete("never/was"))

    def test_delete_prefix(self, store: StoreSpec) -> None:
        for key in ("p/q/r", "p/q/s/t", "p/qq", "p/z/1", "p/w/2", "q"):
            run(store.put(key, key.encode()))
        run(store.delete_prefix("p/q"))
        assert sorted(run(store.list_prefix(""))) == ["p/qq", "p/w/2", "p/z/1", "q"]
        assert run(store.get("p/qq")) == b"p/qq"  # a sibling sharing the prefix text stays
        run(store.delete_prefix("p/q"))  # already gone: no error
        run(store.delete_prefixes(["p/z/", "p/w"]))
        assert sorted(run(store.list_prefix(""))) == ["p/qq", "q"]

    def test_clear(self, store: StoreSpec) -> None:
        run(store.put("a/b", b"1"))
        run(store.put("c", b"2"))
        run(store.clear())
        assert run(store.is_empty())
        assert run(store.list_prefix("")) == []

    def test_pickle_round_trip(self, store: StoreSpec) -> None:
        run(store.put("shared", b"value"))
        clone = pickle.loads(pickle.dumps(store))
        assert clone == store
        assert type(clone) is type(store)
        assert clone.url == store.url
        assert run(clone.get("shared")) == b"value"

    def test_dask_token(self, store: StoreSpec, other: StoreSpec) -> None:
        clone = pickle.loads(pickle.dumps(store))
        assert dask.base.tokenize(clone) == dask.base.tokenize(store)
        assert dask.base.tokenize(store) != dask.base.tokenize(other)

    def test_same_url_same_data(self, store: StoreSpec) -> None:
        run(store.put("k", b"v"))
        again = resolve_store(store.url)
        assert run(again.get("k")) == b"v"
        assert again.zarr_store() is store.zarr_store()  # one live store per process

    def test_zarr_store_is_a_zarr_v3_store(self, store: StoreSpec) -> None:
        import zarr

        group = zarr.open_group(store=store.zarr_store(), mode="w")
        group.create_array("a", shape=(3,), dtype="int16")[:] = [1, 2, 3]
        assert run(store.exists("a/zarr.json"))
        assert zarr.open_array(store=store.zarr_store(), path="a")[:].tolist() == [1, 2, 3]


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
