"""The async API: ``await dask_zcollection.aio.open_collection(url)`` and friends.

The front door of the async core: the openers live here (and, wrapped by the
one sync bridge, in :mod:`dask_zcollection.api`); the engine
(:class:`AsyncCollection`) and the lazy collection never know how a
collection is opened.
"""

from __future__ import annotations

import asyncio
import dataclasses
import keyword
import os
import pathlib
from collections.abc import Mapping, Sequence
from typing import Any

import numpy

from ._engine import AsyncCollection, Mode
from .catalog import CatalogLog
from .catalog._transaction import recover
from .collection import LazyCollection, collection_from
from .errors import (
    AlreadyExistsError,
    CollectionNotFoundError,
    InvalidInputError,
    SchemaError,
    StorageError,
    ZCollectionError,
)
from .io import (
    CONFIG_KEY,
    CollectionConfig,
    default_axis_variable,
    forget_collection,
    read_config,
    write_config,
)
from .partitioning import Partitioning
from .partitioning._filter import FilterLike
from .schema import Schema
from .store import (
    FsspecStore,
    LocalStore,
    ObjectStore,
    StoreLike,
    StoreSpec,
    check_clearable,
    resolve_store,
)
from .view import AsyncView, create_view, is_view, open_view, read_view

__all__ = [
    "AsyncCollection",
    "AsyncView",
    "create_collection",
    "create_view",
    "open_collection",
    "open_view",
    "read_collection",
    "read_view",
]


async def create_collection(
    store: StoreLike,
    *,
    schema: Schema | None = None,
    axis: str | None = None,
    partitioning: Partitioning,
    axis_variable: str | None = None,
    overwrite: bool = False,
    storage_options: Mapping[str, Any] | None = None,
    from_: Any = None,
) -> AsyncCollection:
    """Create an empty collection and return it open for writing.

    Parameters
    ----------
    store : str or StoreSpec
        ``file:///path``, ``memory://name``, a local path or a store spec.
    schema : Schema, optional
        The variables, dimensions and groups of every partition (or ``from_``).
    axis : str, optional
        The partitioned dimension (e.g. ``"time"``); by default the partitioning's.
    partitioning : Partitioning
        How rows map to partitions, e.g. ``partitioning.Date(("time",), resolution="M")``.
    axis_variable : str, optional
        1-D variable along ``axis`` used for stats and merges (default: the
        variable named like ``axis``, else the Date variable, else a datetime).
    overwrite : bool
        Replace an existing collection (all of it) instead of failing.
    storage_options : dict, optional
        Backend options.
    from_ : xarray.Dataset or xarray.DataTree, optional
        Infer the schema from this data instead of ``schema`` (groups, dtypes,
        fill values, attributes, zarr chunks; nothing is read or inserted):
        ``create_collection(url, from_=ds, partitioning=...).insert(ds)``.

    Raises
    ------
    AlreadyExistsError
        When a collection exists at ``store`` and ``overwrite`` is false.
    InvalidInputError
        When ``overwrite`` would clear an empty path, a filesystem root, the
        home directory or a bucket root (nothing is deleted).
    SchemaError
        When the schema, axis and partitioning do not fit together.
    """
    if not isinstance(partitioning, Partitioning):
        raise InvalidInputError(
            f"partitioning must be a partitioning (e.g. partitioning.Date), got {partitioning!r}"
        )
    if axis is None:
        axis = partitioning.dimension
    if from_ is not None:
        if schema is not None:
            raise InvalidInputError("pass schema or from_ (a schema inferred from data), not both")
        from ._infer import schema_from_xarray

        schema = schema_from_xarray(from_, axis)
    if not isinstance(schema, Schema):
        raise InvalidInputError(f"schema must be a dask_zcollection.Schema, got {schema!r}")
    spec = resolve_store(store, storage_options).for_writing()
    if overwrite:
        check_clearable(store, spec)
    schema = schema.build().with_axis(axis).with_default_chunks(axis)
    for name in partitioning.variables:
        if name not in schema or schema[name].dimensions != (axis,):
            raise SchemaError(
                f"partitioning variable {name!r} must be a 1-D variable along {axis!r} "
                "in the schema"
            )
    if partitioning.dimension != axis:
        raise SchemaError(
            f"the partitioning splits dimension {partitioning.dimension!r} but axis is {axis!r}"
        )
    _check_partitioning(partitioning, schema, spec.url)
    if axis_variable is None:
        axis_variable = default_axis_variable(schema, axis, partitioning)
    elif axis_variable not in schema or schema[axis_variable].dimensions != (axis,):
        raise SchemaError(f"axis_variable {axis_variable!r} must be a 1-D variable along {axis!r}")
    config = CollectionConfig(
        axis=axis, axis_variable=axis_variable, partitioning=partitioning, schema=schema
    )
    await _check_not_inside_a_collection(spec)
    if await spec.exists(CONFIG_KEY) or not await spec.is_empty():
        if not overwrite:
            raise AlreadyExistsError(f"a collection (or other data) already exists at {spec.url}")
        await spec.clear()
        forget_collection(spec.url)
    await write_config(spec, config)
    log = CatalogLog(spec)
    await log.initialise()
    collection = AsyncCollection(spec, config, "rw")
    empty = collection.discovery.empty()
    await log.commit(empty.next_version("create"))
    await spec.publish(f"dask_zcollection create collection (partitioning {partitioning!r})")
    return collection


