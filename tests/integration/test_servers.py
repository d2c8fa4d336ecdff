"""The real-server fixtures work with real clients.

OTel SDK exporters talk to the OTLP receivers, Prometheus scrapes a prometheus_client server,
redis-py talks to redis-server. If these fail, every other integration test is suspect.
"""

from __future__ import annotations

import base64
import gzip
import json
import socket
import subprocess
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import grpc  # type: ignore[import-untyped]
import pytest
from google.rpc import error_details_pb2, status_pb2  # type: ignore[import-untyped]
from hypothesis import given
from hypothesis import strategies as st
from opentelemetry.exporter.otlp.proto.common._internal import _encode_value
from opentelemetry.exporter.otlp.proto.grpc.metric_exporter import (
    OTLPMetricExporter as GrpcMetricExporter,
)
from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import (
    OTLPSpanExporter as GrpcSpanExporter,
)
from opentelemetry.exporter.otlp.proto.http import Compression
from opentelemetry.exporter.otlp.proto.http.metric_exporter import (
    OTLPMetricExporter as HttpMetricExporter,
)
from opentelemetry.exporter.otlp.proto.http.trace_exporter import (
    OTLPSpanExporter as HttpSpanExporter,
)
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2, trace_service_pb2_grpc
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import MetricExporter, PeriodicExportingMetricReader
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import (
    SimpleSpanProcessor,
    SpanExporter,
    SpanExportResult,
)
from opentelemetry.trace import SpanKind, Status, StatusCode
from prometheus_client import CollectorRegistry, Counter, start_http_server

from chainsight import _names as names
from tests.integration._servers import (
    OTLPGrpcReceiver,
    OTLPReceiver,
    PrometheusQueryError,
    PrometheusServer,
    RedisServer,
    ServerStartError,
    any_value_to_python,
    free_port,
    otlp_json_ids_to_base64,
    promtool,
    require_binary,
)

pytestmark = pytest.mark.integration

PrometheusFactory = Callable[..., PrometheusServer]
Receiver = OTLPReceiver | OTLPGrpcReceiver


# --- helpers ------------------------------------------------------------------------------------


def _emit_chain(exporter: SpanExporter) -> list[ReadableSpan]:
    """Send a root span with one model-call child through ``exporter``; return what was sent."""
    sent: list[ReadableSpan] = []

    class Recording(SimpleSpanProcessor):
        def on_end(self, span: ReadableSpan) -> None:
            sent.append(span)
            super().on_end(span)

    provider = TracerProvider(resource=Resource.create({names.SERVICE_NAME: "servers-test"}))
    provider.add_span_processor(Recording(exporter))
    tracer = provider.get_tracer("tests.integration")
    with tracer.start_as_current_span("invoke_workflow answer", kind=SpanKind.SERVER) as root:
        root.set_attribute(names.CS_STAGE_KIND, "request")
        with tracer.start_as_current_span("chat gpt-4o", kind=SpanKind.CLIENT) as child:
            child.set_attribute(names.GEN_AI_REQUEST_MODEL, "gpt-4o")
            child.set_attribute(names.GEN_AI_USAGE_INPUT_TOKENS, 42)
            child.set_attribute(names.CS_COST_USD, 0.0125)
            child.set_attribute(names.CS_VALIDATION_PASSED, False)
            child.set_attribute(names.GEN_AI_RESPONSE_FINISH_REASONS, ["stop", "length"])
            child.add_event(names.EVENT_FIRST_CHUNK, {"chunk": 1})
            child.set_status(Status(StatusCode.ERROR, "provider timed out"))
    provider.shutdown()
    return sent


