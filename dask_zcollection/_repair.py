"""``repair()``: a commit like any other, that never drops or relabels data it can read.

Repair compares the newest intact catalog with a walk of the tree and, for
each partition that disagrees, takes the partition's lock (as a writer
does), checks again against the newest catalog, then acts:

* **rebuilt**: a committed partition whose group or array ``zarr.json`` is
  missing gets it back from the schema (its data is intact);
* **adopted**: a partition group found in the tree that no intact catalog
  names, written after the newest intact catalog (a lost or damaged version)
  or by the reference implementation, is published with stats read from it;
* **quarantined**: what disagrees (a group whose partition-key attribute or
  rows say another partition than its path: a copy or a rename; an unnamed
  version older than the catalog; a damaged catalog object) is copied under
  ``_quarantine/<repair txn>/`` (never deleted by ``vacuum``) and the original
  retired;
* **dropped**: a committed partition with nothing left at its path, or one a
  commit of a damaged version dropped (its garbage record retires the path);
* **skipped**: a partition a live writer holds (repair never waits on it).

The catalog change is committed through :class:`Transaction.commit`: it
conflicts with a concurrent commit touching the same partitions and is
rebased on every other one, so a partition committed after repair listed the
tree is never dropped. A configuration that cannot name the committed
partitions (``_zcollection.json`` edited) is refused before anything changes.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import re
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, ClassVar

import numpy

from .catalog import Catalog, CatalogLog
from .catalog._catalog import NO_TXN
from .catalog._discovery import FoundGroup, walk
from .catalog._lease import lease_key, lease_timeout
from .catalog._log import version_key
from .catalog._transaction import (
    GARBAGE_DIR,
    TXN_ATTR,
    DropPartitions,
    Transaction,
    _json_records,
    _records,
    _retire,
    acquire_lock,
    lock_token,
    new_txn_id,
    recover,
    retention,
    retry_on_conflict,
)
from .errors import ConflictError, CorruptedDataError
from .io._partition import PARTITION_KEY_ATTR as _KEY_ATTR
from .io._partition import group_json, partition_attrs
from .store import StoreSpec

if TYPE_CHECKING:
    from ._engine import AsyncCollection

__all__ = ["QUARANTINE_DIR", "RepairAction", "RepairReport", "repair", "set_aside_damaged"]

#: Where repair puts what disagrees (never deleted by ``vacuum``).
QUARANTINE_DIR = "_quarantine"
#: Times repair re-plans after a concurrent commit touched its partitions.
_RETRIES = 5
#: Objects copied concurrently into the quarantine.
_COPY_CONCURRENCY = 16
_VERSION_KEY = re.compile(r"_catalog/v(\d{12})\.zcat")


@dataclasses.dataclass(frozen=True, slots=True)
class RepairAction:
    """One thing repair did (or would do, in a dry run).

    Attributes
    ----------
    path : str
        The partition group or object, relative to the collection root.
    reason : str
        Why.
    """

    path: str
    reason: str


@dataclasses.dataclass(frozen=True, slots=True)
class RepairReport:
    """What :meth:`Collection.repair` did.

    Attributes
    ----------
    rebuilt : tuple of RepairAction
        Committed partitions whose missing metadata was written again.
    adopted : tuple of RepairAction
        Partition groups found in the tree and published.
    quarantined : tuple of RepairAction
        Objects copied under ``_quarantine/`` and retired, with the reason.
    dropped : tuple of RepairAction
        Committed partitions with no data left, removed from the catalog.
    skipped : tuple of RepairAction
        Partitions a live writer holds: left to the next repair.
    recovered : tuple of str
        Transactions of dead writers cleaned up.
    catalog : Catalog or None
        The newest catalog after the repair (``None`` in a dry run).
    dry_run : bool
        Nothing was changed.
    """

    rebuilt: tuple[RepairAction, ...] = ()
    adopted: tuple[RepairAction, ...] = ()
    quarantined: tuple[RepairAction, ...] = ()
    dropped: tuple[RepairAction, ...] = ()
    skipped: tuple[RepairAction, ...] = ()
    recovered: tuple[str, ...] = ()
    catalog: Catalog | None = None
    dry_run: bool = False

    _KINDS: ClassVar[tuple[str, ...]] = ("rebuilt", "adopted", "quarantined", "dropped", "skipped")

    @property
    def changed(self) -> bool:
        """Whether anything was (or, in a dry run, would be) changed."""
        return any(getattr(self, k) for k in self._KINDS[:-1]) or bool(self.recovered)

    def __repr__(self) -> str:
        counts = ", ".join(f"{len(getattr(self, k))} {k}" for k in self._KINDS)
        where = (
            "dry run"
            if self.dry_run
            else (
                f"catalog version {self.catalog.version}"
                if self.catalog is not None
                else "no catalog"
            )
        )
        lines = [f"<RepairReport: {counts}; {len(self.recovered)} dead writer(s); {where}>"]
        for kind in self._KINDS:
            lines += [f"  {kind:<12}{a.path}: {a.reason}" for a in getattr(self, kind)]
        return "\n".join(lines)


@dataclasses.dataclass(frozen=True, eq=False)
class _Plan:
    rebuild: list[tuple[int, RepairAction]]  # catalog position
    adopt: list[tuple[FoundGroup, tuple[int, ...], RepairAction]]
    quarantine_named: list[tuple[int, RepairAction]]
    quarantine_orphan: list[tuple[FoundGroup, RepairAction]]
    drop: list[tuple[int, RepairAction]]

    def canonicals(self, base: Catalog, encode: Any) -> list[str]:
        paths = {encode(base.key_tuple(i)) for i, _ in self.rebuild + self.drop}
        paths |= {encode(base.key_tuple(i)) for i, _ in self.quarantine_named}
        paths |= {f.canonical for f, _, _ in self.adopt}
        paths |= {f.canonical for f, _ in self.quarantine_orphan}
        return sorted(paths)


@dataclasses.dataclass(frozen=True, eq=False)
class _RepairChange:
    """Publish adopted partitions and remove dropped ones (rebased like any change)."""

    verb: ClassVar[str] = "repair"
    put: Catalog
    drop: numpy.ndarray

    @property
    def keys(self) -> numpy.ndarray:
        return numpy.concatenate([self.put.keys, self.drop]) if len(self.drop) else self.put.keys

    def __call__(self, catalog: Catalog) -> Catalog:
        out = catalog.without(self.drop) if len(self.drop) else catalog
        if len(self.put):
            p = self.put
            out = out.with_partitions(p.keys, p.paths, p.rows, p.axis_min, p.axis_max, p.identities)
        return out


@dataclasses.dataclass(frozen=True, slots=True)
class _Retired:
    """What the garbage records (``_garbage/``) say.

    A record is written by a transaction's clean-up after its catalog put
    landed (or by the recovery of a dead writer, for paths the newest readable
    catalog no longer names, or for all its lease lists when a damaged
    version's readable header names it): it is evidence of a commit, kept
    while the newest version is damaged (garbage collection is halted then).
    """

    #: Every path a record names.
    paths: set[str]
    #: Path -> the transactions whose record retires it.
    by: dict[str, list[str]]
    #: Transactions that wrote a record: they committed.
    committed: set[str]


async def _retired(spec: StoreSpec) -> _Retired:
    """Read the garbage records (retired paths, deleted by the collector)."""
    names = _records(await spec.list_dir(GARBAGE_DIR))
    out = _Retired(set(), {}, set())
    for name, doc in await _json_records(spec, GARBAGE_DIR, names):
        if not isinstance(doc, dict):
            continue
        paths = [str(p) for p in doc.get("paths", []) if isinstance(p, str)]
        out.paths.update(paths)
        txn = doc.get("txn", name.removesuffix(".json"))
        # Repair's own record of the orphans it sets aside is written before its
        # commit and names no committed path: no evidence of a commit.
        if not isinstance(txn, str) or txn.endswith("-quarantine"):
            continue
        out.committed.add(txn)
        for path in paths:
            out.by.setdefault(path, []).append(txn)
    return out


def _dropped_by(retired: _Retired, path: str, found: FoundGroup) -> str | None:
    """The committed transaction that retired the version at ``path`` (or ``None``).

    Only a record of a transaction later than the group's own counts: a path
    written again after an older record (a canonical path reused once its
    retired version was collected) is not what that record retired.
    """
    later = [t for t in retired.by.get(path, ()) if t > found.txn]
    return max(later) if later else None


def _key_attr(found: FoundGroup, names: Sequence[str]) -> tuple[int, ...] | None:
    raw = (found.attrs or {}).get(_KEY_ATTR)
    if raw is None:
        return None
    try:
        pairs = {str(n): int(v) for n, v in raw}
        return tuple(pairs[n] for n in names)
    except (KeyError, TypeError, ValueError):
        return ()  # present but unreadable: disagrees with any key


async def _rows_disagree(col: AsyncCollection, path: str, key: tuple[int, ...]) -> str | None:
    """Why the rows of the group at ``path`` do not belong to partition ``key`` (or ``None``)."""
    variables = list(col.partitioning.variables)
    try:
        data = await col.io.read(path, variables)
    except Exception as err:  # unreadable: it cannot be published as this partition
        return f"unreadable ({type(err).__name__}: {err})"
    if not len(next(iter(data.values()))):
        return None
    attrs = {v: col.schema[v].attrs for v in variables}
    keys, _ = col.partitioning.split(data, attrs)
    if keys.shape[0] != 1 or tuple(int(x) for x in keys[0]) != key:
        got = col.partitioning.encode(tuple(int(x) for x in keys[0]))
        return f"its rows belong to {got}" + (f" and {len(keys) - 1} more" if len(keys) > 1 else "")
    return None


async def _plan(
    col: AsyncCollection,
    base: Catalog | None,
    found: list[FoundGroup],
    retired: _Retired,
    floor: str | None,
) -> _Plan:
    """Classify each disagreement between the catalog and the tree (reads only).

    A group no intact catalog names is adopted when there is no intact catalog,
    or when it was written after ``floor`` (the transaction of the newest
    intact version below a damaged one: its commit was lost with that version)
    and its key is not committed or committed at an older version (the damaged
    version rewrote the partition and retired the path the catalog names).
    A group written by a transaction whose garbage record exists is adopted
    too, even when that transaction began before ``floor``: the record is
    written only once its commit landed (a slow writer whose commit is the
    damaged version).
    Otherwise it is an uncommitted write (its writer left no lease) or an
    unnamed version of a committed partition, and is quarantined, never
    published.

    A committed path that a garbage record retires, written before the
    record's transaction, was superseded or dropped by a commit the damaged
    version held: unless a newer version of it is adopted, it is dropped (a
    drop the damaged version committed is never undone).
    """
    part = col.partitioning
    plan = _Plan([], [], [], [], [])
    by_path = {f.path: f for f in found}
    named: dict[str, int] = {}
    # Committed partitions a lost commit retired (catalog position -> that commit).
    lost_drops: dict[int, str] = {}
    if base is not None:
        named = {p: i for i, p in enumerate(base.paths)}
        for path, i in named.items():
            key = base.key_tuple(i)
            f = by_path.get(path)
            dropper = (
                _dropped_by(retired, path, f or FoundGroup(path, None))
                if floor is not None
                else None
            )
            if f is None or (f.attrs is None and not f.has_data):
                plan.drop.append((i, RepairAction(path, "nothing left in the store at its path")))
            elif dropper is not None:
                lost_drops[i] = dropper
                reason = (
                    f"dropped by transaction {dropper}, committed in a damaged catalog "
                    "version (its garbage record retires this path)"
                )
                plan.drop.append((i, RepairAction(path, reason)))
            elif f.attrs is None:
                plan.rebuild.append(
                    (i, RepairAction(path, "group zarr.json missing; arrays intact"))
                )
            else:
                stored = _key_attr(f, part.keys)
                if stored is not None and stored != key:
                    says = "unreadable" if stored == () else part.encode(stored)
                    reason = f"its partition-key attribute says {says}, not {part.encode(key)}"
                    plan.quarantine_named.append((i, RepairAction(path, reason)))
    # The newest version of each partition the catalog does not name.
    best: dict[str, FoundGroup] = {}
    for f in found:
        if f.path in named or f.path in retired.paths or f.attrs is None:
            continue
        if f.pending:
            continue  # a claim: its writer's recovery deletes it
        other = best.get(f.canonical)
        if other is None or f.txn > other.txn:
            if other is not None:
                plan.quarantine_orphan.append(
                    (other, RepairAction(other.path, f"an older version of {f.canonical}"))
                )
            best[f.canonical] = f
        else:
            plan.quarantine_orphan.append(
                (f, RepairAction(f.path, f"an older version of {f.canonical}"))
            )
    for f in best.values():
        attrs = f.attrs or {}
        key = part.decode(f.canonical)
        stored = _key_attr(f, part.keys)
        if stored is not None and stored != key:
            says = "unreadable" if stored == () else part.encode(stored)
            plan.quarantine_orphan.append(
                (f, RepairAction(f.path, f"its partition-key attribute says {says}"))
            )
            continue
        if base is not None and TXN_ATTR in attrs:
            pos = int(base.find(numpy.array([key], dtype="int64"))[0])
            named_key = pos >= 0
            # Written after the newest intact version and newer than the version it
            # names (the damaged version rewrote the partition and retired that one).
            lost = floor is not None and (f.txn > floor or f.txn in retired.committed)
            if named_key and lost:
                current = by_path.get(base.paths[pos])
                lost = current is None or f.txn > current.txn or pos in lost_drops
            if not lost:
                what = "an unnamed version of a committed partition" if named_key else "uncommitted"
                plan.quarantine_orphan.append(
                    (f, RepairAction(f.path, f"{what} (no catalog version names it)"))
                )
                continue
        why = await _rows_disagree(col, f.path, key)
        if why is not None:
            plan.quarantine_orphan.append((f, RepairAction(f.path, why)))
            continue
        if base is None:
            reason = "found in the tree; no intact catalog"
        elif TXN_ATTR in attrs:
            reason = "committed by a damaged catalog version"
        else:
            reason = "found in the tree, written by the reference implementation"
        plan.adopt.append((f, key, RepairAction(f.path, reason)))
    # A partition adopted under a newer path is not dropped (its old one may be gone).
    adopted = {k for _, k, _ in plan.adopt}
    if base is not None:
        plan.drop[:] = [(i, a) for i, a in plan.drop if base.key_tuple(i) not in adopted]
    return plan


async def _quarantine(spec: StoreSpec, stamp: str, paths: Sequence[str]) -> None:
    """Copy each prefix (a group or one object) under ``_quarantine/<stamp>/``."""
    keys: list[str] = []
    for path in paths:
        listed = await spec.list_prefix(path + "/")
        keys += listed if listed else [path]
    sem = asyncio.Semaphore(_COPY_CONCURRENCY)

    async def copy(key: str) -> None:
        async with sem:
            data = await spec.get(key)
            if data is not None:
                await spec.put(f"{QUARANTINE_DIR}/{stamp}/{key}", data)

    await asyncio.gather(*(copy(k) for k in keys))


async def _set_aside(
    col: AsyncCollection,
    stamp: str,
    *,
    damaged: Sequence[str],
    orphans: Sequence[str],
    named: Sequence[str] = (),
) -> None:
    """Copy under the quarantine: damaged catalog objects (deleted only by the caller,
    once its commit landed: a failed repair leaves the damage for the next one to
    see), groups no catalog names (then retired) and committed groups (the commit
    that drops them retires them)."""
    await _quarantine(col.spec, stamp, [*damaged, *named, *orphans])
    await _retire(col.spec, f"{stamp}-quarantine", orphans)


async def _rebuild(col: AsyncCollection, base: Catalog, i: int) -> None:
    """Write the missing group (and array) ``zarr.json`` of committed partition ``i``."""
    spec, io = col.spec, col.io
    path = base.paths[i]
    key = base.key_tuple(i)
    for gpath, group in col.schema.walk_groups():
        if gpath and await spec.get(f"{path}/{gpath}/zarr.json") is None:
            await spec.put(f"{path}/{gpath}/zarr.json", group_json(group.attrs))
    rows = int(base.rows[i])
    if rows >= 0:
        for vpath in io.partitioned:
            if await spec.get(f"{path}/{vpath}/zarr.json") is None:
                shape = [rows if d == col.axis else size for d, size in _shape(col, vpath)]
                meta = await io.template(vpath, shape)
                await spec.put(f"{path}/{vpath}/zarr.json", json.dumps(meta).encode())
    # The identity the catalog records, when it records one: readers check it.
    identity = base.identity(i)
    attrs = partition_attrs(
        col.partitioning.keys, key, identity if identity not in ("", NO_TXN) else base.txn
    )
    await spec.put(f"{path}/zarr.json", io.root_group(attrs))


def _shape(col: AsyncCollection, vpath: str) -> list[tuple[str, int]]:
    return [(d, dim.size or 0) for d, dim in col.schema.variable_dimensions(vpath).items()]


async def repair(col: AsyncCollection, *, force: bool, dry_run: bool) -> RepairReport:
    """See :meth:`dask_zcollection.Collection.repair`."""
    spec = col.spec
    recovered = () if dry_run else tuple(await recover(spec, force=force, locks=True))

    async def attempt() -> RepairReport:
        base, damaged, floor = await _versions(col)
        if base is not None and base.key_names != col.partitioning.keys:
            raise CorruptedDataError(
                f"the catalog of {spec.url} names partitions by {base.key_names} but "
                f"_zcollection.json's partitioning by {col.partitioning.keys}; was the "
                "configuration edited? Nothing was changed"
            )
        found = await walk(spec, col.partitioning.keys, strict=True, probe_data=True)
        plan = await _plan(col, base, found, await _retired(spec), floor)
        if dry_run:
            return _report(plan, damaged, base, recovered=recovered, dry_run=True)
        if base is None:
            return await _adopt_tree(col, plan, damaged, recovered)
        return await _apply(col, base, plan, damaged, recovered)

    report = await retry_on_conflict(attempt, _RETRIES)
    if not dry_run and not spec.transactional:
        # Segments no version names (a writer killed before its root): old enough that
        # no writer can still be about to publish a root naming them.
        await CatalogLog(spec).sweep_segments(max(retention(), 4 * lease_timeout()))
    return report


async def _versions(col: AsyncCollection) -> tuple[Catalog | None, list[RepairAction], str | None]:
    """The newest intact catalog, every damaged version, and the adoption floor.

    The floor is the transaction of the newest intact version below the oldest
    damaged one (``""`` when there is none; ``None`` when nothing is damaged).
    """
    # Every version at once, each segment fetched once (the versions share most).
    survey = await CatalogLog(col.spec).survey()
    intact, damaged = survey.intact, survey.damaged
    floor = None
    if damaged:
        below = [c for c in intact if c.version < damaged[0][0]]
        floor = below[-1].txn if below else ""
    actions = [RepairAction(version_key(v), why) for v, why in damaged]
    # A damaged segment damages every version naming it: set it aside too.
    actions += [RepairAction(key, why) for key, why in survey.damaged_segments]
    return (intact[-1] if intact else None), actions, floor


async def set_aside_damaged(
    spec: StoreSpec, *, force: bool = False, dry_run: bool = False
) -> RepairReport:
    """Set aside the damaged catalog objects: copy, commit past them, delete (a view's repair).

    A view's partitions are computed from its base: what a damaged version
    committed is recomputed by the next update (the view's catalog then falls
    back to the newest intact version). The drops the damaged versions
    committed are committed again, in a version numbered past them, and the
    damaged objects are deleted only once that commit landed: a repair whose
    commit fails leaves the damage (and the garbage records that show its
    drops) for the next repair to see. Dead writers are recovered first, as
    the collection's repair does: one whose commit is a damaged version then
    has its garbage record (see :func:`recover_transaction`).
    """
    recovered = () if dry_run else tuple(await recover(spec, force=force, locks=True))
    survey = await CatalogLog(spec).survey()
    damaged = [RepairAction(version_key(v), why) for v, why in survey.damaged]
    damaged += [RepairAction(key, why) for key, why in survey.damaged_segments]
    # The newest intact version, read whole (no warning: the damage is what this sets aside).
    catalog = survey.intact[-1] if survey.intact else None
    if not damaged:
        return RepairReport(
            recovered=recovered, catalog=None if dry_run else catalog, dry_run=dry_run
        )
    if not dry_run:
        await _quarantine(spec, new_txn_id(), [a.path for a in damaged])
    dropped: list[RepairAction] = []
    if catalog is not None:
        # A drop the damaged version committed stays a drop (its garbage record shows it).
        # Committed even with nothing to drop: past every damaged version, a number is
        # never taken twice (a writer's put that planned on one must still fail).
        top = max((_version_of(a.path) for a in damaged), default=0)
        dropped, catalog = await _redo_lost_drops(
            spec, catalog, dry_run=dry_run, past=top, always=True
        )
    if not dry_run:
        # Below the new version now: nothing reads or builds on them. (With no intact
        # version, the view has nothing to commit on: its next update starts afresh.)
        await asyncio.gather(*(spec.delete(a.path) for a in damaged))
        if catalog is None:
            catalog = await CatalogLog(spec).latest()
    return RepairReport(
        quarantined=tuple(damaged),
        dropped=tuple(dropped),
        recovered=recovered,
        catalog=None if dry_run else catalog,
        dry_run=dry_run,
    )


async def _stamp(spec: StoreSpec, path: str) -> str | None:
    """The ``_zc_txn`` of the group at ``path`` (``None``: none, or unreadable)."""
    raw = await spec.get(f"{path}/zarr.json")
    try:
        attrs = json.loads(raw).get("attributes", {}) if raw is not None else {}
    except (ValueError, AttributeError):
        return None
    txn = attrs.get(TXN_ATTR) if isinstance(attrs, dict) else None
    return txn if isinstance(txn, str) else None


async def _redo_lost_drops(
    spec: StoreSpec, catalog: Catalog, *, dry_run: bool, past: int, always: bool = False
) -> tuple[list[RepairAction], Catalog]:
    """Drop again the partitions of ``catalog`` a garbage record retires (see :func:`_plan`).

    The commit is numbered past ``past`` (the damaged versions set aside);
    ``always``: committed even when nothing is dropped.
    """
    retired = await _retired(spec)
    named = [(i, p) for i, p in enumerate(catalog.paths) if p in retired.by]
    raws = await asyncio.gather(*(spec.get(f"{p}/zarr.json") for _, p in named))
    lost: list[tuple[int, RepairAction]] = []
    for (i, path), raw in zip(named, raws, strict=True):
        try:
            attrs = json.loads(raw).get("attributes") if raw is not None else None
        except (ValueError, AttributeError):
            attrs = None
        found = FoundGroup(path, attrs if isinstance(attrs, dict) else None)
        dropper = _dropped_by(retired, path, found)
        if dropper is None:
            continue
        # A rewrite (a newer version the commit wrote beside it, not retired since) is
        # no drop: the view's next update computes the partition again.
        later = [t for t in retired.by[path] if t > found.txn]
        beside = [f"{found.canonical}@{t}" for t in later]
        if path != found.canonical:
            beside.append(found.canonical)  # free again once collected: claimed as is
        beside = [b for b in beside if b not in retired.paths]
        stamps = await asyncio.gather(*(_stamp(spec, b) for b in beside))
        if any(t in later for t in stamps):
            continue
        reason = (
            f"dropped by transaction {dropper}, committed in a damaged catalog version "
            "(its garbage record retires this path)"
        )
        lost.append((i, RepairAction(path, reason)))
    if dry_run or not (lost or always):
        return [a for _, a in lost], catalog
    keys = catalog.keys[[i for i, _ in lost]]
    canonicals = sorted({a.path.partition("@")[0] for _, a in lost})

    async def attempt() -> None:
        txn = await Transaction.begin(spec, catalog, keys, canonicals)
        async with txn.aborting():
            token = lock_token(txn.txn, done=True)  # a drop writes nothing under its locks
            for canonical in canonicals:
                await acquire_lock(spec, canonical, token)
            await txn.commit(DropPartitions(keys), past=past)

    await retry_on_conflict(attempt, _RETRIES)
    latest = await CatalogLog(spec).latest()
    return [a for _, a in lost], latest if latest is not None else catalog


def _report(
    plan: _Plan,
    damaged: list[RepairAction],
    base: Catalog | None,
    *,
    held: set[str] | None = None,
    skipped: Sequence[RepairAction] = (),
    **extra: Any,
) -> RepairReport:
    """The report of ``plan``, keeping only partitions whose lock repair held."""

    def ok(path: str) -> bool:
        return held is None or path.partition("@")[0] in held

    named = base.paths if base is not None else ()
    return RepairReport(
        rebuilt=tuple(a for i, a in plan.rebuild if ok(named[i])),
        adopted=tuple(a for f, _, a in plan.adopt if ok(f.path)),
        quarantined=tuple(
            [a for i, a in plan.quarantine_named if ok(named[i])]
            + [a for f, a in plan.quarantine_orphan if ok(f.path)]
            + damaged
        ),
        dropped=tuple(a for i, a in plan.drop if ok(named[i])),
        skipped=tuple(skipped),
        **extra,
    )


async def _apply(
    col: AsyncCollection,
    base: Catalog,
    plan: _Plan,
    damaged: list[RepairAction],
    recovered: tuple[str, ...],
) -> RepairReport:
    """Take the locks, check the catalog did not move, act, commit.

    Raises
    ------
    ConflictError
        When another commit landed since the plan (repair plans again).
    """
    spec = col.spec
    canonicals = plan.canonicals(base, col.partitioning.encode)
    if not canonicals and not damaged:
        return _report(plan, damaged, base, recovered=recovered, catalog=base)
    keys = numpy.array([col.partitioning.decode(c) for c in canonicals], dtype="int64").reshape(
        len(canonicals), len(col.partitioning.keys)
    )
    txn = await Transaction.begin(spec, base, keys, canonicals)
    token = lock_token(txn.txn, done=True)  # repair writes no partition data under them
    skipped: list[RepairAction] = []
    held: set[str] = set()
    try:
        async with txn.alive(final=True):
            for canonical in canonicals:
                try:
                    await acquire_lock(spec, canonical, token)
                    held.add(canonical)
                except ConflictError as err:
                    skipped.append(RepairAction(canonical, str(err)))
            # No warning: the damaged versions are what repair sets aside.
            latest = (await CatalogLog(spec).state()).latest
            if latest is None or latest.version != base.version:
                # Another commit landed since the plan: plan again (the locks are released).
                raise ConflictError("the catalog changed while repair planned")

            def ok(path: str) -> bool:
                return path.partition("@")[0] in held

            named_q = [i for i, _ in plan.quarantine_named if ok(base.paths[i])]
            await _set_aside(
                col,
                txn.txn,
                damaged=[a.path for a in damaged],
                orphans=[f.path for f, _ in plan.quarantine_orphan if ok(f.path)],
                named=[base.paths[i] for i in named_q],
            )
            for i, _ in plan.rebuild:
                if ok(base.paths[i]):
                    await _rebuild(col, base, i)
            adopt = [(f.path, k) for f, k, _ in plan.adopt if ok(f.path)]
            drops = [i for i, _ in plan.drop if ok(base.paths[i])] + named_q
            put = await _stats(col, [p for p, _ in adopt])
            drop = base.keys[drops] if drops else numpy.empty((0, len(base.key_names)), "int64")
            if len(put) or len(drop) or damaged:
                # Past every damaged version set aside: a number is never taken twice
                # (a writer's put that planned on it must still fail).
                top = max((_version_of(a.path) for a in damaged), default=0)
                await txn.commit(_RepairChange(put, drop), past=top)
                # Below the new version now: nothing reads or builds on them.
                await asyncio.gather(*(spec.delete(a.path) for a in damaged))
                catalog = await CatalogLog(spec).latest()  # the commit returns its segments only
            else:
                catalog = latest
                await txn.release_locks()
                await spec.delete(lease_key(txn.txn))
    except BaseException:
        await asyncio.shield(txn.abort())
        raise
    return _report(
        plan, damaged, base, held=held, skipped=skipped, recovered=recovered, catalog=catalog
    )


def _version_of(key: str) -> int:
    """The version number a catalog key names (0: a segment or another object)."""
    match = _VERSION_KEY.fullmatch(key)
    return int(match.group(1)) if match else 0


async def _stats(col: AsyncCollection, paths: Sequence[str]) -> Catalog:
    """A catalog of the groups at ``paths`` with stats read from their axis."""
    return await col.planner.with_stats(col.discovery.listed(paths))


async def _adopt_tree(
    col: AsyncCollection, plan: _Plan, damaged: list[RepairAction], recovered: tuple[str, ...]
) -> RepairReport:
    """No intact catalog: publish the groups found (the reference format, or all versions lost).

    With every version damaged, the catalog adopted from the tree is committed
    numbered past them, and they are deleted only once it landed: a repair
    whose commit fails leaves them, and the tree, for the next repair.

    Raises
    ------
    ConflictError
        When another repair committed a version first (repair plans again on it).
    """
    await _set_aside(
        col,
        new_txn_id(),
        damaged=[a.path for a in damaged],
        orphans=[f.path for f, _ in plan.quarantine_orphan],
    )
    listed = await _stats(col, [f.path for f, _, _ in plan.adopt])
    if not damaged:  # the reference format: its first version of ours
        catalog = await col.planner.base(listed)
        return _report(plan, damaged, None, recovered=recovered, catalog=catalog)
    # The writer's path (Planner.base) refuses while they are there: adopted here, on
    # an empty catalog plus what the tree holds. No writer commits meanwhile (each
    # refuses on the damage); a concurrent repair's put of the same number wins or loses.
    top = max((_version_of(a.path) for a in damaged), default=0)
    new = await col.planner.adopt(listed, past=top)
    if new is None:
        raise ConflictError(f"another repair of {col.spec.url} committed a version first")
    # Below the new version now: nothing reads or builds on them.
    await asyncio.gather(*(col.spec.delete(a.path) for a in damaged))
    return _report(plan, damaged, None, recovered=recovered, catalog=new)
