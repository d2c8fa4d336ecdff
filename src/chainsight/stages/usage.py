"""What a stage records about its work: tokens, cost, documents, responses, budgets.

Called from the :class:`~chainsight.stages.wrappers.Stage` verbs, which catch anything raised here.
Bad values are dropped and counted, never raised.
"""

from __future__ import annotations

import logging
import math
from typing import TYPE_CHECKING, Final

from opentelemetry.util.types import AttributeValue

from chainsight import _names as n
from chainsight.config.state import report_internal
from chainsight.errors import BudgetExceeded
from chainsight.stages.content import record_content
from chainsight.stages.responses import ResponseInfo, StreamAccumulator

if TYPE_CHECKING:
    from chainsight.stages.wrappers import Stage

__all__ = [
    "apply_stream",
    "check_budget",
    "record",
    "record_documents",
    "record_response",
    "settle_budget",
    "usage_attributes",
]

logger = logging.getLogger("chainsight")

_MAX_COUNT: Final = 2**53
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
    *,
    provider: str | None = None,
    units: float | None = None,
) -> None:
    """Add one call's usage to the stage (and its request), with its cost and metrics."""
    raw = (
        input_tokens,
        output_tokens,
        cached_input_tokens,
        cache_write_input_tokens,
        reasoning_output_tokens,
    )
    counts = [_count(v) for v in raw]
    if any(c is None and v is not None for c, v in zip(counts, raw, strict=True)):
        stage.cfg.metrics.invalid("record_usage")
    if model is not None and (not isinstance(model, str) or not model):
        stage.cfg.metrics.invalid("record_usage")
        model = None
    if all(c is None for c in counts) and not units:
        return
    inp, out, read, write, reasoning = (c or 0 for c in counts)
    # The cache parts are the more specific numbers; the input total cannot be below them.
    inp = max(inp, read + write)
    spec, cfg = stage.spec, stage.cfg
    model_name = model or stage.response_model or spec.model or ""
    provider_name = spec.provider or provider or spec.system or ""

    stage.input_tokens += inp
    stage.output_tokens += out
    stage.cache_read_tokens += read
    stage.cache_write_tokens += write
    stage.reasoning_tokens += reasoning
    root = stage.root
    if root is not None and root is not stage:
        root.input_tokens += inp
        root.output_tokens += out

    cost = _cost(stage, model_name, provider_name, inp, out, read, write, units or 0.0)

    # The span attributes are written once, with the stage's final attributes (one SDK
    # validation pass instead of two per call).
    stage.has_usage = True
    if model and model != spec.model:
        stage.usage_model = model
    if cost is not None:
        stage.own_cost = (stage.own_cost or 0.0) + cost

    metrics = cfg.metrics
    guard = metrics.guard
    child = metrics.child
    p_label = guard(n.M_TOKENS, n.L_PROVIDER, provider_name)
    m_label = guard(n.M_TOKENS, n.L_MODEL, model_name)
    feature, tenant, team = _request_labels(stage)
    for token_type, value in (
        (n.TOKEN_INPUT, inp),
        (n.TOKEN_OUTPUT, out),
        (n.TOKEN_CACHE_READ, read),
        (n.TOKEN_CACHE_WRITE, write),
        (n.TOKEN_REASONING, reasoning),
    ):
        if value:
            child(metrics.tokens, p_label, m_label, token_type, feature, tenant).inc(value)
    if spec.is_genai:
        op = spec.operation or ""
        g_model = guard(n.M_GEN_AI_OPERATION_DURATION, n.L_GEN_AI_REQUEST_MODEL, model_name)
        if counts[0] is not None:
            child(metrics.gen_ai_tokens, op, stage.labels[2], g_model, n.TOKEN_INPUT).observe(inp)
        if counts[1] is not None:
            child(metrics.gen_ai_tokens, op, stage.labels[2], g_model, n.TOKEN_OUTPUT).observe(out)
    if cost is not None:
        child(metrics.cost, p_label, m_label, feature, tenant, team).inc(cost)


def usage_attributes(stage: Stage, attrs: dict[str, AttributeValue]) -> None:
    """Add the stage's usage (as recorded so far) to its final span attributes."""
    attrs[n.GEN_AI_USAGE_INPUT_TOKENS] = stage.input_tokens
    attrs[n.GEN_AI_USAGE_OUTPUT_TOKENS] = stage.output_tokens
    if stage.cache_read_tokens:
        attrs[n.GEN_AI_USAGE_CACHE_READ_INPUT_TOKENS] = stage.cache_read_tokens
    if stage.cache_write_tokens:
        attrs[n.GEN_AI_USAGE_CACHE_WRITE_INPUT_TOKENS] = stage.cache_write_tokens
    if stage.reasoning_tokens:
        attrs[n.GEN_AI_USAGE_REASONING_OUTPUT_TOKENS] = stage.reasoning_tokens
    if stage.usage_model is not None and n.GEN_AI_RESPONSE_MODEL not in attrs:
        attrs[n.GEN_AI_RESPONSE_MODEL] = stage.usage_model
    if stage.own_cost is not None:
        attrs[n.CS_COST_USD] = stage.own_cost
    if stage.cfg.openinference:
        attrs[n.OI_LLM_TOKEN_COUNT_PROMPT] = stage.input_tokens
        attrs[n.OI_LLM_TOKEN_COUNT_COMPLETION] = stage.output_tokens
        attrs[n.OI_LLM_TOKEN_COUNT_TOTAL] = stage.input_tokens + stage.output_tokens
        if stage.own_cost is not None:
            attrs[n.OI_LLM_COST_TOTAL] = stage.own_cost


