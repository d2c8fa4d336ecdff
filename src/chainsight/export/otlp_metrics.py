"""OTLP metrics produced from the Prometheus registry at collection time.

The request path records each measurement once, into prometheus-client. Recording it a second
time through the OpenTelemetry metrics SDK would cost more per call than the whole span, so this
module does what an OTel ``MetricProducer`` would (the SDK has no such hook on its readers): on a
daemon thread, every ``interval`` seconds and on ``force_flush()``/``shutdown()``, it reads
``registry.collect()``, converts the families below to the SDK's data classes and hands them to an
OTel ``MetricExporter`` (OTLP over HTTP/protobuf by default, gRPC on request).

Families exported (Prometheus family → OTel metric, unit):

- ``gen_ai_client_operation_duration_seconds`` → ``gen_ai.client.operation.duration``, ``s``
- ``gen_ai_client_token_usage`` → ``gen_ai.client.token.usage``, ``{token}``
- ``gen_ai_client_operation_time_to_first_chunk_seconds`` →
  ``gen_ai.client.operation.time_to_first_chunk``, ``s``
- ``chainsight_requests_total`` → ``chainsight.requests``, ``{request}``
- ``chainsight_request_duration_seconds`` → ``chainsight.request.duration``, ``s``
- ``chainsight_stage_duration_seconds`` → ``chainsight.stage.duration``, ``s``
- ``chainsight_stage_errors_total`` → ``chainsight.stage.errors``, ``{error}``
- ``chainsight_cost_usd_total`` → ``chainsight.cost``, ``USD``
- ``chainsight_tokens_total`` → ``chainsight.tokens``, ``{token}``
- ``chainsight_fallbacks_total`` → ``chainsight.fallbacks``, ``{fallback}``

Every other family (budget and release gauges, self-telemetry, retrieval and validation counts…)
stays Prometheus-only. Histograms keep their Prometheus bucket bounds (for the GenAI ones, the
semantic conventions' explicit bucket advice); counters become monotonic cumulative Sums. The
GenAI labels become their semconv attribute names; chainsight's labels keep their names. A label
with an empty value is no attribute at all, as in Prometheus, where empty means absent.
"""

from __future__ import annotations

import logging
import math
import os
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from importlib import metadata
from typing import Any, Final

from opentelemetry.sdk.environment_variables import (
    OTEL_EXPORTER_OTLP_METRICS_PROTOCOL,
    OTEL_METRIC_EXPORT_INTERVAL,
)
from opentelemetry.sdk.metrics import Exemplar
from opentelemetry.sdk.metrics.export import (
    AggregationTemporality,
    Histogram,
    HistogramDataPoint,
    Metric,
    MetricExporter,
    MetricExportResult,
    MetricsData,
    NumberDataPoint,
    ResourceMetrics,
    ScopeMetrics,
    Sum,
)
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.util.instrumentation import InstrumentationScope
from prometheus_client import CollectorRegistry
from prometheus_client.metrics_core import Metric as PromMetric
from prometheus_client.samples import Sample

from chainsight import _names as n
from chainsight.errors import ConfigurationError

__all__ = [
    "EXPORTED_FAMILIES",
    "FamilyMapping",
    "PrometheusOTLPBridge",
    "convert_families",
    "count_points",
    "exporter_from_environment",
    "per_bucket_counts",
]

_log = logging.getLogger("chainsight")

DEFAULT_INTERVAL_S: Final = 60.0
DEFAULT_EXPORT_TIMEOUT_S: Final = 5.0
SCOPE_NAME: Final = "chainsight"

