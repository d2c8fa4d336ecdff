"""Reading usage, model, id and finish reasons from provider responses and streams.

The payloads in ``tests/payloads/`` follow the providers' documented response shapes. Each is
read twice: as the dict that ``model_dump()`` or raw JSON gives, and as nested attribute-access
objects (what an SDK object looks like to duck typing).
"""

from __future__ import annotations

import dataclasses
import enum
import json
import math
from collections.abc import Iterator, Mapping
from pathlib import Path
from types import SimpleNamespace
from typing import Any
from unittest import mock

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from chainsight.stages.response_calls import ResponseCalls
from chainsight.stages.response_info import ResponseInfo
from chainsight.stages.responses import StreamAccumulator, extract_response

PAYLOADS = Path(__file__).parents[1] / "payloads"
MAX_COUNT = 2**53 - 1


def load(name: str) -> Any:
    return json.loads((PAYLOADS / f"{name}.json").read_text())


def to_object(value: Any) -> Any:
    """Dicts become nested SimpleNamespaces: what attribute access sees on an SDK object."""
    if isinstance(value, dict):
        return SimpleNamespace(**{k: to_object(v) for k, v in value.items()})
    if isinstance(value, list):
        return [to_object(v) for v in value]
    return value


FORMS = [pytest.param(lambda v: v, id="dict"), pytest.param(to_object, id="object")]

# --- one response ------------------------------------------------------------------------

EXPECTED: dict[str, ResponseInfo] = {
    "openai_chat": ResponseInfo(
        input_tokens=1117,
        output_tokens=46,
        cached_input_tokens=1024,
        reasoning_output_tokens=0,
        response_model="gpt-4o-2024-08-06",
        response_id="chatcmpl-B9MHDbslfkBeAs8l4bebGdFOJ6PeG",
        finish_reasons=("stop",),
        provider="openai",
        output_text="Refunds are issued within 14 days of the return being received.",
    ),
    "openai_chat_tools": ResponseInfo(
        input_tokens=412,
        output_tokens=278,
        cached_input_tokens=0,
        reasoning_output_tokens=192,
        response_model="o3-mini-2025-01-31",
        response_id="chatcmpl-BQ3vWbH5o1cJ3kN8hYy2ZtZ0aQ7xR",
        finish_reasons=("tool_calls", "length"),
        provider="openai",
        output_text=None,  # the first choice called a tool instead of answering
    ),
    "openai_responses": ResponseInfo(
        input_tokens=2048,
        output_tokens=640,
        cached_input_tokens=1536,
        reasoning_output_tokens=512,
        response_model="o4-mini-2025-04-16",
        response_id="resp_67ccd3a9da748190baa7f1570fe91ac604becb25c45c1d41",
        finish_reasons=("stop",),
        provider="openai",
        output_text="The warranty covers parts and labour for two years.",
    ),
    "openai_responses_incomplete": ResponseInfo(
        input_tokens=88,
        output_tokens=16,
        cached_input_tokens=0,
        reasoning_output_tokens=0,
        response_model="gpt-4.1-2025-04-14",
        response_id="resp_6812a0f1c3348191a0b9e1d2f3c4b5a60d1e2f3a4b5c6d7e",
        finish_reasons=("length",),
        provider="openai",
        output_text="Step 1: open the",
    ),
    "openai_embeddings": ResponseInfo(
        input_tokens=17, response_model="text-embedding-3-small", provider="openai"
    ),
    "anthropic_message": ResponseInfo(
        # Anthropic's input_tokens (50) excludes cache reads (2007) and writes (1284).
        input_tokens=50 + 2007 + 1284,
        output_tokens=393,
        cached_input_tokens=2007,
        cache_write_input_tokens=1284,
        cache_write_1h_input_tokens=0,  # usage.cache_creation: all 1,284 went to the 5m cache
        response_model="claude-sonnet-4-20250514",
        response_id="msg_01XFDUDYJgAACzvnptvVoYEL",
        finish_reasons=("stop",),
        provider="anthropic",
        output_text="Refunds are issued within 14 days.",
    ),
    "gemini_sdk": ResponseInfo(
        # candidates_token_count excludes thoughts; prompt_token_count includes cached content.
        input_tokens=1025,
        output_tokens=210 + 480,
        cached_input_tokens=1000,
        reasoning_output_tokens=480,
        response_model="gemini-2.5-flash",
        response_id="2eBHaIuaHtWqgLUP0dTa-QU",
        finish_reasons=("stop",),
        provider="gcp.gemini",
        output_text="Refunds are issued within 14 days of receipt.",
    ),
    "gemini_rest": ResponseInfo(
        input_tokens=310 + 40,
        output_tokens=12 + 100,
        reasoning_output_tokens=100,
        response_model="gemini-2.5-pro",
        response_id="kXJIaNnqAdWqgLUPx9fQgQs",
        finish_reasons=("length",),
        provider="gcp.gemini",
        output_text="The nearest store is on Main Street and opens at",
    ),
    "bedrock_converse": ResponseInfo(
        # Bedrock's inputTokens (12) excludes cacheReadInputTokens and cacheWriteInputTokens.
        input_tokens=12 + 1109 + 0,
        output_tokens=217,
        cached_input_tokens=1109,
        cache_write_input_tokens=0,
        finish_reasons=("stop",),
        provider="aws.bedrock",
        output_text="Refunds are issued within 14 days of receipt.",
    ),
    "cohere_chat_v2": ResponseInfo(
        input_tokens=5,  # billed units, not the 71 tokens that include the prompt template
        output_tokens=418,
        response_id="c14c80c3-18eb-4519-9460-6c92edd8cfb4",
        finish_reasons=("stop",),
        provider="cohere",
        output_text="Refunds are issued within 14 days.",
    ),
    "cohere_rerank": ResponseInfo(
        response_id="07734bd2-2473-4f07-94e1-0d9f0e6843cf", provider="cohere", units=1.0
    ),
    "cohere_embed": ResponseInfo(
        input_tokens=2, response_id="da6e531f-4b9b-4a5d-a1a5-0c4a6b3a7e21", provider="cohere"
    ),
    "litellm_anthropic": ResponseInfo(
        # LiteLLM already folded Anthropic's cache tokens into prompt_tokens.
        input_tokens=3341,
        output_tokens=393,
        cached_input_tokens=2007,
        cache_write_input_tokens=1284,
        response_model="claude-sonnet-4-20250514",
        response_id="chatcmpl-5f2e0b1c-8a4d-4e6f-9b3a-2c1d0e9f8a7b",
        finish_reasons=("stop",),
        provider="openai",  # model_dump() drops _hidden_params: the shape is all there is
        output_text="Refunds are issued within 14 days.",
    ),
}


