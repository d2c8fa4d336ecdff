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
    "OUTAGE_KINDS",
    "concurrency",
    "exporter_outage",
    "import_cost",
    "outage_phase",
    "quiet_sdk_logs",
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
        next_at = time.perf_counter()
        while next_at < deadline:
            start = time.perf_counter()
            fake_request()
            out.append(time.perf_counter() - start)
            next_at += period
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


OUTAGE_KINDS: Final = ("off", "dropping", "down", "slow")
# Healthy phases between the others: their spread is the noise the verdict allows for.
_OUTAGE_CYCLE: Final = ("dropping", "down", "dropping", "slow")


def outage_phase(
    kind: str, *, phase_s: float, threads: int, rate_per_thread: float, shutdown_timeout_s: float
) -> dict[str, Any]:
    """One load phase in this process: ``off`` (chainsight disabled), ``dropping`` (healthy
    pipeline), ``down`` (OTLP/HTTP to a closed port) or ``slow`` (a receiver answering after 6 s).

    Meant to run in a fresh process each (``python -m benchmarks --outage-phase KIND``), so an
    earlier phase's stuck exporter threads and queued spans cannot slow a later phase.
    """
    if kind not in OUTAGE_KINDS:
        raise ValueError(f"outage phase {kind!r} is not one of {', '.join(OUTAGE_KINDS)}")
    quiet_sdk_logs()
    registry = CollectorRegistry()
    pipeline = Pipeline()
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
            else:
                receiver = stack.enter_context(_slow_receiver(delay=6.0))
                port = receiver.server_port
            os.environ[n.ENV_OTEL_TRACES_ENDPOINT] = f"http://127.0.0.1:{port}/v1/traces"
            chainsight.configure(exporter="otlp:http", registry=registry)
        _drive(0.05, 1, 100)  # warm the stage specs and metric children outside the measurement
        result: dict[str, Any] = _latency_summary(_drive(phase_s, threads, rate_per_thread))
        if kind in ("down", "slow"):
            start = time.perf_counter()
            result["shutdown_finished"] = chainsight.shutdown(timeout=shutdown_timeout_s)
            result["shutdown_s"] = round(time.perf_counter() - start, 3)
            # The batch on the wire when shutdown gave up counts itself once its attempt
            # returns (at most the exporter's 5 s timeout): wait for the count to settle.
            settle_until = time.perf_counter() + 6.5
            seen = -1.0
            while time.perf_counter() < settle_until:
                count = _failures(registry)
                if count == seen and count > 0:
                    break
                seen = count
                time.sleep(0.1)
            result["spans_dropped_or_failed"] = _failures(registry)
        if receiver is not None:
            result["receiver_requests"] = receiver.requests
        result["sdk_log_lines"] = _SDK_LOGS.count
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
    """Request latency with a healthy (dropping) pipeline, a closed OTLP port, a slow receiver.

    Each phase runs in a fresh process: ``off``, then ``cycles`` times (dropping, down,
    dropping, slow), then a last dropping phase. A kind's p99 is the median over its phases;
    the spread of the healthy phases' p99 is the noise.
    """
    phases: dict[str, dict[str, Any]] = {}
    env = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_")}
    for kind in ("off", *(_OUTAGE_CYCLE * cycles), "dropping"):
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
        phases[name] = json.loads(done.stdout.strip().splitlines()[-1])

    def p99s(kind: str) -> list[float]:
        return [v["p99_ms"] for k, v in phases.items() if k.partition("_")[0] == kind]

    healthy = p99s("dropping")
    baseline = statistics.median(healthy)
    return {
        "fake_request": "request + 6 stages (7 spans), the model stage sleeps 5 ms",
        "load": f"{threads} threads x {rate_per_thread:g} req/s for {phase_s:g} s per phase, "
        "each phase in a fresh process",
        "phases": phases,
        "p99_healthy_ms": round(baseline, 3),
        "p99_noise_ms": round(max(healthy) - min(healthy), 3),
        "p99_down_ms": round(statistics.median(p99s("down")), 3),
        "p99_slow_ms": round(statistics.median(p99s("slow")), 3),
        "p99_delta_down_ms": round(statistics.median(p99s("down")) - baseline, 3),
        "p99_delta_slow_ms": round(statistics.median(p99s("slow")) - baseline, 3),
    }


# --- 1,000 concurrent asyncio requests -------------------------------------------------------


_StageFn = Callable[[], Awaitable[None]]


def _stage_functions(io_s: float) -> tuple[list[_StageFn], list[_StageFn]]:
    async def io() -> None:
        await asyncio.sleep(io_s)

    plain: list[_StageFn] = [io for _ in range(6)]
    kinds = ["retrieval", "rerank", "prompt", "model", "validation", "tool"]
    traced: list[_StageFn] = [
        chainsight.traced_stage(kind, name=f"concurrent_{kind}")(io) for kind in kinds
    ]
    return plain, traced


def concurrency(*, requests: int, rounds: int, io_s: float, warm_up: bool = True) -> dict[str, Any]:
    """Throughput of ``requests`` concurrent asyncio requests of 6 stages.

    Three variants: without instrumentation, with chainsight, and with raw OpenTelemetry spans
    (7 per request, 10 attributes each) — the last shows what any span-based tracing costs at
    this concurrency. Each stage awaits ``io_s`` of simulated I/O. The variants' order rotates
    from round to round.
    """
    plain, traced = _stage_functions(io_s)
    # A queue that holds a whole round: a span dropped at a full queue costs less than one
    # exported, and would flatter the traced variants.
    pipeline = Pipeline(max_queue_size=4 * requests * 7)
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

    async def batch(make: Callable[[], Awaitable[None]]) -> float:
        start = time.perf_counter()
        await asyncio.gather(*(make() for _ in range(requests)))
        return requests / (time.perf_counter() - start)

    variants = [
        ("without", plain_request),
        ("chainsight", traced_request),
        ("raw_otel", raw_request),
    ]
    throughput: dict[str, list[float]] = {name: [] for name, _ in variants}
    chainsight.reset()
    chainsight.configure(tracer_provider=pipeline.provider, registry=registry)
    loop = asyncio.new_event_loop()
    try:
        for _, make in variants if warm_up else ():  # specs, metric children, free lists
            loop.run_until_complete(batch(make))
        for number in range(rounds):
            shift = number % len(variants)
            for name, make in variants[shift:] + variants[:shift]:
                throughput[name].append(loop.run_until_complete(batch(make)))
                pipeline.flush()  # don't let one variant's queued spans tax the next
    finally:
        loop.close()
        chainsight.reset()
        pipeline.close()
    expected_spans = 2 * (rounds + warm_up) * requests * 7
    if pipeline.exporter.count != expected_spans:
        raise BenchmarkError(
            f"concurrency: exported {pipeline.exporter.count} spans, expected {expected_spans} "
            "(7 per traced request); the queue dropped spans or the stages were not traced"
        )

    def ratio(over: str, under: str) -> float:
        pairs = zip(throughput[over], throughput[under], strict=True)
        return round(statistics.median(a / b for a, b in pairs), 3)

    return {
        "requests": requests,
        "stages": 6,
        "io_per_stage_ms": io_s * 1e3,
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
    for name in ("dependencies", "chainsight"):
        out[name]["added_process_s"] = round(out[name]["process_s"] - bare["process_s"], 4)
        out[name]["added_rss_mib"] = round(out[name]["rss_mib"] - bare["rss_mib"], 2)
    return out
