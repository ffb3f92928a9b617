"""Partitioning by the values of integer variables."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from collections.abc import Sequence as SequenceABC
from typing import Any

import numpy
import numpy.typing as npt

from dask_zcollection.errors import InvalidInputError
from dask_zcollection.partitioning._base import (
    as_int64,
    check_key,
    check_names,
    decode_path,
    get_column,
    unique_rows,
)

__all__ = ["GroupedSequence", "Sequence"]


def _check_dimension(dimension: Any, what: str) -> str:
    if not isinstance(dimension, str) or not dimension:
        raise InvalidInputError(f"{what}: dimension must be a non-empty str, got {dimension!r}")
    return dimension


@dataclasses.dataclass(frozen=True, slots=True, repr=False)
class Sequence:
    """Partition by the integer values of one or more variables.

    Parameters
    ----------
    variables
        Integer variables; each is one key component, named after the variable.
    dimension
        The partitioned dimension.

    Examples
    --------
    >>> p = Sequence(("cycle_number", "pass_number"), dimension="num_lines")
    >>> p.encode((10, 3))
    'cycle_number=10/pass_number=3'
    """

    variables: tuple[str, ...]
    """Integer variables the keys are made of, most significant first."""
    dimension: str
    """The partitioned dimension."""

    def __post_init__(self) -> None:
        object.__setattr__(self, "variables", check_names(self.variables, "Sequence"))
        object.__setattr__(self, "dimension", _check_dimension(self.dimension, "Sequence"))

    @property
    def name(self) -> str:
        """``"sequence"``."""
        return "sequence"

    @property
    def keys(self) -> tuple[str, ...]:
        """Key component names: the variable names."""
        return self.variables

    def __repr__(self) -> str:
        return f"Sequence({self.variables!r}, dimension={self.dimension!r})"

    def _key_columns(self, columns: Mapping[str, npt.ArrayLike]) -> list[npt.NDArray[numpy.int64]]:
        arrays = [as_int64(get_column(columns, v), v) for v in self.variables]
        sizes = {a.size for a in arrays}
        if len(sizes) > 1:
            raise InvalidInputError(
                f"partitioning variables {self.variables!r} have different lengths "
                f"{[a.size for a in arrays]}"
            )
        return arrays

    def split(
        self,
        columns: Mapping[str, npt.ArrayLike],
        attrs: Mapping[str, Mapping[str, Any]] | None = None,
    ) -> tuple[npt.NDArray[numpy.int64], npt.NDArray[numpy.intp]]:
        """Group rows by their key tuple; see :meth:`Partitioning.split`."""
        return unique_rows(self._key_columns(columns))

    def encode(self, key: SequenceABC[int]) -> str:
        """``(10, 3)`` -> ``"cycle_number=10/pass_number=3"``."""
        values = check_key(key, self.keys)
        return "/".join(f"{n}={v}" for n, v in zip(self.keys, values, strict=True))

    def decode(self, path: str) -> tuple[int, ...]:
        """``"cycle_number=10/pass_number=3"`` -> ``(10, 3)``."""
        return decode_path(path, self.keys)

    def to_dict(self) -> dict[str, Any]:
        """``{"name": "sequence", "variables": [...], "dimension": ...}``."""
        return {"name": self.name, "variables": list(self.variables), "dimension": self.dimension}


@dataclasses.dataclass(frozen=True, slots=True, repr=False)
class GroupedSequence:
    """Like :class:`Sequence`, but the last variable is binned into groups of ``size``.

    The key component of the last variable is ``start + ((v - start) // size) * size``:
    the first value of its bin.

    Parameters
    ----------
    variables
        Integer variables, most significant first; the last one is binned.
    dimension
        The partitioned dimension.
    size
        Width of a bin (> 0).
    start
        Origin of the bins.

    Examples
    --------
    >>> p = GroupedSequence(("cycle_number", "pass_number"), "num_lines", size=10, start=1)
    >>> p.encode((2, 11))
    'cycle_number=2/pass_number=11'
    """

    variables: tuple[str, ...]
    """Integer variables the keys are made of; the last one is binned."""
    dimension: str
    """The partitioned dimension."""
    size: int
    """Width of a bin of the last variable."""
    start: int = 0
    """Origin of the bins of the last variable."""

    def __post_init__(self) -> None:
        object.__setattr__(self, "variables", check_names(self.variables, "GroupedSequence"))
        object.__setattr__(self, "dimension", _check_dimension(self.dimension, "GroupedSequence"))
        for field in ("size", "start"):
            value = getattr(self, field)
            if isinstance(value, bool) or not isinstance(value, int | numpy.integer):
                raise InvalidInputError(f"GroupedSequence: {field} must be an int, got {value!r}")
            object.__setattr__(self, field, int(value))
        if self.size <= 0:
            raise InvalidInputError(f"GroupedSequence: size must be > 0, got {self.size}")

    @property
    def name(self) -> str:
        """``"grouped_sequence"``."""
        return "grouped_sequence"

    @property
    def keys(self) -> tuple[str, ...]:
        """Key component names: the variable names."""
        return self.variables

    def __repr__(self) -> str:
        return (
            f"GroupedSequence({self.variables!r}, dimension={self.dimension!r}, "
            f"size={self.size}, start={self.start})"
        )

    def split(
        self,
        columns: Mapping[str, npt.ArrayLike],
        attrs: Mapping[str, Mapping[str, Any]] | None = None,
    ) -> tuple[npt.NDArray[numpy.int64], npt.NDArray[numpy.intp]]:
        """Group rows by their (binned) key tuple; see :meth:`Partitioning.split`."""
        arrays = Sequence(self.variables, self.dimension)._key_columns(columns)
        last = arrays[-1] - self.start
        last //= self.size
        last *= self.size
        last += self.start
        arrays[-1] = last
        return unique_rows(arrays)

    def encode(self, key: SequenceABC[int]) -> str:
        """``(2, 11)`` -> ``"cycle_number=2/pass_number=11"``."""
        values = check_key(key, self.keys)
        self._check_aligned(values, key)
        return "/".join(f"{n}={v}" for n, v in zip(self.keys, values, strict=True))

    def decode(self, path: str) -> tuple[int, ...]:
        """Inverse of :meth:`encode`; the binned component must start a bin."""
        values = decode_path(path, self.keys)
        self._check_aligned(values, path)
        return values

    def _check_aligned(self, values: tuple[int, ...], source: Any) -> None:
        if (values[-1] - self.start) % self.size:
            raise InvalidInputError(
                f"partition {source!r}: {self.keys[-1]}={values[-1]} is not the start of a "
                f"bin (start={self.start}, size={self.size})"
            )

    def to_dict(self) -> dict[str, Any]:
        """``{"name": "grouped_sequence", "variables": [...], "dimension", "size", "start"}``."""
        return {
            "name": self.name,
            "variables": list(self.variables),
            "dimension": self.dimension,
            "size": self.size,
            "start": self.start,
        }
