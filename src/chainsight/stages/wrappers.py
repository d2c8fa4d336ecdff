"""Stages and requests: ``traced_stage``, ``stage``, ``request``, ``current_stage``, ``Stage``.

The hot path, per stage: one read of the config snapshot; (rarely) refresh the decoration-time
spec when ``configure()`` changed something; one ``start_span`` with every static attribute; one
context attach that carries both the span and the :class:`Stage`; user code; classify; final
attributes in one call; end; metrics through cached children. Nothing here does I/O.
"""

from __future__ import annotations

import functools
import inspect
import sys
import time
from collections.abc import AsyncGenerator, Callable, Generator, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final, TypeVar, cast

from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.trace import SpanKind, Status, StatusCode
from opentelemetry.util.types import AttributeValue

from chainsight import _names as n
from chainsight.config import state as _state
from chainsight.errors import BudgetExceeded, ConfigurationError
from chainsight.stages import content as _content
from chainsight.stages import log as _log
from chainsight.stages import usage as _usage
from chainsight.stages.attrs import clean_attributes, coerce, is_secret_name
from chainsight.stages.faults import (
    Classification,
    Origin,
    classify,
    get_origin,
    is_cancellation,
    set_origin,
)

__all__ = [
    "NOOP_STAGE",
    "Stage",
    "current_stage",
    "register_stage_kind",
    "request",
    "stage",
    "traced_stage",
]

if TYPE_CHECKING:
    from chainsight.config.snapshot import Config
    from chainsight.cost.budget import Admission
    from chainsight.stages.responses import StreamAccumulator

F = TypeVar("F", bound=Callable[..., Any])

_KEY: Final = otel_context.create_key("chainsight-stage")
_MAX_EXCEPTION_MESSAGE: Final = 1024


@dataclass(frozen=True, slots=True)
class KindInfo:
    """What a stage kind means: its fault domain for remote failures, span kind, operation."""

    name: str
    remote: str
    span_kind: SpanKind
    operation: str | None
    openinference: str


_KINDS: dict[str, KindInfo] = {
    "retrieval": KindInfo(
        "retrieval", n.FAULT_VECTOR_STORE, SpanKind.CLIENT, "retrieval", "RETRIEVER"
    ),
    "embedding": KindInfo(
        "embedding", n.FAULT_PROVIDER, SpanKind.CLIENT, "embeddings", "EMBEDDING"
    ),
    "rerank": KindInfo("rerank", n.FAULT_APP, SpanKind.INTERNAL, "rerank", "RERANKER"),
    "prompt": KindInfo("prompt", n.FAULT_APP, SpanKind.INTERNAL, None, "PROMPT"),
    "model": KindInfo("model", n.FAULT_PROVIDER, SpanKind.CLIENT, "chat", "LLM"),
    "tool": KindInfo("tool", n.FAULT_APP, SpanKind.INTERNAL, "execute_tool", "TOOL"),
    "validation": KindInfo("validation", n.FAULT_MODEL, SpanKind.INTERNAL, None, "GUARDRAIL"),
    "cache": KindInfo("cache", n.FAULT_APP, SpanKind.INTERNAL, None, "CHAIN"),
}  # fmt: skip
_REQUEST_KIND: Final = KindInfo(
    "request", n.FAULT_APP, SpanKind.INTERNAL, "invoke_workflow", "CHAIN"
)
_GENAI_KINDS: Final = frozenset({"model", "embedding", "rerank"})
_BUILTIN_KINDS: Final = frozenset(_KINDS)


def register_stage_kind(name: str, *, fault: str = n.FAULT_APP, remote: bool = False) -> None:
    """Register a custom stage kind, e.g. ``register_stage_kind("web_search", fault="provider",
    remote=True)``.

    ``fault`` is the domain its remote failures (timeouts, 5xx, 429) belong to; other errors
    follow the usual rules. Call it at import time, before decorating functions with the kind.
    """
    if not isinstance(name, str) or not name.isidentifier():
        raise ConfigurationError(f"stage kind {name!r} must be an identifier such as 'web_search'")
    if name in _BUILTIN_KINDS or name == "request":
        raise ConfigurationError(f"stage kind {name!r} is built in; choose another name")
    if fault not in n.FAULTS:
        raise ConfigurationError(
            f"fault={fault!r} for stage kind {name!r} is not a fault domain; use one of "
            f"{', '.join(n.FAULTS)}"
        )
    span_kind = SpanKind.CLIENT if remote else SpanKind.INTERNAL
    _KINDS[name] = KindInfo(name, fault, span_kind, None, "CHAIN")


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


