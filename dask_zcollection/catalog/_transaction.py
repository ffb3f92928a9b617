"""The commit protocol: write aside, publish with one atomic catalog version.

A writer (a :class:`Transaction`, a small picklable value shipped to the
tasks of an insert graph)

1. records a *lease* ``_transactions/<txn>.json`` naming its owner and the
   canonical paths of the partitions it may write, so a crash leaves a note of
   what to clean;
2. writes each new partition version to a path no committed catalog names:
   it *claims* the canonical path ``year=2024/month=03`` with put-if-absent on
   its ``zarr.json``, or, when that path is taken (it holds the version being
   replaced), writes beside it at ``year=2024/month=03@<txn>``;
3. commits by creating catalog version ``N + 1`` (put-if-absent) from the
   newest catalog. A partition it touched that changed since it planned
   (another path or row count) is a :class:`~dask_zcollection.errors.ConflictError`;
   otherwise the change is rebased on whatever others committed meanwhile;
4. *retires* the versions it superseded (a record in ``_garbage/``; they stay
   readable for the retention period, so a reader holding an older catalog
   still finds every partition it names), releases its partition locks, then
   deletes the lease; :func:`collect_garbage` deletes retired versions once
   their retention has passed.

Readers only follow a committed catalog, so they never see data written
before step 3. A writer finding a partition locked by a dead writer (see
:mod:`._lease`) recovers that transaction itself (:func:`recover_transaction`)
and takes the lock; :func:`recover` does the same for every dead writer.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import logging
import random
import secrets
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Sequence
from typing import Any, ClassVar, Protocol

import numpy

from ..errors import ConflictError
from ..store import StoreSpec
from ..store._base import group_json
from ._catalog import Catalog
from ._lease import (
    ALIVE_SUFFIX,
    LEASE_DIR,
    alive_key,
    end,
    heartbeat,
    lease_key,
    lease_timeout,
    liveness,
    write_lease,
)
from ._log import CatalogLog, by_keys, by_paths, compacting

__all__ = [
    "GARBAGE_DIR",
    "LEASE_DIR",
    "Change",
    "DropPartitions",
    "PutPartitions",
    "Transaction",
    "acquire_lock",
    "collect_garbage",
    "lock_key",
    "lock_token",
    "new_txn_id",
    "recover",
    "recover_transaction",
    "retention",
    "retry_on_conflict",
]

_log = logging.getLogger("dask_zcollection")

#: Where writers hold their per-partition locks (``_locks/<canonical>.lock``).
LOCK_DIR = "_locks"
#: Seconds an abort marker is kept: tasks of an aborted insert may still be running
#: (the scheduler does not wait for them) and check it after each write.
ABORT_MARKER_TTL = 600.0
#: Seconds an abort waits for the tasks still writing under their partition locks.
ABORT_WAIT = 120.0
#: Seconds a task of a lazy write waits for a partition lock a live writer holds
#: before its ``ConflictError``: the holder may be a graph computed in the same
#: ``dask.compute``, its commit due. Failing at once would end that compute before
#: the holder's commit ran, leaving its locks until recovery. (An eager write fails
#: at once and retries: no other graph shares its compute.)
LOCK_WAIT = 2.0
#: Catalog versions a commit tries before giving up (each lost one is another
#: writer's commit: progress, but never an unbounded loop).
_COMMIT_ATTEMPTS = 1000
#: Where superseded partition versions are recorded until they are deleted.
GARBAGE_DIR = "_garbage"
#: Default seconds a superseded (or dropped) partition version stays readable
#: for readers holding an older catalog (``dask.config`` key ``zcollection.retention``).
DEFAULT_RETENTION = 3600.0
PENDING_ATTR = "_zc_pending"
TXN_ATTR = "_zc_txn"


def lock_key(canonical: str) -> str:
    """Key of the lock a writer holds on a partition while it writes it."""
    return f"{LOCK_DIR}/{canonical}.lock"


def lock_token(txn: str, *, done: bool = False) -> bytes:
    """Content of a partition lock held by ``txn``: a task writing under it, or done.

    A task rewrites its lock as done after its last write. An abort releases
    only done locks (and waits for the others): a task still writing after its
    lock was released could write into a partition that another writer locked,
    and committed, meanwhile.
    """
    return f"{txn} done".encode() if done else txn.encode()


def lock_owner(token: bytes) -> str:
    """The transaction id a lock's content names."""
    return token.decode("utf-8", "replace").split(" ", 1)[0]


