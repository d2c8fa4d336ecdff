"""The real client libraries, failing the real way, classified in real stages.

Each case drives the installed client (openai, anthropic, cohere, google-genai, mistralai,
litellm, botocore, qdrant-client REST and gRPC, chromadb, redis, psycopg, asyncpg,
elasticsearch, opensearch-py, httpx, requests, aiohttp) against 127.0.0.1: a closed port, a
small HTTP server answering with the status and body the provider's API sends (429, 500, 529,
400 ...), or a server that accepts and never answers (the client's own timeout fires). The
exception the library raises on its own is classified inside a chainsight stage, and the span
must carry the fault domain an on-call engineer would want.

Nothing is timed for pass/fail: client timeouts are short (0.5 s) so a stalled call ends, and
the stalling server is released at teardown.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

import pytest

import chainsight
from chainsight.testing import Capture
from tests.integration._api_server import APIServer
from tests.integration._servers import free_port

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")  # litellm fetches prices otherwise

pytestmark = [
    pytest.mark.integration,
    # The clients warn about insecure (http://) API keys, deprecated options and the like;
    # this module judges the exceptions they raise, not their warnings.
    pytest.mark.filterwarnings("ignore::Warning"),
]

TIMEOUT = 0.5  # each client's own timeout against the stalling server, in seconds

T = TypeVar("T")
_OPEN: list[Any] = []


def opened(client: T) -> T:
    """Close ``client`` when the test ends (its pooled sockets would leak otherwise)."""
    _OPEN.append(client)
    return client


@pytest.fixture(autouse=True)
def _close_clients() -> Iterator[None]:
    try:
        yield
    finally:
        while _OPEN:
            with contextlib.suppress(Exception):
                _OPEN.pop().close()


@pytest.fixture
def api() -> Iterator[APIServer]:
    server = APIServer()
    server.thread.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def closed() -> str:
    """A port on 127.0.0.1 nothing listens on: connections are refused."""
    return str(free_port())


@pytest.fixture
def silent_tcp() -> Iterator[int]:
    """A TCP port that accepts connections (the kernel does) and never says a word."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    sock.listen(16)
    try:
        yield sock.getsockname()[1]
    finally:
        sock.close()


def failed(
    capture: Capture, kind: str, call: Callable[[], object], **keywords: Any
) -> tuple[str | None, str | None]:
    """Run ``call`` in a stage of ``kind``; the (fault, error type) its span recorded."""
    name = f"case{len(capture.stages)}"
    with contextlib.suppress(Exception), chainsight.stage(kind, name=name, **keywords):
        call()
    stage = capture.stage(name=name)
    assert stage.outcome == "error", f"{call} did not fail"
    return stage.fault, stage.error_type


# --- vector stores ----------------------------------------------------------------------------
def test_qdrant_rest_down_is_the_vector_stores(chainsight_capture: Capture, closed: str) -> None:
    from qdrant_client import QdrantClient

    client = opened(QdrantClient(url=f"http://127.0.0.1:{closed}", timeout=2))
    found = failed(chainsight_capture, "retrieval", client.get_collections, system="qdrant")
    assert found == ("vector_store", "connection")


def test_qdrant_rest_stalled_and_503(chainsight_capture: Capture, api: APIServer) -> None:
    from qdrant_client import QdrantClient

    client = opened(QdrantClient(url=api.url, timeout=TIMEOUT))
    api.stall()
    assert failed(chainsight_capture, "retrieval", client.get_collections) == (
        "vector_store",
        "timeout",
    )
    api.set(503, {"status": {"error": "service unavailable"}})
    client = opened(QdrantClient(url=api.url, timeout=2))
    assert failed(chainsight_capture, "retrieval", client.get_collections) == (
        "vector_store",
        "server_error",
    )


def test_qdrant_grpc_down_and_silent(
    chainsight_capture: Capture, closed: str, silent_tcp: int
) -> None:
    from qdrant_client import QdrantClient

    client = opened(
        QdrantClient(
            host="127.0.0.1", port=free_port(), grpc_port=int(closed), prefer_grpc=True, timeout=2
        )
    )
    assert failed(chainsight_capture, "retrieval", client.get_collections) == (
        "vector_store",
        "connection",
    )
    client = opened(
        QdrantClient(
            host="127.0.0.1", port=free_port(), grpc_port=silent_tcp, prefer_grpc=True, timeout=1
        )
    )
    assert failed(chainsight_capture, "retrieval", client.get_collections) == (
        "vector_store",
        "timeout",
    )


