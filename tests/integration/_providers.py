"""The local model provider of the tests: 127.0.0.1, the OpenAI and Anthropic wire formats.

The real ``openai`` and ``anthropic`` clients are pointed at it with ``base_url``
(``openai_url``, ``anthropic_url``): it answers ``POST /v1/chat/completions``,
``/v1/responses``, ``/v1/embeddings`` (OpenAI) and ``/v1/messages`` (Anthropic) with the JSON
bodies and the Server-Sent Event streams those APIs send (the event shapes are the ones the SDKs'
stream parsers read: ``data: ...`` lines ending in ``data: [DONE]`` for chat completions, named
``event:`` lines for responses and messages).

One script, consumed in order, one entry per request whatever its path:

- ``provider.fail("429", retry_after=...)``: a failure — a 429 with ``retry-after``, a 500 or a
  503, a 400 whose body says the context length was exceeded (each API's own error body), or a
  stall past the client's timeout;
- ``provider.reply(Reply(body=...), Reply(events=[...]))``: an exact answer the test wrote (a
  JSON body with its status, or a stream of events), for responses the default cannot give.

When the script is empty, requests get the default answer (:class:`Answer`, :class:`Tokens`).
Every request is recorded (``provider.requests``), so a test can count the SDK's retries. A
:class:`SilentServer` accepts TCP connections and never answers (a stalled vector store, REST or
gRPC). The demo ships its own, smaller provider (``chainsight.tools.demo_sim``): the one here
knows more APIs and more failures than the demo needs.
"""

from __future__ import annotations

import json
import socket
import threading
import time
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Literal

from tests.integration._servers import HOST

__all__ = ["Answer", "Failure", "FakeProvider", "Reply", "SilentServer", "Tokens", "wait_for"]

Failure = Literal["429", "500", "503", "context_length", "stall"]


@dataclass(frozen=True)
class Tokens:
    """The usage every successful answer reports (the OpenTelemetry convention: ``input``
    counts every input token, cached reads and cache writes included)."""

    input: int = 120
    cached: int = 40
    cache_write: int = 10
    output: int = 30
    reasoning: int = 8


@dataclass(frozen=True)
class Answer:
    """What the provider says: the text (streamed as one chunk per word) and the model."""

    text: str = "The order ships on Monday from the Leeds warehouse."
    model: str = "gpt-4o-mini-2024-07-18"
    anthropic_model: str = "claude-3-5-haiku-20241022"


@dataclass
class Reply:
    """One exact answer: a JSON ``body`` with ``status``, or ``events`` streamed as
    server-sent events, each (event name or None, JSON body); a chat-completions stream ends
    with ``data: [DONE]``."""

    body: dict[str, Any] | None = None
    events: list[tuple[str | None, dict[str, Any]]] = field(default_factory=list)
    status: int = 200


@dataclass
class RequestSeen:
    """One request the provider received."""

    path: str
    body: dict[str, Any]
    status: int


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, provider: FakeProvider) -> None:
        super().__init__((HOST, 0), _Handler)
        self.provider = provider


class FakeProvider:
    """The provider: ``start()``, point a client at ``openai_url``/``anthropic_url``, ``stop()``."""

    def __init__(
        self,
        tokens: Tokens | None = None,
        answer: Answer | None = None,
        chunk_delay: float = 0.0,
    ) -> None:
        """``chunk_delay`` seconds pass between two streamed chunks."""
        self.tokens = tokens or Tokens()
        self.answer = answer or Answer()
        self.chunk_delay = chunk_delay
        self.stall_seconds = 5.0
        self._script: deque[tuple[Failure, float] | Reply] = deque()
        self._lock = threading.Lock()
        self.requests: list[RequestSeen] = []
        self._stop = threading.Event()
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None

    # --- control -----------------------------------------------------------------------------
    def start(self) -> FakeProvider:
        """Listen on a free port of 127.0.0.1 and serve on a thread."""
        self._server = _Server(self)
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving; stalled handlers are released."""
        self._stop.set()
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()

    @property
    def port(self) -> int:
        """The port it listens on."""
        assert self._server is not None, "start() the provider first"
        return int(self._server.server_address[1])

    @property
    def openai_url(self) -> str:
        """``base_url`` for ``openai.OpenAI``."""
        return f"http://{HOST}:{self.port}/v1"

    @property
    def anthropic_url(self) -> str:
        """``base_url`` for ``anthropic.Anthropic`` (the SDK adds ``/v1/messages``)."""
        return f"http://{HOST}:{self.port}"

    @property
    def url(self) -> str:
        """The base address, ``http://127.0.0.1:<port>`` (the OpenAI client wants ``/v1``)."""
        return f"http://{HOST}:{self.port}"

    def fail(self, failure: Failure, times: int = 1, retry_after: float = 0.0) -> None:
        """The next ``times`` requests fail this way (then the script goes on)."""
        with self._lock:
            self._script.extend([(failure, retry_after)] * times)

    def reply(self, *replies: Reply) -> None:
        """The next requests get these exact answers, in order (then the script goes on)."""
        with self._lock:
            self._script.extend(replies)

    def next_scripted(self) -> tuple[Failure, float] | Reply | None:
        """The scripted answer of the request arriving now, if any."""
        with self._lock:
            return self._script.popleft() if self._script else None

    def record(self, seen: RequestSeen) -> None:
        """Remember a request (handler threads call this)."""
        with self._lock:
            self.requests.append(seen)

    def count(self, path: str) -> int:
        """How many requests arrived at ``path`` (retries included)."""
        with self._lock:
            return sum(1 for r in self.requests if r.path == path)

    def stall(self) -> None:
        """Hold the handler thread until the stall is over or the provider stops."""
        self._stop.wait(self.stall_seconds)

    def pause(self) -> None:
        """The pause between two streamed chunks."""
        if self.chunk_delay:
            self._stop.wait(self.chunk_delay)

    # --- bodies ------------------------------------------------------------------------------
    def words(self) -> list[str]:
        """The answer cut into the chunks a stream sends."""
        parts = self.answer.text.split(" ")
        return [p if i == 0 else " " + p for i, p in enumerate(parts)]


