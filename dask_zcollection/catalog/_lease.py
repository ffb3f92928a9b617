"""Who is alive: writers' leases, their heartbeats, and the verdict on a dead one.

A writer records a lease ``_transactions/<txn>.json`` (owner host and pid,
the partitions it may lock) before it takes any lock, and keeps it alive:
``_transactions/<txn>.alive`` holds a heartbeat rewritten every quarter of
:func:`lease_timeout` by the process running the writer (the client of an
eager write, every process running one of its tasks for a lazy one).

A writer is dead when every process named by its lease and heartbeat is
gone from this host, or when its newest heartbeat is older than
:func:`lease_timeout` (``dask.config`` ``zcollection.lease-timeout``, default
60 s): that bound holds across machines. A lock whose lease is missing or
unreadable is dead once its transaction (time-ordered id) is that old.

A live writer never publishes more than half a timeout after its last
heartbeat (see ``Transaction.commit``), and a recoverer puts the dead
transaction's abort marker before deleting anything: a writer wrongly
declared dead sees the marker and aborts instead of publishing what is
being deleted.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import socket
import time
from collections.abc import AsyncIterator, Sequence
from typing import Any

from ..store import StoreSpec

__all__ = [
    "ALIVE_SUFFIX",
    "LEASE_DIR",
    "DEFAULT_LEASE_TIMEOUT",
    "Liveness",
    "heartbeat",
    "lease_timeout",
    "liveness",
    "txn_started",
    "write_lease",
]

LEASE_DIR = "_transactions"
ALIVE_SUFFIX = ".alive"
#: Default seconds without a heartbeat after which a writer is dead.
DEFAULT_LEASE_TIMEOUT = 60.0
_HOST = socket.gethostname()


def _node() -> str | None:
    """This machine's boot and pid namespace: a pid means this process only there.

    Two containers (or machines) may share a host name; they never share both
    a boot id and a pid namespace (``None`` where ``/proc`` does not tell).
    """
    try:
        with open("/proc/sys/kernel/random/boot_id") as f:
            boot = f.read().strip()
        return f"{boot}:{os.stat('/proc/self/ns/pid').st_ino}"
    except OSError:
        return None


_NODE = _node()
#: A writer whose process still runs on this host is dead only after this many timeouts.
_SAME_HOST_CAP = 60


def lease_timeout() -> float:
    """Seconds without a heartbeat after which a writer is dead (``zcollection.lease-timeout``)."""
    import dask.config

    value = dask.config.get("zcollection.lease-timeout", None)
    return DEFAULT_LEASE_TIMEOUT if value is None else float(value)


def lease_key(txn: str) -> str:
    """Key of the lease of ``txn``."""
    return f"{LEASE_DIR}/{txn}.json"


def alive_key(txn: str) -> str:
    """Key of the heartbeat of ``txn``."""
    return f"{LEASE_DIR}/{txn}{ALIVE_SUFFIX}"


def txn_started(txn: str) -> float | None:
    """Start time (epoch seconds) encoded in a transaction id, or ``None`` if it has none.

    Ids are ``<ms since epoch, 11 hex digits><random>``, optionally prefixed
    (``gc-`` for a garbage collector).
    """
    stamp = txn.rpartition("-")[2][:11]
    try:
        return int(stamp, 16) / 1000.0 if len(stamp) == 11 else None
    except ValueError:
        return None


def _owner() -> dict[str, Any]:
    return {"host": _HOST, "node": _NODE, "pid": os.getpid()}


#: Transactions of this process that are over (aborted): they never publish. Their
#: writer's process still runs, so another writer of this process would otherwise wait
#: for them as for a lazy write's client (an hour) when their abort could not finish,
#: e.g. the store was unreachable: locks left by an outage blocked the next insert.
_ENDED: set[str] = set()


def end(txn: str) -> None:
    """Record that ``txn`` is over in this process (it never publishes from now on)."""
    _ENDED.add(txn)


def _here(doc: dict[str, Any]) -> bool:
    """Whether the process a record names would be a process of this machine and namespace."""
    if doc.get("host") != _HOST:
        return False
    node = doc.get("node")
    return node is None or _NODE is None or node == _NODE


async def write_lease(
    spec: StoreSpec, txn: str, canonicals: Sequence[str], superseded: Sequence[str]
) -> float:
    """Record who holds (or may take) the locks of ``canonicals``; returns its heartbeat time."""
    now = time.time()
    doc = {
        "txn": txn,
        **_owner(),
        "started": now,
        "heartbeat": now,
        "canonicals": list(canonicals),
        "superseded": list(superseded),
    }
    await spec.put(lease_key(txn), json.dumps(doc).encode())
    return now


async def beat(spec: StoreSpec, txn: str) -> float:
    """Write one heartbeat of ``txn`` now; returns its time."""
    now = time.time()
    await spec.put(alive_key(txn), json.dumps({**_owner(), "heartbeat": now}).encode())
    return now


def _pid_gone(doc: dict[str, Any]) -> bool:
    """Whether the process a record names is provably gone (here, no such pid)."""
    if not _here(doc):
        return False
    try:
        os.kill(int(doc["pid"]), 0)
    except ProcessLookupError:
        return True
    except (PermissionError, KeyError, ValueError, TypeError, OverflowError):
        return False
    return False


async def _read_json(spec: StoreSpec, key: str) -> tuple[bool, Any]:
    """``(present, document)``; an unreadable document is ``(True, None)``."""
    raw = await spec.get(key)
    if raw is None:
        return False, None
    try:
        doc = json.loads(raw)
    except ValueError:
        return True, None
    return True, doc if isinstance(doc, dict) else None


class Liveness:
    """What is known of a transaction's writer, and the verdict on it."""

    __slots__ = ("alive_doc", "lease", "lease_present", "txn")

    def __init__(
        self, txn: str, lease_present: bool, lease: dict[str, Any] | None, alive_doc: Any
    ) -> None:
        self.txn = txn
        self.lease_present = lease_present
        self.lease = lease
        self.alive_doc = alive_doc if isinstance(alive_doc, dict) else None

    @property
    def last_sign(self) -> float | None:
        """Newest heartbeat (or start) recorded, epoch seconds."""
        signs: list[float] = []
        for doc in (self.lease, self.alive_doc):
            for field in ("heartbeat", "started"):
                with contextlib.suppress(KeyError, TypeError, ValueError):
                    signs.append(float(doc[field]))  # type: ignore[index]
        return max(signs) if signs else txn_started(self.txn)

    def dead(self, *, force: bool = False, timeout: float | None = None) -> bool:
        """Whether the writer is dead (``force``: whatever it says)."""
        if force or self.txn in _ENDED:
            return True
        timeout = lease_timeout() if timeout is None else timeout
        last = self.last_sign
        age = float("inf") if last is None else time.time() - last
        owners = [d for d in (self.lease, self.alive_doc) if d is not None]
        if any(_here(d) and not _pid_gone(d) for d in owners):
            # A process of this host that signed it still runs (a lazy write waiting
            # for its tasks to be scheduled beats only while they run); a reused
            # pid is not trusted forever.
            return age > _SAME_HOST_CAP * timeout
        if age > timeout:
            return True
        # Every process that signed the lease or the heartbeat is gone from this host.
        return bool(owners) and all(_pid_gone(d) for d in owners)