async def acquire_lock(spec: StoreSpec, canonical: str, token: bytes, *, wait: float = 0.0) -> None:
    """Take the lock of the partition at ``canonical``, recovering a dead holder first.

    ``wait``: seconds to wait for a live holder to release it.

    Raises
    ------
    ConflictError
        When a live writer holds it (after ``wait``).
    """
    key = lock_key(canonical)
    deadline = time.monotonic() + wait
    delay = 0.01
    tries = 0
    while tries < 3:
        tries += 1
        if await spec.put_if_absent(key, token, durable=False):
            return
        holder = await spec.get(key)
        if holder is None:
            continue  # released meanwhile
        txn = lock_owner(holder)
        # Judged dead before its abort marker goes in (a live writer is never marked),
        # and again after it (recover_transaction).
        dead = (await liveness(spec, txn)).dead()
        if not dead and time.monotonic() < deadline:
            await asyncio.sleep(delay)
            delay = min(2 * delay, 0.2)
            tries -= 1  # a live holder is waited for, not counted as contention
            continue
        if not dead or not await recover_transaction(spec, txn, [canonical]):
            raise ConflictError(
                f"partition {canonical!r} is being written by transaction {txn}; retry"
            )
        if await spec.get(key) == holder:
            # Unreadable lease naming other partitions: this lock is the dead writer's.
            await spec.delete(key)
    raise ConflictError(f"partition {canonical!r} is contended by other writers; retry")


async def retry_on_conflict[T](attempt: Callable[[], Awaitable[T]], retries: int) -> T:
    """Run ``attempt()``; after a ``ConflictError``, back off and run it again.

    At most ``retries`` more times, each after a random delay that doubles
    (10-50 ms first); the last ``ConflictError`` is raised.
    """
    for i in range(retries + 1):
        try:
            return await attempt()
        except ConflictError:
            if i == retries:
                raise
            await asyncio.sleep(random.uniform(0.01, 0.05) * 2**i)
    raise AssertionError("unreachable")


def new_txn_id() -> str:
    """A unique, time-ordered transaction id (hex)."""
    return f"{time.time_ns() // 1_000_000:011x}{secrets.token_hex(4)}"


def retention() -> float:
    """Seconds superseded partition versions are kept (``zcollection.retention``)."""
    import dask.config

    value = dask.config.get("zcollection.retention", None)
    return DEFAULT_RETENTION if value is None else float(value)


def _pending_group(txn: str) -> bytes:
    return group_json({PENDING_ATTR: True, TXN_ATTR: txn})


class Change(Protocol):
    """A change to the catalog, re-applied to the newest version on rebase."""

    @property
    def keys(self) -> numpy.ndarray:
        """Keys of the partitions the change touches."""

    def __call__(self, catalog: Catalog) -> Catalog: ...


@dataclasses.dataclass(frozen=True, eq=False)
class PutPartitions:
    """Add or replace partitions."""

    verb: ClassVar[str] = "write"
    keys: numpy.ndarray
    paths: tuple[str, ...]
    rows: numpy.ndarray
    axis_min: numpy.ndarray
    axis_max: numpy.ndarray
    #: The transaction that wrote the groups (their identity; ``""``: unknown).
    txn: str = ""

    def __call__(self, catalog: Catalog) -> Catalog:
        return catalog.with_partitions(
            self.keys, self.paths, self.rows, self.axis_min, self.axis_max, self.identities(catalog)
        )

    def identities(self, catalog: Catalog) -> list[str]:
        """The identity of each written group, applied to ``catalog`` (the newest version).

        A path the catalog names for the same key is a group grown in place (a
        claim only takes a path no catalog names): it keeps the identity it
        had, which readers of its earlier row count still check.
        """
        pos = catalog.find(self.keys)
        return [
            catalog.identity(p) if p >= 0 and catalog.paths[p] == path else self.txn
            for p, path in zip(pos.tolist(), self.paths, strict=True)
        ]


@dataclasses.dataclass(frozen=True, eq=False)
class DropPartitions:
    """Remove partitions."""

    verb: ClassVar[str] = "drop"
    keys: numpy.ndarray

    def __call__(self, catalog: Catalog) -> Catalog:
        return catalog.without(self.keys)


def _entry(catalog: Catalog, pos: int) -> tuple[str, int] | None:
    return None if pos < 0 else (catalog.paths[pos], int(catalog.rows[pos]))


