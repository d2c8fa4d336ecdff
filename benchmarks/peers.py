"""Per-call cost of peer libraries' decorators, as ratios to the reference span R, in one process.

R is the same as in ``python -m benchmarks``: a raw OpenTelemetry SDK span with ten attributes
around an empty function, through a ``BatchSpanProcessor`` into an exporter that counts and drops
spans. Every other case wraps the same empty body with one library's decorator, and each library
feeds its own ``BatchSpanProcessor`` + dropping exporter; nothing goes over the network. Each case
is checked first to export exactly one span per call into its own exporter (and none elsewhere);
after the timing, the spans exported are compared with the calls made (a shortfall would mean the
batch processor dropped spans, i.e. less work than the case claims).

The peers are not chainsight's dependencies: this module imports none of them at top level, only
inside the function that builds that peer's cases. Three suites, because neither traceloop-sdk
0.62.4 nor openlit 1.45.0 would install beside opentelemetry-sdk 1.45.2:

* ``--suite main``: R, chainsight, logfire, langfuse (default and without input/output capture);
* ``--suite traceloop``: R, chainsight, traceloop (default and with content tracing off);
* ``--suite openlit``: R, chainsight, ``@openlit.trace`` (on opentelemetry-sdk 1.45.1).

Each suite has its own R, and ratios are taken against the R of the same process and round, so
compare ratios, not nanoseconds, across the suites. Reproduce from the repository root (measured
with CPython 3.11.7; ``pip install .`` copies chainsight, so reinstall after changing ``src/``)::

    python3.11 -m venv /tmp/peers/venv
    /tmp/peers/venv/bin/pip install . opentelemetry-sdk==1.45.2 logfire==5.4.0 langfuse==5.0.4
    /tmp/peers/venv/bin/python -m benchmarks.peers --suite main --rounds 41

    python3.11 -m venv /tmp/peers/venv-tl
    /tmp/peers/venv-tl/bin/pip install . traceloop-sdk==0.62.4 requests httpx \\
        -c benchmarks/peers-traceloop-constraints.txt
    /tmp/peers/venv-tl/bin/python -m benchmarks.peers --suite traceloop --rounds 41

    python3.11 -m venv /tmp/peers/venv-ol
    /tmp/peers/venv-ol/bin/pip install . openlit==1.45.0 -c benchmarks/peers-openlit-constraints.txt
    /tmp/peers/venv-ol/bin/python -m benchmarks.peers --suite openlit --rounds 41

``--smoke`` runs the checks and one call of each case, no timing; ``--output PATH`` also writes
the results as JSON. Run on an otherwise idle machine; a full suite takes under a minute.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any, Final

# Our own bugs should stop the benchmark, not be counted and hidden (as in benchmarks/__main__).
os.environ.setdefault("CHAINSIGHT_RAISE_INTERNAL_ERRORS", "1")

from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor
from prometheus_client import CollectorRegistry

import chainsight
from benchmarks import _report
from benchmarks._harness import (
    BenchmarkError,
    Case,
    CaseResult,
    percentile,
    run_interleaved,
    run_once,
)
from benchmarks._micro import (
    R_ATTRIBUTES,
    REFERENCE,
    SPAN_NAME,
    DroppingExporter,
    Pipeline,
    cs_retrieve,
    work,
)

__all__ = ["SUITES", "PeerSuite", "format_table", "main"]

SUITES: Final = ("main", "traceloop", "openlit")
SCHEMA: Final = "chainsight.bench-peers/1"
CHECK_CALLS: Final = 200  # enough calls that a span per 2, 10 or 100 calls would show
TARGET_NS: Final = 10_000_000  # one timed batch, as in ``python -m benchmarks``


@dataclass(frozen=True)
class CaseInfo:
    """What a case belongs to: the distribution whose version is reported, and its exporter."""

    library: str
    exporter: str | None  # label in PeerSuite.exporters; None: the case must export nothing


def _loop(func: Callable[[], object]) -> Callable[[int], None]:
    """A ``run(loops)`` that calls ``func`` ``loops`` times."""

    def run(loops: int) -> None:
        for _ in range(loops):
            func()

    return run


def _version(dist: str) -> str:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return "not installed"


class PeerSuite:
    """Builds one suite's cases and owns their exporters, flushes and call counts."""

    def __init__(self, kind: str) -> None:
        if kind not in SUITES:
            raise ValueError(f"suite {kind!r} is not one of {SUITES}")
        self.kind = kind
        self.cases: list[Case] = []
        self.info: dict[str, CaseInfo] = {}
        self.exporters: dict[str, DroppingExporter] = {}
        # Calls made through each exporter's cases (checks, calibration, warm-ups, timed batches
        # alike), to compare with the spans it received when the run is over.
        self.calls: Counter[str] = Counter()
        self.spans_per_call: dict[str, float] = {}
        self.check_lines: list[str] = []
        self._flushers: list[Callable[[], object]] = []
        self._pipelines: list[Pipeline] = []

        self._add("bare_call", "plain call of the empty body", _loop(work), "-", None)
        reference = self._pipeline("reference")
        tracer = reference.provider.get_tracer("bench.reference")

        def run_reference(loops: int) -> None:
            attrs = R_ATTRIBUTES
            for _ in range(loops):
                with tracer.start_as_current_span(SPAN_NAME, attributes=attrs):
                    work()

        self._add(
            REFERENCE,
            "raw SDK span, 10 attributes, BSP, dropping exporter",
            run_reference,
            "opentelemetry-sdk",
            "reference",
        )
        # No release set (as in the first standalone measurement): the stage span carries eight
        # attributes to R's ten; metrics go to a registry of their own.
        chainsight.configure(
            tracer_provider=self._pipeline("chainsight").provider,
            registry=CollectorRegistry(),
            otlp_metrics=False,
        )
        self._add(
            "chainsight",
            "@traced_stage('retrieval', ...) (span + Prometheus metrics)",
            _loop(cs_retrieve),
            "chainsight",
            "chainsight",
        )
        if kind == "main":
            self._add_logfire()
            self._add_langfuse()
        elif kind == "traceloop":
            self._add_traceloop()
        else:
            self._add_openlit()

    # --- building ------------------------------------------------------------------------
    def _pipeline(self, label: str) -> Pipeline:
        pipeline = Pipeline()
        self._pipelines.append(pipeline)
        self.exporters[label] = pipeline.exporter
        self._flushers.append(pipeline.flush)
        return pipeline

    def _exporter(self, label: str, flush: Callable[[], object]) -> DroppingExporter:
        exporter = DroppingExporter()
        self.exporters[label] = exporter
        self._flushers.append(flush)
        return exporter

    def _add(
        self,
        name: str,
        description: str,
        run: Callable[[int], None],
        library: str,
        exporter: str | None,
        setup: Callable[[], None] = lambda: None,
    ) -> None:
        calls = self.calls
        key = exporter or name

        def counted(loops: int) -> None:
            calls[key] += loops  # once per batch, not per call: outside what is measured
            run(loops)

        case = Case(name, description, counted, setup, group="peers")
        case.check = self._check(case)
        self.cases.append(case)
        self.info[name] = CaseInfo(library, exporter)

    def _add_logfire(self) -> None:
        import logfire  # type: ignore[import-not-found, unused-ignore]

        exporter = self._exporter("logfire", logfire.force_flush)
        logfire.configure(
            send_to_logfire=False,
            console=False,
            service_name="peer-bench",
            additional_span_processors=[BatchSpanProcessor(exporter)],
        )

        def logfire_stage() -> int:
            """The same body as chainsight's stage."""
            return work()

        # Default settings (extract_args=True): what a user gets from the one-line decorator.
        traced: Callable[[], object] = logfire.instrument()(logfire_stage)
        self._add(
            "logfire",
            "@logfire.instrument() (defaults: extract_args=True)",
            _loop(traced),
            "logfire",
            "logfire",
        )

    def _add_langfuse(self) -> None:
        from langfuse import Langfuse, observe  # type: ignore[import-not-found, unused-ignore]

        # Its own provider, not the global one; langfuse's span processor (a BSP) feeds the
        # exporter. The port is closed: nothing should ever be sent, and nothing can be.
        provider = TracerProvider(shutdown_on_exit=False)
        exporter = self._exporter("langfuse", provider.force_flush)
        Langfuse(
            public_key="pk-lf-bench",
            secret_key="sk-lf-bench",
            base_url="http://127.0.0.1:9",
            tracer_provider=provider,
            span_exporter=exporter,
        )

        def langfuse_stage() -> int:
            """The same body as chainsight's stage."""
            return work()

        def langfuse_stage_noio() -> int:
            """The same body as chainsight's stage."""
            return work()

        traced: Callable[[], object] = observe()(langfuse_stage)
        traced_noio: Callable[[], object] = observe(capture_input=False, capture_output=False)(
            langfuse_stage_noio
        )
        self._add(
            "langfuse",
            "@observe() (defaults: captures input and output)",
            _loop(traced),
            "langfuse",
            "langfuse",
        )
        self._add(
            "langfuse_noio",
            "@observe(capture_input=False, capture_output=False)",
            _loop(traced_noio),
            "langfuse",
            "langfuse",
        )

    def _add_traceloop(self) -> None:
        from opentelemetry import trace
        from traceloop.sdk import Traceloop  # type: ignore[import-not-found, unused-ignore]
        from traceloop.sdk.decorators import task  # type: ignore[import-not-found, unused-ignore]

        exporter = DroppingExporter()
        Traceloop.init(
            app_name="peer-bench",
            exporter=exporter,
            disable_batch=False,  # a BatchSpanProcessor, like R's
            telemetry_enabled=False,
        )
        # Traceloop installs its SDK provider as the global one; flush that.
        provider = trace.get_tracer_provider()
        if not isinstance(provider, TracerProvider):
            raise BenchmarkError(
                f"Traceloop.init() left the global tracer provider a {type(provider).__name__}, "
                "not an SDK TracerProvider; its spans would not reach the dropping exporter"
            )
        self.exporters["traceloop"] = exporter
        self._flushers.append(provider.force_flush)

        def traceloop_stage() -> int:
            """The same body as chainsight's stage."""
            return work()

        traced: Callable[[], object] = task(name="x")(traceloop_stage)

        def content(on: bool) -> Callable[[], None]:
            def setup() -> None:
                # traceloop reads this variable on every call, so a setup per batch switches it.
                os.environ["TRACELOOP_TRACE_CONTENT"] = "true" if on else "false"

            return setup

        self._add(
            "traceloop",
            "@task(name='x'), content tracing on (default)",
            _loop(traced),
            "traceloop-sdk",
            "traceloop",
            setup=content(True),
        )
        self._add(
            "traceloop_nocontent",
            "@task(name='x'), TRACELOOP_TRACE_CONTENT=false",
            _loop(traced),
            "traceloop-sdk",
            "traceloop",
            setup=content(False),
        )

    def _add_openlit(self) -> None:
        import openlit  # type: ignore[import-not-found, unused-ignore]
        from opentelemetry import trace

        # openlit.init() takes no tracer provider: it reuses the global one when that is an SDK
        # provider (else it makes one that prints spans to the console), and @openlit.trace takes
        # its tracer from the global provider when it decorates. So ours, with its BSP and dropping
        # exporter, becomes the global provider first.
        pipeline = self._pipeline("openlit")
        trace.set_tracer_provider(pipeline.provider)
        if trace.get_tracer_provider() is not pipeline.provider:
            raise BenchmarkError(
                "another global tracer provider was already set; openlit's spans "
                "would not reach the dropping exporter"
            )
        # Its auto-instrumentation stays on, as a user gets it (here: openai, anthropic, bedrock,
        # httpx, requests, urllib, urllib3); no case calls those libraries.
        errors: list[str] = []
        with tempfile.TemporaryDirectory() as tmp, _openlit_init_env(errors):
            # Without pricing_json, init() downloads the price table from GitHub.
            pricing = Path(tmp, "pricing.json")
            pricing.write_text("{}", encoding="utf-8")
            openlit.init(
                service_name="peer-bench",
                disable_metrics=True,  # no MeterProvider, no OTLP metric exporter
                disable_events=True,
                collect_gpu_stats=False,
                pricing_json=str(pricing),
            )
        if errors:  # init() logs its failures instead of raising them
            raise BenchmarkError(f"openlit.init() logged errors: {errors}")

        def openlit_stage() -> int:
            """The same body as chainsight's stage."""
            return work()

        traced: Callable[[], object] = openlit.trace(openlit_stage)
        self._add(
            "openlit",
            # It has no options: the content is always there, whatever capture_message_content.
            "@openlit.trace (5 attributes: result, str(args), str(kwargs), service, environment)",
            _loop(traced),
            "openlit",
            "openlit",
        )

    # --- checks --------------------------------------------------------------------------
    def flush(self) -> None:
        """Export everything queued in every pipeline (never inside a timed batch)."""
        for flush in self._flushers:
            flush()

    def _check(self, case: Case) -> Callable[[], None]:
        def check() -> None:
            info = self.info[case.name]
            case.setup()
            self.flush()
            before = {label: exp.count for label, exp in self.exporters.items()}
            case.run(CHECK_CALLS)
            self.flush()
            got = {label: exp.count - before[label] for label, exp in self.exporters.items()}
            own = got.get(info.exporter, 0) if info.exporter is not None else 0
            stray = {label: k for label, k in got.items() if k and label != info.exporter}
            want = CHECK_CALLS if info.exporter is not None else 0
            if own != want or stray:
                raise BenchmarkError(
                    f"case {case.name!r}: {CHECK_CALLS} calls exported {own} span(s) to its own "
                    f"exporter (expected {want}) and {stray or 'none'} elsewhere. The benchmark "
                    "would time something else than it claims; fix the case."
                )
            self.spans_per_call[case.name] = own / CHECK_CALLS
            line = f"check {case.name}: {CHECK_CALLS} calls -> {own} spans, none elsewhere"
            last = self.exporters[info.exporter].last if info.exporter is not None else None
            if last is not None:
                scope = last.instrumentation_scope.name if last.instrumentation_scope else "?"
                keys = sorted((last.attributes or {}).keys())
                line += f"; last span {last.name!r} scope={scope!r} {len(keys)} attrs {keys}"
            self.check_lines.append(line)

        return check

    def exported_per_call(self) -> dict[str, float]:
        """Spans each exporter received over the whole run, per call made through its cases."""
        self.flush()
        return {
            label: exporter.count / self.calls[label]
            for label, exporter in self.exporters.items()
            if self.calls[label]
        }

    def versions(self) -> dict[str, str]:
        """The version of every library a case reports."""
        found = {"opentelemetry-api": _version("opentelemetry-api")}
        for info in self.info.values():
            if info.library != "-":  # the bare call belongs to no library
                found[info.library] = _version(info.library)
        return found

    def close(self) -> None:
        """Stop our own export threads and undo chainsight's configuration."""
        for pipeline in self._pipelines:
            pipeline.close()
        chainsight.reset()


