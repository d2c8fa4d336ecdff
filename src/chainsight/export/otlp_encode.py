"""Spans to OTLP protobuf bytes, written directly: the same message the SDK's encoder builds.

The SDK's encoder (``opentelemetry-exporter-otlp-proto-common``) builds one protobuf object
per attribute, value, event and span, then serialises the tree, and hashes the Resource (a
``json.dumps`` of its attributes) once per span to group spans by it. On the export thread
that is 70-100 us of pure Python per span, holding the GIL the app's requests need.

This module writes the protobuf wire format itself. Three things make it cheap:

- the encoded Resource and instrumentation scope are cached by identity (a provider has one
  Resource for its whole life; its attributes are immutable), so neither is hashed nor
  encoded per span;
- a string attribute is encoded once per distinct ``(key, value)``: the attributes that never
  change for a stage (release, kind, system, collection, model, tenant, outcome ...) are a
  dictionary lookup each, without the stage code having to declare which ones they are;
- protobuf lets a message be written as the concatenation of its encoded fields, so a span is
  a ``b"".join`` of cached and freshly written fields, wrapped in a length prefix.

The output is byte-for-byte a valid ``ExportTraceServiceRequest`` that decodes to exactly what
the SDK's ``encode_spans`` builds for the same spans, including its choices (no trace state
on links, the ``flags`` of a span carrying only the is-remote bits, an attribute whose value
cannot be encoded left out); ``tests/export/test_otlp_encode.py`` holds the two against each
other on generated spans of every shape.
"""

from __future__ import annotations

import os
import struct
from collections.abc import Mapping, Sequence
from typing import Any, Final

from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.util.instrumentation import InstrumentationScope
from opentelemetry.trace import Link, SpanContext, SpanKind, Status

from chainsight import _names as n
from chainsight.errors import ConfigurationError

__all__ = ["ENCODERS", "SpanEncoder", "encoder_setting"]

# The encoders an OTLP span export can use, by their CHAINSIGHT_OTLP_ENCODER names.
ENCODERS: Final = ("chainsight", "sdk")

