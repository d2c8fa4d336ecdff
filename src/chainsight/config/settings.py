"""Settings: what ``configure()`` was given, as one typed value, and the pure parsers.

Nothing here has a side effect: the functions read arguments and environment variables and
return values or raise :class:`~chainsight.errors.ConfigurationError`. Precedence is argument >
environment variable > default, decided here only. ``config.build`` turns a :class:`Settings`
into a :class:`~chainsight.config.snapshot.Config`, with side effects kept to its last step.
"""

from __future__ import annotations

import dataclasses
import inspect
import logging
import math
import os
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final

from chainsight import _names as n
from chainsight._text import shown, valid_text
from chainsight.errors import ConfigurationError

if TYPE_CHECKING:
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SpanExporter
    from prometheus_client import CollectorRegistry

    from chainsight.cost.budget import Budget
    from chainsight.cost.budget_store import BudgetStore
    from chainsight.stages.faults import Classifier

__all__ = [
    "EVENT",
    "NAMES",
    "SPAN",
    "SPAN_AND_EVENT",
    "Settings",
    "capture_mode",
    "check_str",
    "classifiers",
    "conventions",
    "enabled",
    "env_bool",
    "environment",
    "flag",
    "metrics_port",
    "release",
    "sample_ratio",
    "service",
]

logger = logging.getLogger("chainsight")

SPAN: Final = "span"
EVENT: Final = "event"
SPAN_AND_EVENT: Final = "span_and_event"
_ENV_MODES: Final = {
    "span_only": SPAN,
    "event_only": EVENT,
    "span_and_event": SPAN_AND_EVENT,
    "true": SPAN,
    "1": SPAN,
    "false": None,
    "0": None,
    "no_content": None,
    "": None,
}

_TRUE: Final = frozenset({"1", "true", "yes", "on"})
_FALSE: Final = frozenset({"0", "false", "no", "off"})


@dataclass(frozen=True, slots=True)
class Settings:
    """Every ``configure()`` setting; ``None`` means "not given" (keep the earlier value).

    The field list is the one list of settings: ``configure()``'s keywords mirror it, and a test
    keeps the two in step. docs/api.md describes each setting.
    """

    service: str | None = None
    environment: str | None = None
    release: str | Mapping[str, str] | None = None
    exporter: str | SpanExporter | None = None
    sample_ratio: float | None = None
    enabled: bool | None = None
    registry: CollectorRegistry | None = None
    metrics_port: int | None = None
    metrics_addr: str | None = None
    label_limits: Mapping[str, int] | None = None
    classifiers: Sequence[Classifier] | None = None
    tracer_provider: TracerProvider | None = None
    prices: str | os.PathLike[str] | Mapping[str, Any] | None = None
    budgets: Sequence[Budget] | None = None
    budget_store: BudgetStore | None = None
    capture_content: bool | str | None = None
    log_stages: bool | None = None
    otlp_metrics: bool | None = None
    conventions: Sequence[str] | None = None
    redactors: Sequence[Callable[[str], str]] | None = None
    max_content_bytes: int | None = None
    content_hash_key: str | bytes | None = None

    def merged(self, newer: Settings) -> Settings:
        """These settings with every value ``newer`` gives (not ``None``) taking over."""
        given = {
            f.name: value
            for f in dataclasses.fields(newer)
            if (value := getattr(newer, f.name)) is not None
        }
        return dataclasses.replace(self, **given)


NAMES: Final = tuple(f.name for f in dataclasses.fields(Settings))


def env_bool(name: str) -> bool | None:
    """A true/false environment variable; ``None`` when unset, blank or not understood."""
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


def check_str(name: str, value: object) -> str | None:
    """``value`` when it is a string or ``None``; a typed error otherwise."""
    if value is None or isinstance(value, str):
        return value
    raise ConfigurationError(f"{name} must be a string, got {value!r} ({type(value).__name__})")


# Service, environment and release become a metric label on every series and a resource or
# span attribute on every span: they are checked once here, not cleaned on every stage.
_MAX_IDENTITY_LENGTH = 256


def identity_text(name: str, value: str) -> str:
    """``value`` if it can label every series and span; a typed error otherwise."""
    if valid_text(value) is not value:
        raise ConfigurationError(
            f"{name}={shown(value)} is not valid Unicode (a lone surrogate, often from bytes "
            "decoded with surrogateescape); pass text that encodes as UTF-8"
        )
    if len(value) > _MAX_IDENTITY_LENGTH:
        raise ConfigurationError(
            f"{name} is {len(value)} characters long ({shown(value, 40)}); it labels every "
            f"metric series, so keep it under {_MAX_IDENTITY_LENGTH}, e.g. a version or a "
            "commit hash"
        )
    return value


