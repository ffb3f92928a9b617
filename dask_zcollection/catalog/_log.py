"""Catalog versions on a store: find the latest, commit the next one.

Layout under the collection root::

    _catalog/zarr.json            a Zarr group, so the tree stays valid Zarr
    _catalog/v000000000042.zcat   one immutable snapshot per commit
    _catalog/state.json           (reference implementation: paths only; read, never written)

Committing version ``N + 1`` is ``put_if_absent`` of its object: atomic on
every backend (``link(2)`` locally, ``If-None-Match`` on object stores), so
of two writers racing from version ``N`` exactly one wins.

A damaged version (truncated, bad magic or checksum, a header naming another
version: a restore from a backup) never blocks: readers take the newest
intact one with a :class:`~dask_zcollection.errors.ZCollectionWarning`,
writers number their commit past every version present, and ``repair()``
quarantines the damaged objects.
"""

from __future__ import annotations

import dataclasses
import json
import re
import warnings

from ..errors import CorruptedDataError, StorageError, ZCollectionWarning
from ..store import StoreSpec
from ..store._base import group_json
from ._catalog import Catalog, decode_catalog, encode_catalog

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


@dataclasses.dataclass(frozen=True, slots=True)
class CatalogState:
    """The catalog versions of a collection as found.

    Attributes
    ----------
    latest : Catalog or None
        The newest intact version (``None``: none).
    damaged : tuple of (int, str)
        Versions newer than ``latest`` that cannot be read, with the reason.
    top : int
        The highest version number present (intact or not).
    """

    latest: Catalog | None
    damaged: tuple[tuple[int, str], ...]
    top: int


class CatalogLog:
    """Access to the catalog versions of one collection."""

    def __init__(self, spec: StoreSpec) -> None:
        self.spec = spec
        #: Highest version number seen by the last listing (damaged ones included).
        self.top = 0

    async def versions(self) -> list[int]:
        """Committed catalog versions present, ascending (one listing)."""
        names = await self.spec.list_dir(CATALOG_DIR)
        versions = sorted(int(m.group(1)) for n in names if (m := _VERSION_RE.match(n)))
        self.top = max(self.top, versions[-1]) if versions else self.top
        return versions

    async def read(self, version: int) -> Catalog | None:
        """Read one version (``None`` when it does not exist).

        Raises
        ------
        CorruptedDataError
            When the object is damaged or holds another version.
        """
        raw = await self.spec.get(_name(version))
        if raw is None:
            return None
        catalog = decode_catalog(raw, f"{self.spec.url}/{_name(version)}")
        if catalog.version != version:
            raise CorruptedDataError(
                f"{self.spec.url}/{_name(version)} holds version {catalog.version} "
                "(a copy or a restore from a backup)"
            )
        return catalog

    async def state(self) -> CatalogState:
        """The newest intact version and the damaged ones above it (bounded work)."""
        for _ in range(_ATTEMPTS):
            versions = await self.versions()
            damaged: list[tuple[int, str]] = []
            vanished = False
            for version in reversed(versions):
                try:
                    catalog = await self.read(version)
                except CorruptedDataError as err:
                    damaged.append((version, str(err)))
                    continue
                if catalog is None:  # pruned under us: list again
                    vanished = True
                    break
                return CatalogState(catalog, tuple(damaged), versions[-1])
            if not vanished:
                return CatalogState(None, tuple(damaged), versions[-1] if versions else 0)
        raise StorageError(f"the catalog versions of {self.spec.url} keep vanishing while read")

    async def latest(self) -> Catalog | None:
        """The newest intact committed catalog, or ``None`` when none was ever written.

        One listing plus one read. A version committed after the listing is
        not seen: the snapshot returned is still a committed one, and writers
        detect the race when they commit. Damaged newer versions are skipped
        with a :class:`~dask_zcollection.errors.ZCollectionWarning`.
        """
        state = await self.state()
        if state.damaged:
            versions = [v for v, _ in state.damaged]
            fallback = "none" if state.latest is None else f"version {state.latest.version}"
            warnings.warn(
                f"catalog version(s) {versions} of {self.spec.url} are damaged "
                f"({state.damaged[0][1]}); reading {fallback}; run repair() to quarantine them",
                ZCollectionWarning,
                stacklevel=2,
            )
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

    async def commit(self, catalog: Catalog) -> bool:
        """Publish ``catalog`` as its version; ``False`` when that version exists already."""
        return await self.spec.put_if_absent(_name(catalog.version), encode_catalog(catalog))

    async def prune(self, latest: int, keep: int = KEEP_VERSIONS) -> None:
        """Delete catalog versions older than the ``keep`` newest."""
        old = [v for v in await self.versions() if v <= latest - keep]
        for v in old:
            await self.spec.delete(_name(v))