# Field tags: (field number << 3) | wire type, written as their varint bytes. Wire types: 0
# varint, 1 fixed64, 2 length-delimited, 5 fixed32. From opentelemetry-proto's trace.proto,
# common.proto and resource.proto.
_RESOURCE_SPANS: Final = b"\x0a"  # ExportTraceServiceRequest.resource_spans = 1
_RS_RESOURCE: Final = b"\x0a"  # ResourceSpans.resource = 1
_RS_SCOPE_SPANS: Final = b"\x12"  # ResourceSpans.scope_spans = 2
_RS_SCHEMA_URL: Final = b"\x1a"  # ResourceSpans.schema_url = 3
_RESOURCE_ATTRIBUTE: Final = b"\x0a"  # Resource.attributes = 1
_SS_SCOPE: Final = b"\x0a"  # ScopeSpans.scope = 1
_SS_SPAN: Final = b"\x12"  # ScopeSpans.spans = 2
_SS_SCHEMA_URL: Final = b"\x1a"  # ScopeSpans.schema_url = 3
_SCOPE_NAME: Final = b"\x0a"  # InstrumentationScope.name = 1
_SCOPE_VERSION: Final = b"\x12"  # InstrumentationScope.version = 2
_SCOPE_ATTRIBUTE: Final = b"\x1a"  # InstrumentationScope.attributes = 3
_TRACE_ID: Final = b"\x0a\x10"  # Span.trace_id = 1, always 16 bytes
_SPAN_ID: Final = b"\x12\x08"  # Span.span_id = 2, always 8 bytes
_TRACE_STATE: Final = b"\x1a"  # Span.trace_state = 3
_PARENT_SPAN_ID: Final = b"\x22\x08"  # Span.parent_span_id = 4, 8 bytes
_NAME: Final = b"\x2a"  # Span.name = 5
_KIND: Final = b"\x30"  # Span.kind = 6 (enum)
_START: Final = b"\x39"  # Span.start_time_unix_nano = 7 (fixed64)
_END: Final = b"\x41"  # Span.end_time_unix_nano = 8 (fixed64)
_ATTRIBUTE: Final = b"\x4a"  # Span.attributes = 9
_DROPPED_ATTRIBUTES: Final = b"\x50"  # Span.dropped_attributes_count = 10
_EVENT: Final = b"\x5a"  # Span.events = 11
_DROPPED_EVENTS: Final = b"\x60"  # Span.dropped_events_count = 12
_LINK: Final = b"\x6a"  # Span.links = 13
_DROPPED_LINKS: Final = b"\x70"  # Span.dropped_links_count = 14
_STATUS: Final = b"\x7a"  # Span.status = 15
_STATUS_UNSET: Final = b"\x7a\x00"  # present and empty: the SDK always writes a status
_FLAGS: Final = b"\x85\x01"  # Span.flags = 16 (fixed32)
_EVENT_TIME: Final = b"\x09"  # Event.time_unix_nano = 1 (fixed64)
_EVENT_NAME: Final = b"\x12"  # Event.name = 2
_EVENT_ATTRIBUTE: Final = b"\x1a"  # Event.attributes = 3
_EVENT_DROPPED: Final = b"\x20"  # Event.dropped_attributes_count = 4
_LINK_TRACE_ID: Final = b"\x0a\x10"  # Link.trace_id = 1
_LINK_SPAN_ID: Final = b"\x12\x08"  # Link.span_id = 2
_LINK_ATTRIBUTE: Final = b"\x22"  # Link.attributes = 4
_LINK_DROPPED: Final = b"\x28"  # Link.dropped_attributes_count = 5
_LINK_FLAGS: Final = b"\x35"  # Link.flags = 6 (fixed32)
_STATUS_MESSAGE: Final = b"\x12"  # Status.message = 2
_STATUS_CODE: Final = b"\x18"  # Status.code = 3 (enum)
_KV_KEY: Final = b"\x0a"  # KeyValue.key = 1
_KV_VALUE: Final = b"\x12"  # KeyValue.value = 2
_ANY_STRING: Final = b"\x0a"  # AnyValue.string_value = 1
_ANY_BOOL_TRUE: Final = b"\x10\x01"  # AnyValue.bool_value = 2
_ANY_BOOL_FALSE: Final = b"\x10\x00"
_ANY_INT: Final = b"\x18"  # AnyValue.int_value = 3 (int64)
_ANY_DOUBLE: Final = b"\x21"  # AnyValue.double_value = 4 (double)
_ANY_ARRAY: Final = b"\x2a"  # AnyValue.array_value = 5
_ANY_KVLIST: Final = b"\x32"  # AnyValue.kvlist_value = 6
_ANY_BYTES: Final = b"\x3a"  # AnyValue.bytes_value = 7
_LIST_VALUE: Final = b"\x0a"  # ArrayValue.values = 1, KeyValueList.values = 1
_EMPTY_ANY: Final = b""

# SpanFlags: bit 8 says whether the parent's is-remote is known, bit 9 that it is remote. The
# SDK sets no trace-flag bits here, and we write what it writes.
_FLAGS_LOCAL: Final = _FLAGS + struct.pack("<I", 0x100)
_FLAGS_REMOTE: Final = _FLAGS + struct.pack("<I", 0x300)
_LINK_FLAGS_LOCAL: Final = _LINK_FLAGS + struct.pack("<I", 0x100)
_LINK_FLAGS_REMOTE: Final = _LINK_FLAGS + struct.pack("<I", 0x300)
_INT64_MIN: Final = -(1 << 63)
_INT64_MAX: Final = (1 << 63) - 1
_UINT64: Final = (1 << 64) - 1

# The (key, value) caches hold short strings only: a captured prompt is unique and long, and
# caching it would only push out the values that do repeat. Cleared whole when full, which
# costs one re-encoding of each live value, far less than tracking use. About 2 MB at most.
_CACHED_VALUE_CHARS: Final = 128
_CACHE_ENTRIES: Final = 4096
# Resources and scopes are a handful per process; more means objects made per span.
_IDENTITY_ENTRIES: Final = 64

_pack_double: Final = struct.Struct("<d").pack
_pack_fixed64: Final = struct.Struct("<Q").pack
_SMALL: Final = tuple(bytes((i,)) for i in range(128))


def encoder_setting() -> str:
    """``CHAINSIGHT_OTLP_ENCODER``: ``chainsight`` (the default) or ``sdk``.

    Read when chainsight builds its own OTLP span exporter, so a bad value is refused by
    ``configure()`` with its name.
    """
    raw = os.environ.get(n.ENV_OTLP_ENCODER, "").strip()
    value = raw.lower() or ENCODERS[0]
    if value not in ENCODERS:
        raise ConfigurationError(
            f"{n.ENV_OTLP_ENCODER}={raw!r} is not an OTLP span encoder; use 'chainsight' "
            "(the default) or 'sdk' (the OpenTelemetry SDK's own encoder)"
        )
    return value


