"""Prometheus metrics: the families of a registry, the cardinality guard, exposure.

Every family is created once per registry (the families themselves are in
``export.metric_families``). On the request path a metric update is a dict lookup for the labelled
child (``family.child(label=value, ...)``, cached by label values; ``.labels()`` only the first
time) and one ``inc``/``observe``. Label values that come from users (tenant, feature, model,
error types…) pass the cardinality guard first, through :meth:`Metrics.guarded` and the one table
of guard keys below: past a per-label limit of distinct values they become ``__other__`` and
``chainsight_label_overflow_total{label}`` counts it.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Hashable, Iterable, Iterator, Mapping
from typing import Any, Final, Literal

from prometheus_client import REGISTRY, CollectorRegistry
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from chainsight import _names as n
from chainsight._text import valid_text
from chainsight.errors import ConfigurationError
from chainsight.export import metric_families as f
from chainsight.export.metric_families import Guarded, RequestLabels, StageLabels

__all__ = ["GUARD_KEYS", "GuardedLabel", "LabelGuard", "Metrics", "MetricsApp", "metrics_for"]

DEFAULT_LABEL_LIMIT: Final = 100
# A label value is cut to this many UTF-8 bytes (a redacted one, its truncation marker included).
MAX_LABEL_BYTES: Final = 128
_EMPTY: Final = Guarded("")
_OVERFLOW: Final = Guarded(n.OVERFLOW_VALUE)


# Where each user-supplied label value is bounded: the guard's (metric, label) key, written once
# here. A key names one set of admitted values, shared by every family that shows the label: the
# stage name and system on every stage family, the feature, tenant and team on every usage family.
GuardedLabel = Literal[
    "stage",
    "system",
    "operation",
    "feature",
    "tenant",
    "team",
    "validator",
    "to",
    "reason",
    "error_type",
    "gen_ai_request_model",
    "gen_ai_response_model",
    "provider",
    "model",
    "unpriced_provider",
    "unpriced_model",
]
GUARD_KEYS: Final[Mapping[GuardedLabel, tuple[str, str]]] = {
    "stage": (n.M_STAGE_DURATION, n.L_STAGE),
    "system": (n.M_STAGE_DURATION, n.L_SYSTEM),
    "operation": (n.M_GEN_AI_OPERATION_DURATION, n.L_GEN_AI_OPERATION_NAME),
    "feature": (n.M_REQUESTS, n.L_FEATURE),
    "tenant": (n.M_TOKENS, n.L_TENANT),
    "team": (n.M_COST_USD, n.L_TEAM),
    "validator": (n.M_VALIDATIONS, n.L_VALIDATOR),
    "to": (n.M_FALLBACKS, n.L_TO),
    "reason": (n.M_FALLBACKS, n.L_REASON),
    "error_type": (n.M_STAGE_ERRORS, n.L_ERROR_TYPE),
    "gen_ai_request_model": (n.M_GEN_AI_OPERATION_DURATION, n.L_GEN_AI_REQUEST_MODEL),
    "gen_ai_response_model": (n.M_GEN_AI_OPERATION_DURATION, n.L_GEN_AI_RESPONSE_MODEL),
    "provider": (n.M_TOKENS, n.L_PROVIDER),
    "model": (n.M_TOKENS, n.L_MODEL),
    "unpriced_provider": (n.M_UNPRICED_CALLS, n.L_PROVIDER),
    "unpriced_model": (n.M_UNPRICED_CALLS, n.L_MODEL),
}


class LabelGuard:
    """The one place a label value from users becomes safe to expose, and bounded.

    A value is made valid UTF-8 (a lone surrogate would fail every later scrape), redacted
    (``redactor``: the configuration's, so secrets and personal data never become label values,
    whatever the capture setting) and cut to ``MAX_LABEL_BYTES``, in that order. Then the number
    of distinct values of each (metric, label) pair is bounded: memory stays flat under hostile
    input, at most ``limit`` remembered values per pair. Values already admitted as they are
    cost one set lookup; only new or unclean values are cleaned.
    """

    __slots__ = ("_default", "_keys", "_limits", "_lock", "_on_overflow", "_seen", "redactor")

    def __init__(
        self, limits: Mapping[str, int] | None, on_overflow: Callable[[str], None]
    ) -> None:
        self._limits: dict[str, int] = dict(limits or {})
        self._default = self._limits.pop("*", DEFAULT_LABEL_LIMIT)
        self._seen: dict[tuple[str, str], set[Guarded]] = {}
        # GUARD_KEYS, plus the (metric, label) pairs __call__ was given, each its own key.
        self._keys: dict[Hashable, tuple[str, str]] = dict(GUARD_KEYS.items())
        self._on_overflow = on_overflow
        self._lock = threading.Lock()
        #: Set by each configuration (``config.build``); until then values are only cut.
        self.redactor: Callable[[str, int], str | None] | None = None

    def after_fork_in_child(self) -> None:
        """A lock held by another thread at ``fork()`` would stay held forever in the child."""
        self._lock = threading.Lock()

    def set_limits(self, limits: Mapping[str, int] | None) -> None:
        """Change the per-label limits (``"*"`` sets the default)."""
        new = dict(limits or {})
        self._default = new.pop("*", DEFAULT_LABEL_LIMIT)
        self._limits = new

    def __call__(self, metric: str, label: str, value: object) -> Guarded:
        """The value to use for ``label`` on ``metric``: normalised, or ``__other__``."""
        key = (metric, label)
        self._keys.setdefault(key, key)  # the pair names itself
        return self.guarded(key, value)  # type: ignore[arg-type]

    def guarded(self, label: GuardedLabel, value: object) -> Guarded:
        """The value to use for ``label`` (a name of :data:`GUARD_KEYS`): normalised, or
        ``__other__`` past the label's limit.

        Each call is one look at the guard (an overflow is counted per call), so callers guard
        a value once where it enters (the spec, the request, the verb) and reuse the result.
        """
        if value is None:
            return _EMPTY
        # The one place a label value becomes Guarded (typed so, not wrapped: no call per use).
        text: Guarded = value if type(value) is str else str(value)  # type: ignore[assignment]
        key = self._keys[label]
        seen = self._seen.get(key)
        if seen is not None and text in seen:
            return text  # admitted before as it is: it was clean then, and cleaning is idempotent
        text = self._clean(text)
        if seen is not None and text in seen:
            return text
        with self._lock:
            seen = self._seen.setdefault(key, set())
            if text in seen:
                return text
            if len(seen) < self._limits.get(key[1], self._default):
                seen.add(text)
                return text
        self._on_overflow(key[1])
        return _OVERFLOW

    def _clean(self, text: str) -> Guarded:
        redactor = self.redactor
        if redactor is None:
            cut = valid_text(text)[:MAX_LABEL_BYTES].encode("utf-8")[:MAX_LABEL_BYTES]
            return Guarded(cut.decode("utf-8", "ignore"))
        cleaned = redactor(text, MAX_LABEL_BYTES)
        # Redaction failed closed (counted by the redactor): the value cannot be shown.
        return _OVERFLOW if cleaned is None else Guarded(cleaned)


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
    """All of chainsight's metric families in one registry, with cached children.

    Each family is an attribute with a typed ``child(label=value, ...)``; user-supplied label
    values go through ``guarded`` (:meth:`LabelGuard.guarded`) or the label records first.
    """

    def __init__(self, registry: CollectorRegistry, label_limits: Mapping[str, int] | None) -> None:
        self.registry = registry
        self._server: Any = None
        self._server_addr: tuple[str, int] | None = None
        # What configure() asked for: with port 0 the bound port differs from the request.
        self._requested: tuple[str, int] | None = None
        self.guard = LabelGuard(label_limits, self._overflow)
        # ``metrics.guarded("tenant", value)``: the guard itself, no call in between.
        self.guarded = self.guard.guarded
        r = registry
        # chainsight about itself
        self.label_overflow = f.LabelOverflow(r)
        self.internal_errors = f.InternalErrors(r)
        self.export_failures = f.ExportFailures(r)
        # requests and stages
        self.requests = f.Requests(r)
        self.request_duration = f.RequestDuration(r)
        self.stage_duration = f.StageDuration(r)
        self.stage_errors = f.StageErrors(r)
        self.fallbacks = f.Fallbacks(r)
        # usage and cost
        self.tokens = f.Tokens(r)
        self.cost = f.Cost(r)
        self.request_cost = f.RequestCost(r)
        self.unpriced = f.Unpriced(r)
        # retrieval health, validations, budgets, load
        self.retrieval_documents = f.RetrievalDocuments(r)
        self.retrieval_empty = f.RetrievalEmpty(r)
        self.retrieval_duplicates = f.RetrievalDuplicates(r)
        self.retrieval_top_score = f.RetrievalTopScore(r)
        self.validations = f.Validations(r)
        self.budget_rejections = f.BudgetRejections(r)
        self.in_flight = f.InFlight(r)
        # OpenTelemetry GenAI semantic conventions
        self.gen_ai_duration = f.GenAIDuration(r)
        self.gen_ai_tokens = f.GenAITokens(r)
        self.gen_ai_ttfc = f.GenAITimeToFirstChunk(r)
        self.release_collector = _ReleaseCollector()
        self.budget_collector = _BudgetCollector()
        r.register(self.release_collector)
        r.register(self.budget_collector)

    # --- self-telemetry -------------------------------------------------------------------
    def _overflow(self, label: str) -> None:
        self.label_overflow.child(label=label).inc()

    def internal_error(self, where: str) -> None:
        """Count an internal error at ``where`` (a fixed, code-chosen string)."""
        self.internal_errors.child(where=where).inc()

    def invalid(self, verb: str) -> None:
        """Count a bad value handed to a stage verb (dropped, never raised)."""
        self.internal_errors.child(where=f"invalid_argument:{verb}").inc()

    def span_export_failed(self, count: int) -> None:
        """Count spans that failed to export or were dropped (the traces unit: one per span)."""
        self.export_failures.child(signal="traces").inc(count)

    def metric_export_failed(self, points: int) -> None:
        """Count one failed OTLP metric export (the metrics unit: one per batch).

        ``points`` (the data points the batch held) is not the unit: the metrics are cumulative,
        so the next export that succeeds carries every value again, and a count of points would
        grow with the number of series rather than with how long the receiver has refused.
        """
        del points  # documented above: a failed batch counts once whatever its size
        self.export_failures.child(signal="metrics").inc()

    # --- labels ---------------------------------------------------------------------------
    def stage_labels(self, name: str, kind: str, system: str, operation: str) -> StageLabels:
        """A stage's own labels: name, system and operation guarded, its kind as it is."""
        return StageLabels(
            self.guarded("stage", name),
            kind,
            self.guarded("system", system),
            self.guarded("operation", operation),
        )

    def request_labels(self, feature: object, tenant: object, team: object) -> RequestLabels:
        """The labels a request gives the usage and cost of its stages, guarded."""
        return RequestLabels(
            self.guarded("feature", feature),
            self.guarded("tenant", tenant),
            self.guarded("team", team),
        )

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
    def server_address(self) -> tuple[str, int] | None:
        """The ``(address, port)`` ``/metrics`` is served on, if any."""
        return self._server_addr

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
