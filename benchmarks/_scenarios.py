"""Whole-request scenarios: exporter down or slow, 1,000 concurrent requests, import cost.

These measure what a user would notice — request latency percentiles, throughput, start-up time
and memory — rather than nanoseconds per call.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import random
import socket
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Awaitable, Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Final

from prometheus_client import CollectorRegistry

import chainsight
from benchmarks._harness import BenchmarkError, percentile
from benchmarks._micro import R_ATTRIBUTES, Pipeline
from chainsight import _names as n

__all__ = [
    "AI_CHAIN_IO_S",
    "OUTAGE_KINDS",
    "concurrency",
    "exporter_outage",
    "import_cost",
    "outage_phase",
    "quiet_sdk_logs",
    "uniform_io",
]

FAKE_WORK_S: Final = 0.005


# --- a fake 5 ms request of six stages -----------------------------------------------------


@chainsight.traced_stage("retrieval", name="fake_retrieve", system="qdrant", collection="docs")
def _retrieve() -> list[str]:
    return ["doc-1", "doc-2"]


@chainsight.traced_stage("rerank", name="fake_rerank")
def _rerank(docs: list[str]) -> list[str]:
    return docs[:1]


@chainsight.traced_stage("prompt", name="fake_prompt", prompt_name="answer")
def _prompt(docs: list[str]) -> str:
    return "answer from " + docs[0]


@chainsight.traced_stage("model", name="fake_model", provider="openai", model="gpt-4o")
def _model(prompt: str) -> str:
    time.sleep(FAKE_WORK_S)  # stands in for the provider round trip
    return prompt.upper()


@chainsight.traced_stage("validation", name="fake_validate", validator="non_empty")
def _validate(answer: str) -> bool:
    return bool(answer)


@chainsight.traced_stage("tool", name="fake_tool", tool="notify")
def _tool(answer: str) -> None:
    return None


def fake_request() -> None:
    """One request: retrieve, rerank, prompt, model (5 ms), validate, tool."""
    with chainsight.request("bench_fake", feature="bench"):
        docs = _rerank(_retrieve())
        answer = _model(_prompt(docs))
        _validate(answer)
        _tool(answer)


def _drive(duration_s: float, threads: int, rate_per_thread: float) -> list[float]:
    """Run fake requests from ``threads`` paced threads; return request latencies in seconds."""
    period = 1.0 / rate_per_thread
    latencies: list[list[float]] = [[] for _ in range(threads)]
    deadline = time.perf_counter() + duration_s

    def worker(out: list[float]) -> None:
        # At least one request per thread: on a busy machine a thread may first run after the
        # deadline, and a phase with no request measures nothing.
        next_at = time.perf_counter()
        while True:
            start = time.perf_counter()
            fake_request()
            out.append(time.perf_counter() - start)
            next_at += period
            if next_at >= deadline:
                break
            pause = next_at - time.perf_counter()
            if pause > 0:
                time.sleep(pause)

    pool = [threading.Thread(target=worker, args=(out,), daemon=True) for out in latencies]
    for thread in pool:
        thread.start()
    for thread in pool:
        thread.join()
    return [value for out in latencies for value in out]


class _CountingHandler(logging.Handler):
    """Counts what the OpenTelemetry SDK tells the app (its log lines) instead of printing it."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.count = 0

    def emit(self, record: logging.LogRecord) -> None:
        self.count += 1


_SDK_LOGS: Final = _CountingHandler()


def quiet_sdk_logs() -> None:
    """Count the SDK's warnings instead of printing them, for the rest of the process.

    Retired exporters keep retrying in background threads after their phase ends, so the
    handler cannot be removed when a phase does.
    """
    logger = logging.getLogger("opentelemetry")
    if _SDK_LOGS not in logger.handlers:
        logger.addHandler(_SDK_LOGS)
        logger.propagate = False


