"""record_response with the SDKs' own response types, as the installed SDKs build them.

Every response, chunk and event here is made by the SDK's pydantic type from the JSON its API
sends (``Model.model_validate``), so a field the SDK renames, nests or types differently shows
up here, not in production. Costs are checked against the published prices (per million
tokens): gpt-4o $2.50 in, $1.25 cached, $10 out; claude-sonnet-4-5 $3 in, $0.30 cache hit,
$3.75 5-minute write, $6 one-hour write, $15 out; gemini-2.5-flash $0.30 in, $0.03 cached,
$2.50 out.
"""

from __future__ import annotations

import copy
import json
import math
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anthropic
import openai
import pytest
from anthropic.types import Message, RawMessageStreamEvent
from cohere import EmbedByTypeResponse
from cohere.v2.types import V2ChatResponse, V2ChatStreamResponse, V2RerankResponse
from google.genai import types as genai
from openai.types import CreateEmbeddingResponse
from openai.types.chat import ChatCompletion, ChatCompletionChunk
from openai.types.responses import (
    Response,
    ResponseCompletedEvent,
    ResponseCreatedEvent,
    ResponseTextDeltaEvent,
)
from pydantic import TypeAdapter

import chainsight
from chainsight.stages.response_calls import ResponseCalls
from chainsight.stages.response_info import ResponseInfo
from chainsight.stages.responses import StreamAccumulator, extract_response
from chainsight.testing import Capture
from tests.stages.test_responses import EXPECTED, STREAM_EXPECTED

PAYLOADS = Path(__file__).parents[1] / "payloads"

ANTHROPIC_EVENT = TypeAdapter(RawMessageStreamEvent)
COHERE_EVENT = TypeAdapter(V2ChatStreamResponse)


def load(name: str) -> Any:
    return json.loads((PAYLOADS / f"{name}.json").read_text())


def close(a: float, b: float) -> bool:
    return math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-15)


# --- builders: what each API sends, made into the SDK's own objects ---------------------------


def chat(
    rid: str,
    *,
    prompt: int,
    completion: int,
    finish: str = "stop",
    model: str = "gpt-4o-2024-08-06",
    cached: int | None = None,
    cache_write: int | None = None,
    reasoning: int | None = None,
) -> ChatCompletion:
    usage: dict[str, Any] = {
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
    }
    if cached is not None or cache_write is not None:
        usage["prompt_tokens_details"] = {
            "cached_tokens": cached,
            "cache_write_tokens": cache_write,
        }
    if reasoning is not None:
        usage["completion_tokens_details"] = {"reasoning_tokens": reasoning}
    message: dict[str, Any] = {"role": "assistant", "content": "Refunds take 14 days."}
    if finish == "tool_calls":
        message = {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {
                    "id": "call_1",
                    "type": "function",
                    "function": {"name": "lookup_policy", "arguments": '{"topic":"refunds"}'},
                }
            ],
        }
    return ChatCompletion.model_validate(
        {
            "id": rid,
            "object": "chat.completion",
            "created": 1_764_000_000,
            "model": model,
            "choices": [{"index": 0, "finish_reason": finish, "message": message}],
            "usage": usage,
        }
    )


