"""Durations and display formats shared by triage's sources, analysis and report.

Durations are written as PromQL writes them (``10m``, ``1h30m``, ``250ms``); figures in the
report as percentages, milliseconds or seconds, and request counts.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from typing import Final

from chainsight.errors import TriageError

__all__ = [
    "format_count",
    "format_duration",
    "format_percent",
    "format_seconds",
    "parse_duration",
]

_DURATION_RE: Final = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h|d|w|y)")
_UNIT_SECONDS: Final[Mapping[str, float]] = {
    "ms": 0.001,
    "s": 1.0,
    "m": 60.0,
    "h": 3600.0,
    "d": 86400.0,
    "w": 604800.0,
    "y": 31536000.0,
}


def parse_duration(text: str) -> float:
    """Parse a PromQL-style duration (``90s``, ``10m``, ``1h30m``, ``500ms``) into seconds.

    A bare number is taken as seconds. Raises :class:`TriageError` for anything else.
    """
    value = text.strip()
    try:
        seconds = float(value)
    except ValueError:
        pos = 0
        seconds = 0.0
        for match in _DURATION_RE.finditer(value):
            if match.start() != pos:
                break
            seconds += float(match.group(1)) * _UNIT_SECONDS[match.group(2)]
            pos = match.end()
        if pos != len(value) or not value:
            raise TriageError(
                f"duration {text!r} is not understood; write it like Prometheus does, "
                "e.g. '30s', '10m', '1h30m' (or a number of seconds)"
            ) from None
    if not math.isfinite(seconds) or seconds <= 0:
        raise TriageError(f"duration {text!r} must be a positive length of time, e.g. '10m'")
    return seconds


def format_duration(seconds: float) -> str:
    """Render seconds as a short PromQL duration (``1h30m``, ``45s``, ``250ms``)."""
    millis = round(seconds * 1000)
    if millis <= 0:
        return "0s"
    if millis % 1000:
        return f"{millis}ms"
    rest = millis // 1000
    parts = []
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60), ("s", 1)):
        if rest >= size:
            parts.append(f"{rest // size}{unit}")
            rest %= size
    return "".join(parts)


def format_count(value: float) -> str:
    """Render a request count: whole above 10 (``increase()`` extrapolates), else one decimal."""
    return str(round(value)) if value >= 10 or value == round(value) else f"{value:.1f}"


def format_percent(value: float | None) -> str:
    """Render a ratio as a percentage with one decimal (``12.5%``), ``-`` when unknown."""
    return "-" if value is None else f"{value * 100:.1f}%"


def format_seconds(value: float | None) -> str:
    """Render a latency as milliseconds below a second (``250ms``), else seconds (``1.50s``)."""
    if value is None:
        return "-"
    return f"{value * 1000:.0f}ms" if value < 1 else f"{value:.2f}s"
