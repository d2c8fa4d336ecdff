"""The Prometheus → OTLP metrics bridge: conversion of known observations, and the export thread.

Conversion is checked against a fresh ``CollectorRegistry`` holding chainsight's real metric
families; the thread is checked with a recording ``MetricExporter`` that can fail, raise or hang.
What arrives on the wire is checked in ``tests/integration/test_otlp_metrics.py``.
"""

from __future__ import annotations

import bisect
import math
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Iterator
from itertools import accumulate
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from opentelemetry.exporter.otlp.proto.grpc.metric_exporter import (
    OTLPMetricExporter as GrpcMetricExporter,
)
from opentelemetry.exporter.otlp.proto.http.metric_exporter import (
    OTLPMetricExporter as HttpMetricExporter,
)
from opentelemetry.sdk.metrics.export import (
    AggregationTemporality,
    Histogram,
    HistogramDataPoint,
    Metric,
    MetricExporter,
    MetricExportResult,
    MetricsData,
    NumberDataPoint,
    Sum,
)
from opentelemetry.sdk.resources import Resource
from prometheus_client import CollectorRegistry
from prometheus_client import Histogram as PromHistogram
from prometheus_client.core import HistogramMetricFamily
from prometheus_client.registry import Collector

from chainsight import _names as n
from chainsight.errors import ConfigurationError
from chainsight.export.metrics import Metrics, exposition_registry
from chainsight.export.otlp_convert import (
    EXPORTED_FAMILIES,
    convert_families,
    count_points,
    per_bucket_counts,
)
from chainsight.export.otlp_metrics import PrometheusOTLPBridge

RESOURCE = Resource.create({n.SERVICE_NAME: "svc", n.DEPLOYMENT_ENVIRONMENT_NAME: "test"})
TRACE_ID = "0af7651916cd43dd8448eb211c80319c"
SPAN_ID = "b7ad6b7169203331"


class RecordingExporter(MetricExporter):
    """Keeps what it is given; answers ``result``, raises ``error``, or blocks until released."""

    def __init__(self) -> None:
        super().__init__()
        self.batches: list[MetricsData] = []
        self.result = MetricExportResult.SUCCESS
        self.error: Exception | None = None
        self.hang = threading.Event()
        self.release = threading.Event()
        self.exported = threading.Event()
        self.shutdown_calls = 0

    def export(
        self, metrics_data: MetricsData, timeout_millis: float = 10_000, **kwargs: Any
    ) -> MetricExportResult:
        if self.hang.is_set():
            self.release.wait(30)
        if self.error is not None:
            raise self.error
        self.batches.append(metrics_data)
        self.exported.set()
        return self.result

    def force_flush(self, timeout_millis: float = 10_000) -> bool:
        return True

    def shutdown(self, timeout_millis: float = 30_000, **kwargs: Any) -> None:
        self.shutdown_calls += 1


@pytest.fixture
def metrics() -> Metrics:
    return Metrics(CollectorRegistry(), None)


@pytest.fixture
def exporter() -> Iterator[RecordingExporter]:
    found = RecordingExporter()
    yield found
    found.release.set()  # let a deliberately hung export thread finish


@pytest.fixture
def bridges() -> Iterator[list[PrometheusOTLPBridge]]:
    """Bridges a test started; each is shut down at teardown."""
    started: list[PrometheusOTLPBridge] = []
    yield started
    for bridge in started:
        bridge.shutdown(timeout=1.0)


def _convert(registry: CollectorRegistry, start: int = 1) -> dict[str, Metric]:
    data = convert_families(
        registry.collect(),
        resource=RESOURCE,
        start_time_unix_nano=start,
        time_unix_nano=time.time_ns(),
    )
    [resource_metrics] = data.resource_metrics
    assert resource_metrics.resource is RESOURCE
    if not resource_metrics.scope_metrics:
        return {}
    [scope] = resource_metrics.scope_metrics
    assert scope.scope.name == "chainsight"
    return {metric.name: metric for metric in scope.metrics}


def _histogram_points(metric: Metric) -> list[HistogramDataPoint]:
    assert isinstance(metric.data, Histogram)
    assert metric.data.aggregation_temporality is AggregationTemporality.CUMULATIVE
    return list(metric.data.data_points)


def _sum_points(metric: Metric) -> list[NumberDataPoint]:
    assert isinstance(metric.data, Sum)
    assert metric.data.aggregation_temporality is AggregationTemporality.CUMULATIVE
    assert metric.data.is_monotonic
    return list(metric.data.data_points)


