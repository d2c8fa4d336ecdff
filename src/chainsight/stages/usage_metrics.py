"""The metric side of ``record_usage``: token and cost counters, the GenAI token histogram, and
the memo of their children per (spec, configuration, model, provider, answering model, request
labels); and the short way through that memo for the common call.

Split from :mod:`chainsight.stages.usage` (which validates, prices and charges budgets) because
this part runs on every priced model call and is written for speed: children are guarded and
looked up once, then reused.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any, Final

from chainsight import _names as n
from chainsight.export.metric_families import NO_REQUEST_LABELS, RequestLabels

if TYPE_CHECKING:
    from prometheus_client import Counter, Histogram

    from chainsight.stages.stage import Stage

__all__ = ["call_names", "record", "record_short", "request_labels"]

_TOKEN_TYPES: Final = (
    n.TOKEN_INPUT,
    n.TOKEN_OUTPUT,
    n.TOKEN_CACHE_READ,
    n.TOKEN_CACHE_WRITE,
    n.TOKEN_REASONING,
)
# The GenAI histogram has input and output only (the first two counts).
_GEN_AI_TOKEN_TYPES: Final = (n.TOKEN_INPUT, n.TOKEN_OUTPUT)


def call_names(stage: Stage, model: str | None, provider: str | None) -> tuple[str, str]:
    """The (model, provider) a call is priced and labelled by: the model ``record_usage`` named,
    else the one a response named, else the stage's; the stage's provider, else the call's."""
    spec = stage.spec
    usage = stage.usage
    model_name = model or (usage.response_model if usage else None) or spec.model or ""
    return model_name, spec.provider or provider or spec.system or ""


def record_short(
    stage: Stage, inp: int, out: int, provider: str | None, answered: str | None
) -> bool:
    """``record`` for input and output counts only, when every child it writes is remembered and
    the model is priced; False (nothing done) otherwise. The same result as the general path
    (tests/stages/test_usage_fast_path.py compares the two)."""
    if stage.cfg.budgets is not None:
        return False
    spec = stage.spec
    model_name, provider_name = call_names(stage, None, provider)
    found, remembered = _children(stage, provider_name, model_name, answered)
    if not remembered or found.rates is None:
        return False
    tokens = found.tokens
    input_child = tokens.get(n.TOKEN_INPUT) if inp else None
    output_child = tokens.get(n.TOKEN_OUTPUT) if out else None
    cost_child = found.cost
    if (inp and input_child is None) or (out and output_child is None) or cost_child is None:
        return False
    input_rate, output_rate, scale = found.rates
    # cost_usd's sum with no cache or unit parts (adding their zeros changes no bit).
    cost = (inp * input_rate + out * output_rate) / scale
    if not 0.0 <= cost < math.inf:
        return False
    if spec.is_genai:
        gen_ai = found.gen_ai
        input_hist = gen_ai.get(n.TOKEN_INPUT)
        output_hist = gen_ai.get(n.TOKEN_OUTPUT)
        if input_hist is None or output_hist is None:
            return False
        input_hist.observe(inp)
        output_hist.observe(out)
    stage._add_usage((inp, out, 0, 0, 0, 0), None, cost)
    if input_child is not None:
        input_child.inc(inp)
    if output_child is not None:
        output_child.inc(out)
    cost_child.inc(cost)
    return True


class _Children:
    """The metric children one (stage spec, configuration, model, provider, answering model,
    request labels) records usage into: guarded once, looked up once each, made only when first
    used (a child made is a series exposed); and the model's price, when it has a plain
    per-token one (input rate, output rate, scale)."""

    __slots__ = ("cost", "gen_ai", "rates", "tokens")

    def __init__(self) -> None:
        self.tokens: dict[str, Counter] = {}
        self.gen_ai: dict[str, Histogram] = {}
        self.cost: Counter | None = None
        self.rates: tuple[float, float, float] | None = None


# Memo entries per spec and configuration; a service names few models per stage.
_CHILDREN_PER_SPEC: Final = 64


def _children(
    stage: Stage, provider_name: str, model_name: str, answered: str | None
) -> tuple[_Children, bool]:
    """The memo entry for this call's labels, and whether it is remembered (not when the spec
    moved on to a newer configuration than the stage's, or a label overflowed the guard: the
    guard counts each overflowing use)."""
    labels = request_labels(stage)
    key = (provider_name, model_name, labels, answered)
    state = stage.spec.state
    memo: dict[Any, _Children] | None = state[4] if state[0] == stage.cfg.version else None
    if memo is not None:
        found = memo.get(key)
        if found is not None:
            return found, True
    return _Children(), False