# --- the wire formats ----------------------------------------------------------------------------


def openai_usage(tokens: Tokens) -> dict[str, Any]:
    """Chat completions usage: cached tokens under prompt_tokens_details."""
    return {
        "prompt_tokens": tokens.input,
        "completion_tokens": tokens.output,
        "total_tokens": tokens.input + tokens.output,
        "prompt_tokens_details": {"cached_tokens": tokens.cached, "audio_tokens": 0},
        "completion_tokens_details": {"reasoning_tokens": tokens.reasoning, "audio_tokens": 0},
    }


def chat_completion(p: FakeProvider) -> dict[str, Any]:
    """A chat.completion object."""
    return {
        "id": "chatcmpl-local-1",
        "object": "chat.completion",
        "created": 1733400000,
        "model": p.answer.model,
        "system_fingerprint": "fp_local",
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": p.answer.text, "refusal": None},
                "logprobs": None,
                "finish_reason": "stop",
            }
        ],
        "usage": openai_usage(p.tokens),
    }


def chat_chunks(p: FakeProvider, include_usage: bool) -> Iterator[str]:
    """chat.completion.chunk events; the usage chunk (empty choices) when asked for."""
    base = {
        "id": "chatcmpl-local-1",
        "object": "chat.completion.chunk",
        "created": 1733400000,
        "model": p.answer.model,
        "system_fingerprint": "fp_local",
    }

    def chunk(delta: dict[str, Any], finish: str | None) -> str:
        choice = {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}
        body: dict[str, Any] = {**base, "choices": [choice]}
        if include_usage:
            body["usage"] = None
        return f"data: {json.dumps(body)}\n\n"

    yield chunk({"role": "assistant", "content": ""}, None)
    for word in p.words():
        yield chunk({"content": word}, None)
    yield chunk({}, "stop")
    if include_usage:
        yield f"data: {json.dumps({**base, 'choices': [], 'usage': openai_usage(p.tokens)})}\n\n"
    yield "data: [DONE]\n\n"


def response_object(p: FakeProvider, status: str = "completed") -> dict[str, Any]:
    """A Responses API response object."""
    t = p.tokens
    done = status == "completed"
    return {
        "id": "resp_local_1",
        "object": "response",
        "created_at": 1733400000,
        "status": status,
        "model": p.answer.model,
        "output": [
            {
                "type": "message",
                "id": "msg_local_1",
                "status": "completed",
                "role": "assistant",
                "content": [{"type": "output_text", "text": p.answer.text, "annotations": []}],
            }
        ]
        if done
        else [],
        "parallel_tool_calls": True,
        "tool_choice": "auto",
        "tools": [],
        "usage": {
            "input_tokens": t.input,
            "input_tokens_details": {"cached_tokens": t.cached},
            "output_tokens": t.output,
            "output_tokens_details": {"reasoning_tokens": t.reasoning},
            "total_tokens": t.input + t.output,
        }
        if done
        else None,
    }


