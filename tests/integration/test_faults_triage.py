"""End to end: a small RAG app, written only against the docs, fails the real way, and
``chainsight triage --spans`` names the right domain every time.

The app retrieves with qdrant-client (REST or gRPC), reranks with a self-hosted reranker over
httpx (``system="tei"``), and generates with the OpenAI client, wrapping its errors in its own
exception (``raise AnswerError(...) from exc``) or, through an in-house gateway, in one chainsight
cannot know (``GatewayError``, raised ``from None``, the provider's error kept in ``.upstream``)
which one classification rule hands back to the built-in classifier. Every other request hits
the fault, the rest are served by a local HTTP server speaking the Qdrant, TEI and OpenAI wire
formats. The span file is read by the command a user would run.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
from qdrant_client import QdrantClient

import chainsight
from chainsight import StageFacts
from tests.integration._api_server import Answer, APIServer
from tests.integration._servers import free_port

pytestmark = [pytest.mark.integration, pytest.mark.filterwarnings("ignore::Warning")]

REQUESTS = 8

QDRANT_POINTS = {
    "result": {"points": [{"id": i, "version": 1, "score": 0.9 - i / 10} for i in range(3)]},
    "status": "ok",
    "time": 0.001,
}
TEI_SCORES = [{"index": 0, "score": 0.98}, {"index": 1, "score": 0.5}]
CHAT = {
    "id": "chatcmpl-1",
    "object": "chat.completion",
    "created": 1700000000,
    "model": "gpt-4o-2024-08-06",
    "choices": [
        {
            "index": 0,
            "message": {"role": "assistant", "content": "Reset it under Settings."},
            "finish_reason": "stop",
        }
    ],
    "usage": {"prompt_tokens": 50, "completion_tokens": 8, "total_tokens": 58},
}


TIMEOUT = 0.5  # the OpenAI client's timeout against a provider that never answers, in seconds
ROUTES = {
    # The healthy side: Qdrant's query endpoint, TEI's /rerank, OpenAI's chat completions ...
    "/collections/kb/points/query": Answer(200, QDRANT_POINTS),
    "/rerank": Answer(200, TEI_SCORES),
    "/v1/chat/completions": Answer(200, CHAT),
    # ... and an OpenAI-compatible endpoint that is rate limited.
    "/limited/v1/chat/completions": Answer(
        429, {"error": {"message": "Rate limit reached", "type": "requests", "code": None}}
    ),
}


# --- the application, as docs/api.md and docs/faults.md describe it -----------------------------
class AnswerError(Exception):
    """The app's own error for a failed answer."""


class GatewayError(Exception):
    """An in-house LLM gateway's error: the provider's exception is kept in ``upstream``."""

    def __init__(self, upstream: BaseException) -> None:
        super().__init__("gateway call failed")
        self.upstream = upstream


def gateway_rule(exc: BaseException, stage: StageFacts) -> chainsight.Classification | None:
    """Hand what the gateway wrapped back to chainsight's own classification."""
    if isinstance(exc, GatewayError):
        return chainsight.classify(exc.upstream, stage)
    return None


class SupportBot:
    def __init__(
        self,
        qdrant: QdrantClient,
        reranker_url: str,
        llm: openai.OpenAI,
        *,
        via_gateway: bool = False,
    ) -> None:
        self.qdrant = qdrant
        self.reranker_url = reranker_url
        self.llm = llm
        self.via_gateway = via_gateway

    @chainsight.traced_stage("retrieval", system="qdrant", collection="kb")
    def retrieve(self, question: str) -> list[Any]:
        return self.qdrant.query_points("kb", query=[0.1, 0.2, 0.3], limit=3).points

    @chainsight.traced_stage("rerank", system="tei", model="bge-reranker-v2")
    def rerank(self, question: str, points: list[Any]) -> list[Any]:
        response = httpx.post(
            f"{self.reranker_url}/rerank",
            json={"query": question, "texts": [str(p.id) for p in points]},
            timeout=2,
        )
        response.raise_for_status()
        return [points[s["index"]] for s in response.json()]

    @chainsight.traced_stage("model", provider="openai", model="gpt-4o")
    def generate(self, question: str, context: list[Any]) -> str:
        messages = [{"role": "user", "content": f"{question} {context}"}]
        try:
            resp = self.llm.chat.completions.create(model="gpt-4o", messages=messages)  # type: ignore[arg-type]
        except openai.OpenAIError as exc:
            if self.via_gateway:
                raise GatewayError(exc) from None
            raise AnswerError("the model did not answer") from exc
        chainsight.current_stage().record_response(resp)
        return resp.choices[0].message.content or ""

    def answer(self, question: str) -> str:
        with chainsight.request("answer_ticket", tenant="acme", feature="support"):
            points = self.retrieve(question)
            context = self.rerank(question, points)
            return self.generate(question, context)


# --- the scenarios -----------------------------------------------------------------------------
Factory = Callable[["Env", bool], SupportBot]


