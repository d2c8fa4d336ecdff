"""The simulated world behind ``chainsight demo``: fault plan, clock, and a model provider that
speaks the OpenAI chat-completions wire format over loopback HTTP.

The demo's application calls this provider with the real ``openai`` SDK (``AsyncOpenAI`` with
``base_url`` pointing here), so every fault reaches the app as the SDK's own exception, raised
from a real HTTP exchange:

- ``provider-ratelimit``: HTTP 429 with ``retry-after`` and OpenAI's error body
  (``openai.RateLimitError``);
- ``provider-timeout``: the server sends nothing until the client gives up
  (``openai.APITimeoutError``);
- a ``temperature`` above 2 (the ``provider-bad-request`` config push): HTTP 400
  ``invalid_request_error`` (``openai.BadRequestError``);
- 0.2% of calls, even healthy: HTTP 503 (``openai.InternalServerError``), as real providers do;
- ``provider-slow`` and ``bad-model-output``: a slower stream, or a broken answer, both HTTP 200.

The server is a small asyncio HTTP/1.1 server on 127.0.0.1 (keep-alive, JSON bodies,
server-sent events in chunked transfer encoding), run on the demo's own event loop: no thread,
no port to configure. Whether a call times out is decided here, in simulated time, and the
server then stalls until the client hangs up: on a busy machine a late event loop must not turn
an answer that was due in time into a timeout.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import random
import re
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final

__all__ = [
    "CLIENT_TIMEOUT",
    "FAULTS",
    "MODEL",
    "Clock",
    "FaultPlan",
    "SimProvider",
]

MODEL: Final = "sim-gpt-4o"
#: The app's client timeout, in simulated seconds.
CLIENT_TIMEOUT: Final = 2.5
# The client timeout never drops below this many real seconds, however fast the clock runs:
# shorter, a busy machine's late event loop would time out answers that were due in time.
MIN_REAL_TIMEOUT: Final = 2.0
# Words per streamed chunk. Each chunk is a pydantic object the SDK builds: fewer, larger
# chunks keep nine demos at once (the acceptance test) within a busy 2-core machine.
_WORDS_PER_CHUNK: Final = 8

#: Every fault ``--fault`` accepts, with what it simulates.
FAULTS: Final[Mapping[str, str]] = {
    "none": "healthy traffic",
    "provider-timeout": "the model provider stops answering; calls time out",
    "provider-ratelimit": "the model provider answers HTTP 429 Too Many Requests",
    "provider-slow": "the model provider answers, but four times slower",
    "vector-store-down": "the vector store refuses connections; retrieval falls back to BM25",
    "bad-model-output": "the model answers with malformed or incomplete JSON",
    "app-bug": "a new prompt template reads a ticket field that some tickets lack (KeyError)",
    "provider-bad-request": "a config push sends temperature=2.5; the provider answers HTTP 400",
}


@dataclass
class FaultPlan:
    """Which faults are active and for what fraction of calls; consulted by the simulation."""

    rates: dict[str, float] = field(default_factory=dict)
    active: bool = False
    rng: random.Random = field(default_factory=random.Random)

    def hits(self, fault: str) -> bool:
        """True when ``fault`` is active and this call is among the affected fraction."""
        rate = self.rates.get(fault)
        return self.active and rate is not None and self.rng.random() < rate


@dataclass(frozen=True)
class Clock:
    """Simulated delays, shortened by ``time_scale`` (2.0 = everything twice as fast)."""

    time_scale: float = 1.0

    async def sleep(self, seconds: float) -> None:
        """Sleep for ``seconds`` of simulated time."""
        await asyncio.sleep(seconds / self.time_scale)

    def real(self, seconds: float) -> float:
        """Simulated seconds as wall-clock seconds."""
        return seconds / self.time_scale

    def client_timeout(self) -> float:
        """The app's client timeout in wall-clock seconds (see ``MIN_REAL_TIMEOUT``)."""
        return max(self.real(CLIENT_TIMEOUT), MIN_REAL_TIMEOUT)


class _Hangup(Exception):
    """The client closed the connection; the handler stops."""


_REASONS: Final = {200: "OK", 400: "Bad Request", 404: "Not Found", 429: "Too Many Requests",
                   503: "Service Unavailable"}  # fmt: skip


