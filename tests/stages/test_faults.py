"""Fault-domain classification: the table with the client libraries' real exception classes, the
chain walk, stage facts, user rules, and that classification is total.

Every exception here is an instance of the installed library's own class, built the way the
library builds it (its constructor, its response objects); the real clients against real local
servers are in ``tests/integration/test_faults_real.py``.
"""

from __future__ import annotations

import contextlib
import importlib
import json
import os
import pickle
import sys
from collections.abc import Callable

import pytest
from hypothesis import given
from hypothesis import strategies as st

import chainsight
from chainsight import Classification, StageFacts, classify
from chainsight.stages.faults import CHAIN_LIMIT, exception_chain, is_cancellation
from chainsight.testing import Capture

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")  # litellm fetches prices otherwise

URL = "http://127.0.0.1:9/v1/chat/completions"


# --- builders: real instances of the libraries' classes -----------------------------------------
def openai_status(cls_name: str, status: int, body: object = None) -> BaseException:
    import httpx2
    import openai

    request = httpx2.Request("POST", URL)
    response = httpx2.Response(status, request=request)
    cls = getattr(openai, cls_name)
    return cls(f"Error code: {status}", response=response, body=body)  # type: ignore[no-any-return]


def openai_timeout() -> BaseException:
    import httpx2
    import openai

    return openai.APITimeoutError(request=httpx2.Request("POST", URL))


def anthropic_status(cls_name: str, status: int) -> BaseException:
    import anthropic
    import httpx2

    request = httpx2.Request("POST", URL)
    cls = getattr(anthropic, cls_name)
    return cls("x", response=httpx2.Response(status, request=request), body=None)  # type: ignore[no-any-return]


def botocore_client_error(code: str, status: int) -> BaseException:
    from botocore.exceptions import ClientError

    response = {
        "Error": {"Code": code, "Message": "x"},
        "ResponseMetadata": {"HTTPStatusCode": status},
    }
    return ClientError(response, "Converse")  # type: ignore[arg-type]


def grpc_error(code_name: str) -> BaseException:
    import grpc
    import grpc.aio

    return grpc.aio.AioRpcError(getattr(grpc.StatusCode, code_name), details="x")


def elasticsearch_error(cls_name: str, status: int) -> BaseException:
    import elastic_transport
    import elasticsearch

    meta = elastic_transport.ApiResponseMeta(
        status=status,
        http_version="1.1",
        headers=elastic_transport.HttpHeaders(),
        duration=0.0,
        node=elastic_transport.NodeConfig("http", "127.0.0.1", 9200),
    )
    return getattr(elasticsearch, cls_name)("x", meta=meta, body={})  # type: ignore[no-any-return]


def pydantic_error() -> BaseException:
    import pydantic

    class Answer(pydantic.BaseModel):
        answer: str

    try:
        Answer.model_validate({"wrong": 1})
    except pydantic.ValidationError as exc:
        return exc
    raise AssertionError("pydantic accepted an invalid answer")


def _httpx_status(status: int) -> BaseException:
    import httpx

    request = httpx.Request("GET", URL)
    response = httpx.Response(status, request=request)
    return httpx.HTTPStatusError("x", request=request, response=response)


def _requests_status(status: int) -> BaseException:
    import requests

    response = requests.Response()
    response.status_code = status
    return requests.HTTPError("x", response=response)


def _weaviate_status(status: int) -> BaseException:
    import requests
    import weaviate.exceptions

    response = requests.Response()
    response.status_code = status
    return weaviate.exceptions.UnexpectedStatusCodeException("x", response)


def _qdrant_unexpected(status: int) -> BaseException:
    import httpx
    from qdrant_client.http.exceptions import UnexpectedResponse

    return UnexpectedResponse(status, "x", b"{}", httpx.Headers())


def _qdrant_handling(inner: BaseException) -> BaseException:
    from qdrant_client.http.exceptions import ResponseHandlingException

    return ResponseHandlingException(inner)  # type: ignore[arg-type]


