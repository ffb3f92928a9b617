"""``storage_options`` handling shared by the object-store adapters.

Options cross to workers inside a frozen spec, so they are kept as a sorted
tuple of ``(key, value)`` pairs (nested mappings frozen the same way): hashable,
picklable and deterministic for dask tokens.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ..errors import InvalidInputError

__all__ = ["BACKEND_KEY", "Frozen", "freeze", "pop_backend", "redact", "thaw"]

#: The ``storage_options`` key that picks the client library: ``"obstore"`` or ``"fsspec"``.
BACKEND_KEY = "backend"
BACKENDS = ("obstore", "fsspec")

Frozen = tuple[tuple[str, Any], ...]

#: Option names whose values are never shown in a repr.
_SECRET_WORDS = ("secret", "token", "password", "key", "sas", "credential")


def freeze(options: Mapping[str, Any] | None) -> Frozen:
    """A hashable, order-independent form of ``options`` (nested mappings too)."""

    def one(value: Any) -> Any:
        if isinstance(value, Mapping):
            return ("__mapping__", freeze(value))
        if isinstance(value, list | tuple):
            return ("__sequence__", tuple(one(v) for v in value))
        try:
            hash(value)
        except TypeError as err:
            raise InvalidInputError(
                f"storage option value {value!r} is not hashable; pass plain values"
            ) from err
        return value

    return tuple(sorted((str(k), one(v)) for k, v in (options or {}).items()))


def thaw(frozen: Frozen) -> dict[str, Any]:
    """The mapping back from :func:`freeze`."""

    def one(value: Any) -> Any:
        if isinstance(value, tuple) and len(value) == 2 and value[0] == "__mapping__":
            return thaw(value[1])
        if isinstance(value, tuple) and len(value) == 2 and value[0] == "__sequence__":
            return [one(v) for v in value[1]]
        return value

    return {k: one(v) for k, v in frozen}


def pop_backend(options: Mapping[str, Any] | None) -> tuple[str, dict[str, Any]]:
    """Split the ``backend`` choice off ``storage_options`` (default ``"obstore"``)."""
    options = dict(options or {})
    backend = str(options.pop(BACKEND_KEY, "obstore")).lower()
    if backend not in BACKENDS:
        raise InvalidInputError(
            f"storage_options[{BACKEND_KEY!r}] must be one of {BACKENDS}, got {backend!r}"
        )
    return backend, options


def redact(options: Mapping[str, Any]) -> dict[str, Any]:
    """``options`` with the values of secret-looking keys hidden (for reprs)."""
    out: dict[str, Any] = {}
    for k, v in options.items():
        if isinstance(v, Mapping):
            out[k] = redact(v)
        elif any(w in k.lower() for w in _SECRET_WORDS):
            out[k] = "***"
        else:
            out[k] = v
    return out