def _error(message: str, kind: str, param: str | None = None, code: str | None = None) -> bytes:
    return json.dumps({"error": {"message": message, "type": kind, "param": param, "code": code}})\
        .encode()  # fmt: skip


class SimProvider:
    """The simulated provider: ``await start()`` gives the ``base_url``, ``await stop()``.

    Log-normal time to first chunk (median ~0.25 s), then ~25 ms per chunk of eight words.
    ``statuses`` counts the answers by HTTP status (0: stalled until the client hung up).
    """

    base_error_rate: Final = 0.002

    def __init__(self, faults: FaultPlan, clock: Clock) -> None:
        self._faults = faults
        self._clock = clock
        self._server: asyncio.Server | None = None
        self._connections: dict[asyncio.Task[Any], asyncio.StreamWriter] = {}
        self.statuses: Counter[int] = Counter()

    async def start(self) -> str:
        """Listen on a free port of 127.0.0.1; return the ``base_url`` for the OpenAI client."""
        self._server = await asyncio.start_server(self._connection, "127.0.0.1", 0)
        port = self._server.sockets[0].getsockname()[1]
        return f"http://127.0.0.1:{port}/v1"

    async def stop(self) -> None:
        """Stop listening and end every open connection (stalled ones included)."""
        if self._server is not None:
            self._server.close()
        # Closing the transports ends each handler's read (not cancelling the tasks: asyncio
        # logs a connection task that ends cancelled as an error).
        tasks = list(self._connections.items())
        for _, writer in tasks:
            writer.close()
        if tasks:
            await asyncio.gather(*(task for task, _ in tasks), return_exceptions=True)
        if self._server is not None:
            await self._server.wait_closed()

    # --- HTTP/1.1 -------------------------------------------------------------------------
    async def _connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        if task is not None:
            self._connections[task] = writer
        try:
            while await self._exchange(reader, writer):
                pass
        except (_Hangup, ConnectionError, asyncio.IncompleteReadError, asyncio.LimitOverrunError):
            pass  # the client went away: nothing left to answer
        finally:
            if task is not None:
                self._connections.pop(task, None)
            writer.close()

    async def _exchange(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> bool:
        """Read one request and answer it; False when the connection is to be closed."""
        head = await reader.readuntil(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        method, target = [*lines[0].split(" "), "", ""][:2]
        headers = {
            k.strip().lower(): v.strip()
            for k, v in (line.split(":", 1) for line in lines[1:] if ":" in line)
        }
        length = int(headers.get("content-length") or 0)
        raw = await reader.readexactly(length) if length else b"{}"
        if method != "POST" or target.split("?")[0] != "/v1/chat/completions":
            await self._json(writer, 404, _error(f"no route {method} {target}", "not_found"))
            return True
        try:
            body = json.loads(raw)
        except ValueError:
            await self._json(writer, 400, _error("the body is not JSON", "invalid_request_error"))
            return True
        return await self._chat(reader, writer, body)

    async def _json(
        self, writer: asyncio.StreamWriter, status: int, data: bytes, extra: str = ""
    ) -> None:
        self.statuses[status] += 1
        writer.write(
            f"HTTP/1.1 {status} {_REASONS.get(status, 'Error')}\r\n"
            f"content-type: application/json\r\ncontent-length: {len(data)}\r\n"
            f"x-request-id: req_sim_{sum(self.statuses.values())}\r\n{extra}\r\n".encode()
            + data
        )
        await writer.drain()

    # --- the provider's behaviour ---------------------------------------------------------
    async def _chat(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, body: dict[str, Any]
    ) -> bool:
        faults, rng, clock = self._faults, self._faults.rng, self._clock
        temperature = body.get("temperature", 1.0)
        if isinstance(temperature, (int, float)) and temperature > 2.0:
            await clock.sleep(0.03)
            message = f"Invalid 'temperature': {temperature} is greater than the maximum of 2"
            await self._json(writer, 400, _error(message, "invalid_request_error", "temperature"))
            return True
        if faults.hits("provider-ratelimit"):
            await clock.sleep(0.02)
            message = f"Rate limit reached for {MODEL}: 10000 tokens per minute. Try again later."
            retry = f"retry-after: {clock.real(2.0):g}\r\n"
            await self._json(writer, 429, _error(message, "requests", None, "rate_limit_exceeded"),
                             retry)  # fmt: skip
            return True
        if rng.random() < self.base_error_rate:
            await clock.sleep(0.05)
            await self._json(writer, 503, _error("The server is overloaded.", "server_error"))
            return True
        slow = 4.0 if faults.hits("provider-slow") else 1.0
        first = rng.lognormvariate(math.log(0.25), 0.3) * slow
        if faults.hits("provider-timeout") or first >= CLIENT_TIMEOUT:
            await self._stall(reader)
            return False
        await clock.sleep(first)
        messages = body.get("messages") or []
        text = _reply(messages, broken=faults.hits("bad-model-output"), rng=rng)
        await self._stream(writer, text, messages, bool(body.get("stream")), slow)
        return True

    async def _stall(self, reader: asyncio.StreamReader) -> None:
        """Send nothing until the client hangs up (it times out first), or for 4 timeouts."""
        self.statuses[0] += 1
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(reader.read(1), 4 * self._clock.client_timeout())

    async def _stream(
        self,
        writer: asyncio.StreamWriter,
        text: str,
        messages: Sequence[Mapping[str, Any]],
        stream: bool,
        slow: float,
    ) -> None:
        words = text.split(" ")
        prompt = sum(len(str(m.get("content", "")).split()) for m in messages) * 4 // 3
        completion = len(words) * 4 // 3 + 1
        usage = {"prompt_tokens": prompt, "completion_tokens": completion,
                 "total_tokens": prompt + completion,
                 "prompt_tokens_details": {"cached_tokens": 0}}  # fmt: skip
        if not stream:
            choice = {"index": 0, "message": {"role": "assistant", "content": text},
                      "finish_reason": "stop"}  # fmt: skip
            await self._json(writer, 200, json.dumps(_envelope("chat.completion", [choice], usage))
                             .encode())  # fmt: skip
            return
        self.statuses[200] += 1
        writer.write(b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\n"
                     b"cache-control: no-cache\r\ntransfer-encoding: chunked\r\n\r\n")  # fmt: skip
        for i in range(0, len(words), _WORDS_PER_CHUNK):
            if i:
                await self._clock.sleep(self._faults.rng.uniform(0.015, 0.035) * slow)
            delta = {"content": " ".join(words[i : i + _WORDS_PER_CHUNK]) + " "}
            await _event(writer, _envelope("chat.completion.chunk", [_delta(delta, None)], None))
        await _event(writer, _envelope("chat.completion.chunk", [_delta({}, "stop")], None))
        await _event(writer, _envelope("chat.completion.chunk", [], usage))
        writer.write(b"e\r\ndata: [DONE]\n\n\r\n0\r\n\r\n")
        await writer.drain()


def _envelope(kind: str, choices: list[Any], usage: dict[str, Any] | None) -> dict[str, Any]:
    return {"id": "chatcmpl-sim", "object": kind, "created": 1733400000, "model": MODEL,
            "choices": choices, "usage": usage}  # fmt: skip


def _delta(delta: dict[str, Any], finish: str | None) -> dict[str, Any]:
    return {"index": 0, "delta": delta, "finish_reason": finish}


async def _event(writer: asyncio.StreamWriter, body: dict[str, Any]) -> None:
    """One server-sent event, as one chunk of the chunked body."""
    data = f"data: {json.dumps(body)}\n\n".encode()
    writer.write(f"{len(data):x}\r\n".encode() + data + b"\r\n")
    await writer.drain()


def _reply(messages: Sequence[Mapping[str, Any]], *, broken: bool, rng: random.Random) -> str:
    """The model's JSON answer from the articles in the last message (or a broken one)."""
    context = str(messages[-1].get("content", "")) if messages else ""
    ids = re.findall(r"\[(kb-\d+)\]", context)[:2]
    sentence = re.search(r"\] [^:]*: ([^.]*\.)", context)
    answer = sentence.group(1) if sentence else "Please contact support."
    if broken:
        choice = rng.randrange(3)
        if choice == 0:
            return json.dumps({"answer": answer, "citations": ids})[:-12]  # cut off
        if choice == 1:
            return json.dumps({"reply": answer})  # wrong field
        return f"Sure! {answer}"  # prose instead of JSON
    return json.dumps({"answer": answer, "citations": ids})
