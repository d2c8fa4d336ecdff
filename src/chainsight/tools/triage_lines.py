"""Reading a JSONL file that anyone may have written: bounded lines, nesting and numbers.

Span files gather the output of many services, and one bad or malicious writer must not crash
``chainsight triage``, exhaust its memory or stack, or make it misreport. Each line is held to
limits before and while it is parsed; a line that breaks one is not an error of the file but a
line to skip, counted under the reason, which the report then shows ("2 lines skipped: not
valid JSON"). Parsing stays with the standard library's ``json``; only what it is given and what
it may build is bounded here.
"""

from __future__ import annotations

import json
import math
import re
from collections import Counter
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from itertools import accumulate
from typing import IO, Any, Final

__all__ = [
    "MAX_DEPTH",
    "MAX_LINE_BYTES",
    "SKIP_NOT_JSON",
    "Skipped",
    "read_json_lines",
]

#: Bytes of one line. A span line is a few kilobytes; a line past this is not a span, and
#: reading it whole would let one line take all of the tool's memory.
MAX_LINE_BYTES: Final = 1 << 20
#: Nesting of arrays and objects in one line. A span is four levels deep; ``json`` recurses once
#: per level and a line of 200,000 ``[`` would exhaust the stack (RecursionError).
MAX_DEPTH: Final = 64
#: Digits of an integer. Times in nanoseconds have 19; Python's int() is quadratic in the digits.
MAX_INT_DIGITS: Final = 40

SKIP_TOO_LONG: Final = f"longer than {MAX_LINE_BYTES >> 20} MiB"
SKIP_NOT_UTF8: Final = "not UTF-8 text"
SKIP_TOO_DEEP: Final = f"nested deeper than {MAX_DEPTH} levels"
SKIP_BAD_NUMBER: Final = f"has a number that is NaN, infinite or over {MAX_INT_DIGITS} digits"
SKIP_NOT_JSON: Final = "not valid JSON"

_DEPTH_STEP: Final[Mapping[str, int]] = {"[": 1, "{": 1, "]": -1, "}": -1}
_ESCAPED: Final = re.compile(r"\\.", re.DOTALL)
_NOT_BRACKET: Final = re.compile(r"[^\[\]{}]+")


class _BadNumber(ValueError):
    """A number json would turn into inf, NaN or a huge int: the line is skipped."""


class _Skip(Exception):
    """This line is skipped; the argument is the reason (a ``SKIP_*`` string)."""


def _parse_int(text: str) -> int:
    if len(text) > MAX_INT_DIGITS + 1:  # + 1 for a minus sign
        raise _BadNumber(text[:20])
    return int(text)


def _parse_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):  # 1e999 reads as inf
        raise _BadNumber(text[:20])
    return value


def _parse_constant(text: str) -> Any:
    # NaN, Infinity and -Infinity: Python's json accepts them, JSON does not.
    raise _BadNumber(text)


def _too_deep(text: str) -> bool:
    """True when arrays and objects nest deeper than :data:`MAX_DEPTH` outside strings."""
    if text.count("[") + text.count("{") <= MAX_DEPTH:
        return False  # every real span line: no need to look closer
    # Drop escapes (so \" does not end a string), then the strings (every other piece between
    # quotes), then all but brackets: linear work with no regex that can backtrack.
    outside = "".join(_ESCAPED.sub("", text).split('"')[0::2])
    brackets = _NOT_BRACKET.sub("", outside)
    return any(depth > MAX_DEPTH for depth in accumulate(_DEPTH_STEP[c] for c in brackets))


def _parse(raw: bytes) -> Any:
    """The JSON value of one line; raise :class:`_Skip` with the reason it cannot be read."""
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise _Skip(SKIP_NOT_UTF8) from None
    if _too_deep(text):
        raise _Skip(SKIP_TOO_DEEP)
    try:
        return json.loads(
            text,
            parse_int=_parse_int,
            parse_float=_parse_float,
            parse_constant=_parse_constant,
        )
    except _BadNumber:
        raise _Skip(SKIP_BAD_NUMBER) from None
    except RecursionError:  # the depth check bounds this; kept so a deep stack cannot crash
        raise _Skip(SKIP_TOO_DEEP) from None
    except ValueError:
        raise _Skip(SKIP_NOT_JSON) from None


def _lines(handle: IO[bytes]) -> Iterator[bytes | None]:
    """Each line's bytes, or ``None`` for a line over :data:`MAX_LINE_BYTES` (read, not kept)."""
    while True:
        chunk = handle.readline(MAX_LINE_BYTES + 1)
        if not chunk:
            return
        if chunk.endswith(b"\n") or len(chunk) <= MAX_LINE_BYTES:
            yield chunk
            continue
        while chunk and not chunk.endswith(b"\n"):  # the rest of the long line, piece by piece
            chunk = handle.readline(MAX_LINE_BYTES)
        yield None


@dataclass
class Skipped:
    """Lines skipped, by reason, with the first line number of each so it can be looked at."""

    counts: Counter[str] = field(default_factory=Counter)
    first_line: dict[str, int] = field(default_factory=dict)

    def add(self, reason: str, line: int) -> None:
        """Count line number ``line`` as skipped for ``reason``."""
        self.counts[reason] += 1
        self.first_line.setdefault(reason, line)

    @property
    def total(self) -> int:
        """Lines skipped for any reason."""
        return sum(self.counts.values())

    def _ranked(self) -> list[tuple[str, int]]:
        return sorted(self.counts.items(), key=lambda item: (-item[1], item[0]))

    def report_lines(self) -> list[str]:
        """One ``"N lines skipped: reason, first at line L"`` per reason, most frequent first."""
        return [
            f"{_lines_word(count)} skipped: {why}, first at line {self.first_line[why]}"
            for why, count in self._ranked()
        ]

    def summary(self) -> str:
        """All reasons in one phrase, for an error message."""
        return "; ".join(self.report_lines())

    def to_dict(self) -> dict[str, dict[str, int]]:
        """The ``--json`` shape: ``{reason: {"lines": N, "first_line": L}}``."""
        return {
            why: {"lines": count, "first_line": self.first_line[why]}
            for why, count in self._ranked()
        }


def _lines_word(count: int) -> str:
    return f"{count} line{'' if count == 1 else 's'}"


def read_json_lines(handle: IO[bytes], skipped: Skipped) -> Iterator[tuple[int, Any]]:
    """``(line number, JSON value)`` of each non-blank line of ``handle``; a line that breaks a
    limit or is not JSON is counted in ``skipped`` instead."""
    for number, raw in enumerate(_lines(handle), start=1):
        if raw is None:
            skipped.add(SKIP_TOO_LONG, number)
            continue
        if not raw.strip():
            continue
        try:
            value = _parse(raw)
        except _Skip as skip:
            skipped.add(str(skip), number)
            continue
        yield number, value
