"""Field checks shared by the SLO spec and the release-regression spec.

Each helper takes the loaded value and ``where`` (the path of the field in the spec) and raises
:class:`ConfigurationError` naming the field, the value and what to write instead.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any, Final

from chainsight.errors import ConfigurationError

__all__ = [
    "ALERT_NAME_RE",
    "DURATION_RE",
    "check_keys",
    "duration_seconds",
    "fail",
    "mapping",
    "number",
    "string",
]

ALERT_NAME_RE: Final = re.compile(r"^[A-Z][A-Za-z0-9]*$")
# Prometheus durations the generator writes as they are: one unit, no compound forms.
DURATION_RE: Final = re.compile(r"^[1-9][0-9]*[smhd]$")
_UNIT_SECONDS: Final = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def fail(where: str, message: str) -> ConfigurationError:
    """Return the error for field ``where``; the caller raises it."""
    return ConfigurationError(f"{where}: {message}")


def mapping(value: object, where: str) -> Mapping[str, Any]:
    """Return ``value`` if it is a mapping."""
    if not isinstance(value, Mapping):
        raise fail(where, f"expected a mapping, got {type(value).__name__} {value!r}")
    return value


def check_keys(
    data: Mapping[str, Any], where: str, *, required: set[str], optional: set[str]
) -> None:
    """Refuse missing required keys and unknown ones (a typo would silently be ignored)."""
    missing = sorted(required - set(data))
    if missing:
        raise fail(where, f"missing key(s) {missing}; add them (see docs/slo.md)")
    unknown = sorted(set(data) - required - optional)
    if unknown:
        allowed = sorted(required | optional)
        raise fail(where, f"unknown key(s) {unknown}; allowed keys are {allowed}")


def string(value: object, where: str, pattern: re.Pattern[str] | None = None) -> str:
    """Return ``value`` if it is a non-empty string (matching ``pattern`` when given)."""
    if not isinstance(value, str) or not value:
        raise fail(where, f"expected a non-empty string, got {value!r}")
    if pattern is not None and not pattern.match(value):
        raise fail(where, f"{value!r} does not match {pattern.pattern}")
    return value


def number(value: object, where: str, *, minimum: float, example: str) -> float:
    """Return ``value`` as a float if it is a number not below ``minimum``."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value < minimum:
        raise fail(
            where, f"expected a number of at least {minimum:g} such as {example}, got {value!r}"
        )
    return float(value)


def duration_seconds(text: str) -> int:
    """Seconds in a duration that matched :data:`DURATION_RE` (``90s``, ``10m``, ``1d``)."""
    return int(text[:-1]) * _UNIT_SECONDS[text[-1]]
