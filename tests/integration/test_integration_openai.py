"""The OpenAI integration, driving the real ``openai`` clients at a local provider.

Every call goes through the SDK's own HTTP stack, retries and stream parser to
``tests/integration/_providers.FakeProvider``, which answers in the OpenAI wire format. The
facts the integration records are compared with what a hand-written stage calling
``record_response`` on the same response records.
"""

from __future__ import annotations

import asyncio
import gc
from collections.abc import Iterator
from typing import Any

import openai
import pytest

import chainsight
from chainsight.testing import Capture
from tests.integration._facts import doubled, facts, money
from tests.integration._providers import FakeProvider, wait_for

pytestmark = pytest.mark.integration

MESSAGES: list[Any] = [{"role": "user", "content": "where is my order?"}]


_OPEN: list[openai.OpenAI] = []


@pytest.fixture(autouse=True)
def _close_clients() -> Iterator[None]:
    """Close every sync client a test made: its pooled sockets are not left to the GC."""
    yield
    while _OPEN:
        _OPEN.pop().close()


def _client(provider: FakeProvider, **kw: Any) -> openai.OpenAI:
    client = openai.OpenAI(base_url=provider.openai_url, api_key="sk-local", **kw)
    _OPEN.append(client)
    return client


def _aclient(provider: FakeProvider, **kw: Any) -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(base_url=provider.openai_url, api_key="sk-local", **kw)


def _by_hand(name: str, provider: FakeProvider, model: str, operation: str = "chat") -> Any:
    """The stage a user would write around the same call."""
    return chainsight.stage(
        "embedding" if operation == "embeddings" else "model",
        name=name,
        provider="openai",
        model=model,
        operation=operation,
        server_address="127.0.0.1",
        server_port=provider.port,
    )


@pytest.mark.parametrize(
    ("name", "operation", "call"),
    [
        (
            "openai.chat",
            "chat",
            lambda c: c.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES),
        ),
        ("openai.responses", "chat", lambda c: c.responses.create(model="gpt-4o-mini", input="hi")),
        (
            "openai.embeddings",
            "embeddings",
            lambda c: c.embeddings.create(model="text-embedding-3-small", input=["a", "b"]),
        ),
    ],
)
def test_a_call_records_what_a_hand_written_stage_records(
    provider: FakeProvider,
    chainsight_capture: Capture,
    instrumented: None,
    name: str,
    operation: str,
    call: Any,
) -> None:
    client = _client(provider)
    response = call(client)
    auto = chainsight_capture.stage(name=name)
    after_auto = money(chainsight_capture, name)
    assert auto.outcome == "ok"
    assert auto.attributes["gen_ai.usage.input_tokens"] > 0
    assert auto.attributes["chainsight.cost.usd"] > 0

    chainsight.uninstrument("openai")
    chainsight_capture.clear()
    model = response.model if operation == "embeddings" else "gpt-4o-mini"
    model = "text-embedding-3-small" if operation == "embeddings" else model
    with _by_hand(name, provider, model, operation) as stage:
        stage.record_response(call(client))
    assert facts(chainsight_capture.stage(name=name)) == facts(auto)
    assert money(chainsight_capture, name) == doubled(after_auto)


def test_chat_records_cached_and_reasoning_tokens_and_the_response_model(
    provider: FakeProvider, chainsight_capture: Capture, instrumented: None
) -> None:
    _client(provider).chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)
    attrs = chainsight_capture.stage(name="openai.chat").attributes
    assert attrs["gen_ai.usage.input_tokens"] == provider.tokens.input
    assert attrs["gen_ai.usage.output_tokens"] == provider.tokens.output
    assert attrs["gen_ai.usage.cache_read.input_tokens"] == provider.tokens.cached
    assert attrs["gen_ai.usage.reasoning.output_tokens"] == provider.tokens.reasoning
    assert attrs["gen_ai.response.model"] == provider.answer.model
    assert attrs["gen_ai.request.model"] == "gpt-4o-mini"
    assert attrs["gen_ai.response.finish_reasons"] == ("stop",)
    assert attrs["gen_ai.provider.name"] == "openai"


def test_a_stream_records_usage_and_time_to_first_chunk(
    provider: FakeProvider, chainsight_capture: Capture, instrumented: None
) -> None:
    stream = _client(provider).chat.completions.create(
        model="gpt-4o-mini", messages=MESSAGES, stream=True, stream_options={"include_usage": True}
    )
    assert isinstance(stream, openai.Stream)  # the SDK's own object, not a proxy
    text = "".join(c.choices[0].delta.content or "" for c in stream if c.choices)
    assert text == provider.answer.text
    streamed = chainsight_capture.stage(name="openai.chat")
    assert streamed.outcome == "ok"
    assert streamed.attributes["gen_ai.response.time_to_first_chunk"] > 0
    assert streamed.event("chainsight.first_chunk") is not None
    assert chainsight_capture.metric("gen_ai_client_operation_time_to_first_chunk_seconds_count")

    chainsight_capture.clear()
    _client(provider).chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)
    whole = chainsight_capture.stage(name="openai.chat")
    assert facts(streamed) == facts(whole)


