"""What a stage records about its work: tokens, cost, documents, responses, budgets.

Called from the :class:`~chainsight.stages.stage.Stage` verbs (through the recorder ``lifecycle``
installs), which catch anything raised here, and from the finish path. Bad values are dropped and
counted, never raised. A Stage's tokens and cost are written through its own methods: this module
computes and reports them, the stage owns them.
"""

from __future__ import annotations

import logging
import math
from typing import TYPE_CHECKING, Final

from opentelemetry.util.types import AttributeValue

from chainsight import _names as n
from chainsight.config.state import report_internal
from chainsight.errors import BudgetExceeded
from chainsight.stages import openinference
from chainsight.stages import usage_metrics as _metrics
from chainsight.stages.attrs import safe_text
from chainsight.stages.content import record_content
from chainsight.stages.responses import ResponseInfo

if TYPE_CHECKING:
    from chainsight.stages.responses import StreamAccumulator
    from chainsight.stages.stage import Stage

__all__ = [
    "apply_call",
    "apply_stream",
    "check_budget",
    "record",
    "record_documents",
    "settle_budget",
    "usage_attributes",
]

logger = logging.getLogger("chainsight")

_MAX_COUNT: Final = 2**53
# The longest model name recorded from record_usage(model=...), in UTF-8 bytes.
_MODEL_BYTES: Final = 256
_warned_unpriced: set[str] = set()
_WARN_LIMIT: Final = 1000


def _count(value: object) -> int | None:
    if type(value) is int and 0 <= value < _MAX_COUNT:
        return value
    return None


def record(
    stage: Stage,
    input_tokens: object,
    output_tokens: object,
    cached_input_tokens: object,
    cache_write_input_tokens: object,
    reasoning_output_tokens: object,
    model: object,
    cache_write_1h_input_tokens: object = None,
    *,
    provider: str | None = None,
    units: float | None = None,
    answered: str | None = None,
) -> None:
    """Add one call's usage to the stage (and its request), with its cost and metrics.

    ``answered`` is the model a provider response named for this call (``record_response``);
    ``model`` the one ``record_usage`` named.
    """
    # The common call, record_usage(input_tokens=int, output_tokens=int), on labels recorded
    # before: straight through, without the general path's generators (record_short says no
    # before it changes anything when it cannot take it).
    if (
        model is None
        and cached_input_tokens is None
        and cache_write_input_tokens is None
        and reasoning_output_tokens is None
        and cache_write_1h_input_tokens is None
        and not units
        and type(input_tokens) is int
        and type(output_tokens) is int
        and 0 <= input_tokens < _MAX_COUNT
        and 0 <= output_tokens < _MAX_COUNT
        and _metrics.record_short(stage, input_tokens, output_tokens, provider, answered)
    ):
        return
    raw = (
        input_tokens,
        output_tokens,
        cached_input_tokens,
        cache_write_input_tokens,
        reasoning_output_tokens,
        cache_write_1h_input_tokens,
    )
    counts = [_count(v) for v in raw]
    if any(c is None and v is not None for c, v in zip(counts, raw, strict=True)):
        stage.cfg.metrics.invalid("record_usage")
    if model is not None and (not isinstance(model, str) or not model):
        stage.cfg.metrics.invalid("record_usage")
        model = None
    elif model is not None:
        # Text from the application, recorded as gen_ai.response.model: redacted like any.
        model = safe_text(stage.cfg.redactor, str.__str__(model), _MODEL_BYTES)
    if all(c is None for c in counts) and not units:
        return
    inp, out, read, write, reasoning, write_1h = (c or 0 for c in counts)
    # The parts are the more specific numbers: the writes cannot be below their one-hour part,
    # the input total cannot be below its cache parts.
    write = max(write, write_1h)
    inp = max(inp, read + write)
    spec = stage.spec
    model_name, provider_name = _metrics.call_names(stage, model, provider)

    tokens = (inp, out, read, write, reasoning, write_1h)
    # The call's gen_ai_response_model label: what the span records as gen_ai.response.model
    # (a record_usage model equal to the stage's own is not recorded there, nor here).
    if model is not None and model != spec.model:
        answered = model
    cost = _price(stage, model_name, provider_name, tokens, units or 0.0)
    # The span attributes are written once, with the stage's final attributes (one SDK
    # validation pass instead of two per call).
    stage._add_usage(tokens, model, cost)
    if cost is not None and stage.cfg.budgets is not None:
        _spend(stage, model_name, provider_name, cost)
    _metrics.record(stage, provider_name, model_name, answered, counts, tokens[:5], cost)