@dataclasses.dataclass(frozen=True, eq=False)
class Transaction:
    """One writer's transaction (picklable: its tasks run anywhere).

    Attributes
    ----------
    spec : StoreSpec
        The collection's store.
    txn : str
        Unique id (also the suffix of the paths it writes beside others).
    canonicals : tuple of str
        Canonical paths of the partitions it may write.
    planned : Catalog
        The catalog entries of the touched partitions when the writer planned.
    planned_immutable : str or None
        The immutable group committed when the writer planned.
    reads : tuple
        Partitions the write read but does not write, as ``(canonical, key,
        path, rows, txn)`` when read (path ``None``: none committed): the commit
        fails with a ``ConflictError`` when one changed since (a halo's
        neighbour, the partition an index lookup answered from).
    """

    spec: StoreSpec
    txn: str
    canonicals: tuple[str, ...]
    planned: Catalog
    planned_immutable: str | None
    reads: tuple[tuple[Any, ...], ...] = ()

    @classmethod
    async def begin(
        cls, spec: StoreSpec, base: Catalog, keys: numpy.ndarray, canonicals: Sequence[str]
    ) -> Transaction:
        """Record the lease and return the transaction."""
        pos = base.find(keys) if len(keys) else numpy.empty(0, dtype="intp")
        planned = base.take(pos[pos >= 0])
        txn = cls(spec, new_txn_id(), tuple(canonicals), planned, base.immutable)
        await txn._write_lease([])
        return txn

    @property
    def _lease_key(self) -> str:
        return lease_key(self.txn)

    async def _write_lease(self, superseded: Sequence[str]) -> float:
        return await write_lease(self.spec, self.txn, self.canonicals, superseded)

    def alive(self, *, final: bool = False) -> contextlib.AbstractAsyncContextManager[None]:
        """Keep the transaction alive (heartbeats) while the block runs.

        ``final=True``: the writer is over when the block ends (its heartbeat
        object is deleted).
        """
        return heartbeat(self.spec, self.txn, final=final)

    @contextlib.asynccontextmanager
    async def aborting(self) -> AsyncIterator[None]:
        """Abort the transaction if the block fails (a conflict or any other error)."""
        try:
            yield
        except ConflictError:
            with contextlib.suppress(OSError):
                await self.abort()
            raise
        except BaseException:
            # The abort's own failure (the store unreachable) must not hide the error.
            with contextlib.suppress(OSError):
                await asyncio.shield(self.abort())
            raise

    @contextlib.asynccontextmanager
    async def writing(
        self, canonical: str, *, wait: float = 0.0
    ) -> AsyncIterator[Callable[[], Awaitable[None]]]:
        """Write the partition at ``canonical`` under its lock.

        Takes the lock (recovering a dead holder; waiting up to ``wait``
        seconds for a live one, :data:`LOCK_WAIT`), keeps the transaction alive,
        checks it was not aborted, and yields ``done()``: the writer calls it
        after its last write, from then on an abort may release the lock. On
        error the lock is released (still held by a writing task, an abort
        would wait for it). A transactional backend isolates writers by itself:
        no lock.
        """

        async def done() -> None:
            if self.spec.transactional:
                return
            key = lock_key(canonical)
            if await self.spec.get(key) != lock_token(self.txn):
                # Recovered as dead meanwhile: the lock may be another writer's now.
                raise ConflictError(f"transaction {self.txn} lost its lock on {canonical!r}")
            await self.spec.put(key, lock_token(self.txn, done=True))

        if self.spec.transactional:
            yield done
            return
        await acquire_lock(self.spec, canonical, lock_token(self.txn), wait=wait)
        try:
            async with self.alive():
                if await self.aborted():  # the write failed elsewhere meanwhile
                    raise ConflictError(f"transaction {self.txn} was aborted")
                yield done
        except BaseException:
            await self.release_locks([canonical])
            raise

    async def release_locks(self, canonicals: Iterable[str] | None = None) -> None:
        """Release the locks this transaction holds on ``canonicals`` (default: all)."""
        await _release_locks(
            self.spec, self.txn, self.canonicals if canonicals is None else canonicals
        )

    async def claim(self, canonical: str) -> str:
        """Reserve a fresh path for a new version of the partition at ``canonical``."""
        if await self.spec.put_if_absent(
            f"{canonical}/zarr.json", _pending_group(self.txn), durable=False
        ):
            return canonical
        return f"{canonical}@{self.txn}"

    def _conflicts(self, latest: Catalog, keys: numpy.ndarray, immutable: bool) -> list[Any]:
        if immutable and latest.immutable != self.planned_immutable:
            return ["<immutable variables>"]
        if not len(keys):
            return []
        before, now = self.planned.find(keys), latest.find(keys)
        return [
            tuple(int(k) for k in keys[i])
            for i in range(len(keys))
            if _entry(self.planned, int(before[i])) != _entry(latest, int(now[i]))
        ]

    def _read_conflicts(self, latest: Catalog, written: numpy.ndarray) -> list[Any]:
        """Partitions of :attr:`reads` (not written by this change) that changed since read."""
        reads = [r for r in self.reads if not len(written) or not (written == r[1]).all(1).any()]
        if not reads:
            return []
        pos = latest.find(numpy.array([r[1] for r in reads], dtype="int64"))
        return [
            r[0]
            for r, p in zip(reads, pos.tolist(), strict=True)
            if _entry(latest, p) != (None if r[2] is None else (r[2], r[3]))
            and not (r[2] is not None and r[3] < 0 and p >= 0 and latest.paths[p] == r[2])
        ]

    async def commit(
        self, change: Change, *, immutable: str | None = None, past: int = 0
    ) -> Catalog:
        """Publish ``change`` as the next catalog version.

        Returns the new version holding only the partitions of the segments
        the change touched (read the whole one with ``CatalogLog.latest()``).
        ``past``: number the version above it (repair: the numbers of the
        damaged versions it set aside are never taken again).

        Raises
        ------
        ConflictError
            When a concurrent commit changed a partition this one touches.
        CorruptedDataError
            When a version above the newest intact one is damaged (nothing is
            published: the commit would lose what it committed).
        """
        log = CatalogLog(self.spec)
        # Only the segments the change's keys (and the partitions it read) fall in are
        # read, and only the change's rewritten (with their small neighbours, merged
        # with them).
        watched = change.keys
        if self.reads:
            read_keys = numpy.array([r[1] for r in self.reads], dtype="int64")
            watched = numpy.concatenate([change.keys.reshape(-1, read_keys.shape[1]), read_keys])
        # Repair commits past the damaged versions it set aside, before deleting them
        # (a failed repair leaves them for the next): built on the version below,
        # read whole, every segment written afresh (CatalogLog.stage).
        choose = compacting(by_keys(watched)) if not past else None
        # A writer declared dead (no heartbeat for a lease timeout) is being cleaned
        # up: it must not publish. Its recoverer puts the abort marker before deleting
        # anything, and sees no heartbeat newer than a timeout: publishing within half
        # a timeout of the lease write, after checking the marker, never races it.
        budget = lease_timeout() / 2
        for _ in range(_COMMIT_ATTEMPTS):
            state = await log.state(choose)
            # Never built on a version below a damaged one: its commit would be lost
            # (but repair's, numbered past those it set aside).
            log.refuse_damaged([d for d in state.damaged if d[0] > past])
            latest = state.latest
            if latest is None:
                raise ConflictError(f"the catalog of {self.spec.url} disappeared during the write")
            clash = self._conflicts(latest, change.keys, immutable is not None)
            if clash:
                raise ConflictError(
                    f"a concurrent writer committed version {latest.version} of {self.spec.url} "
                    f"changing partition(s) {clash[:5]} that this write also changes; retry"
                )
            stale = self._read_conflicts(latest, numpy.asarray(change.keys, dtype="int64"))
            if stale:
                raise ConflictError(
                    f"a concurrent writer committed version {latest.version} of {self.spec.url} "
                    f"changing partition(s) {stale[:5]} that this write read; retry"
                )
            new = log.numbered(change(latest).next_version(self.txn, immutable=immutable))
            if new.version <= past:
                new = dataclasses.replace(new, version=past + 1)
            named = set(new.paths) | {new.immutable}
            pos = latest.find(change.keys) if len(change.keys) else numpy.empty(0, dtype="intp")
            superseded = [
                latest.paths[i] for i in pos.tolist() if i >= 0 and latest.paths[i] not in named
            ]
            if not self.spec.transactional and not await self.spec.exists(self._lease_key):
                # Only a recovery deletes the lease of a running writer (after its
                # abort marker, which may have expired since): never publish.
                raise ConflictError(
                    f"transaction {self.txn} was recovered as dead (its lease is gone); retry"
                )
            # The new segments go first (fresh names, nothing reads them before the root).
            staged = await log.stage(state, new)
            signed = time.monotonic()
            try:
                await self._write_lease(superseded)
                if not self.spec.transactional and await self.aborted():
                    raise ConflictError(
                        f"transaction {self.txn} was aborted (declared dead by another writer); "
                        "retry"
                    )
            except BaseException:
                await asyncio.shield(_quietly(log.discard(staged)))
                raise
            if time.monotonic() - signed <= budget and await log.commit(staged):
                break
            # Too slow to publish safely (sign the lease again), or another writer won.
            await _quietly(log.discard(staged))
        else:
            raise ConflictError(
                f"could not commit to {self.spec.url} in {_COMMIT_ATTEMPTS} attempts "
                "(other writers kept committing first); retry"
            )
        if self.spec.transactional:
            await self._clean_up(log, new, superseded)
            await self.spec.publish(_message(change, self.txn))  # this is the commit
            return new
        # The commit landed: a failing clean-up must not report it as failed (a caller
        # retrying a concat would insert twice). What is left is recovered: the lease
        # names the superseded versions and the locks, and a lock without its lease
        # is taken for a dead writer's after the lease timeout.
        try:
            await self._clean_up(log, new, superseded)
        except OSError as err:
            _log.warning("clean-up after commit %s of %s failed: %s", self.txn, self.spec.url, err)
        return new

    async def _clean_up(self, log: CatalogLog, new: Catalog, superseded: list[str]) -> None:
        """Retire what the commit superseded, release the locks, delete the lease, collect."""
        errors: list[OSError] = []

        async def attempt(step: Awaitable[Any]) -> None:
            try:
                await step
            except OSError as err:
                errors.append(err)

        await attempt(_retire(self.spec, self.txn, superseded))
        # Release the partition locks while the lease still names them: a crash
        # between the two leaves a lease, which recovery uses to release the locks.
        await attempt(_release_locks(self.spec, self.txn, self.canonicals))
        await attempt(self.spec.delete(self._lease_key))
        await attempt(self.spec.delete(alive_key(self.txn)))
        await attempt(log.prune(new.version))
        await attempt(collect_garbage(self.spec))
        if errors:
            raise errors[0]

    @property
    def _abort_key(self) -> str:
        return f"{LEASE_DIR}/{self.txn}.aborted"

    async def aborted(self) -> bool:
        """Whether :meth:`abort` was called (tasks still running check it after writing)."""
        return await self.spec.exists(self._abort_key)

    async def claim_abort(self) -> bool:
        """Put the abort marker unless it is there; whether this call put it.

        Of the watchers that may each start aborting one failed lazy write (its
        failing task, the scheduler's watch), the one that puts the marker
        aborts; the marker already there means an abort or a recovery runs.
        """
        return await self.spec.put_if_absent(
            self._abort_key, json.dumps({"aborted": time.time()}).encode()
        )

    async def abort(self) -> None:
        """Delete everything this (uncommitted) transaction wrote, then its lease.

        The abort marker goes first: a task still writing when this runs sees
        it after its last write, deletes its own output and releases its lock.
        The abort waits for those tasks (up to :data:`ABORT_WAIT` seconds), then
        deletes what the finished ones wrote and releases their locks. A task
        still writing after that keeps its partition locked and its lease
        stays: recovery finishes the clean-up. On a transactional backend the
        session is simply discarded.
        """
        if self.spec.transactional:
            await self.spec.discard()
            return
        busy: set[str] = set()
        try:
            await self._abort(busy)
        finally:
            if not busy:
                # Over: a writer of this process that meets its locks recovers them at
                # once (its lease names this running process: others wait for it).
                end(self.txn)

    async def _abort(self, busy: set[str]) -> None:
        """:meth:`abort` on a backend with locks; ``busy`` gets the partitions still written."""
        await self.spec.put(self._abort_key, json.dumps({"aborted": time.time()}).encode())
        busy |= await self._wait_for_writers(ABORT_WAIT)
        # Only the segments of its partitions: what it wrote is named there, if at all.
        mine = [p for c in self.canonicals for p in (c, f"{c}@{self.txn}")]
        # No warning about damaged versions: uncommitted, nothing of it is named there.
        latest = (await CatalogLog(self.spec).state(by_paths(mine))).latest
        try:
            await _remove_leftovers(
                self.spec,
                self.txn,
                [c for c in self.canonicals if c not in busy],
                latest,
                writing=False,
            )
        except OSError:
            # Never mask the error that made the insert fail; the lease stays, so
            # recovery finishes the clean-up once this process has ended.
            return
        if not busy:
            await self.spec.delete(self._lease_key)
            await self.spec.delete(alive_key(self.txn))

    async def _wait_for_writers(self, timeout: float) -> set[str]:
        """Wait until no task of this transaction writes under a partition lock.

        Returns the canonical paths still locked by a writing task at the timeout.
        """
        keys = {c: lock_key(c) for c in self.canonicals}
        writing = lock_token(self.txn)
        deadline = time.monotonic() + timeout
        delay = 0.005
        while True:
            owners = await asyncio.gather(*(self.spec.get(k) for k in keys.values()))
            busy = {c for c, o in zip(keys, owners, strict=True) if o == writing}
            if not busy or time.monotonic() >= deadline:
                return busy
            await asyncio.sleep(delay)
            delay = min(2 * delay, 0.25)


