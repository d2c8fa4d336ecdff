"""``chainsight demo``: traffic through a simulated RAG support assistant, with fault injection.

The assistant lives in :mod:`chainsight.tools.demo_app` (read it: it is how we suggest instrumenting
an app); it calls the simulated provider of :mod:`chainsight.tools.demo_sim` with the real
``openai`` SDK over loopback HTTP and searches an embedded Qdrant with the real ``qdrant-client``
(both from the ``chainsight[demo]`` extra). This module is the harness: it configures chainsight,
turns on the ``openai`` and ``qdrant`` integrations, starts the provider, generates Poisson
traffic at ``--rps`` for ``--duration`` seconds, switches the ``--fault`` on at
``--fault-start``, shows a progress line, serves ``/metrics`` and, at the end, runs
:mod:`chainsight.tools.triage` on the span file it wrote and prints the verdict, with the command
that re-runs it.

``--time-scale 4`` runs the same scenario four times faster (rates up, every simulated delay
and the schedule down), which is how the tests run a whole scenario in a few seconds.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import random
import shlex
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Final, TextIO

import chainsight
from chainsight.errors import ConfigurationError
from chainsight.tools import demo_app as app
from chainsight.tools import demo_sim, triage
from chainsight.tools._shell import chainsight_command

__all__ = [
    "Scenario",
    "add_arguments",
    "parse_faults",
    "run",
    "run_scenario",
]

DEFAULT_SPANS: Final = "demo-spans.jsonl"
DEFAULT_METRICS_PORT: Final = 9464

# What triage should name for each fault: the domain and the component.
EXPECTED: Final[dict[str, tuple[str, str]]] = {
    "provider-timeout": ("provider", f"{app.PROVIDER}/{app.MODEL}"),
    "provider-ratelimit": ("provider", f"{app.PROVIDER}/{app.MODEL}"),
    "provider-slow": ("provider", f"{app.PROVIDER}/{app.MODEL}"),
    "vector-store-down": ("vector_store", f"{app.VECTOR_SYSTEM}/{app.COLLECTION}"),
    "bad-model-output": ("model", "validate_answer"),
    "app-bug": ("app", "build_prompt"),
    "provider-bad-request": ("app", "generate_answer"),
}


def parse_faults(faults: str, rates: str) -> dict[str, float]:
    """Parse ``--fault a,b`` and ``--fault-rate 0.5`` (one rate for all, or one per fault).

    Raises :class:`ConfigurationError` naming the bad value and the accepted ones.
    """
    names = [f.strip() for f in faults.split(",") if f.strip()]
    for name in names:
        if name not in app.FAULTS:
            raise ConfigurationError(
                f"--fault {name!r} is not a fault this demo can inject; choose from "
                f"{', '.join(app.FAULTS)} (several: comma-separated)"
            )
    names = [f for f in names if f != "none"]
    try:
        values = [float(r) for r in rates.split(",") if r.strip()]
    except ValueError:
        raise ConfigurationError(
            f"--fault-rate {rates!r} is not a number; give a fraction such as 0.5, or one per "
            "fault such as 0.5,0.2"
        ) from None
    if len(values) == 1:
        values = values * len(names)
    if names and len(values) != len(names):
        raise ConfigurationError(
            f"--fault-rate {rates!r} gives {len(values)} rates for {len(names)} faults; give "
            "one rate for all, or one per fault in the same order"
        )
    for value in values:
        if not 0.0 <= value <= 1.0:
            raise ConfigurationError(
                f"--fault-rate {value} is not a fraction; use a number from 0 to 1"
            )
    return dict(zip(names, values, strict=False))


@dataclass
class Scenario:
    """One demo run: traffic shape, faults and where the telemetry goes."""

    duration: float = 40.0
    rps: float = 20.0
    faults: dict[str, float] = field(default_factory=lambda: {"provider-timeout": 0.5})
    fault_start: float = 20.0
    time_scale: float = 1.0
    spans: str = DEFAULT_SPANS
    metrics_port: int | None = DEFAULT_METRICS_PORT
    seed: int | None = None


@dataclass
class Progress:
    """What the request loop has seen so far, as the application saw it."""

    started: int = 0
    outcomes: Counter[str] = field(default_factory=Counter)
    errors: Counter[str] = field(default_factory=Counter)
    latencies: list[float] = field(default_factory=list)

    def p95(self) -> float | None:
        """p95 of the most recent 500 request latencies."""
        recent = sorted(self.latencies[-500:])
        return recent[int(0.95 * (len(recent) - 1))] if recent else None


def _configure(scenario: Scenario, out: TextIO) -> int | None:
    """Configure chainsight for the demo; return the metrics port actually served.

    The port is bound once, by the /metrics server itself (which sets SO_REUSEADDR): a separate
    probe bind without it would call a port busy for a minute after a scraped demo exited
    (its connections linger in TIME_WAIT), and could lose a race to another process anyway.
    """
    port = scenario.metrics_port
    try:
        _configure_demo(scenario, port)
    except ConfigurationError as exc:
        if port is None or not isinstance(exc.__cause__, OSError):
            raise
        print(
            f"port {port} is busy ({exc.__cause__.strerror or exc.__cause__}): continuing "
            "without /metrics (choose another with --metrics-port, or 0 for none)",
            file=out,
        )
        _configure_demo(scenario, None)
        port = None
    return port


def _configure_demo(scenario: Scenario, port: int | None) -> None:
    chainsight.configure(
        service="support-bot",
        environment="demo",
        release={"model": f"{app.MODEL}-2024-08-06", "prompt": "answer@7"},
        exporter=f"jsonl:{scenario.spans}",
        prices=app.demo_prices(),
        metrics_port=port,
        metrics_addr="127.0.0.1" if port is not None else None,
    )


async def _handle(assistant: app.SupportAssistant, ticket: app.Ticket, seen: Progress) -> None:
    started = time.perf_counter()
    try:
        answer = await assistant.answer(ticket)
    except Exception as exc:
        # A real service would return an error to the user here; chainsight has the details.
        seen.outcomes["error"] += 1
        seen.errors[type(exc).__name__] += 1
    else:
        seen.outcomes["handoff" if answer.handoff else "degraded" if answer.degraded else "ok"] += 1
    seen.latencies.append(time.perf_counter() - started)


def _progress_line(scenario: Scenario, elapsed: float, seen: Progress, fault_on: bool) -> str:
    done = sum(seen.outcomes.values())
    parts = [f"{k} {seen.outcomes[k]}" for k in ("ok", "degraded", "handoff", "error")]
    p95 = seen.p95()
    fault = ",".join(scenario.faults) if fault_on else "none"
    latency = f"  p95 {p95:.2f}s" if p95 is not None else ""
    return f"{elapsed * scenario.time_scale:5.1f}s  requests {done:5d}  {'  '.join(parts)}" + (
        f"{latency}  fault: {fault}"
    )


async def _traffic(scenario: Scenario, out: TextIO, live: bool) -> tuple[Progress, float | None]:
    """Run the request loop; return what it saw and the wall-clock time the fault began."""
    rng = random.Random(scenario.seed)
    plan = app.FaultPlan(dict(scenario.faults), rng=random.Random(rng.random()))
    clock = app.Clock(scenario.time_scale)
    provider = demo_sim.SimProvider(plan, clock)
    assistant = app.SupportAssistant(plan, clock, await provider.start())
    try:
        await assistant.open()
        return await _requests(scenario, out, live, plan, clock, assistant, rng)
    finally:
        await assistant.close()
        await provider.stop()


async def _requests(
    scenario: Scenario,
    out: TextIO,
    live: bool,
    plan: app.FaultPlan,
    clock: app.Clock,
    assistant: app.SupportAssistant,
    rng: random.Random,
) -> tuple[Progress, float | None]:
    seen = Progress()
    tasks: set[asyncio.Task[None]] = set()
    loop = asyncio.get_running_loop()
    start = loop.time()
    end = start + clock.real(scenario.duration)
    fault_at = start + clock.real(scenario.fault_start) if scenario.faults else None
    fault_wall: float | None = None
    next_arrival = start
    next_report = start
    report_every = 0.25 if live else 5.0

    def arrive() -> None:
        nonlocal next_arrival
        seen.started += 1
        task = asyncio.create_task(_handle(assistant, app.make_ticket(rng, seen.started), seen))
        tasks.add(task)
        task.add_done_callback(tasks.discard)
        next_arrival += rng.expovariate(scenario.rps * scenario.time_scale)

    while (now := loop.time()) < end:
        if fault_at is not None and not plan.active and now >= fault_at:
            plan.active = True
            fault_wall = time.time()
            described = ", ".join(f"{f} ({r:.0%} of calls)" for f, r in scenario.faults.items())
            print(("\n" if live else "") + f"injecting fault: {described}", file=out)
        while next_arrival <= now:
            arrive()
        if now >= next_report:
            line = _progress_line(scenario, now - start, seen, plan.active)
            print(("\r" + line) if live else line, end="" if live else "\n", file=out, flush=True)
            next_report += report_every
        await asyncio.sleep(max(0.0, min(next_arrival, next_report, end) - loop.time()))
    # Requests due before the end that a late loop (a busy machine) has not started yet: the
    # run's traffic does not depend on when the loop last woke up.
    while next_arrival < end:
        arrive()
    if tasks:
        await asyncio.gather(*tasks)
    line = _progress_line(scenario, loop.time() - start, seen, plan.active)
    print(("\r" + line + "\n") if live else line, end="", file=out, flush=True)
    if not live:
        print(file=out)
    return seen, fault_wall


def run_scenario(
    scenario: Scenario, *, out: TextIO = sys.stderr, live: bool = False
) -> tuple[triage.Report, Progress]:
    """Run the scenario and triage its span file; the caller prints what it wants."""
    if os.path.exists(scenario.spans):
        os.remove(scenario.spans)  # a fresh file, so triage sees this run only
    port = _configure(scenario, out)
    if port is not None:
        print(f"serving metrics on http://127.0.0.1:{port}/metrics", file=out)
    # The SDK calls record their own usage, cost and hits on the app's stages.
    chainsight.instrument("openai", "qdrant")
    began = time.time()
    try:
        seen, fault_wall = asyncio.run(_traffic(scenario, out, live))
    finally:
        chainsight.uninstrument("openai", "qdrant")
        chainsight.shutdown(timeout=10.0)
    last = _last_span_end(scenario.spans)
    if fault_wall is not None:
        window = max(last - fault_wall, 0.001) if last is not None else None
    else:
        # The second half of the run, as it took: the real calls' own time does not shrink
        # with --time-scale, so a very fast clock can end the run after its schedule.
        planned = scenario.duration / scenario.time_scale
        window = max(planned, (last - began) if last is not None else planned) / 2
    report = triage.from_spans(scenario.spans, window=window)
    return report, seen


def _last_span_end(path: str) -> float | None:
    last: float | None = None
    with open(path, encoding="utf-8") as handle:
        for line in handle:
            with contextlib.suppress(ValueError, KeyError, TypeError):
                end = int(json.loads(line)["end_time_unix_nano"]) / 1e9
                last = end if last is None else max(last, end)
    return last


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the ``chainsight demo`` options to ``parser``."""
    defaults = Scenario()
    parser.add_argument("--rps", type=float, default=defaults.rps, help="requests per second")
    parser.add_argument(
        "--duration", type=float, default=defaults.duration, help="seconds of traffic"
    )
    parser.add_argument(
        "--fault",
        default=",".join(defaults.faults),
        metavar="NAME[,NAME]",
        help="fault(s) to inject: " + ", ".join(app.FAULTS) + " (default: %(default)s)",
    )
    parser.add_argument(
        "--fault-start",
        type=float,
        default=defaults.fault_start,
        metavar="SECONDS",
        help="when the fault begins (default: %(default)s)",
    )
    parser.add_argument(
        "--fault-rate",
        default="0.5",
        metavar="FRACTION[,FRACTION]",
        help="fraction of calls the fault hits, one for all or one per fault (default: 0.5)",
    )
    parser.add_argument(
        "--metrics-port",
        type=int,
        default=DEFAULT_METRICS_PORT,
        help="port for /metrics on 127.0.0.1; 0 serves none (default: %(default)s)",
    )
    parser.add_argument(
        "--spans", default=DEFAULT_SPANS, metavar="PATH", help="JSONL span file (overwritten)"
    )
    parser.add_argument(
        "--time-scale",
        type=float,
        default=1.0,
        metavar="FACTOR",
        help="run FACTOR times faster: same requests, delays and schedule shortened",
    )
    parser.add_argument("--seed", type=int, default=None, help="random seed, for repeatable runs")
    parser.add_argument(
        "--json", action="store_true", help="print the triage as one JSON object at the end"
    )
    parser.add_argument("--quiet", action="store_true", help="no progress line")


