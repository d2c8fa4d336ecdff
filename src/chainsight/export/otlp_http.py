"""The OTLP/HTTP span exporter with chainsight's encoder (``export.otlp_encode``).

Imported only when chainsight builds an OTLP/HTTP exporter: it pulls in the SDK's HTTP
exporter and its transport. Everything but the encoding is the SDK's: endpoint, headers,
compression, TLS, timeout, retries with back-off, the request-size limit and the exporter's own
metrics all come from ``OTLPSpanExporter`` and its ``OTEL_EXPORTER_OTLP_*`` variables.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any, Final

from opentelemetry.exporter.otlp.proto.http import trace_exporter as _sdk
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import SpanExportResult

from chainsight.export.otlp_encode import SpanEncoder

__all__ = ["FastOTLPSpanExporter", "uses_sdk_internals"]

logger = logging.getLogger(__name__)

# What the SDK's own export() uses between encoding and sending, which we reuse as they are.
# An SDK release that renames them makes this exporter fall back to the SDK's export (and
# tests/export/test_otlp_http.py fail, so we notice).
_CLIENT_ATTRIBUTES: Final = ("_client", "_metrics", "_max_request_size", "_shutdown")
_too_large: Final[Any] = getattr(_sdk, "_is_request_too_large", None)
_TooLarge: Final[Any] = getattr(_sdk, "RequestPayloadTooLargeError", None)
_STATUS_CODE: Final[Any] = getattr(_sdk, "HTTP_RESPONSE_STATUS_CODE", None)


def uses_sdk_internals(exporter: _sdk.OTLPSpanExporter) -> bool:
    """Whether this SDK has the internals our ``export`` reuses (else the SDK's export runs)."""
    client = getattr(exporter, "_client", None)
    return (
        all(hasattr(exporter, name) for name in _CLIENT_ATTRIBUTES)
        and callable(getattr(client, "export", None))
        and callable(getattr(getattr(exporter, "_metrics", None), "export_operation", None))
        and callable(_too_large)
        and callable(_TooLarge)
        and isinstance(_STATUS_CODE, str)
    )


class FastOTLPSpanExporter(_sdk.OTLPSpanExporter):
    """``OTLPSpanExporter`` whose batches are encoded by :class:`SpanEncoder`.

    The request body is the same ``ExportTraceServiceRequest`` the SDK would send, at a
    fraction of the CPU. With an SDK whose internals differ from the ones this was written
    against, every batch goes through the SDK's own ``export`` instead.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._encoder = SpanEncoder()
        self.fast = uses_sdk_internals(self)

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        """Encode with chainsight's encoder and send through the SDK's HTTP client."""
        if not self.fast:
            return super().export(spans)
        if self._shutdown:
            logger.warning(
                "exporter already shut down; a batch of %d spans is not sent", len(spans)
            )
            return SpanExportResult.FAILURE
        with self._metrics.export_operation(len(spans)) as result:
            try:
                data = self._encoder.encode(spans)
            except Exception as error:  # the SDK's rule: a batch that cannot be encoded fails
                logger.error("could not encode a batch of %d spans: %s", len(spans), error)
                result.error = error
                return SpanExportResult.FAILURE
            if _too_large(data, self._max_request_size):
                logger.warning(
                    "dropping a span batch of %d bytes: over max_request_size (%d bytes); "
                    "lower OTEL_BSP_MAX_EXPORT_BATCH_SIZE",
                    len(data),
                    self._max_request_size,
                )
                result.error = _TooLarge(
                    f"serialized span request of {len(data)} bytes exceeds max_request_size "
                    f"{self._max_request_size} bytes"
                )
                return SpanExportResult.FAILURE
            sent = self._client.export(data)
            if not sent.success:
                result.error = sent.error
                if sent.status_code is not None:
                    result.error_attrs = {_STATUS_CODE: sent.status_code}
                return SpanExportResult.FAILURE
        return SpanExportResult.SUCCESS