@contextlib.contextmanager
def _closed_port() -> Iterator[int]:
    """A loopback port that refuses connections: bound (so nobody else takes it), not listening."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        sock.bind(("127.0.0.1", 0))
        yield int(sock.getsockname()[1])
    finally:
        sock.close()


class _SlowReceiver(ThreadingHTTPServer):
    """A real HTTP server that reads each OTLP request and answers 200 only after ``delay``."""

    daemon_threads = True

    def __init__(self, delay: float) -> None:
        self.delay = delay
        self.stopping = threading.Event()
        self.requests = 0
        super().__init__(("127.0.0.1", 0), _SlowHandler)


class _SlowHandler(BaseHTTPRequestHandler):
    server: _SlowReceiver

    def do_POST(self) -> None:
        try:
            self.rfile.read(int(self.headers.get("Content-Length") or 0))
            self.server.requests += 1
            if self.server.stopping.wait(self.server.delay):
                return
            self.send_response(200)
            self.send_header("Content-Type", "application/x-protobuf")
            self.send_header("Content-Length", "0")
            self.end_headers()
        except OSError:  # the exporter gave up and closed the connection first
            return

    def log_message(self, format: str, *args: Any) -> None:
        return


@contextlib.contextmanager
def _slow_receiver(delay: float) -> Iterator[_SlowReceiver]:
    server = _SlowReceiver(delay)
    thread = threading.Thread(target=server.serve_forever, name="bench-slow-otlp", daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.stopping.set()
        server.shutdown()
        server.server_close()
        thread.join(5)


def _failures(registry: CollectorRegistry) -> float:
    value = registry.get_sample_value(n.M_EXPORT_FAILURES + "_total", {n.L_SIGNAL: "traces"})
    return value or 0.0


def _latency_summary(latencies: list[float]) -> dict[str, float]:
    if not latencies:
        raise BenchmarkError("a load phase completed no request; the fake request is broken")
    return {
        "requests": len(latencies),
        "p50_ms": round(percentile(latencies, 50) * 1e3, 3),
        "p99_ms": round(percentile(latencies, 99) * 1e3, 3),
        "max_ms": round(max(latencies) * 1e3, 3),
    }


OUTAGE_KINDS: Final = ("off", "dropping", "healthy", "down", "slow")
# Healthy phases between the others: their spread is the noise the report shows.
# An in-memory phase in each cycle too: it is the stricter baseline, and one phase of it alone
# would make its p99 (the 16th-worst of 1,600 requests) as noisy as the margin it judges.
_OUTAGE_CYCLE: Final = ("healthy", "down", "dropping", "slow")
SLOW_RECEIVER_S: Final = 2.0
#: How long a ``down`` or ``slow`` phase waits for its first counted export failure.
FAILURE_WAIT_S: Final = 30.0


@contextlib.contextmanager
def _sink() -> Iterator[tuple[int, list[int]]]:
    """A healthy OTLP receiver in a child process: yields its port and, after exit, the spans it
    decoded (in the list)."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "benchmarks._sink"],
        cwd=Path(__file__).resolve().parent.parent,
        stdin=subprocess.PIPE,  # the sink exits when this closes: even if this process is killed
        stdout=subprocess.PIPE,
        text=True,
    )
    received: list[int] = []
    try:
        assert proc.stdout is not None
        first = proc.stdout.readline().strip()
        if not first.isdigit():
            raise BenchmarkError(f"the OTLP sink did not start (said {first!r})")
        yield int(first), received
    finally:
        proc.terminate()
        try:
            out, _ = proc.communicate(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            out, _ = proc.communicate()
        last = out.strip().splitlines()[-1:] if out else []
        if last and last[0].isdigit():
            received.append(int(last[0]))


def outage_phase(
    kind: str, *, phase_s: float, threads: int, rate_per_thread: float, shutdown_timeout_s: float
) -> dict[str, Any]:
    """One load phase in this process: ``off`` (chainsight disabled), ``dropping`` (in-memory
    pipeline, nothing encoded), ``healthy`` (OTLP/HTTP to a receiver in another process),
    ``down`` (OTLP/HTTP to a closed port) or ``slow`` (a receiver answering after 2 s).

    Meant to run in a fresh process each (``python -m benchmarks --outage-phase KIND``), so an
    earlier phase's stuck exporter threads and queued spans cannot slow a later phase. The
    result carries every request's latency (``latencies_ms``) so phases of a kind can be pooled.
    """
    if kind not in OUTAGE_KINDS:
        raise ValueError(f"outage phase {kind!r} is not one of {', '.join(OUTAGE_KINDS)}")
    quiet_sdk_logs()
    registry = CollectorRegistry()
    pipeline = Pipeline()
    received: list[int] = []
    with contextlib.ExitStack() as stack:
        stack.callback(pipeline.close)
        stack.callback(_leave_outage, pipeline)
        receiver: _SlowReceiver | None = None
        if kind in ("off", "dropping"):
            chainsight.configure(
                tracer_provider=pipeline.provider, registry=registry, enabled=kind == "dropping"
            )
        else:
            if kind == "down":
                port = stack.enter_context(_closed_port())
            elif kind == "slow":
                receiver = stack.enter_context(_slow_receiver(delay=SLOW_RECEIVER_S))
                port = receiver.server_port
            else:
                port, received = stack.enter_context(_sink())
            os.environ[n.ENV_OTEL_TRACES_ENDPOINT] = f"http://127.0.0.1:{port}/v1/traces"
            chainsight.configure(exporter="otlp:http", registry=registry)
        # Warm the stage specs and metric children outside the measurement.
        warm_up = len(_drive(0.05, 1, 100))
        latencies = _drive(phase_s, threads, rate_per_thread)
        result: dict[str, Any] = _latency_summary(latencies)
        result["spans_produced"] = (warm_up + len(latencies)) * 7
        if kind in ("healthy", "down", "slow"):
            start = time.perf_counter()
            result["shutdown_finished"] = chainsight.shutdown(timeout=shutdown_timeout_s)
            result["shutdown_s"] = round(time.perf_counter() - start, 3)
        if kind in ("down", "slow"):
            # The batch on the wire when shutdown gave up counts itself once its attempt
            # returns (at most the exporter's 5 s timeout): wait for the count to settle.
            # A busy machine can delay the first failed attempt itself: wait longer (up to
            # FAILURE_WAIT_S) for a first count, never for a fixed time.
            settle_until = time.perf_counter() + 6.5
            give_up = time.perf_counter() + FAILURE_WAIT_S
            seen = -1.0
            while time.perf_counter() < (settle_until if seen > 0 else give_up):
                count = _failures(registry)
                if count == seen and count > 0:
                    break
                seen = count
                time.sleep(0.1)
            result["spans_dropped_or_failed"] = _failures(registry)
        if receiver is not None:
            result["receiver_requests"] = receiver.requests
        result["sdk_log_lines"] = _SDK_LOGS.count
    if kind == "healthy":
        result["spans_dropped_or_failed"] = _failures(registry)
        result["spans_received"] = received[0] if received else None
    result["latencies_ms"] = [round(v * 1e3, 4) for v in latencies]
    return result


def _leave_outage(pipeline: Pipeline) -> None:
    # reset() would shut a stuck provider down on this thread, which can take the exporter's
    # whole retry time; switching to our own provider first retires it on a daemon thread.
    chainsight.configure(tracer_provider=pipeline.provider)
    chainsight.reset()


def exporter_outage(
    *,
    phase_s: float,
    threads: int,
    rate_per_thread: float,
    shutdown_timeout_s: float,
    cycles: int = 2,
) -> dict[str, Any]:
    """Request latency with the collector up (a real OTLP receiver), down (a closed port) and
    slow (a receiver answering after 2 s).

    Each phase runs in a fresh process: ``off`` and ``dropping``, then ``cycles`` times
    (healthy, down, dropping, slow), then a last healthy phase, so the phases of a kind are
    spread over the run. A kind's p99 is taken over all its phases' requests
    pooled; the spread of the healthy phases' own p99s is the noise.
    """
    phases: dict[str, dict[str, Any]] = {}
    pooled: dict[str, list[float]] = {}
    env = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_")}
    for kind in ("off", "dropping", *(_OUTAGE_CYCLE * cycles), "healthy"):
        name = kind
        count = 2
        while name in phases:
            name = f"{kind}_{count}"
            count += 1
        done = subprocess.run(  # noqa: S603 - our own interpreter and module
            [
                sys.executable, "-m", "benchmarks", "--outage-phase", kind,
                "--phase-seconds", str(phase_s), "--threads", str(threads),
                "--rate", str(rate_per_thread), "--shutdown-timeout", str(shutdown_timeout_s),
            ],
            cwd=Path(__file__).resolve().parent.parent,
            env=env,
            capture_output=True,
            text=True,
            timeout=phase_s * 4 + 120,
            check=False,
        )  # fmt: skip
        if done.returncode != 0:
            raise BenchmarkError(
                f"outage phase {kind!r} exited {done.returncode}: {done.stderr[-2000:]}"
            )
        found = json.loads(done.stdout.strip().splitlines()[-1])
        pooled.setdefault(kind, []).extend(found.pop("latencies_ms"))
        if kind == "healthy" and found["spans_received"] != found["spans_produced"]:
            raise BenchmarkError(
                f"healthy OTLP phase: the receiver decoded {found['spans_received']} spans of "
                f"{found['spans_produced']} produced; the healthy baseline lost spans"
            )
        phases[name] = found

    def p99(kind: str) -> float:
        return round(percentile(pooled[kind], 99), 3)

    healthy_p99s = [v["p99_ms"] for k, v in phases.items() if k.partition("_")[0] == "healthy"]
    baseline = p99("healthy")
    return {
        "fake_request": "request + 6 stages (7 spans), the model stage sleeps 5 ms",
        "load": f"{threads} threads x {rate_per_thread:g} req/s for {phase_s:g} s per phase, "
        "each phase in a fresh process",
        "slow_receiver_s": SLOW_RECEIVER_S,
        "phases": phases,
        "requests_pooled": {kind: len(values) for kind, values in pooled.items()},
        "p99_off_ms": p99("off"),
        "p99_dropping_ms": p99("dropping"),
        "p99_healthy_ms": baseline,
        "p99_noise_ms": round(max(healthy_p99s) - min(healthy_p99s), 3),
        "p99_down_ms": p99("down"),
        "p99_slow_ms": p99("slow"),
        "p99_delta_down_ms": round(p99("down") - baseline, 3),
        "p99_delta_slow_ms": round(p99("slow") - baseline, 3),
    }


# --- 1,000 concurrent asyncio requests -------------------------------------------------------


_StageFn = Callable[[], Awaitable[None]]
_KINDS: Final = ("retrieval", "rerank", "prompt", "model", "validation", "tool")

# I/O per stage of a short, realistic AI request (seconds): a vector-store query, a hosted
# rerank, prompt assembly (no I/O), one short model call, a local validator (no I/O), one tool
# call. Kept at the fast end of what these take, so the profile flatters nobody.
AI_CHAIN_IO_S: Final = {
    "retrieval": 0.030,
    "rerank": 0.060,
    "prompt": 0.0,
    "model": 0.600,
    "validation": 0.0,
    "tool": 0.050,
}


def uniform_io(seconds: float) -> dict[str, float]:
    """The same I/O for each of the six stages."""
    return dict.fromkeys(_KINDS, seconds)


def _stage_functions(io: dict[str, float]) -> tuple[list[_StageFn], list[_StageFn]]:
    def make(seconds: float) -> _StageFn:
        async def stage_io() -> None:
            await asyncio.sleep(seconds)  # 0 still yields to the loop once

        return stage_io

    plain = [make(io[kind]) for kind in _KINDS]
    traced: list[_StageFn] = [
        chainsight.traced_stage(kind, name=f"concurrent_{kind}")(make(io[kind])) for kind in _KINDS
    ]
    return plain, traced


def concurrency(
    *,
    requests: int,
    rounds: int,
    io: dict[str, float],
    window_s: float,
    warm_up: bool = True,
    min_ramp_s: float = 0.2,
    min_window_requests: int = 1,
) -> dict[str, Any]:
    """Steady-state throughput of ``requests`` concurrent asyncio requests of 6 stages.

    ``requests`` workers each run requests back to back (a closed loop, as a server at that
    concurrency does); throughput is the requests completed in a ``window_s`` window after one
    request's worth of ramp-up. A window that holds fewer than ``min_window_requests``
    completed requests (a busy machine, a short smoke window) stays open until it holds that
    many, and its throughput is over the longer window; with 0 the window is ``window_s``
    whatever it holds, and a variant that completed nothing in it raises
    :class:`BenchmarkError`. Three variants: without
    instrumentation, with chainsight, and with raw OpenTelemetry spans (7 per request, 10
    attributes each) — the last shows what any span-based tracing costs at this concurrency.
    The variants' order rotates each round.
    """
    if min_window_requests < 0:
        raise ValueError(f"min_window_requests={min_window_requests} must be 0 or more")
    plain, traced = _stage_functions(io)
    io_per_request = sum(io.values())
    ramp_s = max(min_ramp_s, io_per_request)  # the staggered start, then one request
    # A queue that never fills: a span dropped at a full queue costs less than one exported,
    # and would flatter the traced variants.
    pipeline = Pipeline(max_queue_size=1_000_000)
    registry = CollectorRegistry()
    tracer = pipeline.provider.get_tracer("bench.raw")

    async def plain_request() -> None:
        for stage in plain:
            await stage()

    async def traced_request() -> None:
        async with chainsight.request("bench_concurrent", feature="bench"):
            for stage in traced:
                await stage()

    async def raw_request() -> None:
        with tracer.start_as_current_span("invoke_workflow bench", attributes=R_ATTRIBUTES):
            for stage in plain:
                with tracer.start_as_current_span("stage", attributes=R_ATTRIBUTES):
                    await stage()

    completed = {"total": 0}

    async def closed_loop(make: Callable[[], Awaitable[None]], window: float) -> float:
        loop = asyncio.get_running_loop()
        start = loop.time()
        opens = start + 2 * ramp_s
        closes = opens + window
        in_window = 0

        def short() -> bool:
            return in_window < min_window_requests

        async def worker(offset: float) -> None:
            nonlocal in_window, closes
            await asyncio.sleep(offset)
            while loop.time() < closes or short():
                await make()
                completed["total"] += 1
                now = loop.time()
                if opens <= now < closes:
                    in_window += 1
                elif now >= closes and short():
                    # Too few requests in the window: it stretches to this one.
                    in_window += 1
                    closes = now

        # Workers start spread over one request's time, as a server's requests arrive: started
        # together they would hit each stage boundary together, in waves no real traffic has.
        spread = random.Random(requests)
        await asyncio.gather(*(worker(spread.uniform(0, ramp_s)) for _ in range(requests)))
        return in_window / (closes - opens)

    variants = [
        ("without", plain_request),
        ("chainsight", traced_request),
        ("raw_otel", raw_request),
    ]
    throughput: dict[str, list[float]] = {name: [] for name, _ in variants}
    traced_done = 0
    chainsight.reset()
    chainsight.configure(tracer_provider=pipeline.provider, registry=registry)
    loop = asyncio.new_event_loop()
    try:
        for name, make in variants if warm_up else ():  # specs, metric children, free lists
            completed["total"] = 0
            loop.run_until_complete(closed_loop(make, 0.2))
            traced_done += completed["total"] if name != "without" else 0
        for number in range(rounds):
            shift = number % len(variants)
            for name, make in variants[shift:] + variants[:shift]:
                completed["total"] = 0
                throughput[name].append(loop.run_until_complete(closed_loop(make, window_s)))
                traced_done += completed["total"] if name != "without" else 0
                pipeline.flush()  # don't let one variant's queued spans tax the next
    finally:
        loop.close()
        chainsight.reset()
        pipeline.close()
    if pipeline.exporter.count != traced_done * 7:
        raise BenchmarkError(
            f"concurrency: exported {pipeline.exporter.count} spans, expected "
            f"{traced_done * 7} (7 per traced request); the queue dropped spans or the stages "
            "were not traced"
        )

    for name, values in throughput.items():
        if not all(value > 0 for value in values):
            raise BenchmarkError(
                f"concurrency: the {name!r} variant completed no request in a {window_s:g} s "
                f"window ({requests} workers, {io_per_request * 1e3:g} ms of I/O per request); "
                "the machine was too busy or the window too short: give a longer window_s, or "
                "min_window_requests=1 or more to stretch a window until it holds requests"
            )

    def ratio(over: str, under: str) -> float:
        pairs = zip(throughput[over], throughput[under], strict=True)
        return round(statistics.median(a / b for a, b in pairs), 3)

    return {
        "requests": requests,
        "stages": 6,
        "io_per_stage_ms": {kind: round(seconds * 1e3, 3) for kind, seconds in io.items()},
        "io_per_request_ms": round(io_per_request * 1e3, 3),
        "window_s": window_s,
        "rounds": rounds,
        "without_rps": round(statistics.median(throughput["without"]), 1),
        "with_rps": round(statistics.median(throughput["chainsight"]), 1),
        "raw_otel_rps": round(statistics.median(throughput["raw_otel"]), 1),
        "ratio": ratio("chainsight", "without"),
        "raw_otel_ratio": ratio("raw_otel", "without"),
        "ratio_to_raw_otel": ratio("chainsight", "raw_otel"),
    }


# --- import cost ------------------------------------------------------------------------------

_CHILD: Final = """
import json, resource, time
_start = time.perf_counter()
{body}
_elapsed = time.perf_counter() - _start
_rss = 0
try:
    with open("/proc/self/status") as _f:
        for _line in _f:
            if _line.startswith("VmRSS:"):
                _rss = int(_line.split()[1])
except OSError:
    _rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(json.dumps({{"seconds": _elapsed, "rss_kib": _rss}}))
"""

_IMPORT_VARIANTS: Final = {
    "bare": "pass",
    "dependencies": "import opentelemetry.sdk.trace, prometheus_client, structlog",
    "chainsight": "import chainsight\nchainsight.configure()",
    # With the OTLP exporter: its protobuf and HTTP stack load too (the endpoint is never
    # reached: nothing is exported before the child exits).
    "chainsight_otlp": 'import chainsight\nchainsight.configure(exporter="otlp:http")',
}


def _child_env() -> dict[str, str]:
    # The child must not pick up an OTLP endpoint or chainsight setting from this shell.
    return {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("OTEL_", "CHAINSIGHT_", "PYTHON"))
    }