def _mistral(status: int) -> BaseException:
    import httpx2
    from mistralai.client.errors import SDKError

    response = httpx2.Response(status, request=httpx2.Request("POST", URL), text="{}")
    return SDKError("x", response)


def _genai(code: int, status: str) -> BaseException:
    from google.genai import errors

    cls = errors.ClientError if code < 500 else errors.ServerError
    return cls(code, {"error": {"code": code, "message": "x", "status": status}})


def _cohere(cls_name: str) -> BaseException:
    import cohere.errors

    return getattr(cohere.errors, cls_name)(body={"message": "x"})  # type: ignore[no-any-return]


def _litellm(cls_name: str) -> BaseException:
    import litellm

    return getattr(litellm.exceptions, cls_name)("x", model="gpt-4o", llm_provider="openai")  # type: ignore[no-any-return]


def _tenacity(inner: BaseException) -> BaseException:
    import tenacity

    future = tenacity.Future(attempt_number=3)
    future.set_exception(inner)
    return tenacity.RetryError(future)


def _urllib3_max_retry(reason: BaseException) -> BaseException:
    from urllib3.exceptions import MaxRetryError

    return MaxRetryError(None, "/collections", reason)  # type: ignore[arg-type]


def real(module: str, name: str, *args: object, **kwargs: object) -> Callable[[], BaseException]:
    """A builder of the installed library's own exception class, imported when the case runs."""

    def make() -> BaseException:
        cls = getattr(importlib.import_module(module), name)
        assert issubclass(cls, BaseException), f"{module}.{name}"
        return cls(*args, **kwargs)  # type: ignore[no-any-return]

    return make


def _httpx(name: str) -> Callable[[], BaseException]:
    return real("httpx", name, "x")