def response_events(p: FakeProvider) -> Iterator[str]:
    """The named events of a streamed response, as the Responses API sends them."""
    seq = iter(range(1000))

    def event(kind: str, **fields: Any) -> str:
        body = {"type": kind, "sequence_number": next(seq), **fields}
        return f"event: {kind}\ndata: {json.dumps(body)}\n\n"

    yield event("response.created", response=response_object(p, "in_progress"))
    item = {"type": "message", "id": "msg_local_1", "status": "in_progress", "role": "assistant"}
    yield event("response.output_item.added", output_index=0, item={**item, "content": []})
    part = {"type": "output_text", "text": "", "annotations": []}
    yield event(
        "response.content_part.added",
        item_id="msg_local_1",
        output_index=0,
        content_index=0,
        part=part,
    )
    for word in p.words():
        yield event(
            "response.output_text.delta",
            item_id="msg_local_1",
            output_index=0,
            content_index=0,
            delta=word,
            logprobs=[],
        )
    yield event(
        "response.output_text.done",
        item_id="msg_local_1",
        output_index=0,
        content_index=0,
        text=p.answer.text,
        logprobs=[],
    )
    full = {"type": "output_text", "text": p.answer.text, "annotations": []}
    yield event(
        "response.content_part.done",
        item_id="msg_local_1",
        output_index=0,
        content_index=0,
        part=full,
    )
    done_item = {**item, "status": "completed", "content": [full]}
    yield event("response.output_item.done", output_index=0, item=done_item)
    yield event("response.completed", response=response_object(p))


def embeddings(p: FakeProvider, body: dict[str, Any]) -> dict[str, Any]:
    """An embeddings list: one vector per input."""
    inputs = body.get("input")
    count = len(inputs) if isinstance(inputs, list) else 1
    return {
        "object": "list",
        "data": [
            {"object": "embedding", "index": i, "embedding": [0.1 * (i + 1), 0.2, 0.3]}
            for i in range(count)
        ],
        "model": "text-embedding-3-small",
        "usage": {"prompt_tokens": 8 * count, "total_tokens": 8 * count},
    }


def anthropic_usage(t: Tokens, output: int) -> dict[str, Any]:
    """Anthropic usage: input_tokens excludes cache reads and cache writes."""
    return {
        "input_tokens": t.input - t.cached - t.cache_write,
        "cache_read_input_tokens": t.cached,
        "cache_creation_input_tokens": t.cache_write,
        "output_tokens": output,
    }


def message(p: FakeProvider) -> dict[str, Any]:
    """An Anthropic message."""
    return {
        "id": "msg_local_1",
        "type": "message",
        "role": "assistant",
        "model": p.answer.anthropic_model,
        "content": [{"type": "text", "text": p.answer.text}],
        "stop_reason": "end_turn",
        "stop_sequence": None,
        "usage": anthropic_usage(p.tokens, p.tokens.output),
    }


def message_events(p: FakeProvider) -> Iterator[str]:
    """The named events of a streamed Anthropic message."""

    def event(kind: str, **fields: Any) -> str:
        return f"event: {kind}\ndata: {json.dumps({'type': kind, **fields})}\n\n"

    start = {**message(p), "content": [], "stop_reason": None}
    start["usage"] = anthropic_usage(p.tokens, 1)
    yield event("message_start", message=start)
    yield event("content_block_start", index=0, content_block={"type": "text", "text": ""})
    yield event("ping")
    for word in p.words():
        yield event("content_block_delta", index=0, delta={"type": "text_delta", "text": word})
    yield event("content_block_stop", index=0)
    yield event(
        "message_delta",
        delta={"stop_reason": "end_turn", "stop_sequence": None},
        usage={"output_tokens": p.tokens.output},
    )
    yield event("message_stop")


_OPENAI_CONTEXT = {
    "error": {
        "message": "This model's maximum context length is 128000 tokens. However, your "
        "messages resulted in 210345 tokens. Please reduce the length of the messages.",
        "type": "invalid_request_error",
        "param": "messages",
        "code": "context_length_exceeded",
    }
}
_ANTHROPIC_CONTEXT = {
    "type": "error",
    "error": {
        "type": "invalid_request_error",
        "message": "prompt is too long: 210345 tokens > 200000 maximum",
    },
}


def _error_body(anthropic: bool, status: int, message_text: str, kind: str) -> dict[str, Any]:
    if anthropic:
        return {"type": "error", "error": {"type": kind, "message": message_text}}
    return {"error": {"message": message_text, "type": kind, "param": None, "code": None}}


def _event_text(event: tuple[str | None, dict[str, Any]]) -> str:
    name, body = event
    return (f"event: {name}\n" if name else "") + f"data: {json.dumps(body)}\n\n"


