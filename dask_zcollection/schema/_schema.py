"""Immutable schema of a collection: dimensions, variables, nested groups.

A :class:`Schema` is built with a fluent builder whose every step returns a
new immutable value::

    schema = (
        Schema()
        .with_dimension("time", chunks=4096)
        .with_variable("time", dtype="datetime64[ns]", dimensions=("time",))
        .with_group("/data_01/ku", attrs={"band": "Ku"})
        .with_dimension("range", size=240, group="/data_01/ku")
        .with_variable("power", dtype="float32", dimensions=("time", "range"), group="/data_01/ku")
        .build()
    )

Dimensions are inherited: a variable may use the dimensions declared in its
own group or in any ancestor group.
"""

from __future__ import annotations

import dataclasses
import json
import math
import unicodedata
from collections.abc import Iterator, Mapping, Sequence
from typing import Any, Self

import numpy

from ..errors import SchemaError, VariableNotFoundError

__all__ = [
    "DEFAULT_CHUNK_BYTES",
    "FORMAT_VERSION",
    "Codecs",
    "Dimension",
    "GroupSchema",
    "Schema",
    "VariableSchema",
    "check_node_name",
    "normalize_group_path",
]

#: Version of the schema / collection JSON written by this library.
FORMAT_VERSION = 1

#: Default compressor: blosc lz4 with byte shuffle. On altimetry-like float data it
#: decompresses ~3x faster than zstd-3 and stores smaller (docs/benchmarks.md);
#: ``typesize`` is filled in from each variable's dtype by zarr.
_DEFAULT_COMPRESSOR: dict[str, Any] = {
    "name": "blosc",
    "configuration": {"cname": "lz4", "clevel": 5, "shuffle": "shuffle", "blocksize": 0},
}
#: Whether new variables end their chunks with Zarr v3's ``crc32c`` codec (and reads
#: verify it). Off: on a quiet host it cost 12-21 % of write and up to 20 % of read
#: throughput from the page cache, above the 5 % bound (docs/benchmarks.md,
#: "Checksums"); ``Schema.with_checksums(True)`` turns them on. The record of the
#: chunks written (missing chunks are damage) is kept either way.
DEFAULT_CHECKSUM = False
#: Default chunk size (bytes of the widest variable) along the partitioned dimension.
DEFAULT_CHUNK_BYTES = 16 * 1024 * 1024


#: Keys a Zarr v3 node stores beside its children: a child of that name would alias them.
_RESERVED_NAMES = frozenset({"zarr.json"})


def check_node_name(name: Any, what: str) -> str:
    """Check that ``name`` can be one Zarr v3 node name, and return it.

    Zarr v3's rules (not empty, no ``/``, not only periods such as ``.`` or
    ``..``, no leading ``__``), plus ours: no control character (NUL
    included) or unpaired surrogate, no ``\\`` (a path separator on
    Windows), and not ``zarr.json`` (the key of the parent's metadata).
    Such names would escape their partition, alias another node or break
    the store's paths.

    Parameters
    ----------
    name
        The candidate name.
    what
        What is named (``"variable"``, ``"group"``...), for the message.

    Raises
    ------
    SchemaError
        Naming ``name`` and the rule it breaks.
    """
    if not isinstance(name, str):
        raise SchemaError(f"invalid {what} name {name!r}: a name must be a str")
    why = None
    if not name:
        why = "a name cannot be empty"
    elif "/" in name or "\\" in name:
        why = "'/' and '\\' separate paths; use group= for nested groups"
    elif not name.strip("."):
        why = "a name made only of periods ('.', '..') escapes its group"
    elif name.startswith("__"):
        why = "names starting with '__' are reserved by Zarr"
    elif name in _RESERVED_NAMES:
        why = f"{name!r} is the key of a Zarr node's metadata"
    else:
        bad = next((c for c in name if unicodedata.category(c) in ("Cc", "Cs")), None)
        if bad is not None:
            why = f"control character or unpaired surrogate {bad!r} at {name.index(bad)}"
    if why is not None:
        raise SchemaError(f"invalid {what} name {name!r}: {why}")
    return name