def _scenario(args: argparse.Namespace) -> Scenario:
    faults = parse_faults(args.fault, args.fault_rate)
    for flag, value in (("--rps", args.rps), ("--duration", args.duration)):
        if not value > 0:
            raise ConfigurationError(f"{flag} must be a positive number, got {value}")
    if not args.time_scale > 0:
        raise ConfigurationError(f"--time-scale must be positive, got {args.time_scale}")
    if faults and not 0 <= args.fault_start < args.duration:
        raise ConfigurationError(
            f"--fault-start {args.fault_start} must be within the run (0 to --duration "
            f"{args.duration}); for healthy traffic only, use --fault none"
        )
    if not 0 <= args.metrics_port <= 65535:
        raise ConfigurationError(f"--metrics-port {args.metrics_port} is not a TCP port (0-65535)")
    return Scenario(
        duration=args.duration,
        rps=args.rps,
        faults=faults,
        fault_start=args.fault_start,
        time_scale=args.time_scale,
        spans=args.spans,
        metrics_port=args.metrics_port or None,
        seed=args.seed,
    )


def run(args: argparse.Namespace) -> int:
    """``chainsight demo``: run the scenario, then print the triage of its own spans."""
    try:
        scenario = _scenario(args)
    except ConfigurationError as exc:
        print(f"chainsight demo: error: {exc}", file=sys.stderr)
        return 2
    out = open(os.devnull, "w") if args.quiet else sys.stderr  # noqa: SIM115
    live = not args.quiet and sys.stderr.isatty()
    faults = ", ".join(scenario.faults) or "none"
    print(
        f"chainsight demo: {scenario.duration:g}s at {scenario.rps:g} rps, fault {faults}"
        + (f" from {scenario.fault_start:g}s" if scenario.faults else "")
        + (f", {scenario.time_scale:g}x faster" if scenario.time_scale != 1 else "")
        + f"; spans -> {scenario.spans}",
        file=out,
    )
    try:
        report, _ = run_scenario(scenario, out=out, live=live)
    except (ConfigurationError, triage.TriageError) as exc:
        print(f"chainsight demo: error: {exc}", file=sys.stderr)
        return 2
    finally:
        if out is not sys.stderr:
            out.close()
    if args.json:
        print(json.dumps(report.to_dict(), indent=2))
        return 0
    print(triage.render_text(report))
    expected = [EXPECTED[f] for f in scenario.faults]
    if expected:
        named = ", ".join(f"{d} ({c})" for d, c in expected)
        print(f"\ninjected: {faults}; the right answer is {named}")
    window = triage.format_duration(report.window_seconds)
    command = shlex.join(["triage", "--spans", scenario.spans, "--window", window])
    print(f"re-run the triage: {chainsight_command()} {command}")
    return 0
