"""Durations, display formats and text safety shared by triage's sources, analysis and report.

Durations are written as PromQL writes them (``10m``, ``1h30m``, ``250ms``); figures in the
report as percentages, milliseconds or seconds, and request counts.

Names in a report (stages, models, error types) come from span files and Prometheus labels that
any service can write. :func:`clean_text` bounds them and escapes the characters a terminal
acts on, so a hostile writer cannot clear the on-call engineer's screen, retitle the window or
plant a hyperlink, and a 10 MB name prints as a few hundred characters.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from typing import Final

from chainsight.errors import TriageError

__all__ = [
    "MAX_PATH",
    "MAX_TEXT",
    "MAX_UNIX_SECONDS",
    "clean_text",
    "format_count",
    "format_duration",
    "format_percent",
    "format_seconds",
    "parse_duration",
    "shown",
    "terminal_safe",
]

#: Characters kept of a name read from the data; longer ones end in ``...``. Enough for any real
#: stage, model or error type, small enough that a report line stays readable.
MAX_TEXT: Final = 200
#: Characters of a file path or URL kept in a message or the report's header.
MAX_PATH: Final = 500
#: Times (and durations) triage accepts, in seconds: what a signed 64-bit count of nanoseconds
#: holds (until 2262-04-11), the range of the timestamps spans carry.
MAX_UNIX_SECONDS: Final = 2**63 / 1e9

# What a terminal acts on instead of printing: C0 controls, DEL and C1 controls (ESC, BEL, CSI,
# OSC start clearing, retitling and hyperlinks); line and paragraph separators and bidirectional
# overrides (they make a line read differently from what it holds); lone surrogates, which JSON
# "\ud800" escapes produce and no encoder can write.
_OTHER_UNSAFE: Final = r"\x7f-\x9f\u2028\u2029\u202a-\u202e\u2066-\u2069\ud800-\udfff"
_UNSAFE: Final = re.compile(rf"[\x00-\x1f{_OTHER_UNSAFE}]")
# The same but for newline: the report's own line breaks (its template has no other control).
_UNSAFE_BUT_NEWLINE: Final = re.compile(rf"[\x00-\x09\x0b-\x1f{_OTHER_UNSAFE}]")

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
                f"duration {shown(text)} is not understood; write it like Prometheus does, "
                "e.g. '30s', '10m', '1h30m' (or a number of seconds)"
            ) from None
    if not math.isfinite(seconds) or seconds <= 0 or seconds >= MAX_UNIX_SECONDS:
        raise TriageError(
            f"duration {shown(text)} must be a positive length of time under 290 years, e.g. '10m'"
        )
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


# --- text from the data -----------------------------------------------------------------------


def _escape(match: re.Match[str]) -> str:
    code = ord(match.group())
    return f"\\x{code:02x}" if code <= 0xFF else f"\\u{code:04x}"


def clean_text(value: str, limit: int = MAX_TEXT) -> str:
    """``value`` safe to print and to keep: at most ``limit`` characters (then ``...``), with
    every character a terminal acts on written as an escape (``\\x1b``, ``\\u009b``).

    Applied where names enter triage, so the text report, ``--json`` and every message carry the
    same bounded, escaped text.
    """
    if len(value) > limit:
        value = value[:limit] + "..."
    return _UNSAFE.sub(_escape, value)


def shown(value: str, limit: int = MAX_TEXT) -> str:
    """``value`` quoted for an error message: bounded, and escaped as :func:`repr` escapes."""
    return repr(value[:limit] + "..." if len(value) > limit else value)


def terminal_safe(text: str) -> str:
    """Escape every character a terminal acts on except newline: the last guard on output."""
    return _UNSAFE_BUT_NEWLINE.sub(_escape, text)