# OTel metric names and the one attribute _names lacks. They belong in chainsight._names; kept
# here until the lead moves them (the brief forbids adding names there from this module).
OTEL_GEN_AI_OPERATION_DURATION: Final = "gen_ai.client.operation.duration"
OTEL_GEN_AI_TOKEN_USAGE: Final = "gen_ai.client.token.usage"
OTEL_GEN_AI_TTFC: Final = "gen_ai.client.operation.time_to_first_chunk"
OTEL_REQUESTS: Final = "chainsight.requests"
OTEL_REQUEST_DURATION: Final = "chainsight.request.duration"
OTEL_STAGE_DURATION: Final = "chainsight.stage.duration"
OTEL_STAGE_ERRORS: Final = "chainsight.stage.errors"
OTEL_COST: Final = "chainsight.cost"
OTEL_TOKENS: Final = "chainsight.tokens"
OTEL_FALLBACKS: Final = "chainsight.fallbacks"
GEN_AI_TOKEN_TYPE: Final = "gen_ai.token.type"

_LE: Final = "le"


@dataclass(frozen=True)
class FamilyMapping:
    """How one Prometheus family becomes one OTel metric."""

    name: str
    unit: str
    histogram: bool
    # Label name → attribute name; labels not listed keep their name.
    attributes: Mapping[str, str]


_GEN_AI_ATTRIBUTES: Final[Mapping[str, str]] = {
    n.L_GEN_AI_OPERATION_NAME: n.GEN_AI_OPERATION_NAME,
    n.L_GEN_AI_PROVIDER_NAME: n.GEN_AI_PROVIDER_NAME,
    n.L_GEN_AI_REQUEST_MODEL: n.GEN_AI_REQUEST_MODEL,
    n.L_GEN_AI_ERROR_TYPE: n.ERROR_TYPE,
    n.L_GEN_AI_TOKEN_TYPE: GEN_AI_TOKEN_TYPE,
}
_SAME: Final[Mapping[str, str]] = {}

# Keyed by the family name prometheus-client reports from collect() (counters without _total).
EXPORTED_FAMILIES: Final[Mapping[str, FamilyMapping]] = {
    n.M_GEN_AI_OPERATION_DURATION: FamilyMapping(
        OTEL_GEN_AI_OPERATION_DURATION, "s", True, _GEN_AI_ATTRIBUTES
    ),
    n.M_GEN_AI_TOKEN_USAGE: FamilyMapping(
        OTEL_GEN_AI_TOKEN_USAGE, "{token}", True, _GEN_AI_ATTRIBUTES
    ),
    n.M_GEN_AI_TTFC: FamilyMapping(OTEL_GEN_AI_TTFC, "s", True, _GEN_AI_ATTRIBUTES),
    n.M_REQUESTS: FamilyMapping(OTEL_REQUESTS, "{request}", False, _SAME),
    n.M_REQUEST_DURATION: FamilyMapping(OTEL_REQUEST_DURATION, "s", True, _SAME),
    n.M_STAGE_DURATION: FamilyMapping(OTEL_STAGE_DURATION, "s", True, _SAME),
    n.M_STAGE_ERRORS: FamilyMapping(OTEL_STAGE_ERRORS, "{error}", False, _SAME),
    n.M_COST_USD: FamilyMapping(OTEL_COST, "USD", False, _SAME),
    n.M_TOKENS: FamilyMapping(OTEL_TOKENS, "{token}", False, _SAME),
    n.M_FALLBACKS: FamilyMapping(OTEL_FALLBACKS, "{fallback}", False, _SAME),
}


def _version() -> str:
    try:
        return metadata.version("chainsight")
    except metadata.PackageNotFoundError:  # running from a source tree that is not installed
        return "0+unknown"


_SCOPE: Final = InstrumentationScope(SCOPE_NAME, _version())


# --- conversion (pure) ------------------------------------------------------------------------


def per_bucket_counts(cumulative: Sequence[float]) -> list[int]:
    """Per-bucket counts (OTLP) from cumulative bucket counts (Prometheus ``le`` buckets).

    The input is ordered by bound and ends with the ``+Inf`` bucket; the output has the same
    length and sums to the last cumulative value.
    """
    out: list[int] = []
    previous = 0
    for value in cumulative:
        current = int(value)
        # Cumulative counts never decrease; a clamp keeps a corrupt multiprocess file from
        # producing a negative count, which protobuf would refuse for the whole request.
        out.append(max(current - previous, 0))
        previous = max(current, previous)
    return out


