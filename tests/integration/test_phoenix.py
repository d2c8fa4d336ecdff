"""A full chain in a real Arize Phoenix: what a user opens Phoenix for is there, and no more.

Phoenix (arize-phoenix from PyPI) runs from its own cached virtual environment
(tools/phoenix.py). If it cannot be installed or started, the tests fail under CI and are
skipped elsewhere, saying why either way.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Iterator
from typing import Any

import pytest

import chainsight
from tools import phoenix

pytestmark = pytest.mark.integration

SPANS_PER_CHAIN = 6  # request, retrieval, rerank, prompt, model, validation
LLM, RETRIEVER, RERANKER = "chat claude-sonnet-4-5", "retrieval kb", "rerank rerank-v3.5"
KINDS = {
    "invoke_workflow answer_ticket": "chain", RETRIEVER: "retriever", RERANKER: "reranker",
    "prompt answer": "prompt", LLM: "llm", "validate answer_cites_kb": "guardrail",
}  # fmt: skip
CONTENT = (phoenix.QUESTION, phoenix.SYSTEM, phoenix.ANSWER, "Refunds reach the card")
SPANS_QUERY = """
query($id: ID!) { node(id: $id) { ... on Project { spans(first: 100) { edges { node {
  name spanKind context { spanId traceId } numDocuments
  tokenCountPrompt tokenCountCompletion tokenCountTotal tokenPromptDetails { cacheRead cacheWrite }
  costSummary { total { cost } }
  input { value mimeType } output { value mimeType }
} } } } } }
"""


def _say(message: str) -> None:
    """Straight to the terminal, past pytest's capture: the suite turns warnings into errors."""
    sys.__stderr__.write(f"\n[test_phoenix] {message}\n")


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[phoenix.Phoenix]:
    try:
        python, seconds = phoenix.ensure_venv()
        if seconds is not None:
            _say(f"installed Phoenix {phoenix.PHOENIX_VERSION} in {seconds:.0f} s")
        with phoenix.running(python, tmp_path_factory.mktemp("phoenix")) as running:
            yield running
    except phoenix.PhoenixUnavailable as exc:
        message = f"a real Phoenix is needed and could not be had: {exc}"
        _say(message)
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)


def _send(
    server: phoenix.Phoenix, monkeypatch: pytest.MonkeyPatch, project: str, **settings: Any
) -> None:
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", server.url)
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf")
    monkeypatch.setenv("OTEL_RESOURCE_ATTRIBUTES", f"openinference.project.name={project}")
    chainsight.configure(service="support-bot", exporter="otlp", **settings)
    phoenix.send_chain()
    assert chainsight.shutdown(timeout=30)


def _seen(
    server: phoenix.Phoenix, project: str
) -> tuple[dict[str, dict[str, Any]], dict[str, dict[str, Any]]]:
    """What Phoenix shows per span name: its GraphQL view and the span's stored attributes."""
    rest = server.wait_for_spans(project, SPANS_PER_CHAIN)
    project_id = server.project_id(project)
    data = server.graphql(SPANS_QUERY, {"id": project_id})
    shown = {e["node"]["name"]: e["node"] for e in data["node"]["spans"]["edges"]}
    stored = {s["name"]: s for s in rest}
    return shown, stored


def _our_cost(stored: dict[str, dict[str, Any]]) -> float:
    cost = stored[LLM]["attributes"]["chainsight.cost.usd"]
    assert isinstance(cost, float)
    assert cost > 0
    return cost