def _attrs(point: NumberDataPoint | HistogramDataPoint) -> dict[str, Any]:
    return dict(point.attributes or {})


def _by_attributes(points: list[Any]) -> dict[frozenset[tuple[str, Any]], Any]:
    return {frozenset(_attrs(p).items()): p for p in points}


# --- conversion ----------------------------------------------------------------------------


def test_operation_duration_becomes_the_semconv_histogram(metrics: Metrics) -> None:
    before = time.time_ns()
    answered = "gpt-4o-2024-08-06"
    ok = metrics.gen_ai_duration.labels("chat", "openai", "gpt-4o", answered, "")
    for value in (0.005, 0.01, 0.015, 0.5, 100.0):
        ok.observe(value)
    metrics.gen_ai_duration.labels("chat", "openai", "gpt-4o", "", n.ERR_TIMEOUT).observe(3.0)
    after = time.time_ns()

    metric = _convert(metrics.registry)["gen_ai.client.operation.duration"]

    assert metric.unit == "s"
    assert metric.description
    points = _by_attributes(_histogram_points(metric))
    base = {
        n.GEN_AI_OPERATION_NAME: "chat",
        n.GEN_AI_PROVIDER_NAME: "openai",
        n.GEN_AI_REQUEST_MODEL: "gpt-4o",
    }
    # The response model becomes gen_ai.response.model; empty labels (error_type on success,
    # no response model on the timeout) become no attribute at all.
    answered_attrs = frozenset({**base, n.GEN_AI_RESPONSE_MODEL: answered}.items())
    assert set(points) == {
        answered_attrs,
        frozenset({**base, n.ERROR_TYPE: n.ERR_TIMEOUT}.items()),
    }
    point = points[answered_attrs]
    assert list(point.explicit_bounds) == list(n.OPERATION_DURATION_BUCKETS)
    assert len(point.bucket_counts) == len(n.OPERATION_DURATION_BUCKETS) + 1
    # Per bucket (upper bound inclusive): 0.005 and 0.01 ≤ 0.01; 0.015 ≤ 0.02; 0.5 ≤ 0.64;
    # 100 only in the +Inf bucket.
    assert list(point.bucket_counts) == [2, 1, 0, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 1]
    assert point.count == 5
    assert point.sum == pytest.approx(100.53)
    assert point.min is None
    assert point.max is None
    # Start time from the series' _created sample, not the caller's fallback.
    assert before - 1_000_000 <= point.start_time_unix_nano <= after + 1_000_000
    assert point.time_unix_nano >= point.start_time_unix_nano
    failed = points[frozenset({**base, n.ERROR_TYPE: n.ERR_TIMEOUT}.items())]
    assert failed.count == 1
    assert list(failed.bucket_counts)[9] == 1  # 3.0 falls in (2.56, 5.12]


def test_token_usage_and_time_to_first_chunk(metrics: Metrics) -> None:
    metrics.gen_ai_tokens.labels("chat", "openai", "gpt-4o", "", n.TOKEN_INPUT).observe(1000)
    metrics.gen_ai_tokens.labels("chat", "openai", "gpt-4o", "", n.TOKEN_OUTPUT).observe(3)
    metrics.gen_ai_ttfc.labels("chat", "openai", "gpt-4o", "").observe(0.3)

    converted = _convert(metrics.registry)

    tokens = converted["gen_ai.client.token.usage"]
    assert tokens.unit == "{token}"
    points = {_attrs(p)["gen_ai.token.type"]: p for p in _histogram_points(tokens)}
    assert set(points) == {n.TOKEN_INPUT, n.TOKEN_OUTPUT}
    assert list(points[n.TOKEN_INPUT].explicit_bounds) == [float(b) for b in n.TOKEN_USAGE_BUCKETS]
    assert points[n.TOKEN_INPUT].bucket_counts[5] == 1  # 1000 in (256, 1024]
    assert points[n.TOKEN_OUTPUT].bucket_counts[1] == 1  # 3 in (1, 4]
    assert _attrs(points[n.TOKEN_INPUT])[n.GEN_AI_PROVIDER_NAME] == "openai"

    ttfc = converted["gen_ai.client.operation.time_to_first_chunk"]
    assert ttfc.unit == "s"
    [point] = _histogram_points(ttfc)
    assert point.sum == pytest.approx(0.3)
    assert _attrs(point) == {
        n.GEN_AI_OPERATION_NAME: "chat",
        n.GEN_AI_PROVIDER_NAME: "openai",
        n.GEN_AI_REQUEST_MODEL: "gpt-4o",
    }


