"""chainsight's OTLP exporters on the wire: the request a real receiver decodes is the SDK's.

The same recorded chainsight spans go through our exporter (our encoder) and the SDK's
``OTLPSpanExporter`` to a real OTLP receiver on 127.0.0.1 (HTTP, and gRPC), which decodes each
body with the official protobuf classes; the two decoded requests must be the same message,
plain and compressed. What the exporter does besides encoding (answers, retries, reconnection,
size limit, shutdown) is the SDK's and must stay so.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import (
    OTLPSpanExporter as GrpcSpanExporter,
)
from opentelemetry.exporter.otlp.proto.http import Compression
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from prometheus_client import CollectorRegistry

import chainsight
from chainsight.export.otlp_grpc import FastGrpcOTLPSpanExporter
from chainsight.export.otlp_http import FastOTLPSpanExporter
from tests.integration._servers import OTLPGrpcReceiver, OTLPReceiver

pytestmark = pytest.mark.integration


class UpstreamError(ConnectionError):
    pass


@pytest.fixture
def recorded() -> Iterator[list[ReadableSpan]]:
    """A few chainsight requests (one failing), recorded in memory by chainsight's pipeline."""
    memory = InMemorySpanExporter()
    chainsight.configure(
        service="wire-check",
        environment="test",
        release={"model": "gpt-4o", "prompt": "answer@7"},
        exporter=memory,
        registry=CollectorRegistry(),
    )
    for i in range(5):
        try:
            with chainsight.request("answer_ticket", tenant=f"tenant-{i % 2}", feature="чат"):
                with chainsight.stage("retrieval", system="qdrant", collection="kb") as r:
                    r.record_documents(count=2, scores=[0.8, 0.2], ids=["a", "b"])
                with chainsight.stage("model", provider="openai", model="gpt-4o") as m:
                    m.record_usage(input_tokens=100 + i, output_tokens=7)
                    if i == 3:
                        raise UpstreamError("connection reset by peer")
        except UpstreamError:
            pass
    assert chainsight.shutdown(timeout=5.0)
    yield list(memory.get_finished_spans())
    chainsight.reset()


def _export_with_both(ours: SpanExporter, sdk: SpanExporter, spans: list[ReadableSpan]) -> None:
    """Send ``spans`` once through each exporter (ours first), both succeeding; shut both."""
    try:
        assert ours.export(spans) is SpanExportResult.SUCCESS
        assert sdk.export(spans) is SpanExportResult.SUCCESS
    finally:
        ours.shutdown()
        sdk.shutdown()


@pytest.mark.parametrize("compression", [Compression.NoCompression, Compression.Gzip])
def test_both_encoders_send_the_same_request(
    otlp_receiver: OTLPReceiver, recorded: list[ReadableSpan], compression: Compression
) -> None:
    ours = FastOTLPSpanExporter(endpoint=otlp_receiver.traces_url, compression=compression)
    sdk = OTLPSpanExporter(endpoint=otlp_receiver.traces_url, compression=compression)
    assert ours.fast
    _export_with_both(ours, sdk, recorded)
    first, second = otlp_receiver.trace_requests
    assert first.SerializeToString(deterministic=True) == second.SerializeToString(
        deterministic=True
    )
    assert first == second
    spans = otlp_receiver.spans()
    assert len(spans) == 2 * len(recorded) == 30
    failed = [s for s in spans[: len(recorded)] if s["status_code"] == "ERROR"]
    assert {s["attributes"]["chainsight.fault"] for s in failed} == {"provider"}
    expected_encoding = "gzip" if compression is Compression.Gzip else ""
    assert [r.content_encoding for r in otlp_receiver.requests] == [expected_encoding] * 2


def test_a_rejected_batch_fails_without_retry(
    otlp_receiver: OTLPReceiver, recorded: list[ReadableSpan]
) -> None:
    otlp_receiver.set_mode("error", status=400)
    ours = FastOTLPSpanExporter(endpoint=otlp_receiver.traces_url, timeout=5)
    try:
        assert ours.export(recorded) is SpanExportResult.FAILURE
    finally:
        ours.shutdown()
    assert [r.status for r in otlp_receiver.requests] == [400]