@pytest.mark.parametrize("form", FORMS)
@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_extracts_documented_payload(name: str, form: Any) -> None:
    assert extract_response(form(load(name))) == EXPECTED[name]


class PydanticLike:
    """Stands in for an SDK's pydantic model: reading a missing attribute raises (and is
    counted), which is what makes probing for absent fields costly on the real thing."""

    misses: list[str]

    def __getattr__(self, name: str) -> Any:
        type(self).misses.append(name)
        raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}")


def sdk_object(value: Any, module: str, misses: list[str]) -> Any:
    """``value`` rebuilt from classes that live in ``module``, as the SDK's models do."""
    if isinstance(value, dict):
        cls = type("Model", (PydanticLike,), {"__module__": module, "misses": misses})
        obj = cls()
        for key, item in value.items():
            setattr(obj, key, sdk_object(item, module, misses))
        return obj
    if isinstance(value, list):
        return [sdk_object(v, module, misses) for v in value]
    return value


SDK_MODULES = {
    "openai_chat": "openai.types.chat.chat_completion",
    "openai_chat_tools": "openai.types.chat.chat_completion",
    "openai_responses": "openai.types.responses.response",
    "openai_responses_incomplete": "openai.types.responses.response",
    "openai_embeddings": "openai.types.create_embedding_response",
    "anthropic_message": "anthropic.types.message",
    "gemini_sdk": "google.genai.types",
    "cohere_chat_v2": "cohere.v2.types.v2chat_response",
    "cohere_rerank": "cohere.v2.types.v2rerank_response",
    "cohere_embed": "cohere.types.embed_by_type_response",
}