def test_chainsight_counters_become_monotonic_sums_with_their_label_names(
    metrics: Metrics,
) -> None:
    requests = metrics.requests.labels("answer", "copilot", "error", "vector_store", "r1")
    requests.inc(3)
    metrics.cost.labels("openai", "gpt-4o", "copilot", "acme", "").inc(0.0125)
    metrics.tokens.labels("openai", "gpt-4o", n.TOKEN_INPUT, "copilot", "acme").inc(1200)
    metrics.stage_errors.labels("search", "retrieval", "qdrant", "vector_store", "timeout").inc()
    metrics.fallbacks.labels("llm", "model", "gpt-4o-mini", "rate_limited").inc(2)

    converted = _convert(metrics.registry)

    [point] = _sum_points(converted["chainsight.requests"])
    assert converted["chainsight.requests"].unit == "{request}"
    assert point.value == 3
    assert _attrs(point) == {
        n.L_REQUEST: "answer",
        n.L_FEATURE: "copilot",
        n.L_OUTCOME: "error",
        n.L_FAULT: "vector_store",
        n.L_RELEASE: "r1",
    }
    [cost] = _sum_points(converted["chainsight.cost"])
    assert converted["chainsight.cost"].unit == "USD"
    assert cost.value == pytest.approx(0.0125)
    assert n.L_TEAM not in _attrs(cost)  # empty label value: no attribute
    [tokens] = _sum_points(converted["chainsight.tokens"])
    assert converted["chainsight.tokens"].unit == "{token}"
    assert (tokens.value, _attrs(tokens)[n.L_TOKEN_TYPE]) == (1200, n.TOKEN_INPUT)
    [errors] = _sum_points(converted["chainsight.stage.errors"])
    assert _attrs(errors)[n.L_ERROR_TYPE] == "timeout"
    [fallbacks] = _sum_points(converted["chainsight.fallbacks"])
    assert (fallbacks.value, _attrs(fallbacks)[n.L_TO]) == (2, "gpt-4o-mini")


def test_only_the_documented_families_are_exported(metrics: Metrics) -> None:
    metrics.request_duration.labels("answer", "ok", "r1").observe(1.2)
    metrics.stage_duration.labels("search", "retrieval", "qdrant", "ok", "r1").observe(0.2)
    metrics.gen_ai_duration.labels("chat", "openai", "gpt-4o", "", "").observe(1)
    metrics.gen_ai_tokens.labels("chat", "openai", "gpt-4o", "", "input").observe(1)
    metrics.gen_ai_ttfc.labels("chat", "openai", "gpt-4o", "").observe(1)
    metrics.requests.labels("answer", "", "ok", "none", "r1").inc()
    metrics.stage_errors.labels("s", "k", "x", "app", "e").inc()
    metrics.fallbacks.labels("s", "k", "t", "r").inc()
    metrics.tokens.labels("p", "m", "input", "", "").inc()
    metrics.cost.labels("p", "m", "", "", "").inc(1)
    # Families that stay Prometheus-only.
    metrics.request_cost.labels("answer", "").observe(0.01)
    metrics.retrieval_documents.labels("search", "qdrant").observe(3)
    metrics.in_flight.labels("answer").inc()
    metrics.internal_error("somewhere")
    metrics.span_export_failed(2)
    metrics.set_release("r1", {"model": "gpt-4o"}, service="svc", environment="test")

    converted = _convert(metrics.registry)

    assert set(converted) == {mapping.name for mapping in EXPORTED_FAMILIES.values()}
    assert converted["chainsight.request.duration"].unit == "s"
    [stage] = _histogram_points(converted["chainsight.stage.duration"])
    assert list(stage.explicit_bounds) == list(n.LATENCY_BUCKETS)
    assert _attrs(stage)[n.L_SYSTEM] == "qdrant"


def test_an_empty_registry_converts_to_no_metrics(metrics: Metrics) -> None:
    assert _convert(metrics.registry) == {}
    assert count_points(_empty_data(metrics)) == 0


def _empty_data(metrics: Metrics) -> MetricsData:
    return convert_families(
        metrics.registry.collect(), resource=RESOURCE, start_time_unix_nano=1, time_unix_nano=2
    )


class _NoCreatedCollector(Collector):
    """A histogram family as multiprocess mode reports it: no _created sample."""

    def collect(self) -> Iterator[HistogramMetricFamily]:
        family = HistogramMetricFamily(n.M_STAGE_DURATION, "Stage duration.", labels=["stage"])
        family.add_metric(["search"], [("0.1", 2.0), ("1.0", 5.0), ("+Inf", 6.0)], 7.5)
        yield family


