"""Privacy on the wire: every planted secret is gone from every exported span, event and log."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest

import chainsight
from tests.integration._servers import OTLPReceiver

pytestmark = pytest.mark.integration

CORPUS = json.loads(
    (Path(__file__).parent.parent / "data" / "redaction_corpus.json").read_text(encoding="utf-8")
)


def _run_corpus() -> None:
    for item in CORPUS["redact"]:
        text = item["text"]

        @chainsight.traced_stage("model", name=item["id"], provider="openai", model="gpt-4o")
        def call(prompt: str) -> None:
            stage = chainsight.current_stage()
            stage.record_content(
                input_messages=[{"role": "user", "content": prompt}],
                system_instructions="Answer politely.",
            )
            stage.record_response(
                {
                    "id": "c1",
                    "object": "chat.completion",
                    "model": "gpt-4o",
                    "choices": [{"index": 0, "finish_reason": "stop",
                                 "message": {"role": "assistant", "content": "Re: " + prompt}}],
                    "usage": {"prompt_tokens": 10, "completion_tokens": 5},
                }
            )  # fmt: skip
            raise ValueError("could not answer: " + prompt)  # lands on the span as an event

        with chainsight.request("r", tenant="acme"):
            with chainsight.stage("retrieval", system="qdrant") as r:
                r.record_content(query=text, documents=[{"id": "d1", "snippet": text}])
            with pytest.raises(ValueError, match="could not answer"):
                call(text)


@pytest.mark.parametrize("mode", ["SPAN_AND_EVENT"])
def test_planted_values_never_leave_the_process(
    otlp_receiver: OTLPReceiver,
    span_encoder: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    mode: str,
) -> None:
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", otlp_receiver.endpoint)
    monkeypatch.setenv("OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT", mode)
    caplog.set_level(logging.DEBUG)
    chainsight.configure(service="privacy", log_stages=True)
    _run_corpus()
    assert chainsight.shutdown(timeout=5.0)
    expected = len(CORPUS["redact"]) * 3
    spans = otlp_receiver.wait_for_spans(expected, timeout=15)
    wire = json.dumps(spans, default=str)
    assert "gen_ai.input.messages" in wire  # content was captured at all
    assert "[REDACTED:" in wire
    logs = "\n".join(r.getMessage() for r in caplog.records)
    assert "stage=" in logs
    for item in CORPUS["redact"]:
        for kind, value in item["planted"]:
            assert value not in wire, f"{kind} {value!r} ({item['id']}) reached the OTLP wire"
            assert value not in logs, f"{kind} {value!r} ({item['id']}) reached a log line"


def test_keep_texts_survive_capture(tmp_path: Path) -> None:
    path = tmp_path / "spans.jsonl"
    chainsight.configure(exporter=f"jsonl:{path}", capture_content=True)
    for item in CORPUS["keep"]:
        with chainsight.stage("retrieval", name=item["id"]) as r:
            r.record_content(query=item["text"])
    assert chainsight.shutdown(timeout=5.0)
    for line in path.read_text(encoding="utf-8").splitlines():
        span = json.loads(line)
        item = next(
            i for i in CORPUS["keep"] if i["id"] == span["attributes"]["chainsight.stage.name"]
        )
        assert span["attributes"]["gen_ai.retrieval.query.text"] == item["text"]
