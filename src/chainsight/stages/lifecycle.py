"""A stage from start to end: begin (span and Stage), then finish (classify, outcome, end the span,
exemplar, metrics, the stage log line).

Every Stage is made here, and each is handed the recorder its verbs call (usage, documents,
content). Nothing here does I/O, and nothing here raises into the app: each step is guarded and
reported through ``config.state.report_internal``.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any, Final, cast

from opentelemetry import context as otel_context
from opentelemetry.trace import Status, StatusCode
from opentelemetry.util.types import AttributeValue

from chainsight import _names as n
from chainsight.config import state as _state
from chainsight.errors import BudgetExceeded
from chainsight.export.metric_families import NO_VALUE
from chainsight.stages import content as _content
from chainsight.stages import log as _log
from chainsight.stages import usage as _usage
from chainsight.stages import validation as _validation
from chainsight.stages.attrs import coerce, safe_attribute, safe_text
from chainsight.stages.faults import Origin, is_cancellation
from chainsight.stages.spans import clean_once, context_with, set_final
from chainsight.stages.spec import EXEMPLAR_INTERVAL_S, RequestScope
from chainsight.stages.stage import (
    STAGE_KEY,
    Recorder,
    Stage,
    classify_exception,
)

if TYPE_CHECKING:
    from chainsight.config.snapshot import Config
    from chainsight.stages.spec import Spec, SpecState

__all__ = ["RequestKeywords", "begin", "finish", "refuse"]

_MAX_EXCEPTION_MESSAGE: Final = 1024

# What the verbs that need prices, budgets or the content policy call; every Stage made here
# carries it, so the stage module needs no import of (or hook into) these modules.
_RECORDER: Final = Recorder(
    usage=_usage.record,
    response=_usage.apply_call,
    documents=_usage.record_documents,
    content=_content.record_content,
    validation=_validation.record,
)


# --- begin ---------------------------------------------------------------------------------


def begin(
    spec: Spec, cfg: Config, request_kw: RequestKeywords | None = None
) -> tuple[Stage, otel_context.Context] | None:
    """Start the span and the Stage; None if chainsight failed (the app then runs untraced)."""
    try:
        state = spec.state
        if state[0] != cfg.version:
            state = spec.refresh(cfg)
        parent_ctx = otel_context.get_current()
        parent = cast("Stage | None", parent_ctx.get(STAGE_KEY))
        attrs = state[1]
        scope: RequestScope | None = None
        if request_kw is not None:
            attrs, scope = _request_start(cfg, state, request_kw)
        else:
            root = parent.root if parent is not None else None
            if root is not None and root.scope is not None and root.scope.attrs:
                attrs = {**attrs, **root.scope.attrs}
        start = cfg.start_span
        if start is not None:
            span = start(spec.span_name, parent_ctx, spec.span_kind, attrs)
        else:
            span = cfg.tracer.start_span(spec.span_name, parent_ctx, spec.span_kind, attrs)
        stage = Stage(spec, cfg, span, parent, state[2], _RECORDER, scope)
        if scope is not None:
            cfg.metrics.in_flight.child(request=stage.labels.stage).inc()
        return stage, context_with(parent_ctx, span, STAGE_KEY, stage)
    except Exception as exc:
        _state.report_internal("stage_start", exc)
        return None


#: ``request()``'s tenant, feature and team, in that order.
RequestKeywords = tuple[object, object, object]
_REQUEST_ATTRIBUTES: Final = (n.CS_TENANT, n.CS_FEATURE, n.CS_TEAM)
# Distinct (tenant, feature, team) triples remembered per request spec and configuration.
_SCOPES_PER_SPEC: Final = 256


def _request_start(
    cfg: Config, state: SpecState, request_kw: RequestKeywords
) -> tuple[dict[str, AttributeValue], RequestScope]:
    """A request's start attributes and scope, computed once per distinct (tenant, feature,
    team) of plain strings: a service sends the same few again and again.

    Not remembered: other values (coerced and counted per call, as before), and a scope with
    a label past the cardinality guard (the guard counts each overflowing use).
    """
    cacheable = all(value is None or type(value) is str for value in request_kw)
    scopes = state[3]
    if cacheable:
        found = scopes.get(request_kw)  # type: ignore[arg-type]
        if found is not None:
            return found
    extra = _request_attributes(cfg, request_kw)
    # Stages inside the request carry tenant/feature/team too, so one span answers "whose?".
    labels = cfg.metrics.request_labels(
        extra.get(n.CS_FEATURE, NO_VALUE),
        extra.get(n.CS_TENANT, NO_VALUE),
        extra.get(n.CS_TEAM, NO_VALUE),
    )
    made = clean_once({**state[1], **extra}), RequestScope(clean_once(extra), labels)
    if cacheable and n.OVERFLOW_VALUE not in labels:
        if len(scopes) >= _SCOPES_PER_SPEC:
            scopes.clear()
        scopes[request_kw] = made  # type: ignore[index]
    return made


def _request_attributes(cfg: Config, request_kw: RequestKeywords) -> dict[str, AttributeValue]:
    out: dict[str, AttributeValue] = {}
    for key, value in zip(_REQUEST_ATTRIBUTES, request_kw, strict=True):
        if value is None:
            continue
        legal = coerce(value)
        if legal is None:
            cfg.metrics.invalid("request")
            continue
        out[key] = safe_attribute(cfg.redactor, legal)
    return out


# --- finish --------------------------------------------------------------------------------


def refuse(
    stage: Stage, refused: BudgetExceeded, args: tuple[Any, ...], kwargs: dict[str, Any]
) -> Any:
    """A hard budget is spent: degrade through the stage's hook, or raise BudgetExceeded."""
    hook = stage.spec.on_budget_exceeded
    if hook is None:
        finish(stage, refused)
        raise refused
    stage._reject(refused.budget, degrade_request=True)
    finish(stage, None)
    return hook(*args, **kwargs)


