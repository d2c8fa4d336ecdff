"""record_response with the real openai and anthropic clients, over HTTP, in a tool loop.

The clients call the tests' local provider on 127.0.0.1 (``_providers.py``), scripted to answer in each API's
wire format: a whole JSON response for the first call of the loop, a server-sent-event stream
for the second. What the clients hand the application (``ChatCompletion``,
``ChatCompletionChunk``, ``Message``, the ``MessageStream`` helper's events and its final
message) is recorded as an application would, and the stage must count each call once.
Published prices per million tokens: gpt-4o $2.50 in, $1.25 cached, $10 out;
claude-sonnet-4-5 $3 in, $0.30 cache hit, $3.75 5-minute write, $6 one-hour write, $15 out.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from typing import Any

import anthropic
import openai
import pytest

import chainsight
from chainsight.testing import Capture
from tests.integration._providers import FakeProvider, Reply

pytestmark = pytest.mark.integration

TOOLS: list[Any] = [
    {
        "type": "function",
        "function": {
            "name": "lookup_policy",
            "parameters": {"type": "object", "properties": {"topic": {"type": "string"}}},
        },
    }
]


# trust_env=False: a proxy from the environment must not sit between a client and 127.0.0.1.
# Each SDK brings its own HTTP client class (anthropic's is built on httpx2).


@pytest.fixture
def openai_client(provider: FakeProvider) -> Iterator[openai.OpenAI]:
    http = openai.DefaultHttpxClient(trust_env=False, timeout=30.0)
    client = openai.OpenAI(
        api_key="test", base_url=f"{provider.url}/v1", http_client=http, max_retries=0
    )
    with client:
        yield client


@pytest.fixture
def anthropic_client(provider: FakeProvider) -> Iterator[anthropic.Anthropic]:
    http = anthropic.DefaultHttpxClient(trust_env=False, timeout=30.0)
    client = anthropic.Anthropic(
        api_key="test", base_url=provider.url, http_client=http, max_retries=0
    )
    with client:
        yield client


def close(a: float, b: float) -> bool:
    return math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-15)


def chunk(rid: str, **fields: Any) -> tuple[None, dict[str, Any]]:
    return None, {"id": rid, "object": "chat.completion.chunk", "created": 1,
                  "model": "gpt-4o-2024-08-06", **fields}  # fmt: skip


def test_openai_tool_loop_then_stream(
    provider: FakeProvider, openai_client: openai.OpenAI, chainsight_capture: Capture
) -> None:
    provider.reply(
        Reply(
            body={
                "id": "chatcmpl-1",
                "object": "chat.completion",
                "created": 1,
                "model": "gpt-4o-2024-08-06",
                "choices": [
                    {
                        "index": 0,
                        "finish_reason": "tool_calls",
                        "message": {
                            "role": "assistant",
                            "content": None,
                            "tool_calls": [
                                {
                                    "id": "call_1",
                                    "type": "function",
                                    "function": {
                                        "name": "lookup_policy",
                                        "arguments": '{"topic": "refunds"}',
                                    },
                                }
                            ],
                        },
                    }
                ],
                "usage": {
                    "prompt_tokens": 1000,
                    "completion_tokens": 20,
                    "total_tokens": 1020,
                    "prompt_tokens_details": {"cached_tokens": 0, "cache_write_tokens": 768},
                },
            }
        ),
        Reply(
            events=[
                chunk("chatcmpl-2", choices=[{"index": 0, "delta": {"role": "assistant"}}]),
                chunk("chatcmpl-2", choices=[{"index": 0, "delta": {"content": "14 days."}}]),
                chunk("chatcmpl-2", choices=[{"index": 0, "delta": {}, "finish_reason": "stop"}]),
                chunk(
                    "chatcmpl-2",
                    choices=[],
                    usage={
                        "prompt_tokens": 1100,
                        "completion_tokens": 80,
                        "total_tokens": 1180,
                        "prompt_tokens_details": {"cached_tokens": 768},
                    },
                ),
            ]
        ),
    )
    client = openai_client
    messages: list[Any] = [{"role": "user", "content": "How long do refunds take?"}]
    with chainsight.stage("model", name="agent", provider="openai", model="gpt-4o") as stage:
        first = client.chat.completions.create(model="gpt-4o", messages=messages, tools=TOOLS)
        stage.record_response(first)
        messages += [
            first.choices[0].message.model_dump(exclude_none=True),
            {"role": "tool", "tool_call_id": "call_1", "content": "14 days"},
        ]
        stream = client.chat.completions.create(
            model="gpt-4o",
            messages=messages,
            stream=True,
            stream_options={"include_usage": True},
        )
        with stream:
            for piece in stream:
                stage.record_response(piece)
    assert [r.path for r in provider.requests] == ["/v1/chat/completions"] * 2
    attrs = chainsight_capture.stage(name="agent").attributes
    assert (attrs["gen_ai.usage.input_tokens"], attrs["gen_ai.usage.output_tokens"]) == (2100, 100)
    assert attrs["gen_ai.usage.cache_read.input_tokens"] == 768
    assert attrs["gen_ai.usage.cache_write.input_tokens"] == 768
    assert attrs["gen_ai.usage.cache_creation.input_tokens"] == 768  # the v1.41 name too
    assert attrs["gen_ai.response.id"] == "chatcmpl-2"
    assert attrs["gen_ai.response.finish_reasons"] == ("stop",)
    # gpt-4o bills cache writes as input: 1000 x 2.50 + 20 x 10, then 332 x 2.50 + 768 x 1.25
    # + 80 x 10 per million.
    expected = (1000 * 2.50 + 20 * 10.0 + 332 * 2.50 + 768 * 1.25 + 80 * 10.0) / 1e6
    assert close(float(attrs["chainsight.cost.usd"]), expected)


def claude_usage(**fields: Any) -> dict[str, Any]:
    usage: dict[str, Any] = {
        "input_tokens": 0,
        "output_tokens": 0,
        "cache_read_input_tokens": 0,
        "cache_creation_input_tokens": 0,
        "cache_creation": {"ephemeral_5m_input_tokens": 0, "ephemeral_1h_input_tokens": 0},
    }
    usage.update(fields)
    return usage


def test_anthropic_tool_loop_then_stream_helper(
    provider: FakeProvider, anthropic_client: anthropic.Anthropic, chainsight_capture: Capture
) -> None:
    model = "claude-sonnet-4-5-20250929"
    provider.reply(
        Reply(
            body={
                "id": "msg_1",
                "type": "message",
                "role": "assistant",
                "model": model,
                "content": [
                    {
                        "type": "tool_use",
                        "id": "toolu_1",
                        "name": "lookup_policy",
                        "input": {"topic": "refunds"},
                    },
                ],
                "stop_reason": "tool_use",
                "stop_sequence": None,
                "usage": claude_usage(
                    input_tokens=500,
                    output_tokens=40,
                    cache_creation_input_tokens=3000,
                    cache_creation={
                        "ephemeral_5m_input_tokens": 1000,
                        "ephemeral_1h_input_tokens": 2000,
                    },
                ),
            }
        ),
        Reply(
            events=[
                (
                    "message_start",
                    {
                        "type": "message_start",
                        "message": {
                            "id": "msg_2",
                            "type": "message",
                            "role": "assistant",
                            "model": model,
                            "content": [],
                            "stop_reason": None,
                            "stop_sequence": None,
                            "usage": claude_usage(
                                input_tokens=600, output_tokens=1, cache_read_input_tokens=3000
                            ),
                        },
                    },
                ),
                (
                    "content_block_start",
                    {
                        "type": "content_block_start",
                        "index": 0,
                        "content_block": {"type": "text", "text": ""},
                    },
                ),
                ("ping", {"type": "ping"}),
                (
                    "content_block_delta",
                    {
                        "type": "content_block_delta",
                        "index": 0,
                        "delta": {"type": "text_delta", "text": "Refunds take 14 days."},
                    },
                ),
                ("content_block_stop", {"type": "content_block_stop", "index": 0}),
                (
                    "message_delta",
                    {
                        "type": "message_delta",
                        "delta": {"stop_reason": "end_turn", "stop_sequence": None},
                        "usage": {
                            "output_tokens": 260,
                            "output_tokens_details": {"thinking_tokens": 200},
                        },
                    },
                ),
                ("message_stop", {"type": "message_stop"}),
            ]
        ),
    )
    client = anthropic_client
    messages: list[Any] = [{"role": "user", "content": "How long do refunds take?"}]
    with chainsight.stage(
        "model", name="claude", provider="anthropic", model="claude-sonnet-4-5"
    ) as stage:
        first = client.messages.create(model=model, max_tokens=512, messages=messages)
        stage.record_response(first)
        messages += [
            {"role": "assistant", "content": [b.model_dump() for b in first.content]},
            {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "toolu_1",
                                          "content": "14 days"}]},
        ]  # fmt: skip
        with client.messages.stream(model=model, max_tokens=512, messages=messages) as stream:
            for event in stream:
                stage.record_response(event)
            final = stream.get_final_message()
        stage.record_response(final)  # the same call as the events: counted once
    assert final.id == "msg_2"
    assert [r.path for r in provider.requests] == ["/v1/messages"] * 2
    attrs = chainsight_capture.stage(name="claude").attributes
    assert attrs["gen_ai.usage.input_tokens"] == (500 + 3000) + (600 + 3000)
    assert attrs["gen_ai.usage.output_tokens"] == 40 + 260
    assert attrs["gen_ai.usage.cache_read.input_tokens"] == 3000
    assert attrs["gen_ai.usage.cache_write.input_tokens"] == 3000
    assert attrs["gen_ai.usage.cache_creation.input_tokens"] == 3000  # the v1.41 name too
    assert attrs["chainsight.usage.cache_creation_1h.input_tokens"] == 2000
    assert attrs["gen_ai.usage.reasoning.output_tokens"] == 200
    assert attrs["gen_ai.response.id"] == "msg_2"
    assert attrs["gen_ai.response.finish_reasons"] == ("stop",)
    first_cost = (500 * 3.0 + 1000 * 3.75 + 2000 * 6.0 + 40 * 15.0) / 1e6
    second_cost = (600 * 3.0 + 3000 * 0.30 + 260 * 15.0) / 1e6
    assert close(float(attrs["chainsight.cost.usd"]), first_cost + second_cost)
