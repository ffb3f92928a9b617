"""The collection descriptor, ``_zcollection.json``, and the root group."""

from __future__ import annotations

import dataclasses
import functools
import json
from typing import Any

from ..errors import CollectionNotFoundError, CorruptedDataError, FormatVersionError, SchemaError
from ..partitioning import Partitioning, from_dict
from ..schema import Schema
from ..store import StoreSpec
from ._partition import group_json

__all__ = ["CONFIG_KEY", "CollectionConfig", "read_config", "write_config"]

CONFIG_KEY = "_zcollection.json"
#: Highest collection format version this library reads and the one it writes.
COLLECTION_FORMAT = 1


@dataclasses.dataclass(frozen=True, slots=True)
class CollectionConfig:
    """What ``_zcollection.json`` holds.

    Attributes
    ----------
    axis : str
        The partitioned dimension.
    axis_variable : str
        The 1-D variable along ``axis`` whose min/max the catalog records and
        along which merge strategies order rows.
    partitioning : Partitioning
        How rows map to partitions.
    schema : Schema
        The schema, with immutable flags set.
    catalog : bool
        Whether the catalog is maintained (always for collections we create).
    format_version : int
        Format version of the descriptor.
    """

    axis: str
    axis_variable: str
    partitioning: Partitioning
    schema: Schema
    catalog: bool = True
    format_version: int = COLLECTION_FORMAT

    def to_dict(self) -> dict[str, Any]:
        """The JSON form (a superset of the reference format)."""
        return {
            "format_version": self.format_version,
            "axis": self.axis,
            "axis_variable": self.axis_variable,
            "partitioning": self.partitioning.to_dict(),
            "catalog": {"enabled": self.catalog, "format": "zcat"},
            "schema": self.schema.to_dict(),
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> CollectionConfig:
        """Parse the JSON form (ours or the reference implementation's)."""
        if not isinstance(data, dict):
            raise SchemaError(f"{CONFIG_KEY} must hold a JSON object, got {type(data).__name__}")
        raw_version = data.get("format_version", 1)
        if isinstance(raw_version, bool) or not isinstance(raw_version, int) or raw_version < 1:
            raise FormatVersionError(
                f"collection format version {raw_version!r} is not a positive integer"
            )
        version = raw_version
        if version > COLLECTION_FORMAT:
            raise FormatVersionError(
                f"collection format {version} is newer than this library supports "
                f"({COLLECTION_FORMAT})"
            )
        partitioning = from_dict(data["partitioning"])
        axis = data.get("axis") or partitioning.dimension
        schema = Schema.from_dict(data["schema"]).with_axis(axis)
        axis_variable = data.get("axis_variable") or default_axis_variable(
            schema, axis, partitioning
        )
        for name in (axis_variable, *partitioning.variables):
            if name not in schema or schema[name].dimensions != (axis,):
                raise SchemaError(f"{name!r} is not a 1-D variable along {axis!r} in the schema")
        return cls(
            axis=axis,
            axis_variable=axis_variable,
            partitioning=partitioning,
            schema=schema,
            catalog=bool((data.get("catalog") or {}).get("enabled", True)),
            format_version=version,
        )


def default_axis_variable(schema: Schema, axis: str, partitioning: Partitioning) -> str:
    """Choose the axis variable: named like the axis, else the Date variable, else a 1-D one.

    Raises
    ------
    SchemaError
        When no 1-D variable spans ``axis``.
    """
    candidates = [p for p, v in schema.walk() if v.dimensions == (axis,)]
    if axis in candidates:
        return axis
    for name in partitioning.variables:
        if name in candidates and getattr(partitioning, "name", "") == "date":
            return name
    for p in candidates:
        if schema[p].dtype.kind == "M":
            return p
    if candidates:
        return candidates[0]
    raise SchemaError(f"no 1-D variable spans the partitioned dimension {axis!r}")


async def read_config(spec: StoreSpec) -> CollectionConfig:
    """Read ``_zcollection.json``.

    Raises
    ------
    CollectionNotFoundError
        When there is no collection at ``spec``.
    CorruptedDataError
        When the document cannot be parsed (naming the object).
    FormatVersionError
        When its version is not one this library reads.
    """
    raw = await spec.get(CONFIG_KEY)
    if raw is None:
        raise CollectionNotFoundError(f"no collection at {spec.url} ({CONFIG_KEY} not found)")
    try:
        return _parse_config(raw)
    except FormatVersionError:
        raise
    except (ValueError, KeyError, TypeError, AttributeError, OverflowError, RecursionError) as err:
        # Truncated, not JSON, a field missing or of the wrong type (JSONDecodeError,
        # UnicodeDecodeError and the library's InvalidInputError are ValueErrors).
        raise CorruptedDataError(
            f"{CONFIG_KEY} of {spec.url} is damaged ({len(raw)} bytes): {type(err).__name__}: {err}"
        ) from err


@functools.lru_cache(maxsize=64)
def _parse_config(raw: bytes) -> CollectionConfig:
    # The descriptor never changes for a collection: parse each one once per process.
    return CollectionConfig.from_dict(json.loads(raw))


async def write_config(spec: StoreSpec, config: CollectionConfig) -> None:
    """Write the root group and ``_zcollection.json``."""
    await spec.put("zarr.json", group_json(config.schema.root.attrs))
    await spec.put(CONFIG_KEY, json.dumps(config.to_dict(), indent=2).encode())
