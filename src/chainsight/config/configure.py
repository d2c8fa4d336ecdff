"""``configure()`` / ``reset()`` / ``shutdown()``: the one place settings are resolved.

Settings follow argument > environment variable > default, parsed here only. ``configure()`` may
be called again at any time: it builds a new immutable :class:`Config` snapshot and swaps it in
with one assignment, so stages in flight keep the snapshot they started with. The request path
reads :data:`CONFIG` once per stage.
"""

from __future__ import annotations

import atexit
import contextlib
import logging
import math
import os
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Final, cast

from opentelemetry import trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider

from chainsight import _names as n
from chainsight.errors import ConfigurationError
from chainsight.export.metrics import Metrics, metrics_for, validate_label_limits
from chainsight.export.traces import (
    DroppingBatchProcessor,
    SwitchableSampler,
    batch_settings,
    build_tracer_provider,
    default_exporter_spec,
    make_exporter,
    parse_exporter,
)
from chainsight.stages.content import capture_mode
from chainsight.stages.faults import Classifier
from chainsight.stages.redact import Redactor

if TYPE_CHECKING:
    from chainsight.cost.budget import BudgetSet
    from chainsight.cost.prices import PriceTable
    from chainsight.export.otlp_metrics import PrometheusOTLPBridge

__all__ = ["CONFIG", "Config", "configure", "report_internal", "reset", "shutdown"]

logger = logging.getLogger("chainsight")

_TRUE: Final = frozenset({"1", "true", "yes", "on"})
_FALSE: Final = frozenset({"0", "false", "no", "off"})
_SECRET_RELEASE_KEYS: Final = frozenset({"id"})
_INSTRUMENTATION_NAME: Final = "chainsight"


def _env_bool(name: str) -> bool | None:
    raw = os.environ.get(name)
    if raw is None or not raw.strip():
        return None
    value = raw.strip().lower()
    if value in _TRUE:
        return True
    if value in _FALSE:
        return False
    logger.warning("ignoring %s=%r: expected true or false", name, raw)
    return None


@dataclass(frozen=True, slots=True)
class Config:
    """One immutable snapshot of the resolved settings."""

    version: int
    enabled: bool
    service: str
    environment: str | None
    release: Mapping[str, str]
    release_id: str
    release_attributes: Mapping[str, str]
    tracer: trace.Tracer
    sample_ratio: float
    exporter: str
    metrics: Metrics
    classifiers: tuple[Classifier, ...]
    raise_internal: bool
    prices: PriceTable
    budgets: BudgetSet | None
    redactor: Redactor
    capture: str | None = None
    openinference: bool = False
    otlp_bridge: PrometheusOTLPBridge | None = None
    owned_provider: TracerProvider | None = None
    processor: DroppingBatchProcessor | None = None
    sampler: SwitchableSampler | None = None
    batching: tuple[int, int, int] | None = None
    extras: Mapping[str, Any] = field(default_factory=dict)


# Explicit configure() arguments, merged across calls (None = unchanged, as in structlog).
_settings: dict[str, Any] = {}
_lock = threading.RLock()
_version = 0
_internal_logged: set[str] = set()
_atexit_registered = False
CONFIG: Config  # set at the bottom of this module and by every configure()/reset()


def _release(value: object) -> tuple[dict[str, str], str]:
    if value is None:
        return {}, "unknown"
    if isinstance(value, str):
        if not value:
            raise ConfigurationError("release='' is empty; give a version string or a mapping")
        return {}, value
    if not isinstance(value, Mapping):
        raise ConfigurationError(
            f"release must be a string or a mapping of str to str, got {value!r} "
            f"({type(value).__name__}), e.g. release={{'model': 'gpt-4o', 'prompt': 'answer@7'}}"
        )
    items: dict[str, str] = {}
    for key, val in value.items():
        if not isinstance(key, str) or not key.isidentifier():
            raise ConfigurationError(
                f"release key {key!r} must be an identifier such as 'model' or 'prompt': it "
                "becomes a metric label and a span attribute"
            )
        if not isinstance(val, (str, int, float)) or isinstance(val, bool):
            raise ConfigurationError(
                f"release[{key!r}] = {val!r} must be a string (or number), e.g. 'answer@7'"
            )
        items[key] = str(val)
    explicit = items.pop("id", None)
    release_id = explicit or ",".join(f"{k}={v}" for k, v in sorted(items.items())) or "unknown"
    return items, release_id