def _assert_chain_decoded(receiver: Receiver, sent: list[ReadableSpan]) -> None:
    spans = {s["name"]: s for s in receiver.wait_for_spans(2)}
    assert set(spans) == {"invoke_workflow answer", "chat gpt-4o"}
    root, child = spans["invoke_workflow answer"], spans["chat gpt-4o"]
    sent_child = next(s for s in sent if s.name == "chat gpt-4o")
    assert sent_child.context is not None
    assert child["trace_id"] == f"{sent_child.context.trace_id:032x}"
    assert child["span_id"] == f"{sent_child.context.span_id:016x}"
    assert child["trace_id"] == root["trace_id"]
    assert child["parent_span_id"] == root["span_id"]
    assert root["parent_span_id"] is None
    assert (root["kind"], child["kind"]) == ("SERVER", "CLIENT")
    assert root["attributes"] == {names.CS_STAGE_KIND: "request"}
    assert child["attributes"] == {
        names.GEN_AI_REQUEST_MODEL: "gpt-4o",
        names.GEN_AI_USAGE_INPUT_TOKENS: 42,
        names.CS_COST_USD: 0.0125,
        names.CS_VALIDATION_PASSED: False,
        names.GEN_AI_RESPONSE_FINISH_REASONS: ["stop", "length"],
    }
    assert type(child["attributes"][names.GEN_AI_USAGE_INPUT_TOKENS]) is int
    assert (child["status_code"], child["status_message"]) == ("ERROR", "provider timed out")
    assert root["status_code"] == "UNSET"
    assert [(e["name"], e["attributes"]) for e in child["events"]] == [
        (names.EVENT_FIRST_CHUNK, {"chunk": 1})
    ]
    assert child["resource"][names.SERVICE_NAME] == "servers-test"
    assert child["scope"] == "tests.integration"


def _export_histogram(exporter: MetricExporter) -> None:
    provider = MeterProvider(
        metric_readers=[PeriodicExportingMetricReader(exporter, export_interval_millis=60_000)],
        resource=Resource.create({names.SERVICE_NAME: "servers-test"}),
    )
    histogram = provider.get_meter("tests.integration").create_histogram(
        names.M_GEN_AI_OPERATION_DURATION, unit="s", description="model call duration"
    )
    for value in (0.25, 0.5, 3.0):
        histogram.record(value, {names.L_GEN_AI_REQUEST_MODEL: "gpt-4o"})
    assert provider.force_flush(timeout_millis=10_000)
    provider.shutdown()


def _assert_histogram_arrived(receiver: Receiver) -> None:
    metric = receiver.wait_for_metric(names.M_GEN_AI_OPERATION_DURATION)
    assert metric["type"] == "histogram"
    assert metric["unit"] == "s"
    [point] = metric["data_points"]
    assert point["attributes"] == {names.L_GEN_AI_REQUEST_MODEL: "gpt-4o"}
    assert point["count"] == 3
    assert point["sum"] == pytest.approx(3.75)
    assert (point["min"], point["max"]) == (0.25, 3.0)
    assert sum(point["bucket_counts"]) == 3
    assert len(point["bucket_counts"]) == len(point["explicit_bounds"]) + 1
    assert len(receiver.metric_requests) >= 1


def _a_span() -> ReadableSpan:
    provider = TracerProvider()
    with provider.get_tracer("t").start_as_current_span("probe") as span:
        pass
    provider.shutdown()
    assert isinstance(span, ReadableSpan)
    return span


def _refused(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1):
            return False
    except ConnectionRefusedError:
        return True


def _post(url: str, body: bytes, headers: dict[str, str]) -> tuple[int, dict[str, str], bytes]:
    # Always our own loopback receiver over http://.
    request = urllib.request.Request(url, data=body, headers=headers, method="POST")  # noqa: S310
    try:
        with urllib.request.urlopen(request, timeout=5) as response:  # noqa: S310
            return response.status, dict(response.headers), response.read()
    except urllib.error.HTTPError as exc:
        with exc:
            return exc.code, dict(exc.headers), exc.read()


@pytest.fixture
def http_exporter(otlp_receiver: OTLPReceiver) -> Iterator[HttpSpanExporter]:
    """An OTLP/HTTP span exporter aimed at the receiver, with a 3 s export deadline."""
    exporter = HttpSpanExporter(endpoint=otlp_receiver.traces_url, timeout=3)
    yield exporter
    exporter.shutdown()  # type: ignore[no-untyped-call]


@pytest.fixture
def grpc_exporter(otlp_grpc_receiver: OTLPGrpcReceiver) -> Iterator[GrpcSpanExporter]:
    """An OTLP/gRPC span exporter aimed at the receiver, with a 3 s export deadline."""
    exporter = GrpcSpanExporter(endpoint=otlp_grpc_receiver.endpoint, timeout=3)
    yield exporter
    exporter.shutdown()


# --- OTLP/HTTP ----------------------------------------------------------------------------------


def test_http_receiver_decodes_spans_from_the_sdk_exporter(otlp_receiver: OTLPReceiver) -> None:
    sent = _emit_chain(HttpSpanExporter(endpoint=otlp_receiver.traces_url, timeout=5))
    _assert_chain_decoded(otlp_receiver, sent)
    assert {(r.signal, r.status, r.content_type) for r in otlp_receiver.requests} == {
        ("traces", 200, "application/x-protobuf")
    }