def enabled(value: object) -> bool:
    """``enabled``, else ``CHAINSIGHT_ENABLED``, else not ``OTEL_SDK_DISABLED``, else True."""
    if value is None:
        value = env_bool(n.ENV_ENABLED)
    if value is None:
        disabled = env_bool(n.ENV_OTEL_SDK_DISABLED)
        value = not disabled if disabled is not None else True
    if not isinstance(value, bool):
        raise ConfigurationError(f"enabled must be True or False, got {value!r}")
    return value


def service(value: object) -> str:
    """``service``, else ``CHAINSIGHT_SERVICE``, else ``OTEL_SERVICE_NAME``, else the OTel
    default ``unknown_service``."""
    given = check_str("service", value)
    if given:
        return identity_text("service", given)
    for env in (n.ENV_SERVICE, n.ENV_OTEL_SERVICE_NAME):
        found = os.environ.get(env)
        if found:
            return identity_text(env, found)
    return "unknown_service"


def environment(value: object) -> str | None:
    """``environment``, else ``CHAINSIGHT_ENVIRONMENT``, else none."""
    given = check_str("environment", value)
    if given:
        return identity_text("environment", given)
    found = os.environ.get(n.ENV_ENVIRONMENT)
    return identity_text(n.ENV_ENVIRONMENT, found) if found else None


def release(value: object) -> tuple[dict[str, str], str]:
    """``release`` as ``(parts, release_id)``: a string is the id; a mapping gives parts."""
    if value is None:
        return {}, "unknown"
    if isinstance(value, str):
        if not value:
            raise ConfigurationError("release='' is empty; give a version string or a mapping")
        return {}, identity_text("release", value)
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
        items[key] = identity_text(f"release[{key!r}]", str(val))
    explicit = items.pop("id", None)
    release_id = explicit or ",".join(f"{k}={v}" for k, v in sorted(items.items())) or "unknown"
    return items, identity_text("release", release_id)


def sample_ratio(value: object) -> float:
    """``sample_ratio``, else ``CHAINSIGHT_SAMPLE_RATIO``, else 1.0; from 0.0 to 1.0."""
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


def conventions(value: object) -> bool:
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


def classifiers(value: object) -> tuple[Classifier, ...]:
    """``classifiers``: callables ``(exception, stage)`` tried before the built-in table."""
    if value is None:
        return ()
    if not isinstance(value, Iterable):
        raise ConfigurationError(
            f"classifiers must be a list of callables, got {value!r} ({type(value).__name__})"
        )
    rules = tuple(value)
    for rule in rules:
        if not callable(rule):
            raise ConfigurationError(
                f"classifiers must be callables (exception, stage) -> (fault, error_type) or "
                f"None, where stage is a chainsight.StageFacts; got {rule!r}"
            )
        _check_rule_signature(rule)
    return rules


def _check_rule_signature(rule: Callable[..., object]) -> None:
    """A rule that cannot take ``(exception, stage)`` would fail on every error: refuse it now."""
    try:
        signature = inspect.signature(rule)
    except (TypeError, ValueError):  # no signature to read (some builtins): trust it
        return
    try:
        signature.bind(None, None)
    except TypeError:
        raise ConfigurationError(
            f"classifier {rule!r} takes {signature}, but rules are called as rule(exception, "
            f"stage) with stage a chainsight.StageFacts (the stage kind as a str, with .system, "
            f".provider, .component and .name); give it two positional parameters"
        ) from None


def metrics_port(value: object) -> int | None:
    """``metrics_port``: a TCP port for ``/metrics``, or none."""
    if value is not None and (type(value) is not int or not 0 <= value <= 65535):
        raise ConfigurationError(
            f"metrics_port must be an integer from 0 to 65535, got {value!r}; 9464 is the "
            "usual Prometheus exporter port"
        )
    return value


def flag(name: str, value: object) -> bool:
    """A true/false setting where ``None`` (not given) means False."""
    if value is None:
        return False
    if not isinstance(value, bool):
        raise ConfigurationError(f"{name} must be True or False, got {value!r}")
    return value


def capture_mode(setting: object) -> str | None:
    """Resolve ``capture_content`` (argument, else the OTel environment variable) to a mode."""
    if setting is None:
        raw = os.environ.get(n.ENV_CAPTURE_CONTENT, "").strip().lower()
        if raw not in _ENV_MODES:
            raise ConfigurationError(
                f"{n.ENV_CAPTURE_CONTENT}={raw!r} is not understood; use SPAN_ONLY, EVENT_ONLY, "
                "SPAN_AND_EVENT, NO_CONTENT, true or false"
            )
        return _ENV_MODES[raw]
    if setting is True:
        return SPAN
    if setting is False:
        return None
    if isinstance(setting, str) and setting.lower() in _ENV_MODES:
        return _ENV_MODES[setting.lower()]
    raise ConfigurationError(
        f"capture_content={setting!r}: use True, False, 'span_only', 'event_only' or "
        "'span_and_event'"
    )