async def _quietly(step: Awaitable[Any]) -> None:
    """Run a best-effort clean-up step (what it leaves, prune or repair removes)."""
    try:
        await step
    except OSError as err:
        _log.warning("clean-up step failed: %s", err)


def _message(change: Change, txn: str) -> str:
    """The commit message of a transactional backend: what changed, and the txn."""
    verb = getattr(change, "verb", "change")
    paths = getattr(change, "paths", None)
    what = f"{len(change.keys)} partition(s)"
    if paths:
        what += ": " + ", ".join(paths[:5]) + (", ..." if len(paths) > 5 else "")
    return f"dask_zcollection {verb} {what} (txn {txn})"


async def _claimed_by(spec: StoreSpec, path: str, txn: str) -> bool:
    raw = await spec.get(f"{path}/zarr.json")
    if raw is None:
        return False
    try:
        return bool(json.loads(raw).get("attributes", {}).get(TXN_ATTR) == txn)
    except ValueError:
        return False


def _named(latest: Catalog | None) -> set[str | None]:
    return set(latest.paths if latest else ()) | {latest.immutable if latest else None}


async def _remove_leftovers(
    spec: StoreSpec,
    txn: str,
    canonicals: Iterable[str],
    latest: Catalog | None,
    *,
    writing: bool = True,
) -> None:
    """Delete what ``txn`` wrote that ``latest`` does not name, and release its locks.

    ``writing=False`` leaves the locks of tasks that may still be writing (see
    :func:`lock_token`): only those of finished tasks are released.
    """
    named = _named(latest)
    canonicals = list(canonicals)
    mine = await asyncio.gather(*(_claimed_by(spec, c, txn) for c in canonicals))
    claimed = [c for c, ok in zip(canonicals, mine, strict=True) if ok and c not in named]
    try:
        await _delete_prefixes(
            spec, [f"{c}@{txn}" for c in canonicals if f"{c}@{txn}" not in named]
        )
        # A claimed canonical path is known as this transaction's by its group
        # zarr.json: delete it last, so a clean-up killed half-way is finished by the
        # next recovery instead of leaving chunks nobody claims.
        children = await asyncio.gather(*(spec.list_dir(c) for c in claimed))
        await _delete_prefixes(
            spec,
            [
                f"{c}/{k}"
                for c, ks in zip(claimed, children, strict=True)
                for k in ks
                if k != "zarr.json"
            ],
        )
        await asyncio.gather(*(spec.delete(f"{c}/zarr.json") for c in claimed))
        await _delete_prefixes(spec, claimed)
    finally:
        # Release the partition locks this transaction still holds (whatever happened).
        await _release_locks(spec, txn, canonicals, writing=writing)