def _attributes(labels: Mapping[str, str], rename: Mapping[str, str]) -> dict[str, str]:
    return {rename.get(key, key): value for key, value in labels.items() if value and key != _LE}


def _key(labels: Mapping[str, str]) -> tuple[tuple[str, str], ...]:
    return tuple(sorted((k, v) for k, v in labels.items() if k != _LE))


def _nanos(seconds: Any) -> int:
    return int(float(seconds) * 1e9)


def _exemplar(sample: Sample) -> Exemplar | None:
    found = sample.exemplar
    if found is None:
        return None
    labels = dict(found.labels)
    ids: dict[str, int] = {}
    for key in ("trace_id", "span_id"):
        raw = labels.get(key)
        if raw is None:
            continue
        try:
            ids[key] = int(raw, 16)
        except ValueError:
            continue  # not hex: it stays an ordinary attribute
        del labels[key]
    stamp = found.timestamp
    return Exemplar(
        filtered_attributes=labels,
        value=float(found.value),
        time_unix_nano=_nanos(stamp) if stamp is not None else 0,
        span_id=ids.get("span_id"),
        trace_id=ids.get("trace_id"),
    )


@dataclass
class _HistogramSeries:
    labels: Mapping[str, str]
    buckets: list[tuple[float, float]]
    exemplars: list[Exemplar]
    total: float = 0.0
    count: float | None = None
    created: float | None = None


def _histogram(
    family: PromMetric, mapping: FamilyMapping, start_ns: int, now_ns: int
) -> list[HistogramDataPoint]:
    series: dict[tuple[tuple[str, str], ...], _HistogramSeries] = {}
    name = family.name
    for sample in family.samples:
        key = _key(sample.labels)
        found = series.get(key)
        if found is None:
            found = series[key] = _HistogramSeries(sample.labels, [], [])
        suffix = sample.name[len(name) :]
        if suffix == "_bucket":
            found.buckets.append((float(sample.labels[_LE]), sample.value))
            exemplar = _exemplar(sample)
            if exemplar is not None:
                found.exemplars.append(exemplar)
        elif suffix == "_sum":
            found.total = sample.value
        elif suffix == "_count":
            found.count = sample.value
        elif suffix == "_created":
            found.created = sample.value
    points: list[HistogramDataPoint] = []
    for item in series.values():
        if not item.buckets:
            continue
        item.buckets.sort()
        counts = per_bucket_counts([cumulative for _bound, cumulative in item.buckets])
        bounds = [bound for bound, _ in item.buckets if not math.isinf(bound)]
        if len(counts) != len(bounds) + 1:
            # No +Inf bucket (prometheus-client always writes one): the overflow bucket is the
            # difference between the count and the last finite bucket.
            overflow = int(item.count or 0) - sum(counts)
            counts.append(max(overflow, 0))
        points.append(
            HistogramDataPoint(
                attributes=_attributes(item.labels, mapping.attributes),
                start_time_unix_nano=_nanos(item.created) if item.created else start_ns,
                time_unix_nano=now_ns,
                # From the buckets, not _count, so count == sum(bucket_counts) as OTLP requires.
                count=sum(counts),
                sum=item.total,
                bucket_counts=counts,
                explicit_bounds=bounds,
                # Prometheus keeps no min or max: None leaves the optional OTLP fields unset.
                min=None,  # type: ignore[arg-type]
                max=None,  # type: ignore[arg-type]
                exemplars=item.exemplars,
            )
        )
    return points


def _counter(
    family: PromMetric, mapping: FamilyMapping, start_ns: int, now_ns: int
) -> list[NumberDataPoint]:
    totals: dict[tuple[tuple[str, str], ...], tuple[Mapping[str, str], float]] = {}
    created: dict[tuple[tuple[str, str], ...], float] = {}
    name = family.name
    for sample in family.samples:
        key = _key(sample.labels)
        suffix = sample.name[len(name) :]
        if suffix == "_total":
            totals[key] = (sample.labels, sample.value)
        elif suffix == "_created":
            created[key] = sample.value
    return [
        NumberDataPoint(
            attributes=_attributes(labels, mapping.attributes),
            start_time_unix_nano=_nanos(created[key]) if key in created else start_ns,
            time_unix_nano=now_ns,
            value=float(value),
        )
        for key, (labels, value) in totals.items()
    ]


