"""A healthy OTLP/HTTP traces receiver in its own process: ``python -m benchmarks._sink``.

The exporter-outage benchmark compares a collector that is down or slow with one that is up.
"Up" must be a real receiver, so the healthy phase pays what a healthy exporter pays
(protobuf encoding, an HTTP round trip); and it must live in another process, so decoding
what it receives does not compete with the measured requests for this interpreter's GIL.

It prints its port on the first line of stdout, decodes each request with the official
protobuf (``opentelemetry-proto``), answers 200, and on SIGTERM prints the number of spans
it decoded on the last line. It also stops when its stdin closes, so a benchmark process
that is killed leaves no receiver behind.
"""

from __future__ import annotations

import os
import signal
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import FrameType

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)

_ANSWER = ExportTraceServiceResponse().SerializeToString()


class _Sink(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self) -> None:
        self.spans = 0
        self.lock = threading.Lock()
        super().__init__(("127.0.0.1", 0), _Handler)


class _Handler(BaseHTTPRequestHandler):
    server: _Sink
    protocol_version = "HTTP/1.1"  # keep-alive, as a collector does

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        request = ExportTraceServiceRequest.FromString(body)
        count = sum(len(scope.spans) for rs in request.resource_spans for scope in rs.scope_spans)
        with self.server.lock:
            self.server.spans += count
        self.send_response(200)
        self.send_header("Content-Type", "application/x-protobuf")
        self.send_header("Content-Length", str(len(_ANSWER)))
        self.end_headers()
        self.wfile.write(_ANSWER)

    def log_message(self, format: str, *args: object) -> None:
        return


def main() -> int:
    """Serve until SIGTERM, then print how many spans were received."""
    sink = _Sink()

    def stop(signum: int, frame: FrameType | None) -> None:
        threading.Thread(target=sink.shutdown, daemon=True).start()

    def orphaned() -> None:
        # The benchmark holds our stdin open; when it ends (even killed), stop serving.
        sys.stdin.read()
        sink.shutdown()

    signal.signal(signal.SIGTERM, stop)
    threading.Thread(target=orphaned, name="sink-parent-watch", daemon=True).start()
    print(sink.server_port, flush=True)
    sink.serve_forever()
    with sink.lock:
        spans = sink.spans
    try:
        print(spans, flush=True)
    except BrokenPipeError:  # orphaned: nobody reads the count; exit quietly
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    return 0


if __name__ == "__main__":
    sys.exit(main())