async def _release_locks(
    spec: StoreSpec, txn: str, canonicals: Iterable[str], *, writing: bool = True
) -> None:
    """Delete the partition locks of ``canonicals`` that ``txn`` holds (no one else's).

    ``writing=False``: only those whose task is done writing (:func:`lock_token`).
    """
    locks = [lock_key(c) for c in canonicals]
    mine = {lock_token(txn, done=True)} | ({lock_token(txn)} if writing else set())
    owners = await asyncio.gather(*(spec.get(k) for k in locks))
    await asyncio.gather(*(spec.delete(k) for k, o in zip(locks, owners, strict=True) if o in mine))


def _records(names: Iterable[str]) -> list[str]:
    """The JSON records of a listing (``zarr.json``: the directory's group, on Icechunk)."""
    return [n for n in names if n.endswith(".json") and n != "zarr.json"]


async def _json_records(
    spec: StoreSpec, directory: str, names: Sequence[str]
) -> list[tuple[str, Any]]:
    """The JSON documents ``directory/<name>`` read concurrently (``None``: unreadable).

    A record deleted since the listing is left out.
    """
    raws = await asyncio.gather(*(spec.get(f"{directory}/{n}") for n in names))
    records: list[tuple[str, Any]] = []
    for name, raw in zip(names, raws, strict=True):
        if raw is None:
            continue
        try:
            records.append((name, json.loads(raw)))
        except ValueError:
            records.append((name, None))
    return records


