"""Stages and requests: spans, nesting, outcomes, fault domains, every callable shape."""

from __future__ import annotations

import asyncio
import contextvars
import enum
import functools
import gc
import inspect
import sys
import threading
import time
import traceback
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest

import chainsight
from chainsight import ConfigurationError
from chainsight import _names as n
from chainsight.testing import Capture


class ProviderTimeout(TimeoutError):
    pass


class HTTPError(Exception):
    def __init__(self, status_code: int) -> None:
        super().__init__(f"HTTP {status_code}")
        self.status_code = status_code


# --- spans and attributes -----------------------------------------------------------------


def test_issue_example_chain_produces_named_nested_spans(chainsight_capture: Capture) -> None:
    chainsight.configure(release={"model": "gpt-4o-2024-08-06", "prompt": "answer@7"})

    @chainsight.traced_stage("retrieval", system="qdrant", collection="kb")
    def retrieve(q: str) -> list[str]:
        return ["doc1", "doc2"]

    @chainsight.traced_stage("model", provider="openai", model="gpt-4o")
    async def generate(messages: list[str]) -> str:
        chainsight.current_stage().record_usage(input_tokens=120, output_tokens=30)
        return '{"answer": "yes"}'

    async def main() -> None:
        with chainsight.request("answer_ticket", tenant="acme", feature="copilot"):
            docs = retrieve("q")
            with chainsight.stage("prompt", prompt_name="answer", prompt_version="7"):
                prompt = list(docs)
            answer = await generate(prompt)
            with chainsight.stage("validation", validator="json_schema") as v:
                v.record_validation(passed="answer" in answer, reason=None)

    asyncio.run(main())
    cap = chainsight_capture
    req = cap.stage(kind="request")
    assert req.span_name == "invoke_workflow answer_ticket"
    assert req.parent_id is None
    assert req.outcome == "ok"
    assert req.attributes["gen_ai.operation.name"] == "invoke_workflow"

    retrieval = cap.stage(kind="retrieval")
    assert retrieval.span_name == "retrieval kb"
    assert retrieval.span.kind.name == "CLIENT"
    assert retrieval.attributes["db.system.name"] == "qdrant"
    assert retrieval.attributes["db.collection.name"] == "kb"
    assert (
        retrieval.name == "test_issue_example_chain_produces_named_nested_spans.<locals>.retrieve"
    )

    model = cap.stage(kind="model")
    assert model.span_name == "chat gpt-4o"
    assert model.attributes["gen_ai.provider.name"] == "openai"
    assert model.attributes["gen_ai.request.model"] == "gpt-4o"
    assert model.attributes["gen_ai.usage.input_tokens"] == 120

    prompt = cap.stage(kind="prompt")
    assert prompt.span_name == "prompt answer"
    assert prompt.attributes["gen_ai.prompt.version"] == "7"
    validation = cap.stage(kind="validation")
    assert validation.span_name == "validate json_schema"
    assert validation.attributes["chainsight.validation.passed"] is True

    for s in cap.stages:
        assert s.trace_id == req.trace_id
        assert s.attributes["chainsight.release.model"] == "gpt-4o-2024-08-06"
        assert s.attributes["chainsight.release.prompt"] == "answer@7"
        assert s.attributes["chainsight.release.id"] == "model=gpt-4o-2024-08-06,prompt=answer@7"
        assert s.attributes["chainsight.tenant"] == "acme"
        assert s.attributes["chainsight.feature"] == "copilot"
        if s.kind != "request":
            assert s.parent_id == req.span_id


def test_nested_stages_parent_links(chainsight_capture: Capture) -> None:
    with chainsight.request("r"), chainsight.stage("tool", name="outer") as outer:
        assert chainsight.current_stage() is outer
        with chainsight.stage("tool", name="inner") as inner:
            assert chainsight.current_stage() is inner
        assert chainsight.current_stage() is outer
    cap = chainsight_capture
    assert cap.stage(name="inner").parent_id == cap.stage(name="outer").span_id
    assert cap.stage(name="outer").parent_id == cap.stage(kind="request").span_id


def test_span_kinds_and_operations(chainsight_capture: Capture) -> None:
    for kind, kwargs in [
        ("embedding", {"provider": "openai", "model": "text-embedding-3-small"}),
        ("rerank", {"provider": "cohere", "model": "rerank-v3.5"}),
        ("rerank", {"model": "local-ce"}),
        ("tool", {"tool": "search_orders"}),
        ("cache", {}),
    ]:
        with chainsight.stage(kind, **kwargs):
            pass
    spans = {s.span_name: s for s in chainsight_capture.stages}
    assert spans["embeddings text-embedding-3-small"].span.kind.name == "CLIENT"
    assert spans["embeddings text-embedding-3-small"].attributes["gen_ai.operation.name"] == (
        "embeddings"
    )
    assert spans["rerank rerank-v3.5"].span.kind.name == "CLIENT"
    assert spans["rerank local-ce"].span.kind.name == "INTERNAL"
    assert spans["execute_tool search_orders"].attributes["gen_ai.tool.name"] == "search_orders"
    assert "cache cache" in spans