@contextlib.contextmanager
def _openlit_init_env(errors: list[str]) -> Iterator[None]:
    """While openlit.init() runs: no log-record exporter, and its logged errors collected.

    init() installs a LoggerProvider for its events; OTEL_LOGS_EXPORTER=none gives it no exporter
    (console or OTLP) at all. The variable is restored afterwards.
    """

    class Collect(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            errors.append(record.getMessage())

    handler = Collect(logging.ERROR)
    log = logging.getLogger("openlit")
    log.addHandler(handler)
    saved = os.environ.get("OTEL_LOGS_EXPORTER")
    os.environ["OTEL_LOGS_EXPORTER"] = "none"
    try:
        yield
    finally:
        log.removeHandler(handler)
        if saved is None:
            del os.environ["OTEL_LOGS_EXPORTER"]
        else:
            os.environ["OTEL_LOGS_EXPORTER"] = saved


def format_table(
    suite: PeerSuite,
    results: dict[str, CaseResult],
    exported: dict[str, float],
    header: str,
) -> str:
    """The printed table: ns/call, ratio to R (median, p25-p75), spans/call, versions."""
    versions = suite.versions()
    lines = [
        header,
        "",
        f"{'case':<20} {'ns/call':>9} {'ratio_R':>8} {'ratio p25-p75':>14} {'spans/call':>10} "
        f"{'exported/calls':>15}  library version - description",
    ]
    for case in suite.cases:
        res = results[case.name]
        info = suite.info[case.name]
        ratio = f"{exported[info.exporter]:.3f}" if info.exporter in exported else "-"
        version = versions.get(info.library, "")
        lines.append(
            f"{case.name:<20} {res.median_ns:>9.0f} {res.median_ratio:>8.2f} "
            f"{percentile(res.ratios, 25):>6.2f}-{percentile(res.ratios, 75):<7.2f} "
            f"{suite.spans_per_call.get(case.name, 0):>10g} {ratio:>15}  "
            f"{info.library} {version} - {case.description}"
        )
    lines += [
        "",
        "loops/batch: " + ", ".join(f"{name}={res.loops}" for name, res in results.items()),
        "versions: " + ", ".join(f"{dist}=={v}" for dist, v in sorted(versions.items()) if v),
        "exported/calls: spans received over the whole run / calls made (shared by the cases "
        "of one exporter; 1.000 = none dropped)",
    ]
    return "\n".join(lines)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.peers",
        description="peer libraries' decorators against chainsight and R",
    )
    parser.add_argument("--suite", choices=SUITES, required=True, help="which peers to load")
    parser.add_argument("--rounds", type=int, default=41, help="interleaved rounds (41)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the per-round order (0)")
    parser.add_argument("--output", type=Path, help="also write the results JSON here")
    parser.add_argument(
        "--smoke", action="store_true", help="run the checks and one call of each; don't time"
    )
    return parser