def import_cost(*, rounds: int) -> dict[str, Any]:
    """Wall time and RSS of ``import chainsight; chainsight.configure()`` in fresh processes.

    Measured in the child (time of the statement, VmRSS after it) and from outside (process wall
    time), against bare Python, interleaved over ``rounds``.
    """
    samples: dict[str, dict[str, list[float]]] = {
        name: {"inside_s": [], "process_s": [], "rss_mib": []} for name in _IMPORT_VARIANTS
    }
    env = _child_env()
    shuffler = random.Random(1)
    names = list(_IMPORT_VARIANTS)
    for _ in range(rounds):
        shuffler.shuffle(names)
        for name in names:
            code = _CHILD.format(body=_IMPORT_VARIANTS[name])
            start = time.perf_counter()
            done = subprocess.run(  # noqa: S603 - our own interpreter and code
                [sys.executable, "-c", code],
                capture_output=True,
                text=True,
                env=env,
                timeout=120,
                check=False,
            )
            wall = time.perf_counter() - start
            if done.returncode != 0:
                raise BenchmarkError(
                    f"import-cost child {name!r} exited {done.returncode}: {done.stderr[-2000:]}"
                )
            found = json.loads(done.stdout.strip().splitlines()[-1])
            samples[name]["inside_s"].append(found["seconds"])
            samples[name]["process_s"].append(wall)
            samples[name]["rss_mib"].append(found["rss_kib"] / 1024)
    out: dict[str, Any] = {"rounds": rounds}
    for name, values in samples.items():
        out[name] = {key: round(statistics.median(v), 4) for key, v in values.items()}
    bare = out["bare"]
    for name in ("dependencies", "chainsight", "chainsight_otlp"):
        out[name]["added_process_s"] = round(out[name]["process_s"] - bare["process_s"], 4)
        out[name]["added_rss_mib"] = round(out[name]["rss_mib"] - bare["rss_mib"], 2)
    return out
