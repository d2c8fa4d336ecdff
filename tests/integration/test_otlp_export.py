"""Spans on the wire: chainsight pointed at a real OTLP receiver by the standard variables."""

from __future__ import annotations

import asyncio
import time

import pytest

import chainsight
from tests.integration._servers import OTLPGrpcReceiver, OTLPReceiver

pytestmark = pytest.mark.integration


class ProviderTimeout(TimeoutError):
    pass


@chainsight.traced_stage("retrieval", system="qdrant", collection="kb")
def retrieve(q: str) -> list[str]:
    chainsight.current_stage().record_documents(count=2, scores=[0.8, 0.4], ids=["a", "b"])
    return ["a", "b"]


@chainsight.traced_stage("model", provider="openai", model="gpt-4o")
async def generate(prompt: str, fail: bool) -> str:
    if fail:
        raise ProviderTimeout("upstream timed out")
    chainsight.current_stage().record_usage(input_tokens=100, output_tokens=20)
    return "ok"


async def answer(fail: bool) -> None:
    async with chainsight.request("answer_ticket", tenant="acme", feature="copilot"):
        docs = retrieve("q")
        with chainsight.stage("prompt", prompt_name="answer", prompt_version="7"):
            prompt = " ".join(docs)
        await generate(prompt, fail)


def test_spans_arrive_with_names_attributes_links_and_status(
    otlp_receiver: OTLPReceiver, span_encoder: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", otlp_receiver.endpoint)
    chainsight.configure(service="support-bot", environment="test", release={"prompt": "a@7"})
    asyncio.run(answer(fail=False))
    with pytest.raises(ProviderTimeout):
        asyncio.run(answer(fail=True))
    assert chainsight.shutdown(timeout=5.0)

    spans = otlp_receiver.wait_for_spans(8, timeout=10.0)
    assert len(spans) == 8
    by_trace: dict[str, list[dict[str, object]]] = {}
    for span in spans:
        by_trace.setdefault(str(span["trace_id"]), []).append(span)
    assert len(by_trace) == 2
    for trace_spans in by_trace.values():
        names = {str(s["name"]) for s in trace_spans}
        assert names == {
            "invoke_workflow answer_ticket",
            "retrieval kb",
            "prompt answer",
            "chat gpt-4o",
        }
        root = next(s for s in trace_spans if s["parent_span_id"] is None)
        assert root["name"] == "invoke_workflow answer_ticket"
        for s in trace_spans:
            attrs = s["attributes"]
            assert isinstance(attrs, dict)
            assert attrs["chainsight.release.prompt"] == "a@7"
            assert attrs["chainsight.tenant"] == "acme"
            assert s["resource"]["service.name"] == "support-bot"  # type: ignore[index]
            assert s["resource"]["deployment.environment.name"] == "test"  # type: ignore[index]
            if s is not root:
                assert s["parent_span_id"] == root["span_id"]
    model_spans = [s for s in spans if s["name"] == "chat gpt-4o"]
    ok = next(s for s in model_spans if s["attributes"]["chainsight.outcome"] == "ok")  # type: ignore[index]
    failed = next(s for s in model_spans if s["attributes"]["chainsight.outcome"] == "error")  # type: ignore[index]
    assert ok["kind"] == "CLIENT"
    assert ok["attributes"]["gen_ai.usage.input_tokens"] == 100  # type: ignore[index]
    assert ok["attributes"]["gen_ai.provider.name"] == "openai"  # type: ignore[index]
    assert ok["status_code"] == "UNSET"
    assert failed["status_code"] == "ERROR"
    assert failed["attributes"]["chainsight.fault"] == "provider"  # type: ignore[index]
    assert failed["attributes"]["error.type"] == "timeout"  # type: ignore[index]
    failed_root = next(
        s for s in spans if s["parent_span_id"] is None and s["trace_id"] == failed["trace_id"]
    )
    assert failed_root["attributes"]["chainsight.fault"] == "provider"  # type: ignore[index]
    assert failed_root["status_code"] == "ERROR"
    retrieval = next(s for s in spans if s["name"] == "retrieval kb")
    assert retrieval["attributes"]["db.system.name"] == "qdrant"  # type: ignore[index]
    assert retrieval["attributes"]["chainsight.retrieval.document_count"] == 2  # type: ignore[index]


def test_grpc_by_choice(
    otlp_grpc_receiver: OTLPGrpcReceiver, span_encoder: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", otlp_grpc_receiver.endpoint)
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc")
    chainsight.configure(service="grpc-app")
    asyncio.run(answer(fail=False))
    assert chainsight.shutdown(timeout=5.0)
    spans = otlp_grpc_receiver.wait_for_spans(4, timeout=10.0)
    assert {s["name"] for s in spans} >= {"invoke_workflow answer_ticket", "chat gpt-4o"}


@pytest.mark.slow
def test_receiver_down_requests_succeed_and_failures_are_counted(
    otlp_receiver: OTLPReceiver, span_encoder: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    from prometheus_client import CollectorRegistry

    registry = CollectorRegistry()
    otlp_receiver.stop()  # the port now refuses connections
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", otlp_receiver.traces_url)
    chainsight.configure(service="down", registry=registry)
    started = time.perf_counter()
    for _ in range(50):
        asyncio.run(answer(fail=False))
    elapsed = time.perf_counter() - started
    # The request path never waits on the exporter (it runs on the batch thread).
    assert elapsed < 5.0
    finished = chainsight.shutdown(timeout=8.0)
    assert finished
    failures = registry.get_sample_value("chainsight_export_failures_total", {"signal": "traces"})
    assert failures == 200.0  # 50 requests x 4 spans, every one counted as lost
    assert otlp_receiver.request_count == 0


def test_configure_otlp_metrics_pushes_genai_duration(
    otlp_receiver: OTLPReceiver, monkeypatch: pytest.MonkeyPatch
) -> None:
    from prometheus_client import CollectorRegistry

    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", otlp_receiver.endpoint)
    chainsight.configure(service="metrics-app", registry=CollectorRegistry(), otlp_metrics=True)
    asyncio.run(answer(fail=False))
    assert chainsight.shutdown(timeout=8.0)  # the last export happens at shutdown
    metric = otlp_receiver.wait_for_metric("gen_ai.client.operation.duration")
    assert metric["unit"] == "s"
