"""Real servers for integration tests: OTLP receivers (HTTP and gRPC), Prometheus, Redis.

Every server listens on 127.0.0.1 on a free port with its own temporary directory; nothing here
talks to a system service (the Debian packages may run Prometheus on :9090 and Redis on :6379).
The pytest fixtures that wrap these classes live in ``tests/integration/conftest.py``.

The OTLP receivers decode what arrives on the wire with the official ``opentelemetry-proto``
messages and answer as the OTLP specification says, so a test checks what an exporter really
sent, not what an SDK holds in memory.
"""

from __future__ import annotations

import base64
import contextlib
import gzip
import json
import math
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
import zlib
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from concurrent import futures
from dataclasses import dataclass
from datetime import datetime
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import IO, Any, ClassVar, Literal, TypeVar, cast

import grpc  # type: ignore[import-untyped]
import pytest
import redis
from google.protobuf import json_format  # type: ignore[import-untyped]
from google.protobuf.duration_pb2 import Duration  # type: ignore[import-untyped]
from google.protobuf.message import DecodeError, Message  # type: ignore[import-untyped]
from google.rpc import error_details_pb2, status_pb2  # type: ignore[import-untyped]
from opentelemetry.proto.collector.logs.v1 import logs_service_pb2, logs_service_pb2_grpc
from opentelemetry.proto.collector.metrics.v1 import (
    metrics_service_pb2,
    metrics_service_pb2_grpc,
)
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2, trace_service_pb2_grpc
from opentelemetry.proto.common.v1 import common_pb2
from opentelemetry.proto.trace.v1 import trace_pb2
from redis.backoff import NoBackoff
from redis.retry import Retry

__all__ = [
    "GRPC_CODE_FOR_HTTP_STATUS",
    "LoggedProcess",
    "OTLPGrpcReceiver",
    "OTLPReceiver",
    "PrometheusQueryError",
    "PrometheusServer",
    "RedisServer",
    "RequestRecord",
    "ServerStartError",
    "any_value_to_python",
    "free_port",
    "otlp_json_ids_to_base64",
    "promtool",
    "require_binary",
    "temp_workdir",
]

HOST = "127.0.0.1"
Mode = Literal["ok", "slow", "error"]
_MODES: tuple[str, ...] = ("ok", "slow", "error")

# The OTLP/gRPC status a collector gives for the failure an HTTP status stands for. 429 maps to
# RESOURCE_EXHAUSTED, which the spec makes retryable only with a RetryInfo detail: the gRPC
# receiver always sends one for it.
GRPC_CODE_FOR_HTTP_STATUS: Mapping[int, grpc.StatusCode] = {
    400: grpc.StatusCode.INVALID_ARGUMENT,
    401: grpc.StatusCode.UNAUTHENTICATED,
    403: grpc.StatusCode.PERMISSION_DENIED,
    404: grpc.StatusCode.UNIMPLEMENTED,
    429: grpc.StatusCode.RESOURCE_EXHAUSTED,
    500: grpc.StatusCode.INTERNAL,
    502: grpc.StatusCode.UNAVAILABLE,
    503: grpc.StatusCode.UNAVAILABLE,
    504: grpc.StatusCode.DEADLINE_EXCEEDED,
}

_M = TypeVar("_M", bound=Message)


class ServerStartError(RuntimeError):
    """A real server did not come up; the message carries the tail of its log."""


class PrometheusQueryError(RuntimeError):
    """Prometheus answered a query with an error, or with a result the caller cannot use."""


# --- small helpers ------------------------------------------------------------------------------


def free_port() -> int:
    """Return a TCP port on 127.0.0.1 that nothing listens on right now.

    The kernel picks it (bind to port 0); another process could take it before the caller binds
    it, which is why the server classes retry start-up on "address already in use".
    """
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        return int(sock.getsockname()[1])


def _ci() -> bool:
    return os.environ.get("CI", "") != ""


def require_binary(name: str) -> str:
    """Return the path of executable ``name``; skip the test if it is missing (fail under CI).

    A missing server binary on a developer machine should not hide as a pass, so the skip reason
    names the binary and the command that installs it; with ``CI`` set the test fails instead.
    """
    path = shutil.which(name)
    if path is not None:
        return path
    message = (
        f"SKIPPED LOUDLY: the real-server binary {name!r} is not on PATH "
        f"(PATH={os.environ.get('PATH', '')!r}); install it with `make servers` "
        "(apt-get install prometheus prometheus-alertmanager redis-server)"
    )
    if _ci():
        pytest.fail(f"{message}; CI is set, so a missing binary is a failure", pytrace=False)
    pytest.skip(message)


def promtool(
    *args: str, input: str | None = None, timeout: float = 60.0
) -> subprocess.CompletedProcess[str]:
    """Run ``promtool ARGS`` and return the completed process (text mode, output captured).

    It does not raise on a non-zero exit: tests assert on ``returncode`` and the output, since
    a rejected rule file is often the expected result.
    """
    binary = require_binary("promtool")
    return subprocess.run(
        [binary, *args],
        input=input,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def _tail(path: Path, lines: int = 40) -> str:
    try:
        text = path.read_text(errors="replace")
    except OSError as exc:
        return f"<log {path} unreadable: {exc}>"
    return "\n".join(text.splitlines()[-lines:])


def ready_or_exited(proc: subprocess.Popen[bytes], url: str) -> Callable[[], bool]:
    """A check for ``_wait_until``: the Prometheus-style server answers ``/-/ready``, or it has
    exited (no point waiting; the caller reads its log)."""

    def ready() -> bool:
        if proc.poll() is not None:
            return True
        try:
            return _http(f"{url}/-/ready", timeout=1)[0] == 200
        except OSError:
            return False

    return ready


def _wait_until(check: Callable[[], bool], timeout: float, interval: float = 0.05) -> bool:
    deadline = time.monotonic() + timeout
    while True:
        if check():
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(interval)


def _stop_process(proc: subprocess.Popen[bytes], grace: float = 5.0) -> None:
    if proc.poll() is not None:
        return
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout=grace)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=grace)