async def _check_not_inside_a_collection(spec: StoreSpec) -> None:
    """Refuse a root inside another collection (at a partition's path, in its catalog...).

    Its repair quarantined such a collection, and an insert of the partition
    at that path wrote over it. Local directories and object-store prefixes are
    checked (one existence check per parent prefix); other stores have no parents.
    """
    found: str | None = None
    if isinstance(spec, LocalStore):
        root = pathlib.Path(os.path.realpath(spec.root))
        found = next((f"file://{p}" for p in root.parents if (p / CONFIG_KEY).is_file()), None)
    elif isinstance(spec, ObjectStore | FsspecStore) and getattr(spec, "prebuilt", None) is None:
        scheme, _, rest = spec.location.partition("://")
        parts = rest.strip("/").split("/")
        parents = [
            dataclasses.replace(spec, location=f"{scheme}://{'/'.join(parts[:i])}")
            for i in range(len(parts) - 1, 0, -1)
        ]

        async def holds(parent: StoreSpec) -> bool:
            try:
                return await parent.exists(CONFIG_KEY)
            except StorageError:  # e.g. a key allowed this prefix only: nothing to tell
                return False

        held = await asyncio.gather(*(holds(p) for p in parents))
        found = next((p.url for p, h in zip(parents, held, strict=True) if h), None)
    if found is not None:
        raise InvalidInputError(
            f"cannot create a collection at {spec.url}: it lies inside the collection at "
            f"{found} (its partitions, catalog and clean-up own every path below it)"
        )


def _check_partitioning(partitioning: Partitioning, schema: Schema, url: str) -> None:
    """Refuse partition keys no filter can name, and key variables of unusable dtypes.

    A Sequence over floats would refuse every insert; zero rows of each variable's
    dtype (and its attributes: a Date's CF units) go through the partitioning's
    own checks.
    """
    for key in partitioning.keys:
        # Filters name keys as identifiers ("pass == 3" is a syntax error, and so
        # was the mapping {"pass": 3}, which is turned into that text).
        if not key.isidentifier() or keyword.iskeyword(key):
            raise SchemaError(
                f"{url}: partition key {key!r} cannot be named in a filter: it must be a "
                "Python identifier and not a keyword; rename the variable"
            )
    probe = {name: numpy.zeros(0, schema[name].dtype) for name in partitioning.variables}
    attrs = {name: dict(schema[name].attrs) for name in partitioning.variables}
    try:
        partitioning.split(probe, attrs)
    except ZCollectionError as err:
        raise SchemaError(f"{url}: the partitioning cannot use the schema: {err}") from err
    except Exception:  # a custom partitioning may not take zero rows: its inserts check
        pass


async def open_collection(
    store: StoreLike,
    *,
    mode: Mode = "r",
    storage_options: Mapping[str, Any] | None = None,
    version: str | None = None,
) -> AsyncCollection:
    """Open an existing collection.

    Parameters
    ----------
    store : str or StoreSpec
        Where the collection lives.
    mode : {"r", "rw"}
        Read-only, or read-write (which also cleans up after crashed writers).
    version : str, optional
        Icechunk only: read the collection as of a snapshot id, tag or branch.

    Raises
    ------
    CollectionNotFoundError
        When there is no collection at ``store``.
    """
    if mode not in ("r", "rw"):
        raise InvalidInputError(f"mode must be 'r' or 'rw', got {mode!r}")
    spec = resolve_store(store, storage_options)
    if mode == "rw":
        if version is not None:
            raise InvalidInputError("version= reads the past: open it with mode='r'")
        spec = spec.for_writing()
    else:
        spec = await spec.pinned(version)
    if mode == "rw":
        config = await read_config(spec)
        collection = AsyncCollection(spec, config, mode)
    else:  # the catalog versions are listed meanwhile: the first read saves a round trip
        log = CatalogLog(spec)
        config, _ = await asyncio.gather(read_config(spec), log.prime())
        collection = AsyncCollection(spec, config, mode)
        collection.discovery.log.guess = log.guess
    if mode == "rw":
        await recover(spec)
    return collection


async def read_collection(
    store: StoreLike,
    *,
    variables: Sequence[str] | None = None,
    filters: FilterLike = None,
    storage_options: Mapping[str, Any] | None = None,
    version: str | None = None,
) -> LazyCollection:
    """Open a collection lazily, as a Dask collection (async twin of
    :func:`dask_zcollection.read_collection`).

    Reads the collection descriptor and the catalog (never a listing of every
    partition when the catalog exists). On a view's URL, the view over its
    base (:func:`read_view`).
    """
    try:
        collection = await open_collection(
            store, mode="r", storage_options=storage_options, version=version
        )
    except CollectionNotFoundError:
        # No collection descriptor: a view's URL reads as the view over its base.
        if not await is_view(store, storage_options):
            raise
        return await read_view(
            store,
            variables=variables,
            filters=filters,
            storage_options=storage_options,
            version=version,
        )
    # A filter reads only the catalog segments it may match (the root gives the total).
    catalog, total = await collection.select_counted(filters)
    return collection_from(
        collection.spec, collection.config, catalog, variables, filters, total=total
    )
