"""The stage log line and the trace context of a stage, shared by ``chainsight.logging``.

With ``configure(log_stages=True)`` the finish path calls :func:`log_stage` once per finished
stage: one event on the stdlib logger ``chainsight.stages``, a logfmt message Loki can parse
and link to the trace, with the same facts as record attributes for structured handlers.
INFO for ``ok`` and ``cancelled``, WARNING for ``error``, ``degraded`` and ``rejected``;
nothing is built when that logger is not enabled for the level. See ``docs/logging.md``.
"""

from __future__ import annotations

import json

# An absolute import: the standard library's logging.
import logging
import re
from typing import TYPE_CHECKING, Any, Final

from chainsight import _names as n

if TYPE_CHECKING:
    from chainsight.stages.stage import Stage

__all__ = [
    "CONTEXT_FIELDS",
    "NO_CONTEXT",
    "STAGE_LOGGER_NAME",
    "context_of",
    "log_stage",
    "logfmt_value",
]

# Log field names. The ones that are also metric labels reuse the label constants so a log query
# and a PromQL query filter on the same words.
TRACE_ID: Final = "trace_id"
SPAN_ID: Final = "span_id"
STAGE: Final = n.L_STAGE
REQUEST: Final = n.L_REQUEST
RELEASE: Final = n.L_RELEASE
KIND: Final = n.L_KIND
OUTCOME: Final = n.L_OUTCOME
FAULT: Final = n.L_FAULT
ERROR_TYPE: Final = n.L_ERROR_TYPE
BUDGET: Final = n.L_BUDGET
DURATION_S: Final = "duration_s"
INPUT_TOKENS: Final = "input_tokens"
OUTPUT_TOKENS: Final = "output_tokens"
COST_USD: Final = "cost_usd"

CONTEXT_FIELDS: Final = (TRACE_ID, SPAN_ID, STAGE, REQUEST, RELEASE)
"""The fields ``add_trace_context`` and ``TraceContextFilter`` add, in this order."""
NO_CONTEXT: Final[tuple[None, ...]] = (None,) * len(CONTEXT_FIELDS)

STAGE_LOGGER_NAME: Final = "chainsight.stages"
"""The stdlib logger that stage log lines go to."""

_stage_logger: Final = logging.getLogger(STAGE_LOGGER_NAME)

# What logfmt parsers (go-logfmt, Loki) accept unquoted: no whitespace, quote, equals or escape.
_BARE: Final = re.compile(r'[^\s"=\\]+')

# Outcomes someone should look at are logged at WARNING; ok and cancelled (usually the caller
# going away) at INFO.
_INFO_OUTCOMES: Final = frozenset({n.OUTCOME_OK, n.OUTCOME_CANCELLED})


_Context = tuple[str | None, str | None, str, str | None, str]


class _Cached:
    """A stage's context values, and the (field, value) pairs that are not None."""

    __slots__ = ("pairs", "stage", "values")

    def __init__(self, stage: object, values: tuple[str | None, ...]) -> None:
        self.stage = stage
        self.values = values
        self.pairs = tuple(
            (k, v) for k, v in zip(CONTEXT_FIELDS, values, strict=True) if v is not None
        )


# Events usually come in runs from one stage, so the last stage's values are kept: formatting the
# ids is most of the cost. One reference swapped atomically, so threads only ever miss the cache;
# it holds the last stage alive until the next event from another stage.
_last = _Cached(None, NO_CONTEXT)


def context_of(stage: Stage) -> _Cached:
    """The stage's context values, cached for the run of events that usually follows."""
    global _last
    cached = _last
    if cached.stage is not stage:
        cached = _last = _Cached(stage, _context(stage))
    return cached


def _context(stage: Stage) -> _Context:
    """(trace_id, span_id, stage, request, release) of a stage; ids None when not sampled."""
    ctx = stage.span.get_span_context()
    if ctx.trace_flags.sampled:
        trace_id: str | None = format(ctx.trace_id, "032x")
        span_id: str | None = format(ctx.span_id, "016x")
    else:
        trace_id = span_id = None
    root = stage.root
    return (
        trace_id,
        span_id,
        stage.spec.name,
        root.spec.name if root is not None else None,
        stage.cfg.release_id,
    )


def logfmt_value(value: str) -> str:
    """A logfmt value: bare when it is a plain token, else a double-quoted, escaped string."""
    if value.isprintable() and _BARE.fullmatch(value):
        return value
    # JSON string escapes are a subset of Go's strconv.Unquote, which Loki's logfmt parser
    # uses; ASCII-only so no Unicode line separator can split the line in a log shipper.
    return json.dumps(value)


def log_stage(stage: Stage, outcome: str, duration: float) -> None:
    """The stage log line: called by the finish path when ``Config.log_stages`` is on."""
    level = logging.INFO if outcome in _INFO_OUTCOMES else logging.WARNING
    if not _stage_logger.isEnabledFor(level):
        return
    trace_id, span_id, name, request, release = _context(stage)
    # Same rule as the metrics: a fault is only reported for an outcome that is not ok.
    fault = stage.fault if stage.fault is not None and outcome != n.OUTCOME_OK else None
    error_type = stage.error_type if fault is not None else None
    usage = stage.usage
    input_tokens = usage.input_tokens if usage is not None else 0
    output_tokens = usage.output_tokens if usage is not None else 0
    cost = usage.cost_usd if usage is not None and usage.priced else None
    fields: dict[str, Any] = {
        STAGE: name,
        KIND: stage.spec.kind,
        REQUEST: request,
        OUTCOME: outcome,
        FAULT: fault if fault is not None else n.NO_FAULT,
        ERROR_TYPE: error_type,
        BUDGET: stage.rejected_by,
        DURATION_S: duration,
        INPUT_TOKENS: input_tokens,
        OUTPUT_TOKENS: output_tokens,
        COST_USD: cost,
        RELEASE: release,
        TRACE_ID: trace_id,
        SPAN_ID: span_id,
    }
    parts = [
        f"{STAGE}={logfmt_value(name)}",
        f"{KIND}={logfmt_value(stage.spec.kind)}",
    ]
    if request is not None:
        parts.append(f"{REQUEST}={logfmt_value(request)}")
    parts.append(f"{OUTCOME}={outcome}")
    parts.append(f"{FAULT}={fields[FAULT]}")
    if error_type is not None:
        parts.append(f"{ERROR_TYPE}={logfmt_value(error_type)}")
    if stage.rejected_by is not None:
        parts.append(f"{BUDGET}={logfmt_value(stage.rejected_by)}")
    parts.append(f"{DURATION_S}={duration:.6f}")
    if input_tokens or output_tokens:
        parts.append(f"{INPUT_TOKENS}={input_tokens}")
        parts.append(f"{OUTPUT_TOKENS}={output_tokens}")
    if cost is not None:
        parts.append(f"{COST_USD}={cost:.8f}")
    parts.append(f"{RELEASE}={logfmt_value(release)}")
    if trace_id is not None:
        parts.append(f"{TRACE_ID}={trace_id} {SPAN_ID}={span_id}")
    _stage_logger.log(level, " ".join(parts), extra=fields)
