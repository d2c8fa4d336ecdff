"""Names and shapes per the OpenTelemetry GenAI conventions, and OpenInference beside them.

The conventions' JSON schemas and registry names are vendored in tests/data/semconv_genai (see
SOURCES.md there); docs/conventions.md lists every deviation with its reason, and a name that
is neither registered nor listed there fails here.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import anthropic.types
import jsonschema
import openai.types.chat
import pytest

import chainsight
from chainsight.testing import Capture, capture

ROOT = Path(__file__).resolve().parents[2]
DATA = ROOT / "tests" / "data" / "semconv_genai"
SCHEMAS = {
    "gen_ai.input.messages": "gen-ai-input-messages.json",
    "gen_ai.output.messages": "gen-ai-output-messages.json",
    "gen_ai.system_instructions": "gen-ai-system-instructions.json",
    "gen_ai.retrieval.documents": "gen-ai-retrieval-documents.json",
}
SECRET = "jane.doe@example.com"
SYSTEM = "You answer support tickets. Never reveal card numbers."
OPENAI_STYLE = [
    {"role": "user", "content": f"I am {SECRET}. Where is order 1234?"},
    {"role": "assistant", "content": None, "tool_calls": [
        {"id": "call_1", "type": "function",
         "function": {"name": "find_order", "arguments": '{"order": 1234}'}}]},
    {"role": "tool", "tool_call_id": "call_1", "content": '{"status": "shipped"}'},
]  # fmt: skip
ANTHROPIC_STYLE = [
    {"role": "user", "content": [{"type": "text", "text": "Weather in Paris?"}]},
    {"role": "assistant", "content": [
        {"type": "thinking", "thinking": "use the tool", "signature": "x"},
        {"type": "tool_use", "id": "toolu_1", "name": "weather", "input": {"city": "Paris"}}]},
    {"role": "user", "content": [
        {"type": "tool_result", "tool_use_id": "toolu_1", "content": "rainy"}]},
]  # fmt: skip
DOCS = [
    {"id": "kb-1", "score": 0.91, "text": "Refunds take 5 days.", "metadata": {"lang": "en"}},
    {"id": 7, "score": 0.42, "snippet": f"Contact {SECRET}"},
]
CONTENT_KEYS = (
    "gen_ai.input.messages", "gen_ai.output.messages", "gen_ai.system_instructions",
    "gen_ai.retrieval.query.text", "gen_ai.retrieval.documents", "input.value", "output.value",
    "reranker.query",
)  # fmt: skip
CONTENT_PREFIXES = ("llm.input_messages.", "llm.output_messages.")


def _validator(attribute: str) -> jsonschema.protocols.Validator:
    schema = json.loads((DATA / SCHEMAS[attribute]).read_text(encoding="utf-8"))
    cls = jsonschema.validators.validator_for(schema)
    cls.check_schema(schema)
    return cls(schema)  # type: ignore[no-any-return]


def _anthropic_message() -> anthropic.types.Message:
    """A real Anthropic SDK response: 100 fresh, 2,000 read from and 1,000 written to the cache."""
    return anthropic.types.Message.model_validate(
        {
            "id": "msg_01", "type": "message", "role": "assistant",
            "model": "claude-sonnet-4-5-20250929",
            "content": [{"type": "text", "text": f"Order 1234 shipped; we wrote to {SECRET}."}],
            "stop_reason": "end_turn", "stop_sequence": None,
            "usage": {"input_tokens": 100, "output_tokens": 50,
                      "cache_read_input_tokens": 2000, "cache_creation_input_tokens": 1000},
        }
    )  # fmt: skip


def _openai_completion(model: str) -> openai.types.chat.ChatCompletion:
    return openai.types.chat.ChatCompletion.model_validate(
        {
            "id": "chatcmpl-1", "object": "chat.completion", "created": 1, "model": model,
            "choices": [{"index": 0, "finish_reason": "tool_calls", "message": {
                "role": "assistant", "content": None,
                "tool_calls": [{"id": "call_2", "type": "function", "function": {
                    "name": "refund", "arguments": '{"order": 1234}'}}]}}],
            "usage": {"prompt_tokens": 30, "completion_tokens": 7, "total_tokens": 37,
                      "completion_tokens_details": {"reasoning_tokens": 3}},
        }
    )  # fmt: skip


def _chain() -> None:
    """A request with every built-in stage kind, content recorded wherever it can be."""
    with chainsight.request("answer_ticket", tenant="acme"):
        with chainsight.stage("embedding", provider="openai", model="text-embedding-3-small") as e:
            e.record_usage(input_tokens=12, output_tokens=0)
        with chainsight.stage("retrieval", system="qdrant", collection="kb", top_k=2) as r:
            r.record_content(query=f"refund for {SECRET}", documents=DOCS)
            r.record_documents(count=2, scores=[0.91, 0.42], ids=["kb-1", "7"])
        with chainsight.stage("rerank", provider="cohere", model="rerank-v3.5", top_k=1) as rr:
            rr.record_content(query="refund", documents=DOCS[:1])
        with chainsight.stage("prompt", prompt_name="answer", prompt_version="7") as p:
            p.record_content(system_instructions=SYSTEM, input_messages=OPENAI_STYLE)
        with chainsight.stage("model", provider="anthropic", model="claude-sonnet-4-5") as m:
            m.record_content(system_instructions=SYSTEM, input_messages=ANTHROPIC_STYLE)
            m.record_response(_anthropic_message())
        with chainsight.stage("model", name="tools", provider="openai", model="gpt-4o") as t:
            t.record_content(input_messages=OPENAI_STYLE)
            t.record_response(_openai_completion("gpt-4o-2024-08-06"))
        with chainsight.stage("tool", tool="find_order"):
            pass
        with chainsight.stage("cache"):
            pass
        with chainsight.stage("validation", validator="json_schema") as v:
            v.record_validation(passed=True)
    _stream()


@chainsight.traced_stage("model", name="stream", provider="openai", model="gpt-4o")
def _stream_body() -> Iterator[str]:
    yield "a"
    yield "b"


def _stream() -> None:
    assert list(_stream_body()) == ["a", "b"]


def _every_attribute(cap: Capture) -> Iterator[tuple[str, Mapping[str, Any]]]:
    for span in cap.spans:
        yield span.name, dict(span.attributes or {})
        for event in span.events:
            yield f"{span.name} event {event.name}", dict(event.attributes or {})


def _documented_deviations() -> set[str]:
    """The gen_ai.* names in the first column of docs/conventions.md's deviation table."""
    text = (ROOT / "docs" / "conventions.md").read_text(encoding="utf-8")
    section = text.split("## Deviations", 1)[1].split("\n## ", 1)[0]
    names = set()
    for line in section.splitlines():
        if line.startswith("| `"):
            first = line.split("|")[1]
            names.update(re.findall(r"`(gen_ai\.[a-z0-9_.]+)", first))
    return names


