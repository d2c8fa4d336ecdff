"""The OTLP/gRPC span exporter with chainsight's encoder (``export.otlp_encode``).

Imported only when chainsight builds an OTLP/gRPC exporter (it pulls in grpcio). The SDK's
gRPC exporter hands a protobuf *message* to its stub, whose serializer turns it into bytes.
Here the stub's ``Export`` method is registered with a serializer that passes bytes through, and
``_translate_data`` returns our bytes: the same request on the wire. Channel, credentials,
headers, compression, timeout, retries (``RetryInfo`` included) and reconnection are the SDK's.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Final

from opentelemetry.exporter.otlp.proto.grpc import trace_exporter as _sdk
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.sdk.trace import ReadableSpan

from chainsight.export.otlp_encode import SpanEncoder

__all__ = ["FastGrpcOTLPSpanExporter", "uses_sdk_internals"]

_EXPORT_METHOD: Final = "/opentelemetry.proto.collector.trace.v1.TraceService/Export"
# What the SDK's OTLPExporterMixin keeps and calls; see uses_sdk_internals().
_ATTRIBUTES: Final = ("_stub", "_channel", "_client", "_initialize_channel_and_stub")


def _as_is(body: bytes) -> bytes:
    return body


class _PreencodedTraceServiceStub:
    """``TraceServiceStub`` whose ``Export`` takes the request already serialised."""

    def __init__(self, channel: Any) -> None:
        self.Export = channel.unary_unary(
            _EXPORT_METHOD,
            request_serializer=_as_is,
            response_deserializer=ExportTraceServiceResponse.FromString,
        )


def uses_sdk_internals(exporter: _sdk.OTLPSpanExporter) -> bool:
    """Whether this SDK has the internals our encoder is plugged into (else the SDK's runs).

    The mixin must build its client as ``self._stub(self._channel)`` (also when it reconnects)
    and ask ``_translate_data`` for each request.
    """
    return (
        all(hasattr(exporter, name) for name in _ATTRIBUTES)
        and getattr(exporter, "_channel", None) is not None
        and callable(getattr(type(exporter), "_translate_data", None))
    )


class FastGrpcOTLPSpanExporter(_sdk.OTLPSpanExporter):
    """The SDK's OTLP/gRPC ``OTLPSpanExporter``; requests encoded by :class:`SpanEncoder`."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._encoder = SpanEncoder()
        self.fast = uses_sdk_internals(self)
        if self.fast:
            # The mixin rebuilds its client from _stub when it reconnects: both are replaced.
            self._stub = _PreencodedTraceServiceStub
            # The SDK types its client as the generated stub (or None); ours has the same Export.
            self._client = _PreencodedTraceServiceStub(self._channel)  # type: ignore[assignment]

    def _translate_data(  # type: ignore[override]
        self, data: Sequence[ReadableSpan]
    ) -> ExportTraceServiceRequest | bytes:
        """Our bytes for the pass-through stub (the SDK's message if we fell back)."""
        if self.fast:
            return self._encoder.encode(data)
        return super()._translate_data(data)