def _remember(stage: Stage, key: tuple[Any, ...], children: _Children) -> None:
    state = stage.spec.state
    if state[0] != stage.cfg.version or n.OVERFLOW_VALUE in key[2] or n.OVERFLOW_VALUE in key[:2]:
        return
    memo: dict[Any, _Children] = state[4]
    if len(memo) >= _CHILDREN_PER_SPEC:
        memo.clear()
    memo[key] = children


def record(
    stage: Stage,
    provider_name: str,
    model_name: str,
    answered: str | None,
    given: list[int | None],
    amounts: tuple[int, ...],
    cost: float | None,
) -> None:
    """Token and cost counters for one call, and the GenAI token histogram for GenAI stages."""
    children, remembered = _children(stage, provider_name, model_name, answered)
    cost_child = children.cost
    if remembered and (cost is None or cost_child is not None):
        tokens = children.tokens
        found = [(tokens.get(kind), value) for kind, value in zip(_TOKEN_TYPES, amounts) if value]  # noqa: B905
        # Nothing is recorded until every child is known to exist: a call needing a child not
        # made yet goes the general way, once, and records everything there.
        if all(child is not None for child, _value in found) and _gen_ai_observe(
            stage, children, given, amounts, None, None
        ):
            for child, value in found:
                child.inc(value)  # type: ignore[union-attr]  # checked just above
            if cost is not None and cost_child is not None:
                cost_child.inc(cost)
            return
    _usage_metrics_first(stage, provider_name, model_name, answered, given, amounts, cost, children)


def _gen_ai_observe(
    stage: Stage,
    children: _Children,
    given: list[int | None],
    amounts: tuple[int, ...],
    request_model: Any,
    response_model: Any,
) -> bool:
    """Observe the GenAI token histograms; False (nothing observed) if a child is missing and
    ``request_model`` (the guarded labels to make it with) is None."""
    if not stage.spec.is_genai:
        return True
    gen_ai = children.gen_ai
    pending = []
    for token_type, count, value in zip(_GEN_AI_TOKEN_TYPES, given, amounts):  # noqa: B905
        if count is not None:  # the histogram has input and output only: zip stops there
            child = gen_ai.get(token_type)
            if child is None:
                if request_model is None:
                    return False
                metrics = stage.cfg.metrics
                child = gen_ai[token_type] = metrics.gen_ai_tokens.child(
                    gen_ai_operation_name=stage.labels.operation,
                    gen_ai_provider_name=stage.labels.system,
                    gen_ai_request_model=request_model,
                    gen_ai_response_model=response_model,
                    gen_ai_token_type=token_type,
                )
            pending.append((child, value))
    for child, value in pending:
        child.observe(value)
    return True


def _usage_metrics_first(
    stage: Stage,
    provider_name: str,
    model_name: str,
    answered: str | None,
    given: list[int | None],
    amounts: tuple[int, ...],
    cost: float | None,
    children: _Children,
) -> None:
    """The general path: guard the labels, record through (and fill) ``children``."""
    metrics = stage.cfg.metrics
    provider = metrics.guarded("provider", provider_name)
    model = metrics.guarded("model", model_name)
    feature, tenant, team = labels = request_labels(stage)
    for token_type, value in zip(_TOKEN_TYPES, amounts):  # noqa: B905 - both have five
        if value:
            child = children.tokens.get(token_type)
            if child is None:
                child = children.tokens[token_type] = metrics.tokens.child(
                    provider=provider,
                    model=model,
                    token_type=token_type,
                    feature=feature,
                    tenant=tenant,
                )
            child.inc(value)
    request_model = response_model = None
    if stage.spec.is_genai:
        # The same rule as the duration (lifecycle._record_metrics): asked for, and answered.
        request_model = metrics.guarded("gen_ai_request_model", stage.spec.model)
        response_model = metrics.guarded("gen_ai_response_model", answered)
    _gen_ai_observe(stage, children, given, amounts, request_model, response_model)
    if cost is not None:
        if children.cost is None:
            children.cost = metrics.cost.child(
                provider=provider, model=model, feature=feature, tenant=tenant, team=team
            )
        children.cost.inc(cost)
    if n.OVERFLOW_VALUE not in (provider, model, request_model, response_model):
        if cost is not None and children.rates is None:
            price = stage.cfg.prices.lookup(model_name, provider_name or None)
            if price is not None:
                children.rates = (price.input, price.output, price._scale)
        _remember(stage, (provider_name, model_name, labels, answered), children)


def request_labels(stage: Stage) -> RequestLabels:
    root = stage.root
    scope = root.scope if root is not None else None
    return scope.labels if scope is not None else NO_REQUEST_LABELS
