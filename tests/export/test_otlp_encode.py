"""chainsight's OTLP encoder against the SDK's: the official protobuf reads the same message.

The property: for generated batches of spans of every shape (events, links, status, every
attribute type, non-ASCII, empty values, int64 bounds, NaN and infinities, parents local and
remote, trace state, dropped counts, several resources and scopes), ``ExportTraceServiceRequest``
parsed from our bytes equals what the SDK's ``encode_spans`` builds. A mutated encoder (one
field tagged wrong) must make that comparison fail, or the property would prove nothing.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence

import pytest
from hypothesis import HealthCheck, find, given, settings
from hypothesis import strategies as st
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import Event, ReadableSpan
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.sdk.util import BoundedList
from opentelemetry.sdk.util.instrumentation import InstrumentationScope
from opentelemetry.trace import Link, SpanContext, SpanKind, Status, StatusCode, TraceFlags
from opentelemetry.trace.span import TraceState
from opentelemetry.util.types import Attributes
from prometheus_client import CollectorRegistry

import chainsight
from chainsight.export import otlp_encode
from chainsight.export.otlp_encode import SpanEncoder

INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1

# --- strategies -------------------------------------------------------------------------------

texts = st.one_of(
    st.just(""),
    st.text(max_size=12),  # any non-surrogate code point: non-ASCII, NUL, emoji
    st.sampled_from(["gpt-4o", "qdrant", "ok", "Grüße", "日本語", "🙂", "a" * 300]),
)
ints = st.one_of(
    st.integers(INT64_MIN, INT64_MAX),
    st.sampled_from([0, 1, -1, 127, 128, INT64_MIN, INT64_MAX, 2**31, -(2**31)]),
)
floats = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from([0.0, -0.0, math.inf, -math.inf, math.nan, 1e-300, 0.00256]),
)
scalars = st.one_of(texts, st.booleans(), ints, floats, st.binary(max_size=8))
homogeneous = st.one_of(
    st.lists(texts, max_size=4),
    st.lists(st.booleans(), max_size=4),
    st.lists(ints, max_size=4),
    st.lists(floats, max_size=4),
    st.lists(st.one_of(st.none(), texts), max_size=3),  # OpenTelemetry allows None in arrays
)
values = st.one_of(
    scalars,
    homogeneous.map(tuple),
    # Mappings and out-of-range integers: the SDK leaves out what it cannot encode; so must we.
    st.dictionaries(texts, scalars, max_size=3),
    st.sampled_from([2**63, -(2**63) - 1, 2**64]),
)
keys = st.one_of(
    st.sampled_from(["chainsight.outcome", "gen_ai.request.model", "ключ", "k"]),
    st.text(min_size=1, max_size=10),
)
plain_attributes = st.dictionaries(keys, values, max_size=6)


@st.composite
def attributes(draw: st.DrawFn) -> Attributes:
    """A plain dict, or the SDK's BoundedAttributes with some dropped (``dropped`` > 0)."""
    from opentelemetry.attributes import BoundedAttributes

    items = draw(plain_attributes)
    if draw(st.booleans()):
        return items
    limit = draw(st.integers(0, len(items) + 1))
    return BoundedAttributes(maxlen=limit, attributes=items, immutable=True)


trace_states = st.one_of(
    st.none(),
    st.just(TraceState()),
    st.lists(
        st.tuples(
            st.from_regex(r"[a-z][a-z0-9_]{0,6}", fullmatch=True),
            st.from_regex(r"[a-zA-Z0-9]{1,6}", fullmatch=True),
        ),
        max_size=3,
        unique_by=lambda kv: kv[0],
    ).map(TraceState),
)


@st.composite
def contexts(draw: st.DrawFn) -> SpanContext:
    return SpanContext(
        trace_id=draw(st.integers(1, 2**128 - 1)),
        span_id=draw(st.integers(1, 2**64 - 1)),
        is_remote=draw(st.booleans()),
        trace_flags=TraceFlags(draw(st.sampled_from([0, 1]))),
        trace_state=draw(trace_states),
    )


times = st.one_of(st.none(), st.integers(0, 2**64 - 1))


@st.composite
def events(draw: st.DrawFn) -> Sequence[Event]:
    made = [
        Event(
            draw(texts), draw(st.one_of(st.none(), attributes())), draw(times.map(lambda t: t or 1))
        )
        for _ in range(draw(st.integers(0, 3)))
    ]
    if draw(st.booleans()):
        return made
    return BoundedList.from_seq(draw(st.integers(0, 3)), made)  # dropped events


