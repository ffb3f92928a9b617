"""In-memory variables, groups and datasets (no I/O).

These objects are created per partition in hot paths: constructors only do
cheap checks (number of dimensions, name clashes) and never copy data.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any, ClassVar, Self

import dask
import dask.array as da
import numpy

from ..errors import InvalidInputError, VariableNotFoundError

if TYPE_CHECKING:
    import xarray

__all__ = ["Dataset", "Group", "Variable"]

#: An array accepted as variable data.
ArrayLike = Any

#: An indexer accepted by ``isel``: a slice, an integer, or an integer or
#: boolean array (numpy or dask).
Indexer = Any

_NAN_KINDS = frozenset("fcmM")


def split_path(path: str) -> list[str]:
    """Split a slash separated path into its non-empty components.

    Parameters
    ----------
    path : str
        A path such as ``"ssh"``, ``"data_01/ku/power"`` or
        ``"/data_01/ku"``; ``"/"`` and ``""`` name the root.

    Returns
    -------
    list of str
        The components, empty for the root.
    """
    if not isinstance(path, str):
        raise InvalidInputError(f"a path must be a string, got {path!r}")
    return [part for part in path.split("/") if part]


def _is_lazy(data: Any) -> bool:
    return isinstance(data, da.Array)


def _as_array(data: Any) -> numpy.ndarray | da.Array:
    if isinstance(data, numpy.ndarray | da.Array):
        return data
    return numpy.asarray(data)


def _values_equal(a: Any, b: Any) -> bool:
    """Compare two values or arrays, NaN == NaN and NaT == NaT."""
    if a is b:
        return True
    if isinstance(a, Mapping) or isinstance(b, Mapping):
        return _attrs_equal(a, b) if isinstance(a, Mapping) and isinstance(b, Mapping) else False
    try:
        arr_a = numpy.asarray(a)
        arr_b = numpy.asarray(b)
    except Exception:
        return bool(a == b)
    if arr_a.dtype != arr_b.dtype or arr_a.shape != arr_b.shape:
        return False
    equal_nan = arr_a.dtype.kind in _NAN_KINDS
    try:
        return bool(numpy.array_equal(arr_a, arr_b, equal_nan=equal_nan))
    except TypeError:
        return bool(numpy.array_equal(arr_a, arr_b))


def _attrs_equal(a: Mapping[str, Any], b: Mapping[str, Any]) -> bool:
    if a.keys() != b.keys():
        return False
    return all(_values_equal(a[key], b[key]) for key in a)


def _nbytes(shape: tuple[Any, ...], dtype: numpy.dtype[Any]) -> int:
    size = 1
    for item in shape:
        if item is None or (isinstance(item, float) and math.isnan(item)):
            return 0
        size *= int(item)
    return size * dtype.itemsize


class Variable:
    """A named, dimensioned array (numpy or dask) with attributes.

    Parameters
    ----------
    name : str
        Leaf name of the variable (no ``/``).
    data : array_like
        A :class:`numpy.ndarray` or a :class:`dask.array.Array`; anything else
        goes through :func:`numpy.asarray`. Never copied.
    dimensions : sequence of str
        One name per axis of ``data``.
    attrs : mapping, optional
        Attributes of the variable.
    fill_value : scalar, optional
        The value marking missing data, if any.

    Examples
    --------
    >>> import numpy
    >>> Variable("x", numpy.arange(3), ("x",))
    <Variable 'x' (x: 3) int64 24 B>
    """

    __slots__ = ("attrs", "data", "dimensions", "fill_value", "name")

    name: str
    data: numpy.ndarray | da.Array
    dimensions: tuple[str, ...]
    attrs: dict[str, Any]
    fill_value: Any

    def __init__(
        self,
        name: str,
        data: ArrayLike,
        dimensions: Sequence[str],
        attrs: Mapping[str, Any] | None = None,
        fill_value: Any = None,
    ) -> None:
        data = _as_array(data)
        dimensions = (dimensions,) if isinstance(dimensions, str) else tuple(dimensions)
        if len(dimensions) != data.ndim:
            raise InvalidInputError(
                f"variable {name!r}: {len(dimensions)} dimension(s) {dimensions} given "
                f"for data with {data.ndim} axis/axes (shape {data.shape})"
            )
        self.name = name
        self.data = data
        self.dimensions = dimensions
        self.attrs = dict(attrs) if attrs else {}
        self.fill_value = fill_value

    @classmethod
    def _new(
        cls,
        name: str,
        data: numpy.ndarray | da.Array,
        dimensions: tuple[str, ...],
        attrs: dict[str, Any],
        fill_value: Any,
    ) -> Variable:
        # Fast path: arguments already validated.
        obj = object.__new__(cls)
        obj.name = name
        obj.data = data
        obj.dimensions = dimensions
        obj.attrs = attrs
        obj.fill_value = fill_value
        return obj

    # -- array properties -------------------------------------------------
    @property
    def shape(self) -> tuple[int, ...]:
        """Shape of the data (may hold NaN for dask arrays of unknown chunks)."""
        return tuple(self.data.shape)

    @property
    def dtype(self) -> numpy.dtype[Any]:
        """Data type of the data."""
        return self.data.dtype

    @property
    def ndim(self) -> int:
        """Number of dimensions."""
        return len(self.dimensions)

    @property
    def size(self) -> int:
        """Number of elements (0 when a dask shape is unknown)."""
        return _nbytes(self.shape, numpy.dtype("i1"))

    @property
    def nbytes(self) -> int:
        """Size of the data in bytes, computed from the shape (never computes)."""
        return _nbytes(self.shape, self.dtype)

    @property
    def is_lazy(self) -> bool:
        """True when the data is a dask array."""
        return _is_lazy(self.data)

    @property
    def sizes(self) -> dict[str, int]:
        """Mapping from dimension name to length."""
        return dict(zip(self.dimensions, self.shape, strict=True))

    @property
    def values(self) -> numpy.ndarray:
        """The data as a numpy array (computes dask data)."""
        if isinstance(self.data, da.Array):
            return numpy.asarray(self.data.compute())
        return self.data

    # -- transformations --------------------------------------------------
    def with_data(self, data: ArrayLike) -> Variable:
        """Return a variable with the same metadata and new data.

        Parameters
        ----------
        data : array_like
            The new data; it must have as many axes as the variable has
            dimensions.

        Returns
        -------
        Variable
            The new variable (attributes dictionary shared, not copied).
        """
        data = _as_array(data)
        if data.ndim != len(self.dimensions):
            raise InvalidInputError(
                f"variable {self.name!r}: new data has {data.ndim} axis/axes, "
                f"expected {len(self.dimensions)} for dimensions {self.dimensions}"
            )
        return Variable._new(self.name, data, self.dimensions, self.attrs, self.fill_value)

    def rename(self, name: str) -> Variable:
        """Return the same variable under another name (data not copied)."""
        return Variable._new(name, self.data, self.dimensions, self.attrs, self.fill_value)

    def isel(self, indexers: Mapping[str, Indexer]) -> Variable:
        """Select positions along dimensions.

        Parameters
        ----------
        indexers : mapping
            Dimension name to a slice, an integer (the dimension is dropped),
            or an integer or boolean array (numpy or dask). Dimensions the
            variable does not have are ignored; several arrays select
            orthogonally (one dimension after the other).

        Returns
        -------
        Variable
            The selection; dask data stays lazy.
        """
        if not indexers:
            return self
        data = self.data
        dims = list(self.dimensions)
        basic: list[Any] = [slice(None)] * len(dims)
        arrays: list[tuple[int, Any]] = []
        keep = [True] * len(dims)
        touched = False
        for axis, dim in enumerate(dims):
            if dim not in indexers:
                continue
            key = indexers[dim]
            touched = True
            if isinstance(key, slice):
                basic[axis] = key
            elif isinstance(key, int | numpy.integer):
                basic[axis] = int(key)
                keep[axis] = False
            else:
                if not isinstance(key, da.Array | numpy.ndarray):
                    key = numpy.asarray(key)
                if key.ndim == 0:
                    basic[axis] = int(key)
                    keep[axis] = False
                elif key.ndim != 1:
                    raise InvalidInputError(
                        f"variable {self.name!r}: the indexer of dimension {dim!r} "
                        f"must be 1-D, got shape {key.shape}"
                    )
                else:
                    arrays.append((axis, key))
        if not touched:
            return self
        try:
            if len(arrays) == 1 and all(k is True for k in keep):
                axis, key = arrays[0]
                basic[axis] = key
                arrays = []
            data = data[tuple(basic)]
            if arrays:
                # Positions shift as integer-indexed axes disappear.
                for axis, key in arrays:
                    pos = axis - sum(1 for a in range(axis) if not keep[a])
                    data = data[(slice(None),) * pos + (key,)]
        except (IndexError, ValueError, TypeError) as err:
            raise InvalidInputError(
                f"cannot index variable {self.name!r} with {dict(indexers)!r}: {err}"
            ) from err
        new_dims = tuple(d for d, k in zip(dims, keep, strict=True) if k)
        return Variable._new(self.name, data, new_dims, self.attrs, self.fill_value)

    def compute(self) -> Variable:
        """Return the variable with dask data computed into numpy."""
        if not isinstance(self.data, da.Array):
            return self
        return self.with_data(numpy.asarray(self.data.compute()))

    def identical(self, other: object) -> bool:
        """Whether name, dimensions, attrs, fill value, dtype and values are equal.

        NaN compares equal to NaN and NaT to NaT. Dask data is computed.
        """
        if not isinstance(other, Variable):
            return False
        if (
            self.name != other.name
            or self.dimensions != other.dimensions
            or self.dtype != other.dtype
            or not _values_equal(self.fill_value, other.fill_value)
            or not _attrs_equal(self.attrs, other.attrs)
        ):
            return False
        return _values_equal(self.values, other.values)

    def __repr__(self) -> str:
        from ._repr import variable_repr

        return variable_repr(self)


def _check_name(name: str, what: str) -> None:
    if not isinstance(name, str) or not name or "/" in name:
        raise InvalidInputError(f"invalid {what} name {name!r}: a non-empty string without '/'")


class Group:
    """A node of the hierarchy: variables, child groups and attributes.

    Parameters
    ----------
    name : str
        Leaf name of the group; the root is ``"/"``.
    variables : mapping or iterable of Variable
        The variables of this group. In a mapping, the key is the variable
        name (a variable stored under another name is renamed).
    groups : mapping or iterable of Group
        The child groups, keyed by their leaf name.
    attrs : mapping, optional
        Attributes of the group.

    Examples
    --------
    >>> import numpy
    >>> ku = Group("ku", [Variable("power", numpy.zeros((2, 3)), ("time", "range"))])
    >>> root = Group("/", [Variable("time", numpy.arange(2), ("time",))],
    ...              [Group("data_01", groups=[ku])])
    >>> [path for path, _ in root.walk()]
    ['time', 'data_01/ku/power']
    >>> root["/data_01/ku/power"].shape
    (2, 3)
    """

    __slots__ = ("attrs", "groups", "name", "variables")

    name: str
    variables: dict[str, Variable]
    groups: dict[str, Group]
    attrs: dict[str, Any]

    def __init__(
        self,
        name: str = "/",
        variables: Mapping[str, Variable] | Iterable[Variable] = (),
        groups: Mapping[str, Group] | Iterable[Group] = (),
        attrs: Mapping[str, Any] | None = None,
    ) -> None:
        if name != "/":
            _check_name(name, "group")
        self.name = name
        self.variables = self._collect(variables, "variable")
        self.groups = self._collect(groups, "group")
        if self.variables and self.groups:
            clash = self.variables.keys() & self.groups.keys()
            if clash:
                raise InvalidInputError(
                    f"group {name!r}: {sorted(clash)} name both a variable and a group"
                )
        self.attrs = dict(attrs) if attrs else {}

    @staticmethod
    def _collect(items: Any, what: str) -> dict[str, Any]:
        result: dict[str, Any] = {}
        if isinstance(items, Mapping):
            for key, item in items.items():
                if item.name != key:
                    _check_name(key, what)
                    item = item.rename(key) if what == "variable" else item._renamed(key)
                result[key] = item
            return result
        for item in items:
            if item.name in result:
                raise InvalidInputError(f"duplicate {what} name {item.name!r}")
            if what == "group":
                _check_name(item.name, what)
            result[item.name] = item
        return result

    @classmethod
    def _new(
        cls,
        name: str,
        variables: dict[str, Variable],
        groups: dict[str, Group],
        attrs: dict[str, Any],
    ) -> Self:
        obj = object.__new__(cls)
        obj.name = name
        obj.variables = variables
        obj.groups = groups
        obj.attrs = attrs
        return obj

    def _renamed(self, name: str) -> Group:
        return Group._new(name, self.variables, self.groups, self.attrs)

    def _shallow(self) -> Self:
        return self._new(self.name, dict(self.variables), dict(self.groups), dict(self.attrs))

    # -- access -------------------------------------------------------------
    def _lookup(self, path: str) -> Variable | Group | None:
        parts = split_path(path)
        node: Group = self
        for part in parts[:-1]:
            child = node.groups.get(part)
            if child is None:
                return None
            node = child
        if not parts:
            return node
        leaf = parts[-1]
        found = node.variables.get(leaf)
        if found is not None:
            return found
        return node.groups.get(leaf)

    def __getitem__(self, path: str) -> Variable | Group:
        """Return the variable or group at ``path`` (``"a/b/c"`` or ``"/a/b/c"``)."""
        found = self._lookup(path)
        if found is None:
            raise VariableNotFoundError(f"no variable or group {path!r} in group {self.name!r}")
        return found

    def __contains__(self, path: object) -> bool:
        return isinstance(path, str) and self._lookup(path) is not None

    def __iter__(self) -> Iterator[str]:
        """Iterate over the paths of every variable, as :meth:`walk` does."""
        return (path for path, _ in self.walk())

    def get(self, path: str, default: Any = None) -> Any:
        """Return the variable or group at ``path``, or ``default``."""
        found = self._lookup(path)
        return default if found is None else found

    def variable(self, path: str) -> Variable:
        """Return the variable at ``path``; a group there is an error.

        Raises
        ------
        VariableNotFoundError
            No variable at ``path``.
        """
        found = self._lookup(path)
        if not isinstance(found, Variable):
            raise VariableNotFoundError(f"no variable {path!r} in group {self.name!r}")
        return found

    def walk(self) -> Iterator[tuple[str, Variable]]:
        """Iterate over every variable at every depth.

        Yields
        ------
        (str, Variable)
            The path without a leading ``/`` (``"ssh"``,
            ``"data_01/ku/power"``) and the variable: this group's variables
            first, then each child group depth-first in insertion order.
        """
        return self._walk("")

    def _walk(self, prefix: str) -> Iterator[tuple[str, Variable]]:
        for name, var in self.variables.items():
            yield prefix + name, var
        for name, group in self.groups.items():
            yield from group._walk(prefix + name + "/")

    def walk_groups(self) -> Iterator[tuple[str, Group]]:
        """Iterate over this group and every group below it, depth-first.

        Yields
        ------
        (str, Group)
            ``("/", self)`` first, then the descendants with paths relative
            to this group and without a leading ``/``: ``"data_01"``,
            ``"data_01/ku"``.
        """
        yield "/", self
        yield from self._walk_groups("")

    def _walk_groups(self, prefix: str) -> Iterator[tuple[str, Group]]:
        for name, group in self.groups.items():
            path = prefix + name
            yield path, group
            yield from group._walk_groups(path + "/")

    @property
    def dimensions(self) -> dict[str, int]:
        """Sizes of the dimensions used by the variables of this group and below.

        Raises
        ------
        InvalidInputError
            Two variables disagree on the size of a dimension.
        """
        sizes: dict[str, int] = {}
        origin: dict[str, str] = {}
        for path, var in self.walk():
            for dim, size in zip(var.dimensions, var.shape, strict=True):
                known = sizes.get(dim)
                if known is None:
                    sizes[dim] = size
                    origin[dim] = path
                elif known != size and not (_unknown(known) or _unknown(size)):
                    raise InvalidInputError(
                        f"variable {path!r} has size {size} along dimension {dim!r}, "
                        f"but variable {origin[dim]!r} has size {known}"
                    )
        return sizes

    @property
    def nbytes(self) -> int:
        """Total size in bytes of every variable below (never computes)."""
        return sum(var.nbytes for _, var in self.walk())

    @property
    def is_lazy(self) -> bool:
        """True when any variable below holds dask data."""
        return any(var.is_lazy for _, var in self.walk())

    # -- transformations --------------------------------------------------
    def isel(self, indexers: Mapping[str, Indexer]) -> Self:
        """Select positions along dimensions, in every variable that has them.

        Parameters
        ----------
        indexers : mapping
            Dimension name to a slice, an integer, or an integer or boolean
            array (see :meth:`Variable.isel`).

        Returns
        -------
        Group
            Same type as ``self``; variables without these dimensions are
            kept unchanged.

        Raises
        ------
        InvalidInputError
            A dimension is used by no variable.
        """
        if not indexers:
            return self
        used: set[str] = set()
        for _, var in self.walk():
            used.update(var.dimensions)
        unknown = [dim for dim in indexers if dim not in used]
        if unknown:
            raise InvalidInputError(
                f"cannot index dimension(s) {unknown}: no variable of group {self.name!r} uses them"
            )
        return self._isel(indexers)

    def _isel(self, indexers: Mapping[str, Indexer]) -> Self:
        variables = {
            name: var.isel(indexers) if any(d in indexers for d in var.dimensions) else var
            for name, var in self.variables.items()
        }
        groups = {name: group._isel(indexers) for name, group in self.groups.items()}
        return self._new(self.name, variables, groups, self.attrs)

    def select(self, paths: Iterable[str]) -> Self:
        """Keep only some variables (and the groups leading to them).

        Parameters
        ----------
        paths : iterable of str
            Variable paths; a path naming a group keeps the whole group.

        Returns
        -------
        Group
            Same type as ``self``; groups on the way keep their attributes,
            groups with nothing selected are dropped; order is preserved.

        Raises
        ------
        VariableNotFoundError
            A path names nothing.
        """
        tree: dict[str, Any] = {}
        for path in paths:
            found = self._lookup(path)
            if found is None:
                raise VariableNotFoundError(f"no variable {path!r} in group {self.name!r}")
            parts = split_path(path)
            if not parts:
                return self
            node = tree
            for part in parts[:-1]:
                child = node.setdefault(part, {})
                if child is True:
                    break
                node = child
            else:
                node[parts[-1]] = True
        return self._select(tree)

    def _select(self, tree: dict[str, Any]) -> Self:
        variables = {name: var for name, var in self.variables.items() if name in tree}
        groups: dict[str, Group] = {}
        for name, group in self.groups.items():
            sub = tree.get(name)
            if sub is True:
                groups[name] = group
            elif sub is not None:
                groups[name] = group._select(sub)
        return self._new(self.name, variables, groups, self.attrs)

    def drop(self, paths: Iterable[str]) -> Self:
        """Return a copy without the variables (or groups) at ``paths``.

        Raises
        ------
        VariableNotFoundError
            A path names nothing.
        """
        result = self._shallow()
        copied: dict[tuple[str, ...], Group] = {(): result}
        for path in paths:
            parts = split_path(path)
            if not parts or self._lookup(path) is None:
                raise VariableNotFoundError(f"no variable {path!r} in group {self.name!r}")
            node = result._descend(parts[:-1], copied, create=False)
            node.variables.pop(parts[-1], None)
            node.groups.pop(parts[-1], None)
        return result

    def _descend(
        self, parts: list[str], copied: dict[tuple[str, ...], Group], *, create: bool
    ) -> Group:
        # ``self`` is already a private copy; copy each group on the way once.
        node: Group = self
        for depth, part in enumerate(parts):
            key = tuple(parts[: depth + 1])
            child = copied.get(key)
            if child is None:
                existing = node.groups.get(part)
                if existing is None:
                    if not create:
                        raise VariableNotFoundError(f"no group {'/'.join(key)!r}")
                    if part in node.variables:
                        raise InvalidInputError(
                            f"cannot create group {'/'.join(key)!r}: a variable has that name"
                        )
                    _check_name(part, "group")
                    child = Group._new(part, {}, {}, {})
                else:
                    child = existing._shallow()
                node.groups[part] = child
                copied[key] = child
            node = child
        return node

    def with_variables(self, mapping: Mapping[str, Variable]) -> Self:
        """Set or replace variables by path, creating groups on the way.

        Parameters
        ----------
        mapping : mapping of str to Variable
            Path (``"ssh"``, ``"data_01/ku/power"``) to variable; the
            variable is renamed to the leaf of its path when needed.

        Returns
        -------
        Group
            A new tree sharing every untouched group and variable.
        """
        result = self._shallow()
        copied: dict[tuple[str, ...], Group] = {(): result}
        for path, var in mapping.items():
            if not isinstance(var, Variable):
                raise InvalidInputError(
                    f"variable {path!r}: expected a Variable, got {type(var).__name__}"
                )
            parts = split_path(path)
            if not parts:
                raise InvalidInputError(f"invalid variable path {path!r}")
            node = result._descend(parts[:-1], copied, create=True)
            leaf = parts[-1]
            if leaf in node.groups:
                raise InvalidInputError(f"cannot set variable {path!r}: a group has that name")
            if var.name != leaf:
                _check_name(leaf, "variable")
                var = var.rename(leaf)
            node.variables[leaf] = var
        return result

    def with_attrs(self, attrs: Mapping[str, Any]) -> Self:
        """Return a copy with attributes updated by ``attrs``."""
        return self._new(self.name, self.variables, self.groups, {**self.attrs, **attrs})

    def compute(self) -> Self:
        """Return a copy with every dask array computed, in one ``dask.compute`` call."""
        lazy = [(path, var) for path, var in self.walk() if var.is_lazy]
        if not lazy:
            return self
        results = dask.compute(*(var.data for _, var in lazy))
        return self.with_variables(
            {
                path: var.with_data(numpy.asarray(value))
                for (path, var), value in zip(lazy, results, strict=True)
            }
        )

    def identical(self, other: object) -> bool:
        """Recursive equality of names, attributes, variables and groups.

        Values are compared NaN-aware (see :meth:`Variable.identical`).
        """
        if not isinstance(other, Group):
            return False
        if (
            self.name != other.name
            or self.variables.keys() != other.variables.keys()
            or self.groups.keys() != other.groups.keys()
            or not _attrs_equal(self.attrs, other.attrs)
        ):
            return False
        return all(
            var.identical(other.variables[name]) for name, var in self.variables.items()
        ) and all(group.identical(other.groups[name]) for name, group in self.groups.items())

    def __repr__(self) -> str:
        from ._repr import group_repr

        return group_repr(self)

    def _repr_html_(self) -> str:
        from ._repr import group_repr_html

        return group_repr_html(self)


def _unknown(size: Any) -> bool:
    return isinstance(size, float) and math.isnan(size)


class Dataset(Group):
    """The root group of a hierarchy of variables.

    Parameters are those of :class:`Group`; the name defaults to ``"/"``.

    Examples
    --------
    >>> import numpy
    >>> ds = Dataset.from_mapping(
    ...     {"time": numpy.arange(3), "data_01/ku/power": (("time", "range"), numpy.ones((3, 2)))},
    ...     dimensions=lambda path: ("time",),
    ... )
    >>> ds.dimensions
    {'time': 3, 'range': 2}
    """

    __slots__ = ()
    #: What the repr calls it.
    KIND: ClassVar[str] = "Dataset"

    @classmethod
    def from_xarray(cls, obj: xarray.Dataset | xarray.DataTree) -> Dataset:
        """Build a dataset from an :class:`xarray.Dataset` or :class:`xarray.DataTree`.

        Coordinates become variables; dask arrays stay lazy; the fill value
        comes from ``encoding["_FillValue"]`` or ``attrs["_FillValue"]``
        (removed from the attributes).
        """
        from ._xarray import from_xarray

        return from_xarray(cls, obj, Group, Variable)

    def to_xarray(self, *, index: bool | None = None) -> xarray.Dataset | xarray.DataTree:
        """Convert to xarray: a ``DataTree`` with nested groups, else a ``Dataset``.

        Parameters
        ----------
        index : bool, optional
            Whether a 1-D variable named like its dimension becomes an
            indexed coordinate. By default only numpy-backed ones do: dask
            backed ones become coordinates without an index, so nothing is
            computed.

        Returns
        -------
        xarray.Dataset or xarray.DataTree
            Data not copied; dask data stays lazy; fill values go to
            ``encoding["_FillValue"]``.
        """
        from ._xarray import to_xarray

        return to_xarray(self, index=index)

    @classmethod
    def from_mapping(
        cls,
        mapping: Mapping[str, ArrayLike | tuple[Sequence[str], ArrayLike] | Variable],
        dimensions: Callable[[str], tuple[str, ...]] | None = None,
        attrs: Mapping[str, Any] | None = None,
    ) -> Self:
        """Build a dataset from variable paths.

        Parameters
        ----------
        mapping : mapping
            Path to a :class:`Variable`, to ``(dimensions, array)``, or to a
            bare array.
        dimensions : callable, optional
            Given a path, returns the dimensions of a bare array.
        attrs : mapping, optional
            Attributes of the root.

        Raises
        ------
        InvalidInputError
            A bare array without a ``dimensions`` callback.
        """
        variables: dict[str, Variable] = {}
        for path, value in mapping.items():
            parts = split_path(path)
            if not parts:
                raise InvalidInputError(f"invalid variable path {path!r}")
            leaf = parts[-1]
            if isinstance(value, Variable):
                variables[path] = value
            elif isinstance(value, tuple):
                if len(value) != 2:
                    raise InvalidInputError(
                        f"variable {path!r}: expected (dimensions, array), got a tuple of "
                        f"{len(value)} items"
                    )
                variables[path] = Variable(leaf, value[1], value[0])
            else:
                if dimensions is None:
                    raise InvalidInputError(
                        f"variable {path!r}: no dimensions given (pass (dimensions, array) "
                        "or a dimensions callback)"
                    )
                variables[path] = Variable(leaf, value, dimensions(path))
        root = cls._new("/", {}, {}, dict(attrs) if attrs else {})
        return root.with_variables(variables)

    @staticmethod
    def concat(datasets: Sequence[Dataset], dim: str) -> Dataset:
        """Concatenate datasets along a dimension.

        Parameters
        ----------
        datasets : sequence of Dataset
            Datasets with the same variables.
        dim : str
            Dimension to concatenate along; variables without it are taken
            from the first dataset, as are attributes.

        Returns
        -------
        Dataset
            ``numpy.concatenate`` when all the pieces of a variable are numpy
            arrays, ``dask.array.concatenate`` otherwise.

        Raises
        ------
        InvalidInputError
            No datasets, different sets of variables, or shapes that do not
            fit.
        """
        if not datasets:
            raise InvalidInputError("concat needs at least one dataset")
        first = datasets[0]
        if len(datasets) == 1:
            return first
        paths = [path for path, _ in first.walk()]
        reference = set(paths)
        for index, other in enumerate(datasets[1:], start=1):
            other_paths = {path for path, _ in other.walk()}
            if other_paths != reference:
                missing = sorted(reference - other_paths)
                extra = sorted(other_paths - reference)
                raise InvalidInputError(
                    f"cannot concatenate along {dim!r}: dataset {index} differs from "
                    f"dataset 0 (missing {missing}, extra {extra})"
                )
        updates: dict[str, Variable] = {}
        for path, var in first.walk():
            if dim not in var.dimensions:
                continue
            axis = var.dimensions.index(dim)
            pieces = []
            for other in datasets:
                piece = other.variable(path)
                if piece.dimensions != var.dimensions:
                    raise InvalidInputError(
                        f"cannot concatenate variable {path!r}: dimensions "
                        f"{piece.dimensions} != {var.dimensions}"
                    )
                pieces.append(piece.data)
            try:
                if any(_is_lazy(piece) for piece in pieces):
                    data = da.concatenate(pieces, axis=axis)
                else:
                    data = numpy.concatenate(pieces, axis=axis)
            except ValueError as err:
                raise InvalidInputError(f"cannot concatenate variable {path!r}: {err}") from err
            updates[path] = var.with_data(data)
        return first.with_variables(updates)