def _sample_ratio(value: object) -> float:
    if value is None:
        raw = os.environ.get(n.ENV_SAMPLE_RATIO)
        if raw is None:
            return 1.0
        try:
            value = float(raw)
        except ValueError:
            raise ConfigurationError(
                f"{n.ENV_SAMPLE_RATIO}={raw!r} is not a number; use a value from 0.0 to 1.0"
            ) from None
    if (
        not isinstance(value, (int, float))
        or isinstance(value, bool)
        or math.isnan(value)
        or not 0.0 <= value <= 1.0
    ):
        raise ConfigurationError(
            f"sample_ratio must be a number from 0.0 to 1.0, got {value!r}; 1.0 keeps every trace"
        )
    return float(value)


def _check_str(name: str, value: object) -> str | None:
    if value is None or isinstance(value, str):
        return value
    raise ConfigurationError(f"{name} must be a string, got {value!r} ({type(value).__name__})")


_KNOWN: Final = frozenset(
    {
        "service", "environment", "release", "exporter", "sample_ratio", "enabled", "registry",
        "metrics_port", "metrics_addr", "label_limits", "classifiers", "tracer_provider",
        "prices", "budgets", "budget_store", "capture_content", "log_stages", "otlp_metrics",
        "conventions", "redactors", "max_content_bytes", "content_hash_key",
    }
)  # fmt: skip