def usage_attributes(stage: Stage, attrs: dict[str, AttributeValue]) -> None:
    """Add the stage's usage (as recorded so far) to its final span attributes."""
    usage = stage.usage
    if usage is None:
        return
    attrs[n.GEN_AI_USAGE_INPUT_TOKENS] = usage.input_tokens
    attrs[n.GEN_AI_USAGE_OUTPUT_TOKENS] = usage.output_tokens
    if usage.cache_read_tokens:
        attrs[n.GEN_AI_USAGE_CACHE_READ_INPUT_TOKENS] = usage.cache_read_tokens
    if usage.cache_write_tokens:
        attrs[n.GEN_AI_USAGE_CACHE_WRITE_INPUT_TOKENS] = usage.cache_write_tokens
        # The v1.41-era name too, for the consumers that read only it (docs/conventions.md).
        attrs[n.GEN_AI_USAGE_CACHE_CREATION_INPUT_TOKENS] = usage.cache_write_tokens
    if usage.cache_write_1h_tokens:
        attrs[n.CS_USAGE_CACHE_WRITE_1H_INPUT_TOKENS] = usage.cache_write_1h_tokens
    if usage.reasoning_tokens:
        attrs[n.GEN_AI_USAGE_REASONING_OUTPUT_TOKENS] = usage.reasoning_tokens
    if usage.model is not None and n.GEN_AI_RESPONSE_MODEL not in attrs:
        attrs[n.GEN_AI_RESPONSE_MODEL] = usage.model
    if usage.own_cost is not None:
        attrs[n.CS_COST_USD] = usage.own_cost
    if stage.cfg.openinference:
        openinference.usage_attributes(stage.spec.kind, usage, attrs)


def _price(
    stage: Stage,
    model: str,
    provider: str,
    tokens: tuple[int, int, int, int, int, int],
    units: float,
) -> float | None:
    """Price the call; None (and counted as unpriced) when the model is not in the table."""
    cfg = stage.cfg
    if not model:
        return None
    price = cfg.prices.lookup(model, provider or None)
    metrics = cfg.metrics
    if price is None:
        metrics.unpriced.child(
            provider=metrics.guarded("unpriced_provider", provider),
            model=metrics.guarded("unpriced_model", model),
        ).inc()
        # The names come from the application or a response: redacted and bounded before they
        # are logged or remembered.
        shown_model = safe_text(cfg.redactor, model, _MODEL_BYTES)
        shown_provider = safe_text(cfg.redactor, provider, _MODEL_BYTES) if provider else None
        key = f"{shown_provider}/{shown_model}"
        if key not in _warned_unpriced and len(_warned_unpriced) < _WARN_LIMIT:
            _warned_unpriced.add(key)
            logger.warning(
                "chainsight: no price for model %r (provider %r): its cost is unknown, not "
                "zero; add a row with configure(prices=...) (see docs/cost.md)",
                shown_model,
                shown_provider,
            )
        return None
    from chainsight.cost.prices import cost_usd  # noqa: PLC0415 - keeps the table's import lazy

    inp, out, read, write, _reasoning, write_1h = tokens
    cost = cost_usd(
        price,
        input_tokens=inp,
        output_tokens=out,
        cached_input_tokens=read,
        cache_write_input_tokens=write,
        units=units,
        cache_write_1h_input_tokens=write_1h,
    )
    if not math.isfinite(cost) or cost < 0:
        stage.cfg.metrics.invalid("record_usage")
        return None
    return cost