# --- OTLP decoding ------------------------------------------------------------------------------


def any_value_to_python(value: common_pb2.AnyValue) -> Any:
    """Convert an OTLP ``AnyValue`` to the Python value an SDK attribute would hold.

    Arrays become lists, key-value lists become dicts, an empty ``AnyValue`` becomes ``None``.
    """
    kind = value.WhichOneof("value")
    if kind is None:
        return None
    if kind == "array_value":
        return [any_value_to_python(v) for v in value.array_value.values]
    if kind == "kvlist_value":
        return _attributes(value.kvlist_value.values)
    return getattr(value, kind)


def _attributes(pairs: Iterable[common_pb2.KeyValue]) -> dict[str, Any]:
    return {kv.key: any_value_to_python(kv.value) for kv in pairs}


def _hex_or_none(raw: bytes) -> str | None:
    return raw.hex() if raw else None


_ID_KEYS = frozenset({"traceId", "spanId", "parentSpanId", "trace_id", "span_id", "parent_span_id"})


def otlp_json_ids_to_base64(node: Any) -> Any:
    """Return OTLP/JSON ``node`` with its hex trace/span ids rewritten as base64.

    OTLP/JSON writes ids as hex, while protobuf's JSON mapping reads ``bytes`` as base64; this
    bridges the two so ``json_format`` can decode a request the spec's way.
    """
    if isinstance(node, dict):
        return {
            key: (
                base64.b64encode(bytes.fromhex(value)).decode("ascii")
                if key in _ID_KEYS and isinstance(value, str)
                else otlp_json_ids_to_base64(value)
            )
            for key, value in node.items()
        }
    if isinstance(node, list):
        return [otlp_json_ids_to_base64(item) for item in node]
    return node


def _span_kind_name(kind: int) -> str:
    return str(trace_pb2.Span.SpanKind.Name(kind)).removeprefix("SPAN_KIND_")


def _status_code_name(code: int) -> str:
    return str(trace_pb2.Status.StatusCode.Name(code)).removeprefix("STATUS_CODE_")


def _flatten_spans(request: trace_service_pb2.ExportTraceServiceRequest) -> list[dict[str, Any]]:
    spans: list[dict[str, Any]] = []
    for resource_spans in request.resource_spans:
        resource = _attributes(resource_spans.resource.attributes)
        for scope_spans in resource_spans.scope_spans:
            for span in scope_spans.spans:
                spans.append(
                    {
                        "name": span.name,
                        "trace_id": span.trace_id.hex(),
                        "span_id": span.span_id.hex(),
                        "parent_span_id": _hex_or_none(span.parent_span_id),
                        "kind": _span_kind_name(span.kind),
                        "status_code": _status_code_name(span.status.code),
                        "status_message": span.status.message,
                        "attributes": _attributes(span.attributes),
                        "events": [
                            {
                                "name": event.name,
                                "time_unix_nano": event.time_unix_nano,
                                "attributes": _attributes(event.attributes),
                            }
                            for event in span.events
                        ],
                        "links": [
                            {
                                "trace_id": link.trace_id.hex(),
                                "span_id": link.span_id.hex(),
                                "attributes": _attributes(link.attributes),
                            }
                            for link in span.links
                        ],
                        "start_time_unix_nano": span.start_time_unix_nano,
                        "end_time_unix_nano": span.end_time_unix_nano,
                        "resource": resource,
                        "scope": scope_spans.scope.name,
                    }
                )
    return spans


def _exemplars(point: Any) -> list[dict[str, Any]]:
    return [
        {
            "trace_id": _hex_or_none(ex.trace_id),
            "span_id": _hex_or_none(ex.span_id),
            "value": ex.as_int if ex.WhichOneof("value") == "as_int" else ex.as_double,
            "attributes": _attributes(ex.filtered_attributes),
        }
        for ex in point.exemplars
    ]


def _number_point(point: Any) -> dict[str, Any]:
    return {
        "attributes": _attributes(point.attributes),
        "time_unix_nano": point.time_unix_nano,
        "value": point.as_int if point.WhichOneof("value") == "as_int" else point.as_double,
        "exemplars": _exemplars(point),
    }


def _histogram_point(point: Any) -> dict[str, Any]:
    return {
        "attributes": _attributes(point.attributes),
        "time_unix_nano": point.time_unix_nano,
        "count": point.count,
        "sum": point.sum if point.HasField("sum") else None,
        "min": point.min if point.HasField("min") else None,
        "max": point.max if point.HasField("max") else None,
        "bucket_counts": list(point.bucket_counts),
        "explicit_bounds": list(point.explicit_bounds),
        "exemplars": _exemplars(point),
    }