def test_series_without_created_start_at_the_given_start_time() -> None:
    registry = CollectorRegistry()
    registry.register(_NoCreatedCollector())

    [point] = _histogram_points(_convert(registry, start=12345)["chainsight.stage.duration"])

    assert point.start_time_unix_nano == 12345
    assert list(point.explicit_bounds) == [0.1, 1.0]
    assert list(point.bucket_counts) == [2, 3, 1]
    assert (point.count, point.sum) == (6, 7.5)


def test_exemplars_carry_the_trace_and_span_ids(metrics: Metrics) -> None:
    exemplar = {"trace_id": TRACE_ID, "span_id": SPAN_ID}
    metrics.gen_ai_duration.labels("chat", "openai", "gpt-4o", "", "").observe(0.5, exemplar)

    [point] = _histogram_points(_convert(metrics.registry)["gen_ai.client.operation.duration"])

    [found] = point.exemplars
    assert found.trace_id == int(TRACE_ID, 16)
    assert found.span_id == int(SPAN_ID, 16)
    assert found.value == 0.5
    assert dict(found.filtered_attributes or {}) == {}
    assert abs(found.time_unix_nano - time.time_ns()) < 60 * 10**9


@given(st.lists(st.integers(min_value=0, max_value=10**9), min_size=1, max_size=30))
def test_per_bucket_counts_inverts_the_cumulative_sum(counts: list[int]) -> None:
    cumulative = [float(c) for c in accumulate(counts)]
    assert per_bucket_counts(cumulative) == counts


@given(
    st.lists(
        st.floats(min_value=0, max_value=200, allow_nan=False, allow_infinity=False),
        max_size=50,
    )
)
def test_histogram_conversion_puts_each_observation_in_its_bucket(values: list[float]) -> None:
    registry = CollectorRegistry()
    family = PromHistogram(
        n.M_GEN_AI_OPERATION_DURATION,
        "GenAI operation duration.",
        [n.L_GEN_AI_OPERATION_NAME],
        registry=registry,
        buckets=n.OPERATION_DURATION_BUCKETS,
    )
    child = family.labels("chat")
    for value in values:
        child.observe(value)

    [point] = _histogram_points(_convert(registry)["gen_ai.client.operation.duration"])

    # OTLP buckets are (bound[i-1], bound[i]]: bisect_left finds that index independently.
    expected = [0] * (len(n.OPERATION_DURATION_BUCKETS) + 1)
    for value in values:
        expected[bisect.bisect_left(n.OPERATION_DURATION_BUCKETS, value)] += 1
    assert list(point.bucket_counts) == expected
    assert point.count == len(values)
    assert point.sum == pytest.approx(math.fsum(values))


# --- multiprocess mode ---------------------------------------------------------------------

_WORKER = textwrap.dedent(
    """
    import sys
    from prometheus_client import CollectorRegistry
    from chainsight.export.metrics import Metrics

    metrics = Metrics(CollectorRegistry(), None)
    metrics.requests.labels("answer", "", "ok", "none", "r1").inc(int(sys.argv[1]))
    metrics.gen_ai_duration.labels("chat", "openai", "gpt-4o", "", "").observe(float(sys.argv[2]))
    """
)