@pytest.mark.parametrize("name", sorted(SDK_MODULES))
def test_sdk_objects(name: str) -> None:
    misses: list[str] = []
    resp = sdk_object(load(name), SDK_MODULES[name], misses)
    assert extract_response(resp) == EXPECTED[name]


@pytest.mark.parametrize("name", sorted(SDK_MODULES))
def test_sdk_objects_handed_to_a_stream_whole(name: str) -> None:
    """The stage feeds every recorded response through a StreamAccumulator."""
    misses: list[str] = []
    resp = sdk_object(load(name), SDK_MODULES[name], misses)
    assert accumulate([resp], capture_text=True) == EXPECTED[name]


@pytest.mark.parametrize(
    ("name", "module"),
    [
        ("openai_chat_stream", "openai.types.chat.chat_completion_chunk"),
        ("openai_responses_stream", "openai.types.responses"),
        ("anthropic_stream", "anthropic.types.raw_message_stream_event"),
        ("gemini_stream", "google.genai.types"),
        ("cohere_stream", "cohere.v2.types.streamed_chat_response_v2"),
    ],
)
def test_sdk_object_streams(name: str, module: str) -> None:
    misses: list[str] = []
    chunks = sdk_object(load(name), module, misses)
    assert accumulate(chunks, capture_text=True) == STREAM_EXPECTED[name]


def test_litellm_model_response_names_the_provider_it_called() -> None:
    resp = sdk_object(load("litellm_anthropic"), "litellm.types.utils", [])
    resp._hidden_params = {"custom_llm_provider": "anthropic", "model_id": None}
    assert extract_response(resp) == dataclasses.replace(
        EXPECTED["litellm_anthropic"], provider="anthropic"
    )


def test_litellm_object_names_the_provider_it_called() -> None:
    resp = to_object(load("litellm_anthropic"))
    resp._hidden_params = {"custom_llm_provider": "anthropic", "model_id": None}
    info = extract_response(resp)
    assert info is not None
    assert info.provider == "anthropic"
    assert info.input_tokens == 3341


@pytest.mark.parametrize(
    ("llm_provider", "expected"),
    [("bedrock", "aws.bedrock"), ("vertex_ai", "gcp.vertex_ai"), ("together_ai", None)],
)
def test_litellm_provider_mapping(llm_provider: str, expected: str | None) -> None:
    resp = to_object(load("openai_chat"))
    resp._hidden_params = {"custom_llm_provider": llm_provider}
    info = extract_response(resp)
    assert info is not None
    assert info.provider == expected


def test_responses_api_tool_call_finishes_with_tool_calls() -> None:
    resp = load("openai_responses")
    resp["output"].append(
        {
            "type": "function_call",
            "id": "fc_67ccd3b1",
            "call_id": "call_x1",
            "name": "lookup",
            "arguments": "{}",
            "status": "completed",
        }
    )
    info = extract_response(resp)
    assert info is not None
    assert info.finish_reasons == ("tool_calls",)


@pytest.mark.parametrize(
    ("status", "details", "expected"),
    [
        ("failed", None, ("error",)),
        ("incomplete", {"reason": "content_filter"}, ("content_filter",)),
        ("in_progress", None, ()),
    ],
)
def test_responses_api_status(status: str, details: object, expected: tuple[str, ...]) -> None:
    resp = load("openai_responses")
    resp["status"] = status
    resp["incomplete_details"] = details
    info = extract_response(resp)
    assert info is not None
    assert info.finish_reasons == expected


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("end_turn", "stop"),
        ("stop_sequence", "stop"),
        ("max_tokens", "length"),
        ("tool_use", "tool_calls"),
        ("refusal", "content_filter"),
        ("pause_turn", "pause_turn"),  # no obvious OTel value: kept as the provider sent it
    ],
)
def test_anthropic_stop_reasons(raw: str, expected: str) -> None:
    resp = load("anthropic_message")
    resp["stop_reason"] = raw
    info = extract_response(resp)
    assert info is not None
    assert info.finish_reasons == (expected,)


class StrFinish(str, enum.Enum):
    """Like google-genai's FinishReason: a str enum."""

    STOP = "STOP"
    SAFETY = "SAFETY"


