"""Starting and finishing SDK spans without validating, per call, attributes validated once.

The OpenTelemetry SDK cleans every attribute of every span it starts (``BoundedAttributes``
runs ``_clean_attribute_value`` over the mapping) and again at every ``set_attributes``. A
stage's start attributes are the same on every call of a decorated function, and its final
attributes are values chainsight made itself (outcome, fault, token counts), so that work is
done once here: :func:`starter_for` cleans nothing per call, and :func:`set_final` writes the
final attributes under the span's lock.

Both rely on SDK internals, and only when they are what this module was written against:

- ``Tracer.start_span`` is reproduced step for step (:func:`_start`), with ``attributes=None``
  handed to ``_Span`` and the pre-cleaned mapping placed in its ``BoundedAttributes._dict``
  before ``span.start()`` runs the processors' ``on_start`` (so they see every attribute);
- the sampler must be one that passes the attributes it is given through unchanged
  (``ALWAYS_ON``/``ALWAYS_OFF``, ``TraceIdRatioBased``, ``ParentBased`` of those, chainsight's
  ``SwitchableSampler``): any other gets the SDK's own ``start_span``;
- span limits that truncate values (``max_span_attribute_length``) send every call through the
  SDK's path, since pre-cleaned values would skip the cut.

``tests/test_sdk_fast_path.py`` fingerprints the SDK code reproduced here and compares the spans
of both paths field by field; an SDK upgrade that changes either fails it.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any, Final, cast

from opentelemetry import trace as trace_api
from opentelemetry.attributes import BoundedAttributes, _clean_attribute_value
from opentelemetry.context import Context
from opentelemetry.sdk.trace import Event, _Span
from opentelemetry.sdk.trace import Tracer as SdkTracer
from opentelemetry.sdk.trace.sampling import (
    ParentBased,
    Sampler,
    StaticSampler,
    TraceIdRatioBased,
)
from opentelemetry.trace import NonRecordingSpan, SpanContext, SpanKind, TraceFlags
from opentelemetry.trace.propagation import _SPAN_KEY
from opentelemetry.util.types import AttributeValue

if TYPE_CHECKING:
    from opentelemetry.trace import Span

__all__ = [
    "FrozenEvent",
    "SpanStarter",
    "add_frozen_event",
    "clean_once",
    "context_with",
    "frozen_event_attributes",
    "set_final",
    "starter_for",
]

SpanStarter = Callable[[str, Context, SpanKind, Mapping[str, AttributeValue]], "Span"]
"""``start(name, parent_context, kind, attributes)``: a started span."""

_SAMPLED: Final = TraceFlags(TraceFlags.SAMPLED)
_NOT_SAMPLED: Final = TraceFlags(TraceFlags.DEFAULT)
_RANDOM: Final = TraceFlags.RANDOM_TRACE_ID
_PARENT_BASED_DELEGATES: Final = (
    "_root",
    "_remote_parent_sampled",
    "_remote_parent_not_sampled",
    "_local_parent_sampled",
    "_local_parent_not_sampled",
)
_SCALARS: Final = (str, bool, int, float)


def _passes_attributes_through(sampler: Sampler) -> bool:
    """True for samplers whose result carries exactly the attributes they were given."""
    kind = type(sampler)
    if kind is StaticSampler or kind is TraceIdRatioBased:
        return True
    if kind is ParentBased:
        return all(
            _passes_attributes_through(getattr(sampler, name, None))  # type: ignore[arg-type]
            for name in _PARENT_BASED_DELEGATES
        )
    if kind.__name__ == "SwitchableSampler" and kind.__module__ == "chainsight.export.traces":
        return _passes_attributes_through(getattr(sampler, "_delegate", None))  # type: ignore[arg-type]
    return False


def _fast_start_possible(tracer: object) -> bool:
    if type(tracer) is not SdkTracer:
        return False
    limits = getattr(tracer, "_span_limits", None)
    if limits is None or limits.max_span_attribute_length is not None:
        return False
    sampler = getattr(tracer, "sampler", None)
    return sampler is not None and _passes_attributes_through(sampler)


def starter_for(tracer: trace_api.Tracer) -> SpanStarter:
    """How to start spans of ``tracer``: the fast starter when its SDK parts are the known
    ones, else the tracer's own ``start_span``.

    Decided once per configuration (the tracer, its sampler and its limits are fixed then).
    The attributes handed to the starter must come from :func:`clean_once`.
    """
    if _fast_start_possible(tracer):
        return _bind(tracer)
    start_span = tracer.start_span

    def start(
        name: str, context: Context, kind: SpanKind, attributes: Mapping[str, AttributeValue]
    ) -> Span:
        span: Span = start_span(name, context, kind, attributes)
        return span

    return start


def clean_once(attrs: Mapping[str, AttributeValue]) -> dict[str, AttributeValue]:
    """``attrs`` as the SDK stores them (sequences as tuples), computed once, not per span."""
    cleaned: Any = _clean_attribute_value(attrs, None)
    return cast("dict[str, AttributeValue]", cleaned)


def _bind(tracer: Any) -> SpanStarter:
    """``Tracer.start_span`` of opentelemetry-sdk 1.45 for pre-cleaned attributes."""
    sampler = tracer.sampler
    id_generator = tracer.id_generator
    random_ids = id_generator.is_trace_id_random
    new_trace_id = id_generator.generate_trace_id
    new_span_id = id_generator.generate_span_id
    metrics_start = tracer._tracer_metrics.start_span
    is_enabled = tracer._is_enabled
    maxlen: int | None = tracer._span_limits.max_span_attributes
    start_span = tracer.start_span
    get_current_span = trace_api.get_current_span
    # _Span's positional parameters around ``kind``: (sampler, trace_config, resource,
    # attributes, events, links) and (span_processor, instrumentation_info, record_exception,
    # set_status_on_exception, limits, instrumentation_scope). The attributes are placed in
    # the span below, already clean.
    before_kind = (sampler, None, tracer.resource, None, None, ())
    after_kind = (
        tracer.span_processor,
        tracer.instrumentation_info,
        True,
        True,
        tracer._span_limits,
        tracer._instrumentation_scope,
    )

    def start(
        name: str, context: Context, kind: SpanKind, attributes: Mapping[str, AttributeValue]
    ) -> Span:
        if maxlen is not None and len(attributes) > maxlen:
            slow: Span = start_span(name, context, kind, attributes)  # the SDK drops the oldest
            return slow
        parent: Any = get_current_span(context).get_span_context()
        if not is_enabled():
            return NonRecordingSpan(context=parent)
        if parent is None or not parent.is_valid:
            parent = None
            trace_id = new_trace_id()
            random_trace_id = random_ids()
        else:
            trace_id = parent.trace_id
            random_trace_id = parent.trace_flags.random_trace_id
        result = sampler.should_sample(context, trace_id, name, kind, attributes, ())
        decision = result.decision
        flags = _SAMPLED if decision.is_sampled() else _NOT_SAMPLED
        if random_trace_id:
            flags = TraceFlags(flags | _RANDOM)
        span_context = SpanContext(
            trace_id,
            new_span_id(),
            is_remote=False,
            trace_flags=flags,
            trace_state=result.trace_state,
        )
        record_end_metrics = metrics_start(parent, decision)
        if not decision.is_recording():
            return NonRecordingSpan(context=span_context)
        span = _Span(
            name, span_context, parent, *before_kind, kind, *after_kind,
            record_end_metrics=record_end_metrics,
        )  # fmt: skip
        stored: Any = span._attributes
        stored._dict.update(attributes)
        span.start(parent_context=context)
        return span

    return start


def context_with(parent: Context, span: Span, key: str, value: object) -> Context:
    """``parent`` with ``span`` as the current span and ``key`` set: what
    ``set_value(key, value, set_span_in_context(span, parent))`` gives, in one copy, not four."""
    return Context({**parent, _SPAN_KEY: span, key: value})


def set_final(span: Span, attrs: dict[str, AttributeValue]) -> None:
    """``span.set_attributes(attrs)`` for chainsight's own final values, without re-cleaning.

    Falls back to the SDK's call when a value is not a plain scalar, a key is already set (the
    SDK moves it to the end), the span's attribute limit would drop one, or its value-length
    limit may cut one (free text such as a validation reason must be cut as the SDK cuts it).
    """
    if type(span) is _Span:
        sdk: Any = span
        stored = sdk._attributes
        with sdk._lock:
            if sdk._end_time is None and not stored._immutable and stored.max_value_len is None:
                current = stored._dict
                maxlen = stored.maxlen
                if (maxlen is None or len(current) + len(attrs) <= maxlen) and (
                    current.keys().isdisjoint(attrs)
                    and all(type(value) in _SCALARS for value in attrs.values())
                ):
                    current.update(attrs)
                    return
    span.set_attributes(attrs)


#: An SDK span's limits and immutable event attributes made under them, shared by many events.
FrozenEvent = tuple[Any, Any]


def frozen_event_attributes(span: Span, attrs: Mapping[str, AttributeValue]) -> FrozenEvent | None:
    """``attrs`` made once as the SDK's ``add_event`` makes them for ``span`` (immutable
    ``BoundedAttributes`` under its limits), to be shared by the events of many spans; None
    when ``span`` is not the SDK's."""
    if type(span) is not _Span:
        return None
    sdk: Any = span
    limits = sdk._limits
    frozen = BoundedAttributes(
        limits.max_event_attributes,
        attrs,
        max_value_len=limits.max_attribute_length,
        immutable=True,
    )
    return limits, frozen


def add_frozen_event(span: Span, name: str, event: FrozenEvent) -> bool:
    """``span.add_event(name, attrs)`` with the attributes :func:`frozen_event_attributes`
    made; False (nothing added) when they do not fit this span (not the SDK's, other limits)."""
    if type(span) is not _Span:
        return False
    sdk: Any = span
    limits, frozen = event
    if sdk._limits is not limits:
        return False
    sdk._add_event(Event(name=name, attributes=frozen))
    return True
