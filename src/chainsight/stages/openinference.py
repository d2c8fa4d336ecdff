"""OpenInference names beside the GenAI ones, for Phoenix and Arize (``conventions=``).

Emitted only with ``configure(conventions=("otel", "openinference"))``. Three groups:

- static, when a stage starts: span kind, provider and system in OpenInference's vocabulary
  (``google``, ``aws``, ... where the GenAI conventions say ``gcp.gemini``, ``aws.bedrock``),
  the requested model, the reranker's model and top-k;
- content, only with capture on: built from the very structures the GenAI content attributes
  were serialised from, after redaction and the cut (``content_json``), so the two names of one
  prompt carry the same text and capture off emits neither;
- at the end: token counts with cache read/write and reasoning, cost, and ``llm.model_name``
  set to the model that answered (the response model), as Phoenix prices and shows it.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Final, Protocol

from opentelemetry.util.types import AttributeValue

from chainsight import _names as n

__all__ = ["content_attributes", "provider_and_system", "static_attributes", "usage_attributes"]

# gen_ai.provider.name -> (llm.provider, llm.system), as Phoenix maps them itself.
_PROVIDERS: Final[dict[str, tuple[str, str | None]]] = {
    "openai": ("openai", "openai"),
    "anthropic": ("anthropic", "anthropic"),
    "cohere": ("cohere", "cohere"),
    "mistral_ai": ("mistralai", "mistralai"),
    "deepseek": ("deepseek", None),
    "groq": ("groq", None),
    "perplexity": ("perplexity", None),
    "x_ai": ("xai", None),
    "moonshot_ai": ("moonshot", None),
    "azure.ai.openai": ("azure", "openai"),
    "azure.ai.inference": ("azure", None),
    "aws.bedrock": ("aws", None),
    "gcp.vertex_ai": ("google", "vertexai"),
    "gcp.gen_ai": ("google", None),
    "gcp.gemini": ("google", None),
}
# GenAI attributes whose OpenInference twin means the same, copied as they are.
_SAME_MEANING: Final = (
    (n.GEN_AI_TOOL_NAME, n.OI_TOOL_NAME),
    (n.GEN_AI_PROMPT_VERSION, n.OI_PROMPT_TEMPLATE_VERSION),
    (n.GEN_AI_CONVERSATION_ID, n.OI_SESSION_ID),
)
# Messages and documents flattened into numbered attributes: the content cut keeps a few
# kilobytes, so more than this many is never real content worth a name each.
_MAX_FLAT: Final = 64
_DOC_ID: Final = "document.id"
_DOC_SCORE: Final = "document.score"
_DOC_CONTENT: Final = "document.content"
_DOC_METADATA: Final = "document.metadata"


class UsageFacts(Protocol):
    """What this module reads of a stage's ``Usage`` (typed here: importing the stage module
    would be an import cycle through ``spec``)."""

    input_tokens: int
    output_tokens: int
    cache_read_tokens: int
    cache_write_tokens: int
    reasoning_tokens: int
    own_cost: float | None
    model: str | None
    response_model: str | None


def provider_and_system(provider: str) -> tuple[str, str | None]:
    """``(llm.provider, llm.system)`` for a ``gen_ai.provider.name`` value; a value
    OpenInference already uses (``google``) or does not know is kept as given."""
    return _PROVIDERS.get(provider, (provider, None))


def static_attributes(
    kind: str, span_kind: str, is_genai: bool, attrs: dict[str, AttributeValue]
) -> None:
    """What a stage of ``kind`` says about itself in OpenInference names (``span_kind``: its
    ``openinference.span.kind``), known when it starts; read from its GenAI attributes in
    ``attrs``, which are redacted already."""
    attrs[n.OI_SPAN_KIND] = span_kind
    model = attrs.get(n.GEN_AI_REQUEST_MODEL)
    if isinstance(model, str):
        if kind == "embedding":
            attrs[n.OI_EMBEDDING_MODEL_NAME] = model
        elif kind == "rerank":
            attrs[n.OI_RERANKER_MODEL_NAME] = model
        else:
            attrs[n.OI_LLM_MODEL_NAME] = model
            attrs[n.OI_LLM_REQUEST_MODEL_NAME] = model
    given = attrs.get(n.GEN_AI_PROVIDER_NAME)
    if isinstance(given, str) and is_genai:
        provider, system = provider_and_system(given)
        attrs[n.OI_LLM_PROVIDER] = provider
        if system is not None:
            attrs[n.OI_LLM_SYSTEM] = system
    top_k = attrs.get(n.GEN_AI_RETRIEVAL_TOP_K)
    if kind == "rerank" and type(top_k) is int:
        attrs[n.OI_RERANKER_TOP_K] = top_k
    for ours, theirs in _SAME_MEANING:
        value = attrs.get(ours)
        if value is not None:
            attrs[theirs] = value


def usage_attributes(kind: str, usage: UsageFacts, attrs: dict[str, AttributeValue]) -> None:
    """Token counts, cost and the answering model, at the end of a stage that recorded usage."""
    attrs[n.OI_LLM_TOKEN_COUNT_PROMPT] = usage.input_tokens
    attrs[n.OI_LLM_TOKEN_COUNT_COMPLETION] = usage.output_tokens
    attrs[n.OI_LLM_TOKEN_COUNT_TOTAL] = usage.input_tokens + usage.output_tokens
    if usage.cache_read_tokens:
        attrs[n.OI_LLM_TOKEN_COUNT_CACHE_READ] = usage.cache_read_tokens
    if usage.cache_write_tokens:
        attrs[n.OI_LLM_TOKEN_COUNT_CACHE_WRITE] = usage.cache_write_tokens
    if usage.reasoning_tokens:
        attrs[n.OI_LLM_TOKEN_COUNT_REASONING] = usage.reasoning_tokens
    if usage.own_cost is not None:
        attrs[n.OI_LLM_COST_TOTAL] = usage.own_cost
    answered = usage.response_model or usage.model
    if answered and kind not in ("embedding", "rerank"):
        # Phoenix shows and prices llm.model_name: the model that answered, not the alias asked.
        attrs[n.OI_LLM_MODEL_NAME] = answered
        attrs[n.OI_LLM_RESPONSE_MODEL_NAME] = answered


def content_attributes(
    kind: str, safe: Mapping[str, tuple[object, str]]
) -> dict[str, AttributeValue]:
    """OpenInference content attributes from the redacted, cut content of one record_content:
    ``safe`` maps a content key (``input_messages``, ``query``, ...) to ``(structure, text)``.
    """
    out: dict[str, AttributeValue] = {}
    system = safe.get("system_instructions")
    inputs = safe.get("input_messages")
    if inputs is not None or system is not None:
        shown = inputs if inputs is not None else system
        out[n.OI_INPUT_VALUE] = shown[1]  # type: ignore[index]
        out[n.OI_INPUT_MIME_TYPE] = n.OI_MIME_JSON
        if kind == "model":
            messages: list[object] = []
            if system is not None:
                messages.append({"role": "system", "parts": system[0]})
            if inputs is not None and isinstance(inputs[0], list):
                messages.extend(inputs[0])
            _messages(out, n.OI_LLM_INPUT_MESSAGES, messages)
    outputs = safe.get("output_messages")
    if outputs is not None and isinstance(outputs[0], list):
        text = _only_text(outputs[0])
        out[n.OI_OUTPUT_VALUE] = text if text is not None else outputs[1]
        out[n.OI_OUTPUT_MIME_TYPE] = n.OI_MIME_TEXT if text is not None else n.OI_MIME_JSON
        if kind == "model":
            _messages(out, n.OI_LLM_OUTPUT_MESSAGES, outputs[0])
    query = safe.get("query")
    if query is not None:
        if kind == "rerank":
            out[n.OI_RERANKER_QUERY] = query[1]
        else:
            out[n.OI_INPUT_VALUE] = query[1]
            out[n.OI_INPUT_MIME_TYPE] = n.OI_MIME_TEXT
    docs = safe.get("documents")
    if docs is not None and isinstance(docs[0], list):
        if kind == "rerank":
            _documents(out, n.OI_RERANKER_OUTPUT_DOCUMENTS, docs[0])
        elif kind == "retrieval":
            _documents(out, n.OI_RETRIEVAL_DOCUMENTS, docs[0])
        else:
            out[n.OI_OUTPUT_VALUE] = docs[1]
            out[n.OI_OUTPUT_MIME_TYPE] = n.OI_MIME_JSON
    return out


def _string(value: object) -> str:
    if isinstance(value, str):
        return value
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"), default=str)


def _texts(parts: object) -> list[str]:
    if not isinstance(parts, list):
        return []
    return [
        p["content"]
        for p in parts
        if isinstance(p, dict) and p.get("type") == "text" and isinstance(p.get("content"), str)
    ]


def _only_text(messages: list[object]) -> str | None:
    """The reply's text when the output is one message of text only (then shown as text)."""
    if len(messages) != 1 or not isinstance(messages[0], dict):
        return None
    parts = messages[0].get("parts")
    texts = _texts(parts)
    if not texts or not isinstance(parts, list) or len(texts) != len(parts):
        return None
    return "".join(texts)


