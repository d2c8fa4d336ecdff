"""Attribute hygiene: OTel-legal values, capped strings, and no secrets from keyword names."""

from __future__ import annotations

import enum
import re
from collections.abc import Iterator, Mapping
from typing import Final

from opentelemetry.util.types import AttributeValue

__all__ = ["MAX_ATTRIBUTE_LENGTH", "clean_attributes", "coerce", "is_secret_name"]

MAX_ATTRIBUTE_LENGTH: Final = 4096
MAX_SEQUENCE_LENGTH: Final = 128
_INT64: Final = 2**63

_SECRET_NAMES: Final = frozenset(
    {
        "api_key", "apikey", "authorization", "auth", "password", "passwd", "pwd", "token",
        "access_token", "refresh_token", "id_token", "bearer", "secret", "client_secret",
        "cookie", "set_cookie", "private_key", "credentials", "credential", "session_token",
        "x_api_key",
    }
)  # fmt: skip
_SECRET_SUFFIX: Final = re.compile(r"(?:_|^)(?:api_?key|secret|password|passwd|private_key)$")


def is_secret_name(name: str) -> bool:
    """True for attribute names that carry credentials: never recorded."""
    key = name.lower().replace("-", "_")
    last = key.rsplit(".", 1)[-1]
    return last in _SECRET_NAMES or _SECRET_SUFFIX.search(last) is not None


def _cap(text: str) -> str:
    return text if len(text) <= MAX_ATTRIBUTE_LENGTH else text[:MAX_ATTRIBUTE_LENGTH]


def coerce(value: object) -> AttributeValue | None:
    """An OTel-legal attribute value for ``value``, or None when it cannot be one.

    Strings are capped, ints outside 64 bits become strings, enums give their value, sequences
    become tuples of one primitive type (mixed ones become strings). Other objects are refused
    rather than ``str()``-ed: their text may be huge, slow, or carry what must not be recorded.
    """
    kind = type(value)
    if kind is str:
        return _cap(value)  # type: ignore[arg-type]
    if kind is bool or kind is float:
        return value  # type: ignore[return-value]
    if kind is int:
        return value if -_INT64 <= value < _INT64 else str(value)  # type: ignore[operator,return-value]
    if isinstance(value, enum.Enum):
        return coerce(value.value)
    if isinstance(value, (list, tuple)):
        items = [coerce(v) for v in value[:MAX_SEQUENCE_LENGTH]]
        items = [v for v in items if v is not None and not isinstance(v, tuple)]
        if not items:
            return None
        first = type(items[0])
        if all(type(v) is first for v in items):
            return tuple(items)
        return tuple(str(v) for v in items)
    # Subclasses of the primitives: take the primitive value, not a possibly overridden __str__.
    if isinstance(value, bool):
        return bool(value)
    if isinstance(value, int):
        return coerce(int.__index__(value))
    if isinstance(value, float):
        return float.__float__(value)
    if isinstance(value, str):
        return _cap(str.__str__(value))
    return None


def clean_attributes(
    attrs: Mapping[str, object],
) -> Iterator[tuple[str, AttributeValue | None]]:
    """Yield ``(key, legal value or None)``; secret names and non-string keys are skipped."""
    for key, value in attrs.items():
        if not isinstance(key, str) or not key or is_secret_name(key):
            continue
        yield key, coerce(value)
