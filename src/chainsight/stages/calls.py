"""Stages that an integration opens around one call of a client library.

The integrations (``chainsight.integrations``) wrap SDK methods they do not own, so they cannot
decorate them with ``traced_stage``: the span must start before the request leaves, the context
must be attached only while the SDK runs (a stream outlives the call that returned it), and a
stream ends its stage when it is exhausted, fails, is closed or is dropped. These four
functions give them exactly that, on the same ``begin``/``finish`` path every stage takes, so an
integration's stage is indistinguishable from a hand-written one.
"""

from __future__ import annotations

from contextvars import Token
from typing import Any

from opentelemetry import context as otel_context
from opentelemetry.context import Context

from chainsight.config import state as _state
from chainsight.stages import usage as _usage
from chainsight.stages.lifecycle import begin, finish
from chainsight.stages.spec import Spec, spec_for
from chainsight.stages.stage import Stage

__all__ = ["detach", "end_call", "first_chunk", "open_call", "open_spec"]


def open_call(
    kind: str, name: str, attributes: dict[str, Any]
) -> tuple[Stage, Token[Context]] | None:
    """Start a stage for one SDK call and attach its context; None when chainsight is off or
    failed (the call then runs untraced).

    ``attributes`` are the keywords of :func:`chainsight.stage` (the dict is consumed). A model
    stage checks the budgets first, exactly like a hand-written one: a spent hard budget ends
    the stage ``rejected`` and raises :class:`~chainsight.BudgetExceeded` before the provider
    is called.
    """
    try:
        spec = spec_for(kind, name, attributes)
    except Exception as exc:  # a value from the SDK call chainsight cannot use: run untraced
        _state.report_internal("integration_spec", exc)
        return None
    return open_spec(spec)


def open_spec(spec: Spec) -> tuple[Stage, Token[Context]] | None:
    """:func:`open_call` for a spec the integration already has (cached per client and model)."""
    cfg = _state.CONFIG or _state.current()
    if not cfg.enabled:
        return None
    begun = begin(spec, cfg)
    if begun is None:
        return None
    stage, ctx = begun
    if spec.kind == "model":
        refused = _usage.check_budget(stage)
        if refused is not None:
            finish(stage, refused)
            raise refused
    return stage, otel_context.attach(ctx)


def detach(token: Token[Context]) -> None:
    """Detach the context :func:`open_call` attached (never raises)."""
    try:
        otel_context.detach(token)
    except Exception as exc:
        _state.report_internal("detach", exc)


def end_call(stage: Stage, exc: BaseException | None, end_at: float | None = None) -> None:
    """End the stage: ``exc`` None is success, ``GeneratorExit`` a stream closed or dropped
    early (``cancelled``), anything else is classified. Ends once; never raises."""
    finish(stage, exc, end_at=end_at)


def first_chunk(stage: Stage, at: float) -> None:
    """The first chunk of the stage's stream arrived at ``at`` (``time.perf_counter()``)."""
    if stage.first_chunk is None and not stage.ended:
        stage._first_chunk_at(at)
