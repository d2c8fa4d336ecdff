"""The decoration-time spec of a stage: everything known before it runs, computed once.

``traced_stage`` builds one :class:`Spec` per decorated function; ``stage()``/``request()`` call
sites share theirs through a small cache. What depends on the configuration (release attributes,
guarded metric labels) is recomputed by :meth:`Spec.refresh` when ``configure()`` changed it.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any, Final, NamedTuple

from opentelemetry.trace import SpanKind
from opentelemetry.util.types import AttributeValue

from chainsight import _names as n
from chainsight._text import shown, valid_text
from chainsight.config import state as _state
from chainsight.errors import ConfigurationError
from chainsight.export.metric_families import NO_VALUE, RequestLabels, StageLabels
from chainsight.stages import openinference
from chainsight.stages.attrs import coerce, is_secret_name, safe_attribute, safe_text
from chainsight.stages.faults import StageFacts
from chainsight.stages.kinds import GENAI_KINDS, kind_info
from chainsight.stages.spans import clean_once

if TYPE_CHECKING:
    from chainsight.config.snapshot import Config

__all__ = ["EXEMPLAR_INTERVAL_S", "RequestScope", "Spec", "SpecState", "make_spec", "spec_for"]

# The longest stage name or span name recorded, in UTF-8 bytes.
_NAME_BYTES: Final = 256

EXEMPLAR_INTERVAL_S: Final = 1.0
"""An ok stage attaches an exemplar at most this often per spec (failures always do)."""


class RequestScope(NamedTuple):
    """What a request gives every stage inside it: span attributes and guarded metric labels."""

    attrs: dict[str, AttributeValue]
    labels: RequestLabels


#: A request spec's (start attributes, scope) by the (tenant, feature, team) seen so far.
RequestScopes = dict[
    tuple[str | None, str | None, str | None], tuple[dict[str, AttributeValue], RequestScope]
]
#: (config version, start attributes, metric labels, request scopes), replaced in one assignment
#: so a stage never mixes two configurations' values when ``configure()`` races with it. The
#: start attributes are cleaned as the SDK stores them (``stages.spans.clean_once``); the last
#: is the usage module's memo of guarded labels and metric children (``usage_metrics._Children``).
SpecState = tuple[int, dict[str, AttributeValue], StageLabels, RequestScopes, dict[Any, Any]]

# Keyword arguments with a meaning; everything else becomes a span attribute as given.
_SEMANTIC_KEYWORDS: Final[dict[str, str]] = {
    "collection": n.DB_COLLECTION_NAME,
    "prompt_name": n.GEN_AI_PROMPT_NAME,
    "prompt_version": n.GEN_AI_PROMPT_VERSION,
    "data_source": n.GEN_AI_DATA_SOURCE_ID,
    "top_k": n.GEN_AI_RETRIEVAL_TOP_K,
    "validator": n.CS_VALIDATOR,
    "tool": n.GEN_AI_TOOL_NAME,
    "conversation_id": n.GEN_AI_CONVERSATION_ID,
    "server_address": n.SERVER_ADDRESS,
    "server_port": n.SERVER_PORT,
    "db_operation": n.DB_OPERATION_NAME,
}


# What the conventions (and chainsight's labels, for validator=) make of a semantic keyword's
# value: a wrong type is a mistake to name at decoration time, not a value to record. Keywords
# not listed here take any attribute value.
_INT_KEYWORDS: Final[dict[str, tuple[int, int, str]]] = {
    "top_k": (0, 2**31 - 1, "the number of documents asked for"),
    "server_port": (0, 65535, "a TCP port"),
}


def _check_semantic(kind: str, key: str, value: object) -> None:
    """Raise ConfigurationError for a semantic keyword whose value has the wrong type (judged on
    what it records as: an IntEnum member is an int, a str-valued Enum member a string)."""
    legal = coerce(value)
    bounds = _INT_KEYWORDS.get(key)
    if bounds is not None:
        low, high, meaning = bounds
        if type(legal) is not int or not low <= legal <= high:
            raise ConfigurationError(
                f"{key}={shown(value)} for a {shown(kind)} stage must be an int from {low} to "
                f"{high} ({meaning}); pass it as a number, or leave it out"
            )
    elif type(legal) not in (str, int) or legal == "":
        # Names and ids: text, or an int id (a database key, a version number).
        raise ConfigurationError(
            f"{key}={shown(value)} for a {shown(kind)} stage must be a non-empty string or an "
            "int; pass the name or id, or leave it out"
        )


def _check(
    kind: str,
    names: Mapping[str, str | None],
    component: str | None,
    on_budget_exceeded: object,
) -> None:
    """Decoration-time mistakes raise here, before anything is built."""
    for label, given in names.items():
        if given is not None and (not isinstance(given, str) or not given):
            raise ConfigurationError(
                f"{label}={shown(given)} for a {shown(kind)} stage must be a non-empty string"
            )
    if component is not None and component not in n.FAULTS:
        raise ConfigurationError(
            f"component={shown(component)} is not a fault domain; use one of {', '.join(n.FAULTS)}"
        )
    if on_budget_exceeded is not None and not callable(on_budget_exceeded):
        raise ConfigurationError(
            f"on_budget_exceeded must be callable (it returns the degraded answer), got "
            f"{shown(on_budget_exceeded)}"
        )


def _extra_attributes(kind: str, extra: Mapping[str, object]) -> dict[str, AttributeValue]:
    """The user's keywords as span attributes: semantic names mapped, credentials refused."""
    attrs: dict[str, AttributeValue] = {}
    for key, value in extra.items():
        if value is None:
            continue  # a keyword given as None is a keyword not given, as for system= or model=
        if not isinstance(key, str) or not key or valid_text(key) is not key:
            raise ConfigurationError(
                f"attribute name {shown(key)} must be a non-empty string of valid Unicode (no lone "
                "surrogates)"
            )
        if is_secret_name(key):
            # Credentials are never recorded; refusing loudly beats dropping silently here.
            raise ConfigurationError(
                f"{key}= looks like a credential and is never recorded; remove it from the "
                f"{shown(kind)} stage's keywords"
            )
        if key in _SEMANTIC_KEYWORDS:
            _check_semantic(kind, key, value)
        legal = coerce(value)
        if legal is None:
            raise ConfigurationError(
                f"{key}={shown(value)} for a {shown(kind)} stage is not a span attribute value; "
                "use a str, bool, int, float or a list of one of them"
            )
        attrs[_SEMANTIC_KEYWORDS.get(key, key)] = legal
    return attrs


