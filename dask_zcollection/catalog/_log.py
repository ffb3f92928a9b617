"""Catalog versions on a store: find the latest, commit the next one.

Layout under the collection root::

    _catalog/zarr.json            a Zarr group, so the tree stays valid Zarr
    _catalog/v000000000042.zcat   one immutable snapshot per commit
    _catalog/state.json           (reference implementation: paths only; read, never written)

Committing version ``N + 1`` is ``put_if_absent`` of its object: atomic on
every backend (``link(2)`` locally, ``If-None-Match`` on object stores), so
of two writers racing from version ``N`` exactly one wins.
"""

from __future__ import annotations

import json
import re

from ..errors import StorageError
from ..store import StoreSpec
from ._catalog import Catalog, decode_catalog, encode_catalog

__all__ = ["CATALOG_DIR", "CatalogLog"]

CATALOG_DIR = "_catalog"
_VERSION_RE = re.compile(r"^v(\d{12})\.zcat$")
#: Number of past catalog versions kept after a commit (for readers in flight).
KEEP_VERSIONS = 4


def _name(version: int) -> str:
    return f"{CATALOG_DIR}/v{version:012d}.zcat"


class CatalogLog:
    """Access to the catalog versions of one collection."""

    def __init__(self, spec: StoreSpec) -> None:
        self.spec = spec

    async def versions(self) -> list[int]:
        """Committed catalog versions present, ascending (one listing)."""
        names = await self.spec.list_dir(CATALOG_DIR)
        return sorted(int(m.group(1)) for n in names if (m := _VERSION_RE.match(n)))

    async def read(self, version: int) -> Catalog | None:
        """Read one version (``None`` when it does not exist)."""
        raw = await self.spec.get(_name(version))
        return None if raw is None else decode_catalog(raw)

    async def latest(self) -> Catalog | None:
        """The newest committed catalog, or ``None`` when none was ever written.

        One listing plus one read. A version committed after the listing is
        not seen: the snapshot returned is still a committed one, and writers
        detect the race when they commit.
        """
        versions = await self.versions()
        if not versions:
            return None
        catalog = await self.read(versions[-1])
        if catalog is None:  # pruned under us: list again
            return await self.latest()
        return catalog

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
        doc = {
            "attributes": {"zcollection_catalog": {"format": 1}},
            "zarr_format": 3,
            "node_type": "group",
        }
        await self.spec.put(f"{CATALOG_DIR}/zarr.json", json.dumps(doc).encode())

    async def commit(self, catalog: Catalog) -> bool:
        """Publish ``catalog`` as its version; ``False`` when that version exists already."""
        return await self.spec.put_if_absent(_name(catalog.version), encode_catalog(catalog))

    async def prune(self, latest: int, keep: int = KEEP_VERSIONS) -> None:
        """Delete catalog versions older than the ``keep`` newest."""
        old = [v for v in await self.versions() if v <= latest - keep]
        for v in old:
            await self.spec.delete(_name(v))