class IntFinish(enum.IntEnum):
    """Like the older proto-plus FinishReason: an int enum."""

    STOP = 1
    MAX_TOKENS = 2
    OTHER = 5


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        (StrFinish.STOP, "stop"),
        (StrFinish.SAFETY, "content_filter"),
        (IntFinish.MAX_TOKENS, "length"),
        (IntFinish.OTHER, "OTHER"),
    ],
)
def test_gemini_enum_finish_reasons(raw: object, expected: str) -> None:
    resp = to_object(load("gemini_sdk"))
    resp.candidates[0].finish_reason = raw
    info = extract_response(resp)
    assert info is not None
    assert info.finish_reasons == (expected,)


def test_cohere_falls_back_to_tokens_without_billed_units() -> None:
    resp = load("cohere_chat_v2")
    del resp["usage"]["billed_units"]
    info = extract_response(resp)
    assert info is not None
    assert (info.input_tokens, info.output_tokens) == (71, 418)


def test_cohere_sdk_float_counts_are_read() -> None:
    resp = load("cohere_chat_v2")
    resp["usage"]["billed_units"] = {"input_tokens": 5.0, "output_tokens": 418.0}
    info = extract_response(to_object(resp))
    assert info is not None
    assert (info.input_tokens, info.output_tokens) == (5, 418)
    assert type(info.input_tokens) is int


def test_cohere_chat_v1() -> None:
    resp = {
        "response_id": "0f7a3c2e-5b1d-4e8f-9a6c-2d4b8e1f3a5c",
        "text": "Refunds are issued within 14 days.",
        "generation_id": "7c2a9e41-3b6d-4f18-8e5a-1d9c0b7f2e63",
        "chat_history": [],
        "finish_reason": "COMPLETE",
        "meta": {
            "api_version": {"version": "1"},
            "billed_units": {"input_tokens": 9, "output_tokens": 12},
            "tokens": {"input_tokens": 75, "output_tokens": 12},
        },
    }
    assert extract_response(resp) == ResponseInfo(
        input_tokens=9,
        output_tokens=12,
        response_id="7c2a9e41-3b6d-4f18-8e5a-1d9c0b7f2e63",
        finish_reasons=("stop",),
        provider="cohere",
        output_text="Refunds are issued within 14 days.",
    )


@pytest.mark.parametrize(
    ("usage", "cached", "written"),
    [
        # DeepSeek: prompt_tokens includes the cache hits it reports separately.
        ({"prompt_cache_hit_tokens": 64, "prompt_cache_miss_tokens": 36}, 64, None),
        # OpenRouter-style details on an OpenAI-compatible response.
        ({"prompt_tokens_details": {"cached_tokens": 60, "cache_write_tokens": 40}}, 60, 40),
    ],
)
def test_openai_compatible_cache_fields(
    usage: dict[str, Any], cached: int, written: int | None
) -> None:
    resp = {
        "object": "chat.completion",
        "model": "deepseek-chat",
        "usage": {"prompt_tokens": 100, "completion_tokens": 5, **usage},
    }
    info = extract_response(resp)
    assert info is not None
    assert (info.input_tokens, info.cached_input_tokens) == (100, cached)
    assert info.cache_write_input_tokens == written


def test_gemini_live_and_thoughtless_usage() -> None:
    resp = {"usage_metadata": {"prompt_token_count": 30, "response_token_count": 7}}
    assert extract_response(resp) == ResponseInfo(
        input_tokens=30, output_tokens=7, provider="gcp.gemini"
    )


# --- same real counts, same normalised numbers --------------------------------------------