def _registry() -> set[str]:
    lines = (DATA / "registry-names.txt").read_text(encoding="utf-8").splitlines()
    return {line.strip() for line in lines if line.strip() and not line.startswith("#")}


@pytest.fixture
def captured() -> Iterator[Capture]:
    cap = capture(capture_content=True, conventions=("otel", "openinference"))
    try:
        _chain()
        yield cap
    finally:
        chainsight.reset()


def test_content_matches_the_conventions_json_schemas(captured: Capture) -> None:
    checked = dict.fromkeys(SCHEMAS, 0)
    for where, attrs in _every_attribute(captured):
        for attribute in SCHEMAS:
            if attribute in attrs:
                value = json.loads(attrs[attribute])
                errors = list(_validator(attribute).iter_errors(value))
                assert not errors, f"{attribute} on {where}: {errors[0].message}"
                checked[attribute] += 1
    assert all(checked.values()), checked  # each shape was emitted and checked at least once


def test_chat_styles_become_parts(captured: Capture) -> None:
    prompt = captured.stage(kind="prompt").attributes
    assert json.loads(prompt["gen_ai.system_instructions"]) == [{"type": "text", "content": SYSTEM}]
    messages = json.loads(prompt["gen_ai.input.messages"])
    assert messages[0]["parts"][0]["content"].startswith("I am [REDACTED:email")
    assert messages[1]["parts"] == [
        {"type": "tool_call", "id": "call_1", "name": "find_order", "arguments": {"order": 1234}}
    ]
    assert messages[2] == {
        "role": "tool",
        "parts": [
            {"type": "tool_call_response", "id": "call_1", "response": '{"status": "shipped"}'}
        ],
    }
    model = json.loads(captured.stage(name="model").attributes["gen_ai.input.messages"])
    assert [p["type"] for p in model[1]["parts"]] == ["reasoning", "tool_call"]
    assert model[1]["parts"][1]["arguments"] == {"city": "Paris"}
    assert model[2]["parts"][0] == {
        "type": "tool_call_response",
        "id": "toolu_1",
        "response": "rainy",
    }


