"""Turn :class:`~chainsight.config.settings.Settings` into a :class:`Config`, in two steps.

:func:`_resolve` parses and validates everything and builds objects that have no effect yet (an
exporter opens no connection when built); it raises :class:`ConfigurationError` while nothing
has changed. :func:`_apply` then does the side effects (the ``/metrics`` server, metric
families, the release gauge, a new tracer provider and its thread) and cannot be refused.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final, cast

from opentelemetry import trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SpanExporter
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from prometheus_client import REGISTRY, CollectorRegistry

from chainsight import _names as n
from chainsight.config import settings as parse
from chainsight.config.settings import Settings
from chainsight.config.snapshot import Config
from chainsight.errors import ConfigurationError
from chainsight.export.metrics import Metrics, metrics_for, validate_label_limits
from chainsight.export.traces import (
    batch_settings,
    build_tracer_provider,
    default_exporter_spec,
    make_exporter,
    parse_exporter,
)
from chainsight.stages.faults import Classifier
from chainsight.stages.redact import Redactor
from chainsight.stages.spans import starter_for

if TYPE_CHECKING:
    from chainsight.cost.budget import BudgetSet
    from chainsight.cost.prices import PriceTable
    from chainsight.export.otlp_metrics import PrometheusOTLPBridge

__all__ = ["build", "from_environment"]

logger = logging.getLogger("chainsight")

_INSTRUMENTATION_NAME: Final = "chainsight"
_DEFAULT_MAX_CONTENT_BYTES: Final = 4096
# The configuration when the environment itself is unusable: instrument nothing, safely.
_SAFE: Final = Settings(enabled=False, sample_ratio=1.0, exporter="none", capture_content=False)

_version = 0


@dataclass(slots=True)
class _Plan:
    """Everything resolved and checked, nothing applied yet."""

    enabled: bool
    service: str
    environment: str | None
    release: dict[str, str]
    release_id: str
    ratio: float
    exporter_name: str
    registry: CollectorRegistry
    label_limits: dict[str, int] | None
    port: int | None
    addr: str
    capture: str | None
    openinference: bool
    log_stages: bool
    classifiers: tuple[Classifier, ...]
    prices: PriceTable
    budgets: BudgetSet | None
    provider: TracerProvider | None
    batching: tuple[int, int, int] | None
    reuse: bool = False
    exporter: SpanExporter | None = None
    bridge: tuple[str, Any] = ("none", None)
    redactor: Redactor | None = None


def build(settings: Settings, previous: Config | None, before: Settings | None) -> Config:
    """Resolve ``settings`` into a new snapshot; raise before changing anything.

    ``previous`` and ``before`` (the settings it was built from) let an unchanged pipeline,
    price table or budget set be kept rather than rebuilt.
    """
    plan = _resolve(settings, previous, before)
    return _apply(plan, settings, previous)


def from_environment() -> Config:
    """The configuration of the environment alone (first use, and after ``reset()``)."""
    try:
        return build(Settings(), None, None)
    except Exception as exc:  # not only ConfigurationError: whatever the SDK raises on a bad value
        # A bad environment variable must not make the app crash: instrument nothing, say why,
        # and let configure() raise the same error where called.
        logger.warning("chainsight is off until configure() succeeds: %s", exc)
        return build(_SAFE, None, None)


def _resolve(settings: Settings, previous: Config | None, before: Settings | None) -> _Plan:
    release, release_id = parse.release(settings.release)
    exporter_given = settings.exporter
    if exporter_given is None:
        exporter_given = default_exporter_spec()
    if isinstance(exporter_given, SpanExporter):
        kind, arg, name = "custom", "", f"custom:{type(exporter_given).__name__}"
    elif not isinstance(exporter_given, str):
        raise ConfigurationError(
            f"exporter must be a string or an OpenTelemetry SpanExporter, got {exporter_given!r} "
            f"({type(exporter_given).__name__}); use one of 'otlp', 'otlp:http', 'otlp:grpc', "
            "'console', 'jsonl:PATH', 'none', or e.g. exporter=InMemorySpanExporter()"
        )
    else:
        try:
            kind, arg = parse_exporter(exporter_given)
        except ConfigurationError as exc:
            if settings.exporter is not None:
                raise
            # The value came from the environment: say which variable holds it.
            raise ConfigurationError(f"{n.ENV_EXPORTER} in the environment: {exc}") from None
        name = exporter_given
    provider = settings.tracer_provider
    if provider is None:
        global_provider = trace.get_tracer_provider()
        if isinstance(global_provider, TracerProvider):
            provider = global_provider  # the app set one up: use it, install nothing
    plan = _Plan(
        enabled=parse.enabled(settings.enabled),
        service=parse.service(settings.service),
        environment=parse.environment(settings.environment),
        release=release,
        release_id=release_id,
        ratio=parse.sample_ratio(settings.sample_ratio),
        exporter_name=name,
        registry=_registry(settings.registry),
        label_limits=validate_label_limits(settings.label_limits),
        port=parse.metrics_port(settings.metrics_port),
        addr=parse.check_str("metrics_addr", settings.metrics_addr) or "127.0.0.1",
        capture=parse.capture_mode(settings.capture_content),
        openinference=parse.conventions(settings.conventions),
        log_stages=parse.flag("log_stages", settings.log_stages),
        classifiers=parse.classifiers(settings.classifiers),
        prices=_prices(settings, previous, before),
        budgets=_budgets(settings, previous, before),
        provider=provider,
        # Checked on every configure() that exports through chainsight's own pipeline, and a
        # change rebuilds it: whether a new OTEL_BSP_* value applies must not depend on which
        # other arguments this call happens to change.
        batching=batch_settings() if provider is None and kind != "none" else None,
    )
    parse.flag("otlp_metrics", settings.otlp_metrics)
    plan.redactor = _redactor(settings, plan.registry)
    plan.reuse = _reusable(plan, settings, previous, before)
    if provider is None and not plan.reuse:
        plan.exporter = _exporter(kind, arg, exporter_given)
    plan.bridge = _otlp_bridge_plan(plan, settings, previous)
    return plan


def _registry(value: object) -> CollectorRegistry:
    if value is None:
        return REGISTRY
    if not isinstance(value, CollectorRegistry):
        raise ConfigurationError(
            f"registry must be a prometheus_client.CollectorRegistry, got {value!r}"
        )
    return value


def _reusable(
    plan: _Plan, settings: Settings, previous: Config | None, before: Settings | None
) -> bool:
    """Whether the previous snapshot's own pipeline can serve ``plan`` unchanged."""
    return (
        plan.provider is None
        and previous is not None
        and before is not None
        and previous.batching == plan.batching
        and previous.owned_provider is not None
        and previous.service == plan.service
        and previous.environment == plan.environment
        and previous.exporter == plan.exporter_name
        and _same_exporter(before.exporter, settings.exporter)
        and previous.metrics.registry is plan.registry  # export failures count where they did
    )