def chat_chunks(
    rid: str, *, prompt: int, completion: int, cached: int
) -> list[ChatCompletionChunk]:
    """A chat stream with ``stream_options={"include_usage": True}``: usage in the last chunk."""
    base = {"id": rid, "object": "chat.completion.chunk", "created": 1, "model": "gpt-4o"}
    pieces = [
        {"choices": [{"index": 0, "delta": {"role": "assistant", "content": ""}}]},
        {"choices": [{"index": 0, "delta": {"content": "Refunds take "}}]},
        {"choices": [{"index": 0, "delta": {"content": "14 days."}}]},
        {"choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]},
        {
            "choices": [],
            "usage": {
                "prompt_tokens": prompt,
                "completion_tokens": completion,
                "total_tokens": prompt + completion,
                "prompt_tokens_details": {"cached_tokens": cached},
            },
        },
    ]
    return [ChatCompletionChunk.model_validate({**base, **piece}) for piece in pieces]


def responses_api(rid: str, *, status: str = "completed", usage: Any = None) -> dict[str, Any]:
    """A Responses API response as JSON, with every field the SDK requires."""
    return {
        "id": rid,
        "object": "response",
        "created_at": 1_764_000_000,
        "status": status,
        "model": "gpt-4.1-mini-2025-04-14",
        "output": []
        if status != "completed"
        else [
            {
                "type": "message",
                "id": "msg_1",
                "status": "completed",
                "role": "assistant",
                "content": [
                    {"type": "output_text", "text": "Refunds take 14 days.", "annotations": []}
                ],
            }
        ],
        "parallel_tool_calls": True,
        "tool_choice": "auto",
        "tools": [],
        "usage": usage,
    }


def claude_usage(
    *,
    uncached: int,
    output: int,
    read: int = 0,
    write_5m: int = 0,
    write_1h: int = 0,
    thinking: int | None = None,
) -> dict[str, Any]:
    usage: dict[str, Any] = {
        "input_tokens": uncached,
        "output_tokens": output,
        "cache_read_input_tokens": read,
        "cache_creation_input_tokens": write_5m + write_1h,
        "cache_creation": {
            "ephemeral_5m_input_tokens": write_5m,
            "ephemeral_1h_input_tokens": write_1h,
        },
        "service_tier": "standard",
    }
    if thinking is not None:
        usage["output_tokens_details"] = {"thinking_tokens": thinking}
    return usage


def claude(rid: str, usage: dict[str, Any], *, stop: str = "end_turn") -> Message:
    content: list[dict[str, Any]] = [{"type": "text", "text": "Refunds take 14 days."}]
    if stop == "tool_use":
        content = [
            {"type": "tool_use", "id": "toolu_1", "name": "lookup_policy", "input": {"q": "x"}}
        ]
    return Message.model_validate(
        {
            "id": rid,
            "type": "message",
            "role": "assistant",
            "model": "claude-sonnet-4-5-20250929",
            "content": content,
            "stop_reason": stop,
            "stop_sequence": None,
            "usage": usage,
        }
    )


def claude_events(
    rid: str, *, start_usage: dict[str, Any], delta_usage: dict[str, Any]
) -> list[Any]:
    """An Anthropic message stream as the SDK parses it from the SSE events."""
    raw = [
        {
            "type": "message_start",
            "message": {
                "id": rid,
                "type": "message",
                "role": "assistant",
                "model": "claude-sonnet-4-5-20250929",
                "content": [],
                "stop_reason": None,
                "stop_sequence": None,
                "usage": start_usage,
            },
        },
        {"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}},
        {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": "Hi."}},
        {"type": "content_block_stop", "index": 0},
        {
            "type": "message_delta",
            "delta": {"stop_reason": "end_turn", "stop_sequence": None},
            "usage": delta_usage,
        },
        {"type": "message_stop"},
    ]
    return [ANTHROPIC_EVENT.validate_python(event) for event in raw]


def gemini(
    *, prompt: int, candidates: int, thoughts: int, finish: str | None, rid: str | None
) -> Any:
    body: dict[str, Any] = {
        "candidates": [
            {
                "content": {"role": "model", "parts": [{"text": "Refunds take 14 days."}]},
                **({"finish_reason": finish} if finish else {}),
                "index": 0,
            }
        ],
        "model_version": "gemini-2.5-flash",
        "usage_metadata": {
            "prompt_token_count": prompt,
            "candidates_token_count": candidates,
            "thoughts_token_count": thoughts,
            "total_token_count": prompt + candidates + thoughts,
        },
    }
    if rid is not None:
        body["response_id"] = rid
    return genai.GenerateContentResponse.model_validate(body)


# --- the documented payloads, as SDK objects --------------------------------------------------

SDK_TYPES: dict[str, Any] = {
    "openai_chat": ChatCompletion,
    "openai_chat_tools": ChatCompletion,
    "openai_embeddings": CreateEmbeddingResponse,
    "anthropic_message": Message,
    "gemini_sdk": genai.GenerateContentResponse,
    "cohere_chat_v2": V2ChatResponse,
    "cohere_rerank": V2RerankResponse,
    "cohere_embed": EmbedByTypeResponse,
}


@pytest.mark.parametrize("name", sorted(SDK_TYPES))
def test_sdk_objects_read_like_their_json(name: str) -> None:
    resp = SDK_TYPES[name].model_validate(load(name))
    assert extract_response(resp) == EXPECTED[name]


def test_responses_api_object_reads_like_its_json() -> None:
    body = load("openai_responses")
    # The installed SDK requires cache_write_tokens: the API sends it with every response.
    body["usage"]["input_tokens_details"]["cache_write_tokens"] = 0
    info = extract_response(Response.model_validate(body))
    expected = EXPECTED["openai_responses"]
    assert info == ResponseInfo(**{**_fields(expected), "cache_write_input_tokens": 0})


def _fields(info: ResponseInfo) -> dict[str, Any]:
    return {name: getattr(info, name) for name in info.__slots__}


@pytest.mark.parametrize(
    ("name", "parse"),
    [
        ("openai_chat_stream", ChatCompletionChunk.model_validate),
        ("gemini_stream", genai.GenerateContentResponse.model_validate),
        ("cohere_stream", COHERE_EVENT.validate_python),
        # The SDK drops Anthropic's pings before the application sees the stream.
        ("anthropic_stream", ANTHROPIC_EVENT.validate_python),
    ],
)
def test_sdk_stream_objects_read_like_their_json(name: str, parse: Any) -> None:
    chunks = [parse(c) for c in load(name) if c.get("type") != "ping"]
    acc = StreamAccumulator(capture_text=True)
    for chunk in chunks:
        acc.add(chunk)
    assert acc.result() == STREAM_EXPECTED[name]


@pytest.fixture
def misses(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Names read from the SDKs' models that the model does not have.

    A missing attribute on a pydantic model costs a raised and caught AttributeError, several
    times the cost of a present one: the readers must not probe for fields an SDK never has.
    """
    seen: list[str] = []
    for base in (openai.BaseModel, anthropic.BaseModel):
        original = base.__getattr__

        def counting(self: Any, name: str, _original: Any = original) -> Any:
            seen.append(name)
            return _original(self, name)

        monkeypatch.setattr(base, "__getattr__", counting)
    return seen


def test_sdk_objects_are_read_without_probing_absent_fields(misses: list[str]) -> None:
    body = load("openai_responses")
    body["usage"]["input_tokens_details"]["cache_write_tokens"] = 0
    objects = [
        chat("chatcmpl-1", prompt=10, completion=2, cached=0, cache_write=0, reasoning=0),
        ChatCompletion.model_validate(load("openai_chat")),
        Response.model_validate(body),
        Message.model_validate(load("anthropic_message")),
        claude("msg_1", claude_usage(uncached=1, output=1, thinking=0)),
    ]
    for resp in objects:
        assert extract_response(resp) is not None
        calls = ResponseCalls()
        calls.add(resp)
        acc = calls.close()
        assert acc is not None
        assert acc.result() is not None
    assert misses == []


# --- every usage field of the current SDKs ----------------------------------------------------


def test_openai_chat_cache_writes_and_reasoning_from_the_sdk_object() -> None:
    resp = chat(
        "chatcmpl-1", prompt=3000, completion=400, cached=1024, cache_write=1536, reasoning=256
    )
    info = extract_response(resp)
    assert info is not None
    assert (info.input_tokens, info.cached_input_tokens, info.cache_write_input_tokens) == (
        3000,
        1024,
        1536,
    )
    assert (info.output_tokens, info.reasoning_output_tokens) == (400, 256)


def test_openai_responses_cache_writes_and_reasoning() -> None:
    usage = {
        "input_tokens": 5000,
        "input_tokens_details": {
            "cached_tokens": 2048,
            "cache_write_tokens": 2500,
            "cache_write_tokens_details": {"ttl_30m_tokens": 2500, "ttl_12h_tokens": 0},
        },
        "output_tokens": 900,
        "output_tokens_details": {"reasoning_tokens": 700},
        "total_tokens": 5900,
    }
    info = extract_response(Response.model_validate(responses_api("resp_1", usage=usage)))
    assert info is not None
    assert (info.input_tokens, info.cached_input_tokens, info.cache_write_input_tokens) == (
        5000,
        2048,
        2500,
    )
    assert (info.output_tokens, info.reasoning_output_tokens) == (900, 700)


def test_anthropic_one_hour_cache_writes_and_thinking_tokens() -> None:
    usage = claude_usage(
        uncached=500, output=300, read=1000, write_5m=1000, write_1h=2000, thinking=120
    )
    info = extract_response(claude("msg_1", usage))
    assert info is not None
    assert info.input_tokens == 500 + 1000 + 1000 + 2000  # Anthropic's parts, added up
    assert (info.cached_input_tokens, info.cache_write_input_tokens) == (1000, 3000)
    assert info.cache_write_1h_input_tokens == 2000
    assert (info.output_tokens, info.reasoning_output_tokens) == (300, 120)


def test_anthropic_stream_keeps_the_ttl_split_and_thinking() -> None:
    start = claude_usage(uncached=500, output=1, read=1000, write_5m=1000, write_1h=2000)
    delta = {"output_tokens": 300, "output_tokens_details": {"thinking_tokens": 120}}
    acc = StreamAccumulator()
    for event in claude_events("msg_1", start_usage=start, delta_usage=delta):
        acc.add(event)
    info = acc.result()
    assert info is not None
    assert (info.input_tokens, info.cache_write_input_tokens, info.cache_write_1h_input_tokens) == (
        4500,
        3000,
        2000,
    )
    assert (info.output_tokens, info.reasoning_output_tokens) == (300, 120)


def test_gemini_thoughts_cache_and_tool_prompts() -> None:
    resp = genai.GenerateContentResponse.model_validate(
        {
            "candidates": [{"finish_reason": "STOP", "content": {"parts": [{"text": "ok"}]}}],
            "model_version": "gemini-2.5-flash",
            "usage_metadata": {
                "prompt_token_count": 1200,
                "cached_content_token_count": 1000,
                "tool_use_prompt_token_count": 50,
                "candidates_token_count": 80,
                "thoughts_token_count": 400,
                "total_token_count": 1730,
            },
        }
    )
    info = extract_response(resp)
    assert info is not None
    assert (info.input_tokens, info.cached_input_tokens) == (1250, 1000)
    assert (info.output_tokens, info.reasoning_output_tokens) == (480, 400)


def test_cohere_cached_tokens() -> None:
    body = copy.deepcopy(load("cohere_chat_v2"))
    body["usage"]["billed_units"] = {"input_tokens": 120.0, "output_tokens": 418.0}
    body["usage"]["cached_tokens"] = 100.0
    info = extract_response(V2ChatResponse.model_validate(body))
    assert info is not None
    assert (info.input_tokens, info.cached_input_tokens, info.output_tokens) == (120, 100, 418)
    # The cache can hold template tokens the billed input leaves out: never above the input.
    body["usage"]["cached_tokens"] = 500.0
    info = extract_response(V2ChatResponse.model_validate(body))
    assert info is not None
    assert info.cached_input_tokens == 120


# --- which recorded items are one call --------------------------------------------------------


def calls_of(items: list[Any]) -> list[ResponseInfo | None]:
    calls = ResponseCalls()
    ended = [calls.add(item) for item in items]
    ended.append(calls.close())
    return [acc.result() for acc in ended if acc is not None]


def test_two_responses_are_two_calls() -> None:
    first = chat("chatcmpl-1", prompt=1000, completion=20, finish="tool_calls")
    second = chat("chatcmpl-2", prompt=1100, completion=80)
    found = calls_of([first, second])
    assert [(i.input_tokens, i.output_tokens) for i in found if i] == [(1000, 20), (1100, 80)]


def test_the_same_response_twice_is_one_call() -> None:
    resp = chat("chatcmpl-1", prompt=1000, completion=20)
    assert len(calls_of([resp, resp])) == 1


def test_a_stream_then_its_final_message_is_one_call() -> None:
    start = claude_usage(uncached=10, output=1)
    events = claude_events("msg_1", start_usage=start, delta_usage={"output_tokens": 50})
    final = claude("msg_1", claude_usage(uncached=10, output=50))
    found = calls_of([*events, final])
    assert len(found) == 1
    assert found[0] is not None
    assert (found[0].input_tokens, found[0].output_tokens) == (10, 50)


def test_two_streams_are_two_calls() -> None:
    start = claude_usage(uncached=10, output=1)
    one = claude_events("msg_1", start_usage=start, delta_usage={"output_tokens": 50})
    two = claude_events("msg_2", start_usage=start, delta_usage={"output_tokens": 70})
    found = calls_of([*one, *two])
    assert [(i.input_tokens, i.output_tokens) for i in found if i] == [(10, 50), (10, 70)]


def test_responses_api_streams_by_id() -> None:
    def events(rid: str, output: int) -> list[Any]:
        usage = {
            "input_tokens": 100,
            "input_tokens_details": {"cached_tokens": 0, "cache_write_tokens": 64},
            "output_tokens": output,
            "output_tokens_details": {"reasoning_tokens": 0},
            "total_tokens": 100 + output,
        }
        return [
            ResponseCreatedEvent.model_validate(
                {
                    "type": "response.created",
                    "sequence_number": 0,
                    "response": responses_api(rid, status="in_progress"),
                }
            ),
            ResponseTextDeltaEvent.model_validate(
                {
                    "type": "response.output_text.delta",
                    "sequence_number": 1,
                    "item_id": "msg_1",
                    "output_index": 0,
                    "content_index": 0,
                    "delta": "Refunds",
                    "logprobs": [],
                }
            ),
            ResponseCompletedEvent.model_validate(
                {
                    "type": "response.completed",
                    "sequence_number": 2,
                    "response": responses_api(rid, usage=usage),
                }
            ),
        ]

    found = calls_of([*events("resp_1", 7), *events("resp_2", 9)])
    assert [(i.input_tokens, i.output_tokens, i.cache_write_input_tokens) for i in found if i] == [
        (100, 7, 64),
        (100, 9, 64),
    ]


@pytest.mark.parametrize("with_ids", [True, False], ids=["response_id", "no_id"])
def test_gemini_streams_end_at_their_finish_reason(with_ids: bool) -> None:
    def stream(rid: str, candidates: int) -> list[Any]:
        return [
            gemini(prompt=9, candidates=2, thoughts=5, finish=None, rid=rid if with_ids else None),
            gemini(
                prompt=9,
                candidates=candidates,
                thoughts=5,
                finish="STOP",
                rid=rid if with_ids else None,
            ),
        ]

    found = calls_of([*stream("a", 20), *stream("b", 30)])
    assert [(i.input_tokens, i.output_tokens) for i in found if i] == [(9, 25), (9, 35)]


# --- on the stage: usage adds up, cost from the published prices -------------------------------


def test_tool_loop_of_two_chat_completions_adds_up(chainsight_capture: Capture) -> None:
    first = chat("chatcmpl-1", prompt=1000, completion=20, finish="tool_calls")
    second = chat("chatcmpl-2", prompt=1100, completion=80)
    with (
        chainsight.request("answer"),
        chainsight.stage("model", name="agent", provider="openai", model="gpt-4o") as s,
    ):
        s.record_response(first)
        s.record_response(second)
    attrs = chainsight_capture.stage(name="agent").attributes
    assert (attrs["gen_ai.usage.input_tokens"], attrs["gen_ai.usage.output_tokens"]) == (2100, 100)
    assert close(float(attrs["chainsight.cost.usd"]), (2100 * 2.50 + 100 * 10.0) / 1e6)  # 0.00625
    assert attrs["gen_ai.response.id"] == "chatcmpl-2"  # the call that answered
    assert attrs["gen_ai.response.finish_reasons"] == ("stop",)
    request = chainsight_capture.stage(kind="request").attributes
    assert close(float(request["chainsight.request.cost.usd"]), 0.00625)
    tokens = {"token_type": "input"}
    assert chainsight_capture.metric("chainsight_tokens_total", tokens) == 2100


def test_streamed_tool_loop_counts_each_stream_once(chainsight_capture: Capture) -> None:
    one = chat_chunks("chatcmpl-1", prompt=1000, completion=20, cached=0)
    two = chat_chunks("chatcmpl-2", prompt=1100, completion=80, cached=1024)

    @chainsight.traced_stage("model", name="agent", provider="openai", model="gpt-4o")
    def agent() -> Iterator[str]:
        for chunk in [*one, *two]:
            chainsight.current_stage().record_response(chunk)
            yield chunk.id

    assert len(list(agent())) == 10
    attrs = chainsight_capture.stage(name="agent").attributes
    assert (attrs["gen_ai.usage.input_tokens"], attrs["gen_ai.usage.output_tokens"]) == (2100, 100)
    assert attrs["gen_ai.usage.cache_read.input_tokens"] == 1024
    expected = ((2100 - 1024) * 2.50 + 1024 * 1.25 + 100 * 10.0) / 1e6
    assert close(float(attrs["chainsight.cost.usd"]), expected)


def test_one_hour_cache_writes_are_priced_at_their_own_rate(chainsight_capture: Capture) -> None:
    """A tool loop on claude-sonnet-4-5 whose first call wrote the 5-minute and the one-hour
    cache; the second reads it and thinks."""
    first = claude(
        "msg_1",
        claude_usage(uncached=500, output=40, write_5m=1000, write_1h=2000),
        stop="tool_use",
    )
    second = claude("msg_2", claude_usage(uncached=600, output=260, read=3000, thinking=200))
    with chainsight.stage(
        "model", name="claude", provider="anthropic", model="claude-sonnet-4-5"
    ) as s:
        s.record_response(first)
        s.record_response(second)
    attrs = chainsight_capture.stage(name="claude").attributes
    assert attrs["gen_ai.usage.input_tokens"] == (500 + 3000) + (600 + 3000)
    assert attrs["gen_ai.usage.output_tokens"] == 300
    assert attrs["gen_ai.usage.cache_read.input_tokens"] == 3000
    assert attrs["gen_ai.usage.cache_write.input_tokens"] == 3000
    assert attrs["gen_ai.usage.cache_creation.input_tokens"] == 3000  # the v1.41 name too
    assert attrs["chainsight.usage.cache_creation_1h.input_tokens"] == 2000
    assert attrs["gen_ai.usage.reasoning.output_tokens"] == 200
    first_cost = (500 * 3.0 + 1000 * 3.75 + 2000 * 6.0 + 40 * 15.0) / 1e6
    second_cost = (600 * 3.0 + 3000 * 0.30 + 260 * 15.0) / 1e6
    assert close(float(attrs["chainsight.cost.usd"]), first_cost + second_cost)
    # At the 5-minute rate the one-hour writes would have cost 2000 x $2.25 / 1M less.
    assert close(first_cost - (500 * 3.0 + 3000 * 3.75 + 40 * 15.0) / 1e6, 2000 * 2.25 / 1e6)


def test_anthropic_stream_and_its_final_message_count_once(chainsight_capture: Capture) -> None:
    start = claude_usage(uncached=500, output=1, read=1000, write_1h=2000)
    delta = {"output_tokens": 300, "output_tokens_details": {"thinking_tokens": 120}}
    events = claude_events("msg_1", start_usage=start, delta_usage=delta)
    final = claude(
        "msg_1", claude_usage(uncached=500, output=300, read=1000, write_1h=2000, thinking=120)
    )
    with chainsight.stage(
        "model", name="claude", provider="anthropic", model="claude-sonnet-4-5"
    ) as s:
        for event in events:
            s.record_response(event)
        s.record_response(final)  # what stream.get_final_message() returns
    attrs = chainsight_capture.stage(name="claude").attributes
    assert attrs["gen_ai.usage.input_tokens"] == 3500
    assert attrs["gen_ai.usage.output_tokens"] == 300
    assert attrs["gen_ai.usage.reasoning.output_tokens"] == 120
    expected = (500 * 3.0 + 1000 * 0.30 + 2000 * 6.0 + 300 * 15.0) / 1e6
    assert close(float(attrs["chainsight.cost.usd"]), expected)


def test_reasoning_tokens_reach_the_span(chainsight_capture: Capture) -> None:
    resp = chat("chatcmpl-9", prompt=100, completion=500, reasoning=448, model="gpt-4o")
    with chainsight.stage("model", name="o", provider="openai", model="gpt-4o") as s:
        s.record_response(resp)
    attrs = chainsight_capture.stage(name="o").attributes
    assert attrs["gen_ai.usage.reasoning.output_tokens"] == 448
    assert attrs["gen_ai.usage.output_tokens"] == 500  # reasoning is part of the output
    reasoning = {"token_type": "reasoning"}
    assert chainsight_capture.metric("chainsight_tokens_total", reasoning) == 448


def test_gemini_tool_loop_without_ids_adds_up(chainsight_capture: Capture) -> None:
    first = gemini(prompt=1000, candidates=20, thoughts=100, finish="STOP", rid=None)
    second = gemini(prompt=1200, candidates=60, thoughts=0, finish="STOP", rid=None)
    with chainsight.stage("model", name="g", provider="gcp.gemini", model="gemini-2.5-flash") as s:
        s.record_response(first)
        s.record_response(second)
    attrs = chainsight_capture.stage(name="g").attributes
    assert (attrs["gen_ai.usage.input_tokens"], attrs["gen_ai.usage.output_tokens"]) == (2200, 180)
    assert close(float(attrs["chainsight.cost.usd"]), (2200 * 0.30 + 180 * 2.50) / 1e6)


def test_record_usage_takes_the_one_hour_part(chainsight_capture: Capture) -> None:
    with chainsight.stage("model", name="m", provider="anthropic", model="claude-sonnet-4-5") as s:
        s.record_usage(
            input_tokens=4500,
            output_tokens=300,
            cached_input_tokens=1000,
            cache_write_input_tokens=3000,
            cache_write_1h_input_tokens=2000,
        )
    attrs = chainsight_capture.stage(name="m").attributes
    expected = (500 * 3.0 + 1000 * 0.30 + 1000 * 3.75 + 2000 * 6.0 + 300 * 15.0) / 1e6
    assert close(float(attrs["chainsight.cost.usd"]), expected)
    assert attrs["chainsight.usage.cache_creation_1h.input_tokens"] == 2000


@pytest.mark.slow  # importing litellm takes seconds
def test_litellm_model_response_keeps_the_ttl_split(monkeypatch: pytest.MonkeyPatch) -> None:
    """LiteLLM folds Anthropic's usage into OpenAI's shape and keeps the split by TTL."""
    monkeypatch.setenv("LITELLM_LOCAL_MODEL_COST_MAP", "True")  # no price-map download
    import litellm  # imported here: only this test pays for (and needs) litellm

    resp = litellm.ModelResponse(
        id="chatcmpl-9",
        model="claude-sonnet-4-5-20250929",
        object="chat.completion",
        choices=[
            {"index": 0, "finish_reason": "stop", "message": {"role": "assistant", "content": "ok"}}
        ],
        usage=litellm.Usage(
            prompt_tokens=4500,
            completion_tokens=300,
            total_tokens=4800,
            prompt_tokens_details={
                "cached_tokens": 1000,
                "cache_creation_tokens": 3000,
                "cache_creation_token_details": {
                    "ephemeral_5m_input_tokens": 1000,
                    "ephemeral_1h_input_tokens": 2000,
                },
            },
            completion_tokens_details={"reasoning_tokens": 120},
        ),
    )
    resp._hidden_params = {"custom_llm_provider": "anthropic"}
    info = extract_response(resp)
    assert info is not None
    assert (info.input_tokens, info.cached_input_tokens, info.cache_write_input_tokens) == (
        4500,
        1000,
        3000,
    )
    assert (info.cache_write_1h_input_tokens, info.reasoning_output_tokens) == (2000, 120)
    assert info.provider == "anthropic"