def _flatten_metrics(
    request: metrics_service_pb2.ExportMetricsServiceRequest,
) -> list[dict[str, Any]]:
    metrics: list[dict[str, Any]] = []
    for resource_metrics in request.resource_metrics:
        resource = _attributes(resource_metrics.resource.attributes)
        for scope_metrics in resource_metrics.scope_metrics:
            for metric in scope_metrics.metrics:
                kind = metric.WhichOneof("data")
                entry: dict[str, Any] = {
                    "name": metric.name,
                    "description": metric.description,
                    "unit": metric.unit,
                    "type": kind,
                    "resource": resource,
                    "scope": scope_metrics.scope.name,
                }
                if kind in ("gauge", "sum"):
                    data = getattr(metric, kind)
                    entry["data_points"] = [_number_point(p) for p in data.data_points]
                    if kind == "sum":
                        entry["is_monotonic"] = data.is_monotonic
                elif kind == "histogram":
                    entry["data_points"] = [
                        _histogram_point(p) for p in metric.histogram.data_points
                    ]
                else:
                    # Exponential histograms and summaries are not flattened (chainsight sends
                    # neither); the raw request stays available in metric_requests.
                    entry["data_points"] = []
                metrics.append(entry)
    return metrics


# --- OTLP receivers -----------------------------------------------------------------------------


@dataclass
class _ModeState:
    name: str = "ok"
    delay: float = 2.0
    status: int = 503
    retry_after: float | None = None
    remaining: int | None = None


@dataclass(frozen=True)
class _Answer:
    """What the receiver does with one export request."""

    delay: float
    status: int  # 200 means accept
    retry_after: float | None


@dataclass(frozen=True)
class RequestRecord:
    """One export request as it arrived: path, transport details and the status answered."""

    signal: str
    status: int
    content_type: str
    content_encoding: str


class _ReceiverBase:
    """Storage, decoding and fault modes shared by the HTTP and gRPC receivers."""

    def __init__(self, port: int | None = None) -> None:
        self.port: int = port if port is not None else free_port()
        self.trace_requests: list[trace_service_pb2.ExportTraceServiceRequest] = []
        self.metric_requests: list[metrics_service_pb2.ExportMetricsServiceRequest] = []
        self.log_requests: list[logs_service_pb2.ExportLogsServiceRequest] = []
        self.requests: list[RequestRecord] = []
        self._cond = threading.Condition()
        self._mode = _ModeState()
        # Set while stopped so a "slow" answer in flight returns at once instead of holding
        # stop() up for the whole delay.
        self._stopping = threading.Event()

    @property
    def endpoint(self) -> str:
        """Base URL of the receiver, ``http://127.0.0.1:PORT`` (no signal path)."""
        return f"http://{HOST}:{self.port}"

    @property
    def request_count(self) -> int:
        """Export requests received on any signal, whatever the answer was (retries count)."""
        with self._cond:
            return len(self.requests)

    def set_mode(
        self,
        mode: Mode,
        delay: float = 2.0,
        status: int = 503,
        *,
        retry_after: float | None = None,
        count: int | None = None,
    ) -> None:
        """Choose how the receiver answers from now on.

        ``"ok"`` accepts; ``"slow"`` sleeps ``delay`` seconds, then accepts; ``"error"`` rejects
        with HTTP ``status`` (gRPC: the matching code in ``GRPC_CODE_FOR_HTTP_STATUS``). A 429
        always carries a retry delay (``retry_after``, default 1 s), as the OTLP spec asks of a
        throttling server; other statuses carry one only when ``retry_after`` is given. With
        ``count``, only the next ``count`` requests get this answer, then the mode returns to
        ``"ok"`` (to test an exporter's retry).
        """
        if mode not in _MODES:
            raise ValueError(f"mode must be one of {_MODES}, got {mode!r}")
        if mode == "error" and not 400 <= status <= 599:
            raise ValueError(f"error status must be a 4xx or 5xx HTTP status, got {status!r}")
        if delay < 0 or (retry_after is not None and retry_after < 0):
            raise ValueError(f"delay and retry_after must be >= 0, got {delay!r}, {retry_after!r}")
        if count is not None and count < 1:
            raise ValueError(f"count must be None (for ever) or >= 1, got {count!r}")
        if mode == "error" and status == 429 and retry_after is None:
            retry_after = 1.0
        with self._cond:
            self._mode = _ModeState(mode, delay, status, retry_after, count)

    def clear(self) -> None:
        """Forget every request received so far (the mode is kept)."""
        with self._cond:
            self.trace_requests.clear()
            self.metric_requests.clear()
            self.log_requests.clear()
            self.requests.clear()

    def spans(self) -> list[dict[str, Any]]:
        """Every span accepted so far, flattened to dicts, in arrival order.

        Keys: name, trace_id, span_id (hex), parent_span_id (hex or None), kind ("INTERNAL",
        "SERVER", "CLIENT", "PRODUCER", "CONSUMER"), status_code ("UNSET", "OK", "ERROR"),
        status_message, attributes, events, links, start/end_time_unix_nano, resource, scope.
        """
        with self._cond:
            requests = list(self.trace_requests)
        return [span for request in requests for span in _flatten_spans(request)]

    def metrics(self) -> list[dict[str, Any]]:
        """Every metric accepted so far, one dict per metric per request, in arrival order.

        Keys: name, description, unit, type ("sum", "gauge", "histogram", …), resource, scope,
        data_points (attributes plus value, or count/sum/min/max/bucket_counts/explicit_bounds),
        and is_monotonic for sums.
        """
        with self._cond:
            requests = list(self.metric_requests)
        return [metric for request in requests for metric in _flatten_metrics(request)]

    def wait_for_spans(self, n: int, timeout: float = 10.0) -> list[dict[str, Any]]:
        """Block until at least ``n`` spans arrived; return them all. Raises TimeoutError."""

        def enough() -> bool:
            return sum(_count_spans(r) for r in self.trace_requests) >= n

        with self._cond:
            if not self._cond.wait_for(enough, timeout=timeout):
                have = sum(_count_spans(r) for r in self.trace_requests)
                raise TimeoutError(
                    f"expected at least {n} spans at {self.endpoint} within {timeout} s, got "
                    f"{have} in {len(self.trace_requests)} accepted requests "
                    f"({len(self.requests)} received, mode {self._mode.name!r}); check the "
                    "exporter endpoint and that the span processor was flushed"
                )
        return self.spans()

    def wait_for_metric(self, name: str, timeout: float = 10.0) -> dict[str, Any]:
        """Block until a metric called ``name`` arrived; return its latest export.

        Raises TimeoutError naming the metrics that did arrive.
        """

        def latest() -> dict[str, Any] | None:
            found = [m for m in self.metrics() if m["name"] == name]
            return found[-1] if found else None

        deadline = time.monotonic() + timeout
        while (found := latest()) is None:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                names = sorted({m["name"] for m in self.metrics()})
                raise TimeoutError(
                    f"metric {name!r} did not arrive at {self.endpoint} within {timeout} s; "
                    f"metrics received: {names}; flush the meter provider before waiting"
                )
            with self._cond:
                self._cond.wait(timeout=min(remaining, 0.2))
        return found

    def _next_answer(self) -> _Answer:
        with self._cond:
            mode = self._mode
            if mode.remaining is not None:
                mode.remaining -= 1
                if mode.remaining <= 0:
                    self._mode = _ModeState()
        if mode.name == "error":
            return _Answer(0.0, mode.status, mode.retry_after)
        return _Answer(mode.delay if mode.name == "slow" else 0.0, 200, None)

    def _record(
        self,
        signal_name: str,
        message: Message | None,
        status: int,
        content_type: str,
        content_encoding: str,
    ) -> None:
        with self._cond:
            self.requests.append(RequestRecord(signal_name, status, content_type, content_encoding))
            if isinstance(message, trace_service_pb2.ExportTraceServiceRequest):
                self.trace_requests.append(message)
            elif isinstance(message, metrics_service_pb2.ExportMetricsServiceRequest):
                self.metric_requests.append(message)
            elif isinstance(message, logs_service_pb2.ExportLogsServiceRequest):
                self.log_requests.append(message)
            self._cond.notify_all()

    def _sleep(self, seconds: float) -> bool:
        """Sleep unless the receiver stops first; True if it is still running."""
        return not self._stopping.wait(seconds)