def test_http_receiver_decodes_gzip(otlp_receiver: OTLPReceiver) -> None:
    exporter = HttpSpanExporter(
        endpoint=otlp_receiver.traces_url, timeout=5, compression=Compression.Gzip
    )
    sent = _emit_chain(exporter)
    _assert_chain_decoded(otlp_receiver, sent)
    assert {r.content_encoding for r in otlp_receiver.requests} == {"gzip"}


def test_http_receiver_decodes_otlp_json_with_hex_ids(otlp_receiver: OTLPReceiver) -> None:
    trace_id, span_id = "5b8efff798038103d269b633813fc60c", "eee19b7ec3c1b174"
    body = {
        "resourceSpans": [
            {
                "resource": {
                    "attributes": [{"key": "service.name", "value": {"stringValue": "j"}}]
                },
                "scopeSpans": [
                    {
                        "spans": [
                            {
                                "traceId": trace_id,
                                "spanId": span_id,
                                "name": "retrieval docs",
                                "kind": 3,
                                "attributes": [{"key": "k", "value": {"intValue": "7"}}],
                            }
                        ]
                    }
                ],
            }
        ]
    }
    status, headers, answer = _post(
        otlp_receiver.traces_url,
        gzip.compress(json.dumps(body).encode()),
        {"Content-Type": "application/json", "Content-Encoding": "gzip"},
    )
    assert status == 200
    assert headers["Content-Type"] == "application/json"
    assert json.loads(answer) == {}
    [span] = otlp_receiver.spans()
    assert (span["trace_id"], span["span_id"], span["kind"]) == (trace_id, span_id, "CLIENT")
    assert span["attributes"] == {"k": 7}
    assert span["resource"] == {"service.name": "j"}


def test_http_receiver_rejects_undecodable_and_unknown_requests(
    otlp_receiver: OTLPReceiver,
) -> None:
    protobuf = {"Content-Type": "application/x-protobuf"}
    status, _, answer = _post(otlp_receiver.traces_url, b"\xff\xff\xff", protobuf)
    assert status == 400
    assert "undecodable" in status_pb2.Status.FromString(answer).message
    assert _post(f"{otlp_receiver.endpoint}/v1/nothing", b"", protobuf)[0] == 404
    assert _post(otlp_receiver.traces_url, b"x", {"Content-Type": "text/plain"})[0] == 415
    assert otlp_receiver.spans() == []


def test_http_receiver_receives_a_histogram(otlp_receiver: OTLPReceiver) -> None:
    _export_histogram(HttpMetricExporter(endpoint=otlp_receiver.metrics_url, timeout=5))
    _assert_histogram_arrived(otlp_receiver)


def test_http_stop_refuses_connections_and_start_reuses_the_port(
    otlp_receiver: OTLPReceiver, http_exporter: HttpSpanExporter
) -> None:
    port = otlp_receiver.port
    otlp_receiver.stop()
    assert _refused(port)
    exporter = HttpSpanExporter(endpoint=otlp_receiver.traces_url, timeout=1)
    started = time.monotonic()
    assert exporter.export([_a_span()]) is SpanExportResult.FAILURE
    assert time.monotonic() - started < 3
    exporter.shutdown()  # type: ignore[no-untyped-call]

    otlp_receiver.start()
    assert otlp_receiver.port == port
    assert http_exporter.export([_a_span()]) is SpanExportResult.SUCCESS
    assert [s["name"] for s in otlp_receiver.wait_for_spans(1)] == ["probe"]


def test_http_error_modes_follow_the_otlp_retry_rules(
    otlp_receiver: OTLPReceiver, http_exporter: HttpSpanExporter
) -> None:
    # 400 is permanent: one attempt, nothing stored.
    otlp_receiver.set_mode("error", status=400)
    assert http_exporter.export([_a_span()]) is SpanExportResult.FAILURE
    assert [(r.status, r.signal) for r in otlp_receiver.requests] == [(400, "traces")]
    assert otlp_receiver.spans() == []

    # 503 is retryable: the exporter tries again (Retry-After: 0) and the second attempt lands.
    otlp_receiver.clear()
    otlp_receiver.set_mode("error", status=503, retry_after=0, count=1)
    assert http_exporter.export([_a_span()]) is SpanExportResult.SUCCESS
    assert [r.status for r in otlp_receiver.requests] == [503, 200]
    assert len(otlp_receiver.spans()) == 1