def test_custom_kind_registration(chainsight_capture: Capture) -> None:
    chainsight.register_stage_kind("web_search", fault="provider", remote=True)

    @chainsight.traced_stage("web_search", name="bing")
    def search() -> None:
        raise ConnectionError("refused")

    with pytest.raises(ConnectionError):
        search()
    s = chainsight_capture.stage(name="bing")
    assert s.kind == "web_search"
    assert s.fault == "provider"
    assert s.error_type == "connection"
    assert s.span.kind.name == "CLIENT"


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda: chainsight.traced_stage("retreival"), "unknown stage kind 'retreival'"),
        (lambda: chainsight.traced_stage("model", model=42), "model=42"),
        (lambda: chainsight.traced_stage("model", component="db"), "component='db'"),
        (lambda: chainsight.traced_stage("model", api_key="sk-1"), "credential"),
        (lambda: chainsight.traced_stage("model", weird=object()), "weird="),
        (lambda: chainsight.traced_stage("tool")(42), "must decorate a function"),
        (lambda: chainsight.stage("nope"), "unknown stage kind 'nope'"),
        (lambda: chainsight.register_stage_kind("model"), "built in"),
        (lambda: chainsight.register_stage_kind("x", fault="db"), "fault='db'"),
    ],
)
def test_configuration_errors_at_decoration_time(call: Any, message: str) -> None:
    with pytest.raises(ConfigurationError, match=message.replace("(", r"\(")) as info:
        call()
    if "unknown stage kind" in message:
        assert "retrieval" in str(info.value)  # names the choices


def test_extra_keywords_become_attributes(chainsight_capture: Capture) -> None:
    @chainsight.traced_stage("tool", name="lookup", region="eu", retries=3)
    def lookup() -> None:
        chainsight.current_stage().set(hits=4, ratio=0.5, tags=["a", "b"], password="hunter2")

    lookup()
    attrs = chainsight_capture.stage(name="lookup").attributes
    assert attrs["region"] == "eu"
    assert attrs["retries"] == 3
    assert attrs["hits"] == 4
    assert attrs["tags"] == ("a", "b")
    assert "password" not in attrs


def test_odd_keyword_values_on_the_request_path_are_dropped_and_counted(
    chainsight_capture: Capture,
) -> None:
    # A user id that is sometimes None, a dict passed by mistake: the request goes on.
    with (
        chainsight.request("answer", tenant="acme", user_id=None, extra={"a": 1}, plan="pro"),
        chainsight.stage("model", name="generate", attempt=None, api_key="sk-1", top_k=3),
    ):
        pass
    request = chainsight_capture.stage(name="answer").attributes
    model = chainsight_capture.stage(name="generate").attributes
    assert request["plan"] == "pro"
    assert "user_id" not in request
    assert "extra" not in request
    assert model[n.GEN_AI_RETRIEVAL_TOP_K] == 3
    assert "attempt" not in model
    assert "api_key" not in model
    assert [s.outcome for s in chainsight_capture.stages] == ["ok", "ok"]
    # None is a keyword not given; the dict and the credential are counted.
    counted = chainsight_capture.metric(
        "chainsight_internal_errors_total", {"where": "invalid_argument:stage_keyword"}
    )
    assert counted == 2.0


@pytest.mark.parametrize(
    ("keyword", "value", "expected"),
    [
        ("top_k", "many", "must be an int from 0"),
        ("top_k", True, "must be an int from 0"),
        ("top_k", -1, "must be an int from 0"),
        ("server_port", 70000, "from 0 to 65535"),
        ("collection", 5.5, "must be a non-empty string or an int"),
        ("collection", "", "must be a non-empty string or an int"),
        ("validator", ["a"], "must be a non-empty string or an int"),
        ("prompt_version", 1.5, "must be a non-empty string or an int"),
        ("conversation_id", True, "must be a non-empty string or an int"),
    ],
)
def test_semantic_keywords_of_the_wrong_type_raise_at_decoration(
    keyword: str, value: object, expected: str
) -> None:
    with pytest.raises(ConfigurationError, match=expected) as raised:
        chainsight.traced_stage("retrieval", name="search", **{keyword: value})
    assert repr(value) in str(raised.value) or str(value) in str(raised.value)