def test_the_stream_helpers_are_stages(
    provider: FakeProvider, chainsight_capture: Capture, instrumented: None
) -> None:
    client = _client(provider)
    with client.chat.completions.stream(
        model="gpt-4o-mini", messages=MESSAGES, stream_options={"include_usage": True}
    ) as stream:
        assert stream.get_final_completion().choices[0].message.content == provider.answer.text
    with client.responses.stream(model="gpt-4o-mini", input="hi") as events:
        assert events.get_final_response().output_text == provider.answer.text
    chat = chainsight_capture.stage(name="openai.chat")
    responses = chainsight_capture.stage(name="openai.responses")
    for stage in (chat, responses):
        assert stage.outcome == "ok"
        assert stage.attributes["gen_ai.usage.output_tokens"] == provider.tokens.output
        assert stage.attributes["gen_ai.response.time_to_first_chunk"] > 0


def test_a_stream_closed_early_ends_cancelled(
    provider: FakeProvider, chainsight_capture: Capture, instrumented: None
) -> None:
    stream = _client(provider).chat.completions.create(
        model="gpt-4o-mini", messages=MESSAGES, stream=True
    )
    next(stream)
    stream.close()
    stage = chainsight_capture.stage(name="openai.chat")
    assert stage.outcome == "cancelled"
    assert stage.fault is None


def test_a_stream_left_by_break_ends_cancelled(
    provider: FakeProvider, chainsight_capture: Capture, instrumented: None
) -> None:
    with _client(provider) as client:  # closing the client closes what the app left open
        for _chunk in client.chat.completions.create(
            model="gpt-4o-mini", messages=MESSAGES, stream=True
        ):
            break
        gc.collect()
    assert chainsight_capture.stage(name="openai.chat").outcome == "cancelled"


def test_a_dropped_stream_ends_when_collected(
    provider: FakeProvider, chainsight_capture: Capture, instrumented: None
) -> None:
    client = _client(provider)
    stream = client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES, stream=True)
    next(stream)
    assert chainsight_capture.find(name="openai.chat") == []  # still open
    stream.response.close()  # the socket, not the stream: chainsight is not told
    del stream
    gc.collect()  # the SDK's stream holds a generator that refers back to it: a cycle
    client.close()
    assert wait_for(lambda: len(chainsight_capture.find(name="openai.chat")) == 1)
    assert chainsight_capture.stage(name="openai.chat").outcome == "cancelled"


def test_a_stream_never_iterated_ends_when_collected(
    provider: FakeProvider, chainsight_capture: Capture, instrumented: None
) -> None:
    stream = _client(provider).chat.completions.create(
        model="gpt-4o-mini", messages=MESSAGES, stream=True
    )
    stream.response.close()
    del stream
    gc.collect()
    assert wait_for(lambda: len(chainsight_capture.find(name="openai.chat")) == 1)
    assert chainsight_capture.stage(name="openai.chat").outcome == "cancelled"


def test_async_calls_and_streams(
    provider: FakeProvider, chainsight_capture: Capture, instrumented: None
) -> None:
    async def main() -> str:
        client = _aclient(provider)
        await client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)
        stream = await client.chat.completions.create(
            model="gpt-4o-mini",
            messages=MESSAGES,
            stream=True,
            stream_options={"include_usage": True},
        )
        assert isinstance(stream, openai.AsyncStream)
        parts = [c.choices[0].delta.content or "" async for c in stream if c.choices]
        async with client.responses.stream(model="gpt-4o-mini", input="hi") as events:
            await events.get_final_response()
        await client.embeddings.create(model="text-embedding-3-small", input="a")
        early = await client.chat.completions.create(
            model="gpt-4o-mini", messages=MESSAGES, stream=True
        )
        await early.__anext__()
        await early.close()
        await client.close()
        return "".join(parts)

    assert asyncio.run(main()) == provider.answer.text
    chats = chainsight_capture.find(name="openai.chat")
    assert [c.outcome for c in chats] == ["ok", "ok", "cancelled"]
    assert chats[1].attributes["gen_ai.usage.output_tokens"] == provider.tokens.output
    assert chainsight_capture.stage(name="openai.responses").outcome == "ok"
    assert chainsight_capture.stage(name="openai.embeddings").kind == "embedding"