def test_http_throttling_answers_429_with_retry_after_and_a_status_body(
    otlp_receiver: OTLPReceiver,
) -> None:
    otlp_receiver.set_mode("error", status=429)
    body = trace_service_pb2.ExportTraceServiceRequest().SerializeToString()
    status, headers, answer = _post(
        otlp_receiver.traces_url, body, {"Content-Type": "application/x-protobuf"}
    )
    assert status == 429
    assert headers["Retry-After"] == "1"
    assert headers["Content-Type"] == "application/x-protobuf"
    assert status_pb2.Status.FromString(answer).code == 429
    assert otlp_receiver.request_count == 1


@pytest.mark.slow
def test_http_slow_mode_makes_the_exporter_time_out(otlp_receiver: OTLPReceiver) -> None:
    otlp_receiver.set_mode("slow", delay=3.0)
    exporter = HttpSpanExporter(endpoint=otlp_receiver.traces_url, timeout=0.5)
    started = time.monotonic()
    assert exporter.export([_a_span()]) is SpanExportResult.FAILURE
    # It gave up before the answer came: well under the 3 s delay, with room for a busy machine.
    assert time.monotonic() - started < 2.5
    exporter.shutdown()  # type: ignore[no-untyped-call]
    otlp_receiver.set_mode("ok")
    # The slow answer was still accepted once its delay ran out, as a real collector would.
    assert [s["name"] for s in otlp_receiver.wait_for_spans(1, timeout=30)] == ["probe"]


def test_set_mode_rejects_bad_arguments(otlp_receiver: OTLPReceiver) -> None:
    with pytest.raises(ValueError, match="mode must be one of"):
        otlp_receiver.set_mode("broken")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="4xx or 5xx"):
        otlp_receiver.set_mode("error", status=200)
    with pytest.raises(ValueError, match="count"):
        otlp_receiver.set_mode("error", count=0)


def test_wait_for_spans_times_out_with_a_useful_message(otlp_receiver: OTLPReceiver) -> None:
    with pytest.raises(TimeoutError, match=r"expected at least 1 spans .* got 0"):
        otlp_receiver.wait_for_spans(1, timeout=0.2)


# --- OTLP/gRPC ----------------------------------------------------------------------------------


def test_grpc_receiver_decodes_spans_from_the_sdk_exporter(
    otlp_grpc_receiver: OTLPGrpcReceiver,
) -> None:
    sent = _emit_chain(GrpcSpanExporter(endpoint=otlp_grpc_receiver.endpoint, timeout=5))
    _assert_chain_decoded(otlp_grpc_receiver, sent)
    assert {(r.signal, r.status) for r in otlp_grpc_receiver.requests} == {("traces", 200)}


def test_grpc_receiver_receives_a_histogram(otlp_grpc_receiver: OTLPGrpcReceiver) -> None:
    _export_histogram(GrpcMetricExporter(endpoint=otlp_grpc_receiver.endpoint, timeout=5))
    _assert_histogram_arrived(otlp_grpc_receiver)


def test_grpc_stop_fails_exports_fast_and_start_reuses_the_port(
    otlp_grpc_receiver: OTLPGrpcReceiver, grpc_exporter: GrpcSpanExporter
) -> None:
    port = otlp_grpc_receiver.port
    assert grpc_exporter.export([_a_span()]) is SpanExportResult.SUCCESS
    otlp_grpc_receiver.stop()
    assert _refused(port)
    exporter = GrpcSpanExporter(endpoint=otlp_grpc_receiver.endpoint, timeout=1)
    started = time.monotonic()
    assert exporter.export([_a_span()]) is SpanExportResult.FAILURE
    assert time.monotonic() - started < 3
    exporter.shutdown()

    otlp_grpc_receiver.start()
    assert otlp_grpc_receiver.port == port
    assert grpc_exporter.export([_a_span()]) is SpanExportResult.SUCCESS
    assert len(otlp_grpc_receiver.wait_for_spans(2)) == 2


def test_grpc_error_modes_follow_the_otlp_retry_rules(
    otlp_grpc_receiver: OTLPGrpcReceiver, grpc_exporter: GrpcSpanExporter
) -> None:
    # INVALID_ARGUMENT is permanent: one attempt.
    otlp_grpc_receiver.set_mode("error", status=400)
    assert grpc_exporter.export([_a_span()]) is SpanExportResult.FAILURE
    assert [r.status for r in otlp_grpc_receiver.requests] == [400]

    # RESOURCE_EXHAUSTED with RetryInfo is retryable after the delay it carries.
    otlp_grpc_receiver.clear()
    otlp_grpc_receiver.set_mode("error", status=429, retry_after=0.1, count=1)
    assert grpc_exporter.export([_a_span()]) is SpanExportResult.SUCCESS
    assert [r.status for r in otlp_grpc_receiver.requests] == [429, 200]
    assert len(otlp_grpc_receiver.spans()) == 1