class Spec:
    """Everything about a stage that is known before it runs, computed once."""

    __slots__ = (
        "component",
        "exemplar_at",
        "facts",
        "given_name",
        "given_span_name",
        "given_validator",
        "info",
        "is_genai",
        "is_request",
        "kind",
        "model",
        "name",
        "on_budget_exceeded",
        "operation",
        "provider",
        "remote",
        "span_kind",
        "span_name",
        "state",
        "static_attrs",
        "system",
        "validator",
    )

    def __init__(
        self,
        kind: str,
        name: str,
        *,
        system: str | None = None,
        provider: str | None = None,
        model: str | None = None,
        operation: str | None = None,
        component: str | None = None,
        on_budget_exceeded: Callable[..., Any] | None = None,
        extra: Mapping[str, object] | None = None,
    ) -> None:
        info = kind_info(kind)
        names = {
            "name": name,
            "system": system,
            "provider": provider,
            "model": model,
            "operation": operation,
        }
        _check(kind, names, component, on_budget_exceeded)
        # A str subclass may override hashing or formatting: keep the plain text only.
        name = str.__str__(name)
        system, provider, model, operation = (
            None if v is None else str.__str__(v) for v in (system, provider, model, operation)
        )
        self.kind = kind
        self.info = info
        # What the application gave; name, span name and validator are the redacted forms,
        # made by refresh() with the configuration's redactor before any stage runs.
        self.given_name = self.name = name
        self.is_request = kind == "request"
        self.is_genai = kind in GENAI_KINDS
        self.on_budget_exceeded = on_budget_exceeded
        # For stages that call a provider, system= and provider= say the same thing.
        if self.is_genai and provider is None:
            provider = system
        self.provider = provider
        self.system = system if system is not None else provider
        self.model = model
        self.operation = operation or info.operation
        # What a classification rule is told; its remote is component= or the kind's (system=
        # and provider= name the dependency, they never move the fault domain).
        self.facts = StageFacts(
            kind, name=name, system=self.system, provider=provider, component=component
        )
        self.component = component
        self.remote = self.facts.remote
        reranker = kind == "rerank" and provider is not None
        self.span_kind = SpanKind.CLIENT if reranker else info.span_kind
        extra = extra or {}
        attrs = self._own_attributes()
        attrs.update(_extra_attributes(kind, extra))
        validator = extra.get("validator")
        self.given_validator = str(coerce(validator)) if validator is not None else None
        self.validator = self.given_validator
        self.static_attrs = attrs
        self.given_span_name = self.span_name = self._span_name(extra)
        self.exemplar_at = -EXEMPLAR_INTERVAL_S
        self.state: SpecState = (-1, attrs, StageLabels(NO_VALUE, kind, NO_VALUE, NO_VALUE), {}, {})

    def _own_attributes(self) -> dict[str, AttributeValue]:
        kind, name = self.kind, self.name
        attrs: dict[str, AttributeValue] = {n.CS_STAGE_KIND: kind, n.CS_STAGE_NAME: name}
        if self.operation:
            attrs[n.GEN_AI_OPERATION_NAME] = self.operation
        if self.is_genai and self.provider:
            attrs[n.GEN_AI_PROVIDER_NAME] = self.provider
        elif kind == "retrieval" and self.system:
            attrs[n.DB_SYSTEM_NAME] = self.system
        elif self.system:
            attrs[n.GEN_AI_PROVIDER_NAME] = self.system
        if self.model:
            attrs[n.GEN_AI_REQUEST_MODEL] = self.model
        if self.is_request:
            attrs[n.GEN_AI_WORKFLOW_NAME] = name
            attrs[n.CS_REQUEST_NAME] = name
        return attrs

    def _span_name(self, extra: Mapping[str, object]) -> str:
        kind, name = self.kind, self.name
        if kind == "request":
            return f"invoke_workflow {name}"
        if kind == "retrieval":
            source = extra.get("collection") or extra.get("data_source") or self.system or name
            return f"retrieval {source}"
        if kind == "embedding":
            return f"embeddings {self.model or name}"
        if kind == "rerank":
            return f"rerank {self.model or name}"
        if kind == "prompt":
            return f"prompt {extra.get('prompt_name') or name}"
        if kind == "model":
            return f"{self.operation} {self.model or name}"
        if kind == "tool":
            return f"execute_tool {extra.get('tool') or name}"
        if kind == "validation":
            return f"validate {extra.get('validator') or name}"
        return f"{kind} {name}"

    def refresh(self, cfg: Config) -> SpecState:
        """Recompute what depends on the configuration: redacted names and attributes, release
        attributes, metric labels.

        Names and keyword attributes are text from the application like any other (a stage
        named after a user's input happens), so they are redacted here, once per configuration,
        rather than on every stage.
        """
        redactor = cfg.redactor
        self.name = safe_text(redactor, self.given_name, _NAME_BYTES)
        self.span_name = safe_text(redactor, self.given_span_name, _NAME_BYTES)
        if self.given_validator is not None:
            self.validator = safe_text(redactor, self.given_validator, _NAME_BYTES)
        attrs = {
            key: value if key == n.CS_STAGE_KIND else safe_attribute(redactor, value)
            for key, value in self.static_attrs.items()
        }
        attrs.update(cfg.release_attributes)
        if cfg.openinference:
            # Phoenix and Arize read these names; they sit beside the OTel ones, not instead.
            openinference.static_attributes(
                self.kind, self.info.openinference, self.is_genai, attrs
            )
        labels = cfg.metrics.stage_labels(
            self.name, self.kind, self.system or "", self.operation or ""
        )
        state: SpecState = (cfg.version, clean_once(attrs), labels, {}, {})
        self.state = state
        self.exemplar_at = -EXEMPLAR_INTERVAL_S  # a new configuration may be a new registry
        return state

    def take_exemplar(self, end: float) -> bool:
        """True (and the clock restarted) if an ok stage ending at ``end`` gets an exemplar.

        Prometheus keeps only the latest exemplar per bucket, so attaching one to every
        observation buys nothing and costs ~15 % of a stage: once a second per spec is enough.
        The finish path reads :attr:`exemplar_at` first and calls this only when one is due.
        """
        if end - self.exemplar_at < EXEMPLAR_INTERVAL_S:
            return False
        self.exemplar_at = end
        return True