def test_multiprocess_mode_exports_the_sum_of_every_worker(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # prometheus-client picks its multiprocess value class at import, so real workers are
    # separate processes, as under gunicorn.
    env = {"PROMETHEUS_MULTIPROC_DIR": str(tmp_path), "PATH": "/usr/bin:/bin"}
    for count, seconds in (("2", "0.03"), ("5", "1.0")):
        subprocess.run(
            [sys.executable, "-c", _WORKER, count, seconds], env=env, check=True, timeout=60
        )
    monkeypatch.setenv(n.ENV_MULTIPROC_DIR, str(tmp_path))
    registry = exposition_registry(Metrics(CollectorRegistry(), None))

    converted = _convert(registry, start=777)

    [requests] = _sum_points(converted["chainsight.requests"])
    assert requests.value == 7
    assert requests.start_time_unix_nano == 777
    [duration] = _histogram_points(converted["gen_ai.client.operation.duration"])
    assert duration.count == 2
    assert duration.sum == pytest.approx(1.03)
    assert duration.bucket_counts[2] == 1  # 0.03 in (0.02, 0.04]
    assert duration.bucket_counts[7] == 1  # 1.0 in (0.64, 1.28]


# --- the export thread ---------------------------------------------------------------------


def _bridge(
    bridges: list[PrometheusOTLPBridge], metrics: Metrics, exporter: MetricExporter, **kw: Any
) -> PrometheusOTLPBridge:
    bridge = PrometheusOTLPBridge(metrics.registry, resource=RESOURCE, exporter=exporter, **kw)
    bridges.append(bridge)
    return bridge


def test_force_flush_exports_what_was_recorded(
    metrics: Metrics, exporter: RecordingExporter, bridges: list[PrometheusOTLPBridge]
) -> None:
    bridge = _bridge(bridges, metrics, exporter)
    metrics.requests.labels("answer", "", "ok", "none", "r1").inc()

    assert bridge.force_flush(timeout=5)

    [batch] = exporter.batches
    [resource_metrics] = batch.resource_metrics
    assert dict(resource_metrics.resource.attributes)[n.DEPLOYMENT_ENVIRONMENT_NAME] == "test"
    assert count_points(batch) == 1
    assert bridge.interval == 60.0  # the default: nothing else was exported meanwhile


def test_periodic_export_runs_without_a_flush(
    metrics: Metrics, exporter: RecordingExporter, bridges: list[PrometheusOTLPBridge]
) -> None:
    metrics.requests.labels("answer", "", "ok", "none", "r1").inc()
    _bridge(bridges, metrics, exporter, interval=0.05)

    assert exporter.exported.wait(5)
    deadline = time.monotonic() + 5
    while len(exporter.batches) < 2 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert len(exporter.batches) >= 2


def test_nothing_is_exported_while_nothing_was_recorded(
    metrics: Metrics, exporter: RecordingExporter, bridges: list[PrometheusOTLPBridge]
) -> None:
    bridge = _bridge(bridges, metrics, exporter)

    assert bridge.force_flush(timeout=5)

    assert exporter.batches == []


@pytest.mark.parametrize("mode", ["failure", "exception"])
def test_failed_exports_are_counted_and_never_raise(
    mode: str,
    metrics: Metrics,
    exporter: RecordingExporter,
    bridges: list[PrometheusOTLPBridge],
) -> None:
    if mode == "failure":
        exporter.result = MetricExportResult.FAILURE
    else:
        exporter.error = RuntimeError("exporter bug")
    lost: list[int] = []
    bridge = _bridge(bridges, metrics, exporter, on_failure=lost.append)
    metrics.requests.labels("answer", "", "ok", "none", "r1").inc()
    metrics.gen_ai_duration.labels("chat", "openai", "gpt-4o", "", "").observe(1)

    assert not bridge.force_flush(timeout=5)
    assert not bridge.force_flush(timeout=5)

    assert lost == [2, 2]


class _BrokenCollector(Collector):
    """A collector whose collect() fails, as a buggy custom collector in the registry would."""

    def collect(self) -> Iterator[Any]:
        raise RuntimeError("collector bug")


def test_a_registry_that_cannot_be_read_counts_one_failed_batch_per_export(
    metrics: Metrics, exporter: RecordingExporter, bridges: list[PrometheusOTLPBridge]
) -> None:
    metrics.registry.register(_BrokenCollector())
    bridge = _bridge(bridges, metrics, exporter, on_failure=metrics.metric_export_failed)
    metrics.requests.labels("answer", "", "ok", "none", "r1").inc()

    assert not bridge.force_flush(timeout=5)
    assert not bridge.force_flush(timeout=5)

    assert exporter.batches == []
    assert (
        metrics.registry.get_sample_value(f"{n.M_EXPORT_FAILURES}_total", {n.L_SIGNAL: "metrics"})
        == 2
    )


def test_a_raising_failure_callback_does_not_stop_the_thread(
    metrics: Metrics, exporter: RecordingExporter, bridges: list[PrometheusOTLPBridge]
) -> None:
    def broken(_points: int) -> None:
        raise RuntimeError("callback bug")

    exporter.result = MetricExportResult.FAILURE
    bridge = _bridge(bridges, metrics, exporter, on_failure=broken)
    metrics.requests.labels("answer", "", "ok", "none", "r1").inc()

    assert not bridge.force_flush(timeout=5)
    exporter.result = MetricExportResult.SUCCESS
    assert bridge.force_flush(timeout=5)


def test_shutdown_exports_once_more_and_shuts_the_exporter_down(
    metrics: Metrics, exporter: RecordingExporter
) -> None:
    bridge = PrometheusOTLPBridge(metrics.registry, resource=RESOURCE, exporter=exporter)
    metrics.requests.labels("answer", "", "ok", "none", "r1").inc()

    assert bridge.shutdown(timeout=5)

    assert len(exporter.batches) == 1
    assert exporter.shutdown_calls == 1
    assert not bridge.force_flush(timeout=1)
    assert bridge.shutdown(timeout=1)  # a second call is harmless
    assert exporter.shutdown_calls == 1


def test_shutdown_returns_within_its_timeout_when_the_exporter_hangs(
    metrics: Metrics, exporter: RecordingExporter
) -> None:
    exporter.hang.set()
    bridge = PrometheusOTLPBridge(metrics.registry, resource=RESOURCE, exporter=exporter)
    metrics.requests.labels("answer", "", "ok", "none", "r1").inc()

    started = time.monotonic()
    assert not bridge.force_flush(timeout=0.2)
    assert not bridge.shutdown(timeout=0.5)
    # The exporter hangs until released: a shutdown that waited for it would never return.
    assert time.monotonic() - started < 10.0
    exporter.release.set()


# --- configuration -------------------------------------------------------------------------


@pytest.mark.parametrize("interval", [0, -1, math.nan, math.inf, "60", True])
def test_a_bad_interval_is_a_configuration_error(metrics: Metrics, interval: Any) -> None:
    with pytest.raises(ConfigurationError, match="interval"):
        PrometheusOTLPBridge(
            metrics.registry, resource=RESOURCE, exporter=RecordingExporter(), interval=interval
        )


def test_interval_defaults_to_the_otel_environment_variable(
    metrics: Metrics, monkeypatch: pytest.MonkeyPatch, bridges: list[PrometheusOTLPBridge]
) -> None:
    monkeypatch.setenv("OTEL_METRIC_EXPORT_INTERVAL", "1500")
    assert _bridge(bridges, metrics, RecordingExporter()).interval == 1.5
    monkeypatch.setenv("OTEL_METRIC_EXPORT_INTERVAL", "soon")
    with pytest.raises(ConfigurationError, match="OTEL_METRIC_EXPORT_INTERVAL='soon'"):
        _bridge(bridges, metrics, RecordingExporter())


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"registry": object()}, "registry must be a prometheus_client.CollectorRegistry"),
        ({"resource": {"service.name": "x"}}, "resource must be"),
        ({"exporter": object()}, "exporter must be"),
        ({"export_timeout": 0}, "export_timeout"),
        ({"protocol": "http/json"}, "protocol must be 'http'"),
    ],
)
def test_bad_arguments_are_configuration_errors(
    metrics: Metrics, kwargs: dict[str, Any], match: str
) -> None:
    arguments: dict[str, Any] = {"registry": metrics.registry, "resource": RESOURCE, **kwargs}
    registry = arguments.pop("registry")
    with pytest.raises(ConfigurationError, match=match):
        PrometheusOTLPBridge(registry, **arguments)