def test_semantic_keywords_of_the_right_type_are_recorded(chainsight_capture: Capture) -> None:
    class Tool(enum.Enum):
        SEARCH = "search"

    class Depth(enum.IntEnum):
        DEEP = 20

    @chainsight.traced_stage(
        "retrieval",
        name="search",
        top_k=5,
        server_port=6333,
        collection="docs",
        tool=Tool.SEARCH,
        conversation_id=123,
    )
    def search() -> None: ...

    @chainsight.traced_stage("retrieval", name="deep", top_k=Depth.DEEP)
    def deep() -> None: ...

    deep()

    search()
    with chainsight.stage("prompt", name="p", prompt_version=7, top_k="many"):
        pass  # on the request path a wrong type is dropped and counted, not raised
    attrs = chainsight_capture.stage(name="search").attributes
    assert attrs[n.GEN_AI_RETRIEVAL_TOP_K] == 5
    assert attrs[n.SERVER_PORT] == 6333
    assert attrs[n.DB_COLLECTION_NAME] == "docs"
    assert attrs[n.GEN_AI_TOOL_NAME] == "search"
    assert attrs[n.GEN_AI_CONVERSATION_ID] == 123
    assert chainsight_capture.stage(name="deep").attributes[n.GEN_AI_RETRIEVAL_TOP_K] == 20
    prompt = chainsight_capture.stage(name="p").attributes
    assert prompt[n.GEN_AI_PROMPT_VERSION] == 7
    assert n.GEN_AI_RETRIEVAL_TOP_K not in prompt
    assert (
        chainsight_capture.metric(
            "chainsight_internal_errors_total", {"where": "invalid_argument:stage_keyword"}
        )
        == 1.0
    )


def test_a_none_keyword_is_not_given_at_decoration_either(chainsight_capture: Capture) -> None:
    @chainsight.traced_stage("tool", name="lookup", region=None)
    def lookup() -> None: ...

    lookup()
    assert "region" not in chainsight_capture.stage(name="lookup").attributes


def test_odd_keyword_values_do_not_fail_a_disabled_request() -> None:
    chainsight.configure(enabled=False)
    try:
        with chainsight.request("answer", user_id=None, extra={"a": 1}):
            pass
    finally:
        chainsight.reset()


# --- every callable shape -----------------------------------------------------------------


def test_sync_function_preserves_metadata_and_return(chainsight_capture: Capture) -> None:
    def original(a: int, b: int = 2) -> int:
        """Add."""
        return a + b

    wrapped = chainsight.traced_stage("tool")(original)
    assert wrapped(1, b=5) == 6
    assert wrapped.__name__ == "original"
    assert wrapped.__doc__ == "Add."
    assert inspect.signature(wrapped) == inspect.signature(original)
    assert wrapped.__wrapped__ is original  # type: ignore[attr-defined]


def test_async_function(chainsight_capture: Capture) -> None:
    @chainsight.traced_stage("model", provider="p", model="m")
    async def call(x: int) -> int:
        await asyncio.sleep(0.01)
        return x * 2

    assert inspect.iscoroutinefunction(call)
    assert asyncio.run(call(4)) == 8
    s = chainsight_capture.stage(kind="model")
    assert s.outcome == "ok"
    assert s.duration >= 0.009


def test_methods_and_decoration_before_configure() -> None:
    class Retriever:
        def __init__(self) -> None:
            self.calls = 0

        @chainsight.traced_stage("retrieval", system="pgvector")
        def search(self, q: str) -> str:
            self.calls += 1
            return q.upper()

    r = Retriever()
    assert r.search("x") == "X"  # before configure(): works, nothing captured anywhere
    from chainsight.testing import capture

    cap = capture()
    assert r.search("y") == "Y"
    s = cap.stage(kind="retrieval")
    assert s.name == "test_methods_and_decoration_before_configure.<locals>.Retriever.search"
    assert s.attributes["db.system.name"] == "pgvector"
    assert r.calls == 2


def test_user_exception_same_object_and_traceback(chainsight_capture: Capture) -> None:
    err = KeyError("missing")

    @chainsight.traced_stage("prompt")
    def build() -> None:
        raise err

    with pytest.raises(KeyError) as info:
        build()
    assert info.value is err
    frames = [f.name for f in traceback.extract_tb(info.value.__traceback__)]
    assert frames[-1] == "build"  # the raising frame is still the user's


def test_generator_span_covers_stream(chainsight_capture: Capture) -> None:
    @chainsight.traced_stage("model", provider="p", model="m")
    def stream() -> Iterator[str]:
        for word in ("a", "b", "c"):
            time.sleep(0.01)
            yield word

    gen = stream()
    assert chainsight_capture.find(kind="model") == []  # nothing opens before the first next()
    assert list(gen) == ["a", "b", "c"]
    s = chainsight_capture.stage(kind="model")
    assert s.outcome == "ok"
    assert s.duration >= 0.029
    ttfc = s.attributes["gen_ai.response.time_to_first_chunk"]
    assert 0.009 <= ttfc < s.duration
    assert s.attributes["chainsight.time_to_first_chunk_seconds"] == ttfc  # deprecated alias
    assert s.event("chainsight.first_chunk") is not None