def _build(settings: Mapping[str, Any], previous: Config | None) -> Config:
    """Resolve settings into a new snapshot; raise ConfigurationError before changing anything."""
    global _version
    enabled = settings.get("enabled")
    if enabled is None:
        enabled = _env_bool(n.ENV_ENABLED)
    if enabled is None:
        disabled = _env_bool(n.ENV_OTEL_SDK_DISABLED)
        enabled = not disabled if disabled is not None else True
    if not isinstance(enabled, bool):
        raise ConfigurationError(f"enabled must be True or False, got {enabled!r}")

    service = _check_str("service", settings.get("service")) or (
        os.environ.get(n.ENV_SERVICE)
        or os.environ.get(n.ENV_OTEL_SERVICE_NAME)
        or "unknown_service"
    )
    environment = _check_str("environment", settings.get("environment")) or os.environ.get(
        n.ENV_ENVIRONMENT
    )
    release, release_id = _release(settings.get("release"))
    ratio = _sample_ratio(settings.get("sample_ratio"))
    exporter_spec = settings.get("exporter")
    if exporter_spec is None:
        exporter_spec = default_exporter_spec()
    kind, arg = parse_exporter(exporter_spec)

    classifiers = tuple(settings.get("classifiers") or ())
    for rule in classifiers:
        if not callable(rule):
            raise ConfigurationError(
                f"classifiers must be callables (exception, stage_kind) -> (fault, error_type) "
                f"or None; got {rule!r}"
            )
    # Everything that can be refused is checked first; side effects (the /metrics server, the
    # release gauge, threads of a new provider) come only after, so a failed configure()
    # changes nothing.
    label_limits = validate_label_limits(settings.get("label_limits"))
    port = settings.get("metrics_port")
    addr = _check_str("metrics_addr", settings.get("metrics_addr")) or "127.0.0.1"
    if port is not None and (type(port) is not int or not 0 <= port <= 65535):
        raise ConfigurationError(
            f"metrics_port must be an integer from 0 to 65535, got {port!r}; 9464 is the "
            "usual Prometheus exporter port"
        )
    capture = capture_mode(settings.get("capture_content"))
    openinference = _conventions(settings.get("conventions"))
    if settings.get("otlp_metrics") not in (None, True, False):
        raise ConfigurationError(
            f"otlp_metrics must be True or False, got {settings.get('otlp_metrics')!r}"
        )
    metrics = metrics_for(settings.get("registry"), None)
    release_attrs = {n.CS_RELEASE_ID: release_id}
    release_attrs.update({n.CS_RELEASE_PREFIX + k: v for k, v in release.items()})
    prices = _prices(settings, previous)
    budgets = _budgets(settings, previous)
    redactor = Redactor(
        extra=tuple(settings.get("redactors") or ()),
        hash_key=settings.get("content_hash_key"),
        max_bytes=4096
        if settings.get("max_content_bytes") is None
        else settings["max_content_bytes"],
        on_failure=lambda _exc: metrics.internal_error("redaction_failed"),
    )

    log_stages = settings.get("log_stages", False)
    if not isinstance(log_stages, bool):
        raise ConfigurationError(f"log_stages must be True or False, got {log_stages!r}")
    raise_internal = _env_bool(n.ENV_RAISE_INTERNAL) or False
    provider = settings.get("tracer_provider")
    if provider is None:
        global_provider = trace.get_tracer_provider()
        if isinstance(global_provider, TracerProvider):
            provider = global_provider  # the app set one up: use it, install nothing
    # Checked on every configure() that exports through chainsight's own pipeline, and a
    # change rebuilds it: whether a new OTEL_BSP_* value applies must not depend on which
    # other arguments this call happens to change.
    batching = batch_settings() if provider is None and kind != "none" else None
    reuse = (
        provider is None
        and previous is not None
        and previous.batching == batching
        and previous.owned_provider is not None
        and previous.service == service
        and previous.environment == environment
        and previous.exporter == exporter_spec
        and previous.metrics is metrics  # export failures count in the right registry
        and previous.extras.get("_test_exporter") is settings.get("_test_exporter")
    )
    exporter: Any = None
    if provider is None and not reuse:
        # Built before any side effect: a bad exporter (e.g. a missing directory) must fail
        # while nothing has changed yet. Building one opens no connection.
        if "_test_exporter" in settings:
            exporter = settings["_test_exporter"]
        else:
            try:
                exporter = make_exporter(kind, arg)
            except ConfigurationError:
                raise
            except Exception as exc:  # e.g. the SDK refusing OTEL_EXPORTER_OTLP_COMPRESSION
                raise ConfigurationError(
                    f"the {kind!r} span exporter could not be built from its settings "
                    f"(OTEL_EXPORTER_OTLP_* variables): {type(exc).__name__}: {exc}"
                ) from exc

    bridge_plan = _otlp_bridge_plan(settings, previous, metrics, service, environment)

    # --- side effects, from here on nothing is refused -----------------------------------
    if port is not None:
        metrics.serve(port, addr)  # may still fail (port taken): it changes nothing then
    metrics.guard.set_limits(label_limits)
    metrics.set_release(release_id, release, service=service, environment=environment or "")
    if budgets is not None:
        metrics.budget_collector.source = budgets.states
    bridge = _otlp_bridge(bridge_plan, metrics, service, environment)
    owned: TracerProvider | None = None
    processor: DroppingBatchProcessor | None = None
    sampler: SwitchableSampler | None = None
    if provider is None:
        if reuse and previous is not None:
            # Same backend: keep the provider (a new sample_ratio is applied in place once
            # this configuration is committed), so nothing is retired and no span is stranded.
            owned, processor, sampler = (
                previous.owned_provider,
                previous.processor,
                previous.sampler,
            )
        else:
            attributes: dict[str, str] = {n.SERVICE_NAME: service}
            if environment:
                attributes[n.DEPLOYMENT_ENVIRONMENT_NAME] = environment
            owned, processor, sampler = build_tracer_provider(
                resource=Resource.create(attributes),
                sample_ratio=ratio,
                exporter=exporter,
                on_failure=metrics.span_export_failed,
                synchronous="_test_exporter" in settings,
                batching=batching,
            )
        provider = owned
    tracer = cast(TracerProvider, provider).get_tracer(_INSTRUMENTATION_NAME)

    _version += 1
    extras = {k: v for k, v in settings.items() if k not in _KNOWN_CORE}
    return Config(
        version=_version,
        enabled=enabled,
        service=service,
        environment=environment,
        release=release,
        release_id=release_id,
        release_attributes=release_attrs,
        tracer=tracer,
        sample_ratio=ratio,
        exporter=exporter_spec,
        metrics=metrics,
        classifiers=classifiers,
        raise_internal=raise_internal,
        prices=prices,
        budgets=budgets,
        redactor=redactor,
        capture=capture,
        openinference=openinference,
        otlp_bridge=bridge,
        owned_provider=owned,
        batching=batching,
        processor=processor,
        sampler=sampler,
        extras=extras,
    )