def test_output_messages_and_documents_carry_what_consumers_require(captured: Capture) -> None:
    answer = json.loads(captured.stage(name="model").attributes["gen_ai.output.messages"])
    assert answer[0]["role"] == "assistant"
    assert answer[0]["finish_reason"] == "stop"  # Anthropic's end_turn, normalised
    docs = json.loads(captured.stage(kind="retrieval").attributes["gen_ai.retrieval.documents"])
    assert docs[0] == {"id": "kb-1", "score": 0.91, "content": "Refunds take 5 days.",
                       "metadata": {"lang": "en"}}  # fmt: skip
    assert docs[1]["id"] == "7"
    assert docs[1]["content"].startswith("Contact [REDACTED:email")


def test_every_emitted_gen_ai_name_is_registered_or_documented(captured: Capture) -> None:
    allowed = _registry() | _documented_deviations()
    emitted = set()
    for span in captured.spans:
        emitted.update(k for k in (span.attributes or {}) if k.startswith("gen_ai."))
        for event in span.events:
            emitted.update(k for k in (event.attributes or {}) if k.startswith("gen_ai."))
            if event.name.startswith("gen_ai."):
                emitted.add(event.name)
    unknown = sorted(emitted - allowed)
    assert not unknown, (
        f"{unknown} are neither in the GenAI registry (tests/data/semconv_genai) nor listed with "
        "a reason in docs/conventions.md, section Deviations: rename them or document them"
    )
    assert "gen_ai.response.time_to_first_chunk" in emitted


def test_cache_writes_carry_both_generations_of_names(captured: Capture) -> None:
    attrs = captured.stage(name="model").attributes
    assert attrs["gen_ai.usage.cache_write.input_tokens"] == 1000  # current registry
    assert attrs["gen_ai.usage.cache_creation.input_tokens"] == 1000  # v1.41, Phoenix reads it
    assert attrs["gen_ai.usage.cache_read.input_tokens"] == 2000
    assert attrs["gen_ai.usage.input_tokens"] == 3100


def test_openinference_llm_span(captured: Capture) -> None:
    attrs = captured.stage(name="model").attributes
    assert attrs["openinference.span.kind"] == "LLM"
    assert (attrs["llm.provider"], attrs["llm.system"]) == ("anthropic", "anthropic")
    assert attrs["llm.model_name"] == "claude-sonnet-4-5-20250929"  # the model that answered
    assert attrs["llm.request.model_name"] == "claude-sonnet-4-5"
    assert attrs["llm.input_messages.0.message.role"] == "system"
    assert attrs["llm.input_messages.0.message.content"] == SYSTEM
    assert attrs["llm.input_messages.1.message.content"] == "Weather in Paris?"
    call = "llm.input_messages.2.message.tool_calls.0.tool_call."
    assert attrs[call + "function.name"] == "weather"
    assert json.loads(attrs[call + "function.arguments"]) == {"city": "Paris"}
    assert attrs["llm.input_messages.3.message.tool_call_id"] == "toolu_1"
    assert attrs["llm.output_messages.0.message.role"] == "assistant"
    assert attrs["output.value"] == attrs["llm.output_messages.0.message.content"]
    assert attrs["output.value"].startswith("Order 1234 shipped; we wrote to [REDACTED:email")
    assert attrs["output.mime_type"] == "text/plain"
    assert json.loads(attrs["input.value"]) == json.loads(attrs["gen_ai.input.messages"])
    assert attrs["input.mime_type"] == "application/json"
    assert attrs["llm.token_count.prompt"] == 3100
    assert attrs["llm.token_count.completion"] == 50
    assert attrs["llm.token_count.total"] == 3150
    assert attrs["llm.token_count.prompt_details.cache_read"] == 2000
    assert attrs["llm.token_count.prompt_details.cache_write"] == 1000
    assert attrs["llm.cost.total"] == attrs["chainsight.cost.usd"]
    tools = captured.stage(name="tools").attributes
    assert tools["llm.token_count.completion_details.reasoning"] == 3
    assert tools["llm.model_name"] == "gpt-4o-2024-08-06"
    # A reply that only calls tools is recorded as its tool calls (output.value cannot be text).
    reply = json.loads(tools["gen_ai.output.messages"])
    assert reply == [{"role": "assistant", "finish_reason": "tool_call", "parts": [
        {"type": "tool_call", "id": "call_2", "name": "refund", "arguments": {"order": 1234}}]}]  # fmt: skip
    assert json.loads(tools["output.value"]) == reply
    assert tools["output.mime_type"] == "application/json"
    call = "llm.output_messages.0.message.tool_calls.0.tool_call."
    assert tools[call + "function.name"] == "refund"
    assert json.loads(tools[call + "function.arguments"]) == {"order": 1234}


