"""The metric families: one class each, with its name, help text, label names and a typed child.

``metrics.stage_duration.child(stage=..., kind=..., system=..., outcome=..., release=...)`` takes
the label values by name (mypy checks the names) and returns the cached labelled child: on the hot
path one tuple and one dict lookup, ``.labels()`` only the first time. Labels whose values come
from users are typed :data:`Guarded`, which only the cardinality guard (``Metrics.guarded`` and
the label records below) hands out, so an unguarded value cannot reach a family by accident.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import ClassVar, Final, Generic, NamedTuple, NewType, TypeVar

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from chainsight import _names as n
from chainsight.export.fast_metrics import FastCounter, FastGauge, FastHistogram

__all__ = [
    "NO_REQUEST_LABELS",
    "NO_VALUE",
    "BudgetRejections",
    "Cost",
    "ExportFailures",
    "Fallbacks",
    "Family",
    "GenAIDuration",
    "GenAITimeToFirstChunk",
    "GenAITokens",
    "Guarded",
    "InFlight",
    "InternalErrors",
    "LabelOverflow",
    "RequestCost",
    "RequestDuration",
    "RequestLabels",
    "Requests",
    "RetrievalDocuments",
    "RetrievalDuplicates",
    "RetrievalEmpty",
    "RetrievalTopScore",
    "StageDuration",
    "StageErrors",
    "StageLabels",
    "Tokens",
    "Unpriced",
    "Validations",
]

Guarded = NewType("Guarded", str)
"""A label value that passed the cardinality guard: itself, or ``__other__``."""

NO_VALUE: Final = Guarded("")
"""The empty label value (no tenant, no system...): never counted against a limit."""


class StageLabels(NamedTuple):
    """A stage's own labels, guarded once per configuration (``Spec.refresh``)."""

    stage: Guarded
    kind: str
    system: Guarded
    operation: Guarded


class RequestLabels(NamedTuple):
    """A request's labels for the usage and cost of every stage in it, guarded once per request."""

    feature: Guarded
    tenant: Guarded
    team: Guarded


NO_REQUEST_LABELS: Final = RequestLabels(NO_VALUE, NO_VALUE, NO_VALUE)

M = TypeVar("M", Counter, Gauge, Histogram)


class Family(ABC, Generic[M]):
    """A Prometheus metric family and the cache of its labelled children.

    Subclasses say what the family is (``name``, ``documentation``, ``labelnames``) and give a
    ``child()`` whose keyword-only parameters are the label names, in ``labelnames`` order.
    """

    name: ClassVar[str]
    documentation: ClassVar[str]
    labelnames: ClassVar[tuple[str, ...]]

    __slots__ = ("_children", "metric")

    def __init__(self, registry: CollectorRegistry) -> None:
        self.metric: M = self._create(registry)
        self._children: dict[tuple[str, ...], M] = {}

    @abstractmethod
    def _create(self, registry: CollectorRegistry) -> M:
        """Register the family's metric in ``registry`` (the counter or histogram subclass)."""

    def _add(self, key: tuple[str, ...]) -> M:
        """The first use of a label set: create its child and cache it."""
        child = self.metric.labels(*key)
        self._children[key] = child
        return child

    def labels(self, *values: str, **by_name: str) -> M:
        """prometheus-client's ``labels()`` on the family, uncached (for one-off callers)."""
        return self.metric.labels(*values, **by_name)


class _CounterFamily(Family[Counter]):
    def _create(self, registry: CollectorRegistry) -> Counter:
        return FastCounter(self.name, self.documentation, self.labelnames, registry=registry)


class _HistogramFamily(Family[Histogram]):
    buckets: ClassVar[tuple[float, ...]]

    def _create(self, registry: CollectorRegistry) -> Histogram:
        return FastHistogram(
            self.name, self.documentation, self.labelnames, registry=registry, buckets=self.buckets
        )


# --- self-telemetry ------------------------------------------------------------------------


class LabelOverflow(_CounterFamily):
    """``chainsight_label_overflow_total{label}``."""

    name = n.M_LABEL_OVERFLOW
    documentation = "Label values replaced by __other__ by the cardinality guard."
    labelnames = (n.L_LABEL,)

    def child(self, *, label: str) -> Counter:
        """The cached child for these label values."""
        key = (label,)
        return self._children.get(key) or self._add(key)