def _varint(value: int) -> bytes:
    """An unsigned varint; lengths, counts and enums are almost always one byte."""
    if value < 0x80:
        return _SMALL[value]
    out = bytearray()
    while value > 0x7F:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def _delimited(tag: bytes, body: bytes) -> bytes:
    """A length-delimited field: tag, length, body."""
    return tag + _varint(len(body)) + body


def _any_value(value: Any) -> bytes:
    """An ``AnyValue`` body, in the order of the SDK's ``_encode_value`` checks."""
    if value is None:
        return _EMPTY_ANY
    if isinstance(value, bool):
        return _ANY_BOOL_TRUE if value else _ANY_BOOL_FALSE
    if isinstance(value, str):
        return _delimited(_ANY_STRING, value.encode("utf-8"))
    if isinstance(value, int):
        if not _INT64_MIN <= value <= _INT64_MAX:
            # The SDK's protobuf refuses it; so do we, and the attribute is left out.
            raise ValueError(f"integer {value} is outside int64")
        return _ANY_INT + _varint(value & _UINT64)
    if isinstance(value, float):
        return _ANY_DOUBLE + _pack_double(value)
    if isinstance(value, bytes):
        return _delimited(_ANY_BYTES, value)
    if isinstance(value, Sequence):
        return _delimited(
            _ANY_ARRAY, b"".join([_delimited(_LIST_VALUE, _any_value(v)) for v in value])
        )
    if isinstance(value, Mapping):
        items = [_delimited(_LIST_VALUE, _key_value(str(k), v)) for k, v in value.items()]
        return _delimited(_ANY_KVLIST, b"".join(items))
    raise TypeError(f"cannot encode a {type(value).__name__} attribute value: {value!r}")


def _key_value(key: str, value: Any) -> bytes:
    """A ``KeyValue`` body."""
    return _delimited(_KV_KEY, key.encode("utf-8")) + _delimited(_KV_VALUE, _any_value(value))


def _attribute_fields(tag: bytes, attributes: Mapping[str, Any] | None) -> list[bytes]:
    """Each attribute as a ``tag`` field; one that cannot be encoded is left out, as the SDK
    leaves it out (it logs it; the span itself is still sent)."""
    if not attributes:
        return []
    fields = []
    for key, value in attributes.items():
        try:
            fields.append(_delimited(tag, _key_value(key, value)))
        except Exception:  # noqa: S112 - the SDK's rule: one bad value loses that value only
            continue
    return fields


def _trace_state(context: SpanContext) -> str:
    state = context.trace_state
    if not state:  # None on a hand-made context, or empty
        return ""
    return ",".join([f"{key}={value}" for key, value in state.items()])