def test_generator_abandoned_is_cancelled_with_real_duration(chainsight_capture: Capture) -> None:
    @chainsight.traced_stage("model", provider="p", model="m")
    def stream() -> Iterator[int]:
        yield 1
        yield 2

    gen = stream()
    before = time.perf_counter()
    assert next(gen) == 1
    first_item = time.perf_counter() - before
    time.sleep(0.2)  # the consumer walked away; the stream's real duration ended at item 1
    del gen
    gc.collect()
    s = chainsight_capture.stage(kind="model")
    assert s.outcome == "cancelled"
    # The span began and reached item 1 inside next(): the sleep after it is not counted,
    # however slow the machine (a bound measured around next(), not a fixed number).
    assert s.duration <= first_item


def test_generator_closed_early_is_cancelled(chainsight_capture: Capture) -> None:
    closed = []

    @chainsight.traced_stage("model", provider="p", model="m")
    def stream() -> Iterator[int]:
        try:
            yield 1
            yield 2
        finally:
            closed.append(True)

    gen = stream()
    next(gen)
    gen.close()
    assert closed == [True]
    assert chainsight_capture.stage(kind="model").outcome == "cancelled"


def test_generator_error_and_send(chainsight_capture: Capture) -> None:
    @chainsight.traced_stage("tool", name="echo")
    def echo() -> Iterator[int]:
        received = yield 0
        yield received * 2
        raise ValueError("boom")

    gen = echo()
    assert next(gen) == 0
    assert gen.send(21) == 42
    with pytest.raises(ValueError, match="boom"):
        next(gen)
    s = chainsight_capture.stage(name="echo")
    assert s.outcome == "error"
    assert s.error_type == "ValueError"


def test_async_generator_stream_and_early_close(chainsight_capture: Capture) -> None:
    @chainsight.traced_stage("model", provider="p", model="m")
    async def stream(n: int) -> AsyncIterator[int]:
        for i in range(n):
            await asyncio.sleep(0.005)
            yield i

    async def main() -> None:
        assert [x async for x in stream(3)] == [0, 1, 2]
        agen = stream(5)
        assert await agen.__anext__() == 0
        await agen.aclose()

    asyncio.run(main())
    outcomes = sorted(s.outcome or "" for s in chainsight_capture.find(kind="model"))
    assert outcomes == ["cancelled", "ok"]


def test_stage_inside_generator_nests_under_it(chainsight_capture: Capture) -> None:
    @chainsight.traced_stage("tool", name="inner")
    def inner() -> int:
        return 1

    @chainsight.traced_stage("model", provider="p", model="m")
    def stream() -> Iterator[int]:
        yield inner()
        yield inner()

    with chainsight.request("r"):
        assert list(stream()) == [1, 1]
        assert chainsight.current_stage().kind == "request"  # context restored between items
    model = chainsight_capture.stage(kind="model")
    inners = chainsight_capture.find(name="inner")
    assert len(inners) == 2
    assert all(i.parent_id == model.span_id for i in inners)


# --- context across tasks and threads -----------------------------------------------------


def test_thousand_concurrent_async_requests_stay_in_their_traces(
    chainsight_capture: Capture,
) -> None:
    @chainsight.traced_stage("retrieval", system="qdrant")
    async def retrieve(i: int) -> int:
        await asyncio.sleep(0.001 * (i % 5))
        return i

    @chainsight.traced_stage("model", provider="openai", model="gpt-4o")
    async def generate(i: int) -> int:
        await asyncio.sleep(0.001 * (i % 3))
        chainsight.current_stage().set(request_number=i)
        return i

    async def one(i: int) -> None:
        async with chainsight.request("answer", tenant=f"t{i}"):
            chainsight.current_stage().set(request_number=i)
            await retrieve(i)
            with chainsight.stage("prompt", name="build"):
                await asyncio.sleep(0)
            await generate(i)

    async def main() -> None:
        await asyncio.gather(*(one(i) for i in range(1000)))

    asyncio.run(main())
    stages = chainsight_capture.stages
    assert len(stages) == 4000
    roots = {s.trace_id: s for s in stages if s.kind == "request"}
    assert len(roots) == 1000
    for s in stages:
        root = roots[s.trace_id]
        if s.kind != "request":
            assert s.parent_id == root.span_id
            assert s.attributes["chainsight.tenant"] == root.attributes["chainsight.tenant"]
        if "request_number" in s.attributes:
            assert s.attributes["request_number"] == root.attributes["request_number"]


def test_threads_with_copied_context_join_the_request(chainsight_capture: Capture) -> None:
    @chainsight.traced_stage("tool", name="work")
    def work() -> None:
        pass

    with chainsight.request("r"):
        ctx = contextvars.copy_context()
        t = threading.Thread(target=ctx.run, args=(work,))
        t.start()
        t.join()
        plain = threading.Thread(target=work)  # no copied context: its own trace
        plain.start()
        plain.join()
    req = chainsight_capture.stage(kind="request")
    works = chainsight_capture.find(name="work")
    assert sorted(w.trace_id == req.trace_id for w in works) == [False, True]


# --- fault domains and outcomes -----------------------------------------------------------