def _count_spans(request: trace_service_pb2.ExportTraceServiceRequest) -> int:
    return sum(len(ss.spans) for rs in request.resource_spans for ss in rs.scope_spans)


_SIGNALS: dict[str, tuple[str, type[Message], type[Message]]] = {
    "/v1/traces": (
        "traces",
        trace_service_pb2.ExportTraceServiceRequest,
        trace_service_pb2.ExportTraceServiceResponse,
    ),
    "/v1/metrics": (
        "metrics",
        metrics_service_pb2.ExportMetricsServiceRequest,
        metrics_service_pb2.ExportMetricsServiceResponse,
    ),
    "/v1/logs": (
        "logs",
        logs_service_pb2.ExportLogsServiceRequest,
        logs_service_pb2.ExportLogsServiceResponse,
    ),
}
_PROTOBUF = "application/x-protobuf"
_JSON = "application/json"


class _HTTPServer(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, address: tuple[str, int], receiver: OTLPReceiver) -> None:
        self.receiver = receiver
        super().__init__(address, _OTLPHandler)


class _OTLPHandler(BaseHTTPRequestHandler):
    # HTTP/1.0 closes the connection after each answer, so once stop() closes the listening
    # socket no kept-alive connection can still reach a handler thread.
    protocol_version = "HTTP/1.0"
    server: _HTTPServer

    def log_message(self, format: str, *args: Any) -> None:
        """Keep the test output clean; requests are recorded on the receiver instead."""

    def do_GET(self) -> None:
        """Only POST is part of OTLP/HTTP."""
        self._answer_status(HTTPStatus.METHOD_NOT_ALLOWED, _PROTOBUF, "OTLP/HTTP accepts POST only")

    def do_POST(self) -> None:
        """Decode one OTLP/HTTP export request and answer it according to the receiver mode."""
        receiver = self.server.receiver
        path = urllib.parse.urlsplit(self.path).path
        content_type = self.headers.get("Content-Type", "").split(";")[0].strip().lower()
        encoding = self.headers.get("Content-Encoding", "").strip().lower()
        reply_type = _JSON if content_type == _JSON else _PROTOBUF
        if path not in _SIGNALS:
            self._answer_status(
                HTTPStatus.NOT_FOUND, reply_type, f"unknown path {path!r}; use {sorted(_SIGNALS)}"
            )
            return
        signal_name, request_cls, response_cls = _SIGNALS[path]
        length = self.headers.get("Content-Length")
        if length is None:
            self._reject(signal_name, HTTPStatus.LENGTH_REQUIRED, reply_type, "no Content-Length")
            return
        body = self.rfile.read(int(length))
        try:
            body = _decompress(body, encoding)
        except ValueError as exc:
            self._reject(signal_name, HTTPStatus.BAD_REQUEST, reply_type, str(exc))
            return
        if content_type not in (_PROTOBUF, _JSON):
            self._reject(
                signal_name,
                HTTPStatus.UNSUPPORTED_MEDIA_TYPE,
                reply_type,
                f"Content-Type {content_type!r} is not {_PROTOBUF} or {_JSON}",
            )
            return
        try:
            message = _decode(body, content_type, request_cls)
        except (DecodeError, json_format.ParseError, ValueError) as exc:
            self._reject(signal_name, HTTPStatus.BAD_REQUEST, reply_type, f"undecodable: {exc}")
            return

        answer = receiver._next_answer()
        if answer.delay and not receiver._sleep(answer.delay):
            return
        if answer.status != 200:
            receiver._record(signal_name, None, answer.status, content_type, encoding)
            self._answer_status(
                answer.status, reply_type, "rejected by test mode", retry_after=answer.retry_after
            )
            return
        receiver._record(signal_name, message, 200, content_type, encoding)
        self._send(200, reply_type, _encode(response_cls(), reply_type))

    def _reject(self, signal_name: str, status: int, reply_type: str, text: str) -> None:
        content_type = self.headers.get("Content-Type", "").split(";")[0].strip().lower()
        encoding = self.headers.get("Content-Encoding", "").strip().lower()
        self.server.receiver._record(signal_name, None, int(status), content_type, encoding)
        self._answer_status(status, reply_type, text)

    def _answer_status(
        self, status: int, reply_type: str, text: str, retry_after: float | None = None
    ) -> None:
        # The OTLP spec: a failed request is answered with a google.rpc.Status body.
        body = _encode(status_pb2.Status(code=int(status), message=text), reply_type)
        headers = {} if retry_after is None else {"Retry-After": str(math.ceil(retry_after))}
        self._send(int(status), reply_type, body, headers)

    def _send(
        self, status: int, content_type: str, body: bytes, headers: Mapping[str, str] | None = None
    ) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        for key, value in (headers or {}).items():
            self.send_header(key, value)
        self.end_headers()
        self.wfile.write(body)