def test_nested_in_a_users_model_stage_it_enriches_that_stage(
    provider: FakeProvider, chainsight_capture: Capture, instrumented: None
) -> None:
    @chainsight.traced_stage("model", name="generate", provider="openai", model="gpt-4o-mini")
    def generate() -> str:
        resp = _client(provider).chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)
        return resp.choices[0].message.content or ""

    with chainsight.request("answer"):
        assert generate() == provider.answer.text
        with chainsight.stage("model", name="streamed", provider="openai", model="gpt-4o-mini"):
            for _ in _client(provider).chat.completions.create(
                model="gpt-4o-mini",
                messages=MESSAGES,
                stream=True,
                stream_options={"include_usage": True},
            ):
                pass
    assert chainsight_capture.find(name="openai.chat") == []  # no duplicate span
    for name in ("generate", "streamed"):
        stage = chainsight_capture.stage(name=name)
        assert stage.attributes["gen_ai.usage.input_tokens"] == provider.tokens.input
        assert stage.attributes["gen_ai.response.model"] == provider.answer.model
    assert (
        "gen_ai.response.time_to_first_chunk"
        in chainsight_capture.stage(name="streamed").attributes
    )
    request = chainsight_capture.stage(kind="request")
    assert request.attributes["chainsight.request.input_tokens"] == 2 * provider.tokens.input


def test_inside_another_kind_of_stage_it_is_a_child_stage(
    provider: FakeProvider, chainsight_capture: Capture, instrumented: None
) -> None:
    with chainsight.stage("retrieval", name="hyde"):
        _client(provider).chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)
    child = chainsight_capture.stage(name="openai.chat")
    assert child.parent_id == chainsight_capture.stage(name="hyde").span_id


def test_a_429_retried_by_the_sdk_is_one_stage(
    provider: FakeProvider, chainsight_capture: Capture, instrumented: None
) -> None:
    provider.fail("429", times=1, retry_after=0)
    _client(provider, max_retries=2).chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)
    assert provider.count("/v1/chat/completions") == 2
    assert chainsight_capture.stage(name="openai.chat").outcome == "ok"


@pytest.mark.parametrize(
    ("failure", "error_class", "fault"),
    [
        ("429", openai.RateLimitError, "provider"),
        ("500", openai.InternalServerError, "provider"),
        ("context_length", openai.BadRequestError, "app"),
        ("stall", openai.APITimeoutError, "provider"),
    ],
)
def test_sdk_errors_pass_through_unchanged_and_are_classified(
    provider: FakeProvider,
    chainsight_capture: Capture,
    instrumented: None,
    failure: Any,
    error_class: type[BaseException],
    fault: str,
) -> None:
    provider.fail(failure, times=3)
    client = _client(provider, max_retries=1, timeout=0.5)
    with pytest.raises(error_class) as raised:
        client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)
    assert type(raised.value) is error_class  # the SDK's own exception, not a wrapper
    stage = chainsight_capture.stage(name="openai.chat")
    assert stage.outcome == "error"
    assert stage.fault == fault


def test_uninstrument_restores_the_originals_exactly(provider: FakeProvider) -> None:
    from openai import Stream
    from openai.resources.chat.completions import AsyncCompletions, Completions

    before = {
        (owner, attr): owner.__dict__.get(attr)
        for owner in (Completions, AsyncCompletions, Stream)
        for attr in ("create", "parse", "__next__", "__iter__", "close")
    }
    chainsight.instrument("openai")
    assert Completions.__dict__["create"] is not before[(Completions, "create")]
    chainsight.instrument("openai")  # twice is harmless
    chainsight.uninstrument("openai")
    after = {key: key[0].__dict__.get(key[1]) for key in before}
    assert after == before


def test_a_helper_stream_left_early_ends_cancelled(
    provider: FakeProvider, chainsight_capture: Capture, instrumented: None
) -> None:
    client = _client(provider)
    with client.chat.completions.stream(model="gpt-4o-mini", messages=MESSAGES) as stream:
        next(iter(stream))
    # The helper's close() closes the HTTP response, not the SDK stream: the stage ends anyway.
    assert chainsight_capture.stage(name="openai.chat").outcome == "cancelled"
    chainsight_capture.clear()
    with client.responses.stream(model="gpt-4o-mini", input="hi") as events:
        next(iter(events))
    assert chainsight_capture.stage(name="openai.responses").outcome == "cancelled"


def test_a_spent_budget_refuses_the_call_before_it_is_sent(
    provider: FakeProvider, chainsight_capture: Capture, instrumented: None
) -> None:
    chainsight.configure(budgets=[chainsight.Budget("daily", 0.000001)])
    client = _client(provider)
    client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)  # spends it
    with pytest.raises(chainsight.BudgetExceeded):
        client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)
    assert provider.count("/v1/chat/completions") == 1
    outcomes = [s.outcome for s in chainsight_capture.find(name="openai.chat")]
    assert outcomes == ["ok", "rejected"]


def test_each_call_names_its_own_model_and_follows_configure(
    provider: FakeProvider, chainsight_capture: Capture, instrumented: None
) -> None:
    client = _client(provider)
    client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)
    client.chat.completions.create(model="gpt-4o", messages=MESSAGES)
    chainsight.configure(release="answer@8")  # stages made after it carry the new release
    client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)
    stages = chainsight_capture.find(name="openai.chat")
    assert [s.attributes["gen_ai.request.model"] for s in stages] == [
        "gpt-4o-mini",
        "gpt-4o",
        "gpt-4o-mini",
    ]
    assert stages[2].attributes["chainsight.release.id"] == "answer@8"
    assert stages[0].attributes["chainsight.release.id"] != "answer@8"
