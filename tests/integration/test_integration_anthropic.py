"""The Anthropic integration, driving the real ``anthropic`` clients at a local provider that
answers in the Anthropic wire format (JSON messages and named SSE events)."""

from __future__ import annotations

import asyncio
import gc
from collections.abc import Iterator
from typing import Any

import anthropic
import pytest

import chainsight
from chainsight.testing import Capture
from tests.integration._facts import doubled, facts, money
from tests.integration._providers import FakeProvider, wait_for

pytestmark = pytest.mark.integration

MESSAGES: list[Any] = [{"role": "user", "content": "where is my order?"}]
MODEL = "claude-3-5-haiku-latest"
_OPEN: list[anthropic.Anthropic] = []


@pytest.fixture(autouse=True)
def _close_clients() -> Iterator[None]:
    """Close every sync client a test made: its pooled sockets are not left to the GC."""
    yield
    while _OPEN:
        _OPEN.pop().close()


def _client(provider: FakeProvider, **kw: Any) -> anthropic.Anthropic:
    client = anthropic.Anthropic(base_url=provider.anthropic_url, api_key="sk-ant-local", **kw)
    _OPEN.append(client)
    return client


def test_a_message_records_what_a_hand_written_stage_records(
    provider: FakeProvider, chainsight_capture: Capture, instrumented: None
) -> None:
    client = _client(provider)
    client.messages.create(model=MODEL, max_tokens=100, messages=MESSAGES)
    auto = chainsight_capture.stage(name="anthropic.messages")
    after_auto = money(chainsight_capture, "anthropic.messages")
    t = provider.tokens
    assert auto.attributes["gen_ai.usage.input_tokens"] == t.input  # cache reads and writes in
    assert auto.attributes["gen_ai.usage.cache_read.input_tokens"] == t.cached
    assert auto.attributes["gen_ai.usage.cache_write.input_tokens"] == t.cache_write
    assert auto.attributes["gen_ai.usage.cache_creation.input_tokens"] == t.cache_write
    assert auto.attributes["gen_ai.response.model"] == provider.answer.anthropic_model
    assert auto.attributes["chainsight.cost.usd"] > 0

    chainsight.uninstrument("anthropic")
    chainsight_capture.clear()
    with chainsight.stage(
        "model",
        name="anthropic.messages",
        provider="anthropic",
        model=MODEL,
        operation="chat",
        server_address="127.0.0.1",
        server_port=provider.port,
    ) as stage:
        stage.record_response(
            client.messages.create(model=MODEL, max_tokens=100, messages=MESSAGES)
        )
    assert facts(chainsight_capture.stage(name="anthropic.messages")) == facts(auto)
    assert money(chainsight_capture, "anthropic.messages") == doubled(after_auto)


def test_streams_record_the_same_facts_as_a_whole_message(
    provider: FakeProvider, chainsight_capture: Capture, instrumented: None
) -> None:
    client = _client(provider)
    client.messages.create(model=MODEL, max_tokens=100, messages=MESSAGES)
    whole = facts(chainsight_capture.stage(name="anthropic.messages"))

    chainsight_capture.clear()
    stream = client.messages.create(model=MODEL, max_tokens=100, messages=MESSAGES, stream=True)
    assert isinstance(stream, anthropic.Stream)
    assert [e.type for e in stream][-1] == "message_stop"
    raw = chainsight_capture.stage(name="anthropic.messages")
    assert facts(raw) == whole
    assert raw.attributes["gen_ai.response.time_to_first_chunk"] > 0

    chainsight_capture.clear()
    with client.messages.stream(model=MODEL, max_tokens=100, messages=MESSAGES) as helper:
        assert helper.get_final_text() == provider.answer.text
    assert facts(chainsight_capture.stage(name="anthropic.messages")) == whole