async def _retire(spec: StoreSpec, txn: str, paths: Sequence[str]) -> None:
    """Record ``paths`` (versions no committed catalog names any more) for deletion."""
    if paths:
        doc = {"txn": txn, "retired": time.time(), "paths": list(paths)}
        await spec.put(f"{GARBAGE_DIR}/{txn}.json", json.dumps(doc).encode())


async def collect_garbage(spec: StoreSpec, older_than: float | None = None) -> list[str]:
    """Delete the partition versions retired more than ``older_than`` seconds ago.

    Each path is deleted under its partition's lock (a writer creating that
    partition again cannot be writing into it meanwhile) and only when the
    newest catalog does not name it; a record whose lock is busy is kept for a
    later collection. Nothing is deleted while the newest catalog version is
    damaged: readers then read the version below it, which may name the paths
    the damaged one retired (``repair()`` sets the damage aside first).

    Parameters
    ----------
    older_than : float, optional
        Retention in seconds; default :func:`retention`.

    Returns
    -------
    list of str
        The paths deleted.
    """
    # Old Icechunk snapshots keep superseded versions for their readers.
    keep = 0.0 if spec.transactional else retention() if older_than is None else older_than
    names = _records(await spec.list_dir(GARBAGE_DIR))
    if not names:
        return []
    now, due = time.time(), []
    for name, doc in await _json_records(spec, GARBAGE_DIR, names):
        try:
            retired, paths = float(doc["retired"]), [str(p) for p in doc["paths"]]
        except (KeyError, TypeError, ValueError):
            retired, paths = 0.0, []  # unreadable: nothing to delete, drop the record
        if now - retired >= keep:
            due.append((name, paths))
    if not due:
        return []
    owner = f"gc-{new_txn_id()}"
    # A lease, like a writer's: if this process dies holding locks, recovery frees them.
    every = sorted({p.split("@", 1)[0] for _, paths in due for p in paths})
    await write_lease(spec, owner, every, [])
    deleted: list[str] = []
    async with heartbeat(spec, owner, final=True):
        for name, paths in due:
            canonicals = sorted({p.split("@", 1)[0] for p in paths})
            try:
                # One lock after the other, in path order: two collectors of one record
                # never split its locks between them (and both give up).
                for canonical in canonicals:
                    await acquire_lock(spec, canonical, lock_token(owner))
                # Under the locks, no writer can publish these partitions: read the
                # record and the newest catalog now. Read before, both could be stale:
                # another collector may have deleted the record's paths meanwhile and a
                # writer re-created one of them at its canonical path and committed it.
                if not await spec.exists(f"{GARBAGE_DIR}/{name}"):
                    continue
                state = await CatalogLog(spec).state(by_paths(paths))
                if state.damaged:
                    # Readers fall back to the version below the damaged one, which
                    # may name what it retired; repair decides what it committed.
                    _log.warning(
                        "garbage of %s not collected: catalog version(s) %s are damaged "
                        "(run repair())",
                        spec.url,
                        [v for v, _ in state.damaged],
                    )
                    break
                named = _named(state.latest)
                doomed = [p for p in paths if p not in named]
                await _delete_prefixes(spec, doomed)
                await spec.delete(f"{GARBAGE_DIR}/{name}")
                deleted += doomed
            except ConflictError:
                continue  # a live writer holds one: a later collection deletes it
            finally:
                await _release_locks(spec, owner, canonicals)
        await spec.delete(lease_key(owner))
    return deleted