class SpanEncoder:
    """Encodes batches of finished spans to an ``ExportTraceServiceRequest``, as bytes.

    One per exporter. Two threads may encode at once (a flush beside the export thread): the
    caches only ever hold complete entries, so the worst case is an entry encoded twice.
    """

    def __init__(self) -> None:
        # One cache per value type: True == 1 == 1.0 as dictionary keys, and their encodings
        # differ. Floats are not cached (costs and scores rarely repeat).
        self._values: dict[type, dict[tuple[str, Any], bytes]] = {str: {}, int: {}, bool: {}}
        self._heads: dict[tuple[str, SpanKind], bytes] = {}
        # id -> (the object, kept alive so its id is not reused; its encoded fields)
        self._resources: dict[int, tuple[Resource, bytes]] = {}
        self._scopes: dict[int, tuple[InstrumentationScope | None, bytes]] = {}

    def encode(self, spans: Sequence[ReadableSpan]) -> bytes:
        """The serialised ``ExportTraceServiceRequest`` for ``spans``.

        Spans are grouped by resource, then by instrumentation scope, in the order each first
        appears, as the SDK groups them (equal objects are one group, as in its dictionaries).
        """
        groups: dict[int, tuple[Resource, dict[int, tuple[Any, list[bytes]]]]] = {}
        resource_of: dict[int, Resource] = {}
        resources_by_value: dict[Resource, Resource] = {}
        scope_of: dict[int, InstrumentationScope | None] = {}
        scopes_by_value: dict[InstrumentationScope | None, InstrumentationScope | None] = {}
        span_field = self._span_field
        for span in spans:
            resource = span.resource
            canonical = resource_of.get(id(resource))
            if canonical is None:
                canonical = _canonical(resource, resource_of, resources_by_value)
            group = groups.get(id(canonical))
            if group is None:
                group = groups[id(canonical)] = (canonical, {})
            scope = span.instrumentation_scope or None
            if id(scope) in scope_of:
                scope = scope_of[id(scope)]
            else:
                scope = _canonical(scope, scope_of, scopes_by_value)
            bucket = group[1].get(id(scope))
            if bucket is None:
                bucket = group[1][id(scope)] = (scope, [])
            bucket[1].append(span_field(span))
        out = []
        for resource, scopes in groups.values():
            parts = [self._resource_fields(resource)]
            for scope, fields in scopes.values():
                fields.insert(0, self._scope_fields(scope))
                parts.append(_delimited(_RS_SCOPE_SPANS, b"".join(fields)))
            out.append(_delimited(_RESOURCE_SPANS, b"".join(parts)))
        return b"".join(out)

    def _resource_fields(self, resource: Resource) -> bytes:
        """``ResourceSpans.resource`` and ``schema_url``, encoded once per Resource object."""
        cached = self._resources.get(id(resource))
        if cached is not None and cached[0] is resource:
            return cached[1]
        body = b"".join(_attribute_fields(_RESOURCE_ATTRIBUTE, resource.attributes))
        encoded = _delimited(_RS_RESOURCE, body)
        if resource.schema_url:
            encoded += _delimited(_RS_SCHEMA_URL, resource.schema_url.encode("utf-8"))
        if len(self._resources) >= _IDENTITY_ENTRIES:
            self._resources.clear()
        self._resources[id(resource)] = (resource, encoded)
        return encoded

    def _scope_fields(self, scope: InstrumentationScope | None) -> bytes:
        """``ScopeSpans.scope`` and ``schema_url``, encoded once per scope object."""
        cached = self._scopes.get(id(scope))
        if cached is not None and cached[0] is scope:
            return cached[1]
        if scope is None:
            encoded = _delimited(_SS_SCOPE, b"")
        else:
            body = [_delimited(_SCOPE_NAME, scope.name.encode("utf-8"))]
            if scope.version:
                body.append(_delimited(_SCOPE_VERSION, scope.version.encode("utf-8")))
            body += _attribute_fields(_SCOPE_ATTRIBUTE, scope.attributes)
            encoded = _delimited(_SS_SCOPE, b"".join(body))
            if scope.schema_url:
                encoded += _delimited(_SS_SCHEMA_URL, scope.schema_url.encode("utf-8"))
        if len(self._scopes) >= _IDENTITY_ENTRIES:
            self._scopes.clear()
        self._scopes[id(scope)] = (scope, encoded)
        return encoded

    def _span_field(self, span: ReadableSpan) -> bytes:
        """One ``ScopeSpans.spans`` field."""
        context = span.get_span_context()
        if context is None:
            raise ValueError(f"span {span.name!r} has no span context; it cannot be exported")
        fields = [
            _TRACE_ID + context.trace_id.to_bytes(16, "big"),
            _SPAN_ID + context.span_id.to_bytes(8, "big"),
        ]
        if context.trace_state:
            state = _trace_state(context)
            if state:
                fields.append(_delimited(_TRACE_STATE, state.encode("utf-8")))
        parent = span.parent
        if parent is not None:
            fields.append(_PARENT_SPAN_ID + parent.span_id.to_bytes(8, "big"))
        # Name and kind together: a stage's spans have a handful of names between them.
        head = self._heads.get((span.name, span.kind))
        if head is None:
            head = self._head(span)
        fields.append(head)
        if span.start_time:
            fields.append(_START + _pack_fixed64(span.start_time))
        if span.end_time:
            fields.append(_END + _pack_fixed64(span.end_time))
        self._span_attributes(span, fields)
        if span.dropped_attributes:
            fields.append(_DROPPED_ATTRIBUTES + _varint(span.dropped_attributes))
        for event in span.events:
            fields.append(_delimited(_EVENT, _event(event)))
        if span.dropped_events:
            fields.append(_DROPPED_EVENTS + _varint(span.dropped_events))
        for link in span.links:
            fields.append(_delimited(_LINK, _link(link)))
        if span.dropped_links:
            fields.append(_DROPPED_LINKS + _varint(span.dropped_links))
        status = span.status
        if status.description or status.status_code.value:
            fields.append(_delimited(_STATUS, _status(status)))
        else:
            fields.append(_STATUS_UNSET)
        fields.append(_FLAGS_REMOTE if parent is not None and parent.is_remote else _FLAGS_LOCAL)
        return _delimited(_SS_SPAN, b"".join(fields))

    def _head(self, span: ReadableSpan) -> bytes:
        """The name and kind fields of a span, kept for the next span with the same two."""
        # SpanKind INTERNAL..CONSUMER are 0..4 in the API and 1..5 on the wire.
        head = _KIND + _SMALL[span.kind.value + 1]
        if span.name:
            head = _delimited(_NAME, span.name.encode("utf-8")) + head
        if len(self._heads) >= _CACHE_ENTRIES:
            self._heads.clear()
        self._heads[(span.name, span.kind)] = head
        return head

    def _span_attributes(self, span: ReadableSpan, fields: list[bytes]) -> None:
        """Append the span's attributes; a str, int or bool value is encoded once per key.

        The attributes are read from the SDK's own dictionary when it has one (an ended
        span's attributes no longer change): going through the ``Mapping`` interface of
        ``BoundedAttributes`` costs more than encoding them. Any other span type goes through
        ``span.attributes``.
        """
        raw = getattr(span, "_attributes", None)
        items = getattr(raw, "_dict", raw)
        if type(items) is not dict:
            items = span.attributes
            if not items:
                return
        caches = self._values
        append = fields.append
        for key, value in items.items():
            cache = caches.get(type(value))
            if cache is not None:
                if type(value) is str and len(value) > _CACHED_VALUE_CHARS:
                    cache = None
                else:
                    encoded = cache.get((key, value))
                    if encoded is not None:
                        append(encoded)
                        continue
            try:
                encoded = _delimited(_ATTRIBUTE, _key_value(key, value))
            except Exception:  # noqa: S112 - the SDK's rule: one bad value loses that value only
                continue
            if cache is not None:
                if len(cache) >= _CACHE_ENTRIES:
                    cache.clear()
                cache[(key, value)] = encoded
            append(encoded)


