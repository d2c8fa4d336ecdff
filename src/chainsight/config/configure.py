"""``configure()``, ``reset()``, ``shutdown()``, ``metrics_app()`` and ``metrics_address()``: the
public face of config.

``configure()`` may be called again at any time: it merges what it is given into the earlier
settings (``None`` = unchanged, as in structlog), builds a new immutable snapshot and swaps it
in with one assignment, so stages in flight keep the snapshot they started with.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, NoReturn

from chainsight.config import build, lifecycle, state
from chainsight.config.settings import NAMES, Settings
from chainsight.errors import ConfigurationError
from chainsight.export.metrics import MetricsApp, exposition_registry

if TYPE_CHECKING:
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SpanExporter
    from prometheus_client import CollectorRegistry

    from chainsight.cost.budget import Budget
    from chainsight.cost.budget_store import BudgetStore
    from chainsight.stages.faults import Classifier

__all__ = ["configure", "metrics_address", "metrics_app", "reset", "shutdown"]

# Every configure() call's settings merged, so the next call can change one setting alone.
_settings = Settings()


def configure(
    *,
    service: str | None = None,
    environment: str | None = None,
    release: str | Mapping[str, str] | None = None,
    exporter: str | SpanExporter | None = None,
    sample_ratio: float | None = None,
    enabled: bool | None = None,
    registry: CollectorRegistry | None = None,
    metrics_port: int | None = None,
    metrics_addr: str | None = None,
    label_limits: Mapping[str, int] | None = None,
    classifiers: Sequence[Classifier] | None = None,
    tracer_provider: TracerProvider | None = None,
    prices: str | os.PathLike[str] | Mapping[str, Any] | None = None,
    budgets: Sequence[Budget] | None = None,
    budget_store: BudgetStore | None = None,
    capture_content: bool | str | None = None,
    log_stages: bool | None = None,
    otlp_metrics: bool | None = None,
    conventions: Sequence[str] | None = None,
    redactors: Sequence[Callable[[str], str]] | None = None,
    max_content_bytes: int | None = None,
    content_hash_key: str | bytes | None = None,
    **unknown: NoReturn,
) -> None:
    """Configure chainsight; every argument is keyword-only and optional.

    A value of ``None`` leaves that setting unchanged, so ``configure()`` may be called again to
    change one setting (e.g. ``release``) while requests are in flight: new stages see the new
    settings, stages in flight finish with the old ones. Raises :class:`ConfigurationError` (and
    changes nothing) when a value is not usable or a setting's name is misspelt.

    Args:
        service: ``service.name``; else ``CHAINSIGHT_SERVICE``, ``OTEL_SERVICE_NAME``.
        environment: ``deployment.environment.name``; else ``CHAINSIGHT_ENVIRONMENT``.
        release: a version string, or a mapping such as ``{"model": ..., "prompt": ...}``.
        exporter: ``"otlp"``, ``"otlp:http"``, ``"otlp:grpc"``, ``"console"``,
            ``"jsonl:PATH"``, ``"none"``, or an OpenTelemetry ``SpanExporter`` object.
        sample_ratio: the share of traces kept, 0.0 to 1.0; metrics count every stage.
        enabled: ``False`` makes every decorator and context manager a straight call.
        registry: the prometheus-client registry the metrics live in.
        metrics_port: serve ``/metrics`` on this port (0 picks a free one).
        metrics_addr: the address ``/metrics`` listens on (default ``127.0.0.1``).
        label_limits: distinct values per metric label, e.g. ``{"tenant": 500, "*": 200}``.
        classifiers: callables ``(exception, stage) -> (fault, error_type) | None``, tried on
            each link of the exception chain before the built-in table; ``stage`` is a
            :class:`chainsight.StageFacts` (a ``str`` equal to the kind, so rules written as
            ``(exception, stage_kind)`` keep working). See ``docs/faults.md``.
        tracer_provider: an SDK ``TracerProvider`` to use instead of chainsight's own.
        prices: a TOML path or a mapping of price rows that win over the bundled table.
        budgets: a list of :class:`chainsight.Budget`.
        budget_store: where budget spend is kept, e.g. :class:`chainsight.RedisBudgetStore`.
        capture_content: record prompts and answers, redacted (``True`` or a mode name).
        log_stages: log one line per finished stage on the ``chainsight.stages`` logger.
        otlp_metrics: also push the metrics over OTLP.
        conventions: ``("otel", "openinference")`` adds OpenInference attribute names.
        redactors: extra redaction functions, ``str -> str``.
        max_content_bytes: the cap per captured content attribute (default 4096).
        content_hash_key: an HMAC key so equal redacted values stay joinable.

    See ``docs/api.md`` for each setting's environment variable and default.
    """
    if unknown:
        raise ConfigurationError(_unknown_message(unknown))
    given = Settings(
        service=service,
        environment=environment,
        release=release,
        exporter=exporter,
        sample_ratio=sample_ratio,
        enabled=enabled,
        registry=registry,
        metrics_port=metrics_port,
        metrics_addr=metrics_addr,
        label_limits=label_limits,
        classifiers=classifiers,
        tracer_provider=tracer_provider,
        prices=prices,
        budgets=budgets,
        budget_store=budget_store,
        capture_content=capture_content,
        log_stages=log_stages,
        otlp_metrics=otlp_metrics,
        conventions=conventions,
        redactors=redactors,
        max_content_bytes=max_content_bytes,
        content_hash_key=content_hash_key,
    )
    _configure(given)


def _unknown_message(unknown: Mapping[str, object]) -> str:
    import difflib  # noqa: PLC0415 - only on this error path; it costs 14 ms to import

    hints = []
    for name in sorted(unknown):
        close = difflib.get_close_matches(name, NAMES, n=1)
        hints.append(f"{name} (did you mean {close[0]}?)" if close else name)
    return (
        f"configure() got unknown setting(s) {', '.join(hints)}; known settings are: "
        f"{', '.join(sorted(NAMES))}"
    )


def _configure(given: Settings) -> None:
    global _settings
    with state.lock:
        merged = _settings.merged(given)
        old = state.CONFIG
        new = build.build(merged, old, _settings if old is not None else None)
        _settings = merged
        if new.sampler is not None:
            new.sampler.set_ratio(new.sample_ratio)
        state.install(new)
        lifecycle.retire(old, new)


def reset() -> None:
    """Undo every ``configure()``: shut down what chainsight created and restore the defaults.

    Meant for tests and for switching setups in a long-lived process. The environment's
    configuration is built again on the next use.
    """
    global _settings
    with state.lock:
        old = state.CONFIG
        _settings = Settings()
        state.forget_logged()
        state.install(None)
        if old is not None:
            lifecycle.reset(old)


def shutdown(timeout: float = 5.0) -> bool:
    """Flush and stop span export within ``timeout`` seconds; return True if it finished.

    A dead or slow backend cannot hold the process longer than ``timeout``: what could not be
    sent by then is counted in ``chainsight_export_failures_total``, so every span is either
    received or counted. Providers that a recent ``configure()`` replaced are flushed too.
    """
    cfg = state.CONFIG
    if cfg is None:  # nothing was ever built: nothing to flush
        return True
    return lifecycle.shutdown(cfg, timeout)


def metrics_app() -> MetricsApp:
    """A WSGI app (and ``.asgi``) serving ``/metrics`` for chainsight's registry.

    Mount it in your web framework instead of ``configure(metrics_port=...)``.
    """
    return MetricsApp(exposition_registry(state.current().metrics))


def metrics_address() -> tuple[str, int] | None:
    """The ``(address, port)`` that ``configure(metrics_port=...)`` serves ``/metrics`` on.

    ``None`` when no metrics server runs (no ``metrics_port``, or ``reset()``). With
    ``metrics_port=0`` the system picks a free port: this is where to read it.
    """
    return state.current().metrics.server_address