def test_openinference_retriever_and_reranker(captured: Capture) -> None:
    retrieval = captured.stage(kind="retrieval").attributes
    assert retrieval["openinference.span.kind"] == "RETRIEVER"
    assert retrieval["input.value"] == "refund for [REDACTED:email]"
    assert retrieval["input.mime_type"] == "text/plain"
    assert retrieval["retrieval.documents.0.document.id"] == "kb-1"
    assert retrieval["retrieval.documents.0.document.score"] == 0.91
    assert retrieval["retrieval.documents.0.document.content"] == "Refunds take 5 days."
    assert json.loads(retrieval["retrieval.documents.0.document.metadata"]) == {"lang": "en"}
    assert retrieval["retrieval.documents.1.document.id"] == "7"
    rerank = captured.stage(kind="rerank").attributes
    assert rerank["openinference.span.kind"] == "RERANKER"
    assert rerank["reranker.model_name"] == "rerank-v3.5"
    assert rerank["reranker.top_k"] == 1
    assert rerank["reranker.query"] == "refund"
    assert rerank["reranker.output_documents.0.document.id"] == "kb-1"
    assert rerank["reranker.output_documents.0.document.score"] == 0.91
    assert captured.stage(kind="tool").attributes["tool.name"] == "find_order"
    assert captured.stage(kind="prompt").attributes["llm.prompt_template.version"] == "7"
    embedding = captured.stage(kind="embedding").attributes
    assert embedding["embedding.model_name"] == "text-embedding-3-small"
    assert "llm.model_name" not in embedding


@pytest.mark.parametrize(
    ("provider", "expected"),
    [("gcp.gemini", ("google", None)), ("aws.bedrock", ("aws", None)),
     ("gcp.vertex_ai", ("google", "vertexai")), ("azure.ai.openai", ("azure", "openai")),
     ("mistral_ai", ("mistralai", "mistralai")), ("google", ("google", None))],
)  # fmt: skip
def test_openinference_provider_vocabulary(provider: str, expected: tuple[str, str | None]) -> None:
    cap = capture(conventions=("otel", "openinference"))
    with chainsight.stage("model", provider=provider, model="m"):
        pass
    attrs = cap.stage(kind="model").attributes
    assert attrs["gen_ai.provider.name"] == provider  # the GenAI value is left as given
    assert (attrs["llm.provider"], attrs.get("llm.system")) == expected


def test_capture_off_emits_no_content_under_either_convention() -> None:
    cap = capture(conventions=("otel", "openinference"))
    _chain()
    for where, attrs in _every_attribute(cap):
        for key, value in attrs.items():
            assert key not in CONTENT_KEYS, (where, key)
            assert not key.startswith(CONTENT_PREFIXES), (where, key)
            assert not key.endswith(("document.content", "document.metadata")), (where, key)
            assert "Refunds take" not in str(value), (where, key)
            assert "Paris" not in str(value), (where, key)
    # What is not content is still there: kinds, tokens, the answering model, cost.
    model = cap.stage(name="model").attributes
    assert model["llm.token_count.prompt_details.cache_write"] == 1000
    assert model["llm.model_name"] == "claude-sonnet-4-5-20250929"


