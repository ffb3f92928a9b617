"""The view descriptor, ``_zcollection_view.json``, and how its base is found.

The reference implementation's form: ``{"format_version": 1, "reference":
{"uri": ...}, "schema": {...}}`` where the schema holds the view's own
variables (and the dimensions they use). The reference URI is kept exactly as
given at create; a relative one resolves against the view's URL taken as a
directory.
"""

from __future__ import annotations

import dataclasses
import json
import posixpath
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from ..errors import CollectionNotFoundError, CorruptedDataError, FormatVersionError, SchemaError
from ..schema import Schema
from ..store import StoreSpec

__all__ = ["VIEW_CONFIG_KEY", "VIEW_FORMAT", "ViewConfig", "read_view_config", "resolve_reference"]

VIEW_CONFIG_KEY = "_zcollection_view.json"
#: Highest view format version read, and the one written.
VIEW_FORMAT = 1


@dataclasses.dataclass(frozen=True, slots=True)
class ViewConfig:
    """What ``_zcollection_view.json`` holds.

    Attributes
    ----------
    reference : str
        The base collection's URI, as given at create (may be relative).
    schema : Schema
        The view's variables and the dimensions they use.
    format_version : int
        Format version of the descriptor.
    """

    reference: str
    schema: Schema
    format_version: int = VIEW_FORMAT

    @property
    def variables(self) -> tuple[str, ...]:
        """Paths of the view's own variables, in declaration order."""
        return tuple(p for p, _ in self.schema.walk())

    def to_dict(self) -> dict[str, Any]:
        """The JSON form (the reference implementation's)."""
        return {
            "format_version": self.format_version,
            "reference": {"uri": self.reference},
            "schema": self.schema.to_dict(),
        }

    @classmethod
    def from_dict(cls, data: Any) -> ViewConfig:
        """Parse the JSON form."""
        if not isinstance(data, dict):
            raise SchemaError(f"{VIEW_CONFIG_KEY} must hold a JSON object")
        version = data.get("format_version", 1)
        if isinstance(version, bool) or not isinstance(version, int) or version < 1:
            raise FormatVersionError(f"view format version {version!r} is not a positive integer")
        if version > VIEW_FORMAT:
            raise FormatVersionError(
                f"view format {version} is newer than this library supports ({VIEW_FORMAT})"
            )
        uri = (data.get("reference") or {}).get("uri")
        if not isinstance(uri, str) or not uri:
            raise SchemaError(f"{VIEW_CONFIG_KEY} names no base collection (reference.uri)")
        return cls(reference=uri, schema=Schema.from_dict(data["schema"]), format_version=version)


def resolve_reference(view_url: str, reference: str) -> str:
    """The base URL: ``reference`` itself when absolute, else against the view's URL.

    The view's URL is taken as a directory: ``../date_monthly`` in
    ``file:///data/date_monthly_view`` is ``file:///data/date_monthly``.
    """
    if "://" in reference or reference.startswith("/"):
        return reference
    parts = urlsplit(view_url)
    if not parts.scheme or len(parts.scheme) <= 1:  # a local path
        return posixpath.normpath(posixpath.join(view_url, reference))
    path = posixpath.normpath(posixpath.join(parts.path or "/", reference))
    if not parts.netloc and not path.startswith("/"):
        path = "/" + path
    if parts.netloc and not parts.path:
        # memory://name or s3://bucket: the netloc is the first component.
        joined = posixpath.normpath(posixpath.join(parts.netloc, reference))
        return urlunsplit(
            (parts.scheme, joined.split("/")[0], "/".join(joined.split("/")[1:]), "", "")
        )
    return urlunsplit((parts.scheme, parts.netloc, path, "", ""))


async def read_view_config(spec: StoreSpec) -> ViewConfig:
    """Read ``_zcollection_view.json``.

    Raises
    ------
    CollectionNotFoundError
        When there is no view at ``spec``.
    CorruptedDataError
        When the document cannot be parsed.
    """
    raw = await spec.get(VIEW_CONFIG_KEY)
    if raw is None:
        raise CollectionNotFoundError(f"no view at {spec.url} ({VIEW_CONFIG_KEY} not found)")
    try:
        return ViewConfig.from_dict(json.loads(raw))
    except FormatVersionError:
        raise
    except (ValueError, KeyError, TypeError, AttributeError) as err:
        raise CorruptedDataError(
            f"{VIEW_CONFIG_KEY} of {spec.url} is damaged: {type(err).__name__}: {err}"
        ) from err


async def write_view_config(spec: StoreSpec, config: ViewConfig) -> None:
    """Write ``_zcollection_view.json``."""
    await spec.put(VIEW_CONFIG_KEY, json.dumps(config.to_dict(), indent=2).encode())
