"""A local model provider on 127.0.0.1 that speaks the OpenAI and Anthropic HTTP APIs.

The real ``openai`` and ``anthropic`` clients talk to it over HTTP: JSON bodies for whole
responses, server-sent events for streams, in each API's own framing (OpenAI: ``data:`` lines
ending with ``data: [DONE]``; Anthropic: ``event:`` + ``data:`` pairs). A test scripts the
answers in order and reads back the requests the clients sent.
"""

from __future__ import annotations

import json
import threading
from collections import deque
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

__all__ = ["Answer", "ProviderServer"]


@dataclass
class Answer:
    """One scripted answer: a JSON body, or a stream of (event name or None, JSON body)."""

    body: dict[str, Any] | None = None
    events: list[tuple[str | None, dict[str, Any]]] = field(default_factory=list)
    status: int = 200


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.answers: deque[Answer] = deque()
        self.requests: list[tuple[str, dict[str, Any]]] = []
        self.lock = threading.Lock()


class _Handler(BaseHTTPRequestHandler):
    server: _Server
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:
        return  # quiet: pytest shows failures, not access logs

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        request = json.loads(self.rfile.read(length) or b"{}")
        with self.server.lock:
            self.server.requests.append((self.path, request))
            answer = self.server.answers.popleft() if self.server.answers else None
        if answer is None:
            self._json(500, {"error": {"message": f"no answer scripted for {self.path}"}})
        elif answer.body is not None:
            self._json(answer.status, answer.body)
        else:
            self._stream(answer.events, openai_style=self.path.endswith("/chat/completions"))

    def _json(self, status: int, body: dict[str, Any]) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _stream(
        self, events: list[tuple[str | None, dict[str, Any]]], *, openai_style: bool
    ) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("Cache-Control", "no-cache")
        self.send_header("Connection", "close")
        self.end_headers()
        for name, body in events:
            head = f"event: {name}\n" if name else ""
            self.wfile.write(f"{head}data: {json.dumps(body)}\n\n".encode())
            self.wfile.flush()
        if openai_style:
            self.wfile.write(b"data: [DONE]\n\n")
        self.wfile.flush()
        self.close_connection = True


class ProviderServer:
    """Start with :meth:`start`, script with :meth:`answer`, stop with :meth:`stop`."""

    def __init__(self) -> None:
        self._server = _Server()
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        """The base address, e.g. ``http://127.0.0.1:40123``."""
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}"

    @property
    def requests(self) -> list[tuple[str, dict[str, Any]]]:
        """(path, JSON body) of every request received, in order."""
        with self._server.lock:
            return list(self._server.requests)

    def answer(self, *answers: Answer) -> None:
        """Queue answers for the next requests, whatever their path."""
        with self._server.lock:
            self._server.answers.extend(answers)

    def start(self) -> ProviderServer:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=10)
