"""``python -m benchmarks [--smoke] [--output PATH] [--rounds N] [--profile]``.

Full mode (``make bench``, about six minutes) measures everything and writes
``benchmarks/results.json``. Smoke mode (``make bench-smoke``, a few seconds) runs every
benchmark once, checks that each measures what it claims, and writes
``benchmarks/results-smoke.json``; it judges no timing.
"""

from __future__ import annotations

import argparse
import cProfile
import io
import json
import logging
import os
import pstats
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Final

# Our own bugs should stop the benchmark, not be counted and hidden.
os.environ.setdefault("CHAINSIGHT_RAISE_INTERNAL_ERRORS", "1")

import chainsight
from benchmarks import _export_cpu, _report, _scenarios
from benchmarks._harness import BenchmarkError, run_interleaved, run_once
from benchmarks._micro import REFERENCE, MicroSuite

HERE: Final = Path(__file__).resolve().parent


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks", description="chainsight's benchmark suite"
    )
    parser.add_argument(
        "--smoke", action="store_true", help="run each benchmark once; check, don't time"
    )
    parser.add_argument("--output", type=Path, help="where to write the results JSON")
    parser.add_argument(
        "--rounds", type=int, default=41, help="interleaved rounds of micro-benchmarks (41)"
    )
    parser.add_argument(
        "--phase-seconds", type=float, default=8.0, help="length of each exporter phase (8)"
    )
    parser.add_argument(
        "--profile", action="store_true", help="cProfile the chainsight stage path and exit"
    )
    # One exporter-outage phase in this process (the suite starts a fresh process per phase).
    parser.add_argument("--outage-phase", choices=_scenarios.OUTAGE_KINDS, help=argparse.SUPPRESS)
    parser.add_argument("--threads", type=int, default=4, help=argparse.SUPPRESS)
    parser.add_argument("--rate", type=float, default=50.0, help=argparse.SUPPRESS)
    parser.add_argument("--shutdown-timeout", type=float, default=2.0, help=argparse.SUPPRESS)
    return parser


def default_output(smoke: bool) -> Path:
    """Where results go without ``--output``; a smoke run never replaces measured results."""
    return HERE / ("results-smoke.json" if smoke else "results.json")


def _progress(message: str) -> None:
    print(f"  … {message}", file=sys.stderr, flush=True)


def profile(calls: int = 50_000) -> str:
    """cProfile ``calls`` chainsight stage calls (sync, no parent); the top functions."""
    suite = MicroSuite()
    try:
        suite.use("on")()
        suite.run_sync(1000)
        profiler = cProfile.Profile()
        profiler.enable()
        suite.run_sync(calls)
        profiler.disable()
    finally:
        suite.close()
        chainsight.reset()
    out = io.StringIO()
    stats = pstats.Stats(profiler, stream=out)
    stats.sort_stats("tottime").print_stats(25)
    return out.getvalue()


def main(argv: Sequence[str] | None = None) -> int:
    """Run the suite, print the report, write the JSON; 0 on success, 1 if a check failed."""
    args = _parser().parse_args(argv)
    if args.rounds < 3:
        print(f"--rounds={args.rounds}: use 3 or more so a median means something", file=sys.stderr)
        return 2
    if args.profile:
        print(profile())
        return 0
    if args.outage_phase is not None:
        found = _scenarios.outage_phase(
            args.outage_phase,
            phase_s=args.phase_seconds,
            threads=args.threads,
            rate_per_thread=args.rate,
            shutdown_timeout_s=args.shutdown_timeout,
        )
        print(json.dumps(found))
        return 0
    smoke: bool = args.smoke
    output: Path = args.output or default_output(smoke)
    env = _report.environment()
    started = time.perf_counter()
    # The OTLP-metrics case starts a bridge per switch to it; each retired bridge flushes to no
    # collector, some after the micro cases ended. Count the SDK's complaints; keep only
    # chainsight's errors on screen.
    _scenarios.quiet_sdk_logs()
    chainsight_log = logging.getLogger("chainsight")
    level = chainsight_log.level
    chainsight_log.setLevel(logging.ERROR)
    try:
        suite = MicroSuite()
        try:
            cases = suite.cases()
            _progress(f"micro-benchmarks: {len(cases)} cases")
            if smoke:
                micro = run_once(cases, REFERENCE)
            else:
                for case in cases:
                    if case.check is not None:
                        case.check()
                micro = run_interleaved(
                    cases, REFERENCE, rounds=args.rounds, target_ns=10_000_000, progress=_progress
                )
        finally:
            suite.close()
            chainsight.reset()
        _progress("concurrency")
        # The target is judged on the realistic AI chain; the uniform rows find where the loop
        # saturates (1 ms of I/O per stage: throughput is bound by CPU per request).
        profiles = {
            "ai_chain": _scenarios.AI_CHAIN_IO_S,
            **{f"io_{ms}ms": _scenarios.uniform_io(ms / 1000) for ms in (100, 20, 1)},
        }
        concurrent = {
            name: _scenarios.concurrency(
                requests=20 if smoke else 1000,
                rounds=1 if smoke else 3,
                # Smoke: the same shapes at a hundredth of the I/O, to check, not to measure.
                io={k: v / 100 for k, v in io.items()} if smoke else io,
                # Smoke: 0.2 s windows that stay open until they hold 20 requests, so a busy
                # machine cannot leave one empty.
                window_s=0.2 if smoke else (4.0 if name == "ai_chain" else 2.0),
                warm_up=not smoke,
                min_ramp_s=0.01 if smoke else 0.2,
                min_window_requests=20 if smoke else 1,
            )
            for name, io in profiles.items()
        }
        _progress("import cost")
        imports = _scenarios.import_cost(rounds=1 if smoke else 9)
        _progress("exporter outage")
        outage = _scenarios.exporter_outage(
            phase_s=0.2 if smoke else args.phase_seconds,
            threads=4,
            rate_per_thread=50.0,
            shutdown_timeout_s=0.5 if smoke else 2.0,
            cycles=1 if smoke else 3,
        )
        _progress("export CPU per span")
        export_cpu = _export_cpu.export_cpu(
            rounds=1 if smoke else 7, spans=512 if smoke else 2048, smoke=smoke
        )
    except BenchmarkError as exc:
        print(f"benchmark check failed: {exc}", file=sys.stderr)
        return 1
    finally:
        chainsight_log.setLevel(level)
    verdicts = _report.judge(micro, outage, concurrent, imports)
    verdicts.append(_export_cpu.verdict(export_cpu))
    print(
        _report.format_report(
            smoke=smoke,
            env=env,
            micro=micro,
            outage=outage,
            concurrent=concurrent,
            imports=imports,
            verdicts=verdicts,
        )
    )
    print("\n" + "\n".join(_export_cpu.format_lines(export_cpu)))
    payload: dict[str, Any] = {
        "mode": "smoke" if smoke else "full",
        "created": _report.timestamp(),
        "duration_s": round(time.perf_counter() - started, 1),
        "environment": env,
        "reference": REFERENCE,
        "micro": {name: result.as_dict() for name, result in micro.items()},
        "concurrency": concurrent,
        "import_cost": imports,
        "exporter_outage": outage,
        "export_cpu": export_cpu,
        "targets": verdicts if not smoke else [],
    }
    _report.write_results(output, payload)
    print(f"\nwrote {output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
