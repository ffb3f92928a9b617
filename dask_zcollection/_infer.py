"""A schema inferred from an xarray ``Dataset`` or ``DataTree`` (``create_collection(from_=...)``).

What is inferred, per variable: its group (the tree's node), dimensions, the
stored dtype, fill value and attributes; per dimension: its size (none for the
partitioned one) and zarr chunk length (the ``encoding["chunks"]`` or
``preferred_chunks`` a zarr/netCDF opener left, else the whole dimension; the
partitioned dimension's default is sized as for any schema).

A variable xarray decoded from a masked integer (``mask_and_scale``: floats
with NaN, ``encoding["dtype"]`` the integer and ``encoding["_FillValue"]``
set) is stored as that integer with that fill value; :func:`encode_masked`
turns such data back before it is inserted.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from typing import TYPE_CHECKING, Any

import numpy

from .errors import InvalidInputError, SchemaError
from .schema import Schema

if TYPE_CHECKING:
    import xarray

__all__ = ["encode_masked", "schema_from_xarray"]

_NOT_STORED = ("_FillValue", "missing_value")


def _nodes(obj: Any) -> Iterator[tuple[str, xarray.Dataset, Mapping[Any, Any]]]:
    """``(group path without a leading /, own variables, attributes)`` of every node."""
    import xarray

    if isinstance(obj, xarray.Dataset):
        yield "", obj, obj.attrs
    elif isinstance(obj, xarray.DataTree):
        for node in obj.subtree:
            yield node.path.strip("/"), node.to_dataset(inherit=False), node.attrs
    else:
        raise InvalidInputError(
            f"from_ must be an xarray.Dataset or xarray.DataTree, got {type(obj).__name__}"
        )


def stored_dtype(var: xarray.Variable) -> numpy.dtype[Any]:
    """The dtype to store: the encoded integer of a masked variable, else its own."""
    enc = var.encoding
    want = enc.get("dtype")
    if (
        want is not None
        and var.dtype.kind == "f"
        and numpy.dtype(want) != var.dtype
        and numpy.dtype(want).kind in "iub"
        and "_FillValue" in enc
        and not {"scale_factor", "add_offset"} & set(enc)
    ):
        return numpy.dtype(want)
    return var.dtype


def _fill_value(var: xarray.Variable) -> Any:
    for source in (var.encoding, var.attrs):
        for key in _NOT_STORED:
            if source.get(key) is not None:
                return source[key]
    return None


def _chunk_of(var: xarray.Variable, dim: str) -> int | None:
    """The zarr chunk length along ``dim`` an opener recorded in the encoding."""
    i = var.dims.index(dim)
    chunks = var.encoding.get("chunks")
    if isinstance(chunks, tuple | list) and len(chunks) == var.ndim and chunks[i]:
        return int(chunks[i])
    preferred = var.encoding.get("preferred_chunks", {}).get(dim)
    if isinstance(preferred, tuple | list) and preferred:
        # Blocks that stop at partition ends (our backend's): the longest is the chunk.
        preferred = max(preferred)
    if isinstance(preferred, int) and preferred > 0:
        return int(preferred)
    return None


def schema_from_xarray(obj: Any, axis: str) -> Schema:
    """Infer a collection schema from an xarray Dataset or DataTree.

    Parameters
    ----------
    obj : xarray.Dataset or xarray.DataTree
        The data (or a template of it): groups, variables, dtypes, fill values,
        attributes and chunks are read from it; no value is read.
    axis : str
        The partitioned dimension.

    Raises
    ------
    InvalidInputError
        When ``obj`` is not an xarray Dataset or DataTree.
    SchemaError
        When ``axis`` is not a dimension of ``obj``, or a dimension has two
        sizes in one group.
    """
    nodes = list(_nodes(obj))
    sizes: dict[str, set[int]] = {}
    chunks: dict[str, int] = {}
    for _, ds, _ in nodes:
        for var in ds.variables.values():
            for dim, n in zip(var.dims, var.shape, strict=True):
                sizes.setdefault(str(dim), set()).add(int(n))
                chunk = _chunk_of(var, str(dim))
                if chunk is not None:
                    chunks.setdefault(str(dim), chunk)
    if axis not in sizes:
        raise SchemaError(f"the axis {axis!r} is not a dimension of the data (got {sorted(sizes)})")
    schema = Schema()
    declared: set[tuple[str, str]] = set()

    def declare(dim: str, size: int | None, group: str) -> None:
        nonlocal schema
        if (group, dim) in declared:
            return
        declared.add((group, dim))
        chunk = chunks.get(dim) if size is None else min(chunks.get(dim) or size, size) or None
        schema = schema.with_dimension(dim, size=size, chunks=chunk, group=group or None)

    # A dimension of one size lives at the root; one of several sizes in each group using it.
    for dim, values in sizes.items():
        if dim == axis or len(values) == 1:
            declare(dim, None if dim == axis else next(iter(values)), "")
    for path, ds, attrs in nodes:
        if path:
            schema = schema.with_group(path, attrs=dict(attrs))
        else:
            schema = schema.with_attrs(dict(attrs))
        for dim, n in ds.sizes.items():
            if ("", str(dim)) not in declared:
                declare(str(dim), int(n), path)
        for name, var in ds.variables.items():
            attrs_ = {str(k): v for k, v in var.attrs.items() if k not in _NOT_STORED}
            schema = schema.with_variable(
                str(name),
                dtype=stored_dtype(var),
                dimensions=tuple(str(d) for d in var.dims),
                fill_value=_fill_value(var),
                attrs=attrs_,
                group=path or None,
            )
    return schema.build()


def encode_masked(obj: Any, dtype_of: Callable[[str], numpy.dtype[Any] | None]) -> Any:
    """``obj`` with variables xarray decoded from a masked integer encoded back (lazily).

    Only where the collection stores that integer (``dtype_of(path)``): NaN
    becomes the ``_FillValue`` and the values are cast to the stored dtype.
    Other variables, and other inputs, are returned as they are.
    """
    import xarray

    def encode(ds: xarray.Dataset, group: str) -> xarray.Dataset:
        from xarray.coding.variables import CFMaskCoder

        replaced = {}
        for name, var in ds.variables.items():
            want = dtype_of(f"{group}/{name}" if group else str(name))
            if want is None or want == var.dtype or stored_dtype(var) != want:
                continue
            encoded = CFMaskCoder().encode(var.copy(deep=False), name=name)
            replaced[name] = encoded.astype(want)
        if not replaced:
            return ds
        return ds.assign({k: v for k, v in replaced.items() if k not in ds.coords}).assign_coords(
            {k: v for k, v in replaced.items() if k in ds.coords}
        )

    if isinstance(obj, xarray.Dataset):
        return encode(obj, "")
    if isinstance(obj, xarray.DataTree):
        return xarray.DataTree.from_dict(
            {
                node.path: encode(node.to_dataset(inherit=False), node.path.strip("/"))
                for node in obj.subtree
            }
        )
    return obj
