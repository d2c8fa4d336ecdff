"""The SDK internals ``chainsight.stages.spans`` relies on, held against the installed SDK.

The fast path reproduces ``Tracer.start_span`` for attributes cleaned once, and writes final
attributes into ``BoundedAttributes._dict``. These tests fail when an SDK upgrade changes the
code reproduced (the fingerprints) or what it produces (spans compared field by field with the
SDK's own path): then re-read the new SDK code against ``stages/spans.py``, fix it, and update
the fingerprints.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from typing import Any

import pytest
from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.attributes import BoundedAttributes, _clean_attribute_value
from opentelemetry.context import Context
from opentelemetry.sdk.trace import (
    Event,
    EventBase,
    ReadableSpan,
    SpanLimits,
    SpanProcessor,
    Tracer,
    TracerProvider,
)
from opentelemetry.sdk.trace import Span as SdkSpan
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.sdk.trace.sampling import (
    ALWAYS_OFF,
    ALWAYS_ON,
    Decision,
    ParentBased,
    Sampler,
    SamplingResult,
    StaticSampler,
    TraceIdRatioBased,
)
from opentelemetry.trace import SpanKind
from opentelemetry.trace.propagation import get_current_span, set_span_in_context
from opentelemetry.util.types import Attributes, AttributeValue

import chainsight
from chainsight.export.traces import SwitchableSampler
from chainsight.stages import spans
from tests._fingerprint import fingerprint


def _inner(decorated: Callable[..., Any]) -> Callable[..., Any]:
    """The function a closure-based decorator (the SDK's ``_check_span_ended``) wraps."""
    cells = decorated.__closure__ or ()
    return next(cell.cell_contents for cell in cells if callable(cell.cell_contents))


# sha256 (first 16 hex digits) of the source of each SDK function the fast path reproduces or
# whose internals it writes, as in opentelemetry-sdk/-api 1.45.2.
_FINGERPRINTS: dict[str, tuple[Callable[..., Any], str]] = {
    "Tracer.start_span": (Tracer.start_span, "3cd55e4a9e148e41"),
    "Span.__init__": (SdkSpan.__init__, "5687a97d122be23d"),
    "Span.set_attributes": (SdkSpan.set_attributes, "7973a9fb0ed80cf7"),
    "Span.start": (SdkSpan.start, "42c19e6de8fe528e"),
    "Span.end": (SdkSpan.end, "88aca2e904b83031"),
    "BoundedAttributes.__init__": (BoundedAttributes.__init__, "dbc75495ddf538bf"),
    "BoundedAttributes._set_items": (BoundedAttributes._set_items, "0bf5c57a76dac901"),
    "BoundedAttributes._setitem_locked": (BoundedAttributes._setitem_locked, "e32e93aeba04a555"),
    "_clean_attribute_value": (_clean_attribute_value, "6018b3fe7e6a07a6"),
    "ParentBased.__init__": (ParentBased.__init__, "5cf880de2ef93715"),
    "ParentBased.should_sample": (ParentBased.should_sample, "2f4e7c936dc7616e"),
    "StaticSampler.should_sample": (StaticSampler.should_sample, "45cb9cd55e66eab3"),
    "TraceIdRatioBased.should_sample": (TraceIdRatioBased.should_sample, "f8786d237e5eab43"),
    "SamplingResult.__init__": (SamplingResult.__init__, "29227f90bb0b8803"),
    "set_span_in_context": (set_span_in_context, "f75057fa9ada08a8"),
    "get_current_span": (get_current_span, "e067c8d767261963"),
    "set_value": (otel_context.set_value, "80dd333fb63d0c46"),
    "Context": (Context, "6a4dfffa8d4f4339"),
    # stages.spans.add_frozen_event: add_event without rebuilding the same attributes.
    "Span.add_event": (SdkSpan.add_event, "6503d7d05c955a74"),
    "Span._add_event": (SdkSpan._add_event, "31604a84b667423d"),
    "Span._add_event (inner)": (_inner(SdkSpan._add_event), "3db4c36ae9dffbdf"),
    "Event.__init__": (Event.__init__, "22ccf5497836a5ae"),
    "EventBase.__init__": (EventBase.__init__, "8b696d4725e1cab1"),
}


@pytest.mark.parametrize("name", sorted(_FINGERPRINTS))
def test_the_sdk_code_the_fast_path_reproduces_is_unchanged(name: str) -> None:
    func, expected = _FINGERPRINTS[name]
    found = fingerprint(func)
    assert found == expected, (
        f"the SDK's {name} changed (fingerprint {found}, expected {expected}); "
        "chainsight.stages.spans reproduces or relies on it: compare the new code with "
        "stages/spans.py, adapt the fast path, then update _FINGERPRINTS"
    )


class _SeenAtStart(SpanProcessor):
    """Records the attributes each span has when the processors' on_start runs."""

    def __init__(self) -> None:
        self.at_start: list[dict[str, Any]] = []

    def on_start(self, span: Any, parent_context: Context | None = None) -> None:
        self.at_start.append(dict(span.attributes or {}))


_ATTRS: dict[str, AttributeValue] = {
    "chainsight.stage.kind": "retrieval",
    "a.list": ["x", "ÿ-ü", ""],
    "an.int": 5,
    "a.float": 0.25,
    "a.bool": False,
    "empty": "",
}


def _provider(sampler: Sampler | None = None, limits: SpanLimits | None = None) -> Any:
    provider = TracerProvider(sampler=sampler, span_limits=limits, shutdown_on_exit=False)
    exporter = InMemorySpanExporter()
    seen = _SeenAtStart()
    provider.add_span_processor(seen)
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    return provider, exporter, seen


def _fields(span: ReadableSpan) -> dict[str, Any]:
    context = span.get_span_context()
    parent = span.parent
    return {
        "name": span.name,
        "kind": span.kind,
        "attributes": list((span.attributes or {}).items()),
        "dropped": span.dropped_attributes,
        "resource": span.resource,
        "scope": span.instrumentation_scope,
        "status": (span.status.status_code, span.status.description),
        "events": list(span.events),
        "links": list(span.links),
        "flags": context.trace_flags,
        "remote": context.is_remote,
        "trace_state": context.trace_state,
        "has_parent": parent is not None,
        "parent_is_remote": parent.is_remote if parent is not None else None,
        "same_trace_as_parent": parent is not None and parent.trace_id == context.trace_id,
    }


def _start_both(
    tracer: Any, context: Context, attrs: Mapping[str, AttributeValue]
) -> tuple[Any, Any]:
    start = spans.starter_for(tracer)
    ours = start("retrieval docs", context, SpanKind.CLIENT, spans.clean_once(attrs))
    theirs = tracer.start_span("retrieval docs", context, SpanKind.CLIENT, dict(attrs))
    return ours, theirs


@pytest.mark.parametrize(
    "sampler",
    [None, ALWAYS_ON, ParentBased(TraceIdRatioBased(1.0)), SwitchableSampler(1.0)],
    ids=["default", "always_on", "parent_ratio", "chainsight"],
)
@pytest.mark.parametrize("with_parent", [False, True], ids=["root", "child"])
def test_fast_spans_equal_the_sdks_field_by_field(
    sampler: Sampler | None, with_parent: bool
) -> None:
    provider, exporter, seen = _provider(sampler)
    tracer = provider.get_tracer("t")
    assert spans._fast_start_possible(tracer)
    context = Context()
    if with_parent:
        parent = tracer.start_span("parent")
        context = trace.set_span_in_context(parent)
    ours, theirs = _start_both(tracer, context, _ATTRS)
    final: dict[str, AttributeValue] = {"chainsight.outcome": "ok", "tokens": 3, "cost": 0.5}
    spans.set_final(ours, dict(final))
    theirs.set_attributes(dict(final))
    ours.end()
    theirs.end()
    done = {s.get_span_context().span_id: s for s in exporter.get_finished_spans()}
    mine = done[ours.get_span_context().span_id]
    sdk = done[theirs.get_span_context().span_id]
    assert _fields(mine) == _fields(sdk)
    assert mine.attributes is not None
    assert mine.attributes["a.list"] == ("x", "ÿ-ü", "")  # stored as the SDK stores it
    # The processors' on_start saw every start attribute, on both paths.
    assert seen.at_start[-2] == seen.at_start[-1]
    assert set(seen.at_start[-2]) == set(_ATTRS)


@pytest.mark.parametrize(
    "sampler",
    [ALWAYS_OFF, ParentBased(TraceIdRatioBased(0.0)), SwitchableSampler(0.0)],
    ids=["always_off", "parent_ratio_0", "chainsight_0"],
)
def test_sampled_out_spans_are_non_recording_on_both_paths(sampler: Sampler) -> None:
    provider, exporter, _seen = _provider(sampler)
    tracer = provider.get_tracer("t")
    ours, theirs = _start_both(tracer, Context(), _ATTRS)
    assert type(ours) is type(theirs) is trace.NonRecordingSpan
    assert ours.get_span_context().trace_flags == theirs.get_span_context().trace_flags
    ours.end()
    theirs.end()
    assert exporter.get_finished_spans() == ()


class _AddsAttribute(Sampler):
    """A user's sampler that adds an attribute: only the SDK's path honours its result."""

    def should_sample(
        self,
        parent_context: Context | None,
        trace_id: int,
        name: str,
        kind: SpanKind | None = None,
        attributes: Attributes = None,
        links: Any = None,
        trace_state: Any = None,
    ) -> SamplingResult:
        return SamplingResult(Decision.RECORD_AND_SAMPLE, {**(attributes or {}), "sampler": "mine"})

    def get_description(self) -> str:
        return "adds an attribute"


def test_an_unknown_sampler_gets_the_sdks_own_path() -> None:
    provider, _exporter, _seen = _provider(_AddsAttribute())
    tracer = provider.get_tracer("t")
    assert not spans._fast_start_possible(tracer)
    ours, _theirs = _start_both(tracer, Context(), _ATTRS)
    assert ours.attributes["sampler"] == "mine"


def test_span_limits_that_cut_values_get_the_sdks_own_path() -> None:
    provider, _exporter, _seen = _provider(limits=SpanLimits(max_span_attribute_length=3))
    tracer = provider.get_tracer("t")
    assert not spans._fast_start_possible(tracer)
    ours, _theirs = _start_both(tracer, Context(), {"long": "abcdef"})
    assert ours.attributes["long"] == "abc"


def test_more_attributes_than_the_limit_are_dropped_as_the_sdk_drops_them(
    caplog: pytest.LogCaptureFixture,
) -> None:
    provider, _exporter, _seen = _provider(limits=SpanLimits(max_span_attributes=3))
    tracer = provider.get_tracer("t")
    assert spans._fast_start_possible(tracer)
    with caplog.at_level(logging.WARNING):
        ours, theirs = _start_both(tracer, Context(), _ATTRS)
        spans.set_final(ours, {"chainsight.outcome": "ok"})
        theirs.set_attributes({"chainsight.outcome": "ok"})
    assert list(ours.attributes.items()) == list(theirs.attributes.items())
    assert ours.dropped_attributes == theirs.dropped_attributes


def test_set_final_falls_back_for_lists_and_keys_already_set() -> None:
    provider, _exporter, _seen = _provider()
    tracer = provider.get_tracer("t")
    ours, theirs = _start_both(tracer, Context(), _ATTRS)
    final: dict[str, AttributeValue] = {"an.int": 7, "reasons": ["stop"]}
    spans.set_final(ours, dict(final))
    theirs.set_attributes(dict(final))
    assert list(ours.attributes.items()) == list(theirs.attributes.items())
    assert ours.attributes["reasons"] == ("stop",)


def test_set_final_on_an_ended_span_changes_nothing() -> None:
    provider, _exporter, _seen = _provider()
    tracer = provider.get_tracer("t")
    ours, _theirs = _start_both(tracer, Context(), _ATTRS)
    ours.end()
    spans.set_final(ours, {"late": 1})
    assert "late" not in ours.attributes


def test_a_configured_chainsight_uses_the_fast_path_with_its_own_and_a_given_provider() -> None:
    chainsight.configure(exporter="none")
    from chainsight.config import state

    own = state.current()
    assert own.start_span is not None
    assert own.start_span.__qualname__.startswith("_bind")
    provider, exporter, _seen = _provider()
    chainsight.configure(tracer_provider=provider)
    given = state.current()
    assert given.start_span is not None
    assert given.start_span.__qualname__.startswith("_bind")
    with (
        chainsight.request("r", feature="f"),
        chainsight.stage("retrieval", system="qdrant", collection="docs"),
    ):
        pass
    names = [s.name for s in exporter.get_finished_spans()]
    assert names == ["retrieval docs", "invoke_workflow r"]


def test_context_with_equals_the_apis_two_steps() -> None:
    provider, _exporter, _seen = _provider()
    span = provider.get_tracer("t").start_span("s")
    key = otel_context.create_key("k")
    parent = otel_context.set_value("other", 1, Context())
    ours = spans.context_with(parent, span, key, "v")
    theirs = otel_context.set_value(key, "v", set_span_in_context(span, parent))
    assert type(ours) is type(theirs) is Context
    assert ours == theirs
    assert get_current_span(ours) is span
    assert parent == {"other": 1}  # the parent is not changed


@pytest.mark.parametrize(
    "limits",
    [None, SpanLimits(max_event_attributes=1), SpanLimits(max_attribute_length=3)],
    ids=["default", "one_event_attribute", "short_values"],
)
def test_frozen_events_equal_the_sdks_add_event(limits: SpanLimits | None) -> None:
    provider, exporter, _seen = _provider(limits=limits)
    tracer = provider.get_tracer("t")
    event_attrs: dict[str, AttributeValue] = {"gen_ai.evaluation.name": "schema", "b": "pass"}
    ours, theirs = tracer.start_span("v"), tracer.start_span("v")
    frozen = spans.frozen_event_attributes(ours, event_attrs)
    assert frozen is not None
    for _ in range(2):  # made once, shared by every event
        assert spans.add_frozen_event(ours, "gen_ai.evaluation.result", frozen)
        theirs.add_event("gen_ai.evaluation.result", dict(event_attrs))
    ours.end()
    theirs.end()
    mine, sdk = exporter.get_finished_spans()

    def events(span: ReadableSpan) -> list[tuple[Any, ...]]:
        return [
            (e.name, list((e.attributes or {}).items()), e.dropped_attributes, e.timestamp > 0)
            for e in span.events
        ]

    assert events(mine) == events(sdk)
    assert mine.events[0].attributes is mine.events[1].attributes  # shared, and immutable:
    with pytest.raises(TypeError):
        mine.events[0].attributes["x"] = "y"  # type: ignore[index]


def test_frozen_events_refuse_other_limits_and_ended_spans() -> None:
    provider, exporter, _seen = _provider()
    other, _exporter, _seen2 = _provider(limits=SpanLimits(max_event_attributes=1))
    span = provider.get_tracer("t").start_span("v")
    frozen = spans.frozen_event_attributes(span, {"a": "b"})
    assert frozen is not None
    assert not spans.add_frozen_event(other.get_tracer("t").start_span("w"), "e", frozen)
    assert not spans.add_frozen_event(trace.NonRecordingSpan(span.get_span_context()), "e", frozen)
    span.end()
    assert spans.add_frozen_event(span, "e", frozen)  # the SDK's own check: warns, adds nothing
    assert exporter.get_finished_spans()[0].events == ()


def test_set_final_cuts_values_as_the_sdk_under_a_length_limit() -> None:
    # A validation reason is free text: under the app's value-length limit it is cut as the
    # SDK's set_attributes cuts it, not written whole by the fast path.
    provider, exporter, _seen = _provider(limits=SpanLimits(max_attribute_length=12))
    tracer = provider.get_tracer("t")
    ours, theirs = tracer.start_span("v"), tracer.start_span("v")
    final: dict[str, AttributeValue] = {"chainsight.validation.reason": "the answer cites none"}
    spans.set_final(ours, dict(final))
    theirs.set_attributes(dict(final))
    ours.end()
    theirs.end()
    mine, sdk = exporter.get_finished_spans()
    assert mine.attributes == sdk.attributes == {"chainsight.validation.reason": "the answer c"}