def _decompress(body: bytes, encoding: str) -> bytes:
    if encoding in ("", "identity"):
        return body
    try:
        if encoding == "gzip":
            return gzip.decompress(body)
        if encoding == "deflate":
            return zlib.decompress(body)
    except (OSError, zlib.error, EOFError) as exc:
        raise ValueError(f"body is not valid {encoding}: {exc}") from exc
    raise ValueError(f"unsupported Content-Encoding {encoding!r}; send gzip, deflate or none")


def _decode(body: bytes, content_type: str, cls: type[_M]) -> _M:
    message = cls()
    if content_type == _JSON:
        tree = json.loads(body.decode("utf-8")) if body else {}
        json_format.ParseDict(otlp_json_ids_to_base64(tree), message, ignore_unknown_fields=True)
    else:
        message.ParseFromString(body)
    return cast("_M", message)


def _encode(message: Message, content_type: str) -> bytes:
    if content_type == _JSON:
        return str(json_format.MessageToJson(message)).encode("utf-8")
    return bytes(message.SerializeToString())


class OTLPReceiver(_ReceiverBase):
    """An OTLP/HTTP receiver on 127.0.0.1 (protobuf and JSON, optionally gzip-compressed).

    Point ``OTLPSpanExporter(endpoint=receiver.traces_url)`` at it, or set
    ``OTEL_EXPORTER_OTLP_ENDPOINT=receiver.endpoint``.
    """

    def __init__(self, port: int | None = None) -> None:
        super().__init__(port)
        self._server: _HTTPServer | None = None
        self._thread: threading.Thread | None = None

    @property
    def traces_url(self) -> str:
        """Full URL of the traces endpoint, as ``OTLPSpanExporter(endpoint=...)`` expects it."""
        return f"{self.endpoint}/v1/traces"

    @property
    def metrics_url(self) -> str:
        """Full URL of the metrics endpoint."""
        return f"{self.endpoint}/v1/metrics"

    @property
    def logs_url(self) -> str:
        """Full URL of the logs endpoint."""
        return f"{self.endpoint}/v1/logs"

    @property
    def running(self) -> bool:
        """True between start() and stop()."""
        return self._server is not None

    def start(self) -> OTLPReceiver:
        """Listen on the receiver's port (the same one again after stop()); return self."""
        if self._server is not None:
            return self
        self._stopping.clear()
        server = _HTTPServer((HOST, self.port), self)
        thread = threading.Thread(
            target=server.serve_forever,
            kwargs={"poll_interval": 0.05},
            name=f"otlp-http-{self.port}",
            daemon=True,
        )
        thread.start()
        self._server, self._thread = server, thread
        return self

    def stop(self) -> None:
        """Close the listening socket: from now on connections to the port are refused."""
        self._stopping.set()
        server, thread = self._server, self._thread
        self._server = self._thread = None
        if server is not None:
            server.shutdown()
            server.server_close()
        if thread is not None:
            thread.join(timeout=5)


class _GrpcServicer(
    trace_service_pb2_grpc.TraceServiceServicer,
    metrics_service_pb2_grpc.MetricsServiceServicer,
    logs_service_pb2_grpc.LogsServiceServicer,
):
    """One object serving the three OTLP services; each Export differs only by message type."""

    responses: ClassVar[dict[type[Message], type[Message]]] = {
        trace_service_pb2.ExportTraceServiceRequest: trace_service_pb2.ExportTraceServiceResponse,
        metrics_service_pb2.ExportMetricsServiceRequest: (
            metrics_service_pb2.ExportMetricsServiceResponse
        ),
        logs_service_pb2.ExportLogsServiceRequest: logs_service_pb2.ExportLogsServiceResponse,
    }
    signals: ClassVar[dict[type[Message], str]] = {
        trace_service_pb2.ExportTraceServiceRequest: "traces",
        metrics_service_pb2.ExportMetricsServiceRequest: "metrics",
        logs_service_pb2.ExportLogsServiceRequest: "logs",
    }

    def __init__(self, receiver: OTLPGrpcReceiver) -> None:
        self.receiver = receiver

    def Export(self, request: Message, context: Any) -> Message:
        """Answer one export RPC according to the receiver mode."""
        receiver = self.receiver
        signal_name = self.signals[type(request)]
        encoding = dict(context.invocation_metadata()).get("grpc-encoding", "")
        answer = receiver._next_answer()
        if answer.delay and not receiver._sleep(answer.delay):
            context.abort(grpc.StatusCode.UNAVAILABLE, "receiver stopped")
        if answer.status != 200:
            receiver._record(signal_name, None, answer.status, "application/grpc", encoding)
            code = GRPC_CODE_FOR_HTTP_STATUS.get(answer.status, grpc.StatusCode.UNKNOWN)
            if answer.retry_after is not None:
                seconds = int(answer.retry_after)
                delay = Duration(seconds=seconds, nanos=int((answer.retry_after - seconds) * 1e9))
                info = error_details_pb2.RetryInfo(retry_delay=delay)
                context.set_trailing_metadata(
                    (("google.rpc.retryinfo-bin", info.SerializeToString()),)
                )
            context.abort(code, f"rejected by test mode (HTTP {answer.status})")
        receiver._record(signal_name, request, 200, "application/grpc", encoding)
        return self.responses[type(request)]()


