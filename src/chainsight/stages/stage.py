"""The running stage: :class:`Stage`, its verbs, its state, and the no-op stage.

This module is the one owner of a Stage's state: the finish path (``lifecycle``), ``usage`` and
``wrappers`` read the fields and change them only through the ``_``-prefixed methods below. It
imports none of those modules; the verbs that need prices, budgets or the content policy reach
them through the :class:`Recorder` that ``lifecycle`` (the module that creates every Stage)
hands each Stage it makes, so every dependency points at this module and no module writes
another's globals.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Final, NamedTuple

from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.util.types import AttributeValue

from chainsight import _names as n
from chainsight.config import state as _state
from chainsight.stages.attrs import clean_attributes, coerce, safe_attribute, safe_text
from chainsight.stages.faults import (
    Classification,
    Origin,
    StageFacts,
    classify_chain,
    is_cancellation,
)
from chainsight.stages.response_calls import ResponseCalls
from chainsight.stages.spec import RequestScope

if TYPE_CHECKING:
    from chainsight.config.snapshot import Config
    from chainsight.cost.budget import Admission
    from chainsight.export.metric_families import StageLabels
    from chainsight.stages.responses import StreamAccumulator
    from chainsight.stages.spec import Spec

__all__ = [
    "STAGE_KEY",
    "Recorder",
    "RequestScope",
    "Stage",
    "Usage",
    "classify_exception",
]

STAGE_KEY: Final = otel_context.create_key("chainsight-stage")
"""The context key under which the current :class:`Stage` travels with its span."""


class Usage:
    """What a stage recorded of its model calls: tokens, cost, the model that answered.

    Created at the first record, so a stage that records nothing allocates nothing. A request's
    token and cost totals include its stages'. Changed only through :class:`Stage` methods.
    """

    __slots__ = (
        "admission",
        "cache_read_tokens",
        "cache_write_1h_tokens",
        "cache_write_tokens",
        "calls",
        "cost_usd",
        "input_tokens",
        "model",
        "output_tokens",
        "own_cost",
        "priced",
        "reasoning_tokens",
        "recorded",
        "response_model",
    )

    def __init__(self) -> None:
        self.input_tokens = 0
        self.output_tokens = 0
        self.cache_read_tokens = 0
        self.cache_write_tokens = 0
        self.cache_write_1h_tokens = 0  # the part of cache_write_tokens in a one-hour cache
        self.reasoning_tokens = 0
        self.recorded = False  # this stage recorded usage itself (not only its stages')
        self.model: str | None = None  # the model record_usage named, when not the spec's
        self.own_cost: float | None = None
        self.cost_usd = 0.0
        self.priced = False
        self.response_model: str | None = None
        # The model calls record_response saw; the one in progress is priced when it ends.
        self.calls: ResponseCalls | None = None
        self.admission: Admission | None = None


class Recorder(NamedTuple):
    """The work behind the verbs that need prices, budgets, the content policy or the SDK's
    span internals."""

    usage: Callable[[Stage, object, object, object, object, object, object, object], None]
    response: Callable[[Stage, StreamAccumulator], None]
    documents: Callable[[Stage, object, object, object], None]
    content: Callable[[Stage, dict[str, object]], None]
    validation: Callable[[Stage, bool, str | None], None]


def classify_exception(cfg: Config, exc: BaseException, spec: Spec) -> Classification:
    """Walk the exception chain: on each link the user's rules first, then the built-in table."""
    if not cfg.classifiers:
        return classify_chain(exc, spec.facts)
    return classify_chain(exc, spec.facts, lambda link, facts: _by_rules(cfg, link, facts))


def _by_rules(cfg: Config, exc: BaseException, facts: StageFacts) -> Classification | None:
    """The first answer of the configured rules for one link of the chain, or None."""
    for rule in cfg.classifiers:
        try:
            found = rule(exc, facts)
        except Exception as err:  # a user rule's bug: fall back to the built-in table
            _state.report_internal("classifier", err)
            continue
        if found is None:
            continue
        if isinstance(found, tuple) and len(found) == 2:
            fault, error_type = found
            if fault in n.FAULTS and isinstance(error_type, str) and error_type:
                # The rule's text becomes a span attribute, a log field and a label value.
                return Classification(fault, safe_text(cfg.redactor, error_type, _ERROR_TYPE))
        cfg.metrics.invalid("classifier")
    return None


