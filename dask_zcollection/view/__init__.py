"""Views: variables of their own over a read-only base collection (see ``docs/views.md``)."""

from ._config import VIEW_CONFIG_KEY, ViewConfig, resolve_reference
from ._source import BASE_ATTR, ViewSource
from ._view import AsyncView, create_view, is_view, open_view, read_view

__all__ = [
    "BASE_ATTR",
    "VIEW_CONFIG_KEY",
    "AsyncView",
    "ViewConfig",
    "ViewSource",
    "create_view",
    "is_view",
    "open_view",
    "read_view",
    "resolve_reference",
]