def test_grpc_error_mode_sends_the_mapped_code_and_retry_info(
    otlp_grpc_receiver: OTLPGrpcReceiver,
) -> None:
    otlp_grpc_receiver.set_mode("error", status=429, retry_after=1.5)
    with grpc.insecure_channel(f"127.0.0.1:{otlp_grpc_receiver.port}") as channel:
        stub = trace_service_pb2_grpc.TraceServiceStub(channel)  # type: ignore[no-untyped-call]
        with pytest.raises(grpc.RpcError) as caught:
            stub.Export(trace_service_pb2.ExportTraceServiceRequest(), timeout=5)
    error: Any = caught.value
    assert error.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    info = error_details_pb2.RetryInfo.FromString(
        dict(error.trailing_metadata())["google.rpc.retryinfo-bin"]
    )
    assert (info.retry_delay.seconds, info.retry_delay.nanos) == (1, 500_000_000)


# --- Prometheus ---------------------------------------------------------------------------------


@pytest.fixture
def client_target() -> Iterator[tuple[str, CollectorRegistry]]:
    """A prometheus_client /metrics server on a free loopback port."""
    registry = CollectorRegistry()
    port = free_port()
    server, thread = start_http_server(port, addr="127.0.0.1", registry=registry)
    yield f"127.0.0.1:{port}", registry
    server.shutdown()
    server.server_close()
    thread.join(timeout=5)


@pytest.mark.slow
def test_prometheus_scrapes_a_client_and_evaluates_rules(
    prometheus_server: PrometheusFactory,
    client_target: tuple[str, CollectorRegistry],
    tmp_path: Path,
) -> None:
    target, registry = client_target
    requests = Counter(
        names.M_REQUESTS, "requests", [names.L_OUTCOME, names.L_FAULT], registry=registry
    )
    requests.labels(names.OUTCOME_OK, names.NO_FAULT).inc(7)
    requests.labels(names.OUTCOME_ERROR, names.FAULT_PROVIDER).inc(2)
    rules = tmp_path / "rules.yml"
    rules.write_text(
        "groups:\n- name: t\n  rules:\n  - alert: ChainsightErrors\n"
        f'    expr: sum({names.M_REQUESTS}_total{{outcome="error"}}) > 1\n'
        "    labels: {severity: page}\n"
    )
    prom = prometheus_server([target], rule_files=[rules])
    assert prom.url.startswith("http://127.0.0.1:")
    assert not prom.url.endswith(":9090")
    prom.wait_for_scrapes(n=2, timeout=20)

    total = f"{names.M_REQUESTS}_total"
    assert prom.query_scalar(f'{total}{{outcome="ok"}}') == 7.0
    assert prom.query_scalar(f"sum({total})") == 9.0
    assert prom.query_scalar(f'{total}{{outcome="nope"}}') is None
    series = prom.query(total)
    assert {(s["metric"][names.L_FAULT], s["value"][1]) for s in series} == {
        (names.NO_FAULT, "7"),
        (names.FAULT_PROVIDER, "2"),
    }
    assert prom.query("1 + 1") == [
        {"metric": {}, "value": [pytest.approx(time.time(), abs=60), "2"]}
    ]
    with pytest.raises(PrometheusQueryError, match="2 series"):
        prom.query_scalar(total)
    with pytest.raises(PrometheusQueryError, match="bad_data"):
        prom.query("sum(")

    alert = prom.wait_for_alert("ChainsightErrors", timeout=15)
    assert alert["labels"]["severity"] == "page"
    assert [a["labels"]["alertname"] for a in prom.alerts()] == ["ChainsightErrors"]


def test_prometheus_that_cannot_start_reports_its_log(
    prometheus_server: PrometheusFactory, tmp_path: Path
) -> None:
    broken = tmp_path / "broken.yml"
    broken.write_text("groups:\n- name: t\n  rules:\n  - alert: X\n    expr: sum(\n")
    with pytest.raises(ServerStartError, match="log tail") as caught:
        prometheus_server(["127.0.0.1:1"], rule_files=[broken])
    assert "broken.yml" in str(caught.value)


