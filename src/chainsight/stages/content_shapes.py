"""Captured content in the shapes of the OpenTelemetry GenAI conventions' JSON schemas.

``record_content`` takes what the application has at hand: OpenAI- or Anthropic-style chat
messages (``{"role": "user", "content": "..."}``, content blocks, ``tool_calls``), messages
already in the conventions' ``parts`` shape, a system prompt as a string, documents as dicts
or SDK objects. Here each becomes what the conventions' schemas (vendored in
``tests/data/semconv_genai``) require:

- input messages: ``[{"role", "parts": [{"type": "text", "content"}, ...]}]``;
- output messages: the same with ``finish_reason`` on each (deprecated in the current schema in
  favour of ``gen_ai.response.finish_reasons``, but required by Phoenix's reader, which is
  generated from an earlier one: we set both);
- system instructions: a list of parts;
- retrieval documents: ``[{"id": "...", "score": 0.9, "content": "..."}]``.

Nothing here reads a value's text: redaction comes next, on the shaped value. Reading a field
of a foreign object never raises (``_field``).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Final

__all__ = ["documents", "input_messages", "output_messages", "system_instructions"]

# Past this many messages, parts or documents the rest is left out: the redactor keeps a few
# kilobytes anyway, and the walk after this one stops early too.
_MAX_ITEMS: Final = 256
# Finish reasons in gen_ai.response.finish_reasons follow the providers ("tool_calls"); the
# output-message schema spells that one "tool_call".
_MESSAGE_FINISH: Final = {"tool_calls": "tool_call"}
# Where documents keep their text, in the order tried: ours, LangChain, Chroma, snippets.
_DOCUMENT_TEXT: Final = ("content", "text", "page_content", "document", "snippet")
_DOCUMENT_METADATA: Final = ("metadata", "payload")

Part = dict[str, object]


def _field(obj: object, key: str) -> object:
    """``obj[key]`` for mappings, ``obj.key`` otherwise; ``None`` when absent or unreadable."""
    try:
        if isinstance(obj, Mapping):
            return obj.get(key)
        return getattr(obj, key, None)
    except Exception:  # a property of a foreign object can raise anything
        return None


def _items(value: object) -> list[object]:
    if isinstance(value, (list, tuple)):
        return list(value[:_MAX_ITEMS])
    return [value]


def _text(content: object) -> Part:
    return {"type": "text", "content": content if isinstance(content, str) else str(content)}


def _arguments(value: object) -> object:
    """Tool-call arguments as an object where they are JSON text (the schema's preference)."""
    if isinstance(value, str):
        try:
            return json.loads(value)
        except ValueError:
            return value
    return value


def _block(block: object) -> Part:
    """One content block (OpenAI, Anthropic, or already a part) as a part of the schema."""
    if isinstance(block, str):
        return _text(block)
    kind = _field(block, "type")
    if not isinstance(kind, str):
        return _text(block)
    if kind in ("text", "input_text", "output_text"):
        content = _field(block, "text")
        return _text(content if content is not None else _field(block, "content"))
    if kind == "thinking":  # Anthropic extended thinking
        return {"type": "reasoning", "content": str(_field(block, "thinking") or "")}
    if kind == "tool_use":  # Anthropic
        return {
            "type": "tool_call",
            "id": _field(block, "id"),
            "name": str(_field(block, "name") or ""),
            "arguments": _field(block, "input"),
        }
    if kind == "tool_result":  # Anthropic
        return {
            "type": "tool_call_response",
            "id": _field(block, "tool_use_id"),
            "response": _field(block, "content"),
        }
    if kind == "image_url":  # OpenAI
        url = _field(_field(block, "image_url"), "url")
        if isinstance(url, str) and not url.startswith("data:"):
            return {"type": "uri", "modality": "image", "uri": url}
    if isinstance(block, Mapping):
        return dict(block)  # a part already, or a generic one: the schema allows any type
    return {"type": kind}


def _content_parts(content: object) -> list[Part]:
    if content is None:
        return []
    if isinstance(content, (list, tuple)):
        return [_block(b) for b in content[:_MAX_ITEMS]]
    return [_block(content)]


def _tool_calls(calls: object) -> list[Part]:
    """OpenAI chat ``tool_calls`` as ``tool_call`` parts."""
    parts: list[Part] = []
    for call in _items(calls):
        function = _field(call, "function")
        parts.append(
            {
                "type": "tool_call",
                "id": _field(call, "id"),
                "name": str(_field(function, "name") or ""),
                "arguments": _arguments(_field(function, "arguments")),
            }
        )
    return parts


def _message(message: object, default_role: str) -> dict[str, object]:
    """One message (a dict, or an SDK message object such as OpenAI's) in the parts shape."""
    role = _field(message, "role")
    if isinstance(message, str) or (role is None and _field(message, "parts") is None):
        return {"role": default_role, "parts": [_text(message)]}
    role = role if isinstance(role, str) and role else default_role
    given = _field(message, "parts")
    if isinstance(given, (list, tuple)):
        parts = [_block(p) for p in given[:_MAX_ITEMS]]
    elif role == "tool" and _field(message, "tool_call_id") is not None:  # OpenAI tool result
        parts = [
            {
                "type": "tool_call_response",
                "id": _field(message, "tool_call_id"),
                "response": _field(message, "content"),
            }
        ]
    else:
        parts = _content_parts(_field(message, "content"))
        calls = _field(message, "tool_calls")
        if calls:
            parts += _tool_calls(calls)
    shaped: dict[str, object] = {"role": role, "parts": parts}
    name = _field(message, "name")
    if isinstance(name, str):
        shaped["name"] = name
    return shaped


def input_messages(value: object) -> list[dict[str, object]]:
    """The messages sent to the model; a bare string is one user message."""
    return [_message(m, "user") for m in _items(value)]


def output_messages(value: object, finish_reason: str | None) -> list[dict[str, object]]:
    """The model's messages, each with a ``finish_reason`` (its own, else ``finish_reason``,
    else ``""``: not reported)."""
    shaped = []
    for message in _items(value):
        out = _message(message, "assistant")
        own = None if isinstance(message, str) else _field(message, "finish_reason")
        reason = own if isinstance(own, str) else finish_reason or ""
        out["finish_reason"] = _MESSAGE_FINISH.get(reason, reason)
        shaped.append(out)
    return shaped


def system_instructions(value: object) -> list[Part]:
    """The system prompt as a list of parts; a string is one text part."""
    return [_block(p) for p in _items(value)]


def _document(doc: object) -> dict[str, object]:
    if isinstance(doc, str):
        return {"content": doc}
    shaped: dict[str, object] = {}
    ident = _field(doc, "id")
    if ident is not None and not isinstance(ident, bool):  # str, int, a UUID object
        shaped["id"] = str(ident)
    score = _field(doc, "score")
    if isinstance(score, (int, float)) and not isinstance(score, bool):
        shaped["score"] = float(score)
    for key in _DOCUMENT_TEXT:
        text = _field(doc, key)
        if text is not None:
            shaped["content"] = text
            break
    for key in _DOCUMENT_METADATA:
        meta = _field(doc, key)
        if meta is not None:
            shaped["metadata"] = meta
            break
    if isinstance(doc, Mapping):
        taken = {"id", "score", *_DOCUMENT_TEXT, *_DOCUMENT_METADATA}
        for key, item in doc.items():  # what else the application put there, as given
            if key not in taken:
                shaped[key] = item
    return shaped


def documents(value: object) -> list[dict[str, object]]:
    """Retrieved (or reranked) documents: ``id`` as a string, ``score``, ``content``."""
    return [_document(d) for d in _items(value)]