@st.composite
def links(draw: st.DrawFn) -> Sequence[Link]:
    made = [
        Link(draw(contexts()), draw(st.one_of(st.none(), attributes())))
        for _ in range(draw(st.integers(0, 2)))
    ]
    if draw(st.booleans()):
        return made
    return BoundedList.from_seq(draw(st.integers(0, 2)), made)  # dropped links


statuses = st.one_of(
    st.just(Status(StatusCode.UNSET)),
    st.just(Status(StatusCode.OK)),
    st.builds(Status, st.just(StatusCode.ERROR), st.one_of(st.none(), texts)),
)
resources = st.sampled_from(
    [
        Resource.create({"service.name": "support-bot", "deployment.environment.name": "prod"}),
        Resource({"service.name": "другой", "n": 3, "f": 0.5, "l": ("a", "b")}, "https://s/1"),
        Resource({}),
    ]
)
scopes = st.sampled_from(
    [
        None,
        InstrumentationScope("chainsight", "0.1.0"),
        InstrumentationScope("chainsight", "0.1.0"),  # equal to the one before: one group
        InstrumentationScope("other", None, "https://schema/1", {"scope.attr": "x"}),
        InstrumentationScope(""),
    ]
)


@st.composite
def spans(draw: st.DrawFn) -> ReadableSpan:
    return ReadableSpan(
        name=draw(texts),
        context=draw(contexts()),
        parent=draw(st.one_of(st.none(), contexts())),
        resource=draw(resources),
        attributes=draw(st.one_of(st.none(), attributes())),
        events=draw(events()),
        links=draw(links()),
        kind=draw(st.sampled_from(list(SpanKind))),
        status=draw(statuses),
        start_time=draw(times),
        end_time=draw(times),
        instrumentation_scope=draw(scopes),
    )


batches = st.lists(spans(), min_size=0, max_size=6)

# --- the comparison ---------------------------------------------------------------------------


def difference(found: bytes, batch: Sequence[ReadableSpan]) -> str | None:
    """None when ``found`` parses to the SDK's message for ``batch``; else what differs."""
    expected = encode_spans(batch)
    try:
        parsed = ExportTraceServiceRequest.FromString(found)
    except Exception as exc:
        return f"our bytes do not parse: {exc}"
    if parsed == expected:
        return None
    # NaN != NaN: equal messages holding a NaN compare unequal, their canonical bytes do not.
    if parsed.SerializeToString(deterministic=True) == expected.SerializeToString(
        deterministic=True
    ):
        return None
    return f"ours:\n{parsed}\nSDK:\n{expected}"


def encode(batch: Sequence[ReadableSpan]) -> bytes:
    return SpanEncoder().encode(batch)


# --- tests ------------------------------------------------------------------------------------


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(batch=batches)
def test_our_bytes_parse_to_the_sdk_encoders_message(batch: list[ReadableSpan]) -> None:
    assert difference(encode(batch), batch) is None