class _Spec:
    """Everything about a stage that is known before it runs, computed once."""

    __slots__ = (
        "_exemplar_at",
        "_state",
        "component",
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
        info = _REQUEST_KIND if kind == "request" else _KINDS.get(kind)
        if info is None:
            raise ConfigurationError(
                f"unknown stage kind {kind!r}; use one of {', '.join(sorted(_KINDS))} or "
                "register it first with chainsight.register_stage_kind()"
            )
        for label, given in (
            ("name", name),
            ("system", system),
            ("provider", provider),
            ("model", model),
            ("operation", operation),
        ):
            if given is not None and (not isinstance(given, str) or not given):
                raise ConfigurationError(
                    f"{label}={given!r} for a {kind!r} stage must be a non-empty string"
                )
        if component is not None and component not in n.FAULTS:
            raise ConfigurationError(
                f"component={component!r} is not a fault domain; use one of {', '.join(n.FAULTS)}"
            )
        if on_budget_exceeded is not None and not callable(on_budget_exceeded):
            raise ConfigurationError(
                f"on_budget_exceeded must be callable (it returns the degraded answer), got "
                f"{on_budget_exceeded!r}"
            )
        self.kind = kind
        self.info = info
        self.name = name
        self.is_request = kind == "request"
        self.is_genai = kind in _GENAI_KINDS
        self.on_budget_exceeded = on_budget_exceeded
        # For stages that call a provider, system= and provider= say the same thing.
        if self.is_genai and provider is None:
            provider = system
        self.provider = provider
        self.system = system if system is not None else provider
        self.model = model
        self.operation = operation or info.operation
        remote = info.remote
        if kind == "rerank" and provider is not None:
            remote = n.FAULT_PROVIDER
        self.component = component
        self.remote = component or remote
        span_kind = info.span_kind
        if kind == "rerank" and provider is not None:
            span_kind = SpanKind.CLIENT
        self.span_kind = span_kind

        attrs: dict[str, AttributeValue] = {n.CS_STAGE_KIND: kind, n.CS_STAGE_NAME: name}
        if self.operation:
            attrs[n.GEN_AI_OPERATION_NAME] = self.operation
        if self.is_genai and provider:
            attrs[n.GEN_AI_PROVIDER_NAME] = provider
        elif kind == "retrieval" and self.system:
            attrs[n.DB_SYSTEM_NAME] = self.system
        elif self.system:
            attrs[n.GEN_AI_PROVIDER_NAME] = self.system
        if model:
            attrs[n.GEN_AI_REQUEST_MODEL] = model
        if self.is_request:
            attrs[n.GEN_AI_WORKFLOW_NAME] = name
            attrs[n.CS_REQUEST_NAME] = name
        self.validator: str | None = None
        for key, value in (extra or {}).items():
            if not isinstance(key, str) or not key:
                raise ConfigurationError(f"attribute name {key!r} must be a non-empty string")
            if is_secret_name(key):
                # Credentials are never recorded; refusing loudly beats dropping silently here.
                raise ConfigurationError(
                    f"{key}= looks like a credential and is never recorded; remove it from the "
                    f"{kind!r} stage's keywords"
                )
            legal = coerce(value)
            if legal is None:
                raise ConfigurationError(
                    f"{key}={value!r} for a {kind!r} stage is not a span attribute value; use "
                    "a str, bool, int, float or a list of one of them"
                )
            attrs[_SEMANTIC_KEYWORDS.get(key, key)] = legal
            if key == "validator":
                self.validator = str(legal)
        self.static_attrs = attrs
        self.span_name = self._span_name(extra or {})
        self._exemplar_at = -EXEMPLAR_INTERVAL_S
        # (config version, start attributes, metric labels), replaced in one assignment so a
        # stage never mixes two configurations' values when configure() races with it.
        self._state: tuple[int, dict[str, AttributeValue], tuple[str, str, str]] = (
            -1,
            attrs,
            ("", "", ""),
        )

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

    def refresh(self, cfg: Config) -> tuple[int, dict[str, AttributeValue], tuple[str, str, str]]:
        """Recompute what depends on the configuration (release attributes, metric labels)."""
        attrs = dict(self.static_attrs)
        attrs.update(cfg.release_attributes)
        if cfg.openinference:
            # Phoenix and Arize read these names; they sit beside the OTel ones, not instead.
            attrs[n.OI_SPAN_KIND] = self.info.openinference
            if self.model:
                attrs[n.OI_LLM_MODEL_NAME] = self.model
            if self.provider:
                attrs[n.OI_LLM_PROVIDER] = self.provider
        guard = cfg.metrics.guard
        labels = (
            guard(n.M_STAGE_DURATION, n.L_STAGE, self.name),
            self.kind,
            guard(n.M_STAGE_DURATION, n.L_SYSTEM, self.system or ""),
        )
        state = (cfg.version, attrs, labels)
        self._state = state
        self._exemplar_at = -EXEMPLAR_INTERVAL_S  # a new configuration may be a new registry
        return state


_spec_cache: dict[tuple[Any, ...], _Spec] = {}
_SPEC_CACHE_LIMIT: Final = 2048


def _spec_for(kind: str, name: str | None, kwargs: dict[str, Any]) -> _Spec:
    """Specs of ``stage()``/``request()`` call sites, cached so a loop pays for one."""
    try:
        key: tuple[Any, ...] | None = (kind, name, *sorted(kwargs.items()))
        hash(key)
    except TypeError:
        key = None
    if key is not None:
        found = _spec_cache.get(key)
        if found is not None:
            return found
    spec = _make_spec(kind, name or kind, kwargs)
    if key is not None:
        if len(_spec_cache) >= _SPEC_CACHE_LIMIT:
            _spec_cache.clear()
        _spec_cache[key] = spec
    return spec


def _make_spec(kind: object, name: str, kwargs: dict[str, Any]) -> _Spec:
    if not isinstance(kind, str):
        raise ConfigurationError(
            f"stage kind must be a string such as 'retrieval' or 'model', got {kind!r}"
        )
    system = kwargs.pop("system", None)
    provider = kwargs.pop("provider", None)
    model = kwargs.pop("model", None)
    operation = kwargs.pop("operation", None)
    component = kwargs.pop("component", None)
    on_budget = kwargs.pop("on_budget_exceeded", None)
    return _Spec(
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


class Stage:
    """A running stage or request: what ``stage()`` yields and ``current_stage()`` returns.

    Every verb records facts about the work in progress and never raises: bad values are dropped
    and counted in ``chainsight_internal_errors_total{where="invalid_argument:<verb>"}``.
    """

    __slots__ = (
        "admission",
        "cache_read_tokens",
        "cache_write_tokens",
        "cfg",
        "cost_usd",
        "degraded",
        "ended",
        "error_type",
        "fault",
        "feature_label",
        "first_chunk",
        "has_usage",
        "input_tokens",
        "labels",
        "origin",
        "outer_exc",
        "output_tokens",
        "own_cost",
        "parent",
        "priced",
        "reasoning_tokens",
        "recording",
        "rejected_by",
        "request_attrs",
        "response_model",
        "root",
        "span",
        "spec",
        "start",
        "stream",
        "team_label",
        "tenant_label",
        "token",
        "usage_model",
        "validation_failed",
    )

    def __init__(
        self,
        spec: _Spec,
        cfg: Config,
        span: trace.Span,
        parent: Stage | None,
        labels: tuple[str, str, str],
    ) -> None:
        self.spec = spec
        self.labels = labels
        self.cfg = cfg
        self.span = span
        self.parent = parent
        self.root: Stage | None = parent.root if parent is not None else None
        if spec.is_request:
            self.root = self
        self.recording = span.is_recording()
        self.token: object = None
        self.start = time.perf_counter()
        self.ended = False
        self.degraded = False
        self.validation_failed: Origin | None = None
        self.fault: str | None = None
        self.error_type: str | None = None
        self.origin: str | None = None
        self.rejected_by: str | None = None
        self.outer_exc: BaseException | None = None
        self.first_chunk: float | None = None
        self.input_tokens = 0
        self.output_tokens = 0
        self.cache_read_tokens = 0
        self.cache_write_tokens = 0
        self.reasoning_tokens = 0
        self.has_usage = False
        self.usage_model: str | None = None
        self.own_cost: float | None = None
        self.stream: StreamAccumulator | None = None
        self.admission: Admission | None = None
        self.cost_usd = 0.0
        self.priced = False
        self.response_model: str | None = None
        self.request_attrs: dict[str, AttributeValue] | None = None
        self.feature_label = ""
        self.tenant_label = ""
        self.team_label = ""

    # --- verbs ---------------------------------------------------------------------------
    def set(self, **attributes: object) -> None:
        """Set span attributes; values are coerced to legal types, secrets never recorded."""
        try:
            if not self.recording:
                return
            for key, value in clean_attributes(attributes):
                if value is None:
                    self.cfg.metrics.invalid("set")
                    continue
                self.span.set_attribute(key, value)
        except Exception as exc:
            _state.report_internal("set", exc)

    def record_usage(
        self,
        *,
        input_tokens: object = None,
        output_tokens: object = None,
        cached_input_tokens: object = None,
        cache_write_input_tokens: object = None,
        reasoning_output_tokens: object = None,
        model: object = None,
    ) -> None:
        """Record token usage (OpenTelemetry convention) and compute the call's cost.

        ``input_tokens`` counts all input tokens, cached reads and cache writes included;
        ``output_tokens`` includes reasoning tokens. Counts must be non-negative ints.
        """
        try:
            _usage.record(
                self,
                input_tokens,
                output_tokens,
                cached_input_tokens,
                cache_write_input_tokens,
                reasoning_output_tokens,
                model,
            )
        except Exception as exc:
            _state.report_internal("record_usage", exc)

    def record_response(self, response: object) -> None:
        """Read usage, response model, id and finish reasons from a provider response.

        Works with OpenAI (chat completions, responses, embeddings), Anthropic, Gemini, Bedrock
        Converse, Cohere and LiteLLM shapes, as SDK objects or dicts. Unknown shapes are
        ignored and counted.
        """
        try:
            _usage.record_response(self, response)
        except Exception as exc:
            _state.report_internal("record_response", exc)

    def record_content(
        self,
        *,
        input_messages: object = None,
        output_messages: object = None,
        system_instructions: object = None,
        query: object = None,
        documents: object = None,
    ) -> None:
        """Capture prompt/completion content, only when content capture is on.

        Off by default (``configure(capture_content=True)`` or
        ``OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT``). Values (text, or messages as
        lists/dicts, serialised as JSON) are redacted and truncated before they are recorded in
        ``gen_ai.input.messages``, ``gen_ai.output.messages``, ``gen_ai.system_instructions``,
        ``gen_ai.retrieval.query.text`` and ``gen_ai.retrieval.documents``.
        """
        try:
            if self.cfg.capture is None:
                return
            _content.record_content(
                self,
                {
                    "input_messages": input_messages,
                    "output_messages": output_messages,
                    "system_instructions": system_instructions,
                    "query": query,
                    "documents": documents,
                },
            )
        except Exception as exc:
            _state.report_internal("record_content", exc)

    def record_documents(
        self, *, count: object = None, scores: object = None, ids: object = None
    ) -> None:
        """Record retrieval health: how many documents, their scores, their ids."""
        try:
            _usage.record_documents(self, count, scores, ids)
        except Exception as exc:
            _state.report_internal("record_documents", exc)

    def record_validation(self, *, passed: object, reason: object = None) -> None:
        """Record an output check. A failure makes this stage ``error`` with fault ``model``."""
        try:
            if type(passed) is not bool:
                self.cfg.metrics.invalid("record_validation")
                return
            spec, cfg = self.spec, self.cfg
            reason_text = coerce(reason) if reason is not None else None
            if reason is not None and reason_text is None:
                self.cfg.metrics.invalid("record_validation")
            if self.recording:
                attrs: dict[str, AttributeValue] = {n.CS_VALIDATION_PASSED: passed}
                if reason_text is not None:
                    attrs[n.CS_VALIDATION_REASON] = str(reason_text)
                self.span.set_attributes(attrs)
                event: dict[str, AttributeValue] = {
                    n.GEN_AI_EVALUATION_NAME: spec.validator or spec.name,
                    n.GEN_AI_EVALUATION_SCORE_LABEL: "pass" if passed else "fail",
                }
                if reason_text is not None:
                    event[n.GEN_AI_EVALUATION_EXPLANATION] = str(reason_text)
                self.span.add_event(n.GEN_AI_EVALUATION_RESULT_EVENT, event)
            metrics = cfg.metrics
            guard = metrics.guard
            metrics.child(
                metrics.validations,
                self.labels[0],
                guard(n.M_VALIDATIONS, n.L_VALIDATOR, spec.validator or spec.name),
                "passed" if passed else "failed",
            ).inc()
            root = self.root
            if passed:
                self.validation_failed = None
                if root is not None and root is not self:
                    root.validation_failed = None
            else:
                origin = Origin(spec.name, n.FAULT_MODEL, n.ERR_VALIDATION_FAILED)
                self.validation_failed = origin
                if root is not None and root is not self:
                    root.validation_failed = origin
        except Exception as exc:
            _state.report_internal("record_validation", exc)

    def fallback(self, *, to: object, reason: object = None) -> None:
        """Say that a fallback served the user: this stage and its request become ``degraded``.

        Called inside an ``except`` block, the exception being handled is classified so the
        fault domain of what failed is still recorded.
        """
        try:
            cfg, spec = self.cfg, self.spec
            to_text = coerce(to)
            if to_text is None or to is None:
                cfg.metrics.invalid("fallback")
                to_text = "unknown"
            reason_text = coerce(reason) if reason is not None else None
            self.degraded = True
            root = self.root
            if root is not None:
                root.degraded = True
                root.validation_failed = None
            self.validation_failed = None
            handled = sys.exc_info()[1]
            if handled is self.outer_exc:
                handled = None
            if handled is not None and not is_cancellation(handled):
                origin = get_origin(handled)
                if origin is None:
                    found = _classify(cfg, handled, spec)
                    origin = Origin(spec.name, found.fault, found.error_type)
                self.fault, self.error_type = origin.fault, origin.error_type
                self.origin = origin.stage
            elif self.fault is None and not spec.is_request:
                # No exception in hand: the stage's own remote component is the best guess; a
                # request has none, so its fault stays unknown rather than wrongly "app".
                self.fault = spec.remote
                self.origin = spec.name
            if root is not None and root is not self and root.fault is None:
                # The request was served degraded because of this stage's failure: say which.
                root.fault, root.error_type, root.origin = self.fault, self.error_type, self.origin
            if self.recording:
                attrs: dict[str, AttributeValue] = {n.CS_FALLBACK_TO: str(to_text)}
                if reason_text is not None:
                    attrs[n.CS_FALLBACK_REASON] = str(reason_text)
                self.span.set_attributes(attrs)
                self.span.add_event(n.EVENT_FALLBACK, attrs)
            metrics = cfg.metrics
            guard = metrics.guard
            metrics.child(
                metrics.fallbacks,
                self.labels[0],
                spec.kind,
                guard(n.M_FALLBACKS, n.L_TO, to_text),
                guard(n.M_FALLBACKS, n.L_REASON, reason_text if reason_text is not None else ""),
            ).inc()
        except Exception as exc:
            _state.report_internal("fallback", exc)

    @property
    def trace_id(self) -> str | None:
        """The trace id as 32 hex digits, or None when the span is not sampled."""
        ctx = self.span.get_span_context()
        return format(ctx.trace_id, "032x") if ctx.trace_flags.sampled else None

    @property
    def span_id(self) -> str | None:
        """The span id as 16 hex digits, or None when the span is not sampled."""
        ctx = self.span.get_span_context()
        return format(ctx.span_id, "016x") if ctx.trace_flags.sampled else None

    @property
    def kind(self) -> str:
        """The stage kind (``request`` for a request)."""
        return self.spec.kind

    @property
    def name(self) -> str:
        """The stage (or request) name."""
        return self.spec.name

    def __repr__(self) -> str:
        return f"<chainsight.Stage kind={self.spec.kind!r} name={self.spec.name!r}>"


class _NoopStage:
    """What ``current_stage()`` returns outside any stage, and ``stage()`` yields when off."""

    __slots__ = ()
    trace_id = None
    span_id = None
    kind = "none"
    name = "none"

    def set(self, **attributes: object) -> None:
        """Do nothing."""

    def record_usage(self, **usage: object) -> None:
        """Do nothing."""

    def record_response(self, response: object) -> None:
        """Do nothing."""

    def record_documents(self, **documents: object) -> None:
        """Do nothing."""

    def record_content(self, **content: object) -> None:
        """Do nothing."""

    def record_validation(self, **validation: object) -> None:
        """Do nothing."""

    def fallback(self, **fallback: object) -> None:
        """Do nothing."""

    def __repr__(self) -> str:
        return "<chainsight.Stage (none)>"


NOOP_STAGE: Final = _NoopStage()


def current_stage() -> Stage:
    """The innermost open stage (or request), or a no-op stage whose verbs do nothing."""
    found = otel_context.get_value(_KEY)
    return cast(Stage, found if found is not None else NOOP_STAGE)


# --- begin and finish ----------------------------------------------------------------------


def _begin(
    spec: _Spec, cfg: Config, request_kw: Mapping[str, object] | None = None
) -> tuple[Stage, otel_context.Context] | None:
    """Start the span and the Stage; None if chainsight failed (the app then runs untraced)."""
    try:
        state = spec._state
        if state[0] != cfg.version:
            state = spec.refresh(cfg)
        parent_ctx = otel_context.get_current()
        parent = cast("Stage | None", parent_ctx.get(_KEY))
        attrs = state[1]
        root = parent.root if parent is not None else None
        extra: dict[str, AttributeValue] = {}
        if request_kw is not None:
            root = None
            attrs = dict(attrs)
            extra = _request_attributes(cfg, request_kw)
            attrs.update(extra)
        elif root is not None and root.request_attrs:
            attrs = dict(attrs)
            attrs.update(root.request_attrs)
        span = cfg.tracer.start_span(spec.span_name, parent_ctx, spec.span_kind, attrs)
        stage = Stage(spec, cfg, span, parent, state[2])
        # An exception the caller was already handling is not this stage's failure.
        stage.outer_exc = sys.exc_info()[1]
        if request_kw is not None:
            _init_request(stage, cfg, extra)
        ctx = trace.set_span_in_context(span, parent_ctx)
        ctx = otel_context.set_value(_KEY, stage, ctx)
        return stage, ctx
    except Exception as exc:
        _state.report_internal("stage_start", exc)
        return None


_REQUEST_LABELS: Final = {"tenant": n.CS_TENANT, "feature": n.CS_FEATURE, "team": n.CS_TEAM}


def _request_attributes(cfg: Config, request_kw: Mapping[str, object]) -> dict[str, AttributeValue]:
    out: dict[str, AttributeValue] = {}
    for key, value in request_kw.items():
        if value is None:
            continue
        legal = coerce(value)
        if legal is None:
            cfg.metrics.invalid("request")
            continue
        out[_REQUEST_LABELS[key]] = legal
    return out


def _init_request(stage: Stage, cfg: Config, attrs: dict[str, AttributeValue]) -> None:
    # Stages inside the request carry tenant/feature/team too, so one span answers "whose?".
    stage.request_attrs = attrs
    guard = cfg.metrics.guard
    stage.feature_label = guard(n.M_REQUESTS, n.L_FEATURE, attrs.get(n.CS_FEATURE, ""))
    stage.tenant_label = guard(n.M_TOKENS, n.L_TENANT, attrs.get(n.CS_TENANT, ""))
    stage.team_label = guard(n.M_COST_USD, n.L_TEAM, attrs.get(n.CS_TEAM, ""))
    metrics = cfg.metrics
    metrics.child(metrics.in_flight, stage.labels[0]).inc()


def _classify(cfg: Config, exc: BaseException, spec: _Spec) -> Classification:
    for rule in cfg.classifiers:
        try:
            found = rule(exc, spec.kind)
        except Exception as err:  # a user rule's bug: fall back to the built-in table
            _state.report_internal("classifier", err)
            continue
        if found is not None:
            if isinstance(found, tuple) and len(found) == 2:
                fault, error_type = found
                if fault in n.FAULTS and isinstance(error_type, str) and error_type:
                    return Classification(fault, error_type)
            cfg.metrics.invalid("classifier")
    return classify(exc, spec.kind, spec.remote)


def _exception_event(stage: Stage, exc: BaseException) -> None:
    try:
        message = str(exc)
    except Exception:
        message = "<unprintable>"
    if len(message) > _MAX_EXCEPTION_MESSAGE:
        message = message[:_MAX_EXCEPTION_MESSAGE] + "…"
    stage.span.add_event(
        "exception",
        {
            "exception.type": type(exc).__qualname__,
            "exception.message": _content.redact_message(stage.cfg, message),
        },
    )


def _finish(stage: Stage, exc: BaseException | None, *, end_at: float | None = None) -> None:
    """Classify, write the final attributes, end the span, record metrics. Never raises.

    Each step is guarded on its own: a failure in one (a user classifier, a budget store)
    still lets the span end and the metrics, the in-flight gauge included, be recorded.
    """
    if stage.ended:
        return
    stage.ended = True
    try:
        if stage.stream is not None:
            _usage.apply_stream(stage)
        if stage.admission is not None:
            _usage.settle_budget(stage)
    except Exception as err:
        _state.report_internal("stage_usage", err)
    outcome = n.OUTCOME_ERROR if exc is not None else n.OUTCOME_OK
    status: Status | None = None
    try:
        outcome, status = _outcome(stage, exc)
    except Exception as err:
        _state.report_internal("classify", err)
    now = time.perf_counter()
    end = now if end_at is None else end_at
    duration = end - stage.start
    try:
        _end_span(stage, outcome, status, now, end_at)
    except Exception as err:
        _state.report_internal("stage_end", err)
    try:
        _record_metrics(stage, outcome, duration)
        if stage.cfg.log_stages:
            _log.log_stage(stage, outcome, duration)
    except Exception as err:
        _state.report_internal("stage_metrics", err)


def _outcome(stage: Stage, exc: BaseException | None) -> tuple[str, Status | None]:
    if exc is None:
        if stage.rejected_by is not None:
            return n.OUTCOME_REJECTED, None
        if stage.validation_failed is not None:
            stage.origin, stage.fault, stage.error_type = stage.validation_failed
            return n.OUTCOME_ERROR, Status(StatusCode.ERROR, stage.error_type)
        if stage.degraded:
            return n.OUTCOME_DEGRADED, None
        return n.OUTCOME_OK, None
    if is_cancellation(exc):
        return n.OUTCOME_CANCELLED, None
    if isinstance(exc, BudgetExceeded):
        stage.rejected_by = exc.budget
        return n.OUTCOME_REJECTED, None
    origin = get_origin(exc)
    if origin is None:
        found = _classify(stage.cfg, exc, stage.spec)
        origin = Origin(stage.spec.name, found.fault, found.error_type)
        set_origin(exc, origin)
        if stage.recording:
            _exception_event(stage, exc)
    stage.origin, stage.fault, stage.error_type = origin
    return n.OUTCOME_ERROR, Status(StatusCode.ERROR, origin.error_type)


def _end_span(
    stage: Stage, outcome: str, status: Status | None, now: float, end_at: float | None
) -> None:
    span = stage.span
    if not stage.recording:
        span.end()
        return
    attrs: dict[str, AttributeValue] = {n.CS_OUTCOME: outcome}
    if stage.fault is not None and outcome != n.OUTCOME_OK:
        attrs[n.CS_FAULT] = stage.fault
        if stage.error_type is not None:
            attrs[n.ERROR_TYPE] = stage.error_type
        if stage.origin is not None:
            attrs[n.CS_ERROR_ORIGIN] = stage.origin
    if stage.rejected_by is not None:
        attrs[n.CS_BUDGET] = stage.rejected_by
    if stage.has_usage:
        _usage.usage_attributes(stage, attrs)
    if stage.spec.is_request and (stage.input_tokens or stage.output_tokens or stage.priced):
        attrs[n.CS_REQUEST_INPUT_TOKENS] = stage.input_tokens
        attrs[n.CS_REQUEST_OUTPUT_TOKENS] = stage.output_tokens
        if stage.priced:
            attrs[n.CS_REQUEST_COST_USD] = stage.cost_usd
    span.set_attributes(attrs)
    if status is not None:
        span.set_status(status)
    if end_at is None:
        span.end()
    else:
        span.end(end_time=time.time_ns() - int((now - end_at) * 1e9))


EXEMPLAR_INTERVAL_S: Final = 1.0


def _exemplar(stage: Stage, outcome: str, end: float) -> dict[str, str] | None:
    """The trace link for a histogram observation, or None.

    Prometheus keeps only the latest exemplar per bucket, so attaching one to every observation
    buys nothing and costs ~15 % of a stage (hex formatting plus the client's validation): ok
    stages attach one at most once a second per spec; failures, the ones worth clicking, always.
    """
    if not stage.recording:
        return None
    spec = stage.spec
    if outcome == n.OUTCOME_OK:
        if end - spec._exemplar_at < EXEMPLAR_INTERVAL_S:
            return None
        spec._exemplar_at = end
    ctx = stage.span.get_span_context()
    return {"trace_id": format(ctx.trace_id, "032x"), "span_id": format(ctx.span_id, "016x")}


def _record_metrics(stage: Stage, outcome: str, duration: float) -> None:
    spec, cfg = stage.spec, stage.cfg
    metrics = cfg.metrics
    child = metrics.child
    release = cfg.release_id
    exemplar = _exemplar(stage, outcome, stage.start + duration)
    stage_label, kind, system = stage.labels
    fault = stage.fault if stage.fault is not None and outcome != n.OUTCOME_OK else n.NO_FAULT
    if spec.is_request:
        child(metrics.requests, stage_label, stage.feature_label, outcome, fault, release).inc()
        child(metrics.request_duration, stage_label, outcome, release).observe(duration, exemplar)
        child(metrics.in_flight, stage_label).dec()
        if stage.priced:
            child(metrics.request_cost, stage_label, stage.feature_label).observe(stage.cost_usd)
        return
    child(metrics.stage_duration, stage_label, kind, system, outcome, release).observe(
        duration, exemplar
    )
    error_type = ""
    if fault != n.NO_FAULT:
        error_type = metrics.guard(n.M_STAGE_ERRORS, n.L_ERROR_TYPE, stage.error_type or "")
        child(metrics.stage_errors, stage_label, kind, system, fault, error_type).inc()
    if spec.is_genai and outcome != n.OUTCOME_REJECTED:  # a refused call never ran
        model = spec.model or stage.response_model or stage.usage_model or ""
        labels = (
            spec.operation or "",
            system,
            metrics.guard(n.M_GEN_AI_OPERATION_DURATION, n.L_GEN_AI_REQUEST_MODEL, model),
        )
        child(metrics.gen_ai_duration, *labels, error_type).observe(duration, exemplar)
        if stage.first_chunk is not None:
            child(metrics.gen_ai_ttfc, *labels).observe(stage.first_chunk - stage.start)


# --- public entry points -------------------------------------------------------------------


class _StageContext:
    """The context manager behind ``stage()`` and ``request()`` (sync and async).

    One object may be entered again while already entered (reused across tasks or nested):
    each entry is remembered, and an exit finishes the entry of the context it runs in.
    """

    __slots__ = ("_entries", "_request_kw", "_spec")

    def __init__(self, spec: _Spec, request_kw: dict[str, object] | None) -> None:
        self._spec = spec
        self._request_kw = request_kw
        self._entries: list[Stage | None] = []

    def __enter__(self) -> Stage:
        cfg = _state.current()
        if not cfg.enabled:
            self._entries.append(None)
            return cast(Stage, NOOP_STAGE)
        begun = _begin(self._spec, cfg, self._request_kw)
        if begun is None:
            self._entries.append(None)
            return cast(Stage, NOOP_STAGE)
        stage, ctx = begun
        if self._spec.kind == "model":
            refused = _usage.check_budget(stage)
            if refused is not None:
                self._entries.append(None)
                _finish(stage, refused)
                raise refused
        stage.token = otel_context.attach(ctx)
        self._entries.append(stage)
        return stage

    def __exit__(self, exc_type: object, exc: BaseException | None, tb: object) -> None:
        entries = self._entries
        if not entries:
            return
        index = len(entries) - 1
        if index:
            current = otel_context.get_value(_KEY)
            found = [i for i, e in enumerate(entries) if e is current]
            if not found:
                found = [i for i, e in enumerate(entries) if e is None]
            if found:
                index = found[-1]
        stage = entries.pop(index)
        if stage is None:
            return
        try:
            otel_context.detach(stage.token)  # type: ignore[arg-type]
        except Exception as err:
            _state.report_internal("detach", err)
        _finish(stage, exc)

    async def __aenter__(self) -> Stage:
        return self.__enter__()

    async def __aexit__(self, exc_type: object, exc: BaseException | None, tb: object) -> None:
        self.__exit__(exc_type, exc, tb)


def stage(kind: str, *, name: str | None = None, **attributes: Any) -> _StageContext:
    """Open a stage as a context manager: ``with chainsight.stage("prompt", prompt_version="7"):``.

    Takes the same keywords as :func:`traced_stage`; ``name`` defaults to the kind. Works as
    ``async with`` too. Yields the :class:`Stage`.
    """
    return _StageContext(_spec_for(kind, name, attributes), None)


def request(
    name: str,
    *,
    tenant: str | None = None,
    feature: str | None = None,
    team: str | None = None,
    **attributes: Any,
) -> _StageContext:
    """Open a request, the root of a chain: ``with chainsight.request("answer_ticket",
    tenant="acme", feature="copilot"):``.

    ``tenant``, ``feature`` and ``team`` label the request's metrics (cardinality-guarded) and
    are set on every stage span inside it. Works as ``async with`` too.
    """
    spec = _spec_for("request", name, attributes)
    return _StageContext(spec, {"tenant": tenant, "feature": feature, "team": team})


def traced_stage(
    kind: str,
    /,
    *,
    name: str | None = None,
    system: str | None = None,
    provider: str | None = None,
    model: str | None = None,
    operation: str | None = None,
    component: str | None = None,
    on_budget_exceeded: Callable[..., Any] | None = None,
    **attributes: Any,
) -> Callable[[F], F]:
    """Decorate a function as a stage of ``kind``: sync, ``async def``, generator or async
    generator, function or method.

    ``name`` defaults to the function's qualified name. ``system``/``provider`` name the vector
    store or model provider, ``model`` the requested model, ``operation`` the GenAI operation
    (default ``chat`` for ``model`` stages), ``component`` overrides the fault domain its remote
    failures belong to. Any other keyword becomes a span attribute. Mistakes raise
    :class:`ConfigurationError` here, at decoration time.
    """
    extra = dict(attributes)
    for key, value in (
        ("system", system),
        ("provider", provider),
        ("model", model),
        ("operation", operation),
        ("component", component),
        ("on_budget_exceeded", on_budget_exceeded),
    ):
        if value is not None:
            extra[key] = value
    if name is not None:
        _make_spec(kind, name, dict(extra))  # validate now, even before the function arrives
    elif isinstance(kind, str):
        _make_spec(kind, "probe", dict(extra))

    def decorate(func: F) -> F:
        # Placed above @staticmethod/@classmethod: wrap the function, keep the descriptor.
        if isinstance(func, (staticmethod, classmethod)):
            return cast(F, type(func)(decorate(func.__func__)))
        if not callable(func):
            raise ConfigurationError(
                f"traced_stage({kind!r}) must decorate a function or method, got {func!r}"
            )
        spec = _make_spec(
            kind, name or getattr(func, "__qualname__", None) or repr(func), dict(extra)
        )
        if inspect.isasyncgenfunction(func):
            return cast(F, _wrap_async_generator(func, spec))
        if inspect.isgeneratorfunction(func):
            return cast(F, _wrap_generator(func, spec))
        if inspect.iscoroutinefunction(func):
            return cast(F, _wrap_coroutine(func, spec))
        return cast(F, _wrap_function(func, spec))

    return decorate


def _refuse(
    stage: Stage, refused: BudgetExceeded, args: tuple[Any, ...], kwargs: dict[str, Any]
) -> Any:
    """A hard budget is spent: degrade through the stage's hook, or raise BudgetExceeded."""
    hook = stage.spec.on_budget_exceeded
    if hook is None:
        _finish(stage, refused)
        raise refused
    stage.rejected_by = refused.budget
    if stage.root is not None:
        stage.root.degraded = True
    _finish(stage, None)
    return hook(*args, **kwargs)


def _wrap_function(func: Callable[..., Any], spec: _Spec) -> Callable[..., Any]:
    check_budget = spec.kind == "model"

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        cfg = _state.current()
        if not cfg.enabled:
            return func(*args, **kwargs)
        begun = _begin(spec, cfg)
        if begun is None:
            return func(*args, **kwargs)
        stage, ctx = begun
        if check_budget:
            refused = _usage.check_budget(stage)
            if refused is not None:
                return _refuse(stage, refused, args, kwargs)
        token = otel_context.attach(ctx)
        try:
            result = func(*args, **kwargs)
        except BaseException as exc:
            otel_context.detach(token)
            _finish(stage, exc)
            raise
        otel_context.detach(token)
        _finish(stage, None)
        return result

    return wrapper


def _wrap_coroutine(func: Callable[..., Any], spec: _Spec) -> Callable[..., Any]:
    check_budget = spec.kind == "model"

    @functools.wraps(func)
    async def wrapper(*args: Any, **kwargs: Any) -> Any:
        cfg = _state.current()
        if not cfg.enabled:
            return await func(*args, **kwargs)
        begun = _begin(spec, cfg)
        if begun is None:
            return await func(*args, **kwargs)
        stage, ctx = begun
        if check_budget:
            refused = _usage.check_budget(stage)
            if refused is not None:
                result = _refuse(stage, refused, args, kwargs)
                return await result if inspect.isawaitable(result) else result
        token = otel_context.attach(ctx)
        try:
            result = await func(*args, **kwargs)
        except BaseException as exc:
            otel_context.detach(token)
            _finish(stage, exc)
            raise
        otel_context.detach(token)
        _finish(stage, None)
        return result

    return wrapper


def _as_generator(value: Any) -> Generator[Any, Any, Any]:
    """The degrade hook's answer for a stream: its items (or the value itself, once)."""
    if isinstance(value, (str, bytes)) or not hasattr(value, "__iter__"):
        value = (value,)
    return (item for item in value)


async def _as_async_generator(value: Any) -> AsyncGenerator[Any, Any]:
    if inspect.isawaitable(value):
        value = await value
    if hasattr(value, "__aiter__"):
        async for item in value:
            yield item
        return
    for item in _as_generator(value):
        yield item


def _first_chunk(stage: Stage, at: float) -> None:
    stage.first_chunk = at
    if stage.recording and stage.spec.kind == "model":
        ttfc = at - stage.start
        stage.span.set_attribute(n.CS_TTFC_SECONDS, ttfc)
        stage.span.add_event(n.EVENT_FIRST_CHUNK, {n.CS_TTFC_SECONDS: ttfc})


def _wrap_generator(func: Callable[..., Any], spec: _Spec) -> Callable[..., Any]:
    """A generator function driving the user's generator one step at a time.

    The wrapper is itself a generator function (so ``inspect.isgeneratorfunction`` and the
    frameworks relying on it still see one), and its body runs at the first ``next()``: that
    is when the span opens. Each step runs with the stage's context attached, so the
    generator's own code, ``finally`` included, records on its stage. Closed early or dropped
    unfinished, the stream is ``cancelled`` and ends at its last item: its real duration.
    """
    check_budget = spec.kind == "model"

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        gen = func(*args, **kwargs)
        cfg = _state.current()
        if not cfg.enabled:
            return (yield from gen)
        begun = _begin(spec, cfg)
        if begun is None:
            return (yield from gen)
        stage, ctx = begun
        if check_budget:
            refused = _usage.check_budget(stage)
            if refused is not None:
                gen.close()  # the provider is never called
                return (yield from _as_generator(_refuse(stage, refused, args, kwargs)))
        sent: Any = None
        thrown: BaseException | None = None
        last = 0.0
        while True:
            token = otel_context.attach(ctx)
            try:
                if thrown is None:
                    item = gen.send(sent)
                else:
                    item, thrown = gen.throw(thrown), None
            except StopIteration as stop:
                otel_context.detach(token)
                _finish(stage, None)
                return stop.value
            except BaseException as exc:
                otel_context.detach(token)
                _finish(stage, exc)
                raise
            otel_context.detach(token)
            last = time.perf_counter()
            if stage.first_chunk is None:
                _first_chunk(stage, last)
            try:
                sent = yield item
            except GeneratorExit:
                token = otel_context.attach(ctx)
                try:
                    gen.close()
                except BaseException as exc:
                    otel_context.detach(token)
                    _finish(stage, exc, end_at=last)
                    raise
                otel_context.detach(token)
                _finish(stage, GeneratorExit(), end_at=last)
                raise
            except BaseException as exc:
                thrown, sent = exc, None

    return wrapper


def _wrap_async_generator(func: Callable[..., Any], spec: _Spec) -> Callable[..., Any]:
    """The async twin of :func:`_wrap_generator` (``asend``/``athrow``/``aclose``)."""
    check_budget = spec.kind == "model"

    @functools.wraps(func)
    async def wrapper(*args: Any, **kwargs: Any) -> Any:
        agen = func(*args, **kwargs)
        cfg = _state.current()
        begun = _begin(spec, cfg) if cfg.enabled else None
        if begun is None:
            # Off: still forward asend/athrow/aclose exactly (an async generator cannot hand
            # back the inner one the way `yield from` does for generators).
            sent_plain: Any = None
            thrown_plain: BaseException | None = None
            while True:
                try:
                    if thrown_plain is None:
                        item = await agen.asend(sent_plain)
                    else:
                        item, thrown_plain = await agen.athrow(thrown_plain), None
                except StopAsyncIteration:
                    return
                try:
                    sent_plain = yield item
                except GeneratorExit:
                    await agen.aclose()
                    raise
                except BaseException as exc:
                    thrown_plain, sent_plain = exc, None
        stage, ctx = begun
        if check_budget:
            refused = _usage.check_budget(stage)
            if refused is not None:
                await agen.aclose()  # the provider is never called
                answer = _refuse(stage, refused, args, kwargs)
                async for item in _as_async_generator(answer):
                    yield item
                return
        sent: Any = None
        thrown: BaseException | None = None
        last = 0.0
        while True:
            token = otel_context.attach(ctx)
            try:
                if thrown is None:
                    item = await agen.asend(sent)
                else:
                    item, thrown = await agen.athrow(thrown), None
            except StopAsyncIteration:
                otel_context.detach(token)
                _finish(stage, None)
                return
            except BaseException as exc:
                otel_context.detach(token)
                _finish(stage, exc)
                raise
            otel_context.detach(token)
            last = time.perf_counter()
            if stage.first_chunk is None:
                _first_chunk(stage, last)
            try:
                sent = yield item
            except GeneratorExit:
                token = otel_context.attach(ctx)
                try:
                    await agen.aclose()
                except BaseException as exc:
                    otel_context.detach(token)
                    _finish(stage, exc, end_at=last)
                    raise
                otel_context.detach(token)
                _finish(stage, GeneratorExit(), end_at=last)
                raise
            except BaseException as exc:
                thrown, sent = exc, None

    return wrapper