class OTLPGrpcReceiver(_ReceiverBase):
    """An OTLP/gRPC receiver on 127.0.0.1, same interface as :class:`OTLPReceiver`.

    ``endpoint`` has the ``http://`` scheme, which the gRPC exporter reads as "insecure".
    """

    def __init__(self, port: int | None = None) -> None:
        super().__init__(port)
        self._server: Any = None
        self._pool: futures.ThreadPoolExecutor | None = None

    @property
    def running(self) -> bool:
        """True between start() and stop()."""
        return self._server is not None

    def start(self) -> OTLPGrpcReceiver:
        """Serve on the receiver's port (the same one again after stop()); return self."""
        if self._server is not None:
            return self
        self._stopping.clear()
        pool = futures.ThreadPoolExecutor(max_workers=8, thread_name_prefix="otlp-grpc")
        # SO_REUSEPORT would let two servers share the port silently; a clash must fail.
        server = grpc.server(pool, options=(("grpc.so_reuseport", 0),))
        servicer = _GrpcServicer(self)
        # The generated *_pb2_grpc modules carry no type hints.
        trace_service_pb2_grpc.add_TraceServiceServicer_to_server(servicer, server)  # type: ignore[no-untyped-call]
        metrics_service_pb2_grpc.add_MetricsServiceServicer_to_server(servicer, server)  # type: ignore[no-untyped-call]
        logs_service_pb2_grpc.add_LogsServiceServicer_to_server(servicer, server)  # type: ignore[no-untyped-call]
        try:
            bound = server.add_insecure_port(f"{HOST}:{self.port}")
        except RuntimeError as exc:
            pool.shutdown(wait=False)
            raise ServerStartError(f"gRPC receiver cannot bind {HOST}:{self.port}: {exc}") from exc
        if bound != self.port:
            pool.shutdown(wait=False)
            raise ServerStartError(f"gRPC receiver cannot bind {HOST}:{self.port} (got {bound})")
        server.start()
        self._server, self._pool = server, pool
        return self

    def stop(self) -> None:
        """Stop serving and release the port: new RPCs fail with UNAVAILABLE."""
        self._stopping.set()
        server, pool = self._server, self._pool
        self._server = self._pool = None
        if server is not None:
            server.stop(grace=None).wait(timeout=5)
        if pool is not None:
            pool.shutdown(wait=True)


# --- Prometheus ---------------------------------------------------------------------------------


def _http(url: str, *, data: bytes | None = None, timeout: float = 10.0) -> tuple[int, bytes]:
    """Status and body of a GET (or POST when ``data`` is given); HTTP errors are returned."""
    # Only ever our own loopback servers over http://, so S310's scheme worry does not apply.
    method = "POST" if data is not None else "GET"
    request = urllib.request.Request(url, data=data, method=method)  # noqa: S310
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:  # noqa: S310
            return int(response.status), bytes(response.read())
    except urllib.error.HTTPError as exc:
        with exc:
            return int(exc.code), bytes(exc.read())