# (id, builder, stage kind, expected (fault, error_type))
CASES: list[tuple[str, Callable[[], BaseException], str, tuple[str, str]]] = [
    # builtins
    ("TimeoutError", TimeoutError, "model", ("provider", "timeout")),
    ("ConnectionRefusedError", ConnectionRefusedError, "retrieval", ("vector_store", "connection")),
    ("TimeoutError-in-tool", TimeoutError, "tool", ("app", "timeout")),
    ("KeyError", lambda: KeyError("k"), "prompt", ("app", "KeyError")),
    ("json-in-validation", lambda: json.JSONDecodeError("bad", "{", 0), "validation", ("model", "malformed_output")),
    ("json-in-prompt", lambda: json.JSONDecodeError("bad", "{", 0), "prompt", ("app", "json.decoder.JSONDecodeError")),
    ("pydantic-in-validation", pydantic_error, "validation", ("model", "validation_failed")),
    ("pydantic-in-prompt", pydantic_error, "prompt", ("app", "pydantic_core._pydantic_core.ValidationError")),
    # transports
    ("httpx.ReadTimeout", _httpx("ReadTimeout"), "retrieval", ("vector_store", "timeout")),
    ("httpx.ConnectError", _httpx("ConnectError"), "model", ("provider", "connection")),
    ("httpx.HTTPStatusError-503", lambda: _httpx_status(503), "embedding", ("provider", "server_error")),
    ("httpx.HTTPStatusError-400", lambda: _httpx_status(400), "embedding", ("app", "bad_request")),
    ("requests.ReadTimeout", real("requests", "ReadTimeout", "x"), "retrieval", ("vector_store", "timeout")),
    ("requests.ConnectTimeout", real("requests", "ConnectTimeout", "x"), "model", ("provider", "timeout")),
    ("requests.ConnectionError", real("requests", "ConnectionError", "x"), "model", ("provider", "connection")),
    ("requests.HTTPError-429", lambda: _requests_status(429), "model", ("provider", "rate_limited")),
    ("urllib3.MaxRetryError(ReadTimeout)", lambda: _urllib3_max_retry(real("urllib3.exceptions", "ReadTimeoutError", None, "/", "x")()), "retrieval", ("vector_store", "timeout")),
    ("urllib3.MaxRetryError(NewConnection)", lambda: _urllib3_max_retry(real("urllib3.exceptions", "NewConnectionError", None, "refused")()), "retrieval", ("vector_store", "connection")),
    ("aiohttp.ServerTimeoutError", real("aiohttp", "ServerTimeoutError", "x"), "model", ("provider", "timeout")),
    ("aiohttp.ClientResponseError-502", real("aiohttp", "ClientResponseError", None, (), status=502), "model", ("provider", "server_error")),
    ("grpc-UNAVAILABLE", lambda: grpc_error("UNAVAILABLE"), "retrieval", ("vector_store", "connection")),
    ("grpc-DEADLINE_EXCEEDED", lambda: grpc_error("DEADLINE_EXCEEDED"), "retrieval", ("vector_store", "timeout")),
    ("grpc-RESOURCE_EXHAUSTED", lambda: grpc_error("RESOURCE_EXHAUSTED"), "model", ("provider", "rate_limited")),
    ("grpc-INVALID_ARGUMENT", lambda: grpc_error("INVALID_ARGUMENT"), "retrieval", ("app", "bad_request")),
    ("grpc-UNAUTHENTICATED", lambda: grpc_error("UNAUTHENTICATED"), "retrieval", ("app", "auth")),
    ("grpc-PERMISSION_DENIED", lambda: grpc_error("PERMISSION_DENIED"), "retrieval", ("app", "auth")),
    ("grpc-INTERNAL", lambda: grpc_error("INTERNAL"), "retrieval", ("vector_store", "server_error")),
    ("grpc-UNKNOWN", lambda: grpc_error("UNKNOWN"), "retrieval", ("vector_store", "server_error")),
    # model providers (their remote failures are the provider's in any stage)
    ("openai.APITimeoutError", openai_timeout, "model", ("provider", "timeout")),
    ("openai.APITimeoutError-in-retrieval", openai_timeout, "retrieval", ("provider", "timeout")),
    ("openai.RateLimitError", lambda: openai_status("RateLimitError", 429), "model", ("provider", "rate_limited")),
    ("openai.InternalServerError", lambda: openai_status("InternalServerError", 500), "model", ("provider", "server_error")),
    ("openai.BadRequestError", lambda: openai_status("BadRequestError", 400), "model", ("app", "bad_request")),
    ("openai.BadRequestError-context", lambda: openai_status("BadRequestError", 400, {"code": "context_length_exceeded", "message": "x"}), "model", ("app", "context_length")),
    ("openai.AuthenticationError", lambda: openai_status("AuthenticationError", 401), "model", ("app", "auth")),
    ("openai.NotFoundError", lambda: openai_status("NotFoundError", 404), "model", ("app", "not_found")),
    ("openai.APIStatusError-503", lambda: openai_status("APIStatusError", 503), "model", ("provider", "server_error")),
    ("openai.ContentFilterFinishReasonError", real("openai", "ContentFilterFinishReasonError"), "model", ("model", "content_filter")),
    ("anthropic.OverloadedError", lambda: anthropic_status("OverloadedError", 529), "model", ("provider", "server_error")),
    ("anthropic.RateLimitError", lambda: anthropic_status("RateLimitError", 429), "model", ("provider", "rate_limited")),
    ("anthropic.GatewayTimeoutError", lambda: anthropic_status("GatewayTimeoutError", 504), "model", ("provider", "timeout")),
    ("anthropic.BadRequestError", lambda: anthropic_status("BadRequestError", 400), "model", ("app", "bad_request")),
    ("google.genai.ClientError-429", lambda: _genai(429, "RESOURCE_EXHAUSTED"), "model", ("provider", "rate_limited")),
    ("google.genai.ServerError-503", lambda: _genai(503, "UNAVAILABLE"), "model", ("provider", "server_error")),
    ("google.genai.ClientError-400", lambda: _genai(400, "INVALID_ARGUMENT"), "model", ("app", "bad_request")),
    ("cohere.TooManyRequestsError", lambda: _cohere("TooManyRequestsError"), "rerank", ("provider", "rate_limited")),
    ("cohere.ServiceUnavailableError", lambda: _cohere("ServiceUnavailableError"), "rerank", ("provider", "server_error")),
    ("cohere.UnauthorizedError", lambda: _cohere("UnauthorizedError"), "rerank", ("app", "auth")),
    ("mistralai.SDKError-429", lambda: _mistral(429), "model", ("provider", "rate_limited")),
    ("mistralai.SDKError-422", lambda: _mistral(422), "model", ("app", "bad_request")),
    ("litellm.ContextWindowExceededError", lambda: _litellm("ContextWindowExceededError"), "model", ("app", "context_length")),
    ("litellm.Timeout", lambda: _litellm("Timeout"), "model", ("provider", "timeout")),
    ("litellm.ContentPolicyViolationError", lambda: _litellm("ContentPolicyViolationError"), "model", ("model", "content_filter")),
    ("litellm.RateLimitError", lambda: _litellm("RateLimitError"), "model", ("provider", "rate_limited")),
    ("bedrock-ThrottlingException", lambda: botocore_client_error("ThrottlingException", 429), "model", ("provider", "rate_limited")),
    ("bedrock-ModelTimeoutException", lambda: botocore_client_error("ModelTimeoutException", 408), "model", ("provider", "timeout")),
    ("bedrock-ServiceUnavailableException", lambda: botocore_client_error("ServiceUnavailableException", 503), "model", ("provider", "server_error")),
    ("bedrock-ValidationException", lambda: botocore_client_error("ValidationException", 400), "model", ("app", "bad_request")),
    ("bedrock-AccessDeniedException", lambda: botocore_client_error("AccessDeniedException", 403), "model", ("app", "auth")),
    ("bedrock-unknown-code-by-status", lambda: botocore_client_error("SomethingNew", 502), "model", ("provider", "server_error")),
    ("bedrock-kb-in-retrieval", lambda: botocore_client_error("ThrottlingException", 429), "retrieval", ("vector_store", "rate_limited")),
    ("botocore.EndpointConnectionError", real("botocore.exceptions", "EndpointConnectionError", endpoint_url=URL), "model", ("provider", "connection")),
    ("botocore.ReadTimeoutError", real("botocore.exceptions", "ReadTimeoutError", endpoint_url=URL), "model", ("provider", "timeout")),
    # vector stores and databases
    ("qdrant.UnexpectedResponse-503", lambda: _qdrant_unexpected(503), "retrieval", ("vector_store", "server_error")),
    ("qdrant.UnexpectedResponse-404", lambda: _qdrant_unexpected(404), "retrieval", ("app", "not_found")),
    ("qdrant.ResponseHandlingException(ConnectError)", lambda: _qdrant_handling(_httpx("ConnectError")()), "retrieval", ("vector_store", "connection")),
    ("qdrant.ResponseHandlingException(ReadTimeout)", lambda: _qdrant_handling(_httpx("ReadTimeout")()), "retrieval", ("vector_store", "timeout")),
    ("qdrant-in-a-model-stage", lambda: _qdrant_handling(_httpx("ConnectError")()), "model", ("vector_store", "connection")),
    ("chromadb.NotFoundError", real("chromadb.errors", "NotFoundError", "x"), "retrieval", ("app", "not_found")),
    ("chromadb.InternalError", real("chromadb.errors", "InternalError", "x"), "retrieval", ("vector_store", "server_error")),
    ("pinecone.ServiceError", real("pinecone.errors.exceptions", "ServiceError"), "retrieval", ("vector_store", "server_error")),
    ("pinecone.RateLimitError", real("pinecone.errors.exceptions", "RateLimitError", "x", 429), "retrieval", ("vector_store", "rate_limited")),
    ("weaviate.UnexpectedStatusCode-500", lambda: _weaviate_status(500), "retrieval", ("vector_store", "server_error")),
    ("weaviate.UnexpectedStatusCode-422", lambda: _weaviate_status(422), "retrieval", ("app", "bad_request")),
    ("pymilvus.MilvusUnavailableException", real("pymilvus.exceptions", "MilvusUnavailableException", message="x"), "retrieval", ("vector_store", "connection")),
    ("pymilvus.CollectionNotExistException", real("pymilvus.exceptions", "CollectionNotExistException", message="x"), "retrieval", ("app", "not_found")),
    ("psycopg.OperationalError", real("psycopg", "OperationalError", "x"), "retrieval", ("vector_store", "connection")),
    ("psycopg.QueryCanceled", real("psycopg.errors", "QueryCanceled", "canceling statement due to statement timeout"), "retrieval", ("vector_store", "timeout")),
    ("psycopg.InvalidPassword", real("psycopg.errors", "InvalidPassword", "x"), "retrieval", ("app", "auth")),
    ("psycopg.UndefinedTable", real("psycopg.errors", "UndefinedTable", "x"), "retrieval", ("app", "bad_request")),
    ("asyncpg.QueryCanceledError", real("asyncpg.exceptions", "QueryCanceledError", "x"), "retrieval", ("vector_store", "timeout")),
    ("asyncpg.ConnectionDoesNotExistError", real("asyncpg.exceptions", "ConnectionDoesNotExistError", "x"), "retrieval", ("vector_store", "connection")),
    ("asyncpg.InvalidPasswordError", real("asyncpg.exceptions", "InvalidPasswordError", "x"), "retrieval", ("app", "auth")),
    ("redis.TimeoutError", real("redis.exceptions", "TimeoutError", "x"), "retrieval", ("vector_store", "timeout")),
    ("redis.ConnectionError", real("redis.exceptions", "ConnectionError", "x"), "retrieval", ("vector_store", "connection")),
    ("redis.AuthenticationError", real("redis.exceptions", "AuthenticationError", "x"), "retrieval", ("app", "auth")),
    ("redis.ConnectionError-in-cache", real("redis.exceptions", "ConnectionError", "x"), "cache", ("app", "connection")),
    ("elastic_transport.ConnectionTimeout", real("elastic_transport", "ConnectionTimeout", "x"), "retrieval", ("vector_store", "timeout")),
    ("elastic_transport.ConnectionError", real("elastic_transport", "ConnectionError", "x"), "retrieval", ("vector_store", "connection")),
    ("elasticsearch.ApiError-503", lambda: elasticsearch_error("ApiError", 503), "retrieval", ("vector_store", "server_error")),
    ("elasticsearch.NotFoundError", lambda: elasticsearch_error("NotFoundError", 404), "retrieval", ("app", "not_found")),
    ("opensearch.ConnectionTimeout", real("opensearchpy.exceptions", "ConnectionTimeout", "TIMEOUT", "x", TimeoutError()), "retrieval", ("vector_store", "timeout")),
    ("opensearch.TransportError-429", real("opensearchpy.exceptions", "TransportError", 429, "x", {}), "retrieval", ("vector_store", "rate_limited")),
    ("opensearch.NotFoundError", real("opensearchpy.exceptions", "NotFoundError", 404, "x", {}), "retrieval", ("app", "not_found")),
    # wrappers that keep the error out of the chain
    ("tenacity.RetryError(httpx.ReadTimeout)", lambda: _tenacity(_httpx("ReadTimeout")()), "model", ("provider", "timeout")),
    ("tenacity.RetryError(openai 429)", lambda: _tenacity(openai_status("RateLimitError", 429)), "retrieval", ("provider", "rate_limited")),
]  # fmt: skip


