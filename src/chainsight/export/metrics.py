"""Prometheus metrics: definitions, the cardinality guard, cached children, exposure.

Every family is created once per registry. On the request path a metric update is a dict lookup
for the labelled child (cached by label tuple; ``.labels()`` only the first time) and one
``inc``/``observe``. Label values that come from users (tenant, feature, model, error types…) pass
the cardinality guard first: past a per-label limit of distinct values they become ``__other__``
and ``chainsight_label_overflow_total{label}`` counts it.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any, Final

from prometheus_client import REGISTRY, CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from chainsight import _names as n
from chainsight.errors import ConfigurationError

__all__ = ["LabelGuard", "Metrics", "MetricsApp", "metrics_for"]

DEFAULT_LABEL_LIMIT: Final = 100
MAX_LABEL_LENGTH: Final = 128


class LabelGuard:
    """Bounds the distinct values of each (metric, label) pair.

    Memory stays flat under hostile input: at most ``limit`` remembered values per pair.
    """

    __slots__ = ("_default", "_limits", "_lock", "_on_overflow", "_seen")

    def __init__(
        self, limits: Mapping[str, int] | None, on_overflow: Callable[[str], None]
    ) -> None:
        self._limits: dict[str, int] = dict(limits or {})
        self._default = self._limits.pop("*", DEFAULT_LABEL_LIMIT)
        self._seen: dict[tuple[str, str], set[str]] = {}
        self._on_overflow = on_overflow
        self._lock = threading.Lock()

    def after_fork_in_child(self) -> None:
        """A lock held by another thread at ``fork()`` would stay held forever in the child."""
        self._lock = threading.Lock()

    def set_limits(self, limits: Mapping[str, int] | None) -> None:
        """Change the per-label limits (``"*"`` sets the default)."""
        new = dict(limits or {})
        self._default = new.pop("*", DEFAULT_LABEL_LIMIT)
        self._limits = new

    def __call__(self, metric: str, label: str, value: object) -> str:
        """The value to use for ``label`` on ``metric``: normalised, or ``__other__``."""
        if value is None:
            return ""
        text = value if type(value) is str else str(value)
        if len(text) > MAX_LABEL_LENGTH:
            text = text[:MAX_LABEL_LENGTH]
        key = (metric, label)
        seen = self._seen.get(key)
        if seen is not None and text in seen:
            return text
        with self._lock:
            seen = self._seen.setdefault(key, set())
            if text in seen:
                return text
            if len(seen) < self._limits.get(label, self._default):
                seen.add(text)
                return text
        self._on_overflow(label)
        return n.OVERFLOW_VALUE


def validate_label_limits(limits: object) -> dict[str, int] | None:
    """Check ``configure(label_limits=...)``: a mapping of label name to a positive int."""
    if limits is None:
        return None
    if not isinstance(limits, Mapping):
        raise ConfigurationError(
            f"label_limits must be a mapping such as {{'tenant': 500}}, got {limits!r}"
        )
    out: dict[str, int] = {}
    for key, value in limits.items():
        if not isinstance(key, str) or type(value) is not int or value < 1:
            raise ConfigurationError(
                f"label_limits[{key!r}] = {value!r}: keys are label names (or '*' for the "
                "default) and values positive integers"
            )
        out[key] = value
    return out


class _ReleaseCollector(Collector):
    """``chainsight_release_info``: its label set follows the configured release keys."""

    def __init__(self) -> None:
        self.labels: dict[str, str] = {}

    def collect(self) -> Iterator[GaugeMetricFamily]:
        labels = self.labels
        if not labels:
            return
        family = GaugeMetricFamily(
            n.M_RELEASE_INFO + "_info",
            "The release running: one label per release key (model, prompt, ...), value 1.",
            labels=list(labels),
        )
        family.add_metric(list(labels.values()), 1.0)
        yield family


class _BudgetCollector(Collector):
    """Budget gauges, read at scrape time from the budget set's last known state."""

    def __init__(self) -> None:
        self.source: Callable[[], Iterable[Any]] | None = None

    def collect(self) -> Iterator[GaugeMetricFamily]:
        source = self.source
        if source is None:
            return
        spent = GaugeMetricFamily(
            n.M_BUDGET_SPENT, "USD spent in the budget's current window.", labels=[n.L_BUDGET]
        )
        limit = GaugeMetricFamily(
            n.M_BUDGET_LIMIT, "USD limit of the budget's window.", labels=[n.L_BUDGET]
        )
        soft = GaugeMetricFamily(
            n.M_BUDGET_SOFT_RATIO,
            "Fraction of the limit at which the budget warns (the alert threshold).",
            labels=[n.L_BUDGET],
        )
        for state in source():
            spent.add_metric([state.name], state.spent_usd)
            limit.add_metric([state.name], state.limit_usd)
            soft.add_metric([state.name], state.soft_ratio)
        yield spent
        yield limit
        yield soft