def _spend(stage: Stage, model: str, provider: str, cost: float) -> None:
    """Charge a priced call to the budgets it matches (beyond those that admitted it)."""
    budgets = stage.cfg.budgets
    if budgets is None:
        return
    labels = _budget_labels(stage, model, provider)
    admission = stage.usage.admission if stage.usage is not None else None
    if admission is None:
        budgets.spend(labels, cost)
    else:
        # The admission matched the model the stage was declared with; the model that
        # really answered (from record_usage or the response) may match other budgets.
        covered = admission.covers
        extra = [b for b in budgets.budgets if b not in covered and b.matches(labels)]
        if extra:
            budgets.spend_on(extra, cost)
    _count_store_errors(stage)


_store_errors_seen: dict[int, int] = {}


def _count_store_errors(stage: Stage) -> None:
    """Count budget-store outages (fail-open events) as internal errors at "budget_store"."""
    budgets = stage.cfg.budgets
    if budgets is None:
        return
    now = budgets.store_errors
    seen = _store_errors_seen.get(id(budgets), 0)
    if now > seen:
        _store_errors_seen[id(budgets)] = now
        stage.cfg.metrics.internal_errors.child(where="budget_store").inc(now - seen)


def apply_stream(stage: Stage) -> None:
    """At the end of a stage: turn the model call ``record_response`` has in progress into
    usage and attributes (the calls before it were applied when they ended)."""
    apply_call(stage, stage._take_call())


def apply_call(stage: Stage, acc: StreamAccumulator | None) -> None:
    """One model call that ``record_response`` saw has ended: record its usage and cost."""
    if acc is None:
        return
    info = acc.result()
    if info is None:
        stage.cfg.metrics.invalid("record_response")  # an unknown shape: ignored, counted
        return
    _apply(stage, info)


def _capture_reply(stage: Stage, info: ResponseInfo) -> None:
    """The reply as output messages (content capture is on): the SDK's message when it calls
    tools, else its text."""
    if info.output_message is not None:
        message: object = info.output_message
    elif info.output_text is not None:
        message = {"role": "assistant", "parts": [{"type": "text", "content": info.output_text}]}
    else:
        return
    reason = info.finish_reasons[0] if info.finish_reasons else None
    record_content(stage, {"output_messages": [message]}, reason)


def _apply(stage: Stage, info: ResponseInfo) -> None:
    if stage.cfg.capture is not None:
        _capture_reply(stage, info)
    # What a response says is text from outside like any other: redacted before it is kept.
    redactor = stage.cfg.redactor
    model = safe_text(redactor, info.response_model, _MODEL_BYTES) if info.response_model else None
    if model:
        stage._set_response_model(model)
    if stage.recording:
        attrs: dict[str, AttributeValue] = {}
        if model:
            attrs[n.GEN_AI_RESPONSE_MODEL] = model
        if info.response_id:
            attrs[n.GEN_AI_RESPONSE_ID] = safe_text(redactor, info.response_id, _MODEL_BYTES)
        if info.finish_reasons:
            attrs[n.GEN_AI_RESPONSE_FINISH_REASONS] = tuple(
                safe_text(redactor, reason, _MODEL_BYTES) for reason in info.finish_reasons
            )
        if attrs:
            stage.span.set_attributes(attrs)
    record(
        stage,
        info.input_tokens,
        info.output_tokens,
        info.cached_input_tokens,
        info.cache_write_input_tokens,
        info.reasoning_output_tokens,
        None,
        info.cache_write_1h_input_tokens,
        provider=info.provider,
        units=info.units,
        answered=model,
    )


