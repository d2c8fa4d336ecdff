"""Log correlation and stage log lines: a structlog processor, a stdlib filter, per-stage events.

``add_trace_context`` (structlog) and :class:`TraceContextFilter` (stdlib ``logging``) add
``trace_id``, ``span_id``, ``stage``, ``request`` and ``release`` to every event logged inside a
stage, so a log line links to its span. chainsight never configures structlog or the root logger:
users add these to their own setup.

``enable_stage_logs(True)`` (what ``configure(log_stages=True)`` does) logs one event per finished
stage on the stdlib logger ``chainsight.stages``: a logfmt message Loki can parse and link to the
trace, with the same facts as record attributes for structured handlers. See ``docs/logging.md``.
"""

from __future__ import annotations

import json

# An absolute import: the standard library's logging, not this module.
import logging
import re
from collections.abc import MutableMapping
from typing import Any, Final

from chainsight import _names as n
from chainsight.errors import ConfigurationError
from chainsight.stages import wrappers as _stage

__all__ = [
    "CONTEXT_FIELDS",
    "STAGE_LOGGER_NAME",
    "TraceContextFilter",
    "add_trace_context",
    "enable_stage_logs",
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
_NO_CONTEXT: Final[tuple[None, ...]] = (None,) * len(CONTEXT_FIELDS)

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
_last = _Cached(None, _NO_CONTEXT)


def _context_of(stage: _stage.Stage) -> _Cached:
    global _last
    cached = _last
    if cached.stage is not stage:
        cached = _last = _Cached(stage, _context(stage))
    return cached


def _context(stage: _stage.Stage) -> _Context:
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


def add_trace_context(
    logger: object, method_name: str, event_dict: MutableMapping[str, Any]
) -> MutableMapping[str, Any]:
    """structlog processor: add ``trace_id``, ``span_id``, ``stage``, ``request``, ``release``.

    Put it in your own chain before the renderer, e.g.
    ``structlog.configure(processors=[..., chainsight.logging.add_trace_context, JSONRenderer()])``.
    Outside a stage it adds nothing; ``trace_id``/``span_id`` are left out when the trace is not
    sampled (there is no exported span to link to). Keys already in the event are kept, so an
    explicit ``log.info("x", stage="mine")`` wins. For stdlib records passed through
    ``structlog.stdlib.ProcessorFormatter`` the values on the record (chainsight's stage log lines,
    or a :class:`TraceContextFilter`) are used first.
    """
    record = event_dict.get("_record")
    if isinstance(record, logging.LogRecord):
        # A stage log line is emitted after its span has left the context: the record, not the
        # current stage, knows which span it belongs to.
        for key in CONTEXT_FIELDS:
            value = getattr(record, key, None)
            if value is not None:
                event_dict.setdefault(key, value)
    # Typed as object: outside a stage current_stage() gives the no-op stage, not a Stage.
    stage: object = _stage.current_stage()
    if not isinstance(stage, _stage.Stage):
        return event_dict
    for key, value in _context_of(stage).pairs:
        if key not in event_dict:
            event_dict[key] = value
    return event_dict


class TraceContextFilter(logging.Filter):
    """stdlib ``logging.Filter`` adding ``trace_id``, ``span_id``, ``stage``, ``request``,
    ``release`` as record attributes, for format strings such as
    ``"%(levelname)s %(message)s trace_id=%(trace_id)s span_id=%(span_id)s"``.

    Attach it to a handler (a filter on a logger does not see records propagated from its
    children). Every record gets all five attributes so format strings never fail: outside a stage,
    or when the trace is not sampled, the missing ones are set to ``missing`` (default None).
    Attributes the record already has (``extra=``, chainsight's stage log lines) are kept. Apart
    from the stdlib ``name`` rule, the filter never drops a record.
    """

    def __init__(self, name: str = "", *, missing: str | None = None) -> None:
        """``name`` is the stdlib filter name (records from that logger subtree only, "" = all);
        ``missing`` is the value given to fields that have none."""
        super().__init__(name)
        if missing is not None and not isinstance(missing, str):
            raise ConfigurationError(
                f"TraceContextFilter(missing={missing!r}): missing must be a string such as '-' "
                "or None"
            )
        self.missing = missing

    def filter(self, record: logging.LogRecord) -> bool:
        """Add the trace context to ``record``; False only for records outside ``name``."""
        if not super().filter(record):
            return False
        stage: object = _stage.current_stage()
        values = _context_of(stage).values if isinstance(stage, _stage.Stage) else _NO_CONTEXT
        missing = self.missing
        for key, value in zip(CONTEXT_FIELDS, values, strict=True):
            current = getattr(record, key, None)
            if current is None or current is missing:
                setattr(record, key, value if value is not None else missing)
        return True


def enable_stage_logs(enabled: bool) -> None:
    """Turn stage log lines on or off (``configure(log_stages=...)`` calls this).

    When on, every finished stage and request logs one event on the stdlib logger
    ``chainsight.stages``: INFO for ``ok`` and ``cancelled``, WARNING for ``error``, ``degraded``
    and ``rejected``. Nothing is built when that logger is not enabled for the level.
    """
    if not isinstance(enabled, bool):
        raise ConfigurationError(
            f"log_stages={enabled!r} must be True or False; True logs one line per finished "
            "stage on the 'chainsight.stages' logger"
        )
    _stage._logging_hook = _log_stage if enabled else None


def _logfmt_value(value: str) -> str:
    """A logfmt value: bare when it is a plain token, else a double-quoted, escaped string."""
    if value.isprintable() and _BARE.fullmatch(value):
        return value
    # JSON string escapes are a subset of Go's strconv.Unquote, which Loki's logfmt parser
    # uses; ASCII-only so no Unicode line separator can split the line in a log shipper.
    return json.dumps(value)


def _log_stage(stage: _stage.Stage, outcome: str, duration: float) -> None:
    """The stage log line: called by chainsight.stages.wrappers at the end of every stage."""
    level = logging.INFO if outcome in _INFO_OUTCOMES else logging.WARNING
    if not _stage_logger.isEnabledFor(level):
        return
    trace_id, span_id, name, request, release = _context(stage)
    # Same rule as the metrics: a fault is only reported for an outcome that is not ok.
    fault = stage.fault if stage.fault is not None and outcome != n.OUTCOME_OK else None
    error_type = stage.error_type if fault is not None else None
    cost = stage.cost_usd if stage.priced else None
    fields: dict[str, Any] = {
        STAGE: name,
        KIND: stage.spec.kind,
        REQUEST: request,
        OUTCOME: outcome,
        FAULT: fault if fault is not None else n.NO_FAULT,
        ERROR_TYPE: error_type,
        BUDGET: stage.rejected_by,
        DURATION_S: duration,
        INPUT_TOKENS: stage.input_tokens,
        OUTPUT_TOKENS: stage.output_tokens,
        COST_USD: cost,
        RELEASE: release,
        TRACE_ID: trace_id,
        SPAN_ID: span_id,
    }
    parts = [
        f"{STAGE}={_logfmt_value(name)}",
        f"{KIND}={_logfmt_value(stage.spec.kind)}",
    ]
    if request is not None:
        parts.append(f"{REQUEST}={_logfmt_value(request)}")
    parts.append(f"{OUTCOME}={outcome}")
    parts.append(f"{FAULT}={fields[FAULT]}")
    if error_type is not None:
        parts.append(f"{ERROR_TYPE}={_logfmt_value(error_type)}")
    if stage.rejected_by is not None:
        parts.append(f"{BUDGET}={_logfmt_value(stage.rejected_by)}")
    parts.append(f"{DURATION_S}={duration:.6f}")
    if stage.input_tokens or stage.output_tokens:
        parts.append(f"{INPUT_TOKENS}={stage.input_tokens}")
        parts.append(f"{OUTPUT_TOKENS}={stage.output_tokens}")
    if cost is not None:
        parts.append(f"{COST_USD}={cost:.8f}")
    parts.append(f"{RELEASE}={_logfmt_value(release)}")
    if trace_id is not None:
        parts.append(f"{TRACE_ID}={trace_id} {SPAN_ID}={span_id}")
    _stage_logger.log(level, " ".join(parts), extra=fields)