@given(
    uncached=st.integers(0, 10**7),
    cache_read=st.integers(0, 10**7),
    output=st.integers(0, 10**6),
)
def test_providers_agree_on_normalised_input(uncached: int, cache_read: int, output: int) -> None:
    """One request — ``uncached`` fresh input tokens, ``cache_read`` from the cache — reported
    the way each provider reports it gives the same input_tokens and cached_input_tokens."""
    total = uncached + cache_read
    shapes = {
        "openai": {
            "object": "chat.completion",
            "usage": {
                "prompt_tokens": total,
                "completion_tokens": output,
                "prompt_tokens_details": {"cached_tokens": cache_read},
            },
        },
        "anthropic": {
            "type": "message",
            "usage": {
                "input_tokens": uncached,
                "cache_read_input_tokens": cache_read,
                "cache_creation_input_tokens": 0,
                "output_tokens": output,
            },
        },
        "responses": {
            "object": "response",
            "usage": {
                "input_tokens": total,
                "input_tokens_details": {"cached_tokens": cache_read},
                "output_tokens": output,
            },
        },
        "bedrock": {
            "usage": {
                "inputTokens": uncached,
                "cacheReadInputTokens": cache_read,
                "outputTokens": output,
            }
        },
        "gemini": {
            "usage_metadata": {
                "prompt_token_count": total,
                "cached_content_token_count": cache_read,
                "candidates_token_count": output,
            }
        },
    }
    for name, payload in shapes.items():
        for form in (payload, to_object(payload)):
            info = extract_response(form)
            assert info is not None, name
            assert info.input_tokens == total, name
            assert info.cached_input_tokens == cache_read, name
            assert info.output_tokens == output, name


# --- streams ------------------------------------------------------------------------------

STREAM_EXPECTED: dict[str, ResponseInfo] = {
    "openai_chat_stream": ResponseInfo(
        input_tokens=1290,
        output_tokens=6,
        cached_input_tokens=1152,
        reasoning_output_tokens=0,
        response_model="gpt-4o-mini-2024-07-18",
        response_id="chatcmpl-BRk4x2mZ7yQ1pL0sD9vF3hJ6aT8cE",
        finish_reasons=("stop",),
        provider="openai",
        output_text="Refunds take 14 days.",
    ),
    "openai_responses_stream": ResponseInfo(
        input_tokens=1320,
        output_tokens=7,
        cached_input_tokens=1280,
        reasoning_output_tokens=0,
        response_model="gpt-4.1-mini-2025-04-14",
        response_id="resp_68131a1bb0c88191b1e2c3d4e5f6a7b8",
        finish_reasons=("stop",),
        provider="openai",
        output_text="Refunds take 14 days.",
    ),
    "anthropic_stream": ResponseInfo(
        input_tokens=10 + 37209,
        output_tokens=324,  # message_delta's cumulative count replaces message_start's 1
        cached_input_tokens=37209,
        cache_write_input_tokens=0,
        response_model="claude-3-5-haiku-20241022",
        response_id="msg_01HKoDMs4Bmm9mhzCdKoQ8bQ",
        finish_reasons=("length",),
        provider="anthropic",
        output_text="Refunds take 14 days.",
    ),
    "gemini_stream": ResponseInfo(
        input_tokens=9,
        output_tokens=20 + 120,  # the last chunk's cumulative usage, thoughts included
        reasoning_output_tokens=120,
        response_model="gemini-2.5-flash",
        response_id="Y2NIaMWnF9-ugLUPyszw2Qc",
        finish_reasons=("stop",),
        provider="gcp.gemini",
        output_text="Refunds take 14 days.",
    ),
    "bedrock_stream": ResponseInfo(
        input_tokens=8 + 1100 + 400,
        output_tokens=217,
        cached_input_tokens=1100,
        cache_write_input_tokens=400,
        finish_reasons=("tool_calls",),
        provider="aws.bedrock",
        output_text="Refunds take 14 days.",
    ),
    "cohere_stream": ResponseInfo(
        input_tokens=3,
        output_tokens=9,
        response_id="29f14a5a-11de-4cae-9800-25e4747408ea",
        finish_reasons=("length",),
        provider="cohere",
        output_text="Refunds take 14 days.",
    ),
}

# boto3 hands out ConverseStream events as dicts only.
OBJECT_STREAMS = sorted(set(STREAM_EXPECTED) - {"bedrock_stream"})


def accumulate(chunks: list[Any], *, capture_text: bool) -> ResponseInfo | None:
    acc = StreamAccumulator(capture_text=capture_text)
    for chunk in chunks:
        acc.add(chunk)
    return acc.result()


@pytest.mark.parametrize("name", sorted(STREAM_EXPECTED))
def test_stream_dicts(name: str) -> None:
    assert accumulate(load(name), capture_text=True) == STREAM_EXPECTED[name]


@pytest.mark.parametrize("name", OBJECT_STREAMS)
def test_stream_objects(name: str) -> None:
    assert accumulate(to_object(load(name)), capture_text=True) == STREAM_EXPECTED[name]