_NO_BRIDGE: Final = ("none", None)


def _otlp_bridge_plan(
    settings: Mapping[str, Any],
    previous: Config | None,
    metrics: Metrics,
    service: str,
    environment: str | None,
) -> tuple[str, Any]:
    """Decide on OTLP metrics before any side effect: none, reuse the old bridge, or a new one
    whose exporter is built (and its settings refused) now."""
    wanted = settings.get("otlp_metrics")
    if wanted is None or wanted is False:
        return _NO_BRIDGE
    old = previous.otlp_bridge if previous is not None else None
    if (
        old is not None
        and previous is not None
        and previous.metrics is metrics
        and previous.service == service
        and previous.environment == environment
    ):
        return ("reuse", old)
    from chainsight.export.otlp_metrics import exporter_from_environment  # noqa: PLC0415

    return ("new", exporter_from_environment())


def _otlp_bridge(
    plan: tuple[str, Any], metrics: Metrics, service: str, environment: str | None
) -> PrometheusOTLPBridge | None:
    """OTLP metrics, opt-in: produced from the Prometheus registry at export time only."""
    what, value = plan
    if what == "none":
        return None
    if what == "reuse":
        return cast("PrometheusOTLPBridge", value)
    from chainsight.export.metrics import exposition_registry  # noqa: PLC0415
    from chainsight.export.otlp_metrics import PrometheusOTLPBridge  # noqa: PLC0415

    interval, exporter = value
    attributes: dict[str, str] = {n.SERVICE_NAME: service}
    if environment:
        attributes[n.DEPLOYMENT_ENVIRONMENT_NAME] = environment
    return PrometheusOTLPBridge(
        exposition_registry(metrics),
        resource=Resource.create(attributes),
        on_failure=lambda lost: metrics.child(metrics.export_failures, "metrics").inc(lost),
        interval=interval,
        exporter=exporter,
    )


def _conventions(value: object) -> bool:
    """``conventions=("otel", "openinference")``: True when OpenInference names are added."""
    if value is None:
        return False
    if isinstance(value, str) or not isinstance(value, (list, tuple, set, frozenset)):
        raise ConfigurationError(
            f"conventions must be a tuple such as ('otel', 'openinference'), got {value!r}"
        )
    unknown = set(value) - {"otel", "openinference"}
    if unknown or "otel" not in value:
        raise ConfigurationError(
            f"conventions={value!r}: 'otel' is always on; the only other choice is 'openinference'"
        )
    return "openinference" in value


def _prices(settings: Mapping[str, Any], previous: Config | None) -> PriceTable:
    from chainsight.cost.prices import PriceTable  # noqa: PLC0415 - the table loads lazily

    given = settings.get("prices")
    if previous is not None and previous.extras.get("prices") is given:
        return previous.prices
    table = PriceTable.bundled()
    return table if given is None else table.with_overrides(given)


def _budgets(settings: Mapping[str, Any], previous: Config | None) -> BudgetSet | None:
    given = settings.get("budgets")
    store = settings.get("budget_store")
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
        and previous.extras.get("budgets") is given
        and previous.extras.get("budget_store") is store
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


_KNOWN_CORE: Final = frozenset(
    {
        "service", "environment", "release", "exporter", "sample_ratio", "enabled", "registry",
        "metrics_port", "metrics_addr", "label_limits", "classifiers", "tracer_provider",
    }
)  # fmt: skip


def _retire(old: Config | None, new: Config) -> None:
    """Shut down a provider (and OTLP metrics bridge) we no longer use, off the caller's thread."""
    if old is None:
        return
    if old.otlp_bridge is not None and old.otlp_bridge is not new.otlp_bridge:
        threading.Thread(
            target=old.otlp_bridge.shutdown, args=(5.0,), name="chainsight-retire", daemon=True
        ).start()
    if old.owned_provider is None or old.owned_provider is new.owned_provider:
        return
    retiring = _Owned(old.owned_provider, old.processor)
    with _retiring_lock:
        _retiring.append(retiring)
    threading.Thread(
        target=_retire_later, args=(retiring,), name="chainsight-retire", daemon=True
    ).start()


