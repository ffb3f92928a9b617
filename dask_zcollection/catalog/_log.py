"""Catalog versions on a store: find the latest, commit the next one.

Layout under the collection root::

    _catalog/zarr.json            a Zarr group, so the tree stays valid Zarr
    _catalog/v000000000042.zcat   one immutable root per commit (format 2), or a
                                  whole catalog (format 1, written before segments)
    _catalog/seg/<id>.zseg        immutable segments: key-range slices of the catalog
    _catalog/state.json           (reference implementation: paths only; read, never written)

Committing version ``N + 1`` is ``put_if_absent`` of its root: atomic on
every backend (``link(2)`` locally, ``If-None-Match`` on object stores), so
of two writers racing from version ``N`` exactly one wins. The segments a
root names are written before it, under fresh names, and never changed; a
root reuses every segment its commit did not touch (see :mod:`._segments`).
Old versions are pruned with the segments only they named, once their
successor is older than :func:`prune_grace`: a number is never freed while a
writer's put of it may still land (:meth:`CatalogLog.commit`).

A damaged version (truncated, bad magic or checksum, a header naming another
version: a restore from a backup; a segment missing or damaged) never
blocks reads: readers take the newest intact one with a
:class:`~dask_zcollection.errors.ZCollectionWarning`. Writers refuse
(:meth:`CatalogLog.refuse_damaged`): a commit built on the version below
would silently drop what the damaged one committed, and name paths that it
retired. ``repair()`` adopts what the damaged version committed from the
tree and quarantines the damaged objects; then writers proceed.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import re
import struct
import time
import warnings
import zlib
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import numpy

from ..errors import (
    CorruptedDataError,
    FormatVersionError,
    InvalidInputError,
    StorageError,
    ZCollectionWarning,
)
from ..partitioning._base import decode_path
from ..store import StoreSpec
from ..store._base import group_json
from . import _segments
from ._catalog import _MAGIC, Catalog
from ._lease import lease_timeout
from ._segments import (
    SEGMENT_DIR,
    Root,
    check_segment,
    chunks,
    concat_roots,
    decode_version,
    encode_root,
    encode_segments,
    gather_bounded,
    join,
    make_root,
    new_segment_id,
    read_segments,
    segment_key,
)

__all__ = ["CATALOG_DIR", "CatalogLog", "CatalogState"]

CATALOG_DIR = "_catalog"
_VERSION_RE = re.compile(r"^v(\d{12})\.zcat$")
#: Number of past catalog versions kept after a commit (for readers in flight).
KEEP_VERSIONS = 4
#: Listings of the versions before giving up on versions vanishing under a reader.
_ATTEMPTS = 100


def put_window() -> float:
    """Seconds a writer may take from its listing of the versions to its put of the next.

    A writer that took longer does not put (it re-plans): see :func:`prune_grace`.
    """
    return lease_timeout() / 4


def prune_grace() -> float:
    """Seconds a superseded version outlives the commit of its successor (two lease timeouts).

    A writer lists the versions, finds ``v<N>`` the newest and puts ``v<N+1>``
    within :func:`put_window` of that listing. ``v<N+1>`` could only be free
    again at its put if another ``v<N+1>`` had been committed after the
    listing and pruned before the put; pruning it waits for its successor's
    commit (stamped after the listing) to be this old. So the number is still
    taken, and the put fails, as long as the put lands within
    ``prune_grace() - put_window()`` of being sent, less the clock skew
    between machines (assumed below half a lease timeout by the lease
    protocol): 75 s with the default 60 s lease timeout.
    """
    return 2 * lease_timeout()


def _name(version: int) -> str:
    return f"{CATALOG_DIR}/v{version:012d}.zcat"


def version_key(version: int) -> str:
    """Store key of catalog version ``version``."""
    return _name(version)


#: Chooses the segments of a root to read (``None``: every one).
Chooser = Callable[[Root], Sequence[int]] | None


@dataclasses.dataclass(frozen=True, slots=True)
class CatalogState:
    """The catalog versions of a collection as found.

    Attributes
    ----------
    latest : Catalog or None
        The newest intact version (``None``: none); only the partitions of the
        segments chosen when read with a chooser.
    damaged : tuple of (int, str)
        Versions newer than ``latest`` that cannot be read, with the reason.
    top : int
        The highest version number present (intact or not).
    root : Root or None
        The root of ``latest`` (``None``: a whole-catalog object, format 1).
    chosen : tuple of int
        The segments of ``root`` that ``latest`` holds.
    """

    latest: Catalog | None
    damaged: tuple[tuple[int, str], ...]
    top: int
    root: Root | None = None
    chosen: tuple[int, ...] = ()


@dataclasses.dataclass(frozen=True, slots=True, eq=False)
class Staged:
    """A root ready to publish, its new segments already written.

    Attributes
    ----------
    root : Root
        The new version's root.
    written : tuple of str
        Keys of the segments written for it (deleted if it is not published).
    """

    root: Root
    written: tuple[str, ...]

    @property
    def version(self) -> int:
        return self.root.version


def by_keys(keys: numpy.ndarray) -> Chooser:
    """Chooser of the segments the key rows ``keys`` fall in (a commit's)."""
    keys = numpy.asarray(keys, dtype="int64")

    def choose(root: Root) -> Sequence[int]:
        if not len(keys) or not len(root):
            return []
        return sorted(set(root.locate(keys.reshape(len(keys), -1)).tolist()))

    return choose


def compacting(choose: Chooser) -> Chooser:
    """``choose`` (a commit's) plus the small neighbours its commit merges.

    Segments shrink with drops and are never split below ``SEGMENT_TARGET``
    otherwise. Beside each run of consecutive chosen segments, the segment
    before and the one after it are read too when the run or that neighbour
    holds fewer than ``SEGMENT_MIN`` partitions and both fit in one segment
    (``SEGMENT_MAX``): the commit rewrites a run as one piece, so they merge.
    At most two more segments per run: the commit's cost stays O(change).
    """
    if choose is None:
        return None

    def pick(root: Root) -> Sequence[int]:
        idx = sorted(set(choose(root)))
        if not idx:
            return idx
        small, largest = _segments.SEGMENT_MIN, _segments.SEGMENT_MAX
        counts = root.counts.tolist()
        out = set(idx)
        for lo, hi in _runs(idx):
            total = sum(counts[lo : hi + 1])
            for nb in (lo - 1, hi + 1):
                if not 0 <= nb < len(counts) or nb in out:
                    continue
                if min(total, counts[nb]) < small and total + counts[nb] <= largest:
                    out.add(nb)
                    total += counts[nb]
        return sorted(out)

    return pick


def _runs(idx: Sequence[int]) -> list[tuple[int, int]]:
    """Runs ``(first, last)`` of consecutive integers in sorted ``idx``."""
    runs: list[tuple[int, int]] = []
    for i in idx:
        if runs and runs[-1][1] == i - 1:
            runs[-1] = (runs[-1][0], i)
        else:
            runs.append((i, i))
    return runs


def by_paths(paths: Iterable[str]) -> Chooser:
    """Chooser of the segments that hold the partitions at ``paths``, if committed.

    A path (``year=2024/month=03`` or ``…@<txn>``) goes to the segment of its
    key; one that is no partition path (``_immutable``) is never a catalog
    entry (the root's ``immutable`` names that group).
    """
    paths = list(paths)

    def choose(root: Root) -> Sequence[int]:
        names = root.head.key_names
        keys = []
        for path in paths:
            try:
                keys.append(decode_path(path.partition("@")[0], names))
            except InvalidInputError:
                continue
        chooser = by_keys(numpy.array(keys, dtype="int64").reshape(len(keys), len(names)))
        assert chooser is not None
        return chooser(root)

    return choose


def by_filter(predicate: Any, time_range: tuple[Any, Any] | None = None) -> Chooser:
    """Chooser of the segments that may hold partitions matching a compiled filter."""
    if predicate is None and time_range is None:
        return None
    return lambda root: root.select(predicate, time_range).tolist()


@dataclasses.dataclass(frozen=True, slots=True)
class Survey:
    """Every catalog version present (:meth:`CatalogLog.survey`).

    Attributes
    ----------
    intact : tuple of Catalog
        The intact versions, ascending: the newest whole, the others without
        their partitions (version, txn, immutable, ...).
    damaged : tuple of (int, str)
        The versions that cannot be read, with the reason.
    damaged_segments : tuple of (str, str)
        The segments present but damaged (key, reason).
    """

    intact: tuple[Catalog, ...]
    damaged: tuple[tuple[int, str], ...]
    damaged_segments: tuple[tuple[str, str], ...]


class _Missing(Exception):
    """A segment a root names is absent (its message: the segment's key)."""


def _checked(
    url: str,
    root: Root,
    i: int,
    raw: bytes | None,
    decoded: dict[str, Catalog],
    bad: dict[str, str],
) -> Catalog:
    """Segment ``i`` of ``root`` from ``raw``, checked against the root's record, decoded once."""
    name = root.names[i]
    key = segment_key(name)
    if raw is None:
        raise _Missing(key)
    if name in bad:
        raise CorruptedDataError(bad[name])
    segment = decoded.get(name)
    try:
        if segment is None or len(raw) != int(root.nbytes[i]) or len(segment) != root.counts[i]:
            segment = check_segment(root, i, raw, f"{url}/{key}")
        elif zlib.crc32(raw) != int(root.crc[i]):
            raise CorruptedDataError(
                f"{url}/{key} is damaged: its size or checksum differs from the one its "
                "root records"
            )
    except CorruptedDataError as err:
        bad[name] = str(err)
        raise
    decoded[name] = segment
    return segment


def _head_of(obj: Catalog | Root) -> Catalog:
    return _head(obj) if isinstance(obj, Catalog) else obj.head


class _Unread:
    """A version object not fetched yet (``None`` is one found absent)."""


_UNREAD = _Unread()


class _Vanished(Exception):
    """A version pruned while it was read."""


class CatalogLog:
    """Access to the catalog versions of one collection."""

    def __init__(self, spec: StoreSpec) -> None:
        self.spec = spec
        #: Highest version number seen by the last listing (damaged ones included).
        self.top = 0
        #: The version the next read expects newest: its root is fetched while listing.
        self.guess = 0
        #: Partitions of the whole version the last :meth:`state` found (its root's
        #: count: a read of some segments still knows the collection's size).
        self.partitions = 0

    async def prime(self) -> None:
        """List the versions now, to guess the newest one at the next read.

        A reader opening a collection lists them while it reads the
        descriptor; its first read then fetches the guessed root during its
        own listing (one round trip less when no commit landed in between).
        """
        try:
            names = await self.spec.list_dir(CATALOG_DIR)
        except Exception:  # any backend's error: the read lists again and reports it
            return
        self.guess = max((int(m.group(1)) for n in names if (m := _VERSION_RE.match(n))), default=0)

    async def versions(self) -> list[int]:
        """Committed catalog versions present, ascending (one listing)."""
        names = await self.spec.list_dir(CATALOG_DIR)
        versions = sorted(int(m.group(1)) for n in names if (m := _VERSION_RE.match(n)))
        self.top = max(self.top, versions[-1]) if versions else self.top
        return versions

    async def version_object(
        self, version: int, raw: bytes | _Unread | None = _UNREAD
    ) -> Catalog | Root | None:
        """The root (or whole catalog) of ``version`` (``None`` when it does not exist).

        Raises
        ------
        CorruptedDataError
            When the object is damaged or holds another version.
        """
        if isinstance(raw, _Unread):
            raw = await self.spec.get(_name(version))
        if raw is None:
            return None
        obj = decode_version(raw, f"{self.spec.url}/{_name(version)}")
        if obj.version != version:
            raise CorruptedDataError(
                f"{self.spec.url}/{_name(version)} holds version {obj.version} "
                "(a copy or a restore from a backup)"
            )
        return obj

    async def _load(
        self, version: int, choose: Chooser, raw: bytes | _Unread | None = _UNREAD
    ) -> tuple[Catalog, Root | None, tuple[int, ...]]:
        obj = await self.version_object(version, raw)
        if obj is None:
            raise _Vanished
        if isinstance(obj, Catalog):
            return obj, None, ()
        idx = tuple(range(len(obj))) if choose is None else tuple(choose(obj))
        segments = await read_segments(self.spec, obj, idx)
        if any(s is None for s in segments):
            if not await self.spec.exists(_name(version)):
                raise _Vanished  # pruned with its segments while read
            missing = segment_key(obj.names[idx[segments.index(None)]])
            raise CorruptedDataError(
                f"{self.spec.url}/{_name(version)} names the segment {missing}, which is missing"
            )
        return join(obj.head, [s for s in segments if s is not None]), obj, idx

    async def read(self, version: int) -> Catalog | None:
        """Read one version, whole (``None`` when it does not exist).

        Raises
        ------
        CorruptedDataError
            When the object or one of its segments is damaged, or it holds another version.
        """
        try:
            return (await self._load(version, None))[0]
        except _Vanished:
            return None

    async def survey(self) -> Survey:
        """Every version present, each segment fetched once (repair's).

        The roots are read at once, then every segment any of them names, at
        most ``READ_CONCURRENCY`` requests at a time: the versions share most
        segments, so this costs about one whole read, however many versions
        there are. Only the newest intact version is joined whole.

        Raises
        ------
        FormatVersionError
            When a version was written by a newer format.
        """
        versions = await self.versions()
        raws = await gather_bounded([self.spec.get(_name(v)) for v in versions])
        objects: dict[int, Catalog | Root] = {}
        damaged: dict[int, str] = {}
        for v, raw in zip(versions, raws, strict=True):
            try:
                obj = await self.version_object(v, raw)
            except CorruptedDataError as err:
                damaged[v] = str(err)
                continue
            if obj is not None:  # else pruned meanwhile
                objects[v] = obj
        names = sorted({n for o in objects.values() if isinstance(o, Root) for n in o.names})
        fetched = await gather_bounded([self.spec.get(segment_key(n)) for n in names])
        data = dict(zip(names, fetched, strict=True))
        decoded: dict[str, Catalog] = {}
        bad: dict[str, str] = {}
        intact: dict[int, list[Catalog]] = {}
        for v, obj in objects.items():
            if isinstance(obj, Catalog):
                intact[v] = [obj]
                continue
            # Every segment, not only up to the first damaged one: repair sets them all aside.
            segments: list[Catalog] = []
            failure: Exception | None = None
            for i, name in enumerate(obj.names):
                try:
                    segments.append(_checked(self.spec.url, obj, i, data[name], decoded, bad))
                except (_Missing, CorruptedDataError) as err:
                    failure = failure or err
            if failure is None:
                intact[v] = segments
            elif not isinstance(failure, _Missing):
                damaged[v] = str(failure)
            elif await self.spec.exists(_name(v)):  # else pruned meanwhile
                damaged[v] = (
                    f"{self.spec.url}/{_name(v)} names the segment {failure}, which is missing"
                )
        newest = max(intact, default=None)
        heads = {v: _head_of(objects[v]) for v in intact}
        if newest is not None:
            obj = objects[newest]
            heads[newest] = obj if isinstance(obj, Catalog) else join(obj.head, intact[newest])
        return Survey(
            intact=tuple(heads[v] for v in sorted(heads)),
            damaged=tuple(sorted(damaged.items())),
            damaged_segments=tuple((segment_key(n), why) for n, why in sorted(bad.items())),
        )

    async def state(self, choose: Chooser = None) -> CatalogState:
        """The newest intact version and the damaged ones above it (bounded work).

        ``choose`` picks the segments to read (default: all).
        """
        for _ in range(_ATTEMPTS):
            guess, self.guess = self.guess, 0
            fetched: bytes | _Unread | None = _UNREAD
            if guess:  # the root of the expected newest version, read while listing
                versions, fetched = await asyncio.gather(
                    self.versions(), self.spec.get(_name(guess))
                )
            else:
                versions = await self.versions()
            damaged: list[tuple[int, str]] = []
            vanished = False
            for version in reversed(versions):
                raw = fetched if version == guess else _UNREAD
                try:
                    catalog, root, idx = await self._load(version, choose, raw)
                except CorruptedDataError as err:
                    damaged.append((version, str(err)))
                    continue
                except _Vanished:  # pruned under us: list again
                    vanished = True
                    break
                self.guess = versions[-1]  # the next read expects no new commit
                self.partitions = len(catalog) if root is None else root.partitions
                return CatalogState(catalog, tuple(damaged), versions[-1], root, idx)
            if not vanished:
                return CatalogState(None, tuple(damaged), versions[-1] if versions else 0)
        raise StorageError(f"the catalog versions of {self.spec.url} keep vanishing while read")

    def warn(self, state: CatalogState) -> None:
        """Warn about the damaged versions ``state`` skipped."""
        if state.damaged:
            versions = [v for v, _ in state.damaged]
            fallback = "none" if state.latest is None else f"version {state.latest.version}"
            warnings.warn(
                f"catalog version(s) {versions} of {self.spec.url} are damaged "
                f"({state.damaged[0][1]}); reading {fallback}; run repair() to quarantine them",
                ZCollectionWarning,
                stacklevel=3,
            )

    def refuse_damaged(self, damaged: Sequence[tuple[int, str]]) -> None:
        """Refuse to write while a version above the newest intact one is damaged.

        A commit built on the version below would silently drop what the
        damaged one committed (it cannot be read), and could name partition
        paths that it retired (garbage collection may have deleted them).
        Neither a garbage ``v<N>`` nor a restored copy is told apart from a lost
        commit: every damaged version refuses until ``repair()`` sets it aside.

        Parameters
        ----------
        damaged : sequence of (int, str)
            The damaged versions found (:attr:`CatalogState.damaged`).

        Raises
        ------
        CorruptedDataError
            When ``damaged`` is not empty; nothing was published.
        """
        if not damaged:
            return
        versions = sorted(v for v, _ in damaged)
        more = f" (and {len(versions) - 1} more damaged version(s))" if len(versions) > 1 else ""
        raise CorruptedDataError(
            f"cannot write to {self.spec.url}: {dict(damaged)[versions[-1]]}{more}. A commit "
            "built on the newest intact version below would lose what the damaged one "
            "committed; nothing was written. Run repair(): it adopts what that version "
            "committed from the tree and sets the damaged object aside; then write again"
        )

    async def writable(self, choose: Chooser = None) -> Catalog | None:
        """:meth:`latest` for a writer: refused while a newer version is damaged.

        Raises
        ------
        CorruptedDataError
            See :meth:`refuse_damaged`.
        """
        state = await self.state(choose)
        self.refuse_damaged(state.damaged)
        return state.latest

    async def latest(self, choose: Chooser = None) -> Catalog | None:
        """The newest intact committed catalog, or ``None`` when none was ever written.

        One listing plus one read of the root and of its segments (those
        ``choose`` picks: the catalog returned then holds only their
        partitions). A version committed after the listing is not seen: the
        snapshot returned is still a committed one, and writers detect the
        race when they commit. Damaged newer versions are skipped with a
        :class:`~dask_zcollection.errors.ZCollectionWarning`.
        """
        state = await self.state(choose)
        self.warn(state)
        return state.latest

    def numbered(self, catalog: Catalog) -> Catalog:
        """``catalog`` numbered past every version present (damaged ones included)."""
        if catalog.version > self.top:
            return catalog
        return dataclasses.replace(catalog, version=self.top + 1)

    async def legacy_paths(self) -> list[str] | None:
        """Partition paths of a reference-implementation ``state.json``, if any."""
        raw = await self.spec.get(f"{CATALOG_DIR}/state.json")
        if raw is None:
            return None
        try:
            return list(json.loads(raw)["paths"])
        except (ValueError, KeyError) as err:
            raise StorageError(f"malformed {CATALOG_DIR}/state.json in {self.spec.url}") from err

    async def initialise(self) -> None:
        """Write the ``_catalog`` group marker."""
        doc = group_json({"zcollection_catalog": {"format": 1}})
        await self.spec.put(f"{CATALOG_DIR}/zarr.json", doc)

    async def stage(self, base: CatalogState, new: Catalog) -> Staged:
        """Write the segments of ``new`` (``base`` changed) and build its root.

        ``new`` holds the partitions of the segments ``base.chosen`` of
        ``base.root`` after the change; every other segment is reused. From a
        whole-catalog version (format 1) every segment is new: the upgrade.
        """
        head = _head(new)
        root = base.root
        if root is None or not len(root) or base.damaged:
            # A base below damaged versions: no segment of it is reused (see prune).
            if base.root is not None and len(base.chosen) != len(base.root):
                raise AssertionError("a version below damaged ones must be read whole")
            return await self._write(head, [new])
        where = root.locate(new.keys) if len(new) else numpy.empty(0, dtype="intp")
        runs = _runs(sorted(base.chosen))
        parts: list[dict[str, Any]] = []
        pieces: list[Catalog] = []
        slots: list[int] = []  # position in parts of each run's new segments
        assigned = 0
        prev = 0
        for lo, hi in runs:
            parts.append(root.take(range(prev, lo)))
            mask = (where >= lo) & (where <= hi)
            assigned += int(mask.sum())
            pieces.append(new.take(mask))
            slots.append(len(parts))
            parts.append({})
            prev = hi + 1
        parts.append(root.take(range(prev, len(root))))
        if assigned != len(new):
            raise AssertionError("a changed partition falls outside the segments read")
        staged = await self._write(head, pieces, separate=True)
        for slot, part in zip(slots, staged.root_parts, strict=True):
            parts[slot] = part
        return Staged(concat_roots(head, [p for p in parts if p]), staged.written)

    async def _write(
        self, head: Catalog, catalogs: Sequence[Catalog], *, separate: bool = False
    ) -> Any:
        """Write the segments of each catalog; their root (or root parts when ``separate``)."""
        names: list[list[str]] = []
        data: list[bytes] = []
        rows: list[list[dict[str, Any]]] = []
        for catalog in catalogs:
            ids = [new_segment_id() for _ in chunks(len(catalog))]
            raws, described = encode_segments(catalog, ids)
            names.append(ids)
            data += raws
            rows.append(described)
        keys = [segment_key(n) for ids in names for n in ids]
        await asyncio.gather(*(self.spec.put(k, d) for k, d in zip(keys, data, strict=True)))
        if not separate:
            return Staged(make_root(head, names[0], rows[0]), tuple(keys))
        parts = [
            make_root(head, n, r).take(range(len(n))) for n, r in zip(names, rows, strict=True)
        ]
        return _Parts(parts, tuple(keys))

    async def discard(self, staged: Staged) -> None:
        """Delete the segments written for a root that was not published."""
        await asyncio.gather(*(self.spec.delete(k) for k in staged.written))

    async def commit(self, catalog: Catalog | Staged) -> bool:
        """Publish a version; ``False`` when that version exists already.

        ``catalog`` is a :class:`Staged` root, or a whole catalog whose
        segments are written first.
        """
        staged = (
            catalog if isinstance(catalog, Staged) else await self._write(_head(catalog), [catalog])
        )
        # A number that prune freed must not be taken again: the put would succeed
        # below the newest version, where no reader or writer looks, and the commit
        # would be lost. A writer that planned from version N and finds a newer one
        # listed lost the race; prune spares a superseded version for
        # prune_grace() after its successor's commit, and the put is sent within
        # put_window() of this listing, so the number is still taken when it lands.
        data = encode_root(staged.root)
        start = time.monotonic()
        versions = await self.versions()
        if versions and versions[-1] >= staged.version:
            won = False
        elif not self.spec.transactional and time.monotonic() - start > put_window():
            won = False  # too slow to rely on prune's grace: plan again
        else:
            won = await self.spec.put_if_absent(_name(staged.version), data)
        if not won and not isinstance(catalog, Staged):
            await self.discard(staged)
        return won

    async def prune(self, latest: int, keep: int = KEEP_VERSIONS) -> list[int]:
        """Delete old catalog versions, and the segments only they name; the versions deleted.

        A version goes when it is older than the ``keep`` newest and its
        successor was committed more than :func:`prune_grace` ago (the
        timestamp in its header): a writer that listed the versions before
        that commit and stalled can then never take the number again (see
        :meth:`commit`; no grace on a transactional store, whose commit fails
        when another one landed since its session began). Versions go in
        ascending order.

        The segments deleted are those the deleted versions name and the first
        version kept does not: a version names only its base's segments and
        fresh ones, and its base is the version before it (a writer that skips
        damaged versions writes every segment afresh: :meth:`stage`). When
        that version cannot be read, no segment is deleted (repair sweeps what
        is left).
        """
        versions = await self.versions()
        old = [v for v in versions if v <= latest - keep]
        if not old:
            return []
        raws: dict[int, bytes | None] = {}

        async def raw(version: int) -> bytes | None:
            if version not in raws:
                raws[version] = await self.spec.get(_name(version))
            return raws[version]

        async def load(version: int) -> Any:
            try:
                return await self.version_object(version, await raw(version))
            except (CorruptedDataError, FormatVersionError):
                return _UNREADABLE

        # A transactional store (Icechunk) publishes nothing a concurrent commit
        # preceded: no put lands late there, no grace is needed.
        cutoff = time.time() - (0.0 if self.spec.transactional else prune_grace())
        doomed: list[int] = []
        for v in old:
            # The successor's commit time (its header only): the first readable
            # version above (a later one was stamped later: never deletes sooner).
            stamp = None
            for later in versions[versions.index(v) + 1 :]:
                stamp = header_stamp(await raw(later), later)
                if stamp is not None:
                    break
            if stamp is None or stamp > cutoff:
                break  # the next ones were committed later still
            doomed.append(v)
        if not doomed:
            return []
        first_kept = versions[versions.index(doomed[-1]) + 1]
        roots = await asyncio.gather(*(load(v) for v in [*doomed, first_kept]))
        for v in doomed:
            await self.spec.delete(_name(v))
        kept = roots[-1]
        if kept is _UNREADABLE or kept is None:
            return doomed
        live = set(kept.names) if isinstance(kept, Root) else set()
        gone = {n for o in roots[:-1] if isinstance(o, Root) for n in o.names} - live
        await asyncio.gather(*(self.spec.delete(segment_key(n)) for n in sorted(gone)))
        return doomed

    async def sweep_segments(self, min_age: float) -> list[str]:
        """Delete the segments no version names, older than ``min_age`` seconds (repair's).

        Those are left by a writer killed before its root was published (or
        by a prune that died half-way). A writer publishes its root within a
        lease timeout of writing its segments: ``min_age`` well above that
        never takes one about to be named. Nothing is deleted while a
        version cannot be read (it may name them).
        """
        keys = [k for k in await self.spec.list_prefix(SEGMENT_DIR) if k.endswith(".zseg")]
        if not keys:
            return []
        objects = await asyncio.gather(*(self._quiet(v) for v in await self.versions()))
        if any(o is _UNREADABLE for o in objects):
            return []
        named = {n for o in objects if isinstance(o, Root) for n in o.names}
        now_ms = time.time() * 1000
        doomed = []
        for key in keys:
            name = key.rpartition("/")[2].removesuffix(".zseg")
            try:
                born = int(name[:11], 16)
            except ValueError:
                continue  # not one of ours
            if name not in named and now_ms - born > min_age * 1000:
                doomed.append(key)
        await asyncio.gather(*(self.spec.delete(k) for k in doomed))
        return doomed

    async def damaged_txns(self, versions: Iterable[int]) -> set[str]:
        """The transactions that committed the (damaged) ``versions``, where their header reads.

        A version whose body is damaged (a flipped bit, a missing segment)
        still proves its transaction's commit landed; one damaged in its header
        names none.
        """
        versions = list(versions)
        raws = await asyncio.gather(*(self.spec.get(_name(v)) for v in versions))
        txns = (header_txn(raw, v) for v, raw in zip(versions, raws, strict=True))
        return {t for t in txns if t is not None}

    async def _quiet(self, version: int) -> Any:
        try:
            return await self.version_object(version)
        except (CorruptedDataError, FormatVersionError):
            return _UNREADABLE


_UNREADABLE = object()


@dataclasses.dataclass(frozen=True, slots=True)
class _Parts:
    root_parts: list[dict[str, Any]]
    written: tuple[str, ...]


def _header(raw: bytes | None, version: int) -> dict[str, Any] | None:
    """The header of version object ``raw`` when it reads and names ``version`` (else ``None``).

    The body is not checked: a version damaged past its header still says
    when, and by which transaction, it was committed.
    """
    if raw is None or not raw.startswith(_MAGIC):
        return None
    try:
        (hlen,) = struct.unpack_from("<I", raw, len(_MAGIC))
        start = len(_MAGIC) + 4
        header = json.loads(raw[start : start + hlen])
        if not isinstance(header, dict) or int(header["version"]) != version:
            return None
        return header
    except Exception:  # a damaged header: the caller looks further
        return None


def header_stamp(raw: bytes | None, version: int) -> float | None:
    """The commit time in the header of version object ``raw`` (``None``: absent or unreadable)."""
    header = _header(raw, version)
    try:
        return None if header is None else float(header["timestamp"])
    except (KeyError, TypeError, ValueError):
        return None


def header_txn(raw: bytes | None, version: int) -> str | None:
    """The transaction in the header of version object ``raw`` (``None``: absent or unreadable)."""
    header = _header(raw, version)
    txn = None if header is None else header.get("txn")
    return txn if isinstance(txn, str) else None


def _head(catalog: Catalog) -> Catalog:
    """The metadata of ``catalog`` without its partitions (a root's header)."""
    empty = Catalog.empty(catalog.key_names, catalog.axis_min.dtype)
    return dataclasses.replace(
        catalog,
        keys=empty.keys,
        paths=(),
        rows=empty.rows,
        axis_min=empty.axis_min,
        axis_max=empty.axis_max,
        txns=None,
    )