@pytest.mark.parametrize("name", sorted(STREAM_EXPECTED))
def test_stream_text_is_not_kept_unless_asked(name: str) -> None:
    expected = dataclasses.replace(STREAM_EXPECTED[name], output_text=None)
    assert accumulate(load(name), capture_text=False) == expected


def test_stream_result_so_far_then_complete() -> None:
    chunks = load("anthropic_stream")
    acc = StreamAccumulator()
    acc.add(chunks[0])
    early = acc.result()
    assert early is not None
    assert (early.input_tokens, early.output_tokens, early.finish_reasons) == (37219, 1, ())
    for chunk in chunks[1:]:
        acc.add(chunk)
    final = acc.result()
    assert final is not None
    assert (final.output_tokens, final.finish_reasons) == (324, ("length",))


def test_anthropic_sdk_stream_snapshot_on_message_stop() -> None:
    """The SDK's stream helper attaches the accumulated message to message_stop."""
    chunks = load("anthropic_stream")
    snapshot = load("anthropic_message")
    chunks[-1] = {"type": "message_stop", "message": snapshot}
    info = accumulate(chunks, capture_text=True)
    assert info is not None
    assert info.input_tokens == EXPECTED["anthropic_message"].input_tokens
    assert info.cached_input_tokens == 2007
    assert info.output_text == "Refunds are issued within 14 days."


def test_anthropic_message_delta_with_full_usage() -> None:
    """Newer API versions repeat input and cache counts in message_delta's usage."""
    chunks = load("anthropic_stream")
    chunks[6]["usage"] = {
        "input_tokens": 10,
        "cache_creation_input_tokens": 5,
        "cache_read_input_tokens": 37209,
        "output_tokens": 324,
    }
    info = accumulate(chunks, capture_text=False)
    assert info is not None
    assert (info.input_tokens, info.cache_write_input_tokens) == (10 + 37209 + 5, 5)


