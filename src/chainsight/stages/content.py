"""Content on spans: the one policy (off / redacted) applied to every place text can leak.

Prompt and completion text are captured only when the user opts in, and then redacted and
truncated first. Free text outside the content fields (exception messages, reasons, ``set()``
values, names) is redacted whatever the capture setting, by ``attrs.safe_text``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Final

from opentelemetry.util.types import AttributeValue

from chainsight import _names as n
from chainsight.config.settings import EVENT, SPAN, SPAN_AND_EVENT
from chainsight.stages.redact import redact_value

if TYPE_CHECKING:
    from chainsight.stages.stage import Stage

_EVENT_NAME: Final = "gen_ai.client.inference.operation.details"


__all__ = ["record_content"]

_CONTENT_KEYS: Final = {
    "input_messages": n.GEN_AI_INPUT_MESSAGES,
    "output_messages": n.GEN_AI_OUTPUT_MESSAGES,
    "system_instructions": n.GEN_AI_SYSTEM_INSTRUCTIONS,
    "query": n.GEN_AI_RETRIEVAL_QUERY_TEXT,
    "documents": n.GEN_AI_RETRIEVAL_DOCUMENTS,
}


def record_content(stage: Stage, content: dict[str, object]) -> None:
    """Capture opt-in content on the stage: redacted and truncated first, dropped if that fails."""
    cfg = stage.cfg
    mode = cfg.capture
    if mode is None or not stage.recording:
        return
    attrs: dict[str, AttributeValue] = {}
    for key, value in content.items():
        if value is None:
            continue
        safe = redact_value(value, cfg.redactor)
        if safe is None:
            continue  # fail closed: counted by the redactor's failure hook
        attrs[_CONTENT_KEYS[key]] = safe
    if not attrs:
        return
    if mode in (SPAN, SPAN_AND_EVENT):
        stage.span.set_attributes(attrs)
    if mode in (EVENT, SPAN_AND_EVENT):
        stage.span.add_event(_EVENT_NAME, attrs)
