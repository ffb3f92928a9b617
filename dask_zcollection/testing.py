"""The store adapter contract as a reusable test suite (like ``zarr.testing.store``).

A third party that registers a URL scheme (:func:`dask_zcollection.store.register_scheme`,
so that ``resolve_store(store.url)`` finds its adapter) checks the adapter by
subclassing :class:`StoreTests` in its own test suite::

    import pytest
    from dask_zcollection.testing import StoreTests

    class TestMyStore(StoreTests):
        store_cls = MyStore
        scheme = "mine"

        @pytest.fixture
        def store(self, tmp_path):
            return MyStore(str(tmp_path / "store"))  # a new, empty location

        @pytest.fixture
        def other(self, tmp_path):
            return MyStore(str(tmp_path / "other"))  # another location, same backend

Where a backend legitimately differs, the subclass declares it (the
capabilities below) and the same tests check the other behaviour; nothing is
skipped. This module imports pytest: only test code imports it.

:class:`CountingStore` wraps a zarr store to count its requests by kind (and
optionally delay each, as a remote store would), so that tests pin the
requests an operation makes and benchmarks report them.
"""

from __future__ import annotations

import asyncio
import collections
import pickle
import threading
from collections.abc import AsyncIterator, Coroutine, Iterable, Sequence
from typing import Any, ClassVar

import dask.base
import numpy
import pytest
from zarr.abc.buffer import Buffer, BufferPrototype
from zarr.abc.store import ByteRequest, Store
from zarr.storage import WrapperStore

from .errors import ConflictError
from .store import StoreSpec, resolve_store
from .store._base import group_json

__all__ = ["CountingStore", "RequestCounter", "StoreTests", "run"]


def run[T](coro: Coroutine[Any, Any, T]) -> T:
    """Run one adapter coroutine to completion (a new event loop per call)."""
    return asyncio.run(coro)


def _group_json(**attributes: Any) -> bytes:
    return group_json(attributes)


_ROOT_GROUP = _group_json()


