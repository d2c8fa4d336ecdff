"""Text that can leave the process: valid UTF-8, whatever the application handed over."""

from __future__ import annotations

import re
from typing import Final

__all__ = ["valid_text"]

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