class InternalErrors(_CounterFamily):
    """``chainsight_internal_errors_total{where}``."""

    name = n.M_INTERNAL_ERRORS
    documentation = "Errors inside chainsight (caught; the app was not affected), by where."
    labelnames = (n.L_WHERE,)

    def child(self, *, where: str) -> Counter:
        """The cached child for these label values."""
        key = (where,)
        return self._children.get(key) or self._add(key)


class ExportFailures(_CounterFamily):
    """``chainsight_export_failures_total{signal}``."""

    name = n.M_EXPORT_FAILURES
    documentation = (
        "Telemetry that could not be exported, by signal: spans (failed or dropped) for "
        "traces, failed export batches for metrics."
    )
    labelnames = (n.L_SIGNAL,)

    def child(self, *, signal: str) -> Counter:
        """The cached child for these label values."""
        key = (signal,)
        return self._children.get(key) or self._add(key)


# --- requests ------------------------------------------------------------------------------


class Requests(_CounterFamily):
    """``chainsight_requests_total``."""

    name = n.M_REQUESTS
    documentation = "Finished requests by outcome and the fault domain where a failure started."
    labelnames = (n.L_REQUEST, n.L_FEATURE, n.L_OUTCOME, n.L_FAULT, n.L_RELEASE)

    def child(
        self, *, request: Guarded, feature: Guarded, outcome: str, fault: str, release: str
    ) -> Counter:
        """The cached child for these label values."""
        key = (request, feature, outcome, fault, release)
        return self._children.get(key) or self._add(key)


class RequestDuration(_HistogramFamily):
    """``chainsight_request_duration_seconds``."""

    name = n.M_REQUEST_DURATION
    documentation = "Request duration in seconds."
    labelnames = (n.L_REQUEST, n.L_OUTCOME, n.L_RELEASE)
    buckets = n.LATENCY_BUCKETS

    def child(self, *, request: Guarded, outcome: str, release: str) -> Histogram:
        """The cached child for these label values."""
        key = (request, outcome, release)
        return self._children.get(key) or self._add(key)


class RequestCost(_HistogramFamily):
    """``chainsight_request_cost_usd``."""

    name = n.M_REQUEST_COST_USD
    documentation = "Estimated cost of one request in USD."
    labelnames = (n.L_REQUEST, n.L_FEATURE)
    buckets = n.COST_BUCKETS

    def child(self, *, request: Guarded, feature: Guarded) -> Histogram:
        """The cached child for these label values."""
        key = (request, feature)
        return self._children.get(key) or self._add(key)


class InFlight(Family[Gauge]):
    """``chainsight_in_flight_requests`` (summed over live processes in multiprocess mode)."""

    name = n.M_IN_FLIGHT
    documentation = "Requests in progress."
    labelnames = (n.L_REQUEST,)

    def _create(self, registry: CollectorRegistry) -> Gauge:
        return FastGauge(
            self.name,
            self.documentation,
            self.labelnames,
            registry=registry,
            multiprocess_mode="livesum",
        )

    def child(self, *, request: Guarded) -> Gauge:
        """The cached child for these label values."""
        key = (request,)
        return self._children.get(key) or self._add(key)


# --- stages --------------------------------------------------------------------------------


class StageDuration(_HistogramFamily):
    """``chainsight_stage_duration_seconds``."""

    name = n.M_STAGE_DURATION
    documentation = "Stage duration in seconds."
    labelnames = (n.L_STAGE, n.L_KIND, n.L_SYSTEM, n.L_OUTCOME, n.L_RELEASE)
    buckets = n.LATENCY_BUCKETS

    def child(
        self, *, stage: Guarded, kind: str, system: Guarded, outcome: str, release: str
    ) -> Histogram:
        """The cached child for these label values."""
        key = (stage, kind, system, outcome, release)
        return self._children.get(key) or self._add(key)


class StageErrors(_CounterFamily):
    """``chainsight_stage_errors_total``."""

    name = n.M_STAGE_ERRORS
    documentation = (
        "Stages that ended in error (or fell back), by fault domain of the error's origin."
    )
    labelnames = (n.L_STAGE, n.L_KIND, n.L_SYSTEM, n.L_FAULT, n.L_ERROR_TYPE)

    def child(
        self, *, stage: Guarded, kind: str, system: Guarded, fault: str, error_type: Guarded
    ) -> Counter:
        """The cached child for these label values."""
        key = (stage, kind, system, fault, error_type)
        return self._children.get(key) or self._add(key)