def _same_exporter(old: object, new: object) -> bool:
    """A given exporter object is reused only if it is the very same object."""
    if isinstance(old, SpanExporter) or isinstance(new, SpanExporter):
        return old is new
    return True


def _exporter(kind: str, arg: str, given: object) -> SpanExporter | None:
    """The span exporter, built before any side effect: a bad one (e.g. a missing directory)
    must fail while nothing has changed yet. Building one opens no connection."""
    if isinstance(given, SpanExporter):
        return given
    try:
        return make_exporter(kind, arg)
    except ConfigurationError:
        raise
    except Exception as exc:  # e.g. the SDK refusing OTEL_EXPORTER_OTLP_COMPRESSION
        raise ConfigurationError(
            f"the {kind!r} span exporter could not be built from its settings "
            f"(OTEL_EXPORTER_OTLP_* variables): {type(exc).__name__}: {exc}"
        ) from exc


def _otlp_bridge_plan(plan: _Plan, settings: Settings, previous: Config | None) -> tuple[str, Any]:
    """Decide on OTLP metrics before any side effect: none, reuse the old bridge, or a new one
    whose exporter is built (and its settings refused) now."""
    if not settings.otlp_metrics:
        return ("none", None)
    old = previous.otlp_bridge if previous is not None else None
    if (
        old is not None
        and previous is not None
        and previous.metrics.registry is plan.registry
        and previous.service == plan.service
        and previous.environment == plan.environment
    ):
        return ("reuse", old)
    from chainsight.export.otlp_metrics import exporter_from_environment  # noqa: PLC0415

    return ("new", exporter_from_environment())


def _resource(service: str, environment: str | None) -> Resource:
    attributes: dict[str, str] = {n.SERVICE_NAME: service}
    if environment:
        attributes[n.DEPLOYMENT_ENVIRONMENT_NAME] = environment
    return Resource.create(attributes)


def _otlp_bridge(plan: _Plan, metrics: Metrics) -> PrometheusOTLPBridge | None:
    """OTLP metrics, opt-in: produced from the Prometheus registry at export time only."""
    what, value = plan.bridge
    if what == "none":
        return None
    if what == "reuse":
        return cast("PrometheusOTLPBridge", value)
    from chainsight.export.metrics import exposition_registry  # noqa: PLC0415
    from chainsight.export.otlp_metrics import PrometheusOTLPBridge  # noqa: PLC0415

    interval, exporter = value
    return PrometheusOTLPBridge(
        exposition_registry(metrics),
        resource=_resource(plan.service, plan.environment),
        on_failure=metrics.metric_export_failed,
        interval=interval,
        exporter=exporter,
    )