@settings(max_examples=50, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(batch=batches)
def test_a_reused_encoder_gives_the_same_bytes_from_its_caches(batch: list[ReadableSpan]) -> None:
    encoder = SpanEncoder()
    first = encoder.encode(batch)
    assert encoder.encode(batch) == first
    assert difference(first, batch) is None


@pytest.mark.parametrize(
    ("constant", "wrong"),
    [
        ("_START", b"\x41"),  # start time written as the end time
        ("_ANY_STRING", b"\x3a"),  # a string attribute value written as bytes
        ("_DROPPED_EVENTS", b"\x70"),  # dropped events counted as dropped links
        ("_FLAGS_REMOTE", otlp_encode._FLAGS_LOCAL),  # a remote parent written as local
    ],
    ids=["start-as-end", "string-as-bytes", "dropped-events-as-links", "remote-as-local"],
)
def test_a_mistagged_field_makes_the_comparison_fail(
    constant: str, wrong: bytes, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(otlp_encode, constant, wrong)
    # The property, run on the broken encoder, finds a batch it gets wrong.
    counterexample = find(
        batches,
        lambda batch: difference(encode(batch), batch) is not None,
        settings=settings(max_examples=2000, deadline=None, database=None),
    )
    assert counterexample


def test_a_lone_surrogate_loses_its_attribute_as_with_the_sdk() -> None:
    span = ReadableSpan(
        "s",
        SpanContext(1, 2, False),
        attributes={"bad": "\ud800", "bad_key\udfff": "v", "good": "ok", "big": 2**70},
    )
    assert difference(encode([span]), [span]) is None
    parsed = ExportTraceServiceRequest.FromString(encode([span]))
    kept = parsed.resource_spans[0].scope_spans[0].spans[0].attributes
    assert [kv.key for kv in kept] == ["good"]


@pytest.fixture
def chainsight_spans() -> Iterator[list[ReadableSpan]]:
    """Every kind of span chainsight itself produces, with its real pipeline."""
    memory = InMemorySpanExporter()
    chainsight.configure(
        service="support-bot",
        environment="prod",
        release={"model": "gpt-4o-2024-08-06", "prompt": "answer@7"},
        exporter=memory,
        registry=CollectorRegistry(),
    )
    yield _run_chain(memory)
    chainsight.reset()


class ProviderTimeout(TimeoutError):
    pass


def _run_chain(memory: InMemorySpanExporter) -> list[ReadableSpan]:
    @chainsight.traced_stage("model", provider="openai", model="gpt-4o")
    def generate(fail: bool) -> str:
        if fail:
            raise ProviderTimeout("upstream timed out after 30 s")
        chainsight.current_stage().record_usage(
            input_tokens=1200, output_tokens=80, cached_input_tokens=1024
        )
        return "answer"

    @chainsight.traced_stage("model", provider="openai", model="gpt-4o")
    def stream() -> Iterator[str]:
        yield from ("a", "b")

    for fail in (False, True):
        try:
            with chainsight.request("answer_ticket", tenant="acme", feature="Grüße"):
                with chainsight.stage("retrieval", system="qdrant", collection="kb") as r:
                    r.record_documents(count=2, scores=[0.9, 0.1], ids=["a", "b"])
                with chainsight.stage("prompt", prompt_name="answer", prompt_version="7"):
                    pass
                list(stream())
                with chainsight.stage("validation", validator="json_schema") as v:
                    v.record_validation(passed=False, reason="missing field 'answer' 🙂")
                    v.fallback(to="canned", reason="validation")
                generate(fail)
        except ProviderTimeout:
            pass
    assert chainsight.shutdown(timeout=5.0)
    return list(memory.get_finished_spans())


def test_chainsight_spans_encode_as_the_sdk_encodes_them(
    chainsight_spans: list[ReadableSpan],
) -> None:
    names = {s.name for s in chainsight_spans}
    assert {"invoke_workflow answer_ticket", "chat gpt-4o", "retrieval kb"} <= names
    assert any(s.events for s in chainsight_spans)  # the exception and first-chunk events
    assert any(s.status.status_code is StatusCode.ERROR for s in chainsight_spans)
    encoder = SpanEncoder()
    for batch in (chainsight_spans, chainsight_spans[:1], chainsight_spans * 3):
        assert difference(encoder.encode(batch), batch) is None


def test_equal_resources_and_scopes_are_one_group_in_batch_order() -> None:
    one = Resource({"service.name": "a"})
    same = Resource({"service.name": "a"})
    other = Resource({"service.name": "b"})
    batch = [
        ReadableSpan(f"s{i}", SpanContext(1, i + 1, False), resource=res, instrumentation_scope=sc)
        for i, (res, sc) in enumerate(
            [
                (one, InstrumentationScope("x")),
                (other, None),
                (same, InstrumentationScope("x")),
                (one, InstrumentationScope("y")),
            ]
        )
    ]
    parsed = ExportTraceServiceRequest.FromString(encode(batch))
    assert [len(rs.scope_spans) for rs in parsed.resource_spans] == [2, 1]
    assert [s.name for s in parsed.resource_spans[0].scope_spans[0].spans] == ["s0", "s2"]
    assert difference(encode(batch), batch) is None


def test_the_value_caches_stay_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(otlp_encode, "_CACHE_ENTRIES", 8)
    encoder = SpanEncoder()
    batch = [
        ReadableSpan("s", SpanContext(1, i + 1, False), attributes={"id": f"v{i}", "n": i})
        for i in range(50)
    ]
    assert difference(encoder.encode(batch), batch) is None
    assert all(len(cache) <= 8 for cache in encoder._values.values())


def test_encoder_setting(monkeypatch: pytest.MonkeyPatch) -> None:
    from chainsight.errors import ConfigurationError

    monkeypatch.delenv("CHAINSIGHT_OTLP_ENCODER", raising=False)
    assert otlp_encode.encoder_setting() == "chainsight"
    monkeypatch.setenv("CHAINSIGHT_OTLP_ENCODER", " SDK ")
    assert otlp_encode.encoder_setting() == "sdk"
    monkeypatch.setenv("CHAINSIGHT_OTLP_ENCODER", "fast")
    with pytest.raises(ConfigurationError, match=r"CHAINSIGHT_OTLP_ENCODER='fast'.*'sdk'"):
        otlp_encode.encoder_setting()


def test_the_http_exporter_uses_our_encoder_on_this_sdk(monkeypatch: pytest.MonkeyPatch) -> None:
    # Fails when an SDK release renames what FastOTLPSpanExporter reuses (it would then fall
    # back to the SDK's export, correct but slow): update export/otlp_http.py then.
    from chainsight.export.otlp_http import FastOTLPSpanExporter
    from chainsight.export.traces import PerProcessExporter, make_exporter

    monkeypatch.delenv("CHAINSIGHT_OTLP_ENCODER", raising=False)
    built = make_exporter("otlp", "http")
    assert isinstance(built, PerProcessExporter)
    inner = built._here()
    assert isinstance(inner, FastOTLPSpanExporter)
    assert inner.fast
    built.shutdown()


def test_the_sdk_encoder_stays_selectable(monkeypatch: pytest.MonkeyPatch) -> None:
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

    from chainsight.export.otlp_http import FastOTLPSpanExporter
    from chainsight.export.traces import PerProcessExporter, make_exporter

    monkeypatch.setenv("CHAINSIGHT_OTLP_ENCODER", "sdk")
    built = make_exporter("otlp", "http")
    assert isinstance(built, PerProcessExporter)
    inner = built._here()
    assert type(inner) is OTLPSpanExporter
    assert not isinstance(inner, FastOTLPSpanExporter)
    built.shutdown()


def test_a_bad_encoder_name_is_refused_by_configure(monkeypatch: pytest.MonkeyPatch) -> None:
    from chainsight.errors import ConfigurationError

    monkeypatch.setenv("CHAINSIGHT_OTLP_ENCODER", "protobuf")
    with pytest.raises(ConfigurationError, match="CHAINSIGHT_OTLP_ENCODER='protobuf'"):
        chainsight.configure(exporter="otlp:http", registry=CollectorRegistry())


@pytest.mark.parametrize("encoder", ["chainsight", "sdk"])
def test_the_grpc_exporter_follows_the_setting(
    encoder: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter

    from chainsight.export.otlp_grpc import FastGrpcOTLPSpanExporter
    from chainsight.export.traces import make_exporter

    monkeypatch.setenv("CHAINSIGHT_OTLP_ENCODER", encoder)
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "http://127.0.0.1:4317")
    built = make_exporter("otlp", "grpc")
    try:
        if encoder == "sdk":
            assert type(built) is OTLPSpanExporter
        else:
            # Fails when an SDK release changes what FastGrpcOTLPSpanExporter plugs into.
            assert isinstance(built, FastGrpcOTLPSpanExporter)
            assert built.fast
    finally:
        assert built is not None
        built.shutdown()


def test_equal_values_of_different_types_do_not_share_a_cached_encoding() -> None:
    # True == 1 == 1.0 as dictionary keys; each must still be written as its own type.
    encoder = SpanEncoder()
    for value in (1, True, 1.0, "1", 1, True):
        span = ReadableSpan("s", SpanContext(1, 2, False), attributes={"a": value})
        found = encoder.encode([span])
        assert difference(found, [span]) is None, value
        parsed = ExportTraceServiceRequest.FromString(found)
        any_value = parsed.resource_spans[0].scope_spans[0].spans[0].attributes[0].value
        expected = {
            bool: "bool_value",
            int: "int_value",
            float: "double_value",
            str: "string_value",
        }
        assert any_value.WhichOneof("value") == expected[type(value)]


def test_an_apps_own_tracer_provider_keeps_its_exporter(monkeypatch: pytest.MonkeyPatch) -> None:
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor

    monkeypatch.delenv("CHAINSIGHT_OTLP_ENCODER", raising=False)
    provider = TracerProvider()
    theirs = OTLPSpanExporter(endpoint="http://127.0.0.1:1/v1/traces")
    provider.add_span_processor(SimpleSpanProcessor(theirs))
    before = provider._active_span_processor._span_processors
    chainsight.configure(
        tracer_provider=provider, exporter="otlp:http", registry=CollectorRegistry()
    )
    # chainsight builds no exporter for a provider it does not own and adds no processor.
    assert provider._active_span_processor._span_processors == before
    assert type(before[0].span_exporter) is OTLPSpanExporter
    chainsight.reset()
    provider.shutdown()
