"""Content on spans: the one policy (off / redacted) applied to every place text can leak.

Prompt and completion text are captured only when the user opts in, and then shaped as the
GenAI conventions' JSON schemas say (``content_shapes``), redacted whole and cut so that the
JSON stays valid (``content_json``). With ``conventions=("otel", "openinference")`` the same
redacted, cut structures also become OpenInference's attributes (``openinference``): capture
off emits neither. Free text outside the content fields (exception messages, reasons, ``set()``
values, names) is redacted whatever the capture setting, by ``attrs.safe_text``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Final

from opentelemetry.util.types import AttributeValue

from chainsight import _names as n
from chainsight.config.settings import EVENT, SPAN, SPAN_AND_EVENT
from chainsight.stages import content_shapes as shapes
from chainsight.stages.content_json import redact_json
from chainsight.stages.openinference import content_attributes

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
_SHAPES: Final[dict[str, Callable[[object], object]]] = {
    "input_messages": shapes.input_messages,
    "system_instructions": shapes.system_instructions,
    "documents": shapes.documents,
}


def record_content(
    stage: Stage, content: dict[str, object], finish_reason: str | None = None
) -> None:
    """Capture opt-in content on the stage: shaped, redacted and cut first, dropped if that
    fails. ``finish_reason`` is the reply's, for output messages that do not carry their own."""
    cfg = stage.cfg
    mode = cfg.capture
    if mode is None or not stage.recording:
        return
    redactor = cfg.redactor
    safe: dict[str, tuple[object, str]] = {}
    for key, value in content.items():
        if value is None:
            continue
        if key == "query" and isinstance(value, str):
            text = redactor(value)  # plain text in both conventions
            if text is not None:
                safe[key] = (text, text)
            continue
        shaped: object
        if key == "output_messages":
            shaped = shapes.output_messages(value, finish_reason)
        else:
            shape = _SHAPES.get(key)
            shaped = shape(value) if shape is not None else value
        result = redact_json(shaped, redactor)
        if result is not None:  # None: failed closed, counted by the redactor's failure hook
            safe[key] = result
    if not safe:
        return
    attrs: dict[str, AttributeValue] = {_CONTENT_KEYS[key]: text for key, (_, text) in safe.items()}
    if cfg.openinference:
        attrs.update(content_attributes(stage.spec.kind, safe))
    if mode in (SPAN, SPAN_AND_EVENT):
        stage.span.set_attributes(attrs)
    if mode in (EVENT, SPAN_AND_EVENT):
        stage.span.add_event(_EVENT_NAME, attrs)