def test_provider_timeout_reraised_through_request(chainsight_capture: Capture) -> None:
    @chainsight.traced_stage("model", provider="openai", model="gpt-4o")
    def generate() -> None:
        raise ProviderTimeout("read timed out")

    with (
        pytest.raises(ProviderTimeout),
        chainsight.request("answer"),
        chainsight.stage("tool", name="wrapper"),
    ):
        generate()
    cap = chainsight_capture
    for s in (cap.stage(kind="model"), cap.stage(name="wrapper"), cap.stage(kind="request")):
        assert s.outcome == "error"
        assert s.fault == "provider"
        assert s.error_type == "timeout"
        assert (
            s.attributes["chainsight.error.origin"]
            == "test_provider_timeout_reraised_through_request.<locals>.generate"
        )
        assert s.span.status.status_code.name == "ERROR"
    # The exception event is recorded once, where the error started.
    assert cap.stage(kind="model").event("exception") is not None
    assert cap.stage(kind="request").event("exception") is None
    assert cap.metric(
        "chainsight_requests_total",
        {"request": "answer", "feature": "", "outcome": "error", "fault": "provider",
         "release": "unknown"},
    ) == 1.0  # fmt: skip


@pytest.mark.parametrize(
    ("kind", "exc", "fault", "error_type"),
    [
        ("model", HTTPError(400), "app", "bad_request"),
        ("model", HTTPError(401), "app", "auth"),
        ("model", HTTPError(429), "provider", "rate_limited"),
        ("model", HTTPError(503), "provider", "server_error"),
        ("retrieval", HTTPError(503), "vector_store", "server_error"),
        ("retrieval", ConnectionError("refused"), "vector_store", "connection"),
        ("prompt", KeyError("x"), "app", "KeyError"),
        ("embedding", asyncio.TimeoutError(), "provider", "timeout"),
        ("tool", TimeoutError(), "app", "timeout"),
    ],
)
def test_classification(
    chainsight_capture: Capture, kind: str, exc: Exception, fault: str, error_type: str
) -> None:
    with pytest.raises(type(exc)), chainsight.stage(kind, name="s"):
        raise exc
    s = chainsight_capture.stage(name="s")
    assert (s.outcome, s.fault, s.error_type) == ("error", fault, error_type)


def test_response_status_code_duck_typing(chainsight_capture: Capture) -> None:
    class Response:
        status_code = 429

    class APIError(Exception):
        response = Response()

    with pytest.raises(APIError), chainsight.stage("model", name="s"):
        raise APIError("slow down")
    s = chainsight_capture.stage(name="s")
    assert (s.fault, s.error_type) == ("provider", "rate_limited")


def test_user_classifier_hook(chainsight_capture: Capture) -> None:
    class QuotaError(Exception):
        pass

    def rule(exc: BaseException, kind: str) -> tuple[str, str] | None:
        return ("provider", "quota") if isinstance(exc, QuotaError) else None

    chainsight.configure(classifiers=[rule])
    with pytest.raises(QuotaError), chainsight.stage("tool", name="s"):
        raise QuotaError
    with pytest.raises(KeyError), chainsight.stage("tool", name="t"):
        raise KeyError("k")
    assert chainsight_capture.stage(name="s").fault == "provider"
    assert chainsight_capture.stage(name="s").error_type == "quota"
    assert chainsight_capture.stage(name="t").fault == "app"


def test_failed_validation_is_model_fault_and_fails_request(chainsight_capture: Capture) -> None:
    with chainsight.request("r"), chainsight.stage("validation", validator="json_schema") as v:
        v.record_validation(passed=False, reason="missing field 'answer'")
    v_span = chainsight_capture.stage(kind="validation")
    assert (v_span.outcome, v_span.fault, v_span.error_type) == (
        "error", "model", "validation_failed",
    )  # fmt: skip
    assert v_span.attributes["chainsight.validation.reason"] == "missing field 'answer'"
    assert v_span.event("gen_ai.evaluation.result") is not None
    req = chainsight_capture.stage(kind="request")
    assert (req.outcome, req.fault) == ("error", "model")


def test_retry_after_failed_validation_recovers(chainsight_capture: Capture) -> None:
    with chainsight.request("r"):
        with chainsight.stage("validation", name="v1") as v:
            v.record_validation(passed=False)
        with chainsight.stage("validation", name="v2") as v:
            v.record_validation(passed=True)
    assert chainsight_capture.stage(kind="request").outcome == "ok"


def test_retrieval_failure_then_fallback_degrades_request(chainsight_capture: Capture) -> None:
    @chainsight.traced_stage("retrieval", system="qdrant")
    def retrieve() -> list[str]:
        try:
            raise ConnectionError("qdrant down")
        except ConnectionError:
            chainsight.current_stage().fallback(to="bm25", reason="vector store down")
            return ["bm25 doc"]

    with chainsight.request("r"):
        assert retrieve() == ["bm25 doc"]
    s = chainsight_capture.stage(kind="retrieval")
    assert (s.outcome, s.fault, s.error_type) == ("degraded", "vector_store", "connection")
    assert s.attributes["chainsight.fallback.to"] == "bm25"
    assert chainsight_capture.stage(kind="request").outcome == "degraded"
    assert (
        chainsight_capture.metric(
            "chainsight_fallbacks_total",
            {"stage": s.name, "kind": "retrieval", "to": "bm25", "reason": "vector store down"},
        )
        == 1.0
    )