class StoreTests:
    """The contract every :class:`~dask_zcollection.store.StoreSpec` adapter meets.

    Subclass it, set :attr:`store_cls` and :attr:`scheme`, and implement the
    fixtures ``store`` (a spec of a new, empty location, as
    ``resolve_store(url, storage_options)`` returns it) and ``other`` (another
    location of the same backend). Override ``storage_options`` when the URL
    alone does not reach the store (credentials, endpoint).

    Every test writes through ``store.for_writing()`` and, where it checks
    what another reader sees, publishes first (:meth:`StoreSpec.publish`, a
    no-op unless the backend is transactional), as the library does.
    """

    #: The adapter class the ``store`` fixture returns.
    store_cls: ClassVar[type[StoreSpec]]
    #: The URL scheme of ``store.url``.
    scheme: ClassVar[str]
    #: ``put_if_absent`` is atomic among concurrent callers: the commit primitive of
    #: the lock/lease protocol. A transactional backend needs not offer it: a write
    #: operation runs in one session and :meth:`StoreSpec.publish` is the atomic step
    #: (the suite then checks that of concurrent sessions exactly one publishes).
    atomic_create: ClassVar[bool] = True
    #: Writes are invisible to other readers until :meth:`StoreSpec.publish`, and
    #: :meth:`StoreSpec.discard` drops them (Icechunk). Must match ``store_cls.transactional``.
    transactional: ClassVar[bool] = False
    #: Objects that are not Zarr nodes are stored as one-chunk arrays at their key
    #: (Icechunk): a listing also shows the ``zarr.json`` of the groups holding
    #: them, ``list_prefix`` shows the arrays' keys (``key/zarr.json``,
    #: ``key/c/0``), and a listing sees only the children of groups that exist,
    #: so the suite writes the root group first, as a collection does.
    blobs_as_arrays: ClassVar[bool] = False

    @pytest.fixture
    def store(self) -> StoreSpec:
        """A spec of a new, empty location."""
        raise NotImplementedError("a StoreTests subclass implements the 'store' fixture")

    @pytest.fixture
    def other(self) -> StoreSpec:
        """A spec of another location of the same backend."""
        raise NotImplementedError("a StoreTests subclass implements the 'other' fixture")

    @pytest.fixture
    def storage_options(self) -> dict[str, Any]:
        """What ``resolve_store(store.url, storage_options)`` needs to reach the store."""
        return {}

    # -- helpers -------------------------------------------------------------------------
    def writer(self, store: StoreSpec) -> StoreSpec:
        """The spec a write operation uses (with the root group where listings need it)."""
        spec = store.for_writing()
        if self.blobs_as_arrays:
            run(spec.put("zarr.json", _ROOT_GROUP))
        return spec

    def names(self, listing: Iterable[str]) -> list[str]:
        """A ``list_dir`` result without the group metadata an array-blob store shows."""
        return sorted(n for n in listing if not (self.blobs_as_arrays and n == "zarr.json"))

    def objects(self, keys: Iterable[str]) -> list[str]:
        """The objects of a ``list_prefix`` result (on an array-blob store: the blobs).

        Every object the suite lists is non-empty, so each blob has its chunk ``c/0``.
        """
        if not self.blobs_as_arrays:
            return sorted(keys)
        return sorted(k.removesuffix("/c/0") for k in keys if k.endswith("/c/0"))

    # -- identity ----------------------------------------------------------------------
    def test_capabilities_match_the_spec(self, store: StoreSpec) -> None:
        assert store.transactional is self.transactional
        assert self.atomic_create or self.transactional, (
            "without an atomic create the backend must be transactional: nothing else "
            "can commit safely"
        )

    def test_type_and_url(self, store: StoreSpec, storage_options: dict[str, Any]) -> None:
        assert isinstance(store, self.store_cls)
        assert store.url.startswith(f"{self.scheme}://")
        assert resolve_store(store.url, storage_options) == store
        assert resolve_store(store.url + "/", storage_options) == store
        assert resolve_store(store) is store
        writer = store.for_writing()
        assert type(writer) is type(store) and writer.url == store.url

    def test_pickle_round_trip(self, store: StoreSpec) -> None:
        writer = self.writer(store)
        run(writer.put("shared", b"value"))
        run(writer.publish("test_pickle_round_trip"))
        clone = pickle.loads(pickle.dumps(store))
        assert clone == store
        assert type(clone) is type(store)
        assert clone.url == store.url
        assert run(clone.get("shared")) == b"value"

    def test_dask_token(self, store: StoreSpec, other: StoreSpec) -> None:
        clone = pickle.loads(pickle.dumps(store))
        assert dask.base.tokenize(clone) == dask.base.tokenize(store)
        assert dask.base.tokenize(store) != dask.base.tokenize(other)

    def test_same_url_same_data(self, store: StoreSpec, storage_options: dict[str, Any]) -> None:
        writer = self.writer(store)
        run(writer.put("k", b"v"))
        run(writer.publish("test_same_url_same_data"))
        again = resolve_store(store.url, storage_options)
        assert run(again.get("k")) == b"v"
        # One live store per process and state (a transactional spec pins one snapshot).
        pinned, pinned_again = run(store.pinned()), run(again.pinned())
        assert pinned == pinned_again
        assert pinned.zarr_store() is pinned_again.zarr_store()

    # -- key/value I/O -------------------------------------------------------------------
    def test_empty(self, store: StoreSpec) -> None:
        assert run(store.is_empty())
        writer = self.writer(store)
        assert run(writer.get("missing")) is None
        assert not run(writer.exists("missing"))
        assert self.names(run(writer.list_dir(""))) == []
        assert run(writer.list_dir("no/such/dir")) == []
        assert self.objects(run(writer.list_prefix(""))) == []

    def test_put_get(self, store: StoreSpec) -> None:
        writer = self.writer(store)
        run(writer.put("a/b/c", b"\x00\x01payload"))
        assert run(writer.get("a/b/c")) == b"\x00\x01payload"
        assert run(writer.exists("a/b/c"))
        run(writer.put("a/b/c", b"second"))  # put overwrites
        assert run(writer.get("a/b/c")) == b"second"
        run(writer.put("empty", b""))
        assert run(writer.get("empty")) == b""
        assert run(writer.exists("empty"))
        big = bytes(range(256)) * 4096  # 1 MiB: more than one write call or request buffer
        run(writer.put("big", big))
        assert run(writer.get("big")) == big
        run(writer.publish("test_put_get"))
        assert not run(store.is_empty())

    def test_put_many(self, store: StoreSpec) -> None:
        writer = self.writer(store)
        # Zarr metadata where the library writes it (a backend may parse it).
        items = {f"g/a{i}/zarr.json": _group_json(index=i) for i in range(5)}
        items["g/a0/blob"] = b"bytes"
        run(writer.put("g/a0/zarr.json", _group_json(index=-1)))
        run(writer.put_many(items, last={"g/zarr.json": _group_json(index="root")}))
        for key, value in items.items():
            assert run(writer.get(key)) == value
        assert run(writer.get("g/zarr.json")) == _group_json(index="root")
        assert sorted(run(writer.list_dir("g"))) == [*(f"a{i}" for i in range(5)), "zarr.json"]
        assert sorted(run(writer.list_dir("g/a0"))) == ["blob", "zarr.json"]

    def test_delete(self, store: StoreSpec) -> None:
        writer = self.writer(store)
        run(writer.put("x/y", b"1"))
        run(writer.put("x/z", b"2"))
        run(writer.delete("x/y"))
        assert run(writer.get("x/y")) is None
        assert not run(writer.exists("x/y"))
        assert run(writer.get("x/z")) == b"2"  # its sibling stays
        run(writer.delete("x/y"))  # absent: no error
        run(writer.delete("never/was"))
        assert self.names(run(writer.list_dir("x"))) == ["z"]

    def test_delete_prefix(self, store: StoreSpec) -> None:
        writer = self.writer(store)
        for key in ("p/q/r", "p/q/s/t", "p/qq", "p/z/1", "p/w/2", "q"):
            run(writer.put(key, key.encode()))
        run(writer.delete_prefix("p/q"))
        assert self.objects(run(writer.list_prefix(""))) == ["p/qq", "p/w/2", "p/z/1", "q"]
        assert run(writer.get("p/qq")) == b"p/qq"  # a sibling sharing the prefix text stays
        assert run(writer.get("p/q/r")) is None
        run(writer.delete_prefix("p/q"))  # already gone: no error
        run(writer.delete_prefixes(["p/z/", "p/w"]))
        assert self.objects(run(writer.list_prefix(""))) == ["p/qq", "q"]

    def test_clear(self, store: StoreSpec) -> None:
        writer = self.writer(store)
        run(writer.put("a/b", b"1"))
        run(writer.put("c", b"2"))
        run(writer.clear())
        run(writer.publish("test_clear"))
        assert run(store.is_empty())
        assert run(store.get("c")) is None
        assert run(writer.list_prefix("")) == []

    # -- listings ------------------------------------------------------------------------
    def test_list_dir(self, store: StoreSpec) -> None:
        writer = self.writer(store)
        for key in ("a/b/c", "a/bx", "a/d/e/f", "top"):
            run(writer.put(key, b"x"))
        assert self.names(run(writer.list_dir(""))) == ["a", "top"]
        assert self.names(run(writer.list_dir("a"))) == ["b", "bx", "d"]
        assert self.names(run(writer.list_dir("a/"))) == ["b", "bx", "d"]
        assert self.names(run(writer.list_dir("a/d"))) == ["e"]
        assert run(writer.list_dir("a/d/e/f/none")) == []

    def test_list_prefix(self, store: StoreSpec) -> None:
        writer = self.writer(store)
        for key in ("a/b/c", "a/bx", "a/d/e/f", "top"):
            run(writer.put(key, b"x"))
        assert self.objects(run(writer.list_prefix("a/d"))) == ["a/d/e/f"]
        assert self.objects(run(writer.list_prefix("a/d/"))) == ["a/d/e/f"]
        assert self.objects(run(writer.list_prefix(""))) == ["a/b/c", "a/bx", "a/d/e/f", "top"]

    def test_list_prefix_of_nothing(self, store: StoreSpec) -> None:
        writer = self.writer(store)
        run(writer.put("a/b", b"x"))
        assert run(writer.list_prefix("nothing/here")) == []
        assert run(writer.list_prefix("a/b/c/d")) == []

    # -- the commit primitive ------------------------------------------------------------
    def test_put_if_absent(self, store: StoreSpec) -> None:
        writer = self.writer(store)
        assert run(writer.put_if_absent("k/v1.zcat", b"first")) is True
        assert run(writer.put_if_absent("k/v1.zcat", b"second")) is False
        assert run(writer.get("k/v1.zcat")) == b"first"
        assert run(writer.put_if_absent("k/claim", b"a", durable=False)) is True
        assert run(writer.put_if_absent("k/claim", b"b", durable=False)) is False
        assert run(writer.get("k/claim")) == b"a"
        # A key written by put counts as present too.
        run(writer.put("k/v2.zcat", b"put"))
        assert run(writer.put_if_absent("k/v2.zcat", b"other")) is False
        assert run(writer.get("k/v2.zcat")) == b"put"
        # A deleted key can be created again.
        run(writer.delete("k/claim"))
        assert run(writer.put_if_absent("k/claim", b"c", durable=False)) is True
        assert run(writer.get("k/claim")) == b"c"
        # No temporary object is visible.
        assert self.names(run(writer.list_dir("k"))) == ["claim", "v1.zcat", "v2.zcat"]

    def test_commit_has_one_winner(self, store: StoreSpec) -> None:
        """Of concurrent creators of one object exactly one wins; its bytes are stored.

        With :attr:`atomic_create` the creators race on ``put_if_absent``; on a
        transactional backend each creates the object in its own session, started
        from the same state, and exactly one ``publish`` lands (never
        last-writer-wins: the others raise :class:`ConflictError`).
        """
        n = 16 if self.atomic_create else 4
        if self.atomic_create:

            async def race() -> list[bool]:
                writer = store.for_writing()
                return await asyncio.gather(
                    *(writer.put_if_absent("race/obj", f"writer {i}".encode()) for i in range(n))
                )

            results = run(race())
            assert results.count(True) == 1, results
            winner = results.index(True)
        else:
            run(self.writer(store).publish("root group"))  # before the sessions start
            writers = [store.for_writing() for _ in range(n)]
            for i, w in enumerate(writers):  # every session starts from the same snapshot
                assert run(w.put_if_absent("race/obj", f"writer {i}".encode())) is True
            published = []
            for i, w in enumerate(writers):
                try:
                    run(w.publish(f"writer {i}"))
                except ConflictError:
                    continue
                published.append(i)
            assert len(published) == 1, published
            winner = published[0]
        reader = run(store.pinned())
        assert run(reader.get("race/obj")) == f"writer {winner}".encode()

    def test_publish_makes_writes_visible(
        self, store: StoreSpec, storage_options: dict[str, Any]
    ) -> None:
        writer = self.writer(store)
        run(writer.put("v/a", b"1"))
        assert run(writer.put_if_absent("v/b", b"2")) is True
        reader = resolve_store(store.url, storage_options)
        # Before the publish a transactional write is seen by its own session only.
        expected = None if self.transactional else b"1"
        assert run(reader.get("v/a")) == expected
        assert run(writer.get("v/a")) == b"1"
        run(writer.publish("test_publish_makes_writes_visible"))
        assert run(reader.get("v/a")) == b"1"
        assert run(reader.get("v/b")) == b"2"
        assert run(run(reader.pinned()).get("v/b")) == b"2"

    def test_discard(self, store: StoreSpec) -> None:
        writer = self.writer(store)
        run(writer.put("kept", b"1"))
        run(writer.publish("kept"))
        run(writer.put("dropped", b"2"))
        run(writer.discard())
        # A transactional write is undone; elsewhere every put is in place already.
        expected = None if self.transactional else b"2"
        assert run(writer.get("dropped")) == expected
        assert run(store.get("dropped")) == expected
        assert run(store.get("kept")) == b"1"

    # -- zarr ----------------------------------------------------------------------------
    def test_zarr_store_is_a_zarr_v3_store(self, store: StoreSpec) -> None:
        import zarr

        writer = store.for_writing()
        group = zarr.open_group(store=writer.zarr_store(), mode="w")
        group.create_array("a", shape=(3,), dtype="int16")[:] = [1, 2, 3]
        assert run(writer.exists("a/zarr.json"))
        run(writer.publish("test_zarr_store_is_a_zarr_v3_store"))
        pinned = run(store.pinned())
        array = zarr.open_array(store=pinned.zarr_store(), path="a", mode="r")
        assert numpy.asarray(array[:]).tolist() == [1, 2, 3]