@pytest.mark.parametrize(
    ("make", "kind", "expected"), [c[1:] for c in CASES], ids=[c[0] for c in CASES]
)
def test_table(make: Callable[[], BaseException], kind: str, expected: tuple[str, str]) -> None:
    assert tuple(classify(make(), kind)) == expected


# --- the chain --------------------------------------------------------------------------------
def _raise_wrapped(inner: BaseException, *, explicit: bool) -> BaseException:
    try:
        try:
            raise inner
        except BaseException as caught:
            if explicit:
                raise RuntimeError("generation failed") from caught
            raise RuntimeError("generation failed")  # noqa: B904 -- the implicit __context__
    except RuntimeError as outer:
        return outer


def test_a_wrapped_provider_timeout_is_the_providers() -> None:
    import httpx

    for explicit in (True, False):
        exc = _raise_wrapped(httpx.ReadTimeout("read timed out"), explicit=explicit)
        assert classify(exc, "model") == ("provider", "timeout")
        assert classify(exc, "retrieval") == ("vector_store", "timeout")


def test_from_none_hides_the_context() -> None:
    import httpx

    def handle() -> None:
        try:
            raise httpx.ReadTimeout("read timed out")
        except httpx.ReadTimeout:
            raise RuntimeError("my own bug") from None

    with pytest.raises(RuntimeError) as raised:
        handle()
    assert raised.value.__context__ is not None  # still there, but the app said it is not why
    assert classify(raised.value, "model") == ("app", "RuntimeError")