_spec_cache: dict[tuple[Any, ...], Spec] = {}
_SPEC_CACHE_LIMIT: Final = 2048


def spec_for(kind: str, name: str | None, kwargs: dict[str, Any]) -> Spec:
    """Specs of ``stage()``/``request()`` call sites, cached so a loop pays for one."""
    key: tuple[Any, ...] | None
    try:
        key = (kind, name, *sorted(kwargs.items()))
        found = _spec_cache.get(key)
    except Exception:  # a list value (unhashable), or a value whose __hash__/__eq__ fails
        try:
            # A list becomes the same attribute as the tuple of its items: key it that way,
            # so `stage("x", tags=[...])` in a loop is built once, not on every call.
            frozen = ((k, tuple(v) if type(v) is list else v) for k, v in kwargs.items())
            key = (kind, name, *sorted(frozen))
            found = _spec_cache.get(key)
        except Exception:
            key = found = None
    if found is not None:
        return found
    spec = make_spec(kind, name or kind, _usable_keywords(kind, kwargs))
    if key is not None:
        if len(_spec_cache) >= _SPEC_CACHE_LIMIT:
            _spec_cache.clear()
        _spec_cache[key] = spec
    return spec


# Keywords that name the stage (checked by Spec itself), not attributes.
_NAMING_KEYWORDS: Final = frozenset(
    {"system", "provider", "model", "operation", "component", "on_budget_exceeded"}
)