class Metrics:
    """All of chainsight's metric families in one registry, with cached children."""

    def __init__(self, registry: CollectorRegistry, label_limits: Mapping[str, int] | None) -> None:
        self.registry = registry
        self._server: Any = None
        self._server_addr: tuple[str, int] | None = None
        # What configure() asked for: with port 0 the bound port differs from the request.
        self._requested: tuple[str, int] | None = None
        self.guard = LabelGuard(label_limits, self._overflow)
        self._children: dict[tuple[Any, ...], Any] = {}
        r = registry

        def counter(name: str, doc: str, labels: tuple[str, ...]) -> Counter:
            return Counter(name, doc, labels, registry=r)

        def histogram(
            name: str, doc: str, labels: tuple[str, ...], buckets: tuple[float, ...]
        ) -> Histogram:
            return Histogram(name, doc, labels, registry=r, buckets=buckets)

        L = n
        self.label_overflow = counter(
            n.M_LABEL_OVERFLOW,
            "Label values replaced by __other__ by the cardinality guard.",
            (L.L_LABEL,),
        )
        self.internal_errors = counter(
            n.M_INTERNAL_ERRORS,
            "Errors inside chainsight (caught; the app was not affected), by where.",
            (L.L_WHERE,),
        )
        self.export_failures = counter(
            n.M_EXPORT_FAILURES,
            "Telemetry items that could not be exported (failed or dropped), by signal.",
            (L.L_SIGNAL,),
        )
        self.requests = counter(
            n.M_REQUESTS,
            "Finished requests by outcome and the fault domain where a failure started.",
            (L.L_REQUEST, L.L_FEATURE, L.L_OUTCOME, L.L_FAULT, L.L_RELEASE),
        )
        self.request_duration = histogram(
            n.M_REQUEST_DURATION,
            "Request duration in seconds.",
            (L.L_REQUEST, L.L_OUTCOME, L.L_RELEASE),
            n.LATENCY_BUCKETS,
        )
        self.stage_duration = histogram(
            n.M_STAGE_DURATION,
            "Stage duration in seconds.",
            (L.L_STAGE, L.L_KIND, L.L_SYSTEM, L.L_OUTCOME, L.L_RELEASE),
            n.LATENCY_BUCKETS,
        )
        self.stage_errors = counter(
            n.M_STAGE_ERRORS,
            "Stages that ended in error (or fell back), by fault domain of the error's origin.",
            (L.L_STAGE, L.L_KIND, L.L_SYSTEM, L.L_FAULT, L.L_ERROR_TYPE),
        )
        self.fallbacks = counter(
            n.M_FALLBACKS,
            "Fallback activations.",
            (L.L_STAGE, L.L_KIND, L.L_TO, L.L_REASON),
        )
        self.tokens = counter(
            n.M_TOKENS,
            "Tokens used, by type (input counts cached tokens too).",
            (L.L_PROVIDER, L.L_MODEL, L.L_TOKEN_TYPE, L.L_FEATURE, L.L_TENANT),
        )
        self.cost = counter(
            n.M_COST_USD,
            "Estimated spend in USD from the price table.",
            (L.L_PROVIDER, L.L_MODEL, L.L_FEATURE, L.L_TENANT, L.L_TEAM),
        )
        self.request_cost = histogram(
            n.M_REQUEST_COST_USD,
            "Estimated cost of one request in USD.",
            (L.L_REQUEST, L.L_FEATURE),
            n.COST_BUCKETS,
        )
        self.unpriced = counter(
            n.M_UNPRICED_CALLS,
            "Model calls whose cost is unknown (model not in the price table).",
            (L.L_PROVIDER, L.L_MODEL),
        )
        self.retrieval_documents = histogram(
            n.M_RETRIEVAL_DOCUMENTS,
            "Documents returned per retrieval.",
            (L.L_STAGE, L.L_SYSTEM),
            n.DOCUMENT_COUNT_BUCKETS,
        )
        self.retrieval_empty = counter(
            n.M_RETRIEVAL_EMPTY,
            "Retrievals that returned no documents.",
            (L.L_STAGE, L.L_SYSTEM),
        )
        self.retrieval_duplicates = counter(
            n.M_RETRIEVAL_DUPLICATES,
            "Duplicate document ids returned by retrievals.",
            (L.L_STAGE, L.L_SYSTEM),
        )
        self.retrieval_top_score = histogram(
            n.M_RETRIEVAL_TOP_SCORE,
            "Best relevance score per retrieval.",
            (L.L_STAGE, L.L_SYSTEM),
            n.SCORE_BUCKETS,
        )
        self.validations = counter(
            n.M_VALIDATIONS,
            "Output validations by result (passed or failed).",
            (L.L_STAGE, L.L_VALIDATOR, L.L_RESULT),
        )
        self.budget_rejections = counter(
            n.M_BUDGET_REJECTIONS,
            "Model stages refused because a hard budget was spent.",
            (L.L_BUDGET,),
        )
        self.in_flight = Gauge(
            n.M_IN_FLIGHT,
            "Requests in progress.",
            (L.L_REQUEST,),
            registry=r,
            multiprocess_mode="livesum",
        )
        self.gen_ai_duration = histogram(
            n.M_GEN_AI_OPERATION_DURATION,
            "GenAI operation duration (OpenTelemetry GenAI semantic conventions).",
            (
                L.L_GEN_AI_OPERATION_NAME,
                L.L_GEN_AI_PROVIDER_NAME,
                L.L_GEN_AI_REQUEST_MODEL,
                L.L_GEN_AI_ERROR_TYPE,
            ),
            n.OPERATION_DURATION_BUCKETS,
        )
        self.gen_ai_tokens = histogram(
            n.M_GEN_AI_TOKEN_USAGE,
            "Tokens per GenAI operation (OpenTelemetry GenAI semantic conventions).",
            (
                L.L_GEN_AI_OPERATION_NAME,
                L.L_GEN_AI_PROVIDER_NAME,
                L.L_GEN_AI_REQUEST_MODEL,
                L.L_GEN_AI_TOKEN_TYPE,
            ),
            n.TOKEN_USAGE_BUCKETS,
        )
        self.gen_ai_ttfc = histogram(
            n.M_GEN_AI_TTFC,
            "Time to the first chunk of a streamed GenAI response.",
            (L.L_GEN_AI_OPERATION_NAME, L.L_GEN_AI_PROVIDER_NAME, L.L_GEN_AI_REQUEST_MODEL),
            n.OPERATION_DURATION_BUCKETS,
        )
        self.release_collector = _ReleaseCollector()
        self.budget_collector = _BudgetCollector()
        r.register(self.release_collector)
        r.register(self.budget_collector)

    # --- self-telemetry -------------------------------------------------------------------
    def _overflow(self, label: str) -> None:
        self.child(self.label_overflow, label).inc()

    def internal_error(self, where: str) -> None:
        """Count an internal error at ``where`` (a fixed, code-chosen string)."""
        self.child(self.internal_errors, where).inc()

    def invalid(self, verb: str) -> None:
        """Count a bad value handed to a stage verb (dropped, never raised)."""
        self.child(self.internal_errors, f"invalid_argument:{verb}").inc()

    def span_export_failed(self, count: int) -> None:
        """Count spans that failed to export or were dropped."""
        self.child(self.export_failures, "traces").inc(count)

    # --- children ------------------------------------------------------------------------
    def child(self, family: Any, *labels: str) -> Any:
        """The labelled child of ``family``, cached by label values (labels must be guarded)."""
        key = (family, *labels)
        found = self._children.get(key)
        if found is None:
            found = family.labels(*labels)
            self._children[key] = found
        return found

    def set_release(
        self, release_id: str, release: Mapping[str, str], *, service: str, environment: str
    ) -> None:
        """Expose ``chainsight_release_info`` for the configured release."""
        labels = {n.L_RELEASE: release_id, n.L_SERVICE: service, n.L_ENVIRONMENT: environment}
        for key, value in release.items():
            if key not in labels:
                labels[key] = value
        self.release_collector.labels = labels

    # --- exposure ------------------------------------------------------------------------
    def serve(self, port: object, addr: str) -> None:
        """Serve ``/metrics`` on ``addr:port`` in a daemon thread (once per address)."""
        if type(port) is not int or not 0 <= port <= 65535:
            raise ConfigurationError(
                f"metrics_port must be an integer from 0 to 65535, got {port!r}; 9464 is the "
                "usual Prometheus exporter port, None serves nothing"
            )
        if self._requested == (addr, port):
            return
        from prometheus_client import start_http_server  # noqa: PLC0415

        try:
            server, _thread = start_http_server(port, addr, registry=exposition_registry(self))
        except OSError as exc:
            # The running server (if any) is left as it was: a failed configure() changes nothing.
            raise ConfigurationError(
                f"cannot serve metrics on {addr}:{port}: {exc}; choose a free port or set "
                "no metrics_port (leave it out, or reset()) and mount chainsight.metrics_app() "
                "in your web app"
            ) from exc
        self.stop_server()
        self._server = server
        self._server_addr = (addr, server.server_port)
        self._requested = (addr, port)

    def after_fork_in_child(self) -> None:
        """In a forked child: fresh locks; the parent keeps serving ``/metrics``.

        The child's copy of the listening socket is closed (the parent's stays open), and the
        server object is forgotten: its thread did not survive the fork, so shutting it down
        from the child would wait forever.
        """
        self.guard.after_fork_in_child()
        server, self._server, self._server_addr = self._server, None, None
        self._requested = None
        if server is not None:
            server.server_close()

    @property
    def server_port(self) -> int | None:
        """The port ``/metrics`` is served on, if any (useful with ``metrics_port=0``)."""
        return self._server_addr[1] if self._server_addr else None

    def stop_server(self) -> None:
        """Stop the ``/metrics`` server if one runs."""
        server, self._server, self._server_addr = self._server, None, None
        self._requested = None
        if server is not None:
            server.shutdown()
            server.server_close()