RETIRE_GRACE_S: Final = 2.0
RETIRE_TIMEOUT_S: Final = 5.0


@dataclass(frozen=True, slots=True)
class _Owned:
    """A tracer provider chainsight created, with the processor that accounts for its spans."""

    provider: TracerProvider
    processor: DroppingBatchProcessor | None


# Providers replaced by configure() whose queues are still being flushed: shutdown() must
# finish (or count) them too, or a process exiting right after a reconfiguration loses spans.
_retiring: list[_Owned] = []
_retiring_lock = threading.Lock()
# Set by shutdown(): retiring providers skip the rest of their grace period.
_expedite = threading.Event()


def _retire_later(owned: _Owned) -> None:
    # Stages in flight keep the snapshot they started with: give them a moment to end on the
    # old provider and be exported; any that end later are counted as dropped.
    _expedite.wait(RETIRE_GRACE_S)
    _close(owned, RETIRE_TIMEOUT_S)
    with _retiring_lock, contextlib.suppress(ValueError):
        _retiring.remove(owned)


def _bounded_shutdown(provider: TracerProvider, timeout: float) -> None:
    try:
        provider.force_flush(int(timeout * 1000))
        provider.shutdown()
    except Exception:  # a failing exporter must not surface at shutdown
        logger.debug("chainsight: exporter failed during shutdown", exc_info=True)


def _close(owned: _Owned, timeout: float) -> bool:
    """Flush and shut down within ``timeout``; past it, give up and count what is left."""
    worker = threading.Thread(
        target=_bounded_shutdown,
        args=(owned.provider, timeout),
        name="chainsight-shutdown",
        daemon=True,
    )
    worker.start()
    worker.join(max(timeout, 0.0))
    if not worker.is_alive():
        return True
    if owned.processor is not None:
        owned.processor.abandon()
    return False


def configure(**kwargs: Any) -> None:
    """Configure chainsight; every argument is keyword-only and optional.

    A value of ``None`` leaves that setting unchanged, so ``configure()`` may be called again to
    change one setting (e.g. ``release``) while requests are in flight: new stages see the new
    settings, stages in flight finish with the old ones. Raises :class:`ConfigurationError` (and
    changes nothing) when a value is not usable. See ``docs/api.md`` for every setting.
    """
    global CONFIG, _atexit_registered
    unknown = sorted(set(kwargs) - _KNOWN - {"_test_exporter"})
    if unknown:
        raise ConfigurationError(
            f"configure() got unknown setting(s) {', '.join(unknown)}; known settings are: "
            f"{', '.join(sorted(_KNOWN))}"
        )
    with _lock:
        merged = dict(_settings)
        merged.update({k: v for k, v in kwargs.items() if v is not None})
        old = _current()
        new = _build(merged, old)
        _settings.clear()
        _settings.update(merged)
        if new.sampler is not None:
            new.sampler.set_ratio(new.sample_ratio)
        CONFIG = new
        _retire(old, new)
        from chainsight.logging import enable_stage_logs  # noqa: PLC0415 - it imports _stage

        enable_stage_logs(bool(merged.get("log_stages", False)))
        if not _atexit_registered:
            atexit.register(_at_exit)
            _atexit_registered = True


def _current() -> Config | None:
    return globals().get("CONFIG")


def _from_environment() -> Config:
    """The configuration of the environment alone (at import, and after reset())."""
    try:
        return _build({}, None)
    except Exception as exc:  # not only ConfigurationError: whatever the SDK raises on a bad value
        # A bad environment variable must not make `import chainsight` crash the app:
        # instrument nothing, say why, and let configure() raise the same error where called.
        logger.warning("chainsight is off until configure() succeeds: %s", exc)
        safe = {"enabled": False, "sample_ratio": 1.0, "exporter": "none", "capture_content": False}
        return _build(safe, None)


def reset() -> None:
    """Undo every ``configure()``: shut down what chainsight created and restore the defaults.

    Meant for tests and for switching setups in a long-lived process.
    """
    global CONFIG
    with _lock:
        old = _current()
        _settings.clear()
        _internal_logged.clear()
        if old is not None:
            old.metrics.stop_server()
            if old.otlp_bridge is not None:
                old.otlp_bridge.shutdown(2.0)
        CONFIG = _from_environment()
        from chainsight.logging import enable_stage_logs  # noqa: PLC0415 - it imports _stage

        enable_stage_logs(False)
        _expedite.clear()
        if old is not None and old.owned_provider is not None:
            # A stuck exporter must not hold reset() (and the test or reload calling it).
            _close(_Owned(old.owned_provider, old.processor), 2.0)


