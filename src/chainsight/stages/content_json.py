"""Captured content as JSON that stays valid when it is too long for ``max_content_bytes``.

The GenAI conventions' message, instruction and document attributes are JSON that consumers
parse (Phoenix validates them against the conventions' schemas and shows nothing when that
fails). Cutting the serialised text would break the JSON, so a value over the limit is cut
inside: every text longer than a common cap is cut to it, with the truncation marker, and the
cap is the largest that fits. Only when even short texts do not fit are the last items of the
list left out. The texts were redacted whole before any of this (``redact_structure``), and a
cut text is checked again by the redactor, as every cut is.
"""

from __future__ import annotations

import json
from typing import Any, Final

from chainsight._text import valid_text
from chainsight.stages.redact import Redactor, redact_structure

__all__ = ["redact_json"]

# The shortest a cut text gets: room for a few characters and the marker.
_MIN_CAP: Final = 48

# Every string inside a structure, with the list or dict that holds it and its index or key.
_Leaves = list[tuple[Any, Any, str]]


def _dumps(value: object) -> str:
    return valid_text(json.dumps(value, ensure_ascii=False, separators=(",", ":"), default=str))


def _size(text: str) -> int:
    return len(text.encode("utf-8", "surrogatepass"))


def redact_json(value: object, redactor: Redactor) -> tuple[object, str] | None:
    """``(redacted structure, its compact JSON within the redactor's byte limit)``.

    ``None`` when nothing may be recorded: redaction or serialisation failed (counted on the
    redactor). The structure is what the JSON says, for other names of the same content
    (OpenInference's flattened attributes), so both carry exactly the same redacted text.
    """
    try:
        walked, stopped = redact_structure(value, redactor)
        text = _dumps(walked)
        limit = redactor.max_bytes
        if _size(text) <= limit:
            return walked, text
        return _fit(walked, redactor, limit, stopped)
    except Exception as exc:
        redactor._record_failure(exc)
        return None


def _leaves(
    value: object, out: list[tuple[list[object] | dict[object, object], object, str]]
) -> None:
    """Every string inside ``value`` with the container and key that hold it."""
    if isinstance(value, dict):
        for key, item in value.items():
            if isinstance(item, str):
                out.append((value, key, item))
            else:
                _leaves(item, out)
    elif isinstance(value, list):
        for index, item in enumerate(value):
            if isinstance(item, str):
                out.append((value, index, item))
            else:
                _leaves(item, out)


def _capped(walked: object, leaves: _Leaves, redactor: Redactor, cap: int, stopped: bool) -> str:
    """The JSON of ``walked`` with every text longer than ``cap`` bytes cut to it."""
    dropped = None if stopped else 0
    for container, key, text in leaves:
        kept = text if _size(text) <= cap else redactor._truncate(text, dropped=dropped, limit=cap)
        container[key] = kept
    return _dumps(walked)


def _cheap(walked: object, leaves: _Leaves, cap: int) -> int:
    """The JSON size of ``walked`` with every text cut to ``cap`` bytes by a plain byte cut:
    an upper bound of what the real cut (redacted again, marker within ``cap``) gives, found
    without redacting anything."""
    for container, key, text in leaves:
        data = text.encode("utf-8", "surrogatepass")
        container[key] = text if len(data) <= cap else data[:cap].decode("utf-8", "ignore")
    return _size(_dumps(walked))


def _fit(walked: object, redactor: Redactor, limit: int, stopped: bool) -> tuple[object, str]:
    """Cut the texts inside ``walked`` (in place) until its JSON fits ``limit`` bytes."""
    while True:
        leaves: _Leaves = []
        _leaves(walked, leaves)
        if _cheap(walked, leaves, _MIN_CAP) <= limit:
            low, high = _MIN_CAP, max((_size(t) for _, _, t in leaves), default=_MIN_CAP)
            while low < high:  # the largest cap that fits: ~12 rounds for a 4 KB limit
                middle = (low + high + 1) // 2
                if _cheap(walked, leaves, middle) <= limit:
                    low = middle
                else:
                    high = middle - 1
            text = _capped(walked, leaves, redactor, low, stopped)
            while _size(text) > limit and low > _MIN_CAP:  # the bound held not: cut tighter
                low = max(_MIN_CAP, low * 9 // 10)
                text = _capped(walked, leaves, redactor, low, stopped)
            if _size(text) <= limit:
                return walked, text
        for container, key, original in leaves:
            container[key] = original
        if not isinstance(walked, list) or len(walked) <= 1:
            # Structure alone beyond the limit (hundreds of tiny items in one message): the
            # plain cut, as for any text. Rare, and still redacted and bounded.
            return walked, redactor._truncate(_dumps(walked), dropped=None)
        # Too many items for even short texts: keep the first half (all but the last when few).
        keep = len(walked) // 2 if len(walked) > 8 else len(walked) - 1
        del walked[keep:]
        stopped = True