async def liveness(spec: StoreSpec, txn: str) -> Liveness:
    """Read the lease and heartbeat of ``txn``."""
    (present, lease), (_, alive) = await asyncio.gather(
        _read_json(spec, lease_key(txn)), _read_json(spec, alive_key(txn))
    )
    return Liveness(txn, present, lease, alive)


# -- heartbeats ---------------------------------------------------------------------------------
#: Heartbeat loops running in this process: (loop, store token, txn) -> [users, task].
_BEATING: dict[tuple[int, Any, str], list[Any]] = {}


@contextlib.asynccontextmanager
async def heartbeat(spec: StoreSpec, txn: str, *, final: bool = False) -> AsyncIterator[None]:
    """Keep ``txn`` alive while the block runs (one loop per process and transaction).

    ``final=True`` deletes the heartbeat object when the last user of the loop
    leaves (the writer is over: committed or aborted).
    """
    if spec.transactional:
        yield
        return
    key = (id(asyncio.get_running_loop()), spec.__dask_tokenize__(), txn)
    entry = _BEATING.get(key)
    if entry is None:
        interval = lease_timeout() / 4

        async def loop() -> None:
            while True:
                await asyncio.sleep(interval)
                with contextlib.suppress(OSError):
                    await beat(spec, txn)

        entry = _BEATING[key] = [0, asyncio.ensure_future(loop())]
    entry[0] += 1
    try:
        yield
    finally:
        entry[0] -= 1
        if entry[0] == 0:
            _BEATING.pop(key, None)
            entry[1].cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await entry[1]
            if final:
                await spec.delete(alive_key(txn))