def test_event_only_keeps_openinference_content_off_the_span() -> None:
    cap = capture(capture_content="event_only", conventions=("otel", "openinference"))
    _chain()
    model = cap.stage(name="model")
    assert "llm.input_messages.0.message.content" not in model.attributes
    event = model.event("gen_ai.client.inference.operation.details")
    assert event is not None
    assert event["llm.input_messages.0.message.content"] == SYSTEM


def test_long_content_is_cut_inside_and_stays_valid_json() -> None:
    cap = capture(capture_content=True, max_content_bytes=512)
    words = " ".join(f"w{i}" for i in range(400))
    secret_at_cut = "x" * 150 + f" {SECRET} " + words
    with chainsight.stage("model", provider="openai", model="gpt-4o") as m:
        m.record_content(
            system_instructions=secret_at_cut,
            input_messages=[{"role": "user", "content": words}] * 20,
            output_messages=[{"role": "assistant", "content": secret_at_cut}],
        )
    with chainsight.stage("retrieval", system="qdrant") as r:
        r.record_content(
            documents=[{"id": f"d{i}", "score": 0.5, "text": words} for i in range(300)]
        )
    checked = 0
    for _, attrs in _every_attribute(cap):
        for attribute in SCHEMAS:
            if attribute in attrs:
                raw = attrs[attribute]
                assert len(raw.encode()) <= 512
                assert SECRET not in raw
                assert "…[truncated" in raw
                assert not list(_validator(attribute).iter_errors(json.loads(raw)))
                checked += 1
    assert checked == 4


def test_an_anthropic_reply_that_calls_a_tool_is_recorded_as_its_tool_call() -> None:
    cap = capture(capture_content=True, conventions=("otel", "openinference"))
    reply = anthropic.types.Message.model_validate(
        {
            "id": "msg_02", "type": "message", "role": "assistant", "model": "claude-sonnet-4-5",
            "content": [{"type": "text", "text": "Checking."},
                        {"type": "tool_use", "id": "toolu_9", "name": "track", "input": {"n": 1}}],
            "stop_reason": "tool_use", "stop_sequence": None,
            "usage": {"input_tokens": 10, "output_tokens": 5},
        }
    )  # fmt: skip
    with chainsight.stage("model", provider="anthropic", model="claude-sonnet-4-5") as m:
        m.record_response(reply)
    attrs = cap.stage(kind="model").attributes
    out = json.loads(attrs["gen_ai.output.messages"])
    assert not list(_validator("gen_ai.output.messages").iter_errors(out))
    assert out[0]["finish_reason"] == "tool_call"
    assert out[0]["parts"] == [
        {"type": "text", "content": "Checking."},
        {"type": "tool_call", "id": "toolu_9", "name": "track", "arguments": {"n": 1}},
    ]
    assert attrs["llm.output_messages.0.message.content"] == "Checking."
    assert attrs["llm.output_messages.0.message.tool_calls.0.tool_call.id"] == "toolu_9"


def test_the_v141_names_are_the_ones_the_pypi_conventions_package_defines() -> None:
    """The alias and the first-chunk name, against opentelemetry-semantic-conventions (v1.41-era
    names, what Phoenix and other consumers built on it read)."""
    from opentelemetry.semconv._incubating.attributes import gen_ai_attributes as v141

    from chainsight import _names as n

    assert (
        n.GEN_AI_USAGE_CACHE_CREATION_INPUT_TOKENS == v141.GEN_AI_USAGE_CACHE_CREATION_INPUT_TOKENS
    )
    assert n.GEN_AI_USAGE_CACHE_READ_INPUT_TOKENS == v141.GEN_AI_USAGE_CACHE_READ_INPUT_TOKENS
    assert n.GEN_AI_RESPONSE_TIME_TO_FIRST_CHUNK == v141.GEN_AI_RESPONSE_TIME_TO_FIRST_CHUNK
    assert n.GEN_AI_USAGE_CACHE_WRITE_INPUT_TOKENS in _registry()  # the current name