def test_the_outermost_recognised_link_wins() -> None:
    import httpx

    # An openai error raised while handling a qdrant one: the outer one is what failed.
    inner = _qdrant_handling(httpx.ConnectError("refused"))
    outer = openai_status("RateLimitError", 429)
    outer.__context__ = inner
    assert classify(outer, "retrieval") == ("provider", "rate_limited")


def test_an_unrecognised_chain_names_the_outermost_type() -> None:
    exc = _raise_wrapped(KeyError("k"), explicit=True)
    assert classify(exc, "model") == ("app", "RuntimeError")


def test_a_name_with_timeout_is_not_a_timeout() -> None:
    class LLMTimeoutError(RuntimeError):
        pass

    assert classify(LLMTimeoutError("x"), "model") == (
        "app",
        "tests.stages.test_faults.test_a_name_with_timeout_is_not_a_timeout.<locals>.LLMTimeoutError",
    )

    class GatewayTimeout(TimeoutError):  # a real TimeoutError subclass is a timeout
        pass

    assert classify(GatewayTimeout("x"), "model") == ("provider", "timeout")


def test_cycles_end_the_walk() -> None:
    a, b = RuntimeError("a"), ValueError("b")
    a.__cause__, b.__cause__ = b, a
    assert exception_chain(a) == [a, b]
    assert classify(a, "model") == ("app", "RuntimeError")
    a.__cause__ = a
    assert exception_chain(a) == [a]