async def _delete_prefixes(spec: StoreSpec, prefixes: Sequence[str], attempts: int = 5) -> None:
    """Delete ``prefixes``, retrying those a concurrent deleter or writer raced.

    Removing a directory tree fails when another process deletes part of it at
    the same moment (``FileNotFoundError``) or writes into it (``ENOTEMPTY``):
    e.g. an abort and a task of the same insert cleaning up its own output.
    """
    pending = list(prefixes)
    for attempt in range(attempts):
        results = await asyncio.gather(
            *(spec.delete_prefix(p) for p in pending), return_exceptions=True
        )
        for r in results:
            if isinstance(r, BaseException) and not isinstance(r, OSError):
                raise r
        failed = [(p, r) for p, r in zip(pending, results, strict=True) if isinstance(r, OSError)]
        if not failed:
            return
        if attempt == attempts - 1:
            raise failed[0][1]
        pending = [p for p, _ in failed]
        await asyncio.sleep(0.01 * 2**attempt)


async def recover_transaction(
    spec: StoreSpec, txn: str, canonicals: Sequence[str] = (), *, force: bool = False
) -> bool:
    """Clean up after the dead writer ``txn``: what it wrote and no catalog names, its locks.

    Its abort marker goes first (put-if-absent: one per dead transaction, however
    many writers recover it), so a writer wrongly declared dead never publishes
    (see :meth:`Transaction.commit`). A writer that died after its commit had
    superseded versions: they are retired as usual. ``canonicals`` completes
    the lease's list (a lease may be missing or unreadable).

    The verdict is made again once the marker is there, and the newest catalog
    read after it: a writer that signed its lease between the first verdict and
    the marker is alive (it stops at the marker: nothing is deleted under it),
    and one that committed before the marker has its paths named. While the
    newest version is damaged, a writer that finished writing every partition
    may have committed it there: what it wrote is kept (``repair()`` adopts
    it), only its locks and lease go. One that a damaged version's readable
    header names did commit there: the versions its lease says it superseded
    are retired too (the garbage record its clean-up did not write).

    Returns
    -------
    bool
        Whether the transaction was cleaned up (``False``: alive after all).
    """
    await spec.put_if_absent(
        f"{LEASE_DIR}/{txn}.aborted", json.dumps({"aborted": time.time()}).encode()
    )
    state = await liveness(spec, txn)
    if not state.dead(force=force):
        return False
    lease = state.lease or {}
    named_ = lease.get("canonicals", [])
    every = sorted({*canonicals, *(c for c in named_ if isinstance(c, str))})
    # The segments of the partitions it may have written or superseded: all it checks.
    checked = [*every, *(p for p in lease.get("superseded", []) if isinstance(p, str))]
    log = CatalogLog(spec)
    found = await log.state(by_paths(checked))
    supersedes = [p for p in lease.get("superseded", []) if isinstance(p, str)]
    if found.damaged and txn in await log.damaged_txns(v for v, _ in found.damaged):
        # Its commit is a damaged version whose header still reads: it landed, and the
        # writer died before (or the version was damaged after) its clean-up. The lease's
        # list, written before the put, is what that commit retired: record it, as its
        # clean-up would have (repair() then keeps its drops); what it wrote stays.
        await _release_locks(spec, txn, every)
        await _retire(spec, txn, supersedes)
    elif found.damaged and await _wrote_all(spec, txn, every):
        # Its commit may be the damaged version, which cannot be read: what it wrote
        # stays for repair() to adopt from the tree (deleting it could lose a commit).
        await _release_locks(spec, txn, every)
    else:
        latest = found.latest
        await _remove_leftovers(spec, txn, every, latest)
        named = _named(latest)
        await _retire(spec, txn, [p for p in supersedes if p not in named])
    await spec.delete(lease_key(txn))
    await spec.delete(alive_key(txn))
    return True