def record_documents(stage: Stage, count: object, scores: object, ids: object) -> None:
    """Retrieval health: document count, empty results, duplicate ids, top score."""
    metrics = stage.cfg.metrics
    stage_label, system = stage.labels.stage, stage.labels.system
    number = _count(count)
    if count is not None and number is None:
        stage.cfg.metrics.invalid("record_documents")
    top: float | None = None
    if scores is not None:
        if isinstance(scores, (list, tuple)):
            values = [
                float(s)
                for s in scores
                if type(s) in (int, float) and math.isfinite(s)  # bools are not scores
            ]
            if len(values) != len(scores):
                stage.cfg.metrics.invalid("record_documents")
            top = max(values) if values else None
        else:
            stage.cfg.metrics.invalid("record_documents")
    duplicates = 0
    id_count: int | None = None
    if ids is not None:
        if isinstance(ids, (list, tuple)):
            hashable = [i for i in ids if isinstance(i, (str, int)) and not isinstance(i, bool)]
            if len(hashable) != len(ids):
                stage.cfg.metrics.invalid("record_documents")
            id_count = len(hashable)
            duplicates = id_count - len(set(hashable))
        else:
            stage.cfg.metrics.invalid("record_documents")
    if number is None:
        number = id_count if id_count is not None else (len(scores) if top is not None else None)  # type: ignore[arg-type]
    if number is not None:
        metrics.retrieval_documents.child(stage=stage_label, system=system).observe(number)
        if number == 0:
            metrics.retrieval_empty.child(stage=stage_label, system=system).inc()
    if duplicates:
        metrics.retrieval_duplicates.child(stage=stage_label, system=system).inc(duplicates)
    if top is not None:
        metrics.retrieval_top_score.child(stage=stage_label, system=system).observe(top)
    if stage.recording:
        attrs: dict[str, AttributeValue] = {}
        if number is not None:
            attrs[n.CS_RETRIEVAL_DOCUMENT_COUNT] = number
        if top is not None:
            attrs[n.CS_RETRIEVAL_TOP_SCORE] = top
        if duplicates:
            attrs[n.CS_RETRIEVAL_DUPLICATE_IDS] = duplicates
        if attrs:
            stage.span.set_attributes(attrs)


def _budget_labels(stage: Stage, model: str, provider: str) -> dict[str, str]:
    root = stage.root
    scope = root.scope if root is not None else None
    attrs = scope.attrs if scope is not None else {}
    return {
        n.L_FEATURE: str(attrs.get(n.CS_FEATURE, "")),
        n.L_TENANT: str(attrs.get(n.CS_TENANT, "")),
        n.L_TEAM: str(attrs.get(n.CS_TEAM, "")),
        n.L_REQUEST: root.spec.name if root is not None else "",
        n.L_PROVIDER: provider,
        n.L_MODEL: model,
        n.L_STAGE: stage.spec.name,
    }


def check_budget(stage: Stage) -> BudgetExceeded | None:
    """Before a model stage calls its provider: admit it, or return the refusal to raise.

    Never raises: if the budget machinery itself fails, the call is admitted (fail open),
    counted and logged.
    """
    try:
        return _check_budget(stage)
    except Exception as exc:
        report_internal("budget_check", exc)
        return None


def _check_budget(stage: Stage) -> BudgetExceeded | None:
    budgets = stage.cfg.budgets
    if budgets is None:
        return None
    spec = stage.spec
    admission = budgets.admit(_budget_labels(stage, spec.model or "", spec.provider or ""))
    _count_store_errors(stage)
    if admission.refused is None:
        stage._admit(admission)
        return None
    stage.cfg.metrics.budget_rejections.child(budget=admission.refused.name).inc()
    return admission.error()


def settle_budget(stage: Stage) -> None:
    """At the end of an admitted model stage: charge its real cost, release the reservation."""
    admission = stage._take_admission()
    if admission is not None:
        usage = stage.usage
        admission.settle(usage.cost_usd if usage is not None and usage.priced else 0.0)
        _count_store_errors(stage)