def _progress(message: str) -> None:
    print(f"  … {message}", file=sys.stderr, flush=True)


def _write_json(path: Path, payload: dict[str, Any]) -> None:
    # Written atomically, like results.json: a reader never sees half a file.
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps({"schema": SCHEMA, **payload}, indent=2) + "\n", encoding="utf-8")
    os.replace(tmp, path)


def main(argv: Sequence[str] | None = None) -> int:
    """Check and time one suite, print the table, optionally write JSON; 1 if a check failed."""
    args = _parser().parse_args(argv)
    if args.rounds < 3:
        print(f"--rounds={args.rounds}: use 3 or more so a median means something", file=sys.stderr)
        return 2
    env = _report.environment()
    suite = PeerSuite(args.suite)
    try:
        _progress(f"suite {args.suite}: {len(suite.cases)} cases")
        started = time.perf_counter()
        if args.smoke:
            results = run_once(suite.cases, REFERENCE)
        else:
            for case in suite.cases:
                if case.check is not None:
                    case.check()
            results = run_interleaved(
                suite.cases,
                REFERENCE,
                rounds=args.rounds,
                target_ns=TARGET_NS,
                seed=args.seed,
                progress=_progress,
            )
        wall = time.perf_counter() - started
        exported = suite.exported_per_call()
    except BenchmarkError as exc:
        print(f"benchmark check failed: {exc}", file=sys.stderr)
        return 1
    finally:
        suite.close()
    load = ", ".join(f"{x:g}" for x in env["load_average_at_start"])
    header = (
        f"suite={args.suite} mode={'smoke' if args.smoke else 'full'} rounds={args.rounds} "
        f"target={TARGET_NS / 1e6:g}ms/batch seed={args.seed} wall={wall:.1f}s "
        f"python={env['python']} cpus={env['cpus']} load at start={load}"
    )
    print("\n".join(suite.check_lines) + "\n")
    print(format_table(suite, results, exported, header))
    if args.output is not None:
        _write_json(
            args.output,
            {
                "suite": args.suite,
                "mode": "smoke" if args.smoke else "full",
                "created": _report.timestamp(),
                "duration_s": round(wall, 1),
                "environment": env,
                "versions": suite.versions(),
                "reference": REFERENCE,
                "checks": suite.check_lines,
                "cases": {
                    name: {
                        **res.as_dict(),
                        "ratio_p25": round(percentile(res.ratios, 25), 3),
                        "ratio_p75": round(percentile(res.ratios, 75), 3),
                        "library": suite.info[name].library,
                        "spans_per_call": suite.spans_per_call.get(name, 0.0),
                    }
                    for name, res in results.items()
                },
                "exported_per_call": exported,
            },
        )
        print(f"\nwrote {args.output}")
    # Spans lost (or extra) over the run: the timed cases did not do the work they claim.
    off = {label: ratio for label, ratio in exported.items() if ratio != 1.0}
    if off:
        print(f"benchmark check failed: exported/calls is not 1 for {off}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
