"""Opt-in content capture: off by default, redacted and truncated when on."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

import chainsight
from chainsight import ConfigurationError
from chainsight.testing import Capture

SECRET_PROMPT = [
    {"role": "system", "content": "You are a support bot."},
    {"role": "user", "content": "I'm jane.doe@example.com, card 4111 1111 1111 1111, "
     "key sk-proj-abcdefghijklmnopqrstuvwxyz0123 — where is order 12345678?"},
]  # fmt: skip
PLANTED = ["jane.doe@example.com", "4111 1111 1111 1111", "sk-proj-abcdefghijklmnopqrstuvwxyz0123"]


def _chat(stage_name: str = "chat") -> None:
    with chainsight.stage("model", name=stage_name, provider="openai", model="gpt-4o") as s:
        s.record_content(input_messages=SECRET_PROMPT, query="refund for jane.doe@example.com")
        s.record_response(
            {
                "id": "c1",
                "object": "chat.completion",
                "model": "gpt-4o",
                "choices": [{"index": 0, "finish_reason": "stop",
                             "message": {"role": "assistant",
                                         "content": "Mail jane.doe@example.com the label."}}],
                "usage": {"prompt_tokens": 10, "completion_tokens": 5},
            }
        )  # fmt: skip


def test_off_by_default(chainsight_capture: Capture) -> None:
    _chat()
    attrs = chainsight_capture.stage(kind="model").attributes
    assert not any(key.startswith(("gen_ai.input", "gen_ai.output", "gen_ai.retrieval.query"))
                   for key in attrs)  # fmt: skip


def test_on_redacts_every_planted_value_on_the_wire(tmp_path: Path) -> None:
    path = tmp_path / "spans.jsonl"
    chainsight.configure(capture_content=True, exporter=f"jsonl:{path}")
    _chat()
    assert chainsight.shutdown(timeout=5.0)
    text = path.read_text()
    for value in PLANTED:
        assert value not in text
    span = json.loads(text.splitlines()[0])
    messages = json.loads(span["attributes"]["gen_ai.input.messages"])
    assert messages[1]["role"] == "user"  # OpenAI-style messages become the conventions' parts
    assert "order 12345678" in messages[1]["parts"][0]["content"]  # ordinary text is kept
    assert "[REDACTED:email" in span["attributes"]["gen_ai.output.messages"]
    assert "gen_ai.retrieval.query.text" in span["attributes"]


def test_env_variable_event_only(
    chainsight_capture: Capture, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT", "EVENT_ONLY")
    chainsight.configure(service="env")
    _chat()
    model = chainsight_capture.stage(kind="model")
    assert "gen_ai.input.messages" not in model.attributes
    event = model.event("gen_ai.client.inference.operation.details")
    assert event is not None
    assert "jane.doe@example.com" not in str(event["gen_ai.input.messages"])


def test_bad_mode_is_a_configuration_error(monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(ConfigurationError, match="capture_content='maybe'"):
        chainsight.configure(capture_content="maybe")
    monkeypatch.setenv("OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT", "sometimes")
    with pytest.raises(ConfigurationError, match="SPAN_ONLY"):
        chainsight.configure()


def test_failing_user_redactor_drops_content_and_counts(chainsight_capture: Capture) -> None:
    def broken(text: str) -> str:
        raise RuntimeError("redactor bug")

    chainsight.configure(capture_content=True, redactors=[broken])
    _chat()
    attrs = chainsight_capture.stage(kind="model").attributes
    assert "gen_ai.input.messages" not in attrs
    failures = chainsight_capture.metric(
        "chainsight_internal_errors_total", {"where": "redaction_failed"}
    )
    assert failures is not None
    assert failures >= 1


def test_openinference_dual_emission(chainsight_capture: Capture) -> None:
    chainsight.configure(conventions=("otel", "openinference"))
    with chainsight.request("r"):
        _chat()
        with chainsight.stage("retrieval", system="qdrant"):
            pass
    model = chainsight_capture.stage(kind="model").attributes
    assert model["openinference.span.kind"] == "LLM"
    assert model["llm.model_name"] == "gpt-4o"
    assert model["llm.provider"] == "openai"
    assert model["llm.token_count.prompt"] == 10
    assert model["llm.token_count.completion"] == 5
    assert model["llm.cost.total"] == model["chainsight.cost.usd"]
    assert model["gen_ai.usage.input_tokens"] == 10  # the OTel names stay
    assert chainsight_capture.stage(kind="retrieval").attributes["openinference.span.kind"] == (
        "RETRIEVER"
    )
    assert chainsight_capture.stage(kind="request").attributes["openinference.span.kind"] == (
        "CHAIN"
    )
    with pytest.raises(ConfigurationError, match="conventions"):
        chainsight.configure(conventions=("openinference",))