def test_depth_is_bounded() -> None:
    import httpx

    def chain(length: int) -> BaseException:
        exc: BaseException = httpx.ConnectError("refused")
        for i in range(length - 1):
            outer = RuntimeError(f"layer {i}")
            outer.__cause__ = exc
            exc = outer
        return exc

    assert len(exception_chain(chain(100))) == CHAIN_LIMIT
    assert classify(chain(CHAIN_LIMIT), "model") == ("provider", "connection")
    assert classify(chain(CHAIN_LIMIT + 1), "model") == ("app", "RuntimeError")


@pytest.mark.skipif(sys.version_info < (3, 11), reason="asyncio.TaskGroup is Python 3.11+")
def test_a_task_group_names_its_first_recognised_member() -> None:
    import asyncio

    import httpx

    async def fetch(fail: BaseException | None) -> None:
        await asyncio.sleep(0)
        if fail is not None:
            raise fail

    async def gather() -> None:
        async with asyncio.TaskGroup() as group:  # type: ignore[attr-defined]
            group.create_task(fetch(KeyError("k")))
            group.create_task(fetch(httpx.ReadTimeout("read timed out")))

    with pytest.raises(BaseException) as raised:  # noqa: PT011 -- an ExceptionGroup
        asyncio.run(gather())
    assert type(raised.value).__name__ == "ExceptionGroup"
    assert classify(raised.value, "retrieval") == ("vector_store", "timeout")


def test_cause_is_followed_before_context() -> None:
    import httpx

    outer = RuntimeError("x")
    outer.__context__ = KeyError("handled")
    outer.__cause__ = httpx.ConnectError("refused")
    assert classify(outer, "model") == ("provider", "connection")