def test_a_transient_error_is_retried_by_the_sdk_client(
    otlp_receiver: OTLPReceiver, recorded: list[ReadableSpan]
) -> None:
    otlp_receiver.set_mode("error", status=503, retry_after=0.0, count=1)
    ours = FastOTLPSpanExporter(endpoint=otlp_receiver.traces_url, timeout=10)
    try:
        assert ours.export(recorded) is SpanExportResult.SUCCESS
    finally:
        ours.shutdown()
    assert [r.status for r in otlp_receiver.requests] == [503, 200]
    assert len(otlp_receiver.spans()) == len(recorded)


def test_a_batch_over_the_size_limit_is_not_sent(
    otlp_receiver: OTLPReceiver, recorded: list[ReadableSpan]
) -> None:
    ours = FastOTLPSpanExporter(endpoint=otlp_receiver.traces_url, max_request_size=200)
    try:
        assert ours.export(recorded) is SpanExportResult.FAILURE
        assert ours.export(recorded[:0]) is SpanExportResult.SUCCESS  # an empty request fits
    finally:
        ours.shutdown()
    assert [r.status for r in otlp_receiver.requests] == [200]
    assert otlp_receiver.spans() == []


def test_a_shut_down_exporter_sends_nothing(
    otlp_receiver: OTLPReceiver, recorded: list[ReadableSpan]
) -> None:
    ours = FastOTLPSpanExporter(endpoint=otlp_receiver.traces_url)
    ours.shutdown()
    assert ours.export(recorded) is SpanExportResult.FAILURE
    assert otlp_receiver.request_count == 0


@pytest.mark.parametrize("gzip", [False, True])
def test_both_encoders_send_the_same_request_over_grpc(
    otlp_grpc_receiver: OTLPGrpcReceiver, recorded: list[ReadableSpan], gzip: bool
) -> None:
    import grpc

    compression = grpc.Compression.Gzip if gzip else grpc.Compression.NoCompression
    endpoint = otlp_grpc_receiver.endpoint
    ours = FastGrpcOTLPSpanExporter(endpoint=endpoint, insecure=True, compression=compression)
    sdk = GrpcSpanExporter(endpoint=endpoint, insecure=True, compression=compression)
    assert ours.fast
    _export_with_both(ours, sdk, recorded)
    first, second = otlp_grpc_receiver.trace_requests
    assert first == second
    assert len(otlp_grpc_receiver.spans()) == 2 * len(recorded)


def test_grpc_unavailable_reconnects_and_retries_with_our_encoder(
    otlp_grpc_receiver: OTLPGrpcReceiver, recorded: list[ReadableSpan]
) -> None:
    # UNAVAILABLE makes the SDK rebuild its channel and client from its stub class: the new
    # client must still take our bytes.
    otlp_grpc_receiver.set_mode("error", status=503, retry_after=0.0, count=1)
    ours = FastGrpcOTLPSpanExporter(endpoint=otlp_grpc_receiver.endpoint, insecure=True, timeout=10)
    try:
        assert ours.export(recorded) is SpanExportResult.SUCCESS
    finally:
        ours.shutdown()
    assert [r.status for r in otlp_grpc_receiver.requests] == [503, 200]
    sdk_message = GrpcSpanExporter(endpoint="http://127.0.0.1:1", insecure=True)._translate_data(
        recorded
    )
    assert otlp_grpc_receiver.trace_requests == [sdk_message]


def test_a_mistagged_encoder_is_caught_by_the_wire_comparison(
    otlp_receiver: OTLPReceiver, recorded: list[ReadableSpan], monkeypatch: pytest.MonkeyPatch
) -> None:
    # The comparison above must be able to fail: with the start time written under the end
    # time's tag, the receiver still decodes the request, and it is no longer the SDK's.
    from chainsight.export import otlp_encode

    monkeypatch.setattr(otlp_encode, "_START", b"\x41")
    ours = FastOTLPSpanExporter(endpoint=otlp_receiver.traces_url)
    sdk = OTLPSpanExporter(endpoint=otlp_receiver.traces_url)
    _export_with_both(ours, sdk, recorded)
    first, second = otlp_receiver.trace_requests
    assert first != second
    span = first.resource_spans[0].scope_spans[0].spans[0]
    assert span.start_time_unix_nano == 0  # the start went into the end time's field
