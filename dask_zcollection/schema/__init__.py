"""Immutable collection schema: dimensions, variables, nested groups."""

from ._schema import (
    FORMAT_VERSION,
    Codecs,
    Dimension,
    GroupSchema,
    Schema,
    VariableSchema,
    check_node_name,
    normalize_group_path,
)

__all__ = [
    "FORMAT_VERSION",
    "Codecs",
    "Dimension",
    "GroupSchema",
    "Schema",
    "VariableSchema",
    "check_node_name",
    "normalize_group_path",
]