# --- stage facts and domains ------------------------------------------------------------------
def test_stage_facts_are_the_kind_as_a_string() -> None:
    facts = StageFacts("rerank", name="rerank", system="tei", component="app")
    assert facts == "rerank"
    assert facts in ("rerank", "model")
    assert (facts.kind, facts.system, facts.provider, facts.component, facts.remote) == (
        "rerank",
        "tei",
        None,
        "app",
        "app",
    )
    with pytest.raises(AttributeError):
        facts.system = "x"  # type: ignore[misc]
    copied = pickle.loads(pickle.dumps(facts))  # noqa: S301 -- our own bytes
    assert (copied, copied.system, copied.component) == ("rerank", "tei", "app")
    assert "system='tei'" in repr(facts)
    with pytest.raises(chainsight.ConfigurationError, match="unknown stage kind 'rerunk'"):
        StageFacts("rerunk")
    with pytest.raises(chainsight.ConfigurationError, match="component='cloud'"):
        StageFacts("model", component="cloud")


def test_component_wins_over_the_library_and_the_kind() -> None:
    exc = openai_timeout()
    assert classify(exc, StageFacts("retrieval")) == ("provider", "timeout")
    assert classify(exc, StageFacts("retrieval", component="vector_store")) == (
        "vector_store",
        "timeout",
    )
    # A 4xx is the app's whatever the component.
    exc = openai_status("BadRequestError", 400)
    assert classify(exc, StageFacts("model", component="vector_store")) == ("app", "bad_request")


def test_system_does_not_move_a_reranks_domain(chainsight_capture: Capture) -> None:
    import httpx

    def failing() -> None:
        raise httpx.ConnectError("connection refused")

    for name, keywords in (
        ("plain", {}),
        ("tei", {"system": "tei"}),
        ("cohere", {"provider": "cohere"}),
        ("in-app", {"system": "tei", "component": "app"}),
    ):
        with (
            contextlib.suppress(httpx.ConnectError),
            chainsight.stage("rerank", name=name, **keywords),
        ):
            failing()
    faults = {s.name: s.fault for s in chainsight_capture.stages}
    assert faults == {"plain": "provider", "tei": "provider", "cohere": "provider", "in-app": "app"}
    # A local cross-encoder's own bug is not a remote failure: it stays the app's.
    with contextlib.suppress(IndexError), chainsight.stage("rerank", name="local", system="tei"):
        raise IndexError("scores")
    assert chainsight_capture.stage(name="local").fault == "app"


# --- user rules -------------------------------------------------------------------------------
class GatewayError(Exception):
    """An in-house wrapper that keeps the provider's error in an attribute, not in the chain."""

    def __init__(self, upstream: BaseException) -> None:
        super().__init__("gateway failed")
        self.upstream = upstream


def test_a_rule_falls_back_to_the_built_in_classifier(chainsight_capture: Capture) -> None:
    seen: list[StageFacts] = []

    def rule(exc: BaseException, stage: StageFacts) -> Classification | None:
        seen.append(stage)
        if isinstance(exc, GatewayError):
            return chainsight.classify(exc.upstream, stage)
        return None

    chainsight.configure(classifiers=[rule])
    with (
        contextlib.suppress(GatewayError),
        chainsight.stage("model", name="generate", provider="openai", model="gpt-4o"),
    ):
        raise GatewayError(openai_status("RateLimitError", 429))
    stage = chainsight_capture.stage(name="generate")
    assert (stage.fault, stage.error_type) == ("provider", "rate_limited")
    assert seen[0] == "model"
    assert (seen[0].name, seen[0].provider, seen[0].system) == ("generate", "openai", "openai")


def test_rules_see_each_link_of_the_chain(chainsight_capture: Capture) -> None:
    def rule(exc: BaseException, stage: StageFacts) -> tuple[str, str] | None:
        return ("provider", "gateway") if isinstance(exc, GatewayError) else None

    chainsight.configure(classifiers=[rule])
    with contextlib.suppress(RuntimeError), chainsight.stage("model", name="m"):
        try:
            raise GatewayError(ValueError("x"))
        except GatewayError as exc:
            raise RuntimeError("wrapped") from exc
    assert chainsight_capture.stage(name="m").error_type == "gateway"


