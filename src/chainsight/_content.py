"""Content on spans: the one policy (off / redacted) applied to every place text can leak.

Prompt and completion text are captured only when the user opts in, and then redacted and
truncated first. Exception messages recorded on spans are always redacted.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from chainsight._redact import redact_value

if TYPE_CHECKING:
    from chainsight._config import Config

__all__ = ["redact_message", "redacted"]

_DROPPED = "[content dropped: redaction failed]"


def redact_message(cfg: Config, message: str) -> str:
    """An exception message made safe to record: redacted, capped; a marker if that failed."""
    result = cfg.redactor(message)
    return _DROPPED if result is None else result


def redacted(cfg: Config, value: object) -> str | None:
    """``value`` (text, or messages as JSON) redacted and truncated; None when it failed."""
    return redact_value(value, cfg.redactor)