def _usable_keywords(kind: object, kwargs: dict[str, Any]) -> dict[str, Any]:
    """The attribute keywords of a ``stage()``/``request()`` call that can be recorded.

    These run on the request path, where a value that is sometimes odd (``user_id=None``, a
    dict) must not fail the user's request: such a keyword is dropped and counted (once per
    call site and set of values, as the spec is cached), where ``traced_stage`` raises at
    decoration time. None is simply not given, as everywhere.
    """
    usable: dict[str, Any] = {}
    dropped = False
    for key, value in kwargs.items():
        if value is None:
            continue
        if key not in _NAMING_KEYWORDS:
            try:
                _extra_attributes(str(kind), {key: value})
            except Exception:  # a ConfigurationError, or a value whose own methods fail
                dropped = True
                continue
        usable[key] = value
    if dropped:
        _count_dropped()
    return usable


def _count_dropped() -> None:
    with contextlib.suppress(Exception):  # counting must never fail the request either
        _state.current().metrics.invalid("stage_keyword")


def make_spec(kind: object, name: str, kwargs: dict[str, Any]) -> Spec:
    """A :class:`Spec` from ``traced_stage``/``stage`` keywords (``kwargs`` is consumed)."""
    if not isinstance(kind, str):
        raise ConfigurationError(
            f"stage kind must be a string such as 'retrieval' or 'model', got {shown(kind)}"
        )
    system = kwargs.pop("system", None)
    provider = kwargs.pop("provider", None)
    model = kwargs.pop("model", None)
    operation = kwargs.pop("operation", None)
    component = kwargs.pop("component", None)
    on_budget = kwargs.pop("on_budget_exceeded", None)
    try:
        return Spec(
            kind,
            name,
            system=system,
            provider=provider,
            model=model,
            operation=operation,
            component=component,
            on_budget_exceeded=on_budget,
            extra=kwargs,
        )
    except ConfigurationError:
        raise
    except Exception as exc:  # an odd value: its own error, or a RecursionError, is not ours
        raise ConfigurationError(
            f"the keywords of a {shown(kind)} stage could not be read ({type(exc).__name__} from a "
            f"value); give names as str and attributes as str, bool, int, float or a list of one "
            f"of them"
        ) from exc
