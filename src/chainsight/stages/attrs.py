"""Attribute hygiene: OTel-legal values, capped strings, no secrets from keyword names, and
free text redacted before it is recorded."""

from __future__ import annotations

import enum
import re
from collections.abc import Callable, Iterator, Mapping
from typing import Final

from opentelemetry.util.types import AttributeValue

from chainsight.stages.redact import number_text

__all__ = [
    "DROPPED",
    "MAX_ATTRIBUTE_LENGTH",
    "clean_attributes",
    "coerce",
    "is_secret_name",
    "safe_attribute",
    "safe_text",
]

#: What a redactor is to this module: text and a byte limit in, redacted text (or None) out.
TextRedactor = Callable[[str, int], "str | None"]

DROPPED: Final = "[content dropped: redaction failed]"
"""Recorded in place of free text whose redaction failed (the failure is counted)."""


MAX_ATTRIBUTE_LENGTH: Final = 4096
MAX_SEQUENCE_LENGTH: Final = 128
_INT64: Final = 2**63
_HUGE: Final = 2**256

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


def coerce(value: object) -> AttributeValue | None:
    """An OTel-legal attribute value for ``value``, or None when it cannot be one.

    Strings are returned whole: they are cut only after redaction (:func:`safe_attribute`), so
    no secret is ever exported in part. Ints outside 64 bits become strings (beyond 256 bits
    they are refused), enums give their value, sequences become tuples of one primitive type
    (mixed ones become strings). Other objects are refused rather than ``str()``-ed: their text
    may be huge, slow, or carry what must not be recorded.
    """
    kind = type(value)
    if kind is str or kind is bool or kind is float:
        return value  # type: ignore[return-value]
    if kind is int:
        if -_INT64 <= value < _INT64:  # type: ignore[operator]
            return value  # type: ignore[return-value]
        return str(value) if -_HUGE < value < _HUGE else None  # type: ignore[operator]
    if isinstance(value, enum.Enum):
        return coerce(value.value)
    if isinstance(value, (list, tuple)):
        # Items are taken one level deep only: a nested list is no attribute value, and
        # recursing into one could go as deep as the application's data does.
        items = [_item(v) for v in value[:MAX_SEQUENCE_LENGTH]]
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
        return str.__str__(value)
    return None


def safe_text(redactor: TextRedactor, text: str, limit: int = MAX_ATTRIBUTE_LENGTH) -> str:
    """Free text from the application made safe to export: valid UTF-8, redacted, then cut to
    ``limit`` bytes; :data:`DROPPED` if redaction failed. Runs whatever the capture setting:
    a reason or an exception message often quotes the user's input."""
    result = redactor(text, limit)
    return DROPPED if result is None else result


def safe_attribute(redactor: TextRedactor, value: AttributeValue) -> AttributeValue:
    """A legal attribute value (from :func:`coerce`) with its text redacted.

    Strings go through :func:`safe_text`; a number long enough to be a card or phone number is
    looked at as its digits and recorded as the redacted text if the redactor finds one.
    """
    kind = type(value)
    if kind is str:
        return safe_text(redactor, value)  # type: ignore[arg-type]
    if kind is int or kind is float:
        digits = number_text(value)  # type: ignore[arg-type]
        if digits is None:
            return value
        redacted = safe_text(redactor, digits)
        return value if redacted == digits else redacted
    if kind is tuple:
        items = [safe_attribute(redactor, v) for v in value]  # type: ignore[union-attr]
        if all(type(v) is type(items[0]) for v in items):
            return tuple(items)
        return tuple(str(v) for v in items)
    return value


def _item(value: object) -> AttributeValue | None:
    return None if isinstance(value, (list, tuple)) else coerce(value)


def clean_attributes(
    attrs: Mapping[str, object],
) -> Iterator[tuple[str, AttributeValue | None]]:
    """Yield ``(key, legal value or None)``; secret names and non-string keys are skipped."""
    for key, value in attrs.items():
        if not isinstance(key, str) or not key or is_secret_name(key):
            continue
        yield key, coerce(value)