def test_openinference_chain_shows_prompt_answer_documents_tokens_and_cost(
    server: phoenix.Phoenix, monkeypatch: pytest.MonkeyPatch
) -> None:
    _send(
        server,
        monkeypatch,
        "capture-on",
        capture_content=True,
        conventions=("otel", "openinference"),
    )
    shown, stored = _seen(server, "capture-on")
    assert {name: span["spanKind"] for name, span in shown.items()} == KINDS
    llm = shown[LLM]
    assert phoenix.QUESTION in llm["input"]["value"]
    assert llm["output"] == {"value": phoenix.ANSWER, "mimeType": "text"}
    attrs = stored[LLM]["attributes"]
    assert attrs["llm.input_messages.0.message.role"] == "system"
    assert attrs["llm.input_messages.0.message.content"] == phoenix.SYSTEM
    assert attrs["llm.input_messages.1.message.content"] == phoenix.QUESTION
    assert attrs["llm.output_messages.0.message.content"] == phoenix.ANSWER
    assert attrs["llm.model_name"] == phoenix.RESPONSE_MODEL
    assert attrs["llm.provider"] == "anthropic"
    assert llm["tokenCountPrompt"] == phoenix.TOTAL_INPUT_TOKENS
    assert llm["tokenCountCompletion"] == phoenix.USAGE["output_tokens"]
    assert llm["tokenPromptDetails"] == {"cacheRead": 8000, "cacheWrite": 4000}
    assert llm["costSummary"]["total"]["cost"] == pytest.approx(_our_cost(stored), rel=1e-9)
    retriever = shown[RETRIEVER]
    assert retriever["input"]["value"] == phoenix.QUESTION
    assert retriever["numDocuments"] == len(phoenix.DOCUMENTS)
    docs = stored[RETRIEVER]["attributes"]
    for i, doc in enumerate(phoenix.DOCUMENTS):
        assert docs[f"retrieval.documents.{i}.document.id"] == doc["id"]
        assert docs[f"retrieval.documents.{i}.document.score"] == doc["score"]
        assert docs[f"retrieval.documents.{i}.document.content"] == doc["text"]
    rerank = stored[RERANKER]["attributes"]
    assert rerank["reranker.query"] == phoenix.QUESTION
    assert rerank["reranker.output_documents.0.document.id"] == "kb-refunds"


def test_genai_names_alone_render_in_phoenix(
    server: phoenix.Phoenix, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Without OpenInference names, Phoenix's own reader of the GenAI conventions accepts our
    messages, documents and cache writes (it validates them against the conventions' schemas)."""
    _send(server, monkeypatch, "genai-only", capture_content=True)
    shown, stored = _seen(server, "genai-only")
    attrs = stored[LLM]["attributes"]
    assert attrs["llm.input_messages.0.message.content"] == phoenix.SYSTEM  # synthesised by Phoenix
    assert attrs["llm.input_messages.1.message.content"] == phoenix.QUESTION
    assert attrs["llm.output_messages.0.message.content"] == phoenix.ANSWER
    assert shown[LLM]["tokenPromptDetails"] == {"cacheRead": 8000, "cacheWrite": 4000}
    assert shown[LLM]["costSummary"]["total"]["cost"] == pytest.approx(_our_cost(stored), rel=1e-9)
    docs = stored[RETRIEVER]["attributes"]
    assert docs["retrieval.documents.0.document.content"] == phoenix.DOCUMENTS[0]["text"]
    assert shown[RETRIEVER]["numDocuments"] == len(phoenix.DOCUMENTS)


def test_capture_off_leaves_no_content_in_phoenix(
    server: phoenix.Phoenix, monkeypatch: pytest.MonkeyPatch
) -> None:
    _send(server, monkeypatch, "capture-off", conventions=("otel", "openinference"))
    shown, stored = _seen(server, "capture-off")
    everything = json.dumps([shown, stored])
    for text in CONTENT:
        assert text not in everything, f"{text!r} reached Phoenix with capture off"
    assert "llm.input_messages" not in everything
    assert "retrieval.documents" not in everything
    llm = shown[LLM]  # what is not content still shows: kinds, tokens, cost
    assert {name: span["spanKind"] for name, span in shown.items()} == KINDS
    assert llm["tokenPromptDetails"] == {"cacheRead": 8000, "cacheWrite": 4000}
    assert llm["costSummary"]["total"]["cost"] == pytest.approx(_our_cost(stored), rel=1e-9)