def _prices(settings: Settings, previous: Config | None, before: Settings | None) -> PriceTable:
    from chainsight.cost.prices import PriceTable  # noqa: PLC0415 - the table loads lazily

    given = settings.prices
    if previous is not None and before is not None and before.prices is given:
        return previous.prices
    table = PriceTable.bundled()
    return table if given is None else table.with_overrides(given)


def _budgets(
    settings: Settings, previous: Config | None, before: Settings | None
) -> BudgetSet | None:
    given, store = settings.budgets, settings.budget_store
    if not given:
        if store is not None:
            raise ConfigurationError(
                "budget_store= was given without budgets=[...]; add chainsight.Budget(...) "
                "objects or drop the store"
            )
        return None
    if (
        previous is not None
        and previous.budgets is not None
        and before is not None
        and before.budgets is given
        and before.budget_store is store
    ):
        return previous.budgets
    from chainsight.cost.budget import Budget, BudgetSet  # noqa: PLC0415

    if isinstance(given, Budget) or not isinstance(given, Sequence):
        raise ConfigurationError(
            f"budgets must be a list of chainsight.Budget, got {given!r}; write "
            "budgets=[chainsight.Budget('daily', 50.0)]"
        )
    for item in given:
        if not isinstance(item, Budget):
            raise ConfigurationError(f"budgets contains {item!r}, which is not a chainsight.Budget")
    return BudgetSet(list(given), store)


def _apply(plan: _Plan, settings: Settings, previous: Config | None) -> Config:
    """The side effects, in an order where the only one that may still fail comes first."""
    global _version
    metrics = metrics_for(plan.registry, None)
    if plan.port is not None:
        metrics.serve(plan.port, plan.addr)  # may still fail (port taken): it changes nothing then
    metrics.guard.set_limits(plan.label_limits)
    metrics.guard.redactor = plan.redactor
    metrics.set_release(
        plan.release_id, plan.release, service=plan.service, environment=plan.environment or ""
    )
    if plan.budgets is not None:
        metrics.budget_collector.source = plan.budgets.states
    bridge = _otlp_bridge(plan, metrics)
    owned, processor, sampler = _pipeline(plan, previous, metrics)
    provider = owned if plan.provider is None else plan.provider
    tracer = cast(TracerProvider, provider).get_tracer(_INSTRUMENTATION_NAME)
    _version += 1
    return Config(
        version=_version,
        enabled=plan.enabled,
        service=plan.service,
        environment=plan.environment,
        release=plan.release,
        release_id=plan.release_id,
        release_attributes=_release_attributes(plan.release_id, plan.release),
        tracer=tracer,
        sample_ratio=plan.ratio,
        exporter=plan.exporter_name,
        metrics=metrics,
        classifiers=plan.classifiers,
        raise_internal=parse.env_bool(n.ENV_RAISE_INTERNAL) or False,
        prices=plan.prices,
        budgets=plan.budgets,
        redactor=cast(Redactor, plan.redactor),
        capture=plan.capture,
        openinference=plan.openinference,
        log_stages=plan.log_stages,
        otlp_bridge=bridge,
        owned_provider=owned,
        batching=plan.batching,
        processor=processor,
        sampler=sampler,
        start_span=starter_for(tracer),
    )


def _pipeline(plan: _Plan, previous: Config | None, metrics: Metrics) -> tuple[Any, Any, Any]:
    """chainsight's own provider, processor and sampler (all None when the app brings one)."""
    if plan.provider is not None:
        return None, None, None
    if plan.reuse and previous is not None:
        # Same backend: keep the provider (a new sample_ratio is applied in place once this
        # configuration is committed), so nothing is retired and no span is stranded.
        return previous.owned_provider, previous.processor, previous.sampler
    return build_tracer_provider(
        resource=_resource(plan.service, plan.environment),
        sample_ratio=plan.ratio,
        exporter=plan.exporter,
        on_failure=metrics.span_export_failed,
        # OpenTelemetry's testing pattern: an in-memory exporter gets each span as it ends,
        # so a test reads what it just did without flushing (chainsight.testing uses this).
        synchronous=isinstance(plan.exporter, InMemorySpanExporter),
        batching=plan.batching,
    )


def _release_attributes(release_id: str, release: Mapping[str, str]) -> dict[str, str]:
    attributes = {n.CS_RELEASE_ID: release_id}
    attributes.update({n.CS_RELEASE_PREFIX + k: v for k, v in release.items()})
    return attributes


def _redactor(settings: Settings, registry: CollectorRegistry) -> Redactor:
    """The content redactor; its settings are refused here, before any side effect."""
    return Redactor(
        extra=tuple(settings.redactors or ()),
        hash_key=settings.content_hash_key,  # type: ignore[arg-type]  # Redactor checks it
        max_bytes=_DEFAULT_MAX_CONTENT_BYTES
        if settings.max_content_bytes is None
        else settings.max_content_bytes,
        # Failures are rare: the metrics are looked up then, not captured before they exist.
        on_failure=lambda _exc: metrics_for(registry, None).internal_error("redaction_failed"),
    )