def test_an_old_style_rule_still_works(chainsight_capture: Capture) -> None:
    def old_rule(exc: BaseException, stage_kind: str) -> tuple[str, str] | None:
        if stage_kind == "retrieval" and isinstance(exc, LookupError):
            return ("vector_store", "index_missing")
        return None

    chainsight.configure(classifiers=[old_rule])
    with contextlib.suppress(LookupError), chainsight.stage("retrieval", name="r"):
        raise LookupError("no index")
    stage = chainsight_capture.stage(name="r")
    assert (stage.fault, stage.error_type) == ("vector_store", "index_missing")


@pytest.mark.parametrize(
    "rule",
    [lambda exc: None, lambda exc, kind, extra: None, lambda: None],
    ids=["one", "three", "none"],
)
def test_a_rule_with_the_wrong_arity_is_refused_at_configure(
    chainsight_capture: Capture, rule: Callable[..., object]
) -> None:
    with pytest.raises(chainsight.ConfigurationError, match=r"rule\(exception, stage\)"):
        chainsight.configure(classifiers=[rule])


def test_a_rule_with_defaults_or_varargs_is_accepted(chainsight_capture: Capture) -> None:
    def rule(*args: object, **kwargs: object) -> None:
        return None

    chainsight.configure(classifiers=[rule, lambda exc, stage, extra=None: None])


def test_an_exception_whose_attributes_raise_is_classified_by_the_rest_of_its_chain() -> None:
    import httpx

    class Hostile(Exception):
        @property
        def status_code(self) -> int:
            raise RuntimeError("boom")

        @property
        def response(self) -> object:
            raise RuntimeError("boom")

    hostile = Hostile("x")
    hostile.__cause__ = httpx.ConnectError("refused")
    assert classify(hostile, "model") == ("provider", "connection")
    odd = type("Odd", (Exception,), {"__module__": 5})
    assert classify(odd("x"), "model").fault == "app"


# --- the rest ---------------------------------------------------------------------------------
def test_origin_is_kept_by_the_stages_not_on_the_exception(chainsight_capture: Capture) -> None:
    exc = TimeoutError("slow")  # a built-in: takes no weak reference and no new attribute
    mine = ValueError("mine")

    def answer() -> None:
        with chainsight.request("answer"), chainsight.stage("retrieval", name="outer"):
            try:
                with chainsight.stage("retrieval", name="inner", system="qdrant"):
                    raise exc
            except TimeoutError as caught:
                # A sibling fails and is handled in between: the first error keeps its origin.
                with contextlib.suppress(ValueError), chainsight.stage("tool", name="side"):
                    raise mine from None
                raise caught from None

    with pytest.raises(TimeoutError) as raised:
        answer()
    assert raised.value is exc
    assert vars(mine) == {}
    by_name = {s.name: s for s in chainsight_capture.stages}
    for name in ("outer", "answer"):
        assert by_name[name].attributes["chainsight.error.origin"] == "inner"
        assert by_name[name].attributes["chainsight.fault"] == "vector_store"
    assert by_name["side"].attributes["chainsight.error.origin"] == "side"


def test_cancellation() -> None:
    import asyncio

    assert is_cancellation(asyncio.CancelledError())
    assert is_cancellation(GeneratorExit())
    assert not is_cancellation(ValueError())


@given(
    name=st.text(min_size=1, max_size=30).filter(str.isidentifier),
    module=st.sampled_from(["openai", "httpx", "grpc", "botocore", "google.genai.errors", "x"]),
    status=st.one_of(st.none(), st.integers(), st.text(max_size=3)),
    kind=st.sampled_from(["model", "retrieval", "prompt", "validation", "tool", "rerank"]),
)
def test_classify_is_total(name: str, module: str, status: object, kind: str) -> None:
    # Classes pretending to be any library's, with any status: always a domain and a type.
    cls = type(name, (Exception,), {"__module__": module})
    exc = cls("x")
    exc.status_code = status  # type: ignore[attr-defined]
    exc.code = status  # type: ignore[attr-defined]
    exc.response = {"Error": {"Code": status}}  # type: ignore[attr-defined]
    fault, error_type = classify(exc, kind)
    assert fault in ("app", "model", "vector_store", "provider")
    assert error_type