def _canonical(obj: Any, by_id: dict[int, Any], by_value: dict[Any, Any]) -> Any:
    """The first object of the batch equal to ``obj`` (the SDK groups by equality).

    Hashing a Resource is a ``json.dumps`` of its attributes, so equality is looked up only
    once a second distinct object shows up in a batch; one provider has one Resource.
    """
    if not by_id:
        by_id[id(obj)] = obj
        return obj
    if not by_value:
        for first in by_id.values():
            by_value.setdefault(first, first)
    canonical = by_value.setdefault(obj, obj)
    by_id[id(obj)] = canonical
    return canonical


def _event(event: Any) -> bytes:
    """A ``Span.Event`` body."""
    fields = [_EVENT_TIME + _pack_fixed64(event.timestamp)]
    if event.name:
        fields.append(_delimited(_EVENT_NAME, event.name.encode("utf-8")))
    fields += _attribute_fields(_EVENT_ATTRIBUTE, event.attributes)
    if event.dropped_attributes:
        fields.append(_EVENT_DROPPED + _varint(event.dropped_attributes))
    return b"".join(fields)


def _link(link: Link) -> bytes:
    """A ``Span.Link`` body (the SDK writes no trace state for a link; neither do we)."""
    context = link.context
    fields = [
        _LINK_TRACE_ID + context.trace_id.to_bytes(16, "big"),
        _LINK_SPAN_ID + context.span_id.to_bytes(8, "big"),
    ]
    fields += _attribute_fields(_LINK_ATTRIBUTE, link.attributes)
    if link.dropped_attributes:
        fields.append(_LINK_DROPPED + _varint(link.dropped_attributes))
    fields.append(_LINK_FLAGS_REMOTE if context.is_remote else _LINK_FLAGS_LOCAL)
    return b"".join(fields)


def _status(status: Status) -> bytes:
    """A ``Status`` body: the description, then the code."""
    fields = []
    if status.description:
        fields.append(_delimited(_STATUS_MESSAGE, status.description.encode("utf-8")))
    code = status.status_code.value
    if code:
        fields.append(_STATUS_CODE + _SMALL[code])
    return b"".join(fields)