def _request_labels(stage: Stage) -> tuple[str, str, str]:
    root = stage.root
    if root is None:
        return "", "", ""
    return root.feature_label, root.tenant_label, root.team_label


def _cost(
    stage: Stage,
    model: str,
    provider: str,
    inp: int,
    out: int,
    read: int,
    write: int,
    units: float,
) -> float | None:
    """Price the call; None (and counted as unpriced) when the model is not in the table."""
    cfg = stage.cfg
    if not model:
        return None
    price = cfg.prices.lookup(model, provider or None)
    metrics = cfg.metrics
    if price is None:
        guard = metrics.guard
        metrics.child(
            metrics.unpriced,
            guard(n.M_UNPRICED_CALLS, n.L_PROVIDER, provider),
            guard(n.M_UNPRICED_CALLS, n.L_MODEL, model),
        ).inc()
        key = f"{provider}/{model}"
        if key not in _warned_unpriced and len(_warned_unpriced) < _WARN_LIMIT:
            _warned_unpriced.add(key)
            logger.warning(
                "chainsight: no price for model %r (provider %r): its cost is unknown, not "
                "zero; add a row with configure(prices=...) (see docs/cost.md)",
                model,
                provider or None,
            )
        return None
    from chainsight.cost.prices import cost_usd  # noqa: PLC0415 - keeps the table's import lazy

    cost = cost_usd(
        price,
        input_tokens=inp,
        output_tokens=out,
        cached_input_tokens=read,
        cache_write_input_tokens=write,
        units=units,
    )
    if not math.isfinite(cost) or cost < 0:
        stage.cfg.metrics.invalid("record_usage")
        return None
    stage.cost_usd += cost
    stage.priced = True
    root = stage.root
    if root is not None and root is not stage:
        root.cost_usd += cost
        root.priced = True
    budgets = cfg.budgets
    if budgets is not None:
        labels = _budget_labels(stage, model, provider)
        admission = stage.admission
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
    return cost


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
        stage.cfg.metrics.child(stage.cfg.metrics.internal_errors, "budget_store").inc(now - seen)


def record_response(stage: Stage, response: object) -> None:
    """Feed a response (or one chunk of a stream) to the stage; applied when it ends."""
    if response is None:
        stage.cfg.metrics.invalid("record_response")
        return
    acc = stage.stream
    if acc is None:
        acc = stage.stream = StreamAccumulator(capture_text=stage.cfg.capture is not None)
    acc.add(response)


def apply_stream(stage: Stage) -> None:
    """At the end of a stage: turn what ``record_response`` saw into usage and attributes."""
    acc, stage.stream = stage.stream, None
    if acc is None:
        return
    info = acc.result()
    if info is None:
        stage.cfg.metrics.invalid("record_response")  # an unknown shape: ignored, counted
        return
    _apply(stage, info)


def _apply(stage: Stage, info: ResponseInfo) -> None:
    if info.output_text is not None and stage.cfg.capture is not None:
        message = [{"role": "assistant", "parts": [{"type": "text", "content": info.output_text}]}]
        record_content(stage, {"output_messages": message})
    if info.response_model:
        stage.response_model = info.response_model
    if stage.recording:
        attrs: dict[str, AttributeValue] = {}
        if info.response_model:
            attrs[n.GEN_AI_RESPONSE_MODEL] = info.response_model
        if info.response_id:
            attrs[n.GEN_AI_RESPONSE_ID] = info.response_id
        if info.finish_reasons:
            attrs[n.GEN_AI_RESPONSE_FINISH_REASONS] = info.finish_reasons
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
        provider=info.provider,
        units=info.units,
    )


def record_documents(stage: Stage, count: object, scores: object, ids: object) -> None:
    """Retrieval health: document count, empty results, duplicate ids, top score."""
    cfg = stage.cfg
    metrics = cfg.metrics
    labels = (stage.labels[0], stage.labels[2])
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
        metrics.child(metrics.retrieval_documents, *labels).observe(number)
        if number == 0:
            metrics.child(metrics.retrieval_empty, *labels).inc()
    if duplicates:
        metrics.child(metrics.retrieval_duplicates, *labels).inc(duplicates)
    if top is not None:
        metrics.child(metrics.retrieval_top_score, *labels).observe(top)
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
    attrs = root.request_attrs if root is not None and root.request_attrs else {}
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
        stage.admission = admission
        return None
    metrics = stage.cfg.metrics
    metrics.child(metrics.budget_rejections, admission.refused.name).inc()
    return admission.error()


def settle_budget(stage: Stage) -> None:
    """At the end of an admitted model stage: charge its real cost, release the reservation."""
    admission, stage.admission = stage.admission, None
    if admission is not None:
        admission.settle(stage.cost_usd if stage.priced else 0.0)
        _count_store_errors(stage)