def _messages(out: dict[str, AttributeValue], prefix: str, messages: list[object]) -> None:
    """``prefix.N.message.{role,content,tool_calls,tool_call_id}``, as OpenInference flattens."""
    for index, message in enumerate(messages[:_MAX_FLAT]):
        if not isinstance(message, dict):
            continue
        base = f"{prefix}.{index}.message."
        out[base + "role"] = _string(message.get("role", ""))
        parts = message.get("parts")
        texts = _texts(parts)
        if texts:
            out[base + "content"] = "".join(texts)
        if not isinstance(parts, list):
            continue
        calls = 0
        for part in parts:
            if not isinstance(part, dict):
                continue
            if part.get("type") == "tool_call" and calls < _MAX_FLAT:
                call = f"{base}tool_calls.{calls}.tool_call."
                if part.get("id") is not None:
                    out[call + "id"] = _string(part["id"])
                out[call + "function.name"] = _string(part.get("name", ""))
                if part.get("arguments") is not None:
                    out[call + "function.arguments"] = _string(part["arguments"])
                calls += 1
            elif part.get("type") == "tool_call_response":
                if part.get("id") is not None:
                    out[base + "tool_call_id"] = _string(part["id"])
                if part.get("response") is not None:
                    out[base + "content"] = _string(part["response"])


def _documents(out: dict[str, AttributeValue], prefix: str, docs: list[object]) -> None:
    """``prefix.N.document.{id,score,content,metadata}``."""
    for index, doc in enumerate(docs[:_MAX_FLAT]):
        if not isinstance(doc, dict):
            continue
        base = f"{prefix}.{index}."
        if doc.get("id") is not None:
            out[base + _DOC_ID] = _string(doc["id"])
        score = doc.get("score")
        if isinstance(score, float):
            out[base + _DOC_SCORE] = score
        if doc.get("content") is not None:
            out[base + _DOC_CONTENT] = _string(doc["content"])
        if doc.get("metadata") is not None:
            out[base + _DOC_METADATA] = _string(doc["metadata"])