def test_openai_stream_with_several_choices_orders_finish_reasons_by_index() -> None:
    base = {"id": "chatcmpl-1", "object": "chat.completion.chunk", "model": "gpt-4o"}
    chunks = [
        {**base, "choices": [{"index": 1, "delta": {}, "finish_reason": "length"}]},
        {**base, "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]},
    ]
    info = accumulate(chunks, capture_text=False)
    assert info is not None
    assert info.finish_reasons == ("stop", "length")


def test_stream_without_usage_still_reports_model_and_reason() -> None:
    """Without include_usage, OpenAI sends no usage: counts stay unknown, not zero."""
    chunks = load("openai_chat_stream")[:-1]
    info = accumulate(chunks, capture_text=False)
    assert info is not None
    assert (info.input_tokens, info.output_tokens) == (None, None)
    assert info.finish_reasons == ("stop",)
    assert info.response_model == "gpt-4o-mini-2024-07-18"


def test_stream_of_whole_responses_is_read() -> None:
    info = accumulate([load("openai_chat")], capture_text=True)
    assert info == EXPECTED["openai_chat"]


def test_stream_text_is_bounded() -> None:
    acc = StreamAccumulator(capture_text=True)
    piece = {"type": "content_block_delta", "delta": {"type": "text_delta", "text": "x" * 600_000}}
    for _ in range(3):
        acc.add(piece)
    info = acc.result()
    assert info is not None
    assert info.output_text is not None
    assert len(info.output_text) == 1_000_000


def test_empty_stream_gives_none() -> None:
    assert StreamAccumulator().result() is None
    acc = StreamAccumulator()
    acc.add({"type": "ping"})
    acc.add(None)
    assert acc.result() is None


# --- hostile input ------------------------------------------------------------------------


class Exploding:
    """Every attribute read, comparison and truth test raises."""

    def __getattr__(self, name: str) -> Any:
        raise RuntimeError(f"no {name}")

    def __eq__(self, other: object) -> bool:
        raise RuntimeError("no comparison")

    def __hash__(self) -> int:
        raise RuntimeError("no hash")

    def __bool__(self) -> bool:
        raise RuntimeError("no truth")


class ExplodingMapping(Mapping[str, Any]):
    def __getitem__(self, key: str) -> Any:
        raise RuntimeError(key)

    def __iter__(self) -> Iterator[str]:
        raise RuntimeError("no iteration")

    def __len__(self) -> int:
        return 1

    def get(self, key: str, default: Any = None) -> Any:
        raise RuntimeError(key)


class ExplodingList(list[Any]):
    def __getitem__(self, index: Any) -> Any:
        raise RuntimeError("no items")

    def __iter__(self) -> Iterator[Any]:
        raise RuntimeError("no iteration")


class ChoicesRaise:
    """A chat completion whose ``choices`` property raises but whose usage is fine."""

    object = "chat.completion"
    model = "gpt-4o"
    usage = SimpleNamespace(prompt_tokens=10, completion_tokens=2)

    @property
    def choices(self) -> Any:
        raise ValueError("lazy field failed to load")


@pytest.mark.parametrize(
    "resp",
    [
        None,
        "",
        "chat.completion",
        b"{}",
        42,
        3.5,
        True,
        [],
        {},
        {"foo": 1},
        [load("openai_chat")],
        object(),
        Exploding(),
        ExplodingMapping(),
        mock.Mock(),
        mock.MagicMock(),
        mock.NonCallableMagicMock(),
        SimpleNamespace(usage=Exploding(), choices=ExplodingList([1])),
        {"object": "chat.completion", "usage": {"prompt_tokens": "1117"}},
    ],
    ids=repr,
)
def test_unknown_or_hostile_input_gives_none(resp: object) -> None:
    assert extract_response(resp) is None
    acc = StreamAccumulator(capture_text=True)
    acc.add(resp)
    acc.add(resp)
    assert acc.result() is None


def test_one_unreadable_field_does_not_hide_the_others() -> None:
    info = extract_response(ChoicesRaise())
    assert info == ResponseInfo(
        input_tokens=10, output_tokens=2, response_model="gpt-4o", provider="openai"
    )


@pytest.mark.parametrize(
    "bad",
    [True, False, -1, 2**53, 10**30, "1117", 1117.5, math.nan, math.inf, -0.5, [1117], None],
    ids=repr,
)
def test_implausible_counts_are_dropped(bad: object) -> None:
    resp = load("openai_chat")
    resp["usage"]["prompt_tokens"] = bad
    resp["usage"]["completion_tokens"] = bad
    info = extract_response(resp)
    assert info is not None
    assert (info.input_tokens, info.output_tokens) == (None, None)
    assert info.cached_input_tokens == 1024  # the plausible fields are still read


def test_sum_beyond_range_is_dropped() -> None:
    resp = load("anthropic_message")
    resp["usage"]["input_tokens"] = MAX_COUNT
    info = extract_response(resp)
    assert info is not None
    assert info.input_tokens is None
    assert info.cached_input_tokens == 2007


def test_oversized_labels_are_dropped() -> None:
    resp = load("openai_chat")
    resp["model"] = "m" * 10_000
    resp["choices"][0]["finish_reason"] = ""
    info = extract_response(resp)
    assert info is not None
    assert (info.response_model, info.finish_reasons) == (None, ())


VOCABULARY = [
    "object", "type", "usage", "model", "id", "choices", "message", "content", "text", "delta",
    "finish_reason", "index", "prompt_tokens", "completion_tokens", "total_tokens",
    "prompt_tokens_details", "cached_tokens", "completion_tokens_details", "reasoning_tokens",
    "cache_read_input_tokens", "cache_creation_input_tokens", "input_tokens", "output_tokens",
    "input_tokens_details", "output_tokens_details", "status", "incomplete_details", "reason",
    "output", "data", "stop_reason", "usage_metadata", "usageMetadata", "candidates",
    "prompt_token_count", "candidates_token_count", "thoughts_token_count", "finishReason",
    "inputTokens", "outputTokens", "cacheReadInputTokens", "cacheWriteInputTokens", "stopReason",
    "billed_units", "tokens", "search_units", "meta", "_hidden_params", "custom_llm_provider",
    "response", "metadata", "messageStop", "contentBlockDelta", "parts", "thought",
    "model_version", "response_id", "generation_id",
]  # fmt: skip
MARKERS = [
    "chat.completion", "chat.completion.chunk", "response", "list", "message", "message_start",
    "message_delta", "message_stop", "content_block_delta", "response.completed",
    "response.output_text.delta", "message-start", "content-delta", "message-end", "completed",
    "incomplete", "failed", "cancelled", "output_text", "function_call", "stop", "end_turn",
    "STOP", "anthropic", "text",
]  # fmt: skip


def build_object(fields: dict[str, Any]) -> Any:
    return SimpleNamespace(**{k: v for k, v in fields.items() if k.isidentifier()})


leaves = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(),
    st.text(max_size=8),
    st.sampled_from(MARKERS),
    st.binary(max_size=4),
    st.sampled_from([StrFinish.STOP, IntFinish.OTHER]),
    st.builds(Exploding),
    st.builds(ExplodingMapping),
    st.builds(mock.Mock),
    st.builds(mock.MagicMock),
)
anything = st.recursive(
    leaves,
    lambda children: st.one_of(
        st.lists(children, max_size=4),
        st.lists(children, max_size=3).map(tuple),
        st.lists(children, max_size=3).map(ExplodingList),
        st.dictionaries(st.sampled_from(VOCABULARY) | st.text(max_size=4), children, max_size=6),
        st.dictionaries(st.sampled_from(VOCABULARY), children, max_size=6).map(build_object),
    ),
    max_leaves=40,
)


