"""Conversions between :class:`Dataset` and xarray (no data copied or computed)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import dask.array as da
import numpy

from ..errors import InvalidInputError

if TYPE_CHECKING:
    import xarray

    from ._dataset import Dataset, Group, Variable

__all__ = ["from_xarray", "to_xarray"]


def _variable_from_xarray(
    name: str, var: xarray.Variable, variable_cls: type[Variable]
) -> Variable:
    if var.chunks is None and not getattr(var, "_in_memory", True):
        # Lazily indexed by a backend (open_dataset(..., chunks=None)): reading it here
        # would run the backend's I/O wherever this is called, inside the library's
        # event loop for an insert (zarr: "Calling sync() from within a running loop").
        # As a dask array it is read by the tasks that need it.
        var = var.chunk()
    data: Any = var.data
    if not isinstance(data, numpy.ndarray | da.Array):
        # Index coordinates and other duck arrays: their numpy values.
        data = var.values
    attrs = _attrs(var.attrs)
    fill_value = var.encoding.get("_FillValue")
    attr_fill = attrs.pop("_FillValue", None)
    if fill_value is None:
        fill_value = attr_fill
    return variable_cls._new(str(name), data, tuple(str(d) for d in var.dims), attrs, fill_value)


def _attrs(attrs: Mapping[Any, Any]) -> dict[str, Any]:
    return {str(key): value for key, value in attrs.items()}


def _variables_from_xarray(ds: xarray.Dataset, variable_cls: type[Variable]) -> dict[str, Variable]:
    return {
        str(key): _variable_from_xarray(str(key), var, variable_cls)
        for key, var in ds.variables.items()
    }


def from_xarray[D: Dataset](
    cls: type[D],
    obj: xarray.Dataset | xarray.DataTree,
    group_cls: type[Group],
    variable_cls: type[Variable],
) -> D:
    """Build ``cls`` (a Dataset type) from an xarray Dataset or DataTree.

    The classes are given by the caller (this module never imports the data model).
    """
    import xarray

    if isinstance(obj, xarray.Dataset):
        return cls._new("/", _variables_from_xarray(obj, variable_cls), {}, _attrs(obj.attrs))
    if not isinstance(obj, xarray.DataTree):
        raise InvalidInputError(
            f"expected an xarray.Dataset or xarray.DataTree, got {type(obj).__name__}"
        )
    return cls._new("/", *_tree_parts(obj, group_cls, variable_cls))


def _tree_parts(
    node: xarray.DataTree, group_cls: type[Group], variable_cls: type[Variable]
) -> tuple[dict[str, Variable], dict[str, Group], dict[str, Any]]:
    variables = _variables_from_xarray(node.to_dataset(inherit=False), variable_cls)
    groups: dict[str, Group] = {}
    for name, child in node.children.items():
        groups[str(name)] = group_cls._new(str(name), *_tree_parts(child, group_cls, variable_cls))
    return variables, groups, _attrs(node.attrs)


def _group_to_xarray(group: Group, index: bool | None) -> xarray.Dataset:
    import xarray

    data_vars: dict[str, xarray.Variable] = {}
    indexed: dict[str, xarray.Variable] = {}
    plain: dict[str, xarray.Variable] = {}
    for name, var in group.variables.items():
        encoding = {} if var.fill_value is None else {"_FillValue": var.fill_value}
        xvar = xarray.Variable(var.dimensions, var.data, attrs=dict(var.attrs), encoding=encoding)
        if var.ndim == 1 and var.dimensions[0] == name:
            make_index = (not var.is_lazy) if index is None else index
            (indexed if make_index else plain)[name] = xvar
        else:
            data_vars[name] = xvar
    ds = xarray.Dataset(data_vars, coords=indexed, attrs=dict(group.attrs))
    if plain:
        ds = ds.assign_coords(xarray.Coordinates(plain, indexes={}))
    return ds


def _index_axis(ds: xarray.Dataset, name: str) -> xarray.Dataset:
    """``ds`` with ``name`` (1-D, numpy-backed) an indexed coordinate along its dimension."""
    if name in ds.xindexes:
        return ds
    # Named otherwise than its dimension (``time`` along ``num_lines``): a non-dimension
    # coordinate with its own pandas index, as ``set_xindex`` makes it.
    return ds.set_coords(name).set_xindex(name)


def to_xarray(
    dataset: Group, *, index: bool | None = None, axis: str | None = None
) -> xarray.Dataset | xarray.DataTree:
    """Convert a dataset: a DataTree when it has child groups, else a Dataset.

    ``axis`` names the variable (a path) to index along its dimension even when
    it is not named like it; nested groups of a DataTree inherit it.
    """
    import xarray

    axis_group, _, axis_name = (axis or "").rpartition("/")
    if not dataset.groups:
        ds = _group_to_xarray(dataset, index)
        return _index_axis(ds, axis_name) if axis_name and axis_name in ds.variables else ds
    nodes: dict[str, xarray.Dataset] = {}
    for path, group in dataset.walk_groups():
        node = _group_to_xarray(group, index)
        if axis_name and (path.strip("/") == axis_group) and axis_name in node.variables:
            node = _index_axis(node, axis_name)
        nodes["/" if path == "/" else "/" + path] = node
    return xarray.DataTree.from_dict(nodes)  # type: ignore[arg-type]
