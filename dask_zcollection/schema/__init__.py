"""Immutable collection schema: dimensions, variables, nested groups."""

from ._schema import (
    FORMAT_VERSION,
    Codecs,
    Dimension,
    GroupSchema,
    Schema,
    VariableSchema,
    normalize_group_path,
)

__all__ = [
    "FORMAT_VERSION",
    "Codecs",
    "Dimension",
    "GroupSchema",
    "Schema",
    "VariableSchema",
    "normalize_group_path",
]