def test_chroma_redis_postgres_search_engines_down(
    chainsight_capture: Capture, closed: str
) -> None:
    import asyncpg
    import chromadb
    import elasticsearch
    import opensearchpy
    import psycopg
    import redis
    from redis.backoff import NoBackoff
    from redis.retry import Retry

    port = int(closed)
    url = f"http://127.0.0.1:{port}"
    calls: dict[str, Callable[[], object]] = {
        "chromadb": lambda: chromadb.HttpClient(host="127.0.0.1", port=port).heartbeat(),
        "redis": opened(redis.Redis(port=port, retry=Retry(NoBackoff(), 0))).ping,
        "psycopg": lambda: psycopg.connect(f"host=127.0.0.1 port={port} user=x connect_timeout=2"),
        "asyncpg": lambda: asyncio.run(asyncpg.connect(host="127.0.0.1", port=port, user="x")),
        "elasticsearch": opened(elasticsearch.Elasticsearch(url, max_retries=0)).info,
        "opensearch": opened(opensearchpy.OpenSearch([url], max_retries=0)).info,
    }
    for system, call in calls.items():
        assert failed(chainsight_capture, "retrieval", call, system=system) == (
            "vector_store",
            "connection",
        ), system
    # The same Redis down under a cache stage is the app's own infrastructure, not a vector store.
    cache = opened(redis.Redis(port=port, retry=Retry(NoBackoff(), 0))).ping
    assert failed(chainsight_capture, "cache", cache) == ("app", "connection")


# --- model providers --------------------------------------------------------------------------
def _openai(url: str, timeout: float = 5.0) -> Any:
    import openai

    return opened(
        openai.OpenAI(api_key="sk-test", base_url=f"{url}/v1", max_retries=0, timeout=timeout)
    )


def _chat(client: Any) -> Callable[[], object]:
    return lambda: client.chat.completions.create(
        model="gpt-4o", messages=[{"role": "user", "content": "hi"}]
    )


def test_openai(chainsight_capture: Capture, api: APIServer, closed: str) -> None:
    capture = chainsight_capture
    assert failed(capture, "model", _chat(_openai(f"http://127.0.0.1:{closed}"))) == (
        "provider",
        "connection",
    )
    client = _openai(api.url)
    cases = [
        (429, {"message": "Rate limit reached", "type": "requests", "code": "rate_limit_exceeded"},
         ("provider", "rate_limited")),
        (500, {"message": "The server had an error", "type": "server_error"},
         ("provider", "server_error")),
        (400, {"message": "maximum context length is 8192 tokens", "type": "invalid_request_error",
               "code": "context_length_exceeded"}, ("app", "context_length")),
        (400, {"message": "bad temperature", "type": "invalid_request_error", "code": None},
         ("app", "bad_request")),
        (401, {"message": "Incorrect API key", "type": "invalid_request_error"}, ("app", "auth")),
    ]  # fmt: skip
    for status, error, expected in cases:
        api.set(status, {"error": error})
        assert failed(capture, "model", _chat(client)) == expected, status
    api.stall()
    assert failed(capture, "model", _chat(_openai(api.url, timeout=TIMEOUT))) == (
        "provider",
        "timeout",
    )


def test_openai_embeddings_in_a_retrieval_stage_are_the_providers(
    chainsight_capture: Capture, api: APIServer
) -> None:
    client = _openai(api.url)
    api.set(503, {"error": {"message": "overloaded", "type": "server_error"}})

    def retrieve() -> None:
        client.embeddings.create(model="text-embedding-3-small", input="q")

    assert failed(chainsight_capture, "retrieval", retrieve, system="qdrant") == (
        "provider",
        "server_error",
    )


def test_a_wrapped_provider_timeout_is_the_providers(
    chainsight_capture: Capture, api: APIServer
) -> None:
    import httpx

    api.stall()

    class LLMTimeoutError(RuntimeError):
        """The application's own error: a name with "Timeout" in it means nothing by itself."""

    def generate() -> None:
        try:
            httpx.post(f"{api.url}/generate", json={"q": "hi"}, timeout=TIMEOUT)
        except httpx.ReadTimeout as exc:
            raise LLMTimeoutError("the model did not answer") from exc

    def my_bug() -> None:
        raise LLMTimeoutError("raised by the app itself")

    assert failed(chainsight_capture, "model", generate, provider="vllm") == (
        "provider",
        "timeout",
    )
    fault, error_type = failed(chainsight_capture, "model", my_bug)
    assert fault == "app"
    assert error_type is not None
    assert error_type.endswith("LLMTimeoutError")