class Env:
    def __init__(self, server: APIServer, closed: int, silent: int) -> None:
        self.server, self.closed, self.silent = server, closed, silent
        self.url = server.url
        self.down = f"http://127.0.0.1:{closed}"

    def qdrant(self) -> QdrantClient:
        return QdrantClient(url=self.url, timeout=2)

    def llm(self, url: str | None = None, timeout: float = 5.0) -> openai.OpenAI:
        return openai.OpenAI(
            api_key="sk-test", base_url=f"{url or self.url}/v1", max_retries=0, timeout=timeout
        )


def _qdrant_rest_down(env: Env, fail: bool) -> SupportBot:
    qdrant = QdrantClient(url=env.down, timeout=2) if fail else env.qdrant()
    return SupportBot(qdrant, env.url, env.llm())


def _qdrant_grpc_down(env: Env, fail: bool) -> SupportBot:
    qdrant = (
        QdrantClient(
            host="127.0.0.1", port=free_port(), grpc_port=env.closed, prefer_grpc=True, timeout=2
        )
        if fail
        else env.qdrant()
    )
    return SupportBot(qdrant, env.url, env.llm())


def _provider_timeout_wrapped(env: Env, fail: bool) -> SupportBot:
    llm = env.llm(f"http://127.0.0.1:{env.silent}", timeout=TIMEOUT) if fail else env.llm()
    return SupportBot(env.qdrant(), env.url, llm)


def _reranker_down(env: Env, fail: bool) -> SupportBot:
    return SupportBot(env.qdrant(), env.down if fail else env.url, env.llm())


def _gateway_unknown_error(env: Env, fail: bool) -> SupportBot:
    # The provider answers 429 through the gateway, which hides it from the exception chain.
    llm = env.llm(f"{env.url}/limited" if fail else None)
    return SupportBot(env.qdrant(), env.url, llm, via_gateway=True)


SCENARIOS: dict[str, tuple[Factory, str]] = {
    "qdrant-rest-down": (_qdrant_rest_down, "vector_store"),
    "qdrant-grpc-down": (_qdrant_grpc_down, "vector_store"),
    "provider-timeout-wrapped": (_provider_timeout_wrapped, "provider"),
    "self-hosted-reranker-down": (_reranker_down, "provider"),
    "gateway-error-with-a-rule": (_gateway_unknown_error, "provider"),
}


@pytest.fixture
def env() -> Iterator[Env]:
    import socket

    server = APIServer()
    server.routes.update(ROUTES)
    server.thread.start()
    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen(16)
    try:
        yield Env(server, free_port(), silent.getsockname()[1])
    finally:
        silent.close()
        server.stop()


def ask(env: Env, factory: Factory, *, fail: bool) -> str:
    """One question to a bot from ``factory``: "ok", or the class name of what it raised; the
    bot's clients are closed either way."""
    bot = factory(env, fail)
    try:
        bot.answer("How do I reset my password?")
        return "ok"
    except Exception as exc:
        return type(exc).__name__
    finally:
        bot.qdrant.close()
        bot.llm.close()


def _run(env: Env, factory: Factory, spans: Path, *, rule: bool = True) -> list[str]:
    chainsight.configure(
        service="support-bot", exporter=f"jsonl:{spans}", classifiers=[gateway_rule] if rule else []
    )
    outcomes = [ask(env, factory, fail=i % 2 == 1) for i in range(REQUESTS)]
    assert chainsight.shutdown(timeout=10)
    return outcomes


def _triage(spans: Path) -> tuple[int, dict[str, Any]]:
    proc = subprocess.run(
        [sys.executable, "-m", "chainsight", "triage", "--spans", str(spans), "--window", "1h",
         "--json"],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert proc.stdout.strip(), proc.stderr
    return proc.returncode, json.loads(proc.stdout)


@pytest.mark.parametrize("scenario", list(SCENARIOS))
def test_triage_names_the_domain(env: Env, tmp_path: Path, scenario: str) -> None:
    factory, domain = SCENARIOS[scenario]
    spans = tmp_path / f"{scenario}.jsonl"
    outcomes = _run(env, factory, spans)
    assert outcomes.count("ok") == REQUESTS // 2, outcomes
    code, payload = _triage(spans)
    verdict = payload["verdict"]
    assert code == 1, verdict["line"]
    assert verdict["domain"] == domain, verdict["line"]
    assert {f["domain"] for f in verdict["faults"]} == {domain}, verdict["line"]


def test_without_the_rule_the_gateways_error_is_the_apps(env: Env, tmp_path: Path) -> None:
    # The contrast that shows the rule matters: GatewayError hides the 429 from the chain.
    spans = tmp_path / "gateway-without-rule.jsonl"
    _run(env, _gateway_unknown_error, spans, rule=False)
    code, payload = _triage(spans)
    assert code == 1
    assert payload["verdict"]["domain"] == "app", payload["verdict"]["line"]