def test_promtool_checks_rules_and_metrics(tmp_path: Path) -> None:
    good = tmp_path / "good.yml"
    good.write_text("groups:\n- name: t\n  rules:\n  - record: job:up:sum\n    expr: sum(up)\n")
    bad = tmp_path / "bad.yml"
    bad.write_text("groups:\n- name: t\n  rules:\n  - record: x\n    expr: sum(\n")
    assert promtool("check", "rules", str(good)).returncode == 0
    rejected = promtool("check", "rules", str(bad))
    assert rejected.returncode != 0
    assert "bad.yml" in rejected.stdout + rejected.stderr

    page = (
        "# HELP chainsight_ok_total Fine.\n"
        "# TYPE chainsight_ok_total counter\n"
        "chainsight_ok_total 1\n"
    )
    assert promtool("check", "metrics", input=page).returncode == 0
    linted = promtool("check", "metrics", input="# TYPE bad_ms counter\nbad_ms 1\n")
    assert linted.returncode != 0


# --- Redis --------------------------------------------------------------------------------------


def test_redis_kill_and_restart_on_the_same_port(redis_server: RedisServer) -> None:
    assert redis_server.url == f"redis://127.0.0.1:{redis_server.port}/0"
    assert redis_server.port != 6379
    client = redis_server.client()
    try:
        client.set("spent", "1.5")
        assert client.get("spent") == b"1.5"
        pid = redis_server.pid
        assert pid is not None

        redis_server.kill()
        pid_after_kill = redis_server.pid
        assert pid_after_kill is None
        assert not redis_server.ping()
        assert _refused(redis_server.port)

        redis_server.start()
        assert redis_server.ping()
        assert redis_server.pid not in (None, pid)
        # No persistence: a restart loses everything, as the budget store's tests expect.
        assert client.get("spent") is None
    finally:
        client.close()


# --- plain helpers ------------------------------------------------------------------------------


def test_free_port_can_be_bound() -> None:
    port = free_port()
    assert 1024 <= port <= 65535
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", port))


def test_require_binary_finds_skips_or_fails(monkeypatch: pytest.MonkeyPatch) -> None:
    assert Path(require_binary("sh")).name == "sh"
    missing = "chainsight-no-such-binary"
    monkeypatch.delenv("CI", raising=False)
    with pytest.raises(pytest.skip.Exception, match=f"{missing}.*make servers"):
        require_binary(missing)
    monkeypatch.setenv("CI", "true")
    with pytest.raises(pytest.fail.Exception, match="CI is set"):
        require_binary(missing)


def test_redis_that_cannot_start_reports_its_log(tmp_path: Path) -> None:
    # A port already held by a listener: redis-server exits, and the error carries its log.
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        server = RedisServer(tmp_path, port=holder.getsockname()[1])
        with pytest.raises(ServerStartError, match=r"(?i)address already in use"):
            server.start(timeout=5)
        server.stop()


_scalars = (
    st.none()
    | st.booleans()
    | st.text()
    | st.integers(min_value=-(2**63), max_value=2**63 - 1)
    | st.floats(allow_nan=False)
    | st.binary()
)
_values = st.recursive(
    _scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(), inner, max_size=4),
    max_leaves=12,
)


def _typed(value: Any) -> Any:
    """The value with every leaf tagged by its type, so True and 1 do not compare equal."""
    if isinstance(value, list):
        return ["list", [_typed(v) for v in value]]
    if isinstance(value, dict):
        return ["dict", {k: _typed(v) for k, v in value.items()}]
    return [type(value).__name__, value]


@given(_values)
def test_any_value_to_python_inverts_the_sdk_encoder(value: Any) -> None:
    # The SDK's own encoder is the reference for what arrives on the wire.
    assert _typed(any_value_to_python(_encode_value(value))) == _typed(value)


@given(st.binary(min_size=1, max_size=16), st.binary(min_size=1, max_size=8))
def test_otlp_json_ids_become_the_bytes_they_name(trace_id: bytes, span_id: bytes) -> None:
    tree = {"spans": [{"traceId": trace_id.hex(), "spanId": span_id.hex(), "name": "n"}]}
    [span] = otlp_json_ids_to_base64(tree)["spans"]
    assert base64.b64decode(span["traceId"]) == trace_id
    assert base64.b64decode(span["spanId"]) == span_id
    assert span["name"] == "n"


def test_promtool_helper_returns_the_completed_process() -> None:
    result = promtool("--version")
    assert isinstance(result, subprocess.CompletedProcess)
    assert result.returncode == 0
    assert "promtool" in (result.stdout + result.stderr).lower()