class _Handler(BaseHTTPRequestHandler):
    server: _Server
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:
        """Quiet: the tests read ``provider.requests``."""

    def do_POST(self) -> None:
        p = self.server.provider
        length = int(self.headers.get("content-length") or 0)
        raw = self.rfile.read(length) if length else b"{}"
        try:
            body = json.loads(raw or b"{}")
        except ValueError:
            body = {}
        path = self.path.split("?", 1)[0]
        anthropic = path.endswith("/messages")
        scripted = p.next_scripted()
        if isinstance(scripted, Reply):
            p.record(RequestSeen(path, body, scripted.status))
            if scripted.body is not None:
                self._json(scripted.status, scripted.body)
            else:
                done = ["data: [DONE]\n\n"] if path.endswith("/chat/completions") else []
                self._sse(p, iter([*map(_event_text, scripted.events), *done]))
            return
        if scripted is not None:
            failure, retry_after = scripted
            p.record(RequestSeen(path, body, 0 if failure == "stall" else 1))
            self._fail(p, failure, retry_after, anthropic)
            return
        p.record(RequestSeen(path, body, 200))
        stream = body.get("stream") is True
        if path.endswith("/chat/completions"):
            if stream:
                options = body.get("stream_options") or {}
                self._sse(p, chat_chunks(p, bool(options.get("include_usage"))))
            else:
                self._json(200, chat_completion(p))
        elif path.endswith("/responses"):
            self._sse(p, response_events(p)) if stream else self._json(200, response_object(p))
        elif path.endswith("/embeddings"):
            self._json(200, embeddings(p, body))
        elif anthropic:
            self._sse(p, message_events(p)) if stream else self._json(200, message(p))
        else:
            self._json(404, _error_body(False, 404, f"no route {path}", "not_found_error"))

    def _fail(self, p: FakeProvider, failure: Failure, retry_after: float, anthropic: bool) -> None:
        if failure == "stall":
            p.stall()
            self.close_connection = True
            return
        if failure == "429":
            kind = "rate_limit_error" if anthropic else "rate_limit_exceeded"
            body = _error_body(anthropic, 429, "Rate limit reached; try again later.", kind)
            self._json(429, body, {"retry-after": f"{retry_after:g}"})
        elif failure == "500":
            kind = "api_error" if anthropic else "server_error"
            self._json(500, _error_body(anthropic, 500, "The server had an error.", kind))
        elif failure == "503":
            kind = "overloaded_error" if anthropic else "server_error"
            self._json(503, _error_body(anthropic, 503, "The server is overloaded.", kind))
        else:
            self._json(400, _ANTHROPIC_CONTEXT if anthropic else _OPENAI_CONTEXT)

    def _json(
        self, status: int, body: dict[str, Any], headers: dict[str, str] | None = None
    ) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(data)))
        self.send_header("x-request-id", "req_local_1")
        for key, value in (headers or {}).items():
            self.send_header(key, value)
        self.end_headers()
        self.wfile.write(data)

    def _sse(self, p: FakeProvider, events: Iterator[str]) -> None:
        self.send_response(200)
        self.send_header("content-type", "text/event-stream")
        self.send_header("cache-control", "no-cache")
        self.send_header("transfer-encoding", "chunked")
        self.end_headers()
        try:
            for i, text in enumerate(events):
                if i:
                    p.pause()
                data = text.encode()
                self.wfile.write(f"{len(data):x}\r\n".encode() + data + b"\r\n")
                self.wfile.flush()
            self.wfile.write(b"0\r\n\r\n")
            self.wfile.flush()
        except OSError:  # BrokenPipe, ConnectionReset: the client closed the stream early
            self.close_connection = True  # the client closed the stream early


class SilentServer:
    """Accepts TCP connections on 127.0.0.1 and never answers: a stalled server."""

    def __init__(self) -> None:
        """Not listening until :meth:`start`."""
        self._sock: socket.socket | None = None
        self._held: list[socket.socket] = []
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> SilentServer:
        """Listen on a free port."""
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.bind((HOST, 0))
        sock.listen(16)
        sock.settimeout(0.1)
        self._sock = sock
        self._thread = threading.Thread(target=self._accept, daemon=True)
        self._thread.start()
        return self

    @property
    def port(self) -> int:
        """The port it listens on."""
        assert self._sock is not None, "start() the server first"
        return int(self._sock.getsockname()[1])

    def _accept(self) -> None:
        assert self._sock is not None
        while not self._stop.is_set():
            try:
                conn, _ = self._sock.accept()
            except (TimeoutError, OSError):
                continue
            self._held.append(conn)  # held open, never read from or written to

    def stop(self) -> None:
        """Close every held connection and the listening socket."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        for conn in self._held:
            conn.close()
        if self._sock is not None:
            self._sock.close()


def wait_for(check: Any, timeout: float = 20.0) -> bool:
    """Poll ``check()`` until it is true or ``timeout`` seconds pass (generous on busy CI)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return True
        time.sleep(0.02)
    return bool(check())