class Fallbacks(_CounterFamily):
    """``chainsight_fallbacks_total``."""

    name = n.M_FALLBACKS
    documentation = "Fallback activations."
    labelnames = (n.L_STAGE, n.L_KIND, n.L_TO, n.L_REASON)

    def child(self, *, stage: Guarded, kind: str, to: Guarded, reason: Guarded) -> Counter:
        """The cached child for these label values."""
        key = (stage, kind, to, reason)
        return self._children.get(key) or self._add(key)


class Validations(_CounterFamily):
    """``chainsight_validations_total``."""

    name = n.M_VALIDATIONS
    documentation = "Output validations by result (passed or failed)."
    labelnames = (n.L_STAGE, n.L_VALIDATOR, n.L_RESULT)

    def child(self, *, stage: Guarded, validator: Guarded, result: str) -> Counter:
        """The cached child for these label values."""
        key = (stage, validator, result)
        return self._children.get(key) or self._add(key)


class RetrievalDocuments(_HistogramFamily):
    """``chainsight_retrieval_documents``."""

    name = n.M_RETRIEVAL_DOCUMENTS
    documentation = "Documents returned per retrieval."
    labelnames = (n.L_STAGE, n.L_SYSTEM)
    buckets = n.DOCUMENT_COUNT_BUCKETS

    def child(self, *, stage: Guarded, system: Guarded) -> Histogram:
        """The cached child for these label values."""
        key = (stage, system)
        return self._children.get(key) or self._add(key)


class RetrievalEmpty(_CounterFamily):
    """``chainsight_retrieval_empty_total``."""

    name = n.M_RETRIEVAL_EMPTY
    documentation = "Retrievals that returned no documents."
    labelnames = (n.L_STAGE, n.L_SYSTEM)

    def child(self, *, stage: Guarded, system: Guarded) -> Counter:
        """The cached child for these label values."""
        key = (stage, system)
        return self._children.get(key) or self._add(key)


class RetrievalDuplicates(_CounterFamily):
    """``chainsight_retrieval_duplicate_ids_total``."""

    name = n.M_RETRIEVAL_DUPLICATES
    documentation = "Duplicate document ids returned by retrievals."
    labelnames = (n.L_STAGE, n.L_SYSTEM)

    def child(self, *, stage: Guarded, system: Guarded) -> Counter:
        """The cached child for these label values."""
        key = (stage, system)
        return self._children.get(key) or self._add(key)


class RetrievalTopScore(_HistogramFamily):
    """``chainsight_retrieval_top_score``."""

    name = n.M_RETRIEVAL_TOP_SCORE
    documentation = "Best relevance score per retrieval."
    labelnames = (n.L_STAGE, n.L_SYSTEM)
    buckets = n.SCORE_BUCKETS

    def child(self, *, stage: Guarded, system: Guarded) -> Histogram:
        """The cached child for these label values."""
        key = (stage, system)
        return self._children.get(key) or self._add(key)


# --- usage, cost, budgets ------------------------------------------------------------------


class Tokens(_CounterFamily):
    """``chainsight_tokens_total``."""

    name = n.M_TOKENS
    documentation = "Tokens used, by type (input counts cached tokens too)."
    labelnames = (n.L_PROVIDER, n.L_MODEL, n.L_TOKEN_TYPE, n.L_FEATURE, n.L_TENANT)

    def child(
        self,
        *,
        provider: Guarded,
        model: Guarded,
        token_type: str,
        feature: Guarded,
        tenant: Guarded,
    ) -> Counter:
        """The cached child for these label values."""
        key = (provider, model, token_type, feature, tenant)
        return self._children.get(key) or self._add(key)


class Cost(_CounterFamily):
    """``chainsight_cost_usd_total``."""

    name = n.M_COST_USD
    documentation = "Estimated spend in USD from the price table."
    labelnames = (n.L_PROVIDER, n.L_MODEL, n.L_FEATURE, n.L_TENANT, n.L_TEAM)

    def child(
        self, *, provider: Guarded, model: Guarded, feature: Guarded, tenant: Guarded, team: Guarded
    ) -> Counter:
        """The cached child for these label values."""
        key = (provider, model, feature, tenant, team)
        return self._children.get(key) or self._add(key)


