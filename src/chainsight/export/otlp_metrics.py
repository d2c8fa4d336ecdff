"""OTLP metrics produced from the Prometheus registry at collection time.

The request path records each measurement once, into prometheus-client. Recording it a second
time through the OpenTelemetry metrics SDK would cost more per call than the whole span, so this
module does what an OTel ``MetricProducer`` would (the SDK has no such hook on its readers): on a
daemon thread, every ``interval`` seconds and on ``force_flush()``/``shutdown()``, it reads
``registry.collect()``, converts the exported families to the SDK's data classes and hands them
to an OTel ``MetricExporter`` (OTLP over HTTP/protobuf by default, gRPC on request).

Which families are exported, and how they convert, is in :mod:`chainsight.export.otlp_convert`.
"""

from __future__ import annotations

import logging
import math
import os
import threading
import time
from collections.abc import Callable
from typing import Final

from opentelemetry.sdk.environment_variables import (
    OTEL_EXPORTER_OTLP_METRICS_PROTOCOL,
    OTEL_METRIC_EXPORT_INTERVAL,
)
from opentelemetry.sdk.metrics.export import MetricExporter, MetricExportResult, MetricsData
from opentelemetry.sdk.resources import Resource
from prometheus_client import CollectorRegistry

from chainsight import _names as n
from chainsight.errors import ConfigurationError
from chainsight.export.otlp_convert import convert_families, count_points

__all__ = ["PrometheusOTLPBridge", "exporter_from_environment"]

_log = logging.getLogger("chainsight")

DEFAULT_INTERVAL_S: Final = 60.0
DEFAULT_EXPORT_TIMEOUT_S: Final = 5.0

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
    ``OTEL_METRIC_EXPORT_INTERVAL`` (milliseconds) or 60 s. ``on_failure(points)`` is called
    once per failed export (the exporter failed or raised, or the registry could not be read),
    with the number of data points that batch held (0 when the registry could not be read);
    chainsight counts the calls, one per batch. Nothing here raises after construction.
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
            self._failed(0)  # nothing was sent this interval: one failed batch like any other
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