def _folded(name: str) -> str:
    """The form in which two names alias on a case-insensitive or normalising filesystem."""
    return unicodedata.normalize("NFKC", name).casefold()


def normalize_group_path(group: str | None) -> str:
    """Return ``group`` as ``"a/b"`` (no leading or trailing slash; root is ``""``)."""
    if group is None:
        return ""
    if not isinstance(group, str):
        raise SchemaError(f"invalid group path {group!r}: a path must be a str")
    parts = [p for p in group.strip().split("/") if p]
    for p in parts:
        if p.startswith("_"):
            # Beside partitions, names starting with '_' are the library's (_catalog...).
            raise SchemaError(f"invalid group name {p!r} in {group!r}: '_' starts reserved names")
        check_node_name(p, "group")
    return "/".join(parts)


def _json_fill(value: Any) -> Any:
    """Encode a fill value for JSON the way zarr v3 does (NaN/Infinity as strings)."""
    if value is None:
        return None
    if isinstance(value, numpy.datetime64 | numpy.timedelta64):
        # The integer count of the dtype's unit (NaT is the minimum int64), as zarr v3.
        return int(numpy.array(value).view("int64"))
    if isinstance(value, numpy.generic):
        value = value.item()
    if isinstance(value, complex):
        return [_json_fill(value.real), _json_fill(value.imag)]
    if isinstance(value, float):
        if math.isnan(value):
            return "NaN"
        if math.isinf(value):
            return "Infinity" if value > 0 else "-Infinity"
    if isinstance(value, bytes):
        return value.decode("latin-1")
    return value


def _decode_fill(value: Any, dtype: numpy.dtype[Any]) -> Any:
    """Decode a JSON fill value into a numpy scalar of ``dtype``."""
    if value is None:
        return None
    if isinstance(value, str) and dtype.kind in "fc":
        value = {"NaN": numpy.nan, "Infinity": numpy.inf, "-Infinity": -numpy.inf}.get(value, value)
    if isinstance(value, list) and dtype.kind == "c" and len(value) == 2:
        real, imag = (_decode_fill(v, numpy.dtype("float64")) for v in value)
        value = complex(real, imag)
    if dtype.kind in "mM":
        if isinstance(value, int):
            return numpy.array(value, dtype="int64").view(dtype)[()]
        return numpy.array(value, dtype=dtype)[()]
    try:
        decoded = numpy.array(value, dtype=dtype)[()]
    except (TypeError, ValueError, OverflowError) as err:  # 1000 into int8 overflows
        raise SchemaError(f"fill value {value!r} does not fit dtype {dtype}") from err
    if isinstance(value, float) and dtype.kind in "iub" and decoded != value:
        # numpy truncates 1.5 to 1: the fill value stored would not be the one given.
        raise SchemaError(f"fill value {value!r} does not fit dtype {dtype}")
    return decoded