def test_fallback_in_request_after_stage_error(chainsight_capture: Capture) -> None:
    @chainsight.traced_stage("retrieval", system="qdrant")
    def retrieve() -> None:
        raise ConnectionError("down")

    with chainsight.request("r") as req:
        try:
            retrieve()
        except ConnectionError:
            req.fallback(to="bm25")
    r = chainsight_capture.stage(kind="request")
    assert (r.outcome, r.fault) == ("degraded", "vector_store")
    assert chainsight_capture.stage(kind="retrieval").outcome == "error"


def test_asyncio_cancellation_is_cancelled(chainsight_capture: Capture) -> None:
    @chainsight.traced_stage("model", provider="p", model="m")
    async def slow() -> None:
        await asyncio.sleep(10)

    async def main() -> None:
        task = asyncio.ensure_future(slow())
        await asyncio.sleep(0.01)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(main())
    s = chainsight_capture.stage(kind="model")
    assert s.outcome == "cancelled"
    assert s.fault is None
    assert s.span.status.status_code.name == "UNSET"


def test_exception_message_is_redacted_on_span(chainsight_capture: Capture) -> None:
    with pytest.raises(ValueError, match="customer"), chainsight.stage("tool", name="s"):
        raise ValueError("customer jane.doe@example.com has key sk-abcdefghijklmnopqrstuvwx")
    event = chainsight_capture.stage(name="s").event("exception")
    assert event is not None
    message = str(event["exception.message"])
    assert "jane.doe@example.com" not in message
    assert "sk-abcdefghijklmnopqrstuvwx" not in message


# --- disabled mode and current_stage outside stages -----------------------------------------


def test_disabled_is_a_straight_call(chainsight_capture: Capture) -> None:
    chainsight.configure(enabled=False)
    calls = []

    @chainsight.traced_stage("tool")
    def f(x: int) -> int:
        calls.append(x)
        assert chainsight.current_stage().trace_id is None
        return x

    assert f(3) == 3
    with chainsight.request("r") as r, chainsight.stage("prompt") as s:
        s.record_usage(input_tokens=5)
        r.fallback(to="x")
    assert calls == [3]
    assert chainsight_capture.stages == []


def test_otel_sdk_disabled_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OTEL_SDK_DISABLED", "true")
    from chainsight.testing import capture

    cap = capture()
    with chainsight.stage("tool"):
        pass
    assert cap.stages == []
    monkeypatch.delenv("OTEL_SDK_DISABLED")
    monkeypatch.setenv("CHAINSIGHT_ENABLED", "false")
    cap = capture()
    with chainsight.stage("tool"):
        pass
    assert cap.stages == []
    monkeypatch.setenv("CHAINSIGHT_ENABLED", "true")
    cap = capture()
    with chainsight.stage("tool"):
        pass
    assert len(cap.stages) == 1


def test_verbs_outside_any_stage_are_noops() -> None:
    s = chainsight.current_stage()
    assert s.trace_id is None
    s.record_usage(input_tokens=1, output_tokens=2)
    s.record_response({"usage": {}})
    s.record_documents(count=1)
    s.record_validation(passed=False)
    s.fallback(to="x")
    s.set(a=1)


def test_exception_in_chainsight_never_reaches_app(
    chainsight_capture: Capture, monkeypatch: pytest.MonkeyPatch
) -> None:
    from chainsight.stages import lifecycle as _stage

    monkeypatch.setenv("CHAINSIGHT_RAISE_INTERNAL_ERRORS", "0")
    chainsight.configure(service="no-raise")

    def broken(*args: Any, **kwargs: Any) -> None:
        raise RuntimeError("chainsight bug")

    monkeypatch.setattr(_stage, "_record_metrics", broken)

    @chainsight.traced_stage("tool", name="ok")
    def work() -> int:
        return 7

    assert work() == 7
    assert work() == 7
    assert (
        chainsight_capture.metric("chainsight_internal_errors_total", {"where": "stage_metrics"})
        == 2.0
    )


