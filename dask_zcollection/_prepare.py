"""Turn insert input into schema-checked columns, and columns back into datasets.

Input may be a :class:`~dask_zcollection.data.Dataset`, an ``xarray.Dataset``
/ ``DataTree`` or a mapping ``{variable path: array}``, numpy- or dask-backed.
Every check happens here, before anything is written: a bad insert fails
with an error naming the variable and leaves the collection untouched.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

import numpy

from .data import Dataset, Variable
from .errors import InvalidInputError, SchemaError
from .schema import Schema

__all__ = ["Prepared", "columns_to_dataset", "prepare_insert"]

InsertLike = Any  # Dataset | xarray.Dataset | xarray.DataTree | Mapping[str, ArrayLike]


@dataclasses.dataclass(frozen=True, slots=True)
class Prepared:
    """Validated insert input.

    Attributes
    ----------
    columns : dict
        Partitioned variables by path; first dimension is the partition axis.
    immutable : dict
        Immutable variables carried by the input, by path.
    rows : int
        Number of rows along the partition axis.
    """

    columns: dict[str, Any]
    immutable: dict[str, Any]
    rows: int


def _to_dataset(data: InsertLike, schema: Schema) -> Dataset:
    if isinstance(data, Dataset):
        return data
    mod = type(data).__module__
    if mod.startswith("xarray"):
        return Dataset.from_xarray(data)
    if isinstance(data, Mapping):
        unknown = sorted(str(p) for p in data if p not in schema)
        if unknown:
            raise SchemaError(f"variable(s) {unknown} are not in the collection schema")

        def dims(path: str) -> tuple[str, ...]:
            return schema[path].dimensions

        try:
            return Dataset.from_mapping(data, dimensions=dims)
        except InvalidInputError as err:  # e.g. wrong number of dimensions: name the variable
            raise SchemaError(str(err)) from err
    raise InvalidInputError(
        f"cannot insert a {type(data).__name__}: pass a dask_zcollection.Dataset, an "
        "xarray.Dataset/DataTree or a mapping {variable path: array}"
    )


def _check_dtype(path: str, got: numpy.dtype[Any], want: numpy.dtype[Any]) -> None:
    if got == want:
        return
    ok = numpy.can_cast(got, want, casting="safe")
    if want.kind in "US" and got.kind == want.kind:
        ok = got.itemsize <= want.itemsize
    if not ok or got.kind in "OV" or (got.kind in "US") != (want.kind in "US"):
        raise SchemaError(f"variable {path!r}: dtype {got} cannot be stored as {want}")


def prepare_insert(data: InsertLike, schema: Schema, axis: str) -> Prepared:
    """Validate ``data`` against ``schema`` and split it into columns.

    Raises
    ------
    SchemaError
        On a missing or unknown variable, a wrong dtype, wrong dimensions or
        an inconsistent length; the message names the variable.
    """
    dataset = _to_dataset(data, schema)
    given = dict(dataset.walk())
    expected = schema.variables
    unknown = sorted(set(given) - set(expected))
    if unknown:
        raise SchemaError(f"variable(s) {unknown} are not in the collection schema")
    partitioned = {p for p, v in expected.items() if not v.immutable}
    missing = sorted(partitioned - set(given))
    if missing:
        raise SchemaError(f"variable(s) {missing} are missing from the inserted data")
    columns: dict[str, Any] = {}
    immutable: dict[str, Any] = {}
    rows: int | None = None
    for path, var in given.items():
        spec = expected[path]
        if var.dimensions != spec.dimensions:
            raise SchemaError(
                f"variable {path!r}: dimensions {var.dimensions} differ from the schema's "
                f"{spec.dimensions}"
            )
        _check_dtype(path, var.dtype, spec.dtype)
        dims = schema.variable_dimensions(path)
        for n, (name, dim) in zip(var.shape, dims.items(), strict=True):
            if dim.size is not None and name != axis and n != dim.size:
                raise SchemaError(
                    f"variable {path!r}: dimension {name!r} has size {n}, schema says {dim.size}"
                )
        array = var.data if var.dtype == spec.dtype else var.data.astype(spec.dtype)
        if spec.immutable:
            immutable[path] = array
            continue
        n = var.shape[0]
        if rows is None:
            rows = n
        elif n != rows:
            raise SchemaError(f"variable {path!r} has {n} rows along {axis!r}, others have {rows}")
        columns[path] = array
    return Prepared(columns=columns, immutable=immutable, rows=rows or 0)


def columns_to_dataset(
    schema: Schema, columns: Mapping[str, Any], immutable: Mapping[str, Any] | None = None
) -> Dataset:
    """Build a :class:`Dataset` (groups, attributes, fill values) from arrays by path."""
    variables: dict[str, Variable] = {}
    for path, spec in schema.walk():
        source = columns if not spec.immutable else (immutable or {})
        if path in source:
            variables[path] = Variable(
                spec.name, source[path], spec.dimensions, dict(spec.attrs), spec.fill_value
            )
    empty = Dataset(attrs=dict(schema.root.attrs))
    ds = empty.with_variables(variables)
    # Carry the attributes of nested groups (with_variables creates them bare).
    group_attrs = {p: g.attrs for p, g in schema.walk_groups() if p and g.attrs}
    if group_attrs:
        ds = _with_group_attrs(ds, group_attrs)
    return ds


def _with_group_attrs(ds: Dataset, attrs: Mapping[str, Mapping[str, Any]]) -> Dataset:
    def walk(group: Any, prefix: str) -> Any:
        children = {name: walk(child, f"{prefix}{name}/") for name, child in group.groups.items()}
        own = attrs.get(prefix.rstrip("/"))
        return type(group)(group.name, group.variables, children, {**group.attrs, **(own or {})})

    return walk(ds, "")  # type: ignore[no-any-return]