def test_anthropic_overloaded(chainsight_capture: Capture, api: APIServer) -> None:
    import anthropic

    api.set(529, {"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}})
    with anthropic.Anthropic(api_key="x", base_url=api.url, max_retries=0) as claude:
        found = failed(
            chainsight_capture,
            "model",
            lambda: claude.messages.create(model="m", max_tokens=8, messages=[]),
        )
    assert found == ("provider", "server_error")


def test_cohere_rerank_rate_limited(chainsight_capture: Capture, api: APIServer) -> None:
    import cohere
    import httpx

    api.set(429, {"message": "trial key rate limit"})
    with httpx.Client() as http:
        co = cohere.ClientV2(api_key="x", base_url=api.url, httpx_client=http)

        def rerank() -> None:
            co.rerank(model="rerank-v3.5", query="q", documents=["a"],
                      request_options={"max_retries": 0})  # fmt: skip

        found = failed(chainsight_capture, "rerank", rerank, provider="cohere")
    assert found == ("provider", "rate_limited")


def test_gemini_resource_exhausted(chainsight_capture: Capture, api: APIServer) -> None:
    from google import genai

    api.set(429, {"error": {"code": 429, "message": "quota", "status": "RESOURCE_EXHAUSTED"}})
    gemini = genai.Client(api_key="x", http_options={"base_url": api.url})
    try:
        found = failed(
            chainsight_capture,
            "model",
            lambda: gemini.models.generate_content(model="gemini-2.0", contents="hi"),
        )
    finally:
        gemini.close()
    assert found == ("provider", "rate_limited")


def test_mistral_rate_limited(chainsight_capture: Capture, api: APIServer) -> None:
    from mistralai.client import Mistral

    api.set(429, {"message": "Requests rate limit exceeded"})
    with Mistral(api_key="x", server_url=api.url) as mistral:
        found = failed(
            chainsight_capture,
            "model",
            lambda: mistral.chat.complete(model="m", messages=[{"role": "user", "content": "x"}]),
        )
    assert found == ("provider", "rate_limited")


def test_litellm_context_window(chainsight_capture: Capture, api: APIServer) -> None:
    import litellm

    api.set(400, {"error": {"message": "maximum context length exceeded", "type": "invalid_request_error",
                            "code": "context_length_exceeded"}})  # fmt: skip

    # Our own OpenAI client, closed at the end, rather than one litellm caches for the process.
    client = _openai(api.url)

    def completion() -> None:
        litellm.completion(model="openai/gpt-4o", api_base=f"{api.url}/v1", api_key="x",
                           messages=[{"role": "user", "content": "x"}], num_retries=0,
                           client=client)  # fmt: skip

    assert failed(chainsight_capture, "model", completion) == ("app", "context_length")


def test_bedrock_through_botocore(chainsight_capture: Capture, api: APIServer) -> None:
    import boto3
    from botocore.config import Config

    client = opened(
        boto3.client(
            "bedrock-runtime",
            endpoint_url=api.url,
            region_name="us-east-1",
            aws_access_key_id="AKIDEXAMPLE",
            aws_secret_access_key="secret",
            config=Config(retries={"total_max_attempts": 1}),
        )
    )

    def converse() -> None:
        client.converse(modelId="anthropic.claude-3-5-sonnet",
                        messages=[{"role": "user", "content": [{"text": "hi"}]}])  # fmt: skip

    for status, code, expected in [
        (429, "ThrottlingException", ("provider", "rate_limited")),
        (408, "ModelTimeoutException", ("provider", "timeout")),
        (503, "ServiceUnavailableException", ("provider", "server_error")),
        (400, "ValidationException", ("app", "bad_request")),
        (403, "AccessDeniedException", ("app", "auth")),
    ]:
        api.set(status, {"message": code}, **{"x-amzn-ErrorType": f"{code}:http://internal"})
        assert failed(chainsight_capture, "model", converse, provider="aws.bedrock") == expected


# --- transports and a self-hosted reranker ----------------------------------------------------
def test_self_hosted_reranker_down_is_the_same_with_or_without_system(
    chainsight_capture: Capture, closed: str
) -> None:
    import httpx

    def rerank() -> None:
        httpx.post(f"http://127.0.0.1:{closed}/rerank", json={"query": "q", "texts": ["a"]})

    capture = chainsight_capture
    assert failed(capture, "rerank", rerank) == ("provider", "connection")
    assert failed(capture, "rerank", rerank, system="tei") == ("provider", "connection")
    assert failed(capture, "rerank", rerank, system="tei", component="app") == (
        "app",
        "connection",
    )


def test_requests_and_aiohttp(chainsight_capture: Capture, api: APIServer, closed: str) -> None:
    import aiohttp
    import requests

    capture = chainsight_capture

    def fetch(url: str) -> None:
        requests.get(url, timeout=TIMEOUT).raise_for_status()

    def afetch(url: str) -> None:
        async def go() -> None:
            timeout = aiohttp.ClientTimeout(total=TIMEOUT)
            async with (
                aiohttp.ClientSession(timeout=timeout) as session,
                session.get(url) as response,
            ):
                response.raise_for_status()

        asyncio.run(go())

    down = f"http://127.0.0.1:{closed}/search"
    assert failed(capture, "retrieval", lambda: fetch(down)) == ("vector_store", "connection")
    assert failed(capture, "model", lambda: afetch(down)) == ("provider", "connection")
    api.set(503)
    assert failed(capture, "retrieval", lambda: fetch(api.url)) == ("vector_store", "server_error")
    assert failed(capture, "model", lambda: afetch(api.url)) == ("provider", "server_error")
    api.set(422)
    assert failed(capture, "model", lambda: afetch(api.url)) == ("app", "bad_request")
    api.stall()
    assert failed(capture, "retrieval", lambda: fetch(api.url)) == ("vector_store", "timeout")
    assert failed(capture, "model", lambda: afetch(api.url)) == ("provider", "timeout")
