"""Turn insert input into schema-checked columns, and columns back into datasets.

Input may be a :class:`~dask_zcollection.data.Dataset`, an ``xarray.Dataset``
/ ``DataTree`` or a mapping ``{variable path: array}``, numpy- or dask-backed.
Every check happens here, before anything is written: a bad insert fails
with an error naming the variable and leaves the collection untouched.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Collection, Mapping
from typing import Any

import numpy

from .data import Dataset, Variable
from .errors import InvalidInputError, SchemaError
from .schema import Schema

__all__ = ["Prepared", "check_axis", "columns_to_dataset", "conform_columns", "prepare_insert"]

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
        from ._infer import encode_masked

        # Variables xarray decoded from a masked integer the collection stores: back to it.
        return Dataset.from_xarray(
            encode_masked(data, lambda p: schema[p].dtype if p in schema else None)
        )
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
    """Accept the schema's dtype or one that casts to it safely (no value changes)."""
    if got == want:
        return
    ok = numpy.can_cast(got, want, casting="safe")
    if want.kind in "US" and got.kind == want.kind:
        ok = got.itemsize <= want.itemsize
    if not ok or got.kind in "OV" or (got.kind in "US") != (want.kind in "US"):
        raise SchemaError(f"variable {path!r}: dtype {got} cannot be stored as {want}")


def _unmask(block: Any, path: str, fill: Any, strict: bool) -> Any:
    """A masked array's data with ``fill`` where it is masked; refused without a fill."""
    mask = numpy.ma.getmaskarray(block)
    if not mask.any():
        return numpy.ma.getdata(block)
    if fill is None or strict:
        where = int(numpy.flatnonzero(mask)[0])
        why = "its values cannot be missing" if strict else "it has no fill value"
        raise SchemaError(
            f"variable {path!r}: {int(mask.sum())} masked value(s) (first at flat index "
            f"{where}) cannot be stored: {why}"
        )
    return numpy.ma.filled(block, fill)


def _check_exact(block: Any, out: Any, path: str, want: numpy.dtype[Any]) -> None:
    """Refuse integers a float cannot hold: numpy calls int64 -> float64 safe, yet it rounds
    above 2**53 (``2**60 + 1`` was stored as ``2**60``)."""
    mantissa = numpy.finfo(want).nmant + 1
    if block.dtype.itemsize * 8 <= mantissa:
        return
    big = (block > 2**mantissa) | (block < -(2**mantissa))
    if not big.any():
        return
    values, back = block[big], numpy.real(out[big])
    top = float(numpy.iinfo(block.dtype).max) + 1  # 2**63 or 2**64: outside, never exact
    inside = (back < top) & (back >= float(numpy.iinfo(block.dtype).min))
    exact = inside & (numpy.where(inside, back, 0).astype(block.dtype) == values)
    if not exact.all():
        first = values[~exact][0]
        raise SchemaError(
            f"variable {path!r}: {int((~exact).sum())} integer value(s) (first {first}) "
            f"cannot be stored as {want} exactly (it holds integers up to 2**{mantissa})"
        )


def _cast_block(block: Any, path: str, want: numpy.dtype[Any], fill: Any, strict: bool) -> Any:
    """One block as ``want``: masked values filled, a time outside ``want``'s range refused."""
    if isinstance(block, numpy.ma.MaskedArray):
        block = _unmask(block, path, fill, strict)
    if block.dtype == want:
        return block
    try:
        out = block.astype(want)
        if block.dtype.kind in "iu" and want.kind in "fc":
            _check_exact(block, out, path, want)
        return out
    except OverflowError as err:  # datetime64[s] beyond the [ns] range, ~1678..2262
        raise SchemaError(
            f"variable {path!r}: a value of dtype {block.dtype} is outside the range of {want}"
        ) from err
    except UnicodeDecodeError as err:  # bytes into a str variable: numpy decodes ASCII only
        raise SchemaError(
            f"variable {path!r}: bytes that are not ASCII cannot be stored as {want} ({err}); "
            "decode them first"
        ) from err