def convert_families(
    families: Iterable[PromMetric],
    *,
    resource: Resource,
    start_time_unix_nano: int,
    time_unix_nano: int,
) -> MetricsData:
    """The OTLP view of the exported families among ``families`` (cumulative temporality).

    ``start_time_unix_nano`` is used for series without a ``_created`` sample (multiprocess
    mode, or ``PROMETHEUS_DISABLE_CREATED_SERIES``). Families not in :data:`EXPORTED_FAMILIES`
    and families without series are left out.
    """
    metrics: list[Metric] = []
    for family in families:
        mapping = EXPORTED_FAMILIES.get(family.name)
        if mapping is None:
            continue
        if mapping.histogram and family.type == "histogram":
            points = _histogram(family, mapping, start_time_unix_nano, time_unix_nano)
            if points:
                data: Histogram | Sum = Histogram(points, AggregationTemporality.CUMULATIVE)
                metrics.append(Metric(mapping.name, family.documentation, mapping.unit, data))
        elif not mapping.histogram and family.type == "counter":
            sums = _counter(family, mapping, start_time_unix_nano, time_unix_nano)
            if sums:
                data = Sum(sums, AggregationTemporality.CUMULATIVE, is_monotonic=True)
                metrics.append(Metric(mapping.name, family.documentation, mapping.unit, data))
    scopes = [ScopeMetrics(_SCOPE, metrics, "")] if metrics else []
    return MetricsData([ResourceMetrics(resource, scopes, resource.schema_url)])


def count_points(data: MetricsData) -> int:
    """The number of data points in ``data`` (what an export failure loses)."""
    return sum(
        len(metric.data.data_points)
        for rm in data.resource_metrics
        for sm in rm.scope_metrics
        for metric in sm.metrics
    )


# --- configuration ----------------------------------------------------------------------------


