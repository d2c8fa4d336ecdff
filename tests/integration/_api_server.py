"""A small HTTP/1.1 server on 127.0.0.1 that answers like a provider's or a vector store's API.

It speaks the wire protocol the real clients expect (a status, a JSON body, headers), or accepts
a request and never answers, so a client's own timeout fires. Used by the classification tests.
"""

from __future__ import annotations

import json
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

__all__ = ["APIServer", "Answer"]


@dataclass
class Answer:
    """What the API server answers every request with, until changed."""

    status: int = 200
    body: object = field(default_factory=dict)
    headers: dict[str, str] = field(default_factory=dict)
    stall: bool = False


class APIServer:
    """An HTTP/1.1 server on 127.0.0.1 answering like a provider's API: a status, a JSON body and
    headers, or nothing at all (it holds the connection until released)."""

    def __init__(self) -> None:
        self.answer = Answer()
        #: path -> answer, for the paths that answer differently from ``answer``
        self.routes: dict[str, Answer] = {}
        self.release = threading.Event()
        self.requests = 0
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def _serve(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                if length:
                    self.rfile.read(length)
                server.requests += 1
                answer = server.routes.get(self.path.partition("?")[0], server.answer)
                if answer.stall:
                    server.release.wait(30)
                    return
                payload = json.dumps(answer.body).encode()
                self.send_response(answer.status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(payload)))
                for key, value in answer.headers.items():
                    self.send_header(key, value)
                self.end_headers()
                self.wfile.write(payload)

            do_GET = do_POST = do_PUT = _serve

            def log_message(self, format: str, *args: Any) -> None:
                return

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.port = self.httpd.server_address[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def set(self, status: int = 200, body: object = None, **headers: str) -> None:
        """Answer every request with ``status``, ``body`` (JSON) and ``headers`` from now on."""
        self.answer = Answer(status, {} if body is None else body, headers)

    def stall(self) -> None:
        """Accept every request and never answer it (until teardown)."""
        self.answer = Answer(stall=True)

    def stop(self) -> None:
        self.release.set()
        self.httpd.shutdown()
        self.httpd.server_close()