def _conform(
    path: str,
    data: Any,
    schema: Schema,
    axis: str,
    *,
    dimensions: tuple[str, ...] | None = None,
    strict: bool = False,
) -> Any:
    """Check one variable against the schema and return it in the schema's dtype.

    The one check of insert input and of merge results: dimensions (names
    when given, else their number), dtype (the schema's or a safe cast),
    fixed sizes; masked values become the fill value (refused without one,
    or when ``strict``); a cast that overflows is refused.
    """
    spec = schema[path]
    if dimensions is not None and dimensions != spec.dimensions:
        raise SchemaError(
            f"variable {path!r}: dimensions {dimensions} differ from the schema's {spec.dimensions}"
        )
    shape = tuple(data.shape)
    if len(shape) != len(spec.dimensions):
        raise SchemaError(
            f"variable {path!r}: {len(shape)} dimension(s) (shape {shape}), the schema has "
            f"{spec.dimensions}"
        )
    _check_dtype(path, data.dtype, spec.dtype)
    dims = schema.variable_dimensions(path)
    for n, (name, dim) in zip(shape, dims.items(), strict=True):
        if dim.size is not None and name != axis and n != dim.size:
            raise SchemaError(
                f"variable {path!r}: dimension {name!r} has size {n}, schema says {dim.size}"
            )
    if isinstance(data, numpy.ndarray):
        return _cast_block(data, path, spec.dtype, spec.fill_value, strict)
    masked = isinstance(getattr(data, "_meta", None), numpy.ma.MaskedArray)
    if data.dtype == spec.dtype and not masked:
        return data
    # Dask: the same conversion, block by block, when the graph runs.
    return data.map_blocks(
        _cast_block,
        path,
        spec.dtype,
        spec.fill_value,
        strict,
        dtype=spec.dtype,
        meta=numpy.empty((0,) * data.ndim, spec.dtype),
    )


def check_axis(path: str, values: numpy.ndarray) -> None:
    """Refuse missing values (NaT, NaN) in the axis variable.

    The catalog records each partition's axis range: one NaT or NaN would
    hide the partition from every time filter.

    Raises
    ------
    SchemaError
        Naming the variable, the count and the first position.
    """
    if values.dtype.kind in "mM":
        missing = numpy.isnat(values)
    elif values.dtype.kind in "fc":
        missing = numpy.isnan(values)
    else:
        return
    if missing.any():
        first = int(numpy.flatnonzero(missing)[0])
        what = "NaT" if values.dtype.kind in "mM" else "NaN"
        raise SchemaError(
            f"axis variable {path!r} holds {int(missing.sum())} {what} value(s) (first at row "
            f"{first}): every row needs an axis value"
        )


def prepare_insert(
    data: InsertLike, schema: Schema, axis: str, *, keys: Collection[str] = ()
) -> Prepared:
    """Validate ``data`` against ``schema`` and split it into columns.

    Parameters
    ----------
    keys
        Variables that cannot hold missing values (the axis and partitioning
        variables): a masked value there is refused even with a fill value.

    Raises
    ------
    SchemaError
        On a missing or unknown variable, a wrong dtype, wrong dimensions,
        an inconsistent length, a masked value without a fill value or a
        time outside the schema dtype's range; the message names the variable.
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
        array = _conform(
            path, var.data, schema, axis, dimensions=var.dimensions, strict=path in keys
        )
        if expected[path].immutable:
            immutable[path] = array
            continue
        n = var.shape[0]
        if n != n:  # NaN: a dask array of unknown chunk sizes (e.g. after boolean indexing)
            raise SchemaError(
                f"variable {path!r}: its dask chunk sizes along {axis!r} are unknown (NaN, e.g. "
                "after boolean indexing); call .compute_chunk_sizes() on it first"
            )
        if rows is None:
            rows = n
        elif n != rows:
            raise SchemaError(f"variable {path!r} has {n} rows along {axis!r}, others have {rows}")
        columns[path] = array
    return Prepared(columns=columns, immutable=immutable, rows=rows or 0)


def conform_columns(
    columns: Mapping[str, Any], schema: Schema, axis: str, *, keys: Collection[str] = ()
) -> dict[str, numpy.ndarray]:
    """Check every partitioned variable of ``columns`` as :func:`prepare_insert` checks input.

    Used on a merge strategy's result: exactly the schema's partitioned
    variables, each as insert input would be accepted, the same row count.

    Raises
    ------
    SchemaError
        Naming the variable.
    """
    expected = {p for p, v in schema.walk() if not v.immutable}
    got = set(columns)
    if got != expected:
        raise SchemaError(
            f"variables differ from the schema's partitioned ones: missing "
            f"{sorted(expected - got)}, unexpected {sorted(got - expected)}"
        )
    out: dict[str, numpy.ndarray] = {}
    rows: int | None = None
    for path, value in columns.items():
        array = _conform(path, numpy.asanyarray(value), schema, axis, strict=path in keys)
        if rows is None:
            rows = len(array)
        elif len(array) != rows:
            raise SchemaError(f"variable {path!r} has {len(array)} rows, others have {rows}")
        out[path] = array
    return out


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