def test_internal_error_logged_once(
    chainsight_capture: Capture, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    from chainsight.stages import lifecycle as _stage

    monkeypatch.setenv("CHAINSIGHT_RAISE_INTERNAL_ERRORS", "0")
    chainsight.configure(service="no-raise")
    monkeypatch.setattr(_stage, "_record_metrics", functools.partial(sys.exit, 3))
    monkeypatch.setattr(
        _stage, "_record_metrics", lambda *a: (_ for _ in ()).throw(RuntimeError("x"))
    )
    for _ in range(3):
        with chainsight.stage("tool"):
            pass
    errors = [r for r in caplog.records if r.name == "chainsight" and r.levelname == "ERROR"]
    assert len(errors) == 1


# --- regressions found in review ---------------------------------------------------------


def test_a_classifier_returning_a_bad_shape_still_ends_spans_and_metrics(
    chainsight_capture: Capture, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CHAINSIGHT_RAISE_INTERNAL_ERRORS", "0")
    chainsight.configure(classifiers=[lambda exc, kind: "provider"])  # type: ignore[list-item, return-value]
    with pytest.raises(KeyError), chainsight.request("r"), chainsight.stage("tool", name="t"):
        raise KeyError("k")
    assert [s.fault for s in chainsight_capture.stages] == ["app", "app"]
    assert chainsight_capture.metric("chainsight_in_flight_requests", {"request": "r"}) == 0.0
    # Classified once, where it started: the request reuses the origin.
    assert (
        chainsight_capture.metric(
            "chainsight_internal_errors_total", {"where": "invalid_argument:classifier"}
        )
        == 1.0
    )


def test_decorated_generators_stay_generator_functions(chainsight_capture: Capture) -> None:
    @chainsight.traced_stage("model", provider="p", model="m")
    def gen() -> Iterator[int]:
        yield 1
        return 5

    @chainsight.traced_stage("model", provider="p", model="m")
    async def agen() -> AsyncIterator[int]:
        yield 1

    assert inspect.isgeneratorfunction(gen)
    assert inspect.isasyncgenfunction(agen)
    assert inspect.isgenerator(gen())

    def outer() -> Iterator[int]:
        result = yield from gen()
        yield result

    assert list(outer()) == [1, 5]


def test_generator_finally_runs_inside_its_own_stage(chainsight_capture: Capture) -> None:
    seen: list[str] = []

    @chainsight.traced_stage("model", provider="openai", model="gpt-4o")
    def stream() -> Iterator[int]:
        try:
            yield 1
            yield 2
        finally:
            seen.append(chainsight.current_stage().kind)
            chainsight.current_stage().record_usage(input_tokens=100, output_tokens=1)

    with chainsight.request("r"):
        for item in stream():
            if item == 1:
                break
    assert seen == ["model"]
    model = chainsight_capture.stage(kind="model")
    assert model.outcome == "cancelled"
    assert model.attributes["gen_ai.usage.input_tokens"] == 100
    assert "gen_ai.usage.input_tokens" not in chainsight_capture.stage(kind="request").attributes


def test_one_stage_object_entered_by_several_tasks(chainsight_capture: Capture) -> None:
    shared = chainsight.stage("retrieval", name="shared")
    leaked: list[str] = []

    async def task() -> None:
        with shared:
            await asyncio.sleep(0.01)
        leaked.append(chainsight.current_stage().kind)

    async def main() -> None:
        await asyncio.gather(task(), task())

    asyncio.run(main())
    assert leaked == ["none", "none"]
    assert len(chainsight_capture.find(name="shared")) == 2


def test_fallback_ignores_the_exception_the_caller_was_handling(
    chainsight_capture: Capture,
) -> None:
    @chainsight.traced_stage("retrieval", system="qdrant", name="search")
    def search() -> list[str]:
        chainsight.current_stage().fallback(to="bm25", reason="index empty")
        return []

    try:
        raise KeyError("the caller's own, already handled")
    except KeyError:
        search()
    s = chainsight_capture.stage(name="search")
    assert (s.outcome, s.fault) == ("degraded", "vector_store")
    assert s.error_type is None


def test_traced_stage_above_staticmethod_and_classmethod(chainsight_capture: Capture) -> None:
    class Svc:
        @chainsight.traced_stage("tool", name="triple")
        @staticmethod
        def triple(x: int) -> int:
            return x * 3

        @chainsight.traced_stage("tool", name="make")
        @classmethod
        def make(cls) -> str:
            return cls.__name__

    assert Svc().triple(2) == 6
    assert Svc.triple(2) == 6
    assert Svc.make() == "Svc"
    assert len(chainsight_capture.find(name="triple")) == 2
    assert chainsight_capture.stage(name="make").outcome == "ok"


def test_origin_keeps_the_exception_picklable(chainsight_capture: Capture) -> None:
    import pickle

    with pytest.raises(ValueError, match="x") as info, chainsight.stage("tool"):
        raise ValueError("x")
    state = pickle.dumps(info.value)
    # Only builtins inside: it unpickles where chainsight is not installed.
    assert b"chainsight.stages.faults" not in state
    assert b"Origin" not in state
    assert str(pickle.loads(state)) == "x"  # noqa: S301 - our own bytes


@pytest.mark.parametrize("enabled", [True, False])
def test_async_generator_protocol_is_forwarded(chainsight_capture: Capture, enabled: bool) -> None:
    chainsight.configure(enabled=enabled)

    @chainsight.traced_stage("tool", name="echo")
    async def echo() -> AsyncIterator[int]:
        received = 0
        while True:
            try:
                received = yield received * 2
            except ValueError:
                yield -1

    async def main() -> list[int]:
        agen = echo()
        out = [await agen.asend(None), await agen.asend(21), await agen.athrow(ValueError())]
        await agen.aclose()
        return out

    assert asyncio.run(main()) == [0, 42, -1]
    if enabled:
        assert chainsight_capture.stage(name="echo").outcome == "cancelled"
    else:
        assert chainsight_capture.stages == []


# --- the no-op stage ----------------------------------------------------------------------


def _public_verbs(cls: type) -> dict[str, Any]:
    """Public methods and properties defined on ``cls`` itself (slots are state, not verbs)."""
    return {
        name: member
        for name, member in vars(cls).items()
        if not name.startswith("_") and (inspect.isfunction(member) or isinstance(member, property))
    }


def test_the_noop_stage_overrides_every_public_verb_of_stage() -> None:
    from chainsight.stages.noop import NoopStage

    verbs = _public_verbs(chainsight.Stage)
    assert {"set", "record_usage", "fallback", "trace_id", "kind"} <= set(verbs)
    overridden = _public_verbs(NoopStage)
    assert sorted(verbs) == sorted(overridden), "a Stage verb the no-op stage does not override"
    for name, member in verbs.items():
        if inspect.isfunction(member):
            assert inspect.signature(member) == inspect.signature(overridden[name]), name


def test_outside_any_stage_the_noop_is_a_stage_and_does_nothing() -> None:
    s = chainsight.current_stage()
    assert isinstance(s, chainsight.Stage)
    assert (s.trace_id, s.span_id, s.kind, s.name) == (None, None, "none", "none")
    assert repr(s) == "<chainsight.Stage (none)>"
    assert s.set(a=1) is None
    assert s.record_usage(input_tokens=1) is None
    assert s.record_response({"usage": {}}) is None
    assert s.record_content(query="q") is None
    assert s.record_documents(count=1) is None
    assert s.record_validation(passed=True) is None
    assert s.fallback(to="x") is None


def test_a_stage_yields_the_noop_stage_when_off(chainsight_capture: Capture) -> None:
    chainsight.configure(enabled=False)
    with chainsight.request("r") as r, chainsight.stage("tool") as s:
        assert isinstance(s, chainsight.Stage)
        assert s is r is chainsight.current_stage()
        assert s.trace_id is None
    assert chainsight_capture.stages == []


def test_configure_switches_decorated_functions_off_and_on_again(
    chainsight_capture: Capture,
) -> None:
    @chainsight.traced_stage("tool", name="plain")
    def plain() -> int:
        return 1

    @chainsight.traced_stage("tool", name="coro")
    async def coro() -> int:
        return 2

    @chainsight.traced_stage("tool", name="gen")
    def gen() -> Iterator[int]:
        yield 3

    @chainsight.traced_stage("tool", name="agen")
    async def agen() -> AsyncIterator[int]:
        yield 4

    async def drain() -> list[int]:
        return [item async for item in agen()]

    def run_all() -> list[int]:
        return [plain(), asyncio.run(coro()), *gen(), *asyncio.run(drain())]

    assert run_all() == [1, 2, 3, 4]
    assert len(chainsight_capture.stages) == 4
    chainsight.configure(enabled=False)
    assert run_all() == [1, 2, 3, 4]
    assert len(chainsight_capture.stages) == 4
    chainsight.configure(enabled=True)
    assert run_all() == [1, 2, 3, 4]
    assert len(chainsight_capture.stages) == 8


def test_a_stage_in_a_thread_joins_the_request_when_the_context_is_carried(
    chainsight_capture: Capture,
) -> None:
    # What docs/api.md ("Threads") tells users to do with a thread pool.
    import contextvars
    from concurrent.futures import ThreadPoolExecutor

    @chainsight.traced_stage("retrieval", name="search_kb")
    def search_kb(question: str) -> str:
        return question

    with ThreadPoolExecutor(2) as pool, chainsight.request("answer_ticket", tenant="acme"):
        pool.submit(contextvars.copy_context().run, search_kb, "q").result()
        pool.submit(search_kb, "q").result()  # without it: a root of its own
    request = chainsight_capture.stage(name="answer_ticket").span
    searches = [s.span for s in chainsight_capture.stages if s.name == "search_kb"]
    parents = sorted(s.parent.span_id if s.parent else 0 for s in searches)
    assert parents == [0, request.context.span_id]


def test_a_stage_with_a_list_keyword_is_built_once_per_call_site() -> None:
    # Lists are unhashable; the spec cache keys them as tuples so a loop does not rebuild the
    # spec (names, attributes, redaction) on every request.
    from chainsight.stages.spec import spec_for

    first = spec_for("tool", "tagged", {"tags": ["a", "b"]})
    again = spec_for("tool", "tagged", {"tags": ["a", "b"]})
    other = spec_for("tool", "tagged", {"tags": ["a", "c"]})
    assert again is first
    assert other is not first
    assert first.static_attrs["tags"] == ("a", "b")