def _positive_seconds(name: str, value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ConfigurationError(
            f"{name} must be a number of seconds, got {value!r} ({type(value).__name__}); "
            f"for example {name}=60"
        )
    if not math.isfinite(value) or value <= 0:
        raise ConfigurationError(
            f"{name} must be a positive, finite number of seconds, got {value!r}"
        )
    return float(value)


def _interval(value: float | None) -> float:
    if value is not None:
        return _positive_seconds("interval", value)
    raw = os.environ.get(OTEL_METRIC_EXPORT_INTERVAL, "").strip()
    if not raw:
        return DEFAULT_INTERVAL_S
    try:
        millis = float(raw)
    except ValueError:
        millis = math.nan
    if not math.isfinite(millis) or millis <= 0:
        raise ConfigurationError(
            f"{OTEL_METRIC_EXPORT_INTERVAL}={raw!r} is not a positive number of milliseconds; "
            "set it to e.g. 60000 or unset it for the 60 s default"
        )
    return millis / 1000.0


def _protocol(value: str | None) -> str:
    if value is None:
        value = os.environ.get(OTEL_EXPORTER_OTLP_METRICS_PROTOCOL) or os.environ.get(
            n.ENV_OTEL_PROTOCOL, "http/protobuf"
        )
        # As for spans: only "grpc" selects gRPC; every HTTP flavour goes over HTTP/protobuf.
        return "grpc" if value.strip().lower() == "grpc" else "http"
    if value not in ("http", "grpc"):
        raise ConfigurationError(
            f"protocol must be 'http' (OTLP/HTTP protobuf) or 'grpc', got {value!r}; None "
            f"reads {OTEL_EXPORTER_OTLP_METRICS_PROTOCOL} / {n.ENV_OTEL_PROTOCOL}"
        )
    return value


def _otlp_exporter(protocol: str, timeout: float) -> MetricExporter:
    # Imported here: each protocol pulls in its own transport stack (requests or grpcio). Both
    # exporters read OTEL_EXPORTER_OTLP_[METRICS_]ENDPOINT, headers and TLS settings themselves.
    if protocol == "grpc":
        from opentelemetry.exporter.otlp.proto.grpc.metric_exporter import (  # noqa: PLC0415
            OTLPMetricExporter as GrpcExporter,
        )

        return GrpcExporter(timeout=timeout)
    from opentelemetry.exporter.otlp.proto.http.metric_exporter import (  # noqa: PLC0415
        OTLPMetricExporter as HttpExporter,
    )

    return HttpExporter(timeout=timeout)


def exporter_from_environment(
    export_timeout: float = DEFAULT_EXPORT_TIMEOUT_S,
) -> tuple[float, MetricExporter]:
    """The interval and OTLP exporter the environment asks for, built without starting anything.

    For ``configure()`` to refuse bad ``OTEL_METRIC_EXPORT_INTERVAL`` / ``OTEL_EXPORTER_OTLP_*``
    values before it changes anything; whatever the SDK raises becomes a ConfigurationError.
    """
    interval = _interval(None)
    try:
        exporter = _otlp_exporter(_protocol(None), export_timeout)
    except ConfigurationError:
        raise
    except Exception as exc:
        raise ConfigurationError(
            f"the OTLP metric exporter could not be built from its settings "
            f"(OTEL_EXPORTER_OTLP_* variables): {type(exc).__name__}: {exc}"
        ) from exc
    return interval, exporter


# --- the bridge -------------------------------------------------------------------------------


class _Flush:
    __slots__ = ("done", "ok")

    def __init__(self) -> None:
        self.done = threading.Event()
        self.ok = False


class PrometheusOTLPBridge:
    """Pushes the registry's GenAI and chainsight families as OTLP metrics, periodically.

    It reads ``registry`` only when it exports, on its own daemon thread, so the request path is
    unchanged. Pass ``chainsight.export.metrics.exposition_registry(metrics)`` as ``registry`` so
    multiprocess mode sums every worker's files.

    ``exporter`` defaults to an OTLP exporter (``protocol`` ``"http"`` or ``"grpc"``; ``None``
    reads ``OTEL_EXPORTER_OTLP_METRICS_PROTOCOL`` then ``OTEL_EXPORTER_OTLP_PROTOCOL``) with an
    ``export_timeout`` second timeout; the endpoint comes from the standard
    ``OTEL_EXPORTER_OTLP_[METRICS_]ENDPOINT`` variables. ``interval`` defaults to
    ``OTEL_METRIC_EXPORT_INTERVAL`` (milliseconds) or 60 s. ``on_failure(points)`` is told how
    many data points each failed export lost; nothing here raises after construction.
    """

    def __init__(
        self,
        registry: CollectorRegistry,
        *,
        resource: Resource,
        exporter: MetricExporter | None = None,
        interval: float | None = None,
        export_timeout: float = DEFAULT_EXPORT_TIMEOUT_S,
        protocol: str | None = None,
        on_failure: Callable[[int], None] | None = None,
    ) -> None:
        if not isinstance(registry, CollectorRegistry):
            raise ConfigurationError(
                f"registry must be a prometheus_client.CollectorRegistry, got {registry!r}; "
                "pass chainsight.export.metrics.exposition_registry(metrics)"
            )
        if not isinstance(resource, Resource):
            raise ConfigurationError(
                f"resource must be an opentelemetry.sdk.resources.Resource, got {resource!r}"
            )
        self._interval = _interval(interval)
        self._export_timeout = _positive_seconds("export_timeout", export_timeout)
        if exporter is None:
            exporter = _otlp_exporter(_protocol(protocol), self._export_timeout)
        elif not isinstance(exporter, MetricExporter):
            raise ConfigurationError(
                f"exporter must be an opentelemetry.sdk.metrics.export.MetricExporter, got "
                f"{exporter!r}; leave it None for OTLP"
            )
        self._registry = registry
        self._resource = resource
        self._exporter = exporter
        self._on_failure = on_failure
        self._start_ns = time.time_ns()
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._stopping = False
        self._waiters: list[_Flush] = []
        self._failures_logged = False
        self._thread = threading.Thread(
            target=self._run, name="chainsight-otlp-metrics", daemon=True
        )
        self._thread.start()

    def after_fork_in_child(self) -> None:
        """In a forked child: fresh lock and event, and a new export thread (threads don't
        survive ``fork()``). Called by chainsight's at-fork hook."""
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._waiters = []
        if self._stopping:
            return
        self._thread = threading.Thread(
            target=self._run, name="chainsight-otlp-metrics", daemon=True
        )
        self._thread.start()

    @property
    def interval(self) -> float:
        """Seconds between two periodic exports."""
        return self._interval

    @property
    def exporter(self) -> MetricExporter:
        """The exporter data points are handed to."""
        return self._exporter

    def collect(self) -> MetricsData:
        """Read the registry now and return its OTLP view (what the next export would send)."""
        return convert_families(
            self._registry.collect(),
            resource=self._resource,
            start_time_unix_nano=self._start_ns,
            time_unix_nano=time.time_ns(),
        )

    def force_flush(self, timeout: float = 10.0) -> bool:
        """Export now; True once an export of everything recorded so far succeeded in time.

        False when it failed, did not finish within ``timeout`` seconds (it then goes on in the
        background), or the bridge is shut down. Never raises.
        """
        flush = _Flush()
        with self._lock:
            if self._stopping:
                return False
            self._waiters.append(flush)
            self._wake.set()
        return flush.done.wait(max(timeout, 0.0)) and flush.ok

    def shutdown(self, timeout: float = 5.0) -> bool:
        """Export one last time, shut the exporter down, stop the thread, within ``timeout`` s.

        True if all of that finished in time. When the exporter hangs, it returns False after
        ``timeout`` and leaves the daemon thread behind, which cannot hold up interpreter exit.
        Calling it again is harmless. Never raises.
        """
        with self._lock:
            self._stopping = True
            self._wake.set()
        self._thread.join(max(timeout, 0.0))
        return not self._thread.is_alive()

    # --- worker thread -------------------------------------------------------------------
    def _run(self) -> None:
        while True:
            self._wake.wait(self._interval)
            with self._lock:
                self._wake.clear()
                # Waiters taken before reading the registry: each sees everything recorded
                # before its force_flush() call.
                waiters, self._waiters = self._waiters, []
                stopping = self._stopping
            ok = self._export_once()
            for waiter in waiters:
                waiter.ok = ok
                waiter.done.set()
            if stopping:
                break
        try:
            self._exporter.shutdown(timeout_millis=self._export_timeout * 1000)
        except Exception:  # an exporter bug must not surface in the app at exit
            _log.warning("chainsight: shutting the OTLP metric exporter down failed", exc_info=True)

    def _export_once(self) -> bool:
        try:
            data = self.collect()
        except Exception:  # a broken collector must not kill the export thread
            _log.warning("chainsight: reading the metrics registry for OTLP failed", exc_info=True)
            return False
        points = count_points(data)
        if points == 0:
            return True
        try:
            result = self._exporter.export(data, timeout_millis=self._export_timeout * 1000)
        except Exception:  # the exporter's own bug counts as a failed export
            _log.debug("chainsight: the OTLP metric exporter raised", exc_info=True)
            result = MetricExportResult.FAILURE
        if result is MetricExportResult.SUCCESS:
            return True
        self._failed(points)
        return False

    def _failed(self, points: int) -> None:
        if not self._failures_logged:
            # Once: a collector that is down would otherwise log every interval.
            self._failures_logged = True
            _log.warning(
                "chainsight: exporting %d OTLP metric data points failed; further failures "
                'are only counted in %s_total{%s="metrics"}',
                points,
                n.M_EXPORT_FAILURES,
                n.L_SIGNAL,
            )
        if self._on_failure is not None:
            try:
                self._on_failure(points)
            except Exception:
                _log.warning("chainsight: the export failure callback raised", exc_info=True)