@pytest.mark.parametrize(
    ("env", "protocol", "expected"),
    [
        ({}, None, HttpMetricExporter),
        ({"OTEL_EXPORTER_OTLP_PROTOCOL": "grpc"}, None, GrpcMetricExporter),
        (
            {"OTEL_EXPORTER_OTLP_PROTOCOL": "grpc", "OTEL_EXPORTER_OTLP_METRICS_PROTOCOL": "http"},
            None,
            HttpMetricExporter,
        ),
        ({"OTEL_EXPORTER_OTLP_METRICS_PROTOCOL": "grpc"}, None, GrpcMetricExporter),
        ({"OTEL_EXPORTER_OTLP_PROTOCOL": "grpc"}, "http", HttpMetricExporter),
        ({}, "grpc", GrpcMetricExporter),
    ],
)
def test_the_default_exporter_follows_the_protocol(
    metrics: Metrics,
    monkeypatch: pytest.MonkeyPatch,
    bridges: list[PrometheusOTLPBridge],
    env: dict[str, str],
    protocol: str | None,
    expected: type,
) -> None:
    for name in ("OTEL_EXPORTER_OTLP_PROTOCOL", "OTEL_EXPORTER_OTLP_METRICS_PROTOCOL"):
        monkeypatch.delenv(name, raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)

    bridge = PrometheusOTLPBridge(metrics.registry, resource=RESOURCE, protocol=protocol)
    bridges.append(bridge)

    assert type(bridge.exporter) is expected