def shutdown(timeout: float = 5.0) -> bool:
    """Flush and stop span export within ``timeout`` seconds; return True if it finished.

    A dead or slow backend cannot hold the process longer than ``timeout``: what could not be
    sent by then is counted in ``chainsight_export_failures_total``, so every span is either
    received or counted. Providers that a recent ``configure()`` replaced are flushed too.
    """
    deadline = time.monotonic() + max(timeout, 0.0)
    cfg = CONFIG
    _expedite.set()
    bridge_ok = True
    if cfg.otlp_bridge is not None:
        bridge_ok = cfg.otlp_bridge.shutdown(timeout / 2)
    with _retiring_lock:
        targets = list(_retiring)
    if cfg.owned_provider is not None:
        targets.append(_Owned(cfg.owned_provider, cfg.processor))
    results: list[bool] = []
    workers = [
        threading.Thread(
            target=lambda o=owned: results.append(_close(o, max(0.0, deadline - time.monotonic()))),
            name="chainsight-shutdown",
            daemon=True,
        )
        for owned in targets
    ]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(max(0.0, deadline - time.monotonic()) + 0.1)
    finished = all(results) and len(results) == len(targets)
    if not finished:
        for owned in targets:  # a close still running past the deadline: give up on it now
            if owned.processor is not None:
                owned.processor.abandon()
    return finished and bridge_ok


def _shutdown_timeout() -> float:
    raw = os.environ.get(n.ENV_SHUTDOWN_TIMEOUT, "")
    try:
        value = float(raw) if raw.strip() else DEFAULT_EXIT_TIMEOUT_S
    except ValueError:
        logger.warning("ignoring %s=%r: expected seconds", n.ENV_SHUTDOWN_TIMEOUT, raw)
        return DEFAULT_EXIT_TIMEOUT_S
    return value if math.isfinite(value) and value >= 0 else DEFAULT_EXIT_TIMEOUT_S


DEFAULT_EXIT_TIMEOUT_S: Final = 3.0


def _at_exit() -> None:
    shutdown(timeout=_shutdown_timeout())


def report_internal(where: str, exc: BaseException) -> None:
    """An error inside chainsight: count it, log it once per place, never raise it.

    With ``CHAINSIGHT_RAISE_INTERNAL_ERRORS=1`` (our own test suite) it is re-raised so bugs show.
    """
    cfg = CONFIG
    try:
        cfg.metrics.internal_error(where)
        if where not in _internal_logged:
            _internal_logged.add(where)
            logger.error("chainsight internal error in %s (logged once)", where, exc_info=exc)
    except Exception:  # noqa: S110 - the reporter itself must never fail the app
        pass
    if cfg.raise_internal:
        raise exc


def _after_fork_in_child() -> None:
    """Make a forked child (gunicorn/uWSGI workers, multiprocessing) work on its own.

    Threads do not survive ``fork()`` and a lock another thread held at that moment stays held
    forever: the SDK restarts its batch export thread itself; here we renew our locks, our
    count of queued spans, and the OTLP metrics thread. In prometheus-client multiprocess mode
    the parent alone pushes OTLP metrics, since it reads every worker's values.
    """
    global _lock
    _lock = threading.RLock()
    try:
        from chainsight.export import metrics as _metrics  # noqa: PLC0415 - already imported; avoids a cycle

        _metrics.after_fork_in_child()
        cfg = CONFIG
        if cfg.processor is not None:
            cfg.processor.after_fork_in_child()
        if cfg.otlp_bridge is not None and _metrics.multiprocess_dir() is None:
            cfg.otlp_bridge.after_fork_in_child()
    except Exception as exc:  # a child must start even if this fails
        report_internal("after_fork", exc)


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)


# Before any configure(): the environment's defaults (OTLP when OTEL_EXPORTER_OTLP_ENDPOINT is
# set), so an app configured by environment variables alone is traced too.
CONFIG = _from_environment()