def _http_json(url: str, *, data: bytes | None = None, timeout: float = 10.0) -> Any:
    # Prometheus answers a bad query with 400/422 and a JSON body saying what was wrong, so the
    # body is decoded whatever the status.
    status, body = _http(url, data=data, timeout=timeout)
    try:
        return json.loads(body.decode("utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise PrometheusQueryError(
            f"{url} answered {status} with a body that is not JSON: {body[:500]!r}"
        ) from exc


class LoggedProcess:
    """A server binary run as a child process, its output appended to ``log_path``: the start,
    stop and log handling that PrometheusServer, RedisServer and AlertmanagerServer share."""

    def __init__(self, log_path: Path) -> None:
        self.log_path = log_path
        self._proc: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None

    @property
    def pid(self) -> int | None:
        """PID of the running process, or None."""
        return self._proc.pid if self._proc is not None and self._proc.poll() is None else None

    def log_tail(self, lines: int = 40) -> str:
        """The last lines of the server's log, for failure messages."""
        return _tail(self.log_path, lines)

    def _launch(self, args: Sequence[str]) -> subprocess.Popen[bytes]:
        """Start ``args`` with a fresh handle on the log (stdout and stderr both)."""
        self._close_log()
        self._log = self.log_path.open("ab")
        self._proc = subprocess.Popen(list(args), stdout=self._log, stderr=subprocess.STDOUT)
        return self._proc

    def _launch_until_ready(self, args: Sequence[str], url: str, timeout: float) -> bool:
        """``_launch``, then wait for ``url``'s ``/-/ready``; stop it and say False if it exited
        or was not ready within ``timeout`` seconds."""
        proc = self._launch(args)
        ready = ready_or_exited(proc, url)
        _wait_until(ready, timeout, interval=0.1)
        if proc.poll() is None and ready():
            return True
        _stop_process(proc)
        return False

    def stop(self) -> None:
        """SIGTERM, then SIGKILL if it has not exited after 5 s; close the log."""
        if self._proc is not None:
            _stop_process(self._proc)
            self._proc = None
        self._close_log()

    def _close_log(self) -> None:
        if self._log is not None:
            self._log.close()
            self._log = None


class PrometheusServer(LoggedProcess):
    """A Prometheus started on 127.0.0.1 with its own config, TSDB directory and log file."""

    def __init__(
        self,
        targets: Sequence[str],
        *,
        workdir: Path,
        job: str = "chainsight",
        scrape_interval: str = "1s",
        rule_files: Sequence[str | Path] = (),
        extra_args: Sequence[str] = (),
        metrics_path: str = "/metrics",
        storage_path: Path | None = None,
    ) -> None:
        self.binary = require_binary("prometheus")
        self.targets = list(targets)
        self.job = job
        self.scrape_interval = scrape_interval
        self.rule_files = [Path(p).resolve() for p in rule_files]
        self.extra_args = list(extra_args)
        self.metrics_path = metrics_path
        self.workdir = workdir
        self.storage_path = storage_path if storage_path is not None else workdir / "data"
        self.config_path = workdir / "prometheus.yml"
        super().__init__(workdir / "prometheus.log")
        self.port = 0

    @property
    def url(self) -> str:
        """Base URL, ``http://127.0.0.1:PORT``."""
        return f"http://{HOST}:{self.port}"

    def write_config(self) -> None:
        """Write prometheus.yml: one static job, 1 s evaluation, the given rule files."""
        config = {
            "global": {
                "scrape_interval": self.scrape_interval,
                # Prometheus rejects a timeout longer than the interval; the default 10 s is.
                "scrape_timeout": self.scrape_interval,
                "evaluation_interval": "1s",
            },
            "rule_files": [str(p) for p in self.rule_files],
            "scrape_configs": [
                {
                    "job_name": self.job,
                    "metrics_path": self.metrics_path,
                    "static_configs": [{"targets": self.targets}],
                }
            ],
        }
        # JSON is YAML, and needs no emitter.
        self.config_path.write_text(json.dumps(config, indent=2))

    def start(self, timeout: float = 30.0) -> PrometheusServer:
        """Start Prometheus and wait for ``/-/ready``; raise ServerStartError with its log."""
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.storage_path.mkdir(parents=True, exist_ok=True)
        self.write_config()
        for _attempt in range(3):
            self.port = free_port()
            if self._spawn(timeout):
                return self
            if "address already in use" not in self.log_tail().lower():
                break
        raise ServerStartError(
            f"prometheus did not become ready on {self.url} within {timeout} s "
            f"(config {self.config_path}); log tail:\n{self.log_tail()}"
        )

    def _spawn(self, timeout: float) -> bool:
        args = [
            self.binary,
            f"--config.file={self.config_path}",
            f"--storage.tsdb.path={self.storage_path}",
            f"--web.listen-address={HOST}:{self.port}",
            "--web.enable-lifecycle",
            *self.extra_args,
        ]
        return self._launch_until_ready(args, self.url, timeout)

    def reload(self) -> None:
        """Re-read config and rule files (``POST /-/reload``)."""
        status, body = _http(f"{self.url}/-/reload", data=b"")
        if status != 200:
            raise PrometheusQueryError(
                f"reload of {self.url} answered {status}: {body[:500]!r}; log tail:\n"
                f"{self.log_tail(15)}"
            )

    def _api(self, path: str, params: Mapping[str, str] | None = None) -> Any:
        query = f"?{urllib.parse.urlencode(params)}" if params else ""
        answer = _http_json(f"{self.url}{path}{query}")
        if answer.get("status") != "success":
            raise PrometheusQueryError(
                f"prometheus {path} with {dict(params or {})} failed: "
                f"{answer.get('errorType')}: {answer.get('error')}; log tail:\n{self.log_tail(10)}"
            )
        return answer["data"]

    def query(self, expr: str, time: float | datetime | None = None) -> list[dict[str, Any]]:
        """Instant query; return ``data.result`` (a scalar or string result becomes one series).

        ``time`` is a Unix timestamp or datetime (default: now). Raises PrometheusQueryError
        when Prometheus rejects the expression.
        """
        params = {"query": expr}
        if time is not None:
            ts = time.timestamp() if isinstance(time, datetime) else time
            params["time"] = repr(float(ts))
        data = self._api("/api/v1/query", params)
        if data["resultType"] in ("scalar", "string"):
            return [{"metric": {}, "value": data["result"]}]
        return cast("list[dict[str, Any]]", data["result"])

    def query_range(
        self, expr: str, start: float, end: float, step: float = 1.0
    ) -> list[dict[str, Any]]:
        """Range query between Unix timestamps; return ``data.result`` (series with values)."""
        params = {"query": expr, "start": repr(start), "end": repr(end), "step": repr(step)}
        return cast("list[dict[str, Any]]", self._api("/api/v1/query_range", params)["result"])

    def query_scalar(self, expr: str, time: float | datetime | None = None) -> float | None:
        """The single value ``expr`` gives: None when empty; NaN and ±Inf as floats.

        Raises PrometheusQueryError when more than one series comes back (aggregate with
        ``sum(...)`` first), so a test never reads an arbitrary series by accident.
        """
        result = self.query(expr, time)
        if not result:
            return None
        if len(result) > 1:
            labels = [r.get("metric", {}) for r in result]
            raise PrometheusQueryError(
                f"query_scalar({expr!r}) got {len(result)} series {labels}; wrap the "
                "expression in sum(...) or select one series"
            )
        return float(result[0]["value"][1])

    def targets_state(self) -> list[dict[str, Any]]:
        """The active scrape targets (health, lastError, lastScrape) from ``/api/v1/targets``."""
        return cast("list[dict[str, Any]]", self._api("/api/v1/targets")["activeTargets"])

    def wait_for_scrapes(self, job: str = "chainsight", n: int = 3, timeout: float = 40.0) -> None:
        """Block until every target of ``job`` has been scraped successfully ``n`` times.

        The first scrape comes several seconds after start-up; rates need at least two samples.
        Raises TimeoutError with the targets' last errors and the log tail.
        """
        expr = f'sum_over_time(up{{job="{job}"}}[10m])'
        expected = len(self.targets) if job == self.job else 1

        def scraped() -> bool:
            result = self.query(expr)
            return len(result) >= expected and all(float(r["value"][1]) >= n for r in result)

        if not _wait_until(scraped, timeout, interval=0.25):
            targets = [
                {k: t.get(k) for k in ("scrapeUrl", "health", "lastError")}
                for t in self.targets_state()
            ]
            raise TimeoutError(
                f"job {job!r} was not scraped successfully {n} times within {timeout} s: "
                f"{self.query(expr)}; targets: {targets}; log tail:\n{self.log_tail(15)}"
            )

    def alerts(self) -> list[dict[str, Any]]:
        """Pending and firing alerts from ``/api/v1/alerts`` (labels, annotations, state)."""
        return cast("list[dict[str, Any]]", self._api("/api/v1/alerts")["alerts"])

    def rules(self) -> list[dict[str, Any]]:
        """Loaded rule groups from ``/api/v1/rules``, with each rule's health and lastError."""
        return cast("list[dict[str, Any]]", self._api("/api/v1/rules")["groups"])

    def wait_for_alert(
        self, name: str, state: str = "firing", timeout: float = 30.0
    ) -> dict[str, Any]:
        """Block until alert ``name`` is in ``state``; return it. Raises TimeoutError."""
        found: list[dict[str, Any]] = []

        def check() -> bool:
            found[:] = [
                a
                for a in self.alerts()
                if a["labels"].get("alertname") == name and a["state"] == state
            ]
            return bool(found)

        if not _wait_until(check, timeout, interval=0.25):
            raise TimeoutError(
                f"alert {name!r} was not {state} within {timeout} s; alerts: {self.alerts()}; "
                f"rules: {self.rules()}"
            )
        return found[0]


# --- Redis --------------------------------------------------------------------------------------


class RedisServer(LoggedProcess):
    """A redis-server on 127.0.0.1 with no persistence, which a test can SIGKILL and restart."""

    def __init__(self, workdir: Path, port: int | None = None) -> None:
        self.binary = require_binary("redis-server")
        self.workdir = workdir
        self.port = port if port is not None else free_port()
        super().__init__(workdir / "redis.log")

    @property
    def url(self) -> str:
        """Connection URL, ``redis://127.0.0.1:PORT/0``."""
        return f"redis://{HOST}:{self.port}/0"

    def client(self, socket_timeout: float = 2.0, *, retries: int | None = None) -> redis.Redis:
        """A new client for this server; the caller closes it.

        ``retries=None`` keeps redis-py's default retry policy; ``retries=0`` fails at once,
        which a test of an outage usually wants.
        """
        extra: dict[str, Any] = {} if retries is None else {"retry": Retry(NoBackoff(), retries)}
        return redis.Redis(
            host=HOST,
            port=self.port,
            db=0,
            socket_timeout=socket_timeout,
            socket_connect_timeout=socket_timeout,
            **extra,
        )

    def ping(self) -> bool:
        """True if the server answers PING now; False if it refuses or does not answer."""
        # No retries: redis-py's default backoff would turn one failed PING into seconds.
        client = self.client(socket_timeout=0.5, retries=0)
        try:
            return bool(client.ping())
        except (redis.ConnectionError, redis.TimeoutError):
            return False
        finally:
            client.close()

    def start(self, timeout: float = 10.0) -> RedisServer:
        """Start redis-server on ``port`` (the same one after kill()) and wait for PING."""
        if self.pid is not None:
            return self
        self.workdir.mkdir(parents=True, exist_ok=True)
        args = [
            self.binary,
            "--port",
            str(self.port),
            "--bind",
            HOST,
            "--save",
            "",
            "--appendonly",
            "no",
            "--daemonize",
            "no",
            "--dir",
            str(self.workdir),
        ]
        proc = self._launch(args)
        _wait_until(lambda: proc.poll() is not None or self.ping(), timeout, interval=0.05)
        if proc.poll() is None and self.ping():
            return self
        _stop_process(proc)
        self._proc = None
        raise ServerStartError(
            f"redis-server did not answer PING on {self.url} within {timeout} s; "
            f"log tail:\n{self.log_tail()}"
        )

    def kill(self) -> None:
        """SIGKILL the server, as a crash would; the port then refuses connections."""
        if self._proc is not None:
            if self._proc.poll() is None:
                self._proc.kill()
            self._proc.wait(timeout=5)
            self._proc = None


@contextlib.contextmanager
def temp_workdir(prefix: str) -> Iterator[Path]:
    """A temporary directory removed afterwards, for servers started outside pytest fixtures."""
    with tempfile.TemporaryDirectory(prefix=prefix) as name:
        yield Path(name)
