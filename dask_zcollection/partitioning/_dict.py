"""(De)serialisation of partitionings to JSON-able dicts."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from dask_zcollection.errors import InvalidInputError
from dask_zcollection.partitioning._base import Partitioning
from dask_zcollection.partitioning._date import Date
from dask_zcollection.partitioning._sequence import GroupedSequence, Sequence

__all__ = ["from_dict"]


def _field(d: Mapping[str, Any], name: str) -> Any:
    try:
        return d[name]
    except KeyError as err:
        raise InvalidInputError(f"partitioning description {dict(d)!r} lacks {name!r}") from err


def from_dict(d: Mapping[str, Any]) -> Partitioning:
    """Rebuild a partitioning from the output of its ``to_dict``.

    Parameters
    ----------
    d
        ``{"name": "date", "variable": "time", "resolution": "M", "dimension": "time"}``,
        ``{"name": "sequence", "variables": [...], "dimension": ...}`` or
        ``{"name": "grouped_sequence", "variables": [...], "dimension": ..., "size": ...,
        "start": ...}``. ``"id"`` is accepted for ``"name"``.

    Raises
    ------
    InvalidInputError
        On an unknown name or a missing or invalid field.

    Examples
    --------
    >>> from_dict({"name": "date", "variable": "time", "resolution": "M", "dimension": "time"})
    Date(('time',), resolution='M')
    """
    if not isinstance(d, Mapping):
        raise InvalidInputError(f"a partitioning description must be a mapping, got {d!r}")
    name = d.get("name", d.get("id"))
    if name == "date":
        variables = tuple(d["variables"] if "variables" in d else (_field(d, "variable"),))
        if d.get("dimension") is None:
            return Date(variables, resolution=_field(d, "resolution"))
        return Date(variables, resolution=_field(d, "resolution"), dimension=d["dimension"])
    if name == "sequence":
        return Sequence(tuple(_field(d, "variables")), dimension=_field(d, "dimension"))
    if name == "grouped_sequence":
        return GroupedSequence(
            tuple(_field(d, "variables")),
            dimension=_field(d, "dimension"),
            size=_field(d, "size"),
            start=d.get("start", 0),
        )
    raise InvalidInputError(
        f"unknown partitioning {name!r}; expected 'date', 'sequence' or 'grouped_sequence'"
    )