class Unpriced(_CounterFamily):
    """``chainsight_unpriced_calls_total``."""

    name = n.M_UNPRICED_CALLS
    documentation = "Model calls whose cost is unknown (model not in the price table)."
    labelnames = (n.L_PROVIDER, n.L_MODEL)

    def child(self, *, provider: Guarded, model: Guarded) -> Counter:
        """The cached child for these label values."""
        key = (provider, model)
        return self._children.get(key) or self._add(key)


class BudgetRejections(_CounterFamily):
    """``chainsight_budget_rejections_total``."""

    name = n.M_BUDGET_REJECTIONS
    documentation = "Model stages refused because a hard budget was spent."
    labelnames = (n.L_BUDGET,)

    def child(self, *, budget: str) -> Counter:
        """The cached child for these label values."""
        key = (budget,)
        return self._children.get(key) or self._add(key)


# --- OpenTelemetry GenAI semantic conventions ----------------------------------------------


class GenAIDuration(_HistogramFamily):
    """``gen_ai_client_operation_duration_seconds``."""

    name = n.M_GEN_AI_OPERATION_DURATION
    documentation = "GenAI operation duration (OpenTelemetry GenAI semantic conventions)."
    labelnames = (
        n.L_GEN_AI_OPERATION_NAME,
        n.L_GEN_AI_PROVIDER_NAME,
        n.L_GEN_AI_REQUEST_MODEL,
        n.L_GEN_AI_RESPONSE_MODEL,
        n.L_GEN_AI_ERROR_TYPE,
    )
    buckets = n.OPERATION_DURATION_BUCKETS

    def child(
        self,
        *,
        gen_ai_operation_name: Guarded,
        gen_ai_provider_name: Guarded,
        gen_ai_request_model: Guarded,
        gen_ai_response_model: Guarded,
        error_type: Guarded,
    ) -> Histogram:
        """The cached child for these label values."""
        key = (
            gen_ai_operation_name,
            gen_ai_provider_name,
            gen_ai_request_model,
            gen_ai_response_model,
            error_type,
        )
        return self._children.get(key) or self._add(key)


class GenAITokens(_HistogramFamily):
    """``gen_ai_client_token_usage``."""

    name = n.M_GEN_AI_TOKEN_USAGE
    documentation = "Tokens per GenAI operation (OpenTelemetry GenAI semantic conventions)."
    labelnames = (
        n.L_GEN_AI_OPERATION_NAME,
        n.L_GEN_AI_PROVIDER_NAME,
        n.L_GEN_AI_REQUEST_MODEL,
        n.L_GEN_AI_RESPONSE_MODEL,
        n.L_GEN_AI_TOKEN_TYPE,
    )
    buckets = n.TOKEN_USAGE_BUCKETS

    def child(
        self,
        *,
        gen_ai_operation_name: Guarded,
        gen_ai_provider_name: Guarded,
        gen_ai_request_model: Guarded,
        gen_ai_response_model: Guarded,
        gen_ai_token_type: str,
    ) -> Histogram:
        """The cached child for these label values."""
        key = (
            gen_ai_operation_name,
            gen_ai_provider_name,
            gen_ai_request_model,
            gen_ai_response_model,
            gen_ai_token_type,
        )
        return self._children.get(key) or self._add(key)


class GenAITimeToFirstChunk(_HistogramFamily):
    """``gen_ai_client_operation_time_to_first_chunk_seconds``."""

    name = n.M_GEN_AI_TTFC
    documentation = "Time to the first chunk of a streamed GenAI response."
    labelnames = (
        n.L_GEN_AI_OPERATION_NAME,
        n.L_GEN_AI_PROVIDER_NAME,
        n.L_GEN_AI_REQUEST_MODEL,
        n.L_GEN_AI_RESPONSE_MODEL,
    )
    buckets = n.OPERATION_DURATION_BUCKETS

    def child(
        self,
        *,
        gen_ai_operation_name: Guarded,
        gen_ai_provider_name: Guarded,
        gen_ai_request_model: Guarded,
        gen_ai_response_model: Guarded,
    ) -> Histogram:
        """The cached child for these label values."""
        key = (
            gen_ai_operation_name,
            gen_ai_provider_name,
            gen_ai_request_model,
            gen_ai_response_model,
        )
        return self._children.get(key) or self._add(key)
