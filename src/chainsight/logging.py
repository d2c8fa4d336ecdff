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

# An absolute import: the standard library's logging, not this module.
import logging
from collections.abc import MutableMapping
from typing import Any

from chainsight.config.configure import configure
from chainsight.errors import ConfigurationError
from chainsight.stages.log import (
    CONTEXT_FIELDS,
    NO_CONTEXT,
    STAGE_LOGGER_NAME,
    context_of,
)
from chainsight.stages.noop import NoopStage
from chainsight.stages.wrappers import current_stage

__all__ = [
    "CONTEXT_FIELDS",
    "STAGE_LOGGER_NAME",
    "TraceContextFilter",
    "add_trace_context",
    "enable_stage_logs",
]


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
    stage = current_stage()
    if isinstance(stage, NoopStage):  # outside any stage (or chainsight is off)
        return event_dict
    for key, value in context_of(stage).pairs:
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
        stage = current_stage()
        values = NO_CONTEXT if isinstance(stage, NoopStage) else context_of(stage).values
        missing = self.missing
        for key, value in zip(CONTEXT_FIELDS, values, strict=True):
            current = getattr(record, key, None)
            if current is None or current is missing:
                setattr(record, key, value if value is not None else missing)
        return True


def enable_stage_logs(enabled: bool) -> None:
    """Turn stage log lines on or off: the same as ``configure(log_stages=enabled)``.

    When on, every finished stage and request logs one event on the stdlib logger
    ``chainsight.stages``: INFO for ``ok`` and ``cancelled``, WARNING for ``error``, ``degraded``
    and ``rejected``. Nothing is built when that logger is not enabled for the level.
    """
    if not isinstance(enabled, bool):
        raise ConfigurationError(
            f"log_stages={enabled!r} must be True or False; True logs one line per finished "
            "stage on the 'chainsight.stages' logger"
        )
    configure(log_stages=enabled)