async def _wrote_all(spec: StoreSpec, txn: str, canonicals: Sequence[str]) -> bool:
    """Whether ``txn`` finished writing every partition in ``canonicals`` (it may have committed).

    Each has a finished group stamped by ``txn`` (at its canonical path or
    beside it), and no task of ``txn`` still holds its lock as writing: a
    writer commits only then, so otherwise it certainly did not.
    """
    if not canonicals:
        return False
    paths = [p for c in canonicals for p in (c, f"{c}@{txn}")]
    raws = await asyncio.gather(*(spec.get(f"{p}/zarr.json") for p in paths))
    locks = await asyncio.gather(*(spec.get(lock_key(c)) for c in canonicals))
    stamped = set()
    for path, raw in zip(paths, raws, strict=True):
        try:
            attrs = json.loads(raw).get("attributes", {}) if raw is not None else {}
        except (ValueError, AttributeError):
            continue
        if isinstance(attrs, dict) and attrs.get(TXN_ATTR) == txn and not attrs.get(PENDING_ATTR):
            stamped.add(path.partition("@")[0])
    return all(
        c in stamped and lock != lock_token(txn) for c, lock in zip(canonicals, locks, strict=True)
    )


async def recover(
    spec: StoreSpec, *, force: bool = False, locks: bool = False, garbage: bool = True
) -> list[str]:
    """Clean up after writers that died: delete their unreferenced paths and leases.

    Parameters
    ----------
    force : bool
        Treat every writer as dead (only when no writer can be running).
    locks : bool
        Also sweep the partition locks (one listing of them): a lock whose
        holder is dead, or whose lease is missing or unreadable, is released.
    garbage : bool
        Then collect the retired versions past the retention.

    Returns
    -------
    list of str
        The transaction ids cleaned up.
    """
    listed = await spec.list_dir(LEASE_DIR)
    txns = {n.removesuffix(".json") for n in _records(listed)}
    if locks:
        held = [k for k in await spec.list_prefix(LOCK_DIR) if k.endswith(".lock")]
        tokens = await asyncio.gather(*(spec.get(k) for k in held))
        txns |= {lock_owner(t) for t in tokens if t is not None}
    states = await asyncio.gather(*(liveness(spec, t) for t in sorted(txns)))
    stale = [st for st in states if st.dead(force=force)]
    done: list[str] = []
    for st in stale:
        canonicals: list[str] = []
        if locks:
            canonicals = [
                k[len(LOCK_DIR) + 1 : -len(".lock")]
                for k, t in zip(held, tokens, strict=True)
                if t is not None and lock_owner(t) == st.txn
            ]
        if await recover_transaction(spec, st.txn, canonicals, force=force):
            done.append(st.txn)
    # Abort markers outlive their lease (tasks of the aborted insert still running
    # check them after each write): drop those of ended writers once they are old;
    # a heartbeat left by an ended writer goes with them.
    live = txns - set(done)
    leftovers = [
        n
        for n in listed
        if n.endswith((".aborted", ALIVE_SUFFIX)) and n.rpartition(".")[0] not in live
    ]
    await asyncio.gather(*(_drop_old_marker(spec, f"{LEASE_DIR}/{m}", force) for m in leftovers))
    if garbage:
        await collect_garbage(spec)
    return done


async def _drop_old_marker(spec: StoreSpec, key: str, force: bool) -> None:
    raw = await spec.get(key)
    if raw is None:
        return
    try:
        doc = json.loads(raw)
        aborted = float(doc["aborted"] if "aborted" in doc else doc["heartbeat"])
    except (ValueError, KeyError, TypeError):
        aborted = 0.0  # unreadable or from an older version: old
    ttl = ABORT_MARKER_TTL if key.endswith(".aborted") else lease_timeout()
    if force or time.time() - aborted > ttl:
        await spec.delete(key)