def multiprocess_dir() -> str | None:
    """The prometheus-client multiprocess directory, when multiprocess mode is on."""
    return os.environ.get(n.ENV_MULTIPROC_DIR)


def exposition_registry(metrics: Metrics) -> CollectorRegistry:
    """The registry to scrape: the process's own, or, in multiprocess mode, all workers' sum."""
    if multiprocess_dir() is None:
        return metrics.registry
    from prometheus_client import multiprocess  # noqa: PLC0415

    registry = CollectorRegistry()
    multiprocess.MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
    # Release and budget gauges are computed by this process, not stored in the shared files.
    registry.register(metrics.release_collector)
    registry.register(metrics.budget_collector)
    return registry


_by_registry: dict[int, Metrics] = {}
_registry_lock = threading.Lock()


def after_fork_in_child() -> None:
    """Fresh module lock and per-registry locks in a forked child."""
    global _registry_lock
    _registry_lock = threading.Lock()
    for metrics in _by_registry.values():
        metrics.after_fork_in_child()


def metrics_for(registry: object, label_limits: object) -> Metrics:
    """The :class:`Metrics` of ``registry`` (default: prometheus-client's global registry)."""
    if registry is None:
        registry = REGISTRY
    if not isinstance(registry, CollectorRegistry):
        raise ConfigurationError(
            f"registry must be a prometheus_client.CollectorRegistry, got {registry!r}"
        )
    limits = validate_label_limits(label_limits)
    with _registry_lock:
        found = _by_registry.get(id(registry))
        if found is None or found.registry is not registry:
            found = Metrics(registry, limits)
            _by_registry[id(registry)] = found
        elif limits is not None:
            found.guard.set_limits(limits)
        return found


class MetricsApp:
    """``/metrics`` for mounting in a web app: call it as WSGI, or use ``.asgi``.

    Calling the object with ``(environ, start_response)`` serves WSGI (Flask, Django); with
    ``(scope, receive, send)`` it serves ASGI (FastAPI, Starlette). OpenMetrics is served when
    the scraper asks for it (that is where exemplars appear).
    """

    def __init__(self, registry: CollectorRegistry) -> None:
        from prometheus_client import make_asgi_app, make_wsgi_app  # noqa: PLC0415

        self.wsgi = make_wsgi_app(registry)
        self.asgi = make_asgi_app(registry)

    def __call__(self, *args: Any) -> Any:
        """Dispatch on the calling convention: two arguments WSGI, three ASGI."""
        if len(args) == 3:
            return self.asgi(*args)
        return self.wsgi(*args)