def test_a_helper_stream_left_early_ends_cancelled(
    provider: FakeProvider, chainsight_capture: Capture, instrumented: None
) -> None:
    client = _client(provider)
    with client.messages.stream(model=MODEL, max_tokens=100, messages=MESSAGES) as helper:
        next(iter(helper))
    assert chainsight_capture.stage(name="anthropic.messages").outcome == "cancelled"

    chainsight_capture.clear()
    stream = client.messages.create(model=MODEL, max_tokens=100, messages=MESSAGES, stream=True)
    next(stream)
    del stream
    gc.collect()
    assert wait_for(lambda: len(chainsight_capture.find(name="anthropic.messages")) == 1)
    assert chainsight_capture.stage(name="anthropic.messages").outcome == "cancelled"


def test_async_messages_and_streams(
    provider: FakeProvider, chainsight_capture: Capture, instrumented: None
) -> None:
    async def main() -> str:
        client = anthropic.AsyncAnthropic(base_url=provider.anthropic_url, api_key="sk-ant-local")
        await client.messages.create(model=MODEL, max_tokens=100, messages=MESSAGES)
        stream = await client.messages.create(
            model=MODEL, max_tokens=100, messages=MESSAGES, stream=True
        )
        async for _event in stream:
            pass
        async with client.messages.stream(model=MODEL, max_tokens=100, messages=MESSAGES) as helper:
            text = await helper.get_final_text()
        await client.close()
        return text

    assert asyncio.run(main()) == provider.answer.text
    stages = chainsight_capture.find(name="anthropic.messages")
    assert [s.outcome for s in stages] == ["ok", "ok", "ok"]
    assert facts(stages[0]) == facts(stages[1]) == facts(stages[2])


def test_nested_in_a_users_model_stage_it_enriches_that_stage(
    provider: FakeProvider, chainsight_capture: Capture, instrumented: None
) -> None:
    client = _client(provider)
    with (
        chainsight.stage("model", name="generate", provider="anthropic", model=MODEL),
        client.messages.stream(model=MODEL, max_tokens=100, messages=MESSAGES) as helper,
    ):
        helper.until_done()
    assert chainsight_capture.find(name="anthropic.messages") == []
    stage = chainsight_capture.stage(name="generate")
    assert stage.attributes["gen_ai.usage.output_tokens"] == provider.tokens.output
    assert stage.attributes["gen_ai.usage.cache_read.input_tokens"] == provider.tokens.cached


@pytest.mark.parametrize(
    ("failure", "error_class", "fault"),
    [
        ("429", anthropic.RateLimitError, "provider"),
        ("500", anthropic.InternalServerError, "provider"),
        ("context_length", anthropic.BadRequestError, "app"),
        ("stall", anthropic.APITimeoutError, "provider"),
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
        client.messages.create(model=MODEL, max_tokens=100, messages=MESSAGES)
    assert type(raised.value) is error_class
    stage = chainsight_capture.stage(name="anthropic.messages")
    assert (stage.outcome, stage.fault) == ("error", fault)


def test_a_429_with_retry_after_is_retried_inside_one_stage(
    provider: FakeProvider, chainsight_capture: Capture, instrumented: None
) -> None:
    provider.fail("429", times=1, retry_after=0)
    _client(provider, max_retries=2).messages.create(model=MODEL, max_tokens=100, messages=MESSAGES)
    assert provider.count("/v1/messages") == 2
    assert chainsight_capture.stage(name="anthropic.messages").outcome == "ok"


def test_uninstrument_restores_the_originals_exactly() -> None:
    from anthropic import AsyncStream, Stream
    from anthropic.resources.messages import AsyncMessages, Messages

    owners = (Messages, AsyncMessages, Stream, AsyncStream)
    attrs = ("create", "stream", "__next__", "__iter__", "__anext__", "__aiter__", "close")
    before = {(o, a): o.__dict__.get(a) for o in owners for a in attrs}
    chainsight.instrument("anthropic")
    assert Messages.__dict__["stream"] is not before[(Messages, "stream")]
    chainsight.uninstrument("anthropic")
    assert {(o, a): o.__dict__.get(a) for o in owners for a in attrs} == before