def json_value(value: Any) -> Any:
    """``value`` with numpy scalars and arrays as the Python values JSON holds."""
    if isinstance(value, numpy.ndarray):
        return [json_value(v) for v in value.tolist()]
    if isinstance(value, numpy.generic):
        return json_value(value.item())
    if isinstance(value, Mapping):
        return {k: json_value(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [json_value(v) for v in value]
    return value


def _json_attrs(attrs: Mapping[str, Any], owner: str) -> dict[str, Any]:
    """Attributes as they are stored (JSON); netCDF's numpy scalars and arrays as values.

    Raises
    ------
    SchemaError
        Naming ``owner`` and the attribute that JSON cannot hold (checked here,
        not when the descriptor is written: nothing is written first).
    """
    out = {}
    for key, value in attrs.items():
        if not isinstance(key, str):
            raise SchemaError(f"{owner}: attribute names must be strings, got {key!r}")
        plain = json_value(value)
        try:
            json.dumps(plain)
        except (TypeError, ValueError) as err:
            raise SchemaError(
                f"{owner}: attribute {key!r} = {value!r} cannot be stored as JSON ({err})"
            ) from err
        out[key] = plain
    return out


@dataclasses.dataclass(frozen=True, slots=True)
class Codecs:
    """Zarr v3 codec chain of a variable.

    Attributes
    ----------
    array_to_array : tuple of dict
        Filters (zarr v3 codec JSON), applied first.
    array_to_bytes : dict
        The serializer (``bytes`` by default).
    bytes_to_bytes : tuple of dict
        Compressors, applied last. Blosc lz4 with byte shuffle by default
        (``typesize`` from the dtype).
    sharded : bool
        Whether arrays are sharded (shard shape from the dimensions' ``shards``).
    shard_target_bytes : int
        Target size of a shard when a dimension gives no explicit shard size.
    checksum : bool
        Whether every chunk ends with Zarr v3's ``crc32c`` codec, appended
        after ``bytes_to_bytes`` when the chain does not end with it (off by
        default, ``DEFAULT_CHECKSUM``; with it, reads also detect bit flips and
        swapped chunks). ``Codecs(checksum=True)``, ``{"checksum": True, ...}`` or
        :meth:`Schema.with_checksums` turn it on. A descriptor written without
        this field (reference format, older versions) means ``False``.
    """

    array_to_array: tuple[dict[str, Any], ...] = ()
    array_to_bytes: dict[str, Any] = dataclasses.field(
        default_factory=lambda: {"name": "bytes", "configuration": {"endian": "little"}}
    )
    bytes_to_bytes: tuple[dict[str, Any], ...] = (_DEFAULT_COMPRESSOR,)
    sharded: bool = False
    shard_target_bytes: int = 128 * 1024 * 1024
    checksum: bool = DEFAULT_CHECKSUM

    def __hash__(self) -> int:
        return hash(repr(self.to_dict()))

    def to_dict(self) -> dict[str, Any]:
        """Return the JSON form (as written in ``_zcollection.json``)."""
        return {
            "array_to_array": [dict(c) for c in self.array_to_array],
            "array_to_bytes": dict(self.array_to_bytes),
            "bytes_to_bytes": [dict(c) for c in self.bytes_to_bytes],
            "sharded": self.sharded,
            "shard_target_bytes": self.shard_target_bytes,
            "checksum": self.checksum,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any] | None) -> Codecs:
        """Build from the JSON form; ``None`` gives the defaults."""
        if data is None:
            return cls()
        return cls(
            array_to_array=tuple(data.get("array_to_array", ())),
            array_to_bytes=dict(data.get("array_to_bytes", cls().array_to_bytes)),
            bytes_to_bytes=tuple(data.get("bytes_to_bytes", ())),
            sharded=bool(data.get("sharded", False)),
            shard_target_bytes=int(data.get("shard_target_bytes", 128 * 1024 * 1024)),
            # Absent: written before checksums existed; keep writing such arrays as they were.
            checksum=bool(data.get("checksum", False)),
        )

    @classmethod
    def coerce(cls, value: Codecs | Mapping[str, Any] | Sequence[Any] | None) -> Codecs:
        """Accept a :class:`Codecs`, its JSON form, a list of compressors, or ``None``."""
        if value is None or isinstance(value, Codecs):
            return value or cls()
        if not isinstance(value, Mapping | Sequence) or isinstance(value, str | bytes):
            raise SchemaError(f"cannot interpret codecs {value!r}")
        if isinstance(value, Mapping):
            if "name" in value:  # a single compressor
                return cls(bytes_to_bytes=(dict(value),))
            return cls.from_dict({"checksum": DEFAULT_CHECKSUM, **value})  # user input
        compressors = []
        for item in value:
            if isinstance(item, Mapping):
                compressors.append(dict(item))
            elif hasattr(item, "to_dict"):
                compressors.append(dict(item.to_dict()))
            else:
                raise SchemaError(f"cannot interpret codec {item!r}")
        return cls(bytes_to_bytes=tuple(compressors))


@dataclasses.dataclass(frozen=True, slots=True)
class Dimension:
    """A named dimension.

    Attributes
    ----------
    name : str
        Dimension name.
    size : int or None
        Fixed size, or ``None`` for the partitioned (growing) dimension.
    chunks : int or None
        Chunk length along this dimension (``None``: the whole dimension).
    shards : int or None
        Shard length along this dimension (a multiple of ``chunks``), or ``None``.
    """

    name: str
    size: int | None = None
    chunks: int | None = None
    shards: int | None = None

    def to_dict(self) -> dict[str, Any]:
        """Return the JSON form."""
        return {"name": self.name, "size": self.size, "chunks": self.chunks, "shards": self.shards}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Dimension:
        """Build from the JSON form."""
        return cls(data["name"], data.get("size"), data.get("chunks"), data.get("shards"))


@dataclasses.dataclass(frozen=True, slots=True)
class VariableSchema:
    """Declaration of one variable.

    Attributes
    ----------
    name : str
        Variable name (leaf, no ``/``).
    dtype : numpy.dtype
        Data type.
    dimensions : tuple of str
        Dimension names, declared in the variable's group or an ancestor.
    fill_value : Any
        Fill value (a numpy scalar of ``dtype``) or ``None``.
    codecs : Codecs
        Zarr v3 codec chain.
    attrs : dict
        Attributes.
    immutable : bool
        ``True`` when the variable does not span the partitioned dimension; it
        is stored once, in ``_immutable/``. Set by :meth:`Schema.with_axis`.
    """

    name: str
    dtype: numpy.dtype[Any]
    dimensions: tuple[str, ...]
    fill_value: Any = None
    codecs: Codecs = dataclasses.field(default_factory=Codecs)
    attrs: dict[str, Any] = dataclasses.field(default_factory=dict)
    immutable: bool = False

    def __hash__(self) -> int:
        return hash((self.name, str(self.dtype), self.dimensions))

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, VariableSchema):
            return NotImplemented
        return self.to_dict() == other.to_dict()

    def to_dict(self) -> dict[str, Any]:
        """Return the JSON form (the fields of the reference format)."""
        return {
            "name": self.name,
            "dtype": self.dtype.str,
            "dimensions": list(self.dimensions),
            "fill_value": _json_fill(self.fill_value),
            "codecs": self.codecs.to_dict(),
            "attrs": dict(self.attrs),
            "role": "user",
            "immutable": self.immutable,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> VariableSchema:
        """Build from the JSON form."""
        dtype = _as_dtype(data["dtype"], data.get("name", "?"))
        return cls(
            name=data["name"],
            dtype=dtype,
            dimensions=tuple(data["dimensions"]),
            fill_value=_decode_fill(data.get("fill_value"), dtype),
            codecs=Codecs.from_dict(data.get("codecs")),
            attrs=dict(data.get("attrs") or {}),
            immutable=bool(data.get("immutable", False)),
        )


@dataclasses.dataclass(frozen=True, slots=True)
class GroupSchema:
    """A group: its own dimensions, variables, child groups and attributes."""

    name: str = "/"
    dimensions: tuple[Dimension, ...] = ()
    variables: tuple[VariableSchema, ...] = ()
    groups: tuple[GroupSchema, ...] = ()
    attrs: dict[str, Any] = dataclasses.field(default_factory=dict)

    def __hash__(self) -> int:
        return hash(repr(self.to_dict()))

    def to_dict(self) -> dict[str, Any]:
        """Return the JSON form."""
        return {
            "name": self.name,
            "dimensions": [d.to_dict() for d in self.dimensions],
            "variables": [v.to_dict() for v in self.variables],
            "groups": [g.to_dict() for g in self.groups],
            "attrs": dict(self.attrs),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> GroupSchema:
        """Build from the JSON form."""
        return cls(
            name=data.get("name", "/"),
            dimensions=tuple(Dimension.from_dict(d) for d in data.get("dimensions", ())),
            variables=tuple(VariableSchema.from_dict(v) for v in data.get("variables", ())),
            groups=tuple(GroupSchema.from_dict(g) for g in data.get("groups", ())),
            attrs=dict(data.get("attrs") or {}),
        )

    def child(self, name: str) -> GroupSchema | None:
        """Return the direct child group called ``name``, if any."""
        for g in self.groups:
            if g.name == name:
                return g
        return None


def _as_dtype(dtype: Any, name: str) -> numpy.dtype[Any]:
    try:
        result = numpy.dtype(dtype)
    except (TypeError, ValueError) as err:
        raise SchemaError(f"variable {name!r}: invalid dtype {dtype!r}") from err
    if result.kind in "OV" or result.hasobject:
        raise SchemaError(f"variable {name!r}: unsupported dtype {result} (object/void)")
    return result


def _replace_group(root: GroupSchema, path: str, fn: Any, *, create: bool = False) -> GroupSchema:
    """Return ``root`` with the group at ``path`` replaced by ``fn(group)``."""
    if not path:
        return fn(root)  # type: ignore[no-any-return]
    head, _, rest = path.partition("/")
    child = root.child(head)
    if child is None:
        if not create:
            raise SchemaError(f"group '/{path}' is not declared; add it with with_group() first")
        child = GroupSchema(name=head)
        groups = (*root.groups, _replace_group(child, rest, fn, create=True))
    else:
        groups = tuple(
            _replace_group(g, rest, fn, create=create) if g.name == head else g for g in root.groups
        )
    return dataclasses.replace(root, groups=groups)


@dataclasses.dataclass(frozen=True, slots=True)
class Schema:
    """The immutable schema of a collection (a tree of groups).

    Build it with the fluent ``with_*`` methods (each returns a new schema) and
    finish with :meth:`build`, which validates the whole tree.

    Attributes
    ----------
    root : GroupSchema
        The root group.
    format_version : int
        Version of the JSON form.
    """

    root: GroupSchema = dataclasses.field(default_factory=GroupSchema)
    format_version: int = FORMAT_VERSION

    # -- builder -----------------------------------------------------------------
    def with_dimension(
        self,
        name: str,
        *,
        size: int | None = None,
        chunks: int | None = None,
        shards: int | None = None,
        group: str | None = None,
    ) -> Schema:
        """Declare a dimension in ``group`` (root by default)."""
        check_node_name(name, "dimension")
        for field, value in (("size", size), ("chunks", chunks), ("shards", shards)):
            if value is not None and (isinstance(value, bool) or not isinstance(value, int)):
                raise SchemaError(f"dimension {name!r}: {field} must be an int, got {value!r}")
        dim = Dimension(name, size, chunks, shards)
        path = normalize_group_path(group)

        def add(g: GroupSchema) -> GroupSchema:
            if any(d.name == name for d in g.dimensions):
                raise SchemaError(f"dimension {name!r} is declared twice in group '/{path}'")
            return dataclasses.replace(g, dimensions=(*g.dimensions, dim))

        return dataclasses.replace(self, root=_replace_group(self.root, path, add))

    def with_variable(
        self,
        name: str,
        *,
        dtype: Any,
        dimensions: Sequence[str],
        fill_value: Any = None,
        codecs: Codecs | Mapping[str, Any] | Sequence[Any] | None = None,
        attrs: Mapping[str, Any] | None = None,
        group: str | None = None,
    ) -> Schema:
        """Declare a variable in ``group`` (root by default)."""
        check_node_name(name, "variable")
        np_dtype = _as_dtype(dtype, name)
        if isinstance(dimensions, str):
            dimensions = (dimensions,)
        if not isinstance(dimensions, Sequence) or not all(isinstance(d, str) for d in dimensions):
            raise SchemaError(
                f"variable {name!r}: dimensions must be a sequence of names, got {dimensions!r}"
            )
        if attrs is not None and not isinstance(attrs, Mapping):
            raise SchemaError(f"variable {name!r}: attrs must be a mapping, got {attrs!r}")
        if np_dtype.kind in "mM" and isinstance(fill_value, numpy.datetime64 | numpy.timedelta64):
            fill_value = fill_value.astype(np_dtype)  # the JSON form counts units of the dtype
        try:
            fill = None if fill_value is None else _decode_fill(_json_fill(fill_value), np_dtype)
        except SchemaError as err:
            raise SchemaError(f"variable {name!r}: {err}") from err
        var = VariableSchema(
            name=name,
            dtype=np_dtype,
            dimensions=tuple(dimensions),
            fill_value=fill,
            codecs=Codecs.coerce(codecs),
            attrs=_json_attrs(attrs or {}, f"variable {name!r}"),
        )
        path = normalize_group_path(group)

        def add(g: GroupSchema) -> GroupSchema:
            if any(v.name == name for v in g.variables) or g.child(name) is not None:
                raise SchemaError(f"variable {name!r} is declared twice in group '/{path}'")
            return dataclasses.replace(g, variables=(*g.variables, var))

        return dataclasses.replace(self, root=_replace_group(self.root, path, add))

    def with_group(self, path: str, *, attrs: Mapping[str, Any] | None = None) -> Schema:
        """Declare a (possibly nested) group, creating its parents as needed."""
        norm = normalize_group_path(path)
        if attrs is not None and not isinstance(attrs, Mapping):
            raise SchemaError(f"group {path!r}: attrs must be a mapping, got {attrs!r}")
        if not norm:
            return self.with_attrs(attrs or {})
        plain = _json_attrs(attrs or {}, f"group {path!r}")

        def set_attrs(g: GroupSchema) -> GroupSchema:
            return dataclasses.replace(g, attrs={**g.attrs, **plain})

        return dataclasses.replace(
            self, root=_replace_group(self.root, norm, set_attrs, create=True)
        )

    def with_attrs(self, attrs: Mapping[str, Any], *, group: str | None = None) -> Schema:
        """Set attributes of ``group`` (root by default)."""
        if not isinstance(attrs, Mapping):
            raise SchemaError(f"attrs must be a mapping, got {attrs!r}")
        plain = _json_attrs(attrs, f"group {group or '/'!r}")

        def set_attrs(g: GroupSchema) -> GroupSchema:
            return dataclasses.replace(g, attrs={**g.attrs, **plain})

        path = normalize_group_path(group)
        return dataclasses.replace(self, root=_replace_group(self.root, path, set_attrs))

    def build(self) -> Schema:
        """Validate the whole tree and return the schema.

        Raises
        ------
        SchemaError
            On an unknown dimension, a duplicate name, a bad dtype or fill value.
        """
        self._validate(self.root, "", {})
        return self

    def _validate(self, group: GroupSchema, path: str, inherited: dict[str, Dimension]) -> None:
        dims = dict(inherited)
        if path:  # the root's name is "/"
            check_node_name(group.name, "group")
            if group.name.startswith("_"):
                raise SchemaError(f"invalid group name {group.name!r}: '_' starts reserved names")
        children: dict[str, str] = {}
        for child in (*(v.name for v in group.variables), *(g.name for g in group.groups)):
            check_node_name(child, "variable or group")
            # 'SSH' and 'ssh' are one directory on macOS and Windows filesystems.
            other = children.setdefault(_folded(child), child)
            if other != child:
                raise SchemaError(
                    f"names {other!r} and {child!r} in group '/{path}' differ only by case "
                    "or Unicode normalisation: they would share one path on some stores"
                )
        for d in group.dimensions:
            check_node_name(d.name, "dimension")
            for field in ("size", "chunks", "shards"):
                value = getattr(d, field)
                if value is not None and (isinstance(value, bool) or not isinstance(value, int)):
                    raise SchemaError(
                        f"dimension {d.name!r}: {field} must be an int, got {value!r}"
                    )
            if d.size is not None and d.size < 0:
                raise SchemaError(f"dimension {d.name!r}: negative size {d.size}")
            if d.chunks is not None and d.chunks <= 0:
                raise SchemaError(f"dimension {d.name!r}: chunks must be positive")
            if d.shards is not None and (d.chunks is None or d.shards % d.chunks):
                raise SchemaError(f"dimension {d.name!r}: shards must be a multiple of chunks")
            dims[d.name] = d
        names: set[str] = set()
        for v in group.variables:
            vpath = f"{path}/{v.name}" if path else v.name
            if v.name in names:
                raise SchemaError(f"variable {vpath!r} is declared twice")
            names.add(v.name)
            if len(set(v.dimensions)) != len(v.dimensions):
                raise SchemaError(f"variable {vpath!r}: repeated dimension in {v.dimensions}")
            for dname in v.dimensions:
                if dname not in dims:
                    raise SchemaError(
                        f"variable {vpath!r} uses unknown dimension {dname!r} "
                        f"(declared here: {sorted(dims)})"
                    )
        for g in group.groups:
            if g.name in names:
                raise SchemaError(f"group '/{path}/{g.name}' has the name of a variable")
            self._validate(g, f"{path}/{g.name}" if path else g.name, dims)

    # -- queries -------------------------------------------------------------------
    def walk(self) -> Iterator[tuple[str, VariableSchema]]:
        """Yield ``(path, variable)`` for every variable, root first, depth-first."""

        def rec(g: GroupSchema, prefix: str) -> Iterator[tuple[str, VariableSchema]]:
            for v in g.variables:
                yield f"{prefix}{v.name}", v
            for c in g.groups:
                yield from rec(c, f"{prefix}{c.name}/")

        yield from rec(self.root, "")

    def walk_groups(self) -> Iterator[tuple[str, GroupSchema]]:
        """Yield ``(path, group)`` for every group; the root's path is ``""``."""

        def rec(g: GroupSchema, path: str) -> Iterator[tuple[str, GroupSchema]]:
            yield path, g
            for c in g.groups:
                yield from rec(c, f"{path}/{c.name}" if path else c.name)

        yield from rec(self.root, "")

    @property
    def variables(self) -> dict[str, VariableSchema]:
        """Every variable by path (``"ssh"``, ``"data_01/ku/power"``)."""
        return dict(self.walk())

    def __getitem__(self, path: str) -> VariableSchema:
        key = path.strip("/")
        for p, v in self.walk():
            if p == key:
                return v
        raise VariableNotFoundError(
            f"variable {path!r} is not in the schema (known: {[p for p, _ in self.walk()]})"
        )

    def __contains__(self, path: object) -> bool:
        return isinstance(path, str) and any(p == path.strip("/") for p, _ in self.walk())

    def dimensions(self, group: str = "") -> dict[str, Dimension]:
        """Dimensions visible from ``group`` (its own and inherited)."""
        dims: dict[str, Dimension] = {}
        node: GroupSchema | None = self.root
        parts = [p for p in group.split("/") if p]
        while node is not None:
            dims.update({d.name: d for d in node.dimensions})
            if not parts:
                break
            node = node.child(parts.pop(0))
        return dims

    def all_dimensions(self) -> dict[str, Dimension]:
        """Every dimension of the tree by name (inner declarations win)."""
        dims: dict[str, Dimension] = {}
        for _, g in self.walk_groups():
            dims.update({d.name: d for d in g.dimensions})
        return dims

    def variable_dimensions(self, path: str) -> dict[str, Dimension]:
        """The dimension declarations of the variable at ``path``, in order."""
        group = path.rpartition("/")[0]
        dims = self.dimensions(group)
        return {d: dims[d] for d in self[path].dimensions}

    def with_axis(self, dimension: str) -> Schema:
        """Return a copy whose variables are flagged immutable when they do not span ``dimension``.

        Raises
        ------
        SchemaError
            When ``dimension`` is unknown, or a variable spans it other than first.
        """
        if dimension not in self.all_dimensions():
            raise SchemaError(f"partitioned dimension {dimension!r} is not declared in the schema")

        def fix(g: GroupSchema, prefix: str) -> GroupSchema:
            variables = []
            for v in g.variables:
                if dimension in v.dimensions and v.dimensions[0] != dimension:
                    raise SchemaError(
                        f"variable '{prefix}{v.name}': the partitioned dimension {dimension!r} "
                        f"must be its first dimension, got {v.dimensions}"
                    )
                variables.append(dataclasses.replace(v, immutable=dimension not in v.dimensions))
            return dataclasses.replace(
                g,
                variables=tuple(variables),
                groups=tuple(fix(c, f"{prefix}{c.name}/") for c in g.groups),
            )

        return dataclasses.replace(self, root=fix(self.root, ""))

    def with_default_chunks(self, dimension: str, target: int = DEFAULT_CHUNK_BYTES) -> Schema:
        """Fill in ``chunks`` of ``dimension`` when unset: a power of two of rows
        such that a chunk of the widest variable holds about ``target`` bytes.

        A fixed chunk length makes the array metadata of every partition a
        function of the schema and its row count.
        """
        dims = self.all_dimensions()
        if dimension not in dims or dims[dimension].chunks is not None:
            return self
        widest = 1
        for path, var in self.walk():
            if dimension in var.dimensions:
                var_dims = self.variable_dimensions(path)
                width = var.dtype.itemsize
                for name, dim in var_dims.items():
                    if name != dimension:
                        width *= dim.size or 1
                widest = max(widest, width)
        rows = max(1024, min(1 << 20, target // widest))
        rows = 1 << (rows.bit_length() - 1)

        def fix(g: GroupSchema) -> GroupSchema:
            return dataclasses.replace(
                g,
                dimensions=tuple(
                    dataclasses.replace(d, chunks=rows) if d.name == dimension else d
                    for d in g.dimensions
                ),
                groups=tuple(fix(c) for c in g.groups),
            )

        return dataclasses.replace(self, root=fix(self.root))

    def with_checksums(self, enabled: bool = True) -> Schema:
        """Return the schema with chunk checksums on (or off) for every variable.

        Checksums (Zarr v3's ``crc32c`` codec, last in each chain) are off by
        default; ``schema.with_checksums(True)`` turns them on everywhere,
        ``codecs=Codecs(..., checksum=True)`` for one variable.
        """

        def fix(g: GroupSchema) -> GroupSchema:
            return dataclasses.replace(
                g,
                variables=tuple(
                    dataclasses.replace(v, codecs=dataclasses.replace(v.codecs, checksum=enabled))
                    for v in g.variables
                ),
                groups=tuple(fix(c) for c in g.groups),
            )

        return dataclasses.replace(self, root=fix(self.root))

    def select(self, paths: Sequence[str]) -> Self:
        """Return the schema restricted to the variables at ``paths`` (groups kept)."""
        wanted = {p.strip("/") for p in paths}
        unknown = wanted - {p for p, _ in self.walk()}
        if unknown:
            raise VariableNotFoundError(f"unknown variable(s) {sorted(unknown)}")

        def keep(g: GroupSchema, prefix: str) -> GroupSchema:
            return dataclasses.replace(
                g,
                variables=tuple(v for v in g.variables if f"{prefix}{v.name}" in wanted),
                groups=tuple(keep(c, f"{prefix}{c.name}/") for c in g.groups),
            )

        return dataclasses.replace(self, root=keep(self.root, ""))

    # -- serde -----------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        """Return the JSON form (compatible with the reference ``_zcollection.json``)."""
        return {**self.root.to_dict(), "format_version": self.format_version}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Schema:
        """Build and validate from the JSON form.

        Raises
        ------
        SchemaError
            When the JSON is malformed.
        """
        try:
            root = GroupSchema.from_dict(data)
            schema = cls(root=root, format_version=int(data.get("format_version", FORMAT_VERSION)))
            return schema.build()
        except SchemaError:
            raise
        except (KeyError, TypeError, ValueError, AttributeError, OverflowError) as err:
            # A wrong type or a missing field anywhere in the tree (a damaged document).
            raise SchemaError(f"malformed schema JSON: {err!r}") from err

    def __repr__(self) -> str:
        lines = ["<dask_zcollection.Schema>"]
        for path, g in self.walk_groups():
            indent = "    " * (path.count("/") + (1 if path else 0))
            if path:
                lines.append(f"{indent[:-4]}Group /{path}  {g.attrs or ''}".rstrip())
            for d in g.dimensions:
                size = "unlimited" if d.size is None else d.size
                lines.append(f"{indent}dim {d.name}: {size} (chunks={d.chunks}, shards={d.shards})")
            for v in g.variables:
                flag = " immutable" if v.immutable else ""
                lines.append(f"{indent}{v.name} ({', '.join(v.dimensions)}) {v.dtype}{flag}")
        return "\n".join(lines)
