"""``record_validation``: an output check on the stage's span (attributes and the GenAI
evaluation event) and in ``chainsight_validations_total``.

A validation stage runs in every request, so what does not change between the calls of one spec
(the event's attributes, the metric child) is made once per spec and configuration and kept in
the spec's memo, and the span attributes join the stage's final ones: one SDK write when the
stage ends instead of one more now.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from opentelemetry.util.types import AttributeValue

from chainsight import _names as n
from chainsight.stages import spans

if TYPE_CHECKING:
    from prometheus_client import Counter

    from chainsight.stages.stage import Stage

__all__ = ["record"]


def record(stage: Stage, passed: bool, reason: str | None) -> None:
    """Record one check on ``stage`` (``reason`` already redacted and cut, or None)."""
    state = stage.spec.state
    memo: dict[Any, Any] | None = state[4] if state[0] == stage.cfg.version else None
    if stage.recording:
        final: dict[str, AttributeValue] = {n.CS_VALIDATION_PASSED: passed}
        if reason is not None:
            final[n.CS_VALIDATION_REASON] = reason
        stage._add_final_attributes(final)
        _event(stage, passed, reason, memo)
    _count(stage, passed, memo)


def _event(stage: Stage, passed: bool, reason: str | None, memo: dict[Any, Any] | None) -> None:
    span, event = stage.span, n.GEN_AI_EVALUATION_RESULT_EVENT
    key = ("validation_event", passed)
    frozen = memo.get(key) if memo is not None and reason is None else None
    if frozen is not None and spans.add_frozen_event(span, event, frozen):
        return
    spec = stage.spec
    attrs: dict[str, AttributeValue] = {
        n.GEN_AI_EVALUATION_NAME: spec.validator or spec.name,
        n.GEN_AI_EVALUATION_SCORE_LABEL: "pass" if passed else "fail",
    }
    if reason is not None:
        attrs[n.GEN_AI_EVALUATION_EXPLANATION] = reason
    elif memo is not None and frozen is None:
        # The first check of this result for the spec (and configuration): made once, shared.
        frozen = spans.frozen_event_attributes(span, attrs)
        if frozen is not None:
            memo[key] = frozen
            if spans.add_frozen_event(span, event, frozen):
                return
    span.add_event(event, attrs)


def _count(stage: Stage, passed: bool, memo: dict[Any, Any] | None) -> None:
    key = ("validation_child", passed)
    child: Counter | None = memo.get(key) if memo is not None else None
    if child is None:
        metrics = stage.cfg.metrics
        spec = stage.spec
        validator = metrics.guarded("validator", spec.validator or spec.name)
        child = metrics.validations.child(
            stage=stage.labels.stage, validator=validator, result="passed" if passed else "failed"
        )
        # An overflowing label is counted by the guard at each use: not remembered.
        if memo is not None and validator != n.OVERFLOW_VALUE:
            memo[key] = child
    child.inc()
