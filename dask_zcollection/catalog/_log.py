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
Old versions are pruned with the segments only they named.

A damaged version (truncated, bad magic or checksum, a header naming another
version: a restore from a backup; a segment missing or damaged) never
blocks: readers take the newest intact one with a
:class:`~dask_zcollection.errors.ZCollectionWarning`, writers number their
commit past every version present, and ``repair()`` quarantines the damaged
objects.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import re
import time
import warnings
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
from ._catalog import Catalog
from ._segments import (
    SEGMENT_DIR,
    Root,
    chunks,
    concat_roots,
    decode_version,
    encode_root,
    encode_segments,
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

    async def damaged_segments(self, version: int) -> list[tuple[str, str]]:
        """The segments of ``version`` present but damaged, with the reason (repair's)."""
        try:
            root = await self.version_object(version)
        except (CorruptedDataError, FormatVersionError):
            return []  # the root itself: repair sets it aside
        if not isinstance(root, Root):
            return []
        results = await asyncio.gather(
            *(read_segments(self.spec, root, [i]) for i in range(len(root))),
            return_exceptions=True,
        )
        out = []
        for name, result in zip(root.names, results, strict=True):
            if isinstance(result, CorruptedDataError):
                out.append((segment_key(name), str(result)))
            elif isinstance(result, BaseException):
                raise result
        return out

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
        if root is None or not len(root):
            return await self._write(head, [new])
        chosen = list(base.chosen)
        where = root.locate(new.keys) if len(new) else numpy.empty(0, dtype="intp")
        runs: list[tuple[int, int]] = []
        for i in chosen:
            if runs and runs[-1][1] == i - 1:
                runs[-1] = (runs[-1][0], i)
            else:
                runs.append((i, i))
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
        # A number that prune freed (older than the KEEP_VERSIONS newest) must not be
        # taken again: the put would succeed below the newest version, where no reader
        # or writer looks, and the commit would be lost. A writer that planned from
        # version N and finds a newer one listed lost the race.
        versions = await self.versions()
        if versions and versions[-1] >= staged.version:
            won = False
        else:
            won = await self.spec.put_if_absent(_name(staged.version), encode_root(staged.root))
        if not won and not isinstance(catalog, Staged):
            await self.discard(staged)
        return won

    async def prune(self, latest: int, keep: int = KEEP_VERSIONS) -> None:
        """Delete catalog versions older than the ``keep`` newest, and the segments only they name.

        A segment named by a kept version stays; when a kept version cannot
        be read, no segment is deleted (repair sweeps what is left).
        """
        versions = await self.versions()
        old = [v for v in versions if v <= latest - keep]
        if not old:
            return
        kept = [v for v in versions if v > latest - keep]
        objects = await asyncio.gather(*(self._quiet(v) for v in old + kept))
        for v in old:
            await self.spec.delete(_name(v))
        if any(o is _UNREADABLE for o in objects[len(old) :]):
            return
        live = {n for o in objects[len(old) :] if isinstance(o, Root) for n in o.names}
        doomed = {n for o in objects[: len(old)] if isinstance(o, Root) for n in o.names} - live
        await asyncio.gather(*(self.spec.delete(segment_key(n)) for n in sorted(doomed)))

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
    )