@st.composite
def mutated_payloads(draw: st.DrawFn) -> Any:
    """A documented payload with random parts replaced: reaches every reader's deep paths."""
    payload = load(draw(st.sampled_from(sorted(EXPECTED) + sorted(STREAM_EXPECTED))))

    def walk(value: Any) -> Any:
        if draw(st.integers(0, 7)) == 0:
            return draw(anything)
        if isinstance(value, dict):
            walked = {k: walk(v) for k, v in value.items()}
            return walked if draw(st.booleans()) else build_object(walked)
        if isinstance(value, list):
            return [walk(v) for v in value]
        return value

    return walk(payload)


def check_info(info: ResponseInfo | None) -> None:
    if info is None:
        return
    for count in (
        info.input_tokens,
        info.output_tokens,
        info.cached_input_tokens,
        info.cache_write_input_tokens,
        info.reasoning_output_tokens,
        info.cache_write_1h_input_tokens,
    ):
        assert count is None or (type(count) is int and 0 <= count <= MAX_COUNT)
    for label in (info.response_model, info.response_id, info.provider):
        assert label is None or (type(label) is str and 0 < len(label) <= 256)
    assert type(info.finish_reasons) is tuple
    assert all(type(r) is str and r for r in info.finish_reasons)
    assert info.units is None or (type(info.units) is float and info.units >= 0)
    assert info.output_text is None or type(info.output_text) is str


@settings(max_examples=400, deadline=None)
@given(resp=anything | mutated_payloads())
def test_extract_never_raises(resp: Any) -> None:
    check_info(extract_response(resp))


@settings(max_examples=150, deadline=None)
@given(chunks=st.lists(anything | mutated_payloads(), max_size=4))
def test_accumulator_never_raises(chunks: list[Any]) -> None:
    acc = StreamAccumulator(capture_text=True)
    for chunk in chunks:
        acc.add(chunk)
        check_info(acc.result())
    check_info(acc.result())


@settings(max_examples=200, deadline=None)
@given(st.data())
def test_mutated_streams_never_raise(data: st.DataObject) -> None:
    chunks = load(data.draw(st.sampled_from(sorted(STREAM_EXPECTED))))
    acc = StreamAccumulator(capture_text=data.draw(st.booleans()))
    for chunk in chunks:
        acc.add(data.draw(anything) if data.draw(st.integers(0, 3)) == 0 else chunk)
    check_info(acc.result())


@settings(max_examples=150, deadline=None)
@given(items=st.lists(anything | mutated_payloads(), max_size=6))
def test_response_calls_never_raise(items: list[Any]) -> None:
    """Deciding where one call ends and the next begins reads the same hostile input."""
    calls = ResponseCalls(capture_text=True)
    for item in items:
        ended = calls.add(item)
        if ended is not None:
            check_info(ended.result())
    last = calls.close()
    if last is not None:
        check_info(last.result())
    assert calls.close() is None
