"""OTLP metrics from the Prometheus registry, checked on the wire against real OTLP receivers.

Measurements go through chainsight's real request path (``chainsight.request``/``stage``) into
a fresh registry; the bridge's default OTLP exporter finds the receiver through the standard
``OTEL_EXPORTER_OTLP_*`` variables.
"""

from __future__ import annotations

import bisect
import time
from collections.abc import Iterator
from typing import Any

import pytest
from opentelemetry.sdk.resources import Resource
from prometheus_client import CollectorRegistry

import chainsight
from chainsight import _names as n
from chainsight.config import state as _config
from chainsight.export.metrics import Metrics, exposition_registry
from chainsight.export.otlp_metrics import PrometheusOTLPBridge
from tests.integration._servers import OTLPGrpcReceiver, OTLPReceiver

pytestmark = pytest.mark.integration

RESOURCE = Resource.create({n.SERVICE_NAME: "svc", n.DEPLOYMENT_ENVIRONMENT_NAME: "staging"})
_OTLP_ENV = (
    "OTEL_EXPORTER_OTLP_ENDPOINT",
    "OTEL_EXPORTER_OTLP_METRICS_ENDPOINT",
    "OTEL_EXPORTER_OTLP_PROTOCOL",
    "OTEL_EXPORTER_OTLP_METRICS_PROTOCOL",
)


@pytest.fixture
def metrics(monkeypatch: pytest.MonkeyPatch) -> Metrics:
    """chainsight configured on a fresh registry, spans exported nowhere; OTLP env cleared."""
    for name in _OTLP_ENV:
        monkeypatch.delenv(name, raising=False)
    chainsight.configure(registry=CollectorRegistry(), exporter="none", service="svc")
    return _config.current().metrics


@pytest.fixture
def bridges() -> Iterator[list[PrometheusOTLPBridge]]:
    """Bridges a test started; each is shut down at teardown."""
    started: list[PrometheusOTLPBridge] = []
    yield started
    for bridge in started:
        bridge.shutdown(timeout=1.0)


def _bridge(
    bridges: list[PrometheusOTLPBridge], metrics: Metrics, **kwargs: Any
) -> PrometheusOTLPBridge:
    bridge = PrometheusOTLPBridge(exposition_registry(metrics), resource=RESOURCE, **kwargs)
    bridges.append(bridge)
    return bridge


def _model_calls() -> None:
    """One successful and one timed-out chat call, each inside a request."""
    with (
        chainsight.request("answer"),
        chainsight.stage("model", provider="openai", model="gpt-4o"),
    ):
        pass
    with (
        pytest.raises(TimeoutError),
        chainsight.request("answer"),
        chainsight.stage("model", provider="openai", model="gpt-4o"),
    ):
        raise TimeoutError("provider did not answer")


def _check_operation_duration(metric: dict[str, Any]) -> None:
    assert metric["type"] == "histogram"
    assert metric["unit"] == "s"
    assert metric["scope"] == "chainsight"
    assert metric["resource"][n.SERVICE_NAME] == "svc"
    assert metric["resource"][n.DEPLOYMENT_ENVIRONMENT_NAME] == "staging"
    points = {p["attributes"].get(n.ERROR_TYPE): p for p in metric["data_points"]}
    assert set(points) == {None, n.ERR_TIMEOUT}
    for error_type, point in points.items():
        required = {
            n.GEN_AI_OPERATION_NAME: "chat",
            n.GEN_AI_PROVIDER_NAME: "openai",
            n.GEN_AI_REQUEST_MODEL: "gpt-4o",
        }
        if error_type is not None:
            required[n.ERROR_TYPE] = error_type
        assert point["attributes"] == required
        assert point["explicit_bounds"] == list(n.OPERATION_DURATION_BUCKETS)
        assert len(point["bucket_counts"]) == len(n.OPERATION_DURATION_BUCKETS) + 1
        assert point["count"] == 1
        assert sum(point["bucket_counts"]) == 1
        # One observation: its bucket is the one its value (the sum) falls in.
        index = bisect.bisect_left(n.OPERATION_DURATION_BUCKETS, point["sum"])
        assert point["bucket_counts"][index] == 1
        assert 0 < point["sum"] < 5
        assert point["min"] is None
        assert point["max"] is None
        assert point["time_unix_nano"] == pytest.approx(time.time_ns(), abs=60 * 10**9)