# -- counting requests -------------------------------------------------------------------------
class RequestCounter:
    """Requests of the :class:`CountingStore` instances sharing it (thread-safe).

    ``count`` is the total; ``kinds`` the same requests by kind (``get``,
    ``put``, ``head``, ``list``, ``delete``); ``keys`` the keys read, in order.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.count = 0
        self.kinds: collections.Counter[str] = collections.Counter()
        self.keys: list[str] = []

    def add(self, n: int = 1, kind: str | None = None, keys: Iterable[str] = ()) -> None:
        """Count ``n`` requests of ``kind`` (reads of ``keys``)."""
        with self._lock:
            self.count += n
            if kind is not None:
                self.kinds[kind] += n
            self.keys.extend(keys)

    def reset(self) -> int:
        """Forget everything; return the total counted since the last reset."""
        with self._lock:
            n, self.count = self.count, 0
            self.kinds.clear()
            self.keys.clear()
        return n

    def reads(self) -> list[str]:
        """The keys read since the last reset, in order."""
        with self._lock:
            return list(self.keys)

    def take(self) -> collections.Counter[str]:
        """The counts by kind since the last reset, and reset."""
        with self._lock:
            kinds, self.kinds = self.kinds, collections.Counter()
            self.count = 0
            self.keys.clear()
        return kinds


class CountingStore(WrapperStore[Store]):
    """Wrap a zarr store: count every request, and wait ``latency`` seconds before it.

    The wait is an ``asyncio.sleep``, so concurrent requests overlap as they
    would over a network. A listing counts (and waits) once per call, a partial
    read once per range. Use it as the store of a :class:`StoreSpec` subclass
    (override ``_open_store``) to pin the requests of an operation.

    Parameters
    ----------
    store : zarr.abc.store.Store
        The store wrapped.
    latency : float
        Seconds added to every request.
    counter : RequestCounter, optional
        Where the requests are counted (shared by stores that pass the same one).
    """

    def __init__(
        self, store: Store, latency: float = 0.0, counter: RequestCounter | None = None
    ) -> None:
        super().__init__(store)
        self.latency = float(latency)
        self.counter = counter if counter is not None else RequestCounter()

    def _with_store(self, store: Store) -> CountingStore:
        return type(self)(store, self.latency, self.counter)

    @property
    def _supports_sync_io(self) -> bool:
        # zarr would otherwise bypass the async methods (uncounted) with *_sync calls.
        return False

    async def _wait(self, n: int = 1, kind: str | None = None, keys: Iterable[str] = ()) -> None:
        self.counter.add(n, kind, keys)
        if self.latency > 0:
            await asyncio.sleep(self.latency)

    async def get(
        self, key: str, prototype: BufferPrototype, byte_range: ByteRequest | None = None
    ) -> Buffer | None:
        await self._wait(kind="get", keys=(key,))
        return await self._store.get(key, prototype, byte_range)

    async def get_partial_values(
        self, prototype: BufferPrototype, key_ranges: Iterable[tuple[str, ByteRequest | None]]
    ) -> list[Buffer | None]:
        key_ranges = list(key_ranges)
        await self._wait(len(key_ranges), "get", [k for k, _ in key_ranges])
        return await self._store.get_partial_values(prototype, key_ranges)

    async def get_ranges(  # type: ignore[override]
        self, key: str, byte_ranges: Sequence[ByteRequest | None], **kwargs: Any
    ) -> AsyncIterator[Sequence[tuple[int, Buffer | None]]]:
        await self._wait(len(byte_ranges), "get", (key,))
        async for group in self._store.get_ranges(key, byte_ranges, **kwargs):
            yield group

    async def exists(self, key: str) -> bool:
        await self._wait(kind="head")
        return await self._store.exists(key)

    async def set(self, key: str, value: Buffer) -> None:
        await self._wait(kind="put")
        await self._store.set(key, value)

    async def set_if_not_exists(self, key: str, value: Buffer) -> None:
        await self._wait(kind="put")
        await self._store.set_if_not_exists(key, value)

    async def delete(self, key: str) -> None:
        await self._wait(kind="delete")
        await self._store.delete(key)

    async def is_empty(self, prefix: str) -> bool:
        await self._wait(kind="list")
        return await self._store.is_empty(prefix)

    async def list(self) -> AsyncIterator[str]:
        await self._wait(kind="list")
        async for k in self._store.list():
            yield k

    async def list_prefix(self, prefix: str) -> AsyncIterator[str]:
        await self._wait(kind="list")
        async for k in self._store.list_prefix(prefix):
            yield k

    async def list_dir(self, prefix: str) -> AsyncIterator[str]:
        await self._wait(kind="list")
        async for k in self._store.list_dir(prefix):
            yield k

    def __repr__(self) -> str:
        return f"CountingStore({self._store!r}, latency={self.latency})"