# The longest error type (a user rule's text) recorded, in UTF-8 bytes.
_ERROR_TYPE: Final = 256
# How many errors from children a stage remembers (see Stage._pass_up).
_CHILD_ERRORS: Final = 4


class Stage:
    """A running stage or request: what ``stage()`` yields and ``current_stage()`` returns.

    Every verb records facts about the work in progress and never raises: bad values are dropped
    and counted in ``chainsight_internal_errors_total{where="invalid_argument:<verb>"}``.
    """

    __slots__ = (
        "cfg",
        "child_errors",
        "degraded",
        "ended",
        "error_type",
        "fault",
        "final_attrs",
        "first_chunk",
        "labels",
        "origin",
        "outer_exc",
        "parent",
        "recorder",
        "recording",
        "rejected_by",
        "root",
        "scope",
        "span",
        "spec",
        "start",
        "usage",
        "validation_failed",
    )

    def __init__(
        self,
        spec: Spec,
        cfg: Config,
        span: trace.Span,
        parent: Stage | None,
        labels: StageLabels,
        recorder: Recorder,
        scope: RequestScope | None = None,
    ) -> None:
        """A stage that has just started ``span`` (``lifecycle.begin`` makes them)."""
        self.spec = spec
        self.recorder = recorder
        self.labels = labels
        self.cfg = cfg
        self.span = span
        self.parent = parent
        self.scope = scope
        self.root: Stage | None = parent.root if parent is not None else None
        if spec.is_request:
            self.root = self
        self.recording = span.is_recording()
        self.start = time.perf_counter()
        # An exception the caller was already handling is not this stage's failure.
        self.outer_exc: BaseException | None = sys.exc_info()[1]
        self.ended = False
        self.degraded = False
        self.validation_failed: Origin | None = None
        self.fault: str | None = None
        self.error_type: str | None = None
        self.origin: str | None = None
        self.rejected_by: str | None = None
        self.first_chunk: float | None = None
        self.usage: Usage | None = None
        # Span attributes the verbs leave for the end, written with the final ones in one go.
        self.final_attrs: dict[str, AttributeValue] | None = None
        # (exception, origin) of the latest errors that left child stages: where an error
        # started is remembered here, never on the user's exception object.
        self.child_errors: tuple[tuple[BaseException, Origin], ...] = ()

    # --- verbs ---------------------------------------------------------------------------
    def set(self, **attributes: object) -> None:
        """Set span attributes; values are coerced to legal types and redacted (whatever the
        capture setting); keys that name credentials are never recorded."""
        try:
            if not self.recording:
                return
            redactor = self.cfg.redactor
            for key, value in clean_attributes(attributes):
                if value is None:
                    self.cfg.metrics.invalid("set")
                    continue
                self.span.set_attribute(key, safe_attribute(redactor, value))
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
        cache_write_1h_input_tokens: object = None,
    ) -> None:
        """Record one call's token usage (OpenTelemetry convention) and compute its cost.

        ``input_tokens`` counts all input tokens, cached reads and cache writes included;
        ``cache_write_1h_input_tokens`` is the part of the cache writes that went to a one-hour
        cache (priced at the row's ``cache_write_1h``); ``output_tokens`` includes reasoning
        tokens. Counts must be non-negative ints. Each call adds to the stage's usage.
        """
        try:
            self.recorder.usage(
                self,
                input_tokens,
                output_tokens,
                cached_input_tokens,
                cache_write_input_tokens,
                reasoning_output_tokens,
                model,
                cache_write_1h_input_tokens,
            )
        except Exception as exc:
            _state.report_internal("record_usage", exc)

    def record_response(self, response: object) -> None:
        """Read usage, response model, id and finish reasons from a provider response.

        Works with OpenAI (chat completions, responses, embeddings), Anthropic, Gemini, Bedrock
        Converse, Cohere and LiteLLM shapes, as SDK objects or dicts. Unknown shapes are
        ignored and counted.

        Several responses in one stage (a tool loop) add up: each is one model call, priced
        on its own. In a streaming stage pass each chunk or event: the chunks of one stream
        are one call, whose cumulative usage is read once, not added chunk by chunk. A chunk
        belongs to the stream in progress; a complete response, the first event of a stream,
        or an item with another response id starts a new call; an item with the id of the call
        in progress (the stream's final message, the same response again) is that call
        (docs/api.md, "How responses add up"). A call is priced when the next one starts or
        the stage ends.
        """
        try:
            if response is None:
                self.cfg.metrics.invalid("record_response")
                return
            usage = self.usage or self._new_usage()
            calls = usage.calls
            if calls is None:
                calls = usage.calls = ResponseCalls(capture_text=self.cfg.capture is not None)
            ended = calls.add(response)
            if ended is not None:
                self.recorder.response(self, ended)
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
            self.recorder.content(
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
            self.recorder.documents(self, count, scores, ids)
        except Exception as exc:
            _state.report_internal("record_documents", exc)

    def record_validation(self, *, passed: object, reason: object = None) -> None:
        """Record an output check. A failure makes this stage ``error`` with fault ``model``."""
        try:
            if type(passed) is not bool:
                self.cfg.metrics.invalid("record_validation")
                return
            reason_text = self._free_text(reason)
            if reason is not None and reason_text is None:
                self.cfg.metrics.invalid("record_validation")
            self.recorder.validation(self, passed, reason_text)
            spec = self.spec
            failed = None if passed else Origin(spec.name, n.FAULT_MODEL, n.ERR_VALIDATION_FAILED)
            self.validation_failed = failed
            root = self.root
            if root is not None and root is not self:
                root.validation_failed = failed
        except Exception as exc:
            _state.report_internal("record_validation", exc)

    def fallback(self, *, to: object, reason: object = None) -> None:
        """Say that a fallback served the user: this stage and its request become ``degraded``.

        Called inside an ``except`` block, the exception being handled is classified so the
        fault domain of what failed is still recorded.
        """
        try:
            metrics = self.cfg.metrics
            to_text = self._free_text(to)
            if to_text is None:
                metrics.invalid("fallback")
                to_text = "unknown"
            reason_text = self._free_text(reason)
            self._fall_back(sys.exc_info()[1])
            if self.recording:
                attrs: dict[str, AttributeValue] = {n.CS_FALLBACK_TO: to_text}
                if reason_text is not None:
                    attrs[n.CS_FALLBACK_REASON] = reason_text
                self.span.set_attributes(attrs)
                self.span.add_event(n.EVENT_FALLBACK, attrs)
            metrics.fallbacks.child(
                stage=self.labels.stage,
                kind=self.spec.kind,
                to=metrics.guarded("to", to_text),
                reason=metrics.guarded("reason", reason_text if reason_text is not None else ""),
            ).inc()
        except Exception as exc:
            _state.report_internal("fallback", exc)

    def _free_text(self, value: object) -> str | None:
        """A reason or a target as text made safe to record, or None if there is none."""
        if value is None:
            return None
        legal = coerce(value)
        if legal is None:
            return None
        return safe_text(self.cfg.redactor, legal if type(legal) is str else str(legal))

    def _fall_back(self, handled: BaseException | None) -> None:
        """Mark this stage and its request degraded; keep the fault of what failed."""
        spec = self.spec
        self.degraded = True
        root = self.root
        if root is not None:
            root.degraded = True
            root.validation_failed = None
        self.validation_failed = None
        if handled is self.outer_exc:
            handled = None
        if handled is not None and not is_cancellation(handled):
            origin = self._origin_of(handled)
            if origin is None:
                found = classify_exception(self.cfg, handled, spec)
                origin = Origin(spec.name, found.fault, found.error_type)
            self._blame(origin)
        elif self.fault is None and not spec.is_request:
            # No exception in hand: the stage's own remote component is the best guess; a
            # request has none, so its fault stays unknown rather than wrongly "app".
            self.fault = spec.remote
            self.origin = spec.name
        if root is not None and root is not self and root.fault is None:
            # The request was served degraded because of this stage's failure: say which.
            root.fault, root.error_type, root.origin = self.fault, self.error_type, self.origin

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

    # --- state changes, for the finish path and usage (package use only) ------------------
    def _end_once(self) -> bool:
        """True the first time: the stage is ending now; False if it already ended."""
        if self.ended:
            return False
        self.ended = True
        return True

    def _origin_of(self, exc: BaseException) -> Origin | None:
        """Where ``exc`` started, if it left one of this stage's children."""
        for seen, origin in self.child_errors:
            if seen is exc:
                return origin
        return None

    def _pass_up(self, exc: BaseException, origin: Origin) -> None:
        """Tell the parent where the error this stage ends with started; forget the children's.

        A few are kept, not one: a child's error may be caught, a sibling fail, and the first
        re-raised.
        """
        self.child_errors = ()
        parent = self.parent
        if parent is not None:
            parent.child_errors = ((exc, origin), *parent.child_errors[: _CHILD_ERRORS - 1])

    def _blame(self, origin: Origin) -> None:
        """Record where the error this stage ended with (or fell back from) started."""
        self.origin, self.fault, self.error_type = origin

    def _reject(self, budget: str, *, degrade_request: bool = False) -> None:
        """A hard budget refused this stage (its request degraded if a hook answered instead)."""
        self.rejected_by = budget
        if degrade_request and self.root is not None:
            self.root.degraded = True

    def _first_chunk_at(self, at: float) -> None:
        """The first item of a streamed stage arrived at ``at`` (``perf_counter`` time)."""
        self.first_chunk = at
        if self.recording and self.spec.kind == "model":
            ttfc = at - self.start
            # The conventions' name, and ours of before it (deprecated; docs/conventions.md).
            self.span.set_attributes(
                {n.GEN_AI_RESPONSE_TIME_TO_FIRST_CHUNK: ttfc, n.CS_TTFC_SECONDS: ttfc}
            )
            self.span.add_event(n.EVENT_FIRST_CHUNK, {n.GEN_AI_RESPONSE_TIME_TO_FIRST_CHUNK: ttfc})

    def _add_final_attributes(self, attrs: dict[str, AttributeValue]) -> None:
        """Span attributes to write when the stage ends (later values win, as with
        ``set_attributes``)."""
        self.final_attrs = attrs if self.final_attrs is None else {**self.final_attrs, **attrs}

    def _new_usage(self) -> Usage:
        usage = self.usage = Usage()
        return usage

    def _add_usage(
        self,
        tokens: tuple[int, int, int, int, int, int],
        model: str | None,
        cost: float | None,
    ) -> None:
        """One call's usage: its tokens (input, output, cache read, cache write, reasoning,
        one-hour cache write) and cost on this stage (input, output and cost on its request
        too); ``model`` is the model ``record_usage`` named, if any."""
        inp, out, read, write, reasoning, write_1h = tokens
        usage = self.usage or self._new_usage()
        usage.input_tokens += inp
        usage.output_tokens += out
        usage.cache_read_tokens += read
        usage.cache_write_tokens += write
        usage.reasoning_tokens += reasoning
        usage.cache_write_1h_tokens += write_1h
        usage.recorded = True
        if model and model != self.spec.model:
            usage.model = model
        if cost is not None:
            usage.own_cost = (usage.own_cost or 0.0) + cost
            usage.cost_usd += cost
            usage.priced = True
        root = self.root
        if root is not None and root is not self:
            totals = root.usage or root._new_usage()
            totals.input_tokens += inp
            totals.output_tokens += out
            if cost is not None:
                totals.cost_usd += cost
                totals.priced = True

    def _set_response_model(self, model: str) -> None:
        (self.usage or self._new_usage()).response_model = model

    def _take_call(self) -> StreamAccumulator | None:
        """The model call ``record_response`` has in progress, handed over once (at the end
        of the stage)."""
        usage = self.usage
        if usage is None or usage.calls is None:
            return None
        return usage.calls.close()

    def _admit(self, admission: Admission) -> None:
        """The budgets admitted this model stage; settled when it ends."""
        (self.usage or self._new_usage()).admission = admission

    def _take_admission(self) -> Admission | None:
        usage = self.usage
        if usage is None:
            return None
        admission, usage.admission = usage.admission, None
        return admission