def finish(stage: Stage, exc: BaseException | None, *, end_at: float | None = None) -> None:
    """Classify, write the final attributes, end the span, record metrics. Never raises.

    Each step is guarded on its own: a failure in one (a user classifier, a budget store)
    still lets the span end and the metrics, the in-flight gauge included, be recorded.
    """
    if not stage._end_once():
        return
    usage = stage.usage
    if usage is not None:
        try:
            if usage.calls is not None:
                _usage.apply_stream(stage)
            if usage.admission is not None:
                _usage.settle_budget(stage)
        except Exception as err:
            _state.report_internal("stage_usage", err)
    outcome = n.OUTCOME_ERROR if exc is not None else n.OUTCOME_OK
    status: Status | None = None
    try:
        outcome, status = _outcome(stage, exc)
    except Exception as err:
        _state.report_internal("classify", err)
    stage.child_errors = ()  # the children's exceptions (and their frames) are not kept alive
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
        failed = stage.validation_failed
        if failed is not None:
            stage._blame(failed)
            return n.OUTCOME_ERROR, Status(StatusCode.ERROR, failed.error_type)
        if stage.degraded:
            return n.OUTCOME_DEGRADED, None
        return n.OUTCOME_OK, None
    if is_cancellation(exc):
        return n.OUTCOME_CANCELLED, None
    if isinstance(exc, BudgetExceeded):
        stage._reject(exc.budget)
        return n.OUTCOME_REJECTED, None
    origin = stage._origin_of(exc)
    if origin is None:
        found = classify_exception(stage.cfg, exc, stage.spec)
        origin = Origin(stage.spec.name, found.fault, found.error_type)
        if stage.recording:
            _exception_event(stage, exc)
    stage._pass_up(exc, origin)
    stage._blame(origin)
    return n.OUTCOME_ERROR, Status(StatusCode.ERROR, origin.error_type)


def _exception_event(stage: Stage, exc: BaseException) -> None:
    try:
        message = str(exc)
    except BaseException:
        message = "<unprintable>"
    if type(message) is not str:  # a str subclass with its own methods: take the plain text
        message = str.__str__(message)
    stage.span.add_event(
        "exception",
        {
            "exception.type": type(exc).__qualname__,
            # Redacted whole, then cut: a secret straddling the cut is never exported in part.
            "exception.message": safe_text(stage.cfg.redactor, message, _MAX_EXCEPTION_MESSAGE),
        },
    )