def test_operation_duration_arrives_over_otlp_http(
    otlp_receiver: OTLPReceiver,
    metrics: Metrics,
    bridges: list[PrometheusOTLPBridge],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_METRICS_ENDPOINT", otlp_receiver.metrics_url)
    bridge = _bridge(bridges, metrics)
    _model_calls()

    assert bridge.force_flush(timeout=10)

    _check_operation_duration(otlp_receiver.wait_for_metric("gen_ai.client.operation.duration"))
    requests = otlp_receiver.wait_for_metric("chainsight.requests")
    assert requests["type"] == "sum"
    assert requests["is_monotonic"] is True
    assert requests["unit"] == "{request}"
    by_outcome = {p["attributes"][n.L_OUTCOME]: p["value"] for p in requests["data_points"]}
    assert by_outcome == {n.OUTCOME_OK: 1.0, n.OUTCOME_ERROR: 1.0}
    assert [r.content_type for r in otlp_receiver.requests] == ["application/x-protobuf"]
    names = {m["name"] for m in otlp_receiver.metrics()}
    assert "chainsight.stage.duration" in names
    assert not any(name.startswith("chainsight_") for name in names)


def test_operation_duration_arrives_over_otlp_grpc(
    otlp_grpc_receiver: OTLPGrpcReceiver,
    metrics: Metrics,
    bridges: list[PrometheusOTLPBridge],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_METRICS_PROTOCOL", "grpc")
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", otlp_grpc_receiver.endpoint)
    bridge = _bridge(bridges, metrics)
    _model_calls()

    assert bridge.force_flush(timeout=10)

    _check_operation_duration(
        otlp_grpc_receiver.wait_for_metric("gen_ai.client.operation.duration")
    )


def test_shutdown_sends_what_was_recorded_since_the_last_export(
    otlp_receiver: OTLPReceiver, metrics: Metrics, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", otlp_receiver.endpoint)
    bridge = PrometheusOTLPBridge(exposition_registry(metrics), resource=RESOURCE)
    _model_calls()

    assert bridge.shutdown(timeout=10)

    _check_operation_duration(otlp_receiver.wait_for_metric("gen_ai.client.operation.duration"))


def test_a_receiver_that_is_down_counts_failures_and_never_raises(
    otlp_receiver: OTLPReceiver,
    metrics: Metrics,
    bridges: list[PrometheusOTLPBridge],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_METRICS_ENDPOINT", otlp_receiver.metrics_url)
    otlp_receiver.stop()  # the port now refuses connections

    bridge = _bridge(bridges, metrics, export_timeout=1.0, on_failure=metrics.metric_export_failed)
    _model_calls()
    points = sum(
        len(metric.data.data_points)
        for rm in bridge.collect().resource_metrics
        for sm in rm.scope_metrics
        for metric in sm.metrics
    )

    assert not bridge.force_flush(timeout=10)

    failed = metrics.registry.get_sample_value(
        f"{n.M_EXPORT_FAILURES}_total", {n.L_SIGNAL: "metrics"}
    )
    assert points > 1
    assert failed == 1  # one batch, whatever the number of points it held
    # The receiver comes back: the next export goes through, the count stays.
    otlp_receiver.start()
    assert bridge.force_flush(timeout=10)
    otlp_receiver.wait_for_metric("gen_ai.client.operation.duration")
    assert (
        metrics.registry.get_sample_value(f"{n.M_EXPORT_FAILURES}_total", {n.L_SIGNAL: "metrics"})
        == 1
    )


def test_configure_otlp_metrics_counts_each_refused_batch_once(
    otlp_receiver: OTLPReceiver, monkeypatch: pytest.MonkeyPatch
) -> None:
    # docs/metrics.md: chainsight_export_failures_total{signal="metrics"} counts batches. A
    # receiver that answers 405 to every push, through configure(otlp_metrics=True) as a user
    # turns it on; the hour-long interval leaves only the three exports the test asks for.
    for name in _OTLP_ENV:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_METRICS_ENDPOINT", otlp_receiver.metrics_url)
    monkeypatch.setenv("OTEL_METRIC_EXPORT_INTERVAL", "3600000")
    registry = CollectorRegistry()
    chainsight.configure(registry=registry, exporter="none", service="svc", otlp_metrics=True)
    bridge = _config.current().otlp_bridge
    assert bridge is not None
    _model_calls()
    otlp_receiver.set_mode("error", status=405)
    points = sum(
        len(metric.data.data_points)
        for rm in bridge.collect().resource_metrics
        for sm in rm.scope_metrics
        for metric in sm.metrics
    )

    for _ in range(3):
        assert not bridge.force_flush(timeout=10)

    assert otlp_receiver.request_count == 3  # a 405 is not retried: one request per batch
    failed = registry.get_sample_value(f"{n.M_EXPORT_FAILURES}_total", {n.L_SIGNAL: "metrics"})
    assert points > 3  # counting points (the old unit) would have given a different number
    assert failed == 3


@pytest.mark.slow
def test_shutdown_with_a_slow_receiver_returns_within_its_timeout(
    otlp_receiver: OTLPReceiver, metrics: Metrics, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_METRICS_ENDPOINT", otlp_receiver.metrics_url)
    bridge = PrometheusOTLPBridge(exposition_registry(metrics), resource=RESOURCE)
    _model_calls()
    otlp_receiver.set_mode("slow", delay=30.0)

    started = time.monotonic()
    finished = bridge.shutdown(timeout=1.0)
    elapsed = time.monotonic() - started

    assert not finished  # the export thread is still waiting on the receiver
    # Well before the exporter's own 5 s timeout, with room for a busy machine.
    assert elapsed < 3.0
    # Once the receiver is gone the exporter's own timeout ends the thread: nothing leaks.
    otlp_receiver.stop()
    assert bridge.shutdown(timeout=10)
