"""Text that can leave the process: valid UTF-8, whatever the application handed over."""

from __future__ import annotations

import re
import reprlib
from typing import Final

__all__ = ["shown", "valid_text"]

_SURROGATE: Final = re.compile("[\ud800-\udfff]")


def valid_text(text: str) -> str:
    """``text`` with each lone surrogate replaced by U+FFFD, so that it encodes as UTF-8.

    Lone surrogates come from ``json.loads('"\\ud800"')`` and from ``surrogateescape``
    decoding (file names, environment variables); one in a metric label would fail every later
    scrape, one in a span would make the exporter drop its whole batch. ASCII text, nearly all
    of it, costs a flag check.
    """
    if text.isascii():
        return text
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return _SURROGATE.sub("\ufffd", text)
    return text


def shown(value: object, limit: int = 120) -> str:
    """``value`` as an error message shows it: ``repr`` bounded in depth and length.

    A value the user got wrong may be as odd as the mistake: nested thousands deep, huge, or
    with a ``__repr__`` that raises. The message about it must still be made.
    """
    try:
        text = reprlib.repr(value)
    except Exception:  # the value's own __repr__ failed
        text = f"<{type(value).__name__} object>"
    text = valid_text(text)
    return text if len(text) <= limit else text[: limit - 1] + "…"