def _end_span(
    stage: Stage, outcome: str, status: Status | None, now: float, end_at: float | None
) -> None:
    span = stage.span
    if not stage.recording:
        span.end()
        return
    attrs: dict[str, AttributeValue] = {n.CS_OUTCOME: outcome}
    if stage.final_attrs is not None:
        attrs.update(stage.final_attrs)
    if stage.fault is not None and outcome != n.OUTCOME_OK:
        attrs[n.CS_FAULT] = stage.fault
        if stage.error_type is not None:
            attrs[n.ERROR_TYPE] = stage.error_type
        if stage.origin is not None:
            attrs[n.CS_ERROR_ORIGIN] = stage.origin
    if stage.rejected_by is not None:
        attrs[n.CS_BUDGET] = stage.rejected_by
    usage = stage.usage
    if usage is not None:
        if usage.recorded:
            _usage.usage_attributes(stage, attrs)
        if stage.spec.is_request and (usage.input_tokens or usage.output_tokens or usage.priced):
            attrs[n.CS_REQUEST_INPUT_TOKENS] = usage.input_tokens
            attrs[n.CS_REQUEST_OUTPUT_TOKENS] = usage.output_tokens
            if usage.priced:
                attrs[n.CS_REQUEST_COST_USD] = usage.cost_usd
    set_final(span, attrs)
    if status is not None:
        span.set_status(status)
    if end_at is None:
        span.end()
    else:
        span.end(end_time=time.time_ns() - int((now - end_at) * 1e9))


def _exemplar(stage: Stage, outcome: str, end: float) -> dict[str, str] | None:
    """The trace link for a histogram observation, or None.

    Prometheus keeps only the latest exemplar per bucket, so attaching one to every observation
    buys nothing and costs ~15 % of a stage (hex formatting plus the client's validation): ok
    stages attach one at most once a second per spec; failures, the ones worth clicking, always.
    """
    if not stage.recording:
        return None
    if outcome == n.OUTCOME_OK:
        spec = stage.spec
        if end - spec.exemplar_at < EXEMPLAR_INTERVAL_S or not spec.take_exemplar(end):
            return None
    ctx = stage.span.get_span_context()
    return {"trace_id": format(ctx.trace_id, "032x"), "span_id": format(ctx.span_id, "016x")}


def _record_metrics(stage: Stage, outcome: str, duration: float) -> None:
    spec, cfg = stage.spec, stage.cfg
    metrics = cfg.metrics
    release = cfg.release_id
    exemplar = _exemplar(stage, outcome, stage.start + duration)
    stage_label, kind, system, operation = stage.labels
    fault = stage.fault if stage.fault is not None and outcome != n.OUTCOME_OK else n.NO_FAULT
    if spec.is_request:
        _record_request(stage, outcome, fault, duration, exemplar)
        return
    metrics.stage_duration.child(
        stage=stage_label, kind=kind, system=system, outcome=outcome, release=release
    ).observe(duration, exemplar)
    error_type = NO_VALUE
    if fault != n.NO_FAULT:
        error_type = metrics.guarded("error_type", stage.error_type or "")
        metrics.stage_errors.child(
            stage=stage_label, kind=kind, system=system, fault=fault, error_type=error_type
        ).inc()
    if spec.is_genai:
        # The GenAI conventions' rule, the same in usage_metrics.record: the model asked for
        # and the model that answered, each where known (docs/metrics.md).
        usage = stage.usage
        request_model = metrics.guarded("gen_ai_request_model", spec.model)
        response_model = metrics.guarded(  # as the span's gen_ai.response.model
            "gen_ai_response_model", (usage.model or usage.response_model) if usage else None
        )
        if outcome == n.OUTCOME_REJECTED:  # refused before the provider: an error, not a call
            error_type = metrics.guarded("error_type", n.ERR_BUDGET_EXCEEDED)
        metrics.gen_ai_duration.child(
            gen_ai_operation_name=operation,
            gen_ai_provider_name=system,
            gen_ai_request_model=request_model,
            gen_ai_response_model=response_model,
            error_type=error_type,
        ).observe(duration, exemplar)
        if stage.first_chunk is not None:
            metrics.gen_ai_ttfc.child(
                gen_ai_operation_name=operation,
                gen_ai_provider_name=system,
                gen_ai_request_model=request_model,
                gen_ai_response_model=response_model,
            ).observe(stage.first_chunk - stage.start)


def _record_request(
    stage: Stage, outcome: str, fault: str, duration: float, exemplar: dict[str, str] | None
) -> None:
    metrics, release = stage.cfg.metrics, stage.cfg.release_id
    request = stage.labels.stage
    scope = stage.scope
    feature = scope.labels.feature if scope is not None else NO_VALUE
    metrics.requests.child(
        request=request, feature=feature, outcome=outcome, fault=fault, release=release
    ).inc()
    metrics.request_duration.child(request=request, outcome=outcome, release=release).observe(
        duration, exemplar
    )
    metrics.in_flight.child(request=request).dec()
    usage = stage.usage
    if usage is not None and usage.priced:
        metrics.request_cost.child(request=request, feature=feature).observe(usage.cost_usd)
